//! A reader that stops reading (`tapswitch pcap show big.pcap | head`) is
//! not an error: the command ends quietly with status 0, as Unix tools end
//! (they die of SIGPIPE, which Rust programs ignore, so writes fail with
//! `EPIPE` instead).
//!
//! Two halves: commands that write through `io::Write` get the error back
//! and [`is_closed_pipe`] tells `main` to say nothing; `println!` panics
//! instead, and [`end_quietly_on_closed_stdout`] turns exactly that panic
//! into a quiet exit, for every command at once.

use std::io;

/// Installs a panic hook that ends the process quietly (status 0) when the
/// panic is `println!`'s "failed printing to stdout" on a closed pipe, and
/// reports every other panic as before.
pub fn end_quietly_on_closed_stdout() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_closed_stdout_panic(message) {
            std::process::exit(0);
        }
        previous(info);
    }));
}

/// std's message for `print!` on a stdout whose reader has gone.
fn is_closed_stdout_panic(message: &str) -> bool {
    let epipe = format!("(os error {})", nix::errno::Errno::EPIPE as i32);
    message.starts_with("failed printing to stdout") && message.ends_with(&epipe)
}

/// Whether an error is, at bottom, a write to a closed pipe.
pub fn is_closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_a_closed_stdout() {
        assert!(is_closed_stdout_panic(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(!is_closed_stdout_panic(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!is_closed_stdout_panic("index out of bounds"));
    }

    #[test]
    fn finds_a_closed_pipe_under_context() {
        let err = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_closed_pipe(&err));
        assert!(!is_closed_pipe(&anyhow::anyhow!(
            "broken pipe, in words only"
        )));
    }
}

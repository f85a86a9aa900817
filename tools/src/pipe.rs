//! A reader that stops reading (`tapswitch pcap show big.pcap | head`) is
//! not an error: the command ends quietly with status 0, as Unix tools end
//! (they die of SIGPIPE, which Rust programs ignore, so writes fail with
//! `EPIPE` instead).
//!
//! Commands print through [`stdout()`] (or the [`out!`](crate::out) and
//! [`outln!`](crate::outln) macros, `print!`/`println!` that return the
//! error instead of panicking). A closed stdout comes back as an
//! [`io::ErrorKind::BrokenPipe`] error marked [`StdoutClosed`]; the command
//! hands it up with `?` and `main` asks [`is_closed_stdout`] whether to say
//! nothing. The mark keeps a closed *socket* (a switch that died mid-answer)
//! an error that is reported.
//! `print!`/`println!` are denied in this crate (clippy's `print_stdout`),
//! so no line can bypass it.

use std::fmt;
use std::io::{self, Write};

/// The error inside an [`io::ErrorKind::BrokenPipe`] error when the pipe
/// that closed is our stdout.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// The process's stdout, reporting a closed pipe as an error marked
/// [`StdoutClosed`] instead of panicking.
#[derive(Debug)]
pub struct Stdout(io::Stdout);

/// The pipe-aware stdout every command prints through.
pub fn stdout() -> Stdout {
    Stdout(io::stdout())
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(mark_closed)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.lock().write_all(buf).map_err(mark_closed)
    }

    fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> io::Result<()> {
        // One lock for the whole line, as `println!` takes.
        self.0.lock().write_fmt(args).map_err(mark_closed)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(mark_closed)
    }
}

fn mark_closed(err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        err
    }
}

/// Whether an error is, at bottom, our stdout closed by its reader.
pub fn is_closed_stdout(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.is::<StdoutClosed>()
            || cause
                .downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// `print!` to [`stdout()`], returning `io::Result<()>`.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        ::std::io::Write::write_fmt(&mut $crate::pipe::stdout(), format_args!($($arg)*))
    };
}

/// `println!` to [`stdout()`], returning `io::Result<()>`.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out!("\n")
    };
    ($($arg:tt)*) => {
        $crate::out!("{}\n", format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_closed_stdout_under_context() {
        let closed = mark_closed(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(closed.kind(), io::ErrorKind::BrokenPipe);
        let err = anyhow::Error::new(closed).context("writing");
        assert!(is_closed_stdout(&err));
        assert!(!is_closed_stdout(&anyhow::anyhow!(
            "broken pipe, in words only"
        )));
    }

    #[test]
    fn a_closed_socket_is_not_a_closed_stdout() {
        let socket = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("sending to the switch");
        assert!(!is_closed_stdout(&socket));
        let full = mark_closed(io::Error::from(io::ErrorKind::StorageFull));
        assert!(full.get_ref().is_none(), "other errors pass unchanged");
    }
}

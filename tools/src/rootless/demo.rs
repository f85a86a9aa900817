//! `tapswitch demo` as an ordinary user: the same tour, run inside a user
//! namespace of the user's own (with its own mount namespace, so that
//! `/run/netns` can be a private tmpfs), as `unshare --user --map-root-user
//! --mount` would. Everything the demo makes lives in there, so even a
//! killed demo leaves nothing behind.
//!
//! Three stages of one program, told apart by [`STAGE_ENV`]:
//! 1. the user's command starts stage 2 in new user and mount namespaces
//!    and writes its id maps (only the parent may), then waits for it;
//! 2. stage 2 waits until the maps are written (its stdin closes), then
//!    execs itself again: capabilities are computed at exec, and only now
//!    is it root of its namespace;
//! 3. stage 3 mounts a tmpfs on `/run` and runs the demo as root does.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use ports::namespace::Enter;

use super::holder::{self_exe, write_id_maps};
use super::prereq;

use crate::outln;

/// Which stage of the rootless demo this process is (unset: the user's command).
pub const STAGE_ENV: &str = "TAPSWITCH_ROOTLESS_DEMO_STAGE";

/// Called first by `demo`: `Some(exit code)` when this process's part is
/// over (stages 1 and 2), `None` when the demo should run here (root, or
/// stage 3 once `/run` is private). The stage is read before the uid: in
/// stage 2 the uid may already read 0 while the process still lacks the
/// capabilities.
pub fn prepare() -> Result<Option<ExitCode>> {
    match std::env::var(STAGE_ENV).as_deref() {
        Ok("2") => reexec_as_root().map(Some),
        Ok("3") => mount_private_run().map(|()| None),
        _ if crate::control::is_root() => Ok(None),
        _ => start().map(Some),
    }
}

fn start() -> Result<ExitCode> {
    let missing = prereq::userns_missing(&prereq::Facts::read());
    if !missing.is_empty() {
        for line in &missing {
            eprintln!("tapswitch: {line}");
        }
        bail!("the rootless demo needs a user namespace of its own");
    }
    outln!("(rootless: the demo runs inside a user namespace of yours, where you are root)\n")?;
    let mut command = Command::new(self_exe()?);
    command
        .args(std::env::args_os().skip(1))
        .env(STAGE_ENV, "2")
        .stdin(Stdio::piped());
    Enter::new().new_user().new_mount().apply(&mut command);
    let mut child = command.spawn().map_err(|err| {
        anyhow::Error::new(err).context(format!(
            "cannot make a user namespace for the demo{}",
            prereq::userns_hint()
        ))
    })?;
    let mapped = write_id_maps(child.id());
    // Closing stdin lets stage 2 go on (or find the maps missing and stop).
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(if mapped.is_ok() { b"go" } else { b"no" });
    }
    // Ctrl-C reaches the demo too, which cleans up and exits: wait for it.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone())?;
    }
    let status = child.wait().context("waiting for the demo")?;
    mapped?;
    Ok(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
}

fn reexec_as_root() -> Result<ExitCode> {
    let mut answer = String::new();
    std::io::stdin()
        .read_to_string(&mut answer)
        .context("waiting for the id maps")?;
    if answer != "go" {
        bail!("the id maps of the demo's user namespace could not be written");
    }
    let err = Command::new(self_exe()?)
        .args(std::env::args_os().skip(1))
        .env(STAGE_ENV, "3")
        .stdin(Stdio::null())
        .exec();
    Err(anyhow::Error::new(err).context("restarting the demo as root of its namespace"))
}

/// A private `/run` (so `/run/netns` can be made); the mount namespace is
/// this process's alone, and its mounts never reach the host's.
fn mount_private_run() -> Result<()> {
    use nix::mount::{MsFlags, mount};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making the demo's mounts private")?;
    mount(
        Some("tmpfs"),
        "/run",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .context("mounting a private /run for the demo")
}

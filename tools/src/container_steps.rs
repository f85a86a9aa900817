//! Two steps every way of making a container shares (`container create`
//! as root and in rootless mode, `container exec` and the rootless
//! helper): committing a record only once its plumbing is built, and
//! replacing this process with the user's command. A leaf module, so the
//! modes that make containers can share them without importing each other.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use anyhow::{Result, anyhow};
use ipam::Container;

use crate::outln;

/// Builds the container `record` (just added in `tx`), then commits `tx`
/// and prints the container's id. What was built is torn down again if
/// either fails, so a failed create leaves neither record nor plumbing.
pub fn build_and_commit(
    tx: ipam::store::Transaction<'_>,
    record: &Container,
    build: impl FnOnce(&Container) -> Result<()>,
    tear_down: impl Fn(&Container) -> Result<()>,
) -> Result<ExitCode> {
    if let Err(err) = build(record) {
        let _ = tear_down(record);
        return Err(err.context(format!("cannot create container {}", record.name)));
    }
    if let Err(err) = tx.commit() {
        let _ = tear_down(record);
        return Err(err.into());
    }
    outln!("{}", record.id)?;
    Ok(ExitCode::SUCCESS)
}

/// Replaces this process with `command` (program and arguments). It
/// returns only if that failed: the shell's codes, 127 for a program not
/// found and 126 for one that cannot run (on success the command's own
/// exit status becomes ours).
pub fn exec_command(command: &[String]) -> Result<ExitCode> {
    let (program, rest) = command
        .split_first()
        .ok_or_else(|| anyhow!("no command given: write it after `--`"))?;
    let err = Command::new(program).args(rest).exec();
    eprintln!("tapswitch: cannot run {program}: {err}");
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    Ok(ExitCode::from(code))
}

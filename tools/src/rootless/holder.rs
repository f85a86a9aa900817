//! The holder: one long-lived process per user that owns the user
//! namespace every rootless container's network namespace is made in (as
//! Podman's pause process does). It is started by the first command that
//! needs it, outlives every switch and command, and does nothing but exist.
//!
//! Its uid map makes the user root inside (`0 <uid> 1`), extended with the
//! user's subordinate ids (`/etc/subuid`, `/etc/subgid`) through
//! `newuidmap`/`newgidmap` when those are installed and list the user;
//! otherwise the single-id map is written directly, which the kernel allows
//! any user for their own id.
//!
//! `$XDG_RUNTIME_DIR/tapswitch/holder.json` names it: its PID and the
//! identity (device, inode) of its user namespace, so a reused PID is never
//! taken for it. A lock file makes concurrent commands start one holder.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use ports::namespace::{Enter, effective_ids};
use serde::{Deserialize, Serialize};

/// The holder's record in the runtime directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// `st_dev` and `st_ino` of `/proc/<pid>/ns/user`.
    pub dev: u64,
    pub ino: u64,
}

impl Holder {
    /// `/proc/<pid>/ns/user`: join it to be root over the containers.
    pub fn userns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/user", self.pid))
    }

    /// Whether the recorded process still holds the recorded namespace.
    pub fn is_alive(&self) -> bool {
        fs::metadata(self.userns_path()).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }

    /// The running holder, if there is one.
    pub fn find(runtime: &Path) -> Option<Holder> {
        let text = fs::read_to_string(runtime.join(RECORD)).ok()?;
        serde_json::from_str::<Holder>(&text)
            .ok()
            .filter(Holder::is_alive)
    }

    /// The running holder, started if there is none.
    pub fn ensure(runtime: &Path) -> Result<Holder> {
        private_dir(runtime)?;
        let lock_path = runtime.join("holder.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        if let Some(holder) = Holder::find(runtime) {
            return Ok(holder);
        }
        let holder = start(runtime)?;
        let record = serde_json::to_string(&holder)?;
        let tmp = runtime.join("holder.json.tmp");
        fs::write(&tmp, record).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, runtime.join(RECORD))
            .with_context(|| format!("writing {}", runtime.join(RECORD).display()))?;
        log::info!("started the rootless holder (pid {})", holder.pid);
        Ok(holder)
    }
}

const RECORD: &str = "holder.json";

/// Makes `dir` (0700) or checks that the one there is this user's and
/// closed to others: the runtime directory may be a fallback under /tmp,
/// where anyone could have made it first.
pub fn private_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(err) => {
            return Err(err).with_context(|| format!("creating {}", dir.display()));
        }
    }
    let meta = fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    let (uid, _) = effective_ids();
    if meta.uid() != uid {
        bail!(
            "{} belongs to uid {}, not to you (uid {uid}): someone else made it; remove it, or set XDG_RUNTIME_DIR to a directory of your own",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .with_context(|| format!("restricting {} to its owner", dir.display()))?;
    }
    Ok(())
}

/// Starts `tapswitch __rootless holder` in a new session and a new user
/// namespace, then writes its id maps.
fn start(runtime: &Path) -> Result<Holder> {
    let log = File::create(runtime.join("holder.log"))
        .with_context(|| format!("creating {}", runtime.join("holder.log").display()))?;
    let mut command = Command::new(self_exe()?);
    command
        .args(["__rootless", "holder"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    Enter::new().new_session().new_user().apply(&mut command);
    let child = command.spawn().map_err(|err| {
        anyhow::Error::new(err).context(format!(
            "cannot make a user namespace for rootless mode{}",
            crate::rootless::prereq::userns_hint()
        ))
    })?;
    let pid = child.id();
    // Not waited for: it lives on after this command (reparented to init).
    drop(child);
    if let Err(err) = write_id_maps(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        return Err(err);
    }
    let meta = fs::metadata(format!("/proc/{pid}/ns/user"))
        .with_context(|| format!("the holder (pid {pid}) exited at once"))?;
    Ok(Holder {
        pid,
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// The running binary, for helpers that are this program in another role.
pub fn self_exe() -> Result<PathBuf> {
    std::env::current_exe().context("finding the tapswitch binary to run as a helper")
}

/// Root inside = the user outside: through newuidmap/newgidmap with the
/// user's subordinate ranges when possible, else the single-id map.
pub fn write_id_maps(pid: u32) -> Result<()> {
    let (uid, gid) = effective_ids();
    let proc = PathBuf::from(format!("/proc/{pid}"));
    // Each map can be written once: a tool that failed wrote nothing, and
    // then the single-id map is written directly.
    let uid_mapped = subordinate_range("/etc/subuid", uid)
        .is_some_and(|range| map_with("newuidmap", pid, uid, range).is_ok());
    if !uid_mapped {
        fs::write(proc.join("uid_map"), format!("0 {uid} 1\n"))
            .with_context(|| format!("writing the uid map of pid {pid}"))?;
    }
    let gid_mapped = subordinate_range("/etc/subgid", gid)
        .is_some_and(|range| map_with("newgidmap", pid, gid, range).is_ok());
    if !gid_mapped {
        // Without CAP_SETGID outside, a gid map needs setgroups denied first.
        fs::write(proc.join("setgroups"), "deny")
            .and_then(|()| fs::write(proc.join("gid_map"), format!("0 {gid} 1\n")))
            .with_context(|| format!("writing the gid map of pid {pid}"))?;
    }
    Ok(())
}

fn map_with(tool: &str, pid: u32, id: u32, (start, count): (u32, u32)) -> io::Result<()> {
    let status = Command::new(tool)
        .args([
            pid.to_string(),
            "0".into(),
            id.to_string(),
            "1".into(),
            "1".into(),
            start.to_string(),
            count.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{tool} failed: {status}")))
    }
}

/// The user's first subordinate range in `file` (`NAME:START:COUNT` or
/// `UID:START:COUNT` lines), if any.
fn subordinate_range(file: &str, id: u32) -> Option<(u32, u32)> {
    let text = fs::read_to_string(file).ok()?;
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id))
        .ok()
        .flatten()
        .map(|u| u.name);
    parse_subordinate(&text, id, name.as_deref())
}

/// Parses `/etc/subuid`-style text for `id` (or its user `name`).
pub fn parse_subordinate(text: &str, id: u32, name: Option<&str>) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (who, start, count) = (fields.next()?, fields.next()?, fields.next()?);
        let ours = who == id.to_string() || Some(who) == name;
        (ours && !who.is_empty()).then_some(())?;
        Some((start.parse().ok()?, count.parse().ok()?))
    })
}

/// The holder's whole life: wait, as the user namespace's anchor, until
/// killed (SIGTERM or SIGKILL). It runs in a session of its own, so a
/// closed terminal or Ctrl-C does not reach it; SIGHUP and SIGINT are
/// caught and ignored all the same.
pub fn run() -> Result<std::process::ExitCode> {
    let ignored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGHUP, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, ignored.clone())
            .context("installing the holder's signal handlers")?;
    }
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:165536:65536\n";
        assert_eq!(
            parse_subordinate(text, 1000, Some("alice")),
            Some((100000, 65536))
        );
        assert_eq!(parse_subordinate(text, 1001, None), Some((165536, 65536)));
        assert_eq!(parse_subordinate(text, 1002, Some("bob")), None);
        assert_eq!(parse_subordinate("broken\n", 1, None), None);
    }

    #[test]
    fn a_dead_holder_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let record = Holder {
            pid: std::process::id(),
            dev: 0,
            ino: 0,
        };
        fs::write(
            dir.path().join(RECORD),
            serde_json::to_string(&record).unwrap(),
        )
        .unwrap();
        assert_eq!(
            Holder::find(dir.path()),
            None,
            "another namespace at that pid"
        );
        let meta = fs::metadata("/proc/self/ns/user").unwrap();
        let alive = Holder {
            dev: meta.dev(),
            ino: meta.ino(),
            ..record
        };
        fs::write(
            dir.path().join(RECORD),
            serde_json::to_string(&alive).unwrap(),
        )
        .unwrap();
        assert_eq!(Holder::find(dir.path()), Some(alive));
    }

    #[test]
    fn a_private_dir_is_made_0700() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("rt/tapswitch");
        private_dir(&runtime).unwrap();
        assert_eq!(fs::metadata(&runtime).unwrap().mode() & 0o777, 0o700);
        // One we made earlier, opened up since: closed again.
        fs::set_permissions(
            &runtime,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        private_dir(&runtime).unwrap();
        assert_eq!(fs::metadata(&runtime).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn someone_elses_runtime_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (uid, _) = effective_ids();
        let other = if uid == 12345 { 12346 } else { 12345 };
        nix::unistd::chown(dir.path(), Some(nix::unistd::Uid::from_raw(other)), None)
            .expect("giving a directory to another uid needs root (CI runs the tests as root)");
        let err = private_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("belongs to uid {other}, not to you")),
            "{err}"
        );
    }
}

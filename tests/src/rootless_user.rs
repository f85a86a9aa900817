//! An unprivileged user for the rootless tests: a uid nobody else uses
//! (no account needed: `setpriv` switches to it), with its own HOME,
//! `XDG_RUNTIME_DIR` and `XDG_DATA_HOME` in a temporary directory it owns.
//! CI runs as root, and root starts every command as that user.
//!
//! With [`RootlessUser::in_netns`] every command starts in a network
//! namespace the test made (`nsenter --net`), which the user keeps as its
//! "host" network: the switch's host sockets (outbound flows, published
//! ports) live there, never on the machine's real network.
//!
//! On drop it removes what the user left: its containers (`container rm`
//! ends their keeper processes), its switch and its holder, each by PID;
//! then the directory.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::child::terminate;
use crate::poll::within;
use crate::switch_process::binary;

/// An unprivileged uid and its private directories.
#[derive(Debug)]
pub struct RootlessUser {
    pub uid: u32,
    dir: PathBuf,
    children: Vec<Child>,
    /// The named namespace (`/run/netns/NAME`) the user's commands start in.
    netns: Option<String>,
}

impl RootlessUser {
    /// A user for test number `slot` of this process (distinct uids, so
    /// tests running in parallel never share a holder).
    pub fn new(slot: u32) -> RootlessUser {
        // Below 65534 (nobody, which the benchmark uses).
        let uid = 61000 + (std::process::id() % 250) * 16 + slot % 16;
        let dir =
            std::env::temp_dir().join(format!("tapswitch-rootless-{uid}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home")).expect("creating the user's home");
        for sub in ["", "home"] {
            let path = dir.join(sub);
            nix::unistd::chown(
                &path,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(uid)),
            )
            .expect("giving the user its directories");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        RootlessUser {
            uid,
            dir,
            children: Vec::new(),
            netns: None,
        }
    }

    /// The same user, its commands started in namespace `name` (see the
    /// module docs); drop the user before the namespace.
    pub fn in_netns(mut self, name: &str) -> RootlessUser {
        self.netns = Some(name.to_string());
        self
    }

    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `PROGRAM ARGS` as this user, with its HOME and XDG directories.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        // nsenter execs setpriv (no fork without a PID namespace), so a
        // spawned child's PID is still the program's.
        let mut command = match &self.netns {
            Some(name) => {
                let mut nsenter = Command::new("nsenter");
                nsenter
                    .arg(format!("--net=/run/netns/{name}"))
                    .arg("--")
                    .arg("setpriv");
                nsenter
            }
            None => Command::new("setpriv"),
        };
        command
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.uid))
            .arg("--clear-groups")
            .arg("--")
            .arg(program)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", self.home())
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env("XDG_DATA_HOME", self.data_dir())
            .stdin(Stdio::null());
        command
    }

    /// `tapswitch ARGS` as this user.
    pub fn tapswitch(&self, args: &[&str]) -> Output {
        self.command(binary())
            .args(args)
            .output()
            .expect("running tapswitch as the user")
    }

    /// `tapswitch ARGS` as this user; expects success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.tapswitch(args);
        assert!(
            out.status.success(),
            "tapswitch {} (uid {}) failed: {}",
            args.join(" "),
            self.uid,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `tapswitch ARGS` as this user; expects failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.tapswitch(args);
        assert!(
            !out.status.success(),
            "tapswitch {} (uid {}) should have failed",
            args.join(" "),
            self.uid
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Starts `tapswitch serve ARGS` as this user and waits for its control
    /// socket (its `--network`'s); returns the index of its child (for
    /// [`Self::stop`]).
    pub fn serve(&mut self, args: &[&str]) -> usize {
        let log = std::fs::File::create(self.dir.join(format!("serve{}.log", self.children.len())))
            .expect("creating the switch log");
        let child = self
            .command(binary())
            .arg("serve")
            .args(args)
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("starting tapswitch serve as the user");
        self.children.push(child);
        let network = args
            .windows(2)
            .find(|pair| pair[0] == "--network")
            .map_or("bridge", |pair| pair[1]);
        let up = within(Duration::from_secs(20), || {
            let stats = self.tapswitch(&["stats", "--network", network]);
            stats.status.code() == Some(0)
        });
        assert!(
            up,
            "the user's switch did not come up:\n{}",
            self.serve_log(self.children.len() - 1)
        );
        self.children.len() - 1
    }

    /// The PID of the switch started as number `index`.
    pub fn serve_pid(&self, index: usize) -> u32 {
        self.children[index].id()
    }

    /// What the switch started as number `index` logged.
    pub fn serve_log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("serve{index}.log"))).unwrap_or_default()
    }

    /// Starts `PROGRAM ARGS` as this user in the background (stopped on drop).
    pub fn spawn(&mut self, program: &str, args: &[&str]) -> u32 {
        let child = self
            .command(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a process as the user");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Keeps `child` (a process started as this user) to stop on drop;
    /// returns its index (for [`Self::stop`]).
    pub fn keep(&mut self, child: Child) -> usize {
        self.children.push(child);
        self.children.len() - 1
    }

    /// The runtime directory tapswitch falls back to without
    /// `XDG_RUNTIME_DIR` (removed on drop).
    pub fn fallback_runtime_dir(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/tapswitch-{}", self.uid))
    }

    /// Stops (SIGTERM, then SIGKILL) and reaps child number `index`.
    pub fn stop(&mut self, index: usize) {
        if let Some(child) = self.children.get_mut(index) {
            terminate(child);
        }
    }

    /// The holder's PID, from its record in the runtime directory.
    pub fn holder_pid(&self) -> Option<u32> {
        let text =
            std::fs::read_to_string(self.runtime_dir().join("tapswitch/holder.json")).ok()?;
        let record: serde_json::Value = serde_json::from_str(&text).ok()?;
        record["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
    }

    /// Whether process `pid` runs as this user.
    pub fn owns_process(&self, pid: u32) -> bool {
        std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == self.uid)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RootlessUser {
    fn drop(&mut self) {
        let ls = self.tapswitch(&["container", "ls"]);
        for line in String::from_utf8_lossy(&ls.stdout).lines().skip(1) {
            if let Some(name) = line.split_whitespace().nth(1) {
                let _ = self.tapswitch(&["container", "rm", name]);
            }
        }
        for child in &mut self.children {
            terminate(child);
        }
        if let Some(pid) = self.holder_pid().filter(|&pid| self.owns_process(pid)) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let fallback = self.fallback_runtime_dir();
        if std::fs::metadata(&fallback).is_ok_and(|m| m.uid() == self.uid) {
            let _ = std::fs::remove_dir_all(&fallback);
        }
    }
}

/// Pings `target` once from inside container `name`; true if answered.
pub fn pings(user: &RootlessUser, name: &str, target: &str) -> bool {
    user.tapswitch(&[
        "container",
        "exec",
        name,
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        target,
    ])
    .status
    .success()
}

/// Waits until process `pid` (an `unshare ... --net sleep` the user
/// started, through `nsenter` and `setpriv` when the user has a namespace
/// of its own) has entered a network namespace other than `from`, with
/// its id maps written: its program is `sleep` only once `unshare` has
/// done all that (earlier, the PID may still be nsenter's, in another
/// namespace than the user's, or unshare's between its steps).
pub fn wait_for_new_netns(pid: u32, from: &std::path::Path) {
    let inode = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.ino()).ok();
    let before = inode(from).expect("the namespace the user started in");
    let ns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    let comm = format!("/proc/{pid}/comm");
    let entered = within(Duration::from_secs(10), || {
        inode(&ns).is_some_and(|ino| ino != before)
            && std::fs::read_to_string(&comm).unwrap_or_default().trim() == "sleep"
    });
    assert!(entered, "unshare did not enter a namespace");
}

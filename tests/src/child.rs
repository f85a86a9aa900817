//! Child processes a test owns: a network namespace held by `unshare --net
//! sleep` (a namespace tapswitch did not make, as a container runtime's
//! would be), stopping a child politely, and reading a child's output line
//! by line with a timeout. Each is ended by its own PID.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::poll::within;

/// A process in a network namespace of its own (`unshare --net sleep`),
/// killed on drop; the namespace goes with it.
#[derive(Debug)]
pub struct NetnsHolder {
    child: Child,
}

impl NetnsHolder {
    /// Starts the holder and waits until it is in its new namespace.
    pub fn start() -> NetnsHolder {
        let inode = |path: &str| std::fs::metadata(path).ok().map(|m| m.ino());
        let own = inode("/proc/self/ns/net");
        let child = Command::new("unshare")
            .args(["--net", "sleep", "300"])
            .stdin(Stdio::null())
            .spawn()
            .expect("running unshare --net sleep");
        let ns = format!("/proc/{}/ns/net", child.id());
        // unshare enters the namespace, then execs sleep: wait until it has.
        assert!(
            within(Duration::from_secs(10), || inode(&ns) != own),
            "unshare did not enter a namespace"
        );
        NetnsHolder { child }
    }

    /// Its process id, as `container attach --pid` takes it.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// `/proc/PID/ns/net`.
    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.child.id()))
    }

    /// Runs `f` on a thread inside the held namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        tools::netlink::netns::run_in(&self.netns(), || Ok(f()))
            .unwrap_or_else(|e| panic!("in the held namespace: {e}"))
    }
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM, then SIGKILL if it lingers past 10 s; always reaped.
pub fn terminate(child: &mut Child) {
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let _ = kill(pid, Signal::SIGTERM);
    let ended = within(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Sends each line of `stream` (a child's stdout or stderr) to `lines`, from
/// a thread of its own, until the stream ends or nobody receives.
pub fn send_lines(stream: impl Read + Send + 'static, lines: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
}

/// The lines of `stream`, to be received with a timeout.
pub fn read_lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    send_lines(stream, tx);
    rx
}

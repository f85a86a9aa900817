//! The switch's limit on open descriptors (issue 14: every translated flow
//! holds one): started under a hard limit of 1,024, root's switch raises
//! it (to `fs.nr_open`, at most 2^20, as Docker's `LimitNOFILE`); a switch
//! that may not (no `CAP_SYS_RESOURCE`) says at start how many flows that
//! allows and how to raise it. As root, in a namespace this test makes.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tapswitch_tests::lab::TempDir;
use tapswitch_tests::poll::within;
use tapswitch_tests::{Netns, require_root};

/// `tapswitch serve` started under `wrapper` (commands that exec the next
/// one: prlimit, setpriv), stopped by its PID when dropped.
struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    fn start(ns: &Netns, state: &TempDir, wrapper: &[&str]) -> Serve {
        let control = state.path().join("switch.sock");
        let log = state.path().join("serve.log");
        let log_file = std::fs::File::create(&log).expect("the log");
        // Each wrapper execs what follows, so the child's PID is the switch's.
        let child = Command::new(wrapper[0])
            .args(&wrapper[1..])
            .args(["ip", "netns", "exec", &ns.name])
            .arg(tapswitch_tests::switch_process::binary())
            .arg("serve")
            .arg("--state-dir")
            .arg(state.path())
            .arg("--control")
            .arg(&control)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .spawn()
            .expect("starting tapswitch serve");
        let serve = Serve { child, log };
        serve.wait_ready(&control);
        serve
    }

    /// Waits until the switch answers a request: its control socket is
    /// bound (and takes connections) early in start-up, before the line
    /// about the limit is written; the answers come once it has started.
    fn wait_ready(&self, control: &Path) {
        assert!(
            within(Duration::from_secs(20), || answers(control)),
            "the switch did not start:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its "Max open files" soft and hard limits.
    fn nofile(&self) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id()))
            .expect("the switch's limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files");
        let numbers: Vec<u64> = line
            .split_whitespace()
            .filter_map(|word| word.parse().ok())
            .collect();
        (numbers[0], numbers[1])
    }
}

/// Whether the switch on `control` answers an `info` request.
fn answers(control: &Path) -> bool {
    let Ok(stream) = UnixStream::connect(control) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if (&stream).write_all(b"{\"cmd\":\"info\"}\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).is_ok() && line.contains("\"ok\":true")
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(1 << 20)
}

/// CAP_SYS_RESOURCE is in this process's effective set (root in some
/// containers does not have it).
fn may_raise_hard_limits() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// The start-up line about the limit: how many flows, how to raise it.
fn assert_explained(serve: &Serve) {
    let log = serve.log();
    let line = log
        .lines()
        .find(|l| l.contains("open descriptors"))
        .unwrap_or_else(|| panic!("no word about the limit:\n{log}"));
    assert!(
        line.contains("at most 1024 open descriptors allow about"),
        "{line}"
    );
    assert!(line.contains("ulimit -n"), "{line}");
}

#[test]
fn a_low_hard_limit_is_raised_by_root_and_explained_without_the_privilege() {
    require_root();
    let ns = Netns::new("tfd");
    let low = ["prlimit", "--nofile=1024:1024", "--"];

    let state = TempDir::new("fdroot");
    let serve = Serve::start(&ns, &state, &low);
    if may_raise_hard_limits() {
        let expected = nr_open().min(1 << 20);
        assert_eq!(serve.nofile(), (expected, expected), "{}", serve.log());
        assert!(!serve.log().contains("ulimit -n"), "{}", serve.log());
    } else {
        // Root without CAP_SYS_RESOURCE (a container's): as below.
        assert_eq!(serve.nofile(), (1024, 1024), "{}", serve.log());
        assert_explained(&serve);
    }
    drop(serve);

    // Without CAP_SYS_RESOURCE (gone from the bounding set, so root's
    // exec does not get it back) the hard limit stays, and the switch
    // says what that means.
    let state = TempDir::new("fdcap");
    let mut wrapper = low.to_vec();
    wrapper.extend(["setpriv", "--bounding-set=-sys_resource", "--"]);
    let serve = Serve::start(&ns, &state, &wrapper);
    assert_eq!(serve.nofile(), (1024, 1024), "{}", serve.log());
    assert_explained(&serve);

    // A soft limit below a hard one that suffices: only the soft one rises.
    let state = TempDir::new("fdsoft");
    let serve = Serve::start(&ns, &state, &["prlimit", "--nofile=1024:20000", "--"]);
    let (soft, hard) = serve.nofile();
    assert_eq!(soft, hard, "{}", serve.log());
    assert!(hard >= 20_000, "{}", serve.log());
    assert!(!serve.log().contains("ulimit -n"), "{}", serve.log());
}

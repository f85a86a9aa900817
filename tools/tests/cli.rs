//! The `tapswitch` command line as a user meets it: bad input gets one
//! clear line, a non-zero exit, and leaves nothing behind.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tapswitch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args(args)
        .output()
        .expect("running tapswitch")
}

fn private_socket(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tapswitch-cli-{tag}-{}.sock", std::process::id()))
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_port_name_over_15_bytes_is_refused_in_one_line() {
    let socket = private_socket("long");
    let out = tapswitch(&[
        "serve",
        "--iface",
        "a234567890123456",
        "--control",
        socket.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let lines = stderr_lines(&out);
    assert_eq!(
        lines.last().unwrap(),
        "tapswitch: port a234567890123456: the name is 16 bytes long, but Linux interface names have at most 15"
    );
    assert!(!socket.exists(), "no control socket is left behind");
}

#[test]
fn a_missing_interface_is_refused_with_what_to_do() {
    let socket = private_socket("missing");
    let out = tapswitch(&[
        "serve",
        "--iface",
        "nosuchif42",
        "--control",
        socket.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let last = stderr_lines(&out).pop().unwrap();
    assert!(
        last.starts_with("tapswitch: port nosuchif42: no such interface; create it first"),
        "{last}"
    );
    assert!(!socket.exists());
}

#[test]
fn a_bad_gateway_is_refused() {
    let socket = private_socket("gw");
    let out = tapswitch(&[
        "serve",
        "--gateway",
        "172.17.0.0/16",
        "--control",
        socket.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let last = stderr_lines(&out).pop().unwrap();
    assert!(last.contains("network or broadcast address"), "{last}");
}

#[test]
fn asking_a_switch_that_is_not_running_says_how_to_start_one() {
    let socket = private_socket("none");
    let out = tapswitch(&["fdb", "--control", socket.to_str().unwrap()]);
    assert!(!out.status.success());
    let last = stderr_lines(&out).pop().unwrap();
    assert!(
        last.contains("no switch is listening on") && last.contains("tapswitch serve"),
        "{last}"
    );
}

#[test]
fn a_second_switch_on_the_same_socket_is_refused_and_a_stale_one_replaced() {
    let socket = private_socket("twice");
    // A stale socket file (nobody listening) is replaced...
    let stale = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(stale);
    // The first switch's log, for the failure messages below.
    let log = socket.with_extension("log");
    let mut first = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args(["serve", "--no-gateway", "--control"])
        .arg(&socket)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let first_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "the first switch did not start:\n{}",
            first_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...but a live one is not. Bounded: a second switch that did start
    // (because the first had gone) would serve until stopped.
    let second = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
        .args(["serve", "--no-gateway", "--control"])
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_at_most(second, Duration::from_secs(10));
    let first_state = first.try_wait().unwrap();
    let _ = Command::new("kill").arg(first.id().to_string()).status();
    let status = first.wait().unwrap();
    let out = out.unwrap_or_else(|| {
        panic!(
            "the second switch did not refuse within 10 s; the first had {}; its log:\n{}",
            first_state.map_or("not exited".to_string(), |s| format!("exited ({s})")),
            first_log()
        )
    });
    assert!(!out.status.success());
    let last = stderr_lines(&out).pop().unwrap();
    assert!(
        last.contains("a switch already serves network bridge"),
        "{last}"
    );
    assert!(
        status.success(),
        "SIGTERM ends serve cleanly; its log:\n{}",
        first_log()
    );
    assert!(!socket.exists(), "the socket is removed on shutdown");
    let _ = std::fs::remove_file(&log);
}

/// The output of `child` once it exits, or `None` (and the child killed)
/// if it runs longer than `limit`.
fn wait_at_most(mut child: Child, limit: Duration) -> Option<Output> {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().unwrap())
}

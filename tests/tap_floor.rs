//! The benchmark's floor for TAP ports, `tools/examples/tap_floor.rs`,
//! forwards what tapswitch's TAP ports forward, in each of its ways: a
//! thread per direction, one real-time thread that reads each answer at
//! once, and that thread at ordinary priority. Pings come back, and a TCP
//! transfer (TSO super-frames with their virtio-net headers, as the TAPs
//! are opened with offloads) arrives whole and in order; with its devices
//! deleted (the benchmark removes their namespaces) it ends by itself. The
//! benchmark reads tapswitch's TAP figures against this floor, so a floor
//! that lost or mangled frames would make the switch look better than it
//! is. Needs root; CI runs it as root.
//!
//! ```text
//!   h1 eth0 (TAP fa) ┐
//!                    ├─ tap_floor [--answer-at-once [--ordinary]] fa fb
//!   h2 eth0 (TAP fb) ┘
//! ```

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tapswitch_tests::child::{read_lines, terminate};
use tapswitch_tests::poll::within;
use tapswitch_tests::tapswitch_binary::tap_floor;
use tapswitch_tests::traffic::{ping, tcp_transfer};
use tapswitch_tests::{Netns, require_root, tap_hosts};

const H2: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
const PINGS: u16 = 5;
/// Enough for TSO super-frames and many round trips of acknowledgements.
const TRANSFER_BYTES: usize = 8 * 1024 * 1024;

/// A `tap_floor` process, ended by its PID when dropped.
struct Floor(Child);

impl Drop for Floor {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

/// Starts `tap_floor ARGS fa fb` in `switch_ns` and waits for its
/// `forwarding` line (both devices open and up).
fn start_floor(switch_ns: &Netns, args: &[&str]) -> Floor {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &switch_ns.name])
        .arg(tap_floor())
        .args(args)
        .args(["fa", "fb"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting tap_floor");
    let lines = read_lines(child.stdout.take().expect("tap_floor's stdout"));
    let floor = Floor(child);
    let line = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("tap_floor said nothing within 10 s");
    assert_eq!(line, "forwarding fa <-> fb", "tap_floor {args:?}");
    floor
}

/// Both TAPs moved into hosts h1 and h2 behind the floor started with
/// `args`: pings and a TCP transfer from h1 to h2 must get through.
fn forwards_pings_and_a_tcp_transfer(args: &[&str]) {
    require_root();
    let switch_ns = Netns::new("tsw");
    let floor = start_floor(&switch_ns, args);
    let hosts = tap_hosts(&switch_ns, &["fa", "fb"]);
    assert_eq!(
        ping(&hosts[0], H2, PINGS, Duration::from_secs(10)),
        PINGS,
        "pings through tap_floor {args:?}"
    );
    tcp_transfer(&hosts[1], H2, &hosts[0], TRANSFER_BYTES)
        .unwrap_or_else(|e| panic!("TCP through tap_floor {args:?}: {e}"));
    // Before the hosts' namespaces take its devices away.
    drop(floor);
}

#[test]
fn the_floor_with_a_thread_per_direction_forwards_pings_and_tcp() {
    forwards_pings_and_a_tcp_transfer(&[]);
}

#[test]
fn the_floor_that_reads_answers_at_once_forwards_pings_and_tcp() {
    forwards_pings_and_a_tcp_transfer(&["--answer-at-once"]);
}

#[test]
fn the_floor_at_ordinary_priority_forwards_pings_and_tcp() {
    forwards_pings_and_a_tcp_transfer(&["--answer-at-once", "--ordinary"]);
}

#[test]
fn the_floor_without_two_devices_says_how_to_run_it() {
    let out = Command::new(tap_floor())
        .arg("fa")
        .output()
        .expect("running tap_floor");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("usage: tap_floor ") && stderr.lines().count() == 1,
        "{stderr}"
    );
}

/// The benchmark ends a run by removing the hosts' namespaces, and the TAP
/// devices in them with them: the floor then ends by itself, without an
/// error, in either of its ways.
#[test]
fn the_floor_ends_quietly_when_its_devices_are_deleted() {
    require_root();
    for args in [&[][..], &["--answer-at-once"][..]] {
        let switch_ns = Netns::new("tsw");
        let mut floor = start_floor(&switch_ns, args);
        let hosts = tap_hosts(&switch_ns, &["fa", "fb"]);
        drop(hosts);
        let mut status = None;
        let ended = within(Duration::from_secs(10), || {
            status = floor.0.try_wait().expect("waiting for tap_floor");
            status.is_some()
        });
        assert!(ended, "tap_floor {args:?} still runs without its devices");
        assert_eq!(status.and_then(|s| s.code()), Some(0), "tap_floor {args:?}");
    }
}

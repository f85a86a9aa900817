//! `tapswitch trace on|off` reaches the gateway thread too: turned on after
//! the switch started (without `--trace`), the gateway's own decisions (its
//! ping replies, arriving on `gw`) show in `tapswitch monitor`; turned off,
//! they stop.
//!
//! ```text
//!   th..(h1) eth0 ═══ p1 ── tapswitch serve (gateway 172.17.0.1, in tsw..)
//!                          tapswitch monitor (in tsw..) ─┘
//! ```

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use tapswitch_tests::frames::{mac, mac_text, probe};
use tapswitch_tests::monitor::Monitor;
use tapswitch_tests::switch_process::binary;
use tapswitch_tests::traffic::{Station, ping};
use tapswitch_tests::{SwitchProcess, Topology, require_root};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

/// A trace line the gateway thread wrote: its frames arrive on `gw`.
fn is_gateway_trace(line: &str) -> bool {
    line.starts_with("trace t=") && line.split(' ').nth(2) == Some("gw:")
}

#[test]
fn trace_on_after_start_shows_the_gateways_decisions_and_trace_off_stops_them() {
    require_root();
    let topo = Topology::veth_star(1);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    let monitor = Monitor::start(&switch, &[]);
    let h1 = Station::open(&topo.hosts[0].ns, "eth0");
    Monitor::wait_listening(&[&monitor], &h1, [0x02, 0, 0x5e, 0x11, 0x01]);
    let trace = |args: &[&str]| {
        let out = Command::new(binary())
            .arg("trace")
            .args(args)
            .arg("--control")
            .arg(&switch.control)
            .output()
            .expect("running tapswitch trace");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ping_gateway = || {
        let replies = ping(&topo.hosts[0].ns, GATEWAY, 2, Duration::from_secs(5));
        assert!(replies > 0, "the gateway answers pings");
    };

    // A new MAC's learned line, once the lines before it are read.
    let marker = |last: u8| {
        let source = [0x02, 0, 0x5e, 0x11, 0x00, last];
        h1.send(&probe(mac("ff:ff:ff:ff:ff:ff"), source, 1, 64));
        let mut before = Vec::new();
        monitor.expect("the marker", |l| {
            before.push(l.to_string());
            l.starts_with(&mac_text(&source))
        });
        before
    };

    trace(&["on"]);
    ping_gateway();
    let line = monitor.expect("a trace line of the gateway's", is_gateway_trace);
    assert!(line.ends_with("forwarded to p1"), "{line}");
    marker(0x98);

    trace(&["off"]);
    ping_gateway();
    let after_off = marker(0x99);
    assert!(
        !after_off.iter().any(|l| is_gateway_trace(l)),
        "a gateway trace line after trace off: {after_off:?}"
    );
    assert!(switch.stop().success());
}

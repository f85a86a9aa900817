//! The MACs a switch registers: a switch lists the MACs on its local ports
//! in its registration (`network inspect` shows them), and the other
//! switches put them behind it before any frame from them crosses, as
//! flannel writes fdb entries from its hosts' records; they go when the
//! switch's lease goes.
//!
//! ```text
//!   container A ── tapswitch serve (h0, 10.99.0.1) ─┬─ underlay ─ etcd
//!   container B ── tapswitch serve (h1, 10.99.0.2) ─╯
//! ```
//!
//! Skipped with a `SKIPPED` line when the etcd binary is missing (CI
//! installs it). Every process is ours and stopped by PID; every namespace
//! is removed by a guard, also when an assertion fails.

use std::net::Ipv4Addr;
use std::time::Duration;

use tapswitch_tests::overlay_lab::OverlayLab;
use tapswitch_tests::poll::wait_for;
use tapswitch_tests::require_root;

use tapswitch_tests::overlay_hosts::*;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 1);

/// The MACs `network inspect ov` (run on `host`) lists for the member at `ip`.
fn inspected_macs(lab: &OverlayLab, host: usize, ip: &str) -> Vec<String> {
    let text = lab.ok(host, &["network", "inspect", "ov"]);
    let views: serde_json::Value = serde_json::from_str(&text).expect("inspect's JSON");
    views[0]["Peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|member| member["IP"] == ip)
        .and_then(|member| member["Macs"].as_array())
        .map(|macs| {
            macs.iter()
                .filter_map(|m| m.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_switch_registers_its_macs_and_the_others_know_them_before_any_frame() {
    require_root();
    let Some(mut lab) = OverlayLab::new("a_switch_registers_its_macs", 2) else {
        return;
    };
    lab.ok(
        0,
        &[
            "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET, "--vni", VNI,
        ],
    );
    // B alone: its container talks to B's gateway, so B's table has its
    // MAC; nothing crosses (no other member yet).
    let mut b = serve(&lab, 1);
    let on_b = create_container(&mut lab, 1, &b);
    ping_ok(&on_b, GATEWAY);
    wait_for(
        "B's container's MAC in B's registration",
        Duration::from_secs(10),
        || inspected_macs(&lab, 0, "10.99.0.2").contains(&on_b.mac),
    );

    // A joins: B's container is behind B in A's table before any frame
    // from B has arrived.
    let a = serve(&lab, 0);
    wait_for(
        "B's container behind B in A's fdb",
        Duration::from_secs(15),
        || via(&a, &on_b.mac).as_deref() == Some("10.99.0.2:4789"),
    );
    let stats = &tunnel(&a)["stats"];
    assert_eq!(
        stats["rx_frames"].as_u64(),
        Some(0),
        "known from the registration, not from a frame: {stats}"
    );
    assert!(stats["registered"].as_u64() >= Some(1), "{stats}");
    let text = lab.ok(0, &["fdb", "--control", &a.control.display().to_string()]);
    assert!(
        text.contains(&format!("vxlan0 via 10.99.0.2:4789  {}", on_b.mac)),
        "{text}"
    );

    // And A's container is registered by A in turn, and reaches B's.
    let on_a = create_container(&mut lab, 0, &a);
    ping_ok(&on_a, on_b.ip);
    wait_for(
        "A's container's MAC in A's registration",
        Duration::from_secs(10),
        || inspected_macs(&lab, 1, "10.99.0.1").contains(&on_a.mac),
    );

    // B killed: its registration goes with its lease, and its MACs with it.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(b.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for("B's lease expiring at A", Duration::from_secs(20), || {
        !members(&a).contains(&"10.99.0.2:4789".to_string())
    });
    assert!(!b.is_running());
    assert_eq!(via(&a, &on_b.mac), None, "B's container forgotten");
    assert_eq!(a.port_of(&on_b.mac), None);
    assert!(inspected_macs(&lab, 0, "10.99.0.2").is_empty());
}

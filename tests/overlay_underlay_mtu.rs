//! `serve` refuses an overlay network whose frames would not fit the MTU
//! of the IPv4 underlay interface (VXLAN over IPv4 adds 50 bytes: outer
//! Ethernet 14, IPv4 20, UDP 8, VXLAN 8), naming the interface, both MTUs
//! and the `--mtu` to give; a network made with that MTU is served. The
//! IPv6 case is in `overlay_ipv6.rs`.
//!
//! ```text
//!   tapswitch serve (h0, 10.99.0.1, u0 at MTU 1400) ─ underlay ─ etcd (10.99.0.254)
//! ```
//!
//! Skipped with a `SKIPPED` line when the etcd binary is missing (CI
//! installs it). Every process is ours and stopped by PID; every namespace
//! is removed by a guard, also when an assertion fails.

use tapswitch_tests::overlay_hosts::*;
use tapswitch_tests::overlay_lab::OverlayLab;
use tapswitch_tests::require_root;

#[test]
fn a_network_too_big_for_a_1400_byte_ipv4_underlay_is_refused_and_1350_is_served() {
    require_root();
    let Some(lab) = OverlayLab::new("overlay_underlay_mtu", 1) else {
        return;
    };
    // An underlay as a cloud or an outer tunnel gives it: 100 bytes short.
    lab.hosts[0].ip(&["link", "set", "u0", "mtu", "1400"]);
    let underlay = OverlayLab::underlay_ip(0).to_string();
    // The default MTU (1450) suits a 1500-byte underlay only.
    lab.ok(
        0,
        &[
            "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET,
        ],
    );
    let stderr = serve_refused(&lab, 0, "ov", &underlay);
    assert!(
        stderr.contains(
            "network ov has MTU 1450, and VXLAN over IPv4 adds 50 bytes: more than the MTU 1400 \
             of u0, which has --underlay 10.99.0.1; create the network with --mtu 1350"
        ),
        "{stderr}"
    );

    lab.ok(
        0,
        &[
            "network",
            "create",
            "small",
            "--driver",
            "overlay",
            "--subnet",
            "10.51.0.0/24",
            "--mtu",
            "1350",
        ],
    );
    let switch = serve_network(&lab, 0, "small", &underlay);
    let tunnel = tunnel(&switch);
    assert_eq!(tunnel["local"], "10.99.0.1:4789", "{tunnel}");
}

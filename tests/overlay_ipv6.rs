//! An overlay network on an IPv6 underlay: two tapswitch hosts and a host
//! with a kernel `vxlan` device over IPv6 (`local` and `dst` IPv6), each a
//! namespace on one underlay (the lab's, with IPv6 addresses added; etcd
//! stays on IPv4), containers on every host.
//!
//! ```text
//!   container A ── tapswitch serve (h0, fd99::1) ─╮
//!   container B ── tapswitch serve (h1, fd99::2) ─┼─ underlay ─ etcd (10.99.0.254)
//!   container K ── br0 + vx0 (kernel, h2, fd99::3)─╯
//! ```
//!
//! VXLAN over IPv6 adds 70 bytes (outer Ethernet 14, IPv6 40, UDP 8,
//! VXLAN 8): on the 1500-byte underlay the network's MTU is 1430.
//!
//! Skipped with a `SKIPPED` line when the etcd binary is missing (CI
//! installs it). Every process is ours and stopped by PID; every namespace
//! is removed by a guard, also when an assertion fails.

use std::time::Duration;

use tapswitch_tests::overlay_lab::OverlayLab;
use tapswitch_tests::poll::wait_for;
use tapswitch_tests::require_root;

use tapswitch_tests::overlay_hosts::*;

const MTU: u32 = 1430;

/// Host `i`'s IPv6 underlay address.
fn underlay_v6(i: usize) -> String {
    format!("fd99::{}", i + 1)
}

/// Adds the IPv6 underlay addresses (no duplicate address detection, so
/// they are usable at once) to the hosts' `u0`.
fn add_ipv6_underlay(lab: &OverlayLab) {
    for (i, host) in lab.hosts.iter().enumerate() {
        // The lab's namespaces start with IPv6 off; the underlay needs it.
        host.sysctl("net.ipv6.conf.u0.disable_ipv6", "0");
        host.ip(&[
            "addr",
            "add",
            &format!("{}/64", underlay_v6(i)),
            "dev",
            "u0",
            "nodad",
        ]);
    }
}

#[test]
fn two_switches_and_a_kernel_vxlan_host_share_a_segment_over_ipv6() {
    require_root();
    let Some(mut lab) = OverlayLab::new("overlay_over_ipv6", 3) else {
        return;
    };
    add_ipv6_underlay(&lab);
    let mtu = MTU.to_string();
    lab.ok(
        0,
        &[
            "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET, "--vni", VNI,
            "--mtu", &mtu,
        ],
    );
    lab.ok(0, &["network", "peer", "add", "ov", "[fd99::3]:4789"]);
    let a = serve_on(&lab, 0, &underlay_v6(0));
    let b = serve_on(&lab, 1, &underlay_v6(1));
    let (_kernel_container_ns, kernel) = kernel_host_on(
        &lab,
        2,
        &underlay_v6(2),
        &[underlay_v6(0), underlay_v6(1)],
        MTU,
    );
    let on_a = create_container_with_mtu(&mut lab, 0, &a, MTU);
    let on_b = create_container_with_mtu(&mut lab, 1, &b, MTU);

    for (switch, other) in [(&a, "[fd99::2]:4789"), (&b, "[fd99::1]:4789")] {
        wait_for("the members known", Duration::from_secs(15), || {
            let m = members(switch);
            m.contains(&other.to_string()) && m.contains(&"[fd99::3]:4789".to_string())
        });
    }
    let inspect = lab.ok(1, &["network", "inspect", "ov"]);
    assert!(inspect.contains("\"IP\": \"fd99::1\""), "{inspect}");
    let ls = lab.ok(1, &["network", "ls"]);
    assert!(
        ls.contains("[fd99::1]:4789") && ls.contains("[fd99::3]:4789"),
        "{ls}"
    );

    ping_ok(&on_a, on_b.ip);
    ping_ok(&on_b, on_a.ip);
    ping_ok(&on_a, kernel.ip);
    ping_ok(&kernel, on_b.ip);
    transfer_ok(&on_b, &on_a);
    transfer_ok(&kernel, &on_a);
    transfer_ok(&on_b, &kernel);

    assert_eq!(via(&a, &on_b.mac).as_deref(), Some("[fd99::2]:4789"));
    assert_eq!(via(&a, &kernel.mac).as_deref(), Some("[fd99::3]:4789"));
    assert_eq!(via(&b, &on_a.mac).as_deref(), Some("[fd99::1]:4789"));
    let kernel_fdb = std::process::Command::new("bridge")
        .args(["-n", &lab.hosts[2].name, "fdb", "show", "dev", "vx0"])
        .output()
        .expect("bridge fdb show");
    let kernel_fdb = String::from_utf8_lossy(&kernel_fdb.stdout);
    assert!(
        kernel_fdb
            .lines()
            .any(|l| l.starts_with(&on_a.mac) && l.contains("dst fd99::1")),
        "the kernel learned A's container behind fd99::1:\n{kernel_fdb}"
    );
    let stats = &tunnel(&a)["stats"];
    assert_eq!(stats["rx_dropped_not_member"].as_u64(), Some(0), "{stats}");
}

#[test]
fn a_network_too_big_for_vxlan_over_ipv6_is_refused_with_the_mtu_to_give() {
    require_root();
    let Some(lab) = OverlayLab::new("overlay_ipv6_mtu", 1) else {
        return;
    };
    add_ipv6_underlay(&lab);
    // The default MTU (1450) suits a 1500-byte IPv4 underlay, not IPv6.
    lab.ok(
        0,
        &[
            "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET,
        ],
    );
    let stderr = serve_refused(&lab, 0, "ov", &underlay_v6(0));
    assert!(
        stderr.contains("VXLAN over IPv6 adds 70 bytes")
            && stderr.contains("create the network with --mtu 1430"),
        "{stderr}"
    );
}

//! `container attach` on an overlay network, and the gateway every host
//! shares: a namespace made elsewhere is attached on one host (its address
//! from the shared pool), reaches a container on the other host, and both
//! see the gateway at one address with one MAC, so a container that moves
//! to another host keeps its ARP entry.
//!
//! ```text
//!   attached ns ── tapswitch serve (h0, 10.99.0.1) ─┬─ underlay ─ etcd
//!   container B ── tapswitch serve (h1, 10.99.0.2) ─╯
//! ```
//!
//! Skipped with a `SKIPPED` line when the etcd binary is missing (CI
//! installs it). Every process is ours and stopped by PID; every namespace
//! is removed by a guard, also when an assertion fails.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use tapswitch_tests::overlay_lab::OverlayLab;
use tapswitch_tests::poll::wait_for;
use tapswitch_tests::{Netns, require_root, unique_name};

use tapswitch_tests::overlay_hosts::*;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 1);

/// The MAC namespace `ns` has for the gateway in its neighbour table.
fn gateway_mac_seen_in(ns: &str) -> String {
    let neigh = tapswitch_tests::netns::ip_output(&["-n", ns, "neigh", "show", "10.50.0.1"])
        .expect("ip neigh");
    neigh
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or_else(|| panic!("no gateway entry in {ns}: {neigh}"))
        .to_string()
}

#[test]
fn an_attached_namespace_joins_the_overlay_and_every_host_has_one_gateway() {
    require_root();
    let Some(mut lab) = OverlayLab::new("overlay_attach", 2) else {
        return;
    };
    lab.ok(
        0,
        &[
            "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET,
        ],
    );
    let a = serve(&lab, 0);
    let b = serve(&lab, 1);
    let on_b = create_container(&mut lab, 1, &b);

    let outside = Netns::new("tatt");
    let name = unique_name("at");
    let netns = format!("/run/netns/{}", outside.name);
    let control = a.control.display().to_string();
    lab.ok(
        0,
        &[
            "container",
            "attach",
            &name,
            "--netns",
            &netns,
            "--network",
            "ov",
            "--control",
            &control,
        ],
    );
    let attached = read_container(&PathBuf::from(&netns));
    assert_eq!(attached.mtu, 1450, "{attached:?}");
    assert_ne!(attached.ip, on_b.ip, "one pool across hosts");
    wait_for(
        "A and B members of each other",
        Duration::from_secs(15),
        || {
            members(&a).contains(&"10.99.0.2:4789".to_string())
                && members(&b).contains(&"10.99.0.1:4789".to_string())
        },
    );
    ping_ok(&attached, on_b.ip);
    ping_ok(&on_b, attached.ip);
    ping_ok(&attached, GATEWAY);
    ping_ok(&on_b, GATEWAY);

    // One gateway MAC on both hosts, each answered at home.
    let on_b_ns = on_b.ns.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        gateway_mac_seen_in(&outside.name),
        gateway_mac_seen_in(&on_b_ns)
    );
    assert_eq!(
        via(&a, &gateway_mac_seen_in(&outside.name)),
        None,
        "the gateway is never behind another host"
    );

    assert!(
        lab.ok(1, &["container", "ls"]).contains(&name),
        "listed on every host"
    );
    lab.ok(0, &["container", "detach", &name]);
    assert!(
        !lab.ok(1, &["container", "ls"]).contains(&name),
        "detached: its record and address are gone"
    );
}

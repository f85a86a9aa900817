//! A port whose link goes down forgets the addresses it learned, as a
//! Linux bridge's port does; static entries stay, and the port learns
//! again once its link is back. The container's end of a veth set down
//! takes its carrier off the switch's end (`NO-CARRIER`), which is what the
//! bridge goes by too: the same steps on a Linux bridge are checked first.
//! Needs root; CI runs it as root.
//!
//! ```text
//!   h1 eth0 ═ p1 ┐                       h1 eth0 ═ b1 ┐
//!   h2 eth0 ═ p2 ├─ serve --iface p1..p3              ├─ br0 (Linux bridge)
//!   h3 eth0 ═ p3 ┘                       h2 eth0 ═ b2 ┘
//! ```

use std::time::Duration;

use tapswitch_tests::frames::mac_text;
use tapswitch_tests::poll::{within, within_doing};
use tapswitch_tests::{Netns, Topology, require_root};

/// A host pinned to port p1 by hand (`fdb add`), never heard.
const PINNED: &str = "02:00:00:00:aa:01";

/// How long a link change may take to show (the switch reads links each
/// second while frames flow; the kernel marks a carrier change up to a
/// second late).
const LINK_CHANGE: Duration = Duration::from_secs(10);

fn ping(from: &Netns, to: &str) -> bool {
    from.exec("ping", &["-c", "1", "-W", "2", to])
        .status
        .success()
}

/// The learned (not permanent) entry of `mac` in bridge `br0` of `ns`.
fn bridge_learned(ns: &Netns, mac: &str) -> bool {
    let out = ns.exec("bridge", &["fdb", "show", "br", "br0"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|line| line.starts_with(mac) && !line.contains("permanent"))
}

#[test]
fn the_linux_bridge_forgets_a_host_whose_link_goes_down() {
    require_root();
    let bridge = Netns::new("tbr");
    bridge.ip(&["link", "add", "br0", "type", "bridge"]);
    bridge.ip(&["link", "set", "br0", "up"]);
    let mut hosts = Vec::new();
    for i in 1..=2u8 {
        let host = Netns::new("tbh");
        let mac = mac_text(&[0x02, 0x42, 0xac, 0x12, 0x00, i]);
        let port = format!("b{i}");
        host.veth_to("eth0", Some(&mac), &port, &bridge);
        host.ip(&["addr", "add", &format!("172.18.0.{i}/24"), "dev", "eth0"]);
        host.ip(&["link", "set", "eth0", "up"]);
        bridge.ip(&["link", "set", &port, "master", "br0", "up"]);
        hosts.push((host, mac));
    }
    let (h1, h1_mac) = &hosts[0];
    assert!(within(LINK_CHANGE, || ping(h1, "172.18.0.2")));
    assert!(bridge_learned(&bridge, h1_mac), "learned");
    h1.ip(&["link", "set", "eth0", "down"]);
    assert!(
        within(LINK_CHANGE, || !bridge_learned(&bridge, h1_mac)),
        "the bridge forgets h1 once its link is down"
    );
}

#[test]
fn a_port_whose_link_goes_down_forgets_its_hosts_and_learns_again_when_up() {
    require_root();
    let topo = Topology::veth_star(3);
    let switch = topo.serve_with(&[]);
    let (h1, h2, h3) = (&topo.hosts[0], &topo.hosts[1], &topo.hosts[2]);
    let h1_mac = mac_text(&h1.mac);
    let h2_ip = h2.ip.to_string();
    let h3_ip = h3.ip.to_string();
    assert!(
        ping(&h1.ns, &h2_ip) && ping(&h1.ns, &h3_ip),
        "{}",
        switch.log()
    );
    assert_eq!(switch.port_of(&h1_mac).as_deref(), Some("p1"));
    let pinned = switch.command(&["fdb", "add", PINNED, "p1"]);
    assert!(pinned.status.success(), "{pinned:?}");
    assert_eq!(switch.port(&h1.port)["link_down"], serde_json::Value::Null);

    // h1 sets its end down while h2 and h3 keep talking (the switch's
    // sweeps go on).
    h1.ns.ip(&["link", "set", "eth0", "down"]);
    let talk = || {
        ping(&h2.ns, &h3_ip);
    };
    assert!(
        within_doing(LINK_CHANGE, || switch.port_of(&h1_mac).is_none(), talk),
        "h1 is forgotten: {}\n{}",
        switch.fdb(),
        switch.log()
    );
    assert!(
        switch
            .log()
            .contains("port p1: link down; forgot 1 address learned there"),
        "{}",
        switch.log()
    );
    assert_eq!(
        switch.port_of(PINNED).as_deref(),
        Some("p1"),
        "static stays"
    );
    assert_eq!(switch.port_of(&mac_text(&h2.mac)).as_deref(), Some("p2"));
    assert_eq!(switch.port(&h1.port)["link_down"], true);
    let listed = switch.command(&["ports"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    let p1_line = listed.lines().find(|line| line.contains(": p1 ("));
    assert!(
        p1_line.is_some_and(|line| line.ends_with(" link down")),
        "{listed}"
    );

    // Back up: the port says so and learns h1 again from its next frame.
    h1.ns.ip(&["link", "set", "eth0", "up"]);
    assert!(
        within_doing(
            LINK_CHANGE,
            || switch.log().contains("port p1: link up"),
            talk
        ),
        "{}",
        switch.log()
    );
    assert!(within(LINK_CHANGE, || ping(&h1.ns, &h2_ip)));
    assert_eq!(switch.port_of(&h1_mac).as_deref(), Some("p1"));
    assert_eq!(switch.port(&h1.port)["link_down"], serde_json::Value::Null);
}

/// The MAC of `eth0` in `host`.
fn mac_of_eth0(host: &Netns) -> String {
    let out = host.exec("cat", &["/sys/class/net/eth0/address"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_tap_set_down_in_its_container_forgets_its_host() {
    require_root();
    let (_switch_ns, switch, hosts) = tapswitch_tests::tap_pair(&[]);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let h1_mac = mac_of_eth0(h1);
    assert!(
        within(LINK_CHANGE, || ping(h1, "172.17.0.3")),
        "{}",
        switch.log()
    );
    assert_eq!(switch.port_of(&h1_mac).as_deref(), Some("t1"));
    h1.ip(&["link", "set", "eth0", "down"]);
    let talk = || {
        ping(h2, "172.17.0.1");
    };
    assert!(
        within_doing(LINK_CHANGE, || switch.port_of(&h1_mac).is_none(), talk),
        "h1 is forgotten: {}\n{}",
        switch.fdb(),
        switch.log()
    );
    assert_eq!(switch.port("t1")["link_down"], true);
    h1.ip(&["link", "set", "eth0", "up"]);
    assert!(within(LINK_CHANGE, || ping(h1, "172.17.0.3")));
    assert_eq!(switch.port_of(&h1_mac).as_deref(), Some("t1"));
    assert_eq!(switch.port("t1")["link_down"], serde_json::Value::Null);
}

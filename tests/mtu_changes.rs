//! An interface's MTU changed while it is a port is followed, as the Linux
//! bridge reads its device's MTU for every frame: raised to 9000 on both
//! hosts' links, a 8000-byte ping goes through the switch at once (the
//! first frame too big for the MTU the switch knew asks the kernel again);
//! lowered on one port, that port's frames over the new size are dropped
//! as `too-big` once the switch's sweep read it, within a second while
//! frames flow; `tapswitch ports` shows an MTU changed while none did. Veth ports (the
//! workers' path: `--no-kernel-shortcut`, else the kernel would carry the
//! pings) and TAP ports whose interfaces moved into the hosts' namespaces
//! and were renamed there. Needs root; CI runs it as root.
//!
//! ```text
//!   h1 eth0 ═ p1 ┐                                    h1 eth0 (TAP t1) ┐
//!                ├─ serve --iface p1 --iface p2                         ├─ serve --tap t1 --tap t2
//!   h2 eth0 ═ p2 ┘                                    h2 eth0 (TAP t2) ┘
//! ```

use std::time::Duration;

use tapswitch_tests::poll::within;
use tapswitch_tests::topology::tap_pair;
use tapswitch_tests::{Netns, SwitchProcess, Topology, require_root};

const JUMBO: &str = "9000";
/// An ICMP payload that needs a jumbo frame (8028-byte packet).
const BIG_PING: &str = "8000";

/// Whether `count` pings of `size` bytes, not fragmented, from `from` to
/// `to` all come back.
fn pings(from: &Netns, to: &str, size: &str, count: &str) -> Result<(), String> {
    let out = from.exec(
        "ping",
        &["-c", count, "-W", "2", "-M", "do", "-s", size, to],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && text.contains(&format!(" {count} received")) {
        Ok(())
    } else {
        Err(format!(
            "ping -s {size} {to}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Sends with `send` (frames keep the switch's housekeeping awake) until
/// the switch's log says port `name` made `change`, for at most 10 s (the
/// sweep comes each second); `tapswitch ports` is not asked meanwhile (it
/// reads the MTU itself), so the change is the sweep's (rule 1 of
/// `ports/src/mtu.rs`).
fn sweep_reads(switch: &SwitchProcess, name: &str, change: &str, send: impl Fn()) -> bool {
    let line = format!("port {name}: MTU {change}");
    within(Duration::from_secs(10), || {
        send();
        switch.log().contains(&line)
    })
}

fn too_big(switch: &SwitchProcess, name: &str) -> u64 {
    switch.port(name)["stats"]["drops"]["too-big"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn veth_ports_follow_their_interfaces_mtu_up_and_down() {
    require_root();
    let topo = Topology::veth_star(2);
    let switch = topo.serve_with(&["--no-kernel-shortcut"]);
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    let to_h2 = h2.ip.to_string();
    pings(&h1.ns, &to_h2, "56", "2").unwrap_or_else(|e| panic!("{e}\n{}", switch.log()));

    for host in &topo.hosts {
        host.ns.ip(&["link", "set", "eth0", "mtu", JUMBO]);
        topo.switch_ns
            .ip(&["link", "set", &host.port, "mtu", JUMBO]);
    }
    // At once: no sweep is waited for.
    pings(&h1.ns, &to_h2, BIG_PING, "3")
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", switch.log(), switch.ports()));
    assert_eq!(switch.port("p2")["mtu"], 9000);
    assert_eq!(too_big(&switch, "p2"), 0);
    assert!(
        switch.log().contains("port p2: MTU 1500 -> 9000"),
        "{}",
        switch.log()
    );

    // Lowered on p2 alone: h2 still takes jumbo frames, the port not.
    // Until the sweep reads it such a frame fails to send (tx-error).
    topo.switch_ns.ip(&["link", "set", "p2", "mtu", "1500"]);
    let ping_once = || {
        let _ = pings(&h1.ns, &to_h2, BIG_PING, "1");
    };
    assert!(
        sweep_reads(&switch, "p2", "9000 -> 1500", ping_once),
        "{}",
        switch.log()
    );
    let before = too_big(&switch, "p2");
    assert!(pings(&h1.ns, &to_h2, BIG_PING, "2").is_err());
    assert_eq!(switch.port("p2")["mtu"], 1500);
    assert!(
        too_big(&switch, "p2") >= before + 2,
        "{}",
        switch.port("p2")
    );
    pings(&h1.ns, &to_h2, "1400", "2").unwrap_or_else(|e| panic!("{e}\n{}", switch.log()));

    // Changed while nothing flows: `tapswitch ports` asks the kernel.
    topo.switch_ns.ip(&["link", "set", "p1", "mtu", "4000"]);
    assert_eq!(switch.port("p1")["mtu"], 4000);
}

#[test]
fn tap_ports_follow_their_interfaces_mtu_in_the_hosts_namespaces() {
    require_root();
    let (_switch_ns, switch, hosts) = tap_pair(&[]);
    pings(&hosts[0], "172.17.0.3", "56", "2").unwrap_or_else(|e| panic!("{e}\n{}", switch.log()));

    // The TAPs are `eth0` in the hosts' namespaces now.
    for host in &hosts {
        host.ip(&["link", "set", "eth0", "mtu", JUMBO]);
    }
    pings(&hosts[0], "172.17.0.3", BIG_PING, "3")
        .unwrap_or_else(|e| panic!("{e}\n{}", switch.log()));
    assert_eq!(switch.port("t2")["mtu"], 9000);
    assert_eq!(too_big(&switch, "t2"), 0);

    hosts[1].ip(&["link", "set", "eth0", "mtu", "1500"]);
    let ping_once = || {
        let _ = pings(&hosts[0], "172.17.0.3", BIG_PING, "1");
    };
    assert!(
        sweep_reads(&switch, "t2", "9000 -> 1500", ping_once),
        "{}",
        switch.log()
    );
    let before = too_big(&switch, "t2");
    assert!(pings(&hosts[0], "172.17.0.3", BIG_PING, "2").is_err());
    assert!(
        too_big(&switch, "t2") >= before + 2,
        "{}",
        switch.port("t2")
    );
}

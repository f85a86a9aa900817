//! Runs of small UDP datagrams leave the switch as UDP GSO super-frames
//! (`ports::coalesce`), and the receiver's kernel cuts them back into the
//! datagrams that were sent: every one that arrives is whole and arrives
//! once. Through veth ports (packet sockets) and TAP ports, and
//! not at all with `serve --no-coalesce`. Needs root; CI runs it as root.
//!
//! ```text
//!   h1 eth0 ═══ p1 (veth) or t1 (TAP) ┐  UDP flood, h1 -> h2
//!                                     ├─ tapswitch serve
//!   h2 eth0 ═══ p2 (veth) or t2 (TAP) ┘
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::time::Duration;

use tapswitch_tests::{Netns, SwitchProcess, Topology, require_root, tap_pair};

const H1: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 17, 0, 2));
const H2: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 17, 0, 3));
const H1_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
const H2_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3));
const PORT: u16 = 5301;
/// Datagrams in the flood: enough for the switch to read them in batches.
const FLOOD: u32 = 20_000;
const PAYLOAD: usize = 64;

/// Datagram `seq`'s payload: its number, then bytes that depend on it.
fn payload(seq: u32) -> [u8; PAYLOAD] {
    let mut p = [0u8; PAYLOAD];
    p[..4].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p.iter_mut().enumerate().skip(4) {
        *b = (seq.wrapping_mul(31) as usize + i) as u8;
    }
    p
}

/// Sends `FLOOD` datagrams from h1 (at `from`) to h2 (at `to`) as fast as
/// a connected socket can, and checks what h2 receives: each datagram
/// whole and from h1, none twice. Returns how many arrived.
fn flood(h1: &Netns, h2: &Netns, from: IpAddr, to: IpAddr) -> u32 {
    let receiver = h2.run(|| UdpSocket::bind((to, PORT)).expect("binding in h2"));
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let sender = h1.run(|| {
        let s = UdpSocket::bind((from, 0)).expect("binding in h1");
        s.connect((to, PORT)).expect("connecting in h1");
        s
    });
    let from = sender.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((len, peer)) = receiver.recv_from(&mut buf) {
            got.push((buf[..len].to_vec(), peer));
        }
        got
    });
    for seq in 0..FLOOD {
        // A full queue on the way is loss, as it is for any UDP sender.
        let _ = sender.send(&payload(seq));
    }
    let got = reader.join().unwrap();

    // Order is not checked across the whole flood: when the sender moves
    // between CPUs, its datagrams land in two receive lanes, and a lane
    // keeps order only within itself (see `dataplane/mod.rs`); `lanes.rs`
    // checks that. Within a super-frame the order is the one sent.
    let mut seen = std::collections::HashSet::new();
    for (datagram, peer) in &got {
        assert_eq!(*peer, from, "from h1's socket");
        assert_eq!(datagram.len(), PAYLOAD, "one datagram, not a run");
        let seq = u32::from_be_bytes(datagram[..4].try_into().unwrap());
        assert_eq!(datagram[..], payload(seq), "datagram {seq} whole");
        assert!(seen.insert(seq), "datagram {seq} arrived twice");
    }
    got.len() as u32
}

/// Port `name`'s counters: (frames sent, datagrams sent coalesced, super-frames).
fn coalesced(switch: &SwitchProcess, name: &str) -> (u64, u64, u64) {
    let port = switch.port(name);
    let stats = &port["stats"];
    let n = |key: &str| {
        stats[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {stats}"))
    };
    (n("tx_frames"), n("tx_coalesced"), n("tx_superframes"))
}

/// h2's UDP counters (`/proc/net/snmp`): datagrams its UDP layer took in
/// (queued to a socket, or dropped at a full one), and checksum errors.
fn udp_in(h2: &Netns, ipv6: bool) -> (u64, u64) {
    let file = if ipv6 {
        "/proc/net/snmp6"
    } else {
        "/proc/net/snmp"
    };
    let out = h2.exec("cat", &[file]);
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> u64 {
        if ipv6 {
            // One "Udp6InDatagrams   123" line per counter.
            let wanted = format!("Udp6{name}");
            let line = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(&wanted));
            line.and_then(|l| l.split_whitespace().nth(1))
                .unwrap()
                .parse()
                .unwrap()
        } else {
            // A "Udp: names" line, then a "Udp: values" line.
            let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
            let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
            let at = names.split_whitespace().position(|n| n == name).unwrap();
            values.split_whitespace().nth(at).unwrap().parse().unwrap()
        }
    };
    (
        field("InDatagrams") + field("InErrors"),
        field("InCsumErrors"),
    )
}

/// Most datagrams one UDP super-frame carries (the kernel's
/// `UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: u64 = 64;

/// Frames the kernel dropped on the interfaces of `namespaces` (RX and TX
/// `dropped` of `ip -s link`): a loaded machine's full backlog drops a
/// super-frame whole, before h2's UDP layer counts it.
fn kernel_drops(namespaces: &[&Netns]) -> u64 {
    namespaces
        .iter()
        .map(|ns| {
            let out = ns.exec("ip", &["-s", "-j", "link"]);
            let links: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("ip -s -j link gives JSON");
            let dropped = |link: &serde_json::Value, way: &str| {
                link["stats64"][way]["dropped"].as_u64().unwrap_or(0)
            };
            links.as_array().map_or(0, |all| {
                all.iter()
                    .map(|l| dropped(l, "rx") + dropped(l, "tx"))
                    .sum()
            })
        })
        .sum()
}

/// The flood was coalesced on its way to h2, and every datagram the switch
/// sent in a super-frame reached h2's UDP layer as a datagram of its own
/// (all but those of super-frames the kernel dropped on the way, counted
/// on the interfaces of `on_the_way`).
fn check_coalesced(
    switch: &SwitchProcess,
    egress: &str,
    h2: &Netns,
    on_the_way: &[&Netns],
    arrived: u32,
    ipv6: bool,
) {
    let (udp_in, csum_errors) = udp_in(h2, ipv6);
    assert_eq!(csum_errors, 0, "no checksum errors in h2");
    let (frames, datagrams, super_frames) = coalesced(switch, egress);
    let dropped = kernel_drops(on_the_way);
    assert!(
        udp_in + dropped * MAX_SEGMENTS >= datagrams,
        "h2 took in {udp_in} datagrams, the switch sent {datagrams} coalesced \
         ({dropped} frames dropped by the kernel on the way)"
    );
    eprintln!(
        "{egress}: {arrived} of {FLOOD} arrived; {datagrams} of {frames} sent in {super_frames} super-frames"
    );
    assert!(arrived > 0, "some of the flood arrived");
    if !ports::coalesce::kernel_supports() {
        // Before Linux 6.2 the switch does not coalesce (docs/offloads.md).
        assert_eq!((datagrams, super_frames), (0, 0));
        return;
    }
    assert!(
        super_frames > 0,
        "a flood of one flow was coalesced: {datagrams} in {super_frames}"
    );
    assert!(
        datagrams >= 2 * super_frames && datagrams <= frames,
        "{datagrams} in {super_frames} of {frames}"
    );
}

/// A flood from h1 to h2 through veth ports, over IPv4 or IPv6.
fn flood_through_veth_ports(ipv6: bool) {
    require_root();
    let topo = Topology::veth_star(2);
    let (from, to) = if ipv6 { (H1_V6, H2_V6) } else { (H1, H2) };
    if ipv6 {
        for (host, address) in topo.hosts.iter().zip(["fd00::2/64", "fd00::3/64"]) {
            // Test namespaces start with IPv6 off (see `Netns::new`).
            host.ns.sysctl("net.ipv6.conf.all.disable_ipv6", "0");
            host.ns.sysctl("net.ipv6.conf.eth0.disable_ipv6", "0");
            host.ns
                .ip(&["-6", "addr", "add", address, "dev", "eth0", "nodad"]);
        }
    }
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    let arrived = flood(&topo.hosts[0].ns, &topo.hosts[1].ns, from, to);
    let h2 = &topo.hosts[1].ns;
    check_coalesced(&switch, "p2", h2, &[&topo.switch_ns, h2], arrived, ipv6);
}

#[test]
fn a_udp_flood_through_veth_ports_is_coalesced_and_arrives_datagram_by_datagram() {
    flood_through_veth_ports(false);
}

#[test]
fn an_ipv6_udp_flood_through_veth_ports_is_coalesced_and_arrives_datagram_by_datagram() {
    flood_through_veth_ports(true);
}

#[test]
fn a_udp_flood_through_tap_ports_is_coalesced_and_arrives_datagram_by_datagram() {
    require_root();
    let (switch_ns, switch, hosts) = tap_pair(&[]);
    let arrived = flood(&hosts[0], &hosts[1], H1, H2);
    check_coalesced(
        &switch,
        "t2",
        &hosts[1],
        &[&switch_ns, &hosts[1]],
        arrived,
        false,
    );
}

#[test]
fn with_no_coalesce_every_datagram_goes_alone() {
    require_root();
    let topo = Topology::veth_star(2);
    let switch = topo.serve_with(&["--no-coalesce"]);
    let arrived = flood(&topo.hosts[0].ns, &topo.hosts[1].ns, H1, H2);
    assert!(arrived > 0, "some of the flood arrived");
    let (frames, datagrams, super_frames) = coalesced(&switch, "p2");
    assert!(frames >= u64::from(arrived));
    assert_eq!((datagrams, super_frames), (0, 0));
}

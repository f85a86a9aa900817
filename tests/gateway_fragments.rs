//! Fragments a container sends through the gateway (issue 14): the
//! gateway reassembles them as a kernel router's NAT does, and the
//! datagram leaves whole. As root in namespaces this test makes: one
//! container on the switch, the "remote" namespace behind a route.

use std::net::SocketAddrV4;

use tapswitch_tests::gateway_kit::{GATEWAY, udp_exchange_in};
use tapswitch_tests::remote::{REMOTE_IP, Remote, UDP_ECHO_PORT, dns_addresses, dns_query};
use tapswitch_tests::{SwitchProcess, Topology, require_root};

/// A DNS query for `name` made `len` bytes long or more with EDNS padding
/// (RFC 7830), so that it must be cut into fragments at MTU 1500.
fn padded_query(id: u16, name: &str, len: usize) -> Vec<u8> {
    let mut query = dns_query(id, name);
    query[11] = 1; // ARCOUNT: the OPT record.
    let padding = len.saturating_sub(query.len() + 15);
    query.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0]);
    query.extend_from_slice(&u16::try_from(padding + 4).unwrap().to_be_bytes());
    query.extend_from_slice(&[0, 12]);
    query.extend_from_slice(&u16::try_from(padding).unwrap().to_be_bytes());
    query.resize(query.len() + padding, 0);
    query
}

#[test]
fn a_fragmented_datagram_from_a_container_leaves_whole_and_comes_back() {
    require_root();
    let topo = Topology::veth_star(1);
    let remote = Remote::new(&topo.switch_ns);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    let container = &topo.hosts[0].ns.name;

    // 4,000 bytes at MTU 1,500: the container's kernel sends three
    // fragments; the remote's echo gets one datagram (a host socket sends
    // only whole ones), and its answer comes back cut by the gateway.
    let big: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let echo = SocketAddrV4::new(REMOTE_IP, UDP_ECHO_PORT);
    let answer = udp_exchange_in(container, echo, &big)
        .unwrap_or_else(|e| panic!("the 4,000-byte echo: {e}\n{}", switch.log()));
    assert_eq!(answer.len(), big.len());
    assert!(answer == big, "the datagram comes back intact");

    // A DNS query of 3,000 bytes to the gateway is answered as well.
    let query = padded_query(0x4242, "host.tapswitch.internal", 3000);
    assert!(query.len() >= 3000);
    let reply = udp_exchange_in(container, SocketAddrV4::new(GATEWAY, 53), &query)
        .unwrap_or_else(|e| panic!("the padded DNS query: {e}\n{}", switch.log()));
    assert_eq!(&reply[..2], &[0x42, 0x42]);
    assert_eq!(dns_addresses(&reply), vec![GATEWAY]);

    let services = switch.call(r#"{"cmd":"services"}"#).expect("services");
    let frames = &services["frames"];
    assert!(
        frames["reassembly"]["reassembled"].as_u64().unwrap() >= 2,
        "{services}"
    );
    assert!(frames["fragments"].as_u64().unwrap() >= 6, "{services}");
    assert!(frames["fragmented"].as_u64().unwrap() >= 1, "{services}");
    assert_eq!(frames["reassembly"]["overlaps"], 0, "{services}");
    drop(remote);
}

#[test]
fn a_ping_larger_than_the_mtu_to_the_gateway_is_answered_in_fragments() {
    require_root();
    let topo = Topology::veth_star(1);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    let container = &topo.hosts[0].ns;

    // As the Linux bridge's own address answers: 4,000 bytes of data go
    // as three fragments, reassembled by the gateway's services for its
    // stack, whose reply comes back cut at the MTU; 1,472 bytes fill a
    // 1,500-byte packet exactly, cut neither way.
    let gateway = GATEWAY.to_string();
    for size in ["4000", "1472"] {
        let out = container.exec("ping", &["-c", "2", "-W", "3", "-s", size, &gateway]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(" 2 received"),
            "ping -s {size} {gateway}: {text}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            switch.log()
        );
    }

    let services = switch.call(r#"{"cmd":"services"}"#).expect("services");
    let reassembly = &services["frames"]["reassembly"];
    assert_eq!(reassembly["to_stack"], 2, "{services}");
    assert_eq!(reassembly["reassembled"], 2, "{services}");
}

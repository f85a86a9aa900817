//! The gateway's replies larger than the MTU: a reassembled ping is
//! answered in fragments at the link's MTU, as Linux's bridge address
//! answers one (see "Larger than the MTU" in the gateway's documentation).

use smoltcp::wire::{EthernetFrame, Icmpv4Packet, Icmpv4Repr, Ipv4Packet};

use super::tests::{GW_IP, HOST_IP, HOST_MAC, arp_request, ping_with};
use super::*;
use crate::services::{Reassembler, ReassemblyLimits};

/// `len` bytes of echo data, not all alike.
fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A gateway on `link` that knows the host (its ARP request came), and
/// the frames it answered that with set aside.
fn gateway_on(link: GatewayLink) -> Gateway {
    let mac = MacAddr::docker_from_ipv4(GW_IP);
    let mut gw = Gateway::with_link(GW_IP, 16, mac, link, Instant::ZERO);
    gw.deliver(&arp_request(GW_IP));
    gw.poll(Instant::ZERO, &mut Vec::new());
    gw
}

/// The IPv4 packets in `frames`, each checked to be a frame for the host
/// that fits the link.
fn packets(frames: &[Vec<u8>], link: GatewayLink) -> Vec<Vec<u8>> {
    frames
        .iter()
        .map(|frame| {
            assert!(frame.len() <= link.frame_max(), "{} bytes", frame.len());
            let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
            assert_eq!(eth.dst_addr(), EthernetAddress(HOST_MAC));
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            assert!(ip.verify_checksum());
            eth.payload()[..usize::from(ip.total_len())].to_vec()
        })
        .collect()
}

/// The echo replies the fragments in `packets` make, as (sequence number,
/// data), in the order they were completed: every packet must be a
/// fragment that the services' reassembly table takes without complaint.
fn echo_replies(packets: &[Vec<u8>]) -> Vec<(u16, Vec<u8>)> {
    let mut table = Reassembler::new(ReassemblyLimits::default());
    let mut replies = Vec::new();
    for packet in packets {
        let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
        assert!(ip.more_frags() || ip.frag_offset() != 0, "a fragment");
        assert!(!ip.dont_frag());
        if let Some(whole) = table.fragment(Instant::ZERO, packet) {
            let ip = Ipv4Packet::new_checked(&whole[..]).unwrap();
            assert_eq!((ip.src_addr(), ip.dst_addr()), (GW_IP, HOST_IP));
            let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
            let repr = Icmpv4Repr::parse(&icmp, &Default::default()).expect("checksum and all");
            let Icmpv4Repr::EchoReply {
                ident: 7,
                seq_no,
                data,
            } = repr
            else {
                panic!("not the echo reply: {repr:?}")
            };
            replies.push((seq_no, data.to_vec()));
        }
    }
    let stats = table.stats();
    assert_eq!((stats.overlaps, stats.malformed, stats.too_big), (0, 0, 0));
    assert!(table.is_empty(), "every fragment of every reply came");
    replies
}

#[test]
fn a_reassembled_ping_larger_than_the_mtu_is_answered_in_fragments() {
    for link in [GatewayLink::PLAIN, GatewayLink::offloaded(1500)] {
        let mut gw = gateway_on(link);
        let request = ping_with(gw.mac(), GW_IP, 1, &data(4000));
        assert!(!gw.deliver(&request), "a plain frame longer than the MTU");
        assert!(gw.deliver_reassembled(&request));
        let mut out = Vec::new();
        gw.poll(Instant::from_millis(1), &mut out);
        // 4,008 bytes of ICMP: 1,480, 1,480 and 1,048, as Linux cuts them.
        let packets = packets(&out, link);
        let sizes: Vec<usize> = packets.iter().map(|p| p.len() - 20).collect();
        assert_eq!(sizes, vec![1480, 1480, 1048], "{link:?}");
        assert_eq!(echo_replies(&packets), vec![(1, data(4000))]);
        assert_eq!(gw.poll_delay(Instant::from_millis(1)), None, "nothing left");
    }
}

#[test]
fn two_large_pings_taken_in_one_poll_are_both_answered_whole() {
    // smoltcp cuts one datagram at a time: the second reply must not
    // overwrite the first's unsent fragments.
    let link = GatewayLink::offloaded(1500);
    let mut gw = gateway_on(link);
    for seq_no in [1, 2] {
        assert!(gw.deliver_reassembled(&ping_with(gw.mac(), GW_IP, seq_no, &data(3000))));
    }
    let mut out = Vec::new();
    gw.poll_offloaded(Instant::from_millis(1), &mut out);
    assert!(out.iter().all(|(vnet, _)| vnet.is_plain()));
    let frames: Vec<Vec<u8>> = out.into_iter().map(|(_, frame)| frame).collect();
    let replies = echo_replies(&packets(&frames, link));
    assert_eq!(replies, vec![(1, data(3000)), (2, data(3000))]);
}

#[test]
fn a_ping_exactly_at_the_mtu_is_answered_in_one_frame() {
    let link = GatewayLink::offloaded(1500);
    let mut gw = gateway_on(link);
    // 1,472 bytes of data: a 1,500-byte packet each way.
    gw.deliver(&ping_with(gw.mac(), GW_IP, 1, &data(1472)));
    let mut out = Vec::new();
    gw.poll(Instant::from_millis(1), &mut out);
    let packets = packets(&out, link);
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].len(), 1500);
    let ip = Ipv4Packet::new_checked(&packets[0][..]).unwrap();
    assert!(!ip.more_frags() && ip.frag_offset() == 0, "whole");
}

#[test]
fn the_smallest_mtu_cuts_a_reply_in_many_fragments() {
    // MTU 68: 48 bytes of payload a fragment, 21 fragments for 1,008.
    let link = GatewayLink {
        mtu: 68,
        offloads: false,
    };
    let mut gw = gateway_on(link);
    assert!(gw.deliver_reassembled(&ping_with(gw.mac(), GW_IP, 9, &data(1000))));
    let mut out = Vec::new();
    gw.poll(Instant::from_millis(1), &mut out);
    assert_eq!(out.len(), 21);
    assert_eq!(echo_replies(&packets(&out, link)), vec![(9, data(1000))]);
}

#[test]
fn a_reassembled_datagram_is_bounded_by_the_largest_ipv4_packet() {
    let mut gw = gateway_on(GatewayLink::PLAIN);
    // 65,515 bytes of UDP in a 65,535-byte packet: taken (smoltcp answers
    // a port with no socket "port unreachable", which quotes 548 bytes).
    let packet = crate::services::udp_packet(
        SocketAddrV4::new(HOST_IP, 40000),
        SocketAddrV4::new(GW_IP, 9),
        &vec![0u8; IPV4_MAX - 20 - 8],
    )
    .unwrap();
    let frame = crate::services::ethernet(MacAddr(HOST_MAC), gw.mac(), &packet);
    assert!(gw.deliver_reassembled(&frame));
    let mut out = Vec::new();
    gw.poll(Instant::from_millis(1), &mut out);
    assert_eq!(out.len(), 1, "the port unreachable, within the MTU");
    assert!(out[0].len() <= GATEWAY_FRAME_MAX);
    // One byte more than an IPv4 packet can hold: refused.
    let mut longer = frame.clone();
    longer.push(0);
    assert!(!gw.deliver_reassembled(&longer));
}

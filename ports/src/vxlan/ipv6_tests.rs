//! A tunnel on an IPv6 underlay: two tunnels on `::1`, members of each
//! other; plain frames and a cut super-frame (`UDP_SEGMENT` to an IPv6
//! address) cross, and the MAC is learned behind the IPv6 endpoint.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use super::*;
use crate::{RxBatch, VnetHdr};

const VNI: u32 = 4096;
const H1: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x32, 0x00, 0x02]);
const H2: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x32, 0x00, 0x03]);

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst.0);
    frame.extend_from_slice(&src.0);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&[0x45; 46]);
    frame
}

fn open_on_loopback() -> (Tunnel, OpenedPort) {
    // Port 0 cannot be a member's address; pick a free port first.
    let port = std::net::UdpSocket::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Tunnel::open(&TunnelConfig {
        name: "vxlan0".into(),
        local: SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0).into(),
        vni: VNI,
        mtu: 1430,
        local_only: vec![],
    })
    .unwrap()
}

fn receive_some(port: &mut OpenedPort, want: usize) -> Vec<Vec<u8>> {
    let mut batch = RxBatch::new(8, 65_536);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        let n = port.lanes[0].recv_batch(&mut batch).unwrap();
        got.extend((0..n).map(|i| batch.get(i).1.to_vec()));
        std::thread::sleep(Duration::from_millis(5));
    }
    got
}

#[test]
fn frames_cross_an_ipv6_underlay_and_are_learned_behind_the_ipv6_endpoint() {
    let (left, left_port) = open_on_loopback();
    let (right, mut right_port) = open_on_loopback();
    assert!(matches!(left.local(), SocketAddr::V6(_)));
    left.add_member(right.local());
    right.add_member(left.local());

    let hello = frame(MacAddr([0xff; 6]), H1);
    left_port.tx.send(&VnetHdr::default(), &hello).unwrap();
    assert_eq!(receive_some(&mut right_port, 1), vec![hello]);
    assert_eq!(right.endpoint_of(H1), Some(left.local()));

    // A TCP super-frame, cut and sent with UDP_SEGMENT to the IPv6 member.
    let builder = etherparse::PacketBuilder::ethernet2(H2.0, H1.0)
        .ipv4([10, 50, 0, 2], [10, 50, 0, 3], 64)
        .tcp(40_000, 5_000, 1, 65_000);
    let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
    let mut frame = Vec::new();
    builder.write(&mut frame, &payload).unwrap();
    let vnet = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1380,
        ..VnetHdr::default()
    };
    left_port.tx.send(&vnet, &frame).unwrap();
    let mut received = Vec::new();
    for wire in receive_some(&mut right_port, 1) {
        let packet = etherparse::SlicedPacket::from_ethernet(&wire).unwrap();
        let Some(etherparse::TransportSlice::Tcp(tcp)) = packet.transport else {
            panic!("not TCP");
        };
        received.extend_from_slice(tcp.payload());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.len() < payload.len() && Instant::now() < deadline {
        for wire in receive_some(&mut right_port, 1) {
            let packet = etherparse::SlicedPacket::from_ethernet(&wire).unwrap();
            if let Some(etherparse::TransportSlice::Tcp(tcp)) = packet.transport {
                received.extend_from_slice(tcp.payload());
            }
        }
    }
    assert_eq!(received, payload, "every segment crossed, in order");
    assert_eq!(left.stats().tx_errors, 0);
    assert_eq!(right.stats().rx_dropped_not_member, 0);
}

#[test]
fn an_ipv6_sender_that_is_no_member_is_dropped() {
    let (left, left_port) = open_on_loopback();
    let (right, mut right_port) = open_on_loopback();
    left.add_member(right.local());
    left_port
        .tx
        .send(&VnetHdr::default(), &frame(MacAddr([0xff; 6]), H1))
        .unwrap();
    let mut batch = RxBatch::new(8, 2048);
    let deadline = Instant::now() + Duration::from_secs(5);
    while right.stats().rx_dropped_not_member == 0 && Instant::now() < deadline {
        assert_eq!(right_port.lanes[0].recv_batch(&mut batch).unwrap(), 0);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(right.stats().rx_dropped_not_member, 1);
    assert_eq!(right.endpoint_of(H1), None);
}

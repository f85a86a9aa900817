//! The tunnel's table with a fake clock, and two tunnels on loopback.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::*;
use crate::wire::vxlan;
use crate::{RxBatch, VnetHdr};

const VNI: u32 = 4096;
const A: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 4789));
const B: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 4789));
const STRANGER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 66), 4789));
const GATEWAY: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x32, 0x00, 0x01]);
const H1: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x32, 0x00, 0x02]);
const H2: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x32, 0x00, 0x03]);
const BROADCAST: MacAddr = MacAddr([0xff; 6]);

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst.0);
    frame.extend_from_slice(&src.0);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&[0x45; 46]);
    frame
}

fn datagram(vni: u32, dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut datagram = vxlan::header(vni).to_vec();
    datagram.extend(frame(dst, src));
    datagram
}

fn table() -> RemoteTable {
    let mut table = RemoteTable::new(VNI, [GATEWAY]);
    table.add_member(A);
    table.add_member(B);
    table
}

/// A source port the sender picked from a flow hash (RFC 7348 §5).
fn from(member: SocketAddr) -> SocketAddr {
    SocketAddr::new(member.ip(), 54_321)
}

#[test]
fn a_members_frame_is_taken_and_its_source_learned_behind_its_endpoint() {
    let now = Instant::now();
    let mut table = table();
    let offset = table
        .receive(from(A), &datagram(VNI, BROADCAST, H1), now)
        .unwrap();
    assert_eq!(offset, vxlan::HEADER_LEN);
    // Behind A's registered port, not the hashed source port.
    assert_eq!(table.lookup(H1, now), Some(A));
    assert_eq!(table.destinations(H1, H2, now), Destinations::One(A));
    let entries = table.entries(now + Duration::from_secs(2));
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].mac, entries[0].endpoint), (H1, A));
    assert_eq!(entries[0].age, Duration::from_secs(2));
    assert_eq!(table.stats().rx_frames, 1);
    assert_eq!(table.stats().learned, 1);
}

#[test]
fn a_datagram_like_the_one_before_is_taken_without_lookups_and_counted() {
    let now = Instant::now();
    let mut table = table();
    let first = datagram(VNI, H2, H1);
    assert_eq!(table.receive(from(A), &first, now), Ok(vxlan::HEADER_LEN));
    // Same header and source MAC, another destination and payload: taken.
    let mut next = datagram(VNI, BROADCAST, H1);
    next[30] ^= 0xff;
    assert_eq!(table.receive_like(&first, &next), Some(vxlan::HEADER_LEN));
    assert_eq!(table.stats().rx_frames, 2);
    // Another VNI, another source MAC, too short: judged afresh.
    assert_eq!(table.receive_like(&first, &datagram(VNI + 1, H2, H1)), None);
    assert_eq!(table.receive_like(&first, &datagram(VNI, H1, H2)), None);
    assert_eq!(table.receive_like(&first, &first[..20]), None);
    assert_eq!(table.stats().rx_frames, 2);
}

#[test]
fn strangers_wrong_vnis_and_short_datagrams_are_dropped_and_counted() {
    let now = Instant::now();
    let mut table = table();
    assert_eq!(
        table.receive(STRANGER, &datagram(VNI, BROADCAST, H1), now),
        Err(DropReason::NotMember)
    );
    assert_eq!(
        table.receive(from(A), &datagram(VNI + 1, BROADCAST, H1), now),
        Err(DropReason::WrongVni)
    );
    let mut no_flag = datagram(VNI, BROADCAST, H1);
    no_flag[0] = 0;
    assert_eq!(
        table.receive(from(A), &no_flag, now),
        Err(DropReason::WrongVni)
    );
    assert_eq!(
        table.receive(from(A), &vxlan::header(VNI)[..], now),
        Err(DropReason::Malformed)
    );
    assert_eq!(
        table.receive(from(A), &datagram(VNI, BROADCAST, GATEWAY), now),
        Err(DropReason::LocalOnly)
    );
    let stats = table.stats();
    assert_eq!(
        (
            stats.rx_dropped_not_member,
            stats.rx_dropped_wrong_vni,
            stats.rx_dropped_malformed,
            stats.dropped_local_only,
            stats.rx_frames,
            stats.learned,
        ),
        (1, 2, 1, 1, 0, 0)
    );
    assert!(table.entries(now).is_empty(), "nothing learned from them");
}

#[test]
fn broadcast_multicast_and_unknown_unicast_go_to_every_member() {
    let now = Instant::now();
    let mut table = table();
    let everyone = Destinations::Flood(vec![A, B]);
    assert_eq!(table.destinations(BROADCAST, H1, now), everyone);
    let multicast = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
    assert_eq!(table.destinations(multicast, H1, now), everyone);
    assert_eq!(table.destinations(H2, H1, now), everyone);
    assert_eq!(table.stats().tx_floods, 3);
    // The gateway's frames stay home, whatever their destination.
    assert_eq!(
        table.destinations(BROADCAST, GATEWAY, now),
        Destinations::Nowhere(DropReason::LocalOnly)
    );
    let mut alone = RemoteTable::new(VNI, []);
    assert_eq!(
        alone.destinations(BROADCAST, H1, now),
        Destinations::Nowhere(DropReason::NoMembers)
    );
}

#[test]
fn a_member_that_leaves_takes_its_macs_and_its_place_in_floods() {
    let now = Instant::now();
    let mut table = table();
    table
        .receive(from(A), &datagram(VNI, BROADCAST, H1), now)
        .unwrap();
    table
        .receive(from(B), &datagram(VNI, BROADCAST, H2), now)
        .unwrap();
    assert_eq!(table.remove_member(A), vec![H1]);
    assert_eq!(table.lookup(H1, now), None);
    assert_eq!(table.lookup(H2, now), Some(B));
    assert_eq!(
        table.destinations(H1, H2, now),
        Destinations::Flood(vec![B])
    );
    // And its VXLAN is refused from now on.
    assert_eq!(
        table.receive(from(A), &datagram(VNI, BROADCAST, H1), now),
        Err(DropReason::NotMember)
    );
    assert_eq!(table.stats().flushed, 1);
}

#[test]
fn entries_age_out_at_lookup_and_are_swept_later() {
    let start = Instant::now();
    let mut table = table().with_limits(Duration::from_secs(10), 8);
    table
        .receive(from(A), &datagram(VNI, BROADCAST, H1), start)
        .unwrap();
    assert_eq!(table.lookup(H1, start + Duration::from_secs(9)), Some(A));
    let later = start + Duration::from_secs(10);
    assert_eq!(table.lookup(H1, later), None);
    assert!(table.entries(later).is_empty());
    assert_eq!(table.expire(later), 1);
    // A MAC heard from another member moves there.
    table
        .receive(from(A), &datagram(VNI, BROADCAST, H1), later)
        .unwrap();
    table
        .receive(from(B), &datagram(VNI, BROADCAST, H1), later)
        .unwrap();
    assert_eq!(table.lookup(H1, later), Some(B));
}

#[test]
fn a_full_table_refuses_new_macs_and_floods_to_them() {
    let now = Instant::now();
    let mut table = table().with_limits(Duration::from_secs(300), 1);
    table
        .receive(from(A), &datagram(VNI, BROADCAST, H1), now)
        .unwrap();
    table
        .receive(from(B), &datagram(VNI, BROADCAST, H2), now)
        .unwrap();
    assert_eq!(table.stats().refused, 1);
    assert_eq!(
        table.destinations(H2, H1, now),
        Destinations::Flood(vec![A, B])
    );
}

/// Two tunnels on loopback, members of each other.
fn loopback_pair() -> ((Tunnel, OpenedPort), (Tunnel, OpenedPort)) {
    let open = |port| {
        Tunnel::open(&TunnelConfig {
            name: "vxlan0".into(),
            local: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
            vni: VNI,
            mtu: 1450,
            local_only: vec![GATEWAY],
        })
    };
    // Port 0 cannot be a member's address; pick free ports first.
    let free = || {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    (open(free()).unwrap(), open(free()).unwrap())
}

fn receive_all(port: &mut OpenedPort) -> Vec<Vec<u8>> {
    let mut batch = RxBatch::new(8, 2048);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = port.lanes[0].recv_batch(&mut batch).unwrap();
        if n > 0 || Instant::now() > deadline {
            return (0..n).map(|i| batch.get(i).1.to_vec()).collect();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn frames_cross_a_loopback_tunnel_and_the_answer_goes_back_unicast() {
    let ((left, mut left_port), (right, mut right_port)) = loopback_pair();
    left.add_member(right.local());
    right.add_member(left.local());
    let hello = frame(BROADCAST, H1);
    left_port.tx.send(&VnetHdr::default(), &hello).unwrap();
    assert_eq!(receive_all(&mut right_port), vec![hello]);
    // The loopback address stands for the whole member: H1 is behind left.
    assert_eq!(right.endpoint_of(H1), Some(left.local()));
    let answer = frame(H1, H2);
    right_port.tx.send(&VnetHdr::default(), &answer).unwrap();
    assert_eq!(receive_all(&mut left_port), vec![answer]);
    assert_eq!(right.stats().tx_floods, 0, "H1 was known: sent unicast");
    assert_eq!(right.stats().tx_datagrams, 1);
    assert_eq!(left_port.tx.mtu(), 1450);
    assert!(left_port.tx.offloads());
}

#[test]
fn a_tunnel_that_is_no_member_is_not_heard() {
    let ((left, left_port), (right, mut right_port)) = loopback_pair();
    // Right accepts nobody; left sends to right anyway.
    left.add_member(right.local());
    left_port
        .tx
        .send(&VnetHdr::default(), &frame(BROADCAST, H1))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut batch = RxBatch::new(8, 2048);
    while right.stats().rx_dropped_not_member == 0 && Instant::now() < deadline {
        assert_eq!(right_port.lanes[0].recv_batch(&mut batch).unwrap(), 0);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(right.stats().rx_dropped_not_member, 1);
    assert!(right.entries().is_empty());
}

#[test]
fn a_tcp_super_frame_crosses_as_wire_frames_with_right_checksums() {
    let ((left, left_port), (right, mut right_port)) = loopback_pair();
    left.add_member(right.local());
    right.add_member(left.local());
    let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
    let (vnet, frame) = container_tso(&payload, 1400);
    left_port.tx.send(&vnet, &frame).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 3 && Instant::now() < deadline {
        got.extend(receive_all(&mut right_port));
    }
    assert_eq!(
        got.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![1454, 1454, 54 + 1200]
    );
    let mut received = Vec::new();
    for wire in &got {
        let packet = etherparse::SlicedPacket::from_ethernet(wire).unwrap();
        let Some(etherparse::TransportSlice::Tcp(tcp)) = packet.transport else {
            panic!("not TCP");
        };
        let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
            panic!("not IPv4");
        };
        let expected = tcp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
            .unwrap();
        assert_eq!(
            tcp.checksum(),
            expected,
            "each segment's checksum is complete"
        );
        received.extend_from_slice(tcp.payload());
    }
    assert_eq!(received, payload);
    assert_eq!(left.stats().tx_datagrams, 3);
}

#[test]
fn between_switches_tcp_crosses_with_partial_checksums_and_arrives_flagged() {
    let ((left, left_port), (right, mut right_port)) = loopback_pair();
    left.add_member(right.local());
    right.add_member(left.local());
    left.set_switches([right.local()]);
    right.set_switches([left.local()]);
    let payload: Vec<u8> = (0..4000u32).map(|i| (i % 249) as u8).collect();
    let (vnet, frame) = container_tso(&payload, 1400);
    let (lone_vnet, lone) = container_tso(&payload[..700], 1400);
    left_port.tx.send(&vnet, &frame).unwrap();
    left_port.tx.send(&lone_vnet, &lone).unwrap();
    assert_eq!(left.stats().tx_datagrams, 4);

    let mut batch = RxBatch::new(8, crate::MAX_FRAME_LEN);
    let mut arrived: Vec<(VnetHdr, Vec<u8>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while arrived.len() < 2 && Instant::now() < deadline {
        let n = right_port.lanes[0].recv_batch(&mut batch).unwrap();
        arrived.extend((0..n).map(|i| (*batch.get(i).0, batch.get(i).1.to_vec())));
    }
    // The three segments joined, the lone one flagged: both NEEDS_CSUM,
    // and cut or completed they carry right checksums and the data sent.
    let headers: Vec<_> = arrived
        .iter()
        .map(|(vnet, frame)| (vnet.flags, vnet.gso_type, frame.len()))
        .collect();
    assert_eq!(
        headers,
        vec![
            (VnetHdr::NEEDS_CSUM, VnetHdr::GSO_TCPV4, 54 + 4000),
            (VnetHdr::NEEDS_CSUM, VnetHdr::GSO_NONE, 54 + 700),
        ]
    );
    let mut received = Vec::new();
    for (vnet, frame) in &arrived {
        crate::vnet::segment(vnet, frame, &mut Vec::new(), &mut |wire| {
            let packet = etherparse::SlicedPacket::from_ethernet(wire).unwrap();
            let (Some(etherparse::TransportSlice::Tcp(tcp)), Some(etherparse::NetSlice::Ipv4(ip))) =
                (&packet.transport, &packet.net)
            else {
                panic!("not TCP over IPv4");
            };
            let expected = tcp
                .to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
                .unwrap();
            assert_eq!(tcp.checksum(), expected);
            received.extend_from_slice(tcp.payload());
        })
        .unwrap();
    }
    assert_eq!(received, [&payload[..], &payload[..700]].concat());
}

#[test]
fn a_batch_leaves_in_order_and_counted() {
    let ((left, left_port), (right, mut right_port)) = loopback_pair();
    left.add_member(right.local());
    right.add_member(left.local());
    left.set_registered(right.local(), &[H1]);
    let marked = |mark: u8, extra: usize| {
        let mut frame = frame(H1, H2);
        frame[20] = mark;
        frame.extend(std::iter::repeat_n(mark, extra));
        frame
    };
    let (tso_vnet, tso) = container_tso(&[9; 3000], 1400);
    let plain = VnetHdr::default();
    let frames = [
        marked(1, 0),
        marked(2, 0),
        frame(BROADCAST, H2),
        marked(3, 10),
        marked(4, 0),
    ];
    let mut batch: Vec<(VnetHdr, &[u8])> = frames.iter().map(|f| (plain, &f[..])).collect();
    batch.push((tso_vnet, &tso));
    assert_eq!(left_port.tx.send_batch(&batch).unwrap(), 6);
    assert_eq!(left.stats().tx_datagrams, 5 + 3);
    assert_eq!(left.stats().tx_floods, 1);
    // The super-frame's segments last (some may arrive joined again).
    let data = |got: &[Vec<u8>]| got.iter().skip(5).map(|f| f.len() - 54).sum::<usize>();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (got.len() < 5 || data(&got) < 3000) && Instant::now() < deadline {
        got.extend(receive_all(&mut right_port));
    }
    assert_eq!(&got[..5], &frames[..]);
    assert_eq!(data(&got), 3000);
}

#[test]
fn a_tcp_burst_crosses_joined_and_a_batch_short_of_frames_means_an_empty_socket() {
    let ((left, left_port), (right, mut right_port)) = loopback_pair();
    left.add_member(right.local());
    right.add_member(left.local());
    // A container's 20-segment burst, as its stack hands it over.
    let builder = etherparse::PacketBuilder::ethernet2(H2.0, H1.0)
        .ipv4([10, 50, 0, 2], [10, 50, 0, 3], 64)
        .tcp(40_000, 5_001, 1, 65_000)
        .ack(9);
    let payload: Vec<u8> = (0..20 * 1398).map(|i| (i % 251) as u8).collect();
    let mut burst = Vec::new();
    builder.write(&mut burst, &payload).unwrap();
    let vnet = VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1398,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut sent = Vec::new();
    crate::vnet::segment(&vnet, &burst, &mut Vec::new(), &mut |s| {
        sent.push(s.to_vec())
    })
    .unwrap();
    left_port.tx.send(&vnet, &burst).unwrap();
    assert_eq!(left.stats().tx_datagrams, 20);

    // Loopback delivers within the send: all 20 wait in right's socket.
    let mut batch = RxBatch::new(4, crate::MAX_FRAME_LEN);
    let mut received = Vec::new();
    loop {
        let n = right_port.lanes[0].recv_batch(&mut batch).unwrap();
        let segments: usize = (0..n)
            .map(|i| {
                let (vnet, frame) = batch.get(i);
                let before = received.len();
                crate::vnet::segment(vnet, frame, &mut Vec::new(), &mut |s| {
                    received.push(s.to_vec())
                })
                .unwrap();
                received.len() - before
            })
            .sum();
        if received.len() == 20 {
            break;
        }
        // Joined frames leave room: a batch returned short with segments
        // still queued would leave them there until the next datagram.
        assert_eq!(n, 4, "short batch with {segments} segments, more queued");
    }
    assert_eq!(received, sent, "joined and cut again: the segments sent");
    assert_eq!(right_port.lanes[0].recv_batch(&mut batch).unwrap(), 0);
}

#[test]
fn a_run_received_whole_is_taken_apart_across_small_batches() {
    let ((left, left_port), (right, mut right_port)) = loopback_pair();
    left.add_member(right.local());
    right.add_member(left.local());
    let builder = etherparse::PacketBuilder::ethernet2(H2.0, H1.0)
        .ipv4([10, 50, 0, 2], [10, 50, 0, 3], 64)
        .udp(40_000, 5_000);
    let mut frame = Vec::new();
    builder.write(&mut frame, &[7u8; 5 * 100]).unwrap();
    // Five 100-byte datagrams coalesced into one UDP GSO super-frame: sent
    // with UDP_SEGMENT, received in one message (UDP_GRO).
    let vnet = VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        gso_type: VnetHdr::GSO_UDP_L4,
        hdr_len: 42,
        gso_size: 100,
        csum_start: 34,
        csum_offset: 6,
    };
    let pseudo = crate::wire::checksum::pseudo_header_sum(&frame[26..34], 17, frame.len() - 34);
    frame[40..42].copy_from_slice(&pseudo.to_be_bytes());
    left_port.tx.send(&vnet, &frame).unwrap();
    let mut batch = RxBatch::new(2, 2048);
    let mut sizes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while sizes.len() < 5 && Instant::now() < deadline {
        let n = right_port.lanes[0].recv_batch(&mut batch).unwrap();
        assert!(n <= 2);
        sizes.extend((0..n).map(|i| batch.get(i).1.len()));
        if n == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(sizes, vec![142; 5], "none lost when the batch is full");
    assert_eq!(right.stats().rx_frames, 5);
    assert_eq!(right_port.lanes[0].recv_batch(&mut batch).unwrap(), 0);
}

#[test]
fn datagrams_read_together_come_out_whole_and_in_order() {
    let ((left, left_port), (right, mut right_port)) = loopback_pair();
    left.add_member(right.local());
    right.add_member(left.local());
    // Small frames around a UDP run that arrives as one long message: the
    // small ones are moved out of their slots, the long one stays.
    let small = |fill: u8, len: usize| {
        let mut frame = frame(BROADCAST, H1);
        frame.resize(len, fill);
        frame
    };
    let builder = etherparse::PacketBuilder::ethernet2(H2.0, H1.0)
        .ipv4([10, 50, 0, 2], [10, 50, 0, 3], 64)
        .udp(40_000, 5_000);
    let mut run = Vec::new();
    builder.write(&mut run, &[7u8; 3 * 1000]).unwrap();
    let pseudo = crate::wire::checksum::pseudo_header_sum(&run[26..34], 17, run.len() - 34);
    run[40..42].copy_from_slice(&pseudo.to_be_bytes());
    let run_vnet = VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        gso_type: VnetHdr::GSO_UDP_L4,
        hdr_len: 42,
        gso_size: 1000,
        csum_start: 34,
        csum_offset: 6,
    };
    let mut sent = Vec::new();
    for (i, len) in [(1u8, 60), (2, 1500), (3, 90)] {
        let frame = small(i, len);
        left_port.tx.send(&VnetHdr::default(), &frame).unwrap();
        sent.push(frame);
    }
    left_port.tx.send(&run_vnet, &run).unwrap();
    crate::vnet::segment(&run_vnet, &run, &mut Vec::new(), &mut |s| {
        sent.push(s.to_vec())
    })
    .unwrap();
    for (i, len) in [(4u8, 70), (5, 800)] {
        let frame = small(i, len);
        left_port.tx.send(&VnetHdr::default(), &frame).unwrap();
        sent.push(frame);
    }
    let mut batch = RxBatch::new(32, 2048);
    let n = right_port.lanes[0].recv_batch(&mut batch).unwrap();
    let got: Vec<Vec<u8>> = (0..n).map(|i| batch.get(i).1.to_vec()).collect();
    assert_eq!(got, sent);
}

/// A TCP super-frame from H2 to H1 as a container's stack hands it over
/// (TSO): `payload` to be cut at `gso_size`, the checksum left to the
/// hardware (the pseudo-header sum in its place).
pub(super) fn container_tso(payload: &[u8], gso_size: u16) -> (VnetHdr, Vec<u8>) {
    let builder = etherparse::PacketBuilder::ethernet2(H2.0, H1.0)
        .ipv4([10, 50, 0, 2], [10, 50, 0, 3], 64)
        .tcp(40_000, 5_000, 1, 65_000)
        .ack(9);
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).unwrap();
    let pseudo = crate::wire::checksum::pseudo_header_sum(&frame[26..34], 6, frame.len() - 34);
    frame[50..52].copy_from_slice(&pseudo.to_be_bytes());
    let vnet = VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size,
        csum_start: 34,
        csum_offset: 16,
    };
    (vnet, frame)
}

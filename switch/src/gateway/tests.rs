//! The gateway's unit tests: ARP, ping, TCP through smoltcp's sockets on
//! plain and offloaded links, the queue's bound, kept sockets.

use super::*;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet,
    Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

pub(super) const HOST_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
pub(super) const HOST_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
pub(super) const GW_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

pub(super) fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    crate::test_frames::arp_request(HOST_MAC, HOST_IP, target)
}

fn ping(dst_mac: MacAddr, dst: Ipv4Addr) -> Vec<u8> {
    ping_with(dst_mac, dst, 1, b"tapswitch")
}

/// An echo request from the host (identifier 7) to `dst`.
pub(super) fn ping_with(dst_mac: MacAddr, dst: Ipv4Addr, seq_no: u16, data: &[u8]) -> Vec<u8> {
    crate::test_frames::echo_request((HOST_MAC, HOST_IP), (dst_mac.0, dst), seq_no, data)
}

#[test]
fn answers_arp_for_its_own_address_only() {
    let mut gw = Gateway::new(GW_IP, 16, Instant::ZERO);
    assert_eq!(gw.mac().to_string(), "02:42:ac:11:00:01");
    let mut out = Vec::new();
    assert!(gw.deliver(&arp_request(Ipv4Addr::new(172, 17, 0, 9))));
    gw.poll(Instant::ZERO, &mut out);
    assert!(out.is_empty(), "answered ARP for another host");

    gw.deliver(&arp_request(GW_IP));
    gw.poll(Instant::ZERO, &mut out);
    assert_eq!(out.len(), 1);
    let frame = EthernetFrame::new_checked(&out[0]).unwrap();
    assert_eq!(frame.dst_addr(), EthernetAddress(HOST_MAC));
    let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        ..
    } = arp
    else {
        panic!("not an IPv4 ARP reply")
    };
    assert_eq!(operation, ArpOperation::Reply);
    assert_eq!(source_hardware_addr, EthernetAddress(gw.mac().0));
    assert_eq!(source_protocol_addr, GW_IP);
}

#[test]
fn answers_ping_after_learning_the_host_from_arp() {
    let mut gw = Gateway::new(GW_IP, 16, Instant::ZERO);
    let mut out = Vec::new();
    gw.deliver(&arp_request(GW_IP));
    gw.deliver(&ping(gw.mac(), GW_IP));
    gw.poll(Instant::from_millis(1), &mut out);
    assert_eq!(out.len(), 2, "an ARP reply and an echo reply");
    let frame = EthernetFrame::new_checked(&out[1]).unwrap();
    let ip = Ipv4Packet::new_checked(frame.payload()).unwrap();
    assert_eq!(ip.dst_addr(), HOST_IP);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    let repr = Icmpv4Repr::parse(&icmp, &Default::default()).unwrap();
    assert_eq!(
        repr,
        Icmpv4Repr::EchoReply {
            ident: 7,
            seq_no: 1,
            data: b"tapswitch"
        }
    );
}

#[test]
fn ignores_pings_to_other_addresses() {
    let mut gw = Gateway::new(GW_IP, 16, Instant::ZERO);
    let mut out = Vec::new();
    gw.deliver(&arp_request(GW_IP));
    gw.deliver(&ping(gw.mac(), Ipv4Addr::new(172, 17, 0, 3)));
    gw.poll(Instant::ZERO, &mut out);
    assert_eq!(out.len(), 1, "only the ARP reply");
}

/// A TCP frame from the container to `remote`, checksums complete.
fn tcp_frame(gw: &Gateway, remote: (Ipv4Addr, u16), repr: &TcpRepr) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: HOST_IP,
        dst_addr: remote.0,
        next_header: IpProtocol::Tcp,
        payload_len: repr.buffer_len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(HOST_MAC),
        dst_addr: EthernetAddress(gw.mac().0),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0; eth.buffer_len() + ip.buffer_len() + repr.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &Default::default());
    repr.emit(
        &mut TcpPacket::new_unchecked(packet.payload_mut()),
        &IpAddress::Ipv4(HOST_IP),
        &IpAddress::Ipv4(remote.0),
        &Default::default(),
    );
    buf
}

/// The host's SYN from port 40000 to `dst_port`: sequence number `seq`,
/// window `window` and MSS `mss`, no other options.
fn syn(dst_port: u16, seq: i32, window: u16, mss: u16) -> TcpRepr<'static> {
    TcpRepr {
        src_port: 40000,
        dst_port,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(seq),
        ack_number: None,
        window_len: window,
        window_scale: None,
        max_seg_size: Some(mss),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    }
}

fn tcp_of(frame: &[u8]) -> (u32, usize, bool) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    let valid = tcp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into());
    (tcp.seq_number().0 as u32, tcp.payload().len(), valid)
}

#[test]
fn super_frames_cross_whole_both_ways_on_a_link_with_offloads() {
    let remote = (Ipv4Addr::new(198, 51, 100, 7), 80);
    let link = GatewayLink::offloaded(1500);
    let mac = MacAddr::docker_from_ipv4(GW_IP);
    let mut gw = Gateway::with_link(GW_IP, 16, mac, link, Instant::ZERO);
    gw.enable_flows();
    let listen = SocketAddrV4::new(remote.0, remote.1);
    let handle = gw.tcp_listen(listen, 256 * 1024).unwrap();
    let mut out = Vec::new();
    gw.deliver(&arp_request(GW_IP));
    let syn = syn(remote.1, 1000, 65535, 1460);
    assert!(gw.deliver(&tcp_frame(&gw, remote, &syn)));
    gw.poll_offloaded(Instant::from_millis(1), &mut out);
    let (vnet, syn_ack) = out.pop().expect("a SYN-ACK");
    // The checksum is left to the switch: partial, completed there.
    assert_eq!(vnet.flags, VnetHdr::NEEDS_CSUM);
    let mut completed = syn_ack.clone();
    ports::vnet::complete_checksum(&mut vnet.clone(), &mut completed).unwrap();
    let (their_seq, _, valid) = tcp_of(&completed);
    assert!(valid);

    // 60,000 bytes in one segment, as a container's TSO hands them over.
    let data: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let segment = TcpRepr {
        control: TcpControl::Psh,
        seq_number: TcpSeqNumber(1001),
        ack_number: Some(TcpSeqNumber(their_seq as i32) + 1),
        max_seg_size: None,
        payload: &data,
        ..syn
    };
    let frame = tcp_frame(&gw, remote, &segment);
    assert!(!gw.deliver(&frame), "a plain frame longer than the MTU");
    assert!(gw.deliver_segment(&frame));
    gw.poll_offloaded(Instant::from_millis(2), &mut out);
    assert_eq!(gw.tcp(handle).recv_queue(), data.len(), "taken whole");

    // Going out: one super-frame, cut by the container's MSS.
    out.clear();
    gw.tcp(handle).send_slice(&data).unwrap();
    gw.poll_offloaded(Instant::from_millis(3), &mut out);
    let (vnet, frame) = out
        .iter()
        .find(|(vnet, _)| vnet.is_gso())
        .expect("a super-frame");
    assert_eq!(vnet.gso_type, VnetHdr::GSO_TCPV4);
    assert_eq!(vnet.gso_size, 1460);
    let mut segments = Vec::new();
    let mut scratch = Vec::new();
    ports::vnet::segment(vnet, frame, &mut scratch, &mut |s| segments.push(tcp_of(s))).unwrap();
    assert!(segments.len() > 1);
    assert!(
        segments
            .iter()
            .all(|(_, len, valid)| *valid && *len <= 1460)
    );

    // A plain link never takes a segment longer than its MTU.
    let mut plain = Gateway::new(GW_IP, 16, Instant::ZERO);
    assert!(!plain.deliver_segment(frame));
}

#[test]
fn tcp_to_the_gateway_itself_with_a_bad_checksum_is_dropped_on_a_link_with_offloads() {
    let mac = MacAddr::docker_from_ipv4(GW_IP);
    let link = GatewayLink::offloaded(1500);
    let mut gw = Gateway::with_link(GW_IP, 16, mac, link, Instant::ZERO);
    gw.tcp_listen(SocketAddrV4::new(GW_IP, 53), 4096).unwrap();
    gw.deliver(&arp_request(GW_IP));
    let syn = syn(53, 1, 4096, 1460);
    let good = tcp_frame(&gw, (GW_IP, 53), &syn);
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff; // in the TCP options: the checksum no longer holds
    let mut out = Vec::new();
    assert!(gw.deliver(&bad));
    gw.poll_offloaded(Instant::from_millis(1), &mut out);
    assert_eq!(
        out.len(),
        1,
        "only the ARP reply: the bad SYN went unanswered"
    );
    assert!(gw.deliver(&good));
    gw.poll_offloaded(Instant::from_millis(2), &mut out);
    assert_eq!(out.len(), 2, "the good SYN is answered");
}

#[test]
fn the_smallest_mtu_carries_tcp_without_a_panic() {
    // `network create --mtu 68`: 8 bytes of TCP payload per segment.
    let remote = (Ipv4Addr::new(198, 51, 100, 7), 80);
    let mac = MacAddr::docker_from_ipv4(GW_IP);
    let link = GatewayLink::offloaded(68);
    let mut gw = Gateway::with_link(GW_IP, 16, mac, link, Instant::ZERO);
    gw.enable_flows();
    let handle = gw
        .tcp_listen(SocketAddrV4::new(remote.0, remote.1), 4096)
        .unwrap();
    gw.deliver(&arp_request(GW_IP));
    let syn = syn(remote.1, 1, 4096, 28);
    assert!(gw.deliver(&tcp_frame(&gw, remote, &syn)));
    let mut out = Vec::new();
    gw.poll_offloaded(Instant::from_millis(1), &mut out);
    let (vnet, mut syn_ack) = out.pop().expect("a SYN-ACK");
    ports::vnet::complete_checksum(&mut vnet.clone(), &mut syn_ack).unwrap();
    let (their_seq, _, _) = tcp_of(&syn_ack);
    let mut ours = Vec::new();
    let ack = TcpRepr {
        control: TcpControl::None,
        seq_number: TcpSeqNumber(2),
        ack_number: Some(TcpSeqNumber(their_seq as i32) + 1),
        max_seg_size: None,
        ..syn
    };
    assert!(gw.deliver(&tcp_frame(&gw, remote, &ack)));
    gw.poll_offloaded(Instant::from_millis(2), &mut out);
    out.clear();
    gw.tcp(handle).send_slice(&[7; 100]).unwrap();
    gw.poll_offloaded(Instant::from_millis(3), &mut out);
    assert!(!out.is_empty());
    // Cut as the switch cuts them for a port without offloads: every
    // piece fits the link.
    let mut carried = 0;
    for (vnet, frame) in &out {
        ports::vnet::segment(vnet, frame, &mut ours, &mut |piece| {
            let (_, len, valid) = tcp_of(piece);
            assert!(valid && len <= 28, "{len} bytes in a segment");
            assert!(piece.len() <= link.frame_max());
            carried += len;
        })
        .unwrap();
    }
    assert_eq!(carried, 100);
}

#[test]
fn a_full_queue_drops_instead_of_growing() {
    let mut gw = Gateway::new(GW_IP, 16, Instant::ZERO);
    for _ in 0..GATEWAY_QUEUE_FRAMES {
        assert!(gw.deliver(&arp_request(GW_IP)));
    }
    assert!(!gw.deliver(&arp_request(GW_IP)));
}

/// What `host_side/recheck.rs` relies on after the queue overflowed: a
/// keep-alive asks the container again; an ACK answers that it still
/// has the connection (and, the keep-alive switched off, no probe
/// follows), a RST that it reset it (the socket closes).
#[test]
fn a_keep_alive_probe_is_answered_by_an_ack_or_ends_with_the_rst() {
    let remote = (Ipv4Addr::new(198, 51, 100, 7), 80);
    let mut gw = Gateway::new(GW_IP, 16, Instant::ZERO);
    gw.enable_flows();
    let handle = gw
        .tcp_listen(SocketAddrV4::new(remote.0, remote.1), 4096)
        .unwrap();
    gw.deliver(&arp_request(GW_IP));
    let syn = syn(remote.1, 1000, 4096, 1460);
    let mut out = Vec::new();
    assert!(gw.deliver(&tcp_frame(&gw, remote, &syn)));
    gw.poll(Instant::from_millis(1), &mut out);
    let (their_seq, _, _) = tcp_of(out.last().expect("a SYN-ACK"));
    let ack = TcpRepr {
        control: TcpControl::None,
        seq_number: TcpSeqNumber(1001),
        ack_number: Some(TcpSeqNumber(their_seq as i32) + 1),
        max_seg_size: None,
        ..syn
    };
    assert!(gw.deliver(&tcp_frame(&gw, remote, &ack)));
    gw.poll(Instant::from_millis(2), &mut out);
    assert_eq!(gw.tcp(handle).state(), tcp::State::Established);

    let probe = |gw: &mut Gateway, at: u64| {
        let mut out = Vec::new();
        gw.tcp(handle)
            .set_keep_alive(Some(smoltcp::time::Duration::from_secs(2)));
        gw.poll(Instant::from_millis(at), &mut out);
        gw.tcp(handle).set_keep_alive(None);
        assert_eq!(out.len(), 1, "one probe");
        let (seq, len, _) = tcp_of(&out[0]);
        assert_eq!((seq, len), (their_seq, 1), "one byte below the next");
    };
    probe(&mut gw, 3);
    assert!(gw.deliver(&tcp_frame(&gw, remote, &ack)), "still there");
    out.clear();
    gw.poll(Instant::from_millis(4), &mut out);
    gw.poll(Instant::from_millis(60_000), &mut out);
    assert!(out.is_empty(), "no probe after the answer: {}", out.len());
    assert_eq!(gw.tcp(handle).state(), tcp::State::Established);

    probe(&mut gw, 60_001);
    // The container's kernel no longer has the connection: its RST
    // carries the sequence number the probe acknowledged.
    let rst = TcpRepr {
        control: TcpControl::Rst,
        ack_number: None,
        ..ack
    };
    assert!(gw.deliver(&tcp_frame(&gw, remote, &rst)));
    gw.poll(Instant::from_millis(60_002), &mut out);
    assert_eq!(gw.tcp(handle).state(), tcp::State::Closed);
}

#[test]
fn closed_tcp_sockets_are_kept_for_reuse_up_to_a_bound_and_come_back_fresh() {
    let mut gw = Gateway::new(GW_IP, 16, Instant::ZERO);
    let remote = |port| SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), port);
    // An open socket is not kept.
    let listening = gw.tcp_listen(remote(80), 4096).unwrap();
    gw.remove(listening);
    assert_eq!(gw.spare_tcp_sockets(), 0);
    let kept = SPARE_TCP_BYTES / (2 * 4096);
    let handles: Vec<_> = (0..kept + 3)
        .map(|i| {
            let handle = gw.tcp_listen(remote(1000 + i as u16), 4096).unwrap();
            gw.tcp(handle)
                .set_keep_alive(Some(smoltcp::time::Duration::from_secs(2)));
            gw.tcp(handle).set_nagle_enabled(true);
            gw.tcp(handle).abort();
            handle
        })
        .collect();
    for handle in handles {
        gw.remove(handle);
    }
    assert_eq!(gw.spare_tcp_sockets(), kept, "bounded by their bytes");
    // Another size is a new socket; the same size a spare, with the
    // settings of a new one.
    gw.tcp_listen(remote(2000), 8192).unwrap();
    assert_eq!(gw.spare_tcp_sockets(), kept);
    let reused = gw.tcp_listen(remote(2001), 4096).unwrap();
    assert_eq!(gw.spare_tcp_sockets(), kept - 1);
    let socket = gw.tcp(reused);
    assert_eq!(socket.state(), tcp::State::Listen);
    assert_eq!(socket.keep_alive(), None);
    assert!(!socket.nagle_enabled());
    assert_eq!(socket.recv_queue() + socket.send_queue(), 0);
    assert_eq!(socket.recv_capacity(), 4096);
}

//! Fragments from containers: reassembled, then handled as if they had
//! come whole (see `services/reassembly.rs` for the table's own tests).

use super::*;
use crate::services::frames::fragments;

/// The frames of `packet` cut at `mtu`, as the container sends them.
fn fragment_frames(packet: &[u8], mtu: usize, ident: u16) -> Vec<Vec<u8>> {
    fragments(packet, mtu, ident)
        .unwrap()
        .iter()
        .map(|piece| from_host(piece))
        .collect()
}

/// `out` is one frame for the stack carrying `expected`'s datagram (the
/// identification and flags aside: those are the fragments').
fn assert_same_datagram(out: &[Output], expected: &[u8]) {
    let [Output::StackFrame(frame)] = out else {
        panic!("not one frame for the stack: {} outputs", out.len())
    };
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    let want = Ipv4Packet::new_checked(&expected[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert!(!ip.more_frags() && ip.frag_offset() == 0);
    assert_eq!(frame[..14], expected[..14], "the Ethernet header");
    assert_eq!(
        (
            ip.src_addr(),
            ip.dst_addr(),
            ip.next_header(),
            ip.total_len()
        ),
        (
            want.src_addr(),
            want.dst_addr(),
            want.next_header(),
            want.total_len()
        )
    );
    assert!(ip.payload() == want.payload(), "the datagram's payload");
}

#[test]
fn a_fragmented_udp_datagram_leaves_whole_through_its_flow() {
    let mut s = services(true);
    let remote = SocketAddrV4::new(OUTSIDE, 7);
    let container = SocketAddrV4::new(HOST, 40000);
    let key = FlowKey::udp(container, remote);
    let datagram: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let packet = udp_packet(container, remote, &datagram).unwrap();
    let frames = fragment_frames(&packet, 1500, 77);
    assert_eq!(frames.len(), 3);
    let mut out = Vec::new();
    // Out of order: nothing happens until the last piece is in.
    for frame in [&frames[2], &frames[0]] {
        assert_eq!(s.frame(at(0), frame, 0, &mut out), Verdict::Consumed);
        assert!(out.is_empty(), "{out:?}");
    }
    assert_eq!(s.frame(at(0), &frames[1], 0, &mut out), Verdict::Consumed);
    assert_eq!(out, vec![Output::Host(HostCommand::Connect(key))]);
    out.clear();
    s.host(at(0), key, HostEvent::Connected, &mut out);
    assert_eq!(
        out,
        vec![Output::Host(HostCommand::Send {
            key,
            payload: datagram,
        })]
    );
    assert_eq!(s.stats().fragments, 3);
    assert_eq!(s.stats().reassembly.reassembled, 1);
    assert_eq!(s.flows().stats().opened, 1);
}

#[test]
fn a_fragmented_dns_query_to_the_gateway_is_answered() {
    let mut s = services(true);
    let client = SocketAddrV4::new(HOST, 5555);
    let packet = udp_packet(client, SocketAddrV4::new(GW, 53), &query(7, "web.")).unwrap();
    // 16 bytes of payload a fragment: the query is cut in three.
    let frames = fragment_frames(&packet, 36, 5);
    assert!(frames.len() >= 2);
    let mut out = Vec::new();
    for frame in &frames[..frames.len() - 1] {
        assert_eq!(s.frame(at(0), frame, 0, &mut out), Verdict::Consumed);
    }
    assert!(out.is_empty());
    let last = frames.last().unwrap();
    assert_eq!(s.frame(at(0), last, 0, &mut out), Verdict::Consumed);
    assert_eq!(out.len(), 1);
    let (src, dst, payload) = udp_of(&to_container(&out[0]));
    assert_eq!((src, dst), (SocketAddrV4::new(GW, 53), client));
    let answer = Message::from_vec(&payload).unwrap();
    assert!(matches!(answer.answers[0].data, RData::A(A(ip)) if ip == HOST));
}

#[test]
fn a_fragmented_ping_to_the_gateway_reaches_its_stack_whole() {
    let mut s = services(true);
    // 4,000 bytes of echo data to the gateway, cut at MTU 1500.
    let request = echo_frame_to(GW, 1, 1, &[5u8; 4000])[14..].to_vec();
    let frames = fragment_frames(&request, 1500, 11);
    assert_eq!(frames.len(), 3);
    let mut out = Vec::new();
    for frame in &frames[..2] {
        assert_eq!(s.frame(at(0), frame, 0, &mut out), Verdict::Consumed);
    }
    assert!(out.is_empty(), "held until the last fragment: {out:?}");
    // The caller has only the last fragment: the stack gets the whole
    // request from the services, longer than the MTU.
    assert_eq!(s.frame(at(0), &frames[2], 0, &mut out), Verdict::Consumed);
    assert_same_datagram(&out, &from_host(&request));
    assert_eq!(s.stats().fragments, 3);
    assert_eq!(s.stats().reassembly.reassembled, 1);
    assert_eq!(s.stats().reassembly.to_stack, 1);
}

#[test]
fn fragments_between_containers_are_not_reassembled() {
    let mut s = services(true);
    // A fragment between two containers is nobody's (not for the gateway).
    let mut packet = udp_packet(
        SocketAddrV4::new(HOST, 1),
        SocketAddrV4::new(Ipv4Addr::new(172, 17, 0, 3), 2),
        &[0u8; 100],
    )
    .unwrap();
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut packet[..]);
        ip.set_more_frags(true);
        ip.fill_checksum();
    }
    assert_eq!(
        s.frame(at(0), &from_host(&packet), 0, &mut Vec::new()),
        Verdict::Dropped
    );
    assert_eq!(s.stats().not_for_us, 1);
    assert_eq!(s.stats().fragments, 0);
}

#[test]
fn a_reassembled_segment_of_an_open_flow_reaches_the_stack_whole() {
    let mut s = services(true);
    let mut out = Vec::new();
    // A TCP flow handed to the stack (its SYN held, the connect done).
    s.frame(at(0), &syn_frame(40000), 0, &mut out);
    let key = FlowKey::tcp(
        SocketAddrV4::new(HOST, 40000),
        SocketAddrV4::new(OUTSIDE, 443),
    );
    s.host(at(0), key, HostEvent::Connected, &mut out);
    let ack = tcp_frame(40000, TcpControl::None, Some(1));
    assert_eq!(s.frame(at(0), &ack, 0, &mut out), Verdict::ToStack);
    // The same segment in fragments: whole, it is the stack's, which is
    // handed the whole segment instead of the last fragment.
    let pieces = fragment_frames(&ack[14..], 28, 3);
    assert_eq!(pieces.len(), 3);
    out.clear();
    for piece in &pieces {
        assert_eq!(s.frame(at(0), piece, 0, &mut out), Verdict::Consumed);
    }
    assert_same_datagram(&out, &ack);
    assert_eq!(s.stats().reassembly.reassembled, 1);
    assert_eq!(s.stats().reassembly.to_stack, 1);
}

#[test]
fn a_datagram_that_never_completes_draws_time_exceeded_after_30_s() {
    let mut s = services(true);
    let remote = SocketAddrV4::new(OUTSIDE, 7);
    let packet = udp_packet(SocketAddrV4::new(HOST, 40000), remote, &[9u8; 4000]).unwrap();
    let frames = fragment_frames(&packet, 1500, 42);
    let mut out = Vec::new();
    // The first and the last come, the middle one never does.
    s.frame(at(0), &frames[0], 0, &mut out);
    s.frame(at(1), &frames[2], 0, &mut out);
    assert!(out.is_empty());
    assert_eq!(s.next_deadline(), Some(at(30)), "the table's timer");
    s.timers(at(29), &mut out);
    assert!(out.is_empty(), "not yet");
    s.timers(at(30), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    let packet = to_container(&out[0]);
    let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (GW, HOST));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    // Type 11 code 1, quoting the first fragment's header and 8 bytes (its
    // UDP header: the container's kernel finds the socket by it).
    assert_eq!((u8::from(icmp.msg_type()), icmp.msg_code()), (11, 1));
    assert_eq!(icmp.data(), &frames[0][14..14 + 28]);
    assert_eq!(s.stats().reassembly.timed_out, 1);
    assert_eq!(s.stats().reassembly.time_exceeded_sent, 1);
    assert_eq!(s.next_deadline(), None);

    // Without the first fragment, nothing to quote: no error (RFC 792).
    out.clear();
    s.frame(at(40), &frames[1], 0, &mut out);
    s.timers(at(70), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(s.stats().reassembly.timed_out, 2);
    assert_eq!(s.stats().reassembly.time_exceeded_sent, 1);
}

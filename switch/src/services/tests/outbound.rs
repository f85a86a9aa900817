//! Outbound flows: UDP, ping and TCP (connect first), refused, unreachable,
//! and no outbound access at all.

use super::*;

#[test]
fn a_udp_flow_opens_sends_relays_reports_errors_and_times_out() {
    let mut s = services(true);
    let remote = SocketAddrV4::new(OUTSIDE, 123);
    let key = FlowKey::udp(SocketAddrV4::new(HOST, 40000), remote);
    let mut out = Vec::new();
    s.frame(at(0), &udp_frame(40000, remote, b"first"), 0, &mut out);
    assert_eq!(out, vec![Output::Host(HostCommand::Connect(key))]);
    out.clear();
    s.host(at(0), key, HostEvent::Connected, &mut out);
    assert_eq!(
        out,
        vec![Output::Host(HostCommand::Send {
            key,
            payload: b"first".to_vec()
        })]
    );
    out.clear();
    s.frame(at(1), &udp_frame(40000, remote, b"second"), 0, &mut out);
    assert_eq!(
        out,
        vec![Output::Host(HostCommand::Send {
            key,
            payload: b"second".to_vec()
        })]
    );
    out.clear();
    s.host(at(2), key, HostEvent::Datagram(b"answer"), &mut out);
    let (src, dst, payload) = udp_of(&to_container(&out[0]));
    assert_eq!((src, dst), (remote, SocketAddrV4::new(HOST, 40000)));
    assert_eq!(payload, b"answer");
    // The remote's port is closed: the container hears it like from a router.
    out.clear();
    s.host(
        at(3),
        key,
        HostEvent::Error(ConnectFailure::Refused),
        &mut out,
    );
    // It quotes the first datagram's header and 8 bytes (RFC 792's
    // minimum, all the container's kernel needs to find its socket).
    let packet = to_container(&out[0]);
    let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
    assert_eq!(ip.src_addr(), GW);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(
        icmp.msg_type(),
        smoltcp::wire::Icmpv4Message::DstUnreachable
    );
    assert_eq!(icmp.msg_code(), 3, "port unreachable");
    let quoted = Ipv4Packet::new_unchecked(icmp.data());
    assert_eq!((quoted.src_addr(), quoted.dst_addr()), (HOST, OUTSIDE));
    assert_eq!(&icmp.data()[20..24], &[0x9c, 0x40, 0, 123], "the ports");
    assert_eq!(s.flows().get(&key).unwrap().state_name(), "REPLIED");
    out.clear();
    s.timers(at(33), &mut out);
    assert_eq!(out, vec![Output::Host(HostCommand::Close(key))]);
    assert!(s.flows().is_empty());
}

#[test]
fn a_ping_goes_out_and_its_reply_comes_back_with_the_containers_identifier() {
    let mut s = services(true);
    let key = FlowKey::echo(HOST, 77, OUTSIDE);
    let mut out = Vec::new();
    s.frame(at(0), &echo_frame(77, 1), 0, &mut out);
    assert_eq!(out, vec![Output::Host(HostCommand::Connect(key))]);
    out.clear();
    s.host(at(0), key, HostEvent::Connected, &mut out);
    assert_eq!(
        out,
        vec![Output::Host(HostCommand::SendEcho {
            key,
            seq_no: 1,
            payload: b"ping!".to_vec()
        })]
    );
    out.clear();
    s.host(
        at(0),
        key,
        HostEvent::EchoReply {
            seq_no: 1,
            data: b"ping!",
        },
        &mut out,
    );
    let packet = to_container(&out[0]);
    let (from, icmp) = icmp_of(&packet);
    assert_eq!(from, OUTSIDE);
    assert_eq!(
        icmp,
        Icmpv4Repr::EchoReply {
            ident: 77,
            seq_no: 1,
            data: b"ping!"
        }
    );
}

#[test]
fn a_refused_connect_resets_the_container_from_the_held_syn() {
    let mut s = services(true);
    let key = FlowKey::tcp(
        SocketAddrV4::new(HOST, 41000),
        SocketAddrV4::new(OUTSIDE, 443),
    );
    let mut out = Vec::new();
    assert_eq!(
        s.frame(at(0), &syn_frame(41000), 0, &mut out),
        Verdict::Consumed
    );
    assert_eq!(out, vec![Output::Host(HostCommand::Connect(key))]);
    // The SYN's retransmission is absorbed, never shown to the stack.
    out.clear();
    assert_eq!(
        s.frame(at(1), &syn_frame(41000), 0, &mut out),
        Verdict::Consumed
    );
    assert!(out.is_empty());
    s.host(
        at(1),
        key,
        HostEvent::ConnectFailed(ConnectFailure::Refused),
        &mut out,
    );
    assert_eq!(out.len(), 2, "the stack never had the flow: {out:?}");
    let packet = to_container(&out[0]);
    let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
    assert_eq!(ip.src_addr(), OUTSIDE);
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(tcp.rst() && tcp.ack());
    assert_eq!(tcp.ack_number(), TcpSeqNumber(501));
    assert_eq!(out[1], Output::Host(HostCommand::Close(key)));
    assert_eq!(s.flows().stats().refused, 1);
}

#[test]
fn a_container_that_gives_up_while_connecting_abandons_the_host_connect() {
    let mut s = services(true);
    let key = FlowKey::tcp(
        SocketAddrV4::new(HOST, 41003),
        SocketAddrV4::new(OUTSIDE, 443),
    );
    let mut out = Vec::new();
    s.frame(at(0), &syn_frame(41003), 0, &mut out);
    out.clear();
    let rst = tcp_frame(41003, TcpControl::Rst, None);
    assert_eq!(s.frame(at(1), &rst, 0, &mut out), Verdict::Consumed);
    assert_eq!(
        out,
        vec![
            Output::Host(HostCommand::Reset(key)),
            Output::Host(HostCommand::Close(key))
        ]
    );
    assert!(s.flows().is_empty());
}

#[test]
fn a_closed_flows_last_segments_reach_the_stack_until_it_lets_go() {
    let mut s = services(true);
    let key = FlowKey::tcp(
        SocketAddrV4::new(HOST, 41004),
        SocketAddrV4::new(OUTSIDE, 443),
    );
    let mut out = Vec::new();
    s.frame(at(0), &syn_frame(41004), 0, &mut out);
    s.host(at(1), key, HostEvent::Connected, &mut out);
    out.clear();
    s.tcp(at(2), key, TcpEvent::HostEof, &mut out);
    assert_eq!(out, vec![Output::Stack(StackCommand::CloseWrite(key))]);
    out.clear();
    let step = s.tcp(at(2), key, TcpEvent::ContainerFin, &mut out);
    assert!(step.actions.release().is_some());
    assert_eq!(
        out,
        vec![
            Output::Host(HostCommand::ShutdownWrite(key)),
            Output::Host(HostCommand::Close(key)),
            Output::Stack(StackCommand::Forget(key))
        ]
    );
    // The container's last ACK still reaches the closing socket...
    let ack = tcp_frame(41004, TcpControl::None, Some(1));
    assert_eq!(s.frame(at(3), &ack, 0, &mut Vec::new()), Verdict::ToStack);
    // ...until the stack has dropped it.
    s.stack_released(key);
    assert_eq!(s.frame(at(4), &ack, 0, &mut Vec::new()), Verdict::Dropped);
}

#[test]
fn an_unreachable_destination_gets_an_icmp_error_quoting_the_syn() {
    let mut s = services(true);
    let key = FlowKey::tcp(
        SocketAddrV4::new(HOST, 41001),
        SocketAddrV4::new(OUTSIDE, 443),
    );
    let mut out = Vec::new();
    s.frame(at(0), &syn_frame(41001), 0, &mut out);
    out.clear();
    let failure = ConnectFailure::Unreachable(Unreachable::Host);
    s.host(at(1), key, HostEvent::ConnectFailed(failure), &mut out);
    let packet = to_container(&out[0]);
    let (from, icmp) = icmp_of(&packet);
    assert_eq!(from, GW);
    let Icmpv4Repr::DstUnreachable { reason, data, .. } = icmp else {
        panic!("{icmp:?}");
    };
    assert_eq!(reason, Icmpv4DstUnreachable::HostUnreachable);
    assert_eq!(&data[..2], &41001u16.to_be_bytes());
}

#[test]
fn a_connected_flow_hands_the_held_syn_to_the_stack_and_its_segments_follow() {
    let mut s = services(true);
    let key = FlowKey::tcp(
        SocketAddrV4::new(HOST, 41002),
        SocketAddrV4::new(OUTSIDE, 443),
    );
    let syn = syn_frame(41002);
    let mut out = Vec::new();
    s.frame(at(0), &syn, 0, &mut out);
    out.clear();
    s.host(at(1), key, HostEvent::Connected, &mut out);
    assert_eq!(
        out,
        vec![Output::Stack(StackCommand::Accept {
            key,
            syn: syn.clone()
        })]
    );
    let ack = tcp_frame(41002, TcpControl::None, Some(1));
    assert_eq!(s.frame(at(1), &ack, 0, &mut Vec::new()), Verdict::ToStack);
    // A segment of no flow is dropped, not shown to the stack.
    let stray = tcp_frame(41999, TcpControl::None, Some(1));
    assert_eq!(s.frame(at(1), &stray, 0, &mut Vec::new()), Verdict::Dropped);
    assert_eq!(s.stats().stray_segments, 1);
    // The relay's events come back from the code driving the stack.
    let step = s.tcp(at(2), key, TcpEvent::ContainerData(b"hello"), &mut out);
    assert_eq!(step.accepted, 5);
    assert_eq!(s.flows().tcp_flow(&key).unwrap().to_host(), b"hello");
}

#[test]
fn without_outbound_access_every_flow_is_prohibited() {
    let mut s = services(false);
    let mut out = Vec::new();
    s.frame(at(0), &syn_frame(42000), 0, &mut out);
    s.frame(at(0), &echo_frame(1, 1), 0, &mut out);
    s.frame(
        at(0),
        &udp_frame(42001, SocketAddrV4::new(OUTSIDE, 9), b"x"),
        0,
        &mut out,
    );
    assert_eq!(out.len(), 3);
    for output in &out {
        let packet = to_container(output);
        let (from, icmp) = icmp_of(&packet);
        assert_eq!(from, GW);
        assert!(matches!(
            icmp,
            Icmpv4Repr::DstUnreachable {
                reason: Icmpv4DstUnreachable::CommProhibited,
                ..
            }
        ));
    }
    assert!(s.flows().is_empty());
    assert_eq!(s.stats().outbound_denied, 3);
    // DNS still works on an internal network.
    let mut dns = Vec::new();
    let frame = udp_frame(5555, SocketAddrV4::new(GW, 53), &query(1, "web."));
    s.frame(at(0), &frame, 0, &mut dns);
    assert!(matches!(dns[0], Output::Frame(_)));
}

//! The services end to end on frames built in code, on a fake clock: what
//! goes in at the gateway port and the host sockets, what comes out.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket,
};

use super::*;
use crate::dns::DEFAULT_DOMAIN;
use crate::flows::ConnectFailure;
use crate::time::Instant;

const GW_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x01]);
const HOST_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
const GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const UPSTREAM: &str = "192.0.2.53:53";

fn services(outbound: bool) -> Services {
    let mut names = NameTable::new(DEFAULT_DOMAIN, GW);
    names.insert("web", HOST);
    Services::new(ServicesConfig {
        gateway: GatewayAddresses {
            mac: GW_MAC,
            ip: GW,
            prefix_len: 16,
        },
        mtu: 1500,
        outbound,
        limits: FlowLimits {
            connect_timeout: Duration::from_secs(10),
            udp_idle: Duration::from_secs(30),
            ..FlowLimits::default()
        },
        names,
        host_loopback: false,
        upstreams: vec![UPSTREAM.parse().unwrap()],
    })
}

fn at(secs: u64) -> Instant {
    Instant::from_secs(secs)
}

fn from_host(packet: &[u8]) -> Vec<u8> {
    ethernet(HOST_MAC, GW_MAC, packet)
}

fn udp_frame(src_port: u16, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    from_host(&udp_packet(SocketAddrV4::new(HOST, src_port), dst, payload).unwrap())
}

fn syn_frame(src_port: u16) -> Vec<u8> {
    tcp_frame(src_port, TcpControl::Syn, None)
}

fn tcp_frame(src_port: u16, control: TcpControl, ack: Option<u32>) -> Vec<u8> {
    tcp_frame_to(src_port, SocketAddrV4::new(OUTSIDE, 443), control, ack)
}

fn tcp_frame_to(
    src_port: u16,
    dst: SocketAddrV4,
    control: TcpControl,
    ack: Option<u32>,
) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port,
        dst_port: dst.port(),
        control,
        seq_number: TcpSeqNumber(500),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: b"",
    };
    let ip = Ipv4Repr {
        src_addr: HOST,
        dst_addr: *dst.ip(),
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let caps = ChecksumCapabilities::default();
    let mut packet = vec![0u8; ip.buffer_len() + tcp.buffer_len()];
    let mut view = Ipv4Packet::new_unchecked(&mut packet[..]);
    ip.emit(&mut view, &caps);
    tcp.emit(
        &mut TcpPacket::new_unchecked(view.payload_mut()),
        &HOST.into(),
        &(*dst.ip()).into(),
        &caps,
    );
    from_host(&packet)
}

fn echo_frame(ident: u16, seq_no: u16) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data: b"ping!",
    };
    let ip = Ipv4Repr {
        src_addr: HOST,
        dst_addr: OUTSIDE,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let caps = ChecksumCapabilities::default();
    let mut packet = vec![0u8; ip.buffer_len() + icmp.buffer_len()];
    let mut view = Ipv4Packet::new_unchecked(&mut packet[..]);
    ip.emit(&mut view, &caps);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(view.payload_mut()), &caps);
    from_host(&packet)
}

fn arp(target: Ipv4Addr) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(HOST_MAC.0),
        source_protocol_addr: HOST,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(HOST_MAC.0),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let mut frame = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut view = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut view);
    arp.emit(&mut ArpPacket::new_unchecked(view.payload_mut()));
    frame
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    message.to_vec().unwrap()
}

/// The IPv4 packet of a frame sent to the container, checked on the way.
fn to_container(output: &Output) -> Vec<u8> {
    let Output::Frame(frame) = output else {
        panic!("not a frame: {output:?}");
    };
    let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
    assert_eq!(eth.src_addr().0, GW_MAC.0);
    assert_eq!(eth.dst_addr().0, HOST_MAC.0);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.dst_addr(), HOST);
    eth.payload().to_vec()
}

/// (source, destination, payload) of a UDP packet.
fn udp_of(packet: &[u8]) -> (SocketAddrV4, SocketAddrV4, Vec<u8>) {
    let ip = Ipv4Packet::new_checked(packet).unwrap();
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(udp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
    (
        SocketAddrV4::new(ip.src_addr(), udp.src_port()),
        SocketAddrV4::new(ip.dst_addr(), udp.dst_port()),
        udp.payload().to_vec(),
    )
}

fn icmp_of(packet: &[u8]) -> (Ipv4Addr, Icmpv4Repr<'_>) {
    let ip = Ipv4Packet::new_checked(packet).unwrap();
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    let repr = Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap();
    (ip.src_addr(), repr)
}

#[test]
fn the_stack_gets_what_it_got_before_and_nothing_else() {
    let mut s = services(true);
    let mut out = Vec::new();
    assert_eq!(s.frame(at(0), &arp(GW), 0, &mut out), Verdict::ToStack);
    assert_eq!(
        s.frame(at(0), &arp(Ipv4Addr::new(172, 17, 0, 3)), 0, &mut out),
        Verdict::Dropped
    );
    assert!(out.is_empty());
    assert_eq!(s.stats().not_for_us, 1);
}

#[test]
fn names_of_the_network_are_answered_at_the_gateway() {
    let mut s = services(true);
    let mut out = Vec::new();
    let frame = udp_frame(5555, SocketAddrV4::new(GW, 53), &query(7, "web."));
    assert_eq!(s.frame(at(0), &frame, 0, &mut out), Verdict::Consumed);
    assert_eq!(out.len(), 1);
    let (src, dst, payload) = udp_of(&to_container(&out[0]));
    assert_eq!(src, SocketAddrV4::new(GW, 53));
    assert_eq!(dst, SocketAddrV4::new(HOST, 5555));
    let answer = Message::from_vec(&payload).unwrap();
    assert_eq!(answer.metadata.id, 7);
    assert!(matches!(answer.answers[0].data, RData::A(A(ip)) if ip == HOST));
}

#[test]
fn other_names_go_upstream_and_come_back_or_fail_after_the_timeout() {
    let mut s = services(true);
    let mut out = Vec::new();
    let frame = udp_frame(5555, SocketAddrV4::new(GW, 53), &query(9, "example.com."));
    s.frame(at(0), &frame, 0x2222, &mut out);
    let [
        Output::Host(HostCommand::SendDns {
            upstream, bytes, ..
        }),
    ] = out.as_slice()
    else {
        panic!("expected a forwarded query: {out:?}");
    };
    assert_eq!(*upstream, UPSTREAM.parse::<SocketAddr>().unwrap());
    assert_eq!(&bytes[..2], &[0x22, 0x22]);
    // The upstream's answer goes back to the container under its id.
    let sent = Message::from_vec(bytes).unwrap();
    let mut answer = Message::response(sent.metadata.id, OpCode::Query);
    answer.add_queries(sent.queries.clone());
    answer.add_answer(Record::from_rdata(
        sent.queries[0].name().clone(),
        60,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 80))),
    ));
    let mut back = Vec::new();
    s.dns_reply(
        Instant::ZERO,
        *upstream,
        &answer.to_vec().unwrap(),
        &mut back,
    );
    let (_, dst, payload) = udp_of(&to_container(&back[0]));
    assert_eq!(dst, SocketAddrV4::new(HOST, 5555));
    assert_eq!(Message::from_vec(&payload).unwrap().metadata.id, 9);

    // A query nobody answers: SERVFAIL once the (only) upstream timed out.
    let mut out = Vec::new();
    let frame = udp_frame(5556, SocketAddrV4::new(GW, 53), &query(10, "slow.example."));
    s.frame(at(10), &frame, 0x3333, &mut out);
    assert_eq!(s.next_deadline(), Some(at(12)));
    let mut late = Vec::new();
    s.timers(at(12), &mut late);
    let (_, dst, payload) = udp_of(&to_container(&late[0]));
    assert_eq!(dst.port(), 5556);
    let servfail = Message::from_vec(&payload).unwrap();
    assert_eq!(
        (servfail.metadata.id, servfail.metadata.response_code),
        (10, ResponseCode::ServFail)
    );
}

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

#[test]
fn what_does_not_fit_the_mtu_is_fragmented_and_counted() {
    let mut s = services(true);
    let remote = SocketAddrV4::new(OUTSIDE, 123);
    let container = SocketAddrV4::new(HOST, 40000);
    let key = FlowKey::udp(container, remote);
    let mut out = Vec::new();
    s.frame(at(0), &udp_frame(40000, remote, b"q"), 0, &mut out);
    s.host(at(0), key, HostEvent::Connected, &mut out);
    out.clear();
    // Fits: one frame, untouched.
    s.host(at(1), key, HostEvent::Datagram(&[0u8; 1472]), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(s.stats().fragmented, 0);
    // 4,000 bytes at MTU 1500: three fragments that reassemble to it.
    out.clear();
    let datagram: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    s.host(at(1), key, HostEvent::Datagram(&datagram), &mut out);
    assert_eq!(s.stats().fragmented, 1);
    assert_eq!(s.stats().too_big, 0);
    let packets: Vec<Vec<u8>> = out.iter().map(to_container).collect();
    assert_eq!(packets.len(), 3);
    let whole = reassemble(&packets);
    assert_eq!(udp_of(&whole), (remote, container, datagram));
}

/// The IPv4 packet the `pieces` (fragments of one datagram, in order,
/// each within the MTU) make, checking each fragment's header.
fn reassemble(pieces: &[Vec<u8>]) -> Vec<u8> {
    let first = Ipv4Packet::new_checked(&pieces[0][..]).unwrap();
    let mut payload = Vec::new();
    for (index, piece) in pieces.iter().enumerate() {
        assert!(piece.len() <= 1500, "fragment {index} fits the MTU");
        let ip = Ipv4Packet::new_checked(&piece[..]).unwrap();
        assert!(ip.verify_checksum());
        assert!(!ip.dont_frag());
        assert_eq!(ip.ident(), first.ident(), "one datagram");
        assert_eq!(ip.more_frags(), index + 1 < pieces.len());
        assert_eq!(usize::from(ip.frag_offset()), payload.len());
        payload.extend_from_slice(ip.payload());
    }
    let mut whole = pieces[0][..20].to_vec();
    whole.extend_from_slice(&payload);
    let mut view = Ipv4Packet::new_unchecked(&mut whole[..]);
    view.set_total_len(u16::try_from(20 + payload.len()).unwrap());
    view.clear_flags();
    view.set_frag_offset(0);
    view.fill_checksum();
    whole
}

#[test]
fn fragments_follow_rfc_791_and_refuse_what_cannot_be_cut() {
    let packet = udp_packet(
        SocketAddrV4::new(OUTSIDE, 1),
        SocketAddrV4::new(HOST, 2),
        &[7u8; 100],
    )
    .unwrap();
    // 108 bytes of IP payload at MTU 60: 40, 40 (multiples of 8) and 28.
    let pieces = super::frames::fragments(&packet, 60, 9).unwrap();
    let sizes: Vec<usize> = pieces.iter().map(|p| p.len() - 20).collect();
    assert_eq!(sizes, vec![40, 40, 28]);
    assert_eq!(reassemble(&pieces)[20..], packet[20..]);
    // No room for 8 bytes, a fragment, not IPv4: not cut.
    assert!(super::frames::fragments(&packet, 27, 9).is_none());
    assert!(super::frames::fragments(&pieces[1], 60, 9).is_none());
    assert!(super::frames::fragments(&[0u8; 10], 60, 9).is_none());
}

#[test]
fn a_published_tcp_port_connects_into_the_container_from_the_clients_address() {
    let mut s = services(true);
    let container = SocketAddrV4::new(HOST, 80);
    let client = SocketAddrV4::new(OUTSIDE, 443);
    let key = FlowKey::tcp(container, client);
    let mut out = Vec::new();
    assert!(s.published_connection(at(0), container, client, &mut out));
    assert_eq!(out, vec![Output::Stack(StackCommand::Connect(key))]);
    // The container's SYN-ACK (to the client's address) goes to the stack
    // that is connecting, not absorbed as an outbound SYN's would be.
    let syn_ack = tcp_frame(80, TcpControl::Syn, Some(1));
    assert_eq!(
        s.frame(at(0), &syn_ack, 0, &mut Vec::new()),
        Verdict::ToStack
    );
    out.clear();
    s.tcp(at(0), key, TcpEvent::ContainerConnected, &mut out);
    assert!(out.is_empty());
    assert_eq!(s.flows().get(&key).unwrap().state_name(), "ESTABLISHED");
    // A container that refuses: the client is reset.
    let refused_client = SocketAddrV4::new(OUTSIDE, 444);
    let refused = FlowKey::tcp(container, refused_client);
    assert!(s.published_connection(at(1), container, refused_client, &mut out));
    out.clear();
    s.tcp(
        at(1),
        refused,
        TcpEvent::ContainerConnectFailed(ConnectFailure::Refused),
        &mut out,
    );
    assert_eq!(
        out,
        vec![
            Output::Host(HostCommand::Reset(refused)),
            Output::Host(HostCommand::Close(refused)),
            Output::Stack(StackCommand::Forget(refused))
        ]
    );
}

#[test]
fn a_published_udp_port_delivers_from_the_client_and_relays_answers() {
    let mut s = services(true);
    let container = SocketAddrV4::new(HOST, 53);
    let client = SocketAddrV4::new(OUTSIDE, 4000);
    let key = FlowKey::udp(container, client);
    let mut out = Vec::new();
    // The container has sent nothing yet: its MAC comes from IPAM.
    s.published_datagram(at(0), container, client, b"query", &mut out);
    assert!(out.is_empty());
    assert_eq!(s.stats().no_neighbor, 1);
    s.set_neighbor(HOST, HOST_MAC);
    s.published_datagram(at(0), container, client, b"query", &mut out);
    let (src, dst, payload) = udp_of(&to_container(&out[0]));
    assert_eq!((src, dst), (client, container), "the client's own address");
    assert_eq!(payload, b"query");
    assert_eq!(s.flows().get(&key).unwrap().state_name(), "UNREPLIED");
    // The container's answer goes back out through the published socket.
    out.clear();
    let answer = udp_frame(53, client, b"answer");
    assert_eq!(s.frame(at(1), &answer, 0, &mut out), Verdict::Consumed);
    assert_eq!(
        out,
        vec![Output::Host(HostCommand::Send {
            key,
            payload: b"answer".to_vec()
        })]
    );
    assert_eq!(s.flows().get(&key).unwrap().state_name(), "REPLIED");
}

#[test]
fn a_loopback_client_is_presented_from_the_gateway_and_its_answers_are_the_flows() {
    let mut s = services(true);
    s.set_neighbor(HOST, HOST_MAC);
    let loopback = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 40_000);
    let seen = s.presented_client(loopback);
    assert_eq!(
        seen,
        SocketAddrV4::new(GW, 40_000),
        "the gateway, same port"
    );
    let outside = SocketAddrV4::new(OUTSIDE, 40_000);
    assert_eq!(
        s.presented_client(outside),
        outside,
        "everyone else keeps theirs"
    );

    // UDP: delivered from the gateway's address; the answer to it is the
    // flow's, not the gateway's own stack's.
    let container = SocketAddrV4::new(HOST, 53);
    let key = FlowKey::udp(container, seen);
    let mut out = Vec::new();
    s.published_datagram(at(0), container, seen, b"query", &mut out);
    let (src, dst, _) = udp_of(&to_container(&out[0]));
    assert_eq!((src, dst), (seen, container));
    out.clear();
    let answer = udp_frame(53, seen, b"answer");
    assert_eq!(s.frame(at(1), &answer, 0, &mut out), Verdict::Consumed);
    assert_eq!(
        out,
        vec![Output::Host(HostCommand::Send {
            key,
            payload: b"answer".to_vec()
        })]
    );
    // Another port of the gateway's address is still the gateway's own.
    let other = udp_frame(53, SocketAddrV4::new(GW, 40_001), b"x");
    assert_eq!(s.frame(at(1), &other, 0, &mut Vec::new()), Verdict::ToStack);

    // TCP: the container's SYN-ACK to the gateway's address goes to the
    // stack as the flow's (the relay is told), not as the gateway's own.
    let web = SocketAddrV4::new(HOST, 80);
    let tcp_key = FlowKey::tcp(web, seen);
    assert!(s.published_connection(at(2), web, seen, &mut Vec::new()));
    s.take_stack_flows();
    let syn_ack = tcp_frame_to(80, seen, TcpControl::Syn, Some(1));
    assert_eq!(
        s.frame(at(2), &syn_ack, 0, &mut Vec::new()),
        Verdict::ToStack
    );
    assert!(s.take_stack_flows().contains(&tcp_key));
    let stray = tcp_frame_to(80, SocketAddrV4::new(GW, 40_002), TcpControl::Syn, Some(1));
    assert_eq!(s.frame(at(2), &stray, 0, &mut Vec::new()), Verdict::ToStack);
    assert!(s.take_stack_flows().is_empty(), "the gateway's own segment");
}

#[test]
fn dns_over_tcp_answers_on_the_connection_locally_forwarded_or_after_the_timeout() {
    let mut s = services(true);
    let client = SocketAddrV4::new(HOST, 40000);
    let tcp_answer = |out: &[Output]| -> Message {
        let [Output::DnsTcp { client: to, bytes }] = out else {
            panic!("expected an answer on the connection: {out:?}");
        };
        assert_eq!(*to, client);
        Message::from_vec(bytes).unwrap()
    };
    // A container's name: answered at once, on the connection.
    let mut out = Vec::new();
    s.dns_tcp_query(at(0), client, &query(1, "web."), 0x1111, &mut out);
    let answer = tcp_answer(&out);
    assert_eq!(answer.metadata.id, 1);
    assert!(matches!(answer.answers[0].data, RData::A(A(ip)) if ip == HOST));

    // Another name: forwarded over UDP, its answer back on the connection
    // (not as a datagram to the same endpoint).
    let mut out = Vec::new();
    s.dns_tcp_query(at(0), client, &query(2, "example.com."), 0x2222, &mut out);
    let [
        Output::Host(HostCommand::SendDns {
            upstream, bytes, ..
        }),
    ] = out.as_slice()
    else {
        panic!("expected a forwarded query: {out:?}");
    };
    let sent = Message::from_vec(bytes).unwrap();
    let mut reply = Message::response(sent.metadata.id, OpCode::Query);
    reply.add_queries(sent.queries.clone());
    let mut back = Vec::new();
    s.dns_reply(
        Instant::ZERO,
        *upstream,
        &reply.to_vec().unwrap(),
        &mut back,
    );
    assert_eq!(tcp_answer(&back).metadata.id, 2);

    // Nobody answers: SERVFAIL on the connection after the timeout.
    let mut out = Vec::new();
    s.dns_tcp_query(at(10), client, &query(3, "slow.example."), 0x3333, &mut out);
    let mut late = Vec::new();
    s.timers(at(13), &mut late);
    let failed = tcp_answer(&late);
    assert_eq!(failed.metadata.id, 3);
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);

    // The same endpoint asking over UDP later is answered as a datagram.
    let mut out = Vec::new();
    let frame = udp_frame(40000, SocketAddrV4::new(GW, 53), &query(4, "example.org."));
    s.frame(at(20), &frame, 0x4444, &mut out);
    let [
        Output::Host(HostCommand::SendDns {
            upstream, bytes, ..
        }),
    ] = out.as_slice()
    else {
        panic!("expected a forwarded query: {out:?}");
    };
    let sent = Message::from_vec(bytes).unwrap();
    let mut reply = Message::response(sent.metadata.id, OpCode::Query);
    reply.add_queries(sent.queries.clone());
    let mut back = Vec::new();
    s.dns_reply(
        Instant::ZERO,
        *upstream,
        &reply.to_vec().unwrap(),
        &mut back,
    );
    assert!(matches!(back.as_slice(), [Output::Frame(_)]), "{back:?}");
}

/// A segment from the container to OUTSIDE:443 with everything settable.
fn segment(src_port: u16, seq: u32, control: TcpControl, payload: &[u8], mss: bool) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port,
        dst_port: 443,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: (control != TcpControl::Syn).then_some(TcpSeqNumber(1)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: mss.then_some(1460),
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload,
    };
    let ip = Ipv4Repr {
        src_addr: HOST,
        dst_addr: OUTSIDE,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let caps = ChecksumCapabilities::default();
    let mut packet = vec![0u8; ip.buffer_len() + tcp.buffer_len()];
    let mut view = Ipv4Packet::new_unchecked(&mut packet[..]);
    ip.emit(&mut view, &caps);
    tcp.emit(
        &mut TcpPacket::new_unchecked(view.payload_mut()),
        &HOST.into(),
        &OUTSIDE.into(),
        &caps,
    );
    from_host(&packet)
}

/// Changes a frame's TCP header with `edit`, then makes its checksums
/// right again (so only the edit is wrong).
fn edited(mut frame: Vec<u8>, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
    edit(ip.payload_mut());
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    tcp.fill_checksum(&HOST.into(), &OUTSIDE.into());
    frame
}

/// An open flow from port 41100 whose SYN had sequence number 1000.
fn open_flow(s: &mut Services) -> FlowKey {
    let key = FlowKey::tcp(
        SocketAddrV4::new(HOST, 41100),
        SocketAddrV4::new(OUTSIDE, 443),
    );
    s.frame(
        at(0),
        &segment(41100, 1000, TcpControl::Syn, b"", true),
        0,
        &mut Vec::new(),
    );
    s.host(at(1), key, HostEvent::Connected, &mut Vec::new());
    key
}

#[test]
fn bad_checksums_and_broken_headers_are_dropped_and_counted() {
    let mut s = services(true);
    open_flow(&mut s);
    let data = segment(41100, 1001, TcpControl::Psh, b"hello", false);
    assert_eq!(s.frame(at(1), &data, 0, &mut Vec::new()), Verdict::ToStack);
    // A bad TCP checksum.
    let mut bad = data.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(s.frame(at(1), &bad, 0, &mut Vec::new()), Verdict::Dropped);
    // A data offset below the header's 5 words, and one past the segment.
    for words in [2u8, 15] {
        let broken = edited(data.clone(), |tcp| tcp[12] = words << 4);
        assert_eq!(
            s.frame(at(1), &broken, 0, &mut Vec::new()),
            Verdict::Dropped
        );
    }
    assert_eq!(s.stats().malformed, 3);
}

#[test]
fn invalid_flags_options_and_ports_are_dropped_and_counted() {
    let mut s = services(true);
    open_flow(&mut s);
    let syn_fin = edited(segment(41100, 1001, TcpControl::Syn, b"", false), |tcp| {
        tcp[13] |= 0x01
    });
    let syn_rst = edited(segment(41100, 1001, TcpControl::Syn, b"", false), |tcp| {
        tcp[13] |= 0x04
    });
    // The MSS option announced 3 bytes long (it is 4).
    let bad_option = edited(segment(41100, 1001, TcpControl::Syn, b"", true), |tcp| {
        tcp[21] = 3
    });
    // An option running past the header.
    let long_option = edited(segment(41100, 1001, TcpControl::Syn, b"", true), |tcp| {
        tcp[21] = 40
    });
    let port_zero = edited(segment(41100, 1001, TcpControl::Psh, b"x", false), |tcp| {
        tcp[2..4].copy_from_slice(&[0, 0])
    });
    for frame in [&syn_fin, &syn_rst, &bad_option, &long_option, &port_zero] {
        assert_eq!(s.frame(at(1), frame, 0, &mut Vec::new()), Verdict::Dropped);
    }
    assert_eq!(s.stats().invalid_tcp, 5);
    assert_eq!(s.flows().len(), 1, "no flow opened by any of them");
}

#[test]
fn out_of_window_segments_are_dropped_and_counted_and_the_stream_goes_on() {
    let mut s = services(true);
    let key = open_flow(&mut s);
    let in_window = segment(41100, 1001, TcpControl::Psh, b"hello", false);
    assert_eq!(
        s.frame(at(1), &in_window, 0, &mut Vec::new()),
        Verdict::ToStack
    );
    let far = 1006 + MAX_STACK_WINDOW + 1;
    let ahead = segment(41100, far, TcpControl::Psh, b"blind", false);
    let behind = segment(
        41100,
        1001u32.wrapping_sub(2 * MAX_STACK_WINDOW),
        TcpControl::Psh,
        b"stale",
        false,
    );
    let reset = segment(41100, far, TcpControl::Rst, b"", false);
    for frame in [&ahead, &behind, &reset] {
        assert_eq!(s.frame(at(1), frame, 0, &mut Vec::new()), Verdict::Dropped);
    }
    assert_eq!(s.stats().out_of_window, 3);
    let next = segment(41100, 1006, TcpControl::Psh, b"world", false);
    assert_eq!(s.frame(at(1), &next, 0, &mut Vec::new()), Verdict::ToStack);
    // The flow's record goes with the flow.
    s.tcp(at(2), key, TcpEvent::ContainerReset, &mut Vec::new());
    assert_eq!(s.windows.len(), 0);
}

#[test]
fn any_damage_to_a_segment_gets_a_verdict_never_a_panic() {
    let mut s = services(true);
    open_flow(&mut s);
    let data = segment(41100, 1001, TcpControl::Psh, b"payload", true);
    for at_byte in 0..data.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut damaged = data.clone();
            damaged[at_byte] ^= flip;
            s.frame(at(1), &damaged, 0, &mut Vec::new());
            // The same damage with the checksums made right again.
            if at_byte >= 14 + 20 {
                let fixed = edited(damaged, |_| {});
                s.frame(at(1), &fixed, 0, &mut Vec::new());
            }
        }
    }
    for len in 0..data.len() {
        s.frame(at(1), &data[..len], 0, &mut Vec::new());
    }
    let stats = s.stats();
    assert!(stats.malformed + stats.invalid_tcp + stats.out_of_window > 0);
}

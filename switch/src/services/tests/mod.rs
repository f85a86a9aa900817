//! The services end to end on frames built in code, on a fake clock: what
//! goes in at the gateway port and the host sockets, what comes out.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetFrame, Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, Ipv4Packet, TcpControl,
    TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket,
};

use super::*;
use crate::dns::DEFAULT_DOMAIN;
use crate::flows::ConnectFailure;
use crate::time::Instant;

mod dns;
mod fragments;
mod malformed;
mod outbound;
mod published;
mod reassembly;

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
    let packet = crate::test_frames::ipv4_tcp(HOST, *dst.ip(), &tcp);
    from_host(&packet)
}

fn echo_frame(ident: u16, seq_no: u16) -> Vec<u8> {
    echo_frame_to(OUTSIDE, ident, seq_no, b"ping!")
}

fn echo_frame_to(dst: Ipv4Addr, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    };
    let packet = crate::test_frames::ipv4_icmp(HOST, dst, &icmp);
    from_host(&packet)
}

fn arp(target: Ipv4Addr) -> Vec<u8> {
    crate::test_frames::arp_request(HOST_MAC.0, HOST, target)
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

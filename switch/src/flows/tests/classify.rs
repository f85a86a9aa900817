//! The gateway port's classifier, rule by rule.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr,
    IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket,
    UdpRepr,
};

use crate::flows::{FlowKey, GatewayAddresses, IgnoreReason, Ingress, classify, classify_with};
use crate::mac::MacAddr;

const GW_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
const OTHER_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x03];
const GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn gateway() -> GatewayAddresses {
    GatewayAddresses {
        mac: MacAddr(GW_MAC),
        ip: GW,
        prefix_len: 16,
    }
}

fn ethernet(dst: [u8; 6], ethertype: EthernetProtocol, payload: &[u8]) -> Vec<u8> {
    let eth = EthernetRepr {
        src_addr: EthernetAddress(HOST_MAC),
        dst_addr: EthernetAddress(dst),
        ethertype,
    };
    let mut frame = vec![0u8; eth.buffer_len() + payload.len()];
    let mut view = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut view);
    view.payload_mut().copy_from_slice(payload);
    frame
}

fn arp(target: Ipv4Addr) -> Vec<u8> {
    crate::test_frames::arp_request(HOST_MAC, HOST, target)
}

/// An IPv4 packet from `src` to `dst` around `payload` (already a
/// transport header and data).
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: protocol,
        payload_len: payload.len(),
        hop_limit: 64,
    };
    let mut packet = vec![0u8; ip.buffer_len() + payload.len()];
    let mut view = Ipv4Packet::new_unchecked(&mut packet[..]);
    ip.emit(&mut view, &ChecksumCapabilities::default());
    view.payload_mut().copy_from_slice(payload);
    packet
}

fn tcp(src: Ipv4Addr, dst: Ipv4Addr, control: TcpControl, ack: bool) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: 40000,
        dst_port: 443,
        control,
        seq_number: TcpSeqNumber(1),
        ack_number: ack.then_some(TcpSeqNumber(2)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: b"",
    };
    let mut segment = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut segment[..]),
        &src.into(),
        &dst.into(),
        &ChecksumCapabilities::default(),
    );
    ipv4(src, dst, IpProtocol::Tcp, &segment)
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, dst_port: u16, data: &[u8]) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: 41000,
        dst_port,
    };
    let mut datagram = vec![0u8; repr.header_len() + data.len()];
    repr.emit(
        &mut UdpPacket::new_unchecked(&mut datagram[..]),
        &src.into(),
        &dst.into(),
        data.len(),
        |buf| buf.copy_from_slice(data),
        &ChecksumCapabilities::default(),
    );
    ipv4(src, dst, IpProtocol::Udp, &datagram)
}

fn icmp(dst: Ipv4Addr, repr: Icmpv4Repr<'_>) -> Vec<u8> {
    let mut message = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut Icmpv4Packet::new_unchecked(&mut message[..]),
        &ChecksumCapabilities::default(),
    );
    ipv4(HOST, dst, IpProtocol::Icmp, &message)
}

fn echo_request(dst: Ipv4Addr) -> Vec<u8> {
    icmp(
        dst,
        Icmpv4Repr::EchoRequest {
            ident: 7,
            seq_no: 3,
            data: b"ping",
        },
    )
}

fn to_gateway(packet: &[u8]) -> Vec<u8> {
    ethernet(GW_MAC, EthernetProtocol::Ipv4, packet)
}

fn run(frame: &[u8]) -> Ingress<'_> {
    classify(frame, &gateway())
}

fn ignored(reason: IgnoreReason) -> Ingress<'static> {
    Ingress::Ignore(reason)
}

#[test]
fn arp_reaches_the_stack_only_for_the_gateways_address() {
    assert_eq!(run(&arp(GW)), Ingress::Local);
    assert_eq!(run(&arp(OTHER)), ignored(IgnoreReason::NotForUs));
    assert_eq!(run(&arp(OUTSIDE)), ignored(IgnoreReason::NotForUs));
    let mut short = arp(GW);
    short.truncate(20);
    assert_eq!(run(&short), ignored(IgnoreReason::Malformed));
}

#[test]
fn traffic_to_the_gateway_goes_to_the_stack_except_dns_over_udp() {
    assert_eq!(run(&to_gateway(&echo_request(GW))), Ingress::Local);
    assert_eq!(
        run(&to_gateway(&tcp(HOST, GW, TcpControl::Syn, false))),
        Ingress::Local
    );
    assert_eq!(run(&to_gateway(&udp(HOST, GW, 5353, b"x"))), Ingress::Local);
    let query = to_gateway(&udp(HOST, GW, 53, b"a query"));
    assert_eq!(
        run(&query),
        Ingress::Dns {
            client: SocketAddrV4::new(HOST, 41000),
            payload: b"a query",
        }
    );
    let mut bad = query.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(run(&bad), ignored(IgnoreReason::Malformed));
    // Broadcasts and multicasts reach the stack as before.
    for dst in [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(172, 17, 255, 255),
        Ipv4Addr::new(224, 0, 0, 1),
    ] {
        let frame = ethernet([0xff; 6], EthernetProtocol::Ipv4, &echo_request(dst));
        assert_eq!(run(&frame), Ingress::Local, "{dst}");
    }
}

#[test]
fn tcp_to_outside_addresses_is_a_flow_and_syns_are_marked() {
    let syn = to_gateway(&tcp(HOST, OUTSIDE, TcpControl::Syn, false));
    let key = FlowKey::tcp(
        SocketAddrV4::new(HOST, 40000),
        SocketAddrV4::new(OUTSIDE, 443),
    );
    assert_eq!(
        run(&syn),
        Ingress::Tcp {
            key,
            syn: true,
            rst: false
        }
    );
    let syn_ack = to_gateway(&tcp(HOST, OUTSIDE, TcpControl::Syn, true));
    assert!(matches!(run(&syn_ack), Ingress::Tcp { syn: false, .. }));
    let data = to_gateway(&tcp(HOST, OUTSIDE, TcpControl::None, true));
    assert!(matches!(
        run(&data),
        Ingress::Tcp {
            syn: false,
            rst: false,
            ..
        }
    ));
    let rst = to_gateway(&tcp(HOST, OUTSIDE, TcpControl::Rst, false));
    assert!(matches!(run(&rst), Ingress::Tcp { rst: true, .. }));
    // A bad TCP checksum.
    let mut bad = to_gateway(&tcp(HOST, OUTSIDE, TcpControl::Syn, false));
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    assert_eq!(run(&bad), ignored(IgnoreReason::Malformed));
}

#[test]
fn only_what_is_addressed_to_the_gateway_and_leaves_the_subnet_is_routed() {
    // Flooded past the gateway (another host's MAC): not ours to route.
    let flooded = ethernet(
        OTHER_MAC,
        EthernetProtocol::Ipv4,
        &tcp(HOST, OUTSIDE, TcpControl::Syn, false),
    );
    assert_eq!(run(&flooded), ignored(IgnoreReason::NotForUs));
    // To another container, even via the gateway's MAC: not routed.
    assert_eq!(
        run(&to_gateway(&echo_request(OTHER))),
        ignored(IgnoreReason::NotForUs)
    );
    // From an address that is not the subnet's.
    let spoofed = to_gateway(&tcp(
        Ipv4Addr::new(10, 0, 0, 5),
        OUTSIDE,
        TcpControl::Syn,
        false,
    ));
    assert_eq!(run(&spoofed), ignored(IgnoreReason::ForeignSource));
}

#[test]
fn udp_and_echo_requests_to_outside_are_flows() {
    assert_eq!(
        run(&to_gateway(&udp(HOST, OUTSIDE, 123, b"ntp"))),
        Ingress::Udp {
            key: FlowKey::udp(
                SocketAddrV4::new(HOST, 41000),
                SocketAddrV4::new(OUTSIDE, 123)
            ),
            payload: b"ntp",
        }
    );
    assert_eq!(
        run(&to_gateway(&echo_request(OUTSIDE))),
        Ingress::Echo {
            key: FlowKey::echo(HOST, 7, OUTSIDE),
            seq_no: 3,
            payload: b"ping",
        }
    );
    let reply = icmp(
        OUTSIDE,
        Icmpv4Repr::EchoReply {
            ident: 7,
            seq_no: 3,
            data: b"pong",
        },
    );
    assert_eq!(run(&to_gateway(&reply)), ignored(IgnoreReason::Unsupported));
    let gre = ipv4(HOST, OUTSIDE, IpProtocol::Unknown(47), b"tunnel");
    assert_eq!(run(&to_gateway(&gre)), ignored(IgnoreReason::Unsupported));
}

#[test]
fn fragments_and_broken_headers_are_refused() {
    let mut fragment = udp(HOST, OUTSIDE, 123, b"part one");
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut fragment[..]);
        ip.set_more_frags(true);
        ip.fill_checksum();
    }
    assert_eq!(run(&to_gateway(&fragment)), ignored(IgnoreReason::Fragment));
    let mut bad_header = udp(HOST, OUTSIDE, 123, b"x");
    bad_header[8] ^= 0x01; // the TTL, under the header checksum
    assert_eq!(
        run(&to_gateway(&bad_header)),
        ignored(IgnoreReason::Malformed)
    );
    assert_eq!(run(&[0u8; 10]), ignored(IgnoreReason::Malformed));
    let ipv6 = ethernet(GW_MAC, EthernetProtocol::Ipv6, &[0u8; 40]);
    assert_eq!(run(&ipv6), ignored(IgnoreReason::NotForUs));
    // Every truncation of a valid frame: a verdict, never a panic.
    let syn = to_gateway(&tcp(HOST, OUTSIDE, TcpControl::Syn, false));
    for len in 0..syn.len() {
        let verdict = run(&syn[..len]);
        assert!(matches!(verdict, Ingress::Ignore(_)), "{len}: {verdict:?}");
    }
}

#[test]
fn host_loopback_makes_tcp_and_udp_to_the_gateway_flows_but_not_dns_or_ping() {
    let gw = gateway();
    let tcp_to_gw = to_gateway(&tcp(HOST, GW, TcpControl::Syn, false));
    let udp_to_gw = to_gateway(&udp(HOST, GW, 8080, b"x"));
    let dns = to_gateway(&udp(HOST, GW, 53, b"query"));
    let ping = to_gateway(&echo_request(GW));
    assert_eq!(classify(&tcp_to_gw, &gw), Ingress::Local);
    assert_eq!(classify(&udp_to_gw, &gw), Ingress::Local);
    assert!(matches!(
        classify_with(&tcp_to_gw, &gw, true),
        Ingress::Tcp { key, syn: true, .. } if *key.remote.ip() == GW
    ));
    assert!(matches!(
        classify_with(&udp_to_gw, &gw, true),
        Ingress::Udp { key, .. } if key.remote == SocketAddrV4::new(GW, 8080)
    ));
    assert!(matches!(
        classify_with(&dns, &gw, true),
        Ingress::Dns { .. }
    ));
    assert_eq!(classify_with(&ping, &gw, true), Ingress::Local);
}

#[test]
fn tcp_segments_smoltcp_would_refuse_are_invalid_not_flows() {
    let fix = |mut frame: Vec<u8>, edit: &dyn Fn(&mut [u8])| {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[..]);
        edit(ip.payload_mut());
        let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
        tcp.fill_checksum(&HOST.into(), &OUTSIDE.into());
        to_gateway(&frame)
    };
    let syn = tcp(HOST, OUTSIDE, TcpControl::Syn, false);
    // SYN with FIN, SYN with RST, and a source port of 0.
    for edit in [
        &(|t: &mut [u8]| t[13] |= 0x01) as &dyn Fn(&mut [u8]),
        &|t: &mut [u8]| t[13] |= 0x04,
        &|t: &mut [u8]| t[0..2].copy_from_slice(&[0, 0]),
    ] {
        assert_eq!(
            run(&fix(syn.clone(), edit)),
            ignored(IgnoreReason::InvalidTcp)
        );
    }
    // The untouched SYN is still a flow (the edits alone made the
    // difference).
    assert!(matches!(
        run(&fix(syn, &|_| {})),
        Ingress::Tcp { syn: true, .. }
    ));
}

//! Frames the crate's unit tests build in more than one place.

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr,
};

/// A broadcast ARP request from `src_mac`/`src_ip` asking for `target`.
pub(crate) fn arp_request(src_mac: [u8; 6], src_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(src_mac),
        source_protocol_addr: src_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0; eth.buffer_len() + arp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    buf
}

/// An ICMP echo request (identifier 7) from `src` to `dst`, each a MAC and
/// an IPv4 address.
pub(crate) fn echo_request(
    (src_mac, src_ip): ([u8; 6], Ipv4Addr),
    (dst_mac, dst_ip): ([u8; 6], Ipv4Addr),
    seq_no: u16,
    data: &[u8],
) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 7,
        seq_no,
        data,
    };
    let packet = ipv4_icmp(src_ip, dst_ip, &icmp);
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0; eth.buffer_len() + packet.len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf);
    eth.emit(&mut frame);
    frame.payload_mut().copy_from_slice(&packet);
    buf
}

/// The IPv4 packet (TTL 64, checksums filled) carrying TCP segment `tcp`
/// from `src` to `dst`.
pub(crate) fn ipv4_tcp(src: Ipv4Addr, dst: Ipv4Addr, tcp: &TcpRepr<'_>) -> Vec<u8> {
    let caps = ChecksumCapabilities::default();
    let ip = ipv4_header(src, dst, IpProtocol::Tcp, tcp.buffer_len());
    let mut packet = vec![0u8; ip.buffer_len() + tcp.buffer_len()];
    let mut view = Ipv4Packet::new_unchecked(&mut packet[..]);
    ip.emit(&mut view, &caps);
    tcp.emit(
        &mut TcpPacket::new_unchecked(view.payload_mut()),
        &src.into(),
        &dst.into(),
        &caps,
    );
    packet
}

/// The IPv4 packet (TTL 64, checksums filled) carrying ICMP message `icmp`
/// from `src` to `dst`.
pub(crate) fn ipv4_icmp(src: Ipv4Addr, dst: Ipv4Addr, icmp: &Icmpv4Repr<'_>) -> Vec<u8> {
    let caps = ChecksumCapabilities::default();
    let ip = ipv4_header(src, dst, IpProtocol::Icmp, icmp.buffer_len());
    let mut packet = vec![0u8; ip.buffer_len() + icmp.buffer_len()];
    let mut view = Ipv4Packet::new_unchecked(&mut packet[..]);
    ip.emit(&mut view, &caps);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(view.payload_mut()), &caps);
    packet
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, payload_len: usize) -> Ipv4Repr {
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: protocol,
        payload_len,
        hop_limit: 64,
    }
}

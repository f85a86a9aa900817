//! The frames the gateway's services send to containers, built with
//! smoltcp's wire types: UDP datagrams and echo replies from remote
//! addresses (or from the gateway's DNS port), and any IPv4 packet wrapped
//! for the wire, cut into fragments when it is longer than the MTU.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr,
    IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
};

use crate::mac::MacAddr;

/// Linux's `ip_default_ttl`.
const TTL: u8 = 64;

/// Wraps an IPv4 packet in an Ethernet header.
pub fn ethernet(src: MacAddr, dst: MacAddr, ip_packet: &[u8]) -> Vec<u8> {
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src.0),
        dst_addr: EthernetAddress(dst.0),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut frame = vec![0u8; eth.buffer_len() + ip_packet.len()];
    let mut view = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut view);
    view.payload_mut().copy_from_slice(ip_packet);
    frame
}

/// An IPv4 UDP datagram from `src` to `dst`; `None` if it cannot fit one
/// IPv4 packet.
pub fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Option<Vec<u8>> {
    let udp = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let (from, to) = (*src.ip(), *dst.ip());
    let len = udp.header_len() + payload.len();
    ipv4_packet(from, to, IpProtocol::Udp, len, |buf, caps| {
        udp.emit(
            &mut UdpPacket::new_unchecked(buf),
            &from.into(),
            &to.into(),
            payload.len(),
            |buf| buf.copy_from_slice(payload),
            caps,
        );
    })
}

/// An IPv4 echo reply from `src` to `dst`.
pub fn echo_reply_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    seq_no: u16,
    data: &[u8],
) -> Option<Vec<u8>> {
    let icmp = Icmpv4Repr::EchoReply {
        ident,
        seq_no,
        data,
    };
    ipv4_packet(
        src,
        dst,
        IpProtocol::Icmp,
        icmp.buffer_len(),
        |buf, caps| {
            icmp.emit(&mut Icmpv4Packet::new_unchecked(buf), caps);
        },
    )
}

/// An IPv4 packet from `src` to `dst` of `payload_len` bytes of
/// `protocol`, which `emit_payload` writes; `None` if it cannot fit one
/// IPv4 packet.
fn ipv4_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: IpProtocol,
    payload_len: usize,
    emit_payload: impl FnOnce(&mut [u8], &ChecksumCapabilities),
) -> Option<Vec<u8>> {
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: protocol,
        payload_len,
        hop_limit: TTL,
    };
    u16::try_from(ip.buffer_len() + ip.payload_len).ok()?;
    let caps = ChecksumCapabilities::default();
    let mut packet = vec![0u8; ip.buffer_len() + ip.payload_len];
    let mut view = Ipv4Packet::new_unchecked(&mut packet[..]);
    ip.emit(&mut view, &caps);
    emit_payload(view.payload_mut(), &caps);
    Some(packet)
}

/// Cuts an IPv4 packet longer than `mtu` into fragments (RFC 791), as a
/// kernel router does for a datagram without DF: every fragment carries
/// the header (with identification `ident`, DF cleared), the payload in
/// pieces of a multiple of 8 bytes, all but the last with MF. `None` when
/// the packet is not IPv4, is a fragment already, or `mtu` leaves no room
/// for 8 bytes of payload.
pub(crate) fn fragments(packet: &[u8], mtu: usize, ident: u16) -> Option<Vec<Vec<u8>>> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let header_len = usize::from(ip.header_len());
    let payload = packet.get(header_len..usize::from(ip.total_len()))?;
    let step = mtu.checked_sub(header_len)? / 8 * 8;
    if step == 0 {
        return None;
    }
    let count = payload.len().div_ceil(step);
    let mut pieces = Vec::with_capacity(count);
    for (index, chunk) in payload.chunks(step).enumerate() {
        let mut piece = Vec::with_capacity(header_len + chunk.len());
        piece.extend_from_slice(&packet[..header_len]);
        piece.extend_from_slice(chunk);
        let mut view = Ipv4Packet::new_unchecked(&mut piece[..]);
        view.set_total_len(u16::try_from(header_len + chunk.len()).ok()?);
        view.set_ident(ident);
        view.clear_flags();
        view.set_more_frags(index + 1 < count);
        view.set_frag_offset(u16::try_from(index * step).ok()?);
        view.fill_checksum();
        pieces.push(piece);
    }
    Some(pieces)
}

/// The IPv4 packet of an Ethernet frame (its payload, cut to the packet's
/// total length).
pub(crate) fn ip_packet(frame: &[u8]) -> Option<&[u8]> {
    let payload = frame.get(14..)?;
    let ip = Ipv4Packet::new_checked(payload).ok()?;
    payload.get(..usize::from(ip.total_len()))
}

/// A TCP segment's sequence number and length in sequence space (payload,
/// plus one each for SYN and FIN).
pub(crate) fn tcp_seq_span(frame: &[u8]) -> Option<(u32, u32)> {
    let ip = Ipv4Packet::new_checked(ip_packet(frame)?).ok()?;
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let len = tcp.payload().len() + usize::from(tcp.syn()) + usize::from(tcp.fin());
    Some((tcp.seq_number().0 as u32, u32::try_from(len).ok()?))
}

/// A frame's source MAC and source IPv4 address.
pub(crate) fn source_of(frame: &[u8]) -> Option<(MacAddr, Ipv4Addr)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    Some((MacAddr(eth.src_addr().0), ip.src_addr()))
}

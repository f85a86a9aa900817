//! The outer headers of the lab's underlay, IPv4 or IPv6: which captured
//! frames a UDP socket bound to the tunnel's endpoint would receive, and
//! the frame the kernel sends for each datagram the tunnel writes.
//!
//! Receiving, a frame counts only if it is a datagram to the local address
//! and port, of the local address's IP version:
//!
//! - IPv4: unfragmented, good header checksum, protocol UDP; a UDP checksum
//!   of zero means none was computed (allowed over IPv4, and what the
//!   kernel's vxlan device sends by default);
//! - IPv6: next header UDP right after the fixed header (no extension
//!   header: VXLAN senders put none, and a fragment header would mean a
//!   fragmented tunnel packet, dropped like an IPv4 fragment); the UDP
//!   checksum must be right and must not be zero, as a Linux UDP socket
//!   drops zero-checksum datagrams over IPv6 unless told otherwise
//!   (`UDP_NO_CHECK6_RX`, which the live tunnel does not set; RFC 6936).
//!
//! Anything else (the other IP version, a truncated header, another
//! address or port, a bad checksum) is not for the socket.
//!
//! Sending writes what a Linux UDP socket does with default settings:
//! IPv4 with TTL 64, identification 0 and Don't Fragment; IPv6 with hop
//! limit 64, traffic class 0 and flow label 0 (a live host with
//! `net.ipv6.auto_flowlabels` on puts a hash of the flow there, seeded
//! per boot, which no capture can reproduce); UDP from the local port with
//! its checksum computed.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use ports::wire::{checksum, ethernet, ipv4, ipv6, udp, vxlan};

use super::{UNDERLAY_LOCAL_MAC, UNDERLAY_NEXT_HOP_MAC};

/// The TTL (IPv4) and hop limit (IPv6) a Linux UDP socket sends with.
const UNDERLAY_HOP_LIMIT: u8 = 64;
const IPPROTO_UDP: u8 = 17;

/// If `frame` is a UDP datagram to `local` that a socket bound there would
/// receive: its sender and where its UDP payload lies in `frame`.
pub(super) fn datagram_to(local: SocketAddr, frame: &[u8]) -> Option<(SocketAddr, Range<usize>)> {
    let ethernet = ethernet::Frame::new_checked(frame).ok()?;
    let (source, udp_start, udp_len) = match (local.ip(), ethernet.ethertype()) {
        (IpAddr::V4(local_ip), ethernet::ethertype::IPV4) => {
            let ip = ipv4::Packet::new_checked(ethernet.payload()).ok()?;
            if ip.is_fragment()
                || ip.protocol() != IPPROTO_UDP
                || ip.dst_addr() != local_ip
                || !ip.verify_checksum()
            {
                return None;
            }
            let udp_len = checked_udp_len(ip.payload(), ip.addresses(), true)?;
            (IpAddr::V4(ip.src_addr()), ip.header_len(), udp_len)
        }
        (IpAddr::V6(local_ip), ethernet::ethertype::IPV6) => {
            let ip = ipv6::Packet::new_checked(ethernet.payload()).ok()?;
            if ip.next_header() != IPPROTO_UDP || ip.dst_addr() != local_ip {
                return None;
            }
            let udp_len = checked_udp_len(ip.payload(), ip.addresses(), false)?;
            (IpAddr::V6(ip.src_addr()), ipv6::HEADER_LEN, udp_len)
        }
        _ => return None,
    };
    let udp = udp::Packet::new_checked(&ethernet.payload()[udp_start..]).ok()?;
    if udp.dst_port() != local.port() {
        return None;
    }
    let start = ethernet::HEADER_LEN + udp_start + udp::HEADER_LEN;
    let end = ethernet::HEADER_LEN + udp_start + udp_len;
    Some((SocketAddr::new(source, udp.src_port()), start..end))
}

/// The length of the UDP datagram at the start of `payload` (its length
/// field), if its checksum over `addresses` is right; zero, no checksum, is
/// taken when `zero_allowed`.
fn checked_udp_len(payload: &[u8], addresses: &[u8], zero_allowed: bool) -> Option<usize> {
    let udp = udp::Packet::new_checked(payload).ok()?;
    let len = usize::from(udp.len());
    if udp.checksum() == 0 {
        return zero_allowed.then_some(len);
    }
    let pseudo = checksum::pseudo_header_sum(addresses, IPPROTO_UDP, len);
    let sum = checksum::fold(checksum::ones_complement_sum(
        &payload[..len],
        u32::from(pseudo),
    ));
    (sum == 0xffff).then_some(len)
}

/// Writes into `out` the underlay frame that carries `frame` from `local`
/// to `endpoint` (see the module docs for the outer headers); `false`, and
/// nothing written, when the two are of different IP versions (one socket
/// cannot send from one to the other).
pub(super) fn underlay_frame(
    out: &mut Vec<u8>,
    local: SocketAddr,
    endpoint: SocketAddr,
    header: &[u8; vxlan::HEADER_LEN],
    frame: &[u8],
) -> bool {
    let udp_len = udp::HEADER_LEN + header.len() + frame.len();
    // A frame of up to 65,535 + 18 bytes fits; longer ones the fabric
    // dropped as too big for the port before they came here.
    let udp_len_field = (udp_len as u16).to_be_bytes();
    out.clear();
    out.extend_from_slice(&UNDERLAY_NEXT_HOP_MAC.0);
    out.extend_from_slice(&UNDERLAY_LOCAL_MAC.0);
    let addresses = match (local.ip(), endpoint.ip()) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            out.extend_from_slice(&ethernet::ethertype::IPV4.to_be_bytes());
            let ip_start = out.len();
            let ip_len = ipv4::MIN_HEADER_LEN + udp_len;
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&(ip_len as u16).to_be_bytes());
            out.extend_from_slice(&0u16.to_be_bytes());
            out.extend_from_slice(&ipv4::DONT_FRAGMENT.to_be_bytes());
            out.extend_from_slice(&[UNDERLAY_HOP_LIMIT, IPPROTO_UDP, 0, 0]);
            out.extend_from_slice(&source.octets());
            out.extend_from_slice(&destination.octets());
            let sum = checksum::rfc1071_checksum(&out[ip_start..]);
            out[ip_start + 10..ip_start + 12].copy_from_slice(&sum.to_be_bytes());
            [&source.octets()[..], &destination.octets()[..]].concat()
        }
        (IpAddr::V6(source), IpAddr::V6(destination)) => {
            out.extend_from_slice(&ethernet::ethertype::IPV6.to_be_bytes());
            // Version 6, traffic class 0, flow label 0.
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&udp_len_field);
            out.extend_from_slice(&[IPPROTO_UDP, UNDERLAY_HOP_LIMIT]);
            out.extend_from_slice(&source.octets());
            out.extend_from_slice(&destination.octets());
            [&source.octets()[..], &destination.octets()[..]].concat()
        }
        _ => {
            out.clear();
            return false;
        }
    };
    let udp_start = out.len();
    out.extend_from_slice(&local.port().to_be_bytes());
    out.extend_from_slice(&endpoint.port().to_be_bytes());
    out.extend_from_slice(&udp_len_field);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(header);
    out.extend_from_slice(frame);
    let pseudo = checksum::pseudo_header_sum(&addresses, IPPROTO_UDP, udp_len);
    let sum = checksum::transport_checksum(&out[udp_start..], u32::from(pseudo));
    out[udp_start + 6..udp_start + 8].copy_from_slice(&sum.to_be_bytes());
    true
}

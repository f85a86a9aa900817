//! Captures that are not Ethernet: each packet is given an Ethernet header,
//! as `tcprewrite --dlt=enet` does, so that a switch can forward it.
//!
//! | link type | header replaced | EtherType from | source MAC |
//! | --- | --- | --- | --- |
//! | Linux cooked v1 (113) | 16 bytes | its protocol field | its address, if 6 bytes |
//! | Linux cooked v2 (276) | 20 bytes | its protocol field | its address, if 6 bytes |
//! | raw IP (101, and DLT_RAW's 12 and 14) | none | the IP version | [`SYNTHETIC_SOURCE`] |
//! | raw IPv4 (228), raw IPv6 (229) | none | the link type | [`SYNTHETIC_SOURCE`] |
//! | BSD loopback, NULL (0) and LOOP (108) | 4-byte address family | the family | [`SYNTHETIC_SOURCE`] |
//!
//! The destination is what the packet's own addresses say: broadcast for a
//! cooked packet marked broadcast and for IPv4's 255.255.255.255, the
//! multicast MAC of an IPv4 or IPv6 multicast group, and otherwise the
//! unicast [`SYNTHETIC_DESTINATION`]. Both made-up addresses are locally
//! administered (`02:...`), so they never clash with a real NIC's.
//!
//! A cooked packet whose protocol is 802.2 LLC or raw 802.3 becomes an 802.3
//! frame (a length instead of an EtherType). A packet that cannot be given a
//! header (shorter than its link header, an unknown address family or IP
//! version, or a cooked capture of something that is not a network frame,
//! such as netlink or CAN) is left out and counted by the reader; the file
//! is still good.

use super::frame::LINKTYPE_ETHERNET;
use crate::wire::ethernet::ethertype::{IPV4 as ETHERTYPE_IPV4, IPV6 as ETHERTYPE_IPV6};
use crate::wire::{ipv4, ipv6};

/// BSD loopback: a 4-byte address family in the capturing host's byte order.
pub const LINKTYPE_NULL: u32 = 0;
/// OpenBSD loopback: the family in network byte order.
pub const LINKTYPE_LOOP: u32 = 108;
/// Raw IP: the packet starts with the IP header.
pub const LINKTYPE_RAW: u32 = 101;
/// DLT_RAW as some systems number it in files (12; 14 on OpenBSD).
const DLT_RAW_12: u32 = 12;
const DLT_RAW_14: u32 = 14;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;
/// Linux cooked capture (`tcpdump -i any`), version 1 and 2.
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

/// The source MAC of a packet whose capture gives none.
pub const SYNTHETIC_SOURCE: [u8; 6] = [0x02, 0x54, 0x53, 0x00, 0x00, 0x01];
/// The destination MAC of a unicast packet (captures without Ethernet have
/// no destination MAC).
pub const SYNTHETIC_DESTINATION: [u8; 6] = [0x02, 0x54, 0x53, 0x00, 0x00, 0x02];

const BROADCAST: [u8; 6] = [0xff; 6];
/// Below this, a "type" field is an 802.3 length.
const MIN_ETHERTYPE: u16 = crate::wire::ethernet::ethertype::MIN;
/// The longest 802.3 payload a length field can give.
const MAX_8023_LEN: usize = 1500;

/// Cooked-capture protocol values that mean "an 802.3 frame without its MAC
/// header": raw 802.3 (Novell) and 802.2 LLC.
const SLL_PROTOCOL_8023: u16 = 0x0001;
const SLL_PROTOCOL_LLC: u16 = 0x0004;
/// The cooked packet type that says "sent to everyone".
const SLL_BROADCAST: u16 = 1;
/// ARPHRD_NETLINK: nlmon captures of kernel messages, not frames.
const ARPHRD_NETLINK: u16 = 824;

/// Whether a capture of this link type can be read: Ethernet as it is, the
/// others given an Ethernet header.
pub fn is_supported(linktype: u32) -> bool {
    matches!(
        linktype,
        LINKTYPE_ETHERNET
            | LINKTYPE_NULL
            | LINKTYPE_LOOP
            | LINKTYPE_RAW
            | DLT_RAW_12
            | DLT_RAW_14
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
            | LINKTYPE_LINUX_SLL
            | LINKTYPE_LINUX_SLL2
    )
}

/// A packet's link header, read: how long it is, what follows it, and the
/// addresses it gives.
struct LinkHeader {
    len: usize,
    ethertype: u16,
    source: Option<[u8; 6]>,
    broadcast: bool,
}

/// Writes `packet` (of `linktype`) as an Ethernet frame into `out`; returns
/// the length of the link header it replaced, or `None` if the packet
/// cannot be given one.
pub fn to_ethernet(linktype: u32, packet: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let header = match linktype {
        LINKTYPE_LINUX_SLL => cooked_v1(packet)?,
        LINKTYPE_LINUX_SLL2 => cooked_v2(packet)?,
        LINKTYPE_RAW | DLT_RAW_12 | DLT_RAW_14 => plain(0, ip_version(packet)?),
        LINKTYPE_IPV4 => plain(0, ETHERTYPE_IPV4),
        LINKTYPE_IPV6 => plain(0, ETHERTYPE_IPV6),
        LINKTYPE_NULL => plain(4, family(packet, false)?),
        LINKTYPE_LOOP => plain(4, family(packet, true)?),
        _ => return None,
    };
    let payload = packet.get(header.len..)?;
    let destination = if header.broadcast {
        BROADCAST
    } else {
        destination(header.ethertype, payload)
    };
    out.clear();
    out.reserve(14 + payload.len());
    out.extend_from_slice(&destination);
    out.extend_from_slice(&header.source.unwrap_or(SYNTHETIC_SOURCE));
    out.extend_from_slice(&header.ethertype.to_be_bytes());
    out.extend_from_slice(payload);
    Some(header.len)
}

fn plain(len: usize, ethertype: u16) -> LinkHeader {
    LinkHeader {
        len,
        ethertype,
        source: None,
        broadcast: false,
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Linux cooked v1: packet type, ARPHRD type, address length, 8 bytes of
/// address, protocol.
fn cooked_v1(p: &[u8]) -> Option<LinkHeader> {
    const LEN: usize = 16;
    if p.len() < LEN {
        return None;
    }
    let packet_type = be16(p, 0)?;
    let hatype = be16(p, 2)?;
    let addr_len = be16(p, 4)?;
    let protocol = be16(p, 14)?;
    cooked(LEN, p, packet_type, hatype, addr_len, &p[6..12], protocol)
}

/// Linux cooked v2: protocol, reserved, interface index, ARPHRD type,
/// packet type, address length, 8 bytes of address.
fn cooked_v2(p: &[u8]) -> Option<LinkHeader> {
    const LEN: usize = 20;
    if p.len() < LEN {
        return None;
    }
    let protocol = be16(p, 0)?;
    let hatype = be16(p, 8)?;
    let packet_type = u16::from(p[10]);
    let addr_len = u16::from(p[11]);
    cooked(LEN, p, packet_type, hatype, addr_len, &p[12..18], protocol)
}

fn cooked(
    len: usize,
    packet: &[u8],
    packet_type: u16,
    hatype: u16,
    addr_len: u16,
    address: &[u8],
    protocol: u16,
) -> Option<LinkHeader> {
    if hatype == ARPHRD_NETLINK {
        return None;
    }
    let ethertype = if protocol >= MIN_ETHERTYPE {
        protocol
    } else if matches!(protocol, SLL_PROTOCOL_8023 | SLL_PROTOCOL_LLC) {
        let payload = packet.len() - len;
        if payload > MAX_8023_LEN {
            return None;
        }
        payload as u16
    } else {
        return None;
    };
    let source = (addr_len == 6).then(|| address.try_into().expect("six bytes"));
    Some(LinkHeader {
        len,
        ethertype,
        source,
        broadcast: packet_type == SLL_BROADCAST,
    })
}

fn ip_version(packet: &[u8]) -> Option<u16> {
    match packet.first()? >> 4 {
        4 => Some(ETHERTYPE_IPV4),
        6 => Some(ETHERTYPE_IPV6),
        _ => None,
    }
}

/// The address family of a BSD loopback header. NULL's is in the byte
/// order of the machine that captured it, which need not be the file's: a
/// family is small, so a value with its low half zero was swapped.
fn family(p: &[u8], network_order: bool) -> Option<u16> {
    let raw: [u8; 4] = p.get(..4)?.try_into().ok()?;
    let value = if network_order {
        u32::from_be_bytes(raw)
    } else {
        let le = u32::from_le_bytes(raw);
        if le & 0xffff == 0 {
            le.swap_bytes()
        } else {
            le
        }
    };
    match value {
        2 => Some(ETHERTYPE_IPV4),
        // AF_INET6 on NetBSD/OpenBSD, FreeBSD, Darwin, and Linux.
        24 | 28 | 30 | 10 => Some(ETHERTYPE_IPV6),
        _ => None,
    }
}

/// The destination MAC an IP packet's destination address implies. A
/// capture may cut the packet short (its snap length), so only the fixed
/// header needs to be there.
fn destination(ethertype: u16, payload: &[u8]) -> [u8; 6] {
    match ethertype {
        ETHERTYPE_IPV4
            if payload.len() >= ipv4::MIN_HEADER_LEN
                && ipv4::Packet::new_unchecked(payload).version() == 4 =>
        {
            let dst = ipv4::Packet::new_unchecked(payload).dst_addr();
            if dst.is_broadcast() {
                BROADCAST
            } else if dst.is_multicast() {
                // RFC 1112: 01:00:5e and the group's low 23 bits.
                let o = dst.octets();
                [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
            } else {
                SYNTHETIC_DESTINATION
            }
        }
        ETHERTYPE_IPV6
            if payload.len() >= ipv6::HEADER_LEN
                && ipv6::Packet::new_unchecked(payload).version() == 6 =>
        {
            let dst = ipv6::Packet::new_unchecked(payload).dst_addr();
            if dst.is_multicast() {
                // RFC 2464: 33:33 and the group's low 32 bits.
                let o = dst.octets();
                [0x33, 0x33, o[12], o[13], o[14], o[15]]
            } else {
                SYNTHETIC_DESTINATION
            }
        }
        _ => SYNTHETIC_DESTINATION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1];
        p.extend_from_slice(&dst);
        p
    }

    fn ipv6(dst_first: u8, dst_last4: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 58, 64];
        p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let mut dst = [0u8; 16];
        dst[0] = dst_first;
        dst[12..].copy_from_slice(&dst_last4);
        p.extend_from_slice(&dst);
        p
    }

    fn convert(linktype: u32, packet: &[u8]) -> Option<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        to_ethernet(linktype, packet, &mut out).map(|len| (len, out))
    }

    #[test]
    fn raw_ip_gets_a_header_by_version_and_destination() {
        let packet = ipv4([10, 0, 0, 2]);
        let (len, frame) = convert(LINKTYPE_RAW, &packet).unwrap();
        assert_eq!(len, 0);
        assert_eq!(&frame[0..6], &SYNTHETIC_DESTINATION);
        assert_eq!(&frame[6..12], &SYNTHETIC_SOURCE);
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        assert_eq!(&frame[14..], &packet[..]);

        let (_, frame) = convert(LINKTYPE_RAW, &ipv4([239, 129, 2, 3])).unwrap();
        assert_eq!(&frame[0..6], &[0x01, 0x00, 0x5e, 0x01, 2, 3]);
        let (_, frame) = convert(LINKTYPE_IPV4, &ipv4([255; 4])).unwrap();
        assert_eq!(&frame[0..6], &BROADCAST);
        let (_, frame) = convert(LINKTYPE_IPV6, &ipv6(0xff, [0xff, 0, 0, 1])).unwrap();
        assert_eq!(&frame[0..6], &[0x33, 0x33, 0xff, 0, 0, 1]);
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        let (_, frame) = convert(DLT_RAW_12, &ipv6(0x20, [0, 0, 0, 1])).unwrap();
        assert_eq!(&frame[0..6], &SYNTHETIC_DESTINATION);

        assert_eq!(convert(LINKTYPE_RAW, &[0x50, 0, 0]), None, "IP version 5");
        assert_eq!(convert(LINKTYPE_RAW, &[]), None);
    }

    #[test]
    fn loopback_families_in_either_byte_order() {
        let packet = ipv4([10, 0, 0, 2]);
        for (linktype, family) in [
            (LINKTYPE_NULL, 2u32.to_le_bytes()),
            (LINKTYPE_NULL, 2u32.to_be_bytes()),
            (LINKTYPE_LOOP, 2u32.to_be_bytes()),
        ] {
            let (len, frame) = convert(linktype, &[&family[..], &packet].concat()).unwrap();
            assert_eq!(len, 4);
            assert_eq!(&frame[12..14], &[0x08, 0x00]);
            assert_eq!(&frame[14..], &packet[..]);
        }
        for family in [24u32, 28, 30] {
            let bytes = [&family.to_le_bytes()[..], &ipv6(0x20, [0; 4])].concat();
            assert_eq!(
                convert(LINKTYPE_NULL, &bytes).unwrap().1[12..14],
                [0x86, 0xdd]
            );
        }
        assert_eq!(convert(LINKTYPE_NULL, &[7, 0, 0, 0, 1]), None, "OSI");
        assert_eq!(convert(LINKTYPE_NULL, &[2, 0]), None, "too short");
    }

    #[test]
    fn cooked_captures_keep_their_source_address_and_protocol() {
        let packet = ipv4([10, 0, 0, 2]);
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        // v1: packet type 0 (to us), ARPHRD_ETHER, 6-byte address, IPv4.
        let mut v1 = vec![0, 0, 0, 1, 0, 6];
        v1.extend_from_slice(&mac);
        v1.extend_from_slice(&[0, 0, 0x08, 0x00]);
        v1.extend_from_slice(&packet);
        let (len, frame) = convert(LINKTYPE_LINUX_SLL, &v1).unwrap();
        assert_eq!(len, 16);
        assert_eq!(&frame[6..12], &mac);
        assert_eq!(&frame[0..6], &SYNTHETIC_DESTINATION);
        assert_eq!(&frame[14..], &packet[..]);
        // Broadcast packet type.
        v1[1] = 1;
        assert_eq!(
            &convert(LINKTYPE_LINUX_SLL, &v1).unwrap().1[0..6],
            &BROADCAST
        );
        // An address that is not six bytes: the made-up source.
        v1[5] = 0;
        assert_eq!(
            &convert(LINKTYPE_LINUX_SLL, &v1).unwrap().1[6..12],
            &SYNTHETIC_SOURCE
        );

        // v2: protocol ARP, ifindex 3, ARPHRD_ETHER, broadcast, 6-byte address.
        let arp = [0u8; 28];
        let mut v2 = vec![0x08, 0x06, 0, 0, 0, 0, 0, 3, 0, 1, 1, 6];
        v2.extend_from_slice(&mac);
        v2.extend_from_slice(&[0, 0]);
        v2.extend_from_slice(&arp);
        let (len, frame) = convert(LINKTYPE_LINUX_SLL2, &v2).unwrap();
        assert_eq!(len, 20);
        assert_eq!(&frame[0..6], &BROADCAST);
        assert_eq!(&frame[6..12], &mac);
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        assert_eq!(frame.len(), 14 + 28);

        // LLC: an 802.3 length instead of an EtherType.
        let mut llc = vec![0, 0, 0, 1, 0, 6];
        llc.extend_from_slice(&mac);
        llc.extend_from_slice(&[0, 0, 0x00, 0x04]);
        llc.extend_from_slice(&[0x42, 0x42, 0x03, 0, 0, 0]);
        assert_eq!(
            &convert(LINKTYPE_LINUX_SLL, &llc).unwrap().1[12..14],
            &[0, 6]
        );

        // Netlink, CAN, and runts are left out.
        let mut netlink = v1.clone();
        netlink[2..4].copy_from_slice(&ARPHRD_NETLINK.to_be_bytes());
        assert_eq!(convert(LINKTYPE_LINUX_SLL, &netlink), None);
        let mut can = v1.clone();
        can[14..16].copy_from_slice(&0x000cu16.to_be_bytes());
        assert_eq!(convert(LINKTYPE_LINUX_SLL, &can), None);
        assert_eq!(convert(LINKTYPE_LINUX_SLL, &v1[..15]), None);
        assert_eq!(convert(LINKTYPE_LINUX_SLL2, &v2[..19]), None);
    }

    #[test]
    fn hostile_packets_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = Vec::new();
        for _ in 0..20_000 {
            let len = (next() % 80) as usize;
            let mut packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Often a plausible start, so the deeper branches run too.
            if let Some(first) = packet.first_mut()
                && next() % 2 == 0
            {
                *first = if next() % 2 == 0 { 0x45 } else { 0x60 };
            }
            for linktype in [0, 12, 14, 101, 108, 113, 228, 229, 276] {
                if let Some(replaced) = to_ethernet(linktype, &packet, &mut out) {
                    assert_eq!(out.len(), 14 + packet.len() - replaced);
                }
            }
        }
    }

    #[test]
    fn supported_types() {
        for t in [0, 1, 12, 14, 101, 108, 113, 228, 229, 276] {
            assert!(is_supported(t), "{t}");
        }
        for t in [105, 127, 147, 2] {
            assert!(!is_supported(t), "{t}");
        }
    }
}

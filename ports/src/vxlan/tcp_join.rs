//! Joining on receive: consecutive IPv4 TCP segments of one flow, as the
//! tunnel decapsulates them from one batch, made into one TCP GSO
//! super-frame (`GSO_TCPV4`), the inverse of [`crate::vnet::segment`].
//!
//! The TCP counterpart of [`crate::coalesce`] (same shape: [`run_length`]
//! measures a run, [`merge`] writes it). A remote sender's 64 KiB burst
//! crosses the underlay as dozens of datagrams; handed to the switch one by
//! one, each costs a port write and a pass through the receiving
//! container's stack. Joined, the veth or TAP egress writes one frame, as
//! the kernel's GRO would have given the container (`tcp_gro_receive`).
//!
//! A port that takes offloads gets the super-frame; the others get it cut
//! again, and that must give back the segments that arrived, byte for
//! byte. So a segment joins a run only when (the checks of
//! `inet_gro_receive` and `tcp_gro_receive`, made strict):
//!
//! - its checksum verifies, or it is a partial one holding exactly the
//!   pseudo-header sum (a frame damaged on the way stays alone, and the
//!   receiver's stack drops it as it would have); the full sum is taken
//!   by [`merge`] over the data it has just copied, so each byte is read
//!   from the datagram once, and a segment that fails ends the run there;
//! - it is IPv4 without options or fragmentation, with a right header
//!   checksum, no Ethernet padding; its Ethernet header, TOS, flags, TTL
//!   and addresses equal the run's first segment's, and its IPv4 id is the
//!   first one's plus its place in the run (what segmentation writes);
//! - its ports, acknowledgement, window, header length and options equal
//!   the first one's; its flags are ACK, with PSH only on the last segment
//!   (segmentation keeps PSH on the last one only); no urgent data;
//! - its sequence number follows the previous segment's data;
//! - it carries data, as much as the first one, or less and then last;
//!   the run stays within one IP packet (64 KiB) and [`MAX_RUN`] segments.
//!
//! Anything else goes on as it came.

use crate::vnet::VnetHdr;
use crate::wire::checksum::{fold, ones_complement_sum, pseudo_header_sum};
use crate::wire::{ethernet, ip, ipv4, tcp};

/// The most segments in one super-frame (as for UDP runs).
pub const MAX_RUN: usize = crate::coalesce::MAX_RUN;

const ETH_LEN: usize = ethernet::HEADER_LEN;
/// Where the TCP header starts: right after a 20-byte IPv4 header.
const L4: usize = ETH_LEN + ipv4::MIN_HEADER_LEN;
/// The TCP checksum field, counted from the TCP header.
const TCP_CHECK: u16 = tcp::field::CHECKSUM.start as u16;

/// A segment that may join a run: checked once, compared field by field.
#[derive(Clone, Copy)]
struct Segment<'a> {
    frame: &'a [u8],
    /// Ethernet, IPv4 and TCP headers.
    headers: usize,
    payload: usize,
    /// Its checksum is a partial one (checked already).
    partial: bool,
}

impl<'a> Segment<'a> {
    fn parse(vnet: &VnetHdr, frame: &'a [u8]) -> Option<Self> {
        let partial = vnet.flags == VnetHdr::NEEDS_CSUM
            && !vnet.is_gso()
            && usize::from(vnet.csum_start) == L4
            && vnet.csum_offset == TCP_CHECK;
        if !vnet.is_plain() && !partial {
            return None;
        }
        let eth = ethernet::Frame::new_checked(frame).ok()?;
        if eth.ethertype() != ethernet::ethertype::IPV4 {
            return None;
        }
        let ip = ipv4::Packet::new_checked(eth.payload()).ok()?;
        if ip.header_len() != ipv4::MIN_HEADER_LEN
            || ip.protocol() != ip::TCP
            || ip.is_fragment()
            || !ip.verify_checksum()
            || ETH_LEN + usize::from(ip.total_len()) != frame.len()
        {
            return None;
        }
        let segment = ip.payload();
        let tcp = tcp::Packet::new_checked(segment).ok()?;
        let flags = tcp.flags() & !tcp::flags::PSH;
        if flags != tcp::flags::ACK || tcp.urgent() != 0 {
            return None;
        }
        let payload = segment.len() - tcp.header_len();
        if payload == 0 {
            return None;
        }
        // A partial checksum is checked here (cheap); a full one while
        // [`merge`] copies the data, so the bytes are read once.
        if partial && tcp.checksum() != pseudo_header_sum(ip.addresses(), ip::TCP, segment.len()) {
            return None;
        }
        Some(Segment {
            frame,
            headers: L4 + tcp.header_len(),
            payload,
            partial,
        })
    }

    fn ip(&self) -> ipv4::Packet<&'a [u8]> {
        ipv4::Packet::new_unchecked(&self.frame[ETH_LEN..L4])
    }

    fn tcp(&self) -> tcp::Packet<&'a [u8]> {
        tcp::Packet::new_unchecked(&self.frame[L4..])
    }

    /// Whether its full checksum verifies, given its data as copied out.
    fn verifies(&self, data: &[u8]) -> bool {
        let tcp_len = self.frame.len() - L4;
        let pseudo = pseudo_header_sum(self.ip().addresses(), ip::TCP, tcp_len);
        // The TCP header's length is a multiple of 4: the sums add up.
        let header = ones_complement_sum(&self.frame[L4..self.headers], u32::from(pseudo));
        fold(ones_complement_sum(data, header)) == 0xffff
    }

    fn pushes(&self) -> bool {
        self.tcp().flags() & tcp::flags::PSH != 0
    }

    /// Whether `self` can be segment number `place` of the run that
    /// `first` begins, right after `previous`.
    fn follows(&self, first: &Segment<'_>, previous: &Segment<'_>, place: usize) -> bool {
        let (a, b) = (first.ip(), self.ip());
        let same_ip = self.frame[..ETH_LEN] == first.frame[..ETH_LEN]
            && a.dscp_ecn() == b.dscp_ecn()
            && a.flags_and_offset() == b.flags_and_offset()
            && a.ttl() == b.ttl()
            && a.addresses() == b.addresses()
            && b.ident() == a.ident().wrapping_add(place as u16);
        let (a, b) = (first.tcp(), self.tcp());
        same_ip
            && self.headers == first.headers
            && self.payload <= first.payload
            && a.src_port() == b.src_port()
            && a.dst_port() == b.dst_port()
            && a.ack_number() == b.ack_number()
            && a.window() == b.window()
            && a.options() == b.options()
            && b.seq_number()
                == previous
                    .tcp()
                    .seq_number()
                    .wrapping_add(previous.payload as u32)
    }
}

/// How many of the leading `frames` make one run: 1 when the first cannot
/// be joined with the second (or there is no second).
pub fn run_length(frames: &[(VnetHdr, &[u8])]) -> usize {
    let Some(first) = frames
        .first()
        .and_then(|(vnet, frame)| Segment::parse(vnet, frame))
    else {
        return 1;
    };
    if first.pushes() {
        return 1;
    }
    let max_payload = usize::from(u16::MAX) - (first.headers - ETH_LEN);
    let mut total = first.payload;
    let mut run = 1;
    let mut previous = first;
    for (vnet, frame) in frames.iter().skip(1).take(MAX_RUN - 1) {
        let Some(next) = Segment::parse(vnet, frame) else {
            break;
        };
        total += next.payload;
        if total > max_payload || !next.follows(&first, &previous, run) {
            break;
        }
        run += 1;
        if next.payload < first.payload || next.pushes() {
            break; // a shorter or pushed segment ends the run
        }
        previous = next;
    }
    run
}

/// A run written as one super-frame by [`merge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    pub vnet: VnetHdr,
    /// How many of the run's segments it holds.
    pub segments: usize,
    /// Its length in bytes.
    pub len: usize,
}

/// Writes the super-frame of a run (as measured by [`run_length`]) into
/// `out`, checking each segment's checksum as its data is copied: the run
/// ends before the first segment that fails, or the first that does not
/// fit `out`. `None` when fewer than two segments join that way: then the
/// first goes on alone, as it came.
pub fn merge(run: &[(VnetHdr, &[u8])], out: &mut [u8]) -> Option<Joined> {
    let segments: Vec<Segment<'_>> = run
        .iter()
        .map_while(|(vnet, frame)| Segment::parse(vnet, frame))
        .collect();
    let first = segments.first()?;
    let headers = first.headers;
    let mut at = headers;
    let mut joined = 0;
    for segment in &segments {
        let data = &segment.frame[headers..];
        let Some(into) = out.get_mut(at..at + data.len()) else {
            break;
        };
        into.copy_from_slice(data);
        if !segment.partial && !segment.verifies(into) {
            break;
        }
        at += data.len();
        joined += 1;
    }
    if joined < 2 {
        return None;
    }
    out[..headers].copy_from_slice(&first.frame[..headers]);
    let merged = &mut out[..at];
    let tcp_len = merged.len() - L4;
    let mut ip = ipv4::Packet::new_unchecked(&mut merged[ETH_LEN..]);
    ip.set_total_len((ipv4::MIN_HEADER_LEN + tcp_len) as u16);
    ip.fill_checksum();
    // NEEDS_CSUM: the field holds the pseudo-header sum over the whole
    // run, as a sender's stack leaves it for a super-frame.
    let pseudo = pseudo_header_sum(&merged[ETH_LEN..][ipv4::field::ADDRESSES], ip::TCP, tcp_len);
    let last_flags = segments[joined - 1].tcp().flags();
    let mut tcp = tcp::Packet::new_unchecked(&mut merged[L4..]);
    tcp.set_flags(last_flags);
    tcp.set_checksum(pseudo);
    Some(Joined {
        vnet: VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: headers as u16,
            gso_size: first.payload as u16,
            csum_start: L4 as u16,
            csum_offset: TCP_CHECK,
        },
        segments: joined,
        len: at,
    })
}

#[cfg(test)]
#[path = "tcp_join_tests.rs"]
mod tests;

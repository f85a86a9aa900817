//! A super-frame cut into VXLAN datagrams, back to back in one buffer, so
//! each `UDP_SEGMENT` send hands the kernel one piece.
//!
//! Gathering instead (each datagram's headers written here, its payload
//! referenced in the frame, two iovecs per datagram) saves the copy but
//! costs the kernel more than the copy did: measured, not taken (see
//! docs/PERFORMANCE.md, "receive in runs").
//!
//! An IPv4 TCP super-frame (a container's TSO burst, the common case) is
//! cut here, each segment written once, straight into its datagram, and
//! its checksum taken over the bytes just written; other GSO frames go
//! through [`crate::vnet::segment`] (a copy into a scratch segment, then
//! into the datagram). The segments are the same either way (tested).
//!
//! For a datagram to another tapswitch switch the TCP checksum can be left
//! partial ([`Checksums::Partial`]): the outer UDP checksum covers every
//! byte of the inner frame on the way, and the receiving tunnel hands the
//! frame on with `NEEDS_CSUM` (see `remotes.rs`, "Switches and peers").

use std::io::IoSlice;
use std::ops::Range;

use crate::vnet::{MAX_SEGMENTS, OffloadError, VnetHdr};
use crate::wire::checksum::{pseudo_header_sum, transport_checksum};
use crate::wire::{ethernet, ip, ipv4, tcp};

/// What a cut TCP segment's checksum field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checksums {
    /// The whole checksum, as on a wire: for peers (kernel vxlan devices),
    /// which check it or hand it on as verified.
    Full,
    /// The pseudo-header sum only, as a stack leaves it for the NIC
    /// (`CHECKSUM_PARTIAL`): for switches, whose receiving tunnel flags it.
    Partial,
}

/// The datagrams of one cut super-frame.
#[derive(Debug, Default)]
pub(super) struct Cut {
    /// The datagrams, back to back.
    datagrams: Vec<u8>,
    /// Their lengths, for [`super::socket`]'s runs.
    lengths: Vec<usize>,
    /// `vnet::segment`'s own.
    scratch: Vec<u8>,
}

impl Cut {
    /// Cuts `frame` as `vnet` says, each segment behind `vxlan_header`;
    /// IPv4 TCP segments get the `checksums` asked for (other protocols a
    /// full checksum).
    pub(super) fn cut(
        &mut self,
        vxlan_header: &[u8],
        vnet: &VnetHdr,
        frame: &[u8],
        checksums: Checksums,
    ) -> Result<(), OffloadError> {
        self.datagrams.clear();
        self.lengths.clear();
        if let Some(plan) = TcpPlan::new(vnet, frame) {
            self.cut_tcpv4(vxlan_header, &plan, frame, checksums);
            return Ok(());
        }
        let Cut {
            datagrams,
            lengths,
            scratch,
        } = self;
        let mut emit = |segment: &[u8]| {
            datagrams.extend_from_slice(vxlan_header);
            datagrams.extend_from_slice(segment);
            lengths.push(vxlan_header.len() + segment.len());
        };
        crate::vnet::segment(vnet, frame, scratch, &mut emit).map(drop)
    }

    /// Writes each segment of a checked IPv4 TCP super-frame once, into
    /// its datagram, and fixes its headers there (what
    /// `vnet::segment` does for TSO).
    fn cut_tcpv4(
        &mut self,
        vxlan_header: &[u8],
        plan: &TcpPlan,
        frame: &[u8],
        checksums: Checksums,
    ) {
        let TcpPlan {
            headers,
            size,
            count,
        } = *plan;
        let body = &frame[headers..];
        self.datagrams
            .reserve(count * (vxlan_header.len() + headers) + body.len());
        let ip = ipv4::Packet::new_unchecked(&frame[ETH_LEN..]);
        let (ident, addresses) = (ip.ident(), ip.addresses());
        let first = tcp::Packet::new_unchecked(&frame[L4..]);
        let (seq, flags) = (first.seq_number(), first.flags());
        for index in 0..count {
            let offset = index * size;
            let data = &body[offset..(offset + size).min(body.len())];
            let start = self.datagrams.len();
            self.datagrams.extend_from_slice(vxlan_header);
            self.datagrams.extend_from_slice(&frame[..headers]);
            self.datagrams.extend_from_slice(data);
            let segment = &mut self.datagrams[start + vxlan_header.len()..];
            let tcp_len = segment.len() - L4;
            let mut ip = ipv4::Packet::new_unchecked(&mut segment[ETH_LEN..]);
            ip.set_total_len((ipv4::MIN_HEADER_LEN + tcp_len) as u16);
            // Linux gives each segment the next id (inet_gso_segment).
            ip.set_ident(ident.wrapping_add(index as u16));
            ip.fill_checksum();
            let mut tcp = tcp::Packet::new_unchecked(&mut segment[L4..]);
            tcp.set_seq_number(seq.wrapping_add(offset as u32));
            // tcp_gso_segment: FIN and PSH end the data, so only the last
            // segment keeps them; CWR answers ECE once, on the first.
            let mut segment_flags = flags;
            if index + 1 < count {
                segment_flags &= !(tcp::flags::FIN | tcp::flags::PSH);
            }
            if index > 0 {
                segment_flags &= !tcp::flags::CWR;
            }
            tcp.set_flags(segment_flags);
            let pseudo = pseudo_header_sum(addresses, ip::TCP, tcp_len);
            tcp.set_checksum(pseudo);
            if checksums == Checksums::Full {
                // Over the bytes just written, still in the cache; the
                // field's pseudo-header sum counts as the initial sum.
                let sum = transport_checksum(&segment[L4..], 0);
                tcp::Packet::new_unchecked(&mut segment[L4..]).set_checksum(sum);
            }
            self.lengths.push(self.datagrams.len() - start);
        }
    }

    pub(super) fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// The datagrams `which`, in order, as one piece for one send.
    pub(super) fn parts(&self, which: Range<usize>) -> [IoSlice<'_>; 1] {
        let start: usize = self.lengths[..which.start].iter().sum();
        let len: usize = self.lengths[which].iter().sum();
        [IoSlice::new(&self.datagrams[start..start + len])]
    }
}

const ETH_LEN: usize = ethernet::HEADER_LEN;
/// Where the TCP header starts: after a 20-byte IPv4 header.
const L4: usize = ETH_LEN + ipv4::MIN_HEADER_LEN;

/// An IPv4 TCP super-frame checked for [`Cut::cut_tcpv4`]: every offset
/// it touches is inside the frame.
#[derive(Debug, Clone, Copy)]
struct TcpPlan {
    /// Ethernet, IPv4 and TCP headers: what every segment repeats.
    headers: usize,
    /// Payload bytes per segment.
    size: usize,
    count: usize,
}

impl TcpPlan {
    /// `None` for anything but a well-formed IPv4 TCP super-frame without
    /// IP options or VLAN tag: those go the general way, which says what
    /// is wrong with a malformed one.
    fn new(vnet: &VnetHdr, frame: &[u8]) -> Option<TcpPlan> {
        if vnet.gso_type & !VnetHdr::GSO_ECN != VnetHdr::GSO_TCPV4 || vnet.gso_size == 0 {
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
            || ETH_LEN + usize::from(ip.total_len()) != frame.len()
        {
            return None;
        }
        let tcp = tcp::Packet::new_checked(ip.payload()).ok()?;
        let checksum_at = (L4, tcp::field::CHECKSUM.start);
        if vnet.flags & VnetHdr::NEEDS_CSUM != 0
            && (usize::from(vnet.csum_start), usize::from(vnet.csum_offset)) != checksum_at
        {
            return None;
        }
        let headers = L4 + tcp.header_len();
        let size = usize::from(vnet.gso_size);
        let count = (frame.len() - headers).div_ceil(size).max(1);
        (count <= MAX_SEGMENTS).then_some(TcpPlan {
            headers,
            size,
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp;

    const HEADER: [u8; 8] = [8, 0, 0, 0, 0, 0, 0x10, 0];

    /// The segments `vnet::segment` makes, each behind the header.
    fn expected(vnet: &VnetHdr, frame: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        crate::vnet::segment(vnet, frame, &mut Vec::new(), &mut |s| {
            out.push([&HEADER[..], s].concat())
        })
        .unwrap();
        out
    }

    /// The datagrams as the kernel cuts a send of all of them.
    fn sent(cut: &Cut) -> Vec<Vec<u8>> {
        let [all] = cut.parts(0..cut.lengths().len());
        let mut at = 0;
        let mut out = Vec::new();
        for &len in cut.lengths() {
            out.push(all[at..at + len].to_vec());
            at += len;
        }
        assert_eq!(at, all.len());
        out
    }

    #[test]
    fn a_tcp_super_frame_is_cut_into_datagrams_back_to_back() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let (vnet, frame) = crate::vxlan::tests::container_tso(&payload, 1400);
        let mut cut = Cut::default();
        cut.cut(&HEADER, &vnet, &frame, Checksums::Full).unwrap();
        assert_eq!(sent(&cut), expected(&vnet, &frame));
        assert_eq!(cut.lengths(), &[8 + 1454, 8 + 1454, 8 + 1454, 8 + 854]);
        // A later run starts where the earlier ones end.
        let [tail] = cut.parts(2..4);
        assert_eq!(tail.len(), 8 + 1454 + 8 + 854);
        assert_eq!(&tail[..8], &HEADER);
        // Cut again: nothing of the first frame is left.
        let mut shorter = vnet;
        shorter.gso_size = 2500;
        cut.cut(&HEADER, &shorter, &frame, Checksums::Full).unwrap();
        assert_eq!(sent(&cut), expected(&shorter, &frame));
    }

    #[test]
    fn the_flags_ids_and_sequence_numbers_are_those_segmentation_writes() {
        let payload: Vec<u8> = (0..4500u32).map(|i| (i * 7 % 256) as u8).collect();
        let (vnet, mut frame) = crate::vxlan::tests::container_tso(&payload, 1000);
        // PSH, FIN and CWR set: only the last keeps PSH and FIN, only the
        // first CWR; an odd last segment.
        frame[14 + 20 + 13] |= tcp::flags::PSH | tcp::flags::FIN | tcp::flags::CWR;
        frame[14 + 4..14 + 6].copy_from_slice(&0xfffeu16.to_be_bytes());
        let mut cut = Cut::default();
        cut.cut(&HEADER, &vnet, &frame, Checksums::Full).unwrap();
        assert_eq!(sent(&cut), expected(&vnet, &frame));
        assert_eq!(cut.lengths().len(), 5);
    }

    #[test]
    fn for_a_switch_the_checksums_are_left_partial_and_complete_to_the_full_ones() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
        let (vnet, frame) = crate::vxlan::tests::container_tso(&payload, 1400);
        let mut cut = Cut::default();
        cut.cut(&HEADER, &vnet, &frame, Checksums::Partial).unwrap();
        let full = expected(&vnet, &frame);
        let partial = sent(&cut);
        assert_eq!(partial.len(), full.len());
        for (partial, full) in partial.iter().zip(&full) {
            let segment = &partial[8..];
            let field = 14 + 20 + 16;
            let pseudo = pseudo_header_sum(&segment[26..34], ip::TCP, segment.len() - 34);
            assert_eq!(segment[field..field + 2], pseudo.to_be_bytes());
            assert_ne!(partial, full);
            let mut completed = segment.to_vec();
            let mut flagged = VnetHdr {
                flags: VnetHdr::NEEDS_CSUM,
                csum_start: 34,
                csum_offset: 16,
                ..VnetHdr::default()
            };
            crate::vnet::complete_checksum(&mut flagged, &mut completed).unwrap();
            assert_eq!(completed, full[8..]);
        }
    }

    #[test]
    fn other_super_frames_are_cut_the_general_way() {
        // UDP (GSO_UDP_L4): partial is asked for, full checksums are given.
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 50, 0, 2], [10, 50, 0, 3], 64)
            .udp(40_000, 5_000);
        let mut frame = Vec::new();
        builder.write(&mut frame, &[0x5a; 300]).unwrap();
        let vnet = VnetHdr {
            gso_type: VnetHdr::GSO_UDP_L4,
            gso_size: 100,
            ..VnetHdr::default()
        };
        let mut cut = Cut::default();
        cut.cut(&HEADER, &vnet, &frame, Checksums::Partial).unwrap();
        assert_eq!(sent(&cut), expected(&vnet, &frame));
        assert_eq!(cut.lengths().len(), 3);
    }

    #[test]
    fn a_malformed_super_frame_is_refused() {
        let vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1400,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut cut = Cut::default();
        assert!(
            cut.cut(&HEADER, &vnet, &[0u8; 40], Checksums::Full)
                .is_err()
        );
        // TCP with a data offset below 5: refused too, not cut here.
        let (vnet, mut frame) = crate::vxlan::tests::container_tso(&[7; 3000], 1400);
        frame[14 + 20 + 12] = 0x40;
        assert!(cut.cut(&HEADER, &vnet, &frame, Checksums::Partial).is_err());
    }
}

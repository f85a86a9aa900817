//! A super-frame cut into VXLAN datagrams without copying its data twice.
//!
//! [`crate::vnet::segment`] writes each segment whole into a scratch
//! buffer: the frame's headers (fixed for the segment: sequence number,
//! lengths, checksums) and the next piece of the body, unchanged. So a
//! datagram is sent as two pieces: a head kept here (the VXLAN header and
//! the segment's headers) and its payload referenced in the frame itself;
//! the kernel gathers them (`sendmsg` with an iovec per piece). Where the
//! body starts cannot be told from the offload header (no partial
//! checksum, or UDP fragmentation), or the piece is short, the whole
//! segment is kept as the head.

use std::io::IoSlice;
use std::ops::Range;

use crate::vnet::{OffloadError, VnetHdr};
use crate::wire::{tcp, udp};

/// A payload shorter than this is copied with its head: gathering one
/// more piece costs the kernel about what copying a few hundred bytes
/// costs here (64-byte UDP datagrams would be two pieces each).
const MIN_REFERENCED: usize = 512;

/// The datagrams of one cut super-frame.
#[derive(Debug, Default)]
pub(super) struct Cut {
    /// The heads, back to back.
    heads: Vec<u8>,
    datagrams: Vec<Datagram>,
    /// Their lengths, for [`super::socket`]'s runs.
    lengths: Vec<usize>,
    /// `vnet::segment`'s own.
    scratch: Vec<u8>,
}

/// One datagram: its head in [`Cut::heads`], then its payload in the frame.
#[derive(Debug, Clone)]
struct Datagram {
    head: Range<usize>,
    payload: Range<usize>,
}

impl Cut {
    /// Cuts `frame` as `vnet` says, each segment behind `vxlan_header`.
    pub(super) fn cut(
        &mut self,
        vxlan_header: &[u8],
        vnet: &VnetHdr,
        frame: &[u8],
    ) -> Result<(), OffloadError> {
        let Cut {
            heads,
            datagrams,
            lengths,
            scratch,
        } = self;
        heads.clear();
        datagrams.clear();
        lengths.clear();
        let body_start = body_start(vnet, frame);
        // Where the next segment's piece of the body is in the frame.
        let mut next = body_start.unwrap_or(0);
        let mut emit = |segment: &[u8]| {
            let head_start = heads.len();
            heads.extend_from_slice(vxlan_header);
            let headers = match body_start {
                Some(headers) if segment.len() >= headers => headers,
                _ => segment.len(),
            };
            let piece = segment.len() - headers;
            let payload = next..next + piece;
            next += piece;
            // `segment` cuts the body unchanged, piece after piece (checked
            // in debug builds only: a comparison would read it all again).
            let referenced = piece >= MIN_REFERENCED && payload.end <= frame.len();
            debug_assert!(!referenced || frame[payload.clone()] == segment[headers..]);
            let (headers, payload) = if referenced {
                (headers, payload)
            } else {
                (segment.len(), 0..0)
            };
            heads.extend_from_slice(&segment[..headers]);
            lengths.push(heads.len() - head_start + payload.len());
            datagrams.push(Datagram {
                head: head_start..heads.len(),
                payload,
            });
        };
        crate::vnet::segment(vnet, frame, scratch, &mut emit).map(drop)
    }

    pub(super) fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// The pieces of the datagrams `which`, in order, for one send; heads
    /// of datagrams kept whole, back to back, go as one piece.
    pub(super) fn parts<'a>(&'a self, frame: &'a [u8], which: Range<usize>) -> Vec<IoSlice<'a>> {
        let mut parts = Vec::with_capacity(2 * which.len());
        // Heads not handed out yet (they lie back to back in `heads`).
        let mut heads: Option<Range<usize>> = None;
        for datagram in &self.datagrams[which] {
            let head = match heads.take() {
                Some(before) => before.start..datagram.head.end,
                None => datagram.head.clone(),
            };
            if datagram.payload.is_empty() {
                heads = Some(head);
            } else {
                parts.push(IoSlice::new(&self.heads[head]));
                parts.push(IoSlice::new(&frame[datagram.payload.clone()]));
            }
        }
        if let Some(head) = heads {
            parts.push(IoSlice::new(&self.heads[head]));
        }
        parts
    }
}

/// Where the body of a GSO frame starts, as `vnet::segment` cuts it: after
/// the transport header, which a partial checksum locates; `None` when the
/// header does not say (the segments are then kept whole).
fn body_start(vnet: &VnetHdr, frame: &[u8]) -> Option<usize> {
    if vnet.flags & VnetHdr::NEEDS_CSUM == 0 {
        return None;
    }
    let l4 = usize::from(vnet.csum_start);
    let transport = match vnet.gso_type & !VnetHdr::GSO_ECN {
        VnetHdr::GSO_TCPV4 | VnetHdr::GSO_TCPV6 => tcp::Packet::new_checked(frame.get(l4..)?)
            .ok()?
            .header_len(),
        VnetHdr::GSO_UDP_L4 => udp::HEADER_LEN,
        _ => return None,
    };
    Some(l4 + transport).filter(|start| *start <= frame.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4;

    const HEADER: [u8; 8] = [8, 0, 0, 0, 0, 0, 0x10, 0];

    /// The datagrams as the copying cut made them: the header, then the
    /// whole segment.
    fn copied(vnet: &VnetHdr, frame: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        crate::vnet::segment(vnet, frame, &mut Vec::new(), &mut |s| {
            out.push([&HEADER[..], s].concat())
        })
        .unwrap();
        out
    }

    /// The datagrams as the kernel gathers them from the parts.
    fn gathered(cut: &Cut, frame: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (at, &len) in cut.lengths().iter().enumerate() {
            let mut datagram = Vec::new();
            for part in cut.parts(frame, at..at + 1) {
                datagram.extend_from_slice(&part);
            }
            assert_eq!(datagram.len(), len);
            out.push(datagram);
        }
        out
    }

    fn tcp_super_frame(vlan: bool) -> (VnetHdr, Vec<u8>) {
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 50, 0, 2], [10, 50, 0, 3], 64)
            .tcp(40_000, 5_001, 1, 65_000)
            .ack(9)
            .psh();
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut frame = Vec::new();
        builder.write(&mut frame, &payload).unwrap();
        if vlan {
            frame.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        }
        let l4 = if vlan { 38 } else { 34 };
        let pseudo =
            crate::wire::checksum::pseudo_header_sum(&frame[l4 - 8..l4], 6, frame.len() - l4);
        frame[l4 + 16..l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
        let vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: (l4 + 20) as u16,
            gso_size: 1400,
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        (vnet, frame)
    }

    #[test]
    fn tcp_segments_reference_the_frames_data_and_match_the_copying_cut() {
        for vlan in [false, true] {
            let (vnet, frame) = tcp_super_frame(vlan);
            let mut cut = Cut::default();
            cut.cut(&HEADER, &vnet, &frame).unwrap();
            assert_eq!(gathered(&cut, &frame), copied(&vnet, &frame), "vlan {vlan}");
            // Only the heads were copied: header and 54 (or 58) bytes each.
            let l4 = usize::from(vnet.csum_start);
            assert_eq!(cut.heads.len(), 4 * (8 + l4 + 20));
            assert_eq!(cut.lengths().len(), 4);
            // Two pieces per datagram, in one send.
            assert_eq!(cut.parts(&frame, 0..4).len(), 8);
        }
    }

    #[test]
    fn udp_segments_reference_the_frames_data_and_match_the_copying_cut() {
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 50, 0, 2], [10, 50, 0, 3], 64)
            .udp(40_000, 5_000);
        let mut frame = Vec::new();
        builder.write(&mut frame, &[7u8; 5 * 100 + 30]).unwrap();
        let pseudo = crate::wire::checksum::pseudo_header_sum(&frame[26..34], 17, frame.len() - 34);
        frame[40..42].copy_from_slice(&pseudo.to_be_bytes());
        let mut vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            gso_type: VnetHdr::GSO_UDP_L4,
            hdr_len: 42,
            gso_size: 100,
            csum_start: 34,
            csum_offset: 6,
        };
        let mut cut = Cut::default();
        cut.cut(&HEADER, &vnet, &frame).unwrap();
        let copied = copied(&vnet, &frame);
        assert_eq!(gathered(&cut, &frame), copied);
        // 100-byte pieces are short: every datagram kept whole, and the
        // six go in one piece.
        let whole: usize = copied.iter().map(Vec::len).sum();
        assert_eq!(cut.heads.len(), whole);
        assert_eq!(cut.parts(&frame, 0..6).len(), 1);
        // 600-byte pieces are referenced, the short last one is not.
        vnet.gso_size = 600;
        frame.truncate(42);
        frame.extend_from_slice(&[3u8; 2 * 600 + 30]);
        let len = (frame.len() - 14) as u16;
        frame[16..18].copy_from_slice(&len.to_be_bytes());
        ipv4::Packet::new_unchecked(&mut frame[14..]).fill_checksum();
        let udp_len = (frame.len() - 34) as u16;
        frame[38..40].copy_from_slice(&udp_len.to_be_bytes());
        let pseudo = crate::wire::checksum::pseudo_header_sum(&frame[26..34], 17, frame.len() - 34);
        frame[40..42].copy_from_slice(&pseudo.to_be_bytes());
        cut.cut(&HEADER, &vnet, &frame).unwrap();
        assert_eq!(gathered(&cut, &frame), self::copied(&vnet, &frame));
        assert_eq!(cut.heads.len(), 2 * (8 + 42) + 8 + 42 + 30);
        assert_eq!(cut.parts(&frame, 0..3).len(), 5);
    }

    #[test]
    fn where_the_body_start_is_not_known_segments_are_kept_whole() {
        let (mut vnet, frame) = tcp_super_frame(false);
        // A checksum offset that disagrees with the headers: refused.
        vnet.csum_start += 1;
        let mut cut = Cut::default();
        assert!(cut.cut(&HEADER, &vnet, &frame).is_err());
        // UDP fragmentation: no transport header in the later fragments.
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 50, 0, 2], [10, 50, 0, 3], 64)
            .udp(40_000, 5_000);
        let mut frame = Vec::new();
        builder.write(&mut frame, &[9u8; 3000]).unwrap();
        let vnet = VnetHdr {
            gso_type: VnetHdr::GSO_UDP,
            gso_size: 1400,
            hdr_len: 42,
            ..VnetHdr::default()
        };
        cut.cut(&HEADER, &vnet, &frame).unwrap();
        let copied = copied(&vnet, &frame);
        assert_eq!(gathered(&cut, &frame), copied);
        let whole: usize = copied.iter().map(Vec::len).sum();
        assert_eq!(cut.heads.len(), whole, "every fragment kept whole");
    }
}

//! A super-frame cut into VXLAN datagrams, back to back in one buffer, so
//! each `UDP_SEGMENT` send hands the kernel one piece.
//!
//! Gathering instead (each datagram's headers written here, its payload
//! referenced in the frame, two iovecs per datagram) saves the copy but
//! costs the kernel more than the copy did: measured, not taken (see
//! docs/PERFORMANCE.md, "receive in runs").

use std::io::IoSlice;
use std::ops::Range;

use crate::vnet::{OffloadError, VnetHdr};

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
    /// Cuts `frame` as `vnet` says, each segment behind `vxlan_header`.
    pub(super) fn cut(
        &mut self,
        vxlan_header: &[u8],
        vnet: &VnetHdr,
        frame: &[u8],
    ) -> Result<(), OffloadError> {
        let Cut {
            datagrams,
            lengths,
            scratch,
        } = self;
        datagrams.clear();
        lengths.clear();
        let mut emit = |segment: &[u8]| {
            datagrams.extend_from_slice(vxlan_header);
            datagrams.extend_from_slice(segment);
            lengths.push(vxlan_header.len() + segment.len());
        };
        crate::vnet::segment(vnet, frame, scratch, &mut emit).map(drop)
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

#[cfg(test)]
mod tests {
    use super::*;

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
        cut.cut(&HEADER, &vnet, &frame).unwrap();
        assert_eq!(sent(&cut), expected(&vnet, &frame));
        assert_eq!(cut.lengths(), &[8 + 1454, 8 + 1454, 8 + 1454, 8 + 854]);
        // A later run starts where the earlier ones end.
        let [tail] = cut.parts(2..4);
        assert_eq!(tail.len(), 8 + 1454 + 8 + 854);
        assert_eq!(&tail[..8], &HEADER);
        // Cut again: nothing of the first frame is left.
        let mut shorter = vnet;
        shorter.gso_size = 2500;
        cut.cut(&HEADER, &shorter, &frame).unwrap();
        assert_eq!(sent(&cut), expected(&shorter, &frame));
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
        assert!(cut.cut(&HEADER, &vnet, &[0u8; 40]).is_err());
    }
}

//! The virtio-net header (`struct virtio_net_hdr`, include/uapi/linux/virtio_net.h),
//! and what to do for a port that cannot take it.
//!
//! With `PACKET_VNET_HDR` on a packet socket, or `IFF_VNET_HDR` on a TAP,
//! every frame read or written is preceded by these 10 bytes. They say
//! whether the frame's L4 checksum still has to be completed
//! (`NEEDS_CSUM`: the checksum field holds only the pseudo-header sum) and
//! whether the frame is a GSO super-frame to be cut into `gso_size`-byte
//! segments. Passing the header along lets a 64 KiB TCP super-frame cross
//! the switch as one frame instead of 45, which is where a userspace switch
//! gets its speed.
//!
//! Fields are in native byte order (the kernel's `virtio_legacy_is_little_endian`
//! on x86 and arm64).
//!
//! # Ports without the header
//!
//! A plain TAP, the gateway and a pcap file need wire frames.
//! [`complete_checksum`] finishes a partial checksum in place, and
//! [`segment`] does in software what the kernel's GSO does
//! (`tcp_gso_segment`, `__udp_gso_segment`, `inet_gso_segment`,
//! `ipv6_gso_segment`): one frame per `gso_size` bytes of payload, each with
//! its own lengths, IPv4 id, TCP sequence number and flags, and checksums.
//!
//! Frames come from containers, so every byte is hostile. The headers are
//! found by parsing the frame, never from `hdr_len`: packet sockets fill it
//! with `skb_headlen()`, which may include payload, and a sender may put
//! anything there. Everything is checked before the first segment goes out,
//! so a bad frame yields an [`OffloadError`] and no segments at all.
//!
//! Not supported (each an [`OffloadError`]): UFO (`GSO_UDP`) over IPv6,
//! which needs a fragment id the header does not carry; IPv6 routing headers
//! with segments left (the pseudo-header would need the final destination);
//! IPv4 "BIG TCP" frames over 64 KiB and IPv6 jumbograms; tunnels (the
//! 12-byte and larger headers with `GSO_UDP_TUNNEL` are never negotiated).
//!
//! Files: this one holds the header; `layers` finds a frame's headers
//! through the [`crate::wire`] views; `checksum` completes a partial
//! checksum; `segment` plans and cuts GSO frames.

mod checksum;
mod layers;
mod segment;
#[cfg(test)]
mod tests;

pub use crate::wire::checksum::{fold, ones_complement_sum, rfc1071_checksum};
pub use checksum::complete_checksum;
pub use segment::segment;

/// The 10-byte virtio-net header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers (Ethernet + IP + TCP/UDP) of a GSO frame.
    pub hdr_len: u16,
    /// Payload bytes per segment of a GSO frame.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header), with `NEEDS_CSUM`.
    pub csum_start: u16,
    /// Where the checksum field is, counted from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    pub const LEN: usize = 10;

    /// The L4 checksum must be completed: the field holds the pseudo-header sum.
    pub const NEEDS_CSUM: u8 = 1;
    /// The checksum was already verified (receive side only).
    pub const DATA_VALID: u8 = 2;

    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    pub const GSO_UDP: u8 = 3;
    pub const GSO_TCPV6: u8 = 4;
    pub const GSO_UDP_L4: u8 = 5;
    /// The TCP super-frame carried ECN CWR: only the first segment keeps it.
    pub const GSO_ECN: u8 = 0x80;

    /// No checksum to complete and nothing to segment: the frame is as it
    /// would be on the wire.
    pub fn is_plain(&self) -> bool {
        // Written with is_gso so the two can never disagree: a lone ECN bit
        // (gso_type 0x80) is no GSO, and a frame that is neither plain nor
        // GSO would have nowhere to go.
        self.flags & Self::NEEDS_CSUM == 0 && !self.is_gso()
    }

    pub fn is_gso(&self) -> bool {
        self.gso_type & !Self::GSO_ECN != Self::GSO_NONE
    }

    pub fn from_bytes(b: &[u8; Self::LEN]) -> Self {
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// Moves the header offsets by `delta` bytes, for a VLAN tag put into
    /// (+4) or taken out of (-4) the frame ahead of the L3 header.
    pub fn shift_offsets(&mut self, delta: i16) {
        if self.flags & Self::NEEDS_CSUM != 0 {
            self.csum_start = self.csum_start.saturating_add_signed(delta);
        }
        if self.hdr_len != 0 {
            self.hdr_len = self.hdr_len.saturating_add_signed(delta);
        }
    }
}

/// Why an offloaded frame could not be turned into plain frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffloadError {
    /// The frame is shorter than its headers, its IP length or the offload
    /// header say.
    Truncated,
    /// A GSO type this switch does not segment in software.
    UnsupportedGso(u8),
    /// Headers that GSO cannot apply to (not IPv4/IPv6 + TCP/UDP as announced).
    BadHeaders(&'static str),
    /// `gso_size` so small that the frame would make more than
    /// [`MAX_SEGMENTS`] segments.
    TooManySegments(usize),
}

impl std::fmt::Display for OffloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OffloadError::Truncated => {
                write!(f, "frame is shorter than its headers or offload header say")
            }
            OffloadError::UnsupportedGso(t) => write!(f, "GSO type {t} is not supported"),
            OffloadError::BadHeaders(what) => write!(f, "GSO frame with bad headers: {what}"),
            OffloadError::TooManySegments(n) => write!(
                f,
                "GSO frame would make {n} segments, more than the {MAX_SEGMENTS} a real stack sends"
            ),
        }
    }
}

impl std::error::Error for OffloadError {}

/// The most segments one GSO frame may be cut into. Linux sends TCP with an
/// MSS of at least 48 bytes (`tcp_min_snd_mss`), so a 64 KiB super-frame has
/// at most 1366 segments, and it caps USO at 128 (`UDP_MAX_SEGMENTS`). A
/// frame asking for more is not from a real stack, and cutting 64 KiB into
/// 1-byte segments would cost the switch far more than it cost the sender.
pub const MAX_SEGMENTS: usize = 2048;

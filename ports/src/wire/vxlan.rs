//! VXLAN headers (RFC 7348 §5): the 8 bytes between the outer UDP header
//! and the inner Ethernet frame.
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//!
//! The I flag must be set for the VNI to count; every other bit is reserved
//! (sent as zero, ignored on receipt, as the RFC says and as Linux does
//! unless extensions such as GBP are switched on).

use super::{Field, Rest, Result, get_u32, require_len, set_u32};

pub mod field {
    use super::{Field, Rest};
    pub const FLAGS: Field = 0..4;
    pub const VNI: Field = 4..8;
    pub const PAYLOAD: Rest = 8..;
}

/// The VXLAN header alone.
pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// What a tunnel adds around a frame on an IPv4 underlay: outer IPv4 (20),
/// UDP (8), VXLAN (8) and the inner Ethernet header (14). A 1500-byte
/// underlay carries inner IP packets of 1450 bytes.
pub const IPV4_OVERHEAD: usize = 20 + 8 + HEADER_LEN + 14;
/// IANA's VXLAN port. Linux's own default (`dstport` left out) is 8472.
pub const IANA_PORT: u16 = 4789;
/// The largest VNI: 24 bits.
pub const MAX_VNI: u32 = 0x00ff_ffff;
/// The "VNI present" flag, in the first byte.
const FLAG_VNI: u32 = 0x0800_0000;

header_view! {
    /// A view of a VXLAN header and the frame it carries.
    pub struct Packet;
    into_payload = payload_range;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Whether the buffer holds a whole header.
    pub fn check_len(&self) -> Result<()> {
        require_len(self.buffer.as_ref(), HEADER_LEN)
    }

    /// Whether the I flag is set (the VNI field is valid).
    pub fn has_vni(&self) -> bool {
        get_u32(self.buffer.as_ref(), field::FLAGS) & FLAG_VNI != 0
    }

    /// The 24-bit VNI (meaningful only with [`Packet::has_vni`]).
    pub fn vni(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::VNI) >> 8
    }

    /// Where the payload, the inner Ethernet frame, lies in the buffer:
    /// everything after the header.
    fn payload_range(&self) -> Rest {
        field::PAYLOAD
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes a header carrying `vni` (the I flag set, reserved bits zero).
    pub fn emit(&mut self, vni: u32) {
        let data = self.buffer.as_mut();
        set_u32(data, field::FLAGS, FLAG_VNI);
        set_u32(data, field::VNI, (vni & MAX_VNI) << 8);
    }
}

/// The 8 header bytes for `vni`, to send ahead of a frame.
pub fn header(vni: u32) -> [u8; HEADER_LEN] {
    let mut bytes = [0u8; HEADER_LEN];
    Packet::new_unchecked(&mut bytes[..]).emit(vni);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_with_the_rfc_layout() {
        let bytes = header(0x12_3456);
        assert_eq!(bytes, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.has_vni());
        assert_eq!(packet.vni(), 0x12_3456);
        assert!(packet.payload().is_empty());
    }

    #[test]
    fn short_buffers_and_missing_flags_are_told_apart() {
        assert!(Packet::new_checked(&[0x08u8, 0, 0, 0, 0, 0, 1][..]).is_err());
        let no_flag = [0u8, 0, 0, 0, 0, 0, 1, 0, 0xaa];
        let packet = Packet::new_checked(&no_flag[..]).unwrap();
        assert!(!packet.has_vni());
        assert_eq!(packet.payload(), &[0xaa]);
        // Reserved bits are ignored on receipt.
        let reserved = [0xffu8, 0xff, 0xff, 0xff, 0, 0, 7, 0xff];
        let packet = Packet::new_checked(&reserved[..]).unwrap();
        assert!(packet.has_vni());
        assert_eq!(packet.vni(), 7);
    }
}

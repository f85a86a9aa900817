//! IEEE 802.1Q VLAN tags (and 802.1ad QinQ tags, which have the same shape).
//!
//! A tag sits where the EtherType was: the outer EtherType becomes the tag
//! protocol id (TPID, e.g. 0x8100), followed by this view's 4 bytes, the tag
//! control information and the EtherType of what the tag carries.

use super::ethernet::ethertype;
use super::{Field, Rest, Result, get_u16, require_len, set_u16};

pub mod field {
    use super::{Field, Rest};
    /// Tag control information: priority (3 bits), DEI (1), VLAN id (12).
    pub const TCI: Field = 0..2;
    pub const ETHERTYPE: Field = 2..4;
    pub const PAYLOAD: Rest = 4..;
}

/// The tag after its TPID: TCI and inner EtherType.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// The tag protocol ids that start a VLAN tag: 802.1Q (C-tag), 802.1ad
/// (S-tag) and the pre-standard QinQ tag.
pub fn is_tpid(value: u16) -> bool {
    matches!(
        value,
        ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_LEGACY
    )
}

header_view! {
    /// A view of one VLAN tag, starting right after its TPID.
    pub struct Tag;
    into_payload = payload_range;
}

impl<T: AsRef<[u8]>> Tag<T> {
    /// Whether the buffer holds the whole tag (TCI and EtherType).
    pub fn check_len(&self) -> Result<()> {
        require_len(self.buffer.as_ref(), HEADER_LEN)
    }

    pub fn tci(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::TCI)
    }

    pub fn vlan_id(&self) -> u16 {
        self.tci() & 0x0fff
    }

    pub fn priority(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator (formerly CFI).
    pub fn drop_eligible(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// The EtherType of what the tag carries (another TPID for QinQ).
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Where the payload lies in the buffer: everything after the tag.
    fn payload_range(&self) -> Rest {
        field::PAYLOAD
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Tag<T> {
    pub fn set_tci(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::TCI, value);
    }

    pub fn set_ethertype(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::ETHERTYPE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_a_tag() {
        let mut bytes = [0u8; 4];
        let mut tag = Tag::new_checked(&mut bytes[..]).unwrap();
        tag.set_tci(0xb064); // priority 5, DEI, VLAN 100
        tag.set_ethertype(ethertype::IPV4);
        assert_eq!(bytes, [0xb0, 0x64, 0x08, 0x00]);
        let tag = Tag::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (tag.vlan_id(), tag.priority(), tag.drop_eligible()),
            (100, 5, true)
        );
        assert_eq!(tag.ethertype(), ethertype::IPV4);
        assert!(tag.payload().is_empty());
        assert!(is_tpid(0x8100) && is_tpid(0x88a8) && is_tpid(0x9100));
        assert!(!is_tpid(ethertype::IPV4));
    }
}

//! Ethernet II frames (IEEE 802.3 with an EtherType).

use super::{Field, MacAddr, Rest, Result, get_u16, require_len, set_u16};

pub mod field {
    use super::{Field, Rest};
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = 14..;
}

/// Destination and source addresses plus the EtherType.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// EtherTypes the switch names.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q customer VLAN tag (C-tag).
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (S-tag, QinQ outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// The pre-standard QinQ outer tag.
    pub const QINQ_LEGACY: u16 = 0x9100;
    pub const LLDP: u16 = 0x88cc;
    pub const EAPOL: u16 = 0x888e;
    pub const SLOW_PROTOCOLS: u16 = 0x8809;
    pub const PAUSE: u16 = 0x8808;
    /// Values below this are an 802.3 length, not an EtherType: an LLC frame.
    pub const MIN: u16 = 0x0600;
}

header_view! {
    /// A view of an Ethernet frame.
    pub struct Frame;
    into_payload = payload_range;
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Whether the buffer holds at least a whole Ethernet header.
    pub fn check_len(&self) -> Result<()> {
        require_len(self.buffer.as_ref(), HEADER_LEN)
    }

    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::DESTINATION])
    }

    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The outer EtherType (a VLAN TPID when the frame is tagged).
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Where the payload lies in the buffer: everything after the 14-byte
    /// header (VLAN tags included).
    fn payload_range(&self) -> Rest {
        field::PAYLOAD
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst_addr(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac.0);
    }

    pub fn set_src_addr(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac.0);
    }

    pub fn set_ethertype(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::ETHERTYPE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_header() {
        let mut bytes = [0u8; 18];
        let mut frame = Frame::new_checked(&mut bytes[..]).unwrap();
        frame.set_dst_addr(MacAddr::BROADCAST);
        frame.set_src_addr(MacAddr([2, 0, 0, 0, 0, 1]));
        frame.set_ethertype(ethertype::ARP);
        frame.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            bytes[..14],
            [
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06
            ]
        );
        let frame = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(frame.src_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(frame.ethertype(), ethertype::ARP);
        assert_eq!(frame.payload(), [1, 2, 3, 4]);
    }
}

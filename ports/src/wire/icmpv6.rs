//! ICMPv6 (RFC 4443): type and code, enough to name a message.

use super::{Field, Rest, Result, get_u16, require_len};

pub mod field {
    use super::{Field, Rest};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const PAYLOAD: Rest = 4..;
}

pub const HEADER_LEN: usize = field::PAYLOAD.start;

pub mod message {
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const ROUTER_SOLICIT: u8 = 133;
    pub const ROUTER_ADVERT: u8 = 134;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

header_view! {
    /// A view of an ICMPv6 message.
    pub struct Packet;
    into_payload = payload_range;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Whether the buffer holds the whole header.
    pub fn check_len(&self) -> Result<()> {
        require_len(self.buffer.as_ref(), HEADER_LEN)
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Where the payload lies in the buffer: everything after type, code and
    /// checksum.
    fn payload_range(&self) -> Rest {
        field::PAYLOAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_neighbor_solicitation() {
        let bytes = [135, 0, 0x12, 0x34, 0, 0, 0, 0];
        let icmp = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (icmp.msg_type(), icmp.msg_code()),
            (message::NEIGHBOR_SOLICIT, 0)
        );
        assert_eq!(icmp.checksum(), 0x1234);
        assert_eq!(icmp.payload().len(), 4);
    }
}

//! ICMP for IPv4 (RFC 792).

use super::checksum;
use super::{Field, Rest, Result, get_u16, require_len, set_u16};

pub mod field {
    use super::{Field, Rest};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// Echo request and reply: identifier and sequence number.
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQ_NO: Field = 6..8;
    pub const PAYLOAD: Rest = 8..;
}

/// Type, code, checksum and the 4 type-specific bytes.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

pub mod message {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
}

header_view! {
    /// A view of an ICMPv4 message.
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

    /// Whether the checksum over the whole message is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::rfc1071_checksum(self.buffer.as_ref()) == 0
    }

    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    pub fn echo_seq_no(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_SEQ_NO)
    }

    /// Where the payload lies in the buffer: everything after the header.
    fn payload_range(&self) -> Rest {
        field::PAYLOAD
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_checksum(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and stores the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::rfc1071_checksum(self.buffer.as_ref());
        self.set_checksum(sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_round_trips_its_checksum() {
        let mut bytes = [8, 0, 0, 0, 0, 7, 0, 1, b't', b's'];
        let mut icmp = Packet::new_checked(&mut bytes[..]).unwrap();
        icmp.fill_checksum();
        let icmp = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (icmp.msg_type(), icmp.msg_code()),
            (message::ECHO_REQUEST, 0)
        );
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (7, 1));
        assert_eq!(icmp.payload(), b"ts");
        assert!(icmp.verify_checksum());
        assert_ne!(icmp.checksum(), 0);
        let mut damaged = bytes;
        damaged[9] ^= 1;
        assert!(!Packet::new_checked(&damaged[..]).unwrap().verify_checksum());
    }
}

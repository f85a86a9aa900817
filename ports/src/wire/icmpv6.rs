//! ICMPv6 (RFC 4443): type and code, enough to name a message.

use super::{Error, Field, Rest, Result, get_u16};

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

/// A view of an ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
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

    /// The message body after type, code and checksum.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// [`Packet::payload`] for as long as the buffer lives, so a parse can
    /// walk down the layers without keeping each view.
    pub fn into_payload(self) -> &'a [u8] {
        let range = field::PAYLOAD;
        let data: &'a [u8] = self.buffer.as_ref();
        &data[range]
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

//! UDP headers (RFC 768).

use super::{Error, Field, Result, get_u16, require_len, set_u16};

pub mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    /// Header and payload.
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

pub const HEADER_LEN: usize = field::CHECKSUM.end;

header_view! {
    /// A view of a UDP datagram.
    pub struct Packet;
    into_payload = payload_range;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Whether the buffer holds the header and all of the length it
    /// states, which is at least the header's.
    pub fn check_len(&self) -> Result<()> {
        require_len(self.buffer.as_ref(), HEADER_LEN)?;
        let stated = usize::from(self.len());
        if stated < HEADER_LEN {
            return Err(Error::TotalLength);
        }
        require_len(self.buffer.as_ref(), stated)
    }

    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field: header and payload.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Where the payload lies in the buffer: from the end of the header to the
    /// length field.
    fn payload_range(&self) -> Field {
        HEADER_LEN..usize::from(self.len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT, value);
    }

    pub fn set_dst_port(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT, value);
    }

    pub fn set_len(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    pub fn set_checksum(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATAGRAM: [u8; 12] = [0x9c, 0x40, 0x14, 0x51, 0, 12, 0xab, 0xcd, 1, 2, 3, 4];

    #[test]
    fn parses_a_datagram() {
        let udp = Packet::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (40000, 5201));
        assert_eq!((udp.len(), udp.checksum()), (12, 0xabcd));
        assert_eq!(udp.payload(), [1, 2, 3, 4]);
    }

    #[test]
    fn bad_lengths_are_refused() {
        let mut bytes = DATAGRAM;
        bytes[5] = 7;
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error::TotalLength));
        bytes[5] = 13;
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error::Truncated));
    }

    #[test]
    fn setters_write_the_header() {
        let mut bytes = DATAGRAM;
        let mut udp = Packet::new_unchecked(&mut bytes[..]);
        udp.set_src_port(1);
        udp.set_dst_port(2);
        udp.set_len(10);
        udp.set_checksum(0xffff);
        udp.payload_mut().fill(9);
        assert_eq!(bytes, [0, 1, 0, 2, 0, 10, 0xff, 0xff, 9, 9, 3, 4]);
    }
}

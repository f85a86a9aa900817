//! TCP headers (RFC 9293).

use super::{Error, Field, Rest, Result, get_u16, get_u32, require_len, set_u16, set_u32};

pub mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Data offset in 32-bit words (high nibble).
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// The header without options.
pub const MIN_HEADER_LEN: usize = field::URGENT.end;

/// The flag bits of [`Packet::flags`].
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

header_view! {
    /// A view of a TCP segment.
    pub struct Packet;
    into_payload = payload_range;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Whether the buffer holds a header of at least 20 bytes and
    /// all of the header length its data offset states.
    pub fn check_len(&self) -> Result<()> {
        require_len(self.buffer.as_ref(), MIN_HEADER_LEN)?;
        if self.header_len() < MIN_HEADER_LEN {
            return Err(Error::HeaderLength);
        }
        require_len(self.buffer.as_ref(), self.header_len())
    }

    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn seq_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    pub fn ack_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// The header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The eight flag bits (see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn window(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn urgent(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::URGENT)
    }

    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// Where the payload lies in the buffer: everything after the header
    /// (options included). TCP has no length of its own: the IP layer's
    /// length bounds the buffer.
    fn payload_range(&self) -> Rest {
        self.header_len()..
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_seq_number(&mut self, value: u32) {
        set_u32(self.buffer.as_mut(), field::SEQ_NUM, value);
    }

    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    pub fn set_checksum(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 40000 to 80, seq 0xffff0000, ack 0x12345678, data offset 6 (one
    /// 4-byte option), ACK|PSH, window 501, 2 bytes of payload.
    const SEGMENT: [u8; 26] = [
        0x9c, 0x40, 0, 80, 0xff, 0xff, 0, 0, 0x12, 0x34, 0x56, 0x78, 0x60, 0x18, 0x01, 0xf5, 0xab,
        0xcd, 0, 7, 1, 1, 1, 0, b'h', b'i',
    ];

    #[test]
    fn parses_a_segment() {
        let tcp = Packet::new_checked(&SEGMENT[..]).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (40000, 80));
        assert_eq!(
            (tcp.seq_number(), tcp.ack_number()),
            (0xffff_0000, 0x1234_5678)
        );
        assert_eq!(tcp.header_len(), 24);
        assert_eq!(tcp.flags(), flags::ACK | flags::PSH);
        assert_eq!(
            (tcp.window(), tcp.checksum(), tcp.urgent()),
            (501, 0xabcd, 7)
        );
        assert_eq!(tcp.options(), [1, 1, 1, 0]);
        assert_eq!(tcp.payload(), b"hi");
    }

    #[test]
    fn bad_data_offsets_are_refused() {
        let mut bytes = SEGMENT;
        bytes[12] = 0x40;
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error::HeaderLength));
        bytes[12] = 0x70;
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error::Truncated));
    }

    #[test]
    fn setters_write_sequence_flags_and_checksum() {
        let mut bytes = SEGMENT;
        let mut tcp = Packet::new_checked(&mut bytes[..]).unwrap();
        tcp.set_seq_number(0x0102_0304);
        tcp.set_flags(flags::FIN);
        tcp.set_checksum(0xffff);
        tcp.payload_mut().copy_from_slice(b"yo");
        assert_eq!(bytes[4..8], [1, 2, 3, 4]);
        assert_eq!(bytes[13], flags::FIN);
        assert_eq!(bytes[16..18], [0xff, 0xff]);
        assert_eq!(&bytes[24..], b"yo");
    }
}

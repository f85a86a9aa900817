//! IPv4 headers (RFC 791).

use std::net::Ipv4Addr;

use super::checksum;
use super::{Error, Field, Result, get_u16, require_len, set_u16};

pub mod field {
    use super::Field;
    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub const VER_IHL: usize = 0;
    /// DSCP and ECN, formerly the type of service.
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    /// Flags (3 bits) and fragment offset (13 bits, in 8-byte units).
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
    /// Both addresses: what the TCP/UDP pseudo-header sums.
    pub const ADDRESSES: Field = SRC_ADDR.start..DST_ADDR.end;
}

/// The header without options.
pub const MIN_HEADER_LEN: usize = field::DST_ADDR.end;

pub const DONT_FRAGMENT: u16 = 0x4000;
pub const MORE_FRAGMENTS: u16 = 0x2000;
pub const FRAGMENT_OFFSET: u16 = 0x1fff;

header_view! {
    /// A view of an IPv4 packet.
    pub struct Packet;
    into_payload = payload_range;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Whether the buffer holds a version 4 header with a header
    /// length of at least 20, a total length at least that, and all of the
    /// total length (bytes after it, such as Ethernet padding, are allowed).
    pub fn check_len(&self) -> Result<()> {
        require_len(self.buffer.as_ref(), MIN_HEADER_LEN)?;
        if self.version() != 4 {
            return Err(Error::Version);
        }
        if self.header_len() < MIN_HEADER_LEN {
            return Err(Error::HeaderLength);
        }
        let total = usize::from(self.total_len());
        if total < self.header_len() {
            return Err(Error::TotalLength);
        }
        require_len(self.buffer.as_ref(), total)
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The length of the packet, header included.
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// The raw flags and fragment offset field.
    pub fn flags_and_offset(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLG_OFF)
    }

    pub fn dont_fragment(&self) -> bool {
        self.flags_and_offset() & DONT_FRAGMENT != 0
    }

    pub fn more_fragments(&self) -> bool {
        self.flags_and_offset() & MORE_FRAGMENTS != 0
    }

    /// The fragment offset in bytes.
    pub fn fragment_offset(&self) -> usize {
        usize::from(self.flags_and_offset() & FRAGMENT_OFFSET) * 8
    }

    /// Whether the packet is a fragment (not the whole datagram).
    pub fn is_fragment(&self) -> bool {
        self.flags_and_offset() & (MORE_FRAGMENTS | FRAGMENT_OFFSET) != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Whether the header checksum is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::rfc1071_checksum(self.header()) == 0
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Source and destination address bytes, for a pseudo-header sum.
    pub fn addresses(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ADDRESSES]
    }

    /// The whole header, options included.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// Where the payload lies in the buffer: from the end of the header
    /// (options included) to the total length.
    fn payload_range(&self) -> Field {
        self.header_len()..usize::from(self.total_len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_total_len(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    pub fn set_ident(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::IDENT, value);
    }

    pub fn set_flags_and_offset(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::FLG_OFF, value);
    }

    pub fn set_checksum(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::rfc1071_checksum(self.header());
        self.set_checksum(sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 172.17.0.2 to 172.17.0.1, ICMP, 8 bytes of payload, DF.
    const PACKET: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 64, 1, 0x00, 0x00, 172, 17, 0, 2, 172, 17,
        0, 1, 8, 0, 0xf7, 0xff, 0, 0, 0, 0,
    ];

    fn with_checksum() -> [u8; 28] {
        let mut bytes = PACKET;
        Packet::new_unchecked(&mut bytes[..]).fill_checksum();
        bytes
    }

    #[test]
    fn parses_a_packet() {
        let bytes = with_checksum();
        let ip = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((ip.version(), ip.header_len(), ip.total_len()), (4, 20, 28));
        assert_eq!((ip.ident(), ip.ttl(), ip.protocol()), (0x1234, 64, 1));
        assert!(ip.dont_fragment() && !ip.more_fragments() && !ip.is_fragment());
        assert_eq!(ip.src_addr(), Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(ip.addresses(), &bytes[12..20]);
        assert!(ip.verify_checksum());
        assert_eq!(ip.payload(), &bytes[20..]);
        assert!(ip.options().is_empty());
    }

    #[test]
    fn padding_after_the_total_length_is_not_payload() {
        let mut bytes = with_checksum().to_vec();
        bytes.resize(46, 0);
        let ip = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.payload().len(), 8);
    }

    #[test]
    fn bad_lengths_and_versions_are_refused() {
        let edit = |at: usize, value: u8| {
            let mut bytes = PACKET;
            bytes[at] = value;
            Packet::new_checked(bytes).map(|_| ()).unwrap_err()
        };
        assert_eq!(edit(0, 0x65), Error::Version);
        assert_eq!(edit(0, 0x44), Error::HeaderLength);
        assert_eq!(edit(3, 19), Error::TotalLength);
        assert_eq!(edit(3, 29), Error::Truncated);
        // A header of 24 bytes (4 of options) in a 28-byte packet is fine;
        // one of 32 is longer than the total length.
        let mut bytes = PACKET;
        bytes[0] = 0x46;
        assert_eq!(Packet::new_checked(&bytes[..]).unwrap().options().len(), 4);
        assert_eq!(edit(0, 0x48), Error::TotalLength);
    }

    #[test]
    fn setters_write_lengths_ids_fragments_and_checksums() {
        let mut bytes = with_checksum();
        let mut ip = Packet::new_checked(&mut bytes[..]).unwrap();
        ip.set_total_len(24);
        ip.set_ident(0xfffe);
        ip.set_flags_and_offset(MORE_FRAGMENTS | 3);
        ip.fill_checksum();
        let ip = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((ip.total_len(), ip.ident()), (24, 0xfffe));
        assert!(ip.is_fragment() && ip.more_fragments() && !ip.dont_fragment());
        assert_eq!(ip.fragment_offset(), 24);
        assert!(ip.verify_checksum());
        assert_eq!(ip.payload().len(), 4);
    }
}

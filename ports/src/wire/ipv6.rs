//! IPv6 headers (RFC 8200) and the generic shape of its extension headers.

use std::net::Ipv6Addr;

use super::{Error, Field, Rest, Result, get_u16, require_len, set_u16};

pub mod field {
    use super::Field;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
    /// Both addresses: what the TCP/UDP pseudo-header sums.
    pub const ADDRESSES: Field = SRC_ADDR.start..DST_ADDR.end;
}

/// The fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

header_view! {
    /// A view of an IPv6 packet.
    pub struct Packet;
    into_payload = payload_range;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Whether the buffer holds a version 6 header and all of the
    /// payload length (bytes after it, such as Ethernet padding, are allowed).
    pub fn check_len(&self) -> Result<()> {
        require_len(self.buffer.as_ref(), HEADER_LEN)?;
        if self.version() != 6 {
            return Err(Error::Version);
        }
        require_len(self.buffer.as_ref(), self.payload_range().end)
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    pub fn flow_label(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }

    /// The length after the fixed header, extension headers included.
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.address(field::SRC_ADDR))
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.address(field::DST_ADDR))
    }

    fn address(&self, field: Field) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&self.buffer.as_ref()[field]);
        bytes
    }

    /// Source and destination address bytes, for a pseudo-header sum.
    pub fn addresses(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ADDRESSES]
    }

    /// Where the payload lies in the buffer: from the end of the fixed header
    /// to the payload length.
    fn payload_range(&self) -> Field {
        HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_payload_len(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, value);
    }
}

pub mod ext_field {
    pub const NEXT_HEADER: usize = 0;
    /// The length in 8-byte units, not counting the first 8 bytes.
    pub const LENGTH: usize = 1;
    /// In a routing header: the segments still to visit.
    pub const SEGMENTS_LEFT: usize = 3;
}

/// The shortest extension header.
pub const EXT_MIN_LEN: usize = 8;

header_view! {
    /// A view of an extension header that has the common shape (next header,
    /// length in 8-byte units): hop-by-hop options, routing, destination
    /// options (RFC 8200 section 4).
    pub struct ExtHeader;
    into_payload = payload_range;
}

impl<T: AsRef<[u8]>> ExtHeader<T> {
    /// Whether the buffer holds all of the length it states.
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        require_len(data, EXT_MIN_LEN)?;
        require_len(data, self.header_len())
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ext_field::NEXT_HEADER]
    }

    /// The header's length in bytes.
    pub fn header_len(&self) -> usize {
        (usize::from(self.buffer.as_ref()[ext_field::LENGTH]) + 1) * 8
    }

    /// Segments left, meaningful in a routing header only.
    pub fn segments_left(&self) -> u8 {
        self.buffer.as_ref()[ext_field::SEGMENTS_LEFT]
    }

    /// Where the payload lies in the buffer: everything after the header's
    /// stated length.
    fn payload_range(&self) -> Rest {
        self.header_len()..
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fd00::2 to fd00::3, flow label 0x12345, traffic class 0x01, UDP
    /// behind one destination-options header, 8 bytes of UDP.
    fn packet() -> Vec<u8> {
        let mut p = vec![0x60, 0x01, 0x23, 0x45, 0, 16, 60, 64];
        for host in [2u8, 3] {
            p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, host]);
        }
        p.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 8, 0, 0]);
        p
    }

    #[test]
    fn parses_a_packet_and_its_extension_header() {
        let bytes = packet();
        let ip = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (ip.version(), ip.traffic_class(), ip.flow_label()),
            (6, 0, 0x12345)
        );
        assert_eq!(
            (ip.payload_len(), ip.next_header(), ip.hop_limit()),
            (16, 60, 64)
        );
        assert_eq!(ip.src_addr(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.dst_addr(), "fd00::3".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.addresses().len(), 32);
        let ext = ExtHeader::new_checked(ip.payload()).unwrap();
        assert_eq!((ext.next_header(), ext.header_len()), (17, 8));
        assert_eq!(ext.payload().len(), 8);
    }

    #[test]
    fn bad_versions_and_lengths_are_refused() {
        let mut bytes = packet();
        bytes[0] = 0x45;
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error::Version));
        let mut bytes = packet();
        bytes[5] = 17;
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error::Truncated));
        // An extension header claiming 16 bytes in 8.
        let ext = [17, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(ExtHeader::new_checked(&ext[..]), Err(Error::Truncated));
    }

    #[test]
    fn sets_the_payload_length() {
        let mut bytes = packet();
        let mut ip = Packet::new_checked(&mut bytes[..]).unwrap();
        ip.set_payload_len(8);
        assert_eq!(ip.payload_mut().len(), 8);
        assert_eq!(bytes[4..6], [0, 8]);
    }
}

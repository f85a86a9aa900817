//! ARP packets (RFC 826). The address fields follow the fixed part, their
//! lengths given by `hardware_len` and `protocol_len` (6 and 4 for
//! Ethernet/IPv4, the only kind the switch's hosts send).

use std::net::Ipv4Addr;

use super::{Field, MacAddr, Result, get_u16, require_len, set_u16};

pub mod field {
    use super::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;

    /// Sender hardware address.
    pub const fn sha(hlen: u8, _plen: u8) -> Field {
        let start = OPER.end;
        start..start + hlen as usize
    }

    /// Sender protocol address.
    pub const fn spa(hlen: u8, plen: u8) -> Field {
        let start = sha(hlen, plen).end;
        start..start + plen as usize
    }

    /// Target hardware address.
    pub const fn tha(hlen: u8, plen: u8) -> Field {
        let start = spa(hlen, plen).end;
        start..start + hlen as usize
    }

    /// Target protocol address.
    pub const fn tpa(hlen: u8, plen: u8) -> Field {
        let start = tha(hlen, plen).end;
        start..start + plen as usize
    }
}

/// The fixed part, before the addresses.
pub const FIXED_LEN: usize = field::OPER.end;
/// An Ethernet/IPv4 ARP packet.
pub const ETHERNET_IPV4_LEN: usize = field::tpa(6, 4).end;

pub const HTYPE_ETHERNET: u16 = 1;
pub const OPERATION_REQUEST: u16 = 1;
pub const OPERATION_REPLY: u16 = 2;

header_view! {
    /// A view of an ARP packet.
    pub struct Packet;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Whether the buffer holds the fixed part and all four addresses.
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        // The address lengths are in the fixed part: check it first.
        require_len(data, FIXED_LEN)?;
        require_len(
            data,
            field::tpa(self.hardware_len(), self.protocol_len()).end,
        )
    }

    pub fn hardware_type(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::HTYPE)
    }

    /// The EtherType of the protocol addresses (0x0800 for IPv4).
    pub fn protocol_type(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PTYPE)
    }

    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    pub fn operation(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::OPER)
    }

    /// Whether the addresses are Ethernet and IPv4 (6 and 4 bytes), so the
    /// typed getters below apply.
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.hardware_type() == HTYPE_ETHERNET
            && self.protocol_type() == super::ethernet::ethertype::IPV4
            && self.hardware_len() == 6
            && self.protocol_len() == 4
    }

    fn lens(&self) -> (u8, u8) {
        (self.hardware_len(), self.protocol_len())
    }

    pub fn sender_hardware_addr(&self) -> &[u8] {
        let (h, p) = self.lens();
        &self.buffer.as_ref()[field::sha(h, p)]
    }

    pub fn sender_protocol_addr(&self) -> &[u8] {
        let (h, p) = self.lens();
        &self.buffer.as_ref()[field::spa(h, p)]
    }

    pub fn target_hardware_addr(&self) -> &[u8] {
        let (h, p) = self.lens();
        &self.buffer.as_ref()[field::tha(h, p)]
    }

    pub fn target_protocol_addr(&self) -> &[u8] {
        let (h, p) = self.lens();
        &self.buffer.as_ref()[field::tpa(h, p)]
    }

    /// The sender's MAC, when the hardware addresses are 6 bytes long.
    pub fn sender_mac(&self) -> Option<MacAddr> {
        MacAddr::from_bytes(self.sender_hardware_addr())
    }

    pub fn target_mac(&self) -> Option<MacAddr> {
        MacAddr::from_bytes(self.target_hardware_addr())
    }

    /// The sender's IPv4 address, when the protocol addresses are 4 bytes long.
    pub fn sender_ipv4(&self) -> Option<Ipv4Addr> {
        <[u8; 4]>::try_from(self.sender_protocol_addr())
            .ok()
            .map(Ipv4Addr::from)
    }

    pub fn target_ipv4(&self) -> Option<Ipv4Addr> {
        <[u8; 4]>::try_from(self.target_protocol_addr())
            .ok()
            .map(Ipv4Addr::from)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_operation(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::OPER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Error;

    /// 172.17.0.2 (02:42:ac:11:00:02) asks who has 172.17.0.1.
    const REQUEST: [u8; 28] = [
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0x42, 0xac, 0x11, 0, 2, 172, 17, 0, 2, 0, 0, 0, 0, 0, 0, 172,
        17, 0, 1,
    ];

    #[test]
    fn parses_a_request() {
        let arp = Packet::new_checked(&REQUEST[..]).unwrap();
        assert!(arp.is_ethernet_ipv4());
        assert_eq!(arp.operation(), OPERATION_REQUEST);
        assert_eq!(arp.sender_mac(), Some("02:42:ac:11:00:02".parse().unwrap()));
        assert_eq!(arp.sender_ipv4(), Some(Ipv4Addr::new(172, 17, 0, 2)));
        assert_eq!(arp.target_mac(), Some(MacAddr::ZERO));
        assert_eq!(arp.target_ipv4(), Some(Ipv4Addr::new(172, 17, 0, 1)));
        assert_eq!(ETHERNET_IPV4_LEN, 28);
    }

    #[test]
    fn address_lengths_come_from_the_packet() {
        // Hardware addresses of 8 bytes need 8 + 2 * (8 + 4) = 32 bytes.
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&[0, 1, 8, 0, 8, 4, 0, 2]);
        let arp = Packet::new_checked(&bytes[..]).unwrap();
        assert!(!arp.is_ethernet_ipv4());
        assert_eq!(arp.sender_hardware_addr().len(), 8);
        assert_eq!(arp.sender_mac(), None);
        assert_eq!(
            Packet::new_checked(&bytes[..31]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn sets_the_operation() {
        let mut bytes = REQUEST;
        Packet::new_unchecked(&mut bytes[..]).set_operation(OPERATION_REPLY);
        assert_eq!(bytes[6..8], [0, 2]);
    }
}

//! MAC addresses derived from IPv4 addresses, as Docker does.
//!
//! Docker (libnetwork `netutils.GenerateMACFromIP`) gives an endpoint the MAC
//! `02:42` followed by the four bytes of its IPv4 address: 172.17.0.2 gets
//! 02:42:ac:11:00:02 ([`MacAddr::docker_from_ipv4`]). The address type is
//! the switch's own (`ports::wire::MacAddr`), so a container's MAC and the
//! one the switch learns are one type; it is stored as its text, as before.

pub use ports::wire::mac::MacAddr;

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn docker_derives_the_mac_from_the_ip() {
        assert_eq!(
            MacAddr::docker_from_ipv4(Ipv4Addr::new(172, 17, 0, 2)).to_string(),
            "02:42:ac:11:00:02"
        );
        assert_eq!(
            MacAddr::docker_from_ipv4(Ipv4Addr::new(172, 17, 0, 1)).to_string(),
            "02:42:ac:11:00:01"
        );
        assert_eq!(
            MacAddr::docker_from_ipv4(Ipv4Addr::new(10, 1, 255, 254)).to_string(),
            "02:42:0a:01:ff:fe"
        );
    }

    #[test]
    fn parses_what_it_prints() {
        let mac: MacAddr = "02:42:ac:11:00:02".parse().unwrap();
        assert_eq!(mac, MacAddr::docker_from_ipv4(Ipv4Addr::new(172, 17, 0, 2)));
        assert!("02:42:ac:11:00".parse::<MacAddr>().is_err());
        assert!("02:42:ac:11:00:02:03".parse::<MacAddr>().is_err());
        assert!("02:42:ac:11:00:zz".parse::<MacAddr>().is_err());
    }

    /// State files written before the type moved keep loading, and the
    /// text written is the same.
    #[test]
    fn the_state_file_text_is_unchanged() {
        let mac: MacAddr = serde_json::from_str("\"02:42:ac:11:00:02\"").unwrap();
        assert_eq!(mac, MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]));
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"02:42:ac:11:00:02\""
        );
    }
}

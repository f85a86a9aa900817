//! The Ethernet (MAC) address: the one type the switch, the gateway and the
//! address manager share.
//!
//! smoltcp has `EthernetAddress`, but the frame path wants a `u64` key for a
//! cheap hash, `FromStr` for the command line and control socket, and serde
//! for the control protocol and the address manager's state files; the
//! gateway converts at its edge.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A 48-bit IEEE 802 MAC address, written `02:42:ac:11:00:02`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Reads the first six bytes; panics when `bytes` is shorter (use
    /// [`MacAddr::from_bytes`] or a [`crate::wire::ethernet::Frame`] on
    /// untrusted input).
    pub fn from_slice(bytes: &[u8]) -> MacAddr {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&bytes[..6]);
        MacAddr(mac)
    }

    /// The address in `bytes` if it is exactly six bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }

    /// Docker's MAC for an endpoint with IPv4 address `ip` (libnetwork
    /// `netutils.GenerateMACFromIP`): `02:42` and the four address bytes,
    /// so 172.17.0.2 gets 02:42:ac:11:00:02. `02` sets the
    /// locally-administered bit and clears the group bit, so the address
    /// never collides with a vendor's, and a MAC seen in a capture tells
    /// which container sent it.
    pub fn docker_from_ipv4(ip: Ipv4Addr) -> MacAddr {
        let [a, b, c, d] = ip.octets();
        MacAddr([0x02, 0x42, a, b, c, d])
    }

    /// Broadcast is a group address too (its I/G bit is set).
    pub fn is_group(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }

    /// IEEE 802.1D reserved group addresses 01:80:C2:00:00:00 to 0F
    /// (STP, pause, LACP, 802.1X, LLDP, ...): meant for the link, not the LAN.
    pub fn is_link_local(self) -> bool {
        self.0[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && self.0[5] <= 0x0f
    }

    /// The address packed into the low 48 bits of a `u64`: the MAC table's key.
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    pub fn from_u64(key: u64) -> MacAddr {
        let b = key.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The error for a string that is not `xx:xx:xx:xx:xx:xx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMacError(String);

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' is not a MAC address (expected six hex bytes such as 02:42:ac:11:00:02)",
            self.0
        )
    }
}

impl std::error::Error for ParseMacError {}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Six hex bytes of one or two digits, separated by `:` or `-`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut mac = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut mac {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(mac))
    }
}

/// As its text (`"02:42:ac:11:00:02"`): the control protocol and the
/// address manager's state files store it so.
impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let mac: MacAddr = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(mac.to_string(), "02:42:ac:11:00:02");
        assert_eq!(MacAddr::from_u64(mac.to_u64()), mac);
        assert_eq!("2-42-ac-11-0-2".parse::<MacAddr>(), Ok(mac));
    }

    #[test]
    fn rejects_malformed_strings() {
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "0g:00:00:00:00:00",
            "002:00:00:00:00:00",
            "02:42:ac:11:00:zz",
            "02:42:ac:11::02",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn classifies_group_and_link_local() {
        assert!(MacAddr::BROADCAST.is_group());
        assert!("01:00:5e:00:00:01".parse::<MacAddr>().unwrap().is_group());
        assert!(!"02:42:ac:11:00:02".parse::<MacAddr>().unwrap().is_group());
        let mac = |s: &str| s.parse::<MacAddr>().unwrap();
        assert!(mac("01:80:c2:00:00:0e").is_link_local());
        assert!(!mac("01:80:c2:00:00:10").is_link_local());
    }

    #[test]
    fn docker_derives_the_mac_from_the_ip() {
        for (ip, mac) in [
            (Ipv4Addr::new(172, 17, 0, 2), "02:42:ac:11:00:02"),
            (Ipv4Addr::new(172, 17, 0, 1), "02:42:ac:11:00:01"),
            (Ipv4Addr::new(10, 1, 255, 254), "02:42:0a:01:ff:fe"),
        ] {
            assert_eq!(MacAddr::docker_from_ipv4(ip).to_string(), mac);
        }
    }

    #[test]
    fn from_bytes_takes_exactly_six() {
        assert_eq!(
            MacAddr::from_bytes(&[1, 2, 3, 4, 5, 6]),
            Some(MacAddr([1, 2, 3, 4, 5, 6]))
        );
        assert_eq!(MacAddr::from_bytes(&[1, 2, 3, 4, 5]), None);
        assert_eq!(MacAddr::from_bytes(&[0; 7]), None);
    }

    #[test]
    fn serde_uses_the_text_form() {
        let mac = MacAddr::docker_from_ipv4(Ipv4Addr::new(172, 17, 0, 2));
        let json = serde_json::to_string(&mac).unwrap();
        assert_eq!(json, "\"02:42:ac:11:00:02\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), mac);
        assert!(serde_json::from_str::<MacAddr>("\"02:42\"").is_err());
    }
}

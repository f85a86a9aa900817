//! MAC addresses derived from IPv4 addresses, as Docker does.
//!
//! Docker (libnetwork `netutils.GenerateMACFromIP`) gives an endpoint the MAC
//! `02:42` followed by the four bytes of its IPv4 address: 172.17.0.2 gets
//! 02:42:ac:11:00:02. `02` sets the locally-administered bit and clears the
//! group bit, so the address can never collide with a vendor's, and a MAC
//! seen in a capture tells which container sent it.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet address, written `02:42:ac:11:00:02`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Docker's MAC for an endpoint with address `ip`.
    pub fn from_ip(ip: Ipv4Addr) -> Mac {
        let [a, b, c, d] = ip.octets();
        Mac([0x02, 0x42, a, b, c, d])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Mac, String> {
        let bad = || {
            format!("{s:?} is not a MAC address (expected six hex bytes like 02:42:ac:11:00:02)")
        };
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(bytes))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Mac, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_derives_the_mac_from_the_ip() {
        assert_eq!(
            Mac::from_ip(Ipv4Addr::new(172, 17, 0, 2)).to_string(),
            "02:42:ac:11:00:02"
        );
        assert_eq!(
            Mac::from_ip(Ipv4Addr::new(172, 17, 0, 1)).to_string(),
            "02:42:ac:11:00:01"
        );
        assert_eq!(
            Mac::from_ip(Ipv4Addr::new(10, 1, 255, 254)).to_string(),
            "02:42:0a:01:ff:fe"
        );
    }

    #[test]
    fn parses_what_it_prints() {
        let mac: Mac = "02:42:ac:11:00:02".parse().unwrap();
        assert_eq!(mac, Mac::from_ip(Ipv4Addr::new(172, 17, 0, 2)));
        assert!("02:42:ac:11:00".parse::<Mac>().is_err());
        assert!("02:42:ac:11:00:02:03".parse::<Mac>().is_err());
        assert!("02:42:ac:11:00:zz".parse::<Mac>().is_err());
    }
}

//! IPv4 subnets in CIDR notation (`172.17.0.0/16`).
//!
//! Parse, don't validate: a [`Subnet`] always has its host bits clear and a
//! prefix of 0 to 32, so the rest of the crate never checks again.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 network: a base address with its host bits clear, and a prefix length.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    base: u32,
    prefix: u8,
}

/// Why a CIDR string is not a subnet. The messages are written for people
/// typing `--subnet` and `--ip-range`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    #[error("{0:?} is not in CIDR notation: write it as ADDRESS/PREFIX, e.g. 172.18.0.0/16")]
    NotCidr(String),
    #[error("{0:?} is not an IPv4 address: write four numbers 0-255, e.g. 172.18.0.0/16")]
    BadAddress(String),
    #[error("{0:?} has a bad prefix length: use a number from 0 to 32, e.g. 172.18.0.0/16")]
    BadPrefix(String),
    #[error("{given} has host bits set: did you mean {suggested}?")]
    HostBitsSet { given: String, suggested: Subnet },
}

impl Subnet {
    /// A subnet from a base address and prefix; fails if host bits are set.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Subnet, SubnetError> {
        if prefix > 32 {
            return Err(SubnetError::BadPrefix(format!("{addr}/{prefix}")));
        }
        let subnet = Subnet {
            base: u32::from(addr) & mask(prefix),
            prefix,
        };
        if subnet.base != u32::from(addr) {
            return Err(SubnetError::HostBitsSet {
                given: format!("{addr}/{prefix}"),
                suggested: subnet,
            });
        }
        Ok(subnet)
    }

    /// The network address, e.g. 172.17.0.0.
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// The broadcast address, e.g. 172.17.255.255.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(self.base | !mask(self.prefix))
    }

    pub fn prefix_len(self) -> u8 {
        self.prefix
    }

    /// How many addresses the subnet spans, network and broadcast included.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == self.base
    }

    /// Whether every address of `other` is inside `self`.
    pub fn contains_subnet(self, other: Subnet) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }

    /// Two CIDR blocks overlap exactly when one contains the other.
    pub fn overlaps(self, other: Subnet) -> bool {
        self.contains_subnet(other) || other.contains_subnet(self)
    }

    /// The first usable host address (network + 1): Docker's default gateway.
    pub fn first_host(self) -> Ipv4Addr {
        Ipv4Addr::from(self.base.wrapping_add(1))
    }

    /// Every address of the subnet, in ascending order.
    pub fn addresses(self) -> impl Iterator<Item = Ipv4Addr> {
        let last = u32::from(self.broadcast());
        (self.base..=last).map(Ipv4Addr::from)
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl fmt::Debug for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subnet({self})")
    }
}

impl FromStr for Subnet {
    type Err = SubnetError;

    fn from_str(s: &str) -> Result<Subnet, SubnetError> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| SubnetError::NotCidr(s.to_string()))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| SubnetError::BadAddress(s.to_string()))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| SubnetError::BadPrefix(s.to_string()))?;
        Subnet::new(addr, prefix)
    }
}

impl Serialize for Subnet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Subnet, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn docker_default_bridge_subnet() {
        let s = net("172.17.0.0/16");
        assert_eq!(s.network(), Ipv4Addr::new(172, 17, 0, 0));
        assert_eq!(s.broadcast(), Ipv4Addr::new(172, 17, 255, 255));
        assert_eq!(s.first_host(), Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(s.size(), 65536);
        assert!(s.contains(Ipv4Addr::new(172, 17, 3, 4)));
        assert!(!s.contains(Ipv4Addr::new(172, 18, 0, 1)));
        assert_eq!(s.to_string(), "172.17.0.0/16");
    }

    #[test]
    fn host_bits_are_refused_with_a_suggestion() {
        let err = "172.17.0.1/16".parse::<Subnet>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "172.17.0.1/16 has host bits set: did you mean 172.17.0.0/16?"
        );
    }

    #[test]
    fn malformed_cidrs_are_refused() {
        assert!(matches!(
            "172.17.0.0".parse::<Subnet>(),
            Err(SubnetError::NotCidr(_))
        ));
        assert!(matches!(
            "172.17.0/16".parse::<Subnet>(),
            Err(SubnetError::BadAddress(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Subnet>(),
            Err(SubnetError::BadPrefix(_))
        ));
    }

    #[test]
    fn overlap_is_containment_either_way() {
        assert!(net("10.0.0.0/8").overlaps(net("10.1.0.0/16")));
        assert!(net("10.1.0.0/16").overlaps(net("10.0.0.0/8")));
        assert!(!net("10.1.0.0/16").overlaps(net("10.2.0.0/16")));
        assert!(net("10.1.0.0/24").contains_subnet(net("10.1.0.128/25")));
        assert!(!net("10.1.0.128/25").contains_subnet(net("10.1.0.0/24")));
    }

    #[test]
    fn edge_prefixes() {
        assert_eq!(net("0.0.0.0/0").size(), 1 << 32);
        assert_eq!(
            net("0.0.0.0/0").broadcast(),
            Ipv4Addr::new(255, 255, 255, 255)
        );
        let host = net("10.0.0.7/32");
        assert_eq!(host.addresses().collect::<Vec<_>>(), vec![host.network()]);
    }

    #[test]
    fn serde_is_the_cidr_string() {
        let s = net("192.168.5.0/24");
        assert_eq!(serde_json::to_string(&s).unwrap(), r#""192.168.5.0/24""#);
        let back: Subnet = serde_json::from_str(r#""192.168.5.0/24""#).unwrap();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<Subnet>(r#""192.168.5.1/24""#).is_err());
    }
}

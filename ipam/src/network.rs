//! Networks and the allocation of their addresses, the way Docker's default
//! IPAM does it.
//!
//! Reserved addresses, never handed out (libnetwork `defaultipam`):
//!
//! | address                      | why                                         |
//! |------------------------------|---------------------------------------------|
//! | the network address (x.x.0.0) | it names the subnet, hosts do not use it   |
//! | the broadcast address         | it reaches every host                      |
//! | the gateway (x.x.0.1)         | the switch's own gateway host answers there |
//! | each `--aux-address`          | kept for hosts tapswitch does not manage   |
//!
//! Allocation gives the **lowest free address** of the allocation pool: the
//! `--ip-range` if there is one, else the whole subnet. So the first container
//! on `bridge` gets 172.17.0.2, and an address that is released is the next
//! one handed out again (Docker's default; its `serial` option is not copied).
//! A requested address (`--ip`) may be anywhere in the subnet, inside or
//! outside the range, if it is neither reserved nor in use.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::subnet::Subnet;

/// The most characters in a network or container name (the namespace
/// `tapswitch-<name>` must stay a comfortable file name).
pub const MAX_NAME_LEN: usize = 64;

/// How a network connects its containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A switch with a subnet and gateway: each container gets a veth port.
    Bridge,
    /// No namespace: the container shares the host's network stack.
    Host,
    /// A namespace with only loopback (Docker calls the `none` network's driver `null`).
    Null,
    /// One segment across hosts in VXLAN, kept in a shared store (see [`crate::overlay`]).
    Overlay,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Bridge => "bridge",
            Driver::Host => "host",
            Driver::Null => "null",
            Driver::Overlay => "overlay",
        })
    }
}

/// A network as stored in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    /// 64 hex digits, like a Docker network id; `ls` shows the first 12.
    pub id: String,
    pub driver: Driver,
    /// RFC 3339, UTC.
    pub created: String,
    /// Subnet, gateway and pool; only `bridge` and `overlay` networks have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConfig>,
    /// `--internal` (Docker's flag): no outbound access, no published ports.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// `--mtu`: the MTU of the containers' interfaces and the gateway's, for
    /// every driver. Overlay networks always have one (1450 unless given);
    /// on others, absent means the kernel's default (1500). Read it through
    /// [`Network::link_mtu`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// VNI, VXLAN port and peers; only `overlay` networks have them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<crate::overlay::config::OverlayConfig>,
}

/// The smallest MTU `--mtu` takes: RFC 791's 68 bytes, the least every
/// IPv4 link must carry (a 60-byte header and an 8-byte fragment). The
/// networks are IPv4 only; IPv6 would need 1280.
pub const MIN_MTU: u32 = 68;
/// The largest: Linux's `ETH_MAX_MTU` (65535), the most a veth or TAP
/// device accepts (slirp4netns's and pasta's 65520 fits).
pub const MAX_MTU: u32 = 65_535;

/// Checks an `--mtu` value against [`MIN_MTU`] and [`MAX_MTU`].
pub fn check_mtu(mtu: u32) -> Result<u32> {
    if (MIN_MTU..=MAX_MTU).contains(&mtu) {
        Ok(mtu)
    } else {
        Err(Error::BadMtu {
            mtu,
            min: MIN_MTU,
            max: MAX_MTU,
        })
    }
}

impl Network {
    /// The MTU of the containers' interfaces and the gateway's: the
    /// network's `--mtu`, else its driver's default (an overlay's
    /// [`crate::overlay::config::DEFAULT_MTU`], Ethernet's 1500 for the others).
    pub fn link_mtu(&self) -> u32 {
        self.mtu.unwrap_or(match self.driver {
            Driver::Overlay => crate::overlay::config::DEFAULT_MTU,
            Driver::Bridge | Driver::Host | Driver::Null => ETHERNET_MTU,
        })
    }
}

/// The kernel's default MTU for veth and TAP devices.
pub const ETHERNET_MTU: u32 = 1500;

/// The addressing of a bridge network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    /// Where automatic allocation draws from (`--ip-range`); the subnet if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Subnet>,
    /// Addresses kept back for hosts tapswitch does not manage (`--aux-address`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
}

/// What `tapswitch network create` asks for, still as the user typed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSpec {
    pub subnet: String,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<String>,
    /// `name=IP` pairs.
    pub aux_addresses: Vec<String>,
    /// `--internal`.
    pub internal: bool,
    /// `--mtu`.
    pub mtu: Option<u32>,
}

impl IpamConfig {
    /// Checks a spec and turns it into a configuration: the subnet is a real
    /// CIDR block big enough for a container, the gateway a host address
    /// inside it, the range and aux addresses inside it too.
    pub fn from_spec(spec: &NetworkSpec) -> Result<IpamConfig> {
        let subnet: Subnet = spec.subnet.parse().map_err(|problem| Error::BadCidr {
            flag: "subnet",
            problem,
        })?;
        if subnet.prefix_len() > 30 {
            return Err(Error::SubnetTooSmall { subnet });
        }
        let gateway = spec.gateway.unwrap_or_else(|| subnet.first_host());
        if !subnet.contains(gateway) {
            return Err(Error::GatewayOutside { gateway, subnet });
        }
        for (special, what) in [
            (subnet.network(), "network"),
            (subnet.broadcast(), "broadcast"),
        ] {
            if gateway == special {
                return Err(Error::GatewayNotHost {
                    gateway,
                    subnet,
                    what,
                });
            }
        }
        let ip_range = match &spec.ip_range {
            None => None,
            Some(text) => {
                let range: Subnet = text.parse().map_err(|problem| Error::BadCidr {
                    flag: "ip-range",
                    problem,
                })?;
                if !subnet.contains_subnet(range) {
                    return Err(Error::RangeOutside { range, subnet });
                }
                Some(range)
            }
        };
        let mut aux_addresses = BTreeMap::new();
        for given in &spec.aux_addresses {
            let (name, ip) = given
                .split_once('=')
                .and_then(|(name, ip)| Some((name, ip.parse::<Ipv4Addr>().ok()?)))
                .filter(|(name, _)| !name.is_empty())
                .ok_or_else(|| Error::AuxMalformed {
                    given: given.clone(),
                })?;
            if !subnet.contains(ip) {
                return Err(Error::AuxOutside {
                    name: name.to_string(),
                    ip,
                    subnet,
                });
            }
            if aux_addresses.insert(name.to_string(), ip).is_some() {
                return Err(Error::AuxDuplicate {
                    name: name.to_string(),
                });
            }
        }
        Ok(IpamConfig {
            subnet,
            gateway,
            ip_range,
            aux_addresses,
        })
    }

    /// The pool automatic allocation draws from.
    pub fn pool(&self) -> Subnet {
        self.ip_range.unwrap_or(self.subnet)
    }

    /// Why `ip` can never be handed out, if it cannot.
    pub fn reserved(&self, ip: Ipv4Addr) -> Option<String> {
        if ip == self.subnet.network() {
            return Some(format!("the network address of {}", self.subnet));
        }
        if ip == self.subnet.broadcast() {
            return Some(format!("the broadcast address of {}", self.subnet));
        }
        if ip == self.gateway {
            return Some("the gateway".to_string());
        }
        self.aux_addresses
            .iter()
            .find(|(_, aux)| **aux == ip)
            .map(|(name, _)| format!("auxiliary address {name}"))
    }

    /// The lowest address of the pool that is neither reserved nor in `used`.
    pub fn first_free(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.pool()
            .addresses()
            .find(|ip| !used.contains(ip) && self.reserved(*ip).is_none())
    }
}

impl Network {
    /// The addressing, or why this network has none.
    pub fn ipam(&self) -> Result<&IpamConfig> {
        self.ipam.as_ref().ok_or_else(|| Error::NoAddressing {
            network: self.name.clone(),
            driver: self.driver.to_string(),
        })
    }

    /// The subnet, for networks that have one.
    pub fn subnet(&self) -> Option<Subnet> {
        self.ipam.as_ref().map(|c| c.subnet)
    }

    /// The gateway address, for networks that have one.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.ipam.as_ref().map(|c| c.gateway)
    }

    /// The gateway with the subnet's prefix, e.g. `172.17.0.1/16`: what
    /// `tapswitch serve --network NAME` gives its gateway host.
    pub fn gateway_cidr(&self) -> Option<String> {
        self.ipam
            .as_ref()
            .map(|c| format!("{}/{}", c.gateway, c.subnet.prefix_len()))
    }

    /// The gateway and the subnet's prefix length, e.g. (172.17.0.1, 16).
    pub fn gateway_prefix(&self) -> Option<(Ipv4Addr, u8)> {
        self.ipam
            .as_ref()
            .map(|c| (c.gateway, c.subnet.prefix_len()))
    }

    /// The first 12 hex digits of the id, as `docker network ls` shows it.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// Picks an address for a new endpoint: `requested` if it is free and
    /// allowed, else the lowest free address of the pool.
    /// `used` maps each address in use to the name of its holder.
    pub fn allocate(
        &self,
        requested: Option<Ipv4Addr>,
        used: &BTreeMap<Ipv4Addr, String>,
    ) -> Result<Ipv4Addr> {
        let ipam = self.ipam()?;
        let Some(ip) = requested else {
            let used: BTreeSet<Ipv4Addr> = used.keys().copied().collect();
            return ipam.first_free(&used).ok_or_else(|| Error::Exhausted {
                network: self.name.clone(),
                pool: ipam.pool(),
            });
        };
        if !ipam.subnet.contains(ip) {
            return Err(Error::AddressOutside {
                ip,
                network: self.name.clone(),
                subnet: ipam.subnet,
            });
        }
        if let Some(why) = ipam.reserved(ip) {
            return Err(Error::AddressReserved {
                ip,
                network: self.name.clone(),
                why,
            });
        }
        if let Some(owner) = used.get(&ip) {
            return Err(Error::AddressInUse {
                ip,
                network: self.name.clone(),
                owner: owner.clone(),
            });
        }
        Ok(ip)
    }
}

/// Network and container names: what Docker accepts
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), bounded in length.
pub fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(Error::BadName(name.to_string(), MAX_NAME_LEN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn network(spec: NetworkSpec) -> Network {
        Network {
            name: "test".into(),
            id: "0".repeat(64),
            driver: Driver::Bridge,
            created: String::new(),
            ipam: Some(IpamConfig::from_spec(&spec).unwrap()),
            internal: false,
            mtu: None,
            overlay: None,
        }
    }

    fn spec(subnet: &str) -> NetworkSpec {
        NetworkSpec {
            subnet: subnet.into(),
            ..NetworkSpec::default()
        }
    }

    /// Allocates `n` addresses one after another, as `n` containers would.
    fn allocate_n(net: &Network, used: &mut BTreeMap<Ipv4Addr, String>, n: usize) -> Vec<Ipv4Addr> {
        (0..n)
            .map(|i| {
                let got = net.allocate(None, used).unwrap();
                used.insert(got, format!("c{i}"));
                got
            })
            .collect()
    }

    #[test]
    fn first_container_on_the_default_bridge_gets_dot_two() {
        let net = network(spec("172.17.0.0/16"));
        assert_eq!(net.gateway(), Some(ip("172.17.0.1")));
        assert_eq!(net.gateway_cidr().as_deref(), Some("172.17.0.1/16"));
        assert_eq!(net.gateway_prefix(), Some((ip("172.17.0.1"), 16)));
        let mut used = BTreeMap::new();
        assert_eq!(
            allocate_n(&net, &mut used, 3),
            vec![ip("172.17.0.2"), ip("172.17.0.3"), ip("172.17.0.4")]
        );
    }

    #[test]
    fn a_gateway_elsewhere_frees_dot_one() {
        let net = network(NetworkSpec {
            gateway: Some(ip("10.9.0.254")),
            ..spec("10.9.0.0/24")
        });
        let mut used = BTreeMap::new();
        assert_eq!(allocate_n(&net, &mut used, 1), vec![ip("10.9.0.1")]);
        assert!(net.ipam().unwrap().reserved(ip("10.9.0.254")).is_some());
    }

    #[test]
    fn allocation_stays_inside_the_ip_range() {
        let net = network(NetworkSpec {
            ip_range: Some("10.1.0.128/30".into()),
            ..spec("10.1.0.0/24")
        });
        let mut used = BTreeMap::new();
        // The range's own first and last addresses are ordinary hosts of the subnet.
        assert_eq!(
            allocate_n(&net, &mut used, 4),
            vec![
                ip("10.1.0.128"),
                ip("10.1.0.129"),
                ip("10.1.0.130"),
                ip("10.1.0.131")
            ]
        );
        let err = net.allocate(None, &used).unwrap_err();
        assert!(
            matches!(err, Error::Exhausted { pool, .. } if pool.to_string() == "10.1.0.128/30")
        );
        // An explicit address may lie outside the range but inside the subnet.
        assert_eq!(
            net.allocate(Some(ip("10.1.0.9")), &used).unwrap(),
            ip("10.1.0.9")
        );
    }

    #[test]
    fn aux_addresses_are_skipped_and_refused() {
        let net = network(NetworkSpec {
            aux_addresses: vec!["router=10.2.0.2".into(), "printer=10.2.0.4".into()],
            ..spec("10.2.0.0/24")
        });
        let mut used = BTreeMap::new();
        assert_eq!(
            allocate_n(&net, &mut used, 3),
            vec![ip("10.2.0.3"), ip("10.2.0.5"), ip("10.2.0.6")]
        );
        let err = net.allocate(Some(ip("10.2.0.4")), &used).unwrap_err();
        assert_eq!(
            err.to_string(),
            "address 10.2.0.4 is reserved on network test (auxiliary address printer): pick another --ip"
        );
    }

    #[test]
    fn a_small_subnet_runs_out_with_a_clear_error() {
        // /29: 8 addresses, minus network, broadcast and gateway = 5 containers.
        let net = network(spec("192.168.7.0/29"));
        let mut used = BTreeMap::new();
        let got = allocate_n(&net, &mut used, 5);
        assert_eq!(got.first(), Some(&ip("192.168.7.2")));
        assert_eq!(got.last(), Some(&ip("192.168.7.6")));
        let err = net.allocate(None, &used).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no free address left in 192.168.7.0/29 on network test: remove a container (`tapswitch container rm NAME`) or use a network with a larger subnet"
        );
    }

    #[test]
    fn released_addresses_are_reused_lowest_first() {
        let net = network(spec("172.17.0.0/16"));
        let mut used = BTreeMap::new();
        allocate_n(&net, &mut used, 5); // .2 to .6
        used.remove(&ip("172.17.0.4"));
        used.remove(&ip("172.17.0.3"));
        assert_eq!(net.allocate(None, &used).unwrap(), ip("172.17.0.3"));
        used.insert(ip("172.17.0.3"), "again".into());
        assert_eq!(net.allocate(None, &used).unwrap(), ip("172.17.0.4"));
        used.insert(ip("172.17.0.4"), "again2".into());
        assert_eq!(net.allocate(None, &used).unwrap(), ip("172.17.0.7"));
    }

    #[test]
    fn requested_addresses_are_checked() {
        let net = network(spec("172.17.0.0/16"));
        let mut used = BTreeMap::new();
        used.insert(ip("172.17.0.2"), "web".to_string());
        assert_eq!(
            net.allocate(Some(ip("172.17.5.5")), &used).unwrap(),
            ip("172.17.5.5")
        );
        let in_use = net.allocate(Some(ip("172.17.0.2")), &used).unwrap_err();
        assert_eq!(
            in_use.to_string(),
            "address 172.17.0.2 is already in use by container web on network test: pick another --ip, or remove web first"
        );
        for reserved in ["172.17.0.0", "172.17.0.1", "172.17.255.255"] {
            assert!(matches!(
                net.allocate(Some(ip(reserved)), &used),
                Err(Error::AddressReserved { .. })
            ));
        }
        assert!(matches!(
            net.allocate(Some(ip("172.18.0.2")), &used),
            Err(Error::AddressOutside { .. })
        ));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |s: NetworkSpec| IpamConfig::from_spec(&s).unwrap_err().to_string();
        assert!(err(spec("10.0.0.0/31")).contains("too small"));
        assert_eq!(
            err(NetworkSpec {
                gateway: Some(ip("10.0.1.1")),
                ..spec("10.0.0.0/24")
            }),
            "gateway 10.0.1.1 is outside subnet 10.0.0.0/24: pick an address inside it (or leave --gateway out to use the first one)"
        );
        assert!(
            err(NetworkSpec {
                gateway: Some(ip("10.0.0.255")),
                ..spec("10.0.0.0/24")
            })
            .contains("broadcast")
        );
        assert_eq!(
            err(NetworkSpec {
                ip_range: Some("10.0.1.0/25".into()),
                ..spec("10.0.0.0/24")
            }),
            "--ip-range 10.0.1.0/25 is not inside subnet 10.0.0.0/24: give a range within the subnet"
        );
        assert!(
            err(NetworkSpec {
                aux_addresses: vec!["x=10.9.9.9".into()],
                ..spec("10.0.0.0/24")
            })
            .contains("outside subnet")
        );
        assert!(
            err(NetworkSpec {
                aux_addresses: vec!["nonsense".into()],
                ..spec("10.0.0.0/24")
            })
            .contains("NAME=IPV4")
        );
        assert!(err(spec("10.0.0.1/24")).starts_with("--subnet: 10.0.0.1/24 has host bits set"));
    }

    #[test]
    fn mtus_are_bounded_by_ipv4_and_linux() {
        assert_eq!(check_mtu(68).unwrap(), 68);
        assert_eq!(check_mtu(1500).unwrap(), 1500);
        assert_eq!(check_mtu(65_520).unwrap(), 65_520);
        assert_eq!(check_mtu(65_535).unwrap(), 65_535);
        assert!(matches!(check_mtu(67), Err(Error::BadMtu { mtu: 67, .. })));
        assert_eq!(
            check_mtu(65_536).unwrap_err().to_string(),
            "--mtu 65536 is out of range: give 68 (the smallest MTU IPv4 allows) to 65535 (the largest Linux allows on veth and TAP devices)"
        );
        assert!(check_mtu(0).is_err());
    }

    #[test]
    fn the_link_mtu_is_the_record_s_or_the_driver_s_default() {
        let mut net = network(spec("10.0.0.0/24"));
        assert_eq!(net.link_mtu(), 1500);
        net.driver = Driver::Overlay;
        assert_eq!(net.link_mtu(), 1450);
        net.mtu = Some(9000);
        assert_eq!(net.link_mtu(), 9000);
    }

    #[test]
    fn networks_written_before_internal_and_mtu_still_load() {
        let old = r#"{"name":"web","id":"ab","driver":"bridge","created":"x",
            "ipam":{"subnet":"10.1.0.0/24","gateway":"10.1.0.1"}}"#;
        let net: Network = serde_json::from_str(old).unwrap();
        assert!(!net.internal);
        assert_eq!(net.mtu, None);
        // And a plain network is written as before (no new keys).
        let json = serde_json::to_string(&net).unwrap();
        assert!(
            !json.contains("internal") && !json.contains("mtu"),
            "{json}"
        );
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(check_name("web-1.prod_a").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }
}

//! Overlay networks: one L2 segment across hosts, carried in VXLAN
//! (RFC 7348), with its addresses and its hosts kept in a shared store.
//!
//! An overlay network is a bridge network's addressing plus:
//!
//! | field        | default              | why                                                    |
//! |--------------|----------------------|--------------------------------------------------------|
//! | `vni`        | lowest free ≥ 4096   | VXLAN's 24-bit segment id; unique per store, so two networks never share a segment. 4096 is where Docker's and Calico's automatic VNIs start |
//! | `vxlan_port` | 4789                 | the IANA port (Docker, Calico); Linux's own default is 8472, so give `--vxlan-port 8472` to meet a kernel device made without `dstport` |
//! | `mtu`        | 1450                 | the containers' MTU: a 1500-byte underlay minus VXLAN's 50 bytes (outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8), because VXLAN must never be fragmented. Kept in [`Network::mtu`] like every network's `--mtu`, not in [`OverlayConfig`] |
//! | `peers`      | none                 | hosts that run no tapswitch (a kernel `vxlan` device) registered with `network peer add`; they are members for good, unlike switches, whose registrations live under a lease (see [`crate::membership`]) |
//!
//! The rules here are pure; they run inside a store transaction like every
//! other change to the state.

use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::network::{Driver, IpamConfig, Network, NetworkSpec, check_mtu, check_name};
use crate::state::State;

/// The IANA port for VXLAN (RFC 7348 §5).
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// Where automatic VNIs start (Docker's overlay driver and Calico use 4096).
pub const FIRST_AUTO_VNI: u32 = 4096;
/// The largest 24-bit VNI.
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Bytes VXLAN adds on an IPv4 underlay: outer Ethernet, IPv4, UDP, VXLAN.
pub const VXLAN_OVERHEAD: u32 = 14 + 20 + 8 + 8;
/// The usual underlay MTU.
pub const DEFAULT_UNDERLAY_MTU: u32 = 1500;
/// The containers' MTU on a 1500-byte underlay: an overlay network's
/// [`Network::mtu`] when `--mtu` is not given.
pub const DEFAULT_MTU: u32 = DEFAULT_UNDERLAY_MTU - VXLAN_OVERHEAD;

/// An overlay network's VXLAN settings and static members. The MTU is not
/// here: it is the network's own ([`Network::mtu`]), one field for every
/// driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayConfig {
    pub vni: u32,
    pub vxlan_port: u16,
    /// Hosts without tapswitch, each a VXLAN endpoint (underlay address and port).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<SocketAddrV4>,
}

/// What `network create --driver overlay` asks for beyond the addressing
/// (and beyond `--internal` and `--mtu`, which every network takes: see
/// [`NetworkSpec`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverlaySpec {
    pub vni: Option<u32>,
    pub vxlan_port: Option<u16>,
}

impl Network {
    /// The VXLAN settings, for overlay networks.
    pub fn overlay(&self) -> Option<&OverlayConfig> {
        self.overlay.as_ref()
    }
}

impl State {
    /// Adds an overlay network: the addressing of a bridge network (same
    /// checks, same overlap rule) and a VNI no other network of this store
    /// uses.
    pub fn create_overlay_network(
        &mut self,
        name: &str,
        id: String,
        created: String,
        spec: &NetworkSpec,
        overlay: OverlaySpec,
    ) -> Result<&Network> {
        check_name(name)?;
        if self.network(name).is_ok() {
            return Err(Error::NetworkExists(name.to_string()));
        }
        let vni = match overlay.vni {
            Some(vni) => {
                if !(1..=MAX_VNI).contains(&vni) {
                    return Err(Error::BadVni { vni });
                }
                if let Some(other) = self.network_with_vni(vni) {
                    return Err(Error::VniInUse {
                        vni,
                        other: other.name.clone(),
                    });
                }
                vni
            }
            None => self.free_vni().ok_or(Error::NoFreeVni)?,
        };
        let mtu = spec.mtu.map(check_mtu).transpose()?.unwrap_or(DEFAULT_MTU);
        let vxlan_port = overlay.vxlan_port.unwrap_or(DEFAULT_VXLAN_PORT);
        if vxlan_port == 0 {
            return Err(Error::BadVxlanPort);
        }
        let ipam = IpamConfig::from_spec(spec)?;
        self.check_overlap(ipam.subnet)?;
        self.networks.push(Network {
            name: name.to_string(),
            id,
            driver: Driver::Overlay,
            created,
            ipam: Some(ipam),
            internal: spec.internal,
            mtu: Some(mtu),
            overlay: Some(OverlayConfig {
                vni,
                vxlan_port,
                peers: Vec::new(),
            }),
        });
        self.networks.sort_by(|a, b| a.name.cmp(&b.name));
        self.network(name)
    }

    /// The lowest VNI from [`FIRST_AUTO_VNI`] on that no network uses.
    pub fn free_vni(&self) -> Option<u32> {
        (FIRST_AUTO_VNI..=MAX_VNI).find(|vni| self.network_with_vni(*vni).is_none())
    }

    fn network_with_vni(&self, vni: u32) -> Option<&Network> {
        self.networks
            .iter()
            .find(|n| n.overlay.as_ref().is_some_and(|o| o.vni == vni))
    }

    /// Registers a host without tapswitch as a member of overlay network
    /// `name`. `port` defaults to the network's VXLAN port. Returns the
    /// endpoint as stored.
    pub fn add_peer(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        port: Option<u16>,
    ) -> Result<SocketAddrV4> {
        let overlay = self.overlay_mut(name)?;
        let peer = SocketAddrV4::new(ip, port.unwrap_or(overlay.vxlan_port));
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || peer.port() == 0 {
            return Err(Error::BadPeer { peer });
        }
        if overlay.peers.contains(&peer) {
            return Err(Error::PeerExists {
                network: name.to_string(),
                peer,
            });
        }
        overlay.peers.push(peer);
        overlay.peers.sort();
        Ok(peer)
    }

    /// Unregisters the peers of overlay network `name` at `ip` (only the
    /// one at `port`, if given). Returns the endpoints removed.
    pub fn remove_peer(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        port: Option<u16>,
    ) -> Result<Vec<SocketAddrV4>> {
        let overlay = self.overlay_mut(name)?;
        let matches = |p: &SocketAddrV4| *p.ip() == ip && port.is_none_or(|port| p.port() == port);
        let removed: Vec<SocketAddrV4> = overlay.peers.iter().copied().filter(matches).collect();
        if removed.is_empty() {
            return Err(Error::NoSuchPeer {
                network: name.to_string(),
                peer: port.map_or_else(|| ip.to_string(), |p| SocketAddrV4::new(ip, p).to_string()),
            });
        }
        overlay.peers.retain(|p| !matches(p));
        Ok(removed)
    }

    fn overlay_mut(&mut self, name: &str) -> Result<&mut OverlayConfig> {
        let network = self
            .networks
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| Error::NoSuchNetwork(name.to_string()))?;
        let driver = network.driver;
        network.overlay.as_mut().ok_or_else(|| Error::NotOverlay {
            network: name.to_string(),
            driver: driver.to_string(),
        })
    }
}

/// The overlay rules [`State::check`] applies: overlay networks and only
/// they have VXLAN settings, and no two share a VNI.
pub(crate) fn check(networks: &[Network]) -> std::result::Result<(), String> {
    let mut seen = std::collections::BTreeMap::new();
    for net in networks {
        match (&net.driver, &net.overlay) {
            (Driver::Overlay, None) => {
                return Err(format!(
                    "overlay network {} has no VXLAN settings",
                    net.name
                ));
            }
            (Driver::Overlay, Some(o)) => {
                if let Some(other) = seen.insert(o.vni, net.name.as_str()) {
                    return Err(format!(
                        "networks {other} and {} both use VNI {}",
                        net.name, o.vni
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(format!(
                    "network {} has VXLAN settings but driver {}",
                    net.name, net.driver
                ));
            }
            (_, None) => {}
        }
    }
    Ok(())
}

/// Reads an overlay record the way builds before the MTU became every
/// network's own wrote it (`"overlay": {"mtu": M, ...}`): moves `M` to the
/// network's `mtu`, so a shared store written by such a build keeps the
/// MTU it was given instead of falling back to the default.
pub(crate) fn upgrade_legacy_mtu(network: &mut serde_json::Value) {
    let Some(record) = network.as_object_mut() else {
        return;
    };
    let legacy = record
        .get_mut("overlay")
        .and_then(serde_json::Value::as_object_mut)
        .and_then(|overlay| overlay.remove("mtu"));
    if let Some(mtu) = legacy {
        record.entry("mtu").or_insert(mtu);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Predefined;

    fn fresh() -> State {
        State::new(Predefined {
            bridge_id: "b".repeat(64),
            host_id: "h".repeat(64),
            none_id: "n".repeat(64),
            created: String::new(),
        })
    }

    fn spec(subnet: &str) -> NetworkSpec {
        NetworkSpec {
            subnet: subnet.into(),
            ..NetworkSpec::default()
        }
    }

    fn create(state: &mut State, name: &str, subnet: &str, o: OverlaySpec) -> Result<Network> {
        state
            .create_overlay_network(name, "1".repeat(64), String::new(), &spec(subnet), o)
            .cloned()
    }

    #[test]
    fn defaults_are_the_first_auto_vni_port_4789_and_mtu_1450() {
        let mut state = fresh();
        let net = create(&mut state, "ov", "10.10.0.0/24", OverlaySpec::default()).unwrap();
        assert_eq!(net.driver, Driver::Overlay);
        assert_eq!(
            net.overlay(),
            Some(&OverlayConfig {
                vni: 4096,
                vxlan_port: 4789,
                peers: vec![]
            })
        );
        // The MTU is the network's own, written down so inspect shows it.
        assert_eq!(net.mtu, Some(1450));
        assert_eq!(net.link_mtu(), 1450);
        assert!(!net.internal);
        assert_eq!(net.gateway_cidr().as_deref(), Some("10.10.0.1/24"));
        let next = create(&mut state, "ov2", "10.11.0.0/24", OverlaySpec::default()).unwrap();
        assert_eq!(next.overlay().unwrap().vni, 4097);
        assert!(state.check().is_ok());
    }

    #[test]
    fn vnis_are_unique_and_in_range() {
        let mut state = fresh();
        let given = OverlaySpec {
            vni: Some(42),
            vxlan_port: Some(8472),
        };
        let net = create(&mut state, "a", "10.1.0.0/24", given).unwrap();
        assert_eq!(net.overlay().unwrap().vni, 42);
        let err = create(&mut state, "b", "10.2.0.0/24", given).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VNI 42 is already used by network a: pick another --vni, or leave it out to get a free one"
        );
        for vni in [0, MAX_VNI + 1] {
            let o = OverlaySpec {
                vni: Some(vni),
                ..OverlaySpec::default()
            };
            assert!(matches!(
                create(&mut state, "c", "10.3.0.0/24", o),
                Err(Error::BadVni { .. })
            ));
        }
        // The bridge rules hold too: no overlap with the default bridge.
        assert!(matches!(
            create(&mut state, "c", "172.17.3.0/24", OverlaySpec::default()),
            Err(Error::Overlap { .. })
        ));
    }

    #[test]
    fn mtu_and_internal_are_the_flags_every_network_takes() {
        let mut state = fresh();
        let create_with = |state: &mut State, name: &str, subnet: &str, mtu| {
            let spec = NetworkSpec {
                internal: true,
                mtu,
                ..spec(subnet)
            };
            state
                .create_overlay_network(
                    name,
                    "1".repeat(64),
                    String::new(),
                    &spec,
                    OverlaySpec::default(),
                )
                .cloned()
        };
        let jumbo = create_with(&mut state, "jumbo", "10.1.0.0/24", Some(8950)).unwrap();
        assert_eq!(jumbo.mtu, Some(8950));
        assert_eq!(jumbo.link_mtu(), 8950);
        assert!(jumbo.internal);
        // One range for every driver: check_mtu's.
        assert!(create_with(&mut state, "big", "10.2.0.0/24", Some(65_535)).is_ok());
        assert!(matches!(
            create_with(&mut state, "tiny", "10.3.0.0/24", Some(60)),
            Err(Error::BadMtu { mtu: 60, .. })
        ));
        assert!(state.network("tiny").is_err());
    }

    #[test]
    fn records_with_the_mtu_in_the_overlay_settings_still_load() {
        // As issue 17's first builds wrote overlay networks to etcd.
        let mut old = serde_json::json!({
            "name": "ov", "id": "ab", "driver": "overlay", "created": "x",
            "ipam": {"subnet": "10.10.0.0/24", "gateway": "10.10.0.1"},
            "overlay": {"vni": 4096, "vxlan_port": 4789, "mtu": 8950,
                        "peers": ["192.0.2.7:4789"]}
        });
        upgrade_legacy_mtu(&mut old);
        let net: Network = serde_json::from_value(old).unwrap();
        assert_eq!(net.mtu, Some(8950));
        assert_eq!(
            net.overlay(),
            Some(&OverlayConfig {
                vni: 4096,
                vxlan_port: 4789,
                peers: vec!["192.0.2.7:4789".parse().unwrap()],
            })
        );
        // Written back, the MTU is in one place only.
        let json = serde_json::to_value(&net).unwrap();
        assert_eq!(json["mtu"], 8950);
        assert!(json["overlay"].get("mtu").is_none(), "{json}");
        // A record in the new shape is left as it is.
        let mut new = json.clone();
        upgrade_legacy_mtu(&mut new);
        assert_eq!(new, json);
    }

    #[test]
    fn peers_are_added_once_and_removed_by_address() {
        let mut state = fresh();
        create(&mut state, "ov", "10.10.0.0/24", OverlaySpec::default()).unwrap();
        let ip: Ipv4Addr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            state.add_peer("ov", ip, None).unwrap(),
            "192.0.2.7:4789".parse().unwrap()
        );
        state.add_peer("ov", ip, Some(8472)).unwrap();
        assert!(matches!(
            state.add_peer("ov", ip, None),
            Err(Error::PeerExists { .. })
        ));
        assert!(matches!(
            state.add_peer("bridge", ip, None),
            Err(Error::NotOverlay { .. })
        ));
        assert!(matches!(
            state.add_peer("ov", Ipv4Addr::UNSPECIFIED, None),
            Err(Error::BadPeer { .. })
        ));
        assert_eq!(state.remove_peer("ov", ip, Some(8472)).unwrap().len(), 1);
        assert_eq!(state.remove_peer("ov", ip, None).unwrap().len(), 1);
        let err = state.remove_peer("ov", ip, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "network ov has no peer 192.0.2.7: see `tapswitch network inspect ov`"
        );
    }

    #[test]
    fn check_finds_shared_vnis_and_stray_settings() {
        let mut state = fresh();
        create(&mut state, "a", "10.1.0.0/24", OverlaySpec::default()).unwrap();
        create(&mut state, "b", "10.2.0.0/24", OverlaySpec::default()).unwrap();
        let vni = state.network("a").unwrap().overlay().unwrap().vni;
        let b = state.networks.iter_mut().find(|n| n.name == "b").unwrap();
        b.overlay.as_mut().unwrap().vni = vni;
        assert_eq!(
            state.check().unwrap_err(),
            "networks a and b both use VNI 4096"
        );
        let mut state = fresh();
        state.networks[0].overlay = Some(OverlayConfig {
            vni: 1,
            vxlan_port: 4789,
            peers: vec![],
        });
        assert!(state.check().unwrap_err().contains("but driver bridge"));
    }
}

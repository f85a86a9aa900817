//! Creating overlay networks and registering their static members: the
//! state changes behind `network create --driver overlay` and
//! `network peer add|rm`.

use std::net::{IpAddr, SocketAddr};

use super::config::{
    DEFAULT_MTU, DEFAULT_VXLAN_PORT, FIRST_AUTO_VNI, MAX_VNI, OverlayConfig, OverlaySpec,
};
use crate::error::{Error, Result};
use crate::network::{Driver, IpamConfig, Network, NetworkSpec, check_mtu, check_name};
use crate::state::State;

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
    pub fn add_peer(&mut self, name: &str, ip: IpAddr, port: Option<u16>) -> Result<SocketAddr> {
        let overlay = self.overlay_mut(name)?;
        let ip = ip.to_canonical();
        let peer = SocketAddr::new(ip, port.unwrap_or(overlay.vxlan_port));
        let unicast = match ip {
            IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
            // A link-local address names no host without its interface.
            IpAddr::V6(v6) => {
                !(v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local())
            }
        };
        if !unicast || peer.port() == 0 {
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
        ip: IpAddr,
        port: Option<u16>,
    ) -> Result<Vec<SocketAddr>> {
        let overlay = self.overlay_mut(name)?;
        let ip = ip.to_canonical();
        let matches = |p: &SocketAddr| p.ip() == ip && port.is_none_or(|port| p.port() == port);
        let removed: Vec<SocketAddr> = overlay.peers.iter().copied().filter(matches).collect();
        if removed.is_empty() {
            return Err(Error::NoSuchPeer {
                network: name.to_string(),
                peer: port.map_or_else(|| ip.to_string(), |p| SocketAddr::new(ip, p).to_string()),
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

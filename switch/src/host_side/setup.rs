//! What the switch's command line and IPAM say about the gateway's
//! services, before the gateway exists (its MAC follows from its address).

use std::net::{Ipv4Addr, SocketAddr};

use crate::dns::{DEFAULT_DOMAIN, NameTable};
use crate::flows::{FlowLimits, GatewayAddresses, Protocol};
use crate::mac::MacAddr;
use crate::services::ServicesConfig;

/// How the gateway's services run on one network.
#[derive(Debug, Clone)]
pub struct ServicesSetup {
    /// Outbound flows allowed: off for `--no-outbound` and `--internal`
    /// networks (every flow is answered "administratively prohibited").
    pub outbound: bool,
    /// `--allow-host-loopback`: TCP and UDP to the gateway's own address
    /// reach the host's 127.0.0.1.
    pub allow_host_loopback: bool,
    /// Resolvers that names outside the network are forwarded to.
    pub upstreams: Vec<SocketAddr>,
    /// The network's containers, by name.
    pub names: Vec<(String, Ipv4Addr)>,
    /// The network's MTU (the largest IP packet sent to a container).
    pub mtu: usize,
    pub limits: FlowLimits,
    /// Published ports (TCP and UDP): where the switch listens, and the
    /// container address and port each one leads to.
    pub published: Vec<Published>,
}

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub host: std::net::SocketAddrV4,
    pub container: std::net::SocketAddrV4,
    /// TCP or UDP (never ICMP).
    pub protocol: Protocol,
    /// The container's MAC, for the first frame sent to it.
    pub container_mac: Option<MacAddr>,
}

impl Default for ServicesSetup {
    fn default() -> Self {
        ServicesSetup {
            outbound: true,
            allow_host_loopback: false,
            upstreams: Vec::new(),
            names: Vec::new(),
            mtu: 1500,
            limits: FlowLimits::default(),
            published: Vec::new(),
        }
    }
}

impl ServicesSetup {
    /// The services' configuration for a gateway at `ip/prefix_len` with
    /// `mac`.
    pub fn config(&self, ip: Ipv4Addr, prefix_len: u8, mac: MacAddr) -> ServicesConfig {
        let mut names = NameTable::new(DEFAULT_DOMAIN, ip);
        for (name, address) in &self.names {
            names.insert(name, *address);
        }
        ServicesConfig {
            gateway: GatewayAddresses {
                mac,
                ip,
                prefix_len,
            },
            mtu: self.mtu,
            outbound: self.outbound,
            limits: self.limits,
            names,
            upstreams: self.upstreams.clone(),
            host_loopback: self.allow_host_loopback,
        }
    }
}

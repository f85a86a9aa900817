//! An overlay network's VXLAN settings as stored, and their defaults: the
//! bottom of the overlay module, which the network record itself holds.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The IANA port for VXLAN (RFC 7348 §5).
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// Where automatic VNIs start (Docker's overlay driver and Calico use 4096).
pub const FIRST_AUTO_VNI: u32 = 4096;
/// The largest 24-bit VNI.
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Bytes VXLAN adds on an IPv4 underlay: outer Ethernet, IPv4, UDP, VXLAN.
pub const VXLAN_OVERHEAD: u32 = 14 + 20 + 8 + 8;
/// Bytes VXLAN adds on an IPv6 underlay: the IPv6 header is 20 bytes longer.
pub const VXLAN_OVERHEAD_IPV6: u32 = 14 + 40 + 8 + 8;

/// What VXLAN adds to each inner frame on an underlay of `underlay`'s IP
/// version: the containers' MTU must be the underlay's minus this, because
/// VXLAN must never be fragmented.
pub fn vxlan_overhead(underlay: std::net::IpAddr) -> u32 {
    match underlay {
        std::net::IpAddr::V4(_) => VXLAN_OVERHEAD,
        std::net::IpAddr::V6(_) => VXLAN_OVERHEAD_IPV6,
    }
}
/// The usual underlay MTU.
pub const DEFAULT_UNDERLAY_MTU: u32 = 1500;
/// The containers' MTU on a 1500-byte underlay: an overlay network's
/// [`Network::mtu`](crate::Network::mtu) when `--mtu` is not given.
pub const DEFAULT_MTU: u32 = DEFAULT_UNDERLAY_MTU - VXLAN_OVERHEAD;

/// An overlay network's VXLAN settings and static members. The MTU is not
/// here: it is the network's own ([`Network::mtu`](crate::Network::mtu)), one field for every
/// driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayConfig {
    pub vni: u32,
    pub vxlan_port: u16,
    /// Hosts without tapswitch, each a VXLAN endpoint (underlay address and port).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<SocketAddr>,
}

/// What `network create --driver overlay` asks for beyond the addressing
/// (and beyond `--internal` and `--mtu`, which every network takes: see
/// [`NetworkSpec`](crate::NetworkSpec)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverlaySpec {
    pub vni: Option<u32>,
    pub vxlan_port: Option<u16>,
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

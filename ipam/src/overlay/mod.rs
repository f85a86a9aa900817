//! Overlay networks: one L2 segment across hosts, carried in VXLAN
//! (RFC 7348), with its addresses and its hosts kept in a shared store.
//!
//! An overlay network is a bridge network's addressing plus:
//!
//! | field        | default              | why                                                    |
//! |--------------|----------------------|--------------------------------------------------------|
//! | `vni`        | lowest free ≥ 4096   | VXLAN's 24-bit segment id; unique per store, so two networks never share a segment. 4096 is where Docker's and Calico's automatic VNIs start |
//! | `vxlan_port` | 4789                 | the IANA port (Docker, Calico); Linux's own default is 8472, so give `--vxlan-port 8472` to meet a kernel device made without `dstport` |
//! | `mtu`        | 1450                 | the containers' MTU: a 1500-byte underlay minus VXLAN's 50 bytes (outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8), because VXLAN must never be fragmented; 70 bytes on an IPv6 underlay (IPv6 40), so give `--mtu 1430` there. Kept in [`Network::mtu`](crate::Network::mtu) like every network's `--mtu`, not in [`OverlayConfig`] |
//! | `peers`      | none                 | hosts that run no tapswitch (a kernel `vxlan` device) registered with `network peer add`; they are members for good, unlike switches, whose registrations live under a lease (see [`crate::membership`]) |
//!
//! The rules here are pure; they run inside a store transaction like every
//! other change to the state.

pub(crate) mod config;
pub(crate) mod rules;
mod state_ops;

pub use config::{
    DEFAULT_MTU, DEFAULT_UNDERLAY_MTU, DEFAULT_VXLAN_PORT, FIRST_AUTO_VNI, MAX_VNI, OverlayConfig,
    OverlaySpec, VXLAN_OVERHEAD, VXLAN_OVERHEAD_IPV6, vxlan_overhead,
};

#[cfg(test)]
mod tests;

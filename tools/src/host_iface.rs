//! `serve --host-iface NAME`: the host's own leg on the network, what
//! `docker0` is on a Docker host.
//!
//! Docker's bridge carries the gateway address itself, so the host reaches
//! every container by its address. Here the gateway is the switch's own
//! smoltcp host, so the host gets a leg of its own: a TAP device in the
//! switch's namespace, attached as a port, carrying the network's last
//! usable address (172.17.255.254/16 on `bridge`) and the network's MTU.
//! The kernel then routes the subnet through it, ARPs for the containers
//! and talks to them directly, as through `docker0`.
//!
//! - The address is recorded in IPAM as the auxiliary address
//!   [`AUX_NAME`], so it is never leased; the record stays when the switch
//!   stops (the next start finds it again), as `--aux-address` records do.
//! - The device is created by the switch and is not persistent: it goes
//!   when the switch stops, whatever way it stops. A name already in use is
//!   refused before anything is made.
//! - Root mode only: an ordinary user may not add interfaces to the host's
//!   namespace.

use std::io;
use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use ports::{OpenedPort, PortError};

use crate::netlink::{Netlink, disable_ipv6};

/// The name of the host interface's address among the network's auxiliary
/// addresses (`network inspect` shows it).
pub const AUX_NAME: &str = "host-iface";

/// What the host interface is made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIfaceSpec {
    pub name: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// The network's MTU.
    pub mtu: u32,
}

impl HostIfaceSpec {
    /// The host interface of the network whose gateway is
    /// `gateway/prefix_len`: its last usable address.
    pub fn new(name: &str, gateway: Ipv4Addr, prefix_len: u8, mtu: u32) -> Result<HostIfaceSpec> {
        let address = last_usable(gateway, prefix_len)?;
        Ok(HostIfaceSpec {
            name: name.to_string(),
            address,
            prefix_len,
            mtu,
        })
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | host_mask(self.prefix_len))
    }
}

fn host_mask(prefix_len: u8) -> u32 {
    u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0)
}

/// The subnet's last usable address (the one below its broadcast
/// address); an error when that is the gateway's own (a /30 whose
/// gateway took it).
pub fn last_usable(gateway: Ipv4Addr, prefix_len: u8) -> Result<Ipv4Addr> {
    if !(1..=30).contains(&prefix_len) {
        bail!("--host-iface: a /{prefix_len} subnet has no room for the host's address");
    }
    let broadcast = u32::from(gateway) | host_mask(prefix_len);
    let last = Ipv4Addr::from(broadcast - 1);
    if last == gateway {
        bail!(
            "--host-iface: the subnet's last usable address {last} is the gateway's; the host interface needs one of its own (a larger subnet)"
        );
    }
    Ok(last)
}

/// Refuses, with one line, what would make the host interface fail
/// halfway: rootless mode, and a name some interface already has.
pub fn check_can_create(name: &str) -> Result<()> {
    if crate::rootless::Mode::current() == crate::rootless::Mode::Rootless {
        bail!(
            "--host-iface needs root: it adds an interface to the host's network namespace, which an ordinary user may not; reach rootless containers through published ports (-p) instead"
        );
    }
    ports::check_interface_name(name)?;
    if ports::interface_index(name).is_some() {
        bail!(
            "--host-iface {name}: an interface with that name already exists; give a name no interface has (the switch creates the device and removes it when it stops)"
        );
    }
    Ok(())
}

/// Records the host interface's address as the auxiliary address
/// [`AUX_NAME`] of `network`, so it is never leased. Refuses an address a
/// container holds or another auxiliary name keeps. False when IPAM does
/// not know the network (a `--gateway` of its own): nothing to record.
pub fn reserve(store: &ipam::Store, network: &str, spec: &HostIfaceSpec) -> Result<bool> {
    let outcome = store.update(|state| {
        let leases = state.leases(network);
        let Some(record) = state.networks.iter_mut().find(|n| n.name == network) else {
            return Ok(Ok(false));
        };
        let Some(ipam) = record.ipam.as_mut() else {
            return Ok(Ok(false));
        };
        if !ipam.subnet.contains(spec.address) {
            return Ok(Err(format!(
                "--host-iface: {} is not in network {network}'s subnet {}",
                spec.address, ipam.subnet
            )));
        }
        if let Some(holder) = leases.get(&spec.address) {
            return Ok(Err(format!(
                "--host-iface: {} (the subnet's last usable address, the host interface's) is leased to container {holder}; remove that container first",
                spec.address
            )));
        }
        let other = ipam
            .aux_addresses
            .iter()
            .find(|(name, ip)| **ip == spec.address && name.as_str() != AUX_NAME);
        if let Some((other, _)) = other {
            return Ok(Err(format!(
                "--host-iface: {} is kept as auxiliary address {other} of network {network}; the host interface needs it",
                spec.address
            )));
        }
        ipam.aux_addresses
            .insert(AUX_NAME.to_string(), spec.address);
        Ok(Ok(true))
    })?;
    outcome.map_err(anyhow::Error::msg)
}

/// Creates the TAP device and gives it the address and MTU: the opener of
/// the host interface's port.
pub fn open_port(spec: &HostIfaceSpec, lanes: usize) -> Result<OpenedPort, PortError> {
    let name = spec.name.as_str();
    let tap = ports::tap::open_lanes(name, lanes)?;
    let failed = |doing, source| PortError::Io {
        name: name.to_string(),
        doing,
        source,
    };
    if !tap.created {
        // Someone made it between the check and now: it is not ours.
        return Err(failed(
            "creating the host interface",
            io::Error::from(io::ErrorKind::AlreadyExists),
        ));
    }
    configure(spec).map_err(|err| failed("configuring the host interface", err))?;
    // The TAP port read its MTU when it opened the device, still the
    // default then; it follows the interface's MTU from here on.
    let port = tap.port;
    port.tx.refresh_mtu();
    Ok(port)
}

/// `ip link set NAME mtu M; ip addr add ADDRESS/LEN brd B dev NAME`, with
/// IPv6 off so the kernel sends no IPv6 chatter into the switch.
fn configure(spec: &HostIfaceSpec) -> io::Result<()> {
    disable_ipv6(&spec.name)?;
    let mut nl = Netlink::open()?;
    let index = nl.require_index(&spec.name)?;
    nl.set_mtu(index, spec.mtu)?;
    nl.add_address(index, spec.address, spec.prefix_len, spec.broadcast())?;
    nl.set_up(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_takes_the_last_usable_address() {
        let last =
            |gw: [u8; 4], len| last_usable(Ipv4Addr::from(gw), len).map_err(|e| e.to_string());
        assert_eq!(
            last([172, 17, 0, 1], 16),
            Ok(Ipv4Addr::new(172, 17, 255, 254))
        );
        assert_eq!(last([10, 9, 0, 1], 24), Ok(Ipv4Addr::new(10, 9, 0, 254)));
        assert_eq!(last([10, 9, 0, 1], 30), Ok(Ipv4Addr::new(10, 9, 0, 2)));
        assert!(last([10, 9, 0, 2], 30).unwrap_err().contains("gateway's"));
        assert!(last([10, 9, 0, 1], 31).is_err());
    }

    #[test]
    fn the_address_is_kept_from_leases_and_refused_when_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = ipam::Store::open(dir.path()).unwrap();
        let spec = HostIfaceSpec::new("tshost0", Ipv4Addr::new(172, 17, 0, 1), 16, 1500).unwrap();
        assert!(reserve(&store, "bridge", &spec).unwrap());
        // Twice is fine: a restarted switch finds its own record.
        assert!(reserve(&store, "bridge", &spec).unwrap());
        let state = store.load().unwrap();
        let bridge = state.network("bridge").unwrap();
        assert_eq!(
            bridge.ipam().unwrap().reserved(spec.address),
            Some(format!("auxiliary address {AUX_NAME}"))
        );
        assert!(!reserve(&store, "nosuch", &spec).unwrap());
        let outside = HostIfaceSpec {
            address: Ipv4Addr::new(10, 0, 0, 9),
            ..spec
        };
        assert!(
            reserve(&store, "bridge", &outside)
                .unwrap_err()
                .to_string()
                .contains("not in network bridge's subnet")
        );
    }
}

//! Whether an overlay network's frames fit the underlay: `serve --network
//! NAME --underlay IP` refuses a network whose MTU plus VXLAN's overhead
//! exceeds the MTU of the interface that has the underlay address.
//!
//! VXLAN must never be fragmented (RFC 7348, section 4.3): a kernel vxlan
//! device drops what does not fit, and a frame that leaves in fragments
//! crosses slowly when it crosses at all. The overhead is 50 bytes over
//! IPv4 and 70 over IPv6 (`ipam::overlay::vxlan_overhead`), so a network
//! made with the default MTU for a 1500-byte IPv4 underlay fits neither a
//! 1500-byte IPv6 one nor a 1400-byte IPv4 one (a cloud's, a tunnel's).
//!
//! [`check`] finds the interface over rtnetlink ([`crate::netlink`]) and
//! says nothing when it cannot: binding the tunnel's socket then says what
//! is wrong with the address. [`decide`] is the pure part.

use std::fmt;
use std::net::IpAddr;

use anyhow::Result;
use ipam::Network;
use ipam::network::MIN_MTU;

use crate::netlink::{Interface, Netlink};

/// Refuses `network` on `underlay` when its frames would not fit the MTU
/// of the interface holding that address (see the module docs).
pub fn check(network: &Network, underlay: IpAddr) -> Result<()> {
    let Some(interface) = interface_with(underlay) else {
        return Ok(());
    };
    decide(&network.name, network.link_mtu(), underlay, &interface)?;
    Ok(())
}

/// The interface that has `underlay` in this network namespace; `None`
/// when none has it or netlink cannot say.
fn interface_with(underlay: IpAddr) -> Option<Interface> {
    let found = Netlink::open().and_then(|mut netlink| netlink.interface_with_address(underlay));
    match found {
        Ok(interface) => interface,
        Err(err) => {
            log::debug!("cannot read the interface of --underlay {underlay}: {err}");
            None
        }
    }
}

/// Whether a network of MTU `network_mtu` fits VXLAN over `underlay` on
/// `interface`; the refusal says why and what to do.
pub fn decide(
    network: &str,
    network_mtu: u32,
    underlay: IpAddr,
    interface: &Interface,
) -> Result<(), Misfit> {
    let overhead = ipam::overlay::vxlan_overhead(underlay);
    if network_mtu.saturating_add(overhead) <= interface.mtu {
        return Ok(());
    }
    Err(Misfit {
        network: network.to_string(),
        network_mtu,
        underlay,
        overhead,
        interface: interface.name.clone(),
        interface_mtu: interface.mtu,
    })
}

/// A network too big for its underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    pub network: String,
    pub network_mtu: u32,
    pub underlay: IpAddr,
    /// VXLAN's bytes on this underlay's IP version.
    pub overhead: u32,
    pub interface: String,
    pub interface_mtu: u32,
}

impl Misfit {
    /// The largest MTU that fits, if a network may have it.
    pub fn mtu_that_fits(&self) -> Option<u32> {
        let fits = self.interface_mtu.checked_sub(self.overhead)?;
        (fits >= MIN_MTU).then_some(fits)
    }
}

/// One line: the network, both MTUs, the interface and the `--mtu` to give.
impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = if self.underlay.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        };
        write!(
            f,
            "network {} has MTU {}, and VXLAN over {version} adds {} bytes: more than the MTU {} of {}, which has --underlay {}; ",
            self.network,
            self.network_mtu,
            self.overhead,
            self.interface_mtu,
            self.interface,
            self.underlay
        )?;
        match self.mtu_that_fits() {
            Some(mtu) => write!(f, "create the network with --mtu {mtu}"),
            None => write!(
                f,
                "no network fits it (the smallest MTU is {MIN_MTU}): give --underlay an address on an interface of MTU {} or more",
                MIN_MTU + self.overhead
            ),
        }
    }
}

impl std::error::Error for Misfit {}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface(mtu: u32) -> Interface {
        Interface {
            index: 4,
            name: "u0".into(),
            mtu,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_network_fits_a_1500_byte_ipv4_underlay_exactly() {
        assert_eq!(decide("ov", 1450, ip("10.0.0.1"), &interface(1500)), Ok(()));
        assert!(decide("ov", 1451, ip("10.0.0.1"), &interface(1500)).is_err());
    }

    #[test]
    fn a_smaller_ipv4_underlay_refuses_it_naming_the_mtu_to_give() {
        let misfit = decide("ov", 1450, ip("10.99.0.1"), &interface(1400)).unwrap_err();
        assert_eq!(
            misfit.to_string(),
            "network ov has MTU 1450, and VXLAN over IPv4 adds 50 bytes: more than the MTU 1400 \
             of u0, which has --underlay 10.99.0.1; create the network with --mtu 1350"
        );
        assert_eq!(
            decide("ov", 1350, ip("10.99.0.1"), &interface(1400)),
            Ok(())
        );
    }

    #[test]
    fn over_ipv6_the_overhead_is_70_bytes() {
        let misfit = decide("ov", 1450, ip("fd99::1"), &interface(1500)).unwrap_err();
        assert_eq!(misfit.overhead, 70);
        assert_eq!(misfit.mtu_that_fits(), Some(1430));
        assert!(
            misfit
                .to_string()
                .contains("VXLAN over IPv6 adds 70 bytes: more than the MTU 1500 of u0"),
            "{misfit}"
        );
        assert_eq!(decide("ov", 1430, ip("fd99::1"), &interface(1500)), Ok(()));
    }

    #[test]
    fn an_underlay_too_small_for_any_network_says_so() {
        let misfit = decide("ov", 1450, ip("10.0.0.1"), &interface(100)).unwrap_err();
        assert_eq!(misfit.mtu_that_fits(), None);
        assert!(
            misfit
                .to_string()
                .ends_with("no network fits it (the smallest MTU is 68): give --underlay an address on an interface of MTU 118 or more"),
            "{misfit}"
        );
        let tiny = decide("ov", 1450, ip("10.0.0.1"), &interface(20)).unwrap_err();
        assert_eq!(tiny.mtu_that_fits(), None);
    }

    #[test]
    fn an_address_on_no_interface_is_left_to_the_socket() {
        // TEST-NET-1 is on no interface of the test's namespace.
        assert_eq!(interface_with(ip("192.0.2.77")), None);
        assert_eq!(
            interface_with(ip("127.0.0.1")).map(|i| i.name).as_deref(),
            Some("lo")
        );
    }
}

//! A container's plumbing on the host side, shared by `container create`
//! and `container attach`: finding the network's switch, checking
//! published host ports, the veth pair into the container's namespace, and
//! taking it all down again.

use std::fs::File;
use std::net::Ipv4Addr;
use std::net::{SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use ipam::{Container, PortProtocol, PublishedPort};

use crate::control::{self, Request, SwitchInfo};
use crate::netlink::{Netlink, VethPeer, disable_ipv6, netns};
use crate::rootless::Mode;

/// The options `container create` and `container attach` share: the
/// address, the switch, the published ports.
#[derive(Debug, Args)]
pub struct PlumbingArgs {
    /// The address to lease (default: the lowest free one).
    #[arg(long, value_name = "IP")]
    pub ip: Option<Ipv4Addr>,
    /// The control socket of the network's switch (default: found by the network's name).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Publish a container port on the host (repeatable; Docker's syntax: the host address defaults to 0.0.0.0, every address, and the protocol to tcp). The running switch of the network listens on the host port and connects into the container from the client's own address (TCP and UDP); `rm` and `detach` close it.
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[HOSTIP:]HOSTPORT:CPORT[/tcp|/udp]"
    )]
    pub publish: Vec<String>,
}

impl PlumbingArgs {
    /// The `-p` values, parsed; the first bad one is the error.
    pub fn published(&self) -> Result<Vec<PublishedPort>> {
        Ok(self
            .publish
            .iter()
            .map(|given| given.parse::<PublishedPort>())
            .collect::<Result<Vec<_>, _>>()?)
    }
}

/// The prefix of the host ends of container veth pairs.
pub const HOST_IFACE_PREFIX: &str = "ts-";

/// Binds each published host port for a moment, so that a port another
/// program holds is refused at create time with one clear line instead of
/// failing later in the switch.
pub(crate) fn probe_host_ports(ports: &[PublishedPort]) -> Result<()> {
    for port in ports {
        let address = SocketAddrV4::new(port.host_ip, port.host_port);
        let bound = match port.protocol {
            PortProtocol::Tcp => TcpListener::bind(address).map(drop),
            PortProtocol::Udp => UdpSocket::bind(address).map(drop),
        };
        let Err(err) = bound else { continue };
        let host = format!("{}:{}/{}", port.host_ip, port.host_port, port.protocol);
        match err.kind() {
            std::io::ErrorKind::AddrInUse => bail!(
                "host port {host} is in use on this host (another program has it): pick another host port, or stop that program"
            ),
            std::io::ErrorKind::PermissionDenied => bail!(
                "host port {host} needs privileges: ports below net.ipv4.ip_unprivileged_port_start need root or CAP_NET_BIND_SERVICE; pick a higher host port"
            ),
            std::io::ErrorKind::AddrNotAvailable => bail!(
                "host address {} is not an address of this host: give one of its addresses, or leave it out for every address",
                port.host_ip
            ),
            _ => bail!("cannot use host port {host}: {err}"),
        }
    }
    Ok(())
}

/// Asks the switch of `network` who it is, so that a container is only
/// built when there is a switch to plug it into.
pub(crate) fn find_switch(network: &str, control: Option<&Path>) -> Result<PathBuf> {
    let path = control.map_or_else(|| control::default_socket_path(network), Path::to_path_buf);
    if let Err(err) = std::os::unix::net::UnixStream::connect(&path) {
        let why = match err.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => String::new(),
            _ => format!(": {err}"),
        };
        bail!(
            "no switch serves network {network} (nothing listens on {}{why}): start one with `tapswitch serve --network {network}`, or pass --control PATH if it listens elsewhere",
            path.display()
        );
    }
    let info: SwitchInfo = control::call_as(&path, &Request::Info)?;
    if info.network != network {
        bail!(
            "the switch at {} serves network {}, not {network}: pass the control socket of {network}'s switch",
            path.display(),
            info.network
        );
    }
    Ok(path)
}

/// The name of the namespace at `sandbox` (`tapswitch-<name>`).
pub(crate) fn netns_name(sandbox: &Path) -> String {
    sandbox
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string()
}

/// Undoes what `container create` or `attach` built, as far as anything of it exists: detach the port,
/// delete the veth pair, delete the namespace. Detaching is best effort (the
/// switch may be gone); failing to delete the veth or namespace is an error,
/// since releasing the address while they live would let it be used twice.
/// An attached container's namespace is its owner's and stays.
pub(crate) fn tear_down(record: &Container) -> Result<()> {
    if record.keeper.is_some() || Mode::current() == Mode::Rootless {
        return crate::rootless::containers::tear_down(record);
    }
    if let (Some(control), Some(iface)) = (&record.control, &record.host_iface) {
        let request = Request::PortRm {
            name: iface.clone(),
        };
        if let Err(err) = control::call(control, &request) {
            log::debug!("detaching {iface}: {err:#}");
        }
    }
    if let Some(iface) = &record.host_iface {
        let mut nl = Netlink::open().context("opening a netlink socket")?;
        if let Some(index) = nl.link_index(iface)? {
            nl.delete_link(index)
                .with_context(|| format!("deleting the veth pair {iface}"))?;
        }
    }
    if let Some(sandbox) = &record.sandbox
        && record.attached.is_none()
    {
        netns::delete(sandbox).with_context(|| format!("deleting {}", sandbox.display()))?;
        netns::remove_etc(&netns_name(sandbox)).with_context(|| {
            format!("removing {}/{}", netns::NETNS_ETC_DIR, netns_name(sandbox))
        })?;
    }
    Ok(())
}

/// A veth pair whose end `inside` is in the namespace at `sandbox` (with
/// the container's MAC) and whose end `host_iface` is up here, with IPv6
/// off before it goes up so the kernel never sends IPv6 chatter into the
/// switch. Both ends get the network's `mtu` (`network create --mtu`).
pub(crate) fn make_veth_into(
    sandbox: &Path,
    host_iface: &str,
    inside: &str,
    mac: ipam::MacAddr,
    mtu: u32,
) -> Result<()> {
    let ns = File::open(sandbox).with_context(|| format!("opening {}", sandbox.display()))?;
    let mut nl = Netlink::open().context("opening a netlink socket")?;
    let peer = VethPeer {
        name: inside,
        netns: ns.as_fd(),
        mac: mac.0,
    };
    nl.create_veth(host_iface, peer)
        .with_context(|| format!("creating the veth pair {host_iface} / {inside}"))?;
    disable_ipv6(host_iface).with_context(|| format!("turning IPv6 off on {host_iface}"))?;
    let index = nl.require_index(host_iface)?;
    if mtu != ipam::network::ETHERNET_MTU {
        nl.set_mtu(index, mtu)
            .with_context(|| format!("setting the MTU of {host_iface} to {mtu}"))?;
        netns::run_in(sandbox, || {
            let mut nl = Netlink::open()?;
            let inside = nl.require_index(inside)?;
            nl.set_mtu(inside, mtu)
        })
        .with_context(|| {
            format!(
                "setting the MTU of {inside} to {mtu} in {}",
                sandbox.display()
            )
        })?;
    }
    nl.set_up(index)
        .with_context(|| format!("bringing up {host_iface}"))
}

/// Adds a container's host end `host_iface` to the switch at `control` as
/// a port owned by container `owner`.
pub fn plug_into_switch(control: &Path, host_iface: &str, owner: &str) -> Result<()> {
    let request = Request::PortAdd {
        iface: Some(host_iface.to_string()),
        tap: None,
        owner: Some(owner.to_string()),
    };
    control::call_as::<crate::control::PortInfo>(control, &request).with_context(|| {
        format!(
            "attaching {host_iface} to the switch at {}",
            control.display()
        )
    })?;
    Ok(())
}

/// Whose host ports a new container's must not meet, before its record
/// exists: on a shared store, those of the containers behind the switch it
/// will be attached to (`--control`, or the network's default socket) in
/// this boot; on a state directory, every container's.
pub(crate) fn early_port_scope(
    store: &ipam::Store,
    network: &str,
    control: Option<&Path>,
) -> ipam::state::PortScope {
    let switch = control.map_or_else(
        || crate::control::default_socket_path(network),
        Path::to_path_buf,
    );
    ipam::state::PortScope::before_record(
        store.is_shared(),
        &switch,
        &crate::statedir::current_boot_id(),
    )
}

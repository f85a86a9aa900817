//! `tapswitch container attach|detach`: plug a network namespace tapswitch
//! did not make (a Podman or Docker container run with `--network none`,
//! an `unshare --net` shell, an `ip netns add` namespace) into a switch.
//!
//! Attaching adds what `container create` gives its own containers: a veth
//! pair whose inner end (`eth0`, or the next free `ethN`) holds an address
//! leased from IPAM, a default route through the gateway (only when the
//! namespace has none: its owner's routing wins), and the host end `ts-<id>`
//! as a port of the network's running switch. The container is then
//! recorded like any other (`ls`, `inspect`, `network inspect`).
//!
//! The namespace is not ours: detaching (or `container rm`) deletes the
//! veth pair and releases the address, and never the namespace. When the
//! namespace goes (its last process exits, `ip netns del`), the kernel
//! deletes the veth pair with it and the start-up sweep releases the lease:
//! the record keeps the namespace's inode, so a reused PID or a replaced
//! bind mount is not mistaken for the namespace that was attached.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use ipam::store::{now, random_id};
use ipam::{AttachedNamespace, Container, Driver, Network};

use crate::netlink::netns::NamespaceId;
use crate::netlink::{Netlink, disable_ipv6, netns};
use crate::outln;
use crate::rootless::{self, Mode};
use crate::sandbox::{HOST_IFACE_PREFIX, find_switch, probe_host_ports, tear_down};
use crate::statedir::{StateArgs, current_boot_id};

/// Options of `tapswitch container attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    #[command(flatten)]
    pub state: StateArgs,
    pub name: String,
    /// A process in the namespace to attach (e.g. `podman inspect -f '{{.State.Pid}}' C`).
    #[arg(
        long,
        value_name = "PID",
        required_unless_present = "netns",
        conflicts_with = "netns"
    )]
    pub pid: Option<u32>,
    /// The namespace's file (e.g. `/run/netns/NAME`, `/proc/PID/ns/net`).
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// `bridge` (default) or a network made with `network create`.
    #[arg(long, default_value = ipam::state::DEFAULT_BRIDGE)]
    pub network: String,
    #[command(flatten)]
    pub plumbing: crate::sandbox::PlumbingArgs,
}

/// The file naming the namespace `--pid` or `--netns` chose.
pub fn namespace_path(pid: Option<u32>, netns: Option<&Path>) -> Result<PathBuf> {
    match (pid, netns) {
        (Some(pid), None) => Ok(PathBuf::from(format!("/proc/{pid}/ns/net"))),
        (None, Some(path)) => Ok(path.to_path_buf()),
        _ => bail!("give exactly one of --pid PID and --netns PATH"),
    }
}

pub fn attach(args: AttachArgs) -> Result<ExitCode> {
    ipam::network::check_name(&args.name)?;
    let ports = args.plumbing.published()?;
    let sandbox = namespace_path(args.pid, args.netns.as_deref())?;
    let id = NamespaceId::of(&sandbox).map_err(|err| match args.pid {
        Some(pid) if err.kind() == io::ErrorKind::NotFound => {
            anyhow::anyhow!("no process {pid}, or its network namespace is out of reach: {err}")
        }
        _ => anyhow::anyhow!("cannot attach {}: {err}", sandbox.display()),
    })?;
    // The switch's own namespace must never receive an `eth0` and a route.
    if NamespaceId::of(Path::new("/proc/self/ns/net")).is_ok_and(|own| own == id) {
        bail!(
            "{} is this host's own network namespace (where the switch runs): attach a container's namespace",
            sandbox.display()
        );
    }
    rootless::check_attachable(&sandbox)?;

    let store = args.state.open()?;
    let state = store.load()?;
    let network = state.network(&args.network)?.clone();
    if !matches!(network.driver, Driver::Bridge | Driver::Overlay) {
        bail!(
            "network {} uses driver {}, which has no switch to attach to: attach to a bridge network",
            network.name,
            network.driver
        );
    }
    // Port mistakes before anything is built, as `container create` does;
    // `add_container` checks the conflicts again under the lock.
    let early =
        crate::sandbox::early_port_scope(&store, &network.name, args.plumbing.control.as_deref());
    state.check_ports(&network, &ports, &early)?;
    probe_host_ports(&ports)?;
    let control = find_switch(&network.name, args.plumbing.control.as_deref())?;

    let mut tx = store.lock()?;
    if let Some(other) = tx.state.containers.iter().find(|c| {
        c.attached
            .as_ref()
            .is_some_and(|a| a.dev == id.dev && a.ino == id.ino)
    }) {
        bail!(
            "that namespace is already attached as container {}: detach it first with `tapswitch container detach {}`",
            other.name,
            other.name
        );
    }
    let rootless = Mode::current() == Mode::Rootless;
    // Rootless, the helper that builds the pair picks the name in there.
    let iface = if rootless {
        String::new()
    } else {
        netns::run_in(&sandbox, || Netlink::open()?.next_free_eth())
            .with_context(|| format!("listing the interfaces in {}", sandbox.display()))?
    };
    let container_id = random_id()?;
    let record = Container {
        name: args.name.clone(),
        host_iface: Some(format!("{HOST_IFACE_PREFIX}{}", &container_id[..12])),
        sandbox: Some(sandbox),
        id: container_id,
        network: network.name.clone(),
        created: now(),
        boot_id: current_boot_id(),
        control: Some(control),
        // The switch reads them from IPAM once this record is committed
        // (its port's owner names the container), and closes them when
        // detach removes the port.
        ports,
        attached: Some(AttachedNamespace {
            pid: args.pid,
            dev: id.dev,
            ino: id.ino,
            iface,
        }),
        ..Default::default()
    };
    let scope = ipam::state::PortScope::of(store.is_shared(), &record);
    let mut record = tx
        .state
        .add_container_in(record, args.plumbing.ip, scope)?
        .clone();
    let plugged = if rootless {
        plug_rootless(&mut record, &network)
    } else {
        plug(&record, &network)
    };
    if let Err(err) = plugged {
        let _ = tear_down(&record);
        return Err(err.context(format!("cannot attach container {}", record.name)));
    }
    if let Some(entry) = tx
        .state
        .containers
        .iter_mut()
        .find(|c| c.name == record.name)
    {
        entry.attached = record.attached.clone();
    }
    if let Err(err) = tx.commit() {
        let _ = tear_down(&record);
        return Err(err.into());
    }
    outln!("{}", record.id)?;
    if let (Some(gateway), Some(attached), Some(ip)) =
        (network.gateway(), &record.attached, record.ipv4)
    {
        eprintln!(
            "tapswitch: {} has {ip} on {}; use {gateway} as its DNS server (tapswitch does not manage its /etc/resolv.conf)",
            record.name, attached.iface
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the veth pair into the attached namespace and plugs its host end
/// into the switch.
fn plug(record: &Container, network: &Network) -> Result<()> {
    let (Some(sandbox), Some(host_iface), Some(ip), Some(mac), Some(control), Some(attached)) = (
        &record.sandbox,
        &record.host_iface,
        record.ipv4,
        record.mac,
        &record.control,
        &record.attached,
    ) else {
        bail!(
            "container {} is not an attached bridge container",
            record.name
        );
    };
    let ipam = network.ipam()?;
    let iface = attached.iface.as_str();

    crate::sandbox::make_veth_into(sandbox, host_iface, iface, mac, network.link_mtu())?;

    let (prefix, broadcast, gateway) = (
        ipam.subnet.prefix_len(),
        ipam.subnet.broadcast(),
        ipam.gateway,
    );
    configure_inside(sandbox, iface, ip, prefix, broadcast, gateway)?;

    crate::sandbox::plug_into_switch(control, host_iface, &record.name)
}

/// Rootless: both ends of the pair inside the namespace, built by a helper
/// in its user namespace; the switch opens its end through another helper.
fn plug_rootless(record: &mut Container, network: &Network) -> Result<()> {
    let (Some(sandbox), Some(host_iface), Some(control)) = (
        record.sandbox.clone(),
        record.host_iface.clone(),
        record.control.clone(),
    ) else {
        bail!(
            "container {} is not an attached bridge container",
            record.name
        );
    };
    let iface = rootless::containers::plug(record, network, &sandbox, &host_iface, "")?;
    if let Some(attached) = &mut record.attached {
        attached.iface = iface;
    }
    rootless::containers::add_port(record, &sandbox, &host_iface, &control)
}

/// Address, link up, and a default route unless the namespace has one.
fn configure_inside(
    sandbox: &Path,
    iface: &str,
    ip: Ipv4Addr,
    prefix: u8,
    broadcast: Ipv4Addr,
    gateway: Ipv4Addr,
) -> Result<()> {
    netns::run_in(sandbox, || {
        let mut nl = Netlink::open()?;
        disable_ipv6(iface)?;
        let index = nl.require_index(iface)?;
        nl.add_address(index, ip, prefix, broadcast)?;
        nl.set_up(index)?;
        if !nl.has_default_route()? {
            nl.add_default_route(index, gateway)?;
        }
        Ok(())
    })
    .with_context(|| {
        format!(
            "configuring {iface} ({ip}/{prefix}, default via {gateway} unless it has a route) in {}",
            sandbox.display()
        )
    })
}

/// `tapswitch container detach NAME...`: unplug and release, leaving the
/// namespace to its owner.
pub fn detach(args: &StateArgs, names: &[String]) -> Result<ExitCode> {
    let store = args.open()?;
    for name in names {
        let mut tx = store.lock()?;
        let record = tx.state.container(name)?.clone();
        if record.attached.is_none() {
            bail!(
                "container {name} was made by `container create`, not attached: remove it with `tapswitch container rm {name}`"
            );
        }
        tear_down(&record).with_context(|| {
            format!("cannot detach container {name} (its address stays leased)")
        })?;
        tx.state.remove_container(name)?;
        tx.commit()?;
        outln!("{name}")?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::netns::is_still_there;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        attach: AttachArgs,
    }

    #[test]
    fn publish_is_repeatable_in_dockers_syntax() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "attach",
            "web",
            "--pid",
            "42",
            "-p",
            "8080:80",
            "--publish",
            "127.0.0.1:5353:53/udp",
        ])
        .unwrap();
        assert_eq!(
            cli.attach.plumbing.publish,
            ["8080:80", "127.0.0.1:5353:53/udp"]
        );
        let ports: Vec<ipam::PublishedPort> = cli.attach.plumbing.published().unwrap();
        assert_eq!(ports[1].to_string(), "127.0.0.1:5353->53/udp");
        assert!("8080".parse::<ipam::PublishedPort>().is_err());
    }

    #[test]
    fn pid_names_the_process_namespace_file() {
        assert_eq!(
            namespace_path(Some(42), None).unwrap(),
            PathBuf::from("/proc/42/ns/net")
        );
        assert_eq!(
            namespace_path(None, Some(Path::new("/run/netns/x"))).unwrap(),
            PathBuf::from("/run/netns/x")
        );
        assert!(namespace_path(None, None).is_err());
    }

    #[test]
    fn own_namespace_has_an_identity_and_a_plain_file_has_none() {
        let own = NamespaceId::of(Path::new("/proc/self/ns/net")).unwrap();
        assert_eq!(
            own,
            NamespaceId::of(Path::new("/proc/thread-self/ns/net")).unwrap()
        );
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("not-a-namespace");
        std::fs::write(&plain, "").unwrap();
        assert!(NamespaceId::of(&plain).is_err());
    }

    #[test]
    fn another_inode_at_the_same_path_is_not_the_attached_namespace() {
        let own = NamespaceId::of(Path::new("/proc/self/ns/net")).unwrap();
        let path = Path::new("/proc/self/ns/net");
        let same = AttachedNamespace {
            dev: own.dev,
            ino: own.ino,
            ..Default::default()
        };
        assert!(is_still_there(path, &same));
        let reused = AttachedNamespace {
            ino: own.ino + 1,
            ..same.clone()
        };
        assert!(!is_still_there(path, &reused));
        assert!(!is_still_there(Path::new("/proc/0/ns/net"), &same));
    }
}

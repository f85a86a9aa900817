//! What `serve` tells the gateway's services: its flags (`--dns-upstream`,
//! `--no-outbound`, `--allow-host-loopback`) and what IPAM knows about the
//! network (`--internal`, `--mtu`, the containers' names and published
//! ports), read from the store every command uses ([`StateSource`]): the
//! state directory, or a shared store (etcd) holding every host's containers.
//!
//! On a shared store the gateway answers the names of every container of
//! the network, whichever host runs it (the overlay reaches them all), but
//! opens only the published ports of this host's containers ([`ThisHost`]):
//! the other hosts' switches open theirs. Containers made on other hosts
//! are never attached here, so a follower thread (`store_follower`) watches
//! the state key and tells the gateway of every change.

use std::collections::HashSet;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use clap::Args;
use switch::dns::{ResolvConf, choose_upstreams, parse_upstream};
use switch::flows::Protocol;
use switch::host_side::{Published, ServicesSetup};

/// Where the host's resolvers are listed.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// `serve`'s options for the gateway's services.
#[derive(Debug, Clone, Default, Args)]
pub struct ServicesArgs {
    /// A resolver for names outside the network (repeatable; default: the
    /// nameservers of the host's /etc/resolv.conf).
    #[arg(long = "dns-upstream", value_name = "IP[:PORT]", value_parser = parse_dns_upstream)]
    pub dns_upstreams: Vec<SocketAddr>,
    /// Refuse every outbound flow (ICMP "administratively prohibited"), as
    /// on a network created --internal.
    #[arg(long)]
    pub no_outbound: bool,
    /// Let containers reach the host's 127.0.0.1 through the gateway's own
    /// address (TCP and UDP). Off by default: a service bound to loopback
    /// expects only the host's own programs.
    #[arg(long)]
    pub allow_host_loopback: bool,
    /// Seconds a UDP flow may stay idle before its host socket closes
    /// (default 120, RFC 4787's floor; flows to port 53 keep 30 s unless
    /// this is shorter), like conntrack's `nf_conntrack_udp_timeout`.
    #[arg(long = "udp-timeout", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub udp_timeout: Option<u64>,
}

fn parse_dns_upstream(text: &str) -> Result<SocketAddr, String> {
    parse_upstream(text)
}

/// Which containers of a shared store are this host's: attached to this
/// switch (its control socket) in this boot. A container record names no
/// host; the boot id tells hosts apart, the control socket tells apart
/// switches of one machine (as in the overlay tests, hosts that are
/// namespaces of one kernel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThisHost {
    pub control: PathBuf,
    pub boot_id: String,
}

impl ThisHost {
    /// Whether `container` runs behind this switch.
    pub fn owns(&self, container: &ipam::Container) -> bool {
        container.control.as_deref() == Some(self.control.as_path())
            && container.boot_id == self.boot_id
    }
}

/// The services' setup for `network`: flags first, then IPAM's record of
/// the network (absent for the default network without a state file).
/// With `this_host` (a shared store) only its containers' ports are
/// published; every container is named either way.
pub fn setup(
    args: &ServicesArgs,
    network: Option<&ipam::State>,
    name: &str,
    this_host: Option<&ThisHost>,
) -> ServicesSetup {
    let resolv = std::fs::read_to_string(RESOLV_CONF)
        .map(|text| ResolvConf::parse(&text))
        .unwrap_or_default();
    let mut setup = ServicesSetup {
        outbound: !args.no_outbound,
        allow_host_loopback: args.allow_host_loopback,
        upstreams: choose_upstreams(&args.dns_upstreams, &resolv),
        ..ServicesSetup::default()
    };
    if let Some(secs) = args.udp_timeout {
        let idle = std::time::Duration::from_secs(secs);
        setup.limits.udp_idle = idle;
        setup.limits.udp_dns_idle = setup.limits.udp_dns_idle.min(idle);
    }
    let Some(state) = network else { return setup };
    if let Ok(network) = state.network(name) {
        setup.outbound &= !network.internal;
        setup.mtu = usize::try_from(network.link_mtu()).unwrap_or(setup.mtu);
    }
    setup.published = state
        .published_ports(name)
        .filter(|(container, _)| this_host.is_none_or(|host| host.owns(container)))
        .filter_map(|(container, port)| {
            Some(Published {
                host: SocketAddrV4::new(port.host_ip, port.host_port),
                container: SocketAddrV4::new(container.ipv4?, port.container_port),
                protocol: match port.protocol {
                    ipam::ports::PortProtocol::Tcp => Protocol::Tcp,
                    ipam::ports::PortProtocol::Udp => Protocol::Udp,
                },
                container_mac: container.mac.map(|mac| switch::MacAddr(mac.0)),
            })
        })
        .collect();
    setup.names = state
        .containers
        .iter()
        .filter(|c| c.network == name)
        .filter_map(|c| Some((c.name.clone(), c.ipv4?)))
        .collect();
    setup
}

/// IPAM's state, if a state file exists (nothing is created).
pub fn load_state(state_dir: Option<&Path>) -> Result<Option<ipam::State>> {
    let dir = ipam::state_dir(state_dir);
    if !dir.join(ipam::store::STATE_FILE).exists() {
        return Ok(None);
    }
    ipam::Store::open(&dir)
        .and_then(|store| store.load())
        .map(Some)
        .map_err(|err| anyhow!("reading IPAM's state in {}: {err}", dir.display()))
}

/// Where the services read the network's containers: the store the
/// commands use (`--store`, else `--state-dir`).
#[derive(Debug, Clone)]
pub enum StateSource {
    /// The state directory, read only once its state file exists (the
    /// default network needs none; nothing is created).
    Local(Option<PathBuf>),
    /// A shared store (etcd): the containers of every host.
    Shared(ipam::Store),
}

impl StateSource {
    /// The store `state` and the global `--store` choose; a shared one is
    /// connected to now (one clear line if it does not answer).
    pub fn open(state: &crate::statedir::StateArgs) -> Result<StateSource> {
        if state.require_shared("").is_ok() {
            Ok(StateSource::Shared(state.open_unpruned()?))
        } else {
            Ok(StateSource::Local(state.state_dir.clone()))
        }
    }

    /// The state as it is now (`None`: no state file yet).
    pub fn load(&self) -> Result<Option<ipam::State>> {
        match self {
            StateSource::Local(dir) => load_state(dir.as_deref()),
            StateSource::Shared(store) => store
                .load()
                .map(Some)
                .map_err(|err| anyhow!("reading IPAM's state in {}: {err}", store.describe())),
        }
    }

    /// The shared store, if this is one.
    pub fn shared(&self) -> Option<&ipam::Store> {
        match self {
            StateSource::Shared(store) => Some(store),
            StateSource::Local(_) => None,
        }
    }
}

/// What a running switch reads again when a container is attached or
/// (on a shared store) the state changes.
#[derive(Debug, Clone)]
pub struct ServicesSource {
    pub args: ServicesArgs,
    pub state: StateSource,
    pub network: String,
    /// This switch's containers, on a shared store.
    pub this_host: Option<ThisHost>,
}

impl ServicesSource {
    /// The source for a switch serving `network` with control socket
    /// `control`: on a shared store, this host is the one of that socket
    /// in this boot.
    pub fn new(args: ServicesArgs, state: StateSource, network: &str, control: &Path) -> Self {
        let this_host = state.shared().map(|_| ThisHost {
            control: control.to_path_buf(),
            boot_id: crate::statedir::current_boot_id(),
        });
        ServicesSource {
            args,
            state,
            network: network.to_string(),
            this_host,
        }
    }

    /// The services' setup from IPAM as it is now (at start).
    pub fn setup_now(&self) -> Result<ServicesSetup> {
        self.setup_without(&HashSet::new())
    }

    /// The services' setup from IPAM as it is now, without the `removed`
    /// containers, once `container` is recorded in it (`None` until then).
    pub fn setup_with(
        &self,
        container: &str,
        removed: &HashSet<String>,
    ) -> Result<Option<ServicesSetup>> {
        let state = self.state.load()?;
        let recorded = state
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == container));
        if !recorded {
            return Ok(None);
        }
        Ok(Some(self.setup_from(state, removed)))
    }

    /// The services' setup from IPAM without the `removed` containers
    /// (being removed, whether or not their records are gone yet).
    pub fn setup_without(&self, removed: &HashSet<String>) -> Result<ServicesSetup> {
        let state = self.state.load()?;
        Ok(self.setup_from(state, removed))
    }

    fn setup_from(
        &self,
        mut state: Option<ipam::State>,
        removed: &HashSet<String>,
    ) -> ServicesSetup {
        if let Some(state) = &mut state {
            state.containers.retain(|c| !removed.contains(&c.name));
        }
        setup(
            &self.args,
            state.as_ref(),
            &self.network,
            self.this_host.as_ref(),
        )
    }
}

#[cfg(test)]
mod tests;

//! What `serve` tells the gateway's services: its flags (`--dns-upstream`,
//! `--no-outbound`, `--allow-host-loopback`) and what IPAM knows about the
//! network (`--internal`, `--mtu`, the containers' names).

use std::collections::HashSet;
use std::net::{SocketAddr, SocketAddrV4};

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

/// The services' setup for `network`: flags first, then IPAM's record of
/// the network (absent for the default network without a state file).
pub fn setup(args: &ServicesArgs, network: Option<&ipam::State>, name: &str) -> ServicesSetup {
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
pub fn load_state(state_dir: Option<&std::path::Path>) -> Result<Option<ipam::State>> {
    let dir = ipam::state_dir(state_dir);
    if !dir.join(ipam::store::STATE_FILE).exists() {
        return Ok(None);
    }
    ipam::Store::open(&dir)
        .and_then(|store| store.load())
        .map(Some)
        .map_err(|err| anyhow!("reading IPAM's state in {}: {err}", dir.display()))
}

/// What a running switch reads again when a container is attached.
#[derive(Debug, Clone)]
pub struct ServicesSource {
    pub args: ServicesArgs,
    pub state_dir: Option<std::path::PathBuf>,
    pub network: String,
}

impl ServicesSource {
    /// The services' setup from IPAM as it is now, without the `removed`
    /// containers, once `container` is recorded in it (`None` until then).
    pub fn setup_with(
        &self,
        container: &str,
        removed: &HashSet<String>,
    ) -> Result<Option<ServicesSetup>> {
        let state = load_state(self.state_dir.as_deref())?;
        let recorded = state
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == container));
        if !recorded {
            return Ok(None);
        }
        self.setup_without(removed).map(Some)
    }

    /// The services' setup from IPAM without the `removed` containers
    /// (being removed, whether or not their records are gone yet).
    pub fn setup_without(&self, removed: &HashSet<String>) -> Result<ServicesSetup> {
        let mut state = load_state(self.state_dir.as_deref())?;
        if let Some(state) = &mut state {
            state.containers.retain(|c| !removed.contains(&c.name));
        }
        Ok(setup(&self.args, state.as_ref(), &self.network))
    }
}

//! `tapswitch serve`: run a switch in the foreground until SIGINT or SIGTERM.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use switch::dataplane::{Dataplane, DataplaneConfig, PortEvent, Tuning};
use switch::fabric::TraceSink;
use switch::mac_table::TableConfig;

use crate::control::{self, SwitchInfo};
use crate::running::{PortSpec, RunningSwitch};
use crate::{control_server, signals};

/// Options of `tapswitch serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The network to serve (its gateway and control socket follow from it).
    #[arg(long, default_value = control::DEFAULT_NETWORK)]
    pub network: String,
    /// An existing interface to attach, typically the host end of a veth pair (repeatable).
    #[arg(long = "iface", value_name = "IFNAME")]
    pub ifaces: Vec<String>,
    /// A TAP device to attach, created if it does not exist (repeatable).
    #[arg(long = "tap", value_name = "NAME")]
    pub taps: Vec<String>,
    #[command(flatten)]
    pub switch: SwitchOptions,
    /// Write a pcapng file per port into DIR.
    #[arg(long, value_name = "DIR")]
    pub capture: Option<PathBuf>,
    /// The control socket's path (default: /run/tapswitch/<network>.sock for root).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    #[command(flatten)]
    pub state: crate::statedir::StateArgs,
    #[command(flatten)]
    pub services: crate::gateway_services::ServicesArgs,
    /// The host's own leg on the network, as docker0 is on a Docker host
    /// (root mode): a TAP device NAME with the network's last usable
    /// address (kept from leases in IPAM) and MTU, so the host reaches the
    /// containers by their addresses. Removed when the switch stops.
    #[arg(long, value_name = "NAME")]
    pub host_iface: Option<String>,
    /// Microseconds a worker keeps polling for frames after the last one
    /// before it sleeps; 0 sleeps at once (lowest CPU). Busy polling turns
    /// the real-time priority off (a polling thread must not starve others).
    #[arg(long, value_name = "USECS", default_value_t = 0)]
    pub busy_poll: u64,
    /// Keep workers at ordinary priority (with the shortest time slice while
    /// traffic is light). By default, while traffic is light, workers run at
    /// the lowest real-time priority (SCHED_FIFO 1, needs CAP_SYS_NICE;
    /// refused, they take the short slices) so a frame is forwarded as soon
    /// as it arrives, as the kernel bridge does; under load they are
    /// ordinary threads.
    #[arg(long)]
    pub no_realtime: bool,
    /// Send every UDP datagram as its own frame. By default a worker sends
    /// a run of one flow's datagrams to a port as one UDP GSO super-frame,
    /// which the receiver's kernel cuts back into the same datagrams (as
    /// after a NIC's GRO); a capture inside the receiver then shows the
    /// super-frame. Like `ethtool -K IFACE gro off` for the switch.
    #[arg(long)]
    pub no_coalesce: bool,
    /// Forward every frame through the workers. By default, known unicast
    /// between two --iface ports (veth ends) is forwarded by the kernel
    /// once the switch has learned both hosts (a tc program the switch
    /// keeps in step with its MAC table; needs CAP_BPF, so never in
    /// rootless mode). A trace or a capture sees every frame either way.
    #[arg(long)]
    pub no_kernel_shortcut: bool,
    /// Worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Serve a live, read-only page of the switch (ports, MAC table with
    /// ageing, events, topology) on 127.0.0.1:PORT. Off by default.
    #[arg(long, value_name = "127.0.0.1:PORT")]
    pub web: Option<String>,
    /// Let --web listen on a non-loopback address: the page has no login
    /// and shows every host on the network to whoever reaches it.
    #[arg(long, requires = "web")]
    pub web_allow_remote: bool,
    /// Overlay networks: this host's underlay address (IPv4 or IPv6), where
    /// the VXLAN tunnel listens and the other hosts send.
    #[arg(long, value_name = "IP")]
    pub underlay: Option<std::net::IpAddr>,
    /// Overlay networks: seconds this switch's registration outlives it
    /// if it dies (renewed every third of it).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub lease_ttl: u64,
}

/// What `serve` takes about the MAC table, the gateway and tracing (replay has its own options).
#[derive(Debug, Clone, Args)]
pub struct SwitchOptions {
    /// Seconds a silent host stays in the MAC table; 0 = forever.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        allow_hyphen_values = true
    )]
    pub ageing_time: u64,
    /// The most MAC addresses the table learns.
    #[arg(long, value_name = "N", default_value_t = switch::mac_table::DEFAULT_CAPACITY)]
    pub max_macs: usize,
    /// The gateway's address and prefix (default for network bridge: 172.17.0.1/16).
    #[arg(long, value_name = "CIDR", conflicts_with = "no_gateway")]
    pub gateway: Option<String>,
    /// Run without a gateway.
    #[arg(long)]
    pub no_gateway: bool,
    /// Print one line per forwarding decision.
    #[arg(long)]
    pub trace: bool,
}

impl SwitchOptions {
    /// The MAC table these options ask for.
    pub fn table(&self) -> TableConfig {
        TableConfig {
            capacity: self.max_macs,
            ..TableConfig::default()
        }
        .with_ageing_secs(self.ageing_time)
    }

    /// The gateway these options ask for: none with `--no-gateway`,
    /// `--gateway CIDR`, else `default()`.
    pub fn gateway_or(
        &self,
        default: impl FnOnce() -> Result<(Ipv4Addr, u8)>,
    ) -> Result<Option<(Ipv4Addr, u8)>> {
        if self.no_gateway {
            return Ok(None);
        }
        match &self.gateway {
            Some(cidr) => parse_gateway(cidr).map(Some),
            None => default().map(Some),
        }
    }
}

/// The default network's gateway, as on Docker's docker0.
pub const DEFAULT_GATEWAY: (Ipv4Addr, u8) = (Ipv4Addr::new(172, 17, 0, 1), 16);

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let mode = crate::rootless::Mode::current();
    log::info!(
        "tapswitch {} in {mode} mode (uid {})",
        env!("CARGO_PKG_VERSION"),
        ports::namespace::effective_ids().0
    );
    if mode == crate::rootless::Mode::Rootless {
        crate::rootless::prereq::report();
        if !args.ifaces.is_empty() || !args.taps.is_empty() {
            log::warn!(
                "rootless: --iface and --tap ports are opened in your own network namespace, where an ordinary user may not (a persistent TAP of yours aside); add them from a namespace of yours with `tapswitch port add --iface|--tap NAME --pid PID`, and containers (`container create`, `container attach`) bring theirs (docs/rootless.md)"
            );
        }
    }
    let overlay = crate::overlay_link::setup_for(&crate::overlay_link::OverlayArgs {
        state: &args.state,
        network: &args.network,
        underlay: args.underlay,
        lease_ttl: args.lease_ttl,
    })?;
    let gateway = resolve_gateway(&args)?;
    if let Some(name) = &args.host_iface {
        crate::host_iface::check_can_create(name)?;
    }
    let web = args
        .web
        .as_deref()
        .map(|addr| crate::web::parse_addr(addr, args.web_allow_remote))
        .transpose()?;
    let socket = args
        .control
        .clone()
        .unwrap_or_else(|| control::default_socket_path(&args.network));
    let capture = match &args.capture {
        Some(dir) => Some(Arc::new(
            ports::capture::CaptureDir::open(dir).with_context(|| {
                format!("--capture {}: cannot use the directory", dir.display())
            })?,
        )),
        None => None,
    };
    // The store every command uses: on a shared one, every host's containers.
    let source = crate::gateway_services::ServicesSource::new(
        args.services.clone(),
        crate::gateway_services::StateSource::open(&args.state)?,
        &args.network,
        &socket,
    );
    let services = source.setup_now().unwrap_or_else(|err| {
        log::warn!("{err:#}; the gateway knows no container names");
        crate::gateway_services::setup(&args.services, None, &args.network, None)
    });
    let host_iface = match &args.host_iface {
        Some(name) => Some(host_iface_spec(&args, name, gateway, services.mtu)?),
        None => None,
    };
    let listener = control_server::bind(&socket, &args.network)?;
    let signals = signals::termination()?;

    let setup = SwitchSetup {
        network: args.network.clone(),
        control: socket.clone(),
        tuning: Tuning::new(
            args.workers.unwrap_or_else(default_workers),
            std::time::Duration::from_micros(args.busy_poll),
            !args.no_realtime,
            !args.no_coalesce,
        ),
        table: args.switch.table(),
        gateway,
        trace: args.switch.trace,
        capture,
        kernel_shortcut: !args.no_kernel_shortcut,
    };
    let switch = start_switch_with(setup, services)?;
    switch.set_self();
    let state_source = source.state.clone();
    let shared = source.state.shared().cloned();
    switch.set_services_source(source);
    if let Some(store) = shared
        && let Err(err) = crate::store_follower::spawn(&switch, store)
    {
        log::warn!("{err:#}; the gateway learns only this host's containers");
    }

    let specs = args
        .ifaces
        .iter()
        .map(|n| PortSpec::Iface(n.clone()))
        .chain(args.taps.iter().map(|n| PortSpec::Tap(n.clone())))
        .chain(host_iface.map(PortSpec::HostIface));
    for spec in specs {
        if let Err(err) = switch.attach(&spec, None) {
            let _ = std::fs::remove_file(&socket);
            return Err(err);
        }
    }
    reattach_containers(&switch, &args, &socket, &state_source);
    let overlay = match overlay {
        Some((store, setup)) => {
            match crate::overlay_link::OverlayLink::start(&switch, &store, setup) {
                Ok(link) => Some(link),
                Err(err) => {
                    let _ = std::fs::remove_file(&socket);
                    switch.shutdown();
                    return Err(err);
                }
            }
        }
        None => None,
    };
    // Serves until the process exits.
    let _control = control_server::spawn(listener, switch.clone())?;
    let _web = match web {
        Some(addr) => match crate::web::spawn(addr, switch.clone()) {
            Ok((bound, handle)) => {
                log::info!("web page on http://{bound}/");
                Some(handle)
            }
            Err(err) => {
                let _ = std::fs::remove_file(&socket);
                switch.shutdown();
                return Err(err);
            }
        },
        None => None,
    };
    log::info!(
        "serving network {} ({}) on {} port(s); gateway {}; control socket {}",
        args.network,
        switch.info().switch_id,
        switch.port_count(),
        switch.info().gateway.as_deref().unwrap_or("none"),
        socket.display()
    );
    // The code first: reading which pages to drop allocates, and the heap
    // gives that back too.
    ports::heap::give_back_start_up_code();
    ports::heap::give_back_start_up_memory();

    let events = switch.events();
    loop {
        crossbeam_channel::select! {
            recv(signals) -> signal => {
                if let Ok(signal) = signal {
                    log::info!("{signal}: shutting down");
                }
                break;
            }
            recv(events) -> event => match event {
                Ok(PortEvent::Removed { id, name, reason }) => {
                    switch.forget(&name);
                    log::warn!("port {id} {name} removed: {reason}; the switch goes on with the other ports");
                }
                Err(_) => break,
            },
        }
    }
    if let Some(link) = overlay {
        link.stop();
    }
    let _ = std::fs::remove_file(&socket);
    switch.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// A switch that restarts finds the containers of its network still there
/// (their namespaces and veth pairs outlive it): their host ends are
/// attached again, as Docker's daemon does on restart. Nothing is created:
/// without a state file there is nothing to re-attach.
fn reattach_containers(
    switch: &RunningSwitch,
    args: &ServeArgs,
    socket: &std::path::Path,
    store: &crate::gateway_services::StateSource,
) {
    // A shared store (overlay networks) holds every host's containers: the
    // ones whose interface is not on this host are skipped below.
    let state = match store.load() {
        Ok(Some(state)) => state,
        Ok(None) => return,
        Err(err) => {
            log::warn!("not re-attaching containers: {err:#}");
            return;
        }
    };
    for container in state
        .containers
        .iter()
        .filter(|c| c.network == args.network)
    {
        let (Some(iface), Some(control)) = (&container.host_iface, &container.control) else {
            continue;
        };
        if control != socket {
            continue;
        }
        // Rootless containers keep the switch's end in their own namespace.
        let spec = match (&container.keeper, &container.attached, &container.sandbox) {
            (Some(_), _, Some(netns)) | (_, Some(_), Some(netns))
                if crate::rootless::Mode::current() == crate::rootless::Mode::Rootless =>
            {
                if !crate::statedir::is_alive(container, &crate::statedir::current_boot_id()) {
                    continue;
                }
                PortSpec::InNamespace {
                    iface: iface.clone(),
                    netns: netns.clone(),
                }
            }
            _ if ports::interface_index(iface).is_none() => continue,
            _ => PortSpec::Iface(iface.clone()),
        };
        match switch.attach(&spec, Some(container.name.clone())) {
            Ok(_) => log::info!("re-attached container {} (port {iface})", container.name),
            Err(err) => log::warn!("could not re-attach container {}: {err:#}", container.name),
        }
    }
}

/// The host interface `--host-iface NAME` asks for, its address recorded
/// in IPAM (when IPAM knows the network).
fn host_iface_spec(
    args: &ServeArgs,
    name: &str,
    gateway: Option<(Ipv4Addr, u8)>,
    mtu: usize,
) -> Result<crate::host_iface::HostIfaceSpec> {
    let Some((address, prefix_len)) = gateway else {
        bail!("--host-iface needs the network's subnet, which --no-gateway leaves unknown");
    };
    let mtu = u32::try_from(mtu).unwrap_or(ipam::network::ETHERNET_MTU);
    let spec = crate::host_iface::HostIfaceSpec::new(name, address, prefix_len, mtu)?;
    let store = args.state.open_unpruned()?;
    if !crate::host_iface::reserve(&store, &args.network, &spec)? {
        log::warn!(
            "network {} is not in IPAM: {} is not kept from leases",
            args.network,
            spec.address
        );
    }
    log::info!(
        "host interface {name}: {}/{prefix_len}, mtu {mtu}",
        spec.address
    );
    Ok(spec)
}

/// `--gateway CIDR`, `--no-gateway`, or the network's default.
fn resolve_gateway(args: &ServeArgs) -> Result<Option<(Ipv4Addr, u8)>> {
    args.switch.gateway_or(|| {
        // The default network needs no state: 172.17.0.1/16, as on docker0.
        if args.network == control::DEFAULT_NETWORK {
            Ok(DEFAULT_GATEWAY)
        } else {
            args.state.served_gateway(&args.network)
        }
    })
}

/// Parses `172.17.0.1/16` into the gateway's address and prefix length.
pub fn parse_gateway(cidr: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || {
        format!(
            "--gateway {cidr}: expected an IPv4 address with a prefix length, such as 172.17.0.1/16"
        )
    };
    let (addr, len) = cidr.split_once('/').with_context(bad)?;
    let addr: Ipv4Addr = addr.parse().ok().with_context(bad)?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| (1..=30).contains(l))
        .with_context(bad)?;
    let host_bits = 32 - u32::from(len);
    let host = u32::from(addr) & ((1u32 << host_bits) - 1);
    if host == 0 || host == (1u32 << host_bits) - 1 {
        bail!(
            "--gateway {cidr}: that is the subnet's network or broadcast address; pick a host address such as the first one"
        );
    }
    Ok((addr, len))
}

/// How to start a switch: what `serve` reads from its options and the
/// demo fixes.
#[derive(Debug)]
pub struct SwitchSetup {
    pub network: String,
    /// The control socket's path, for `tapswitch show`.
    pub control: PathBuf,
    pub tuning: Tuning,
    pub table: TableConfig,
    pub gateway: Option<(Ipv4Addr, u8)>,
    /// Print one line per forwarding decision.
    pub trace: bool,
    pub capture: Option<Arc<ports::capture::CaptureDir>>,
    /// Whether the kernel may forward known unicast between veth ends.
    pub kernel_shortcut: bool,
}

/// Starts the dataplane `setup` describes, as the switch the control
/// socket serves (no ports yet).
pub fn start_switch(setup: SwitchSetup) -> Result<Arc<RunningSwitch>> {
    start_switch_with(setup, switch::host_side::ServicesSetup::default())
}

/// [`start_switch`] with the gateway's services set up as `services` says.
pub fn start_switch_with(
    setup: SwitchSetup,
    services: switch::host_side::ServicesSetup,
) -> Result<Arc<RunningSwitch>> {
    let stderr: Arc<TraceSink> = Arc::new(|line: &str| eprintln!("{line}"));
    let trace = setup.trace.then(|| stderr.clone());
    let capture_dir = setup.capture.as_ref().map(|c| c.dir().to_path_buf());
    let config = DataplaneConfig {
        tuning: setup.tuning,
        table: setup.table,
        gateway: setup.gateway,
        trace,
        // `tapswitch trace on` prints to stderr too.
        trace_output: Some(stderr),
        capture: setup.capture.clone(),
        services,
        kernel_shortcut: setup.kernel_shortcut,
    };
    let dataplane = Dataplane::start(config).context("starting the worker threads")?;
    let info = switch_info(&dataplane, &setup, capture_dir);
    Ok(Arc::new(RunningSwitch::new(dataplane, info)))
}

/// What `tapswitch stats` and `show` report about a switch.
fn switch_info(
    dataplane: &Dataplane,
    setup: &SwitchSetup,
    capture_dir: Option<PathBuf>,
) -> SwitchInfo {
    let gateway = dataplane.gateway();
    SwitchInfo {
        network: setup.network.clone(),
        switch_id: switch_id(gateway.map(|(_, _, mac)| mac), &setup.network),
        pid: std::process::id(),
        control: setup.control.clone(),
        gateway: gateway.map(|(ip, len, _)| format!("{ip}/{len}")),
        gateway_mac: gateway.map(|(_, _, mac)| mac),
        ageing_time: setup.table.max_age.map_or(0, |age| age.as_secs()),
        max_macs: setup.table.capacity,
        workers: dataplane.worker_count(),
        capture_dir,
        mode: crate::rootless::Mode::current().as_str().to_string(),
        dataplane: dataplane.metrics(),
    }
}

/// A bridge-id-like name for `tapswitch show`: priority 8000 and the
/// gateway's MAC, as `brctl show` prints `8000.0242ac110001`.
fn switch_id(gateway_mac: Option<switch::MacAddr>, network: &str) -> String {
    match gateway_mac {
        Some(mac) => format!("8000.{}", mac.to_string().replace(':', "")),
        None => {
            let hash = crate::traffic::fnv(crate::traffic::FNV_OFFSET, network.as_bytes());
            format!("8000.{:012x}", hash & 0xffff_ffff_ffff)
        }
    }
}

/// Worker threads by default: one per CPU, at most 8.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_cidr_is_checked() {
        assert_eq!(parse_gateway("172.17.0.1/16").unwrap(), DEFAULT_GATEWAY);
        for bad in [
            "172.17.0.1",
            "172.17.0.1/33",
            "172.17.0.0/16",
            "172.17.255.255/16",
            "x/16",
            "10.0.0.1/0",
        ] {
            assert!(parse_gateway(bad).is_err(), "{bad}");
        }
    }
}

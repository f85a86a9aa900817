//! `tapswitch container create|ls|inspect|exec|rm`: network namespaces set
//! up the way Docker sets up a container's network, without a kernel bridge.
//!
//! | `--network`       | what the container gets                                        |
//! |-------------------|----------------------------------------------------------------|
//! | `none`            | a namespace with only `lo`, up                                 |
//! | `host`            | no namespace of its own: the host's stack (recorded only)      |
//! | `bridge` or a created network | a namespace with `lo` and `eth0` (a veth end) holding the leased address and its Docker MAC, a default route via the gateway; the host end `ts-<id>` is attached to the network's running switch |
//!
//! Names: the namespace is `tapswitch-<name>` in `/run/netns` (so
//! `ip netns exec tapswitch-<name> ...` works too), the host end of the veth
//! `ts-` and the first 12 hex digits of the container id (15 bytes, the
//! kernel's limit).
//!
//! DNS: a container on a bridge or overlay network gets
//! `/etc/netns/tapswitch-<name>/resolv.conf` naming its gateway (which
//! answers DNS); `container exec` bind-mounts it over `/etc/resolv.conf` in
//! a private mount namespace, as `ip netns exec` does; `container rm`
//! removes it. (Rootless: the same file in the user's runtime directory,
//! see `rootless::containers::etc_dir`.)
//!
//! IPv6 is turned off on both veth ends: on the host end so the kernel does
//! not inject its own router solicitations and MLD reports into the switch,
//! and on `eth0` because tapswitch networks are IPv4 only (Docker does the
//! same on IPv4-only networks). `lo` keeps `::1`.
//!
//! Creating holds the state lock until the container is complete, so the
//! start-up sweep of another command never mistakes a half-built container
//! for a dead one; a failed create undoes what it built.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ipam::ports::{PortBinding, docker_ports};
use ipam::state::PortScope;
use ipam::store::{now, random_id};
use ipam::{Container, Driver, Network, State};
use serde::Serialize;

use crate::netlink::{Netlink, disable_ipv6, netns};
use crate::network::{table, to_docker_json};
use crate::rootless::Mode;
use crate::statedir::{StateArgs, current_boot_id};
use crate::{out, outln};

/// The prefix of container namespaces in `/run/netns`.
pub const NETNS_PREFIX: &str = "tapswitch-";
use crate::container_steps::{build_and_commit, exec_command};
pub use crate::sandbox::HOST_IFACE_PREFIX;
use crate::sandbox::{find_switch, make_veth_into, netns_name, probe_host_ports, tear_down};
/// The container end's name, as in Docker.
pub const CONTAINER_IFACE: &str = "eth0";

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create a container's network: a namespace, and on bridge networks a veth port on the switch.
    Create(CreateArgs),
    /// List containers.
    #[command(visible_aliases = ["list", "ps"])]
    Ls {
        #[command(flatten)]
        state: StateArgs,
        /// Print a JSON array, one object per container, instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show containers' network settings as JSON (like `docker inspect`).
    Inspect {
        #[command(flatten)]
        state: StateArgs,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run a command inside a container's network namespace.
    Exec {
        #[command(flatten)]
        state: StateArgs,
        /// The container's name.
        name: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Plug a namespace tapswitch did not make (a Podman or Docker container, `ip netns add`) into a switch.
    Attach(crate::attach::AttachArgs),
    /// Unplug attached containers: delete the veth, release the address; the namespace stays.
    Detach {
        #[command(flatten)]
        state: StateArgs,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove containers: detach the port, delete the veth and namespace, release the address.
    #[command(visible_alias = "remove")]
    Rm {
        #[command(flatten)]
        state: StateArgs,
        /// The containers to remove.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Options of `tapswitch container create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// The container's name (its namespace is /run/netns/tapswitch-NAME).
    pub name: String,
    /// `bridge` (default), `host`, `none`, or a network made with `network create`.
    #[arg(long, default_value = ipam::state::DEFAULT_BRIDGE)]
    pub network: String,
    #[command(flatten)]
    pub plumbing: crate::sandbox::PlumbingArgs,
}

pub fn run(command: ContainerCommand) -> Result<ExitCode> {
    match command {
        ContainerCommand::Create(args) => create(args),
        ContainerCommand::Ls { state, json } => ls(&state, json),
        ContainerCommand::Inspect { state, names } => inspect(&state, &names),
        ContainerCommand::Exec {
            state,
            name,
            command,
        } => exec(&state, &name, &command),
        ContainerCommand::Rm { state, names } => rm(&state, &names),
        ContainerCommand::Attach(args) => crate::attach::attach(args),
        ContainerCommand::Detach { state, names } => crate::attach::detach(&state, &names),
    }
}

/// `/run/netns/tapswitch-<name>`.
pub fn sandbox_path(name: &str) -> PathBuf {
    netns::path(&format!("{NETNS_PREFIX}{name}"))
}

fn create(args: CreateArgs) -> Result<ExitCode> {
    ipam::network::check_name(&args.name)?;
    let ports = args.plumbing.published()?;
    let store = args.state.open()?;
    let state = store.load()?;
    let network = state.network(&args.network)?.clone();
    // Port mistakes first: they cost nothing to find and need no switch.
    let early =
        crate::sandbox::early_port_scope(&store, &network.name, args.plumbing.control.as_deref());
    state.check_ports(&network, &ports, &early)?;
    probe_host_ports(&ports)?;
    // Find the switch before touching anything, so a missing one costs nothing.
    let control = match network.driver {
        Driver::Bridge | Driver::Overlay => Some(find_switch(
            &network.name,
            args.plumbing.control.as_deref(),
        )?),
        Driver::Host | Driver::Null => None,
    };
    let id = random_id()?;
    let record = Container {
        name: args.name.clone(),
        host_iface: control
            .as_ref()
            .map(|_| format!("{HOST_IFACE_PREFIX}{}", &id[..12])),
        sandbox: (network.driver != Driver::Host).then(|| sandbox_path(&args.name)),
        id,
        network: network.name.clone(),
        created: now(),
        ipv4: None,
        mac: None,
        boot_id: current_boot_id(),
        control,
        ports,
        attached: None,
        keeper: None,
    };

    if Mode::current() == Mode::Rootless {
        return crate::rootless::containers::create(&store, record, &network, args.plumbing.ip);
    }
    let mut tx = store.lock()?;
    let scope = PortScope::of(store.is_shared(), &record);
    let record = tx
        .state
        .add_container_in(record, args.plumbing.ip, scope)?
        .clone();
    build_and_commit(tx, &record, |r| build(r, &network), tear_down)
}

/// Builds what the record describes (see the module docs).
fn build(record: &Container, network: &Network) -> Result<()> {
    let Some(sandbox) = &record.sandbox else {
        return Ok(()); // host: nothing to build
    };
    make_namespace(sandbox)?;
    let (Some(host_iface), Some(ip), Some(mac), Some(control)) =
        (&record.host_iface, record.ipv4, record.mac, &record.control)
    else {
        // none: only loopback.
        return netns::run_in(sandbox, || {
            let mut nl = Netlink::open()?;
            let lo = nl.require_index("lo")?;
            nl.set_up(lo)
        })
        .with_context(|| format!("bringing up lo in {}", sandbox.display()));
    };
    let ipam = network.ipam()?;

    make_veth_into(
        sandbox,
        host_iface,
        CONTAINER_IFACE,
        mac,
        network.link_mtu(),
    )?;

    let (prefix, broadcast, gateway) = (
        ipam.subnet.prefix_len(),
        ipam.subnet.broadcast(),
        ipam.gateway,
    );
    netns::run_in(sandbox, || {
        let mut nl = Netlink::open()?;
        let lo = nl.require_index("lo")?;
        nl.set_up(lo)?;
        disable_ipv6(CONTAINER_IFACE)?;
        let eth0 = nl.require_index(CONTAINER_IFACE)?;
        nl.add_address(eth0, ip, prefix, broadcast)?;
        nl.set_up(eth0)?;
        nl.add_default_route(eth0, gateway)
    })
    .with_context(|| {
        format!(
            "configuring {CONTAINER_IFACE} ({ip}/{prefix}, default via {gateway}) in {}",
            sandbox.display()
        )
    })?;
    // The gateway answers DNS: `container exec` (and `ip netns exec`)
    // show this file as the container's /etc/resolv.conf.
    let resolv = switch::dns::container_resolv_conf(gateway, switch::dns::DEFAULT_DOMAIN);
    netns::write_etc(&netns_name(sandbox), "resolv.conf", &resolv).with_context(|| {
        format!(
            "writing {}/{}/resolv.conf",
            netns::NETNS_ETC_DIR,
            netns_name(sandbox)
        )
    })?;

    crate::sandbox::plug_into_switch(control, host_iface, &record.name)
}

/// Creates the namespace; one left by an interrupted `create` of the same
/// name (we hold the lock and no record claims it) is replaced.
fn make_namespace(sandbox: &Path) -> Result<()> {
    let name = &netns_name(sandbox);
    if sandbox.exists() {
        log::warn!(
            "removing {}, left behind by an interrupted `container create`",
            sandbox.display()
        );
        netns::delete(sandbox).with_context(|| format!("removing {}", sandbox.display()))?;
    }
    netns::create(name).with_context(|| format!("creating network namespace {name}"))?;
    Ok(())
}

fn rm(args: &StateArgs, names: &[String]) -> Result<ExitCode> {
    let store = args.open()?;
    for name in names {
        let mut tx = store.lock()?;
        let Ok(record) = tx.state.container(name).cloned() else {
            // Idempotent: nothing recorded; still clear a namespace an
            // interrupted create may have left (under the lock, so that
            // it cannot be a concurrent create's).
            let leftover = sandbox_path(name);
            if leftover.exists() {
                netns::delete(&leftover)
                    .with_context(|| format!("deleting {}", leftover.display()))?;
                let _ = netns::remove_etc(&netns_name(&leftover));
            }
            drop(tx);
            eprintln!("tapswitch: container {name} does not exist; nothing to remove");
            continue;
        };
        tear_down(&record).with_context(|| {
            format!("cannot remove container {name} (its address stays leased)")
        })?;
        tx.state.remove_container(name)?;
        tx.commit()?;
        outln!("{name}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn exec(args: &StateArgs, name: &str, command: &[String]) -> Result<ExitCode> {
    let record = args.open()?.load()?.container(name)?.clone();
    if let Some(sandbox) = &record.sandbox
        && Mode::current() == Mode::Rootless
    {
        return crate::rootless::containers::exec(&record, sandbox, command);
    }
    if let Some(sandbox) = &record.sandbox {
        if !netns::exists(sandbox) {
            bail!(
                "the namespace {} of container {name} is gone: remove the container with `tapswitch container rm {name}`",
                sandbox.display()
            );
        }
        netns::enter_with_etc(sandbox, &netns_name(sandbox))
            .with_context(|| format!("entering {}", sandbox.display()))?;
    }
    exec_command(command)
}

fn ls(args: &StateArgs, json: bool) -> Result<ExitCode> {
    let state = args.open()?.load()?;
    let listening = live_listening(
        &state,
        &current_boot_id(),
        &mut crate::network::live_listening,
    );
    if json {
        outln!("{}", to_docker_json(&ls_json(&state, &listening))?)?;
        return Ok(ExitCode::SUCCESS);
    }
    out!("{}", render_ls(&state, &listening))?;
    Ok(ExitCode::SUCCESS)
}

/// Per container id (those publishing ports, of this machine): the
/// published ports its running switch listens on now, `None` when no
/// switch answered (not running, or none recorded).
pub type Listening = BTreeMap<String, Option<Vec<String>>>;

/// [`Listening`] for `state`'s containers of this boot (`boot_id`; on a
/// shared store the others are other hosts', whose switches are not
/// here). `ask` asks a switch by its control socket (each asked once).
pub fn live_listening(
    state: &State,
    boot_id: &str,
    ask: &mut dyn FnMut(&Path) -> Option<Vec<String>>,
) -> Listening {
    let mut answers: BTreeMap<PathBuf, Option<Vec<String>>> = BTreeMap::new();
    let mut listening = Listening::new();
    let ours = |c: &&Container| !c.ports.is_empty() && c.recorded_in_boot(boot_id);
    for container in state.containers.iter().filter(ours) {
        let open = container.control.as_ref().and_then(|control| {
            answers
                .entry(control.clone())
                .or_insert_with(|| ask(control))
                .clone()
        });
        let recorded: Vec<String> = container.ports.iter().map(ToString::to_string).collect();
        let open = open.map(|open| crate::network::listened_on(&recorded, &open));
        listening.insert(container.id.clone(), open);
    }
    listening
}

/// `container ls --json`: the table's columns, whole ids, null for "-";
/// `PortsListening` as in `container inspect` (null: no switch answered).
pub fn ls_json(state: &State, listening: &Listening) -> Vec<serde_json::Value> {
    state
        .containers
        .iter()
        .map(|c| {
            let prefix = prefix_len_of(state, c);
            let mut row = serde_json::json!({
                "ID": c.id,
                "Name": c.name,
                "Network": c.network,
                "IPv4Address": c.ipv4.zip(prefix).map(|(ip, p)| format!("{ip}/{p}")),
                "MacAddress": c.mac.map(|m| m.to_string()),
                "Port": c.host_iface,
                "Ports": ipam::ports::docker_ports(&c.ports),
            });
            if let Some(open) = listening.get(&c.id) {
                row["PortsListening"] = serde_json::json!(open);
            }
            row
        })
        .collect()
}

/// The prefix length of the subnet `container`'s network has (none for
/// a network without one, or one gone from the state).
fn prefix_len_of(state: &State, container: &Container) -> Option<u8> {
    state
        .network(&container.network)
        .ok()
        .and_then(Network::subnet)
        .map(|s| s.prefix_len())
}

/// `docker ps`'s PORTS cell, with what the running switch really listens
/// on: a published port it does not listen on is marked, and so is a
/// container whose switch did not answer; another host's container's
/// ports are shown as recorded.
fn ports_cell(container: &Container, listening: &Listening) -> String {
    let published: Vec<String> = container.ports.iter().map(ToString::to_string).collect();
    if published.is_empty() {
        return "-".to_string();
    }
    match listening.get(&container.id) {
        Some(Some(open)) => published
            .iter()
            .map(|port| {
                if open.contains(port) {
                    port.clone()
                } else {
                    format!("{port} (not listening)")
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(None) => format!("{} (switch not running)", published.join(", ")),
        None => published.join(", "),
    }
}

/// One line per container: id, name, network, address, MAC, port, and
/// `docker ps`'s PORTS column when some container publishes ports (the
/// table stays as it was when none does).
pub fn render_ls(state: &State, listening: &Listening) -> String {
    let dash = || "-".to_string();
    let any_ports = state.containers.iter().any(|c| !c.ports.is_empty());
    let rows: Vec<Vec<String>> = state
        .containers
        .iter()
        .map(|c| {
            let prefix = prefix_len_of(state, c);
            let mut row = vec![
                c.id[..12.min(c.id.len())].to_string(),
                c.name.clone(),
                c.network.clone(),
                c.ipv4
                    .zip(prefix)
                    .map_or_else(dash, |(ip, p)| format!("{ip}/{p}")),
                c.mac.map_or_else(dash, |m| m.to_string()),
                c.host_iface.clone().unwrap_or_else(dash),
            ];
            if any_ports {
                row.push(ports_cell(c, listening));
            }
            row
        })
        .collect();
    let mut headers = vec![
        "CONTAINER ID",
        "NAME",
        "NETWORK",
        "IPV4 ADDRESS",
        "MAC ADDRESS",
        "PORT",
    ];
    if any_ports {
        headers.push("PORTS");
    }
    table(&headers, &rows)
}

fn inspect(args: &StateArgs, names: &[String]) -> Result<ExitCode> {
    let state = args.open()?.load()?;
    let views = names
        .iter()
        .map(|name| {
            let container = state.container(name)?;
            let mut view = inspect_view(&state, container);
            if let (Some(control), false) = (&container.control, container.ports.is_empty())
                && container.recorded_in_boot(&current_boot_id())
            {
                let recorded: Vec<String> =
                    container.ports.iter().map(ToString::to_string).collect();
                view.tapswitch.ports_listening = crate::network::live_listening(control)
                    .map(|open| crate::network::listened_on(&recorded, &open));
            }
            Ok(view)
        })
        .collect::<Result<Vec<_>>>()?;
    outln!("{}", to_docker_json(&views)?)?;
    Ok(ExitCode::SUCCESS)
}

/// The network part of `docker inspect CONTAINER`, plus tapswitch's own.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerView {
    pub id: String,
    pub created: String,
    pub name: String,
    pub host_config: HostConfigView,
    pub network_settings: NetworkSettingsView,
    pub tapswitch: TapswitchView,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfigView {
    pub network_mode: String,
    /// Docker's `HostConfig.PortBindings` (absent without published ports).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub port_bindings: BTreeMap<String, Vec<PortBinding>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettingsView {
    pub sandbox_key: String,
    /// Docker's `NetworkSettings.Ports` (absent without published ports,
    /// so the view of such a container is as before).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, Vec<PortBinding>>,
    pub networks: BTreeMap<String, EndpointSettingsView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSettingsView {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    pub gateway: String,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: u8,
    pub mac_address: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TapswitchView {
    /// The host end of the veth pair, a port of the switch.
    pub port: Option<String>,
    /// The switch's control socket.
    pub control: Option<PathBuf>,
    /// The published ports (as `docker ps` writes them) the running switch
    /// listens on now; absent without ports or when no switch answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports_listening: Option<Vec<String>>,
}

pub fn inspect_view(state: &State, c: &Container) -> ContainerView {
    let network = state.network(&c.network).ok();
    let endpoint = EndpointSettingsView {
        network_id: network.map(|n| n.id.clone()).unwrap_or_default(),
        gateway: network
            .and_then(Network::gateway)
            .map(|g| g.to_string())
            .unwrap_or_default(),
        ip_address: c.ipv4.map(|ip| ip.to_string()).unwrap_or_default(),
        ip_prefix_len: c
            .ipv4
            .and(network.and_then(Network::subnet))
            .map_or(0, |s| s.prefix_len()),
        mac_address: c.mac.map(|m| m.to_string()).unwrap_or_default(),
    };
    ContainerView {
        id: c.id.clone(),
        created: c.created.clone(),
        name: c.name.clone(),
        host_config: HostConfigView {
            network_mode: c.network.clone(),
            port_bindings: docker_ports(&c.ports),
        },
        network_settings: NetworkSettingsView {
            sandbox_key: c
                .sandbox
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            ports: docker_ports(&c.ports),
            networks: [(c.network.clone(), endpoint)].into_iter().collect(),
        },
        tapswitch: TapswitchView {
            port: c.host_iface.clone(),
            control: c.control.clone(),
            ports_listening: None,
        },
    }
}

#[cfg(test)]
mod tests;

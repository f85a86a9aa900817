//! `tapswitch network create|ls|inspect|rm|prune|peer`: Docker's `docker
//! network` commands, with the same columns and JSON shape so the views
//! people know from the Docker documentation read the same here. Overlay
//! networks (several hosts, a shared store) add their VNI, VXLAN port and
//! members to both views.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ipam::store::{now, random_id};
use ipam::{Driver, Network, NetworkSpec, OverlaySpec, State};
use serde::Serialize;

use crate::overlay::{self, MemberView, PeerCommand};
use crate::statedir::{self, StateArgs};
use crate::{out, outln};

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network (a subnet and a gateway for a switch to serve).
    Create(CreateArgs),
    /// List networks (like `docker network ls`).
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show networks and their containers as JSON (like `docker network inspect`).
    Inspect {
        #[command(flatten)]
        state: StateArgs,
        /// The networks to show.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks that no container uses.
    #[command(visible_alias = "remove")]
    Rm {
        #[command(flatten)]
        state: StateArgs,
        /// The networks to remove.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Release the leases of containers that no longer exist (e.g. after a reboot).
    Prune {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Add or remove a host without tapswitch (a kernel vxlan device) as a member of an overlay network.
    #[command(subcommand)]
    Peer(PeerCommand),
}

/// Options of `tapswitch network create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// The network's name.
    pub name: String,
    /// `bridge` (one host) or `overlay` (several hosts in VXLAN; needs --store etcd://...).
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// The subnet in CIDR notation (default: the first free of 172.18.0.0/16 ... 172.31.0.0/16, 192.168.0.0/20 ...).
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,
    /// The gateway's address (default: the subnet's first address).
    #[arg(long, value_name = "IP")]
    pub gateway: Option<Ipv4Addr>,
    /// Allocate container addresses from this range only.
    #[arg(long, value_name = "CIDR")]
    pub ip_range: Option<String>,
    /// Keep an address back for a host tapswitch does not manage (repeatable).
    #[arg(long = "aux-address", value_name = "NAME=IP")]
    pub aux_addresses: Vec<String>,
    /// No access to or from outside: no outbound traffic, no published ports (Docker's flag; its switch refuses outbound traffic).
    #[arg(long)]
    pub internal: bool,
    /// The MTU of the network's interfaces, 68 to 65535 (default: 1500 for bridge, 1450 for overlay, a 1500-byte underlay minus VXLAN's 50 bytes; applied to the containers' interfaces, the gateway and `serve --host-iface`).
    #[arg(long, value_name = "M")]
    pub mtu: Option<u32>,
    /// Overlay: the VXLAN network identifier (default: the lowest free from 4096).
    #[arg(long, value_name = "N")]
    pub vni: Option<u32>,
    /// Overlay: the VXLAN UDP port (default 4789, IANA's; Linux's own default is 8472).
    #[arg(long, value_name = "PORT")]
    pub vxlan_port: Option<u16>,
}

/// Options of `tapswitch network ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Only print the ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print whole ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Print a JSON array, one object per network, instead of the table.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
}

pub fn run(command: NetworkCommand) -> Result<ExitCode> {
    match command {
        NetworkCommand::Create(args) => create(args),
        NetworkCommand::Ls(args) => ls(args),
        NetworkCommand::Inspect { state, names } => inspect(&state, &names),
        NetworkCommand::Rm { state, names } => rm(&state, &names),
        NetworkCommand::Prune { state } => prune(&state),
        NetworkCommand::Peer(command) => overlay::run_peer(command),
    }
}

fn create(args: CreateArgs) -> Result<ExitCode> {
    let overlay_spec = OverlaySpec {
        vni: args.vni,
        vxlan_port: args.vxlan_port,
    };
    match args.driver.as_str() {
        "bridge" if overlay_spec != OverlaySpec::default() => bail!(
            "--vni and --vxlan-port are settings of overlay networks: add --driver overlay, or leave them out"
        ),
        "bridge" | "overlay" => {}
        other => bail!(
            "driver {other:?} cannot be used to create networks: only `bridge` and `overlay` can (the `host` and `none` networks exist already)"
        ),
    }
    let overlay = args.driver == "overlay";
    if overlay {
        args.state.require_shared("overlay networks")?;
    }
    let store = args.state.open()?;
    let id = random_id()?;
    let network = store.update(|state| {
        let subnet = match &args.subnet {
            Some(subnet) => subnet.clone(),
            None => state
                .free_subnet()
                .ok_or(ipam::Error::NoFreePool)?
                .to_string(),
        };
        let spec = NetworkSpec {
            subnet,
            gateway: args.gateway,
            ip_range: args.ip_range.clone(),
            aux_addresses: args.aux_addresses.clone(),
            internal: args.internal,
            mtu: args.mtu,
        };
        if overlay {
            state
                .create_overlay_network(&args.name, id.clone(), now(), &spec, overlay_spec)
                .cloned()
        } else {
            state
                .create_network(&args.name, id.clone(), now(), &spec)
                .cloned()
        }
    })?;
    outln!("{}", network.id)?;
    Ok(ExitCode::SUCCESS)
}

fn ls(args: LsArgs) -> Result<ExitCode> {
    let store = args.state.open()?;
    let state = store.load()?;
    if args.quiet {
        for network in &state.networks {
            outln!("{}", id_column(network, args.no_trunc))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let members = overlay::members(&store, &state)?;
    if args.json {
        outln!("{}", to_docker_json(&ls_json(&state, &members))?)?;
        return Ok(ExitCode::SUCCESS);
    }
    out!("{}", render_ls(&state, &members, args.no_trunc))?;
    Ok(ExitCode::SUCCESS)
}

/// `network ls --json`: the table's columns under `docker network ls
/// --format json`'s keys (whole ids), plus the overlay columns.
pub fn ls_json(
    state: &State,
    members: &BTreeMap<String, Vec<MemberView>>,
) -> Vec<serde_json::Value> {
    state
        .networks
        .iter()
        .map(|n| {
            let mut row = serde_json::json!({
                "ID": n.id,
                "Name": n.name,
                "Driver": n.driver.to_string(),
                "Scope": scope(n),
            });
            if let Some(overlay) = n.overlay() {
                let list: Vec<String> = members
                    .get(&n.name)
                    .into_iter()
                    .flatten()
                    .map(MemberView::endpoint)
                    .collect();
                row["VNI"] = overlay.vni.into();
                row["VXLANPort"] = overlay.vxlan_port.into();
                row["Members"] = list.into();
            }
            row
        })
        .collect()
}

/// The table of `docker network ls`: NETWORK ID, NAME, DRIVER, SCOPE; when
/// there are overlay networks, also their VNI, VXLAN port and members
/// (`IP:PORT`, comma-separated).
pub fn render_ls(
    state: &State,
    members: &BTreeMap<String, Vec<MemberView>>,
    no_trunc: bool,
) -> String {
    let any_overlay = state.networks.iter().any(|n| n.overlay().is_some());
    let rows: Vec<Vec<String>> = state
        .networks
        .iter()
        .map(|n| {
            let mut row = vec![
                id_column(n, no_trunc).to_string(),
                n.name.clone(),
                n.driver.to_string(),
                scope(n).to_string(),
            ];
            if any_overlay {
                let (vni, port) = n.overlay().map_or((String::new(), String::new()), |o| {
                    (o.vni.to_string(), o.vxlan_port.to_string())
                });
                let list: Vec<String> = members
                    .get(&n.name)
                    .into_iter()
                    .flatten()
                    .map(MemberView::endpoint)
                    .collect();
                row.extend([vni, port, list.join(",")]);
            }
            row
        })
        .collect();
    if any_overlay {
        table(
            &[
                "NETWORK ID",
                "NAME",
                "DRIVER",
                "SCOPE",
                "VNI",
                "PORT",
                "MEMBERS",
            ],
            &rows,
        )
    } else {
        table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows)
    }
}

/// Docker's scope: `local` for one host; `global` for a network every host
/// of the store shares (the scope libnetwork gave overlay networks kept in
/// an external key-value store).
fn scope(network: &Network) -> &'static str {
    match network.driver {
        Driver::Overlay => "global",
        Driver::Bridge | Driver::Host | Driver::Null => "local",
    }
}

fn id_column(network: &Network, no_trunc: bool) -> &str {
    if no_trunc {
        &network.id
    } else {
        network.short_id()
    }
}

fn inspect(args: &StateArgs, names: &[String]) -> Result<ExitCode> {
    let store = args.open()?;
    let state = store.load()?;
    let members = overlay::members(&store, &state)?;
    let views = names
        .iter()
        .map(|name| {
            let network = state.network(name)?;
            let mut view = inspect_view(&state, network);
            view.peers = members.get(name).cloned();
            add_listening(&mut view, &state, &mut |path| live_listening(path));
            Ok(view)
        })
        .collect::<Result<Vec<_>>>()?;
    outln!("{}", to_docker_json(&views)?)?;
    Ok(ExitCode::SUCCESS)
}

fn rm(args: &StateArgs, names: &[String]) -> Result<ExitCode> {
    let store = args.open()?;
    for name in names {
        store.update(|state| state.remove_network(name))?;
        outln!("{name}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn prune(args: &StateArgs) -> Result<ExitCode> {
    let released = statedir::prune(&args.open_unpruned()?)?;
    if released.is_empty() {
        outln!("every lease belongs to a container that exists; nothing to release")?;
    }
    for container in released {
        match container.ipv4 {
            Some(ip) => outln!(
                "released {ip} on network {} (container {} no longer exists)",
                container.network,
                container.name
            )?,
            None => outln!(
                "forgot container {} on network {} (it no longer exists)",
                container.name,
                container.network
            )?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fills each publishing container's `PortsListening` with what its switch
/// (the record's control socket) says it listens on: `listening` asks a
/// switch once per socket (`None`: it did not answer).
pub fn add_listening(
    view: &mut NetworkView,
    state: &State,
    listening: &mut dyn FnMut(&std::path::Path) -> Option<Vec<String>>,
) {
    let mut answers: BTreeMap<std::path::PathBuf, Option<Vec<String>>> = BTreeMap::new();
    let boot_id = crate::statedir::current_boot_id();
    for container in state.containers_on(&view.name) {
        // Another boot's record on a shared store is another host's.
        if !container.recorded_in_boot(&boot_id) {
            continue;
        }
        let (Some(control), false) = (&container.control, container.ports.is_empty()) else {
            continue;
        };
        let Some(endpoint) = view.containers.get_mut(&container.id) else {
            continue;
        };
        let open = answers
            .entry(control.clone())
            .or_insert_with(|| listening(control));
        endpoint.ports_listening = open.as_ref().map(|open| listened_on(&endpoint.ports, open));
    }
}

/// Of the recorded `ports` (as `docker ps` writes them), those in `open`.
pub(crate) fn listened_on(ports: &[String], open: &[String]) -> Vec<String> {
    ports
        .iter()
        .filter(|port| open.contains(port))
        .cloned()
        .collect()
}

/// The published ports the switch at `path` listens on now (`services`
/// over its control socket); `None` if it does not answer.
pub(crate) fn live_listening(path: &std::path::Path) -> Option<Vec<String>> {
    let report = crate::control::call(path, &crate::control::Request::Services).ok()?;
    let ports = report.get("listening")?.as_array()?;
    Some(
        ports
            .iter()
            .filter_map(|p| p.as_str().map(String::from))
            .collect(),
    )
}

/// `docker network inspect`'s shape, field for field in Docker's order
/// (hence structs rather than a JSON map, which would sort the keys).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkView {
    pub name: String,
    pub id: String,
    pub created: String,
    pub scope: &'static str,
    pub driver: String,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: IpamView,
    pub internal: bool,
    pub attachable: bool,
    pub containers: BTreeMap<String, EndpointView>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Overlay networks: every member (Docker lists a swarm overlay's peers here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<MemberView>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamView {
    pub driver: &'static str,
    pub options: Option<()>,
    pub config: Vec<IpamConfigView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfigView {
    pub subnet: String,
    #[serde(rename = "IPRange", skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    pub gateway: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub auxiliary_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointView {
    pub name: String,
    pub mac_address: String,
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
    /// tapswitch's own: the container's published ports, as `docker ps`
    /// shows them (absent when it has none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// tapswitch's own: of `Ports`, those the container's running switch
    /// listens on now (absent when no switch answered: then only the
    /// record is known; a port another program took is recorded but not
    /// listened on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports_listening: Option<Vec<String>>,
}

/// Docker's driver option for the MTU, as `docker network inspect` shows it.
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";

/// One network as `docker network inspect` shows it.
pub fn inspect_view(state: &State, network: &Network) -> NetworkView {
    let prefix = network.subnet().map(|s| s.prefix_len());
    let containers = state
        .containers_on(&network.name)
        .map(|c| {
            let ipv4 = match (c.ipv4, prefix) {
                (Some(ip), Some(prefix)) => format!("{ip}/{prefix}"),
                _ => String::new(),
            };
            let endpoint = EndpointView {
                name: c.name.clone(),
                mac_address: c.mac.map(|m| m.to_string()).unwrap_or_default(),
                ipv4_address: ipv4,
                ipv6_address: String::new(),
                ports: c.ports.iter().map(ToString::to_string).collect(),
                ports_listening: None,
            };
            (c.id.clone(), endpoint)
        })
        .collect();
    let config = network
        .ipam
        .iter()
        .map(|ipam| IpamConfigView {
            subnet: ipam.subnet.to_string(),
            ip_range: ipam.ip_range.map(|r| r.to_string()),
            gateway: ipam.gateway.to_string(),
            auxiliary_addresses: ipam
                .aux_addresses
                .iter()
                .map(|(name, ip)| (name.clone(), ip.to_string()))
                .collect(),
        })
        .collect();
    // Docker's option names where Docker has one. The MTU shows when the
    // record has one (always for overlays), like Docker's `--opt` it stands for.
    let mut options: BTreeMap<String, String> = network
        .mtu
        .map(|mtu| (MTU_OPTION.to_string(), mtu.to_string()))
        .into_iter()
        .collect();
    if let Some(o) = network.overlay() {
        options.insert(
            "com.docker.network.driver.overlay.vxlanid_list".to_string(),
            o.vni.to_string(),
        );
        options.insert("tapswitch.vxlan_port".to_string(), o.vxlan_port.to_string());
    }
    NetworkView {
        name: network.name.clone(),
        id: network.id.clone(),
        created: network.created.clone(),
        scope: scope(network),
        driver: network.driver.to_string(),
        enable_ipv6: false,
        ipam: IpamView {
            driver: "default",
            options: None,
            config,
        },
        internal: network.internal,
        attachable: false,
        containers,
        options,
        labels: BTreeMap::new(),
        peers: None,
    }
}

/// JSON indented by four spaces, as `docker ... inspect` prints it.
pub fn to_docker_json<T: Serialize>(value: &T) -> Result<String> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value
        .serialize(&mut serializer)
        .context("cannot encode JSON")?;
    Ok(String::from_utf8(out)?)
}

/// A table the way Docker's CLI prints one (Go's tabwriter with a minimum
/// cell width of 10 and 3 spaces of padding); the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..headers.len())
        .map(|col| {
            let widest = rows
                .iter()
                .map(|row| row.get(col).map_or(0, String::len))
                .chain([headers[col].len()])
                .max()
                .unwrap_or(0);
            (widest + 3).max(10)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (col, cell) in cells.iter().enumerate() {
            if col + 1 == cells.len() {
                out += cell;
            } else {
                out += &format!("{cell:<width$}", width = widths[col]);
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::Container;
    use ipam::state::Predefined;

    fn state() -> State {
        let mut state = State::new(Predefined {
            bridge_id: format!("7fca4eb8c647{}", "0".repeat(52)),
            host_id: format!("cf03ee007fb4{}", "1".repeat(52)),
            none_id: format!("9f904ee27bf5{}", "2".repeat(52)),
            created: "2026-01-01T00:00:00.000000000Z".into(),
        });
        for name in ["web", "db"] {
            let record = Container {
                name: name.into(),
                id: format!("{name:a>64}"),
                network: "bridge".into(),
                ..Default::default()
            };
            state.add_container(record, None).unwrap();
        }
        state
    }

    #[test]
    fn ls_looks_like_docker_network_ls() {
        assert_eq!(
            render_ls(&state(), &BTreeMap::new(), false),
            "NETWORK ID     NAME      DRIVER    SCOPE\n\
             7fca4eb8c647   bridge    bridge    local\n\
             cf03ee007fb4   host      host      local\n\
             9f904ee27bf5   none      null      local\n"
        );
    }

    #[test]
    fn inspect_has_dockers_fields_in_dockers_order() {
        let state = state();
        let view = inspect_view(&state, state.network("bridge").unwrap());
        let json = to_docker_json(&vec![view]).unwrap();
        let order = [
            "\"Name\": \"bridge\"",
            "\"Id\": \"7fca4eb8c647",
            "\"Created\"",
            "\"Driver\": \"bridge\"",
            "\"IPAM\"",
            "\"Subnet\": \"172.17.0.0/16\"",
            "\"Gateway\": \"172.17.0.1\"",
            "\"Containers\"",
        ];
        let mut at = 0;
        for needle in order {
            let found = json[at..]
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} missing or out of order in {json}"));
            at += found;
        }
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let containers = value[0]["Containers"].as_object().unwrap();
        assert_eq!(containers.len(), 2);
        let db = &containers[&format!("{:a>64}", "db")];
        assert_eq!(db["Name"], "db");
        assert_eq!(db["IPv4Address"], "172.17.0.3/16");
        assert_eq!(db["MacAddress"], "02:42:ac:11:00:03");
        assert!(json.starts_with("[\n    {\n        \"Name\""), "{json}");
        assert!(value[0]["IPAM"]["Config"][0].get("IPRange").is_none());
    }

    #[test]
    fn inspect_shows_internal_mtu_and_published_ports() {
        let mut state = state();
        let spec = NetworkSpec {
            subnet: "10.40.0.0/24".into(),
            internal: true,
            mtu: Some(9000),
            ..NetworkSpec::default()
        };
        state
            .create_network("jumbo", "j".repeat(64), String::new(), &spec)
            .unwrap();
        let view = inspect_view(&state, state.network("jumbo").unwrap());
        let value = serde_json::to_value(&view).unwrap();
        assert_eq!(value["Internal"], true);
        assert_eq!(
            value["Options"],
            serde_json::json!({"com.docker.network.driver.mtu": "9000"})
        );
        // The default bridge: not internal, no options, as before.
        let bridge =
            serde_json::to_value(inspect_view(&state, state.network("bridge").unwrap())).unwrap();
        assert_eq!(bridge["Internal"], false);
        assert_eq!(bridge["Options"], serde_json::json!({}));
        let web = format!("{:a>64}", "web");
        assert!(bridge["Containers"][&web].get("Ports").is_none());
        state
            .containers
            .iter_mut()
            .find(|c| c.name == "web")
            .unwrap()
            .ports = vec!["8080:80".parse().unwrap()];
        let bridge =
            serde_json::to_value(inspect_view(&state, state.network("bridge").unwrap())).unwrap();
        assert_eq!(
            bridge["Containers"][&web]["Ports"],
            serde_json::json!(["0.0.0.0:8080->80/tcp"])
        );
    }

    #[test]
    fn inspect_shows_which_published_ports_the_switch_listens_on() {
        let mut state = state();
        for (name, control, ports) in [
            ("web", "/run/a.sock", vec!["8080:80", "5353:53/udp"]),
            ("db", "/run/gone.sock", vec!["5432:5432"]),
        ] {
            let c = state
                .containers
                .iter_mut()
                .find(|c| c.name == name)
                .unwrap();
            c.control = Some(control.into());
            c.ports = ports.iter().map(|p| p.parse().unwrap()).collect();
        }
        let mut view = inspect_view(&state, state.network("bridge").unwrap());
        let mut asked = Vec::new();
        add_listening(&mut view, &state, &mut |path| {
            asked.push(path.to_path_buf());
            (path == std::path::Path::new("/run/a.sock")).then(|| {
                vec![
                    "0.0.0.0:8080->80/tcp".to_string(),
                    "0.0.0.0:9->9/tcp".into(),
                ]
            })
        });
        assert_eq!(asked.len(), 2, "each switch asked once");
        let value = serde_json::to_value(&view).unwrap();
        let web = &value["Containers"][format!("{:a>64}", "web")];
        // Recorded both; the switch listens on the TCP one only.
        assert_eq!(
            web["Ports"],
            serde_json::json!(["0.0.0.0:8080->80/tcp", "0.0.0.0:5353->53/udp"])
        );
        assert_eq!(
            web["PortsListening"],
            serde_json::json!(["0.0.0.0:8080->80/tcp"])
        );
        // A switch that does not answer: only the record is known.
        let db = &value["Containers"][format!("{:a>64}", "db")];
        assert!(db.get("PortsListening").is_none(), "{db}");
    }

    #[test]
    fn overlay_networks_add_vni_port_and_members_columns() {
        let mut state = state();
        let spec = NetworkSpec {
            subnet: "10.99.0.0/24".into(),
            ..NetworkSpec::default()
        };
        let id = format!("5526ab43a7a5{}", "3".repeat(52));
        state
            .create_overlay_network("ov", id, String::new(), &spec, OverlaySpec::default())
            .unwrap();
        let member = |ip: &str, kind| MemberView {
            name: String::new(),
            ip: ip.into(),
            port: 4789,
            kind,
            macs: Vec::new(),
        };
        let members = BTreeMap::from([(
            "ov".to_string(),
            vec![member("192.0.2.1", "switch"), member("192.0.2.9", "peer")],
        )]);
        assert_eq!(
            render_ls(&state, &members, false),
            "NETWORK ID     NAME      DRIVER    SCOPE     VNI       PORT      MEMBERS\n\
             7fca4eb8c647   bridge    bridge    local\n\
             cf03ee007fb4   host      host      local\n\
             9f904ee27bf5   none      null      local\n\
             5526ab43a7a5   ov        overlay   global    4096      4789      192.0.2.1:4789,192.0.2.9:4789\n"
        );
        let view = inspect_view(&state, state.network("ov").unwrap());
        assert_eq!(view.scope, "global");
        assert_eq!(view.options["com.docker.network.driver.mtu"], "1450");
    }

    #[test]
    fn tables_pad_like_go_tabwriter() {
        let out = table(
            &["A", "LONGER HEADER", "C"],
            &[vec!["x".into(), "y".into(), "z".into()]],
        );
        assert_eq!(
            out,
            "A         LONGER HEADER   C\nx         y               z\n"
        );
    }
}

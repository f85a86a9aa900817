//! `tapswitch show`: what `brctl show` shows for docker0, for every running
//! switch: the network it serves, its id, and its ports, each with the
//! container it belongs to.
//!
//! ```text
//! network   switch id           STP enabled   interfaces        container
//! bridge    8000.02421a2b3c4d   no            ts-3f2a1b4c5d6e   web
//!                                             ts-9a8b7c6d5e4f   db
//! ```
//!
//! Switches are found by asking, over its control socket, the switch of
//! every bridge network in the state directory, the sockets recorded by its
//! containers, and any `--control PATH` given. Networks whose switch does not
//! answer are not served, and not shown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use ipam::{Driver, State};

use crate::control::{self, PortInfo, Request, SwitchInfo};
use crate::network::table;
use crate::statedir::StateArgs;
use crate::{out, outln};

/// Options of `tapswitch show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Also ask the switch at this control socket (repeatable).
    #[arg(long, value_name = "PATH")]
    pub control: Vec<PathBuf>,
    /// Print a JSON array, one object per switch with its interfaces, instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A running switch and its ports, as asked.
#[derive(Debug, Clone)]
pub struct Served {
    pub info: SwitchInfo,
    pub ports: Vec<PortInfo>,
}

pub fn run(args: ShowArgs) -> Result<ExitCode> {
    let state = args.state.open()?.load()?;
    let served = ask_switches(&candidate_sockets(&state, &args.control));
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&render_json(&state, &served))?
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    out!("{}", render(&state, &served))?;
    Ok(ExitCode::SUCCESS)
}

/// Where switches may be listening, without repeats.
fn candidate_sockets(state: &State, extra: &[PathBuf]) -> Vec<PathBuf> {
    let by_network = state
        .networks
        .iter()
        .filter(|n| n.driver == Driver::Bridge)
        .map(|n| control::default_socket_path(&n.name));
    let recorded = state.containers.iter().filter_map(|c| c.control.clone());
    let mut sockets: Vec<PathBuf> = Vec::new();
    for socket in by_network.chain(recorded).chain(extra.iter().cloned()) {
        if !sockets.contains(&socket) {
            sockets.push(socket);
        }
    }
    sockets
}

/// Every switch that answers, once each (one switch may be reachable by
/// two paths), ordered by network name.
fn ask_switches(sockets: &[PathBuf]) -> Vec<Served> {
    let mut served: BTreeMap<(String, String), Served> = BTreeMap::new();
    for socket in sockets {
        let Ok(info) = control::call_as::<SwitchInfo>(socket, &Request::Info) else {
            continue;
        };
        let Ok(ports) = control::call_as::<Vec<PortInfo>>(socket, &Request::Ports) else {
            continue;
        };
        let key = (info.network.clone(), info.switch_id.clone());
        served.entry(key).or_insert(Served { info, ports });
    }
    served.into_values().collect()
}

/// The `brctl show` table. A port's container is the owner the switch knows,
/// or else the container whose veth it is.
pub fn render(state: &State, served: &[Served]) -> String {
    let mut rows = Vec::new();
    for switch in served {
        let ports: Vec<&PortInfo> = switch
            .ports
            .iter()
            .filter(|p| p.kind != "gateway")
            .collect();
        let first = |column: String, index: usize| if index == 0 { column } else { String::new() };
        if ports.is_empty() {
            rows.push(vec![
                switch.info.network.clone(),
                switch.info.switch_id.clone(),
                "no".into(),
                String::new(),
                String::new(),
            ]);
        }
        for (index, port) in ports.iter().enumerate() {
            let container = container_of(state, port).unwrap_or_default();
            rows.push(vec![
                first(switch.info.network.clone(), index),
                first(switch.info.switch_id.clone(), index),
                first("no".into(), index),
                port.name.clone(),
                container,
            ]);
        }
    }
    table(
        &[
            "network",
            "switch id",
            "STP enabled",
            "interfaces",
            "container",
        ],
        &rows,
    )
}

/// `show --json`: the table's facts, one object per switch.
pub fn render_json(state: &State, served: &[Served]) -> serde_json::Value {
    served
        .iter()
        .map(|switch| {
            let interfaces: Vec<serde_json::Value> = switch
                .ports
                .iter()
                .filter(|p| p.kind != "gateway")
                .map(|port| {
                    serde_json::json!({
                        "name": port.name,
                        "port_no": port.port_no,
                        "kind": port.kind,
                        "container": container_of(state, port),
                    })
                })
                .collect();
            serde_json::json!({
                "network": switch.info.network,
                "switch_id": switch.info.switch_id,
                "stp_enabled": false,
                "control": switch.info.control,
                "interfaces": interfaces,
            })
        })
        .collect()
}

/// The owner the switch knows, or else the container whose veth it is.
fn container_of(state: &State, port: &PortInfo) -> Option<String> {
    port.owner.clone().or_else(|| {
        state
            .containers
            .iter()
            .find(|c| c.host_iface.as_deref() == Some(port.name.as_str()))
            .map(|c| c.name.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::dataplane::{DataplaneMetrics, ReadMode};
    use switch::{PortId, PortStats};

    fn info(network: &str, id: &str) -> SwitchInfo {
        SwitchInfo {
            network: network.into(),
            switch_id: id.into(),
            pid: 1,
            control: PathBuf::from("/x.sock"),
            gateway: None,
            gateway_mac: None,
            ageing_time: 300,
            max_macs: 1,
            workers: 1,
            capture_dir: None,
            mode: "root".into(),
            dataplane: DataplaneMetrics {
                reading: ReadMode::OneLane,
                reading_changes: 0,
                steering_waits: 0,
                cpu_yields: 0,
                cpu_moves: 0,
                conversing_now: 0,
                conversations: 0,
                kernel_shortcut: Default::default(),
                light_scheduling: Default::default(),
            },
        }
    }

    fn port(no: u32, name: &str, kind: &str, owner: Option<&str>) -> PortInfo {
        PortInfo {
            port_no: PortId(no),
            name: name.into(),
            kind: kind.into(),
            mtu: 1500,
            offloads: false,
            lanes: 1,
            reading: None,
            owner: owner.map(String::from),
            capturing: false,
            link_down: false,
            stats: PortStats::default(),
        }
    }

    #[test]
    fn like_brctl_show_with_the_container_of_each_port() {
        let state = ipam::State::new(ipam::state::Predefined {
            bridge_id: "b".repeat(64),
            host_id: "h".repeat(64),
            none_id: "n".repeat(64),
            created: String::new(),
        });
        let served = vec![
            Served {
                info: info("bridge", "8000.0242ac110001"),
                ports: vec![
                    port(0, "gateway", "gateway", None),
                    port(1, "ts-3f2a1b4c5d6e", "iface", Some("web")),
                    port(2, "ts-9a8b7c6d5e4f", "iface", Some("db")),
                ],
            },
            Served {
                info: info("empty", "8000.0242ac120001"),
                ports: vec![],
            },
        ];
        assert_eq!(
            render(&state, &served),
            "network   switch id           STP enabled   interfaces        container\n\
             bridge    8000.0242ac110001   no            ts-3f2a1b4c5d6e   web\n\
             \x20                                           ts-9a8b7c6d5e4f   db\n\
             empty     8000.0242ac120001   no\n"
        );
        let json = render_json(&state, &served);
        assert_eq!(json[0]["network"], "bridge");
        assert_eq!(json[0]["stp_enabled"], false);
        let interfaces = json[0]["interfaces"].as_array().unwrap();
        assert_eq!(interfaces.len(), 2, "the gateway is not an interface");
        assert_eq!(interfaces[0]["name"], "ts-3f2a1b4c5d6e");
        assert_eq!(interfaces[0]["container"], "web");
        assert_eq!(json[1]["interfaces"], serde_json::json!([]));
    }
}

//! Commands that ask a running switch: `fdb [show|add|del|flush]`, `ports`,
//! `stats`, `port add|rm`, `capture start|stop`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{ArgGroup, Args, Subcommand};
use switch::dataplane::LightScheduling;
use switch::{EntryKind, MacAddr};

use crate::control::{
    self, FdbEditReply, FdbFlushReply, FdbReply, PortInfo, PreviousRow, Request, SwitchInfo,
};
use crate::{out, outln};

/// Which switch to ask, and how to print.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The control socket of the switch to talk to.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The network whose switch to ask (its socket is found by name).
    #[arg(long, default_value = control::DEFAULT_NETWORK)]
    pub network: String,
    /// The control socket's path (overrides --network).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
}

impl Target {
    /// `--control`, else the network's socket: this user's, or root's when
    /// only root's exists (an ordinary user asking a switch root started).
    pub fn socket(&self) -> PathBuf {
        if let Some(path) = &self.control {
            return path.clone();
        }
        pick_socket(
            control::default_socket_path(&self.network),
            control::root_socket_path(&self.network),
        )
    }
}

/// This user's socket, unless only root's exists.
fn pick_socket(own: PathBuf, roots: PathBuf) -> PathBuf {
    if !own.exists() && roots.exists() {
        return roots;
    }
    own
}

/// `tapswitch fdb [show] | add MAC PORT | del MAC | flush [--port P]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FdbArgs {
    #[command(flatten)]
    pub query: QueryArgs,
    #[command(subcommand)]
    pub command: Option<FdbCommand>,
}

#[derive(Debug, Subcommand)]
pub enum FdbCommand {
    /// Show the MAC table (what `tapswitch fdb` alone does).
    #[command(visible_aliases = ["ls", "list"])]
    Show(QueryArgs),
    /// Pin a MAC address to a port: a static entry, never aged and never moved by traffic.
    Add {
        #[command(flatten)]
        target: Target,
        /// The host's MAC address, such as 02:42:ac:11:00:02 (not a group or zero address).
        mac: MacAddr,
        /// The port's name, as `tapswitch ports` shows it.
        port: String,
    },
    /// Remove a MAC address's entry, learned or static.
    #[command(alias = "delete")]
    Del {
        #[command(flatten)]
        target: Target,
        /// The MAC address whose entry goes.
        mac: MacAddr,
    },
    /// Forget learned entries (of one port with --port); static entries stay unless --include-static.
    Flush {
        #[command(flatten)]
        target: Target,
        /// Only this port's entries.
        #[arg(long, value_name = "PORT")]
        port: Option<String>,
        /// Remove static entries too (the switch's own address always stays).
        #[arg(long)]
        include_static: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Attach an existing interface (--iface) or a TAP device (--tap, created if missing), here or in another namespace (--pid, --netns).
    #[command(group(ArgGroup::new("port").required(true).args(["iface", "tap"])))]
    Add {
        #[command(flatten)]
        target: Target,
        /// An existing interface, such as the host end of a veth pair.
        #[arg(long, value_name = "IFNAME")]
        iface: Option<String>,
        /// A TAP device, created if it does not exist.
        #[arg(long, value_name = "NAME")]
        tap: Option<String>,
        #[command(flatten)]
        namespace: crate::rootless::port_add::NamespaceArgs,
    },
    /// List the ports and their counters (what `tapswitch ports` does).
    #[command(visible_alias = "list")]
    Ls(QueryArgs),
    /// Detach a port by name.
    #[command(visible_alias = "remove")]
    Rm {
        #[command(flatten)]
        target: Target,
        /// The port's name (its interface or TAP name).
        name: String,
    },
}

/// `tapswitch capture start|stop PORT`.
#[derive(Debug, Subcommand)]
pub enum CaptureCommand {
    /// Start recording a port into DIR/<port>.pcapng (the switch needs --capture DIR).
    Start {
        #[command(flatten)]
        target: Target,
        /// The port's name.
        port: String,
    },
    /// Stop recording a port (its file stays and continues on the next start).
    Stop {
        #[command(flatten)]
        target: Target,
        /// The port's name.
        port: String,
    },
}

pub fn capture(cmd: CaptureCommand) -> Result<ExitCode> {
    let (target, port, request, verb) = match cmd {
        CaptureCommand::Start { target, port } => (
            target,
            port.clone(),
            Request::CaptureStart { port },
            "started",
        ),
        CaptureCommand::Stop { target, port } => (
            target,
            port.clone(),
            Request::CaptureStop { port },
            "stopped",
        ),
    };
    control::call(&target.socket(), &request)?;
    outln!("capture of port {port} {verb}")?;
    Ok(ExitCode::SUCCESS)
}

pub fn fdb(args: FdbArgs) -> Result<ExitCode> {
    match args.command {
        None => fdb_show(args.query),
        Some(FdbCommand::Show(query)) => fdb_show(query),
        Some(FdbCommand::Add { target, mac, port }) => {
            let request = Request::FdbAdd {
                mac,
                port: port.clone(),
            };
            let reply: FdbEditReply = control::call_as(&target.socket(), &request)?;
            let replaced = match &reply.previous {
                Some(previous) => format!(" (replacing {})", describe_entry(previous)),
                None => String::new(),
            };
            outln!("added static entry {mac} on port {port}{replaced}")?;
            Ok(ExitCode::SUCCESS)
        }
        Some(FdbCommand::Del { target, mac }) => {
            let reply: FdbEditReply = control::call_as(&target.socket(), &Request::FdbDel { mac })?;
            match &reply.previous {
                Some(previous) => outln!("removed {mac} ({})", describe_entry(previous))?,
                None => outln!("removed {mac}")?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(FdbCommand::Flush {
            target,
            port,
            include_static,
        }) => {
            let request = Request::FdbFlush {
                port: port.clone(),
                include_static,
            };
            let reply: FdbFlushReply = control::call_as(&target.socket(), &request)?;
            let what = if include_static {
                "learned and static"
            } else {
                "learned"
            };
            let scope = port.map(|p| format!(" of port {p}")).unwrap_or_default();
            outln!(
                "flushed {} {what} {}{scope}",
                reply.flushed,
                if reply.flushed == 1 {
                    "entry"
                } else {
                    "entries"
                }
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn describe_entry(entry: &PreviousRow) -> String {
    let kind = match entry.kind {
        EntryKind::Dynamic => "a learned entry",
        EntryKind::Static => "a static entry",
        EntryKind::Local => "a local entry",
    };
    format!("{kind} on port {}", entry.port)
}

fn fdb_show(args: QueryArgs) -> Result<ExitCode> {
    let socket = args.target.socket();
    if args.json {
        return print_json(control::call(&socket, &Request::Fdb)?);
    }
    let reply: FdbReply = control::call_as(&socket, &Request::Fdb)?;
    out!("{}", render_fdb(&reply))?;
    Ok(ExitCode::SUCCESS)
}

pub fn ports(args: QueryArgs) -> Result<ExitCode> {
    let socket = args.target.socket();
    if args.json {
        return print_json(control::call(&socket, &Request::Ports)?);
    }
    let ports: Vec<PortInfo> = control::call_as(&socket, &Request::Ports)?;
    // The published ports this switch listens on now (the gateway's).
    let listening: Vec<String> = control::call(&socket, &Request::Services)
        .ok()
        .and_then(|services| serde_json::from_value(services["listening"].clone()).ok())
        .unwrap_or_default();
    out!("{}", render_ports(&ports, &listening))?;
    Ok(ExitCode::SUCCESS)
}

pub fn stats(args: QueryArgs) -> Result<ExitCode> {
    let socket = args.target.socket();
    let info = control::call(&socket, &Request::Info)?;
    let fdb = control::call(&socket, &Request::Fdb)?;
    if args.json {
        let services = control::call(&socket, &Request::Services).unwrap_or_default();
        let tunnel = control::call(&socket, &Request::Tunnel).unwrap_or_default();
        return print_json(serde_json::json!({
            "switch": info, "table": fdb["stats"], "services": services, "tunnel": tunnel
        }));
    }
    let info: SwitchInfo = serde_json::from_value(info)?;
    let fdb: FdbReply = serde_json::from_value(fdb)?;
    outln!("network      {}", info.network)?;
    outln!("switch id    {}", info.switch_id)?;
    outln!("pid          {}", info.pid)?;
    outln!("mode         {}", info.mode)?;
    outln!("gateway      {}", info.gateway.as_deref().unwrap_or("none"))?;
    outln!(
        "ageing time  {} s{}",
        info.ageing_time,
        if info.ageing_time == 0 {
            " (never)"
        } else {
            ""
        }
    )?;
    let dataplane = &info.dataplane;
    outln!(
        "workers      {}; while traffic is light: {}",
        info.workers,
        dataplane.light_scheduling.describe()
    )?;
    outln!(
        "lanes        read {}; changed {} time(s); hand-overs waited for the kernel {} time(s)",
        dataplane.reading.describe(),
        dataplane.reading_changes,
        dataplane.steering_waits
    )?;
    outln!(
        "under load   workers yielded the CPU {} time(s), moved to another CPU {} time(s)",
        dataplane.cpu_yields,
        dataplane.cpu_moves
    )?;
    if dataplane.light_scheduling == LightScheduling::RealTime {
        outln!(
            "             real-time kept for a conversation: {} worker(s) now, {} time(s) since \
             the start",
            dataplane.conversing_now,
            dataplane.conversations
        )?;
    }
    let shortcut = &dataplane.kernel_shortcut;
    outln!(
        "kernel       shortcut {}: {} port(s), {} address(es)",
        shortcut.state.describe(),
        shortcut.ports,
        shortcut.addresses
    )?;
    outln!("{}", render_table_stats(&fdb))?;
    if let Ok(services) = control::call(&socket, &Request::Services)
        && !services.is_null()
    {
        out!("{}", render_services(&services))?;
    }
    if let Ok(tunnel) =
        control::call_as::<Option<crate::tunnel_report::TunnelReport>>(&socket, &Request::Tunnel)
        && let Some(tunnel) = tunnel
    {
        out!("{}", tunnel.render())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The gateway's services in `tapswitch stats`.
fn render_services(s: &serde_json::Value) -> String {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let flows = &s["flows"];
    let upstreams: Vec<&str> = s["upstreams"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u.as_str()).collect())
        .unwrap_or_default();
    let mut out = String::new();
    out += &format!(
        "outbound     {}; ping through {} sockets\n",
        if s["outbound"] == true {
            "on"
        } else {
            "off (--no-outbound or --internal)"
        },
        s["ping_sockets"].as_str().unwrap_or("no (none allowed)"),
    );
    out += &format!(
        "dns          upstreams {}\n",
        if upstreams.is_empty() {
            "none".to_string()
        } else {
            upstreams.join(", ")
        }
    );
    out += &format!(
        "flows        {} now; opened {}, refused {}, timed out {}, closed {} ({} reset), dropped for limits {}, invalid {}\n",
        n(&s["flows_now"]),
        n(&flows["opened"]),
        n(&flows["refused"]),
        n(&flows["timed_out"]),
        n(&flows["closed"]),
        n(&flows["reset"]),
        n(&flows["dropped_for_limits"]),
        n(&flows["dropped_invalid"]),
    );
    out += &format!(
        "             refused outbound {}, host socket errors {}\n",
        n(&s["frames"]["outbound_denied"]),
        n(&s["socket_errors"]),
    );
    let reassembly = &s["frames"]["reassembly"];
    if n(&s["frames"]["fragments"]) > 0 {
        out += &format!(
            "             fragments from containers {}: {} datagram(s) reassembled; thrown away: {} overlapping, {} over limits, {} timed out\n",
            n(&s["frames"]["fragments"]),
            n(&reassembly["reassembled"]),
            n(&reassembly["overlaps"]),
            n(&reassembly["over_limits"]),
            n(&reassembly["timed_out"]),
        );
    }
    out += &format!(
        "             after a full gateway queue: {} recheck(s), {} flow(s) probed\n",
        n(&s["overflow_rechecks"]),
        n(&s["overflow_probes"]),
    );
    out
}

/// `tapswitch flows [--json]`: the gateway's translated flows.
pub fn flows(args: QueryArgs) -> Result<ExitCode> {
    let rows = control::call(&args.target.socket(), &Request::Flows)?;
    if args.json {
        return print_json(rows);
    }
    for row in rows.as_array().into_iter().flatten() {
        outln!("{}", row["line"].as_str().unwrap_or_default())?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn port(cmd: PortCommand) -> Result<ExitCode> {
    match cmd {
        PortCommand::Ls(args) => return ports(args),
        PortCommand::Add {
            target,
            iface,
            tap,
            namespace,
        } => {
            let added = crate::rootless::port_add::add(&target.socket(), iface, tap, &namespace)?;
            outln!(
                "added port {} {} ({})",
                added.port_no,
                added.name,
                added.kind
            )?;
        }
        PortCommand::Rm { target, name } => {
            control::call(&target.socket(), &Request::PortRm { name: name.clone() })?;
            outln!("removed port {name}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(value: serde_json::Value) -> Result<ExitCode> {
    outln!("{}", serde_json::to_string_pretty(&value)?)?;
    Ok(ExitCode::SUCCESS)
}

/// `brctl showmacs` with port names, then the table's counters.
pub fn render_fdb(reply: &FdbReply) -> String {
    // A tunnel port's rows say which host the MAC is behind.
    let port_of = |row: &control::FdbRow| match &row.via {
        Some(via) => format!("{} via {via}", row.port),
        None => row.port.clone(),
    };
    let width = reply
        .entries
        .iter()
        .map(|r| port_of(r).len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "port no  {:<width$}  mac addr           is local?  ageing timer\n",
        "port"
    );
    for row in &reply.entries {
        let local = if row.is_local { "yes" } else { "no" };
        // A static entry has no timer: say what it is instead of 0.00.
        let timer = match row.kind {
            EntryKind::Static => "static".to_string(),
            _ => format!("{:.2}", row.ageing_timer),
        };
        out += &format!(
            "{:>7}  {:<width$}  {}  {:<9}  {:>12}\n",
            row.port_no.0,
            port_of(row),
            row.mac,
            local,
            timer
        );
    }
    out += &render_table_stats(reply);
    out.push('\n');
    out
}

fn render_table_stats(reply: &FdbReply) -> String {
    let s = &reply.stats;
    format!(
        "table: {} of {} entries; learned {}, refreshed {}, moved {}, expired {}, evicted {}, refused {}",
        s.entries, s.capacity, s.learned, s.refreshed, s.moved, s.expired, s.evicted, s.refused
    )
}

/// `ip -s link` in spirit: one block per port.
/// `tapswitch ports`: one block per port; the gateway's lists the
/// published ports the switch listens on (`listening`, from `services`).
pub fn render_ports(ports: &[PortInfo], listening: &[String]) -> String {
    let mut out = String::new();
    for p in ports {
        let offloads = if p.offloads { "on" } else { "off" };
        out += &format!(
            "{}: {} ({}, mtu {}, offloads {})",
            p.port_no.0, p.name, p.kind, p.mtu, offloads
        );
        if p.lanes > 1 {
            out += &format!(" {} lanes", p.lanes);
            if let Some(reading) = &p.reading {
                out += &format!(", {}", reading.describe());
            }
        }
        if let Some(owner) = &p.owner {
            out += &format!(" container {owner}");
        }
        if p.capturing {
            out += " capturing";
        }
        if p.link_down {
            out += " link down";
        }
        out.push('\n');
        let s = &p.stats;
        out += &format!(
            "    RX: {:>14} {:>12} {:>10}\n",
            "bytes", "packets", "dropped"
        );
        out += &format!(
            "        {:>14} {:>12} {:>10}\n",
            s.rx_bytes, s.rx_frames, s.rx_dropped
        );
        out += &format!(
            "    TX: {:>14} {:>12} {:>10}\n",
            "bytes", "packets", "dropped"
        );
        out += &format!(
            "        {:>14} {:>12} {:>10}\n",
            s.tx_bytes, s.tx_frames, s.tx_dropped
        );
        if s.rx_kernel_frames > 0 || s.tx_kernel_frames > 0 {
            out += &format!(
                "    by the kernel: RX {} packets, TX {} packets\n",
                s.rx_kernel_frames, s.tx_kernel_frames
            );
        }
        if s.tx_superframes > 0 {
            out += &format!(
                "    coalesced: {} UDP datagrams sent in {} super-frames\n",
                s.tx_coalesced, s.tx_superframes
            );
        }
        if !s.drops.is_empty() {
            let reasons: Vec<String> = s
                .drops
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            out += &format!("    drops: {}\n", reasons.join(", "));
        }
        if p.kind == "gateway" && !listening.is_empty() {
            out += &format!("    published, listening: {}\n", listening.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_user_finds_roots_switch_when_it_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let (own, roots) = (dir.path().join("own.sock"), dir.path().join("root.sock"));
        assert_eq!(
            pick_socket(own.clone(), roots.clone()),
            own,
            "neither exists"
        );
        std::fs::write(&roots, b"").unwrap();
        assert_eq!(pick_socket(own.clone(), roots.clone()), roots);
        std::fs::write(&own, b"").unwrap();
        assert_eq!(pick_socket(own.clone(), roots), own, "its own comes first");
    }

    #[test]
    fn ports_list_the_published_ports_under_the_gateway() {
        let port = |no, name: &str, kind: &str| PortInfo {
            port_no: switch::PortId(no),
            name: name.into(),
            kind: kind.into(),
            mtu: 1500,
            offloads: false,
            lanes: 1,
            reading: None,
            owner: None,
            capturing: false,
            link_down: false,
            stats: switch::PortStats::default(),
        };
        let ports = [port(0, "gateway", "gateway"), port(1, "ts-web", "iface")];
        let listening = ["0.0.0.0:8080->80/tcp".to_string()];
        let text = render_ports(&ports, &listening);
        let line = "    published, listening: 0.0.0.0:8080->80/tcp\n";
        assert_eq!(text.matches(line).count(), 1, "{text}");
        let gateway_block = text.split("1: ts-web").next().unwrap();
        assert!(gateway_block.contains(line), "under the gateway: {text}");
        assert!(!render_ports(&ports, &[]).contains("published"));
    }

    #[test]
    fn the_kernels_frames_are_in_the_totals_and_on_their_own_line() {
        let mut stats = switch::PortStats {
            rx_frames: 5,
            rx_bytes: 500,
            ..Default::default()
        };
        let port = |stats: switch::PortStats| PortInfo {
            port_no: switch::PortId(1),
            name: "p1".into(),
            kind: "iface".into(),
            mtu: 1500,
            offloads: true,
            lanes: 2,
            reading: None,
            owner: None,
            capturing: false,
            link_down: false,
            stats,
        };
        let quiet = render_ports(&[port(stats.clone())], &[]);
        assert!(!quiet.contains("by the kernel"), "{quiet}");
        stats.add_kernel(7, 700, 3, 300);
        let text = render_ports(&[port(stats)], &[]);
        assert!(
            text.contains("    by the kernel: RX 7 packets, TX 3 packets\n"),
            "{text}"
        );
        assert!(
            text.contains("            1200           12"),
            "RX totals: {text}"
        );
        assert!(
            text.contains("             300            3"),
            "TX totals: {text}"
        );
    }

    #[test]
    fn a_port_of_lanes_says_how_it_is_read_now() {
        use switch::dataplane::{PortReading, ReadMode};
        let port = |reading| PortInfo {
            port_no: switch::PortId(1),
            name: "p1".into(),
            kind: "tap".into(),
            mtu: 1500,
            offloads: true,
            lanes: 2,
            reading: Some(reading),
            owner: None,
            capturing: false,
            link_down: false,
            stats: switch::PortStats::default(),
        };
        let first_line = |reading| {
            render_ports(&[port(reading)], &[])
                .lines()
                .next()
                .map(String::from)
        };
        let per_cpu = PortReading {
            mode: ReadMode::ByCpu,
            worker: None,
            lags: false,
            ledger: true,
            arrival_order: false,
        };
        assert_eq!(
            first_line(per_cpu).as_deref(),
            Some("1: p1 (tap, mtu 1500, offloads on) 2 lanes, read per CPU")
        );
        let by_arrival = PortReading {
            ledger: false,
            arrival_order: true,
            ..per_cpu
        };
        assert_eq!(
            first_line(by_arrival).as_deref(),
            Some(
                "1: p1 (tap, mtu 1500, offloads on) 2 lanes, read per CPU, in the order frames \
                 arrived (no ledger)"
            )
        );
        let without_ledger = PortReading {
            mode: ReadMode::ByPort,
            worker: Some(0),
            lags: false,
            ledger: false,
            arrival_order: false,
        };
        assert_eq!(
            first_line(without_ledger).as_deref(),
            Some(
                "1: p1 (tap, mtu 1500, offloads on) 2 lanes, read by worker 0, never per CPU \
                 (no ledger)"
            )
        );
        let by_worker = PortReading {
            mode: ReadMode::ByPort,
            worker: Some(1),
            lags: true,
            ledger: true,
            arrival_order: false,
        };
        assert_eq!(
            first_line(by_worker).as_deref(),
            Some(
                "1: p1 (tap, mtu 1500, offloads on) 2 lanes, read by worker 1 \
                 (as when it last delivered frames)"
            )
        );
        let json = serde_json::to_value(port(by_worker)).unwrap();
        assert_eq!(
            json["reading"],
            serde_json::json!({
                "mode": "per port (traffic is heavy)",
                "worker": 1,
                "lags": true,
                "ledger": true,
                "arrival_order": false
            })
        );
    }

    #[test]
    fn static_entries_show_as_static_in_the_table() {
        let mut reply = FdbReply {
            entries: Vec::new(),
            stats: switch::TableStats::default(),
        };
        for kind in [EntryKind::Static, EntryKind::Dynamic] {
            let entry = switch::FdbEntry {
                mac: "02:00:00:00:00:01".parse().unwrap(),
                port: switch::PortId(1),
                kind,
                age: std::time::Duration::from_millis(1500),
            };
            reply
                .entries
                .push(control::FdbRow::new(&entry, "p1".into()));
        }
        let text = render_fdb(&reply);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].ends_with("  no               static"), "{text}");
        assert!(lines[2].ends_with("  no                 1.50"), "{text}");
    }

    #[test]
    fn a_mac_behind_a_tunnel_shows_the_host_it_is_behind() {
        let entry = switch::FdbEntry {
            mac: "02:42:0a:32:00:03".parse().unwrap(),
            port: switch::PortId(1),
            kind: EntryKind::Dynamic,
            age: std::time::Duration::from_secs(2),
        };
        let mut row = control::FdbRow::new(&entry, "vxlan0".into());
        row.via = Some("10.0.0.2:4789".into());
        let reply = FdbReply {
            entries: vec![row.clone()],
            stats: switch::TableStats::default(),
        };
        let text = render_fdb(&reply);
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.contains("vxlan0 via 10.0.0.2:4789  02:42:0a:32:00:03")),
            "{text}"
        );
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["via"], "10.0.0.2:4789");
        row.via = None;
        assert!(serde_json::to_value(&row).unwrap().get("via").is_none());
    }
}

//! Commands that ask a running switch: `fdb`, `ports`, `stats`, `port add|rm`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::control::{self, FdbReply, PortInfo, Request, SwitchInfo};

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
    pub fn socket(&self) -> PathBuf {
        self.control
            .clone()
            .unwrap_or_else(|| control::default_socket_path(&self.network))
    }
}

#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Attach an existing interface (--iface) or a TAP device (--tap, created if missing).
    Add {
        #[command(flatten)]
        target: Target,
        /// An existing interface, such as the host end of a veth pair.
        #[arg(
            long,
            value_name = "IFNAME",
            conflicts_with = "tap",
            required_unless_present = "tap"
        )]
        iface: Option<String>,
        /// A TAP device, created if it does not exist.
        #[arg(long, value_name = "NAME")]
        tap: Option<String>,
    },
    /// Detach a port by name.
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
    println!("capture of port {port} {verb}");
    Ok(ExitCode::SUCCESS)
}

pub fn fdb(args: QueryArgs) -> Result<ExitCode> {
    let socket = args.target.socket();
    if args.json {
        return print_json(control::call(&socket, &Request::Fdb)?);
    }
    let reply: FdbReply = control::call_as(&socket, &Request::Fdb)?;
    print!("{}", render_fdb(&reply));
    Ok(ExitCode::SUCCESS)
}

pub fn ports(args: QueryArgs) -> Result<ExitCode> {
    let socket = args.target.socket();
    if args.json {
        return print_json(control::call(&socket, &Request::Ports)?);
    }
    let ports: Vec<PortInfo> = control::call_as(&socket, &Request::Ports)?;
    print!("{}", render_ports(&ports));
    Ok(ExitCode::SUCCESS)
}

pub fn stats(args: QueryArgs) -> Result<ExitCode> {
    let socket = args.target.socket();
    let info = control::call(&socket, &Request::Info)?;
    let fdb = control::call(&socket, &Request::Fdb)?;
    if args.json {
        return print_json(serde_json::json!({ "switch": info, "table": fdb["stats"] }));
    }
    let info: SwitchInfo = serde_json::from_value(info)?;
    let fdb: FdbReply = serde_json::from_value(fdb)?;
    println!("network      {}", info.network);
    println!("switch id    {}", info.switch_id);
    println!("pid          {}", info.pid);
    println!("mode         {}", info.mode);
    println!("gateway      {}", info.gateway.as_deref().unwrap_or("none"));
    println!(
        "ageing time  {} s{}",
        info.ageing_time,
        if info.ageing_time == 0 {
            " (never)"
        } else {
            ""
        }
    );
    println!("workers      {}", info.workers);
    let dataplane = &info.dataplane;
    println!(
        "lanes        read {}; changed {} time(s)",
        dataplane.reading.describe(),
        dataplane.reading_changes
    );
    println!(
        "under load   workers yielded the CPU {} time(s), moved to another CPU {} time(s)",
        dataplane.cpu_yields, dataplane.cpu_moves
    );
    println!("{}", render_table_stats(&fdb));
    Ok(ExitCode::SUCCESS)
}

pub fn port(cmd: PortCommand) -> Result<ExitCode> {
    match cmd {
        PortCommand::Add { target, iface, tap } => {
            let request = Request::PortAdd {
                iface,
                tap,
                owner: None,
            };
            let added: PortInfo = control::call_as(&target.socket(), &request)?;
            println!(
                "added port {} {} ({})",
                added.port_no, added.name, added.kind
            );
        }
        PortCommand::Rm { target, name } => {
            control::call(&target.socket(), &Request::PortRm { name: name.clone() })?;
            println!("removed port {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(value: serde_json::Value) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}

/// `brctl showmacs` with port names, then the table's counters.
pub fn render_fdb(reply: &FdbReply) -> String {
    let width = reply
        .entries
        .iter()
        .map(|r| r.port.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "port no  {:<width$}  mac addr           is local?  ageing timer\n",
        "port"
    );
    for row in &reply.entries {
        let local = if row.is_local { "yes" } else { "no" };
        out += &format!(
            "{:>7}  {:<width$}  {}  {:<9}  {:>12.2}\n",
            row.port_no.0, row.port, row.mac, local, row.ageing_timer
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
pub fn render_ports(ports: &[PortInfo]) -> String {
    let mut out = String::new();
    for p in ports {
        let offloads = if p.offloads { "on" } else { "off" };
        out += &format!(
            "{}: {} ({}, mtu {}, offloads {})",
            p.port_no.0, p.name, p.kind, p.mtu, offloads
        );
        if p.lanes > 1 {
            out += &format!(" {} lanes", p.lanes);
        }
        if let Some(owner) = &p.owner {
            out += &format!(" container {owner}");
        }
        if p.capturing {
            out += " capturing";
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
    }
    out
}

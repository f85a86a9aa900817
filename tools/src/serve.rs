//! `tapswitch serve`: run a switch in the foreground.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;

/// Options of `tapswitch serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The network to serve (its gateway and control socket follow from it).
    #[arg(long, default_value = crate::control::DEFAULT_NETWORK)]
    pub network: String,
    /// An existing interface to attach, typically the host end of a veth pair (repeatable).
    #[arg(long = "iface", value_name = "IFNAME")]
    pub ifaces: Vec<String>,
    /// A TAP device to attach, created if it does not exist (repeatable).
    #[arg(long = "tap", value_name = "NAME")]
    pub taps: Vec<String>,
    /// Seconds a silent host stays in the MAC table; 0 = forever.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub ageing_time: u64,
    /// The most MAC addresses the table learns.
    #[arg(long, value_name = "N", default_value_t = switch::mac_table::DEFAULT_CAPACITY)]
    pub max_macs: usize,
    /// The gateway's address and prefix.
    #[arg(long, value_name = "CIDR", conflicts_with = "no_gateway")]
    pub gateway: Option<String>,
    /// Run without a gateway.
    #[arg(long)]
    pub no_gateway: bool,
    /// Print one line per forwarding decision on stderr.
    #[arg(long)]
    pub trace: bool,
    /// Write a pcapng file per port into DIR.
    #[arg(long, value_name = "DIR")]
    pub capture: Option<PathBuf>,
    /// The control socket's path.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let _ = args;
    bail!("serve is not implemented yet")
}

//! `tapswitch`: a userspace Ethernet learning switch that does the job of
//! Docker's `docker0` without a kernel bridge. This file only parses the
//! command line and hands over to the module of each command.

// Every line goes through `pipe::stdout()` (see `pipe`).
#![deny(clippy::print_stdout)]

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use tools::lab::replay;
use tools::statedir::{self, StoreChoice};
use tools::{container, demo, manuals, monitor, network, pcap_cmd, query, rootless, serve, show};

#[derive(Debug, Parser)]
#[command(
    name = "tapswitch",
    version,
    about = "A userspace Ethernet learning switch (Docker's docker0, without a kernel bridge)"
)]
struct Cli {
    /// Keep networks and leases in etcd, shared by several hosts (default: the local state directory).
    #[arg(
        long,
        global = true,
        env = ipam::store::STORE_ENV,
        value_name = "etcd://HOST:PORT[,...]",
        value_parser = statedir::parse_store
    )]
    store: Option<StoreChoice>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a switch in the foreground (ports: --iface for veth ends, --tap for TAP devices).
    Serve(serve::ServeArgs),
    /// The tour: three containers on a switch, ping, TCP, the MAC table, then cleanup (rootless: in a user namespace of yours).
    Demo(demo::DemoArgs),
    /// Show or edit a running switch's MAC table (like `brctl showmacs`, `bridge fdb add|del|flush`).
    Fdb(query::FdbArgs),
    /// Show a running switch's ports and their counters (like `ip -s link`).
    Ports(query::QueryArgs),
    /// Show a running switch's settings and MAC table counters.
    Stats(query::QueryArgs),
    /// List the gateway's translated flows (like `conntrack -L`).
    Flows(query::QueryArgs),
    /// Print a running switch's events as they happen (like `bridge monitor fdb`).
    Monitor(monitor::MonitorArgs),
    /// Turn a running switch's per-decision trace on or off.
    Trace(monitor::TraceArgs),
    /// Add or remove a port of a running switch.
    #[command(subcommand)]
    Port(query::PortCommand),
    /// Start or stop capturing a port of a running switch (`serve --capture DIR`).
    #[command(subcommand)]
    Capture(query::CaptureCommand),
    /// Create, list, inspect and remove networks (like `docker network`).
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Create, list, inspect, enter and remove containers' networks.
    #[command(subcommand)]
    Container(container::ContainerCommand),
    /// Show each running switch with its ports and their containers (like `brctl show`).
    Show(show::ShowArgs),
    /// Run pcap files through the switch on virtual time; write what each port sent.
    Replay(replay::ReplayArgs),
    /// Build capture files from text lines, show them as text, or generate a benchmark capture.
    #[command(subcommand)]
    Pcap(pcap_cmd::PcapCommand),
    /// Print a shell completion script (bash, zsh or fish) to stdout.
    Completions(manuals::CompletionsArgs),
    /// Print the manual page, or write one per subcommand with --out DIR.
    Man(manuals::ManArgs),
    /// Rootless mode's helpers inside the user's namespaces (not for direct use).
    #[command(name = "__rootless", hide = true, subcommand)]
    Rootless(rootless::helper::Internal),
}

fn main() -> ExitCode {
    tools::logging::init();
    let cli = Cli::parse();
    statedir::choose_store(cli.store.unwrap_or(StoreChoice::Local));
    // replay exits like diff and cmp: 1 is "different", so trouble is 2.
    let trouble = match cli.command {
        Command::Replay(_) => ExitCode::from(replay::EXIT_TROUBLE),
        _ => ExitCode::FAILURE,
    };
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Fdb(args) => query::fdb(args),
        Command::Ports(args) => query::ports(args),
        Command::Stats(args) => query::stats(args),
        Command::Flows(args) => query::flows(args),
        Command::Monitor(args) => monitor::monitor(args),
        Command::Trace(args) => monitor::trace(args),
        Command::Port(cmd) => query::port(cmd),
        Command::Capture(cmd) => query::capture(cmd),
        Command::Network(cmd) => network::run(cmd),
        Command::Container(cmd) => container::run(cmd),
        Command::Show(args) => show::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Pcap(cmd) => pcap_cmd::run(cmd),
        Command::Completions(args) => manuals::completions(&args, Cli::command()),
        Command::Man(args) => manuals::man(&args, Cli::command()),
        Command::Rootless(cmd) => rootless::helper::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) if tools::pipe::is_closed_stdout(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tapswitch: {err:#}");
            trouble
        }
    }
}

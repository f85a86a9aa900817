//! `tapswitch demo`: the whole story in a few seconds, on built-in defaults.
//!
//! It builds three "containers" (network namespaces) like Docker's default
//! bridge network — two joined to the switch by veth pairs, one by a TAP
//! device — starts a switch with its gateway at 172.17.0.1, pings and runs
//! TCP through it, prints the MAC table and the port counters, and removes
//! everything it made, also when interrupted with Ctrl-C.
//!
//! ```text
//!   tsdemo-a  eth0 172.17.0.2 ═══ veth-a ┐
//!   tsdemo-b  eth0 172.17.0.3 ═══ veth-b ├─ tapswitch (in tsdemo-sw) ── gw 172.17.0.1
//!   tsdemo-c  eth0 172.17.0.4 ─── tap-c  ┘   (the TAP moved into tsdemo-c)
//! ```

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use switch::dataplane::{ShortcutState, Tuning};
use switch::mac_table::TableConfig;

use crate::netlink::{Netlink, VethPeer, netns};
use crate::running::{PortSpec, RunningSwitch};
use crate::{out, outln};
use crate::{query, serve, signals, traffic};

/// Options of `tapswitch demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Megabytes each TCP transfer sends.
    #[arg(long, value_name = "MB", default_value_t = 64)]
    pub tcp_mb: usize,
    /// Print every forwarding decision (`serve --trace`) while the demo runs.
    #[arg(long)]
    pub trace: bool,
}

/// One container of the demo.
struct Container {
    letter: char,
    ns: PathBuf,
    ip: Ipv4Addr,
    mac: [u8; 6],
    /// The switch port it hangs off.
    port: String,
    by_tap: bool,
}

/// The namespaces the demo made, so that cleanup finds them from any thread.
#[derive(Default)]
struct Made {
    namespaces: Vec<PathBuf>,
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    // An ordinary user's demo runs in a user namespace of their own.
    if let Some(code) = crate::rootless::demo::prepare()? {
        return Ok(code);
    }
    // The walkthrough prints its own story; keep the switch's info lines out of it.
    log::set_max_level(log::LevelFilter::Warn);
    let signals = signals::termination()?;
    let made = Arc::new(Mutex::new(Made::default()));
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let worker_made = made.clone();
    std::thread::Builder::new()
        .name("tapswitch-demo".into())
        .spawn(move || {
            let _ = done_tx.send(steps(&args, &worker_made));
        })?;
    let outcome = crossbeam_channel::select! {
        recv(done_rx) -> result => result.unwrap_or_else(|_| Err(anyhow::anyhow!("the demo thread stopped"))),
        recv(signals) -> _ => {
            outln!("\ninterrupted: cleaning up")?;
            cleanup(&made);
            return Ok(ExitCode::from(130));
        }
    };
    let removed = cleanup(&made);
    match outcome {
        Ok(()) => {
            outln!(
                "Cleaned up: {removed} namespaces and their links removed; nothing is left behind."
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Err(err.context(format!("the demo failed (cleaned up {removed} namespaces)"))),
    }
}

fn steps(args: &DemoArgs, made: &Arc<Mutex<Made>>) -> Result<()> {
    let tag = std::process::id();
    outln!("tapswitch demo: three containers on one userspace switch, like Docker's docker0.\n")?;

    // Without /dev/net/tun (an ordinary user, mostly) c joins by veth too.
    let tap_usable = nix::unistd::access(
        "/dev/net/tun",
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    )
    .is_ok();
    if !tap_usable {
        outln!(
            "(/dev/net/tun is not open to you, so container c joins by veth instead of TAP; to fix: sudo chmod 0666 /dev/net/tun)\n"
        )?;
    }
    outln!("[1/5] Namespaces and links")?;
    let switch_ns = make_namespace(made, &format!("tsdemo-sw-{tag}"))?;
    let containers: Vec<Container> = ['a', 'b', 'c']
        .iter()
        .enumerate()
        .map(|(i, &letter)| -> Result<Container> {
            let ip = Ipv4Addr::new(172, 17, 0, 2 + i as u8);
            let by_tap = letter == 'c' && tap_usable;
            Ok(Container {
                letter,
                ns: make_namespace(made, &format!("tsdemo-{letter}-{tag}"))?,
                ip,
                mac: ipam::MacAddr::docker_from_ipv4(ip).0,
                port: if by_tap {
                    "tap-c".into()
                } else {
                    format!("veth-{letter}")
                },
                by_tap,
            })
        })
        .collect::<Result<_>>()?;
    for c in containers.iter().filter(|c| !c.by_tap) {
        join_by_veth(&switch_ns, c)?;
        print_container(c)?;
    }

    if tap_usable {
        outln!("[2/5] Starting the switch; its TAP port tap-c moves into the third container")?;
    } else {
        outln!("[2/5] Starting the switch")?;
    }
    let switch = start_switch(&switch_ns, &containers, args.trace)?;
    if let Some(tap) = containers.iter().find(|c| c.by_tap) {
        join_by_tap(&switch_ns, tap)?;
        print_container(tap)?;
    }
    let info = switch.info();
    outln!(
        "      switch {} in {}: {} ports, gateway {} ({}), {} worker threads",
        info.switch_id,
        ns_name(&switch_ns),
        switch.port_count(),
        info.gateway.as_deref().unwrap_or("none"),
        info.gateway_mac.map(|m| m.to_string()).unwrap_or_default(),
        info.workers
    )?;

    outln!("[3/5] Ping")?;
    let gateway = serve::DEFAULT_GATEWAY.0;
    let (a, b, c) = (&containers[0], &containers[1], &containers[2]);
    for (from, to, label) in [
        (a, gateway, "gateway"),
        (a, b.ip, "b (veth)"),
        (b, c.ip, if c.by_tap { "c (TAP)" } else { "c (veth)" }),
        (c, gateway, "gateway"),
    ] {
        let result = traffic::ping(&from.ns, to, 3, Duration::from_secs(2))
            .with_context(|| format!("pinging {to} from {}", from.letter))?;
        let median = result
            .median()
            .map(|d| format!("{:.3} ms", d.as_secs_f64() * 1e3))
            .unwrap_or("-".into());
        outln!(
            "      {} -> {:<10} {:<12} {}/{} replies, median {median}",
            from.letter,
            label,
            to,
            result.received(),
            result.sent
        )?;
        if result.received() == 0 {
            bail!("no reply from {to} to container {}", from.letter);
        }
    }

    let by_veth: Vec<String> = containers
        .iter()
        .filter(|c| !c.by_tap)
        .map(|c| c.letter.to_string())
        .collect();
    if let Some(took) = wait_for_the_kernel(&switch, by_veth.len())? {
        let (last, rest) = by_veth.split_last().expect("a and b join by veth");
        outln!(
            "      nothing went to or from {} and {last} for 20 ms, so after {:.2} s the switch gave\n\
             \x20     their addresses to the kernel, which forwards their unicast between the veth ports",
            rest.join(", "),
            took.as_secs_f64()
        )?;
    }

    outln!("[4/5] TCP, offloads left on: 64 KiB super-frames cross the switch whole")?;
    let bytes = args.tcp_mb << 20;
    for (from, to) in [(a, b), (c, a)] {
        let took = traffic::tcp_transfer(&to.ns, to.ip, &from.ns, bytes)
            .with_context(|| format!("TCP from {} to {}", from.letter, to.letter))?;
        let gbits = bytes as f64 * 8.0 / took.as_secs_f64() / 1e9;
        outln!(
            "      {} -> {}  {} MiB intact in {:.3} s = {gbits:.2} Gbit/s",
            from.letter,
            to.letter,
            args.tcp_mb,
            took.as_secs_f64()
        )?;
    }

    outln!("[5/5] What the switch learned\n")?;
    outln!("$ tapswitch fdb")?;
    out!("{}", query::render_fdb(&switch.fdb()?))?;
    outln!("\n$ tapswitch ports")?;
    let ports = switch.ports()?;
    out!("{}", query::render_ports(&ports, &[]))?;
    if ports
        .iter()
        .any(|p| p.stats.rx_kernel_frames + p.stats.tx_kernel_frames > 0)
    {
        outln!(
            "\n\"by the kernel\": once the switch knew a and b, the kernel carried their frames\n\
             between the two veth ports itself, by the switch's MAC table (the kernel shortcut;\n\
             `tapswitch trace on` hands every frame back to the switch)."
        )?;
    }
    outln!()?;
    switch.shutdown();
    Ok(())
}

fn make_namespace(made: &Arc<Mutex<Made>>, name: &str) -> Result<PathBuf> {
    let path = netns::create(name).with_context(|| format!("creating network namespace {name}"))?;
    made.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .namespaces
        .push(path.clone());
    netns::run_in(&path, || {
        let mut nl = Netlink::open()?;
        let lo = nl.require_index("lo")?;
        nl.set_up(lo)?;
        // Keep IPv6 chatter (router solicitations, MLD) out of the tables.
        crate::netlink::write_net_sysctl("ipv6/conf/all/disable_ipv6", "1")?;
        crate::netlink::write_net_sysctl("ipv6/conf/default/disable_ipv6", "1")
    })
    .with_context(|| format!("setting up namespace {name}"))?;
    Ok(path)
}

/// A veth pair: `eth0` in the container, `veth-<letter>` in the switch's namespace.
fn join_by_veth(switch_ns: &Path, c: &Container) -> Result<()> {
    let container_ns = std::fs::File::open(&c.ns)?;
    netns::run_in(switch_ns, || {
        let mut nl = Netlink::open()?;
        nl.create_veth(
            &c.port,
            VethPeer {
                name: "eth0",
                netns: container_ns.as_fd(),
                mac: c.mac,
            },
        )?;
        let index = nl.require_index(&c.port)?;
        nl.set_up(index)
    })
    .with_context(|| format!("creating the veth pair for container {}", c.letter))?;
    configure_eth0(c)
}

/// The switch made `tap-c` in its namespace; it moves into the container,
/// where it becomes `eth0`, and keeps working through the switch's fd.
fn join_by_tap(switch_ns: &Path, c: &Container) -> Result<()> {
    let container_ns = std::fs::File::open(&c.ns)?;
    netns::run_in(switch_ns, || {
        let mut nl = Netlink::open()?;
        let index = nl.require_index(&c.port)?;
        nl.move_to_netns(index, container_ns.as_fd())
    })
    .context("moving the TAP device into container c")?;
    netns::run_in(&c.ns, || {
        let mut nl = Netlink::open()?;
        let index = nl.require_index(&c.port)?;
        nl.rename(index, "eth0", c.mac)
    })
    .context("renaming the TAP device to eth0")?;
    configure_eth0(c)
}

/// Address, link up and default route via the gateway, as Docker sets them.
fn configure_eth0(c: &Container) -> Result<()> {
    netns::run_in(&c.ns, || {
        let mut nl = Netlink::open()?;
        let index = nl.require_index("eth0")?;
        nl.add_address(index, c.ip, 16, Ipv4Addr::new(172, 17, 255, 255))?;
        nl.set_up(index)?;
        nl.add_default_route(index, serve::DEFAULT_GATEWAY.0)
    })
    .with_context(|| format!("configuring eth0 in container {}", c.letter))
}

/// The same switch `serve` runs, started in the switch's namespace so its
/// ports are found there.
fn start_switch(
    switch_ns: &Path,
    containers: &[Container],
    trace: bool,
) -> Result<Arc<RunningSwitch>> {
    netns::run_in(switch_ns, || {
        let setup = serve::SwitchSetup {
            network: crate::control::DEFAULT_NETWORK.to_string(),
            control: PathBuf::new(),
            tuning: Tuning::with_workers(serve::default_workers()),
            table: TableConfig::default(),
            gateway: Some(serve::DEFAULT_GATEWAY),
            trace,
            capture: None,
            kernel_shortcut: true,
        };
        let switch = serve::start_switch(setup).map_err(std::io::Error::other)?;
        for c in containers {
            let spec = if c.by_tap {
                PortSpec::Tap(c.port.clone())
            } else {
                PortSpec::Iface(c.port.clone())
            };
            switch
                .attach(&spec, Some(format!("demo-{}", c.letter)))
                .map_err(std::io::Error::other)?;
        }
        Ok(switch)
    })
    .context("starting the switch")
}

/// Waits (up to a second) until the kernel shortcut holds `addresses`
/// addresses, the veth containers'; how long that took, or `None` when the
/// shortcut is not on (a trace, no CAP_BPF, a kernel before 6.6) or they
/// did not all go in. A host goes in once nothing went from it or to it
/// through the workers for 20 ms (docs/switch-and-ports.md, "The kernel
/// shortcut"), and the pings were back to back: without the wait the TCP
/// step would start before, and a conversation that never pauses stays
/// with the workers.
fn wait_for_the_kernel(switch: &RunningSwitch, addresses: usize) -> Result<Option<Duration>> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        let shortcut = switch.live_info()?.dataplane.kernel_shortcut;
        if shortcut.state != ShortcutState::On {
            return Ok(None);
        }
        if shortcut.addresses >= addresses {
            return Ok(Some(started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(None)
}

/// Deletes every namespace the demo made; returns how many.
fn cleanup(made: &Arc<Mutex<Made>>) -> usize {
    let namespaces = std::mem::take(
        &mut made
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .namespaces,
    );
    let mut removed = 0;
    for ns in namespaces.iter().rev() {
        match netns::delete(ns) {
            Ok(()) => removed += 1,
            Err(err) => eprintln!(
                "tapswitch: could not remove namespace {}: {err}",
                ns.display()
            ),
        }
    }
    removed
}

fn print_container(c: &Container) -> io::Result<()> {
    let how = if c.by_tap { "TAP " } else { "veth" };
    outln!(
        "      {:<20} eth0 {}/16  {}  --{how}--  switch port {}",
        ns_name(&c.ns),
        c.ip,
        mac_text(&c.mac),
        c.port
    )
}

fn ns_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn mac_text(mac: &[u8; 6]) -> String {
    switch::MacAddr(*mac).to_string()
}

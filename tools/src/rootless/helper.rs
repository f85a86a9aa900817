//! `tapswitch __rootless ...`: this program in the roles rootless mode
//! needs inside a user's namespaces (hidden from `--help`), and the calls
//! that start them.
//!
//! | role          | runs in                                | does |
//! |---------------|----------------------------------------|------|
//! | `holder`      | a new user namespace, its own session  | owns the user namespace (see [`super::holder`]) |
//! | `keeper`      | the holder's user namespace, a new network namespace | brings `lo` up, says `ready`, then holds the namespace |
//! | `plug`        | a container's user + network namespace | makes the veth pair (both ends inside, the network's MTU), the address, the route |
//! | `unplug`      | the same                               | deletes the veth pair |
//! | `open-packet` | the same                               | opens packet sockets on the switch's end and passes them back on stdout (SCM_RIGHTS) |
//! | `open-tap`    | a user's user + network namespace      | opens (or creates) a TAP device there and passes its queues back the same way |
//! | `exec`        | the same                               | binds the container's own `/etc` files (its resolv.conf) in a private mount namespace, then runs the command |
//!
//! A helper is a fresh `exec` of this binary (not a fork of a threaded
//! switch) that enters the namespaces between fork and exec
//! ([`ports::namespace::Enter`]); as root of the user namespace it may
//! configure the network namespaces that namespace owns.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use ports::namespace::{Enter, recv_fds, send_fds};
use ports::tap::{OpenedTap, TapQueues};
use ports::{OpenedPort, PortError};

use super::holder::{self, Holder, self_exe};
use crate::netlink::netns::NamespaceId;
use crate::netlink::{Netlink, VethPeer, disable_ipv6, write_net_sysctl};
use crate::outln;

/// The hidden `__rootless` subcommands.
#[derive(Debug, Subcommand)]
pub enum Internal {
    /// Own the user namespace (started by the first command that needs it).
    Holder,
    /// Hold a container's network namespace.
    Keeper,
    /// Build a container's veth pair inside its namespace.
    Plug(PlugArgs),
    /// Delete a container's veth pair inside its namespace.
    Unplug {
        #[arg(long)]
        host_iface: String,
    },
    /// Open packet sockets on an interface and pass them on stdout.
    OpenPacket {
        #[arg(long)]
        iface: String,
        #[arg(long, default_value_t = 1)]
        lanes: usize,
    },
    /// Open (or create) a TAP device and pass its queues on stdout.
    OpenTap {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 1)]
        lanes: usize,
    },
    /// Run a command with the files of `--etc` over their `/etc` namesakes.
    Exec {
        #[arg(long)]
        etc: PathBuf,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

/// What `plug` builds.
#[derive(Debug, Clone, Args)]
pub struct PlugArgs {
    /// The switch's end (a port of the switch, no address).
    #[arg(long)]
    pub host_iface: String,
    /// The container's end (`eth0`, or the next free `ethN` when empty).
    #[arg(long, default_value = "")]
    pub iface: String,
    #[arg(long)]
    pub mac: String,
    #[arg(long)]
    pub ip: Ipv4Addr,
    #[arg(long)]
    pub prefix: u8,
    #[arg(long)]
    pub broadcast: Ipv4Addr,
    #[arg(long)]
    pub gateway: Ipv4Addr,
    /// The network's MTU, given to both ends (as root mode does).
    #[arg(long, default_value_t = ipam::network::ETHERNET_MTU)]
    pub mtu: u32,
}

impl PlugArgs {
    fn to_args(&self) -> Vec<String> {
        vec![
            "plug".into(),
            "--host-iface".into(),
            self.host_iface.clone(),
            "--iface".into(),
            self.iface.clone(),
            "--mac".into(),
            self.mac.clone(),
            "--ip".into(),
            self.ip.to_string(),
            "--prefix".into(),
            self.prefix.to_string(),
            "--broadcast".into(),
            self.broadcast.to_string(),
            "--gateway".into(),
            self.gateway.to_string(),
            "--mtu".into(),
            self.mtu.to_string(),
        ]
    }
}

pub fn run(command: Internal) -> Result<ExitCode> {
    match command {
        Internal::Holder => holder::run(),
        Internal::Keeper => keeper(),
        Internal::Plug(args) => plug(&args).map(|()| ExitCode::SUCCESS),
        Internal::Unplug { host_iface } => unplug(&host_iface).map(|()| ExitCode::SUCCESS),
        Internal::OpenPacket { iface, lanes } => open_packet(&iface, lanes),
        Internal::OpenTap { name, lanes } => open_tap(&name, lanes),
        Internal::Exec { etc, command } => exec(&etc, &command),
    }
}

fn keeper() -> Result<ExitCode> {
    let mut nl = Netlink::open().context("opening a netlink socket")?;
    let lo = nl.require_index("lo")?;
    nl.set_up(lo).context("bringing up lo")?;
    // The starter reads this one line, then leaves us to hold the namespace.
    outln!("ready")?;
    let ignored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGHUP, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, ignored.clone())?;
    }
    loop {
        std::thread::park();
    }
}

fn plug(args: &PlugArgs) -> Result<()> {
    let mut nl = Netlink::open().context("opening a netlink socket")?;
    let iface = if args.iface.is_empty() {
        nl.next_free_eth()?
    } else {
        args.iface.clone()
    };
    let mac: ipam::MacAddr = args
        .mac
        .parse()
        .map_err(|_| anyhow!("--mac {}: not a MAC address", args.mac))?;
    let here = File::open("/proc/thread-self/ns/net").context("opening this namespace")?;
    let peer = VethPeer {
        name: &iface,
        netns: here.as_fd(),
        mac: mac.0,
    };
    let host = args.host_iface.as_str();
    nl.create_veth(host, peer)
        .with_context(|| format!("creating the veth pair {host} / {iface}"))?;
    let index = nl.require_index(host)?;
    let eth = nl.require_index(&iface)?;
    if args.mtu != ipam::network::ETHERNET_MTU {
        for (name, index) in [(host, index), (iface.as_str(), eth)] {
            nl.set_mtu(index, args.mtu)
                .with_context(|| format!("setting the MTU of {name} to {}", args.mtu))?;
        }
    }
    // The switch's end carries no address and no IPv6, and answers no ARP:
    // the container's stack sees what the container sends come in on it,
    // and must leave it alone.
    disable_ipv6(host)?;
    write_net_sysctl(&format!("ipv4/conf/{host}/arp_ignore"), "8")
        .with_context(|| format!("silencing ARP on {host}"))?;
    nl.set_up(index)?;
    disable_ipv6(&iface)?;
    nl.add_address(eth, args.ip, args.prefix, args.broadcast)
        .with_context(|| format!("adding {}/{} to {iface}", args.ip, args.prefix))?;
    nl.set_up(eth)?;
    if !nl.has_default_route()? {
        nl.add_default_route(eth, args.gateway)
            .with_context(|| format!("adding the default route via {}", args.gateway))?;
    }
    outln!("{iface}")?;
    Ok(())
}

/// As `ip netns exec` does with `/etc/netns/NAME`: the mounts live in a
/// mount namespace of this process alone (owned by the user namespace we
/// joined), so nothing outside sees them.
fn exec(etc: &Path, command: &[String]) -> Result<ExitCode> {
    crate::netlink::netns::private_etc(etc)
        .with_context(|| format!("showing the files of {} in /etc", etc.display()))?;
    crate::container_steps::exec_command(command)
}

fn unplug(host_iface: &str) -> Result<()> {
    let mut nl = Netlink::open().context("opening a netlink socket")?;
    if let Some(index) = nl.link_index(host_iface)? {
        nl.delete_link(index)
            .with_context(|| format!("deleting the veth pair {host_iface}"))?;
    }
    Ok(())
}

fn open_packet(iface: &str, lanes: usize) -> Result<ExitCode> {
    pass_fds(ports::packet::open_fds(iface, lanes).map(|fds| ("ok".to_string(), fds)))
}

/// The TAP's queues, with `ok <mtu> <created>` (read by [`open_tap_port`]).
fn open_tap(name: &str, lanes: usize) -> Result<ExitCode> {
    pass_fds(ports::tap::open_queues(name, lanes).map(|tap| {
        (
            format!("ok {} {}", tap.mtu, u8::from(tap.created)),
            tap.queues,
        )
    }))
}

/// Passes `opened`'s descriptors (or its error's text) on stdout.
fn pass_fds(opened: Result<(String, Vec<OwnedFd>), PortError>) -> Result<ExitCode> {
    let stdout = std::io::stdout();
    match opened {
        Ok((text, fds)) => {
            let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
            send_fds(stdout.as_fd(), text.as_bytes(), &borrowed).context("passing the sockets")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            let text = format!("{err}");
            send_fds(stdout.as_fd(), text.as_bytes(), &[]).context("passing the error")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Runs `__rootless ARGS` inside the namespaces `enter` names; returns its
/// stdout, or its stderr's last line as the error.
pub fn run_inside(enter: Enter, args: &[String]) -> Result<String> {
    let mut command = Command::new(self_exe()?);
    command
        .arg("__rootless")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    enter.apply(&mut command);
    let out = command
        .output()
        .context("starting a helper inside the container's namespaces")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr.lines().last().unwrap_or("no message").trim();
        let why = why.strip_prefix("tapswitch: ").unwrap_or(why);
        bail!("{why}");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds the veth pair in the namespace at `netns`; returns the name the
/// container's end got.
pub fn plug_into(netns: &Path, args: &PlugArgs) -> Result<String> {
    run_inside(super::enter_netns(netns)?, &args.to_args())
}

/// Deletes the veth pair whose switch end is `host_iface` in `netns`.
pub fn unplug_from(netns: &Path, host_iface: &str) -> Result<()> {
    let args = [
        "unplug".into(),
        "--host-iface".into(),
        host_iface.to_string(),
    ];
    run_inside(super::enter_netns(netns)?, &args).map(drop)
}

/// Opens interface `iface` of the namespace at `netns` as a port, through
/// sockets a helper opens in there and passes back.
pub fn open_packet_port(netns: &Path, iface: &str, lanes: usize) -> Result<OpenedPort, PortError> {
    let args = [
        "open-packet",
        "--iface",
        iface,
        "--lanes",
        &lanes.to_string(),
    ];
    let (_, fds) = fetch_fds(netns, &args).map_err(|err| failed(iface, err))?;
    ports::packet::adopt_lanes(iface, fds)
}

/// Opens (or creates) TAP device `tap` in the namespace at `netns` as a
/// port: a helper that joined the namespace (as root of its user
/// namespace, so it may create the device) opens its queues and passes
/// them back. A TAP it created lives as long as the switch holds it.
pub fn open_tap_port(netns: &Path, tap: &str, lanes: usize) -> Result<OpenedTap, PortError> {
    let args = ["open-tap", "--name", tap, "--lanes", &lanes.to_string()];
    let (text, queues) = fetch_fds(netns, &args).map_err(|err| failed(tap, err))?;
    let Some((mtu, created)) = tap_answer(&text) else {
        return Err(failed(tap, anyhow!("the helper answered {text:?}")));
    };
    let queues = TapQueues {
        queues,
        mtu,
        created,
        ledger: None,
    };
    ports::tap::adopt(tap, queues)
}

/// `ok <mtu> <created: 0|1>`, as [`open_tap`] answers.
fn tap_answer(text: &str) -> Option<(usize, bool)> {
    let mut fields = text.split_whitespace();
    (fields.next()? == "ok").then_some(())?;
    let mtu = fields.next()?.parse().ok()?;
    let created = match fields.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    Some((mtu, created))
}

fn failed(name: &str, err: anyhow::Error) -> PortError {
    PortError::Io {
        name: name.to_string(),
        doing: "opening it inside its namespace",
        source: std::io::Error::other(format!("{err:#}")),
    }
}

/// Runs helper `__rootless ARGS` in the namespace at `netns` and receives
/// what it passes: its answer (`ok`, then what the role adds) and the
/// descriptors.
fn fetch_fds(netns: &Path, args: &[&str]) -> Result<(String, Vec<OwnedFd>)> {
    let enter = super::enter_netns(netns)?;
    let (ours, theirs) = UnixStream::pair().context("making a socket pair")?;
    let mut command = Command::new(self_exe()?);
    command
        .arg("__rootless")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::piped());
    enter.apply(&mut command);
    let mut child = command.spawn().context("starting the helper")?;
    // Our copy of its end is gone with `command`, so end of stream means
    // the helper is gone.
    drop(command);
    let mut buf = [0u8; 1024];
    let received = recv_fds(ours.as_fd(), &mut buf);
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let _ = child.wait();
    let (n, fds) = received.context("receiving the sockets")?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    match text.as_str() {
        "" => bail!(
            "the helper ended without an answer: {}",
            stderr.lines().last().unwrap_or("no message")
        ),
        ok if (ok == "ok" || ok.starts_with("ok ")) && !fds.is_empty() => Ok((text, fds)),
        _ => bail!("{text}"),
    }
}

/// Starts a keeper: a new network namespace in the holder's user namespace.
/// Returns its PID and the namespace's identity.
pub fn start_keeper(holder: &Holder) -> Result<(u32, NamespaceId)> {
    let userns = File::open(holder.userns_path())
        .with_context(|| format!("opening {}", holder.userns_path().display()))?;
    let mut command = Command::new(self_exe()?);
    command
        .args(["__rootless", "keeper"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    Enter::new()
        .new_session()
        .join_user(userns.into())
        .new_net()
        .apply(&mut command);
    let mut child = command
        .spawn()
        .context("starting the process that holds the container's namespace")?;
    let pid = child.id();
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the process holding the container's namespace did not start");
    }
    let id = NamespaceId::of(Path::new(&format!("/proc/{pid}/ns/net")))
        .context("reading the new namespace's identity")?;
    // Not waited for: it lives on after this command.
    drop(child);
    Ok((pid, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Helper {
        #[command(subcommand)]
        role: Internal,
    }

    fn plug_args(mtu: u32) -> PlugArgs {
        PlugArgs {
            host_iface: "ts-0123456789".into(),
            iface: String::new(),
            mac: "02:42:ac:11:00:02".into(),
            ip: Ipv4Addr::new(172, 17, 0, 2),
            prefix: 16,
            broadcast: Ipv4Addr::new(172, 17, 255, 255),
            gateway: Ipv4Addr::new(172, 17, 0, 1),
            mtu,
        }
    }

    #[test]
    fn plug_arguments_reach_the_helper_with_the_networks_mtu() {
        for mtu in [ipam::network::ETHERNET_MTU, 9000, 65520] {
            let sent = plug_args(mtu);
            let argv = std::iter::once("__rootless".to_string()).chain(sent.to_args());
            let Helper {
                role: Internal::Plug(got),
            } = Helper::try_parse_from(argv).unwrap()
            else {
                panic!("not a plug");
            };
            assert_eq!(got.mtu, mtu);
            assert_eq!(got.iface, "", "empty: the next free ethN");
            assert_eq!(got.to_args(), sent.to_args());
        }
    }

    #[test]
    fn a_plug_without_an_mtu_gets_ethernets() {
        let argv = [
            "__rootless",
            "plug",
            "--host-iface",
            "ts-x",
            "--mac",
            "02:42:ac:11:00:02",
            "--ip",
            "172.17.0.2",
            "--prefix",
            "16",
            "--broadcast",
            "172.17.255.255",
            "--gateway",
            "172.17.0.1",
        ];
        let Helper {
            role: Internal::Plug(got),
        } = Helper::try_parse_from(argv).unwrap()
        else {
            panic!("not a plug");
        };
        assert_eq!(got.mtu, ipam::network::ETHERNET_MTU);
    }

    #[test]
    fn a_tap_answer_carries_the_mtu_and_whether_it_was_created() {
        assert_eq!(tap_answer("ok 1500 1"), Some((1500, true)));
        assert_eq!(tap_answer("ok 65520 0"), Some((65520, false)));
        for bad in ["ok", "ok 1500", "ok x 1", "ok 1500 2", "no 1500 1", ""] {
            assert_eq!(tap_answer(bad), None, "{bad:?}");
        }
    }
}

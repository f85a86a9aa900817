//! The standard test topology: N host namespaces, each joined by a veth
//! pair to a switch namespace, addresses in 172.17.0.0/16 like Docker's
//! default bridge.

use std::net::Ipv4Addr;

use crate::netns::Netns;
use crate::switch_process::SwitchProcess;

/// One "container": a namespace with `eth0`, whose peer is a switch port.
#[derive(Debug)]
pub struct Host {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// The name of the veth end in the switch namespace.
    pub port: String,
}

/// A switch namespace and the hosts attached to it. Dropping it removes
/// every namespace and interface it made.
#[derive(Debug)]
pub struct Topology {
    pub hosts: Vec<Host>,
    pub switch_ns: Netns,
}

impl Topology {
    /// `n` hosts at 172.17.0.2.. with MACs 02:42:ac:11:00:02.., each `eth0`
    /// joined to port `p1`.. in the switch namespace. Offloads stay at the
    /// kernel's defaults (checksum offload, TSO and GSO on).
    pub fn veth_star(n: usize) -> Topology {
        let switch_ns = Netns::new("tsw");
        let mut hosts = Vec::new();
        for i in 0..n {
            let ns = Netns::new("th");
            let last = u8::try_from(i + 2).expect("fewer than 250 hosts");
            let ip = Ipv4Addr::new(172, 17, 0, last);
            let mac = [0x02, 0x42, 0xac, 0x11, 0x00, last];
            let port = format!("p{}", i + 1);
            let mac_text = crate::frames::mac_text(&mac);
            ns.veth_to("eth0", Some(&mac_text), &port, &switch_ns);
            ns.ip(&["addr", "add", &format!("{ip}/16"), "dev", "eth0"]);
            ns.ip(&["link", "set", "eth0", "up"]);
            ns.ip(&["route", "add", "default", "via", "172.17.0.1"]);
            switch_ns.ip(&["link", "set", &port, "up"]);
            hosts.push(Host { ns, ip, mac, port });
        }
        Topology { hosts, switch_ns }
    }

    /// `--iface p1 --iface p2 ...` for `tapswitch serve`.
    pub fn iface_args(&self) -> Vec<String> {
        self.hosts
            .iter()
            .flat_map(|h| ["--iface".to_string(), h.port.clone()])
            .collect()
    }

    /// `tapswitch serve` in the switch namespace with every host's port
    /// and `extra` after them.
    pub fn serve_with(&self, extra: &[&str]) -> SwitchProcess {
        let mut args = self.iface_args();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        SwitchProcess::start(&self.switch_ns.name, &args)
    }
}

/// Moves each TAP device `taps[i]` (made by a switch, or beforehand, in
/// `switch_ns`) into a new host namespace as its `eth0`, at 172.17.0.(i+2)/16
/// and up; the switch keeps reading it through its file descriptor.
pub fn tap_hosts(switch_ns: &Netns, taps: &[&str]) -> Vec<Netns> {
    taps.iter()
        .enumerate()
        .map(|(i, tap)| {
            let host = Netns::new("th");
            switch_ns.ip(&["link", "set", tap, "netns", &host.name]);
            host.ip(&["link", "set", tap, "name", "eth0"]);
            let ip = format!("172.17.0.{}/16", i + 2);
            host.ip(&["addr", "add", &ip, "dev", "eth0"]);
            host.ip(&["link", "set", "eth0", "up"]);
            host
        })
        .collect()
}

/// A switch that makes two TAP ports, `t1` and `t2` (`serve --tap t1 --tap
/// t2` and `extra`), whose container ends are moved into two host
/// namespaces at 172.17.0.2 and .3. Returns the switch's namespace, the
/// switch and the hosts; bind them in that order, so they are dropped the
/// other way round.
pub fn tap_pair(extra: &[&str]) -> (Netns, SwitchProcess, Vec<Netns>) {
    let switch_ns = Netns::new("tsw");
    let mut args: Vec<String> = ["--tap", "t1", "--tap", "t2"].map(String::from).to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    let switch = SwitchProcess::start(&switch_ns.name, &args);
    // The switch made the TAPs in its namespace; the "container" end of
    // each moves into a host namespace and keeps working through the fd.
    let hosts = tap_hosts(&switch_ns, &["t1", "t2"]);
    (switch_ns, switch, hosts)
}

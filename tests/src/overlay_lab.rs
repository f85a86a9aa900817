//! Several hosts in one machine for the overlay tests: each host a network
//! namespace, all joined by an underlay (a kernel bridge in a namespace of
//! its own, where a private etcd listens too).
//!
//! ```text
//!   host h0 (10.99.0.1) ─ u0 ═╗
//!   host h1 (10.99.0.2) ─ u0 ═╬═ br0 (10.99.0.254, etcd :2379)   underlay namespace
//!   host h2 (10.99.0.3) ─ u0 ═╝
//! ```
//!
//! Containers made by `tapswitch container create` live in
//! `/run/netns/tapswitch-NAME`; the lab removes those it is told about
//! ([`OverlayLab::adopt_container`]) when dropped, before the hosts go.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::etcd_server::EtcdServer;
use crate::netns::Netns;
use crate::switch_process::binary;

/// The underlay's prefix; host `i` is `.i+1`, the bridge (and etcd) `.254`.
pub const UNDERLAY: [u8; 3] = [10, 99, 0];
/// Where etcd listens, inside the underlay namespace.
pub const ETCD_HOST: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 254);

/// See the module docs. Fields drop in order: containers first (in
/// `Drop`), then etcd, then the hosts, then the underlay.
#[derive(Debug)]
pub struct OverlayLab {
    containers: Vec<String>,
    pub etcd: EtcdServer,
    pub hosts: Vec<Netns>,
    pub underlay: Netns,
}

impl OverlayLab {
    /// `hosts` host namespaces on the underlay and etcd running; `None`
    /// (after a `SKIPPED` line) without an etcd binary.
    pub fn new(test: &str, hosts: usize) -> Option<OverlayLab> {
        let underlay = Netns::new("tul");
        underlay.ip(&["link", "add", "br0", "type", "bridge"]);
        underlay.ip(&["addr", "add", &format!("{ETCD_HOST}/24"), "dev", "br0"]);
        underlay.ip(&["link", "set", "br0", "up"]);
        let mut namespaces = Vec::new();
        for i in 0..hosts {
            let host = Netns::new("thost");
            let port = format!("h{i}");
            host.veth_to("u0", None, &port, &underlay);
            let address = Self::underlay_ip(i);
            host.ip(&["addr", "add", &format!("{address}/24"), "dev", "u0"]);
            host.ip(&["link", "set", "u0", "up"]);
            underlay.ip(&["link", "set", &port, "master", "br0"]);
            underlay.ip(&["link", "set", &port, "up"]);
            namespaces.push(host);
        }
        let etcd = EtcdServer::start_in(test, &underlay.name, ETCD_HOST)?;
        Some(OverlayLab {
            containers: Vec::new(),
            etcd,
            hosts: namespaces,
            underlay,
        })
    }

    /// Host `i`'s underlay address.
    pub fn underlay_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(
            UNDERLAY[0],
            UNDERLAY[1],
            UNDERLAY[2],
            u8::try_from(i + 1).unwrap(),
        )
    }

    /// `etcd://10.99.0.254:2379`.
    pub fn store(&self) -> String {
        self.etcd.store_url()
    }

    /// Runs `tapswitch --store <etcd> ARGS` inside host `i`'s network
    /// namespace. Through `nsenter --net`, not `ip netns exec`: the latter
    /// also gives the command a mount namespace of its own, where the
    /// `/run/netns` mounts of the containers it creates would stay.
    pub fn tapswitch(&self, i: usize, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.hosts[i].name))
            .arg(binary())
            .arg("--store")
            .arg(self.store())
            .args(args)
            .output()
            .expect("running tapswitch")
    }

    /// [`tapswitch`](OverlayLab::tapswitch) that must succeed; its stdout.
    pub fn ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.tapswitch(i, args);
        assert!(
            out.status.success(),
            "tapswitch {} on host {i} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Removes container `name`'s namespace when the lab goes (call it
    /// before creating the container, so a failed create is cleaned too).
    pub fn adopt_container(&mut self, name: &str) {
        self.containers.push(name.to_string());
    }

    /// `/run/netns/tapswitch-NAME`.
    pub fn container_ns(name: &str) -> PathBuf {
        PathBuf::from(format!("/run/netns/tapswitch-{name}"))
    }
}

impl Drop for OverlayLab {
    fn drop(&mut self) {
        for name in &self.containers {
            let netns = format!("tapswitch-{name}");
            let _ = Command::new("ip").args(["netns", "del", &netns]).status();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{netns}"));
        }
    }
}

//! Network namespaces owned by a test, and running code inside them.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test process) uses: `prefix` + pid + counter,
/// at most 15 bytes so it also fits an interface name.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id() % 100_000);
    assert!(name.len() <= 15, "{name} is too long for an interface name");
    name
}

/// Runs `ip ARGS...` and returns its output; panics with its error output
/// if it fails.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip ARGS...` and returns its output, or its error text.
pub fn ip_output(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A network namespace created for a test and deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `<prefix><pid>x<n>` with `lo` up and IPv6 off (so the
    /// kernel's own IPv6 chatter stays out of the frames tests look at).
    pub fn new(prefix: &str) -> Netns {
        let ns = Netns {
            name: unique_name(prefix),
        };
        ip(&["netns", "add", &ns.name]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        ns
    }

    /// Writes a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        in_netns(&self.name, move || {
            std::fs::write(&path, value).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        });
    }

    /// Makes a veth pair: `name` here (with MAC `mac`, if given), its peer
    /// `peer` in namespace `peer_ns`. Both ends stay down.
    pub fn veth_to(&self, name: &str, mac: Option<&str>, peer: &str, peer_ns: &Netns) {
        let mut args = vec!["link", "add", name];
        if let Some(mac) = mac {
            args.extend(["address", mac]);
        }
        args.extend(["type", "veth", "peer", "name", peer, "netns", &peer_ns.name]);
        self.ip(&args);
    }

    /// Runs `ip -n NS ARGS...`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Runs a command inside the namespace (`ip netns exec`) and returns its output.
    pub fn exec(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name))
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth ends, and with them the peers.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `f` on a new thread that has entered namespace `name`
/// (`tools::netlink::netns::run_in`, panicking instead of failing).
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    in_netns_at(&netns_path(name), f)
}

/// [`in_netns`] for the namespace at `path` (a name's file under
/// `/run/netns`, or a process's `/proc/PID/ns/net`).
pub fn in_netns_at<T: Send>(path: &std::path::Path, f: impl FnOnce() -> T + Send) -> T {
    tools::netlink::netns::run_in(path, || Ok(f()))
        .unwrap_or_else(|e| panic!("in namespace {}: {e}", path.display()))
}

/// Where namespace `name` is mounted.
pub fn netns_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(tools::netlink::netns::NETNS_RUN_DIR).join(name)
}

//! `container attach|detach` end to end, as root: namespaces tapswitch did
//! not make, plugged into a live `tapswitch serve`.
//!
//! ```text
//!   unshare --net sleep      ip netns add tat<pid>x<n>    tapswitch-<c>
//!   eth0 10.215.0.x          eth1 10.215.0.y (eth0: a     eth0 10.215.0.z
//!     |  veth                  |  veth, a route)       |  veth
//!   ts-<id1>                 ts-<id2>                     ts-<id3>
//!     \__________________ tapswitch serve __________________/  + gateway 10.215.0.1
//! ```
//!
//! Every test has its own state directory, control socket and network; the
//! namespaces are the test's own (an `unshare` child it kills by PID, a
//! named namespace it deletes), removed by guards on every exit path.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tapswitch_tests::child::{NetnsHolder, terminate};
use tapswitch_tests::netns::ip;
use tapswitch_tests::poll::within;
use tapswitch_tests::switch_process::binary;
use tapswitch_tests::{Netns, require_root};
use tools::control::{self, Request};

/// A private state directory, one network on it, and its switch.
struct Lab {
    dir: tempfile::TempDir,
    network: String,
    switch: Option<Child>,
}

impl Lab {
    /// Creates network `network` with `subnet` and starts its switch.
    fn start(network: &str, subnet: &str) -> Lab {
        let mut lab = Lab {
            dir: tempfile::tempdir().expect("a temporary directory"),
            network: network.to_string(),
            switch: None,
        };
        lab.ok(&["network", "create", network, "--subnet", subnet]);
        let socket = lab.socket();
        let log = std::fs::File::create(lab.dir.path().join("serve.log")).unwrap();
        let child = Command::new(binary())
            .args(["serve", "--network", network, "--control"])
            .arg(&socket)
            .env("TAPSWITCH_STATE_DIR", lab.state_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting tapswitch serve");
        lab.switch = Some(child);
        assert!(
            within(Duration::from_secs(20), || {
                control::call(&socket, &Request::Info).is_ok()
            }),
            "the switch did not come up"
        );
        lab
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("switch.sock")
    }

    /// `tapswitch ARGS` on this lab's state directory.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(args)
            .env("TAPSWITCH_STATE_DIR", self.state_dir())
            .stdin(Stdio::null())
            .output()
            .expect("running tapswitch")
    }

    /// [`Lab::run`], expected to succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        succeeded(&self.run(args), &format!("tapswitch {}", args.join(" ")))
    }

    /// `container attach NAME --network N --control S` plus `how`.
    fn attach(&self, name: &str, how: &[&str]) -> Output {
        let socket = self.socket();
        let mut args = vec!["container", "attach", name, "--network", &self.network];
        args.extend_from_slice(how);
        args.extend_from_slice(&["--control", socket.to_str().unwrap()]);
        self.run(&args)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Detach whatever is still attached before the switch goes.
        let ls = self.run(&["container", "ls"]);
        for line in String::from_utf8_lossy(&ls.stdout).lines().skip(1) {
            if let Some(name) = line.split_whitespace().nth(1) {
                let _ = self.run(&["container", "rm", name]);
            }
        }
        if let Some(mut child) = self.switch.take() {
            terminate(&mut child);
        }
    }
}

fn assert_pings(ns: &Path, target: &str) {
    let target: std::net::Ipv4Addr = target.parse().unwrap();
    let result = tools::traffic::ping(ns, target, 1, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("pinging {target} from {}: {e}", ns.display()));
    assert_eq!(
        result.received(),
        1,
        "{} got no reply from {target}",
        ns.display()
    );
}

fn succeeded(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn last_error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.lines().last().unwrap_or_default().to_string()
}

#[test]
fn namespaces_attached_by_pid_and_by_path_reach_a_created_container_and_detach() {
    require_root();
    let pid = std::process::id();
    let lab = Lab::start(&format!("at{pid}"), "10.215.0.0/24");
    let holder = NetnsHolder::start();
    let named = Netns::new("tat");
    // The named namespace already has an eth0 (half of a veth pair) and its own default
    // route: attach must take eth1 and leave the route alone.
    ip(&[
        "-n",
        &named.name,
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "peer0",
    ]);
    ip(&["-n", &named.name, "link", "set", "peer0", "up"]);
    ip(&["-n", &named.name, "link", "set", "eth0", "up"]);
    ip(&["-n", &named.name, "route", "add", "default", "dev", "eth0"]);

    let (created, by_pid, by_path) = (format!("tc{pid}"), format!("tp{pid}"), format!("tn{pid}"));
    let socket = lab.socket();
    lab.ok(&[
        "container",
        "create",
        &created,
        "--network",
        &lab.network,
        "--control",
        socket.to_str().unwrap(),
    ]);
    let out = lab.attach(&by_pid, &["--pid", &holder.pid()]);
    succeeded(&out, "attach --pid");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("has 10.215.0.3 on eth0; use 10.215.0.1 as its DNS server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let named_path = Path::new(tools::netlink::netns::NETNS_RUN_DIR).join(&named.name);
    succeeded(
        &lab.attach(&by_path, &["--netns", named_path.to_str().unwrap()]),
        "attach --netns",
    );

    // Recorded like any container.
    let ls = lab.ok(&["container", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.contains(&by_pid) && l.contains("10.215.0.3/24")),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.contains(&by_path) && l.contains("10.215.0.4/24")),
        "{ls}"
    );
    let inspect = lab.ok(&["container", "inspect", &by_pid]);
    assert!(
        inspect.contains(&format!(
            "\"SandboxKey\": \"/proc/{}/ns/net\"",
            holder.pid()
        )),
        "{inspect}"
    );
    let network = lab.ok(&["network", "inspect", &lab.network]);
    assert!(network.contains(&by_path), "{network}");

    // The pid's namespace got eth0 and the default route; the named one
    // got eth1 and kept its own route.
    let routes = Command::new("nsenter")
        .arg(format!("--net={}", holder.netns().display()))
        .args(["ip", "route"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains("default via 10.215.0.1 dev eth0"),
        "{routes}"
    );
    let routes = ip(&["-n", &named.name, "route"]);
    assert!(routes.contains("default dev eth0"), "{routes}");
    assert!(!routes.contains("via 10.215.0.1"), "{routes}");
    assert!(
        ip(&["-n", &named.name, "addr", "show", "eth1"]).contains("10.215.0.4/24"),
        "attached as eth1"
    );

    // Traffic through the live switch: attached <-> created, and the gateway.
    assert_pings(&holder.netns(), "10.215.0.2");
    assert_pings(&holder.netns(), "10.215.0.1");
    assert_pings(&named_path, "10.215.0.3");

    // One namespace, one attachment.
    let again = lab.attach("tdup", &["--pid", &holder.pid()]);
    assert!(
        last_error_line(&again).contains(&format!("already attached as container {by_pid}")),
        "{}",
        last_error_line(&again)
    );
    // Detach refuses what `create` made.
    let wrong = lab.run(&["container", "detach", &created]);
    assert!(last_error_line(&wrong).contains("container rm"));

    // Detach: the veth goes, the namespace stays, the address is free.
    assert_eq!(lab.ok(&["container", "detach", &by_path]).trim(), by_path);
    assert!(named_path.exists(), "detach never deletes the namespace");
    assert!(!ip(&["-n", &named.name, "link"]).contains("eth1"));
    assert!(!lab.ok(&["container", "ls"]).contains(&by_path));

    // The holder process dies: its namespace goes, and the next command
    // releases the lease.
    drop(holder);
    let ls = lab.ok(&["container", "ls"]);
    assert!(!ls.contains(&by_pid), "{ls}");
    assert!(ls.contains(&created), "{ls}");
    let ports = lab.ok(&["ports", "--control", socket.to_str().unwrap()]);
    assert_eq!(
        ports.lines().filter(|l| l.contains("ts-")).count(),
        1,
        "only the created container's port is left: {ports}"
    );
}

#[test]
fn attach_refuses_the_hosts_own_namespace_and_a_missing_process() {
    require_root();
    let pid = std::process::id();
    let lab = Lab::start(&format!("ar{pid}"), "10.216.0.0/24");
    // /proc/self is tapswitch's own: the host's namespace, where the switch runs.
    let own = lab.attach("tself", &["--netns", "/proc/self/ns/net"]);
    assert!(
        last_error_line(&own).contains("this host's own network namespace"),
        "{}",
        last_error_line(&own)
    );
    let missing = lab.attach("tgone", &["--pid", "999999999"]);
    assert!(
        last_error_line(&missing).contains("no process 999999999"),
        "{}",
        last_error_line(&missing)
    );
    assert!(!lab.ok(&["container", "ls"]).contains("tgone"));
}

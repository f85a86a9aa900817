//! Networks and containers end to end, as root: real namespaces, veth pairs
//! and a real `tapswitch serve`, driven through the `tapswitch` command the
//! way the walkthrough in docs/networks-and-containers.md does.
//!
//! ```text
//!   tapswitch-<c1>          tapswitch-<c2>         (namespaces the tests create)
//!   eth0 172.17.0.2         eth0 172.17.0.3
//!     |  veth                 |  veth
//!   ts-<id1>                ts-<id2>               (host ends: no address, no IPv6)
//!     \______ tapswitch serve ______/  + gateway 172.17.0.1 (userspace)
//! ```
//!
//! Isolation: every test has its own state directory (TAPSWITCH_STATE_DIR),
//! its own control socket and unique container names; all but the
//! walkthrough also have their own network and subnet. Traffic stays
//! between the test's namespaces and its switch. Guards remove containers
//! and stop the switch (by PID) on every exit path.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tools::control::{self, Request};

/// A private state directory and the `tapswitch` command pointed at it.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn socket(&self, network: &str) -> PathBuf {
        self.dir.path().join(format!("{network}.sock"))
    }

    fn run(&self, args: &[&str]) -> Output {
        support::tapswitch(&self.state_dir(), args)
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        support::ok(&self.state_dir(), args)
    }

    /// `tapswitch container create NAME --network NETWORK EXTRA... --control
    /// <that network's socket>`, the arguments as a list.
    fn create_args(&self, name: &str, network: &str, extra: &[&str]) -> Vec<String> {
        let socket = self.socket(network);
        let socket = socket.to_str().expect("a UTF-8 path");
        ["container", "create", name, "--network", network]
            .iter()
            .chain(extra)
            .chain(&["--control", socket])
            .map(|arg| arg.to_string())
            .collect()
    }

    /// Creates a container on `network`'s switch; returns stdout.
    fn create(&self, name: &str, network: &str, extra: &[&str]) -> String {
        let args = self.create_args(name, network, extra);
        self.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Expects creating a container on `network`'s switch to fail; returns
    /// the last line of stderr.
    fn create_fails(&self, name: &str, network: &str, extra: &[&str]) -> String {
        let args = self.create_args(name, network, extra);
        self.fails(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Runs and expects failure; returns the last line of stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "tapswitch {} should have failed",
            args.join(" ")
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        stderr.lines().last().unwrap_or_default().to_string()
    }
}

/// A `tapswitch serve` for one network on a private socket; SIGTERM on drop.
struct Switch {
    child: Child,
}

impl Switch {
    fn start(env: &Env, network: &str, gateway: &str) -> Switch {
        Switch::start_with(env, network, &["--gateway", gateway])
    }

    /// `serve --network NAME` with the gateway IPAM gives the network.
    fn start_from_ipam(env: &Env, network: &str) -> Switch {
        Switch::start_with(env, network, &[])
    }

    fn start_with(env: &Env, network: &str, extra: &[&str]) -> Switch {
        let socket = env.socket(network);
        let log = std::fs::File::create(env.dir.path().join(format!("{network}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tapswitch"))
            .args(["serve", "--network", network])
            .args(extra)
            .arg("--control")
            .arg(&socket)
            .env("TAPSWITCH_STATE_DIR", env.state_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting tapswitch serve");
        let mut switch = Switch { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while control::call(&socket, &Request::Info).is_err() {
            if let Ok(Some(status)) = switch.child.try_wait() {
                panic!(
                    "tapswitch serve exited early ({status}); see its log in the test's temp dir"
                );
            }
            assert!(
                Instant::now() < deadline,
                "the switch did not come up in 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        switch
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Container names unique to this test process; removed on drop.
struct Names<'a> {
    env: &'a Env,
    names: Vec<String>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl<'a> Names<'a> {
    fn new(env: &'a Env) -> Names<'a> {
        Names {
            env,
            names: Vec::new(),
        }
    }

    fn fresh(&mut self, tag: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{tag}{}x{n}", std::process::id());
        self.names.push(name.clone());
        name
    }
}

impl Drop for Names<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self.env.run(&["container", "rm", name]);
            // In case the state itself was the problem.
            let leftover = Path::new("/run/netns").join(format!("tapswitch-{name}"));
            if leftover.exists() {
                let _ = Command::new("ip")
                    .args(["netns", "delete", &format!("tapswitch-{name}")])
                    .status();
            }
        }
    }
}

/// One ping from inside the container's namespace must be answered. Raw
/// ICMP from Rust, so the suite needs no `ping` binary on the machine.
fn assert_pings(container: &str, target: &str) {
    let ns = Path::new("/run/netns").join(format!("tapswitch-{container}"));
    let target: std::net::Ipv4Addr = target.parse().unwrap();
    let result = tools::traffic::ping(&ns, target, 1, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("pinging {target} from {container}: {e}"));
    assert_eq!(
        result.received(),
        1,
        "{container} got no reply from {target}"
    );
}

fn netns_exists(container: &str) -> bool {
    Path::new("/run/netns")
        .join(format!("tapswitch-{container}"))
        .exists()
}

/// The walkthrough of docs/networks-and-containers.md on the default `bridge` network.
#[test]
fn walkthrough_two_bridge_containers_talk_to_each_other_and_the_gateway() {
    let env = Env::new();
    let socket = env.socket("bridge");
    let socket = socket.to_str().unwrap();
    let _switch = Switch::start(&env, "bridge", "172.17.0.1/16");
    let mut names = Names::new(&env);
    let (c1, c2, c3) = (names.fresh("a"), names.fresh("b"), names.fresh("c"));

    let id1 = env.ok(&["container", "create", &c1, "--control", socket]);
    assert_eq!(id1.trim().len(), 64, "create prints the container id");
    env.ok(&["container", "create", &c2, "--control", socket]);
    assert!(netns_exists(&c1), "the namespace is visible to `ip netns`");

    let addr = env.ok(&["container", "exec", &c1, "--", "ip", "addr", "show"]);
    assert!(addr.contains("eth0"), "{addr}");
    assert!(
        addr.contains("inet 172.17.0.2/16 brd 172.17.255.255"),
        "{addr}"
    );
    assert!(addr.contains("link/ether 02:42:ac:11:00:02"), "{addr}");
    assert!(addr.contains("lo: <LOOPBACK,UP"), "{addr}");
    let route = env.ok(&["container", "exec", &c1, "--", "ip", "route"]);
    assert!(route.contains("default via 172.17.0.1 dev eth0"), "{route}");

    assert_pings(&c1, "172.17.0.3");
    assert_pings(&c2, "172.17.0.2");
    assert_pings(&c1, "172.17.0.1");

    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["network", "inspect", "bridge"])).unwrap();
    let listed: Vec<(String, String, String)> = inspect[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| {
            (
                c["Name"].as_str().unwrap().to_string(),
                c["IPv4Address"].as_str().unwrap().to_string(),
                c["MacAddress"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        listed.contains(&(
            c1.clone(),
            "172.17.0.2/16".into(),
            "02:42:ac:11:00:02".into()
        )),
        "{listed:?}"
    );
    assert!(
        listed.contains(&(
            c2.clone(),
            "172.17.0.3/16".into(),
            "02:42:ac:11:00:03".into()
        )),
        "{listed:?}"
    );

    // `show` finds the switch through the socket the containers recorded.
    let show = env.ok(&["show"]);
    let row = |name: &str| {
        show.lines()
            .find(|l| l.trim_end().ends_with(name))
            .map(str::to_string)
    };
    let row1 = row(&c1).unwrap_or_else(|| panic!("{c1} missing from:\n{show}"));
    assert!(
        row1.starts_with("bridge    8000.0242ac110001   no"),
        "{show}"
    );
    assert!(row1.contains(" ts-"), "{show}");
    assert!(row(&c2).is_some(), "{show}");

    // Removing a container releases its address for the next one.
    assert_eq!(env.ok(&["container", "rm", &c2]).trim(), c2);
    assert!(!netns_exists(&c2));
    let ports = env.ok(&["ports", "--control", socket]);
    assert!(!ports.contains(&c2), "the port is detached: {ports}");
    env.ok(&["container", "create", &c3, "--control", socket]);
    let ls = env.ok(&["container", "ls"]);
    let line = ls.lines().find(|l| l.contains(&c3)).unwrap();
    assert!(line.contains("172.17.0.3/16"), "{ls}");
    // rm is idempotent.
    env.ok(&["container", "rm", &c2]);
}

#[test]
fn a_none_container_has_only_loopback_and_exec_passes_the_exit_status() {
    let env = Env::new();
    let mut names = Names::new(&env);
    let name = names.fresh("n");
    env.ok(&["container", "create", &name, "--network", "none"]);
    let links = env.ok(&["container", "exec", &name, "--", "ip", "-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(
        links.starts_with("1: lo: <LOOPBACK,UP,LOWER_UP>"),
        "{links}"
    );

    let out = env.run(&["container", "exec", &name, "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let out = env.run(&["container", "exec", &name, "--", "no-such-command-here"]);
    assert_eq!(out.status.code(), Some(127));

    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["network", "inspect", "none"])).unwrap();
    assert_eq!(inspect[0]["Driver"], "null");
    assert!(inspect[0]["Containers"].to_string().contains(&name));
    env.ok(&["container", "rm", &name]);
    assert!(!netns_exists(&name));
}

#[test]
fn a_host_container_shares_the_host_stack() {
    let env = Env::new();
    let mut names = Names::new(&env);
    let name = names.fresh("h");
    env.ok(&["container", "create", &name, "--network", "host"]);
    assert!(!netns_exists(&name), "host containers get no namespace");
    let inside = env.ok(&[
        "container",
        "exec",
        &name,
        "--",
        "readlink",
        "/proc/self/ns/net",
    ]);
    let here = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(inside.trim(), here.to_str().unwrap());
    let view: serde_json::Value =
        serde_json::from_str(&env.ok(&["container", "inspect", &name])).unwrap();
    assert_eq!(view[0]["HostConfig"]["NetworkMode"], "host");
    assert!(env.ok(&["network", "inspect", "host"]).contains(&name));
    let err = env.fails(&[
        "container",
        "create",
        &names.fresh("h"),
        "--network",
        "host",
        "--ip",
        "1.2.3.4",
    ]);
    assert!(err.contains("has no addresses to give"), "{err}");
}

#[test]
fn a_created_network_with_a_range_and_a_requested_address() {
    let env = Env::new();
    let network = format!("n{}", std::process::id());
    env.ok(&[
        "network",
        "create",
        &network,
        "--subnet",
        "10.213.0.0/24",
        "--ip-range",
        "10.213.0.128/25",
        "--aux-address",
        "printer=10.213.0.128",
    ]);
    let _switch = Switch::start(&env, &network, "10.213.0.1/24");
    let mut names = Names::new(&env);
    let (a, b) = (names.fresh("r"), names.fresh("r"));
    env.create(&a, &network, &[]);
    env.create(&b, &network, &["--ip", "10.213.0.9"]);
    let ls = env.ok(&["container", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.contains(&a) && l.contains("10.213.0.129/24")),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.contains(&b) && l.contains("10.213.0.9/24")),
        "{ls}"
    );
    assert_pings(&a, "10.213.0.9");

    let err = env.create_fails(&names.fresh("r"), &network, &["--ip", "10.213.0.9"]);
    assert_eq!(
        err,
        format!(
            "tapswitch: address 10.213.0.9 is already in use by container {b} on network {network}: pick another --ip, or remove {b} first"
        )
    );
    let err = env.fails(&["network", "rm", &network]);
    assert!(err.contains("is in use by container(s)"), "{err}");
    env.ok(&["container", "rm", &a, &b]);
    env.ok(&["network", "rm", &network]);
}

#[test]
fn leases_of_containers_that_vanished_are_released_at_start_up() {
    let env = Env::new();
    let network = format!("v{}", std::process::id());
    env.ok(&["network", "create", &network, "--subnet", "10.214.0.0/24"]);
    let _switch = Switch::start(&env, &network, "10.214.0.1/24");
    let mut names = Names::new(&env);
    let (gone, next) = (names.fresh("g"), names.fresh("g"));
    env.create(&gone, &network, &[]);

    // The namespace disappears behind tapswitch's back (as after a reboot).
    let status = Command::new("ip")
        .args(["netns", "delete", &format!("tapswitch-{gone}")])
        .status()
        .unwrap();
    assert!(status.success());

    // The next command releases the lease first, so the address is free again.
    env.create(&next, &network, &[]);
    let ls = env.ok(&["container", "ls"]);
    assert!(!ls.contains(&gone), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.contains(&next) && l.contains("10.214.0.2/24")),
        "{ls}"
    );

    // A reboot: the boot id in the state is not this boot's.
    let state_file = env.state_dir().join("state.json");
    let text = std::fs::read_to_string(&state_file).unwrap();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    std::fs::write(&state_file, text.replace(boot_id.trim(), "an-earlier-boot")).unwrap();
    let pruned = env.ok(&["network", "prune"]);
    assert!(
        pruned.contains(&format!(
            "released 10.214.0.2 on network {network} (container {next} no longer exists)"
        )),
        "{pruned}"
    );
    assert!(!netns_exists(&next), "prune cleans up what was left");
    for name in [&gone, &next] {
        let etc = format!("/etc/netns/tapswitch-{name}");
        assert!(
            !std::path::Path::new(&etc).exists(),
            "{etc} (its resolv.conf) goes with the container"
        );
    }
    assert!(env.ok(&["network", "prune"]).contains("nothing to release"));
}

#[test]
fn without_a_switch_create_says_how_to_start_one_and_leaves_nothing() {
    let env = Env::new();
    let mut names = Names::new(&env);
    let name = names.fresh("s");
    let socket = env.socket("bridge");
    let err = env.fails(&[
        "container",
        "create",
        &name,
        "--control",
        socket.to_str().unwrap(),
    ]);
    assert!(
        err.starts_with("tapswitch: no switch serves network bridge"),
        "{err}"
    );
    assert!(
        err.contains("start one with `tapswitch serve --network bridge`"),
        "{err}"
    );
    assert!(!netns_exists(&name));
    assert!(!env.ok(&["container", "ls"]).contains(&name));
}

#[test]
fn concurrent_creates_get_distinct_addresses_until_the_subnet_is_exhausted() {
    let env = Env::new();
    let network = format!("x{}", std::process::id());
    // /29: 8 addresses less network, gateway and broadcast = 5 containers.
    env.ok(&["network", "create", &network, "--subnet", "10.215.0.0/29"]);
    let socket = env.socket(&network);
    let socket = socket.to_str().unwrap();
    let _switch = Switch::start(&env, &network, "10.215.0.1/29");
    let mut names = Names::new(&env);
    let batch: Vec<String> = (0..5).map(|_| names.fresh("x")).collect();

    let children: Vec<Child> = batch
        .iter()
        .map(|name| {
            Command::new(env!("CARGO_BIN_EXE_tapswitch"))
                .args([
                    "container",
                    "create",
                    name,
                    "--network",
                    &network,
                    "--control",
                    socket,
                ])
                .env("TAPSWITCH_STATE_DIR", env.state_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ls = env.ok(&["container", "ls"]);
    let mut addresses: Vec<&str> = ls
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(3).unwrap())
        .collect();
    addresses.sort_unstable();
    assert_eq!(
        addresses,
        [
            "10.215.0.2/29",
            "10.215.0.3/29",
            "10.215.0.4/29",
            "10.215.0.5/29",
            "10.215.0.6/29"
        ]
    );

    let late = names.fresh("x");
    let err = env.create_fails(&late, &network, &[]);
    assert_eq!(
        err,
        format!(
            "tapswitch: no free address left in 10.215.0.0/29 on network {network}: remove a container (`tapswitch container rm NAME`) or use a network with a larger subnet"
        )
    );
    assert!(
        !netns_exists(&late),
        "a refused create leaves nothing behind"
    );
}

/// A switch that restarts attaches the containers of its network again
/// (their namespaces and veths outlived it), and takes its gateway from IPAM.
#[test]
fn a_restarted_switch_reattaches_its_containers() {
    let env = Env::new();
    let mut names = Names::new(&env);
    let network = names.fresh("rn");
    env.ok(&["network", "create", &network, "--subnet", "10.214.0.0/24"]);
    let socket = env.socket(&network);
    let socket = socket.to_str().unwrap();
    let (a, b) = (names.fresh("ra"), names.fresh("rb"));
    {
        let _switch = Switch::start_from_ipam(&env, &network);
        env.create(&a, &network, &[]);
        env.create(&b, &network, &[]);
        assert_pings(&a, "10.214.0.3");
    }
    let _switch = Switch::start_from_ipam(&env, &network);
    let ports = env.ok(&["ports", "--control", socket]);
    assert!(ports.contains(&format!("container {a}")), "{ports}");
    assert!(ports.contains(&format!("container {b}")), "{ports}");
    assert_pings(&a, "10.214.0.3");
    assert_pings(&b, "10.214.0.1");
}

/// A host port nobody holds right now (the kernel's pick for port 0).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn published_ports_are_recorded_shown_and_held_once() {
    let env = Env::new();
    let network = format!("p{}", std::process::id());
    env.ok(&["network", "create", &network, "--subnet", "10.216.0.0/24"]);
    let _switch = Switch::start(&env, &network, "10.216.0.1/24");
    let mut names = Names::new(&env);
    let (web, clash) = (names.fresh("p"), names.fresh("p"));
    let port = free_port();
    let tcp = format!("127.0.0.1:{port}:80");
    let udp = format!("127.0.0.1:{port}:53/udp");
    env.create(&web, &network, &["-p", &tcp, "--publish", &udp]);

    // `container ls` shows the ports as recorded, unmarked once the
    // switch listens on them (it opens them when it sees the record).
    let published = format!("127.0.0.1:{port}->80/tcp, 127.0.0.1:{port}->53/udp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ls = loop {
        let ls = env.ok(&["container", "ls"]);
        let line = ls.lines().find(|l| l.contains(&web)).unwrap();
        if line.ends_with(&published) || std::time::Instant::now() > deadline {
            break ls;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let line = ls.lines().find(|l| l.contains(&web)).unwrap();
    assert!(line.ends_with(&published), "{ls}");
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["container", "inspect", &web])).unwrap();
    assert_eq!(
        inspect[0]["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        port.to_string()
    );

    // The same host port again: refused before anything is built.
    let err = env.create_fails(&clash, &network, &["-p", &format!("{port}:8080")]);
    assert_eq!(
        err,
        format!(
            "tapswitch: host port 0.0.0.0:{port}/tcp is already published by container {web} (-p {tcp}/tcp): pick another host port, or remove {web} first"
        )
    );
    assert!(!netns_exists(&clash));
    // Removing the container frees the port.
    env.ok(&["container", "rm", &web]);
    env.create(&clash, &network, &["-p", &format!("{port}:8080")]);
    env.ok(&["container", "rm", &clash]);
    env.ok(&["network", "rm", &network]);
}

//! One overlay network across hosts: two tapswitch hosts and a host with a
//! kernel `vxlan` device, each a namespace on one underlay, a private etcd
//! on it (see `tapswitch_tests::overlay_lab`), containers on every host.
//!
//! ```text
//!   container A ── tapswitch serve (h0, 10.99.0.1) ─╮
//!   container B ── tapswitch serve (h1, 10.99.0.2) ─┼─ underlay ─ etcd
//!   container K ── br0 + vx0 (kernel, h2, 10.99.0.3)─╯
//!   stranger (h3, 10.99.0.4): no member, sends stray VXLAN
//! ```
//!
//! Skipped with a `SKIPPED` line when the etcd binary is missing (CI
//! installs it). Every process is ours and stopped by PID; every namespace
//! is removed by a guard, also when an assertion fails.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tapswitch_tests::overlay_lab::OverlayLab;
use tapswitch_tests::{Netns, SwitchProcess, in_netns, require_root, unique_name};

const VNI: &str = "4242";
const SUBNET: &str = "10.50.0.0/24";
/// The kernel host's container: outside the addresses IPAM hands out first.
const KERNEL_CONTAINER_IP: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 250);
const KERNEL_CONTAINER_MAC: &str = "02:42:0a:32:00:fa";
const TEN_MB: usize = 10 << 20;

fn serve(lab: &OverlayLab, host: usize) -> SwitchProcess {
    let underlay = OverlayLab::underlay_ip(host).to_string();
    let args: Vec<String> = [
        "--store",
        &lab.store(),
        "--network",
        "ov",
        "--underlay",
        &underlay,
        "--lease-ttl",
        "3",
        "--workers",
        "1",
        "--no-realtime",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    SwitchProcess::start(&lab.hosts[host].name, &args)
}

/// A container made by `tapswitch container create` on `host`.
#[derive(Debug)]
struct Container {
    ns: PathBuf,
    ip: Ipv4Addr,
    mac: String,
}

fn create_container(lab: &mut OverlayLab, host: usize, switch: &SwitchProcess) -> Container {
    let name = unique_name("cv");
    lab.adopt_container(&name);
    let control = switch.control.display().to_string();
    lab.ok(
        host,
        &[
            "container",
            "create",
            &name,
            "--network",
            "ov",
            "--control",
            &control,
        ],
    );
    inspect_container(&OverlayLab::container_ns(&name))
}

/// Address, MAC and MTU of `eth0` in a namespace.
fn inspect_container(ns: &Path) -> Container {
    let name = ns.file_name().unwrap().to_str().unwrap().to_string();
    let addr =
        tapswitch_tests::netns::ip_output(&["-n", &name, "-o", "-4", "addr", "show", "eth0"])
            .expect("eth0's address");
    let ip = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("no address in {addr}"));
    let link = tapswitch_tests::netns::ip_output(&["-n", &name, "-o", "link", "show", "eth0"])
        .expect("eth0's link");
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {link}"))
        .to_string();
    assert!(
        link.contains("mtu 1450"),
        "a container on an overlay network gets the network's MTU: {link}"
    );
    Container {
        ns: ns.to_path_buf(),
        ip,
        mac,
    }
}

/// The kernel-vxlan host: `vx0` and a container's veth on a kernel bridge,
/// flooding to both tapswitch hosts (`bridge fdb append 00:00:00:00:00:00`).
fn kernel_host(lab: &OverlayLab, host: usize, switches: &[usize]) -> (Netns, Container) {
    let ns = &lab.hosts[host];
    let local = OverlayLab::underlay_ip(host).to_string();
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&[
        "link", "add", "vx0", "type", "vxlan", "id", VNI, "dstport", "4789", "local", &local,
        "dev", "u0",
    ]);
    ns.ip(&["link", "set", "vx0", "master", "br0", "up"]);
    for switch in switches {
        let dst = OverlayLab::underlay_ip(*switch).to_string();
        let out = std::process::Command::new("bridge")
            .args([
                "-n",
                &ns.name,
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                "vx0",
            ])
            .args(["dst", &dst])
            .output()
            .expect("running bridge (iproute2)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let container = Netns::new("tkc");
    container.ip(&[
        "link",
        "add",
        "eth0",
        "address",
        KERNEL_CONTAINER_MAC,
        "mtu",
        "1450",
        "type",
        "veth",
        "peer",
        "name",
        "vk",
        "netns",
        &ns.name,
    ]);
    container.ip(&[
        "addr",
        "add",
        &format!("{KERNEL_CONTAINER_IP}/24"),
        "dev",
        "eth0",
    ]);
    container.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "vk", "mtu", "1450", "master", "br0", "up"]);
    ns.ip(&["link", "set", "br0", "up"]);
    let inside = Container {
        ns: PathBuf::from("/run/netns").join(&container.name),
        ip: KERNEL_CONTAINER_IP,
        mac: KERNEL_CONTAINER_MAC.to_string(),
    };
    (container, inside)
}

fn ping_ok(from: &Container, to: Ipv4Addr) {
    let got = tools::traffic::ping(&from.ns, to, 3, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("pinging {to} from {}: {e}", from.ns.display()))
        .received();
    assert!(
        got >= 2,
        "{} -> {to}: {got} of 3 echo replies",
        from.ns.display()
    );
}

fn transfer_ok(server: &Container, client: &Container) {
    tools::traffic::tcp_transfer(&server.ns, server.ip, &client.ns, TEN_MB).unwrap_or_else(|e| {
        panic!(
            "10 MB over TCP {} -> {}: {e}",
            client.ns.display(),
            server.ns.display()
        )
    });
}

/// The tunnel's report (`Request::Tunnel`).
fn tunnel(switch: &SwitchProcess) -> serde_json::Value {
    switch.call(r#"{"cmd":"tunnel"}"#).expect("tunnel request")
}

/// Where `mac` is behind, as `fdb --json` says (`via`), if on the tunnel.
fn via(switch: &SwitchProcess, mac: &str) -> Option<String> {
    switch.fdb()["entries"]
        .as_array()?
        .iter()
        .find(|e| e["mac"] == mac)
        .and_then(|e| e["via"].as_str().map(str::to_string))
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn members(switch: &SwitchProcess) -> Vec<String> {
    tunnel(switch)["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn two_switches_and_a_kernel_vxlan_host_share_one_segment() {
    require_root();
    let Some(mut lab) = OverlayLab::new("two_switches_and_a_kernel_vxlan_host", 4) else {
        return;
    };
    lab.ok(
        0,
        &[
            "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET, "--vni", VNI,
        ],
    );
    lab.ok(0, &["network", "peer", "add", "ov", "10.99.0.3"]);
    let mut a = serve(&lab, 0);
    let mut b = serve(&lab, 1);
    let (_kernel_container_ns, kernel) = kernel_host(&lab, 2, &[0, 1]);
    let on_a = create_container(&mut lab, 0, &a);
    let on_b = create_container(&mut lab, 1, &b);
    assert_ne!(on_a.ip, on_b.ip, "one pool across hosts");

    // Each switch floods to the other and to the kernel host.
    for (switch, other) in [(&a, "10.99.0.2:4789"), (&b, "10.99.0.1:4789")] {
        wait_for("the members known", Duration::from_secs(15), || {
            let m = members(switch);
            m.contains(&other.to_string()) && m.contains(&"10.99.0.3:4789".to_string())
        });
    }

    // Every pair of hosts, and the gateway on each tapswitch host.
    ping_ok(&on_a, Ipv4Addr::new(10, 50, 0, 1));
    ping_ok(&on_b, Ipv4Addr::new(10, 50, 0, 1));
    ping_ok(&on_a, on_b.ip);
    ping_ok(&on_b, on_a.ip);
    ping_ok(&on_a, kernel.ip);
    ping_ok(&kernel, on_a.ip);
    ping_ok(&on_b, kernel.ip);
    ping_ok(&kernel, on_b.ip);
    transfer_ok(&on_b, &on_a);
    transfer_ok(&kernel, &on_a);
    transfer_ok(&on_b, &kernel);

    // Learning across: each switch knows which host each remote MAC is behind.
    assert_eq!(via(&a, &on_b.mac).as_deref(), Some("10.99.0.2:4789"));
    assert_eq!(via(&a, &kernel.mac).as_deref(), Some("10.99.0.3:4789"));
    assert_eq!(via(&b, &on_a.mac).as_deref(), Some("10.99.0.1:4789"));
    assert_eq!(
        via(&a, &on_a.mac),
        None,
        "a local container is on its own port"
    );
    let kernel_fdb = std::process::Command::new("bridge")
        .args(["-n", &lab.hosts[2].name, "fdb", "show", "dev", "vx0"])
        .output()
        .expect("bridge fdb show");
    let kernel_fdb = String::from_utf8_lossy(&kernel_fdb.stdout);
    assert!(
        kernel_fdb
            .lines()
            .any(|l| l.starts_with(&on_a.mac) && l.contains("dst 10.99.0.1")),
        "the kernel learned A's container behind 10.99.0.1:\n{kernel_fdb}"
    );
    let text = lab.ok(0, &["fdb", "--control", &a.control.display().to_string()]);
    assert!(
        text.contains(&format!("vxlan0 via 10.99.0.2:4789  {}", on_b.mac)),
        "{text}"
    );

    // A stray VXLAN datagram from an address that is no member: dropped, counted.
    let stray_mac = "02:00:de:ad:be:ef";
    in_netns(&lab.hosts[3].name, || {
        let socket = UdpSocket::bind("10.99.0.4:4789").unwrap();
        let mut datagram = ports::wire::vxlan::header(4242).to_vec();
        datagram.extend_from_slice(&[0xff; 6]);
        datagram.extend_from_slice(&tapswitch_tests::frames::mac(stray_mac));
        datagram.extend_from_slice(&[0x08, 0x06]);
        datagram.extend_from_slice(&[0; 46]);
        socket
            .send_to(
                &datagram,
                SocketAddrV4::new(OverlayLab::underlay_ip(0), 4789),
            )
            .unwrap();
    });
    wait_for("the stray datagram counted", Duration::from_secs(5), || {
        tunnel(&a)["stats"]["rx_dropped_not_member"].as_u64() == Some(1)
    });
    assert_eq!(
        a.port_of(stray_mac),
        None,
        "nothing learned from a stranger"
    );

    // etcd away: forwarding between known hosts goes on; back: re-registers.
    lab.etcd.stop();
    wait_for(
        "the switch noticing etcd away",
        Duration::from_secs(15),
        || a.log().contains("etcd does not answer"),
    );
    ping_ok(&on_a, on_b.ip);
    ping_ok(&on_a, kernel.ip);
    lab.etcd.restart();
    wait_for(
        "the switch noticing etcd back",
        Duration::from_secs(20),
        || a.log().contains("etcd answers again") && b.log().contains("etcd answers again"),
    );

    // A switch restarted: registers again, re-attaches its container
    // (same address), and the others take it back.
    a.restart(|| {});
    wait_for("A back in B's members", Duration::from_secs(15), || {
        members(&b).contains(&"10.99.0.1:4789".to_string())
    });
    assert_eq!(inspect_container(&on_a.ns).ip, on_a.ip);
    assert!(a.log().contains("re-attached container"), "{}", a.log());
    ping_ok(&on_a, on_b.ip);
    ping_ok(&kernel, on_a.ip);

    // A host killed: within its lease the others stop flooding to it and
    // forget its MACs.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(b.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for("B's lease expiring at A", Duration::from_secs(20), || {
        !members(&a).contains(&"10.99.0.2:4789".to_string())
    });
    assert!(!b.is_running());
    assert_eq!(a.port_of(&on_b.mac), None, "B's container forgotten");
    assert!(
        tunnel(&a)["remotes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r[1] != "10.99.0.2:4789"),
        "{}",
        tunnel(&a)
    );
    assert!(
        a.log().contains("member 10.99.0.2:4789 left"),
        "{}",
        a.log()
    );
    // The kernel host is still reached.
    ping_ok(&on_a, kernel.ip);
}

#[test]
fn two_hosts_creating_eight_containers_each_at_once_get_sixteen_addresses() {
    require_root();
    let Some(mut lab) = OverlayLab::new("two_hosts_creating_eight_containers_each", 2) else {
        return;
    };
    lab.ok(
        0,
        &[
            "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET,
        ],
    );
    let switches = [serve(&lab, 0), serve(&lab, 1)];
    let names: Vec<(usize, String)> = (0..16).map(|i| (i % 2, unique_name("cc"))).collect();
    for (_, name) in &names {
        lab.adopt_container(name);
    }
    let lab = &lab;
    let created: Vec<Container> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|(host, name)| {
                let control = switches[*host].control.display().to_string();
                scope.spawn(move || {
                    lab.ok(
                        *host,
                        &[
                            "container",
                            "create",
                            name,
                            "--network",
                            "ov",
                            "--control",
                            &control,
                        ],
                    );
                    inspect_container(&OverlayLab::container_ns(name))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: std::collections::BTreeSet<Ipv4Addr> = created.iter().map(|c| c.ip).collect();
    assert_eq!(distinct.len(), 16, "{created:?}");
    // And they reach each other across the hosts.
    ping_ok(&created[0], created[1].ip);
}

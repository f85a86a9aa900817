//! What the overlay tests share: `serve` on a lab host, containers made
//! by `tapswitch container create` and how they are read, traffic checks,
//! and the tunnel's state as the control socket reports it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::overlay_lab::OverlayLab;
use crate::poll::within;
use crate::{Netns, SwitchProcess, unique_name};

pub const VNI: &str = "4242";
pub const SUBNET: &str = "10.50.0.0/24";
/// The kernel host's container: outside the addresses IPAM hands out first.
pub const KERNEL_CONTAINER_IP: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 250);
pub const KERNEL_CONTAINER_MAC: &str = "02:42:0a:32:00:fa";
pub const TEN_MB: usize = 10 << 20;

pub fn serve(lab: &OverlayLab, host: usize) -> SwitchProcess {
    serve_on(lab, host, &OverlayLab::underlay_ip(host).to_string())
}

/// `serve --network ov --underlay UNDERLAY --lease-ttl 3` on `host`.
pub fn serve_on(lab: &OverlayLab, host: usize, underlay: &str) -> SwitchProcess {
    serve_network(lab, host, "ov", underlay)
}

/// `serve --network NETWORK --underlay UNDERLAY --lease-ttl 3` on `host`.
pub fn serve_network(
    lab: &OverlayLab,
    host: usize,
    network: &str,
    underlay: &str,
) -> SwitchProcess {
    let args: Vec<String> = [
        "--store",
        &lab.store(),
        "--network",
        network,
        "--underlay",
        underlay,
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

/// `serve --network NETWORK --underlay UNDERLAY` on `host`, which must
/// refuse to start (within 15 s): its stderr.
pub fn serve_refused(lab: &OverlayLab, host: usize, network: &str, underlay: &str) -> String {
    let mut serve = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.hosts[host].name))
        .arg(crate::switch_process::binary())
        .args(["--store", &lab.store(), "serve", "--network", network])
        .args(["--underlay", underlay, "--no-realtime"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting tapswitch serve");
    let ended = within(Duration::from_secs(15), || {
        serve.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = serve.kill();
        let _ = serve.wait();
        panic!("serve did not refuse network {network} on --underlay {underlay}");
    }
    let out = serve.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    stderr
}

/// A container: its namespace and `eth0`'s address, MAC and MTU.
#[derive(Debug)]
pub struct Container {
    pub ns: PathBuf,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub mtu: u32,
}

/// A container made by `tapswitch container create` on `host`, with the
/// MTU of an overlay network on a 1500-byte IPv4 underlay.
pub fn create_container(lab: &mut OverlayLab, host: usize, switch: &SwitchProcess) -> Container {
    create_container_with_mtu(lab, host, switch, 1450)
}

/// A container made by `tapswitch container create` on `host`, whose
/// `eth0` must have MTU `mtu`.
pub fn create_container_with_mtu(
    lab: &mut OverlayLab,
    host: usize,
    switch: &SwitchProcess,
    mtu: u32,
) -> Container {
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
    let container = read_container(&OverlayLab::container_ns(&name));
    assert_eq!(
        container.mtu, mtu,
        "a container on an overlay network gets the network's MTU: {container:?}"
    );
    container
}

/// Address, MAC and MTU of `eth0` in a namespace, which must have the
/// default MTU of an overlay network (1450).
pub fn inspect_container(ns: &Path) -> Container {
    let container = read_container(ns);
    assert_eq!(
        container.mtu, 1450,
        "a container on an overlay network gets the network's MTU: {container:?}"
    );
    container
}

/// Address, MAC and MTU of `eth0` in a namespace.
pub fn read_container(ns: &Path) -> Container {
    let name = ns.file_name().unwrap().to_str().unwrap().to_string();
    let addr = crate::netns::ip_output(&["-n", &name, "-o", "-4", "addr", "show", "eth0"])
        .expect("eth0's address");
    let ip = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("no address in {addr}"));
    let link =
        crate::netns::ip_output(&["-n", &name, "-o", "link", "show", "eth0"]).expect("eth0's link");
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {link}"))
        .to_string();
    let mtu = link
        .split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no MTU in {link}"));
    Container {
        ns: ns.to_path_buf(),
        ip,
        mac,
        mtu,
    }
}

/// The kernel-vxlan host: `vx0` and a container's veth on a kernel bridge,
/// flooding to both tapswitch hosts (`bridge fdb append 00:00:00:00:00:00`).
pub fn kernel_host(lab: &OverlayLab, host: usize, switches: &[usize]) -> (Netns, Container) {
    let dsts: Vec<String> = switches
        .iter()
        .map(|switch| OverlayLab::underlay_ip(*switch).to_string())
        .collect();
    let local = OverlayLab::underlay_ip(host).to_string();
    kernel_host_on(lab, host, &local, &dsts, 1450)
}

/// The kernel-vxlan host with `vx0` on underlay address `local` (IPv4 or
/// IPv6), flooding to `dsts`, its container's veth with MTU `mtu`.
pub fn kernel_host_on(
    lab: &OverlayLab,
    host: usize,
    local: &str,
    dsts: &[String],
    mtu: u32,
) -> (Netns, Container) {
    let ns = &lab.hosts[host];
    let mtu_text = mtu.to_string();
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&[
        "link", "add", "vx0", "type", "vxlan", "id", VNI, "dstport", "4789", "local", local, "dev",
        "u0",
    ]);
    ns.ip(&["link", "set", "vx0", "master", "br0", "up"]);
    for dst in dsts {
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
            .args(["dst", dst])
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
        &mtu_text,
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
    ns.ip(&["link", "set", "vk", "mtu", &mtu_text, "master", "br0", "up"]);
    ns.ip(&["link", "set", "br0", "up"]);
    let inside = Container {
        ns: PathBuf::from("/run/netns").join(&container.name),
        ip: KERNEL_CONTAINER_IP,
        mac: KERNEL_CONTAINER_MAC.to_string(),
        mtu,
    };
    (container, inside)
}

pub fn ping_ok(from: &Container, to: Ipv4Addr) {
    let got = tools::traffic::ping(&from.ns, to, 3, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("pinging {to} from {}: {e}", from.ns.display()))
        .received();
    assert!(
        got >= 2,
        "{} -> {to}: {got} of 3 echo replies",
        from.ns.display()
    );
}

pub fn transfer_ok(server: &Container, client: &Container) {
    tools::traffic::tcp_transfer(&server.ns, server.ip, &client.ns, TEN_MB).unwrap_or_else(|e| {
        panic!(
            "10 MB over TCP {} -> {}: {e}",
            client.ns.display(),
            server.ns.display()
        )
    });
}

/// The tunnel's report (`Request::Tunnel`).
pub fn tunnel(switch: &SwitchProcess) -> serde_json::Value {
    switch.call(r#"{"cmd":"tunnel"}"#).expect("tunnel request")
}

/// Where `mac` is behind, as `fdb --json` says (`via`), if on the tunnel.
pub fn via(switch: &SwitchProcess, mac: &str) -> Option<String> {
    switch.fdb()["entries"]
        .as_array()?
        .iter()
        .find(|e| e["mac"] == mac)
        .and_then(|e| e["via"].as_str().map(str::to_string))
}

pub fn members(switch: &SwitchProcess) -> Vec<String> {
    tunnel(switch)["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

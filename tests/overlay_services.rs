//! The gateway's services on an overlay network read the shared store:
//! DNS names every container of the network whichever host runs it (also
//! those made after the switch started, and forgets removed ones),
//! published ports are opened by the switch of the container's host only
//! (each host has its own host ports),
//! and `--internal` refuses outbound flows as on a bridge network.
//!
//! ```text
//!   container A ── tapswitch serve (h0) ─┬─ underlay ─ etcd
//!   container B ── tapswitch serve (h1) ─╯
//!   remote (servers, DNS upstream) ── h0
//! ```
//!
//! Skipped with a `SKIPPED` line when the etcd binary is missing (CI
//! installs it). Every process is ours and stopped by PID; every namespace
//! is removed by a guard, also when an assertion fails.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

use tapswitch_tests::gateway_kit::udp_exchange_in;
use tapswitch_tests::overlay_lab::OverlayLab;
use tapswitch_tests::poll::wait_for;
use tapswitch_tests::remote::{
    DNS_ANSWER, DNS_PORT, REMOTE_IP, Remote, UDP_ECHO_PORT, dns_addresses, dns_query,
};
use tapswitch_tests::{SwitchProcess, in_netns, require_root, unique_name};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 1);
const SUBNET: &str = "10.50.0.0/24";
const PUBLISHED: u16 = 18080;

fn serve(lab: &OverlayLab, host: usize) -> SwitchProcess {
    let underlay = OverlayLab::underlay_ip(host).to_string();
    let upstream = format!("{REMOTE_IP}:{DNS_PORT}");
    let args: Vec<String> = [
        "--store",
        &lab.store(),
        "--network",
        "ov",
        "--underlay",
        &underlay,
        "--dns-upstream",
        &upstream,
        "--workers",
        "1",
        "--no-realtime",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    SwitchProcess::start(&lab.hosts[host].name, &args)
}

/// `tapswitch container create NAME --network ov EXTRA` on `host`; the
/// container's address.
fn create(lab: &mut OverlayLab, host: usize, switch: &SwitchProcess, extra: &[&str]) -> Named {
    let name = unique_name("cs");
    lab.adopt_container(&name);
    let control = switch.control.display().to_string();
    let mut args = vec![
        "container",
        "create",
        &name,
        "--network",
        "ov",
        "--control",
        &control,
    ];
    args.extend_from_slice(extra);
    lab.ok(host, &args);
    let inspect = lab.ok(host, &["container", "inspect", &name]);
    let ip = address_in(&inspect);
    Named { name, ip }
}

#[derive(Debug)]
struct Named {
    name: String,
    ip: Ipv4Addr,
}

impl Named {
    fn netns(&self) -> String {
        format!("tapswitch-{}", self.name)
    }
}

/// The first 10.50.0.x address in `container inspect`'s output.
fn address_in(inspect: &str) -> Ipv4Addr {
    inspect
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|word| word.parse::<Ipv4Addr>().ok())
        .find(|ip| ip.octets()[..3] == [10, 50, 0] && *ip != GATEWAY)
        .unwrap_or_else(|| panic!("no address in {inspect}"))
}

/// What the gateway's DNS answers `name` with, asked from namespace `ns`.
fn resolve_in(ns: &str, name: &str) -> Vec<Ipv4Addr> {
    let reply = udp_exchange_in(ns, SocketAddrV4::new(GATEWAY, 53), &dns_query(0x4242, name))
        .unwrap_or_else(|e| panic!("no DNS answer for {name} in {ns}: {e}"));
    dns_addresses(&reply)
}

/// Whether a TCP connect from namespace `ns` to `to` is accepted.
fn connects(ns: &str, to: SocketAddrV4) -> bool {
    in_netns(ns, move || {
        TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)).is_ok()
    })
}

#[test]
fn gateway_dns_names_the_containers_of_every_host_and_ports_open_at_home() {
    require_root();
    let Some(mut lab) = OverlayLab::new("overlay_services_dns", 2) else {
        return;
    };
    lab.ok(
        0,
        &[
            "network", "create", "ov", "--driver", "overlay", "--subnet", SUBNET,
        ],
    );
    let remote = Remote::new(&lab.hosts[0]);
    let a = serve(&lab, 0);
    let b = serve(&lab, 1);
    let port = format!("{PUBLISHED}:80");
    let on_a = create(&mut lab, 0, &a, &["-p", &port]);
    // Made after A's switch started, on the other host: A learns it from
    // the store only.
    let on_b = create(&mut lab, 1, &b, &[]);

    wait_for(
        "A's gateway naming B's container",
        Duration::from_secs(10),
        || resolve_in(&on_a.netns(), &on_b.name) == vec![on_b.ip],
    );
    wait_for(
        "B's gateway naming A's container",
        Duration::from_secs(10),
        || resolve_in(&on_b.netns(), &on_a.name) == vec![on_a.ip],
    );
    assert_eq!(
        resolve_in(&on_a.netns(), &format!("{}.tapswitch.internal", on_b.name)),
        vec![on_b.ip]
    );
    assert!(!a.log().contains("was not recorded in time"), "{}", a.log());
    // Names outside the network still go upstream, and outbound works.
    assert_eq!(
        resolve_in(&on_a.netns(), "www.example.test"),
        vec![DNS_ANSWER]
    );
    let echo = SocketAddrV4::new(REMOTE_IP, UDP_ECHO_PORT);
    assert_eq!(
        udp_exchange_in(&on_a.netns(), echo, b"out?").expect("outbound UDP"),
        b"out?"
    );

    // A program in the container resolves through /etc/resolv.conf (the
    // gateway) and pings the other host's container by name.
    let out = lab.tapswitch(
        0,
        &[
            "container",
            "exec",
            &on_a.name,
            "--",
            "ping",
            "-c",
            "2",
            "-W",
            "3",
            &on_b.name,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&format!("({})", on_b.ip)),
        "ping {} from {}: {text}{}",
        on_b.name,
        on_a.name,
        String::from_utf8_lossy(&out.stderr)
    );

    // A's container's published port is opened by A's switch, not by B's.
    let on_host = |i: usize| SocketAddrV4::new(OverlayLab::underlay_ip(i), PUBLISHED);
    wait_for("A's switch listening", Duration::from_secs(10), || {
        connects(&lab.hosts[0].name, on_host(0))
    });
    assert!(
        !connects(&lab.hosts[1].name, on_host(1)),
        "B's switch publishes a port of A's container"
    );
    // Host ports are each host's own: B publishes its own 18080 too, while
    // A's is still taken on A.
    let twin = create(&mut lab, 1, &b, &["-p", &port]);
    wait_for("B's switch listening", Duration::from_secs(10), || {
        connects(&lab.hosts[1].name, on_host(1))
    });
    let control = a.control.display().to_string();
    let again = lab.tapswitch(
        0,
        &[
            "container",
            "create",
            &unique_name("cs"),
            "--network",
            "ov",
            "--control",
            &control,
            "-p",
            &port,
        ],
    );
    let text = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success()
            && text.contains(&format!("already published by container {}", on_a.name)),
        "a second {PUBLISHED} on A: {text}"
    );
    lab.ok(1, &["container", "rm", &twin.name]);

    // Removed on B: A's gateway forgets the name (the question goes upstream).
    lab.ok(1, &["container", "rm", &on_b.name]);
    wait_for(
        "A's gateway forgetting B's container",
        Duration::from_secs(10),
        || resolve_in(&on_a.netns(), &on_b.name) == vec![DNS_ANSWER],
    );

    // etcd away and back: A's gateway follows the store again.
    lab.etcd.stop();
    wait_for("A noticing etcd away", Duration::from_secs(15), || {
        a.log().contains("cannot follow the store")
    });
    assert_eq!(
        resolve_in(&on_a.netns(), &on_a.name),
        vec![on_a.ip],
        "the names known stay"
    );
    lab.etcd.restart();
    let later = create(&mut lab, 1, &b, &[]);
    wait_for(
        "A's gateway naming a container made after etcd came back",
        Duration::from_secs(15),
        || resolve_in(&on_a.netns(), &later.name) == vec![later.ip],
    );
    assert!(a.log().contains("the store answers again"), "{}", a.log());
    drop(remote);
}

#[test]
fn an_internal_overlay_network_refuses_outbound() {
    require_root();
    let Some(mut lab) = OverlayLab::new("overlay_services_internal", 1) else {
        return;
    };
    lab.ok(
        0,
        &[
            "network",
            "create",
            "ov",
            "--driver",
            "overlay",
            "--subnet",
            SUBNET,
            "--internal",
        ],
    );
    let remote = Remote::new(&lab.hosts[0]);
    let a = serve(&lab, 0);
    let on_a = create(&mut lab, 0, &a, &[]);
    let echo = SocketAddrV4::new(REMOTE_IP, UDP_ECHO_PORT);
    // Linux reports ICMP "communication administratively prohibited" on a
    // connected UDP socket as EHOSTUNREACH.
    let err = udp_exchange_in(&on_a.netns(), echo, b"out?").expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::HostUnreachable, "{err}");
    // The gateway's own DNS still answers, with the network's names (the
    // switch reads the record once `container create` has committed it).
    wait_for(
        "the gateway naming the container",
        Duration::from_secs(10),
        || resolve_in(&on_a.netns(), &on_a.name) == vec![on_a.ip],
    );
    let services = a.call(r#"{"cmd":"services"}"#).expect("services");
    assert_eq!(services["outbound"], false, "{services}");
    assert!(
        services["frames"]["outbound_denied"].as_u64().unwrap() >= 1,
        "{services}"
    );
    drop(remote);
}

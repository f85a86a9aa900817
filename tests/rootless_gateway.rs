//! The gateway's services and MTUs in rootless mode: the user's commands
//! run in a network namespace of their own routed to a "remote" one
//! (`RootlessUser::in_netns`, `remote::Remote`), so the switch's host
//! sockets never touch the machine's real network; a rootless network with
//! an MTU gives it to created and attached containers.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tapswitch_tests::gateway_kit::{ask_published_tcp_in, tcp_echo_at, tcp_who_am_i_at};
use tapswitch_tests::remote::{REMOTE_IP, TCP_ECHO_PORT};
use tapswitch_tests::require_root;
use tapswitch_tests::rootless_user::{RootlessUser, pings, wait_for_new_netns};

#[test]
fn gateway_services_work_rootless_from_the_users_own_network_namespace() {
    use std::net::TcpStream;
    use tapswitch_tests::remote::{DNS_ANSWER, DNS_PORT, Remote, UDP_ECHO_PORT};

    require_root();
    // The user's "host" network: a namespace routed to a remote one, so
    // the switch's host sockets never touch the machine's real network.
    let user_ns = tapswitch_tests::Netns::new("trl");
    let remote = Remote::new(&user_ns);
    let mut user = RootlessUser::new(6).in_netns(&user_ns.name);
    let serve = user.serve(&[]);
    // A new namespace's ping_group_range is "1 0": ping sockets are closed
    // there, and serve says so in one line with the fix.
    let log = user.serve_log(serve);
    assert!(
        log.lines().any(
            |l| l.contains("rootless: ping sockets are closed to your group")
                && l.contains("sudo sysctl -w net.ipv4.ping_group_range='0 2147483647'")
        ),
        "{log}"
    );

    user.ok(&["container", "create", "c1"]);
    let ping = user.tapswitch(&[
        "container",
        "exec",
        "c1",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        &REMOTE_IP.to_string(),
    ]);
    let said = String::from_utf8_lossy(&ping.stdout);
    assert!(
        !ping.status.success() && said.contains("From 172.17.0.1"),
        "the gateway refuses ping out without ping sockets: {said}"
    );
    // The fix the line gives, in the namespace serve runs in, opens them
    // for a switch started after it (serve looks once, at its start).
    user_ns.sysctl("net.ipv4.ping_group_range", "0 2147483647");
    user.stop(serve);
    let upstream = format!("{REMOTE_IP}:{DNS_PORT}");
    let serve = user.serve(&["--dns-upstream", &upstream]);
    assert!(
        !user
            .serve_log(serve)
            .contains("rootless: ping sockets are closed"),
        "{}",
        user.serve_log(serve)
    );
    assert!(
        pings(&user, "c1", &REMOTE_IP.to_string()),
        "ping out once ping_group_range lets the user's group in\n{}",
        user.serve_log(serve)
    );

    // Outbound TCP from a rootless container (bash's /dev/tcp), through the switch's socket
    // in the user's namespace, to the remote's echo server.
    let out = bash_echo(&user, "c1", "tcp", TCP_ECHO_PORT, "rootless");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "rootless",
        "the echo through the gateway: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        user.serve_log(serve)
    );

    // And UDP: the remote's echo answers through the same namespace.
    let out = bash_echo(&user, "c1", "udp", UDP_ECHO_PORT, "datagram");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "datagram",
        "the UDP echo through the gateway: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // DNS: exec shows the container its own resolv.conf (the gateway), in
    // a mount namespace of its own; the gateway answers the network's
    // names and forwards the rest to the remote's server.
    let resolv = user.ok(&["container", "exec", "c1", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 172.17.0.1"), "{resolv}");
    let outside = user
        .command("cat")
        .arg("/etc/resolv.conf")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&outside.stdout).contains("172.17.0.1"),
        "the bind mount stays inside exec"
    );
    let lookup = |name: &str| {
        let out = user.tapswitch(&["container", "exec", "c1", "--", "getent", "ahostsv4", name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let answer = lookup("www.example.test");
    assert!(
        answer.contains(&DNS_ANSWER.to_string()),
        "a name forwarded to the remote's DNS server: {answer:?}\n{}",
        user.serve_log(serve)
    );
    let answer = lookup("c1");
    assert!(
        answer.contains("172.17.0.2"),
        "the container's own name: {answer:?}"
    );

    // A published port of an attached namespace, reached from the remote
    // namespace: the container sees the client's own address.
    let pid = user.spawn(
        "unshare",
        &["--user", "--map-root-user", "--net", "sleep", "300"],
    );
    wait_for_new_netns(pid, &std::path::Path::new("/run/netns").join(&user_ns.name));
    let pid = pid.to_string();
    // Ports below 1024 need a sysctl: one clear line, and nothing recorded.
    let err = user.fails(&["container", "attach", "web", "--pid", &pid, "-p", "80:80"]);
    assert!(
        err.contains("host port 0.0.0.0:80/tcp needs privileges")
            && err.contains("net.ipv4.ip_unprivileged_port_start"),
        "{err}"
    );
    assert!(!user.ok(&["container", "ls"]).contains("web"));
    user.ok(&["container", "attach", "web", "--pid", &pid, "-p", "8082:80"]);
    assert!(
        user.ok(&["container", "ls"])
            .lines()
            .any(|l| l.contains("web") && l.contains("0.0.0.0:8082->80/tcp"))
    );
    // And a container `create -p` made.
    user.ok(&["container", "create", "pub", "-p", "8084:80"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&user.ok(&["container", "inspect", "pub"])).unwrap();
    let pub_ns = inspect[0]["NetworkSettings"]["SandboxKey"]
        .as_str()
        .expect("the container's namespace")
        .to_string();
    // Root may enter the user's namespaces to listen in there for the
    // test: each server answers `clients` clients with their address.
    let attached_ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let server = tcp_who_am_i_at(&attached_ns, 80, 2);
    let created_server = tcp_who_am_i_at(Path::new(&pub_ns), 80, 1);
    let ask = |client: &tapswitch_tests::Netns, port: u16| {
        let to = SocketAddrV4::new(Ipv4Addr::new(10, 201, 0, 1), port);
        let (seen, local) = ask_published_tcp_in(client, to)
            .unwrap_or_else(|e| panic!("the published port {port}: {e}"));
        assert_eq!(seen, local.to_string(), "{}", user.serve_log(serve));
    };
    ask(&remote.ns, 8082);
    // And from the user's own namespace, the host side, to its address.
    ask(&user_ns, 8082);
    server.join().expect("the attached namespace's server");
    ask(&remote.ns, 8084);
    created_server
        .join()
        .expect("the created container's server");

    // Detach closes the host port.
    assert_eq!(user.ok(&["container", "detach", "web"]).trim(), "web");
    let refused = remote.ns.run(|| {
        TcpStream::connect_timeout(&"10.201.0.1:8082".parse().unwrap(), Duration::from_secs(5))
    });
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused),
        "{}",
        user.serve_log(serve)
    );
    drop(user);
}

/// `(interface, mtu)` for every link but `lo` of the network namespace at
/// `netns` (root reads any namespace).
fn link_mtus(netns: &str) -> Vec<(String, String)> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["--", "ip", "-o", "link", "show"])
        .output()
        .expect("ip link show in the namespace");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.nth(1)?.trim_end_matches(':');
            let name = name.split('@').next()?.to_string();
            let mtu = words.skip_while(|w| *w != "mtu").nth(1)?.to_string();
            (name != "lo").then_some((name, mtu))
        })
        .collect()
}

/// Sends `bytes` from the network namespace at `netns` to the remote's TCP
/// echo server and reads the echo back: (sent, received).
fn echo_from(netns: &str, bytes: usize) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let to = SocketAddrV4::new(REMOTE_IP, TCP_ECHO_PORT);
    tcp_echo_at(Path::new(netns), to, bytes)
}

/// What container `name`'s bash reads back from the remote's echo server
/// on `port` after writing `word` to it over `protocol` (`tcp` or `udp`:
/// bash's `/dev/tcp`, `/dev/udp`).
fn bash_echo(
    user: &RootlessUser,
    name: &str,
    protocol: &str,
    port: u16,
    word: &str,
) -> std::process::Output {
    let script = format!(
        "exec 3<>/dev/{protocol}/{REMOTE_IP}/{port} && printf {word} >&3 && head -c {} <&3",
        word.len()
    );
    user.tapswitch(&[
        "container",
        "exec",
        name,
        "--",
        "timeout",
        "10",
        "bash",
        "-c",
        &script,
    ])
}

#[test]
fn a_rootless_network_with_an_mtu_gives_it_to_created_and_attached_containers() {
    const MTU: &str = "65520";
    require_root();
    // The user's "host" network, routed to a remote namespace (as in the
    // gateway-services test).
    let user_ns = tapswitch_tests::Netns::new("trj");
    let remote = tapswitch_tests::remote::Remote::new(&user_ns);
    let mut user = RootlessUser::new(9).in_netns(&user_ns.name);
    user.ok(&[
        "network",
        "create",
        "jumbo",
        "--subnet",
        "10.80.0.0/24",
        "--mtu",
        MTU,
    ]);
    let serve = user.serve(&["--network", "jumbo"]);
    user.ok(&["container", "create", "j1", "--network", "jumbo"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&user.ok(&["container", "inspect", "j1"])).unwrap();
    let j1_ns = inspect[0]["NetworkSettings"]["SandboxKey"]
        .as_str()
        .expect("the container's namespace")
        .to_string();
    // Both ends of the veth live in the container's namespace: eth0 and
    // the switch's end, each with the network's MTU.
    let links = link_mtus(&j1_ns);
    assert_eq!(links.len(), 2, "eth0 and the switch's end: {links:?}");
    assert!(links.iter().any(|(name, _)| name == "eth0"), "{links:?}");
    assert!(links.iter().all(|(_, mtu)| mtu == MTU), "{links:?}");

    // A namespace the user made by hand, attached: its eth0 too.
    let pid = user.spawn(
        "unshare",
        &["--user", "--map-root-user", "--net", "sleep", "300"],
    );
    wait_for_new_netns(pid, &std::path::Path::new("/run/netns").join(&user_ns.name));
    user.ok(&[
        "container",
        "attach",
        "ja",
        "--pid",
        &pid.to_string(),
        "--network",
        "jumbo",
    ]);
    let ja_ns = format!("/proc/{pid}/ns/net");
    let links = link_mtus(&ja_ns);
    assert_eq!(links.len(), 2, "eth0 and the switch's end: {links:?}");
    assert!(links.iter().all(|(_, mtu)| mtu == MTU), "{links:?}");

    // Every port of the switch, the gateway's included, carries it.
    let ports: serde_json::Value =
        serde_json::from_str(&user.ok(&["ports", "--json", "--network", "jumbo"])).unwrap();
    let ports = ports.as_array().expect("a list of ports");
    assert_eq!(ports.len(), 3, "the gateway, j1 and ja: {ports:?}");
    for port in ports {
        assert_eq!(port["mtu"], 65520, "{port}");
    }

    // A 60,000-byte ping that may not be fragmented crosses the switch
    // whole, from one container to the other.
    let ping = user.tapswitch(&[
        "container",
        "exec",
        "j1",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        "-M",
        "do",
        "-s",
        "60000",
        "10.80.0.3",
    ]);
    assert!(
        ping.status.success(),
        "j1 -> ja in one 60 kB frame: {}{}\n{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr),
        user.serve_log(serve)
    );

    // 1 MB from the container through the gateway to the remote and back.
    let (sent, back) = echo_from(&j1_ns, 1 << 20)
        .unwrap_or_else(|e| panic!("1 MB through the gateway: {e}\n{}", user.serve_log(serve)));
    assert_eq!(back.len(), sent.len(), "{}", user.serve_log(serve));
    assert!(back == sent, "the echo comes back intact");

    assert_eq!(user.ok(&["container", "detach", "ja"]).trim(), "ja");
    drop(user);
    drop(remote);
}

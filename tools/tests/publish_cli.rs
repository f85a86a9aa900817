//! `container create -p` and `network create --internal --mtu` as a user
//! meets them: every mistake refused in one line before anything is built,
//! and what was recorded shown by `ls` and `inspect`. No root and no switch
//! needed: every refusal comes before the switch is looked for, and the
//! records the views show are written through the library.

mod support;

use std::net::TcpListener;
use std::path::Path;

use ipam::{Container, Store};
use support::{error_line, ok};

/// Records a container with published ports, as `container create` would
/// after building it (no namespace: the views only read the record).
fn record(state: &Path, name: &str, network: &str, ports: &[&str]) {
    let store = Store::open(state).unwrap();
    store
        .update(|s| {
            let container = Container {
                name: name.into(),
                id: format!("{name:0>64}"),
                network: network.into(),
                created: "2026-01-01T00:00:00Z".into(),
                boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
                ..Default::default()
            };
            s.add_container(container, None).map(|_| ())
        })
        .unwrap();
}

#[test]
fn bad_publish_values_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (given, says) in [
        ("80", "a container port alone"),
        ("8080:80/sctp", "SCTP is not supported"),
        ("[::1]:8080:80", "IPv6 host addresses are not supported"),
        ("0:80", "is not a port"),
    ] {
        let line = error_line(dir.path(), &["container", "create", "web", "-p", given]);
        assert!(
            line.starts_with(&format!("tapswitch: -p {given}: ")),
            "{line}"
        );
        assert!(line.contains(says), "{line}");
    }
    // Nothing was recorded.
    assert!(!ok(dir.path(), &["container", "ls"]).contains("web"));
}

#[test]
fn ports_need_a_bridge_network_that_is_not_internal() {
    let dir = tempfile::tempdir().unwrap();
    let line = error_line(
        dir.path(),
        &[
            "container",
            "create",
            "x",
            "--network",
            "none",
            "-p",
            "8080:80",
        ],
    );
    assert_eq!(
        line,
        "tapswitch: network none has driver null, which cannot publish ports: leave -p out, or use a bridge network"
    );
    ok(
        dir.path(),
        &[
            "network",
            "create",
            "sealed",
            "--subnet",
            "10.61.0.0/24",
            "--internal",
        ],
    );
    let line = error_line(
        dir.path(),
        &[
            "container",
            "create",
            "x",
            "--network",
            "sealed",
            "--publish",
            "8080:80",
        ],
    );
    assert!(line.contains("network sealed is internal"), "{line}");
}

#[test]
fn a_host_port_published_or_in_use_is_refused_at_create_time() {
    let dir = tempfile::tempdir().unwrap();
    record(dir.path(), "web", "bridge", &["127.0.0.1:18080:80"]);
    // Every address includes loopback.
    let line = error_line(
        dir.path(),
        &["container", "create", "api", "-p", "18080:9000"],
    );
    assert_eq!(
        line,
        "tapswitch: host port 0.0.0.0:18080/tcp is already published by container web (-p 127.0.0.1:18080:80/tcp): pick another host port, or remove web first"
    );
    let line = error_line(
        dir.path(),
        &[
            "container",
            "create",
            "api",
            "-p",
            "9001:80",
            "-p",
            "9001:81",
        ],
    );
    assert!(line.contains("is published twice"), "{line}");

    // A port another program holds.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let line = error_line(
        dir.path(),
        &[
            "container",
            "create",
            "api",
            "-p",
            &format!("127.0.0.1:{port}:80"),
        ],
    );
    assert_eq!(
        line,
        format!(
            "tapswitch: host port 127.0.0.1:{port}/tcp is in use on this host (another program has it): pick another host port, or stop that program"
        )
    );
    // An address the host does not have.
    let line = error_line(
        dir.path(),
        &["container", "create", "api", "-p", "192.0.2.123:18081:80"],
    );
    assert!(line.contains("not an address of this host"), "{line}");
}

#[test]
fn ls_and_inspect_show_published_ports_like_docker() {
    let dir = tempfile::tempdir().unwrap();
    let before = ok(dir.path(), &["container", "ls"]);
    assert!(!before.contains("PORTS"), "{before}");
    record(
        dir.path(),
        "web",
        "bridge",
        &["18090:80", "127.0.0.1:15353:53/udp"],
    );
    record(dir.path(), "plain", "bridge", &[]);
    let ls = ok(dir.path(), &["container", "ls"]);
    let header = ls.lines().next().unwrap();
    assert!(header.ends_with("PORTS"), "{ls}");
    let web = ls.lines().find(|l| l.contains(" web ")).unwrap();
    // Recorded, and no switch runs for them: said so after the ports.
    assert!(
        web.ends_with("0.0.0.0:18090->80/tcp, 127.0.0.1:15353->53/udp (switch not running)"),
        "{ls}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["container", "inspect", "web", "plain"])).unwrap();
    assert_eq!(
        inspect[0]["NetworkSettings"]["Ports"],
        serde_json::json!({
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "15353"}],
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18090"}],
        })
    );
    assert!(inspect[1]["NetworkSettings"].get("Ports").is_none());
    let network: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["network", "inspect", "bridge"])).unwrap();
    let listed = network[0]["Containers"].to_string();
    assert!(listed.contains("0.0.0.0:18090->80/tcp"), "{listed}");
}

#[test]
fn network_create_takes_internal_and_a_bounded_mtu() {
    let dir = tempfile::tempdir().unwrap();
    ok(
        dir.path(),
        &[
            "network",
            "create",
            "jumbo",
            "--subnet",
            "10.62.0.0/24",
            "--mtu",
            "65520",
            "--internal",
        ],
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["network", "inspect", "jumbo"])).unwrap();
    assert_eq!(inspect[0]["Internal"], true);
    assert_eq!(
        inspect[0]["Options"]["com.docker.network.driver.mtu"],
        "65520"
    );
    let line = error_line(
        dir.path(),
        &[
            "network",
            "create",
            "tiny",
            "--subnet",
            "10.63.0.0/24",
            "--mtu",
            "40",
        ],
    );
    assert!(
        line.starts_with("tapswitch: --mtu 40 is out of range: give 68"),
        "{line}"
    );
    assert!(!ok(dir.path(), &["network", "ls"]).contains("tiny"));
}

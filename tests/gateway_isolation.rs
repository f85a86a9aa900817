//! What `tapswitch stats` says about the gateway's outbound access (issue
//! 14): a bridge network made `--internal` refuses every outbound flow,
//! and the sockets that carry pings (unprivileged datagram ones where
//! `net.ipv4.ping_group_range` allows, else raw) are named. As root, in
//! namespaces this test makes.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::time::Duration;

use tapswitch_tests::gateway_kit::{Container, tapswitch_ok};
use tapswitch_tests::lab::TempDir;
use tapswitch_tests::remote::{REMOTE_IP, Remote, UDP_ECHO_PORT};
use tapswitch_tests::traffic::ping;
use tapswitch_tests::{Netns, SwitchProcess, Topology, require_root, unique_name};

/// One datagram from `ns` to `to`; the error a connected socket reports.
fn udp_error(ns: &str, to: SocketAddrV4) -> io::Error {
    tapswitch_tests::in_netns(ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.connect(to).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..6 {
            socket.send(b"out?").unwrap();
            match socket.recv(&mut buf) {
                Ok(_) => panic!("an answer from {to}"),
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(err) => return err,
            }
        }
        io::Error::from(io::ErrorKind::TimedOut)
    })
}

#[test]
fn an_internal_bridge_network_refuses_outbound_and_stats_says_so() {
    require_root();
    let ns = Netns::new("tsi");
    let remote = Remote::new(&ns);
    let state = TempDir::new("gwint");
    let state_arg = state.path().display().to_string();
    let network = unique_name("in");
    tapswitch_ok(
        &ns,
        &[
            "network",
            "create",
            &network,
            "--subnet",
            "10.218.0.0/24",
            "--internal",
            "--state-dir",
            &state_arg,
        ],
    );
    let switch = SwitchProcess::start(
        &ns.name,
        &["--network", &network, "--state-dir", &state_arg].map(String::from),
    );
    let control = switch.control.display().to_string();
    let name = unique_name("ic");
    let _guard = Container {
        name: name.clone(),
        switch_ns: &ns,
        state: &state,
    };
    tapswitch_ok(
        &ns,
        &[
            "container",
            "create",
            &name,
            "--network",
            &network,
            "--control",
            &control,
            "--state-dir",
            &state_arg,
        ],
    );
    // Linux reports ICMP "communication administratively prohibited" on a
    // connected UDP socket as EHOSTUNREACH.
    let err = udp_error(
        &format!("tapswitch-{name}"),
        SocketAddrV4::new(REMOTE_IP, UDP_ECHO_PORT),
    );
    assert_eq!(
        err.kind(),
        io::ErrorKind::HostUnreachable,
        "{err}\n{}",
        switch.log()
    );
    let stats = tapswitch_ok(&ns, &["stats", "--control", &control]);
    assert!(
        stats.contains("outbound     off (--no-outbound or --internal)"),
        "{stats}"
    );
    assert!(stats.contains("refused outbound "), "{stats}");
    drop(remote);
}

#[test]
fn stats_names_the_sockets_that_carry_pings() {
    require_root();
    let topo = Topology::veth_star(1);
    let remote = Remote::new(&topo.switch_ns);
    // No group may open unprivileged ICMP sockets (the kernel's default):
    // root's raw sockets carry the pings.
    topo.switch_ns.sysctl("net.ipv4.ping_group_range", "1\t0");
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    let container = &topo.hosts[0].ns;
    assert_eq!(
        ping(container, REMOTE_IP, 2, Duration::from_secs(3)),
        2,
        "{}",
        switch.log()
    );
    let stats = tapswitch_ok(
        &topo.switch_ns,
        &["stats", "--control", &switch.control.display().to_string()],
    );
    assert!(stats.contains("ping through raw sockets"), "{stats}");
    drop(switch);

    // Every group may: unprivileged datagram sockets, tried first.
    topo.switch_ns
        .sysctl("net.ipv4.ping_group_range", "0\t2147483647");
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    assert_eq!(
        ping(container, REMOTE_IP, 2, Duration::from_secs(3)),
        2,
        "{}",
        switch.log()
    );
    let stats = tapswitch_ok(
        &topo.switch_ns,
        &["stats", "--control", &switch.control.display().to_string()],
    );
    assert!(stats.contains("ping through datagram sockets"), "{stats}");
    drop(remote);
}

//! The gateway's outbound services in a running switch (issue 14), as root in
//! namespaces this test makes: a container on the switch, a "remote"
//! namespace reached from the switch's namespace by a route. UDP out and
//! back, ping out, TCP out, refused and unreachable destinations, host
//! loopback, `--no-outbound`, and the monitor's flow events.

use std::io::{self};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::time::Duration;

use tapswitch_tests::gateway_kit::{
    GATEWAY, loopback_echo, resolve, setup, tcp_echo, udp_exchange,
};
use tapswitch_tests::remote::{CLOSED_PORT, DNS_ANSWER, REMOTE_IP, TCP_ECHO_PORT, UDP_ECHO_PORT};
use tapswitch_tests::require_root;
use tapswitch_tests::traffic::ping;

#[test]
fn udp_ping_and_dns_reach_the_remote_namespace() {
    require_root();
    let (topo, remote, _state, switch) = setup(&["--trace"]);
    let container = &topo.hosts[0].ns;

    let echo = SocketAddrV4::new(REMOTE_IP, UDP_ECHO_PORT);
    let big: Vec<u8> = (0..1400u32).map(|i| (i % 251) as u8).collect();
    for payload in [&b"hello remote"[..], &big] {
        let answer = udp_exchange(container, echo, payload)
            .unwrap_or_else(|e| panic!("UDP echo: {e}\n{}", switch.log()));
        assert_eq!(answer, payload, "the echo comes back intact");
    }

    assert_eq!(
        ping(container, REMOTE_IP, 3, Duration::from_secs(3)),
        3,
        "pings to the remote are answered\n{}",
        switch.log()
    );

    assert_eq!(resolve(container, "www.example.test"), vec![DNS_ANSWER]);
    assert_eq!(resolve(container, "host.tapswitch.internal"), vec![GATEWAY]);

    let services = switch.call(r#"{"cmd":"services"}"#).expect("services");
    let services = &services;
    assert!(
        services["flows"]["opened"].as_u64().unwrap() >= 2,
        "{services}"
    );
    assert_eq!(services["outbound"], true);

    // `tapswitch flows`: the UDP flow is still open (2 min idle timeout).
    let flows = switch.call(r#"{"cmd":"flows"}"#).expect("flows");
    let udp = flows
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["protocol"] == "udp" && f["remote"] == format!("{echo}"))
        .unwrap_or_else(|| panic!("no UDP flow to {echo} in {flows}"));
    assert!(udp["line"].as_str().unwrap().contains(&echo.to_string()));
    // Each exchange used its own socket: one datagram each way per flow.
    assert_eq!(udp["packets_from_container"], 1, "{udp}");
    assert_eq!(udp["packets_to_container"], 1, "{udp}");
    assert_eq!(udp["state"], "REPLIED", "{udp}");
    // `--trace`: one line per new flow.
    let log = switch.log();
    assert!(
        log.lines()
            .any(|l| l.contains("flow") && l.contains("opened by the container")),
        "no flow line in the trace:\n{log}"
    );
    drop(remote);
}

/// An answer larger than the container's MTU (4,000 bytes at 1,500)
/// reaches the host socket whole and the container as IPv4 fragments,
/// which its kernel puts together: the datagram arrives intact.
#[test]
fn a_udp_answer_larger_than_the_mtu_reaches_the_container_in_fragments() {
    require_root();
    let (topo, remote, _state, switch) = setup(&[]);
    let big: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let answer = big.clone();
    let server = remote
        .ns
        .run(|| UdpSocket::bind((REMOTE_IP, 7400)).expect("binding in the remote"));
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        // Answer every question (the first may wait for ARP) until idle.
        while let Ok((_, from)) = server.recv_from(&mut buf) {
            server.send_to(&answer, from).unwrap();
            server
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
        }
    });
    let got = udp_exchange(
        &topo.hosts[0].ns,
        SocketAddrV4::new(REMOTE_IP, 7400),
        b"big?",
    )
    .unwrap_or_else(|e| panic!("the big answer: {e}\n{}", switch.log()));
    assert_eq!(got.len(), big.len(), "{}", switch.log());
    assert!(got == big, "the datagram arrives intact");
    server.join().expect("the remote's server");
    let services = switch
        .call(r#"{"cmd":"services"}"#)
        .expect("services")
        .to_string();
    assert!(
        services.contains(r#""fragmented":"#) && !services.contains(r#""fragmented":0"#),
        "counted: {services}"
    );
}

#[test]
fn no_outbound_refuses_flows_with_prohibited() {
    require_root();
    let (topo, _remote, _state, switch) = setup(&["--no-outbound"]);
    let container = &topo.hosts[0].ns;
    let echo = SocketAddrV4::new(REMOTE_IP, UDP_ECHO_PORT);
    // Linux reports ICMP "communication administratively prohibited" on a
    // connected UDP socket as EHOSTUNREACH.
    let err = udp_exchange(container, echo, b"out?").expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::HostUnreachable, "{err}");
    assert_eq!(ping(container, REMOTE_IP, 2, Duration::from_secs(2)), 0);
    // The gateway's own DNS still answers.
    assert_eq!(resolve(container, "host.tapswitch.internal"), vec![GATEWAY]);
    let services = switch.call(r#"{"cmd":"services"}"#).expect("services");
    assert_eq!(services["outbound"], false, "{services}");
    assert!(services["frames"]["outbound_denied"].as_u64().unwrap() >= 1);
}

#[test]
fn tcp_out_relays_both_ways_and_refused_gets_a_reset() {
    require_root();
    let (topo, _remote, _state, switch) = setup(&[]);
    let container = &topo.hosts[0].ns;
    let echo = SocketAddrV4::new(REMOTE_IP, TCP_ECHO_PORT);
    let (sent, back) = tcp_echo(container, echo, 4 << 20)
        .unwrap_or_else(|e| panic!("TCP echo: {e}\n{}", switch.log()));
    assert_eq!(back.len(), sent.len(), "every byte came back");
    assert!(back == sent, "the bytes came back intact and in order");

    let closed = SocketAddrV4::new(REMOTE_IP, CLOSED_PORT);
    let err = container
        .run(move || TcpStream::connect_timeout(&closed.into(), Duration::from_secs(5)))
        .expect_err("nobody listens there");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");

    let services = switch.call(r#"{"cmd":"services"}"#).expect("services");
    assert!(
        services["flows"]["refused"].as_u64().unwrap() >= 1,
        "{services}"
    );
}

#[test]
fn host_loopback_is_reached_only_when_allowed() {
    require_root();
    let (topo, _remote, _state, switch) = setup(&[]);
    let (port, server) = loopback_echo(&topo.switch_ns, 1);
    let to = SocketAddrV4::new(GATEWAY, port);
    let err = udp_exchange(&topo.hosts[0].ns, to, b"loopback?").expect_err("not allowed");
    // The gateway's own stack answers with an ICMP unreachable (protocol
    // unreachable, as before: it has no UDP sockets), which Linux reports
    // as ENOPROTOOPT; nothing reaches the host's loopback.
    assert!(
        matches!(err.raw_os_error(), Some(92 | 111)),
        "an unreachable, not silence: {err}"
    );
    drop(switch);
    drop(server);

    let (topo, _remote, _state, switch) = setup(&["--allow-host-loopback"]);
    let (port, server) = loopback_echo(&topo.switch_ns, 1);
    let to = SocketAddrV4::new(GATEWAY, port);
    let answer = udp_exchange(&topo.hosts[0].ns, to, b"loopback!")
        .unwrap_or_else(|e| panic!("host loopback: {e}\n{}", switch.log()));
    assert_eq!(answer, b"loopback!");
    server.join().unwrap();
}

#[test]
fn unreachable_destination_fails_at_once_and_descriptors_come_back() {
    require_root();
    let (topo, _remote, _state, switch) = setup(&[]);
    let container = &topo.hosts[0].ns;

    // The switch's namespace has no route to 192.0.2.0/24: its connect
    // fails at once, and the container gets an ICMP unreachable.
    let nowhere = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 80);
    let err = container
        .run(move || TcpStream::connect_timeout(&nowhere.into(), Duration::from_secs(5)))
        .expect_err("no route");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable
        ),
        "{err}"
    );

    // Short connections give their descriptors back.
    let echo = SocketAddrV4::new(REMOTE_IP, TCP_ECHO_PORT);
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", switch.pid()))
            .unwrap()
            .count()
    };
    tcp_echo(container, echo, 100).expect("a first connection");
    let baseline = fds();
    for _ in 0..200 {
        let (sent, back) = tcp_echo(container, echo, 100).expect("a short connection");
        assert_eq!(back, sent);
    }
    let services = switch.call(r#"{"cmd":"services"}"#).expect("services");
    assert!(
        services["flows"]["closed"].as_u64().unwrap() >= 200,
        "{services}"
    );
    assert!(
        fds() <= baseline + 1,
        "descriptors grew from {baseline} to {} after 200 connections",
        fds()
    );
}

/// `tapswitch monitor` shows each translated flow as it opens and closes
/// (issue 16's classroom, fed by the gateway's flow table).
#[test]
fn monitor_shows_flows_open_and_close() {
    require_root();
    let (topo, _remote, _state, switch) = setup(&[]);
    let monitor = tapswitch_tests::monitor::Monitor::start(&switch, &["--json"]);
    let container = &topo.hosts[0].ns;
    let echo = SocketAddrV4::new(REMOTE_IP, TCP_ECHO_PORT);
    // The monitor subscribes in its own time: connect until it has seen a
    // flow open (each connection is a new flow).
    let deadline = std::time::Instant::now() + tapswitch_tests::monitor::PATIENCE;
    let opened = loop {
        let (sent, back) = tcp_echo(container, echo, 1000)
            .unwrap_or_else(|e| panic!("TCP echo: {e}\n{}", switch.log()));
        assert!(back == sent, "the bytes came back intact");
        if let Some(line) = monitor.next_line(Duration::from_millis(500))
            && line.contains(r#""event":"flow_opened""#)
        {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "monitor showed no flow opening"
        );
    };
    let record: serde_json::Value = serde_json::from_str(&opened).unwrap();
    let flow = record["flow"].as_str().unwrap().to_string();
    assert!(
        flow.starts_with("tcp 172.17.0.2:") && flow.ends_with(&format!(" -> {echo}")),
        "{record}"
    );
    // Closed by both sides: the flow ends and says so.
    let closed = monitor.expect("the flow closing", |l| {
        l.contains(r#""event":"flow_closed""#) && l.contains(&flow)
    });
    assert!(closed.contains(&flow), "{closed}");
}

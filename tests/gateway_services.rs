//! The gateway's services in a running switch (issue 14), as root in
//! namespaces this test makes: a container on the switch, a "remote"
//! namespace reached from the switch's namespace by a route. UDP out and
//! back, ping out, DNS (the gateway's own names and forwarded ones), and
//! `--no-outbound`.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream, UdpSocket};
use std::time::Duration;

use tapswitch_tests::remote::{
    CLOSED_PORT, DNS_ANSWER, DNS_PORT, REMOTE_IP, Remote, TCP_ECHO_PORT, UDP_ECHO_PORT,
    dns_addresses, dns_query,
};
use tapswitch_tests::traffic::ping;
use tapswitch_tests::{Netns, SwitchProcess, Topology, lab::TempDir, require_root};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

/// A switch serving one container (172.17.0.2) with `extra` options, its
/// DNS forwarded to the remote's server, and the remote namespace.
fn setup(extra: &[&str]) -> (Topology, Remote, TempDir, SwitchProcess) {
    let topo = Topology::veth_star(1);
    let remote = Remote::new(&topo.switch_ns);
    let state = TempDir::new("gwsvc");
    let mut args = topo.iface_args();
    args.extend(
        [
            "--dns-upstream",
            &format!("{REMOTE_IP}:{DNS_PORT}"),
            "--state-dir",
            &state.path().display().to_string(),
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|a| a.to_string()));
    let switch = SwitchProcess::start(&topo.switch_ns.name, &args);
    (topo, remote, state, switch)
}

/// Sends `payload` from a UDP socket in `ns` to `to` and returns the answer.
fn udp_exchange(ns: &Netns, to: SocketAddrV4, payload: &[u8]) -> io::Result<Vec<u8>> {
    udp_exchange_in(&ns.name, to, payload)
}

fn udp_exchange_in(ns: &str, to: SocketAddrV4, payload: &[u8]) -> io::Result<Vec<u8>> {
    let payload = payload.to_vec();
    tapswitch_tests::in_netns(ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.connect(to)?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = vec![0u8; 65_535];
        // The first datagram may wait for ARP: try a few times.
        let mut last = io::Error::from(io::ErrorKind::TimedOut);
        for _ in 0..6 {
            socket.send(&payload)?;
            match socket.recv(&mut buf) {
                Ok(n) => return Ok(buf[..n].to_vec()),
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    last = err
                }
                Err(err) => return Err(err),
            }
        }
        Err(last)
    })
}

fn resolve(ns: &Netns, name: &str) -> Vec<Ipv4Addr> {
    resolve_in(&ns.name, name)
}

fn resolve_in(ns: &str, name: &str) -> Vec<Ipv4Addr> {
    let reply = udp_exchange_in(ns, SocketAddrV4::new(GATEWAY, 53), &dns_query(0x1234, name))
        .unwrap_or_else(|e| panic!("no DNS answer for {name}: {e}"));
    assert_eq!(
        &reply[..2],
        &[0x12, 0x34],
        "the answer carries the query's id"
    );
    dns_addresses(&reply)
}

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

/// Connects from `ns` to `to`, sends `bytes` bytes (then closes its
/// sending half) while reading the echo until the remote closes; returns
/// what came back.
fn tcp_echo(ns: &Netns, to: SocketAddrV4, bytes: usize) -> io::Result<(Vec<u8>, Vec<u8>)> {
    ns.run(move || {
        let stream = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let sent: Vec<u8> = (0..bytes).map(|i| (i * 7 % 253) as u8).collect();
        let mut writer = stream.try_clone()?;
        let data = sent.clone();
        let writing = std::thread::spawn(move || -> io::Result<()> {
            writer.write_all(&data)?;
            writer.shutdown(Shutdown::Write)
        });
        let mut back = Vec::new();
        (&stream).read_to_end(&mut back)?;
        writing.join().expect("writer thread")?;
        Ok((sent, back))
    })
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

/// A container made with `tapswitch container create` in a test's state
/// directory; removed (namespace, veth, record) when dropped.
struct Container<'a> {
    name: String,
    switch_ns: &'a Netns,
    state: &'a TempDir,
}

impl Container<'_> {
    /// Runs `tapswitch ARGS` in the switch's network namespace but this
    /// process's mount namespace (`ip netns exec` would make one of its
    /// own, and the container's namespace mount would stay in it).
    fn tapswitch(switch_ns: &Netns, args: &[&str]) -> std::process::Output {
        let binary = tapswitch_tests::switch_process::binary();
        switch_ns.run(|| {
            std::process::Command::new(&binary)
                .args(args)
                .output()
                .expect("running tapswitch")
        })
    }

    fn netns(&self) -> String {
        format!("tapswitch-{}", self.name)
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let state = self.state.path().display().to_string();
        let _ = Container::tapswitch(
            self.switch_ns,
            &["container", "rm", &self.name, "--state-dir", &state],
        );
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.netns()])
            .status();
    }
}

#[test]
fn published_tcp_port_shows_the_client_its_own_address() {
    require_root();
    let switch_ns = Netns::new("tsw");
    let remote = Remote::new(&switch_ns);
    let state = TempDir::new("gwpub");
    let state_arg = state.path().display().to_string();
    let base = [
        "--dns-upstream",
        &format!("{REMOTE_IP}:{DNS_PORT}"),
        "--state-dir",
        &state_arg,
    ]
    .map(String::from)
    .to_vec();
    let first = SwitchProcess::start(&switch_ns.name, &base);
    let control = first.control.display().to_string();
    let name = tapswitch_tests::unique_name("pw");
    let container = Container {
        name: name.clone(),
        switch_ns: &switch_ns,
        state: &state,
    };
    let created = Container::tapswitch(
        &switch_ns,
        &[
            "container",
            "create",
            &name,
            "--control",
            &control,
            "--state-dir",
            &state_arg,
            "-p",
            "10.201.0.1:8080:80",
        ],
    );
    assert!(
        created.status.success(),
        "container create: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    // The switch learned of the container when its port was attached, and
    // listens on the published port since.
    let switch = first;
    // The container's server tells each client the address it sees.
    let listener = tapswitch_tests::in_netns(&container.netns(), || {
        std::net::TcpListener::bind("0.0.0.0:80").expect("listening in the container")
    });
    let server = std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().expect("a client");
        stream.write_all(peer.to_string().as_bytes()).unwrap();
    });
    let (seen, local) = remote.ns.run(|| {
        let to: std::net::SocketAddr = "10.201.0.1:8080".parse().unwrap();
        // The switch opens the port once `container create` has recorded
        // the container: retry refusals for a while.
        let mut tries = 0;
        let mut stream = loop {
            match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                Ok(stream) => break stream,
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => panic!("connecting to the published port: {err}"),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut seen = String::new();
        stream
            .read_to_string(&mut seen)
            .expect("the container's answer");
        (seen, stream.local_addr().unwrap().to_string())
    });
    server.join().expect("the container's server");
    assert_eq!(
        seen,
        local,
        "the container sees the client's own address\n{}",
        switch.log()
    );
    // `network inspect` shows the port as recorded and as listened on by
    // the running switch.
    let inspect = Container::tapswitch(
        &switch_ns,
        &["network", "inspect", "bridge", "--state-dir", &state_arg],
    );
    let view: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("inspect's JSON");
    let endpoint = view[0]["Containers"]
        .as_object()
        .and_then(|all| all.values().find(|c| c["Name"] == name.as_str()))
        .unwrap_or_else(|| panic!("{name} in {view}"));
    assert_eq!(
        endpoint["Ports"],
        serde_json::json!(["10.201.0.1:8080->80/tcp"])
    );
    assert_eq!(
        endpoint["PortsListening"],
        serde_json::json!(["10.201.0.1:8080->80/tcp"]),
        "{endpoint}"
    );
    let inspect = Container::tapswitch(
        &switch_ns,
        &["container", "inspect", &name, "--state-dir", &state_arg],
    );
    let view: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("inspect's JSON");
    assert_eq!(
        view[0]["Tapswitch"]["PortsListening"],
        serde_json::json!(["10.201.0.1:8080->80/tcp"]),
        "{view}"
    );

    // DNS at the gateway knows the container by name, and forwards the rest.
    let address = record_address(&state, &name);
    assert_eq!(resolve_in(&container.netns(), &name), vec![address]);
    assert_eq!(
        resolve_in(&container.netns(), &format!("{name}.tapswitch.internal")),
        vec![address]
    );
    assert_eq!(
        resolve_in(&container.netns(), "www.example.test"),
        vec![DNS_ANSWER]
    );
    drop(container);
}

/// The address IPAM leased to container `name`.
fn record_address(state: &TempDir, name: &str) -> Ipv4Addr {
    let record = ipam::Store::open(state.path()).unwrap().load().unwrap();
    record
        .containers
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.ipv4)
        .expect("the container's address")
}

/// A UDP echo server on the switch namespace's loopback, for as long as
/// the returned socket's thread runs (it stops after `count` datagrams).
fn loopback_echo(switch_ns: &Netns, count: usize) -> (u16, std::thread::JoinHandle<()>) {
    let socket = switch_ns.run(|| UdpSocket::bind("127.0.0.1:0").unwrap());
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..count {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    (port, thread)
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

/// Creates container `name` on the switch at `control`, with `extra`
/// arguments (`-p ...`); panics with tapswitch's words if it fails.
fn create_container<'a>(
    switch_ns: &'a Netns,
    state: &'a TempDir,
    control: &str,
    name: &str,
    extra: &[&str],
) -> Container<'a> {
    let state_arg = state.path().display().to_string();
    let mut args = vec![
        "container",
        "create",
        name,
        "--control",
        control,
        "--state-dir",
        &state_arg,
    ];
    args.extend_from_slice(extra);
    let created = Container::tapswitch(switch_ns, &args);
    assert!(
        created.status.success(),
        "container create: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    Container {
        name: name.to_string(),
        switch_ns,
        state,
    }
}

/// A switch for `tapswitch container create` tests: its DNS forwarded to
/// the remote's server, IPAM in `state`.
fn start_switch(switch_ns: &Netns, state: &TempDir) -> SwitchProcess {
    let state_arg = state.path().display().to_string();
    let base = [
        "--dns-upstream",
        &format!("{REMOTE_IP}:{DNS_PORT}"),
        "--state-dir",
        &state_arg,
    ]
    .map(String::from)
    .to_vec();
    SwitchProcess::start(&switch_ns.name, &base)
}

/// A UDP server in `netns` on `port` answering each datagram with the
/// address it came from, until a datagram says "stop" (or 20 s pass).
fn udp_who_am_i(netns: &str, port: u16) -> std::thread::JoinHandle<()> {
    let socket = tapswitch_tests::in_netns(netns, || {
        UdpSocket::bind(("0.0.0.0", port)).expect("binding in the container")
    });
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if &buf[..n] == b"stop" {
                return;
            }
            let _ = socket.send_to(from.to_string().as_bytes(), from);
        }
    })
}

/// From the remote namespace, asks the published UDP port `to` until it
/// answers (the switch opens it once the container is recorded): the
/// answer, where it came from, and the client's own address.
fn ask_published_udp(
    remote: &Remote,
    to: SocketAddrV4,
) -> io::Result<(String, std::net::SocketAddr, std::net::SocketAddr)> {
    remote.ns.run(move || {
        let socket = UdpSocket::bind("10.201.0.2:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut buf = [0u8; 2048];
        let mut last = io::Error::from(io::ErrorKind::TimedOut);
        for _ in 0..100 {
            socket.send_to(b"who am i?", to)?;
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let _ = socket.send_to(b"stop", to);
                    let seen = String::from_utf8_lossy(&buf[..n]).into_owned();
                    return Ok((seen, from, socket.local_addr()?));
                }
                // Refused: nobody listens yet (an ICMP port unreachable).
                Err(err) => last = err,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(last)
    })
}

#[test]
fn published_udp_port_shows_the_client_its_own_address() {
    require_root();
    let switch_ns = Netns::new("tsw");
    let remote = Remote::new(&switch_ns);
    let state = TempDir::new("gwpu");
    let switch = start_switch(&switch_ns, &state);
    let control = switch.control.display().to_string();
    let name = tapswitch_tests::unique_name("pu");
    let container = create_container(
        &switch_ns,
        &state,
        &control,
        &name,
        &["-p", "10.201.0.1:5300:53/udp"],
    );
    let server = udp_who_am_i(&container.netns(), 53);
    let published = SocketAddrV4::new(Ipv4Addr::new(10, 201, 0, 1), 5300);
    let (seen, from, local) = ask_published_udp(&remote, published)
        .unwrap_or_else(|e| panic!("the published UDP port: {e}\n{}", switch.log()));
    server.join().expect("the container's server");
    assert_eq!(
        seen,
        local.to_string(),
        "the container sees the client's own address\n{}",
        switch.log()
    );
    assert_eq!(
        from,
        published.into(),
        "the answer comes from the published port"
    );
    let flows = switch.call(r#"{"cmd":"flows"}"#).expect("flows");
    assert!(
        flows
            .to_string()
            .contains(&format!("\"remote\":\"{local}\"")),
        "the client's flow is in the flow table: {flows}"
    );
    drop(container);
}

/// A client on the host's own loopback (the switch's namespace) reaches
/// published TCP and UDP ports; the container sees it from the gateway's
/// address with the client's own port (a `127.0.0.1` source is dropped
/// by the container's kernel on `eth0`), and the UDP answer comes back
/// from the published port.
#[test]
fn published_ports_answer_clients_on_the_hosts_loopback() {
    require_root();
    let switch_ns = Netns::new("tsw");
    let state = TempDir::new("gwlo");
    let switch = start_switch(&switch_ns, &state);
    let control = switch.control.display().to_string();
    let name = tapswitch_tests::unique_name("pl");
    let container = create_container(
        &switch_ns,
        &state,
        &control,
        &name,
        &["-p", "8090:80", "-p", "5390:53/udp"],
    );
    let listener = tapswitch_tests::in_netns(&container.netns(), || {
        std::net::TcpListener::bind("0.0.0.0:80").expect("listening in the container")
    });
    let tcp_server = std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().expect("a client");
        stream.write_all(peer.to_string().as_bytes()).unwrap();
    });
    let (seen, local) = switch_ns.run(|| {
        let to: std::net::SocketAddr = "127.0.0.1:8090".parse().unwrap();
        let mut tries = 0;
        let mut stream = loop {
            match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                Ok(stream) => break stream,
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => panic!("connecting to the published port on loopback: {err}"),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut seen = String::new();
        stream
            .read_to_string(&mut seen)
            .expect("the container's answer");
        (seen, stream.local_addr().unwrap())
    });
    tcp_server.join().expect("the container's TCP server");
    assert_eq!(
        seen,
        SocketAddrV4::new(GATEWAY, local.port()).to_string(),
        "a loopback client is seen from the gateway, with its own port\n{}",
        switch.log()
    );

    let udp_server = udp_who_am_i(&container.netns(), 53);
    let published = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5390);
    let (seen, from, local) = switch_ns
        .run(move || -> io::Result<_> {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.set_read_timeout(Some(Duration::from_millis(200)))?;
            let mut buf = [0u8; 2048];
            let mut last = io::Error::from(io::ErrorKind::TimedOut);
            for _ in 0..100 {
                socket.send_to(b"who am i?", published)?;
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let _ = socket.send_to(b"stop", published);
                        let seen = String::from_utf8_lossy(&buf[..n]).into_owned();
                        return Ok((seen, from, socket.local_addr()?));
                    }
                    Err(err) => last = err,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(last)
        })
        .unwrap_or_else(|e| panic!("the published UDP port on loopback: {e}\n{}", switch.log()));
    udp_server.join().expect("the container's UDP server");
    assert_eq!(
        seen,
        SocketAddrV4::new(GATEWAY, local.port()).to_string(),
        "a loopback client is seen from the gateway, with its own port\n{}",
        switch.log()
    );
    assert_eq!(
        from,
        published.into(),
        "the answer comes from the published port"
    );
    drop(container);
}

/// Asks the gateway's DNS over TCP, from namespace `ns`, for each of
/// `names` on one connection (two-byte lengths, RFC 7766); their
/// addresses, in order.
fn resolve_tcp_in(ns: &str, names: &[&str]) -> io::Result<Vec<Vec<Ipv4Addr>>> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    tapswitch_tests::in_netns(ns, move || {
        let to = std::net::SocketAddr::from(SocketAddrV4::new(GATEWAY, 53));
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut answers = Vec::new();
        for (n, name) in names.iter().enumerate() {
            let id = 0x4000 + n as u16;
            let query = dns_query(id, name);
            let mut framed = (query.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&query);
            stream.write_all(&framed)?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len)?;
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut reply)?;
            assert_eq!(reply[..2], id.to_be_bytes(), "the query's own id back");
            answers.push(dns_addresses(&reply));
        }
        Ok(answers)
    })
}

#[test]
fn dns_over_tcp_answers_container_names_and_forwards_the_rest() {
    require_root();
    let switch_ns = Netns::new("tsw");
    let _remote = Remote::new(&switch_ns);
    let state = TempDir::new("gwdt");
    let switch = start_switch(&switch_ns, &state);
    let control = switch.control.display().to_string();
    let name = tapswitch_tests::unique_name("dt");
    let container = create_container(&switch_ns, &state, &control, &name, &[]);
    let address = record_address(&state, &name);
    // The switch learns the container's name once create has recorded it.
    let mut answers = Vec::new();
    for _ in 0..100 {
        answers =
            resolve_tcp_in(&container.netns(), &[&name, "www.example.test"]).unwrap_or_else(|e| {
                panic!(
                    "DNS over TCP: {e}\n{}\n{:?}",
                    switch.log(),
                    switch.call(r#"{"cmd":"services"}"#)
                )
            });
        if answers[0] == vec![address] {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        answers,
        vec![vec![address], vec![DNS_ANSWER]],
        "the container's name locally, the rest from the upstream\n{}",
        switch.log()
    );
    drop(container);
}

#[test]
fn container_exec_sees_the_gateway_in_resolv_conf() {
    require_root();
    let switch_ns = Netns::new("tsw");
    let state = TempDir::new("gwrc");
    let switch = start_switch(&switch_ns, &state);
    let control = switch.control.display().to_string();
    let name = tapswitch_tests::unique_name("rc");
    let container = create_container(&switch_ns, &state, &control, &name, &[]);
    let etc = format!("/etc/netns/{}/resolv.conf", container.netns());
    let written = std::fs::read_to_string(&etc).expect("create writes the namespace's resolv.conf");
    assert!(
        written.contains(&format!("nameserver {GATEWAY}\n")),
        "{written}"
    );

    let state_arg = state.path().display().to_string();
    let shown = Container::tapswitch(
        &switch_ns,
        &[
            "container",
            "exec",
            &name,
            "--state-dir",
            &state_arg,
            "--",
            "cat",
            "/etc/resolv.conf",
        ],
    );
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "container exec: {}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(
        text.contains(&format!("nameserver {GATEWAY}\n"))
            && text.contains("search tapswitch.internal"),
        "the container's /etc/resolv.conf names its gateway: {text}"
    );
    // Only inside: this process's own /etc/resolv.conf is untouched.
    let own = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert!(!own.contains("Written by tapswitch"), "{own}");

    drop(container);
    assert!(
        !std::path::Path::new(&etc).exists(),
        "container rm removes {etc}"
    );
}

/// Asks the published TCP port `to` from the remote namespace, retrying
/// refusals for a while: what the container's server said.
fn ask_published_tcp(remote: &Remote, to: SocketAddrV4) -> io::Result<String> {
    remote.ns.run(move || {
        let mut tries = 0;
        let mut stream = loop {
            match TcpStream::connect_timeout(&to.into(), Duration::from_secs(5)) {
                Ok(stream) => break stream,
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => return Err(err),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut seen = String::new();
        stream.read_to_string(&mut seen)?;
        Ok(seen)
    })
}

/// A TCP server in `netns` on `port` telling each of `clients` clients
/// the address it sees.
fn tcp_who_am_i(netns: &str, port: u16, clients: usize) -> std::thread::JoinHandle<()> {
    let listener = tapswitch_tests::in_netns(netns, || {
        std::net::TcpListener::bind(("0.0.0.0", port)).expect("listening in the container")
    });
    std::thread::spawn(move || {
        for _ in 0..clients {
            let Ok((mut stream, peer)) = listener.accept() else {
                return;
            };
            let _ = stream.write_all(peer.to_string().as_bytes());
        }
    })
}

#[test]
fn published_ports_come_back_after_a_switch_restart() {
    require_root();
    let switch_ns = Netns::new("tsw");
    let remote = Remote::new(&switch_ns);
    let state = TempDir::new("gwrs");
    let mut switch = start_switch(&switch_ns, &state);
    let control = switch.control.display().to_string();
    let name = tapswitch_tests::unique_name("rs");
    let container = create_container(
        &switch_ns,
        &state,
        &control,
        &name,
        &["-p", "10.201.0.1:8081:80", "-p", "10.201.0.1:5301:53/udp"],
    );
    let tcp_port = SocketAddrV4::new(Ipv4Addr::new(10, 201, 0, 1), 8081);
    let udp_port = SocketAddrV4::new(Ipv4Addr::new(10, 201, 0, 1), 5301);
    let tcp_server = tcp_who_am_i(&container.netns(), 80, 2);
    let seen = ask_published_tcp(&remote, tcp_port)
        .unwrap_or_else(|e| panic!("published TCP port: {e}\n{}", switch.log()));
    assert!(seen.starts_with("10.201.0.2:"), "{seen}");

    // Stopped: the host ports are closed (a refusal, not a hang).
    switch.restart(|| {
        let refused = remote
            .ns
            .run(move || TcpStream::connect_timeout(&tcp_port.into(), Duration::from_secs(5)));
        assert_eq!(
            refused
                .expect_err("no listener while the switch is down")
                .kind(),
            io::ErrorKind::ConnectionRefused
        );
        // The container's veth end outlives the switch.
        let iface = ipam::Store::open(state.path())
            .unwrap()
            .load()
            .unwrap()
            .container(&name)
            .unwrap()
            .host_iface
            .clone()
            .unwrap();
        let shown = std::process::Command::new("ip")
            .args(["-n", &switch_ns.name, "link", "show", &iface])
            .output()
            .expect("running ip");
        assert!(shown.status.success(), "{iface} is still there");
    });
    assert!(
        switch
            .log()
            .contains(&format!("re-attached container {name}")),
        "{}",
        switch.log()
    );
    // Started again: both ports lead to the container again, with the
    // client's own address.
    let seen = ask_published_tcp(&remote, tcp_port).unwrap_or_else(|e| {
        panic!(
            "published TCP port after the restart: {e}\n{}",
            switch.log()
        )
    });
    assert!(seen.starts_with("10.201.0.2:"), "{seen}");
    tcp_server.join().expect("the container's TCP server");
    let udp_server = udp_who_am_i(&container.netns(), 53);
    let (seen, _, local) = ask_published_udp(&remote, udp_port).unwrap_or_else(|e| {
        panic!(
            "published UDP port after the restart: {e}\n{}",
            switch.log()
        )
    });
    udp_server.join().expect("the container's UDP server");
    assert_eq!(seen, local.to_string());
    drop(container);
}

#[test]
fn a_published_tcp_client_that_speaks_first_is_heard() {
    require_root();
    let switch_ns = Netns::new("tsw");
    let remote = Remote::new(&switch_ns);
    let state = TempDir::new("gwsf");
    let switch = start_switch(&switch_ns, &state);
    let control = switch.control.display().to_string();
    let name = tapswitch_tests::unique_name("sf");
    let container = create_container(
        &switch_ns,
        &state,
        &control,
        &name,
        &["-p", "10.201.0.1:8082:82"],
    );
    // The container's server waits for the client's words (as iperf3's
    // and SMTP clients' servers do) and answers them.
    let listener = tapswitch_tests::in_netns(&container.netns(), || {
        std::net::TcpListener::bind("0.0.0.0:82").expect("listening in the container")
    });
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("a client");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut words = [0u8; 5];
        stream.read_exact(&mut words).expect("the client's words");
        stream.write_all(b"heard ").unwrap();
        stream.write_all(&words).unwrap();
    });
    let to = SocketAddrV4::new(Ipv4Addr::new(10, 201, 0, 1), 8082);
    let answer = remote.ns.run(move || -> io::Result<String> {
        let mut tries = 0;
        let mut stream = loop {
            match TcpStream::connect_timeout(&to.into(), Duration::from_secs(5)) {
                Ok(stream) => break stream,
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => return Err(err),
            }
        };
        // At once: before the gateway's connection into the container is up.
        stream.write_all(b"hello")?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    });
    server.join().expect("the container's server");
    assert_eq!(
        answer.unwrap_or_else(|e| panic!("published TCP port: {e}\n{}", switch.log())),
        "heard hello"
    );
    drop(container);
}

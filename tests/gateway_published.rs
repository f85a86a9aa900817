//! Published ports (issue 14), as root in namespaces this test makes:
//! `tapswitch container create -p`, clients in the remote namespace and on
//! the host's loopback, the client's own address seen in the container, and
//! ports that come back after a switch restart.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

use tapswitch_tests::gateway_kit::{
    Container, GATEWAY, ask_published_tcp, ask_published_tcp_in, ask_published_udp,
    ask_published_udp_in, connect_when_listening, create_container, record_address, resolve_in,
    start_switch, tcp_who_am_i, udp_who_am_i,
};
use tapswitch_tests::remote::{DNS_ANSWER, Remote};
use tapswitch_tests::{Netns, lab::TempDir, require_root};

#[test]
fn published_tcp_port_shows_the_client_its_own_address() {
    require_root();
    let switch_ns = Netns::new("tsw");
    let remote = Remote::new(&switch_ns);
    let state = TempDir::new("gwpub");
    let state_arg = state.path().display().to_string();
    let first = start_switch(&switch_ns, &state);
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
    let server = tcp_who_am_i(&container.netns(), 80, 1);
    // The switch opens the port once `container create` has recorded the
    // container: the client retries refusals for a while.
    let (seen, local) = ask_published_tcp_in(
        &remote.ns,
        SocketAddrV4::new(Ipv4Addr::new(10, 201, 0, 1), 8080),
    )
    .unwrap_or_else(|e| panic!("connecting to the published port: {e}"));
    let local = local.to_string();
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
    let tcp_server = tcp_who_am_i(&container.netns(), 80, 1);
    let (seen, local) =
        ask_published_tcp_in(&switch_ns, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8090))
            .unwrap_or_else(|e| panic!("connecting to the published port on loopback: {e}"));
    tcp_server.join().expect("the container's TCP server");
    assert_eq!(
        seen,
        SocketAddrV4::new(GATEWAY, local.port()).to_string(),
        "a loopback client is seen from the gateway, with its own port\n{}",
        switch.log()
    );

    let udp_server = udp_who_am_i(&container.netns(), 53);
    let published = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5390);
    let (seen, from, local) = ask_published_udp_in(&switch_ns, "127.0.0.1:0", published)
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
        let mut stream = connect_when_listening(to)?;
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

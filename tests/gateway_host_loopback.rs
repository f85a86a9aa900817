//! TCP to the gateway's own address reaching the host's loopback (issue
//! 14: `serve --allow-host-loopback` maps TCP and UDP; the UDP half is in
//! `gateway_services.rs`): off by default, on with the flag. As root, in
//! namespaces this test makes.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use tapswitch_tests::{Netns, SwitchProcess, Topology, require_root};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

/// A TCP server on the switch namespace's 127.0.0.1 that answers its one
/// client with the address it sees; returns its port.
fn loopback_server(switch_ns: &Netns) -> (u16, std::thread::JoinHandle<()>) {
    let listener = switch_ns.run(|| TcpListener::bind("127.0.0.1:0").expect("loopback listener"));
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(false).unwrap();
    let server = std::thread::spawn(move || {
        if let Ok((mut stream, peer)) = listener.accept() {
            let _ = stream.write_all(peer.ip().to_string().as_bytes());
        }
    });
    (port, server)
}

fn ask(container: &Netns, to: SocketAddrV4) -> io::Result<String> {
    container.run(|| {
        let mut stream = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut seen = String::new();
        stream.read_to_string(&mut seen)?;
        Ok(seen)
    })
}

#[test]
fn tcp_to_the_gateway_reaches_the_hosts_loopback_only_when_allowed() {
    require_root();
    let topo = Topology::veth_star(1);
    let container = &topo.hosts[0].ns;

    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    let (port, server) = loopback_server(&topo.switch_ns);
    let refused = ask(container, SocketAddrV4::new(GATEWAY, port))
        .expect_err("the host's loopback is not reachable by default");
    // The gateway's own stack has no such port: a RST, not a hang.
    assert_eq!(
        refused.kind(),
        io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    drop(switch);
    // Let the server go: a client of its own.
    let _ = topo
        .switch_ns
        .run(|| TcpStream::connect(("127.0.0.1", port)));
    server.join().unwrap();

    let switch = topo.serve_with(&["--allow-host-loopback"]);
    let (port, server) = loopback_server(&topo.switch_ns);
    let seen = ask(container, SocketAddrV4::new(GATEWAY, port))
        .unwrap_or_else(|e| panic!("host loopback over TCP: {e}\n{}", switch.log()));
    // The host's service sees a loopback client (the switch's own socket).
    assert_eq!(seen, "127.0.0.1");
    server.join().unwrap();
}

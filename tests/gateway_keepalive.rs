//! The host socket of an outbound TCP flow keeps the connection alive
//! (issue 14: "keepalive and idle cleanup"): the kernel runs a keepalive
//! timer on it, as `ss -o` shows. As root, in namespaces this test makes.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::time::Duration;

use tapswitch_tests::remote::{REMOTE_IP, Remote, TCP_ECHO_PORT};
use tapswitch_tests::{SwitchProcess, Topology, require_root};

#[test]
fn an_outbound_tcp_flows_host_socket_has_a_keepalive_timer() {
    require_root();
    let topo = Topology::veth_star(1);
    let remote = Remote::new(&topo.switch_ns);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    let echo = SocketAddrV4::new(REMOTE_IP, TCP_ECHO_PORT);
    let stream = topo.hosts[0].ns.run(|| {
        let mut stream = TcpStream::connect_timeout(&echo.into(), Duration::from_secs(10))
            .expect("connecting through the gateway");
        stream.write_all(b"ping").unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut back = [0u8; 4];
        stream.read_exact(&mut back).expect("the echo");
        assert_eq!(&back, b"ping");
        stream
    });
    // The switch's own socket to the remote, in the switch's namespace.
    let shown = topo.switch_ns.exec(
        "ss",
        &["-tnoH", "state", "established", "dst", &echo.to_string()],
    );
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.lines().count() == 1 && shown.contains("timer:(keepalive"),
        "one established host socket with a keepalive timer:\n{shown}\n{}",
        switch.log()
    );
    drop(stream);
    drop(remote);
}

//! Without `--dns-upstream`, the gateway forwards to the nameservers of
//! the switch's own `/etc/resolv.conf` (issue 14: "forwarded to the host's
//! resolvers"). The switch runs under `ip netns exec`, which bind-mounts
//! `/etc/netns/NS/resolv.conf` over `/etc/resolv.conf`: this test writes
//! that file (and removes it) to name a server in its remote namespace.
//! As root, in namespaces this test makes.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use tapswitch_tests::remote::{REMOTE_IP, Remote, dns_addresses, dns_query};
use tapswitch_tests::{SwitchProcess, Topology, require_root};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
/// What the test's resolver answers for every name.
const ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

/// `/etc/netns/NS/`, removed when dropped.
struct EtcNetns(PathBuf);

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An answer to `query` (one question) with one A record, [`ANSWER`].
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += usize::from(query[end]) + 1;
    }
    end += 5; // the root label, type and class
    let mut reply = query.get(..end)?.to_vec();
    reply[2] = 0x81; // a response, recursion desired
    reply[3] = 0x80; // recursion available, NOERROR
    reply[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
    reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    reply.extend_from_slice(&ANSWER.octets());
    Some(reply)
}

#[test]
fn without_upstreams_the_gateway_asks_the_nameservers_of_resolv_conf() {
    require_root();
    let topo = Topology::veth_star(1);
    let remote = Remote::new(&topo.switch_ns);
    let etc = EtcNetns(PathBuf::from("/etc/netns").join(&topo.switch_ns.name));
    std::fs::create_dir_all(&etc.0).unwrap();
    std::fs::write(
        etc.0.join("resolv.conf"),
        format!("# written by tests/gateway_dns_default.rs\nnameserver {REMOTE_IP}\n"),
    )
    .unwrap();
    // A resolver on the remote's port 53.
    let server = remote
        .ns
        .run(|| UdpSocket::bind(SocketAddrV4::new(REMOTE_IP, 53)).expect("port 53 in the remote"));
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let resolver = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let mut answered = 0;
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            if let Some(reply) = answer(&buf[..n]) {
                server.send_to(&reply, from).unwrap();
                answered += 1;
            }
            server
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
        }
        answered
    });

    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    let upstreams = switch.call(r#"{"cmd":"services"}"#).expect("services")["upstreams"].clone();
    assert_eq!(
        upstreams,
        serde_json::json!([format!("{REMOTE_IP}:53")]),
        "the upstream of resolv.conf\n{}",
        switch.log()
    );
    let reply = topo.hosts[0].ns.run(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.connect((GATEWAY, 53)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 1500];
        for _ in 0..6 {
            socket.send(&dns_query(0x5151, "www.example.test")).unwrap();
            if let Ok(n) = socket.recv(&mut buf) {
                return buf[..n].to_vec();
            }
        }
        panic!("no DNS answer from the gateway");
    });
    assert_eq!(&reply[..2], &[0x51, 0x51]);
    assert_eq!(dns_addresses(&reply), vec![ANSWER], "{}", switch.log());
    drop(switch);
    assert!(resolver.join().unwrap() >= 1, "the resolver was asked");
    drop(remote);
}

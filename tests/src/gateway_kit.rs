//! What the gateway's kernel tests share (issue 14): a switch serving one
//! container with its DNS forwarded to the remote namespace's server,
//! containers made with `tapswitch container create`, UDP/TCP/DNS clients
//! and the small servers a container runs to tell a client the address it
//! sees. Everything runs in namespaces the tests make.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use crate::lab::TempDir;
use crate::remote::{DNS_PORT, REMOTE_IP, Remote, dns_addresses, dns_query};
use crate::{Netns, SwitchProcess, Topology};

pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

/// A switch serving one container (172.17.0.2) with `extra` options, its
/// DNS forwarded to the remote's server, and the remote namespace.
pub fn setup(extra: &[&str]) -> (Topology, Remote, TempDir, SwitchProcess) {
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
pub fn udp_exchange(ns: &Netns, to: SocketAddrV4, payload: &[u8]) -> io::Result<Vec<u8>> {
    udp_exchange_in(&ns.name, to, payload)
}

pub fn udp_exchange_in(ns: &str, to: SocketAddrV4, payload: &[u8]) -> io::Result<Vec<u8>> {
    let payload = payload.to_vec();
    crate::in_netns(ns, move || {
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

pub fn resolve(ns: &Netns, name: &str) -> Vec<Ipv4Addr> {
    resolve_in(&ns.name, name)
}

pub fn resolve_in(ns: &str, name: &str) -> Vec<Ipv4Addr> {
    let reply = udp_exchange_in(ns, SocketAddrV4::new(GATEWAY, 53), &dns_query(0x1234, name))
        .unwrap_or_else(|e| panic!("no DNS answer for {name}: {e}"));
    assert_eq!(
        &reply[..2],
        &[0x12, 0x34],
        "the answer carries the query's id"
    );
    dns_addresses(&reply)
}

/// Connects from `ns` to `to`, sends `bytes` bytes (then closes its
/// sending half) while reading the echo until the remote closes; returns
/// what came back.
pub fn tcp_echo(ns: &Netns, to: SocketAddrV4, bytes: usize) -> io::Result<(Vec<u8>, Vec<u8>)> {
    tcp_echo_in(&ns.name, to, bytes)
}

/// [`tcp_echo`] from the namespace named `ns`.
pub fn tcp_echo_in(ns: &str, to: SocketAddrV4, bytes: usize) -> io::Result<(Vec<u8>, Vec<u8>)> {
    tcp_echo_at(&crate::netns::netns_path(ns), to, bytes)
}

/// [`tcp_echo`] from the namespace at `netns` (see [`crate::netns::in_netns_at`]).
pub fn tcp_echo_at(netns: &Path, to: SocketAddrV4, bytes: usize) -> io::Result<(Vec<u8>, Vec<u8>)> {
    echo_at(netns, to, bytes, Duration::from_secs(5))
}

/// [`tcp_echo`] that waits up to `connect_timeout` for the connection (a
/// gateway busy with a flood may answer late).
pub fn tcp_echo_waiting(
    ns: &Netns,
    to: SocketAddrV4,
    bytes: usize,
    connect_timeout: Duration,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    echo_at(
        &crate::netns::netns_path(&ns.name),
        to,
        bytes,
        connect_timeout,
    )
}

fn echo_at(
    netns: &Path,
    to: SocketAddrV4,
    bytes: usize,
    connect_timeout: Duration,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    crate::netns::in_netns_at(netns, move || {
        let stream = TcpStream::connect_timeout(&to.into(), connect_timeout)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
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

/// A container made with `tapswitch container create` in a test's state
/// directory; removed (namespace, veth, record) when dropped.
#[derive(Debug)]
pub struct Container<'a> {
    pub name: String,
    pub switch_ns: &'a Netns,
    pub state: &'a TempDir,
}

impl Container<'_> {
    /// Runs `tapswitch ARGS` in the switch's network namespace but this
    /// process's mount namespace (`ip netns exec` would make one of its
    /// own, and the container's namespace mount would stay in it).
    pub fn tapswitch(switch_ns: &Netns, args: &[&str]) -> std::process::Output {
        tapswitch_in(switch_ns, args)
    }

    pub fn netns(&self) -> String {
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

/// The address IPAM leased to container `name`.
pub fn record_address(state: &TempDir, name: &str) -> Ipv4Addr {
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
pub fn loopback_echo(switch_ns: &Netns, count: usize) -> (u16, std::thread::JoinHandle<()>) {
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

/// Creates container `name` on the switch at `control`, with `extra`
/// arguments (`-p ...`); panics with tapswitch's words if it fails.
pub fn create_container<'a>(
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
pub fn start_switch(switch_ns: &Netns, state: &TempDir) -> SwitchProcess {
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
pub fn udp_who_am_i(netns: &str, port: u16) -> std::thread::JoinHandle<()> {
    let socket = crate::in_netns(netns, || {
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
pub fn ask_published_udp(
    remote: &Remote,
    to: SocketAddrV4,
) -> io::Result<(String, std::net::SocketAddr, std::net::SocketAddr)> {
    ask_published_udp_in(&remote.ns, "10.201.0.2:0", to)
}

/// [`ask_published_udp`] from a socket bound to `bind` in `ns`.
pub fn ask_published_udp_in(
    ns: &Netns,
    bind: &'static str,
    to: SocketAddrV4,
) -> io::Result<(String, std::net::SocketAddr, std::net::SocketAddr)> {
    ns.run(move || {
        let socket = UdpSocket::bind(bind)?;
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

/// Asks the gateway's DNS over TCP, from namespace `ns`, for each of
/// `names` on one connection (two-byte lengths, RFC 7766); their
/// addresses, in order.
pub fn resolve_tcp_in(ns: &str, names: &[&str]) -> io::Result<Vec<Vec<Ipv4Addr>>> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    crate::in_netns(ns, move || {
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

/// Asks the published TCP port `to` from the remote namespace, retrying
/// refusals for a while: what the container's server said.
pub fn ask_published_tcp(remote: &Remote, to: SocketAddrV4) -> io::Result<String> {
    ask_published_tcp_in(&remote.ns, to).map(|(seen, _)| seen)
}

/// Connects to `to`, trying again for up to 5 s while it is refused (a
/// published port the switch is still opening).
pub fn connect_when_listening(to: SocketAddrV4) -> io::Result<TcpStream> {
    let mut tries = 0;
    loop {
        match TcpStream::connect_timeout(&to.into(), Duration::from_secs(5)) {
            Ok(stream) => return Ok(stream),
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(err) => return Err(err),
        }
    }
}

/// [`ask_published_tcp`] from namespace `ns`: what the container's server
/// said, and the client's own address.
pub fn ask_published_tcp_in(
    ns: &Netns,
    to: SocketAddrV4,
) -> io::Result<(String, std::net::SocketAddr)> {
    ns.run(move || {
        let mut stream = connect_when_listening(to)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut seen = String::new();
        stream.read_to_string(&mut seen)?;
        Ok((seen, stream.local_addr()?))
    })
}

/// A TCP server in `netns` on `port` telling each of `clients` clients
/// the address it sees.
pub fn tcp_who_am_i(netns: &str, port: u16, clients: usize) -> std::thread::JoinHandle<()> {
    tcp_who_am_i_at(&crate::netns::netns_path(netns), port, clients)
}

/// [`tcp_who_am_i`] in the namespace at `netns` (see
/// [`crate::netns::in_netns_at`]).
pub fn tcp_who_am_i_at(netns: &Path, port: u16, clients: usize) -> std::thread::JoinHandle<()> {
    let listener = crate::netns::in_netns_at(netns, || {
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

/// Runs `tapswitch ARGS` in namespace `ns` but this process's mount
/// namespace (`ip netns exec` would make one of its own, and a container's
/// namespace mount would stay in it).
pub fn tapswitch_in(ns: &Netns, args: &[&str]) -> std::process::Output {
    let binary = crate::switch_process::binary();
    ns.run(|| {
        std::process::Command::new(&binary)
            .args(args)
            .output()
            .expect("running tapswitch")
    })
}

/// [`tapswitch_in`] that must succeed: its standard output.
pub fn tapswitch_ok(ns: &Netns, args: &[&str]) -> String {
    let output = tapswitch_in(ns, args);
    assert!(
        output.status.success(),
        "tapswitch {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

//! The gateway's limits in a running switch (issue 14), as root in
//! namespaces this test makes: many idle flows and many short ones (memory
//! and descriptors come back, also when a container resets thousands of
//! flows at once), a SYN flood from one container while
//! another's transfer goes on, the UDP idle timeout, half-close both ways,
//! and DNS over TCP to the upstreams.
//!
//! ```text
//!  th-1 (172.17.0.2) ─┐                        ┌ trm: REMOTE_IP (lo)
//!  th-2 (172.17.0.3) ─┼─ tsw: tapswitch serve ─┤    echo, hold, DNS
//!  th-3 (172.17.0.4) ─┘   (gateway 172.17.0.1) └ (uplink veth, routed)
//! ```
//!
//! Counts and times are bounded; nothing here asserts a timing. Every
//! packet stays in the namespaces the test made.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use tapswitch_tests::gateway_kit::tcp_echo_waiting;
use tapswitch_tests::poll::within;
use tapswitch_tests::remote::{
    BIG_ANSWERS, BLACK_HOLE, DNS_ANSWER, DNS_PORT, HALF_CLOSE_GREETING, HALF_CLOSE_PORT, HOLD_PORT,
    REMOTE_IP, Remote, TCP_ECHO_PORT, UDP_ECHO_PORT, dns_addresses, dns_query,
};
use tapswitch_tests::{Netns, SwitchProcess, Topology, lab::TempDir, require_root};

/// A switch serving `hosts` containers (172.17.0.2..) with `extra`
/// options, and the remote namespace.
fn setup(hosts: usize, extra: &[&str]) -> (Topology, Remote, TempDir, SwitchProcess) {
    let topo = Topology::veth_star(hosts);
    let remote = Remote::new(&topo.switch_ns);
    let state = TempDir::new("gwlim");
    let mut args = topo.iface_args();
    args.extend(
        [
            "--state-dir",
            &state.path().display().to_string(),
            "--dns-upstream",
            &format!("{REMOTE_IP}:{DNS_PORT}"),
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|a| a.to_string()));
    let switch = SwitchProcess::start(&topo.switch_ns.name, &args);
    (topo, remote, state, switch)
}

/// The switch's resident memory, in KiB (`VmRSS`).
fn rss_kib(switch: &SwitchProcess) -> u64 {
    switch.memory_kib("VmRSS")
}

/// The switch's open descriptors.
fn fds(switch: &SwitchProcess) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", switch.pid()))
        .unwrap()
        .count()
}

fn services(switch: &SwitchProcess) -> serde_json::Value {
    switch.call(r#"{"cmd":"services"}"#).expect("services")
}

/// Flows open now (`services`' count: cheaper than listing 10,000 rows).
fn flows_now(switch: &SwitchProcess) -> u64 {
    services(switch)["flows_now"].as_u64().expect("flows_now")
}

/// Opens `count` TCP connections from `ns` to `to`, each sending
/// `greeting`, and returns them (open).
fn open_idle(ns: &Netns, to: SocketAddrV4, count: usize, greeting: &[u8]) -> Vec<TcpStream> {
    let greeting = greeting.to_vec();
    ns.run(move || {
        (0..count)
            .map(|i| {
                let mut stream = TcpStream::connect_timeout(&to.into(), Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("connection {i} to {to}: {e}"));
                stream.write_all(&greeting).unwrap();
                stream
            })
            .collect()
    })
}

/// Closes `streams` with a RST (`SO_LINGER` 0), all at once: the remote's
/// listener of [`HOLD_PORT`] never closes its side, so a FIN would leave
/// each flow half-closed until its timer. Thousands of RSTs overflow the
/// gateway's bounded queue; the gateway then asks the containers again
/// about every flow, and each lost RST comes again as the answer.
fn reset_all(streams: Vec<TcpStream>) {
    for stream in streams {
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream);
    }
}

/// Issue 14's budget: 10,000 concurrent idle flows under 100 MiB resident.
const IDLE_FLOWS: usize = 10_000;
const IDLE_BUDGET_KIB: u64 = 100 * 1024;

#[test]
fn ten_thousand_idle_flows_fit_the_memory_budget_and_give_everything_back() {
    require_root();
    // A container may hold 4 Ki flows: three containers share the 10,000.
    let (topo, mut remote, _state, switch) = setup(3, &[]);
    let hold = SocketAddrV4::new(REMOTE_IP, HOLD_PORT);
    // A first flow each, so the thread's first allocations are in the
    // baseline, then every flow gone again.
    let warm: Vec<TcpStream> = topo
        .hosts
        .iter()
        .flat_map(|h| open_idle(&h.ns, hold, 1, b"warm"))
        .collect();
    reset_all(warm);
    assert!(
        within(Duration::from_secs(10), || flows_now(&switch) == 0),
        "the warm-up flows did not end\n{}",
        switch.log()
    );
    let (rss_before, fds_before) = (rss_kib(&switch), fds(&switch));

    let started = Instant::now();
    let per_host = IDLE_FLOWS.div_ceil(topo.hosts.len());
    let mut held: Vec<Vec<TcpStream>> = topo
        .hosts
        .iter()
        .map(|h| open_idle(&h.ns, hold, per_host, b"GET / HTTP/1.1\r\n\r\n"))
        .collect();
    let opened = held.iter().map(Vec::len).sum::<usize>();
    assert!(
        within(Duration::from_secs(20), || flows_now(&switch)
            >= opened as u64),
        "{} flows of {opened}\n{}",
        flows_now(&switch),
        services(&switch)
    );
    // Let the greetings reach the remote and the stack settle.
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle = rss_kib(&switch);
    let grown = rss_idle.saturating_sub(rss_before);
    eprintln!(
        "{opened} idle flows opened in {:.1} s: RSS {rss_before} KiB -> {rss_idle} KiB \
         (+{grown} KiB, {} bytes per flow); descriptors {fds_before} -> {}",
        started.elapsed().as_secs_f64(),
        grown * 1024 / opened as u64,
        fds(&switch)
    );
    // `tapswitch flows` lists them all (a reply of some megabytes).
    let listed = switch.call(r#"{"cmd":"flows"}"#).expect("flows");
    assert_eq!(listed.as_array().map(Vec::len), Some(opened));
    assert!(
        grown < IDLE_BUDGET_KIB,
        "{opened} idle flows took {grown} KiB, over the {IDLE_BUDGET_KIB} KiB budget"
    );

    // The first container resets its thousands of flows at once (its
    // process ended): every one of them ends, however many of its RSTs
    // the gateway's queue dropped.
    let reset_by_container = held[0].len();
    reset_all(std::mem::take(&mut held[0]));
    let left = (opened - reset_by_container) as u64;
    assert!(
        within(Duration::from_secs(30), || flows_now(&switch) == left),
        "{} flows left after a container reset {reset_by_container} of {opened}, not {left}\n{}",
        flows_now(&switch),
        services(&switch)
    );
    let report = services(&switch);
    eprintln!(
        "{reset_by_container} RSTs at once: {} rechecks after overflows, {} probes",
        report["overflow_rechecks"], report["overflow_probes"]
    );
    // The remote ends the others (a RST from its kernel for each, to the
    // host sockets).
    remote.close_hold_port();
    assert!(
        within(Duration::from_secs(30), || flows_now(&switch) == 0),
        "{} flows left after the remote reset them\n{}",
        flows_now(&switch),
        services(&switch)
    );
    drop(held);
    assert!(
        within(Duration::from_secs(10), || fds(&switch) <= fds_before),
        "descriptors {fds_before} -> {} after every flow ended",
        fds(&switch)
    );
}

/// A container's SYN flood (bounded: [`FLOOD_SYNS`] connects to a black
/// hole, each retransmitted by its kernel) fills only that container's
/// share of pending connects; another container's 10 MB transfer comes
/// back intact meanwhile, and a silent destination is a timeout for the
/// container, as behind a kernel router.
const FLOOD_SYNS: usize = 2_000;

#[test]
fn a_syn_flood_from_one_container_leaves_the_others_transfer_intact() {
    require_root();
    let (topo, _remote, _state, switch) = setup(2, &[]);
    let (flooder, victim) = (&topo.hosts[0].ns, &topo.hosts[1].ns);
    let hole = SocketAddrV4::new(BLACK_HOLE, 80);

    // A silent destination: the container's connect times out.
    let err = flooder
        .run(move || TcpStream::connect_timeout(&hole.into(), Duration::from_secs(2)))
        .expect_err("nobody answers there");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");

    let flood: Vec<socket2::Socket> = flooder.run(move || {
        (0..FLOOD_SYNS)
            .map(|_| {
                let socket = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::STREAM.nonblocking(),
                    None,
                )
                .unwrap();
                // EINPROGRESS: the SYN is on its way.
                let _ = socket.connect(&hole.into());
                socket
            })
            .collect()
    });
    let echo = SocketAddrV4::new(REMOTE_IP, TCP_ECHO_PORT);
    let (sent, back) = tcp_echo_waiting(victim, echo, 10 << 20, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the victim's transfer: {e}\n{}", services(&switch)));
    assert!(back == sent, "the victim's 10 MB came back intact");

    let stats = services(&switch);
    let flows = &stats["flows"];
    assert!(
        flows["limit_container_pending_connects"].as_u64().unwrap() > 0,
        "the flood was held to the container's share: {stats}"
    );
    assert_eq!(
        flows["limit_pending_connects"], 0,
        "the flood never filled the whole table's pending connects: {stats}"
    );
    drop(flood);
}

/// 100,000 short connections, if the machine gets through them within
/// [`SHORT_TIME`]; see the comment in the test for why both bounds.
const SHORT_CONNECTIONS: usize = 100_000;
const SHORT_TIME: Duration = Duration::from_secs(55);
/// Growth of the switch's resident memory allowed across the run.
const SHORT_GROWTH_KIB: u64 = 16 * 1024;

#[test]
fn short_connections_give_back_descriptors_and_memory() {
    require_root();
    let (topo, _remote, _state, switch) = setup(3, &[]);
    // Every connection leaves a TIME_WAIT on the side that closed first
    // (the container, and the switch's host socket after it): room for
    // them in the namespaces this test made.
    for ns in topo.hosts.iter().map(|h| &h.ns).chain([&topo.switch_ns]) {
        ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
        ns.sysctl("net.ipv4.tcp_tw_reuse", "1");
    }
    let echo = SocketAddrV4::new(REMOTE_IP, TCP_ECHO_PORT);
    let short = |ns: &Netns, count: usize, until: Instant| -> usize {
        ns.run(move || {
            let mut done = 0;
            while done < count && Instant::now() < until {
                let mut stream =
                    TcpStream::connect_timeout(&echo.into(), Duration::from_secs(10)).unwrap();
                stream.write_all(b"ping").unwrap();
                stream.shutdown(Shutdown::Write).unwrap();
                let mut back = Vec::new();
                stream.read_to_end(&mut back).unwrap();
                assert_eq!(back, b"ping");
                done += 1;
            }
            done
        })
    };
    // A warm-up, so the baseline has the thread's first allocations.
    let warm_until = Instant::now() + SHORT_TIME;
    for host in &topo.hosts {
        short(&host.ns, 200, warm_until);
    }
    assert!(within(Duration::from_secs(10), || flows_now(&switch) == 0));
    let (rss_before, fds_before) = (rss_kib(&switch), fds(&switch));

    // 100,000 take about 50 s here (a debug build on a 2-CPU machine
    // shared with other work: about 2,000 a second, the same as a release
    // build, so the switch is not what limits the pace); a busier machine
    // would take longer than a test should. The run stops at whichever
    // comes first, the count or the time, and what it asserts
    // (descriptors and memory back to the baseline) holds for any count.
    let started = Instant::now();
    let until = started + SHORT_TIME;
    let per_host = SHORT_CONNECTIONS.div_ceil(topo.hosts.len());
    let done: usize = std::thread::scope(|scope| {
        let runs: Vec<_> = topo
            .hosts
            .iter()
            .map(|h| scope.spawn(move || short(&h.ns, per_host, until)))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).sum()
    });
    let elapsed = started.elapsed();
    assert!(done >= 1_000, "only {done} connections went through");
    assert!(
        within(Duration::from_secs(20), || flows_now(&switch) == 0),
        "{} flows left\n{}",
        flows_now(&switch),
        services(&switch)
    );
    let (rss_after, fds_after) = (rss_kib(&switch), fds(&switch));
    eprintln!(
        "{done} short connections in {:.1} s ({:.0}/s): RSS {rss_before} -> {rss_after} KiB, \
         descriptors {fds_before} -> {fds_after}",
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64()
    );
    assert!(
        within(Duration::from_secs(10), || fds(&switch) <= fds_before),
        "descriptors {fds_before} -> {} after {done} connections",
        fds(&switch)
    );
    assert!(
        rss_after <= rss_before + SHORT_GROWTH_KIB,
        "RSS grew from {rss_before} to {rss_after} KiB over {done} connections"
    );
    let closed = services(&switch)["flows"]["closed"].as_u64().unwrap();
    assert!(closed >= done as u64, "{closed} closed of {done}");
}

#[test]
fn a_udp_flow_leaves_the_table_after_its_idle_timeout() {
    require_root();
    let (topo, _remote, _state, switch) = setup(1, &["--udp-timeout", "2"]);
    let container = &topo.hosts[0].ns;
    let echo = SocketAddrV4::new(REMOTE_IP, UDP_ECHO_PORT);
    let answer = container.run(move || -> io::Result<Vec<u8>> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.connect(echo)?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 64];
        for _ in 0..6 {
            socket.send(b"hello")?;
            if let Ok(n) = socket.recv(&mut buf) {
                return Ok(buf[..n].to_vec());
            }
        }
        Err(io::ErrorKind::TimedOut.into())
    });
    assert_eq!(answer.expect("the echo"), b"hello");
    let listed = || {
        let flows = switch.call(r#"{"cmd":"flows"}"#).expect("flows");
        flows
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["protocol"] == "udp" && f["remote"] == echo.to_string())
    };
    assert!(listed(), "the UDP flow is listed while fresh");
    assert!(
        within(Duration::from_secs(10), || !listed()),
        "the UDP flow outlived its 2 s timeout"
    );
    assert!(services(&switch)["flows"]["timed_out"].as_u64().unwrap() >= 1);
}

#[test]
fn half_close_works_both_ways() {
    require_root();
    let (topo, remote, _state, switch) = setup(1, &[]);
    let container = &topo.hosts[0].ns;

    // The remote closes its half first: the container reads the greeting
    // and the end of the stream, then still sends 1 MB, which arrives.
    let first = SocketAddrV4::new(REMOTE_IP, HALF_CLOSE_PORT);
    let greeting = container
        .run(move || -> io::Result<Vec<u8>> {
            let mut stream = TcpStream::connect_timeout(&first.into(), Duration::from_secs(10))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut greeting = Vec::new();
            stream.read_to_end(&mut greeting)?;
            stream.write_all(&vec![7u8; 1 << 20])?;
            stream.shutdown(Shutdown::Write)?;
            Ok(greeting)
        })
        .unwrap_or_else(|e| panic!("half-closed by the remote: {e}\n{}", switch.log()));
    assert_eq!(greeting, HALF_CLOSE_GREETING);
    assert!(
        within(Duration::from_secs(10), || remote
            .half_close_received()
            .contains(&(1 << 20))),
        "the remote got {:?} after closing its half",
        remote.half_close_received()
    );

    // The container closes its half first: the echo goes on coming back.
    let echo = SocketAddrV4::new(REMOTE_IP, TCP_ECHO_PORT);
    let echoed = container
        .run(move || -> io::Result<Vec<u8>> {
            let mut stream = TcpStream::connect_timeout(&echo.into(), Duration::from_secs(10))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            stream.write_all(b"after my FIN, still yours")?;
            stream.shutdown(Shutdown::Write)?;
            let mut back = Vec::new();
            stream.read_to_end(&mut back)?;
            Ok(back)
        })
        .expect("half-closed by the container");
    assert_eq!(echoed, b"after my FIN, still yours");
    assert!(
        within(Duration::from_secs(10), || flows_now(&switch) == 0),
        "both flows ended: {}",
        services(&switch)
    );
}

const GATEWAY_DNS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(172, 17, 0, 1), 53);

/// Asks the gateway for `name` over UDP from `ns`; the answer's addresses.
fn resolve_udp(ns: &Netns, id: u16, name: &str) -> io::Result<Vec<Ipv4Addr>> {
    let query = dns_query(id, name);
    ns.run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.connect(GATEWAY_DNS)?;
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        let mut buf = [0u8; 4096];
        // The first datagram may wait for ARP: a few tries.
        for _ in 0..5 {
            socket.send(&query)?;
            if let Ok(n) = socket.recv(&mut buf) {
                assert_eq!(buf[..2], id.to_be_bytes(), "the query's own id back");
                assert_eq!(buf[2] & 0x02, 0, "not truncated");
                return Ok(dns_addresses(&buf[..n]));
            }
        }
        Err(io::ErrorKind::TimedOut.into())
    })
}

/// Asks the gateway for `name` over TCP from `ns`.
fn resolve_tcp(ns: &Netns, id: u16, name: &str) -> io::Result<Vec<Ipv4Addr>> {
    let query = dns_query(id, name);
    ns.run(move || {
        let mut stream = TcpStream::connect_timeout(&GATEWAY_DNS.into(), Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut framed = u16::try_from(query.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&query);
        stream.write_all(&framed)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len)?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply)?;
        assert_eq!(reply[..2], id.to_be_bytes(), "the query's own id back");
        Ok(dns_addresses(&reply))
    })
}

#[test]
fn dns_goes_upstream_over_tcp_for_tcp_clients_and_truncated_answers() {
    require_root();
    let (topo, remote, _state, switch) = setup(1, &[]);
    let container = &topo.hosts[0].ns;
    let log = || format!("{}\n{}", services(&switch), switch.log());

    // A plain name over UDP stays on UDP upstream.
    let plain = resolve_udp(container, 0x5101, "www.example.test")
        .unwrap_or_else(|e| panic!("UDP: {e}\n{}", log()));
    assert_eq!(plain, vec![DNS_ANSWER], "{}", log());
    assert_eq!(remote.dns_tcp_queries(), 0, "{}", log());

    // The upstream truncates `big.` over UDP: the gateway asks again over
    // TCP, and the container gets the whole answer in one datagram.
    let big = resolve_udp(container, 0x5102, "big.example.test")
        .unwrap_or_else(|e| panic!("truncated: {e}\n{}", log()));
    assert_eq!(big, BIG_ANSWERS.to_vec());
    assert_eq!(remote.dns_tcp_queries(), 1, "{}", log());

    // A container's query over TCP goes upstream over TCP.
    let over_tcp = resolve_tcp(container, 0x5103, "www.example.test")
        .unwrap_or_else(|e| panic!("TCP: {e}\n{}", log()));
    assert_eq!(over_tcp, vec![DNS_ANSWER]);
    assert_eq!(remote.dns_tcp_queries(), 2, "{}", log());
    let stats = services(&switch);
    let forwarder = &stats["dns_forwarder"];
    assert_eq!(forwarder["truncated_retried"], 1, "{stats}");
    assert_eq!(forwarder["sent_tcp"], 2, "{stats}");
}

//! The gateway's limits in a running switch (issue 14), as root in
//! namespaces this test makes: many idle flows and many short ones (memory
//! and descriptors come back), a SYN flood from one container while
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

use std::io::Write;
use std::net::{SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use tapswitch_tests::remote::{HOLD_PORT, REMOTE_IP, Remote};
use tapswitch_tests::{Netns, SwitchProcess, Topology, lab::TempDir, require_root};

/// A switch serving `hosts` containers (172.17.0.2..) with `extra`
/// options, and the remote namespace.
fn setup(hosts: usize, extra: &[&str]) -> (Topology, Remote, TempDir, SwitchProcess) {
    let topo = Topology::veth_star(hosts);
    let remote = Remote::new(&topo.switch_ns);
    let state = TempDir::new("gwlim");
    let mut args = topo.iface_args();
    args.extend([
        "--state-dir".to_string(),
        state.path().display().to_string(),
    ]);
    args.extend(extra.iter().map(|a| a.to_string()));
    let switch = SwitchProcess::start(&topo.switch_ns.name, &args);
    (topo, remote, state, switch)
}

/// The switch's resident memory, in KiB (`VmRSS`).
fn rss_kib(switch: &SwitchProcess) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", switch.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
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

/// Waits (at most `limit`) until `done` holds; returns whether it did.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
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

/// Closes `streams` with a RST (`SO_LINGER` 0): the remote's listener of
/// [`HOLD_PORT`] never closes its side, so a FIN would leave each flow
/// half-closed until its timer.
/// Paced in batches: the gateway's queue is bounded, and a RST it drops
/// is not sent again.
fn reset_all(streams: Vec<TcpStream>) {
    for (i, stream) in streams.into_iter().enumerate() {
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream);
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Issue 14's budget: 10,000 concurrent idle flows under 100 MiB resident.
const IDLE_FLOWS: usize = 10_000;
const IDLE_BUDGET_KIB: u64 = 100 * 1024;

#[test]
fn ten_thousand_idle_flows_fit_the_memory_budget_and_give_everything_back() {
    require_root();
    // A container may hold 4 Ki flows: three containers share the 10,000.
    let (topo, remote, _state, switch) = setup(3, &[]);
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
        wait_until(Duration::from_secs(10), || flows_now(&switch) == 0),
        "the warm-up flows did not end\n{}",
        switch.log()
    );
    let (rss_before, fds_before) = (rss_kib(&switch), fds(&switch));

    let started = Instant::now();
    let per_host = IDLE_FLOWS.div_ceil(topo.hosts.len());
    let held: Vec<Vec<TcpStream>> = topo
        .hosts
        .iter()
        .map(|h| open_idle(&h.ns, hold, per_host, b"GET / HTTP/1.1\r\n\r\n"))
        .collect();
    let opened = held.iter().map(Vec::len).sum::<usize>();
    assert!(
        wait_until(Duration::from_secs(20), || flows_now(&switch)
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
    assert!(
        grown < IDLE_BUDGET_KIB,
        "{opened} idle flows took {grown} KiB, over the {IDLE_BUDGET_KIB} KiB budget"
    );

    reset_all(held.into_iter().flatten().collect());
    assert!(
        wait_until(Duration::from_secs(30), || flows_now(&switch) == 0),
        "{} flows left after their containers closed\n{}",
        flows_now(&switch),
        services(&switch)
    );
    assert!(
        wait_until(Duration::from_secs(10), || fds(&switch) <= fds_before),
        "descriptors {fds_before} -> {} after every flow ended",
        fds(&switch)
    );
    drop(remote);
}

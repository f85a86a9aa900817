//! Ports read in per-CPU lanes (veth: a fanout group of packet sockets;
//! TAP: a multi-queue device with a steering program; one lane per
//! worker): every frame arrives once, a sender's frames keep their order,
//! the switch never reads back its own output, and heavy traffic switches
//! the reading per port and back. Needs root; CI runs it as root.
//!
//! ```text
//!   h1 eth0 ═══ p1 (veth) or t1 (TAP) ┐
//!                                     ├─ tapswitch serve --workers 2
//!   h2 eth0 ═══ p2 (veth) or t2 (TAP) ┘
//! ```

use std::time::{Duration, Instant};

use tapswitch_tests::frames::{mac, probe};
use tapswitch_tests::gateway_kit::tapswitch_ok;
use tapswitch_tests::lane_order::{
    KeptBy, SHORT_SLICES, assert_once_and_in_order, moving_sender_keeps_its_order,
    one_cpu_per_lane, probe_number, reading, veth_cpus_for_a_moving_sender,
};
use tapswitch_tests::poll::within;
use tapswitch_tests::traffic::Station;
use tapswitch_tests::worker_threads::{slices_granted_and_shown, worker_threads};
use tapswitch_tests::{Netns, SwitchProcess, Topology, require_root, tap_hosts, tap_pair};

const WINDOW: Duration = Duration::from_millis(150);
const PER_SENDER: u32 = 200;

/// How often the workers offered their CPU under load (`affinity.rs`).
fn cpu_yields(switch: &SwitchProcess) -> u64 {
    let info = switch.info();
    info["cpu_yields"].as_u64().expect("cpu_yields in info")
}

fn lanes_of(switch: &SwitchProcess, port: &str) -> u64 {
    switch.port(port)["lanes"].as_u64().expect("lanes")
}

/// Each CPU in turn sends `PER_SENDER` probes from a thread kept on it, at a
/// light pace; returns the ids in the order they were sent.
fn send_from_every_cpu(
    stations: &[(usize, Station)],
    round: u32,
    b: [u8; 6],
    a: [u8; 6],
) -> Vec<u32> {
    let mut sent = Vec::new();
    for (cpu, station) in stations {
        let ids: Vec<u32> = (0..PER_SENDER)
            .map(|i| probe_number(round, *cpu, i))
            .collect();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                ports::cpu::pin_current_thread(&[*cpu]).expect("keeping a sender on its CPU");
                for id in &ids {
                    station.send(&probe(b, a, *id, 64));
                    std::thread::sleep(Duration::from_micros(200));
                }
            });
        });
        sent.extend(ids);
    }
    sent
}

#[test]
fn veth_ports_read_per_cpu_deliver_every_frame_once_in_order_and_per_port_under_load() {
    require_root();
    let topo = Topology::veth_star(2);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &{
        let mut args = topo.iface_args();
        // The workers' lanes are under test: once the switch knows a and
        // b, the kernel shortcut would carry the blast and no worker would
        // get busy.
        args.extend(["--no-gateway", "--workers", "2", "--no-kernel-shortcut"].map(String::from));
        args
    });
    let lanes = if ports::packet::lanes_supported() {
        2
    } else {
        1
    };
    assert_eq!(lanes_of(&switch, "p1"), lanes);
    exercise_lanes(&switch, &topo.hosts[0].ns, &topo.hosts[1].ns, "p1");
}

#[test]
fn tap_ports_read_per_cpu_deliver_every_frame_once_in_order_and_per_port_under_load() {
    require_root();
    let (_switch_ns, switch, hosts) = tap_pair(&["--no-gateway", "--workers", "2"]);
    // Root may load the steering program, so the TAP is multi-queue.
    assert_eq!(lanes_of(&switch, "t1"), 2);
    exercise_lanes(&switch, &hosts[0], &hosts[1], "t1");
}

/// One round of light traffic from `a` (behind s1) to `b` (behind s2)
/// from every CPU: each probe arrives at s2 once and in order per sender,
/// and nothing comes back to s1.
fn light_round(
    stations: &[(usize, Station)],
    round: u32,
    (a, b): ([u8; 6], [u8; 6]),
    (s1, s2): (&mut Station, &mut Station),
    what: &str,
) {
    let sent = send_from_every_cpu(stations, round, b, a);
    let got: Vec<u32> = s2
        .collect_probes(WINDOW)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_once_and_in_order(&sent, &got, what);
    assert!(
        s1.collect_probes(WINDOW).is_empty(),
        "nothing comes back to the sender"
    );
}

/// Light traffic from every CPU, a flat-out burst, light traffic again:
/// every light frame arrives once and in order per sender, nothing comes
/// back, and the burst makes the switch read per port and then go back.
fn exercise_lanes(switch: &SwitchProcess, h1: &Netns, h2: &Netns, h1_port: &str) {
    let cpus = ports::cpu::allowed_cpus().expect("allowed CPUs");
    let stations: Vec<(usize, Station)> = cpus
        .iter()
        .map(|&cpu| (cpu, Station::open(h1, "eth0")))
        .collect();
    let mut s1 = Station::open(h1, "eth0");
    let mut s2 = Station::open(h2, "eth0");
    let a = mac("02:00:00:00:bb:01");
    let b = mac("02:00:00:00:bb:02");
    // Teach the switch where b lives, so a's frames are unicast to p2.
    s2.teach(b, &mut s1, WINDOW);
    assert_eq!(reading(switch).0, "per CPU (traffic is light)");

    light_round(
        &stations,
        1,
        (a, b),
        (&mut s1, &mut s2),
        "light traffic from every CPU",
    );

    // Flat out from one thread: a worker gets busy and the switch reads
    // each port in one lane, then goes back once traffic is light again.
    // Until then no worker was under load, so none offered its CPU.
    let (_, changes_before) = reading(switch);
    assert_eq!(cpu_yields(switch), 0, "light traffic never yields");
    let blast: Vec<Vec<u8>> = (0..50_000u32)
        .map(|i| probe(b, a, 0xff00_0000 | i, 64))
        .collect();
    let started = Instant::now();
    for frame in &blast {
        // A full queue (ENOBUFS) only loses the frame: this part is about load.
        let _ = stations[0].1.try_send(frame);
    }
    let blasted = started.elapsed();
    // The worker notices within a window or two, also while it still drains.
    let busy = within(Duration::from_secs(5), || {
        reading(switch).1 != changes_before
    });
    assert!(
        busy,
        "50,000 frames in {:?} made no worker busy enough to read per port",
        blasted
    );
    let light = within(Duration::from_secs(5), || {
        reading(switch).0 == "per CPU (traffic is light)"
    });
    assert!(
        light,
        "the switch stayed in per-port reading: {:?}",
        reading(switch)
    );
    assert!(
        cpu_yields(switch) > 0,
        "a worker forwarding a burst under load never offered its CPU"
    );
    s2.collect(WINDOW);
    s1.drain();

    light_round(
        &stations,
        2,
        (a, b),
        (&mut s1, &mut s2),
        "light traffic after the load",
    );
    // Had a lane read back what the switch sent out of p2, a's frames would
    // have taught the table that a lives on p2.
    let fdb = switch.fdb();
    assert_eq!(
        fdb["stats"]["moved"], 0,
        "no address ever moved: {}",
        fdb["stats"]
    );
    assert_eq!(
        switch.port_of("02:00:00:00:bb:01").as_deref(),
        Some(h1_port)
    );
}

#[test]
fn veth_ports_read_per_cpu_keep_the_order_of_a_sender_that_moves_between_cpus() {
    require_root();
    let Some(cpus) = veth_cpus_for_a_moving_sender() else {
        return;
    };
    let topo = Topology::veth_star(2);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &{
        let mut args = topo.iface_args();
        // The lanes are under test: the kernel shortcut would carry a's
        // frames to b without them.
        args.extend(["--no-gateway", "--workers", "2", "--no-kernel-shortcut"].map(String::from));
        args.push(SHORT_SLICES.to_string());
        args
    });
    assert_eq!(lanes_of(&switch, "p1"), 2);
    let stations = (
        Station::open(&topo.hosts[0].ns, "eth0"),
        Station::open(&topo.hosts[1].ns, "eth0"),
    );
    moving_sender_keeps_its_order(&switch, stations, &cpus, KeptBy::Ledger);
}

#[test]
fn tap_ports_read_per_cpu_keep_the_order_of_a_sender_that_moves_between_cpus() {
    require_root();
    let Some(cpus) = one_cpu_per_lane() else {
        return;
    };
    let (_switch_ns, switch, hosts) = tap_pair(&["--no-gateway", "--workers", "2", SHORT_SLICES]);
    assert_eq!(lanes_of(&switch, "t1"), 2);
    let stations = (
        Station::open(&hosts[0], "eth0"),
        Station::open(&hosts[1], "eth0"),
    );
    moving_sender_keeps_its_order(&switch, stations, &cpus, KeptBy::Ledger);
}

#[test]
fn existing_persistent_taps_keep_their_queues_and_outlive_the_switch() {
    require_root();
    let switch_ns = Netns::new("tsw");
    // Made beforehand, as `ip tuntap add` users do: one single-queue, one
    // multi-queue. The switch must use each as it is and leave both behind.
    switch_ns.ip(&["tuntap", "add", "mode", "tap", "name", "sq1"]);
    switch_ns.ip(&["tuntap", "add", "mode", "tap", "name", "mq1", "multi_queue"]);
    let switch = SwitchProcess::start(
        &switch_ns.name,
        &[
            "--tap",
            "sq1",
            "--tap",
            "mq1",
            "--no-gateway",
            "--workers",
            "2",
        ]
        .map(String::from),
    );
    assert_eq!(
        lanes_of(&switch, "sq1"),
        1,
        "a single-queue TAP stays one lane"
    );
    assert_eq!(
        lanes_of(&switch, "mq1"),
        2,
        "a multi-queue TAP gets a queue per worker"
    );
    let hosts = tap_hosts(&switch_ns, &["sq1", "mq1"]);
    let h2 = std::net::Ipv4Addr::new(172, 17, 0, 3);
    assert_eq!(
        tapswitch_tests::traffic::ping(&hosts[0], h2, 3, Duration::from_secs(2)),
        3
    );
    assert!(switch.stop().success());
    for host in &hosts {
        let links = tapswitch_tests::netns::ip_output(&["-n", &host.name, "link", "show", "eth0"]);
        assert!(
            links.is_ok(),
            "a persistent TAP outlives the switch: {links:?}"
        );
    }
}

/// The scheduling policy of each worker thread of `pid` (0 ordinary, 1 FIFO).
fn worker_policies(pid: u32) -> Vec<u32> {
    worker_threads(pid).iter().map(|w| w.policy).collect()
}

#[test]
fn workers_are_real_time_while_light_unless_told_not_to() {
    require_root();
    let topo = Topology::veth_star(2);
    let started = Instant::now();
    let switch = SwitchProcess::start(&topo.switch_ns.name, &{
        let mut args = topo.iface_args();
        args.extend(["--workers", "2"].map(String::from));
        args
    });
    // Workers take the priority when they first look at the mode: within
    // 5 s of the start.
    let left = Duration::from_secs(5).saturating_sub(started.elapsed());
    assert!(
        within(left, || worker_policies(switch.pid()) == [1, 1]),
        "workers at SCHED_FIFO: {:?}",
        worker_policies(switch.pid())
    );
    let info = switch.info();
    assert_eq!(info["light_scheduling"], "real-time", "{info}");
    drop(switch);

    let switch = SwitchProcess::start(&topo.switch_ns.name, &{
        let mut args = topo.iface_args();
        args.extend(["--workers", "2", "--no-realtime"].map(String::from));
        args
    });
    std::thread::sleep(Duration::from_millis(200));
    let workers = worker_threads(switch.pid());
    let policies: Vec<u32> = workers.iter().map(|w| w.policy).collect();
    assert_eq!(policies, [0, 0], "--no-realtime");
    let info = switch.info();
    assert_eq!(info["light_scheduling"], "short-slices", "{info}");
    // Ordinary threads with the shortest time slice while traffic is light.
    if slices_granted_and_shown(&workers) {
        for worker in &workers {
            assert_eq!(worker.slice_ns, Some(100_000), "{}", worker.name);
        }
    } else {
        eprintln!("not checked: this kernel shows no time slices it grants (Linux 6.12+)");
    }
}

/// The policy of the worker that forwards the load (the one that used the
/// most CPU time since the look before, if any did) at every look, 50 ms
/// apart, taken while the switch read per port and had done so for 100 ms,
/// until `load` returns; at most 4 s. An idle worker keeps the priority it
/// had when it last woke, and is not looked at. Beside each, the workers
/// `tapswitch stats` counts as real-time for a conversation then.
fn forwarders_policies(switch: &SwitchProcess, load: impl FnOnce() + Send) -> Vec<(u32, u64)> {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            load();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let mut seen = Vec::new();
        let mut per_port_since = None;
        let mut before = worker_threads(switch.pid());
        let deadline = Instant::now() + Duration::from_secs(4);
        while !done.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now = worker_threads(switch.pid());
            let busiest = now
                .iter()
                .filter_map(|w| {
                    let was = before.iter().find(|b| b.name == w.name)?;
                    let used = w.cpu_ticks.checked_sub(was.cpu_ticks)?;
                    (used > 0).then_some((used, w.policy))
                })
                .max();
            before = now;
            let info = switch.info();
            if !info["reading"]
                .as_str()
                .unwrap_or_default()
                .starts_with("per port")
            {
                per_port_since = None;
                continue;
            }
            let since = *per_port_since.get_or_insert_with(Instant::now);
            if let Some((_, policy)) = busiest
                && since.elapsed() >= Duration::from_millis(100)
            {
                let conversing = info["conversing_now"].as_u64().expect("conversing_now");
                seen.push((policy, conversing));
            }
        }
        seen
    })
}

#[test]
fn under_load_a_tcp_stream_keeps_its_worker_real_time_and_a_udp_flood_does_not() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};
    require_root();
    let (switch_ns, switch, hosts) = tap_pair(&["--no-gateway", "--workers", "2"]);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    // A TCP stream h1 → h2 for 2 s: its acknowledgements come back through
    // the worker, a conversation (`affinity.rs`).
    let listener = h2.run(|| TcpListener::bind("172.17.0.3:5201").expect("listening in h2"));
    let mut sender = h1.run(|| TcpStream::connect("172.17.0.3:5201").expect("connecting"));
    let (mut receiver, _) = listener.accept().expect("accepting");
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(receiver.read(&mut buf), Ok(n) if n > 0) {}
    });
    let stream = forwarders_policies(&switch, || {
        let chunk = vec![0x5a; 1 << 16];
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            sender.write_all(&chunk).expect("streaming to h2");
        }
        drop(sender);
    });
    reader.join().unwrap();
    assert!(
        !stream.is_empty(),
        "a TCP stream never made the switch read per port"
    );
    assert!(
        stream.iter().any(|&(policy, _)| policy == 1),
        "the worker forwarding a TCP stream did not stay real-time (SCHED_FIFO 1) under \
         load: {stream:?}"
    );
    // `tapswitch stats` says so: "real-time kept for a conversation".
    assert!(
        stream
            .iter()
            .any(|&(policy, conversing)| policy == 1 && conversing == 1),
        "stats did not count the worker kept real-time: {stream:?}"
    );
    let control = switch.control.display().to_string();
    let stats = tapswitch_ok(&switch_ns, &["stats", "--control", &control]);
    let line = stats
        .lines()
        .find(|line| line.contains("real-time kept for a conversation: "))
        .unwrap_or_else(|| panic!("no conversation line in stats:\n{stats}"));
    assert!(
        line.ends_with("time(s) since the start") && !line.contains(" 0 time(s)"),
        "{line}"
    );

    // Calm again, then a flood h1 → h2 with nothing coming back.
    let calm = within(Duration::from_secs(5), || {
        reading(&switch).0.starts_with("per CPU")
    });
    assert!(calm, "still per port: {:?}", reading(&switch));
    let sink = h2.run(|| UdpSocket::bind("172.17.0.3:5202").expect("binding in h2"));
    sink.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while sink.recv(&mut buf).is_ok() {}
    });
    let flooder = h1.run(|| {
        let s = UdpSocket::bind("172.17.0.2:0").expect("binding in h1");
        s.connect("172.17.0.3:5202").expect("connecting in h1");
        s
    });
    let flood = forwarders_policies(&switch, || {
        let until = Instant::now() + Duration::from_secs(2);
        let payload = [0x33u8; 64];
        // At most 2 s and 2 million datagrams; a full queue only loses one.
        for _ in 0..2_000_000 {
            if Instant::now() >= until {
                break;
            }
            let _ = flooder.send(&payload);
        }
    });
    drain.join().unwrap();
    assert!(
        !flood.is_empty(),
        "a UDP flood never made the switch read per port"
    );
    assert!(
        flood.iter().all(|&sample| sample == (0, 0)),
        "the worker forwarding a flood stayed real-time, or stats counted a conversation \
         (policy, conversing): {flood:?}\n{}",
        switch.log()
    );
}

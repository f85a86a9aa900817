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
use tapswitch_tests::lane_order::{
    KeptBy, SHORT_SLICES, assert_once_and_in_order, moving_sender_keeps_its_order,
    one_cpu_per_lane, probe_number, reading, veth_cpus_for_a_moving_sender,
};
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
    let ports = switch.ports();
    let port = ports
        .as_array()
        .expect("a list of ports")
        .iter()
        .find(|p| p["name"] == port)
        .unwrap_or_else(|| panic!("no port {port} in {ports}"));
    port["lanes"].as_u64().expect("lanes")
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
    let deadline = Instant::now() + Duration::from_secs(5);
    while reading(switch).1 == changes_before {
        assert!(
            Instant::now() < deadline,
            "50,000 frames in {:?} made no worker busy enough to read per port",
            blasted
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while reading(switch).0 != "per CPU (traffic is light)" {
        assert!(
            Instant::now() < deadline,
            "the switch stayed in per-port reading: {:?}",
            reading(switch)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let deadline = Instant::now() + Duration::from_secs(5);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &{
        let mut args = topo.iface_args();
        args.extend(["--workers", "2"].map(String::from));
        args
    });
    // Workers take the priority when they first look at the mode.
    while worker_policies(switch.pid()) != [1, 1] {
        assert!(
            Instant::now() < deadline,
            "workers at SCHED_FIFO: {:?}",
            worker_policies(switch.pid())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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

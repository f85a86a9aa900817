//! Veth ports read in per-CPU lanes (a fanout group per port, one lane per
//! worker): every frame arrives once, a sender's frames keep their order,
//! the switch never reads back its own output, and heavy traffic switches
//! the reading per port and back. Needs root; CI runs it as root.
//!
//! ```text
//!   tl..(h1) eth0 ═══ p1 ┐
//!                        ├─ tapswitch serve --workers 2 (in tsw..)
//!   tl..(h2) eth0 ═══ p2 ┘
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tapswitch_tests::frames::{mac, probe};
use tapswitch_tests::traffic::Station;
use tapswitch_tests::{SwitchProcess, Topology, require_root};

const WINDOW: Duration = Duration::from_millis(150);
const PER_SENDER: u32 = 200;

/// A probe id that says which sender (round and CPU) sent it, and when.
fn probe_number(round: u32, cpu: usize, seq: u32) -> u32 {
    (round << 24) | ((cpu as u32) << 16) | seq
}

fn reading(switch: &SwitchProcess) -> (String, u64) {
    let info = switch.call(r#"{"cmd":"info"}"#).expect("info request");
    (
        info["reading"].as_str().unwrap_or_default().to_string(),
        info["reading_changes"].as_u64().unwrap_or_default(),
    )
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

/// Checks that `got` holds every id of `sent` exactly once and that each
/// sender's frames kept their order.
fn assert_once_and_in_order(sent: &[u32], got: &[u32], what: &str) {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for id in got {
        *counts.entry(*id).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: frames delivered twice: {twice:?}"
    );
    let missing: Vec<_> = sent.iter().filter(|id| !counts.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {} frames lost, e.g. {:x?}",
        missing.len(),
        sent.len(),
        &missing[..missing.len().min(5)]
    );
    let mut last: HashMap<u32, u32> = HashMap::new();
    for id in got {
        let sender = id >> 16;
        if let Some(before) = last.insert(sender, *id) {
            assert!(before < *id, "{what}: frame {id:#x} overtook {before:#x}");
        }
    }
}

#[test]
fn per_cpu_lanes_deliver_every_frame_once_in_order_and_step_aside_under_load() {
    require_root();
    let topo = Topology::veth_star(2);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &{
        let mut args = topo.iface_args();
        args.extend(["--no-gateway", "--workers", "2"].map(String::from));
        args
    });
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    let cpus = ports::cpu::allowed_cpus().expect("allowed CPUs");
    let stations: Vec<(usize, Station)> = cpus
        .iter()
        .map(|&cpu| (cpu, Station::open(&h1.ns, "eth0")))
        .collect();
    let mut s1 = Station::open(&h1.ns, "eth0");
    let mut s2 = Station::open(&h2.ns, "eth0");
    let a = mac("02:00:00:00:bb:01");
    let b = mac("02:00:00:00:bb:02");
    // Teach the switch where b lives, so a's frames are unicast to p2.
    s2.send(&probe([0xff; 6], b, 0, 60));
    std::thread::sleep(WINDOW);
    s1.drain();
    s2.drain();
    assert_eq!(reading(&switch).0, "per CPU (traffic is light)");

    let sent = send_from_every_cpu(&stations, 1, b, a);
    let got: Vec<u32> = s2
        .collect_probes(WINDOW)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_once_and_in_order(&sent, &got, "light traffic from every CPU");
    assert!(
        s1.collect_probes(WINDOW).is_empty(),
        "nothing comes back to the sender"
    );

    // Flat out from one thread: a worker gets busy and the switch reads
    // each port in one lane, then goes back once traffic is light again.
    let (_, changes_before) = reading(&switch);
    let blast: Vec<Vec<u8>> = (0..50_000u32)
        .map(|i| probe(b, a, 0xff00_0000 | i, 64))
        .collect();
    let started = Instant::now();
    for frame in &blast {
        // A full queue (ENOBUFS) only loses the frame: this part is about load.
        let _ = stations[0].1.try_send(frame);
    }
    let (_, changes_during) = reading(&switch);
    assert!(
        changes_during > changes_before,
        "50,000 frames in {:?} made no worker busy enough to read per port",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while reading(&switch).0 != "per CPU (traffic is light)" {
        assert!(
            Instant::now() < deadline,
            "the switch stayed in per-port reading: {:?}",
            reading(&switch)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s2.collect(WINDOW);
    s1.drain();

    let sent = send_from_every_cpu(&stations, 2, b, a);
    let got: Vec<u32> = s2
        .collect_probes(WINDOW)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_once_and_in_order(&sent, &got, "light traffic after the load");
    assert!(
        s1.collect_probes(WINDOW).is_empty(),
        "nothing comes back to the sender"
    );
}

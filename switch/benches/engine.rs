//! Micro-benchmarks of the MAC table and the forwarding decision:
//! `cargo bench -p switch --bench engine`.
//!
//! Each case runs a fixed number of operations several times and reports
//! the best time per operation (the minimum is the least disturbed by other
//! load on a shared machine) and operations per second. No dependency: the
//! cases are small enough that a loop and `black_box` measure them well.

use std::hint::black_box;
use std::time::{Duration, Instant as WallClock};

use switch::{Engine, Instant, MacAddr, MacTable, PortId, TableConfig};

const ROUNDS: usize = 7;

fn main() {
    println!("{:<52} {:>10} {:>14}", "case", "ns/op", "ops/s");
    table_cases();
    engine_cases();
}

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
}

fn frame(dst: MacAddr, src: MacAddr) -> [u8; 64] {
    let mut f = [0u8; 64];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

/// Runs `op` `n` times per round and prints the best round.
fn report(name: &str, n: u64, mut op: impl FnMut(u64)) {
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        let started = WallClock::now();
        for i in 0..n {
            op(i);
        }
        best = best.min(started.elapsed());
    }
    let ns = best.as_nanos() as f64 / n as f64;
    println!("{name:<52} {ns:>10.1} {:>14.0}", 1e9 / ns);
}

fn table_cases() {
    const HOSTS: u32 = 1_000;
    let table = MacTable::new(TableConfig::default());
    for h in 0..HOSTS {
        table.learn(mac(h), PortId(1 + h % 8), Instant::ZERO);
    }
    let view = table.view();
    report(
        "mac table: lookup of a known host (1000 hosts)",
        2_000_000,
        |i| {
            black_box(view.lookup(mac(i as u32 % HOSTS), Instant::ZERO));
        },
    );
    drop(view);
    let mut view = table.view();
    report(
        "mac table: learn, known host, same port (refresh)",
        2_000_000,
        |i| {
            let h = i as u32 % HOSTS;
            black_box(view.learn(mac(h), PortId(1 + h % 8), Instant::from_nanos(i)));
        },
    );
    drop(view);

    // A full table that keeps learning new addresses: every learn evicts.
    let full = MacTable::new(TableConfig {
        capacity: 8_192,
        ..TableConfig::default()
    });
    report(
        "mac table: learn a new host into a full 8192 table",
        200_000,
        |i| {
            black_box(full.learn(
                mac(10_000_000 + i as u32),
                PortId(1 + (i % 8) as u32),
                Instant::from_nanos(i),
            ));
        },
    );
}

fn engine_cases() {
    let engine = Engine::new(TableConfig::default());
    let hosts: Vec<MacAddr> = (0..64).map(mac).collect();
    for (i, h) in hosts.iter().enumerate() {
        engine.handle_frame(
            Instant::ZERO,
            PortId(1 + i as u32 % 8),
            &frame(MacAddr::BROADCAST, *h),
        );
    }
    let unicast: Vec<([u8; 64], PortId)> = (0..64)
        .map(|i| {
            let (src, dst) = (hosts[i], hosts[(i + 7) % 64]);
            (frame(dst, src), PortId(1 + i as u32 % 8))
        })
        .collect();
    let mut session = engine.session();
    report(
        "decision: known unicast (64 hosts, one session)",
        5_000_000,
        |i| {
            let (f, port) = &unicast[(i % 64) as usize];
            black_box(session.handle_frame(Instant::from_nanos(i), *port, f));
        },
    );
    let broadcast: Vec<[u8; 64]> = hosts
        .iter()
        .map(|h| frame(MacAddr::BROADCAST, *h))
        .collect();
    report("decision: broadcast", 5_000_000, |i| {
        let idx = (i % 64) as usize;
        black_box(session.handle_frame(
            Instant::from_nanos(i),
            PortId(1 + idx as u32 % 8),
            &broadcast[idx],
        ));
    });
    drop(session);
    report(
        "decision: known unicast, a new session per frame",
        2_000_000,
        |i| {
            let (f, port) = &unicast[(i % 64) as usize];
            black_box(engine.handle_frame(Instant::from_nanos(i), *port, f));
        },
    );
}

//! Replay is also the engine's benchmark.
//!
//! `cargo bench -p tools --bench replay` generates a capture of 1,000,000
//! 64-byte frames over 8 ports (`tapswitch pcap generate`: 85% unicast,
//! 10% broadcast, 4% unknown unicast, 1% from new addresses, so the table
//! fills and evicts) and reports frames per second for:
//!
//! - `replay` end to end: reading the 8 files, merging them, forwarding
//!   through the fabric, writing the 8 outputs (with and without the gateway);
//! - the forwarding decision alone (`Session::handle_frame` on frames in
//!   memory).
//!
//! Each figure is the best of several runs, against the wall clock and
//! against the CPU time of the thread (which other load on a shared machine
//! does not inflate). `TAPSWITCH_BENCH_FRAMES=N` changes the count.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as WallClock};

use clap::Parser;
use ports::capture::PcapReader;
use switch::{Engine, Instant, PortId, TableConfig};
use tools::lab::replay::{self, ReplayArgs};
use tools::pcap_cmd;

const PORTS: usize = 8;
const RUNS: usize = 5;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ReplayArgs,
}

fn main() {
    let frames: usize = std::env::var("TAPSWITCH_BENCH_FRAMES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("tapswitch-bench-{}", std::process::id()));
    let _cleanup = Cleanup(dir.clone());
    let inputs = dir.join("in");
    fs::create_dir_all(&inputs).unwrap();
    let files = pcap_cmd::generate(frames, PORTS, 1).unwrap();
    let mut paths = Vec::new();
    for (i, bytes) in files.iter().enumerate() {
        let path = inputs.join(format!("p{}.pcap", i + 1));
        fs::write(&path, bytes).unwrap();
        paths.push(path);
    }
    println!("{frames} frames of 64 bytes over {PORTS} ports, best of {RUNS} runs");
    println!("{:<44} {:>14} {:>14}", "", "frames/s wall", "frames/s cpu");

    for (label, gateway) in [
        ("replay end to end, --no-gateway", false),
        ("replay end to end, with the gateway", true),
    ] {
        let out = dir.join("out");
        // Into an empty directory each time: on ext4, renaming a file over
        // an existing one (a rerun into the same DIR) also forces the new
        // file's data to disk, which measures the disk, not the switch.
        let (wall, cpu) = best_of(
            || {
                let _ = fs::remove_dir_all(&out);
            },
            || replay_once(&paths, &out, gateway),
        );
        report(label, frames, wall, cpu);
    }

    let decisions = load(&paths);
    let (wall, cpu) = best_of(
        || {},
        || {
            let engine = Engine::new(TableConfig::default());
            let mut session = engine.session();
            for (port, at, frame) in &decisions {
                black_box(session.handle_frame(*at, *port, frame));
            }
        },
    );
    report("forwarding decision alone", decisions.len(), wall, cpu);
}

fn replay_once(paths: &[PathBuf], out: &Path, gateway: bool) {
    let mut args: Vec<String> = vec!["replay".into()];
    for (i, path) in paths.iter().enumerate() {
        args.push("--port".into());
        args.push(format!("p{}={}", i + 1, path.display()));
    }
    args.extend(["--out".into(), out.display().to_string()]);
    if !gateway {
        args.push("--no-gateway".into());
    }
    let cli = Cli::try_parse_from(args).unwrap();
    replay::run_to(
        cli.args,
        replay::Streams {
            out: Box::new(io::sink()),
            err: Box::new(io::sink()),
            progress: false,
        },
    )
    .unwrap();
}

/// Every frame with its port and time, in the order replay takes them.
fn load(paths: &[PathBuf]) -> Vec<(PortId, Instant, Vec<u8>)> {
    let mut all = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let mut reader = PcapReader::new(BufReader::new(File::open(path).unwrap())).unwrap();
        while let Some(frame) = reader.next_frame().unwrap() {
            all.push((
                PortId(i as u32 + 1),
                Instant::from_nanos(frame.timestamp_ns),
                frame.data.to_vec(),
            ));
        }
    }
    all.sort_by_key(|(port, at, _)| (*at, *port));
    all
}

/// The best wall-clock and CPU times of `RUNS` runs of `f`, each after an
/// untimed `setup`.
fn best_of(mut setup: impl FnMut(), mut f: impl FnMut()) -> (Duration, Duration) {
    let mut best = (Duration::MAX, Duration::MAX);
    for _ in 0..RUNS {
        setup();
        let (wall0, cpu0) = (WallClock::now(), thread_cpu_time());
        f();
        let (wall, cpu) = (wall0.elapsed(), thread_cpu_time() - cpu0);
        best = (best.0.min(wall), best.1.min(cpu));
    }
    best
}

fn report(label: &str, frames: usize, wall: Duration, cpu: Duration) {
    let rate = |d: Duration| frames as f64 / d.as_secs_f64();
    println!("{label:<44} {:>14.0} {:>14.0}", rate(wall), rate(cpu));
}

/// This thread's time on a CPU, from the scheduler (nanoseconds).
fn thread_cpu_time() -> Duration {
    let stat = fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let nanos = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(nanos)
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

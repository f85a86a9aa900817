//! A worker stalled in the middle of its work is not a busy worker
//! (`switch/src/dataplane/affinity.rs`, the load meter). With only pings
//! flowing, a thread of higher real-time priority than the workers takes
//! each CPU for milliseconds at a time, as the host does to a virtual
//! machine's CPU (steal); the switch must keep reading per CPU. Counted as
//! work, one such stall inside a forward made a 20-ms window busy, and the
//! switch went to reading by port for 200 ms or more (10–22 times in 15 s
//! in the measurement in docs/PERFORMANCE.md, "A stalled worker is not a
//! busy one").

use std::process::{Child, Command, Stdio};

use tapswitch_tests::{SwitchProcess, require_root, tap_pair};

/// A process that keeps CPU `cpu` for stretches of several milliseconds
/// at SCHED_FIFO 2, one above the workers' priority, with pauses between
/// them; killed (by its PID) on drop.
struct Staller {
    child: Child,
}

impl Staller {
    fn start(cpu: usize) -> Staller {
        // A plain shell count is a few milliseconds of CPU; `sleep` leaves
        // the CPU for about as long.
        let burst =
            "while :; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.01; done";
        let child = Command::new("chrt")
            .args([
                "-f",
                "2",
                "taskset",
                "-c",
                &cpu.to_string(),
                "sh",
                "-c",
                burst,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("running chrt (util-linux)");
        Staller { child }
    }
}

impl Drop for Staller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reading_changes(switch: &SwitchProcess) -> u64 {
    let info = switch.info();
    info["reading_changes"]
        .as_u64()
        .expect("reading_changes in info")
}

#[test]
fn pings_keep_the_switch_reading_per_cpu_while_its_workers_are_stalled() {
    require_root();
    let (_switch_ns, switch, hosts) = tap_pair(&["--no-gateway", "--workers", "2"]);
    let warm = hosts[0].exec(
        "ping",
        &["-n", "-q", "-c", "20", "-i", "0.01", "172.17.0.3"],
    );
    assert!(warm.status.success(), "ping before the stalls: {warm:?}");
    let before = reading_changes(&switch);
    let cpus = ports::cpu::allowed_cpus().expect("allowed CPUs");
    let stallers: Vec<Staller> = cpus.iter().map(|&cpu| Staller::start(cpu)).collect();
    // 2,000 pings at 2 ms, a forward of about 12 µs each; bounded by -w.
    // Counted as work, the stalls changed the mode 10–41 times in five
    // such runs; fewer pings let it slip through.
    let pings = hosts[0].exec(
        "ping",
        &[
            "-n",
            "-q",
            "-c",
            "2000",
            "-i",
            "0.002",
            "-w",
            "30",
            "172.17.0.3",
        ],
    );
    drop(stallers);
    assert!(pings.status.success(), "pings during the stalls: {pings:?}");
    let changes = reading_changes(&switch) - before;
    assert_eq!(
        changes, 0,
        "the switch changed how it reads its ports {changes} time(s) with only pings flowing"
    );
}

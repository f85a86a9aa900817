//! Idle ports cost nothing per batch and nothing at a mode change: the
//! work is counted through test doubles (what the kernel is told, reads
//! and drop counts asked of each lane), never timed.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A lane that counts what is asked of it.
#[derive(Debug)]
struct CountingRx {
    inner: MemoryRx,
    counts: Arc<LaneCounts>,
}

#[derive(Debug, Default)]
struct LaneCounts {
    reads: AtomicUsize,
    drop_polls: AtomicUsize,
    settles: AtomicUsize,
    /// Sweeps for which the lane's ledger stays behind.
    behind_for: AtomicUsize,
}

impl PortRx for CountingRx {
    fn recv_batch(&mut self, batch: &mut RxBatch) -> Result<usize, RxError> {
        self.counts.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.recv_batch(batch)
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.raw_fd()
    }

    fn take_kernel_drops(&mut self) -> u64 {
        self.counts.drop_polls.fetch_add(1, Ordering::Relaxed);
        0
    }

    fn settle(&mut self, _now: std::time::Instant) -> Option<u64> {
        self.counts.settles.fetch_add(1, Ordering::Relaxed);
        let behind = self.counts.behind_for.load(Ordering::Relaxed);
        if behind == 0 {
            return None;
        }
        self.counts.behind_for.store(behind - 1, Ordering::Relaxed);
        Some(if behind == 1 { 3 } else { 0 })
    }
}

/// A port of two lanes whose reads, drop counts and steering are counted.
struct CountedPort {
    lanes: MemoryLanes,
    counts: Vec<Arc<LaneCounts>>,
}

impl CountedPort {
    fn new() -> Self {
        CountedPort {
            lanes: MemoryLanes::new(2),
            counts: vec![Arc::default(), Arc::default()],
        }
    }

    fn opener(&self) -> impl FnOnce(usize) -> Result<OpenedPort, PortError> + use<> {
        self.lanes
            .opener_wrapped(self.counts.clone(), |inner, counts| {
                Box::new(CountingRx { inner, counts })
            })
    }

    fn steered(&self) -> Vec<(ReadMode, usize)> {
        self.lanes.steering.calls.lock().unwrap().clone()
    }

    fn reads(&self) -> usize {
        self.counts
            .iter()
            .map(|c| c.reads.load(Ordering::Relaxed))
            .sum()
    }

    fn drop_polls(&self) -> usize {
        self.counts
            .iter()
            .map(|c| c.drop_polls.load(Ordering::Relaxed))
            .sum()
    }

    fn settles(&self) -> usize {
        self.counts
            .iter()
            .map(|c| c.settles.load(Ordering::Relaxed))
            .sum()
    }
}

const IDLE: usize = 62;

/// Reads of an idle port of two lanes at registration: each worker reads
/// its lane, and the worker whose lane is not the solo lane first hands
/// the port over (it reads the solo lane: frames queued before the port's
/// first steering are older).
const REGISTRATION_READS: usize = 3;

/// A switch of two workers with busy port `a` (2 lanes), `b` (one lane,
/// where HOST_B lives) and [`IDLE`] idle ports of two lanes, each read
/// at registration.
fn switch_with_idle_ports() -> (Dataplane, CountedPort, MemoryLanes, Vec<CountedPort>) {
    let dp = start_with_mode_changed_by_test(2);
    // The test makes every mode change itself, so it can count them.
    let (a, b) = (CountedPort::new(), MemoryLanes::new(1));
    dp.add_port("a", a.opener()).unwrap();
    dp.add_port("b", b.opener()).unwrap();
    let idle: Vec<CountedPort> = (0..IDLE).map(|_| CountedPort::new()).collect();
    for (i, port) in idle.iter().enumerate() {
        dp.add_port(&format!("idle{i}"), port.opener()).unwrap();
    }
    wait_for("every idle lane looked at at registration", || {
        idle.iter().all(|p| p.reads() == REGISTRATION_READS)
    });
    learn_b(&dp, &a.lanes, &b);
    (dp, a, b, idle)
}

/// Sends `n` frames from HOST_A (on `a`, from CPU `cpu`) to HOST_B and
/// waits until `b` got them all.
fn a_to_b(a: &CountedPort, b: &MemoryLanes, cpu: usize, n: u32) {
    for seq in 0..n {
        a.lanes.inject_from_cpu(cpu, &frame(HOST_B, HOST_A, seq));
    }
    let mut got = Vec::new();
    wait_for("the frames at b", || collect(&b.tx, &mut got) >= n as usize);
}

#[test]
fn a_mode_change_steers_and_reads_only_the_ports_read_since_the_last_one() {
    let (dp, a, b, idle) = switch_with_idle_ports();
    for (change, busy) in [true, false, true, false].into_iter().enumerate() {
        a_to_b(&a, &b, change, 200);
        dp.shared.worker_load_changed(busy);
        let mode = if busy {
            ReadMode::ByPort
        } else {
            ReadMode::ByCpu
        };
        // Steered by the housekeeping thread, once when added, once per
        // change.
        wait_for("a steered anew", || a.steered().len() >= change + 2);
        assert_eq!(
            a.steered().last().map(|s| s.0),
            Some(mode),
            "change {change}"
        );
        assert_eq!(
            a.steered().len(),
            change + 2,
            "once when added, once per change"
        );
    }
    a_to_b(&a, &b, 0, 200);
    assert_eq!(dp.metrics().reading_changes, 4);
    for (i, port) in idle.iter().enumerate() {
        assert_eq!(
            port.steered(),
            [(ReadMode::ByCpu, port.steered()[0].1)],
            "idle{i}: only when added"
        );
        assert_eq!(
            port.reads(),
            REGISTRATION_READS,
            "idle{i}: no lane read but at registration"
        );
        assert_eq!(port.drop_polls(), 0, "idle{i}: no drop count asked");
    }
    dp.shutdown();
}

#[test]
fn an_idle_port_that_wakes_up_follows_the_mode_and_keeps_its_order() {
    let (dp, a, b, idle) = switch_with_idle_ports();
    a_to_b(&a, &b, 0, 10);
    dp.shared.worker_load_changed(true);
    let waking = &idle[7];
    assert_eq!(waking.steered().len(), 1, "not steered while idle");
    // Its frames still go by CPU until it follows; from a sender on one
    // CPU they arrive once and in order, before and after it follows.
    const N: u32 = 2000;
    for seq in 0..N {
        waking.lanes.inject_from_cpu(1, &frame(HOST_B, HOST_A, seq));
    }
    let mut got = Vec::new();
    wait_for("every frame at b", || {
        collect(&b.tx, &mut got) >= N as usize
    });
    assert_in_order(&got, N, "a port that woke up");
    wait_for("the port follows", || waking.steered().len() == 2);
    assert_eq!(waking.steered()[1].0, ReadMode::ByPort);
    assert_eq!(
        dp.metrics().reading_changes,
        1,
        "following is not a mode change"
    );
    for (i, port) in idle.iter().enumerate().filter(|(i, _)| *i != 7) {
        assert_eq!(port.steered().len(), 1, "idle{i}");
    }
    dp.shutdown();
}

#[test]
fn only_lanes_read_since_the_last_sweep_are_asked_for_kernel_drops() {
    let (dp, a, b, idle) = switch_with_idle_ports();
    a_to_b(&a, &b, 0, 100);
    // The housekeeping thread sweeps every second too: whoever comes first.
    housekeeping::sweep_lanes(&dp.shared, Instant::now());
    let asked = a.drop_polls();
    assert!(asked >= 1, "a's lane was read: its drops are counted");
    housekeeping::sweep_lanes(&dp.shared, Instant::now());
    housekeeping::sweep_lanes(&dp.shared, Instant::now());
    assert_eq!(a.drop_polls(), asked, "not read since: not asked again");
    a_to_b(&a, &b, 0, 100);
    housekeeping::sweep_lanes(&dp.shared, Instant::now());
    assert!(a.drop_polls() > asked, "read again: asked again");
    assert!(
        idle.iter().all(|p| p.drop_polls() == 0),
        "idle lanes are never asked"
    );
    dp.shutdown();
}

#[test]
fn idle_lanes_in_step_are_looked_at_once_and_a_lane_behind_until_it_is_settled() {
    let (dp, a, b, idle) = switch_with_idle_ports();
    // New lanes may be behind (their opening threw frames away): each is
    // looked at once. (The housekeeping thread sweeps too: at least once.)
    housekeeping::sweep_lanes(&dp.shared, Instant::now());
    let first: Vec<usize> = idle.iter().map(CountedPort::settles).collect();
    assert!(first.iter().all(|&n| n >= 2), "two lanes each: {first:?}");
    housekeeping::sweep_lanes(&dp.shared, Instant::now());
    housekeeping::sweep_lanes(&dp.shared, Instant::now());
    let later: Vec<usize> = idle.iter().map(CountedPort::settles).collect();
    assert_eq!(later, first, "in step and not read: never again");
    // A lane found behind is asked again at every sweep, read or not,
    // until its count is settled; then no more.
    idle[3].counts[0].behind_for.store(3, Ordering::Relaxed);
    a_to_b(&a, &b, 0, 1);
    let before = idle[3].settles();
    housekeeping::sweep_lanes(&dp.shared, Instant::now());
    assert_eq!(idle[3].settles(), before, "not read, not known behind");
    // Read once (a frame to it would do; the test marks the lane as read).
    dp.shared.lanes_by_port()[&PortId(3 + 3)].lanes[0].note_read();
    let behind = || idle[3].counts[0].behind_for.load(Ordering::Relaxed);
    for _ in 0..3 {
        let asked = idle[3].settles();
        housekeeping::sweep_lanes(&dp.shared, Instant::now());
        assert!(
            behind() == 0 || idle[3].settles() > asked,
            "behind: asked at every sweep"
        );
    }
    assert_eq!(behind(), 0, "settled at the third sweep");
    let settled = idle[3].settles();
    housekeeping::sweep_lanes(&dp.shared, Instant::now());
    housekeeping::sweep_lanes(&dp.shared, Instant::now());
    assert_eq!(idle[3].settles(), settled, "settled: left alone");
    dp.shutdown();
}

#[test]
fn each_port_says_how_it_is_read_and_an_idle_one_that_it_lags() {
    let (dp, a, b, idle) = switch_with_idle_ports();
    let (a_id, b_id, idle_id) = (PortId(1), PortId(2), PortId(3));
    let per_cpu = PortReading {
        mode: ReadMode::ByCpu,
        worker: None,
        lags: false,
        ledger: false,
        arrival_order: false,
    };
    assert_eq!(dp.reading_of(a_id), Some(per_cpu));
    assert_eq!(dp.reading_of(b_id), None, "one lane: nothing to say");
    a_to_b(&a, &b, 0, 10);
    dp.shared.worker_load_changed(true);
    wait_for("a steered by port", || a.steered().len() >= 2);
    let reading = dp.reading_of(a_id).expect("a has lanes");
    assert_eq!(reading.mode, ReadMode::ByPort);
    assert!(!reading.lags);
    let solo = a.steered().last().unwrap().1;
    assert_eq!(reading.worker, Some(solo), "lane i is worker i's");
    assert_eq!(
        dp.reading_of(idle_id),
        Some(PortReading {
            lags: true,
            ..per_cpu
        }),
        "idle: still per CPU until it delivers frames"
    );
    assert_eq!(idle[0].steered().len(), 1);
    dp.shutdown();
}

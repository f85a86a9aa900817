//! Lanes watched level-triggered (TAP queues, packet sockets): while a
//! port is read by CPU a read takes one frame and epoll reports the rest;
//! read by port, a read goes until the lane is empty. Reads are counted
//! through a test double, never timed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ports::ReadDepth;

use super::*;

/// A memory lane that says it may be watched level-triggered (its eventfd
/// is readable exactly while frames wait, as a TAP queue polls) and takes
/// one frame when a read asks for one, as a TAP does.
#[derive(Debug)]
struct LevelRx {
    inner: MemoryRx,
    one: RxBatch,
    counts: Arc<DepthCounts>,
}

/// Frames read one at a time, and frames read by reads that went until
/// the lane was empty.
#[derive(Debug, Default)]
struct DepthCounts {
    one_frame: AtomicUsize,
    until_empty: AtomicUsize,
}

impl DepthCounts {
    fn get(&self) -> (usize, usize) {
        (
            self.one_frame.load(Ordering::SeqCst),
            self.until_empty.load(Ordering::SeqCst),
        )
    }
}

impl PortRx for LevelRx {
    fn recv_batch(&mut self, batch: &mut RxBatch) -> Result<usize, RxError> {
        match batch.depth() {
            ReadDepth::OneFrame => {
                let n = self.inner.recv_batch(&mut self.one)?;
                batch.clear();
                for i in 0..n {
                    let (vnet, frame) = self.one.get(i);
                    assert!(batch.push(*vnet, frame));
                }
                self.counts.one_frame.fetch_add(n, Ordering::SeqCst);
                Ok(n)
            }
            ReadDepth::UntilEmpty => {
                let n = self.inner.recv_batch(batch)?;
                self.counts.until_empty.fetch_add(n, Ordering::SeqCst);
                Ok(n)
            }
        }
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.raw_fd()
    }

    fn level_triggered(&self) -> bool {
        true
    }
}

/// A port of two such lanes.
struct LevelPort {
    lanes: MemoryLanes,
    counts: Vec<Arc<DepthCounts>>,
}

impl LevelPort {
    fn new() -> Self {
        LevelPort {
            lanes: MemoryLanes::new(2),
            counts: vec![Arc::default(), Arc::default()],
        }
    }

    fn opener(&self) -> impl FnOnce(usize) -> Result<OpenedPort, PortError> + use<> {
        self.lanes
            .opener_wrapped(self.counts.clone(), |inner, counts| {
                Box::new(LevelRx {
                    inner,
                    one: RxBatch::new(1, 2048),
                    counts,
                })
            })
    }

    /// Frames read one at a time and until empty, over both lanes.
    fn reads(&self) -> (usize, usize) {
        self.counts
            .iter()
            .map(|c| c.get())
            .fold((0, 0), |sum, c| (sum.0 + c.0, sum.1 + c.1))
    }
}

/// Lands `n` frames from HOST_A to HOST_B in the lane of `a` that `lane`
/// is, all at once (its reader is kept out meanwhile), and waits until `b`
/// got them, in order.
fn burst(
    dp: &Dataplane,
    a: &LevelPort,
    pa: PortId,
    b: &MemoryLanes,
    lane: usize,
    cpu: usize,
    n: u32,
) {
    {
        let lanes = dp.shared.lanes_by_port();
        let _reader_kept_out = lanes.get(&pa).expect("port a").lanes[lane].lock();
        for seq in 0..n {
            a.lanes.inject_from_cpu(cpu, &frame(HOST_B, HOST_A, seq));
        }
    }
    let mut got = Vec::new();
    wait_for("the burst at b", || collect(&b.tx, &mut got) >= n as usize);
    assert_in_order(&got, n, "a burst");
}

#[test]
fn a_level_triggered_lane_is_read_a_frame_first_while_light_and_dry_under_load() {
    let dp = start_with_mode_changed_by_test(2);
    // The test makes the mode change itself.
    let (a, b) = (LevelPort::new(), MemoryLanes::new(1));
    let pa = dp.add_port("a", a.opener()).unwrap();
    dp.add_port("b", b.opener()).unwrap();
    assert_eq!(dp.metrics().reading, ReadMode::ByCpu);
    learn_b(&dp, &a.lanes, &b);

    // The port's first steering is handed over by a read of lane 0 that
    // finds it empty (such a read goes until empty): one frame through it.
    let lanes = dp.shared.lanes_by_port();
    let steering = lanes.get(&pa).expect("port a").steering.clone();
    for _ in 0..100 {
        if steering.pending().is_none() {
            break;
        }
        burst(&dp, &a, pa, &b, 0, 0, 1);
    }
    assert!(steering.pending().is_none(), "first steering handed over");

    // Read by CPU: a burst waiting in one lane at once is read a frame
    // first, and epoll, watching level-triggered, reports the lane again
    // (edge-triggered, the burst would stay there after the first frame).
    // Whether the rest comes a frame at a time or in a batch depends on
    // how long the worker's poll took (see the next test).
    const N: u32 = 20;
    let before = a.reads();
    burst(&dp, &a, pa, &b, 0, 0, N);
    let light = a.reads();
    let (one, until_empty) = (light.0 - before.0, light.1 - before.1);
    assert!(
        one >= 1 && one + until_empty == N as usize,
        "while light: {one} frames one at a time, {until_empty} until empty"
    );

    // Read by port: batches again, until the lane is empty.
    dp.shared.worker_load_changed(true);
    wait_for("a steered by port", || {
        a.lanes.steering.now.lock().unwrap().map(|s| s.0) == Some(ReadMode::ByPort)
    });
    let (_, solo) = a.lanes.steering.now.lock().unwrap().expect("steered");
    burst(&dp, &a, pa, &b, solo, 0, N);
    let heavy = a.reads();
    assert_eq!(
        (heavy.0 - light.0, heavy.1 - light.1),
        (0, N as usize),
        "(one frame per read, until empty) under load"
    );
    dp.shutdown();
}

/// One level-triggered lane of a port read by CPU, read by a
/// `LaneReader` the test drives, and the frames each read took.
struct OneLevelLane {
    mode: ModeSwitch,
    lanes: LanesByPort,
    rx: MemoryRx,
    counts: Arc<DepthCounts>,
}

impl OneLevelLane {
    fn new() -> Self {
        let (rx, tx) = memory_port(1500, false);
        let handle = port_one_handle(tx);
        let counts = Arc::<DepthCounts>::default();
        let level = LevelRx {
            inner: rx.clone(),
            one: RxBatch::new(1, 2048),
            counts: counts.clone(),
        };
        let lane = Arc::new(Lane::new(handle, 0, Box::new(level)));
        let port = PortLanes::new(0, vec![lane], None);
        OneLevelLane {
            mode: ModeSwitch::new(1),
            lanes: [(PortId(1), port)].into_iter().collect(),
            rx,
            counts,
        }
    }

    fn inject(&self, seqs: std::ops::Range<u32>) {
        for seq in seqs {
            self.rx
                .inject(VnetHdr::default(), &frame(HOST_B, HOST_A, seq));
        }
    }

    /// One read by `reader`: the frames it took, and how many of them it
    /// took one at a time and until empty.
    fn read(&self, reader: &mut LaneReader) -> (Vec<u32>, (usize, usize)) {
        let before = self.counts.get();
        let mut seen = Vec::new();
        let mut forward = |_: &Arc<PortHandle>, batch: &mut RxBatch, n: usize, _note: bool| {
            seen.extend((0..n).map(|i| seq_of(batch.get(i).1)));
            None
        };
        let lane = self.lanes[&PortId(1)].lanes[0].clone();
        if let HomeRead::Failed(err) =
            reader.read_home(&self.mode, &self.lanes, &lane, &mut forward)
        {
            panic!("{err}");
        }
        let after = self.counts.get();
        (seen, (after.0 - before.0, after.1 - before.1))
    }
}

#[test]
fn the_rest_of_a_burst_is_read_until_empty_unless_the_worker_slept_in_between() {
    let lane = OneLevelLane::new();
    assert!(lane.mode.by_cpu(), "light traffic");
    let mut reader = LaneReader::new(0);
    let no_sleep = Duration::ZERO;
    let slept = Duration::from_millis(2);

    // A lone frame after a sleep: one frame, no read that finds the lane
    // empty.
    reader.woke(slept);
    lane.inject(0..1);
    assert_eq!(lane.read(&mut reader), (vec![0], (1, 0)));

    // A burst of three: one frame; epoll reports the lane again at once
    // (the poll did not sleep), so the rest is read in one batch.
    reader.woke(slept);
    lane.inject(1..4);
    assert_eq!(lane.read(&mut reader), (vec![1], (1, 0)));
    reader.woke(no_sleep);
    assert_eq!(lane.read(&mut reader), (vec![2, 3], (0, 2)));

    // After a sleep a frame is read alone again, even right after a burst.
    reader.woke(slept);
    lane.inject(4..6);
    assert_eq!(lane.read(&mut reader), (vec![4], (1, 0)));

    // A poll that did not sleep reads until empty only lanes that a
    // one-frame read found a frame in just before it: the lane's last read
    // was this batch, so its next frame is read alone again.
    reader.woke(no_sleep);
    assert_eq!(lane.read(&mut reader), (vec![5], (0, 1)));
    reader.woke(no_sleep);
    lane.inject(6..7);
    assert_eq!(lane.read(&mut reader), (vec![6], (1, 0)));
}

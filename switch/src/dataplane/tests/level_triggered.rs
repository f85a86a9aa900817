//! Lanes watched level-triggered (TAP queues, packet sockets): while a
//! port is read by CPU a read takes one frame and epoll reports the rest;
//! read by port, a read goes until the lane is empty. Reads are counted
//! through a test double, never timed.

use std::sync::atomic::{AtomicUsize, Ordering};

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
fn a_level_triggered_lane_is_read_a_frame_at_a_time_while_light_and_dry_under_load() {
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
    // per read, and epoll, watching level-triggered, reports the lane
    // again until it is empty (edge-triggered, the burst would stay
    // there after the first frame).
    const N: u32 = 20;
    let before = a.reads();
    burst(&dp, &a, pa, &b, 0, 0, N);
    let light = a.reads();
    assert_eq!(
        (light.0 - before.0, light.1 - before.1),
        (N as usize, 0),
        "(one frame per read, until empty) while light"
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

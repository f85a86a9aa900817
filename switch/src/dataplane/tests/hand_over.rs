//! The hand-over, step by step: a port of two lanes read by `LaneReader`s
//! the test drives itself, its kernel played by [`RecordedSteering`]. Where
//! the order of two threads matters, the test pauses one at the exact
//! point (a reader about to read, a steering half done) and looks at what
//! the other does then; nothing is timed. Last, a sender's order across
//! many mode changes in a running dataplane.

use super::*;
use crate::dataplane::steering::tests::changed_at;

/// A closure a test has a lane run when a reader is about to read it.
type Hook = Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>>;

/// A memory lane that runs its [`Hook`] (once) at the start of a read:
/// after the reader looked at the port's steering, before it takes frames.
struct HookedRx {
    inner: MemoryRx,
    hook: Hook,
}

impl std::fmt::Debug for HookedRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedRx").finish_non_exhaustive()
    }
}

impl PortRx for HookedRx {
    fn recv_batch(&mut self, batch: &mut RxBatch) -> Result<usize, RxError> {
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
        self.inner.recv_batch(batch)
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.raw_fd()
    }
}

/// Where a sender's frames land: the kernel's side of the port.
#[derive(Clone)]
struct Kernel {
    steering: Arc<RecordedSteering>,
    rx: Vec<MemoryRx>,
}

impl Kernel {
    /// Frames `seqs`, sent on CPU `cpu`, land where the port is steered.
    fn send(&self, cpu: usize, seqs: std::ops::Range<u32>) {
        for seq in seqs {
            self.steering
                .land(cpu, &self.rx, &frame(HOST_B, HOST_A, seq));
        }
    }
}

/// Port 1 with lanes 0 (home: worker 0) and 1 (worker 1), steered.
struct TwoLanes {
    mode: ModeSwitch,
    lanes: LanesByPort,
    rx: Vec<MemoryRx>,
    kernel: Kernel,
    hooks: Vec<Hook>,
}

impl TwoLanes {
    /// `solo` is the lane that gets every frame while reading by port. The
    /// port is steered by CPU, as when added, and handed over (both lanes
    /// read once, as at registration).
    fn new(solo: usize) -> Self {
        let (rx0, tx) = memory_port(1500, false);
        let rx1 = memory_port(1500, false).0;
        let handle = port_one_handle(tx);
        let hooks: Vec<Hook> = vec![Arc::default(), Arc::default()];
        let lanes = [rx0.clone(), rx1.clone()]
            .into_iter()
            .zip(&hooks)
            .enumerate()
            .map(|(home, (inner, hook))| {
                let rx = HookedRx {
                    inner,
                    hook: hook.clone(),
                };
                Arc::new(Lane::new(handle.clone(), home, Box::new(rx)))
            })
            .collect();
        let steering = Arc::new(RecordedSteering::default());
        let handle: Arc<dyn Steering> = Arc::new(Recorder(steering.clone()));
        let port = PortLanes::new(solo, lanes, Some(handle));
        let two = TwoLanes {
            mode: ModeSwitch::new(2),
            lanes: [(PortId(1), port)].into_iter().collect(),
            kernel: Kernel {
                steering,
                rx: vec![rx0.clone(), rx1.clone()],
            },
            rx: vec![rx0, rx1],
            hooks,
        };
        assert!(two.follow(), "steered when added");
        assert!(two.read_home(&mut LaneReader::new(1), 1).is_empty());
        assert!(two.read_home(&mut LaneReader::new(0), 0).is_empty());
        assert_eq!(two.port().steering.pending(), None, "handed over");
        two
    }

    fn port(&self) -> &PortLanes {
        &self.lanes[&PortId(1)]
    }

    fn lane(&self, at: usize) -> Arc<Lane> {
        self.port().lanes[at].clone()
    }

    /// Steers the port in the switch's mode, keeping its solo lane.
    fn follow(&self) -> bool {
        let solo = self.port().steering.solo();
        self.port().follow(&self.mode, || solo)
    }

    /// A worker became busy (by port) or calm (by CPU); whether the port
    /// was steered anew.
    fn change(&self, busy: bool) -> bool {
        let mut followed = false;
        self.mode.worker_changed(busy, |_| followed = self.follow());
        followed
    }

    /// A worker became busy and the port is steered by port into lane
    /// `solo`, as `pairing.rs` may choose.
    fn read_by_port_in(&self, solo: usize) -> bool {
        let mut followed = false;
        self.mode.worker_changed(true, |_| {
            followed = self.port().follow(&self.mode, || solo);
        });
        followed
    }

    fn inject(&self, lane: usize, seqs: std::ops::Range<u32>) {
        for seq in seqs {
            self.rx[lane].inject(VnetHdr::default(), &frame(HOST_B, HOST_A, seq));
        }
    }

    /// Reads home lane `at` as worker `at`; the sequence numbers forwarded.
    fn read_home(&self, reader: &mut LaneReader, at: usize) -> Vec<u32> {
        let mut seen = Vec::new();
        let mut forward = |_: &Arc<PortHandle>, batch: &mut RxBatch, n: usize, _note: bool| {
            seen.extend((0..n).map(|i| seq_of(batch.get(i).1)));
            None
        };
        match reader.read_home(&self.mode, &self.lanes, &self.lane(at), &mut forward) {
            HomeRead::Empty | HomeRead::Forwarded { .. } => seen,
            HomeRead::Failed(err) => panic!("{err}"),
        }
    }

    /// Reads both lanes, the solo lane first, until nothing is left.
    fn read_all(&self) -> Vec<u32> {
        let mut got = Vec::new();
        loop {
            let before = got.len();
            let solo = self.port().steering.solo();
            for at in [solo, 1 - solo] {
                got.extend(self.read_home(&mut LaneReader::new(at), at));
            }
            if got.len() == before {
                return got;
            }
        }
    }
}

/// Waits (without sleeping) until `done` holds, or panics saying `what`.
fn spin_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// Whether some thread holds `lane` locked now.
fn held(lane: &Lane) -> bool {
    matches!(lane.rx.try_lock(), Err(std::sync::TryLockError::WouldBlock))
}

#[test]
fn older_frames_of_the_lane_left_behind_go_first_when_reading_by_port() {
    let port = TwoLanes::new(0);
    let mut reader = LaneReader::new(0);
    // By CPU, the sender's frames went to lane 1; then the switch got busy
    // and lane 0 (solo) gets them.
    port.inject(1, 0..3);
    assert!(port.change(true));
    port.inject(0, 3..5);
    assert_eq!(port.read_home(&mut reader, 0), [0, 1, 2, 3, 4]);
    assert!(
        port.rx[1]
            .clone()
            .recv_batch(&mut RxBatch::new(4, 64))
            .unwrap()
            == 0
    );
    // Once per change: later frames of lane 1 are not looked for again.
    port.inject(1, 5..6);
    port.inject(0, 6..7);
    assert_eq!(port.read_home(&mut reader, 0), [6]);
}

#[test]
fn older_frames_of_the_solo_lane_go_first_when_reading_by_cpu_again() {
    let port = TwoLanes::new(0);
    let mut reader = LaneReader::new(1);
    assert!(port.change(true));
    // The solo lane's first read hands that change over.
    assert!(port.read_home(&mut LaneReader::new(0), 0).is_empty());
    port.inject(0, 0..3);
    assert!(port.change(false));
    port.inject(1, 3..5);
    assert_eq!(port.read_home(&mut reader, 1), [0, 1, 2, 3, 4]);
}

/// Each steering by port may choose another solo lane (`pairing.rs`): the
/// hand-overs go by the lane chosen, not by the one the port was added with.
#[test]
fn frames_keep_their_order_when_the_solo_lane_is_chosen_anew() {
    let port = TwoLanes::new(0);
    assert!(port.change(true));
    assert!(port.read_home(&mut LaneReader::new(0), 0).is_empty());
    assert!(port.change(false));
    assert!(port.read_home(&mut LaneReader::new(1), 1).is_empty());
    // By CPU: frames in lane 0 (their CPU); then read by port in lane 1.
    port.inject(0, 0..2);
    assert!(port.read_by_port_in(1));
    assert_eq!(port.port().steering.solo(), 1);
    port.inject(1, 2..4);
    assert_eq!(
        port.read_home(&mut LaneReader::new(1), 1),
        [0, 1, 2, 3],
        "the new solo lane's reader drains lane 0 first"
    );
    // By port in lane 1, then by CPU: lane 0's reader drains lane 1 first,
    // though the port was added with solo lane 0.
    port.inject(1, 4..6);
    assert!(port.change(false));
    port.inject(0, 6..8);
    assert_eq!(port.read_home(&mut LaneReader::new(0), 0), [4, 5, 6, 7]);
    assert_eq!(
        port.kernel.steering.calls.lock().unwrap().as_slice(),
        [
            (ReadMode::ByCpu, 0),
            (ReadMode::ByPort, 0),
            (ReadMode::ByCpu, 0),
            (ReadMode::ByPort, 1),
            (ReadMode::ByCpu, 1)
        ]
    );
}

#[test]
fn a_lane_that_gets_no_frames_now_hands_nothing_over() {
    let port = TwoLanes::new(0);
    let mut reader = LaneReader::new(1);
    port.inject(0, 0..2);
    assert!(port.change(true));
    port.inject(1, 2..3);
    // Reading by port, lane 1 is not the solo lane: it holds only older
    // frames, read without waiting for lane 0.
    assert_eq!(port.read_home(&mut reader, 1), [2]);
}

#[test]
fn answers_are_taken_from_another_workers_lane_unless_it_is_busy() {
    let port = TwoLanes::new(0);
    // Reading by port: the answer lands in solo lane 0, worker 0's.
    assert!(port.change(true));
    let mut reader = LaneReader::new(1);
    // Lane 1 gets no frames now: nothing to hand over.
    assert!(port.read_home(&mut reader, 1).is_empty());
    let seen = std::cell::RefCell::new(Vec::new());
    let mut forward = |_: &Arc<PortHandle>, batch: &mut RxBatch, n: usize, note: bool| {
        assert!(!note, "answers to answers are not looked for");
        seen.borrow_mut()
            .extend((0..n).map(|i| seq_of(batch.get(i).1)));
        None
    };
    port.inject(0, 0..2);
    let mut ours = Vec::new();
    {
        let lane = port.lane(0);
        let _reading = lane.lock();
        let mut read_next = |id| ours.push(id);
        let targets = [PortId(1)];
        reader.take_answers(
            &port.mode,
            &port.lanes,
            &targets,
            &mut forward,
            &mut read_next,
        );
    }
    assert!(ours.is_empty());
    let left = port.rx[0].clone().recv_batch(&mut RxBatch::new(4, 64));
    assert_eq!(left.unwrap(), 2, "a lane someone is reading is left alone");
    // The change is handed over before the answer is read (lane 1 drained).
    port.inject(1, 2..3);
    port.inject(0, 3..5);
    let mut read_next = |id| ours.push(id);
    let targets = [PortId(1)];
    reader.take_answers(
        &port.mode,
        &port.lanes,
        &targets,
        &mut forward,
        &mut read_next,
    );
    assert!(ours.is_empty());
    assert_eq!(*seen.borrow(), [2, 3, 4]);
    // Worker 0 is the lane's home: told to read it next instead.
    let mut home = LaneReader::new(0);
    let mut read_next = |id| ours.push(id);
    let targets = [PortId(1), PortId(7)];
    home.take_answers(
        &port.mode,
        &port.lanes,
        &targets,
        &mut forward,
        &mut read_next,
    );
    assert_eq!(ours, [PortId(1)]);
}

/// Rule 1 (`lanes.rs`): a steering cannot be published between a reader's
/// look at the steering and its read, or the reader would forward frames
/// steered by it (`B`, in its lane now) before older ones waiting in
/// another lane (`A`).
#[test]
fn a_change_cannot_come_between_a_readers_look_and_its_read() {
    let port = TwoLanes::new(0);
    assert!(port.change(true));
    assert!(port.read_home(&mut LaneReader::new(0), 0).is_empty());
    // A: sent on CPU 1 while reading by port, in lane 0.
    port.kernel.send(1, 0..3);
    let (first_lane, steering, kernel) = (
        port.lane(0),
        port.port().steering.clone(),
        port.kernel.clone(),
    );
    let (go, told_to_go) = crossbeam_channel::bounded(1);
    // Reader 1 has looked (lane 1 gets no frames: nothing to hand over)
    // and is about to read when the switch goes back to reading by CPU.
    *port.hooks[1].lock().unwrap() = Some(Box::new(move || {
        assert!(!held(&first_lane), "reader 1 holds its own lane only");
        go.send(()).unwrap();
        // The change locks every lane in order before it publishes: once
        // it holds lane 0 it waits for this read to end.
        spin_until("the steering published, or waiting for this read", || {
            held(&first_lane) || steering.pending().is_some_and(|p| p.taken)
        });
        // B: the sender's next frames, wherever the kernel puts them now.
        kernel.send(1, 3..6);
    }));
    let (first, followed) = std::thread::scope(|scope| {
        let follower = scope.spawn(|| {
            told_to_go.recv().unwrap();
            port.change(false)
        });
        let first = port.read_home(&mut LaneReader::new(1), 1);
        (first, follower.join().unwrap())
    });
    assert!(followed);
    let mut got = first;
    got.extend(port.read_all());
    assert_in_order(&got, 6, "frames around a change during a read");
}

/// Rule 2: a hand-over drains the older lanes only once the kernel has
/// taken the steering; a frame that lands by the old steering meanwhile
/// (`3`) still goes before the newer ones (`4`, `5`).
#[test]
fn a_hand_over_waits_until_the_kernel_has_taken_the_steering() {
    let port = TwoLanes::new(0);
    // Reading by CPU, the sender on CPU 1: lane 1.
    port.kernel.send(1, 0..3);
    let (began, release) = port.kernel.steering.hold_next();
    let (first, followed) = std::thread::scope(|scope| {
        let follower = scope.spawn(|| port.change(true));
        began.recv().unwrap();
        // Steered by port, not taken yet: the solo lane's reader must hand
        // lane 1 over first.
        let reader = scope.spawn(|| {
            let mut reader = LaneReader::new(0);
            let got = port.read_home(&mut reader, 0);
            (got, reader.take_waited())
        });
        spin_until("the reader waiting for the kernel, or done", || {
            port.mode.steering_waits() > 0 || reader.is_finished()
        });
        port.kernel.send(1, 3..4);
        release.send(()).unwrap();
        let followed = follower.join().unwrap();
        port.kernel.send(1, 4..6);
        let (got, waited) = reader.join().unwrap();
        // The wait is told to the worker, which does not count it as load.
        assert_eq!(waited > Duration::ZERO, port.mode.steering_waits() > 0);
        (got, followed)
    });
    assert!(followed);
    let mut got = first;
    got.extend(port.read_all());
    assert_in_order(&got, 6, "frames around a steering half done");
}

/// Rule 3: back to reading by port before the change to reading by CPU was
/// handed over. Steered anew, the solo lane's reader would drain lane 1
/// (`3..6`) before its own older frames (`0..3`).
#[test]
fn a_port_is_steered_anew_only_after_its_last_steering_was_handed_over() {
    let port = TwoLanes::new(0);
    assert!(port.change(true));
    assert!(port.read_home(&mut LaneReader::new(0), 0).is_empty());
    port.kernel.send(1, 0..3);
    assert!(port.change(false));
    port.kernel.send(1, 3..6);
    assert!(!port.change(true), "not steered anew");
    let steering = &port.port().steering;
    assert!(steering.lags(&port.mode));
    assert!(!steering.ask_follow(&port.mode), "no use asking yet");
    port.kernel.send(1, 6..9);
    let got = port.read_all();
    assert_in_order(&got, 9, "frames of three changes");
    assert_eq!(
        steering.pending(),
        None,
        "handed over by reading lane 0 dry"
    );
    assert!(port.follow(), "a late follow steers it now");
    assert_eq!(
        port.kernel.steering.calls.lock().unwrap().last(),
        Some(&(ReadMode::ByPort, 0))
    );
    assert_eq!(
        changed_at(steering, &port.mode),
        steering.pending().unwrap().change
    );
}

/// Sends frames `0..n` to `b`, `send(seq)` putting each in, in epochs of
/// 500 frames; before each epoch but the first it waits until the epoch
/// before last is through and changes the mode (busy, then calm again: by
/// port, then by CPU), so each change comes while the frames sent before
/// it may still wait in the old lanes (the hand-over's case) and the ones
/// before the change before are through. Returns what `b` got, in order.
pub(super) fn send_across_mode_changes(
    dp: &Dataplane,
    b: &MemoryLanes,
    n: u32,
    mut send: impl FnMut(u32),
) -> Vec<u32> {
    const EPOCH: u32 = 500;
    let mut got = Vec::new();
    for epoch in 0..n / EPOCH {
        if epoch > 0 {
            wait_for("the epoch before last", || {
                collect(&b.tx, &mut got) >= ((epoch - 1) * EPOCH) as usize
            });
            dp.shared.worker_load_changed(epoch % 2 == 1);
        }
        for seq in epoch * EPOCH..(epoch + 1) * EPOCH {
            send(seq);
        }
    }
    wait_for("every frame at b", || {
        collect(&b.tx, &mut got) >= n as usize
    });
    got
}

#[test]
fn a_port_read_in_lanes_keeps_its_order_across_mode_changes() {
    let dp = start_with_mode_changed_by_test(2);
    // The test makes every mode change itself: a worker busy on a loaded
    // machine would otherwise hold the mode and leave changes out.
    let (a, b) = (MemoryLanes::new(2), MemoryLanes::new(1));
    let pa = dp.add_port("a", a.opener()).unwrap();
    dp.add_port("b", b.opener()).unwrap();
    assert_eq!(dp.lanes_of(pa), 2);
    assert_eq!(dp.metrics().reading, ReadMode::ByCpu);
    let (mode, solo) = a.steering.now.lock().unwrap().expect("steered when added");
    assert_eq!(mode, ReadMode::ByCpu);
    learn_b(&dp, &a, &b);
    // a carries no bulk flow, so read by port it keeps its solo lane (not
    // b's worker's: `pairing.rs`). The sender runs on the CPU whose lane is
    // not the solo lane, so every change moves its frames to the other
    // lane. Each change comes while the frames sent before it may still
    // wait in the old lane (the hand-over's case); the ones before the
    // change before are through (a once-per-change hand-over orders one
    // change at a time, and the mode changes at most every few windows).
    let cpu = 1 - solo;
    const N: u32 = 4000;
    let got = send_across_mode_changes(&dp, &b, N, |seq| {
        a.inject_from_cpu(cpu, &frame(HOST_B, HOST_A, seq));
    });
    let calls = a.steering.calls.lock().unwrap().clone();
    assert_in_order(&got, N, &format!("steered {calls:?}"));
    assert_eq!(dp.metrics().reading_changes, 7, "{:?}", dp.metrics());
    assert!(calls.contains(&(ReadMode::ByPort, solo)), "{calls:?}");
    dp.shutdown();
}

//! Receive lanes, and the one way a worker reads them.
//!
//! A port's receive half is read in lanes (see the dataplane's docs). Each
//! lane has a home worker that waits for it in epoll and reads it dry. On
//! top of that, a worker that has just sent unicast frames to a port reads
//! one batch right away from the lane where the answer lands, if nobody
//! else is reading it ([`LaneReader::take_answers`]). When the switch
//! writes a frame to a veth or TAP, the kernel runs the receiving host's
//! stack inside that very write, so its answer (a ping reply, a TCP ACK) is
//! often already queued when the write returns; taking it at once saves
//! waking another thread, which on a virtual machine costs tens of
//! microseconds per hop.
//! The answer itself is forwarded without that look in turn: what comes
//! back to it (a TCP sender's next segments) epoll reports at once, and a
//! ping's requester has nothing more to say, so the look would mostly find
//! the lane empty: a system call in the middle of the round trip.
//!
//! Correctness does not depend on that shortcut: the home worker always
//! takes the lane's lock (waiting if another worker holds it) and reads
//! until the lane is empty, and every frame that arrives after a read
//! raises a new epoll event for the home worker. A reader keeps the lock
//! until its batch is forwarded, so frames from one lane never overtake
//! each other (TCP would take reordering for loss), and tells the lane's
//! receive half how many it forwarded ([`PortRx::forwarded`]) before it lets
//! the lane go: a port steered with a ledger (`ports::ledger`) sends its
//! frames to a new lane (a sender that moved to another CPU) only once its
//! last lane is done with, so one sender's frames are never in two lanes'
//! hands at once. A port without a ledger (rootless mode) is read one
//! reader at a time (its turn), and that reader puts its lanes' frames back
//! in the order the kernel received them
//! ([`LaneReader::forward_by_arrival`]); one whose lanes cannot say when
//! frames arrived is never fed by CPU (`steering.rs`).
//!
//! # The hand-over
//!
//! When a port's steering changes (see `steering.rs`), frames that came
//! before it may still wait in lanes that no longer get frames (or in the
//! one lane that got them all); they are forwarded before any lane that
//! gets frames now is read, so a sender's frames keep their order across
//! the change. Reading by port after reading by CPU, the reader of the solo
//! lane drains the other lanes first; reading by CPU after reading by port,
//! the reader of any other lane drains the solo lane first, and the solo
//! lane's own reader needs nothing (its older frames come first anyway). A
//! port that was not steered anew (an idle one) is not handed over. Three
//! rules keep this exact however the threads interleave:
//!
//! 1. A reader looks at the port's steering with its lane locked, and a
//!    steering is published with every lane of the port locked
//!    ([`PortLanes::follow`]). So no steering is published between a
//!    reader's look and its read: frames steered by a steering the reader
//!    has not seen cannot be in its batch. A reader that must hand over
//!    first lets its lane go, hands over, and locks it again.
//! 2. The hand-over drains the older lanes only once the kernel has taken
//!    the steering (the `setsockopt` returned): until then frames may
//!    still land by the steering before, after a drain that came too
//!    early.
//! 3. A port is steered anew only after its last steering was handed over
//!    (the port lags meanwhile and follows later). Otherwise the frames of
//!    three steerings could wait at once, and draining the newest's older
//!    lanes would put the middle one's frames before the oldest's.
//!
//! Why this cannot deadlock: a reader holds one lane at a time, and waits
//! for nothing while it holds it (forwarding sends without waiting for any
//! lane); it waits for the kernel (the port's `telling` lock) and for the
//! lanes it drains only with its own lane let go. Two kinds of thread hold
//! several lanes of a port, and both take the port's turn first: a
//! steering's teller, which locks them all in order while it holds
//! `telling`, and never holds a lane when it starts (it is the
//! housekeeping thread, or the thread adding the port); and the reader of
//! a port read in arrival order, which holds the turn for its whole read
//! and looks at the port's other lanes with its own held. Such a reader
//! may wait for `telling` (rule 2), but only for a steering published
//! already, whose teller has let the turn and the lanes go and waits for
//! the kernel alone. A teller waits for the turn only to publish a new
//! steering, which it does only once the last one was handed over (rule
//! 3): no reader waits for `telling` then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use ports::{PortRx, ReadDepth, RxBatch, RxError, Steering};

use super::affinity::ModeSwitch;
use super::pairing::Talk;
use super::steering::PortSteering;
use crate::fabric::PortHandle;
use crate::port::PortId;

mod arrival;
mod hand_over;

use hand_over::Due;

/// Frames per receive batch. 32 amortizes the read lock and syscall well;
/// more only adds latency for the other ports of the same worker.
const BATCH_FRAMES: usize = 32;

/// Bytes per batch slot: a 64 KiB GSO frame plus Ethernet and VLAN headers.
const SLOT_BYTES: usize = ports::MAX_FRAME_LEN;

/// A worker's poll that returned sooner than this did not sleep: being
/// woken by a frame takes longer (a switch to the sender, its send, a
/// switch back), so what the poll reports was waiting when it was called.
const SLEPT_AT_LEAST: Duration = Duration::from_micros(2);

/// One receive lane of a port: its home worker, and the receive half behind
/// a lock that whoever reads a batch holds until the batch is forwarded.
pub(super) struct Lane {
    pub(super) handle: Arc<PortHandle>,
    pub(super) home: usize,
    pub(super) rx: Mutex<RxState>,
    /// Its home worker watches it level-triggered (the receive half asks
    /// for it: a TAP queue): while the port is read by CPU, a read takes
    /// one frame and leaves the rest to epoll (see [`LaneReader::depth_for`]).
    pub(super) level_triggered: bool,
    /// Its receive half says when each frame arrived
    /// ([`PortRx::keeps_arrival_times`]).
    arrival_times: bool,
    /// Frames were read from the lane since the housekeeping thread last
    /// asked the kernel how many it dropped (an idle lane drops none).
    read_since_sweep: AtomicBool,
    /// The lane's ledger (if it has one) may be behind: a sweep looks at
    /// it even if the lane was not read (see `housekeeping.rs`).
    ledger_behind: AtomicBool,
}

impl Lane {
    pub(super) fn new(handle: Arc<PortHandle>, home: usize, rx: Box<dyn PortRx>) -> Self {
        Lane {
            handle,
            home,
            level_triggered: rx.level_triggered(),
            arrival_times: rx.keeps_arrival_times(),
            rx: Mutex::new(RxState {
                rx: Some(rx),
                error: None,
            }),
            read_since_sweep: AtomicBool::new(false),
            // A port's opening may leave its count behind.
            ledger_behind: AtomicBool::new(true),
        }
    }

    /// Whether frames were read since the last call; forgets it.
    pub(super) fn take_read_since_sweep(&self) -> bool {
        self.read_since_sweep.swap(false, Ordering::Relaxed)
    }

    /// Whether the lane's ledger may be behind; forgets it.
    pub(super) fn take_ledger_behind(&self) -> bool {
        self.ledger_behind.swap(false, Ordering::Relaxed)
    }

    /// The lane's ledger was behind at the last sweep: look again.
    pub(super) fn note_ledger_behind(&self) {
        self.ledger_behind.store(true, Ordering::Relaxed);
    }

    pub(super) fn note_read(&self) {
        if !self.read_since_sweep.load(Ordering::Relaxed) {
            self.read_since_sweep.store(true, Ordering::Relaxed);
        }
    }

    /// Locks the lane; a worker that panicked mid-read left nothing half
    /// done in it.
    pub(super) fn lock(&self) -> MutexGuard<'_, RxState> {
        self.rx.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receive half and an error another worker read from it (a socket
/// reports an error once, to whoever reads first; the home worker acts on it).
pub(super) struct RxState {
    pub(super) rx: Option<Box<dyn PortRx>>,
    pub(super) error: Option<RxError>,
}

/// A port's receive lanes: one, or one per worker (lane `i` read by worker
/// `i`). While the switch reads by port every frame goes to one lane, the
/// solo lane ([`PortSteering::solo`]), chosen at each steering by port
/// (see `pairing.rs`).
#[derive(Clone)]
pub(super) struct PortLanes {
    pub(super) lanes: Vec<Arc<Lane>>,
    /// Where the kernel puts the port's frames, shared by the clones.
    pub(super) steering: Arc<PortSteering>,
    /// Where the port's frames went lately, and which bulk flows they
    /// belong to, shared by the clones.
    pub(super) talk: Arc<Talk>,
    /// Its readers put the frames of its lanes back in the order they
    /// arrived (see [`LaneReader::forward_by_arrival`]): it has no ledger,
    /// and its lanes say when each frame arrived.
    arrival_order: bool,
    /// Held by whoever reads the port's lanes, if `arrival_order`, and by
    /// whoever publishes its steering, before any of its lanes: one
    /// reader at a time, which may then hold several lanes.
    turn: Arc<Mutex<()>>,
}

impl PortLanes {
    /// `steering` tells the kernel where frames go (`None`, or one lane:
    /// nothing to tell); `solo` is the solo lane until a steering by port
    /// chooses one.
    pub(super) fn new(
        solo: usize,
        lanes: Vec<Arc<Lane>>,
        steering: Option<Arc<dyn Steering>>,
    ) -> Self {
        let steering = steering.filter(|_| lanes.len() > 1);
        let name = lanes.first().map_or("", |lane| lane.handle.name.as_str());
        let arrival_order = steering.as_ref().is_some_and(|s| !s.keeps_order_by_cpu())
            && lanes.iter().all(|lane| lane.arrival_times);
        PortLanes {
            steering: Arc::new(PortSteering::new(name, steering, solo, arrival_order)),
            lanes,
            talk: Arc::default(),
            arrival_order,
            turn: Arc::default(),
        }
    }

    /// Whether its readers put its lanes' frames back in the order they
    /// arrived (see `arrival_order`).
    pub(super) fn arrival_order(&self) -> bool {
        self.arrival_order
    }

    /// The port's turn, for a reader of a port read in arrival order
    /// (waiting for it, or only if free); `Err` if it was busy.
    fn take_turn(&self, wait: bool) -> Result<Option<MutexGuard<'_, ()>>, ()> {
        if !self.arrival_order {
            return Ok(None);
        }
        if wait {
            return Ok(Some(
                self.turn.lock().unwrap_or_else(PoisonError::into_inner),
            ));
        }
        match self.turn.try_lock() {
            Ok(turn) => Ok(Some(turn)),
            Err(TryLockError::Poisoned(poisoned)) => Ok(Some(poisoned.into_inner())),
            Err(TryLockError::WouldBlock) => Err(()),
        }
    }

    /// Steers the port in the switch's mode unless it is already, or its
    /// last steering was not handed over yet; whether it did. A steering
    /// by port sends every frame to the lane `choose_solo` gives. The new
    /// steering is published with every lane locked (rule 1 in the module
    /// docs). Never call it with a lane held.
    pub(super) fn follow(&self, mode: &ModeSwitch, choose_solo: impl FnOnce() -> usize) -> bool {
        let lanes = self.lanes.len().max(1);
        let choose_solo = || choose_solo() % lanes;
        self.steering.follow(mode, choose_solo, |publish| {
            // Before any lane (see `turn`).
            let _turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
            let _reading: Vec<MutexGuard<'_, RxState>> =
                self.lanes.iter().map(|lane| lane.lock()).collect();
            publish();
        })
    }

    /// Which of the port's lanes `lane` is.
    fn position_of(&self, lane: &Arc<Lane>) -> Option<usize> {
        self.lanes.iter().position(|l| Arc::ptr_eq(l, lane))
    }

    /// Notes that frames were read from `lane` of this port (before they
    /// are forwarded: whoever sees them delivered sees the note).
    fn note_read(&self, lane: &Lane) {
        lane.note_read();
        self.steering.note_read();
    }

    /// Forwards the `n` frames of `batch`, read from this port's `lane`
    /// through `rx`: notes the read first (whoever sees them delivered sees
    /// the note), then tells `rx` they are forwarded (its ledger lets the
    /// port's next frames go to another lane only after that), then notes
    /// where they went and which bulk flows they belong to (see
    /// `pairing.rs`).
    fn forward_read(
        &self,
        (lane, rx): (&Lane, &mut Box<dyn PortRx>),
        batch: &mut RxBatch,
        n: usize,
        note_targets: bool,
        forward: &mut Forward<'_>,
    ) {
        self.note_read(lane);
        let sent = forward(&lane.handle, batch, n, note_targets);
        rx.forwarded(n);
        self.talk.note_batch(sent, (0..n).map(|i| batch.get(i).1));
    }
}

/// The receive lanes by port, published with the ports.
pub(super) type LanesByPort = HashMap<PortId, PortLanes>;

/// Forwards `frames` frames of `batch` received on `ingress`; with
/// `note_targets`, notes where unicast frames went (for
/// [`LaneReader::take_answers`]). Returns where the batch's first unicast
/// frame went (see `pairing.rs`). Called with the lane's lock held.
pub(super) type Forward<'a> =
    dyn FnMut(&Arc<PortHandle>, &mut RxBatch, usize, bool) -> Option<PortId> + 'a;

/// What reading a home lane gave.
#[derive(Debug)]
pub(super) enum HomeRead {
    /// The lane was empty (or closed).
    Empty,
    /// A batch of this many frames was forwarded; `full` when more may be
    /// waiting (edge-triggered epoll will not say so again); `lags` when
    /// the port is steered in another mode than the switch's and should
    /// follow (asked once; see `steering.rs`).
    Forwarded {
        frames: usize,
        full: bool,
        lags: bool,
    },
    /// The port is broken or down: the home worker acts on it.
    Failed(RxError),
}

/// One worker's reading of lanes: its batch, and which of its lanes may
/// hold the rest of a burst.
pub(super) struct LaneReader {
    index: usize,
    batch: RxBatch,
    /// One frame taken from another lane ahead of the batch's (see
    /// [`LaneReader::forward_by_arrival`]): made on first use, since only
    /// ports without a ledger (rootless mode's) need it.
    one: Option<RxBatch>,
    /// Home lanes where a one-frame read found a frame since the worker
    /// last woke: more may wait there.
    read_one: Vec<PortId>,
    /// Home lanes left with frames by a one-frame read before the worker's
    /// last poll, which reported them without sleeping: the rest of a
    /// burst, read until empty (see [`LaneReader::woke`]).
    burst_rest: Vec<PortId>,
    /// How long hand-overs waited for the kernel to take a steering since
    /// the worker last asked ([`LaneReader::take_waited`]).
    waited_for_kernel: Duration,
}

impl LaneReader {
    pub(super) fn new(index: usize) -> Self {
        LaneReader {
            index,
            batch: RxBatch::new(BATCH_FRAMES, SLOT_BYTES),
            one: None,
            read_one: Vec::new(),
            burst_rest: Vec::new(),
            waited_for_kernel: Duration::ZERO,
        }
    }

    /// Gives its batches' pages back to the kernel (see
    /// [`RxBatch::release_pages`]). Only between wake-ups: every frame read
    /// in a wake-up was forwarded in it, so what the batches still hold is
    /// spent.
    pub(super) fn release_pages(&mut self) {
        for batch in std::iter::once(&mut self.batch).chain(self.one.as_mut()) {
            batch.clear();
            batch.release_pages();
        }
    }

    /// How long this reader waited for the kernel to take a port's new
    /// steering since the last call: blocked, not working (the grace period
    /// of a TAP's steering lasts milliseconds), so not the worker's load.
    pub(super) fn take_waited(&mut self) -> Duration {
        std::mem::take(&mut self.waited_for_kernel)
    }

    /// The worker's poll returned after `waited`. If it did not sleep, the
    /// lanes where a one-frame read found a frame before it still hold
    /// frames that waited then: a burst, whose rest is read until empty in
    /// this wake-up (a frame per `epoll_wait` would cost it two system
    /// calls per frame). After a sleep, lanes are read a frame at a time
    /// again: a lone frame (a ping, a request) is then the likely case.
    pub(super) fn woke(&mut self, waited: Duration) {
        self.burst_rest.clear();
        if waited < SLEPT_AT_LEAST {
            std::mem::swap(&mut self.burst_rest, &mut self.read_one);
        }
        self.read_one.clear();
    }

    /// Reads one batch from `lane`, a lane this worker is home to, and
    /// forwards it under the lane's lock; after a change of the port's
    /// steering, older frames of its other lanes go first. The home worker
    /// waits for the lock: a reader that beat it to the lane may have
    /// missed frames that arrived just after.
    pub(super) fn read_home(
        &mut self,
        mode: &ModeSwitch,
        ports: &LanesByPort,
        lane: &Arc<Lane>,
        forward: &mut Forward<'_>,
    ) -> HomeRead {
        let port = ports.get(&lane.handle.id);
        let place = port.and_then(|port| Some((port, port.position_of(lane)?)));
        let _turn = place.and_then(|(port, _)| port.take_turn(true).ok().flatten());
        let (mut state, completes) = match place {
            Some((port, at)) => match self.lock_for_reading(mode, port, at, true, forward) {
                Some(locked) => locked,
                None => return HomeRead::Empty,
            },
            None => (lane.lock(), None),
        };
        let RxState { rx, error } = &mut *state;
        let Some(rx) = rx.as_mut() else {
            return HomeRead::Empty;
        };
        let id = lane.handle.id;
        let burst_rest = self.burst_rest.contains(&id);
        let depth = Self::depth_for(mode, port, lane, completes, burst_rest);
        self.batch.set_depth(depth);
        let received = match rx.recv_batch(&mut self.batch) {
            Ok(0) => error.take().map_or(Ok(0), Err),
            other => other,
        };
        match received {
            Ok(0) => HomeRead::Empty,
            Ok(n) => {
                if depth == ReadDepth::OneFrame && !self.read_one.contains(&id) {
                    self.read_one.push(id);
                }
                match place {
                    Some((port, at)) if port.arrival_order => {
                        self.forward_by_arrival(port, at, rx, n, true, forward);
                    }
                    Some((port, _)) => {
                        port.forward_read((lane, rx), &mut self.batch, n, true, forward);
                    }
                    None => {
                        _ = forward(&lane.handle, &mut self.batch, n, true);
                        rx.forwarded(n);
                    }
                }
                let full = n == self.batch.capacity();
                if let (Some(port), Some(change), false) = (port, completes, full) {
                    port.steering.handed_over(change);
                }
                HomeRead::Forwarded {
                    frames: n,
                    full,
                    lags: port.is_some_and(|p| p.steering.ask_follow(mode)),
                }
            }
            Err(err) => HomeRead::Failed(err),
        }
    }

    /// Reads, once, the ports in `targets` (where the last batch sent
    /// unicast frames), where answers are likely waiting already: the lane
    /// the answer lands in goes to `read_next` if it is this worker's, and
    /// is read now if it is another worker's and nobody is reading it.
    /// Returns how many frames it forwarded so.
    pub(super) fn take_answers(
        &mut self,
        mode: &ModeSwitch,
        ports: &LanesByPort,
        targets: &[PortId],
        forward: &mut Forward<'_>,
        read_next: &mut dyn FnMut(PortId),
    ) -> usize {
        let mut taken = 0;
        for id in targets {
            let Some(port) = ports.get(id) else {
                continue;
            };
            // An answer lands in the lane of the CPU that produced it (the
            // one this thread sent from: the receiver's stack ran inside the
            // send) while the switch reads by CPU, else in the port's solo
            // lane; unless the port's ledger kept it behind frames still in
            // another lane, which the ledger says. It may be ours (read it
            // next) or another worker's.
            let lanes = &port.lanes;
            let at = match (lanes.len(), port.steering.last_lane()) {
                (0, _) => continue,
                (1, _) => 0,
                (n, Some(last)) => last % n,
                (n, None) if port.steering.by_cpu(mode) => {
                    ports::cpu::current_cpu().unwrap_or(0) % n
                }
                (_, None) => port.steering.solo(),
            };
            let lane = &lanes[at];
            if !lane.handle.kind.answers_within_send() {
                continue;
            }
            if lane.home == self.index {
                read_next(*id);
                continue;
            }
            // Only if nobody is reading it (or the port) now; held while
            // forwarding.
            let Ok(_turn) = port.take_turn(false) else {
                continue;
            };
            let Some((mut state, completes)) =
                self.lock_for_reading(mode, port, at, false, forward)
            else {
                continue;
            };
            let RxState { rx, error } = &mut *state;
            let Some(rx) = rx.as_mut() else { continue };
            self.batch
                .set_depth(Self::depth_for(mode, Some(port), lane, completes, false));
            match rx.recv_batch(&mut self.batch) {
                Ok(0) => {}
                // Answers to answers are not looked for.
                Ok(n) => {
                    taken += n;
                    if port.arrival_order {
                        self.forward_by_arrival(port, at, rx, n, false, forward);
                    } else {
                        port.forward_read((lane, rx), &mut self.batch, n, false, forward);
                    }
                    if let Some(change) = completes
                        && n < self.batch.capacity()
                    {
                        port.steering.handed_over(change);
                    }
                }
                // Errors are the home worker's to act on; epoll wakes it
                // for them too.
                Err(err) => *error = Some(err),
            }
        }
        taken
    }

    /// How far a read of `lane` goes. One frame while its port is read by
    /// CPU, if epoll watches the lane level-triggered: traffic is light
    /// then, a lane rarely holds a second frame, and learning that it is
    /// empty costs in the middle of a round trip (a second `readv` on a
    /// TAP, a second message header tried by `recvmmsg` on a packet
    /// socket). Until it is empty otherwise: under load (a batch is worth
    /// its last read), for the rest of a burst (`burst_rest`, see
    /// [`LaneReader::woke`]), and when a short batch is to hand the port's
    /// steering over (`completes`: only a read that finds the lane empty
    /// may).
    fn depth_for(
        mode: &ModeSwitch,
        port: Option<&PortLanes>,
        lane: &Lane,
        completes: Option<u64>,
        burst_rest: bool,
    ) -> ReadDepth {
        let light = port.is_some_and(|port| port.steering.by_cpu(mode));
        if lane.level_triggered && light && completes.is_none() && !burst_rest {
            ReadDepth::OneFrame
        } else {
            ReadDepth::UntilEmpty
        }
    }

    /// Locks lane `at` of `port` for a read (waiting for it, or only if
    /// nobody holds it), handing the port over first where its steering
    /// asks for it (rule 1 in the module docs). Returns the lock, and the
    /// steering a short batch read under it hands over; `None` if the lane
    /// was busy.
    fn lock_for_reading<'p>(
        &mut self,
        mode: &ModeSwitch,
        port: &'p PortLanes,
        at: usize,
        wait: bool,
        forward: &mut Forward<'_>,
    ) -> Option<(MutexGuard<'p, RxState>, Option<u64>)> {
        let lane = &port.lanes[at];
        loop {
            let state = if wait {
                lane.lock()
            } else {
                match lane.rx.try_lock() {
                    Ok(state) => state,
                    Err(TryLockError::Poisoned(_)) | Err(TryLockError::WouldBlock) => return None,
                }
            };
            match port.due(at) {
                Due::Nothing => return Some((state, None)),
                Due::ReadOwn { change, taken } => return Some((state, taken.then_some(change))),
                Due::Drain { change, older } => {
                    drop(state);
                    self.hand_over(mode, port, change, older, forward);
                }
            }
        }
    }
}

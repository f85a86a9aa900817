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
//!
//! Correctness does not depend on that shortcut: the home worker always
//! takes the lane's lock (waiting if another worker holds it) and reads
//! until the lane is empty, and every frame that arrives after a read
//! raises a new epoll event for the home worker. A reader keeps the lock
//! until its batch is forwarded, so frames from one lane never overtake
//! each other (TCP would take reordering for loss).
//!
//! When a port's steering changes (see `steering.rs`), frames that came
//! before it may still wait in lanes that no longer get frames; they are
//! forwarded before the lanes that do get frames are read (the hand-over),
//! so a sender's frames keep their order across the change. A port that
//! was not steered anew (an idle one) is not handed over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use ports::{PortRx, RxBatch, RxError, Steering};

use super::affinity::ModeSwitch;
use super::steering::PortSteering;
use crate::fabric::PortHandle;
use crate::port::PortId;

/// Frames per receive batch. 32 amortizes the read lock and syscall well;
/// more only adds latency for the other ports of the same worker.
const BATCH_FRAMES: usize = 32;

/// Bytes per batch slot: a 64 KiB GSO frame plus Ethernet and VLAN headers.
const SLOT_BYTES: usize = ports::MAX_FRAME_LEN;

/// One receive lane of a port: its home worker, and the receive half behind
/// a lock that whoever reads a batch holds until the batch is forwarded.
pub(super) struct Lane {
    pub(super) handle: Arc<PortHandle>,
    pub(super) home: usize,
    pub(super) rx: Mutex<RxState>,
    /// Frames were read from the lane since the housekeeping thread last
    /// asked the kernel how many it dropped (an idle lane drops none).
    read_since_sweep: AtomicBool,
}

impl Lane {
    pub(super) fn new(handle: Arc<PortHandle>, home: usize, rx: Box<dyn PortRx>) -> Self {
        Lane {
            handle,
            home,
            rx: Mutex::new(RxState {
                rx: Some(rx),
                error: None,
            }),
            read_since_sweep: AtomicBool::new(false),
        }
    }

    /// Whether frames were read since the last call; forgets it.
    pub(super) fn take_read_since_sweep(&self) -> bool {
        self.read_since_sweep.swap(false, Ordering::Relaxed)
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
/// `i`). `solo` is the lane that gets every frame while the switch reads by
/// port; ports are spread over the workers that way.
#[derive(Clone)]
pub(super) struct PortLanes {
    pub(super) solo: usize,
    pub(super) lanes: Vec<Arc<Lane>>,
    /// Where the kernel puts the port's frames, shared by the clones.
    pub(super) steering: Arc<PortSteering>,
}

impl PortLanes {
    /// `steering` tells the kernel where frames go (`None`, or one lane:
    /// nothing to tell).
    pub(super) fn new(
        solo: usize,
        lanes: Vec<Arc<Lane>>,
        steering: Option<Arc<dyn Steering>>,
    ) -> Self {
        let steering = steering.filter(|_| lanes.len() > 1);
        let name = lanes.first().map_or("", |lane| lane.handle.name.as_str());
        PortLanes {
            steering: Arc::new(PortSteering::new(name, steering, solo)),
            solo,
            lanes,
        }
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
}

/// The receive lanes by port, published with the ports.
pub(super) type LanesByPort = HashMap<PortId, PortLanes>;

/// Forwards `frames` frames of `batch` received on `ingress`; with
/// `note_targets`, notes where unicast frames went (for
/// [`LaneReader::take_answers`]). Called with the lane's lock held.
pub(super) type Forward<'a> = dyn FnMut(&Arc<PortHandle>, &mut RxBatch, usize, bool) + 'a;

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

/// One worker's reading of lanes: its batch, and at which steering change
/// it last handed each port over.
pub(super) struct LaneReader {
    index: usize,
    batch: RxBatch,
    handed_over: HashMap<PortId, u64>,
}

impl LaneReader {
    pub(super) fn new(index: usize) -> Self {
        LaneReader {
            index,
            batch: RxBatch::new(BATCH_FRAMES, SLOT_BYTES),
            handed_over: HashMap::new(),
        }
    }

    /// Port `id` is gone (its number may come back as another port).
    pub(super) fn forget(&mut self, id: PortId) {
        self.handed_over.remove(&id);
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
        let id = lane.handle.id;
        let port = ports.get(&id);
        if let Some(port) = port
            && let Some(at) = port.position_of(lane)
        {
            self.hand_over(mode, port, id, at, forward);
        }
        let mut state = lane.lock();
        let RxState { rx, error } = &mut *state;
        let Some(rx) = rx.as_mut() else {
            return HomeRead::Empty;
        };
        let received = match rx.recv_batch(&mut self.batch) {
            Ok(0) => error.take().map_or(Ok(0), Err),
            other => other,
        };
        match received {
            Ok(0) => HomeRead::Empty,
            Ok(n) => {
                if let Some(port) = port {
                    port.note_read(lane);
                }
                forward(&lane.handle, &mut self.batch, n, true);
                HomeRead::Forwarded {
                    frames: n,
                    full: n == self.batch.capacity(),
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
    pub(super) fn take_answers(
        &mut self,
        mode: &ModeSwitch,
        ports: &LanesByPort,
        targets: &[PortId],
        forward: &mut Forward<'_>,
        read_next: &mut dyn FnMut(PortId),
    ) {
        for id in targets {
            let Some(port) = ports.get(id) else {
                continue;
            };
            // An answer lands in the lane of the CPU that produced it (the
            // one this thread sent from: the receiver's stack ran inside the
            // send) while the switch reads by CPU, else in the port's solo
            // lane. It may be ours (read it next) or another worker's.
            let lanes = &port.lanes;
            let at = match lanes.len() {
                0 => continue,
                1 => 0,
                n if port.steering.by_cpu(mode) => ports::cpu::current_cpu().unwrap_or(0) % n,
                _ => port.solo,
            };
            let lane = &lanes[at];
            if lane.home == self.index {
                read_next(*id);
                continue;
            }
            self.hand_over(mode, port, *id, at, forward);
            // Only if nobody is reading it now; held while forwarding.
            let mut state = match lane.rx.try_lock() {
                Ok(state) => state,
                Err(TryLockError::Poisoned(_)) | Err(TryLockError::WouldBlock) => continue,
            };
            let RxState { rx, error } = &mut *state;
            let Some(rx) = rx.as_mut() else { continue };
            match rx.recv_batch(&mut self.batch) {
                Ok(0) => {}
                // Answers to answers are not looked for.
                Ok(n) => {
                    port.note_read(lane);
                    forward(&lane.handle, &mut self.batch, n, false);
                }
                // Errors are the home worker's to act on; epoll wakes it
                // for them too.
                Err(err) => *error = Some(err),
            }
        }
    }

    /// After a change of the port's steering, frames that came before it
    /// may still wait in lanes that no longer get frames, and they are
    /// older than anything in the lanes that do: forward them first, once
    /// per port and change, before reading lane `reading` of the port.
    /// Reading per port, that is draining the other lanes before the solo
    /// lane; reading per CPU, draining the solo lane before any other.
    /// Another worker busy with one of those lanes is waited for (it
    /// forwards under the lock).
    fn hand_over(
        &mut self,
        mode: &ModeSwitch,
        port: &PortLanes,
        id: PortId,
        reading: usize,
        forward: &mut Forward<'_>,
    ) {
        // The change before the mode: a reader that sees a change sees
        // the mode it brought (see `steering.rs`).
        let changed_at = port.steering.changed_at(mode);
        if changed_at == 0 || self.handed_over.get(&id) == Some(&changed_at) {
            return;
        }
        let by_cpu = port.steering.by_cpu(mode);
        let gets_frames_now = by_cpu || reading == port.solo;
        if !gets_frames_now {
            // A lane that no longer gets frames holds only older ones.
            return;
        }
        self.handed_over.insert(id, changed_at);
        let older = |at: usize| {
            if by_cpu {
                at == port.solo && reading != port.solo
            } else {
                at != port.solo
            }
        };
        for (at, lane) in port.lanes.iter().enumerate() {
            if !older(at) {
                continue;
            }
            let mut state = lane.lock();
            let RxState { rx, error } = &mut *state;
            let Some(rx) = rx.as_mut() else { continue };
            loop {
                match rx.recv_batch(&mut self.batch) {
                    Ok(0) => break,
                    Ok(n) => {
                        port.note_read(lane);
                        forward(&lane.handle, &mut self.batch, n, false);
                    }
                    // The home worker acts on errors (see `take_answers`).
                    Err(err) => {
                        *error = Some(err);
                        break;
                    }
                }
            }
        }
    }
}

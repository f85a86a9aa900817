//! A worker thread: waits for its lanes to become readable, reads a batch,
//! and forwards every frame of it on the spot.
//!
//! Each lane (a port's receive socket or TAP fd; see the dataplane's docs)
//! has a home worker that waits for it in epoll and reads it dry. On top of
//! that, a worker that has just sent unicast frames to a port reads one
//! batch right away from the lane where the answer lands, if nobody else is
//! reading it at that moment. The reason is latency on small machines: when
//! the switch writes a frame to a veth or TAP, the kernel runs the receiving
//! host's stack inside that very write, so its answer (a ping reply, a TCP
//! ACK) is often already queued when the write returns. Taking it at once
//! saves waking another thread, which on a virtual machine costs tens of
//! microseconds per hop.
//!
//! Correctness does not depend on that shortcut: the home worker always
//! takes the lane's lock (waiting if another worker holds it) and reads
//! until the lane is empty, and every frame that arrives after a read
//! raises a new epoll event for the home worker. A reader keeps the lock
//! until its batch is forwarded, so frames from one lane never overtake
//! each other (TCP would take reordering for loss).
//!
//! Each worker also measures how busy it is, which decides whether veth
//! ports are read per CPU or per port, and keeps itself on its lane's CPUs
//! while they are read per CPU (`affinity.rs`).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use ports::RxBatch;

use super::affinity::{CpuShare, LoadMeter, WINDOW};
use super::{Lane, LanesByPort, PortEvent, RxState, Shared};
use crate::engine::Action;
use crate::fabric::{Batching, Fabric, PortHandle, PortSet};
use crate::port::PortId;

/// Frames per receive batch. 32 amortizes the read lock and syscall well;
/// more only adds latency for the other ports of the same worker.
const BATCH_FRAMES: usize = 32;

/// Bytes per batch slot: a 64 KiB GSO frame plus Ethernet and VLAN headers.
const SLOT_BYTES: usize = ports::MAX_FRAME_LEN;

/// How long after ENETDOWN a port is checked for a deleted interface.
const SUSPECT_RECHECK: Duration = Duration::from_millis(100);

/// ENETDOWN on Linux (the switch crate stays free of libc).
const ENETDOWN: i32 = 100;

const WAKER: Token = Token(usize::MAX);

pub(super) enum WorkerCommand {
    /// Wait for and read this port (this worker is its home).
    Add {
        lane: Arc<Lane>,
    },
    /// Stop reading port `id` and close its receive half.
    Remove {
        id: PortId,
        done: Sender<()>,
    },
    Stop,
}

/// The dataplane's handle on one worker thread.
pub(super) struct WorkerHandle {
    peer: Peer,
    ports: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

/// Another thread's way to hand a worker a command (see [`Peer::send`]).
#[derive(Clone)]
pub(super) struct Peer {
    commands: Sender<WorkerCommand>,
    waker: Arc<Waker>,
}

impl Peer {
    /// Queues `command` and wakes the worker. The worker only goes away
    /// after Stop, so a failed send means it already stopped and needs
    /// nothing any more.
    pub(super) fn send(&self, command: WorkerCommand) {
        if self.commands.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

impl WorkerHandle {
    /// A handle other workers may keep.
    pub(super) fn peer(&self) -> Peer {
        self.peer.clone()
    }

    pub(super) fn send(&self, command: WorkerCommand) {
        self.peer.send(command);
    }

    /// Asks the worker to drop port `id`'s receive half and waits until it has.
    pub(super) fn remove_and_wait(&self, id: PortId) {
        let (done, wait) = crossbeam_channel::bounded(1);
        self.send(WorkerCommand::Remove { id, done });
        let _ = wait.recv();
    }

    pub(super) fn port_count(&self) -> usize {
        self.ports.load(Ordering::Relaxed)
    }

    pub(super) fn join(self) {
        let _ = self.thread.join();
    }
}

/// Where a worker may run: its lane's CPUs (empty: no preference) and all
/// the switch's CPUs (see `affinity.rs`).
pub(super) struct Cpus {
    pub(super) lane: Vec<usize>,
    pub(super) all: Vec<usize>,
}

/// Starts worker `index`.
pub(super) fn spawn(index: usize, cpus: Cpus, shared: Arc<Shared>) -> io::Result<WorkerHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (commands, inbox) = crossbeam_channel::unbounded();
    let ports = Arc::new(AtomicUsize::new(0));
    let count = ports.clone();
    let thread = std::thread::Builder::new()
        .name(format!("tapswitch-w{index}"))
        .spawn(move || {
            let worker = Worker {
                load: LoadMeter::default(),
                share: CpuShare::default(),
                accounted: Instant::now(),
                working_since: Instant::now(),
                pinned: false,
                realtime: false,
                realtime_refused: false,
                cpus,
                index,
                fabric: Fabric::with_batching(
                    shared.trace.clone(),
                    Batching::HoldUnicast {
                        coalesce_udp: shared.coalesce_udp,
                    },
                ),
                shared,
                poll,
                inbox,
                count,
                home: HashMap::new(),
                ready: VecDeque::new(),
                pending: Events::with_capacity(64),
                batch: RxBatch::new(BATCH_FRAMES, SLOT_BYTES),
                suspects: Vec::new(),
                sent_to: Vec::new(),
                seen_mode_changes: 0,
                handed_over: Vec::new(),
            };
            worker.run();
        })?;
    Ok(WorkerHandle {
        peer: Peer { commands, waker },
        ports,
        thread,
    })
}

struct Worker {
    index: usize,
    shared: Arc<Shared>,
    poll: Poll,
    inbox: Receiver<WorkerCommand>,
    count: Arc<AtomicUsize>,
    /// The lanes this worker is home to, by port (a worker has at most one
    /// lane of a port; the port id is the mio token).
    home: HashMap<PortId, (Arc<Lane>, Option<RawFd>)>,
    /// Ports whose lane of ours may have frames waiting (epoll is
    /// edge-triggered).
    ready: VecDeque<PortId>,
    /// For asking epoll between batches (see `collect_ready_now`).
    pending: Events,
    batch: RxBatch,
    fabric: Fabric,
    /// Ports whose link went down, to look at again shortly: an interface
    /// being deleted goes down first and only then disappears.
    suspects: Vec<(Arc<PortHandle>, Instant)>,
    /// Ports the last batch sent unicast frames to (see the module docs).
    sent_to: Vec<PortId>,
    /// The mode change this worker has seen last, and the ports it has
    /// handed over since (see `hand_over`).
    seen_mode_changes: u64,
    handed_over: Vec<PortId>,
    cpus: Cpus,
    load: LoadMeter,
    share: CpuShare,
    /// When the load meter was last told, and since when this worker has
    /// been forwarding without a sleep.
    accounted: Instant,
    working_since: Instant,
    /// Whether this thread is kept on its lane's CPUs right now.
    pinned: bool,
    /// Whether it asked for real-time priority, and whether that was refused.
    realtime: bool,
    realtime_refused: bool,
}

/// What a wake-up works with: the ports and receive lanes at that moment.
/// Dropped before sleeping, so a removed port's device is not kept open by
/// an idle worker.
struct View {
    generation: u64,
    ports: Arc<PortSet>,
    lanes: Arc<LanesByPort>,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let spin = self.shared.busy_poll;
        let mut last_frame = Instant::now()
            .checked_sub(spin)
            .unwrap_or_else(Instant::now);
        loop {
            self.follow_mode();
            // Busy polling (`--busy-poll`, off by default): for a while after
            // the last frame, look for the next one without sleeping, giving
            // the CPU to whatever else wants it in between; an idle switch
            // still sleeps. It was the way to low latency before ports were
            // read per CPU by real-time workers (`affinity.rs`), which wake
            // as fast; it also shrinks batches (frames are taken as they
            // come), which costs small-frame throughput on few CPUs.
            let spinning = last_frame.elapsed() < spin;
            let timeout = if spinning {
                Some(Duration::ZERO)
            } else if self.load.busy() {
                // Look at the load again even if no frame comes.
                Some(self.next_suspect_check().map_or(WINDOW, |t| t.min(WINDOW)))
            } else {
                self.next_suspect_check()
            };
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("worker stopped: waiting for ports failed: {err}");
                return;
            }
            if spinning && events.is_empty() {
                std::thread::yield_now();
                continue;
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.mark_ready(PortId(event.token().0 as u32));
                    if !spin.is_zero() {
                        last_frame = Instant::now();
                    }
                }
            }
            self.working_since = Instant::now();
            if !self.handle_commands() {
                return;
            }
            self.check_suspects();
            if !self.drain_ready_ports() {
                return;
            }
            self.account_load(true);
        }
    }

    /// Tells the load meter how long this worker has been forwarding since
    /// it last looked (at most once a window unless `now_or_never`, which a
    /// worker about to sleep sets). Called between batches too, so that a
    /// worker that never runs out of frames still changes the mode.
    fn account_load(&mut self, now_or_never: bool) {
        let now = Instant::now();
        if !now_or_never && now - self.accounted < WINDOW {
            return;
        }
        let elapsed = now - self.accounted;
        let working = now - self.working_since.max(self.accounted);
        self.accounted = now;
        self.working_since = now;
        if let Some(busy) = self.load.account(elapsed, working) {
            self.shared.worker_load_changed(busy);
        }
    }

    /// While traffic is light (frames read by CPU), keeps this thread on its
    /// lane's CPUs and at the lowest real-time priority (when allowed);
    /// under load, lets it run anywhere as an ordinary thread.
    fn follow_mode(&mut self) {
        let light = self.shared.by_cpu.load(Ordering::Relaxed);
        let pin = light && !self.cpus.lane.is_empty();
        if pin != self.pinned {
            let cpus = if pin { &self.cpus.lane } else { &self.cpus.all };
            if let Err(err) = ports::cpu::pin_current_thread(cpus) {
                log::debug!("worker {}: cannot keep to CPUs {cpus:?}: {err}", self.index);
            }
            self.pinned = pin;
        }
        let realtime = light && self.shared.realtime;
        if realtime != self.realtime {
            if let Err(err) = ports::cpu::set_realtime(realtime) {
                // Without CAP_SYS_NICE: stay an ordinary thread, say so once.
                if !self.realtime_refused && self.index == 0 {
                    log::info!(
                        "workers run at ordinary priority: real-time was refused ({err}); \
                         grant CAP_SYS_NICE for lower latency, or pass --no-realtime"
                    );
                    self.realtime_refused = true;
                }
            }
            self.realtime = realtime;
        }
    }

    /// Under load: lets whoever waits for this CPU run (usually the
    /// receiver of the frames just sent), and moves to another CPU when
    /// nobody has for a while but every CPU is busy (see `affinity.rs`).
    fn offer_cpu(&mut self) {
        let start = Instant::now();
        std::thread::yield_now();
        self.shared.yields.fetch_add(1, Ordering::Relaxed);
        if self.share.yielded(start.elapsed()) && ports::cpu::fully_busy() {
            match ports::cpu::move_to_another_cpu(&self.cpus.all) {
                Ok(true) => {
                    self.shared.cpu_moves.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(err) => log::debug!("worker {}: cannot move to another CPU: {err}", self.index),
            }
        }
    }

    /// Asks epoll, without waiting, which of our ports have frames now. A
    /// port whose batches keep coming full keeps this worker in
    /// `drain_ready_ports`, where epoll is otherwise not asked: one
    /// container's flood would starve every other port of the worker.
    fn collect_ready_now(&mut self) {
        if self
            .poll
            .poll(&mut self.pending, Some(Duration::ZERO))
            .is_err()
        {
            return;
        }
        // The waker's event needs nothing: commands are looked at between
        // batches anyway.
        for event in self.pending.iter().filter(|e| e.token() != WAKER) {
            push_once(&mut self.ready, PortId(event.token().0 as u32));
        }
    }

    fn mark_ready(&mut self, id: PortId) {
        push_once(&mut self.ready, id);
    }

    /// Applies queued commands; false on Stop.
    fn handle_commands(&mut self) -> bool {
        while let Ok(command) = self.inbox.try_recv() {
            match command {
                WorkerCommand::Add { lane } => self.add(lane),
                WorkerCommand::Remove { id, done } => {
                    self.remove(id);
                    let _ = done.send(());
                }
                WorkerCommand::Stop => return false,
            }
        }
        true
    }

    fn add(&mut self, lane: Arc<Lane>) {
        let id = lane.handle.id;
        let fd = lock(&lane).rx.as_ref().and_then(|rx| rx.raw_fd());
        if let Some(fd) = fd
            && let Err(err) = self.poll.registry().register(
                &mut SourceFd(&fd),
                Token(id.0 as usize),
                Interest::READABLE,
            )
        {
            log::error!(
                "port {}: cannot wait for its frames: {err}",
                lane.handle.name
            );
            return;
        }
        self.home.insert(id, (lane, fd));
        self.count.store(self.home.len(), Ordering::Relaxed);
        // Frames may have queued up before registration.
        self.mark_ready(id);
    }

    /// Stops reading port `id` and closes its receive half.
    fn remove(&mut self, id: PortId) {
        if let Some((lane, fd)) = self.home.remove(&id) {
            if let Some(fd) = fd {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            drop(lock(&lane).rx.take());
        }
        self.ready.retain(|r| *r != id);
        self.count.store(self.home.len(), Ordering::Relaxed);
    }

    /// Reads every ready home port until it has nothing left, one batch per
    /// port in turn, asking epoll again after every full batch, so a busy
    /// port cannot starve the others. Commands (a
    /// port removed, Stop) are applied between batches; false on Stop.
    fn drain_ready_ports(&mut self) -> bool {
        let mut view = self.view();
        while let Some(id) = self.ready.pop_front() {
            if self.shared.generation.load(Ordering::Acquire) != view.generation {
                view = self.view();
            }
            let Some((lane, _)) = self.home.get(&id) else {
                continue;
            };
            let lane = lane.clone();
            // Cheap unless the mode just changed: look the lane up only then.
            if self.needs_hand_over(id)
                && let Some(at) = view.lanes.get(&id).and_then(|p| p.position_of(&lane))
            {
                self.hand_over(&view, id, at);
            }
            // The home worker waits for the lock: a reader that beat it to
            // the port may have missed frames that arrived just after. The
            // lock is held until the batch is forwarded, so a port's frames
            // leave in the order they came, whoever reads them.
            let mut state = lock(&lane);
            let RxState { rx, error } = &mut *state;
            let Some(rx) = rx.as_mut() else { continue };
            let received = match rx.recv_batch(&mut self.batch) {
                Ok(0) => error.take().map_or(Ok(0), Err),
                other => other,
            };
            match received {
                Ok(0) => drop(state),
                Ok(n) => {
                    self.forward_batch(&view, &lane.handle, n, true);
                    drop(state);
                    // A full batch means more may be waiting (edge-triggered
                    // epoll will not tell us again): come back to it, after
                    // the other ports that have frames now.
                    if n == self.batch.capacity() {
                        self.collect_ready_now();
                        self.mark_ready(id);
                    }
                    self.take_answers(&view);
                    self.account_load(false);
                    let heavy = !self.shared.by_cpu.load(Ordering::Relaxed);
                    if self.share.forwarded(n, heavy) {
                        self.offer_cpu();
                    }
                }
                Err(err) => {
                    drop(state);
                    self.port_failed(&lane.handle, err);
                }
            }
            if !self.inbox.is_empty() && !self.handle_commands() {
                return false;
            }
        }
        true
    }

    fn view(&self) -> View {
        let generation = self.shared.generation.load(Ordering::Acquire);
        View {
            generation,
            ports: self.shared.snapshot(),
            lanes: self.shared.lanes_by_port(),
        }
    }

    /// Forwards the batch just received on `ingress`; with `note_targets`,
    /// notes the ports it sent unicast frames to (see `take_answers`).
    fn forward_batch(&mut self, view: &View, ingress: &PortHandle, n: usize, note_targets: bool) {
        let now = self.shared.clock.now();
        let mut session = self.shared.engine.session();
        if note_targets {
            self.sent_to.clear();
        }
        // Held unicast frames go when the pass ends, each port's in one
        // call, while the caller still holds the ingress lane's lock
        // (frames stay in order).
        let mut pass = self.fabric.pass(&view.ports);
        for i in 0..n {
            let (vnet, frame) = self.batch.get_mut(i);
            let verdict = pass.forward(&mut session, now, ingress, vnet, frame);
            if note_targets
                && let Action::Forward(egress) = verdict.action
                && !self.sent_to.contains(&egress)
            {
                self.sent_to.push(egress);
            }
        }
    }

    /// After a mode change, frames that came before it may still wait in
    /// lanes that no longer get frames, and they are older than anything
    /// in the lanes that do: forward them first, once per port and change,
    /// before reading lane `reading` of the port, so a sender's frames keep
    /// their order across the change. Reading per port, that is draining
    /// the other lanes before the solo lane; reading per CPU, draining the
    /// solo lane before any other. Another worker busy with one of those
    /// lanes is waited for (it forwards under the lock).
    fn hand_over(&mut self, view: &View, id: PortId, reading: usize) {
        if !self.needs_hand_over(id) {
            return;
        }
        let Some(port) = view.lanes.get(&id) else {
            return;
        };
        let by_cpu = self.shared.by_cpu.load(Ordering::Relaxed);
        let gets_frames_now = by_cpu || reading == port.solo;
        if !gets_frames_now {
            // A lane that no longer gets frames holds only older ones.
            return;
        }
        self.handed_over.push(id);
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
            let mut state = lock(lane);
            let RxState { rx, error } = &mut *state;
            let Some(rx) = rx.as_mut() else { continue };
            loop {
                match rx.recv_batch(&mut self.batch) {
                    Ok(0) => break,
                    Ok(n) => self.forward_batch(view, &lane.handle, n, false),
                    // The home worker acts on errors (see `take_answers`).
                    Err(err) => {
                        *error = Some(err);
                        break;
                    }
                }
            }
        }
    }

    /// Whether the mode changed since this worker last handed port `id` over.
    fn needs_hand_over(&mut self, id: PortId) -> bool {
        let changes = self.shared.mode_changes.load(Ordering::Acquire);
        if changes != self.seen_mode_changes {
            self.seen_mode_changes = changes;
            self.handed_over.clear();
        }
        changes != 0 && !self.handed_over.contains(&id)
    }

    /// Reads, once, the ports the last batch sent unicast frames to, where
    /// answers are likely waiting already (see the module docs): the lane
    /// the answer lands in goes back on the ready list if it is ours, and is
    /// read now if it is another worker's and nobody is reading it.
    fn take_answers(&mut self, view: &View) {
        let targets = std::mem::take(&mut self.sent_to);
        for id in &targets {
            let Some(port) = view.lanes.get(id) else {
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
                n if self.shared.by_cpu.load(Ordering::Relaxed) => {
                    ports::cpu::current_cpu().unwrap_or(0) % n
                }
                _ => port.solo,
            };
            let lane = &lanes[at];
            if lane.home == self.index {
                self.mark_ready(*id);
                continue;
            }
            self.hand_over(view, *id, at);
            // Only if nobody is reading it now; held while forwarding, as above.
            let mut state = match lane.rx.try_lock() {
                Ok(state) => state,
                Err(TryLockError::Poisoned(_)) | Err(TryLockError::WouldBlock) => continue,
            };
            let RxState { rx, error } = &mut *state;
            let Some(rx) = rx.as_mut() else { continue };
            match rx.recv_batch(&mut self.batch) {
                Ok(0) => {}
                // Answers to answers are not looked for.
                Ok(n) => self.forward_batch(view, &lane.handle, n, false),
                // Errors are the home worker's to act on; epoll wakes it
                // for them too.
                Err(err) => *error = Some(err),
            }
        }
        self.sent_to = targets;
        self.sent_to.clear();
    }

    /// A receive error. ENETDOWN means the link went down, which happens
    /// both when someone sets it down (the port stays: the kernel resumes
    /// delivery when it comes back up) and first thing when its interface is
    /// deleted. So a port that reports it is looked at again shortly, and
    /// removed if its interface is gone by then. Any other error removes the
    /// port at once.
    fn port_failed(&mut self, handle: &Arc<PortHandle>, err: io::Error) {
        if err.raw_os_error() == Some(ENETDOWN) {
            let recheck = Instant::now() + SUSPECT_RECHECK;
            self.suspects.retain(|(h, _)| h.id != handle.id);
            self.suspects.push((handle.clone(), recheck));
            return;
        }
        let reason = match ports::interface_index(&handle.name) {
            Some(_) => err.to_string(),
            None => "its interface is gone".to_string(),
        };
        self.retire(handle, reason);
    }

    /// How long epoll may sleep before a suspect port is due for a look.
    fn next_suspect_check(&self) -> Option<Duration> {
        if self.suspects.is_empty() {
            return None;
        }
        let now = Instant::now();
        self.suspects
            .iter()
            .map(|(_, at)| at.saturating_duration_since(now))
            .min()
    }

    /// Looks again at ports whose link went down: gone ones are removed,
    /// ones that are merely down stay (and are logged once).
    fn check_suspects(&mut self) {
        if self.suspects.is_empty() {
            return;
        }
        let now = Instant::now();
        let due: Vec<Arc<PortHandle>> = self
            .suspects
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(h, _)| h.clone())
            .collect();
        self.suspects.retain(|(_, at)| *at > now);
        for handle in due {
            if !self.home.contains_key(&handle.id) {
                continue;
            }
            if ports::interface_index(&handle.name).is_some() {
                log::warn!(
                    "port {}: link is down; frames resume when it comes back up",
                    handle.name
                );
            } else {
                self.retire(&handle, "its interface is gone".to_string());
            }
        }
    }

    /// Removes a broken port and tells the supervisor why.
    fn retire(&mut self, handle: &PortHandle, reason: String) {
        self.remove(handle.id);
        if self.shared.unpublish(handle.id).is_some() {
            // Its other lanes belong to other workers: have them closed too.
            for (index, peer) in self.shared.peers().iter().enumerate() {
                if index != self.index {
                    let (done, _) = crossbeam_channel::bounded(1);
                    peer.send(WorkerCommand::Remove {
                        id: handle.id,
                        done,
                    });
                }
            }
            let _ = self.shared.events.send(PortEvent::Removed {
                id: handle.id,
                name: handle.name.clone(),
                reason,
            });
        }
    }
}

/// Locks a lane; a worker that panicked mid-read left nothing half
/// done in it.
fn lock(lane: &Lane) -> std::sync::MutexGuard<'_, RxState> {
    lane.rx.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Puts `id` at the back of the ready list unless it is on it already.
fn push_once(ready: &mut VecDeque<PortId>, id: PortId) {
    if !ready.contains(&id) {
        ready.push_back(id);
    }
}

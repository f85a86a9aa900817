//! A worker thread. Its loop reads like the Linux bridge's `br_handle_frame`:
//! wait for a lane to become readable, read a batch, decide and deliver
//! every frame of it on the spot, account the work. Each job has its own
//! type: lanes and the hand-over in [`LaneReader`], where the thread runs in
//! [`Placement`], broken ports in [`PortHealth`].

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use ports::{RxBatch, RxError};

use super::affinity::{Cpus, KernelCpu, LoadBoard, Placement};
use super::delivery::Delivery;
use super::lanes::{HomeRead, Lane, LaneReader, LanesByPort};
use super::peer::{Peer, WorkerCommand, WorkerHandle};
use super::port_health::{Failure, PortHealth};
use super::{PortEvent, Shared};
use crate::fabric::{PortHandle, PortSet};
use crate::port::PortId;

/// The token of the waker other threads use to hand commands over.
const WAKER: Token = Token(usize::MAX);

/// Where a worker reports its load and reads the read mode: the switch's
/// shared state (see [`super::Dataplane::start`]).
pub(super) type Board = Arc<dyn LoadBoard + Send + Sync>;

/// Starts worker `index`, reporting its load to `board`.
pub(super) fn spawn(
    index: usize,
    cpus: Cpus,
    shared: Arc<Shared>,
    board: Board,
) -> io::Result<WorkerHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (commands, inbox) = crossbeam_channel::unbounded();
    let thread = std::thread::Builder::new()
        .name(format!("tapswitch-w{index}"))
        .spawn(move || {
            let tuning = shared.tuning;
            let worker = Worker {
                index,
                placement: Placement::new(
                    index,
                    cpus,
                    tuning.light_priority(),
                    KernelCpu,
                    Instant::now(),
                ),
                trace_generation: shared.live_trace.generation(),
                delivery: Delivery::new(shared.live_trace.sink(), tuning.coalesce_udp()),
                link_down: Vec::new(),
                shared,
                board,
                poll,
                inbox,
                home: HashMap::new(),
                ready: VecDeque::new(),
                answer_reads: Vec::new(),
                pending: Events::with_capacity(64),
                reader: LaneReader::new(index),
                health: PortHealth::default(),
            };
            worker.run();
        })?;
    Ok(WorkerHandle::new(Peer::new(commands, waker), thread))
}

struct Worker {
    index: usize,
    shared: Arc<Shared>,
    board: Board,
    poll: Poll,
    inbox: Receiver<WorkerCommand>,
    /// The lanes this worker is home to, by port (a worker has at most one
    /// lane of a port; the port id is the mio token).
    home: HashMap<PortId, (Arc<Lane>, Option<RawFd>)>,
    /// Ports whose lane of ours may have frames waiting (epoll watches
    /// TAP and packet-socket lanes level-triggered, the others
    /// edge-triggered: see `lanes.rs`).
    ready: VecDeque<PortId>,
    /// Those of `ready` put there to take the answer to a batch just sent
    /// (see `take_answers`). What they hold is forwarded without looking
    /// for an answer to it in turn, as in other workers' lanes: a ping's
    /// requester has nothing more to say, and a TCP sender's next segments
    /// are reported by epoll at once, where a read that finds the lane
    /// empty would cost a system call in the middle of every round trip.
    answer_reads: Vec<PortId>,
    /// For asking epoll between batches (see `collect_ready_now`).
    pending: Events,
    reader: LaneReader,
    delivery: Delivery,
    /// The trace settings `delivery` was made for (see `live_trace.rs`).
    trace_generation: u64,
    health: PortHealth,
    /// Ports whose link went down and that have not delivered a frame since.
    link_down: Vec<PortId>,
    placement: Placement,
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
        let spin = self.shared.tuning.busy_poll();
        let mut last_frame = Instant::now()
            .checked_sub(spin)
            .unwrap_or_else(Instant::now);
        loop {
            self.placement
                .follow_mode(self.shared.mode.lane_mode(), &*self.board);
            // Wait. Busy polling (`--busy-poll`, off by default): for a
            // while after the last frame, look for the next one without
            // sleeping, giving the CPU to whatever else wants it in
            // between. Real-time workers reading per CPU wake as fast, and
            // busy polling shrinks batches, which costs small-frame
            // throughput on few CPUs.
            let polled_at = Instant::now();
            let spinning = polled_at.saturating_duration_since(last_frame) < spin;
            let timeout = if spinning {
                Some(Duration::ZERO)
            } else {
                let looks = [self.placement.next_look(), self.next_suspect_check()];
                looks.into_iter().flatten().min()
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
            for event in events.iter().filter(|e| e.token() != WAKER) {
                self.mark_ready(PortId(event.token().0 as u32));
                if !spin.is_zero() {
                    last_frame = Instant::now();
                }
            }
            let woke_at = Instant::now();
            self.reader
                .woke(woke_at.saturating_duration_since(polled_at));
            self.placement.woke(woke_at);
            if !self.handle_commands() {
                return;
            }
            self.check_suspects();
            // Read, decide, deliver.
            if !self.drain_ready_ports() {
                return;
            }
            // Account.
            self.placement.about_to_sleep(Instant::now(), &*self.board);
        }
    }

    /// Reads every ready home port until it has nothing left, one batch per
    /// port in turn, asking epoll again after every full batch, so a busy
    /// port cannot starve the others. Commands (a port removed, Stop) are
    /// applied between batches; false on Stop.
    fn drain_ready_ports(&mut self) -> bool {
        self.follow_trace();
        let mut view = self.view();
        while let Some(id) = self.ready.pop_front() {
            if self.shared.generation.load(Ordering::Acquire) != view.generation {
                view = self.view();
            }
            let Some((lane, _)) = self.home.get(&id) else {
                continue;
            };
            let lane = lane.clone();
            let look_for_answers = !remove_from(&mut self.answer_reads, id);
            let (shared, delivery, ports) = (&self.shared, &mut self.delivery, &view.ports);
            let mut forward = |ingress: &Arc<PortHandle>, batch: &mut RxBatch, n, note: bool| {
                let note = note && look_for_answers;
                delivery.forward(shared, ports, ingress, batch, n, note)
            };
            match self
                .reader
                .read_home(&shared.mode, &view.lanes, &lane, &mut forward)
            {
                HomeRead::Empty => {}
                HomeRead::Forwarded { frames, full, lags } => {
                    if !self.link_down.is_empty() {
                        self.link_came_up(&lane.handle);
                    }
                    if lags {
                        // Steered by the housekeeping thread: telling the
                        // kernel waits for a grace period.
                        let _ = self.shared.lagging.send(id);
                    }
                    // More may be waiting: come back to it, after the other
                    // ports that have frames now.
                    if full {
                        self.collect_ready_now();
                        self.mark_ready(id);
                    }
                    // A lane read because answers were likely in it holds
                    // answers (see `lanes.rs`).
                    let answers = if look_for_answers { 0 } else { frames };
                    let taken = self.take_answers(&view);
                    let now = Instant::now();
                    self.placement.answers_taken(taken, now);
                    self.placement
                        .batch_forwarded(frames, answers, now, &*self.board);
                    // A worker that never runs out of frames does not get
                    // back to the top of its loop: it follows the mode (and
                    // its conversation) here, or a flood that began while
                    // traffic was light would keep it real-time.
                    self.placement
                        .follow_mode(self.shared.mode.lane_mode(), &*self.board);
                }
                HomeRead::Failed(err) => self.port_failed(&lane.handle, err),
            }
            self.placement.not_working(self.reader.take_waited());
            if !self.inbox.is_empty() && !self.handle_commands() {
                return false;
            }
        }
        true
    }

    /// Reads the lanes where answers to the last batch are likely waiting
    /// (see `lanes.rs`); ours go on the ready list. Returns how many frames
    /// it forwarded from other workers' lanes.
    fn take_answers(&mut self, view: &View) -> usize {
        let targets = self.delivery.take_targets();
        let (shared, delivery, ports) = (&self.shared, &mut self.delivery, &view.ports);
        let mut forward = |ingress: &Arc<PortHandle>, batch: &mut RxBatch, n, note| {
            delivery.forward(shared, ports, ingress, batch, n, note)
        };
        let (ready, answer_reads) = (&mut self.ready, &mut self.answer_reads);
        let mut next = |id| {
            if push_once(ready, id) {
                answer_reads.push(id);
            }
        };
        let lanes = &view.lanes;
        let reader = &mut self.reader;
        let taken = reader.take_answers(&shared.mode, lanes, &targets, &mut forward, &mut next);
        self.delivery.give_back(targets);
        taken
    }

    fn view(&self) -> View {
        let generation = self.shared.generation.load(Ordering::Acquire);
        View {
            generation,
            ports: self.shared.snapshot(),
            lanes: self.shared.lanes_by_port(),
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
                // Between wake-ups: what the batches hold was forwarded.
                WorkerCommand::ReleasePages => self.reader.release_pages(),
                WorkerCommand::Stop => return false,
            }
        }
        true
    }

    fn add(&mut self, lane: Arc<Lane>) {
        let id = lane.handle.id;
        let fd = lane.lock().rx.as_ref().and_then(|rx| rx.raw_fd());
        if let Some(fd) = fd
            && let Err(err) = self.watch(&lane, fd)
        {
            log::error!(
                "port {}: cannot wait for its frames: {err}",
                lane.handle.name
            );
            return;
        }
        self.home.insert(id, (lane, fd));
        // Frames may have queued up before registration.
        self.mark_ready(id);
    }

    /// Has epoll watch `lane`'s fd: level-triggered if the lane allows it
    /// (see `lanes.rs`), else edge-triggered as `mio` does.
    fn watch(&self, lane: &Lane, fd: RawFd) -> io::Result<()> {
        let token = lane.handle.id.0 as usize;
        if lane.level_triggered {
            ports::readiness::watch_level_triggered(self.poll.as_raw_fd(), fd, token)
        } else {
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
        }
    }

    /// Stops reading port `id` and closes its receive half.
    fn remove(&mut self, id: PortId) {
        if let Some((lane, fd)) = self.home.remove(&id) {
            if let Some(fd) = fd {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            drop(lane.lock().rx.take());
        }
        self.ready.retain(|r| *r != id);
        self.answer_reads.retain(|r| *r != id);
    }

    /// A receive error: the port is removed, or looked at again shortly if
    /// only its link went down (see `port_health.rs`).
    fn port_failed(&mut self, handle: &Arc<PortHandle>, err: RxError) {
        match self.health.failed(handle, err, Instant::now()) {
            Failure::Retire(reason) => self.retire(handle, reason),
            Failure::Suspect => {
                if !self.link_down.contains(&handle.id) {
                    self.link_down.push(handle.id);
                    self.shared.link_changed(handle, false);
                }
            }
        }
    }

    /// A port whose link was down delivered frames: it is up again.
    fn link_came_up(&mut self, handle: &PortHandle) {
        let before = self.link_down.len();
        self.link_down.retain(|id| *id != handle.id);
        if self.link_down.len() != before {
            self.shared.link_changed(handle, true);
        }
    }

    /// Makes the fabric again when the trace was turned on or off (a fabric
    /// keeps the trace sink it was made with). Between batches: nothing is
    /// held then.
    fn follow_trace(&mut self) {
        let generation = self.shared.live_trace.generation();
        if generation != self.trace_generation {
            self.trace_generation = generation;
            let coalesce = self.shared.tuning.coalesce_udp();
            self.delivery = Delivery::new(self.shared.live_trace.sink(), coalesce);
        }
    }

    /// How long epoll may sleep before a suspect port is due for a look.
    fn next_suspect_check(&self) -> Option<Duration> {
        if self.health.is_empty() {
            return None;
        }
        self.health.next_check(Instant::now())
    }

    /// Looks again at ports whose link went down: gone ones are removed.
    fn check_suspects(&mut self) {
        if self.health.is_empty() {
            return;
        }
        let home = &self.home;
        let retire = self.health.check_due(Instant::now(), |id| {
            let (lane, _) = home.get(&id)?;
            Some(lane.lock().rx.as_ref().is_none_or(|rx| rx.interface_gone()))
        });
        for (handle, reason) in retire {
            self.retire(&handle, reason);
        }
    }

    /// Removes a broken port and tells the supervisor why.
    fn retire(&mut self, handle: &PortHandle, reason: String) {
        self.remove(handle.id);
        self.link_down.retain(|id| *id != handle.id);
        if self.shared.unpublish(handle.id).is_some() {
            self.shared.port_removed(handle, Some(reason.clone()));
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

/// Puts `id` at the back of the ready list unless it is on it already;
/// whether it put it there.
fn push_once(ready: &mut VecDeque<PortId>, id: PortId) -> bool {
    let absent = !ready.contains(&id);
    if absent {
        ready.push_back(id);
    }
    absent
}

/// Removes `id` from `list`; whether it was there.
fn remove_from(list: &mut Vec<PortId>, id: PortId) -> bool {
    let at = list.iter().position(|x| *x == id);
    at.map(|at| list.swap_remove(at)).is_some()
}

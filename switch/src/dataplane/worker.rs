//! A worker thread: waits for its ports to become readable, reads a batch,
//! and forwards every frame of it on the spot.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use ports::{PortRx, RxBatch};

use super::{PortEvent, Shared};
use crate::fabric::{Fabric, PortHandle, PortSet};
use crate::port::PortId;

/// Frames per receive batch. 32 amortizes the read lock and syscall well;
/// more only adds latency for the other ports of the same worker.
const BATCH_FRAMES: usize = 32;

/// Bytes per batch slot: a 64 KiB GSO frame plus Ethernet and VLAN headers.
const SLOT_BYTES: usize = ports::MAX_FRAME_LEN;

const WAKER: Token = Token(usize::MAX);

pub(super) enum WorkerCommand {
    Add {
        handle: Arc<PortHandle>,
        rx: Box<dyn PortRx>,
    },
    Remove {
        id: PortId,
        done: Sender<()>,
    },
    Stop,
}

/// The dataplane's handle on one worker thread.
pub(super) struct WorkerHandle {
    commands: Sender<WorkerCommand>,
    waker: Arc<Waker>,
    ports: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

impl WorkerHandle {
    pub(super) fn send(&self, command: WorkerCommand) {
        // The worker only goes away after Stop, so a failed send means it
        // already stopped; nothing is left to do then.
        if self.commands.send(command).is_ok() {
            let _ = self.waker.wake();
        }
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

pub(super) fn spawn(index: usize, shared: Arc<Shared>) -> io::Result<WorkerHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (commands, inbox) = crossbeam_channel::unbounded();
    let ports = Arc::new(AtomicUsize::new(0));
    let count = ports.clone();
    let thread = std::thread::Builder::new()
        .name(format!("tapswitch-w{index}"))
        .spawn(move || {
            let worker = Worker {
                fabric: Fabric::new(shared.trace.clone()),
                ports: shared.snapshot(),
                generation: shared.generation.load(Ordering::Acquire),
                shared,
                poll,
                inbox,
                count,
                rx: HashMap::new(),
                ready: VecDeque::new(),
                batch: RxBatch::new(BATCH_FRAMES, SLOT_BYTES),
                suspects: Vec::new(),
            };
            worker.run();
        })?;
    Ok(WorkerHandle {
        commands,
        waker,
        ports,
        thread,
    })
}

struct Worker {
    shared: Arc<Shared>,
    poll: Poll,
    inbox: Receiver<WorkerCommand>,
    count: Arc<AtomicUsize>,
    /// The receive halves this worker owns, by port id (also the mio token).
    rx: HashMap<PortId, (Arc<PortHandle>, Box<dyn PortRx>)>,
    /// Ports that may have frames waiting (epoll is edge-triggered).
    ready: VecDeque<PortId>,
    batch: RxBatch,
    fabric: Fabric,
    ports: Arc<PortSet>,
    generation: u64,
    /// Ports whose link went down, to look at again shortly: an interface
    /// being deleted goes down first and only then disappears.
    suspects: Vec<(Arc<PortHandle>, std::time::Instant)>,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            let timeout = self.next_suspect_check();
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("worker stopped: waiting for ports failed: {err}");
                return;
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.mark_ready(PortId(event.token().0 as u32));
                }
            }
            if !self.handle_commands() {
                return;
            }
            self.check_suspects();
            if !self.drain_ready_ports() {
                return;
            }
        }
    }

    fn mark_ready(&mut self, id: PortId) {
        if !self.ready.contains(&id) {
            self.ready.push_back(id);
        }
    }

    /// Applies queued commands; false on Stop.
    fn handle_commands(&mut self) -> bool {
        while let Ok(command) = self.inbox.try_recv() {
            match command {
                WorkerCommand::Add { handle, rx } => self.add(handle, rx),
                WorkerCommand::Remove { id, done } => {
                    self.remove(id);
                    let _ = done.send(());
                }
                WorkerCommand::Stop => return false,
            }
        }
        true
    }

    fn add(&mut self, handle: Arc<PortHandle>, rx: Box<dyn PortRx>) {
        let id = handle.id;
        if let Some(fd) = rx.raw_fd()
            && let Err(err) = self.poll.registry().register(
                &mut SourceFd(&fd),
                Token(id.0 as usize),
                Interest::READABLE,
            )
        {
            log::error!("port {}: cannot wait for its frames: {err}", handle.name);
            return;
        }
        self.rx.insert(id, (handle, rx));
        self.count.store(self.rx.len(), Ordering::Relaxed);
        // Frames may have queued up before registration.
        self.mark_ready(id);
    }

    fn remove(&mut self, id: PortId) {
        if let Some((_, rx)) = self.rx.remove(&id)
            && let Some(fd) = rx.raw_fd()
        {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        self.ready.retain(|r| *r != id);
        self.count.store(self.rx.len(), Ordering::Relaxed);
    }

    /// Reads every ready port until it has nothing left, one batch per port
    /// in turn so a busy port cannot starve the others. Commands (a port
    /// removed, Stop) are applied between batches; false on Stop.
    fn drain_ready_ports(&mut self) -> bool {
        while let Some(id) = self.ready.pop_front() {
            self.refresh_ports();
            let Some((handle, rx)) = self.rx.get_mut(&id) else {
                continue;
            };
            let handle = handle.clone();
            match rx.recv_batch(&mut self.batch) {
                Ok(0) => {}
                Ok(n) => {
                    self.forward_batch(&handle, n);
                    // A full batch means more may be waiting (edge-triggered
                    // epoll will not tell us again): come back to it.
                    if n == self.batch.capacity() {
                        self.ready.push_back(id);
                    }
                }
                Err(err) => self.port_failed(&handle, err),
            }
            if !self.inbox.is_empty() && !self.handle_commands() {
                return false;
            }
        }
        true
    }

    fn forward_batch(&mut self, ingress: &PortHandle, n: usize) {
        let now = self.shared.clock.now();
        let mut session = self.shared.engine.session();
        for i in 0..n {
            let (vnet, frame) = self.batch.get_mut(i);
            self.fabric
                .forward(&mut session, &self.ports, now, ingress, vnet, frame);
        }
    }

    fn refresh_ports(&mut self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.generation = generation;
            self.ports = self.shared.snapshot();
        }
    }

    /// A receive error. ENETDOWN means the link went down, which happens
    /// both when someone sets it down (the port stays: the kernel resumes
    /// delivery when it comes back up) and first thing when its interface is
    /// deleted. So a port that reports it is looked at again shortly, and
    /// removed if its interface is gone by then. Any other error removes the
    /// port at once.
    fn port_failed(&mut self, handle: &Arc<PortHandle>, err: io::Error) {
        if err.raw_os_error() == Some(ENETDOWN) {
            let recheck = std::time::Instant::now() + SUSPECT_RECHECK;
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
    fn next_suspect_check(&self) -> Option<std::time::Duration> {
        let now = std::time::Instant::now();
        self.suspects
            .iter()
            .map(|(_, at)| at.saturating_duration_since(now))
            .min()
    }

    /// Looks again at ports whose link went down: gone ones are removed,
    /// ones that are merely down stay (and are logged once).
    fn check_suspects(&mut self) {
        let now = std::time::Instant::now();
        let due: Vec<Arc<PortHandle>> = self
            .suspects
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(h, _)| h.clone())
            .collect();
        self.suspects.retain(|(_, at)| *at > now);
        for handle in due {
            if !self.rx.contains_key(&handle.id) {
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
            let _ = self.shared.events.send(PortEvent::Removed {
                id: handle.id,
                name: handle.name.clone(),
                reason,
            });
        }
    }
}

/// How long after ENETDOWN a port is checked for a deleted interface.
const SUSPECT_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// ENETDOWN on Linux (the switch crate stays free of libc).
const ENETDOWN: i32 = 100;

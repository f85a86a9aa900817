//! The live dataplane: worker threads that read ports and forward through
//! the [`Fabric`](crate::fabric::Fabric), a gateway thread, and a housekeeping thread that sweeps
//! the MAC table.
//!
//! ```text
//!  worker 0: epoll ─► recvmmsg batch ─► Session (MAC table read lock)
//!  worker 1:   ...                      └► Fabric::forward ─► send on the egress port's fd
//!  gateway:  channel ◄─ frames for gw;  smoltcp replies ─► Fabric::forward
//!  housekeeping: every second, expire aged-out MAC entries
//! ```
//!
//! A port's receive half is read in lanes: one per worker, for a veth end
//! (`--iface`) the sockets of a fanout group, for a TAP the queues of a
//! multi-queue device. While traffic is light the kernel hands a frame to
//! the lane of the CPU it arrived on and worker `i` is kept on lane `i`'s
//! CPUs, so a frame is forwarded on the CPU its sender runs on, the way the
//! kernel bridge forwards inside the sender's own system call; once a
//! worker is busy, each port's frames all go to one lane and workers run
//! anywhere (`affinity.rs`). A port that cannot be read in lanes (an older
//! kernel, a single-queue TAP made by someone else) has one, read by the
//! worker with the fewest lanes when it was added. The send half is
//! shared, so any thread sends to any port directly, without a channel hop.
//! Workers block in `epoll_wait` when idle: no busy polling.
//!
//! The set of ports is published as an immutable [`PortSet`] snapshot; a
//! worker checks a generation counter once per batch and picks up a new
//! snapshot when ports were added or removed.

mod affinity;
mod gateway_thread;
mod worker;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use ports::capture::{CaptureDir, PortCapture};
use ports::{PortKind, PortRx, PortTx};

use crate::engine::Engine;
use crate::fabric::{PortHandle, PortSet, TraceSink};
use crate::gateway::Gateway;
use crate::mac_table::TableConfig;
use crate::port::PortId;
use crate::stats::PortCounters;
use crate::time::Instant;

use self::affinity::Mode;
use self::gateway_thread::GatewayThread;
use self::worker::{Peer, WorkerCommand, WorkerHandle};

/// The name of the gateway's internal port in tables and trace lines.
pub const GATEWAY_PORT_NAME: &str = "gw";

/// How often the housekeeping thread sweeps expired MAC entries. Lookups
/// ignore expired entries anyway; the sweep only frees memory and counts.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How the dataplane runs.
#[derive(Clone)]
pub struct DataplaneConfig {
    pub workers: usize,
    pub table: TableConfig,
    /// The gateway's address and prefix length; `None` runs without one.
    pub gateway: Option<(Ipv4Addr, u8)>,
    /// Where `--trace` lines go; `None` traces nothing.
    pub trace: Option<Arc<TraceSink>>,
    /// `--capture DIR`: every port records into `DIR/<port>.pcapng`.
    pub capture: Option<Arc<CaptureDir>>,
    /// How long a worker keeps polling without sleeping after its last frame
    /// (zero: it sleeps as soon as its ports are empty).
    pub busy_poll: std::time::Duration,
    /// Whether workers take the lowest real-time priority while traffic is
    /// light (see `affinity.rs`); never combine with `busy_poll`.
    pub realtime: bool,
    /// Whether workers send runs of one UDP flow's datagrams as UDP GSO
    /// super-frames (see `ports::coalesce`) where the kernel takes them;
    /// `serve --no-coalesce` turns it off.
    pub coalesce_udp: bool,
}

impl std::fmt::Debug for DataplaneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataplaneConfig")
            .field("workers", &self.workers)
            .field("table", &self.table)
            .field("gateway", &self.gateway)
            .field("trace", &self.trace.is_some())
            .field("busy_poll", &self.busy_poll)
            .field("realtime", &self.realtime)
            .field("coalesce_udp", &self.coalesce_udp)
            .field(
                "capture",
                &self.capture.as_ref().map(|c| c.dir().to_path_buf()),
            )
            .finish()
    }
}

/// How the workers read veth ports (see `affinity.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// One worker reads everything.
    OneLane,
    /// Light traffic: each frame in the lane of the CPU it arrived on, read
    /// by the worker kept on that CPU.
    ByCpu,
    /// Heavy traffic: each port in one lane, workers anywhere.
    ByPort,
}

impl Reading {
    /// The words `tapswitch stats` uses.
    pub fn describe(self) -> &'static str {
        match self {
            Reading::OneLane => "by one worker",
            Reading::ByCpu => "per CPU (traffic is light)",
            Reading::ByPort => "per port (traffic is heavy)",
        }
    }
}

/// Something that happened to a port on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortEvent {
    /// The port broke (its interface was deleted) and has been removed.
    Removed {
        id: PortId,
        name: String,
        reason: String,
    },
}

/// A monotonic clock started with the switch: the engine's time source.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: std::time::Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock {
            start: std::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

/// One receive lane of a port. Its home worker waits for it in epoll and
/// reads it dry; another worker that has just sent a unicast frame to the
/// port may take one batch from it too (see `worker.rs`). Whoever reads a
/// batch holds the lock until the batch is forwarded, so a lane's frames
/// keep their order.
struct Lane {
    handle: Arc<PortHandle>,
    home: usize,
    rx: Mutex<RxState>,
}

/// The receive half and an error another worker read from it (a socket
/// reports an error once, to whoever reads first; the home worker acts on it).
struct RxState {
    rx: Option<Box<dyn PortRx>>,
    error: Option<std::io::Error>,
}

/// A port's receive lanes: one, or one per worker (lane `i` read by worker
/// `i`). `solo` is the lane that gets every frame while the switch is busy
/// (see `affinity.rs`); ports are spread over the workers that way.
#[derive(Clone)]
struct PortLanes {
    solo: usize,
    lanes: Vec<Arc<Lane>>,
}

impl PortLanes {
    /// Which of the port's lanes `lane` is.
    fn position_of(&self, lane: &Arc<Lane>) -> Option<usize> {
        self.lanes.iter().position(|l| Arc::ptr_eq(l, lane))
    }

    /// Tells the port's fanout group where frames go in this mode.
    fn steer(&self, by_cpu: bool) {
        if self.lanes.len() < 2 {
            return;
        }
        let port = &self.lanes[0].handle;
        let lane = if by_cpu { None } else { Some(self.solo) };
        if let Err(err) = port.tx.steer(lane) {
            log::warn!("port {}: cannot steer its frames: {err}", port.name);
        }
    }
}

/// The receive lanes by port, published with the ports.
type LanesByPort = HashMap<PortId, PortLanes>;

/// State the threads share.
struct Shared {
    engine: Engine,
    ports: RwLock<Arc<PortSet>>,
    lanes_by_port: RwLock<Arc<LanesByPort>>,
    generation: AtomicU64,
    clock: Clock,
    trace: Option<Arc<TraceSink>>,
    events: Sender<PortEvent>,
    capture: Option<Arc<CaptureDir>>,
    busy_poll: std::time::Duration,
    realtime: bool,
    coalesce_udp: bool,
    /// Whether frames are read by CPU or by port (see `affinity.rs`); the
    /// lock also serializes steering the ports' fanout groups.
    mode: Mutex<Mode>,
    /// `mode.by_cpu()`, for workers to read once per wake-up.
    by_cpu: AtomicBool,
    /// How often the mode changed, for `tapswitch stats`.
    mode_changes: AtomicU64,
    /// Under load: how often workers offered their CPU, and how often they
    /// moved to another CPU (see `affinity.rs`).
    yields: AtomicU64,
    cpu_moves: AtomicU64,
    /// Every worker, by index, for a worker that must tell the others
    /// something (set once they all run).
    peers: std::sync::OnceLock<Vec<Peer>>,
    /// Serializes port additions and removals (id allocation and publishing).
    membership: Mutex<()>,
    next_hint: AtomicU32,
}

impl Shared {
    /// Opens `name`'s capture file when the switch captures (recording from
    /// the start); a file that cannot be made is logged, not fatal.
    fn capture_port(&self, name: &str) -> Option<Arc<PortCapture>> {
        let dir = self.capture.as_ref()?;
        match dir.add_port(name, true) {
            Ok(capture) => Some(capture),
            Err(err) => {
                log::warn!(
                    "port {name}: not capturing: cannot create {}: {err}",
                    dir.path_for(name).display()
                );
                None
            }
        }
    }

    /// A worker became busy or calm: switch every port between reading by
    /// CPU and by port when that changes the mode.
    fn worker_load_changed(&self, busy: bool) {
        let mut mode = self.mode.lock().unwrap_or_else(PoisonError::into_inner);
        if !mode.worker_changed(busy) {
            return;
        }
        let by_cpu = mode.by_cpu();
        log::debug!(
            "{}",
            if by_cpu {
                "traffic is light: reading frames on the CPU they arrive on"
            } else {
                "traffic is heavy: reading each port in one lane"
            }
        );
        // Counted before the ports are steered: a worker that reads a lane
        // the change sends frames to has seen it, and hands the port over
        // first (see `Worker::hand_over`).
        self.by_cpu.store(by_cpu, Ordering::Relaxed);
        self.mode_changes.fetch_add(1, Ordering::AcqRel);
        for port in self.lanes_by_port().values() {
            port.steer(by_cpu);
        }
    }

    fn peers(&self) -> &[Peer] {
        self.peers.get().map_or(&[], Vec::as_slice)
    }

    fn snapshot(&self) -> Arc<PortSet> {
        self.ports
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lanes_by_port(&self) -> Arc<LanesByPort> {
        self.lanes_by_port
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Publishes a new set of ports (and receive lanes, when given). The
    /// caller holds `membership`.
    fn publish(&self, ports: PortSet, lanes: Option<LanesByPort>) {
        *self.ports.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ports);
        if let Some(lanes) = lanes {
            *self
                .lanes_by_port
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Arc::new(lanes);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Takes port `id` out of service: no more sends to it, its MAC entries
    /// forgotten. The caller deals with its receive half.
    fn unpublish(&self, id: PortId) -> Option<Arc<PortHandle>> {
        let _guard = self
            .membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshot();
        let handle = current.get(id).cloned()?;
        let mut lanes = (*self.lanes_by_port()).clone();
        lanes.remove(&id);
        self.publish(current.without(id), Some(lanes));
        self.engine.table().flush_port(id);
        if let Some(capture) = &self.capture {
            capture.remove_port(&handle.name);
        }
        Some(handle)
    }
}

/// The running dataplane. Dropping it stops every thread.
pub struct Dataplane {
    shared: Arc<Shared>,
    workers: Vec<WorkerHandle>,
    gateway: Option<GatewayThread>,
    housekeeping: Option<(Sender<()>, JoinHandle<()>)>,
    events: Receiver<PortEvent>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Dataplane({} workers, {} ports)",
            self.workers.len(),
            self.shared.snapshot().len()
        )
    }
}

impl Dataplane {
    /// Starts the threads. With a gateway configured, its port (0, "gw") is
    /// attached and its MAC made a local entry.
    pub fn start(config: DataplaneConfig) -> std::io::Result<Dataplane> {
        let (events_tx, events) = crossbeam_channel::unbounded();
        let clock = Clock::start();
        let shared = Arc::new(Shared {
            engine: Engine::new(config.table),
            ports: RwLock::new(Arc::new(PortSet::default())),
            lanes_by_port: RwLock::new(Arc::default()),
            generation: AtomicU64::new(0),
            clock,
            trace: config.trace.clone(),
            events: events_tx,
            capture: config.capture.clone(),
            busy_poll: config.busy_poll,
            realtime: config.realtime && config.busy_poll.is_zero(),
            coalesce_udp: config.coalesce_udp && ports::coalesce::kernel_supports(),
            mode: Mutex::new(Mode::default()),
            by_cpu: AtomicBool::new(true),
            mode_changes: AtomicU64::new(0),
            yields: AtomicU64::new(0),
            cpu_moves: AtomicU64::new(0),
            peers: std::sync::OnceLock::new(),
            membership: Mutex::new(()),
            next_hint: AtomicU32::new(1),
        });
        let count = config.workers.max(1);
        let allowed = ports::cpu::allowed_cpus().unwrap_or_default();
        let mut workers = Vec::new();
        for index in 0..count {
            // One worker reads every lane: no point in keeping it anywhere.
            let lane = if count > 1 {
                ports::cpu::lane_cpus(index, count, &allowed)
            } else {
                Vec::new()
            };
            let cpus = worker::Cpus {
                lane,
                all: allowed.clone(),
            };
            workers.push(worker::spawn(index, cpus, shared.clone())?);
        }
        let _ = shared
            .peers
            .set(workers.iter().map(WorkerHandle::peer).collect());
        let gateway = match config.gateway {
            Some((address, prefix_len)) => {
                let gw = Gateway::new(address, prefix_len, clock.now());
                Some(gateway_thread::spawn(gw, shared.clone())?)
            }
            None => None,
        };
        let housekeeping = Some(spawn_housekeeping(shared.clone())?);
        Ok(Dataplane {
            shared,
            workers,
            gateway,
            housekeeping,
            events,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    pub fn clock(&self) -> Clock {
        self.shared.clock
    }

    /// The current ports.
    pub fn ports(&self) -> Arc<PortSet> {
        self.shared.snapshot()
    }

    /// Events from ports that broke on their own (see [`PortEvent`]).
    pub fn events(&self) -> &Receiver<PortEvent> {
        &self.events
    }

    /// The gateway's address, prefix and MAC, if there is one.
    pub fn gateway(&self) -> Option<(Ipv4Addr, u8, crate::MacAddr)> {
        self.gateway
            .as_ref()
            .map(|g| (g.address, g.prefix_len, g.mac))
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// How ports are read right now (see `affinity.rs`), and how many times
    /// that changed.
    pub fn reading(&self) -> (Reading, u64) {
        let reading = if self.workers.len() < 2 {
            Reading::OneLane
        } else if self.shared.by_cpu.load(Ordering::Relaxed) {
            Reading::ByCpu
        } else {
            Reading::ByPort
        };
        (reading, self.shared.mode_changes.load(Ordering::Relaxed))
    }

    /// How often workers under load offered their CPU to other threads,
    /// and how often they moved to another CPU to get next to a receiver.
    pub fn cpu_sharing(&self) -> (u64, u64) {
        (
            self.shared.yields.load(Ordering::Relaxed),
            self.shared.cpu_moves.load(Ordering::Relaxed),
        )
    }

    /// How many receive lanes port `id` is read in (0: no such port; the
    /// gateway has none).
    pub fn lanes_of(&self, id: PortId) -> usize {
        self.shared
            .lanes_by_port()
            .get(&id)
            .map_or(0, |port| port.lanes.len())
    }

    /// How many receive lanes a port should come with when it can be read
    /// per CPU (see [`ports::packet::open_lanes`]): one per worker.
    pub fn lanes(&self) -> usize {
        self.workers.len()
    }

    /// Attaches a port read through `lanes` (one per worker, lane `i` read
    /// by worker `i`; or a single one, given to the least busy worker);
    /// returns its number (the lowest free one from 1, as the Linux bridge
    /// numbers its ports).
    pub fn add_port(
        &self,
        name: &str,
        kind: PortKind,
        lanes: Vec<Box<dyn PortRx>>,
        tx: Arc<dyn PortTx>,
    ) -> PortId {
        let guard = self
            .shared
            .membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.shared.snapshot();
        let id = (1..)
            .map(PortId)
            .find(|id| current.get(*id).is_none())
            .expect("fewer than 2^32 ports");
        let handle = Arc::new(PortHandle {
            id,
            name: name.to_string(),
            kind,
            tx,
            counters: Arc::new(PortCounters::default()),
            capture: self.shared.capture_port(name),
        });
        let solo = self.least_loaded_worker();
        let homes: Vec<usize> = if lanes.len() == self.workers.len() {
            (0..lanes.len()).collect()
        } else {
            assert_eq!(lanes.len(), 1, "a port has one lane or one per worker");
            vec![solo]
        };
        let lanes_of_port: Vec<Arc<Lane>> = lanes
            .into_iter()
            .zip(&homes)
            .map(|(rx, &home)| {
                Arc::new(Lane {
                    handle: handle.clone(),
                    home,
                    rx: Mutex::new(RxState {
                        rx: Some(rx),
                        error: None,
                    }),
                })
            })
            .collect();
        let port_lanes = PortLanes {
            solo,
            lanes: lanes_of_port,
        };
        let mut lanes = (*self.shared.lanes_by_port()).clone();
        lanes.insert(id, port_lanes.clone());
        self.shared.publish(current.with(handle), Some(lanes));
        drop(guard);
        {
            let mode = self
                .shared
                .mode
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            port_lanes.steer(mode.by_cpu());
        }
        for lane in port_lanes.lanes {
            self.workers[lane.home].send(WorkerCommand::Add { lane });
        }
        id
    }

    /// Detaches port `id`: no frame goes to it once this returns, its MAC
    /// entries are gone, and its receive half is closed (a TAP the switch
    /// created disappears). False if there was no such port.
    pub fn remove_port(&self, id: PortId) -> bool {
        if id == PortId::GATEWAY || self.shared.unpublish(id).is_none() {
            return false;
        }
        for worker in &self.workers {
            worker.remove_and_wait(id);
        }
        true
    }

    /// The index of the worker with the fewest lanes (ties rotate): where a
    /// single-lane port goes, and a port's solo lane.
    fn least_loaded_worker(&self) -> usize {
        let hint = self.shared.next_hint.fetch_add(1, Ordering::Relaxed) as usize;
        let n = self.workers.len();
        (0..n)
            .map(|i| (hint + i) % n)
            .min_by_key(|&i| self.workers[i].port_count())
            .expect("at least one worker")
    }

    /// Stops every thread and closes every port.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for worker in &self.workers {
            worker.send(WorkerCommand::Stop);
        }
        for worker in self.workers.drain(..) {
            worker.join();
        }
        if let Some(gateway) = self.gateway.take() {
            gateway.stop();
        }
        if let Some((stop, handle)) = self.housekeeping.take() {
            drop(stop);
            let _ = handle.join();
        }
        if let Some(capture) = &self.shared.capture {
            capture.flush();
        }
        self.shared
            .publish(PortSet::default(), Some(LanesByPort::new()));
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_housekeeping(shared: Arc<Shared>) -> std::io::Result<(Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let handle = std::thread::Builder::new()
        .name("tapswitch-aging".into())
        .spawn(move || {
            // Returns when the sender is dropped (Disconnected).
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(SWEEP_INTERVAL)
            {
                let removed = shared.engine.table().expire(shared.clock.now());
                if removed > 0 {
                    log::debug!("aged out {removed} MAC entries");
                }
                count_kernel_drops(&shared);
            }
        })?;
    Ok((stop, handle))
}

/// Adds the frames each port's kernel queue dropped (the switch was too
/// slow) to its counters, so `tapswitch ports` shows every drop. A port that
/// a worker is reading right now is counted next time.
fn count_kernel_drops(shared: &Shared) {
    for lane in shared.lanes_by_port().values().flat_map(|port| &port.lanes) {
        let Ok(mut state) = lane.rx.try_lock() else {
            continue;
        };
        if let Some(rx) = state.rx.as_mut() {
            let drops = rx.take_kernel_drops();
            if drops > 0 {
                lane.handle
                    .counters
                    .count_drops(crate::stats::DropReason::RxOverflow, drops);
            }
        }
    }
}

//! The live dataplane: worker threads that read ports and forward through
//! the [`Fabric`](crate::fabric::Fabric), a gateway thread, and a housekeeping thread that sweeps
//! the MAC table.
//!
//! ```text
//!  worker 0: epoll ─► recvmmsg batch ─► Session (MAC table read lock)
//!  worker 1:   ...                      └► Fabric::forward ─► send on the egress port's fd
//!  gateway:  channel ◄─ frames for gw;  smoltcp replies ─► Fabric::forward
//!  housekeeping: every second, expire aged-out MAC entries; steer ports
//!                after a mode change and when they wake up (the kernel's
//!                wait is spent here, never in a worker)
//! ```
//!
//! Where each job lives:
//!
//! - `worker.rs`: one worker's loop: wait, read, decide, deliver, account;
//!   `peer.rs`: the other threads' handle on it (commands, waker).
//! - `delivery.rs`: a worker's use of the fabric (decide and send a batch).
//! - `lanes.rs`: reading a port's receive lanes: locking, order, the
//!   hand-over on a mode change, taking answers from other workers' lanes.
//! - `affinity.rs`: the read mode and each worker's place on the CPUs;
//!   `steering.rs`: where the kernel puts each port's frames (a mode
//!   change re-steers only the ports read since the last one);
//!   `pairing.rs`: which worker reads a busy port (next to the port it
//!   talks to).
//! - `housekeeping.rs`: the housekeeping thread (the MAC table's sweep,
//!   kernel drops, steering lagging ports).
//! - `port_health.rs`: ports whose link went down or that broke.
//! - `gateway_thread.rs`: the gateway (smoltcp) on its own thread.
//! - `live_trace.rs`: `--trace` turned on and off while the switch runs.
//! - `shortcut/`: the kernel's part of forwarding (known unicast between
//!   veth ends), kept in step with the MAC table.
//! - `tuning.rs`, `metrics.rs`: the knobs in, the snapshot out.
//!
//! A port's receive half is read in lanes: one per worker, for a veth end
//! (`--iface`) the sockets of a fanout group, for a TAP the queues of a
//! multi-queue device. The dataplane decides how many: a port is opened
//! with the number of workers ([`Dataplane::add_port`]). While traffic is
//! light the kernel hands a frame to the lane of the CPU it arrived on and
//! worker `i` is kept on lane `i`'s CPUs, so a frame is forwarded on the CPU
//! its sender runs on, the way the kernel bridge forwards inside the
//! sender's own system call; once a worker is busy, each port's frames all
//! go to one lane and workers run anywhere (`affinity.rs`). A port that
//! cannot be read in lanes (an older kernel, a single-queue TAP made by
//! someone else) has one, read by the worker with the fewest lanes when it
//! was added. The send half is shared, so any thread sends to any port
//! directly, without a channel hop. Workers block in `epoll_wait` when
//! idle: no busy polling unless asked for.
//!
//! The set of ports is published as an immutable [`PortSet`] snapshot; a
//! worker checks a generation counter once per batch and picks up a new
//! snapshot when ports were added or removed.

mod affinity;
mod delivery;
mod gateway_thread;
mod housekeeping;
mod lanes;
mod link_watch;
mod live_trace;
mod metrics;
mod pairing;
mod peer;
mod port_health;
mod shortcut;
mod steering;
#[cfg(test)]
mod tests;
mod tuning;
mod worker;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use ports::capture::{CaptureDir, PortCapture};
use ports::{OpenedPort, PortError};

use crate::engine::Engine;
use crate::events::{EventBus, SwitchEvent};
use crate::fabric::{PortHandle, PortSet};
use crate::gateway::Gateway;
use crate::port::PortId;
use crate::stats::PortCounters;
use crate::time::Instant;

pub use self::live_trace::{TraceSettings, concerns_port};
pub use self::metrics::{
    DataplaneMetrics, LightScheduling, PortReading, ShortcutMetrics, ShortcutState,
};
pub use self::tuning::{DataplaneConfig, Tuning};
pub use crate::port::GATEWAY_PORT_NAME;
pub use ports::ReadMode;

use self::affinity::{LoadBoard, ModeSwitch};
use self::gateway_thread::GatewayThread;
use self::lanes::{Lane, LanesByPort, PortLanes};
use self::peer::{Peer, WorkerCommand, WorkerHandle};

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

/// State the threads share.
struct Shared {
    engine: Engine,
    ports: RwLock<Arc<PortSet>>,
    lanes_by_port: RwLock<Arc<LanesByPort>>,
    generation: AtomicU64,
    clock: Clock,
    /// What workers and the gateway thread trace, switched while running.
    live_trace: Arc<live_trace::LiveTrace>,
    /// The switch's events for subscribers (`tapswitch monitor`).
    bus: EventBus,
    events: Sender<PortEvent>,
    capture: Option<Arc<CaptureDir>>,
    tuning: Tuning,
    /// Whether frames are read by CPU or by port (see `affinity.rs`).
    mode: ModeSwitch,
    /// Under load: how often workers offered their CPU, and how often they
    /// moved to another CPU (see `affinity.rs`).
    cpu_yields: AtomicU64,
    cpu_moves: AtomicU64,
    /// Under load: workers kept real-time for a conversation now, and how
    /// often one began to be (see `affinity.rs`).
    conversing_now: AtomicUsize,
    conversations: AtomicU64,
    /// Whether a worker was refused real-time priority (it takes short
    /// time slices instead, see `affinity.rs`).
    realtime_refused: AtomicBool,
    /// Every worker, by index, for a worker that must tell the others
    /// something (set once they all run).
    peers: std::sync::OnceLock<Vec<Peer>>,
    /// Ports whose steering lags behind the read mode, for the
    /// housekeeping thread to steer (see `steering.rs`).
    lagging: Sender<PortId>,
    /// Serializes port additions and removals (id allocation and publishing).
    membership: Mutex<()>,
    /// Known unicast between veth ends forwarded by the kernel; `None`
    /// with `--no-kernel-shortcut` or where the kernel refused it.
    shortcut: Option<shortcut::Shortcut>,
    /// Whether the housekeeping thread rests, and its wake-up.
    rest: housekeeping::Rest,
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
        if let Some(shortcut) = &self.shortcut {
            shortcut.detach(id);
        }
        self.publish(current.without(id), Some(lanes));
        self.engine.table().flush_port(id);
        if let Some(capture) = &self.capture {
            capture.remove_port(&handle.name);
        }
        Some(handle)
    }
}

impl Shared {
    /// Tells subscribers that a port is gone, and why if it broke.
    fn port_removed(&self, handle: &PortHandle, reason: Option<String>) {
        self.bus
            .publish_with(Some(self.clock.now()), || SwitchEvent::PortRemoved {
                port: handle.id,
                name: handle.name.clone(),
                reason,
            });
    }

    /// Tells subscribers that a port's link went down or came back up.
    fn link_changed(&self, handle: &PortHandle, up: bool) {
        self.bus.publish_with(Some(self.clock.now()), || {
            let (port, name) = (handle.id, handle.name.clone());
            if up {
                SwitchEvent::LinkUp { port, name }
            } else {
                SwitchEvent::LinkDown { port, name }
            }
        });
    }
}

impl Shared {
    /// After a mode change: the ports read lately are to follow it. The
    /// housekeeping thread steers them, as it steers a port that wakes up:
    /// telling the kernel waits for a grace period per port, which the
    /// worker that saw the load change would otherwise spend with its own
    /// lanes filling up. Until then a port lags, which the hand-over allows
    /// for (see `steering.rs`).
    fn steer_ports_read_lately(&self) {
        for (id, port) in self.lanes_by_port().iter() {
            if port.steering.read_lately() && port.steering.lags(&self.mode) {
                let _ = self.lagging.send(*id);
            }
        }
    }
}

impl LoadBoard for Shared {
    /// A worker became busy or calm: when that changes the mode, the ports
    /// read lately are switched between reading by CPU and by port (by the
    /// housekeeping thread). The others (idle ones) follow when they are
    /// next read: telling the kernel costs a system call and a wait per
    /// port.
    fn worker_load_changed(&self, busy: bool) {
        self.mode
            .worker_changed(busy, |_| self.steer_ports_read_lately());
    }

    fn lane_mode(&self) -> ReadMode {
        self.mode.lane_mode()
    }

    fn count_yield(&self) {
        self.cpu_yields.fetch_add(1, Ordering::Relaxed);
    }

    fn count_move(&self) {
        self.cpu_moves.fetch_add(1, Ordering::Relaxed);
    }

    fn realtime_refused(&self) {
        self.realtime_refused.store(true, Ordering::Relaxed);
    }

    fn kept_for_conversation(&self, kept: bool) {
        if kept {
            self.conversing_now.fetch_add(1, Ordering::Relaxed);
            self.conversations.fetch_add(1, Ordering::Relaxed);
        } else {
            self.conversing_now.fetch_sub(1, Ordering::Relaxed);
        }
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
        Dataplane::start_reporting_to(config, |shared| shared)
    }

    /// [`Dataplane::start`], the workers reporting their load to the board
    /// `board` makes of the shared state: the shared state itself, which
    /// changes the read mode; a test that makes every mode change itself
    /// puts a board in between that keeps the workers' reports out.
    fn start_reporting_to(
        config: DataplaneConfig,
        board: impl Fn(Arc<Shared>) -> worker::Board,
    ) -> std::io::Result<Dataplane> {
        let (events_tx, events) = crossbeam_channel::unbounded();
        let (lagging, lagging_ports) = crossbeam_channel::unbounded();
        let clock = Clock::start();
        let count = config.tuning.workers();
        let bus = EventBus::default();
        let (shortcut, learned_nudges) = shortcut::Shortcut::start_for(&config);
        let live_trace = Arc::new(live_trace::LiveTrace::new(
            TraceSettings {
                on: config.trace.is_some(),
                port: None,
            },
            config.trace.clone().or(config.trace_output.clone()),
            bus.clone(),
        ));
        let shared = Arc::new(Shared {
            engine: Engine::with_events(config.table, bus.clone()),
            ports: RwLock::new(Arc::new(PortSet::default())),
            lanes_by_port: RwLock::new(Arc::default()),
            generation: AtomicU64::new(0),
            clock,
            live_trace,
            bus,
            events: events_tx,
            capture: config.capture.clone(),
            tuning: config.tuning,
            mode: ModeSwitch::new(count),
            cpu_yields: AtomicU64::new(0),
            cpu_moves: AtomicU64::new(0),
            conversing_now: AtomicUsize::new(0),
            conversations: AtomicU64::new(0),
            realtime_refused: AtomicBool::new(false),
            peers: std::sync::OnceLock::new(),
            lagging,
            membership: Mutex::new(()),
            next_hint: AtomicU32::new(1),
            shortcut,
            rest: housekeeping::Rest::default(),
        });
        let allowed = ports::cpu::allowed_cpus().unwrap_or_default();
        let mut workers = Vec::new();
        for index in 0..count {
            // One worker reads every lane: no point in keeping it anywhere.
            let lane = if count > 1 {
                ports::cpu::lane_cpus(index, count, &allowed)
            } else {
                Vec::new()
            };
            let cpus = affinity::Cpus {
                lane,
                all: allowed.clone(),
            };
            let reports = board(shared.clone());
            workers.push(worker::spawn(index, cpus, shared.clone(), reports)?);
        }
        let _ = shared
            .peers
            .set(workers.iter().map(WorkerHandle::peer).collect());
        let gateway = match config.gateway {
            Some((address, prefix_len)) => {
                let gw = Gateway::with_link(
                    address,
                    prefix_len,
                    crate::MacAddr::docker_from_ipv4(address),
                    crate::gateway::GatewayLink::offloaded(config.services.mtu),
                    clock.now(),
                );
                Some(gateway_thread::spawn(
                    gw,
                    config.services.clone(),
                    shared.clone(),
                )?)
            }
            None => None,
        };
        let housekeeping = Some(housekeeping::spawn(
            shared.clone(),
            lagging_ports,
            learned_nudges,
        )?);
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

    /// The switch's events (MAC table, ports, trace lines): subscribe to
    /// see them as they happen.
    pub fn event_bus(&self) -> &EventBus {
        &self.shared.bus
    }

    /// What is traced now.
    pub fn trace_settings(&self) -> TraceSettings {
        self.shared.live_trace.settings()
    }

    /// Turns the per-decision trace on or off; workers and the gateway
    /// thread follow at their next wake-up. Lines go to the trace output the switch was started with
    /// and to the event stream.
    pub fn set_trace(&self, settings: TraceSettings) {
        self.shared.live_trace.set(settings);
        self.shared.sync_shortcut();
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

    /// The gateway's services: counters, upstreams, how pings go out
    /// (`None` without a gateway, or if its thread does not answer).
    pub fn services_report(&self) -> Option<crate::host_side::ServicesReport> {
        self.gateway
            .as_ref()?
            .query(gateway_thread::GatewayQuery::Report)
    }

    /// The gateway's translated flows now (`tapswitch flows`).
    pub fn flows(&self) -> Option<Vec<crate::flows::FlowInfo>> {
        self.gateway
            .as_ref()?
            .query(gateway_thread::GatewayQuery::Flows)
    }

    /// The network's containers changed: the gateway's DNS names and the
    /// published TCP ports to listen on (open ones stay, the others are
    /// closed). Returns the ports that could not be opened; `None` without
    /// a gateway.
    pub fn update_services(
        &self,
        names: Vec<(String, Ipv4Addr)>,
        published: Vec<crate::host_side::Published>,
    ) -> Option<Vec<String>> {
        self.gateway
            .as_ref()?
            .query(|reply| gateway_thread::GatewayQuery::Update {
                names,
                published,
                reply,
            })
    }

    /// The knobs the dataplane runs with.
    pub fn tuning(&self) -> Tuning {
        self.shared.tuning
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// How many receive lanes port `id` is read in (0: no such port; the
    /// gateway has none).
    pub fn lanes_of(&self, id: PortId) -> usize {
        self.shared
            .lanes_by_port()
            .get(&id)
            .map_or(0, |port| port.lanes.len())
    }

    /// Opens a port with `open`, asking it for one receive lane per worker
    /// (it may give one), and attaches it as `name`; returns its number
    /// (the lowest free one from 1, as the Linux bridge numbers its ports).
    /// With one lane per worker, lane `i` is read by worker `i`; a single
    /// lane goes to the least busy worker.
    pub fn add_port(
        &self,
        name: &str,
        open: impl FnOnce(usize) -> Result<OpenedPort, PortError>,
    ) -> Result<PortId, PortError> {
        let OpenedPort {
            kind,
            lanes,
            tx,
            steering,
            kernel_path,
        } = open(self.workers.len())?;
        if lanes.len() != 1 && lanes.len() != self.workers.len() {
            return Err(PortError::Io {
                name: name.to_string(),
                doing: "opening its receive lanes",
                source: std::io::Error::other(format!(
                    "{} lanes for {} workers: a port has one lane or one per worker",
                    lanes.len(),
                    self.workers.len()
                )),
            });
        }
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
            vec![solo]
        };
        let port_lanes = PortLanes::new(
            solo,
            lanes
                .into_iter()
                .zip(&homes)
                .map(|(rx, &home)| Arc::new(Lane::new(handle.clone(), home, rx)))
                .collect(),
            steering.map(Arc::from),
        );
        let mut lanes = (*self.shared.lanes_by_port()).clone();
        lanes.insert(id, port_lanes.clone());
        self.shared.publish(current.with(handle), Some(lanes));
        drop(guard);
        self.shared
            .bus
            .publish_with(Some(self.shared.clock.now()), || SwitchEvent::PortAdded {
                port: id,
                name: name.to_string(),
            });
        self.shared.mode.steer_with(|_| {
            port_lanes.follow(&self.shared.mode, || solo);
        });
        for lane in port_lanes.lanes {
            self.workers[lane.home].send(WorkerCommand::Add { lane });
        }
        // Its ledger is settled at the next sweep.
        self.shared.rest.wake_now();
        if let (Some(shortcut), Some(path)) = (&self.shared.shortcut, kernel_path) {
            shortcut.attach(id, name, &path);
            // Hosts the table already knows on this port go to the kernel.
            self.shared.nudge_shortcut();
        }
        Ok(id)
    }

    /// Detaches port `id`: no frame goes to it once this returns, its MAC
    /// entries are gone, and its receive half is closed (a TAP the switch
    /// created disappears). False if there was no such port.
    pub fn remove_port(&self, id: PortId) -> bool {
        if id == PortId::GATEWAY {
            return false;
        }
        let Some(handle) = self.shared.unpublish(id) else {
            return false;
        };
        self.shared.port_removed(&handle, None);
        for worker in &self.workers {
            worker.remove_and_wait(id);
        }
        true
    }

    /// The worker that reads the fewest ports under load (ties rotate):
    /// where a single-lane port goes, and a port's solo lane. Counted from
    /// the published lanes (the caller holds `membership`), not from what
    /// the workers have taken on so far: those counts lag behind their
    /// commands, and a port with a lane per worker adds to every one of
    /// them, so two ports attached in a row could get one solo lane, one
    /// worker then reading both under load while the other idled.
    fn least_loaded_worker(&self) -> usize {
        let hint = self.shared.next_hint.fetch_add(1, Ordering::Relaxed) as usize;
        let n = self.workers.len();
        let mut solos = vec![0usize; n];
        for port in self.shared.lanes_by_port().values() {
            if let Some(count) = solos.get_mut(port.steering.solo()) {
                *count += 1;
            }
        }
        (0..n)
            .map(|i| (hint + i) % n)
            .min_by_key(|&i| solos[i])
            .expect("at least one worker")
    }

    /// The MAC table learned addresses outside the workers (a tunnel
    /// member registered them): the housekeeping thread, if it rests,
    /// sweeps them out when they expire.
    pub fn table_learned(&self) {
        self.shared.rest.wake_now();
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

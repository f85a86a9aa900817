//! The threaded dataplane on in-memory ports (no root, no kernel devices):
//! lanes and the hand-over, forwarding order, ports added and removed under
//! traffic, broken ports, the gateway's drops, shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ports::memory::{MemoryRx, MemoryTx, memory_port};
use ports::{
    OpenedPort, PortError, PortKind, PortRx, ReadMode, RxBatch, RxError, Steering, VnetHdr,
};

use super::affinity::ModeSwitch;
use super::lanes::{HomeRead, Lane, LaneReader, LanesByPort, PortLanes};
use super::*;
use crate::MacAddr;
use crate::events::SwitchEvent;
use crate::fabric::PortHandle;
use crate::mac_table::TableConfig;
use crate::stats::DropReason;

/// Long enough for any machine to forward a few thousand frames; a test
/// that passes never waits this long.
const PATIENCE: Duration = Duration::from_secs(20);

const HOST_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const HOST_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const BROADCAST: [u8; 6] = [0xff; 6];

/// A 64-byte frame from `src` to `dst` carrying `seq`.
fn frame(dst: [u8; 6], src: [u8; 6], seq: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(64, 0);
    f
}

/// The handle of memory port 1, "p", sending through `tx` (for tests that
/// read lanes without a running dataplane).
fn port_one_handle(tx: MemoryTx) -> Arc<PortHandle> {
    Arc::new(PortHandle {
        id: PortId(1),
        name: "p".into(),
        kind: PortKind::Memory,
        tx: Arc::new(tx),
        counters: Arc::default(),
        capture: None,
    })
}

fn seq_of(frame: &[u8]) -> u32 {
    u32::from_be_bytes(frame[14..18].try_into().unwrap())
}

/// Checks that `got` is `0..n`, naming the first frame out of place.
fn assert_in_order(got: &[u32], n: u32, what: &str) {
    let first_wrong = got.iter().zip(0..).position(|(&seq, i)| seq != i);
    assert!(
        first_wrong.is_none() && got.len() == n as usize,
        "{what}: {} frames, first out of place at {first_wrong:?}: {:?}",
        got.len(),
        first_wrong.map(|i| &got[i..(i + 5).min(got.len())])
    );
}

/// Waits until `done` holds, or panics saying `what`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Records where the kernel would put a port's frames.
#[derive(Debug, Default)]
struct RecordedSteering {
    /// It keeps no ledger (see [`MemoryLanes::without_ledger`]).
    no_ledger: AtomicBool,
    now: Mutex<Option<(ReadMode, usize)>>,
    calls: Mutex<Vec<(ReadMode, usize)>>,
    /// Holds the next steering half done (see [`RecordedSteering::hold_next`]).
    hold: Mutex<
        Option<(
            crossbeam_channel::Sender<()>,
            crossbeam_channel::Receiver<()>,
        )>,
    >,
}

impl RecordedSteering {
    /// Makes the next steering call wait, with frames still landing by
    /// the steering before, until the test releases it: returns the
    /// receiver that says the call has begun and the sender that releases
    /// it.
    fn hold_next(
        &self,
    ) -> (
        crossbeam_channel::Receiver<()>,
        crossbeam_channel::Sender<()>,
    ) {
        let (entered, began) = crossbeam_channel::bounded(1);
        let (release, released) = crossbeam_channel::bounded(1);
        *self.hold.lock().unwrap() = Some((entered, released));
        (began, release)
    }

    /// Lands `frame`, sent on CPU `cpu`, in the lane of `lanes` the port
    /// is steered to. A steering waits for that (the kernel's waits for
    /// the CPUs that may be steering a frame by the steering before).
    fn land(&self, cpu: usize, lanes: &[MemoryRx], frame: &[u8]) {
        self.land_at(cpu, lanes, frame, 0);
    }

    /// [`RecordedSteering::land`], the frame arriving at `arrived` (ns).
    fn land_at(&self, cpu: usize, lanes: &[MemoryRx], frame: &[u8], arrived: u64) {
        let now = self.now.lock().unwrap();
        let lane = match *now {
            Some((ReadMode::ByCpu, _)) => cpu % lanes.len(),
            Some((_, solo)) => solo,
            None => 0,
        };
        lanes[lane].inject_at(VnetHdr::default(), frame, arrived);
    }
}

/// The steering handle the dataplane gets.
#[derive(Debug)]
struct Recorder(Arc<RecordedSteering>);

impl Steering for Recorder {
    fn steer(&self, mode: ReadMode, solo: usize) -> std::io::Result<()> {
        let hold = self.0.hold.lock().unwrap().take();
        if let Some((entered, released)) = hold {
            entered.send(()).unwrap();
            released.recv().unwrap();
        }
        *self.0.now.lock().unwrap() = Some((mode, solo));
        self.0.calls.lock().unwrap().push((mode, solo));
        Ok(())
    }

    /// As a port with a ledger, which the hand-over tests are about,
    /// unless told otherwise.
    fn keeps_order_by_cpu(&self) -> bool {
        !self.0.no_ledger.load(Ordering::Relaxed)
    }
}

/// A memory port read in `lanes` lanes, as the switch opens it.
struct MemoryLanes {
    rx: Vec<MemoryRx>,
    tx: MemoryTx,
    steering: Arc<RecordedSteering>,
    /// What the port says it is ([`PortKind::Memory`] unless a test
    /// needs another kind's treatment).
    kind: PortKind,
}

impl MemoryLanes {
    fn new(lanes: usize) -> Self {
        let (first, tx) = memory_port(1500, false);
        let mut rx = vec![first];
        rx.extend((1..lanes).map(|_| memory_port(1500, false).0));
        MemoryLanes {
            rx,
            tx,
            steering: Arc::default(),
            kind: PortKind::Memory,
        }
    }

    /// The same port, its steering without a ledger (as in rootless mode).
    fn without_ledger(self) -> Self {
        self.steering.no_ledger.store(true, Ordering::Relaxed);
        self
    }

    /// The same port, its lanes saying when each frame arrived (as the
    /// packet sockets of a group without a ledger do).
    fn keeping_arrival_times(self) -> Self {
        let rx = self
            .rx
            .into_iter()
            .map(MemoryRx::keeping_arrival_times)
            .collect();
        MemoryLanes { rx, ..self }
    }

    /// The same port, opened as a port of `kind`.
    fn of_kind(self, kind: PortKind) -> Self {
        MemoryLanes { kind, ..self }
    }

    /// The opener `Dataplane::add_port` takes; one lane unless the
    /// dataplane asks for exactly as many as this port has.
    fn opener(&self) -> impl FnOnce(usize) -> Result<OpenedPort, PortError> + use<> {
        let rx = self.rx.clone();
        let tx = self.tx.clone();
        let (steering, kind) = (self.steering.clone(), self.kind);
        move |asked| {
            assert!(asked >= 1, "the dataplane asks for one lane per worker");
            let steering =
                (rx.len() > 1).then(|| Box::new(Recorder(steering)) as Box<dyn Steering>);
            Ok(OpenedPort {
                kind,
                lanes: rx
                    .into_iter()
                    .map(|rx| Box::new(rx) as Box<dyn PortRx>)
                    .collect(),
                tx: Arc::new(tx),
                steering,
                kernel_path: None,
            })
        }
    }

    /// An opener whose lanes are each wrapped by `wrap` with that lane's
    /// share of `per_lane` (counters a test reads); one lane per worker.
    fn opener_wrapped<C: Send + 'static>(
        &self,
        per_lane: Vec<C>,
        wrap: fn(MemoryRx, C) -> Box<dyn PortRx>,
    ) -> impl FnOnce(usize) -> Result<OpenedPort, PortError> + use<C> {
        let rx = self.rx.clone();
        let tx = self.tx.clone();
        let (steering, kind) = (self.steering.clone(), self.kind);
        move |asked| {
            assert_eq!(asked, rx.len(), "one lane per worker");
            Ok(OpenedPort {
                kind,
                lanes: rx
                    .into_iter()
                    .zip(per_lane)
                    .map(|(inner, lane)| wrap(inner, lane))
                    .collect(),
                tx: Arc::new(tx),
                steering: Some(Box::new(Recorder(steering))),
                kernel_path: None,
            })
        }
    }

    /// Injects a frame into the lane the steering picks for a sender on
    /// CPU `cpu`.
    fn inject_from_cpu(&self, cpu: usize, frame: &[u8]) {
        self.steering.land(cpu, &self.rx, frame);
    }

    fn inject(&self, frame: &[u8]) {
        self.inject_from_cpu(0, frame);
    }
}

fn start(workers: usize, gateway: Option<(std::net::Ipv4Addr, u8)>) -> Dataplane {
    Dataplane::start(config(workers, gateway)).unwrap()
}

fn config(workers: usize, gateway: Option<(std::net::Ipv4Addr, u8)>) -> DataplaneConfig {
    DataplaneConfig {
        tuning: Tuning::new(workers, Duration::ZERO, false, false),
        table: TableConfig::default(),
        gateway,
        trace: None,
        trace_output: None,
        capture: None,
        services: Default::default(),
        // Memory ports: nothing for the kernel to forward.
        kernel_shortcut: false,
    }
}

/// A switch of `workers` whose read mode only the test changes, as a
/// worker reports a load change (`dp.shared.worker_load_changed(busy)`):
/// the workers' own reports are kept out.
fn start_with_mode_changed_by_test(workers: usize) -> Dataplane {
    Dataplane::start_reporting_to(config(workers, None), |shared| {
        Arc::new(ReportsKeptOut(shared))
    })
    .unwrap()
}

/// The workers' board in [`start_with_mode_changed_by_test`]: their load
/// reports go nowhere, the rest to the switch.
struct ReportsKeptOut(Arc<Shared>);

impl LoadBoard for ReportsKeptOut {
    fn worker_load_changed(&self, _busy: bool) {}

    fn lane_mode(&self) -> ReadMode {
        self.0.lane_mode()
    }

    fn count_yield(&self) {
        self.0.count_yield();
    }

    fn count_move(&self) {
        self.0.count_move();
    }

    fn realtime_refused(&self) {
        self.0.realtime_refused();
    }

    fn kept_for_conversation(&self, kept: bool) {
        self.0.kept_for_conversation(kept);
    }
}

/// Sequence numbers of the frames `tx` sent so far, collected into `got`.
fn collect(tx: &MemoryTx, got: &mut Vec<u32>) -> usize {
    got.extend(tx.take_sent().iter().map(|(_, f)| seq_of(f)));
    got.len()
}

/// Has the switch learn `HOST_B` on port `b` (the broadcast floods to `a`).
fn learn_b(dp: &Dataplane, a: &MemoryLanes, b: &MemoryLanes) {
    b.inject(&frame(BROADCAST, HOST_B, u32::MAX));
    wait_for("HOST_B learned", || {
        dp.engine()
            .table()
            .entries(dp.clock().now())
            .iter()
            .any(|e| e.mac == MacAddr(HOST_B))
    });
    wait_for("the flood", || !a.tx.take_sent().is_empty());
}

#[test]
fn frames_are_forwarded_in_order_by_the_workers() {
    for workers in [1, 2] {
        let dp = start(workers, None);
        let (a, b) = (MemoryLanes::new(1), MemoryLanes::new(1));
        let pa = dp.add_port("a", a.opener()).unwrap();
        let pb = dp.add_port("b", b.opener()).unwrap();
        assert_eq!((pa, pb), (PortId(1), PortId(2)));
        assert_eq!((dp.lanes_of(pa), dp.lanes_of(PortId(9))), (1, 0));
        learn_b(&dp, &a, &b);
        const N: u32 = 3000;
        for seq in 0..N {
            a.inject(&frame(HOST_B, HOST_A, seq));
        }
        let mut got = Vec::new();
        wait_for("every frame at b", || {
            collect(&b.tx, &mut got) >= N as usize
        });
        assert_in_order(&got, N, &format!("{workers} worker(s)"));
        let stats = dp.ports().get(pa).unwrap().counters.snapshot();
        assert_eq!(stats.rx_frames, u64::from(N), "counted on the way in");
        dp.shutdown();
    }
}

#[test]
fn ports_come_and_go_under_traffic() {
    let dp = start(2, None);
    let (a, b) = (MemoryLanes::new(1), MemoryLanes::new(1));
    let pa = dp.add_port("a", a.opener()).unwrap();
    let pb = dp.add_port("b", b.opener()).unwrap();
    learn_b(&dp, &a, &b);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let rx = a.rx[0].clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                rx.inject(VnetHdr::default(), &frame(HOST_B, HOST_A, seq));
                seq += 1;
                if seq % 64 == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };
    wait_for("traffic at b", || !b.tx.take_sent().is_empty());
    // Others come and go while a floods b.
    for round in 0..20 {
        let c = MemoryLanes::new(1);
        let pc = dp.add_port(&format!("c{round}"), c.opener()).unwrap();
        assert_eq!(pc, PortId(3), "the lowest free number");
        assert!(dp.remove_port(pc));
        assert!(!dp.remove_port(pc), "gone already");
    }
    assert!(dp.remove_port(pb));
    b.tx.take_sent();
    // Nothing goes to a removed port once remove_port returned.
    std::thread::sleep(Duration::from_millis(20));
    assert!(b.tx.take_sent().is_empty(), "frames sent to a removed port");
    assert!(
        dp.engine()
            .table()
            .entries(dp.clock().now())
            .iter()
            .all(|e| e.port != pb)
    );
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    assert_eq!(dp.ports().len(), 1);
    assert!(dp.ports().get(pa).is_some());
    dp.shutdown();
}

#[test]
fn a_broken_port_is_removed_and_reported() {
    let dp = start(2, None);
    let (a, b) = (MemoryLanes::new(1), MemoryLanes::new(1));
    let pa = dp.add_port("a", a.opener()).unwrap();
    let pb = dp.add_port("b", b.opener()).unwrap();
    a.rx[0].fail(RxError::Io(std::io::Error::other("device fell off")), false);
    let event = dp.events().recv_timeout(PATIENCE).unwrap();
    assert_eq!(
        event,
        PortEvent::Removed {
            id: pa,
            name: "a".into(),
            reason: "device fell off".into()
        }
    );
    // A link that goes down stays, unless its interface is gone by the
    // time it is looked at again.
    b.rx[0].fail(RxError::LinkDown, false);
    let c = MemoryLanes::new(1);
    let pc = dp.add_port("c", c.opener()).unwrap();
    c.rx[0].fail(RxError::LinkDown, true);
    let event = dp.events().recv_timeout(PATIENCE).unwrap();
    assert_eq!(
        event,
        PortEvent::Removed {
            id: pc,
            name: "c".into(),
            reason: "its interface is gone".into()
        }
    );
    assert!(dp.ports().get(pb).is_some(), "a port merely down stays");
    dp.shutdown();
}

#[test]
fn a_frame_the_gateway_refuses_is_counted() {
    let dp = start(1, Some((std::net::Ipv4Addr::new(10, 0, 0, 1), 24)));
    let gw_mac = dp.gateway().unwrap().2;
    let a = MemoryLanes::new(1);
    dp.add_port("a", a.opener()).unwrap();
    // A full-size VLAN-tagged frame: 1500 bytes of IP plus 18 of header
    // pass the fabric's MTU check, but are more than the gateway takes.
    let mut big = Vec::new();
    big.extend_from_slice(&gw_mac.0);
    big.extend_from_slice(&HOST_A);
    big.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
    big.resize(1518, 0);
    a.inject(&big);
    let gw = || dp.ports().get(PortId::GATEWAY).unwrap().counters.snapshot();
    wait_for("the gateway's drop", || gw().tx_dropped == 1);
    assert_eq!(gw().drops.get(DropReason::TxError.name()), Some(&1));
    dp.shutdown();
}

#[test]
fn shutdown_stops_the_threads_and_closes_the_ports() {
    let dp = start(2, Some((std::net::Ipv4Addr::new(10, 0, 0, 1), 24)));
    let a = MemoryLanes::new(2);
    dp.add_port("a", a.opener()).unwrap();
    let ports = dp.ports();
    for seq in 0..100 {
        a.inject_from_cpu(seq as usize, &frame(BROADCAST, HOST_A, seq));
    }
    dp.shutdown();
    // Every thread has been joined: only this test holds the port now.
    let handle = ports.get(PortId(1)).unwrap();
    assert_eq!(Arc::strong_count(handle), 1, "held by this snapshot only");
}

/// Under load each port is read in its solo lane: ports attached in a row
/// (each with a lane per worker, the gateway and a single-lane port among
/// them) get their solo lanes spread evenly over the workers, whatever
/// the workers have taken on so far, and a port removed frees its place.
#[test]
fn ports_attached_in_a_row_get_their_solo_lanes_spread_over_the_workers() {
    for workers in [2, 3] {
        let dp = start(workers, Some((std::net::Ipv4Addr::new(10, 0, 0, 1), 24)));
        let solos = |dp: &Dataplane| {
            let mut count = vec![0; workers];
            for port in dp.shared.lanes_by_port().values() {
                count[port.steering.solo()] += 1;
            }
            count
        };
        let opened: Vec<MemoryLanes> = (0..2 * workers)
            .map(|i| MemoryLanes::new(if i == 1 { 1 } else { workers }))
            .collect();
        let mut ids = Vec::new();
        for (i, port) in opened.iter().enumerate() {
            ids.push(dp.add_port(&format!("p{i}"), port.opener()).unwrap());
            let count = solos(&dp);
            let (least, most) = (count.iter().min(), count.iter().max());
            assert!(
                most.unwrap() - least.unwrap() <= 1,
                "{workers} workers, after port {i}: solo lanes per worker {count:?}"
            );
        }
        assert_eq!(solos(&dp), vec![2; workers], "{workers} workers");
        assert!(dp.remove_port(ids[0]));
        let freed = solos(&dp);
        let port = MemoryLanes::new(workers);
        dp.add_port("again", port.opener()).unwrap();
        assert_eq!(
            solos(&dp),
            vec![2; workers],
            "after {freed:?}: the freed place is taken"
        );
        dp.shutdown();
    }
}

/// The next event that is not a trace line, or panics.
fn next_event(sub: &crate::events::Subscription) -> SwitchEvent {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let stamped = sub.next_timeout(left).expect("an event in time");
        if !matches!(stamped.event, SwitchEvent::Trace { .. }) {
            return stamped.event;
        }
    }
}

#[test]
fn subscribers_see_ports_come_and_go_and_the_table_learn_and_flush() {
    let dp = start(1, None);
    let sub = dp.event_bus().subscribe();
    let (a, b) = (MemoryLanes::new(1), MemoryLanes::new(1));
    let pa = dp.add_port("a", a.opener()).unwrap();
    let pb = dp.add_port("b", b.opener()).unwrap();
    assert_eq!(
        next_event(&sub),
        SwitchEvent::PortAdded {
            port: pa,
            name: "a".into()
        }
    );
    assert_eq!(
        next_event(&sub),
        SwitchEvent::PortAdded {
            port: pb,
            name: "b".into()
        }
    );
    learn_b(&dp, &a, &b);
    assert_eq!(
        next_event(&sub),
        SwitchEvent::Learned {
            mac: MacAddr(HOST_B),
            port: pb
        }
    );
    assert!(dp.remove_port(pb));
    assert_eq!(
        next_event(&sub),
        SwitchEvent::Flushed {
            port: pb,
            entries: 1
        }
    );
    assert_eq!(
        next_event(&sub),
        SwitchEvent::PortRemoved {
            port: pb,
            name: "b".into(),
            reason: None
        }
    );
    dp.shutdown();
}

#[test]
fn the_trace_is_turned_on_and_off_while_running() {
    let dp = start(1, None);
    let sub = dp.event_bus().subscribe();
    let (a, b) = (MemoryLanes::new(1), MemoryLanes::new(1));
    dp.add_port("a", a.opener()).unwrap();
    dp.add_port("b", b.opener()).unwrap();
    let trace_lines = |sub: &crate::events::Subscription| -> Vec<String> {
        std::iter::from_fn(|| sub.try_next())
            .filter_map(|s| match s.event {
                SwitchEvent::Trace { line } => Some(line),
                _ => None,
            })
            .collect()
    };
    a.inject(&frame(BROADCAST, HOST_A, 1));
    wait_for("the flood", || !b.tx.take_sent().is_empty());
    assert!(trace_lines(&sub).is_empty(), "off by default");
    dp.set_trace(TraceSettings {
        on: true,
        port: None,
    });
    assert!(dp.trace_settings().on);
    a.inject(&frame(BROADCAST, HOST_A, 2));
    wait_for("the second flood", || !b.tx.take_sent().is_empty());
    // The worker writes a frame's trace line after the frame is sent.
    let mut lines = Vec::new();
    wait_for("the second flood's trace line", || {
        lines.extend(trace_lines(&sub));
        !lines.is_empty()
    });
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("a: 02:00:00:00:00:0a > ff:ff:ff:ff:ff:ff"),
        "{}",
        lines[0]
    );
    dp.set_trace(TraceSettings::default());
    a.inject(&frame(BROADCAST, HOST_A, 3));
    wait_for("the third flood", || !b.tx.take_sent().is_empty());
    assert!(trace_lines(&sub).is_empty(), "off again");
    dp.shutdown();
}

/// An ARP request from `HOST_A` (10.0.0.2) for `target`, broadcast.
fn arp_request(target: std::net::Ipv4Addr) -> Vec<u8> {
    crate::test_frames::arp_request(HOST_A, std::net::Ipv4Addr::new(10, 0, 0, 2), target)
}

#[test]
fn the_gateway_thread_follows_trace_on_and_off_while_running() {
    let gw_ip = std::net::Ipv4Addr::new(10, 0, 0, 1);
    let dp = start(1, Some((gw_ip, 24)));
    let sub = dp.event_bus().subscribe();
    let a = MemoryLanes::new(1);
    dp.add_port("a", a.opener()).unwrap();
    // The gateway's own decisions are the lines whose ingress is "gw".
    let gateway_lines = || -> Vec<String> {
        std::iter::from_fn(|| sub.try_next())
            .filter_map(|s| match s.event {
                SwitchEvent::Trace { line } => Some(line),
                _ => None,
            })
            .filter(|line| line.split(' ').nth(1) == Some("gw:"))
            .collect()
    };
    let answered = |what: &str| wait_for(what, || !a.tx.take_sent().is_empty());
    a.inject(&arp_request(gw_ip));
    answered("the gateway's ARP reply");
    assert!(gateway_lines().is_empty(), "off at start");
    dp.set_trace(TraceSettings {
        on: true,
        port: None,
    });
    a.inject(&arp_request(gw_ip));
    answered("the second ARP reply");
    // The line is written once the reply is delivered: it may follow a
    // moment later.
    let mut lines = Vec::new();
    wait_for("the reply's trace line", || {
        lines.extend(gateway_lines());
        !lines.is_empty()
    });
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].ends_with("forwarded to a"), "{}", lines[0]);
    dp.set_trace(TraceSettings::default());
    a.inject(&arp_request(gw_ip));
    answered("the third ARP reply");
    assert!(gateway_lines().is_empty(), "off again");
    dp.shutdown();
}

mod answer_reads;
mod arrival_order;
mod hand_over;
mod idle_ports;
mod level_triggered;
mod pairs;
mod rest;

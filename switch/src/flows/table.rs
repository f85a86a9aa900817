//! The flow table: every translated flow of one network's gateway, the
//! limits on how many there may be, and the counters of what became of them.
//!
//! The table admits a flow ([`FlowTable::open`]), routes each event to the
//! flow's state machine, and keeps the books the machines cannot keep
//! alone: flows per container, connects pending per container and in
//! total, the counters, and removal of a flow whose machine released it.
//!
//! **Timers** cost nothing for idle flows: a min-heap holds each flow's
//! next deadline, so [`FlowTable::expire`] and [`FlowTable::next_deadline`]
//! look only at flows whose time came, never at the whole table. The heap
//! is lazy: activity that pushes a deadline later leaves the entry alone
//! (when it comes up, the flow is simply scheduled again at its new
//! deadline); only a deadline that moves *earlier* adds an entry. Entries
//! of ended flows are skipped when they come up, and the heap is rebuilt
//! from the flows when stale entries outnumber live ones, so 100,000 short
//! connections cannot grow it without bound.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::Serialize;

use crate::flows::action::{Action, Actions, EndReason, FlowCounters, Origin};
use crate::flows::icmp::{EchoEvent, EchoFlow};
use crate::flows::key::{FlowKey, Protocol};
use crate::flows::limits::{FlowLimits, FlowStats, LimitReason};
use crate::flows::tcp::{Interest, TcpEvent, TcpFlow, TcpStep};
use crate::flows::trace::FlowEvent;
use crate::flows::udp::{UdpEvent, UdpFlow, UdpStep};
use crate::time::Instant;

/// A flow of any protocol.
#[derive(Debug, Clone)]
pub enum Flow {
    Tcp(TcpFlow),
    Udp(UdpFlow),
    Icmp(EchoFlow),
}

impl Flow {
    fn tick(&mut self, now: Instant) -> Actions {
        match self {
            Flow::Tcp(flow) => flow.tick(now),
            Flow::Udp(flow) => flow.tick(now),
            Flow::Icmp(flow) => flow.tick(now),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self {
            Flow::Tcp(flow) => flow.deadline(),
            Flow::Udp(flow) => flow.deadline(),
            Flow::Icmp(flow) => flow.deadline(),
        }
    }

    fn is_connecting(&self) -> bool {
        matches!(self, Flow::Tcp(flow) if flow.is_connecting())
    }

    pub fn state_name(&self) -> &'static str {
        match self {
            Flow::Tcp(flow) => flow.state().as_str(),
            Flow::Udp(flow) => flow.state().as_str(),
            Flow::Icmp(flow) => flow.state().as_str(),
        }
    }

    pub fn counters(&self) -> &FlowCounters {
        match self {
            Flow::Tcp(flow) => flow.counters(),
            Flow::Udp(flow) => flow.counters(),
            Flow::Icmp(flow) => flow.counters(),
        }
    }

    pub fn last_activity(&self) -> Instant {
        match self {
            Flow::Tcp(flow) => flow.last_activity(),
            Flow::Udp(flow) => flow.last_activity(),
            Flow::Icmp(flow) => flow.last_activity(),
        }
    }
}

/// One row of `tapswitch flows`, like a line of `conntrack -L`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowInfo {
    pub protocol: Protocol,
    /// Who opened it: the container (outbound) or a client of a published
    /// port (inbound).
    pub origin: Origin,
    pub container: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub state: &'static str,
    #[serde(flatten)]
    pub counters: FlowCounters,
    /// Seconds since the flow was opened.
    pub age_secs: u64,
    /// Seconds since the last byte either way.
    pub idle_secs: u64,
}

/// As `conntrack -L` prints a flow: `src`/`dst` and the first counters
/// are the opening side's, `reply_` the other's; inbound flows (published
/// ports) end with `[published]`.
impl fmt::Display for FlowInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        let (src, dst, sent, received) = match self.origin {
            Origin::Outbound => (
                self.container,
                self.remote,
                (c.packets_from_container, c.bytes_from_container),
                (c.packets_to_container, c.bytes_to_container),
            ),
            Origin::Inbound => (
                self.remote,
                self.container,
                (c.packets_to_container, c.bytes_to_container),
                (c.packets_from_container, c.bytes_from_container),
            ),
        };
        write!(
            f,
            "{} {} src={src} dst={dst} packets={} bytes={} reply_packets={} reply_bytes={} age={}s idle={}s",
            self.protocol.as_str(),
            self.state,
            sent.0,
            sent.1,
            received.0,
            received.1,
            self.age_secs,
            self.idle_secs
        )?;
        if self.origin == Origin::Inbound {
            f.write_str(" [published]")?;
        }
        Ok(())
    }
}

/// Which way a packet went, for [`FlowTable::count_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketWay {
    FromContainer,
    ToContainer,
}

#[derive(Debug, Clone)]
struct Slot {
    flow: Flow,
    origin: Origin,
    created: Instant,
    /// The time of this flow's live entry in the timer heap (at or before
    /// its deadline); other entries for it are stale.
    scheduled: Option<Instant>,
}

/// What one container holds in the table. Pending connects are counted
/// apart for each origin: a flood of clients at a container's published
/// port (whose connects may hang while its backlog is full) must not stop
/// that container's own connections out, nor the other way round.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    flows: usize,
    pending_outbound: usize,
    pending_inbound: usize,
}

impl Usage {
    fn pending(&mut self, origin: Origin) -> &mut usize {
        match origin {
            Origin::Outbound => &mut self.pending_outbound,
            Origin::Inbound => &mut self.pending_inbound,
        }
    }
}

/// What [`FlowTable::open`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A new flow: carry out the actions (opening the host socket).
    Opened(Actions),
    /// The flow exists already (a retransmitted SYN, the next datagram):
    /// hand the packet to it.
    Existing,
    /// No such flow can exist (an inbound ping: nothing publishes ping);
    /// counted as invalid, drop the packet.
    Invalid,
}

/// All translated flows of one gateway. Owned by the gateway thread; no
/// locks, no I/O, time is an argument.
#[derive(Debug, Clone)]
pub struct FlowTable {
    limits: FlowLimits,
    flows: HashMap<FlowKey, Slot>,
    usage: HashMap<Ipv4Addr, Usage>,
    pending_connects: usize,
    stats: FlowStats,
    /// Flow events for `--trace`, kept only while tracing is on.
    trace: Option<Vec<(Instant, FlowKey, FlowEvent)>>,
    /// Flows' deadlines, earliest first (see the module documentation).
    timers: BinaryHeap<Reverse<(Instant, FlowKey)>>,
}

/// Stale timer entries tolerated beyond twice the live flows before the
/// heap is rebuilt.
const TIMER_SLACK: usize = 1024;

/// Events kept for `--trace` between two [`FlowTable::take_events`]; more
/// are not kept (a caller that never drains must not grow memory).
pub const MAX_TRACE_EVENTS: usize = 4096;

impl FlowTable {
    pub fn new(limits: FlowLimits) -> FlowTable {
        FlowTable {
            limits,
            flows: HashMap::new(),
            usage: HashMap::new(),
            pending_connects: 0,
            stats: FlowStats::default(),
            trace: None,
            timers: BinaryHeap::new(),
        }
    }

    pub fn limits(&self) -> &FlowLimits {
        &self.limits
    }

    /// Admits a new flow for the first packet of `key` (a TCP SYN, a UDP
    /// datagram, an echo request), or says it exists. A refusal is counted;
    /// the caller drops the packet (the container's retransmission tries
    /// again, as when a kernel's conntrack table is full).
    pub fn open(&mut self, now: Instant, key: FlowKey) -> Result<Admission, LimitReason> {
        if self.flows.contains_key(&key) {
            return Ok(Admission::Existing);
        }
        if let Err(reason) = self.admit(key, Origin::Outbound) {
            self.stats.count_limit(reason);
            self.record(now, key, FlowEvent::Refused(reason));
            return Err(reason);
        }
        let flow = match key.protocol {
            Protocol::Tcp => Flow::Tcp(TcpFlow::new(now, &self.limits)),
            Protocol::Udp => {
                let idle = if key.remote.port() == 53 {
                    self.limits.udp_dns_idle
                } else {
                    self.limits.udp_idle
                };
                Flow::Udp(UdpFlow::new(now, idle))
            }
            Protocol::Icmp => Flow::Icmp(EchoFlow::new(now, self.limits.icmp_idle)),
        };
        self.insert(now, key, flow, Origin::Outbound);
        Ok(Admission::Opened(Actions::one(Action::ConnectHost)))
    }

    /// Admits a flow for a client of a published port: `key.container` is
    /// the container's address and port, `key.remote` the client's. TCP
    /// flows start connecting into the container ([`Action::ConnectContainer`]);
    /// UDP flows are open at once (the published port's socket is the host
    /// side). The same limits apply, charged to the container, so a flood
    /// of clients at one container's port cannot take the others' share.
    pub fn open_inbound(&mut self, now: Instant, key: FlowKey) -> Result<Admission, LimitReason> {
        if self.flows.contains_key(&key) {
            return Ok(Admission::Existing);
        }
        if key.protocol == Protocol::Icmp {
            self.stats.dropped_invalid += 1;
            return Ok(Admission::Invalid);
        }
        if let Err(reason) = self.admit(key, Origin::Inbound) {
            self.stats.count_limit(reason);
            self.record(now, key, FlowEvent::Refused(reason));
            return Err(reason);
        }
        let (flow, actions) = match key.protocol {
            Protocol::Udp => {
                let flow = UdpFlow::inbound(now, self.limits.udp_idle);
                (Flow::Udp(flow), Actions::none())
            }
            _ => (
                Flow::Tcp(TcpFlow::inbound(now, &self.limits)),
                Actions::one(Action::ConnectContainer),
            ),
        };
        self.insert(now, key, flow, Origin::Inbound);
        Ok(Admission::Opened(actions))
    }

    fn insert(&mut self, now: Instant, key: FlowKey, flow: Flow, origin: Origin) {
        let usage = self.usage.entry(*key.container.ip()).or_default();
        usage.flows += 1;
        if flow.is_connecting() {
            *usage.pending(origin) += 1;
            self.pending_connects += 1;
        }
        self.flows.insert(
            key,
            Slot {
                flow,
                origin,
                created: now,
                scheduled: None,
            },
        );
        self.schedule(key);
        self.stats.opened += 1;
        self.record(now, key, FlowEvent::Opened(origin));
    }

    /// Turns the keeping of flow events for `--trace` on or off.
    pub fn set_trace(&mut self, on: bool) {
        self.trace = on.then(Vec::new);
    }

    /// The flow events since the last call (none while tracing is off).
    pub fn take_events(&mut self) -> Vec<(Instant, FlowKey, FlowEvent)> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn record(&mut self, now: Instant, key: FlowKey, event: FlowEvent) {
        if let Some(events) = self.trace.as_mut().filter(|e| e.len() < MAX_TRACE_EVENTS) {
            events.push((now, key, event));
        }
    }

    /// The limits, checked cheapest and most specific first.
    fn admit(&self, key: FlowKey, origin: Origin) -> Result<(), LimitReason> {
        let mut usage = self
            .usage
            .get(key.container.ip())
            .copied()
            .unwrap_or_default();
        if usage.flows >= self.limits.max_flows_per_container {
            return Err(LimitReason::ContainerFull);
        }
        if self.flows.len() >= self.limits.max_flows {
            return Err(LimitReason::TableFull);
        }
        if key.protocol == Protocol::Tcp {
            if *usage.pending(origin) >= self.limits.max_pending_connects_per_container {
                return Err(LimitReason::ContainerPendingConnects);
            }
            if self.pending_connects >= self.limits.max_pending_connects {
                return Err(LimitReason::PendingConnects);
            }
        }
        Ok(())
    }

    /// Runs a TCP event. An event for a flow the table does not hold (or of
    /// another protocol) is answered as invalid and counted.
    pub fn tcp(&mut self, now: Instant, key: FlowKey, event: TcpEvent<'_>) -> TcpStep {
        let Some(Slot {
            flow: Flow::Tcp(flow),
            origin,
            ..
        }) = self.flows.get_mut(&key)
        else {
            self.stats.dropped_invalid += 1;
            return TcpStep {
                invalid: true,
                ..TcpStep::default()
            };
        };
        let origin = *origin;
        let was_connecting = flow.is_connecting();
        let step = flow.handle(now, event);
        if was_connecting && !flow.is_connecting() {
            self.release_pending(key, origin);
        }
        self.after(now, key, step.invalid, &step.actions);
        step
    }

    /// Runs a UDP event; as [`FlowTable::tcp`].
    pub fn udp(&mut self, now: Instant, key: FlowKey, event: UdpEvent) -> UdpStep {
        self.datagram_event(now, key, |flow| match flow {
            Flow::Udp(flow) => Some(flow.handle(now, event)),
            _ => None,
        })
    }

    /// Runs a ping event; as [`FlowTable::tcp`].
    pub fn echo(&mut self, now: Instant, key: FlowKey, event: EchoEvent) -> UdpStep {
        self.datagram_event(now, key, |flow| match flow {
            Flow::Icmp(flow) => Some(flow.handle(now, event)),
            _ => None,
        })
    }

    /// An event for flow `key` of a datagram kind (UDP, ping): `handle`
    /// runs it, or says the flow is not of that kind. An event for no such
    /// flow is invalid and counted.
    fn datagram_event(
        &mut self,
        now: Instant,
        key: FlowKey,
        handle: impl FnOnce(&mut Flow) -> Option<UdpStep>,
    ) -> UdpStep {
        let step = self
            .flows
            .get_mut(&key)
            .and_then(|slot| handle(&mut slot.flow));
        let Some(step) = step else {
            self.stats.dropped_invalid += 1;
            return UdpStep {
                invalid: true,
                ..UdpStep::default()
            };
        };
        self.after(now, key, step.invalid, &step.actions);
        step
    }

    /// The books after an event: an invalid event is counted, a released
    /// flow is removed.
    fn after(&mut self, now: Instant, key: FlowKey, invalid: bool, actions: &Actions) {
        if invalid {
            self.stats.dropped_invalid += 1;
        }
        if let Some(reason) = actions.release() {
            self.remove(now, key, reason);
        } else {
            self.schedule(key);
        }
    }

    /// Puts flow `key`'s deadline in the timer heap unless an entry at or
    /// before it is there already.
    fn schedule(&mut self, key: FlowKey) {
        let Some(slot) = self.flows.get_mut(&key) else {
            return;
        };
        let Some(deadline) = slot.flow.deadline() else {
            return;
        };
        if slot.scheduled.is_some_and(|at| at <= deadline) {
            return;
        }
        slot.scheduled = Some(deadline);
        self.timers.push(Reverse((deadline, key)));
        if self.timers.len() > 2 * self.flows.len() + TIMER_SLACK {
            self.timers = self
                .flows
                .iter()
                .filter_map(|(key, slot)| slot.scheduled.map(|at| Reverse((at, *key))))
                .collect();
        }
    }

    /// A connect resolved (either way): its pending slot is free again.
    fn release_pending(&mut self, key: FlowKey, origin: Origin) {
        self.pending_connects = self.pending_connects.saturating_sub(1);
        if let Some(usage) = self.usage.get_mut(key.container.ip()) {
            let pending = usage.pending(origin);
            *pending = pending.saturating_sub(1);
        }
    }

    fn remove(&mut self, now: Instant, key: FlowKey, reason: EndReason) {
        let Some(slot) = self.flows.remove(&key) else {
            return;
        };
        let ended = FlowEvent::Ended {
            reason,
            counters: *slot.flow.counters(),
            age: now.saturating_since(slot.created),
        };
        self.record(now, key, ended);
        if let Entry::Occupied(mut usage) = self.usage.entry(*key.container.ip()) {
            usage.get_mut().flows = usage.get().flows.saturating_sub(1);
            if usage.get().flows == 0 {
                usage.remove();
            }
        }
        match reason {
            EndReason::Closed { .. } => self.stats.closed += 1,
            EndReason::Reset { .. } => {
                self.stats.closed += 1;
                self.stats.reset += 1;
            }
            EndReason::Refused | EndReason::Unreachable { .. } | EndReason::HostError => {
                self.stats.refused += 1
            }
            EndReason::TimedOut { .. } => self.stats.timed_out += 1,
        }
    }

    /// Counts a packet of a flow seen at the gateway (TCP segments, which
    /// the TCP machine does not see one by one).
    pub fn count_packet(&mut self, key: FlowKey, way: PacketWay) {
        if let Some(Slot {
            flow: Flow::Tcp(flow),
            ..
        }) = self.flows.get_mut(&key)
        {
            let counters = flow.counters_mut();
            match way {
                PacketWay::FromContainer => counters.packets_from_container += 1,
                PacketWay::ToContainer => counters.packets_to_container += 1,
            }
        }
    }

    /// Runs the timers that are due; returns the flows that had something
    /// to do, with the actions, sorted by key so the output is
    /// deterministic. Looks only at flows whose heap entry came up.
    pub fn expire(&mut self, now: Instant) -> Vec<(FlowKey, Actions)> {
        let mut due: Vec<(FlowKey, Option<Origin>, Actions)> = Vec::new();
        let mut popped = Vec::new();
        while let Some(&Reverse((at, key))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.flows.get_mut(&key) else {
                continue;
            };
            if slot.scheduled != Some(at) {
                continue;
            }
            slot.scheduled = None;
            popped.push(key);
            if slot.flow.deadline().is_none_or(|d| now < d) {
                continue;
            }
            // A connect timer ends a pending connect: its slot frees.
            let pending = slot.flow.is_connecting().then_some(slot.origin);
            let actions = slot.flow.tick(now);
            if !actions.is_empty() {
                due.push((key, pending, actions));
            }
        }
        due.sort_by_key(|(key, _, _)| *key);
        for (key, pending, actions) in &due {
            if let Some(origin) = pending {
                self.release_pending(*key, *origin);
            }
            if let Some(reason) = actions.release() {
                self.remove(now, *key, reason);
            }
        }
        for key in popped {
            self.schedule(key);
        }
        due.into_iter()
            .map(|(key, _, actions)| (key, actions))
            .collect()
    }

    /// The earliest timer of any flow: when to call [`FlowTable::expire`].
    /// Settles the top of the heap first (drops stale entries, moves a
    /// flow whose deadline went later), so the answer is exact; that work
    /// is paid once per entry, not per call.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, key))) = self.timers.peek() {
            let deadline = match self.flows.get(&key) {
                Some(slot) if slot.scheduled == Some(at) => slot.flow.deadline(),
                _ => {
                    self.timers.pop();
                    continue;
                }
            };
            if deadline == Some(at) {
                return Some(at);
            }
            self.timers.pop();
            if let Some(slot) = self.flows.get_mut(&key) {
                slot.scheduled = None;
            }
            self.schedule(key);
        }
        None
    }

    /// Entries in the timer heap (live and stale), for the tests of its
    /// bound.
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// The socket interest of a TCP flow (none for an unknown key).
    pub fn interest(&self, key: FlowKey) -> Interest {
        match self.flows.get(&key) {
            Some(Slot {
                flow: Flow::Tcp(flow),
                ..
            }) => flow.interest(),
            _ => Interest::default(),
        }
    }

    pub fn get(&self, key: &FlowKey) -> Option<&Flow> {
        self.flows.get(key).map(|slot| &slot.flow)
    }

    /// A TCP flow, for reading what waits in its buffers.
    pub fn tcp_flow(&self, key: &FlowKey) -> Option<&TcpFlow> {
        match self.flows.get(key) {
            Some(Slot {
                flow: Flow::Tcp(flow),
                ..
            }) => Some(flow),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// TCP flows still waiting for their host connect.
    pub fn pending_connects(&self) -> usize {
        self.pending_connects
    }

    /// Flows held by one container address.
    pub fn flows_of(&self, container: Ipv4Addr) -> usize {
        self.usage.get(&container).map_or(0, |u| u.flows)
    }

    pub fn stats(&self) -> &FlowStats {
        &self.stats
    }

    /// The rows of `tapswitch flows`, sorted by key.
    pub fn infos(&self, now: Instant) -> Vec<FlowInfo> {
        let mut rows: Vec<FlowInfo> = self
            .flows
            .iter()
            .map(|(key, slot)| FlowInfo {
                protocol: key.protocol,
                origin: slot.origin,
                container: key.container,
                remote: key.remote,
                state: slot.flow.state_name(),
                counters: *slot.flow.counters(),
                age_secs: now.saturating_since(slot.created).as_secs(),
                idle_secs: now.saturating_since(slot.flow.last_activity()).as_secs(),
            })
            .collect();
        rows.sort_by_key(|row| (row.protocol, row.container, row.remote));
        rows
    }
}

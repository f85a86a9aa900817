//! One translated TCP connection: the container's connection to the gateway
//! on one side, a host socket connected to the remote on the other, and the
//! rules that join them.
//!
//! **Connect first.** The flow starts in [`TcpState::Connecting`] when the
//! container's SYN is seen; the SYN is not answered until the host connect
//! succeeded ([`Action::AcceptContainer`]). A refused connect resets the
//! container, an unreachable destination gets an ICMP unreachable, a silent
//! one gets nothing (as through a kernel router), so the container's
//! `connect()` fails the way it would without the gateway in between.
//!
//! **Published ports** run the same machine the other way round
//! ([`Origin::Inbound`]): the host socket is a client the switch accepted on
//! a published port, and the connection to open is the one into the
//! container, from the client's own address and port
//! ([`Action::ConnectContainer`]). The container's RST resets the client;
//! a container that never answers times the flow out and resets the client.
//!
//! **Relay and back-pressure.** Each direction has a bounded
//! [`RelayBuffer`]. Data offered to a full buffer is only partly accepted
//! (the caller leaves the rest where it was, in smoltcp's receive buffer or
//! the host socket's), and [`TcpFlow::interest`] stops asking for reads of
//! that side until the other side has taken bytes. Neither a slow container
//! nor a slow remote grows memory past the buffer's capacity.
//!
//! **Half-close.** Each direction closes on its own: the container's FIN is
//! passed on as `shutdown(SHUT_WR)` once the bytes before it are written,
//! the remote's EOF as a FIN to the container once the container has taken
//! the bytes before it. The flow ends when both directions are closed.
//!
//! **Resets** go across: a reset from either side resets the other and ends
//! the flow at once, dropping what was buffered (as a RST does).
//!
//! **Timers.** A connect still unresolved after `connect_timeout` ends the
//! flow quietly. An open flow idle (no byte either way) for `tcp_idle`, or
//! for `tcp_half_closed_idle` once either side closed, is reset both ways.

use serde::Serialize;

use crate::flows::action::{
    Action, Actions, ConnectFailure, EndReason, FlowCounters, Origin, Side, Timer,
};
use crate::flows::buffer::RelayBuffer;
use crate::flows::limits::FlowLimits;
use crate::time::Instant;

/// Where a TCP flow is, as `tapswitch flows` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    /// The container's SYN is held while the host connect runs.
    Connecting,
    /// Both directions open.
    Established,
    /// The container closed its sending half; the remote may still send.
    ContainerClosed,
    /// The remote closed its sending half; the container may still send.
    RemoteClosed,
    /// Both sides closed; buffered bytes are still being written.
    Closing,
    /// The flow ended (it is released at the same time).
    Closed,
}

impl TcpState {
    pub fn as_str(self) -> &'static str {
        match self {
            TcpState::Connecting => "CONNECTING",
            TcpState::Established => "ESTABLISHED",
            TcpState::ContainerClosed => "CONTAINER_CLOSED",
            TcpState::RemoteClosed => "REMOTE_CLOSED",
            TcpState::Closing => "CLOSING",
            TcpState::Closed => "CLOSED",
        }
    }
}

/// What happened to a TCP flow, as the caller observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEvent<'a> {
    /// The host socket's non-blocking connect completed (outbound flows).
    HostConnected,
    /// The host socket's connect failed (outbound flows).
    HostConnectFailed(ConnectFailure),
    /// The container accepted the gateway's connection (inbound flows).
    ContainerConnected,
    /// The container refused (RST: `Refused`) or never answered
    /// (`TimedOut`) the gateway's connection (inbound flows).
    ContainerConnectFailed(ConnectFailure),
    /// Bytes the container sent (read from the gateway's socket). The flow
    /// accepts what fits ([`TcpStep::accepted`]); the caller leaves the rest
    /// unread.
    ContainerData(&'a [u8]),
    /// The container closed its sending half (FIN), after its last byte.
    ContainerFin,
    /// The container reset the connection.
    ContainerReset,
    /// Bytes read from the host socket; accepted as with `ContainerData`.
    HostData(&'a [u8]),
    /// This many bytes were read from the host socket straight into the
    /// container's side, none of [`TcpFlow::to_container`] waiting before
    /// them: counted, never buffered (all accepted, or the event is
    /// invalid).
    HostDataTaken(usize),
    /// The host socket read end-of-file: the remote's FIN.
    HostEof,
    /// The host socket failed (`ECONNRESET`, `EPIPE`, ...): a reset.
    HostReset,
    /// The caller wrote this many bytes of [`TcpFlow::to_host`].
    HostWrote(usize),
    /// The caller handed this many bytes of [`TcpFlow::to_container`] to the
    /// container's side.
    ContainerTook(usize),
}

/// The answer to one event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStep {
    /// Of the data offered, how many bytes the flow took.
    pub accepted: usize,
    /// What the caller must do, in order.
    pub actions: Actions,
    /// The event did not fit the flow's state (data before the handshake
    /// or after a FIN, a second connect result); it was ignored and is
    /// counted by the table.
    pub invalid: bool,
}

/// Which sockets the caller should wait on for this flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interest {
    /// Read the container's side: the flow has room for its bytes.
    pub read_container: bool,
    /// Read the host socket: the flow has room for its bytes.
    pub read_host: bool,
    /// Bytes wait for the host socket.
    pub write_host: bool,
    /// Bytes wait for the container's side.
    pub write_container: bool,
}

/// One direction of the relay: bytes from a source to a sink.
#[derive(Debug, Clone)]
struct Direction {
    buffer: RelayBuffer,
    /// The source closed (FIN or EOF); no more bytes come.
    source_closed: bool,
    /// The close was passed on to the sink.
    sink_closed: bool,
}

impl Direction {
    fn new(capacity: usize) -> Direction {
        Direction {
            buffer: RelayBuffer::new(capacity),
            source_closed: false,
            sink_closed: false,
        }
    }

    /// The source closed and every byte before the close was delivered,
    /// but the sink has not been told yet.
    fn close_is_due(&self) -> bool {
        self.source_closed && !self.sink_closed && self.buffer.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Open,
    Closed,
}

/// One TCP flow's state machine. Performs no I/O; time is an argument.
#[derive(Debug, Clone)]
pub struct TcpFlow {
    origin: Origin,
    phase: Phase,
    /// Container → remote.
    upstream: Direction,
    /// Remote → container.
    downstream: Direction,
    first_close: Option<Side>,
    created: Instant,
    last_activity: Instant,
    connect_timeout: std::time::Duration,
    idle: std::time::Duration,
    half_closed_idle: std::time::Duration,
    counters: FlowCounters,
}

impl TcpFlow {
    /// An outbound flow for a SYN just seen; the caller must carry out
    /// [`Action::ConnectHost`] (the table returns it).
    pub fn new(now: Instant, limits: &FlowLimits) -> TcpFlow {
        TcpFlow::with_origin(Origin::Outbound, now, limits)
    }

    /// An inbound flow for a client just accepted on a published port; the
    /// caller must carry out [`Action::ConnectContainer`].
    pub fn inbound(now: Instant, limits: &FlowLimits) -> TcpFlow {
        TcpFlow::with_origin(Origin::Inbound, now, limits)
    }

    fn with_origin(origin: Origin, now: Instant, limits: &FlowLimits) -> TcpFlow {
        TcpFlow {
            origin,
            phase: Phase::Connecting,
            upstream: Direction::new(limits.buffer_bytes),
            downstream: Direction::new(limits.buffer_bytes),
            first_close: None,
            created: now,
            last_activity: now,
            connect_timeout: limits.connect_timeout,
            idle: limits.tcp_idle,
            half_closed_idle: limits.tcp_half_closed_idle,
            counters: FlowCounters::default(),
        }
    }

    /// Runs one event through the flow.
    pub fn handle(&mut self, now: Instant, event: TcpEvent<'_>) -> TcpStep {
        match self.phase {
            Phase::Connecting => self.while_connecting(now, event),
            Phase::Open => self.while_open(now, event),
            Phase::Closed => invalid(),
        }
    }

    /// Connect first: only the connect's result moves the flow on. A reset
    /// from the side that is waiting (it gave up) abandons the connect.
    fn while_connecting(&mut self, now: Instant, event: TcpEvent<'_>) -> TcpStep {
        let actions = match (self.origin, event) {
            (Origin::Outbound, TcpEvent::HostConnected) => {
                self.phase = Phase::Open;
                self.last_activity = now;
                Actions::one(Action::AcceptContainer)
            }
            (Origin::Outbound, TcpEvent::HostConnectFailed(failure)) => {
                self.connect_failed(failure)
            }
            (Origin::Outbound, TcpEvent::ContainerReset) => self.reset(Side::Container),
            (Origin::Inbound, TcpEvent::ContainerConnected) => {
                self.phase = Phase::Open;
                self.last_activity = now;
                Actions::none()
            }
            (Origin::Inbound, TcpEvent::ContainerConnectFailed(failure)) => {
                self.container_refused(failure)
            }
            (Origin::Inbound, TcpEvent::HostReset) => self.reset(Side::Remote),
            _ => return invalid(),
        };
        step(actions)
    }

    /// The container would not take a published port's connection: the
    /// client, whose handshake the host kernel already completed, is reset
    /// (the nearest a userspace forwarder gets to "connection refused").
    fn container_refused(&mut self, failure: ConnectFailure) -> Actions {
        let mut actions = Actions::one(Action::ResetHost);
        let reason = match failure {
            ConnectFailure::Refused => EndReason::Refused,
            ConnectFailure::Unreachable(code) => EndReason::Unreachable { code },
            ConnectFailure::TimedOut => EndReason::TimedOut {
                timer: Timer::Connect,
            },
            ConnectFailure::Other => EndReason::HostError,
        };
        self.end(&mut actions, reason);
        actions
    }

    fn connect_failed(&mut self, failure: ConnectFailure) -> Actions {
        let mut actions = Actions::none();
        let reason = match failure {
            ConnectFailure::Refused => {
                actions.push(Action::ResetContainer);
                EndReason::Refused
            }
            ConnectFailure::Unreachable(code) => {
                actions.push(Action::SendUnreachable(code));
                EndReason::Unreachable { code }
            }
            // Nobody answered: the container's own SYN retries run out as
            // they would behind a router that heard nothing.
            ConnectFailure::TimedOut => EndReason::TimedOut {
                timer: Timer::Connect,
            },
            // A local failure: tell the container at once rather than let
            // it wait for a connect that will never be tried again.
            ConnectFailure::Other => {
                actions.push(Action::ResetContainer);
                EndReason::HostError
            }
        };
        self.end(&mut actions, reason);
        actions
    }

    fn while_open(&mut self, now: Instant, event: TcpEvent<'_>) -> TcpStep {
        let mut result = TcpStep::default();
        match event {
            TcpEvent::ContainerData(data) => {
                if self.upstream.source_closed {
                    return invalid();
                }
                result.accepted = self.upstream.buffer.push(data);
                self.counters.bytes_from_container += result.accepted as u64;
            }
            TcpEvent::HostData(data) => {
                if self.downstream.source_closed {
                    return invalid();
                }
                result.accepted = self.downstream.buffer.push(data);
                self.counters.bytes_to_container += result.accepted as u64;
            }
            TcpEvent::HostDataTaken(n) => {
                if self.downstream.source_closed || !self.downstream.buffer.is_empty() {
                    return invalid();
                }
                result.accepted = n;
                self.counters.bytes_to_container += n as u64;
            }
            TcpEvent::HostWrote(n) => {
                self.upstream.buffer.consume(n);
            }
            TcpEvent::ContainerTook(n) => {
                self.downstream.buffer.consume(n);
            }
            TcpEvent::ContainerFin => {
                if self.upstream.source_closed {
                    return invalid();
                }
                self.upstream.source_closed = true;
                self.first_close.get_or_insert(Side::Container);
            }
            TcpEvent::HostEof => {
                if self.downstream.source_closed {
                    return invalid();
                }
                self.downstream.source_closed = true;
                self.first_close.get_or_insert(Side::Remote);
            }
            TcpEvent::ContainerReset => {
                result.actions = self.reset(Side::Container);
                return result;
            }
            TcpEvent::HostReset => {
                result.actions = self.reset(Side::Remote);
                return result;
            }
            TcpEvent::HostConnected
            | TcpEvent::HostConnectFailed(_)
            | TcpEvent::ContainerConnected
            | TcpEvent::ContainerConnectFailed(_) => return invalid(),
        }
        self.last_activity = now;
        result.actions = self.pass_on_closes();
        result
    }

    /// Passes each direction's close on once its bytes are delivered, and
    /// ends the flow when both are closed.
    fn pass_on_closes(&mut self) -> Actions {
        let mut actions = Actions::none();
        if self.upstream.close_is_due() {
            self.upstream.sink_closed = true;
            actions.push(Action::ShutdownHostWrite);
        }
        if self.downstream.close_is_due() {
            self.downstream.sink_closed = true;
            actions.push(Action::CloseContainerWrite);
        }
        if self.upstream.sink_closed && self.downstream.sink_closed {
            let first = self.first_close.unwrap_or(Side::Container);
            self.end(&mut actions, EndReason::Closed { first });
        }
        actions
    }

    /// A reset from `by` resets the other side and ends the flow.
    fn reset(&mut self, by: Side) -> Actions {
        let mut actions = Actions::one(match by {
            Side::Container => Action::ResetHost,
            Side::Remote => Action::ResetContainer,
        });
        self.end(&mut actions, EndReason::Reset { by });
        actions
    }

    fn end(&mut self, actions: &mut Actions, reason: EndReason) {
        self.phase = Phase::Closed;
        self.upstream.buffer.clear();
        self.downstream.buffer.clear();
        actions.push(Action::Release(reason));
    }

    /// Time passing: the connect and idle timers.
    pub fn tick(&mut self, now: Instant) -> Actions {
        let Some(deadline) = self.deadline() else {
            return Actions::none();
        };
        if now < deadline {
            return Actions::none();
        }
        let mut actions = Actions::none();
        match self.phase {
            Phase::Connecting => {
                // An inbound client is connected already: tell it.
                if self.origin == Origin::Inbound {
                    actions.push(Action::ResetHost);
                }
                self.end(
                    &mut actions,
                    EndReason::TimedOut {
                        timer: Timer::Connect,
                    },
                );
            }
            Phase::Open => {
                // Forgotten without a word, both ends would hold a dead
                // connection until their own keepalive; tell them.
                actions.push(Action::ResetContainer);
                actions.push(Action::ResetHost);
                self.end(&mut actions, EndReason::TimedOut { timer: Timer::Idle });
            }
            Phase::Closed => {}
        }
        actions
    }

    /// When [`TcpFlow::tick`] will next have something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting => Some(self.created + self.connect_timeout),
            Phase::Open => {
                let half_closed = self.upstream.source_closed || self.downstream.source_closed;
                let idle = if half_closed {
                    self.half_closed_idle
                } else {
                    self.idle
                };
                Some(self.last_activity + idle)
            }
            Phase::Closed => None,
        }
    }

    /// Which sockets to wait on: reads only where the buffer has room
    /// (back-pressure), writes only where bytes wait.
    pub fn interest(&self) -> Interest {
        if self.phase != Phase::Open {
            return Interest::default();
        }
        Interest {
            read_container: !self.upstream.source_closed && self.upstream.buffer.free() > 0,
            read_host: !self.downstream.source_closed && self.downstream.buffer.free() > 0,
            write_host: !self.upstream.buffer.is_empty(),
            write_container: !self.downstream.buffer.is_empty(),
        }
    }

    /// Bytes waiting for the host socket.
    pub fn to_host(&self) -> &[u8] {
        self.upstream.buffer.pending()
    }

    /// Bytes waiting for the container.
    pub fn to_container(&self) -> &[u8] {
        self.downstream.buffer.pending()
    }

    /// How many bytes from the host the flow takes now (read no more than
    /// this: what is read and not taken would be lost).
    pub fn room_to_container(&self) -> usize {
        self.downstream.buffer.free()
    }

    pub fn state(&self) -> TcpState {
        match self.phase {
            Phase::Connecting => TcpState::Connecting,
            Phase::Closed => TcpState::Closed,
            Phase::Open => match (self.upstream.source_closed, self.downstream.source_closed) {
                (false, false) => TcpState::Established,
                (true, false) => TcpState::ContainerClosed,
                (false, true) => TcpState::RemoteClosed,
                (true, true) => TcpState::Closing,
            },
        }
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Still waiting for the connect (counts against the pending limits).
    pub fn is_connecting(&self) -> bool {
        self.phase == Phase::Connecting
    }

    pub fn counters(&self) -> &FlowCounters {
        &self.counters
    }

    pub(crate) fn counters_mut(&mut self) -> &mut FlowCounters {
        &mut self.counters
    }

    pub fn last_activity(&self) -> Instant {
        self.last_activity
    }

    /// Bytes allocated by both relay buffers.
    pub fn allocated(&self) -> usize {
        self.upstream.buffer.allocated() + self.downstream.buffer.allocated()
    }
}

fn step(actions: Actions) -> TcpStep {
    TcpStep {
        accepted: 0,
        actions,
        invalid: false,
    }
}

fn invalid() -> TcpStep {
    TcpStep {
        invalid: true,
        ..TcpStep::default()
    }
}

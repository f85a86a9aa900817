//! One translated UDP flow: a container endpoint talking to one remote
//! endpoint through a connected host socket of its own.
//!
//! A connected socket per (container endpoint, remote endpoint) pair, as
//! the issue asks, rather than one shared socket: the kernel then filters
//! replies by source for us, reports ICMP errors for exactly this flow
//! (`ECONNREFUSED` on a later send or receive is the remote's "port
//! unreachable"), and the flow's idle timer closes exactly one descriptor.
//!
//! Datagrams are relayed one by one and never buffered: a datagram the host
//! socket cannot take right now is dropped, as a congested router would.
//! The flow lives until it has been idle for `udp_idle` (`udp_dns_idle` for
//! port 53, where one query and one answer are the whole conversation).
//! Like conntrack, it shows `UNREPLIED` until the remote has answered once.

use std::time::Duration;

use serde::Serialize;

use crate::flows::action::{
    Action, Actions, ConnectFailure, EndReason, FlowCounters, Origin, Timer,
};
use crate::time::Instant;

/// The largest UDP payload IPv4 can carry (65535 − 20 − 8).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Where a UDP flow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UdpState {
    /// Waiting for the host socket.
    Connecting,
    /// Datagrams went out; none came back yet.
    Unreplied,
    /// The remote has answered.
    Replied,
    /// The flow ended.
    Closed,
}

impl UdpState {
    pub fn as_str(self) -> &'static str {
        match self {
            UdpState::Connecting => "CONNECTING",
            UdpState::Unreplied => "UNREPLIED",
            UdpState::Replied => "REPLIED",
            UdpState::Closed => "CLOSED",
        }
    }
}

/// What happened to a UDP flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpEvent {
    /// The host socket is open and connected to the remote endpoint.
    HostConnected,
    /// Opening or connecting the host socket failed.
    HostConnectFailed(ConnectFailure),
    /// The container sent a datagram of this many payload bytes.
    FromContainer(usize),
    /// The host socket received a datagram of this many bytes.
    FromHost(usize),
    /// A send or receive on the host socket reported an error (an ICMP
    /// error from the path, queued on the socket).
    HostError(ConnectFailure),
}

/// The answer to one UDP event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStep {
    /// Relay the datagram of the event (to the host socket for
    /// `FromContainer`, to the container for `FromHost`).
    pub relay: bool,
    pub actions: Actions,
    /// The event did not fit the flow's state and was ignored.
    pub invalid: bool,
}

/// One UDP flow's state machine. Performs no I/O; time is an argument.
#[derive(Debug, Clone)]
pub struct UdpFlow {
    origin: Origin,
    state: UdpState,
    last_activity: Instant,
    idle: Duration,
    counters: FlowCounters,
}

impl UdpFlow {
    /// A flow for a datagram just seen; the table returns
    /// [`Action::ConnectHost`], and the datagram goes out once the socket
    /// is connected.
    pub fn new(now: Instant, idle: Duration) -> UdpFlow {
        UdpFlow {
            origin: Origin::Outbound,
            state: UdpState::Connecting,
            last_activity: now,
            idle,
            counters: FlowCounters::default(),
        }
    }

    /// A flow for a client's datagram to a published port: open at once
    /// (the published port's socket is the host side), `UNREPLIED` until
    /// the container answers.
    pub fn inbound(now: Instant, idle: Duration) -> UdpFlow {
        UdpFlow {
            origin: Origin::Inbound,
            state: UdpState::Unreplied,
            ..UdpFlow::new(now, idle)
        }
    }

    pub fn handle(&mut self, now: Instant, event: UdpEvent) -> UdpStep {
        if self.state == UdpState::Closed {
            return invalid();
        }
        let mut step = UdpStep::default();
        match (self.state, event) {
            (UdpState::Connecting, UdpEvent::HostConnected) => {
                self.state = UdpState::Unreplied;
            }
            (UdpState::Connecting, UdpEvent::HostConnectFailed(failure)) => {
                step.actions = self.connect_failed(failure);
                return step;
            }
            (_, UdpEvent::FromContainer(len)) => {
                // A datagram that came while the socket was being opened is
                // the one that opened the flow: the caller sends it after
                // HostConnected. Others are sent at once.
                if len > MAX_UDP_PAYLOAD {
                    return invalid();
                }
                self.counters.packets_from_container += 1;
                self.counters.bytes_from_container += len as u64;
                step.relay = self.state != UdpState::Connecting;
                if self.origin == Origin::Inbound {
                    self.state = UdpState::Replied;
                }
            }
            (UdpState::Unreplied | UdpState::Replied, UdpEvent::FromHost(len)) => {
                if self.origin == Origin::Outbound {
                    self.state = UdpState::Replied;
                }
                self.counters.packets_to_container += 1;
                self.counters.bytes_to_container += len as u64;
                step.relay = true;
            }
            (UdpState::Unreplied | UdpState::Replied, UdpEvent::HostError(failure)) => {
                // The path's ICMP error, passed on; the flow stays, as a
                // kernel socket does (a later datagram may get through).
                if let Some(code) = unreachable_code(failure) {
                    step.actions = Actions::one(Action::SendUnreachable(code));
                }
            }
            _ => return invalid(),
        }
        self.last_activity = now;
        step
    }

    fn connect_failed(&mut self, failure: ConnectFailure) -> Actions {
        self.state = UdpState::Closed;
        let mut actions = Actions::none();
        let reason = match unreachable_code(failure) {
            Some(code) => {
                actions.push(Action::SendUnreachable(code));
                EndReason::Unreachable { code }
            }
            None => EndReason::HostError,
        };
        actions.push(Action::Release(reason));
        actions
    }

    /// Time passing: the idle timer.
    pub fn tick(&mut self, now: Instant) -> Actions {
        match self.deadline() {
            Some(deadline) if now >= deadline => {
                self.state = UdpState::Closed;
                Actions::one(Action::Release(EndReason::TimedOut { timer: Timer::Idle }))
            }
            _ => Actions::none(),
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        (self.state != UdpState::Closed).then(|| self.last_activity + self.idle)
    }

    pub fn state(&self) -> UdpState {
        self.state
    }

    pub fn counters(&self) -> &FlowCounters {
        &self.counters
    }

    pub fn last_activity(&self) -> Instant {
        self.last_activity
    }
}

/// The ICMP unreachable a host socket error becomes, if any. A refused
/// datagram socket means the remote said "port unreachable".
pub(crate) fn unreachable_code(
    failure: ConnectFailure,
) -> Option<crate::flows::action::Unreachable> {
    use crate::flows::action::Unreachable;
    match failure {
        ConnectFailure::Refused => Some(Unreachable::Port),
        ConnectFailure::Unreachable(code) => Some(code),
        ConnectFailure::TimedOut | ConnectFailure::Other => None,
    }
}

fn invalid() -> UdpStep {
    UdpStep {
        invalid: true,
        ..UdpStep::default()
    }
}

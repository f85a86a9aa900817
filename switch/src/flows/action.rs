//! The vocabulary the flow state machines share: what they ask the caller to
//! do ([`Action`]), why a flow ended ([`EndReason`]), and how a host socket
//! failed ([`ConnectFailure`]).

use std::fmt;
use std::io;

use serde::Serialize;

/// Which end of a translated flow did something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The container, talking to the gateway's userspace stack.
    Container,
    /// The remote end, behind the host socket.
    Remote,
}

/// Which side opened the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The container connected out; the host socket connects to the remote.
    Outbound,
    /// A client connected to a published port; the gateway connects into
    /// the container with the client's address as the source.
    Inbound,
}

/// The ICMP destination-unreachable codes the gateway sends to a container
/// (RFC 792, RFC 1812 for code 13), as a kernel router would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unreachable {
    /// Code 0: no route to the network (`ENETUNREACH` on the host).
    Net,
    /// Code 1: the host does not answer (`EHOSTUNREACH`).
    Host,
    /// Code 3: nothing listens on that UDP port (`ECONNREFUSED` on a
    /// connected UDP socket).
    Port,
    /// Code 13: a firewall forbids it (`EACCES`/`EPERM`).
    Prohibited,
}

impl Unreachable {
    /// The ICMP code.
    pub fn code(self) -> u8 {
        match self {
            Unreachable::Net => 0,
            Unreachable::Host => 1,
            Unreachable::Port => 3,
            Unreachable::Prohibited => 13,
        }
    }
}

/// How opening or using a host socket failed, in the terms the container
/// must be told about. The I/O side maps `io::Error`s with
/// [`ConnectFailure::from_io`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectFailure {
    /// The remote answered with a RST (`ECONNREFUSED`).
    Refused,
    /// The host's stack or a router reported the destination unreachable.
    Unreachable(Unreachable),
    /// Nobody answered (`ETIMEDOUT`): a router that sees no answer sends
    /// nothing either.
    TimedOut,
    /// A local failure (no descriptors, no memory, ...).
    Other,
}

impl ConnectFailure {
    /// Classifies a host socket error. Pure: only the error's kind is read.
    pub fn from_io(err: &io::Error) -> ConnectFailure {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            io::ErrorKind::NetworkUnreachable => ConnectFailure::Unreachable(Unreachable::Net),
            io::ErrorKind::HostUnreachable => ConnectFailure::Unreachable(Unreachable::Host),
            io::ErrorKind::PermissionDenied => ConnectFailure::Unreachable(Unreachable::Prohibited),
            io::ErrorKind::TimedOut => ConnectFailure::TimedOut,
            _ => ConnectFailure::Other,
        }
    }
}

/// Which timer ended a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Timer {
    /// The host connect did not resolve in time.
    Connect,
    /// No traffic either way for the idle timeout.
    Idle,
}

/// Why a flow ended: what `--trace` prints and the counters add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum EndReason {
    /// Both sides closed their sending half; `first` closed first.
    Closed { first: Side },
    /// One side reset the connection; the other was reset in turn.
    Reset { by: Side },
    /// The host connect was refused (the container got a RST).
    Refused,
    /// The destination was unreachable (the container got an ICMP error).
    Unreachable { code: Unreachable },
    /// A timer ran out.
    TimedOut { timer: Timer },
    /// The host socket failed for a local reason.
    HostError,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |side: &Side| match side {
            Side::Container => "the container",
            Side::Remote => "the remote",
        };
        match self {
            EndReason::Closed { first } => write!(f, "closed, first by {}", side(first)),
            EndReason::Reset { by } => write!(f, "reset by {}", side(by)),
            EndReason::Refused => f.write_str("refused by the remote"),
            EndReason::Unreachable { code } => {
                write!(f, "unreachable (ICMP code {})", code.code())
            }
            EndReason::TimedOut {
                timer: Timer::Connect,
            } => f.write_str("timed out connecting"),
            EndReason::TimedOut { timer: Timer::Idle } => f.write_str("timed out idle"),
            EndReason::HostError => f.write_str("host socket error"),
        }
    }
}

/// One thing the caller must do for a flow. The state machines do no I/O;
/// these are the I/O they need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open the host socket for the flow and connect it to the remote
    /// endpoint (non-blocking for TCP), then report how it went.
    ConnectHost,
    /// Open the gateway's connection into the container for a client
    /// accepted on a published port, from the client's address and port,
    /// then report how it went (inbound flows).
    ConnectContainer,
    /// The host connect succeeded: complete the container's handshake (for
    /// TCP, let the gateway's stack answer the held SYN).
    AcceptContainer,
    /// Reset the container's side (TCP RST from the remote's address).
    ResetContainer,
    /// Send the container an ICMP destination unreachable about the packet
    /// that opened the flow, from the gateway's address.
    SendUnreachable(Unreachable),
    /// Shut down the host socket's sending half (`shutdown(SHUT_WR)`): the
    /// container's FIN, passed on.
    ShutdownHostWrite,
    /// Close the container side's sending half (a FIN to the container): the
    /// remote's EOF, passed on.
    CloseContainerWrite,
    /// Close the host socket abortively (`SO_LINGER` 0, so the remote gets a
    /// RST).
    ResetHost,
    /// Forget the flow: close the host socket and free the container side.
    /// Always the last action of a flow.
    Release(EndReason),
}

/// The most actions one event yields (reset both ways and release, at most).
const MAX_ACTIONS: usize = 4;

/// A short list of actions, in the order they must be carried out, without
/// an allocation per event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions {
    items: [Option<Action>; MAX_ACTIONS],
    len: usize,
}

impl Actions {
    pub fn none() -> Actions {
        Actions::default()
    }

    pub fn one(action: Action) -> Actions {
        let mut actions = Actions::default();
        actions.push(action);
        actions
    }

    pub(crate) fn push(&mut self, action: Action) {
        // Every state machine yields at most MAX_ACTIONS per event; the
        // tests check each transition, so overflowing is a bug to catch
        // there, not something input can cause.
        debug_assert!(self.len < MAX_ACTIONS, "too many actions: {self:?}");
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(action);
            self.len += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Action> + '_ {
        self.items.iter().take(self.len).flatten().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn contains(&self, action: Action) -> bool {
        self.iter().any(|a| a == action)
    }

    /// The reason, if these actions end the flow.
    pub fn release(&self) -> Option<EndReason> {
        self.iter().find_map(|action| match action {
            Action::Release(reason) => Some(reason),
            _ => None,
        })
    }

    pub fn to_vec(&self) -> Vec<Action> {
        self.iter().collect()
    }
}

/// Traffic of one flow, each way. For TCP, bytes are payload bytes relayed
/// and packets the segments the gateway saw from or sent to the container;
/// for UDP and ping, datagrams and their payload bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlowCounters {
    pub packets_from_container: u64,
    pub bytes_from_container: u64,
    pub packets_to_container: u64,
    pub bytes_to_container: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_what_a_router_would_say() {
        let kind = |kind: io::ErrorKind| ConnectFailure::from_io(&io::Error::from(kind));
        assert_eq!(
            kind(io::ErrorKind::ConnectionRefused),
            ConnectFailure::Refused
        );
        assert_eq!(
            kind(io::ErrorKind::NetworkUnreachable),
            ConnectFailure::Unreachable(Unreachable::Net)
        );
        assert_eq!(
            kind(io::ErrorKind::HostUnreachable),
            ConnectFailure::Unreachable(Unreachable::Host)
        );
        assert_eq!(
            kind(io::ErrorKind::PermissionDenied),
            ConnectFailure::Unreachable(Unreachable::Prohibited)
        );
        assert_eq!(kind(io::ErrorKind::TimedOut), ConnectFailure::TimedOut);
        assert_eq!(kind(io::ErrorKind::OutOfMemory), ConnectFailure::Other);
        // From the raw errno, as the I/O side will have it.
        let refused = io::Error::from_raw_os_error(111); // ECONNREFUSED on Linux
        assert_eq!(ConnectFailure::from_io(&refused), ConnectFailure::Refused);
        let unreach = io::Error::from_raw_os_error(113); // EHOSTUNREACH on Linux
        assert_eq!(
            ConnectFailure::from_io(&unreach),
            ConnectFailure::Unreachable(Unreachable::Host)
        );
    }

    #[test]
    fn icmp_codes_follow_rfc_792_and_1812() {
        let codes: Vec<u8> = [
            Unreachable::Net,
            Unreachable::Host,
            Unreachable::Port,
            Unreachable::Prohibited,
        ]
        .iter()
        .map(|u| u.code())
        .collect();
        assert_eq!(codes, vec![0, 1, 3, 13]);
    }

    #[test]
    fn actions_keep_their_order_and_find_the_release() {
        let mut actions = Actions::one(Action::ResetContainer);
        actions.push(Action::Release(EndReason::Refused));
        assert_eq!(
            actions.to_vec(),
            vec![Action::ResetContainer, Action::Release(EndReason::Refused)]
        );
        assert_eq!(actions.release(), Some(EndReason::Refused));
        assert!(Actions::none().release().is_none());
        assert_eq!(
            EndReason::Closed {
                first: Side::Remote
            }
            .to_string(),
            "closed, first by the remote"
        );
    }
}

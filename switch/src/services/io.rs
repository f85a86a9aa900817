//! The vocabulary between the services and the code that does their I/O:
//! what they produce ([`Output`]: frames, host socket commands, stack
//! commands) and what host sockets report ([`HostEvent`]).

use crate::dns::Outgoing;
use crate::flows::{ConnectFailure, FlowKey};

/// Work produced by the services, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An Ethernet frame for the switch, sent from the gateway port.
    Frame(Vec<u8>),
    /// Host socket work.
    Host(HostCommand),
    /// Work for the container side of a TCP flow (smoltcp).
    Stack(StackCommand),
    /// An Ethernet frame for the gateway's own stack (smoltcp) in place of
    /// the one given: a datagram reassembled from fragments, which may be
    /// longer than the MTU ([`crate::gateway::Gateway::deliver_reassembled`]).
    StackFrame(Vec<u8>),
    /// A DNS answer for the container's TCP connection to the gateway's
    /// port 53 from `client` (the message without its length).
    DnsTcp {
        client: std::net::SocketAddrV4,
        bytes: Vec<u8>,
    },
}

/// Host socket work, for the I/O side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCommand {
    /// Open the flow's host socket (by its protocol) toward the remote and
    /// report with [`HostEvent::Connected`] or [`HostEvent::ConnectFailed`].
    Connect(FlowKey),
    /// Send a datagram on a UDP flow's socket.
    Send { key: FlowKey, payload: Vec<u8> },
    /// Send an echo request on a ping flow's socket.
    SendEcho {
        key: FlowKey,
        seq_no: u16,
        payload: Vec<u8>,
    },
    /// Send a forwarded DNS query to an upstream resolver: as a datagram
    /// from the forwarder's socket, or over a TCP connection of its own
    /// (behind its two-byte length), whose answer comes back through
    /// [`super::Services::dns_reply`] as a datagram's does.
    SendDns(Outgoing),
    /// `shutdown(SHUT_WR)` on a TCP flow's socket.
    ShutdownWrite(FlowKey),
    /// Close with `SO_LINGER` 0 (the remote gets a RST).
    Reset(FlowKey),
    /// Close the flow's socket; the flow is gone.
    Close(FlowKey),
}

/// Container-side TCP work, for the smoltcp side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackCommand {
    /// Listen on the remote endpoint and take this held SYN (an Ethernet
    /// frame): the host connect succeeded. A socket still left for the same
    /// key (a port reused quickly) is dropped first.
    Accept { key: FlowKey, syn: Vec<u8> },
    /// Connect from the client's endpoint into the container (a published
    /// port's client, an inbound flow).
    Connect(FlowKey),
    /// Abort the flow's socket (a RST to the container).
    Abort(FlowKey),
    /// Close the socket's sending half (a FIN to the container).
    CloseWrite(FlowKey),
    /// The flow is gone: drop its socket once it is closed.
    Forget(FlowKey),
}

impl StackCommand {
    /// The flow the command is for.
    pub fn key(&self) -> FlowKey {
        match self {
            StackCommand::Accept { key, .. }
            | StackCommand::Connect(key)
            | StackCommand::Abort(key)
            | StackCommand::CloseWrite(key)
            | StackCommand::Forget(key) => *key,
        }
    }
}

/// What a host socket reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEvent<'a> {
    Connected,
    ConnectFailed(ConnectFailure),
    /// A datagram (UDP payload, or an echo reply's sequence number and data).
    Datagram(&'a [u8]),
    EchoReply {
        seq_no: u16,
        data: &'a [u8],
    },
    /// An error queued on the socket (an ICMP error from the path).
    Error(ConnectFailure),
}

//! What identifies a translated flow: its protocol and its two endpoints.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::Serialize;

/// The transport of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// ICMP echo (ping); the key's container port is the echo identifier,
    /// the remote port 0.
    Icmp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
}

/// What identifies a flow: the protocol, the container's endpoint and the
/// remote endpoint it talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FlowKey {
    pub protocol: Protocol,
    pub container: SocketAddrV4,
    pub remote: SocketAddrV4,
}

impl FlowKey {
    pub fn tcp(container: SocketAddrV4, remote: SocketAddrV4) -> FlowKey {
        FlowKey {
            protocol: Protocol::Tcp,
            container,
            remote,
        }
    }

    pub fn udp(container: SocketAddrV4, remote: SocketAddrV4) -> FlowKey {
        FlowKey {
            protocol: Protocol::Udp,
            container,
            remote,
        }
    }

    /// A ping flow: the container's address and echo identifier, the remote
    /// address.
    pub fn echo(container: Ipv4Addr, ident: u16, remote: Ipv4Addr) -> FlowKey {
        FlowKey {
            protocol: Protocol::Icmp,
            container: SocketAddrV4::new(container, ident),
            remote: SocketAddrV4::new(remote, 0),
        }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.protocol.as_str(),
            self.container,
            self.remote
        )
    }
}

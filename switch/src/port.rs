//! Port identities as the engine sees them, and the gateway's internal
//! port as both the live switch and replay attach it.

use std::fmt;
use std::io;

use ports::{PortTx, VnetHdr};

/// A switch port number. 0 is the gateway's internal port; the ports a user
/// attaches are numbered from 1 in the order they are added, as `brctl`
/// numbers bridge ports.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct PortId(pub u32);

impl PortId {
    /// The gateway's internal port (like the Linux bridge's own interface).
    pub const GATEWAY: PortId = PortId(0);
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

/// The name of the gateway's internal port in tables and trace lines.
pub const GATEWAY_PORT_NAME: &str = "gw";

/// The gateway port carries a 1500-byte IP MTU by default, like docker0
/// (the live switch's gateway follows the network's `--mtu`).
pub const GATEWAY_MTU: usize = 1500;

/// Where frames sent to the gateway port wait for the gateway: the live
/// switch's channel to the gateway thread, replay's in-line queue.
pub trait GatewayQueue: Send + Sync + fmt::Debug {
    /// Queues a copy of `frame`; `WouldBlock` when the queue is full.
    fn push(&self, frame: &[u8]) -> io::Result<()>;

    /// Queues a copy of `frame` with its virtio-net header, for a queue
    /// whose gateway takes offloads ([`GatewayQueue::offloads`]).
    fn push_offloaded(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        let _ = vnet;
        self.push(frame)
    }

    /// Whether the gateway takes frames as they came (GSO super-frames,
    /// partial checksums) and resolves them itself.
    fn offloads(&self) -> bool {
        false
    }

    /// The gateway's IP MTU.
    fn mtu(&self) -> usize {
        GATEWAY_MTU
    }
}

/// The gateway port's send half: frames into a [`GatewayQueue`], plain
/// and of at most its MTU unless it takes offloads.
#[derive(Debug)]
pub struct GatewayTx<Q>(pub Q);

impl<Q: GatewayQueue> PortTx for GatewayTx<Q> {
    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        if self.0.offloads() {
            self.0.push_offloaded(vnet, frame)
        } else {
            self.0.push(frame)
        }
    }

    fn offloads(&self) -> bool {
        self.0.offloads()
    }

    fn mtu(&self) -> usize {
        self.0.mtu()
    }
}

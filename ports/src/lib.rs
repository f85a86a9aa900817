//! tapswitch's port backends. Every syscall the switch makes lives in this
//! crate, and every `unsafe` block in its `sys` module.
//!
//! A port has two halves, because the frame path uses them differently:
//!
//! - [`PortRx`] is owned by the one worker thread that reads the port. It
//!   reads frames in batches into a reusable [`RxBatch`] (no allocation per
//!   frame).
//! - [`PortTx`] is shared (`Arc`) by every thread that may send out of the
//!   port: any worker can forward a frame to any port, and the gateway thread
//!   sends too. The kernel serializes writes on one fd for us.
//!
//! Frames carry a [`VnetHdr`]: the virtio-net header that lets 64 KiB GSO
//! super-frames with partial checksums travel between ports that accept it
//! (`PortTx::offloads`). Ports that do not accept it get plain frames: see
//! [`vnet`] for checksum completion and software segmentation.
//!
//! Backends: [`packet`] (AF_PACKET on an existing interface, such as the host
//! end of a veth pair), [`tap`] (a TAP device), [`memory`] (in-memory, for
//! tests). Capture files: [`pcap`] reads pcap and pcapng and writes both;
//! [`capture`] writes a pcapng file per port of a live switch.

pub mod batch;
pub mod capture;
pub mod memory;
pub mod pcap;
pub mod pcapng;
pub mod vnet;

use std::fmt;
use std::io;
use std::os::fd::RawFd;

pub use batch::{RxBatch, SLOT_HEADROOM};
pub use vnet::VnetHdr;

/// Largest frame a port delivers: a 64 KiB GSO super-frame plus an Ethernet
/// header and a VLAN tag.
pub const MAX_FRAME_LEN: usize = 65_535 + 14 + 4;

/// The receiving half of a port.
pub trait PortRx: Send + fmt::Debug {
    /// Reads ready frames into `batch` (after clearing it) without blocking.
    /// Returns how many; 0 means nothing was ready. An error means the port
    /// is broken (its interface is gone, for example), not "try again".
    fn recv_batch(&mut self, batch: &mut RxBatch) -> io::Result<usize>;

    /// The fd to wait on for readiness (`None` for ports that are never ready
    /// on their own, such as in-memory ports).
    fn raw_fd(&self) -> Option<RawFd>;
}

/// The sending half of a port.
pub trait PortTx: Send + Sync + fmt::Debug {
    /// Sends one frame. `vnet` is written ahead of the frame if the port
    /// takes offload headers ([`PortTx::offloads`]), and must be plain
    /// ([`VnetHdr::is_plain`]) otherwise.
    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()>;

    /// Sends several frames; returns how many went. The default sends one by
    /// one; the AF_PACKET port overrides it with one `sendmmsg`.
    fn send_batch(&self, frames: &[(VnetHdr, &[u8])]) -> io::Result<usize> {
        for (n, (vnet, frame)) in frames.iter().enumerate() {
            if let Err(err) = self.send(vnet, frame) {
                return if n == 0 { Err(err) } else { Ok(n) };
            }
        }
        Ok(frames.len())
    }

    /// Whether the port takes virtio-net headers: GSO super-frames and
    /// partial checksums pass through it untouched.
    fn offloads(&self) -> bool;

    /// The largest IP packet the port carries (the interface MTU); plain
    /// frames longer than this plus the Ethernet (and VLAN) header are dropped.
    fn mtu(&self) -> usize;
}

/// What a port is, for tables and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortKind {
    /// AF_PACKET socket on an existing interface (`--iface`).
    Packet,
    /// TAP device (`--tap`).
    Tap,
    /// In-memory (tests, replay).
    Memory,
    /// A pcap file (replay).
    Pcap,
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortKind::Packet => "iface",
            PortKind::Tap => "tap",
            PortKind::Memory => "memory",
            PortKind::Pcap => "pcap",
        })
    }
}

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
pub mod coalesce;
pub mod cpu;
mod kernel;
pub mod memory;
pub mod packet;
pub mod pcap;
pub mod pcapng;
mod sys;
pub mod tap;
pub mod transmit;
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

    /// Frames the kernel dropped since the last call because the port's
    /// receive queue was full (the switch did not read fast enough).
    fn take_kernel_drops(&mut self) -> u64 {
        0
    }
}

/// The sending half of a port.
pub trait PortTx: Send + Sync + fmt::Debug {
    /// Sends one frame. `vnet` is written ahead of the frame if the port
    /// takes offload headers ([`PortTx::offloads`]), and must be plain
    /// ([`VnetHdr::is_plain`]) otherwise.
    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()>;

    /// Sends several frames in order; returns how many went. Fewer than
    /// `frames.len()` means the next one failed and was not sent; an error
    /// means the first one failed. The default sends them one by one;
    /// `--iface` ports send them in one `sendmmsg`.
    fn send_batch(&self, frames: &[(VnetHdr, &[u8])]) -> io::Result<usize> {
        for (sent, (vnet, frame)) in frames.iter().enumerate() {
            if let Err(err) = self.send(vnet, frame) {
                return if sent == 0 { Err(err) } else { Ok(sent) };
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

    /// For a port read in several lanes: which lane gets the frames that
    /// arrive from now on, `None` meaning the lane of the CPU each frame
    /// arrived on. Ports with one lane ignore it.
    fn steer(&self, lane: Option<usize>) -> io::Result<()> {
        let _ = lane;
        Ok(())
    }
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
    /// The switch's own gateway (smoltcp), port 0.
    Gateway,
    /// A pcap file (replay).
    Pcap,
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortKind::Packet => "iface",
            PortKind::Tap => "tap",
            PortKind::Memory => "memory",
            PortKind::Gateway => "gateway",
            PortKind::Pcap => "pcap",
        })
    }
}

/// Why a port could not be opened. Each message names the port and says
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("port {name}: the name is {len} bytes long, but Linux interface names have at most 15")]
    NameTooLong { name: String, len: usize },
    #[error(
        "port {name}: the name is empty or contains a '/', whitespace or NUL; use a valid interface name"
    )]
    BadName { name: String },
    #[error(
        "port {name}: no such interface; create it first (for a veth pair: \
         `ip link add {name} type veth peer name <other>`) or check the name"
    )]
    NoSuchInterface { name: String },
    #[error(
        "port {name}: permission denied while {doing}; run as root, or give the binary \
         CAP_NET_RAW and CAP_NET_ADMIN (`setcap cap_net_raw,cap_net_admin+ep tapswitch`)"
    )]
    PermissionDenied { name: String, doing: &'static str },
    #[error(
        "port {name}: /dev/net/tun is missing; load the tun module (`modprobe tun`) or run where TAP devices exist"
    )]
    NoTunDevice { name: String },
    #[error(
        "port {name}: {name} exists but is not a TAP device; pick another name, or attach it with --iface"
    )]
    NotATap { name: String },
    #[error("port {name}: failed while {doing}: {source}")]
    Io {
        name: String,
        doing: &'static str,
        source: io::Error,
    },
}

impl PortError {
    /// Maps an OS error from step `doing` on port `name` to the most helpful variant.
    fn from_io(name: &str, doing: &'static str, err: io::Error) -> PortError {
        let name = name.to_string();
        match err.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => PortError::PermissionDenied { name, doing },
            Some(libc::ENODEV) | Some(libc::ENXIO) => PortError::NoSuchInterface { name },
            _ => PortError::Io {
                name,
                doing,
                source: err,
            },
        }
    }
}

/// Checks an interface name before it reaches the kernel.
pub fn check_interface_name(name: &str) -> Result<(), PortError> {
    if name.len() > sys::MAX_IFNAME_LEN {
        return Err(PortError::NameTooLong {
            name: name.to_string(),
            len: name.len(),
        });
    }
    let bad = |c: char| c == '/' || c == '\0' || c.is_whitespace() || c == ':';
    if name.is_empty() || name == "." || name == ".." || name.contains(bad) {
        return Err(PortError::BadName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// The index of interface `name`, if it exists in this network namespace.
pub fn interface_index(name: &str) -> Option<u32> {
    sys::if_nametoindex(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked_before_the_kernel_sees_them() {
        assert!(check_interface_name("veth0").is_ok());
        assert!(check_interface_name("a23456789012345").is_ok());
        let err = check_interface_name("a234567890123456").unwrap_err();
        assert_eq!(
            err.to_string(),
            "port a234567890123456: the name is 16 bytes long, but Linux interface names have at most 15"
        );
        for bad in ["", "a/b", "a b", "a:b", ".."] {
            assert!(
                matches!(check_interface_name(bad), Err(PortError::BadName { .. })),
                "{bad:?}"
            );
        }
    }
}

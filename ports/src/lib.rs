//! tapswitch's port backends. Every syscall the switch makes lives in this
//! crate, and every `unsafe` block in its `sys` module.
//!
//! A port has two halves, because the frame path uses them differently:
//!
//! - [`PortRx`] reads one receive lane of the port: frames in batches into
//!   a reusable [`RxBatch`] (no allocation per frame), with typed errors
//!   ([`RxError`]). A port has one lane, or several (one per worker) that
//!   the kernel fills by CPU or all into one, as its [`Steering`] says.
//!   Whichever worker reads a lane holds it until the batch is forwarded.
//! - [`PortTx`] is shared (`Arc`) by every thread that may send out of the
//!   port: any worker can forward a frame to any port, and the gateway thread
//!   sends too. The kernel serializes writes on one fd for us.
//!
//! Frames carry a [`VnetHdr`]: the virtio-net header that lets 64 KiB GSO
//! super-frames with partial checksums travel between ports that accept it
//! (`PortTx::offloads`). Ports that do not accept it get plain frames: see
//! [`vnet`] for checksum completion and software segmentation.
//!
//! Sending a forwarding pass's frames (holding, coalescing into UDP GSO
//! super-frames with [`coalesce`], one batch send per port, counting) is
//! [`transmit`]'s job. Headers are read through the checked views of
//! [`wire`].
//!
//! Backends: [`packet`] (AF_PACKET on an existing interface, such as the host
//! end of a veth pair), [`tap`] (a TAP device), [`memory`] (in-memory, for
//! tests), [`vxlan`] (a VXLAN tunnel over a UDP socket). Between two
//! `--iface` ports, [`shortcut`] has the kernel forward known unicast
//! itself (eBPF). Capture files:
//! [`capture`] reads pcap and pcapng, writes both, and writes a pcapng
//! file per port of a live switch.

pub mod batch;
pub mod capture;
pub mod coalesce;
pub mod cpu;
mod ebpf_asm;
mod fd_tx;
pub mod heap;
pub mod host_socket;
mod kernel;
pub mod ledger;
pub mod memory;
pub mod mtu;
pub mod namespace;
pub mod packet;
pub mod readiness;
pub mod shortcut;
mod sys;
pub mod tap;
pub mod transmit;
pub mod vnet;
pub mod vxlan;
pub mod wire;

use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;

pub use batch::{ReadDepth, RxBatch, SLOT_HEADROOM};
pub use fd_tx::FdTx;
pub use vnet::VnetHdr;

/// Largest frame a port delivers: a 64 KiB GSO super-frame plus an Ethernet
/// header and a VLAN tag.
pub const MAX_FRAME_LEN: usize = 65_535 + 14 + 4;

/// The receiving half of a port. Each lane of a port has one; the
/// switch's workers share them, one reader at a time (see the switch's
/// `dataplane::lanes`).
pub trait PortRx: Send + fmt::Debug {
    /// Reads ready frames into `batch` (after clearing it) without blocking.
    /// Returns how many; 0 means nothing was ready. An error means the port
    /// is down or broken, not "try again".
    fn recv_batch(&mut self, batch: &mut RxBatch) -> Result<usize, RxError>;

    /// The fd to wait on for readiness (readable when frames may be ready).
    fn raw_fd(&self) -> Option<RawFd>;

    /// Whether the fd may be watched level-triggered: it polls readable
    /// exactly while frames wait (or an error does, until a read takes
    /// it). Then a read may stop before it finds the lane empty
    /// ([`batch::ReadDepth::OneFrame`]): epoll reports the rest. Worth it
    /// where learning that a lane is empty costs: a second `readv` on a
    /// TAP, a second message header tried (and copied in) by `recvmmsg` on
    /// a packet socket, which a one-frame read leaves out by using
    /// `recvmsg`. (The switch reads the rest of a burst in batches.)
    fn level_triggered(&self) -> bool {
        false
    }

    /// Whether the port's interface no longer exists (asked again a while
    /// after [`RxError::LinkDown`]: a deleted interface goes down first).
    fn interface_gone(&self) -> bool {
        false
    }

    /// Frames the kernel dropped since the last call because the port's
    /// receive queue was full (the switch did not read fast enough).
    fn take_kernel_drops(&mut self) -> u64 {
        0
    }

    /// The lane's side of its port's [`ledger`], and the descriptor the
    /// lane is read through; `None` for a lane without one.
    fn ledger_lane(&mut self) -> Option<(&mut ledger::LedgerLane, BorrowedFd<'_>)> {
        None
    }

    /// `frames` read from this lane were forwarded (sent on, or dropped by
    /// the switch): called once the last of them is, before the lane is
    /// let go. A lane steered with a [`ledger`] counts them there; until it
    /// has, its port's next frames stay in this lane, behind them.
    fn forwarded(&mut self, frames: usize) {
        if let Some((ledger, _)) = self.ledger_lane() {
            ledger.forwarded(frames);
        }
    }

    /// Called at a sweep (`now`) with the lane held: settles its
    /// [`ledger`] count of frames lost where no count saw them
    /// ([`ledger::LedgerLane::settle`]). `None` if the lane is in step (or
    /// has no ledger), else how many it wrote off (0: ask again, in
    /// [`ledger::SETTLE_QUIET`]).
    fn settle(&mut self, now: std::time::Instant) -> Option<u64> {
        let (ledger, fd) = self.ledger_lane()?;
        ledger.settle_read_through(fd, now)
    }

    /// Whether the lane notes when the kernel received each frame it reads
    /// ([`RxBatch::arrived`]) and can say when the one at its head did
    /// ([`PortRx::head_arrival`]). A port of such lanes without a
    /// [`ledger`] is read per CPU with its lanes' frames put back in the
    /// order they arrived (the switch's `dataplane/lanes.rs`).
    fn keeps_arrival_times(&self) -> bool {
        false
    }

    /// When the frame at the head of the lane arrived (ns since the epoch,
    /// 0 if the kernel did not say), without taking it; `None` when the
    /// lane is empty.
    fn head_arrival(&mut self) -> Result<Option<u64>, RxError> {
        Ok(None)
    }
}

/// Why a port could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RxError {
    /// The link is down: set down by someone (frames resume when it comes
    /// back up), or the interface is being deleted.
    #[error("the link is down")]
    LinkDown,
    /// The port's interface no longer exists.
    #[error("its interface is gone")]
    Gone,
    /// Any other failure; the port is broken.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl RxError {
    /// Types an error from reading the port of interface `name`.
    pub(crate) fn classify(err: io::Error, name: &str) -> RxError {
        if err.raw_os_error() == Some(libc::ENETDOWN) {
            RxError::LinkDown
        } else if interface_index(name).is_none() {
            RxError::Gone
        } else {
            RxError::Io(err)
        }
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
        send_one_by_one(self, frames)
    }

    /// Whether the port takes virtio-net headers: GSO super-frames and
    /// partial checksums pass through it untouched.
    fn offloads(&self) -> bool;

    /// The largest IP packet the port carries (the interface MTU); plain
    /// frames longer than this plus the Ethernet (and VLAN) header are dropped.
    fn mtu(&self) -> usize;

    /// The MTU as the kernel has it now, taken from then on, for a port
    /// whose interface's MTU can change under it ([`mtu::PortMtu::refresh`]).
    /// Other ports (memory ports, the gateway, a tunnel) keep theirs.
    fn refresh_mtu(&self) -> usize {
        self.mtu()
    }

    /// [`PortTx::refresh_mtu`] for a frame too big for [`PortTx::mtu`], at
    /// most once in a short while ([`mtu::PortMtu::refresh_for_too_big`]).
    fn refresh_mtu_for_too_big(&self) -> usize {
        self.mtu()
    }

    /// Whether the port's link was up (its interface set up, its carrier
    /// on: a veth's peer up too) when [`PortTx::refresh_mtu`] last read it
    /// ([`mtu::PortMtu::link_up`]); `None` where not known (not read yet,
    /// or a port without an interface of its own).
    fn link_up(&self) -> Option<bool> {
        None
    }
}

/// [`PortTx::send_batch`] as a loop of [`PortTx::send`].
fn send_one_by_one<T: PortTx + ?Sized>(tx: &T, frames: &[(VnetHdr, &[u8])]) -> io::Result<usize> {
    for (sent, (vnet, frame)) in frames.iter().enumerate() {
        if let Err(err) = tx.send(vnet, frame) {
            return if sent == 0 { Err(err) } else { Ok(sent) };
        }
    }
    Ok(frames.len())
}

/// Where a port read in several lanes has the kernel put the frames that
/// arrive from now on; returned by the lane openers
/// ([`packet::open_lanes`], [`tap::open_lanes`]), separate from the send
/// half.
pub trait Steering: Send + Sync + fmt::Debug {
    /// [`ReadMode::ByCpu`]: each frame to the lane of the CPU it arrives
    /// on; otherwise every frame to lane `solo`. Returns once no frame
    /// lands by the steering before (the switch then drains the lanes
    /// that steering fed).
    fn steer(&self, mode: ReadMode, solo: usize) -> io::Result<()>;

    /// The lane the port's last frame went to, where its [`ledger`] says
    /// (a frame that came within a send, such as an answer, is there).
    fn last_lane(&self) -> Option<usize> {
        None
    }

    /// Whether steered by CPU the port keeps the order of a sender that
    /// moves to another CPU: only with a [`ledger`]. Without one (classic
    /// BPF, rootless mode) the switch puts its lanes' frames back in the
    /// order they arrived ([`PortRx::head_arrival`]), or keeps it in one
    /// lane where they cannot say.
    fn keeps_order_by_cpu(&self) -> bool {
        false
    }
}

/// A port opened for the switch: its receive lanes (one, or as many as
/// asked for where the port can be read per CPU), its send half, and the
/// steering of its lanes (`None` with one lane).
#[derive(Debug)]
pub struct OpenedPort {
    pub kind: PortKind,
    pub lanes: Vec<Box<dyn PortRx>>,
    pub tx: Arc<dyn PortTx>,
    pub steering: Option<Box<dyn Steering>>,
    /// What the kernel shortcut needs to forward this port's known unicast
    /// itself ([`shortcut`]): only for an `--iface` port whose sockets were
    /// opened in the switch's own network namespace.
    pub kernel_path: Option<shortcut::KernelPath>,
}

/// How the switch reads the ports it reads in several receive lanes (one
/// per worker). The switch picks the mode from its load; a port's
/// [`Steering`] makes the kernel follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// One worker reads everything (every port has one lane).
    OneLane,
    /// Light traffic: each frame goes to the lane of the CPU it arrived on,
    /// read by the worker kept on that CPU.
    ByCpu,
    /// Heavy traffic: each port's frames all go to one lane, its solo lane.
    ByPort,
}

impl ReadMode {
    /// The words `tapswitch stats` uses.
    pub fn describe(self) -> &'static str {
        match self {
            ReadMode::OneLane => "by one worker",
            ReadMode::ByCpu => "per CPU (traffic is light)",
            ReadMode::ByPort => "per port (traffic is heavy)",
        }
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
    /// A VXLAN tunnel to the other hosts of an overlay network.
    Vxlan,
}

impl PortKind {
    /// Whether an answer to a frame written to the port may be waiting in
    /// the port's receive lane when the write returns: a veth's or TAP's
    /// receiver runs its stack inside the write (the dataplane reads that
    /// lane right away). Not a tunnel's: its far side is another host's
    /// switch, which answers later, so looking at once would cost a read
    /// that finds nothing, and the lane's lock.
    pub fn answers_within_send(self) -> bool {
        !matches!(self, PortKind::Vxlan)
    }
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortKind::Packet => "iface",
            PortKind::Tap => "tap",
            PortKind::Memory => "memory",
            PortKind::Gateway => "gateway",
            PortKind::Pcap => "pcap",
            PortKind::Vxlan => "vxlan",
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

/// The MTU of interface `name` in this network namespace.
pub fn interface_mtu(name: &str) -> std::io::Result<usize> {
    let control = sys::control_socket()?;
    sys::interface_mtu(std::os::fd::AsFd::as_fd(&control), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_tunnel_is_answered_after_the_send_returns() {
        assert!(!PortKind::Vxlan.answers_within_send());
        for kind in [PortKind::Packet, PortKind::Tap, PortKind::Memory] {
            assert!(kind.answers_within_send(), "{kind}");
        }
    }

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

//! `--iface` ports: an existing interface (typically the host end of a veth
//! pair) read and written through an AF_PACKET socket.
//!
//! The socket is bound to the interface, never reads back frames sent from
//! this host (PACKET_IGNORE_OUTGOING: neither our own output nor the local
//! stack's), restores VLAN tags the kernel moved into metadata
//! (PACKET_AUXDATA), has a large receive buffer so bursts are not dropped,
//! and speaks virtio-net headers (PACKET_VNET_HDR) so GSO super-frames and
//! partial checksums pass through untouched. Frames are received in batches
//! with `recvmmsg`, or one at a time with `recvmsg` while traffic is light
//! (the socket is watched level-triggered).

use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::batch::RxBatch;
use crate::ledger::{LaneLedger, LedgerLane};
use crate::mtu::PortMtu;
use crate::shortcut::KernelPath;
use crate::sys;
use crate::sys::packet::{FanoutProgram, MAX_BATCH, RecvMeta};
use crate::vnet::VnetHdr;
use crate::{
    FdTx, OpenedPort, PortError, PortKind, PortRx, PortTx, ReadMode, RxError, Steering,
    check_interface_name,
};

/// Receive buffer per packet socket. The kernel default (212 KiB) holds only
/// a few GSO frames or ~270 small ones; a burst from a fast sender would be
/// dropped while the worker is busy elsewhere.
pub const RECEIVE_BUFFER_BYTES: usize = 8 << 20;

/// Opens interface `name` as a switch port read through one socket.
pub fn open(name: &str) -> Result<(PacketRx, PacketTx), PortError> {
    let (mut lanes, tx, _) = open_sockets(name, 1)?;
    Ok((lanes.remove(0), tx))
}

/// Opens interface `name` as a switch port read in up to `lanes` receive
/// lanes: one packet socket each, joined in a fanout group. The returned
/// [`Steering`] decides which lane gets a frame: by CPU, lane `i` gets the
/// frames that arrived on CPUs `c` with `c % lanes == i` (the CPU a
/// container's sender runs on; see [`crate::cpu`]), so the frames of one
/// sender thread stay in one lane, in order; or all of them go to one lane.
/// It starts with all frames to lane 0 (classic BPF) or by CPU (a ledger,
/// below). Returns one lane where the kernel cannot keep the switch's own
/// output out of a fanout group (before Linux 6.5). The send half uses
/// lane 0's socket.
///
/// Where eBPF can be loaded the group is steered with a [`LaneLedger`], so
/// a sender's frames keep their order when it moves to another CPU (see
/// [`crate::ledger`]); otherwise by classic BPF, without that guarantee
/// ([`Steering::keeps_order_by_cpu`] says which), and its sockets note
/// when each frame arrived, so the switch can put the lanes' frames back
/// in that order ([`PortRx::head_arrival`]).
///
/// The sockets and the interface are in this thread's network namespace,
/// the switch's, so the port comes with a [`KernelPath`]: the kernel
/// shortcut can attach to it.
pub fn open_lanes(name: &str, lanes: usize) -> Result<OpenedPort, PortError> {
    let (ifindex, fds, ledger) = open_bound(name, lanes, true)?;
    let sockets = fds
        .iter()
        .map(|fd| fd.try_clone())
        .collect::<io::Result<Vec<_>>>()
        .map_err(|err| PortError::from_io(name, "duplicating its sockets", err))?;
    let (rx, tx, steering) = adopt_sockets(name, fds, ledger.clone())?;
    let mtu = u32::try_from(PortTx::mtu(&tx)).unwrap_or(u32::MAX);
    let path = KernelPath::new(name, ifindex, mtu, sockets, ledger);
    Ok(port(rx, tx, steering, Some(path)))
}

fn open_sockets(
    name: &str,
    lanes: usize,
) -> Result<(Vec<PacketRx>, PacketTx, Option<FanoutSteering>), PortError> {
    adopt_sockets(name, open_fds(name, lanes)?, None)
}

/// Opens interface `name`'s packet sockets (one per lane, joined in a
/// fanout group) in the calling thread's network namespace, without making
/// a port of them: rootless mode opens them inside a container's namespace
/// and passes them to the switch, which [`adopt_lanes`] them. Steered by
/// classic BPF: a ledger would stay behind in the process that opened them.
pub fn open_fds(name: &str, lanes: usize) -> Result<Vec<OwnedFd>, PortError> {
    open_bound(name, lanes, false).map(|(_, fds, _)| fds)
}

/// The steering of a fanout group: a ledger and its program, or (where
/// none can be made, or `ledger` is false) classic BPF.
fn fanout_steering(lanes: usize, ledger: bool) -> Option<(Arc<LaneLedger>, OwnedFd)> {
    if !ledger || lanes < 2 {
        return None;
    }
    // By CPU, as the switch steers a port it adds while traffic is light:
    // the kernel waits for an RCU grace period when it replaces a group's
    // program, a wait per port that would add up at start-up.
    match LaneLedger::with_steering(lanes, None) {
        Ok(made) => Some(made),
        Err(err) => {
            log::debug!("lanes steered by classic BPF, without a ledger: {err}");
            None
        }
    }
}

/// [`open_fds`], the interface's index (in this namespace), and the
/// ledger its group is steered with, if `ledger` and one can be made.
type Bound = (u32, Vec<OwnedFd>, Option<Arc<LaneLedger>>);
fn open_bound(name: &str, lanes: usize, ledger: bool) -> Result<Bound, PortError> {
    check_interface_name(name)?;
    let ifindex = sys::if_nametoindex(name).map_err(|_| PortError::NoSuchInterface {
        name: name.to_string(),
    })?;
    let config = sys::packet::PacketConfig {
        ifindex,
        rcvbuf: RECEIVE_BUFFER_BYTES,
        promisc: true,
    };
    let lanes = if lanes_supported() { lanes.max(1) } else { 1 };
    let steering = fanout_steering(lanes, ledger);
    let kind = match steering {
        Some(_) => FanoutProgram::Extended,
        None => FanoutProgram::Classic,
    };
    let mut fds = Vec::with_capacity(lanes);
    let mut group = None;
    for lane in 0..lanes {
        let fd = sys::packet::open(config)
            .map_err(|err| PortError::from_io(name, "opening a packet socket", err))?;
        if lanes > 1 {
            let id = sys::packet::join_fanout(fd.as_fd(), group, kind)
                .map_err(|err| PortError::from_io(name, "joining a fanout group", err))?;
            group = Some(id);
        }
        if lane == 0
            && let Some((_, program)) = &steering
        {
            // From here on every frame is counted in the ledger; the ones
            // lane 0 got before are not, and are dropped below with the rest
            // of what came before the port was opened (a count too high for
            // a frame that lands meanwhile only waits for a sweep).
            sys::packet::set_fanout_program(fd.as_fd(), program.as_fd())
                .map_err(|err| PortError::from_io(name, "steering its lanes", err))?;
        }
        if lane > 0 || steering.is_some() {
            // Between its bind and joining the group, this socket received
            // copies of frames the group also got: drop them, or they would
            // be forwarded twice.
            sys::packet::discard_queued(fd.as_fd())
                .map_err(|err| PortError::from_io(name, "emptying a new packet socket", err))?;
        }
        fds.push(fd);
    }
    Ok((ifindex, fds, steering.map(|(ledger, _)| ledger)))
}

/// Makes a port of packet sockets [`open_fds`] opened for interface `name`,
/// possibly in another process and another network namespace (a socket
/// keeps the namespace it was made in; the MTU is asked through it).
/// Without a [`KernelPath`]: in another namespace, the interface's index
/// would name some other interface here.
pub fn adopt_lanes(name: &str, fds: Vec<OwnedFd>) -> Result<OpenedPort, PortError> {
    let (rx, tx, steering) = adopt_sockets(name, fds, None)?;
    Ok(port(rx, tx, steering, None))
}

fn port(
    rx: Vec<PacketRx>,
    tx: PacketTx,
    steering: Option<FanoutSteering>,
    kernel_path: Option<KernelPath>,
) -> OpenedPort {
    OpenedPort {
        kind: PortKind::Packet,
        lanes: rx
            .into_iter()
            .map(|rx| Box::new(rx) as Box<dyn PortRx>)
            .collect(),
        tx: Arc::new(tx),
        steering: steering.map(|s| Box::new(s) as Box<dyn Steering>),
        kernel_path,
    }
}

fn adopt_sockets(
    name: &str,
    fds: Vec<OwnedFd>,
    ledger: Option<Arc<LaneLedger>>,
) -> Result<(Vec<PacketRx>, PacketTx, Option<FanoutSteering>), PortError> {
    let fds: Vec<Arc<OwnedFd>> = fds.into_iter().map(Arc::new).collect();
    let Some(first) = fds.first() else {
        return Err(PortError::from_io(
            name,
            "adopting packet sockets",
            io::Error::new(io::ErrorKind::InvalidInput, "no socket given"),
        ));
    };
    let mtu = sys::interface_mtu(first.as_fd(), name)
        .map_err(|err| PortError::from_io(name, "reading the MTU", err))?;
    let followed = PortMtu::of_packet_socket(name, first.clone(), mtu);
    let tx = FdTx::new(first.clone(), followed, true).keeping(ledger.clone());
    // Without a ledger, the switch puts the frames of the lanes back in
    // the order they arrived, by the kernel's receive times.
    let arrival_times = ledger.is_none()
        && fds.len() > 1
        && fds.iter().all(|fd| {
            sys::packet::keep_arrival_times(fd.as_fd())
                .inspect_err(|err| log::debug!("{name}: no receive times: {err}"))
                .is_ok()
        });
    let steering = (fds.len() > 1).then(|| FanoutSteering {
        fd: first.clone(),
        steering_now: AtomicU64::new(if ledger.is_some() { BY_CPU } else { UNKNOWN }),
        ledger: ledger.clone(),
    });
    let name: Arc<str> = name.into();
    let rx = fds
        .into_iter()
        .enumerate()
        .map(|(lane, fd)| PacketRx {
            fd,
            name: name.clone(),
            ledger: ledger.clone().map(|ledger| LedgerLane::new(ledger, lane)),
            arrival_times,
        })
        .collect();
    Ok((rx, tx, steering))
}

/// Whether `--iface` ports can be read in several lanes here: the kernel
/// has PACKET_FANOUT_FLAG_IGNORE_OUTGOING (Linux 6.5); an older one would
/// hand a fanout group frames that other local programs send.
pub fn lanes_supported() -> bool {
    crate::kernel::running_at_least((6, 5))
}

/// The receiving half of an `--iface` port.
#[derive(Debug)]
pub struct PacketRx {
    fd: Arc<OwnedFd>,
    name: Arc<str>,
    /// The lane's side of the port's ledger, if it has one.
    ledger: Option<LedgerLane>,
    /// The socket reports when each frame arrived (a group without a
    /// ledger, see [`PortRx::keeps_arrival_times`]).
    arrival_times: bool,
}

impl PortRx for PacketRx {
    fn recv_batch(&mut self, batch: &mut RxBatch) -> Result<usize, RxError> {
        batch.clear();
        if batch.wanted() == 1 {
            return self.recv_one(batch);
        }
        // A batch, which says for free that the lane is empty when short.
        let count = batch.wanted().min(MAX_BATCH);
        // Scratch for one read, on the stack: an idle lane (most of them,
        // with many ports) keeps none of it.
        let mut heads = [[0u8; VnetHdr::LEN]; MAX_BATCH];
        let mut meta = [RecvMeta::default(); MAX_BATCH];
        let received = {
            let mut free = batch.free_buffers();
            let mut bufs: [&mut [u8]; MAX_BATCH] =
                std::array::from_fn(|_| free.next().unwrap_or(&mut []));
            sys::packet::recv_batch(
                self.fd.as_fd(),
                &mut heads[..count],
                &mut bufs[..count],
                &mut meta[..count],
            )
            .map_err(|err| RxError::classify(err, &self.name))?
        };
        for i in 0..received {
            commit(batch, i, &heads[i], meta[i]);
        }
        Ok(received)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    /// A packet socket polls readable while frames wait, and its error
    /// (the link went down) is reported once, by the read that takes it.
    fn level_triggered(&self) -> bool {
        true
    }

    fn interface_gone(&self) -> bool {
        crate::interface_index(&self.name).is_none()
    }

    fn take_kernel_drops(&mut self) -> u64 {
        let drops = sys::packet::take_drops(self.fd.as_fd()).unwrap_or(0);
        if let Some(ledger) = &self.ledger {
            ledger.dropped(drops);
        }
        drops
    }

    fn ledger_lane(&mut self) -> Option<(&mut LedgerLane, std::os::fd::BorrowedFd<'_>)> {
        Some((self.ledger.as_mut()?, self.fd.as_fd()))
    }

    fn keeps_arrival_times(&self) -> bool {
        self.arrival_times
    }

    fn head_arrival(&mut self) -> Result<Option<u64>, RxError> {
        let peeked = sys::packet::peek_arrival(self.fd.as_fd())
            .map_err(|err| RxError::classify(err, &self.name))?;
        Ok(peeked.map(|arrived| arrived.unwrap_or(0)))
    }
}

impl PacketRx {
    /// Reads one frame (a [`crate::ReadDepth::OneFrame`] read: epoll watches
    /// the socket level-triggered and reports what is left).
    fn recv_one(&mut self, batch: &mut RxBatch) -> Result<usize, RxError> {
        let mut head = [0u8; VnetHdr::LEN];
        let received = {
            let Some(buf) = batch.free_buffers().next() else {
                return Ok(0);
            };
            sys::packet::recv_one(self.fd.as_fd(), &mut head, buf)
                .map_err(|err| RxError::classify(err, &self.name))?
        };
        let Some(meta) = received else {
            return Ok(0);
        };
        commit(batch, 0, &head, meta);
        Ok(1)
    }
}

/// Takes frame `i` of a read into `batch` (its virtio-net header `head`,
/// what the kernel said of it `meta`), its VLAN tag put back.
fn commit(batch: &mut RxBatch, i: usize, head: &[u8; VnetHdr::LEN], meta: RecvMeta) {
    // A frame larger than a slot cannot happen with 64 KiB slots; if it
    // ever does, it becomes a runt the engine drops and counts.
    let len = if meta.truncated { 0 } else { meta.len };
    batch.commit(len, VnetHdr::from_bytes(head));
    if let Some(arrived) = meta.arrived {
        batch.set_arrived(i, arrived);
    }
    if let Some((tpid, tci)) = meta.vlan
        && len > 0
    {
        batch.insert_vlan_tag(i, tpid, tci);
    }
}

/// The sending half of an `--iface` port (sends in batches with `sendmmsg`).
pub type PacketTx = FdTx;

/// Steers the frames of an `--iface` port read in several lanes: the
/// program of its fanout group, with the port's ledger if it has one.
#[derive(Debug)]
struct FanoutSteering {
    fd: Arc<OwnedFd>,
    /// What the group's program does now: [`BY_CPU`], a lane, or
    /// [`UNKNOWN`]. A steering it already does is not set again.
    steering_now: AtomicU64,
    ledger: Option<Arc<LaneLedger>>,
}

/// [`FanoutSteering::steering_now`]'s words for "by CPU" and "not known".
const BY_CPU: u64 = u64::MAX;
const UNKNOWN: u64 = u64::MAX - 1;

impl Steering for FanoutSteering {
    /// Returns once no frame lands by the program before: the kernel waits
    /// for the CPUs still running the old program when it replaces one
    /// (`synchronize_net` in the `setsockopt`). Setting the first (when the
    /// port is added, classic BPF) it does not wait, and neither does this:
    /// a grace period per port would add up at start-up, and a frame the
    /// kernel was steering by the start-up rule (lane 0) lands within the
    /// same few microseconds, well before a worker has been told of the
    /// port and drained that lane. A group with a ledger starts with its
    /// program set (by CPU): the steering it already has is not set again,
    /// so adding a port while traffic is light waits for nothing either.
    fn steer(&self, mode: ReadMode, solo: usize) -> io::Result<()> {
        let target = sys::steering_target(mode, solo);
        let word = target.map_or(BY_CPU, u64::from);
        if self.steering_now.load(Ordering::Acquire) == word {
            return Ok(());
        }
        match &self.ledger {
            Some(ledger) => {
                let program = ledger.load_steering(target)?;
                sys::packet::set_fanout_program(self.fd.as_fd(), program.as_fd())?;
            }
            None => sys::packet::steer_fanout(self.fd.as_fd(), target)?,
        }
        self.steering_now.store(word, Ordering::Release);
        Ok(())
    }

    fn last_lane(&self) -> Option<usize> {
        self.ledger.as_ref().map(|ledger| ledger.last_lane())
    }

    fn keeps_order_by_cpu(&self) -> bool {
        self.ledger.is_some()
    }
}

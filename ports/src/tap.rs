//! `--tap` ports: a TAP device, created if it does not exist.
//!
//! The device is opened with IFF_NO_PI (frames only, no packet-information
//! prefix) and IFF_VNET_HDR plus TUNSETOFFLOAD, so the stack on the other
//! side may hand us 64 KiB TCP super-frames with partial checksums. It is
//! brought up. A TAP the switch created is not persistent: it disappears
//! when the switch closes it (on exit or `port rm`). A persistent TAP that
//! existed before (`ip tuntap add`) is left in place.
//!
//! Read in several lanes, the device is multi-queue (IFF_MULTI_QUEUE, one
//! queue per lane) with an eBPF steering program that picks the queue of
//! each frame the container sends: the CPU it is sent on, or one fixed
//! queue ([`Steering`]), as packet sockets do with a fanout group, by the
//! rule of the port's [`LaneLedger`] (a sender's frames keep their order
//! when it moves to another CPU). Queues opened to be passed to another
//! process ([`open_queues`]) are steered by a two-instruction program
//! without a ledger, which would stay behind (a TAP read gives no receive
//! time, so the switch then steers them to one queue only, see
//! [`Steering::keeps_order_by_cpu`]). Without
//! CAP_BPF, or for an
//! existing single-queue TAP, the port has one queue.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::batch::RxBatch;
use crate::ledger::{LaneLedger, LedgerLane};
use crate::mtu::PortMtu;
use crate::sys;
use crate::vnet::VnetHdr;
use crate::{
    FdTx, OpenedPort, PortError, PortKind, PortRx, ReadMode, RxError, Steering,
    check_interface_name,
};

/// An opened TAP port (one receive lane per queue) and whether this call
/// created the device.
#[derive(Debug)]
pub struct OpenedTap {
    pub port: OpenedPort,
    pub created: bool,
}

/// Opens (or creates) TAP device `name` as a switch port with one queue.
pub fn open(name: &str) -> Result<OpenedTap, PortError> {
    open_lanes(name, 1)
}

/// Opens (or creates) TAP device `name` as a switch port read in up to
/// `lanes` queues (see the module docs); frames all go to the first queue
/// until the port's [`Steering`] says otherwise.
pub fn open_lanes(name: &str, lanes: usize) -> Result<OpenedTap, PortError> {
    adopt(name, open_queues_with(name, lanes, true)?)
}

/// A TAP device's queues, opened (the device created if missing) and
/// brought up in the calling thread's network namespace, not yet a port:
/// rootless mode opens them inside a user's namespace and passes them to
/// the switch, which [`adopt`]s them.
#[derive(Debug)]
pub struct TapQueues {
    pub queues: Vec<OwnedFd>,
    pub mtu: usize,
    pub created: bool,
    /// The ledger the queues are steered with (only where they were
    /// opened by this process).
    pub ledger: Option<Arc<LaneLedger>>,
}

/// The first half of [`open_lanes`]: everything that happens in the
/// device's own namespace. Steered without a ledger, for queues passed to
/// another process.
pub fn open_queues(name: &str, lanes: usize) -> Result<TapQueues, PortError> {
    open_queues_with(name, lanes, false)
}

/// The steering program of a multi-queue TAP of `lanes` queues, frames to
/// queue 0 for now: with a ledger if `ledger` and one can be made, else
/// the plain one; `None` without CAP_BPF.
fn queue_steering(lanes: usize, ledger: bool) -> Option<(Option<Arc<LaneLedger>>, OwnedFd)> {
    if lanes < 2 {
        return None;
    }
    let counted = ledger
        .then(|| LaneLedger::with_steering(lanes, Some(0)).ok())
        .flatten()
        .map(|(ledger, program)| (Some(ledger), program));
    counted.or_else(|| Some((None, sys::bpf::load_steering(Some(0)).ok()?)))
}

fn open_queues_with(name: &str, lanes: usize, ledger: bool) -> Result<TapQueues, PortError> {
    check_interface_name(name)?;
    let existed = sys::if_nametoindex(name).is_ok();
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(PortError::NoTunDevice {
            name: name.to_string(),
        });
    }
    let not_a_tap = |err: io::Error| match err.raw_os_error() {
        // TUNSETIFF on an existing non-TAP interface.
        Some(libc::EINVAL) | Some(libc::EBUSY) if existed => PortError::NotATap {
            name: name.to_string(),
        },
        _ => PortError::from_io(name, "opening the TAP device", err),
    };
    // Steering needs a BPF program, hence CAP_BPF: check that first.
    let steering = queue_steering(lanes, ledger);
    let mut queues = Vec::new();
    let mut ledger = None;
    if let Some((counted, program)) = steering {
        match sys::tun::open_tap(name, true) {
            Ok(first) => {
                queues.push(first);
                for _ in 1..lanes {
                    queues.push(sys::tun::open_tap(name, true).map_err(not_a_tap)?);
                }
                sys::bpf::attach_steering(queues[0].as_fd(), program.as_fd()).map_err(|err| {
                    PortError::from_io(name, "attaching a queue-steering program", err)
                })?;
                if counted.is_some() {
                    // Frames queued before the program was attached are not
                    // in the ledger: what came before the port was opened
                    // is dropped (a count too high for a frame that lands
                    // meanwhile only waits for a sweep).
                    for queue in &queues {
                        discard_queued(queue.as_fd());
                    }
                }
                ledger = counted;
            }
            // An existing TAP made with one queue: use it as it is.
            Err(err) if existed && err.raw_os_error() == Some(libc::EINVAL) => {}
            Err(err) => return Err(not_a_tap(err)),
        }
    }
    if queues.is_empty() {
        queues.push(sys::tun::open_tap(name, false).map_err(not_a_tap)?);
    }
    let control = sys::control_socket()
        .map_err(|err| PortError::from_io(name, "opening a control socket", err))?;
    sys::set_interface_up(control.as_fd(), name)
        .map_err(|err| PortError::from_io(name, "bringing the TAP device up", err))?;
    let mtu = sys::interface_mtu(control.as_fd(), name)
        .map_err(|err| PortError::from_io(name, "reading the MTU", err))?;
    Ok(TapQueues {
        queues,
        mtu,
        created: !existed,
        ledger,
    })
}

/// Reads and throws away what waits in a TAP queue.
fn discard_queued(queue: std::os::fd::BorrowedFd<'_>) {
    let mut head = [0u8; VnetHdr::LEN];
    let mut frame = [0u8; 64];
    while sys::read_frame(queue, &mut head, &mut frame).is_ok() {}
}

/// The second half of [`open_lanes`]: a port of queues opened by
/// [`open_queues`], here or in another namespace.
pub fn adopt(name: &str, opened: TapQueues) -> Result<OpenedTap, PortError> {
    let TapQueues {
        queues,
        mtu,
        created,
        ledger,
    } = opened;
    if queues.is_empty() {
        return Err(PortError::from_io(
            name,
            "adopting TAP queues",
            io::Error::new(io::ErrorKind::InvalidInput, "no queue given"),
        ));
    }
    let queues: Vec<Arc<OwnedFd>> = queues.into_iter().map(Arc::new).collect();
    let followed = PortMtu::of_tap(name, queues[0].clone(), mtu);
    let tx = FdTx::new(queues[0].clone(), followed, false).keeping(ledger.clone());
    let queue_steering = (queues.len() > 1).then(|| {
        Box::new(QueueSteering {
            fd: queues[0].clone(),
            steered: AtomicBool::new(false),
            ledger: ledger.clone(),
        }) as Box<dyn Steering>
    });
    let name: Arc<str> = name.into();
    let lanes = queues
        .into_iter()
        .enumerate()
        .map(|(lane, fd)| {
            Box::new(TapRx {
                fd,
                name: name.clone(),
                head: [0; VnetHdr::LEN],
                ledger: ledger.clone().map(|ledger| LedgerLane::new(ledger, lane)),
            }) as Box<dyn PortRx>
        })
        .collect();
    Ok(OpenedTap {
        port: OpenedPort {
            kind: PortKind::Tap,
            lanes,
            tx: Arc::new(tx),
            steering: queue_steering,
            kernel_path: None,
        },
        created,
    })
}

/// The receiving half of a `--tap` port.
#[derive(Debug)]
pub struct TapRx {
    fd: Arc<OwnedFd>,
    name: Arc<str>,
    head: [u8; VnetHdr::LEN],
    /// The queue's side of the port's ledger, if it has one.
    ledger: Option<LedgerLane>,
}

impl PortRx for TapRx {
    fn recv_batch(&mut self, batch: &mut RxBatch) -> Result<usize, RxError> {
        batch.clear();
        while batch.len() < batch.wanted() {
            let read = {
                let Some(buf) = batch.free_buffers().next() else {
                    break;
                };
                sys::read_frame(self.fd.as_fd(), &mut self.head, buf)
            };
            match read {
                Ok(n) => batch.commit(
                    n.saturating_sub(VnetHdr::LEN),
                    VnetHdr::from_bytes(&self.head),
                ),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if batch.is_empty() => return Err(RxError::classify(err, &self.name)),
                // Report the error on the next call, after these frames.
                Err(_) => break,
            }
        }
        Ok(batch.len())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    /// A TAP queue polls readable while frames wait, and a deleted device
    /// fails the next read (the port is removed), so level-triggered
    /// waiting cannot spin.
    fn level_triggered(&self) -> bool {
        true
    }

    fn interface_gone(&self) -> bool {
        crate::interface_index(&self.name).is_none()
    }

    /// A full queue drops frames the ledger counted without a count of
    /// its own (the device's `tx_dropped` does not say which queue): such
    /// a loss is settled once the queue is quiet ([`PortRx::settle`]).
    fn ledger_lane(&mut self) -> Option<(&mut LedgerLane, std::os::fd::BorrowedFd<'_>)> {
        Some((self.ledger.as_mut()?, self.fd.as_fd()))
    }
}

/// A persistent TAP outlives the switch's queues, and its steering program
/// would go on counting in a ledger slot another port may get next: it is
/// detached first.
impl Drop for QueueSteering {
    fn drop(&mut self) {
        if self.ledger.is_some()
            && let Err(err) = sys::bpf::detach_steering(self.fd.as_fd())
        {
            log::debug!("cannot detach a TAP's steering program: {err}");
        }
    }
}

/// The sending half of a `--tap` port (its first queue).
pub type TapTx = FdTx;

/// Steers the frames of a multi-queue TAP: its eBPF steering program.
#[derive(Debug)]
struct QueueSteering {
    fd: Arc<OwnedFd>,
    /// Whether the switch steered the port before (the program it was
    /// opened with does not count).
    steered: AtomicBool,
    ledger: Option<Arc<LaneLedger>>,
}

impl Steering for QueueSteering {
    /// Returns once no frame lands by the program before: the kernel swaps
    /// a TAP's program without waiting for the CPUs that may be choosing a
    /// queue with the old one (a fanout group's `setsockopt` waits), so
    /// this waits for them. The switch hands a port over after this (see
    /// its `lanes.rs`), and a frame that landed later in a lane it drained
    /// would come out of order. Not at the first steering, when the port is
    /// added (as a fanout group's first program is not waited for, see
    /// `packet.rs`): a grace period per port would add up at start-up.
    fn steer(&self, mode: ReadMode, solo: usize) -> io::Result<()> {
        let target = sys::steering_target(mode, solo);
        let program = match &self.ledger {
            Some(ledger) => ledger.load_steering(target)?,
            None => sys::bpf::load_steering(target)?,
        };
        sys::bpf::attach_steering(self.fd.as_fd(), program.as_fd())?;
        if self.steered.swap(true, Ordering::AcqRel)
            && let Err(err) = sys::wait_for_rcu_readers()
        {
            log::debug!("cannot wait for a TAP's old steering program to retire: {err}");
        }
        Ok(())
    }

    fn last_lane(&self) -> Option<usize> {
        self.ledger.as_ref().map(|ledger| ledger.last_lane())
    }

    fn keeps_order_by_cpu(&self) -> bool {
        self.ledger.is_some()
    }
}

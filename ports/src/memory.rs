//! In-memory ports for tests: frames pushed in come out of `recv_batch`,
//! frames sent are kept for inspection. The receive half has an eventfd
//! that is readable while frames wait, so the live dataplane's workers wait
//! for a memory port in epoll like for any other port. [`udp_datagram`]
//! builds the offloaded frame that tests of batching and coalescing feed
//! them, so the batcher's tests and the switch's fabric tests send the same.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::batch::RxBatch;
use crate::vnet::{self, VnetHdr};
use crate::{PortRx, PortTx, RxError, sys};

/// A frame with its offload header.
pub type Frame = (VnetHdr, Vec<u8>);

/// Creates an in-memory port: the injector feeds its receive side, the
/// `MemoryTx` records what is sent.
///
/// # Panics
/// If the kernel refuses an eventfd (out of file descriptors).
pub fn memory_port(mtu: usize, offloads: bool) -> (MemoryRx, MemoryTx) {
    let ready = sys::eventfd::open().expect("an eventfd for an in-memory port");
    let rx = MemoryRx {
        inbox: Arc::new(Inbox {
            queue: Mutex::default(),
            ready,
            gone: AtomicBool::new(false),
        }),
        arrival_times: false,
    };
    let tx = MemoryTx {
        sent: Arc::default(),
        mtu,
        offloads,
    };
    (rx, tx)
}

/// The receiving half of an in-memory port. Clones share the queue.
#[derive(Debug, Clone)]
pub struct MemoryRx {
    inbox: Arc<Inbox>,
    /// Says when each frame arrived, as given to [`MemoryRx::inject_at`].
    arrival_times: bool,
}

#[derive(Debug)]
struct Inbox {
    queue: Mutex<Queue>,
    /// Readable while `queue` may hold something.
    ready: OwnedFd,
    gone: AtomicBool,
}

#[derive(Debug, Default)]
struct Queue {
    /// Each frame with when it arrived (0: not said).
    frames: VecDeque<(Frame, u64)>,
    /// Reported by the next read, once the frames before it are read.
    error: Option<RxError>,
}

impl MemoryRx {
    /// Queues a frame for the switch to receive.
    pub fn inject(&self, vnet: VnetHdr, frame: &[u8]) {
        self.inject_at(vnet, frame, 0);
    }

    /// Queues a frame that arrived at `arrived` (ns; see
    /// [`MemoryRx::keeping_arrival_times`]).
    pub fn inject_at(&self, vnet: VnetHdr, frame: &[u8], arrived: u64) {
        self.lock()
            .frames
            .push_back(((vnet, frame.to_vec()), arrived));
        self.signal();
    }

    /// The same receive half, saying when its frames arrived, as a packet
    /// socket of a group without a ledger does.
    pub fn keeping_arrival_times(mut self) -> Self {
        self.arrival_times = true;
        self
    }

    /// Makes the next read (after the frames queued now) fail with `err`,
    /// as a broken or downed interface would; with [`RxError::LinkDown`]
    /// and `gone`, the interface is reported deleted from then on.
    pub fn fail(&self, err: RxError, gone: bool) {
        self.inbox.gone.store(gone, Ordering::Relaxed);
        self.lock().error = Some(err);
        self.signal();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inbox
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn signal(&self) {
        // Cannot fail short of a counter at 2^64 - 1.
        let _ = sys::eventfd::signal(self.inbox.ready.as_fd());
    }
}

impl PortRx for MemoryRx {
    fn recv_batch(&mut self, batch: &mut RxBatch) -> Result<usize, RxError> {
        batch.clear();
        let mut queue = self.lock();
        while batch.len() < batch.capacity() {
            let Some(((vnet, frame), arrived)) = queue.frames.pop_front() else {
                break;
            };
            if !batch.push(vnet, &frame) {
                break;
            }
            batch.set_arrived(batch.len() - 1, arrived);
        }
        if queue.frames.is_empty()
            && batch.is_empty()
            && let Some(err) = queue.error.take()
        {
            return Err(err);
        }
        if queue.frames.is_empty() {
            if queue.error.is_some() {
                // A new edge, as a socket raises for its error: the reader
                // comes back for it.
                self.signal();
            } else {
                // Under the lock: a frame injected after this signals anew.
                let _ = sys::eventfd::clear(self.inbox.ready.as_fd());
            }
        }
        Ok(batch.len())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.inbox.ready.as_raw_fd())
    }

    fn interface_gone(&self) -> bool {
        self.inbox.gone.load(Ordering::Relaxed)
    }

    fn keeps_arrival_times(&self) -> bool {
        self.arrival_times
    }

    fn head_arrival(&mut self) -> Result<Option<u64>, RxError> {
        Ok(self.lock().frames.front().map(|(_, arrived)| *arrived))
    }
}

/// The sending half of an in-memory port.
#[derive(Debug, Clone)]
pub struct MemoryTx {
    sent: Arc<Mutex<Vec<Frame>>>,
    mtu: usize,
    offloads: bool,
}

impl MemoryTx {
    /// Takes the frames sent so far.
    pub fn take_sent(&self) -> Vec<Frame> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl PortTx for MemoryTx {
    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        if !self.offloads && !vnet.is_plain() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offload header sent to a plain port",
            ));
        }
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((*vnet, frame.to_vec()));
        Ok(())
    }

    fn offloads(&self) -> bool {
        self.offloads
    }

    fn mtu(&self) -> usize {
        self.mtu
    }
}

/// A UDP datagram from 02:00:00:00:00:01 (172.17.0.2:40000) to
/// 02:00:00:00:00:02 (172.17.0.3:5201) as a sender's stack hands it over:
/// IPv4 id `id`, `payload_len` bytes counting up from `id`, the UDP checksum
/// left to complete (`NEEDS_CSUM`, the pseudo-header sum in place). Datagrams
/// with consecutive ids form a run the batcher coalesces.
pub fn udp_datagram(id: u16, payload_len: usize) -> Frame {
    let udp_len = 8 + payload_len as u16;
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(20 + udp_len).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&[0x40, 0, 64, 17, 0, 0, 172, 17, 0, 2, 172, 17, 0, 3]);
    let ip_check = vnet::rfc1071_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&ip_check.to_be_bytes());
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]); // ports 40000 -> 5201
    f.extend_from_slice(&udp_len.to_be_bytes());
    let pseudo = vnet::ones_complement_sum(&f[26..34], 17 + u32::from(udp_len));
    f.extend_from_slice(&vnet::fold(pseudo).to_be_bytes());
    f.extend((0..payload_len).map(|i| (i as u16 + id) as u8));
    let vnet = VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..VnetHdr::default()
    };
    (vnet, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(rx: &MemoryRx) -> bool {
        sys::readable(rx.inbox.ready.as_fd()).unwrap()
    }

    #[test]
    fn the_receive_fd_is_readable_while_frames_wait() {
        let (mut rx, _tx) = memory_port(1500, false);
        assert!(rx.raw_fd().is_some());
        assert!(!readable(&rx));
        let frame = [0u8; 60];
        for _ in 0..3 {
            rx.inject(VnetHdr::default(), &frame);
        }
        assert!(readable(&rx));
        let mut batch = RxBatch::new(2, 64);
        assert_eq!(rx.recv_batch(&mut batch).unwrap(), 2);
        assert!(readable(&rx), "one frame still waits");
        assert_eq!(rx.recv_batch(&mut batch).unwrap(), 1);
        assert!(!readable(&rx));
        assert_eq!(rx.recv_batch(&mut batch).unwrap(), 0);
    }

    #[test]
    fn an_error_comes_after_the_frames_queued_before_it() {
        let (mut rx, _tx) = memory_port(1500, false);
        rx.inject(VnetHdr::default(), &[0u8; 60]);
        rx.fail(RxError::LinkDown, true);
        let mut batch = RxBatch::new(4, 64);
        assert_eq!(rx.recv_batch(&mut batch).unwrap(), 1);
        assert!(readable(&rx), "the error is still to be read");
        assert!(matches!(rx.recv_batch(&mut batch), Err(RxError::LinkDown)));
        assert!(rx.interface_gone());
        assert_eq!(rx.recv_batch(&mut batch).unwrap(), 0, "reported once");
    }

    #[test]
    fn a_udp_datagram_is_whole_once_its_checksum_is_completed() {
        use crate::wire::{checksum, ip, ipv4, udp};
        let (mut vnet, mut frame) = udp_datagram(7, 5);
        let packet = ipv4::Packet::new_checked(&frame[14..]).unwrap();
        assert!(packet.verify_checksum());
        assert_eq!((packet.ident(), packet.protocol()), (7, ip::UDP));
        let pseudo = checksum::pseudo_header_sum(packet.addresses(), ip::UDP, 13);
        let datagram = udp::Packet::new_checked(packet.payload()).unwrap();
        assert_eq!(
            datagram.checksum(),
            pseudo,
            "the pseudo-header sum in place"
        );
        assert_eq!(datagram.payload(), [7, 8, 9, 10, 11]);

        vnet::complete_checksum(&mut vnet, &mut frame).unwrap();
        let segment = &frame[34..];
        let sum = checksum::ones_complement_sum(segment, u32::from(pseudo));
        assert_eq!(checksum::fold(sum), 0xffff, "the UDP checksum now holds");
    }
}

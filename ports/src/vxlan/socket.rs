//! The tunnel's I/O: one UDP socket on the underlay, read as the port's
//! receive lane and written by its send half. What to accept and where to
//! send is [`RemoteTable`]'s decision.

use std::io::{self, IoSlice};
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use socket2::{SockAddr, Socket};

use super::remotes::{Destinations, RemoteTable};
use super::tcp_join;
use crate::batch::RxBatch;
use crate::wire::{ethernet, vxlan};
use crate::{PortRx, PortTx, RxError, VnetHdr};

/// The largest UDP payload: a whole frame of [`crate::MAX_FRAME_LEN`] fits.
const DATAGRAM_LEN: usize = 65_536;

/// The receive lane: decapsulates what members send.
///
/// A batch's datagrams are read first, then handed to the switch, with
/// each run of one TCP flow's consecutive segments joined into one
/// super-frame ([`tcp_join`]).
#[derive(Debug)]
pub struct VxlanRx {
    socket: UdpSocket,
    table: Arc<Mutex<RemoteTable>>,
    arrived: Arrived,
    /// The largest inner IP packet (longer TCP frames are super-frames).
    mtu: usize,
}

/// The inner frames of one batch, read straight into one buffer.
#[derive(Debug, Default)]
struct Arrived {
    /// Kept at its largest size, so no read pays for zeroing it.
    bytes: Vec<u8>,
    /// How much of `bytes` the batch's datagrams fill.
    used: usize,
    frames: Vec<(VnetHdr, Range<usize>)>,
    /// A joined super-frame on its way into the batch.
    joined: Vec<u8>,
}

impl Arrived {
    fn clear(&mut self) {
        self.used = 0;
        self.frames.clear();
    }

    /// Room for one more datagram after the others.
    fn free(&mut self) -> &mut [u8] {
        let end = self.used + DATAGRAM_LEN;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        &mut self.bytes[self.used..end]
    }
}

impl VxlanRx {
    pub(super) fn new(socket: UdpSocket, table: Arc<Mutex<RemoteTable>>, mtu: usize) -> VxlanRx {
        VxlanRx {
            socket,
            table,
            arrived: Arrived::default(),
            mtu,
        }
    }

    /// Reads and decapsulates up to `limit` datagrams; true when the
    /// socket had no more.
    fn read(&mut self, limit: usize) -> Result<bool, RxError> {
        let arrived = &mut self.arrived;
        arrived.clear();
        while arrived.frames.len() < limit {
            let (len, source) = match self.socket.recv_from(arrived.free()) {
                Ok(got) => got,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error for an earlier send (a member gone away)
                // surfaces here; it says nothing about this socket.
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(err) => return Err(RxError::Io(err)),
            };
            let start = arrived.used;
            let datagram = &arrived.bytes[start..start + len];
            let verdict = self
                .table
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .receive(source, datagram, Instant::now());
            if let Ok(offset) = verdict {
                let vnet = super::inner_offloads::vnet_for(&datagram[offset..], self.mtu);
                arrived.frames.push((vnet, start + offset..start + len));
                arrived.used += len;
            }
        }
        Ok(false)
    }

    /// Hands the frames read to the batch, runs joined.
    fn deliver(&mut self, batch: &mut RxBatch) {
        let Arrived {
            bytes,
            frames,
            joined,
            ..
        } = &mut self.arrived;
        let frames: Vec<(VnetHdr, &[u8])> = frames
            .iter()
            .map(|(vnet, range)| (*vnet, &bytes[range.clone()]))
            .collect();
        let mut at = 0;
        while at < frames.len() {
            let run = tcp_join::run_length(&frames[at..]);
            if run > 1 {
                joined.clear();
                let vnet = tcp_join::merge(&frames[at..at + run], joined);
                batch.push(vnet, joined);
            } else {
                let (vnet, frame) = frames[at];
                batch.push(vnet, frame);
            }
            at += run;
        }
    }
}

impl PortRx for VxlanRx {
    /// Reads until the batch is full or the socket empty: a batch that
    /// joining left short must not look like an empty socket, or the
    /// worker would wait for the next datagram with these still queued.
    fn recv_batch(&mut self, batch: &mut RxBatch) -> Result<usize, RxError> {
        batch.clear();
        while batch.len() < batch.capacity() {
            let drained = self.read(batch.capacity() - batch.len())?;
            self.deliver(batch);
            if drained {
                break;
            }
        }
        Ok(batch.len())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.socket.as_raw_fd())
    }
}

/// The send half: encapsulates, to one member or to all of them.
///
/// It takes offload headers: a frame with a partial checksum is finished
/// here, and a GSO super-frame (a container's 64 KiB TCP burst, a run of
/// UDP datagrams the switch coalesced) is cut next to the VXLAN headers
/// and sent with UDP segmentation offload, one `sendmsg` for up to
/// [`MAX_GSO_SEGMENTS`] datagrams, instead of one `sendto` per frame.
#[derive(Debug)]
pub struct VxlanTx {
    socket: Socket,
    table: Arc<Mutex<RemoteTable>>,
    header: [u8; vxlan::HEADER_LEN],
    mtu: usize,
    scratch: Mutex<Scratch>,
}

/// Buffers reused between sends.
#[derive(Debug, Default)]
struct Scratch {
    /// A frame whose checksum is completed here.
    frame: Vec<u8>,
    /// The datagrams of a cut super-frame, back to back.
    datagrams: Vec<u8>,
    /// Their lengths.
    lengths: Vec<usize>,
    /// `vnet::segment`'s own.
    cut: Vec<u8>,
}

/// The most datagrams one `UDP_SEGMENT` send may carry (`UDP_MAX_SEGMENTS`).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// The most bytes of datagrams in one send: an IPv4 packet's 65535 less
/// the IP and UDP headers.
const MAX_GSO_BYTES: usize = 65_535 - 20 - 8;

impl VxlanTx {
    pub(super) fn new(socket: Socket, table: Arc<Mutex<RemoteTable>>, mtu: usize) -> VxlanTx {
        let header = vxlan::header(table.lock().unwrap_or_else(PoisonError::into_inner).vni());
        VxlanTx {
            socket,
            table,
            header,
            mtu,
            scratch: Mutex::default(),
        }
    }

    fn send_to(&self, endpoint: SocketAddr, frame: &[u8]) -> io::Result<()> {
        let parts = [IoSlice::new(&self.header), IoSlice::new(frame)];
        self.socket
            .send_to_vectored(&parts, &SockAddr::from(endpoint))
            .map(drop)
    }

    /// Where a frame goes, per the table (nowhere is counted there).
    fn destinations(&self, frame: &ethernet::Frame<&[u8]>) -> Destinations {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .destinations(frame.dst_addr(), frame.src_addr(), Instant::now())
    }

    /// Sends one plain frame to each endpoint.
    fn send_plain(&self, endpoints: &[SocketAddr], frame: &[u8]) -> io::Result<()> {
        let mut outcome = Outcome::default();
        for endpoint in endpoints {
            outcome.count(self.send_to(*endpoint, frame), 1);
        }
        self.finish(outcome)
    }

    /// Cuts a super-frame into datagrams (VXLAN header and a wire frame
    /// each) and sends them in runs of equal size with `UDP_SEGMENT`.
    fn send_cut(
        &self,
        endpoints: &[SocketAddr],
        vnet: &VnetHdr,
        frame: &[u8],
        scratch: &mut Scratch,
    ) -> io::Result<()> {
        let Scratch {
            datagrams,
            lengths,
            cut,
            ..
        } = scratch;
        datagrams.clear();
        lengths.clear();
        let header = self.header;
        let mut emit = |segment: &[u8]| {
            datagrams.extend_from_slice(&header);
            datagrams.extend_from_slice(segment);
            lengths.push(header.len() + segment.len());
        };
        if crate::vnet::segment(vnet, frame, cut, &mut emit).is_err() {
            // Malformed: the switch's own segmentation would drop it too.
            self.table
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .count_sent(0, 1);
            return Ok(());
        }
        let mut outcome = Outcome::default();
        for endpoint in endpoints {
            let mut start = 0;
            for run in gso_runs(lengths) {
                let bytes = &datagrams[start..start + run.bytes];
                start += run.bytes;
                let sent = if run.count == 1 {
                    self.socket
                        .send_to(bytes, &SockAddr::from(*endpoint))
                        .map(drop)
                } else {
                    crate::sys::udp_gso::send_segments(
                        std::os::fd::AsFd::as_fd(&self.socket),
                        *endpoint,
                        bytes,
                        run.segment,
                    )
                    .map(drop)
                };
                outcome.count(sent, run.count as u64);
            }
        }
        self.finish(outcome)
    }

    fn finish(&self, outcome: Outcome) -> io::Result<()> {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count_sent(outcome.sent, outcome.failed);
        // A flood that reached some members went; one member down (an ICMP
        // error, a full buffer) must not count the frame as lost for all.
        match outcome.first_error {
            Some(err) if outcome.sent == 0 => Err(err),
            _ => Ok(()),
        }
    }
}

/// Datagrams sent and refused, and the first refusal.
#[derive(Debug, Default)]
struct Outcome {
    sent: u64,
    failed: u64,
    first_error: Option<io::Error>,
}

impl Outcome {
    fn count(&mut self, result: io::Result<()>, datagrams: u64) {
        match result {
            Ok(()) => self.sent += datagrams,
            Err(err) => {
                self.failed += datagrams;
                self.first_error.get_or_insert(err);
            }
        }
    }
}

/// One `UDP_SEGMENT` send: `count` datagrams of `segment` bytes (the last
/// may be shorter), `bytes` in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GsoRun {
    count: usize,
    segment: u16,
    bytes: usize,
}

/// Groups datagram lengths into sends: equal lengths (a shorter one may end
/// a run), at most [`MAX_GSO_SEGMENTS`] and [`MAX_GSO_BYTES`] per send.
fn gso_runs(lengths: &[usize]) -> Vec<GsoRun> {
    let mut runs: Vec<GsoRun> = Vec::new();
    let mut open: Option<GsoRun> = None;
    for &len in lengths {
        match &mut open {
            Some(run)
                if usize::from(run.segment) >= len
                    && run.count < MAX_GSO_SEGMENTS
                    && run.bytes + len <= MAX_GSO_BYTES =>
            {
                run.count += 1;
                run.bytes += len;
                if len < usize::from(run.segment) {
                    // A shorter datagram can only end a run.
                    runs.extend(open.take());
                }
            }
            _ => {
                runs.extend(open.take());
                open = Some(GsoRun {
                    count: 1,
                    segment: u16::try_from(len).unwrap_or(u16::MAX),
                    bytes: len,
                });
            }
        }
    }
    runs.extend(open);
    runs
}

impl PortTx for VxlanTx {
    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        let Ok(ethernet) = ethernet::Frame::new_checked(frame) else {
            return Ok(());
        };
        // A unicast frame (the common case) needs no list of its own.
        let destinations = self.destinations(&ethernet);
        let endpoints: &[SocketAddr] = match &destinations {
            Destinations::One(endpoint) => std::slice::from_ref(endpoint),
            Destinations::Flood(endpoints) if !endpoints.is_empty() => endpoints,
            Destinations::Flood(_) | Destinations::Nowhere(_) => return Ok(()),
        };
        if vnet.is_plain() {
            return self.send_plain(endpoints, frame);
        }
        let mut scratch = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        if vnet.is_gso() {
            return self.send_cut(endpoints, vnet, frame, &mut scratch);
        }
        // A partial checksum: the far side may be a kernel that trusts it.
        let mut vnet = *vnet;
        scratch.frame.clear();
        scratch.frame.extend_from_slice(frame);
        if crate::vnet::complete_checksum(&mut vnet, &mut scratch.frame).is_err() {
            return Ok(());
        }
        self.send_plain(endpoints, &scratch.frame)
    }

    fn offloads(&self) -> bool {
        true
    }

    fn mtu(&self) -> usize {
        self.mtu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_datagrams_go_in_runs_of_at_most_64_and_a_shorter_one_ends_a_run() {
        let runs = gso_runs(&[1472, 1472, 1472, 900]);
        assert_eq!(
            runs,
            vec![GsoRun {
                count: 4,
                segment: 1472,
                bytes: 3 * 1472 + 900
            }]
        );
        let runs = gso_runs(&[100; 130]);
        assert_eq!(
            runs.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![64, 64, 2]
        );
        // A longer datagram after a shorter one starts a new run.
        let runs = gso_runs(&[500, 900, 900]);
        assert_eq!(
            runs.iter()
                .map(|r| (r.count, r.segment))
                .collect::<Vec<_>>(),
            vec![(1, 500), (2, 900)]
        );
    }

    #[test]
    fn a_run_stays_within_one_ip_packet() {
        // 45 datagrams of a 64 KiB TCP burst (1514-byte frames + 8).
        let runs = gso_runs(&[1522; 45]);
        assert!(runs.iter().all(|r| r.bytes <= MAX_GSO_BYTES));
        assert_eq!(runs.iter().map(|r| r.count).sum::<usize>(), 45);
        assert_eq!(runs.len(), 2);
    }
}

//! The tunnel's send half: frames encapsulated and written to the UDP
//! socket on the underlay, to one member or to all of them. Where each
//! frame goes is [`RemoteTable`]'s decision.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use socket2::{SockAddr, Socket};

use super::cut::{Checksums, Cut};
use super::remotes::{Destinations, RemoteTable};
use crate::wire::{ethernet, vxlan};
use crate::{PortTx, VnetHdr};

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
    sent: Arc<SentCounts>,
    header: [u8; vxlan::HEADER_LEN],
    mtu: usize,
}

/// The datagrams the send half handed to the socket and those it refused
/// ([`super::TunnelStats`]'s `tx_datagrams` and `tx_errors`): counted
/// outside the table, so a send takes the table's lock once (for where
/// the frame goes), not twice.
#[derive(Debug, Default)]
pub(super) struct SentCounts {
    datagrams: AtomicU64,
    errors: AtomicU64,
}

impl SentCounts {
    fn add(&self, sent: u64, failed: u64) {
        if sent > 0 {
            self.datagrams.fetch_add(sent, Ordering::Relaxed);
        }
        if failed > 0 {
            self.errors.fetch_add(failed, Ordering::Relaxed);
        }
    }

    /// Adds the counts to `stats`.
    pub(super) fn add_to(&self, stats: &mut super::TunnelStats) {
        stats.tx_datagrams += self.datagrams.load(Ordering::Relaxed);
        stats.tx_errors += self.errors.load(Ordering::Relaxed);
    }
}

thread_local! {
    /// Buffers reused between sends, one set per sending thread: every
    /// worker sends to the tunnel, and a shared set behind a mutex would
    /// make one worker's super-frame wait for another's `sendmsg`.
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Buffers reused between sends.
#[derive(Debug, Default)]
struct Scratch {
    /// A frame whose checksum is completed here.
    frame: Vec<u8>,
    /// A super-frame's datagrams.
    cut: Cut,
    /// How they go in `UDP_SEGMENT` sends ([`gso_runs`]).
    runs: Vec<GsoRun>,
}

/// The most datagrams one `UDP_SEGMENT` send may carry (`UDP_MAX_SEGMENTS`).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// The most bytes of datagrams in one send: an IPv4 packet's 65535 less
/// the IP and UDP headers.
const MAX_GSO_BYTES: usize = 65_535 - 20 - 8;

impl VxlanTx {
    pub(super) fn new(
        socket: Socket,
        table: Arc<Mutex<RemoteTable>>,
        sent: Arc<SentCounts>,
        mtu: usize,
    ) -> VxlanTx {
        let header = vxlan::header(table.lock().unwrap_or_else(PoisonError::into_inner).vni());
        VxlanTx {
            socket,
            table,
            sent,
            header,
            mtu,
        }
    }

    fn send_to(&self, endpoint: SocketAddr, frame: &[u8]) -> io::Result<()> {
        let parts = [IoSlice::new(&self.header), IoSlice::new(frame)];
        self.socket
            .send_to_vectored(&parts, &SockAddr::from(endpoint))
            .map(drop)
    }

    /// Where a frame goes, per the table (nowhere is counted there), and
    /// the TCP checksums its datagrams need there: partial ones only when
    /// every destination is a switch.
    fn destinations(&self, frame: &ethernet::Frame<&[u8]>) -> (Destinations, Checksums) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        route(&mut table, frame, Instant::now())
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
    /// each: [`Cut`]) and sends them in runs of equal size with
    /// `UDP_SEGMENT`.
    fn send_cut(
        &self,
        endpoints: &[SocketAddr],
        vnet: &VnetHdr,
        frame: &[u8],
        checksums: Checksums,
        scratch: &mut Scratch,
    ) -> io::Result<()> {
        let Scratch { cut, runs, .. } = scratch;
        if cut.cut(&self.header, vnet, frame, checksums).is_err() {
            // Malformed: the switch's own segmentation would drop it too.
            self.sent.add(0, 1);
            return Ok(());
        }
        gso_runs(cut.lengths(), runs);
        let mut outcome = Outcome::default();
        for endpoint in endpoints {
            let mut first = 0;
            for run in runs.iter() {
                let parts = cut.parts(first..first + run.count);
                first += run.count;
                outcome.count(self.send_run(*endpoint, &parts, run), run.count as u64);
            }
        }
        self.finish(outcome)
    }

    /// Sends `run.count` datagrams, back to back in `parts`: with
    /// `UDP_SEGMENT` when there are several.
    fn send_run(
        &self,
        endpoint: SocketAddr,
        parts: &[IoSlice<'_>],
        run: &GsoRun,
    ) -> io::Result<()> {
        if run.count == 1 {
            return self
                .socket
                .send_to_vectored(parts, &SockAddr::from(endpoint))
                .map(drop);
        }
        crate::sys::udp_gso::send_segments(self.socket.as_fd(), endpoint, parts, run.segment)
            .map(drop)
    }

    /// Sends a frame where `destinations` say (the rest of [`PortTx::send`]).
    fn deliver(
        &self,
        destinations: &Destinations,
        checksums: Checksums,
        vnet: &VnetHdr,
        frame: &[u8],
    ) -> io::Result<()> {
        let endpoints: &[SocketAddr] = match destinations {
            Destinations::One(endpoint) => std::slice::from_ref(endpoint),
            Destinations::Flood(endpoints) if !endpoints.is_empty() => endpoints,
            Destinations::Flood(_) | Destinations::Nowhere(_) => return Ok(()),
        };
        if vnet.is_plain() {
            return self.send_plain(endpoints, frame);
        }
        SCRATCH.with_borrow_mut(|scratch| {
            if vnet.is_gso() {
                return self.send_cut(endpoints, vnet, frame, checksums, scratch);
            }
            // A partial checksum: the far side may be a kernel that trusts it.
            let mut vnet = *vnet;
            scratch.frame.clear();
            scratch.frame.extend_from_slice(frame);
            if crate::vnet::complete_checksum(&mut vnet, &mut scratch.frame).is_err() {
                return Ok(());
            }
            self.send_plain(endpoints, &scratch.frame)
        })
    }

    fn finish(&self, outcome: Outcome) -> io::Result<()> {
        self.sent.add(outcome.sent, outcome.failed);
        // A flood that reached some members went; one member down (an ICMP
        // error, a full buffer) must not count the frame as lost for all.
        match outcome.first_error {
            Some(err) if outcome.sent == 0 => Err(err),
            _ => Ok(()),
        }
    }
}

/// Where a frame goes, per `table` (nowhere is counted there), and the
/// TCP checksums its datagrams need there: partial ones only when every
/// destination is a switch.
fn route(
    table: &mut RemoteTable,
    frame: &ethernet::Frame<&[u8]>,
    now: Instant,
) -> (Destinations, Checksums) {
    let destinations = table.destinations(frame.dst_addr(), frame.src_addr(), now);
    let switches = match &destinations {
        Destinations::One(endpoint) => table.are_switches(std::slice::from_ref(endpoint)),
        Destinations::Flood(endpoints) => table.are_switches(endpoints),
        Destinations::Nowhere(_) => false,
    };
    let checksums = if switches {
        Checksums::Partial
    } else {
        Checksums::Full
    };
    (destinations, checksums)
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

/// Groups datagram lengths into sends, written into `runs` (a buffer
/// reused between super-frames): equal lengths (a shorter one may end a
/// run), at most [`MAX_GSO_SEGMENTS`] and [`MAX_GSO_BYTES`] per send.
fn gso_runs(lengths: &[usize], runs: &mut Vec<GsoRun>) {
    runs.clear();
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
}

impl PortTx for VxlanTx {
    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        let Ok(ethernet) = ethernet::Frame::new_checked(frame) else {
            return Ok(());
        };
        // A unicast frame (the common case) needs no list of its own.
        let (destinations, checksums) = self.destinations(&ethernet);
        self.deliver(&destinations, checksums, vnet, frame)
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

    fn runs_of(lengths: &[usize]) -> Vec<GsoRun> {
        let mut runs = vec![GsoRun {
            count: 9,
            segment: 9,
            bytes: 9,
        }];
        gso_runs(lengths, &mut runs);
        runs
    }

    #[test]
    fn equal_datagrams_go_in_runs_of_at_most_64_and_a_shorter_one_ends_a_run() {
        let runs = runs_of(&[1472, 1472, 1472, 900]);
        assert_eq!(
            runs,
            vec![GsoRun {
                count: 4,
                segment: 1472,
                bytes: 3 * 1472 + 900
            }]
        );
        let runs = runs_of(&[100; 130]);
        assert_eq!(
            runs.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![64, 64, 2]
        );
        // A longer datagram after a shorter one starts a new run.
        let runs = runs_of(&[500, 900, 900]);
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
        let runs = runs_of(&[1522; 45]);
        assert!(runs.iter().all(|r| r.bytes <= MAX_GSO_BYTES));
        assert_eq!(runs.iter().map(|r| r.count).sum::<usize>(), 45);
        assert_eq!(runs.len(), 2);
    }
}

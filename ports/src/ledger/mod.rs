//! The lane ledger: how many frames the kernel put in each of a port's
//! receive lanes, and how many the switch is done with, shared between the
//! port's steering program and the workers. It is what lets the steering
//! keep a sender's frames in order while the switch reads by CPU.
//!
//! # Why
//!
//! Read by CPU, a frame goes to the lane of the CPU it is sent on, and
//! each lane has its own worker. A sender that moves to the other CPU while
//! its last frames still wait in the old lane (or are being forwarded by
//! that lane's worker) sends its next frames to the other lane, whose
//! worker may forward them first: the receiver sees them out of order, and
//! TCP takes that for loss. On a two-CPU machine a sender moves often: the
//! worker woken for its frames takes its CPU, and the other CPU takes the
//! sender.
//!
//! # The rule
//!
//! The kernel's receive flow steering (RFS) has the same problem and the
//! same answer, which this follows: *a port's frames move to a new lane
//! only once every frame put in its last lane is done with.* Until then
//! they go on to the last lane, behind the frames they follow.
//!
//! The steering program ([`program`]; a packet fanout group's
//! PACKET_FANOUT_EBPF program for a veth port, a TAP's TUNSETSTEERINGEBPF
//! program) picks the lane it wants (the CPU's, or the solo lane), and
//!
//! 1. if that is the port's last lane, or the last lane's `queued` equals
//!    its `taken`, it makes the wanted lane the last one;
//! 2. otherwise it keeps the last lane;
//! 3. and adds one to the chosen lane's `queued`.
//!
//! A worker adds what it read from a lane to the lane's `taken` once it has
//! forwarded it, still holding the lane ([`LedgerLane::forwarded`]). So
//! when the program sees `queued == taken`, no frame of the port is left in
//! the old lane or in a worker's hands, and whatever it sends to the new
//! lane comes after them. Two CPUs running the program at once for one port
//! are two senders, whose frames need no common order.
//!
//! The counts must stay exact: a frame counted `queued` and never `taken`
//! keeps the port in its lane (safe, but the port loses its reading per
//! CPU); a frame `taken` that was never `queued` would let the port move
//! too early. Frames that never reach the switch are therefore `taken`
//! where they are dropped: by the kernel shortcut's socket filter (a
//! filter per lane, see [`crate::shortcut`]), by a full socket queue (the
//! drops the kernel counts, added at the next sweep). Any other loss (a
//! TAP's full ring, frames thrown away when a port is opened) is settled
//! once the lane has been found empty, with nothing steered to it, twice
//! [`SETTLE_QUIET`] apart ([`LedgerLane::settle`]).
//!
//! The steering by port goes through the same program (the wanted lane is
//! the solo lane), so the counts hold across changes of mode, and the
//! dataplane's hand-over (`lanes.rs` in the switch) finds nothing left to
//! reorder.
//!
//! # Layout
//!
//! `1 + 2n` u64 words for `n` lanes, in a slot of a page shared with other
//! ports' ledgers ([`book`]: an array map of one value, BPF_F_MMAPABLE,
//! mapped into the switch):
//!
//! ```text
//!   word 0            the last lane
//!   words 1 ..= n     queued, per lane (the program adds)
//!   words n+1 ..= 2n  taken, per lane (the workers and the filters add)
//! ```
//!
//! Making the map and loading the program need CAP_BPF; without it
//! (rootless mode) a port is steered by classic BPF, and its readers put
//! its lanes' frames back in the order the kernel received them
//! ([`crate::PortRx::head_arrival`]).

mod book;
pub(crate) mod program;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::sys;
use crate::sys::bpf::ProgType;

use book::Slot;

/// A port's lane ledger (see the module docs).
#[derive(Debug)]
pub struct LaneLedger {
    slot: Slot,
    lanes: usize,
}

impl LaneLedger {
    /// A ledger for `lanes` lanes, all counts zero, lane 0 the last one.
    pub fn new(lanes: usize) -> io::Result<LaneLedger> {
        let lanes = lanes.max(1);
        Ok(LaneLedger {
            slot: Slot::take(1 + 2 * lanes)?,
            lanes,
        })
    }

    /// A ledger for `lanes` lanes and its steering program for `target`
    /// (see [`LaneLedger::load_steering`]), to attach to the port's group
    /// or device; an error where eBPF cannot be loaded (no CAP_BPF).
    pub(crate) fn with_steering(
        lanes: usize,
        target: Option<u32>,
    ) -> io::Result<(Arc<LaneLedger>, OwnedFd)> {
        let ledger = LaneLedger::new(lanes)?;
        let program = ledger.load_steering(target)?;
        Ok((Arc::new(ledger), program))
    }

    /// Loads the steering program that follows the rule for `target`: the
    /// lane of the CPU (`None`) or lane `Some(solo)`.
    pub(crate) fn load_steering(&self, target: Option<u32>) -> io::Result<OwnedFd> {
        let insns = program::steering((self.map_fd(), self.offset(0)), self.lanes, target);
        sys::bpf::load_program(ProgType::SocketFilter, "tapsw_lanes", &insns)
            .map_err(|err| err.error)
    }

    /// The map's descriptor, for the programs that count in it.
    pub(crate) fn map_fd(&self) -> std::os::fd::RawFd {
        self.slot.map_fd()
    }

    /// Where word `word` of the ledger is in the map's value, in bytes.
    fn offset(&self, word: usize) -> i16 {
        i16::try_from(self.slot.offset() + 8 * word).expect("a book within 32 KiB")
    }

    /// The lane the port's frames went to last.
    pub fn last_lane(&self) -> usize {
        self.slot.words()[0].load(Ordering::Acquire) as usize
    }

    /// Frames the steering put in `lane`, ever.
    pub fn queued(&self, lane: usize) -> u64 {
        self.slot.words()[1 + lane].load(Ordering::Acquire)
    }

    /// Frames of `lane` the switch is done with (forwarded or dropped), ever.
    pub fn taken(&self, lane: usize) -> u64 {
        self.slot.words()[1 + self.lanes + lane].load(Ordering::Acquire)
    }

    /// Where `lane`'s `taken` is in the map's value, for a program.
    pub(crate) fn taken_offset(&self, lane: usize) -> i16 {
        self.offset(1 + self.lanes + lane)
    }

    fn add_taken(&self, lane: usize, frames: u64) {
        // Release: the frames were forwarded before the program, which
        // reads this, may send the port's next ones elsewhere.
        self.slot.words()[1 + self.lanes + lane].fetch_add(frames, Ordering::Release);
    }
}

/// One lane's side of a ledger, kept by the lane's receive half.
#[derive(Debug)]
pub struct LedgerLane {
    ledger: Arc<LaneLedger>,
    lane: usize,
    /// `queued` when [`LedgerLane::settle`] found the lane behind and
    /// empty with that count, and since when.
    behind_at: Option<(u64, Instant)>,
}

/// How long a lane found behind must stay empty with no frame steered to
/// it before its difference is written off. A frame the program counted
/// lands in the lane within microseconds (the rest of its path, all in
/// one softirq or one send); 2 ms leaves room for a virtual CPU taken away
/// in between, and is short enough for a lane that gets a frame every few
/// milliseconds (a ping) to be found quiet.
pub const SETTLE_QUIET: Duration = Duration::from_millis(2);

impl LedgerLane {
    pub fn new(ledger: Arc<LaneLedger>, lane: usize) -> Self {
        LedgerLane {
            ledger,
            lane,
            behind_at: None,
        }
    }

    /// `frames` read from the lane were forwarded (or dropped by the
    /// switch): called with the lane still held, after the last send.
    pub fn forwarded(&self, frames: usize) {
        if frames > 0 {
            self.ledger.add_taken(self.lane, frames as u64);
        }
    }

    /// [`LedgerLane::settle`] for a lane read through `fd`: empty when it
    /// does not poll readable (or cannot be asked).
    pub(crate) fn settle_read_through(&mut self, fd: BorrowedFd<'_>, now: Instant) -> Option<u64> {
        self.settle(|| !sys::readable(fd).unwrap_or(true), now)
    }

    /// The kernel dropped `frames` counted for this lane (a full queue).
    pub fn dropped(&self, frames: u64) {
        if frames > 0 {
            self.ledger.add_taken(self.lane, frames);
        }
    }

    /// Called now and then with the lane held (every sweep, and again
    /// within milliseconds while a lane is behind): a lane whose `queued`
    /// is ahead of `taken`, found `empty` with the same `queued` at least
    /// [`SETTLE_QUIET`] apart (at `now`), lost the difference somewhere no
    /// count saw (a TAP's full ring); those frames are taken, so the port
    /// may move again. Returns `None` if the lane is in step, else how many
    /// were written off (0: not yet, ask again).
    pub fn settle(&mut self, empty: impl FnOnce() -> bool, now: Instant) -> Option<u64> {
        let queued = self.ledger.queued(self.lane);
        let taken = self.ledger.taken(self.lane);
        if taken >= queued {
            self.behind_at = None;
            return None;
        }
        if !empty() {
            self.behind_at = None;
            return Some(0);
        }
        match self.behind_at {
            Some((seen, since)) if seen == queued => {
                if now.saturating_duration_since(since) < SETTLE_QUIET {
                    return Some(0);
                }
                self.behind_at = None;
                self.ledger.add_taken(self.lane, queued - taken);
                Some(queued - taken)
            }
            _ => {
                self.behind_at = Some((queued, now));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests;

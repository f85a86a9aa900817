//! The transmit side of a forwarding pass: holding, coalescing, the batch
//! send and counting, as quinn-udp is the send side of quinn-proto.
//!
//! The switch decides where each frame goes and in which form (see
//! `switch::fabric`); it pushes (egress, header, bytes) into a [`TxPass`],
//! and this module gets them out:
//!
//! - Holding. With [`Batching::HoldUnicast`], a unicast frame for a port
//!   that takes offload headers, and is not a GSO super-frame, is copied
//!   aside until the pass ends; then each port's share leaves in one
//!   [`PortTx::send_batch`] (`sendmmsg` on `--iface` ports). Besides the
//!   system calls saved, a receiver is woken once per pass instead of once
//!   per frame: veth and TAP run the receiver's stack inside the send, and
//!   the woken receiver takes the CPU only when the call returns.
//! - Coalescing. With `coalesce_udp`, each run of held datagrams of one UDP
//!   flow leaves as one UDP GSO super-frame ([`crate::coalesce`]): the
//!   receiver's stack looks up route and socket once per run, and cuts the
//!   run back into the datagrams that were sent. A port that refuses the
//!   super-frame (a kernel without UDP GSO) gets the datagrams as they came.
//! - Order. A port's frames leave in the order they were pushed: a frame
//!   that is not held first sends everything held.
//! - Counting. Every frame is reported to its [`Egress`] once, when it has
//!   left or was refused; a super-frame's datagrams count one by one, as
//!   they were decided.
//!
//! A [`TxPass`] borrows the [`Batcher`] (which keeps the buffers from pass
//! to pass) and the egress ports for one forwarding pass, and sends what
//! it holds when it is dropped: nothing can be left behind.

use std::fmt;

use crate::PortTx;
use crate::coalesce;
use crate::vnet::VnetHdr;

#[cfg(test)]
mod tests;

/// The most frames held at once; a pass that pushes more sends the held
/// ones and starts again. A received batch is at most 32 frames.
pub const MAX_HELD: usize = 64;

/// A port as the batcher sees it: where to send, and whom to tell what
/// became of each frame. The switch implements it for its port handles
/// (whose counters and capture live there).
pub trait Egress {
    /// The port's sending half.
    fn tx(&self) -> &dyn PortTx;

    /// `frame` left the port, alone or as one datagram of a super-frame.
    fn count_sent(&self, frame: &[u8]);

    /// One super-frame carrying `datagrams` datagrams left the port (each
    /// of them is also reported to [`Egress::count_sent`]).
    fn count_coalesced(&self, datagrams: usize);

    /// The port refused a frame; it is lost.
    fn count_refused(&self);
}

/// Whether frames wait for the end of the pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Batching {
    /// Every frame leaves when it is pushed (a pass of one frame at a time:
    /// the gateway thread, replay).
    #[default]
    Off,
    /// Small unicast frames for ports that take offload headers wait for
    /// the end of the pass (the workers); with `coalesce_udp`, runs of one
    /// UDP flow's datagrams leave as one super-frame.
    HoldUnicast { coalesce_udp: bool },
}

/// The transmit buffers one forwarding thread reuses from pass to pass.
#[derive(Default)]
pub struct Batcher {
    batching: Batching,
    held: Vec<Held>,
    /// The held frames' bytes, one after the other.
    bytes: Vec<u8>,
    /// Super-frames made from held datagrams, rebuilt at every flush.
    merged: Vec<u8>,
}

/// A held frame: its header, and where its bytes are in `Batcher::bytes`
/// (its egress is in the pass, which borrows the ports).
struct Held {
    vnet: VnetHdr,
    start: usize,
    len: usize,
}

impl fmt::Debug for Batcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Batcher({:?})", self.batching)
    }
}

impl Batcher {
    pub fn new(batching: Batching) -> Self {
        Batcher {
            batching,
            held: Vec::with_capacity(MAX_HELD),
            bytes: Vec::new(),
            merged: Vec::new(),
        }
    }

    pub fn batching(&self) -> Batching {
        self.batching
    }

    /// Starts a forwarding pass; what it holds leaves when it is dropped.
    pub fn pass<'a, E: Egress>(&'a mut self) -> TxPass<'a, E> {
        // Only a pass leaked with `mem::forget` leaves frames behind, and
        // their egress went with it: they cannot be sent.
        self.held.clear();
        self.bytes.clear();
        TxPass {
            batcher: self,
            egress_of: Vec::new(),
        }
    }
}

/// One forwarding pass's transmit queue. Dropping it sends every held
/// frame, each port's in one batch, ports in the order their first frame
/// came.
pub struct TxPass<'a, E: Egress> {
    batcher: &'a mut Batcher,
    /// The egress of `batcher.held[i]`. Allocated by the first frame held
    /// (a pass that holds nothing costs nothing).
    egress_of: Vec<&'a E>,
}

impl<E: Egress> fmt::Debug for TxPass<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TxPass({:?}, {} held)",
            self.batcher.batching,
            self.batcher.held.len()
        )
    }
}

impl<'a, E: Egress> TxPass<'a, E> {
    /// Queues a unicast frame for `egress`. It is held until the pass ends
    /// if batching allows and the frame goes out as it is (the port takes
    /// offload headers, no GSO); otherwise it leaves now, after everything
    /// held.
    #[inline]
    pub fn push(&mut self, egress: &'a E, vnet: &VnetHdr, frame: &[u8]) {
        if self.batcher.batching == Batching::Off || !egress.tx().offloads() || vnet.is_gso() {
            return self.send_now(egress, vnet, frame);
        }
        if self.batcher.held.len() == MAX_HELD {
            self.flush();
        }
        if self.egress_of.capacity() == 0 {
            self.egress_of.reserve_exact(MAX_HELD);
        }
        self.egress_of.push(egress);
        let batcher = &mut *self.batcher;
        let start = batcher.bytes.len();
        batcher.bytes.extend_from_slice(frame);
        batcher.held.push(Held {
            vnet: *vnet,
            start,
            len: frame.len(),
        });
    }

    /// Sends a frame now, after everything held (a flood's copies, which
    /// are never held).
    #[inline]
    pub fn send_now(&mut self, egress: &'a E, vnet: &VnetHdr, frame: &[u8]) {
        self.flush();
        transmit_one(egress, *vnet, frame);
    }

    /// Sends every held frame: each port's in one `send_batch`, ports in
    /// the order their first frame came.
    #[inline]
    fn flush(&mut self) {
        if !self.batcher.held.is_empty() {
            self.flush_held();
        }
    }

    fn flush_held(&mut self) {
        let Batcher {
            batching,
            held,
            bytes,
            merged,
        } = &mut *self.batcher;
        if let ([frame], [egress]) = (held.as_slice(), self.egress_of.as_slice()) {
            // One frame held (a request, an answer): sent as it is, without
            // the per-port tables of `send_by_port`, which a round trip
            // would fill and clear twice for one frame each.
            transmit_one(*egress, frame.vnet, frame.bytes(bytes));
        } else {
            let coalescing = matches!(batching, Batching::HoldUnicast { coalesce_udp: true });
            send_by_port(held, bytes, &self.egress_of, coalescing, merged);
        }
        held.clear();
        bytes.clear();
        self.egress_of.clear();
    }
}

impl<E: Egress> Drop for TxPass<'_, E> {
    #[inline]
    fn drop(&mut self) {
        self.flush();
    }
}

impl Held {
    /// The frame's bytes in `bytes` (the batcher's).
    fn bytes<'b>(&self, bytes: &'b [u8]) -> &'b [u8] {
        &bytes[self.start..self.start + self.len]
    }
}

/// Sends `held` (their bytes in `bytes`, their ports in `egress_of`): each
/// port's frames in one call, ports in the order their first frame came.
fn send_by_port<E: Egress>(
    held: &[Held],
    bytes: &[u8],
    egress_of: &[&E],
    coalescing: bool,
    merged: &mut Vec<u8>,
) {
    let mut sent = [false; MAX_HELD];
    for first in 0..held.len() {
        if sent[first] {
            continue;
        }
        let egress = egress_of[first];
        let mut frames = [(VnetHdr::default(), &[][..]); MAX_HELD];
        let mut count = 0;
        for (i, frame) in held.iter().enumerate().skip(first) {
            if std::ptr::eq(egress_of[i], egress) {
                frames[count] = (frame.vnet, frame.bytes(bytes));
                count += 1;
                sent[i] = true;
            }
        }
        transmit_runs(egress, &frames[..count], coalescing, merged);
    }
}

/// Sends one frame out of `egress`, counted as `transmit_all` counts.
fn transmit_one<E: Egress>(egress: &E, vnet: VnetHdr, frame: &[u8]) {
    let frame = (vnet, frame);
    let one = std::slice::from_ref(&frame);
    transmit_all(egress, one, &[one]);
}

/// A run of held frames for one port: `len` frames from `first`, sent as
/// one super-frame (`merged[start..end]` with `vnet`) when `len > 1`.
#[derive(Clone, Copy, Default)]
struct Run {
    first: usize,
    len: usize,
    vnet: VnetHdr,
    start: usize,
    end: usize,
}

/// Writes held frames out of one port; with `coalescing`, each run of one
/// UDP flow's datagrams as one super-frame (built in `merged`).
fn transmit_runs<E: Egress>(
    egress: &E,
    frames: &[(VnetHdr, &[u8])],
    coalescing: bool,
    merged: &mut Vec<u8>,
) {
    // Build every super-frame first, so `merged` no longer moves when the
    // frames to send point into it.
    merged.clear();
    let mut runs = [Run::default(); MAX_HELD];
    let (mut count, mut first) = (0, 0);
    while first < frames.len() {
        let len = if coalescing {
            coalesce::run_length(&frames[first..])
        } else {
            1
        };
        let start = merged.len();
        let vnet = if len > 1 {
            coalesce::merge(&frames[first..first + len], merged)
        } else {
            VnetHdr::default()
        };
        runs[count] = Run {
            first,
            len,
            vnet,
            start,
            end: merged.len(),
        };
        count += 1;
        first += len;
    }
    let mut wire = [(VnetHdr::default(), &[][..]); MAX_HELD];
    let mut stands_for = [&[][..]; MAX_HELD];
    for (i, run) in runs[..count].iter().enumerate() {
        wire[i] = if run.len == 1 {
            frames[run.first]
        } else {
            (run.vnet, &merged[run.start..run.end])
        };
        stands_for[i] = &frames[run.first..run.first + run.len];
    }
    transmit_all(egress, &wire[..count], &stands_for[..count]);
}

/// Each of `frames` (at most [`MAX_HELD`]) standing for itself, as
/// `transmit_all` takes them.
fn each_alone<'a>(frames: &'a [(VnetHdr, &'a [u8])]) -> [&'a [(VnetHdr, &'a [u8])]; MAX_HELD] {
    std::array::from_fn(|i| frames.get(i..i + 1).unwrap_or(&[]))
}

/// Writes frames out of one port with as few calls as it takes.
/// `stands_for[i]` are the frames `wire[i]` carries (itself, or the
/// datagrams of a super-frame): they are counted one by one, as they were
/// decided. A frame that fails is counted as refused and the rest still
/// go; a super-frame that fails goes out as the datagrams it carries.
fn transmit_all<E: Egress>(
    egress: &E,
    wire: &[(VnetHdr, &[u8])],
    stands_for: &[&[(VnetHdr, &[u8])]],
) {
    let mut next = 0;
    while next < wire.len() {
        let sent = egress.tx().send_batch(&wire[next..]).unwrap_or(0);
        for carried in &stands_for[next..next + sent] {
            if carried.len() > 1 {
                egress.count_coalesced(carried.len());
            }
            for (_, frame) in carried.iter() {
                egress.count_sent(frame);
            }
        }
        next += sent;
        if next < wire.len() {
            let carried = stands_for[next];
            if carried.len() > 1 {
                // A super-frame refused (a kernel without UDP GSO, say):
                // its datagrams go as they came, and count as those do.
                transmit_all(egress, carried, &each_alone(carried)[..carried.len()]);
            } else {
                egress.count_refused();
            }
            next += 1;
        }
    }
}

//! The fabric: carries one received frame through the engine's decision to
//! the egress ports' transmit queue, and counts what happened on the way
//! (the Linux bridge's `br_forward.c`).
//!
//! The engine says *where* a frame goes; the fabric says in which form:
//!
//! - a flood goes to every port in the [`PortSet`] but the ingress port;
//! - a port that takes virtio-net headers gets the frame as it came, GSO
//!   super-frame and partial checksum included (that is the fast path);
//! - a port that does not (a plain TAP, the gateway, a pcap file) gets wire
//!   frames: a partial checksum is completed, a GSO frame is cut into
//!   segments in software;
//! - a frame longer than the egress port can carry is dropped and counted
//!   there, as the Linux bridge does (`is_skb_forwardable`).
//!
//! What leaves, and when, is the transmit queue's job
//! ([`ports::transmit`]): a [`Pass`] pushes each (egress, header, frame)
//! into it, and the queue holds, coalesces, sends and counts. A pass sends
//! what it holds when it is dropped, so a worker forwards a received batch
//! in one pass and cannot forget to send.
//!
//! The live worker threads and `replay` both forward through [`Fabric`], so
//! the two cannot disagree.

mod port_set;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use ports::capture::Direction;
use ports::transmit::{Batcher, TxPass};
use ports::vnet::{self, VnetHdr};

pub use port_set::{PortHandle, PortSet};
pub use ports::transmit::Batching;

use crate::engine::{Action, Session, Verdict};
use crate::port::PortId;
use crate::stats::DropReason;
use crate::time::Instant;
use crate::trace::TraceLine;

/// Ethernet header plus one VLAN tag: what a frame may add to the MTU
/// (the Linux bridge's `dev->mtu + dev->hard_header_len + VLAN_HLEN`).
const L2_OVERHEAD: usize = 14 + 4;

/// Where trace lines go (stderr for `serve`, stdout for `replay`).
pub type TraceSink = dyn Fn(&str) + Send + Sync;

/// Per-thread forwarding state: scratch space for software segmentation,
/// the transmit buffers and the trace switch. Cheap to create; one per
/// forwarding thread.
pub struct Fabric {
    segment_scratch: Vec<u8>,
    flooded_to: Vec<PortId>,
    trace: Option<Arc<TraceSink>>,
    batcher: Batcher,
}

impl fmt::Debug for Fabric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Fabric({:?}, trace: {})",
            self.batcher.batching(),
            self.trace.is_some()
        )
    }
}

impl Fabric {
    /// A fabric that sends every frame as soon as it is decided.
    pub fn new(trace: Option<Arc<TraceSink>>) -> Self {
        Fabric::with_batching(trace, Batching::Off)
    }

    /// A fabric whose passes hold and coalesce frames as `batching` says
    /// (see [`ports::transmit`]).
    pub fn with_batching(trace: Option<Arc<TraceSink>>, batching: Batching) -> Self {
        Fabric {
            segment_scratch: Vec::new(),
            flooded_to: Vec::new(),
            trace,
            batcher: Batcher::new(batching),
        }
    }

    /// Starts a forwarding pass over `ports`, the set the decisions are
    /// made with. Held frames leave when the pass is dropped.
    pub fn pass<'a>(&'a mut self, ports: &'a PortSet) -> Pass<'a> {
        Pass {
            ports,
            segment_scratch: &mut self.segment_scratch,
            flooded_to: &mut self.flooded_to,
            trace: self.trace.as_deref(),
            transmit: self.batcher.pass(),
        }
    }

    /// Decides and delivers one frame in a pass of its own (nothing is
    /// held past the call). See [`Pass::forward`].
    #[inline]
    pub fn forward(
        &mut self,
        session: &mut Session<'_>,
        ports: &PortSet,
        now: Instant,
        ingress: &PortHandle,
        vnet: &mut VnetHdr,
        frame: &mut [u8],
    ) -> Verdict {
        self.pass(ports).forward(session, now, ingress, vnet, frame)
    }
}

/// One forwarding pass: frames decided against one [`PortSet`], pushed
/// into one transmit queue that is flushed when the pass is dropped.
pub struct Pass<'a> {
    ports: &'a PortSet,
    segment_scratch: &'a mut Vec<u8>,
    flooded_to: &'a mut Vec<PortId>,
    trace: Option<&'a TraceSink>,
    transmit: TxPass<'a, PortHandle>,
}

impl fmt::Debug for Pass<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pass({:?})", self.transmit)
    }
}

/// How a copy of a frame is sent: a unicast frame may wait in the transmit
/// queue, a flood's copies leave at once (after anything held).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Unicast,
    Flood,
}

impl<'a> Pass<'a> {
    /// Decides and delivers one frame received on `ingress` at `now`. The
    /// frame may be changed in place (a completed checksum).
    pub fn forward(
        &mut self,
        session: &mut Session<'_>,
        now: Instant,
        ingress: &PortHandle,
        vnet: &mut VnetHdr,
        frame: &mut [u8],
    ) -> Verdict {
        ingress.counters.count_rx(1, frame.len() as u64);
        ingress.capture(Direction::Inbound, frame);
        let verdict = session.handle_frame(now, ingress.id, frame);
        let ports = self.ports;
        match verdict.action {
            Action::Drop(reason) => ingress.counters.count_drop(reason),
            Action::Forward(id) => match ports.get(id) {
                Some(egress) => self.deliver(egress, vnet, frame, Delivery::Unicast),
                // The table pointed at a port removed a moment ago.
                None => ingress.counters.count_drop(DropReason::TxError),
            },
            Action::Flood(_) => {
                for egress in ports.iter().filter(|p| p.id != ingress.id) {
                    self.deliver(egress, vnet, frame, Delivery::Flood);
                }
            }
        }
        if let Some(trace) = self.trace {
            // A flood went to every port but the ingress port.
            self.flooded_to.clear();
            if matches!(verdict.action, Action::Flood(_)) {
                let others = ports.iter().filter(|p| p.id != ingress.id);
                self.flooded_to.extend(others.map(|p| p.id));
            }
            let name = |id: PortId| ports.name_of(id);
            let line = TraceLine {
                now,
                ingress: ingress.id,
                frame,
                verdict: &verdict,
                port_name: &name,
                flooded_to: self.flooded_to,
            };
            trace(&line.to_string());
        }
        verdict
    }

    /// Puts a copy of the frame, converted to what the port takes, into
    /// the transmit queue.
    #[inline]
    fn deliver(
        &mut self,
        egress: &'a PortHandle,
        vnet: &mut VnetHdr,
        frame: &mut [u8],
        delivery: Delivery,
    ) {
        let to = Destination {
            egress,
            limit: egress.tx.mtu() + L2_OVERHEAD,
            delivery,
        };
        let header = if egress.tx.offloads() {
            *vnet
        } else if vnet.is_gso() {
            return self.deliver_segments(to, vnet, frame);
        } else {
            // At most a partial checksum to finish. Done in place and once:
            // the completed frame is just as good for the ports still to come.
            if !vnet.is_plain() && vnet::complete_checksum(vnet, frame).is_err() {
                egress.counters.count_drop(DropReason::Malformed);
                return;
            }
            VnetHdr::default()
        };
        push(&mut self.transmit, to, &header, frame);
    }

    /// Cuts a GSO super-frame into wire frames for a port that does not
    /// take offload headers, and pushes them one by one.
    fn deliver_segments(&mut self, to: Destination<'a>, vnet: &VnetHdr, frame: &[u8]) {
        let transmit = &mut self.transmit;
        let mut emit = |segment: &[u8]| push(transmit, to, &VnetHdr::default(), segment);
        if vnet::segment(vnet, frame, self.segment_scratch, &mut emit).is_err() {
            to.egress.counters.count_drop(DropReason::Malformed);
        }
    }
}

/// Where a copy of a frame goes: the port, the longest frame it carries,
/// and whether the copy may wait.
#[derive(Clone, Copy)]
struct Destination<'a> {
    egress: &'a PortHandle,
    limit: usize,
    delivery: Delivery,
}

/// Pushes a frame in its final form (with `header` if the port takes
/// offloads) into the transmit queue; a frame longer than the port carries
/// (`to.limit`) that is not a GSO super-frame is dropped as too big, unless
/// the port's MTU has grown since it was last read (`ports::mtu`).
#[inline(always)]
fn push<'a>(
    transmit: &mut TxPass<'a, PortHandle>,
    to: Destination<'a>,
    header: &VnetHdr,
    frame: &[u8],
) {
    if frame.len() > to.limit
        && !header.is_gso()
        && frame.len() > to.egress.tx.refresh_mtu_for_too_big() + L2_OVERHEAD
    {
        to.egress.counters.count_drop(DropReason::TooBig);
        return;
    }
    match to.delivery {
        Delivery::Unicast => transmit.push(to.egress, header, frame),
        Delivery::Flood => transmit.send_now(to.egress, header, frame),
    }
}

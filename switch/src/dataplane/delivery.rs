//! Decides and delivers the frames a worker reads: the worker's one use of
//! the [`Fabric`].

use std::sync::Arc;

use ports::RxBatch;

use super::Shared;
use crate::engine::Action;
use crate::fabric::{Batching, Fabric, PortHandle, PortSet, TraceSink};
use crate::mac_table::Learn;
use crate::port::PortId;

/// Decides and delivers received frames: the worker's one use of the
/// [`Fabric`].
pub(super) struct Delivery {
    fabric: Fabric,
    /// Ports the last home batch sent unicast frames to, where answers are
    /// likely waiting (see `lanes.rs`).
    sent_to: Vec<PortId>,
}

impl Delivery {
    /// Holds unicast frames for one send per port and batch, coalescing
    /// UDP runs if `coalesce_udp`.
    pub(super) fn new(trace: Option<Arc<TraceSink>>, coalesce_udp: bool) -> Self {
        Delivery {
            fabric: Fabric::with_batching(trace, Batching::HoldUnicast { coalesce_udp }),
            sent_to: Vec::new(),
        }
    }

    /// The ports the last home batch sent unicast frames to; hand the list
    /// back with [`Delivery::give_back`] (it keeps its allocation).
    pub(super) fn take_targets(&mut self) -> Vec<PortId> {
        std::mem::take(&mut self.sent_to)
    }

    pub(super) fn give_back(&mut self, mut targets: Vec<PortId>) {
        targets.clear();
        self.sent_to = targets;
    }

    /// Forwards the `n` frames of `batch` received on `ingress`; with
    /// `note_targets`, notes the ports it sent unicast frames to. Returns
    /// the port the first unicast frame went to.
    pub(super) fn forward(
        &mut self,
        shared: &Shared,
        ports: &PortSet,
        ingress: &PortHandle,
        batch: &mut RxBatch,
        n: usize,
        note_targets: bool,
    ) -> Option<PortId> {
        let now = shared.clock.now();
        let mut session = shared.engine.session();
        if note_targets {
            self.sent_to.clear();
        }
        // Held unicast frames leave when the pass ends, each port's in one
        // call, while the caller still holds the ingress lane's lock (frames
        // stay in order). Declared after `session`, so it is dropped first.
        let mut pass = self.fabric.pass(ports);
        let mut first = None;
        let mut learned = false;
        for i in 0..n {
            let (vnet, frame) = batch.get_mut(i);
            let verdict = pass.forward(&mut session, now, ingress, vnet, frame);
            learned |= matches!(verdict.learn, Some(Learn::New | Learn::Moved { .. }));
            if let Action::Forward(egress) = verdict.action {
                first.get_or_insert(egress);
                if note_targets && !self.sent_to.contains(&egress) {
                    self.sent_to.push(egress);
                }
            }
        }
        if learned {
            // After the batch, so the table has every address it taught.
            shared.nudge_shortcut();
        }
        shared.rest.frames_read();
        first
    }
}

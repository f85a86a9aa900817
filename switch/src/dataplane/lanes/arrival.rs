//! Reading a port without a ledger in the order its frames arrived: the
//! lanes of a rootless port are steered by classic BPF, which keeps no
//! count, so a sender that moved to another CPU may have frames in two
//! lanes at once. Its packet sockets note when the kernel received each
//! frame, one reader at a time reads the port (its turn, see `lanes.rs`),
//! and that reader forwards the frames of all its lanes in that order.

use ports::{PortRx, ReadDepth, RxBatch};

use super::{Forward, LaneReader, PortLanes, RxState, SLOT_BYTES};

impl LaneReader {
    /// Forwards the `n` frames of the batch, read from lane `at` of `port`
    /// through `rx`, with the frames of the port's other lanes that arrived
    /// before them, all in the order they arrived. For a port without a
    /// ledger read in arrival order, in either mode (by port, the other
    /// lanes are empty but at a change: the hand-over drains through here
    /// too), called with the port's turn and lane `at` held.
    ///
    /// Why this keeps a sender's order: the kernel notes when a frame
    /// arrives, on its sender's CPU, and puts it in its lane within the
    /// same system call of the sender's (as the Linux bridge forwards it
    /// there). So once a frame was read, every frame its sender sent before
    /// it is in a lane already (or was forwarded). Each round looks at the
    /// heads of the other lanes: the batch's frames that arrived before all
    /// of them go; otherwise the oldest head is taken and goes first. This
    /// lane's own queue needs no look: a frame its sender put there before
    /// one of the batch's would be in the batch. The kernel can put a frame
    /// in its lane later, from a receive queue processed after the system
    /// call (under heavy load): then the Linux bridge reorders that sender
    /// too, and so would the lanes' ledger.
    pub(super) fn forward_by_arrival(
        &mut self,
        port: &PortLanes,
        at: usize,
        rx: &mut Box<dyn PortRx>,
        n: usize,
        note_targets: bool,
        forward: &mut Forward<'_>,
    ) {
        let lane = &port.lanes[at];
        let mut left = n;
        while left > 0 {
            let Some((oldest, arrived)) = Self::oldest_head(port, at) else {
                break;
            };
            if self.batch.arrived(0) <= arrived {
                let k = (0..left)
                    .take_while(|&i| self.batch.arrived(i) <= arrived)
                    .count();
                port.forward_read((lane, rx), &mut self.batch, k, note_targets, forward);
                self.batch.drop_front(k);
                left -= k;
            } else if !self.forward_one(port, oldest, note_targets, forward) {
                break;
            }
        }
        if left > 0 {
            port.forward_read((lane, rx), &mut self.batch, left, note_targets, forward);
        }
    }

    /// The lane of `port` but `at` whose head frame arrived first, and
    /// when; `None` if they are empty. A lane that cannot say counts as
    /// empty (its home worker meets the error when it reads).
    fn oldest_head(port: &PortLanes, at: usize) -> Option<(usize, u64)> {
        let mut oldest: Option<(usize, u64)> = None;
        for (i, lane) in port.lanes.iter().enumerate() {
            if i == at {
                continue;
            }
            let head = match lane.lock().rx.as_mut() {
                Some(rx) => rx.head_arrival(),
                None => Ok(None),
            };
            if let Ok(Some(arrived)) = head
                && oldest.is_none_or(|(_, first)| arrived < first)
            {
                oldest = Some((i, arrived));
            }
        }
        oldest
    }

    /// Reads one frame from lane `from` of `port` (another than the
    /// caller's) and forwards it. False if nothing could be read.
    fn forward_one(
        &mut self,
        port: &PortLanes,
        from: usize,
        note_targets: bool,
        forward: &mut Forward<'_>,
    ) -> bool {
        let lane = &port.lanes[from];
        let mut state = lane.lock();
        let RxState { rx, error } = &mut *state;
        let Some(rx) = rx.as_mut() else {
            return false;
        };
        let one = self.one.get_or_insert_with(|| RxBatch::new(1, SLOT_BYTES));
        one.set_depth(ReadDepth::OneFrame);
        match rx.recv_batch(one) {
            Ok(0) => false,
            Ok(n) => {
                port.forward_read((lane, rx), one, n, note_targets, forward);
                true
            }
            // The home worker acts on errors (see `take_answers`).
            Err(err) => {
                *error = Some(err);
                false
            }
        }
    }
}

//! The hand-over (see `lanes.rs`'s module docs): what a reader of a lane
//! must do first about its port's last steering, and the draining of the
//! lanes that steering no longer feeds.

use ports::ReadDepth;

use super::super::affinity::ModeSwitch;
use super::super::steering::Before;
use super::{Forward, LaneReader, PortLanes, RxState};

impl PortLanes {
    /// What a reader of lane `reading` must do first about the port's last
    /// steering. Called with that lane locked.
    pub(super) fn due(&self, reading: usize) -> Due {
        let Some(pending) = self.steering.pending() else {
            return Due::Nothing;
        };
        let change = pending.change;
        match (pending.by_cpu, pending.before) {
            // Every lane gets frames now; the older ones wait in the lane
            // that got them all, its own reader reads them first anyway.
            (true, Before::Lane(older)) if older == reading => Due::ReadOwn {
                change,
                taken: pending.taken,
            },
            (true, Before::Lane(older)) => Due::Drain {
                change,
                older: Older::One(older),
            },
            // Steerings alternate between the two modes; were one ever
            // steered by CPU twice, nothing would have moved.
            (true, Before::EveryLane) => {
                self.steering.handed_over(change);
                Due::Nothing
            }
            // A lane that no longer gets frames holds only older ones.
            (false, _) if reading != pending.solo => Due::Nothing,
            (false, Before::Lane(older)) if older == reading => {
                self.steering.handed_over(change);
                Due::Nothing
            }
            (false, Before::Lane(older)) => Due::Drain {
                change,
                older: Older::One(older),
            },
            (false, Before::EveryLane) => Due::Drain {
                change,
                older: Older::AllBut(reading),
            },
        }
    }
}

/// What a reader does first about a port's steering (see
/// [`PortLanes::due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// Nothing: read.
    Nothing,
    /// Read: this lane holds the older frames, ahead of the newer ones. A
    /// batch that leaves it empty, once the kernel has `taken` the
    /// steering, hands the steering over.
    ReadOwn { change: u64, taken: bool },
    /// Let the lane go, forward the `older` lanes' frames, read after.
    Drain { change: u64, older: Older },
}

/// The lanes a hand-over drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Older {
    One(usize),
    AllBut(usize),
}

impl Older {
    fn contains(self, at: usize) -> bool {
        match self {
            Older::One(lane) => at == lane,
            Older::AllBut(lane) => at != lane,
        }
    }
}

impl LaneReader {
    /// Forwards the frames waiting in the `older` lanes of `port`, which
    /// came before its steering `change` and before anything in the lanes
    /// that get frames now, once the kernel has taken that steering; then
    /// the steering is handed over. Called with no lane held. Another
    /// worker busy with one of those lanes is waited for (it forwards under
    /// the lock).
    pub(super) fn hand_over(
        &mut self,
        mode: &ModeSwitch,
        port: &PortLanes,
        change: u64,
        older: Older,
        forward: &mut Forward<'_>,
    ) {
        if port.steering.is_handed_over(change) {
            return;
        }
        // Rule 2: until the kernel's call returns, frames may still land in
        // the older lanes.
        self.waited_for_kernel += port.steering.wait_until_taken(change, mode);
        for (at, lane) in port.lanes.iter().enumerate() {
            if !older.contains(at) {
                continue;
            }
            let mut state = lane.lock();
            let RxState { rx, error } = &mut *state;
            let Some(rx) = rx.as_mut() else { continue };
            // Only a short batch tells that the lane is drained.
            self.batch.set_depth(ReadDepth::UntilEmpty);
            loop {
                match rx.recv_batch(&mut self.batch) {
                    Ok(n) => {
                        // Without a ledger a sender's older frames may be
                        // in several lanes, this reader's own too: they go
                        // in the order they arrived.
                        if n > 0 && port.arrival_order {
                            self.forward_by_arrival(port, at, rx, n, false, forward);
                        } else if n > 0 {
                            port.forward_read((lane, rx), &mut self.batch, n, false, forward);
                        }
                        // A short batch: the lane was empty a moment ago,
                        // and what lands now is newer.
                        if n < self.batch.capacity() {
                            break;
                        }
                    }
                    // The home worker acts on errors (see `take_answers`).
                    Err(err) => {
                        *error = Some(err);
                        break;
                    }
                }
            }
        }
        port.steering.handed_over(change);
    }
}

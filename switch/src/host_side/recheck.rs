//! Asking the containers again after the gateway's queue overflowed.
//!
//! The workers hand frames for the gateway to its thread through a bounded
//! queue; past it, frames are dropped and counted (never unbounded memory).
//! TCP recovers every lost segment by retransmission except one: a RST is
//! never sent again. A container that resets thousands of flows at once
//! (its process ended) overflows the queue, and each lost RST would leave
//! its flow, and the flow's host socket, until the idle timer.
//!
//! So after an overflow the gateway probes every TCP flow's container side
//! with a keep-alive from the flow's smoltcp socket (a segment one below
//! the next sequence number, as RFC 1122 describes): a container that
//! still has the connection answers with an ACK, one that reset it answers
//! with a RST, which ends the flow as the lost one would have. The probes
//! go out in small paced batches, so their answers fit the queue; another
//! overflow meanwhile starts the round again, once the burst has passed.
//!
//! This type is the pacing, pure and on a given clock: which flows are
//! due for a probe and when. Its memory is bounded by the flow table's
//! (one key per TCP flow, replaced, never added to, by a new round).

use std::time::Duration;

use crate::flows::FlowKey;
use crate::time::Instant;

/// Probes per batch: their answers take a quarter of the gateway's queue.
pub(super) const PROBE_BATCH: usize = crate::gateway::GATEWAY_QUEUE_FRAMES / 4;
/// Between batches, and from an overflow to the first batch (a burst that
/// is still arriving pushes the start back).
pub(super) const PROBE_PACE: Duration = Duration::from_millis(10);

/// The flows still to probe after an overflow. See the module
/// documentation.
#[derive(Debug, Default)]
pub(super) struct Recheck {
    /// Flows not probed yet in this round.
    due: Vec<FlowKey>,
    /// When the next batch goes out (`None`: no round under way).
    next_at: Option<Instant>,
    /// Rounds started and flows handed out for a probe, for `stats`.
    rounds: u64,
    probes: u64,
}

impl Recheck {
    /// The queue overflowed at `now`: every one of `flows` is probed again,
    /// starting one [`PROBE_PACE`] later (a round under way starts over).
    pub(super) fn start(&mut self, now: Instant, flows: impl IntoIterator<Item = FlowKey>) {
        self.due.clear();
        self.due.extend(flows);
        self.next_at = (!self.due.is_empty()).then_some(now + PROBE_PACE);
        self.rounds += 1;
    }

    /// The flows to probe now: at most [`PROBE_BATCH`], none before the
    /// round's next batch is due.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<FlowKey> {
        match self.next_at {
            Some(at) if now >= at => {}
            _ => return Vec::new(),
        }
        let batch = self
            .due
            .split_off(self.due.len().saturating_sub(PROBE_BATCH));
        self.next_at = (!self.due.is_empty()).then_some(now + PROBE_PACE);
        self.probes += batch.len() as u64;
        batch
    }

    /// When [`Recheck::take_due`] next has flows.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.next_at
    }

    /// Rounds started since the switch started.
    pub(super) fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Flows handed out for a probe since the switch started.
    pub(super) fn probes(&self) -> u64 {
        self.probes
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;

    fn flows(count: u16) -> Vec<FlowKey> {
        let remote = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 80);
        (0..count)
            .map(|port| {
                FlowKey::tcp(
                    SocketAddrV4::new(Ipv4Addr::new(172, 17, 0, 2), 1024 + port),
                    remote,
                )
            })
            .collect()
    }

    fn at(millis: u64) -> Instant {
        Instant::from_nanos(millis * 1_000_000)
    }

    #[test]
    fn nothing_is_due_before_an_overflow_or_with_no_flows() {
        let mut recheck = Recheck::default();
        assert_eq!(recheck.deadline(), None);
        assert!(recheck.take_due(at(1_000)).is_empty());
        recheck.start(at(1_000), Vec::new());
        assert_eq!(recheck.deadline(), None, "no flows, no round");
    }

    #[test]
    fn every_flow_is_probed_once_in_paced_batches() {
        let mut recheck = Recheck::default();
        let all = flows(1_000);
        recheck.start(at(0), all.iter().copied());
        assert!(recheck.take_due(at(5)).is_empty(), "not before the pace");
        let mut probed = HashSet::new();
        let mut now = at(0);
        while let Some(due) = recheck.deadline() {
            assert_eq!(due, now + PROBE_PACE, "one batch per pace");
            now = due;
            let batch = recheck.take_due(now);
            assert!(!batch.is_empty() && batch.len() <= PROBE_BATCH);
            for key in batch {
                assert!(probed.insert(key), "{key:?} probed twice");
            }
            assert!(recheck.take_due(now).is_empty(), "one batch at a time");
        }
        assert_eq!(probed, all.into_iter().collect());
        assert_eq!((recheck.rounds(), recheck.probes()), (1, 1_000));
    }

    #[test]
    fn another_overflow_starts_the_round_over_without_growing() {
        let mut recheck = Recheck::default();
        recheck.start(at(0), flows(500));
        assert_eq!(recheck.take_due(at(10)).len(), PROBE_BATCH);
        // The burst goes on: a new round of the flows there are now,
        // starting a pace after it.
        recheck.start(at(12), flows(300));
        assert_eq!(recheck.deadline(), Some(at(22)));
        assert!(recheck.take_due(at(20)).is_empty());
        let mut rest = 0;
        while let Some(due) = recheck.deadline() {
            rest += recheck.take_due(due).len();
        }
        assert_eq!(rest, 300, "the old round's keys are gone");
        assert_eq!(recheck.rounds(), 2);
    }
}

//! Which worker reads a busy port: next to the port it talks to.
//!
//! Under load (reading by port, see `affinity.rs`) each port's frames all
//! go to one lane, its solo lane, read by one worker. Two ports that talk
//! to each other (a TCP sender's port and its receiver's) are read best by
//! the same worker: when the worker writes the sender's segments to the
//! receiver's port, the kernel runs the receiver's stack inside that write,
//! and its acknowledgements land in the receiver's lane at once; if that
//! lane is the same worker's, it forwards them next, on the same thread and
//! CPU, where another worker would have to be woken for every few of them
//! and would take a CPU from the sender or the receiver. On few CPUs that
//! wake-up and that CPU are what a stream is short of (measured in
//! docs/PERFORMANCE.md, "One worker per talking pair").
//!
//! So when a port is steered to read by port, its solo lane is chosen by
//! two numbered rules ([`choose_solo`]), from the ports already read by
//! port that were read lately (the busy ones):
//!
//! 1. A busy port the port sends to, or one that sends to it (in that
//!    order): its solo lane, unless its worker already reads more busy
//!    ports than the least loaded worker plus one. The pair shares a
//!    worker; a third port talking to the pair goes elsewhere, so one
//!    worker never takes every conversation.
//! 2. Otherwise the worker that reads the fewest busy ports; among those,
//!    the port's own solo lane so far (no move without a reason), else the
//!    lowest.
//!
//! Who talks to whom is noted per batch: the port a batch's first unicast
//! frame went to ([`SendsTo`]), one relaxed load per batch, a store only
//! when it changes.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::port::PortId;

/// No port noted yet.
const NOBODY: u32 = u32::MAX;

/// The port a port's frames last went to (unicast), as its readers noted.
#[derive(Debug)]
pub(super) struct SendsTo(AtomicU32);

impl Default for SendsTo {
    fn default() -> Self {
        SendsTo(AtomicU32::new(NOBODY))
    }
}

impl SendsTo {
    /// A batch of the port's frames went (first) to `to`.
    pub(super) fn note(&self, to: PortId) {
        if self.0.load(Ordering::Relaxed) != to.0 {
            self.0.store(to.0, Ordering::Relaxed);
        }
    }

    pub(super) fn get(&self) -> Option<PortId> {
        match self.0.load(Ordering::Relaxed) {
            NOBODY => None,
            id => Some(PortId(id)),
        }
    }
}

/// A port read by port that was read lately, as [`choose_solo`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BusyPort {
    pub(super) id: PortId,
    pub(super) sends_to: Option<PortId>,
    /// Its solo lane (the worker that reads it).
    pub(super) solo: usize,
}

/// What [`choose_solo`] decides for one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SoloChoice {
    pub(super) solo: usize,
    pub(super) rule: SoloRule,
}

/// Which rule of the module docs decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SoloRule {
    /// Rule 1: next to this busy port it talks to.
    NextTo(PortId),
    /// Rule 2: the least loaded worker.
    LeastLoaded,
}

/// The solo lane for port `port`, which sends to `sends_to` and whose solo
/// lane so far is `current`, among `workers` workers, given the `busy`
/// ports (the port itself may be among them: it is left out).
pub(super) fn choose_solo(
    port: PortId,
    sends_to: Option<PortId>,
    current: usize,
    busy: &[BusyPort],
    workers: usize,
) -> SoloChoice {
    let workers = workers.max(1);
    let mut load = vec![0usize; workers];
    for other in busy.iter().filter(|other| other.id != port) {
        if let Some(count) = load.get_mut(other.solo) {
            *count += 1;
        }
    }
    let least = load.iter().copied().min().unwrap_or(0);
    // Rule 1.
    let sent_to = busy
        .iter()
        .find(|other| Some(other.id) == sends_to && other.id != port);
    let sends_here = busy
        .iter()
        .find(|other| other.sends_to == Some(port) && other.id != port);
    for partner in [sent_to, sends_here].into_iter().flatten() {
        if load.get(partner.solo).is_some_and(|&n| n <= least + 1) {
            return SoloChoice {
                solo: partner.solo,
                rule: SoloRule::NextTo(partner.id),
            };
        }
    }
    // Rule 2.
    let solo = if load.get(current) == Some(&least) {
        current
    } else {
        load.iter().position(|&n| n == least).unwrap_or(0)
    };
    SoloChoice {
        solo,
        rule: SoloRule::LeastLoaded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(id: u32, sends_to: Option<u32>, solo: usize) -> BusyPort {
        BusyPort {
            id: PortId(id),
            sends_to: sends_to.map(PortId),
            solo,
        }
    }

    #[test]
    fn a_port_joins_the_busy_port_it_sends_to() {
        let choice = choose_solo(PortId(2), Some(PortId(1)), 0, &[busy(1, None, 1)], 2);
        assert_eq!(
            choice,
            SoloChoice {
                solo: 1,
                rule: SoloRule::NextTo(PortId(1))
            }
        );
    }

    #[test]
    fn a_port_joins_the_busy_port_that_sends_to_it() {
        // The receiver of a stream: its own frames (acknowledgements) may
        // be read by the sender's worker and never noted.
        let choice = choose_solo(PortId(2), None, 0, &[busy(1, Some(2), 1)], 2);
        assert_eq!(choice.solo, 1);
        assert_eq!(choice.rule, SoloRule::NextTo(PortId(1)));
    }

    #[test]
    fn the_port_it_sends_to_comes_before_one_that_sends_to_it() {
        let busy = [busy(1, Some(3), 0), busy(2, None, 1)];
        let choice = choose_solo(PortId(3), Some(PortId(2)), 0, &busy, 2);
        assert_eq!(choice.rule, SoloRule::NextTo(PortId(2)));
    }

    #[test]
    fn two_pairs_get_a_worker_each_in_any_order() {
        // Ports 1↔2 and 3↔4, steered one by one as a mode change does,
        // each seeing the ones steered before it as busy.
        let talks = [(1, 2), (2, 1), (3, 4), (4, 3)];
        for order in [[0, 1, 2, 3], [0, 2, 1, 3], [3, 1, 0, 2], [2, 0, 3, 1]] {
            let mut steered: Vec<BusyPort> = Vec::new();
            for i in order {
                let (id, to) = talks[i];
                let choice = choose_solo(PortId(id), Some(PortId(to)), 0, &steered, 2);
                steered.push(busy(id, Some(to), choice.solo));
            }
            let worker_of = |id: u32| steered.iter().find(|p| p.id.0 == id).unwrap().solo;
            assert_eq!(worker_of(1), worker_of(2), "order {order:?}: {steered:?}");
            assert_eq!(worker_of(3), worker_of(4), "order {order:?}: {steered:?}");
            assert_ne!(worker_of(1), worker_of(3), "order {order:?}: {steered:?}");
        }
    }

    #[test]
    fn a_worker_never_takes_more_than_one_port_over_the_least_loaded() {
        // Ports 1 and 2 talk on worker 0; port 3 sends to 2 as well.
        let busy = [busy(1, Some(2), 0), busy(2, Some(1), 0)];
        let choice = choose_solo(PortId(3), Some(PortId(2)), 0, &busy, 2);
        assert_eq!(
            choice,
            SoloChoice {
                solo: 1,
                rule: SoloRule::LeastLoaded
            }
        );
    }

    #[test]
    fn a_port_without_a_busy_partner_keeps_its_lane_if_it_is_among_the_least_loaded() {
        assert_eq!(choose_solo(PortId(1), None, 1, &[], 2).solo, 1);
        let busy = [busy(5, None, 1)];
        assert_eq!(choose_solo(PortId(1), None, 1, &busy, 2).solo, 0);
        assert_eq!(choose_solo(PortId(1), None, 0, &busy, 3).solo, 0);
        assert_eq!(choose_solo(PortId(1), None, 1, &busy, 3).solo, 0);
        assert_eq!(
            choose_solo(PortId(1), None, 0, &busy, 2).rule,
            SoloRule::LeastLoaded
        );
    }

    #[test]
    fn the_port_itself_among_the_busy_is_left_out() {
        // Steered again while still noted busy: no partner in itself, its
        // own lane not counted as load.
        let busy = [busy(1, Some(1), 1)];
        assert_eq!(
            choose_solo(PortId(1), Some(PortId(1)), 1, &busy, 2),
            SoloChoice {
                solo: 1,
                rule: SoloRule::LeastLoaded
            }
        );
    }

    #[test]
    fn a_partner_on_a_worker_that_is_gone_is_not_followed() {
        let choice = choose_solo(PortId(2), Some(PortId(1)), 0, &[busy(1, None, 7)], 2);
        assert_eq!(choice.rule, SoloRule::LeastLoaded);
        assert!(choice.solo < 2);
    }

    #[test]
    fn sends_to_notes_the_last_port() {
        let sends = SendsTo::default();
        assert_eq!(sends.get(), None);
        sends.note(PortId(3));
        sends.note(PortId(4));
        assert_eq!(sends.get(), Some(PortId(4)));
    }
}

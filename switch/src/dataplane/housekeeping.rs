//! The housekeeping thread: every second it sweeps the MAC table, counts
//! the frames the kernel dropped and ages what ports were read; in between
//! it steers the ports that lag behind the read mode (the kernel's wait is
//! spent here, never in a worker), choosing each busy port's solo lane
//! (`pairing.rs`), and keeps the kernel shortcut in step with the MAC
//! table (`shortcut/`) when a worker learned something and after each
//! sweep.
//!
//! A quiet switch costs nothing: once a sweep finds no port read in the
//! last two seconds and no ledger behind, the thread rests ([`Rest`])
//! until the table's first address expires (a second before, while the
//! kernel's map holds hosts: see [`quiet_until`]), or without a timer if
//! it holds none; a worker that reads a frame, a port added or another
//! duty wakes it, and the sweeps go on a second after that. Nothing else a
//! sweep does is due while it rests: no kernel drop to count (the kernel
//! drops only frames a worker then reads), no ledger to settle, no read to
//! age. Whoever shows the table's ages reads the kernel's map first
//! (`Dataplane::refresh_from_kernel_shortcut`). As it goes to rest it has
//! the workers give back the pages frames filled in their receive batches
//! (a worker that carried 64 KiB segments holds 2 MiB there); the next
//! frames fault in what they fill again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::lanes::{LanesByPort, PortLanes};
use super::link_watch::{LinkStates, follow_interfaces};
use super::peer::WorkerCommand;
use super::{LightScheduling, ReadMode, Shared, pairing};
use crate::port::PortId;

/// How often the housekeeping thread sweeps expired MAC entries. Lookups
/// ignore expired entries anyway; the sweep only frees memory and counts.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The least time between two syncs of the kernel shortcut. A worker that
/// learned an address nudges the housekeeping thread, which syncs at once
/// (a new conversation's frames go through the workers until then), but a
/// flood of new addresses gets a sync per gap, not one per address: each
/// sync reads the whole table.
const SHORTCUT_SYNC_GAP: Duration = Duration::from_millis(50);

/// While a host waits to be quiet before its address goes to the kernel
/// (`shortcut/plan.rs`, rule 5), the shortcut is synced again this often:
/// each sync reads the whole table, and a host that never pauses would
/// otherwise keep the thread busy.
const WAITING_RECHECK: Duration = Duration::from_millis(200);

/// How many times, a `ports::ledger::SETTLE_QUIET` apart, the lanes whose
/// ledger is behind are looked at again after a sweep before the next
/// sweep: a lane that gets a frame every few milliseconds is found quiet
/// within a few tries; one busier than that waits for a pause.
const SETTLE_TRIES: u32 = 25;

/// Starts the housekeeping thread: every second it sweeps the MAC table
/// and counts kernel drops; in between it steers the ports workers found
/// lagging behind the read mode (`lagging`), so that no worker waits for
/// the kernel to take a port's new steering, and brings the kernel
/// shortcut in step with the table when a worker learned something
/// (`learned`, see [`Shared::nudge_shortcut`]). It rests while the switch
/// is quiet (see the module docs).
pub(super) fn spawn(
    shared: Arc<Shared>,
    lagging: Receiver<PortId>,
    learned: Receiver<()>,
) -> std::io::Result<(Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let handle = std::thread::Builder::new()
        .name("tapswitch-aging".into())
        .spawn(move || {
            let woken = shared.rest.woken.clone();
            // `None` while resting with no address to age.
            let mut next_sweep = Some(Instant::now() + SWEEP_INTERVAL);
            let mut pacer = SyncPacer::default();
            // Lanes behind: looked at again then, this many more times.
            let mut settle_again: Option<(Instant, u32)> = None;
            let mut resting = false;
            let mut links = LinkStates::default();
            loop {
                let due = [next_sweep, pacer.due(), settle_again.map(|(at, _)| at)]
                    .into_iter()
                    .flatten()
                    .min();
                let timer = due.map_or_else(crossbeam_channel::never, crossbeam_channel::at);
                crossbeam_channel::select! {
                    // Returns when the sender is dropped (Disconnected).
                    recv(stopped) -> _ => return,
                    recv(lagging) -> id => {
                        if let Ok(id) = id {
                            steer_lagging(&shared, id);
                        }
                    }
                    recv(learned) -> _ => pacer.nudged(Instant::now()),
                    recv(woken) -> _ => {}
                    recv(timer) -> _ => {}
                }
                let now = Instant::now();
                let woke = resting;
                if resting {
                    shared.rest.stop_resting();
                    resting = false;
                    if next_sweep.is_none_or(|at| now < at) {
                        // Woken before the rest's end: the sweeps go on.
                        next_sweep = Some(now + SWEEP_INTERVAL);
                    }
                }
                let mut swept = false;
                if next_sweep.is_some_and(|at| now >= at) {
                    next_sweep = Some(now + SWEEP_INTERVAL);
                    settle_again = sweep(&shared, &mut links, now)
                        .then_some((now + ports::ledger::SETTLE_QUIET, SETTLE_TRIES));
                    // Expired entries leave the kernel's map too.
                    pacer.nudged(now);
                    swept = true;
                } else if let Some((at, tries)) = settle_again
                    && now >= at
                {
                    settle_again = (sweep_lanes(&shared, now) && tries > 1)
                        .then_some((now + ports::ledger::SETTLE_QUIET, tries - 1));
                }
                if woke && !swept && follow_interfaces(&shared, &mut links) {
                    // An MTU changed while nothing flowed counts from the
                    // first frame on, a link that went down forgets its
                    // hosts before more frames go to them (a sweep reads
                    // them itself).
                    pacer.nudged(now);
                }
                if pacer.take_due(now) && shared.sync_shortcut() {
                    // A host waits to be quiet before the kernel takes its
                    // frames: look again a little later.
                    pacer.nudged(now + WAITING_RECHECK);
                }
                if swept
                    && settle_again.is_none()
                    && pacer.due().is_none()
                    && let Some(until) = shared.rest.try_rest(|| quiet_until(&shared))
                {
                    resting = true;
                    next_sweep = until;
                    // Nothing was read for two seconds: the workers' batches
                    // give back the pages frames filled.
                    for peer in shared.peers() {
                        peer.send(WorkerCommand::ReleasePages);
                    }
                }
            }
        })?;
    Ok((stop, handle))
}

/// If the switch is quiet, when the next sweep is due: `Some(None)` if
/// never (until woken), `Some(Some(at))` at the table's first expiry;
/// `None` while it is not quiet (no port read in the last two
/// housekeeping seconds). With hosts in the kernel's map the sweep comes
/// a second before that expiry: the kernel forwards their frames unseen,
/// and the table hears of them when a sweep reads the map (their last
/// frame as the kernel saw it), which must come before any could expire;
/// with that second not to spare, the thread does not rest.
fn quiet_until(shared: &Shared) -> Option<Option<Instant>> {
    let read = shared
        .lanes_by_port()
        .values()
        .any(|port| port.steering.read_lately());
    if read {
        return None;
    }
    let expiry = shared.engine.table().next_expiry();
    let (clock, now) = (shared.clock.now(), Instant::now());
    let expiry = expiry.map(|at| now + at.saturating_since(clock));
    rest_until(expiry, shared.shortcut_holds_hosts(), now)
}

/// The rule of [`quiet_until`] for a quiet switch at `now` whose table's
/// first address expires at `expiry`, the kernel's map holding hosts or
/// not. Pure, for the tests.
fn rest_until(
    expiry: Option<Instant>,
    map_holds_hosts: bool,
    now: Instant,
) -> Option<Option<Instant>> {
    let Some(expiry) = expiry else {
        return Some(None);
    };
    if !map_holds_hosts {
        return Some(Some(expiry));
    }
    let refresh = expiry.checked_sub(SWEEP_INTERVAL)?;
    (refresh >= now + SWEEP_INTERVAL).then_some(Some(refresh))
}

/// Whether the housekeeping thread rests (sleeps without its sweep a
/// second, see the module docs), and how whoever has work for it wakes it. Shared by the thread, the workers
/// (which call [`Rest::frames_read`] after each batch) and port additions.
#[derive(Debug)]
pub(super) struct Rest {
    resting: AtomicBool,
    wake: Sender<()>,
    woken: Receiver<()>,
}

impl Default for Rest {
    fn default() -> Self {
        // One wake-up waiting is enough.
        let (wake, woken) = crossbeam_channel::bounded(1);
        Rest {
            resting: AtomicBool::new(false),
            wake,
            woken,
        }
    }
}

impl Rest {
    /// The thread rests if `quiet` says so once it is marked resting;
    /// returns what `quiet` said. SeqCst, paired with
    /// [`Rest::frames_read`]: a reader either sees the mark (and wakes the
    /// thread) or noted its port read before `quiet` looks (see
    /// `steering.rs`, `note_read`).
    fn try_rest<T>(&self, quiet: impl FnOnce() -> Option<T>) -> Option<T> {
        self.resting.store(true, Ordering::SeqCst);
        let rest = quiet();
        if rest.is_none() {
            self.stop_resting();
        }
        rest
    }

    fn stop_resting(&self) {
        self.resting.store(false, Ordering::SeqCst);
    }

    #[cfg(test)]
    pub(super) fn is_resting(&self) -> bool {
        self.resting.load(Ordering::SeqCst)
    }

    /// A worker forwarded a batch (its port noted as read before): wakes
    /// the thread if it rests. One load while it does not.
    pub(super) fn frames_read(&self) {
        if self.resting.load(Ordering::SeqCst) {
            self.wake_now();
        }
    }

    /// Wakes the thread if it rests (a port was added: its ledger is
    /// settled at the next sweep).
    pub(super) fn wake_now(&self) {
        if self.resting.swap(false, Ordering::SeqCst) {
            let _ = self.wake.try_send(());
        }
    }
}

/// When the kernel shortcut is synced next: at once after a nudge, but
/// never twice within [`SHORTCUT_SYNC_GAP`]. Pure, for the tests.
#[derive(Debug, Default)]
struct SyncPacer {
    last: Option<Instant>,
    due: Option<Instant>,
}

impl SyncPacer {
    /// Something changed at `now`: a sync is due, as soon as the gap allows.
    fn nudged(&mut self, now: Instant) {
        let earliest = self
            .last
            .map_or(now, |last| (last + SHORTCUT_SYNC_GAP).max(now));
        self.due = Some(self.due.map_or(earliest, |due| due.min(earliest)));
    }

    /// When the next sync is due, if one is.
    fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Whether a sync is due at `now`; if so, it counts as done.
    fn take_due(&mut self, now: Instant) -> bool {
        if self.due.is_some_and(|due| now >= due) {
            self.due = None;
            self.last = Some(now);
            return true;
        }
        false
    }
}

/// The once-a-second work: the ports' MTUs and links are read again (see
/// `link_watch.rs`); the table hears of the hosts only the kernel heard,
/// then forgets the silent ones; kernel drops are counted and the lanes'
/// ledgers settled; what ports were read ages. Returns whether a lane's
/// ledger is still behind.
fn sweep(shared: &Shared, links: &mut LinkStates, now: Instant) -> bool {
    follow_interfaces(shared, links);
    shared.refresh_from_shortcut();
    let removed = shared.engine.table().expire(shared.clock.now());
    if removed > 0 {
        log::debug!("aged out {removed} MAC entries");
    }
    let behind = sweep_lanes(shared, now);
    for port in shared.lanes_by_port().values() {
        port.steering.age();
        port.talk.age();
    }
    behind
}

/// Steers port `id`, which a worker found lagging behind the read mode (or
/// which was read lately when the mode changed); a steering by port reads it
/// next to the port it talks to (see `pairing.rs`).
fn steer_lagging(shared: &Shared, id: PortId) {
    let lanes = shared.lanes_by_port();
    if let Some(port) = lanes.get(&id) {
        port.follow(&shared.mode, || {
            solo_next_to_partner(shared, &lanes, id, port)
        });
    }
}

/// The solo lane for port `id` when it is steered by port: the rules of
/// `pairing.rs`, over the ports read by port that were read lately.
fn solo_next_to_partner(
    shared: &Shared,
    lanes: &LanesByPort,
    id: PortId,
    port: &PortLanes,
) -> usize {
    let busy: Vec<pairing::BusyPort> = lanes
        .iter()
        .filter(|(_, other)| {
            other.steering.mode(&shared.mode) == ReadMode::ByPort && other.steering.read_lately()
        })
        .map(|(other_id, other)| other.talk.seen(*other_id, other.steering.solo()))
        .collect();
    let steered = port.talk.seen(id, port.steering.solo());
    let realtime = shared.light_scheduling() == LightScheduling::RealTime;
    let choice = pairing::choose_solo(steered, &busy, port.lanes.len(), realtime);
    log::debug!(
        "port {id:?}: read by port in lane {} ({:?})",
        choice.solo,
        choice.rule
    );
    choice.solo
}

/// Adds the frames each port's kernel queue dropped (the switch was too
/// slow) to its counters, so `tapswitch ports` shows every drop, and
/// settles the lanes' ledgers (`ports::ledger`). Only lanes read since the
/// last sweep are looked at, and lanes whose ledger was behind at the last
/// one (or that are new): a lane the kernel dropped frames of holds frames,
/// which its worker reads, and an idle lane in step costs nothing. A lane
/// that a worker is reading right now is looked at next time. Both happen
/// under one hold of the lane, drops first: a lane the kernel dropped
/// frames of held frames, so its drops are added before it is found empty
/// and settled. Returns whether a lane's ledger is still behind (look
/// again in `ports::ledger::SETTLE_QUIET`).
pub(super) fn sweep_lanes(shared: &Shared, now: Instant) -> bool {
    let mut behind_left = false;
    for lane in shared.lanes_by_port().values().flat_map(|port| &port.lanes) {
        let read = lane.take_read_since_sweep();
        let behind = lane.take_ledger_behind();
        if !read && !behind {
            continue;
        }
        let Ok(mut state) = lane.rx.try_lock() else {
            if read {
                lane.note_read();
            }
            if behind {
                lane.note_ledger_behind();
            }
            continue;
        };
        let Some(rx) = state.rx.as_mut() else {
            continue;
        };
        let drops = if read { rx.take_kernel_drops() } else { 0 };
        if drops > 0 {
            lane.handle
                .counters
                .count_drops(crate::stats::DropReason::RxOverflow, drops);
        }
        match rx.settle(now) {
            None => {}
            Some(0) => {
                lane.note_ledger_behind();
                behind_left = true;
            }
            Some(lost) => log::debug!(
                "port {}: {lost} frames lost on their way to a lane, settled",
                lane.handle.name
            ),
        }
    }
    behind_left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_rests_only_when_quiet_and_a_read_wakes_it_once() {
        let rest = Rest::default();
        assert_eq!(rest.try_rest(|| None::<()>), None);
        assert!(!rest.is_resting(), "not quiet: no rest");
        rest.frames_read();
        assert!(rest.woken.try_recv().is_err(), "nobody to wake");

        assert_eq!(rest.try_rest(|| Some(7)), Some(7));
        assert!(rest.is_resting());
        rest.frames_read();
        rest.frames_read();
        assert!(!rest.is_resting());
        assert!(rest.woken.try_recv().is_ok(), "woken");
        assert!(rest.woken.try_recv().is_err(), "once");

        rest.try_rest(|| Some(()));
        rest.wake_now();
        assert!(rest.woken.try_recv().is_ok(), "a port added wakes it too");
        rest.wake_now();
        assert!(rest.woken.try_recv().is_err());
    }

    #[test]
    fn a_quiet_switch_rests_until_the_first_expiry_or_a_second_before_it_to_read_the_map() {
        let now = Instant::now();
        let at = |s: u64| now + Duration::from_secs(s);
        assert_eq!(rest_until(None, false, now), Some(None), "nothing to age");
        assert_eq!(
            rest_until(None, true, now),
            Some(None),
            "only static entries in the map"
        );
        assert_eq!(rest_until(Some(at(300)), false, now), Some(Some(at(300))));
        assert_eq!(
            rest_until(Some(at(300)), true, now),
            Some(Some(at(299))),
            "the map is read a second before the table's first expiry"
        );
        assert_eq!(rest_until(Some(at(2)), true, now), Some(Some(at(1))));
        assert_eq!(
            rest_until(Some(at(1)), true, now),
            None,
            "no second to spare: the sweeps go on"
        );
    }

    #[test]
    fn the_thread_is_marked_resting_before_it_looks_whether_it_may() {
        // A reader that finds the mark wakes it; one that does not noted
        // its read before the look (see `Rest::try_rest`).
        let rest = Rest::default();
        let seen = rest.try_rest(|| Some(rest.is_resting()));
        assert_eq!(seen, Some(true));
    }

    #[test]
    fn a_nudge_syncs_at_once_and_a_flood_of_nudges_once_per_gap() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut pacer = SyncPacer::default();
        assert_eq!(pacer.due(), None, "nothing to do until nudged");
        assert!(!pacer.take_due(at(0)));

        pacer.nudged(at(0));
        assert_eq!(pacer.due(), Some(at(0)));
        assert!(pacer.take_due(at(0)), "the first nudge syncs at once");
        assert!(!pacer.take_due(at(1)), "once");

        // More nudges within the gap: one sync, when the gap has passed.
        pacer.nudged(at(10));
        pacer.nudged(at(20));
        assert_eq!(pacer.due(), Some(at(50)));
        assert!(!pacer.take_due(at(49)));
        assert!(pacer.take_due(at(50)));

        // A nudge long after: at once again.
        pacer.nudged(at(500));
        assert!(pacer.take_due(at(500)));
    }
}

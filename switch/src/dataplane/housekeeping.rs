//! The housekeeping thread: every second it sweeps the MAC table, counts
//! the frames the kernel dropped and ages what ports were read; in between
//! it steers the ports that lag behind the read mode (the kernel's wait is
//! spent here, never in a worker), choosing each busy port's solo lane
//! (`pairing.rs`), and keeps the kernel shortcut in step with the MAC
//! table (`shortcut/`).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::lanes::{LanesByPort, PortLanes};
use super::{ReadMode, Shared, pairing};
use crate::port::PortId;

/// How often the housekeeping thread sweeps expired MAC entries. Lookups
/// ignore expired entries anyway; the sweep only frees memory and counts.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How often the housekeeping thread brings the kernel shortcut in step
/// with the MAC table: a new conversation's frames go through the workers
/// for up to this long. Nothing is done unless the shortcut has ports and
/// the table changed (`MacTable::generation`).
const SHORTCUT_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Starts the housekeeping thread: every second it sweeps the MAC table
/// and counts kernel drops; in between it steers the ports workers found
/// lagging behind the read mode (`lagging`), so that no worker waits for
/// the kernel to take a port's new steering, and keeps the kernel shortcut
/// in step with the table.
pub(super) fn spawn(
    shared: Arc<Shared>,
    lagging: Receiver<PortId>,
) -> std::io::Result<(Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let handle = std::thread::Builder::new()
        .name("tapswitch-aging".into())
        .spawn(move || {
            let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
            loop {
                let due = if shared.has_shortcut() {
                    next_sweep.min(Instant::now() + SHORTCUT_SYNC_INTERVAL)
                } else {
                    next_sweep
                };
                let wait = due.saturating_duration_since(Instant::now());
                crossbeam_channel::select! {
                    // Returns when the sender is dropped (Disconnected).
                    recv(stopped) -> _ => return,
                    recv(lagging) -> id => {
                        if let Ok(id) = id {
                            steer_lagging(&shared, id);
                        }
                    }
                    default(wait) => {
                        if Instant::now() >= next_sweep {
                            next_sweep = Instant::now() + SWEEP_INTERVAL;
                            sweep(&shared);
                        }
                        shared.sync_shortcut();
                    }
                }
            }
        })?;
    Ok((stop, handle))
}

/// The once-a-second work: the table hears of the hosts only the kernel
/// heard, then forgets the silent ones; kernel drops are counted; what
/// ports were read ages.
fn sweep(shared: &Shared) {
    shared.refresh_from_shortcut();
    let removed = shared.engine.table().expire(shared.clock.now());
    if removed > 0 {
        log::debug!("aged out {removed} MAC entries");
    }
    count_kernel_drops(shared);
    for port in shared.lanes_by_port().values() {
        port.steering.age();
        port.talk.age();
    }
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
    let choice = pairing::choose_solo(steered, &busy, port.lanes.len());
    log::debug!(
        "port {id:?}: read by port in lane {} ({:?})",
        choice.solo,
        choice.rule
    );
    choice.solo
}

/// Adds the frames each port's kernel queue dropped (the switch was too
/// slow) to its counters, so `tapswitch ports` shows every drop. Only lanes
/// read since the last sweep are asked: a lane the kernel dropped frames
/// of holds frames, which its worker reads. A lane that a worker is reading
/// right now is counted next time.
pub(super) fn count_kernel_drops(shared: &Shared) {
    for lane in shared.lanes_by_port().values().flat_map(|port| &port.lanes) {
        if !lane.take_read_since_sweep() {
            continue;
        }
        let Ok(mut state) = lane.rx.try_lock() else {
            lane.note_read();
            continue;
        };
        if let Some(rx) = state.rx.as_mut() {
            let drops = rx.take_kernel_drops();
            if drops > 0 {
                lane.handle
                    .counters
                    .count_drops(crate::stats::DropReason::RxOverflow, drops);
            }
        }
    }
}

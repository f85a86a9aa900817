//! The kernel shortcut, kept in step with the MAC table.
//!
//! Between two veth ends the switch opened itself, a known unicast frame
//! is the same decision every time: out of the port its destination was
//! learned on. The kernel can make that decision as the frame arrives,
//! inside the sender's own system call as the Linux bridge does, instead
//! of copying it to a worker and back (`ports::shortcut` has the programs
//! and why they take the shape they do). What that saves is in
//! docs/PERFORMANCE.md.
//!
//! The workers still see every frame the kernel does not know what to do
//! with: the first frames of a conversation (so learning is theirs),
//! broadcast and multicast, anything to or from a TAP, the gateway, a
//! tunnel, and a host that moved. The housekeeping thread copies the
//! table's entries for the shortcut's ports into the kernel's map
//! ([`Shortcut::sync`], as soon as a worker that learned an address
//! nudges it, at most every 50 ms under a flood of new ones, and after
//! each sweep; a host goes in once quiet for [`QUIET`]; the rules in
//! `plan.rs`), refreshes the table for hosts only the kernel heard
//! ([`Shortcut::refresh`], before each sweep), and `tapswitch ports` adds
//! the kernel's counts to each port's ([`Shortcut::counters`]).
//!
//! While a trace runs or a port captures, the map is emptied first
//! ([`Shortcut::sync`] with `on` false, called before the trace's first
//! line is due): every frame then reaches a worker, and every decision is
//! traced. A frame already on its way in the kernel while the map changes
//! may go by the old entry; the Linux bridge, changing its table under
//! traffic, has the same window.

mod plan;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crossbeam_channel::{Receiver, Sender};
use ports::shortcut::{KernelPath, KernelShortcut, ShortcutCounters, ShortcutError, ShortcutLink};

use self::plan::{Change, PathPort, ShortcutPlan};
use crate::mac_table::MacTable;
use crate::port::PortId;
use crate::time::Instant;

/// The kernel's part of the forwarding, and what the switch knows of it.
pub(super) struct Shortcut {
    kernel: KernelShortcut,
    keeper: Mutex<Keeper>,
    /// Where a worker that learned an address nudges the housekeeping
    /// thread to bring the map in step (see `Shared::nudge_shortcut`); one
    /// nudge waits at most.
    nudge: Sender<()>,
}

struct Keeper {
    plan: ShortcutPlan,
    links: HashMap<PortId, ShortcutLink>,
    /// Whether the shortcut was on, and the table's generation, at the last
    /// sync that the kernel took whole: nothing to do while both hold.
    synced: Option<(bool, u64)>,
}

/// Room in the map beyond the MAC table's capacity, for static entries
/// (which the capacity does not count).
const STATIC_ROOM: usize = 1024;

/// How long nothing may have gone through the workers from a host or to
/// it before its address goes into the kernel's map (`plan.rs`, rule 5):
/// long enough that no such frame still waits for a worker (which
/// forwards a frame within microseconds while it runs), or the kernel's
/// would overtake it. The table notes both to within
/// `REFRESH_GRANULARITY` (10 ms), so this is at least 10 ms of quiet.
pub(super) const QUIET: std::time::Duration = std::time::Duration::from_millis(20);

impl Shortcut {
    /// The shortcut a dataplane of `config` starts with (`None` when asked
    /// not to, or when the kernel refused it, which the log says), and the
    /// channel its nudges arrive on for the housekeeping thread; without a
    /// shortcut nothing arrives.
    pub(super) fn start_for(config: &super::DataplaneConfig) -> (Option<Shortcut>, Receiver<()>) {
        if !config.kernel_shortcut {
            return (None, crossbeam_channel::never());
        }
        let (nudge, nudges) = crossbeam_channel::bounded(1);
        match Shortcut::start(config.table.capacity + STATIC_ROOM, nudge) {
            Ok(shortcut) => (Some(shortcut), nudges),
            Err(err) => {
                log::info!("kernel shortcut off: {err}");
                (None, crossbeam_channel::never())
            }
        }
    }

    /// Loads the programs and makes the map, sized for `capacity`
    /// addresses; nudges go to `nudge`. Fails without CAP_BPF and
    /// CAP_NET_ADMIN (rootless mode), or on a kernel without TCX (before
    /// Linux 6.6).
    fn start(capacity: usize, nudge: Sender<()>) -> Result<Shortcut, ShortcutError> {
        let capacity = u32::try_from(capacity).unwrap_or(u32::MAX);
        Ok(Shortcut {
            kernel: KernelShortcut::new(capacity)?,
            keeper: Mutex::new(Keeper {
                plan: ShortcutPlan::default(),
                links: HashMap::new(),
                synced: None,
            }),
            nudge,
        })
    }

    fn keeper(&self) -> std::sync::MutexGuard<'_, Keeper> {
        self.keeper.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attaches the shortcut to port `id` (`name` for the log). A port the
    /// kernel refuses stays the workers' alone, which is how every port
    /// worked before: worth a line, not an error.
    pub(super) fn attach(&self, id: PortId, name: &str, path: &KernelPath) {
        match self.kernel.attach(path) {
            Ok(link) => {
                let mut keeper = self.keeper();
                keeper.plan.attach(
                    id,
                    PathPort {
                        ifindex: path.ifindex(),
                        mtu: path.mtu(),
                    },
                );
                keeper.links.insert(id, link);
                keeper.synced = None;
            }
            Err(err) => log::warn!("port {name}: frames go through the workers only: {err}"),
        }
    }

    /// Port `id`'s interface has MTU `mtu` now: the next sync decides
    /// again which ports take part (only those with the largest MTU).
    pub(super) fn port_mtu(&self, id: PortId, mtu: usize) {
        let mtu = u32::try_from(mtu).unwrap_or(u32::MAX);
        let mut keeper = self.keeper();
        if keeper.plan.set_mtu(id, mtu) {
            keeper.synced = None;
        }
    }

    /// Detaches port `id`: its addresses leave the map before the program
    /// leaves its interface, so no frame is sent to it once this returns.
    pub(super) fn detach(&self, id: PortId) {
        let mut keeper = self.keeper();
        let removals = keeper.plan.detach(id);
        self.apply(&mut keeper, removals);
        keeper.links.remove(&id);
        keeper.synced = None;
    }

    /// Makes the kernel's map what the table says (empty while `on` is
    /// false). Cheap when neither the table nor `on` changed since the last
    /// sync that left nothing waiting. A host goes in only while quiet
    /// (see [`QUIET`]); true if some host waits for that (sync again
    /// shortly).
    pub(super) fn sync(&self, table: &MacTable, now: Instant, on: bool) -> bool {
        let mut keeper = self.keeper();
        if !keeper.plan.has_ports() {
            return false;
        }
        let generation = table.generation();
        if keeper.synced == Some((on, generation)) {
            return false;
        }
        let entries = if on {
            table.idle_entries(now)
        } else {
            Vec::new()
        };
        let synced = keeper.plan.sync(
            on,
            entries
                .iter()
                .map(|entry| (entry.mac, entry.port, entry.idle >= QUIET)),
        );
        let whole = self.apply(&mut keeper, synced.changes);
        keeper.synced = (whole && !synced.waiting).then_some((on, generation));
        synced.waiting
    }

    /// Refreshes the table's entries for the hosts the kernel heard since
    /// the last call, at the time it last heard each: their frames never
    /// reached a worker, so without this a busy host would age out. (The
    /// kernel's clock and the switch's are both CLOCK_MONOTONIC; `now` and
    /// the kernel's now are read together, so an age carries across.)
    pub(super) fn refresh(&self, table: &MacTable, now: Instant) {
        let mut keeper = self.keeper();
        if keeper.plan.installed() == 0 {
            return;
        }
        let kernel = match self.kernel.entries() {
            Ok(entries) => entries,
            Err(err) => {
                log::warn!("kernel shortcut: cannot read its map: {err}");
                return;
            }
        };
        let kernel: Vec<_> = kernel
            .into_iter()
            .map(|(mac, entry)| (mac, entry.ifindex, entry.last_seen_ns))
            .collect();
        if keeper.plan.forget_missing(&kernel) {
            // The filter deleted a source that seemed to move, and the
            // table did not move it (a static entry, a full table): put
            // it back at the next sync.
            keeper.synced = None;
        }
        let kernel_now = KernelShortcut::now_ns();
        for (mac, port, last_seen) in keeper.plan.heard(&kernel) {
            let age = kernel_now.saturating_sub(last_seen);
            let at = Instant::from_nanos(now.as_nanos().saturating_sub(age));
            table.refresh_on(mac, port, at);
        }
    }

    /// What the kernel forwarded for port `id` (`None`: not attached).
    pub(super) fn counters(&self, id: PortId) -> Option<ShortcutCounters> {
        let ifindex = self.keeper().plan.ifindex(id)?;
        match self.kernel.counters(ifindex) {
            Ok(counters) => Some(counters),
            Err(err) => {
                log::debug!("kernel shortcut: port {id}: cannot read its counters: {err}");
                None
            }
        }
    }

    /// How many ports the shortcut is attached to, and how many addresses
    /// its map holds.
    pub(super) fn size(&self) -> (usize, usize) {
        let keeper = self.keeper();
        (keeper.links.len(), keeper.plan.installed())
    }

    /// Hands `changes` to the kernel, recording those it took; false if
    /// any failed (they are tried again at the next sync).
    fn apply(&self, keeper: &mut Keeper, changes: Vec<Change>) -> bool {
        let mut whole = true;
        for change in changes {
            let result = match change {
                Change::Set(mac, ifindex) => self.kernel.set(mac, ifindex),
                Change::Remove(mac) => self.kernel.remove(mac),
            };
            match result {
                Ok(()) => keeper.plan.record(change),
                Err(err @ ShortcutError::Full { .. }) => {
                    // The additions come last, and none will fit: those
                    // hosts stay with the workers until room is made.
                    log::debug!("kernel shortcut: {err}");
                    return false;
                }
                Err(err) => {
                    whole = false;
                    log::debug!("kernel shortcut: {change:?} not taken: {err}");
                }
            }
        }
        whole
    }
}

impl super::Shared {
    /// Whether the kernel may forward now: not while a trace runs or a
    /// port captures, which must see every frame.
    fn shortcut_wanted(&self) -> bool {
        !self.live_trace.settings().on && !self.snapshot().iter().any(|port| port.is_capturing())
    }

    /// Brings the kernel's map in step with the table and with whether it
    /// is wanted now (see [`Shortcut::sync`]); true if a host waits to be
    /// quiet before it goes in.
    pub(super) fn sync_shortcut(&self) -> bool {
        match &self.shortcut {
            Some(shortcut) => {
                let wanted = self.shortcut_wanted();
                shortcut.sync(self.engine.table(), self.clock.now(), wanted)
            }
            None => false,
        }
    }

    /// Whether the kernel's map holds addresses: the kernel may be
    /// forwarding their frames, which the table hears of when the map is
    /// read.
    pub(super) fn shortcut_holds_hosts(&self) -> bool {
        self.shortcut
            .as_ref()
            .is_some_and(|shortcut| shortcut.size().1 > 0)
    }

    /// Before a sweep: the table hears of the hosts the kernel heard.
    pub(super) fn refresh_from_shortcut(&self) {
        if let Some(shortcut) = &self.shortcut {
            shortcut.refresh(self.engine.table(), self.clock.now());
        }
    }

    /// The table learned or moved an address (a worker calls this), or the
    /// shortcut got a port: the housekeeping thread brings the shortcut in
    /// step now, so the conversation's next frames can go by the kernel. A
    /// nudge already waiting is enough.
    pub(super) fn nudge_shortcut(&self) {
        if let Some(shortcut) = &self.shortcut {
            let _ = shortcut.nudge.try_send(());
        }
    }

    pub(super) fn shortcut_metrics(&self) -> super::ShortcutMetrics {
        let Some(shortcut) = &self.shortcut else {
            return super::ShortcutMetrics::default();
        };
        let (ports, addresses) = shortcut.size();
        let state = if self.shortcut_wanted() {
            super::ShortcutState::On
        } else {
            super::ShortcutState::Paused
        };
        super::ShortcutMetrics {
            state,
            ports,
            addresses,
        }
    }
}

impl super::Dataplane {
    /// Port `id`'s counters, the frames the kernel forwarded for it
    /// included (counted again apart in `rx_kernel_frames` and
    /// `tx_kernel_frames`); `None` if there is no such port.
    pub fn port_stats(&self, id: PortId) -> Option<crate::stats::PortStats> {
        let ports = self.shared.snapshot();
        let mut stats = ports.get(id)?.counters.snapshot();
        if let Some(kernel) = self.shared.shortcut.as_ref().and_then(|s| s.counters(id)) {
            stats.add_kernel(
                kernel.rx_frames,
                kernel.rx_bytes,
                kernel.tx_frames,
                kernel.tx_bytes,
            );
        }
        Some(stats)
    }

    /// Brings the kernel shortcut in step now rather than at the
    /// housekeeping thread's next look: after a port's capture was turned
    /// on, so that it sees every frame from then on, and after an
    /// operator's edit of the MAC table (`fdb add|del|flush`), so that the
    /// kernel forwards by the new table once the command returns.
    pub fn sync_kernel_shortcut(&self) {
        self.shared.sync_shortcut();
    }

    /// Before the table's ages are shown (`fdb`, the web page): the table
    /// hears of the hosts the kernel forwarded for since the last sweep,
    /// which may be minutes ago while the switch is quiet (see
    /// `housekeeping.rs`).
    pub fn refresh_from_kernel_shortcut(&self) {
        self.shared.refresh_from_shortcut();
    }
}

//! The full table: when a new address arrives and no slot is free, expired
//! entries are swept first (at most once a second, so a flood cannot make
//! every insert a full scan), then one entry is evicted **fairly**, as Open
//! vSwitch does: from the port that holds the most entries, that port's
//! least-recently-seen entry, approximated with a second-chance queue per
//! port (see the table's module docs).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;

use super::{EntryKind, FULL_TABLE_SWEEP_INTERVAL, Inner, MacTable};
use crate::events::SwitchEvent;
use crate::mac::MacAddr;
use crate::port::PortId;
use crate::time::Instant;

impl MacTable {
    /// Frees one slot in a full table: a sweep of expired entries if none ran
    /// in the last second, then fair eviction. False if nothing could go.
    pub(super) fn make_room(&self, inner: &mut Inner, now: Instant) -> bool {
        let swept_recently = inner
            .last_full_sweep
            .is_some_and(|at| now.saturating_since(at) < FULL_TABLE_SWEEP_INTERVAL);
        if !swept_recently {
            inner.last_full_sweep = Some(now);
            let gone = inner.sweep(self.config.max_age, now);
            self.count_expired(&gone, now);
            if inner.dynamic < self.config.capacity {
                return true;
            }
        }
        if let Some((key, port)) = inner.evict_fairly() {
            self.counters.evicted.fetch_add(1, Relaxed);
            self.events
                .publish_with(Some(now), || SwitchEvent::Evicted {
                    mac: MacAddr::from_u64(key),
                    port,
                });
            return true;
        }
        false
    }
}

impl Inner {
    /// Evicts the least-recently-seen entry of the port holding the most
    /// entries (ties go to the lowest port number, so replay is deterministic).
    /// Returns the evicted entry's key and port.
    pub(super) fn evict_fairly(&mut self) -> Option<(u64, PortId)> {
        let victim = self
            .ports
            .iter()
            .filter(|(_, slot)| slot.count > 0)
            .max_by_key(|(port, slot)| (slot.count, std::cmp::Reverse(**port)))
            .map(|(port, _)| *port)?;
        // Each element is looked at most twice (second chance), plus stale ones.
        loop {
            let slot = self
                .ports
                .get_mut(&victim)
                .expect("victim was chosen from this map");
            let Some((key, queued_at)) = slot.queue.pop_front() else {
                // The queue lost track of live entries (it should not): rebuild
                // it once, and give up if there is still nothing to take.
                self.rebuild_queue(victim);
                if self.ports[&victim].queue.is_empty() {
                    return None;
                }
                continue;
            };
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            if entry.port != victim || entry.kind != EntryKind::Dynamic {
                continue;
            }
            let seen = entry.last_seen.load(Relaxed);
            if seen > queued_at {
                slot.queue.push_back((key, seen));
                continue;
            }
            if let Some(entry) = self.entries.remove(&key) {
                self.forget_dynamic(&entry);
            }
            return Some((key, victim));
        }
    }

    /// Drops stale queue elements once they outnumber the live entries.
    pub(super) fn compact_queue(&mut self, port: PortId) {
        let Some(slot) = self.ports.get(&port) else {
            return;
        };
        if slot.queue.len() <= 2 * slot.count + 32 {
            return;
        }
        self.rebuild_queue(port);
    }

    /// Rebuilds `port`'s queue from the live entries, keeping queue order and
    /// the last element of any key queued twice.
    pub(super) fn rebuild_queue(&mut self, port: PortId) {
        let Some(slot) = self.ports.get_mut(&port) else {
            return;
        };
        let mut seen = HashSet::new();
        let mut kept: VecDeque<(u64, u64)> = VecDeque::with_capacity(slot.count);
        for &(key, at) in slot.queue.iter().rev() {
            let live = self
                .entries
                .get(&key)
                .is_some_and(|e| e.port == port && e.kind == EntryKind::Dynamic);
            if live && seen.insert(key) {
                kept.push_front((key, at));
            }
        }
        if kept.len() < slot.count {
            // Entries the queue lost track of (should not happen): append them.
            for (key, e) in &self.entries {
                if e.port == port && e.kind == EntryKind::Dynamic && !seen.contains(key) {
                    kept.push_back((*key, e.last_seen.load(Relaxed)));
                }
            }
        }
        slot.queue = kept;
    }
}

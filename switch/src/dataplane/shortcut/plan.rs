//! Which addresses the kernel shortcut holds: pure, no I/O, no clock.
//!
//! The kernel shortcut (`ports::shortcut`) forwards a frame inside the
//! kernel, never reaching a worker, when its destination and its source
//! are both in its map and the source is on the port the frame came in by.
//! The map is a copy of part of the MAC table, and this plan decides which
//! part, in this order:
//!
//! 1. Nothing while the shortcut is off: while a trace runs or a port
//!    captures (both must see every frame), and with `--no-kernel-shortcut`.
//! 2. Only entries on ports the shortcut is attached to: veth ends the
//!    switch opened in its own network namespace. A TAP, the gateway, a
//!    tunnel or a port opened in a container's namespace never is, so
//!    frames to and from them are the workers' as before.
//! 3. Only ports with the largest MTU among those. The switch counts a
//!    frame too big for its egress port (`too-big`); the kernel would drop
//!    it without a word. With one MTU for all, which is the usual case,
//!    nothing is left out.
//! 4. Dynamic and static entries alike: both forward.
//! 5. An address enters the map only while its host is quiet on the
//!    workers' path: no frame from it and none to it for a while (the
//!    caller's judgement, see `shortcut/mod.rs`). Otherwise frames of a
//!    conversation still queued for a worker would be overtaken by the
//!    kernel's, and the switch, like the Linux bridge, keeps a sender's
//!    frames in order: the frames to a silent receiver as well, once its
//!    sender is in the map. An address in the map stays there while it
//!    talks; one the table moved leaves the map at once, and comes back
//!    once quiet. A conversation that begins the moment both hosts are
//!    learned and never pauses stays with the workers.
//!
//! What the engine's rules would do with a frame the map covers is always
//! "forward to that one port" (rule 6), once the frame has passed rules 1
//! to 5: a runt cannot carry two known addresses, the map holds no group
//! address (the table never learns one), and a frame from an address the
//! map puts on another port is left to the workers, who learn the move.
//!
//! The plan remembers what the map holds, so a sync yields only changes,
//! and the last time the kernel reported hearing each address, so the MAC
//! table can be refreshed for hosts whose frames it never saw
//! ([`ShortcutPlan::heard`]).

use std::collections::{BTreeMap, HashMap};

use crate::mac::MacAddr;
use crate::port::PortId;

/// A port the shortcut is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PathPort {
    pub ifindex: u32,
    pub mtu: u32,
}

/// What a sync asks of the kernel, and whether addresses wait for their
/// hosts to be quiet (ask again shortly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Synced {
    pub changes: Vec<Change>,
    pub waiting: bool,
}

/// One change to the kernel's map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Frames to `mac` go out of interface `ifindex`.
    Set(MacAddr, u32),
    Remove(MacAddr),
}

/// What the kernel's map holds and should hold. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct ShortcutPlan {
    ports: BTreeMap<PortId, PathPort>,
    installed: HashMap<MacAddr, u32>,
    /// The kernel's last-seen time for each address, as last read.
    heard: HashMap<MacAddr, u64>,
}

impl ShortcutPlan {
    /// Takes port `id` at MTU `mtu` (its interface's changed); true if the
    /// port is attached and its MTU was another (sync again: which ports
    /// take part may have changed, rule 3).
    pub(crate) fn set_mtu(&mut self, id: PortId, mtu: u32) -> bool {
        match self.ports.get_mut(&id) {
            Some(port) if port.mtu != mtu => {
                port.mtu = mtu;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn attach(&mut self, id: PortId, port: PathPort) {
        self.ports.insert(id, port);
    }

    /// Forgets port `id`; returns the removals that must reach the kernel
    /// before the port is gone, so no frame is sent to it after.
    pub(crate) fn detach(&mut self, id: PortId) -> Vec<Change> {
        let Some(port) = self.ports.remove(&id) else {
            return Vec::new();
        };
        self.installed
            .iter()
            .filter(|(_, ifindex)| **ifindex == port.ifindex)
            .map(|(mac, _)| Change::Remove(*mac))
            .collect()
    }

    /// The interface of port `id`, if the shortcut is attached to it.
    pub(crate) fn ifindex(&self, id: PortId) -> Option<u32> {
        self.ports.get(&id).map(|port| port.ifindex)
    }

    pub(crate) fn has_ports(&self) -> bool {
        !self.ports.is_empty()
    }

    /// How many addresses the kernel's map holds.
    pub(crate) fn installed(&self) -> usize {
        self.installed.len()
    }

    /// The changes that bring the map toward what the table says
    /// (`table`: its live entries, address, port and whether its host is
    /// quiet, rule 5), or that empty it when `on` is false. Removals come
    /// first, so a map near its capacity has room for the additions.
    /// Nothing is recorded: [`ShortcutPlan::record`] each change the kernel
    /// took.
    pub(crate) fn sync(
        &self,
        on: bool,
        table: impl IntoIterator<Item = (MacAddr, PortId, bool)>,
    ) -> Synced {
        let wanted: HashMap<MacAddr, (u32, bool)> = if on {
            let eligible = self.eligible();
            table
                .into_iter()
                .filter_map(|(mac, port, quiet)| {
                    eligible.get(&port).map(|ifindex| (mac, (*ifindex, quiet)))
                })
                .collect()
        } else {
            HashMap::new()
        };
        // Gone from the table, not eligible any more, or moved: out now.
        let mut changes: Vec<Change> = self
            .installed
            .iter()
            .filter(|(mac, ifindex)| wanted.get(mac).map(|(at, _)| at) != Some(ifindex))
            .map(|(mac, _)| Change::Remove(*mac))
            .collect();
        changes.sort_by_key(|change| change_mac(*change));
        let mut waiting = false;
        let mut additions = Vec::new();
        for (mac, (ifindex, quiet)) in wanted {
            if self.installed.get(&mac) == Some(&ifindex) {
                continue;
            }
            if quiet {
                additions.push(Change::Set(mac, ifindex));
            } else {
                waiting = true;
            }
        }
        additions.sort_by_key(|change| change_mac(*change));
        changes.extend(additions);
        Synced { changes, waiting }
    }

    /// Notes that the kernel took `change`.
    pub(crate) fn record(&mut self, change: Change) {
        match change {
            Change::Set(mac, ifindex) => {
                self.installed.insert(mac, ifindex);
            }
            Change::Remove(mac) => {
                self.installed.remove(&mac);
                self.heard.remove(&mac);
            }
        }
    }

    /// Forgets the addresses the plan has in the kernel's map that are not
    /// in `kernel` (the map as read): the socket filter deletes a source
    /// that arrives on another port than its entry's, for the table to
    /// learn the move. When the table did not move it (a static entry, or
    /// a full table), nothing else would bring the entry back. True if
    /// any was missing.
    pub(crate) fn forget_missing(&mut self, kernel: &[(MacAddr, u32, u64)]) -> bool {
        let present: std::collections::HashSet<MacAddr> =
            kernel.iter().map(|(mac, _, _)| *mac).collect();
        let before = self.installed.len();
        self.installed.retain(|mac, _| present.contains(mac));
        self.heard.retain(|mac, _| present.contains(mac));
        self.installed.len() != before
    }

    /// The addresses the kernel heard since the last call, with the port
    /// they were heard on and when: `kernel` is the map as read, address,
    /// interface and the kernel's last-seen time (0: never). The table
    /// refreshes these (`MacTable::refresh_on`), which never learns or
    /// moves.
    pub(crate) fn heard(&mut self, kernel: &[(MacAddr, u32, u64)]) -> Vec<(MacAddr, PortId, u64)> {
        let by_ifindex: HashMap<u32, PortId> = self
            .ports
            .iter()
            .map(|(id, port)| (port.ifindex, *id))
            .collect();
        let mut heard = Vec::new();
        for &(mac, ifindex, last_seen) in kernel {
            if last_seen == 0 {
                continue;
            }
            let before = self.heard.insert(mac, last_seen);
            if before == Some(last_seen) {
                continue;
            }
            if let Some(port) = by_ifindex.get(&ifindex) {
                heard.push((mac, *port, last_seen));
            }
        }
        heard.sort();
        heard
    }

    /// The attached ports whose entries go to the kernel (rules 2 and 3),
    /// by port, with their interface.
    fn eligible(&self) -> HashMap<PortId, u32> {
        let Some(largest) = self.ports.values().map(|p| p.mtu).max() else {
            return HashMap::new();
        };
        self.ports
            .iter()
            .filter(|(_, port)| port.mtu == largest)
            .map(|(id, port)| (*id, port.ifindex))
            .collect()
    }
}

fn change_mac(change: Change) -> MacAddr {
    match change {
        Change::Set(mac, _) | Change::Remove(mac) => mac,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);
    const P3: PortId = PortId(3);

    fn plan_with(ports: &[(PortId, u32, u32)]) -> ShortcutPlan {
        let mut plan = ShortcutPlan::default();
        for &(id, ifindex, mtu) in ports {
            plan.attach(id, PathPort { ifindex, mtu });
        }
        plan
    }

    /// A sync of `table`, every host quiet: the changes.
    fn sync(
        plan: &ShortcutPlan,
        on: bool,
        table: impl IntoIterator<Item = (MacAddr, PortId)>,
    ) -> Vec<Change> {
        let synced = plan.sync(on, table.into_iter().map(|(mac, port)| (mac, port, true)));
        assert!(!synced.waiting, "every host is quiet");
        synced.changes
    }

    fn apply(plan: &mut ShortcutPlan, changes: &[Change]) {
        for change in changes {
            plan.record(*change);
        }
    }

    #[test]
    fn entries_on_attached_ports_go_to_the_kernel_with_their_interface() {
        let mut plan = plan_with(&[(P1, 11, 1500), (P2, 12, 1500)]);
        let table = [
            (mac(1), P1),
            (mac(2), P2),
            (mac(3), P3),
            (mac(9), PortId::GATEWAY),
        ];
        let changes = sync(&plan, true, table);
        assert_eq!(
            changes,
            [Change::Set(mac(1), 11), Change::Set(mac(2), 12)],
            "P3 (a TAP, say) and the gateway stay with the workers"
        );
        apply(&mut plan, &changes);
        assert!(
            sync(&plan, true, table).is_empty(),
            "nothing changed, nothing to do"
        );
        assert_eq!(plan.installed(), 2);
    }

    #[test]
    fn a_move_an_expiry_and_a_new_host_are_each_one_change() {
        let mut plan = plan_with(&[(P1, 11, 1500), (P2, 12, 1500)]);
        let first = sync(&plan, true, [(mac(1), P1), (mac(2), P2)]);
        apply(&mut plan, &first);
        let changes = sync(&plan, true, [(mac(1), P2), (mac(3), P1)]);
        assert_eq!(
            changes,
            [
                Change::Remove(mac(1)),
                Change::Remove(mac(2)),
                Change::Set(mac(1), 12),
                Change::Set(mac(3), 11)
            ],
            "removals first, so a full map has room; a moved host leaves, then comes back"
        );
    }

    #[test]
    fn off_empties_the_map_and_on_fills_it_again() {
        let mut plan = plan_with(&[(P1, 11, 1500), (P2, 12, 1500)]);
        let table = [(mac(1), P1), (mac(2), P2)];
        let on = sync(&plan, true, table);
        apply(&mut plan, &on);
        let off = sync(&plan, false, table);
        assert_eq!(off, [Change::Remove(mac(1)), Change::Remove(mac(2))]);
        apply(&mut plan, &off);
        assert_eq!(plan.installed(), 0);
        assert_eq!(sync(&plan, true, table), on);
    }

    #[test]
    fn only_ports_with_the_largest_mtu_take_part() {
        let mut plan = plan_with(&[(P1, 11, 9000), (P2, 12, 1500), (P3, 13, 9000)]);
        let changes = sync(&plan, true, [(mac(1), P1), (mac(2), P2), (mac(3), P3)]);
        assert_eq!(changes, [Change::Set(mac(1), 11), Change::Set(mac(3), 13)]);
        apply(&mut plan, &changes);
        let removals = plan.detach(P1);
        assert_eq!(removals, [Change::Remove(mac(1))]);
        apply(&mut plan, &removals);
        plan.detach(P3);
        assert_eq!(
            sync(&plan, true, [(mac(2), P2)]),
            [Change::Remove(mac(3)), Change::Set(mac(2), 12)],
            "with the big ports gone, P2 has the largest MTU"
        );
    }

    #[test]
    fn a_port_whose_mtu_changes_joins_or_leaves_as_its_mtu_says() {
        let mut plan = plan_with(&[(P1, 11, 1500), (P2, 12, 1500)]);
        let changes = sync(&plan, true, [(mac(1), P1), (mac(2), P2)]);
        apply(&mut plan, &changes);
        assert!(plan.set_mtu(P2, 9000), "a new MTU is a change");
        assert!(!plan.set_mtu(P2, 9000), "the same MTU again is not");
        assert!(!plan.set_mtu(P3, 9000), "nor is a port not attached");
        let changes = sync(&plan, true, [(mac(1), P1), (mac(2), P2)]);
        assert_eq!(
            changes,
            [Change::Remove(mac(1))],
            "P2 alone has the largest MTU now"
        );
        apply(&mut plan, &changes);
        assert!(plan.set_mtu(P1, 9000));
        assert_eq!(
            sync(&plan, true, [(mac(1), P1), (mac(2), P2)]),
            [Change::Set(mac(1), 11)]
        );
    }

    #[test]
    fn detaching_removes_only_that_ports_entries() {
        let mut plan = plan_with(&[(P1, 11, 1500), (P2, 12, 1500)]);
        let changes = sync(&plan, true, [(mac(1), P1), (mac(2), P2), (mac(3), P2)]);
        apply(&mut plan, &changes);
        let mut removals = plan.detach(P2);
        removals.sort_by_key(|c| change_mac(*c));
        assert_eq!(removals, [Change::Remove(mac(2)), Change::Remove(mac(3))]);
        assert!(plan.detach(P2).is_empty(), "a second detach is a no-op");
        assert!(plan.has_ports());
        plan.detach(P1);
        assert!(!plan.has_ports());
    }

    #[test]
    fn a_change_the_kernel_refused_is_tried_again() {
        let plan = plan_with(&[(P1, 11, 1500)]);
        let changes = sync(&plan, true, [(mac(1), P1)]);
        assert_eq!(changes, [Change::Set(mac(1), 11)]);
        // Not recorded: the map was full, say.
        assert_eq!(sync(&plan, true, [(mac(1), P1)]), changes);
    }

    #[test]
    fn a_host_enters_the_map_only_while_quiet_and_leaves_at_once_when_it_moves() {
        let mut plan = plan_with(&[(P1, 11, 1500), (P2, 12, 1500)]);
        // mac(1) talks (its frames may still be queued for a worker),
        // mac(2) is quiet: only mac(2) goes in, and the caller asks again.
        let synced = plan.sync(true, [(mac(1), P1, false), (mac(2), P2, true)]);
        assert_eq!(synced.changes, [Change::Set(mac(2), 12)]);
        assert!(synced.waiting);
        apply(&mut plan, &synced.changes);
        // mac(2) talks now: it stays. mac(1) went quiet: in.
        let synced = plan.sync(true, [(mac(1), P1, true), (mac(2), P2, false)]);
        assert_eq!(synced.changes, [Change::Set(mac(1), 11)]);
        assert!(!synced.waiting);
        apply(&mut plan, &synced.changes);
        // mac(1) moved to P2 and talks: out now, back once quiet.
        let synced = plan.sync(true, [(mac(1), P2, false), (mac(2), P2, false)]);
        assert_eq!(synced.changes, [Change::Remove(mac(1))]);
        assert!(synced.waiting);
        apply(&mut plan, &synced.changes);
        let synced = plan.sync(true, [(mac(1), P2, true), (mac(2), P2, false)]);
        assert_eq!(synced.changes, [Change::Set(mac(1), 12)]);
    }

    #[test]
    fn an_entry_the_kernel_deleted_is_put_back_at_the_next_sync() {
        let mut plan = plan_with(&[(P1, 11, 1500), (P2, 12, 1500)]);
        let table = [(mac(1), P1), (mac(2), P2)];
        let changes = sync(&plan, true, table);
        apply(&mut plan, &changes);
        assert!(!plan.forget_missing(&[(mac(1), 11, 0), (mac(2), 12, 0)]));
        // A frame from mac(2) arrived on P1: the filter deleted its entry,
        // and the table (mac(2) static on P2, say) did not move it.
        assert!(plan.forget_missing(&[(mac(1), 11, 0)]));
        assert_eq!(sync(&plan, true, table), [Change::Set(mac(2), 12)]);
    }

    #[test]
    fn heard_reports_each_new_kernel_time_once_with_its_port() {
        let mut plan = plan_with(&[(P1, 11, 1500), (P2, 12, 1500)]);
        let changes = sync(&plan, true, [(mac(1), P1), (mac(2), P2)]);
        apply(&mut plan, &changes);
        assert!(
            plan.heard(&[(mac(1), 11, 0), (mac(2), 12, 0)]).is_empty(),
            "never heard"
        );
        assert_eq!(
            plan.heard(&[(mac(1), 11, 500), (mac(2), 12, 0)]),
            [(mac(1), P1, 500)]
        );
        assert!(
            plan.heard(&[(mac(1), 11, 500)]).is_empty(),
            "same time: nothing new"
        );
        assert_eq!(
            plan.heard(&[(mac(1), 11, 900), (mac(2), 12, 700), (mac(7), 99, 5)]),
            [(mac(1), P1, 900), (mac(2), P2, 700)],
            "an interface the plan does not know is skipped"
        );
        plan.record(Change::Remove(mac(1)));
        assert_eq!(
            plan.heard(&[(mac(1), 11, 900)]),
            [(mac(1), P1, 900)],
            "a removed address starts afresh"
        );
    }
}

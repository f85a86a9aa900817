//! How long each host has been idle on the switch's path: neither heard
//! (a frame from it, which learning notes) nor sent to (a frame to it,
//! which a lookup notes, at most every [`REFRESH_GRANULARITY`] as for
//! last-seen times). The kernel shortcut (`dataplane/shortcut`) hands a
//! host to the kernel only once that is long enough that no frame from it
//! or to it still waits for a worker, which the kernel's would overtake.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::{Entry, EntryKind, MacTable, REFRESH_GRANULARITY, is_expired};
use crate::mac::MacAddr;
use crate::port::PortId;
use crate::time::Instant;

/// A live entry of [`MacTable::idle_entries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleEntry {
    pub mac: MacAddr,
    pub port: PortId,
    /// Since the host was last heard or a frame was last sent to it,
    /// whichever came later (to within [`REFRESH_GRANULARITY`]). A static
    /// or local entry is never heard: since a frame was sent to it.
    /// `Duration::MAX` for neither.
    pub idle: Duration,
}

impl Entry {
    /// Notes that a frame goes to this host at `now`. The first one is
    /// noted whenever it comes: the live clock counts from the switch's
    /// start, so "never" (0) is not 10 ms before every early frame.
    pub(super) fn note_sent_to(&self, now: Instant) {
        let now = now.as_nanos();
        let last = self.last_sent_to.load(Relaxed);
        if last == 0 || now.saturating_sub(last) >= REFRESH_GRANULARITY.as_nanos() as u64 {
            self.last_sent_to.fetch_max(now, Relaxed);
        }
    }
}

impl MacTable {
    /// The live entries at `now`, each with how long its host has been
    /// idle on the switch's path (see [`IdleEntry`]), in no order.
    pub fn idle_entries(&self, now: Instant) -> Vec<IdleEntry> {
        let since = |nanos: u64| match nanos {
            0 => Duration::MAX,
            at => now.saturating_since(Instant::from_nanos(at)),
        };
        let inner = self.read();
        inner
            .entries
            .iter()
            .filter(|(_, e)| !is_expired(self.config.max_age, e, now))
            .map(|(key, e)| {
                let sent_to = since(e.last_sent_to.load(Relaxed));
                let idle = match e.kind {
                    EntryKind::Dynamic => sent_to.min(since(e.last_seen.load(Relaxed))),
                    EntryKind::Static | EntryKind::Local => sent_to,
                };
                IdleEntry {
                    mac: MacAddr::from_u64(*key),
                    port: e.port,
                    idle,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac_table::TableConfig;

    /// A host on port 1, and one pinned to port 2.
    const HOST: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);
    const PINNED: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 2]);

    /// `mac`'s idle time in `t` at `now` (see `idle_entries`).
    fn idle(t: &MacTable, mac: MacAddr, now: Instant) -> Duration {
        let entries = t.idle_entries(now);
        let entry = entries.iter().find(|e| e.mac == mac).expect("a live entry");
        entry.idle
    }

    #[test]
    fn a_host_is_idle_since_it_was_last_heard_or_sent_to() {
        let t = MacTable::new(TableConfig::default());
        let ms = Instant::from_millis;
        t.learn(HOST, PortId(1), ms(1_000));
        assert_eq!(idle(&t, HOST, ms(1_030)), Duration::from_millis(30));
        // A frame to it (a lookup) makes it busy again, as one from it does.
        assert_eq!(t.lookup(HOST, ms(1_040)), Some(PortId(1)));
        assert_eq!(idle(&t, HOST, ms(1_050)), Duration::from_millis(10));
        // Noted at most every REFRESH_GRANULARITY, as last-seen times are.
        t.lookup(HOST, ms(1_045));
        assert_eq!(idle(&t, HOST, ms(1_050)), Duration::from_millis(10));
        t.lookup(HOST, ms(1_050));
        assert_eq!(idle(&t, HOST, ms(1_060)), Duration::from_millis(10));
        t.learn(HOST, PortId(1), ms(1_070));
        assert_eq!(idle(&t, HOST, ms(1_075)), Duration::from_millis(5));
        // Expired entries are not listed.
        assert!(t.idle_entries(Instant::from_secs(400)).is_empty());
    }

    #[test]
    fn a_frame_sent_in_the_switchs_first_milliseconds_counts() {
        // The live clock starts at 0 with the switch.
        let t = MacTable::new(TableConfig::default());
        let ms = Instant::from_millis;
        t.insert_static(PINNED, PortId(2), EntryKind::Static);
        t.lookup(PINNED, ms(3));
        assert_eq!(idle(&t, PINNED, ms(8)), Duration::from_millis(5));
    }

    #[test]
    fn a_static_entry_is_idle_since_a_frame_was_sent_to_it() {
        let t = MacTable::new(TableConfig::default());
        t.insert_static(PINNED, PortId(2), EntryKind::Static);
        assert_eq!(idle(&t, PINNED, Instant::from_secs(5)), Duration::MAX);
        // A frame from it does not count: a static entry is never heard.
        t.learn(PINNED, PortId(2), Instant::from_secs(5));
        assert_eq!(idle(&t, PINNED, Instant::from_secs(6)), Duration::MAX);
        t.lookup(PINNED, Instant::from_secs(6));
        assert_eq!(
            idle(&t, PINNED, Instant::from_secs(7)),
            Duration::from_secs(1)
        );
    }
}

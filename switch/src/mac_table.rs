//! The MAC table (the Linux bridge calls it the forwarding database, "fdb").
//!
//! It maps a host's MAC address to the port the switch last heard it on, so a
//! unicast frame to that host goes out of one port instead of all of them.
//!
//! **Learning.** Every valid frame teaches the table its source address on its
//! ingress port. Group (multicast and broadcast) source addresses are never
//! learned: no host owns them. The engine checks that before it calls
//! [`MacTable::learn`].
//!
//! **Aging.** An entry not refreshed by traffic from its host for `max_age`
//! (300 s by default, as in Linux and Open vSwitch; `None` = never) is gone.
//! [`MacTable::lookup`] treats an expired entry as absent itself, so when the
//! sweep ([`MacTable::expire`]) runs decides memory use, never correctness.
//! Linux spells it "ageing"; identifiers here say "aging".
//!
//! **Moves.** A dynamic address heard on a new port moves there at once (a VM
//! migrated, a cable replugged). Static and local entries never move and never
//! age. A local entry is the switch's own address (the gateway's); a frame
//! from a port that claims it as its source is a spoof, and the engine drops
//! it. Static entries are an operator's (`tapswitch fdb add`); adding,
//! removing and flushing them is in `mac_table/static_entries.rs`, with the
//! reasons.
//!
//! **Capacity and the full-table policy.** At most `capacity` dynamic entries
//! (8192 by default; static and local entries do not count, as with Linux's
//! `fdb_max_learned`). When a new address arrives and the table is full, the
//! table first sweeps expired entries (at most once a second, so a flood
//! cannot make every insert a full scan), then evicts **fairly**, as Open
//! vSwitch does: from the port that holds the most entries, that port's
//! least-recently-seen entry. A host flooding random source MACs therefore
//! churns through its own entries and cannot push the other ports' hosts out.
//! "Least recently seen" is approximated with a second-chance queue per port
//! (an entry refreshed since it was queued goes to the back once more), which
//! costs O(1) per eviction instead of a scan. Only when nothing is evictable
//! (`capacity` 0) is a new address refused. Known traffic flows either way.
//! The sweep-then-evict step is in `mac_table/eviction.rs`.
//!
//! **Concurrency.** Worker threads share one table. Reads (lookups, and
//! refreshes of known entries, which store the last-seen time atomically and
//! only when it moved by [`REFRESH_GRANULARITY`]) take a read lock that a
//! worker holds for a whole batch of frames through a [`TableView`]. Only a
//! new address, a move, a sweep or a flush takes the write lock. So the
//! common frame costs two hash lookups and no shared write.
//!
//! **Idle hosts.** A lookup also notes when a frame was last sent to the
//! host, the same way (atomically, when it moved by
//! [`REFRESH_GRANULARITY`]). [`MacTable::idle_entries`] tells how long each
//! host has been idle on the switch's path, neither heard nor sent to: the
//! kernel shortcut (`dataplane/shortcut`) hands a host to the kernel only
//! once that is long enough that no frame from it or to it still waits for
//! a worker.
//!
//! **Counters**, named after Open vSwitch's `fdb/stats-show`: learned,
//! refreshed, moved, expired, evicted, refused.
//!
//! **Events.** Where a count changes on the write path (learned, moved,
//! expired, evicted, flushed) and where an operator adds or removes a static
//! entry, the table also publishes a
//! [`SwitchEvent`](crate::events::SwitchEvent) to its [`EventBus`], if
//! anyone listens (`tapswitch monitor`); a refresh publishes nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crate::events::{EventBus, SwitchEvent};
use crate::mac::MacAddr;
use crate::port::PortId;
use crate::time::Instant;

mod eviction;
mod idle;
mod static_entries;
pub use idle::IdleEntry;
pub use static_entries::{FdbEditError, FlushScope, PreviousEntry};

/// Linux (`BR_DEFAULT_AGEING_TIME`) and Open vSwitch both default to 300 s.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// Open vSwitch's newer default `mac-table-size`; 8192 entries of 24 bytes
/// (plus the queue) stay well under a megabyte.
pub const DEFAULT_CAPACITY: usize = 8192;

/// A known entry's last-seen time is stored again only when it moved by this
/// much, so a busy host's entry is not written by every frame (its cache line
/// stays shared between the workers). Aging is therefore up to 10 ms early.
pub const REFRESH_GRANULARITY: Duration = Duration::from_millis(10);

/// When the table is full it sweeps expired entries before evicting, but no
/// more often than this: under a MAC flood every insert would otherwise scan.
const FULL_TABLE_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How the table ages and how big it may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableConfig {
    /// Idle time after which a dynamic entry expires; `None` never expires.
    pub max_age: Option<Duration>,
    /// The most dynamic entries the table holds.
    pub capacity: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            max_age: Some(DEFAULT_MAX_AGE),
            capacity: DEFAULT_CAPACITY,
        }
    }
}

impl TableConfig {
    /// `--ageing-time SECS` as Linux takes it: 0 means never expire.
    pub fn with_ageing_secs(mut self, secs: u64) -> Self {
        self.max_age = (secs != 0).then(|| Duration::from_secs(secs));
        self
    }
}

/// What kind of entry an address has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Learned from traffic; ages and moves.
    Dynamic,
    /// Configured; never ages, never moves.
    Static,
    /// The switch's own address (the gateway's); never ages, never moves.
    Local,
}

/// What [`MacTable::learn`] did with a source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// A new entry.
    New,
    /// Already known on this port; its timer restarts.
    Refreshed,
    /// Known on another port; it now points at the ingress port.
    Moved { from: PortId },
    /// A static entry for this address points at another port; not moved.
    StaticElsewhere { port: PortId },
    /// The address is the switch's own (a local entry) on another port.
    SpoofedLocal,
    /// The table is full and nothing could be evicted.
    Refused,
}

/// One row of a table dump (`tapswitch fdb`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub port: PortId,
    pub kind: EntryKind,
    /// Time since the host was last heard (zero for static and local entries).
    pub age: Duration,
}

/// Table event counters since the switch started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableStats {
    /// New dynamic entries.
    pub learned: u64,
    /// Times a known entry's last-seen time was advanced.
    pub refreshed: u64,
    /// Entries that moved to another port.
    pub moved: u64,
    /// Entries removed because their host went quiet for `max_age`.
    pub expired: u64,
    /// Entries removed to make room in a full table.
    pub evicted: u64,
    /// New addresses not learned because the table was full.
    pub refused: u64,
    /// Dynamic entries in the table now.
    pub entries: u64,
    /// The capacity (`--max-macs`).
    pub capacity: u64,
}

/// The shared MAC table. See the module documentation.
#[derive(Debug)]
pub struct MacTable {
    config: TableConfig,
    inner: RwLock<Inner>,
    counters: Counters,
    events: EventBus,
    /// Bumped whenever the write lock is taken: a reader that keeps a copy
    /// of the table (the kernel shortcut's plan) rebuilds it only when this
    /// moved. It may move without a change; it never stays put across one.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct Counters {
    learned: AtomicU64,
    refreshed: AtomicU64,
    moved: AtomicU64,
    expired: AtomicU64,
    evicted: AtomicU64,
    refused: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    port: PortId,
    kind: EntryKind,
    /// Nanoseconds; advanced under the read lock (see REFRESH_GRANULARITY).
    last_seen: AtomicU64,
    /// When a lookup last found this entry for a frame to the host, in
    /// nanoseconds (0: never); advanced like `last_seen`.
    last_sent_to: AtomicU64,
}

impl Entry {
    fn new(port: PortId, kind: EntryKind, last_seen_nanos: u64) -> Self {
        Entry {
            port,
            kind,
            last_seen: AtomicU64::new(last_seen_nanos),
            last_sent_to: AtomicU64::new(0),
        }
    }
}

#[derive(Debug, Default)]
struct PortEntries {
    /// Dynamic entries on this port.
    count: usize,
    /// Eviction order: (key, last-seen time when queued). May hold stale
    /// elements for entries that expired or moved; they are skipped.
    queue: VecDeque<(u64, u64)>,
}

#[derive(Debug)]
struct Inner {
    entries: HashMap<u64, Entry, foldhash::fast::RandomState>,
    ports: BTreeMap<PortId, PortEntries>,
    dynamic: usize,
    last_full_sweep: Option<Instant>,
}

impl MacTable {
    pub fn new(config: TableConfig) -> Self {
        Self::with_events(config, EventBus::default())
    }

    /// A table that publishes what it learns and forgets to `events`.
    pub fn with_events(config: TableConfig, events: EventBus) -> Self {
        MacTable {
            config,
            inner: RwLock::new(Inner {
                entries: HashMap::with_capacity_and_hasher(
                    config.capacity.min(DEFAULT_CAPACITY) + 16,
                    foldhash::fast::RandomState::default(),
                ),
                ports: BTreeMap::new(),
                dynamic: 0,
                last_full_sweep: None,
            }),
            counters: Counters::default(),
            events,
            generation: AtomicU64::new(0),
        }
    }

    /// Where the table publishes its events.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// A read view for a batch of frames: learning known addresses and
    /// lookups go through it without taking the write lock.
    pub fn view(&self) -> TableView<'_> {
        TableView {
            table: self,
            guard: Some(self.read()),
        }
    }

    /// Learns `mac` on `port` at `now`. The engine never passes a group address.
    pub fn learn(&self, mac: MacAddr, port: PortId, now: Instant) -> Learn {
        self.view().learn(mac, port, now)
    }

    /// The port `mac` lives on, unless unknown or expired at `now`; for a
    /// frame to it, which the entry notes (see "Idle hosts" in the module
    /// docs).
    pub fn lookup(&self, mac: MacAddr, now: Instant) -> Option<PortId> {
        self.view().lookup(mac, now)
    }

    /// Adds or replaces a static or local entry (for example the gateway's MAC).
    pub fn insert_static(&self, mac: MacAddr, port: PortId, kind: EntryKind) {
        let mut inner = self.write();
        if let Some(old) = inner.entries.remove(&mac.to_u64()) {
            inner.forget_dynamic(&old);
        }
        inner
            .entries
            .insert(mac.to_u64(), Entry::new(port, kind, 0));
    }

    /// Removes every expired dynamic entry; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut inner = self.write();
        let gone = inner.sweep(self.config.max_age, now);
        self.count_expired(&gone, now);
        gone.len()
    }

    /// When the first dynamic entry expires unless its host is heard
    /// first; `None` with no dynamic entry, or no aging. A scan of the
    /// table, for a housekeeping thread deciding how long it may rest.
    pub fn next_expiry(&self) -> Option<Instant> {
        let max_age = self.config.max_age?;
        let inner = self.read();
        let oldest = inner
            .entries
            .values()
            .filter(|e| e.kind == EntryKind::Dynamic)
            .map(|e| e.last_seen.load(Relaxed))
            .min()?;
        Some(Instant::from_nanos(oldest) + max_age)
    }

    /// Forgets every entry on `port` (the port was removed). Returns how many.
    pub fn flush_port(&self, port: PortId) -> usize {
        let mut inner = self.write();
        let before = inner.entries.len();
        inner.entries.retain(|_, e| e.port != port);
        if let Some(gone) = inner.ports.remove(&port) {
            inner.dynamic -= gone.count;
        }
        let entries = before - inner.entries.len();
        if entries > 0 {
            self.events
                .publish_with(None, || SwitchEvent::Flushed { port, entries });
        }
        entries
    }

    /// Moves whenever an entry may have been added, moved or removed (see
    /// the field); refreshes leave it alone.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// Refreshes `mac`'s dynamic entry at `now` if it is on `port` and has
    /// not expired, as a frame from it would; anything else is left alone
    /// (never learned, never moved). For hosts whose frames the kernel
    /// forwarded itself (`dataplane/shortcut`): by the time the switch
    /// hears of them the host may have moved, and a late report must not
    /// move it back. True if the entry was there to refresh.
    pub fn refresh_on(&self, mac: MacAddr, port: PortId, now: Instant) -> bool {
        let inner = self.read();
        let Some(entry) = inner.entries.get(&mac.to_u64()) else {
            return false;
        };
        entry.kind == EntryKind::Dynamic
            && entry.port == port
            && self.learn_known(entry, port, now) == Some(Learn::Refreshed)
    }

    /// The live entries at `now`, sorted by port and then address.
    pub fn entries(&self, now: Instant) -> Vec<FdbEntry> {
        let inner = self.read();
        let mut rows: Vec<FdbEntry> = inner
            .entries
            .iter()
            .filter(|(_, e)| !is_expired(self.config.max_age, e, now))
            .map(|(key, e)| FdbEntry {
                mac: MacAddr::from_u64(*key),
                port: e.port,
                kind: e.kind,
                age: match e.kind {
                    EntryKind::Dynamic => {
                        now.saturating_since(Instant::from_nanos(e.last_seen.load(Relaxed)))
                    }
                    EntryKind::Static | EntryKind::Local => Duration::ZERO,
                },
            })
            .collect();
        rows.sort_by_key(|row| (row.port, row.mac));
        rows
    }

    pub fn stats(&self) -> TableStats {
        let c = &self.counters;
        TableStats {
            learned: c.learned.load(Relaxed),
            refreshed: c.refreshed.load(Relaxed),
            moved: c.moved.load(Relaxed),
            expired: c.expired.load(Relaxed),
            evicted: c.evicted.load(Relaxed),
            refused: c.refused.load(Relaxed),
            entries: self.read().dynamic as u64,
            capacity: self.config.capacity as u64,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A worker that panicked left no half-done update behind (every write
        // completes before the guard drops), so a poisoned lock is still sound.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        let guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Relaxed);
        guard
    }

    /// Learning that needs the write lock: a new address, a move, or an
    /// expired entry coming back. Re-checks everything, since another worker
    /// may have got there between the read and the write lock.
    fn learn_slow(&self, mac: MacAddr, port: PortId, now: Instant) -> Learn {
        let key = mac.to_u64();
        let mut inner = self.write();
        if let Some(entry) = inner.entries.get(&key) {
            if let Some(outcome) = self.learn_known(entry, port, now) {
                return outcome;
            }
            if is_expired(self.config.max_age, entry, now) {
                let old = inner
                    .entries
                    .remove(&key)
                    .expect("entry was just found under this lock");
                inner.forget_dynamic(&old);
                self.count_expired(&[(key, old.port)], now);
            } else {
                let from = entry.port;
                inner.move_entry(key, from, port, now);
                self.counters.moved.fetch_add(1, Relaxed);
                self.events.publish_with(Some(now), || SwitchEvent::Moved {
                    mac,
                    from,
                    to: port,
                });
                return Learn::Moved { from };
            }
        }
        if inner.dynamic >= self.config.capacity && !self.make_room(&mut inner, now) {
            self.counters.refused.fetch_add(1, Relaxed);
            return Learn::Refused;
        }
        inner.insert_dynamic(key, port, now);
        self.counters.learned.fetch_add(1, Relaxed);
        self.events
            .publish_with(Some(now), || SwitchEvent::Learned { mac, port });
        Learn::New
    }

    /// The outcomes that need no write: `None` means "go and write".
    fn learn_known(&self, entry: &Entry, port: PortId, now: Instant) -> Option<Learn> {
        match entry.kind {
            EntryKind::Local if entry.port == port => Some(Learn::Refreshed),
            EntryKind::Local => Some(Learn::SpoofedLocal),
            EntryKind::Static if entry.port == port => Some(Learn::Refreshed),
            EntryKind::Static => Some(Learn::StaticElsewhere { port: entry.port }),
            EntryKind::Dynamic
                if entry.port != port || is_expired(self.config.max_age, entry, now) =>
            {
                None
            }
            EntryKind::Dynamic => {
                let now = now.as_nanos();
                let last = entry.last_seen.load(Relaxed);
                if now.saturating_sub(last) >= REFRESH_GRANULARITY.as_nanos() as u64 {
                    // fetch_max: two workers may refresh at once; keep the later time.
                    entry.last_seen.fetch_max(now, Relaxed);
                    self.counters.refreshed.fetch_add(1, Relaxed);
                }
                Some(Learn::Refreshed)
            }
        }
    }

    /// Counts entries that aged out (`(key, port)` each) and tells listeners.
    fn count_expired(&self, gone: &[(u64, PortId)], now: Instant) {
        self.counters.expired.fetch_add(gone.len() as u64, Relaxed);
        if self.events.is_listening() {
            for &(key, port) in gone {
                let mac = MacAddr::from_u64(key);
                self.events
                    .publish(Some(now), SwitchEvent::Expired { mac, port });
            }
        }
    }
}

fn is_expired(max_age: Option<Duration>, entry: &Entry, now: Instant) -> bool {
    let Some(max_age) = max_age else { return false };
    entry.kind == EntryKind::Dynamic
        && now.saturating_since(Instant::from_nanos(entry.last_seen.load(Relaxed))) >= max_age
}

impl Inner {
    fn insert_dynamic(&mut self, key: u64, port: PortId, now: Instant) {
        let entry = Entry::new(port, EntryKind::Dynamic, now.as_nanos());
        self.entries.insert(key, entry);
        self.dynamic += 1;
        let slot = self.ports.entry(port).or_default();
        slot.count += 1;
        slot.queue.push_back((key, now.as_nanos()));
    }

    fn move_entry(&mut self, key: u64, from: PortId, to: PortId, now: Instant) {
        let entry = self
            .entries
            .get_mut(&key)
            .expect("caller found the entry under this lock");
        entry.port = to;
        *entry.last_seen.get_mut() = now.as_nanos();
        if let Some(slot) = self.ports.get_mut(&from) {
            slot.count -= 1;
        }
        let slot = self.ports.entry(to).or_default();
        slot.count += 1;
        slot.queue.push_back((key, now.as_nanos()));
        self.compact_queue(from);
    }

    /// Keeps the per-port counts right after `entry` left the map.
    fn forget_dynamic(&mut self, entry: &Entry) {
        if entry.kind != EntryKind::Dynamic {
            return;
        }
        self.dynamic -= 1;
        if let Some(slot) = self.ports.get_mut(&entry.port) {
            slot.count -= 1;
        }
    }

    /// Removes the expired dynamic entries; returns each one's key and port.
    fn sweep(&mut self, max_age: Option<Duration>, now: Instant) -> Vec<(u64, PortId)> {
        if max_age.is_none() {
            return Vec::new();
        }
        let mut gone: Vec<(u64, PortId)> = Vec::new();
        self.entries.retain(|key, e| {
            let expired = is_expired(max_age, e, now);
            if expired {
                gone.push((*key, e.port));
            }
            !expired
        });
        for (_, port) in &gone {
            self.dynamic -= 1;
            if let Some(slot) = self.ports.get_mut(port) {
                slot.count -= 1;
            }
        }
        let ports: Vec<PortId> = self.ports.keys().copied().collect();
        for port in ports {
            self.compact_queue(port);
        }
        gone
    }
}

/// A read-locked view of the table for a batch of frames. Learning a new
/// address releases the read lock, takes the write lock, and reads again.
/// Hold a view for one batch only: while it lives, writers wait.
#[derive(Debug)]
pub struct TableView<'a> {
    table: &'a MacTable,
    /// Always `Some` except for the moment `learn` swaps locks.
    guard: Option<RwLockReadGuard<'a, Inner>>,
}

impl TableView<'_> {
    pub fn learn(&mut self, mac: MacAddr, port: PortId, now: Instant) -> Learn {
        let inner = self
            .guard
            .as_ref()
            .expect("a view always holds its read lock between calls");
        if let Some(entry) = inner.entries.get(&mac.to_u64())
            && let Some(outcome) = self.table.learn_known(entry, port, now)
        {
            return outcome;
        }
        self.guard = None;
        let outcome = self.table.learn_slow(mac, port, now);
        self.guard = Some(self.table.read());
        outcome
    }

    /// As [`MacTable::lookup`].
    pub fn lookup(&self, mac: MacAddr, now: Instant) -> Option<PortId> {
        let inner = self
            .guard
            .as_ref()
            .expect("a view always holds its read lock between calls");
        let entry = inner.entries.get(&mac.to_u64())?;
        if is_expired(self.table.config.max_age, entry, now) {
            return None;
        }
        entry.note_sent_to(now);
        Some(entry.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
    }

    fn table(max_age_secs: u64, capacity: usize) -> MacTable {
        MacTable::new(
            TableConfig::default()
                .with_ageing_secs(max_age_secs)
                .with_capacity(capacity),
        )
    }

    impl TableConfig {
        fn with_capacity(mut self, capacity: usize) -> Self {
            self.capacity = capacity;
            self
        }
    }

    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);
    const P3: PortId = PortId(3);

    #[test]
    fn learns_then_looks_up() {
        let t = table(300, 16);
        assert_eq!(t.lookup(mac(1), Instant::ZERO), None);
        assert_eq!(t.learn(mac(1), P1, Instant::ZERO), Learn::New);
        assert_eq!(t.lookup(mac(1), Instant::from_secs(1)), Some(P1));
        assert_eq!(t.stats().learned, 1);
        assert_eq!(t.stats().entries, 1);
    }

    #[test]
    fn next_expiry_follows_the_least_recently_heard_dynamic_entry() {
        let t = table(300, 16);
        assert_eq!(t.next_expiry(), None, "an empty table");
        t.insert_static(mac(9), P1, EntryKind::Static);
        assert_eq!(t.next_expiry(), None, "static entries never expire");
        t.learn(mac(1), P1, Instant::from_secs(10));
        t.learn(mac(2), P2, Instant::from_secs(20));
        assert_eq!(t.next_expiry(), Some(Instant::from_secs(310)));
        t.learn(mac(1), P1, Instant::from_secs(40));
        assert_eq!(
            t.next_expiry(),
            Some(Instant::from_secs(320)),
            "mac 1 heard again"
        );
        t.expire(Instant::from_secs(320));
        assert_eq!(t.next_expiry(), Some(Instant::from_secs(340)));
        t.expire(Instant::from_secs(340));
        assert_eq!(t.next_expiry(), None);
        assert_eq!(table(0, 16).next_expiry(), None, "no aging");
    }

    #[test]
    fn entry_expires_after_max_age_without_a_sweep() {
        let t = table(2, 16);
        t.learn(mac(1), P1, Instant::from_secs(10));
        assert_eq!(
            t.lookup(mac(1), Instant::from_nanos(11_999_999_999)),
            Some(P1)
        );
        assert_eq!(
            t.lookup(mac(1), Instant::from_secs(12)),
            None,
            "expired == absent before any sweep"
        );
        assert!(t.entries(Instant::from_secs(12)).is_empty());
        assert_eq!(t.expire(Instant::from_secs(12)), 1);
        assert_eq!(t.stats().expired, 1);
        assert_eq!(t.stats().entries, 0);
    }

    #[test]
    fn refresh_restarts_the_timer() {
        let t = table(2, 16);
        t.learn(mac(1), P1, Instant::ZERO);
        assert_eq!(t.learn(mac(1), P1, Instant::from_secs(1)), Learn::Refreshed);
        assert_eq!(t.lookup(mac(1), Instant::from_millis(2_500)), Some(P1));
        assert_eq!(t.lookup(mac(1), Instant::from_secs(3)), None);
        assert_eq!(t.stats().refreshed, 1);
    }

    #[test]
    fn a_refresh_from_elsewhere_never_learns_or_moves() {
        let t = table(2, 16);
        assert!(
            !t.refresh_on(mac(1), P1, Instant::ZERO),
            "unknown: not learned"
        );
        assert_eq!(t.lookup(mac(1), Instant::ZERO), None);
        t.learn(mac(1), P1, Instant::ZERO);
        assert!(t.refresh_on(mac(1), P1, Instant::from_secs(1)));
        assert_eq!(t.lookup(mac(1), Instant::from_millis(2_500)), Some(P1));
        assert!(
            !t.refresh_on(mac(1), P2, Instant::from_secs(2)),
            "not moved"
        );
        assert_eq!(t.lookup(mac(1), Instant::from_secs(2)), Some(P1));
        assert_eq!(
            t.lookup(mac(1), Instant::from_secs(3)),
            None,
            "P2's report did not refresh"
        );
        t.insert_static(mac(2), P1, EntryKind::Static);
        assert!(
            !t.refresh_on(mac(2), P1, Instant::from_secs(3)),
            "static entries do not age"
        );
    }

    #[test]
    fn the_generation_moves_with_every_change_and_not_with_refreshes() {
        let t = table(2, 16);
        let start = t.generation();
        t.learn(mac(1), P1, Instant::ZERO);
        let learned = t.generation();
        assert_ne!(learned, start);
        t.learn(mac(1), P1, Instant::from_secs(1));
        assert!(t.refresh_on(mac(1), P1, Instant::from_millis(1_500)));
        assert_eq!(t.generation(), learned, "refreshes take no write lock");
        t.learn(mac(1), P2, Instant::from_secs(2));
        let moved = t.generation();
        assert_ne!(moved, learned);
        t.expire(Instant::from_secs(10));
        assert_ne!(t.generation(), moved);
    }

    #[test]
    fn refreshes_within_the_granularity_do_not_write() {
        let t = table(300, 16);
        t.learn(mac(1), P1, Instant::ZERO);
        t.learn(mac(1), P1, Instant::from_nanos(1_000_000));
        assert_eq!(t.stats().refreshed, 0);
        t.learn(mac(1), P1, Instant::from_nanos(20_000_000));
        assert_eq!(t.stats().refreshed, 1);
    }

    #[test]
    fn zero_ageing_time_never_expires() {
        let t = table(0, 16);
        t.learn(mac(1), P1, Instant::ZERO);
        assert_eq!(t.lookup(mac(1), Instant::from_secs(1_000_000)), Some(P1));
        assert_eq!(t.expire(Instant::from_secs(1_000_000)), 0);
    }

    #[test]
    fn an_address_heard_on_another_port_moves() {
        let t = table(300, 16);
        t.learn(mac(1), P1, Instant::ZERO);
        assert_eq!(
            t.learn(mac(1), P2, Instant::from_secs(1)),
            Learn::Moved { from: P1 }
        );
        assert_eq!(t.lookup(mac(1), Instant::from_secs(1)), Some(P2));
        let stats = t.stats();
        assert_eq!((stats.moved, stats.entries), (1, 1));
    }

    #[test]
    fn expired_entry_heard_again_is_learned_anew() {
        let t = table(2, 16);
        t.learn(mac(1), P1, Instant::ZERO);
        assert_eq!(t.learn(mac(1), P2, Instant::from_secs(5)), Learn::New);
        let stats = t.stats();
        assert_eq!(
            (stats.learned, stats.expired, stats.moved, stats.entries),
            (2, 1, 0, 1)
        );
    }

    #[test]
    fn static_and_local_entries_neither_move_nor_age() {
        let t = table(2, 16);
        t.insert_static(mac(9), PortId::GATEWAY, EntryKind::Local);
        t.insert_static(mac(8), P1, EntryKind::Static);
        assert_eq!(t.learn(mac(9), P1, Instant::ZERO), Learn::SpoofedLocal);
        assert_eq!(
            t.learn(mac(8), P2, Instant::ZERO),
            Learn::StaticElsewhere { port: P1 }
        );
        assert_eq!(
            t.lookup(mac(9), Instant::from_secs(1000)),
            Some(PortId::GATEWAY)
        );
        assert_eq!(t.lookup(mac(8), Instant::from_secs(1000)), Some(P1));
        assert_eq!(t.expire(Instant::from_secs(1000)), 0);
        assert_eq!(
            t.stats().entries,
            0,
            "static entries do not count against capacity"
        );
    }

    #[test]
    fn full_table_evicts_from_the_port_with_most_entries() {
        let t = table(300, 4);
        t.learn(mac(1), P1, Instant::ZERO);
        t.learn(mac(2), P2, Instant::ZERO);
        t.learn(mac(3), P2, Instant::from_secs(1));
        t.learn(mac(4), P2, Instant::from_secs(2));
        // P2 holds three of four: a fifth address evicts P2's oldest (mac 2).
        assert_eq!(t.learn(mac(5), P3, Instant::from_secs(3)), Learn::New);
        let now = Instant::from_secs(3);
        assert_eq!(t.lookup(mac(2), now), None);
        assert_eq!(
            t.lookup(mac(1), now),
            Some(P1),
            "the lone host on P1 is kept"
        );
        assert_eq!(t.lookup(mac(3), now), Some(P2));
        assert_eq!(t.lookup(mac(5), now), Some(P3));
        assert_eq!(t.stats().evicted, 1);
        assert_eq!(t.stats().entries, 4);
    }

    #[test]
    fn eviction_gives_a_recently_refreshed_entry_a_second_chance() {
        let t = table(300, 3);
        t.learn(mac(1), P1, Instant::ZERO);
        t.learn(mac(2), P1, Instant::from_secs(1));
        t.learn(mac(3), P1, Instant::from_secs(2));
        t.learn(mac(1), P1, Instant::from_secs(3)); // mac 1 is busy again
        t.learn(mac(4), P2, Instant::from_secs(4));
        let now = Instant::from_secs(4);
        assert_eq!(t.lookup(mac(1), now), Some(P1));
        assert_eq!(t.lookup(mac(2), now), None, "the least recently seen goes");
    }

    #[test]
    fn a_flooding_port_churns_its_own_entries() {
        let t = table(300, 64);
        for host in 0..8 {
            t.learn(mac(host), PortId(10 + host), Instant::ZERO);
        }
        for n in 0..10_000 {
            t.learn(
                mac(1_000 + n),
                P1,
                Instant::from_nanos(u64::from(n) * 1_000),
            );
        }
        let now = Instant::from_secs(1);
        for host in 0..8 {
            assert_eq!(
                t.lookup(mac(host), now),
                Some(PortId(10 + host)),
                "host {host} forgotten"
            );
        }
        assert_eq!(t.stats().entries, 64);
        assert_eq!(t.stats().evicted, 10_000 - 56);
    }

    #[test]
    fn a_full_table_sweeps_expired_entries_before_evicting() {
        let t = table(2, 2);
        t.learn(mac(1), P1, Instant::ZERO);
        t.learn(mac(2), P2, Instant::from_secs(3));
        assert_eq!(t.learn(mac(3), P3, Instant::from_secs(3)), Learn::New);
        let stats = t.stats();
        assert_eq!((stats.expired, stats.evicted), (1, 0));
        assert_eq!(t.lookup(mac(2), Instant::from_secs(3)), Some(P2));
    }

    #[test]
    fn zero_capacity_refuses_and_counts() {
        let t = table(300, 0);
        assert_eq!(t.learn(mac(1), P1, Instant::ZERO), Learn::Refused);
        assert_eq!(t.lookup(mac(1), Instant::ZERO), None);
        assert_eq!(t.stats().refused, 1);
    }

    #[test]
    fn flush_port_forgets_only_that_port() {
        let t = table(300, 16);
        t.learn(mac(1), P1, Instant::ZERO);
        t.learn(mac(2), P2, Instant::ZERO);
        t.learn(mac(3), P2, Instant::ZERO);
        assert_eq!(t.flush_port(P2), 2);
        assert_eq!(t.lookup(mac(1), Instant::ZERO), Some(P1));
        assert_eq!(t.stats().entries, 1);
        assert_eq!(t.learn(mac(2), P1, Instant::ZERO), Learn::New);
    }

    #[test]
    fn entries_are_sorted_and_show_age() {
        let t = table(300, 16);
        t.learn(mac(2), P2, Instant::ZERO);
        t.learn(mac(1), P2, Instant::from_secs(1));
        t.learn(mac(3), P1, Instant::from_secs(2));
        let rows = t.entries(Instant::from_secs(4));
        let order: Vec<(PortId, MacAddr)> = rows.iter().map(|r| (r.port, r.mac)).collect();
        assert_eq!(order, vec![(P1, mac(3)), (P2, mac(1)), (P2, mac(2))]);
        assert_eq!(rows[0].age, Duration::from_secs(2));
    }

    #[test]
    fn many_moves_keep_queues_bounded_and_counts_right() {
        let t = table(300, 8);
        for round in 0..1_000u64 {
            let port = if round % 2 == 0 { P1 } else { P2 };
            t.learn(mac(1), port, Instant::from_secs(round));
        }
        let inner = t.read();
        assert!(
            inner
                .ports
                .values()
                .all(|slot| slot.queue.len() <= 2 * slot.count + 33)
        );
        assert_eq!(
            inner.ports.values().map(|slot| slot.count).sum::<usize>(),
            1
        );
        assert_eq!(inner.dynamic, 1);
    }

    #[test]
    fn two_threads_learning_and_looking_up_agree() {
        let t = std::sync::Arc::new(table(300, 100_000));
        let workers: Vec<_> = (0..2u32)
            .map(|w| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut view = t.view();
                    for n in 0..20_000u32 {
                        let m = mac(w * 1_000_000 + n);
                        view.learn(m, PortId(w + 1), Instant::from_nanos(u64::from(n)));
                        assert_eq!(
                            view.lookup(m, Instant::from_nanos(u64::from(n))),
                            Some(PortId(w + 1))
                        );
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(t.stats().entries, 40_000);
        assert_eq!(t.stats().learned, 40_000);
    }
}

//! Static entries and flushing: the table edits an operator makes
//! (`tapswitch fdb add|del|flush`, `replay --static`), as opposed to the
//! learning that traffic does.
//!
//! **Static entries.** `fdb add MAC PORT` pins an address to a port: the
//! entry never ages, and traffic never moves it. A frame from that address
//! on another port is still forwarded, but the entry stays where it was
//! pinned ([`Learn::StaticElsewhere`]). This is Linux's `bridge fdb add MAC
//! dev PORT master static sticky`. A plain Linux `static` entry does move
//! (`br_fdb_update` changes its port unless it is sticky; observed on Linux
//! 6.18): we keep ours in place, because an entry an operator pinned should
//! not be taken over by any host that spoofs its address.
//!
//! **What may be pinned.** Not a group address: frames to one flood before
//! any table lookup (engine rule 6), and no host sends from one, so the
//! entry could never be used (Linux accepts and ignores it; refusing says
//! so at once). Not the zero address (Linux refuses it too). Not the
//! switch's own address (a local entry). Adding an address that was learned
//! replaces the learned entry; adding one that is already static re-pins it.
//!
//! **Capacity.** Static entries do not count against `capacity`, like
//! local ones (Linux's `fdb_max_learned` counts learned entries only): the
//! limit exists against MAC floods from traffic, and an operator's own
//! entries are not that. They are never evicted.
//!
//! **Flushing** ([`MacTable::flush`]) removes learned entries, of one port
//! or all, and keeps static ones unless asked; local entries always stay.
//! That is what the Linux bridge's own flushes do (`ip link set DEV type
//! bridge_slave fdb_flush`, `/sys/class/net/BR/brif/DEV/flush`). Note that
//! `bridge fdb flush dev DEV` of iproute2 6.x removes every entry of the
//! port, static and permanent ones included, unless given `dynamic`.
//! Removing a port (`flush_port`) still forgets all its entries.
//!
//! **Events.** Each edit is published on the table's bus, like learning is:
//! [`SwitchEvent::StaticAdded`] for `add_static`, [`SwitchEvent::StaticRemoved`]
//! or [`SwitchEvent::Deleted`] for the static or learned entry `remove`
//! took, and one [`SwitchEvent::Flushed`] per
//! port a flush took entries from, so `tapswitch monitor` shows an
//! operator's edits between the traffic's (`bridge monitor fdb` does too).
//! The gateway's local entry ([`MacTable::insert_static`]) is set up with
//! the switch, not edited, and publishes nothing. Events are published
//! after the write lock is released; they carry no time (none is at hand).

use std::collections::BTreeMap;
use std::fmt;

use super::{Entry, EntryKind, MacTable};
use crate::events::SwitchEvent;
use crate::mac::MacAddr;
use crate::port::PortId;

/// Why [`MacTable::add_static`] or [`MacTable::remove`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdbEditError {
    /// A multicast or broadcast address.
    GroupAddress(MacAddr),
    /// 00:00:00:00:00:00.
    ZeroAddress,
    /// The switch's own address (the gateway's local entry).
    LocalAddress(MacAddr),
    /// `remove` found no entry for the address.
    NotFound(MacAddr),
}

impl fmt::Display for FdbEditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdbEditError::GroupAddress(mac) => write!(
                f,
                "{mac} is a group (multicast or broadcast) address: frames to it flood and no host sends from it, so a static entry would never be used"
            ),
            FdbEditError::ZeroAddress => {
                write!(f, "00:00:00:00:00:00 is not a host's address")
            }
            FdbEditError::LocalAddress(mac) => write!(
                f,
                "{mac} is the switch's own address (the gateway's); it cannot be added or removed"
            ),
            FdbEditError::NotFound(mac) => write!(f, "{mac} is not in the MAC table"),
        }
    }
}

impl std::error::Error for FdbEditError {}

/// The entry an edit replaced or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousEntry {
    pub kind: EntryKind,
    pub port: PortId,
}

/// Which entries [`MacTable::flush`] removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushScope {
    /// Only entries on this port; `None` for every port.
    pub port: Option<PortId>,
    /// Static entries go too (local entries never do).
    pub include_static: bool,
}

impl MacTable {
    /// Pins `mac` to `port` as a static entry (`fdb add`). Returns the entry
    /// it replaced, if any.
    pub fn add_static(
        &self,
        mac: MacAddr,
        port: PortId,
    ) -> Result<Option<PreviousEntry>, FdbEditError> {
        check_pinnable(mac)?;
        let mut inner = self.write();
        let key = mac.to_u64();
        let previous = match inner.entries.get(&key) {
            Some(entry) if entry.kind == EntryKind::Local => {
                return Err(FdbEditError::LocalAddress(mac));
            }
            Some(entry) => Some(PreviousEntry {
                kind: entry.kind,
                port: entry.port,
            }),
            None => None,
        };
        if let Some(old) = inner.entries.remove(&key) {
            inner.forget_dynamic(&old);
        }
        inner
            .entries
            .insert(key, Entry::new(port, EntryKind::Static, 0));
        drop(inner);
        self.events
            .publish_with(None, || SwitchEvent::StaticAdded { mac, port });
        Ok(previous)
    }

    /// Removes the entry of `mac`, learned or static (`fdb del`). The
    /// switch's own address stays.
    pub fn remove(&self, mac: MacAddr) -> Result<PreviousEntry, FdbEditError> {
        let mut inner = self.write();
        let key = mac.to_u64();
        match inner.entries.get(&key) {
            None => return Err(FdbEditError::NotFound(mac)),
            Some(entry) if entry.kind == EntryKind::Local => {
                return Err(FdbEditError::LocalAddress(mac));
            }
            Some(_) => {}
        }
        let old = inner
            .entries
            .remove(&key)
            .expect("entry was just found under this lock");
        inner.forget_dynamic(&old);
        drop(inner);
        let port = old.port;
        self.events.publish_with(None, || match old.kind {
            EntryKind::Static => SwitchEvent::StaticRemoved { mac, port },
            _ => SwitchEvent::Deleted { mac, port },
        });
        Ok(PreviousEntry {
            kind: old.kind,
            port: old.port,
        })
    }

    /// Removes the entries `scope` names (`fdb flush`); returns how many.
    pub fn flush(&self, scope: FlushScope) -> usize {
        let mut inner = self.write();
        let mut gone_dynamic: Vec<PortId> = Vec::new();
        // Per port, in port order, for the events.
        let mut gone_per_port: BTreeMap<PortId, usize> = BTreeMap::new();
        let before = inner.entries.len();
        inner.entries.retain(|_, e| {
            let flushed = scope.port.is_none_or(|port| e.port == port)
                && match e.kind {
                    EntryKind::Dynamic => true,
                    EntryKind::Static => scope.include_static,
                    EntryKind::Local => false,
                };
            if flushed {
                *gone_per_port.entry(e.port).or_default() += 1;
                if e.kind == EntryKind::Dynamic {
                    gone_dynamic.push(e.port);
                }
            }
            !flushed
        });
        let removed = before - inner.entries.len();
        for port in gone_dynamic {
            inner.dynamic -= 1;
            if let Some(slot) = inner.ports.get_mut(&port) {
                slot.count -= 1;
            }
        }
        let ports: Vec<PortId> = inner.ports.keys().copied().collect();
        for port in ports {
            inner.compact_queue(port);
        }
        drop(inner);
        for (port, entries) in gone_per_port {
            self.events
                .publish_with(None, || SwitchEvent::Flushed { port, entries });
        }
        removed
    }
}

fn check_pinnable(mac: MacAddr) -> Result<(), FdbEditError> {
    if mac.is_zero() {
        return Err(FdbEditError::ZeroAddress);
    }
    if mac.is_group() {
        return Err(FdbEditError::GroupAddress(mac));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::events::EventBus;
    use crate::mac_table::{Learn, TableConfig};
    use crate::time::Instant;

    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, last])
    }

    fn table(capacity: usize) -> MacTable {
        MacTable::new(TableConfig {
            max_age: Some(Duration::from_secs(2)),
            capacity,
        })
    }

    #[test]
    fn a_static_entry_never_ages_and_shows_as_static() {
        let t = table(16);
        assert_eq!(t.add_static(mac(1), P1), Ok(None));
        let later = Instant::from_secs(1_000);
        assert_eq!(t.lookup(mac(1), later), Some(P1));
        assert_eq!(t.expire(later), 0);
        let rows = t.entries(later);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].kind, rows[0].age),
            (EntryKind::Static, Duration::ZERO)
        );
    }

    #[test]
    fn traffic_from_a_static_address_elsewhere_does_not_move_it() {
        let t = table(16);
        t.add_static(mac(1), P1).unwrap();
        assert_eq!(
            t.learn(mac(1), P2, Instant::ZERO),
            Learn::StaticElsewhere { port: P1 }
        );
        assert_eq!(t.lookup(mac(1), Instant::ZERO), Some(P1));
        assert_eq!(t.stats().moved, 0);
    }

    #[test]
    fn adding_replaces_a_learned_entry_and_frees_its_place() {
        let t = table(1);
        t.learn(mac(1), P2, Instant::ZERO);
        assert_eq!(
            t.add_static(mac(1), P1),
            Ok(Some(PreviousEntry {
                kind: EntryKind::Dynamic,
                port: P2
            }))
        );
        assert_eq!(t.stats().entries, 0, "static entries are not counted");
        // The one learned place is free again, and a full table never
        // evicts the static entry.
        assert_eq!(t.learn(mac(2), P2, Instant::ZERO), Learn::New);
        assert_eq!(t.learn(mac(3), P2, Instant::ZERO), Learn::New);
        assert_eq!(t.lookup(mac(1), Instant::ZERO), Some(P1));
        assert_eq!(t.stats().evicted, 1);
    }

    #[test]
    fn group_zero_and_local_addresses_are_refused() {
        let t = table(16);
        let gateway = mac(9);
        t.insert_static(gateway, PortId::GATEWAY, EntryKind::Local);
        let group = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert_eq!(
            t.add_static(group, P1),
            Err(FdbEditError::GroupAddress(group))
        );
        assert_eq!(
            t.add_static(MacAddr::ZERO, P1),
            Err(FdbEditError::ZeroAddress)
        );
        assert_eq!(
            t.add_static(gateway, P1),
            Err(FdbEditError::LocalAddress(gateway))
        );
        assert_eq!(t.remove(gateway), Err(FdbEditError::LocalAddress(gateway)));
        assert_eq!(t.lookup(gateway, Instant::ZERO), Some(PortId::GATEWAY));
        assert!(
            FdbEditError::GroupAddress(group)
                .to_string()
                .starts_with("01:00:5e:00:00:01 is a group")
        );
    }

    #[test]
    fn remove_takes_learned_and_static_entries() {
        let t = table(16);
        t.add_static(mac(1), P1).unwrap();
        t.learn(mac(2), P2, Instant::ZERO);
        assert_eq!(t.remove(mac(1)).map(|p| p.kind), Ok(EntryKind::Static));
        assert_eq!(t.remove(mac(2)).map(|p| p.port), Ok(P2));
        assert_eq!(t.remove(mac(2)), Err(FdbEditError::NotFound(mac(2))));
        assert_eq!(t.stats().entries, 0);
        assert!(t.entries(Instant::ZERO).is_empty());
    }

    #[test]
    fn flush_keeps_static_and_local_entries_unless_asked() {
        let t = table(16);
        t.insert_static(mac(9), PortId::GATEWAY, EntryKind::Local);
        t.add_static(mac(1), P1).unwrap();
        t.learn(mac(2), P1, Instant::ZERO);
        t.learn(mac(3), P2, Instant::ZERO);

        let only_p1 = FlushScope {
            port: Some(P1),
            include_static: false,
        };
        assert_eq!(t.flush(only_p1), 1);
        assert_eq!(t.lookup(mac(2), Instant::ZERO), None);
        assert_eq!(t.lookup(mac(3), Instant::ZERO), Some(P2));
        assert_eq!(t.lookup(mac(1), Instant::ZERO), Some(P1));

        assert_eq!(t.flush(FlushScope::default()), 1);
        assert_eq!(t.stats().entries, 0);
        assert_eq!(t.lookup(mac(1), Instant::ZERO), Some(P1));

        let everything = FlushScope {
            port: None,
            include_static: true,
        };
        assert_eq!(t.flush(everything), 1);
        assert_eq!(t.lookup(mac(1), Instant::ZERO), None);
        assert_eq!(t.lookup(mac(9), Instant::ZERO), Some(PortId::GATEWAY));
        // Learning still works and counts right after flushes.
        assert_eq!(t.learn(mac(2), P1, Instant::ZERO), Learn::New);
        assert_eq!(t.stats().entries, 1);
    }

    #[test]
    fn operator_edits_are_published_but_the_gateway_entry_is_not() {
        let bus = EventBus::default();
        let t = MacTable::with_events(
            TableConfig {
                max_age: Some(Duration::from_secs(2)),
                capacity: 16,
            },
            bus.clone(),
        );
        let events = bus.subscribe();
        let next = || events.try_next().map(|stamped| stamped.event);

        t.insert_static(mac(9), PortId::GATEWAY, EntryKind::Local);
        t.add_static(mac(1), P1).unwrap();
        assert_eq!(
            next(),
            Some(SwitchEvent::StaticAdded {
                mac: mac(1),
                port: P1
            }),
            "the local entry publishes nothing; the static one does"
        );
        t.remove(mac(1)).unwrap();
        assert_eq!(
            next(),
            Some(SwitchEvent::StaticRemoved {
                mac: mac(1),
                port: P1
            })
        );

        // A learned entry an operator deletes is published too.
        t.learn(mac(5), P2, Instant::ZERO);
        assert_eq!(
            next(),
            Some(SwitchEvent::Learned {
                mac: mac(5),
                port: P2
            })
        );
        t.remove(mac(5)).unwrap();
        assert_eq!(
            next(),
            Some(SwitchEvent::Deleted {
                mac: mac(5),
                port: P2
            })
        );

        // A refused edit publishes nothing.
        assert!(t.add_static(mac(9), P1).is_err());
        assert!(t.remove(mac(9)).is_err());
        assert_eq!(next(), None);

        t.add_static(mac(1), P1).unwrap();
        t.learn(mac(2), P1, Instant::ZERO);
        t.learn(mac(3), P2, Instant::ZERO);
        t.learn(mac(4), P2, Instant::ZERO);
        while next().is_some() {}
        let everything = FlushScope {
            port: None,
            include_static: true,
        };
        assert_eq!(t.flush(everything), 4);
        assert_eq!(
            next(),
            Some(SwitchEvent::Flushed {
                port: P1,
                entries: 2
            })
        );
        assert_eq!(
            next(),
            Some(SwitchEvent::Flushed {
                port: P2,
                entries: 2
            })
        );
        assert_eq!(next(), None, "the gateway's entry stays, unannounced");
        assert_eq!(t.flush(FlushScope::default()), 0);
        assert_eq!(next(), None, "an empty flush publishes nothing");
    }
}

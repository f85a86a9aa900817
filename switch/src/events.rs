//! The switch's events as data: what `tapswitch monitor` and the web page
//! show as it happens (learned, moved, expired, evicted, deleted, flushed; ports
//! added, removed, down and up; trace lines).
//!
//! **Off the frame path.** Whoever has something to say calls
//! [`EventBus::is_listening`] first: one relaxed atomic load, and nothing
//! else happens while nobody subscribes. Events are made only where the
//! switch already takes a slow path (a new address, a move, a sweep, a port
//! added), never for a refreshed entry or a forwarded frame.
//!
//! **Bounded.** Each subscriber has its own queue of [`QUEUE_EVENTS`]
//! events. A publisher never waits: when a subscriber's queue is full the
//! event is dropped for that subscriber and counted, and the subscriber
//! learns how many it lost ([`Subscription::take_lost`]), as `bridge
//! monitor` readers learn of `ENOBUFS`.
//!
//! **Pure.** Events are plain data stamped with the caller's time (an
//! argument, as everywhere in the engine), so the table's emission is unit
//! tested without threads or I/O: subscribe, act, read the queue.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;
use crate::port::PortId;
use crate::time::Instant;

/// Events one subscriber may have waiting before newer ones are lost.
pub const QUEUE_EVENTS: usize = 4096;

/// Something that happened in the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SwitchEvent {
    /// A new address was learned on a port.
    Learned { mac: MacAddr, port: PortId },
    /// A known address was heard on another port and moved there.
    Moved {
        mac: MacAddr,
        from: PortId,
        to: PortId,
    },
    /// An entry aged out (its host was silent for the ageing time).
    Expired { mac: MacAddr, port: PortId },
    /// An entry was pushed out of a full table.
    Evicted { mac: MacAddr, port: PortId },
    /// Every entry of a port was forgotten (the port went away, or a flush).
    Flushed { port: PortId, entries: usize },
    /// A static entry was added (`fdb add`).
    StaticAdded { mac: MacAddr, port: PortId },
    /// A static entry was removed (`fdb del`).
    StaticRemoved { mac: MacAddr, port: PortId },
    /// A learned entry was removed by an operator (`fdb del`).
    Deleted { mac: MacAddr, port: PortId },
    /// A port was attached.
    PortAdded { port: PortId, name: String },
    /// A port was detached; `reason` when it broke on its own.
    PortRemoved {
        port: PortId,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A port's link went down (frames resume when it comes back up).
    LinkDown { port: PortId, name: String },
    /// A port whose link was down delivers frames again.
    LinkUp { port: PortId, name: String },
    /// A translated flow opened (the gateway's services; `flow` describes it
    /// as `tapswitch flows` does).
    FlowOpened { flow: String },
    /// A translated flow ended.
    FlowClosed { flow: String },
    /// One `--trace` line (see [`crate::trace`]).
    Trace { line: String },
}

/// An event with its place in the stream and the switch time it happened
/// at (`None` for the few events made where no time is at hand, such as a
/// flush; the reader stamps them with its own clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    pub seq: u64,
    pub at: Option<Instant>,
    pub event: SwitchEvent,
}

/// Where events are published. Cheap to clone (the clones share
/// subscribers); `EventBus::default()` has none.
#[derive(Debug, Clone, Default)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

#[derive(Debug, Default)]
struct BusInner {
    /// How many subscribers there are: the one load a publisher pays.
    listeners: AtomicUsize,
    subscribers: Mutex<Subscribers>,
}

#[derive(Debug, Default)]
struct Subscribers {
    next_seq: u64,
    next_id: u64,
    queues: Vec<Queue>,
}

#[derive(Debug)]
struct Queue {
    id: u64,
    tx: Sender<Stamped>,
    lost: Arc<AtomicU64>,
}

impl EventBus {
    /// Whether anyone listens. Publishers call this before they build an
    /// event; it is one relaxed atomic load.
    #[inline]
    pub fn is_listening(&self) -> bool {
        self.inner.listeners.load(Ordering::Relaxed) > 0
    }

    /// Publishes `event` to every subscriber, without waiting: a full queue
    /// loses it (and counts the loss).
    pub fn publish(&self, at: Option<Instant>, event: SwitchEvent) {
        if !self.is_listening() {
            return;
        }
        let mut subs = self.lock();
        let seq = subs.next_seq;
        subs.next_seq += 1;
        let stamped = Stamped { seq, at, event };
        for queue in &subs.queues {
            match queue.tx.try_send(stamped.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    queue.lost.fetch_add(1, Ordering::Relaxed);
                }
                // The subscription is being dropped; it removes itself.
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Publishes `make()` if anyone listens; `make` is not called otherwise.
    #[inline]
    pub fn publish_with(&self, at: Option<Instant>, make: impl FnOnce() -> SwitchEvent) {
        if self.is_listening() {
            self.publish(at, make());
        }
    }

    /// A new subscriber, which sees the events published from now on.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with_capacity(QUEUE_EVENTS)
    }

    /// [`EventBus::subscribe`] with a queue of `capacity` events.
    pub fn subscribe_with_capacity(&self, capacity: usize) -> Subscription {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let lost = Arc::new(AtomicU64::new(0));
        let mut subs = self.lock();
        let id = subs.next_id;
        subs.next_id += 1;
        subs.queues.push(Queue {
            id,
            tx,
            lost: lost.clone(),
        });
        self.inner
            .listeners
            .store(subs.queues.len(), Ordering::Relaxed);
        Subscription {
            bus: self.clone(),
            id,
            rx,
            lost,
        }
    }

    /// How many subscribers there are now.
    pub fn subscribers(&self) -> usize {
        self.inner.listeners.load(Ordering::Relaxed)
    }

    fn unsubscribe(&self, id: u64) {
        let mut subs = self.lock();
        subs.queues.retain(|q| q.id != id);
        self.inner
            .listeners
            .store(subs.queues.len(), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        // Every update completes before the guard drops: a poisoned lock is sound.
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One reader of the events. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    bus: EventBus,
    id: u64,
    rx: Receiver<Stamped>,
    lost: Arc<AtomicU64>,
}

impl Subscription {
    /// The next event, if one is waiting.
    pub fn try_next(&self) -> Option<Stamped> {
        self.rx.try_recv().ok()
    }

    /// The next event, waiting at most `timeout`.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Stamped> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// How many events were lost (queue full) since the last call.
    pub fn take_lost(&self) -> u64 {
        self.lost.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.unsubscribe(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learned(n: u8) -> SwitchEvent {
        SwitchEvent::Learned {
            mac: MacAddr([2, 0, 0, 0, 0, n]),
            port: PortId(1),
        }
    }

    #[test]
    fn nobody_listening_means_nothing_is_made() {
        let bus = EventBus::default();
        assert!(!bus.is_listening());
        bus.publish_with(None, || unreachable!("no subscriber: not built"));
    }

    #[test]
    fn every_subscriber_sees_events_in_order_from_when_it_subscribed() {
        let bus = EventBus::default();
        bus.publish(None, learned(0));
        let a = bus.subscribe();
        bus.publish(Some(Instant::from_secs(1)), learned(1));
        let b = bus.subscribe();
        bus.publish(Some(Instant::from_secs(2)), learned(2));
        let first = a.try_next().unwrap();
        assert_eq!(
            (first.at, first.event),
            (Some(Instant::from_secs(1)), learned(1))
        );
        let second = a.try_next().unwrap();
        assert_eq!(second.event, learned(2));
        assert!(second.seq > first.seq);
        assert_eq!(b.try_next().unwrap().event, learned(2));
        assert_eq!(a.try_next(), None);
    }

    #[test]
    fn a_slow_reader_loses_events_and_is_told_how_many() {
        let bus = EventBus::default();
        let slow = bus.subscribe_with_capacity(2);
        let fast = bus.subscribe_with_capacity(100);
        for n in 0..5 {
            bus.publish(None, learned(n));
        }
        assert_eq!(slow.take_lost(), 3);
        assert_eq!(slow.take_lost(), 0, "counted once");
        assert_eq!(slow.try_next().unwrap().event, learned(0));
        assert_eq!(fast.take_lost(), 0);
        assert_eq!(std::iter::from_fn(|| fast.try_next()).count(), 5);
    }

    #[test]
    fn dropping_the_last_subscription_stops_the_listening() {
        let bus = EventBus::default();
        let a = bus.subscribe();
        let b = bus.subscribe();
        assert_eq!(bus.subscribers(), 2);
        drop(a);
        assert!(bus.is_listening());
        drop(b);
        assert!(!bus.is_listening());
    }

    #[test]
    fn events_read_as_tagged_json() {
        let json = serde_json::to_value(SwitchEvent::Moved {
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            from: PortId(1),
            to: PortId(2),
        })
        .unwrap();
        assert_eq!(json["event"], "moved");
        assert_eq!(json["mac"], "02:00:00:00:00:01");
        assert_eq!(json["from"], 1);
        let removed = serde_json::to_value(SwitchEvent::PortRemoved {
            port: PortId(3),
            name: "veth-b".into(),
            reason: None,
        })
        .unwrap();
        assert_eq!(removed["event"], "port_removed");
        assert!(removed.get("reason").is_none());
    }
}

/// What the MAC table publishes, tested on virtual time without threads.
#[cfg(test)]
mod table_tests {
    use super::*;
    use crate::mac_table::{MacTable, TableConfig};

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn drain(sub: &Subscription) -> Vec<(Option<Instant>, SwitchEvent)> {
        std::iter::from_fn(|| sub.try_next())
            .map(|s| (s.at, s.event))
            .collect()
    }

    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);

    #[test]
    fn learn_move_expire_and_flush_are_published_with_their_time() {
        let bus = EventBus::default();
        let table = MacTable::with_events(TableConfig::default().with_ageing_secs(2), bus.clone());
        let sub = bus.subscribe();
        let t = Instant::from_secs;
        table.learn(mac(1), P1, t(0));
        table.learn(mac(1), P1, t(1)); // a refresh says nothing
        table.learn(mac(1), P2, t(1));
        table.learn(mac(2), P2, t(1));
        assert_eq!(table.expire(t(5)), 2);
        table.learn(mac(3), P1, t(6));
        table.learn(mac(4), P1, t(6));
        assert_eq!(table.flush_port(P1), 2);
        let mut events = drain(&sub);
        // A sweep's order follows the hash map: compare it as a set.
        events[3..5].sort_by_key(|(_, e)| format!("{e:?}"));
        assert_eq!(
            events,
            vec![
                (
                    Some(t(0)),
                    SwitchEvent::Learned {
                        mac: mac(1),
                        port: P1
                    }
                ),
                (
                    Some(t(1)),
                    SwitchEvent::Moved {
                        mac: mac(1),
                        from: P1,
                        to: P2
                    }
                ),
                (
                    Some(t(1)),
                    SwitchEvent::Learned {
                        mac: mac(2),
                        port: P2
                    }
                ),
                (
                    Some(t(5)),
                    SwitchEvent::Expired {
                        mac: mac(1),
                        port: P2
                    }
                ),
                (
                    Some(t(5)),
                    SwitchEvent::Expired {
                        mac: mac(2),
                        port: P2
                    }
                ),
                (
                    Some(t(6)),
                    SwitchEvent::Learned {
                        mac: mac(3),
                        port: P1
                    }
                ),
                (
                    Some(t(6)),
                    SwitchEvent::Learned {
                        mac: mac(4),
                        port: P1
                    }
                ),
                (
                    None,
                    SwitchEvent::Flushed {
                        port: P1,
                        entries: 2
                    }
                ),
            ]
        );
    }

    #[test]
    fn an_expired_entry_heard_again_is_expired_then_learned() {
        let bus = EventBus::default();
        let table = MacTable::with_events(TableConfig::default().with_ageing_secs(2), bus.clone());
        let sub = bus.subscribe();
        table.learn(mac(1), P1, Instant::ZERO);
        table.learn(mac(1), P2, Instant::from_secs(3));
        let kinds: Vec<SwitchEvent> = drain(&sub).into_iter().map(|(_, e)| e).collect();
        assert_eq!(
            kinds,
            vec![
                SwitchEvent::Learned {
                    mac: mac(1),
                    port: P1
                },
                SwitchEvent::Expired {
                    mac: mac(1),
                    port: P1
                },
                SwitchEvent::Learned {
                    mac: mac(1),
                    port: P2
                },
            ]
        );
    }

    #[test]
    fn a_full_table_publishes_the_eviction() {
        let bus = EventBus::default();
        let mut config = TableConfig::default().with_ageing_secs(300);
        config.capacity = 2;
        let table = MacTable::with_events(config, bus.clone());
        table.learn(mac(1), P1, Instant::ZERO);
        table.learn(mac(2), P1, Instant::from_secs(1));
        let sub = bus.subscribe();
        table.learn(mac(3), P2, Instant::from_secs(2));
        assert_eq!(
            drain(&sub),
            vec![
                (
                    Some(Instant::from_secs(2)),
                    SwitchEvent::Evicted {
                        mac: mac(1),
                        port: P1
                    }
                ),
                (
                    Some(Instant::from_secs(2)),
                    SwitchEvent::Learned {
                        mac: mac(3),
                        port: P2
                    }
                ),
            ]
        );
    }

    #[test]
    fn without_a_subscriber_the_table_works_as_before() {
        let bus = EventBus::default();
        let table = MacTable::with_events(TableConfig::default(), bus.clone());
        table.learn(mac(1), P1, Instant::ZERO);
        let late = bus.subscribe();
        assert_eq!(late.try_next(), None, "nothing was queued for nobody");
        assert_eq!(table.stats().learned, 1);
    }
}

//! The etcd side of an overlay network's membership: reading, watching and
//! writing the registrations laid out in [`crate::membership`];
//! [`Registrar`], which carries out a [`LeaseKeeper`]'s schedule; and
//! [`MembershipFeed`], which turns the store into the
//! [`Event`]s a [`Membership`](crate::membership::Membership) consumes.
//!
//! Each call is one blocking request with the client's timeout; nothing here
//! starts a thread. A switch's run loop calls [`Registrar::tick`] and
//! [`MembershipFeed::poll`] when their time comes and feeds the events to
//! its `Membership`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::etcd::{Client, EtcdError, LeaseId, Revision, WatchEvent};
use crate::membership::{
    Event, KeeperStep, LeaseKeeper, Registration, endpoint_of_key, member_key, members_prefix,
};
use crate::state::State;
use crate::store::Store;

/// One overlay network's registrations in a shared store.
#[derive(Debug, Clone)]
pub struct Registry {
    client: Client,
    prefix: String,
    network: String,
}

impl Registry {
    /// The registry of `network` in `store`; `None` for a local store,
    /// where no other host can register.
    pub fn new(store: &Store, network: &str) -> Option<Registry> {
        let (client, prefix) = store.etcd()?;
        Some(Registry {
            client: client.clone(),
            prefix: prefix.to_string(),
            network: network.to_string(),
        })
    }

    /// Every registration, and the revision to watch from (exclusive).
    pub fn list(&self) -> Result<(Vec<Registration>, Revision)> {
        let prefix = members_prefix(&self.prefix, &self.network);
        let (kvs, revision) = self.client.get_prefix(prefix.as_bytes())?;
        let registrations = kvs
            .iter()
            .filter_map(|kv| self.decode(&kv.key, &kv.value, kv.lease))
            .collect();
        Ok((registrations, revision))
    }

    /// Stores `record` under a new lease of `ttl`; returns the lease.
    pub fn register(&self, record: &Registration, ttl: Duration) -> Result<LeaseId> {
        let lease = self.client.grant_lease(ttl)?;
        let (key, value) = self.encode(record)?;
        if let Err(err) = self.client.put(key.as_bytes(), &value, Some(lease)) {
            let _ = self.client.revoke_lease(lease);
            return Err(err.into());
        }
        Ok(lease)
    }

    /// Renews `lease`: `Some(ttl)` while etcd knows it.
    pub fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, EtcdError> {
        self.client.keep_alive(lease)
    }

    /// Rewrites `record` under the `lease` it already lives under (when
    /// its MACs change).
    pub fn update(&self, record: &Registration, lease: LeaseId) -> Result<()> {
        let (key, value) = self.encode(record)?;
        self.client.put(key.as_bytes(), &value, Some(lease))?;
        Ok(())
    }

    /// The key `record` lives under, and its value.
    fn encode(&self, record: &Registration) -> Result<(String, Vec<u8>)> {
        let key = member_key(&self.prefix, &self.network, record.endpoint);
        let value = serde_json::to_vec(record).map_err(|e| Error::CorruptKey {
            endpoints: self.client.endpoints().join(", "),
            key: key.clone(),
            detail: format!("cannot encode the registration: {e}"),
        })?;
        Ok((key, value))
    }

    /// Removes a registration now (revoking its lease deletes the key).
    pub fn unregister(&self, lease: LeaseId) -> Result<(), EtcdError> {
        self.client.revoke_lease(lease)
    }

    /// The membership changes from revision `from` on, waiting up to
    /// `wait`; returns them and the revision to continue from.
    pub fn watch(&self, from: Revision, wait: Duration) -> Result<(Vec<Event>, Revision)> {
        let prefix = members_prefix(&self.prefix, &self.network);
        let batch = self.client.watch_prefix(prefix.as_bytes(), from, wait)?;
        let events = batch
            .events
            .into_iter()
            .filter_map(|event| match event {
                WatchEvent::Put(kv) => self
                    .decode(&kv.key, &kv.value, kv.lease)
                    .map(Event::Registered),
                WatchEvent::Delete { key, .. } => endpoint_of_key(&key).map(Event::Unregistered),
            })
            .collect();
        Ok((events, batch.next_revision))
    }

    /// A registration as stored; a record that does not parse, or that
    /// sits under another endpoint's key, is skipped with a warning (one
    /// bad host must not stop the others).
    fn decode(&self, key: &[u8], value: &[u8], lease: LeaseId) -> Option<Registration> {
        let named = endpoint_of_key(key);
        match serde_json::from_slice::<Registration>(value) {
            Ok(mut record) if Some(record.endpoint) == named => {
                record.lease = lease;
                Some(record)
            }
            Ok(_) | Err(_) => {
                log::warn!(
                    "skipping the unreadable registration {} in etcd",
                    String::from_utf8_lossy(key)
                );
                None
            }
        }
    }
}

/// Keeps one switch's registration in the store (see
/// [`crate::membership`]'s "Keeping the own registration alive").
#[derive(Debug, Clone)]
pub struct Registrar {
    registry: Registry,
    record: Registration,
    ttl: Duration,
    keeper: LeaseKeeper,
}

impl Registrar {
    pub fn new(registry: Registry, record: Registration, ttl: Duration, now: Instant) -> Self {
        Registrar {
            registry,
            record,
            ttl,
            keeper: LeaseKeeper::new(ttl, now),
        }
    }

    /// Does what is due at `now` (register, renew, or nothing). An error
    /// means the store did not answer; the keeper has planned the retry.
    pub fn tick(&mut self, now: Instant) -> Result<()> {
        match self.keeper.poll(now) {
            KeeperStep::Wait => Ok(()),
            KeeperStep::Register => match self.registry.register(&self.record, self.ttl) {
                Ok(lease) => {
                    self.keeper.registered(now, lease);
                    Ok(())
                }
                Err(err) => {
                    self.keeper.failed(now);
                    Err(err)
                }
            },
            KeeperStep::KeepAlive(lease) => match self.registry.keep_alive(lease) {
                Ok(ttl) => {
                    self.keeper.renewed(now, ttl);
                    // A lost lease is registered afresh right away.
                    self.tick(now)
                }
                Err(err) => {
                    self.keeper.failed(now);
                    Err(err.into())
                }
            },
        }
    }

    /// Replaces the record (e.g. new MACs); stored at once if the
    /// registration stands, else with the next registration.
    pub fn set_record(&mut self, record: Registration, now: Instant) -> Result<()> {
        self.record = record;
        match self.keeper.lease(now) {
            Some(lease) => self.registry.update(&self.record, lease),
            None => Ok(()),
        }
    }

    /// When [`tick`](Registrar::tick) next has work.
    pub fn next_wakeup(&self) -> Instant {
        self.keeper.next_wakeup()
    }

    /// The live lease, if the registration surely stands.
    pub fn lease(&self, now: Instant) -> Option<LeaseId> {
        self.keeper.lease(now)
    }

    /// Removes the registration (on a clean shutdown), so the others drop
    /// this switch at once instead of after the lease time.
    pub fn unregister(self, now: Instant) -> Result<()> {
        match self.keeper.lease(now) {
            Some(lease) => Ok(self.registry.unregister(lease)?),
            None => Ok(()),
        }
    }
}

/// One network's membership as a stream of [`Event`]s: the whole list
/// first ([`Event::Snapshot`]), then the changes to the switches'
/// registrations and to the network's peers (which live in the state
/// document). After an error the next [`poll`](MembershipFeed::poll)
/// starts over with a snapshot, so nothing missed while etcd was away goes
/// unnoticed.
#[derive(Debug, Clone)]
pub struct MembershipFeed {
    registry: Registry,
    /// Where the watch goes on; `None`: take a snapshot first.
    next: Option<Revision>,
    peers: Vec<SocketAddr>,
}

impl MembershipFeed {
    pub fn new(registry: Registry) -> MembershipFeed {
        MembershipFeed {
            registry,
            next: None,
            peers: Vec::new(),
        }
    }

    /// The next events: a snapshot at once when one is due, else the
    /// changes that arrive within `wait` (none if nothing changed).
    pub fn poll(&mut self, wait: Duration) -> Result<Vec<Event>> {
        let result = match self.next {
            None => self.snapshot().map(|event| vec![event]),
            Some(from) => self.changes(from, wait),
        };
        if result.is_err() {
            self.next = None;
        }
        result
    }

    /// The state and every key of the store in one read, so the peers and
    /// the registrations are seen at the same revision.
    fn snapshot(&mut self) -> Result<Event> {
        let registry = &self.registry;
        let (kvs, revision) = registry.client.get_prefix(registry.prefix.as_bytes())?;
        let members = members_prefix(&registry.prefix, &registry.network);
        let mut registrations = Vec::new();
        for kv in &kvs {
            if kv.key == self.state_key().as_bytes() {
                self.peers = self.peers_in(&kv.value).unwrap_or_default();
            } else if kv.key.starts_with(members.as_bytes())
                && let Some(record) = registry.decode(&kv.key, &kv.value, kv.lease)
            {
                registrations.push(record);
            }
        }
        self.next = Some(revision + 1);
        Ok(Event::Snapshot {
            registrations,
            peers: self.peers.clone(),
        })
    }

    fn changes(&mut self, from: Revision, wait: Duration) -> Result<Vec<Event>> {
        let registry = &self.registry;
        let batch = registry
            .client
            .watch_prefix(registry.prefix.as_bytes(), from, wait)?;
        let members = members_prefix(&registry.prefix, &registry.network);
        let mut events = Vec::new();
        for event in batch.events {
            match event {
                WatchEvent::Put(kv) if kv.key == self.state_key().as_bytes() => {
                    let Some(peers) = self.peers_in(&kv.value) else {
                        continue;
                    };
                    if peers != self.peers {
                        self.peers = peers.clone();
                        events.push(Event::PeersChanged(peers));
                    }
                }
                WatchEvent::Put(kv) if kv.key.starts_with(members.as_bytes()) => {
                    events.extend(
                        self.registry
                            .decode(&kv.key, &kv.value, kv.lease)
                            .map(Event::Registered),
                    );
                }
                WatchEvent::Delete { key, .. } if key.starts_with(members.as_bytes()) => {
                    events.extend(endpoint_of_key(&key).map(Event::Unregistered));
                }
                // The lock, other networks' members: not this feed's business.
                WatchEvent::Put(_) | WatchEvent::Delete { .. } => {}
            }
        }
        self.next = Some(batch.next_revision);
        Ok(events)
    }

    fn state_key(&self) -> String {
        format!("{}state", self.registry.prefix)
    }

    /// The network's peers in a state document; `None` if it does not
    /// parse (a newer format, say), so the last known peers stay. A network
    /// that is gone has none.
    fn peers_in(&self, document: &[u8]) -> Option<Vec<SocketAddr>> {
        let state: State = serde_json::from_slice(document).ok()?;
        let peers = state
            .network(&self.registry.network)
            .ok()
            .and_then(|n| n.overlay().map(|o| o.peers.clone()))
            .unwrap_or_default();
        Some(peers)
    }
}

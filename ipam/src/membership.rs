//! Who serves an overlay network, and what a switch must do when that
//! changes. Pure: events and time in, actions out; the etcd side is in
//! [`crate::registry`].
//!
//! # Members
//!
//! A network's members are the VXLAN tunnel endpoints (VTEPs) that share its
//! segment, each an underlay address and UDP port:
//!
//! - **switches**: each `tapswitch serve` of the network registers itself
//!   under a lease it keeps alive (like flannel's per-host subnet keys); a
//!   switch that dies stops renewing, etcd deletes its key when the lease
//!   runs out, and the others see that deletion.
//! - **peers**: hosts without tapswitch (a kernel `vxlan` device), added
//!   with `network peer add` and stored in the network's record
//!   ([`crate::overlay::OverlayConfig::peers`]); they stay until removed.
//!
//! # Key layout (under the store's prefix, `/tapswitch/` by default)
//!
//! ```text
//! members/<network>/<ip>:<port>   a Registration as JSON, attached to the switch's lease
//!                                 (`[<ipv6>]:<port>` on an IPv6 underlay)
//! ```
//!
//! One key per endpoint, so a host that restarts overwrites its own entry,
//! and a watch on `members/<network>/` sees every arrival and departure.
//!
//! # What a switch does ([`Membership`])
//!
//! The flood list (head-end replication: broadcast, multicast and unknown
//! unicast go to each of them) is every member but the switch itself. When a
//! member leaves, the switch drops it from the flood list **and** forgets the
//! MACs learned behind it, so frames stop going to a dead host at once
//! rather than after the MAC table's aging time. Arrivals only add to the
//! flood list: MACs behind a new member are learned from its traffic, as
//! the kernel's vxlan device learns, and from the MACs its registration
//! lists: a switch registers the MACs on its local ports (containers and
//! gateway), and the others put them behind it before its first frame
//! ([`Action::RegisteredMacs`]), as flannel writes fdb entries from its
//! hosts' records; traffic still wins where the two disagree.
//!
//! While the store is unreachable nothing changes: known members keep their
//! place (forwarding between known hosts goes on). When the watch comes back
//! the switch reads the whole list again ([`Event::Snapshot`]) and the
//! difference becomes actions, so departures missed meanwhile are caught.
//!
//! # Keeping the own registration alive ([`LeaseKeeper`])
//!
//! Grant a lease of `ttl` (10 s by default), put the registration under it,
//! renew every `ttl / 3`. A renewal that fails is retried every
//! [`RETRY_INTERVAL`]; once `ttl` has passed since the last good renewal,
//! etcd has certainly dropped the key, so the keeper registers afresh (new
//! lease) as soon as the store answers. A renewal answered "no such lease"
//! (it expired, or etcd lost it) also leads to registering afresh.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::etcd::LeaseId;
use crate::mac::MacAddr;

/// A switch's lease unless `--lease-ttl` says otherwise.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// How soon a failed renewal or registration is tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// What a switch stores about itself while it serves an overlay network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub network: String,
    pub vni: u32,
    /// The tunnel endpoint: underlay address (IPv4 or IPv6) and VXLAN UDP
    /// port; `"[2001:db8::1]:4789"` for IPv6.
    pub endpoint: SocketAddr,
    /// The host's name, for `network inspect`.
    #[serde(default)]
    pub hostname: String,
    /// The MACs of the containers behind this switch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<MacAddr>,
    /// The lease the key is attached to (taken from etcd when read).
    #[serde(default)]
    pub lease: LeaseId,
    /// RFC 3339, UTC.
    #[serde(default)]
    pub registered: String,
}

/// `<prefix>members/<network>/`: where a network's registrations live.
pub fn members_prefix(prefix: &str, network: &str) -> String {
    format!("{prefix}members/{network}/")
}

/// `<prefix>members/<network>/<ip>:<port>`: one switch's registration.
pub fn member_key(prefix: &str, network: &str, endpoint: SocketAddr) -> String {
    format!("{}{endpoint}", members_prefix(prefix, network))
}

/// The endpoint a member key names, if it is one.
pub fn endpoint_of_key(key: &[u8]) -> Option<SocketAddr> {
    let key = std::str::from_utf8(key).ok()?;
    key.rsplit('/').next()?.parse().ok()
}

/// A change in a network's membership, as the store reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The whole list: at start, and whenever the watch had to start over.
    Snapshot {
        registrations: Vec<Registration>,
        peers: Vec<SocketAddr>,
    },
    /// A switch registered, or renewed its record.
    Registered(Registration),
    /// A switch's record went: it stopped, or its lease expired.
    Unregistered(SocketAddr),
    /// The network's static peers, after `network peer add|rm`.
    PeersChanged(Vec<SocketAddr>),
}

/// What the switch must do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Flood to this endpoint from now on, and accept its VXLAN.
    AddVtep(SocketAddr),
    /// Stop flooding to it and refuse its VXLAN.
    RemoveVtep(SocketAddr),
    /// Forget every MAC learned behind this endpoint.
    FlushMacsBehind(SocketAddr),
    /// The MACs this member's registration lists now (all of them): put
    /// them behind it, and forget those registered before and gone now.
    RegisteredMacs(SocketAddr, Vec<MacAddr>),
}

/// One network's members as seen by one switch.
#[derive(Debug, Clone)]
pub struct Membership {
    vni: u32,
    /// This switch's own endpoint, never in its flood list.
    own: Option<SocketAddr>,
    switches: BTreeMap<SocketAddr, Registration>,
    peers: BTreeSet<SocketAddr>,
    /// Registrations refused because they name another VNI.
    pub wrong_vni: u64,
}

impl Membership {
    /// An empty view of the network with `vni`, for the switch at `own`.
    pub fn new(vni: u32, own: Option<SocketAddr>) -> Membership {
        Membership {
            vni,
            own,
            switches: BTreeMap::new(),
            peers: BTreeSet::new(),
            wrong_vni: 0,
        }
    }

    /// Applies one event; returns what the switch must do, removals first.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let before = self.flood_list();
        let macs_before = self.registered_macs();
        match event {
            Event::Snapshot {
                registrations,
                peers,
            } => {
                self.switches.clear();
                for registration in registrations {
                    self.accept(registration);
                }
                self.peers = peers.into_iter().collect();
            }
            Event::Registered(registration) => self.accept(registration),
            Event::Unregistered(endpoint) => {
                self.switches.remove(&endpoint);
            }
            Event::PeersChanged(peers) => self.peers = peers.into_iter().collect(),
        }
        let after = self.flood_list();
        let mut actions = Vec::new();
        for gone in before.difference(&after) {
            actions.push(Action::RemoveVtep(*gone));
            actions.push(Action::FlushMacsBehind(*gone));
        }
        actions.extend(after.difference(&before).map(|new| Action::AddVtep(*new)));
        for (endpoint, macs) in self.registered_macs() {
            let known = macs_before.get(&endpoint).map_or(&[][..], Vec::as_slice);
            if macs != known {
                actions.push(Action::RegisteredMacs(endpoint, macs));
            }
        }
        actions
    }

    /// The MACs each member switch registered (not this switch's own).
    fn registered_macs(&self) -> BTreeMap<SocketAddr, Vec<MacAddr>> {
        self.switches
            .values()
            .filter(|r| Some(r.endpoint) != self.own)
            .map(|r| (r.endpoint, r.macs.clone()))
            .collect()
    }

    fn accept(&mut self, registration: Registration) {
        if registration.vni != self.vni {
            // A misconfigured host must not join a segment it does not carry.
            self.wrong_vni += 1;
            self.switches.remove(&registration.endpoint);
            return;
        }
        self.switches.insert(registration.endpoint, registration);
    }

    /// Every member but this switch: where floods go.
    pub fn flood_list(&self) -> BTreeSet<SocketAddr> {
        self.switches
            .keys()
            .chain(&self.peers)
            .filter(|e| Some(**e) != self.own)
            .copied()
            .collect()
    }

    /// Whether VXLAN from `source` comes from a member. Only the address
    /// counts: senders pick the UDP source port from a hash of the inner
    /// flow (RFC 7348 §5).
    pub fn accepts(&self, source: IpAddr) -> bool {
        self.flood_list().iter().any(|e| e.ip() == source)
    }

    /// The switches' registrations, by endpoint.
    pub fn switches(&self) -> impl Iterator<Item = &Registration> {
        self.switches.values()
    }

    /// The static peers (`network peer add`), by endpoint.
    pub fn peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peers.iter().copied()
    }
}

/// The schedule of a switch's own registration (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseKeeper {
    ttl: Duration,
    state: KeeperState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeeperState {
    /// No live registration; try at `retry_at`.
    Unregistered { retry_at: Instant },
    /// Registered under `lease`; renew at `renew_at`. etcd drops the key at
    /// `expires_at` unless renewed.
    Registered {
        lease: LeaseId,
        renew_at: Instant,
        expires_at: Instant,
    },
}

/// What the keeper wants done now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeeperStep {
    /// Grant a lease and put the registration under it; report with
    /// [`LeaseKeeper::registered`] or [`LeaseKeeper::failed`].
    Register,
    /// Renew this lease; report with [`LeaseKeeper::renewed`] or
    /// [`LeaseKeeper::failed`].
    KeepAlive(LeaseId),
    /// Nothing until [`LeaseKeeper::next_wakeup`].
    Wait,
}

impl LeaseKeeper {
    /// A keeper that registers at once, with leases of `ttl`.
    pub fn new(ttl: Duration, now: Instant) -> LeaseKeeper {
        LeaseKeeper {
            ttl: ttl.max(Duration::from_secs(1)),
            state: KeeperState::Unregistered { retry_at: now },
        }
    }

    pub fn poll(&self, now: Instant) -> KeeperStep {
        match self.state {
            KeeperState::Unregistered { retry_at } if now >= retry_at => KeeperStep::Register,
            KeeperState::Registered {
                lease, renew_at, ..
            } if now >= renew_at => KeeperStep::KeepAlive(lease),
            _ => KeeperStep::Wait,
        }
    }

    /// When [`poll`](LeaseKeeper::poll) will next ask for something.
    pub fn next_wakeup(&self) -> Instant {
        match self.state {
            KeeperState::Unregistered { retry_at } => retry_at,
            KeeperState::Registered { renew_at, .. } => renew_at,
        }
    }

    /// The registration was stored under `lease`.
    pub fn registered(&mut self, now: Instant, lease: LeaseId) {
        self.state = KeeperState::Registered {
            lease,
            renew_at: now + self.ttl / 3,
            expires_at: now + self.ttl,
        };
    }

    /// etcd answered a renewal: `Some(ttl)` if the lease lives on, `None`
    /// if it no longer knows the lease (the key is gone with it).
    pub fn renewed(&mut self, now: Instant, ttl: Option<Duration>) {
        match (ttl, self.state) {
            (Some(ttl), KeeperState::Registered { lease, .. }) => {
                self.state = KeeperState::Registered {
                    lease,
                    renew_at: now + ttl / 3,
                    expires_at: now + ttl,
                };
            }
            _ => self.state = KeeperState::Unregistered { retry_at: now },
        }
    }

    /// The store did not answer.
    pub fn failed(&mut self, now: Instant) {
        let retry_at = now + RETRY_INTERVAL;
        self.state = match self.state {
            KeeperState::Registered {
                lease, expires_at, ..
            } if now < expires_at => KeeperState::Registered {
                lease,
                renew_at: retry_at,
                expires_at,
            },
            _ => KeeperState::Unregistered { retry_at },
        };
    }

    /// The lease the registration lives under, while it surely lives.
    pub fn lease(&self, now: Instant) -> Option<LeaseId> {
        match self.state {
            KeeperState::Registered {
                lease, expires_at, ..
            } if now < expires_at => Some(lease),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;

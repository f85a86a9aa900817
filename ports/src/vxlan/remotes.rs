//! The tunnel's own table: which remote tunnel endpoint (VTEP) each MAC is
//! behind, who may send to us, and where floods go. Pure: frames' addresses
//! and the time in, verdicts out; the socket is in [`super::socket`].
//!
//! # The kernel's model
//!
//! The switch sees the tunnel as one port: its MAC table learns every
//! remote MAC on it, as a Linux bridge learns them on a `vxlan` device.
//! Which host a MAC is behind is the tunnel's business, as in the vxlan
//! device's own fdb:
//!
//! - **learning**: the inner source MAC of a frame that arrives from a
//!   member is put behind that member's endpoint (its registered address
//!   and port: the outer source port is a flow hash, RFC 7348 §5, not
//!   where the member listens);
//! - **unicast** to a learned MAC goes to its endpoint alone;
//! - **broadcast, multicast and unknown unicast** go to every member: the
//!   head-end replication a vxlan device does with one
//!   `bridge fdb append 00:00:00:00:00:00 dev vx0 dst IP` per remote.
//!
//! # Members only
//!
//! VXLAN has no authentication: anyone who reaches the port can inject
//! frames. So a datagram is taken only from an address in the member list
//! (the switches registered for the network and its peers) and with the
//! network's VNI; the rest are dropped and counted by reason. A member that
//! leaves takes its MACs with it ([`RemoteTable::remove_member`]), so
//! nothing is sent to a dead host once it is gone.
//!
//! # MACs a member registered
//!
//! A switch lists its local MACs in its registration, so the others can
//! put them behind it before its first frame, as flannel writes one
//! permanent fdb entry per remote MAC ([`RemoteTable::set_registered`]).
//! Such an entry does not age: it lasts while the registration lists it
//! and its member stays. Traffic wins over it: a frame from the MAC puts
//! it behind the member that sent it (a learned entry, which ages), and a
//! registration never moves or refreshes a learned entry.
//!
//! # Switches and peers: who checks the inner checksums
//!
//! A member is another tapswitch switch or a peer (a host with a kernel
//! `vxlan` device). A switch sends every datagram with a UDP checksum,
//! which covers the VXLAN header and the whole inner frame; the receiving
//! kernel verifies it before the tunnel reads a byte. So between switches
//! an inner TCP segment may cross with its checksum left partial (the
//! pseudo-header sum, as a stack leaves it for the NIC): the receiving
//! tunnel hands it on with `NEEDS_CSUM`, or joins it into a super-frame,
//! without a pass over the data. A kernel vxlan device sends without UDP
//! checksums by default (`udpcsum` off on IPv4) and may take inner
//! checksums as they come, so a peer gets full ones and its frames are
//! checked as before. The control plane says which members are switches
//! ([`RemoteTable::set_switches`]); an address with a peer on it is never
//! taken for a switch.
//!
//! # Aging and capacity
//!
//! Learned entries age like the switch's own table (300 s by default, as
//! Linux's vxlan `ageing`); an expired entry is absent at lookup, before
//! any sweep.
//! The table refuses new MACs once full (Linux's `fdb_max_learned` rule)
//! and floods to them instead, which is correct, only wasteful.
//!
//! # Addresses that stay home
//!
//! Every host of an overlay network has a gateway with the same address
//! and the same MAC, answering its own containers. Frames from that MAC
//! are never sent into the tunnel and never taken from it, so one host's
//! gateway never answers another host's containers.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::wire::MacAddr;

/// Entries not refreshed for this long are gone (Linux's vxlan default).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// The most remote MACs the tunnel remembers.
pub const DEFAULT_CAPACITY: usize = 16_384;

/// Where a frame leaves the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destinations {
    /// A known MAC: its endpoint only.
    One(SocketAddr),
    /// Broadcast, multicast or unknown unicast: every member.
    Flood(Vec<SocketAddr>),
    /// Not sent at all, and why.
    Nowhere(DropReason),
}

/// Why a datagram or a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The outer source address is not a member of the network.
    NotMember,
    /// Another VNI, or the I flag unset.
    WrongVni,
    /// Shorter than a VXLAN header and an Ethernet header.
    Malformed,
    /// From (or, outbound, to the tunnel from) the gateway's MAC, which
    /// every host has and answers locally.
    LocalOnly,
    /// Outbound with nobody to send to.
    NoMembers,
}

/// The tunnel's counters (read by `tapswitch stats` as `tunnel`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TunnelStats {
    /// Frames decapsulated and handed to the switch.
    pub rx_frames: u64,
    /// Datagrams sent: one per unicast frame, one per member for a flood.
    pub tx_datagrams: u64,
    /// Frames that went to every member (head-end replication).
    pub tx_floods: u64,
    /// Datagrams the socket refused.
    pub tx_errors: u64,
    /// Datagrams from an address that is not a member.
    pub rx_dropped_not_member: u64,
    /// Datagrams with another VNI (or without the VNI flag).
    pub rx_dropped_wrong_vni: u64,
    /// Datagrams too short to hold a frame.
    pub rx_dropped_malformed: u64,
    /// Frames from the gateway's MAC, either way.
    pub dropped_local_only: u64,
    /// Frames not sent because the network has no other member yet.
    pub tx_dropped_no_members: u64,
    /// Remote MACs learned, and refused because the table was full.
    pub learned: u64,
    pub refused: u64,
    /// Remote MACs forgotten because their member left.
    pub flushed: u64,
    /// Remote MACs put behind a member from its registration (before, or
    /// without, a frame from them).
    pub registered: u64,
}

/// One learned MAC, as `fdb` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteEntry {
    pub mac: MacAddr,
    pub endpoint: SocketAddr,
    /// Since the MAC was last heard (or registered).
    pub age: Duration,
    /// Taken from the member's registration, not from its traffic.
    pub registered: bool,
}

/// What [`RemoteTable::set_registered`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisteredChange {
    /// MACs now behind the member that were not known there.
    pub added: Vec<MacAddr>,
    /// Registered MACs behind the member that its registration no longer lists.
    pub removed: Vec<MacAddr>,
}

#[derive(Debug, Clone, Copy)]
struct Learned {
    endpoint: SocketAddr,
    last_seen: Instant,
    /// From a registration: never ages, yields to traffic.
    registered: bool,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RemoteTable {
    vni: u32,
    members: BTreeSet<SocketAddr>,
    /// The members that are switches (see "Switches and peers").
    switches: BTreeSet<SocketAddr>,
    macs: HashMap<MacAddr, Learned>,
    local_only: BTreeSet<MacAddr>,
    max_age: Duration,
    capacity: usize,
    stats: TunnelStats,
}

impl RemoteTable {
    /// An empty table for the network with `vni`; frames from or to the
    /// `local_only` MACs never cross the tunnel.
    pub fn new(vni: u32, local_only: impl IntoIterator<Item = MacAddr>) -> RemoteTable {
        RemoteTable {
            vni,
            members: BTreeSet::new(),
            switches: BTreeSet::new(),
            macs: HashMap::new(),
            local_only: local_only.into_iter().collect(),
            max_age: DEFAULT_MAX_AGE,
            capacity: DEFAULT_CAPACITY,
            stats: TunnelStats::default(),
        }
    }

    /// The same with another aging time and capacity.
    pub fn with_limits(mut self, max_age: Duration, capacity: usize) -> RemoteTable {
        self.max_age = max_age;
        self.capacity = capacity;
        self
    }

    pub fn vni(&self) -> u32 {
        self.vni
    }

    // Members

    /// Floods go to `endpoint` from now on, and its VXLAN is accepted.
    pub fn add_member(&mut self, endpoint: SocketAddr) -> bool {
        self.members.insert(endpoint)
    }

    /// `endpoint` left: no more floods to it, its VXLAN is refused, and the
    /// MACs behind it are forgotten. Returns those MACs (the switch's own
    /// table forgets them too).
    pub fn remove_member(&mut self, endpoint: SocketAddr) -> Vec<MacAddr> {
        self.members.remove(&endpoint);
        self.flush_behind(endpoint)
    }

    /// Forgets every MAC learned behind `endpoint`; returns them.
    pub fn flush_behind(&mut self, endpoint: SocketAddr) -> Vec<MacAddr> {
        let gone: Vec<MacAddr> = self
            .macs
            .iter()
            .filter(|(_, learned)| learned.endpoint == endpoint)
            .map(|(mac, _)| *mac)
            .collect();
        for mac in &gone {
            self.macs.remove(mac);
        }
        self.stats.flushed += gone.len() as u64;
        gone
    }

    /// Makes `switches` the endpoints known to be tapswitch switches (the
    /// other members are peers); only members count.
    pub fn set_switches(&mut self, switches: impl IntoIterator<Item = SocketAddr>) {
        self.switches = switches.into_iter().collect();
    }

    /// Whether every endpoint is a member known to be a switch (frames to
    /// them may leave with partial TCP checksums).
    pub fn are_switches(&self, endpoints: &[SocketAddr]) -> bool {
        !endpoints.is_empty()
            && endpoints
                .iter()
                .all(|e| self.switches.contains(e) && self.members.contains(e))
    }

    /// Whether datagrams from `ip` come from a switch: a member is there,
    /// and every member there is a switch (their UDP checksums were
    /// verified on arrival, so their inner checksums need not be).
    pub fn is_switch_at(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let mut there = self.members.iter().filter(|m| m.ip() == ip).peekable();
        there.peek().is_some() && there.all(|m| self.switches.contains(m))
    }

    pub fn members(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.members.iter().copied()
    }

    /// The member at underlay address `ip`, whatever port it sends from.
    fn member_at(&self, ip: IpAddr) -> Option<SocketAddr> {
        self.members
            .iter()
            .find(|m| m.ip() == ip.to_canonical())
            .copied()
    }

    // Receiving

    /// Judges a datagram from `source` whose UDP payload is `datagram`:
    /// `Ok(offset)` of the inner frame if it is taken (and its source MAC
    /// learned behind the member), else why it is dropped (counted).
    pub fn receive(
        &mut self,
        source: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<usize, DropReason> {
        let verdict = self.judge(source, datagram, now);
        match verdict {
            Ok(_) => self.stats.rx_frames += 1,
            Err(DropReason::NotMember) => self.stats.rx_dropped_not_member += 1,
            Err(DropReason::WrongVni) => self.stats.rx_dropped_wrong_vni += 1,
            Err(DropReason::Malformed) => self.stats.rx_dropped_malformed += 1,
            Err(DropReason::LocalOnly) => self.stats.dropped_local_only += 1,
            Err(DropReason::NoMembers) => {}
        }
        verdict
    }

    /// Judges a datagram that came in one message right after `previous`,
    /// which [`RemoteTable::receive`] took (so from the same source, at the
    /// same moment): with the same VXLAN header and inner source MAC its
    /// verdict is the same, given without the lookups (`None`: judge it
    /// with `receive`). A run of one flow's segments is 45 such datagrams.
    pub fn receive_like(&mut self, previous: &[u8], datagram: &[u8]) -> Option<usize> {
        const HEADER: usize = crate::wire::vxlan::HEADER_LEN;
        const SOURCE: std::ops::Range<usize> = HEADER + 6..HEADER + 12;
        let same = datagram.len() >= HEADER + crate::wire::ethernet::HEADER_LEN
            && previous.len() >= SOURCE.end
            && datagram[..HEADER] == previous[..HEADER]
            && datagram[SOURCE] == previous[SOURCE];
        if !same {
            return None;
        }
        self.stats.rx_frames += 1;
        Some(HEADER)
    }

    fn judge(
        &mut self,
        source: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<usize, DropReason> {
        // Membership first: a stranger's bytes are not even parsed.
        let member = self.member_at(source.ip()).ok_or(DropReason::NotMember)?;
        let header =
            crate::wire::vxlan::Packet::new_checked(datagram).map_err(|_| DropReason::Malformed)?;
        if !header.has_vni() || header.vni() != self.vni {
            return Err(DropReason::WrongVni);
        }
        let frame = crate::wire::ethernet::Frame::new_checked(header.payload())
            .map_err(|_| DropReason::Malformed)?;
        let src = frame.src_addr();
        if self.local_only.contains(&src) {
            return Err(DropReason::LocalOnly);
        }
        if !src.is_group() && !src.is_zero() {
            self.learn(src, member, now);
        }
        Ok(crate::wire::vxlan::HEADER_LEN)
    }

    fn learn(&mut self, mac: MacAddr, endpoint: SocketAddr, now: Instant) {
        let live = self.macs.len();
        match self.macs.get_mut(&mac) {
            Some(learned) => {
                learned.endpoint = endpoint;
                learned.last_seen = now;
                learned.registered = false;
            }
            None if live >= self.capacity => {
                self.expire(now);
                if self.macs.len() >= self.capacity {
                    self.stats.refused += 1;
                    return;
                }
                self.insert(mac, endpoint, now);
            }
            None => self.insert(mac, endpoint, now),
        }
    }

    fn insert(&mut self, mac: MacAddr, endpoint: SocketAddr, now: Instant) {
        self.macs.insert(
            mac,
            Learned {
                endpoint,
                last_seen: now,
                registered: false,
            },
        );
        self.stats.learned += 1;
    }

    // Registered MACs

    /// Makes `macs` (what member `endpoint`'s registration lists) the MACs
    /// registered behind it: new ones are put behind it unless traffic put
    /// them elsewhere, is local-only or the table is full; registered
    /// entries behind it that are no longer listed go. Nothing happens for
    /// an endpoint that is no member.
    pub fn set_registered(
        &mut self,
        endpoint: SocketAddr,
        macs: &[MacAddr],
        now: Instant,
    ) -> RegisteredChange {
        let mut change = RegisteredChange::default();
        if !self.members.contains(&endpoint) {
            return change;
        }
        let listed: BTreeSet<MacAddr> = macs
            .iter()
            .copied()
            .filter(|mac| !mac.is_group() && !mac.is_zero() && !self.local_only.contains(mac))
            .collect();
        self.macs.retain(|mac, learned| {
            let stale = learned.registered && learned.endpoint == endpoint && !listed.contains(mac);
            if stale {
                change.removed.push(*mac);
            }
            !stale
        });
        for mac in listed {
            let heard = self
                .macs
                .get(&mac)
                .is_some_and(|l| !l.registered && self.is_fresh(l, now));
            let here = self
                .macs
                .get(&mac)
                .is_some_and(|l| l.registered && l.endpoint == endpoint);
            if heard || here {
                continue;
            }
            if !self.macs.contains_key(&mac) && self.macs.len() >= self.capacity {
                self.stats.refused += 1;
                continue;
            }
            self.macs.insert(
                mac,
                Learned {
                    endpoint,
                    last_seen: now,
                    registered: true,
                },
            );
            self.stats.registered += 1;
            change.added.push(mac);
        }
        change.removed.sort();
        change
    }

    fn is_fresh(&self, learned: &Learned, now: Instant) -> bool {
        learned.registered || now.saturating_duration_since(learned.last_seen) < self.max_age
    }

    // Sending

    /// Where a frame with these addresses goes.
    pub fn destinations(&mut self, dst: MacAddr, src: MacAddr, now: Instant) -> Destinations {
        if self.local_only.contains(&src) {
            self.stats.dropped_local_only += 1;
            return Destinations::Nowhere(DropReason::LocalOnly);
        }
        if !dst.is_group()
            && let Some(endpoint) = self.lookup(dst, now)
        {
            return Destinations::One(endpoint);
        }
        if self.members.is_empty() {
            self.stats.tx_dropped_no_members += 1;
            return Destinations::Nowhere(DropReason::NoMembers);
        }
        self.stats.tx_floods += 1;
        Destinations::Flood(self.members.iter().copied().collect())
    }

    /// The endpoint `mac` is behind, unless it expired (or its member left).
    pub fn lookup(&self, mac: MacAddr, now: Instant) -> Option<SocketAddr> {
        let learned = self.macs.get(&mac)?;
        (self.is_fresh(learned, now) && self.members.contains(&learned.endpoint))
            .then_some(learned.endpoint)
    }

    /// Counts datagrams handed to the socket, and those it refused.
    pub fn count_sent(&mut self, sent: u64, failed: u64) {
        self.stats.tx_datagrams += sent;
        self.stats.tx_errors += failed;
    }

    // Aging and reading

    /// Forgets expired entries; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.macs.len();
        let max_age = self.max_age;
        self.macs
            .retain(|_, l| l.registered || now.saturating_duration_since(l.last_seen) < max_age);
        before - self.macs.len()
    }

    /// The live entries, by MAC.
    pub fn entries(&self, now: Instant) -> Vec<RemoteEntry> {
        let mut entries: Vec<RemoteEntry> = self
            .macs
            .iter()
            .filter(|(mac, _)| self.lookup(**mac, now).is_some())
            .map(|(mac, l)| RemoteEntry {
                mac: *mac,
                endpoint: l.endpoint,
                age: now.saturating_duration_since(l.last_seen),
                registered: l.registered,
            })
            .collect();
        entries.sort_by_key(|e| e.mac);
        entries
    }

    pub fn stats(&self) -> TunnelStats {
        self.stats
    }
}

#[cfg(test)]
#[path = "registered_tests.rs"]
mod registered_tests;

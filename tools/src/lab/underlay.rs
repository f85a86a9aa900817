//! The lab's VXLAN tunnel port: a capture of the underlay in, the underlay
//! frames the switch sends out, so cross-host behaviour has golden tests.
//!
//! What to accept, what to learn and where to send is decided by the live
//! tunnel's own [`RemoteTable`] (members only, the network's VNI, MAC ->
//! endpoint learning from the outer source, head-end replication), and the
//! VXLAN header is the live tunnel's ([`vxlan::header`]). This module only
//! stands in for what the kernel does around the live tunnel's UDP socket,
//! on an IPv4 or an IPv6 underlay (the local endpoint's version; the
//! members are of the same one, as one socket reaches only those):
//!
//! - **receiving**: an underlay frame reaches the tunnel only if it is an
//!   unfragmented UDP datagram to the local endpoint (address and port),
//!   of its IP version, with right checksums, as the kernel delivers to a
//!   bound socket; anything else is dropped as `not-vxlan` ([`outer`]);
//! - **sending**: each datagram the tunnel sends becomes one underlay frame
//!   with the outer headers a Linux UDP socket writes (IPv4: TTL 64,
//!   identification 0, Don't Fragment; IPv6: hop limit 64, flow label 0),
//!   UDP from the local port (the live tunnel sends from its bound socket)
//!   with its checksum. The underlay's Ethernet addresses are made up and
//!   fixed ([`UNDERLAY_LOCAL_MAC`] to [`UNDERLAY_NEXT_HOP_MAC`]): the lab
//!   has no ARP or neighbour discovery on the underlay.
//!
//! The table's clock is the capture's: virtual nanoseconds added to one
//! `std::time::Instant` taken at the start, so aging depends on the
//! frames only.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ports::vxlan::{Destinations, DropReason, RemoteEntry, RemoteTable, TunnelStats};
use ports::wire::{ethernet, vxlan};
use ports::{PortTx, VnetHdr};
use switch::fabric::TraceSink;
use switch::{Instant, MacAddr};

/// The source MAC of every underlay frame the lab's tunnel sends.
pub const UNDERLAY_LOCAL_MAC: MacAddr = MacAddr([0x02, 0x54, 0x53, 0x00, 0x00, 0x01]);
/// Their destination MAC (the next hop towards every member).
pub const UNDERLAY_NEXT_HOP_MAC: MacAddr = MacAddr([0x02, 0x54, 0x53, 0x00, 0x00, 0x02]);

mod outer;
use outer::{datagram_to, underlay_frame};

/// `--vxlan`: the tunnel port's endpoint, network and members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    /// The port's name (one of [`super::playback::LabConfig::ports`]).
    pub port: String,
    /// This host's underlay address (IPv4 or IPv6) and VXLAN port.
    pub local: SocketAddr,
    pub vni: u32,
    /// The other hosts of the network, of `local`'s IP version.
    pub members: Vec<SocketAddr>,
}

/// What a tunnel did in a run, for the summary.
#[derive(Debug, Clone)]
pub struct ReplayTunnelReport {
    pub local: SocketAddr,
    pub vni: u32,
    pub members: Vec<SocketAddr>,
    pub stats: TunnelStats,
    /// Underlay frames dropped on the way in, by reason name.
    pub rx_drops: BTreeMap<&'static str, u64>,
    /// Frames the switch sent to the tunnel that went nowhere, by reason.
    pub tx_drops: BTreeMap<&'static str, u64>,
    /// The remote MACs and the member each is behind, at the end.
    pub entries: Vec<RemoteEntry>,
}

/// The tunnel: the shared table, and the drops counted by reason.
#[derive(Debug)]
pub struct LabTunnel {
    local: SocketAddr,
    header: [u8; vxlan::HEADER_LEN],
    epoch: std::time::Instant,
    table: Mutex<RemoteTable>,
    drops: Mutex<Drops>,
}

#[derive(Debug, Default)]
struct Drops {
    rx: BTreeMap<&'static str, u64>,
    tx: BTreeMap<&'static str, u64>,
}

/// The reason names of the summary (the live tunnel's `stats` words, hyphenated).
fn reason_name(reason: DropReason) -> &'static str {
    match reason {
        DropReason::NotMember => "not-member",
        DropReason::WrongVni => "wrong-vni",
        DropReason::Malformed => "malformed-vxlan",
        DropReason::LocalOnly => "local-only",
        DropReason::NoMembers => "no-members",
    }
}

/// Underlay frames that are not VXLAN to the local endpoint.
pub const NOT_VXLAN: &str = "not-vxlan";

impl LabTunnel {
    /// A tunnel with `spec`'s members; frames from or to `local_only` (the
    /// gateway's MAC) never cross; remote MACs age after `max_age` (`None`:
    /// never) and at most `capacity` are kept.
    pub fn new(
        spec: &TunnelSpec,
        local_only: impl IntoIterator<Item = MacAddr>,
        max_age: Option<Duration>,
        capacity: usize,
    ) -> LabTunnel {
        let mut table = RemoteTable::new(spec.vni, local_only)
            .with_limits(max_age.unwrap_or(Duration::MAX), capacity);
        for member in &spec.members {
            table.add_member(*member);
        }
        LabTunnel {
            local: spec.local,
            header: vxlan::header(spec.vni),
            epoch: std::time::Instant::now(),
            table: Mutex::new(table),
            drops: Mutex::default(),
        }
    }

    fn table(&self) -> MutexGuard<'_, RemoteTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, rx: bool, reason: &'static str) {
        let mut drops = self.drops.lock().unwrap_or_else(PoisonError::into_inner);
        let map = if rx { &mut drops.rx } else { &mut drops.tx };
        *map.entry(reason).or_default() += 1;
    }

    /// The table's clock for virtual time `now`.
    fn clock(&self, now: Instant) -> std::time::Instant {
        self.epoch + Duration::from_nanos(now.as_nanos())
    }

    /// Takes an underlay frame: where its inner frame lies, or why it is
    /// dropped (counted).
    pub fn receive(&self, underlay: &[u8], now: Instant) -> Result<Range<usize>, Refused> {
        let Some((source, datagram)) = datagram_to(self.local, underlay) else {
            self.count(true, NOT_VXLAN);
            return Err(Refused {
                source: None,
                len: underlay.len(),
                reason: NOT_VXLAN,
            });
        };
        let verdict = self
            .table()
            .receive(source, &underlay[datagram.clone()], self.clock(now));
        match verdict {
            Ok(offset) => Ok(datagram.start + offset..datagram.end),
            Err(reason) => {
                self.count(true, reason_name(reason));
                Err(Refused {
                    source: Some(source),
                    len: underlay.len(),
                    reason: reason_name(reason),
                })
            }
        }
    }

    /// The underlay frames that carry `frame`: one for a known MAC, one per
    /// member for a flood, none when the table says nowhere (counted, and
    /// the reason returned).
    pub fn encapsulate(
        &self,
        frame: &[u8],
        now: Instant,
        mut emit: impl FnMut(&[u8]),
    ) -> Result<(), &'static str> {
        let Ok(ethernet) = ethernet::Frame::new_checked(frame) else {
            // The fabric sends no runts; the live tunnel skips them too.
            return Ok(());
        };
        let destinations =
            self.table()
                .destinations(ethernet.dst_addr(), ethernet.src_addr(), self.clock(now));
        let endpoints = match destinations {
            Destinations::One(endpoint) => vec![endpoint],
            Destinations::Flood(endpoints) => endpoints,
            Destinations::Nowhere(reason) => {
                self.count(false, reason_name(reason));
                return Err(reason_name(reason));
            }
        };
        let mut underlay = Vec::new();
        let mut sent = 0;
        for endpoint in &endpoints {
            // Every member is of the local endpoint's version (the spec's
            // and those heard from are); a socket could reach no other.
            if underlay_frame(&mut underlay, self.local, *endpoint, &self.header, frame) {
                emit(&underlay);
                sent += 1;
            }
        }
        self.table().count_sent(sent, 0);
        Ok(())
    }

    /// The counters and remote MACs at virtual time `now`.
    pub fn report(&self, now: Instant) -> ReplayTunnelReport {
        let table = self.table();
        let drops = self.drops.lock().unwrap_or_else(PoisonError::into_inner);
        ReplayTunnelReport {
            local: self.local,
            vni: table.vni(),
            members: table.members().collect(),
            stats: table.stats(),
            rx_drops: drops.rx.clone(),
            tx_drops: drops.tx.clone(),
            entries: table.entries(self.clock(now)),
        }
    }
}

/// An underlay frame the tunnel did not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The outer source, when it was a datagram to the tunnel's endpoint.
    pub source: Option<SocketAddr>,
    /// The underlay frame's length.
    pub len: usize,
    /// The reason's name, as the summary counts it.
    pub reason: &'static str,
}

/// As a trace line says it, after the time and the port.
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.source {
            Some(source) => write!(f, "vxlan from {source} len {}", self.len)?,
            None => write!(f, "underlay frame len {}", self.len)?,
        }
        write!(f, ": dropped by the tunnel ({})", self.reason)
    }
}

/// The tunnel port's transmit side: each frame the switch sends becomes the
/// underlay frames the tunnel would send, written to `wire` (the port's
/// output file) at the virtual time in `clock`. A frame the tunnel sends
/// nowhere gets a line on `trace`, named `port`.
pub struct UnderlayTx {
    pub tunnel: Arc<LabTunnel>,
    pub wire: Arc<dyn PortTx>,
    pub clock: Arc<AtomicU64>,
    pub port: String,
    pub trace: Option<Arc<TraceSink>>,
}

impl std::fmt::Debug for UnderlayTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnderlayTx")
            .field("tunnel", &self.tunnel)
            .field("port", &self.port)
            .field("trace", &self.trace.is_some())
            .finish_non_exhaustive()
    }
}

impl PortTx for UnderlayTx {
    fn send(&self, _vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        let now = Instant::from_nanos(self.clock.load(Relaxed));
        let mut result = Ok(());
        let sent = self.tunnel.encapsulate(frame, now, |underlay| {
            if result.is_ok() {
                result = self.wire.send(&VnetHdr::default(), underlay);
            }
        });
        if let (Err(reason), Some(trace), Ok(ethernet)) =
            (sent, &self.trace, ethernet::Frame::new_checked(frame))
        {
            trace(&format!(
                "t={now} {}: {} > {} len {}: not sent into the tunnel ({reason})",
                self.port,
                ethernet.src_addr(),
                ethernet.dst_addr(),
                frame.len()
            ));
        }
        result
    }

    fn offloads(&self) -> bool {
        false
    }

    fn mtu(&self) -> usize {
        self.wire.mtu()
    }
}

#[cfg(test)]
mod tests;

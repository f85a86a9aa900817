//! The forwarding decision: one frame in, one verdict out.
//!
//! This is the whole of what a learning bridge decides, in the order the
//! Linux bridge decides it (`br_handle_frame`, `br_handle_frame_finish`):
//!
//! 1. A frame shorter than an Ethernet header is dropped.
//! 2. A frame whose source is a group or all-zero address is dropped: no
//!    host sends from one, and learning it would be poison.
//! 3. Pause frames (01:80:C2:00:00:01) are dropped before anything else.
//! 4. The source is learned on the ingress port (moved, if it was elsewhere).
//!    A frame claiming the switch's own address as its source is a spoof.
//!    A source an operator pinned to another port (a static entry, `fdb
//!    add`) is not moved, and the frame goes on as any other: the entry is
//!    the operator's word, and a spoofed frame must not take it over (as
//!    Linux's `static sticky`; its plain `static` would move, see
//!    `mac_table::static_entries`).
//! 5. Other IEEE link-local destinations, 01:80:C2:00:00:02–0F (LACP,
//!    802.1X, LLDP, ...), are never forwarded. 01:80:C2:00:00:00 (STP BPDUs)
//!    floods like any multicast, as on a Linux bridge with STP off: this
//!    switch runs no STP, so swallowing BPDUs would hide loops from switches
//!    that do.
//! 6. Broadcast and multicast flood; a known unicast destination goes to its
//!    port, or is dropped if that is the ingress port (no hairpin); an
//!    unknown unicast destination floods.
//!
//! "Flood" means every port but the ingress port; the caller owns the list of
//! ports. The gateway is a port like any other (its MAC is a local entry), so
//! there is no special case for it here.
//!
//! The engine does no I/O and reads no clock. Worker threads share one
//! `Engine`; each takes a [`Session`] per batch of frames so the MAC table's
//! read lock is taken once per batch, not once per frame.

use ports::wire::ethernet;

use crate::mac::MacAddr;
use crate::mac_table::{EntryKind, Learn, MacTable, TableConfig, TableView};
use crate::port::PortId;
use crate::stats::DropReason;
use crate::time::Instant;

/// Destination and source addresses plus the EtherType.
pub const ETHERNET_HEADER_LEN: usize = ethernet::HEADER_LEN;

/// IEEE 802.3x pause frames: never learned from, never forwarded.
const PAUSE: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x01]);

/// The STP bridge group address, flooded because no STP runs here.
const STP_GROUP: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x00]);

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it out of this one port.
    Forward(PortId),
    /// Send it out of every port but the ingress port.
    Flood(FloodReason),
    /// Send it nowhere.
    Drop(DropReason),
}

/// Why a frame floods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodReason {
    Broadcast,
    Multicast,
    /// Unicast to an address the table does not know (or has aged out).
    UnknownUnicast,
}

/// The decision on one frame and what learning did on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// `None` when the frame was dropped before learning.
    pub learn: Option<Learn>,
    pub action: Action,
}

/// The learning switch's brain: the MAC table and the rules above.
#[derive(Debug)]
pub struct Engine {
    table: MacTable,
}

impl Engine {
    pub fn new(config: TableConfig) -> Self {
        Engine {
            table: MacTable::new(config),
        }
    }

    /// An engine whose table publishes its events to `events`.
    pub fn with_events(config: TableConfig, events: crate::events::EventBus) -> Self {
        Engine {
            table: MacTable::with_events(config, events),
        }
    }

    pub fn table(&self) -> &MacTable {
        &self.table
    }

    /// Makes `mac` the switch's own address on `port` (the gateway's).
    pub fn add_local(&self, mac: MacAddr, port: PortId) {
        self.table.insert_static(mac, port, EntryKind::Local);
    }

    /// A session for a batch of frames (see [`Session`]).
    pub fn session(&self) -> Session<'_> {
        Session {
            view: self.table.view(),
        }
    }

    /// Decides one frame. For many frames in a row, use a [`Session`].
    pub fn handle_frame(&self, now: Instant, ingress: PortId, frame: &[u8]) -> Verdict {
        self.session().handle_frame(now, ingress, frame)
    }
}

/// Decides frames for one batch while holding the MAC table's read lock.
/// Drop it between batches so that writers (sweeps, flushes) get their turn.
#[derive(Debug)]
pub struct Session<'a> {
    view: TableView<'a>,
}

impl Session<'_> {
    pub fn handle_frame(&mut self, now: Instant, ingress: PortId, frame: &[u8]) -> Verdict {
        let Ok(header) = ethernet::Frame::new_checked(frame) else {
            return dropped(MacAddr::ZERO, MacAddr::ZERO, None, DropReason::Runt);
        };
        let (dst, src) = (header.dst_addr(), header.src_addr());

        // No host owns a group or zero address; learning one would send
        // unicast replies into a black hole (br_handle_frame: is_valid_ether_addr).
        if src.is_group() || src.is_zero() {
            return dropped(dst, src, None, DropReason::InvalidSource);
        }
        // Pause frames are flow control between two NICs; Linux drops them
        // before learning.
        if dst == PAUSE {
            return dropped(dst, src, None, DropReason::LinkLocal);
        }

        let learn = self.view.learn(src, ingress, now);
        if learn == Learn::SpoofedLocal {
            return dropped(dst, src, Some(learn), DropReason::SpoofedLocal);
        }
        let verdict = |action| Verdict {
            dst,
            src,
            learn: Some(learn),
            action,
        };

        // Link-local protocols (LACP, 802.1X, LLDP) talk to the next box, not
        // through it; a bridge that forwarded them would confuse both ends.
        if dst.is_link_local() && dst != STP_GROUP {
            return verdict(Action::Drop(DropReason::LinkLocal));
        }
        if dst.is_broadcast() {
            return verdict(Action::Flood(FloodReason::Broadcast));
        }
        if dst.is_group() {
            return verdict(Action::Flood(FloodReason::Multicast));
        }
        match self.view.lookup(dst, now) {
            // Sending a frame back where it came from would duplicate it on
            // that segment (the Linux bridge's default: hairpin off).
            Some(port) if port == ingress => verdict(Action::Drop(DropReason::Hairpin)),
            Some(port) => verdict(Action::Forward(port)),
            None => verdict(Action::Flood(FloodReason::UnknownUnicast)),
        }
    }
}

fn dropped(dst: MacAddr, src: MacAddr, learn: Option<Learn>, reason: DropReason) -> Verdict {
    Verdict {
        dst,
        src,
        learn,
        action: Action::Drop(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);
    const H1: &str = "02:00:00:00:00:01";
    const H2: &str = "02:00:00:00:00:02";

    fn frame(dst: &str, src: &str) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.parse::<MacAddr>().unwrap().0);
        f.extend_from_slice(&src.parse::<MacAddr>().unwrap().0);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0);
        f
    }

    fn engine() -> Engine {
        Engine::new(TableConfig::default().with_ageing_secs(2))
    }

    fn at(secs: u64) -> Instant {
        Instant::from_secs(secs)
    }

    #[test]
    fn unknown_unicast_floods_then_known_unicast_goes_to_one_port() {
        let e = engine();
        let v = e.handle_frame(at(0), P1, &frame(H2, H1));
        assert_eq!(v.action, Action::Flood(FloodReason::UnknownUnicast));
        assert_eq!(v.learn, Some(Learn::New));
        let v = e.handle_frame(at(0), P2, &frame(H1, H2));
        assert_eq!(v.action, Action::Forward(P1));
        let v = e.handle_frame(at(0), P1, &frame(H2, H1));
        assert_eq!(v.action, Action::Forward(P2));
        assert_eq!(v.learn, Some(Learn::Refreshed));
    }

    #[test]
    fn broadcast_and_multicast_flood_even_when_known() {
        let e = engine();
        let v = e.handle_frame(at(0), P1, &frame("ff:ff:ff:ff:ff:ff", H1));
        assert_eq!(v.action, Action::Flood(FloodReason::Broadcast));
        let v = e.handle_frame(at(0), P1, &frame("01:00:5e:00:00:fb", H1));
        assert_eq!(v.action, Action::Flood(FloodReason::Multicast));
    }

    #[test]
    fn a_destination_on_the_ingress_port_is_a_hairpin_drop() {
        let e = engine();
        e.handle_frame(at(0), P1, &frame(H2, H1));
        e.handle_frame(at(0), P1, &frame(H1, H2));
        let v = e.handle_frame(at(0), P1, &frame(H2, H1));
        assert_eq!(v.action, Action::Drop(DropReason::Hairpin));
    }

    #[test]
    fn group_and_zero_sources_are_dropped_and_not_learned() {
        let e = engine();
        for src in [
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
        ] {
            let v = e.handle_frame(at(0), P1, &frame(H2, src));
            assert_eq!(v.action, Action::Drop(DropReason::InvalidSource), "{src}");
            assert_eq!(v.learn, None);
        }
        assert_eq!(e.table().stats().learned, 0);
    }

    #[test]
    fn link_local_destinations_are_never_forwarded() {
        let e = engine();
        for last in 1..=0x0f {
            let dst = format!("01:80:c2:00:00:{last:02x}");
            let v = e.handle_frame(at(0), P1, &frame(&dst, H1));
            assert_eq!(v.action, Action::Drop(DropReason::LinkLocal), "{dst}");
        }
        // LLDP and friends still teach the table the sender (Linux does too);
        // pause frames do not.
        assert_eq!(e.table().lookup(H1.parse().unwrap(), at(0)), Some(P1));
        let v = e.handle_frame(at(0), P2, &frame("01:80:c2:00:00:01", H2));
        assert_eq!(v.learn, None);
    }

    #[test]
    fn stp_bpdus_flood_because_no_stp_runs_here() {
        let e = engine();
        let v = e.handle_frame(at(0), P1, &frame("01:80:c2:00:00:00", H1));
        assert_eq!(v.action, Action::Flood(FloodReason::Multicast));
    }

    #[test]
    fn runts_are_dropped() {
        let e = engine();
        let v = e.handle_frame(at(0), P1, &[0xff; 13]);
        assert_eq!(v.action, Action::Drop(DropReason::Runt));
        assert_eq!(
            e.handle_frame(at(0), P1, &[]).action,
            Action::Drop(DropReason::Runt)
        );
    }

    #[test]
    fn a_moved_host_is_followed() {
        let e = engine();
        e.handle_frame(at(0), P1, &frame(H2, H1));
        let v = e.handle_frame(at(1), P2, &frame("ff:ff:ff:ff:ff:ff", H1));
        assert_eq!(v.learn, Some(Learn::Moved { from: P1 }));
        let v = e.handle_frame(at(1), PortId(3), &frame(H1, H2));
        assert_eq!(v.action, Action::Forward(P2));
    }

    #[test]
    fn an_aged_out_destination_floods_again() {
        let e = engine();
        e.handle_frame(at(0), P1, &frame(H2, H1));
        assert_eq!(
            e.handle_frame(at(1), P2, &frame(H1, H2)).action,
            Action::Forward(P1)
        );
        assert_eq!(
            e.handle_frame(at(3), P2, &frame(H1, H2)).action,
            Action::Flood(FloodReason::UnknownUnicast)
        );
    }

    #[test]
    fn the_gateway_address_is_local_and_cannot_be_spoofed() {
        let e = engine();
        let gw = "02:42:ac:11:00:01";
        e.add_local(gw.parse().unwrap(), PortId::GATEWAY);
        assert_eq!(
            e.handle_frame(at(0), P1, &frame(gw, H1)).action,
            Action::Forward(PortId::GATEWAY)
        );
        let v = e.handle_frame(at(0), P1, &frame(H2, gw));
        assert_eq!(v.action, Action::Drop(DropReason::SpoofedLocal));
        let v = e.handle_frame(at(0), PortId::GATEWAY, &frame(H1, gw));
        assert_eq!(v.action, Action::Forward(P1));
    }

    #[test]
    fn a_static_entry_is_not_moved_by_traffic_and_never_ages() {
        let e = engine();
        let h1: MacAddr = H1.parse().unwrap();
        e.table().add_static(h1, P1).unwrap();
        // H1's address arrives on P2 (spoofed, or a misplaced host): the
        // frame is still forwarded, the entry stays on P1.
        let v = e.handle_frame(at(0), P2, &frame("ff:ff:ff:ff:ff:ff", H1));
        assert_eq!(v.learn, Some(Learn::StaticElsewhere { port: P1 }));
        assert_eq!(v.action, Action::Flood(FloodReason::Broadcast));
        // Long past the ageing time, frames to H1 still go to P1 only.
        let v = e.handle_frame(at(1_000), PortId(3), &frame(H1, H2));
        assert_eq!(v.action, Action::Forward(P1));
    }

    #[test]
    fn a_session_sees_its_own_learning() {
        let e = engine();
        let mut s = e.session();
        s.handle_frame(at(0), P1, &frame(H2, H1));
        assert_eq!(
            s.handle_frame(at(0), P2, &frame(H1, H2)).action,
            Action::Forward(P1)
        );
    }
}

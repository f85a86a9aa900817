//! IPv4 reassembly of the fragments containers send through the gateway,
//! as a kernel router's NAT does before it translates (conntrack needs the
//! ports, a host socket takes whole datagrams): a 4,000-byte UDP datagram
//! on an MTU of 1,500, or a large DNS query, arrives as fragments.
//!
//! # Design
//!
//! - A datagram is identified by source, destination, protocol and
//!   identification (RFC 791). Its fragments are kept as pieces sorted by
//!   offset; it is complete when the last fragment (no MF) has fixed the
//!   length and the pieces cover it (RFC 815's idea, with the holes implied
//!   by the gaps between pieces).
//! - The header of the reassembled packet is the first fragment's (it
//!   alone carries every option, RFC 791), with the total length set and
//!   the fragment fields cleared.
//! - An exact duplicate of a piece (a retransmission) is ignored. Any other
//!   overlap throws the whole datagram away, in the spirit of RFC 5722:
//!   overlapping fragments are how filters are evaded, and no honest
//!   sender makes them. So does a fragment that contradicts the length,
//!   or would make the datagram longer than an IPv4 packet can be.
//! - Bounded: at most [`ReassemblyLimits::max_datagrams`] datagrams and
//!   [`ReassemblyLimits::max_bytes`] bytes of pieces at once, and a
//!   quarter of each per source address; a fragment that would exceed
//!   any of these is refused (Linux refuses above
//!   `ipfrag_high_thresh` too, rather than evicting). A datagram not
//!   complete [`ReassemblyLimits::timeout`] after its first fragment is
//!   forgotten (Linux's `ipfrag_time`, 30 s). Expiry runs whenever a
//!   fragment arrives and on the services' timer
//!   ([`Reassembler::next_deadline`]). The sender of a datagram forgotten
//!   after its first fragment came is sent ICMP "time exceeded: fragment
//!   reassembly" quoting that fragment (RFC 792; Linux does the same).
//! - Every refusal is counted in [`ReassemblyStats`].
//!
//! Pure: the time is an argument, as in the engine.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, Ipv4Packet};

use super::{Output, Services, Verdict, ethernet};
use crate::flows::{IgnoreReason, Ingress, Unreachable, classify_with, unreachable_packet};
use crate::mac::MacAddr;
use crate::time::Instant;

/// The largest IPv4 packet (the total length is 16 bits).
const MAX_PACKET: usize = 65_535;
/// What a piece costs besides its bytes (its entry and its allocation's
/// bookkeeping), counted against the limits: 8-byte fragments must not
/// hold several times the memory the limits say.
const PIECE_OVERHEAD: usize = 64;

/// How much the reassembly table may hold, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Datagrams being reassembled at once.
    pub max_datagrams: usize,
    /// Bytes of fragments held at once, over all datagrams.
    pub max_bytes: usize,
    /// One source's share of either: a container sending fragments that
    /// never complete cannot take the table from the others.
    pub max_datagrams_per_source: usize,
    pub max_bytes_per_source: usize,
    /// How long a datagram may wait for its missing fragments.
    pub timeout: Duration,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_datagrams: 256,
            // Linux's default ipfrag_high_thresh.
            max_bytes: 4 << 20,
            // A quarter of each, as the flow table's per-container limits.
            max_datagrams_per_source: 64,
            max_bytes_per_source: 1 << 20,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What the reassembly table did (shown under `frames.reassembly` in the
/// `services` reply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReassemblyStats {
    /// Datagrams put back together and handed on.
    pub reassembled: u64,
    /// Fragments ignored as exact duplicates of one already held.
    pub duplicates: u64,
    /// Datagrams thrown away for overlapping or contradicting fragments.
    pub overlaps: u64,
    /// Datagrams (or fragments) thrown away for exceeding 65,535 bytes.
    pub too_big: u64,
    /// Fragments refused because the table was full (datagrams or bytes),
    /// or their source's share of it.
    pub over_limits: u64,
    /// Datagrams forgotten incomplete after the timeout.
    pub timed_out: u64,
    /// ICMP "time exceeded: fragment reassembly" sent for them.
    pub time_exceeded_sent: u64,
    /// Fragments with a length that cannot be (not a multiple of 8 bytes
    /// before the last, or an empty one).
    pub malformed: u64,
    /// Reassembled datagrams handed whole to the gateway's own stack
    /// ([`Output::StackFrame`]): a ping larger than the MTU to the
    /// gateway's address, a TCP segment of an open flow.
    pub to_stack: u64,
}

/// One datagram's identity (RFC 791).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DatagramKey {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ident: u16,
}

/// A run of payload bytes, `start..start + data.len()` of the datagram.
#[derive(Debug)]
struct Piece {
    start: usize,
    data: Vec<u8>,
}

impl Piece {
    fn end(&self) -> usize {
        self.start + self.data.len()
    }
}

/// A datagram being put together.
#[derive(Debug)]
struct Partial {
    /// Sorted by `start`, never overlapping.
    pieces: Vec<Piece>,
    /// The first fragment's header, once it came.
    header: Option<Vec<u8>>,
    /// The pieces' bytes together.
    held: usize,
    /// The payload's length, once the last fragment came.
    total: Option<usize>,
    /// Bytes held (headers and pieces), counted against the limit.
    bytes: usize,
    deadline: Instant,
}

/// What one fragment did to its datagram.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Held,
    Complete,
    /// An exact copy of a piece already held: ignored.
    Duplicate,
    /// The fragment overlaps or contradicts the others: the datagram is
    /// thrown away.
    Discard,
}

/// The reassembly table. See the module documentation.
#[derive(Debug, Default)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    partials: HashMap<DatagramKey, Partial>,
    /// Bytes held over all partials.
    bytes: usize,
    /// Per source address with datagrams held: how many, and their bytes.
    sources: HashMap<Ipv4Addr, Share>,
    /// The quotes (first fragment's header and 8 bytes) of datagrams that
    /// timed out, for [`Reassembler::take_timed_out`]. Bounded by the
    /// datagrams the table holds between two takes.
    timed_out: Vec<Vec<u8>>,
    stats: ReassemblyStats,
}

/// What one source holds in the table.
#[derive(Debug, Default, Clone, Copy)]
struct Share {
    datagrams: usize,
    bytes: usize,
}

impl Reassembler {
    pub fn new(limits: ReassemblyLimits) -> Reassembler {
        Reassembler {
            limits,
            ..Reassembler::default()
        }
    }

    pub fn stats(&self) -> &ReassemblyStats {
        &self.stats
    }

    /// Datagrams being reassembled.
    pub fn len(&self) -> usize {
        self.partials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partials.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes one IPv4 fragment (the packet, header checked by the caller);
    /// returns the whole IPv4 packet when this fragment completed it.
    pub fn fragment(&mut self, now: Instant, packet: &[u8]) -> Option<Vec<u8>> {
        self.expire(now);
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        let header_len = usize::from(ip.header_len());
        let payload = packet.get(header_len..usize::from(ip.total_len()))?;
        let start = usize::from(ip.frag_offset());
        let last = !ip.more_frags();
        if payload.is_empty() || (!last && payload.len() % 8 != 0) {
            self.stats.malformed += 1;
            return None;
        }
        let key = DatagramKey {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            protocol: u8::from(ip.next_header()),
            ident: ip.ident(),
        };
        if start + payload.len() + header_len > MAX_PACKET {
            self.stats.too_big += 1;
            self.discard(&key);
            return None;
        }
        let cost = PIECE_OVERHEAD + payload.len() + if start == 0 { header_len } else { 0 };
        let new_datagram = !self.partials.contains_key(&key);
        let share = self.sources.get(&key.src).copied().unwrap_or_default();
        let limits = &self.limits;
        if (new_datagram
            && (self.partials.len() >= limits.max_datagrams
                || share.datagrams >= limits.max_datagrams_per_source))
            || self.bytes + cost > limits.max_bytes
            || share.bytes + cost > limits.max_bytes_per_source
        {
            self.stats.over_limits += 1;
            return None;
        }
        if new_datagram {
            self.sources.entry(key.src).or_default().datagrams += 1;
        }
        let partial = self.partials.entry(key).or_insert_with(|| Partial {
            pieces: Vec::new(),
            header: None,
            held: 0,
            total: None,
            bytes: 0,
            deadline: now + self.limits.timeout,
        });
        let header = (start == 0).then(|| &packet[..header_len]);
        match partial.add(start, payload, last, header) {
            Step::Held => {
                partial.bytes += cost;
                self.bytes += cost;
                self.sources.entry(key.src).or_default().bytes += cost;
                None
            }
            Step::Duplicate => {
                self.stats.duplicates += 1;
                None
            }
            Step::Complete => {
                let partial = self.partials.remove(&key)?;
                self.release(key.src, partial.bytes);
                self.stats.reassembled += 1;
                partial.assemble()
            }
            Step::Discard => {
                self.stats.overlaps += 1;
                self.discard(&key);
                None
            }
        }
    }

    /// Throws a datagram's fragments away.
    fn discard(&mut self, key: &DatagramKey) {
        if let Some(partial) = self.partials.remove(key) {
            self.release(key.src, partial.bytes);
        }
    }

    /// A datagram of `src` holding `bytes` left the table.
    fn release(&mut self, src: Ipv4Addr, bytes: usize) {
        // Saturating: the counts always match, and a mistake must not
        // become a panic on input a container controls.
        self.bytes = self.bytes.saturating_sub(bytes);
        if let Some(share) = self.sources.get_mut(&src) {
            share.datagrams = share.datagrams.saturating_sub(1);
            share.bytes = share.bytes.saturating_sub(bytes);
            if share.datagrams == 0 {
                self.sources.remove(&src);
            }
        }
    }

    /// Forgets the datagrams whose time is up.
    pub fn expire(&mut self, now: Instant) {
        let expired: Vec<DatagramKey> = self
            .partials
            .iter()
            .filter(|(_, partial)| partial.deadline <= now)
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            if let Some(quote) = self.partials.get(&key).and_then(Partial::quote) {
                self.timed_out.push(quote);
            }
            self.discard(&key);
            self.stats.timed_out += 1;
        }
    }

    /// When the next datagram times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.partials.values().map(|p| p.deadline).min()
    }

    /// The quotes of the datagrams timed out since the last call whose
    /// first fragment had come: each is that fragment's header and first
    /// 8 bytes, what an ICMP error quotes.
    pub fn take_timed_out(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.timed_out)
    }
}

impl Partial {
    /// Adds one fragment's payload at `start`.
    fn add(&mut self, start: usize, payload: &[u8], last: bool, header: Option<&[u8]>) -> Step {
        let end = start + payload.len();
        let at = self.pieces.partition_point(|p| p.start < start);
        if self
            .pieces
            .get(at)
            .is_some_and(|p| p.start == start && p.data == payload)
            && (!last || self.total == Some(end))
        {
            return Step::Duplicate;
        }
        if last {
            if self.total.is_some_and(|total| total != end) {
                return Step::Discard;
            }
            self.total = Some(end);
        }
        let beyond_total = self.total.is_some_and(|total| {
            end > total || self.pieces.last().is_some_and(|p| p.end() > total)
        });
        let overlaps_before = at > 0 && self.pieces[at - 1].end() > start;
        let overlaps_after = self.pieces.get(at).is_some_and(|p| p.start < end);
        if beyond_total || overlaps_before || overlaps_after {
            return Step::Discard;
        }
        self.pieces.insert(
            at,
            Piece {
                start,
                data: payload.to_vec(),
            },
        );
        self.held += payload.len();
        if let Some(header) = header {
            self.header = Some(header.to_vec());
        }
        if self.is_complete() {
            Step::Complete
        } else {
            Step::Held
        }
    }

    /// The first fragment's header and first 8 bytes of payload, if it
    /// came.
    fn quote(&self) -> Option<Vec<u8>> {
        let mut quote = self.header.clone()?;
        let first = self.pieces.first().filter(|p| p.start == 0)?;
        quote.extend_from_slice(&first.data[..first.data.len().min(8)]);
        Some(quote)
    }

    /// The pieces never overlap and all lie before the total: they cover
    /// it exactly when their lengths add up to it.
    fn is_complete(&self) -> bool {
        self.header.is_some() && self.total == Some(self.held)
    }

    /// The whole packet: the first fragment's header, fragment fields
    /// cleared, then the pieces in order.
    fn assemble(self) -> Option<Vec<u8>> {
        let header = self.header?;
        let total = self.total?;
        let mut packet = Vec::with_capacity(header.len() + total);
        packet.extend_from_slice(&header);
        for piece in &self.pieces {
            packet.extend_from_slice(&piece.data);
        }
        let mut view = Ipv4Packet::new_unchecked(&mut packet[..]);
        view.set_total_len(u16::try_from(header.len() + total).ok()?);
        view.set_more_frags(false);
        view.set_frag_offset(0);
        view.fill_checksum();
        Some(packet)
    }
}

impl Services {
    /// Step 0 of [`Services::frame`]: an IPv4 fragment routed out of the
    /// subnet or sent to the gateway's own address (DNS, host loopback, a
    /// ping to the gateway) is held until its datagram is complete, which
    /// then goes through [`Services::frame`] as if it had come
    /// unfragmented. `None`: not such a fragment, the frame goes on.
    pub(super) fn reassemble(
        &mut self,
        now: Instant,
        frame: &[u8],
        random_id: u16,
        out: &mut Vec<Output>,
    ) -> Option<Verdict> {
        if !is_ipv4_fragment(frame) {
            return None;
        }
        let gateway = self.config.gateway;
        let eth = EthernetFrame::new_checked(frame).ok()?;
        let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
        let routed = classify_with(frame, &gateway, self.config.host_loopback)
            == Ingress::Ignore(IgnoreReason::Fragment);
        let to_gateway = ip.dst_addr() == gateway.ip
            && eth.dst_addr().0 == gateway.mac.0
            && ip.verify_checksum();
        if !routed && !to_gateway {
            return None;
        }
        self.stats.fragments += 1;
        // The sender may hear from the gateway before its datagram is whole
        // (time exceeded): its MAC is needed.
        self.learn_neighbor(frame);
        let packet = eth.payload().get(..usize::from(ip.total_len()))?;
        let whole = self.reassembler.fragment(now, packet);
        self.send_time_exceeded(out);
        let Some(whole) = whole else {
            return Some(Verdict::Consumed);
        };
        let whole = ethernet(MacAddr(eth.src_addr().0), gateway.mac, &whole);
        match self.frame(now, &whole, random_id, out) {
            // The caller has only the last fragment: the stack is handed
            // the whole datagram, which may be longer than the MTU. A ping
            // to the gateway gets here (answered in fragments, see
            // `gateway.rs`), UDP to its other ports, and TCP segments of
            // open flows (containers' TCP sets DF, so only a sender
            // ignoring path MTU discovery cuts one).
            Verdict::ToStack => {
                self.reassembler.stats.to_stack += 1;
                out.push(Output::StackFrame(whole));
                Some(Verdict::Consumed)
            }
            verdict => Some(verdict),
        }
    }
}

impl Services {
    /// The reassembly table's timer: datagrams whose time is up are
    /// forgotten, their senders told.
    pub(super) fn reassembly_timers(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.reassembler.expire(now);
        self.send_time_exceeded(out);
    }

    /// ICMP "time exceeded: fragment reassembly" to the sender of each
    /// datagram just timed out (whose first fragment came), from the
    /// gateway.
    fn send_time_exceeded(&mut self, out: &mut Vec<Output>) {
        for quote in self.reassembler.take_timed_out() {
            let Some(packet) = time_exceeded_packet(self.config.gateway.ip, &quote) else {
                continue;
            };
            let sender = Ipv4Packet::new_unchecked(&quote[..]).src_addr();
            self.send_packet(sender, Some(packet), out);
            self.reassembler.stats.time_exceeded_sent += 1;
        }
    }
}

/// ICMP "time exceeded" code 1 (fragment reassembly time exceeded, RFC
/// 792) from `from` about the datagram `quote` began: the destination
/// unreachable's rules and layout (RFC 1122), another type and code.
fn time_exceeded_packet(from: Ipv4Addr, quote: &[u8]) -> Option<Vec<u8>> {
    const TIME_EXCEEDED: u8 = 11;
    const FRAGMENT_REASSEMBLY: u8 = 1;
    let mut packet = unreachable_packet(Unreachable::Prohibited, from, quote)?;
    let header_len = usize::from(Ipv4Packet::new_checked(&packet[..]).ok()?.header_len());
    let mut icmp = Icmpv4Packet::new_checked(packet.get_mut(header_len..)?).ok()?;
    icmp.set_msg_type(Icmpv4Message::from(TIME_EXCEEDED));
    icmp.set_msg_code(FRAGMENT_REASSEMBLY);
    icmp.fill_checksum();
    Some(packet)
}

/// An IPv4 packet with MF or a fragment offset, from the bytes alone (the
/// frame path's common case costs two comparisons).
fn is_ipv4_fragment(frame: &[u8]) -> bool {
    const ETHERTYPE: std::ops::Range<usize> = 12..14;
    const FLAGS_AND_OFFSET: std::ops::Range<usize> = 20..22;
    let ipv4 = u16::from(EthernetProtocol::Ipv4).to_be_bytes();
    frame.get(ETHERTYPE) == Some(&ipv4[..])
        && frame
            .get(FLAGS_AND_OFFSET)
            .is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & 0x3fff != 0)
}

#[cfg(test)]
mod tests;

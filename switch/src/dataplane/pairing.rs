//! Which worker reads a busy port: next to the port it talks to, when
//! they exchange several bulk flows.
//!
//! Under load (reading by port, see `affinity.rs`) each port's frames all
//! go to one lane, its solo lane, read by one worker. Two ports that talk
//! to each other (a TCP sender's port and its receiver's) are read best by
//! the same worker: when the worker writes the sender's segments to the
//! receiver's port, the kernel runs the receiver's stack inside that write,
//! and its acknowledgements land in the receiver's lane at once; if that
//! lane is the same worker's, it forwards them next, on the same thread and
//! CPU, where another worker would have to be woken for every few of them
//! and would take a CPU from the sender or the receiver. On few CPUs that
//! wake-up and that CPU are what streams are short of (measured in
//! docs/PERFORMANCE.md, "A worker per talking pair under load").
//!
//! With a single bulk flow between the two, and ordinary workers, the
//! measurements say the opposite: its acknowledgements, forwarded by another
//! worker, run the sender's stack (which sends the next segments) on the
//! other CPU while the first worker forwards data, and one stream was 5–7 %
//! faster that way. So with ordinary workers the pair shares a worker only
//! when one of the two ports carries several bulk flows. Where workers run
//! at real-time priority, a worker in a conversation keeps it under load
//! (see `affinity.rs`), and then two ports that talk to each other always
//! share one: one real-time thread forwarding both directions, the
//! endpoints on the other CPU, was the fastest arrangement for one stream
//! as for two (docs/PERFORMANCE.md, "A conversation keeps its worker
//! real-time"), where two real-time workers would take every CPU.
//!
//! When a port is steered to read by port, its solo lane is chosen by
//! two numbered rules ([`choose_solo`]), from the ports already read by
//! port that were read lately (the busy ones):
//!
//! 1. A busy port the port sends to, or one that sends to it (in that
//!    order), if the port or that one carries several bulk flows, or if
//!    the two send to each other and workers run at real-time priority:
//!    its solo lane, unless its worker already reads more busy ports than
//!    the least loaded worker plus one. The pair shares a worker; a third
//!    port talking to the pair goes elsewhere, so one worker never takes
//!    every conversation.
//! 2. Otherwise the worker that reads the fewest busy ports; among those,
//!    the port's own solo lane so far (no move without a reason), else the
//!    lowest.
//!
//! Who talks to whom is noted per batch: the port a batch's first unicast
//! frame went to ([`SendsTo`]), one relaxed load per batch, a store only
//! when it changes. Bulk flows are counted from the frames larger than an
//! Ethernet MTU (GSO super-frames: a bulk TCP sender's), by how often such
//! a frame belongs to another flow than the one before ([`BulkFlows`]);
//! a smaller frame costs one comparison. Both live in the port's [`Talk`],
//! which the rules read.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use ports::wire::ethernet::{self, ethertype};
use ports::wire::{ip, ipv4, ipv6};

use crate::port::PortId;

/// Frames larger than this carry bulk data (a GSO super-frame).
const BULK_FRAME: usize = 1518;

/// Changes from one bulk flow to another, in this housekeeping second and
/// the one before, from which a port counts as carrying several.
const SEVERAL_FLOWS: u32 = 4;

/// No port noted yet.
const NOBODY: u32 = u32::MAX;

/// The port a port's frames last went to (unicast), as its readers noted.
#[derive(Debug)]
struct SendsTo(AtomicU32);

impl Default for SendsTo {
    fn default() -> Self {
        SendsTo(AtomicU32::new(NOBODY))
    }
}

impl SendsTo {
    /// A batch of the port's frames went (first) to `to`.
    fn note(&self, to: PortId) {
        if self.0.load(Ordering::Relaxed) != to.0 {
            self.0.store(to.0, Ordering::Relaxed);
        }
    }

    fn get(&self) -> Option<PortId> {
        match self.0.load(Ordering::Relaxed) {
            NOBODY => None,
            id => Some(PortId(id)),
        }
    }
}

/// Which bulk flows a port's frames belong to, lately.
#[derive(Debug, Default)]
struct BulkFlows {
    /// The flow of the last bulk frame (0: none yet).
    last: AtomicU64,
    /// Changes to another flow, this housekeeping second and the one before.
    changes: AtomicU32,
    changes_before: AtomicU32,
}

impl BulkFlows {
    /// Notes the flow of `frame` if it is a bulk TCP frame.
    fn note(&self, frame: &[u8]) {
        if frame.len() <= BULK_FRAME {
            return;
        }
        let Some(flow) = tcp_flow(frame) else {
            return;
        };
        let last = self.last.swap(flow, Ordering::Relaxed);
        if last != 0 && last != flow {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the port carried several bulk flows in this housekeeping
    /// second or the one before.
    fn several(&self) -> bool {
        self.changes.load(Ordering::Relaxed) + self.changes_before.load(Ordering::Relaxed)
            >= SEVERAL_FLOWS
    }

    /// A housekeeping second is over.
    fn age(&self) {
        let changes = self.changes.swap(0, Ordering::Relaxed);
        self.changes_before.store(changes, Ordering::Relaxed);
    }
}

/// What a port's readers note for the rules: where its frames went and
/// which bulk flows they belong to. One per port, shared by the readers of
/// its lanes and the housekeeping thread.
#[derive(Debug, Default)]
pub(super) struct Talk {
    sends_to: SendsTo,
    bulk_flows: BulkFlows,
}

impl Talk {
    /// A batch of the port's `frames` was forwarded, its first unicast
    /// frame to `to`.
    pub(super) fn note_batch<'a>(
        &self,
        to: Option<PortId>,
        frames: impl IntoIterator<Item = &'a [u8]>,
    ) {
        if let Some(to) = to {
            self.sends_to.note(to);
        }
        for frame in frames {
            self.bulk_flows.note(frame);
        }
    }

    /// Port `id`, read by lane `solo`, as [`choose_solo`] sees it.
    pub(super) fn seen(&self, id: PortId, solo: usize) -> BusyPort {
        BusyPort {
            id,
            sends_to: self.sends_to.get(),
            several_flows: self.bulk_flows.several(),
            solo,
        }
    }

    /// Whether the port carried several bulk flows lately.
    #[cfg(test)]
    pub(super) fn several_flows(&self) -> bool {
        self.bulk_flows.several()
    }

    /// A housekeeping second is over.
    pub(super) fn age(&self) {
        self.bulk_flows.age();
    }
}

/// A number for the TCP flow of an untagged IPv4 or IPv6 Ethernet frame
/// (its addresses and ports; never 0), or `None`.
fn tcp_flow(frame: &[u8]) -> Option<u64> {
    let frame = ethernet::Frame::new_checked(frame).ok()?;
    match frame.ethertype() {
        ethertype::IPV4 => {
            let packet = ipv4::Packet::new_checked(frame.payload()).ok()?;
            let ports = frame.payload().get(packet.header_len()..)?.get(..4)?;
            (packet.protocol() == ip::TCP).then(|| flow_number(packet.addresses(), ports))
        }
        ethertype::IPV6 => {
            let packet = ipv6::Packet::new_checked(frame.payload()).ok()?;
            let ports = frame.payload().get(ipv6::HEADER_LEN..)?.get(..4)?;
            (packet.next_header() == ip::TCP).then(|| flow_number(packet.addresses(), ports))
        }
        _ => None,
    }
}

/// FNV-1a over a flow's addresses and ports (a number, not a secret), never 0.
fn flow_number(addresses: &[u8], ports: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in addresses.iter().chain(ports) {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

/// A port read by port, as [`choose_solo`] sees it: one that was read
/// lately, or the one being steered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BusyPort {
    pub(super) id: PortId,
    pub(super) sends_to: Option<PortId>,
    /// It carried several bulk flows lately.
    pub(super) several_flows: bool,
    /// Its solo lane (the worker that reads it), so far for the one being
    /// steered.
    pub(super) solo: usize,
}

/// What [`choose_solo`] decides for one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SoloChoice {
    pub(super) solo: usize,
    pub(super) rule: SoloRule,
}

/// Which rule of the module docs decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SoloRule {
    /// Rule 1: next to this busy port it talks to.
    NextTo(PortId),
    /// Rule 2: the least loaded worker.
    LeastLoaded,
}

/// The solo lane for port `port` among `workers` workers, given the `busy`
/// ports (the port itself may be among them: it is left out).
/// `realtime`: whether workers run at real-time priority (then two ports
/// that send to each other share a worker whatever their flows).
pub(super) fn choose_solo(
    port: BusyPort,
    busy: &[BusyPort],
    workers: usize,
    realtime: bool,
) -> SoloChoice {
    let BusyPort {
        id: port,
        sends_to,
        several_flows,
        solo: current,
    } = port;
    let workers = workers.max(1);
    let mut load = vec![0usize; workers];
    for other in busy.iter().filter(|other| other.id != port) {
        if let Some(count) = load.get_mut(other.solo) {
            *count += 1;
        }
    }
    let least = load.iter().copied().min().unwrap_or(0);
    // Rule 1.
    let sent_to = busy
        .iter()
        .find(|other| Some(other.id) == sends_to && other.id != port);
    let sends_here = busy
        .iter()
        .find(|other| other.sends_to == Some(port) && other.id != port);
    for partner in [sent_to, sends_here].into_iter().flatten() {
        let each_other = sends_to == Some(partner.id) && partner.sends_to == Some(port);
        if (several_flows || partner.several_flows || (realtime && each_other))
            && load.get(partner.solo).is_some_and(|&n| n <= least + 1)
        {
            return SoloChoice {
                solo: partner.solo,
                rule: SoloRule::NextTo(partner.id),
            };
        }
    }
    // Rule 2.
    let solo = if load.get(current) == Some(&least) {
        current
    } else {
        load.iter().position(|&n| n == least).unwrap_or(0)
    };
    SoloChoice {
        solo,
        rule: SoloRule::LeastLoaded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A busy port that carries several bulk flows.
    fn busy(id: u32, sends_to: Option<u32>, solo: usize) -> BusyPort {
        BusyPort {
            id: PortId(id),
            sends_to: sends_to.map(PortId),
            several_flows: true,
            solo,
        }
    }

    /// Chooses for port `id`, which carries several bulk flows.
    fn choose(
        id: u32,
        sends_to: Option<u32>,
        current: usize,
        busy: &[BusyPort],
        workers: usize,
    ) -> SoloChoice {
        choose_solo(self::busy(id, sends_to, current), busy, workers, false)
    }

    #[test]
    fn a_port_joins_the_busy_port_it_sends_to() {
        let choice = choose(2, Some(1), 0, &[busy(1, None, 1)], 2);
        assert_eq!(
            choice,
            SoloChoice {
                solo: 1,
                rule: SoloRule::NextTo(PortId(1))
            }
        );
    }

    #[test]
    fn a_port_joins_the_busy_port_that_sends_to_it() {
        // The receiver of a stream: its own frames (acknowledgements) may
        // be read by the sender's worker and never noted.
        let choice = choose(2, None, 0, &[busy(1, Some(2), 1)], 2);
        assert_eq!(choice.solo, 1);
        assert_eq!(choice.rule, SoloRule::NextTo(PortId(1)));
    }

    #[test]
    fn the_port_it_sends_to_comes_before_one_that_sends_to_it() {
        let busy = [busy(1, Some(3), 0), busy(2, None, 1)];
        let choice = choose(3, Some(2), 0, &busy, 2);
        assert_eq!(choice.rule, SoloRule::NextTo(PortId(2)));
    }

    #[test]
    fn two_pairs_get_a_worker_each_in_any_order() {
        // Ports 1↔2 and 3↔4, steered one by one as a mode change does,
        // each seeing the ones steered before it as busy.
        let talks = [(1, 2), (2, 1), (3, 4), (4, 3)];
        for order in [[0, 1, 2, 3], [0, 2, 1, 3], [3, 1, 0, 2], [2, 0, 3, 1]] {
            let mut steered: Vec<BusyPort> = Vec::new();
            for i in order {
                let (id, to) = talks[i];
                let choice = choose(id, Some(to), 0, &steered, 2);
                steered.push(busy(id, Some(to), choice.solo));
            }
            let worker_of = |id: u32| steered.iter().find(|p| p.id.0 == id).unwrap().solo;
            assert_eq!(worker_of(1), worker_of(2), "order {order:?}: {steered:?}");
            assert_eq!(worker_of(3), worker_of(4), "order {order:?}: {steered:?}");
            assert_ne!(worker_of(1), worker_of(3), "order {order:?}: {steered:?}");
        }
    }

    #[test]
    fn a_worker_never_takes_more_than_one_port_over_the_least_loaded() {
        // Ports 1 and 2 talk on worker 0; port 3 sends to 2 as well.
        let busy = [busy(1, Some(2), 0), busy(2, Some(1), 0)];
        let choice = choose(3, Some(2), 0, &busy, 2);
        assert_eq!(
            choice,
            SoloChoice {
                solo: 1,
                rule: SoloRule::LeastLoaded
            }
        );
    }

    #[test]
    fn a_port_without_a_busy_partner_keeps_its_lane_if_it_is_among_the_least_loaded() {
        assert_eq!(choose(1, None, 1, &[], 2).solo, 1);
        let busy = [busy(5, None, 1)];
        assert_eq!(choose(1, None, 1, &busy, 2).solo, 0);
        assert_eq!(choose(1, None, 0, &busy, 3).solo, 0);
        assert_eq!(choose(1, None, 1, &busy, 3).solo, 0);
        assert_eq!(choose(1, None, 0, &busy, 2).rule, SoloRule::LeastLoaded);
    }

    #[test]
    fn the_port_itself_among_the_busy_is_left_out() {
        // Steered again while still noted busy: no partner in itself, its
        // own lane not counted as load.
        let busy = [busy(1, Some(1), 1)];
        assert_eq!(
            choose(1, Some(1), 1, &busy, 2),
            SoloChoice {
                solo: 1,
                rule: SoloRule::LeastLoaded
            }
        );
    }

    #[test]
    fn a_partner_on_a_worker_that_is_gone_is_not_followed() {
        let choice = choose(2, Some(1), 0, &[busy(1, None, 7)], 2);
        assert_eq!(choice.rule, SoloRule::LeastLoaded);
        assert!(choice.solo < 2);
    }

    /// A busy port that carries one bulk flow (or none).
    fn one_flow(id: u32, sends_to: Option<u32>, solo: usize) -> BusyPort {
        BusyPort {
            several_flows: false,
            ..busy(id, sends_to, solo)
        }
    }

    #[test]
    fn a_pair_with_one_bulk_flow_keeps_a_worker_each() {
        let port = one_flow(2, Some(1), 1);
        let choice = choose_solo(port, &[one_flow(1, Some(2), 0)], 2, false);
        assert_eq!(
            choice,
            SoloChoice {
                solo: 1,
                rule: SoloRule::LeastLoaded
            }
        );
        // Either side carrying several flows is enough.
        let choice = choose_solo(port, &[busy(1, Some(2), 0)], 2, false);
        assert_eq!(choice.rule, SoloRule::NextTo(PortId(1)));
        let several = busy(2, Some(1), 1);
        let choice = choose_solo(several, &[one_flow(1, Some(2), 0)], 2, false);
        assert_eq!(choice.rule, SoloRule::NextTo(PortId(1)));
    }

    #[test]
    fn with_real_time_workers_two_ports_that_talk_both_ways_share_a_worker() {
        // A stream's receiver (its acknowledgements go to the sender) joins
        // the sender, and the other way round.
        let receiver = one_flow(2, Some(1), 1);
        let choice = choose_solo(receiver, &[one_flow(1, Some(2), 0)], 2, true);
        assert_eq!(
            choice,
            SoloChoice {
                solo: 0,
                rule: SoloRule::NextTo(PortId(1))
            }
        );
        let sender = one_flow(1, Some(2), 0);
        let choice = choose_solo(sender, &[one_flow(2, Some(1), 1)], 2, true);
        assert_eq!(choice.rule, SoloRule::NextTo(PortId(2)));
        // One way only (a flood with nothing coming back): apart.
        let flooder = one_flow(1, Some(2), 0);
        let choice = choose_solo(flooder, &[one_flow(2, None, 0)], 2, true);
        assert_eq!(choice.rule, SoloRule::LeastLoaded);
        let choice = choose_solo(flooder, &[one_flow(2, Some(3), 0)], 2, true);
        assert_eq!(choice.rule, SoloRule::LeastLoaded);
        // Still never more than one port over the least loaded worker.
        let busy = [one_flow(2, Some(1), 0), one_flow(3, Some(4), 0)];
        let choice = choose_solo(sender, &busy, 2, true);
        assert_eq!(choice.rule, SoloRule::LeastLoaded);
    }

    /// An Ethernet frame of `len` bytes carrying IPv4 TCP from port `from`.
    fn tcp_frame(from: u16, len: usize) -> Vec<u8> {
        let mut frame = vec![0u8; len];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        frame[23] = 6;
        frame[26..34].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        frame[34..36].copy_from_slice(&from.to_be_bytes());
        frame[36..38].copy_from_slice(&5201u16.to_be_bytes());
        frame
    }

    #[test]
    fn one_bulk_flow_is_not_several() {
        let flows = BulkFlows::default();
        for _ in 0..100 {
            flows.note(&tcp_frame(40000, 65000));
            // Small frames (a control connection's) do not count.
            flows.note(&tcp_frame(40001, 100));
        }
        assert!(!flows.several());
    }

    #[test]
    fn bulk_flows_taking_turns_are_several_for_a_second_or_two() {
        let flows = BulkFlows::default();
        for i in 0..SEVERAL_FLOWS {
            flows.note(&tcp_frame(40000 + (i % 2) as u16, 65000));
        }
        assert!(!flows.several(), "the first frame changes nothing");
        flows.note(&tcp_frame(40000, 65000));
        assert!(flows.several());
        flows.age();
        assert!(flows.several(), "seen in the second before");
        flows.age();
        assert!(!flows.several());
    }

    #[test]
    fn only_tcp_frames_have_a_flow() {
        let tcp = tcp_frame(40000, 2000);
        assert!(tcp_flow(&tcp).is_some());
        assert_ne!(tcp_flow(&tcp), tcp_flow(&tcp_frame(40001, 2000)));
        let mut udp = tcp.clone();
        udp[23] = 17;
        assert_eq!(tcp_flow(&udp), None);
        let mut tagged = tcp.clone();
        tagged[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(tcp_flow(&tagged), None);
        assert_eq!(tcp_flow(&tcp[..30]), None, "cut short");
        let mut v6 = vec![0u8; 2000];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6[14] = 0x60;
        v6[18..20].copy_from_slice(&(2000u16 - 54).to_be_bytes());
        v6[20] = 6;
        v6[54..56].copy_from_slice(&40000u16.to_be_bytes());
        assert!(tcp_flow(&v6).is_some());
    }

    #[test]
    fn sends_to_notes_the_last_port() {
        let sends = SendsTo::default();
        assert_eq!(sends.get(), None);
        sends.note(PortId(3));
        sends.note(PortId(4));
        assert_eq!(sends.get(), Some(PortId(4)));
    }
}

//! The fabric: carries one received frame through the engine's decision to
//! the egress ports, and counts what happened.
//!
//! The engine says *where* a frame goes; this module gets it there:
//!
//! - a flood goes to every port in the [`PortSet`] but the ingress port;
//! - a port that takes virtio-net headers gets the frame as it came, GSO
//!   super-frame and partial checksum included (that is the fast path);
//! - a port that does not (a plain TAP, the gateway, a pcap file) gets wire
//!   frames: a partial checksum is completed, a GSO frame is cut into
//!   segments in software;
//! - a frame longer than the egress port can carry is dropped and counted
//!   there, as the Linux bridge does (`is_skb_forwardable`).
//!
//! A worker's fabric holds small unicast frames for ports that take offload
//! headers and sends each port's share in one call at the end of the batch
//! ([`Fabric::hold_unicast`], [`Fabric::flush`]). Any other frame first
//! sends what is held, so every port gets its frames in the order they came.
//!
//! The live worker threads and `replay` both forward through [`Fabric`], so
//! the two cannot disagree.

use std::fmt;
use std::sync::Arc;

use ports::capture::{Direction, PortCapture, wall_clock_ns};
use ports::coalesce;
use ports::vnet::{self, VnetHdr};
use ports::{PortKind, PortTx};

use crate::engine::{Action, Session, Verdict};
use crate::port::PortId;
use crate::stats::{DropReason, PortCounters};
use crate::time::Instant;
use crate::trace::TraceLine;

/// Ethernet header plus one VLAN tag: what a frame may add to the MTU
/// (the Linux bridge's `dev->mtu + dev->hard_header_len + VLAN_HLEN`).
const L2_OVERHEAD: usize = 14 + 4;

/// A port as the fabric sees it: how to send to it, and its counters.
pub struct PortHandle {
    pub id: PortId,
    pub name: String,
    pub kind: PortKind,
    pub tx: Arc<dyn PortTx>,
    pub counters: Arc<PortCounters>,
    /// The port's capture file (`serve --capture`), started or stopped.
    pub capture: Option<Arc<PortCapture>>,
}

impl PortHandle {
    /// Records a frame in the port's capture file, if it is capturing. A
    /// port that is not pays one atomic load; the clock is read only for
    /// frames that are recorded.
    fn capture(&self, direction: Direction, frame: &[u8]) {
        if let Some(capture) = &self.capture
            && capture.is_enabled()
        {
            capture.record(direction, wall_clock_ns(), frame);
        }
    }
}

impl fmt::Debug for PortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortHandle({} {} {:?})", self.id, self.name, self.kind)
    }
}

/// The ports of the switch at one moment, sorted by id. Workers keep an
/// `Arc` of it for a batch; adding or removing a port publishes a new one.
#[derive(Debug, Default, Clone)]
pub struct PortSet {
    ports: Vec<Arc<PortHandle>>,
}

impl PortSet {
    pub fn new(mut ports: Vec<Arc<PortHandle>>) -> Self {
        ports.sort_by_key(|p| p.id);
        PortSet { ports }
    }

    pub fn get(&self, id: PortId) -> Option<&Arc<PortHandle>> {
        self.ports
            .binary_search_by_key(&id, |p| p.id)
            .ok()
            .map(|i| &self.ports[i])
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<PortHandle>> {
        self.ports.iter().find(|p| p.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<PortHandle>> {
        self.ports.iter()
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// A copy with `port` added (replacing one with the same id).
    pub fn with(&self, port: Arc<PortHandle>) -> PortSet {
        let mut ports: Vec<_> = self
            .ports
            .iter()
            .filter(|p| p.id != port.id)
            .cloned()
            .collect();
        ports.push(port);
        PortSet::new(ports)
    }

    /// A copy without port `id`.
    pub fn without(&self, id: PortId) -> PortSet {
        PortSet {
            ports: self.ports.iter().filter(|p| p.id != id).cloned().collect(),
        }
    }

    /// The port's name, or its number if it is gone (for trace lines).
    pub fn name_of(&self, id: PortId) -> String {
        self.get(id)
            .map_or_else(|| format!("port{}", id.0), |p| p.name.clone())
    }
}

/// Where trace lines go (stderr for `serve`, stdout for `replay`).
pub type TraceSink = dyn Fn(&str) + Send + Sync;

/// Per-thread forwarding state: scratch space for software segmentation and
/// the trace switch. Cheap to create; one per worker.
pub struct Fabric {
    segment_scratch: Vec<u8>,
    flooded_to: Vec<PortId>,
    trace: Option<Arc<TraceSink>>,
    /// Whether small unicast frames wait in `outbox` for [`Fabric::flush`].
    holding: bool,
    /// Whether `flush` sends runs of one UDP flow as super-frames.
    coalescing: bool,
    outbox: Outbox,
    /// Super-frames made from held datagrams, rebuilt at every flush.
    merged: Vec<u8>,
}

/// The most frames held at once (a received batch is at most 32).
const MAX_HELD: usize = 64;

/// Unicast frames held for one send per port, in the order they came.
#[derive(Default)]
struct Outbox {
    held: Vec<Held>,
    /// The held frames' bytes, one after the other.
    bytes: Vec<u8>,
}

struct Held {
    egress: PortId,
    vnet: VnetHdr,
    start: usize,
    len: usize,
}

impl fmt::Debug for Fabric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fabric(trace: {})", self.trace.is_some())
    }
}

impl Fabric {
    pub fn new(trace: Option<Arc<TraceSink>>) -> Self {
        Fabric {
            segment_scratch: Vec::new(),
            flooded_to: Vec::new(),
            trace,
            holding: false,
            coalescing: false,
            outbox: Outbox::default(),
            merged: Vec::new(),
        }
    }

    /// Lets [`Fabric::forward`] hold small unicast frames for ports that
    /// take offload headers until [`Fabric::flush`], which sends each port's
    /// share in one call (`sendmmsg` on `--iface` ports). Besides the system
    /// calls saved, a receiver is woken once per batch instead of once per
    /// frame: veth and TAP run the receiver's stack inside the send, and the
    /// woken receiver takes the CPU only when the call returns. Whoever
    /// turns this on must call `flush` after every forwarding pass.
    pub fn hold_unicast(mut self) -> Self {
        self.holding = true;
        self
    }

    /// Lets [`Fabric::flush`] send each run of held datagrams of one UDP
    /// flow as one UDP GSO super-frame ([`ports::coalesce`]): the
    /// receiver's stack then looks up route and socket once per run, and
    /// cuts the run back into the datagrams that were sent. Only with
    /// [`Fabric::hold_unicast`].
    pub fn coalesce_udp(mut self, on: bool) -> Self {
        self.coalescing = on;
        self
    }

    /// Sends every held frame: each port's in one `send_batch`, ports in
    /// the order their first frame came, runs of one UDP flow's datagrams
    /// coalesced into super-frames (see [`ports::coalesce`]).
    pub fn flush(&mut self, ports: &PortSet) {
        let outbox = &mut self.outbox;
        let mut sent = [false; MAX_HELD];
        for first in 0..outbox.held.len() {
            if sent[first] {
                continue;
            }
            let egress = outbox.held[first].egress;
            let mut frames = [(VnetHdr::default(), &[][..]); MAX_HELD];
            let mut count = 0;
            for (i, held) in outbox.held.iter().enumerate().skip(first) {
                if held.egress == egress {
                    frames[count] = (held.vnet, &outbox.bytes[held.start..held.start + held.len]);
                    count += 1;
                    sent[i] = true;
                }
            }
            // `ports` is the set the decisions were made with (the caller
            // flushes before it takes a newer one), so the port is in it.
            if let Some(port) = ports.get(egress) {
                transmit_runs(port, &frames[..count], self.coalescing, &mut self.merged);
            }
        }
        outbox.held.clear();
        outbox.bytes.clear();
    }

    /// Holds a unicast frame for `flush` if holding is on and the frame
    /// goes out as it is (the port takes offload headers, no GSO, not too
    /// big); false if it must be sent now.
    fn hold(&mut self, ports: &PortSet, egress: &PortHandle, vnet: &VnetHdr, frame: &[u8]) -> bool {
        if !self.holding
            || !egress.tx.offloads()
            || vnet.is_gso()
            || frame.len() > egress.tx.mtu() + L2_OVERHEAD
        {
            return false;
        }
        if self.outbox.held.len() == MAX_HELD {
            self.flush(ports);
        }
        let start = self.outbox.bytes.len();
        self.outbox.bytes.extend_from_slice(frame);
        self.outbox.held.push(Held {
            egress: egress.id,
            vnet: *vnet,
            start,
            len: frame.len(),
        });
        true
    }

    /// Decides and delivers one frame received on `ingress` at `now`. The
    /// frame may be changed in place (a completed checksum).
    pub fn forward(
        &mut self,
        session: &mut Session<'_>,
        ports: &PortSet,
        now: Instant,
        ingress: &PortHandle,
        vnet: &mut VnetHdr,
        frame: &mut [u8],
    ) -> Verdict {
        ingress.counters.count_rx(1, frame.len() as u64);
        ingress.capture(Direction::Inbound, frame);
        let verdict = session.handle_frame(now, ingress.id, frame);
        match verdict.action {
            Action::Drop(reason) => ingress.counters.count_drop(reason),
            Action::Forward(id) => match ports.get(id) {
                Some(egress) => {
                    if !self.hold(ports, egress, vnet, frame) {
                        // Held frames go first: a port's frames keep their order.
                        self.flush(ports);
                        self.send(egress, vnet, frame);
                    }
                }
                // The table pointed at a port removed a moment ago.
                None => ingress.counters.count_drop(DropReason::TxError),
            },
            Action::Flood(_) => {
                self.flush(ports);
                for egress in ports.iter().filter(|p| p.id != ingress.id) {
                    self.send(egress, vnet, frame);
                }
            }
        }
        if let Some(trace) = &self.trace {
            // A flood went to every port but the ingress port.
            self.flooded_to.clear();
            if matches!(verdict.action, Action::Flood(_)) {
                let others = ports.iter().filter(|p| p.id != ingress.id);
                self.flooded_to.extend(others.map(|p| p.id));
            }
            let name = |id: PortId| ports.name_of(id);
            let line = TraceLine {
                now,
                ingress: ingress.id,
                frame,
                verdict: &verdict,
                port_name: &name,
                flooded_to: &self.flooded_to,
            };
            trace(&line.to_string());
        }
        verdict
    }

    /// Sends one frame out of one port, converting it to what the port takes.
    fn send(&mut self, egress: &PortHandle, vnet: &mut VnetHdr, frame: &mut [u8]) {
        let limit = egress.tx.mtu() + L2_OVERHEAD;
        if egress.tx.offloads() {
            return transmit(egress, vnet, frame, limit);
        }
        if vnet.is_gso() {
            let mut emit = |segment: &[u8]| transmit(egress, &VnetHdr::default(), segment, limit);
            if vnet::segment(vnet, frame, &mut self.segment_scratch, &mut emit).is_err() {
                egress.counters.count_drop(DropReason::Malformed);
            }
            return;
        }
        // At most a partial checksum to finish. Done in place and once: the
        // completed frame is just as good for the ports still to come.
        if !vnet.is_plain() && vnet::complete_checksum(vnet, frame).is_err() {
            egress.counters.count_drop(DropReason::Malformed);
            return;
        }
        transmit(egress, &VnetHdr::default(), frame, limit);
    }
}

/// Writes one frame (with `header` if the port takes offloads) and counts
/// it; a frame longer than `limit` that is not a GSO super-frame is
/// dropped as too big.
fn transmit(egress: &PortHandle, header: &VnetHdr, frame: &[u8], limit: usize) {
    if frame.len() > limit && !header.is_gso() {
        egress.counters.count_drop(DropReason::TooBig);
        return;
    }
    let frame = (*header, frame);
    let one = std::slice::from_ref(&frame);
    transmit_all(egress, one, &[one]);
}

/// A run of held frames for one port: `len` frames from `first`, sent as
/// one super-frame (`merged[start..end]` with `vnet`) when `len > 1`.
#[derive(Clone, Copy, Default)]
struct Run {
    first: usize,
    len: usize,
    vnet: VnetHdr,
    start: usize,
    end: usize,
}

/// Writes held frames out of one port; with `coalescing`, each run of one
/// UDP flow's datagrams as one super-frame (built in `merged`).
fn transmit_runs(
    egress: &PortHandle,
    frames: &[(VnetHdr, &[u8])],
    coalescing: bool,
    merged: &mut Vec<u8>,
) {
    // Build every super-frame first, so `merged` no longer moves when the
    // frames to send point into it.
    merged.clear();
    let mut runs = [Run::default(); MAX_HELD];
    let (mut count, mut first) = (0, 0);
    while first < frames.len() {
        let len = if coalescing {
            coalesce::run_length(&frames[first..])
        } else {
            1
        };
        let start = merged.len();
        let vnet = if len > 1 {
            coalesce::merge(&frames[first..first + len], merged)
        } else {
            VnetHdr::default()
        };
        runs[count] = Run {
            first,
            len,
            vnet,
            start,
            end: merged.len(),
        };
        count += 1;
        first += len;
    }
    let mut wire = [(VnetHdr::default(), &[][..]); MAX_HELD];
    let mut stands_for = [&[][..]; MAX_HELD];
    for (i, run) in runs[..count].iter().enumerate() {
        wire[i] = if run.len == 1 {
            frames[run.first]
        } else {
            (run.vnet, &merged[run.start..run.end])
        };
        stands_for[i] = &frames[run.first..run.first + run.len];
    }
    transmit_all(egress, &wire[..count], &stands_for[..count]);
}

/// Each of `frames` (at most [`MAX_HELD`]) standing for itself, as
/// `transmit_all` takes them.
fn each_alone<'a>(frames: &'a [(VnetHdr, &'a [u8])]) -> [&'a [(VnetHdr, &'a [u8])]; MAX_HELD] {
    std::array::from_fn(|i| frames.get(i..i + 1).unwrap_or(&[]))
}

/// Writes frames that need no conversion out of one port with as few calls
/// as it takes. `stands_for[i]` are the frames `wire[i]` carries (itself,
/// or the datagrams of a super-frame): they are counted and captured one
/// by one, as they were decided. A frame that fails is counted as dropped
/// and the rest still go; a super-frame that fails goes out as the
/// datagrams it carries.
fn transmit_all(
    egress: &PortHandle,
    wire: &[(VnetHdr, &[u8])],
    stands_for: &[&[(VnetHdr, &[u8])]],
) {
    let mut next = 0;
    while next < wire.len() {
        let sent = egress.tx.send_batch(&wire[next..]).unwrap_or(0);
        for carried in &stands_for[next..next + sent] {
            if carried.len() > 1 {
                egress.counters.count_coalesced(carried.len() as u64);
            }
            for (_, frame) in carried.iter() {
                egress.counters.count_tx(1, frame.len() as u64);
                egress.capture(Direction::Outbound, frame);
            }
        }
        next += sent;
        if next < wire.len() {
            let carried = stands_for[next];
            if carried.len() > 1 {
                // A super-frame refused (a kernel without UDP GSO, say):
                // its datagrams go as they came, and count as those do.
                transmit_all(egress, carried, &each_alone(carried)[..carried.len()]);
            } else {
                egress.counters.count_drop(DropReason::TxError);
            }
            next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, FloodReason};
    use crate::mac_table::TableConfig;
    use ports::memory::{MemoryTx, memory_port};

    struct Rig {
        engine: Engine,
        ports: PortSet,
        taps: Vec<MemoryTx>,
    }

    fn rig(specs: &[(usize, bool)]) -> Rig {
        let mut handles = Vec::new();
        let mut taps = Vec::new();
        for (i, &(mtu, offloads)) in specs.iter().enumerate() {
            let (_rx, tx) = memory_port(mtu, offloads);
            taps.push(tx.clone());
            handles.push(Arc::new(PortHandle {
                id: PortId(i as u32 + 1),
                name: format!("p{}", i + 1),
                kind: PortKind::Memory,
                tx: Arc::new(tx),
                counters: Arc::default(),
                capture: None,
            }));
        }
        Rig {
            engine: Engine::new(TableConfig::default()),
            ports: PortSet::new(handles),
            taps,
        }
    }

    fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(len, 0xab);
        f
    }

    const H1: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const H2: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const H3: [u8; 6] = [2, 0, 0, 0, 0, 3];

    /// A TCP super-frame's header (64 KiB cut into 1448-byte segments).
    const TCP_GSO: VnetHdr = VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        gso_size: 1448,
        hdr_len: 66,
        csum_start: 34,
        csum_offset: 16,
    };

    impl Rig {
        fn tx_frames(&self, port: u32) -> u64 {
            let port = self.ports.get(PortId(port)).unwrap();
            port.counters.snapshot().tx_frames
        }

        fn push(
            &self,
            fabric: &mut Fabric,
            port: usize,
            vnet: VnetHdr,
            mut bytes: Vec<u8>,
        ) -> Verdict {
            let mut vnet = vnet;
            let ingress = self.ports.get(PortId(port as u32)).unwrap().clone();
            let mut session = self.engine.session();
            fabric.forward(
                &mut session,
                &self.ports,
                Instant::ZERO,
                &ingress,
                &mut vnet,
                &mut bytes,
            )
        }
    }

    #[test]
    fn floods_to_all_but_ingress_then_forwards_to_one() {
        let r = rig(&[(1500, false), (1500, false), (1500, false)]);
        let mut fabric = Fabric::new(None);
        let v = r.push(&mut fabric, 1, VnetHdr::default(), frame(H2, H1, 60));
        assert_eq!(v.action, Action::Flood(FloodReason::UnknownUnicast));
        assert_eq!(r.taps[0].take_sent().len(), 0);
        assert_eq!(r.taps[1].take_sent().len(), 1);
        assert_eq!(r.taps[2].take_sent().len(), 1);
        r.push(&mut fabric, 2, VnetHdr::default(), frame(H1, H2, 60));
        assert_eq!(
            r.taps[0].take_sent()[0].1,
            frame(H1, H2, 60),
            "byte for byte"
        );
        assert_eq!(r.taps[2].take_sent().len(), 0);
        let stats = r.ports.get(PortId(1)).unwrap().counters.snapshot();
        assert_eq!((stats.rx_frames, stats.tx_frames), (1, 1));
    }

    #[test]
    fn frames_over_the_egress_mtu_are_dropped_and_counted_there() {
        let r = rig(&[(9000, false), (1500, false)]);
        let mut fabric = Fabric::new(None);
        r.push(&mut fabric, 1, VnetHdr::default(), frame(H2, H1, 1518));
        assert_eq!(r.taps[1].take_sent().len(), 1, "1500 + 14 + 4 fits");
        r.push(&mut fabric, 1, VnetHdr::default(), frame(H2, H1, 1519));
        assert_eq!(r.taps[1].take_sent().len(), 0);
        assert_eq!(
            r.ports.get(PortId(2)).unwrap().counters.snapshot().drops["too-big"],
            1
        );
    }

    #[test]
    fn offload_headers_pass_through_to_ports_that_take_them() {
        let r = rig(&[(1500, true), (1500, true)]);
        let mut fabric = Fabric::new(None);
        let vnet = TCP_GSO;
        r.push(&mut fabric, 1, vnet, frame(H2, H1, 65_000));
        let sent = r.taps[1].take_sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, vnet);
        assert_eq!(sent[0].1.len(), 65_000);
    }

    /// A small frame from `src` to `dst` whose last byte says which it is.
    fn tagged(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
        let mut f = frame(dst, src, 60);
        f[59] = tag;
        f
    }

    fn tags(sent: &[ports::memory::Frame]) -> Vec<u8> {
        sent.iter().map(|(_, f)| f[f.len() - 1]).collect()
    }

    /// Three offload ports whose hosts H1, H2, H3 the table knows, and a
    /// fabric that holds unicast frames.
    fn holding_rig() -> (Rig, Fabric) {
        let r = rig(&[(1500, true), (1500, true), (1500, true)]);
        let mut fabric = Fabric::new(None).hold_unicast();
        for (port, host) in [(1, H1), (2, H2), (3, H3)] {
            r.push(
                &mut fabric,
                port,
                VnetHdr::default(),
                frame([0xff; 6], host, 60),
            );
        }
        fabric.flush(&r.ports);
        for tap in &r.taps {
            tap.take_sent();
        }
        (r, fabric)
    }

    #[test]
    fn held_frames_leave_at_flush_each_port_in_order_and_are_counted_then() {
        let (r, mut fabric) = holding_rig();
        r.push(&mut fabric, 1, VnetHdr::default(), tagged(H2, H1, 1));
        r.push(&mut fabric, 1, VnetHdr::default(), tagged(H3, H1, 2));
        r.push(&mut fabric, 1, VnetHdr::default(), tagged(H2, H1, 3));
        assert!(r.taps[1].take_sent().is_empty(), "held until the flush");
        let before = r.tx_frames(2);
        fabric.flush(&r.ports);
        assert_eq!(tags(&r.taps[1].take_sent()), [1, 3]);
        assert_eq!(tags(&r.taps[2].take_sent()), [2]);
        let after = r.tx_frames(2);
        assert_eq!(after - before, 2);
        fabric.flush(&r.ports);
        assert!(r.taps[1].take_sent().is_empty(), "nothing is sent twice");
    }

    #[test]
    fn a_frame_that_cannot_be_held_sends_the_held_ones_first() {
        let (r, mut fabric) = holding_rig();
        r.push(&mut fabric, 1, VnetHdr::default(), tagged(H2, H1, 1));
        let gso = TCP_GSO;
        let mut big = frame(H2, H1, 20_000);
        big[19_999] = 2;
        r.push(&mut fabric, 1, gso, big);
        assert_eq!(
            tags(&r.taps[1].take_sent()),
            [1, 2],
            "in the order they came"
        );
    }

    #[test]
    fn a_flood_sends_the_held_frames_first() {
        let (r, mut fabric) = holding_rig();
        r.push(&mut fabric, 1, VnetHdr::default(), tagged(H2, H1, 1));
        r.push(&mut fabric, 1, VnetHdr::default(), tagged([0xff; 6], H1, 2));
        assert_eq!(tags(&r.taps[1].take_sent()), [1, 2]);
        assert_eq!(tags(&r.taps[2].take_sent()), [2]);
    }

    /// A UDP datagram from H1 to H2 as a sender's stack hands it over:
    /// IPv4 id `id`, checksum left to complete (`NEEDS_CSUM`).
    fn datagram(id: u16, payload_len: usize) -> (VnetHdr, Vec<u8>) {
        let udp_len = 8 + payload_len as u16;
        let mut f = frame(H2, H1, 14);
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&(20 + udp_len).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0x40, 0, 64, 17, 0, 0, 172, 17, 0, 2, 172, 17, 0, 3]);
        let ip_check = vnet::rfc1071_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&ip_check.to_be_bytes());
        f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]); // ports 40000 -> 5201
        f.extend_from_slice(&udp_len.to_be_bytes());
        let pseudo = vnet::ones_complement_sum(&f[26..34], 17 + u32::from(udp_len));
        f.extend_from_slice(&vnet::fold(pseudo).to_be_bytes());
        f.extend((0..payload_len).map(|i| (i as u16 + id) as u8));
        let vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        (vnet, f)
    }

    #[test]
    fn a_run_of_one_udp_flow_leaves_as_one_super_frame_counted_per_datagram() {
        let (r, fabric) = holding_rig();
        let mut fabric = fabric.coalesce_udp(true);
        let before = r.tx_frames(2);
        let datagrams: Vec<_> = (0..4).map(|i| datagram(700 + i, 64)).collect();
        for (vnet, f) in &datagrams {
            r.push(&mut fabric, 1, *vnet, f.clone());
        }
        r.push(&mut fabric, 1, VnetHdr::default(), tagged(H2, H1, 9));
        fabric.flush(&r.ports);

        let sent = r.taps[1].take_sent();
        assert_eq!(sent.len(), 2, "one super-frame, then the other frame");
        let (vnet, super_frame) = &sent[0];
        assert_eq!(vnet.gso_type, VnetHdr::GSO_UDP_L4);
        let mut cut = Vec::new();
        vnet::segment(vnet, super_frame, &mut Vec::new(), &mut |s| {
            cut.push(s.to_vec())
        })
        .unwrap();
        let wire: Vec<Vec<u8>> = datagrams
            .iter()
            .map(|(v, f)| {
                let (mut v, mut f) = (*v, f.clone());
                vnet::complete_checksum(&mut v, &mut f).unwrap();
                f
            })
            .collect();
        assert_eq!(cut, wire, "cut again, the run is the datagrams that came");
        assert_eq!(tags(&sent[1..]), [9]);

        let stats = r.ports.get(PortId(2)).unwrap().counters.snapshot();
        assert_eq!(stats.tx_frames - before, 5, "each datagram counts");
        assert_eq!((stats.tx_coalesced, stats.tx_superframes), (4, 1));
    }

    /// A port on a kernel without UDP GSO (before Linux 6.2): it refuses
    /// super-frames and takes everything else.
    #[derive(Debug, Default)]
    struct NoUdpGso {
        sent: std::sync::Mutex<Vec<Vec<u8>>>,
    }

    impl PortTx for NoUdpGso {
        fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> std::io::Result<()> {
            if vnet.gso_type == VnetHdr::GSO_UDP_L4 {
                return Err(std::io::Error::from_raw_os_error(22)); // EINVAL
            }
            self.sent.lock().unwrap().push(frame.to_vec());
            Ok(())
        }

        fn offloads(&self) -> bool {
            true
        }

        fn mtu(&self) -> usize {
            1500
        }
    }

    #[test]
    fn a_refused_super_frame_is_sent_as_the_datagrams_it_carries() {
        let (mut r, fabric) = holding_rig();
        let mut fabric = fabric.coalesce_udp(true);
        let old_kernel = Arc::new(NoUdpGso::default());
        let port = r.ports.get(PortId(2)).unwrap();
        let handle = Arc::new(PortHandle {
            id: port.id,
            name: port.name.clone(),
            kind: port.kind,
            tx: old_kernel.clone(),
            counters: Arc::default(),
            capture: None,
        });
        r.ports = r.ports.with(handle);
        let datagrams: Vec<_> = (0..3).map(|i| datagram(9 + i, 20)).collect();
        for (vnet, f) in &datagrams {
            r.push(&mut fabric, 1, *vnet, f.clone());
        }
        fabric.flush(&r.ports);
        let sent = old_kernel.sent.lock().unwrap().clone();
        let expected: Vec<Vec<u8>> = datagrams.into_iter().map(|(_, f)| f).collect();
        assert_eq!(sent, expected, "one by one, as they came");
        let stats = r.ports.get(PortId(2)).unwrap().counters.snapshot();
        assert_eq!(
            (stats.tx_frames, stats.tx_coalesced, stats.tx_dropped),
            (3, 0, 0)
        );
    }

    #[test]
    fn without_coalescing_every_datagram_leaves_as_it_came() {
        let (r, mut fabric) = holding_rig();
        let before = r.tx_frames(2);
        let datagrams: Vec<_> = (0..4).map(|i| datagram(700 + i, 64)).collect();
        for (vnet, f) in &datagrams {
            r.push(&mut fabric, 1, *vnet, f.clone());
        }
        fabric.flush(&r.ports);
        let sent = r.taps[1].take_sent();
        assert_eq!(sent, datagrams);
        let stats = r.ports.get(PortId(2)).unwrap().counters.snapshot();
        assert_eq!((stats.tx_frames - before, stats.tx_coalesced), (4, 0));
    }

    #[test]
    fn a_fabric_that_does_not_hold_sends_at_once() {
        let r = rig(&[(1500, true), (1500, true)]);
        let mut fabric = Fabric::new(None);
        r.push(&mut fabric, 2, VnetHdr::default(), frame([0xff; 6], H2, 60));
        r.push(&mut fabric, 1, VnetHdr::default(), tagged(H2, H1, 7));
        assert_eq!(tags(&r.taps[1].take_sent()), [7]);
    }

    #[test]
    fn a_partial_checksum_is_completed_for_a_plain_port() {
        let r = rig(&[(1500, true), (1500, false)]);
        let mut fabric = Fabric::new(None);
        // A UDP-ish payload: checksum field at 34 + 6, seeded with 0.
        let vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        let mut bytes = frame(H2, H1, 100);
        bytes[40..42].copy_from_slice(&[0, 0]);
        r.push(&mut fabric, 1, vnet, bytes);
        let sent = r.taps[1].take_sent();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].0.is_plain());
        let f = &sent[0].1;
        assert_eq!(
            vnet::fold(vnet::ones_complement_sum(&f[34..], 0)),
            0xffff,
            "checksum verifies"
        );
    }

    #[test]
    fn trace_lines_name_the_ports() {
        let r = rig(&[(1500, false), (1500, false)]);
        let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let mut fabric = Fabric::new(Some(Arc::new(move |l: &str| {
            sink.lock().unwrap().push(l.to_string())
        })));
        r.push(&mut fabric, 1, VnetHdr::default(), frame(H2, H1, 60));
        let lines = lines.lock().unwrap();
        assert!(
            lines[0].ends_with("02:00:00:00:00:02 unknown: flooded to p2"),
            "{}",
            lines[0]
        );
    }
}

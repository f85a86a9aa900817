use super::*;
use crate::engine::{Engine, FloodReason};
use crate::mac_table::TableConfig;
use ports::PortKind;
use ports::memory::{MemoryTx, memory_port, udp_datagram};
use ports::transmit::Egress;

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

    /// Forwards a frame received on `port` in a pass of its own.
    fn push(&self, fabric: &mut Fabric, port: usize, vnet: VnetHdr, mut bytes: Vec<u8>) -> Verdict {
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

    /// Forwards a frame received on `port` in `pass`.
    fn push_in(&self, pass: &mut Pass<'_>, port: usize, vnet: VnetHdr, mut bytes: Vec<u8>) {
        let mut vnet = vnet;
        let ingress = self.ports.get(PortId(port as u32)).unwrap().clone();
        let mut session = self.engine.session();
        pass.forward(&mut session, Instant::ZERO, &ingress, &mut vnet, &mut bytes);
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
/// fabric that holds unicast frames (and coalesces them, if asked).
fn holding_rig(coalesce_udp: bool) -> (Rig, Fabric) {
    let r = rig(&[(1500, true), (1500, true), (1500, true)]);
    let mut fabric = Fabric::with_batching(None, Batching::HoldUnicast { coalesce_udp });
    for (port, host) in [(1, H1), (2, H2), (3, H3)] {
        r.push(
            &mut fabric,
            port,
            VnetHdr::default(),
            frame([0xff; 6], host, 60),
        );
    }
    for tap in &r.taps {
        tap.take_sent();
    }
    (r, fabric)
}

#[test]
fn held_frames_leave_when_the_pass_ends_each_port_in_order_and_are_counted_then() {
    let (r, mut fabric) = holding_rig(false);
    let mut pass = fabric.pass(&r.ports);
    r.push_in(&mut pass, 1, VnetHdr::default(), tagged(H2, H1, 1));
    r.push_in(&mut pass, 1, VnetHdr::default(), tagged(H3, H1, 2));
    r.push_in(&mut pass, 1, VnetHdr::default(), tagged(H2, H1, 3));
    assert!(r.taps[1].take_sent().is_empty(), "held until the pass ends");
    let before = r.tx_frames(2);
    drop(pass);
    assert_eq!(tags(&r.taps[1].take_sent()), [1, 3]);
    assert_eq!(tags(&r.taps[2].take_sent()), [2]);
    let after = r.tx_frames(2);
    assert_eq!(after - before, 2);
    drop(fabric.pass(&r.ports));
    assert!(r.taps[1].take_sent().is_empty(), "nothing is sent twice");
}

#[test]
fn a_frame_that_cannot_be_held_sends_the_held_ones_first() {
    let (r, mut fabric) = holding_rig(false);
    let mut pass = fabric.pass(&r.ports);
    r.push_in(&mut pass, 1, VnetHdr::default(), tagged(H2, H1, 1));
    let gso = TCP_GSO;
    let mut big = frame(H2, H1, 20_000);
    big[19_999] = 2;
    r.push_in(&mut pass, 1, gso, big);
    assert_eq!(
        tags(&r.taps[1].take_sent()),
        [1, 2],
        "in the order they came"
    );
}

#[test]
fn a_flood_sends_the_held_frames_first() {
    let (r, mut fabric) = holding_rig(false);
    let mut pass = fabric.pass(&r.ports);
    r.push_in(&mut pass, 1, VnetHdr::default(), tagged(H2, H1, 1));
    r.push_in(&mut pass, 1, VnetHdr::default(), tagged([0xff; 6], H1, 2));
    assert_eq!(tags(&r.taps[1].take_sent()), [1, 2]);
    assert_eq!(tags(&r.taps[2].take_sent()), [2]);
}

/// The batcher's own tests (`ports::transmit`) cover coalescing, refused
/// super-frames and errors; this one checks that the fabric's ports count
/// coalesced datagrams in their `PortCounters`, one by one.
#[test]
fn a_run_of_one_udp_flow_leaves_as_one_super_frame_counted_per_datagram() {
    let (r, mut fabric) = holding_rig(true);
    let before = r.tx_frames(2);
    let datagrams: Vec<_> = (0..4).map(|i| udp_datagram(700 + i, 64)).collect();
    let mut pass = fabric.pass(&r.ports);
    for (vnet, f) in &datagrams {
        r.push_in(&mut pass, 1, *vnet, f.clone());
    }
    r.push_in(&mut pass, 1, VnetHdr::default(), tagged(H2, H1, 9));
    drop(pass);

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

/// What the batcher reports lands in the port's counters: a refused frame
/// is a `tx-error` drop on the egress port.
#[test]
fn a_port_handle_counts_what_the_batcher_reports() {
    let r = rig(&[(1500, true)]);
    let port: &PortHandle = r.ports.get(PortId(1)).unwrap();
    port.count_sent(&[0; 60]);
    port.count_sent(&[0; 40]);
    port.count_coalesced(2);
    port.count_refused();
    let stats = port.counters.snapshot();
    assert_eq!((stats.tx_frames, stats.tx_bytes), (2, 100));
    assert_eq!((stats.tx_coalesced, stats.tx_superframes), (2, 1));
    assert_eq!((stats.tx_dropped, stats.drops["tx-error"]), (1, 1));
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

//! The batcher on fake ports: what each port was sent, in how many calls,
//! and what each port was told (no kernel).

use std::cell::RefCell;
use std::io;
use std::sync::Mutex;

use super::*;
use crate::memory::udp_datagram;
use crate::vnet;

/// A port's sending half that records every frame and every `send_batch`,
/// and refuses what it is told to refuse.
#[derive(Debug, Default)]
struct FakeTx {
    offloads: bool,
    /// Refuse UDP GSO super-frames, as a kernel before Linux 6.2 does.
    no_udp_gso: bool,
    /// Refuse frames whose last byte is this tag (a full queue, say).
    refuse_tag: Option<u8>,
    sent: Mutex<Vec<(VnetHdr, Vec<u8>)>>,
    /// The length of each `send_batch` call.
    batches: Mutex<Vec<usize>>,
}

impl PortTx for FakeTx {
    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        let refused = (self.no_udp_gso && vnet.gso_type == VnetHdr::GSO_UDP_L4)
            || self
                .refuse_tag
                .is_some_and(|tag| frame.last() == Some(&tag));
        if refused {
            return Err(io::Error::from_raw_os_error(22)); // EINVAL
        }
        self.sent.lock().unwrap().push((*vnet, frame.to_vec()));
        Ok(())
    }

    fn send_batch(&self, frames: &[(VnetHdr, &[u8])]) -> io::Result<usize> {
        self.batches.lock().unwrap().push(frames.len());
        for (sent, (vnet, frame)) in frames.iter().enumerate() {
            if let Err(err) = self.send(vnet, frame) {
                return if sent == 0 { Err(err) } else { Ok(sent) };
            }
        }
        Ok(frames.len())
    }

    fn offloads(&self) -> bool {
        self.offloads
    }

    fn mtu(&self) -> usize {
        1500
    }
}

/// What a port was told, as the switch's counters would hold it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    sent: u64,
    bytes: u64,
    coalesced: u64,
    superframes: u64,
    refused: u64,
}

#[derive(Debug, Default)]
struct FakePort {
    tx: FakeTx,
    tally: RefCell<Tally>,
}

impl Egress for FakePort {
    fn tx(&self) -> &dyn PortTx {
        &self.tx
    }

    fn count_sent(&self, frame: &[u8]) {
        let mut tally = self.tally.borrow_mut();
        tally.sent += 1;
        tally.bytes += frame.len() as u64;
    }

    fn count_coalesced(&self, datagrams: usize) {
        let mut tally = self.tally.borrow_mut();
        tally.coalesced += datagrams as u64;
        tally.superframes += 1;
    }

    fn count_refused(&self) {
        self.tally.borrow_mut().refused += 1;
    }
}

impl FakePort {
    fn offloading() -> Self {
        FakePort {
            tx: FakeTx {
                offloads: true,
                ..FakeTx::default()
            },
            ..FakePort::default()
        }
    }

    fn take_sent(&self) -> Vec<(VnetHdr, Vec<u8>)> {
        std::mem::take(&mut *self.tx.sent.lock().unwrap())
    }

    fn take_batches(&self) -> Vec<usize> {
        std::mem::take(&mut *self.tx.batches.lock().unwrap())
    }

    fn tally(&self) -> Tally {
        *self.tally.borrow()
    }
}

const HOLD: Batching = Batching::HoldUnicast {
    coalesce_udp: false,
};
const COALESCE: Batching = Batching::HoldUnicast { coalesce_udp: true };

/// A 60-byte frame whose last byte says which it is.
fn tagged(tag: u8) -> Vec<u8> {
    let mut f = vec![0xab; 60];
    f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    f[59] = tag;
    f
}

fn tags(sent: &[(VnetHdr, Vec<u8>)]) -> Vec<u8> {
    sent.iter().map(|(_, f)| f[f.len() - 1]).collect()
}

/// A TCP super-frame's header (cut into 1448-byte segments).
const TCP_GSO: VnetHdr = VnetHdr {
    flags: VnetHdr::NEEDS_CSUM,
    gso_type: VnetHdr::GSO_TCPV4,
    gso_size: 1448,
    hdr_len: 66,
    csum_start: 34,
    csum_offset: 16,
};

#[test]
fn held_frames_leave_when_the_pass_ends_each_port_in_one_batch_in_order() {
    let (p2, p3) = (FakePort::offloading(), FakePort::offloading());
    let mut batcher = Batcher::new(HOLD);
    let mut pass = batcher.pass();
    pass.push(&p2, &VnetHdr::default(), &tagged(1));
    pass.push(&p3, &VnetHdr::default(), &tagged(2));
    pass.push(&p2, &VnetHdr::default(), &tagged(3));
    assert!(p2.take_sent().is_empty(), "held until the pass ends");
    assert_eq!(p2.tally().sent, 0, "counted when sent, not when held");
    drop(pass);
    assert_eq!(tags(&p2.take_sent()), [1, 3]);
    assert_eq!(p2.take_batches(), [2], "one call for the port's share");
    assert_eq!(tags(&p3.take_sent()), [2]);
    assert_eq!(
        p2.tally(),
        Tally {
            sent: 2,
            bytes: 120,
            ..Tally::default()
        }
    );
    drop(batcher.pass::<FakePort>());
    assert!(p2.take_sent().is_empty(), "nothing is sent twice");
}

#[test]
fn a_frame_that_cannot_be_held_sends_the_held_ones_first() {
    let p2 = FakePort::offloading();
    let mut batcher = Batcher::new(HOLD);
    let mut pass = batcher.pass();
    pass.push(&p2, &VnetHdr::default(), &tagged(1));
    let mut big = vec![0u8; 20_000];
    big[19_999] = 2;
    pass.push(&p2, &TCP_GSO, &big);
    assert_eq!(tags(&p2.take_sent()), [1, 2], "in the order they came");
    drop(pass);
    assert!(p2.take_sent().is_empty());
}

#[test]
fn a_frame_sent_now_sends_the_held_ones_first() {
    let (p2, p3) = (FakePort::offloading(), FakePort::offloading());
    let mut batcher = Batcher::new(HOLD);
    let mut pass = batcher.pass();
    pass.push(&p2, &VnetHdr::default(), &tagged(1));
    pass.push(&p3, &VnetHdr::default(), &tagged(2));
    pass.send_now(&p3, &VnetHdr::default(), &tagged(3));
    assert_eq!(tags(&p2.take_sent()), [1], "every port's held frames go");
    assert_eq!(tags(&p3.take_sent()), [2, 3]);
}

#[test]
fn frames_for_plain_ports_and_without_batching_leave_at_once() {
    let plain = FakePort::default();
    let mut batcher = Batcher::new(HOLD);
    let mut pass = batcher.pass();
    pass.push(&plain, &VnetHdr::default(), &tagged(1));
    assert_eq!(tags(&plain.take_sent()), [1], "plain ports are not held");
    drop(pass);

    let p2 = FakePort::offloading();
    let mut batcher = Batcher::new(Batching::Off);
    let mut pass = batcher.pass();
    pass.push(&p2, &VnetHdr::default(), &tagged(7));
    assert_eq!(tags(&p2.take_sent()), [7]);
    assert_eq!(p2.tally().sent, 1);
}

#[test]
fn a_lone_held_frame_leaves_as_it_came_and_is_counted_once() {
    let mut p2 = FakePort::offloading();
    p2.tx.refuse_tag = Some(2);
    let mut batcher = Batcher::new(COALESCE);
    let mut sent = Vec::new();
    for tag in [1, 2] {
        let mut pass = batcher.pass();
        pass.push(&p2, &VnetHdr::default(), &tagged(tag));
        assert!(p2.take_sent().is_empty(), "held until the pass ends");
        drop(pass);
        sent.extend(p2.take_sent());
    }
    assert_eq!(tags(&sent), [1]);
    assert_eq!(p2.take_batches(), [1, 1], "one call per pass");
    let tally = p2.tally();
    assert_eq!((tally.sent, tally.bytes, tally.refused), (1, 60, 1));

    let datagram = udp_datagram(1, 100);
    let mut pass = batcher.pass();
    pass.push(&p2, &datagram.0, &datagram.1);
    drop(pass);
    assert_eq!(p2.take_sent(), [datagram], "a run of one is not merged");
    assert_eq!(p2.tally().superframes, 0);
    drop(batcher.pass::<FakePort>());
    assert!(p2.take_sent().is_empty(), "nothing is sent twice");
}

#[test]
fn a_full_pass_sends_what_it_holds_and_goes_on_in_order() {
    let p2 = FakePort::offloading();
    let mut batcher = Batcher::new(HOLD);
    let mut pass = batcher.pass();
    for tag in 0..=MAX_HELD as u8 {
        pass.push(&p2, &VnetHdr::default(), &tagged(tag));
    }
    assert_eq!(p2.take_sent().len(), MAX_HELD, "the first ones left");
    drop(pass);
    assert_eq!(tags(&p2.take_sent()), [MAX_HELD as u8]);
    assert_eq!(p2.take_batches(), [MAX_HELD, 1]);
    assert_eq!(p2.tally().sent, MAX_HELD as u64 + 1);
}

#[test]
fn refused_frames_are_counted_and_the_rest_still_go() {
    let mut p2 = FakePort::offloading();
    p2.tx.refuse_tag = Some(2);
    let mut batcher = Batcher::new(HOLD);
    let mut pass = batcher.pass();
    for tag in [1, 2, 3, 2] {
        pass.push(&p2, &VnetHdr::default(), &tagged(tag));
    }
    drop(pass);
    assert_eq!(tags(&p2.take_sent()), [1, 3]);
    let tally = p2.tally();
    assert_eq!((tally.sent, tally.refused), (2, 2));

    let mut pass = batcher.pass();
    pass.send_now(&p2, &VnetHdr::default(), &tagged(2));
    drop(pass);
    assert_eq!(p2.tally().refused, 3, "a frame sent now counts the same");
}

#[test]
fn a_run_of_one_udp_flow_leaves_as_one_super_frame_counted_per_datagram() {
    let p2 = FakePort::offloading();
    let mut batcher = Batcher::new(COALESCE);
    let datagrams: Vec<_> = (0..4).map(|i| udp_datagram(700 + i, 64)).collect();
    let mut pass = batcher.pass();
    for (vnet, f) in &datagrams {
        pass.push(&p2, vnet, f);
    }
    pass.push(&p2, &VnetHdr::default(), &tagged(9));
    drop(pass);

    let sent = p2.take_sent();
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

    let tally = p2.tally();
    assert_eq!(tally.sent, 5, "each datagram counts");
    let datagram_bytes: u64 = datagrams.iter().map(|(_, f)| f.len() as u64).sum();
    assert_eq!(tally.bytes, datagram_bytes + 60, "as they came, not merged");
    assert_eq!((tally.coalesced, tally.superframes), (4, 1));
    assert_eq!(p2.take_batches(), [2], "the super-frame and the frame");
}

#[test]
fn a_refused_super_frame_is_sent_as_the_datagrams_it_carries() {
    let mut old_kernel = FakePort::offloading();
    old_kernel.tx.no_udp_gso = true;
    let mut batcher = Batcher::new(COALESCE);
    let datagrams: Vec<_> = (0..3).map(|i| udp_datagram(9 + i, 20)).collect();
    let mut pass = batcher.pass();
    for (vnet, f) in &datagrams {
        pass.push(&old_kernel, vnet, f);
    }
    drop(pass);
    assert_eq!(
        old_kernel.take_sent(),
        datagrams,
        "one by one, as they came"
    );
    let tally = old_kernel.tally();
    assert_eq!(
        (tally.sent, tally.coalesced, tally.refused),
        (3, 0, 0),
        "the datagrams count, the refused super-frame does not"
    );
}

#[test]
fn without_coalescing_every_datagram_leaves_as_it_came() {
    let p2 = FakePort::offloading();
    let mut batcher = Batcher::new(HOLD);
    let datagrams: Vec<_> = (0..4).map(|i| udp_datagram(700 + i, 64)).collect();
    let mut pass = batcher.pass();
    for (vnet, f) in &datagrams {
        pass.push(&p2, vnet, f);
    }
    drop(pass);
    assert_eq!(p2.take_sent(), datagrams);
    let tally = p2.tally();
    assert_eq!((tally.sent, tally.coalesced), (4, 0));
}

#[test]
fn a_leaked_pass_leaves_nothing_for_the_next_one() {
    let (p2, p3) = (FakePort::offloading(), FakePort::offloading());
    let mut batcher = Batcher::new(HOLD);
    let mut pass = batcher.pass();
    pass.push(&p2, &VnetHdr::default(), &tagged(1));
    std::mem::forget(pass);
    let mut pass = batcher.pass();
    pass.push(&p3, &VnetHdr::default(), &tagged(2));
    drop(pass);
    assert!(p2.take_sent().is_empty(), "its port is not known any more");
    assert_eq!(tags(&p3.take_sent()), [2]);
}

//! After a batch sent unicast frames, the sending worker reads the ports
//! it sent to at once, where answers are likely waiting already (a veth's
//! or TAP's receiver answers inside the send), but never a tunnel's: its
//! answers come from another host, later (`PortKind::answers_within_send`),
//! and never for an answer itself. The reads are counted through a test
//! double, never timed.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use ports::PortTx;

use super::*;

const HOST_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];

/// A lane that counts its reads.
#[derive(Debug)]
struct CountingRx {
    inner: MemoryRx,
    reads: Arc<AtomicUsize>,
}

impl PortRx for CountingRx {
    fn recv_batch(&mut self, batch: &mut RxBatch) -> Result<usize, RxError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.recv_batch(batch)
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.raw_fd()
    }
}

/// A port of one lane whose reads are counted.
struct CountedPort {
    lanes: MemoryLanes,
    reads: Arc<AtomicUsize>,
}

impl CountedPort {
    fn new(kind: PortKind) -> Self {
        CountedPort {
            lanes: MemoryLanes::new(1).of_kind(kind),
            reads: Arc::default(),
        }
    }

    fn opener(&self) -> impl FnOnce(usize) -> Result<OpenedPort, PortError> + use<> {
        self.lanes
            .opener_wrapped(vec![self.reads.clone()], |inner, reads| {
                Box::new(CountingRx { inner, reads })
            })
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }
}

/// How often the worker read the lane of port `b`, of `kind`, because it
/// had just sent a frame to it. One worker, so everything it does comes
/// in order: a frame to ordinary port `c` afterwards, whose answer read
/// the test waits for, comes after any answer read of `b`.
fn answer_reads_after_a_send_to(kind: PortKind) -> usize {
    let dp = start(1, None);
    let a = MemoryLanes::new(1);
    let (b, c) = (CountedPort::new(kind), CountedPort::new(PortKind::Memory));
    dp.add_port("a", a.opener()).unwrap();
    dp.add_port("b", b.opener()).unwrap();
    dp.add_port("c", c.opener()).unwrap();
    b.lanes.inject(&frame(BROADCAST, HOST_B, 0));
    c.lanes.inject(&frame(BROADCAST, HOST_C, 0));
    wait_for("HOST_B and HOST_C learned", || {
        let entries = dp.engine().table().entries(dp.clock().now());
        [HOST_B, HOST_C]
            .iter()
            .all(|host| entries.iter().any(|e| e.mac == MacAddr(*host)))
    });
    // Each step ends with a frame to `c` and waits for its answer read:
    // the worker is then done with everything before.
    let settle = || {
        let before = c.reads();
        a.inject(&frame(HOST_C, HOST_A, 1));
        wait_for("c read for answers", || c.reads() > before);
    };
    settle();
    let before = b.reads();
    a.inject(&frame(HOST_B, HOST_A, 2));
    // `b` got HOST_C's broadcast before: wait for this very frame.
    let mut got = Vec::new();
    wait_for("the frame at b", || {
        collect(&b.lanes.tx, &mut got);
        got.contains(&2)
    });
    settle();
    let answer_reads = b.reads() - before;
    dp.shutdown();
    answer_reads
}

#[test]
fn a_port_is_read_for_answers_right_after_a_send_to_it() {
    assert_eq!(answer_reads_after_a_send_to(PortKind::Memory), 1);
}

#[test]
fn a_tunnel_is_not_read_for_answers_after_a_send_to_it() {
    assert_eq!(
        answer_reads_after_a_send_to(PortKind::Vxlan),
        0,
        "its answers come from another host, later"
    );
}

/// The sending half of a port whose host answers inside the send, as a
/// veth's or TAP's receiver does: every frame to `host` but an answer puts
/// the answer (to the frame's sender, sequence number `ANSWER`) in the
/// port's lane.
#[derive(Debug)]
struct AnsweringTx {
    inner: MemoryTx,
    lane: MemoryRx,
    host: [u8; 6],
}

const ANSWER: u32 = 100;

impl PortTx for AnsweringTx {
    fn send(&self, vnet: &VnetHdr, sent: &[u8]) -> io::Result<()> {
        self.inner.send(vnet, sent)?;
        if sent[..6] == self.host && seq_of(sent) != ANSWER {
            let asker: [u8; 6] = sent[6..12].try_into().unwrap();
            self.lane
                .inject(VnetHdr::default(), &frame(asker, self.host, ANSWER));
        }
        Ok(())
    }

    fn offloads(&self) -> bool {
        self.inner.offloads()
    }

    fn mtu(&self) -> usize {
        self.inner.mtu()
    }
}

/// A port of one lane where `host` answers every frame sent to it.
fn answering_port(
    host: [u8; 6],
) -> (
    MemoryLanes,
    impl FnOnce(usize) -> Result<OpenedPort, PortError>,
) {
    let lanes = MemoryLanes::new(1);
    let (lane, inner) = (lanes.rx[0].clone(), lanes.tx.clone());
    let opener = move |_| {
        Ok(OpenedPort {
            kind: PortKind::Memory,
            lanes: vec![Box::new(lane.clone()) as Box<dyn PortRx>],
            tx: Arc::new(AnsweringTx { inner, lane, host }),
            steering: None,
            kernel_path: None,
        })
    };
    (lanes, opener)
}

#[test]
fn an_answer_is_forwarded_without_a_look_for_an_answer_to_it() {
    let dp = start(1, None);
    let a = CountedPort::new(PortKind::Memory);
    let (b, b_opener) = answering_port(HOST_B);
    let (c, c_opener) = answering_port(HOST_C);
    dp.add_port("a", a.opener()).unwrap();
    dp.add_port("b", b_opener).unwrap();
    dp.add_port("c", c_opener).unwrap();
    b.inject(&frame(BROADCAST, HOST_B, 0));
    c.inject(&frame(BROADCAST, HOST_C, 0));
    wait_for("HOST_B and HOST_C learned", || {
        let entries = dp.engine().table().entries(dp.clock().now());
        [HOST_B, HOST_C]
            .iter()
            .all(|host| entries.iter().any(|e| e.mac == MacAddr(*host)))
    });
    let before = a.reads();
    a.lanes.inject(&frame(HOST_B, HOST_A, 1));
    let mut got = Vec::new();
    wait_for("HOST_B's answer at a", || {
        collect(&a.lanes.tx, &mut got);
        got.contains(&ANSWER)
    });
    // A round trip between b and c, which only that one worker forwards,
    // after whatever it did next: a look at a's lane would come first.
    b.inject(&frame(HOST_C, HOST_B, 2));
    let mut at_b = Vec::new();
    wait_for("HOST_C's answer at b", || {
        collect(&b.tx, &mut at_b);
        at_b.contains(&ANSWER)
    });
    let reads = a.reads() - before;
    dp.shutdown();
    assert_eq!(
        reads, 1,
        "a was read for its frame, and not for an answer to b's answer"
    );
}

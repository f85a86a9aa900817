//! An `--iface` port's receive half read a frame at a time (`recvmsg`, as
//! the switch reads while traffic is light) and until empty (`recvmmsg`):
//! each read takes what it should, in order, byte for byte, with VLAN tags
//! put back, and a one-frame read leaves the rest queued. Needs root; CI
//! runs it as root.
//!
//! ```text
//!   one namespace:  host (test frames sent here) ═══ port (read by the test)
//! ```

use std::time::{Duration, Instant};

use ports::{PortRx, ReadDepth, RxBatch};
use tapswitch_tests::frames::{mac, probe, probe_vlan};
use tapswitch_tests::netns::Netns;
use tapswitch_tests::require_root;
use tapswitch_tests::traffic::Station;

/// Reads `rx` once at `depth`, waiting (up to 5 s) for the first frame to
/// come through the veth; the frames read.
fn read(rx: &mut dyn PortRx, batch: &mut RxBatch, depth: ReadDepth) -> Vec<Vec<u8>> {
    batch.set_depth(depth);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = rx.recv_batch(batch).expect("reading the port");
        if n > 0 || Instant::now() > deadline {
            return (0..n).map(|i| batch.get(i).1.to_vec()).collect();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_one_frame_read_takes_one_frame_with_its_vlan_tag_and_leaves_the_rest() {
    require_root();
    let ns = Netns::new("pr");
    ns.ip(&[
        "link", "add", "port", "type", "veth", "peer", "name", "host",
    ]);
    ns.ip(&["link", "set", "port", "up"]);
    ns.ip(&["link", "set", "host", "up"]);
    let (mut rx, _tx) = ns
        .run(|| ports::packet::open("port"))
        .unwrap_or_else(|e| panic!("{e}"));
    let sender = Station::open(&ns, "host");
    let (dst, src) = (mac("02:00:00:00:00:0b"), mac("02:00:00:00:00:0a"));
    let frames = [
        probe_vlan(dst, src, 100, 1, 64),
        probe(dst, src, 2, 1514),
        probe_vlan(dst, src, 4000, 3, 1518),
        probe(dst, src, 4, 64),
    ];
    sender.send_all(frames.iter().map(Vec::as_slice));

    let mut batch = RxBatch::new(8, ports::MAX_FRAME_LEN);
    assert_eq!(
        read(&mut rx, &mut batch, ReadDepth::OneFrame),
        [frames[0].clone()]
    );
    assert_eq!(
        read(&mut rx, &mut batch, ReadDepth::OneFrame),
        [frames[1].clone()]
    );
    assert_eq!(
        read(&mut rx, &mut batch, ReadDepth::UntilEmpty),
        frames[2..].to_vec(),
        "the rest in one batch"
    );
    batch.set_depth(ReadDepth::OneFrame);
    assert_eq!(
        rx.recv_batch(&mut batch).expect("reading the port"),
        0,
        "empty"
    );
}

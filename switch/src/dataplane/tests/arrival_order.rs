//! A port without a ledger whose lanes say when each frame arrived (a
//! rootless port) is read per CPU, and its readers put the frames of its
//! lanes back in the order they arrived (`lanes.rs`,
//! `LaneReader::forward_by_arrival`); one whose lanes cannot say is read
//! by port also while traffic is light.

use super::hand_over::send_across_mode_changes;
use super::*;

const N: u32 = 3000;
const ROUND: u32 = 300;

/// Frames `first..first + ROUND` of one sender that moves between two CPUs
/// every `run` frames: they alternate between the lanes in runs of `run`,
/// each with the time it arrived (in the order sent).
fn moving_sender(a: &MemoryLanes, first: u32, run: u32) {
    for seq in first..first + ROUND {
        let lane = (seq / run % 2) as usize;
        let arrived = 1_000_000 + u64::from(seq) * 1_000;
        a.rx[lane].inject_at(VnetHdr::default(), &frame(HOST_B, HOST_A, seq), arrived);
    }
}

/// Sends [`N`] frames of the moving sender from `a` to `b`, a round at a
/// time while both workers read, and returns them in the order `b` got
/// them.
fn send_across(dp: &Dataplane, a: &MemoryLanes, b: &MemoryLanes) -> Vec<u32> {
    learn_b(dp, a, b);
    let mut got = Vec::new();
    for round in 0..N / ROUND {
        moving_sender(a, round * ROUND, 3);
        wait_for("the round", || {
            collect(&b.tx, &mut got) >= ((round + 1) * ROUND) as usize
        });
    }
    got
}

#[test]
fn a_port_without_a_ledger_is_read_per_cpu_in_the_order_its_frames_arrived() {
    let dp = start_with_mode_changed_by_test(2);
    let a = MemoryLanes::new(2).without_ledger().keeping_arrival_times();
    let b = MemoryLanes::new(1);
    let pa = dp.add_port("a", a.opener()).unwrap();
    dp.add_port("b", b.opener()).unwrap();
    let reading = dp.reading_of(pa).expect("read in lanes");
    assert_eq!(
        (reading.mode, reading.ledger),
        (ReadMode::ByCpu, false),
        "read per CPU without a ledger"
    );
    let got = send_across(&dp, &a, &b);
    assert_in_order(&got, N, "two lanes' frames, in the order they arrived");
    dp.shutdown();
}

#[test]
fn a_port_read_in_arrival_order_keeps_its_order_across_mode_changes() {
    let dp = start_with_mode_changed_by_test(2);
    let a = MemoryLanes::new(2).without_ledger().keeping_arrival_times();
    let b = MemoryLanes::new(1);
    dp.add_port("a", a.opener()).unwrap();
    dp.add_port("b", b.opener()).unwrap();
    learn_b(&dp, &a, &b);
    // A sender moving between the two CPUs every 3 frames, while the
    // switch changes mode under it: per CPU its frames are in both lanes,
    // by port in the solo lane, and the hand-over and the arrival order
    // meet at each change.
    let got = send_across_mode_changes(&dp, &b, N, |seq| {
        let cpu = (seq / 3 % 2) as usize;
        let arrived = 1_000_000 + u64::from(seq) * 1_000;
        a.steering
            .land_at(cpu, &a.rx, &frame(HOST_B, HOST_A, seq), arrived);
    });
    let calls = a.steering.calls.lock().unwrap().clone();
    assert_in_order(&got, N, &format!("steered {calls:?}"));
    assert!(calls.contains(&(ReadMode::ByCpu, 0)) || calls.contains(&(ReadMode::ByCpu, 1)));
    assert!(
        calls.iter().any(|(mode, _)| *mode == ReadMode::ByPort),
        "{calls:?}"
    );
    dp.shutdown();
}

#[test]
fn a_port_without_a_ledger_or_arrival_times_is_read_by_port_while_light() {
    let dp = start_with_mode_changed_by_test(2);
    let a = MemoryLanes::new(2).without_ledger();
    let b = MemoryLanes::new(1);
    let pa = dp.add_port("a", a.opener()).unwrap();
    dp.add_port("b", b.opener()).unwrap();
    assert_eq!(dp.metrics().reading, ReadMode::ByCpu, "the switch's mode");
    let reading = dp.reading_of(pa).expect("read in lanes");
    assert_eq!(reading.mode, ReadMode::ByPort, "the port's");
    let (mode, solo) = a.steering.now.lock().unwrap().expect("steered when added");
    assert_eq!(mode, ReadMode::ByPort);
    // Its frames land in the solo lane, as the kernel would put them.
    learn_b(&dp, &a, &b);
    let mut got = Vec::new();
    for seq in 0..N {
        a.rx[solo].inject(VnetHdr::default(), &frame(HOST_B, HOST_A, seq));
    }
    wait_for("every frame at b", || {
        collect(&b.tx, &mut got) >= N as usize
    });
    assert_in_order(&got, N, "one lane");
    dp.shutdown();
}

//! The steering program run by the kernel (BPF_PROG_TEST_RUN) against its
//! ledger. Needs root (CAP_BPF); without it each test says so and passes.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::*;

fn as_root(test: &str) -> bool {
    let (uid, _) = crate::sys::namespace::effective_ids();
    if uid != 0 {
        eprintln!("skipping {test}: a ledger and its program need root (CAP_BPF)");
    }
    uid == 0
}

/// Runs the steering program for `target` once; returns the lane.
fn steer(ledger: &LaneLedger, target: Option<u32>) -> usize {
    let program = ledger.load_steering(target).expect("loading the steering");
    let frame = [0u8; 60];
    sys::bpf::test_run(program.as_fd(), &frame, 1).expect("running it") as usize
}

fn lane(ledger: &Arc<LaneLedger>, at: usize) -> LedgerLane {
    LedgerLane::new(ledger.clone(), at)
}

#[test]
fn a_port_moves_to_the_lane_wanted_only_once_its_last_lane_is_done_with() {
    if !as_root("a_port_moves_...") {
        return;
    }
    let ledger = Arc::new(LaneLedger::new(2).expect("a ledger"));
    // Nothing queued anywhere: straight to the lane wanted.
    assert_eq!(steer(&ledger, Some(1)), 1);
    assert_eq!((ledger.last_lane(), ledger.queued(1)), (1, 1));
    // Lane 1 holds a frame: lane 0 is wanted, the frame goes behind it.
    assert_eq!(steer(&ledger, Some(0)), 1);
    assert_eq!((ledger.queued(0), ledger.queued(1)), (0, 2));
    // One of the two forwarded: still behind the other.
    lane(&ledger, 1).forwarded(1);
    assert_eq!(steer(&ledger, Some(0)), 1);
    assert_eq!(ledger.queued(1), 3);
    // All forwarded: the port moves.
    lane(&ledger, 1).forwarded(2);
    assert_eq!(steer(&ledger, Some(0)), 0);
    assert_eq!(
        (ledger.last_lane(), ledger.queued(0), ledger.taken(1)),
        (0, 1, 3)
    );
    // The lane it is in is always fine, drained or not.
    assert_eq!(steer(&ledger, Some(0)), 0);
    assert_eq!(ledger.queued(0), 2);
}

#[test]
fn by_cpu_the_lane_wanted_is_the_cpus() {
    if !as_root("by_cpu_the_lane_wanted_is_the_cpus") {
        return;
    }
    let cpus = crate::cpu::allowed_cpus().expect("allowed CPUs");
    let ledger = Arc::new(LaneLedger::new(4).expect("a ledger"));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for &cpu in &cpus {
                crate::cpu::pin_current_thread(&[cpu]).expect("pinning");
                let last = ledger.last_lane();
                let backlog = ledger.queued(last) - ledger.taken(last);
                lane(&ledger, last).forwarded(backlog as usize);
                assert_eq!(steer(&ledger, None), cpu % 4, "on CPU {cpu}");
            }
        });
    });
}

#[test]
fn a_lane_that_lost_frames_no_count_saw_is_settled_once_quiet_and_empty() {
    if !as_root("a_lane_that_lost_frames...") {
        return;
    }
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let quiet = SETTLE_QUIET.as_millis() as u64;
    let ledger = Arc::new(LaneLedger::new(2).expect("a ledger"));
    let mut lane0 = lane(&ledger, 0);
    steer(&ledger, Some(0));
    steer(&ledger, Some(0));
    // Two queued, one forwarded, the other lost.
    lane0.forwarded(1);
    let settle = |lane: &mut LedgerLane, empty: bool, ms: u64| lane.settle(|| empty, at(ms));
    assert_eq!(
        settle(&mut lane0, true, 0),
        Some(0),
        "first seen behind: wait"
    );
    assert_eq!(
        settle(&mut lane0, true, quiet - 1),
        Some(0),
        "not quiet long enough"
    );
    steer(&ledger, Some(0));
    assert_eq!(
        settle(&mut lane0, true, quiet),
        Some(0),
        "a frame since: again"
    );
    assert_eq!(
        settle(&mut lane0, false, 2 * quiet),
        Some(0),
        "not empty: it is there"
    );
    lane0.forwarded(1);
    assert_eq!(
        settle(&mut lane0, true, 2 * quiet),
        Some(0),
        "empty again: from now"
    );
    assert_eq!(
        settle(&mut lane0, true, 3 * quiet),
        Some(1),
        "quiet, empty: one lost"
    );
    assert_eq!(ledger.queued(0), ledger.taken(0));
    assert_eq!(settle(&mut lane0, true, 4 * quiet), None, "in step");
    assert_eq!(steer(&ledger, Some(1)), 1, "and the port can move");
}

#[test]
fn dropped_frames_count_as_taken() {
    if !as_root("dropped_frames_count_as_taken") {
        return;
    }
    let ledger = Arc::new(LaneLedger::new(2).expect("a ledger"));
    for _ in 0..3 {
        steer(&ledger, Some(0));
    }
    lane(&ledger, 0).forwarded(1);
    lane(&ledger, 0).dropped(2);
    assert_eq!(steer(&ledger, Some(1)), 1);
}

#[test]
fn ledgers_share_a_page_and_count_apart() {
    if !as_root("ledgers_share_a_page_and_count_apart") {
        return;
    }
    let one = Arc::new(LaneLedger::new(2).expect("a ledger"));
    let two = Arc::new(LaneLedger::new(2).expect("another"));
    assert_eq!(one.map_fd(), two.map_fd(), "one book for both");
    assert_ne!(one.taken_offset(0), two.taken_offset(0), "two slots");
    steer(&one, Some(1));
    steer(&one, Some(1));
    assert_eq!(steer(&two, Some(0)), 0);
    assert_eq!((one.queued(1), two.queued(1), two.queued(0)), (2, 0, 1));
    // `one` holds frames in lane 1; `two`, its frame forwarded, may move.
    lane(&two, 0).forwarded(1);
    assert_eq!(steer(&two, Some(1)), 1);
    assert_eq!(steer(&one, Some(0)), 1, "one stays behind its frames");
}

//! The housekeeping thread rests while the switch is quiet: until the
//! table's first address expires, or until woken when it holds none; a
//! frame or a new port wakes it. Watched through its resting mark and the
//! table's events, never timed.

use super::*;

/// Long enough for the thread to rest between the last frame and the
/// expiry (two housekeeping seconds of no reads), short enough to wait for.
const AGEING_SECS: u64 = 6;

#[test]
fn the_housekeeping_thread_rests_until_the_first_expiry_and_a_frame_wakes_it() {
    let mut config = config(1, None);
    config.table = TableConfig::default().with_ageing_secs(AGEING_SECS);
    let dp = Dataplane::start(config).unwrap();
    let rest = || dp.shared.rest.is_resting();
    let (a, b) = (MemoryLanes::new(1), MemoryLanes::new(1));
    dp.add_port("a", a.opener()).unwrap();
    dp.add_port("b", b.opener()).unwrap();
    wait_for("rest with nothing learned", rest);

    let sub = dp.event_bus().subscribe();
    learn_b(&dp, &a, &b);
    wait_for("the frame wakes it", || !rest());
    wait_for("rest while HOST_B is known", rest);
    let known = |dp: &Dataplane| {
        dp.engine()
            .table()
            .entries(dp.clock().now())
            .iter()
            .any(|e| e.mac == MacAddr(HOST_B))
    };
    assert!(known(&dp), "resting before HOST_B expires");

    // Nothing else wakes it: its timer sweeps HOST_B out.
    loop {
        match next_event(&sub) {
            SwitchEvent::Expired { mac, .. } if mac == MacAddr(HOST_B) => break,
            _ => {}
        }
    }
    wait_for("rest with nothing to age", rest);

    a.inject(&frame(BROADCAST, HOST_A, 1));
    wait_for("a frame wakes it", || !rest());
    wait_for("rest again", rest);
    let c = MemoryLanes::new(1);
    dp.add_port("c", c.opener()).unwrap();
    wait_for("a new port wakes it", || !rest());
    dp.shutdown();
}

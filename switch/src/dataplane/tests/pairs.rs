//! Under load, two ports that talk to each other are read by one worker
//! when one carries several bulk flows, else by a worker each
//! (`pairing.rs`); two pairs get a worker each. The steerings the kernel
//! was told are recorded by the memory ports' test double.

use super::*;

const HOST_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const HOST_D: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0d];

/// A port of a lane per worker, attached as `name`, whose host is `mac`.
struct Talker {
    lanes: MemoryLanes,
    mac: [u8; 6],
}

/// The solo lane port `lanes` was last steered to by port, once the
/// housekeeping thread steered it so.
fn solo_by_port(lanes: &MemoryLanes) -> usize {
    let mut solo = None;
    wait_for("the port steered by port", || {
        solo = match *lanes.steering.now.lock().unwrap() {
            Some((ReadMode::ByPort, solo)) => Some(solo),
            _ => None,
        };
        solo.is_some()
    });
    solo.unwrap()
}

/// A bulk TCP frame (larger than an Ethernet MTU) from `src` to `dst`, of
/// the flow from TCP port `from`.
fn bulk_frame(dst: [u8; 6], src: [u8; 6], from: u16) -> Vec<u8> {
    let mut f = vec![0u8; 4000];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&(4000u16 - 14).to_be_bytes());
    f[23] = 6;
    f[26..34].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f[34..36].copy_from_slice(&from.to_be_bytes());
    f
}

/// Attaches `hosts` as ports of two lanes each, lets each pair (0↔1, 2↔3,
/// ...) exchange frames both ways, the first of each pair sending bulk
/// frames of `flows` flows in turn, then makes the switch busy: returns
/// the solo lane each port is read in.
fn solos_after_talking(hosts: &[[u8; 6]], flows: u16) -> Vec<usize> {
    let dp = start_with_mode_changed_by_test(2);
    let talkers: Vec<Talker> = hosts
        .iter()
        .map(|&mac| Talker {
            lanes: MemoryLanes::new(2),
            mac,
        })
        .collect();
    for (i, talker) in talkers.iter().enumerate() {
        dp.add_port(&format!("p{i}"), talker.lanes.opener())
            .unwrap();
    }
    // Every host announces itself (learned by the switch), then each pair
    // exchanges a unicast frame each way.
    for talker in &talkers {
        talker.lanes.inject(&frame(BROADCAST, talker.mac, 0));
    }
    wait_for("every host learned", || {
        dp.engine().table().entries(dp.clock().now()).len() == hosts.len()
    });
    for pair in talkers.chunks(2) {
        let [one, other] = pair else { continue };
        one.lanes.inject(&frame(other.mac, one.mac, 1));
        other.lanes.inject(&frame(one.mac, other.mac, 2));
    }
    for talker in &talkers {
        wait_for("the pair's frame", || {
            talker
                .lanes
                .tx
                .take_sent()
                .iter()
                .any(|(_, f)| seq_of(f) > 0)
        });
    }
    let lanes = dp.shared.lanes_by_port();
    for (i, pair) in talkers.chunks(2).enumerate() {
        let [one, other] = pair else { continue };
        for n in 0..32 {
            one.lanes
                .inject(&bulk_frame(other.mac, one.mac, 40000 + n % flows));
        }
        let port = &lanes[&PortId(2 * i as u32 + 1)];
        wait_for("the bulk frames read", || {
            port.steering.read_lately() && (flows == 1 || port.talk.several_flows())
        });
    }
    dp.shared.worker_load_changed(true);
    let solos = talkers.iter().map(|t| solo_by_port(&t.lanes)).collect();
    dp.shutdown();
    solos
}

#[test]
fn a_pair_of_ports_with_several_bulk_flows_is_read_by_one_worker_under_load() {
    // Attached in a row, the two got their solo lanes on different workers
    // (see `ports_attached_in_a_row_get_their_solo_lanes_spread_over_the_workers`).
    let solos = solos_after_talking(&[HOST_A, HOST_B], 2);
    assert_eq!(solos[0], solos[1], "{solos:?}");
}

#[test]
fn a_pair_of_ports_with_one_bulk_flow_is_read_by_a_worker_each_under_load() {
    let solos = solos_after_talking(&[HOST_A, HOST_B], 1);
    assert_ne!(solos[0], solos[1], "{solos:?}");
}

#[test]
fn two_pairs_of_ports_get_a_worker_each_under_load() {
    let solos = solos_after_talking(&[HOST_A, HOST_B, HOST_C, HOST_D], 2);
    assert_eq!(solos[0], solos[1], "{solos:?}");
    assert_eq!(solos[2], solos[3], "{solos:?}");
    assert_ne!(solos[0], solos[2], "{solos:?}");
}

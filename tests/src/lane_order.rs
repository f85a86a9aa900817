//! Whether a switch reading its ports in lanes keeps a sender's frames in
//! order: numbered probes, the check that every one arrived once and in
//! its sender's order, and the scenario that once broke it, one sender
//! that moves between CPUs while the switch reads per CPU (`tests/lanes.rs`
//! as root, `tests/rootless.rs` rootless).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::SwitchProcess;
use crate::frames::{mac, probe};
use crate::poll::within;
use crate::rootless_user::RootlessUser;
use crate::traffic::Station;

/// How long a receiver waits for quiet before it counts what it got.
const WINDOW: Duration = Duration::from_millis(150);

/// What the moving sender's check asks of a running switch: its `info`
/// and its `ports`, as the control socket gives them.
pub trait SwitchView {
    fn info(&self) -> serde_json::Value;
    fn ports(&self) -> serde_json::Value;
}

impl SwitchView for SwitchProcess {
    fn info(&self) -> serde_json::Value {
        SwitchProcess::info(self)
    }
    fn ports(&self) -> serde_json::Value {
        SwitchProcess::ports(self)
    }
}

/// A rootless user's switch, asked through the user's own `tapswitch`.
impl SwitchView for RootlessUser {
    fn info(&self) -> serde_json::Value {
        let stats: serde_json::Value =
            serde_json::from_str(&self.ok(&["stats", "--json"])).expect("stats --json");
        stats["switch"].clone()
    }
    fn ports(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["ports", "--json"])).expect("ports --json")
    }
}

/// How the switch reads its ports read in lanes, and how often that changed.
pub fn reading(switch: &dyn SwitchView) -> (String, u64) {
    let info = switch.info();
    (
        info["reading"].as_str().unwrap_or_default().to_string(),
        info["reading_changes"].as_u64().unwrap_or_default(),
    )
}

/// A probe id that says which sender (round and CPU) sent it, and when.
pub fn probe_number(round: u32, cpu: usize, seq: u32) -> u32 {
    (round << 24) | ((cpu as u32) << 16) | seq
}

/// Checks that `got` holds every id of `sent` exactly once and that each
/// sender's frames kept their order.
pub fn assert_once_and_in_order(sent: &[u32], got: &[u32], what: &str) {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for id in got {
        *counts.entry(*id).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: frames delivered twice: {twice:?}"
    );
    let missing: Vec<_> = sent.iter().filter(|id| !counts.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {} frames lost, e.g. {:x?}",
        missing.len(),
        sent.len(),
        &missing[..missing.len().min(5)]
    );
    // Every frame that arrives after one its sender sent later was
    // overtaken; all of them are counted, so a failure says how bad it was.
    let mut latest: HashMap<u32, u32> = HashMap::new();
    let mut overtaken: Vec<(u32, u32)> = Vec::new();
    for id in got {
        let sender = id >> 16;
        match latest.get(&sender) {
            Some(&later) if later > *id => overtaken.push((*id, later)),
            _ => {
                latest.insert(sender, *id);
            }
        }
    }
    assert!(
        overtaken.is_empty(),
        "{what}: {} of {} frames were overtaken by a frame their sender sent later, e.g. (frame, overtaken by) {:x?}",
        overtaken.len(),
        got.len(),
        &overtaken[..overtaken.len().min(5)]
    );
}

/// The sender field of the moving sender's probe ids: it sends from every
/// CPU, so its ids name none, and all of them belong to one sender.
const MOVING_SENDER: usize = 0xff;
/// Frames the moving sender sends back to back on one CPU before it moves.
const BURST: usize = 4;
/// Bursts (each on the next CPU) between two rests.
const BURSTS_BETWEEN_RESTS: usize = 3;
/// The moving sender's rest, which keeps traffic light: no worker may get
/// busy, or the switch reads per port and the gap under test is not there.
const REST: Duration = Duration::from_millis(3);
/// Frames of the moving sender's stream (600 moves).
const MOVING_FRAMES: usize = 2_400;
/// The moving sender's switch keeps its workers ordinary threads with short
/// time slices while traffic is light, not real-time ones. A real-time
/// worker woken by a frame takes the sender's CPU before the sender's next
/// system call, so a sender that moves itself has no frame left in the old
/// lane when it moves: with real-time workers this test never failed before
/// the lanes' ledger (0 of 46 runs). There the gap opened only when the
/// sender was moved while it waited for its CPU (the kernel balancing its
/// load; another thread moving the sender did it in 8 of 20 runs, 1 to 4
/// frames overtaken). With short slices the sender finishes its burst and
/// moves while the old lane still holds frames: every run failed before
/// the ledger (10 of 10 per test, 140 to 520 of 2,400 frames overtaken in
/// a debug build). Short slices are also what the switch uses wherever
/// real-time is refused (rootless mode, for one).
pub const SHORT_SLICES: &str = "--no-realtime";

/// An allowed CPU for each of the two lanes (a frame sent on CPU `c` goes
/// to lane `c % 2`), or `None`, said on stderr, where the allowed CPUs do
/// not feed both: then a sender cannot put its frames in two lanes.
pub fn one_cpu_per_lane() -> Option<[usize; 2]> {
    let allowed = ports::cpu::allowed_cpus().expect("allowed CPUs");
    let first = |lane| ports::cpu::lane_cpus(lane, 2, &allowed).first().copied();
    match (first(0), first(1)) {
        (Some(even), Some(odd)) => Some([even, odd]),
        _ => {
            eprintln!(
                "skipped: the allowed CPUs {allowed:?} all feed one lane of two; a sender that moves between CPUs needs one of each"
            );
            None
        }
    }
}

/// [`one_cpu_per_lane`] where veth ports are read in lanes; `None`, said
/// on stderr, where they are not (before Linux 6.5).
pub fn veth_cpus_for_a_moving_sender() -> Option<[usize; 2]> {
    let cpus = one_cpu_per_lane()?;
    if !ports::packet::lanes_supported() {
        eprintln!(
            "skipped: this kernel gives a veth port one lane, so a sender's frames cannot be in two"
        );
        return None;
    }
    Some(cpus)
}

/// How the switch's ports read per CPU keep a moving sender's order: as
/// root with a lanes' ledger (`ports::ledger`); rootless, which cannot load
/// one, by the kernel's receive times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptBy {
    Ledger,
    ArrivalTimes,
}

/// One thread sends a numbered stream from `a` (out of `s1`) to `b`
/// (behind `s2`), moving itself to the other lane's CPU after every short
/// burst, at a light pace: b must get the whole stream once and in order,
/// and the switch must have read in its light mode all along.
pub fn moving_sender_keeps_its_order(
    switch: &dyn SwitchView,
    (mut s1, mut s2): (Station, Station),
    cpus: &[usize],
    kept_by: KeptBy,
) {
    let a = mac("02:00:00:00:bb:01");
    let b = mac("02:00:00:00:bb:02");
    // Teach the switch where b lives, so a's frames are unicast to h2's port.
    s2.teach(b, &mut s1, WINDOW);
    let (mode, changes_before) = reading(switch);
    assert_eq!(mode, "per CPU (traffic is light)");
    for port in switch.ports().as_array().expect("a list of ports") {
        if port["lanes"].as_u64().unwrap_or(1) < 2 {
            continue;
        }
        let reading = &port["reading"];
        assert_eq!(
            (&reading["ledger"], &reading["arrival_order"]),
            (
                &serde_json::json!(kept_by == KeptBy::Ledger),
                &serde_json::json!(kept_by == KeptBy::ArrivalTimes)
            ),
            "as root every port of lanes keeps a ledger, rootless none: {port}"
        );
        assert_eq!(reading["mode"], "per CPU (traffic is light)", "{port}");
    }
    let info = switch.info();
    let scheduling = info["light_scheduling"].as_str().unwrap_or_default();
    assert!(scheduling.starts_with("short-slices"), "{info}");

    // Every stream must arrive once and in order. One during which a
    // worker got busy was read per port for a while, and says nothing
    // about reading per CPU: it is sent again, at most `ATTEMPTS` times
    // (a busy machine around the test can make a worker busy).
    let mut changes_before = changes_before;
    for attempt in 1..=ATTEMPTS {
        let (took, changes_after, mode) =
            moving_stream(switch, (&s1, &mut s2), (a, b), cpus, attempt);
        if mode == "per CPU (traffic is light)" && changes_after == changes_before {
            return;
        }
        let what = format!(
            "the stream ({MOVING_FRAMES} frames in {took:?}) was not light: the switch changed how it reads its ports {} time(s) and now reads {mode}",
            changes_after - changes_before
        );
        assert!(attempt < ATTEMPTS, "{what}, in {ATTEMPTS} tries");
        eprintln!("{what}; sending it again");
        wait_until_light(switch);
        changes_before = reading(switch).1;
    }
}

/// Streams sent before the moving sender's check gives up on a light one.
const ATTEMPTS: u32 = 3;

/// Waits (up to 5 s) until the switch reads per CPU again.
fn wait_until_light(switch: &dyn SwitchView) {
    // Still heavy after that: the next stream's check says so.
    let _ = within(Duration::from_secs(5), || {
        reading(switch).0 == "per CPU (traffic is light)"
    });
}

/// Sends stream number `round` of the moving sender from `a` to `b` and
/// checks it arrived once and in order; returns how long it took, and the
/// switch's read-mode changes and mode after it.
fn moving_stream(
    switch: &dyn SwitchView,
    (s1, s2): (&Station, &mut Station),
    (a, b): ([u8; 6], [u8; 6]),
    cpus: &[usize],
    round: u32,
) -> (Duration, u64, String) {
    let sent: Vec<u32> = (0..MOVING_FRAMES)
        .map(|seq| {
            probe_number(
                round,
                MOVING_SENDER,
                u32::try_from(seq).expect("a short stream"),
            )
        })
        .collect();
    let frames: Vec<Vec<u8>> = sent.iter().map(|id| probe(b, a, *id, 64)).collect();
    let started = Instant::now();
    // A thread of its own, so the test's thread keeps its CPUs.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for (n, burst) in frames.chunks(BURST).enumerate() {
                // The move is the scenario: the frames just sent may still
                // wait in the old CPU's lane when the next ones arrive in
                // the new CPU's.
                ports::cpu::pin_current_thread(&[cpus[n % cpus.len()]])
                    .expect("moving the sender to another CPU");
                for frame in burst {
                    s1.send(frame);
                }
                if (n + 1) % BURSTS_BETWEEN_RESTS == 0 {
                    std::thread::sleep(REST);
                }
            }
        });
    });
    let took = started.elapsed();
    let got: Vec<u32> = s2
        .collect_probes(WINDOW)
        .into_iter()
        .map(|(id, _)| id)
        .collect();

    let (mode, changes_after) = reading(switch);
    assert_once_and_in_order(
        &sent,
        &got,
        &format!(
            "one sender moving between CPUs {cpus:?} every {BURST} frames ({MOVING_FRAMES} frames in {took:?})"
        ),
    );
    (took, changes_after, mode)
}

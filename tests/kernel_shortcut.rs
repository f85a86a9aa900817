//! The kernel shortcut: known unicast between two veth ports is forwarded
//! by the kernel once the switch has learned both hosts, and everything
//! the switch promises still holds: a trace sees every frame, a host that
//! moves is followed, hosts heard only by the kernel do not age out (and
//! silent ones still do), a removed port gets nothing, and
//! `--no-kernel-shortcut` leaves every frame to the workers.
//!
//! ```text
//!   th..(h1) eth0 ═══ p1 ──┐
//!   th..(h2) eth0 ═══ p2 ──┼── tapswitch serve (in tsw..)
//!   th..(h3) eth0 ═══ p3 ──┘    tc program on p1..p3, map of MAC -> port
//! ```

use std::time::{Duration, Instant};

use serde_json::Value;
use tapswitch_tests::frames::{mac, probe};
use tapswitch_tests::poll::wait_for;
use tapswitch_tests::traffic::{Station, ping, tcp_transfer};
use tapswitch_tests::{SwitchProcess, Topology, require_root};

/// How long a station listens for the frames a step sent.
const WINDOW: Duration = Duration::from_millis(200);

/// `kernel_shortcut` of `tapswitch stats --json`.
fn shortcut(switch: &SwitchProcess) -> Value {
    switch.info()["kernel_shortcut"].clone()
}

fn addresses(switch: &SwitchProcess) -> u64 {
    shortcut(switch)["addresses"].as_u64().unwrap_or(0)
}

/// Port `name`'s frames forwarded by the kernel: (received, sent).
fn kernel_frames(switch: &SwitchProcess, name: &str) -> (u64, u64) {
    let port = switch.port(name);
    let stats = &port["stats"];
    (
        stats["rx_kernel_frames"].as_u64().unwrap_or(0),
        stats["tx_kernel_frames"].as_u64().unwrap_or(0),
    )
}

/// How long a step waits for the switch or the kernel to catch up.
const PATIENCE: Duration = Duration::from_secs(5);

/// The trace lines (on the switch's stderr) of IPv4 frames forwarded.
fn trace_lines(switch: &SwitchProcess) -> usize {
    switch
        .log()
        .lines()
        .filter(|line| {
            line.starts_with("t=") && line.contains("ipv4") && line.contains("forwarded to")
        })
        .count()
}

fn ping_both_ways(topo: &Topology) {
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    let wait = Duration::from_secs(2);
    assert_eq!(ping(&h1.ns, h2.ip, 3, wait), 3, "h1 -> h2");
    assert_eq!(ping(&h2.ns, h1.ip, 3, wait), 3, "h2 -> h1");
}

#[test]
fn known_unicast_goes_by_the_kernel_until_a_trace_asks_for_every_frame() {
    require_root();
    let topo = Topology::veth_star(2);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    let state = shortcut(&switch);
    assert_eq!(state["state"], "on", "as root on Linux 6.6+: {state}");
    assert_eq!(state["ports"], 2);

    ping_both_ways(&topo);
    wait_for("both hosts in the kernel's map", PATIENCE, || {
        addresses(&switch) >= 2
    });
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    tcp_transfer(&h2.ns, h2.ip, &h1.ns, 8 << 20).expect("8 MiB from h1 to h2, in order");
    let (p1_rx, _) = kernel_frames(&switch, "p1");
    let (_, p2_tx) = kernel_frames(&switch, "p2");
    assert!(
        p1_rx >= 20,
        "the data came in by p1 through the kernel: {p1_rx} frames"
    );
    assert!(p2_tx >= 20, "and left by p2: {p2_tx} frames");
    let ports = switch.ports();
    for port in ports.as_array().expect("ports") {
        let stats = &port["stats"];
        assert!(
            stats["rx_frames"].as_u64() >= stats["rx_kernel_frames"].as_u64(),
            "a port's totals include the kernel's frames: {port}"
        );
    }

    // A trace sees every frame: the map is empty before `trace on` returns.
    switch
        .call(r#"{"cmd":"trace","on":true}"#)
        .expect("trace on");
    let paused = shortcut(&switch);
    assert_eq!(paused["state"], "paused", "{paused}");
    assert_eq!(paused["addresses"], 0, "{paused}");
    let before = (kernel_frames(&switch, "p1"), trace_lines(&switch));
    assert_eq!(ping(&h1.ns, h2.ip, 3, Duration::from_secs(2)), 3);
    assert_eq!(
        kernel_frames(&switch, "p1"),
        before.0,
        "nothing went by the kernel while tracing"
    );
    wait_for("a trace line for each echo and reply", PATIENCE, || {
        trace_lines(&switch) >= before.1 + 6
    });

    switch
        .call(r#"{"cmd":"trace","on":false}"#)
        .expect("trace off");
    wait_for("the map filled again", PATIENCE, || addresses(&switch) >= 2);
    assert_eq!(shortcut(&switch)["state"], "on");
}

#[test]
fn a_host_that_moves_is_followed_and_a_removed_port_gets_nothing() {
    require_root();
    let (_topo, switch, [mut s1, mut s2, mut s3]) = three_stations();
    let a = mac("02:00:00:00:0a:01");
    let b = mac("02:00:00:00:0b:01");
    s1.teach(a, &mut s2, WINDOW);
    s2.teach(b, &mut s1, WINDOW);
    s3.drain();
    let mut id = 0;
    let mut b_to_a = || {
        id += 1;
        s2.send(&probe(a, b, id, 60));
        id
    };
    wait_until_the_kernel_sends(&switch, "p1", &mut b_to_a);
    let last = b_to_a();
    assert_eq!(
        ids(s1.collect_probes(WINDOW)).last(),
        Some(&last),
        "b -> a reaches h1"
    );
    assert!(s3.collect_probes(WINDOW).is_empty(), "and only h1");

    // a moves to h3: its first frame from there is the workers' to learn.
    s3.send(&probe(b, a, 2, 60));
    assert_eq!(ids(s2.collect_probes(WINDOW)), [2], "a -> b from h3");
    s2.send(&probe(a, b, 3, 60));
    assert_eq!(ids(s3.collect_probes(WINDOW)), [3], "b -> a now reaches h3");
    assert!(s1.collect_probes(WINDOW).is_empty(), "and no longer h1");
    assert_eq!(switch.port_of("02:00:00:00:0a:01").as_deref(), Some("p3"));
    wait_until_the_kernel_sends(&switch, "p3", &mut || {
        s2.send(&probe(a, b, 10, 60));
    });
    assert!(s1.collect_probes(WINDOW).is_empty(), "h1 got none of them");
    s3.drain();

    // p3 leaves the switch: nothing reaches h3 any more, by either path.
    switch
        .call(r#"{"cmd":"port_rm","name":"p3"}"#)
        .expect("port rm p3");
    assert_eq!(shortcut(&switch)["ports"], 2);
    s2.send(&probe(a, b, 100, 60));
    assert!(
        s3.collect_probes(WINDOW).is_empty(),
        "a removed port gets nothing"
    );
    assert_eq!(
        ids(s1.collect_probes(WINDOW)),
        [100],
        "a is unknown again: flooded"
    );
}

#[test]
fn a_static_entry_goes_to_the_kernel_and_comes_back_after_a_spoof() {
    require_root();
    let (_topo, switch, [mut s1, mut s2, mut s3]) = three_stations();
    let a = mac("02:00:00:00:0a:02");
    let b = mac("02:00:00:00:0b:02");
    switch
        .call(r#"{"cmd":"fdb_add","mac":"02:00:00:00:0a:02","port":"p1"}"#)
        .expect("fdb add a p1");
    s2.teach(b, &mut s1, WINDOW);
    s3.drain();
    wait_until_the_kernel_sends(&switch, "p1", &mut || s2.send(&probe(a, b, 1, 60)));

    // h3 claims a's address: the workers do not move a static entry, and
    // the frame goes on to b.
    s3.send(&probe(b, a, 2, 60));
    assert_eq!(ids(s2.collect_probes(WINDOW)), [2]);
    assert_eq!(switch.port_of("02:00:00:00:0a:02").as_deref(), Some("p1"));
    s1.drain();
    s2.send(&probe(a, b, 3, 60));
    assert_eq!(
        ids(s1.collect_probes(WINDOW)),
        [3],
        "b -> a still reaches h1"
    );
    assert!(s3.collect_probes(WINDOW).is_empty(), "and not the spoofer");
    // The filter took a out of the kernel's map on the spoofed frame; the
    // switch puts it back.
    wait_until_the_kernel_sends(&switch, "p1", &mut || s2.send(&probe(a, b, 4, 60)));
    assert!(s3.collect_probes(WINDOW).is_empty(), "h3 got none of them");
}

/// Two hosts on a switch with `--ageing-time ageing_secs`, both in the
/// kernel's map once they pinged each other.
fn two_hosts_the_kernel_forwards_for(ageing_secs: u64) -> (Topology, SwitchProcess) {
    let topo = Topology::veth_star(2);
    let switch = topo.serve_with(&["--ageing-time", &ageing_secs.to_string()]);
    ping_both_ways(&topo);
    wait_for("both hosts in the kernel's map", PATIENCE, || {
        addresses(&switch) >= 2
    });
    (topo, switch)
}

#[test]
fn hosts_only_the_kernel_hears_stay_in_the_table_and_silent_ones_age_out() {
    require_root();
    let (topo, switch) = two_hosts_the_kernel_forwards_for(2);
    let h1_mac = tapswitch_tests::frames::mac_text(&topo.hosts[0].mac);
    let before = kernel_frames(&switch, "p1").0;
    // Four seconds of pings, twice the ageing time, all by the kernel.
    ping_steadily(
        &topo,
        Duration::from_secs(4),
        Duration::from_millis(100),
        || {},
    );
    assert!(
        kernel_frames(&switch, "p1").0 >= before + 20,
        "the pings went by the kernel"
    );
    assert_eq!(
        switch.port_of(&h1_mac).as_deref(),
        Some("p1"),
        "h1 was heard only by the kernel, and is still known"
    );
    // Silence: both age out, and leave the kernel's map with the table.
    wait_for("h1 to age out", PATIENCE, || {
        switch.port_of(&h1_mac).is_none()
    });
    wait_for("the kernel's map to empty", PATIENCE, || {
        addresses(&switch) == 0
    });
}

/// Pings h2 from h1 for `span`, one ping every `gap`, each answered;
/// `after_each` runs after every answer.
fn ping_steadily(topo: &Topology, span: Duration, gap: Duration, mut after_each: impl FnMut()) {
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    let start = Instant::now();
    while start.elapsed() < span {
        assert_eq!(ping(&h1.ns, h2.ip, 1, Duration::from_secs(1)), 1);
        after_each();
        std::thread::sleep(gap);
    }
}

/// How long ago `mac` was last heard, as `tapswitch fdb --json` says
/// (`None`: not in the table).
fn age_of(switch: &SwitchProcess, mac: &str) -> Option<f64> {
    let fdb = switch.fdb();
    fdb["entries"]
        .as_array()?
        .iter()
        .find(|e| e["mac"] == mac)
        .and_then(|e| e["ageing_timer"].as_f64())
}

#[test]
fn a_quiet_switch_shows_the_ages_the_kernel_saw() {
    // Two hosts that talk only through the kernel leave the workers
    // quiet, so the housekeeping thread reads the kernel's map only a
    // second before a host could expire, and `fdb` reads it itself. Over
    // three ageing times of pings h1 stays known, and `fdb` shows it as
    // heard just now, not when the map was last read.
    require_root();
    let (topo, switch) = two_hosts_the_kernel_forwards_for(5);
    let h1_mac = tapswitch_tests::frames::mac_text(&topo.hosts[0].mac);
    let before = kernel_frames(&switch, "p1").0;
    let mut oldest = 0.0_f64;
    ping_steadily(
        &topo,
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            let age = age_of(&switch, &h1_mac).expect("h1, heard by the kernel, is still known");
            oldest = oldest.max(age);
        },
    );
    assert!(
        kernel_frames(&switch, "p1").0 >= before + 50,
        "the pings went by the kernel"
    );
    assert!(
        oldest < 1.0,
        "fdb showed h1 as last heard {oldest:.2} s before, right after a ping through the kernel"
    );
}

#[test]
fn without_the_shortcut_every_frame_goes_through_the_workers() {
    require_root();
    let topo = Topology::veth_star(2);
    let switch = topo.serve_with(&["--no-kernel-shortcut"]);
    assert_eq!(shortcut(&switch)["state"], "off");
    ping_both_ways(&topo);
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    tcp_transfer(&h2.ns, h2.ip, &h1.ns, 1 << 20).expect("1 MiB from h1 to h2");
    assert_eq!(kernel_frames(&switch, "p1"), (0, 0));
    assert_eq!(kernel_frames(&switch, "p2"), (0, 0));
}

/// Three hosts on a switch, each with a station on its `eth0` for
/// frames of the test's own making. Keep the topology: it holds them.
fn three_stations() -> (Topology, SwitchProcess, [Station; 3]) {
    let topo = Topology::veth_star(3);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    let stations = [0, 1, 2].map(|i| Station::open(&topo.hosts[i].ns, "eth0"));
    (topo, switch, stations)
}

/// Calls `send` until the kernel counts a frame sent out of port `name`.
fn wait_until_the_kernel_sends<T>(
    switch: &SwitchProcess,
    name: &str,
    send: &mut impl FnMut() -> T,
) {
    wait_for(
        &format!("the kernel to send out of {name}"),
        PATIENCE,
        || {
            let before = kernel_frames(switch, name).1;
            send();
            std::thread::sleep(Duration::from_millis(20));
            kernel_frames(switch, name).1 > before
        },
    );
}

#[test]
fn a_sender_learned_in_the_middle_of_a_stream_keeps_its_order() {
    require_root();
    let (_topo, switch, [mut s1, mut s2, mut s3]) = three_stations();
    let a = mac("02:00:00:00:0a:03");
    let b = mac("02:00:00:00:0b:03");
    s2.teach(b, &mut s1, WINDOW);
    s3.drain();
    // a is new: its first frame teaches the switch, and the rest follow in
    // bursts for half a second. a's address goes to the kernel only once a
    // pauses, so no frame of a's still queued for a worker is overtaken.
    stream_in_order_then_by_the_kernel(&switch, [&mut s1, &mut s2], b, a);
}

#[test]
fn a_silent_receiver_goes_to_the_kernel_only_once_a_stream_to_it_pauses() {
    require_root();
    let (_topo, switch, [mut s1, mut s2, mut s3]) = three_stations();
    let a = mac("02:00:00:00:0a:04");
    let b = mac("02:00:00:00:0b:04");
    // a is in the kernel's map before its stream begins.
    s1.teach(a, &mut s2, WINDOW);
    wait_for("a in the kernel's map", PATIENCE, || {
        addresses(&switch) >= 1
    });
    s3.drain();
    // b says one word and then nothing, as the receiver of a one-way
    // stream (not UDP) does. b goes to the kernel only once nothing has
    // been sent to it through the workers for a while: otherwise a's
    // frames still queued for a worker would be overtaken by the next
    // ones, which the kernel would then forward.
    s2.send(&probe([0xff; 6], b, 0, 60));
    stream_in_order_then_by_the_kernel(&switch, [&mut s1, &mut s2], b, a);
}

/// Streams from `src` (at `from`, on p1) to `dst` (at `to`, on p2) for half
/// a second, begun as the switch learned one of them: every frame arrives
/// in order, and none went by the kernel. Once the stream paused, the
/// kernel carries the next frame. The messages say how long the sender
/// itself paused at most: a pause of 20 ms (the switch's `QUIET`) would
/// rightly hand the host to the kernel, a shorter one would not.
fn stream_in_order_then_by_the_kernel(
    switch: &SwitchProcess,
    [from, to]: [&mut Station; 2],
    dst: [u8; 6],
    src: [u8; 6],
) {
    let by_kernel = kernel_frames(switch, "p2").1;
    let (sent, longest_gap) = stream(from, dst, src);
    let got = ids(to.collect_probes(WINDOW));
    assert_eq!(got.len(), sent.len(), "every frame arrives once");
    let overtaken = got.windows(2).filter(|pair| pair[0] > pair[1]).count();
    assert_eq!(
        overtaken, 0,
        "in the order sent (the sender's longest gap between bursts: {longest_gap:?})"
    );
    assert_eq!(
        kernel_frames(switch, "p2").1,
        by_kernel,
        "the stream, begun as the switch learned one end, stayed with the workers \
         (the sender's longest gap between bursts: {longest_gap:?})"
    );
    wait_until_the_kernel_sends(switch, "p2", &mut || from.send(&probe(dst, src, 0, 60)));
}

/// Sends frames from `src` to `dst` through `station` in bursts of 40 for
/// half a second, numbered from 1; returns the numbers sent, and the
/// longest time between the starts of two bursts. The sending thread may
/// move between CPUs meanwhile, as senders do: the lanes' ledger keeps its
/// frames in order across lanes (`tests/lanes.rs` checks that on its own).
fn stream(station: &mut Station, dst: [u8; 6], src: [u8; 6]) -> (Vec<u32>, Duration) {
    let mut sent = Vec::new();
    let mut id = 0;
    let start = Instant::now();
    let (mut last_burst, mut longest_gap) = (start, Duration::ZERO);
    while start.elapsed() < Duration::from_millis(500) {
        let now = Instant::now();
        longest_gap = longest_gap.max(now - last_burst);
        last_burst = now;
        let burst: Vec<Vec<u8>> = (0..40)
            .map(|_| {
                id += 1;
                probe(dst, src, id, 60)
            })
            .collect();
        station.send_all(burst.iter().map(Vec::as_slice));
        sent.extend((id - 39)..=id);
        std::thread::sleep(Duration::from_millis(1));
    }
    (sent, longest_gap)
}

#[test]
fn a_killed_switch_leaves_nothing_forwarding_in_the_kernel() {
    require_root();
    let topo = Topology::veth_star(2);
    let mut switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    ping_both_ways(&topo);
    wait_for("both hosts in the kernel's map", PATIENCE, || {
        addresses(&switch) >= 2
    });
    let pid = nix::unistd::Pid::from_raw(i32::try_from(switch.pid()).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL to the switch");
    wait_for("the switch to be gone", PATIENCE, || !switch.is_running());
    // The hosts still know each other's MACs (ARP): only a program left on
    // p1 could carry the echo across now.
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    assert_eq!(
        ping(&h1.ns, h2.ip, 2, Duration::from_millis(500)),
        0,
        "no program outlives the switch"
    );
}

fn ids(probes: Vec<(u32, Vec<u8>)>) -> Vec<u32> {
    probes.into_iter().map(|(id, _)| id).collect()
}

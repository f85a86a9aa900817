//! The shortcut's programs run by the kernel: on made-up frames with
//! BPF_PROG_TEST_RUN (no interface, no traffic), and attached to veth
//! pairs in a network namespace of the test's own. They need root (CI runs
//! them as root); without it each says so and passes.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::program::{TC_ACT_REDIRECT, TCX_NEXT};
use super::*;
use crate::{OpenedPort, RxBatch, VnetHdr};

/// The ingress interface of the test runs: `lo` (BPF_PROG_TEST_RUN takes
/// an existing interface's index, and `lo` is 1 in every namespace).
const LO: u32 = 1;
/// Interfaces that need not exist: the programs only compare and pass on
/// indexes, and a test run does not carry out the redirect.
const ELSEWHERE: u32 = 42;
const FARTHER: u32 = 43;

const HOST_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
const HOST_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
const HOST_C: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0c]);

/// Whether the test can run; if not, says why.
fn as_root(test: &str) -> bool {
    let (uid, _) = crate::sys::namespace::effective_ids();
    if uid != 0 {
        eprintln!("skipping {test}: eBPF programs need root (CAP_BPF, CAP_NET_ADMIN)");
    }
    uid == 0
}

/// A shortcut with counters for [`LO`] and [`ELSEWHERE`], as if both were
/// attached.
fn shortcut() -> KernelShortcut {
    let shortcut = KernelShortcut::new(64).expect("loading the shortcut as root");
    let zeros = vec![0u8; shortcut.counters.value_size()];
    for ifindex in [LO, ELSEWHERE] {
        shortcut
            .counters
            .update(&ifindex.to_ne_bytes(), &zeros)
            .unwrap();
    }
    shortcut
}

/// A `len`-byte frame from `src` to `dst` (an experimental EtherType,
/// then `marker` and zeros).
fn frame(dst: MacAddr, src: MacAddr, len: usize, marker: u8) -> Vec<u8> {
    let mut frame = vec![0u8; len.max(15)];
    frame[..6].copy_from_slice(&dst.0);
    frame[6..12].copy_from_slice(&src.0);
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    frame[14] = marker;
    frame.truncate(len);
    frame
}

/// What the TCX program returns for `frame` arriving on [`LO`].
fn run_tc(shortcut: &KernelShortcut, frame: &[u8]) -> i32 {
    bpf::test_run(shortcut.tc.as_fd(), frame, LO).expect("test run of the TCX program") as i32
}

/// What the socket filter returns for `frame` arriving on [`LO`]. A test
/// run shows a socket filter the frame after its first 14 bytes (the
/// Ethernet header pulled, as at L3), so a made-up header goes first; a
/// packet socket's filter gets the frame from its first byte.
fn run_filter(shortcut: &KernelShortcut, frame: &[u8]) -> u32 {
    run_as_filter(shortcut.filter.as_fd(), frame)
}

/// What socket filter `filter` returns for `frame` arriving on [`LO`] (see
/// [`run_filter`]).
fn run_as_filter(filter: std::os::fd::BorrowedFd<'_>, frame: &[u8]) -> u32 {
    let mut data = vec![0u8; 12];
    data.extend_from_slice(&0x88b5u16.to_be_bytes());
    data.extend_from_slice(frame);
    bpf::test_run(filter, &data, LO).expect("test run of the socket filter")
}

/// What the TCX program returns for `frame` arriving on [`LO`] with
/// control block `cb` (a filter's verdict, say).
fn run_tc_after(shortcut: &KernelShortcut, frame: &[u8], cb: [u32; 5]) -> i32 {
    let (returned, _) = bpf::test_run_with_cb(shortcut.tc.as_fd(), frame, LO, cb)
        .expect("test run of the TCX program");
    returned as i32
}

/// What the socket filter returns for `frame` arriving on [`LO`] (see
/// [`run_filter`]), and the verdict it leaves in the control block.
fn filter_verdict(shortcut: &KernelShortcut, frame: &[u8]) -> (u32, [u32; 5]) {
    let mut data = vec![0u8; 12];
    data.extend_from_slice(&0x88b5u16.to_be_bytes());
    data.extend_from_slice(frame);
    bpf::test_run_with_cb(shortcut.filter.as_fd(), &data, LO, [0; 5])
        .expect("test run of the socket filter")
}

fn entry(shortcut: &KernelShortcut, mac: MacAddr) -> Option<ShortcutEntry> {
    let entries = shortcut.entries().unwrap();
    entries.into_iter().find(|(m, _)| *m == mac).map(|(_, e)| e)
}

#[test]
fn unknown_addresses_are_left_to_the_switch() {
    if !as_root("unknown_addresses_are_left_to_the_switch") {
        return;
    }
    let shortcut = shortcut();
    let ab = frame(HOST_B, HOST_A, 60, 1);
    // Neither known.
    assert_eq!(run_tc(&shortcut, &ab), TCX_NEXT);
    assert_eq!(run_filter(&shortcut, &ab), 60);
    // The destination known, the source not (yet).
    shortcut.set(HOST_B, ELSEWHERE).unwrap();
    assert_eq!(run_tc(&shortcut, &ab), TCX_NEXT);
    assert_eq!(run_filter(&shortcut, &ab), 60);
    // The source known, a destination that is not.
    shortcut.set(HOST_A, LO).unwrap();
    let ac = frame(HOST_C, HOST_A, 60, 1);
    assert_eq!(run_tc(&shortcut, &ac), TCX_NEXT);
    assert_eq!(run_filter(&shortcut, &ac), 60);
    // Broadcast: never in the map.
    let broadcast = frame(MacAddr::BROADCAST, HOST_A, 60, 1);
    assert_eq!(run_tc(&shortcut, &broadcast), TCX_NEXT);
    assert_eq!(run_filter(&shortcut, &broadcast), 60);
    assert!(matches!(
        shortcut.set(MacAddr::BROADCAST, ELSEWHERE),
        Err(ShortcutError::NotUnicast { .. })
    ));
    assert_eq!(shortcut.counters(LO).unwrap(), ShortcutCounters::default());
}

#[test]
fn known_unicast_to_another_port_is_forwarded_noted_and_counted() {
    if !as_root("known_unicast_to_another_port_is_forwarded_noted_and_counted") {
        return;
    }
    let shortcut = shortcut();
    shortcut.set(HOST_A, LO).unwrap();
    shortcut.set(HOST_B, ELSEWHERE).unwrap();
    assert_eq!(entry(&shortcut, HOST_A).unwrap().last_seen_ns, 0);
    let ab = frame(HOST_B, HOST_A, 60, 1);

    let before = KernelShortcut::now_ns();
    assert_eq!(
        run_filter(&shortcut, &ab),
        0,
        "the switch's socket must not get it"
    );
    assert_eq!(run_tc(&shortcut, &ab), TC_ACT_REDIRECT);
    let after = KernelShortcut::now_ns();

    let a = entry(&shortcut, HOST_A).unwrap();
    assert_eq!(a.ifindex, LO);
    assert!(
        (before..=after).contains(&a.last_seen_ns),
        "{before} <= {} <= {after}",
        a.last_seen_ns
    );
    assert_eq!(entry(&shortcut, HOST_B).unwrap().last_seen_ns, 0);
    let one = |frames, bytes| (frames, bytes);
    let lo = shortcut.counters(LO).unwrap();
    let elsewhere = shortcut.counters(ELSEWHERE).unwrap();
    assert_eq!(one(lo.rx_frames, lo.rx_bytes), (1, 60));
    assert_eq!(one(lo.tx_frames, lo.tx_bytes), (0, 0));
    assert_eq!(one(elsewhere.rx_frames, elsewhere.rx_bytes), (0, 0));
    assert_eq!(one(elsewhere.tx_frames, elsewhere.tx_bytes), (1, 60));

    // The shortest frame a test run takes (14 bytes) carries both
    // addresses: forwarded. Shorter ones are the filter's below.
    assert_eq!(run_tc(&shortcut, &ab[..14]), TC_ACT_REDIRECT);
    assert_eq!(shortcut.counters(LO).unwrap().rx_bytes, 74);

    // To a port without counters (being attached or detached): forwarded,
    // not counted.
    shortcut.set(HOST_C, FARTHER).unwrap();
    assert_eq!(
        run_tc(&shortcut, &frame(HOST_C, HOST_A, 100, 2)),
        TC_ACT_REDIRECT
    );
    assert_eq!(
        shortcut.counters(FARTHER).unwrap(),
        ShortcutCounters::default()
    );
    assert_eq!(shortcut.counters(LO).unwrap().rx_frames, 3);
}

#[test]
fn a_moved_source_is_forgotten_by_the_filter_and_left_to_the_switch() {
    if !as_root("a_moved_source_is_forgotten_by_the_filter_and_left_to_the_switch") {
        return;
    }
    let shortcut = shortcut();
    // HOST_A is known on another port, but this frame from it arrives on LO.
    shortcut.set(HOST_A, FARTHER).unwrap();
    shortcut.set(HOST_B, ELSEWHERE).unwrap();
    let ab = frame(HOST_B, HOST_A, 60, 1);
    // The TCX program alone only lets it by.
    assert_eq!(run_tc(&shortcut, &ab), TCX_NEXT);
    assert_eq!(entry(&shortcut, HOST_A).unwrap().ifindex, FARTHER);
    // The filter (first in the kernel) keeps it and deletes the entry.
    assert_eq!(run_filter(&shortcut, &ab), 60);
    assert_eq!(entry(&shortcut, HOST_A), None);
    assert!(entry(&shortcut, HOST_B).is_some());
    assert_eq!(run_tc(&shortcut, &ab), TCX_NEXT);
    assert_eq!(shortcut.counters(LO).unwrap(), ShortcutCounters::default());
}

#[test]
fn the_tcx_program_keeps_to_the_filters_verdict_when_the_map_changes_between_them() {
    if !as_root("the_tcx_program_keeps_to_the_filters_verdict_when_the_map_changes_between_them") {
        return;
    }
    let shortcut = shortcut();
    let [tag_low, tag_high] = shortcut.tag.words();
    let ab = frame(HOST_B, HOST_A, 60, 1);

    // Both unknown: the filter keeps the frame for the switch and says so.
    let (kept, not_ours) = filter_verdict(&shortcut, &ab);
    assert_eq!(kept, 60);
    assert_eq!(not_ours, [tag_low, tag_high, LO, 0, 0]);
    // Both learned before the TCX program runs: it hands the frame on, as
    // the filter decided (the switch has it). Deciding afresh, it would
    // forward it too: the frame twice.
    shortcut.set(HOST_A, LO).unwrap();
    shortcut.set(HOST_B, ELSEWHERE).unwrap();
    assert_eq!(run_tc_after(&shortcut, &ab, not_ours), TCX_NEXT);
    assert_eq!(run_tc(&shortcut, &ab), TC_ACT_REDIRECT);
    assert_eq!(shortcut.counters(LO).unwrap().rx_frames, 1);

    // Both known: the filter drops the frame, for the kernel to forward.
    let (kept, forward) = filter_verdict(&shortcut, &ab);
    assert_eq!(kept, 0);
    assert_eq!(forward, [tag_low, tag_high, LO, ELSEWHERE, 0]);
    // The destination taken out of the map before the TCX program runs:
    // forwarded all the same (deciding afresh, it would hand the frame to
    // the stack, and the switch, whose socket dropped it, would never
    // see it: the frame lost). Noted and counted.
    shortcut.remove(HOST_B).unwrap();
    let before = KernelShortcut::now_ns();
    assert_eq!(run_tc_after(&shortcut, &ab, forward), TC_ACT_REDIRECT);
    assert!(entry(&shortcut, HOST_A).unwrap().last_seen_ns >= before);
    assert_eq!(shortcut.counters(LO).unwrap().rx_frames, 2);
    assert_eq!(shortcut.counters(ELSEWHERE).unwrap().tx_frames, 2);
    // The source gone too: still forwarded and counted, nothing noted.
    shortcut.remove(HOST_A).unwrap();
    assert_eq!(run_tc_after(&shortcut, &ab, forward), TC_ACT_REDIRECT);
    assert_eq!(shortcut.counters(LO).unwrap().rx_frames, 3);
    assert_eq!(entry(&shortcut, HOST_A), None);

    // A verdict under another tag (another switch's filter), or for a frame
    // that arrived elsewhere, is not followed: the TCX program decides,
    // and the map has neither host now.
    let mut others = forward;
    others[1] ^= 1;
    assert_eq!(run_tc_after(&shortcut, &ab, others), TCX_NEXT);
    let mut elsewhere = forward;
    elsewhere[2] = ELSEWHERE;
    assert_eq!(run_tc_after(&shortcut, &ab, elsewhere), TCX_NEXT);
    assert_eq!(shortcut.counters(LO).unwrap().rx_frames, 3);
}

#[test]
fn hairpins_and_runts_are_left_to_the_switch() {
    if !as_root("hairpins_and_runts_are_left_to_the_switch") {
        return;
    }
    let shortcut = shortcut();
    shortcut.set(HOST_A, LO).unwrap();
    shortcut.set(HOST_B, LO).unwrap();
    let ab = frame(HOST_B, HOST_A, 60, 1);
    assert_eq!(run_tc(&shortcut, &ab), TCX_NEXT);
    assert_eq!(run_filter(&shortcut, &ab), 60);
    assert_eq!(entry(&shortcut, HOST_A).unwrap().last_seen_ns, 0);

    // Fewer than 14 bytes: no source (11), not even a destination (5), or
    // no EtherType (12, 13) to read; the switch drops such runts. Both
    // programs make the decision with the same instructions (see
    // `program`), so what the filter does with a runt the TCX program
    // does too; a test run gives it no frame under 14 bytes.
    shortcut.set(HOST_B, ELSEWHERE).unwrap();
    for len in [5, 6, 11, 12, 13] {
        assert_eq!(run_filter(&shortcut, &ab[..len]), len as u32, "{len} bytes");
    }
    // From 14 bytes on a frame that is not IP has what the decision
    // needs, read in one go from 24 bytes on.
    for len in [14, 20, 23, 24] {
        assert_eq!(run_filter(&shortcut, &ab[..len]), 0, "{len} bytes");
    }
}

/// A `len`-byte frame from `src` to `dst` carrying IP protocol `protocol`
/// over IPv4 or IPv6 (only the fields the programs read are filled in).
fn ip_frame(dst: MacAddr, src: MacAddr, ipv6: bool, protocol: u8, len: usize) -> Vec<u8> {
    let mut frame = frame(dst, src, len.max(60), 0);
    let (ethertype, at) = if ipv6 { (0x86dd_u16, 20) } else { (0x0800, 23) };
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
    frame[14] = if ipv6 { 0x60 } else { 0x45 };
    frame[at] = protocol;
    frame.truncate(len);
    frame
}

#[test]
fn udp_is_left_to_the_switch_and_other_ip_traffic_is_forwarded() {
    if !as_root("udp_is_left_to_the_switch_and_other_ip_traffic_is_forwarded") {
        return;
    }
    let shortcut = shortcut();
    shortcut.set(HOST_A, LO).unwrap();
    shortcut.set(HOST_B, ELSEWHERE).unwrap();
    for ipv6 in [false, true] {
        let udp = ip_frame(HOST_B, HOST_A, ipv6, 17, 80);
        assert_eq!(run_tc(&shortcut, &udp), TCX_NEXT, "UDP, ipv6 {ipv6}");
        assert_eq!(run_filter(&shortcut, &udp), 80, "UDP, ipv6 {ipv6}");
        for (protocol, name) in [(6, "TCP"), (1, "ICMP"), (58, "ICMPv6")] {
            let frame = ip_frame(HOST_B, HOST_A, ipv6, protocol, 80);
            assert_eq!(
                run_tc(&shortcut, &frame),
                TC_ACT_REDIRECT,
                "{name}, ipv6 {ipv6}"
            );
            assert_eq!(run_filter(&shortcut, &frame), 0, "{name}, ipv6 {ipv6}");
        }
        // An IP header cut off before its protocol byte: the switch's. (A
        // test run refuses such a frame to the TCX program, whose decision
        // is the filter's, instruction for instruction.)
        // The programs load the frame's first 24 bytes at once, and the
        // Ethernet header alone from a shorter frame: an IP frame of 23
        // bytes is cut short as well, one of 24 is read whole.
        for len in [20, 23] {
            let cut = ip_frame(HOST_B, HOST_A, ipv6, 6, len);
            let kept = run_filter(&shortcut, &cut);
            assert_eq!(kept, len as u32, "cut short at {len}, ipv6 {ipv6}");
        }
        let whole = ip_frame(HOST_B, HOST_A, ipv6, 6, 24);
        assert_eq!(run_filter(&shortcut, &whole), 0, "24 bytes, ipv6 {ipv6}");
    }
    assert_eq!(
        shortcut.counters(LO).unwrap().rx_frames,
        6,
        "only the forwarded frames are counted"
    );
}

#[test]
fn the_map_is_set_read_and_emptied_from_user_space() {
    if !as_root("the_map_is_set_read_and_emptied_from_user_space") {
        return;
    }
    let shortcut = KernelShortcut::new(2).unwrap();
    assert_eq!(shortcut.capacity(), 2);
    assert_eq!(shortcut.entries().unwrap(), []);
    shortcut.set(HOST_B, 7).unwrap();
    shortcut.set(HOST_A, 8).unwrap();
    let unseen = |ifindex| ShortcutEntry {
        ifindex,
        last_seen_ns: 0,
    };
    assert_eq!(
        shortcut.entries().unwrap(),
        [(HOST_A, unseen(8)), (HOST_B, unseen(7))]
    );
    // Full: a third address is refused, a known one may still move.
    assert!(matches!(
        shortcut.set(HOST_C, 7),
        Err(ShortcutError::Full { capacity: 2, .. })
    ));
    shortcut.set(HOST_A, 7).unwrap();
    assert_eq!(entry(&shortcut, HOST_A), Some(unseen(7)));
    shortcut.remove(HOST_A).unwrap();
    shortcut.remove(HOST_A).unwrap();
    assert_eq!(shortcut.entries().unwrap(), [(HOST_B, unseen(7))]);
    assert_eq!(shortcut.counters(7).unwrap(), ShortcutCounters::default());
}

#[test]
fn setting_the_same_port_again_keeps_when_the_host_was_heard() {
    if !as_root("setting_the_same_port_again_keeps_when_the_host_was_heard") {
        return;
    }
    let shortcut = shortcut();
    shortcut.set(HOST_A, LO).unwrap();
    shortcut.set(HOST_B, ELSEWHERE).unwrap();
    assert_eq!(
        run_tc(&shortcut, &frame(HOST_B, HOST_A, 60, 1)),
        TC_ACT_REDIRECT
    );
    let heard = entry(&shortcut, HOST_A).unwrap().last_seen_ns;
    assert!(heard > 0);
    shortcut.set(HOST_A, LO).unwrap();
    assert_eq!(entry(&shortcut, HOST_A).unwrap().last_seen_ns, heard);
    shortcut.set(HOST_A, ELSEWHERE).unwrap();
    assert_eq!(entry(&shortcut, HOST_A).unwrap().last_seen_ns, 0);
}

#[test]
fn without_privileges_the_error_says_what_is_missing() {
    if !as_root("without_privileges_the_error_says_what_is_missing") {
        return;
    }
    let err = std::thread::spawn(|| {
        crate::sys::namespace::become_nobody_in_this_thread().unwrap();
        KernelShortcut::new(16).unwrap_err()
    })
    .join()
    .unwrap();
    assert!(matches!(err, ShortcutError::NotPermitted { .. }), "{err:?}");
    assert!(
        err.to_string().contains("CAP_BPF and CAP_NET_ADMIN"),
        "{err}"
    );
}

#[test]
fn a_rejected_program_comes_back_with_the_verifiers_words() {
    if !as_root("a_rejected_program_comes_back_with_the_verifiers_words") {
        return;
    }
    // Returns r0 without setting it.
    let exit = crate::sys::bpf::Insn {
        code: 0x95,
        regs: 0,
        off: 0,
        imm: 0,
    };
    let err = bpf::load_program(bpf::ProgType::SocketFilter, "tapsw_bad", &[exit]).unwrap_err();
    let err = ShortcutError::from_load("test", err);
    let ShortcutError::Rejected { log, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(log.contains("R0 !read_ok"), "{log}");
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains("the kernel rejected the test program"),
        "{line}"
    );
    assert!(line.contains("R0 !read_ok"), "{line}");
}

/// Runs `ip ARGS` (in the calling thread's network namespace).
fn ip(args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(args)
        .status()
        .unwrap_or_else(|err| panic!("running ip {args:?}: {err}"));
    assert!(status.success(), "ip {args:?}: {status}");
}

/// Whether `port` receives `want` within `wait`.
fn receives(port: &mut OpenedPort, want: &[u8], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut batch = RxBatch::new(16, 4096);
    loop {
        for lane in &mut port.lanes {
            let n = lane.recv_batch(&mut batch).expect("reading a test port");
            if (0..n).any(|i| batch.get(i).1 == want) {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn attached_to_veths_the_kernel_forwards_until_the_links_are_dropped() {
    if !as_root("attached_to_veths_the_kernel_forwards_until_the_links_are_dropped") {
        return;
    }
    // A thread of its own in a network namespace of its own: the veths
    // exist only there, and go with it.
    std::thread::spawn(forward_between_veths)
        .join()
        .expect("the veth test failed");
}

fn forward_between_veths() {
    crate::sys::namespace::unshare_thread_net().expect("a new network namespace");
    // sa0 and sb0 are the switch's ports; sa1 and sb1 the hosts' ends.
    for (port, host) in [("sa0", "sa1"), ("sb0", "sb1")] {
        ip(&["link", "add", port, "type", "veth", "peer", "name", host]);
        ip(&["link", "set", port, "up"]);
        ip(&["link", "set", host, "up"]);
    }
    let mut sa0 = crate::packet::open_lanes("sa0", 2).unwrap();
    let sb0 = crate::packet::open_lanes("sb0", 1).unwrap();
    let sa1 = crate::packet::open_lanes("sa1", 1).unwrap();
    let mut sb1 = crate::packet::open_lanes("sb1", 1).unwrap();
    let (a_path, b_path) = (
        sa0.kernel_path.take().unwrap(),
        sb0.kernel_path.as_ref().unwrap(),
    );
    assert_eq!(a_path.sockets.len(), sa0.lanes.len());
    assert_eq!(a_path.mtu(), 1500);
    let (a, b) = (a_path.ifindex(), b_path.ifindex());
    assert_eq!(Some(a), crate::interface_index("sa0"));

    let shortcut = KernelShortcut::new(16).unwrap();
    let links = (
        shortcut.attach(&a_path).unwrap(),
        shortcut.attach(b_path).unwrap(),
    );
    assert_eq!(links.0.ifindex(), a);
    assert_eq!(bpf::tcx_ingress_programs(a).unwrap(), 1);
    assert_eq!(bpf::tcx_ingress_programs(b).unwrap(), 1);
    shortcut.set(HOST_A, a).unwrap();
    shortcut.set(HOST_B, b).unwrap();

    // From host A (behind sa1) to host B (behind sb1): in by sa0, out by sb0.
    let ab = frame(HOST_B, HOST_A, 60, 1);
    sa1.tx.send(&VnetHdr::default(), &ab).unwrap();
    assert!(receives(&mut sb1, &ab, Duration::from_secs(2)), "B got it");
    assert!(
        !receives(&mut sa0, &ab, Duration::from_millis(100)),
        "the switch did not"
    );
    let (at_a, at_b) = (shortcut.counters(a).unwrap(), shortcut.counters(b).unwrap());
    assert_eq!((at_a.rx_frames, at_a.rx_bytes, at_a.tx_frames), (1, 60, 0));
    assert_eq!((at_b.rx_frames, at_b.tx_frames, at_b.tx_bytes), (0, 1, 60));
    assert!(entry(&shortcut, HOST_A).unwrap().last_seen_ns > 0);

    // Dropped: nothing attached, no counters, and the switch gets it all.
    drop(links);
    assert_eq!(bpf::tcx_ingress_programs(a).unwrap(), 0);
    assert_eq!(bpf::tcx_ingress_programs(b).unwrap(), 0);
    let mut counters = vec![0u8; shortcut.counters.value_size()];
    assert!(
        !shortcut
            .counters
            .lookup(&a.to_ne_bytes(), &mut counters)
            .unwrap()
    );
    assert_eq!(shortcut.counters(a).unwrap(), ShortcutCounters::default());
    let ab = frame(HOST_B, HOST_A, 60, 2);
    sa1.tx.send(&VnetHdr::default(), &ab).unwrap();
    assert!(
        receives(&mut sa0, &ab, Duration::from_secs(2)),
        "the switch got it"
    );
    assert!(
        !receives(&mut sb1, &ab, Duration::from_millis(100)),
        "B did not"
    );

    // And it attaches again.
    let again = shortcut.attach(&a_path).unwrap();
    assert_eq!(bpf::tcx_ingress_programs(a).unwrap(), 1);
    drop(again);
    assert_eq!(bpf::tcx_ingress_programs(a).unwrap(), 0);

    // A failed attach leaves nothing behind: the filters it had put on
    // the sockets come off again, the counters go.
    let sockets = a_path
        .sockets
        .iter()
        .map(|s| s.try_clone().unwrap())
        .collect();
    let gone = KernelPath::new("gone", 999_999, 1500, sockets, None);
    let err = shortcut.attach(&gone).unwrap_err();
    assert!(err.to_string().contains("gone (ifindex 999999)"), "{err}");
    for socket in &gone.sockets {
        let detached = bpf::detach_socket_filter(socket.as_fd()).unwrap_err();
        assert_eq!(
            detached.raw_os_error(),
            Some(libc::ENOENT),
            "no filter left"
        );
    }
    assert!(
        !shortcut
            .counters
            .lookup(&999_999u32.to_ne_bytes(), &mut counters)
            .unwrap()
    );

    // Sockets opened elsewhere (rootless mode's helper) come without a path.
    let fds = crate::packet::open_fds("sb1", 1).unwrap();
    assert!(
        crate::packet::adopt_lanes("sb1", fds)
            .unwrap()
            .kernel_path
            .is_none()
    );
}

#[test]
fn a_map_of_more_addresses_than_one_batch_is_read_whole() {
    if !as_root("a_map_of_more_addresses_than_one_batch_is_read_whole") {
        return;
    }
    // More than two batches' worth, each address on its own port.
    let count = ENTRIES_PER_BATCH as u32 * 2 + 37;
    let shortcut = KernelShortcut::new(count).unwrap();
    let mac = |i: u32| {
        let b = i.to_be_bytes();
        MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
    };
    for i in 0..count {
        shortcut.set(mac(i), 1000 + i).unwrap();
    }
    let entries = shortcut.entries().unwrap();
    assert_eq!(entries.len(), count as usize);
    for (i, (found, entry)) in (0..count).zip(&entries) {
        assert_eq!(*found, mac(i), "in address order");
        assert_eq!(entry.ifindex, 1000 + i);
    }
}

#[test]
fn a_lanes_filter_counts_what_it_drops_as_taken_in_the_ledger() {
    if !as_root("a_lanes_filter_counts_what_it_drops_as_taken_in_the_ledger") {
        return;
    }
    let shortcut = shortcut();
    shortcut.set(HOST_A, LO).unwrap();
    shortcut.set(HOST_B, ELSEWHERE).unwrap();
    let ledger = crate::ledger::LaneLedger::new(2).expect("a ledger");
    let filter = shortcut.lane_filter(&ledger, 1).expect("lane 1's filter");
    let run = |frame: &[u8]| run_as_filter(filter.as_fd(), frame);
    // Forwarded by the kernel: dropped here, and taken in lane 1 (as if
    // the steering had counted it queued there).
    assert_eq!(run(&frame(HOST_B, HOST_A, 60, 1)), 0);
    assert_eq!((ledger.taken(0), ledger.taken(1)), (0, 1));
    // The switch's (an unknown destination): kept, and the switch counts
    // it once it has forwarded it.
    assert_ne!(run(&frame(HOST_C, HOST_A, 60, 2)), 0);
    assert_eq!(ledger.taken(1), 1);
}

//! tapswitch forwarding real traffic between network namespaces, through
//! veth ports (AF_PACKET) and TAP ports. Needs root; CI runs it as root.
//!
//! ```text
//!   th..(h1) eth0 ═══ p1 ┐
//!   th..(h2) eth0 ═══ p2 ├─ tapswitch serve (in tsw..) ── gw 172.17.0.1
//!   th..(h3) eth0 ═══ p3 ┘
//! ```

use std::net::Ipv4Addr;
use std::time::Duration;

use tapswitch_tests::frames::{mac, probe, probe_vlan};
use tapswitch_tests::poll::within;
use tapswitch_tests::traffic::{Station, ping, tcp_transfer};
use tapswitch_tests::{Netns, SwitchProcess, Topology, require_root, tap_pair};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
const WINDOW: Duration = Duration::from_millis(150);

fn serve(topo: &Topology, extra: &[&str]) -> SwitchProcess {
    let mut args = topo.iface_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    SwitchProcess::start(&topo.switch_ns.name, &args)
}

#[test]
fn ping_and_tcp_with_default_offloads_through_veth_ports() {
    require_root();
    let topo = Topology::veth_star(2);
    let switch = serve(&topo, &[]);
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);

    assert_eq!(
        ping(&h1.ns, h2.ip, 3, Duration::from_secs(2)),
        3,
        "h1 -> h2"
    );
    assert_eq!(
        ping(&h2.ns, GATEWAY, 3, Duration::from_secs(2)),
        3,
        "h2 -> gateway"
    );
    // 10 MB of TCP: with the veths' default TSO and checksum offload the
    // switch sees 64 KiB super-frames with partial checksums.
    tcp_transfer(&h2.ns, h2.ip, &h1.ns, 10 << 20).expect("TCP h1 -> h2");
    tcp_transfer(&h1.ns, h1.ip, &h2.ns, 10 << 20).expect("TCP h2 -> h1");

    assert_eq!(switch.port_of("02:42:ac:11:00:02").as_deref(), Some("p1"));
    assert_eq!(switch.port_of("02:42:ac:11:00:03").as_deref(), Some("p2"));
    assert_eq!(switch.port_of("02:42:ac:11:00:01").as_deref(), Some("gw"));
    let p1 = switch.port("p1");
    assert!(p1["stats"]["rx_bytes"].as_u64().unwrap() > 10 << 20, "{p1}");
    assert_eq!(p1["offloads"], true);
}

#[test]
fn ping_and_tcp_through_tap_ports_moved_into_namespaces() {
    require_root();
    let (_switch_ns, switch, hosts) = tap_pair(&[]);
    let h2_ip = Ipv4Addr::new(172, 17, 0, 3);
    assert_eq!(ping(&hosts[0], h2_ip, 3, Duration::from_secs(2)), 3);
    assert_eq!(ping(&hosts[1], GATEWAY, 2, Duration::from_secs(2)), 2);
    tcp_transfer(&hosts[1], h2_ip, &hosts[0], 10 << 20).expect("TCP over TAP ports");
    let ports = switch.ports();
    let kinds: Vec<&str> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["gateway", "tap", "tap"]);
}

#[test]
fn switch_made_taps_disappear_when_it_stops() {
    require_root();
    let ns = Netns::new("tsw");
    let switch = SwitchProcess::start(
        &ns.name,
        &["--tap".into(), "tgone".into(), "--no-gateway".into()],
    );
    assert!(tapswitch_tests::netns::ip_output(&["-n", &ns.name, "link", "show", "tgone"]).is_ok());
    assert!(switch.stop().success(), "SIGTERM is a clean shutdown");
    assert!(
        tapswitch_tests::netns::ip_output(&["-n", &ns.name, "link", "show", "tgone"]).is_err(),
        "the TAP the switch created is gone"
    );
}

#[test]
fn a_port_deleted_while_traffic_flows_is_removed_and_the_rest_keeps_forwarding() {
    require_root();
    let topo = Topology::veth_star(3);
    let mut switch = serve(&topo, &[]);
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    assert_eq!(ping(&h1.ns, topo.hosts[2].ip, 2, Duration::from_secs(2)), 2);

    std::thread::scope(|scope| {
        let transfer = scope.spawn(|| tcp_transfer(&h2.ns, h2.ip, &h1.ns, 40 << 20));
        std::thread::sleep(Duration::from_millis(50));
        topo.switch_ns.ip(&["link", "del", "p3"]);
        transfer
            .join()
            .unwrap()
            .expect("the transfer between the other ports survives");
    });
    assert!(switch.is_running());
    // The switch notices within a moment (the link goes down first, then the
    // interface disappears).
    let port_names = || -> Vec<String> {
        let ports = switch.ports();
        ports
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    // Still four after that: the assertion below shows them.
    let _ = within(Duration::from_secs(3), || port_names().len() <= 3);
    assert_eq!(port_names(), ["gw", "p1", "p2"]);
    assert!(
        switch.log().contains("port 3 p3 removed"),
        "{}",
        switch.log()
    );
    assert_eq!(
        switch.port_of("02:42:ac:11:00:04"),
        None,
        "p3's host is forgotten"
    );
    assert_eq!(ping(&h1.ns, h2.ip, 2, Duration::from_secs(2)), 2);
}

#[test]
fn ports_are_added_and_removed_at_runtime() {
    require_root();
    let topo = Topology::veth_star(2);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &["--iface".into(), "p1".into()]);
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    assert_eq!(
        ping(&h1.ns, h2.ip, 1, Duration::from_millis(500)),
        0,
        "p2 is not attached yet"
    );

    let added = switch
        .call(r#"{"cmd":"port_add","iface":"p2"}"#)
        .expect("port add");
    assert_eq!(added["port_no"], 2);
    assert_eq!(ping(&h1.ns, h2.ip, 2, Duration::from_secs(2)), 2);

    let err = switch
        .call(r#"{"cmd":"port_add","iface":"p2"}"#)
        .unwrap_err();
    assert!(err.contains("already attached"), "{err}");
    let err = switch
        .call(r#"{"cmd":"port_add","iface":"nosuchif0"}"#)
        .unwrap_err();
    assert!(err.contains("nosuchif0: no such interface"), "{err}");

    switch
        .call(r#"{"cmd":"port_rm","name":"p2"}"#)
        .expect("port rm");
    assert_eq!(
        ping(&h1.ns, h2.ip, 1, Duration::from_millis(500)),
        0,
        "p2 is detached"
    );
    assert_eq!(switch.port_of("02:42:ac:11:00:03"), None);
    let err = switch.call(r#"{"cmd":"port_rm","name":"p2"}"#).unwrap_err();
    assert!(err.contains("no port named p2"), "{err}");
}

#[test]
fn frames_of_every_size_and_vlan_tags_arrive_byte_for_byte() {
    require_root();
    let topo = Topology::veth_star(2);
    let _switch = serve(&topo, &["--no-gateway"]);
    let mut s1 = Station::open(&topo.hosts[0].ns, "eth0");
    let mut s2 = Station::open(&topo.hosts[1].ns, "eth0");
    let a = mac("02:00:00:00:aa:01");
    let b = mac("02:00:00:00:aa:02");
    // Teach the switch where b lives, so a's frames are unicast to p2.
    s2.teach(b, &mut s1, WINDOW);

    let mut sent = Vec::new();
    for (id, len) in (60..=1514).step_by(97).chain([1514]).enumerate() {
        sent.push(probe(b, a, id as u32 + 1, len));
    }
    sent.push(probe_vlan(b, a, 100, 900, 64));
    sent.push(probe_vlan(b, a, 4000, 901, 1518));
    s1.send_all(sent.iter().map(Vec::as_slice));
    let got: Vec<Vec<u8>> = s2
        .collect_probes(WINDOW)
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    assert_eq!(
        got, sent,
        "every frame arrives once, unchanged, in order, tags included"
    );
    assert!(
        s1.collect_probes(WINDOW).is_empty(),
        "nothing comes back to the sender"
    );
}

#[test]
fn without_privileges_the_error_says_what_to_do_and_nothing_is_left_behind() {
    require_root();
    let topo = Topology::veth_star(1);
    let control = std::env::temp_dir().join(format!("{}.sock", tapswitch_tests::unique_name("np")));
    // A copy user nobody can run, wherever the checkout lives.
    let dir = std::env::temp_dir().join(tapswitch_tests::unique_name("npb"));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("tapswitch");
    std::fs::copy(tapswitch_tests::switch_process::binary(), &binary).unwrap();
    for path in [&dir, &binary] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    for port in [["--iface", "p1"], ["--tap", "tnoperm"]] {
        // The same command as user nobody, inside the test's namespace.
        let out = topo.switch_ns.exec(
            "setpriv",
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                binary.to_str().unwrap(),
                "serve",
                port[0],
                port[1],
                "--control",
                control.to_str().unwrap(),
            ],
        );
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!(
                "tapswitch: port {}: permission denied while",
                port[1]
            )) && last.contains("run as root, or give the binary CAP_NET_RAW and CAP_NET_ADMIN"),
            "{stderr}"
        );
        assert!(!control.exists(), "no control socket is left behind");
    }
    assert!(
        tapswitch_tests::netns::ip_output(&["-n", &topo.switch_ns.name, "link", "show", "tnoperm"])
            .is_err(),
        "no TAP device is left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What kind of ICMP echo frame this is: Some(8) request, Some(0) reply.
fn icmp_echo_type(frame: &[u8]) -> Option<u8> {
    (frame.len() > 34 && frame[12..14] == [0x08, 0x00] && frame[23] == 1)
        .then(|| frame[34])
        .filter(|t| *t == 0 || *t == 8)
}

fn read_capture(path: &std::path::Path) -> Vec<(Option<ports::capture::Direction>, Vec<u8>)> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader =
        ports::capture::PcapReader::new(std::io::BufReader::new(file)).expect("a pcapng file");
    let mut frames = Vec::new();
    while let Some(frame) = reader.next_frame().expect("a readable record") {
        frames.push((frame.direction, frame.data.to_vec()));
    }
    frames
}

#[test]
fn serve_capture_writes_pcapng_per_port_with_directions_and_stops_at_runtime() {
    use ports::capture::Direction::{Inbound, Outbound};
    require_root();
    let topo = Topology::veth_star(2);
    let dir = std::env::temp_dir().join(tapswitch_tests::unique_name("cap"));
    let switch = serve(&topo, &["--capture", dir.to_str().unwrap()]);
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    assert_eq!(ping(&h1.ns, h2.ip, 3, Duration::from_secs(2)), 3);
    let ports = switch.ports();
    assert!(
        ports
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["capturing"] == true),
        "{ports}"
    );

    switch
        .call(r#"{"cmd":"capture_stop","port":"p1"}"#)
        .expect("capture stop");
    assert_eq!(ping(&h1.ns, h2.ip, 2, Duration::from_secs(2)), 2);
    let err = switch
        .call(r#"{"cmd":"capture_start","port":"nope"}"#)
        .unwrap_err();
    assert!(err.contains("no port named nope"), "{err}");
    assert!(switch.stop().success());

    let count = |frames: &[(Option<ports::capture::Direction>, Vec<u8>)], dir, icmp| {
        frames
            .iter()
            .filter(|(d, f)| *d == Some(dir) && icmp_echo_type(f) == Some(icmp))
            .count()
    };
    let p1 = read_capture(&dir.join("p1.pcapng"));
    assert_eq!(
        count(&p1, Inbound, 8),
        3,
        "p1 received h1's three requests, then stopped capturing"
    );
    assert_eq!(count(&p1, Outbound, 0), 3, "p1 sent h2's three replies");
    let p2 = read_capture(&dir.join("p2.pcapng"));
    assert_eq!(count(&p2, Outbound, 8), 5, "p2 kept capturing");
    assert_eq!(count(&p2, Inbound, 0), 5);
    assert!(
        dir.join("gw.pcapng").exists(),
        "the gateway port has its file too"
    );

    // Where tcpdump or tshark are installed (CI installs both), they must read the files.
    for (tool, args) in [("tcpdump", ["-nr"]), ("tshark", ["-r"])] {
        let Ok(out) = std::process::Command::new(tool)
            .args(args)
            .arg(dir.join("p1.pcapng"))
            .output()
        else {
            eprintln!("{tool} is not installed; skipping its check");
            continue;
        };
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("ICMP") && text.contains("172.17.0.3"),
            "{tool} output:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One container flooding another must not starve a third on the same
/// worker: while h1 sends UDP to h2 faster than the one worker forwards
/// (its socket overflows), h3's pings to h2 still get answers. The flood is
/// bounded in time (it ends with the pings); it goes to a port nobody
/// listens on.
#[test]
fn a_flooded_port_does_not_starve_the_other_ports_of_its_worker() {
    require_root();
    let topo = Topology::veth_star(3);
    let switch = serve(&topo, &["--workers", "1"]);
    let (h1, h2, h3) = (&topo.hosts[0], &topo.hosts[1], &topo.hosts[2]);
    // The switch learns all three before the flood.
    assert_eq!(ping(&h1.ns, h2.ip, 1, Duration::from_secs(2)), 1);
    assert_eq!(ping(&h3.ns, h2.ip, 1, Duration::from_secs(2)), 1);
    let sender = h1.ns.run(|| {
        let s = std::net::UdpSocket::bind((h1.ip, 0)).expect("binding in h1");
        s.connect((h2.ip, 9)).expect("connecting in h1");
        s
    });
    // The flood lasts until the last ping is answered or given up (at most
    // 0.3 + 10 × 0.4 s): every answer counted came while it ran. Each ping
    // may wait 400 ms, so a loaded machine's scheduling delays are not
    // taken for starvation (a starved port gets no answer at all).
    let flooding = std::sync::atomic::AtomicBool::new(true);
    let answered = std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = sender.send(&[0u8; 64]);
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        let answered = ping(&h3.ns, h2.ip, 10, Duration::from_millis(400));
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        answered
    });
    // The switch reads its sockets' drop counters once a second.
    std::thread::sleep(Duration::from_millis(1200));
    let p1 = &switch.port("p1")["stats"];
    let overflowed = p1["drops"]["rx-overflow"].as_u64().unwrap_or(0);
    assert!(
        overflowed > 0,
        "the flood was more than the worker could take: {p1}"
    );
    assert!(
        answered >= 8,
        "{answered} of 10 pings answered during the flood"
    );
}

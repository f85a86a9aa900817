//! The classroom commands against a live switch: `tapswitch monitor` shows
//! the switch learn, move and forget and an operator pin, unpin and flush
//! entries, `tapswitch trace on|off` adds and removes trace lines, and the
//! control socket keeps answering amid thousands of idle clients without a
//! thread each.
//!
//! ```text
//!   th..(h1) eth0 ═══ p1 ┐
//!   th..(h2) eth0 ═══ p2 ┴─ tapswitch serve --ageing-time 2 (in tsw..)
//!                          tapswitch monitor (in tsw..) ─┘
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use tapswitch_tests::frames::{mac, probe};
use tapswitch_tests::monitor::Monitor;
use tapswitch_tests::switch_process::binary;
use tapswitch_tests::traffic::Station;
use tapswitch_tests::{SwitchProcess, Topology, require_root};

#[test]
fn monitor_shows_the_switch_learn_move_and_forget_and_the_trace_comes_and_goes() {
    require_root();
    let topo = Topology::veth_star(2);
    let switch = topo.serve_with(&["--ageing-time", "2"]);
    let monitor = Monitor::start(&switch, &[]);
    let json = Monitor::start(&switch, &["--json"]);
    let (h1, h2) = (
        Station::open(&topo.hosts[0].ns, "eth0"),
        Station::open(&topo.hosts[1].ns, "eth0"),
    );
    let broadcast = mac("ff:ff:ff:ff:ff:ff");
    Monitor::wait_listening(&[&monitor, &json], &h1, [0x02, 0, 0x5e, 0x10, 0x01]);
    let roamer = "02:00:5e:10:00:07";
    h1.send(&probe(broadcast, mac(roamer), 1, 64));
    let learned = monitor.expect("the roamer learned", |l| l.starts_with(roamer));
    assert_eq!(learned, format!("{roamer} dev p1 learned"));
    h2.send(&probe(broadcast, mac(roamer), 2, 64));
    monitor.expect("the move", |l| {
        l == format!("{roamer} dev p2 moved from p1 to p2")
    });
    monitor.expect("the expiry", |l| l == format!("{roamer} dev p2 expired"));
    let record = json.expect("the JSON move", |l| l.contains(r#""event":"moved""#));
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(
        (&record["mac"], &record["dev"], &record["from_dev"]),
        (&roamer.into(), &"p2".into(), &"p1".into())
    );

    let run = |command: &str, args: &[&str]| {
        let out = Command::new(binary())
            .arg(command)
            .args(args)
            .arg("--control")
            .arg(&switch.control)
            .output()
            .expect("running tapswitch");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let trace = |args: &[&str]| run("trace", args);
    assert!(trace(&["on", "--port", "p2"]).starts_with("trace on for port p2"));
    h1.send(&probe(broadcast, mac(roamer), 3, 64));
    monitor.expect("a trace line about p2", |l| {
        l.starts_with("trace t=") && l.contains(" p1: ") && l.ends_with("flooded to gw p2")
    });
    assert_eq!(trace(&["off"]).trim(), "trace off");
    // A marker after "off": no trace line may come before it.
    h2.send(&probe(broadcast, mac("02:00:5e:10:00:08"), 4, 64));
    let mut before_marker = Vec::new();
    monitor.expect("the marker", |l| {
        before_marker.push(l.to_string());
        l.starts_with("02:00:5e:10:00:08")
    });
    assert!(
        !before_marker.iter().any(|l| l.starts_with("trace ")),
        "a trace line after trace off: {before_marker:?}"
    );
    // An operator's table edits show among the traffic's, as with
    // `bridge monitor fdb`.
    let pinned = "02:00:5e:10:00:09";
    run("fdb", &["add", pinned, "p1"]);
    monitor.expect("the static entry added", |l| {
        l == format!("{pinned} dev p1 static added")
    });
    run("fdb", &["del", pinned]);
    monitor.expect("the static entry removed", |l| {
        l == format!("{pinned} dev p1 static removed")
    });
    run("fdb", &["add", pinned, "p2"]);
    run("fdb", &["flush", "--port", "p2", "--include-static"]);
    monitor.expect("the flush of p2", |l| l.starts_with("dev p2 flushed ("));

    let bad = Command::new(binary())
        .args(["trace", "on", "--port", "nosuch", "--control"])
        .arg(&switch.control)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no port named nosuch"));

    drop(json);
    let mut monitor = monitor;
    assert!(switch.stop().success());
    monitor.expect("the goodbye", |l| l.contains("went away; monitor stops"));
    let status = monitor.child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "the switch going away is an exit 1");
}

#[test]
fn a_real_switch_answers_fdb_amid_two_thousand_idle_clients_with_few_threads() {
    require_root();
    let topo = Topology::veth_star(1);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    let mut idle = Vec::new();
    for n in 0..2000 {
        match UnixStream::connect(&switch.control) {
            Ok(mut stream) => {
                if n % 2 == 0 {
                    // Half of them crawl: a request started, never finished.
                    let _ = stream.write_all(br#"{"cmd":"#);
                }
                idle.push(stream);
            }
            // Out of descriptors in this process: enough of a crowd.
            Err(_) => break,
        }
    }
    assert!(idle.len() > 300, "only {} clients connected", idle.len());
    let fdb = switch.fdb();
    assert!(fdb["entries"].is_array(), "{fdb}");
    let threads = std::fs::read_dir(format!("/proc/{}/task", switch.pid()))
        .expect("the switch's threads")
        .count();
    assert!(threads < 32, "{threads} threads for {} clients", idle.len());
    // The clients pushed out to make room were told why.
    let mut first = BufReader::new(&idle[0]);
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = String::new();
    first.read_line(&mut line).unwrap();
    assert!(line.contains("closed to make room"), "{line}");
}

//! `tapswitch fdb add|del|flush` against a running switch, as a user types
//! them: what each prints, what `fdb --json` then shows, and each mistake
//! refused in one line; a learned entry deleted shows in `monitor`; a
//! reader that stops early ends `fdb` and `monitor` quietly. Needs root (the
//! switch's ports are veths in namespaces this test makes); CI runs it as
//! root.
//!
//! ```text
//!   h1 eth0 ═ p1 ┐
//!                ├─ switch ns: tapswitch serve --iface p1 --iface p2
//!   h2 eth0 ═ p2 ┘
//! ```

use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use tapswitch_tests::frames::{mac, probe};
use tapswitch_tests::monitor::Monitor;
use tapswitch_tests::switch_process::binary;
use tapswitch_tests::traffic::Station;
use tapswitch_tests::{SwitchProcess, Topology, require_root};

const PINNED: &str = "02:00:00:00:aa:01";

fn fdb(switch: &SwitchProcess, args: &[&str]) -> Output {
    let mut all = vec!["fdb"];
    all.extend_from_slice(args);
    switch.command(&all)
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one line a refusal prints.
fn refusal(out: &Output) -> String {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr.trim_end().to_string()
}

fn row(table: &serde_json::Value, mac: &str) -> Option<serde_json::Value> {
    table["entries"]
        .as_array()?
        .iter()
        .find(|e| e["mac"] == mac)
        .cloned()
}

#[test]
fn static_entries_are_added_shown_deleted_and_survive_a_flush() {
    require_root();
    let topo = Topology::veth_star(2);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());

    let said = stdout_of(&fdb(&switch, &["add", PINNED, "p1"]));
    assert_eq!(said, format!("added static entry {PINNED} on port p1\n"));

    let table: serde_json::Value =
        serde_json::from_str(&stdout_of(&fdb(&switch, &["--json"]))).unwrap();
    let entry = row(&table, PINNED).expect("the static entry is listed");
    assert_eq!(entry["ifname"], "p1");
    assert_eq!(entry["flags"], serde_json::json!(["static"]));
    assert_eq!(entry["state"], "static");
    assert!(entry["vlan"].is_null());
    assert_eq!(entry["port"], "p1", "the fields of before stay");
    assert_eq!(entry["kind"], "static");
    assert_eq!(
        table["stats"]["entries"], 0,
        "static entries are not counted"
    );

    let shown = stdout_of(&fdb(&switch, &["show"]));
    let line = shown.lines().find(|l| l.contains(PINNED)).unwrap();
    assert!(line.trim_end().ends_with("static"), "{line}");

    // Mistakes, each in one line.
    assert_eq!(
        refusal(&fdb(&switch, &["add", PINNED, "nosuch"])),
        "tapswitch: no port named nosuch on this switch; `tapswitch ports` lists them"
    );
    let group = refusal(&fdb(&switch, &["add", "01:00:5e:00:00:01", "p1"]));
    assert!(
        group.starts_with(
            "tapswitch: 01:00:5e:00:00:01 is a group (multicast or broadcast) address"
        ),
        "{group}"
    );
    let gateway_mac = switch.info()["gateway_mac"].as_str().unwrap().to_string();
    let own = refusal(&fdb(&switch, &["del", &gateway_mac]));
    assert!(own.contains("is the switch's own address"), "{own}");
    let gateway_port = switch.port_of(&gateway_mac).unwrap();
    let onto_gateway = refusal(&fdb(&switch, &["add", PINNED, &gateway_port]));
    assert!(onto_gateway.contains("is the gateway's"), "{onto_gateway}");

    // A flush keeps static entries unless asked.
    let said = stdout_of(&fdb(&switch, &["flush"]));
    assert!(said.starts_with("flushed "), "{said}");
    assert_eq!(switch.port_of(PINNED).as_deref(), Some("p1"));
    let said = stdout_of(&fdb(
        &switch,
        &["flush", "--port", "p1", "--include-static"],
    ));
    assert_eq!(said, "flushed 1 learned and static entry of port p1\n");
    assert_eq!(switch.port_of(PINNED), None);
    assert!(
        switch.port_of(&gateway_mac).is_some(),
        "the switch's own address always stays"
    );

    stdout_of(&fdb(&switch, &["add", PINNED, "p2"]));
    let said = stdout_of(&fdb(&switch, &["del", PINNED]));
    assert_eq!(
        said,
        format!("removed {PINNED} (a static entry on port p2)\n")
    );
    assert_eq!(
        refusal(&fdb(&switch, &["del", PINNED])),
        format!("tapswitch: {PINNED} is not in the MAC table")
    );
}

/// Waits (a bounded while, by polling) for a child to end on its own.
fn exit_of(child: &mut std::process::Child, nudge: impl Fn()) -> Option<ExitStatus> {
    for _ in 0..200 {
        if let Some(status) = child.try_wait().expect("waiting for tapswitch") {
            return Some(status);
        }
        nudge();
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_reader_that_stops_early_ends_fdb_and_monitor_quietly() {
    require_root();
    let topo = Topology::veth_star(2);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());

    // `tapswitch fdb --json | true`: the reader is gone before the answer.
    for args in [&["--json"][..], &[][..]] {
        let mut child = Command::new(binary())
            .arg("fdb")
            .args(args)
            .arg("--control")
            .arg(&switch.control)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running tapswitch fdb");
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "fdb {args:?}");
        assert_eq!(out.status.code(), Some(0), "fdb {args:?}");
    }

    // `tapswitch monitor --json | head -0`: it ends at its next event.
    let mut child = Command::new(binary())
        .args(["monitor", "--json", "--control"])
        .arg(&switch.control)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tapswitch monitor");
    drop(child.stdout.take());
    let edit = || {
        stdout_of(&fdb(&switch, &["add", PINNED, "p1"]));
        stdout_of(&fdb(&switch, &["del", PINNED]));
    };
    let status = exit_of(&mut child, edit);
    if status.is_none() {
        // Our own child, by its id.
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        status.is_some(),
        "monitor kept running with its reader gone"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "no panic, no message"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn deleting_a_learned_entry_shows_in_monitor() {
    require_root();
    let topo = Topology::veth_star(2);
    let switch = SwitchProcess::start(&topo.switch_ns.name, &topo.iface_args());
    let monitor = Monitor::start(&switch, &[]);
    let json = Monitor::start(&switch, &["--json"]);
    let h1 = Station::open(&topo.hosts[0].ns, "eth0");
    let broadcast = mac("ff:ff:ff:ff:ff:ff");
    Monitor::wait_listening(&[&monitor, &json], &h1, [0x02, 0, 0x5e, 0x20, 0x01]);

    let host = "02:00:5e:20:00:07";
    h1.send(&probe(broadcast, mac(host), 2, 64));
    monitor.expect("the host learned", |l| {
        l == format!("{host} dev p1 learned")
    });
    let said = stdout_of(&fdb(&switch, &["del", host]));
    assert_eq!(
        said,
        format!("removed {host} (a learned entry on port p1)\n")
    );
    monitor.expect("the learned entry deleted", |l| {
        l == format!("{host} dev p1 deleted")
    });
    let record = json.expect("the JSON deletion", |l| l.contains(r#""event":"deleted""#));
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(
        (&record["mac"], &record["dev"]),
        (&host.into(), &"p1".into())
    );
    assert_eq!(switch.port_of(host), None);
}

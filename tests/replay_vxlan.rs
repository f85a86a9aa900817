//! The frame lab's VXLAN tunnel port (`replay --vxlan`): golden scenarios in
//! tests/fixtures/vxlan/ whose tunnel input and output are captures of the
//! underlay, checked like every other fixture
//! ([`check_scenario`](tapswitch_tests::golden::check_scenario)), and
//! `--expect` catching a one-byte change of an underlay output.
//!
//! `UPDATE_FIXTURES=1 cargo test -p tapswitch-tests --test replay_vxlan`
//! rewrites the generated files; review the diff before committing it.

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use tapswitch_tests::golden::check_scenario;
use tapswitch_tests::lab::{TempDir, fixtures_dir, replay_args, replay_both};

fn scenario(name: &str) -> PathBuf {
    fixtures_dir().join("vxlan").join(name)
}

/// A broadcast from a local port goes to every member; a MAC that arrives
/// by VXLAN is learned on the tunnel port, and the reply goes to its host alone.
#[test]
fn floods_go_to_every_member_and_replies_to_one() {
    check_scenario(&scenario("flood-learn"));
}

/// Strangers, other VNIs, short datagrams and other underlay traffic are
/// dropped and counted by reason; the gateway's frames never cross.
#[test]
fn what_the_tunnel_refuses_is_dropped_and_counted() {
    check_scenario(&scenario("drops"));
}

/// A MAC heard from another member follows it there; a silent one is
/// forgotten by the switch and the tunnel alike, and flooded to again.
#[test]
fn remote_macs_follow_their_host_and_age_on_capture_time() {
    check_scenario(&scenario("move-age"));
}

/// The same on an IPv6 underlay: IPv6 outer headers out (hop limit 64,
/// flow label 0, UDP checksum), members known by address; VXLAN over IPv4
/// and IPv6 datagrams without a UDP checksum are not for the socket.
#[test]
fn an_ipv6_underlay_floods_learns_and_refuses_the_other_version() {
    check_scenario(&scenario("ipv6-underlay"));
}

#[test]
fn every_vxlan_fixture_directory_has_a_test() {
    let mut dirs: Vec<String> = fs::read_dir(fixtures_dir().join("vxlan"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        ["drops", "flood-learn", "ipv6-underlay", "move-age"],
        "add a test for the new scenario"
    );
}

/// The scenario's `args` with its paths made absolute, and `extra` after them.
fn scenario_args(dir: &std::path::Path, extra: &[String]) -> Vec<String> {
    let options = fs::read_to_string(dir.join("args")).unwrap();
    let mut args: Vec<String> = options.split_whitespace().map(String::from).collect();
    for i in 1..args.len() {
        if (args[i - 1] == "--port" || args[i - 1] == "--vxlan")
            && let Some((name, file)) = args[i].split_once('=')
        {
            args[i] = format!("{name}={}", dir.join(file).display());
        }
    }
    args.extend_from_slice(extra);
    args
}

/// `--expect` compares the underlay output both ways: the checked-in files
/// agree (exit 0); one byte changed in the expected flood to 10.0.0.3 is a
/// difference (exit 1) that names the port and the frame; an expected
/// directory without the tunnel's file is one too.
#[test]
fn expect_catches_a_changed_byte_of_the_underlay() {
    let dir = scenario("flood-learn");
    let tmp = TempDir::new("vxlan-expect");
    let run = |expected: &std::path::Path, out: &str| {
        replay_both(replay_args(&scenario_args(
            &dir,
            &[
                "--out".into(),
                tmp.join(out).display().to_string(),
                "--expect".into(),
                expected.display().to_string(),
            ],
        )))
    };
    let same = run(&dir.join("expected"), "same");
    assert_eq!(same.result.unwrap(), ExitCode::SUCCESS, "{}", same.stderr);

    let altered = tmp.join("altered");
    fs::create_dir_all(&altered).unwrap();
    for port in ["p1", "p2", "vx0"] {
        let file = format!("{port}.pcap");
        fs::copy(dir.join("expected").join(&file), altered.join(&file)).unwrap();
    }
    let vx0 = altered.join("vx0.pcap");
    let mut bytes = fs::read(&vx0).unwrap();
    // The second record (the flood's copy to 10.0.0.3): the last byte of
    // its outer destination address, after the 24-byte file header, the
    // first record and the second record's 16-byte header.
    let first_len = u32::from_ne_bytes(bytes[24 + 8..24 + 12].try_into().unwrap()) as usize;
    let second = 24 + 16 + first_len + 16;
    assert_eq!(bytes[second + 14 + 19], 3, "10.0.0.3's last byte");
    bytes[second + 14 + 19] = 4;
    fs::write(&vx0, bytes).unwrap();
    let differs = run(&altered, "differs");
    assert_eq!(
        differs.result.unwrap(),
        ExitCode::FAILURE,
        "{}",
        differs.stdout
    );
    assert!(
        differs.stderr.contains("expect: port vx0 frame 2"),
        "{}",
        differs.stderr
    );

    fs::remove_file(&vx0).unwrap();
    let missing = run(&altered, "missing");
    assert_eq!(missing.result.unwrap(), ExitCode::FAILURE);
    assert!(missing.stderr.contains("vx0"), "{}", missing.stderr);
}

/// `--json` carries the tunnel (counters, remote MACs and where they are,
/// IPv6 endpoints in brackets) and its drops on its port, by reason.
#[test]
fn the_json_summary_has_the_tunnel_and_its_drops() {
    let tmp = TempDir::new("vxlan-json");
    let json = |name: &str| -> serde_json::Value {
        let dir = scenario(name);
        let out = tmp.join(name).display().to_string();
        let run = replay_both(replay_args(&scenario_args(
            &dir,
            &["--out".into(), out, "--json".into()],
        )));
        assert_eq!(run.result.unwrap(), ExitCode::SUCCESS, "{}", run.stderr);
        serde_json::from_str(&run.stdout).unwrap()
    };
    let flood = json("flood-learn");
    let tunnel = &flood["tunnel"];
    assert_eq!(tunnel["port"], "vx0");
    assert_eq!(tunnel["local"], "10.0.0.1:4789");
    assert_eq!(tunnel["vni"], 42);
    assert_eq!(
        tunnel["members"],
        serde_json::json!(["10.0.0.2:4789", "10.0.0.3:4789"])
    );
    assert_eq!(tunnel["stats"]["tx_datagrams"], 3);
    assert_eq!(tunnel["stats"]["tx_floods"], 1);
    assert_eq!(tunnel["stats"]["rx_frames"], 2);
    assert_eq!(
        tunnel["remotes"],
        serde_json::json!([{"mac": "02:42:ac:11:00:09", "via": "10.0.0.2:4789"}])
    );

    let drops = json("drops");
    let vx0 = drops["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "vx0")
        .unwrap();
    assert_eq!(
        vx0["drops"],
        serde_json::json!({"local-only": 1, "malformed-vxlan": 1, "not-member": 1,
                           "not-vxlan": 2, "wrong-vni": 2})
    );
    assert_eq!(vx0["rx_dropped"], 6);
    assert_eq!(vx0["tx_dropped"], 1);
    assert_eq!(drops["tunnel"]["stats"]["rx_dropped_not_member"], 1);
    assert_eq!(drops["tunnel"]["stats"]["rx_dropped_wrong_vni"], 2);

    let ipv6 = json("ipv6-underlay");
    let tunnel = &ipv6["tunnel"];
    assert_eq!(tunnel["local"], "[fd99::1]:4789");
    assert_eq!(
        tunnel["members"],
        serde_json::json!(["[fd99::2]:4789", "[fd99::3]:4789"])
    );
    assert_eq!(
        tunnel["remotes"],
        serde_json::json!([{"mac": "02:42:ac:11:00:09", "via": "[fd99::2]:4789"}])
    );
}

/// The tunnel's own endpoint is not a member, a member is of the
/// underlay's IP version, and the tunnel port's name is one more port name.
#[test]
fn a_tunnel_is_refused_with_its_own_endpoint_or_another_ip_version_as_member_or_a_taken_name() {
    let tmp = TempDir::new("vxlan-refused");
    let out = tmp.join("out").display().to_string();
    let base = [
        "--port",
        "p1",
        "--out",
        &out,
        "--underlay",
        "10.0.0.1",
        "--vni",
        "42",
    ];
    let refused = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let run = replay_both(replay_args(&args));
        format!("{:#}", run.result.unwrap_err())
    };
    assert_eq!(
        refused(&["--vxlan", "vx0", "--member", "10.0.0.1:4789"]),
        "--member 10.0.0.1:4789 is the tunnel's own --underlay endpoint"
    );
    assert_eq!(
        refused(&["--vxlan", "p1"]),
        "port p1 is given twice: port names must be unique"
    );
    assert_eq!(
        refused(&["--vxlan", "vx0", "--member", "[fd99::2]:4789"]),
        "--member [fd99::2]:4789 is IPv6, and the tunnel's --underlay 10.0.0.1:4789 is IPv4: one tunnel, one IP version"
    );
}

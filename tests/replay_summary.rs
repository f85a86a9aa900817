//! What `replay` prints: the counters by default, the MAC table with
//! `--fdb`, one JSON document with `--json`, warnings on stderr, and an
//! output directory that holds exactly the last run's files.

use std::fs;
use std::process::ExitCode;

use ports::capture::OutputFormat;
use tapswitch_tests::lab::{TempDir, fixtures_dir, port_args, replay_args, replay_both};
use tools::lab::outputs::MANIFEST;
use tools::lab::text;
use tools::pcap_cmd;

fn flood_learn_args(out: &str, extra: &[&str]) -> Vec<String> {
    let scenario = fixtures_dir().join("flood-learn");
    let mut args = port_args(&scenario, &["p1", "p2", "p3"]);
    args.extend(["--no-gateway", "--out", out].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn the_mac_table_only_with_fdb() {
    let tmp = TempDir::new("summary");
    let out = tmp.join("out").display().to_string();
    let run = replay_both(replay_args(&flood_learn_args(&out, &[])));
    assert_eq!(run.result.unwrap(), ExitCode::SUCCESS);
    assert_eq!(
        run.stdout,
        "replay: 4 frames from t=0.000000 to t=0.003000\n\
         port        rx        tx   dropped  drops\n\
         p1           2         2         0\n\
         p2           1         3         0\n\
         p3           1         1         0\n\
         table: 3 of 8192 entries; learned 3, refreshed 0, moved 0, expired 0, evicted 0, refused 0\n"
    );
    let run = replay_both(replay_args(&flood_learn_args(&out, &["--fdb"])));
    assert!(
        run.stdout
            .contains("mac table at t=0.003000 (ageing time 300 s):\n")
    );
    assert!(
        run.stdout.contains("      3  p3    02:00:00:00:00:03  no "),
        "{}",
        run.stdout
    );
}

#[test]
fn json_is_one_document() {
    let tmp = TempDir::new("json");
    let out = tmp.join("out").display().to_string();
    let expected = fixtures_dir()
        .join("flood-learn/expected")
        .display()
        .to_string();
    let run = replay_both(replay_args(&flood_learn_args(
        &out,
        &["--json", "--trace", "--fdb", "--expect", &expected],
    )));
    assert_eq!(run.result.unwrap(), ExitCode::SUCCESS, "{}", run.stderr);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", run.stdout));
    assert_eq!(doc["frames"], 4);
    assert_eq!(doc["last"], "0.003000000");
    assert_eq!(doc["ports"][1]["name"], "p2");
    assert_eq!(doc["ports"][1]["tx_frames"], 3);
    assert_eq!(doc["table"]["learned"], 3);
    assert_eq!(doc["fdb"].as_array().unwrap().len(), 3);
    assert_eq!(doc["expect"]["same"], true);
    // With --json the trace lines go to stderr, leaving stdout to the document.
    assert_eq!(
        run.stderr.lines().filter(|l| l.starts_with("t=")).count(),
        4
    );

    let run = replay_both(replay_args(&flood_learn_args(&out, &["--json"])));
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(doc.get("fdb").is_none(), "no table rows without --fdb");
    assert!(doc.get("expect").is_none());
}

#[test]
fn out_of_order_times_are_warned_about() {
    let tmp = TempDir::new("order");
    let frames = text::parse(
        "t=2 p1 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ethertype 0x88b5 payload 46\n\
         t=1 p1 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ethertype 0x88b5 payload 46\n\
         t=3 p1 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ethertype 0x88b5 payload 46\n",
    )
    .unwrap();
    pcap_cmd::build(&frames, &tmp.join("in"), OutputFormat::Pcap).unwrap();
    let input = tmp.join("in/p1.pcap");
    let args = [
        "--port".to_string(),
        format!("p1={}", input.display()),
        "--port".to_string(),
        "p2".to_string(),
        "--out".to_string(),
        tmp.join("out").display().to_string(),
    ];
    let run = replay_both(replay_args(&args));
    assert_eq!(run.result.unwrap(), ExitCode::SUCCESS);
    assert_eq!(
        run.stderr,
        format!(
            "tapswitch: warning: {}: 1 frame was stamped earlier than the clock had reached \
             (out of order); handled at the current time, since the clock never goes back\n",
            input.display()
        )
    );
}

#[test]
fn out_holds_exactly_the_last_runs_files() {
    let tmp = TempDir::new("exact");
    let out = tmp.join("out");
    let out_arg = out.display().to_string();
    let scenario = fixtures_dir().join("flood-learn");
    let port = |p: &str| format!("{p}={}", scenario.join(format!("{p}.pcap")).display());
    let three = [
        "--port",
        &port("p1"),
        "--port",
        &port("p2"),
        "--port",
        &port("p3"),
    ];
    let mut args: Vec<&str> = three.to_vec();
    args.extend(["--out", &out_arg]);
    assert_eq!(
        replay_both(replay_args(&args)).result.unwrap(),
        ExitCode::SUCCESS
    );
    let listing = || {
        let mut names: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listing(), [MANIFEST, "p1.pcap", "p2.pcap", "p3.pcap"]);

    // A smaller run: p3's old output goes.
    let run = replay_both(replay_args(&[
        "--port",
        &port("p1"),
        "--port",
        &port("p2"),
        "--out",
        &out_arg,
    ]));
    assert_eq!(run.result.unwrap(), ExitCode::SUCCESS);
    assert_eq!(listing(), [MANIFEST, "p1.pcap", "p2.pcap"]);

    // Someone else's file: refused before anything is written.
    fs::write(out.join("README"), "mine").unwrap();
    let before: Vec<Vec<u8>> = ["p1.pcap", "p2.pcap"]
        .iter()
        .map(|f| fs::read(out.join(f)).unwrap())
        .collect();
    let run = replay_both(replay_args(&args));
    let err = format!("{:#}", run.result.unwrap_err());
    assert!(
        err.contains("holds \"README\", which no earlier replay wrote there"),
        "{err}"
    );
    assert_eq!(listing(), [MANIFEST, "README", "p1.pcap", "p2.pcap"]);
    let after: Vec<Vec<u8>> = ["p1.pcap", "p2.pcap"]
        .iter()
        .map(|f| fs::read(out.join(f)).unwrap())
        .collect();
    assert_eq!(before, after);
}

//! The frame lab's command line as a shell user meets it: exit codes like
//! `diff` (0 same, 1 different, 2 trouble), `-` for stdin, a reader that
//! stops early (`| head`) ending the command quietly, and the small
//! messages a review found wanting.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tapswitch() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tapswitch"));
    cmd.stdin(Stdio::null());
    cmd
}

fn run(args: &[&str]) -> Output {
    tapswitch().args(args).output().expect("running tapswitch")
}

/// Runs with `input` on stdin.
fn run_with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = tapswitch()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running tapswitch");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("tapswitch-labcli-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn join(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const LAB: &str = "\
t=0.000 p1 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ethertype 0x88b5 data 01 len 60
t=0.001 p2 02:00:00:00:00:02 > 02:00:00:00:00:01 ethertype 0x88b5 data 02 len 60
";

/// Builds LAB into `dir/in` and returns the replay's port options.
fn inputs(dir: &Dir) -> Vec<String> {
    fs::write(dir.join("lab.txt"), LAB).unwrap();
    let out = run(&[
        "pcap",
        "build",
        &dir.join("lab.txt"),
        "--out",
        &dir.join("in"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "wrote {} (1 frame)\nwrote {} (1 frame)\n",
            dir.join("in/p1.pcap"),
            dir.join("in/p2.pcap")
        ),
        "one frame, not \"1 frames\""
    );
    ["p1", "p2"]
        .iter()
        .flat_map(|p| {
            [
                "--port".to_string(),
                format!("{p}={}", dir.join(&format!("in/{p}.pcap"))),
            ]
        })
        .collect()
}

fn replay(ports: &[String], rest: &[&str]) -> Output {
    let mut args: Vec<&str> = vec!["replay"];
    args.extend(ports.iter().map(String::as_str));
    args.extend(rest);
    run(&args)
}

#[test]
fn replay_exits_like_diff() {
    let dir = Dir::new("exit");
    let ports = inputs(&dir);
    let golden = dir.join("golden");
    let first = replay(&ports, &["--no-gateway", "--out", &golden]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));

    let same = replay(
        &ports,
        &[
            "--no-gateway",
            "--out",
            &dir.join("o1"),
            "--expect",
            &golden,
        ],
    );
    assert_eq!(same.status.code(), Some(0), "same: {}", text(&same.stderr));

    // Different: a file in the expected directory that this run does not write.
    fs::copy(
        Path::new(&golden).join("p1.pcap"),
        Path::new(&golden).join("extra.pcap"),
    )
    .unwrap();
    let different = replay(
        &ports,
        &[
            "--no-gateway",
            "--out",
            &dir.join("o2"),
            "--expect",
            &golden,
        ],
    );
    assert_eq!(different.status.code(), Some(1), "different");
    let stderr = text(&different.stderr);
    assert!(stderr.starts_with("expect: port extra: "), "{stderr}");
    assert!(!text(&different.stdout).contains("expect:"));

    // Trouble: an unreadable input, an unreadable --expect, bad arguments.
    let missing = run(&[
        "replay",
        "--port",
        "p1=/nonexistent.pcap",
        "--out",
        &dir.join("o3"),
    ]);
    assert_eq!(missing.status.code(), Some(2), "missing input");
    assert!(
        text(&missing.stderr).starts_with("tapswitch: cannot open /nonexistent.pcap"),
        "{}",
        text(&missing.stderr)
    );
    let no_expect = replay(
        &ports,
        &["--out", &dir.join("o4"), "--expect", "/nonexistent-dir"],
    );
    assert_eq!(no_expect.status.code(), Some(2), "missing --expect dir");
    let unknown = run(&[
        "replay",
        "--port",
        "p1",
        "--out",
        &dir.join("o5"),
        "--no-such-option",
    ]);
    assert_eq!(unknown.status.code(), Some(2), "clap's own errors exit 2");
}

#[test]
fn replay_options_say_what_they_want() {
    let dir = Dir::new("opts");
    let out = dir.join("out");
    let ageing = run(&[
        "replay",
        "--port",
        "p1",
        "--out",
        &out,
        "--ageing-time",
        "-1",
    ]);
    assert_eq!(ageing.status.code(), Some(2));
    let stderr = text(&ageing.stderr);
    assert!(
        stderr.contains("\"-1\" is not a number of seconds"),
        "not an unknown argument: {stderr}"
    );
    let serve = run(&["serve", "--ageing-time", "-1"]);
    assert_eq!(serve.status.code(), Some(2));
    let stderr = text(&serve.stderr);
    assert!(
        stderr.contains("invalid value '-1' for '--ageing-time <SECS>'"),
        "serve too: {stderr}"
    );
    let mtu = run(&["replay", "--port", "p1", "--out", &out, "--mtu", "70000"]);
    assert_eq!(mtu.status.code(), Some(2));
    assert!(
        text(&mtu.stderr).contains("70000 is not in 68..=65535"),
        "{}",
        text(&mtu.stderr)
    );

    let twice = run(&["replay", "--port", "p1", "--port", "p1", "--out", &out]);
    assert_eq!(
        text(&twice.stderr),
        "tapswitch: port p1 is given twice: port names must be unique\n",
        "messages start in lower case"
    );
    assert_eq!(twice.status.code(), Some(2));
    let serve_help = text(&run(&["serve", "--help"]).stdout);
    assert!(
        !serve_help.contains("replay"),
        "serve's help speaks of serve only"
    );

    let help = text(&run(&["replay", "--help"]).stdout);
    assert!(
        !help.contains("for replay"),
        "replay's help speaks of replay only: {help}"
    );
    assert!(
        !help.contains("--network"),
        "replay has no --network: {help}"
    );
}

#[test]
fn dash_reads_stdin() {
    let dir = Dir::new("stdin");
    let built = run_with_stdin(
        &["pcap", "build", "-", "--out", &dir.join("in")],
        LAB.as_bytes(),
    );
    assert!(built.status.success(), "{}", text(&built.stderr));
    let capture = fs::read(dir.join("in/p1.pcap")).unwrap();

    let shown = run_with_stdin(&["pcap", "show", "-", "--port", "p1"], &capture);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    assert_eq!(
        text(&shown.stdout),
        LAB.lines().next().unwrap().to_string() + "\n"
    );

    let replayed = run_with_stdin(
        &[
            "replay",
            "--port",
            "p1=-",
            "--port",
            "p2",
            "--no-gateway",
            "--out",
            &dir.join("out"),
        ],
        &capture,
    );
    assert!(replayed.status.success(), "{}", text(&replayed.stderr));
    assert!(
        text(&replayed.stdout).starts_with("replay: 1 frame from t=0.000000"),
        "{}",
        text(&replayed.stdout)
    );
    assert_eq!(
        fs::read(dir.join("out/p2.pcap")).unwrap(),
        capture,
        "p2 sent the flooded frame"
    );

    let two = run(&[
        "replay",
        "--port",
        "p1=-",
        "--port",
        "p2=-",
        "--out",
        &dir.join("out2"),
    ]);
    assert_eq!(two.status.code(), Some(2));
    assert!(text(&two.stderr).contains("ports p1, p2 all read stdin (-): only one port can"));
}

/// Runs `command` with its stdout read up to the first line and then
/// closed (`| head -1`); that line and how the command ended.
fn first_line_then_exit(command: &mut Command) -> (String, Output) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    (first, child.wait_with_output().unwrap())
}

#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    let dir = Dir::new("pipe");
    let generated = run(&[
        "pcap",
        "generate",
        "--frames",
        "200000",
        "--ports",
        "2",
        "--out",
        &dir.join("big"),
    ]);
    assert!(generated.status.success(), "{}", text(&generated.stderr));

    // `pcap show big.pcap | head -1`
    let (first, out) =
        first_line_then_exit(tapswitch().args(["pcap", "show", &dir.join("big/p1.pcap")]));
    assert!(first.starts_with("t="), "{first}");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "", "no panic, no message");

    // `pcap show --json big.pcap | head -1`
    let (first, out) = first_line_then_exit(tapswitch().args([
        "pcap",
        "show",
        "--json",
        &dir.join("big/p1.pcap"),
    ]));
    assert!(first.starts_with('{'), "{first}");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "", "no panic, no message");

    // `replay --trace ... | head -1`: the outputs are still written.
    let (_, out) = first_line_then_exit(
        tapswitch()
            .args([
                "replay",
                "--trace",
                "--no-gateway",
                "--out",
                &dir.join("out"),
            ])
            .args(["--port", &format!("p1={}", dir.join("big/p1.pcap"))])
            .args(["--port", &format!("p2={}", dir.join("big/p2.pcap"))]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    assert!(Path::new(&dir.join("out/p2.pcap")).is_file());

    // A command that prints a line at a time (network ls), its reader gone
    // before it writes: the write fails, and the binary ends quietly.
    let mut child = tapswitch()
        .args(["network", "ls"])
        .env("TAPSWITCH_STATE_DIR", dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stderr), "", "no panic message");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn pcap_build_says_what_is_wrong_and_where() {
    let dir = Dir::new("build");
    fs::write(dir.join("empty.txt"), "# nothing yet\n\n").unwrap();
    let out = run(&[
        "pcap",
        "build",
        &dir.join("empty.txt"),
        "--out",
        &dir.join("o"),
    ]);
    assert!(!out.status.success(), "an empty fixture is not a success");
    assert_eq!(
        text(&out.stderr),
        format!(
            "tapswitch: {} has no frames (only comments and blank lines): nothing to build\n",
            dir.join("empty.txt")
        )
    );
    assert!(!Path::new(&dir.join("o")).exists());

    fs::write(dir.join("late.txt"), "t=5000000000 p1 raw 00\n").unwrap();
    let out = run(&[
        "pcap",
        "build",
        &dir.join("late.txt"),
        "--out",
        &dir.join("o"),
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.starts_with(&format!(
            "tapswitch: {}: line 1: time 5000000000.000000000 is after 2106",
            dir.join("late.txt")
        )),
        "{stderr}"
    );
    assert!(stderr.contains("add --format pcapng"), "{stderr}");
    let out = run(&[
        "pcap",
        "build",
        &dir.join("late.txt"),
        "--out",
        &dir.join("o"),
        "--format",
        "pcapng",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn pcap_show_takes_the_interface_syntax_it_suggests() {
    let dir = Dir::new("show");
    // Two interfaces: pcap build cannot write that, so join two pcapng files'
    // blocks by hand: section header + IDB + EPB of one, IDB + EPB of the other.
    fs::write(
        dir.join("a.txt"),
        "t=1 a 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ethertype 0x88b5 data 0a\n",
    )
    .unwrap();
    fs::write(
        dir.join("b.txt"),
        "t=2 b 02:00:00:00:00:02 > ff:ff:ff:ff:ff:ff ethertype 0x88b5 data 0b\n",
    )
    .unwrap();
    for f in ["a", "b"] {
        let out = run(&[
            "pcap",
            "build",
            &dir.join(&format!("{f}.txt")),
            "--out",
            &dir.join("ng"),
            "--format",
            "pcapng",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let a = fs::read(dir.join("ng/a.pcapng")).unwrap();
    let b = fs::read(dir.join("ng/b.pcapng")).unwrap();
    let shb_len = u32::from_ne_bytes(b[4..8].try_into().unwrap()) as usize;
    // b's interface and packet point at interface 0 of their section; in
    // the joined file they are interface 1.
    let mut rest = b[shb_len..].to_vec();
    let idb_len = u32::from_ne_bytes(rest[4..8].try_into().unwrap()) as usize;
    rest[idb_len + 8..idb_len + 12].copy_from_slice(&1u32.to_ne_bytes());
    let joined = [a.clone(), rest].concat();
    let two = dir.join("two.pcapng");
    fs::write(&two, joined).unwrap();

    let refused = run(&["pcap", "show", &two]);
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("several interfaces (#0 a, #1 b); choose one with FILE#N"),
        "{stderr}"
    );
    let by_index = run(&["pcap", "show", &format!("{two}#1")]);
    assert!(by_index.status.success(), "{}", text(&by_index.stderr));
    assert!(
        text(&by_index.stdout).ends_with("ethertype 0x88b5 data 0b\n"),
        "{}",
        text(&by_index.stdout)
    );
    let by_name = run(&["pcap", "show", &format!("{two}#a"), "--port", "x"]);
    assert_eq!(
        text(&by_name.stdout),
        "t=1.000 x 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ethertype 0x88b5 data 0a\n"
    );
}

#[test]
fn pcap_show_json_is_one_object_per_frame_with_the_text_line_in_it() {
    let dir = Dir::new("showjson");
    inputs(&dir);
    let p2 = dir.join("in/p2.pcap");
    let json = run(&["pcap", "show", "--json", &p2]);
    assert!(json.status.success(), "{}", text(&json.stderr));
    let lines: Vec<String> = text(&json.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 1, "one frame, one line: {lines:?}");
    let frame: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(frame["file"], p2.as_str());
    assert_eq!(frame["port"], "p2");
    assert_eq!(frame["time"], "0.001");
    assert_eq!(frame["time_ns"], 1_000_000);
    assert_eq!(frame["len"], 60);
    assert_eq!(frame["original_len"], 60);
    assert_eq!(
        frame["text"],
        "02:00:00:00:00:02 > 02:00:00:00:00:01 ethertype 0x88b5 data 02 len 60"
    );
    let hex = frame["hex"].as_str().unwrap();
    assert!(
        hex.starts_with("020000000001020000000002" /* dst, src */),
        "{hex}"
    );
    assert_eq!(hex.len(), 120, "60 bytes in hex");
    // The text form says the same thing.
    let plain = run(&["pcap", "show", &p2]);
    assert_eq!(
        text(&plain.stdout),
        format!("t=0.001 p2 {}\n", frame["text"].as_str().unwrap())
    );
}

//! `tapswitch replay` on bad input: every kind gets a one-line error naming
//! the file and the byte offset, a failing exit, and leaves the output
//! directory as it was. Plus `--expect` differences and the 2106 limit of
//! classic pcap.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use ports::capture::{OutputFormat, PcapReader, PcapWriter};
use tapswitch_tests::lab::{TempDir, fixtures_dir, port_args, replay, replay_args, replay_both};
use tools::lab::outputs::MANIFEST;

/// A classic header (little-endian, nanoseconds) with this snap length and link type.
fn header(snaplen: u32, linktype: u32) -> Vec<u8> {
    let mut h = 0xa1b2_3c4du32.to_le_bytes().to_vec();
    h.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    h.extend_from_slice(&snaplen.to_le_bytes());
    h.extend_from_slice(&linktype.to_le_bytes());
    h
}

fn record(secs: u32, len: u32, data: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    for v in [secs, 0, len, len] {
        r.extend_from_slice(&v.to_le_bytes());
    }
    r.extend_from_slice(data);
    r
}

fn frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
    f.resize(60, 0);
    f
}

fn good() -> Vec<u8> {
    let mut b = header(65_535, 1);
    b.extend(record(1, 60, &frame()));
    b.extend(record(2, 60, &frame()));
    b
}

fn pcapng(linktype: DataLink, interfaces: &[&str]) -> Vec<u8> {
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    for name in interfaces {
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype,
            snaplen: 0,
            options: vec![InterfaceDescriptionOption::IfName((*name).into())],
        })
        .unwrap();
    }
    for i in 0..interfaces.len() {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: i as u32,
            timestamp: Duration::from_micros(i as u64),
            original_len: 60,
            data: Cow::Owned(frame()),
            options: vec![],
        })
        .unwrap();
    }
    w.into_inner()
}

/// Every file in `dir` with its bytes (the directory's whole state).
fn snapshot(dir: &Path) -> Option<BTreeMap<String, Vec<u8>>> {
    let entries = fs::read_dir(dir).ok()?;
    Some(
        entries
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect(),
    )
}

#[test]
fn every_kind_of_bad_input_fails_with_its_offset_and_leaves_dir_untouched() {
    let second_record = 24 + 16 + 60;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            good()[..second_record + 10].to_vec(),
            "byte 100: truncated: the file ends 10 bytes into a 16-byte record header",
        ),
        (
            "truncated-frame",
            good()[..second_record + 16 + 7].to_vec(),
            "byte 100: truncated: the file ends 7 bytes into a 60-byte frame",
        ),
        (
            "magic",
            b"this is not a capture file at all".to_vec(),
            "byte 0: bad magic number 0x74686973",
        ),
        ("empty", Vec::new(), "byte 0: the file is empty"),
        (
            "snaplen",
            [header(59, 1), record(1, 60, &frame())].concat(),
            "byte 24: a record of 60 bytes is longer than the file's snap length (59)",
        ),
        (
            "absurd",
            [header(0, 1), record(1, 0x4000_0000, &frame())].concat(),
            "byte 24: a record of 1073741824 bytes is larger than any Ethernet capture",
        ),
        (
            "linktype",
            [header(65_535, 105), record(1, 60, &frame())].concat(),
            "byte 20: link type 105 (802.11), which replay cannot read",
        ),
        (
            "ng-linktype",
            pcapng(DataLink::IEEE802_11_RADIOTAP, &["wlan0"]),
            "interface #0 has link type 127 (802.11 radiotap), which replay cannot read",
        ),
        (
            "ng-two",
            pcapng(DataLink::ETHERNET, &["eth0", "eth1"]),
            "several interfaces (#0 eth0, #1 eth1);",
        ),
    ];
    for (name, bytes, message) in cases {
        let tmp = TempDir::new(name);
        let input = tmp.join(&format!("{name}.pcap"));
        fs::write(&input, &bytes).unwrap();
        let good_input = tmp.join("good.pcap");
        fs::write(&good_input, good()).unwrap();

        // An output directory with the outputs of an earlier, larger run.
        let out = tmp.join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("p1.pcap"), b"old output").unwrap();
        fs::write(out.join("p9.pcap"), b"old output of a port gone since").unwrap();
        fs::write(out.join(MANIFEST), "p1.pcap\np9.pcap\n").unwrap();
        let before = snapshot(&out);
        for port_order in [["p1", "p2"], ["p2", "p1"]] {
            let ports: Vec<String> = port_order
                .iter()
                .map(|p| match *p {
                    "p1" => format!("p1={}", input.display()),
                    _ => format!("p2={}", good_input.display()),
                })
                .collect();
            for dir in [&out, &tmp.join("fresh")] {
                let args = replay_args(&[
                    "--port",
                    &ports[0],
                    "--port",
                    &ports[1],
                    "--port",
                    "p3",
                    "--out",
                    &dir.display().to_string(),
                ]);
                let (result, _) = replay(args);
                let err = match result {
                    Ok(code) => panic!("{name}: replay succeeded ({code:?})"),
                    Err(err) => format!("{err:#}"),
                };
                assert!(!err.contains('\n'), "{name}: not one line: {err}");
                assert!(
                    err.starts_with(&input.display().to_string()),
                    "{name}: names the file: {err}"
                );
                assert!(err.contains(message), "{name}: {err}\n  wanted: {message}");
            }
            assert_eq!(
                snapshot(&out),
                before,
                "{name}: the output directory changed"
            );
            assert!(
                !tmp.join("fresh").exists(),
                "{name}: a directory was left behind"
            );
        }
    }
}

#[test]
fn a_missing_input_is_an_error_too() {
    let tmp = TempDir::new("missing");
    let args = replay_args(&[
        "--port",
        "p1=/nonexistent/capture.pcap",
        "--out",
        &tmp.join("out").display().to_string(),
    ]);
    let err = format!("{:#}", replay(args).0.unwrap_err());
    assert!(err.contains("/nonexistent/capture.pcap"), "{err}");
    assert!(!tmp.join("out").exists());
}

#[test]
fn times_after_2106_need_pcapng_output() {
    let tmp = TempDir::new("y2106");
    let input = tmp.join("late.pcapng");
    let late = (u64::from(u32::MAX) + 100) * 1_000_000_000 + 5;
    let mut w =
        PcapWriter::new(File::create(&input).unwrap(), OutputFormat::PcapNg, "eth0").unwrap();
    w.write_frame(1_000, &frame(), None).unwrap();
    w.write_frame(late, &frame(), None).unwrap();
    drop(w);
    let port = format!("p1={}", input.display());
    let out = tmp.join("out");
    let out_arg = out.display().to_string();

    let (result, _) = replay(replay_args(&[
        "--port", &port, "--port", "p2", "--out", &out_arg,
    ]));
    let err = format!("{:#}", result.unwrap_err());
    assert!(err.contains("--out-format pcapng"), "{err}");
    assert!(err.contains("byte "), "{err}");
    assert!(!out.exists(), "nothing left behind");

    let (result, _) = replay(replay_args(&[
        "--port",
        &port,
        "--port",
        "p2",
        "--out",
        &out_arg,
        "--out-format",
        "pcapng",
    ]));
    assert_eq!(result.unwrap(), ExitCode::SUCCESS);
    let frames = PcapReader::new(BufReader::new(File::open(out.join("p2.pcapng")).unwrap()))
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(
        frames.iter().map(|f| f.timestamp_ns).collect::<Vec<_>>(),
        vec![1_000, late]
    );
}

#[test]
fn expect_reports_every_differing_port_on_stderr_and_exits_1() {
    let scenario = fixtures_dir().join("flood-learn");
    let tmp = TempDir::new("expect");
    let expected = tmp.join("expected");
    fs::create_dir(&expected).unwrap();
    for port in ["p1", "p2", "p3"] {
        fs::copy(
            scenario.join(format!("expected/{port}.pcap")),
            expected.join(format!("{port}.pcap")),
        )
        .unwrap();
    }
    // Change the second frame of p2: its payload's first byte (frame offset 14).
    let p2 = expected.join("p2.pcap");
    let mut bytes = fs::read(&p2).unwrap();
    let second = 24 + (16 + 60) + 16;
    bytes[second + 14] = 0x99;
    fs::write(&p2, bytes).unwrap();
    // And the first frame of p1, in its destination address.
    let p1 = expected.join("p1.pcap");
    let mut bytes = fs::read(&p1).unwrap();
    bytes[24 + 16 + 5] ^= 0x40;
    fs::write(&p1, bytes).unwrap();

    let args = |out: &str| {
        let mut args = port_args(&scenario, &["p1", "p2", "p3"]);
        args.extend(["--no-gateway", "--out", out, "--expect"].map(String::from));
        args.push(expected.display().to_string());
        replay_args(&args)
    };
    let run = replay_both(args(&tmp.join("out").display().to_string()));
    assert_eq!(run.result.unwrap(), ExitCode::FAILURE);
    assert!(
        !run.stdout.contains("expect:"),
        "differences are not on stdout: {}",
        run.stdout
    );
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("expect:"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "one line per differing port: {}",
        run.stderr
    );
    assert!(
        lines[0]
            .starts_with("expect: port p1 frame 1 (t=0.001000000): eth.dst (bytes 0-5) differs"),
        "{}",
        run.stderr
    );
    assert_eq!(
        lines[1],
        "expect: port p2 frame 2 (t=0.002000000): bytes 14-14 of payload differ: expected 99, got 03"
    );
    assert!(run.stderr.contains("  expected: t=0.002 p2 02:00:00:00:00:01 > 02:00:00:00:00:02 ethertype 0x88b5 data 99 len 60"), "{}", run.stderr);

    // Both ways: an output with no expected file, and an expected file no
    // port of this run wrote, are differences too.
    fs::remove_file(&p2).unwrap();
    fs::copy(
        scenario.join("expected/p3.pcap"),
        expected.join("p4.pcapng"),
    )
    .unwrap();
    let run = replay_both(args(&tmp.join("out2").display().to_string()));
    assert_eq!(run.result.unwrap(), ExitCode::FAILURE);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("expect:"))
        .collect();
    assert_eq!(lines.len(), 3, "{}", run.stderr);
    assert!(
        lines[1].starts_with("expect: port p2: this run wrote "),
        "{}",
        run.stderr
    );
    assert!(lines[1].contains("but there is no "), "{}", run.stderr);
    assert!(lines[2].starts_with("expect: port p4: "), "{}", run.stderr);
    assert!(
        lines[2].ends_with("p4.pcapng is expected, but this run has no port p4"),
        "{}",
        run.stderr
    );

    // The same outputs as expected: exit 0, and the stdout line says so.
    for port in ["p1", "p2", "p3"] {
        fs::copy(
            scenario.join(format!("expected/{port}.pcap")),
            expected.join(format!("{port}.pcap")),
        )
        .unwrap();
    }
    fs::remove_file(expected.join("p4.pcapng")).unwrap();
    let run = replay_both(args(&tmp.join("out3").display().to_string()));
    assert_eq!(run.result.unwrap(), ExitCode::SUCCESS, "{}", run.stderr);
    assert!(
        run.stdout.ends_with(&format!(
            "expect: all 3 outputs match {}\n",
            expected.display()
        )),
        "{}",
        run.stdout
    );
    assert_eq!(run.stderr, "");

    // --out and --expect the same directory would overwrite what is compared.
    let (result, _) = replay(args(&expected.display().to_string()));
    assert!(format!("{:#}", result.unwrap_err()).contains("the same directory"));
}

#[test]
fn pcapng_interfaces_can_feed_different_ports() {
    let tmp = TempDir::new("ifaces");
    let input = tmp.join("two.pcapng");
    fs::write(&input, pcapng(DataLink::ETHERNET, &["eth0", "eth1"])).unwrap();
    let out = tmp.join("out");
    let (result, stdout) = replay(replay_args(&[
        "--port",
        &format!("a={}#eth0", input.display()),
        "--port",
        &format!("b={}#1", input.display()),
        "--no-gateway",
        "--out",
        &out.display().to_string(),
    ]));
    assert_eq!(result.unwrap(), ExitCode::SUCCESS, "{stdout}");
    let rx: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("a ") || l.starts_with("b "))
        .collect();
    assert_eq!(rx.len(), 2, "{stdout}");
    for line in rx {
        let counts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            &counts[1..3],
            ["1", "1"],
            "each port received one and sent one: {stdout}"
        );
    }
}

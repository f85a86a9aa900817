//! The pcap and pcapng reader and writer against an independent
//! implementation (the pcap-file crate) and, where installed, tcpdump and
//! tshark; and live capture files read back.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};
use pcap_file::{DataLink, Endianness, TsResolution};
use ports::capture::{
    CaptureDir, Direction, InterfaceChoice, OutputFormat, OwnedFrame, PcapReader, PcapWriter,
};
use tapswitch_tests::lab::{TempDir, have_program};

/// Frames that exercise the edges: a runt, a minimum frame, a 64 KiB GSO-sized
/// frame, odd lengths (pcapng pads to 4 bytes).
fn frames() -> Vec<(u64, Vec<u8>)> {
    let frame = |seed: u8, len: usize| {
        (0..len)
            .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
            .collect()
    };
    vec![
        (1_700_000_000_123_456_789, frame(1, 60)),
        (1_700_000_000_123_456_790, frame(2, 13)),
        (1_700_000_001_000_000_000, frame(3, 65_535 + 18)),
        (1_700_000_002_999_999_999, frame(4, 61)),
    ]
}

fn ours(path: &Path) -> Vec<OwnedFrame> {
    PcapReader::new(BufReader::new(File::open(path).unwrap()))
        .unwrap()
        .read_all()
        .unwrap()
}

fn write_ours(path: &Path, format: OutputFormat, frames: &[(u64, Vec<u8>)]) {
    let mut w = PcapWriter::new(File::create(path).unwrap(), format, "p1").unwrap();
    for (ts, data) in frames {
        w.write_frame(*ts, data, Some(Direction::Outbound)).unwrap();
    }
}

#[test]
fn our_classic_pcap_reads_the_same_in_pcap_file() {
    let tmp = TempDir::new("classic-out");
    let path = tmp.join("p1.pcap");
    write_ours(&path, OutputFormat::Pcap, &frames());
    let mut reader = pcap_file::pcap::PcapReader::new(File::open(&path).unwrap()).unwrap();
    let header = reader.header();
    assert_eq!(header.ts_resolution, TsResolution::NanoSecond);
    assert_eq!(header.snaplen, 262_144);
    assert_eq!(header.datalink, DataLink::ETHERNET);
    let mut theirs = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap();
        theirs.push((packet.timestamp.as_nanos() as u64, packet.data.to_vec()));
    }
    assert_eq!(theirs, frames());
}

#[test]
fn pcap_file_classic_in_any_resolution_and_byte_order_reads_in_ours() {
    let tmp = TempDir::new("classic-in");
    for resolution in [TsResolution::MicroSecond, TsResolution::NanoSecond] {
        for endianness in [Endianness::Big, Endianness::Little] {
            let header = PcapHeader {
                version_major: 2,
                version_minor: 4,
                ts_correction: 0,
                ts_accuracy: 0,
                snaplen: 262_144,
                datalink: DataLink::ETHERNET,
                ts_resolution: resolution,
                endianness,
            };
            let path = tmp.join("in.pcap");
            let mut w =
                pcap_file::pcap::PcapWriter::with_header(File::create(&path).unwrap(), header)
                    .unwrap();
            for (ts, data) in frames() {
                w.write_packet(&PcapPacket::new(
                    Duration::from_nanos(ts),
                    data.len() as u32,
                    &data,
                ))
                .unwrap();
            }
            drop(w);
            let back = ours(&path);
            let expected: Vec<(u64, Vec<u8>)> = frames()
                .into_iter()
                .map(|(ts, data)| match resolution {
                    TsResolution::MicroSecond => (ts / 1_000 * 1_000, data),
                    TsResolution::NanoSecond => (ts, data),
                })
                .collect();
            let back: Vec<(u64, Vec<u8>)> =
                back.into_iter().map(|f| (f.timestamp_ns, f.data)).collect();
            assert_eq!(back, expected, "{resolution:?} {endianness:?}");
        }
    }
}

#[test]
fn our_pcapng_reads_the_same_in_pcap_file_with_directions() {
    let tmp = TempDir::new("ng-out");
    let path = tmp.join("p1.pcapng");
    write_ours(&path, OutputFormat::PcapNg, &frames());
    let mut reader = PcapNgReader::new(File::open(&path).unwrap()).unwrap();
    let mut theirs = Vec::new();
    while let Some(block) = reader.next_block() {
        match block.unwrap() {
            Block::InterfaceDescription(idb) => {
                assert_eq!(idb.linktype, DataLink::ETHERNET);
                assert!(
                    idb.options
                        .contains(&InterfaceDescriptionOption::IfTsResol(9))
                );
                assert!(
                    idb.options
                        .contains(&InterfaceDescriptionOption::IfName("p1".into()))
                );
            }
            Block::EnhancedPacket(epb) => {
                assert!(
                    epb.options.contains(&EnhancedPacketOption::Flags(2)),
                    "outbound"
                );
                theirs.push((epb.timestamp.as_nanos() as u64, epb.data.to_vec()));
            }
            _ => {}
        }
    }
    assert_eq!(theirs, frames());
}

#[test]
fn pcap_file_pcapng_with_two_interfaces_reads_per_interface_in_ours() {
    let tmp = TempDir::new("ng-in");
    let path = tmp.join("two.pcapng");
    let mut w =
        PcapNgWriter::with_endianness(File::create(&path).unwrap(), Endianness::Big).unwrap();
    for name in ["eth0", "eth1"] {
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![
                InterfaceDescriptionOption::IfName(name.into()),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        })
        .unwrap();
    }
    for (i, (ts, data)) in frames().into_iter().enumerate() {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: (i % 2) as u32,
            timestamp: Duration::from_nanos(ts),
            original_len: data.len() as u32,
            data: Cow::Owned(data),
            options: vec![],
        })
        .unwrap();
    }
    drop(w);
    let read = |choice: Option<InterfaceChoice>| {
        PcapReader::with_interface(BufReader::new(File::open(&path).unwrap()), choice)
            .and_then(|mut r| r.read_all())
    };
    let err = read(None).unwrap_err();
    assert!(err.to_string().contains("several interfaces"), "{err}");
    let eth1 = read(Some(InterfaceChoice::Name("eth1".into()))).unwrap();
    let want: Vec<(u64, Vec<u8>)> = frames().into_iter().skip(1).step_by(2).collect();
    let got: Vec<(u64, Vec<u8>)> = eth1.into_iter().map(|f| (f.timestamp_ns, f.data)).collect();
    assert_eq!(got, want);
    assert_eq!(read(Some(InterfaceChoice::Index(0))).unwrap().len(), 2);
}

/// tcpdump and tshark open what we write (skipped where neither is
/// installed; CI installs both).
#[test]
fn tcpdump_and_tshark_open_our_files() {
    let tmp = TempDir::new("tools");
    let frames = frames();
    for (name, format) in [
        ("p1.pcap", OutputFormat::Pcap),
        ("p1.pcapng", OutputFormat::PcapNg),
    ] {
        let path = tmp.join(name);
        write_ours(&path, format, &frames);
        if let Some(directions) = check_with_tools(&path, frames.len()) {
            let want = match format {
                OutputFormat::Pcap => "",
                OutputFormat::PcapNg => "0x00000002",
            };
            assert!(
                directions.iter().all(|d| d == want),
                "{name}: {directions:?}"
            );
        }
    }
}

/// Runs tcpdump and tshark on `path` where installed: each must read
/// `count` frames without error. Returns tshark's direction column
/// (`frame.packet_flags_direction`: "0x00000001" inbound, "0x00000002"
/// outbound, "" unknown), if tshark ran.
fn check_with_tools(path: &Path, count: usize) -> Option<Vec<String>> {
    if have_program("tcpdump") {
        let stdout = run_tool("tcpdump", &["-nn", "-r"], path);
        let frames = stdout
            .lines()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .count();
        assert_eq!(frames, count, "tcpdump -r {}", path.display());
    } else {
        eprintln!(
            "tcpdump not installed: {} not checked with it",
            path.display()
        );
    }
    if !have_program("tshark") {
        eprintln!(
            "tshark not installed: {} not checked with it",
            path.display()
        );
        return None;
    }
    let fields = "-T fields -e frame.len -e frame.packet_flags_direction -r";
    let fields: Vec<&str> = fields.split(' ').collect();
    let stdout = run_tool("tshark", &fields, path);
    let directions: Vec<String> = stdout
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap_or("").to_string())
        .collect();
    assert_eq!(
        directions.len(),
        count,
        "tshark -r {}: {stdout}",
        path.display()
    );
    Some(directions)
}

/// Runs `program ARGS PATH` and returns what it printed, after checking
/// that it succeeded.
fn run_tool(program: &str, args: &[&str], path: &Path) -> String {
    let out = Command::new(program).args(args).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{program} -r {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What serve's workers will do: several threads record into the same
/// port's capture at once, a port is added while running, one port stops
/// and starts. Every file reads back complete, in our reader and the tools.
#[test]
fn live_capture_files_read_back() {
    let tmp = TempDir::new("capture");
    let dir = CaptureDir::open(&tmp.join("cap")).unwrap();
    let p1 = dir.add_port("p1", true).unwrap();
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let p1 = Arc::clone(&p1);
            std::thread::spawn(move || {
                for i in 0..500u32 {
                    let mut frame = vec![t; 60];
                    frame[14..18].copy_from_slice(&i.to_be_bytes());
                    let direction = if i % 2 == 0 {
                        Direction::Inbound
                    } else {
                        Direction::Outbound
                    };
                    p1.record(direction, 1_700_000_000_000_000_000 + u64::from(i), &frame);
                }
            })
        })
        .collect();
    let p2 = dir.add_port("p2", true).unwrap();
    p2.record(Direction::Inbound, 1, &[9; 1514]);
    p2.stop();
    p2.record(Direction::Inbound, 2, &[9; 60]);
    p2.start();
    p2.record(Direction::Outbound, 3, &[9; 65_553]);
    for t in threads {
        t.join().unwrap();
    }
    dir.flush();

    let p1_frames = ours(p1.path());
    assert_eq!(p1_frames.len(), 2000);
    for t in 0..4u8 {
        let seq: Vec<u32> = p1_frames
            .iter()
            .filter(|f| f.data[0] == t)
            .map(|f| u32::from_be_bytes(f.data[14..18].try_into().unwrap()))
            .collect();
        assert_eq!(
            seq,
            (0..500).collect::<Vec<_>>(),
            "thread {t}'s frames in order"
        );
    }
    let p2_frames = ours(p2.path());
    assert_eq!(
        p2_frames.iter().map(|f| f.timestamp_ns).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(p2_frames[1].data.len(), 65_553);
    if let Some(directions) = check_with_tools(p1.path(), 2000) {
        let inbound = directions.iter().filter(|d| *d == "0x00000001").count();
        let outbound = directions.iter().filter(|d| *d == "0x00000002").count();
        assert_eq!((inbound, outbound), (1000, 1000));
    }
    if let Some(directions) = check_with_tools(p2.path(), 2) {
        assert_eq!(directions, ["0x00000001", "0x00000002"]);
    }
    assert_eq!(fs::read_dir(dir.dir()).unwrap().count(), 2);
}

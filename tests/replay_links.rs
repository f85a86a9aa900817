//! Captures that are not Ethernet replay with an Ethernet header given to
//! each packet (`tcprewrite --dlt=enet`): Linux cooked v1 and v2, raw IP
//! (101, 228, 229, DLT_RAW 12) and BSD loopback (NULL, LOOP). Each fixture
//! is built here, byte by byte, since no outside capture is committed.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::BufReader;
use std::process::ExitCode;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use ports::capture::link::{SYNTHETIC_DESTINATION, SYNTHETIC_SOURCE};
use ports::capture::{OwnedFrame, PcapReader};
use tapswitch_tests::lab::{TempDir, replay_args, replay_both};
use tools::pcap_cmd;

/// A little-endian classic pcap (microseconds) of `packets`, one a second.
fn classic(linktype: u32, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut b = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    b.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&65_535u32.to_le_bytes());
    b.extend_from_slice(&linktype.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        for v in [i as u32 + 1, 0, p.len() as u32, p.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(p);
    }
    b
}

/// An IPv4 UDP packet from 10.0.0.1 to `dst`.
fn ipv4(dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1];
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 8, 0, 0]);
    p
}

/// An IPv6 packet (no next header) to ff02::1.
fn ipv6_all_nodes() -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, 0, 59, 255];
    p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p
}

const HOST: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn sll_v1(packet_type: u16, protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = packet_type.to_be_bytes().to_vec();
    p.extend_from_slice(&[0, 1, 0, 6]);
    p.extend_from_slice(&HOST);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&protocol.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn sll_v2(packet_type: u8, protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = protocol.to_be_bytes().to_vec();
    p.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, packet_type, 6]);
    p.extend_from_slice(&HOST);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

fn null(family: u32, payload: &[u8]) -> Vec<u8> {
    [&family.to_le_bytes()[..], payload].concat()
}

fn loop_(family: u32, payload: &[u8]) -> Vec<u8> {
    [&family.to_be_bytes()[..], payload].concat()
}

fn read(path: &std::path::Path) -> Vec<OwnedFrame> {
    PcapReader::new(BufReader::new(File::open(path).unwrap()))
        .unwrap()
        .read_all()
        .unwrap()
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    [&dst[..], &src, &ethertype.to_be_bytes(), payload].concat()
}

struct Case {
    name: &'static str,
    file: Vec<u8>,
    /// The frames the second port must send, in order.
    frames: Vec<Vec<u8>>,
    added: u64,
    skipped: u64,
}

fn cases() -> Vec<Case> {
    let unicast = ipv4([10, 0, 0, 2]);
    let broadcast = ipv4([255, 255, 255, 255]);
    let group = ipv4([224, 0, 0, 251]);
    let v6 = ipv6_all_nodes();
    let arp = vec![0u8; 28];
    let mdns_mac = [0x01, 0x00, 0x5e, 0, 0, 0xfb];
    let v6_mac = [0x33, 0x33, 0, 0, 0, 1];
    let (d, s) = (SYNTHETIC_DESTINATION, SYNTHETIC_SOURCE);
    vec![
        Case {
            name: "sll",
            file: classic(
                113,
                &[
                    sll_v1(0, 0x0800, &unicast),
                    sll_v1(1, 0x0806, &arp),
                    sll_v1(0, 0x000c, &[1, 2, 3]), // CAN: left out
                    sll_v1(2, 0x86dd, &v6),
                ],
            ),
            frames: vec![
                eth(d, HOST, 0x0800, &unicast),
                eth([0xff; 6], HOST, 0x0806, &arp),
                eth(v6_mac, HOST, 0x86dd, &v6),
            ],
            added: 3,
            skipped: 1,
        },
        Case {
            name: "sll2",
            file: classic(
                276,
                &[sll_v2(4, 0x0800, &group), sll_v2(1, 0x0800, &broadcast)],
            ),
            frames: vec![
                eth(mdns_mac, HOST, 0x0800, &group),
                eth([0xff; 6], HOST, 0x0800, &broadcast),
            ],
            added: 2,
            skipped: 0,
        },
        Case {
            name: "raw",
            file: classic(101, &[unicast.clone(), v6.clone(), vec![0x50, 1, 2]]),
            frames: vec![eth(d, s, 0x0800, &unicast), eth(v6_mac, s, 0x86dd, &v6)],
            added: 2,
            skipped: 1,
        },
        Case {
            name: "dlt-raw",
            file: classic(12, std::slice::from_ref(&broadcast)),
            frames: vec![eth([0xff; 6], s, 0x0800, &broadcast)],
            added: 1,
            skipped: 0,
        },
        Case {
            name: "ipv4",
            file: classic(228, std::slice::from_ref(&group)),
            frames: vec![eth(mdns_mac, s, 0x0800, &group)],
            added: 1,
            skipped: 0,
        },
        Case {
            name: "ipv6",
            file: classic(229, std::slice::from_ref(&v6)),
            frames: vec![eth(v6_mac, s, 0x86dd, &v6)],
            added: 1,
            skipped: 0,
        },
        Case {
            name: "null",
            file: classic(
                0,
                &[
                    null(2, &unicast),
                    null(30, &v6),
                    null(2u32.swap_bytes(), &unicast),
                ],
            ),
            frames: vec![
                eth(d, s, 0x0800, &unicast),
                eth(v6_mac, s, 0x86dd, &v6),
                eth(d, s, 0x0800, &unicast),
            ],
            added: 3,
            skipped: 0,
        },
        Case {
            name: "loop",
            file: classic(
                108,
                &[loop_(2, &unicast), loop_(24, &v6), loop_(7, &unicast)],
            ),
            frames: vec![eth(d, s, 0x0800, &unicast), eth(v6_mac, s, 0x86dd, &v6)],
            added: 2,
            skipped: 1,
        },
    ]
}

#[test]
fn every_link_type_replays_with_an_ethernet_header() {
    for case in cases() {
        let tmp = TempDir::new(case.name);
        let input = tmp.join("in.pcap");
        fs::write(&input, &case.file).unwrap();
        let out = tmp.join("out");
        let run = replay_both(replay_args(&[
            "--port".to_string(),
            format!("p1={}", input.display()),
            "--port".to_string(),
            "p2".to_string(),
            "--no-gateway".to_string(),
            "--out".to_string(),
            out.display().to_string(),
        ]));
        let code = run
            .result
            .unwrap_or_else(|e| panic!("{}: {e:#}", case.name));
        assert_eq!(code, ExitCode::SUCCESS, "{}", case.name);
        let sent: Vec<Vec<u8>> = read(&out.join("p2.pcap"))
            .into_iter()
            .map(|f| f.data)
            .collect();
        assert_eq!(sent, case.frames, "{}", case.name);
        let said = format!(
            "replay: {} of non-Ethernet captures given an Ethernet header\n",
            if case.added == 1 {
                "1 frame".to_string()
            } else {
                format!("{} frames", case.added)
            }
        );
        assert!(run.stdout.contains(&said), "{}: {}", case.name, run.stdout);
        assert_eq!(
            run.stdout.contains("left out (not IP, or too short)"),
            case.skipped > 0,
            "{}: {}",
            case.name,
            run.stdout
        );
    }
}

#[test]
fn pcapng_cooked_interfaces_and_show() {
    let tmp = TempDir::new("ng-sll");
    let unicast = ipv4([10, 0, 0, 2]);
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::LINUX_SLL2,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    w.write_pcapng_block(EnhancedPacketBlock {
        interface_id: 0,
        timestamp: Duration::from_secs(1),
        original_len: 20 + 28,
        data: Cow::Owned(sll_v2(0, 0x0800, &unicast)),
        options: vec![],
    })
    .unwrap();
    let input = tmp.join("any.pcapng");
    fs::write(&input, w.into_inner()).unwrap();
    let frames = read(&input);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        frames[0].data,
        eth(SYNTHETIC_DESTINATION, HOST, 0x0800, &unicast)
    );
    // Shown as the Ethernet frame it replays as (the IPv4 checksum here is
    // zero, so as bytes after the EtherType).
    let shown = pcap_cmd::show(&input, "any").unwrap();
    assert!(
        shown.ends_with(
            " any 52:54:00:12:34:56 > 02:54:53:00:00:02 ethertype 0x0800 \
             data 4500001c00004000401100000a0000010a000002138800350008 len 42\n"
        ),
        "{shown}"
    );
}

#[test]
fn broken_captures_of_other_link_types_stay_one_line_errors() {
    let tmp = TempDir::new("broken-sll");
    let mut file = classic(113, &[sll_v1(0, 0x0800, &ipv4([10, 0, 0, 2]))]);
    file.truncate(file.len() - 5);
    let input = tmp.join("cut.pcap");
    fs::write(&input, file).unwrap();
    let run = replay_both(replay_args(&[
        "--port".to_string(),
        format!("p1={}", input.display()),
        "--out".to_string(),
        tmp.join("out").display().to_string(),
    ]));
    let err = format!("{:#}", run.result.unwrap_err());
    assert!(!err.contains('\n'), "{err}");
    assert!(
        err.starts_with(&format!("{}: byte 24: truncated", input.display())),
        "{err}"
    );
}

//! `replay --expect DIR`: compare the outputs with the files in `DIR` both
//! ways, as `diff -r` would: each port's output with `DIR/NAME.pcap` (or
//! `.pcapng`) frame by frame, and every capture file in `DIR` with a port of
//! this run, so that an output missing from `DIR` and a file in `DIR` that
//! this run did not produce are both differences. Each difference says where
//! in words a person can act on: the port, the frame number, its time, and
//! which header field (or which bytes) differ, with both values.

use std::fmt;
use std::fs::{self, File};
use std::io::BufReader;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ports::capture::PcapReader;
use ports::wire::{self, ethernet, ipv4, ipv6, vlan};
use serde::Serialize;

use super::notation::{hex, seconds_ns};
use super::text;

/// The extensions of capture files in an expected directory.
const CAPTURE_EXTENSIONS: [&str; 2] = ["pcap", "pcapng"];

/// The first difference between an output and its expected file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub port: String,
    /// 1-based frame number, if the difference is in a frame.
    pub frame: Option<u64>,
    /// The expected frame's time (or the actual one's, for an extra frame).
    pub time_ns: Option<u64>,
    pub what: String,
    /// The two frames as text lines (`tapswitch pcap show`), where there are two.
    pub frames: Option<(String, String)>,
}

/// One line: the port, where, and what differs.
impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}", self.port)?;
        if let Some(n) = self.frame {
            write!(f, " frame {n}")?;
        }
        if let Some(t) = self.time_ns {
            write!(f, " (t={})", seconds_ns(t))?;
        }
        write!(f, ": {}", self.what)
    }
}

impl Difference {
    /// The two frames as indented text lines, when there are two.
    pub fn frame_lines(&self) -> Option<String> {
        let (expected, actual) = self.frames.as_ref()?;
        Some(format!("  expected: {expected}\n  got:      {actual}"))
    }

    fn whole_file(port: &str, what: String) -> Difference {
        Difference {
            port: port.to_string(),
            frame: None,
            time_ns: None,
            what,
            frames: None,
        }
    }
}

/// Compares every port's output with its expected file, then looks for
/// capture files in `expect_dir` that no port of this run wrote. Returns
/// every difference (at most one per port, the first), ports in their order
/// and then the unexpected files by name; empty if all match.
pub fn compare_all(ports: &[(&str, &Path)], expect_dir: &Path) -> Result<Vec<Difference>> {
    let listing = fs::read_dir(expect_dir)
        .with_context(|| format!("cannot read --expect {}", expect_dir.display()))?;
    let mut differences = Vec::new();
    for (name, output) in ports {
        let Some(expected) = expected_file(expect_dir, name) else {
            differences.push(Difference::whole_file(
                name,
                format!(
                    "this run wrote {}, but there is no {} (or .pcapng)",
                    output.display(),
                    expect_dir.join(format!("{name}.pcap")).display()
                ),
            ));
            continue;
        };
        if let Some(difference) = compare_files(name, &expected, output)? {
            differences.push(difference);
        }
    }
    let mut extra = Vec::new();
    for entry in listing {
        let entry =
            entry.with_context(|| format!("cannot read --expect {}", expect_dir.display()))?;
        let path = entry.path();
        let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
            continue;
        };
        let is_capture = CAPTURE_EXTENSIONS.iter().any(|e| ext == *e);
        if is_capture && !ports.iter().any(|(name, _)| stem == *name) {
            extra.push((stem.to_string_lossy().into_owned(), path));
        }
    }
    extra.sort();
    for (stem, path) in extra {
        differences.push(Difference::whole_file(
            &stem,
            format!(
                "{} is expected, but this run has no port {stem}",
                path.display()
            ),
        ));
    }
    Ok(differences)
}

fn expected_file(dir: &Path, name: &str) -> Option<PathBuf> {
    CAPTURE_EXTENSIONS
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|path| path.is_file())
}

fn open(path: &Path) -> Result<PcapReader<BufReader<File>>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    PcapReader::new(BufReader::new(file)).with_context(|| path.display().to_string())
}

/// Compares two capture files frame by frame (the file formats may differ).
pub fn compare_files(port: &str, expected: &Path, actual: &Path) -> Result<Option<Difference>> {
    let mut want = open(expected)?;
    let mut got = open(actual)?;
    let mut n = 0u64;
    loop {
        n += 1;
        let w = want
            .next_frame()
            .with_context(|| expected.display().to_string())?;
        let g = got
            .next_frame()
            .with_context(|| actual.display().to_string())?;
        let lines = match (&w, &g) {
            (Some(w), Some(g)) => Some((
                text::show(w.timestamp_ns, port, w.data),
                text::show(g.timestamp_ns, port, g.data),
            )),
            _ => None,
        };
        let difference = |time_ns: u64, what: String| {
            Some(Difference {
                port: port.to_string(),
                frame: Some(n),
                time_ns: Some(time_ns),
                what,
                frames: lines.clone(),
            })
        };
        let found = match (w, g) {
            (None, None) => return Ok(None),
            (Some(w), None) => difference(
                w.timestamp_ns,
                format!(
                    "expected a frame here, but the output ends after {} frames",
                    n - 1
                ),
            ),
            (None, Some(g)) => difference(
                g.timestamp_ns,
                format!(
                    "an extra frame of {} bytes; the expected file ends after {} frames",
                    g.data.len(),
                    n - 1
                ),
            ),
            (Some(w), Some(g)) => match frame_difference(w.data, g.data) {
                Some(what) => difference(w.timestamp_ns, what),
                None if w.timestamp_ns != g.timestamp_ns => difference(
                    w.timestamp_ns,
                    format!(
                        "time differs: expected {}, got {}",
                        seconds_ns(w.timestamp_ns),
                        seconds_ns(g.timestamp_ns)
                    ),
                ),
                None => None,
            },
        };
        if found.is_some() {
            return Ok(found);
        }
    }
}

/// Where two frames first differ, named by header field when there is one.
pub fn frame_difference(expected: &[u8], actual: &[u8]) -> Option<String> {
    let common = expected.len().min(actual.len());
    let Some(first) = (0..common).find(|&i| expected[i] != actual[i]) else {
        if expected.len() == actual.len() {
            return None;
        }
        return Some(format!(
            "length differs: expected {} bytes, got {} (the first {common} are the same)",
            expected.len(),
            actual.len()
        ));
    };
    if let Some(field) = fields(expected)
        .into_iter()
        .find(|f| f.range.contains(&first) && f.range.end <= actual.len())
        && field.kind != Kind::Bytes
    {
        return Some(format!(
            "{} (bytes {}-{}) differs: expected {}, got {}",
            field.name,
            field.range.start,
            field.range.end - 1,
            field.kind.show(&expected[field.range.clone()]),
            field.kind.show(&actual[field.range.clone()])
        ));
    }
    // Payload: show the differing bytes, up to 16 from the first.
    let window = first..common.min(first + 16);
    let last = window
        .clone()
        .rev()
        .find(|&i| expected[i] != actual[i])
        .unwrap_or(first);
    let range = first..last + 1;
    let place = fields(expected)
        .into_iter()
        .find(|f| f.range.contains(&first))
        .map_or_else(String::new, |f| format!(" of {}", f.name));
    Some(format!(
        "bytes {}-{}{place} differ: expected {}, got {}",
        range.start,
        range.end - 1,
        hex(&expected[range.clone()]),
        hex(&actual[range.clone()])
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mac,
    Ipv4,
    Ipv6,
    Dec,
    Hex,
    Bytes,
}

impl Kind {
    fn show(self, b: &[u8]) -> String {
        match self {
            Kind::Mac => b
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
            Kind::Ipv4 => b
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("."),
            Kind::Ipv6 => <[u8; 16]>::try_from(b)
                .map(|a| std::net::Ipv6Addr::from(a).to_string())
                .unwrap_or_else(|_| hex(b)),
            Kind::Dec => b
                .iter()
                .fold(0u64, |acc, x| acc << 8 | u64::from(*x))
                .to_string(),
            Kind::Hex => format!("0x{}", hex(b)),
            Kind::Bytes => hex(b),
        }
    }
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    range: Range<usize>,
    kind: Kind,
}

/// A header field by name, length in bytes and how to show its value.
type FieldSpec = (&'static str, usize, Kind);

const ARP_FIELDS: &[FieldSpec] = &[
    ("arp.htype", 2, Kind::Dec),
    ("arp.ptype", 2, Kind::Hex),
    ("arp.hlen", 1, Kind::Dec),
    ("arp.plen", 1, Kind::Dec),
    ("arp.op", 2, Kind::Dec),
    ("arp.sha", 6, Kind::Mac),
    ("arp.spa", 4, Kind::Ipv4),
    ("arp.tha", 6, Kind::Mac),
    ("arp.tpa", 4, Kind::Ipv4),
];

const IPV4_FIELDS: &[FieldSpec] = &[
    ("ipv4.version_ihl", 1, Kind::Hex),
    ("ipv4.tos", 1, Kind::Hex),
    ("ipv4.total_len", 2, Kind::Dec),
    ("ipv4.id", 2, Kind::Dec),
    ("ipv4.flags_frag", 2, Kind::Hex),
    ("ipv4.ttl", 1, Kind::Dec),
    ("ipv4.proto", 1, Kind::Dec),
    ("ipv4.checksum", 2, Kind::Hex),
    ("ipv4.src", 4, Kind::Ipv4),
    ("ipv4.dst", 4, Kind::Ipv4),
];

const ICMP_FIELDS: &[FieldSpec] = &[
    ("icmp.type", 1, Kind::Dec),
    ("icmp.code", 1, Kind::Dec),
    ("icmp.checksum", 2, Kind::Hex),
    ("icmp.id", 2, Kind::Dec),
    ("icmp.seq", 2, Kind::Dec),
];

const TCP_FIELDS: &[FieldSpec] = &[
    ("tcp.sport", 2, Kind::Dec),
    ("tcp.dport", 2, Kind::Dec),
    ("tcp.seq", 4, Kind::Dec),
    ("tcp.ack", 4, Kind::Dec),
    ("tcp.offset_flags", 2, Kind::Hex),
    ("tcp.window", 2, Kind::Dec),
    ("tcp.checksum", 2, Kind::Hex),
];

const UDP_FIELDS: &[FieldSpec] = &[
    ("udp.sport", 2, Kind::Dec),
    ("udp.dport", 2, Kind::Dec),
    ("udp.len", 2, Kind::Dec),
    ("udp.checksum", 2, Kind::Hex),
];

const IPV6_FIELDS: &[FieldSpec] = &[
    ("ipv6.version_class_flow", 4, Kind::Hex),
    ("ipv6.payload_len", 2, Kind::Dec),
    ("ipv6.next_header", 1, Kind::Dec),
    ("ipv6.hop_limit", 1, Kind::Dec),
    ("ipv6.src", 16, Kind::Ipv6),
    ("ipv6.dst", 16, Kind::Ipv6),
];

/// Hop-by-hop options, routing and destination options headers: their
/// first two bytes (the data, of the length they state, follows).
const EXTENSION_FIELDS: &[FieldSpec] = &[
    ("ipv6.ext.next_header", 1, Kind::Dec),
    ("ipv6.ext.len", 1, Kind::Dec),
];

const FRAGMENT_FIELDS: &[FieldSpec] = &[
    ("ipv6.frag.next_header", 1, Kind::Dec),
    ("ipv6.frag.reserved", 1, Kind::Hex),
    ("ipv6.frag.offset_flags", 2, Kind::Hex),
    ("ipv6.frag.id", 4, Kind::Hex),
];

/// Extension headers named before the rest is left as payload (a packet
/// may chain them, RFC 8200 recommends each at most once or twice).
const MAX_EXTENSION_HEADERS: usize = 8;

const ICMPV6_FIELDS: &[FieldSpec] = &[
    ("icmpv6.type", 1, Kind::Dec),
    ("icmpv6.code", 1, Kind::Dec),
    ("icmpv6.checksum", 2, Kind::Hex),
];

/// The header fields of an Ethernet frame, as far as they are understood:
/// Ethernet and VLAN tags, then ARP, or IPv4 with ICMP, UDP or TCP, or IPv6
/// and its extension headers with ICMPv6, UDP or TCP (no transport header
/// in a later fragment). A frame cut short gets the fields it holds.
fn fields(frame: &[u8]) -> Vec<Field> {
    let mut out = Vec::new();
    let mut at = 0;
    // Adds the fields in order from `at`; false at the first that the
    // frame is too short to hold.
    let mut add = |specs: &[FieldSpec], at: &mut usize| -> bool {
        for &(name, len, kind) in specs {
            if *at + len > frame.len() {
                return false;
            }
            out.push(Field {
                name,
                range: *at..*at + len,
                kind,
            });
            *at += len;
        }
        true
    };
    if !add(
        &[("eth.dst", 6, Kind::Mac), ("eth.src", 6, Kind::Mac)],
        &mut at,
    ) {
        return out;
    }
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return out;
    };
    let mut ethertype = eth.ethertype();
    while vlan::is_tpid(ethertype) {
        add(&[("vlan.tpid", 2, Kind::Hex)], &mut at);
        let Ok(tag) = vlan::Tag::new_checked(&frame[at..]) else {
            add(&[("vlan.tci", 2, Kind::Hex)], &mut at);
            return out;
        };
        add(&[("vlan.tci", 2, Kind::Hex)], &mut at);
        ethertype = tag.ethertype();
    }
    if !add(&[("eth.type", 2, Kind::Hex)], &mut at) {
        return out;
    }
    let l3 = at;
    let complete = match ethertype {
        ethernet::ethertype::ARP => add(ARP_FIELDS, &mut at),
        ethernet::ethertype::IPV4 => {
            if !add(IPV4_FIELDS, &mut at) {
                return out;
            }
            // The fixed header is there (added above): its getters are in bounds.
            let ip = ipv4::Packet::new_unchecked(&frame[l3..]);
            let options = ip.header_len().saturating_sub(ipv4::MIN_HEADER_LEN);
            if options > 0 && !add(&[("ipv4.options", options, Kind::Bytes)], &mut at) {
                return out;
            }
            // A later fragment carries no transport header: its first
            // bytes are the middle of a segment.
            if ip.fragment_offset() != 0 {
                true
            } else {
                add(transport_fields(ip.protocol()), &mut at)
            }
        }
        ethernet::ethertype::IPV6 => {
            if !add(IPV6_FIELDS, &mut at) {
                return out;
            }
            let mut next = ipv6::Packet::new_unchecked(&frame[l3..]).next_header();
            // Extension headers (RFC 8200 section 4) come before the
            // transport header, a fragment header's offset says whether
            // there is one.
            let mut later_fragment = false;
            for _ in 0..MAX_EXTENSION_HEADERS {
                match next {
                    wire::ip::HOPOPTS | wire::ip::ROUTING | wire::ip::DSTOPTS => {
                        let Ok(ext) = ipv6::ExtHeader::new_checked(&frame[at..]) else {
                            break;
                        };
                        next = ext.next_header();
                        let data = ext.header_len() - 2;
                        add(EXTENSION_FIELDS, &mut at);
                        add(&[("ipv6.ext.data", data, Kind::Bytes)], &mut at);
                    }
                    wire::ip::FRAGMENT => {
                        let start = at;
                        if !add(FRAGMENT_FIELDS, &mut at) {
                            return out;
                        }
                        next = frame[start];
                        let offset_flags = u16::from_be_bytes([frame[start + 2], frame[start + 3]]);
                        later_fragment = offset_flags >> 3 != 0;
                    }
                    _ => break,
                }
            }
            later_fragment || add(transport_fields(next), &mut at)
        }
        _ => true,
    };
    if !complete {
        return out;
    }
    let rest = frame.len() - at;
    add(&[("payload", rest, Kind::Bytes)], &mut at);
    out
}

/// The fields of the header after IP, by protocol number.
fn transport_fields(protocol: u8) -> &'static [FieldSpec] {
    match protocol {
        wire::ip::ICMP => ICMP_FIELDS,
        wire::ip::TCP => TCP_FIELDS,
        wire::ip::UDP => UDP_FIELDS,
        wire::ip::ICMPV6 => ICMPV6_FIELDS,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 1, 0, 0, 172, 17, 0, 2, 172, 17, 0, 1,
        ]);
        f.extend_from_slice(&[8, 0, 0, 0, 0, 7, 0, 1, 1, 2, 3, 4]);
        f
    }

    #[test]
    fn names_the_header_field_and_both_values() {
        let want = ping();
        let mut got = ping();
        got[14 + 8] = 63;
        assert_eq!(
            frame_difference(&want, &got).unwrap(),
            "ipv4.ttl (bytes 22-22) differs: expected 64, got 63"
        );
        let mut got = ping();
        got[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        assert_eq!(
            frame_difference(&want, &got).unwrap(),
            "eth.src (bytes 6-11) differs: expected 02:00:00:00:00:01, got 02:00:00:00:00:09"
        );
        let mut got = ping();
        got[14 + 16..14 + 20].copy_from_slice(&[172, 17, 0, 9]);
        assert_eq!(
            frame_difference(&want, &got).unwrap(),
            "ipv4.dst (bytes 30-33) differs: expected 172.17.0.1, got 172.17.0.9"
        );
    }

    #[test]
    fn payload_differences_show_the_bytes() {
        let want = ping();
        let mut got = ping();
        let n = got.len();
        got[n - 3] = 0xff;
        got[n - 1] = 0xee;
        assert_eq!(
            frame_difference(&want, &got).unwrap(),
            "bytes 43-45 of payload differ: expected 020304, got ff03ee"
        );
    }

    #[test]
    fn lengths_and_equal_frames() {
        let want = ping();
        assert_eq!(frame_difference(&want, &want), None);
        let mut got = ping();
        got.extend_from_slice(&[0, 0]);
        assert_eq!(
            frame_difference(&want, &got).unwrap(),
            "length differs: expected 46 bytes, got 48 (the first 46 are the same)"
        );
    }

    #[test]
    fn names_fields_of_vlan_arp_udp_and_tcp() {
        let eth = |ethertype: [u8; 2]| {
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00, 5];
            f.extend_from_slice(&ethertype);
            f
        };
        let differ_at = |want: &[u8], i: usize| {
            let mut got = want.to_vec();
            got[i] ^= 1;
            frame_difference(want, &got).unwrap()
        };

        let mut arp = eth([0x08, 0x06]);
        arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&[
            2, 0, 0, 0, 0, 1, 172, 17, 0, 2, 0, 0, 0, 0, 0, 0, 172, 17, 0, 1,
        ]);
        assert!(differ_at(&arp, 15).starts_with("vlan.tci (bytes 14-15)"));
        assert!(differ_at(&arp, 45).starts_with("arp.tpa (bytes 42-45)"));

        let ip = |proto: u8, l4: &[u8]| {
            let mut f = eth([0x08, 0x00]);
            f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0]);
            f.extend_from_slice(&[172, 17, 0, 2, 172, 17, 0, 1]);
            f.extend_from_slice(l4);
            f
        };
        let udp = ip(17, &[0, 53, 0, 68, 0, 8, 0, 0]);
        assert_eq!(
            differ_at(&udp, 18 + 20 + 1),
            "udp.sport (bytes 38-39) differs: expected 53, got 52"
        );
        let tcp = ip(6, &[0; 20]);
        assert!(differ_at(&tcp, 18 + 20 + 14).starts_with("tcp.window (bytes 52-53)"));
        // Cut inside the TCP header: no field holds the byte, so it is shown bare.
        let cut = &tcp[..18 + 20 + 10];
        assert_eq!(
            differ_at(cut, 18 + 20 + 9),
            "bytes 47-47 differ: expected 00, got 01"
        );
    }

    #[test]
    fn names_fields_of_ipv6() {
        let mut want = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        want.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
        want.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        want.extend_from_slice(&[0, 53, 0, 53, 0, 8, 0, 0]);
        let mut got = want.clone();
        got[14 + 39] = 3;
        assert_eq!(
            frame_difference(&want, &got).unwrap(),
            "ipv6.dst (bytes 38-53) differs: expected fe80::2, got fe80::3"
        );
        let mut got = want.clone();
        got[14 + 40 + 1] = 54;
        assert!(
            frame_difference(&want, &got)
                .unwrap()
                .starts_with("udp.sport (bytes 54-55)")
        );
    }

    /// An IPv6 frame from fe80::1 to ff02::16 whose next header is `next`,
    /// followed by `rest` (extension headers, then the transport header).
    fn ipv6_frame(next: u8, rest: &[u8]) -> Vec<u8> {
        let mut f = vec![0x33, 0x33, 0, 0, 0, 0x16, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        let len = rest.len() as u16;
        f.extend_from_slice(&[0x60, 0, 0, 0, (len >> 8) as u8, len as u8, next, 1]);
        f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16]);
        f.extend_from_slice(rest);
        f
    }

    fn differ_at(want: &[u8], i: usize) -> String {
        let mut got = want.to_vec();
        got[i] ^= 1;
        frame_difference(want, &got).unwrap()
    }

    #[test]
    fn names_fields_behind_ipv6_extension_headers() {
        // An MLDv2 report: hop-by-hop options (router alert), then ICMPv6.
        let hop_by_hop = [58, 0, 5, 2, 0, 0, 1, 0];
        let report = [143, 0, 0x12, 0x34, 0, 0, 0, 1];
        let mld = ipv6_frame(0, &[&hop_by_hop[..], &report[..]].concat());
        assert_eq!(
            differ_at(&mld, 54),
            "ipv6.ext.next_header (bytes 54-54) differs: expected 58, got 59"
        );
        assert_eq!(
            differ_at(&mld, 58),
            "bytes 58-58 of ipv6.ext.data differ: expected 00, got 01"
        );
        assert_eq!(
            differ_at(&mld, 62),
            "icmpv6.type (bytes 62-62) differs: expected 143, got 142"
        );
        // Routing, then destination options, then UDP.
        let routing = [60, 0, 0, 0, 0, 0, 0, 0];
        let options = [17, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let udp = [0, 53, 0, 53, 0, 8, 0, 0];
        let chained = ipv6_frame(43, &[&routing[..], &options[..], &udp[..]].concat());
        assert!(differ_at(&chained, 54 + 8 + 16 + 1).starts_with("udp.sport (bytes 78-79)"));
        // An extension header cut short: the rest is payload, not misnamed.
        let cut = ipv6_frame(0, &[58, 1, 0, 0, 0, 0, 0, 0, 143, 0, 0, 0]);
        assert_eq!(
            differ_at(&cut, 62),
            "bytes 62-62 of payload differ: expected 8f, got 8e"
        );
    }

    #[test]
    fn a_later_fragment_has_no_transport_fields() {
        let udp = [0, 53, 0, 53, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let fragment = |offset_flags: u16| {
            let [high, low] = offset_flags.to_be_bytes();
            let header = [17, 0, high, low, 0, 0, 0, 7];
            ipv6_frame(44, &[&header[..], &udp[..]].concat())
        };
        let first = fragment(1); // offset 0, more fragments
        assert_eq!(
            differ_at(&first, 57),
            "ipv6.frag.offset_flags (bytes 56-57) differs: expected 0x0001, got 0x0000"
        );
        assert!(differ_at(&first, 63).starts_with("udp.sport (bytes 62-63)"));
        let later = fragment(185 << 3); // offset 1480 bytes: the middle of the datagram
        assert_eq!(
            differ_at(&later, 63),
            "bytes 63-63 of payload differ: expected 35, got 34"
        );

        let mut v4 = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        v4.extend_from_slice(&[0x45, 0, 0, 36, 0, 7, 0, 185, 64, 17, 0, 0]);
        v4.extend_from_slice(&[172, 17, 0, 2, 172, 17, 0, 1]);
        v4.extend_from_slice(&udp);
        assert_eq!(
            differ_at(&v4, 35),
            "bytes 35-35 of payload differ: expected 35, got 34"
        );
    }

    #[test]
    fn a_difference_reads_as_one_line() {
        let d = Difference {
            port: "p2".into(),
            frame: Some(3),
            time_ns: Some(1_500_000_000),
            what: "x".into(),
            frames: None,
        };
        assert_eq!(d.to_string(), "port p2 frame 3 (t=1.500000000): x");
        assert_eq!(d.frame_lines(), None);
        let d = Difference {
            frames: Some(("a".into(), "b".into())),
            ..d
        };
        assert_eq!(d.to_string(), "port p2 frame 3 (t=1.500000000): x");
        assert_eq!(d.frame_lines().unwrap(), "  expected: a\n  got:      b");
    }
}

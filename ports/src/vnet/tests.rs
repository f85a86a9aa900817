use super::*;
use crate::wire::checksum::crc32c;
use etherparse::{
    Ipv4HeaderSlice, LinkExtSlice, NetSlice, SlicedPacket, TransportSlice, UdpHeader,
};

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SRC4: [u8; 4] = [172, 17, 0, 2];
const DST4: [u8; 4] = [172, 17, 0, 3];
const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
const BASE_SEQ: u32 = 0xffff_0000; // wraps inside a 64 KiB frame
const BASE_ID: u16 = 0xfff0; // wraps after 16 segments
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;

/// What kind of super-frame to build.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    ipv6: bool,
    udp: bool,
    /// 0, 1 or 2 VLAN tags.
    vlans: usize,
    /// IPv4 options (4 bytes) or an IPv6 destination-options header (8).
    ip_extras: bool,
    /// A 12-byte TCP option block (data offset 8).
    tcp_options: bool,
    tcp_flags: u8,
}

/// A super-frame as a Linux stack hands it over: lengths for the whole
/// payload, the pseudo-header sum in the L4 checksum field.
#[derive(Debug, Clone)]
struct Built {
    shape: Shape,
    vnet: VnetHdr,
    frame: Vec<u8>,
    l3: usize,
    l4: usize,
    payload_at: usize,
}

/// The reference sum: one 16-bit word at a time, as RFC 1071 states it.
fn naive_sum(pieces: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for piece in pieces {
        assert!(piece.len() % 2 == 0 || std::ptr::eq(*piece, *pieces.last().unwrap()));
        for pair in piece.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            sum += hi + pair.get(1).map_or(0, |&lo| u64::from(lo));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn pseudo_header(shape: &Shape, l4_len: usize) -> Vec<u8> {
    let proto = if shape.udp { 17u8 } else { 6 };
    let mut p = Vec::new();
    if shape.ipv6 {
        p.extend_from_slice(&SRC6);
        p.extend_from_slice(&DST6);
        p.extend_from_slice(&(l4_len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
    } else {
        p.extend_from_slice(&SRC4);
        p.extend_from_slice(&DST4);
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
    }
    p
}

fn build(shape: Shape, payload: &[u8], gso_size: u16) -> Built {
    let mut f = Vec::new();
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    for tag in 0..shape.vlans {
        let tpid: u16 = if tag == 0 && shape.vlans == 2 {
            0x88a8
        } else {
            0x8100
        };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + tag as u16).to_be_bytes());
    }
    f.extend_from_slice(if shape.ipv6 {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    let l3 = f.len();
    let proto = if shape.udp { 17u8 } else { 6 };
    let l4_hlen = match (shape.udp, shape.tcp_options) {
        (true, _) => 8,
        (false, false) => 20,
        (false, true) => 32,
    };
    let l4_len = l4_hlen + payload.len();
    if shape.ipv6 {
        let ext = if shape.ip_extras { 8 } else { 0 };
        f.extend_from_slice(&[0x60, 0x01, 0x23, 0x45]); // version, class, flow
        f.extend_from_slice(&((ext + l4_len) as u16).to_be_bytes());
        f.push(if shape.ip_extras { 60 } else { proto });
        f.push(64);
        f.extend_from_slice(&SRC6);
        f.extend_from_slice(&DST6);
        if shape.ip_extras {
            // Destination options: PadN over the 6 option bytes.
            f.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
        }
    } else {
        let ihl = if shape.ip_extras { 6u8 } else { 5 };
        let total = usize::from(ihl) * 4 + l4_len;
        f.push(0x40 | ihl);
        f.push(0x02); // ECT(0)
        f.extend_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&BASE_ID.to_be_bytes());
        f.extend_from_slice(&[0x40, 0x00]); // DF
        f.extend_from_slice(&[64, proto, 0, 0]);
        f.extend_from_slice(&SRC4);
        f.extend_from_slice(&DST4);
        if shape.ip_extras {
            f.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        }
        let header = Ipv4HeaderSlice::from_slice(&f[l3..]).unwrap().to_header();
        let checksum = header.calc_header_checksum();
        f[l3 + 10..l3 + 12].copy_from_slice(&checksum.to_be_bytes());
    }
    let l4 = f.len();
    if shape.udp {
        f.extend_from_slice(&4000u16.to_be_bytes());
        f.extend_from_slice(&5000u16.to_be_bytes());
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    } else {
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&80u16.to_be_bytes());
        f.extend_from_slice(&BASE_SEQ.to_be_bytes());
        f.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        f.push(((l4_hlen / 4) as u8) << 4);
        f.push(shape.tcp_flags);
        f.extend_from_slice(&[0x01, 0xf5, 0, 0, 0, 7]); // window, csum, urgent
        if shape.tcp_options {
            // NOP NOP Timestamps(val, ecr)
            f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        }
    }
    let payload_at = f.len();
    f.extend_from_slice(payload);
    let checksum_at = l4 + if shape.udp { 6 } else { 16 };
    let partial = naive_sum(&[&pseudo_header(&shape, l4_len)]);
    f[checksum_at..checksum_at + 2].copy_from_slice(&partial.to_be_bytes());
    let gso_type = match (shape.udp, shape.ipv6) {
        (true, _) => VnetHdr::GSO_UDP_L4,
        (false, false) => VnetHdr::GSO_TCPV4,
        (false, true) => VnetHdr::GSO_TCPV6,
    };
    let vnet = VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        gso_type,
        // What a packet socket reports: skb_headlen(), not the headers.
        hdr_len: (payload_at + 100) as u16,
        gso_size,
        csum_start: l4 as u16,
        csum_offset: (checksum_at - l4) as u16,
    };
    Built {
        shape,
        vnet,
        frame: f,
        l3,
        l4,
        payload_at,
    }
}

fn run(vnet: &VnetHdr, frame: &[u8]) -> (Result<usize, OffloadError>, Vec<Vec<u8>>) {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let result = segment(vnet, frame, &mut scratch, &mut |s| out.push(s.to_vec()));
    (result, out)
}

fn same_checksum(a: u16, b: u16) -> bool {
    // 0 and 0xffff are the same ones' complement zero; we store 0xffff.
    a == b || (a | b == 0xffff && a & b == 0)
}

/// Checks `segments` against the super-frame they were cut from,
/// parsing each with etherparse and checking every checksum with it.
/// Segments `b`, checks that it makes `count` correct segments, and
/// returns them.
fn assert_cut(b: &Built, count: usize, what: &str) -> Vec<Vec<u8>> {
    let (result, segments) = run(&b.vnet, &b.frame);
    assert_eq!(result, Ok(count), "{what}");
    check_segments(b, &segments);
    segments
}

fn check_segments(b: &Built, segments: &[Vec<u8>]) {
    let shape = b.shape;
    let payload = &b.frame[b.payload_at..];
    let size = match usize::from(b.vnet.gso_size) {
        0 => payload.len().max(1),
        size => size,
    };
    let expected = payload.len().div_ceil(size).max(1);
    assert_eq!(segments.len(), expected, "segment count");
    let mut joined = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let (first, last) = (i == 0, i + 1 == segments.len());
        let sliced = SlicedPacket::from_ethernet(seg)
            .unwrap_or_else(|e| panic!("segment {i} does not parse: {e}"));
        assert_eq!(sliced.link_exts.len(), shape.vlans);
        for ext in &sliced.link_exts {
            assert!(matches!(ext, LinkExtSlice::Vlan(_)));
        }
        // Everything up to the IP header is copied unchanged.
        assert_eq!(seg[..b.l3], b.frame[..b.l3]);
        let transport = sliced.transport.as_ref().expect("transport layer");
        match sliced.net.as_ref().expect("net layer") {
            NetSlice::Ipv4(ip) => {
                assert!(!shape.ipv6);
                let h = ip.header();
                assert_eq!(usize::from(h.total_len()), seg.len() - b.l3);
                assert_eq!(h.identification(), BASE_ID.wrapping_add(i as u16));
                assert!(h.dont_fragment());
                assert!(!h.more_fragments());
                assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
                assert_eq!(h.options(), &b.frame[b.l3 + 20..b.l4]);
            }
            NetSlice::Ipv6(ip) => {
                assert!(shape.ipv6);
                let h = ip.header();
                assert_eq!(usize::from(h.payload_length()), seg.len() - b.l3 - 40);
                assert_eq!(ip.extensions().is_empty(), !shape.ip_extras);
                // Version, class, flow label, next header, hop limit,
                // addresses and extension headers: all unchanged.
                assert_eq!(seg[b.l3..b.l3 + 4], b.frame[b.l3..b.l3 + 4]);
                assert_eq!(seg[b.l3 + 6..b.l4], b.frame[b.l3 + 6..b.l4]);
            }
            NetSlice::Arp(_) => panic!("ARP"),
        }
        let pseudo = pseudo_header(&shape, seg.len() - b.l4);
        assert_eq!(
            naive_sum(&[&pseudo, &seg[b.l4..]]),
            0xffff,
            "L4 checksum of {i}"
        );
        let l4_payload = match transport {
            TransportSlice::Tcp(tcp) => {
                assert!(!shape.udp);
                let offset = (i * size) as u32;
                assert_eq!(tcp.sequence_number(), BASE_SEQ.wrapping_add(offset));
                let base = shape.tcp_flags;
                assert_eq!(tcp.fin(), last && base & FIN != 0, "FIN of {i}");
                assert_eq!(tcp.psh(), last && base & PSH != 0, "PSH of {i}");
                assert_eq!(tcp.cwr(), first && base & CWR != 0, "CWR of {i}");
                assert_eq!(tcp.ack(), base & ACK != 0);
                assert_eq!(tcp.ece(), base & ECE != 0);
                assert_eq!(tcp.urg(), base & URG != 0);
                assert_eq!(tcp.acknowledgment_number(), 0x1234_5678);
                assert_eq!(tcp.options(), &b.frame[b.l4 + 20..b.payload_at]);
                let expected = match sliced.net.as_ref().unwrap() {
                    NetSlice::Ipv4(_) => tcp.calc_checksum_ipv4(SRC4, DST4),
                    _ => tcp.calc_checksum_ipv6(SRC6, DST6),
                };
                assert!(same_checksum(tcp.checksum(), expected.unwrap()));
                tcp.payload()
            }
            TransportSlice::Udp(udp) => {
                assert!(shape.udp);
                assert_eq!(usize::from(udp.length()), seg.len() - b.l4);
                let header: UdpHeader = udp.to_header();
                let expected = match sliced.net.as_ref().unwrap() {
                    NetSlice::Ipv4(_) => header.calc_checksum_ipv4_raw(SRC4, DST4, udp.payload()),
                    _ => header.calc_checksum_ipv6_raw(SRC6, DST6, udp.payload()),
                };
                assert_eq!(udp.checksum(), expected.unwrap());
                assert_ne!(udp.checksum(), 0);
                udp.payload()
            }
            _ => panic!("unexpected transport"),
        };
        assert_eq!(l4_payload.len(), seg.len() - b.payload_at);
        if last {
            assert!(l4_payload.len() <= size);
        } else {
            assert_eq!(l4_payload.len(), size);
        }
        joined.extend_from_slice(l4_payload);
    }
    assert_eq!(joined, payload, "payloads put back together");
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// xorshift64*: deterministic, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn bytes_round_trip() {
    let hdr = VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    assert_eq!(VnetHdr::from_bytes(&hdr.to_bytes()), hdr);
    assert!(!hdr.is_plain());
    assert!(hdr.is_gso());
    assert!(VnetHdr::default().is_plain());
}

#[test]
fn a_lone_ecn_bit_is_plain_not_gso() {
    let hdr = VnetHdr {
        gso_type: VnetHdr::GSO_ECN,
        ..Default::default()
    };
    assert!(!hdr.is_gso());
    assert!(
        hdr.is_plain(),
        "else the fabric would have no way to send it"
    );
}

#[test]
fn ones_complement_sum_matches_the_word_by_word_definition() {
    let mut rng = Rng(0x5eed);
    let data = rng.bytes(4096 + 64);
    for _ in 0..2000 {
        let start = rng.below(64); // any alignment
        let len = match rng.below(4) {
            0 => rng.below(8),
            1 => rng.below(80),
            _ => rng.below(4096),
        };
        let piece = &data[start..start + len];
        let initial = match rng.below(3) {
            0 => 0,
            1 => rng.next() as u32,
            _ => 0xffff_ffff,
        };
        let got = fold(ones_complement_sum(piece, initial));
        let mut init_words = initial.to_be_bytes().to_vec();
        init_words.extend_from_slice(piece);
        assert_eq!(got, naive_sum(&[&init_words]), "start {start} len {len}");
    }
    assert_eq!(ones_complement_sum(&[], 0), 0);
    assert_eq!(fold(ones_complement_sum(&[0xff; 3], 0)), 0xff00);
    assert_eq!(fold(ones_complement_sum(&[0x12], 0)), 0x1200);
    // RFC 1071 section 3 example.
    let words = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    assert_eq!(fold(ones_complement_sum(&words, 0)), 0xddf2);
}

#[test]
fn ones_complement_sum_of_a_huge_buffer_does_not_overflow() {
    // More than one 1 MiB block, all ones: every word is 0xffff.
    let data = vec![0xffu8; (1 << 20) * 2 + 6];
    assert_eq!(fold(ones_complement_sum(&data, 0)), 0xffff);
    let data = vec![0x01u8; (1 << 20) + 2];
    let words = data.len() as u64 / 2;
    let expected = (words * 0x0101) % 0xffff;
    assert_eq!(u64::from(fold(ones_complement_sum(&data, 0))), expected);
}

#[test]
fn crc32c_matches_the_published_check_values() {
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    // RFC 3720 appendix B.4: 32 bytes of zeros, of ones, incrementing.
    assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
    let incrementing: Vec<u8> = (0..32).collect();
    assert_eq!(crc32c(&incrementing), 0x46dd_794e);
}

#[test]
fn a_tcpv4_super_frame_is_cut_as_the_kernel_does() {
    let shape = Shape {
        tcp_flags: ACK | PSH | FIN | CWR | ECE,
        ..Default::default()
    };
    let b = build(shape, &pattern(64_000), 1448);
    let segments = assert_cut(&b, 45, "");
    assert!(segments.iter().all(|s| s.len() <= 1514));
}

#[test]
fn a_tcpv6_super_frame_with_an_extension_header_and_options_is_cut() {
    let shape = Shape {
        ipv6: true,
        ip_extras: true,
        tcp_options: true,
        tcp_flags: ACK | PSH | URG,
        ..Default::default()
    };
    let b = build(shape, &pattern(60_001), 1428);
    assert_cut(&b, 43, "");
}

#[test]
fn ipv4_options_are_copied_into_every_segment() {
    let shape = Shape {
        ip_extras: true,
        tcp_flags: ACK,
        ..Default::default()
    };
    let b = build(shape, &pattern(5000), 1000);
    assert_cut(&b, 5, "");
}

#[test]
fn uso_cuts_one_udp_datagram_per_segment_over_ipv4_and_ipv6() {
    for ipv6 in [false, true] {
        let shape = Shape {
            udp: true,
            ipv6,
            ..Default::default()
        };
        let b = build(shape, &pattern(12_345), 1200);
        assert_cut(&b, 11, &format!("ipv6 {ipv6}"));
    }
}

#[test]
fn vlan_tagged_frames_keep_their_tags_in_every_segment() {
    for vlans in [1, 2] {
        for (ipv6, udp) in [(false, false), (true, false), (false, true)] {
            let shape = Shape {
                ipv6,
                udp,
                vlans,
                tcp_flags: ACK | FIN,
                ..Default::default()
            };
            let b = build(shape, &pattern(9000), 1448);
            assert_cut(&b, 7, &format!("{shape:?}"));
        }
    }
}

#[test]
fn hdr_len_is_not_trusted() {
    let shape = Shape {
        tcp_flags: ACK,
        ..Default::default()
    };
    let b = build(shape, &pattern(4000), 1448);
    let (_, expected) = run(&b.vnet, &b.frame);
    for hdr_len in [0, 1, 54, 60, 4000, u16::MAX] {
        let vnet = VnetHdr { hdr_len, ..b.vnet };
        assert_eq!(
            run(&vnet, &b.frame),
            (Ok(3), expected.clone()),
            "hdr_len {hdr_len}"
        );
    }
}

#[test]
fn a_frame_that_fits_in_one_segment_comes_out_whole_with_its_checksum() {
    for (gso_size, payload) in [(1448, 1448), (1448, 100), (0, 3000), (9000, 0)] {
        let shape = Shape {
            tcp_flags: ACK | PSH | FIN | CWR,
            ..Default::default()
        };
        let b = build(shape, &pattern(payload), gso_size);
        let segments = assert_cut(&b, 1, &format!("gso_size {gso_size} payload {payload}"));
        // Nothing but the checksum changed: flags, id and lengths stay.
        let sum_at = b.l4 + 16;
        assert_eq!(segments[0][..sum_at], b.frame[..sum_at]);
        assert_eq!(segments[0][sum_at + 2..], b.frame[sum_at + 2..]);
    }
}

#[test]
fn a_partial_checksum_without_gso_is_completed() {
    for shape in [
        Shape::default(),
        Shape {
            udp: true,
            ipv6: true,
            vlans: 1,
            ..Default::default()
        },
        Shape {
            ipv6: true,
            ip_extras: true,
            vlans: 2,
            ..Default::default()
        },
    ] {
        let b = build(shape, &pattern(333), 0);
        let vnet = VnetHdr {
            gso_type: VnetHdr::GSO_NONE,
            hdr_len: 0,
            ..b.vnet
        };
        let (result, segments) = run(&vnet, &b.frame);
        assert_eq!(result, Ok(1));
        check_segments(&b, &segments);

        // In place, as the fabric does it, gives the same frame.
        let mut in_place = b.frame.clone();
        let mut header = vnet;
        complete_checksum(&mut header, &mut in_place).unwrap();
        assert_eq!(in_place, segments[0]);
        assert!(header.is_plain());
    }
}

#[test]
fn ethernet_padding_is_left_out_of_the_checksum() {
    let shape = Shape {
        udp: true,
        ..Default::default()
    };
    let b = build(shape, &pattern(3), 0);
    let mut padded = b.frame.clone();
    padded.resize(60, 0xee); // padding a hostile sender filled with junk
    let mut vnet = VnetHdr {
        gso_type: VnetHdr::GSO_NONE,
        ..b.vnet
    };
    complete_checksum(&mut vnet, &mut padded).unwrap();
    assert_eq!(padded[b.frame.len()..], [0xee; 60 - 45]);
    check_segments(&b, &[padded[..b.frame.len()].to_vec()]);
}

#[test]
fn a_partial_sctp_checksum_is_completed_with_crc32c() {
    // IPv4 + SCTP common header + one DATA chunk, checksum field zero,
    // as the SCTP stack leaves it for NETIF_F_SCTP_CRC.
    let mut f = Vec::new();
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let sctp_len = 12 + 16 + 4;
    f.extend_from_slice(&[
        0x45,
        0,
        0,
        (20 + sctp_len) as u8,
        0,
        1,
        0x40,
        0,
        64,
        132,
        0,
        0,
    ]);
    f.extend_from_slice(&SRC4);
    f.extend_from_slice(&DST4);
    f.extend_from_slice(&[0x13, 0x88, 0x13, 0x89, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]);
    f.extend_from_slice(&[
        0, 3, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c', b'd',
    ]);
    let l4 = 34;
    let mut vnet = VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        csum_start: l4 as u16,
        csum_offset: 8,
        ..Default::default()
    };
    let (result, segments) = run(&vnet, &f);
    assert_eq!(result, Ok(1));
    complete_checksum(&mut vnet, &mut f).unwrap();
    assert_eq!(segments[0], f);

    // Bit by bit, independently of the table.
    let mut packet = f[l4..].to_vec();
    let stored = [packet[8], packet[9], packet[10], packet[11]];
    packet[8..12].fill(0);
    let mut crc = !0u32;
    for byte in packet {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    assert_eq!(stored, (!crc).to_le_bytes());
}

#[test]
fn ufo_over_ipv4_is_cut_into_fragments_of_one_checksummed_datagram() {
    let shape = Shape {
        udp: true,
        ..Default::default()
    };
    let mut b = build(shape, &pattern(4000), 1473);
    b.vnet.gso_type = VnetHdr::GSO_UDP;
    let (result, fragments) = run(&b.vnet, &b.frame);
    // 1473 rounds down to 1472 bytes of IP payload per fragment.
    assert_eq!(result, Ok(3));
    let mut datagram = Vec::new();
    for (i, frag) in fragments.iter().enumerate() {
        assert_eq!(frag[..b.l3], b.frame[..b.l3]);
        let h = Ipv4HeaderSlice::from_slice(&frag[b.l3..]).unwrap();
        assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
        assert_eq!(usize::from(h.total_len()), frag.len() - b.l3);
        assert_eq!(h.identification(), BASE_ID, "fragments share the id");
        assert_eq!(h.more_fragments(), i < 2);
        assert!(!h.dont_fragment());
        assert_eq!(
            usize::from(h.fragments_offset().value()) * 8,
            datagram.len()
        );
        if i < 2 {
            assert_eq!(frag.len() - b.l4, 1472);
        }
        datagram.extend_from_slice(&frag[b.l4..]);
    }
    assert_eq!(datagram[8..], b.frame[b.payload_at..]);
    assert_eq!(datagram[..6], b.frame[b.l4..b.l4 + 6]);
    let pseudo = pseudo_header(&shape, datagram.len());
    assert_eq!(naive_sum(&[&pseudo, &datagram]), 0xffff);

    // Fits in one: not fragmented, DF kept.
    let whole = VnetHdr {
        gso_size: 8000,
        ..b.vnet
    };
    let (result, frames) = run(&whole, &b.frame);
    assert_eq!(result, Ok(1));
    check_segments(&build(shape, &pattern(4000), 0), &frames);
}

#[test]
fn ufo_over_ipv6_is_refused() {
    let shape = Shape {
        udp: true,
        ipv6: true,
        ..Default::default()
    };
    let mut b = build(shape, &pattern(4000), 1400);
    b.vnet.gso_type = VnetHdr::GSO_UDP;
    assert_eq!(
        run(&b.vnet, &b.frame),
        (Err(OffloadError::UnsupportedGso(3)), vec![])
    );
}

#[test]
fn segments_reuse_the_scratch_buffer() {
    let b = build(Shape::default(), &pattern(30_000), 1448);
    let mut scratch = Vec::new();
    let mut pointers = Vec::new();
    let n = segment(&b.vnet, &b.frame, &mut scratch, &mut |s| {
        pointers.push(s.as_ptr())
    })
    .unwrap();
    assert_eq!(n, 21);
    assert!(
        pointers.iter().all(|&p| p == pointers[0]),
        "no reallocation per segment"
    );
    let capacity = scratch.capacity();
    segment(&b.vnet, &b.frame, &mut scratch, &mut |_| {}).unwrap();
    assert_eq!(scratch.capacity(), capacity, "nor on the next frame");
}

#[test]
fn gso_size_limits() {
    let b = build(Shape::default(), &pattern(20_480), 10);
    assert_eq!(run(&b.vnet, &b.frame), (Ok(2048), run(&b.vnet, &b.frame).1));
    let vnet = VnetHdr {
        gso_size: 9,
        ..b.vnet
    };
    assert_eq!(
        run(&vnet, &b.frame),
        (Err(OffloadError::TooManySegments(2276)), vec![])
    );
    let vnet = VnetHdr {
        gso_size: 1,
        ..b.vnet
    };
    assert!(run(&vnet, &b.frame).0.is_err());
    let b = build(
        Shape {
            udp: true,
            ..Default::default()
        },
        &pattern(100),
        7,
    );
    let ufo = VnetHdr {
        gso_type: VnetHdr::GSO_UDP,
        ..b.vnet
    };
    assert!(
        run(&ufo, &b.frame).0.is_err(),
        "fragments come in 8-byte units"
    );
}

/// Applies `edit` to a copy of a good super-frame and expects `error`.
fn expect_error(shape: Shape, edit: impl FnOnce(&mut Built), error: OffloadError) {
    let mut b = build(shape, &pattern(5000), 1000);
    edit(&mut b);
    let (result, out) = run(&b.vnet, &b.frame);
    assert_eq!(result, Err(error));
    assert!(out.is_empty(), "nothing is emitted for a bad frame");
}

#[test]
fn malformed_frames_are_refused_before_anything_is_emitted() {
    use OffloadError::{BadHeaders, Truncated, UnsupportedGso};
    let tcp4 = Shape::default();
    let tcp6 = Shape {
        ipv6: true,
        ..Default::default()
    };
    let udp4 = Shape {
        udp: true,
        ..Default::default()
    };
    let bad = |what| BadHeaders(what);
    expect_error(tcp4, |b| b.vnet.gso_type = 2, UnsupportedGso(2));
    expect_error(tcp4, |b| b.vnet.gso_type = 6, UnsupportedGso(6));
    expect_error(tcp4, |b| b.vnet.gso_type = 0x21, UnsupportedGso(0x21));
    expect_error(
        tcp4,
        |b| b.vnet.gso_type = VnetHdr::GSO_TCPV6,
        bad("GSO type names the other IP version"),
    );
    expect_error(
        tcp6,
        |b| b.vnet.gso_type = VnetHdr::GSO_TCPV4,
        bad("GSO type names the other IP version"),
    );
    expect_error(
        udp4,
        |b| b.vnet.gso_type = VnetHdr::GSO_TCPV4,
        bad("GSO type names another transport protocol"),
    );
    expect_error(
        tcp4,
        |b| b.vnet.gso_type = VnetHdr::GSO_UDP_L4,
        bad("GSO type names another transport protocol"),
    );
    expect_error(
        tcp4,
        |b| b.vnet.csum_start += 1,
        bad("checksum offsets disagree with the headers"),
    );
    expect_error(
        tcp4,
        |b| b.vnet.csum_offset = 6,
        bad("checksum offsets disagree with the headers"),
    );
    expect_error(
        tcp4,
        |b| b.vnet.csum_start = u16::MAX,
        bad("checksum offsets disagree with the headers"),
    );
    expect_error(
        tcp4,
        |b| b.frame[12..14].copy_from_slice(&[0x08, 0x06]),
        bad("neither IPv4 nor IPv6"),
    );
    expect_error(
        tcp4,
        |b| b.frame[b.l3] = 0x65,
        bad("IPv4 ethertype on a non-IPv4 header"),
    );
    expect_error(
        tcp4,
        |b| b.frame[b.l3] = 0x44,
        bad("IPv4 header length below 20"),
    );
    expect_error(
        tcp4,
        |b| b.frame[b.l3 + 2..b.l3 + 4].copy_from_slice(&[0, 10]),
        bad("IPv4 total length below its header length"),
    );
    expect_error(tcp4, |b| b.frame[b.l3 + 2] += 1, Truncated);
    expect_error(
        tcp4,
        |b| b.frame[b.l3 + 3] -= 1,
        bad("IP length does not match the frame length"),
    );
    expect_error(
        tcp4,
        |b| b.frame.push(0),
        bad("IP length does not match the frame length"),
    );
    expect_error(
        tcp4,
        |b| b.frame[b.l3 + 6] = 0x20,
        bad("GSO on an IP fragment"),
    );
    expect_error(
        tcp4,
        |b| b.frame[b.l3 + 7] = 0x01,
        bad("GSO on an IP fragment"),
    );
    expect_error(
        tcp4,
        |b| b.frame[b.l4 + 12] = 0x40,
        bad("TCP data offset below 5"),
    );
    expect_error(
        tcp6,
        |b| b.frame[b.l3] = 0x45,
        bad("IPv6 ethertype on a non-IPv6 header"),
    );
    expect_error(
        tcp6,
        |b| b.frame[b.l3 + 4..b.l3 + 6].copy_from_slice(&[0xff, 0xff]),
        Truncated,
    );
    expect_error(
        udp4,
        |b| b.frame[b.l3 + 9] = 132,
        bad("GSO type names another transport protocol"),
    );
    // A TCP header claiming 60 bytes on a frame with 20 bytes of payload.
    let mut b = build(tcp4, &pattern(20), 8);
    b.frame[b.l4 + 12] = 0xf0;
    assert_eq!(run(&b.vnet, &b.frame), (Err(Truncated), vec![]));
    // Three VLAN tags.
    let mut b = build(Shape { vlans: 2, ..tcp4 }, &pattern(100), 50);
    b.frame.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    assert_eq!(
        run(&b.vnet, &b.frame),
        (Err(bad("more than two VLAN tags")), vec![])
    );
}

#[test]
fn unusable_ipv6_extension_headers_are_refused() {
    use OffloadError::{BadHeaders, Truncated};
    let shape = Shape {
        ipv6: true,
        ip_extras: true,
        ..Default::default()
    };
    // The destination-options header turned into a routing header with
    // segments left, then into a fragment header.
    expect_error(
        shape,
        |b| {
            b.frame[b.l3 + 6] = 43;
            let ext = b.l3 + 40;
            b.frame[ext + 3] = 1;
        },
        BadHeaders("IPv6 routing header with segments left"),
    );
    expect_error(
        shape,
        |b| b.frame[b.l3 + 6] = 44,
        BadHeaders("GSO on an IP fragment"),
    );
    // Its length running past the packet.
    let mut b = build(shape, &pattern(100), 50);
    let ext = b.l3 + 40;
    b.frame[ext + 1] = 0xff;
    assert_eq!(run(&b.vnet, &b.frame), (Err(Truncated), vec![]));
    // A chain that never ends: each header names itself as the next.
    expect_error(
        shape,
        |b| {
            let ext = b.l3 + 40;
            b.frame[ext] = 60
        },
        BadHeaders("GSO type names another transport protocol"),
    );
    // Eight extension headers are walked; a ninth is too many.
    for (extra, result) in [
        (7, Ok(2)),
        (8, Err(BadHeaders("too many IPv6 extension headers"))),
    ] {
        let mut b = build(shape, &pattern(200), 100);
        let proto = b.frame[b.l3 + 40];
        let mut chain = [60, 0, 1, 4, 0, 0, 0, 0].repeat(extra);
        chain[(extra - 1) * 8] = proto;
        b.frame[b.l3 + 40] = 60;
        b.frame.splice(b.l4..b.l4, chain);
        let payload_len = (b.frame.len() - b.l3 - 40) as u16;
        b.frame[b.l3 + 4..b.l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
        b.vnet.csum_start += 8 * extra as u16;
        assert_eq!(run(&b.vnet, &b.frame).0, result, "{extra} more");
    }
    // A jumbogram: payload length 0 behind a hop-by-hop header.
    expect_error(
        shape,
        |b| {
            b.frame[b.l3 + 6] = 0;
            b.frame[b.l3 + 4..b.l3 + 6].fill(0);
        },
        BadHeaders("IPv6 jumbogram (BIG TCP)"),
    );
}

#[test]
fn every_truncation_is_an_error_and_never_a_panic() {
    let shapes = [
        Shape::default(),
        Shape {
            ipv6: true,
            ip_extras: true,
            vlans: 2,
            tcp_options: true,
            ..Default::default()
        },
        Shape {
            udp: true,
            vlans: 1,
            ip_extras: true,
            ..Default::default()
        },
    ];
    for shape in shapes {
        let b = build(shape, &pattern(3000), 1000);
        for len in 0..b.frame.len() {
            let (result, out) = run(&b.vnet, &b.frame[..len]);
            assert!(result.is_err(), "{shape:?} cut at {len}");
            assert!(out.is_empty());
            let mut header = VnetHdr {
                gso_type: VnetHdr::GSO_NONE,
                ..b.vnet
            };
            let mut copy = b.frame[..len].to_vec();
            let _ = complete_checksum(&mut header, &mut copy);
        }
        assert_eq!(run(&b.vnet, &b.frame).0, Ok(3));
    }
}

#[test]
fn checksum_offsets_outside_the_frame_are_refused() {
    let b = build(Shape::default(), &pattern(10), 0);
    for (start, offset) in [
        (u16::MAX, 0),
        (0, u16::MAX),
        (u16::MAX, u16::MAX),
        (70, 0),
        (60, 8),
    ] {
        let mut vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            csum_start: start,
            csum_offset: offset,
            ..Default::default()
        };
        let mut frame = b.frame.clone();
        assert_eq!(
            complete_checksum(&mut vnet, &mut frame),
            Err(OffloadError::Truncated)
        );
        assert_eq!(frame, b.frame, "nothing written");
        assert_eq!(vnet.flags, VnetHdr::NEEDS_CSUM);
        assert_eq!(run(&vnet, &b.frame), (Err(OffloadError::Truncated), vec![]));
    }
}

#[test]
fn random_damage_never_panics() {
    let mut rng = Rng(0xdead_beef);
    let mut scratch = Vec::new();
    for round in 0..3000 {
        let shape = Shape {
            ipv6: rng.below(2) == 1,
            udp: rng.below(3) == 0,
            vlans: rng.below(3),
            ip_extras: rng.below(2) == 1,
            tcp_options: rng.below(2) == 1,
            tcp_flags: rng.next() as u8,
        };
        let mut b = build(shape, &pattern(rng.below(3000)), 1 + rng.below(1500) as u16);
        for _ in 0..1 + rng.below(4) {
            // Mostly the headers, where the parsing is.
            let at = if rng.below(4) == 0 {
                rng.below(b.frame.len())
            } else {
                rng.below(b.payload_at + 1).min(b.frame.len() - 1)
            };
            b.frame[at] = rng.next() as u8;
        }
        match rng.below(6) {
            0 => b.vnet.gso_type = rng.next() as u8,
            1 => b.vnet.gso_size = rng.next() as u16,
            2 => b.vnet.csum_start = rng.next() as u16 % 128,
            3 => b.vnet.flags = rng.next() as u8,
            4 => b.frame.truncate(rng.below(b.frame.len() + 1)),
            _ => {}
        }
        let mut emitted = 0;
        let result = segment(&b.vnet, &b.frame, &mut scratch, &mut |s| {
            emitted += 1;
            assert!(s.len() <= b.frame.len(), "round {round}");
        });
        match result {
            Ok(n) => assert_eq!(n, emitted),
            Err(_) => assert_eq!(emitted, 0),
        }
        let mut header = b.vnet;
        let _ = complete_checksum(&mut header, &mut b.frame);
    }
}

#[test]
fn random_super_frames_come_out_right() {
    let mut rng = Rng(0x0ff1_0ad5);
    for _ in 0..300 {
        let shape = Shape {
            ipv6: rng.below(2) == 1,
            udp: rng.below(3) == 0,
            vlans: rng.below(3),
            ip_extras: rng.below(2) == 1,
            tcp_options: rng.below(2) == 1,
            tcp_flags: rng.next() as u8 & !0x07, // no SYN/RST/FIN mixes
        };
        let shape = Shape {
            tcp_flags: shape.tcp_flags | rng.below(2) as u8, // maybe FIN
            ..shape
        };
        let max_payload = if shape.ipv6 { 65_000 } else { 65_400 };
        let len = match rng.below(4) {
            0 => rng.below(100),
            1 => rng.below(3000),
            _ => rng.below(max_payload),
        };
        let payload = rng.bytes(len);
        let gso_size = match rng.below(5) {
            0 => 0,
            1 => (1 + rng.below(100)) as u16,
            _ => (500 + rng.below(9000)) as u16,
        };
        let b = build(shape, &payload, gso_size);
        let (result, segments) = run(&b.vnet, &b.frame);
        let size = if gso_size == 0 {
            len.max(1)
        } else {
            usize::from(gso_size)
        };
        if len.div_ceil(size) > MAX_SEGMENTS {
            assert!(matches!(result, Err(OffloadError::TooManySegments(_))));
            continue;
        }
        assert_eq!(
            result,
            Ok(segments.len()),
            "{shape:?} len {len} gso {gso_size}"
        );
        check_segments(&b, &segments);
    }
}

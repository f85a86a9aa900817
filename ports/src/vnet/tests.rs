use super::*;
use crate::wire::checksum::crc32c;
use etherparse::{
    Ipv4HeaderSlice, LinkExtSlice, NetSlice, SlicedPacket, TransportSlice, UdpHeader,
};

mod checksum;
mod damage;
mod segment;

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

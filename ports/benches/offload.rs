//! Micro-benchmarks of the offload work a port without the virtio-net
//! header costs: `cargo bench -p ports --bench offload`.
//!
//! - software GSO: a 64 KiB TCP super-frame cut into 1448-byte segments
//!   (`vnet::segment`), and a plain frame with a partial checksum completed;
//! - coalescing: a run of 64 small UDP datagrams measured and merged
//!   (`coalesce::run_length`, `coalesce::merge`).
//!
//! Each case reports the best of several rounds (the least disturbed by
//! other load on a shared machine).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ports::coalesce;
use ports::vnet::{self, VnetHdr};

const ROUNDS: usize = 7;

fn main() {
    println!("{:<52} {:>10} {:>14}", "case", "ns/op", "ops/s");
    segmentation();
    coalescing();
}

fn report(name: &str, n: u64, mut op: impl FnMut(u64)) {
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for i in 0..n {
            op(i);
        }
        best = best.min(started.elapsed());
    }
    let ns = best.as_nanos() as f64 / n as f64;
    println!("{name:<52} {ns:>10.1} {:>14.0}", 1e9 / ns);
}

/// The folded pseudo-header sum of IPv4 addresses `addresses` for `proto`
/// and `len`, as a sender's stack leaves it in the checksum field.
fn pseudo(addresses: &[u8], proto: u8, len: usize) -> [u8; 2] {
    vnet::fold(vnet::ones_complement_sum(
        addresses,
        u32::from(proto) + len as u32,
    ))
    .to_be_bytes()
}

/// An Ethernet + IPv4 header (20 bytes, DF, right checksum) for `proto`
/// carrying `l4_len` bytes.
fn eth_ipv4(proto: u8, id: u16, l4_len: usize) -> Vec<u8> {
    let mut f = vec![
        2, 0x42, 0xac, 0x11, 0, 3, 2, 0x42, 0xac, 0x11, 0, 2, 0x08, 0x00,
    ];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&[0x40, 0, 64, proto, 0, 0, 172, 17, 0, 2, 172, 17, 0, 3]);
    let check = vnet::rfc1071_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&check.to_be_bytes());
    f
}

fn segmentation() {
    let payload = 65_000;
    let mut f = eth_ipv4(6, 1, 20 + payload);
    f.extend_from_slice(&[
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 1, 0xf5,
    ]);
    let check = pseudo(&f[26..34], 6, 20 + payload);
    f.extend_from_slice(&check);
    f.extend_from_slice(&[0, 0]);
    f.extend((0..payload).map(|i| i as u8));
    let tso = VnetHdr {
        flags: VnetHdr::NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut scratch = Vec::new();
    report("segment: 64 KiB TCPv4 super-frame into 45", 2_000, |_| {
        let mut bytes = 0;
        vnet::segment(&tso, black_box(&f), &mut scratch, &mut |s| bytes += s.len()).unwrap();
        black_box(bytes);
    });
    let small = &f[..54 + 1448];
    let mut small = small.to_vec();
    small[16..18].copy_from_slice(&((20 + 20 + 1448) as u16).to_be_bytes());
    let plain = VnetHdr {
        gso_type: VnetHdr::GSO_NONE,
        ..tso
    };
    let mut copy = small.clone();
    report("complete checksum: 1502-byte TCPv4 frame", 200_000, |_| {
        copy.copy_from_slice(&small);
        let mut vnet = plain;
        vnet::complete_checksum(&mut vnet, black_box(&mut copy)).unwrap();
    });
}

fn coalescing() {
    let datagrams: Vec<(VnetHdr, Vec<u8>)> = (0..coalesce::MAX_RUN)
        .map(|i| {
            let len = 8 + 18;
            let mut f = eth_ipv4(17, i as u16, len);
            f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, len as u8]);
            let check = pseudo(&f[26..34], 17, len);
            f.extend_from_slice(&check);
            f.extend_from_slice(&[i as u8; 18]);
            let vnet = VnetHdr {
                flags: VnetHdr::NEEDS_CSUM,
                csum_start: 34,
                csum_offset: 6,
                ..VnetHdr::default()
            };
            (vnet, f)
        })
        .collect();
    let refs: Vec<(VnetHdr, &[u8])> = datagrams.iter().map(|(v, f)| (*v, &f[..])).collect();
    assert_eq!(coalesce::run_length(&refs), coalesce::MAX_RUN);
    report(
        "coalesce: measure a run of 64 UDP datagrams",
        100_000,
        |_| {
            black_box(coalesce::run_length(black_box(&refs)));
        },
    );
    let mut out = Vec::new();
    report("coalesce: merge a run of 64 UDP datagrams", 100_000, |_| {
        out.clear();
        black_box(coalesce::merge(black_box(&refs), &mut out));
    });
}

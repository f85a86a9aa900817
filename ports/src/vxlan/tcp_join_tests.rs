use super::*;
use crate::vnet;
use crate::wire::checksum::transport_checksum;

const FLOW_START: u32 = 1_000_000;
/// Timestamps, as Linux sends them on every segment.
const OPTIONS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9];

/// A wire segment with right checksums: IPv4 id `id`, sequence `seq`.
fn segment(id: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let tcp_len = tcp::MIN_HEADER_LEN + OPTIONS.len() + payload.len();
    let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    frame.extend_from_slice(&[0x45, 0]);
    frame.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(&[0x40, 0, 64, ip::TCP, 0, 0, 10, 50, 0, 2, 10, 50, 0, 3]);
    frame.extend_from_slice(&40_000u16.to_be_bytes());
    frame.extend_from_slice(&5_001u16.to_be_bytes());
    frame.extend_from_slice(&seq.to_be_bytes());
    frame.extend_from_slice(&77u32.to_be_bytes());
    frame.extend_from_slice(&[(((20 + OPTIONS.len()) / 4) << 4) as u8, flags, 0x01, 0xf5]);
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(&OPTIONS);
    frame.extend_from_slice(payload);
    ipv4::Packet::new_unchecked(&mut frame[ETH_LEN..]).fill_checksum();
    refill_tcp_checksum(&mut frame);
    frame
}

fn refill_tcp_checksum(frame: &mut [u8]) {
    let tcp_len = frame.len() - L4;
    let pseudo = pseudo_header_sum(&frame[26..34], ip::TCP, tcp_len);
    frame[L4 + 16..L4 + 18].fill(0);
    let sum = transport_checksum(&frame[L4..], u32::from(pseudo));
    frame[L4 + 16..L4 + 18].copy_from_slice(&sum.to_be_bytes());
}

/// A burst: `count` segments of `len` bytes of data, the last one pushed.
fn burst(count: usize, len: usize) -> Vec<(VnetHdr, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let payload: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            let flags = if i + 1 == count {
                tcp::flags::ACK | tcp::flags::PSH
            } else {
                tcp::flags::ACK
            };
            let seq = FLOW_START.wrapping_add((i * len) as u32);
            (VnetHdr::default(), segment(i as u16, seq, flags, &payload))
        })
        .collect()
}

fn refs(frames: &[(VnetHdr, Vec<u8>)]) -> Vec<(VnetHdr, &[u8])> {
    frames.iter().map(|(v, f)| (*v, f.as_slice())).collect()
}

/// Merges a run (all of it, or the test fails) and cuts it again as a
/// port without offloads would.
fn merge_and_cut(frames: &[(VnetHdr, &[u8])]) -> (VnetHdr, Vec<Vec<u8>>) {
    let mut out = vec![0; crate::MAX_FRAME_LEN];
    let joined = merge(frames, &mut out).expect("joined");
    assert_eq!(joined.segments, frames.len());
    let mut cut = Vec::new();
    vnet::segment(
        &joined.vnet,
        &out[..joined.len],
        &mut Vec::new(),
        &mut |s| cut.push(s.to_vec()),
    )
    .unwrap();
    (joined.vnet, cut)
}

/// How many of the leading frames are joined: as the receive lane does,
/// the run measured, then merged with the checksums checked.
fn joined(frames: &[(VnetHdr, &[u8])]) -> usize {
    let run = run_length(frames);
    let mut out = vec![0; crate::MAX_FRAME_LEN];
    merge(&frames[..run], &mut out).map_or(1, |joined| joined.segments)
}

#[test]
fn a_burst_joined_and_cut_again_gives_back_every_segment_byte_for_byte() {
    let frames = burst(12, 1398);
    let frames = refs(&frames);
    assert_eq!(run_length(&frames), 12);
    let (vnet, cut) = merge_and_cut(&frames);
    assert_eq!(vnet.gso_type, VnetHdr::GSO_TCPV4);
    assert_eq!(vnet.gso_size, 1398);
    assert_eq!(usize::from(vnet.hdr_len), L4 + 32);
    let sent: Vec<Vec<u8>> = frames.iter().map(|(_, f)| f.to_vec()).collect();
    assert_eq!(cut, sent);
}

#[test]
fn a_shorter_segment_ends_its_run_and_is_part_of_it() {
    let mut frames = burst(4, 1000);
    let last = &mut frames[3].1;
    last.truncate(last.len() - 300);
    last[L4 + 13] = tcp::flags::ACK;
    let total = (last.len() - ETH_LEN) as u16;
    last[16..18].copy_from_slice(&total.to_be_bytes());
    ipv4::Packet::new_unchecked(&mut last[ETH_LEN..]).fill_checksum();
    refill_tcp_checksum(last);
    frames.extend(burst(2, 1000));
    let refs = refs(&frames);
    assert_eq!(run_length(&refs), 4);
    let (_, cut) = merge_and_cut(&refs[..4]);
    assert_eq!(
        cut,
        frames[..4].iter().map(|f| f.1.clone()).collect::<Vec<_>>()
    );
}

#[test]
fn partial_checksums_join_and_come_out_completed() {
    let wire = burst(3, 500);
    let mut partial = wire.clone();
    for (vnet, frame) in &mut partial {
        let pseudo = pseudo_header_sum(&frame[26..34], ip::TCP, frame.len() - L4);
        frame[L4 + 16..L4 + 18].copy_from_slice(&pseudo.to_be_bytes());
        *vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            csum_start: L4 as u16,
            csum_offset: 16,
            ..VnetHdr::default()
        };
    }
    let partial = refs(&partial);
    assert_eq!(run_length(&partial), 3);
    let (_, cut) = merge_and_cut(&partial);
    assert_eq!(cut, wire.into_iter().map(|f| f.1).collect::<Vec<_>>());
}

#[test]
fn runs_stop_at_the_segment_limit_and_at_64_kib() {
    let small = burst(MAX_RUN + 10, 100);
    assert_eq!(run_length(&refs(&small)), MAX_RUN);
    // 1448-byte segments: 45 fit in 65535 - 52 bytes of data.
    let large = burst(50, 1448);
    let run = run_length(&refs(&large));
    assert_eq!(run, (65_535 - 52) / 1448);
    let mut out = vec![0; crate::MAX_FRAME_LEN];
    let joined = merge(&refs(&large)[..run], &mut out).unwrap();
    assert_eq!(joined.segments, run);
    assert!(joined.len - ETH_LEN <= 65_535);
    // A slot too short for the run takes the segments that fit, and
    // none when the first two do not.
    let shorter = merge(&refs(&large)[..run], &mut out[..joined.len - 1]).unwrap();
    assert_eq!(shorter.segments, run - 1);
    assert_eq!(merge(&refs(&large)[..run], &mut out[..66 + 1448]), None);
}

/// Each change makes the third segment of a burst unjoinable: the run
/// stops before it, and every segment still reaches the switch unchanged.
#[test]
fn a_segment_that_segmentation_would_not_rebuild_ends_the_run_before_it() {
    type Damage = fn(&mut Vec<u8>, &mut VnetHdr);
    let changes: Vec<(&str, Damage)> = vec![
        ("sequence gap", |f, _| {
            let seq = u32::from_be_bytes(f[38..42].try_into().unwrap()) + 1;
            f[38..42].copy_from_slice(&seq.to_be_bytes());
        }),
        ("IPv4 id out of order", |f, _| f[19] ^= 1),
        ("another ack", |f, _| f[45] ^= 1),
        ("another window", |f, _| f[49] ^= 1),
        ("other options", |f, _| f[L4 + 27] ^= 1),
        ("FIN", |f, _| f[L4 + 13] |= tcp::flags::FIN),
        ("SYN", |f, _| f[L4 + 13] |= tcp::flags::SYN),
        ("RST", |f, _| f[L4 + 13] |= tcp::flags::RST),
        ("URG", |f, _| f[L4 + 13] |= tcp::flags::URG),
        ("ECE", |f, _| f[L4 + 13] |= tcp::flags::ECE),
        ("CWR", |f, _| f[L4 + 13] |= tcp::flags::CWR),
        ("urgent pointer", |f, _| f[L4 + 19] = 1),
        ("another port", |f, _| f[L4 + 1] ^= 1),
        ("another TTL", |f, _| f[22] -= 1),
        ("another TOS", |f, _| f[15] = 4),
        ("no DF", |f, _| f[20] = 0),
        ("another source MAC", |f, _| f[11] ^= 1),
        ("another address", |f, _| f[29] ^= 1),
        ("a fragment", |f, _| f[20] |= 0x20),
        ("a longer segment", |f, _| {
            f.extend_from_slice(&[1; 10]);
            let total = (f.len() - ETH_LEN) as u16;
            f[16..18].copy_from_slice(&total.to_be_bytes());
        }),
        ("Ethernet padding", |f, _| f.extend_from_slice(&[0; 6])),
        ("no data", |f, _| {
            f.truncate(L4 + 32);
            f[16..18].copy_from_slice(&((20 + 32) as u16).to_be_bytes());
        }),
        ("a GSO header", |_, v| v.gso_type = VnetHdr::GSO_TCPV4),
        ("a partial checksum elsewhere", |_, v| {
            *v = VnetHdr {
                flags: VnetHdr::NEEDS_CSUM,
                csum_start: L4 as u16,
                csum_offset: 6,
                ..VnetHdr::default()
            }
        }),
        ("not IPv4", |f, _| f[12] = 0x86),
    ];
    for (name, damage) in changes {
        let mut frames = burst(5, 800);
        let (vnet, frame) = &mut frames[2];
        damage(frame, vnet);
        let checksum_damage = name == "Ethernet padding";
        if !checksum_damage && frame.len() > L4 + 20 && frame[12..14] == [0x08, 0x00] {
            // Right checksums, so only the change itself can stop the run.
            ipv4::Packet::new_unchecked(&mut frame[ETH_LEN..]).fill_checksum();
            refill_tcp_checksum(frame);
        }
        let refs = refs(&frames);
        assert_eq!(run_length(&refs), 2, "{name}");
        assert_eq!(joined(&refs), 2, "{name}");
        assert_eq!(run_length(&refs[2..]), 1, "{name}: it stays alone");
    }
    // Damaged checksums (the IPv4 header's, the TCP field, the data),
    // left as they came: the run ends before them, they stay alone, and
    // so does a damaged first segment.
    for field in [24, L4 + 16, L4 + 40] {
        let mut frames = burst(5, 800);
        frames[2].1[field] ^= 0x40;
        let refs = refs(&frames);
        assert_eq!(joined(&refs), 2, "byte {field}");
        assert_eq!(joined(&refs[2..]), 1, "byte {field}: it stays alone");
        let mut out = vec![0; crate::MAX_FRAME_LEN];
        assert_eq!(merge(&refs[2..], &mut out), None, "byte {field}");
        assert_eq!(joined(&refs[3..]), 2, "byte {field}: the next ones join");
    }
}

#[test]
fn a_pushed_segment_ends_its_run_and_a_pushed_first_stays_alone() {
    let mut frames = burst(3, 600);
    frames.extend(burst(3, 600).into_iter().map(|(v, mut f)| {
        // The next burst's sequence and ids, so only PSH splits them.
        let seq = u32::from_be_bytes(f[38..42].try_into().unwrap()) + 1800;
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        let id = u16::from_be_bytes([f[18], f[19]]) + 3;
        f[18..20].copy_from_slice(&id.to_be_bytes());
        ipv4::Packet::new_unchecked(&mut f[ETH_LEN..]).fill_checksum();
        refill_tcp_checksum(&mut f);
        (v, f)
    }));
    let refs = refs(&frames);
    assert_eq!(run_length(&refs), 3);
    assert_eq!(run_length(&refs[2..]), 1);
}

#[test]
fn random_damage_never_panics_and_accepted_runs_round_trip() {
    let mut state = 0x2545_f491_u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    for _ in 0..300 {
        let mut frames = burst(4, 300);
        let which = next() as usize % 4;
        let frame = &mut frames[which].1;
        let at = next() as usize % frame.len();
        frame[at] = next() as u8;
        if next() % 3 == 0 {
            frame.truncate(next() as usize % frame.len());
        }
        let refs = refs(&frames);
        let run = joined(&refs);
        assert!((1..=4).contains(&run));
        if run > 1 {
            let (_, cut) = merge_and_cut(&refs[..run]);
            let sent: Vec<Vec<u8>> = refs[..run].iter().map(|(_, f)| f.to_vec()).collect();
            assert_eq!(cut, sent);
        }
    }
}

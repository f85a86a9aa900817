//! The reassembly table alone, on fragments built in code and a fake clock.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use smoltcp::wire::Ipv4Packet;

use super::*;
use crate::services::frames::fragments;
use crate::services::udp_packet;

const SRC: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn at(secs: u64) -> Instant {
    Instant::from_secs(secs)
}

/// A UDP datagram of `len` payload bytes, and its fragments at `mtu`.
fn datagram(len: usize, mtu: usize, ident: u16) -> (Vec<u8>, Vec<Vec<u8>>) {
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let packet = udp_packet(
        SocketAddrV4::new(SRC, 40000),
        SocketAddrV4::new(DST, 7),
        &payload,
    )
    .unwrap();
    let pieces = fragments(&packet, mtu, ident).unwrap();
    (packet, pieces)
}

/// `whole` is `original` put back together: same payload, a valid header
/// without fragment fields.
fn assert_same_datagram(whole: &[u8], original: &[u8]) {
    let ip = Ipv4Packet::new_checked(whole).unwrap();
    assert!(ip.verify_checksum());
    assert!(!ip.more_frags());
    assert_eq!(ip.frag_offset(), 0);
    assert_eq!(usize::from(ip.total_len()), original.len());
    assert_eq!(whole[20..], original[20..]);
}

#[test]
fn fragments_in_order_make_the_datagram_again() {
    let mut table = Reassembler::new(ReassemblyLimits::default());
    let (packet, pieces) = datagram(4000, 1500, 1);
    assert_eq!(pieces.len(), 3);
    assert_eq!(table.fragment(at(0), &pieces[0]), None);
    assert_eq!(table.fragment(at(0), &pieces[1]), None);
    assert_eq!((table.len(), table.bytes() > 0), (1, true));
    let whole = table.fragment(at(0), &pieces[2]).expect("complete");
    assert_same_datagram(&whole, &packet);
    assert_eq!(table.stats().reassembled, 1);
    assert_eq!((table.len(), table.bytes()), (0, 0), "nothing left held");
}

#[test]
fn fragments_out_of_order_make_the_datagram_again() {
    let mut table = Reassembler::new(ReassemblyLimits::default());
    let (packet, pieces) = datagram(6000, 1500, 2);
    assert_eq!(pieces.len(), 5);
    // The last first (it fixes the length), the first last (the header).
    for index in [4, 2, 3, 1] {
        assert_eq!(table.fragment(at(0), &pieces[index]), None);
    }
    let whole = table.fragment(at(0), &pieces[0]).expect("complete");
    assert_same_datagram(&whole, &packet);
    assert_eq!(table.bytes(), 0);
}

#[test]
fn an_exact_duplicate_is_ignored() {
    let mut table = Reassembler::new(ReassemblyLimits::default());
    let (packet, pieces) = datagram(4000, 1500, 3);
    assert_eq!(table.fragment(at(0), &pieces[1]), None);
    let held = table.bytes();
    assert_eq!(table.fragment(at(0), &pieces[1]), None);
    assert_eq!(table.bytes(), held, "the copy is not held twice");
    assert_eq!(table.stats().duplicates, 1);
    assert_eq!(table.fragment(at(0), &pieces[2]), None);
    assert_eq!(table.fragment(at(0), &pieces[2]), None, "the last one too");
    assert_eq!(table.stats().duplicates, 2);
    let whole = table.fragment(at(0), &pieces[0]).expect("complete");
    assert_same_datagram(&whole, &packet);
    assert_eq!(table.stats().overlaps, 0);
}

/// A fragment covering `start..start + len` of the first datagram's
/// payload, with the bytes given, MF as told.
fn piece_at(template: &[u8], start: usize, data: &[u8], more: bool) -> Vec<u8> {
    let mut piece = template[..20].to_vec();
    piece.extend_from_slice(data);
    let mut ip = Ipv4Packet::new_unchecked(&mut piece[..]);
    ip.set_total_len(u16::try_from(20 + data.len()).unwrap());
    ip.set_frag_offset(u16::try_from(start).unwrap());
    ip.set_more_frags(more);
    ip.fill_checksum();
    piece
}

#[test]
fn overlapping_fragments_throw_the_datagram_away() {
    let (packet, pieces) = datagram(4000, 1500, 4);
    // A piece straddling the first two (1480..): starts 8 bytes early.
    let straddling = piece_at(&pieces[1], 1472, &[0xee; 1480], true);
    // The same place as a held piece with other bytes: no duplicate.
    let other_bytes = piece_at(&pieces[1], 1480, &[0xee; 1480], true);
    for intruder in [straddling, other_bytes] {
        let mut table = Reassembler::new(ReassemblyLimits::default());
        assert_eq!(table.fragment(at(0), &pieces[0]), None);
        assert_eq!(table.fragment(at(0), &pieces[1]), None);
        assert_eq!(table.fragment(at(0), &intruder), None);
        assert_eq!(table.stats().overlaps, 1);
        assert_eq!((table.len(), table.bytes()), (0, 0), "all thrown away");
        // The rest of the datagram does not complete it.
        assert_eq!(table.fragment(at(0), &pieces[2]), None);
        assert_eq!(table.stats().reassembled, 0);
    }
    // Two different ends (two "last" fragments) contradict each other.
    let mut table = Reassembler::new(ReassemblyLimits::default());
    assert_eq!(table.fragment(at(0), &pieces[2]), None);
    let early_end = piece_at(&pieces[1], 1480, &[1; 16], false);
    assert_eq!(table.fragment(at(0), &early_end), None);
    assert_eq!(table.stats().overlaps, 1);
    assert!(table.is_empty());
    // A piece beyond the known end.
    let mut table = Reassembler::new(ReassemblyLimits::default());
    assert_eq!(table.fragment(at(0), &pieces[2]), None);
    let beyond = piece_at(&pieces[2], 8000, &[1; 16], true);
    assert_eq!(table.fragment(at(0), &beyond), None);
    assert_eq!(table.stats().overlaps, 1);
    let _ = packet;
}

#[test]
fn an_incomplete_datagram_is_forgotten_after_the_timeout() {
    let mut table = Reassembler::new(ReassemblyLimits::default());
    let (packet, pieces) = datagram(4000, 1500, 5);
    assert_eq!(table.fragment(at(0), &pieces[0]), None);
    assert_eq!(table.fragment(at(29), &pieces[1]), None);
    // 30 s after the first fragment: gone, the last one starts afresh.
    assert_eq!(table.fragment(at(30), &pieces[2]), None);
    assert_eq!(table.stats().timed_out, 1);
    assert_eq!(table.len(), 1);
    table.expire(at(60));
    assert_eq!(table.stats().timed_out, 2);
    assert_eq!((table.len(), table.bytes()), (0, 0));
    // Within the timeout, a slow sender is fine.
    for (index, piece) in pieces.iter().enumerate() {
        let whole = table.fragment(at(100 + 10 * index as u64), piece);
        assert_eq!(whole.is_some(), index == 2);
        if let Some(whole) = whole {
            assert_same_datagram(&whole, &packet);
        }
    }
}

#[test]
fn a_timed_out_datagram_leaves_a_quote_only_if_its_first_fragment_came() {
    let mut table = Reassembler::new(ReassemblyLimits::default());
    let (_, with_first) = datagram(4000, 1500, 30);
    let (_, without_first) = datagram(4000, 1500, 31);
    assert_eq!(table.next_deadline(), None);
    assert_eq!(table.fragment(at(5), &with_first[0]), None);
    assert_eq!(table.fragment(at(6), &without_first[1]), None);
    assert_eq!(table.next_deadline(), Some(at(35)), "the earliest");
    table.expire(at(35));
    assert_eq!(table.next_deadline(), Some(at(36)));
    table.expire(at(36));
    let quotes = table.take_timed_out();
    assert_eq!(quotes, vec![with_first[0][..28].to_vec()]);
    assert!(table.take_timed_out().is_empty(), "taken once");
    assert_eq!(table.stats().timed_out, 2);
}

#[test]
fn a_datagram_longer_than_ipv4_allows_is_refused() {
    let mut table = Reassembler::new(ReassemblyLimits::default());
    let (_, pieces) = datagram(4000, 1500, 6);
    assert_eq!(table.fragment(at(0), &pieces[0]), None);
    // The largest offset (65,528) with 16 bytes: past 65,535 with the header.
    let past = piece_at(&pieces[0], 65_528, &[0; 16], false);
    assert_eq!(table.fragment(at(0), &past), None);
    assert_eq!(table.stats().too_big, 1);
    assert!(table.is_empty(), "the datagram is thrown away");
    // Fragments whose sizes cannot be: empty, or not a multiple of 8
    // before the last.
    let odd = piece_at(&pieces[0], 0, &[0; 13], true);
    let empty = piece_at(&pieces[0], 8, &[], true);
    assert_eq!(table.fragment(at(0), &odd), None);
    assert_eq!(table.fragment(at(0), &empty), None);
    assert_eq!(table.stats().malformed, 2);
    assert!(table.is_empty());
    // Not IPv4 at all: nothing.
    assert_eq!(table.fragment(at(0), &[0u8; 10]), None);
}

#[test]
fn the_table_refuses_fragments_beyond_its_limits() {
    let limits = ReassemblyLimits {
        max_datagrams: 2,
        max_bytes: 4400,
        max_datagrams_per_source: 2,
        max_bytes_per_source: 4400,
        timeout: Duration::from_secs(30),
    };
    let mut table = Reassembler::new(limits);
    let (_, first) = datagram(4000, 1500, 10);
    let (_, second) = datagram(4000, 1500, 11);
    let (packet, third) = datagram(4000, 1500, 12);
    assert_eq!(table.fragment(at(0), &first[0]), None);
    assert_eq!(table.fragment(at(0), &second[0]), None);
    // A third datagram: no room.
    assert_eq!(table.fragment(at(0), &third[0]), None);
    assert_eq!(table.stats().over_limits, 1);
    assert_eq!(table.len(), 2);
    // The bytes: 3,128 held (two pieces of 1,500 and their overhead), a
    // 1,480-byte piece would pass 4,400.
    assert_eq!(table.bytes(), 2 * (PIECE_OVERHEAD + 1500));
    assert_eq!(table.fragment(at(0), &first[1]), None);
    assert_eq!(table.stats().over_limits, 2);
    assert!(table.bytes() <= limits.max_bytes);
    // Room again once the others time out.
    for piece in &third[..2] {
        assert_eq!(table.fragment(at(30), piece), None);
    }
    assert_eq!(table.stats().timed_out, 2);
    let whole = table.fragment(at(30), &third[2]).expect("complete");
    assert_same_datagram(&whole, &packet);
}

/// `packet` as if sent by `src`.
fn from_source(packet: &[u8], src: Ipv4Addr) -> Vec<u8> {
    let mut packet = packet.to_vec();
    let mut ip = Ipv4Packet::new_unchecked(&mut packet[..]);
    ip.set_src_addr(src);
    ip.fill_checksum();
    packet
}

#[test]
fn one_source_cannot_take_the_table_from_the_others() {
    let limits = ReassemblyLimits {
        max_datagrams: 8,
        max_bytes: 1 << 20,
        max_datagrams_per_source: 2,
        // A 4,000-byte datagram holds 4,028 bytes and three pieces' overhead
        // (4,220) as its last piece comes.
        max_bytes_per_source: 4300,
        timeout: Duration::from_secs(30),
    };
    let mut table = Reassembler::new(limits);
    let other = Ipv4Addr::new(172, 17, 0, 3);
    // The first source's first fragments of three datagrams: the third
    // is past its share of datagrams.
    let sent: Vec<_> = (20..23).map(|ident| datagram(4000, 1500, ident)).collect();
    assert_eq!(table.fragment(at(0), &sent[0].1[0]), None);
    assert_eq!(table.fragment(at(0), &sent[1].1[0]), None);
    assert_eq!(table.fragment(at(0), &sent[2].1[0]), None);
    assert_eq!(table.stats().over_limits, 1);
    // Its bytes: 3,128 held, another 1,544 would pass its 4,300.
    assert_eq!(table.fragment(at(0), &sent[0].1[1]), None);
    assert_eq!(table.stats().over_limits, 2);
    // Another source still gets a datagram through, whole.
    let (packet, pieces) = datagram(4000, 1500, 20);
    let mut whole = None;
    for piece in &pieces {
        whole = table.fragment(at(0), &from_source(piece, other));
    }
    assert_same_datagram(&whole.expect("complete"), &from_source(&packet, other));
    // The first source's share comes back as its datagrams leave.
    assert_eq!(table.fragment(at(0), &sent[1].1[1]), None);
    assert_eq!(table.stats().over_limits, 3, "still full of bytes");
    table.expire(at(30));
    assert!(table.is_empty());
    assert_eq!(table.bytes(), 0);
    for (index, piece) in sent[2].1.iter().enumerate() {
        assert_eq!(table.fragment(at(31), piece).is_some(), index == 2);
    }
    assert!(table.sources.is_empty(), "no share left behind");
}

#[test]
fn datagrams_are_told_apart_by_source_destination_protocol_and_ident() {
    let mut table = Reassembler::new(ReassemblyLimits::default());
    let (a, a_pieces) = datagram(2900, 1500, 7);
    let (b, b_pieces) = datagram(2900, 1500, 8);
    assert_eq!(table.fragment(at(0), &a_pieces[0]), None);
    assert_eq!(table.fragment(at(0), &b_pieces[1]), None);
    // The same ident from another source is another datagram.
    let mut stranger = a_pieces[1].clone();
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut stranger[..]);
        ip.set_src_addr(Ipv4Addr::new(172, 17, 0, 3));
        ip.fill_checksum();
    }
    assert_eq!(table.fragment(at(0), &stranger), None);
    assert_eq!(table.len(), 3);
    assert_same_datagram(&table.fragment(at(0), &a_pieces[1]).unwrap(), &a);
    assert_same_datagram(&table.fragment(at(0), &b_pieces[0]).unwrap(), &b);
    assert_eq!(table.len(), 1);
}

#[test]
fn the_frame_path_checks_fragments_by_their_bytes() {
    let (packet, pieces) = datagram(4000, 1500, 9);
    let frame = |ip: &[u8]| ethernet(MacAddr([2; 6]), MacAddr([4; 6]), ip);
    assert!(!is_ipv4_fragment(&frame(&packet)));
    assert!(is_ipv4_fragment(&frame(&pieces[0])), "MF");
    assert!(is_ipv4_fragment(&frame(&pieces[2])), "an offset");
    let mut arp = frame(&pieces[0]);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert!(!is_ipv4_fragment(&arp));
    assert!(!is_ipv4_fragment(&[0u8; 14]));
}

#[test]
fn any_sequence_of_fragments_keeps_the_counts_and_the_limits() {
    let limits = ReassemblyLimits {
        max_datagrams: 6,
        max_bytes: 12_000,
        max_datagrams_per_source: 3,
        max_bytes_per_source: 6_000,
        timeout: Duration::from_secs(30),
    };
    let (_, pieces) = datagram(4000, 1500, 0);
    let mut seed: u64 = 0x5eed;
    let mut next = move |bound: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % bound
    };
    for round in 0..200 {
        let mut table = Reassembler::new(limits);
        for step in 0..60u64 {
            // A fragment of one of a few datagrams and sources, cut and
            // placed at random (multiples of 8 mostly, not always).
            let len = 8 * (1 + next(40) as usize) + if next(10) == 0 { 3 } else { 0 };
            let start = 8 * next(200) as usize;
            let mut piece = piece_at(&pieces[0], start, &vec![next(256) as u8; len], next(3) != 0);
            {
                let mut ip = Ipv4Packet::new_unchecked(&mut piece[..]);
                ip.set_ident(next(4) as u16);
                ip.set_src_addr(Ipv4Addr::new(172, 17, 0, 2 + next(3) as u8));
                ip.fill_checksum();
            }
            let _ = table.fragment(at(step / 4 + round % 3), &piece);
            let held: usize = table.partials.values().map(|p| p.bytes).sum();
            assert_eq!(table.bytes(), held, "round {round} step {step}");
            assert!(table.bytes() <= limits.max_bytes);
            assert!(table.len() <= limits.max_datagrams);
            for (src, share) in &table.sources {
                let mine = table.partials.iter().filter(|(k, _)| k.src == *src);
                let (count, bytes) = mine.fold((0, 0), |(c, b), (_, p)| (c + 1, b + p.bytes));
                assert_eq!((share.datagrams, share.bytes), (count, bytes));
                assert!(share.datagrams <= limits.max_datagrams_per_source);
                assert!(share.bytes <= limits.max_bytes_per_source);
            }
        }
        table.expire(at(1000));
        assert!(table.is_empty() && table.sources.is_empty() && table.bytes() == 0);
    }
}

//! Checksum math and completing partial checksums for ports that
//! cannot take the offload header.

use super::*;

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

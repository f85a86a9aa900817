//! Malformed, truncated and randomly damaged frames: refused with an
//! error, never a panic; random good super-frames always come out right.

use super::*;

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

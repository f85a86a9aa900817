//! Software segmentation: TSO, USO and UFO super-frames cut as the
//! kernel cuts them, with their headers, options and tags.

use super::*;

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

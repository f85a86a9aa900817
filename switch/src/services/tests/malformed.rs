//! Damaged, invalid and out-of-window segments: dropped and counted, never
//! a panic.

use super::*;

/// A segment from the container to OUTSIDE:443 with everything settable.
fn segment(src_port: u16, seq: u32, control: TcpControl, payload: &[u8], mss: bool) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port,
        dst_port: 443,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: (control != TcpControl::Syn).then_some(TcpSeqNumber(1)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: mss.then_some(1460),
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload,
    };
    let packet = crate::test_frames::ipv4_tcp(HOST, OUTSIDE, &tcp);
    from_host(&packet)
}

/// Changes a frame's TCP header with `edit`, then makes its checksums
/// right again (so only the edit is wrong).
fn edited(mut frame: Vec<u8>, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
    edit(ip.payload_mut());
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    tcp.fill_checksum(&HOST.into(), &OUTSIDE.into());
    frame
}

/// An open flow from port 41100 whose SYN had sequence number 1000.
fn open_flow(s: &mut Services) -> FlowKey {
    let key = FlowKey::tcp(
        SocketAddrV4::new(HOST, 41100),
        SocketAddrV4::new(OUTSIDE, 443),
    );
    s.frame(
        at(0),
        &segment(41100, 1000, TcpControl::Syn, b"", true),
        0,
        &mut Vec::new(),
    );
    s.host(at(1), key, HostEvent::Connected, &mut Vec::new());
    key
}

#[test]
fn bad_checksums_and_broken_headers_are_dropped_and_counted() {
    let mut s = services(true);
    open_flow(&mut s);
    let data = segment(41100, 1001, TcpControl::Psh, b"hello", false);
    assert_eq!(s.frame(at(1), &data, 0, &mut Vec::new()), Verdict::ToStack);
    // A bad TCP checksum.
    let mut bad = data.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(s.frame(at(1), &bad, 0, &mut Vec::new()), Verdict::Dropped);
    // A data offset below the header's 5 words, and one past the segment.
    for words in [2u8, 15] {
        let broken = edited(data.clone(), |tcp| tcp[12] = words << 4);
        assert_eq!(
            s.frame(at(1), &broken, 0, &mut Vec::new()),
            Verdict::Dropped
        );
    }
    assert_eq!(s.stats().malformed, 3);
}

#[test]
fn invalid_flags_options_and_ports_are_dropped_and_counted() {
    let mut s = services(true);
    open_flow(&mut s);
    let syn_fin = edited(segment(41100, 1001, TcpControl::Syn, b"", false), |tcp| {
        tcp[13] |= 0x01
    });
    let syn_rst = edited(segment(41100, 1001, TcpControl::Syn, b"", false), |tcp| {
        tcp[13] |= 0x04
    });
    // The MSS option announced 3 bytes long (it is 4).
    let bad_option = edited(segment(41100, 1001, TcpControl::Syn, b"", true), |tcp| {
        tcp[21] = 3
    });
    // An option running past the header.
    let long_option = edited(segment(41100, 1001, TcpControl::Syn, b"", true), |tcp| {
        tcp[21] = 40
    });
    let port_zero = edited(segment(41100, 1001, TcpControl::Psh, b"x", false), |tcp| {
        tcp[2..4].copy_from_slice(&[0, 0])
    });
    for frame in [&syn_fin, &syn_rst, &bad_option, &long_option, &port_zero] {
        assert_eq!(s.frame(at(1), frame, 0, &mut Vec::new()), Verdict::Dropped);
    }
    assert_eq!(s.stats().invalid_tcp, 5);
    assert_eq!(s.flows().len(), 1, "no flow opened by any of them");
}

#[test]
fn out_of_window_segments_are_dropped_and_counted_and_the_stream_goes_on() {
    let mut s = services(true);
    let key = open_flow(&mut s);
    let in_window = segment(41100, 1001, TcpControl::Psh, b"hello", false);
    assert_eq!(
        s.frame(at(1), &in_window, 0, &mut Vec::new()),
        Verdict::ToStack
    );
    let far = 1006 + MAX_STACK_WINDOW + 1;
    let ahead = segment(41100, far, TcpControl::Psh, b"blind", false);
    let behind = segment(
        41100,
        1001u32.wrapping_sub(2 * MAX_STACK_WINDOW),
        TcpControl::Psh,
        b"stale",
        false,
    );
    let reset = segment(41100, far, TcpControl::Rst, b"", false);
    for frame in [&ahead, &behind, &reset] {
        assert_eq!(s.frame(at(1), frame, 0, &mut Vec::new()), Verdict::Dropped);
    }
    assert_eq!(s.stats().out_of_window, 3);
    let next = segment(41100, 1006, TcpControl::Psh, b"world", false);
    assert_eq!(s.frame(at(1), &next, 0, &mut Vec::new()), Verdict::ToStack);
    // The flow's record goes with the flow.
    s.tcp(at(2), key, TcpEvent::ContainerReset, &mut Vec::new());
    assert_eq!(s.windows.len(), 0);
}

#[test]
fn any_damage_to_a_segment_gets_a_verdict_never_a_panic() {
    let mut s = services(true);
    open_flow(&mut s);
    let data = segment(41100, 1001, TcpControl::Psh, b"payload", true);
    for at_byte in 0..data.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut damaged = data.clone();
            damaged[at_byte] ^= flip;
            s.frame(at(1), &damaged, 0, &mut Vec::new());
            // The same damage with the checksums made right again.
            if at_byte >= 14 + 20 {
                let fixed = edited(damaged, |_| {});
                s.frame(at(1), &fixed, 0, &mut Vec::new());
            }
        }
    }
    for len in 0..data.len() {
        s.frame(at(1), &data[..len], 0, &mut Vec::new());
    }
    let stats = s.stats();
    assert!(stats.malformed + stats.invalid_tcp + stats.out_of_window > 0);
}

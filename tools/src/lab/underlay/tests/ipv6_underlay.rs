//! The lab's tunnel on an IPv6 underlay: the outer headers it writes, what
//! it takes, and what it refuses (the other IP version, truncated headers,
//! UDP without a checksum).

use super::*;

const LOCAL6: &str = "[fd99::1]:4789";
const B6: &str = "[fd99::2]:4789";
const C6: &str = "[fd99::3]:8472";

fn tunnel6() -> LabTunnel {
    tunnel_at(LOCAL6, &[B6, C6])
}

#[test]
fn a_flood_leaves_in_ipv6_headers_as_a_linux_udp_socket_writes_them() {
    let tunnel = tunnel6();
    let frame = inner([2, 0, 0, 0, 0, 0xa], [0xff; 6]);
    let frames = sent_frames(&tunnel, &frame);
    assert_eq!(frames.len(), 2, "one datagram per member");
    for (underlay, member) in frames.iter().zip([B6, C6]) {
        assert_eq!(&underlay[..6], &UNDERLAY_NEXT_HOP_MAC.0);
        assert_eq!(&underlay[6..12], &UNDERLAY_LOCAL_MAC.0);
        assert_eq!(&underlay[12..14], &[0x86, 0xdd]);
        let ip = ipv6::Packet::new_checked(&underlay[14..]).unwrap();
        assert_eq!((ip.traffic_class(), ip.flow_label()), (0, 0));
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.next_header(), 17, "UDP, no extension header");
        assert_eq!(usize::from(ip.payload_len()), underlay.len() - 14 - 40);
        assert_eq!(ip.src_addr(), endpoint(LOCAL6).ip());
        assert_eq!(ip.dst_addr(), endpoint(member).ip());

        // The UDP checksum, as another implementation computes it.
        let packet = etherparse::SlicedPacket::from_ethernet(underlay).unwrap();
        let Some(etherparse::TransportSlice::Udp(udp)) = packet.transport else {
            panic!("not UDP");
        };
        assert_eq!(
            (udp.source_port(), udp.destination_port()),
            (4789, endpoint(member).port())
        );
        let want = udp
            .to_header()
            .calc_checksum_ipv6_raw(
                ip.src_addr().octets(),
                ip.dst_addr().octets(),
                udp.payload(),
            )
            .unwrap();
        assert_ne!(udp.checksum(), 0);
        assert_eq!(udp.checksum(), want);
        assert_eq!(&udp.payload()[..8], &vxlan::header(42));
        assert_eq!(&udp.payload()[8..], &frame[..]);
    }
    let report = tunnel.report(Instant::from_secs(1));
    assert_eq!(report.stats.tx_datagrams, 2);
    assert_eq!(report.local, endpoint(LOCAL6));
}

#[test]
fn a_mac_heard_over_ipv6_is_learned_behind_its_member_and_answered_there() {
    let tunnel = tunnel6();
    let remote = [2, 0, 0, 0, 0, 0xb];
    let frame = inner(remote, [0xff; 6]);
    let stranger = from_member_to("[fd99::9]:4789", LOCAL6, 42, &frame);
    assert_eq!(
        tunnel
            .receive(&stranger, Instant::from_secs(1))
            .unwrap_err()
            .to_string(),
        "vxlan from [fd99::9]:4789 len 87: dropped by the tunnel (not-member)"
    );
    // The member sends from a flow-hash source port, as the kernel does;
    // it is known by its address, and answered where it listens.
    let underlay = from_member_to("[fd99::2]:51000", LOCAL6, 42, &frame);
    let range = tunnel.receive(&underlay, Instant::from_secs(1)).unwrap();
    assert_eq!(&underlay[range], &frame[..]);
    let reply = sent(&tunnel, &inner([2, 0, 0, 0, 0, 0xa], remote));
    assert_eq!(reply.len(), 1);
    assert_eq!((reply[0].0, reply[0].1), (endpoint(LOCAL6), endpoint(B6)));
    let report = tunnel.report(Instant::from_secs(1));
    assert_eq!(report.entries.len(), 1);
    assert_eq!(report.entries[0].endpoint, endpoint(B6));
}

#[test]
fn the_other_ip_version_is_not_for_the_socket() {
    let frame = inner([2, 0, 0, 0, 0, 0xb], [0xff; 6]);
    let now = Instant::from_secs(1);
    // IPv6 to an IPv4 endpoint, and IPv4 to an IPv6 one.
    let v4 = tunnel();
    let v6_capture = from_member_to(B6, LOCAL6, 42, &frame);
    assert_eq!(
        v4.receive(&v6_capture, now).unwrap_err().to_string(),
        "underlay frame len 87: dropped by the tunnel (not-vxlan)"
    );
    let v6 = tunnel6();
    let v4_capture = from_member(B, 42, &frame);
    assert_eq!(v6.receive(&v4_capture, now).unwrap_err().reason, NOT_VXLAN);
    // Nothing is written between versions.
    let mut out = vec![1, 2, 3];
    assert!(!underlay_frame(
        &mut out,
        endpoint(LOCAL6),
        endpoint(B),
        &vxlan::header(42),
        &frame
    ));
    assert!(out.is_empty());
}

#[test]
fn truncated_unchecked_or_extended_ipv6_datagrams_are_counted_not_vxlan() {
    let tunnel = tunnel6();
    let frame = inner([2, 0, 0, 0, 0, 0xb], [0xff; 6]);
    let good = from_member_to(B6, LOCAL6, 42, &frame);
    let now = Instant::from_secs(1);
    let mut refused = Vec::new();
    // The outer IPv6 header cut short, then the UDP header.
    refused.push(good[..14 + 39].to_vec());
    refused.push(good[..14 + 40 + 7].to_vec());
    // The payload length longer than the frame.
    let mut long = good.clone();
    long[14 + 4..14 + 6].copy_from_slice(&2000u16.to_be_bytes());
    refused.push(long);
    // No UDP checksum: a Linux socket drops it over IPv6.
    let mut zero = good.clone();
    zero[14 + 40 + 6..14 + 40 + 8].copy_from_slice(&[0, 0]);
    refused.push(zero);
    // A wrong one.
    let mut wrong = good.clone();
    *wrong.last_mut().unwrap() ^= 1;
    refused.push(wrong);
    // A hop-by-hop options header in front of UDP.
    let mut extended = good.clone();
    extended[14 + 6] = 0;
    refused.push(extended);
    // Another destination address.
    refused.push(from_member_to(B6, "[fd99::9]:4789", 42, &frame));
    for underlay in &refused {
        let err = tunnel.receive(underlay, now).unwrap_err();
        assert_eq!(err.reason, NOT_VXLAN, "{underlay:02x?}");
        assert_eq!(err.source, None);
    }
    let report = tunnel.report(now);
    assert_eq!(
        report.rx_drops.get(NOT_VXLAN),
        Some(&(refused.len() as u64))
    );
    assert!(report.entries.is_empty());
    assert!(
        tunnel.receive(&good, now).is_ok(),
        "the untouched one is taken"
    );
}

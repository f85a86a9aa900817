//! Every view against known-good frames and every truncation of them.

use std::net::Ipv4Addr;

use super::*;

/// A known-good header (with what it carries) and how to check it.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// The shortest prefix that parses: every shorter one must be refused.
    whole: usize,
    check: fn(&[u8]) -> Result<()>,
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A VLAN-tagged IPv4/UDP frame: 02:42:ac:11:00:02 to 02:42:ac:11:00:03,
/// VLAN 100, 172.17.0.2:40000 to 172.17.0.3:5201, 4 bytes of payload.
fn tagged_udp_frame() -> Vec<u8> {
    let mut f = hex("0242ac110003 0242ac110002 8100 0064 0800");
    f.extend(hex("4500 0020 0001 4000 4011 0000 ac110002 ac110003"));
    f.extend(hex("9c40 1451 000c 0000 01020304"));
    let mut ip = ipv4::Packet::new_unchecked(&mut f[18..]);
    ip.fill_checksum();
    f
}

/// An IPv6/TCP frame with one destination-options header and a TCP option.
fn ipv6_tcp_frame() -> Vec<u8> {
    let mut f = hex("0242ac110003 0242ac110002 86dd");
    f.extend(hex("60012345 0020 3c 40"));
    f.extend(hex(
        "fd000000000000000000000000000002 fd000000000000000000000000000003",
    ));
    f.extend(hex("0600 0104 00000000"));
    f.extend(hex(
        "9c40 0050 00000001 00000002 6018 01f5 0000 0000 01010100",
    ));
    f
}

fn cases() -> Vec<Case> {
    let udp_frame = tagged_udp_frame();
    let tcp_frame = ipv6_tcp_frame();
    let ipv4 = udp_frame[18..].to_vec();
    let udp = udp_frame[38..].to_vec();
    let ipv6 = tcp_frame[14..].to_vec();
    let ext = tcp_frame[54..].to_vec();
    let tcp = tcp_frame[62..].to_vec();
    let arp = hex("0001 0800 06 04 0001 0242ac110002 ac110002 000000000000 ac110001");
    let icmp4 = hex("0800 f7f7 0007 0001");
    let icmp6 = hex("8700 0000");
    vec![
        Case {
            name: "ethernet",
            whole: 14,
            bytes: udp_frame.clone(),
            check: |b| ethernet::Frame::new_checked(b).map(drop),
        },
        Case {
            name: "vlan",
            whole: 4,
            bytes: udp_frame[14..].to_vec(),
            check: |b| vlan::Tag::new_checked(b).map(drop),
        },
        Case {
            name: "arp",
            whole: 28,
            bytes: arp,
            check: |b| arp::Packet::new_checked(b).map(drop),
        },
        Case {
            name: "ipv4",
            whole: ipv4.len(),
            bytes: ipv4,
            check: |b| ipv4::Packet::new_checked(b).map(drop),
        },
        Case {
            name: "ipv6",
            whole: ipv6.len(),
            bytes: ipv6,
            check: |b| ipv6::Packet::new_checked(b).map(drop),
        },
        Case {
            name: "ipv6 extension header",
            whole: 8,
            bytes: ext,
            check: |b| ipv6::ExtHeader::new_checked(b).map(drop),
        },
        Case {
            name: "udp",
            whole: udp.len(),
            bytes: udp,
            check: |b| udp::Packet::new_checked(b).map(drop),
        },
        Case {
            name: "tcp",
            whole: 24,
            bytes: tcp,
            check: |b| tcp::Packet::new_checked(b).map(drop),
        },
        Case {
            name: "icmpv4",
            whole: 8,
            bytes: icmp4,
            check: |b| icmpv4::Packet::new_checked(b).map(drop),
        },
        Case {
            name: "icmpv6",
            whole: 4,
            bytes: icmp6,
            check: |b| icmpv6::Packet::new_checked(b).map(drop),
        },
    ]
}

#[test]
fn every_truncation_of_every_header_is_refused() {
    for case in cases() {
        assert_eq!((case.check)(&case.bytes), Ok(()), "{} parses", case.name);
        assert_eq!(
            (case.check)(&case.bytes[..case.whole]),
            Ok(()),
            "{}",
            case.name
        );
        for len in 0..case.whole {
            assert_eq!(
                (case.check)(&case.bytes[..len]),
                Err(Error::Truncated),
                "{} cut to {len} bytes",
                case.name
            );
        }
    }
}

#[test]
fn a_tagged_udp_frame_parses_layer_by_layer() {
    let bytes = tagged_udp_frame();
    let frame = ethernet::Frame::new_checked(&bytes[..]).unwrap();
    assert_eq!(frame.dst_addr().to_string(), "02:42:ac:11:00:03");
    assert_eq!(frame.src_addr().to_string(), "02:42:ac:11:00:02");
    assert!(vlan::is_tpid(frame.ethertype()));
    let tag = vlan::Tag::new_checked(frame.payload()).unwrap();
    assert_eq!(
        (tag.vlan_id(), tag.ethertype()),
        (100, ethernet::ethertype::IPV4)
    );
    let ip = ipv4::Packet::new_checked(tag.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(
        (ip.src_addr(), ip.protocol()),
        (Ipv4Addr::new(172, 17, 0, 2), ip::UDP)
    );
    let udp = udp::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((udp.src_port(), udp.dst_port()), (40000, 5201));
    assert_eq!(udp.payload(), [1, 2, 3, 4]);
}

#[test]
fn an_ipv6_tcp_frame_parses_layer_by_layer() {
    let bytes = ipv6_tcp_frame();
    let frame = ethernet::Frame::new_checked(&bytes[..]).unwrap();
    assert_eq!(frame.ethertype(), ethernet::ethertype::IPV6);
    let ip = ipv6::Packet::new_checked(frame.payload()).unwrap();
    assert_eq!(ip.next_header(), ip::DSTOPTS);
    let ext = ipv6::ExtHeader::new_checked(ip.payload()).unwrap();
    assert_eq!(ext.next_header(), ip::TCP);
    let tcp = tcp::Packet::new_checked(ext.payload()).unwrap();
    assert_eq!(
        (tcp.dst_port(), tcp.seq_number(), tcp.header_len()),
        (80, 1, 24)
    );
    assert_eq!(tcp.flags(), tcp::flags::ACK | tcp::flags::PSH);
    assert!(tcp.payload().is_empty());
}

#[test]
fn an_icmp_echo_in_ipv4_checks_out() {
    let icmp = hex("0800 f7f7 0007 0001");
    let packet = icmpv4::Packet::new_checked(&icmp[..]).unwrap();
    assert!(packet.verify_checksum());
    assert_eq!(packet.msg_type(), icmpv4::message::ECHO_REQUEST);
}

#[test]
fn checksum_helpers_agree_with_a_filled_header() {
    let bytes = tagged_udp_frame();
    let ip = ipv4::Packet::new_checked(&bytes[18..]).unwrap();
    assert_eq!(checksum::rfc1071_checksum(ip.header()), 0);
    // The pseudo-header sum of 172.17.0.2 > 172.17.0.3, UDP, 12 bytes.
    let expected = checksum::fold(0xac11 + 0x0002 + 0xac11 + 0x0003 + 17 + 12);
    assert_eq!(
        checksum::pseudo_header_sum(ip.addresses(), ip::UDP, 12),
        expected
    );
    assert_eq!(checksum::transport_checksum(&[0xff, 0xff], 0), 0xffff);
}

/// The payload of a tagged UDP frame, found by walking down the layers
/// without keeping a view per layer.
fn udp_payload(frame: &[u8]) -> Result<&[u8]> {
    let eth = ethernet::Frame::new_checked(frame)?;
    let tag = vlan::Tag::new_checked(eth.into_payload())?;
    let ip = ipv4::Packet::new_checked(tag.into_payload())?;
    Ok(udp::Packet::new_checked(ip.into_payload())?.into_payload())
}

#[test]
fn into_payload_walks_down_the_layers() {
    let bytes = tagged_udp_frame();
    assert_eq!(udp_payload(&bytes), Ok(&[1u8, 2, 3, 4][..]));
    assert_eq!(
        udp_payload(&bytes[..bytes.len() - 1]),
        Err(Error::Truncated)
    );
}

/// `bytes` with two bytes of padding after it, as Ethernet adds to short
/// frames: a length field, not the buffer, must end each payload.
fn padded(bytes: &[u8]) -> Vec<u8> {
    [bytes, &[0xee, 0xee]].concat()
}

/// What `header_view!` generates agrees with each view's own code:
/// `into_payload` is `payload` (bounded by the view's length fields),
/// `into_inner` hands back the very buffer, and `new_checked` refuses what
/// `check_len` refuses.
#[test]
fn the_generated_skeleton_agrees_with_each_view() {
    macro_rules! agrees {
        ($view:ty, $bytes:expr, payload_len: $len:expr) => {{
            let bytes = padded($bytes);
            let view = <$view>::new_checked(&bytes[..]).unwrap();
            assert_eq!(view.payload().len(), $len, stringify!($view));
            assert_eq!(view.into_payload(), view.payload(), stringify!($view));
            assert!(std::ptr::eq(view.into_inner(), &bytes[..]));
            let short = <$view>::new_unchecked(&bytes[..1]);
            assert_eq!(short.check_len(), Err(Error::Truncated));
            assert_eq!(<$view>::new_checked(&bytes[..1]), Err(Error::Truncated));
        }};
    }
    let udp_frame = tagged_udp_frame();
    let tcp_frame = ipv6_tcp_frame();
    agrees!(ethernet::Frame<&[u8]>, &udp_frame, payload_len: 38);
    agrees!(vlan::Tag<&[u8]>, &udp_frame[14..], payload_len: 34);
    agrees!(ipv4::Packet<&[u8]>, &udp_frame[18..], payload_len: 12);
    agrees!(udp::Packet<&[u8]>, &udp_frame[38..], payload_len: 4);
    agrees!(ipv6::Packet<&[u8]>, &tcp_frame[14..], payload_len: 32);
    agrees!(ipv6::ExtHeader<&[u8]>, &tcp_frame[54..], payload_len: 26);
    agrees!(tcp::Packet<&[u8]>, &tcp_frame[62..], payload_len: 2);
    agrees!(icmpv4::Packet<&[u8]>, &hex("0800 f7f7 0007 0001"), payload_len: 2);
    agrees!(icmpv6::Packet<&[u8]>, &hex("8700 0000"), payload_len: 2);

    let arp = hex("0001 0800 06 04 0001 0242ac110002 ac110002 000000000000 ac110001");
    let packet = arp::Packet::new_checked(&arp[..]).unwrap();
    assert!(std::ptr::eq(packet.into_inner(), &arp[..]));
}

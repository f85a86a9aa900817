use super::*;

fn build(line: &str) -> Vec<u8> {
    let frames = parse(line).unwrap();
    assert_eq!(frames.len(), 1);
    frames.into_iter().next().unwrap().data
}

#[test]
fn the_issue_example_builds_an_arp_request() {
    let f = build("t=0.000 p1 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff arp who-has 172.17.0.1");
    assert_eq!(f.len(), 42);
    assert_eq!(&f[0..6], &[0xff; 6]);
    assert_eq!(&f[12..14], &[0x08, 0x06]);
    assert_eq!(&f[20..22], &[0, 1], "a request");
    assert_eq!(&f[38..42], &[172, 17, 0, 1]);
}

#[test]
fn ping_has_valid_checksums() {
    let f = build(
        "t=1 p1 02:00:00:00:00:01 > 02:42:ac:11:00:01 ipv4 172.17.0.2 > 172.17.0.1 \
         icmp echo-request id 7 seq 1 data 74617073",
    );
    assert_eq!(
        ports::vnet::rfc1071_checksum(&f[14..34]),
        0,
        "IPv4 header checksum"
    );
    assert_eq!(ports::vnet::rfc1071_checksum(&f[34..]), 0, "ICMP checksum");
    assert_eq!(f[14 + 8], 64);
    assert_eq!(&f[14 + 6..14 + 8], &[0x40, 0], "don't fragment");
}

#[test]
fn vlan_tags_and_padding() {
    let f = build(
        "t=2.5 p2 02:00:00:00:00:02 > 01:00:5e:00:00:fb vlan 100 pcp 3 svlan 7 \
         ethertype 0x88b5 data 01 len 64",
    );
    assert_eq!(&f[12..16], &[0x81, 0x00, 0x60, 100]);
    assert_eq!(&f[16..20], &[0x88, 0xa8, 0x00, 7]);
    assert_eq!(&f[20..23], &[0x88, 0xb5, 0x01]);
    assert_eq!(f.len(), 64);
}

#[test]
fn times_keep_nanoseconds() {
    let frames = parse("t=12.000000001 p1 raw 00\n# comment\n\nt=3 p1 raw 01").unwrap();
    assert_eq!(frames[0].time_ns, 12_000_000_001);
    assert_eq!(frames[1].time_ns, 3_000_000_000);
    assert_eq!(frames[1].line, 4);
    assert_eq!(time(12_000_000_001), "12.000000001");
    assert_eq!(time(1_500_000_000), "1.500");
    assert_eq!(time(0), "0.000");
}

#[test]
fn errors_name_the_line() {
    let err =
        parse("t=0 p1 raw 00\nt=1 p1 02:00:00:00:00:01 > nope arp who-has 1.2.3.4").unwrap_err();
    assert!(format!("{err:#}").starts_with("line 2:"), "{err:#}");
    for bad in [
        "0 p1 raw 00",
        "t=1.0000000001 p1 raw 00",
        "t=0 ../x raw 00",
        "t=0 p1 raw 0",
        "t=0 p1 raw 0é",
        "t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 ethertype 0x0800 len 10",
        "t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 vlan 4096 ethertype 1",
        "t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 ethertype 1 extra",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn show_builds_back_to_the_same_bytes() {
    let lines = [
        "t=0.000 p1 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff arp who-has 172.17.0.1 tell 172.17.0.2 len 60",
        "t=0.000 p1 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff arp who-has 172.17.0.1",
        "t=0.001 gw 02:42:ac:11:00:01 > 02:00:00:00:00:01 arp 172.17.0.1 is-at 02:42:ac:11:00:01 to 172.17.0.2",
        "t=1.000 p1 02:00:00:00:00:01 > 02:42:ac:11:00:01 ipv4 172.17.0.2 > 172.17.0.1 icmp echo-request id 7 seq 1 data 74617073",
        "t=1.000 p1 02:00:00:00:00:01 > 02:42:ac:11:00:01 ipv4 172.17.0.2 > 172.17.0.1 ttl 3 ip-id 9 tos 16 no-df proto 17 data 0102 len 64",
        "t=2.500 p2 02:00:00:00:00:02 > 01:00:5e:00:00:fb vlan 100 pcp 3 ethertype 0x88b5 payload 46",
        "t=2.500 p2 02:00:00:00:00:02 > 01:00:5e:00:00:fb svlan 100 vlan 5 ethertype 0x88b5 data ff len 60",
        "t=3.000 p3 raw 0102030405",
    ];
    for line in lines {
        let f = build(line);
        let shown = show(parse(line).unwrap()[0].time_ns, "x", &f);
        let expected = line.replacen(line.split(' ').nth(1).unwrap(), "x", 1);
        assert_eq!(shown, expected);
    }
}

#[test]
fn show_falls_back_when_a_form_would_not_build_back() {
    // An echo request with a broken ICMP checksum.
    let mut f = build(
        "t=1 p1 02:00:00:00:00:01 > 02:42:ac:11:00:01 ipv4 172.17.0.2 > 172.17.0.1 \
         icmp echo-request id 7 seq 1",
    );
    f[36] ^= 0xff;
    let line = show(1_000_000_000, "p1", &f);
    assert!(line.contains("ethertype 0x0800 data 45"), "{line}");
    assert_eq!(build(&line), f);
    // A VLAN tag with the DEI bit: no form says it, so raw.
    let mut f = build("t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 vlan 5 ethertype 1");
    f[14] |= 0x10;
    let line = show(0, "p1", &f);
    assert!(line.contains(" raw "), "{line}");
    assert_eq!(build(&line), f);
}

/// etherparse's view of a frame: the IP addresses and the transport slice.
fn transport_of(f: &[u8]) -> (Vec<u8>, Vec<u8>, etherparse::TransportSlice<'_>) {
    use etherparse::{NetSlice, SlicedPacket};
    let packet = SlicedPacket::from_ethernet(f).expect("etherparse reads it");
    let (src, dst) = match packet.net.expect("an IP packet") {
        NetSlice::Ipv4(ip) => (
            ip.header().source().to_vec(),
            ip.header().destination().to_vec(),
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source().to_vec(),
            ip.header().destination().to_vec(),
        ),
        other => panic!("not IP: {other:?}"),
    };
    (src, dst, packet.transport.expect("a transport header"))
}

#[test]
fn udp_as_a_teacher_writes_it() {
    let f = build(
        r#"t=0 p1 02:42:ac:11:00:02 > 02:42:ac:11:00:03 udp 172.17.0.2:5000 > 172.17.0.3:53 "payload""#,
    );
    let (src, dst, transport) = transport_of(&f);
    let etherparse::TransportSlice::Udp(udp) = transport else {
        panic!("not UDP");
    };
    assert_eq!((udp.source_port(), udp.destination_port()), (5000, 53));
    assert_eq!(udp.payload(), b"payload");
    let want = udp
        .to_header()
        .calc_checksum_ipv4_raw(
            src.try_into().unwrap(),
            dst.try_into().unwrap(),
            udp.payload(),
        )
        .unwrap();
    assert_eq!(udp.checksum(), want, "UDP checksum");
    assert_eq!(
        ports::vnet::rfc1071_checksum(&f[14..34]),
        0,
        "IPv4 checksum"
    );
    assert_eq!(f[14 + 9], 17);
}

#[test]
fn tcp_flags_and_numbers() {
    let f = build(
        "t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 tcp 10.0.0.1:40000 > 10.0.0.2:80 \
         ttl 63 flags SA seq 1000 ack 2001 win 512 data 0102",
    );
    let (src, dst, transport) = transport_of(&f);
    let etherparse::TransportSlice::Tcp(tcp) = transport else {
        panic!("not TCP");
    };
    assert!(tcp.syn() && tcp.ack() && !tcp.fin() && !tcp.rst());
    assert_eq!(
        (tcp.sequence_number(), tcp.acknowledgment_number()),
        (1000, 2001)
    );
    assert_eq!(tcp.window_size(), 512);
    assert_eq!(tcp.payload(), &[1, 2]);
    let want = tcp
        .to_header()
        .calc_checksum_ipv4_raw(
            src.try_into().unwrap(),
            dst.try_into().unwrap(),
            tcp.payload(),
        )
        .unwrap();
    assert_eq!(tcp.checksum(), want, "TCP checksum");
    assert_eq!(f[14 + 8], 63, "ttl");
    assert!(
        parse("t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 tcp 10.0.0.1:1 > 10.0.0.2:2 flags SX")
            .is_err()
    );
}

#[test]
fn ipv6_udp_and_neighbour_discovery() {
    let f = build(
        "t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 udp [fe80::1]:546 > [ff02::1:2]:547 data 0102",
    );
    let (src, dst, transport) = transport_of(&f);
    let etherparse::TransportSlice::Udp(udp) = transport else {
        panic!("not UDP");
    };
    let want = udp
        .to_header()
        .calc_checksum_ipv6_raw(
            src.try_into().unwrap(),
            dst.try_into().unwrap(),
            udp.payload(),
        )
        .unwrap();
    assert_eq!(udp.checksum(), want, "UDP over IPv6 checksum");
    assert_eq!(&f[12..14], &[0x86, 0xdd]);

    for line in [
        "t=0 p1 02:00:00:00:00:01 > 33:33:ff:00:00:02 icmpv6 fe80::1 > ff02::1:ff00:2 neighbor-solicit fe80::2 lladdr 02:00:00:00:00:01",
        "t=0 p2 02:00:00:00:00:02 > 02:00:00:00:00:01 icmpv6 fe80::2 > fe80::1 neighbor-advert fe80::2 solicited override lladdr 02:00:00:00:00:02",
        "t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 icmpv6 fe80::1 > fe80::2 echo-request id 1 seq 2 \"hi\"",
    ] {
        let f = build(line);
        let (src, dst, transport) = transport_of(&f);
        let etherparse::TransportSlice::Icmpv6(icmp) = transport else {
            panic!("not ICMPv6: {line}");
        };
        assert!(
            icmp.is_checksum_valid(src.try_into().unwrap(), dst.try_into().unwrap()),
            "{line}"
        );
    }
    let ns = build(
        "t=0 p1 02:00:00:00:00:01 > 33:33:ff:00:00:02 icmpv6 fe80::1 > ff02::1:ff00:2 neighbor-solicit fe80::2",
    );
    assert_eq!(ns[14 + 7], 255, "neighbour discovery's hop limit");
}

#[test]
fn dhcp_bodies() {
    let f = build(
        "t=0 p1 02:00:00:00:00:05 > ff:ff:ff:ff:ff:ff udp 0.0.0.0:68 > 255.255.255.255:67 \
         dhcp request xid 0x1234 broadcast requested 172.17.0.5 server 172.17.0.1",
    );
    let dhcp = &f[14 + 20 + 8..];
    assert_eq!(dhcp[0], 1, "a request from a client");
    assert_eq!(&dhcp[4..8], &[0, 0, 0x12, 0x34]);
    assert_eq!(&dhcp[10..12], &[0x80, 0], "broadcast flag");
    assert_eq!(
        &dhcp[28..34],
        &[2, 0, 0, 0, 0, 5],
        "chaddr is the source MAC"
    );
    assert_eq!(&dhcp[236..240], &[99, 130, 83, 99], "magic cookie");
    assert_eq!(
        &dhcp[240..],
        &[53, 1, 3, 50, 4, 172, 17, 0, 5, 54, 4, 172, 17, 0, 1, 255]
    );
    let (src, dst, transport) = transport_of(&f);
    let etherparse::TransportSlice::Udp(udp) = transport else {
        panic!("not UDP");
    };
    let want = udp
        .to_header()
        .calc_checksum_ipv4_raw(
            src.try_into().unwrap(),
            dst.try_into().unwrap(),
            udp.payload(),
        )
        .unwrap();
    assert_eq!(udp.checksum(), want);
}

#[test]
fn quoted_text_and_comments() {
    let f = build(
        r#"t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 ethertype 0x88b5 "a # not a comment \"q\" \\ \x00\n" # a comment"#,
    );
    assert_eq!(&f[14..], b"a # not a comment \"q\" \\ \x00\n");
    for bad in [
        r#"t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 ethertype 1 "open"#,
        r#"t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 ethertype 1 "\q""#,
        r#"t=0 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 ethertype 1 "\x4""#,
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn show_speaks_the_new_forms_and_builds_them_back() {
    let lines = [
        r#"t=0.000 p1 02:42:ac:11:00:02 > 02:42:ac:11:00:03 udp 172.17.0.2:5000 > 172.17.0.3:53 "payload""#,
        r#"t=0.000 p1 02:42:ac:11:00:02 > 02:42:ac:11:00:03 udp 172.17.0.2:5000 > 172.17.0.3:53 ttl 3 no-df "two\nlines" len 64"#,
        "t=0.000 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 udp 10.0.0.1:9 > 10.0.0.2:9 data 00ff",
        "t=0.000 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 tcp 10.0.0.1:40000 > 10.0.0.2:80 flags SA seq 1000 ack 2001 win 512",
        "t=0.000 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 tcp 10.0.0.1:40000 > 10.0.0.2:80 flags PA seq 7 \"GET /\"",
        "t=0.000 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 tcp [2001:db8::1]:1 > [2001:db8::2]:2 ttl 9 flags FA",
        "t=0.000 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 udp [fe80::1]:546 > [ff02::1:2]:547 data 0102",
        "t=0.000 p1 02:00:00:00:00:01 > 33:33:ff:00:00:02 icmpv6 fe80::1 > ff02::1:ff00:2 neighbor-solicit fe80::2 lladdr 02:00:00:00:00:01",
        "t=0.000 p2 02:00:00:00:00:02 > 02:00:00:00:00:01 icmpv6 fe80::2 > fe80::1 neighbor-advert fe80::2 router solicited override lladdr 02:00:00:00:00:02",
        "t=0.000 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 icmpv6 fe80::1 > fe80::2 echo-request id 1 seq 2 data 6869",
        "t=0.000 p1 02:00:00:00:00:01 > 02:00:00:00:00:02 ipv6 2001:db8::1 > 2001:db8::2 ttl 1 tc 4 flow 77 proto 59",
        "t=0.000 p1 02:00:00:00:00:05 > ff:ff:ff:ff:ff:ff udp 0.0.0.0:68 > 255.255.255.255:67 dhcp discover xid 0x00001234 broadcast",
        "t=0.000 gw 02:42:ac:11:00:01 > 02:00:00:00:00:05 udp 172.17.0.1:67 > 172.17.0.5:68 dhcp offer xid 0x00001234 chaddr 02:00:00:00:00:05 yiaddr 172.17.0.5 server 172.17.0.1 mask 255.255.0.0 router 172.17.0.1 lease 3600 dns 8.8.8.8 dns 1.1.1.1",
    ];
    for line in lines {
        let f = build(line);
        let port = line.split(' ').nth(1).unwrap();
        assert_eq!(show(0, port, &f), line);
    }
}

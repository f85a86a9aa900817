use std::net::IpAddr;

use ports::wire::{ipv4, ipv6, udp};

use super::*;

mod ipv6_underlay;

fn endpoint(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const LOCAL: &str = "10.0.0.1:4789";
const B: &str = "10.0.0.2:4789";
const C: &str = "10.0.0.3:4789";

fn tunnel() -> LabTunnel {
    tunnel_at(LOCAL, &[B, C])
}

/// A tunnel at `local` with `members`, VNI 42, the gateway's MAC local-only.
fn tunnel_at(local: &str, members: &[&str]) -> LabTunnel {
    let spec = TunnelSpec {
        port: "vx0".into(),
        local: endpoint(local),
        vni: 42,
        members: members.iter().map(|m| endpoint(m)).collect(),
    };
    LabTunnel::new(&spec, [MacAddr([2, 0x42, 0, 0, 0, 1])], None, 16)
}

/// An inner frame from `src` to `dst` with a few bytes of payload.
fn inner(src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    [&dst[..], &src[..], &[0x88, 0xb5, 1, 2, 3][..]].concat()
}

/// What `from` would send to the local endpoint with `vni`.
fn from_member(from: &str, vni: u32, frame: &[u8]) -> Vec<u8> {
    from_member_to(from, LOCAL, vni, frame)
}

/// What `from` would send to `to` with `vni`.
fn from_member_to(from: &str, to: &str, vni: u32, frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(underlay_frame(
        &mut out,
        endpoint(from),
        endpoint(to),
        &vxlan::header(vni),
        frame,
    ));
    out
}

/// The outer destination (address and UDP port) of an underlay frame.
fn outer_destination(underlay: &[u8]) -> SocketAddr {
    let (ip, udp_start) = match u16::from_be_bytes([underlay[12], underlay[13]]) {
        ethernet::ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(&underlay[14..]).unwrap();
            (IpAddr::V4(ip.dst_addr()), 14 + ip.header_len())
        }
        ethernet::ethertype::IPV6 => {
            let ip = ipv6::Packet::new_checked(&underlay[14..]).unwrap();
            (IpAddr::V6(ip.dst_addr()), 14 + ipv6::HEADER_LEN)
        }
        other => panic!("not IP: {other:#x}"),
    };
    let udp = udp::Packet::new_checked(&underlay[udp_start..]).unwrap();
    SocketAddr::new(ip, udp.dst_port())
}

/// Each underlay frame `tunnel` sends for `frame`, as its receiver's socket
/// reads it: (outer source, outer destination, UDP payload).
fn sent(tunnel: &LabTunnel, frame: &[u8]) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    sent_frames(tunnel, frame)
        .iter()
        .map(|underlay| {
            let to = outer_destination(underlay);
            let (source, range) =
                datagram_to(to, underlay).expect("a well-formed datagram with right checksums");
            (source, to, underlay[range].to_vec())
        })
        .collect()
}

/// The underlay frames `tunnel` sends for `frame`, whole.
fn sent_frames(tunnel: &LabTunnel, frame: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let _ = tunnel.encapsulate(frame, Instant::from_secs(1), |underlay| {
        out.push(underlay.to_vec());
    });
    out
}

#[test]
fn a_broadcast_goes_to_every_member_in_its_own_datagram() {
    let tunnel = tunnel();
    let frame = inner([2, 0, 0, 0, 0, 0xa], [0xff; 6]);
    let datagrams = sent(&tunnel, &frame);
    assert_eq!(datagrams.len(), 2);
    for ((source, to, payload), member) in datagrams.iter().zip([B, C]) {
        assert_eq!(*source, endpoint(LOCAL), "sent from the bound port");
        assert_eq!(*to, endpoint(member));
        assert_eq!(&payload[..8], &vxlan::header(42));
        assert_eq!(&payload[8..], &frame[..]);
    }
    let report = tunnel.report(Instant::from_secs(1));
    assert_eq!(report.stats.tx_datagrams, 2);
    assert_eq!(report.stats.tx_floods, 1);
}

#[test]
fn a_mac_heard_from_a_member_is_sent_to_that_member_alone() {
    let tunnel = tunnel();
    let remote = [2, 0, 0, 0, 0, 0xb];
    let frame = inner(remote, [0xff; 6]);
    let underlay = from_member(B, 42, &frame);
    let range = tunnel.receive(&underlay, Instant::from_secs(1)).unwrap();
    assert_eq!(&underlay[range], &frame[..]);
    let reply = sent(&tunnel, &inner([2, 0, 0, 0, 0, 0xa], remote));
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].1, endpoint(B));
    let report = tunnel.report(Instant::from_secs(1));
    assert_eq!(report.entries.len(), 1);
    assert_eq!(report.entries[0].endpoint, endpoint(B));
}

#[test]
fn strangers_other_vnis_and_other_traffic_are_dropped_by_reason() {
    let tunnel = tunnel();
    let frame = inner([2, 0, 0, 0, 0, 0xb], [0xff; 6]);
    let now = Instant::from_secs(1);
    assert!(
        tunnel
            .receive(&from_member("10.0.0.9:4789", 42, &frame), now)
            .is_err()
    );
    assert!(tunnel.receive(&from_member(B, 43, &frame), now).is_err());
    let mut bad_sum = from_member(B, 42, &frame);
    let last = bad_sum.len() - 1;
    bad_sum[last] ^= 1;
    assert!(tunnel.receive(&bad_sum, now).is_err());
    let short = from_member(B, 42, &frame[..10]);
    assert!(tunnel.receive(&short, now).is_err());
    let gateway = inner([2, 0x42, 0, 0, 0, 1], [0xff; 6]);
    assert!(tunnel.receive(&from_member(B, 42, &gateway), now).is_err());
    let refused = tunnel.receive(&frame, now).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "underlay frame len 17: dropped by the tunnel (not-vxlan)"
    );
    let stray = tunnel.receive(&from_member("10.0.0.9:4789", 42, &frame), now);
    assert_eq!(
        stray.unwrap_err().to_string(),
        "vxlan from 10.0.0.9:4789 len 67: dropped by the tunnel (not-member)"
    );
    let report = tunnel.report(now);
    let rx: Vec<(&str, u64)> = report.rx_drops.into_iter().collect();
    assert_eq!(
        rx,
        vec![
            ("local-only", 1),
            ("malformed-vxlan", 1),
            ("not-member", 2),
            ("not-vxlan", 2),
            ("wrong-vni", 1)
        ]
    );
    assert!(report.entries.is_empty(), "nothing learned from drops");
}

#[test]
fn the_gateways_frames_and_frames_with_no_members_go_nowhere() {
    let tunnel = tunnel();
    assert!(sent(&tunnel, &inner([2, 0x42, 0, 0, 0, 1], [0xff; 6])).is_empty());
    let gateway = inner([2, 0x42, 0, 0, 0, 1], [0xff; 6]);
    let verdict = tunnel.encapsulate(&gateway, Instant::ZERO, |_| panic!("sent"));
    assert_eq!(verdict, Err("local-only"));
    let lonely = tunnel_at(LOCAL, &[]);
    assert!(sent(&lonely, &inner([2, 0, 0, 0, 0, 0xa], [0xff; 6])).is_empty());
    let tx: Vec<_> = tunnel.report(Instant::ZERO).tx_drops.into_iter().collect();
    assert_eq!(tx, vec![("local-only", 2)]);
    let tx: Vec<_> = lonely.report(Instant::ZERO).tx_drops.into_iter().collect();
    assert_eq!(tx, vec![("no-members", 1)]);
}

#[test]
fn remote_macs_age_on_virtual_time() {
    let spec = TunnelSpec {
        port: "vx0".into(),
        local: endpoint(LOCAL),
        vni: 42,
        members: vec![endpoint(B), endpoint(C)],
    };
    let tunnel = LabTunnel::new(&spec, [], Some(Duration::from_secs(10)), 16);
    let remote = [2, 0, 0, 0, 0, 0xb];
    let underlay = from_member(B, 42, &inner(remote, [0xff; 6]));
    tunnel.receive(&underlay, Instant::from_secs(100)).unwrap();
    assert_eq!(tunnel.report(Instant::from_secs(109)).entries.len(), 1);
    assert!(tunnel.report(Instant::from_secs(110)).entries.is_empty());
}

#[test]
fn a_datagram_without_a_udp_checksum_is_taken_as_the_kernel_takes_it() {
    let tunnel = tunnel();
    let frame = inner([2, 0, 0, 0, 0, 0xb], [0xff; 6]);
    let mut underlay = from_member(B, 42, &frame);
    // The UDP checksum: after Ethernet (14) and IPv4 (20), bytes 6-7.
    underlay[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let range = tunnel.receive(&underlay, Instant::from_secs(1)).unwrap();
    assert_eq!(&underlay[range], &frame[..]);
    // A wrong IPv4 header checksum is not.
    let mut bad_ip = from_member(B, 42, &frame);
    bad_ip[14 + 10] ^= 1;
    assert_eq!(
        tunnel
            .receive(&bad_ip, Instant::from_secs(1))
            .unwrap_err()
            .reason,
        NOT_VXLAN
    );
}

#[test]
fn a_mac_that_moves_to_another_member_follows_it() {
    let tunnel = tunnel();
    let remote = [2, 0, 0, 0, 0, 0xb];
    let frame = inner(remote, [0xff; 6]);
    tunnel
        .receive(&from_member(B, 42, &frame), Instant::from_secs(1))
        .unwrap();
    tunnel
        .receive(&from_member(C, 42, &frame), Instant::from_secs(2))
        .unwrap();
    let reply = sent(&tunnel, &inner([2, 0, 0, 0, 0, 0xa], remote));
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].1, endpoint(C));
}

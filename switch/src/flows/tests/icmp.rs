//! Ping flows and the ICMP errors the gateway builds.

use std::net::Ipv4Addr;
use std::time::Duration;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, TcpControl, TcpRepr,
    TcpSeqNumber,
};

use super::at;
use crate::flows::{
    Action, ConnectFailure, EchoEvent, EchoFlow, EndReason, Timer, UdpState, Unreachable,
    unreachable_packet,
};

pub(super) const CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
pub(super) const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

#[test]
fn a_ping_flow_relays_requests_and_replies_until_idle() {
    let mut flow = EchoFlow::new(at(0), Duration::from_secs(15));
    flow.handle(at(0), EchoEvent::Request(56));
    flow.handle(at(0), EchoEvent::HostConnected);
    assert_eq!(flow.state(), UdpState::Unreplied);
    assert!(flow.handle(at(1), EchoEvent::Request(56)).relay);
    assert!(flow.handle(at(1), EchoEvent::Reply(56)).relay);
    assert_eq!(flow.state(), UdpState::Replied);
    assert_eq!(flow.counters().packets_from_container, 2);
    assert_eq!(flow.counters().packets_to_container, 1);
    assert_eq!(flow.deadline(), Some(at(16)));
    assert_eq!(
        flow.tick(at(16)).to_vec(),
        vec![Action::Release(EndReason::TimedOut { timer: Timer::Idle })]
    );
}

#[test]
fn a_host_that_forbids_ping_sockets_answers_administratively_prohibited() {
    let mut flow = EchoFlow::new(at(0), Duration::from_secs(15));
    let eacces = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
    let step = flow.handle(
        at(0),
        EchoEvent::HostConnectFailed(ConnectFailure::from_io(&eacces)),
    );
    assert_eq!(
        step.actions.to_vec(),
        vec![
            Action::SendUnreachable(Unreachable::Prohibited),
            Action::Release(EndReason::Unreachable {
                code: Unreachable::Prohibited
            })
        ]
    );
    // Path errors on an open flow are passed on.
    let mut flow = EchoFlow::new(at(0), Duration::from_secs(15));
    flow.handle(at(0), EchoEvent::HostConnected);
    let step = flow.handle(
        at(1),
        EchoEvent::HostError(ConnectFailure::Unreachable(Unreachable::Host)),
    );
    assert_eq!(
        step.actions.to_vec(),
        vec![Action::SendUnreachable(Unreachable::Host)]
    );
}

/// An IPv4 TCP SYN from the container to the remote.
pub(super) fn syn() -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: 40000,
        dst_port: 443,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(1000),
        ack_number: None,
        window_len: 64240,
        window_scale: Some(7),
        max_seg_size: Some(1460),
        sack_permitted: true,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    crate::test_frames::ipv4_tcp(CONTAINER, REMOTE, &tcp)
}

#[test]
fn an_unreachable_error_quotes_the_offending_packet_from_the_gateway() {
    let offending = syn();
    let packet = unreachable_packet(Unreachable::Host, GATEWAY, &offending).unwrap();
    let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.src_addr(), GATEWAY);
    assert_eq!(ip.dst_addr(), CONTAINER);
    assert_eq!(ip.next_header(), IpProtocol::Icmp);
    assert_eq!(usize::from(ip.total_len()), packet.len());
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let repr = Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap();
    let Icmpv4Repr::DstUnreachable {
        reason,
        header,
        data,
    } = repr
    else {
        panic!("not a destination unreachable: {repr:?}");
    };
    assert_eq!(reason, Icmpv4DstUnreachable::HostUnreachable);
    assert_eq!((header.src_addr, header.dst_addr), (CONTAINER, REMOTE));
    // The whole SYN fits in 576 bytes, so all of it is quoted (TCP ports
    // and sequence number included, which the container matches on).
    assert_eq!(&data[..4], &offending[20..24]);
    assert_eq!(data.len(), offending.len() - 20);
}

#[test]
fn a_long_packet_is_quoted_up_to_576_bytes() {
    let mut long = syn();
    let extra = 1400;
    long.resize(long.len() + extra, 0xab);
    let total = long.len() as u16;
    let mut ip = Ipv4Packet::new_unchecked(&mut long[..]);
    ip.set_total_len(total);
    ip.fill_checksum();
    let packet = unreachable_packet(Unreachable::Net, GATEWAY, &long).unwrap();
    assert_eq!(packet.len(), 576);
}

#[test]
fn no_error_about_errors_fragments_or_non_hosts() {
    // Garbage is not a packet.
    assert!(unreachable_packet(Unreachable::Host, GATEWAY, &[0x45, 0, 0]).is_none());
    // An ICMP error about an ICMP error: never.
    let error = unreachable_packet(Unreachable::Host, GATEWAY, &syn()).unwrap();
    assert!(unreachable_packet(Unreachable::Host, GATEWAY, &error).is_none());
    // A later fragment.
    let mut fragment = syn();
    let mut ip = Ipv4Packet::new_unchecked(&mut fragment[..]);
    ip.set_frag_offset(64);
    ip.fill_checksum();
    assert!(unreachable_packet(Unreachable::Host, GATEWAY, &fragment).is_none());
    // To a broadcast address.
    let mut broadcast = syn();
    let mut ip = Ipv4Packet::new_unchecked(&mut broadcast[..]);
    ip.set_dst_addr(Ipv4Addr::BROADCAST);
    ip.fill_checksum();
    assert!(unreachable_packet(Unreachable::Host, GATEWAY, &broadcast).is_none());
    // An echo request may draw an error.
    let echo = Icmpv4Repr::EchoRequest {
        ident: 7,
        seq_no: 1,
        data: b"hi",
    };
    let ping = crate::test_frames::ipv4_icmp(CONTAINER, REMOTE, &echo);
    assert!(unreachable_packet(Unreachable::Host, GATEWAY, &ping).is_some());
}

#[test]
fn a_quote_cut_to_header_and_eight_bytes_is_enough() {
    // What a UDP or ping flow keeps of its first packet (RFC 792's minimum).
    let cut = &syn()[..28];
    let packet = unreachable_packet(Unreachable::Port, GATEWAY, cut).unwrap();
    assert_eq!(packet.len(), 20 + 8 + 28);
    let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
    assert_eq!(ip.dst_addr(), CONTAINER);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.data(), cut);
    // Shorter than a header is nothing to quote.
    assert!(unreachable_packet(Unreachable::Port, GATEWAY, &syn()[..19]).is_none());
}

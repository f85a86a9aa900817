//! The host side on the machine's loopback (no root, no namespace): a
//! container's UDP datagram leaves through a host socket and the answer
//! comes back as a frame from the remote's address; DNS is forwarded to an
//! upstream and answered.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use mio::{Events, Poll};
use smoltcp::wire::{EthernetFrame, IpProtocol, Ipv4Packet, UdpPacket};

use super::{HostSide, ServicesSetup};
use crate::gateway::Gateway;
use crate::mac::MacAddr;
use crate::services::{Verdict, ethernet, udp_packet};
use crate::time::Instant;

const GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const HOST_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);

fn host_side(setup: ServicesSetup) -> (HostSide, Gateway, Poll) {
    let poll = Poll::new().unwrap();
    let gateway = Gateway::new(GW, 16, Instant::ZERO);
    let config = setup.config(GW, 16, gateway.mac());
    let host = HostSide::new(config, poll.registry().try_clone().unwrap(), false).unwrap();
    (host, gateway, poll)
}

fn datagram(gateway: &Gateway, from: SocketAddrV4, to: SocketAddrV4, data: &[u8]) -> Vec<u8> {
    ethernet(
        HOST_MAC,
        gateway.mac(),
        &udp_packet(from, to, data).unwrap(),
    )
}

/// Polls until a frame comes out (at most two seconds).
fn next_frames(host: &mut HostSide, gateway: &mut Gateway, poll: &mut Poll) -> Vec<Vec<u8>> {
    let mut events = Events::with_capacity(16);
    let mut frames = Vec::new();
    for _ in 0..40 {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        for event in events.iter() {
            host.ready(Instant::from_millis(1), event, gateway, &mut frames);
        }
        if !frames.is_empty() {
            return frames;
        }
    }
    panic!("no frame came back");
}

/// The UDP datagram inside a frame: (source, destination, payload).
fn udp_of(frame: &[u8]) -> (SocketAddrV4, SocketAddrV4, Vec<u8>) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.dst_addr().0, HOST_MAC.0, "sent to the container's MAC");
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.next_header(), IpProtocol::Udp);
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    (
        SocketAddrV4::new(ip.src_addr(), udp.src_port()),
        SocketAddrV4::new(ip.dst_addr(), udp.dst_port()),
        udp.payload().to_vec(),
    )
}

#[test]
fn a_udp_flow_goes_out_through_a_host_socket_and_comes_back_as_a_frame() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let SocketAddr::V4(remote) = server.local_addr().unwrap() else {
        unreachable!()
    };
    let (mut host, mut gateway, mut poll) = host_side(ServicesSetup::default());
    let container = SocketAddrV4::new(HOST, 40000);
    let mut frames = Vec::new();
    let frame = datagram(&gateway, container, remote, b"out");
    let verdict = host.frame(Instant::ZERO, &frame, &mut gateway, &mut frames);
    assert_eq!(verdict, Verdict::Consumed);
    assert_eq!(host.open_sockets(), 1, "one host socket for the flow");

    let mut buf = [0u8; 64];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"out");
    server.send_to(b"back", from).unwrap();

    let frames = next_frames(&mut host, &mut gateway, &mut poll);
    assert_eq!(
        udp_of(&frames[0]),
        (remote, container, b"back".to_vec()),
        "from the remote's address to the container's endpoint"
    );
    let report = host.report(true);
    assert_eq!(report.flows.opened, 1);
    assert_eq!(report.flows_now, 1);
}

#[test]
fn dns_is_forwarded_to_the_upstream_and_answered_from_the_gateway() {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    upstream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let setup = ServicesSetup {
        upstreams: vec![upstream.local_addr().unwrap()],
        ..ServicesSetup::default()
    };
    let (mut host, mut gateway, mut poll) = host_side(setup);
    // A query for example.test, A, IN, id 0x4242.
    let mut query = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x07example\x04test\x00\x00\x01\x00\x01");
    let client = SocketAddrV4::new(HOST, 41000);
    let frame = datagram(&gateway, client, SocketAddrV4::new(GW, 53), &query);
    let mut frames = Vec::new();
    host.frame(Instant::ZERO, &frame, &mut gateway, &mut frames);
    assert!(frames.is_empty(), "forwarded, not answered locally");

    let mut buf = [0u8; 512];
    let (n, from) = upstream.recv_from(&mut buf).unwrap();
    let forwarded = buf[..n].to_vec();
    assert_eq!(&forwarded[2..], &query[2..], "the question as asked");
    // The upstream answers (no records; the flags say "an answer").
    let mut answer = forwarded.clone();
    answer[2] |= 0x80;
    upstream.send_to(&answer, from).unwrap();

    let frames = next_frames(&mut host, &mut gateway, &mut poll);
    let (src, dst, payload) = udp_of(&frames[0]);
    assert_eq!(src, SocketAddrV4::new(GW, 53));
    assert_eq!(dst, client);
    assert_eq!(&payload[..2], &[0x42, 0x42], "the container's own id back");
}

#[test]
fn a_published_udp_port_reaches_the_container_from_the_client_and_answers_back() {
    // A free port on loopback for the published port.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let published = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let container = SocketAddrV4::new(HOST, 53);
    let (mut host, mut gateway, mut poll) = host_side(ServicesSetup::default());
    let failed = host.publish(&[super::Published {
        host: published,
        container,
        protocol: crate::flows::Protocol::Udp,
        container_mac: Some(HOST_MAC),
    }]);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(host.published_count(), 1);

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let SocketAddr::V4(client_addr) = client.local_addr().unwrap() else {
        unreachable!()
    };
    client.send_to(b"query", published).unwrap();
    let frames = next_frames(&mut host, &mut gateway, &mut poll);
    assert_eq!(
        udp_of(&frames[0]),
        (client_addr, container, b"query".to_vec()),
        "from the client's own endpoint to the container's port"
    );
    assert_eq!(host.report(true).flows_now, 1, "the client is a flow");

    let answer = datagram(&gateway, container, client_addr, b"answer");
    let mut frames = Vec::new();
    let verdict = host.frame(Instant::from_millis(2), &answer, &mut gateway, &mut frames);
    assert_eq!(verdict, Verdict::Consumed);
    let mut buf = [0u8; 64];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"answer");
    assert_eq!(from, SocketAddr::V4(published), "from the published port");
    assert_eq!(host.open_sockets(), 0, "no socket of its own per client");

    // Unpublished: the port is free again.
    assert!(host.publish(&[]).is_empty());
    assert_eq!(host.published_count(), 0);
    UdpSocket::bind(published).expect("the host port is free again");
}

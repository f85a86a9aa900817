//! The host side on the machine's loopback (no root, no namespace): a
//! container's UDP datagram leaves through a host socket and the answer
//! comes back as a frame from the remote's address; DNS is forwarded to an
//! upstream and answered.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Poll};
use smoltcp::wire::{EthernetFrame, IpProtocol, Ipv4Packet, UdpPacket};

use super::{HostSide, ServicesSetup, tcp};
use crate::gateway::{GATEWAY_QUEUE_FRAMES, Gateway};
use crate::mac::MacAddr;
use crate::services::{Verdict, ethernet, fragments, udp_packet};
use crate::stats::PortCounters;
use crate::time::Instant;

const GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const HOST_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);

fn host_side(setup: ServicesSetup) -> (HostSide, Gateway, Poll) {
    let poll = Poll::new().unwrap();
    let gateway = Gateway::new(GW, 16, Instant::ZERO);
    let config = setup.config(GW, 16, gateway.mac());
    let host = HostSide::new(
        config,
        poll.registry().try_clone().unwrap(),
        false,
        Arc::default(),
    )
    .unwrap();
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
    assert_eq!(
        host.report(true).listening,
        vec![format!("127.0.0.1:{port}->53/udp")],
        "listed as docker ps writes it"
    );

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let SocketAddr::V4(client_addr) = client.local_addr().unwrap() else {
        unreachable!()
    };
    client.send_to(b"query", published).unwrap();
    let frames = next_frames(&mut host, &mut gateway, &mut poll);
    // A loopback client is presented from the gateway's address with its
    // own port (the container's kernel drops a 127.0.0.1 source on eth0);
    // any other client keeps its address (the kernel tests' remote one).
    let presented = SocketAddrV4::new(GW, client_addr.port());
    assert_eq!(
        udp_of(&frames[0]),
        (presented, container, b"query".to_vec()),
        "from the gateway's address, the client's port, to the container's port"
    );
    assert_eq!(host.report(true).flows_now, 1, "the client is a flow");

    // The answer to the presented endpoint reaches the real client.
    let answer = datagram(&gateway, container, presented, b"answer");
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
    assert!(host.report(true).listening.is_empty());
    UdpSocket::bind(published).expect("the host port is free again");
}

/// A TCP segment from the container's `src_port` to the gateway's port 53.
fn tcp_to_dns(
    gateway: &Gateway,
    src_port: u16,
    control: smoltcp::wire::TcpControl,
    seq: i32,
    ack: Option<i32>,
    payload: &[u8],
) -> Vec<u8> {
    tcp_to(gateway, (src_port, 53), control, seq, ack, payload)
}

/// A TCP segment from the container's port to the gateway's address.
fn tcp_to(
    gateway: &Gateway,
    (src_port, dst_port): (u16, u16),
    control: smoltcp::wire::TcpControl,
    seq: i32,
    ack: Option<i32>,
    payload: &[u8],
) -> Vec<u8> {
    use smoltcp::wire::{TcpRepr, TcpSeqNumber};
    let tcp = TcpRepr {
        src_port,
        dst_port,
        control,
        seq_number: TcpSeqNumber(seq),
        ack_number: ack.map(TcpSeqNumber),
        window_len: 60000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload,
    };
    let packet = crate::test_frames::ipv4_tcp(HOST, GW, &tcp);
    ethernet(HOST_MAC, gateway.mac(), &packet)
}

/// The TCP segment inside a frame from the gateway: (flags, seq, ack,
/// payload).
fn tcp_of(frame: &[u8]) -> (smoltcp::wire::TcpControl, i32, i32, Vec<u8>) {
    use smoltcp::wire::{TcpPacket, TcpRepr};
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.next_header(), IpProtocol::Tcp, "{frame:x?}");
    let packet = TcpPacket::new_checked(ip.payload()).unwrap();
    let repr = TcpRepr::parse(
        &packet,
        &ip.src_addr().into(),
        &ip.dst_addr().into(),
        &smoltcp::phy::ChecksumCapabilities::default(),
    )
    .unwrap();
    (
        repr.control,
        repr.seq_number.0,
        repr.ack_number.map_or(0, |a| a.0),
        repr.payload.to_vec(),
    )
}

/// The container's ARP request for the gateway's address.
fn arp_request() -> Vec<u8> {
    crate::test_frames::arp_request(HOST_MAC.0, HOST, GW)
}

/// One round of the gateway thread for `frame`: the services, the stack,
/// the relay; the frames that come out.
fn round(host: &mut HostSide, gateway: &mut Gateway, now: Instant, frame: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    if host.frame(now, frame, gateway, &mut frames) == Verdict::ToStack {
        assert!(gateway.deliver(frame));
    }
    gateway.poll(now, &mut frames);
    host.after_stack(now, gateway, &mut frames);
    gateway.poll(now, &mut frames);
    frames
}

#[test]
fn dns_over_tcp_is_answered_on_the_gateways_port_53() {
    use smoltcp::wire::TcpControl;
    let setup = ServicesSetup {
        names: vec![("web".into(), HOST)],
        ..ServicesSetup::default()
    };
    let (mut host, mut gateway, _poll) = host_side(setup);
    gateway.enable_flows();
    let now = Instant::from_millis(1);
    // The container asks for the gateway's MAC first, as a real one does
    // (and the gateway learns the container's).
    round(&mut host, &mut gateway, now, &arp_request());
    let syn = tcp_to_dns(&gateway, 40000, TcpControl::Syn, 100, None, b"");
    let out = round(&mut host, &mut gateway, now, &syn);
    let (control, server_seq, ack, _) = tcp_of(&out[0]);
    assert_eq!((control, ack), (TcpControl::Syn, 101), "a SYN-ACK");
    let ack_frame = tcp_to_dns(
        &gateway,
        40000,
        TcpControl::None,
        101,
        Some(server_seq + 1),
        b"",
    );
    round(&mut host, &mut gateway, now, &ack_frame);
    assert_eq!(host.dns_tcp_connections(), 1);

    // A query for web.tapswitch.internal, A, IN, id 0x4242, behind its length.
    let mut query = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x03web\x09tapswitch\x08internal\x00\x00\x01\x00\x01");
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    let data = tcp_to_dns(
        &gateway,
        40000,
        TcpControl::Psh,
        101,
        Some(server_seq + 1),
        &framed,
    );
    let out = round(&mut host, &mut gateway, now, &data);
    let answer = out
        .iter()
        .map(|f| tcp_of(f).3)
        .find(|p| !p.is_empty())
        .expect("an answer on the connection");
    let len = usize::from(u16::from_be_bytes([answer[0], answer[1]]));
    assert_eq!(len, answer.len() - 2, "one whole message behind its length");
    assert_eq!(&answer[2..4], &[0x42, 0x42], "the query's id");
    assert_eq!(&answer[answer.len() - 4..], &HOST.octets(), "web's address");
}

#[test]
fn a_reset_right_after_the_handshake_ends_the_flow_and_closes_its_socket() {
    use smoltcp::wire::TcpControl;
    // The remote: a listener on the host's loopback, reached through the
    // gateway's own address (`--allow-host-loopback`).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let setup = ServicesSetup {
        allow_host_loopback: true,
        ..ServicesSetup::default()
    };
    let poll = Poll::new().unwrap();
    let mut gateway = Gateway::new(GW, 16, Instant::ZERO);
    let config = setup.config(GW, 16, gateway.mac());
    let mut host = HostSide::new(
        config,
        poll.registry().try_clone().unwrap(),
        true,
        Arc::default(),
    )
    .unwrap();
    let mut poll = poll;
    gateway.enable_flows();
    let now = Instant::from_millis(1);
    round(&mut host, &mut gateway, now, &arp_request());
    let syn = tcp_to(&gateway, (40001, port), TcpControl::Syn, 100, None, b"");
    assert!(round(&mut host, &mut gateway, now, &syn).is_empty(), "held");
    // The host connect succeeds: the stack answers the held SYN.
    let mut events = Events::with_capacity(16);
    let mut syn_ack = None;
    for _ in 0..40 {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        let mut frames = Vec::new();
        for event in events.iter() {
            host.ready(now, event, &mut gateway, &mut frames);
        }
        gateway.poll(now, &mut frames);
        host.after_stack(now, &mut gateway, &mut frames);
        if let Some(frame) = frames.first() {
            syn_ack = Some(tcp_of(frame));
            break;
        }
    }
    let (control, server_seq, ack, _) = syn_ack.expect("a SYN-ACK");
    assert_eq!((control, ack), (TcpControl::Syn, 101));
    assert_eq!(host.services().flows().len(), 1);
    // The ACK, a request and a RST all reach the stack before the relay
    // runs once: it never sees the connection up.
    let mut frames = Vec::new();
    for (control, seq, payload) in [
        (TcpControl::None, 101, &b""[..]),
        (TcpControl::Psh, 101, &b"GET /"[..]),
        (TcpControl::Rst, 106, &b""[..]),
    ] {
        let frame = tcp_to(
            &gateway,
            (40001, port),
            control,
            seq,
            Some(server_seq + 1),
            payload,
        );
        if host.frame(now, &frame, &mut gateway, &mut frames) == Verdict::ToStack {
            assert!(gateway.deliver(&frame));
        }
    }
    gateway.poll(now, &mut frames);
    host.after_stack(now, &mut gateway, &mut frames);
    assert_eq!(
        host.services().flows().len(),
        0,
        "the flow ended with the container's reset"
    );
    assert_eq!(host.open_sockets(), 0, "its host socket is closed");
    assert_eq!(host.services().flows().stats().reset, 1);
}

#[test]
fn stack_buffers_hold_a_window_of_segments_at_every_mtu_within_their_bounds() {
    assert_eq!(tcp::stack_buffer(1280), tcp::STACK_BUFFER);
    assert_eq!(tcp::stack_buffer(1500), tcp::STACK_BUFFER);
    assert_eq!(tcp::stack_buffer(9000), 512 * 1024);
    assert_eq!(tcp::stack_buffer(65520), 1024 * 1024);
    assert_eq!(tcp::stack_buffer(usize::MAX), 1024 * 1024);
}

/// A datagram the services reassembled for the gateway's stack is dropped
/// when the gateway's queue is full, and counted on the gateway port as the
/// frames that queue refuses are (`tx-error`).
#[test]
fn a_reassembled_datagram_the_full_gateway_queue_refuses_is_counted() {
    let poll = Poll::new().unwrap();
    let mut gateway = Gateway::new(GW, 16, Instant::ZERO);
    let config = ServicesSetup::default().config(GW, 16, gateway.mac());
    let counters = Arc::new(PortCounters::default());
    let registry = poll.registry().try_clone().unwrap();
    let mut host = HostSide::new(config, registry, false, counters.clone()).unwrap();
    let (container, port) = (SocketAddrV4::new(HOST, 40000), SocketAddrV4::new(GW, 9));
    // 3,000 bytes of UDP to a port of the gateway's own, cut at MTU 1500:
    // whole again, it goes to the gateway's stack.
    let packet = udp_packet(container, port, &[7; 3000]).unwrap();
    let send_fragmented = |host: &mut HostSide, gateway: &mut Gateway, ident: u16| {
        let mut frames = Vec::new();
        for piece in fragments(&packet, 1500, ident).unwrap() {
            let frame = ethernet(HOST_MAC, gateway.mac(), &piece);
            host.frame(Instant::from_millis(1), &frame, gateway, &mut frames);
        }
    };
    let refused = |counters: &PortCounters| counters.snapshot().drops.get("tx-error").copied();
    send_fragmented(&mut host, &mut gateway, 1);
    assert_eq!(host.services().stats().reassembly.to_stack, 1);
    assert_eq!(refused(&counters), None, "the queue had room");
    let small = datagram(&gateway, container, port, b"x");
    let mut queued = 1;
    while gateway.deliver(&small) {
        queued += 1;
        assert!(queued <= GATEWAY_QUEUE_FRAMES, "the queue never filled");
    }
    send_fragmented(&mut host, &mut gateway, 2);
    assert_eq!(host.services().stats().reassembly.to_stack, 2);
    assert_eq!(refused(&counters), Some(1));
    assert_eq!(counters.snapshot().tx_dropped, 1);
}

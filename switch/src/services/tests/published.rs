//! Published TCP and UDP ports: from the client's own address, and a
//! loopback client presented from the gateway's.

use super::*;

#[test]
fn a_published_tcp_port_connects_into_the_container_from_the_clients_address() {
    let mut s = services(true);
    let container = SocketAddrV4::new(HOST, 80);
    let client = SocketAddrV4::new(OUTSIDE, 443);
    let key = FlowKey::tcp(container, client);
    let mut out = Vec::new();
    assert!(s.published_connection(at(0), container, client, &mut out));
    assert_eq!(out, vec![Output::Stack(StackCommand::Connect(key))]);
    // The container's SYN-ACK (to the client's address) goes to the stack
    // that is connecting, not absorbed as an outbound SYN's would be.
    let syn_ack = tcp_frame(80, TcpControl::Syn, Some(1));
    assert_eq!(
        s.frame(at(0), &syn_ack, 0, &mut Vec::new()),
        Verdict::ToStack
    );
    out.clear();
    s.tcp(at(0), key, TcpEvent::ContainerConnected, &mut out);
    assert!(out.is_empty());
    assert_eq!(s.flows().get(&key).unwrap().state_name(), "ESTABLISHED");
    // A container that refuses: the client is reset.
    let refused_client = SocketAddrV4::new(OUTSIDE, 444);
    let refused = FlowKey::tcp(container, refused_client);
    assert!(s.published_connection(at(1), container, refused_client, &mut out));
    out.clear();
    s.tcp(
        at(1),
        refused,
        TcpEvent::ContainerConnectFailed(ConnectFailure::Refused),
        &mut out,
    );
    assert_eq!(
        out,
        vec![
            Output::Host(HostCommand::Reset(refused)),
            Output::Host(HostCommand::Close(refused)),
            Output::Stack(StackCommand::Forget(refused))
        ]
    );
}

#[test]
fn a_published_udp_port_delivers_from_the_client_and_relays_answers() {
    let mut s = services(true);
    let container = SocketAddrV4::new(HOST, 53);
    let client = SocketAddrV4::new(OUTSIDE, 4000);
    let key = FlowKey::udp(container, client);
    let mut out = Vec::new();
    // The container has sent nothing yet: its MAC comes from IPAM.
    s.published_datagram(at(0), container, client, b"query", &mut out);
    assert!(out.is_empty());
    assert_eq!(s.stats().no_neighbor, 1);
    s.set_neighbor(HOST, HOST_MAC);
    s.published_datagram(at(0), container, client, b"query", &mut out);
    let (src, dst, payload) = udp_of(&to_container(&out[0]));
    assert_eq!((src, dst), (client, container), "the client's own address");
    assert_eq!(payload, b"query");
    assert_eq!(s.flows().get(&key).unwrap().state_name(), "UNREPLIED");
    // The container's answer goes back out through the published socket.
    out.clear();
    let answer = udp_frame(53, client, b"answer");
    assert_eq!(s.frame(at(1), &answer, 0, &mut out), Verdict::Consumed);
    assert_eq!(
        out,
        vec![Output::Host(HostCommand::Send {
            key,
            payload: b"answer".to_vec()
        })]
    );
    assert_eq!(s.flows().get(&key).unwrap().state_name(), "REPLIED");
}

#[test]
fn a_loopback_client_is_presented_from_the_gateway_and_its_answers_are_the_flows() {
    let mut s = services(true);
    s.set_neighbor(HOST, HOST_MAC);
    let loopback = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 40_000);
    let seen = s.presented_client(loopback);
    assert_eq!(
        seen,
        SocketAddrV4::new(GW, 40_000),
        "the gateway, same port"
    );
    let outside = SocketAddrV4::new(OUTSIDE, 40_000);
    assert_eq!(
        s.presented_client(outside),
        outside,
        "everyone else keeps theirs"
    );

    // UDP: delivered from the gateway's address; the answer to it is the
    // flow's, not the gateway's own stack's.
    let container = SocketAddrV4::new(HOST, 53);
    let key = FlowKey::udp(container, seen);
    let mut out = Vec::new();
    s.published_datagram(at(0), container, seen, b"query", &mut out);
    let (src, dst, _) = udp_of(&to_container(&out[0]));
    assert_eq!((src, dst), (seen, container));
    out.clear();
    let answer = udp_frame(53, seen, b"answer");
    assert_eq!(s.frame(at(1), &answer, 0, &mut out), Verdict::Consumed);
    assert_eq!(
        out,
        vec![Output::Host(HostCommand::Send {
            key,
            payload: b"answer".to_vec()
        })]
    );
    // Another port of the gateway's address is still the gateway's own.
    let other = udp_frame(53, SocketAddrV4::new(GW, 40_001), b"x");
    assert_eq!(s.frame(at(1), &other, 0, &mut Vec::new()), Verdict::ToStack);

    // TCP: the container's SYN-ACK to the gateway's address goes to the
    // stack as the flow's (the relay is told), not as the gateway's own.
    let web = SocketAddrV4::new(HOST, 80);
    let tcp_key = FlowKey::tcp(web, seen);
    assert!(s.published_connection(at(2), web, seen, &mut Vec::new()));
    s.take_stack_flows();
    let syn_ack = tcp_frame_to(80, seen, TcpControl::Syn, Some(1));
    assert_eq!(
        s.frame(at(2), &syn_ack, 0, &mut Vec::new()),
        Verdict::ToStack
    );
    assert!(s.take_stack_flows().contains(&tcp_key));
    let stray = tcp_frame_to(80, SocketAddrV4::new(GW, 40_002), TcpControl::Syn, Some(1));
    assert_eq!(s.frame(at(2), &stray, 0, &mut Vec::new()), Verdict::ToStack);
    assert!(s.take_stack_flows().is_empty(), "the gateway's own segment");
}

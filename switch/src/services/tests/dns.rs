//! DNS at the gateway: names of the network, forwarding over UDP and TCP.

use super::*;

/// The one query in `out` forwarded upstream: where to, and the message.
fn forwarded(out: &[Output]) -> (SocketAddr, Message) {
    let [Output::Host(HostCommand::SendDns(query))] = out else {
        panic!("expected a forwarded query: {out:?}");
    };
    (query.upstream, Message::from_vec(&query.bytes).unwrap())
}

/// The services given `upstream`'s answer to `sent` (its questions, and
/// `answers`); what they send on.
fn answer_from_upstream(
    s: &mut Services,
    upstream: SocketAddr,
    sent: &Message,
    answers: Vec<Record>,
) -> Vec<Output> {
    let mut reply = Message::response(sent.metadata.id, OpCode::Query);
    reply.add_queries(sent.queries.clone());
    for answer in answers {
        reply.add_answer(answer);
    }
    let mut back = Vec::new();
    s.dns_reply(Instant::ZERO, upstream, &reply.to_vec().unwrap(), &mut back);
    back
}

#[test]
fn names_of_the_network_are_answered_at_the_gateway() {
    let mut s = services(true);
    let mut out = Vec::new();
    let frame = udp_frame(5555, SocketAddrV4::new(GW, 53), &query(7, "web."));
    assert_eq!(s.frame(at(0), &frame, 0, &mut out), Verdict::Consumed);
    assert_eq!(out.len(), 1);
    let (src, dst, payload) = udp_of(&to_container(&out[0]));
    assert_eq!(src, SocketAddrV4::new(GW, 53));
    assert_eq!(dst, SocketAddrV4::new(HOST, 5555));
    let answer = Message::from_vec(&payload).unwrap();
    assert_eq!(answer.metadata.id, 7);
    assert!(matches!(answer.answers[0].data, RData::A(A(ip)) if ip == HOST));
}

#[test]
fn other_names_go_upstream_and_come_back_or_fail_after_the_timeout() {
    let mut s = services(true);
    let mut out = Vec::new();
    let frame = udp_frame(5555, SocketAddrV4::new(GW, 53), &query(9, "example.com."));
    s.frame(at(0), &frame, 0x2222, &mut out);
    let (upstream, sent) = forwarded(&out);
    assert_eq!(upstream, UPSTREAM.parse::<SocketAddr>().unwrap());
    assert_eq!(sent.metadata.id, 0x2222);
    // The upstream's answer goes back to the container under its id.
    let address = Record::from_rdata(
        sent.queries[0].name().clone(),
        60,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 80))),
    );
    let back = answer_from_upstream(&mut s, upstream, &sent, vec![address]);
    let (_, dst, payload) = udp_of(&to_container(&back[0]));
    assert_eq!(dst, SocketAddrV4::new(HOST, 5555));
    assert_eq!(Message::from_vec(&payload).unwrap().metadata.id, 9);

    // A query nobody answers: SERVFAIL once the (only) upstream timed out.
    let mut out = Vec::new();
    let frame = udp_frame(5556, SocketAddrV4::new(GW, 53), &query(10, "slow.example."));
    s.frame(at(10), &frame, 0x3333, &mut out);
    assert_eq!(s.next_deadline(), Some(at(12)));
    let mut late = Vec::new();
    s.timers(at(12), &mut late);
    let (_, dst, payload) = udp_of(&to_container(&late[0]));
    assert_eq!(dst.port(), 5556);
    let servfail = Message::from_vec(&payload).unwrap();
    assert_eq!(
        (servfail.metadata.id, servfail.metadata.response_code),
        (10, ResponseCode::ServFail)
    );
}

#[test]
fn dns_over_tcp_answers_on_the_connection_locally_forwarded_or_after_the_timeout() {
    let mut s = services(true);
    let client = SocketAddrV4::new(HOST, 40000);
    let tcp_answer = |out: &[Output]| -> Message {
        let [Output::DnsTcp { client: to, bytes }] = out else {
            panic!("expected an answer on the connection: {out:?}");
        };
        assert_eq!(*to, client);
        Message::from_vec(bytes).unwrap()
    };
    // A container's name: answered at once, on the connection.
    let mut out = Vec::new();
    s.dns_tcp_query(at(0), client, &query(1, "web."), 0x1111, &mut out);
    let answer = tcp_answer(&out);
    assert_eq!(answer.metadata.id, 1);
    assert!(matches!(answer.answers[0].data, RData::A(A(ip)) if ip == HOST));

    // Another name: forwarded over UDP, its answer back on the connection
    // (not as a datagram to the same endpoint).
    let mut out = Vec::new();
    s.dns_tcp_query(at(0), client, &query(2, "example.com."), 0x2222, &mut out);
    let (upstream, sent) = forwarded(&out);
    let back = answer_from_upstream(&mut s, upstream, &sent, Vec::new());
    assert_eq!(tcp_answer(&back).metadata.id, 2);

    // Nobody answers: SERVFAIL on the connection after the timeout.
    let mut out = Vec::new();
    s.dns_tcp_query(at(10), client, &query(3, "slow.example."), 0x3333, &mut out);
    let mut late = Vec::new();
    s.timers(at(13), &mut late);
    let failed = tcp_answer(&late);
    assert_eq!(failed.metadata.id, 3);
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);

    // The same endpoint asking over UDP later is answered as a datagram.
    let mut out = Vec::new();
    let frame = udp_frame(40000, SocketAddrV4::new(GW, 53), &query(4, "example.org."));
    s.frame(at(20), &frame, 0x4444, &mut out);
    let (upstream, sent) = forwarded(&out);
    let back = answer_from_upstream(&mut s, upstream, &sent, Vec::new());
    assert!(matches!(back.as_slice(), [Output::Frame(_)]), "{back:?}");
}

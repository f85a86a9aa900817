//! The responder and the forwarder with real DNS messages, on a fake clock.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::dns::{
    DEFAULT_DOMAIN, DnsDrop, DnsResponder, DnsVerdict, Expired, Forwarder, NameTable, NotForwarded,
    Outgoing, Question,
};
use crate::time::Instant;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
const WEB: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);

fn responder() -> DnsResponder {
    let mut names = NameTable::new(DEFAULT_DOMAIN, GATEWAY);
    names.insert("web", WEB);
    DnsResponder::new(names)
}

fn query(id: u16, name: &str, qtype: RecordType) -> Message {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message
}

fn bytes(message: &Message) -> Vec<u8> {
    message.to_vec().unwrap()
}

/// Runs a query and decodes the answer.
fn ask(responder: &mut DnsResponder, message: &Message) -> Message {
    match responder.handle(&bytes(message)) {
        DnsVerdict::Answer(answer) => Message::from_vec(&answer).unwrap(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn addresses(answer: &Message) -> Vec<Ipv4Addr> {
    answer
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}

#[test]
fn a_container_name_gets_an_authoritative_a_record() {
    let mut responder = responder();
    for name in ["web.", "WEB.tapswitch.internal."] {
        let answer = ask(&mut responder, &query(0x1234, name, RecordType::A));
        assert_eq!(answer.metadata.id, 0x1234);
        assert_eq!(answer.metadata.message_type, MessageType::Response);
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert!(answer.metadata.authoritative);
        assert!(answer.metadata.recursion_desired && answer.metadata.recursion_available);
        assert_eq!(answer.queries.len(), 1);
        assert_eq!(addresses(&answer), vec![WEB]);
        assert_eq!(answer.answers[0].ttl, 600);
    }
    let host = ask(
        &mut responder,
        &query(1, "host.tapswitch.internal.", RecordType::A),
    );
    assert_eq!(addresses(&host), vec![GATEWAY]);
    assert_eq!(responder.stats().answered, 3);
}

#[test]
fn aaaa_for_a_known_name_is_an_empty_noerror() {
    let mut responder = responder();
    let answer = ask(&mut responder, &query(7, "web.", RecordType::AAAA));
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.answers.is_empty());
    let mx = ask(&mut responder, &query(8, "web.", RecordType::MX));
    assert_eq!(mx.metadata.response_code, ResponseCode::NoError);
    assert!(mx.answers.is_empty());
    let any = ask(&mut responder, &query(9, "web.", RecordType::ANY));
    assert_eq!(addresses(&any), vec![WEB]);
}

#[test]
fn unknown_names_of_the_own_domain_do_not_exist() {
    let mut responder = responder();
    let answer = ask(
        &mut responder,
        &query(3, "nobody.tapswitch.internal.", RecordType::A),
    );
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert!(answer.metadata.authoritative);
    assert_eq!(responder.stats().nxdomain, 1);
    let apex = ask(
        &mut responder,
        &query(4, "tapswitch.internal.", RecordType::A),
    );
    assert_eq!(apex.metadata.response_code, ResponseCode::NoError);
    assert!(apex.answers.is_empty());
}

#[test]
fn other_names_are_forwarded_with_their_question() {
    let mut responder = responder();
    for name in ["example.com.", "nobody."] {
        let verdict = responder.handle(&bytes(&query(5, name, RecordType::A)));
        assert_eq!(
            verdict,
            DnsVerdict::Forward(Question {
                name: name.to_string(),
                qtype: 1,
                qclass: 1,
            })
        );
    }
    // Another class is not ours either.
    let mut chaos = query(6, "web.", RecordType::TXT);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert!(matches!(
        responder.handle(&bytes(&chaos)),
        DnsVerdict::Forward(_)
    ));
    assert_eq!(responder.stats().forwarded, 3);
}

#[test]
fn reverse_lookups_of_our_addresses_answer_ptr_and_others_are_forwarded() {
    let mut responder = responder();
    let answer = ask(
        &mut responder,
        &query(1, "2.0.17.172.in-addr.arpa.", RecordType::PTR),
    );
    let RData::PTR(target) = &answer.answers[0].data else {
        panic!("not a PTR: {answer:?}");
    };
    assert_eq!(target.0.to_ascii(), "web.tapswitch.internal.");
    assert!(matches!(
        responder.handle(&bytes(&query(
            2,
            "9.9.17.172.in-addr.arpa.",
            RecordType::PTR
        ))),
        DnsVerdict::Forward(_)
    ));
    assert!(matches!(
        responder.handle(&bytes(&query(3, "2.0.17.172.in-addr.arpa.", RecordType::A))),
        DnsVerdict::Forward(_)
    ));
}

#[test]
fn an_edns_query_gets_an_opt_record_back() {
    let mut responder = responder();
    let mut message = query(11, "web.", RecordType::A);
    message.set_edns(Edns::new());
    let answer = ask(&mut responder, &message);
    assert_eq!(answer.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    let plain = ask(&mut responder, &query(12, "web.", RecordType::A));
    assert!(plain.edns.is_none());
}

#[test]
fn malformed_and_odd_messages_are_counted_never_a_panic() {
    let mut responder = responder();
    // Too short for a header: nothing to answer.
    assert_eq!(
        responder.handle(&[0x12, 0x34, 0x01]),
        DnsVerdict::Drop(DnsDrop::Runt)
    );
    // A header claiming a question that is not there: FORMERR, same id.
    let mut truncated = bytes(&query(0xbeef, "web.", RecordType::A));
    truncated.truncate(14);
    let DnsVerdict::Answer(formerr) = responder.handle(&truncated) else {
        panic!("expected FORMERR");
    };
    let formerr = Message::from_vec(&formerr).unwrap();
    assert_eq!(formerr.metadata.id, 0xbeef);
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    // A response sent to the server is dropped.
    let mut response = query(1, "web.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    assert_eq!(
        responder.handle(&bytes(&response)),
        DnsVerdict::Drop(DnsDrop::NotAQuery)
    );
    // Two questions: FORMERR. No question: FORMERR.
    let mut two = query(2, "web.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("db.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        ask(&mut responder, &two).metadata.response_code,
        ResponseCode::FormErr
    );
    let none = Message::new(3, MessageType::Query, OpCode::Query);
    assert_eq!(
        ask(&mut responder, &none).metadata.response_code,
        ResponseCode::FormErr
    );
    // Another opcode: NOTIMP.
    let mut status = query(4, "web.", RecordType::A);
    status.metadata.op_code = OpCode::Status;
    assert_eq!(
        ask(&mut responder, &status).metadata.response_code,
        ResponseCode::NotImp
    );
    let stats = responder.stats();
    assert_eq!(
        (stats.malformed, stats.not_a_query, stats.refused),
        (2, 1, 3)
    );
    // Random garbage of every length up to 64 bytes: whatever the verdict,
    // no panic, and every message is counted.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for len in 0..64 {
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        responder.handle(&garbage);
    }
    assert_eq!(responder.stats().queries, 6 + 64);
}

// --- the forwarder ---

const UPSTREAM_1: &str = "192.0.2.53:53";
const UPSTREAM_2: &str = "198.51.100.53:53";
const CLIENT: &str = "172.17.0.2:41000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn forwarder() -> Forwarder {
    Forwarder::new(vec![addr(UPSTREAM_1), addr(UPSTREAM_2)]).with_limits(Duration::from_secs(2), 4)
}

fn question(name: &str) -> Question {
    Question {
        name: name.to_string(),
        qtype: 1,
        qclass: 1,
    }
}

/// What `fw` sends upstream for `message` (asking its first question)
/// from the client at `now`, `random_id` the caller's fresh random number.
fn forwarded(fw: &mut Forwarder, now: Instant, message: &Message, random_id: u16) -> Outgoing {
    let name = message.queries[0].name().to_ascii();
    fw.forward(
        now,
        addr(CLIENT),
        &bytes(message),
        question(&name),
        random_id,
    )
    .unwrap()
}

/// The upstream's answer to `sent` (a forwarded query): an A record for
/// each of `ips`.
fn answer_to(sent: &[u8], ips: impl IntoIterator<Item = Ipv4Addr>) -> Message {
    let query = Message::from_vec(sent).unwrap();
    let mut answer = Message::response(query.metadata.id, OpCode::Query);
    answer.add_queries(query.queries.clone());
    let name = query.queries[0].name().clone();
    for ip in ips {
        answer.add_answer(Record::from_rdata(name.clone(), 60, RData::A(A(ip))));
    }
    answer
}

/// The upstream's answer to `sent`: `ip`.
fn upstream_answer(sent: &[u8], ip: Ipv4Addr) -> Vec<u8> {
    bytes(&answer_to(sent, [ip]))
}

#[test]
fn a_forwarded_query_goes_out_under_a_new_id_and_comes_back_under_the_old() {
    let mut fw = forwarder();
    let message = query(0x1111, "example.com.", RecordType::A);
    let original = bytes(&message);
    let out = forwarded(&mut fw, Instant::ZERO, &message, 0x9999);
    assert_eq!(out.upstream, addr(UPSTREAM_1));
    assert_eq!(&out.bytes[..2], &[0x99, 0x99]);
    assert_eq!(&out.bytes[2..], &original[2..]);
    assert_eq!(fw.pending(), 1);

    let answer = upstream_answer(&out.bytes, Ipv4Addr::new(93, 184, 216, 34));
    let reply = fw.reply(addr(UPSTREAM_1), &answer).unwrap();
    assert_eq!(reply.client, addr(CLIENT));
    let decoded = Message::from_vec(&reply.bytes).unwrap();
    assert_eq!(decoded.metadata.id, 0x1111);
    assert_eq!(addresses(&decoded), vec![Ipv4Addr::new(93, 184, 216, 34)]);
    assert_eq!(fw.pending(), 0);
    // The same answer again is late: dropped.
    assert!(fw.reply(addr(UPSTREAM_1), &answer).is_none());
    assert_eq!((fw.stats().answered, fw.stats().unmatched), (1, 1));
}

#[test]
fn answers_from_the_wrong_server_or_to_another_question_are_dropped() {
    let mut fw = forwarder();
    let message = query(1, "example.com.", RecordType::A);
    let out = forwarded(&mut fw, Instant::ZERO, &message, 42);
    let answer = upstream_answer(&out.bytes, Ipv4Addr::new(192, 0, 2, 1));
    assert!(fw.reply(addr("203.0.113.66:53"), &answer).is_none());
    assert!(fw.reply(addr(UPSTREAM_2), &answer).is_none());
    // Same id, other question: a spoof.
    let mut spoof = Message::from_vec(&answer).unwrap();
    spoof.queries[0].set_name(Name::from_ascii("evil.example.").unwrap());
    assert!(fw.reply(addr(UPSTREAM_1), &bytes(&spoof)).is_none());
    // A query (not a response) with the id, and garbage.
    assert!(fw.reply(addr(UPSTREAM_1), &out.bytes).is_none());
    assert!(fw.reply(addr(UPSTREAM_1), &[0, 42, 0x80]).is_none());
    assert_eq!(fw.stats().unmatched, 5);
    // The real answer still gets through.
    assert!(fw.reply(addr(UPSTREAM_1), &answer).is_some());
}

#[test]
fn ids_in_use_are_not_handed_out_twice() {
    let mut fw = forwarder();
    let q = query(1, "a.example.", RecordType::A);
    let first = forwarded(&mut fw, Instant::ZERO, &q, 7);
    let second = forwarded(&mut fw, Instant::ZERO, &q, 7);
    assert_eq!(&first.bytes[..2], &[0, 7]);
    assert_eq!(&second.bytes[..2], &[0, 8]);
    let wraps = forwarded(&mut fw, Instant::ZERO, &q, u16::MAX);
    assert_eq!(&wraps.bytes[..2], &[0xff, 0xff]);
}

#[test]
fn a_silent_upstream_is_given_up_for_the_next_then_servfail() {
    let mut fw = forwarder();
    let message = query(0x0abc, "slow.example.", RecordType::A);
    let out = forwarded(&mut fw, Instant::from_secs(10), &message, 5);
    assert_eq!(fw.next_deadline(), Some(Instant::from_secs(12)));
    assert!(fw.expire(Instant::from_secs(11)).is_empty());
    let retry = fw.expire(Instant::from_secs(12));
    assert_eq!(
        retry,
        vec![Expired::Retry(Outgoing {
            tcp: false,
            upstream: addr(UPSTREAM_2),
            bytes: out.bytes.clone(),
        })]
    );
    // The first upstream's late answer no longer counts; the second's does.
    let late = upstream_answer(&out.bytes, Ipv4Addr::new(192, 0, 2, 1));
    assert!(fw.reply(addr(UPSTREAM_1), &late).is_none());
    let gave_up = fw.expire(Instant::from_secs(14));
    let [Expired::GiveUp(reply)] = gave_up.as_slice() else {
        panic!("expected SERVFAIL, got {gave_up:?}");
    };
    assert_eq!(reply.client, addr(CLIENT));
    let servfail = Message::from_vec(&reply.bytes).unwrap();
    assert_eq!(servfail.metadata.id, 0x0abc);
    assert_eq!(servfail.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(servfail.queries[0].name().to_ascii(), "slow.example.");
    assert_eq!(fw.pending(), 0);
    assert_eq!((fw.stats().retried, fw.stats().timed_out), (1, 1));
}

#[test]
fn no_upstream_or_a_full_table_answers_servfail_at_once() {
    let mut none = Forwarder::new(Vec::new());
    let q = bytes(&query(77, "x.example.", RecordType::A));
    let Err(NotForwarded::Unavailable(reply)) =
        none.forward(Instant::ZERO, addr(CLIENT), &q, question("x.example."), 1)
    else {
        panic!("expected SERVFAIL");
    };
    let servfail = Message::from_vec(&reply.bytes).unwrap();
    assert_eq!(
        (servfail.metadata.id, servfail.metadata.response_code),
        (77, ResponseCode::ServFail)
    );

    let mut fw = forwarder();
    for id in 0..4 {
        forwarded(
            &mut fw,
            Instant::ZERO,
            &query(77, "x.example.", RecordType::A),
            id,
        );
    }
    assert!(matches!(
        fw.forward(Instant::ZERO, addr(CLIENT), &q, question("x.example."), 9),
        Err(NotForwarded::Unavailable(_))
    ));
    assert_eq!(fw.stats().unavailable, 1);
    assert_eq!(
        fw.forward(Instant::ZERO, addr(CLIENT), &[1], question("x."), 9),
        Err(NotForwarded::Malformed)
    );
}

#[test]
fn every_single_byte_corruption_of_real_messages_is_survived() {
    // Each byte of a query and of an upstream answer, set to a few values:
    // the responder and the forwarder must answer, forward or drop, never
    // panic, and the forwarder must not pass on an answer whose question
    // no longer matches.
    let mut responder = responder();
    let mut query_message = query(0x4242, "www.example.com.", RecordType::A);
    query_message.set_edns(Edns::new());
    let original = bytes(&query_message);
    let mut fw = forwarder();
    let out = fw
        .forward(
            Instant::ZERO,
            addr(CLIENT),
            &original,
            question("www.example.com."),
            0x0101,
        )
        .unwrap();
    let answer = upstream_answer(&out.bytes, Ipv4Addr::new(192, 0, 2, 80));
    for message in [&original, &answer] {
        for index in 0..message.len() {
            for value in [0x00, 0x01, 0x3f, 0xc0, 0xff] {
                let mut corrupted = message.clone();
                corrupted[index] = value;
                responder.handle(&corrupted);
                if let Some(reply) = fw.reply(addr(UPSTREAM_1), &corrupted) {
                    // Only a corruption that left the id and the question
                    // intact may pass (the answer is passed on as the
                    // upstream wrote it, garbage included: the container's
                    // resolver judges it). Put the pending query back.
                    assert_eq!(&reply.bytes[..2], &[0x42, 0x42]);
                    assert_eq!(reply.bytes[2..], corrupted[2..]);
                    assert_eq!(corrupted[..2], [0x01, 0x01]);
                    let question_end = 12 + "www.example.com.".len() + 1 + 4;
                    assert_eq!(corrupted[12..question_end], answer[12..question_end]);
                    fw.forward(
                        Instant::ZERO,
                        addr(CLIENT),
                        &original,
                        question("www.example.com."),
                        0x0101,
                    )
                    .unwrap();
                }
            }
        }
    }
    assert!(responder.stats().queries > 0);
}

/// The upstream's answer to `sent` with `count` A records.
fn big_answer(sent: &[u8], count: u8) -> Message {
    answer_to(sent, (0..count).map(|i| Ipv4Addr::new(198, 51, 100, i)))
}

#[test]
fn a_truncated_udp_answer_is_asked_again_over_tcp_of_the_same_upstream() {
    let mut fw = forwarder();
    let message = query(0x2222, "big.example.", RecordType::A);
    let out = forwarded(&mut fw, Instant::ZERO, &message, 77);
    assert!(!out.tcp, "a UDP client's query goes out over UDP first");
    let mut truncated = Message::from_vec(&upstream_answer(&out.bytes, WEB)).unwrap();
    truncated.answers.clear();
    truncated.metadata.truncation = true;
    let truncated = bytes(&truncated);
    // From another server, it is nobody's.
    assert!(
        fw.retry_truncated(Instant::ZERO, addr(UPSTREAM_2), &truncated)
            .is_none()
    );
    let retry = fw
        .retry_truncated(Instant::from_secs(1), addr(UPSTREAM_1), &truncated)
        .expect("asked again over TCP");
    assert_eq!(retry.upstream, addr(UPSTREAM_1));
    assert!(retry.tcp);
    assert_eq!(retry.bytes, out.bytes, "the same query, the same id");
    // Already over TCP: a second truncated answer is not retried again.
    assert!(
        fw.retry_truncated(Instant::from_secs(1), addr(UPSTREAM_1), &truncated)
            .is_none()
    );
    // The attempt timer restarted with the retry.
    assert_eq!(fw.next_deadline(), Some(Instant::from_secs(3)));
    // The whole answer over TCP fits the client's 512 bytes: passed whole.
    let whole = bytes(&big_answer(&out.bytes, 4));
    let reply = fw.reply(addr(UPSTREAM_1), &whole).unwrap();
    let decoded = Message::from_vec(&reply.bytes).unwrap();
    assert_eq!(decoded.metadata.id, 0x2222);
    assert_eq!(decoded.answers.len(), 4);
    assert!(!decoded.metadata.truncation);
    let stats = fw.stats();
    assert_eq!((stats.truncated_retried, stats.sent_tcp), (1, 1));
}

#[test]
fn answers_too_big_for_a_udp_client_are_truncated_and_tcp_clients_get_them_whole() {
    let mut fw = forwarder();
    // A UDP client without EDNS takes 512 bytes.
    let plain = query(1, "many.example.", RecordType::A);
    let out = forwarded(&mut fw, Instant::ZERO, &plain, 10);
    let many = bytes(&big_answer(&out.bytes, 60));
    assert!(many.len() > 512);
    let reply = fw.reply(addr(UPSTREAM_1), &many).unwrap();
    assert!(reply.bytes.len() <= 512);
    let decoded = Message::from_vec(&reply.bytes).unwrap();
    assert!(decoded.metadata.truncation, "TC tells it to ask over TCP");
    assert_eq!(decoded.metadata.id, 1);
    assert_eq!(decoded.queries.len(), 1);
    assert!(decoded.answers.is_empty());

    // With EDNS's 4096 bytes the same answer fits.
    let mut with_edns = query(2, "many.example.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    with_edns.set_edns(edns);
    let out = forwarded(&mut fw, Instant::ZERO, &with_edns, 20);
    let reply = fw
        .reply(addr(UPSTREAM_1), &bytes(&big_answer(&out.bytes, 60)))
        .unwrap();
    assert_eq!(Message::from_vec(&reply.bytes).unwrap().answers.len(), 60);

    // A TCP client's query goes over TCP and its answer comes whole.
    let out = fw
        .forward_tcp(
            Instant::ZERO,
            addr(CLIENT),
            &bytes(&plain),
            question("many.example."),
            30,
        )
        .unwrap();
    assert!(out.tcp);
    let reply = fw
        .reply(addr(UPSTREAM_1), &bytes(&big_answer(&out.bytes, 60)))
        .unwrap();
    assert_eq!(Message::from_vec(&reply.bytes).unwrap().answers.len(), 60);
    assert_eq!(fw.stats().truncated_for_client, 1);
}

//! The gateway's DNS server, one query at a time: answer it from the
//! [`NameTable`], or say it must be forwarded.
//!
//! The rules, in order:
//!
//! 1. Fewer than 12 bytes (no header) or a message that is a response (QR
//!    set, e.g. a reflected answer): dropped, counted. Nothing to answer.
//! 2. A header that parses but a message that does not: FORMERR with the
//!    query's id (RFC 1035 4.1.1), counted as malformed.
//! 3. An opcode other than QUERY: NOTIMP. Not exactly one question: FORMERR
//!    (every resolver sends one; RFC 9619 makes it the rule).
//! 4. A name of the network ([`Lookup::Known`]): an A record for A or ANY
//!    questions; for every other type (AAAA above all: the networks are
//!    IPv4 only) NOERROR with no answer, which tells the resolver "the name
//!    exists, without that type" (RFC 2308 NODATA) so it does not wait for
//!    an AAAA that will never come.
//! 5. A name under the own domain that nobody has: NXDOMAIN.
//! 6. A reverse lookup of a container's or the gateway's address: PTR.
//! 7. Anything else, and any class but IN: forward to the upstream
//!    resolvers ([`crate::dns::Forwarder`]).
//!
//! Answers are authoritative (AA) for the own names, copy the question and
//! the RD bit, set RA (the gateway does recurse, through the upstreams),
//! and carry an OPT record when the query did (RFC 6891 6.1.1).

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use serde::Serialize;

use crate::dns::names::{Lookup, NameTable, parse_reverse_name};

/// Docker's embedded DNS gives its answers this TTL (seconds).
pub const ANSWER_TTL: u32 = 600;

/// The EDNS payload size the gateway announces: DNS Flag Day 2020's 1232
/// bytes, which fits any path MTU without fragmentation.
pub const EDNS_PAYLOAD: u16 = 1232;

/// The question of a query, kept to match the upstream's answer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Lowercase, with the trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

impl Question {
    pub(crate) fn of(query: &Query) -> Question {
        Question {
            name: query.name().to_lowercase().to_ascii(),
            qtype: query.query_type().into(),
            qclass: query.query_class().into(),
        }
    }
}

/// What to do with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsVerdict {
    /// Send these bytes back to the container.
    Answer(Vec<u8>),
    /// Ask the upstream resolvers ([`crate::dns::Forwarder::forward`]).
    Forward(Question),
    /// Send nothing; the reason was counted.
    Drop(DnsDrop),
}

/// Why a message got no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsDrop {
    /// Shorter than a DNS header.
    Runt,
    /// A response, not a query.
    NotAQuery,
    /// The answer could not be encoded (never expected; counted if it is).
    Encode,
}

/// What the responder did, for `tapswitch stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DnsStats {
    /// Messages handed to the responder.
    pub queries: u64,
    /// Answered from the name table (A, PTR or NODATA).
    pub answered: u64,
    /// Answered NXDOMAIN (a name of the own domain nobody has).
    pub nxdomain: u64,
    /// Passed to the upstream resolvers.
    pub forwarded: u64,
    /// Undecodable queries (answered FORMERR) and runts (dropped).
    pub malformed: u64,
    /// Queries refused for their shape: FORMERR (not one question) or
    /// NOTIMP (not a QUERY).
    pub refused: u64,
    /// Responses sent to the server, dropped.
    pub not_a_query: u64,
}

/// The DNS server of one network's gateway. Pure: bytes in, bytes out.
#[derive(Debug, Clone)]
pub struct DnsResponder {
    names: NameTable,
    stats: DnsStats,
}

impl DnsResponder {
    pub fn new(names: NameTable) -> DnsResponder {
        DnsResponder {
            names,
            stats: DnsStats::default(),
        }
    }

    /// Replaces the names (a container came or went).
    pub fn set_names(&mut self, names: NameTable) {
        self.names = names;
    }

    pub fn names(&self) -> &NameTable {
        &self.names
    }

    pub fn stats(&self) -> &DnsStats {
        &self.stats
    }

    /// Decides what to do with one query message (a UDP payload, or a TCP
    /// message without its length prefix). Never panics on any input.
    pub fn handle(&mut self, bytes: &[u8]) -> DnsVerdict {
        self.stats.queries += 1;
        let Some(header) = RawHeader::read(bytes) else {
            self.stats.malformed += 1;
            return DnsVerdict::Drop(DnsDrop::Runt);
        };
        if header.is_response {
            self.stats.not_a_query += 1;
            return DnsVerdict::Drop(DnsDrop::NotAQuery);
        }
        let Ok(query) = Message::from_vec(bytes) else {
            self.stats.malformed += 1;
            let reply = Message::error_msg(header.id, header.op_code, ResponseCode::FormErr);
            return self.encode(reply);
        };
        if query.metadata.op_code != OpCode::Query {
            self.stats.refused += 1;
            return self.encode(error_reply(&query, ResponseCode::NotImp));
        }
        let [question] = query.queries.as_slice() else {
            self.stats.refused += 1;
            return self.encode(error_reply(&query, ResponseCode::FormErr));
        };
        if question.query_class() != DNSClass::IN {
            self.stats.forwarded += 1;
            return DnsVerdict::Forward(Question::of(question));
        }
        let name = question.name().to_ascii();
        let mut reply = reply_to(&query);
        match self.names.lookup(&name) {
            Lookup::Known(ip) => {
                if matches!(question.query_type(), RecordType::A | RecordType::ANY) {
                    let record =
                        Record::from_rdata(question.name().clone(), ANSWER_TTL, RData::A(A(ip)));
                    reply.add_answer(record);
                }
                reply.metadata.authoritative = true;
                self.stats.answered += 1;
            }
            Lookup::Apex => {
                reply.metadata.authoritative = true;
                self.stats.answered += 1;
            }
            Lookup::UnknownInDomain => {
                reply.metadata.authoritative = true;
                reply.metadata.response_code = ResponseCode::NXDomain;
                self.stats.nxdomain += 1;
            }
            Lookup::Outside => {
                let ptr = parse_reverse_name(&name)
                    .and_then(|ip| self.names.name_of(ip))
                    .filter(|_| question.query_type() == RecordType::PTR)
                    .and_then(|target| Name::from_ascii(format!("{target}.")).ok());
                let Some(target) = ptr else {
                    self.stats.forwarded += 1;
                    return DnsVerdict::Forward(Question::of(question));
                };
                let record = Record::from_rdata(
                    question.name().clone(),
                    ANSWER_TTL,
                    RData::PTR(PTR(target)),
                );
                reply.add_answer(record);
                reply.metadata.authoritative = true;
                self.stats.answered += 1;
            }
        }
        self.encode(reply)
    }

    fn encode(&mut self, reply: Message) -> DnsVerdict {
        match reply.to_vec() {
            Ok(bytes) => DnsVerdict::Answer(bytes),
            Err(_) => DnsVerdict::Drop(DnsDrop::Encode),
        }
    }
}

/// A response to `query` with its id, opcode, question and RD bit.
fn reply_to(query: &Message) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_queries(query.queries.iter().cloned());
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        reply.set_edns(edns);
    }
    reply
}

fn error_reply(query: &Message, code: ResponseCode) -> Message {
    let mut reply = reply_to(query);
    reply.metadata.response_code = code;
    reply
}

/// The two header fields read before a full parse is tried, so even an
/// undecodable query gets its FORMERR with the right id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawHeader {
    pub(crate) id: u16,
    pub(crate) is_response: bool,
    pub(crate) op_code: OpCode,
}

impl RawHeader {
    pub(crate) fn read(bytes: &[u8]) -> Option<RawHeader> {
        let header = bytes.get(..12)?;
        let flags = header[2];
        Some(RawHeader {
            id: u16::from_be_bytes([header[0], header[1]]),
            is_response: flags & 0x80 != 0,
            op_code: OpCode::from_u8((flags >> 3) & 0x0f),
        })
    }
}

/// The message type of a reply, for tests and the forwarder.
pub(crate) fn is_response(message: &Message) -> bool {
    message.metadata.message_type == MessageType::Response
}

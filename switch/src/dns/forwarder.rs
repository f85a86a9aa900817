//! The bookkeeping of forwarded queries: which container asked what, under
//! which id, of which upstream, until when.
//!
//! A forwarded query leaves with a fresh random id (RFC 5452: ids an
//! off-path attacker cannot guess, since the containers' own ids are no
//! secret from each other), and the upstream's answer is accepted only if
//! it comes from the upstream asked, carries a pending id and repeats the
//! question asked. It then goes back to the container with the
//! container's id. An upstream that does not answer within
//! [`DEFAULT_ATTEMPT_TIMEOUT`] is given up on for the next one; when none
//! is left the container gets SERVFAIL rather than silence, so its resolver
//! moves on at once. The table is bounded ([`DEFAULT_MAX_PENDING`]); a
//! query past the bound is answered SERVFAIL at once.
//!
//! **Transports** (RFC 7766). A query that came over UDP goes upstream over
//! UDP; one that came over TCP goes over TCP ([`Forwarder::forward_tcp`]),
//! so an answer too large for a datagram still comes whole. An upstream's
//! UDP answer with the TC bit set is not passed on: the query is asked
//! again, of the same upstream, over TCP ([`Forwarder::retry_truncated`]).
//! An answer larger than a UDP client can take (512 bytes, or its EDNS
//! size) reaches it truncated, TC set, so its resolver asks us over TCP.
//!
//! Pure: the random id and the time are arguments.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use serde::Serialize;

use crate::dns::responder::{Question, is_response};
use crate::time::Instant;

/// Less than glibc's 5 s per-server timeout (`RES_TIMEOUT`), so the next
/// upstream is tried before the container's resolver gives up on us.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Queries in flight at once, all containers together.
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// A query on its way upstream.
#[derive(Debug, Clone)]
struct Pending {
    /// The container endpoint that asked.
    client: SocketAddr,
    /// The id the container used.
    client_id: u16,
    question: Question,
    /// The query as sent upstream (with our id), for a retry.
    query: Vec<u8>,
    /// Index into the upstream list.
    upstream: usize,
    deadline: Instant,
    /// The query goes (or went again) upstream over TCP.
    upstream_tcp: bool,
    /// The client asked over TCP (its answer goes back whole).
    client_tcp: bool,
}

/// Send `bytes` to `upstream`, over TCP (behind its two-byte length, on a
/// connection of its own) or as a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub upstream: SocketAddr,
    pub bytes: Vec<u8>,
    pub tcp: bool,
}

/// Send `bytes` back to the container at `client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub client: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What a timer did to a pending query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expired {
    /// Asked again, of the next upstream.
    Retry(Outgoing),
    /// No upstream left: SERVFAIL for the container.
    GiveUp(Reply),
}

/// Why a query could not be forwarded (the container gets the reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotForwarded {
    /// No upstream is configured, or too many queries are in flight:
    /// SERVFAIL.
    Unavailable(Reply),
    /// The query does not decode (the responder would have said so first).
    Malformed,
}

/// What the forwarder did, for `tapswitch stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ForwarderStats {
    /// Queries sent upstream (first attempts).
    pub sent: u64,
    /// Second and later attempts, to the next upstream.
    pub retried: u64,
    /// Answers passed back to a container.
    pub answered: u64,
    /// Queries given up on (SERVFAIL after every upstream timed out).
    pub timed_out: u64,
    /// Queries answered SERVFAIL at once: no upstream, or the table full.
    pub unavailable: u64,
    /// Upstream messages that matched nothing pending (late, spoofed, from
    /// the wrong server, with another question, undecodable): dropped.
    pub unmatched: u64,
    /// Queries sent upstream over TCP (first attempts, retries and the
    /// retries of truncated answers).
    pub sent_tcp: u64,
    /// Truncated UDP answers asked again over TCP.
    pub truncated_retried: u64,
    /// Answers truncated for a UDP client (larger than it can take).
    pub truncated_for_client: u64,
}

/// Forwarded queries in flight.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    pending: HashMap<u16, Pending>,
    attempt_timeout: Duration,
    max_pending: usize,
    stats: ForwarderStats,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder {
            upstreams,
            pending: HashMap::new(),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            stats: ForwarderStats::default(),
        }
    }

    pub fn with_limits(mut self, attempt_timeout: Duration, max_pending: usize) -> Forwarder {
        self.attempt_timeout = attempt_timeout;
        self.max_pending = max_pending;
        self
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    pub fn stats(&self) -> &ForwarderStats {
        &self.stats
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sends `query` (from `client`, asking `question`) to the first
    /// upstream under a new id; `random_id` is a fresh random number from
    /// the caller (if taken, the next free id after it is used).
    pub fn forward(
        &mut self,
        now: Instant,
        client: SocketAddr,
        query: &[u8],
        question: Question,
        random_id: u16,
    ) -> Result<Outgoing, NotForwarded> {
        self.forward_over(now, client, query, question, random_id, false)
    }

    /// As [`Forwarder::forward`] for a query that came over TCP: it goes
    /// upstream over TCP, and its answer comes back whole.
    pub fn forward_tcp(
        &mut self,
        now: Instant,
        client: SocketAddr,
        query: &[u8],
        question: Question,
        random_id: u16,
    ) -> Result<Outgoing, NotForwarded> {
        self.forward_over(now, client, query, question, random_id, true)
    }

    fn forward_over(
        &mut self,
        now: Instant,
        client: SocketAddr,
        query: &[u8],
        question: Question,
        random_id: u16,
        tcp: bool,
    ) -> Result<Outgoing, NotForwarded> {
        let Some(client_id) = query.get(..2).map(|id| u16::from_be_bytes([id[0], id[1]])) else {
            return Err(NotForwarded::Malformed);
        };
        let Some(&upstream) = self.upstreams.first() else {
            self.stats.unavailable += 1;
            return Err(NotForwarded::Unavailable(servfail(
                client, client_id, query,
            )));
        };
        if self.pending.len() >= self.max_pending.min(usize::from(u16::MAX)) {
            self.stats.unavailable += 1;
            return Err(NotForwarded::Unavailable(servfail(
                client, client_id, query,
            )));
        }
        let id = (0..=u16::MAX)
            .map(|offset| random_id.wrapping_add(offset))
            .find(|id| !self.pending.contains_key(id))
            .unwrap_or(random_id);
        let mut bytes = query.to_vec();
        bytes[..2].copy_from_slice(&id.to_be_bytes());
        self.pending.insert(
            id,
            Pending {
                client,
                client_id,
                question,
                query: bytes.clone(),
                upstream: 0,
                deadline: now + self.attempt_timeout,
                upstream_tcp: tcp,
                client_tcp: tcp,
            },
        );
        self.stats.sent += 1;
        self.stats.sent_tcp += u64::from(tcp);
        Ok(Outgoing {
            upstream,
            bytes,
            tcp,
        })
    }

    /// An upstream's UDP answer with the TC bit set, to a query pending
    /// over UDP: the same query goes to the same upstream over TCP (the
    /// answer is not passed on). `None` for any other message, which then
    /// goes to [`Forwarder::reply`].
    pub fn retry_truncated(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<Outgoing> {
        let message = Message::from_vec(bytes).ok()?;
        if !message.metadata.truncation {
            return None;
        }
        let id = message.metadata.id;
        let pending = self.pending.get(&id)?;
        let asked = self.upstreams.get(pending.upstream) == Some(&from);
        let same_question = matches!(message.queries.as_slice(),
            [question] if Question::of(question) == pending.question);
        if pending.upstream_tcp || !asked || !same_question || !is_response(&message) {
            return None;
        }
        let pending = self.pending.get_mut(&id)?;
        pending.upstream_tcp = true;
        pending.deadline = now + self.attempt_timeout;
        self.stats.truncated_retried += 1;
        self.stats.sent_tcp += 1;
        Some(Outgoing {
            upstream: from,
            bytes: pending.query.clone(),
            tcp: true,
        })
    }

    /// An upstream's message: the container's reply, if it answers a
    /// pending query from the upstream that was asked.
    pub fn reply(&mut self, from: SocketAddr, bytes: &[u8]) -> Option<Reply> {
        let Some(pending) = self.matching(from, bytes) else {
            self.stats.unmatched += 1;
            return None;
        };
        let mut out = bytes.to_vec();
        out[..2].copy_from_slice(&pending.client_id.to_be_bytes());
        if !pending.client_tcp
            && let Some(truncated) = truncate_for_udp(&pending.query, &out)
        {
            self.stats.truncated_for_client += 1;
            out = truncated;
        }
        self.stats.answered += 1;
        Some(Reply {
            client: pending.client,
            bytes: out,
        })
    }

    /// Removes and returns the pending query `bytes` answers, if it does.
    fn matching(&mut self, from: SocketAddr, bytes: &[u8]) -> Option<Pending> {
        let message = Message::from_vec(bytes).ok()?;
        if !is_response(&message) {
            return None;
        }
        let pending = self.pending.get(&message.metadata.id)?;
        if self.upstreams.get(pending.upstream) != Some(&from) {
            return None;
        }
        let [question] = message.queries.as_slice() else {
            return None;
        };
        if Question::of(question) != pending.question {
            return None;
        }
        self.pending.remove(&message.metadata.id)
    }

    /// Runs the attempt timers: retries of the next upstream, or SERVFAIL
    /// for the container when none is left. Sorted by id (deterministic).
    pub fn expire(&mut self, now: Instant) -> Vec<Expired> {
        let mut due: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            let Some(pending) = self.pending.get_mut(&id) else {
                continue;
            };
            let next = pending.upstream + 1;
            if let Some(&upstream) = self.upstreams.get(next) {
                pending.upstream = next;
                pending.deadline = now + self.attempt_timeout;
                // A retry after a truncated answer goes over TCP again
                // only if the client asked over TCP: the next upstream
                // may answer in one datagram.
                pending.upstream_tcp = pending.client_tcp;
                self.stats.retried += 1;
                self.stats.sent_tcp += u64::from(pending.client_tcp);
                out.push(Expired::Retry(Outgoing {
                    upstream,
                    bytes: pending.query.clone(),
                    tcp: pending.client_tcp,
                }));
            } else if let Some(pending) = self.pending.remove(&id) {
                self.stats.timed_out += 1;
                out.push(Expired::GiveUp(servfail(
                    pending.client,
                    pending.client_id,
                    &pending.query,
                )));
            }
        }
        out
    }

    /// When [`Forwarder::expire`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }
}

/// `answer` cut to what the client of `query` takes over UDP (512 bytes,
/// or the size its EDNS record announces): the header, the question and
/// the EDNS record, TC set (RFC 1035 4.2.1, RFC 6891 7). `None` when it
/// fits as it is (or does not decode: passed on as the upstream sent it).
fn truncate_for_udp(query: &[u8], answer: &[u8]) -> Option<Vec<u8>> {
    let limit = Message::from_vec(query).map_or(512, |q| q.max_payload());
    if answer.len() <= usize::from(limit) {
        return None;
    }
    Message::from_vec(answer).ok()?.truncate().to_vec().ok()
}

/// SERVFAIL for `query`, with the client's id and the question copied when
/// the query decodes.
fn servfail(client: SocketAddr, client_id: u16, query: &[u8]) -> Reply {
    let mut reply = Message::error_msg(client_id, OpCode::Query, ResponseCode::ServFail);
    if let Ok(original) = Message::from_vec(query) {
        reply.metadata.recursion_desired = original.metadata.recursion_desired;
        reply.add_queries(original.queries);
    }
    reply.metadata.recursion_available = true;
    // A header and one question always encode; an empty reply is the
    // fallback only if they did not.
    let bytes = reply.to_vec().unwrap_or_default();
    Reply { client, bytes }
}

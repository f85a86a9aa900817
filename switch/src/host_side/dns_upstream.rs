//! Forwarded DNS queries over TCP (RFC 7766): the queries containers asked
//! over TCP, and those whose UDP answer came back truncated. Each query
//! gets a connection of its own to its upstream: it is sent behind its
//! two-byte length, the first message read back is the answer (handed to
//! the services as a datagram answer is), and the connection closes. The
//! forwarder keeps the timers that matter (the next upstream, SERVFAIL);
//! a connection lives at most [`QUERY_TIMEOUT`], and at most
//! [`MAX_CONNECTIONS`] are open at once (beyond that the query is not sent
//! and the forwarder's timer moves on, as for a lost datagram).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use ports::host_socket::HostTcp;

use super::HostSide;
use crate::dns::{Framed, TcpFramer, tcp::frame};
use crate::time::Instant;

/// Connections to upstreams open at once.
const MAX_CONNECTIONS: usize = 64;
/// How long one connection may take to bring its answer: past the
/// forwarder's attempt timeout, so its retry decides, not this.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One query on its way over TCP.
#[derive(Debug)]
struct UpstreamQuery {
    host: HostTcp,
    upstream: SocketAddr,
    connecting: bool,
    /// The framed query, and how much of it is written.
    framed: Vec<u8>,
    written: usize,
    framer: TcpFramer,
    deadline: Instant,
}

/// The open connections, by their poll token.
#[derive(Debug, Default)]
pub(super) struct DnsUpstreams {
    queries: HashMap<Token, UpstreamQuery>,
}

impl DnsUpstreams {
    pub(super) fn owns(&self, token: Token) -> bool {
        self.queries.contains_key(&token)
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.queries.values().map(|q| q.deadline).min()
    }

    /// Connections open now (for the descriptor-count tests).
    pub(super) fn len(&self) -> usize {
        self.queries.len()
    }
}

impl HostSide {
    /// Opens a connection to `upstream` for the query `bytes`.
    pub(super) fn dns_upstream_send(&mut self, now: Instant, upstream: SocketAddr, bytes: &[u8]) {
        let opened = match (upstream, frame(bytes)) {
            _ if self.dns_upstreams.queries.len() >= MAX_CONNECTIONS => None,
            (SocketAddr::V4(v4), Some(framed)) => self.connect_upstream(v4, framed, now).ok(),
            _ => None,
        };
        if opened.is_none() {
            // The forwarder's timer tries the next upstream.
            self.socket_errors += 1;
        }
    }

    fn connect_upstream(
        &mut self,
        upstream: std::net::SocketAddrV4,
        framed: Vec<u8>,
        now: Instant,
    ) -> io::Result<()> {
        let host = HostTcp::connect(upstream)?;
        let token = self.new_token();
        self.registry.register(
            &mut SourceFd(&host.as_raw_fd()),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.dns_upstreams.queries.insert(
            token,
            UpstreamQuery {
                host,
                upstream: upstream.into(),
                connecting: true,
                framed,
                written: 0,
                framer: TcpFramer::new(),
                deadline: now + QUERY_TIMEOUT,
            },
        );
        Ok(())
    }

    /// A connection to an upstream is ready: writes what is left of the
    /// query, reads the answer; closes the connection once it has one, or
    /// on any error or end of stream.
    pub(super) fn dns_upstream_ready(&mut self, now: Instant, token: Token) {
        let Some(query) = self.dns_upstreams.queries.get_mut(&token) else {
            return;
        };
        let mut answers = Vec::new();
        let finished = drive(query, &mut self.scratch, &mut answers);
        let upstream = query.upstream;
        for answer in answers {
            self.services
                .dns_reply(now, upstream, &answer, &mut self.pending);
        }
        if finished {
            self.close_upstream(token);
        }
    }

    /// Closes the connections past their time.
    pub(super) fn dns_upstream_expire(&mut self, now: Instant) {
        let late: Vec<Token> = self
            .dns_upstreams
            .queries
            .iter()
            .filter(|(_, q)| now >= q.deadline)
            .map(|(token, _)| *token)
            .collect();
        for token in late {
            self.close_upstream(token);
        }
    }

    fn close_upstream(&mut self, token: Token) {
        if let Some(query) = self.dns_upstreams.queries.remove(&token) {
            let _ = self
                .registry
                .deregister(&mut SourceFd(&query.host.as_raw_fd()));
        }
    }
}

/// One readiness round of a connection; true when it is finished (an
/// answer came, or the connection failed or ended).
fn drive(query: &mut UpstreamQuery, scratch: &mut [u8], answers: &mut Vec<Vec<u8>>) -> bool {
    if query.connecting {
        match query.host.connect_result() {
            Ok(()) => query.connecting = false,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    while query.written < query.framed.len() {
        match query.host.write(&query.framed[query.written..]) {
            Ok(n) => query.written += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    loop {
        match query.host.read(scratch) {
            Ok(0) => return true,
            Ok(n) => {
                for message in query.framer.push(&scratch[..n]) {
                    match message {
                        Framed::Message(answer) => answers.push(answer),
                        Framed::Malformed => return true,
                    }
                }
                if !answers.is_empty() {
                    return true;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

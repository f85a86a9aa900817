//! DNS over TCP at the gateway's port 53 (RFC 7766): smoltcp sockets on
//! the gateway's own address take the containers' connections; each
//! connection's stream is cut into messages ([`TcpFramer`]) and every
//! message is answered by the services as a UDP query is (locally, or
//! forwarded to the upstreams over UDP); the answers go back with their
//! two-byte length.
//!
//! One socket always listens while fewer than [`MAX_CONNECTIONS`] are open
//! (a smoltcp socket serves one connection, so a new one listens as soon
//! as the last one is taken); beyond that a connection is refused with a
//! RST by the stack, as a full backlog would. A connection idle for
//! [`IDLE`] is closed (RFC 7766 6.2.3 lets the server close idle ones),
//! and its answers waiting beyond [`MAX_QUEUED`] bytes are dropped, so a
//! client that never reads holds at most that much.

use std::net::SocketAddrV4;
use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;
use smoltcp::wire::IpAddress;

use super::HostSide;
use crate::dns::{Framed, TcpFramer, tcp::frame};
use crate::gateway::Gateway;
use crate::time::Instant;

/// Connections to the gateway's DNS over TCP open at once.
const MAX_CONNECTIONS: usize = 32;
/// A connection's smoltcp buffers, each way.
const BUFFER: usize = 16 * 1024;
/// Answers queued for a connection beyond what its socket holds.
const MAX_QUEUED: usize = 128 * 1024;
/// How long a connection may stay silent.
const IDLE: Duration = Duration::from_secs(30);
const DNS_PORT: u16 = 53;

/// One container's connection.
#[derive(Debug)]
struct Connection {
    handle: SocketHandle,
    /// The container's endpoint (known once the connection is taken).
    client: Option<SocketAddrV4>,
    framer: TcpFramer,
    /// Framed answers not yet taken by the socket.
    queued: Vec<u8>,
    last_activity: Instant,
}

/// The gateway's DNS over TCP: the listening socket and the connections.
#[derive(Debug, Default)]
pub(super) struct DnsTcp {
    listener: Option<SocketHandle>,
    connections: Vec<Connection>,
}

impl DnsTcp {
    /// Makes sure a socket listens on `gateway_ip:53` (while there is room).
    fn listen(&mut self, gateway: &mut Gateway, gateway_ip: std::net::Ipv4Addr) {
        if self.listener.is_none() && self.connections.len() < MAX_CONNECTIONS {
            self.listener = gateway.tcp_listen(SocketAddrV4::new(gateway_ip, DNS_PORT), BUFFER);
        }
    }

    /// Connections open now (for tests and limits).
    pub(super) fn connections(&self) -> usize {
        self.connections.len()
    }
}

impl HostSide {
    /// Keeps a socket listening on the gateway's port 53; called before
    /// each frame reaches the stack, so the first SYN finds it.
    pub(super) fn dns_tcp_listen(&mut self, gateway: &mut Gateway) {
        self.dns_tcp.listen(gateway, self.gateway_ip);
    }

    /// Reads the queries that arrived, writes the answers that wait, and
    /// closes finished or idle connections.
    pub(super) fn dns_tcp_pump(&mut self, now: Instant, gateway: &mut Gateway) {
        if let Some(handle) = self.dns_tcp.listener
            && gateway.tcp(handle).state() != State::Listen
        {
            // Taken by a connection (or failed): a new one listens.
            self.dns_tcp.listener = None;
            self.dns_tcp.connections.push(Connection {
                handle,
                client: None,
                framer: TcpFramer::new(),
                queued: Vec::new(),
                last_activity: now,
            });
        }
        self.dns_tcp.listen(gateway, self.gateway_ip);
        let mut queries = Vec::new();
        let mut buf = [0u8; 4096];
        self.dns_tcp.connections.retain_mut(|conn| {
            let socket = gateway.tcp(conn.handle);
            if conn.client.is_none()
                && let Some(remote) = socket.remote_endpoint()
                && let IpAddress::Ipv4(ip) = remote.addr
            {
                conn.client = Some(SocketAddrV4::new(ip, remote.port));
            }
            while socket.can_recv() {
                let Ok(n) = socket.recv_slice(&mut buf) else {
                    break;
                };
                if n == 0 {
                    break;
                }
                conn.last_activity = now;
                for message in conn.framer.push(&buf[..n]) {
                    match (message, conn.client) {
                        (Framed::Message(query), Some(client)) => queries.push((client, query)),
                        // A zero length, which no resolver sends.
                        _ => socket.abort(),
                    }
                }
            }
            if !conn.queued.is_empty()
                && let Ok(n) = socket.send_slice(&conn.queued)
            {
                conn.queued.drain(..n);
            }
            let idle = now.saturating_since(conn.last_activity) >= IDLE;
            // The client closed its half and has every answer: close ours.
            let client_done = socket.state() == State::CloseWait && conn.queued.is_empty();
            if (idle || client_done) && socket.is_open() {
                socket.close();
            }
            let done = matches!(socket.state(), State::Closed | State::TimeWait)
                || (idle && now.saturating_since(conn.last_activity) >= IDLE * 2);
            if done {
                gateway.remove(conn.handle);
            }
            !done
        });
        for (client, query) in queries {
            let id = self.random_id();
            self.services
                .dns_tcp_query(now, client, &query, id, &mut self.pending);
        }
    }

    /// An answer for the connection from `client`: queued with its length
    /// (dropped if the connection is gone or its queue is full).
    pub(super) fn dns_tcp_answer(&mut self, client: SocketAddrV4, bytes: &[u8]) {
        let Some(conn) = self
            .dns_tcp
            .connections
            .iter_mut()
            .find(|c| c.client == Some(client))
        else {
            return;
        };
        match frame(bytes) {
            Some(framed) if conn.queued.len() + framed.len() <= MAX_QUEUED => {
                conn.queued.extend_from_slice(&framed);
            }
            _ => self.socket_errors += 1,
        }
    }
}

//! Published ports: the switch listens on the host port, and each client
//! becomes an inbound flow that the gateway opens into the container
//! *from the client's own address and port* (smoltcp's any-IP lets it send
//! from any address), so the container sees who called.
//!
//! UDP works the same way without smoltcp: each client endpoint is a flow
//! of the flow table (idle timeout as any UDP flow); its datagrams reach
//! the container from the client's address, and the container's answers,
//! which the classifier sees as datagrams of that flow, go back to the
//! client with `send_to` on the published socket (so they come from the
//! published port, as the client expects).
//!
//! A client on the host's loopback is presented from the gateway's address
//! (see `services::published`): its flow's key holds that address, and
//! `udp_clients` keeps each UDP client's real address for the answers.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use ports::host_socket::{HostDatagram, HostListener};

use super::{HostSide, Published};
use crate::flows::{FlowKey, Protocol};
use crate::time::Instant;

/// The host socket of a published port.
#[derive(Debug)]
pub(super) enum PublishedSocket {
    Tcp(HostListener),
    Udp(HostDatagram),
}

impl PublishedSocket {
    fn fd(&self) -> i32 {
        match self {
            PublishedSocket::Tcp(s) => s.as_raw_fd(),
            PublishedSocket::Udp(s) => s.as_raw_fd(),
        }
    }
}

impl HostSide {
    /// Listens on each published port (those already open stay) and stops
    /// listening on the others; returns those that could not be opened,
    /// with why (the switch goes on without them).
    pub fn publish(&mut self, published: &[Published]) -> Vec<(Published, io::Error)> {
        let gone: Vec<Token> = self
            .listeners
            .iter()
            .filter(|(_, (_, open))| !published.iter().any(|p| same_port(p, open)))
            .map(|(token, _)| *token)
            .collect();
        for token in gone {
            if let Some((socket, port)) = self.listeners.remove(&token) {
                let _ = self.registry.deregister(&mut SourceFd(&socket.fd()));
                self.udp_clients.retain(|_, (t, _)| *t != token);
                log::info!(
                    "unpublished {} -> container {} ({})",
                    port.host,
                    port.container,
                    port.protocol.as_str()
                );
            }
        }
        let mut failed = Vec::new();
        for port in published {
            if self
                .listeners
                .values()
                .any(|(_, open)| same_port(port, open))
            {
                continue;
            }
            if let Some(mac) = port.container_mac {
                self.services.set_neighbor(*port.container.ip(), mac);
            }
            match self.listen(port) {
                Ok(()) => log::info!(
                    "published {} -> container {} ({})",
                    port.host,
                    port.container,
                    port.protocol.as_str()
                ),
                Err(err) => failed.push((*port, err)),
            }
        }
        failed
    }

    fn listen(&mut self, port: &Published) -> io::Result<()> {
        let socket = match port.protocol {
            Protocol::Tcp => PublishedSocket::Tcp(HostListener::bind(port.host)?),
            Protocol::Udp => PublishedSocket::Udp(HostDatagram::bind(port.host)?),
            Protocol::Icmp => return Err(io::Error::from(io::ErrorKind::Unsupported)),
        };
        let token = self.new_token();
        self.registry
            .register(&mut SourceFd(&socket.fd()), token, Interest::READABLE)?;
        self.listeners.insert(token, (socket, *port));
        Ok(())
    }

    /// The network's containers changed: their names, for DNS.
    pub fn set_names(&mut self, names: &[(String, std::net::Ipv4Addr)]) {
        let mut table = crate::dns::NameTable::new(crate::dns::DEFAULT_DOMAIN, self.gateway_ip);
        for (name, ip) in names {
            table.insert(name, *ip);
        }
        self.services.set_names(table);
    }

    /// Published ports listened on now.
    pub fn published_count(&self) -> usize {
        self.listeners.len()
    }

    /// The published ports listened on now, as `docker ps` writes them
    /// (host endpoint, container port, protocol), sorted.
    pub fn listening(&self) -> Vec<String> {
        let mut ports: Vec<String> = self
            .listeners
            .values()
            .map(|(_, port)| {
                format!(
                    "{}->{}/{}",
                    port.host,
                    port.container.port(),
                    port.protocol.as_str()
                )
            })
            .collect();
        ports.sort();
        ports
    }

    /// A published port's socket is readable.
    pub(super) fn published_ready(&mut self, now: Instant, token: Token) {
        match self.listeners.get(&token) {
            Some((PublishedSocket::Tcp(_), _)) => self.accept_clients(now, token),
            Some((PublishedSocket::Udp(_), _)) => self.read_published(now, token),
            None => {}
        }
    }

    /// Takes every waiting client of the listener `token`.
    fn accept_clients(&mut self, now: Instant, token: Token) {
        loop {
            let Some((PublishedSocket::Tcp(listener), port)) = self.listeners.get(&token) else {
                return;
            };
            let container: SocketAddrV4 = port.container;
            let (stream, client) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    // Out of descriptors, or the client left already.
                    self.socket_errors += 1;
                    log::debug!("published port: accept failed: {err}");
                    return;
                }
            };
            let client = self.services.presented_client(client);
            let key = FlowKey::tcp(container, client);
            if self.adopt_tcp(key, stream).is_err() {
                self.socket_errors += 1;
                continue;
            }
            if !self
                .services
                .published_connection(now, container, client, &mut self.pending)
            {
                // A limit refused it (counted): the client is closed.
                self.tcp_close(key, false);
            }
        }
    }
}

impl HostSide {
    /// Reads every datagram waiting on the published UDP port `token`;
    /// each reaches the container from its client's address.
    fn read_published(&mut self, now: Instant, token: Token) {
        loop {
            let Some((PublishedSocket::Udp(socket), port)) = self.listeners.get(&token) else {
                return;
            };
            let container = port.container;
            let (n, client) = match socket.recv_from(&mut self.scratch) {
                Ok((n, std::net::SocketAddr::V4(client))) => (n, client),
                Ok(_) => continue,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock, or an ICMP error for an earlier answer.
                Err(_) => return,
            };
            let seen = self.services.presented_client(client);
            self.services.published_datagram(
                now,
                container,
                seen,
                &self.scratch[..n],
                &mut self.pending,
            );
            let key = FlowKey::udp(container, seen);
            if self.services.flows().get(&key).is_some() {
                self.udp_clients.insert(key, (token, client));
            }
        }
    }

    /// Sends a container's answer to a published UDP port's client, from
    /// the published socket; `None` if `key` is no such flow.
    pub(super) fn send_to_client(&self, key: FlowKey, payload: &[u8]) -> Option<io::Result<usize>> {
        let (token, client) = self.udp_clients.get(&key)?;
        match self.listeners.get(token) {
            Some((PublishedSocket::Udp(socket), _)) => {
                Some(socket.send_to(payload, (*client).into()))
            }
            _ => None,
        }
    }
}

/// The same publication: host endpoint, container endpoint and protocol.
fn same_port(a: &Published, b: &Published) -> bool {
    a.host == b.host && a.container == b.container && a.protocol == b.protocol
}

//! Published TCP ports: the switch listens on the host port, and each
//! client becomes an inbound flow that the gateway opens into the
//! container *from the client's own address and port* (smoltcp's any-IP
//! lets it send from any address), so the container sees who called.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use ports::host_socket::HostListener;

use super::{HostSide, Published};
use crate::flows::FlowKey;
use crate::time::Instant;

impl HostSide {
    /// Listens on each published port (those already open stay) and stops
    /// listening on the others; returns those that could not be opened,
    /// with why (the switch goes on without them).
    pub fn publish(&mut self, published: &[Published]) -> Vec<(Published, io::Error)> {
        let gone: Vec<Token> = self
            .listeners
            .iter()
            .filter(|(_, (_, container, host))| {
                !published
                    .iter()
                    .any(|p| p.host == *host && p.container == *container)
            })
            .map(|(token, _)| *token)
            .collect();
        for token in gone {
            if let Some((listener, container, host)) = self.listeners.remove(&token) {
                let _ = self
                    .registry
                    .deregister(&mut SourceFd(&listener.as_raw_fd()));
                log::info!("unpublished {host} -> container {container} (tcp)");
            }
        }
        let mut failed = Vec::new();
        for port in published {
            if self
                .listeners
                .values()
                .any(|(_, container, host)| *host == port.host && *container == port.container)
            {
                continue;
            }
            if let Some(mac) = port.container_mac {
                self.services.set_neighbor(*port.container.ip(), mac);
            }
            match self.listen(port) {
                Ok(()) => log::info!(
                    "published {} -> container {} (tcp)",
                    port.host,
                    port.container
                ),
                Err(err) => failed.push((*port, err)),
            }
        }
        failed
    }

    fn listen(&mut self, port: &Published) -> io::Result<()> {
        let listener = HostListener::bind(port.host)?;
        let token = self.new_token();
        self.registry.register(
            &mut SourceFd(&listener.as_raw_fd()),
            token,
            Interest::READABLE,
        )?;
        self.listeners
            .insert(token, (listener, port.container, port.host));
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

    /// Takes every waiting client of the listener `token`.
    pub(super) fn accept_clients(&mut self, now: Instant, token: Token) {
        loop {
            let Some((listener, container, _)) = self.listeners.get(&token) else {
                return;
            };
            let container: SocketAddrV4 = *container;
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

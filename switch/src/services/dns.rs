//! DNS at the gateway's address: queries answered by the responder or
//! forwarded to the upstreams, and the upstreams' answers back to the
//! client, over UDP or over the client's TCP connection.

use std::net::{SocketAddr, SocketAddrV4};

use super::{DNS_PORT, HostCommand, Output, Services, udp_packet};
use crate::dns::{DnsVerdict, NotForwarded};
use crate::time::Instant;

impl Services {
    /// A DNS query (one message, its length taken off) from the container's
    /// TCP connection from `client` to the gateway's port 53. `random_id`
    /// as for [`Services::frame`].
    pub fn dns_tcp_query(
        &mut self,
        now: Instant,
        client: SocketAddrV4,
        payload: &[u8],
        random_id: u16,
        out: &mut Vec<Output>,
    ) {
        self.dns_query(now, client, payload, random_id, true, out);
    }

    /// A query to the gateway's port 53 from `client`, on its TCP
    /// connection (`tcp`) or in a datagram: answered by the responder,
    /// forwarded (over TCP for a TCP client, whose answer then goes back on
    /// its connection), or SERVFAIL at once when no upstream can take it.
    /// `random_id` as for [`Services::frame`].
    pub(super) fn dns_query(
        &mut self,
        now: Instant,
        client: SocketAddrV4,
        payload: &[u8],
        random_id: u16,
        tcp: bool,
        out: &mut Vec<Output>,
    ) {
        let question = match self.dns.handle(payload) {
            DnsVerdict::Answer(bytes) => return self.dns_answer(client, bytes, tcp, out),
            DnsVerdict::Forward(question) => question,
            DnsVerdict::Drop(_) => return,
        };
        let forwarder = &mut self.forwarder;
        let sent = if tcp {
            forwarder.forward_tcp(now, client.into(), payload, question, random_id)
        } else {
            forwarder.forward(now, client.into(), payload, question, random_id)
        };
        match sent {
            Ok(query) => {
                if tcp {
                    *self.tcp_dns_waiting.entry(client).or_default() += 1;
                }
                out.push(Output::Host(HostCommand::SendDns(query)));
            }
            Err(NotForwarded::Unavailable(reply)) => self.dns_answer(client, reply.bytes, tcp, out),
            Err(NotForwarded::Malformed) => {}
        }
    }

    /// An answer to `client`'s query: on its TCP connection, or as a
    /// datagram.
    fn dns_answer(
        &mut self,
        client: SocketAddrV4,
        bytes: Vec<u8>,
        tcp: bool,
        out: &mut Vec<Output>,
    ) {
        if tcp {
            out.push(Output::DnsTcp { client, bytes });
        } else {
            self.dns_to_client(client, &bytes, out);
        }
    }

    /// An upstream resolver's answer, from `from` (a datagram, or a message
    /// read from a TCP connection to it). A truncated datagram answer is
    /// asked again over TCP instead of passed on.
    pub fn dns_reply(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        out: &mut Vec<Output>,
    ) {
        if let Some(query) = self.forwarder.retry_truncated(now, from, bytes) {
            out.push(Output::Host(HostCommand::SendDns(query)));
            return;
        }
        let Some(reply) = self.forwarder.reply(from, bytes) else {
            return;
        };
        if let SocketAddr::V4(client) = reply.client {
            self.forwarded_to_client(client, reply.bytes, out);
        }
    }

    /// A forwarded query's answer (or SERVFAIL): over TCP if the client
    /// asked over TCP, else as a datagram.
    pub(super) fn forwarded_to_client(
        &mut self,
        client: SocketAddrV4,
        bytes: Vec<u8>,
        out: &mut Vec<Output>,
    ) {
        if let Some(waiting) = self.tcp_dns_waiting.get_mut(&client) {
            *waiting -= 1;
            if *waiting == 0 {
                self.tcp_dns_waiting.remove(&client);
            }
            out.push(Output::DnsTcp { client, bytes });
        } else {
            self.dns_to_client(client, &bytes, out);
        }
    }

    pub(super) fn dns_to_client(
        &mut self,
        client: SocketAddrV4,
        bytes: &[u8],
        out: &mut Vec<Output>,
    ) {
        let from = SocketAddrV4::new(self.config.gateway.ip, DNS_PORT);
        let packet = udp_packet(from, client, bytes);
        self.send_packet(*client.ip(), packet, out);
    }
}

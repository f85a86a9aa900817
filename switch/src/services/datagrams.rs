//! UDP and ping flows, and what host sockets report. A container's
//! datagram opens its flow, held until the flow's host socket is up, or is
//! relayed on it; the socket's reports (connected or not, datagrams, echo
//! replies, path errors; a TCP connect's outcome too) run the flow's
//! machine, and what it answers goes to the container as frames.

use super::frames::ip_packet;
use super::{
    Held, HostCommand, HostEvent, Output, QUOTE_LEN, Services, echo_reply_packet, udp_packet,
};
use crate::flows::{Admission, EchoEvent, FlowKey, Protocol, TcpEvent, UdpEvent};
use crate::time::Instant;

impl Services {
    /// A container's UDP datagram, or echo request (`seq_no`), on flow
    /// `key` (`frame` is its frame): opens the flow, holding the datagram
    /// until the socket is up, or relays it.
    pub(super) fn datagram(
        &mut self,
        now: Instant,
        key: FlowKey,
        seq_no: Option<u16>,
        payload: &[u8],
        frame: &[u8],
        out: &mut Vec<Output>,
    ) {
        let opened = match self.flows.open(now, key) {
            Ok(Admission::Opened(actions)) => Some(actions),
            Ok(Admission::Existing) => None,
            Ok(Admission::Invalid) | Err(_) => return,
        };
        let step = match seq_no {
            None => self
                .flows
                .udp(now, key, UdpEvent::FromContainer(payload.len())),
            Some(_) => self.flows.echo(now, key, EchoEvent::Request(payload.len())),
        };
        if let Some(actions) = opened {
            let quote = ip_packet(frame)
                .map(|ip| ip[..ip.len().min(QUOTE_LEN)].to_vec())
                .unwrap_or_default();
            self.held.insert(
                key,
                Held {
                    packet: quote,
                    first: Some((seq_no.unwrap_or(0), payload.to_vec())),
                },
            );
            self.carry_out(key, actions, out);
        } else if step.relay {
            out.push(Output::Host(send_command(key, seq_no, payload)));
        }
    }

    /// A host socket's report about a flow.
    pub fn host(
        &mut self,
        now: Instant,
        key: FlowKey,
        event: HostEvent<'_>,
        out: &mut Vec<Output>,
    ) {
        let actions = match (key.protocol, event) {
            (Protocol::Tcp, HostEvent::Connected) => {
                self.flows.tcp(now, key, TcpEvent::HostConnected).actions
            }
            (Protocol::Tcp, HostEvent::ConnectFailed(failure)) => {
                self.flows
                    .tcp(now, key, TcpEvent::HostConnectFailed(failure))
                    .actions
            }
            (Protocol::Tcp, _) => return,
            (_, HostEvent::Connected) => {
                let step = self.datagram_event(now, key, UdpEvent::HostConnected);
                if !step.invalid {
                    self.send_first(key, out);
                }
                step.actions
            }
            (_, HostEvent::ConnectFailed(failure)) => {
                self.datagram_event(now, key, UdpEvent::HostConnectFailed(failure))
                    .actions
            }
            (_, HostEvent::Error(failure)) => {
                self.datagram_event(now, key, UdpEvent::HostError(failure))
                    .actions
            }
            (Protocol::Udp, HostEvent::Datagram(data)) => {
                let step = self.flows.udp(now, key, UdpEvent::FromHost(data.len()));
                if step.relay {
                    let packet = udp_packet(key.remote, key.container, data);
                    self.send_packet(*key.container.ip(), packet, out);
                }
                step.actions
            }
            (Protocol::Icmp, HostEvent::EchoReply { seq_no, data }) => {
                let step = self.flows.echo(now, key, EchoEvent::Reply(data.len()));
                if step.relay {
                    let packet = echo_reply_packet(
                        *key.remote.ip(),
                        *key.container.ip(),
                        key.container.port(),
                        seq_no,
                        data,
                    );
                    self.send_packet(*key.container.ip(), packet, out);
                }
                step.actions
            }
            _ => return,
        };
        self.carry_out(key, actions, out);
    }

    /// The UDP machine's event for a UDP or ping flow.
    fn datagram_event(
        &mut self,
        now: Instant,
        key: FlowKey,
        event: UdpEvent,
    ) -> crate::flows::UdpStep {
        match (key.protocol, event) {
            (Protocol::Icmp, UdpEvent::HostConnected) => {
                self.flows.echo(now, key, EchoEvent::HostConnected)
            }
            (Protocol::Icmp, UdpEvent::HostConnectFailed(f)) => {
                self.flows.echo(now, key, EchoEvent::HostConnectFailed(f))
            }
            (Protocol::Icmp, UdpEvent::HostError(f)) => {
                self.flows.echo(now, key, EchoEvent::HostError(f))
            }
            _ => self.flows.udp(now, key, event),
        }
    }

    /// Sends the datagram that opened a UDP or ping flow, now that its
    /// socket is up.
    fn send_first(&mut self, key: FlowKey, out: &mut Vec<Output>) {
        let Some((seq_no, payload)) = self.held.get_mut(&key).and_then(|h| h.first.take()) else {
            return;
        };
        let seq_no = (key.protocol == Protocol::Icmp).then_some(seq_no);
        out.push(Output::Host(send_command(key, seq_no, &payload)));
    }
}

fn send_command(key: FlowKey, seq_no: Option<u16>, payload: &[u8]) -> HostCommand {
    match seq_no {
        Some(seq_no) => HostCommand::SendEcho {
            key,
            seq_no,
            payload: payload.to_vec(),
        },
        None => HostCommand::Send {
            key,
            payload: payload.to_vec(),
        },
    }
}

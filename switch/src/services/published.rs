//! Published ports at the wire level: a client of a published TCP port
//! becomes an inbound flow the stack connects into the container from the
//! client's own address; a client's datagram to a published UDP port
//! reaches the container from the client's address.

use std::net::SocketAddrV4;

use super::{Output, Services, udp_packet};
use crate::flows::{Admission, FlowKey, UdpEvent};
use crate::time::Instant;

impl Services {
    /// A client connected to a published TCP port: `container` is the
    /// container's address and published port, `client` the client's
    /// endpoint. On `false` the caller closes the client's socket (a limit
    /// refused it, counted).
    pub fn published_connection(
        &mut self,
        now: Instant,
        container: SocketAddrV4,
        client: SocketAddrV4,
        out: &mut Vec<Output>,
    ) -> bool {
        let key = FlowKey::tcp(container, client);
        match self.flows.open_inbound(now, key) {
            Ok(Admission::Opened(actions)) => {
                self.lingering.remove(&key);
                self.carry_out(key, actions, out);
                true
            }
            Ok(Admission::Existing | Admission::Invalid) | Err(_) => false,
        }
    }

    /// A client's datagram to a published UDP port: sent to the container
    /// from the client's own address. The container's answers come back
    /// through [`Services::frame`] as [`super::HostCommand::Send`] for the flow,
    /// which the I/O side sends from the published socket to the client.
    pub fn published_datagram(
        &mut self,
        now: Instant,
        container: SocketAddrV4,
        client: SocketAddrV4,
        payload: &[u8],
        out: &mut Vec<Output>,
    ) {
        let key = FlowKey::udp(container, client);
        if !matches!(
            self.flows.open_inbound(now, key),
            Ok(Admission::Opened(_) | Admission::Existing)
        ) {
            return;
        }
        let step = self.flows.udp(now, key, UdpEvent::FromHost(payload.len()));
        if step.relay {
            let packet = udp_packet(client, container, payload);
            self.send_packet(*container.ip(), packet, out);
        }
    }
}

//! Published ports at the wire level: a client of a published TCP port
//! becomes an inbound flow the stack connects into the container from the
//! client's own address; a client's datagram to a published UDP port
//! reaches the container from the client's address.
//!
//! Every client but one keeps its own address: a client on the host's
//! loopback (`127.0.0.0/8`). The container's kernel drops a packet from
//! `127.0.0.1` arriving on `eth0` (a martian source, whatever rp_filter
//! says), and its answer would go to its own loopback anyway. So that
//! client is presented from the gateway's address, keeping its port, as
//! Docker's userland proxy and RootlessKit present every client; the
//! answers to the gateway's address with that port are the flow's.

use std::net::SocketAddrV4;

use super::{Output, Services, udp_packet};
use crate::flows::classify::{Ingress, classify_with};
use crate::flows::{Admission, FlowKey, UdpEvent};
use crate::time::Instant;

impl Services {
    /// The address a published port's `client` appears to come from in
    /// the container: its own, but the gateway's for a loopback client.
    pub fn presented_client(&self, client: SocketAddrV4) -> SocketAddrV4 {
        if client.ip().is_loopback() {
            SocketAddrV4::new(self.config.gateway.ip, client.port())
        } else {
            client
        }
    }

    /// Whether `ingress`, a frame for the gateway's own address, is the
    /// container's side of a published port's flow whose client is
    /// presented from that address: such a flow's segments and datagrams
    /// are the flow's, not the gateway's own stack's.
    pub(super) fn published_via_gateway<'a>(&self, frame: &'a [u8]) -> Option<Ingress<'a>> {
        let routed = classify_with(frame, &self.config.gateway, true);
        let key = match routed {
            Ingress::Tcp { key, .. } | Ingress::Udp { key, .. } => key,
            _ => return None,
        };
        // Without --allow-host-loopback no container opens a flow to the
        // gateway's address: a flow with that remote is a published port's.
        self.flows.get(&key).map(|_| routed)
    }

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

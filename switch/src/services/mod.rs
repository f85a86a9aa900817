//! The gateway's services, sans I/O: frames from the gateway port and
//! host socket events in; frames for the containers, host socket commands
//! and container-side TCP commands out.
//!
//! This joins the pure pieces — [`crate::flows::classify()`], the
//! [`FlowTable`], the [`DnsResponder`] and the [`Forwarder`] — into the
//! one object the gateway thread will drive, so that what is left to wire
//! is I/O: host sockets (`ports`), and smoltcp's TCP sockets for the
//! container side of TCP flows; [`crate::host_side`] does that I/O.
//!
//! What it does entirely by itself, at the wire level:
//!
//! - **DNS over UDP** at the gateway's address: answers built by the
//!   responder go straight back as frames; forwarded queries become
//!   [`HostCommand::SendDns`], and upstream answers ([`Services::dns_reply`])
//!   frames again; SERVFAIL when every upstream stayed silent.
//! - **DNS over TCP**: the I/O side cuts the connection's stream into
//!   messages and hands each to [`Services::dns_tcp_query`]; answers, local
//!   or forwarded (over TCP to the upstream), come out as
//!   [`Output::DnsTcp`] for that connection. A truncated UDP answer from
//!   an upstream is asked again over TCP.
//! - **UDP and ping flows** (`datagrams.rs`): the first datagram opens the
//!   flow ([`HostCommand::Connect`]) and is sent once the socket is up; host
//!   datagrams become frames from the remote's address; path errors become
//!   ICMP unreachables quoting the flow's first packet.
//! - **TCP, up to the handshake**: a SYN opens the flow and is held; a
//!   refused or unreachable connect answers the container from the held
//!   SYN (RST or ICMP); a successful one hands the SYN to the container
//!   side ([`StackCommand::Accept`]). Segments of open flows go to the
//!   stack ([`Verdict::ToStack`]); the relay's events come back through
//!   [`Services::tcp`] from the code that drives smoltcp's sockets.
//! - **Published ports**: a client accepted on a published TCP port
//!   ([`Services::published_connection`]) becomes an inbound flow and a
//!   [`StackCommand::Connect`] from the client's own address; a client's
//!   datagram to a published UDP port ([`Services::published_datagram`])
//!   reaches the container from the client's address, and the container's
//!   answers go back through the published socket.
//! - **Isolation**: with outbound access off (`--internal`, `--no-outbound`)
//!   every flow is answered "administratively prohibited" and none opened.
//!
//! Frames to a container go to the MAC it last sent from (learned from
//! its own frames, bounded by the subnet's size); packets larger than the
//! network's MTU are sent as fragments. Fragments from containers are
//! reassembled first (`reassembly.rs`).

mod datagrams;
mod dns;
mod frames;
mod io;
mod published;
mod reassembly;
mod window;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use serde::Serialize;

use crate::dns::{DnsResponder, Expired, Forwarder, NameTable};
use crate::flows::{
    Action, Actions, Admission, FlowKey, FlowLimits, FlowTable, GatewayAddresses, IgnoreReason,
    Ingress, Origin, Protocol, TcpEvent, Unreachable, classify_with, reset_for_syn,
    unreachable_packet,
};
use crate::mac::MacAddr;
use crate::time::Instant;

pub(crate) use frames::fragments;
pub use frames::{echo_reply_packet, ethernet, udp_packet};
use frames::{ip_packet, source_of, tcp_seq_span};
pub use io::{HostCommand, HostEvent, Output, StackCommand};
pub use reassembly::{Reassembler, ReassemblyLimits, ReassemblyStats};
pub use window::MAX_STACK_WINDOW;
use window::{SeqCheck, SeqWindows};

/// The DNS port the gateway serves.
const DNS_PORT: u16 = 53;
/// IPv4 header and the first 8 bytes of the transport header: what an
/// ICMP error must quote (RFC 792) so the container can match its socket.
const QUOTE_LEN: usize = 20 + 8;

/// How the services are set up for one network.
#[derive(Debug, Clone)]
pub struct ServicesConfig {
    pub gateway: GatewayAddresses,
    /// The network's MTU: the largest IP packet sent to a container.
    pub mtu: usize,
    /// Outbound flows allowed (off for `--internal` and `--no-outbound`).
    pub outbound: bool,
    pub limits: FlowLimits,
    pub names: NameTable,
    pub upstreams: Vec<SocketAddr>,
    /// `--allow-host-loopback`: TCP and UDP (but DNS) to the gateway's own
    /// address are flows, which the I/O side carries to the host's loopback.
    pub host_loopback: bool,
}

/// What to do with the frame given to [`Services::frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the gateway's own stack (smoltcp).
    ToStack,
    /// The services took it (outputs may have been produced).
    Consumed,
    /// Nobody's; counted.
    Dropped,
}

/// The services' own counters (the flow table, responder and forwarder
/// keep theirs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServicesStats {
    /// Frames for nobody (ARP for others, floods, other EtherTypes).
    pub not_for_us: u64,
    /// Frames cut short or with bad checksums.
    pub malformed: u64,
    /// TCP segments with invalid flags (SYN with FIN or RST, ...), options
    /// or ports (0).
    pub invalid_tcp: u64,
    /// TCP segments of open flows certainly outside the gateway's receive
    /// window (see `services/window.rs`).
    pub out_of_window: u64,
    /// Frames from outside the subnet.
    pub foreign_source: u64,
    /// Fragments taken in for reassembly (what became of them: `reassembly`).
    pub fragments: u64,
    /// Protocols or ICMP messages not translated.
    pub unsupported: u64,
    /// Flows refused because outbound access is off.
    pub outbound_denied: u64,
    /// TCP segments for no flow (not a SYN), dropped as conntrack drops
    /// INVALID.
    pub stray_segments: u64,
    /// Frames for a container whose MAC is not known.
    pub no_neighbor: u64,
    /// Packets that could not be sent: larger than an IPv4 packet, or
    /// than the MTU and not to be fragmented.
    pub too_big: u64,
    /// Packets larger than the MTU sent as IPv4 fragments.
    pub fragmented: u64,
    pub reassembly: ReassemblyStats,
}

/// What a flow keeps from its first packet until it needs it.
#[derive(Debug, Clone, Default)]
struct Held {
    /// TCP: the whole SYN frame (for the stack, or the RST); others: the
    /// first packet's header and 8 bytes (the quote of an ICMP error).
    packet: Vec<u8>,
    /// UDP and ping: the first datagram, sent once the socket is up.
    first: Option<(u16, Vec<u8>)>,
}

/// The gateway's services for one network. See the module documentation.
#[derive(Debug)]
pub struct Services {
    config: ServicesConfig,
    flows: FlowTable,
    dns: DnsResponder,
    forwarder: Forwarder,
    neighbors: HashMap<Ipv4Addr, MacAddr>,
    held: HashMap<FlowKey, Held>,
    /// Released TCP flows whose smoltcp socket still finishes its close
    /// (the last ACKs must reach it), until [`Services::stack_released`].
    lingering: HashSet<FlowKey>,
    /// TCP DNS clients with forwarded queries outstanding (how many): their
    /// answers go back over their connection. Bounded by the forwarder's
    /// limit on pending queries.
    tcp_dns_waiting: HashMap<SocketAddrV4, usize>,
    /// TCP flows (open or lingering) whose segments went to the stack
    /// since [`Services::take_stack_flows`]: the relay visits these, not
    /// every flow. Bounded by the flows and lingering sockets.
    stack_flows: HashSet<FlowKey>,
    /// Of `stack_flows`: those that got a RST from the container. A RST
    /// while smoltcp's socket is still in `SynReceived` sends it back to
    /// `Listen`, which the relay could not tell from a SYN not yet taken.
    stack_resets: HashSet<FlowKey>,
    /// The containers' sequence numbers, per TCP flow.
    windows: SeqWindows,
    reassembler: reassembly::Reassembler,
    /// All but `reassembly`, which `stats()` reads from the reassembler.
    stats: ServicesStats,
    /// The identification of the next fragmented packet (RFC 6864: unique
    /// per source, destination and protocol while fragments may live; a
    /// counter wraps after 65,536 fragmented packets).
    next_ident: u16,
}

impl Services {
    pub fn new(config: ServicesConfig) -> Services {
        Services {
            flows: FlowTable::new(config.limits),
            dns: DnsResponder::new(config.names.clone()),
            forwarder: Forwarder::new(config.upstreams.clone()),
            neighbors: HashMap::new(),
            held: HashMap::new(),
            lingering: HashSet::new(),
            tcp_dns_waiting: HashMap::new(),
            stack_flows: HashSet::new(),
            stack_resets: HashSet::new(),
            windows: SeqWindows::default(),
            reassembler: reassembly::Reassembler::new(ReassemblyLimits::default()),
            stats: ServicesStats::default(),
            next_ident: 0,
            config,
        }
    }

    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// A TCP relay event, from the stack's socket or the host socket
    /// (data, FIN, EOF, resets, writes done): runs it on the flow and
    /// carries out what follows. What waits to be written is read with
    /// [`Services::flows`] ([`FlowTable::tcp_flow`]).
    pub fn tcp(
        &mut self,
        now: Instant,
        key: FlowKey,
        event: TcpEvent<'_>,
        out: &mut Vec<Output>,
    ) -> crate::flows::TcpStep {
        let step = self.flows.tcp(now, key, event);
        self.carry_out(key, step.actions, out);
        step
    }

    /// The TCP flows whose segments went to the stack since the last call
    /// (the ones whose smoltcp socket may have news for the relay).
    pub fn take_stack_flows(&mut self) -> HashSet<FlowKey> {
        std::mem::take(&mut self.stack_flows)
    }

    /// The open TCP flows whose container sent a RST since the last call.
    pub fn take_stack_resets(&mut self) -> HashSet<FlowKey> {
        std::mem::take(&mut self.stack_resets)
    }

    /// Turns the flow table's trace events on or off (`--trace`).
    pub fn set_flow_trace(&mut self, on: bool) {
        self.flows.set_trace(on);
    }

    /// The flow events since the last call (with the trace on).
    pub fn take_flow_events(&mut self) -> Vec<(Instant, FlowKey, crate::flows::FlowEvent)> {
        self.flows.take_events()
    }

    pub fn dns(&self) -> &DnsResponder {
        &self.dns
    }

    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// The counters, the reassembly table's read from it.
    pub fn stats(&self) -> ServicesStats {
        ServicesStats {
            reassembly: *self.reassembler.stats(),
            ..self.stats
        }
    }

    /// The names changed (a container came or went).
    pub fn set_names(&mut self, names: NameTable) {
        self.dns.set_names(names);
    }

    /// One frame from the gateway port. `random_id` is a fresh random
    /// number, used only if the frame is a DNS query to forward.
    pub fn frame(
        &mut self,
        now: Instant,
        frame: &[u8],
        random_id: u16,
        out: &mut Vec<Output>,
    ) -> Verdict {
        if let Some(verdict) = self.reassemble(now, frame, random_id, out) {
            return verdict;
        }
        let mut ingress = classify_with(frame, &self.config.gateway, self.config.host_loopback);
        if matches!(ingress, Ingress::Local)
            && !self.config.host_loopback
            && let Some(routed) = self.published_via_gateway(frame)
        {
            ingress = routed;
        }
        if !matches!(ingress, Ingress::Local | Ingress::Ignore(_)) {
            self.learn_neighbor(frame);
        }
        match ingress {
            Ingress::Local => Verdict::ToStack,
            Ingress::Ignore(reason) => {
                self.count_ignored(reason);
                Verdict::Dropped
            }
            Ingress::Dns { client, payload } => {
                // A datagram (queries over TCP come through `dns_tcp_query`).
                self.dns_query(now, client, payload, random_id, false, out);
                Verdict::Consumed
            }
            Ingress::Tcp { .. } | Ingress::Udp { .. } | Ingress::Echo { .. }
                if !self.config.outbound =>
            {
                self.stats.outbound_denied += 1;
                self.answer_from(
                    frame,
                    |gw, ip| unreachable_packet(Unreachable::Prohibited, gw, ip),
                    out,
                );
                Verdict::Consumed
            }
            Ingress::Tcp { key, syn, rst } => self.tcp_segment(now, key, syn, rst, frame, out),
            Ingress::Udp { key, payload } => {
                self.datagram(now, key, None, payload, frame, out);
                Verdict::Consumed
            }
            Ingress::Echo {
                key,
                seq_no,
                payload,
            } => {
                self.datagram(now, key, Some(seq_no), payload, frame, out);
                Verdict::Consumed
            }
        }
    }

    fn count_ignored(&mut self, reason: IgnoreReason) {
        let counter = match reason {
            IgnoreReason::NotForUs => &mut self.stats.not_for_us,
            IgnoreReason::Malformed => &mut self.stats.malformed,
            IgnoreReason::InvalidTcp => &mut self.stats.invalid_tcp,
            IgnoreReason::ForeignSource => &mut self.stats.foreign_source,
            IgnoreReason::Fragment => &mut self.stats.fragments,
            IgnoreReason::Unsupported => &mut self.stats.unsupported,
        };
        *counter += 1;
    }

    /// Remembers which MAC a container's address sent from.
    fn learn_neighbor(&mut self, frame: &[u8]) {
        let Some((mac, ip)) = source_of(frame) else {
            return;
        };
        self.neighbors.insert(ip, mac);
    }

    fn tcp_segment(
        &mut self,
        now: Instant,
        key: FlowKey,
        syn: bool,
        rst: bool,
        frame: &[u8],
        out: &mut Vec<Output>,
    ) -> Verdict {
        if let Some(flow) = self.flows.tcp_flow(&key) {
            // An open flow's segments are the stack's; so are those of a
            // published port's connection the stack is opening (the
            // container's SYN-ACK).
            if !flow.is_connecting() || flow.origin() == Origin::Inbound {
                if let Some((seq, len)) = tcp_seq_span(frame)
                    && self.windows.check(key, seq, len) == SeqCheck::OutOfWindow
                {
                    self.stats.out_of_window += 1;
                    return Verdict::Dropped;
                }
                self.flows
                    .count_packet(key, crate::flows::PacketWay::FromContainer);
                self.stack_flows.insert(key);
                if rst {
                    self.stack_resets.insert(key);
                }
                return Verdict::ToStack;
            }
            // While connecting smoltcp must not see the flow's segments (it
            // would answer RST): a retransmitted SYN is absorbed, a RST
            // (the container gave up) abandons the connect.
            if rst {
                let actions = self.flows.tcp(now, key, TcpEvent::ContainerReset).actions;
                self.carry_out(key, actions, out);
            }
            return Verdict::Consumed;
        }
        if self.lingering.contains(&key) && !syn {
            self.stack_flows.insert(key);
            return Verdict::ToStack;
        }
        if !syn {
            self.stats.stray_segments += 1;
            return Verdict::Dropped;
        }
        match self.flows.open(now, key) {
            Ok(Admission::Opened(actions)) => {
                self.lingering.remove(&key);
                if let Some((isn, _)) = tcp_seq_span(frame) {
                    self.windows.start(key, isn);
                }
                self.held.insert(
                    key,
                    Held {
                        packet: frame.to_vec(),
                        first: None,
                    },
                );
                self.carry_out(key, actions, out);
                Verdict::Consumed
            }
            Ok(Admission::Existing | Admission::Invalid) | Err(_) => Verdict::Dropped,
        }
    }

    /// Records a container's MAC (from IPAM), for frames to a container
    /// that has not sent anything yet (a published port's first client).
    pub fn set_neighbor(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        self.neighbors.insert(ip, mac);
    }

    /// The stack removed a forgotten flow's socket (it reached `Closed` or
    /// `TimeWait`): its segments are nobody's from now on.
    pub fn stack_released(&mut self, key: FlowKey) {
        self.lingering.remove(&key);
    }

    /// Runs the flow, DNS and reassembly timers.
    pub fn timers(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.reassembly_timers(now, out);
        for (key, actions) in self.flows.expire(now) {
            self.carry_out(key, actions, out);
        }
        for expired in self.forwarder.expire(now) {
            match expired {
                Expired::Retry(query) => out.push(Output::Host(HostCommand::SendDns(query))),
                Expired::GiveUp(reply) => {
                    if let SocketAddr::V4(client) = reply.client {
                        self.forwarded_to_client(client, reply.bytes, out);
                    }
                }
            }
        }
    }

    /// When [`Services::timers`] next has work.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let (flows, dns) = (self.flows.next_deadline(), self.forwarder.next_deadline());
        let reassembly = self.reassembler.next_deadline();
        [flows, dns, reassembly].into_iter().flatten().min()
    }

    /// Turns a flow machine's actions into outputs.
    fn carry_out(&mut self, key: FlowKey, actions: Actions, out: &mut Vec<Output>) {
        for action in actions.iter() {
            match action {
                Action::ConnectHost => out.push(Output::Host(HostCommand::Connect(key))),
                Action::ConnectContainer => out.push(Output::Stack(StackCommand::Connect(key))),
                Action::AcceptContainer => {
                    let syn = self.held.remove(&key).map(|h| h.packet).unwrap_or_default();
                    out.push(Output::Stack(StackCommand::Accept { key, syn }));
                }
                Action::ResetContainer => match self.held.get(&key) {
                    // Before the handshake no socket exists: answer the
                    // held SYN as the remote would have.
                    Some(held) if key.protocol == Protocol::Tcp => {
                        let frame = held.packet.clone();
                        self.answer_from(&frame, |_, ip| reset_for_syn(ip), out);
                    }
                    _ => out.push(Output::Stack(StackCommand::Abort(key))),
                },
                Action::SendUnreachable(code) => {
                    let quoted = self.held.get(&key).map(|h| h.packet.clone());
                    if let Some(quoted) = quoted {
                        let gateway = self.config.gateway.ip;
                        let packet = if key.protocol == Protocol::Tcp {
                            ip_packet(&quoted).and_then(|ip| unreachable_packet(code, gateway, ip))
                        } else {
                            unreachable_packet(code, gateway, &quoted)
                        };
                        self.send_packet(*key.container.ip(), packet, out);
                    }
                }
                Action::ShutdownHostWrite => {
                    out.push(Output::Host(HostCommand::ShutdownWrite(key)))
                }
                Action::CloseContainerWrite => {
                    out.push(Output::Stack(StackCommand::CloseWrite(key)))
                }
                Action::ResetHost => out.push(Output::Host(HostCommand::Reset(key))),
                Action::Release(_) => {
                    self.windows.forget(&key);
                    // No held SYN left: the stack has a socket for the flow,
                    // which lingers until it has closed.
                    let handed_to_stack = self.held.remove(&key).is_none();
                    out.push(Output::Host(HostCommand::Close(key)));
                    if key.protocol == Protocol::Tcp && handed_to_stack {
                        self.lingering.insert(key);
                        out.push(Output::Stack(StackCommand::Forget(key)));
                    }
                }
            }
        }
    }

    /// Builds a reply from the IPv4 packet inside `frame` and sends it to
    /// the frame's sender.
    fn answer_from(
        &mut self,
        frame: &[u8],
        build: impl FnOnce(Ipv4Addr, &[u8]) -> Option<Vec<u8>>,
        out: &mut Vec<Output>,
    ) {
        let Some((mac, _)) = source_of(frame) else {
            return;
        };
        let Some(ip) = ip_packet(frame) else { return };
        if let Some(packet) = build(self.config.gateway.ip, ip) {
            self.emit(mac, &packet, out);
        }
    }

    /// Sends an IPv4 packet to a container by its address.
    fn send_packet(&mut self, to: Ipv4Addr, packet: Option<Vec<u8>>, out: &mut Vec<Output>) {
        let Some(packet) = packet else {
            self.stats.too_big += 1;
            return;
        };
        let Some(&mac) = self.neighbors.get(&to) else {
            self.stats.no_neighbor += 1;
            return;
        };
        self.emit(mac, &packet, out);
    }

    fn emit(&mut self, to: MacAddr, packet: &[u8], out: &mut Vec<Output>) {
        if packet.len() <= self.config.mtu {
            out.push(Output::Frame(ethernet(self.config.gateway.mac, to, packet)));
            return;
        }
        // A datagram from a host socket may exceed the containers' MTU (the
        // host's link is larger, or the answer was reassembled there): sent
        // as fragments, as a router between the two would.
        self.next_ident = self.next_ident.wrapping_add(1);
        let Some(pieces) = fragments(packet, self.config.mtu, self.next_ident) else {
            self.stats.too_big += 1;
            return;
        };
        self.stats.fragmented += 1;
        for piece in pieces {
            out.push(Output::Frame(ethernet(self.config.gateway.mac, to, &piece)));
        }
    }
}

#[cfg(test)]
mod tests;

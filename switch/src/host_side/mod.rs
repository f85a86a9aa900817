//! The gateway's host side: carries out what [`Services`] asks of host
//! sockets, and turns what those sockets report back into service events.
//!
//! The gateway thread owns one [`HostSide`] next to its smoltcp gateway.
//! Frames from the gateway port go to [`HostSide::frame`] first (the
//! classifier decides what smoltcp may see); readiness of a registered
//! socket goes to [`HostSide::ready`]; the flow and DNS timers run in
//! [`HostSide::timers`]. Each returns frames for the containers.
//!
//! Sockets come from `ports::host_socket` (every syscall lives in
//! `ports`); they are registered with the thread's `mio` poll under a
//! token per flow, and dropped (their descriptor given back) when the
//! services close the flow. Reads go on until `WouldBlock`, as `mio`'s
//! readiness is edge-triggered.

mod dns_tcp;
mod dns_upstream;
mod published;
mod recheck;
mod setup;
mod tcp;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use ports::host_socket::{EchoKind, HostDatagram, HostEcho, HostUdp};
use serde::Serialize;

use crate::dns::Outgoing;
use crate::events::SwitchEvent;
use crate::flows::{ConnectFailure, FlowEvent, FlowInfo, FlowKey, FlowStats, Protocol};
use crate::gateway::Gateway;
use crate::services::{
    HostCommand, HostEvent, Output, Services, ServicesConfig, ServicesStats, Verdict,
};
use crate::stats::{DropReason, PortCounters};
use crate::time::Instant;

pub use setup::{Published, ServicesSetup};

/// The first token handed to a flow's socket; those below are the
/// thread's own (its waker, the DNS socket).
pub const FIRST_FLOW_TOKEN: usize = 16;
/// The DNS forwarder's socket.
pub const DNS_TOKEN: Token = Token(1);
/// Largest datagram read from a host socket.
const MAX_DATAGRAM: usize = 65_535;

/// A flow's host socket.
#[derive(Debug)]
enum HostSocket {
    Udp(HostUdp),
    Echo(HostEcho),
}

impl HostSocket {
    fn fd(&self) -> i32 {
        match self {
            HostSocket::Udp(s) => s.as_raw_fd(),
            HostSocket::Echo(s) => s.as_raw_fd(),
        }
    }
}

/// What `tapswitch stats` shows about the gateway's services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServicesReport {
    pub outbound: bool,
    /// How pings go out (`None`: this process may open no ICMP socket).
    pub ping_sockets: Option<EchoKind>,
    pub upstreams: Vec<String>,
    pub flows_now: usize,
    pub flows: FlowStats,
    pub frames: ServicesStats,
    /// What the DNS forwarder did (UDP and TCP upstream).
    pub dns_forwarder: crate::dns::ForwarderStats,
    /// Host sockets that could not be opened or used.
    pub socket_errors: u64,
    /// Times the gateway's queue overflowed and the containers were asked
    /// again about every TCP flow, and the flows taken up for a probe (those
    /// ended meanwhile, or not yet connected, are skipped; see
    /// `host_side/recheck.rs`).
    pub overflow_rechecks: u64,
    pub overflow_probes: u64,
    /// The published ports listened on now, as `docker ps` writes them
    /// (`0.0.0.0:8080->80/tcp`), sorted: what is open, not what IPAM
    /// records (a port another program took is recorded but absent here).
    pub listening: Vec<String>,
}

/// The gateway's host side. See the module documentation.
#[derive(Debug)]
pub struct HostSide {
    services: Services,
    registry: Registry,
    sockets: HashMap<FlowKey, (Token, HostSocket)>,
    tcp: HashMap<FlowKey, tcp::TcpConn>,
    /// smoltcp sockets of ended flows, removed once they have closed.
    lingering: Vec<(FlowKey, smoltcp::iface::SocketHandle)>,
    /// TCP flows the relay must visit in the next [`HostSide::after_stack`]
    /// (besides those whose segments reached the stack).
    active: std::collections::HashSet<FlowKey>,
    /// When the relay next visits every TCP flow.
    next_sweep: Instant,
    /// TCP flows to probe after the gateway's queue overflowed.
    recheck: recheck::Recheck,
    /// The last batch probed: their keep-alive goes off again once sent.
    probed: Vec<FlowKey>,
    /// Published ports, by token: the host socket and where it leads.
    listeners: HashMap<Token, (published::PublishedSocket, Published)>,
    /// Flows of published UDP ports' clients: the published port's token
    /// and the client's own address (the key holds the address the
    /// container sees, which differs for a loopback client).
    udp_clients: HashMap<FlowKey, (Token, SocketAddrV4)>,
    /// Frames for the containers, handed out at the end of each call.
    frames: Vec<Vec<u8>>,
    by_token: HashMap<Token, FlowKey>,
    next_token: usize,
    dns: Option<HostDatagram>,
    /// DNS over TCP at the gateway's port 53.
    dns_tcp: dns_tcp::DnsTcp,
    /// Forwarded DNS queries over TCP to the upstreams.
    dns_upstreams: dns_upstream::DnsUpstreams,
    echo_kind: Option<EchoKind>,
    /// The next identifier for a raw ping socket.
    next_ident: u16,
    /// `--allow-host-loopback`: flows to the gateway's address reach
    /// 127.0.0.1.
    gateway_ip: Ipv4Addr,
    allow_host_loopback: bool,
    pending: Vec<Output>,
    scratch: Vec<u8>,
    /// Bytes each way in a TCP flow's smoltcp socket (by the MTU).
    stack_buffer: usize,
    random: std::collections::hash_map::RandomState,
    random_counter: u64,
    socket_errors: u64,
    /// The gateway port's counters: a reassembled datagram the gateway's
    /// queue refuses is dropped there, as the gateway thread counts the
    /// frames the queue refuses.
    gateway_counters: Arc<PortCounters>,
}

impl HostSide {
    /// The services for `config`, their sockets registered with `registry`
    /// (a clone of the gateway thread's poll's); what the gateway refuses
    /// is counted in `gateway_counters`, the gateway port's.
    pub fn new(
        config: ServicesConfig,
        registry: Registry,
        loopback: bool,
        gateway_counters: Arc<PortCounters>,
    ) -> io::Result<HostSide> {
        // Flows' stack buffers cost only the pages their bytes touched, and
        // ended flows give them back (see `ports::heap`).
        // `TAPSWITCH_NO_HEAP_PIN` keeps the allocator's own policy, to
        // measure what the pin costs (docs/PERFORMANCE.md, "Gateway limits").
        if std::env::var_os("TAPSWITCH_NO_HEAP_PIN").is_none() && !ports::heap::map_large_blocks() {
            log::debug!("gateway: the heap's mmap threshold stays the allocator's own");
        }
        // Each flow holds a host socket: the default soft limit (1,024)
        // would refuse flows long before the flow table's bounds.
        let max_flows = crate::flows::limits::DEFAULT_MAX_FLOWS as u64;
        match ports::host_socket::raise_descriptor_limit() {
            Ok(limit) => {
                if let Some(line) = ports::host_socket::descriptor_limit_warning(limit, max_flows) {
                    log::warn!("gateway: {line}")
                }
            }
            Err(err) => log::warn!("gateway: cannot raise the descriptor limit: {err}"),
        }
        let dns = HostDatagram::bind_any()?;
        registry.register(
            &mut SourceFd(&dns.as_raw_fd()),
            DNS_TOKEN,
            Interest::READABLE,
        )?;
        let gateway_ip = config.gateway.ip;
        let stack_buffer = tcp::stack_buffer(config.mtu);
        Ok(HostSide {
            services: Services::new(config),
            registry,
            sockets: HashMap::new(),
            tcp: HashMap::new(),
            lingering: Vec::new(),
            active: std::collections::HashSet::new(),
            next_sweep: Instant::ZERO,
            recheck: recheck::Recheck::default(),
            probed: Vec::new(),
            listeners: HashMap::new(),
            udp_clients: HashMap::new(),
            frames: Vec::new(),
            by_token: HashMap::new(),
            next_token: FIRST_FLOW_TOKEN,
            dns: Some(dns),
            dns_tcp: dns_tcp::DnsTcp::default(),
            dns_upstreams: dns_upstream::DnsUpstreams::default(),
            echo_kind: EchoKind::probe(),
            next_ident: 1,
            gateway_ip,
            allow_host_loopback: loopback,
            pending: Vec::new(),
            scratch: vec![0; MAX_DATAGRAM],
            stack_buffer,
            random: std::collections::hash_map::RandomState::new(),
            random_counter: 0,
            socket_errors: 0,
            gateway_counters,
        })
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The report for `tapswitch stats`.
    pub fn report(&self, outbound: bool) -> ServicesReport {
        ServicesReport {
            outbound,
            ping_sockets: self.echo_kind,
            upstreams: self
                .services
                .forwarder()
                .upstreams()
                .iter()
                .map(ToString::to_string)
                .collect(),
            flows_now: self.services.flows().len(),
            flows: *self.services.flows().stats(),
            frames: self.services.stats(),
            dns_forwarder: *self.services.forwarder().stats(),
            socket_errors: self.socket_errors,
            overflow_rechecks: self.recheck.rounds(),
            overflow_probes: self.recheck.probes(),
            listening: self.listening(),
        }
    }

    /// Records flow events (opened, refused, ended) for `--trace` and the
    /// event stream; off, the flow table records none.
    pub fn set_trace(&mut self, on: bool) {
        self.services.set_flow_trace(on);
    }

    /// The flow events since the last call, each as its `--trace` line and,
    /// for an opened or ended flow, the event `monitor` shows.
    pub fn take_flow_events(&mut self) -> Vec<(String, Option<SwitchEvent>)> {
        self.services
            .take_flow_events()
            .iter()
            .map(|(now, key, event)| {
                let line = crate::flows::FlowTraceLine {
                    now: *now,
                    key,
                    event,
                }
                .to_string();
                let flow = || key.to_string();
                let published = match event {
                    FlowEvent::Opened(_) => Some(SwitchEvent::FlowOpened { flow: flow() }),
                    FlowEvent::Ended { .. } => Some(SwitchEvent::FlowClosed { flow: flow() }),
                    FlowEvent::Refused(_) => None,
                };
                (line, published)
            })
            .collect()
    }

    /// The flows now, like `conntrack -L`.
    pub fn infos(&self, now: Instant) -> Vec<FlowInfo> {
        self.services.flows().infos(now)
    }

    /// A frame from the gateway port. `ToStack` means smoltcp takes it.
    pub fn frame(
        &mut self,
        now: Instant,
        frame: &[u8],
        gateway: &mut Gateway,
        frames: &mut Vec<Vec<u8>>,
    ) -> Verdict {
        self.dns_tcp_listen(gateway);
        let id = self.random_id();
        let verdict = self.services.frame(now, frame, id, &mut self.pending);
        self.run(now, gateway);
        frames.append(&mut self.frames);
        verdict
    }

    /// After the gateway's stack ran: relays TCP flows' bytes, answers DNS
    /// over TCP.
    pub fn after_stack(&mut self, now: Instant, gateway: &mut Gateway, frames: &mut Vec<Vec<u8>>) {
        self.pump_active(now, gateway);
        self.dns_tcp_pump(now, gateway);
        self.run(now, gateway);
        // The answers just queued go into their sockets in this round.
        self.dns_tcp_pump(now, gateway);
        frames.append(&mut self.frames);
    }

    /// Frames for the gateway were dropped at its full queue: a RST among
    /// them would never come again, so every TCP flow's container is asked
    /// again (see `recheck.rs`).
    pub fn queue_overflowed(&mut self, now: Instant) {
        self.recheck.start(now, self.tcp.keys().copied());
    }

    /// Runs the flow and DNS timers, and the probes after an overflow.
    pub fn timers(&mut self, now: Instant, gateway: &mut Gateway, frames: &mut Vec<Vec<u8>>) {
        self.probe_due(now, gateway);
        self.services.timers(now, &mut self.pending);
        self.dns_upstream_expire(now);
        self.run(now, gateway);
        frames.append(&mut self.frames);
    }

    /// When [`HostSide::timers`] next has work.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        // Flows left for the relay's next round: no sleep.
        let relay = (!self.active.is_empty()).then_some(Instant::ZERO);
        [
            self.services.next_deadline(),
            self.next_sweep(),
            self.dns_upstreams.next_deadline(),
            self.recheck.deadline(),
            relay,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A registered socket is ready.
    pub fn ready(
        &mut self,
        now: Instant,
        event: &mio::event::Event,
        gateway: &mut Gateway,
        frames: &mut Vec<Vec<u8>>,
    ) {
        let token = event.token();
        if token == DNS_TOKEN {
            self.read_dns(now);
        } else if self.dns_upstreams.owns(token) {
            self.dns_upstream_ready(now, token);
        } else if self.listeners.contains_key(&token) {
            self.published_ready(now, token);
        } else if let Some(&key) = self.by_token.get(&token) {
            if key.protocol == Protocol::Tcp {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_error();
                let troubled =
                    event.is_error() || event.is_read_closed() || event.is_write_closed();
                let readiness = tcp::Readiness {
                    readable,
                    writable,
                    cleanly_writable: event.is_writable() && !troubled,
                };
                self.tcp_ready(now, key, readiness, gateway);
            } else {
                self.read_flow(now, key);
            }
        }
        self.run(now, gateway);
        frames.append(&mut self.frames);
    }

    fn read_dns(&mut self, now: Instant) {
        let Some(dns) = &self.dns else { return };
        loop {
            match dns.recv_from(&mut self.scratch) {
                Ok((n, from)) => {
                    self.services
                        .dns_reply(now, from, &self.scratch[..n], &mut self.pending)
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock, or an ICMP error for an earlier query (the
                // forwarder's own timeout retries it).
                Err(_) => return,
            }
        }
    }

    fn read_flow(&mut self, now: Instant, key: FlowKey) {
        loop {
            let Some((_, socket)) = self.sockets.get(&key) else {
                return;
            };
            let event = match socket {
                HostSocket::Udp(udp) => match udp.recv(&mut self.scratch) {
                    Ok(n) => Ok(Some((0, (0, n)))),
                    Err(err) => Err(err),
                },
                HostSocket::Echo(echo) => match echo.recv(&mut self.scratch) {
                    Ok(Some(reply)) => Ok(Some((reply.seq_no, reply.data))),
                    Ok(None) => Ok(None),
                    Err(err) => Err(err),
                },
            };
            match event {
                Ok(Some((seq_no, (start, end)))) => {
                    let data = &self.scratch[start..end];
                    let event = match key.protocol {
                        Protocol::Icmp => HostEvent::EchoReply { seq_no, data },
                        _ => HostEvent::Datagram(data),
                    };
                    self.services.host(now, key, event, &mut self.pending);
                }
                Ok(None) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    let failure = ConnectFailure::from_io(&err);
                    self.services
                        .host(now, key, HostEvent::Error(failure), &mut self.pending);
                }
            }
        }
    }

    /// Carries out the services' outputs, and those that follow from them.
    fn run(&mut self, now: Instant, gateway: &mut Gateway) {
        while !self.pending.is_empty() {
            for output in std::mem::take(&mut self.pending) {
                match output {
                    Output::Frame(frame) => self.frames.push(frame),
                    Output::Host(command) => self.host_command(now, command),
                    Output::Stack(command) => self.stack_command(command, gateway),
                    Output::StackFrame(frame) => {
                        if !gateway.deliver_reassembled(&frame) {
                            log::debug!("gateway: a reassembled datagram found the queue full");
                            self.gateway_counters.count_drop(DropReason::TxError);
                        }
                    }
                    Output::DnsTcp { client, bytes } => self.dns_tcp_answer(client, &bytes),
                }
            }
        }
    }

    fn host_command(&mut self, now: Instant, command: HostCommand) {
        match command {
            HostCommand::Connect(key) => {
                let opened = if key.protocol == Protocol::Tcp {
                    // Connect first: the answer comes with writability.
                    match self.open_tcp(key) {
                        Ok(()) => return,
                        Err(err) => Err(err),
                    }
                } else {
                    self.open(key)
                };
                let event = match opened {
                    Ok(()) => HostEvent::Connected,
                    Err(err) => {
                        self.socket_errors += 1;
                        log::debug!("flow {key:?}: no host socket: {err}");
                        HostEvent::ConnectFailed(ConnectFailure::from_io(&err))
                    }
                };
                self.services.host(now, key, event, &mut self.pending);
            }
            HostCommand::Send { key, payload } => {
                let sent = match self.sockets.get(&key) {
                    Some((_, HostSocket::Udp(udp))) => udp.send(&payload),
                    _ => match self.send_to_client(key, &payload) {
                        Some(sent) => sent,
                        None => return,
                    },
                };
                self.after_send(now, key, sent);
            }
            HostCommand::SendEcho {
                key,
                seq_no,
                payload,
            } => {
                let sent = match self.sockets.get(&key) {
                    Some((_, HostSocket::Echo(echo))) => echo.send(seq_no, &payload),
                    _ => return,
                };
                self.after_send(now, key, sent);
            }
            HostCommand::SendDns(Outgoing {
                upstream,
                bytes,
                tcp: true,
            }) => self.dns_upstream_send(now, upstream, &bytes),
            HostCommand::SendDns(Outgoing {
                upstream, bytes, ..
            }) => {
                if let Some(dns) = &self.dns
                    && dns.send_to(&bytes, upstream).is_err()
                {
                    // The forwarder's timeout tries the next upstream.
                    self.socket_errors += 1;
                }
            }
            HostCommand::Close(key) if key.protocol == Protocol::Tcp => self.tcp_close(key, false),
            HostCommand::Reset(key) if key.protocol == Protocol::Tcp => self.tcp_close(key, true),
            HostCommand::Close(key) | HostCommand::Reset(key) => self.close(key),
            HostCommand::ShutdownWrite(key) => self.tcp_shutdown_write(key),
        }
    }

    fn after_send(&mut self, now: Instant, key: FlowKey, sent: io::Result<usize>) {
        match sent {
            Ok(_) => {}
            // A full send buffer drops the datagram, as a router would.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => {
                let failure = ConnectFailure::from_io(&err);
                self.services
                    .host(now, key, HostEvent::Error(failure), &mut self.pending);
            }
        }
    }

    /// Opens and registers the flow's host socket.
    fn open(&mut self, key: FlowKey) -> io::Result<()> {
        let remote = self.host_endpoint(key.remote);
        let socket = match key.protocol {
            Protocol::Udp => HostSocket::Udp(HostUdp::connect(remote)?),
            Protocol::Icmp => {
                let kind = self
                    .echo_kind
                    .ok_or_else(|| io::Error::from(io::ErrorKind::PermissionDenied))?;
                let ident = self.next_ident;
                self.next_ident = self.next_ident.wrapping_add(1).max(1);
                HostSocket::Echo(HostEcho::open(kind, *remote.ip(), ident)?)
            }
            Protocol::Tcp => return Err(io::Error::from(io::ErrorKind::Unsupported)),
        };
        let token = self.new_token();
        self.registry
            .register(&mut SourceFd(&socket.fd()), token, Interest::READABLE)?;
        self.by_token.insert(token, key);
        if let Some((old, socket)) = self.sockets.insert(key, (token, socket)) {
            self.forget_socket(old, &socket);
        }
        Ok(())
    }

    /// Where a flow's remote endpoint is on the host: itself, or with
    /// `--allow-host-loopback` the host's loopback for the gateway's own
    /// address.
    fn host_endpoint(&self, remote: SocketAddrV4) -> SocketAddrV4 {
        if self.allow_host_loopback && *remote.ip() == self.gateway_ip {
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, remote.port())
        } else {
            remote
        }
    }

    fn new_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    fn close(&mut self, key: FlowKey) {
        self.udp_clients.remove(&key);
        if let Some((token, socket)) = self.sockets.remove(&key) {
            self.forget_socket(token, &socket);
        }
    }

    fn forget_socket(&mut self, token: Token, socket: &HostSocket) {
        let _ = self.registry.deregister(&mut SourceFd(&socket.fd()));
        self.by_token.remove(&token);
    }

    /// Host sockets open now (for the descriptor-count tests).
    pub fn open_sockets(&self) -> usize {
        self.sockets.len() + self.tcp.len() + self.dns_upstreams.len()
    }

    /// Containers' DNS over TCP connections open now.
    pub fn dns_tcp_connections(&self) -> usize {
        self.dns_tcp.connections()
    }

    /// A fresh unpredictable DNS id (std's randomly keyed SipHash over a
    /// counter: no extra dependency, not guessable from outside).
    fn random_id(&mut self) -> u16 {
        self.random_counter += 1;
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.random_counter);
        (hasher.finish() & 0xffff) as u16
    }
}

#[cfg(test)]
mod tests;

//! TCP flows' I/O: the host connect (connect first: the container's SYN is
//! answered only once it succeeded), the container side as a smoltcp
//! socket on the remote's exact endpoint, and the relay between them
//! through the flow's bounded buffers (`flows::tcp`).
//!
//! Readiness is edge-triggered, so each connection remembers whether its
//! host socket may still be read or written; the pump tries again after
//! the other side drained a buffer (back-pressure: a full buffer leaves the
//! host socket unread, so the kernel closes the remote's window).

use std::io;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use ports::host_socket::HostTcp;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;

use super::HostSide;
use crate::flows::{ConnectFailure, FlowKey, Origin, TcpEvent, TcpState};
use crate::gateway::Gateway;
use crate::services::{HostEvent, StackCommand};
use crate::time::Instant;

/// Bytes each way in a flow's smoltcp socket, at the least. Above 64 KiB
/// so window scaling is on; at least `ports::heap::LARGE_BLOCK`, so each
/// buffer is a mapping of its own and an idle flow costs only the pages its
/// bytes touched.
pub(super) const STACK_BUFFER: usize = 256 * 1024;
/// At most: below a huge page, so that no buffer's mapping holds an
/// aligned 2 MiB range the kernel could back with one huge page at the
/// first byte written (transparent huge pages set to `always`).
const STACK_BUFFER_MAX: usize = 1024 * 1024;
/// Full-size segments a stack buffer holds at the least: what one flow may
/// have in flight toward the container (the send buffer) and the window it
/// offers the container (the receive buffer). At MTU 65520 a segment is
/// 64 KiB, and a few of them in flight would leave the link idle while
/// the ACKs come back.
const STACK_BUFFER_SEGMENTS: usize = 32;
// The services' window check assumes no stack socket offers more.
const _: () = assert!(STACK_BUFFER_MAX <= crate::services::MAX_STACK_WINDOW as usize);
const _: () = assert!(STACK_BUFFER >= ports::heap::LARGE_BLOCK);

/// The stack buffer for a network of `mtu`: room for
/// [`STACK_BUFFER_SEGMENTS`] segments, a power of two (smoltcp's window
/// scale follows the buffer's size), within [`STACK_BUFFER`] and
/// [`STACK_BUFFER_MAX`].
pub(super) fn stack_buffer(mtu: usize) -> usize {
    mtu.saturating_mul(STACK_BUFFER_SEGMENTS)
        .min(STACK_BUFFER_MAX)
        .next_power_of_two()
        .max(STACK_BUFFER)
}
// Relay buffers stay in the heap's arena (see `ports::heap`), the block's
// header included.
const _: () =
    assert!(crate::flows::limits::DEFAULT_BUFFER_BYTES + 4096 <= ports::heap::LARGE_BLOCK);
/// How often every TCP flow is visited even without news (see
/// [`HostSide::pump_active`]).
const SWEEP: std::time::Duration = std::time::Duration::from_secs(1);
/// After an overflow's probe, when one more goes out if the container did
/// not answer (see [`HostSide::probe_due`]).
const PROBE_RETRY: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(2);
/// Rounds of the relay per flow per call, so one busy flow cannot keep the
/// thread from the others.
const PUMP_ROUNDS: usize = 16;

/// What an event said of a TCP flow's host socket.
#[derive(Debug, Clone, Copy)]
pub(super) struct Readiness {
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// Writable with no error and no hang-up: a connect under way has
    /// succeeded (a socket still connecting is never writable), so its
    /// result need not be asked of the kernel.
    pub(super) cleanly_writable: bool,
}

/// One TCP flow's sockets.
#[derive(Debug)]
pub(super) struct TcpConn {
    host: Option<HostTcp>,
    token: Token,
    connecting: bool,
    readable: bool,
    writable: bool,
    host_eof: bool,
    stack: Option<SocketHandle>,
    /// The stack socket reached `Established` once.
    established: bool,
    /// The container's FIN (or reset) was reported.
    container_done: bool,
    /// The gateway closed the socket's sending half.
    closed_write: bool,
}

impl HostSide {
    /// Starts the host connect of a TCP flow.
    pub(super) fn open_tcp(&mut self, key: FlowKey) -> io::Result<()> {
        let remote = self.host_endpoint(key.remote);
        let host = HostTcp::connect(remote)?;
        self.track_tcp(key, host, true)
    }

    /// Takes a published port's accepted client as a flow's host socket.
    pub(super) fn adopt_tcp(&mut self, key: FlowKey, host: HostTcp) -> io::Result<()> {
        self.track_tcp(key, host, false)
    }

    /// Waits for `host`'s readiness under a new token and keeps it as flow
    /// `key`'s host socket (`connecting` until its connect resolves).
    fn track_tcp(&mut self, key: FlowKey, host: HostTcp, connecting: bool) -> io::Result<()> {
        let token = self.new_token();
        self.registry.register(
            &mut SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&host)),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.by_token.insert(token, key);
        let conn = TcpConn {
            host: Some(host),
            token,
            connecting,
            readable: false,
            writable: false,
            host_eof: false,
            stack: None,
            established: false,
            container_done: false,
            closed_write: false,
        };
        if let Some(old) = self.tcp.insert(key, conn) {
            self.drop_conn(old);
        }
        Ok(())
    }

    /// A TCP flow's host socket is ready.
    pub(super) fn tcp_ready(
        &mut self,
        now: Instant,
        key: FlowKey,
        readiness: Readiness,
        gateway: &mut Gateway,
    ) {
        let Some(conn) = self.tcp.get_mut(&key) else {
            return;
        };
        conn.readable |= readiness.readable;
        conn.writable |= readiness.writable;
        if conn.connecting {
            let Some(host) = &conn.host else { return };
            let result = if readiness.cleanly_writable {
                Ok(())
            } else {
                host.connect_result()
            };
            let event = match result {
                Ok(()) => HostEvent::Connected,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => HostEvent::ConnectFailed(ConnectFailure::from_io(&err)),
            };
            conn.connecting = false;
            self.services.host(now, key, event, &mut self.pending);
            self.run(now, gateway);
        }
        self.pump(now, key, gateway);
    }

    /// Host commands for TCP flows.
    pub(super) fn tcp_shutdown_write(&mut self, key: FlowKey) {
        if let Some(host) = self.tcp.get(&key).and_then(|c| c.host.as_ref()) {
            let _ = host.shutdown_write();
        }
    }

    pub(super) fn tcp_close(&mut self, key: FlowKey, reset: bool) {
        let Some(mut conn) = self.tcp.remove(&key) else {
            return;
        };
        // Not deregistered: closing the socket's only descriptor takes it
        // out of the poll (epoll), one system call fewer per flow.
        if let Some(host) = conn.host.take()
            && reset
        {
            host.reset();
        }
        self.by_token.remove(&conn.token);
        if let Some(handle) = conn.stack.take() {
            self.lingering.push((key, handle));
        }
    }

    fn drop_conn(&mut self, mut conn: TcpConn) {
        if let Some(host) = conn.host.take() {
            let _ = self
                .registry
                .deregister(&mut SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&host)));
        }
        self.by_token.remove(&conn.token);
    }

    /// Carries out a command for the container side.
    pub(super) fn stack_command(&mut self, command: StackCommand, gateway: &mut Gateway) {
        // The socket changes at the next poll: the relay looks after it.
        self.active.insert(command.key());
        match command {
            StackCommand::Accept { key, syn } => {
                let Some(conn) = self.tcp.get_mut(&key) else {
                    return;
                };
                if let Some(handle) = gateway.tcp_listen(key.remote, self.stack_buffer) {
                    conn.stack = Some(handle);
                    if !gateway.deliver(&syn) {
                        log::debug!("gateway: the held SYN of {key:?} found the queue full");
                    }
                }
            }
            StackCommand::Connect(key) => {
                let handle = gateway.tcp_connect(key.remote, key.container, self.stack_buffer);
                if let (Some(handle), Some(conn)) = (handle, self.tcp.get_mut(&key)) {
                    conn.stack = Some(handle);
                }
            }
            StackCommand::Abort(key) => {
                if let Some(handle) = self.tcp.get(&key).and_then(|c| c.stack) {
                    gateway.tcp(handle).abort();
                }
            }
            StackCommand::CloseWrite(key) => {
                if let Some(conn) = self.tcp.get_mut(&key)
                    && let Some(handle) = conn.stack
                {
                    conn.closed_write = true;
                    gateway.tcp(handle).close();
                }
            }
            StackCommand::Forget(key) => {
                if let Some(conn) = self.tcp.get_mut(&key)
                    && let Some(handle) = conn.stack.take()
                {
                    self.lingering.push((key, handle));
                }
            }
        }
    }

    /// Relays the bytes of the TCP flows that may have news — those whose
    /// segments went to the stack since the last call, and those the
    /// gateway commanded — as far as the buffers allow, and drops the
    /// smoltcp sockets of finished flows once they have closed. Idle flows
    /// are not visited, except by the sweep every [`SWEEP`], which catches
    /// what smoltcp's own timers did (a retransmission that gave up).
    pub(super) fn pump_active(&mut self, now: Instant, gateway: &mut Gateway) {
        let mut active = self.services.take_stack_flows();
        active.extend(self.active.drain());
        for key in self.services.take_stack_resets() {
            self.reset_before_established(now, key, gateway);
        }
        let sweep = now >= self.next_sweep;
        if sweep {
            active.extend(self.tcp.keys().copied());
            self.next_sweep = now + SWEEP;
        }
        let mut lingering_touched = false;
        for key in active {
            if self.tcp.contains_key(&key) {
                self.pump(now, key, gateway);
            } else {
                lingering_touched = true;
            }
        }
        if !(sweep || lingering_touched) {
            return;
        }
        let services = &mut self.services;
        self.lingering.retain(|&(key, handle)| {
            let state = gateway.tcp(handle).state();
            let done = matches!(state, State::Closed | State::TimeWait | State::Listen);
            if done {
                gateway.remove(handle);
                services.stack_released(key);
            }
            !done
        });
    }

    /// The container reset flow `key`: if its socket never got to
    /// `Established` in the relay's sight, smoltcp may have gone back to
    /// `Listen` (a RST in `SynReceived`) or to `Closed` without the relay
    /// seeing the connection up; either way the flow is over.
    fn reset_before_established(&mut self, now: Instant, key: FlowKey, gateway: &mut Gateway) {
        let Some(conn) = self.tcp.get_mut(&key) else {
            return;
        };
        let Some(handle) = conn.stack else { return };
        let outbound = self
            .services
            .flows()
            .tcp_flow(&key)
            .is_some_and(|f| f.origin() == Origin::Outbound);
        if conn.established || conn.container_done || !outbound {
            return;
        }
        let state = gateway.tcp(handle).state();
        if !matches!(state, State::Listen | State::Closed) {
            return;
        }
        conn.container_done = true;
        self.services
            .tcp(now, key, TcpEvent::ContainerReset, &mut self.pending);
        self.run(now, gateway);
    }

    /// Probes the flows due after an overflow (see `recheck.rs`). The
    /// previous batch's probes went out in the stack's poll since: their
    /// keep-alive goes off, so the container's answer stops the timer (one
    /// more probe follows only if no answer came, a retry).
    pub(super) fn probe_due(&mut self, now: Instant, gateway: &mut Gateway) {
        for key in self.probed.drain(..) {
            if let Some(handle) = self.tcp.get(&key).and_then(|c| c.stack) {
                gateway.tcp(handle).set_keep_alive(None);
            }
        }
        for key in self.recheck.take_due(now) {
            let Some(conn) = self.tcp.get(&key) else {
                continue;
            };
            // Only a connection the container has: before that, its SYN is
            // retransmitted, and a lost RST is of one it never had.
            if let (Some(handle), true) = (conn.stack, conn.established) {
                gateway.tcp(handle).set_keep_alive(Some(PROBE_RETRY));
                self.probed.push(key);
            }
        }
    }

    /// When the sweep of [`HostSide::pump_active`] is next due, if there is
    /// anything to sweep.
    pub(super) fn next_sweep(&self) -> Option<Instant> {
        (!self.tcp.is_empty() || !self.lingering.is_empty()).then_some(self.next_sweep)
    }

    fn pump(&mut self, now: Instant, key: FlowKey, gateway: &mut Gateway) {
        for _ in 0..PUMP_ROUNDS {
            let progress = self.pump_once(now, key, gateway);
            self.run(now, gateway);
            if !progress {
                return;
            }
        }
        // Still moving when its rounds ran out: its turn comes again in the
        // next round (an edge-triggered socket may not say so again).
        self.active.insert(key);
    }

    /// One round of the relay; true if anything moved.
    fn pump_once(&mut self, now: Instant, key: FlowKey, gateway: &mut Gateway) -> bool {
        let Some(conn) = self.tcp.get_mut(&key) else {
            return false;
        };
        let Some(handle) = conn.stack else {
            return false;
        };
        let Some(flow) = self.services.flows().tcp_flow(&key) else {
            return false;
        };
        let inbound = flow.origin() == Origin::Inbound;
        let pending = &mut self.pending;
        let services = &mut self.services;
        let socket = gateway.tcp(handle);
        let mut progress = false;

        if !conn.established && socket.may_send() {
            conn.established = true;
            if inbound {
                services.tcp(now, key, TcpEvent::ContainerConnected, pending);
                progress = true;
            }
        }
        if inbound && !conn.established && socket.state() == State::Closed {
            services.tcp(
                now,
                key,
                TcpEvent::ContainerConnectFailed(ConnectFailure::Refused),
                pending,
            );
            return false;
        }
        // Container to flow.
        while socket.can_recv() {
            let taken = socket
                .recv(|buf| {
                    let step = services.tcp(now, key, TcpEvent::ContainerData(buf), pending);
                    (step.accepted, step.accepted)
                })
                .unwrap_or(0);
            if taken == 0 {
                break;
            }
            progress = true;
        }
        if conn.established && !conn.container_done && socket.recv_queue() == 0 {
            let state = socket.state();
            if state == State::Closed && !conn.closed_write {
                conn.container_done = true;
                services.tcp(now, key, TcpEvent::ContainerReset, pending);
                return true;
            }
            if !socket.may_recv() && state != State::Listen && state != State::SynReceived {
                conn.container_done = true;
                services.tcp(now, key, TcpEvent::ContainerFin, pending);
                progress = true;
            }
        }
        // Flow to container.
        if let Some(flow) = services.flows().tcp_flow(&key) {
            let data = flow.to_container();
            if !data.is_empty() && socket.can_send() {
                let sent = socket.send_slice(data).unwrap_or(0);
                if sent > 0 {
                    services.tcp(now, key, TcpEvent::ContainerTook(sent), pending);
                    progress = true;
                }
            }
        }
        let Some(host) = &conn.host else {
            return progress;
        };
        // Flow to host.
        if conn.writable
            && let Some(flow) = services.flows().tcp_flow(&key)
            && !flow.to_host().is_empty()
        {
            match host.write(flow.to_host()) {
                Ok(n) => {
                    services.tcp(now, key, TcpEvent::HostWrote(n), pending);
                    progress = true;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    services.tcp(now, key, TcpEvent::HostReset, pending);
                    return true;
                }
            }
        }
        // Host to flow. Not while the flow still connects (a published
        // port's client may speak before the container accepted): the flow
        // refuses data then, and what was read would be lost.
        let room = services
            .flows()
            .tcp_flow(&key)
            .filter(|f| f.state() != TcpState::Connecting)
            .map_or(0, |f| f.room_to_container());
        if conn.readable && !conn.host_eof && room > 0 {
            let limit = room.min(self.scratch.len());
            // Nothing waits in the flow before these bytes: read them
            // straight into the stack's send buffer (two copies fewer: no
            // read buffer, no relay buffer), the flow only counting them.
            let direct = socket.can_send()
                && services
                    .flows()
                    .tcp_flow(&key)
                    .is_some_and(|f| f.to_container().is_empty());
            let read = if direct {
                socket
                    .send(|buf| {
                        let limit = buf.len().min(limit);
                        if limit == 0 {
                            // A read of nothing would look like the end.
                            return (0, Err(io::Error::from(io::ErrorKind::Interrupted)));
                        }
                        match host.read(&mut buf[..limit]) {
                            Ok(n) if n > 0 => {
                                let taken = TcpEvent::HostDataTaken(n);
                                (services.tcp(now, key, taken, pending).accepted, Ok(n))
                            }
                            other => (0, other),
                        }
                    })
                    // The socket cannot take data after all: nothing read.
                    .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::Interrupted)))
            } else {
                host.read(&mut self.scratch[..limit]).inspect(|&n| {
                    if n > 0 {
                        let data = TcpEvent::HostData(&self.scratch[..n]);
                        services.tcp(now, key, data, pending);
                    }
                })
            };
            match read {
                Ok(0) => {
                    conn.host_eof = true;
                    services.tcp(now, key, TcpEvent::HostEof, pending);
                    progress = true;
                }
                Ok(_) => progress = true,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => conn.readable = false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    services.tcp(now, key, TcpEvent::HostReset, pending);
                    return true;
                }
            }
        }
        progress
    }
}

//! Translated flows: how a container reaches the world through the gateway
//! without kernel NAT.
//!
//! A container's connection to an address outside its network is ended at
//! the gateway and carried on by a socket the switch opens in its own
//! network namespace (the host's), the way slirp4netns, pasta and
//! gvisor-tap-vsock do it. This module is the pure half of that: which
//! flows exist, what state each is in, and what must happen next. It reads
//! no clock and does no I/O; the gateway thread feeds it events and carries
//! out the [`Action`]s it returns, through [`crate::host_side`] (the
//! "Integration plan" below is how it was wired).
//!
//! **Keys.** A flow is (protocol, container endpoint, remote endpoint)
//! ([`FlowKey`]). Ping flows use the echo identifier as the container's
//! port and 0 as the remote's.
//!
//! **Both ways.** Outbound flows ([`Origin::Outbound`], [`FlowTable::open`])
//! are the container's connections out. Inbound flows
//! ([`Origin::Inbound`], [`FlowTable::open_inbound`]) are clients of
//! published ports: the remote endpoint is the client's, and the gateway
//! connects into the container *from the client's own address and port*,
//! so the container sees who really called (no proxy address). They share
//! the table, the limits (charged to the container) and the counters.
//!
//! **State machines.** [`tcp::TcpFlow`] (connect first; bounded relay
//! buffers with back-pressure; half-close each way; resets across; connect
//! and idle timers), [`udp::UdpFlow`] (a connected host socket per flow,
//! datagrams never buffered, idle timer, ICMP errors passed on) and
//! [`icmp::EchoFlow`] (ping through an ICMP socket). Each takes an event and
//! returns [`Actions`]; every transition, the bad ones included, has a unit
//! test in `flows/tests/`.
//!
//! **Limits** ([`FlowLimits`]): flows in total and per container address,
//! TCP connects pending in total and per container, relay bytes per
//! direction. A refused flow is counted under the limit that refused it
//! ([`FlowStats`]) and its packet dropped, as conntrack drops when its
//! table is full: the container's retransmission tries again. The per
//! container bounds are what keep one container's SYN flood from starving
//! the others: it fills its own share of pending connects and no more.
//! Admission checks the per-container bounds first, so a flooding
//! container's refusals are charged to it, not to the table.
//!
//! **The gateway port's classifier** ([`classify()`]): which frames are the
//! gateway stack's, the DNS server's, a translated flow's (with its key), or
//! nobody's, so that smoltcp in any-IP mode only sees what it took before.
//!
//! **Packets the gateway answers with** on a flow's behalf: the RST that
//! refuses a held SYN ([`reset_for_syn`]) and the ICMP destination
//! unreachable ([`unreachable_packet`]), both built with smoltcp's wire
//! types and tested by parsing them back.
//!
//! **Counters and rows.** [`FlowStats`] (opened, refused, timed out,
//! closed, reset, dropped for limits by reason, invalid input) for `stats`;
//! [`FlowInfo`] (a `conntrack -L` line) for `tapswitch flows [--json]`.
//!
//! **Timers.** [`FlowTable::next_deadline`] says when the next timer runs
//! out; [`FlowTable::expire`] runs them. Idle timeouts follow the NAT
//! behaviour RFCs (RFC 5382 for TCP, RFC 4787 for UDP); see [`limits`].
//!
//! # Integration plan (for the session that wires it)
//!
//! [`crate::services::Services`] already joins the classifier, this table
//! and DNS, and does steps 1, 2, 4, 7, 8 and the flow side of 9 below at
//! the wire level (its outputs are frames, host-socket commands and smoltcp
//! commands); what is left is the I/O and smoltcp's TCP side. The gateway
//! thread owns it next to its smoltcp `Interface`. Host sockets are made in
//! `ports` (the syscall crate), as non-blocking `socket2` sockets
//! registered with the gateway thread's `mio::Poll`; the token maps back to
//! the [`FlowKey`].
//!
//! 0. **Features.** smoltcp is built without `socket-tcp` today; the
//!    integration needs it. With it, a TCP segment to the gateway's own
//!    address that no socket takes is answered with a RST (as a kernel
//!    host does) instead of today's ICMP protocol unreachable: a visible
//!    change to check against the differential tests.
//! 1. **Classify before smoltcp.** smoltcp 0.14's any-IP mode
//!    (`Interface::set_any_ip(true)`) makes `has_ip_addr` true for *every*
//!    address, with or without a route (the doc comment's "a route whose
//!    gateway is one of ours" is not checked in 0.14; `flows/tests/any_ip.rs`
//!    pins this down). The interface then answers ARP for every address of
//!    the subnet (stealing other containers' traffic), answers pings to any
//!    address itself (forged replies), and RSTs any TCP segment no socket
//!    claims. So the gateway thread must look at each frame first and hand
//!    smoltcp only: ARP whose target is the gateway's address; IPv4 to the
//!    gateway's address (ping, DNS); and TCP segments of flows past
//!    [`tcp::TcpState::Connecting`]. Outbound pings and UDP never reach
//!    smoltcp (steps 7 and 8); frames to other containers' addresses (floods
//!    of unknown unicast reach the gateway port too) are dropped silently,
//!    as now. [`classify()`] is this step, pure and tested (smoltcp's wire
//!    views parse; the new `ports::wire` header views could replace them).
//! 2. **TCP, connect first.** A SYN (no ACK) from a container to an address
//!    outside the subnet: [`FlowTable::open`]. On `Opened`, keep a copy of
//!    the SYN frame (one frame per pending flow, bounded by the pending
//!    limits) and carry out [`Action::ConnectHost`]: `socket2` non-blocking
//!    `connect`, `SO_KEEPALIVE` on. On `Existing` (the SYN's retransmission)
//!    drop the frame: smoltcp must not see it, it would answer RST. On a
//!    limit, drop the frame (and count; the table did).
//! 3. When the host socket becomes writable, `take_error()` decides:
//!    `HostConnected` or `HostConnectFailed(ConnectFailure::from_io(..))`.
//!    [`Action::AcceptContainer`]: create a smoltcp TCP socket, `listen` on
//!    the exact remote endpoint (`IpListenEndpoint { addr: Some(remote ip),
//!    port }`), then feed the held SYN to the interface in the same poll.
//!    Two flows to the same remote endpoint may have listeners at once; a
//!    listener accepts any SYN for its endpoint, so after the poll bind
//!    each socket handle to its flow by `socket.remote_endpoint()`, not by
//!    creation order. Size the socket's buffers from the network's MTU
//!    (window scaling on) so a 65520-byte MTU is not throttled by a 64 KiB
//!    window. **Memory**: smoltcp cannot resize a socket's buffers, so they
//!    are sized for speed and made cheap by the kernel: with the C heap's
//!    mmap threshold pinned (`ports::heap`) each buffer is a fresh mapping
//!    whose pages become resident only when bytes touch them (measured in
//!    `tests/gateway_limits.rs`: 10,000 idle flows in under 100 MiB).
//! 4. [`Action::ResetContainer`] before the handshake: [`reset_for_syn`]
//!    with the held SYN's IP packet, sent to the container's MAC; after the
//!    handshake: `socket.abort()`. [`Action::SendUnreachable`]: [`icmp::unreachable_packet`]
//!    with the held SYN's IP packet, from the gateway's address.
//! 5. **Relay.** Register the host socket for [`TcpFlow::interest`]. Read
//!    the smoltcp socket with `recv(|buf| ...)` returning the
//!    [`TcpStep::accepted`] count of `ContainerData` (what is not accepted
//!    stays in smoltcp's buffer and closes the container's window); write
//!    [`TcpFlow::to_host`] with `send` and report `HostWrote(n)`. The other
//!    way: `read` into a scratch buffer sized by the flow's free space,
//!    `HostData`, then `send_slice` of [`TcpFlow::to_container`] and
//!    `ContainerTook(n)`; or, with nothing waiting in `to_container`, `read`
//!    straight into smoltcp's send buffer and `HostDataTaken(n)`. `EAGAIN`
//!    is no event; `ECONNRESET`/`EPIPE` are
//!    `HostReset`; a 0-byte read is `HostEof`.
//! 6. **Closes.** smoltcp's `!may_recv()` with an empty receive buffer after
//!    `Established` is `ContainerFin`; a socket that went to `Closed`
//!    without it is `ContainerReset`. [`Action::ShutdownHostWrite`] is
//!    `shutdown(Write)`, [`Action::CloseContainerWrite`] is `socket.close()`,
//!    [`Action::ResetHost`] is `SO_LINGER` 0 then close. On
//!    [`Action::Release`], drop the host socket (its descriptor goes back;
//!    the fd-count test needs it) and keep the smoltcp socket only until it
//!    reaches `Closed`/`TimeWait`, then remove it from the socket set.
//! 7. **UDP.** Handle at the wire level, not with smoltcp sockets (they are
//!    stateless; smoltcp would also have to send from foreign addresses).
//!    First datagram: `open`, a connected `socket2` UDP socket, then
//!    `HostConnected` (or `HostConnectFailed`) and send the datagram. Host
//!    datagrams: build IPv4/UDP with smoltcp's `UdpRepr`/`Ipv4Repr` from the
//!    remote endpoint to the container. A socket error from `recv`/`send`
//!    is `HostError` ([`Action::SendUnreachable`] quotes the last datagram).
//! 8. **Ping.** As UDP, with an ICMP datagram socket
//!    (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`), or a raw one when the
//!    switch has `CAP_NET_RAW`; `stats` says which. Replies get the
//!    container's identifier back.
//! 9. **Published ports.** The switch listens on each published host port
//!    of its network (IPAM's `State::published_ports`; a socket per port,
//!    opened at start and closed at stop). TCP: on `accept`,
//!    [`FlowTable::open_inbound`] with (container ip:port, client
//!    endpoint), then [`Action::ConnectContainer`]: a smoltcp socket
//!    `connect`ing from the client's endpoint (any-IP lets smoltcp send
//!    from it) to the container; `Established` is `ContainerConnected`, a
//!    RST or smoltcp's timeout `ContainerConnectFailed`. The relay is the
//!    outbound one with the host socket being the client. UDP: each
//!    client endpoint is an inbound UDP flow; datagrams go to the
//!    container from the client's endpoint (wire level), and the
//!    container's answers go back with `send_to` on the published socket.
//! 10. **Timers.** Wake at `min(next_deadline, smoltcp poll_at, readiness)`
//!     and run [`FlowTable::expire`]; carry out its actions.
//! 11. **Visibility.** `tapswitch flows` sends a control request answered
//!     with [`FlowTable::infos`]; `stats` adds [`FlowStats`]; `--trace`
//!     turns on [`FlowTable::set_trace`] and prints [`FlowTable::take_events`]
//!     as [`FlowTraceLine`]s (opened, refused by a limit, ended: how, by
//!     whom, after how long, how many bytes).

pub mod action;
pub mod buffer;
pub mod classify;
pub mod icmp;
pub mod key;
pub mod limits;
pub mod reset;
pub mod table;
pub mod tcp;
pub mod trace;
pub mod udp;

pub use action::{
    Action, Actions, ConnectFailure, EndReason, FlowCounters, Origin, Side, Timer, Unreachable,
};
pub use classify::{GatewayAddresses, IgnoreReason, Ingress, classify, classify_with};
pub use icmp::{EchoEvent, EchoFlow, unreachable_packet};
pub use key::{FlowKey, Protocol};
pub use limits::{FlowLimits, FlowStats, LimitReason};
pub use reset::reset_for_syn;
pub use table::{Admission, Flow, FlowInfo, FlowTable, PacketWay};
pub use tcp::{Interest, TcpEvent, TcpFlow, TcpState, TcpStep};
pub use trace::{FlowEvent, FlowTraceLine};
pub use udp::{UdpEvent, UdpFlow, UdpState, UdpStep};

#[cfg(test)]
mod tests;

//! Ping through the gateway, and the ICMP errors the gateway sends.
//!
//! **Echo flows.** A container's echo request to an outside address is
//! carried by a host ICMP socket: an unprivileged one
//! (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`, allowed by
//! `net.ipv4.ping_group_range`) or a raw one where the switch has
//! `CAP_NET_RAW`. The flow is keyed by the container's address and its
//! echo identifier (in the key's port field) and the remote address (port
//! 0). An unprivileged socket rewrites the identifier to its own, so the
//! I/O side puts the container's identifier back on each reply; the flow
//! only counts and times. A socket the host refuses (`EACCES`: the group
//! range excludes us) answers the container with "administratively
//! prohibited" rather than leaving its ping to time out mutely.
//!
//! The echo flow is the UDP flow's machine under other names: one host
//! socket, datagrams relayed without buffering, an idle timer
//! (`icmp_idle`), ICMP errors from the path passed on.
//!
//! **Destination unreachable.** [`unreachable_packet`] builds the IPv4
//! packet a router sends when it cannot deliver: from the gateway's
//! address, quoting the offending packet's header and first bytes, and
//! never about a packet that must not draw an error (RFC 1122 3.2.2).

use std::net::Ipv4Addr;
use std::time::Duration;

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet};

use crate::flows::action::{ConnectFailure, FlowCounters, Unreachable};
use crate::flows::udp::{UdpEvent, UdpFlow, UdpState, UdpStep};
use crate::time::Instant;

/// What happened to an echo flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoEvent {
    /// The host ICMP socket is open.
    HostConnected,
    /// The host refused an ICMP socket, or its connect failed.
    HostConnectFailed(ConnectFailure),
    /// The container sent an echo request with this many payload bytes.
    Request(usize),
    /// The host socket received an echo reply with this many payload bytes.
    Reply(usize),
    /// The host socket reported an ICMP error from the path.
    HostError(ConnectFailure),
}

/// One ping flow. Performs no I/O; time is an argument.
#[derive(Debug, Clone)]
pub struct EchoFlow {
    inner: UdpFlow,
}

impl EchoFlow {
    pub fn new(now: Instant, idle: Duration) -> EchoFlow {
        EchoFlow {
            inner: UdpFlow::new(now, idle),
        }
    }

    /// Runs one event; `relay` in the answer means "send this request to
    /// the host socket" or "send this reply to the container".
    pub fn handle(&mut self, now: Instant, event: EchoEvent) -> UdpStep {
        let event = match event {
            EchoEvent::HostConnected => UdpEvent::HostConnected,
            EchoEvent::HostConnectFailed(failure) => UdpEvent::HostConnectFailed(failure),
            EchoEvent::Request(len) => UdpEvent::FromContainer(len),
            EchoEvent::Reply(len) => UdpEvent::FromHost(len),
            EchoEvent::HostError(failure) => UdpEvent::HostError(failure),
        };
        self.inner.handle(now, event)
    }

    pub fn tick(&mut self, now: Instant) -> crate::flows::action::Actions {
        self.inner.tick(now)
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline()
    }

    /// As conntrack shows ping flows: `UNREPLIED` until the first reply.
    pub fn state(&self) -> UdpState {
        self.inner.state()
    }

    pub fn counters(&self) -> &FlowCounters {
        self.inner.counters()
    }

    pub fn last_activity(&self) -> Instant {
        self.inner.last_activity()
    }
}

/// RFC 1812 4.3.2.3: quote as much of the offending packet as fits in a
/// 576-byte error (the minimum every host reassembles), as Linux does.
const MAX_ERROR_PACKET: usize = 576;
const IPV4_HEADER: usize = 20;
const ICMP_HEADER: usize = 8;
/// Linux's `ip_default_ttl`.
const TTL: u8 = 64;
/// IP precedence "internetwork control", which Linux gives ICMP errors.
const DSCP_INTERNETWORK_CONTROL: u8 = 0x30;

/// The IPv4 packet (no Ethernet header) telling the sender of `offending`
/// that its destination is unreachable, sent from `from` (the gateway).
/// `None` when RFC 1122 forbids an error about it: it is not a valid IPv4
/// packet, is itself an ICMP error, is a later fragment, or came from or
/// went to an address that is not a single host.
pub fn unreachable_packet(code: Unreachable, from: Ipv4Addr, offending: &[u8]) -> Option<Vec<u8>> {
    // Checked by hand rather than with `new_checked`, which refuses a
    // packet cut shorter than its total length: a flow keeps only the
    // first bytes of its first packet, and what is there is quoted.
    let version_ihl = *offending.first()?;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || header_len < IPV4_HEADER || offending.len() < header_len {
        return None;
    }
    let original = Ipv4Packet::new_unchecked(offending);
    let (src, dst) = (original.src_addr(), original.dst_addr());
    let not_a_host = |ip: Ipv4Addr| ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast();
    if not_a_host(src) || not_a_host(dst) || original.frag_offset() != 0 {
        return None;
    }
    let original_len = usize::from(original.total_len())
        .min(offending.len())
        .max(header_len);
    let transport = &offending[header_len..original_len];
    if original.next_header() == IpProtocol::Icmp && !is_icmp_query(transport) {
        return None;
    }
    let quoted = original_len.min(MAX_ERROR_PACKET - IPV4_HEADER - ICMP_HEADER);
    let total = IPV4_HEADER + ICMP_HEADER + quoted;

    let mut out = vec![0u8; total];
    let mut ip = Ipv4Packet::new_unchecked(&mut out[..]);
    ip.set_version(4);
    ip.set_header_len(IPV4_HEADER as u8);
    ip.set_dscp(DSCP_INTERNETWORK_CONTROL);
    ip.set_total_len(u16::try_from(total).ok()?);
    ip.set_hop_limit(TTL);
    ip.set_next_header(IpProtocol::Icmp);
    ip.set_src_addr(from);
    ip.set_dst_addr(src);
    ip.fill_checksum();
    let mut icmp = Icmpv4Packet::new_unchecked(&mut out[IPV4_HEADER..]);
    icmp.set_msg_type(Icmpv4Message::DstUnreachable);
    icmp.set_msg_code(code.code());
    icmp.data_mut()[..quoted].copy_from_slice(&offending[..quoted]);
    icmp.fill_checksum();
    Some(out)
}

/// Echo and the other queries may draw an error; errors may not (RFC 1122
/// 3.2.2: no error about an error, so two routers cannot loop).
fn is_icmp_query(transport: &[u8]) -> bool {
    // The type is the first byte; a quote may be too short for the rest.
    let Some(&kind) = transport.first() else {
        return false;
    };
    matches!(
        Icmpv4Message::from(kind),
        Icmpv4Message::EchoRequest
            | Icmpv4Message::EchoReply
            | Icmpv4Message::Timestamp
            | Icmpv4Message::TimestampReply
            | Icmpv4Message::RouterSolicit
            | Icmpv4Message::RouterAdvert
    )
}

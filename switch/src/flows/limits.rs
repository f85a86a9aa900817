//! What the flow table may hold, how long flows live, and the counters that
//! say what happened to them.
//!
//! Every bound here is a refusal someone can see: a flow the table will not
//! open is counted under the limit that refused it ([`FlowStats`]), never
//! silently lost.

use std::time::Duration;

use serde::Serialize;

/// The bounds of one flow table (one network's gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// Flows of all containers together. Each holds a host socket (a file
    /// descriptor) and up to two relay buffers.
    pub max_flows: usize,
    /// Flows of one container address: one busy container cannot take the
    /// whole table.
    pub max_flows_per_container: usize,
    /// TCP flows still waiting for their connect, all containers and both
    /// directions together.
    pub max_pending_connects: usize,
    /// TCP flows of one container still waiting for their connect, counted
    /// apart for its connections out and for clients of its published
    /// ports. A SYN flood from one container fills its own share, so the
    /// others' connects still go out.
    pub max_pending_connects_per_container: usize,
    /// Bytes a TCP flow buffers in each direction before it stops reading
    /// that direction's source (back-pressure).
    pub buffer_bytes: usize,
    /// How long a host connect may take before the flow gives up.
    pub connect_timeout: Duration,
    /// Idle time after which an established TCP flow is closed.
    pub tcp_idle: Duration,
    /// Idle time after which a half-closed TCP flow is closed.
    pub tcp_half_closed_idle: Duration,
    /// Idle time after which a UDP flow is closed.
    pub udp_idle: Duration,
    /// Idle time of a UDP flow to port 53 (one query, one answer).
    pub udp_dns_idle: Duration,
    /// Idle time after which a ping flow is closed.
    pub icmp_idle: Duration,
}

/// 16 Ki flows: the 10,000 concurrent idle flows fit with room to
/// spare; each holds a descriptor, so the gateway raises its soft
/// `RLIMIT_NOFILE` (1024 by default) to the hard limit when it starts.
pub const DEFAULT_MAX_FLOWS: usize = 16 * 1024;
/// A quarter of the table: four busy containers can share it.
pub const DEFAULT_MAX_FLOWS_PER_CONTAINER: usize = 4 * 1024;
/// Matches Linux's default `somaxconn` (4096) in spirit: plenty for real
/// clients, bounded for floods.
pub const DEFAULT_MAX_PENDING_CONNECTS: usize = 1024;
/// An eighth of the pending connects: one flooding container leaves seven
/// eighths to the others.
pub const DEFAULT_MAX_PENDING_CONNECTS_PER_CONTAINER: usize = 128;
/// Per direction. The container's side (smoltcp) and the host's socket have
/// buffers of their own; this one only absorbs a partial write. A page
/// under 256 KiB, so its block stays under the heap's large-block size
/// (`ports::heap::LARGE_BLOCK`) and is never a mapping of its own.
pub const DEFAULT_BUFFER_BYTES: usize = 256 * 1024 - 4096;
/// Longer than Linux's own SYN retries (`tcp_syn_retries` 6: about 127 s),
/// so the host kernel's `ETIMEDOUT` normally decides; this is a backstop.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(135);
/// RFC 5382 REQ-5: a NAT must not drop an established TCP mapping idle for
/// less than 2 hours 4 minutes.
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(2 * 3600 + 4 * 60);
/// RFC 5382's transitory connection idle timeout (4 minutes).
pub const DEFAULT_TCP_HALF_CLOSED_IDLE: Duration = Duration::from_secs(240);
/// RFC 4787 REQ-5: a UDP mapping must not expire in less than 2 minutes;
/// each flow holds a host socket, so the floor.
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(120);
/// RFC 4787 allows shorter timers for DNS; conntrack uses 30 s for UDP.
pub const DEFAULT_UDP_DNS_IDLE: Duration = Duration::from_secs(30);
/// conntrack's `nf_conntrack_icmp_timeout`.
pub const DEFAULT_ICMP_IDLE: Duration = Duration::from_secs(30);

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            max_flows: DEFAULT_MAX_FLOWS,
            max_flows_per_container: DEFAULT_MAX_FLOWS_PER_CONTAINER,
            max_pending_connects: DEFAULT_MAX_PENDING_CONNECTS,
            max_pending_connects_per_container: DEFAULT_MAX_PENDING_CONNECTS_PER_CONTAINER,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tcp_idle: DEFAULT_TCP_IDLE,
            tcp_half_closed_idle: DEFAULT_TCP_HALF_CLOSED_IDLE,
            udp_idle: DEFAULT_UDP_IDLE,
            udp_dns_idle: DEFAULT_UDP_DNS_IDLE,
            icmp_idle: DEFAULT_ICMP_IDLE,
        }
    }
}

/// Which bound refused a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitReason {
    /// [`FlowLimits::max_flows`].
    TableFull,
    /// [`FlowLimits::max_flows_per_container`].
    ContainerFull,
    /// [`FlowLimits::max_pending_connects`].
    PendingConnects,
    /// [`FlowLimits::max_pending_connects_per_container`].
    ContainerPendingConnects,
}

/// What happened to the flows of one table since it was made, for
/// `tapswitch stats`. Plain counters: the table is owned by one thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlowStats {
    /// Flows admitted to the table (a host socket was asked for).
    pub opened: u64,
    /// Host connects refused (the container got a RST) or reported
    /// unreachable (the container got an ICMP unreachable).
    pub refused: u64,
    /// Flows ended by a timer: a connect that never resolved, or idleness.
    pub timed_out: u64,
    /// Flows that ended in an orderly way: both sides closed, or a reset
    /// from either side.
    pub closed: u64,
    /// Of `closed`: flows ended by a reset (from the container or the remote).
    pub reset: u64,
    /// New flows refused by a limit, all reasons together.
    pub dropped_for_limits: u64,
    /// Of `dropped_for_limits`: the table was full.
    pub limit_table_full: u64,
    /// Of `dropped_for_limits`: the container had its share of flows.
    pub limit_container_full: u64,
    /// Of `dropped_for_limits`: too many connects pending overall.
    pub limit_pending_connects: u64,
    /// Of `dropped_for_limits`: the container had its share of pending connects.
    pub limit_container_pending_connects: u64,
    /// Container-side input that fit no flow's state (data before the
    /// handshake, data after a FIN, a datagram too large to relay).
    pub dropped_invalid: u64,
}

impl FlowStats {
    pub(crate) fn count_limit(&mut self, reason: LimitReason) {
        self.dropped_for_limits += 1;
        match reason {
            LimitReason::TableFull => self.limit_table_full += 1,
            LimitReason::ContainerFull => self.limit_container_full += 1,
            LimitReason::PendingConnects => self.limit_pending_connects += 1,
            LimitReason::ContainerPendingConnects => self.limit_container_pending_connects += 1,
        }
    }
}

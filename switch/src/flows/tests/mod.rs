//! The flow state machines and the table, on a fake clock.

mod any_ip;
mod classify;
mod icmp;
mod reset;
mod table;
mod tcp;
mod udp;

use std::net::SocketAddrV4;
use std::time::Duration;

use crate::flows::FlowLimits;
use crate::time::Instant;

/// Small limits, so every bound is easy to reach.
fn limits() -> FlowLimits {
    FlowLimits {
        max_flows: 8,
        max_flows_per_container: 4,
        max_pending_connects: 4,
        max_pending_connects_per_container: 2,
        buffer_bytes: 8,
        connect_timeout: Duration::from_secs(10),
        tcp_idle: Duration::from_secs(100),
        tcp_half_closed_idle: Duration::from_secs(20),
        udp_idle: Duration::from_secs(30),
        udp_dns_idle: Duration::from_secs(5),
        icmp_idle: Duration::from_secs(15),
    }
}

fn at(secs: u64) -> Instant {
    Instant::from_secs(secs)
}

fn ep(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

//! tapswitch's frame path.
//!
//! Read it in this order:
//!
//! - [`engine`]: the forwarding decision for one frame (learn, then forward,
//!   flood or drop), the rules of a learning bridge in one function.
//! - [`mac_table`]: the MAC table it learns into: aging, moves, capacity and
//!   fair eviction, shared by the worker threads.
//! - [`fabric`]: delivery of a decided frame to the egress ports (floods,
//!   offload headers passed through or resolved in software, MTU checks,
//!   counters, capture, trace), shared by the live switch and `replay`.
//! - [`gateway`]: the gateway host (smoltcp) on the internal port.
//! - [`trace`]: the one-line explanation of each decision.
//! - [`events`]: what the switch learns and forgets, as data, for whoever
//!   subscribes (`tapswitch monitor`, the web page); free while nobody does.
//! - [`stats`]: per-port counters and drop reasons.
//! - [`port`]: port numbers, and the gateway's internal port (its name, MTU
//!   and send half) as the live switch and `replay` both attach it.
//! - [`dataplane`]: the live switch's threads (workers reading ports in
//!   lanes, the gateway thread, aging), which drive the fabric; its module
//!   docs say which file holds which job.
//! - [`flows`], [`dns`] and [`services`]: the gateway's services (issue 14:
//!   outbound flows, published ports, DNS), pure state machines joined in
//!   [`services::Services`]; [`host_side`] carries out their I/O on the
//!   gateway thread (host sockets, smoltcp's TCP sockets, published ports).
//!
//! Determinism contract: the engine, table, fabric, gateway and trace read
//! no clock and do no I/O of their own (the fabric sends through the port
//! traits it is given; only a live port's pcapng capture stamps wall-clock
//! time, and replay ports have none). Time is an argument ([`Instant`]), so the same
//! frames at the same times always give the same decisions; `replay`
//! depends on it. Only [`dataplane`] reads the clock and waits on ports.

#![forbid(unsafe_code)]

pub mod dataplane;
pub mod dns;
pub mod engine;
pub mod events;
pub mod fabric;
pub mod flows;
pub mod gateway;
pub mod host_side;
pub mod mac;
pub mod mac_table;
pub mod port;
pub mod services;
pub mod stats;
#[cfg(test)]
mod test_frames;
pub mod time;
pub mod trace;

pub use engine::{Action, Engine, FloodReason, Session, Verdict};
pub use events::{EventBus, Stamped, Subscription, SwitchEvent};
pub use fabric::{Fabric, PortHandle, PortSet};
pub use gateway::Gateway;
pub use mac::MacAddr;
pub use mac_table::{
    EntryKind, FdbEditError, FdbEntry, FlushScope, Learn, MacTable, PreviousEntry, TableConfig,
    TableStats,
};
pub use port::PortId;
pub use stats::{DropReason, PortCounters, PortStats};
pub use time::Instant;

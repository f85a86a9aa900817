//! Port identities as the engine sees them.

use std::fmt;

/// A switch port number. 0 is the gateway's internal port; the ports a user
/// attaches are numbered from 1 in the order they are added, as `brctl`
/// numbers bridge ports.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct PortId(pub u32);

impl PortId {
    /// The gateway's internal port (like the Linux bridge's own interface).
    pub const GATEWAY: PortId = PortId(0);
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

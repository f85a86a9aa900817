//! The ports as the fabric sees them: how to send to each, its counters and
//! capture, and the set of them at one moment.

use std::fmt;
use std::sync::Arc;

use ports::capture::{Direction, PortCapture, wall_clock_ns};
use ports::transmit::Egress;
use ports::{PortKind, PortTx};

use crate::port::PortId;
use crate::stats::{DropReason, PortCounters};

/// A port as the fabric sees it: how to send to it, and its counters.
pub struct PortHandle {
    pub id: PortId,
    pub name: String,
    pub kind: PortKind,
    pub tx: Arc<dyn PortTx>,
    pub counters: Arc<PortCounters>,
    /// The port's capture file (`serve --capture`), started or stopped.
    pub capture: Option<Arc<PortCapture>>,
}

impl PortHandle {
    /// Whether the port records its frames in a capture file now.
    pub fn is_capturing(&self) -> bool {
        self.capture.as_ref().is_some_and(|c| c.is_enabled())
    }

    /// Records a frame in the port's capture file, if it is capturing. A
    /// port that is not pays one atomic load; the clock is read only for
    /// frames that are recorded.
    pub(crate) fn capture(&self, direction: Direction, frame: &[u8]) {
        if let Some(capture) = &self.capture
            && capture.is_enabled()
        {
            capture.record(direction, wall_clock_ns(), frame);
        }
    }
}

/// The batcher reports each frame it sent once, as the fabric decided it
/// (a coalesced datagram alone), so the counters and the capture file see
/// the frames that crossed the switch.
impl Egress for PortHandle {
    fn tx(&self) -> &dyn PortTx {
        &*self.tx
    }

    fn count_sent(&self, frame: &[u8]) {
        self.counters.count_tx(1, frame.len() as u64);
        self.capture(Direction::Outbound, frame);
    }

    fn count_coalesced(&self, datagrams: usize) {
        self.counters.count_coalesced(datagrams as u64);
    }

    fn count_refused(&self) {
        self.counters.count_drop(DropReason::TxError);
    }
}

impl fmt::Debug for PortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortHandle({} {} {:?})", self.id, self.name, self.kind)
    }
}

/// The ports of the switch at one moment, sorted by id. Workers keep an
/// `Arc` of it for a batch; adding or removing a port publishes a new one.
#[derive(Debug, Default, Clone)]
pub struct PortSet {
    ports: Vec<Arc<PortHandle>>,
}

impl PortSet {
    pub fn new(mut ports: Vec<Arc<PortHandle>>) -> Self {
        ports.sort_by_key(|p| p.id);
        PortSet { ports }
    }

    pub fn get(&self, id: PortId) -> Option<&Arc<PortHandle>> {
        self.ports
            .binary_search_by_key(&id, |p| p.id)
            .ok()
            .map(|i| &self.ports[i])
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<PortHandle>> {
        self.ports.iter().find(|p| p.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<PortHandle>> {
        self.ports.iter()
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// A copy with `port` added (replacing one with the same id).
    pub fn with(&self, port: Arc<PortHandle>) -> PortSet {
        let mut ports: Vec<_> = self
            .ports
            .iter()
            .filter(|p| p.id != port.id)
            .cloned()
            .collect();
        ports.push(port);
        PortSet::new(ports)
    }

    /// A copy without port `id`.
    pub fn without(&self, id: PortId) -> PortSet {
        PortSet {
            ports: self.ports.iter().filter(|p| p.id != id).cloned().collect(),
        }
    }

    /// The port's name, or its number if it is gone (for trace lines).
    pub fn name_of(&self, id: PortId) -> String {
        self.get(id)
            .map_or_else(|| format!("port{}", id.0), |p| p.name.clone())
    }
}

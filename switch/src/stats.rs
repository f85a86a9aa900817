//! Per-port counters, shared between the worker threads (hence atomics; all
//! `Relaxed`: they are statistics, nothing is ordered by them).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a frame was not delivered. Ingress reasons are counted on the port the
/// frame came in on, egress reasons on the port it could not go out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Shorter than an Ethernet header (14 bytes).
    Runt,
    /// The source address is a group (multicast/broadcast) or all-zero
    /// address: no host sends from one. Linux drops these too.
    InvalidSource,
    /// IEEE 802.1D link-local destination 01:80:C2:00:00:01–0F (pause, LACP,
    /// 802.1X, LLDP, ...): for the link, not the LAN.
    LinkLocal,
    /// The destination lives on the port the frame came in on.
    Hairpin,
    /// The source claims the switch's own (gateway) address.
    SpoofedLocal,
    /// The port's receive queue in the kernel was full: the switch did not
    /// read fast enough (counted from the socket's statistics, each second).
    RxOverflow,
    /// Longer than the egress port's MTU allows (and not a GSO frame).
    TooBig,
    /// An offload header or GSO frame that cannot be processed.
    Malformed,
    /// The egress port refused the frame (queue full, device gone; the
    /// gateway's queue also refuses datagrams reassembled for its stack).
    TxError,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::Runt,
        DropReason::InvalidSource,
        DropReason::LinkLocal,
        DropReason::Hairpin,
        DropReason::SpoofedLocal,
        DropReason::RxOverflow,
        DropReason::TooBig,
        DropReason::Malformed,
        DropReason::TxError,
    ];

    /// The short name used in tables, JSON and trace lines.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::InvalidSource => "invalid-source",
            DropReason::LinkLocal => "link-local",
            DropReason::Hairpin => "hairpin",
            DropReason::SpoofedLocal => "spoofed-local",
            DropReason::RxOverflow => "rx-overflow",
            DropReason::TooBig => "too-big",
            DropReason::Malformed => "malformed",
            DropReason::TxError => "tx-error",
        }
    }

    /// Whether the frame is counted on the port it could not go out of
    /// (`tx_dropped`) rather than the one it came in on (`rx_dropped`).
    pub fn is_egress(self) -> bool {
        // Every reason by name, so a new one has to pick a side.
        match self {
            DropReason::TooBig | DropReason::Malformed | DropReason::TxError => true,
            DropReason::Runt
            | DropReason::InvalidSource
            | DropReason::LinkLocal
            | DropReason::Hairpin
            | DropReason::SpoofedLocal
            | DropReason::RxOverflow => false,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Live counters of one port.
#[derive(Debug, Default)]
pub struct PortCounters {
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    tx_coalesced: AtomicU64,
    tx_superframes: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl PortCounters {
    pub fn count_rx(&self, frames: u64, bytes: u64) {
        self.rx_frames.fetch_add(frames, Relaxed);
        self.rx_bytes.fetch_add(bytes, Relaxed);
    }

    pub fn count_tx(&self, frames: u64, bytes: u64) {
        self.tx_frames.fetch_add(frames, Relaxed);
        self.tx_bytes.fetch_add(bytes, Relaxed);
    }

    /// One UDP super-frame made of `datagrams` sent datagrams (which
    /// `count_tx` counts as frames, one by one).
    pub fn count_coalesced(&self, datagrams: u64) {
        self.tx_coalesced.fetch_add(datagrams, Relaxed);
        self.tx_superframes.fetch_add(1, Relaxed);
    }

    pub fn count_drop(&self, reason: DropReason) {
        self.count_drops(reason, 1);
    }

    pub fn count_drops(&self, reason: DropReason, n: u64) {
        self.drops[reason.index()].fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> PortStats {
        let mut drops = BTreeMap::new();
        let (mut rx_dropped, mut tx_dropped) = (0, 0);
        for reason in DropReason::ALL {
            let n = self.drops[reason.index()].load(Relaxed);
            if reason.is_egress() {
                tx_dropped += n;
            } else {
                rx_dropped += n;
            }
            if n > 0 {
                drops.insert(reason.name().to_string(), n);
            }
        }
        PortStats {
            rx_frames: self.rx_frames.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_frames: self.tx_frames.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_coalesced: self.tx_coalesced.load(Relaxed),
            tx_superframes: self.tx_superframes.load(Relaxed),
            rx_dropped,
            tx_dropped,
            drops,
            rx_kernel_frames: 0,
            tx_kernel_frames: 0,
        }
    }
}

/// A snapshot of one port's counters, as `tapswitch ports` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortStats {
    /// Frames received from the port (dropped ones included).
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames sent out of the port. A GSO super-frame that came in counts
    /// once; the datagrams the switch coalesced count one by one.
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Of `tx_frames`, UDP datagrams that went out coalesced, in
    /// `tx_superframes` super-frames (see `ports::coalesce`).
    #[serde(default)]
    pub tx_coalesced: u64,
    #[serde(default)]
    pub tx_superframes: u64,
    /// Frames from this port that went nowhere (runt, link-local, hairpin, ...).
    pub rx_dropped: u64,
    /// Frames meant for this port that could not go out (too big, tx error).
    pub tx_dropped: u64,
    /// Every non-zero drop counter by reason name.
    pub drops: BTreeMap<String, u64>,
    /// Of `rx_frames` and `tx_frames`, the frames the kernel forwarded
    /// itself, known unicast between veth ends (see the kernel shortcut).
    #[serde(default)]
    pub rx_kernel_frames: u64,
    #[serde(default)]
    pub tx_kernel_frames: u64,
}

impl PortStats {
    /// Adds what the kernel forwarded for this port to its counts.
    pub fn add_kernel(&mut self, rx_frames: u64, rx_bytes: u64, tx_frames: u64, tx_bytes: u64) {
        self.rx_frames += rx_frames;
        self.rx_bytes += rx_bytes;
        self.tx_frames += tx_frames;
        self.tx_bytes += tx_bytes;
        self.rx_kernel_frames += rx_frames;
        self.tx_kernel_frames += tx_frames;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter() {
        for (i, reason) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
    }

    #[test]
    fn drops_count_on_the_side_they_happened() {
        let counters = PortCounters::default();
        for (n, reason) in DropReason::ALL.into_iter().enumerate() {
            counters.count_drops(reason, n as u64 + 1);
        }
        let stats = counters.snapshot();
        // Runt .. RxOverflow are 1 + 2 + ... + 6; TooBig, Malformed, TxError 7 + 8 + 9.
        assert_eq!((stats.rx_dropped, stats.tx_dropped), (21, 24));
        assert_eq!(stats.drops.len(), DropReason::ALL.len());
        assert_eq!(stats.drops["rx-overflow"], 6);
        assert_eq!(stats.drops["tx-error"], 9);

        let quiet = PortCounters::default().snapshot();
        assert!(quiet.drops.is_empty(), "only non-zero counters are listed");
    }
}

//! What the live dataplane reports about itself, as one typed snapshot
//! that travels to `tapswitch stats` unchanged, and how a port of lanes
//! is read (`tapswitch ports`).

use std::sync::atomic::Ordering;

use ports::ReadMode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::tuning::LightPriority;
use super::{Dataplane, Shared};
use crate::port::PortId;

/// A snapshot of the dataplane's own state (per-port counters live with the
/// ports). Its JSON field names are part of `tapswitch stats --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneMetrics {
    /// How the workers read ports right now, in the words of
    /// [`ReadMode::describe`].
    #[serde(serialize_with = "describe", deserialize_with = "read_mode")]
    pub reading: ReadMode,
    /// How often the read mode changed since the start.
    pub reading_changes: u64,
    /// How often a reader, handing a port over after a change, had to wait
    /// for the kernel to take the port's new steering.
    #[serde(default)]
    pub steering_waits: u64,
    /// Under load: how often workers offered their CPU to other threads,
    /// and how often they moved to another CPU to get next to a receiver.
    pub cpu_yields: u64,
    pub cpu_moves: u64,
    /// Under load: busy workers that stay real-time now because their
    /// traffic is a conversation, and how often a worker began to (see
    /// `affinity.rs`).
    #[serde(default)]
    pub conversing_now: usize,
    #[serde(default)]
    pub conversations: u64,
    /// The kernel's part of forwarding (see `dataplane/shortcut`).
    #[serde(default)]
    pub kernel_shortcut: ShortcutMetrics,
    /// How the workers run while traffic is light (see `affinity.rs`).
    #[serde(default)]
    pub light_scheduling: LightScheduling,
}

/// How the workers run while traffic is light, as `tapswitch stats` names
/// it (under load they are ordinary threads with the default slices,
/// except a real-time worker whose traffic is a conversation: see
/// `affinity.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LightScheduling {
    /// At the lowest real-time priority (SCHED_FIFO 1).
    #[default]
    RealTime,
    /// Ordinary threads with the shortest time slices, as asked
    /// (`--no-realtime`).
    ShortSlices,
    /// Ordinary threads with the shortest time slices, real-time priority
    /// having been refused (no CAP_SYS_NICE: rootless mode).
    ShortSlicesRealTimeRefused,
    /// Ordinary threads with the default slices (busy polling).
    Ordinary,
}

impl LightScheduling {
    /// The words `tapswitch stats` uses.
    pub fn describe(self) -> &'static str {
        match self {
            LightScheduling::RealTime => "real-time (SCHED_FIFO 1)",
            LightScheduling::ShortSlices => "ordinary with 0.1 ms time slices (--no-realtime)",
            LightScheduling::ShortSlicesRealTimeRefused => {
                "ordinary with 0.1 ms time slices (real-time was refused)"
            }
            LightScheduling::Ordinary => "ordinary (busy polling)",
        }
    }
}

/// How one port read in lanes is read now (`tapswitch ports`). A port
/// follows the switch-wide mode when it is read (see `steering.rs`), so an
/// idle one may still be read the way it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortReading {
    /// How the kernel feeds its lanes: per CPU, or all to one lane.
    #[serde(serialize_with = "describe", deserialize_with = "read_mode")]
    pub mode: ReadMode,
    /// While read by port: the worker that reads its solo lane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<usize>,
    /// Its mode is not the switch's yet: it follows when it next delivers
    /// frames.
    pub lags: bool,
    /// Its lanes keep a ledger (`ports::ledger`): a sender's frames keep
    /// their order when it moves to another CPU, so it is read per CPU
    /// while traffic is light. Not in rootless mode, whose lanes are
    /// steered by classic BPF.
    #[serde(default)]
    pub ledger: bool,
    /// Without a ledger, its readers put its lanes' frames back in the
    /// order they arrived, so it is read per CPU all the same (rootless
    /// veth ports). A port with neither is read by port in both modes.
    #[serde(default)]
    pub arrival_order: bool,
}

impl PortReading {
    /// The words `tapswitch ports` uses.
    pub fn describe(&self) -> String {
        let how = match (self.mode, self.worker) {
            (ReadMode::ByCpu, _) => "read per CPU".to_string(),
            (_, Some(worker)) => format!("read by worker {worker}"),
            (_, None) => "read by one worker".to_string(),
        };
        // How the order of a sender that changes CPU is kept, where it is
        // not the ledger (see `steering.rs`).
        let how = match (self.ledger, self.arrival_order) {
            (true, _) => how,
            (false, true) => format!("{how}, in the order frames arrived (no ledger)"),
            (false, false) => format!("{how}, never per CPU (no ledger)"),
        };
        if self.lags {
            format!("{how} (as when it last delivered frames)")
        } else {
            how
        }
    }
}

/// Whether known unicast between veth ends is forwarded by the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortcutMetrics {
    pub state: ShortcutState,
    /// Ports it is attached to (veth ends opened in the switch's namespace).
    pub ports: usize,
    /// Addresses in its map now.
    pub addresses: usize,
}

/// The kernel shortcut's state, as `tapswitch stats` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShortcutState {
    /// `--no-kernel-shortcut`, or the kernel refused it at start (the log
    /// says why: rootless mode, no CAP_BPF, a kernel before 6.6).
    #[default]
    Off,
    /// Emptied while a trace runs or a port captures.
    Paused,
    On,
}

impl ShortcutState {
    /// The words `tapswitch stats` uses.
    pub fn describe(self) -> &'static str {
        match self {
            ShortcutState::Off => "off",
            ShortcutState::Paused => "paused (a trace or a capture sees every frame)",
            ShortcutState::On => "on",
        }
    }
}

impl Dataplane {
    /// How the dataplane reads ports right now and how it shared the CPUs.
    pub fn metrics(&self) -> DataplaneMetrics {
        let shared = &self.shared;
        DataplaneMetrics {
            reading: shared.mode.current(),
            reading_changes: shared.mode.changes(),
            steering_waits: shared.mode.steering_waits(),
            cpu_yields: shared.cpu_yields.load(Ordering::Relaxed),
            cpu_moves: shared.cpu_moves.load(Ordering::Relaxed),
            conversing_now: shared.conversing_now.load(Ordering::Relaxed),
            conversations: shared.conversations.load(Ordering::Relaxed),
            kernel_shortcut: shared.shortcut_metrics(),
            light_scheduling: shared.light_scheduling(),
        }
    }

    /// How port `id` is read now, if it is read in several lanes (`None`
    /// for a port of one lane, the gateway, or no such port).
    pub fn reading_of(&self, id: PortId) -> Option<PortReading> {
        let lanes = self.shared.lanes_by_port();
        let port = lanes.get(&id).filter(|port| port.lanes.len() > 1)?;
        let mode = port.steering.mode(&self.shared.mode);
        let solo = port.lanes.get(port.steering.solo());
        Some(PortReading {
            mode,
            worker: (mode == ReadMode::ByPort)
                .then(|| solo.map(|lane| lane.home))
                .flatten(),
            lags: port.steering.lags(&self.shared.mode),
            ledger: port.steering.last_lane().is_some(),
            arrival_order: port.arrival_order(),
        })
    }
}

impl Shared {
    /// How the workers run while traffic is light: as the tuning asks,
    /// unless real-time priority was refused.
    pub(super) fn light_scheduling(&self) -> LightScheduling {
        let refused = self.realtime_refused.load(Ordering::Relaxed);
        match self.tuning.light_priority() {
            LightPriority::RealTime if refused => LightScheduling::ShortSlicesRealTimeRefused,
            LightPriority::RealTime => LightScheduling::RealTime,
            LightPriority::ShortSlices => LightScheduling::ShortSlices,
            LightPriority::Ordinary => LightScheduling::Ordinary,
        }
    }
}

fn describe<S: Serializer>(mode: &ReadMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(mode.describe())
}

fn read_mode<'de, D: Deserializer<'de>>(d: D) -> Result<ReadMode, D::Error> {
    let text = String::deserialize(d)?;
    [ReadMode::OneLane, ReadMode::ByCpu, ReadMode::ByPort]
        .into_iter()
        .find(|mode| mode.describe() == text)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown read mode {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_keep_the_json_names_of_tapswitch_stats() {
        let metrics = DataplaneMetrics {
            reading: ReadMode::ByCpu,
            reading_changes: 2,
            steering_waits: 5,
            cpu_yields: 3,
            cpu_moves: 4,
            conversing_now: 1,
            conversations: 6,
            kernel_shortcut: ShortcutMetrics {
                state: ShortcutState::Paused,
                ports: 2,
                addresses: 7,
            },
            light_scheduling: LightScheduling::ShortSlicesRealTimeRefused,
        };
        let json = serde_json::to_value(metrics).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "reading": "per CPU (traffic is light)",
                "reading_changes": 2,
                "steering_waits": 5,
                "cpu_yields": 3,
                "cpu_moves": 4,
                "conversing_now": 1,
                "conversations": 6,
                "kernel_shortcut": {"state": "paused", "ports": 2, "addresses": 7},
                "light_scheduling": "short-slices-real-time-refused",
            })
        );
        assert_eq!(
            serde_json::from_value::<DataplaneMetrics>(json).unwrap(),
            metrics
        );
        let bad = serde_json::json!({"reading": "sideways", "reading_changes": 0, "cpu_yields": 0, "cpu_moves": 0});
        assert!(serde_json::from_value::<DataplaneMetrics>(bad).is_err());
    }
}

//! The summary `replay` prints: per-port counters with drop reasons, then
//! the final MAC table in the same layout as `tapswitch fdb`. Everything in
//! it comes from the frames (virtual time), never from the machine, so it
//! can be checked in as a golden file.

use super::playback::{LabConfig, Outcome};
use crate::control::{FdbReply, FdbRow};
use crate::query::render_fdb;

/// The whole summary, ending in a newline.
pub fn render(outcome: &Outcome, config: &LabConfig) -> String {
    let mut out = String::new();
    if outcome.frames_in == 0 {
        out += "replay: no frames in the inputs\n";
    } else {
        out += &format!(
            "replay: {} frames from t={} to t={}\n",
            outcome.frames_in, outcome.first, outcome.last
        );
    }
    let width = outcome
        .ports
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out += &format!(
        "{:<width$}  {:>8}  {:>8}  {:>8}  drops\n",
        "port", "rx", "tx", "dropped"
    );
    // User ports in their order, the gateway last (it is port 0).
    let ordered = outcome
        .ports
        .iter()
        .filter(|p| p.id.0 != 0)
        .chain(outcome.ports.iter().filter(|p| p.id.0 == 0));
    for port in ordered {
        let s = &port.stats;
        let reasons: Vec<String> = s.drops.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let line = format!(
            "{:<width$}  {:>8}  {:>8}  {:>8}  {}",
            port.name,
            s.rx_frames,
            s.tx_frames,
            s.rx_dropped + s.tx_dropped,
            reasons.join(", ")
        );
        out += line.trim_end();
        out.push('\n');
    }
    let ageing = match config.table.max_age {
        Some(age) => format!("ageing time {} s", age.as_secs()),
        None => "no ageing".to_string(),
    };
    out += &format!("mac table at t={} ({ageing}):\n", outcome.last);
    let reply = FdbReply {
        entries: outcome
            .fdb
            .iter()
            .map(|e| FdbRow::new(e, outcome.port_name(e.port)))
            .collect(),
        stats: outcome.table,
    };
    out += &render_fdb(&reply);
    out
}

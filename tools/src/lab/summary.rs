//! The summary `replay` prints: per-port counters with drop reasons and the
//! MAC table's counters, then (with `--fdb`) the final MAC table in the same
//! layout as `tapswitch fdb`; or all of it as one JSON document (`--json`).
//! Everything in it comes from the frames (virtual time), never from the
//! machine, so it can be checked in as a golden file.

use ports::vxlan::TunnelStats;
use serde::Serialize;
use switch::{PortStats, TableStats};

use super::expect::Difference;
use super::notation::{count, seconds_ns};
use super::playback::{LabConfig, Outcome, PortOutcome};
use super::underlay::ReplayTunnelReport;
use crate::control::{FdbReply, FdbRow};
use crate::query::render_fdb;

/// The whole summary as text, ending in a newline; the MAC table's rows
/// only if `with_fdb`.
pub fn render(outcome: &Outcome, config: &LabConfig, with_fdb: bool) -> String {
    let mut out = String::new();
    if outcome.frames_in == 0 {
        out += "replay: no frames in the inputs\n";
    } else {
        out += &format!(
            "replay: {} from t={} to t={}\n",
            count(outcome.frames_in, "frame", "frames"),
            outcome.first,
            outcome.last
        );
    }
    if outcome.headers_added > 0 {
        out += &format!(
            "replay: {} of non-Ethernet captures given an Ethernet header\n",
            count(outcome.headers_added, "frame", "frames")
        );
    }
    if outcome.frames_skipped > 0 {
        out += &format!(
            "replay: {} of non-Ethernet captures left out (not IP, or too short)\n",
            count(outcome.frames_skipped, "frame", "frames")
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
    for port in ordered(outcome) {
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
    if let Some((id, tunnel)) = &outcome.tunnel {
        out += &render_tunnel(&outcome.port_name(*id), tunnel);
    }
    let reply = fdb_reply(outcome);
    if with_fdb {
        out += &format!("mac table at t={} ({}):\n", outcome.last, ageing(config));
        out += &render_fdb(&reply);
        if let Some((id, tunnel)) = &outcome.tunnel {
            out += &format!("remote macs behind {}:\n", outcome.port_name(*id));
            for entry in &tunnel.entries {
                out += &format!("  {}  via {}\n", entry.mac, entry.endpoint);
            }
            if tunnel.entries.is_empty() {
                out += "  (none)\n";
            }
        }
    } else {
        // The table's counters are the last line of `render_fdb`.
        let table = render_fdb(&FdbReply {
            entries: Vec::new(),
            stats: reply.stats,
        });
        out += table.lines().last().unwrap_or_default();
        out.push('\n');
    }
    out
}

/// The tunnel port's line: its endpoint, members and what crossed it.
fn render_tunnel(name: &str, tunnel: &ReplayTunnelReport) -> String {
    let members: Vec<String> = tunnel.members.iter().map(|m| m.to_string()).collect();
    let s = &tunnel.stats;
    format!(
        "vxlan {name} at {} vni {}, members {}: {} in, {} out ({} flooded), {} learned\n",
        tunnel.local,
        tunnel.vni,
        if members.is_empty() {
            "none".to_string()
        } else {
            members.join(" ")
        },
        count(s.rx_frames, "frame", "frames"),
        count(s.tx_datagrams, "datagram", "datagrams"),
        count(s.tx_floods, "frame", "frames"),
        count(s.learned, "remote MAC", "remote MACs"),
    )
}

/// User ports in their order, the gateway (port 0) last.
fn ordered(outcome: &Outcome) -> impl Iterator<Item = &PortOutcome> {
    outcome
        .ports
        .iter()
        .filter(|p| p.id.0 != 0)
        .chain(outcome.ports.iter().filter(|p| p.id.0 == 0))
}

fn ageing(config: &LabConfig) -> String {
    match config.table.max_age {
        Some(age) => format!("ageing time {} s", age.as_secs()),
        None => "no ageing".to_string(),
    }
}

fn fdb_reply(outcome: &Outcome) -> FdbReply {
    FdbReply {
        entries: outcome
            .fdb
            .iter()
            .map(|e| FdbRow::new(e, outcome.port_name(e.port)))
            .collect(),
        stats: outcome.table,
    }
}

/// What `--expect` found, for the JSON summary.
#[derive(Debug, Clone, Serialize)]
pub struct ExpectReport {
    pub dir: String,
    /// Whether every output matches and nothing is missing on either side.
    pub same: bool,
    pub differences: Vec<Difference>,
}

/// `replay --json`: the summary as one JSON document.
#[derive(Debug, Serialize)]
struct JsonSummary<'a> {
    frames: u64,
    /// Seconds since the epoch, nine decimals, as in the text summary.
    first: String,
    last: String,
    headers_added: u64,
    frames_skipped: u64,
    ports: Vec<JsonPort<'a>>,
    table: TableStats,
    /// The MAC table's rows, with `--fdb` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    fdb: Option<Vec<FdbRow>>,
    warnings: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    expect: Option<&'a ExpectReport>,
    /// The tunnel port (`--vxlan`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    tunnel: Option<JsonTunnel>,
}

#[derive(Debug, Serialize)]
struct JsonTunnel {
    port: String,
    local: String,
    vni: u32,
    members: Vec<String>,
    /// The tunnel's counters, named as in `tapswitch stats --json`.
    stats: TunnelStats,
    /// The remote MACs and the member each is behind.
    remotes: Vec<JsonRemote>,
}

#[derive(Debug, Serialize)]
struct JsonRemote {
    mac: String,
    via: String,
}

fn json_tunnel(outcome: &Outcome) -> Option<JsonTunnel> {
    let (id, tunnel) = outcome.tunnel.as_ref()?;
    Some(JsonTunnel {
        port: outcome.port_name(*id),
        local: tunnel.local.to_string(),
        vni: tunnel.vni,
        members: tunnel.members.iter().map(|m| m.to_string()).collect(),
        stats: tunnel.stats,
        remotes: tunnel
            .entries
            .iter()
            .map(|e| JsonRemote {
                mac: e.mac.to_string(),
                via: e.endpoint.to_string(),
            })
            .collect(),
    })
}

#[derive(Debug, Serialize)]
struct JsonPort<'a> {
    port_no: u32,
    name: &'a str,
    #[serde(flatten)]
    stats: &'a PortStats,
}

/// The summary as one JSON document, ending in a newline.
pub fn render_json(
    outcome: &Outcome,
    with_fdb: bool,
    expect: Option<&ExpectReport>,
) -> serde_json::Result<String> {
    let reply = fdb_reply(outcome);
    let summary = JsonSummary {
        frames: outcome.frames_in,
        first: seconds_ns(outcome.first.as_nanos()),
        last: seconds_ns(outcome.last.as_nanos()),
        headers_added: outcome.headers_added,
        frames_skipped: outcome.frames_skipped,
        ports: ordered(outcome)
            .map(|p| JsonPort {
                port_no: p.id.0,
                name: &p.name,
                stats: &p.stats,
            })
            .collect(),
        table: outcome.table,
        fdb: with_fdb.then_some(reply.entries),
        warnings: &outcome.warnings,
        expect,
        tunnel: json_tunnel(outcome),
    };
    let mut text = serde_json::to_string_pretty(&summary)?;
    text.push('\n');
    Ok(text)
}

//! The switch's events on the wire: one JSON object per event, with port
//! names (what `tapswitch monitor --json` prints and the web page reads),
//! and the `bridge monitor fdb`-like line `tapswitch monitor` prints.
//!
//! An event names ports by number; [`PortNames`] turns them into names as
//! the events come, remembering a removed port's name, so the flush and
//! removal of a port that is gone still name it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use switch::{PortId, Stamped, Subscription, SwitchEvent};

use crate::client_loop::Feed;
use crate::running::RunningSwitch;

/// Events written per stream and tick at most, so one busy stream cannot
/// hold the loop.
const EVENTS_PER_PULL: usize = 1024;

/// A quiet `monitor` stream gets an empty line this often: writing is how
/// the server notices a reader that went away (a reader that only closed
/// its sending half, as `nc -U` does, must keep its stream), and readers
/// skip empty lines.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// One event as a stream line carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Its place in the switch's stream (gaps: events lost to this reader).
    pub seq: u64,
    /// Seconds since the switch started.
    pub time: f64,
    #[serde(flatten)]
    pub event: SwitchEvent,
    /// The name of the event's port (`port`, or `to` for a move).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// A move's old port's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_dev: Option<String>,
}

/// What a stream line is: an event, or how many this reader lost.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamLine {
    Event(Box<EventRecord>),
    Lost(u64),
}

impl StreamLine {
    /// The JSON line (without its newline).
    pub fn to_json(&self) -> String {
        match self {
            StreamLine::Event(record) => serde_json::to_string(record).unwrap_or_default(),
            StreamLine::Lost(count) => {
                serde_json::json!({"event": "lost", "count": count}).to_string()
            }
        }
    }

    /// Reads a JSON line back.
    pub fn from_json(line: &str) -> Result<StreamLine, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(line)?;
        if value["event"] == "lost" {
            return Ok(StreamLine::Lost(value["count"].as_u64().unwrap_or(0)));
        }
        serde_json::from_value(value).map(|r| StreamLine::Event(Box::new(r)))
    }

    /// The line `tapswitch monitor` prints, in `bridge monitor fdb`'s words.
    pub fn to_text(&self) -> String {
        let record = match self {
            StreamLine::Lost(1) => return "lost 1 event (this reader was too slow)".into(),
            StreamLine::Lost(n) => return format!("lost {n} events (this reader was too slow)"),
            StreamLine::Event(record) => record,
        };
        let dev = record.dev.as_deref().unwrap_or("?");
        match &record.event {
            SwitchEvent::Learned { mac, .. } => format!("{mac} dev {dev} learned"),
            SwitchEvent::Moved { mac, .. } => {
                let from = record.from_dev.as_deref().unwrap_or("?");
                format!("{mac} dev {dev} moved from {from} to {dev}")
            }
            SwitchEvent::Expired { mac, .. } => format!("{mac} dev {dev} expired"),
            SwitchEvent::Evicted { mac, .. } => format!("{mac} dev {dev} evicted (table full)"),
            SwitchEvent::Flushed { entries, .. } => {
                let s = if *entries == 1 { "y" } else { "ies" };
                format!("dev {dev} flushed ({entries} entr{s})")
            }
            SwitchEvent::StaticAdded { mac, .. } => format!("{mac} dev {dev} static added"),
            SwitchEvent::StaticRemoved { mac, .. } => format!("{mac} dev {dev} static removed"),
            SwitchEvent::Deleted { mac, .. } => format!("{mac} dev {dev} deleted"),
            SwitchEvent::PortAdded { name, .. } => format!("port {name} added"),
            SwitchEvent::PortRemoved { name, reason, .. } => match reason {
                Some(reason) => format!("port {name} removed: {reason}"),
                None => format!("port {name} removed"),
            },
            SwitchEvent::LinkDown { name, .. } => format!("port {name} link down"),
            SwitchEvent::LinkUp { name, .. } => format!("port {name} link up"),
            SwitchEvent::FlowOpened { flow } => format!("flow {flow} opened"),
            SwitchEvent::FlowClosed { flow } => format!("flow {flow} closed"),
            SwitchEvent::Trace { line } => format!("trace {line}"),
        }
    }
}

/// Port names as the events go by.
#[derive(Debug, Default)]
pub struct PortNames {
    names: HashMap<PortId, String>,
}

impl PortNames {
    /// Starts from the ports the switch has now.
    pub fn new(current: impl IntoIterator<Item = (PortId, String)>) -> Self {
        PortNames {
            names: current.into_iter().collect(),
        }
    }

    /// The record of one event, learning names from port events.
    pub fn record(&mut self, stamped: Stamped, now_secs: f64) -> EventRecord {
        let event = stamped.event;
        if let SwitchEvent::PortAdded { port, name } | SwitchEvent::PortRemoved { port, name, .. } =
            &event
        {
            self.names.insert(*port, name.clone());
        }
        let (port, from) = match &event {
            SwitchEvent::Learned { port, .. }
            | SwitchEvent::Expired { port, .. }
            | SwitchEvent::Evicted { port, .. }
            | SwitchEvent::Flushed { port, .. }
            | SwitchEvent::StaticAdded { port, .. }
            | SwitchEvent::StaticRemoved { port, .. }
            | SwitchEvent::Deleted { port, .. }
            | SwitchEvent::PortAdded { port, .. }
            | SwitchEvent::PortRemoved { port, .. }
            | SwitchEvent::LinkDown { port, .. }
            | SwitchEvent::LinkUp { port, .. } => (Some(*port), None),
            SwitchEvent::Moved { from, to, .. } => (Some(*to), Some(*from)),
            SwitchEvent::FlowOpened { .. }
            | SwitchEvent::FlowClosed { .. }
            | SwitchEvent::Trace { .. } => (None, None),
        };
        EventRecord {
            seq: stamped.seq,
            time: stamped.at.map_or(now_secs, |at| at.as_nanos() as f64 / 1e9),
            dev: port.map(|p| self.name(p)),
            from_dev: from.map(|p| self.name(p)),
            event,
        }
    }

    fn name(&self, port: PortId) -> String {
        self.names
            .get(&port)
            .cloned()
            .unwrap_or_else(|| format!("port{}", port.0))
    }
}

/// A running switch's events as stream lines, for the client loop.
pub struct EventFeed {
    subscription: Subscription,
    names: PortNames,
    switch: std::sync::Arc<RunningSwitch>,
    /// How each line is framed: `monitor` sends bare lines, the web page
    /// server-sent events.
    frame: fn(&str, &mut Vec<u8>),
    /// When the stream last carried something (see [`HEARTBEAT`]).
    last_write: std::time::Instant,
}

impl std::fmt::Debug for EventFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventFeed")
    }
}

impl EventFeed {
    pub fn new(
        switch: std::sync::Arc<RunningSwitch>,
        frame: fn(&str, &mut Vec<u8>),
    ) -> anyhow::Result<Self> {
        let (subscription, ports) = switch.subscribe()?;
        Ok(EventFeed {
            subscription,
            names: PortNames::new(ports),
            switch,
            frame,
            last_write: std::time::Instant::now(),
        })
    }

    /// Appends the waiting lines; what a web stream also sends.
    pub fn write_events(&mut self, out: &mut Vec<u8>) {
        let now = self.switch.now_secs();
        for _ in 0..EVENTS_PER_PULL {
            let Some(stamped) = self.subscription.try_next() else {
                break;
            };
            let line = StreamLine::Event(Box::new(self.names.record(stamped, now)));
            (self.frame)(&line.to_json(), out);
        }
        let lost = self.subscription.take_lost();
        if lost > 0 {
            (self.frame)(&StreamLine::Lost(lost).to_json(), out);
        }
    }
}

impl Feed for EventFeed {
    fn pull(&mut self, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        self.write_events(out);
        if out.len() > before {
            self.last_write = std::time::Instant::now();
        } else if self.last_write.elapsed() >= HEARTBEAT {
            self.last_write = std::time::Instant::now();
            out.push(b'\n');
        }
        true
    }
}

/// Frames a line as one line (the control socket).
pub fn line_frame(line: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::{Instant, MacAddr};

    const MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);

    fn stamped(seq: u64, event: SwitchEvent) -> Stamped {
        Stamped {
            seq,
            at: Some(Instant::from_millis(1500)),
            event,
        }
    }

    fn text(names: &mut PortNames, event: SwitchEvent) -> String {
        StreamLine::Event(Box::new(names.record(stamped(0, event), 0.0))).to_text()
    }

    #[test]
    fn lines_read_like_bridge_monitor_fdb() {
        let mut names = PortNames::new([(PortId(1), "veth-a".to_string())]);
        let (a, b) = (PortId(1), PortId(2));
        assert_eq!(
            text(&mut names, SwitchEvent::Learned { mac: MAC, port: a }),
            "02:42:ac:11:00:02 dev veth-a learned"
        );
        assert_eq!(
            text(
                &mut names,
                SwitchEvent::PortAdded {
                    port: b,
                    name: "veth-b".into()
                }
            ),
            "port veth-b added"
        );
        assert_eq!(
            text(
                &mut names,
                SwitchEvent::Moved {
                    mac: MAC,
                    from: a,
                    to: b
                }
            ),
            "02:42:ac:11:00:02 dev veth-b moved from veth-a to veth-b"
        );
        assert_eq!(
            text(&mut names, SwitchEvent::Expired { mac: MAC, port: b }),
            "02:42:ac:11:00:02 dev veth-b expired"
        );
        assert_eq!(
            text(
                &mut names,
                SwitchEvent::PortRemoved {
                    port: b,
                    name: "veth-b".into(),
                    reason: Some("its interface is gone".into())
                }
            ),
            "port veth-b removed: its interface is gone"
        );
        assert_eq!(
            text(
                &mut names,
                SwitchEvent::Flushed {
                    port: b,
                    entries: 1
                }
            ),
            "dev veth-b flushed (1 entry)",
            "a removed port keeps its name"
        );
        assert_eq!(
            text(
                &mut names,
                SwitchEvent::Evicted {
                    mac: MAC,
                    port: PortId(9)
                }
            ),
            "02:42:ac:11:00:02 dev port9 evicted (table full)"
        );
        assert_eq!(
            text(&mut names, SwitchEvent::StaticAdded { mac: MAC, port: a }),
            "02:42:ac:11:00:02 dev veth-a static added"
        );
        assert_eq!(
            text(&mut names, SwitchEvent::StaticRemoved { mac: MAC, port: a }),
            "02:42:ac:11:00:02 dev veth-a static removed"
        );
        assert_eq!(
            text(&mut names, SwitchEvent::Deleted { mac: MAC, port: a }),
            "02:42:ac:11:00:02 dev veth-a deleted"
        );
        assert_eq!(
            StreamLine::Lost(12).to_text(),
            "lost 12 events (this reader was too slow)"
        );
    }

    #[test]
    fn json_lines_round_trip_with_names_and_time() {
        let mut names = PortNames::new([(PortId(1), "veth-a".to_string())]);
        let record = names.record(
            stamped(
                7,
                SwitchEvent::Learned {
                    mac: MAC,
                    port: PortId(1),
                },
            ),
            99.0,
        );
        let line = StreamLine::Event(Box::new(record));
        let json = line.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["event"], "learned");
        assert_eq!(value["mac"], "02:42:ac:11:00:02");
        assert_eq!(value["dev"], "veth-a");
        assert_eq!(value["port"], 1);
        assert_eq!(value["seq"], 7);
        assert_eq!(value["time"], 1.5);
        assert_eq!(StreamLine::from_json(&json).unwrap(), line);
        let lost = StreamLine::Lost(3);
        assert_eq!(lost.to_json(), r#"{"count":3,"event":"lost"}"#);
        assert_eq!(StreamLine::from_json(&lost.to_json()).unwrap(), lost);
    }

    #[test]
    fn an_event_without_a_time_gets_the_readers() {
        let mut names = PortNames::default();
        let record = names.record(
            Stamped {
                seq: 1,
                at: None,
                event: SwitchEvent::Flushed {
                    port: PortId(3),
                    entries: 2,
                },
            },
            42.5,
        );
        assert_eq!(record.time, 42.5);
        assert_eq!(record.dev.as_deref(), Some("port3"));
    }
}

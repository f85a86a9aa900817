//! The per-decision trace, turned on and off while the switch runs
//! (`tapswitch trace on|off [--port P]`), its lines going to the output the
//! switch was given (stderr for `serve`) and to the event stream.
//!
//! The fabric takes its trace sink when it is made and formats a line for
//! every frame while it has one, so "off" must mean "no sink", not a sink
//! that ignores lines: a worker, and the gateway thread, compare
//! [`LiveTrace::generation`] once per wake-up and, when it changed, make
//! their fabric again with [`LiveTrace::sink`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::events::{EventBus, SwitchEvent};
use crate::fabric::TraceSink;

/// What is traced.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceSettings {
    pub on: bool,
    /// Only decisions about frames that arrive on or leave by this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
}

/// The trace switch the dataplane's threads share.
pub(super) struct LiveTrace {
    settings: RwLock<TraceSettings>,
    generation: AtomicU64,
    output: Option<Arc<TraceSink>>,
    bus: EventBus,
}

impl LiveTrace {
    pub(super) fn new(
        settings: TraceSettings,
        output: Option<Arc<TraceSink>>,
        bus: EventBus,
    ) -> Self {
        LiveTrace {
            settings: RwLock::new(settings),
            generation: AtomicU64::new(0),
            output,
            bus,
        }
    }

    pub(super) fn settings(&self) -> TraceSettings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set(&self, settings: TraceSettings) {
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = settings;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Changes whenever the settings do.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A sink for the settings now: `None` when tracing is off.
    pub(super) fn sink(&self) -> Option<Arc<TraceSink>> {
        let settings = self.settings();
        if !settings.on {
            return None;
        }
        let (output, bus, port) = (self.output.clone(), self.bus.clone(), settings.port);
        Some(Arc::new(move |line: &str| {
            if port.as_deref().is_none_or(|p| concerns_port(line, p)) {
                emit(output.as_deref(), &bus, line);
            }
        }))
    }
}

fn emit(output: Option<&TraceSink>, bus: &EventBus, line: &str) {
    if let Some(output) = output {
        output(line);
    }
    bus.publish_with(None, || SwitchEvent::Trace {
        line: line.to_string(),
    });
}

/// Whether a trace line (see [`crate::trace::TraceLine`]) is about a frame
/// that arrived on `port` or went out of it: `t=... INGRESS: ...`, ending in
/// `forwarded to PORT` or `flooded to P1 P2 ...`.
pub fn concerns_port(line: &str, port: &str) -> bool {
    let mut words = line.split(' ');
    let _time = words.next();
    if words.next().and_then(|w| w.strip_suffix(':')) == Some(port) {
        return true;
    }
    if line
        .strip_suffix(port)
        .is_some_and(|rest| rest.ends_with(" forwarded to "))
    {
        return true;
    }
    line.rsplit_once("flooded to ")
        .is_some_and(|(_, to)| to.split(' ').any(|w| w == port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const FLOOD: &str = "t=1.500000 p1: 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff arp len 60: \
                         learned 02:00:00:00:00:01 on p1; broadcast: flooded to gw p2";
    const FORWARD: &str = "t=2.000000 p2: 02:00:00:00:00:02 > 02:00:00:00:00:01 ipv4 len 98: \
                           02:00:00:00:00:02 known on p2; 02:00:00:00:00:01 is on p1: forwarded to p1";

    #[test]
    fn a_port_filter_keeps_lines_about_frames_in_or_out_of_it() {
        assert!(concerns_port(FLOOD, "p1"), "ingress");
        assert!(concerns_port(FLOOD, "p2"), "flooded to it");
        assert!(concerns_port(FLOOD, "gw"));
        assert!(!concerns_port(FLOOD, "p3"));
        assert!(!concerns_port(FLOOD, "p"), "whole names only");
        assert!(concerns_port(FORWARD, "p1"), "forwarded to it");
        assert!(concerns_port(FORWARD, "p2"));
        assert!(!concerns_port(FORWARD, "gw"));
    }

    #[test]
    fn off_gives_no_sink_and_on_sends_lines_to_the_output_and_the_stream() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let out = seen.clone();
        let output: Arc<TraceSink> = Arc::new(move |l: &str| out.lock().unwrap().push(l.into()));
        let bus = EventBus::default();
        let events = bus.subscribe();
        let live = LiveTrace::new(TraceSettings::default(), Some(output), bus);
        assert!(live.sink().is_none());
        let before = live.generation();
        live.set(TraceSettings {
            on: true,
            port: Some("p3".into()),
        });
        assert_ne!(live.generation(), before);
        let sink = live.sink().expect("on");
        sink(FLOOD);
        assert!(seen.lock().unwrap().is_empty(), "not about p3");
        live.set(TraceSettings {
            on: true,
            port: None,
        });
        live.sink().unwrap()(FLOOD);
        assert_eq!(*seen.lock().unwrap(), vec![FLOOD.to_string()]);
        assert_eq!(
            events.try_next().map(|s| s.event),
            Some(SwitchEvent::Trace { line: FLOOD.into() })
        );
    }
}

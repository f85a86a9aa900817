//! One readable line per flow event for `serve --trace`: a flow opened,
//! refused by a limit, or ended (and how, and by whom), in the same
//! `t=SECONDS` form as the frame path's trace lines.

use std::fmt;
use std::time::Duration;

use crate::flows::action::{EndReason, FlowCounters, Origin};
use crate::flows::key::FlowKey;
use crate::flows::limits::LimitReason;
use crate::time::Instant;

/// What happened to a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEvent {
    /// Admitted by the table.
    Opened(Origin),
    /// Refused by a limit (its packet dropped).
    Refused(LimitReason),
    /// Released, with what it carried and how long it lived.
    Ended {
        reason: EndReason,
        counters: FlowCounters,
        age: Duration,
    },
}

/// A trace line: `t=12.000000 flow tcp 172.17.0.2:40000 -> 198.51.100.7:443: ...`.
#[derive(Debug, Clone, Copy)]
pub struct FlowTraceLine<'a> {
    pub now: Instant,
    pub key: &'a FlowKey,
    pub event: &'a FlowEvent,
}

impl fmt::Display for FlowTraceLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={} flow {}: ", self.now, self.key)?;
        match self.event {
            FlowEvent::Opened(Origin::Outbound) => f.write_str("opened by the container"),
            FlowEvent::Opened(Origin::Inbound) => {
                f.write_str("opened by a client of a published port")
            }
            FlowEvent::Refused(reason) => write!(f, "refused: {}", limit_text(*reason)),
            FlowEvent::Ended {
                reason,
                counters,
                age,
            } => write!(
                f,
                "{reason} after {:.3} s ({} bytes from the container, {} bytes to it)",
                age.as_secs_f64(),
                counters.bytes_from_container,
                counters.bytes_to_container
            ),
        }
    }
}

fn limit_text(reason: LimitReason) -> &'static str {
    match reason {
        LimitReason::TableFull => "the flow table is full",
        LimitReason::ContainerFull => "the container has its most flows",
        LimitReason::PendingConnects => "too many connects are pending",
        LimitReason::ContainerPendingConnects => "the container has its most pending connects",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::action::{Side, Timer};

    fn key() -> FlowKey {
        FlowKey::tcp(
            "172.17.0.2:40000".parse().unwrap(),
            "198.51.100.7:443".parse().unwrap(),
        )
    }

    fn line(event: FlowEvent) -> String {
        FlowTraceLine {
            now: Instant::from_millis(12_500),
            key: &key(),
            event: &event,
        }
        .to_string()
    }

    #[test]
    fn each_event_reads_as_one_line() {
        let prefix = "t=12.500000 flow tcp 172.17.0.2:40000 -> 198.51.100.7:443: ";
        assert_eq!(
            line(FlowEvent::Opened(Origin::Outbound)),
            format!("{prefix}opened by the container")
        );
        assert_eq!(
            line(FlowEvent::Opened(Origin::Inbound)),
            format!("{prefix}opened by a client of a published port")
        );
        assert_eq!(
            line(FlowEvent::Refused(LimitReason::ContainerPendingConnects)),
            format!("{prefix}refused: the container has its most pending connects")
        );
        let counters = FlowCounters {
            bytes_from_container: 120,
            bytes_to_container: 5000,
            ..FlowCounters::default()
        };
        assert_eq!(
            line(FlowEvent::Ended {
                reason: EndReason::Closed {
                    first: Side::Container
                },
                counters,
                age: Duration::from_millis(3250),
            }),
            format!(
                "{prefix}closed, first by the container after 3.250 s (120 bytes from the container, 5000 bytes to it)"
            )
        );
        let timed_out = line(FlowEvent::Ended {
            reason: EndReason::TimedOut {
                timer: Timer::Connect,
            },
            counters: FlowCounters::default(),
            age: Duration::from_secs(135),
        });
        assert!(
            timed_out.contains("timed out connecting after 135.000 s"),
            "{timed_out}"
        );
        assert!(!timed_out.contains('\n'));
    }
}

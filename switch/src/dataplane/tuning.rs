//! How the dataplane runs: its configuration, and the worker knobs whose
//! rules are checked in one place.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ports::capture::CaptureDir;

use crate::fabric::TraceSink;
use crate::mac_table::TableConfig;

/// The worker threads' knobs. The constructor holds the rules between
/// them, so a `Tuning` is always one the dataplane can run as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    workers: usize,
    busy_poll: Duration,
    realtime: bool,
    coalesce_udp: bool,
}

impl Tuning {
    /// `workers` threads (at least one). `busy_poll`: how long a worker
    /// keeps polling without sleeping after its last frame (zero: it sleeps
    /// as soon as its ports are empty). `realtime`: whether workers take the
    /// lowest real-time priority while traffic is light (see `affinity.rs`);
    /// never while busy polling, as a polling real-time thread would starve
    /// the others on its CPU. Without it they ask for the shortest time
    /// slices instead, unless they busy poll ([`Tuning::light_priority`]).
    /// `coalesce_udp`: whether runs of one UDP flow's datagrams go out as
    /// UDP GSO super-frames (see `ports::coalesce`); only where the kernel
    /// takes them.
    pub fn new(workers: usize, busy_poll: Duration, realtime: bool, coalesce_udp: bool) -> Self {
        Tuning {
            workers: workers.max(1),
            busy_poll,
            realtime: realtime && busy_poll.is_zero(),
            coalesce_udp: coalesce_udp && ports::coalesce::kernel_supports(),
        }
    }

    /// The default knobs with `workers` threads: no busy polling, real-time
    /// while light, coalescing where supported.
    pub fn with_workers(workers: usize) -> Self {
        Tuning::new(workers, Duration::ZERO, true, true)
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn busy_poll(&self) -> Duration {
        self.busy_poll
    }

    pub fn realtime(&self) -> bool {
        self.realtime
    }

    /// How workers run while traffic is light.
    pub(super) fn light_priority(&self) -> LightPriority {
        if self.realtime {
            LightPriority::RealTime
        } else if self.busy_poll.is_zero() {
            LightPriority::ShortSlices
        } else {
            LightPriority::Ordinary
        }
    }

    pub fn coalesce_udp(&self) -> bool {
        self.coalesce_udp
    }
}

/// How a worker runs while traffic is light (see `affinity.rs`; under load
/// every worker is an ordinary thread with the kernel's default slices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LightPriority {
    /// At the lowest real-time priority; if that is refused (no
    /// CAP_SYS_NICE, rootless mode), as with `ShortSlices`.
    RealTime,
    /// An ordinary thread with the shortest time slices (`--no-realtime`).
    ShortSlices,
    /// An ordinary thread with the default slices: a busy-polling worker,
    /// which would otherwise take its CPU from the others every 0.1 ms.
    Ordinary,
}

/// How the dataplane runs.
#[derive(Clone)]
pub struct DataplaneConfig {
    pub tuning: Tuning,
    pub table: TableConfig,
    /// The gateway's address and prefix length; `None` runs without one.
    pub gateway: Option<(Ipv4Addr, u8)>,
    /// Where `--trace` lines go; `None` traces nothing at start.
    pub trace: Option<Arc<TraceSink>>,
    /// Where trace lines go when tracing is turned on while the switch runs
    /// (`Dataplane::set_trace`) and `trace` is `None`; they always go to the
    /// event stream as well.
    pub trace_output: Option<Arc<TraceSink>>,
    /// `--capture DIR`: every port records into `DIR/<port>.pcapng`.
    pub capture: Option<Arc<CaptureDir>>,
    /// The gateway's services (DNS, outbound flows); used with a gateway.
    pub services: crate::host_side::ServicesSetup,
    /// Whether known unicast between veth ends may be forwarded by the
    /// kernel (see `dataplane/shortcut`); `--no-kernel-shortcut` says no.
    pub kernel_shortcut: bool,
}

impl std::fmt::Debug for DataplaneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataplaneConfig")
            .field("tuning", &self.tuning)
            .field("table", &self.table)
            .field("gateway", &self.gateway)
            .field("services", &self.services)
            .field("kernel_shortcut", &self.kernel_shortcut)
            .field("trace", &self.trace.is_some())
            .field(
                "capture",
                &self.capture.as_ref().map(|c| c.dir().to_path_buf()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_polling_turns_real_time_off() {
        let polling = Tuning::new(2, Duration::from_micros(50), true, false);
        assert!(!polling.realtime());
        assert_eq!(polling.busy_poll(), Duration::from_micros(50));
        assert!(Tuning::new(2, Duration::ZERO, true, false).realtime());
        assert!(!Tuning::new(2, Duration::ZERO, false, false).realtime());
    }

    #[test]
    fn light_traffic_gets_real_time_or_else_short_slices_but_never_while_polling() {
        let light = |poll_us, realtime| {
            Tuning::new(2, Duration::from_micros(poll_us), realtime, false).light_priority()
        };
        assert_eq!(light(0, true), LightPriority::RealTime);
        assert_eq!(light(0, false), LightPriority::ShortSlices);
        assert_eq!(light(50, true), LightPriority::Ordinary);
        assert_eq!(light(50, false), LightPriority::Ordinary);
    }

    #[test]
    fn coalescing_only_where_the_kernel_takes_it() {
        let tuning = Tuning::new(1, Duration::ZERO, true, true);
        assert_eq!(tuning.coalesce_udp(), ports::coalesce::kernel_supports());
        assert!(!Tuning::new(1, Duration::ZERO, true, false).coalesce_udp());
    }

    #[test]
    fn there_is_always_a_worker() {
        assert_eq!(Tuning::with_workers(0).workers(), 1);
        assert_eq!(Tuning::with_workers(3).workers(), 3);
    }
}

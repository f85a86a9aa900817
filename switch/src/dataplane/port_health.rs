//! Ports whose receive half failed: removed at once, or, when only the
//! link went down, looked at again shortly.
//!
//! A link goes down both when someone sets it down (the port stays: the
//! kernel resumes delivery when it comes back up) and first thing when its
//! interface is deleted, which only then disappears. So a port that reports
//! [`RxError::LinkDown`] is a suspect, looked at again after
//! [`SUSPECT_RECHECK`] and removed if its interface is gone by then. Any
//! other error removes the port at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ports::RxError;

use crate::fabric::PortHandle;
use crate::port::PortId;

/// How long after a link went down a port is checked for a deleted interface.
pub(super) const SUSPECT_RECHECK: Duration = Duration::from_millis(100);

/// One worker's suspect ports.
#[derive(Default)]
pub(super) struct PortHealth {
    suspects: Vec<(Arc<PortHandle>, Instant)>,
}

/// What to do about a port that failed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// Its link is down: look again later.
    Suspect,
    /// Remove it, for this reason.
    Retire(String),
}

impl PortHealth {
    /// A receive error on `handle`'s port, at `now`.
    pub(super) fn failed(
        &mut self,
        handle: &Arc<PortHandle>,
        err: RxError,
        now: Instant,
    ) -> Failure {
        match err {
            RxError::LinkDown => {
                self.suspects.retain(|(h, _)| h.id != handle.id);
                self.suspects.push((handle.clone(), now + SUSPECT_RECHECK));
                Failure::Suspect
            }
            other => Failure::Retire(other.to_string()),
        }
    }

    /// Whether no port is waiting for a second look.
    pub(super) fn is_empty(&self) -> bool {
        self.suspects.is_empty()
    }

    /// How long the worker may sleep before a suspect is due for a look.
    pub(super) fn next_check(&self, now: Instant) -> Option<Duration> {
        self.suspects
            .iter()
            .map(|(_, at)| at.saturating_duration_since(now))
            .min()
    }

    /// Looks again at the suspects due at `now`. `gone` says whether a
    /// port's interface is gone (`None`: the port is no longer this
    /// worker's). Ports merely down stay and are logged; the ones to
    /// remove are returned with the reason.
    pub(super) fn check_due(
        &mut self,
        now: Instant,
        gone: impl Fn(PortId) -> Option<bool>,
    ) -> Vec<(Arc<PortHandle>, String)> {
        if self.suspects.is_empty() {
            return Vec::new();
        }
        let mut retire = Vec::new();
        let (due, later) = std::mem::take(&mut self.suspects)
            .into_iter()
            .partition::<Vec<_>, _>(|(_, at)| *at <= now);
        self.suspects = later;
        for (handle, _) in due {
            match gone(handle.id) {
                None => {}
                Some(false) => log::warn!(
                    "port {}: link is down; frames resume when it comes back up",
                    handle.name
                ),
                Some(true) => retire.push((handle, RxError::Gone.to_string())),
            }
        }
        retire
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::PortCounters;
    use ports::PortKind;
    use ports::memory::memory_port;

    fn handle(id: u32) -> Arc<PortHandle> {
        Arc::new(PortHandle {
            id: PortId(id),
            name: format!("p{id}"),
            kind: PortKind::Memory,
            tx: Arc::new(memory_port(1500, false).1),
            counters: Arc::new(PortCounters::default()),
            capture: None,
        })
    }

    #[test]
    fn a_port_whose_link_went_down_is_looked_at_again_shortly() {
        let start = Instant::now();
        let mut health = PortHealth::default();
        let (p1, p2) = (handle(1), handle(2));
        assert_eq!(health.next_check(start), None);
        assert_eq!(
            health.failed(&p1, RxError::LinkDown, start),
            Failure::Suspect
        );
        assert_eq!(health.next_check(start), Some(SUSPECT_RECHECK));
        assert!(
            health.check_due(start, |_| Some(true)).is_empty(),
            "not due yet"
        );
        let later = start + SUSPECT_RECHECK;
        health.failed(&p2, RxError::LinkDown, later);
        let retire = health.check_due(later, |id| Some(id == PortId(1)));
        assert_eq!(retire.len(), 1);
        assert_eq!(retire[0].0.id, PortId(1));
        assert_eq!(retire[0].1, "its interface is gone");
        assert_eq!(health.next_check(later), Some(SUSPECT_RECHECK), "p2 waits");
        let retire = health.check_due(later + SUSPECT_RECHECK, |_| Some(false));
        assert!(retire.is_empty(), "merely down: stays");
        assert_eq!(health.next_check(later), None, "looked at once");
        assert!(health.is_empty());
    }

    #[test]
    fn any_other_error_removes_the_port_at_once() {
        let mut health = PortHealth::default();
        let now = Instant::now();
        let err = std::io::Error::other("boom");
        assert_eq!(
            health.failed(&handle(1), RxError::Io(err), now),
            Failure::Retire("boom".into())
        );
        assert_eq!(
            health.failed(&handle(1), RxError::Gone, now),
            Failure::Retire("its interface is gone".into())
        );
        assert_eq!(health.next_check(now), None);
    }

    #[test]
    fn a_suspect_no_longer_ours_is_dropped() {
        let now = Instant::now();
        let mut health = PortHealth::default();
        health.failed(&handle(1), RxError::LinkDown, now);
        let later = now + SUSPECT_RECHECK;
        assert!(health.check_due(later, |_| None).is_empty());
        assert_eq!(health.next_check(later), None);
    }
}

//! Waiting for a condition by looking again and again, up to a limit: what
//! a switch, the kernel or a child process does in its own time (a port
//! learned, a flow ended, a process gone) is checked this way, not by
//! sleeping a fixed while. One loop here instead of one per test: each
//! looks every 50 ms, and once more after the limit, so a condition that
//! came true while the last look was under way still counts.

use std::time::{Duration, Instant};

/// The pause between two looks.
const EVERY: Duration = Duration::from_millis(50);

/// Whether `done` holds within `limit`: looks every 50 ms, and once more
/// after the limit.
#[must_use]
pub fn within(limit: Duration, done: impl FnMut() -> bool) -> bool {
    within_doing(limit, done, || {})
}

/// As [`within`], calling `meanwhile` after each look that fails (for
/// traffic that keeps the switch busy while the test waits).
#[must_use]
pub fn within_doing(
    limit: Duration,
    mut done: impl FnMut() -> bool,
    mut meanwhile: impl FnMut(),
) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        meanwhile();
        std::thread::sleep(EVERY);
    }
    done()
}

/// Waits until `done` holds, as [`within`]; panics with "waited {limit}
/// for {what}" if it does not.
#[track_caller]
pub fn wait_for(what: &str, limit: Duration, done: impl FnMut() -> bool) {
    assert!(within(limit, done), "waited {limit:?} for {what}");
}

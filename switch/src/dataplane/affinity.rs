//! Where a port's frames are read, and how workers run: next to the
//! senders and at real-time priority while traffic is light, as ordinary
//! threads spread over the CPUs once it is heavy.
//!
//! A port is read in lanes, one per worker (see the dataplane's docs): the
//! sockets of a veth end's fanout group, the queues of a multi-queue TAP.
//! A small program in the kernel picks the lane of each frame, and it can
//! pick the lane of the CPU the frame arrived on. That CPU is the one its
//! sender runs on, and worker `i` can be kept on lane `i`'s CPUs. Then the
//! worker is woken by a switch between two threads of one CPU, which on a
//! virtual machine is several times cheaper than a wake-up sent to another,
//! sleeping CPU; at real-time priority (SCHED_FIFO 1) it also runs at once
//! instead of waiting behind the thread that woke it when the two belong to
//! different scheduling groups (a service and a container always do). A
//! ping through the switch takes a quarter of the time. The answer to a
//! frame lands in the same lane, as the receiver's stack runs inside the
//! worker's write.
//!
//! Under load that is the wrong way round: a worker kept next to a busy
//! sender gets half of that CPU while another may sit idle, a TCP stream
//! whose ACKs make data leave from both CPUs wakes both workers for every
//! few frames, and a real-time worker takes CPU from the receiver. So once
//! any worker has been busy for more than [`BUSY`] of a [`WINDOW`], every
//! port sends all its frames to one lane (as if it had a single socket;
//! ports are spread over the workers) and the workers become ordinary
//! threads that may run anywhere. After every busy worker has stayed below
//! [`CALM`] for [`CALM_WINDOWS`] windows in a row, the switch goes back.
//! Frames already queued in a lane when the mode changes are forwarded
//! before the frames of the lanes that get them from then on (the hand-over
//! in `worker.rs`), so a sender's frames keep their order across a change.
//!
//! Under load a worker also offers its CPU to whoever waits for it
//! (`sched_yield`) after every [`SHARE_AFTER_FRAMES`] frames it forwarded
//! ([`CpuShare`]). On a machine with few CPUs the receiver of those frames
//! often waits on the worker's own CPU: the kernel moves a thread next to
//! the one that wakes it, and the worker's send runs the receiver's stack,
//! wake-up included. Left alone, a worker with an endless queue keeps the
//! CPU until the scheduler takes it away, milliseconds later; by then the
//! receiver's socket buffer (about 280 small datagrams by default) has
//! overflowed and the worker's work on the rest was for nothing. Offering
//! the CPU every batch lets the receiver read them in bulk; with nobody
//! waiting the call returns at once. It is what a kernel bridge gets for
//! free, as it forwards inside the sender's own system call.
//!
//! That works only while the receiver shares the worker's CPU. On a
//! machine with as many busy threads as CPUs the scheduler often puts it
//! elsewhere: behind its own sender, where it is never short of frames,
//! never sleeps and so is never woken next to the worker; or the worker
//! itself ends up next to the sender (woken by the sender's frames while
//! the receiver ran on the worker's old CPU). Either way the worker's
//! yields come back at once, while next to the receiver about one in nine
//! lets it read a burst. So when none of [`MOVE_WINDOW`] yields in a row
//! let another thread run for [`ANSWERED_YIELD`] and every CPU is busy,
//! the worker moves to another CPU (it narrows its affinity to the others
//! and widens it again). Next to the sender, that takes it to the
//! receiver; next to nobody, it joins the sender and receiver, and the
//! kernel soon pulls one of them to the CPU left idle. Over a 64-byte UDP
//! flood between two containers on two CPUs, 185-258 kpps became 253-277
//! (veth) and 182-222 became 259-274 (TAP): the rate with the three
//! threads pinned where they belong is 278-286. No frame is dropped for
//! it, and the worker does not stop forwarding while it moves.

use std::time::Duration;

/// How often a worker looks at how busy it was (a busy worker wakes up at
/// least this often to look).
pub(super) const WINDOW: Duration = Duration::from_millis(20);
/// Busier than this (a fraction of the window) and the worker counts as busy.
const BUSY: f64 = 0.25;
/// Below this for [`CALM_WINDOWS`] windows in a row and it is calm again.
const CALM: f64 = 0.05;
const CALM_WINDOWS: u32 = 10;

/// Measures one worker's load in windows and says when it changes.
#[derive(Debug, Default)]
pub(super) struct LoadMeter {
    busy: bool,
    window: Duration,
    working: Duration,
    calm_windows: u32,
}

impl LoadMeter {
    pub(super) fn busy(&self) -> bool {
        self.busy
    }

    /// Accounts `elapsed` wall time, `working` of it spent forwarding.
    /// Returns `Some(busy)` when the worker became busy or calm.
    pub(super) fn account(&mut self, elapsed: Duration, working: Duration) -> Option<bool> {
        self.window += elapsed;
        self.working += working.min(elapsed);
        if self.window < WINDOW {
            return None;
        }
        let load = self.working.as_secs_f64() / self.window.as_secs_f64();
        // A long sleep counts as that many calm windows.
        let windows = (self.window.as_nanos() / WINDOW.as_nanos()).max(1) as u32;
        self.window = Duration::ZERO;
        self.working = Duration::ZERO;
        if !self.busy {
            if load > BUSY {
                self.busy = true;
                self.calm_windows = 0;
                return Some(true);
            }
        } else if load < CALM {
            self.calm_windows = self.calm_windows.saturating_add(windows);
            if self.calm_windows >= CALM_WINDOWS {
                self.busy = false;
                return Some(false);
            }
        } else {
            self.calm_windows = 0;
        }
        None
    }
}

/// Under load, how many frames a worker forwards before it offers its CPU
/// (about one full batch). Measured with a 64-byte UDP flood between two
/// containers on two CPUs: every 16 frames delivered 0.75x the kernel
/// bridge's rate, 32 and 64 about 0.83x, 128-256 0.8x, 512 0.7x, never 0.6x.
pub(super) const SHARE_AFTER_FRAMES: usize = 32;

/// A yield that gave the CPU away for at least this long let another
/// thread do real work: next to the receiver, reading a burst of frames
/// (typically 100-1000 µs); a kernel thread's errand is shorter.
const ANSWERED_YIELD: Duration = Duration::from_micros(20);

/// A worker under load that made this many yields (2048 frames) without
/// one being answered moves to another CPU, if every CPU is busy. Next to
/// the receiver about 11% of yields are answered in a UDP flood, so a
/// window of 64 with none happens there by chance about once in 2,000
/// windows (32: once in 50). Measured: a window of 256 reacts too late
/// (233-248 kpps against 253-277).
const MOVE_WINDOW: u32 = 64;

/// Counts the frames a worker forwards under load and says when it should
/// offer its CPU to other threads, or move to another CPU.
#[derive(Debug, Default)]
pub(super) struct CpuShare {
    forwarded: usize,
    /// Yields in the current window, and how many of them were answered.
    yields: u32,
    answered: u32,
}

impl CpuShare {
    /// Notes `frames` forwarded; true when the worker should yield now.
    /// While traffic is light (`heavy` false) it never should: a worker then
    /// runs at real-time priority next to the sender, and each wake-up is
    /// short anyway.
    pub(super) fn forwarded(&mut self, frames: usize, heavy: bool) -> bool {
        if !heavy {
            *self = Self::default();
            return false;
        }
        self.forwarded += frames;
        if self.forwarded < SHARE_AFTER_FRAMES {
            return false;
        }
        self.forwarded = 0;
        true
    }

    /// Notes how long a yield took; true at the end of a window of
    /// [`MOVE_WINDOW`] yields of which none was answered: the worker should
    /// move to another CPU (if every CPU is busy).
    pub(super) fn yielded(&mut self, took: Duration) -> bool {
        self.yields += 1;
        if took >= ANSWERED_YIELD {
            self.answered += 1;
        }
        if self.yields < MOVE_WINDOW {
            return false;
        }
        let alone = self.answered == 0;
        self.yields = 0;
        self.answered = 0;
        alone
    }
}

/// The switch-wide mode: spread by CPU while no worker is busy.
#[derive(Debug, Default)]
pub(super) struct Mode {
    busy_workers: usize,
}

impl Mode {
    /// Whether frames go to the lane of their CPU (and workers stay there).
    pub(super) fn by_cpu(&self) -> bool {
        self.busy_workers == 0
    }

    /// Notes that a worker became busy or calm; true if the mode changed.
    pub(super) fn worker_changed(&mut self, busy: bool) -> bool {
        let before = self.by_cpu();
        if busy {
            self.busy_workers += 1;
        } else {
            self.busy_workers = self.busy_workers.saturating_sub(1);
        }
        before != self.by_cpu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_quiet_worker_stays_calm() {
        let mut meter = LoadMeter::default();
        for _ in 0..100 {
            // A ping every 5 ms: a few microseconds of work.
            assert_eq!(meter.account(5 * MS, Duration::from_micros(10)), None);
        }
    }

    #[test]
    fn a_busy_worker_is_calm_again_only_after_a_calm_spell() {
        let mut meter = LoadMeter::default();
        assert_eq!(meter.account(10 * MS, 5 * MS), None, "window not complete");
        assert_eq!(meter.account(10 * MS, 5 * MS), Some(true));
        assert_eq!(meter.account(20 * MS, 10 * MS), None);
        for _ in 0..CALM_WINDOWS - 1 {
            assert_eq!(meter.account(20 * MS, Duration::ZERO), None);
        }
        assert_eq!(meter.account(20 * MS, 2 * MS), None, "10% is not calm");
        for _ in 0..CALM_WINDOWS - 1 {
            assert_eq!(meter.account(20 * MS, Duration::ZERO), None);
        }
        assert_eq!(meter.account(20 * MS, Duration::ZERO), Some(false));
    }

    #[test]
    fn a_long_sleep_makes_a_busy_worker_calm_at_once() {
        let mut meter = LoadMeter::default();
        assert_eq!(meter.account(20 * MS, 20 * MS), Some(true));
        assert_eq!(meter.account(Duration::from_secs(1), MS), Some(false));
    }

    #[test]
    fn a_worker_under_load_offers_its_cpu_once_per_batch_of_frames() {
        let mut share = CpuShare::default();
        assert!(!share.forwarded(SHARE_AFTER_FRAMES - 1, true));
        assert!(share.forwarded(1, true), "the batch is complete");
        assert!(!share.forwarded(1, true), "the count starts again");
        assert!(share.forwarded(SHARE_AFTER_FRAMES * 3, true));
        assert!(!share.forwarded(1, true), "one yield per call, not three");
    }

    #[test]
    fn a_worker_never_offers_its_cpu_while_traffic_is_light() {
        let mut share = CpuShare::default();
        assert!(!share.forwarded(SHARE_AFTER_FRAMES - 1, true));
        assert!(!share.forwarded(SHARE_AFTER_FRAMES * 10, false));
        assert!(
            !share.forwarded(1, true),
            "frames forwarded while light do not count"
        );
    }

    const UNANSWERED: Duration = Duration::from_micros(2);
    const ANSWERED: Duration = Duration::from_micros(300);

    #[test]
    fn a_worker_whose_yields_are_never_answered_moves_once_per_window() {
        let mut share = CpuShare::default();
        for window in 0..3 {
            for i in 0..MOVE_WINDOW - 1 {
                assert!(!share.yielded(UNANSWERED), "window {window}, yield {i}");
            }
            assert!(share.yielded(UNANSWERED), "window {window} is complete");
        }
    }

    #[test]
    fn one_answered_yield_keeps_the_worker_where_it_is_for_that_window() {
        let mut share = CpuShare::default();
        assert!(!share.yielded(ANSWERED));
        for _ in 0..MOVE_WINDOW - 2 {
            assert!(!share.yielded(UNANSWERED));
        }
        assert!(
            !share.yielded(UNANSWERED),
            "a yield in this window was answered"
        );
        // The next window starts afresh: all unanswered, so move.
        for _ in 0..MOVE_WINDOW - 1 {
            assert!(!share.yielded(UNANSWERED));
        }
        assert!(share.yielded(UNANSWERED));
        // A short errand by another thread is not an answer.
        for _ in 0..MOVE_WINDOW - 1 {
            assert!(!share.yielded(ANSWERED_YIELD - Duration::from_nanos(1)));
        }
        assert!(share.yielded(UNANSWERED));
    }

    #[test]
    fn light_traffic_starts_the_window_again() {
        let mut share = CpuShare::default();
        for _ in 0..MOVE_WINDOW - 1 {
            assert!(!share.yielded(UNANSWERED));
        }
        share.forwarded(1, false);
        assert!(!share.yielded(UNANSWERED));
    }

    #[test]
    fn the_switch_spreads_by_cpu_only_while_no_worker_is_busy() {
        let mut mode = Mode::default();
        assert!(mode.by_cpu());
        assert!(mode.worker_changed(true));
        assert!(
            !mode.worker_changed(true),
            "a second busy worker changes nothing"
        );
        assert!(!mode.worker_changed(false));
        assert!(!mode.by_cpu());
        assert!(mode.worker_changed(false));
        assert!(mode.by_cpu());
    }
}

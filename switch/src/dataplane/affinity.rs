//! Where a port's frames are read, and where and how workers run: next to
//! the senders at real-time priority while traffic is light, as ordinary
//! threads spread over the CPUs once it is heavy. The measurements behind
//! each rule are in docs/PERFORMANCE.md ("Per-CPU lanes and real-time
//! priority", "A worker that offers its CPU under load", "Moving to another
//! CPU instead of stepping aside").
//!
//! Light traffic, [`ReadMode::ByCpu`]: the kernel puts each frame in the
//! lane of the CPU it arrived on, which is its sender's CPU, and worker `i`
//! is kept on lane `i`'s CPUs. Waking it is then a switch between two
//! threads of one CPU, far cheaper on a virtual machine than waking another
//! CPU; real-time priority (SCHED_FIFO 1) lets it run at once even when the
//! sender is in another scheduling group (a container always is). The
//! answer to a frame lands in the same lane, as the receiver's stack runs
//! inside the worker's write. Where real-time priority is refused (no
//! CAP_SYS_NICE: rootless mode) or not wanted (`--no-realtime`), the
//! worker asks for the shortest time slice (0.1 ms) instead: the kernel's
//! scheduler (EEVDF, Linux 6.12 and later) gives a woken thread with a
//! shorter slice than the running one's the CPU at once, and takes it back
//! after that slice, so nobody starves. No privilege is needed; older
//! kernels ignore the request.
//!
//! Heavy traffic, [`ReadMode::ByPort`]: a worker kept next to a busy sender
//! gets half a CPU while another may idle, and a real-time worker takes CPU
//! from the receiver of a flood. So once any worker is busier than [`BUSY`]
//! of a [`WINDOW`], every port sends all its frames to one lane (ports
//! spread over the workers) and workers run anywhere at ordinary priority;
//! after every busy worker stayed below [`CALM`] for [`CALM_WINDOWS`]
//! windows, the switch goes back. Frames queued before a change are
//! forwarded before newer ones (the hand-over in `lanes.rs`), so order is
//! kept.
//!
//! One exception: a worker whose traffic is a conversation
//! ([`Conversation`]: the frames it forwards come back as answers, as a TCP
//! receiver's acknowledgements do) keeps real-time priority under load,
//! where it had it while light. Its senders are clocked by the answers it
//! forwards, so it cannot outrun the endpoints, and one real-time thread
//! forwarding both directions while the endpoints share the other CPU was
//! the fastest arrangement measured for TCP through TAP ports
//! (docs/PERFORMANCE.md, "A conversation keeps its worker real-time"). The
//! two ports of a conversation share that worker (`pairing.rs`).
//!
//! Under load an ordinary worker offers its CPU (`sched_yield`) every
//! [`SHARE_AFTER_FRAMES`] frames: on few CPUs the receiver of its frames
//! often waits on the worker's own CPU, and without the offer its socket
//! buffer overflows before the scheduler steps in. A kernel bridge gets
//! this for free by forwarding inside the sender's system call. When none
//! of [`MOVE_WINDOW`] offers in a row was taken and every CPU is busy, the
//! receiver is elsewhere: the worker moves to another CPU, which brings it
//! next to the receiver or leaves a CPU the kernel soon fills.

use std::io;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ports::ReadMode;

use super::tuning::LightPriority;

mod conversation;
use conversation::Conversation;

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

    /// Accounts `elapsed` wall time, `working` of it spent forwarding (from
    /// a wake-up to the next sleep). When that completes a window, `ran`
    /// gives the CPU time the thread used since the window began, if the
    /// clock is known, and the load is the lesser of the two: the wall time
    /// also holds any time the worker was stalled in the middle of its work
    /// (preempted by a higher-priority thread, or its virtual CPU taken by
    /// the host: steal), and the CPU time also holds polls that found
    /// nothing. One stall of 5 ms inside a 12-µs ping forward would
    /// otherwise make a busy window and send the switch to reading by port
    /// for at least [`CALM_WINDOWS`] windows. Returns `Some(busy)` when the
    /// worker became busy or calm.
    pub(super) fn account(
        &mut self,
        elapsed: Duration,
        working: Duration,
        ran: impl FnOnce() -> Option<Duration>,
    ) -> Option<bool> {
        self.window += elapsed;
        self.working += working.min(elapsed);
        if self.window < WINDOW {
            return None;
        }
        let working = ran().map_or(self.working, |ran| ran.min(self.working));
        let load = working.as_secs_f64() / self.window.as_secs_f64();
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
/// (about one full batch; shorter and longer both measured slower).
pub(super) const SHARE_AFTER_FRAMES: usize = 32;

/// An offer that kept the worker off the CPU this long let another thread
/// do real work (a receiver reading a burst); a kernel thread's errand is
/// shorter.
const ANSWERED_YIELD: Duration = Duration::from_micros(20);

/// Offers in a row, none answered, after which a worker under load moves
/// to another CPU (if every CPU is busy). Long enough that a worker next to
/// the receiver rarely moves by chance, short enough to react.
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
    /// While traffic is light (`heavy` false) it never should: the worker
    /// then runs at real-time priority next to the sender.
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

/// The switch-wide read mode: by CPU while no worker is busy. Shared by the
/// workers; changes are counted, and a change and the steering of the
/// ports that follows it (the ports read since the last change; see
/// `steering.rs`) happen under one lock.
#[derive(Debug)]
pub(super) struct ModeSwitch {
    workers: usize,
    busy_workers: Mutex<usize>,
    /// The [`ReadMode`] of ports read in lanes (`ByCpu` while
    /// `busy_workers == 0`, else `ByPort`), for workers to read without
    /// the lock.
    lane_mode: AtomicU8,
    changes: AtomicU64,
    /// Readers that had to wait for the kernel to take a port's new
    /// steering before handing the port over (see `steering.rs`).
    steering_waits: AtomicU64,
}

impl ModeSwitch {
    pub(super) fn new(workers: usize) -> Self {
        ModeSwitch {
            workers,
            busy_workers: Mutex::new(0),
            lane_mode: AtomicU8::new(ReadMode::ByCpu as u8),
            changes: AtomicU64::new(0),
            steering_waits: AtomicU64::new(0),
        }
    }

    /// Where a port read in lanes sends its frames now: `ByCpu` or `ByPort`.
    pub(super) fn lane_mode(&self) -> ReadMode {
        if self.lane_mode.load(Ordering::Relaxed) == ReadMode::ByCpu as u8 {
            ReadMode::ByCpu
        } else {
            ReadMode::ByPort
        }
    }

    /// Whether frames go to the lane of their CPU (and workers stay there).
    pub(super) fn by_cpu(&self) -> bool {
        self.lane_mode() == ReadMode::ByCpu
    }

    /// How often the mode changed; a port steered anew records the count,
    /// and a worker that sees a new one hands the port over (see
    /// `steering.rs`, `lanes.rs`).
    pub(super) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// A reader waits for the kernel to take a port's new steering.
    pub(super) fn count_steering_wait(&self) {
        self.steering_waits.fetch_add(1, Ordering::SeqCst);
    }

    /// How often readers waited for the kernel to take a steering.
    pub(super) fn steering_waits(&self) -> u64 {
        self.steering_waits.load(Ordering::SeqCst)
    }

    /// How ports are read now, as `tapswitch stats` tells it.
    pub(super) fn current(&self) -> ReadMode {
        if self.workers < 2 {
            ReadMode::OneLane
        } else {
            self.lane_mode()
        }
    }

    /// Runs `steer` with the current mode, serialized with mode changes
    /// (for a port just added).
    pub(super) fn steer_with(&self, steer: impl FnOnce(ReadMode)) {
        let _busy = self
            .busy_workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        steer(self.lane_mode());
    }

    /// A worker became busy or calm; when that changes the mode, the new
    /// mode is published and `steer` runs with it, under the lock.
    pub(super) fn worker_changed(&self, busy: bool, steer: impl FnOnce(ReadMode)) {
        let mut busy_workers = self
            .busy_workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = *busy_workers == 0;
        if busy {
            *busy_workers += 1;
        } else {
            *busy_workers = busy_workers.saturating_sub(1);
        }
        let by_cpu = *busy_workers == 0;
        if before == by_cpu {
            return;
        }
        log::debug!(
            "{}",
            if by_cpu {
                "traffic is light: reading frames on the CPU they arrive on"
            } else {
                "traffic is heavy: reading each port in one lane"
            }
        );
        // Published before the ports are steered: a worker that reads a
        // lane the change sends frames to has seen it, and hands the port
        // over first.
        let mode = if by_cpu {
            ReadMode::ByCpu
        } else {
            ReadMode::ByPort
        };
        self.lane_mode.store(mode as u8, Ordering::Relaxed);
        self.changes.fetch_add(1, Ordering::AcqRel);
        steer(mode);
    }
}

/// Where a worker may run: its lane's CPUs (empty: no preference) and all
/// the switch's CPUs.
#[derive(Debug, Clone)]
pub(super) struct Cpus {
    pub(super) lane: Vec<usize>,
    pub(super) all: Vec<usize>,
}

/// The scheduler calls a [`Placement`] makes; [`KernelCpu`] makes them,
/// tests record them.
pub(super) trait CpuControl {
    /// Keeps the calling thread on `cpus`.
    fn keep_to(&mut self, cpus: &[usize]) -> io::Result<()>;
    fn set_realtime(&mut self, on: bool) -> io::Result<()>;
    /// Asks for the shortest time slices (an ordinary thread), or the
    /// default ones again.
    fn set_short_slices(&mut self, on: bool) -> io::Result<()>;
    /// Offers the CPU to whoever waits for it; returns how long that took.
    fn offer(&mut self) -> Duration;
    /// Whether every CPU is likely busy.
    fn fully_busy(&mut self) -> bool;
    /// Moves to another of `allowed`; whether it moved.
    fn move_to_another(&mut self, allowed: &[usize]) -> io::Result<bool>;
    /// The CPU time the calling thread has used so far, if known.
    fn cpu_time(&mut self) -> Option<Duration>;
}

/// [`CpuControl`] through the kernel (`ports::cpu`).
#[derive(Debug, Default)]
pub(super) struct KernelCpu;

impl CpuControl for KernelCpu {
    fn keep_to(&mut self, cpus: &[usize]) -> io::Result<()> {
        ports::cpu::pin_current_thread(cpus)
    }

    fn set_realtime(&mut self, on: bool) -> io::Result<()> {
        ports::cpu::set_realtime(on)
    }

    fn set_short_slices(&mut self, on: bool) -> io::Result<()> {
        ports::cpu::set_short_slices(on)
    }

    fn offer(&mut self) -> Duration {
        let start = Instant::now();
        std::thread::yield_now();
        start.elapsed()
    }

    fn fully_busy(&mut self) -> bool {
        ports::cpu::fully_busy()
    }

    fn move_to_another(&mut self, allowed: &[usize]) -> io::Result<bool> {
        ports::cpu::move_to_another_cpu(allowed)
    }

    fn cpu_time(&mut self) -> Option<Duration> {
        ports::cpu::thread_cpu_time()
    }
}

/// What a [`Placement`] reports to and reads from the rest of the switch.
pub(super) trait LoadBoard {
    /// This worker became busy (true) or calm.
    fn worker_load_changed(&self, busy: bool);
    /// How ports read in lanes are read right now (`ByCpu` or `ByPort`).
    fn lane_mode(&self) -> ReadMode;
    fn count_yield(&self);
    fn count_move(&self);
    /// This worker was refused real-time priority (said once per worker).
    fn realtime_refused(&self);
    /// Under load, this worker began (true) or ceased to stay real-time
    /// because its traffic is a [`Conversation`] (`tapswitch stats`).
    fn kept_for_conversation(&self, kept: bool);
}

/// One worker's place on the CPUs: fed "a batch of n frames was forwarded"
/// and "about to sleep", it measures the worker's load, follows the read
/// mode (kept on the lane's CPUs and real-time, or with short slices,
/// while light; anywhere and ordinary while heavy), offers the CPU under
/// load and moves when nobody takes it.
#[derive(Debug)]
pub(super) struct Placement<C: CpuControl = KernelCpu> {
    index: usize,
    cpus: Cpus,
    /// How it runs while traffic is light.
    light: LightPriority,
    cpu: C,
    load: LoadMeter,
    share: CpuShare,
    conversation: Conversation,
    /// When the load meter was last told, and since when this worker has
    /// been forwarding without a sleep.
    accounted: Instant,
    working_since: Instant,
    /// Time since then the worker spent blocked rather than working
    /// (waiting for the kernel to take a steering at a mode change).
    blocked: Duration,
    /// The thread's CPU time when the load meter's window last completed.
    cpu_time_at_window: Option<Duration>,
    /// Whether this thread is kept on its lane's CPUs right now.
    pinned: bool,
    /// Whether it asked for real-time priority, and whether that was
    /// refused (then it asks for short slices instead).
    realtime: bool,
    realtime_refused: bool,
    /// Whether it asked for the shortest time slices.
    short_slices: bool,
    /// Whether it is real-time under load for a conversation (as last told
    /// to the board).
    kept_for_conversation: bool,
}

impl<C: CpuControl> Placement<C> {
    pub(super) fn new(
        index: usize,
        cpus: Cpus,
        light: LightPriority,
        cpu: C,
        now: Instant,
    ) -> Self {
        Placement {
            index,
            cpus,
            light,
            cpu,
            load: LoadMeter::default(),
            share: CpuShare::default(),
            conversation: Conversation::default(),
            accounted: now,
            working_since: now,
            blocked: Duration::ZERO,
            cpu_time_at_window: None,
            pinned: false,
            realtime: false,
            realtime_refused: false,
            short_slices: false,
            kept_for_conversation: false,
        }
    }

    /// While traffic is light (`ByCpu`), keeps this thread on its lane's
    /// CPUs and at the lowest real-time priority, or else with the shortest
    /// time slices (see [`LightPriority`]); under load (`ByPort`), lets it
    /// run anywhere as an ordinary thread with the default slices, or at
    /// real-time priority still while its traffic is a [`Conversation`] (if
    /// it was granted real-time priority).
    pub(super) fn follow_mode(&mut self, mode: ReadMode, board: &dyn LoadBoard) {
        let by_cpu = mode == ReadMode::ByCpu;
        let pin = by_cpu && !self.cpus.lane.is_empty();
        if pin != self.pinned {
            let cpus = if pin { &self.cpus.lane } else { &self.cpus.all };
            if let Err(err) = self.cpu.keep_to(cpus) {
                log::debug!("worker {}: cannot keep to CPUs {cpus:?}: {err}", self.index);
            }
            self.pinned = pin;
        }
        if by_cpu {
            // A conversation is judged under load, from its first window
            // on: one that ended before (the worker idle since) keeps no
            // worker real-time.
            self.conversation = Conversation::default();
        }
        let conversing = self.conversation.holds() && !self.realtime_refused;
        let realtime = (by_cpu || conversing) && self.light == LightPriority::RealTime;
        if realtime != self.realtime {
            if let Err(err) = self.cpu.set_realtime(realtime) {
                // Without CAP_SYS_NICE: an ordinary thread, said once.
                if !self.realtime_refused {
                    board.realtime_refused();
                    if self.index == 0 {
                        log::info!(
                            "workers run at ordinary priority, with the shortest time slices \
                             where the kernel grants them (Linux 6.12+): real-time was refused \
                             ({err}); grant CAP_SYS_NICE (or `ulimit -r 1`) for the lowest \
                             latency, or pass --no-realtime"
                        );
                    }
                }
                self.realtime_refused = true;
            }
            self.realtime = realtime;
        }
        self.tell_conversation(!by_cpu, board);
        let short_slices = by_cpu
            && match self.light {
                LightPriority::RealTime => self.realtime_refused,
                LightPriority::ShortSlices => true,
                LightPriority::Ordinary => false,
            };
        if short_slices != self.short_slices {
            if let Err(err) = self.cpu.set_short_slices(short_slices) {
                log::debug!(
                    "worker {}: cannot ask for short time slices: {err}",
                    self.index
                );
            }
            self.short_slices = short_slices;
        }
    }

    /// How long the worker may sleep before it must look at its load
    /// (`None`: as long as it likes).
    pub(super) fn next_look(&self) -> Option<Duration> {
        self.load.busy().then_some(WINDOW)
    }

    /// The worker woke up with work to do.
    pub(super) fn woke(&mut self, now: Instant) {
        self.working_since = now;
    }

    /// A batch of `frames` was forwarded, `answered` of them answers read at
    /// once: accounts the load (at most once a window, so a worker that
    /// never runs out of frames still changes the mode) and the
    /// conversation, and under load offers the CPU or moves, unless it is
    /// real-time (its offer would let only real-time threads run).
    pub(super) fn batch_forwarded(
        &mut self,
        frames: usize,
        answered: usize,
        now: Instant,
        board: &dyn LoadBoard,
    ) {
        self.account(now, false, board);
        self.conversation.note(frames, answered, now);
        let heavy = board.lane_mode() == ReadMode::ByPort;
        if self.share.forwarded(frames, heavy && !self.runs_realtime()) {
            self.offer_cpu(board);
        }
    }

    /// The worker was blocked for `blocked` while it worked: not load. At
    /// the change back to reading per CPU a reader waits milliseconds for
    /// the kernel to take a TAP's steering; counted as work, that made the
    /// window busy and sent the switch straight back to reading by port.
    pub(super) fn not_working(&mut self, blocked: Duration) {
        self.blocked += blocked;
    }

    /// `frames` answers were taken from other workers' lanes (see
    /// `lanes.rs`): they count for the conversation only, not towards the
    /// next CPU offer.
    pub(super) fn answers_taken(&mut self, frames: usize, now: Instant) {
        if frames > 0 {
            self.conversation.note(frames, frames, now);
        }
    }

    /// The worker is about to sleep: accounts the load now.
    pub(super) fn about_to_sleep(&mut self, now: Instant, board: &dyn LoadBoard) {
        self.account(now, true, board);
        self.tell_conversation(board.lane_mode() != ReadMode::ByCpu, board);
    }

    /// Tells the board whether this worker is real-time under load because
    /// its traffic is a conversation. A worker whose own load ended is not,
    /// though it keeps its priority until it next follows the mode.
    fn tell_conversation(&mut self, heavy: bool, board: &dyn LoadBoard) {
        let kept = heavy && self.runs_realtime() && self.load.busy();
        if kept != self.kept_for_conversation {
            board.kept_for_conversation(kept);
            self.kept_for_conversation = kept;
        }
    }

    /// Whether this thread runs at real-time priority now: asked for, and
    /// not refused.
    fn runs_realtime(&self) -> bool {
        self.realtime && !self.realtime_refused
    }

    fn account(&mut self, now: Instant, now_or_never: bool, board: &dyn LoadBoard) {
        if !now_or_never && now - self.accounted < WINDOW {
            return;
        }
        let elapsed = now - self.accounted;
        let working = (now - self.working_since.max(self.accounted))
            .saturating_sub(std::mem::take(&mut self.blocked));
        self.accounted = now;
        self.working_since = now;
        let (cpu, at_window) = (&mut self.cpu, &mut self.cpu_time_at_window);
        let ran = || {
            let now = cpu.cpu_time()?;
            let before = at_window.replace(now)?;
            Some(now.saturating_sub(before))
        };
        if let Some(busy) = self.load.account(elapsed, working, ran) {
            board.worker_load_changed(busy);
        }
    }

    /// Lets whoever waits for this CPU run (usually the receiver of the
    /// frames just sent), and moves to another CPU when nobody has for a
    /// while but every CPU is busy.
    fn offer_cpu(&mut self, board: &dyn LoadBoard) {
        let took = self.cpu.offer();
        board.count_yield();
        if self.share.yielded(took) && self.cpu.fully_busy() {
            match self.cpu.move_to_another(&self.cpus.all) {
                Ok(true) => board.count_move(),
                Ok(false) => {}
                Err(err) => log::debug!("worker {}: cannot move to another CPU: {err}", self.index),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A thread CPU clock that cannot be read: the load is the wall time at
    /// work alone.
    fn no_clock() -> Option<Duration> {
        None
    }

    #[test]
    fn a_quiet_worker_stays_calm() {
        let mut meter = LoadMeter::default();
        for _ in 0..100 {
            // A ping every 5 ms: a few microseconds of work.
            assert_eq!(
                meter.account(5 * MS, Duration::from_micros(10), no_clock),
                None
            );
        }
    }

    #[test]
    fn a_busy_worker_is_calm_again_only_after_a_calm_spell() {
        let mut meter = LoadMeter::default();
        assert_eq!(
            meter.account(10 * MS, 5 * MS, no_clock),
            None,
            "window not complete"
        );
        assert_eq!(meter.account(10 * MS, 5 * MS, no_clock), Some(true));
        assert_eq!(meter.account(20 * MS, 10 * MS, no_clock), None);
        for _ in 0..CALM_WINDOWS - 1 {
            assert_eq!(meter.account(20 * MS, Duration::ZERO, no_clock), None);
        }
        assert_eq!(
            meter.account(20 * MS, 2 * MS, no_clock),
            None,
            "10% is not calm"
        );
        for _ in 0..CALM_WINDOWS - 1 {
            assert_eq!(meter.account(20 * MS, Duration::ZERO, no_clock), None);
        }
        assert_eq!(
            meter.account(20 * MS, Duration::ZERO, no_clock),
            Some(false)
        );
    }

    #[test]
    fn the_load_is_the_lesser_of_the_wall_time_at_work_and_the_cpu_time() {
        let mut meter = LoadMeter::default();
        // 10 ms from a wake-up to the sleep, of which the thread ran 0.1 ms:
        // stalled, not busy.
        assert_eq!(meter.account(WINDOW, 10 * MS, || Some(MS / 10)), None);
        // Polls that found nothing are CPU time, not work.
        assert_eq!(meter.account(WINDOW, MS, || Some(WINDOW)), None);
        assert_eq!(meter.account(WINDOW, 10 * MS, || Some(9 * MS)), Some(true));
    }

    #[test]
    fn a_long_sleep_makes_a_busy_worker_calm_at_once() {
        let mut meter = LoadMeter::default();
        assert_eq!(meter.account(20 * MS, 20 * MS, no_clock), Some(true));
        assert_eq!(
            meter.account(Duration::from_secs(1), MS, no_clock),
            Some(false)
        );
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
        let mode = ModeSwitch::new(2);
        let steered = std::cell::RefCell::new(Vec::new());
        let steer = |m| steered.borrow_mut().push(m);
        assert!(mode.by_cpu());
        assert_eq!(mode.current(), ReadMode::ByCpu);
        mode.worker_changed(true, steer);
        assert_eq!(mode.current(), ReadMode::ByPort);
        mode.worker_changed(true, steer);
        assert_eq!(mode.changes(), 1, "a second busy worker changes nothing");
        mode.worker_changed(false, steer);
        assert!(!mode.by_cpu());
        mode.worker_changed(false, steer);
        assert!(mode.by_cpu());
        assert_eq!(mode.changes(), 2);
        assert_eq!(*steered.borrow(), [ReadMode::ByPort, ReadMode::ByCpu]);
    }

    #[test]
    fn one_worker_reads_in_one_lane_whatever_the_load() {
        let mode = ModeSwitch::new(1);
        assert_eq!(mode.current(), ReadMode::OneLane);
        mode.worker_changed(true, |_| {});
        assert_eq!(mode.current(), ReadMode::OneLane);
        assert!(
            !mode.by_cpu(),
            "the worker still becomes an ordinary thread"
        );
    }

    /// Records what a placement asks of the scheduler.
    #[derive(Debug, Default)]
    struct FakeCpu {
        kept_to: Vec<Vec<usize>>,
        realtime: Vec<bool>,
        refuse_realtime: bool,
        short_slices: Vec<bool>,
        offers: u32,
        offer_takes: Duration,
        fully_busy: bool,
        moves: u32,
        /// The thread's CPU time, as the placement reads it (`None`: unknown).
        cpu_time: Option<Duration>,
    }

    impl CpuControl for FakeCpu {
        fn keep_to(&mut self, cpus: &[usize]) -> io::Result<()> {
            self.kept_to.push(cpus.to_vec());
            Ok(())
        }
        fn set_realtime(&mut self, on: bool) -> io::Result<()> {
            self.realtime.push(on);
            if self.refuse_realtime && on {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            Ok(())
        }
        fn set_short_slices(&mut self, on: bool) -> io::Result<()> {
            self.short_slices.push(on);
            Ok(())
        }
        fn offer(&mut self) -> Duration {
            self.offers += 1;
            self.offer_takes
        }
        fn fully_busy(&mut self) -> bool {
            self.fully_busy
        }
        fn move_to_another(&mut self, _allowed: &[usize]) -> io::Result<bool> {
            self.moves += 1;
            Ok(true)
        }
        fn cpu_time(&mut self) -> Option<Duration> {
            self.cpu_time
        }
    }

    /// A switch of one worker, as the placement sees it.
    #[derive(Debug)]
    struct FakeBoard {
        by_cpu: std::cell::Cell<bool>,
        changes: std::cell::RefCell<Vec<bool>>,
        yields: std::cell::Cell<u64>,
        moves: std::cell::Cell<u64>,
        refusals: std::cell::Cell<u64>,
        kept: std::cell::RefCell<Vec<bool>>,
        /// Another worker keeps the switch under load.
        others_busy: std::cell::Cell<bool>,
    }

    impl FakeBoard {
        fn new() -> Self {
            FakeBoard {
                by_cpu: true.into(),
                changes: Default::default(),
                yields: 0.into(),
                moves: 0.into(),
                refusals: 0.into(),
                kept: Default::default(),
                others_busy: false.into(),
            }
        }
    }

    impl LoadBoard for FakeBoard {
        fn worker_load_changed(&self, busy: bool) {
            self.changes.borrow_mut().push(busy);
            self.by_cpu.set(!busy && !self.others_busy.get());
        }
        fn lane_mode(&self) -> ReadMode {
            if self.by_cpu.get() {
                ReadMode::ByCpu
            } else {
                ReadMode::ByPort
            }
        }
        fn count_yield(&self) {
            self.yields.set(self.yields.get() + 1);
        }
        fn count_move(&self) {
            self.moves.set(self.moves.get() + 1);
        }
        fn realtime_refused(&self) {
            self.refusals.set(self.refusals.get() + 1);
        }
        fn kept_for_conversation(&self, kept: bool) {
            self.kept.borrow_mut().push(kept);
        }
    }

    fn placement(cpu: FakeCpu, start: Instant) -> Placement<FakeCpu> {
        worker(0, LightPriority::RealTime, cpu, start)
    }

    fn worker(
        index: usize,
        light: LightPriority,
        cpu: FakeCpu,
        start: Instant,
    ) -> Placement<FakeCpu> {
        let cpus = Cpus {
            lane: vec![1],
            all: vec![0, 1],
        };
        Placement::new(index, cpus, light, cpu, start)
    }

    /// Light, light, heavy, light: what the placement asked for.
    fn through_the_modes(mut place: Placement<FakeCpu>) -> FakeCpu {
        for mode in [
            ReadMode::ByCpu,
            ReadMode::ByCpu,
            ReadMode::ByPort,
            ReadMode::ByCpu,
        ] {
            place.follow_mode(mode, &FakeBoard::new());
        }
        place.cpu
    }

    #[test]
    fn a_placement_keeps_to_its_lane_and_real_time_only_while_light() {
        let mut place = placement(FakeCpu::default(), Instant::now());
        place.follow_mode(ReadMode::ByCpu, &FakeBoard::new());
        place.follow_mode(ReadMode::ByCpu, &FakeBoard::new());
        place.follow_mode(ReadMode::ByPort, &FakeBoard::new());
        assert_eq!(place.cpu.kept_to, [vec![1], vec![0, 1]], "once per change");
        assert_eq!(place.cpu.realtime, [true, false]);
        assert!(
            place.cpu.short_slices.is_empty(),
            "real-time needs no short slices"
        );
    }

    #[test]
    fn every_worker_refused_real_time_takes_short_slices_while_light() {
        for index in [0, 1] {
            let cpu = FakeCpu {
                refuse_realtime: true,
                ..FakeCpu::default()
            };
            let cpu =
                through_the_modes(worker(index, LightPriority::RealTime, cpu, Instant::now()));
            assert_eq!(cpu.realtime, [true, false, true], "worker {index}");
            assert_eq!(cpu.short_slices, [true, false, true], "worker {index}");
        }
    }

    #[test]
    fn without_real_time_short_slices_while_light_but_never_while_polling() {
        let start = Instant::now();
        let cpu = through_the_modes(worker(
            1,
            LightPriority::ShortSlices,
            FakeCpu::default(),
            start,
        ));
        assert!(cpu.realtime.is_empty(), "real-time is not asked for");
        assert_eq!(cpu.short_slices, [true, false, true]);
        let cpu = through_the_modes(worker(
            1,
            LightPriority::Ordinary,
            FakeCpu::default(),
            start,
        ));
        assert!(cpu.realtime.is_empty() && cpu.short_slices.is_empty());
    }

    #[test]
    fn a_refused_real_time_priority_is_asked_for_once_per_change() {
        let cpu = FakeCpu {
            refuse_realtime: true,
            ..FakeCpu::default()
        };
        let mut place = placement(cpu, Instant::now());
        let board = FakeBoard::new();
        place.follow_mode(ReadMode::ByCpu, &board);
        place.follow_mode(ReadMode::ByCpu, &board);
        place.follow_mode(ReadMode::ByPort, &board);
        place.follow_mode(ReadMode::ByCpu, &board);
        assert_eq!(place.cpu.realtime, [true, false, true]);
        assert!(place.realtime_refused);
        assert_eq!(board.refusals.get(), 1, "the switch is told once");
    }

    #[test]
    fn a_busy_worker_changes_the_mode_then_offers_its_cpu_every_batch() {
        let start = Instant::now();
        let board = FakeBoard::new();
        let mut place = placement(FakeCpu::default(), start);
        // Forwarding without a sleep for a whole window: busy.
        place.woke(start);
        place.batch_forwarded(SHARE_AFTER_FRAMES, 0, start + 5 * MS, &board);
        assert!(board.changes.borrow().is_empty(), "window not complete");
        assert_eq!(place.cpu.offers, 0, "light traffic never offers");
        place.batch_forwarded(SHARE_AFTER_FRAMES, 0, start + WINDOW, &board);
        assert_eq!(*board.changes.borrow(), [true]);
        assert_eq!(place.cpu.offers, 1, "offered right after the change");
        assert_eq!(place.next_look(), Some(WINDOW), "a busy worker looks again");
        place.batch_forwarded(SHARE_AFTER_FRAMES - 1, 0, start + WINDOW + MS, &board);
        assert_eq!(place.cpu.offers, 1, "not a full batch yet");
        place.batch_forwarded(1, 0, start + WINDOW + MS, &board);
        assert_eq!((place.cpu.offers, board.yields.get()), (2, 2));
        // A long sleep: calm again.
        place.about_to_sleep(start + WINDOW + MS, &board);
        place.woke(start + Duration::from_secs(2));
        place.about_to_sleep(start + Duration::from_secs(2), &board);
        assert_eq!(*board.changes.borrow(), [true, false]);
        assert_eq!(place.next_look(), None);
    }

    #[test]
    fn under_load_a_worker_in_a_conversation_stays_real_time_and_offers_nothing() {
        let start = Instant::now();
        let board = FakeBoard::new();
        let mut place = placement(FakeCpu::default(), start);
        place.follow_mode(ReadMode::ByCpu, &board);
        // A window of TCP-like traffic: half the frames are answers.
        place.batch_forwarded(SHARE_AFTER_FRAMES, SHARE_AFTER_FRAMES / 2, start, &board);
        board.by_cpu.set(false);
        place.batch_forwarded(
            SHARE_AFTER_FRAMES,
            SHARE_AFTER_FRAMES / 2,
            start + WINDOW,
            &board,
        );
        assert!(board.kept.borrow().is_empty(), "real-time while light");
        place.follow_mode(ReadMode::ByPort, &board);
        assert_eq!(place.cpu.realtime, [true], "real-time kept under load");
        assert_eq!(*board.kept.borrow(), [true], "told to `tapswitch stats`");
        assert_eq!(place.cpu.kept_to, [vec![1], vec![0, 1]], "runs anywhere");
        for _ in 0..4 {
            place.batch_forwarded(SHARE_AFTER_FRAMES, 4, start + WINDOW + MS, &board);
        }
        assert_eq!(place.cpu.offers, 0, "a real-time thread's offer is none");
        // A window of one-way traffic (a flood): ordinary, and offers again.
        place.batch_forwarded(SHARE_AFTER_FRAMES, 0, start + 2 * WINDOW + MS, &board);
        place.follow_mode(ReadMode::ByPort, &board);
        assert_eq!(
            place.cpu.realtime,
            [true],
            "16 answers in 160 frames: a dip"
        );
        place.batch_forwarded(SHARE_AFTER_FRAMES, 0, start + 3 * WINDOW + MS, &board);
        place.follow_mode(ReadMode::ByPort, &board);
        assert_eq!(place.cpu.realtime, [true, false]);
        assert_eq!(*board.kept.borrow(), [true, false]);
        place.batch_forwarded(SHARE_AFTER_FRAMES, 0, start + 3 * WINDOW + 2 * MS, &board);
        assert_eq!(place.cpu.offers, 1);
    }

    /// A window from `start` in which every frame `place` forwards is an
    /// answer.
    fn converse_for_a_window(place: &mut Placement<FakeCpu>, start: Instant, board: &FakeBoard) {
        let all = SHARE_AFTER_FRAMES;
        place.batch_forwarded(all, all, start, board);
        place.batch_forwarded(all, all, start + WINDOW, board);
    }

    /// A real-time worker that conversed for a window from `start` under
    /// load, and followed the mode.
    fn conversing_under_load(start: Instant) -> (FakeBoard, Placement<FakeCpu>) {
        let board = FakeBoard::new();
        let mut place = placement(FakeCpu::default(), start);
        board.by_cpu.set(false);
        converse_for_a_window(&mut place, start, &board);
        place.follow_mode(ReadMode::ByPort, &board);
        (board, place)
    }

    #[test]
    fn a_conversation_before_a_calm_keeps_no_worker_real_time_in_the_next_load() {
        let (board, mut place) = conversing_under_load(Instant::now());
        assert_eq!(place.cpu.realtime, [true], "a conversation under load");
        // Calm, then load again, which this worker does not forward (it
        // sleeps): it is an ordinary thread, as any worker under load.
        place.follow_mode(ReadMode::ByCpu, &board);
        assert_eq!(*board.kept.borrow(), [true, false], "real-time while light");
        place.follow_mode(ReadMode::ByPort, &board);
        assert_eq!(place.cpu.realtime, [true, false]);
        assert_eq!(*board.kept.borrow(), [true, false]);
    }

    #[test]
    fn a_conversing_worker_whose_load_ended_is_no_longer_counted() {
        let start = Instant::now();
        let (board, mut place) = conversing_under_load(start);
        place.about_to_sleep(start + WINDOW + MS, &board);
        assert_eq!(*board.kept.borrow(), [true], "a short pause, still busy");
        // Its traffic stopped; another worker keeps the switch under load.
        board.others_busy.set(true);
        let later = start + (CALM_WINDOWS + 2) * WINDOW;
        place.woke(later);
        place.about_to_sleep(later, &board);
        assert_eq!(board.changes.borrow().last(), Some(&false), "calm");
        assert_eq!(board.lane_mode(), ReadMode::ByPort);
        assert_eq!(*board.kept.borrow(), [true, false]);
        assert_eq!(
            place.cpu.realtime,
            [true],
            "its priority waits for the mode"
        );
    }

    #[test]
    fn answers_taken_from_other_lanes_make_a_conversation_but_no_offer() {
        let start = Instant::now();
        let board = FakeBoard::new();
        board.by_cpu.set(false);
        let mut place = worker(0, LightPriority::Ordinary, FakeCpu::default(), start);
        place.batch_forwarded(SHARE_AFTER_FRAMES - 1, 0, start, &board);
        place.answers_taken(SHARE_AFTER_FRAMES, start);
        assert_eq!(place.cpu.offers, 0, "only the worker's own batches count");
        // 36 answers in 67 frames when the window ends.
        place.answers_taken(4, start + WINDOW);
        assert!(place.conversation.holds());
        place.batch_forwarded(1, 0, start + WINDOW + MS, &board);
        assert_eq!(place.cpu.offers, 1, "its own 32nd frame");
    }

    #[test]
    fn a_worker_refused_real_time_is_ordinary_under_load_in_a_conversation_too() {
        let start = Instant::now();
        let board = FakeBoard::new();
        let cpu = FakeCpu {
            refuse_realtime: true,
            ..FakeCpu::default()
        };
        let mut place = placement(cpu, start);
        place.follow_mode(ReadMode::ByCpu, &board);
        board.by_cpu.set(false);
        converse_for_a_window(&mut place, start, &board);
        place.follow_mode(ReadMode::ByPort, &board);
        assert_eq!(place.cpu.realtime, [true, false], "not asked again");
        assert_eq!(place.cpu.short_slices, [true, false]);
        assert!(board.kept.borrow().is_empty(), "never real-time");
        place.batch_forwarded(
            SHARE_AFTER_FRAMES,
            SHARE_AFTER_FRAMES,
            start + WINDOW,
            &board,
        );
        assert!(place.cpu.offers > 0, "an ordinary worker offers its CPU");
    }

    #[test]
    fn time_blocked_waiting_for_the_kernel_is_not_load() {
        let start = Instant::now();
        for (blocked, busy) in [(Duration::ZERO, true), (10 * MS, false)] {
            let board = FakeBoard::new();
            let mut place = placement(FakeCpu::default(), start);
            // 12 ms from wake-up to sleep in a 20 ms window, `blocked` of
            // them waiting for a steering's grace period.
            place.woke(start + 8 * MS);
            place.not_working(blocked);
            place.about_to_sleep(start + WINDOW, &board);
            let changes = board.changes.borrow().clone();
            assert_eq!(changes == [true], busy, "blocked {blocked:?}: {changes:?}");
        }
    }

    #[test]
    fn a_worker_stalled_in_the_middle_of_its_work_stays_calm() {
        let start = Instant::now();
        for (ran, busy) in [(12 * MS, true), (MS / 20, false)] {
            let board = FakeBoard::new();
            let cpu = FakeCpu {
                cpu_time: Some(Duration::ZERO),
                ..FakeCpu::default()
            };
            let mut place = placement(cpu, start);
            // A calm first window marks where the thread's CPU time stands.
            place.woke(start + WINDOW);
            place.about_to_sleep(start + WINDOW, &board);
            // Then 12 ms from a wake-up to the sleep, of which the thread ran
            // `ran`: the rest of the time a higher-priority thread or the
            // host had its CPU.
            place.woke(start + 2 * WINDOW - 12 * MS);
            place.cpu.cpu_time = Some(ran);
            place.about_to_sleep(start + 2 * WINDOW, &board);
            let changes = board.changes.borrow().clone();
            assert_eq!(changes == [true], busy, "ran {ran:?}: {changes:?}");
        }
    }

    #[test]
    fn a_worker_whose_offers_nobody_takes_moves_when_every_cpu_is_busy() {
        let start = Instant::now();
        for fully_busy in [false, true] {
            let board = FakeBoard::new();
            board.by_cpu.set(false);
            let cpu = FakeCpu {
                fully_busy,
                offer_takes: Duration::from_micros(1),
                ..FakeCpu::default()
            };
            let mut place = placement(cpu, start);
            for _ in 0..MOVE_WINDOW {
                place.batch_forwarded(SHARE_AFTER_FRAMES, 0, start, &board);
            }
            assert_eq!(place.cpu.offers, MOVE_WINDOW);
            let moved = u32::from(fully_busy);
            assert_eq!((place.cpu.moves, board.moves.get()), (moved, moved.into()));
        }
    }
}

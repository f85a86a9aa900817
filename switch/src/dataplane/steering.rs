//! Where the kernel puts one port's frames, as the dataplane last told it.
//!
//! Telling the kernel is dear: a packet socket's new fanout program takes
//! effect only after an RCU grace period (`synchronize_net`, inside the
//! `setsockopt`), and a TAP's steering program is loaded and verified anew.
//! So a change of the read mode (see `affinity.rs`) re-steers only the
//! ports read lately (in this or the last housekeeping second); an idle
//! port keeps the steering it had, and follows the mode when it next
//! delivers frames. Both are steered by the housekeeping thread at a
//! worker's request, so no worker waits for the kernel itself. A switch's
//! cost at a mode change then follows its traffic, not its port count.
//!
//! Because a port may lag behind the switch-wide mode, the hand-over in
//! `lanes.rs` goes by the port's own steering ([`PortSteering::pending`]):
//! which steering feeds its lanes now, in which mode, where the frames went
//! before it, whether the kernel has taken it, and whether a reader has
//! handed it over yet. A port is not steered anew before its last steering
//! was handed over (it lags meanwhile, as an idle port does): frames of
//! three steerings at once could not be put back in order. A port without
//! a steering handle (one lane, or lanes the kernel does not steer) follows
//! the switch-wide mode at once: there is nothing to tell, and nothing to
//! hand over.
//!
//! A port fed by CPU must keep the order of a sender that moves to another
//! CPU: its next frames go to another lane, read by another worker, while
//! its last ones may still wait in the first. Its steering keeps a ledger
//! (`ports::ledger`), or its lanes say when each frame arrived and its
//! readers put them back in that order (`lanes.rs`, rootless mode, where
//! eBPF cannot be loaded). A port that can do neither is never fed by CPU:
//! while the switch reads by CPU it stays read by port, in the solo lane it
//! had (at first the one it was added with), as slirp4netns and pasta read
//! a container's frames with one thread; when the switch reads by port, it
//! is steered like any other port, to the lane the pairing chooses. It
//! still follows every mode change, so its steering's number, and the
//! hand-over, work as for the others.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ports::{ReadMode, Steering};

use super::affinity::ModeSwitch;

/// Numbers every steering of every port, from 1: a port's number changes
/// with each steering even when two happen between the same two mode
/// changes (a late follower racing a change).
static STEERINGS: AtomicU64 = AtomicU64::new(0);

/// Where a port's frames went before its current steering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Before {
    /// All to this lane: read by port, or not steered yet (a port starts
    /// with every frame in lane 0).
    Lane(usize),
    /// Each to the lane of the CPU it arrived on.
    EveryLane,
}

/// A steering of a port that no reader has handed over yet (see
/// `lanes.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pending {
    /// The steering's number.
    pub(super) change: u64,
    /// Whether frames go to the lane of their CPU since then.
    pub(super) by_cpu: bool,
    /// The lane that gets every frame while reading by port: this
    /// steering's if it is by port, else the one before's.
    pub(super) solo: usize,
    pub(super) before: Before,
    /// Whether the kernel has taken it: no frame lands by the one before.
    pub(super) taken: bool,
}

/// The port's steering in one word, so that a reader sees its number, its
/// mode, the mode before and the solo lane together: the number in the low
/// 40 bits, then the mode and the one before in 4 bits each
/// ([`NOT_STEERED`], [`BY_CPU`], [`BY_PORT`]), then the solo lane (16
/// bits): the lane that gets every frame while the port is read by port,
/// chosen anew at each steering by port (see `pairing.rs`) and kept by a
/// steering by CPU, whose frames from before are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word(u64);

const NOT_STEERED: u64 = 0;
const BY_CPU: u64 = 1;
const BY_PORT: u64 = 2;
const NUMBER_BITS: u32 = 40;
const MODE_BITS: u32 = 4;
const SOLO_SHIFT: u32 = NUMBER_BITS + 2 * MODE_BITS;
/// Solo lanes a word can name: a port has at most one lane per worker.
const MAX_LANES: usize = 1 << (64 - SOLO_SHIFT);

/// A lane mode as [`Word`] keeps it.
fn mode_bits(mode: ReadMode) -> u64 {
    if mode == ReadMode::ByCpu {
        BY_CPU
    } else {
        BY_PORT
    }
}

impl Word {
    fn new(change: u64, mode: u64, before: u64, solo: usize) -> Self {
        let solo = (solo % MAX_LANES) as u64;
        Word(
            change & ((1 << NUMBER_BITS) - 1)
                | mode << NUMBER_BITS
                | before << (NUMBER_BITS + MODE_BITS)
                | solo << SOLO_SHIFT,
        )
    }

    fn change(self) -> u64 {
        self.0 & ((1 << NUMBER_BITS) - 1)
    }

    fn mode(self) -> u64 {
        (self.0 >> NUMBER_BITS) & ((1 << MODE_BITS) - 1)
    }

    fn before(self) -> u64 {
        (self.0 >> (NUMBER_BITS + MODE_BITS)) & ((1 << MODE_BITS) - 1)
    }

    fn solo(self) -> usize {
        (self.0 >> SOLO_SHIFT) as usize
    }
}

/// One port's steering: the handle that tells the kernel, and what it was
/// last told.
#[derive(Debug)]
pub(super) struct PortSteering {
    /// The port's name, for the log.
    name: String,
    handle: Option<Arc<dyn Steering>>,
    /// Whether the port is fed by CPU while the switch reads by CPU: only
    /// if the order of a sender that changes CPU is kept (see the module
    /// docs).
    by_cpu_when_light: bool,
    /// Serializes telling the kernel (a mode change and a late follower);
    /// held until the kernel has taken the steering, so a hand-over that
    /// must wait for that waits for this lock.
    telling: Mutex<()>,
    /// What the kernel was told last ([`Word`]).
    steered: AtomicU64,
    /// The number of the last steering the kernel has taken (its call
    /// returned).
    taken: AtomicU64,
    /// The number of the last steering a reader handed over.
    handed_over: AtomicU64,
    /// Frames were read from the port in this housekeeping second, and in
    /// the one before (see [`PortSteering::age`]).
    read_lately: AtomicBool,
    read_before: AtomicBool,
    /// A late follow was asked of the housekeeping thread and not done yet.
    follow_asked: AtomicBool,
}

impl PortSteering {
    /// The steering of port `name`, whose solo lane is `solo` until a
    /// steering by port chooses another; `handle` is `None` for a port of
    /// one lane, or when nothing tells the kernel (its solo lane stays).
    /// `arrival_order`: its readers put its lanes' frames back in the order
    /// they arrived, so it may be fed by CPU without a ledger.
    pub(super) fn new(
        name: &str,
        handle: Option<Arc<dyn Steering>>,
        solo: usize,
        arrival_order: bool,
    ) -> Self {
        PortSteering {
            name: name.to_string(),
            by_cpu_when_light: arrival_order
                || handle.as_ref().is_some_and(|h| h.keeps_order_by_cpu()),
            handle,
            telling: Mutex::new(()),
            steered: AtomicU64::new(Word::new(0, NOT_STEERED, NOT_STEERED, solo).0),
            taken: AtomicU64::new(0),
            handed_over: AtomicU64::new(0),
            read_lately: AtomicBool::new(false),
            read_before: AtomicBool::new(false),
            follow_asked: AtomicBool::new(false),
        }
    }

    fn word(&self) -> Word {
        Word(self.steered.load(Ordering::Acquire))
    }

    /// The mode the port's lanes are fed in: its own for a steered port,
    /// the switch's otherwise.
    pub(super) fn mode(&self, switch: &ModeSwitch) -> ReadMode {
        if self.handle.is_none() {
            return switch.lane_mode();
        }
        self.fed_in(self.word().mode())
    }

    /// The mode the port's lanes are fed in after following `followed`
    /// ([`Word::mode`]): a port not steered yet is fed as a group starts
    /// (by CPU with a ledger, otherwise all in lane 0).
    fn fed_in(&self, followed: u64) -> ReadMode {
        if followed == BY_PORT || !self.by_cpu_when_light {
            ReadMode::ByPort
        } else {
            ReadMode::ByCpu
        }
    }

    /// The switch-wide mode the port followed last (one not steered yet
    /// counts as by CPU, the mode a switch starts in).
    fn followed(&self) -> ReadMode {
        match self.word().mode() {
            BY_PORT => ReadMode::ByPort,
            _ => ReadMode::ByCpu,
        }
    }

    /// The lane that gets every frame while the port is read by port (its
    /// last steering by port's, or the one it was added with). Stable while
    /// the caller holds any lane of the port.
    pub(super) fn solo(&self) -> usize {
        self.word().solo()
    }

    /// The lane the port's last frame went to, where the kernel keeps it
    /// (a port steered with a ledger).
    pub(super) fn last_lane(&self) -> Option<usize> {
        self.handle.as_ref()?.last_lane()
    }

    /// Whether frames go to the lane of the CPU they arrive on.
    pub(super) fn by_cpu(&self, switch: &ModeSwitch) -> bool {
        if self.handle.is_none() {
            return switch.by_cpu();
        }
        self.mode(switch) == ReadMode::ByCpu
    }

    /// The port's last steering, unless it was handed over (or there is
    /// none). Stable while the caller holds any lane of the port: a
    /// steering is published with every lane locked (see
    /// [`PortSteering::follow`]).
    pub(super) fn pending(&self) -> Option<Pending> {
        self.handle.as_ref()?;
        let word = self.word();
        let change = word.change();
        if change == 0 || self.handed_over.load(Ordering::Acquire) >= change {
            return None;
        }
        Some(Pending {
            change,
            by_cpu: self.fed_in(word.mode()) == ReadMode::ByCpu,
            solo: word.solo(),
            before: match word.before() {
                NOT_STEERED => Before::Lane(0),
                // Every lane; for a port without a ledger, the solo lane
                // of the steering before that one, which no word keeps:
                // draining every lane covers it.
                BY_CPU => Before::EveryLane,
                // A steering by CPU keeps the solo lane of the one before.
                _ => Before::Lane(word.solo()),
            },
            taken: self.taken.load(Ordering::Acquire) >= change,
        })
    }

    /// Whether steering `change` was handed over.
    pub(super) fn is_handed_over(&self, change: u64) -> bool {
        self.handed_over.load(Ordering::Acquire) >= change
    }

    /// A reader handed steering `change` over: no frame from before it
    /// waits where a later one could overtake it. The port may be steered
    /// anew.
    pub(super) fn handed_over(&self, change: u64) {
        self.handed_over.fetch_max(change, Ordering::AcqRel);
    }

    /// Returns once the kernel has taken steering `change` (frames land by
    /// it alone), and how long that took. Waits for the steering's call to
    /// return, counted by `switch`: the caller holds no lane (see
    /// `lanes.rs`).
    pub(super) fn wait_until_taken(&self, change: u64, switch: &ModeSwitch) -> Duration {
        if self.taken.load(Ordering::Acquire) >= change {
            return Duration::ZERO;
        }
        switch.count_steering_wait();
        let start = Instant::now();
        // The steering was published under this lock, which its teller
        // holds until the kernel's call returned.
        drop(self.telling.lock().unwrap_or_else(PoisonError::into_inner));
        start.elapsed()
    }

    /// Frames were read from the port: a mode change in the next second or
    /// two steers it.
    pub(super) fn note_read(&self) {
        if !self.read_lately.load(Ordering::Relaxed) {
            // SeqCst, paired with the mode change's: either that change
            // sees the port as read, or the reader sees the new mode (and
            // asks for a late follow).
            self.read_lately.store(true, Ordering::SeqCst);
        }
    }

    /// Whether the port was read lately: a mode change steers it.
    pub(super) fn read_lately(&self) -> bool {
        // The switch's new mode was stored before (see `note_read`).
        fence(Ordering::SeqCst);
        self.read_lately.load(Ordering::SeqCst) || self.read_before.load(Ordering::SeqCst)
    }

    /// A housekeeping second is over: reads older than the last one are
    /// forgotten.
    pub(super) fn age(&self) {
        let read = self.read_lately.swap(false, Ordering::SeqCst);
        self.read_before.store(read, Ordering::SeqCst);
    }

    /// Whether the kernel feeds the port in another mode than the switch's.
    pub(super) fn lags(&self, switch: &ModeSwitch) -> bool {
        // After `note_read`'s store (see there).
        fence(Ordering::SeqCst);
        self.handle.is_some() && self.followed() != switch.lane_mode()
    }

    /// Whether the port's last steering was handed over, so it may be
    /// steered anew.
    fn may_steer_anew(&self) -> bool {
        self.is_handed_over(self.word().change())
    }

    /// Whether to ask the housekeeping thread to make the port follow:
    /// true once until [`PortSteering::follow`] ran, and only when it may
    /// (a reader that hands the last steering over asks then).
    pub(super) fn ask_follow(&self, switch: &ModeSwitch) -> bool {
        self.lags(switch)
            && self.may_steer_anew()
            && !self.follow_asked.swap(true, Ordering::AcqRel)
    }

    /// Tells the kernel the switch's current mode unless it was told
    /// already, or its last steering was not handed over yet (the port
    /// lags meanwhile); returns whether it told it. A steering by port
    /// sends every frame to the lane `choose_solo` gives (asked only
    /// then, with the port's telling lock held). The new steering is
    /// published inside `hold_readers`, which runs it while no lane of the
    /// port is being read (so a reader sees a steering before it reads
    /// frames steered by it, and never one while it reads). Called with no
    /// lane of any port held.
    pub(super) fn follow(
        &self,
        switch: &ModeSwitch,
        choose_solo: impl FnOnce() -> usize,
        hold_readers: impl FnOnce(&mut dyn FnMut()),
    ) -> bool {
        let _telling = self.telling.lock().unwrap_or_else(PoisonError::into_inner);
        self.follow_asked.store(false, Ordering::Release);
        let Some(handle) = &self.handle else {
            return false;
        };
        let mode = switch.lane_mode();
        let now = self.word();
        if now.mode() == mode_bits(mode) {
            return false;
        }
        if !self.may_steer_anew() {
            log::debug!(
                "port {}: not steered {} yet: its last steering is not handed over",
                self.name,
                mode.describe()
            );
            return false;
        }
        let solo = if mode == ReadMode::ByPort {
            choose_solo()
        } else {
            now.solo()
        };
        let number = STEERINGS.fetch_add(1, Ordering::Relaxed) + 1;
        let word = Word::new(number, mode_bits(mode), now.mode(), solo);
        // The kernel is told the lane the word keeps.
        let solo = word.solo();
        hold_readers(&mut || self.steered.store(word.0, Ordering::Release));
        let fed_in = self.fed_in(mode_bits(mode));
        log::debug!(
            "port {}: steering {} ({number}, solo lane {solo}{})",
            self.name,
            mode.describe(),
            if fed_in == mode {
                ""
            } else {
                "; no ledger: read by port"
            }
        );
        if let Err(err) = handle.steer(fed_in, solo) {
            log::warn!("port {}: cannot steer its frames: {err}", self.name);
        }
        self.taken.store(number, Ordering::Release);
        true
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Which steering the port's lanes are fed by (0: none yet). For a
    /// port nothing steers: the switch's mode changes.
    pub(in crate::dataplane) fn changed_at(port: &PortSteering, switch: &ModeSwitch) -> u64 {
        if port.handle.is_none() {
            return switch.changes();
        }
        port.word().change()
    }

    /// Counts what the kernel is told; keeps a ledger, or not.
    #[derive(Debug, Default)]
    struct Told {
        calls: Mutex<Vec<(ReadMode, usize)>>,
        no_ledger: bool,
    }

    impl Steering for Told {
        fn steer(&self, mode: ReadMode, solo: usize) -> std::io::Result<()> {
            self.calls.lock().unwrap().push((mode, solo));
            Ok(())
        }

        fn keeps_order_by_cpu(&self) -> bool {
            !self.no_ledger
        }
    }

    /// A port with a ledger, its solo lane `solo`.
    fn steered(solo: usize) -> (PortSteering, Arc<Told>) {
        steered_with(solo, Told::default())
    }

    fn steered_with(solo: usize, told: Told) -> (PortSteering, Arc<Told>) {
        let told = Arc::new(told);
        let handle: Arc<dyn Steering> = told.clone();
        (PortSteering::new("p", Some(handle), solo, false), told)
    }

    /// Follows with nothing to hold (no lanes here), keeping the solo lane.
    fn follow(port: &PortSteering, switch: &ModeSwitch) -> bool {
        port.follow(switch, || port.solo(), |publish| publish())
    }

    /// A reader hands the port's last steering over.
    fn hand_over(port: &PortSteering) {
        let pending = port.pending().expect("a steering to hand over");
        port.handed_over(pending.change);
        assert_eq!(port.pending(), None);
    }

    #[test]
    fn a_port_is_told_a_mode_once() {
        let switch = ModeSwitch::new(2);
        let (port, told) = steered(1);
        assert!(follow(&port, &switch), "first steered when added");
        let first = changed_at(&port, &switch);
        assert_ne!(first, 0);
        hand_over(&port);
        assert!(!follow(&port, &switch), "told already");
        assert_eq!(changed_at(&port, &switch), first);
        switch.worker_changed(true, |_| {});
        assert!(port.lags(&switch));
        assert!(follow(&port, &switch));
        assert!(changed_at(&port, &switch) > first, "a new steering");
        assert_eq!(
            *told.calls.lock().unwrap(),
            [(ReadMode::ByCpu, 1), (ReadMode::ByPort, 1)]
        );
        assert_eq!(port.mode(&switch), ReadMode::ByPort);
    }

    #[test]
    fn a_lagging_port_keeps_its_own_mode_until_it_follows() {
        let switch = ModeSwitch::new(2);
        let (port, _told) = steered(0);
        follow(&port, &switch);
        let added = changed_at(&port, &switch);
        hand_over(&port);
        switch.worker_changed(true, |_| {});
        switch.worker_changed(false, |_| {});
        switch.worker_changed(true, |_| {});
        assert_eq!(port.mode(&switch), ReadMode::ByCpu, "what the kernel does");
        assert_eq!(changed_at(&port, &switch), added, "not steered since added");
        assert!(port.ask_follow(&switch));
        assert!(!port.ask_follow(&switch), "asked once");
        assert!(follow(&port, &switch));
        assert!(changed_at(&port, &switch) > added);
        assert!(!port.ask_follow(&switch), "follows now");
    }

    #[test]
    fn a_port_is_not_steered_anew_before_its_last_steering_was_handed_over() {
        let switch = ModeSwitch::new(2);
        let (port, told) = steered(1);
        assert!(follow(&port, &switch));
        let first = port
            .pending()
            .expect("pending until a reader hands it over");
        assert_eq!(
            first,
            Pending {
                change: first.change,
                by_cpu: true,
                solo: 1,
                before: Before::Lane(0),
                taken: true,
            },
            "a port starts with every frame in lane 0"
        );
        switch.worker_changed(true, |_| {});
        assert!(port.lags(&switch));
        assert!(!port.ask_follow(&switch), "no use asking yet");
        assert!(!follow(&port, &switch), "the port lags instead");
        assert_eq!(port.pending(), Some(first));
        assert_eq!(told.calls.lock().unwrap().len(), 1);
        port.handed_over(first.change);
        assert!(port.ask_follow(&switch), "now it may follow");
        assert!(follow(&port, &switch));
        let second = port.pending().unwrap();
        assert!(second.change > first.change);
        assert_eq!((second.by_cpu, second.before), (false, Before::EveryLane));
        port.handed_over(second.change);
        switch.worker_changed(false, |_| {});
        assert!(follow(&port, &switch));
        assert_eq!(
            port.pending().unwrap().before,
            Before::Lane(1),
            "the solo lane"
        );
    }

    #[test]
    fn each_steering_by_port_chooses_the_solo_lane_and_the_next_one_drains_it() {
        let switch = ModeSwitch::new(3);
        let (port, told) = steered(0);
        follow(&port, &switch);
        hand_over(&port);
        switch.worker_changed(true, |_| {});
        assert!(port.follow(&switch, || 2, |publish| publish()));
        assert_eq!(port.solo(), 2);
        let pending = port.pending().unwrap();
        assert_eq!((pending.by_cpu, pending.solo), (false, 2));
        port.handed_over(pending.change);
        switch.worker_changed(false, |_| {});
        let asked_by_cpu = std::cell::Cell::new(false);
        assert!(port.follow(
            &switch,
            || {
                asked_by_cpu.set(true);
                1
            },
            |publish| publish()
        ));
        assert!(!asked_by_cpu.get(), "a steering by CPU chooses no lane");
        let pending = port.pending().unwrap();
        assert_eq!(
            (pending.by_cpu, pending.solo, pending.before),
            (true, 2, Before::Lane(2)),
            "the older frames wait in the lane chosen before"
        );
        port.handed_over(pending.change);
        switch.worker_changed(true, |_| {});
        assert!(port.follow(&switch, || 1, |publish| publish()));
        assert_eq!(port.solo(), 1);
        assert_eq!(
            *told.calls.lock().unwrap(),
            [
                (ReadMode::ByCpu, 0),
                (ReadMode::ByPort, 2),
                (ReadMode::ByCpu, 2),
                (ReadMode::ByPort, 1)
            ]
        );
    }

    #[test]
    fn a_port_without_a_ledger_is_read_by_port_also_while_the_switch_reads_by_cpu() {
        let switch = ModeSwitch::new(3);
        let no_ledger = Told {
            no_ledger: true,
            ..Told::default()
        };
        let (port, told) = steered_with(1, no_ledger);
        assert!(follow(&port, &switch), "first steered when added");
        assert_eq!(port.mode(&switch), ReadMode::ByPort, "what the kernel does");
        assert!(!port.by_cpu(&switch));
        assert!(!port.lags(&switch), "it follows the switch's mode its way");
        let first = port.pending().unwrap();
        assert_eq!(
            (first.by_cpu, first.solo, first.before),
            (false, 1, Before::Lane(0)),
            "lane 0 got every frame before: drained first"
        );
        hand_over(&port);
        assert!(!follow(&port, &switch), "told already");

        // Under load it is read where the pairing says, as any port.
        switch.worker_changed(true, |_| {});
        assert!(port.lags(&switch));
        assert!(port.follow(&switch, || 2, |publish| publish()));
        let heavy = port.pending().unwrap();
        assert_eq!(
            (heavy.by_cpu, heavy.solo, heavy.before),
            (false, 2, Before::EveryLane),
            "whatever lane fed it before is drained"
        );
        hand_over(&port);

        // Light again: it stays in the lane it has.
        switch.worker_changed(false, |_| {});
        let asked = std::cell::Cell::new(false);
        assert!(port.follow(
            &switch,
            || {
                asked.set(true);
                0
            },
            |publish| publish()
        ));
        assert!(!asked.get(), "no lane is chosen while light");
        let light = port.pending().unwrap();
        assert_eq!(
            (light.by_cpu, light.solo, light.before),
            (false, 2, Before::Lane(2)),
            "the same lane: nothing to drain"
        );
        assert_eq!(port.mode(&switch), ReadMode::ByPort);
        assert!(!port.lags(&switch));
        assert_eq!(
            *told.calls.lock().unwrap(),
            [
                (ReadMode::ByPort, 1),
                (ReadMode::ByPort, 2),
                (ReadMode::ByPort, 2)
            ],
            "never by CPU"
        );
    }

    #[test]
    fn a_port_without_a_ledger_read_in_arrival_order_is_fed_by_cpu() {
        let switch = ModeSwitch::new(2);
        let told = Arc::new(Told {
            no_ledger: true,
            ..Told::default()
        });
        let handle: Arc<dyn Steering> = told.clone();
        let port = PortSteering::new("p", Some(handle), 1, true);
        assert!(follow(&port, &switch));
        assert_eq!(port.mode(&switch), ReadMode::ByCpu);
        assert_eq!(*told.calls.lock().unwrap(), [(ReadMode::ByCpu, 1)]);
    }

    #[test]
    fn a_word_keeps_its_parts_apart() {
        let last = (1 << NUMBER_BITS) - 1;
        let word = Word::new(last, BY_PORT, BY_CPU, MAX_LANES - 1);
        assert_eq!(
            (word.change(), word.mode(), word.before(), word.solo()),
            (last, BY_PORT, BY_CPU, MAX_LANES - 1)
        );
        let word = Word::new(1, BY_CPU, NOT_STEERED, 0);
        assert_eq!(
            (word.change(), word.mode(), word.before(), word.solo()),
            (1, BY_CPU, NOT_STEERED, 0)
        );
    }

    #[test]
    fn a_reader_waits_only_for_a_steering_the_kernel_has_not_taken() {
        let switch = ModeSwitch::new(2);
        let (port, _told) = steered(0);
        follow(&port, &switch);
        let change = changed_at(&port, &switch);
        port.wait_until_taken(change, &switch);
        assert_eq!(switch.steering_waits(), 0, "taken when `follow` returned");
        // Published, the kernel's call not returned: the reader waits.
        let telling = port.telling.lock().unwrap();
        let waiter = std::thread::scope(|scope| {
            let waiting = scope.spawn(|| port.wait_until_taken(change + 1, &switch));
            while switch.steering_waits() == 0 {
                std::thread::yield_now();
            }
            assert!(!waiting.is_finished());
            drop(telling);
            waiting.join()
        });
        assert!(waiter.is_ok());
    }

    #[test]
    fn a_port_nothing_steers_follows_the_switch_at_once() {
        let switch = ModeSwitch::new(2);
        let port = PortSteering::new("p", None, 0, false);
        switch.worker_changed(true, |_| {});
        assert_eq!(
            (port.mode(&switch), changed_at(&port, &switch)),
            (ReadMode::ByPort, 1)
        );
        assert!(!port.lags(&switch) && !port.ask_follow(&switch));
        assert!(!follow(&port, &switch));
        assert_eq!(port.pending(), None, "nothing to hand over");
    }

    #[test]
    fn being_read_is_remembered_for_a_second_or_two() {
        let (port, _) = steered(0);
        assert!(!port.read_lately());
        port.note_read();
        port.note_read();
        assert!(port.read_lately());
        port.age();
        assert!(port.read_lately(), "read in the second before");
        port.age();
        assert!(!port.read_lately());
    }
}

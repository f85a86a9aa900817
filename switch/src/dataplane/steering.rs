//! Where the kernel puts one port's frames, as the dataplane last told it.
//!
//! Telling the kernel is dear: a packet socket's new fanout program takes
//! effect only after an RCU grace period (`synchronize_net`, inside the
//! `setsockopt`), and a TAP's steering program is loaded and verified anew.
//! So a change of the read mode (see `affinity.rs`) re-steers only the
//! ports read lately (in this or the last housekeeping second); an idle
//! port keeps the steering it had, and follows the mode when it next
//! delivers frames (the worker asks the housekeeping thread, so it never
//! waits for the kernel itself). A switch's cost at a mode change then
//! follows its traffic, not its port count.
//!
//! Because a port may lag behind the switch-wide mode, the hand-over in
//! `lanes.rs` goes by the port's own steering: the mode its lanes are fed
//! in ([`PortSteering::mode`]) and which steering that was
//! ([`PortSteering::changed_at`]). A port without a steering handle (one
//! lane, or lanes the kernel does not steer) follows the switch-wide mode
//! at once: there is nothing to tell.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, PoisonError};

use ports::{ReadMode, Steering};

use super::affinity::ModeSwitch;

/// `mode` before the port was first steered.
const NOT_STEERED: u8 = u8::MAX;

/// Numbers every steering of every port, from 1: a port's number changes
/// with each steering even when two happen between the same two mode
/// changes (a late follower racing a change).
static STEERINGS: AtomicU64 = AtomicU64::new(0);

/// One port's steering: the handle that tells the kernel, and what it was
/// last told.
#[derive(Debug)]
pub(super) struct PortSteering {
    /// The port's name, for the log.
    name: String,
    handle: Option<Arc<dyn Steering>>,
    /// The lane that gets every frame while reading by port.
    solo: usize,
    /// Serializes telling the kernel (a mode change and a late follower).
    telling: Mutex<()>,
    /// The [`ReadMode`] the kernel feeds the lanes in (as `u8`), or
    /// [`NOT_STEERED`].
    mode: AtomicU8,
    /// The number of the port's last steering ([`STEERINGS`]; 0: none).
    changed_at: AtomicU64,
    /// Frames were read from the port in this housekeeping second, and in
    /// the one before (see [`PortSteering::age`]).
    read_lately: AtomicBool,
    read_before: AtomicBool,
    /// A late follow was asked of the housekeeping thread and not done yet.
    follow_asked: AtomicBool,
}

impl PortSteering {
    /// The steering of port `name`, whose solo lane is `solo`; `handle` is
    /// `None` for a port of one lane, or when nothing tells the kernel.
    pub(super) fn new(name: &str, handle: Option<Arc<dyn Steering>>, solo: usize) -> Self {
        PortSteering {
            name: name.to_string(),
            handle,
            solo,
            telling: Mutex::new(()),
            mode: AtomicU8::new(NOT_STEERED),
            changed_at: AtomicU64::new(0),
            read_lately: AtomicBool::new(false),
            read_before: AtomicBool::new(false),
            follow_asked: AtomicBool::new(false),
        }
    }

    /// The mode the port's lanes are fed in: its own for a steered port,
    /// the switch's otherwise.
    pub(super) fn mode(&self, switch: &ModeSwitch) -> ReadMode {
        if self.handle.is_none() {
            return switch.lane_mode();
        }
        match self.mode.load(Ordering::Acquire) {
            m if m == ReadMode::ByPort as u8 => ReadMode::ByPort,
            _ => ReadMode::ByCpu,
        }
    }

    /// Whether frames go to the lane of the CPU they arrive on.
    pub(super) fn by_cpu(&self, switch: &ModeSwitch) -> bool {
        if self.handle.is_none() {
            return switch.by_cpu();
        }
        self.mode(switch) == ReadMode::ByCpu
    }

    /// Which steering the port's lanes are fed by (0: none yet); a reader
    /// that has not handed the port over since it changed hands it over
    /// (see `lanes.rs`). For a port nothing steers: the switch's mode
    /// changes.
    pub(super) fn changed_at(&self, switch: &ModeSwitch) -> u64 {
        if self.handle.is_none() {
            return switch.changes();
        }
        self.changed_at.load(Ordering::Acquire)
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
        self.handle.is_some() && self.mode.load(Ordering::SeqCst) != switch.lane_mode() as u8
    }

    /// Whether to ask the housekeeping thread to make the port follow:
    /// true once until [`PortSteering::follow`] ran.
    pub(super) fn ask_follow(&self, switch: &ModeSwitch) -> bool {
        self.lags(switch) && !self.follow_asked.swap(true, Ordering::AcqRel)
    }

    /// Tells the kernel the switch's current mode unless it was told
    /// already; returns whether it told it. The port's mode and change are
    /// published first: a reader of a lane that gets frames now has seen
    /// them and hands the port over.
    pub(super) fn follow(&self, switch: &ModeSwitch) -> bool {
        let _telling = self.telling.lock().unwrap_or_else(PoisonError::into_inner);
        self.follow_asked.store(false, Ordering::Release);
        let Some(handle) = &self.handle else {
            return false;
        };
        let mode = switch.lane_mode();
        if self.mode.load(Ordering::Acquire) == mode as u8 {
            return false;
        }
        // The mode first: a reader that sees the new change sees the new
        // mode with it.
        self.mode.store(mode as u8, Ordering::SeqCst);
        let number = STEERINGS.fetch_add(1, Ordering::Relaxed) + 1;
        self.changed_at.store(number, Ordering::SeqCst);
        if let Err(err) = handle.steer(mode, self.solo) {
            log::warn!("port {}: cannot steer its frames: {err}", self.name);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts what the kernel is told.
    #[derive(Debug, Default)]
    struct Told(Mutex<Vec<(ReadMode, usize)>>);

    impl Steering for Told {
        fn steer(&self, mode: ReadMode, solo: usize) -> std::io::Result<()> {
            self.0.lock().unwrap().push((mode, solo));
            Ok(())
        }
    }

    fn steered(solo: usize) -> (PortSteering, Arc<Told>) {
        let told = Arc::new(Told::default());
        let handle: Arc<dyn Steering> = told.clone();
        (PortSteering::new("p", Some(handle), solo), told)
    }

    #[test]
    fn a_port_is_told_a_mode_once() {
        let switch = ModeSwitch::new(2);
        let (port, told) = steered(1);
        assert!(port.follow(&switch), "first steered when added");
        let first = port.changed_at(&switch);
        assert_ne!(first, 0);
        assert!(!port.follow(&switch), "told already");
        assert_eq!(port.changed_at(&switch), first);
        switch.worker_changed(true, |_| {});
        assert!(port.lags(&switch));
        assert!(port.follow(&switch));
        assert!(port.changed_at(&switch) > first, "a new steering");
        assert_eq!(
            *told.0.lock().unwrap(),
            [(ReadMode::ByCpu, 1), (ReadMode::ByPort, 1)]
        );
        assert_eq!(port.mode(&switch), ReadMode::ByPort);
    }

    #[test]
    fn a_lagging_port_keeps_its_own_mode_until_it_follows() {
        let switch = ModeSwitch::new(2);
        let (port, _told) = steered(0);
        port.follow(&switch);
        let added = port.changed_at(&switch);
        switch.worker_changed(true, |_| {});
        switch.worker_changed(false, |_| {});
        switch.worker_changed(true, |_| {});
        assert_eq!(port.mode(&switch), ReadMode::ByCpu, "what the kernel does");
        assert_eq!(port.changed_at(&switch), added, "not steered since added");
        assert!(port.ask_follow(&switch));
        assert!(!port.ask_follow(&switch), "asked once");
        assert!(port.follow(&switch));
        assert!(port.changed_at(&switch) > added);
        assert!(!port.ask_follow(&switch), "follows now");
    }

    #[test]
    fn a_port_nothing_steers_follows_the_switch_at_once() {
        let switch = ModeSwitch::new(2);
        let port = PortSteering::new("p", None, 0);
        switch.worker_changed(true, |_| {});
        assert_eq!(
            (port.mode(&switch), port.changed_at(&switch)),
            (ReadMode::ByPort, 1)
        );
        assert!(!port.lags(&switch) && !port.ask_follow(&switch));
        assert!(!port.follow(&switch));
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

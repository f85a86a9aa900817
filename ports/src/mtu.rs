//! A port's MTU, followed while the port lives.
//!
//! The fabric drops a plain frame longer than its egress port's MTU (plus
//! the Ethernet and VLAN header), as the Linux bridge does. A user may
//! change an interface's MTU while it is a port (`ip link set p1 mtu
//! 9000`, or inside a container for a TAP that moved there); the bridge
//! reads the device's MTU for each frame. The switch keeps the MTU it
//! last read in an atomic (one load per frame, as a plain field cost) and
//! asks the kernel again:
//!
//! 1. once a second while the switch forwards (the housekeeping thread's
//!    sweep), when that thread wakes from rest, and for `tapswitch ports`:
//!    an MTU made smaller shows within a second (meanwhile a frame between
//!    the two sizes fails to send on a packet socket, `tx-error`);
//! 2. when a frame is too big for the MTU it knows, at most a hundred
//!    times a second per port (the sweep's lookups aside): an MTU made
//!    larger lets the first larger frame through, unless another frame
//!    too big asked less than 10 ms before the change.
//!
//! Where the interface is looked up:
//! - a packet socket's port: by the index the socket is bound to, through
//!   the socket itself (it keeps the namespace it was made in, also when a
//!   helper opened it in a container's);
//! - a TAP: by the name its interface has now (`TUNGETIFF`), in the
//!   namespace the interface is in now (`TUNGETDEVNETNS`), through a
//!   datagram socket made there, kept while the interface stays. Where the
//!   switch may not enter that namespace (one owned by a user namespace
//!   the switch has no rights in) the port keeps the MTU it was opened
//!   with. Both calls take the kernel's RTNL lock, which the frame path
//!   (rule 2) avoids: it asks by the name and in the namespace last seen,
//!   and looks up afresh only if the interface is not found there.
//!
//! A lookup that fails (the interface is going away) keeps the MTU as it
//! was: the port's health check deals with a port that is gone.
//!
//! A lookup by rule 1 also reads whether the interface is up with its
//! carrier on ([`PortMtu::link_up`]; rule 2's never does): the switch forgets what it learned on a
//! port whose link went down, as the Linux bridge does (see the
//! dataplane's `link_watch.rs`).

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::sys;

/// The least time between two lookups for frames too big for the MTU (rule
/// 2), so a stream of them costs a lookup a hundred times a second, not
/// one per frame.
pub const ASK_AGAIN_AFTER: Duration = Duration::from_millis(10);

/// A port's MTU as last read, and how to read it again. See the module
/// docs.
pub struct PortMtu {
    /// The port's name, for the log line of a change.
    port: String,
    now: AtomicUsize,
    /// Whether the link was up at the last full lookup: [`LINK_UNKNOWN`],
    /// [`LINK_UP`] or [`LINK_DOWN`].
    link: AtomicU8,
    too_big: TooBigGate,
    source: Source,
}

const LINK_UNKNOWN: u8 = 0;
const LINK_UP: u8 = 1;
const LINK_DOWN: u8 = 2;

/// Whether a frame too big for the MTU may ask the kernel again (rule 2):
/// not within [`ASK_AGAIN_AFTER`] of the last one that did. Time is an
/// argument, for the tests.
#[derive(Debug)]
struct TooBigGate {
    since: Instant,
    /// When a frame last asked, in milliseconds after `since`, plus one (0:
    /// never).
    asked_at: AtomicU64,
}

impl TooBigGate {
    fn new(since: Instant) -> TooBigGate {
        TooBigGate {
            since,
            asked_at: AtomicU64::new(0),
        }
    }

    /// True if a frame too big at `now` asks: the first such frame, or
    /// one [`ASK_AGAIN_AFTER`] after the last that asked. Of callers at the
    /// same moment, one is let through.
    fn opens_at(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.since).as_millis();
        let now_ms = u64::try_from(elapsed).unwrap_or(u64::MAX - 1) + 1;
        let asked = self.asked_at.load(Ordering::Relaxed);
        let gap = u64::try_from(ASK_AGAIN_AFTER.as_millis()).unwrap_or(u64::MAX);
        if asked != 0 && now_ms.saturating_sub(asked) < gap {
            return false;
        }
        self.asked_at
            .compare_exchange(asked, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// How the interface is found again.
enum Source {
    /// The port's packet socket and the index it is bound to.
    Packet { fd: Arc<OwnedFd>, ifindex: u32 },
    /// A TAP queue, and where its interface was last seen.
    Tap {
        fd: Arc<OwnedFd>,
        there: Mutex<Option<TapWhere>>,
    },
}

/// Where a TAP's interface was last seen: its namespace (device and inode
/// numbers; zeros if the kernel would not say), its name there, and a
/// datagram socket made there for interface ioctls, or none if the switch
/// may not enter it (not tried again while the interface stays there;
/// frames too big then keep the MTU as it was, and only the sweep looks
/// again).
struct TapWhere {
    namespace: (u64, u64),
    name: String,
    socket: Option<OwnedFd>,
}

impl PortMtu {
    /// The MTU of the interface packet socket `fd` is bound to, `mtu` now.
    /// An unbound socket (no index) keeps `mtu` for good.
    pub(crate) fn of_packet_socket(port: &str, fd: Arc<OwnedFd>, mtu: usize) -> PortMtu {
        let ifindex = sys::packet::bound_ifindex(fd.as_fd()).unwrap_or(0);
        PortMtu::new(port, mtu, Source::Packet { fd, ifindex })
    }

    /// The MTU of TAP queue `fd`'s interface, `mtu` now.
    pub(crate) fn of_tap(port: &str, fd: Arc<OwnedFd>, mtu: usize) -> PortMtu {
        let there = Mutex::new(None);
        PortMtu::new(port, mtu, Source::Tap { fd, there })
    }

    fn new(port: &str, mtu: usize, source: Source) -> PortMtu {
        PortMtu {
            port: port.to_string(),
            now: AtomicUsize::new(mtu),
            link: AtomicU8::new(LINK_UNKNOWN),
            too_big: TooBigGate::new(Instant::now()),
            source,
        }
    }

    /// The MTU as last read.
    #[inline]
    pub fn get(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }

    /// Asks the kernel for the MTU and takes it (rule 1), and whether the
    /// link is up; if the lookup fails, the MTU as last read.
    pub fn refresh(&self) -> usize {
        let asked = self.ask(true).map(|(mtu, up)| {
            if let Some(up) = up {
                let link = if up { LINK_UP } else { LINK_DOWN };
                self.link.store(link, Ordering::Relaxed);
            }
            mtu
        });
        self.take(asked)
    }

    /// Whether the interface was up with its carrier on at the last
    /// [`PortMtu::refresh`] that could tell; `None` if none could.
    pub fn link_up(&self) -> Option<bool> {
        match self.link.load(Ordering::Relaxed) {
            LINK_UP => Some(true),
            LINK_DOWN => Some(false),
            _ => None,
        }
    }

    /// [`PortMtu::refresh`] for a frame too big for the MTU as last read
    /// (rule 2), unless another such frame asked less than
    /// [`ASK_AGAIN_AFTER`] ago (then the MTU as last read). Of callers at
    /// the same moment, one asks. Called from the frame path, it does not
    /// take the kernel's RTNL lock (which a TAP's `TUNGETIFF` does, and
    /// which creating or deleting a namespace holds for a while) unless the
    /// TAP's interface moved or was renamed since it was last looked up.
    pub fn refresh_for_too_big(&self) -> usize {
        if !self.too_big.opens_at(Instant::now()) {
            return self.get();
        }
        match self.ask_where_last_seen() {
            Some(mtu) => self.take(Ok(mtu)),
            // The MTU alone: the link's carrier (ETHTOOL_GLINK) takes the
            // kernel's RTNL lock, and only the sweep needs it.
            None => self.take(self.ask(false).map(|(mtu, _)| mtu)),
        }
    }

    /// Takes the MTU a lookup found, and says so if it changed.
    fn take(&self, asked: std::io::Result<usize>) -> usize {
        match asked {
            Ok(mtu) => {
                let before = self.now.swap(mtu, Ordering::Relaxed);
                if before != mtu {
                    log::info!("port {}: MTU {before} -> {mtu}", self.port);
                }
                mtu
            }
            Err(err) => {
                log::debug!("port {}: MTU not read again: {err}", self.port);
                self.get()
            }
        }
    }

    /// A TAP's MTU asked by the name and in the namespace its interface
    /// had at the last full lookup, or the MTU as last read if the switch
    /// may not look there (`None`: not a TAP, not looked up yet, a full
    /// lookup under way, or not found there). Should another interface
    /// have taken that name since, its MTU is taken until the next sweep's
    /// full lookup.
    fn ask_where_last_seen(&self) -> Option<usize> {
        let Source::Tap { there, .. } = &self.source else {
            return None;
        };
        let there = there.try_lock().ok()?;
        let seen = there.as_ref()?;
        match &seen.socket {
            Some(socket) => sys::interface_mtu(socket.as_fd(), &seen.name).ok(),
            None => Some(self.get()),
        }
    }

    /// The interface's MTU, and with `link` whether its link is up (`None`
    /// if not asked, or if that could not be read: the MTU still counts).
    fn ask(&self, link: bool) -> std::io::Result<(usize, Option<bool>)> {
        let read = |socket: std::os::fd::BorrowedFd<'_>, name: &str| {
            let mtu = sys::interface_mtu(socket, name)?;
            let up = link
                .then(|| sys::interface_link_up(socket, name))
                .and_then(|up| {
                    up.inspect_err(|err| log::debug!("port {}: link not read: {err}", self.port))
                        .ok()
                });
            Ok((mtu, up))
        };
        match &self.source {
            Source::Packet { fd, ifindex } => {
                let name = sys::interface_name(fd.as_fd(), *ifindex)?;
                read(fd.as_fd(), &name)
            }
            Source::Tap { fd, there } => {
                let name = sys::tun::tap_name(fd.as_fd())?;
                let netns = match sys::tun::tap_namespace(fd.as_fd()) {
                    Ok(netns) => std::fs::File::from(netns),
                    Err(err) => {
                        // Not ours to look into (EPERM: a namespace owned
                        // by a user namespace the switch has no rights
                        // in): frames too big do not ask again.
                        let closed = TapWhere {
                            namespace: (0, 0),
                            name,
                            socket: None,
                        };
                        *there.lock().unwrap_or_else(PoisonError::into_inner) = Some(closed);
                        return Err(err);
                    }
                };
                let meta = netns.metadata()?;
                let namespace = (meta.dev(), meta.ino());
                let mut there = there.lock().unwrap_or_else(PoisonError::into_inner);
                match there.as_mut() {
                    Some(seen) if seen.namespace == namespace => seen.name = name,
                    _ => {
                        // In the asking thread's own namespace no thread
                        // need enter it (a thread's stack stays cached).
                        let here = std::fs::metadata("/proc/thread-self/ns/net")
                            .is_ok_and(|own| (own.dev(), own.ino()) == namespace);
                        let socket = if here {
                            sys::control_socket()
                        } else {
                            sys::namespace::control_socket_in(netns.as_fd())
                        };
                        let socket = socket
                            .inspect_err(|err| {
                                log::debug!("port {}: MTU not followed: {err}", self.port);
                            })
                            .ok();
                        *there = Some(TapWhere {
                            namespace,
                            name,
                            socket,
                        });
                    }
                }
                let seen = there.as_ref().expect("just set");
                match &seen.socket {
                    Some(socket) => read(socket.as_fd(), &seen.name),
                    None => Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
                }
            }
        }
    }
}

impl fmt::Debug for PortMtu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.source {
            Source::Packet { .. } => "packet",
            Source::Tap { .. } => "tap",
        };
        write!(f, "PortMtu({} {kind} {})", self.port, self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `ip ARGS` in the calling thread's network namespace.
    fn ip(args: &[&str]) {
        let status = std::process::Command::new("ip").args(args).status();
        assert!(status.is_ok_and(|s| s.success()), "ip {args:?}");
    }

    fn as_root(test: &str) -> bool {
        let (uid, _) = sys::namespace::effective_ids();
        if uid != 0 {
            eprintln!("skipping {test}: veths and TAPs need root");
        }
        uid == 0
    }

    /// Runs `f` as root in a thread of its own, in a network namespace of
    /// its own (what it makes there goes with it); skips test `test` with
    /// a line when not root.
    fn in_a_namespace_of_its_own(test: &str, f: impl FnOnce() + Send + 'static) {
        if !as_root(test) {
            return;
        }
        std::thread::spawn(|| {
            sys::namespace::unshare_thread_net().expect("a new network namespace");
            f();
        })
        .join()
        .unwrap_or_else(|_| panic!("{test} failed"));
    }

    #[test]
    fn frames_too_big_ask_at_most_once_in_a_while() {
        let start = Instant::now();
        let gate = TooBigGate::new(start);
        let at = |ms| start + Duration::from_millis(ms);
        assert!(gate.opens_at(start), "the first one asks");
        assert!(!gate.opens_at(start), "the same moment, once");
        assert!(!gate.opens_at(at(9)));
        assert!(gate.opens_at(at(10)));
        assert!(!gate.opens_at(at(19)));
        assert!(gate.opens_at(at(500)));
        assert!(!gate.opens_at(at(300)), "a clock seen going back waits");
    }

    #[test]
    fn a_packet_socket_port_reads_its_interfaces_mtu_again_also_after_a_rename() {
        in_a_namespace_of_its_own("a_packet_socket_port_reads_...", || {
            ip(&["link", "add", "mt0", "type", "veth", "peer", "name", "mt1"]);
            let port = crate::packet::open_lanes("mt0", 1).expect("opening mt0");
            assert_eq!(port.tx.mtu(), 1500);
            ip(&["link", "set", "mt0", "mtu", "9000"]);
            assert_eq!(port.tx.mtu(), 1500, "as last read until asked");
            assert_eq!(port.tx.refresh_mtu(), 9000);
            assert_eq!(port.tx.mtu(), 9000);
            ip(&["link", "set", "mt0", "name", "mt2"]);
            ip(&["link", "set", "mt2", "mtu", "4000"]);
            assert_eq!(port.tx.refresh_mtu_for_too_big(), 4000);
            ip(&["link", "set", "mt2", "mtu", "3000"]);
            std::thread::sleep(ASK_AGAIN_AFTER * 2);
            assert_eq!(port.tx.refresh_mtu_for_too_big(), 3000);
            ip(&["link", "del", "mt2"]);
            assert_eq!(port.tx.refresh_mtu(), 3000, "gone: kept as it was");
        });
    }

    /// Whether full lookups of `port` read `want` within 3 s (a veth's
    /// carrier follows its peer at once, but a test must not count on
    /// timing).
    fn link_reads(port: &crate::OpenedPort, want: bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            port.tx.refresh_mtu();
            if port.tx.link_up() == Some(want) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_full_lookup_reads_whether_the_link_is_up_and_running() {
        in_a_namespace_of_its_own("a_full_lookup_reads_whether_the_link_...", || {
            ip(&["link", "add", "ml0", "type", "veth", "peer", "name", "ml1"]);
            ip(&["link", "set", "ml0", "up"]);
            let port = crate::packet::open_lanes("ml0", 1).expect("opening ml0");
            assert_eq!(port.tx.link_up(), None, "not read yet");
            port.tx.refresh_mtu();
            assert_eq!(port.tx.link_up(), Some(false), "its peer is down");
            ip(&["link", "set", "ml1", "up"]);
            assert!(link_reads(&port, true), "its peer up");
            ip(&["link", "set", "ml1", "down"]);
            assert_eq!(port.tx.link_up(), Some(true), "as last read");
            assert!(link_reads(&port, false), "its peer down again");
            ip(&["link", "set", "ml1", "up"]);
            assert!(link_reads(&port, true));
            ip(&["link", "set", "ml0", "down"]);
            assert!(link_reads(&port, false), "its own end set down");
            ip(&["link", "del", "ml0"]);
            port.tx.refresh_mtu();
            assert_eq!(port.tx.link_up(), Some(false), "gone: kept as it was");
        });
    }

    #[test]
    fn a_tap_the_switch_may_not_look_into_keeps_its_mtu_without_asking_again() {
        in_a_namespace_of_its_own("a_tap_the_switch_may_not_look_into_...", || {
            let fd = Arc::new(sys::tun::open_tap("mtap1", false).expect("making mtap1"));
            let followed = PortMtu::of_tap("mtap1", fd, 1500);
            ip(&["link", "set", "mtap1", "mtu", "2000"]);
            // Without CAP_NET_ADMIN the kernel will not name the TAP's
            // namespace (rootless mode, where it is a container's).
            sys::namespace::become_nobody_in_this_thread().expect("becoming nobody");
            assert_eq!(followed.refresh(), 1500, "kept as it was");
            let Source::Tap { there, .. } = &followed.source else {
                unreachable!("a TAP");
            };
            assert!(
                there
                    .lock()
                    .unwrap()
                    .as_ref()
                    .is_some_and(|seen| seen.socket.is_none()),
                "remembered as closed"
            );
            assert_eq!(
                followed.ask_where_last_seen(),
                Some(1500),
                "a frame too big keeps it, with no full lookup"
            );
        });
    }

    #[test]
    fn a_tap_port_reads_its_interfaces_mtu_in_the_namespace_it_moved_to() {
        if !as_root("a_tap_port_reads_...") {
            return;
        }
        let elsewhere = format!("tsw-mtu-{}", std::process::id());
        ip(&["netns", "add", &elsewhere]);
        let moved = std::thread::spawn({
            let elsewhere = elsewhere.clone();
            move || {
                sys::namespace::unshare_thread_net().expect("a new network namespace");
                let port = crate::tap::open("mtap0").expect("making mtap0").port;
                assert_eq!(port.tx.mtu(), 1500);
                ip(&["link", "set", "mtap0", "mtu", "2000"]);
                assert_eq!(port.tx.refresh_mtu(), 2000, "here");
                ip(&["link", "set", "mtap0", "netns", &elsewhere]);
                let there = ["-n", elsewhere.as_str()];
                ip(&[&there[..], &["link", "set", "mtap0", "name", "eth0"]].concat());
                ip(&[&there[..], &["link", "set", "eth0", "mtu", "9000"]].concat());
                assert_eq!(port.tx.refresh_mtu(), 9000, "there, renamed");
                ip(&[&there[..], &["link", "set", "eth0", "mtu", "1280"]].concat());
                assert_eq!(port.tx.refresh_mtu(), 1280, "there, the same socket");
                ip(&[&there[..], &["link", "set", "eth0", "mtu", "1400"]].concat());
                assert_eq!(
                    port.tx.refresh_mtu_for_too_big(),
                    1400,
                    "by the name seen last"
                );
                ip(&[&there[..], &["link", "set", "eth0", "name", "eth1"]].concat());
                ip(&[&there[..], &["link", "set", "eth1", "mtu", "1300"]].concat());
                std::thread::sleep(ASK_AGAIN_AFTER * 2);
                assert_eq!(
                    port.tx.refresh_mtu_for_too_big(),
                    1300,
                    "renamed since: looked up again"
                );
            }
        })
        .join();
        ip(&["netns", "del", &elsewhere]);
        moved.expect("the TAP test failed");
    }
}

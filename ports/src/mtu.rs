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
//!    sweep): an MTU made smaller shows within a second (meanwhile a frame
//!    between the two sizes fails to send on a packet socket, `tx-error`);
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
//!   switch may not enter that namespace (rootless mode, a container's
//!   own user namespace) the port keeps the MTU it was opened with.
//!
//! A lookup that fails (the interface is going away) keeps the MTU as it
//! was: the port's health check deals with a port that is gone.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
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
    /// When a frame too big for the MTU last asked the kernel, in
    /// milliseconds since the process first asked, plus one (0: never).
    too_big_asked_at: AtomicU64,
    source: Source,
}

/// How the interface is found again.
enum Source {
    /// The port's packet socket and the index it is bound to.
    Packet { fd: Arc<OwnedFd>, ifindex: u32 },
    /// A TAP queue, and the namespace its interface was last seen in (its
    /// device and inode numbers) with a socket made there, or none if the
    /// switch may not enter it (not tried again while the interface stays).
    Tap {
        fd: Arc<OwnedFd>,
        there: Mutex<Option<NamespaceSocket>>,
    },
}

/// A datagram socket for interface ioctls in a namespace, and that
/// namespace.
struct NamespaceSocket {
    namespace: (u64, u64),
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
            too_big_asked_at: AtomicU64::new(0),
            source,
        }
    }

    /// The MTU as last read.
    #[inline]
    pub fn get(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }

    /// Asks the kernel for the MTU and takes it (rule 1); if the lookup
    /// fails, the MTU as last read.
    pub fn refresh(&self) -> usize {
        match self.ask() {
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

    /// [`PortMtu::refresh`] for a frame too big for the MTU as last read
    /// (rule 2), unless another such frame asked less than
    /// [`ASK_AGAIN_AFTER`] ago (then the MTU as last read). Of callers at
    /// the same moment, one asks.
    pub fn refresh_for_too_big(&self) -> usize {
        let now_ms = since_epoch_ms(Instant::now()) + 1;
        let asked = self.too_big_asked_at.load(Ordering::Relaxed);
        let gap = u64::try_from(ASK_AGAIN_AFTER.as_millis()).unwrap_or(u64::MAX);
        if (asked != 0 && now_ms.saturating_sub(asked) < gap)
            || self
                .too_big_asked_at
                .compare_exchange(asked, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return self.get();
        }
        self.refresh()
    }

    fn ask(&self) -> std::io::Result<usize> {
        match &self.source {
            Source::Packet { fd, ifindex } => {
                let name = sys::interface_name(fd.as_fd(), *ifindex)?;
                sys::interface_mtu(fd.as_fd(), &name)
            }
            Source::Tap { fd, there } => {
                let name = sys::tun::tap_name(fd.as_fd())?;
                let netns = std::fs::File::from(sys::tun::tap_namespace(fd.as_fd())?);
                let meta = netns.metadata()?;
                let id = (meta.dev(), meta.ino());
                let mut there = there.lock().unwrap_or_else(PoisonError::into_inner);
                if there.as_ref().is_none_or(|seen| seen.namespace != id) {
                    let socket = sys::namespace::control_socket_in(netns.as_fd())
                        .inspect_err(|err| {
                            log::debug!("port {}: MTU not followed: {err}", self.port);
                        })
                        .ok();
                    *there = Some(NamespaceSocket {
                        namespace: id,
                        socket,
                    });
                }
                match there.as_ref().and_then(|seen| seen.socket.as_ref()) {
                    Some(socket) => sys::interface_mtu(socket.as_fd(), &name),
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

/// Milliseconds since the first time this process asked.
fn since_epoch_ms(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

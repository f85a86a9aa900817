//! epoll_ctl(2) for an fd watched level-triggered in an epoll instance
//! someone else made (a worker's `mio::Poll`, which registers every fd
//! edge-triggered).

use std::io;
use std::os::fd::RawFd;

use super::retry;

/// Adds `fd` to epoll instance `epoll`, readable and level-triggered, its
/// events carrying `token` (as `mio` reads tokens: the event's `u64`).
pub(crate) fn add_readable_level_triggered(epoll: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: epoll_ctl reads the event we pass, borrowed across the call;
    // the two fds are plain integers the kernel checks (EBADF, EINVAL), and
    // it keeps no pointer of ours.
    retry(|| unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) })?;
    Ok(())
}

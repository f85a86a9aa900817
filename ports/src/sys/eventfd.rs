//! eventfd(2): a counter the kernel makes waitable, so an in-memory port
//! can wake a worker's epoll as a socket does.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::retry;

/// A non-blocking eventfd starting at zero.
pub(crate) fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain eventfd(2) call; the result is checked before use.
    let fd = retry(|| unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by eventfd(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to the counter: the fd becomes (or stays) readable, and
/// edge-triggered waiters get a new event.
pub(crate) fn signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes the 8 bytes of `one`, borrowed across the call.
    retry(|| unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) })?;
    Ok(())
}

/// Resets the counter to zero (nothing to do when it already is).
pub(crate) fn clear(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut count: u64 = 0;
    // SAFETY: reads at most 8 bytes into `count`, borrowed across the call.
    match retry(|| unsafe { libc::read(fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) }) {
        Err(err) if err.kind() != io::ErrorKind::WouldBlock => Err(err),
        _ => Ok(()),
    }
}

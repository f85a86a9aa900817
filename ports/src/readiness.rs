//! Waiting for a lane level-triggered. The switch's workers wait for their
//! lanes in a `mio::Poll`, which watches every fd edge-triggered: a reader
//! must then read until the lane is empty, since a frame left behind raises
//! no new event. A TAP gives one frame per `readv`, so that costs a system
//! call per read that only returns `EAGAIN`, twice per ping round trip; a
//! packet socket's `recvmmsg` that finds one frame tries a second message
//! header to learn the same. Watched level-triggered, a lane is reported
//! again as long as frames wait, and a read may stop after one frame
//! ([`crate::ReadDepth`]).

use std::io;
use std::os::fd::RawFd;

use crate::sys;

/// Adds `fd` to the epoll instance `epoll` (a `mio::Poll`'s, see
/// `AsRawFd`), readable and level-triggered, with `token` as the events'
/// `mio::Token`. Remove it with `mio::Registry::deregister` as any fd. Only
/// for fds whose [`crate::PortRx::level_triggered`] says so: any other
/// could keep epoll returning at once.
pub fn watch_level_triggered(epoll: RawFd, fd: RawFd, token: usize) -> io::Result<()> {
    sys::epoll::add_readable_level_triggered(epoll, fd, token as u64)
}

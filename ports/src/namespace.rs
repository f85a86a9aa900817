//! What rootless mode needs from the kernel beyond ports: run a helper
//! inside a user's user and network namespaces, learn who owns a namespace,
//! and hand descriptors from one process to another (SCM_RIGHTS).
//!
//! A packet socket stays bound to the network namespace it was made in, so
//! a helper that joined a container's namespaces can open one there and
//! pass it to a switch that stays in the user's own namespace (as
//! slirp4netns passes its TAP descriptor).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::process::Command;

use crate::sys::namespace as sys;

/// The most descriptors [`send_fds`] passes in one message.
pub const MAX_FDS: usize = sys::MAX_FDS;

/// Where a child process goes before it runs its program: a new session,
/// a user namespace, a network namespace (each joined by descriptor, or
/// made new).
#[derive(Debug, Default)]
pub struct Enter {
    plan: sys::Plan,
}

impl Enter {
    pub fn new() -> Enter {
        Enter::default()
    }

    /// Detach from the caller's terminal and process group (`setsid`), so
    /// a long-lived helper outlives the command that started it.
    pub fn new_session(mut self) -> Enter {
        self.plan.new_session = true;
        self
    }

    /// Join the user namespace `userns` refers to.
    pub fn join_user(mut self, userns: OwnedFd) -> Enter {
        self.plan.userns = Some(userns);
        self
    }

    /// Make a new user namespace (its uid map is the parent's to write).
    pub fn new_user(mut self) -> Enter {
        self.plan.new_userns = true;
        self
    }

    /// Make a new mount namespace (after the user namespace, which then owns it).
    pub fn new_mount(mut self) -> Enter {
        self.plan.new_mountns = true;
        self
    }

    /// Join the network namespace `netns` refers to.
    pub fn join_net(mut self, netns: OwnedFd) -> Enter {
        self.plan.netns = Some(netns);
        self
    }

    /// Make a new network namespace (with only `lo`).
    pub fn new_net(mut self) -> Enter {
        self.plan.new_netns = true;
        self
    }

    /// Makes `command`'s child do all this between fork and exec.
    pub fn apply(self, command: &mut Command) {
        sys::spawn_plan(command, self.plan);
    }
}

/// The user namespace that owns namespace `ns` (a `/proc/PID/ns/*` file or
/// a bind mount of one).
pub fn owning_userns(ns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    sys::owning_userns(ns)
}

/// The uid that created the user namespace `userns` (0 for the initial one).
pub fn owner_uid(userns: BorrowedFd<'_>) -> io::Result<u32> {
    sys::owner_uid(userns)
}

/// This process's effective uid and gid.
pub fn effective_ids() -> (u32, u32) {
    sys::effective_ids()
}

/// Sends `data` (not empty) and up to [`MAX_FDS`] descriptors on a Unix socket.
pub fn send_fds(socket: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    sys::send_fds(socket, data, fds)
}

/// Receives one message and its descriptors; 0 bytes at end of stream.
pub fn recv_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    sys::recv_fds(socket, buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_passed_descriptor_is_the_same_open_file() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut pipe_rx, mut pipe_tx) = std::io::pipe().unwrap();
        send_fds(a.as_fd(), b"fd", &[pipe_tx.as_fd()]).unwrap();
        let mut buf = [0u8; 8];
        let (n, fds) = recv_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"fd");
        assert_eq!(fds.len(), 1);
        let mut passed = std::fs::File::from(fds.into_iter().next().unwrap());
        passed.write_all(b"hello").unwrap();
        drop(passed);
        pipe_tx.write_all(b"!").unwrap();
        drop(pipe_tx);
        let mut got = String::new();
        pipe_rx.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello!");
    }

    #[test]
    fn a_message_without_descriptors_and_the_end_of_stream() {
        let (a, b) = UnixStream::pair().unwrap();
        send_fds(a.as_fd(), b"none", &[]).unwrap();
        drop(a);
        let mut buf = [0u8; 8];
        let (n, fds) = recv_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"none"[..], 0));
        assert_eq!(recv_fds(b.as_fd(), &mut buf).unwrap().0, 0);
        assert!(
            send_fds(b.as_fd(), b"", &[]).is_err(),
            "empty data is refused"
        );
    }

    #[test]
    fn this_processes_network_namespace_is_owned_by_its_user_namespace() {
        let netns = std::fs::File::open("/proc/self/ns/net").unwrap();
        let userns = std::fs::File::open("/proc/self/ns/user").unwrap();
        let owner = owning_userns(netns.as_fd()).unwrap();
        let (a, b) = (
            std::fs::metadata(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&owner)
            ))
            .unwrap(),
            userns.metadata().unwrap(),
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
        // Who made our user namespace: root for the initial one; otherwise
        // someone, as seen from here.
        let _ = owner_uid(owner.as_fd()).unwrap();
    }
}

//! Namespaces (man 7 namespaces, ioctl_ns(2)) and passing descriptors
//! between processes (SCM_RIGHTS, man 7 unix): what rootless mode needs to
//! open sockets inside a user's namespaces and hand them to the switch.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::retry;

/// `_IO(0xb7, 0x1)`: the user namespace owning a namespace (ioctl_ns(2)).
const NS_GET_USERNS: libc::Ioctl = 0xb701;
/// `_IO(0xb7, 0x4)`: the uid that created a user namespace.
const NS_GET_OWNER_UID: libc::Ioctl = 0xb704;

/// The user namespace that owns the namespace `ns` refers to.
pub(crate) fn owning_userns(ns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: NS_GET_USERNS takes no argument and returns a new descriptor,
    // checked before use.
    let raw = retry(|| unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS) })?;
    // SAFETY: the kernel just opened `raw` for us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The uid (as seen from the caller's user namespace) that created the user
/// namespace `userns` refers to.
pub(crate) fn owner_uid(userns: BorrowedFd<'_>) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer, which
    // points at a live local.
    retry(|| unsafe {
        libc::ioctl(
            userns.as_raw_fd(),
            NS_GET_OWNER_UID,
            &mut uid as *mut libc::uid_t,
        )
    })?;
    Ok(uid)
}

/// The effective uid and gid of this process.
pub(crate) fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// A datagram socket for interface ioctls in network namespace `netns`,
/// made by a short-lived thread that enters it (the calling thread and
/// the rest of the process stay where they are; a socket keeps the
/// namespace it was made in).
pub(crate) fn control_socket_in(netns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let netns = netns.try_clone_to_owned()?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns(2) takes a descriptor we own and a flag, and
                // touches no memory; joining a network namespace concerns
                // the calling thread alone, which ends right after.
                retry(|| unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) })?;
                super::control_socket()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

/// Moves the calling thread, and only it, into a new network namespace
/// with only `lo` (tests make their interfaces there); the namespace goes
/// away with the thread and whatever else still holds it (its sockets).
#[cfg(test)]
pub(crate) fn unshare_thread_net() -> io::Result<()> {
    // SAFETY: unshare(2) takes flags only and touches no memory; a new
    // network namespace concerns the calling thread alone.
    retry(|| unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
    Ok(())
}

/// Makes the calling thread, and only it, `nobody` (uid and gid 65534),
/// which drops all its capabilities: the raw system calls, not libc's,
/// which would change every thread of the process.
#[cfg(test)]
pub(crate) fn become_nobody_in_this_thread() -> io::Result<()> {
    const NOBODY: libc::c_long = 65534;
    // SAFETY: setresgid(2) and setresuid(2) take integers and touch no
    // memory; made directly, they change the calling thread's credentials
    // only. The group first, while the thread may still change it.
    retry(|| unsafe { libc::syscall(libc::SYS_setresgid, NOBODY, NOBODY, NOBODY) })?;
    // SAFETY: as above.
    retry(|| unsafe { libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY) })?;
    Ok(())
}

/// Where a child goes between `fork` and `exec` (see [`spawn_plan`]).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) new_session: bool,
    pub(crate) userns: Option<OwnedFd>,
    pub(crate) new_userns: bool,
    pub(crate) new_mountns: bool,
    pub(crate) netns: Option<OwnedFd>,
    pub(crate) new_netns: bool,
}

/// Makes `command`'s child carry out `plan` right after `fork`: start a
/// session, join (or create) a user namespace, optionally make a mount
/// namespace, then join (or create) a network namespace. In that order: joining a network namespace needs
/// CAP_SYS_ADMIN in the user namespace the child is in by then.
pub(crate) fn spawn_plan(command: &mut Command, plan: Plan) {
    let Plan {
        new_session,
        userns,
        new_userns,
        new_mountns,
        netns,
        new_netns,
    } = plan;
    let join = |fd: &Option<OwnedFd>| fd.as_ref().map(|fd| fd.as_raw_fd());
    let (userns_raw, netns_raw): (Option<RawFd>, Option<RawFd>) = (join(&userns), join(&netns));
    let enter = move || -> io::Result<()> {
        // The descriptors live as long as the closure (owned by `command`).
        let _keep = (&userns, &netns);
        if new_session {
            // SAFETY: setsid(2) is async-signal-safe and touches no memory.
            retry(|| unsafe { libc::setsid() })?;
        }
        if let Some(fd) = userns_raw {
            // SAFETY: setns(2) on a descriptor the closure keeps open; the
            // child is single-threaded here, as joining a user namespace needs.
            retry(|| unsafe { libc::setns(fd, libc::CLONE_NEWUSER) })?;
        } else if new_userns {
            // SAFETY: unshare(2) is async-signal-safe and touches no memory.
            retry(|| unsafe { libc::unshare(libc::CLONE_NEWUSER) })?;
        }
        if new_mountns {
            // SAFETY: unshare(2) is async-signal-safe and touches no memory.
            retry(|| unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
        }
        if let Some(fd) = netns_raw {
            // SAFETY: as above, on a descriptor the closure keeps open.
            retry(|| unsafe { libc::setns(fd, libc::CLONE_NEWNET) })?;
        } else if new_netns {
            // SAFETY: unshare(2) is async-signal-safe and touches no memory.
            retry(|| unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (setsid, setns, unshare); it allocates
    // nothing and takes no lock (io::Error of an errno does not allocate).
    unsafe {
        command.pre_exec(enter);
    }
}

/// The most descriptors one message carries.
pub(crate) const MAX_FDS: usize = 16;

/// Sends `data` with `fds` attached (SCM_RIGHTS) on a Unix socket.
pub(crate) fn send_fds(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    if fds.len() > MAX_FDS || data.is_empty() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let payload = std::mem::size_of_val(raw.as_slice());
    let mut control = [0u64; 1 + (MAX_FDS * 4 + 16) / 8];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
        // SAFETY: `control` is aligned for cmsghdr (u64s) and at least
        // CMSG_SPACE(payload) bytes long, so the first header and its data
        // fit; CMSG_FIRSTHDR is non-null because msg_controllen is non-zero.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload as u32) as usize;
            std::ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(cmsg).cast(), raw.len());
        }
    }
    // SAFETY: `msg` points at `iov` and `control`, both alive for the call;
    // the kernel only reads them.
    retry(|| unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })?;
    Ok(())
}

/// Receives one message into `buf` and the descriptors attached to it
/// (close-on-exec). Returns the bytes read (0 at end of stream).
pub(crate) fn recv_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = [0u64; 1 + (MAX_FDS * 4 + 16) / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` points at `iov` (into `buf`) and `control`, both alive and
    // writable for their whole stated lengths during the call.
    let n =
        retry(|| unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) })?;
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` and set msg_controllen; the CMSG
    // macros walk only within it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and within `control` (CMSG_FIRSTHDR/NXTHDR).
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) only computes a size.
            let data_len = header.cmsg_len - unsafe { libc::CMSG_LEN(0) } as usize;
            let count = data_len / std::mem::size_of::<RawFd>();
            // SAFETY: CMSG_DATA points at `count` descriptors the kernel wrote
            // (possibly unaligned, hence read_unaligned).
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: i < count, within the message's data; each
                // descriptor was installed for us by the kernel and is owned
                // by nobody else.
                fds.push(unsafe { OwnedFd::from_raw_fd(data.add(i).read_unaligned()) });
            }
        }
        // SAFETY: `msg` and `cmsg` are the header and a header within it.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors were cut off (MSG_CTRUNC)"));
    }
    Ok((n as usize, fds))
}

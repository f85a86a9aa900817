//! Thin wrappers over the kernel interfaces the ports use. Every `unsafe`
//! block of the project lives under this module; each says why it is sound.
//! Everything returned is owned (`OwnedFd`) or plain data, so no raw fd can
//! leak past an early return.

#![allow(unsafe_code)]

pub(crate) mod bpf;
pub(crate) mod bpf_map;
pub(crate) mod code_pages;
pub(crate) mod cpu;
pub(crate) mod epoll;
pub(crate) mod eventfd;
pub(crate) mod heap;
pub(crate) mod namespace;
pub(crate) mod packet;
pub(crate) mod pages;
pub(crate) mod rlimit;
pub(crate) mod tun;
pub(crate) mod udp_gso;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `IFNAMSIZ` minus the terminating NUL.
pub(crate) const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Which lane (fanout member, TAP queue) gets a frame the container sends
/// in `mode`: the lane of the CPU it is sent on (`None`), or always lane
/// `solo`. The kernel takes the result modulo the number of lanes.
pub(crate) fn steering_target(mode: crate::ReadMode, solo: usize) -> Option<u32> {
    match mode {
        crate::ReadMode::ByCpu => None,
        crate::ReadMode::OneLane | crate::ReadMode::ByPort => {
            Some(u32::try_from(solo).unwrap_or(0))
        }
    }
}

/// Whether `fd` is readable right now.
pub(crate) fn readable(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, borrowed across the call; zero timeout.
    let ready = retry(|| unsafe { libc::poll(&mut pollfd, 1, 0) })?;
    Ok(ready == 1 && pollfd.revents & libc::POLLIN != 0)
}

/// Waits for an RCU grace period: every CPU has left the kernel sections
/// it was in, so none still acts on a pointer the kernel swapped before
/// (`membarrier(MEMBARRIER_CMD_GLOBAL)` is `synchronize_rcu`; refused on
/// `nohz_full` kernels).
pub(crate) fn wait_for_rcu_readers() -> io::Result<()> {
    /// From `<linux/membarrier.h>`.
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes two integers and a CPU number and touches
    // no memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Retries a syscall interrupted by a signal.
fn retry<T: PartialEq + From<i8>>(mut call: impl FnMut() -> T) -> io::Result<T> {
    loop {
        let ret = call();
        if ret != T::from(-1) {
            return Ok(ret);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The interface index of `name`, or `NotFound`.
pub(crate) fn if_nametoindex(name: &str) -> io::Result<u32> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// An `ifreq` with `name` filled in (the caller checked its length).
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.len() > MAX_IFNAME_LEN || name.as_bytes().contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: ifreq is plain old data (integers, arrays and a union of them);
    // all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// Issues an interface ioctl on `fd` (any socket works for these).
fn ifreq_ioctl(fd: BorrowedFd<'_>, request: libc::Ioctl, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `req` is a valid, initialized ifreq the kernel reads and writes
    // in place; `fd` is an open descriptor borrowed for the call.
    retry(|| unsafe { libc::ioctl(fd.as_raw_fd(), request, req as *mut libc::ifreq) })?;
    Ok(())
}

/// The MTU of interface `name`.
pub(crate) fn interface_mtu(fd: BorrowedFd<'_>, name: &str) -> io::Result<usize> {
    let mut req = ifreq(name)?;
    ifreq_ioctl(fd, libc::SIOCGIFMTU, &mut req)?;
    // SAFETY: SIOCGIFMTU filled the `ifru_mtu` member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(usize::try_from(mtu).unwrap_or(1500))
}

/// Whether interface `name`'s link is up: set up (IFF_UP) and its carrier
/// on (a veth's carrier is off while its peer is down; a TAP's is on while
/// a queue is attached). The carrier is read with ETHTOOL_GLINK, as it is
/// now; IFF_RUNNING says the same only once the kernel's link watch has
/// run, up to a second later, and stands in for it where a driver has no
/// ethtool link report.
pub(crate) fn interface_link_up(fd: BorrowedFd<'_>, name: &str) -> io::Result<bool> {
    let mut req = ifreq(name)?;
    ifreq_ioctl(fd, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short == 0 {
        return Ok(false);
    }
    /// ETHTOOL_GLINK in linux/ethtool.h; `struct ethtool_value`.
    const ETHTOOL_GLINK: u32 = 0x0a;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GLINK,
        data: 0,
    };
    let mut req = ifreq(name)?;
    // The kernel writes the answer through this pointer during the call;
    // `value` outlives it.
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    match ifreq_ioctl(fd, libc::SIOCETHTOOL, &mut req) {
        Ok(()) => Ok(value.data != 0),
        Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            Ok(flags & libc::IFF_RUNNING as libc::c_short != 0)
        }
        Err(err) => Err(err),
    }
}

/// The name interface `ifindex` has now, in `fd`'s network namespace.
pub(crate) fn interface_name(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<String> {
    let mut req = ifreq("")?;
    req.ifr_ifru.ifru_ifindex =
        libc::c_int::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    ifreq_ioctl(fd, libc::SIOCGIFNAME, &mut req)?;
    Ok(ifreq_name(&req))
}

/// The name in an `ifreq` the kernel filled.
fn ifreq_name(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sets interface `name` administratively up (`ip link set NAME up`).
pub(crate) fn set_interface_up(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let mut req = ifreq(name)?;
    ifreq_ioctl(fd, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    // Already up: nothing to ask, which lets an ordinary user open a
    // persistent TAP of theirs (setting flags needs CAP_NET_ADMIN).
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ifreq_ioctl(fd, libc::SIOCSIFFLAGS, &mut req)
}

/// A datagram socket for interface ioctls, when there is no port fd at hand.
pub(crate) fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd =
        retry(|| unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets an integer socket option.
fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    setsockopt(fd, level, name, &value)
}

/// Sets a socket option whose value is a `T` (a struct the option takes).
/// Anything the value points at must live across the call.
fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is borrowed across the call and the length passed is
    // its size; the kernel only copies that many bytes from it.
    retry(|| unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Writes `head` then `frame` as one frame: a TAP and a bound packet socket
/// both take one frame per write. `head` is the virtio-net header, or empty.
pub(crate) fn write_frame(fd: BorrowedFd<'_>, head: &[u8], frame: &[u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        },
    ];
    // SAFETY: both iovecs point into slices borrowed for the whole call; the
    // kernel only reads them.
    let n = retry(|| unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), 2) })?;
    Ok(n as usize)
}

/// Reads one frame: the first `head.len()` bytes into `head` (the
/// virtio-net header, or nothing), the rest into `frame`. Returns the total
/// length; `WouldBlock` when nothing is queued.
pub(crate) fn read_frame(
    fd: BorrowedFd<'_>,
    head: &mut [u8],
    frame: &mut [u8],
) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: head.as_mut_ptr().cast(),
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: frame.as_mut_ptr().cast(),
            iov_len: frame.len(),
        },
    ];
    // SAFETY: both iovecs point into mutable slices borrowed for the whole
    // call, each no longer than its slice.
    let n = retry(|| unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), 2) })?;
    Ok(n as usize)
}

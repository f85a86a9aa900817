//! TAP devices (Documentation/networking/tuntap.rst).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{ifreq, retry};
use crate::vnet::VnetHdr;

/// `TUN_F_*` offloads we can take: partial checksums and TCP GSO (v4, v6,
/// with ECN). With these, the kernel lets the TAP's stack hand us 64 KiB
/// super-frames instead of segmenting them first.
const OFFLOADS: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;

/// Opens (creating if needed) TAP device `name`, non-blocking, without the
/// packet-information prefix, and with virtio-net headers and offloads.
/// With `multi_queue` each call opens (or creates) one more queue of the
/// device; a device made without IFF_MULTI_QUEUE refuses it (EINVAL).
pub(crate) fn open_tap(name: &str, multi_queue: bool) -> io::Result<OwnedFd> {
    let path: &CStr = c"/dev/net/tun";
    // SAFETY: `path` is a valid NUL-terminated string; the result is checked.
    let raw = retry(|| unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `raw` was just returned by open(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    let mut req = ifreq(name)?;
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads (and writes back the name into) a valid ifreq.
    retry(|| unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETIFF,
            &mut req as *mut libc::ifreq,
        )
    })?;
    let size = VnetHdr::LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one c_int through the pointer.
    retry(|| unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETVNETHDRSZ,
            &size as *const libc::c_int,
        )
    })?;
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    retry(|| unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            OFFLOADS as libc::c_ulong,
        )
    })?;
    Ok(fd)
}

/// The name TAP queue `fd`'s interface has now (it may have been renamed,
/// and moved to another network namespace).
pub(crate) fn tap_name(fd: BorrowedFd<'_>) -> io::Result<String> {
    let mut req = ifreq("")?;
    // SAFETY: TUNGETIFF writes the interface's name and flags into a valid
    // ifreq.
    retry(|| unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNGETIFF,
            &mut req as *mut libc::ifreq,
        )
    })?;
    Ok(super::ifreq_name(&req))
}

/// The network namespace TAP queue `fd`'s interface is in now.
pub(crate) fn tap_namespace(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    /// `_IO('T', 227)` from `<linux/if_tun.h>` (Linux 5.2); not in `libc`.
    const TUNGETDEVNETNS: libc::Ioctl = 0x54e3;
    // SAFETY: TUNGETDEVNETNS takes no argument and returns a new
    // descriptor, checked before use.
    let raw = retry(|| unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETDEVNETNS) })?;
    // SAFETY: `raw` was just returned by the kernel and is owned by nobody
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

//! UDP segmentation offload (`UDP_SEGMENT`, Linux 4.18+): one `sendmsg`
//! carries many equal-sized datagrams, cut by the kernel (or the NIC).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::retry;

/// `UDP_SEGMENT` from `linux/udp.h` (libc has it only on some targets).
const UDP_SEGMENT: libc::c_int = 103;

/// Sends `data` to `to` as datagrams of `segment` bytes each (the last may
/// be shorter). `data` must hold at most 64 segments and fit one IP packet.
pub(crate) fn send_segments(
    socket: BorrowedFd<'_>,
    to: SocketAddr,
    data: &[u8],
    segment: u16,
) -> io::Result<usize> {
    // IPv4 or IPv6: socket2 lays out the sockaddr for either family.
    let address = socket2::SockAddr::from(to);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // The kernel only reads the name (sendmsg's msghdr is not const-correct).
    msg.msg_name = address.as_ptr().cast_mut().cast();
    msg.msg_namelen = address.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
    // SAFETY: `control` is aligned for cmsghdr (u64s) and 32 bytes, more than
    // CMSG_SPACE(2), so the header and its two data bytes fit; CMSG_FIRSTHDR
    // is non-null because msg_controllen is non-zero.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
        std::ptr::copy_nonoverlapping(segment.to_ne_bytes().as_ptr(), libc::CMSG_DATA(cmsg), 2);
    }
    // SAFETY: `msg` points at `address`, `iov` (over `data`) and `control`,
    // all alive for the call; the kernel only reads them.
    let sent = retry(|| unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })?;
    Ok(sent as usize)
}

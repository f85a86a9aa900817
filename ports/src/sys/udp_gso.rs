//! UDP segmentation offload both ways: one `sendmsg` carries many
//! equal-sized datagrams, cut by the kernel or the NIC (`UDP_SEGMENT`,
//! Linux 4.18+); one `recvmmsg` takes many messages, each of which may be
//! a run of datagrams kept whole (`UDP_GRO`, Linux 5.0+).

use std::io::{self, IoSlice};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::retry;

/// `UDP_SEGMENT` from `linux/udp.h` (libc has it only on some targets).
const UDP_SEGMENT: libc::c_int = 103;

/// Sends the bytes of `parts`, gathered, to `to` as datagrams of `segment`
/// bytes each (the last may be shorter): the kernel cuts at every
/// `segment` bytes wherever the parts begin. They must hold at most 64
/// segments and fit one IP packet.
pub(crate) fn send_segments(
    socket: BorrowedFd<'_>,
    to: SocketAddr,
    parts: &[IoSlice<'_>],
    segment: u16,
) -> io::Result<usize> {
    // IPv4 or IPv6: socket2 lays out the sockaddr for either family.
    let address = socket2::SockAddr::from(to);
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // The kernel only reads the name (sendmsg's msghdr is not const-correct).
    msg.msg_name = address.as_ptr().cast_mut().cast();
    msg.msg_namelen = address.len();
    // IoSlice is ABI-compatible with iovec on Unix (its documented promise);
    // the kernel only reads through msg_iov.
    msg.msg_iov = parts.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = parts.len();
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
    // SAFETY: `msg` points at `address` (socket2's, alive for the call), the iovecs of `parts` (each over a
    // live slice) and `control`, all alive for the call; the kernel only
    // reads them.
    let sent = retry(|| unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })?;
    Ok(sent as usize)
}

/// `UDP_GRO` from `linux/udp.h`: the socket option, and the control
/// message that gives the segment size of what one receive holds.
const UDP_GRO: libc::c_int = 104;

/// Lets the kernel hand over a run of one flow's datagrams (a sender's
/// `UDP_SEGMENT` burst kept whole across a veth, or joined by GRO) in one
/// receive, with their size in a control message (Linux 5.0+).
pub(crate) fn enable_gro(socket: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a c_int that outlives the call; the length says so.
    retry(|| unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// The most messages one [`recv_messages`] call takes.
pub(crate) const MAX_RECV: usize = 16;

/// What one message of a [`recv_messages`] call holds: `len` bytes from
/// `source`; with `UDP_GRO`, datagrams of `segment` bytes each (the last
/// may be shorter) when the kernel handed over several at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Received {
    pub(crate) len: usize,
    pub(crate) source: Option<SocketAddr>,
    pub(crate) segment: Option<usize>,
    /// The message was longer than its slot (the rest is lost).
    pub(crate) truncated: bool,
}

/// Control-message space per message: one `UDP_GRO` int, with room to spare.
const CMSG_WORDS: usize = 4;

/// Receives up to `out.len()` messages (at most [`MAX_RECV`]) in one
/// `recvmmsg` without blocking, message `i` into `buf[i * slot..][..slot]`.
/// Returns how many arrived; `WouldBlock` when none waited.
pub(crate) fn recv_messages(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    slot: usize,
    out: &mut [Received],
) -> io::Result<usize> {
    let count = out
        .len()
        .min(MAX_RECV)
        .min(buf.len().checked_div(slot).unwrap_or(0));
    if count == 0 {
        return Ok(0);
    }
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [empty; MAX_RECV];
    let mut control = [[0u64; CMSG_WORDS]; MAX_RECV];
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut names: [libc::sockaddr_storage; MAX_RECV] = unsafe { std::mem::zeroed() };
    // SAFETY: mmsghdr is plain old data (pointers and integers); all-zero is
    // valid and means "no name, no buffers" until filled in below.
    let mut msgs: [libc::mmsghdr; MAX_RECV] = unsafe { std::mem::zeroed() };
    for (i, piece) in buf.chunks_exact_mut(slot).take(count).enumerate() {
        iov[i] = libc::iovec {
            iov_base: piece.as_mut_ptr().cast(),
            iov_len: piece.len(),
        };
        let hdr = &mut msgs[i].msg_hdr;
        hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_iov = &mut iov[i];
        hdr.msg_iovlen = 1;
        hdr.msg_control = control[i].as_mut_ptr().cast();
        hdr.msg_controllen = std::mem::size_of::<[u64; CMSG_WORDS]>();
    }
    // SAFETY: every msghdr points at a name, an iovec (within `buf`, one
    // slot each, not overlapping) and a control buffer, all alive and
    // writable for the whole call and as long as the msghdr says.
    let received = retry(|| unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    })? as usize;
    for i in 0..received {
        let hdr = &msgs[i].msg_hdr;
        out[i] = Received {
            len: (msgs[i].msg_len as usize).min(slot),
            source: socket_addr(&names[i]),
            segment: gro_segment(hdr),
            truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
        };
    }
    Ok(received)
}

/// The sender's address the kernel wrote, if IPv4 or IPv6.
fn socket_addr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which
            // is smaller and no more aligned than sockaddr_storage.
            let v4 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(v4.sin_addr.s_addr).into(),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                v6.sin6_addr.s6_addr.into(),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The segment size of a `UDP_GRO` control message, if the message has one.
fn gro_segment(hdr: &libc::msghdr) -> Option<usize> {
    // SAFETY: `hdr` was filled by recvmmsg; CMSG_FIRSTHDR/NXTHDR walk only
    // within msg_control..msg_control+msg_controllen, which is our buffer.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and points at a complete header inside
        // the control buffer (CMSG_FIRSTHDR/NXTHDR check the bounds).
        let c = unsafe { &*cmsg };
        if c.cmsg_level == libc::SOL_UDP && c.cmsg_type == UDP_GRO {
            // SAFETY: a UDP_GRO message carries one c_int after its header;
            // CMSG_DATA may be unaligned for it, hence read_unaligned.
            let size =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) };
            return usize::try_from(size).ok().filter(|size| *size > 0);
        }
        // SAFETY: as above; NXTHDR returns null past the end of the buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
    }
    None
}

//! AF_PACKET sockets (man 7 packet): one per `--iface` port.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{retry, setsockopt, setsockopt_int};
use crate::vnet::VnetHdr;

/// The most frames one `recv_batch` call takes.
pub(crate) const MAX_BATCH: usize = 64;

/// `ETH_P_ALL` in network byte order, as `socket` and `bind` want it.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

/// How to set up a packet socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacketConfig {
    pub(crate) ifindex: u32,
    /// Receive buffer in bytes (SO_RCVBUFFORCE, or SO_RCVBUF without CAP_NET_ADMIN).
    pub(crate) rcvbuf: usize,
    /// Join the interface's promiscuous mode (PACKET_MR_PROMISC).
    pub(crate) promisc: bool,
}

/// Opens, configures and binds a packet socket to one interface.
pub(crate) fn open(config: PacketConfig) -> io::Result<OwnedFd> {
    // Protocol 0 at first: with ETH_P_ALL the socket would start receiving
    // from every interface before `bind` narrows it to one.
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = retry(|| unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `raw` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let b = fd.as_fd_borrowed();

    // Never hand back what this switch sent (nor other local senders' frames).
    setsockopt_int(b, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
    // A veth strips the 802.1Q tag into metadata; auxdata gives it back.
    setsockopt_int(b, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
    // Every frame comes and goes with a virtio-net header (offloads).
    setsockopt_int(b, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
    let rcvbuf = libc::c_int::try_from(config.rcvbuf).unwrap_or(libc::c_int::MAX);
    if setsockopt_int(b, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcvbuf).is_err() {
        setsockopt_int(b, libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf)?;
    }

    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ALL_BE;
    addr.sll_ifindex = config.ifindex as libc::c_int;
    // SAFETY: `addr` is a valid sockaddr_ll and the length passed is its size.
    retry(|| unsafe {
        libc::bind(
            b.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;

    if config.promisc {
        // SAFETY: packet_mreq is plain old data; all-zero is valid.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = config.ifindex as libc::c_int;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        setsockopt(b, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;
    }
    Ok(fd)
}

trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl AsFdBorrowed for OwnedFd {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

/// What the kernel said about one received frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecvMeta {
    /// Bytes of the frame (after the virtio-net header, if any).
    pub(crate) len: usize,
    /// The frame did not fit its buffer.
    pub(crate) truncated: bool,
    /// The 802.1Q/802.1ad tag the kernel took out: (TPID, TCI).
    pub(crate) vlan: Option<(u16, u16)>,
    /// When the kernel received it (ns since the epoch), on a socket that
    /// keeps arrival times ([`keep_arrival_times`]).
    pub(crate) arrived: Option<u64>,
}

/// Control-message space per frame: room for one `tpacket_auxdata`
/// (CMSG_SPACE(20) is 40 on 64-bit) and one `timespec` (CMSG_SPACE(16) is
/// 32), in u64s for alignment.
const CMSG_WORDS: usize = 10;

/// Receives up to `bufs.len()` (at most [`MAX_BATCH`]) frames in one
/// `recvmmsg`; `heads[i]` gets frame i's virtio-net header.
/// Returns how many frames arrived; 0 when none were queued.
pub(crate) fn recv_batch(
    fd: BorrowedFd<'_>,
    heads: &mut [[u8; VnetHdr::LEN]],
    bufs: &mut [&mut [u8]],
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    let count = bufs.len().min(heads.len()).min(meta.len()).min(MAX_BATCH);
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [[empty; 2]; MAX_BATCH];
    let mut cmsg = [[0u64; CMSG_WORDS]; MAX_BATCH];
    // SAFETY: mmsghdr is plain old data (pointers and integers); all-zero is
    // valid and means "no name, no buffers" until filled in below.
    let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..count {
        iov[i] = frame_iov(&mut heads[i], bufs[i]);
        point_at(&mut msgs[i].msg_hdr, &mut iov[i], &mut cmsg[i]);
    }
    // SAFETY: every msghdr points at iovecs and control buffers that live on
    // this stack frame for the whole call, each iovec within its slice.
    let ret = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(err),
        };
    }
    let received = ret as usize;
    for i in 0..received {
        meta[i] = RecvMeta::of(msgs[i].msg_len as usize, &msgs[i].msg_hdr);
    }
    Ok(received)
}

/// The two iovecs of one received frame: its virtio-net header into
/// `head`, the frame into `buf`.
fn frame_iov(head: &mut [u8; VnetHdr::LEN], buf: &mut [u8]) -> [libc::iovec; 2] {
    [
        libc::iovec {
            iov_base: head.as_mut_ptr().cast(),
            iov_len: VnetHdr::LEN,
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
    ]
}

/// Points `hdr` at a frame's iovecs and control buffer (the caller keeps
/// them alive across the receive).
fn point_at(hdr: &mut libc::msghdr, iov: &mut [libc::iovec; 2], cmsg: &mut [u64; CMSG_WORDS]) {
    hdr.msg_iov = iov.as_mut_ptr();
    hdr.msg_iovlen = iov.len();
    hdr.msg_control = cmsg.as_mut_ptr().cast();
    hdr.msg_controllen = std::mem::size_of::<[u64; CMSG_WORDS]>();
}

impl RecvMeta {
    /// What a received message of `total` bytes (virtio-net header
    /// included) says about its frame.
    fn of(total: usize, hdr: &libc::msghdr) -> Self {
        let (vlan, arrived) = control_messages(hdr);
        RecvMeta {
            len: total.saturating_sub(VnetHdr::LEN),
            truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
            vlan,
            arrived,
        }
    }
}

/// Makes the socket report when the kernel received each frame
/// (SO_TIMESTAMPNS): the time the frame entered the receive path on its
/// sender's CPU, before it was steered to a lane. Readers of a port's lanes
/// put frames of several lanes back in that order (the switch's
/// `dataplane/lanes.rs`).
pub(crate) fn keep_arrival_times(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// When the frame at the head of the socket's queue arrived, without
/// taking it off the queue; `None` when the queue is empty, `Some(None)`
/// when the kernel gave no time.
pub(crate) fn peek_arrival(fd: BorrowedFd<'_>) -> io::Result<Option<Option<u64>>> {
    let mut head = [0u8; VnetHdr::LEN];
    // Room for the virtio-net header and a little more: with less than
    // the header the kernel fails the read (see `discard_queued`).
    let mut frame = [0u8; 64];
    // MSG_PEEK leaves the frame queued; MSG_TRUNC only reports its length.
    let flags = libc::MSG_DONTWAIT | libc::MSG_PEEK | libc::MSG_TRUNC;
    Ok(recv_msg(fd, &mut head, &mut frame, flags)?.map(|meta| meta.arrived))
}

/// What a received message's control messages say: the VLAN tag
/// PACKET_AUXDATA reports (TPID, TCI), and the receive time SCM_TIMESTAMPNS
/// gives (ns since the epoch).
fn control_messages(hdr: &libc::msghdr) -> (Option<(u16, u16)>, Option<u64>) {
    let (mut vlan, mut arrived) = (None, None);
    // SAFETY: `hdr` was filled by a receive; CMSG_FIRSTHDR/NXTHDR walk only
    // within msg_control..msg_control+msg_controllen, which is our buffer.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and points at a complete header inside
        // the control buffer (CMSG_FIRSTHDR/NXTHDR check the bounds).
        let c = unsafe { &*cmsg };
        if c.cmsg_level == libc::SOL_PACKET && c.cmsg_type == libc::PACKET_AUXDATA {
            // SAFETY: the kernel wrote a whole tpacket_auxdata after this
            // header; CMSG_DATA may be unaligned for it, hence read_unaligned.
            let aux: libc::tpacket_auxdata = unsafe {
                std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::tpacket_auxdata>())
            };
            if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    aux.tp_vlan_tpid
                } else {
                    0x8100
                };
                vlan = Some((tpid, aux.tp_vlan_tci));
            }
        } else if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_TIMESTAMPNS {
            // SAFETY: the kernel wrote a whole timespec after this header;
            // CMSG_DATA may be unaligned for it, hence read_unaligned.
            let at: libc::timespec =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>()) };
            arrived = u64::try_from(at.tv_sec)
                .ok()
                .and_then(|secs| secs.checked_mul(1_000_000_000))
                .zip(u64::try_from(at.tv_nsec).ok())
                .and_then(|(secs, ns)| secs.checked_add(ns));
        }
        // SAFETY: as above; NXTHDR returns null past the end of the buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
    }
    (vlan, arrived)
}

/// Receives one frame with `recvmsg`: its virtio-net header into `head`,
/// the frame into `buf`. `None` when none was queued. Cheaper than a
/// `recvmmsg` that finds one frame, which then copies in and tries a second
/// message header only to learn that the queue is empty.
pub(crate) fn recv_one(
    fd: BorrowedFd<'_>,
    head: &mut [u8; VnetHdr::LEN],
    buf: &mut [u8],
) -> io::Result<Option<RecvMeta>> {
    recv_msg(fd, head, buf, libc::MSG_DONTWAIT)
}

/// One `recvmsg` with `flags` into `head` and `buf`; `None` when nothing
/// was queued.
fn recv_msg(
    fd: BorrowedFd<'_>,
    head: &mut [u8; VnetHdr::LEN],
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<Option<RecvMeta>> {
    let mut iov = frame_iov(head, buf);
    let mut cmsg = [0u64; CMSG_WORDS];
    // SAFETY: msghdr is plain old data (pointers and integers); all-zero is
    // valid and means "no name, no buffers" until filled in below.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    point_at(&mut hdr, &mut iov, &mut cmsg);
    // SAFETY: the msghdr points at two iovecs, each within its buffer, and
    // a control buffer, all on this stack frame or borrowed for the call.
    let ret = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut hdr, flags) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some(RecvMeta::of(ret as usize, &hdr)))
}

/// Frames the kernel dropped because the socket's receive queue was full,
/// since the last call (PACKET_STATISTICS resets its counters when read).
pub(crate) fn take_drops(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: tpacket_stats is plain old data; all-zero is valid.
    let mut stats: libc::tpacket_stats = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `stats`, which
    // lives across the call; `len` is its size.
    retry(|| unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    })?;
    Ok(u64::from(stats.tp_drops))
}

/// PACKET_FANOUT_CBPF / PACKET_FANOUT_EBPF: the group's classic or eBPF
/// program picks the member (its result modulo the number of members); see
/// [`steer_fanout`] and [`set_fanout_program`].
const FANOUT_CBPF: u32 = 6;
const FANOUT_EBPF: u32 = 7;

/// Which kind of program steers a fanout group, fixed when it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FanoutProgram {
    /// Classic BPF, set by [`steer_fanout`]: loadable without CAP_BPF.
    Classic,
    /// eBPF, set by [`set_fanout_program`].
    Extended,
}
/// The kernel picks a group id that is free in this network namespace
/// (first member only; the flag is not kept).
const FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
/// Members never see frames sent out of the interface (Linux 6.5+; a
/// group ignores the members' own PACKET_IGNORE_OUTGOING). Not in older
/// libc headers, hence spelled out.
const FANOUT_FLAG_IGNORE_OUTGOING: u32 = 0x4000;

/// Puts a bound packet socket into a fanout group steered by a program
/// ([`steer_fanout`]; until one is set every frame goes to the first
/// member): `None` starts a new group, `Some(id)` joins it. Returns the
/// group's id.
pub(crate) fn join_fanout(
    fd: BorrowedFd<'_>,
    group: Option<u16>,
    program: FanoutProgram,
) -> io::Result<u16> {
    let (id, flags) = match group {
        None => (0, FANOUT_FLAG_UNIQUEID | FANOUT_FLAG_IGNORE_OUTGOING),
        Some(id) => (u32::from(id), FANOUT_FLAG_IGNORE_OUTGOING),
    };
    let kind = match program {
        FanoutProgram::Classic => FANOUT_CBPF,
        FanoutProgram::Extended => FANOUT_EBPF,
    };
    let arg = (id | ((kind | flags) << 16)) as libc::c_int;
    setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, arg)?;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`, which lives
    // across the call.
    retry(|| unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok((value & 0xffff) as u16)
}

/// Classic BPF opcodes (linux/filter.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_RET_A: u16 = 0x16;
const BPF_RET_K: u16 = 0x06;
/// "Load the current CPU" (SKF_AD_OFF + SKF_AD_CPU) as a load offset.
const LOAD_CPU: u32 = (-0x1000i32 + 36) as u32;

/// Sets the program of the fanout group `fd` is a member of: frames to
/// member `to`, or (`None`) to the member of the CPU they arrive on.
pub(crate) fn steer_fanout(fd: BorrowedFd<'_>, to: Option<u32>) -> io::Result<()> {
    let op = |code, k| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let mut program = match to {
        None => vec![op(BPF_LD_W_ABS, LOAD_CPU), op(BPF_RET_A, 0)],
        Some(member) => vec![op(BPF_RET_K, member)],
    };
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // `fprog` points at `program`, which lives across the call; the kernel
    // copies the program.
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT_DATA, &fprog)
}

/// Makes the eBPF `program` (a socket filter program returning a member's
/// index) the steering of the [`FanoutProgram::Extended`] group `fd` is a
/// member of. Replacing one waits for the CPUs still running the old one,
/// as [`steer_fanout`] does.
pub(crate) fn set_fanout_program(fd: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_int(
        fd,
        libc::SOL_PACKET,
        libc::PACKET_FANOUT_DATA,
        program.as_raw_fd(),
    )
}

/// Throws away every frame queued on a socket (without copying them out).
pub(crate) fn discard_queued(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut discarded = 0;
    // Room for the virtio-net header the socket puts first: with less, the
    // kernel takes the frame off the queue and fails the call (EINVAL).
    let mut head = [0u8; 64];
    loop {
        // SAFETY: a 64-byte buffer that lives across the call; MSG_TRUNC
        // only makes the kernel report the frame's length instead of
        // copying all of it.
        let ret = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                head.as_mut_ptr().cast(),
                head.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock => Ok(discarded),
                io::ErrorKind::Interrupted => continue,
                _ => Err(err),
            };
        }
        discarded += 1;
    }
}

/// Sends up to [`MAX_BATCH`] frames in one `sendmmsg`, each after its
/// virtio-net header. Returns how many were sent, in order; fewer than
/// asked means the next one failed (and was not sent). An error only if
/// the first one failed.
pub(crate) fn send_batch(fd: BorrowedFd<'_>, frames: &[(VnetHdr, &[u8])]) -> io::Result<usize> {
    let count = frames.len().min(MAX_BATCH);
    let heads: [[u8; VnetHdr::LEN]; MAX_BATCH] =
        std::array::from_fn(|i| frames.get(i).map_or([0; VnetHdr::LEN], |f| f.0.to_bytes()));
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [[empty; 2]; MAX_BATCH];
    // SAFETY: mmsghdr is plain old data (pointers and integers); all-zero is
    // valid and means "no address, no buffers" until filled in below.
    let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..count {
        iov[i] = [
            libc::iovec {
                iov_base: heads[i].as_ptr() as *mut libc::c_void,
                iov_len: heads[i].len(),
            },
            libc::iovec {
                iov_base: frames[i].1.as_ptr() as *mut libc::c_void,
                iov_len: frames[i].1.len(),
            },
        ];
        msgs[i].msg_hdr.msg_iov = iov[i].as_mut_ptr();
        msgs[i].msg_hdr.msg_iovlen = 2;
    }
    // SAFETY: every msghdr points at two iovecs on this stack frame, one
    // within `heads` (on this stack frame too), one within a frame borrowed
    // for the whole call; the kernel only reads them.
    let sent = retry(|| unsafe {
        libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), count as libc::c_uint, 0)
    })?;
    Ok(sent as usize)
}

/// The index of the interface packet socket `fd` is bound to (in the
/// socket's network namespace).
pub(crate) fn bound_ifindex(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are valid for writes and describe the
    // buffer's size; the kernel writes at most `len` bytes.
    retry(|| unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_ll).cast::<libc::sockaddr>(),
            &mut len,
        )
    })?;
    u32::try_from(addr.sll_ifindex).map_err(|_| io::Error::from(io::ErrorKind::NotFound))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// A frame from a veth's peer to the packet socket on its other end is
    /// thrown away by `discard_queued`, which says so (the socket puts a
    /// virtio-net header first: a buffer too small for it failed the call
    /// once the frame was already gone).
    #[test]
    fn discard_queued_throws_away_what_waits_and_counts_it() {
        let (uid, _) = crate::sys::namespace::effective_ids();
        if uid != 0 {
            eprintln!("skipping discard_queued_...: veths and packet sockets need root");
            return;
        }
        std::thread::spawn(|| {
            crate::sys::namespace::unshare_thread_net().expect("a new network namespace");
            let ip = |args: &[&str]| {
                let status = std::process::Command::new("ip").args(args).status();
                assert!(status.is_ok_and(|s| s.success()), "ip {args:?}");
            };
            ip(&["link", "add", "dq0", "type", "veth", "peer", "name", "dq1"]);
            ip(&["link", "set", "dq0", "up"]);
            ip(&["link", "set", "dq1", "up"]);
            let config = |name| PacketConfig {
                ifindex: crate::sys::if_nametoindex(name).expect("the veth"),
                rcvbuf: 1 << 20,
                promisc: true,
            };
            let socket = open(config("dq0")).expect("a packet socket on dq0");
            discard_queued(socket.as_fd()).expect("emptying it first");
            let peer = open(config("dq1")).expect("a packet socket on dq1");
            let mut frame = vec![0u8; 60];
            frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xd1]);
            frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xd0]);
            frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
            send_batch(peer.as_fd(), &[(VnetHdr::default(), &frame)]).expect("sending");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            let mut discarded = 0;
            while discarded == 0 && std::time::Instant::now() < deadline {
                discarded = discard_queued(socket.as_fd()).expect("discarding a queued frame");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert_eq!(discarded, 1);
            assert_eq!(discard_queued(socket.as_fd()).unwrap(), 0, "nothing left");
        })
        .join()
        .expect("the veth test failed");
    }
}

//! eBPF programs (man 2 bpf): loading them, attaching them to a socket
//! (SO_ATTACH_BPF) or to an interface's TCX ingress hook (BPF_LINK_CREATE),
//! and, for tests, running one on a made-up frame (BPF_PROG_TEST_RUN).
//! Maps are in [`super::bpf_map`].
//!
//! Two users. The queue-steering programs of multi-queue TAP devices
//! (TUNSETSTEERINGEBPF in Documentation/networking/tuntap.rst) are two
//! instructions long and written out here: either "return the current
//! CPU" or "return queue N"; the kernel takes the result modulo the number
//! of queues. The kernel shortcut's programs are built in
//! `crate::shortcut::program` and only loaded and attached here.
//!
//! No BPF toolchain or library is needed at build or run time. Loading
//! needs CAP_BPF (or CAP_SYS_ADMIN), and CAP_NET_ADMIN for a `SCHED_CLS`
//! program.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{retry, setsockopt_int};

/// The bpf(2) commands used here.
pub(super) const BPF_MAP_CREATE: libc::c_long = 0;
pub(super) const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
pub(super) const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
pub(super) const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
pub(super) const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_PROG_LOAD: libc::c_long = 5;
#[cfg(test)]
const BPF_PROG_TEST_RUN: libc::c_long = 10;
#[cfg(test)]
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_CREATE: libc::c_long = 28;

/// `enum bpf_attach_type` BPF_TCX_INGRESS (Linux 6.6).
const BPF_TCX_INGRESS: u32 = 46;

/// SO_ATTACH_BPF and SO_DETACH_BPF (= SO_DETACH_FILTER) from
/// asm-generic/socket.h (x86, arm, riscv, ...); not in the libc crate.
const SO_ATTACH_BPF: libc::c_int = 50;
const SO_DETACH_BPF: libc::c_int = 27;

/// The helper `bpf_get_smp_processor_id`.
const HELPER_CURRENT_CPU: i32 = 8;

/// How much of a rejected program's verifier log is kept: the end of it,
/// which says why.
const VERIFIER_LOG_BYTES: usize = 1 << 20;

/// A program type (`enum bpf_prog_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgType {
    /// BPF_PROG_TYPE_SOCKET_FILTER: a socket's filter (SO_ATTACH_BPF), a
    /// TAP's steering program (TUNSETSTEERINGEBPF).
    SocketFilter = 1,
    /// BPF_PROG_TYPE_SCHED_CLS: a tc (here TCX) program.
    SchedCls = 3,
}

/// One eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub(crate) code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    pub(crate) regs: u8,
    pub(crate) off: i16,
    pub(crate) imm: i32,
}

/// BPF_JMP | BPF_CALL: call helper `imm`; the result lands in r0.
const CALL: u8 = 0x85;
/// BPF_ALU64 | BPF_MOV | BPF_K: dst = imm.
const MOV64_IMM: u8 = 0xb7;
/// BPF_JMP | BPF_EXIT: return r0.
const EXIT: u8 = 0x95;

/// Calls bpf(2) with command `cmd` on `attr`; returns what it returned.
///
/// # Safety
///
/// `T` must be the `repr(C)` prefix of `union bpf_attr` that `cmd` reads,
/// and every address in it must point at memory that stays valid across
/// the call and is as large as the lengths beside it say (writable where
/// the kernel writes).
pub(super) unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller vouches for what `attr` points at; the kernel
    // reads (and for some commands writes) at most `size_of::<T>()` bytes
    // of `attr` itself, which is borrowed mutably across the call.
    retry(|| unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) })
}

/// Takes ownership of a descriptor bpf(2) just returned.
pub(super) fn owned(raw: libc::c_long) -> io::Result<OwnedFd> {
    let raw = i32::try_from(raw).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: `raw` was just returned by bpf(2) as a new descriptor and is
    // owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD; the kernel
/// treats the fields after them as zero.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Why a program was not loaded: the kernel's error, and what the
/// verifier said (empty when it said nothing, as for EPERM).
#[derive(Debug)]
pub(crate) struct LoadError {
    pub(crate) error: io::Error,
    pub(crate) log: String,
}

/// Loads `insns` as a program of type `prog_type` named `name` (at most 15
/// bytes are kept; `bpftool prog` shows it). On failure it is loaded again
/// with the verifier's log on, so the error says why: a log on the first
/// try would cost a large buffer, and fails the load if it overflows.
pub(crate) fn load_program(
    prog_type: ProgType,
    name: &str,
    insns: &[Insn],
) -> Result<OwnedFd, LoadError> {
    match load_once(prog_type, name, insns, &mut []) {
        Ok(fd) => Ok(fd),
        Err(error) => {
            let mut log = vec![0u8; VERIFIER_LOG_BYTES];
            match load_once(prog_type, name, insns, &mut log) {
                Ok(fd) => Ok(fd),
                Err(_) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    let log = String::from_utf8_lossy(&log[..end]).trim_end().to_string();
                    Err(LoadError { error, log })
                }
            }
        }
    }
}

/// One BPF_PROG_LOAD, with the verifier's log into `log` unless it is empty.
fn load_once(
    prog_type: ProgType,
    name: &str,
    insns: &[Insn],
    log: &mut [u8],
) -> io::Result<OwnedFd> {
    let license = c"Dual MIT/GPL";
    let mut prog_name = [0u8; 16];
    for (dst, src) in prog_name[..15].iter_mut().zip(name.bytes()) {
        *dst = src;
    }
    let mut attr = ProgLoadAttr {
        prog_type: prog_type as u32,
        insn_cnt: u32::try_from(insns.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: u32::try_from(log.len()).unwrap_or(u32::MAX),
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    // SAFETY: ProgLoadAttr is the BPF_PROG_LOAD prefix of bpf_attr; `insns`
    // (insn_cnt instructions), `license` (NUL-terminated) and `log`
    // (log_size writable bytes, or none) outlive the call.
    let raw = unsafe { bpf(BPF_PROG_LOAD, &mut attr) }?;
    owned(raw)
}

/// Loads a steering program (frames to queue `to`, or with `None` to the
/// queue of their CPU); the returned fd keeps it alive until attached.
pub(crate) fn load_steering(to: Option<u32>) -> io::Result<OwnedFd> {
    let first = match to {
        None => Insn {
            code: CALL,
            regs: 0,
            off: 0,
            imm: HELPER_CURRENT_CPU,
        },
        Some(n) => Insn {
            code: MOV64_IMM,
            regs: 0, // r0
            off: 0,
            imm: i32::try_from(n).unwrap_or(0),
        },
    };
    let program = [
        first,
        Insn {
            code: EXIT,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    load_program(ProgType::SocketFilter, "tapsw_steer", &program).map_err(|err| err.error)
}

/// Makes `program` the queue-steering program of the TAP device that
/// `tap` is a queue of (replacing any earlier one).
pub(crate) fn attach_steering(tap: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    let prog_fd: libc::c_int = program.as_raw_fd();
    // SAFETY: TUNSETSTEERINGEBPF reads one c_int (the program's fd) through
    // the pointer, which lives across the call.
    retry(|| unsafe {
        libc::ioctl(
            tap.as_raw_fd(),
            libc::TUNSETSTEERINGEBPF,
            &prog_fd as *const libc::c_int,
        )
    })?;
    Ok(())
}

/// Takes the TAP device's queue-steering program away (the device falls
/// back to its own choice of queue).
pub(crate) fn detach_steering(tap: BorrowedFd<'_>) -> io::Result<()> {
    let none: libc::c_int = -1;
    // SAFETY: TUNSETSTEERINGEBPF reads one c_int (-1: detach) through the
    // pointer, which lives across the call.
    retry(|| unsafe {
        libc::ioctl(
            tap.as_raw_fd(),
            libc::TUNSETSTEERINGEBPF,
            &none as *const libc::c_int,
        )
    })?;
    Ok(())
}

/// Makes `program` (a socket filter) the filter of `socket`, replacing
/// any earlier one (SO_ATTACH_BPF).
pub(crate) fn attach_socket_filter(
    socket: BorrowedFd<'_>,
    program: BorrowedFd<'_>,
) -> io::Result<()> {
    setsockopt_int(socket, libc::SOL_SOCKET, SO_ATTACH_BPF, program.as_raw_fd())
}

/// Takes `socket`'s filter away (SO_DETACH_BPF); ENOENT if it had none.
pub(crate) fn detach_socket_filter(socket: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_int(socket, libc::SOL_SOCKET, SO_DETACH_BPF, 0)
}

/// The BPF_LINK_CREATE prefix of `union bpf_attr`, with the `tcx` member
/// of its trailing union.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    /// `tcx.relative_fd`: 0 with no BPF_F_BEFORE/AFTER flag (append).
    relative_fd: u32,
    _pad: u32,
    /// `tcx.expected_revision`: 0 means "any".
    expected_revision: u64,
}

/// Attaches `program` (SCHED_CLS) to the TCX ingress hook of interface
/// `ifindex`, after the programs already there. The returned link fd is
/// the attachment: closing it (the last reference) detaches the program.
/// EINVAL on a kernel without TCX (before Linux 6.6, or without
/// CONFIG_NET_XGRESS).
pub(crate) fn attach_tcx_ingress(program: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: u32::try_from(program.as_raw_fd()).unwrap_or(u32::MAX),
        target_ifindex: ifindex,
        attach_type: BPF_TCX_INGRESS,
        flags: 0,
        relative_fd: 0,
        _pad: 0,
        expected_revision: 0,
    };
    // SAFETY: LinkCreateAttr is the BPF_LINK_CREATE prefix of bpf_attr and
    // holds no addresses.
    let raw = unsafe { bpf(BPF_LINK_CREATE, &mut attr) }?;
    owned(raw)
}

/// The BPF_PROG_TEST_RUN prefix of `union bpf_attr`.
#[cfg(test)]
#[repr(C)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs `program` (SCHED_CLS or SOCKET_FILTER) once on a made-up skb of
/// `data` (at least 14 bytes) that arrived on interface `ifindex` (which
/// must exist in this network namespace; 0 or 1 means `lo`); returns what
/// the program returned. A SCHED_CLS program sees `data` from its first
/// byte, a socket filter from byte 14 on (the kernel takes the first 14
/// as the Ethernet header and pulls it).
#[cfg(test)]
pub(crate) fn test_run(program: BorrowedFd<'_>, data: &[u8], ifindex: u32) -> io::Result<u32> {
    test_run_with_cb(program, data, ifindex, [0; 5]).map(|(returned, _)| returned)
}

/// [`test_run`] with the skb's control block (`__sk_buff.cb`) set to `cb`
/// before the run; returns what the program returned and the control
/// block after it.
#[cfg(test)]
pub(crate) fn test_run_with_cb(
    program: BorrowedFd<'_>,
    data: &[u8],
    ifindex: u32,
    cb: [u32; 5],
) -> io::Result<(u32, [u32; 5])> {
    // `struct __sk_buff` up to the end of `cb` (`ifindex` at byte 40, `cb`
    // at 48); everything else must be zero, and the kernel zero-fills what
    // is not passed. It gives the whole struct back, so the buffer out is
    // larger than any kernel's (192 bytes in 6.18).
    let mut ctx = [0u32; 17];
    ctx[10] = ifindex;
    ctx[12..17].copy_from_slice(&cb);
    let mut out = [0u32; 128];
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(program.as_raw_fd()).unwrap_or(u32::MAX),
        retval: 0,
        data_size_in: u32::try_from(data.len()).unwrap_or(u32::MAX),
        data_size_out: 0,
        data_in: data.as_ptr() as u64,
        data_out: 0,
        repeat: 1,
        duration: 0,
        ctx_size_in: std::mem::size_of_val(&ctx) as u32,
        ctx_size_out: std::mem::size_of_val(&out) as u32,
        ctx_in: ctx.as_ptr() as u64,
        ctx_out: out.as_mut_ptr() as u64,
        flags: 0,
        cpu: 0,
        batch_size: 0,
        _pad: 0,
    };
    // SAFETY: TestRunAttr is the BPF_PROG_TEST_RUN prefix of bpf_attr;
    // `data` and `ctx` (read only) and `out` (written, at most its size)
    // outlive the call, their sizes given; no data buffer out is given.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    let mut cb_out = [0u32; 5];
    cb_out.copy_from_slice(&out[12..17]);
    Ok((attr.retval, cb_out))
}

/// The BPF_PROG_QUERY member of `union bpf_attr`, whole: for TCX the
/// kernel writes `attach_flags`, `count` and `revision` back into it.
#[cfg(test)]
#[repr(C)]
struct QueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// How many programs the TCX ingress hook of interface `ifindex` holds.
#[cfg(test)]
pub(crate) fn tcx_ingress_programs(ifindex: u32) -> io::Result<u32> {
    let mut attr = QueryAttr {
        target_ifindex: ifindex,
        attach_type: BPF_TCX_INGRESS,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: 0,
        prog_cnt: 0,
        _pad: 0,
        prog_attach_flags: 0,
        link_ids: 0,
        link_attach_flags: 0,
        revision: 0,
    };
    // SAFETY: QueryAttr is the whole BPF_PROG_QUERY member of bpf_attr;
    // with no id or flag buffers (all 0) the kernel writes only into
    // `attr` itself, within it.
    unsafe { bpf(BPF_PROG_QUERY, &mut attr) }?;
    Ok(attr.prog_cnt)
}

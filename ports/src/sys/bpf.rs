//! eBPF steering programs for multi-queue TAP devices (man 2 bpf,
//! TUNSETSTEERINGEBPF in Documentation/networking/tuntap.rst).
//!
//! The programs are two instructions long and written out by hand, so no
//! BPF toolchain or library is needed: either "return the current CPU" or
//! "return queue N". The kernel takes the result modulo the number of
//! queues. Loading needs CAP_BPF (or CAP_SYS_ADMIN).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::retry;

/// BPF_PROG_LOAD (the bpf(2) command).
const BPF_PROG_LOAD: libc::c_long = 5;
/// BPF_PROG_TYPE_SOCKET_FILTER: what TUNSETSTEERINGEBPF takes.
const PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// The helper `bpf_get_smp_processor_id`.
const HELPER_CURRENT_CPU: i32 = 8;

/// One eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

/// BPF_JMP | BPF_CALL: call helper `imm`; the result lands in r0.
const CALL: u8 = 0x85;
/// BPF_ALU64 | BPF_MOV | BPF_K: dst = imm.
const MOV64_IMM: u8 = 0xb7;
/// BPF_JMP | BPF_EXIT: return r0.
const EXIT: u8 = 0x95;

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
    let license = c"Dual MIT/GPL";
    let attr = ProgLoadAttr {
        prog_type: PROG_TYPE_SOCKET_FILTER,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
    };
    // SAFETY: `attr` and what it points to (`program`, `license`) live
    // across the call, and the size passed is the struct's; the kernel
    // copies the program and returns a new fd or -1.
    let raw = retry(|| unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    })?;
    let raw = i32::try_from(raw).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: `raw` was just returned by bpf(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
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

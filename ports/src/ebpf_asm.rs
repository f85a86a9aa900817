//! Writing eBPF programs instruction by instruction, with labels in place
//! of jump offsets (the encoding is in the kernel's
//! Documentation/bpf/standardization/instruction-set.rst).
//!
//! Two users: the kernel shortcut's programs ([`crate::shortcut`]) and the
//! lanes' steering program ([`crate::ledger`]). No BPF toolchain is needed
//! to build them, and nothing but the kernel to run them.
//!
//! Registers: r1 to r5 are a helper's arguments and do not survive a call;
//! r0 is its result and the program's; r6 to r9 survive calls; r10 is the
//! frame pointer (read only).

use std::fmt::Debug;
use std::os::fd::RawFd;

use crate::sys::bpf::Insn;

/// Registers.
pub(crate) const R0: u8 = 0;
pub(crate) const R1: u8 = 1;
pub(crate) const R2: u8 = 2;
pub(crate) const R3: u8 = 3;
pub(crate) const R4: u8 = 4;
pub(crate) const R5: u8 = 5;
pub(crate) const R6: u8 = 6;
pub(crate) const R7: u8 = 7;
pub(crate) const R8: u8 = 8;
pub(crate) const R9: u8 = 9;
pub(crate) const R10: u8 = 10;

/// Opcodes: class | size or operation | mode or source.
/// BPF_ALU64 | BPF_MOV | BPF_X / BPF_K: dst = src / dst = imm.
pub(crate) const MOV64_REG: u8 = 0xbf;
pub(crate) const MOV64_IMM: u8 = 0xb7;
/// BPF_ALU64 | BPF_ADD | BPF_X / BPF_K: dst += src / dst += imm.
pub(crate) const ADD64_REG: u8 = 0x0f;
pub(crate) const ADD64_IMM: u8 = 0x07;
/// BPF_ALU64 | BPF_LSH | BPF_K: dst <<= imm.
pub(crate) const LSH64_IMM: u8 = 0x67;
/// BPF_ALU | BPF_MOD | BPF_K: dst = (u32) dst % imm (the upper half zeroed).
pub(crate) const MOD32_IMM: u8 = 0x94;
/// BPF_LDX | BPF_MEM | BPF_B / BPF_H / BPF_W / BPF_DW:
/// dst = *(u8 / u16 / u32 / u64 *)(src + off).
pub(crate) const LDX_B: u8 = 0x71;
pub(crate) const LDX_H: u8 = 0x69;
pub(crate) const LDX_W: u8 = 0x61;
pub(crate) const LDX_DW: u8 = 0x79;
/// BPF_STX | BPF_MEM | BPF_H / BPF_W / BPF_DW: *(u16 / u32 / u64 *)(dst +
/// off) = src.
pub(crate) const STX_H: u8 = 0x6b;
pub(crate) const STX_W: u8 = 0x63;
pub(crate) const STX_DW: u8 = 0x7b;
/// BPF_STX | BPF_ATOMIC | BPF_DW with imm BPF_ADD: *(u64 *)(dst + off) +=
/// src, atomically (a `lock xadd`).
pub(crate) const ATOMIC_DW: u8 = 0xdb;
pub(crate) const ATOMIC_ADD: i32 = 0x00;
/// BPF_ST | BPF_MEM | BPF_W / BPF_DW: *(u32 / u64 *)(dst + off) = imm.
pub(crate) const ST_W: u8 = 0x62;
pub(crate) const ST_DW: u8 = 0x7a;
/// BPF_LD | BPF_DW | BPF_IMM: dst = a 64-bit immediate, in two slots.
pub(crate) const LD_IMM64: u8 = 0x18;
/// The source field of LD_IMM64 that makes the immediate a map descriptor.
pub(crate) const PSEUDO_MAP_FD: u8 = 1;
/// BPF_JMP | BPF_JEQ / BPF_JNE / BPF_JGE | BPF_K / BPF_X: jump if dst ==,
/// !=, >= (unsigned) imm / src.
pub(crate) const JEQ_IMM: u8 = 0x15;
pub(crate) const JNE_IMM: u8 = 0x55;
pub(crate) const JGE_IMM: u8 = 0x35;
pub(crate) const JEQ_REG: u8 = 0x1d;
pub(crate) const JNE_REG: u8 = 0x5d;
/// BPF_JMP | BPF_JA: jump always.
pub(crate) const JA: u8 = 0x05;
/// BPF_JMP | BPF_CALL: call helper imm. BPF_JMP | BPF_EXIT: return r0.
pub(crate) const CALL: u8 = 0x85;
pub(crate) const EXIT: u8 = 0x95;

/// The helpers called (`enum bpf_func_id`, linux/bpf.h).
pub(crate) const MAP_LOOKUP_ELEM: i32 = 1;
pub(crate) const MAP_DELETE_ELEM: i32 = 3;
pub(crate) const KTIME_GET_NS: i32 = 5;
pub(crate) const GET_SMP_PROCESSOR_ID: i32 = 8;
pub(crate) const REDIRECT: i32 = 23;
pub(crate) const SKB_LOAD_BYTES: i32 = 26;

/// An instruction list under construction, jumps to labels of type `L`.
#[derive(Debug)]
pub(crate) struct Asm<L> {
    pub(crate) insns: Vec<Insn>,
    labels: Vec<(L, usize)>,
    jumps: Vec<(usize, L)>,
}

impl<L> Default for Asm<L> {
    fn default() -> Self {
        Asm {
            insns: Vec::new(),
            labels: Vec::new(),
            jumps: Vec::new(),
        }
    }
}

pub(crate) const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

impl<L: Copy + PartialEq + Debug> Asm<L> {
    pub(crate) fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(insn(code, dst, src, off, imm));
    }

    /// A conditional jump (`code` with `dst` and `src` or `imm`) to `to`.
    pub(crate) fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: L) {
        self.jumps.push((self.insns.len(), to));
        self.op(code, dst, src, 0, imm);
    }

    pub(crate) fn label(&mut self, label: L) {
        self.labels.push((label, self.insns.len()));
    }

    pub(crate) fn call(&mut self, helper: i32) {
        self.op(CALL, 0, 0, 0, helper);
    }

    /// `dst` = the map of descriptor `fd` (the verifier turns it into the
    /// map's address).
    pub(crate) fn load_map(&mut self, dst: u8, fd: RawFd) {
        self.op(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd);
        self.op(0, 0, 0, 0, 0);
    }

    /// The list, every jump's offset (in instructions, from the next one)
    /// filled in. Panics on a jump to a label never placed: a bug in the
    /// program's writer, which its tests would show.
    pub(crate) fn finish(mut self) -> Vec<Insn> {
        for &(at, to) in &self.jumps {
            let target = self
                .labels
                .iter()
                .find(|(label, _)| *label == to)
                .map(|&(_, target)| target)
                .unwrap_or_else(|| panic!("eBPF jump to {to:?}, which is nowhere"));
            let off = target as isize - (at as isize + 1);
            self.insns[at].off = i16::try_from(off).expect("a jump within 32k instructions");
        }
        self.insns
    }
}

/// Checks what every program written here must hold: each jump lands on an
/// instruction of the program (not the second half of a 64-bit load) and
/// goes forward (the verifier refuses loops it cannot bound), and the
/// program ends in an exit. For the writers' tests.
#[cfg(test)]
pub(crate) fn assert_well_formed(name: &str, program: &[Insn]) {
    let second_halves: Vec<usize> = program
        .iter()
        .enumerate()
        .filter(|(_, insn)| insn.code == LD_IMM64)
        .map(|(at, _)| at + 1)
        .collect();
    for (at, insn) in program.iter().enumerate() {
        let is_jump = insn.code & 0x07 == 0x05 && ![CALL, EXIT].contains(&insn.code);
        if !is_jump {
            continue;
        }
        let target = at as isize + 1 + insn.off as isize;
        assert!(
            (0..program.len() as isize).contains(&target),
            "{name}: jump at {at} to {target}"
        );
        assert!(
            !second_halves.contains(&(target as usize)),
            "{name}: jump at {at} into a 64-bit load"
        );
        assert!(insn.off > 0, "{name}: jump at {at} goes backwards");
    }
    assert_eq!(
        program.last().map(|i| i.code),
        Some(EXIT),
        "{name} ends in exit"
    );
}

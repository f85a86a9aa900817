//! The steering program of a port's lanes (the rule in [`super`]), and the
//! instructions with which a socket filter counts a dropped frame as taken.
//!
//! Registers: r6 = the ledger's value, r7 = the lane chosen, r8 = the last
//! lane. The map's key (0, a u32) is at r10-4.

use std::os::fd::RawFd;

use crate::ebpf_asm::*;
use crate::sys::bpf::Insn;

/// Where a jump goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    /// Return r7.
    Out,
    /// The wanted lane becomes the last one.
    Move,
    /// The last lane is kept.
    Stay,
    /// r7 is the lane: count it queued.
    Count,
}

/// Where the map's key is on the stack.
const KEY: i16 = -4;

/// r0 = the ledger's value (its one entry), or 0; through r1, r2.
pub(crate) fn look_up_ledger<L: Copy + PartialEq + std::fmt::Debug>(
    asm: &mut Asm<L>,
    ledger: RawFd,
    key: i16,
) {
    asm.op(ST_W, R10, 0, key, 0);
    asm.load_map(R1, ledger);
    asm.op(MOV64_REG, R2, R10, 0, 0);
    asm.op(ADD64_IMM, R2, 0, 0, i32::from(key));
    asm.call(MAP_LOOKUP_ELEM);
}

/// The steering program for a port of `lanes` lanes whose ledger is in
/// the map `ledger.0` from byte `ledger.1` of its value on: wants the lane
/// of the CPU (`target` `None`: CPU `c` has lane `c % lanes`) or lane
/// `target`, and follows the rule. Returns the lane (the kernel takes it
/// modulo the number of lanes).
pub(crate) fn steering((ledger, at): (RawFd, i16), lanes: usize, target: Option<u32>) -> Vec<Insn> {
    let lanes = i32::try_from(lanes.max(1)).expect("fewer lanes than 2^31");
    let last = at;
    let queued = |offset: i16| at + 8 + offset;
    let taken = |offset: i16| at + 8 + 8 * lanes as i16 + offset;
    let mut asm = Asm::<Label>::default();
    // r7 = the lane wanted.
    match target {
        None => {
            asm.call(GET_SMP_PROCESSOR_ID);
            asm.op(MOV64_REG, R7, R0, 0, 0);
            asm.op(MOD32_IMM, R7, 0, 0, lanes);
        }
        Some(lane) => asm.op(MOV64_IMM, R7, 0, 0, i32::try_from(lane).unwrap_or(0)),
    }
    look_up_ledger(&mut asm, ledger, KEY);
    // No ledger (cannot happen: an array's entries always exist): as
    // wanted, uncounted.
    asm.jump(JEQ_IMM, R0, 0, 0, Label::Out);
    asm.op(MOV64_REG, R6, R0, 0, 0);
    // The bounds the verifier needs, before a lane indexes the value.
    asm.jump(JGE_IMM, R7, 0, lanes, Label::Out);
    asm.op(LDX_DW, R8, R6, last, 0);
    // Rule 1: the last lane is the one wanted, or it is drained
    // (queued == taken); a last lane out of range is replaced.
    asm.jump(JEQ_REG, R8, R7, 0, Label::Count);
    asm.jump(JGE_IMM, R8, 0, lanes, Label::Move);
    point_at_lane(&mut asm, R8);
    asm.op(LDX_DW, R4, R3, queued(0), 0);
    asm.op(LDX_DW, R5, R3, taken(0), 0);
    asm.jump(JNE_REG, R4, R5, 0, Label::Stay);
    asm.label(Label::Move);
    asm.op(STX_DW, R6, R7, last, 0);
    asm.jump(JA, 0, 0, 0, Label::Count);
    // Rule 2: frames still wait in the last lane, or are being forwarded
    // from it: this one goes behind them.
    asm.label(Label::Stay);
    asm.op(MOV64_REG, R7, R8, 0, 0);
    // Rule 3: queued[r7] += 1.
    asm.label(Label::Count);
    point_at_lane(&mut asm, R7);
    asm.op(MOV64_IMM, R1, 0, 0, 1);
    asm.op(ATOMIC_DW, R3, R1, queued(0), ATOMIC_ADD);
    asm.label(Label::Out);
    asm.op(MOV64_REG, R0, R7, 0, 0);
    asm.op(EXIT, 0, 0, 0, 0);
    asm.finish()
}

/// r3 = the ledger's value (r6) + 8 × the lane in `lane`: the lane's
/// words are then at fixed offsets from r3 (through r2).
fn point_at_lane(asm: &mut Asm<Label>, lane: u8) {
    asm.op(MOV64_REG, R2, lane, 0, 0);
    asm.op(LSH64_IMM, R2, 0, 0, 3);
    asm.op(MOV64_REG, R3, R6, 0, 0);
    asm.op(ADD64_REG, R3, R2, 0, 0);
}

/// Instructions that add one to the `taken` at `taken_offset` in the
/// ledger `ledger`, using `key` on the stack; r0 to r2 are lost. For a
/// socket filter that drops a frame the steering counted.
pub(crate) fn count_taken<L: Copy + PartialEq + std::fmt::Debug>(
    asm: &mut Asm<L>,
    ledger: RawFd,
    taken_offset: i16,
    key: i16,
    after: L,
) {
    look_up_ledger(asm, ledger, key);
    asm.jump(JEQ_IMM, R0, 0, 0, after);
    asm.op(MOV64_IMM, R1, 0, 0, 1);
    asm.op(ATOMIC_DW, R0, R1, taken_offset, ATOMIC_ADD);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_are_well_formed() {
        assert_well_formed("by CPU", &steering((1000, 0), 2, None));
        assert_well_formed("solo", &steering((1000, 40), 4, Some(3)));
    }

    /// What `field` says of each of `program`'s instructions of `code`.
    fn of(program: &[Insn], code: u8, field: fn(&Insn) -> i32) -> Vec<i32> {
        let matching = program.iter().filter(|insn| insn.code == code);
        matching.map(field).collect()
    }

    #[test]
    fn the_map_is_the_one_given_and_the_counts_where_the_ledger_keeps_them() {
        let program = steering((1000, 72), 4, None);
        assert_eq!(of(&program, LD_IMM64, |insn| insn.imm), [1000]);
        // In the slot from byte 72 on: the last lane at 0, queued[i] at
        // 8 + 8i, taken[i] at 8 + 8 * 4 + 8i.
        let offset = |insn: &Insn| i32::from(insn.off);
        assert_eq!(of(&program, LDX_DW, offset), [72, 80, 112]);
        assert_eq!(of(&program, ATOMIC_DW, offset), [80]);
    }
}

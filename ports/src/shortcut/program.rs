//! The shortcut's two eBPF programs, as instruction lists.
//!
//! Both can make the same decision on a frame (see the module docs of
//! [`super`]); the code that makes it is emitted once, by [`decide`], into
//! both. Then the TCX program forwards (notes the time, counts, redirects)
//! and the socket filter drops; where the decision is "not ours", the TCX
//! program hands the frame on (TCX_NEXT) and the socket filter keeps it
//! whole, after deleting a moved source's entry.
//!
//! The filter runs first, and leaves its verdict in the frame's control
//! block (`skb->cb`, which a socket filter may write and a TCX program
//! read; nothing between the two touches the part they use): a
//! [`VerdictTag`] (8 bytes, random per shortcut), the interface the frame
//! arrived on, and the destination's interface, or 0 for "not ours". The
//! TCX program takes a verdict it finds there for the frame in hand instead
//! of deciding again, so a map change between the two cannot make them
//! disagree (the frame forwarded by the kernel and read by the switch, or
//! by neither). Without one (no filter of this shortcut ran: another
//! switch's, or none) it decides itself.
//!
//! The programs are written out instruction by instruction (the encoding
//! is in the kernel's Documentation/bpf/standardization/
//! instruction-set.rst), with labels in place of jump offsets, which
//! [`Asm::finish`] fills in. The map descriptors go into the instructions
//! that load them (`BPF_PSEUDO_MAP_FD`), so a list is built for the maps
//! it will use, just before it is loaded.
//!
//! Registers: r1 to r5 are a helper's arguments and do not survive a call;
//! r0 is its result and the program's; r6 to r9 survive calls; r10 is the
//! frame pointer (read only). The stack, below r10:
//!
//! ```text
//!   r10-8  .. r10-1    key of the source:      its MAC, then 2 zero bytes
//!   r10-16 .. r10-9    key of the destination: its MAC, then 2 zero bytes
//!   r10-20 .. r10-17   counters key (u32): the ingress ifindex
//!   r10-24 .. r10-21   counters key (u32): the egress ifindex
//!   r10-56 .. r10-33   the frame's first 24 bytes: the Ethernet header,
//!                      then as far as IPv4's protocol byte (23)
//!   r10-60 .. r10-57   the lane ledger's key (u32 0), for a socket filter
//!                      that counts its drops there
//! ```
//!
//! The verdict, in `__sk_buff`'s `cb` (five u32, offsets 48..68):
//!
//! ```text
//!   cb[0], cb[1]   the tag
//!   cb[2]          the ifindex the frame arrived on
//!   cb[3]          the destination's ifindex, or 0: not ours
//! ```
//!
//! The verifier wants every stack access aligned to its size, so the MACs
//! (at 0 and 6 in the frame) are copied into the keys 2 bytes at a time.

use std::os::fd::RawFd;

use crate::ebpf_asm::*;
use crate::sys::bpf::Insn;

/// What the TCX program returns for "not ours": the next program, or the
/// stack (TCX_NEXT in linux/bpf.h; TCX_PASS would skip later programs).
pub(crate) const TCX_NEXT: i32 = -1;
/// What `bpf_redirect` returns, and the TCX program with it
/// (TC_ACT_REDIRECT = TCX_REDIRECT).
#[cfg(test)]
pub(crate) const TC_ACT_REDIRECT: i32 = 7;

/// Where on the stack (offsets from r10) the keys are kept.
const SRC_KEY: i16 = -8;
const DST_KEY: i16 = -16;
const RX_KEY: i16 = -20;
const TX_KEY: i16 = -24;
const HEADER: i16 = -56;
/// The ledger's key (u32), for a socket filter that counts its drops.
const LEDGER_KEY: i16 = -60;
/// How much of the frame is loaded at once: up to and with IPv4's
/// protocol byte. An Ethernet header alone is 14 bytes.
const HEADER_LEN: i32 = 24;
const ETHERNET_HEADER_LEN: i32 = 14;
/// Where in the frame the EtherType is, and the two MACs.
const ETHERTYPE_AT: i16 = 12;
const DST_MAC_AT: i16 = 0;
const SRC_MAC_AT: i16 = 6;

/// The EtherTypes of IPv4 and IPv6, as a 16-bit load from the frame reads
/// them on this machine (the frame holds them big-endian).
const ETHERTYPE_IPV4: i32 = u16::from_ne_bytes([0x08, 0x00]) as i32;
const ETHERTYPE_IPV6: i32 = u16::from_ne_bytes([0x86, 0xdd]) as i32;
/// Where the protocol byte is: IPv4's `protocol` (14 + 9), IPv6's `next
/// header` (14 + 6; a datagram behind extension headers is not looked for).
const IPV4_PROTOCOL_AT: i16 = 23;
const IPV6_NEXT_HEADER_AT: i16 = 20;
/// IP protocol number of UDP.
const UDP: i32 = 17;

/// Offsets in `struct __sk_buff` (linux/bpf.h): the frame's length, and
/// the index of the interface it arrived on (both u32).
const SKB_LEN: i16 = 0;
const SKB_IFINDEX: i16 = 40;
/// Where in `struct __sk_buff` the filter leaves its verdict (`cb[0..4]`).
const CB_TAG: i16 = 48;
const CB_ARRIVED: i16 = 56;
const CB_TO: i16 = 60;

/// Offsets in a `macs` value: `{ ifindex: u32, flags: u32, last_seen_ns: u64 }`.
const MAC_IFINDEX: i16 = 0;
const MAC_LAST_SEEN: i16 = 8;

/// Offsets in a `counters` value (this CPU's slot).
const RX_FRAMES: i16 = 0;
const TX_FRAMES: i16 = 16;
// rx_bytes and tx_bytes follow their frames (+ 8): see `count`.

/// Where a jump goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    /// "Not ours": the stack (TCX) or the switch (socket filter) has it.
    Pass,
    /// The source is known on another port than this one.
    Moved,
    /// The egress port's count.
    CountTx,
    /// The redirect, counted.
    Redirect,
    /// The frame's first [`HEADER_LEN`] bytes are on the stack.
    Loaded,
    /// r1 holds the IP protocol of an IPv4 or IPv6 frame.
    CheckProtocol,
    /// The frame is not a UDP datagram: on to the addresses.
    NotUdp,
    /// The socket filter drops the frame.
    Drop,
    /// No verdict of the filter's for this frame: the TCX program decides.
    Decide,
    /// Forwarded: the source's entry (r8) notes when it was heard.
    Note,
    /// Forwarded: counted from here on.
    CountRx,
}

/// The mark of this shortcut's filter on a verdict it left: two random
/// words, each under 2^31 (so that comparing one, zero-extended, with an
/// instruction's sign-extended 32-bit immediate is exact), never both 0
/// (a control block the filter cleared and did not fill).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VerdictTag([i32; 2]);

impl VerdictTag {
    /// A tag no other shortcut is likely to have: a verdict left by
    /// another switch's filter (a nested one, whose frames reach this one
    /// with their control block) must not be taken for ours.
    pub(crate) fn random() -> VerdictTag {
        use std::hash::BuildHasher;
        let bits = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        VerdictTag::from_bits(bits)
    }

    fn from_bits(bits: u64) -> VerdictTag {
        let low = (bits & 0x7fff_ffff) as i32 | 1;
        let high = ((bits >> 32) & 0x7fff_ffff) as i32;
        VerdictTag([low, high])
    }

    /// The tag as the control block holds it (cb[0], cb[1]).
    #[cfg(test)]
    pub(crate) fn words(self) -> [u32; 2] {
        [self.0[0] as u32, self.0[1] as u32]
    }
}

/// The decision both programs make, up to "forward" (the rules in the
/// module docs of [`super`], UDP and runts first): falls through with
/// the frame's destination known on another port and its source on this
/// one (r6 = the context, r7 = the destination's ifindex, r8 = the
/// source's entry, r9 = this port's ifindex); jumps to [`Label::Pass`]
/// when the frame is not ours, to [`Label::Moved`] when its source is
/// known on another port. Expects the context in r6 (see [`begin`]).
fn decide(asm: &mut Asm<Label>, macs: RawFd) {
    // The frame's first 24 bytes, in one helper call
    // (bpf_skb_load_bytes(skb, 0, r10 + HEADER, 24)): both MACs, the
    // EtherType and the IP protocol byte, wherever they are in the skb.
    load_bytes(asm, 0, HEADER, HEADER_LEN);
    asm.jump(JEQ_IMM, R0, 0, 0, Label::Loaded);
    // A shorter frame: its Ethernet header alone, or it is a runt, which
    // the switch drops and counts. An IP frame this short is cut short
    // (the switch forwards it as it is); anything else goes on to the
    // addresses.
    load_bytes(asm, 0, HEADER, ETHERNET_HEADER_LEN);
    asm.jump(JNE_IMM, R0, 0, 0, Label::Pass);
    asm.op(LDX_H, R3, R10, HEADER + ETHERTYPE_AT, 0);
    asm.jump(JEQ_IMM, R3, 0, ETHERTYPE_IPV4, Label::Pass);
    asm.jump(JEQ_IMM, R3, 0, ETHERTYPE_IPV6, Label::Pass);
    asm.jump(JA, 0, 0, 0, Label::NotUdp);
    // UDP stays with the switch: a worker sends a run of one flow's
    // datagrams as one UDP GSO super-frame (`crate::coalesce`), which the
    // receiver takes in one go; for small datagrams that beats the
    // kernel's one at a time (docs/PERFORMANCE.md). Looked at first, so a
    // datagram costs no map lookup. r1 = the protocol byte of IPv4 (or,
    // below, IPv6), r3 = the EtherType.
    asm.label(Label::Loaded);
    asm.op(LDX_H, R3, R10, HEADER + ETHERTYPE_AT, 0);
    asm.op(LDX_B, R1, R10, HEADER + IPV4_PROTOCOL_AT, 0);
    asm.jump(JEQ_IMM, R3, 0, ETHERTYPE_IPV4, Label::CheckProtocol);
    asm.op(LDX_B, R1, R10, HEADER + IPV6_NEXT_HEADER_AT, 0);
    asm.jump(JNE_IMM, R3, 0, ETHERTYPE_IPV6, Label::NotUdp);
    asm.label(Label::CheckProtocol);
    asm.jump(JEQ_IMM, R1, 0, UDP, Label::Pass);
    asm.label(Label::NotUdp);
    // The keys: the destination MAC (bytes 0..6) and the source MAC
    // (6..12), each followed by 2 zero bytes, as in every key the switch
    // writes.
    asm.op(ST_DW, R10, 0, DST_KEY, 0);
    asm.op(ST_DW, R10, 0, SRC_KEY, 0);
    copy_mac(asm, HEADER + DST_MAC_AT, DST_KEY);
    copy_mac(asm, HEADER + SRC_MAC_AT, SRC_KEY);
    // r7 = macs[destination], or not ours. A group address never has an
    // entry (the switch inserts none), so broadcast and multicast pass.
    map_call(asm, macs, DST_KEY, MAP_LOOKUP_ELEM);
    asm.jump(JEQ_IMM, R0, 0, 0, Label::Pass);
    asm.op(MOV64_REG, R7, R0, 0, 0);
    // r8 = macs[source], or not ours: the switch has not learned (or has
    // forgotten) the sender, and must hear it.
    map_call(asm, macs, SRC_KEY, MAP_LOOKUP_ELEM);
    asm.jump(JEQ_IMM, R0, 0, 0, Label::Pass);
    asm.op(MOV64_REG, R8, R0, 0, 0);
    // r9 = skb->ifindex, the port the frame came in by. The source known
    // on another port has moved: the switch learns that, not us.
    asm.op(LDX_W, R9, R6, SKB_IFINDEX, 0);
    asm.op(LDX_W, R1, R8, MAC_IFINDEX, 0);
    asm.jump(JNE_REG, R1, R9, 0, Label::Moved);
    // r7 = the destination's ifindex (read once: the entry may be replaced
    // meanwhile). Back out of the port it came in by (hairpin): not ours,
    // the switch drops and counts it.
    asm.op(LDX_W, R7, R7, MAC_IFINDEX, 0);
    asm.jump(JEQ_REG, R7, R9, 0, Label::Pass);
}

/// Keeps the context (r1 on entry) where calls leave it alone: r6.
fn begin(asm: &mut Asm<Label>) {
    asm.op(MOV64_REG, R6, R1, 0, 0);
}

/// The filter's verdict, into the frame's control block: `tag`, the
/// interface it arrived on (register `arrived`) and the one it leaves by
/// (register `to`, 0 for not ours). Uses r1.
fn leave_verdict(asm: &mut Asm<Label>, tag: VerdictTag, arrived: u8, to: u8) {
    for (word, at) in tag.0.into_iter().zip([CB_TAG, CB_TAG + 4]) {
        asm.op(MOV64_IMM, R1, 0, 0, word);
        asm.op(STX_W, R6, R1, at, 0);
    }
    asm.op(STX_W, R6, arrived, CB_ARRIVED, 0);
    asm.op(STX_W, R6, to, CB_TO, 0);
}

/// Takes the filter's verdict when the frame carries one of `tag`'s for
/// the interface it is on: not ours goes to [`Label::Pass`], a destination
/// on to [`Label::Note`] with r7 = its ifindex, r8 = the source's entry and
/// r9 = this port's ifindex, or to [`Label::CountRx`] when the source's
/// entry is gone meanwhile (the filter dropped the frame: forward it all
/// the same). No verdict: on to [`Label::Decide`].
fn follow_verdict(asm: &mut Asm<Label>, macs: RawFd, tag: VerdictTag) {
    for (word, at) in tag.0.into_iter().zip([CB_TAG, CB_TAG + 4]) {
        asm.op(LDX_W, R1, R6, at, 0);
        asm.jump(JNE_IMM, R1, 0, word, Label::Decide);
    }
    asm.op(LDX_W, R9, R6, SKB_IFINDEX, 0);
    asm.op(LDX_W, R1, R6, CB_ARRIVED, 0);
    asm.jump(JNE_REG, R1, R9, 0, Label::Decide);
    asm.op(LDX_W, R7, R6, CB_TO, 0);
    asm.jump(JEQ_IMM, R7, 0, 0, Label::Pass);
    // The source's entry, to note when it was heard: the frame's first 14
    // bytes are there (the filter read them).
    load_bytes(asm, 0, HEADER, ETHERNET_HEADER_LEN);
    asm.jump(JNE_IMM, R0, 0, 0, Label::CountRx);
    asm.op(ST_DW, R10, 0, SRC_KEY, 0);
    copy_mac(asm, HEADER + SRC_MAC_AT, SRC_KEY);
    map_call(asm, macs, SRC_KEY, MAP_LOOKUP_ELEM);
    asm.jump(JEQ_IMM, R0, 0, 0, Label::CountRx);
    asm.op(MOV64_REG, R8, R0, 0, 0);
    asm.jump(JA, 0, 0, 0, Label::Note);
}

/// Calls map helper `helper` (lookup or delete) on the map of descriptor
/// `map` with the key at r10 + `key`; the result lands in r0.
fn map_call(asm: &mut Asm<Label>, map: RawFd, key: i16, helper: i32) {
    asm.load_map(R1, map);
    asm.op(MOV64_REG, R2, R10, 0, 0);
    asm.op(ADD64_IMM, R2, 0, 0, i32::from(key));
    asm.call(helper);
}

/// bpf_skb_load_bytes(skb, `offset`, r10 + `to`, `len`): `len` bytes of
/// the frame from `offset` on to the stack, wherever they are in the skb
/// (linear or not); r0 = 0 when the frame has them.
fn load_bytes(asm: &mut Asm<Label>, offset: i32, to: i16, len: i32) {
    asm.op(MOV64_IMM, R2, 0, 0, offset);
    asm.op(MOV64_REG, R1, R6, 0, 0);
    asm.op(MOV64_REG, R3, R10, 0, 0);
    asm.op(ADD64_IMM, R3, 0, 0, i32::from(to));
    asm.op(MOV64_IMM, R4, 0, 0, len);
    asm.call(SKB_LOAD_BYTES);
}

/// Copies a MAC from r10 + `from` to r10 + `to` on the stack, 2 bytes at
/// a time (both offsets even: see the module docs on alignment).
fn copy_mac(asm: &mut Asm<Label>, from: i16, to: i16) {
    for at in [0, 2, 4] {
        asm.op(LDX_H, R1, R10, from + at, 0);
        asm.op(STX_H, R10, R1, to + at, 0);
    }
}

/// Adds one frame of skb->len bytes to the counters of the port whose
/// ifindex is in `port` (this CPU's slot, kept at `key` on the stack):
/// `frames` += 1 and the u64 after it += the length; on to `next` either
/// way, also when the port has no counters.
fn count(asm: &mut Asm<Label>, counters: RawFd, port: u8, key: i16, frames: i16, next: Label) {
    asm.op(STX_W, R10, port, key, 0);
    map_call(asm, counters, key, MAP_LOOKUP_ELEM);
    asm.jump(JEQ_IMM, R0, 0, 0, next);
    asm.op(LDX_W, R1, R6, SKB_LEN, 0);
    asm.op(LDX_DW, R2, R0, frames, 0);
    asm.op(ADD64_IMM, R2, 0, 0, 1);
    asm.op(STX_DW, R0, R2, frames, 0);
    asm.op(LDX_DW, R2, R0, frames + 8, 0);
    asm.op(ADD64_REG, R2, R1, 0, 0);
    asm.op(STX_DW, R0, R2, frames + 8, 0);
}

/// The TCX ingress program: forwards the frames the filter dropped (or,
/// without its verdict, [`decide`] takes) to the egress of their
/// destination's port, noting when their source was heard and counting
/// them; everything else goes on to the stack (and the switch's socket,
/// which has already seen it: packet taps run first).
pub(crate) fn tc_ingress(macs: RawFd, counters: RawFd, tag: VerdictTag) -> Vec<Insn> {
    let mut asm = Asm::<Label>::default();
    begin(&mut asm);
    follow_verdict(&mut asm, macs, tag);
    asm.label(Label::Decide);
    decide(&mut asm, macs);
    asm.label(Label::Note);
    // The source's last_seen_ns = bpf_ktime_get_ns(), stored through the
    // entry found: the switch refreshes its table from it, or a host heard
    // only here would age out of it. (A racing store by another CPU is as
    // good as ours.)
    asm.call(KTIME_GET_NS);
    asm.op(STX_DW, R8, R0, MAC_LAST_SEEN, 0);
    asm.label(Label::CountRx);
    // counters[this port] on this CPU: rx_frames += 1, rx_bytes +=
    // skb->len; then counters[the destination's port]: tx_frames += 1,
    // tx_bytes += skb->len. A port without an entry (being detached) is
    // not counted.
    count(&mut asm, counters, R9, RX_KEY, RX_FRAMES, Label::CountTx);
    asm.label(Label::CountTx);
    count(&mut asm, counters, R7, TX_KEY, TX_FRAMES, Label::Redirect);
    // return bpf_redirect(destination's ifindex, 0): out of that
    // interface (its egress; a veth hands the frame to its peer, the
    // container's end). It returns TC_ACT_REDIRECT, which TCX acts on.
    asm.label(Label::Redirect);
    asm.op(MOV64_REG, R1, R7, 0, 0);
    asm.op(MOV64_IMM, R2, 0, 0, 0);
    asm.call(REDIRECT);
    asm.op(EXIT, 0, 0, 0, 0);
    // Not ours, or a moved source (the socket filter, which ran first,
    // has already deleted its entry): on to the next program or the stack.
    asm.label(Label::Moved);
    asm.label(Label::Pass);
    asm.op(MOV64_IMM, R0, 0, 0, TCX_NEXT);
    asm.op(EXIT, 0, 0, 0, 0);
    asm.finish()
}

/// The socket filter on the port's packet sockets: drops the frames the
/// TCX program forwards (taps run before TCX ingress, so without it the
/// switch would forward them too), keeps everything else whole, and
/// leaves its verdict for the TCX program (marked with `tag`). With
/// `ledger` (its map and where this socket's lane keeps `taken`), counts
/// every frame it drops as taken ([`crate::ledger`]).
pub(crate) fn socket_filter(
    macs: RawFd,
    tag: VerdictTag,
    ledger: Option<(RawFd, i16)>,
) -> Vec<Insn> {
    let mut asm = Asm::<Label>::default();
    begin(&mut asm);
    decide(&mut asm, macs);
    // Forwarded by the kernel: return 0, the socket does not get it.
    leave_verdict(&mut asm, tag, R9, R7);
    if let Some((ledger, taken_at)) = ledger {
        crate::ledger::program::count_taken(&mut asm, ledger, taken_at, LEDGER_KEY, Label::Drop);
        asm.label(Label::Drop);
    }
    asm.op(MOV64_IMM, R0, 0, 0, 0);
    asm.op(EXIT, 0, 0, 0, 0);
    // A moved source: delete its entry (bpf_map_delete_elem(macs, source
    // key)), so that neither the TCX program, which runs next on this
    // frame, nor the frames after it are forwarded by the kernel until
    // the switch, which gets this one, has learned the move and says
    // where the host is now.
    asm.label(Label::Moved);
    map_call(&mut asm, macs, SRC_KEY, MAP_DELETE_ELEM);
    // Not ours: the TCX program is told so, and the socket keeps the
    // whole frame (a filter returns how many bytes to keep; skb->len is
    // all of them).
    asm.label(Label::Pass);
    asm.op(LDX_W, R2, R6, SKB_IFINDEX, 0);
    asm.op(MOV64_IMM, R3, 0, 0, 0);
    leave_verdict(&mut asm, tag, R2, R3);
    asm.op(LDX_W, R0, R6, SKB_LEN, 0);
    asm.op(EXIT, 0, 0, 0, 0);
    asm.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: VerdictTag = VerdictTag([0x1234_5679, 0x0765_4321]);

    /// Both programs, with made-up map descriptors.
    fn both() -> [(&'static str, Vec<Insn>); 2] {
        [
            ("tc", tc_ingress(1000, 1001, TAG)),
            ("filter", socket_filter(1000, TAG, None)),
        ]
    }

    #[test]
    fn every_jump_lands_on_an_instruction_of_its_program() {
        for (name, program) in both() {
            assert_well_formed(name, &program);
        }
    }

    #[test]
    fn both_programs_make_the_decision_with_the_same_instructions() {
        let [(_, tc), (_, filter)] = both();
        let mut asm = Asm::<Label>::default();
        decide(&mut asm, 1000);
        let decision = asm.insns;
        // The jumps' offsets differ (the endings do), not what they test.
        let same = |a: &[Insn]| {
            a.iter()
                .zip(&decision)
                .all(|(a, b)| (a.code, a.regs, a.imm) == (b.code, b.regs, b.imm))
        };
        // The filter decides right after keeping the context; the TCX
        // program after looking for the filter's verdict.
        assert!(same(&filter[1..]));
        let mut asm = Asm::<Label>::default();
        begin(&mut asm);
        follow_verdict(&mut asm, 1000, TAG);
        assert!(same(&tc[asm.insns.len()..]));
    }

    #[test]
    fn the_filter_leaves_a_verdict_on_both_of_its_ways_out() {
        let filter = socket_filter(1000, TAG, None);
        let writes = |at: i16| {
            filter
                .iter()
                .filter(|insn| insn.code == STX_W && insn.regs & 0xf == R6 && insn.off == at)
                .count()
        };
        for at in [CB_TAG, CB_TAG + 4, CB_ARRIVED, CB_TO] {
            assert_eq!(writes(at), 2, "cb at {at}");
        }
    }

    #[test]
    fn a_tag_compares_exactly_and_is_never_all_zero() {
        for bits in [0, u64::MAX, 0x8000_0000_8000_0000] {
            let [low, high] = VerdictTag::from_bits(bits).0;
            assert!(low > 0 && high >= 0, "{bits:#x}");
        }
        assert_ne!(VerdictTag::random(), VerdictTag::random());
    }

    #[test]
    fn the_maps_are_the_ones_given() {
        let tc = tc_ingress(1000, 1001, TAG);
        let maps: Vec<i32> = tc
            .iter()
            .filter(|insn| insn.code == LD_IMM64)
            .map(|insn| {
                assert_eq!(insn.regs >> 4, PSEUDO_MAP_FD);
                insn.imm
            })
            .collect();
        assert_eq!(maps, [1000, 1000, 1000, 1001, 1001]);
    }
}

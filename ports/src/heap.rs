//! How the process's heap serves the gateway's large buffers.
//!
//! Each translated TCP flow has a smoltcp socket with a receive and a send
//! buffer sized for speed (hundreds of KiB), and smoltcp cannot resize a
//! buffer once the socket exists. What keeps 10,000 idle flows small is
//! that a zeroed block from its own anonymous mapping costs no memory until
//! a page of it is touched: a buffer is small at first and grows, page by
//! page, with the bytes that pass through it. glibc gives large blocks
//! their own mapping only while its mmap threshold is below their size,
//! and by default the threshold follows the largest block freed so far;
//! after the first flow ends, later buffers would come from the arena,
//! where `calloc` clears every page of a reused block (all of it resident).
//! [`map_large_blocks`] pins the threshold, so every flow's buffers are
//! fresh mappings and ended flows give their pages back to the kernel.

/// Blocks at least this large get their own mapping: glibc's own default
/// threshold, above the largest frame (64 KiB) so the per-frame buffers
/// of the hot path stay in the arena.
pub const LARGE_BLOCK: usize = 128 * 1024;

/// Pins the C heap's mmap threshold at [`LARGE_BLOCK`] for the whole
/// process. False where that cannot be done (not glibc): buffers then
/// cost what the allocator makes them cost.
pub fn map_large_blocks() -> bool {
    crate::sys::heap::set_mmap_threshold(LARGE_BLOCK)
}

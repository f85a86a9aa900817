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

/// Blocks at least this large get their own mapping: the gateway's stack
/// buffers (256 KiB each way). What the hot path allocates and frees over
/// and over stays below it, in the arena (frames, at most 64 KiB; a flow's
/// relay buffer, a little less than this): a mapping made and unmapped for
/// each of those would cost system calls and page faults in bulk transfers.
pub const LARGE_BLOCK: usize = 256 * 1024;

/// Free memory the heap keeps at the top of an arena before giving it back
/// to the kernel. Pinning the mmap threshold also pins this one (glibc
/// otherwise keeps it at twice the threshold); at its default (128 KiB) a
/// busy flow's relay buffers, freed and allocated again every few frames,
/// would be trimmed and faulted in again each time.
pub const KEEP_AT_TOP: usize = 8 * LARGE_BLOCK;

/// Pins the C heap's mmap threshold at [`LARGE_BLOCK`] (and its trim
/// threshold at [`KEEP_AT_TOP`]) for the whole process. False where that cannot be done (not glibc): buffers then
/// cost what the allocator makes them cost.
pub fn map_large_blocks() -> bool {
    crate::sys::heap::set_mmap_threshold(LARGE_BLOCK)
        && crate::sys::heap::set_trim_threshold(KEEP_AT_TOP)
}

/// Returns what start-up allocated and freed to the kernel. Start-up
/// (parsing the command line, opening ports, netlink) frees more than it
/// keeps, and with the trim threshold pinned at [`KEEP_AT_TOP`] glibc
/// would hold those pages for the life of the process. Called once, when
/// the switch serves. False where nothing was given back (or not glibc).
pub fn give_back_start_up_memory() -> bool {
    crate::sys::heap::give_back_free_memory()
}

/// Lets go of the program's file pages start-up touched (its code and
/// constants, see `sys::code_pages`): an idle switch's resident set then
/// holds the code it runs, not the code it ran once. Called once, when the
/// switch serves. False if it could not be done (logged at debug level).
pub fn give_back_start_up_code() -> bool {
    match crate::sys::code_pages::drop_own_file_pages() {
        Ok(_) => true,
        Err(err) => {
            log::debug!("start-up code pages kept: {err}");
            false
        }
    }
}

//! Zeroed memory in a mapping of its own: no page of it is resident until
//! it is written.
//!
//! A worker's receive batch has room for 32 frames of up to 64 KiB (2 MiB),
//! of which an idle switch uses nothing and a ping a page per slot. From
//! the C heap, a thread's arena clears every block it hands out again
//! (`calloc` cannot tell fresh pages from reused ones there), which made
//! about a fifth of each worker's batch resident at start-up
//! (docs/PERFORMANCE.md). The kernel's anonymous pages are zero until
//! touched, and only the touched ones count.

use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// `len` zeroed bytes of an anonymous private mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct ZeroedPages {
    start: NonNull<u8>,
    len: usize,
}

// SAFETY: a ZeroedPages owns its mapping alone (nothing else holds the
// pointer), so it may move to another thread, and shared references to it
// give only shared access to the bytes.
unsafe impl Send for ZeroedPages {}
// SAFETY: as above; `&ZeroedPages` hands out `&[u8]` only.
unsafe impl Sync for ZeroedPages {}

impl ZeroedPages {
    /// A new mapping of `len` bytes (at least one), all zero.
    pub(crate) fn new(len: usize) -> io::Result<ZeroedPages> {
        let len = len.max(1);
        // SAFETY: an anonymous private mapping at an address of the
        // kernel's choosing touches no memory of ours; the result is
        // checked before use.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if start == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start =
            NonNull::new(start.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(ZeroedPages { start, len })
    }
}

impl ZeroedPages {
    /// Gives every page back to the kernel: all bytes read zero again, and
    /// none is resident until written. The mapping stays.
    pub(crate) fn release(&mut self) {
        // SAFETY: [start, start + len) is this value's own private anonymous
        // mapping, and `&mut self` means no slice of it is alive:
        // MADV_DONTNEED only drops its pages, which then read as zero.
        unsafe { libc::madvise(self.start.as_ptr().cast(), self.len, libc::MADV_DONTNEED) };
    }

    /// How many of the mapping's pages are resident now.
    #[cfg(test)]
    fn resident_pages(&self) -> usize {
        let page = 4096;
        let mut resident = vec![0u8; self.len.div_ceil(page)];
        // SAFETY: the range is this value's own mapping (page-aligned, as
        // mmap gives it), and the vector has a byte per page of it.
        let done =
            unsafe { libc::mincore(self.start.as_ptr().cast(), self.len, resident.as_mut_ptr()) };
        assert_eq!(done, 0, "mincore: {}", io::Error::last_os_error());
        resident.iter().filter(|byte| **byte & 1 == 1).count()
    }
}

impl Deref for ZeroedPages {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `start` is the start of a live mapping of `len` readable
        // bytes, zeroed by the kernel (so initialized), owned by `self`.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }
}

impl DerefMut for ZeroedPages {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only
        // access for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}

impl Drop for ZeroedPages {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, unmapped once; no slice of it
        // outlives `self`.
        unsafe { libc::munmap(self.start.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_zero_writable_and_untouched_until_written() {
        let mut pages = ZeroedPages::new(64 * 1024 + 4).unwrap();
        assert_eq!(pages.len(), 64 * 1024 + 4);
        assert!(pages.iter().all(|b| *b == 0));
        pages[65_000] = 7;
        assert_eq!(pages[65_000], 7);
        let moved = std::thread::spawn(move || pages[65_000]).join().unwrap();
        assert_eq!(moved, 7);
        assert_eq!(ZeroedPages::new(0).unwrap().len(), 1);
    }

    #[test]
    fn only_written_pages_are_resident_and_released_ones_read_zero() {
        let mut pages = ZeroedPages::new(64 * 1024 + 4).unwrap();
        assert_eq!(pages.resident_pages(), 0, "nothing written yet");
        pages[0] = 1;
        pages[20_000] = 2;
        assert_eq!(pages.resident_pages(), 2);
        pages.release();
        assert_eq!(pages.resident_pages(), 0, "given back");
        pages[5] = 3;
        assert_eq!(pages.resident_pages(), 1, "a write makes its page resident");
        // (Reading a page not written maps the kernel's zero page, which
        // mincore counts as resident: so this comes last.)
        assert_eq!(
            (pages[0], pages[5], pages[20_000]),
            (0, 3, 0),
            "the rest reads zero"
        );
    }
}

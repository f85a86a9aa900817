//! glibc's `mallopt`: how the C heap serves large blocks.

/// Sets glibc's mmap threshold to `bytes`: every block that large gets its
/// own anonymous mapping (fresh zero pages, made resident only when
/// touched; unmapped when freed). Setting it also turns off glibc's
/// dynamic threshold, which otherwise rises to the size of the last freed
/// mapped block and moves such blocks to the arena, where `calloc` clears
/// (and so makes resident) every page of a reused block. False where the
/// C library is not glibc, or if glibc refused.
pub(crate) fn set_mmap_threshold(bytes: usize) -> bool {
    #[cfg(target_env = "gnu")]
    {
        let Ok(bytes) = libc::c_int::try_from(bytes) else {
            return false;
        };
        // SAFETY: mallopt takes two integers and changes only the
        // allocator's tuning; glibc serializes it against allocations.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = bytes;
        false
    }
}

/// Sets glibc's trim threshold to `bytes`: free memory at the top of the
/// heap beyond it goes back to the kernel. False where the C library is
/// not glibc, or if glibc refused.
pub(crate) fn set_trim_threshold(bytes: usize) -> bool {
    #[cfg(target_env = "gnu")]
    {
        let Ok(bytes) = libc::c_int::try_from(bytes) else {
            return false;
        };
        // SAFETY: as for `set_mmap_threshold`.
        unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, bytes) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = bytes;
        false
    }
}

/// Gives the free memory of every arena back to the kernel (glibc's
/// `malloc_trim(0)`), whatever the trim threshold. False where the C
/// library is not glibc, or if there was nothing to give back.
pub(crate) fn give_back_free_memory() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim takes an integer and only returns free pages
        // to the kernel; glibc serializes it against allocations.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

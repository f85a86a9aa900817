//! eBPF maps (man 2 bpf, BPF_MAP_*): made, read and written from user
//! space, shared with the programs that use them by descriptor.
//!
//! Every lookup has the kernel copy a whole value into a buffer of ours,
//! so a [`Map`] knows its key and value sizes and checks every buffer
//! against them; that is what makes these calls safe. A per-CPU map's
//! value, seen from here, is one slot per possible CPU.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicU64;

use super::bpf::{
    BPF_MAP_CREATE, BPF_MAP_DELETE_ELEM, BPF_MAP_LOOKUP_BATCH, BPF_MAP_LOOKUP_ELEM,
    BPF_MAP_UPDATE_ELEM, bpf, owned,
};

/// BPF_ANY: an update creates the entry or replaces it.
const BPF_ANY: u64 = 0;

/// BPF_F_NO_PREALLOC: entries are allocated as they are added, not all at
/// creation.
const BPF_F_NO_PREALLOC: u32 = 1;

/// BPF_F_MMAPABLE: an array map's values can be mapped into user space.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// A map type (`enum bpf_map_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapType {
    /// BPF_MAP_TYPE_HASH.
    Hash = 1,
    /// BPF_MAP_TYPE_ARRAY, made mmap-able (for [`SharedWords`]).
    Array = 2,
    /// BPF_MAP_TYPE_PERCPU_HASH: one value per possible CPU; a program
    /// sees its own CPU's.
    PercpuHash = 5,
}

/// A map, with the sizes every buffer passed for it must have.
#[derive(Debug)]
pub(crate) struct Map {
    fd: OwnedFd,
    key_size: usize,
    /// Bytes a lookup copies out: the value, or for a per-CPU map one
    /// value rounded up to 8 bytes per possible CPU.
    value_size: usize,
}

/// The BPF_MAP_CREATE prefix of `union bpf_attr`.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// The BPF_MAP_*_ELEM prefix of `union bpf_attr`.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

impl Map {
    /// Makes a map of `map_type` named `name` (at most 15 bytes are kept;
    /// `bpftool map` shows it) for `max_entries` entries.
    pub(crate) fn create(
        map_type: MapType,
        name: &str,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> io::Result<Map> {
        let mut map_name = [0u8; 16];
        for (dst, src) in map_name[..15].iter_mut().zip(name.bytes()) {
            *dst = src;
        }
        let mut attr = MapCreateAttr {
            map_type: map_type as u32,
            key_size,
            value_size,
            max_entries,
            // The MAC map is sized for the whole MAC table (`--max-macs`),
            // which may be large and is mostly empty: its entries are
            // allocated as the switch adds them (it alone adds; programs
            // only read, update in place and delete). The per-CPU counters,
            // one entry per port, are allocated up front, as by default.
            map_flags: match map_type {
                MapType::Hash => BPF_F_NO_PREALLOC,
                MapType::PercpuHash => 0,
                MapType::Array => BPF_F_MMAPABLE,
            },
            inner_map_fd: 0,
            numa_node: 0,
            map_name,
        };
        let per_lookup = match map_type {
            MapType::Hash | MapType::Array => value_size as usize,
            MapType::PercpuHash => {
                (value_size as usize).div_ceil(8) * 8 * super::cpu::possible_cpus()?
            }
        };
        // SAFETY: MapCreateAttr is the BPF_MAP_CREATE prefix of bpf_attr and
        // holds no addresses.
        let raw = unsafe { bpf(BPF_MAP_CREATE, &mut attr) }?;
        Ok(Map {
            fd: owned(raw)?,
            key_size: key_size as usize,
            value_size: per_lookup,
        })
    }

    /// The bytes a lookup fills and an update takes.
    pub(crate) fn value_size(&self) -> usize {
        self.value_size
    }

    /// The map's descriptor, for a program that uses it.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn check(&self, key: &[u8], value: Option<usize>) -> io::Result<()> {
        let value_ok = value.is_none_or(|len| len == self.value_size);
        if key.len() != self.key_size || !value_ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "key or value of the wrong size for this map",
            ));
        }
        Ok(())
    }

    fn attr(&self, key: *const u8, value: *const u8, flags: u64) -> ElemAttr {
        ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: key as u64,
            value: value as u64,
            flags,
        }
    }

    /// Copies the value of `key` into `value`; false if there is none.
    pub(crate) fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        self.check(key, Some(value.len()))?;
        let mut attr = self.attr(key.as_ptr(), value.as_mut_ptr(), 0);
        // SAFETY: `key` holds key_size bytes and `value` value_size writable
        // bytes (checked above), the sizes the kernel reads and writes for
        // this map; both outlive the call.
        absent_is_false(unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) })
    }

    /// Creates or replaces the entry of `key`. E2BIG when the map is full.
    pub(crate) fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.check(key, Some(value.len()))?;
        let mut attr = self.attr(key.as_ptr(), value.as_ptr(), BPF_ANY);
        // SAFETY: `key` and `value` hold the sizes the kernel reads for this
        // map (checked above) and outlive the call; neither is written.
        unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }?;
        Ok(())
    }

    /// Deletes the entry of `key`; false if there was none.
    pub(crate) fn delete(&self, key: &[u8]) -> io::Result<bool> {
        self.check(key, None)?;
        let mut attr = self.attr(key.as_ptr(), std::ptr::null(), 0);
        // SAFETY: `key` holds key_size bytes (checked above) and outlives
        // the call; no value is passed.
        absent_is_false(unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) })
    }
}

/// The BPF_MAP_LOOKUP_BATCH member of `union bpf_attr`.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Where a batched read of a map goes on from: an opaque token the kernel
/// hands out (a hash map's bucket index, 4 bytes; kept in 8).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BatchCursor {
    token: u64,
    started: bool,
}

/// What one batch of a batched read brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Entries copied: keys and values, each packed in its buffer.
    pub(crate) count: usize,
    /// Whether the map has nothing after them.
    pub(crate) last: bool,
}

impl Map {
    /// Copies the next entries after `cursor` (from the first, for a new
    /// cursor) into `keys` and `values`, packed: as many as both hold,
    /// whole buckets of a hash map at a time. ENOSPC when one bucket holds
    /// more than the buffers do.
    pub(crate) fn lookup_batch(
        &self,
        cursor: &mut BatchCursor,
        keys: &mut [u8],
        values: &mut [u8],
    ) -> io::Result<Batch> {
        let room = keys.len() / self.key_size;
        if room == 0 || keys.len() != room * self.key_size || values.len() != room * self.value_size
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "batch buffers of the wrong size for this map",
            ));
        }
        let mut out = 0u64;
        let mut attr = BatchAttr {
            in_batch: if cursor.started {
                &cursor.token as *const u64 as u64
            } else {
                0
            },
            out_batch: &mut out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(room).unwrap_or(u32::MAX),
            map_fd: self.fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: BatchAttr is the BPF_MAP_*_BATCH member of bpf_attr.
        // `keys` and `values` hold `count` keys and values of this map's
        // sizes (checked above) and are writable; the tokens are 8 bytes,
        // more than the kernel reads or writes for one (4 for a hash map).
        // All outlive the call.
        let result = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        // The end of the map is ENOENT, with the last entries copied.
        let last = match result {
            Ok(_) => false,
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => true,
            Err(err) => return Err(err),
        };
        cursor.token = out;
        cursor.started = true;
        Ok(Batch {
            count: (attr.count as usize).min(room),
            last,
        })
    }
}

/// The one value of a one-entry array map of u64 words, mapped into this
/// process: programs and threads read and update the same memory, with
/// no system call. The words are atomics: a program updates them with
/// BPF_ATOMIC instructions or plain stores, which on every architecture
/// Linux runs eBPF on are single-copy atomic for aligned u64s.
#[derive(Debug)]
pub(crate) struct SharedWords {
    map: Map,
    words: *const AtomicU64,
    len: usize,
    mapped_bytes: usize,
}

// SAFETY: the mapping is only ever accessed through `AtomicU64`s, which
// are Sync; the pointer is not tied to a thread.
unsafe impl Send for SharedWords {}
// SAFETY: as above.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// Makes an array map named `name` of one value of `len` u64 words,
    /// zeroed, and maps it.
    pub(crate) fn create(name: &str, len: usize) -> io::Result<SharedWords> {
        let value_size = u32::try_from(len * 8)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many words"))?;
        let map = Map::create(MapType::Array, name, 4, value_size.max(8), 1)?;
        let page = page_size();
        let mapped_bytes = (len * 8).max(8).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the map's value area, which the
        // kernel sized (BPF_F_MMAPABLE rounds an array's values up to whole
        // pages); nothing else in this process refers to that range.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedWords {
            map,
            words: addr.cast::<AtomicU64>(),
            len,
            mapped_bytes,
        })
    }

    /// The words (page-aligned, so every one is aligned).
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: `words` points at `mapped_bytes` >= `len` * 8 bytes mapped
        // readable and writable for as long as `self` lives; AtomicU64 has
        // u64's size and the mapping is page-aligned; the kernel's side
        // only ever changes them atomically.
        unsafe { std::slice::from_raw_parts(self.words, self.len) }
    }

    /// The map, for the programs that use it.
    pub(crate) fn map_fd(&self) -> BorrowedFd<'_> {
        self.map.fd()
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: the range mmap returned in `create`, unmapped once; no
        // reference into it outlives `self` (`words` borrows it).
        unsafe {
            libc::munmap(self.words as *mut libc::c_void, self.mapped_bytes);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(4096)
}

/// Ok(false) for ENOENT, Ok(true) for success.
fn absent_is_false(result: io::Result<libc::c_long>) -> io::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(err) => Err(err),
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub(crate) fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the pointer, which
    // points at a live local; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}

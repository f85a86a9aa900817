//! The program's own file pages, let go of once start-up is over.
//!
//! The kernel maps a program's code and read-only data from the page cache
//! as it runs, and around each page it touches it maps the neighbours too
//! (64 KiB at a time). Start-up runs code an idle switch never runs again
//! (the command line's parser, netlink, the ports' opening), so those pages
//! would stay in the process's resident set for good: 5.4 MiB of an idle
//! switch's 7.8 (docs/PERFORMANCE.md). Dropping a mapping's pages
//! (`MADV_DONTNEED`) leaves the mapping in place; the next access to a
//! dropped page maps it again from the page cache, where the file's pages
//! stay.
//!
//! Only mappings of the program's own file that cannot be written and
//! hold no page of their own are dropped (`Anonymous: 0 kB` in
//! `/proc/self/smaps`): every page of such a mapping is the file's, so
//! nothing is lost. The relocated read-only data (RELRO) was written
//! before it was made read-only, holds pages of its own, and is kept.

use std::io;

/// One mapping of `/proc/self/smaps`, as far as dropping it needs.
#[derive(Debug, PartialEq, Eq)]
struct Mapping<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
    path: &'a str,
    /// Pages of its own (written after they were mapped), in KiB.
    anonymous_kib: Option<u64>,
}

impl Mapping<'_> {
    /// Whether every page of this mapping is the file's, so that dropping
    /// it loses nothing.
    fn only_file_pages(&self) -> bool {
        !self.perms.contains('w') && self.perms.ends_with('p') && self.anonymous_kib == Some(0)
    }
}

/// Drops the resident pages of the program's own file mappings that hold
/// only the file's pages (see the module docs). Returns the bytes those
/// mappings span.
pub(crate) fn drop_own_file_pages() -> io::Result<usize> {
    let here = drop_own_file_pages as *const () as usize;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mappings = parse_smaps(&smaps);
    let own = mappings
        .iter()
        .find(|m| m.perms.contains('x') && (m.start..m.end).contains(&here))
        .map(|m| m.path)
        .filter(|path| path.starts_with('/'))
        .ok_or_else(|| io::Error::other("no file mapping holds the program's code"))?;
    let mut spanned = 0;
    for mapping in mappings
        .iter()
        .filter(|m| m.path == own && m.only_file_pages())
    {
        // SAFETY: [start, end) is a whole mapping of this process as the
        // kernel lists it (page-aligned), private, not writable, and none
        // of its pages differs from the file's: MADV_DONTNEED only drops
        // page table entries, and the next access maps the same bytes
        // from the file again.
        let done = unsafe {
            libc::madvise(
                mapping.start as *mut libc::c_void,
                mapping.end - mapping.start,
                libc::MADV_DONTNEED,
            )
        };
        if done != 0 {
            return Err(io::Error::last_os_error());
        }
        spanned += mapping.end - mapping.start;
    }
    Ok(spanned)
}

/// The mappings of `/proc/self/smaps` text `smaps`, in order; lines that
/// do not parse are skipped.
fn parse_smaps(smaps: &str) -> Vec<Mapping<'_>> {
    let mut mappings: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Anonymous:") {
            if let Some(last) = mappings.last_mut() {
                last.anonymous_kib = kib.trim().trim_end_matches("kB").trim().parse().ok();
            }
        } else if let Some(mapping) = mapping_header(line) {
            mappings.push(mapping);
        }
    }
    mappings
}

/// A mapping's first line (`start-end perms offset dev inode [path]`).
fn mapping_header(line: &str) -> Option<Mapping<'_>> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let _device = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.next().unwrap_or("");
    Some(Mapping {
        start,
        end,
        perms,
        path,
        anonymous_kib: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:00 42                         /usr/bin/tapswitch
Size:               1024 kB
Rss:                 600 kB
Anonymous:             0 kB
55d0c0100000-55d0c0800000 r-xp 00100000 fe:00 42                         /usr/bin/tapswitch
Size:               7168 kB
Anonymous:             0 kB
55d0c0800000-55d0c0820000 r--p 00800000 fe:00 42                         /usr/bin/tapswitch
Anonymous:           128 kB
55d0c0820000-55d0c0822000 rw-p 00820000 fe:00 42                         /usr/bin/tapswitch
Anonymous:             8 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:00 7                          /usr/lib/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Anonymous:          1024 kB
";

    #[test]
    fn only_read_only_mappings_without_pages_of_their_own_hold_only_the_files_pages() {
        let mappings = parse_smaps(SMAPS);
        assert_eq!(mappings.len(), 6);
        assert_eq!(mappings[1].perms, "r-xp");
        assert_eq!(mappings[1].path, "/usr/bin/tapswitch");
        assert_eq!(mappings[5].path, "", "an anonymous mapping has no path");
        let droppable: Vec<bool> = mappings.iter().map(Mapping::only_file_pages).collect();
        // Rodata and code yes; RELRO (written before it was made read-only)
        // and the data no; libc would be, but is not the program's own.
        assert_eq!(droppable, [true, true, false, false, true, false]);
    }

    #[test]
    fn a_mapping_whose_pages_cannot_be_counted_is_kept() {
        let mappings = parse_smaps("55d0c0000000-55d0c0100000 r-xp 00000000 fe:00 42 /bin/x\n");
        assert!(!mappings[0].only_file_pages(), "no Anonymous line");
        assert!(parse_smaps("garbage\nAnonymous: 0 kB\n").is_empty());
    }

    /// KiB of the program's code mapping resident now.
    fn resident_code_kib() -> u64 {
        let here = resident_code_kib as *const () as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_code = false;
        for line in smaps.lines() {
            if let Some(mapping) = mapping_header(line) {
                in_code = mapping.perms == "r-xp" && (mapping.start..mapping.end).contains(&here);
            } else if in_code && let Some(kib) = line.strip_prefix("Rss:") {
                return kib.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
        panic!("no code mapping in /proc/self/smaps")
    }

    #[test]
    fn the_program_runs_on_after_its_pages_are_dropped_and_holds_fewer() {
        let before = resident_code_kib();
        let spanned = drop_own_file_pages().expect("the test binary has code");
        let after = resident_code_kib();
        assert!(spanned > 0);
        // What this test ran since came back, not everything the test
        // binary had run before.
        assert!(
            after < before,
            "resident code {before} KiB before, {after} KiB after"
        );
        // Code and constants on dropped pages come back: this runs, twice.
        assert_eq!(parse_smaps(SMAPS).len(), 6);
        assert!(drop_own_file_pages().is_ok());
    }
}

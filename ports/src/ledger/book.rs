//! Where ledgers live: pages that hold the ledgers of many ports.
//!
//! A ledger is a few words (5 for two lanes), and a map made mmap-able
//! takes a page of the kernel's memory, all of it mapped into the switch:
//! a map per port would cost every idle port a page. So one map (a
//! *book*) of one page holds the ledgers of as many ports as fit, each in
//! a *slot*, and a book is added when every slot is taken. A port's
//! programs are loaded with the book's map and the slot's place in it.
//!
//! A freed slot waits [`QUARANTINE`] before it is given to another port:
//! a program of the port that had it may still be running on another CPU
//! (the kernel retires a program after an RCU grace period, microseconds),
//! and its last additions must not land in the next port's counts. Whoever
//! holds a port's sockets or queues therefore holds its ledger too, and a
//! persistent TAP, which outlives the switch's queues, has its steering
//! program detached first (`tap.rs`).
//!
//! Books are never freed: there are as many as the most ports attached at
//! once needs.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::sys::bpf_map::SharedWords;

/// How long a freed slot waits before another port gets it.
pub(crate) const QUARANTINE: Duration = Duration::from_secs(2);

/// Bytes of a book: one page, which is what the kernel maps anyway.
const BOOK_BYTES: usize = 4096;

/// Every book made, by slot size.
static SHELF: Mutex<Vec<Arc<Book>>> = Mutex::new(Vec::new());

/// One map of ledgers of `slot_words` words each.
#[derive(Debug)]
struct Book {
    words: SharedWords,
    slot_words: usize,
    slots: Mutex<Slots>,
}

/// Which slots of a book are free (see [`Slots::take`]).
#[derive(Debug)]
struct Slots {
    capacity: usize,
    /// Slots never given out are `next..capacity`.
    next: usize,
    /// Slots given back, oldest first, with when.
    freed: VecDeque<(usize, Instant)>,
}

impl Slots {
    fn new(capacity: usize) -> Self {
        Slots {
            capacity,
            next: 0,
            freed: VecDeque::new(),
        }
    }

    /// A free slot at `now`: one never given out, else the oldest freed
    /// at least [`QUARANTINE`] ago.
    fn take(&mut self, now: Instant) -> Option<usize> {
        if self.next < self.capacity {
            self.next += 1;
            return Some(self.next - 1);
        }
        match self.freed.front() {
            Some(&(slot, at)) if now.saturating_duration_since(at) >= QUARANTINE => {
                self.freed.pop_front();
                Some(slot)
            }
            _ => None,
        }
    }

    fn give_back(&mut self, slot: usize, now: Instant) {
        self.freed.push_back((slot, now));
    }
}

/// A ledger's place: a slot of a book, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    book: Arc<Book>,
    index: usize,
}

impl Slot {
    /// A slot of `words` words, zeroed, in a book with room (a new book if
    /// none has).
    pub(crate) fn take(words: usize) -> io::Result<Slot> {
        let now = Instant::now();
        let mut shelf = SHELF.lock().unwrap_or_else(PoisonError::into_inner);
        for book in shelf.iter().filter(|book| book.slot_words == words) {
            let taken = book.slots().take(now);
            if let Some(index) = taken {
                let slot = Slot {
                    book: book.clone(),
                    index,
                };
                for word in slot.words() {
                    word.store(0, std::sync::atomic::Ordering::Release);
                }
                return Ok(slot);
            }
        }
        let capacity = (BOOK_BYTES / 8 / words.max(1)).max(1);
        let book = Arc::new(Book {
            words: SharedWords::create("tapsw_lanes", (capacity * words).max(BOOK_BYTES / 8))?,
            slot_words: words,
            slots: Mutex::new(Slots::new(capacity)),
        });
        let index = book.slots().take(now).expect("a new book has room");
        shelf.push(book.clone());
        Ok(Slot { book, index })
    }

    /// The slot's words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        let start = self.index * self.book.slot_words;
        &self.book.words.words()[start..start + self.book.slot_words]
    }

    /// Where the slot starts in the map's value, in bytes, for a program.
    pub(crate) fn offset(&self) -> usize {
        self.index * self.book.slot_words * 8
    }

    /// The book's map.
    pub(crate) fn map_fd(&self) -> RawFd {
        self.book.words.map_fd().as_raw_fd()
    }
}

impl Book {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.book.slots().give_back(self.index, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_out_once_and_a_freed_one_again_only_after_the_quarantine() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut slots = Slots::new(2);
        assert_eq!(slots.take(at(0)), Some(0));
        assert_eq!(slots.take(at(0)), Some(1));
        assert_eq!(slots.take(at(0)), None, "full");
        slots.give_back(1, at(10));
        slots.give_back(0, at(20));
        let quarantine = QUARANTINE.as_millis() as u64;
        assert_eq!(slots.take(at(10 + quarantine - 1)), None, "too soon");
        assert_eq!(slots.take(at(10 + quarantine)), Some(1), "oldest first");
        assert_eq!(slots.take(at(10 + quarantine)), None, "0 is still waiting");
        assert_eq!(slots.take(at(20 + quarantine)), Some(0));
    }
}

//! A bounded byte queue between a TCP flow's two sockets.
//!
//! It holds what one side produced and the other has not yet taken (a
//! partial write). It never grows past its capacity: a full buffer is the
//! signal to stop reading the producing side, which then backs up into that
//! side's own window (back-pressure). Memory is taken only while bytes wait
//! and given back as soon as the buffer drains, so ten thousand idle flows
//! hold nothing here (the budget is 100 MiB for 10,000 idle flows);
//! allocating again for the next burst costs less than the system calls
//! around it.

/// Bytes waiting to be written, at most `capacity` of them.
#[derive(Debug, Clone, Default)]
pub struct RelayBuffer {
    bytes: Vec<u8>,
    /// Bytes before this offset were already taken.
    start: usize,
    capacity: usize,
}

impl RelayBuffer {
    pub fn new(capacity: usize) -> RelayBuffer {
        RelayBuffer {
            bytes: Vec::new(),
            start: 0,
            capacity,
        }
    }

    /// Appends as much of `data` as fits; returns how much that was.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let take = data.len().min(self.free());
        if take == 0 {
            return 0;
        }
        // Move the waiting bytes to the front before growing, so the
        // allocation never exceeds the capacity.
        if self.start > 0 && self.bytes.len() + take > self.capacity {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        // Grow as a Vec does (doubling) but never past the capacity, so a
        // buffer's block stays under the heap's large-block size (see
        // `ports::heap`).
        let needed = self.bytes.len() + take;
        if needed > self.bytes.capacity() {
            let target = needed
                .max(2 * self.bytes.capacity())
                .min(self.capacity.max(needed));
            self.bytes.reserve_exact(target - self.bytes.len());
        }
        self.bytes.extend_from_slice(&data[..take]);
        take
    }

    /// The bytes waiting, oldest first.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// Marks the first `n` waiting bytes as taken (clamped to what waits).
    pub fn consume(&mut self, n: usize) -> usize {
        let n = n.min(self.len());
        self.start += n;
        if self.start == self.bytes.len() {
            self.clear();
        }
        n
    }

    pub fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room left before the buffer refuses bytes.
    pub fn free(&self) -> usize {
        self.capacity.saturating_sub(self.len())
    }

    /// Bytes allocated, for memory accounting.
    pub fn allocated(&self) -> usize {
        self.bytes.capacity()
    }

    /// Drops everything waiting and the allocation (a reset).
    pub fn clear(&mut self) {
        self.bytes = Vec::new();
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_stops_at_capacity_and_consume_makes_room() {
        let mut buf = RelayBuffer::new(8);
        assert_eq!(buf.push(b"hello"), 5);
        assert_eq!(buf.push(b"world"), 3);
        assert_eq!(buf.pending(), b"hellowor");
        assert_eq!(buf.free(), 0);
        assert_eq!(buf.push(b"!"), 0);
        assert_eq!(buf.consume(3), 3);
        assert_eq!(buf.pending(), b"lowor");
        assert_eq!(buf.push(b"ld!"), 3);
        assert_eq!(buf.pending(), b"loworld!");
        assert!(buf.allocated() <= 16, "grew to {}", buf.allocated());
        assert!(
            buf.allocated() <= 8,
            "past its capacity: {}",
            buf.allocated()
        );
        assert_eq!(buf.consume(100), 8);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_drained_buffer_gives_its_memory_back() {
        let mut buf = RelayBuffer::new(1 << 20);
        let big = vec![7u8; 200 * 1024];
        assert_eq!(buf.push(&big), big.len());
        assert!(buf.allocated() >= big.len());
        buf.consume(big.len() - 1);
        assert!(buf.allocated() > 0, "a byte still waits");
        buf.consume(1);
        assert_eq!(buf.allocated(), 0);
        buf.push(b"abc");
        buf.consume(3);
        assert_eq!(buf.allocated(), 0);
        buf.push(b"x");
        buf.clear();
        assert_eq!((buf.len(), buf.allocated()), (0, 0));
    }

    #[test]
    fn an_empty_buffer_allocates_nothing() {
        let buf = RelayBuffer::new(256 * 1024);
        assert_eq!(buf.allocated(), 0);
        assert_eq!(buf.free(), 256 * 1024);
    }
}

//! Reusable receive buffers: one allocation per worker, none per frame.
//! Each slot is a mapping of its own ([`ZeroedPages`]): only the pages
//! frames were written to are resident, so an idle worker's batch costs
//! no memory, and [`RxBatch::release_pages`] gives them back once traffic
//! has stopped (a worker that carried 64 KiB frames would otherwise keep
//! 2 MiB resident for good).

use crate::sys::pages::ZeroedPages;
use crate::vnet::VnetHdr;

/// Bytes kept free in front of each frame, so a VLAN tag taken out by the
/// kernel can be put back without moving the payload (only the 12 address
/// bytes move).
pub const SLOT_HEADROOM: usize = 4;

/// A batch of received frames. Each slot holds one frame of up to
/// [`crate::MAX_FRAME_LEN`] bytes plus its virtio-net header.
#[derive(Debug)]
pub struct RxBatch {
    slots: Vec<Slot>,
    len: usize,
    depth: ReadDepth,
    /// A frame was put in a slot since the pages were last given back.
    written: bool,
}

/// How far the next read into a batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadDepth {
    /// Until the batch is full or the lane is empty: a batch that comes
    /// back short says the lane was empty.
    #[default]
    UntilEmpty,
    /// One frame, without learning whether more wait. For a lane whose fd
    /// a worker watches level-triggered (see [`crate::PortRx::level_triggered`]):
    /// epoll reports it again if frames are left, so the read that would
    /// find it empty (a second system call on a TAP, a second message
    /// header on a packet socket) is saved while traffic is light.
    OneFrame,
}

#[derive(Debug)]
struct Slot {
    buf: ZeroedPages,
    start: usize,
    len: usize,
    vnet: VnetHdr,
    /// When the kernel received the frame (ns since the epoch), where the
    /// lane keeps arrival times (see [`crate::PortRx::head_arrival`]); 0
    /// when not known.
    arrived: u64,
}

impl RxBatch {
    /// A batch of `capacity` slots, each `slot_len` bytes (plus headroom).
    /// Panics if the kernel has no address space for them, as a full heap
    /// aborts an allocation.
    pub fn new(capacity: usize, slot_len: usize) -> Self {
        let len = slot_len + SLOT_HEADROOM;
        let slots = (0..capacity)
            .map(|_| Slot {
                buf: ZeroedPages::new(len).unwrap_or_else(|err| {
                    panic!("out of memory: mapping {len} bytes for a receive slot: {err}")
                }),
                start: SLOT_HEADROOM,
                len: 0,
                vnet: VnetHdr::default(),
                arrived: 0,
            })
            .collect();
        RxBatch {
            slots,
            len: 0,
            depth: ReadDepth::UntilEmpty,
            written: false,
        }
    }

    /// Whether some slot may hold resident pages: a frame was put in the
    /// batch since it was made or last gave its pages back.
    #[cfg(test)]
    fn holds_pages(&self) -> bool {
        self.written
    }

    /// Gives the pages frames were written to back to the kernel (each
    /// slot reads zero again, and costs no memory until the next frame).
    /// Only an empty batch does: false if it holds frames.
    pub fn release_pages(&mut self) -> bool {
        if self.len > 0 {
            return false;
        }
        if self.written {
            for slot in &mut self.slots {
                slot.buf.release();
            }
            self.written = false;
        }
        true
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Sets how far the following reads go (until changed).
    pub fn set_depth(&mut self, depth: ReadDepth) {
        self.depth = depth;
    }

    pub fn depth(&self) -> ReadDepth {
        self.depth
    }

    /// How many frames the next read may take: the capacity, or one.
    pub fn wanted(&self) -> usize {
        match self.depth {
            ReadDepth::UntilEmpty => self.capacity(),
            ReadDepth::OneFrame => self.capacity().min(1),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Frame `i` and its header.
    pub fn get(&self, i: usize) -> (&VnetHdr, &[u8]) {
        let slot = &self.slots[..self.len][i];
        (&slot.vnet, &slot.buf[slot.start..slot.start + slot.len])
    }

    /// Frame `i` and its header, writable (software fix-ups work in place).
    pub fn get_mut(&mut self, i: usize) -> (&mut VnetHdr, &mut [u8]) {
        let slot = &mut self.slots[..self.len][i];
        (
            &mut slot.vnet,
            &mut slot.buf[slot.start..slot.start + slot.len],
        )
    }

    /// When frame `i` arrived (ns since the epoch; 0 if not known).
    pub fn arrived(&self, i: usize) -> u64 {
        self.slots[..self.len][i].arrived
    }

    /// Notes when frame `i` arrived (ns since the epoch).
    pub fn set_arrived(&mut self, i: usize, arrived: u64) {
        self.slots[..self.len][i].arrived = arrived;
    }

    /// Takes the first `n` frames out (they were forwarded); the rest move
    /// to the front, without copying a byte.
    pub fn drop_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.slots[..self.len].rotate_left(n);
        self.len -= n;
    }

    /// The buffers of the free slots, in order, for a backend to receive
    /// into: each is the whole slot after the headroom.
    pub fn free_buffers(&mut self) -> impl Iterator<Item = &mut [u8]> {
        self.slots[self.len..]
            .iter_mut()
            .map(|slot| &mut slot.buf[SLOT_HEADROOM..])
    }

    /// Marks the next free slot as holding a frame of `len` bytes, received
    /// into the buffer `free_buffers` gave out for it.
    pub fn commit(&mut self, len: usize, vnet: VnetHdr) {
        let slot = &mut self.slots[self.len];
        slot.start = SLOT_HEADROOM;
        slot.len = len.min(slot.buf.len() - SLOT_HEADROOM);
        slot.vnet = vnet;
        slot.arrived = 0;
        self.len += 1;
        self.written = true;
    }

    /// Copies a frame into the next free slot (in-memory and pcap ports).
    /// False if the batch is full or the frame does not fit.
    pub fn push(&mut self, vnet: VnetHdr, frame: &[u8]) -> bool {
        let Some(slot) = self.slots.get_mut(self.len) else {
            return false;
        };
        if frame.len() > slot.buf.len() - SLOT_HEADROOM {
            return false;
        }
        slot.start = SLOT_HEADROOM;
        slot.buf[SLOT_HEADROOM..SLOT_HEADROOM + frame.len()].copy_from_slice(frame);
        slot.len = frame.len();
        slot.vnet = vnet;
        slot.arrived = 0;
        self.len += 1;
        self.written = true;
        true
    }

    /// Puts an 802.1Q/802.1ad tag back into frame `i` (after the addresses),
    /// using the headroom, and shifts the offload offsets to match.
    pub fn insert_vlan_tag(&mut self, i: usize, tpid: u16, tci: u16) {
        let slot = &mut self.slots[..self.len][i];
        if slot.start < 4 || slot.len < 12 {
            return;
        }
        let start = slot.start;
        slot.buf.copy_within(start..start + 12, start - 4);
        slot.start -= 4;
        slot.len += 4;
        let at = slot.start + 12;
        slot.buf[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
        slot.buf[at + 2..at + 4].copy_from_slice(&tci.to_be_bytes());
        slot.vnet.shift_offsets(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_get_round_trip() {
        let mut batch = RxBatch::new(2, 128);
        assert!(batch.push(VnetHdr::default(), &[1, 2, 3]));
        assert!(batch.push(VnetHdr::default(), &[4]));
        assert!(!batch.push(VnetHdr::default(), &[5]), "full");
        assert_eq!(batch.get(0).1, &[1, 2, 3]);
        assert_eq!(batch.get(1).1, &[4]);
        batch.clear();
        assert!(batch.is_empty());
        assert!(
            !batch.push(VnetHdr::default(), &[0; 129]),
            "too long for a slot"
        );
    }

    #[test]
    fn an_empty_batch_gives_its_pages_back_and_a_frame_makes_it_hold_some_again() {
        let mut batch = RxBatch::new(2, 128);
        assert!(!batch.holds_pages(), "a new batch holds none");
        batch.push(VnetHdr::default(), &[7; 100]);
        assert!(batch.holds_pages());
        assert!(!batch.release_pages(), "not while it holds a frame");
        assert_eq!(batch.get(0).1, &[7; 100][..], "the frame is intact");
        batch.clear();
        assert!(batch.release_pages());
        assert!(!batch.holds_pages());
        assert!(
            batch.free_buffers().all(|buf| buf.iter().all(|b| *b == 0)),
            "the slots read zero again"
        );
        batch.commit(3, VnetHdr::default());
        assert!(batch.holds_pages(), "a received frame counts too");
    }

    #[test]
    fn dropping_forwarded_frames_keeps_the_rest_in_order_with_their_arrival() {
        let mut batch = RxBatch::new(3, 16);
        for (i, frame) in [[1u8], [2], [3]].iter().enumerate() {
            batch.push(VnetHdr::default(), frame);
            batch.set_arrived(i, 10 + i as u64);
        }
        batch.drop_front(2);
        assert_eq!(
            (batch.len(), batch.get(0).1, batch.arrived(0)),
            (1, &[3u8][..], 12)
        );
        assert!(
            batch.push(VnetHdr::default(), &[4]),
            "the slots are free again"
        );
        assert_eq!((batch.get(1).1, batch.arrived(1)), (&[4u8][..], 0));
        batch.drop_front(5);
        assert!(batch.is_empty());
    }

    #[test]
    fn one_frame_deep_reads_want_one_frame() {
        let mut batch = RxBatch::new(4, 16);
        assert_eq!(batch.wanted(), 4);
        batch.set_depth(ReadDepth::OneFrame);
        assert_eq!(batch.wanted(), 1);
        batch.set_depth(ReadDepth::UntilEmpty);
        assert_eq!(batch.wanted(), 4);
        assert_eq!(RxBatch::new(0, 16).wanted(), 0);
    }

    #[test]
    fn vlan_tag_goes_back_after_the_addresses() {
        let mut batch = RxBatch::new(1, 128);
        let frame: Vec<u8> = (0..20).collect();
        let vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            csum_start: 14,
            hdr_len: 54,
            ..Default::default()
        };
        batch.push(vnet, &frame);
        batch.insert_vlan_tag(0, 0x8100, 100);
        let (vnet, tagged) = batch.get(0);
        assert_eq!(&tagged[..12], &frame[..12]);
        assert_eq!(&tagged[12..16], &[0x81, 0x00, 0x00, 100]);
        assert_eq!(&tagged[16..], &frame[12..]);
        assert_eq!((vnet.csum_start, vnet.hdr_len), (18, 58));
    }
}

//! A conservative sequence check of the containers' TCP segments, before
//! smoltcp sees them: a segment that cannot be inside the gateway's
//! receive window is dropped and counted here, as conntrack marks such
//! segments INVALID (`nf_conntrack_proto_tcp.c`, `tcp_in_window`).
//!
//! The services do not see smoltcp's own sequence state, only the
//! container's segments, so the check is one-sided and errs towards
//! letting through: per flow it keeps the highest sequence number the
//! container has reached (`end`: the SYN's, then every accepted segment's
//! last byte + 1). smoltcp's next expected byte is at or before `end`, and
//! its window is at most its receive buffer, which is at most
//! [`MAX_STACK_WINDOW`]; so data starting more than that beyond `end`, or
//! ending more than that before it (older than anything the container may
//! still retransmit), is certainly out of window. Blind injections with
//! random sequence numbers fall there with overwhelming probability; the
//! finer check (and the challenge ACK of RFC 5961) stays smoltcp's.

use std::collections::HashMap;

use crate::flows::FlowKey;

/// The largest receive window a stack socket can offer (its receive
/// buffer), with room to spare; a bound on what is in window.
pub const MAX_STACK_WINDOW: u32 = 4 << 20;

/// What [`SeqWindows::check`] says of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SeqCheck {
    InWindow,
    OutOfWindow,
}

/// The highest sequence number each flow's container reached. Entries
/// live as long as their flows (removed on release).
#[derive(Debug, Default)]
pub(super) struct SeqWindows {
    ends: HashMap<FlowKey, u32>,
}

impl SeqWindows {
    /// The container's SYN opened `key` with sequence number `isn`.
    pub(super) fn start(&mut self, key: FlowKey, isn: u32) {
        self.ends.insert(key, isn.wrapping_add(1));
    }

    /// A segment of `key` from the container: `seq` its sequence number,
    /// `len` its length in sequence space (payload, plus one for SYN and
    /// for FIN). The first segment seen of a flow (a published port's
    /// connection: the container's SYN-ACK) starts the record.
    pub(super) fn check(&mut self, key: FlowKey, seq: u32, len: u32) -> SeqCheck {
        let seg_end = seq.wrapping_add(len);
        let Some(end) = self.ends.get_mut(&key) else {
            self.ends.insert(key, seg_end);
            return SeqCheck::InWindow;
        };
        // Signed distances in sequence space (RFC 1982 arithmetic).
        let ahead = seq.wrapping_sub(*end) as i32;
        let behind = end.wrapping_sub(seg_end) as i32;
        if ahead > MAX_STACK_WINDOW as i32 || behind > MAX_STACK_WINDOW as i32 {
            return SeqCheck::OutOfWindow;
        }
        if seg_end.wrapping_sub(*end) as i32 > 0 {
            *end = seg_end;
        }
        SeqCheck::InWindow
    }

    pub(super) fn forget(&mut self, key: &FlowKey) {
        self.ends.remove(key);
    }

    /// Flows tracked (as many as TCP flows at most).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlowKey {
        FlowKey::tcp(
            "172.17.0.2:40000".parse().unwrap(),
            "198.51.100.7:80".parse().unwrap(),
        )
    }

    #[test]
    fn segments_near_the_stream_pass_and_far_ones_do_not() {
        let mut windows = SeqWindows::default();
        windows.start(key(), 1000);
        // The handshake's ACK, data, a retransmission of it.
        assert_eq!(windows.check(key(), 1001, 0), SeqCheck::InWindow);
        assert_eq!(windows.check(key(), 1001, 500), SeqCheck::InWindow);
        assert_eq!(windows.check(key(), 1001, 500), SeqCheck::InWindow);
        // Data ahead within a window (a hole the stack will wait to fill).
        assert_eq!(windows.check(key(), 1501 + 60_000, 100), SeqCheck::InWindow);
        // Far ahead and far behind: out of any window the stack offers.
        let far = 1501 + 60_100 + MAX_STACK_WINDOW + 1;
        assert_eq!(windows.check(key(), far, 10), SeqCheck::OutOfWindow);
        assert_eq!(
            windows.check(key(), 1000u32.wrapping_sub(2 * MAX_STACK_WINDOW), 10),
            SeqCheck::OutOfWindow
        );
        // A rejected segment moves nothing: the stream goes on.
        assert_eq!(windows.check(key(), 61_601, 1), SeqCheck::InWindow);
    }

    #[test]
    fn sequence_numbers_wrap_and_the_first_segment_of_an_inbound_flow_starts_it() {
        let mut windows = SeqWindows::default();
        windows.start(key(), u32::MAX - 10);
        assert_eq!(windows.check(key(), u32::MAX - 9, 100), SeqCheck::InWindow);
        assert_eq!(windows.check(key(), 90, 10), SeqCheck::InWindow);
        assert_eq!(
            windows.check(key(), 100 + MAX_STACK_WINDOW + 1, 1),
            SeqCheck::OutOfWindow
        );
        windows.forget(&key());
        assert_eq!(windows.len(), 0);
        // No record: the segment starts one (the container's SYN-ACK).
        assert_eq!(windows.check(key(), 5, 1), SeqCheck::InWindow);
        assert_eq!(windows.check(key(), 6, 0), SeqCheck::InWindow);
        assert_eq!(windows.len(), 1);
    }
}

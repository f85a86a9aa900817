//! Whether a worker's traffic is a conversation: whether the frames it
//! forwards come back as answers, read at once after its own writes (see
//! `lanes.rs`), as a TCP receiver's acknowledgements do. Under load such a
//! worker keeps its real-time priority (`affinity.rs`); a flood, whose
//! frames nobody answers, never does. Judged per [`WINDOW`] from counts
//! alone, so it is tested without a kernel.

use std::time::Instant;

use super::WINDOW;

/// Of the frames a worker forwards in a [`WINDOW`], at least one in this
/// many must be answers for its traffic to be a conversation. A TCP stream
/// through the switch is about one in two (an acknowledgement per
/// super-frame or two), a UDP flood none.
const ANSWERS_OF_A_CONVERSATION: usize = 8;

/// A conversation ends after this many windows in a row below
/// [`ANSWERS_OF_A_CONVERSATION`]. Two TCP streams through one worker fell
/// to one answer in 16 every other window (their receivers acknowledge
/// more from their own reads, later, and those are not answers read at
/// once), and each such window made the worker an ordinary thread offering
/// its CPU for the next one.
const DIPS_TO_END: u32 = 2;

/// A window with fewer answers than one in this many ends a conversation at
/// once, as a flood does (it has none); two TCP streams never fell so low.
const ANSWERS_OF_A_DIP: usize = 32;

/// Whether a worker's traffic is a conversation: whether enough of the
/// frames it forwarded in the last [`WINDOW`] were answers, read at once
/// after its own writes (see `lanes.rs`), with one window's dip forgiven.
#[derive(Debug, Default)]
pub(super) struct Conversation {
    forwarded: usize,
    answered: usize,
    window_start: Option<Instant>,
    holds: bool,
    /// Windows in a row below [`ANSWERS_OF_A_CONVERSATION`] while it holds.
    dips: u32,
}

impl Conversation {
    /// Notes `frames` forwarded at `now`, `answered` of them answers;
    /// decides again once a window is over.
    pub(super) fn note(&mut self, frames: usize, answered: usize, now: Instant) {
        self.forwarded += frames;
        self.answered += answered.min(frames);
        let start = *self.window_start.get_or_insert(now);
        if now.saturating_duration_since(start) < WINDOW {
            return;
        }
        let at_least =
            |one_in: usize| self.forwarded > 0 && self.answered * one_in >= self.forwarded;
        let holds = if at_least(ANSWERS_OF_A_CONVERSATION) {
            self.dips = 0;
            true
        } else if self.holds && at_least(ANSWERS_OF_A_DIP) {
            self.dips += 1;
            self.dips < DIPS_TO_END
        } else {
            false
        };
        if !holds {
            self.dips = 0;
        }
        if holds != self.holds {
            log::debug!(
                "{}: {} answers in {} frames: {}",
                std::thread::current().name().unwrap_or("a worker"),
                self.answered,
                self.forwarded,
                if holds {
                    "a conversation"
                } else {
                    "no conversation"
                }
            );
        }
        self.holds = holds;
        self.forwarded = 0;
        self.answered = 0;
        self.window_start = Some(now);
    }

    /// Whether the last window was a conversation.
    pub(super) fn holds(&self) -> bool {
        self.holds
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_conversation_is_one_answer_in_eight_with_one_dip_forgiven() {
        let start = Instant::now();
        let mut talk = Conversation::default();
        // One window per step: (frames, answers, holds after it).
        let steps = [
            (32, 3, false), // 3 answers in 32 frames do not begin one
            (32, 4, true),  // 4 in 32 do
            (64, 2, true),  // a dip to 2 in 64 is forgiven
            (32, 4, true),
            (64, 2, true),  // and another after a good window
            (64, 3, false), // two dips in a row end it
            (64, 7, false), // and do not begin one again
            (32, 4, true),
            (64, 1, false), // below one in 32 ends it at once (a flood)
            (32, 4, true),
            (0, 0, false), // nothing forwarded: no conversation
            (8, 20, true), // answers count at most as the frames they are
        ];
        talk.note(0, 0, start);
        for (i, (frames, answers, holds)) in steps.into_iter().enumerate() {
            let window = start + (i as u32) * WINDOW;
            talk.note(frames, answers, window + MS);
            talk.note(0, 0, window + WINDOW);
            assert_eq!(talk.holds(), holds, "step {i}: {answers} in {frames}");
        }
    }
}

//! Which packets the receiver fulfilled, so that a run can tell the
//! packets whose Fulfill never came back to the sender ("unconfirmed":
//! fulfilled at the loopback, outcome unknown at the sender, e.g. because
//! the connector died with the Fulfill in its hands).
//!
//! One word per sender ring slot, shared by the receivers and the senders,
//! lock-free. A sequence number names its sending connection (top 16 bits,
//! [`crate::lt::make_seq`]) and that connection's packet counter (low 48
//! bits). The receiver, when it fulfills, raises the word of slot
//! `counter & mask` to `counter + 1` (`fetch_max`, so a late mark of an
//! older packet never hides a newer one). The sender reuses a ring slot only
//! once its packet has a reply or timed out, so the packets it still has in
//! flight map to distinct words, and "the receiver fulfilled `seq`" is
//! exactly `word == counter + 1`. The sender never writes the words, so the
//! cost on the hot path is one uncontended atomic per fulfilled packet.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counter bits of a sequence number.
const COUNTER_MASK: u64 = 0xffff_ffff_ffff;

/// The shared marks: one table per sending connection (by stream id),
/// all in one flat allocation.
pub struct FulfillTrack {
    words: Box<[AtomicU64]>,
    streams: u64,
    /// log2 of the slots per stream.
    shift: u32,
    mask: u64,
}

impl std::fmt::Debug for FulfillTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FulfillTrack")
            .field("streams", &self.streams)
            .field("slots", &(self.mask + 1))
            .finish()
    }
}

impl FulfillTrack {
    /// Marks for stream ids `0..streams`, each with `slots` words (rounded up
    /// to a power of two; at least the sender's ring size).
    pub fn new(streams: usize, slots: usize) -> FulfillTrack {
        let slots = slots.max(1).next_power_of_two();
        let streams = streams.clamp(1, 1 << 16);
        FulfillTrack {
            words: (0..streams * slots).map(|_| AtomicU64::new(0)).collect(),
            streams: streams as u64,
            shift: slots.trailing_zeros(),
            mask: slots as u64 - 1,
        }
    }

    #[inline]
    fn word(&self, seq: u64) -> Option<(&AtomicU64, u64)> {
        let counter = seq & COUNTER_MASK;
        let stream = seq >> 48;
        if stream >= self.streams {
            return None;
        }
        let i = (stream << self.shift) | (counter & self.mask);
        Some((self.words.get(i as usize)?, counter + 1))
    }

    /// The receiver fulfilled `seq` (sequence numbers of other runs or of
    /// unknown streams are ignored).
    #[inline]
    pub fn mark(&self, seq: u64) {
        if let Some((w, v)) = self.word(seq) {
            if w.load(Ordering::Relaxed) < v {
                w.fetch_max(v, Ordering::Release);
            }
        }
    }

    /// Whether the receiver fulfilled `seq`. Exact while `seq` is still in
    /// flight at its sender (or was when its slot was last in use).
    #[inline]
    pub fn fulfilled(&self, seq: u64) -> bool {
        self.word(seq)
            .is_some_and(|(w, v)| w.load(Ordering::Acquire) == v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lt::make_seq;

    #[test]
    fn marks_are_per_stream_and_counter() {
        let t = FulfillTrack::new(3, 5); // 8 slots
        let a = make_seq(1, 10);
        assert!(!t.fulfilled(a));
        t.mark(a);
        assert!(t.fulfilled(a));
        // Same counter, other stream; same slot, other counter.
        assert!(!t.fulfilled(make_seq(0, 10)));
        assert!(!t.fulfilled(make_seq(2, 10)));
        assert!(!t.fulfilled(make_seq(1, 18)));
        assert!(!t.fulfilled(make_seq(1, 2)));
        // Unknown streams are ignored, never panic.
        t.mark(make_seq(700, 1));
        assert!(!t.fulfilled(make_seq(700, 1)));
    }

    #[test]
    fn a_late_mark_of_an_older_packet_does_not_hide_a_newer_one() {
        let t = FulfillTrack::new(1, 8);
        let newer = make_seq(0, 8 + 3);
        let older = make_seq(0, 3);
        t.mark(newer);
        t.mark(older);
        assert!(t.fulfilled(newer));
        assert!(!t.fulfilled(older));
    }

    #[test]
    fn marks_from_many_threads() {
        let t = std::sync::Arc::new(FulfillTrack::new(2, 1024));
        let hs: Vec<_> = (0..4u64)
            .map(|k| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for c in (k..1024).step_by(4) {
                        if c % 3 != 0 {
                            t.mark(make_seq(1, c));
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        for c in 0..1024u64 {
            assert_eq!(t.fulfilled(make_seq(1, c)), c % 3 != 0, "{c}");
            assert!(!t.fulfilled(make_seq(0, c)));
        }
    }
}

//! One monotonic time base per run, shared by every thread, plus the
//! wall clock needed for ILP expiry timestamps.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
    base_wall_ms: u64,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
            base_wall_ms: crate::link::wall_ms(),
        }
    }

    /// Nanoseconds since the run's time base.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// The wall clock (ms since the Unix epoch) at `ns` on this clock.
    #[inline]
    pub fn wall_ms_at(&self, ns: u64) -> u64 {
        self.base_wall_ms + ns / 1_000_000
    }

    pub fn instant_at(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// The phases of a run, in ns on the run's [`Clock`].
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// First intended send time.
    pub start_ns: u64,
    /// Packets intended for [start, warmup_end) are not measured.
    pub warmup_end_ns: u64,
    /// No packet is sent at or after this.
    pub end_ns: u64,
    /// Whatever is still in flight here is counted as lost and the worker stops.
    pub hard_stop_ns: u64,
}

/// Caches the 17-digit ILP timestamp for the current millisecond.
pub struct TimestampCache {
    ms: u64,
    digits: [u8; 17],
}

impl TimestampCache {
    pub fn new() -> TimestampCache {
        TimestampCache {
            ms: u64::MAX,
            digits: [b'0'; 17],
        }
    }

    #[inline]
    pub fn get(&mut self, ms: u64) -> &[u8; 17] {
        if ms != self.ms {
            self.ms = ms;
            self.digits = ilpd_codec::Expiry(ms).to_ilp_timestamp();
        }
        &self.digits
    }
}

impl Default for TimestampCache {
    fn default() -> Self {
        TimestampCache::new()
    }
}

//! Chunked payments: the policy, with no IO and no clock (time is passed in).
//!
//! A chunked payment delivers a cumulative destination amount before a
//! deadline, in chunks of varying size and expiry. Each chunk carries a
//! minimum destination amount (`ceil(source × threshold)`) that the
//! receiver enforces, so only chunks whose exchange rate is at least the
//! threshold get fulfilled. The threshold follows the best rate seen so far:
//! it tightens towards it when the payment is ahead of schedule (wait for good
//! rates) and relaxes towards the floor `min_rate` when it is behind.

use std::time::Duration;

/// Part of the deadline the schedule plans to use.
const SCHEDULE_FRACTION: f64 = 0.75;

/// Settings of one chunked payment.
#[derive(Clone, Debug)]
pub struct ChunkedConfig {
    /// Cumulative destination amount to deliver.
    pub target: u64,
    /// Time allowed, from the start.
    pub deadline: Duration,
    /// Source amount per chunk, inclusive range; each chunk is drawn in it.
    pub min_chunk: u64,
    pub max_chunk: u64,
    /// Expiry per chunk, inclusive range; each chunk is drawn in it.
    pub min_expiry: Duration,
    pub max_expiry: Duration,
    /// Worst exchange rate (destination / source) ever accepted.
    pub min_rate: f64,
    /// Rate assumed before the first chunk comes back.
    pub initial_rate: f64,
    /// How much the threshold moves per chunk, as a fraction of the best rate.
    pub step: f64,
    /// When ahead, accept rates within this fraction of the best seen
    /// (the very best rate may never come back).
    pub tolerance: f64,
    /// Seed for the chunk size and expiry draws.
    pub seed: u64,
}

impl Default for ChunkedConfig {
    fn default() -> Self {
        ChunkedConfig {
            target: 1000,
            deadline: Duration::from_secs(10),
            min_chunk: 1,
            max_chunk: 100,
            min_expiry: Duration::from_secs(5),
            max_expiry: Duration::from_secs(30),
            min_rate: 0.0,
            initial_rate: 1.0,
            step: 0.02,
            tolerance: 0.03,
            seed: 1,
        }
    }
}

/// One chunk to send.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chunk {
    pub source_amount: u64,
    /// The receiver fulfills only if it sees at least this much.
    pub min_destination: u64,
    pub expiry: Duration,
}

/// How a chunk ended, as the sender learns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkResult {
    /// Fulfilled; the receiver saw `delivered`.
    Fulfilled { delivered: u64 },
    /// Rejected because the rate was below the threshold; the receiver saw `delivered`.
    BelowThreshold { delivered: u64 },
    /// Any other reject or failure (no rate information).
    Failed,
}

/// Where the payment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    InProgress,
    Done,
    DeadlinePassed,
}

/// The state of one chunked payment.
#[derive(Clone, Debug)]
pub struct ChunkPlanner {
    cfg: ChunkedConfig,
    delivered: u64,
    source_fulfilled: u64,
    best_rate: f64,
    /// Fraction of `best_rate` a chunk must reach, in [floor, 1].
    quality: f64,
    rng: u64,
    pub chunks_sent: u64,
    pub chunks_fulfilled: u64,
}

impl ChunkPlanner {
    pub fn new(cfg: ChunkedConfig) -> ChunkPlanner {
        let rng = cfg.seed;
        let best = cfg.initial_rate.max(cfg.min_rate);
        let quality = 1.0 - cfg.tolerance.clamp(0.0, 1.0);
        ChunkPlanner {
            cfg,
            delivered: 0,
            source_fulfilled: 0,
            best_rate: best,
            quality,
            rng,
            chunks_sent: 0,
            chunks_fulfilled: 0,
        }
    }

    /// Destination amount delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Source amount of fulfilled chunks so far.
    pub fn source_fulfilled(&self) -> u64 {
        self.source_fulfilled
    }

    /// The rate a chunk must reach right now.
    pub fn threshold(&self) -> f64 {
        (self.best_rate * self.quality).max(self.cfg.min_rate)
    }

    pub fn best_rate(&self) -> f64 {
        self.best_rate
    }

    pub fn status(&self, elapsed: Duration) -> Status {
        if self.delivered >= self.cfg.target {
            Status::Done
        } else if elapsed >= self.cfg.deadline {
            Status::DeadlinePassed
        } else {
            Status::InProgress
        }
    }

    fn draw(&mut self, lo: u64, hi: u64) -> u64 {
        self.rng = crate::lt::mix64(self.rng);
        if hi <= lo {
            lo
        } else {
            lo + self.rng % (hi - lo + 1)
        }
    }

    /// The next chunk, or None when the payment is done or out of time.
    pub fn next_chunk(&mut self, elapsed: Duration) -> Option<Chunk> {
        if self.status(elapsed) != Status::InProgress {
            return None;
        }
        let remaining = self.cfg.target - self.delivered;
        let mut source = self.draw(self.cfg.min_chunk.max(1), self.cfg.max_chunk.max(1));
        // Do not overshoot much: at the best rate, `needed` source units
        // deliver what is left. Never below the minimum chunk, where
        // rounding to whole units would make every rate look bad.
        if self.best_rate > 0.0 {
            let needed = (remaining as f64 / self.best_rate).ceil().max(1.0);
            if (source as f64) > needed {
                source = (needed as u64).max(self.cfg.min_chunk.max(1));
            }
        }
        let threshold = self.threshold();
        let min_destination = ((source as f64) * threshold).ceil() as u64;
        let lo = self.cfg.min_expiry.as_millis() as u64;
        let hi = self.cfg.max_expiry.as_millis() as u64;
        let expiry = Duration::from_millis(self.draw(lo, hi.max(lo)));
        self.chunks_sent += 1;
        Some(Chunk {
            source_amount: source,
            min_destination,
            expiry,
        })
    }

    /// Learns from a chunk's result and moves the threshold.
    pub fn on_result(&mut self, chunk: &Chunk, result: ChunkResult, elapsed: Duration) {
        match result {
            ChunkResult::Fulfilled { delivered } => {
                self.delivered = self.delivered.saturating_add(delivered);
                self.source_fulfilled = self.source_fulfilled.saturating_add(chunk.source_amount);
                self.chunks_fulfilled += 1;
                self.observe(chunk.source_amount, delivered);
            }
            ChunkResult::BelowThreshold { delivered } => {
                self.observe(chunk.source_amount, delivered);
            }
            ChunkResult::Failed => {}
        }
        self.adjust(elapsed);
    }

    fn observe(&mut self, source: u64, delivered: u64) {
        if source > 0 {
            let rate = delivered as f64 / source as f64;
            // Only raises it: an optimistic guess is corrected by relaxing
            // the quality when behind schedule, not by forgetting good rates.
            if rate > self.best_rate {
                self.best_rate = rate;
            }
        }
    }

    /// Ahead of schedule: ask for more (towards the best rate). Behind:
    /// accept less, in proportion to how far behind, down to `min_rate`.
    fn adjust(&mut self, elapsed: Duration) {
        // The schedule aims to finish at 75% of the deadline, leaving a
        // margin for the chunks in flight and a bad stretch of rates.
        let time_frac = if self.cfg.deadline.is_zero() {
            1.0
        } else {
            (elapsed.as_secs_f64() / (SCHEDULE_FRACTION * self.cfg.deadline.as_secs_f64())).min(1.0)
        };
        let progress = self.delivered as f64 / self.cfg.target.max(1) as f64;
        let floor = if self.best_rate > 0.0 {
            (self.cfg.min_rate / self.best_rate).min(1.0)
        } else {
            0.0
        };
        if progress >= time_frac {
            self.quality = (self.quality + self.cfg.step).min(1.0 - self.cfg.tolerance);
        } else {
            // A full step once 5% behind, less when only slightly behind
            // (so a few early refusals do not throw the threshold away).
            let behind = (time_frac - progress).clamp(0.0, 1.0);
            self.quality = (self.quality - self.cfg.step * (behind * 20.0).min(1.0)).max(floor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake market: the rate swings between 0.80 and 1.20 with a period of
    /// one second, a triangle wave (so the best rates come only now and then).
    fn rate_at(t: Duration) -> f64 {
        let phase = (t.as_millis() % 1000) as f64 / 1000.0;
        let tri = if phase < 0.5 {
            phase * 2.0
        } else {
            2.0 - phase * 2.0
        };
        0.80 + 0.40 * tri
    }

    /// Runs a payment against the fake market, one chunk every `tick`.
    /// Returns (planner, rates of the accepted chunks, status at the end).
    fn simulate(cfg: ChunkedConfig, tick: Duration) -> (ChunkPlanner, Vec<f64>, Status) {
        let mut p = ChunkPlanner::new(cfg);
        let mut t = Duration::ZERO;
        let mut accepted = Vec::new();
        while let Some(chunk) = p.next_chunk(t) {
            let rate = rate_at(t);
            let delivered = (chunk.source_amount as f64 * rate).floor() as u64;
            let result = if delivered >= chunk.min_destination {
                accepted.push(delivered as f64 / chunk.source_amount as f64);
                ChunkResult::Fulfilled { delivered }
            } else {
                ChunkResult::BelowThreshold { delivered }
            };
            t += tick;
            p.on_result(&chunk, result, t);
        }
        let status = p.status(t);
        (p, accepted, status)
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    #[test]
    fn ahead_of_schedule_it_waits_for_the_best_rates() {
        // Plenty of time: 10 s for what 1 s of chunks could deliver.
        let cfg = ChunkedConfig {
            target: 10_000,
            deadline: Duration::from_secs(10),
            min_chunk: 80,
            max_chunk: 120,
            min_rate: 0.5,
            initial_rate: 1.0,
            ..ChunkedConfig::default()
        };
        let (p, accepted, status) = simulate(cfg, Duration::from_millis(5));
        assert_eq!(status, Status::Done);
        assert!(p.delivered() >= 10_000);
        // The market averages 1.00; a patient payer does much better.
        let m = mean(&accepted);
        assert!(m > 1.10, "mean accepted rate {m}");
        assert!(
            p.chunks_sent > p.chunks_fulfilled,
            "it must have refused some chunks"
        );
        // Overshoot is at most one chunk's worth.
        assert!(p.delivered() < 10_000 + 150, "delivered {}", p.delivered());
    }

    #[test]
    fn behind_schedule_it_relaxes_but_never_below_the_floor() {
        // Tight: the whole deadline is barely enough at the average rate.
        let cfg = ChunkedConfig {
            target: 15_000,
            deadline: Duration::from_secs(2),
            min_chunk: 80,
            max_chunk: 120,
            min_rate: 0.85,
            initial_rate: 1.0,
            ..ChunkedConfig::default()
        };
        let (p, accepted, status) = simulate(cfg, Duration::from_millis(10));
        assert_eq!(status, Status::Done, "delivered {}", p.delivered());
        let min = accepted.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(min >= 0.85 - 0.01, "accepted a rate below the floor: {min}");
        // It had to take worse rates than the patient payer did.
        assert!(mean(&accepted) < 1.10, "mean {}", mean(&accepted));
        // ...and the threshold really did come down from the best rate.
        assert!(min < 1.0, "never relaxed: min accepted {min}");
    }

    #[test]
    fn the_threshold_moves_both_ways() {
        let cfg = ChunkedConfig {
            target: 1_000_000,
            deadline: Duration::from_secs(100),
            ..ChunkedConfig::default()
        };
        let mut p = ChunkPlanner::new(cfg);
        let c = p.next_chunk(Duration::ZERO).unwrap();
        // Behind schedule at t = 50 s with nothing delivered: relax.
        let before = p.threshold();
        p.on_result(&c, ChunkResult::Failed, Duration::from_secs(50));
        let relaxed = p.threshold();
        assert!(relaxed < before, "{relaxed} !< {before}");
        // Ahead of schedule (most of the amount delivered early): tighten.
        let c = p.next_chunk(Duration::from_secs(50)).unwrap();
        let big = ChunkResult::Fulfilled { delivered: 900_000 };
        p.on_result(&c, big, Duration::from_secs(51));
        assert!(p.threshold() > relaxed);
    }

    #[test]
    fn stops_at_the_deadline() {
        let cfg = ChunkedConfig {
            target: 1_000_000,
            deadline: Duration::from_secs(1),
            min_rate: 2.0, // nothing on this market is ever good enough
            ..ChunkedConfig::default()
        };
        let (p, accepted, status) = simulate(cfg, Duration::from_millis(10));
        assert_eq!(status, Status::DeadlinePassed);
        assert!(accepted.is_empty());
        assert_eq!(p.delivered(), 0);
    }
}

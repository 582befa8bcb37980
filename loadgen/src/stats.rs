//! Per-thread measurements, merged at the end of a run.
//!
//! Each worker owns its own `Histogram` and counters (no sharing on the hot
//! path); the run merges them once. Latencies are in nanoseconds.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};

/// Highest latency the histograms track (1 hour in ns); larger values saturate.
pub const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// A fresh latency histogram: 1 ns .. 1 h, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts; fall back to an
    // auto-resizing histogram rather than panic if that ever changed.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).unwrap_or_else(|_| {
        let mut h = Histogram::new(3).unwrap_or_else(|_| unreachable_hist());
        h.auto(true);
        h
    })
}

fn unreachable_hist() -> Histogram<u64> {
    // Histogram::new(3) only fails for sigfig > 5; 3 is valid.
    Histogram::new(2).unwrap_or_else(|_| std::process::abort())
}

/// Counters by ILP error code, small and linear (a run sees few codes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeCounts(pub Vec<([u8; 3], u64)>);

impl CodeCounts {
    #[inline]
    pub fn add(&mut self, code: [u8; 3], n: u64) {
        for e in self.0.iter_mut() {
            if e.0 == code {
                e.1 += n;
                return;
            }
        }
        self.0.push((code, n));
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|e| e.1).sum()
    }

    pub fn merge(&mut self, other: &CodeCounts) {
        for (c, n) in &other.0 {
            self.add(*c, *n);
        }
    }

    /// Sorted by code, as (code string, count).
    pub fn sorted(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .0
            .iter()
            .map(|(c, n)| (String::from_utf8_lossy(c).into_owned(), *n))
            .collect();
        v.sort();
        v
    }
}

/// Error messages with counts: the first occurrence of each message is kept.
#[derive(Clone, Debug, Default)]
pub struct ErrorLog(pub Vec<(String, u64)>);

impl ErrorLog {
    pub fn add(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Some(e) = self.0.iter_mut().find(|e| e.0 == msg) {
            e.1 += 1;
        } else if self.0.len() < 64 {
            self.0.push((msg, 1));
        }
    }

    pub fn merge(&mut self, other: &ErrorLog) {
        for (m, n) in &other.0 {
            if let Some(e) = self.0.iter_mut().find(|e| &e.0 == m) {
                e.1 += n;
            } else {
                self.0.push((m.clone(), *n));
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|e| e.1).sum()
    }
}

/// What one sender thread saw.
#[derive(Clone, Debug)]
pub struct SenderStats {
    /// Latency of every reply to a packet sent in the measured window.
    pub hist: Histogram<u64>,
    /// Packets sent in the measured window (by intended send time).
    pub sent: u64,
    pub fulfilled: u64,
    pub rejected: CodeCounts,
    /// Fulfills whose preimage was not the one we derived.
    pub wrong_fulfillment: u64,
    /// No reply before expiry + grace.
    pub timed_out: u64,
    /// Packets never answered because the link failed or the run ended.
    pub lost: u64,
    /// BTP Error responses and HTTP error statuses for our Prepares.
    pub transport_errors: u64,
    /// Replies whose request id matched nothing in flight.
    pub unmatched: u64,
    /// Whole run (warm-up included): amounts for reconciliation.
    pub total_sent_packets: u64,
    pub total_amount_sent: u128,
    pub total_fulfilled_packets: u64,
    pub total_amount_fulfilled: u128,
    pub errors: ErrorLog,
    /// (seq, amount) of packets the receiver fulfilled whose reply never
    /// came back before they timed out.
    pub unconfirmed: Vec<(u64, u64)>,
    /// (seq, amount) of packets still in flight when their link failed or
    /// the run ended (bounded by the in-flight ring).
    pub in_flight_at_end: Vec<(u64, u64)>,
    /// Why the sender stopped early: every one of its links failed.
    pub aborted: Option<String>,
}

impl Default for SenderStats {
    fn default() -> Self {
        SenderStats {
            hist: new_histogram(),
            sent: 0,
            fulfilled: 0,
            rejected: CodeCounts::default(),
            wrong_fulfillment: 0,
            timed_out: 0,
            lost: 0,
            transport_errors: 0,
            unmatched: 0,
            total_sent_packets: 0,
            total_amount_sent: 0,
            total_fulfilled_packets: 0,
            total_amount_fulfilled: 0,
            errors: ErrorLog::default(),
            unconfirmed: Vec::new(),
            in_flight_at_end: Vec::new(),
            aborted: None,
        }
    }
}

impl SenderStats {
    pub fn merge(&mut self, o: &SenderStats) {
        // Both histograms share bounds; `add` only fails on a value out of range.
        let _ = self.hist.add(&o.hist);
        self.sent += o.sent;
        self.fulfilled += o.fulfilled;
        self.rejected.merge(&o.rejected);
        self.wrong_fulfillment += o.wrong_fulfillment;
        self.timed_out += o.timed_out;
        self.lost += o.lost;
        self.transport_errors += o.transport_errors;
        self.unmatched += o.unmatched;
        self.total_sent_packets += o.total_sent_packets;
        self.total_amount_sent += o.total_amount_sent;
        self.total_fulfilled_packets += o.total_fulfilled_packets;
        self.total_amount_fulfilled += o.total_amount_fulfilled;
        self.errors.merge(&o.errors);
        self.unconfirmed.extend_from_slice(&o.unconfirmed);
        self.in_flight_at_end.extend_from_slice(&o.in_flight_at_end);
        if self.aborted.is_none() {
            self.aborted.clone_from(&o.aborted);
        }
    }

    /// Records one latency, saturating at the histogram's top.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let v = ns.clamp(1, MAX_LATENCY_NS);
        let _ = self.hist.record(v);
    }
}

/// What one receiver thread saw.
#[derive(Clone, Debug, Default)]
pub struct ReceiverStats {
    pub prepares: u64,
    pub fulfilled: u64,
    /// Sum of the amounts of the Prepares it fulfilled with the right preimage.
    pub amount_fulfilled: u128,
    /// Rejects it sent, by code (mix rejects and check failures).
    pub rejected: CodeCounts,
    pub wrong_fulfillment_sent: u64,
    pub no_answer: u64,
    /// Prepares it could not parse or that failed a check, by reason.
    pub check_failures: ErrorLog,
    pub errors: ErrorLog,
}

impl ReceiverStats {
    pub fn merge(&mut self, o: &ReceiverStats) {
        self.prepares += o.prepares;
        self.fulfilled += o.fulfilled;
        self.amount_fulfilled += o.amount_fulfilled;
        self.rejected.merge(&o.rejected);
        self.wrong_fulfillment_sent += o.wrong_fulfillment_sent;
        self.no_answer += o.no_answer;
        self.check_failures.merge(&o.check_failures);
        self.errors.merge(&o.errors);
    }
}

/// Live counters a worker publishes once per loop turn for the progress line.
#[derive(Debug, Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub fulfilled: AtomicU64,
    pub rejected: AtomicU64,
    pub received: AtomicU64,
}

impl Live {
    #[inline]
    pub fn publish_sender(&self, sent: u64, fulfilled: u64, rejected: u64) {
        self.sent.store(sent, Ordering::Relaxed);
        self.fulfilled.store(fulfilled, Ordering::Relaxed);
        self.rejected.store(rejected, Ordering::Relaxed);
    }
}

/// Latency percentiles in ns.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub p99_99: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            p99_99: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }
}

/// Human form of a duration in ns: "812 ns", "12.3 µs", "4.56 ms", "1.20 s".
pub fn fmt_ns(ns: u64) -> String {
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", f / 1e6)
    } else {
        format!("{:.2} s", f / 1e9)
    }
}

/// Human form of a rate: "2,134,567/s".
pub fn fmt_rate(r: f64) -> String {
    format!("{}/s", fmt_int(r.round() as u128))
}

/// Thousands separators.
pub fn fmt_int(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    let first = s.len() % 3;
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && i >= first && (i - first).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_histograms_and_counts() {
        let mut a = SenderStats::default();
        let mut b = SenderStats::default();
        for v in 1..=1000u64 {
            a.record(v * 1000);
        }
        b.record(5_000_000_000);
        a.rejected.add(*b"F99", 2);
        b.rejected.add(*b"F99", 3);
        b.rejected.add(*b"T04", 1);
        b.errors.add("x");
        b.errors.add("x");
        a.merge(&b);
        assert_eq!(a.hist.len(), 1001);
        let p = Percentiles::of(&a.hist);
        assert!(p.max >= 4_990_000_000, "max {}", p.max);
        assert!((495_000..=505_000).contains(&p.p50), "p50 {}", p.p50);
        assert_eq!(
            a.rejected.sorted(),
            vec![("F99".to_string(), 5), ("T04".to_string(), 1)]
        );
        assert_eq!(a.errors.total(), 2);
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_int(2_134_567), "2,134,567");
        assert_eq!(fmt_int(999), "999");
        assert_eq!(fmt_int(1000), "1,000");
        assert_eq!(fmt_ns(812), "812 ns");
        assert_eq!(fmt_ns(12_340), "12.3 µs");
        assert_eq!(fmt_ns(4_560_000), "4.56 ms");
        assert_eq!(fmt_rate(1234.4), "1,234/s");
    }
}

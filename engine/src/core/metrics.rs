//! Counters the core keeps, per worker, as relaxed atomics (each worker
//! writes only its own block, on its own cache lines), summed when
//! `/metrics` is rendered in the Prometheus text format.
//!
//! Each block has a single writer (its worker's `Core` and IO loop), so an
//! increment is a relaxed load and store ([`bump`]), not a locked
//! read-modify-write: the hot path pays no atomic RMW for metrics. A
//! worker index past the configured count shares a block (counts could
//! then be lost under a race, never corrupted).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam::utils::CachePadded;

use super::ErrorCode;

/// Reject codes counted by name; anything else is "other".
pub const CODES: [ErrorCode; 22] = ErrorCode::ALL;

/// Single-writer increment: no `lock` prefix; readers see whole values.
#[inline(always)]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

#[inline]
fn code_index(code: ErrorCode) -> usize {
    CODES.iter().position(|c| *c == code).unwrap_or(CODES.len())
}

/// Upper bounds of the forwarding-latency histogram, in ns (10 µs … 30 s).
pub const LATENCY_BOUNDS_NS: [u64; 20] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// Counters about one account, kept by one worker.
#[derive(Default)]
pub struct AccountCounters {
    /// Prepares the account sent us.
    pub prepares_in: AtomicU64,
    /// Prepares we forwarded to it.
    pub prepares_out: AtomicU64,
    /// Replies it sent to our Prepares.
    pub fulfills_in: AtomicU64,
    pub rejects_in: AtomicU64,
    /// Replies we sent to its Prepares; rejects by code.
    pub fulfills_out: AtomicU64,
    pub rejects_out: [AtomicU64; CODES.len() + 1],
}

/// Why a reply was dropped without effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// No pending packet with that id: unknown, duplicate, or after expiry.
    Unknown = 0,
    /// It came from another account than the one we forwarded to.
    WrongAccount = 1,
    /// `on_forward_failed` for an id no longer pending.
    FailedUnknown = 2,
}

const DROPPED: [&str; 3] = ["unknown_or_late", "wrong_account", "forward_failed_unknown"];

/// One worker's counters.
pub struct WorkerMetrics {
    pub accounts: Box<[AccountCounters]>,
    pub in_flight: AtomicU64,
    pub loop_turns: AtomicU64,
    pub loop_messages: AtomicU64,
    pub loop_max_messages: AtomicU64,
    pub fulfill_batches: AtomicU64,
    pub fulfill_batch_packets: AtomicU64,
    pub dropped: [AtomicU64; 3],
    /// A Fulfill that came after our outgoing expiry (R00 sent instead).
    pub late_fulfills: AtomicU64,
    /// A reply that is neither a valid Fulfill nor a valid Reject.
    pub invalid_replies: AtomicU64,
    /// A Fulfill whose SHA-256 did not match the condition (F05 sent).
    pub wrong_fulfillments: AtomicU64,
    pub expired: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS_NS.len() + 1],
    latency_sum_ns: AtomicU64,
}

impl WorkerMetrics {
    fn new(accounts: usize) -> Self {
        WorkerMetrics {
            accounts: (0..accounts).map(|_| AccountCounters::default()).collect(),
            in_flight: AtomicU64::new(0),
            loop_turns: AtomicU64::new(0),
            loop_messages: AtomicU64::new(0),
            loop_max_messages: AtomicU64::new(0),
            fulfill_batches: AtomicU64::new(0),
            fulfill_batch_packets: AtomicU64::new(0),
            dropped: Default::default(),
            late_fulfills: AtomicU64::new(0),
            invalid_replies: AtomicU64::new(0),
            wrong_fulfillments: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            latency: Default::default(),
            latency_sum_ns: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn account(&self, idx: u32) -> Option<&AccountCounters> {
        self.accounts.get(idx as usize)
    }

    #[inline]
    pub fn reject_sent(&self, to: u32, code: ErrorCode) {
        if let Some(a) = self.account(to) {
            bump(&a.rejects_out[code_index(code)], 1);
        }
    }

    #[inline]
    pub fn fulfill_sent(&self, to: u32) {
        if let Some(a) = self.account(to) {
            bump(&a.fulfills_out, 1);
        }
    }

    #[inline]
    pub fn dropped(&self, why: Dropped) {
        bump(&self.dropped[why as usize], 1);
    }

    /// Records one forwarded packet's time from arrival to reply.
    #[inline]
    pub fn latency(&self, ns: u64) {
        let i = LATENCY_BOUNDS_NS.partition_point(|&b| b < ns);
        bump(&self.latency[i], 1);
        bump(&self.latency_sum_ns, ns);
    }

    pub fn record_loop(&self, messages: usize) {
        bump(&self.loop_turns, 1);
        bump(&self.loop_messages, messages as u64);
        if messages as u64 > self.loop_max_messages.load(Relaxed) {
            self.loop_max_messages.store(messages as u64, Relaxed);
        }
    }
}

/// All workers' counters.
pub struct Metrics {
    workers: Box<[CachePadded<WorkerMetrics>]>,
}

/// What render needs to know about each account, from `Shared`.
pub struct AccountView<'a> {
    pub name: &'a str,
    pub balance: i64,
    pub reserved_incoming: i128,
    pub reserved_outgoing: i128,
    pub connections: u32,
}

impl Metrics {
    pub fn new(workers: usize, accounts: usize) -> Metrics {
        Metrics {
            workers: (0..workers.max(1))
                .map(|_| CachePadded::new(WorkerMetrics::new(accounts)))
                .collect(),
        }
    }

    /// Worker `w`'s block. Indices past the configured worker count share
    /// blocks (still correct: every update is an atomic add).
    #[inline]
    pub fn worker(&self, w: usize) -> &WorkerMetrics {
        &self.workers[w % self.workers.len()]
    }

    fn sum(&self, f: impl Fn(&WorkerMetrics) -> &AtomicU64) -> u64 {
        self.workers
            .iter()
            .map(|w| f(w).load(Relaxed))
            .fold(0, u64::wrapping_add)
    }

    pub fn render(&self, accounts: &[AccountView<'_>]) -> String {
        let mut s = String::with_capacity(4096);
        let esc = |n: &str| n.replace('\\', "\\\\").replace('"', "\\\"");
        let head = |s: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };

        head(
            &mut s,
            "ilpd_packets_total",
            "counter",
            "ILP packets by account, direction (in = from the account) and type.",
        );
        for (i, a) in accounts.iter().enumerate() {
            let n = esc(a.name);
            let per = |f: &dyn Fn(&AccountCounters) -> &AtomicU64| -> u64 {
                self.workers
                    .iter()
                    .filter_map(|w| w.accounts.get(i))
                    .map(|c| f(c).load(Relaxed))
                    .sum()
            };
            let rejects_out: u64 = (0..=CODES.len())
                .map(|k| per(&|c: &AccountCounters| &c.rejects_out[k]))
                .sum();
            for (dir, ty, v) in [
                ("in", "prepare", per(&|c| &c.prepares_in)),
                ("out", "prepare", per(&|c| &c.prepares_out)),
                ("in", "fulfill", per(&|c| &c.fulfills_in)),
                ("in", "reject", per(&|c| &c.rejects_in)),
                ("out", "fulfill", per(&|c| &c.fulfills_out)),
                ("out", "reject", rejects_out),
            ] {
                let _ = writeln!(
                    s,
                    "ilpd_packets_total{{account=\"{n}\",direction=\"{dir}\",type=\"{ty}\"}} {v}"
                );
            }
        }
        head(
            &mut s,
            "ilpd_rejects_sent_total",
            "counter",
            "Rejects sent back to an account, by code (ours and relayed).",
        );
        for (i, a) in accounts.iter().enumerate() {
            let n = esc(a.name);
            for k in 0..=CODES.len() {
                let v: u64 = self
                    .workers
                    .iter()
                    .filter_map(|w| w.accounts.get(i))
                    .map(|c| c.rejects_out[k].load(Relaxed))
                    .sum();
                if v > 0 {
                    let code = CODES.get(k).map(|c| c.as_str()).unwrap_or("other");
                    let _ = writeln!(
                        s,
                        "ilpd_rejects_sent_total{{account=\"{n}\",code=\"{code}\"}} {v}"
                    );
                }
            }
        }
        head(
            &mut s,
            "ilpd_account_balance",
            "gauge",
            "Settled balance: what the peer owes us (negative: we owe it).",
        );
        for a in accounts {
            let _ = writeln!(
                s,
                "ilpd_account_balance{{account=\"{}\"}} {}",
                esc(a.name),
                a.balance
            );
        }
        head(
            &mut s,
            "ilpd_account_reserved",
            "gauge",
            "Amounts held by pending Prepares from (incoming) and to (outgoing) the account.",
        );
        for a in accounts {
            let n = esc(a.name);
            let _ = writeln!(
                s,
                "ilpd_account_reserved{{account=\"{n}\",direction=\"incoming\"}} {}",
                a.reserved_incoming
            );
            let _ = writeln!(
                s,
                "ilpd_account_reserved{{account=\"{n}\",direction=\"outgoing\"}} {}",
                a.reserved_outgoing
            );
        }
        head(
            &mut s,
            "ilpd_account_connections",
            "gauge",
            "Live authenticated connections per account.",
        );
        for a in accounts {
            let _ = writeln!(
                s,
                "ilpd_account_connections{{account=\"{}\"}} {}",
                esc(a.name),
                a.connections
            );
        }

        let per_worker = |s: &mut String,
                          name: &str,
                          kind: &str,
                          help: &str,
                          f: &dyn Fn(&WorkerMetrics) -> &AtomicU64| {
            head(s, name, kind, help);
            for (w, m) in self.workers.iter().enumerate() {
                let _ = writeln!(s, "{name}{{worker=\"{w}\"}} {}", f(m).load(Relaxed));
            }
        };
        per_worker(
            &mut s,
            "ilpd_in_flight",
            "gauge",
            "Forwarded Prepares waiting for a reply.",
            &|m| &m.in_flight,
        );
        per_worker(
            &mut s,
            "ilpd_loop_turns_total",
            "counter",
            "Event-loop turns.",
            &|m| &m.loop_turns,
        );
        per_worker(
            &mut s,
            "ilpd_loop_messages_total",
            "counter",
            "Messages handled in event-loop turns.",
            &|m| &m.loop_messages,
        );
        per_worker(
            &mut s,
            "ilpd_loop_messages_max",
            "gauge",
            "Most messages handled in one turn.",
            &|m| &m.loop_max_messages,
        );
        per_worker(
            &mut s,
            "ilpd_fulfill_batches_total",
            "counter",
            "Fulfill verification batches.",
            &|m| &m.fulfill_batches,
        );
        per_worker(
            &mut s,
            "ilpd_fulfill_batch_packets_total",
            "counter",
            "Fulfills verified in batches.",
            &|m| &m.fulfill_batch_packets,
        );

        head(
            &mut s,
            "ilpd_replies_dropped_total",
            "counter",
            "Replies dropped without effect.",
        );
        for (k, why) in DROPPED.iter().enumerate() {
            let _ = writeln!(
                s,
                "ilpd_replies_dropped_total{{reason=\"{why}\"}} {}",
                self.sum(|w| &w.dropped[k])
            );
        }
        for (name, help, v) in [
            (
                "ilpd_late_fulfills_total",
                "Fulfills that came after our outgoing expiry (R00 sent upstream).",
                self.sum(|w| &w.late_fulfills),
            ),
            (
                "ilpd_invalid_replies_total",
                "Replies that were neither a valid Fulfill nor a valid Reject.",
                self.sum(|w| &w.invalid_replies),
            ),
            (
                "ilpd_wrong_fulfillments_total",
                "Fulfills that did not match the condition (F05 sent upstream).",
                self.sum(|w| &w.wrong_fulfillments),
            ),
            (
                "ilpd_expired_total",
                "Forwarded Prepares that expired without a reply (R00 sent upstream).",
                self.sum(|w| &w.expired),
            ),
        ] {
            head(&mut s, name, "counter", help);
            let _ = writeln!(s, "{name} {v}");
        }

        let name = "ilpd_forward_latency_seconds";
        head(
            &mut s,
            name,
            "histogram",
            "Time from a Prepare's arrival to its reply, for forwarded packets.",
        );
        let mut cum = 0u64;
        for (k, b) in LATENCY_BOUNDS_NS.iter().enumerate() {
            cum += self.sum(|w| &w.latency[k]);
            let _ = writeln!(s, "{name}_bucket{{le=\"{}\"}} {cum}", *b as f64 / 1e9);
        }
        cum += self.sum(|w| &w.latency[LATENCY_BOUNDS_NS.len()]);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            s,
            "{name}_sum {}",
            self.sum(|w| &w.latency_sum_ns) as f64 / 1e9
        );
        let _ = writeln!(s, "{name}_count {cum}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_sums_workers() {
        let m = Metrics::new(2, 1);
        m.worker(0).latency(5_000); // ≤ 10 µs
        m.worker(1).latency(10_000); // ≤ 10 µs (bounds are inclusive)
        m.worker(1).latency(40_000_000_000); // +Inf
        m.worker(3)
            .reject_sent(0, ErrorCode::T04_INSUFFICIENT_LIQUIDITY); // aliases worker 1
        m.worker(0)
            .reject_sent(0, ErrorCode::from_bytes(*b"T42").unwrap());
        let text = m.render(&[AccountView {
            name: "a\"b",
            balance: -5,
            reserved_incoming: 0,
            reserved_outgoing: 3,
            connections: 1,
        }]);
        assert!(
            text.contains("ilpd_forward_latency_seconds_bucket{le=\"0.00001\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("ilpd_forward_latency_seconds_bucket{le=\"30\"} 2\n"));
        assert!(text.contains("ilpd_forward_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("ilpd_forward_latency_seconds_count 3\n"));
        assert!(text.contains("ilpd_rejects_sent_total{account=\"a\\\"b\",code=\"T04\"} 1\n"));
        assert!(text.contains("ilpd_rejects_sent_total{account=\"a\\\"b\",code=\"other\"} 1\n"));
        assert!(text.contains(
            "ilpd_packets_total{account=\"a\\\"b\",direction=\"out\",type=\"reject\"} 2\n"
        ));
        assert!(text.contains("ilpd_account_balance{account=\"a\\\"b\"} -5\n"));
    }
}

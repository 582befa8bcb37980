//! What a listener does when `accept` fails for want of resources
//! (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`): the connection waits in the
//! kernel's backlog, and with edge-triggered polling no new event comes for
//! it, so the worker retries on a timer instead of waiting for the next
//! connection, logs at most once a second, and keeps serving the
//! connections it has (issue 16).

/// Retry delay after a failed `accept`.
pub const RETRY_MS: u64 = 100;
/// At most one log line per this long.
const WARN_EVERY_MS: u64 = 1_000;

#[derive(Debug, Default)]
pub struct AcceptBackoff {
    retry_at_ms: Option<u64>,
    last_warn_ms: Option<u64>,
    /// Failures since the last log line.
    failures: u64,
}

impl AcceptBackoff {
    /// `accept` failed at `now_ms`: retry later. Returns the number of
    /// failures to log now (0: stay quiet, one line a second at most).
    pub fn failed(&mut self, now_ms: u64) -> u64 {
        self.retry_at_ms = Some(now_ms + RETRY_MS);
        self.failures += 1;
        if self
            .last_warn_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < WARN_EVERY_MS)
        {
            return 0;
        }
        self.last_warn_ms = Some(now_ms);
        std::mem::take(&mut self.failures)
    }

    /// `accept` worked (or would block): no retry pending.
    pub fn ok(&mut self) {
        self.retry_at_ms = None;
    }

    /// When to try `accept` again, if a failure is pending.
    pub fn deadline(&self) -> Option<u64> {
        self.retry_at_ms
    }

    pub fn due(&self, now_ms: u64) -> bool {
        self.retry_at_ms.is_some_and(|t| t <= now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_on_a_timer_and_logs_once_a_second() {
        let mut b = AcceptBackoff::default();
        assert!(!b.due(0) && b.deadline().is_none());
        assert_eq!(b.failed(1_000), 1, "the first failure is logged");
        assert_eq!(b.deadline(), Some(1_100));
        assert!(!b.due(1_099) && b.due(1_100));
        assert_eq!(b.failed(1_100), 0);
        assert_eq!(b.failed(1_500), 0);
        assert_eq!(b.failed(2_000), 3, "then the count since the last line");
        b.ok();
        assert!(b.deadline().is_none());
    }
}

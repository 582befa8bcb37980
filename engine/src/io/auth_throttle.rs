//! Failed-auth throttling per source IP (issue 16): each failed BTP auth or
//! HTTP 401 from an address costs it `60 s / per_min` of credit; past a
//! burst of [`BURST`] failures, new connections from that address are
//! closed at accept until the credit refills. Established connections are
//! never touched, so a peer that is already in keeps working. Shared by
//! every worker (a mutex, on the failure and accept paths only).

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

/// Failures an address may make at once before it is throttled.
pub const BURST: u64 = 10;
/// Entries kept before old ones are swept.
const SWEEP_AT: usize = 4096;

#[derive(Debug)]
pub struct AuthThrottle {
    /// Milliseconds of credit one failure costs; 0: throttling is off.
    cost_ms: u64,
    /// Per address: the time its spent credit is paid back (GCRA's TAT).
    tat: Mutex<HashMap<IpAddr, u64>>,
}

impl AuthThrottle {
    /// `per_min` failures a minute per address, after a burst of [`BURST`];
    /// 0 turns throttling off.
    pub fn new(per_min: u32) -> AuthThrottle {
        AuthThrottle {
            cost_ms: if per_min == 0 {
                0
            } else {
                60_000 / per_min as u64
            },
            tat: Mutex::new(HashMap::new()),
        }
    }

    /// An auth from `ip` failed at `now_ms`.
    pub fn failed(&self, ip: IpAddr, now_ms: u64) {
        if self.cost_ms == 0 {
            return;
        }
        let mut m = self.tat.lock();
        if m.len() >= SWEEP_AT {
            m.retain(|_, t| *t > now_ms);
        }
        let t = m.entry(ip).or_insert(0);
        *t = (*t).max(now_ms) + self.cost_ms;
    }

    /// Whether a new connection from `ip` is refused now.
    pub fn blocked(&self, ip: IpAddr, now_ms: u64) -> bool {
        if self.cost_ms == 0 {
            return false;
        }
        self.tat
            .lock()
            .get(&ip)
            .is_some_and(|t| *t > now_ms + BURST * self.cost_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t = AuthThrottle::new(60); // one a second after the burst
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        let t0 = 1_000_000;
        for _ in 0..=BURST {
            assert!(!t.blocked(ip, t0));
            t.failed(ip, t0);
        }
        assert!(t.blocked(ip, t0), "past the burst");
        assert!(!t.blocked(other, t0), "per address");
        assert!(t.blocked(ip, t0 + 999));
        assert!(!t.blocked(ip, t0 + 1_000), "one failure's worth refilled");
        t.failed(ip, t0 + 1_000);
        assert!(t.blocked(ip, t0 + 1_000));
        assert!(!AuthThrottle::new(0).blocked(ip, t0), "0 is off");
    }
}

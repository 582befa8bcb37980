//! Per-account shared state: balances with reservations, connection counts
//! and rate limiters, all lock-free atomics (docs/design.md "Shared state").
//!
//! The balance (docs/design.md "Balance sign": positive = the peer owes us) is kept
//! with two bounds so that each limit check is a single CAS:
//! - `upper` = balance + incoming reservations, checked against `max_balance`
//!   when the peer sends us a Prepare;
//! - `lower` = balance − outgoing reservations, checked against `min_balance`
//!   when we forward a Prepare to the peer.
//!
//! A fulfill moves a reservation into `balance` and the other bound; a reject
//! or timeout gives it back. When nothing is pending, `lower == balance == upper`.
//! Amounts are u64 and the bounds i64: every stored value lies between
//! `min_balance` and `max_balance` (both i64), so wrapping atomic adds give
//! the exact result; only the checks are done in i128.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::*};

use crossbeam::utils::CachePadded;

/// The three balance words of one account, together on one cache line (they
/// change together) and away from other accounts' lines.
#[derive(Default)]
struct Words {
    balance: AtomicI64,
    upper: AtomicI64,
    lower: AtomicI64,
}

/// A snapshot of an account's balance for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceSnapshot {
    /// Settled balance: what the peer owes us (negative: we owe it).
    pub balance: i64,
    /// Sum of the peer's pending Prepares (to be added on fulfill).
    pub reserved_incoming: i128,
    /// Sum of our pending Prepares to the peer (to be subtracted on fulfill).
    pub reserved_outgoing: i128,
}

/// Balances and limits of one account.
pub struct AccountState {
    words: CachePadded<Words>,
    connections: CachePadded<AtomicU32>,
    pub min_balance: i64,
    pub max_balance: i64,
    pub packets: Option<Gcra>,
    pub amount: Option<Gcra>,
}

impl AccountState {
    pub fn new(
        min_balance: i64,
        max_balance: i64,
        packets_per_sec: Option<u32>,
        amount_per_sec: Option<u64>,
    ) -> Self {
        AccountState {
            words: CachePadded::new(Words::default()),
            connections: CachePadded::new(AtomicU32::new(0)),
            min_balance,
            max_balance,
            packets: packets_per_sec.map(|r| Gcra::new(r as u64)),
            amount: amount_per_sec.map(Gcra::new),
        }
    }

    /// Reserves an incoming Prepare's amount; false (T04) if the balance
    /// plus all reservations would exceed `max_balance` (docs/design.md "Balance sign").
    #[inline]
    pub fn reserve_incoming(&self, amount: u64) -> bool {
        let max = self.max_balance as i128;
        let upper = &self.words.upper;
        let mut cur = upper.load(Relaxed);
        loop {
            let new = cur as i128 + amount as i128;
            if new > max {
                return false;
            }
            match upper.compare_exchange_weak(cur, new as i64, AcqRel, Relaxed) {
                Ok(_) => return true,
                Err(v) => cur = v,
            }
        }
    }

    /// The incoming Prepare was rejected or expired: give the reservation back.
    #[inline]
    pub fn release_incoming(&self, amount: u64) {
        self.words.upper.fetch_sub(amount as i64, AcqRel);
    }

    /// The incoming Prepare was fulfilled: the peer now owes us `amount`.
    #[inline]
    pub fn settle_incoming(&self, amount: u64) {
        self.words.balance.fetch_add(amount as i64, AcqRel);
        self.words.lower.fetch_add(amount as i64, AcqRel);
    }

    /// Reserves an outgoing Prepare's amount; false (T04) if the balance
    /// minus all outgoing reservations would go below `min_balance`.
    #[inline]
    pub fn reserve_outgoing(&self, amount: u64) -> bool {
        let min = self.min_balance as i128;
        let lower = &self.words.lower;
        let mut cur = lower.load(Relaxed);
        loop {
            let new = cur as i128 - amount as i128;
            if new < min {
                return false;
            }
            match lower.compare_exchange_weak(cur, new as i64, AcqRel, Relaxed) {
                Ok(_) => return true,
                Err(v) => cur = v,
            }
        }
    }

    /// Our Prepare to this peer was rejected or expired.
    #[inline]
    pub fn release_outgoing(&self, amount: u64) {
        self.words.lower.fetch_add(amount as i64, AcqRel);
    }

    /// Our Prepare to this peer was fulfilled: we owe it `amount` more.
    #[inline]
    pub fn settle_outgoing(&self, amount: u64) {
        self.words.balance.fetch_sub(amount as i64, AcqRel);
        self.words.upper.fetch_sub(amount as i64, AcqRel);
    }

    /// Applies the net of several settlements at once (see [`Settlement`]).
    #[inline]
    pub fn apply(&self, d: &Settlement) {
        if d.balance != 0 {
            self.words.balance.fetch_add(d.balance, AcqRel);
        }
        if d.upper != 0 {
            self.words.upper.fetch_add(d.upper, AcqRel);
        }
        if d.lower != 0 {
            self.words.lower.fetch_add(d.lower, AcqRel);
        }
    }

    /// Sets the balance recovered from the ledger, with nothing reserved
    /// (before any packet flows).
    pub fn restore(&self, balance: i64) {
        self.words.balance.store(balance, Release);
        self.words.upper.store(balance, Release);
        self.words.lower.store(balance, Release);
    }

    #[inline]
    pub fn balance(&self) -> i64 {
        self.words.balance.load(Acquire)
    }

    pub fn snapshot(&self) -> BalanceSnapshot {
        let balance = self.words.balance.load(Acquire);
        let upper = self.words.upper.load(Acquire);
        let lower = self.words.lower.load(Acquire);
        BalanceSnapshot {
            balance,
            reserved_incoming: upper as i128 - balance as i128,
            reserved_outgoing: balance as i128 - lower as i128,
        }
    }

    /// Returns whether this is the account's first live connection.
    pub fn connection_opened(&self) -> bool {
        self.connections.fetch_add(1, AcqRel) == 0
    }

    /// Never goes below zero, whatever IO reports. Returns whether that was
    /// the account's last live connection.
    pub fn connection_closed(&self) -> bool {
        self.connections
            .fetch_update(AcqRel, Acquire, |c| c.checked_sub(1))
            == Ok(1)
    }

    #[inline]
    pub fn connections(&self) -> u32 {
        self.connections.load(Acquire)
    }
}

/// The net change of a batch of fulfills to one account's words, summed
/// with wrapping adds (exact, since each final word is in range). Applying
/// it late only delays freeing headroom, so limit checks stay sound.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    pub balance: i64,
    pub upper: i64,
    pub lower: i64,
}

impl Settlement {
    /// Same as [`AccountState::settle_incoming`].
    #[inline]
    pub fn incoming(&mut self, amount: u64) {
        self.balance = self.balance.wrapping_add(amount as i64);
        self.lower = self.lower.wrapping_add(amount as i64);
    }

    /// Same as [`AccountState::settle_outgoing`].
    #[inline]
    pub fn outgoing(&mut self, amount: u64) {
        self.balance = self.balance.wrapping_sub(amount as i64);
        self.upper = self.upper.wrapping_sub(amount as i64);
    }
}

/// A lock-free token bucket in its GCRA form: one atomic "theoretical
/// arrival time" in ns. Each unit costs `1 s / rate`; a burst of up to one
/// second's worth (`rate` units) is allowed.
pub struct Gcra {
    tat: CachePadded<AtomicU64>,
    /// Units per second (at least 1).
    rate: u64,
}

const SECOND_NS: u128 = 1_000_000_000;

impl Gcra {
    pub fn new(rate_per_sec: u64) -> Self {
        Gcra {
            tat: CachePadded::new(AtomicU64::new(0)),
            rate: rate_per_sec.max(1),
        }
    }

    /// Takes `units` tokens at `now_ns`, or refuses (T05) without taking any.
    #[inline]
    pub fn try_take(&self, now_ns: u64, units: u64) -> bool {
        // cost = units / rate seconds, floor in ns; a request larger than a
        // whole second's allowance can never pass.
        let cost = units as u128 * SECOND_NS / self.rate as u128;
        if cost > SECOND_NS {
            return false;
        }
        let cost = cost as u64;
        let mut tat = self.tat.load(Relaxed);
        loop {
            let new = tat.max(now_ns).saturating_add(cost);
            if new - now_ns > SECOND_NS as u64 {
                return false;
            }
            match self.tat.compare_exchange_weak(tat, new, AcqRel, Relaxed) {
                Ok(_) => return true,
                Err(v) => tat = v,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_respect_limits_and_settle() {
        let a = AccountState::new(-100, 100, None, None);
        assert!(a.reserve_incoming(60));
        assert!(!a.reserve_incoming(41), "60 + 41 > 100");
        assert!(a.reserve_incoming(40));
        a.release_incoming(40);
        a.settle_incoming(60);
        let s = a.snapshot();
        assert_eq!(
            (s.balance, s.reserved_incoming, s.reserved_outgoing),
            (60, 0, 0)
        );
        // lower is now 60: may go down to -100, i.e. 160.
        assert!(!a.reserve_outgoing(161));
        assert!(a.reserve_outgoing(160));
        a.settle_outgoing(160);
        assert_eq!(
            a.snapshot(),
            BalanceSnapshot {
                balance: -100,
                reserved_incoming: 0,
                reserved_outgoing: 0
            }
        );
    }

    #[test]
    fn batched_settlement_equals_one_by_one() {
        let (a, b) = (
            AccountState::new(i64::MIN, i64::MAX, None, None),
            AccountState::new(i64::MIN, i64::MAX, None, None),
        );
        let mut d = Settlement::default();
        for (amt, inc) in [
            (u64::MAX / 4, true),
            (7, false),
            (u64::MAX / 4, false),
            (3, true),
        ] {
            if inc {
                assert!(a.reserve_incoming(amt) && b.reserve_incoming(amt));
                a.settle_incoming(amt);
                d.incoming(amt);
            } else {
                assert!(a.reserve_outgoing(amt) && b.reserve_outgoing(amt));
                a.settle_outgoing(amt);
                d.outgoing(amt);
            }
        }
        b.apply(&d);
        assert_eq!(a.snapshot(), b.snapshot());
        assert_eq!(a.balance(), -4);
    }

    #[test]
    fn huge_amounts_do_not_wrap() {
        let a = AccountState::new(i64::MIN, i64::MAX, None, None);
        assert!(!a.reserve_incoming(u64::MAX));
        assert!(a.reserve_incoming(i64::MAX as u64));
        assert!(!a.reserve_incoming(1));
        a.release_incoming(i64::MAX as u64);
        assert!(a.reserve_outgoing(1u64 << 63));
        assert!(!a.reserve_outgoing(1));
        a.settle_outgoing(1u64 << 63);
        assert_eq!(a.balance(), i64::MIN);
        // Now the peer may send us up to i64::MAX - i64::MIN = u64::MAX.
        assert!(a.reserve_incoming(u64::MAX));
        a.settle_incoming(u64::MAX);
        assert_eq!(a.balance(), i64::MAX);
        assert_eq!(a.snapshot().reserved_incoming, 0);
    }

    #[test]
    fn gcra_allows_one_second_burst_then_rate() {
        let g = Gcra::new(3);
        let t0 = 5_000_000_000;
        assert!(g.try_take(t0, 1));
        assert!(g.try_take(t0, 1));
        assert!(g.try_take(t0, 1));
        assert!(!g.try_take(t0, 1));
        // One third of a second later one more token.
        assert!(g.try_take(t0 + 333_333_334, 1));
        assert!(!g.try_take(t0 + 333_333_334, 1));
        let amt = Gcra::new(1000);
        assert!(!amt.try_take(t0, 1001));
        assert!(amt.try_take(t0, 1000));
        assert!(!amt.try_take(t0, 1));
        assert!(amt.try_take(t0 + 1_000_000, 1));
    }

    #[test]
    fn connections_never_underflow() {
        let a = AccountState::new(0, 0, None, None);
        a.connection_closed();
        assert_eq!(a.connections(), 0);
        a.connection_opened();
        a.connection_opened();
        a.connection_closed();
        assert_eq!(a.connections(), 1);
    }
}

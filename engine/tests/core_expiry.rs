//! Expiry in virtual time: the timer wheel answers R00 at our outgoing
//! expiry, a late Fulfill is dropped and counted, balances stay untouched.

mod core_support;

use core_support::*;
use ilpd_engine::core::ErrorCode;

#[test]
fn timer_fires_r00_and_late_fulfill_is_dropped() {
    let mut h = Harness::base();
    let (ful, cond) = pair(1);
    let (origin, a) = h.send(
        "alice",
        prepare(100, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, id, fwd) = forwarded(&a);
    assert_eq!(fwd.expires_at().0, T0_MS + 9_000);
    let deadline = h.core.next_deadline().expect("a timer is armed");
    assert!(deadline > T0_MS && deadline <= T0_MS + 9_000, "{deadline}");
    h.advance_ms(8_999);
    assert!(h.timers().is_empty(), "not yet");
    assert_eq!(h.core.in_flight(), 1);
    h.advance_ms(1);
    let out = h.timers();
    assert_eq!(replied(&out).0, origin);
    assert_own_reject(&out, ErrorCode::R00_TRANSFER_TIMED_OUT);
    assert_eq!(h.core.in_flight(), 0);
    assert_eq!(h.core.next_deadline(), None);
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
    assert_eq!(h.snapshot("bob"), (0, 0, 0));
    // The next hop fulfils too late: dropped, counted, never settled.
    h.advance_ms(5);
    assert!(h.reply("bob", id, fulfill(&ful, b"")).is_empty());
    assert!(h.flush().is_empty());
    assert!(h.timers().is_empty(), "R00 is sent once");
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
    assert_eq!(h.snapshot("bob"), (0, 0, 0));
    assert_eq!(
        h.metric("ilpd_replies_dropped_total{reason=\"unknown_or_late\"}"),
        Some(1.0)
    );
    assert_eq!(h.metric("ilpd_expired_total"), Some(1.0));
}

#[test]
fn fulfill_at_expiry_before_timers_ran_is_late() {
    let mut h = Harness::base();
    let (ful, cond) = pair(2);
    let (_, a) = h.send(
        "alice",
        prepare(100, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, id, _) = forwarded(&a);
    h.advance_ms(9_000);
    // IO delivered the reply before running timers in this turn.
    let out = h.reply("bob", id, fulfill(&ful, b""));
    assert_own_reject(&out, ErrorCode::R00_TRANSFER_TIMED_OUT);
    assert!(h.flush().is_empty());
    assert!(h.timers().is_empty());
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
    assert_eq!(h.snapshot("bob"), (0, 0, 0));
    assert_eq!(h.metric("ilpd_late_fulfills_total"), Some(1.0));
}

#[test]
fn fulfill_just_before_expiry_settles() {
    let mut h = Harness::base();
    let (ful, cond) = pair(3);
    let (_, a) = h.send(
        "alice",
        prepare(100, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, id, _) = forwarded(&a);
    h.advance_ms(8_999);
    h.reply("bob", id, fulfill(&ful, b""));
    fulfilled(&h.flush());
    h.advance_ms(10_000);
    assert!(h.timers().is_empty(), "the timer was disarmed");
    assert_eq!(h.snapshot("alice"), (100, 0, 0));
    assert_eq!(h.snapshot("bob"), (-100, 0, 0));
}

#[test]
fn many_timers_fire_in_deadline_order_and_only_once() {
    let mut h = Harness::base();
    let mut expected = Vec::new();
    for i in 0..20u64 {
        let (_, cond) = pair(i as u8);
        // Incoming expiries 3 s .. 60 s (the latter capped at 30 s hold).
        let exp = T0_MS + 3_000 + i * 3_000;
        let (origin, a) = h.send("alice", prepare(1, exp, "test.net.bob", &cond, b""));
        forwarded(&a);
        expected.push((origin.request_id, (exp - 1000).min(T0_MS + 30_000)));
    }
    let mut fired = Vec::new();
    // Step through time in uneven jumps, as a real loop would.
    for step in [1u64, 999, 1000, 1, 2500, 7000, 20_000, 40_000] {
        h.advance_ms(step);
        for act in h.timers() {
            let r = rejected(std::slice::from_ref(&act));
            assert_eq!(r.code(), ErrorCode::R00_TRANSFER_TIMED_OUT);
            if let ilpd_engine::core::Action::Reply { to, .. } = act {
                let want = expected.iter().find(|e| e.0 == to.request_id).unwrap().1;
                assert!(
                    want <= h.now.unix_ms,
                    "fired early: deadline {want}, now {}",
                    h.now.unix_ms
                );
                fired.push(to.request_id);
            }
        }
        if let Some(d) = h.core.next_deadline() {
            let earliest = expected
                .iter()
                .filter(|e| !fired.contains(&e.0))
                .map(|e| e.1)
                .min()
                .unwrap();
            assert!(
                d <= earliest,
                "next_deadline {d} is after the earliest expiry {earliest}"
            );
        }
    }
    fired.sort();
    let mut all: Vec<u32> = expected.iter().map(|e| e.0).collect();
    all.sort();
    assert_eq!(fired, all);
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
}

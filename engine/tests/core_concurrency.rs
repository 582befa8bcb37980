//! Two workers on two threads forward through the same accounts at once
//! (the atomics are really shared): limits hold at every instant a third
//! thread looks, and afterwards balances equal the fulfilled packets.

mod core_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use core_support::*;
use ilpd_codec::ilp::Packet;
use ilpd_engine::config::Config;
use ilpd_engine::core::{AccountId, Action, Core, Now, ReplyTo, Shared};
use sha2::{Digest, Sha256};

const CFG: &str = r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.net.ilpd"
durability = "none"
threads = 2
max_in_flight = 32

[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "a"
max_balance = 20000
min_balance = -20000

[[accounts]]
id = "bob"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "b"
max_balance = 15000
min_balance = -15000
"#;

/// xorshift64*: deterministic per thread, no RNG crate needed.
fn rng(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Runs one worker; returns the net balance change it caused per account.
fn worker(shared: Arc<Shared>, w: usize, rounds: usize) -> [i128; 2] {
    let mut core = Core::new(shared, w);
    let mut seed = 0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1);
    let now = Now {
        unix_ms: T0_MS,
        mono_ns: 1,
    };
    let mut net = [0i128; 2];
    let mut req = 0u32;
    for _ in 0..rounds {
        // A burst of prepares, then answer them in random ways.
        let mut open = Vec::new();
        let mut out = Vec::new();
        for _ in 0..(rng(&mut seed) % 24 + 1) {
            req += 1;
            let from = (rng(&mut seed) % 2) as u32;
            let dest = if from == 0 {
                "test.net.ilpd.bob.x"
            } else {
                "test.net.ilpd.alice.x"
            };
            let amount = rng(&mut seed) % 2000;
            let mut f = [0u8; 32];
            f[..8].copy_from_slice(&rng(&mut seed).to_be_bytes());
            let c: [u8; 32] = Sha256::digest(f).into();
            let rt = ReplyTo {
                account: AccountId(from),
                conn: w as u64,
                request_id: req,
            };
            core.on_prepare(
                now,
                rt,
                prepare(amount, T0_MS + 10_000, dest, &c, b""),
                &mut out,
            );
            for a in out.drain(..) {
                match a {
                    Action::Forward { to, out_id, packet } => {
                        let amt = ilpd_codec::ilp::Prepare::new_checked(&packet[..])
                            .unwrap()
                            .amount();
                        open.push((to, out_id, f, from, amount, amt));
                    }
                    Action::Reply { packet, .. } => assert!(matches!(
                        Packet::new_checked(&packet[..]),
                        Ok(Packet::Reject(_))
                    )),
                }
            }
        }
        let mut replies = Vec::new();
        for (to, id, f, from, in_amt, out_amt) in open {
            let good = !rng(&mut seed).is_multiple_of(3);
            let pkt = if good {
                fulfill(&f, b"")
            } else {
                reject(
                    ilpd_engine::core::ErrorCode::T99_APPLICATION_ERROR,
                    "",
                    "",
                    b"",
                )
            };
            core.on_reply(now, to, id, pkt, &mut replies);
            if good {
                net[from as usize] += in_amt as i128;
                net[to.0 as usize] -= out_amt as i128;
            }
        }
        core.flush(now, &mut replies);
        assert_eq!(core.in_flight(), 0);
    }
    net
}

#[test]
fn two_workers_share_balances_without_drift() {
    let cfg = Config::from_toml(CFG).unwrap();
    let shared = Shared::from_config(&cfg).unwrap();
    shared.connection_opened(AccountId(0));
    shared.connection_opened(AccountId(1));
    let stop = Arc::new(AtomicBool::new(false));
    let checker = {
        let (shared, stop) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut looks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (i, (max, min)) in [(20000i128, -20000i128), (15000, -15000)]
                    .into_iter()
                    .enumerate()
                {
                    let s = shared.balance_snapshot(AccountId(i as u32)).unwrap();
                    // Each bound is one atomic word, so each is exact even mid-update.
                    assert!(s.balance as i128 + s.reserved_incoming <= max, "{s:?}");
                    assert!(s.balance as i128 - s.reserved_outgoing >= min, "{s:?}");
                }
                looks += 1;
            }
            looks
        })
    };
    let handles: Vec<_> = (0..2)
        .map(|w| {
            let shared = shared.clone();
            std::thread::spawn(move || worker(shared, w, 3000))
        })
        .collect();
    let nets: Vec<[i128; 2]> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    assert!(checker.join().unwrap() > 0);
    for a in 0..2 {
        let s = shared.balance_snapshot(AccountId(a as u32)).unwrap();
        let want: i128 = nets.iter().map(|n| n[a]).sum();
        assert_eq!(
            (s.balance as i128, s.reserved_incoming, s.reserved_outgoing),
            (want, 0, 0),
            "account {a}"
        );
    }
    // Both directions moved value, and the limits were actually hit.
    assert!(nets.iter().any(|n| n[0] != 0));
    let text = shared.render_metrics();
    assert!(
        text.contains("code=\"T04\""),
        "limits were never reached; the test is too gentle"
    );
}

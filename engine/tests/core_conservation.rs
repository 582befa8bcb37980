//! Property test: random interleavings of prepares, fulfills (right and
//! wrong), rejects, garbage replies, failed forwards, timeouts, duplicates
//! and clock jumps. Afterwards every balance equals the sum of its fulfilled
//! packets as seen from the outside (the Fulfills that came back upstream),
//! no reservation is left, and every Prepare got exactly one answer. During
//! the run no limit is ever exceeded.

mod core_support;

use std::collections::HashMap;

use core_support::*;
use ilpd_codec::ilp::Packet;
use ilpd_engine::core::{AccountId, Action, ErrorCode, OutId};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const CFG: &str = r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.net.ilpd"
threads = 1
max_in_flight = 6

[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "a"
max_balance = 6000

[[accounts]]
id = "bob"
relation = "peer"
asset_code = "USD"
asset_scale = 9
incoming_token = "b"
ilp_address = "test.net.bob"
min_balance = -4000
max_balance = 3000

[[accounts]]
id = "carol"
relation = "peer"
asset_code = "EUR"
asset_scale = 6
incoming_token = "c"
ilp_address = "test.net.carol"
min_balance = -5

[[accounts]]
id = "dave"
relation = "parent"
asset_code = "USD"
asset_scale = 8
incoming_token = "d"

[[routes]]
prefix = "test.net"
account = "dave"

[rates]
spread = "0.01"
prices = { USD = "1", EUR = "1.1" }
"#;

const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];
const DESTS: [&str; 5] = [
    "test.net.bob.x",
    "test.net.carol",
    "test.net.ilpd.alice.w",
    "test.net.zz",
    "g.nowhere",
];

#[derive(Debug, Clone)]
enum Op {
    Prepare {
        from: usize,
        dest: usize,
        amount: u64,
        expiry_in: u64,
    },
    Fulfill {
        k: usize,
        correct: bool,
    },
    Reject {
        k: usize,
    },
    Garbage {
        k: usize,
    },
    WrongAccount {
        k: usize,
    },
    Duplicate,
    ForwardFailed {
        k: usize,
    },
    Advance {
        ms: u64,
    },
    Timers,
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize, 0..5usize, prop_oneof![Just(0u64), 1..3000u64, 1..30u64], 0..40_000u64)
            .prop_map(|(from, dest, amount, expiry_in)| Op::Prepare { from, dest, amount, expiry_in }),
        4 => (any::<usize>(), prop::bool::weighted(0.85)).prop_map(|(k, correct)| Op::Fulfill { k, correct }),
        2 => any::<usize>().prop_map(|k| Op::Reject { k }),
        1 => any::<usize>().prop_map(|k| Op::Garbage { k }),
        1 => any::<usize>().prop_map(|k| Op::WrongAccount { k }),
        1 => Just(Op::Duplicate),
        1 => any::<usize>().prop_map(|k| Op::ForwardFailed { k }),
        2 => (0..6000u64).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Timers),
        3 => Just(Op::Flush),
    ]
}

/// What the test knows about one Prepare it sent.
struct Sent {
    from: AccountId,
    in_amount: u64,
    /// Set when it was forwarded: (next hop, outgoing amount).
    forwarded: Option<(AccountId, u64)>,
    answers: u32,
    fulfilled: bool,
}

struct Model {
    h: Harness,
    sent: HashMap<u32, Sent>,
    /// Forwards waiting for a reply from the test: (out_id, next hop, request id, fulfillment).
    open: Vec<(OutId, AccountId, u32, [u8; 32])>,
    /// Replies already given (to re-send as duplicates).
    answered: Vec<(OutId, AccountId, [u8; 32])>,
    counter: u64,
    /// The request id of the Prepare being processed (a Forward belongs to it).
    last_request: u32,
}

impl Model {
    fn absorb(&mut self, actions: Vec<Action>, fulfillment: Option<[u8; 32]>) {
        for a in actions {
            match a {
                Action::Forward { to, out_id, packet } => {
                    let p =
                        ilpd_codec::ilp::Prepare::new_checked(&packet[..]).expect("valid forward");
                    let req = self.last_request;
                    let s = self.sent.get_mut(&req).expect("forward for a sent prepare");
                    assert!(s.forwarded.is_none());
                    s.forwarded = Some((to, p.amount()));
                    self.open.push((
                        out_id,
                        to,
                        req,
                        fulfillment.expect("forward only from a prepare"),
                    ));
                }
                Action::Reply { to, packet } => {
                    let s = self
                        .sent
                        .get_mut(&to.request_id)
                        .expect("reply to a sent prepare");
                    assert_eq!(s.from, to.account);
                    s.answers += 1;
                    match Packet::new_checked(&packet[..]).expect("valid reply") {
                        Packet::Fulfill(_) => s.fulfilled = true,
                        Packet::Reject(_) => {}
                        Packet::Prepare(_) => panic!("a Prepare as a reply"),
                    }
                }
            }
        }
    }
}

fn check_limits(h: &Harness) {
    for n in NAMES {
        let s = h.shared.balance_snapshot(h.id(n)).unwrap();
        let cfg = h.shared.account_config(h.id(n));
        let upper = s.balance as i128 + s.reserved_incoming;
        let lower = s.balance as i128 - s.reserved_outgoing;
        assert!(
            s.reserved_incoming >= 0 && s.reserved_outgoing >= 0,
            "{n}: {s:?}"
        );
        assert!(
            upper <= cfg.max_balance as i128,
            "{n} above max_balance: {s:?}"
        );
        assert!(
            lower >= cfg.min_balance as i128,
            "{n} below min_balance: {s:?}"
        );
    }
}

fn run(ops: Vec<Op>) {
    let mut m = Model {
        h: Harness::new(CFG),
        sent: HashMap::new(),
        open: Vec::new(),
        answered: Vec::new(),
        counter: 0,
        last_request: 0,
    };
    for op in ops {
        let now = m.h.now;
        match op {
            Op::Prepare {
                from,
                dest,
                amount,
                expiry_in,
            } => {
                m.counter += 1;
                let mut ful = [0u8; 32];
                ful[..8].copy_from_slice(&m.counter.to_be_bytes());
                let cond: [u8; 32] = Sha256::digest(ful).into();
                let pkt = prepare(amount, now.unix_ms + expiry_in, DESTS[dest], &cond, b"");
                let from_id = m.h.id(NAMES[from]);
                // The harness numbers requests 1, 2, 3, … in order.
                let req = m.counter as u32;
                m.sent.insert(
                    req,
                    Sent {
                        from: from_id,
                        in_amount: amount,
                        forwarded: None,
                        answers: 0,
                        fulfilled: false,
                    },
                );
                m.last_request = req;
                let (to, actions) = m.h.send(NAMES[from], pkt);
                assert_eq!(to.request_id, req);
                m.absorb(actions, Some(ful));
            }
            Op::Fulfill { k, correct } if !m.open.is_empty() => {
                let (id, hop, _, ful) = m.open.remove(k % m.open.len());
                let f = if correct { ful } else { [0xee; 32] };
                let out = m.h.reply(NAMES[hop.0 as usize], id, fulfill(&f, b""));
                m.answered.push((id, hop, f));
                m.absorb(out, None);
            }
            Op::Reject { k } if !m.open.is_empty() => {
                let (id, hop, _, _) = m.open.remove(k % m.open.len());
                let out = m.h.reply(
                    NAMES[hop.0 as usize],
                    id,
                    reject(ErrorCode::F99_APPLICATION_ERROR, "", "x", b""),
                );
                m.absorb(out, None);
            }
            Op::Garbage { k } if !m.open.is_empty() => {
                let (id, hop, _, _) = m.open.remove(k % m.open.len());
                let out = m.h.reply(
                    NAMES[hop.0 as usize],
                    id,
                    bytes::BytesMut::from(&b"\x0e\x01"[..]),
                );
                m.absorb(out, None);
            }
            Op::WrongAccount { k } if !m.open.is_empty() => {
                let (id, hop, _, ful) = m.open[k % m.open.len()];
                let other = NAMES[(hop.0 as usize + 1) % 4];
                let out = m.h.reply(other, id, fulfill(&ful, b""));
                assert!(out.is_empty(), "a reply from the wrong account is dropped");
            }
            Op::Duplicate if !m.answered.is_empty() => {
                let (id, hop, f) = m.answered[m.answered.len() - 1];
                let out = m.h.reply(NAMES[hop.0 as usize], id, fulfill(&f, b""));
                m.absorb(out, None);
            }
            Op::ForwardFailed { k } if !m.open.is_empty() => {
                let (id, _, _, _) = m.open.remove(k % m.open.len());
                let mut out = Vec::new();
                m.h.core.on_forward_failed(
                    now,
                    id,
                    ErrorCode::T01_PEER_UNREACHABLE,
                    "lost",
                    &mut out,
                );
                m.absorb(out, None);
            }
            Op::Advance { ms } => m.h.advance_ms(ms),
            Op::Timers => {
                let out = m.h.timers();
                m.absorb(out, None);
            }
            Op::Flush => {
                let out = m.h.flush();
                m.absorb(out, None);
            }
            _ => {}
        }
        check_limits(&m.h);
    }
    // Drain: verify what is queued, then let everything else expire.
    let out = m.h.flush();
    m.absorb(out, None);
    m.h.advance_ms(120_000);
    let out = m.h.timers();
    m.absorb(out, None);
    assert_eq!(m.h.core.in_flight(), 0);
    assert_eq!(m.h.core.next_deadline(), None);

    let mut expected = [0i128; 4];
    for (req, s) in &m.sent {
        assert_eq!(s.answers, 1, "request {req} answered {} times", s.answers);
        if s.fulfilled {
            expected[s.from.0 as usize] += s.in_amount as i128;
            if let Some((hop, out)) = s.forwarded {
                expected[hop.0 as usize] -= out as i128;
            }
        }
    }
    for (i, n) in NAMES.iter().enumerate() {
        let (bal, rin, rout) = m.h.snapshot(n);
        assert_eq!((bal as i128, rin, rout), (expected[i], 0, 0), "account {n}");
    }
    check_journal(&mut m.h, &expected);
}

/// The journal tells the same story (docs/ledger.md): replayed whole it
/// gives every balance with nothing in doubt; cut anywhere (a crash in the
/// middle of a write), it gives the balances of the last whole frame.
fn check_journal(h: &mut Harness, expected: &[i128; 4]) {
    // One more turn writes the last `Released` mark.
    let mut out = Vec::new();
    h.pump(&mut out);
    assert!(out.is_empty(), "{out:?}");
    let whole = h.replay(h.journal.len());
    assert!(whole.in_doubt.is_empty(), "{:?}", whole.in_doubt);
    assert!(whole.torn.is_empty());
    for (i, n) in NAMES.iter().enumerate() {
        assert_eq!(
            whole.balances.get(*n).copied().unwrap_or(0),
            expected[i],
            "{n}"
        );
    }
    let len = h.journal.len();
    let mut x = len as u64 | 1;
    let mut cuts: Vec<usize> = (0..12)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize % (len + 1)
        })
        .collect();
    cuts.extend(
        h.frames
            .iter()
            .rev()
            .take(4)
            .flat_map(|(l, _)| [*l, l.saturating_sub(1)]),
    );
    for cut in cuts {
        let at = h
            .frames
            .iter()
            .rev()
            .find(|(l, _)| *l <= cut)
            .map_or_else(|| vec![0; NAMES.len()], |(_, b)| b.clone());
        assert_eq!(
            h.recovered(cut),
            at,
            "crash after {cut} of {len} journal bytes"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn balances_are_conserved(ops in prop::collection::vec(op(), 1..120)) {
        run(ops);
    }
}

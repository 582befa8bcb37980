//! Forwarding through the sans-IO core: in-place patching, settlement,
//! pass-through of replies, and every reject the forwarding path creates.

mod core_support;

use bytes::BytesMut;
use core_support::*;
use ilpd_codec::ilp::Prepare;
use ilpd_engine::core::{Action, ErrorCode, OutId};

#[test]
fn forward_patches_in_place_then_fulfill_settles() {
    let mut h = Harness::base();
    let (ful, cond) = pair(1);
    let pkt = prepare(1000, T0_MS + 10_000, "test.net.bob.x", &cond, b"hello");
    let original = pkt.to_vec();
    let ptr = pkt.as_ptr();
    let (origin, actions) = h.send("alice", pkt);
    let (to, out_id, fwd) = match &actions[..] {
        [Action::Forward { to, out_id, packet }] => {
            assert_eq!(
                packet.as_ptr(),
                ptr,
                "the same buffer is forwarded, not a copy"
            );
            (*to, *out_id, Prepare::new_checked(packet.to_vec()).unwrap())
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(to, h.id("bob"));
    assert_eq!(fwd.amount(), 1000);
    // min(incoming − 1000 ms window, now + 30 s hold)
    assert_eq!(fwd.expires_at().0, T0_MS + 9_000);
    assert_eq!(fwd.destination(), b"test.net.bob.x");
    assert_eq!(fwd.data(), b"hello");
    assert_eq!(fwd.execution_condition(), &cond);
    // Only content bytes 8..25 (expiry) may differ: amount unchanged here.
    let fwd_bytes = fwd.as_bytes();
    assert_eq!(fwd_bytes.len(), original.len());
    let diff: Vec<usize> = (0..original.len())
        .filter(|&i| original[i] != fwd_bytes[i])
        .collect();
    assert!(
        diff.iter().all(|&i| (2 + 8..2 + 25).contains(&i)),
        "changed bytes {diff:?}"
    );
    assert_eq!(h.snapshot("alice"), (0, 1000, 0));
    assert_eq!(h.snapshot("bob"), (0, 0, 1000));
    assert_eq!(h.core.in_flight(), 1);

    let f = fulfill(&ful, b"receipt");
    let f_bytes = f.to_vec();
    let f_ptr = f.as_ptr();
    assert!(
        h.reply("bob", out_id, f).is_empty(),
        "Fulfills wait for flush"
    );
    let done = h.flush();
    match &done[..] {
        [Action::Reply { to, packet }] => {
            assert_eq!(*to, origin);
            assert_eq!(
                packet.to_vec(),
                f_bytes,
                "the same Fulfill bytes go upstream"
            );
            assert_eq!(packet.as_ptr(), f_ptr);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.snapshot("alice"), (1000, 0, 0), "alice owes us 1000");
    assert_eq!(h.snapshot("bob"), (-1000, 0, 0), "we owe bob 1000");
    assert_eq!(h.core.in_flight(), 0);
    assert_eq!(
        h.metric("ilpd_packets_total{account=\"alice\",direction=\"out\",type=\"fulfill\"}"),
        Some(1.0)
    );
    assert_eq!(
        h.metric("ilpd_packets_total{account=\"bob\",direction=\"out\",type=\"prepare\"}"),
        Some(1.0)
    );
    assert_eq!(h.metric("ilpd_forward_latency_seconds_count"), Some(1.0));
}

#[test]
fn amount_is_patched_when_the_rate_changes_it() {
    let mut h = Harness::base();
    let (_, cond) = pair(1);
    let pkt = prepare(5_000_000, T0_MS + 10_000, "test.net.carol", &cond, b"");
    let ptr = pkt.as_ptr();
    let (_, actions) = h.send("alice", pkt);
    match &actions[..] {
        [Action::Forward { packet, .. }] => {
            assert_eq!(packet.as_ptr(), ptr);
            // 5_000_000 USD e-9 = 0.005 USD = 0.004 EUR = 4000 EUR e-6
            assert_eq!(Prepare::new_checked(&packet[..]).unwrap().amount(), 4000);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_pass_through_unchanged_and_release() {
    let mut h = Harness::base();
    let (_, cond) = pair(2);
    let (origin, actions) = h.send(
        "alice",
        prepare(700, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, out_id, _) = forwarded(&actions);
    let rej = reject(
        ErrorCode::F99_APPLICATION_ERROR,
        "test.net.bob",
        "nope",
        &[1, 2, 3],
    );
    let rej_bytes = rej.to_vec();
    let done = h.reply("bob", out_id, rej);
    match &done[..] {
        [Action::Reply { to, packet }] => {
            assert_eq!(*to, origin);
            assert_eq!(packet.to_vec(), rej_bytes);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
    assert_eq!(h.snapshot("bob"), (0, 0, 0));
    assert!(h.flush().is_empty());
    // An empty triggeredBy (interledger-rs) is relayed too.
    let (_, actions) = h.send(
        "alice",
        prepare(7, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, out_id, _) = forwarded(&actions);
    let rej = reject(ErrorCode::T02_PEER_BUSY, "", "", &[]);
    let rej_bytes = rej.to_vec();
    let done = h.reply("bob", out_id, rej);
    assert!(matches!(&done[..], [Action::Reply { packet, .. }] if packet.to_vec() == rej_bytes));
    assert_eq!(
        h.metric("ilpd_rejects_sent_total{account=\"alice\",code=\"F99\"}"),
        Some(1.0)
    );
    assert_eq!(
        h.metric("ilpd_rejects_sent_total{account=\"alice\",code=\"T02\"}"),
        Some(1.0)
    );
}

#[test]
fn no_route_is_f02_and_matching_is_segment_aware() {
    let mut h = Harness::base();
    let (_, cond) = pair(3);
    let (_, a) = h.send("alice", prepare(1, T0_MS + 10_000, "g.nowhere", &cond, b""));
    let msg = assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);
    assert!(msg.contains("g.nowhere"), "{msg}");
    // test.bobby is not under test.bob: it takes the default route "test" (dave).
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bobby", &cond, b""),
    );
    assert_eq!(forwarded(&a).0, h.id("dave"));
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bob.deep.er", &cond, b""),
    );
    assert_eq!(forwarded(&a).0, h.id("bob"));
    // A child's address routes to the child.
    let (_, a) = h.send(
        "bob",
        prepare(1, T0_MS + 10_000, "test.net.ilpd.alice.wallet", &cond, b""),
    );
    assert_eq!(forwarded(&a).0, h.id("alice"));
    // Under our own address but no such child: F02, not the parent's default route.
    let (_, a) = h.send(
        "bob",
        prepare(1, T0_MS + 10_000, "test.net.ilpd.zed", &cond, b""),
    );
    assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);
    let (_, a) = h.send(
        "bob",
        prepare(1, T0_MS + 10_000, "test.net.ilpd.alicex", &cond, b""),
    );
    assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);
    // Our own address without echo data.
    let (_, a) = h.send(
        "bob",
        prepare(1, T0_MS + 10_000, "test.net.ilpd", &cond, b""),
    );
    assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);
    assert_eq!(
        h.snapshot("alice"),
        (0, 2, 1),
        "two from alice and one to alice still hold 1 each"
    );
}

#[test]
fn static_routes_win_over_account_addresses() {
    let cfg = format!("{BASE}\n[[routes]]\nprefix = \"test.net.bob.vip\"\naccount = \"carol\"\n");
    let mut h = Harness::new(&cfg);
    let (_, cond) = pair(3);
    let (_, a) = h.send(
        "alice",
        prepare(1_000_000, T0_MS + 10_000, "test.net.bob.vip.1", &cond, b""),
    );
    assert_eq!(forwarded(&a).0, h.id("carol"));
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bob.other", &cond, b""),
    );
    assert_eq!(forwarded(&a).0, h.id("bob"));
}

#[test]
fn disconnected_next_hop_is_t01() {
    let mut h = Harness::base();
    h.shared.connection_closed(h.id("bob"));
    assert!(!h.shared.is_connected(h.id("bob")));
    let (_, cond) = pair(4);
    let (_, a) = h.send(
        "alice",
        prepare(10, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let msg = assert_own_reject(&a, ErrorCode::T01_PEER_UNREACHABLE);
    assert!(msg.contains("bob"), "{msg}");
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
    h.shared.connection_opened(h.id("bob"));
    let (_, a) = h.send(
        "alice",
        prepare(10, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    forwarded(&a);
}

#[test]
fn full_pending_table_is_t03() {
    // One account may fill the whole table here (its quota is the table).
    let mut h = Harness::new(&BASE.replace(
        "max_in_flight = 64",
        "max_in_flight = 2\nmax_in_flight_per_account = 2",
    ));
    let (_, cond) = pair(5);
    let (_, a1) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, _a2) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, a3) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let msg = assert_own_reject(&a3, ErrorCode::T03_CONNECTOR_BUSY);
    assert!(msg.contains("busy"), "{msg}");
    assert_eq!(
        h.snapshot("alice"),
        (0, 2, 0),
        "the T03 packet reserved nothing"
    );
    let (_, id1, _) = forwarded(&a1);
    h.reply(
        "bob",
        id1,
        reject(ErrorCode::T99_APPLICATION_ERROR, "test.net.bob", "", &[]),
    );
    let (_, a4) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, id4, _) = forwarded(&a4);
    assert_ne!(id4, id1, "a reused slot gets a new id");
}

#[test]
fn expiry_window_boundaries_r00_and_r02() {
    let mut h = Harness::base();
    let (_, cond) = pair(6);
    for exp in [T0_MS - 1, T0_MS] {
        let (_, a) = h.send("alice", prepare(1, exp, "test.net.bob", &cond, b""));
        assert_own_reject(&a, ErrorCode::R00_TRANSFER_TIMED_OUT);
    }
    // Outgoing = incoming − 1000; needs ≥ 1000 ms left after that.
    for exp in [T0_MS + 1, T0_MS + 1000, T0_MS + 1999] {
        let (_, a) = h.send("alice", prepare(1, exp, "test.net.bob", &cond, b""));
        assert_own_reject(&a, ErrorCode::R02_INSUFFICIENT_TIMEOUT);
    }
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 2000, "test.net.bob", &cond, b""),
    );
    assert_eq!(forwarded(&a).2.expires_at().0, T0_MS + 1000);
    // Capped at now + max_hold_time (30 s).
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 600_000, "test.net.bob", &cond, b""),
    );
    assert_eq!(forwarded(&a).2.expires_at().0, T0_MS + 30_000);
    assert_eq!(h.snapshot("alice"), (0, 2, 0));
}

#[test]
fn per_next_hop_expiry_overrides() {
    let cfg = BASE.replace(
        "ilp_address = \"test.net.bob\"",
        "ilp_address = \"test.net.bob\"\nmin_message_window_ms = 3000\nmax_hold_time_ms = 5000",
    );
    let mut h = Harness::new(&cfg);
    let (_, cond) = pair(6);
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 7000, "test.net.bob", &cond, b""),
    );
    assert_eq!(forwarded(&a).2.expires_at().0, T0_MS + 4000);
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 60_000, "test.net.bob", &cond, b""),
    );
    assert_eq!(forwarded(&a).2.expires_at().0, T0_MS + 5000);
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 5999, "test.net.bob", &cond, b""),
    );
    assert_own_reject(&a, ErrorCode::R02_INSUFFICIENT_TIMEOUT);
    // dave keeps the node defaults.
    let (_, a) = h.send("alice", prepare(1, T0_MS + 7000, "test.net.x", &cond, b""));
    assert_eq!(forwarded(&a).2.expires_at().0, T0_MS + 6000);
}

#[test]
fn max_packet_amount_is_f08_with_data() {
    let cfg = BASE.replace(
        "incoming_token = \"alice-token\"",
        "incoming_token = \"alice-token\"\nmax_packet_amount = 500",
    );
    let mut h = Harness::new(&cfg);
    let (_, cond) = pair(7);
    let (_, a) = h.send(
        "alice",
        prepare(501, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    assert_own_reject(&a, ErrorCode::F08_AMOUNT_TOO_LARGE);
    let r = rejected(&a);
    // receivedAmount 501 = 0x1f5, maximumAmount 500 = 0x1f4, UInt64 BE each
    // (RFC 27 "Error Codes", docs/design.md "F08 data").
    assert_eq!(
        r.data(),
        &hex::decode("00000000000001f500000000000001f4").unwrap()[..]
    );
    let (_, a) = h.send(
        "alice",
        prepare(500, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    assert_eq!(forwarded(&a).2.amount(), 500);
    // Only alice is limited.
    let (_, a) = h.send(
        "bob",
        prepare(10_000, T0_MS + 10_000, "test.net.x", &cond, b""),
    );
    forwarded(&a);
}

#[test]
fn incoming_max_balance_is_t04() {
    let cfg = BASE.replace(
        "incoming_token = \"alice-token\"",
        "incoming_token = \"alice-token\"\nmax_balance = 1000",
    );
    let mut h = Harness::new(&cfg);
    let (ful, cond) = pair(8);
    let (_, a) = h.send(
        "alice",
        prepare(600, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, id600, _) = forwarded(&a);
    let (_, a) = h.send(
        "alice",
        prepare(401, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let msg = assert_own_reject(&a, ErrorCode::T04_INSUFFICIENT_LIQUIDITY);
    assert!(msg.contains("maximum balance"), "{msg}");
    assert_eq!(
        h.snapshot("bob"),
        (0, 0, 600),
        "bob's side was not reserved for the T04 packet"
    );
    let (_, a) = h.send(
        "alice",
        prepare(400, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    forwarded(&a);
    h.reply("bob", id600, fulfill(&ful, b""));
    fulfilled(&h.flush());
    assert_eq!(h.snapshot("alice"), (600, 400, 0));
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    assert_own_reject(&a, ErrorCode::T04_INSUFFICIENT_LIQUIDITY);
    // Zero-amount packets skip balance checks.
    let (_, a) = h.send(
        "alice",
        prepare(0, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    assert_eq!(forwarded(&a).2.amount(), 0);
}

#[test]
fn outgoing_min_balance_is_t04_and_releases_incoming() {
    let cfg = BASE.replace(
        "ilp_address = \"test.net.bob\"",
        "ilp_address = \"test.net.bob\"\nmin_balance = -1000",
    );
    let mut h = Harness::new(&cfg);
    let (ful, cond) = pair(9);
    let (_, a) = h.send(
        "alice",
        prepare(700, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, id700, _) = forwarded(&a);
    let (_, a) = h.send(
        "alice",
        prepare(301, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let msg = assert_own_reject(&a, ErrorCode::T04_INSUFFICIENT_LIQUIDITY);
    assert!(msg.contains("bob"), "{msg}");
    assert_eq!(
        h.snapshot("alice"),
        (0, 700, 0),
        "the refused packet's incoming hold was released"
    );
    h.reply("bob", id700, fulfill(&ful, b""));
    fulfilled(&h.flush());
    assert_eq!(h.snapshot("bob"), (-700, 0, 0));
    let (_, a) = h.send(
        "alice",
        prepare(300, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    forwarded(&a);
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    assert_own_reject(&a, ErrorCode::T04_INSUFFICIENT_LIQUIDITY);
}

#[test]
fn packet_and_amount_rate_limits_are_t05() {
    let cfg = BASE
        .replace(
            "incoming_token = \"alice-token\"",
            "incoming_token = \"alice-token\"\nmax_packets_per_sec = 2",
        )
        .replace(
            "incoming_token = \"bob-token\"",
            "incoming_token = \"bob-token\"\nmax_amount_per_sec = 1000",
        );
    let mut h = Harness::new(&cfg);
    let (_, cond) = pair(10);
    for _ in 0..2 {
        let (_, a) = h.send(
            "alice",
            prepare(1, T0_MS + 10_000, "test.net.bob", &cond, b""),
        );
        forwarded(&a);
    }
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    assert_own_reject(&a, ErrorCode::T05_RATE_LIMITED);
    h.advance_ms(500);
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    forwarded(&a);
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    assert_own_reject(&a, ErrorCode::T05_RATE_LIMITED);

    let (_, a) = h.send(
        "bob",
        prepare(800, T0_MS + 10_000, "test.net.x", &cond, b""),
    );
    forwarded(&a);
    let (_, a) = h.send(
        "bob",
        prepare(300, T0_MS + 10_000, "test.net.x", &cond, b""),
    );
    assert_own_reject(&a, ErrorCode::T05_RATE_LIMITED);
    assert_eq!(
        h.snapshot("bob"),
        (0, 800, 3),
        "bob also holds alice's 3 packets to it"
    );
    h.advance_ms(300);
    let (_, a) = h.send(
        "bob",
        prepare(300, T0_MS + 10_000, "test.net.x", &cond, b""),
    );
    forwarded(&a);
    // Zero-amount packets do not use the amount budget.
    let (_, a) = h.send("bob", prepare(0, T0_MS + 10_000, "test.net.x", &cond, b""));
    forwarded(&a);
}

#[test]
fn malformed_packets_are_f01() {
    let mut h = Harness::base();
    let (ful, cond) = pair(11);
    let good = prepare(1, T0_MS + 10_000, "test.net.bob", &cond, b"");
    let cases: Vec<BytesMut> = vec![
        BytesMut::new(),
        BytesMut::from(&[0xffu8, 0x00][..]),
        BytesMut::from(&good[..good.len() - 1]),
        fulfill(&ful, b""),
        reject(ErrorCode::F00_BAD_REQUEST, "test.net.x", "", &[]),
        {
            let mut b = good.clone();
            b.extend_from_slice(b"junk");
            b
        },
        prepare(1, T0_MS + 10_000, "nope", &cond, b""),
    ];
    for c in cases {
        let (_, a) = h.send("alice", c.clone());
        assert_own_reject(&a, ErrorCode::F01_INVALID_PACKET);
    }
    assert_eq!(h.core.in_flight(), 0);
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
}

#[test]
fn wrong_fulfillment_is_f05_and_not_credited() {
    let mut h = Harness::base();
    let (_, cond) = pair(12);
    let (wrong, _) = pair(13);
    let (_, a) = h.send(
        "alice",
        prepare(50, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, id, _) = forwarded(&a);
    assert!(h.reply("bob", id, fulfill(&wrong, b"")).is_empty());
    let msg = assert_own_reject(&h.flush(), ErrorCode::F05_WRONG_CONDITION);
    assert!(msg.contains("fulfillment"), "{msg}");
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
    assert_eq!(h.snapshot("bob"), (0, 0, 0));
    assert_eq!(h.metric("ilpd_wrong_fulfillments_total"), Some(1.0));
}

#[test]
fn one_batch_verifies_mixed_fulfills() {
    let mut h = Harness::base();
    let mut ids = Vec::new();
    for n in 20..23u8 {
        let (_, cond) = pair(n);
        let (_, a) = h.send(
            "alice",
            prepare(10, T0_MS + 10_000, "test.net.bob", &cond, b""),
        );
        ids.push(forwarded(&a).1);
    }
    h.reply("bob", ids[0], fulfill(&pair(20).0, b""));
    h.reply("bob", ids[1], fulfill(&pair(99).0, b""));
    h.reply("bob", ids[2], fulfill(&pair(22).0, b""));
    let out = h.flush();
    assert_eq!(out.len(), 3);
    let kinds: Vec<u8> = out
        .iter()
        .map(|a| match a {
            Action::Reply { packet, .. } => packet[0],
            _ => 0,
        })
        .collect();
    // The Reject leaves at once; the Fulfills wait for their journal
    // record (docs/ledger.md), so they come after it.
    assert_eq!(kinds, vec![14, 13, 13]);
    assert_eq!(h.snapshot("alice"), (20, 0, 0));
    assert_eq!(h.snapshot("bob"), (-20, 0, 0));
    assert_eq!(
        h.metric("ilpd_fulfill_batches_total{worker=\"0\"}"),
        Some(1.0)
    );
    assert_eq!(
        h.metric("ilpd_fulfill_batch_packets_total{worker=\"0\"}"),
        Some(3.0)
    );
}

#[test]
fn duplicate_unknown_and_wrong_account_replies_are_dropped() {
    let mut h = Harness::base();
    let (ful, cond) = pair(30);
    let (_, a) = h.send(
        "alice",
        prepare(10, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, id, _) = forwarded(&a);
    assert!(h.reply("carol", id, fulfill(&ful, b"")).is_empty());
    assert_eq!(
        h.metric("ilpd_replies_dropped_total{reason=\"wrong_account\"}"),
        Some(1.0)
    );
    assert!(h.flush().is_empty(), "nothing was queued");
    assert_eq!(h.core.in_flight(), 1);
    h.reply("bob", id, fulfill(&ful, b""));
    assert!(
        h.reply("bob", id, fulfill(&ful, b"")).is_empty(),
        "duplicate before flush"
    );
    fulfilled(&h.flush());
    assert!(
        h.reply("bob", id, fulfill(&ful, b"")).is_empty(),
        "duplicate after flush"
    );
    assert!(h
        .reply(
            "bob",
            id,
            reject(ErrorCode::T00_INTERNAL_ERROR, "test.net.bob", "", &[])
        )
        .is_empty());
    assert!(h
        .reply("bob", OutId(0xdead_beef), fulfill(&ful, b""))
        .is_empty());
    assert!(h.flush().is_empty());
    assert_eq!(
        h.metric("ilpd_replies_dropped_total{reason=\"unknown_or_late\"}"),
        Some(4.0)
    );
    assert_eq!(h.snapshot("alice"), (10, 0, 0), "settled exactly once");
    assert_eq!(h.snapshot("bob"), (-10, 0, 0));
}

#[test]
fn invalid_reply_is_f01_upstream() {
    let mut h = Harness::base();
    let (_, cond) = pair(31);
    for bad in [
        BytesMut::from(&b"\x0d\x05garbage"[..]),
        prepare(1, T0_MS + 5000, "test.net.x", &cond, b""),
    ] {
        let (_, a) = h.send(
            "alice",
            prepare(10, T0_MS + 10_000, "test.net.bob", &cond, b""),
        );
        let (_, id, _) = forwarded(&a);
        let msg = assert_own_reject(&h.reply("bob", id, bad), ErrorCode::F01_INVALID_PACKET);
        assert!(msg.contains("invalid response from next hop"), "{msg}");
    }
    assert_eq!(h.metric("ilpd_invalid_replies_total"), Some(2.0));
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
    assert_eq!(h.snapshot("bob"), (0, 0, 0));
}

#[test]
fn forward_failed_rejects_upstream_once() {
    let mut h = Harness::base();
    let (_, cond) = pair(32);
    let (origin, a) = h.send(
        "alice",
        prepare(10, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, id, _) = forwarded(&a);
    let mut out = Vec::new();
    h.core.on_forward_failed(
        h.now,
        id,
        ErrorCode::T01_PEER_UNREACHABLE,
        "connection to bob lost",
        &mut out,
    );
    assert_eq!(replied(&out).0, origin);
    let msg = assert_own_reject(&out, ErrorCode::T01_PEER_UNREACHABLE);
    assert_eq!(msg, "connection to bob lost");
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
    assert_eq!(h.snapshot("bob"), (0, 0, 0));
    let mut again = Vec::new();
    h.core
        .on_forward_failed(h.now, id, ErrorCode::T02_PEER_BUSY, "x", &mut again);
    assert!(again.is_empty());
    assert_eq!(
        h.metric("ilpd_replies_dropped_total{reason=\"forward_failed_unknown\"}"),
        Some(1.0)
    );
}

#[test]
fn one_flush_settles_many_accounts() {
    // 20 children + bob in one batch: more accounts than the per-batch
    // summing slots, so both the summed and the direct path run.
    let mut cfg = BASE.to_string();
    for i in 0..20 {
        cfg.push_str(&format!(
            "\n[[accounts]]\nid = \"kid{i}\"\nrelation = \"child\"\nasset_code = \"USD\"\nasset_scale = 9\nincoming_token = \"t{i}\"\n"
        ));
    }
    let mut h = Harness::new(&cfg);
    let mut ids = Vec::new();
    for i in 0..20u8 {
        let (_, cond) = pair(100 + i);
        let (_, a) = h.send(
            &format!("kid{i}"),
            prepare(10 + i as u64, T0_MS + 10_000, "test.net.bob", &cond, b""),
        );
        ids.push(forwarded(&a).1);
        // And one back to each kid from bob.
        let (_, cond) = pair(200 + i);
        let (_, a) = h.send(
            "bob",
            prepare(
                1,
                T0_MS + 10_000,
                &format!("test.net.ilpd.kid{i}"),
                &cond,
                b"",
            ),
        );
        ids.push(forwarded(&a).1);
    }
    for (k, id) in ids.iter().enumerate() {
        let i = (k / 2) as u8;
        let n = if k % 2 == 0 { 100 + i } else { 200 + i };
        let to = if k % 2 == 0 {
            "bob".to_string()
        } else {
            format!("kid{i}")
        };
        h.reply(&to, *id, fulfill(&pair(n).0, b""));
    }
    assert_eq!(h.flush().len(), 40);
    let mut bob = 0i64;
    for i in 0..20 {
        let amt = 10 + i as i64;
        assert_eq!(
            h.snapshot(&format!("kid{i}")),
            (amt - 1, 0, 0),
            "kid{i}: +{amt} sent, −1 received"
        );
        bob += 1 - amt;
    }
    assert_eq!(h.snapshot("bob"), (bob, 0, 0));
}

#[test]
fn learned_routes_are_swapped_in_and_lose_to_static_and_local() {
    let mut h = Harness::base();
    let (_, cond) = pair(40);
    let addr = |s: &str| ilpd_codec::address::Address::new(s).unwrap();
    let (carol, bob) = (h.id("carol"), h.id("bob"));
    h.shared.set_learned_routes(vec![
        (addr("test.net.far"), carol),
        (addr("test.net.bob"), carol), // bob's own address wins
        (addr("test.net.bogus"), ilpd_engine::core::AccountId(999)),
    ]);
    let (_, a) = h.send(
        "alice",
        prepare(1_000_000, T0_MS + 10_000, "test.net.far.x", &cond, b""),
    );
    assert_eq!(forwarded(&a).0, carol);
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bob.x", &cond, b""),
    );
    assert_eq!(forwarded(&a).0, bob);
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bogus", &cond, b""),
    );
    assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);
    h.shared.set_learned_routes(vec![]);
    // Back to the static default route (dave).
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.far.x", &cond, b""),
    );
    assert_eq!(forwarded(&a).0, h.id("dave"));
}

#[test]
fn an_account_past_its_in_flight_quota_gets_t03_and_the_others_do_not() {
    // alice: 2 in flight at most (her own key); bob: the node default,
    // half of max_in_flight = 32.
    let mut h = Harness::new(&BASE.replace(
        "incoming_token = \"alice-token\"",
        "incoming_token = \"alice-token\"\nmax_in_flight = 2",
    ));
    let (_, cond) = pair(7);
    let p = || prepare(1_000_000, T0_MS + 10_000, "test.net.carol", &cond, b"");
    let (_, a1) = h.send("alice", p());
    let (_, a2) = h.send("alice", p());
    let (_, a3) = h.send("alice", p());
    let msg = assert_own_reject(&a3, ErrorCode::T03_CONNECTOR_BUSY);
    assert!(
        msg.contains("account alice") && msg.contains("quota"),
        "{msg}"
    );
    assert_eq!(
        h.snapshot("alice"),
        (0, 2_000_000, 0),
        "the T03 packet reserved nothing"
    );
    // Everyone else is untouched: bob fills his own share and no more.
    for _ in 0..32 {
        let (_, b) = h.send("bob", p());
        forwarded(&b);
    }
    let (_, b) = h.send("bob", p());
    assert!(assert_own_reject(&b, ErrorCode::T03_CONNECTOR_BUSY).contains("account bob"));
    // An answer frees alice's slot.
    let (_, id1, _) = forwarded(&a1);
    forwarded(&a2);
    h.reply(
        "carol",
        id1,
        reject(ErrorCode::T99_APPLICATION_ERROR, "test.net.carol", "", &[]),
    );
    let (_, a4) = h.send("alice", p());
    forwarded(&a4);
}

#[test]
fn the_default_quota_is_half_the_table() {
    let mut h = Harness::new(&BASE.replace("max_in_flight = 64", "max_in_flight = 8"));
    let (_, cond) = pair(8);
    for _ in 0..4 {
        let (_, a) = h.send(
            "alice",
            prepare(1, T0_MS + 10_000, "test.net.bob", &cond, b""),
        );
        forwarded(&a);
    }
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    assert_own_reject(&a, ErrorCode::T03_CONNECTOR_BUSY);
}

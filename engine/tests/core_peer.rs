//! Peer protocols answered by the core (docs/design.md "Peer protocols"):
//! IL-DCP, peer.balance, echo, and the rejects for everything else under
//! `peer.`.

mod core_support;

use core_support::*;
use ilpd_engine::core::{Action, ErrorCode};

/// SHA-256 of 32 zero bytes (RFC 31 "Packet"), written out independently.
fn peer_condition() -> [u8; 32] {
    hex::decode("66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925")
        .unwrap()
        .try_into()
        .unwrap()
}

fn peer_request(dest: &str) -> bytes::BytesMut {
    prepare(0, T0_MS + 60_000, dest, &peer_condition(), b"")
}

#[test]
fn ildcp_answers_a_child() {
    let mut h = Harness::base();
    let (origin, a) = h.send("alice", peer_request("peer.config"));
    assert_eq!(replied(&a).0, origin);
    let f = fulfilled(&a);
    assert_eq!(f.fulfillment(), &[0u8; 32]);
    // VarOctetString "test.net.ilpd.alice" (19 bytes) ‖ scale 9 ‖ VarOctetString "USD" (RFC 31).
    let mut want = vec![19u8];
    want.extend_from_slice(b"test.net.ilpd.alice");
    want.extend_from_slice(&[9, 3]);
    want.extend_from_slice(b"USD");
    assert_eq!(f.data(), &want[..]);
    assert_eq!(h.core.in_flight(), 0, "answered locally, nothing forwarded");
}

#[test]
fn ildcp_uses_a_childs_configured_address() {
    let cfg = BASE.replace(
        "incoming_token = \"alice-token\"",
        "incoming_token = \"alice-token\"\nilp_address = \"test.elsewhere.alice\"",
    );
    let mut h = Harness::new(&cfg);
    let (_, a) = h.send("alice", peer_request("peer.config"));
    let f = fulfilled(&a);
    assert_eq!(&f.data()[..21], b"\x14test.elsewhere.alice");
    // The configured address is also the route to alice.
    let (_, cond) = pair(1);
    let (_, a) = h.send(
        "bob",
        prepare(1, T0_MS + 10_000, "test.elsewhere.alice.x", &cond, b""),
    );
    assert_eq!(forwarded(&a).0, h.id("alice"));
}

#[test]
fn ildcp_refuses_non_children() {
    let mut h = Harness::base();
    for who in ["bob", "dave"] {
        let (_, a) = h.send(who, peer_request("peer.config"));
        let msg = assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);
        assert!(msg.contains("child"), "{msg}");
    }
}

#[test]
fn wrong_condition_is_f01_and_other_peer_destinations_f02() {
    let mut h = Harness::base();
    let (_, cond) = pair(5);
    for dest in [
        "peer.config",
        "peer.balance",
        "peer.route.control",
        "peer.whatever",
    ] {
        let (_, a) = h.send("alice", prepare(0, T0_MS + 60_000, dest, &cond, b""));
        assert_own_reject(&a, ErrorCode::F01_INVALID_PACKET);
    }
    // (peer.route.* is CCP now: engine/tests/ccp_core.rs.)
    for dest in ["peer.settle", "peer.whatever", "peer.config.x"] {
        let (_, a) = h.send("alice", peer_request(dest));
        assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);
    }
    // Never forwarded, even with a matching static route.
    let cfg = format!("{BASE}\n[[routes]]\nprefix = \"peer.x\"\naccount = \"bob\"\n");
    let mut h = Harness::new(&cfg);
    let (_, a) = h.send("alice", peer_request("peer.x"));
    assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);
}

#[test]
fn peer_balance_is_from_the_requesters_point_of_view() {
    let mut h = Harness::base();
    let (ful, cond) = pair(7);
    let (_, a) = h.send(
        "alice",
        prepare(1000, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, id, _) = forwarded(&a);
    h.reply("bob", id, fulfill(&ful, b""));
    fulfilled(&h.flush());
    assert_eq!(h.balance("alice"), 1000, "alice owes us 1000");
    assert_eq!(h.balance("bob"), -1000, "we owe bob 1000");
    // alice's view: −1000, against her (docs/design.md "peer.balance"
    // example: fffffffffffffc18).
    let (_, a) = h.send("alice", peer_request("peer.balance"));
    let f = fulfilled(&a);
    assert_eq!(f.fulfillment(), &[0u8; 32]);
    assert_eq!(f.data(), &hex::decode("fffffffffffffc18").unwrap()[..]);
    // bob's view: +1000, in his favour.
    let (_, a) = h.send("bob", peer_request("peer.balance"));
    assert_eq!(
        fulfilled(&a).data(),
        &hex::decode("00000000000003e8").unwrap()[..]
    );
    let (_, a) = h.send("carol", peer_request("peer.balance"));
    assert_eq!(fulfilled(&a).data(), &[0u8; 8]);
}

fn ping_data(source: &str) -> Vec<u8> {
    let mut d = b"ECHOECHOECHOECHO".to_vec();
    d.push(0);
    d.push(source.len() as u8);
    d.extend_from_slice(source.as_bytes());
    d
}

#[test]
fn echo_round_trip() {
    let mut h = Harness::base();
    let (ful, cond) = pair(9);
    let ping = prepare(
        10,
        T0_MS + 20_000,
        NODE,
        &cond,
        &ping_data("test.net.ilpd.alice.ping"),
    );
    let (origin, a) = h.send("alice", ping);
    let (to, id, pong) = forwarded(&a);
    assert_eq!(to, h.id("alice"), "the pong is routed to the ping's source");
    assert_eq!(pong.destination(), b"test.net.ilpd.alice.ping");
    assert_eq!(pong.data(), b"ECHOECHOECHOECHO\x01");
    assert_eq!(pong.execution_condition(), &cond);
    assert_eq!(pong.amount(), 10);
    assert_eq!(
        pong.expires_at().0,
        T0_MS + 19_000,
        "shortened like any forwarded packet"
    );
    // alice fulfils the pong with the preimage; that also answers her ping.
    h.reply("alice", id, fulfill(&ful, b"pong ok"));
    let out = h.flush();
    assert_eq!(replied(&out).0, origin);
    assert_eq!(fulfilled(&out).data(), b"pong ok");
    assert_eq!(
        h.snapshot("alice"),
        (0, 0, 0),
        "+10 for the ping, −10 for the pong"
    );
}

#[test]
fn echo_errors() {
    let mut h = Harness::base();
    let (_, cond) = pair(10);
    let mut pong = b"ECHOECHOECHOECHO".to_vec();
    pong.push(1);
    for data in [
        b"ECHOECHOECHOECHO".to_vec(),
        pong,
        {
            let mut d = ping_data("not an address");
            d[16] = 0;
            d
        },
        {
            let mut d = ping_data("test.net.x");
            d[16] = 7;
            d
        },
    ] {
        let (_, a) = h.send("alice", prepare(1, T0_MS + 20_000, NODE, &cond, &data));
        assert_own_reject(&a, ErrorCode::F01_INVALID_PACKET);
    }
    // A ping whose source has no route: F02 for the pong's route.
    let (_, a) = h.send(
        "alice",
        prepare(1, T0_MS + 20_000, NODE, &cond, &ping_data("g.nowhere")),
    );
    assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);
    assert!(!a.iter().any(|x| matches!(x, Action::Forward { .. })));
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
}

#[test]
fn echo_never_sends_a_pong_to_a_peer_address() {
    // RFC 15 "Allocation Schemes", RFC 34 "Special Addresses": nothing to
    // `peer.*` is forwarded, even a pong built from a ping's source address,
    // and even with a matching route.
    let cfg = format!("{BASE}\n[[routes]]\nprefix = \"peer.x\"\naccount = \"bob\"\n");
    let mut h = Harness::new(&cfg);
    let (_, cond) = pair(11);
    let ping = prepare(5, T0_MS + 20_000, NODE, &cond, &ping_data("peer.x.y"));
    let (_, a) = h.send("alice", ping);
    assert!(!a.iter().any(|x| matches!(x, Action::Forward { .. })));
    assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
    assert_eq!(h.snapshot("bob"), (0, 0, 0));
}

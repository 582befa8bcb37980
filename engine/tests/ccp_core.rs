//! CCP through the forwarding core (sans-IO): `peer.route.*` Prepares are
//! answered by CCP, learned routes reach the forwarding lookup, the core
//! sends CCP requests as Forwards whose replies go back to CCP, and link
//! down (last connection closed) withdraws what the account gave us.

mod core_support;

use core_support::*;
use ilpd_codec::ilp::Prepare;
use ilpd_codec::peer::ccp::{Mode, Route, RouteControlRequest, RouteUpdateRequest};
use ilpd_codec::peer::{peer_request_prepare, PEER_ROUTE_CONTROL, PEER_ROUTE_UPDATE};
use ilpd_codec::types::Expiry;
use ilpd_engine::core::{Action, ErrorCode};

fn update(from: u32, to: u32, routes: &[(&str, &[&str])], withdrawn: &[&str]) -> bytes::BytesMut {
    let req = RouteUpdateRequest {
        routing_table_id: [0x33; 16],
        current_epoch_index: to,
        from_epoch_index: from,
        to_epoch_index: to,
        hold_down_time: 45_000,
        speaker: b"test.net.bob",
        new_routes: routes
            .iter()
            .map(|(p, path)| Route {
                prefix: p.as_bytes(),
                path: path.iter().map(|h| h.as_bytes()).collect(),
                auth: [0; 32],
                props: vec![],
            })
            .collect(),
        withdrawn_routes: withdrawn.iter().map(|w| w.as_bytes()).collect(),
    };
    let mut data = Vec::new();
    req.write_to(&mut data);
    peer_request_prepare(PEER_ROUTE_UPDATE, Expiry(T0_MS + 60_000), &data)
}

fn control(mode: Mode) -> bytes::BytesMut {
    let req = RouteControlRequest {
        mode,
        last_known_routing_table_id: [0; 16],
        last_known_epoch: 0,
        features: vec![],
    };
    let mut data = Vec::new();
    req.write_to(&mut data);
    peer_request_prepare(PEER_ROUTE_CONTROL, Expiry(T0_MS + 60_000), &data)
}

fn cond() -> [u8; 32] {
    pair(1).1
}

#[test]
fn learned_routes_are_used_for_forwarding() {
    let mut h = Harness::base();
    // Nothing routes test.far yet but the parent's default route test.net?
    // test.far is outside test.net: no route.
    let (_, a) = h.send(
        "alice",
        prepare(5, T0_MS + 30_000, "test.far.x", &cond(), b""),
    );
    assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);

    let (_, a) = h.send("bob", update(0, 1, &[("test.far", &["test.net.bob"])], &[]));
    let f = fulfilled(&a);
    assert_eq!(f.fulfillment(), &[0u8; 32]);
    let (to, _, p) = forwarded(
        &h.send(
            "alice",
            prepare(5, T0_MS + 30_000, "test.far.x", &cond(), b""),
        )
        .1,
    );
    assert_eq!(to, h.id("bob"));
    assert_eq!(p.destination(), b"test.far.x");
    assert_eq!(h.metric("ilpd_ccp_learned_routes"), Some(1.0));

    // Withdrawn: F02 again.
    let (_, a) = h.send("bob", update(1, 2, &[], &["test.far"]));
    fulfilled(&a);
    let (_, a) = h.send(
        "alice",
        prepare(5, T0_MS + 30_000, "test.far.x", &cond(), b""),
    );
    assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);
}

#[test]
fn static_routes_win_and_bad_updates_are_rejected() {
    let mut h = Harness::base();
    // test.net.x is under the static default route to dave; bob's route to
    // the longer prefix test.net.x wins by prefix length.
    let (_, a) = h.send(
        "bob",
        update(0, 1, &[("test.net.x", &["test.net.bob"])], &[]),
    );
    fulfilled(&a);
    let (to, _, _) = forwarded(
        &h.send(
            "alice",
            prepare(5, T0_MS + 30_000, "test.net.x.y", &cond(), b""),
        )
        .1,
    );
    assert_eq!(to, h.id("bob"));
    // The static test.net itself is not taken over by a learned test.net.
    let (_, a) = h.send(
        "carol",
        update(0, 1, &[("test.net", &["test.net.carol"])], &[]),
    );
    fulfilled(&a);
    let (to, _, _) = forwarded(
        &h.send(
            "alice",
            prepare(5, T0_MS + 30_000, "test.net.z", &cond(), b""),
        )
        .1,
    );
    assert_eq!(to, h.id("dave"));

    // Epoch gap from bob: F00, counted, table unchanged.
    let (_, a) = h.send(
        "bob",
        update(5, 6, &[("test.net.gap", &["test.net.bob"])], &[]),
    );
    let msg = assert_own_reject(&a, ErrorCode::F00_BAD_REQUEST);
    assert!(msg.contains("gap"), "{msg}");
    assert_eq!(
        h.metric("ilpd_ccp_rejected_total{request=\"update\",reason=\"epoch_gap\"}"),
        Some(1.0)
    );
    // A child may not send routes: F00.
    let (_, a) = h.send("alice", update(0, 1, &[("test.evil", &["test.x"])], &[]));
    assert_own_reject(&a, ErrorCode::F00_BAD_REQUEST);
    // Garbage: F01.
    let (_, a) = h.send(
        "bob",
        peer_request_prepare(PEER_ROUTE_UPDATE, Expiry(T0_MS + 60_000), b"\x01\x02"),
    );
    assert_own_reject(&a, ErrorCode::F01_INVALID_PACKET);
    assert_eq!(h.metric("ilpd_ccp_learned_routes"), Some(1.0));
}

#[test]
fn the_core_sends_ccp_requests_and_routes_their_replies_back() {
    let mut h = Harness::base();
    // Every account came up in the harness: controls to the peers and the
    // parent are due at once (not to the child alice).
    let d = h.core.ccp_deadline().expect("a CCP deadline");
    assert!(d <= h.now.unix_ms);
    assert_eq!(
        h.core.next_deadline(),
        None,
        "the packet timers are separate"
    );
    let mut out = Vec::new();
    h.core.on_ccp_timers(h.now, &mut out);
    let mut to: Vec<u32> = Vec::new();
    let mut ids = Vec::new();
    for act in &out {
        match act {
            Action::Forward {
                to: t,
                out_id,
                packet,
            } => {
                let p = Prepare::new_checked(&packet[..]).expect("prepare");
                assert_eq!(p.destination(), PEER_ROUTE_CONTROL);
                assert_eq!(p.amount(), 0);
                let c = RouteControlRequest::decode(p.data()).expect("control");
                assert_eq!(c.mode, Mode::Sync);
                to.push(t.0);
                ids.push((*t, *out_id));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    to.sort();
    assert_eq!(to, vec![h.id("bob").0, h.id("carol").0, h.id("dave").0]);
    assert_eq!(h.core.in_flight(), 3);
    // Replies go to CCP, not upstream: no actions.
    let ful = ilpd_codec::peer::ccp::ccp_response_fulfill();
    let (bob, bob_id) = ids[0];
    let mut out = Vec::new();
    h.core.on_reply(h.now, bob, bob_id, ful.clone(), &mut out);
    assert!(out.is_empty());
    let rej = reject(ErrorCode::F00_BAD_REQUEST, "test.net.x", "no", b"");
    h.core.on_reply(h.now, ids[1].0, ids[1].1, rej, &mut out);
    assert!(out.is_empty());
    h.core.on_forward_failed(
        h.now,
        ids[2].1,
        ErrorCode::T01_PEER_UNREACHABLE,
        "gone",
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(h.core.in_flight(), 0);
    assert_eq!(h.metric("ilpd_ccp_control_failures_total"), Some(2.0));

    // bob asks for our routes: an update goes out to bob, with our address.
    let (_, a) = h.send("bob", control(Mode::Sync));
    fulfilled(&a);
    let mut out = Vec::new();
    h.core.on_ccp_timers(h.now, &mut out);
    let (t, _, p) = forwarded(&out);
    assert_eq!(t, h.id("bob"));
    assert_eq!(p.destination(), PEER_ROUTE_UPDATE);
    let u = RouteUpdateRequest::decode(p.data()).expect("update");
    let prefixes: Vec<&[u8]> = u.new_routes.iter().map(|r| r.prefix).collect();
    assert!(prefixes.contains(&&b"test.net.ilpd"[..]));
    assert!(prefixes.contains(&&b"test.net.ilpd.alice"[..]));
    assert_eq!(u.speaker, NODE.as_bytes());
}

#[test]
fn last_connection_closing_withdraws_the_accounts_routes() {
    let mut h = Harness::base();
    let bob = h.id("bob");
    h.shared.connection_opened(bob); // a second connection
    let (_, a) = h.send("bob", update(0, 1, &[("test.far", &["test.net.bob"])], &[]));
    fulfilled(&a);
    h.shared.connection_closed(bob);
    assert_eq!(h.metric("ilpd_ccp_learned_routes"), Some(1.0), "one left");
    h.shared.connection_closed(bob);
    assert_eq!(h.metric("ilpd_ccp_learned_routes"), Some(0.0));
    // The routing snapshot gets it at the next CCP timer (IO runs it when
    // `ccp_deadline` passes, which is now).
    assert!(h.core.ccp_deadline().is_some_and(|d| d <= h.now.unix_ms));
    let mut out = Vec::new();
    h.core.on_ccp_timers(h.now, &mut out);
    let (_, a) = h.send(
        "alice",
        prepare(5, T0_MS + 30_000, "test.far.x", &cond(), b""),
    );
    assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);
}

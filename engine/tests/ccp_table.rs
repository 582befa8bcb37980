//! Sans-IO tests of the CCP receiver side and the table logic: epochs,
//! withdrawals, expiry, loop avoidance, tie-breaks, and every kind of bad
//! update (rejected with its code, counted, the table unchanged).

mod ccp_support;

use ccp_support::*;
use ilpd_codec::address::Address;
use ilpd_codec::error_code::ErrorCode;
use ilpd_engine::ccp::{Ccp, CcpConfig, Kind, NextHop, PeerSettings, RejectReason};
use ilpd_engine::config::Relation;
use ilpd_engine::core::AccountId;

const ALICE: AccountId = AccountId(0);
const BOB: AccountId = AccountId(1);
const CAROL: AccountId = AccountId(2);
const DAVE: AccountId = AccountId(3);

fn me() -> Ccp {
    let mut c = node(
        "test.me",
        &[
            ("alice", Relation::Child),
            ("bob", Relation::Peer),
            ("carol", Relation::Peer),
            ("dave", Relation::Parent),
        ],
    );
    for a in [ALICE, BOB, CAROL, DAVE] {
        c.on_link_up(T0, a);
    }
    c
}

fn l(p: &str, a: AccountId) -> (String, u32) {
    (p.to_string(), a.0)
}

#[test]
fn routes_are_learned_and_each_change_is_one_epoch() {
    let mut c = me();
    let e0 = c.epoch();
    // Fixed routes (our address, alice's) are logged at start.
    assert_eq!(e0, 2);
    let u = Upd::new(0, 2).routes(vec![
        route("test.x", &["test.peer"]),
        route("test.y", &["test.peer", "test.q"]),
    ]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    assert_eq!(learned(&c), vec![l("test.x", BOB), l("test.y", BOB)]);
    assert_eq!(c.epoch(), e0 + 2);
    assert_eq!(c.peer_epoch(BOB), Some(2));
    assert!(c.take_learned_change(T0).is_some());
    assert!(c.take_learned_change(T0).is_none(), "reported once");

    // The same routes again: nothing changes, no epoch.
    let u = Upd::new(2, 3).routes(vec![route("test.x", &["test.peer"])]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    assert_eq!(c.epoch(), e0 + 2);
    assert!(c.take_learned_change(T0).is_none());

    // A new path for the best route is a change (it is re-advertised).
    let u = Upd::new(3, 4).routes(vec![route("test.x", &["test.peer", "test.z"])]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    assert_eq!(c.epoch(), e0 + 3);

    // Withdrawal.
    let u = Upd::new(4, 5).withdraw(vec!["test.x"]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    assert_eq!(learned(&c), vec![l("test.y", BOB)]);
    assert_eq!(c.epoch(), e0 + 4);
    assert_eq!(c.peer_epoch(BOB), Some(5));
    // Withdrawing what we do not have changes nothing.
    let u = Upd::new(5, 6).withdraw(vec!["test.nothing"]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    assert_eq!(c.epoch(), e0 + 4);
    assert_eq!(c.stats().updates_applied, 5);
}

#[test]
fn tie_breaks_relation_then_path_then_account() {
    let mut c = me();
    // Parent with the shortest path loses to peers.
    let upd = |c: &mut Ccp, a: AccountId, from: u32, to: u32, path: &[&str]| {
        let u = Upd::new(from, to).routes(vec![route("test.t", path)]);
        assert_eq!(c.on_route_update(T0, a, &u.bytes()), Ok(()));
    };
    upd(&mut c, DAVE, 0, 1, &["test.d"]);
    assert_eq!(learned(&c), vec![l("test.t", DAVE)]);
    upd(&mut c, CAROL, 0, 1, &["test.c", "test.c2", "test.c3"]);
    assert_eq!(learned(&c), vec![l("test.t", CAROL)], "peer over parent");
    upd(&mut c, BOB, 0, 1, &["test.b", "test.b2"]);
    assert_eq!(learned(&c), vec![l("test.t", BOB)], "shorter path");
    upd(&mut c, CAROL, 1, 2, &["test.c", "test.c2"]);
    assert_eq!(learned(&c), vec![l("test.t", BOB)], "equal: smaller id");
    upd(&mut c, CAROL, 2, 3, &["test.c"]);
    assert_eq!(learned(&c), vec![l("test.t", CAROL)]);
    // Withdraw the best: the next one takes over.
    let u = Upd::new(3, 4).withdraw(vec!["test.t"]);
    assert_eq!(c.on_route_update(T0, CAROL, &u.bytes()), Ok(()));
    assert_eq!(learned(&c), vec![l("test.t", BOB)]);
    // Longest prefix: a longer learned prefix is its own entry.
    let u = Upd::new(1, 2).routes(vec![route("test.t.sub", &["test.d"])]);
    assert_eq!(c.on_route_update(T0, DAVE, &u.bytes()), Ok(()));
    assert_eq!(learned(&c), vec![l("test.t", BOB), l("test.t.sub", DAVE)]);
}

#[test]
fn child_routes_win_when_a_child_may_send_them() {
    let addr = Address::new("test.me").expect("address");
    let mut kid = PeerSettings::new("kid", Relation::Child);
    kid.receive_routes = true;
    let peers = vec![PeerSettings::new("bob", Relation::Peer), kid];
    let mut c = Ccp::new(
        CcpConfig::new(addr.clone(), [1; 16]),
        peers,
        vec![(addr, NextHop::Local)],
    );
    let u = Upd::new(0, 1).routes(vec![route("test.k", &["test.b"])]);
    assert_eq!(c.on_route_update(T0, AccountId(0), &u.bytes()), Ok(()));
    let u = Upd::new(0, 1).routes(vec![route("test.k", &["test.x", "test.y", "test.z"])]);
    assert_eq!(c.on_route_update(T0, AccountId(1), &u.bytes()), Ok(()));
    assert_eq!(learned(&c), vec![("test.k".to_string(), 1)]);
}

#[test]
fn static_and_local_routes_win_over_learned() {
    let mut c = node_with(
        "test.me",
        &[("alice", Relation::Child), ("bob", Relation::Peer)],
        |_| {},
        vec![("test.s", 0)],
    );
    c.on_link_up(T0, BOB);
    let e = c.epoch();
    let u = Upd::new(0, 1).routes(vec![
        route("test.s", &["test.b"]),
        route("test.me.alice", &["test.b"]),
        route("test.other", &["test.b"]),
    ]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    assert_eq!(learned(&c), vec![l("test.other", BOB)]);
    assert!(matches!(
        c.table().best(b"test.s").map(|b| b.next_hop()),
        Some(NextHop::Account(AccountId(0)))
    ));
    // Only test.other changed the advertised table; test.me.alice is under
    // our own address and is filtered.
    assert_eq!(c.epoch(), e + 1);
    assert_eq!(c.stats().routes_filtered, 1);
}

#[test]
fn loop_avoidance_drops_routes_through_us() {
    let mut c = me();
    let e = c.epoch();
    let u = Upd::new(0, 1).routes(vec![route("test.l", &["test.b", "test.me", "test.z"])]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    assert_eq!(learned(&c), vec![]);
    assert_eq!(c.epoch(), e, "table unchanged");
    assert_eq!(c.stats().routes_looped, 1);
    // A loop-free route, then the same prefix through us: implicitly withdrawn.
    let u = Upd::new(1, 2).routes(vec![route("test.l", &["test.b"])]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    assert_eq!(learned(&c), vec![l("test.l", BOB)]);
    let u = Upd::new(2, 3).routes(vec![route("test.l", &["test.b", "test.me"])]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    assert_eq!(learned(&c), vec![]);
    assert_eq!(c.stats().routes_looped, 2);
}

#[test]
fn import_filters() {
    let mut c = me();
    let e = c.epoch();
    let u = Upd::new(0, 1).routes(vec![
        route("g.elsewhere", &["test.b"]),
        route("test", &["test.b"]),
        route("test.me", &["test.b"]),
        route("test.me.alice.x", &["test.b"]),
    ]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    assert_eq!(learned(&c), vec![]);
    assert_eq!(c.epoch(), e);
    assert_eq!(c.stats().routes_filtered, 4);
}

#[test]
fn routes_expire_after_hold_down_unless_refreshed() {
    let mut c = me();
    for o in c.poll(T0) {
        c.on_reply(T0, o.to, o.kind, true); // the link-up controls
    }
    let u = Upd::new(0, 1).routes(vec![route("test.x", &["test.b"])]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    // Heartbeat at +2000 (hold 3000): the routes live until +5000.
    let hb = Upd::new(1, 1);
    assert_eq!(c.on_route_update(T0 + 2_000, BOB, &hb.bytes()), Ok(()));
    assert!(c.poll(T0 + 4_999).iter().all(|o| o.to != BOB));
    assert_eq!(learned(&c), vec![l("test.x", BOB)]);
    assert!(c.next_deadline().is_some_and(|d| d <= T0 + 5_000));
    let out = c.poll(T0 + 5_000);
    assert_eq!(learned(&c), vec![]);
    assert_eq!(c.stats().expiries, 1);
    assert!(c.take_learned_change(T0 + 5_000).is_some());
    // We ask the peer again, from epoch 0 of its table.
    let ctl = out
        .iter()
        .find(|o| o.to == BOB && o.kind == Kind::Control)
        .expect("a new route control");
    let req = ilpd_codec::peer::ccp::RouteControlRequest::decode(&data_of(ctl))
        .map(|r| (r.mode, r.last_known_routing_table_id, r.last_known_epoch))
        .expect("control decodes");
    assert_eq!(req, (ilpd_codec::peer::ccp::Mode::Sync, PEER_TABLE, 0));
}

#[test]
fn link_down_withdraws_and_link_up_asks_again() {
    let mut c = me();
    let out = c.poll(T0);
    let controls: Vec<AccountId> = out
        .iter()
        .filter(|o| o.kind == Kind::Control)
        .map(|o| o.to)
        .collect();
    // Children are not asked for routes (receive only from parents and peers).
    assert_eq!(controls, vec![BOB, CAROL, DAVE]);
    let u = Upd::new(0, 1).routes(vec![route("test.x", &["test.b"])]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    c.on_link_down(T0 + 10, BOB);
    assert_eq!(learned(&c), vec![]);
    assert_eq!(c.peer_epoch(BOB), Some(0));
    assert!(
        c.poll(T0 + 20).iter().all(|o| o.to != BOB),
        "not while down"
    );
    c.on_link_up(T0 + 30, BOB);
    let out = c.poll(T0 + 30);
    assert!(out.iter().any(|o| o.to == BOB && o.kind == Kind::Control));
}

/// Every rejected update: code, reason counter, and a table unchanged.
fn rejected(c: &mut Ccp, from: AccountId, data: &[u8], code: ErrorCode, reason: RejectReason) {
    let before = (learned(c), c.epoch(), c.peer_epoch(from));
    let count = c.stats().updates_rejected(reason);
    let r = c.on_route_update(T0, from, data).expect_err("rejected");
    assert_eq!((r.code, r.reason), (code, reason), "{}", r.message);
    assert_eq!(c.stats().updates_rejected(reason), count + 1);
    assert_eq!((learned(c), c.epoch(), c.peer_epoch(from)), before);
}

fn with_one_route() -> Ccp {
    let mut c = me();
    let u = Upd::new(0, 2).routes(vec![route("test.x", &["test.b"])]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    c
}

#[test]
fn bad_update_from_an_account_not_allowed() {
    let mut c = with_one_route();
    // alice is a child: we do not receive routes from children by default.
    let u = Upd::new(0, 1).routes(vec![route("test.evil", &["test.me.alice"])]);
    rejected(
        &mut c,
        ALICE,
        &u.bytes(),
        ErrorCode::F00_BAD_REQUEST,
        RejectReason::NotAllowed,
    );
}

#[test]
fn bad_update_malformed_prefix_or_bytes() {
    let mut c = with_one_route();
    let u = Upd::new(2, 3).routes(vec![
        route("test.ok", &["test.b"]),
        route("test..bad", &["test.b"]),
    ]);
    rejected(
        &mut c,
        BOB,
        &u.bytes(),
        ErrorCode::F01_INVALID_PACKET,
        RejectReason::Malformed,
    );
    let u = Upd::new(2, 3).withdraw(vec!["test.x", "not an address"]);
    rejected(
        &mut c,
        BOB,
        &u.bytes(),
        ErrorCode::F01_INVALID_PACKET,
        RejectReason::Malformed,
    );
    let bytes = Upd::new(2, 3)
        .routes(vec![route("test.ok", &["test.b"])])
        .bytes();
    rejected(
        &mut c,
        BOB,
        &bytes[..bytes.len() - 3],
        ErrorCode::F01_INVALID_PACKET,
        RejectReason::Malformed,
    );
    rejected(
        &mut c,
        BOB,
        &[],
        ErrorCode::F01_INVALID_PACKET,
        RejectReason::Malformed,
    );
    let u = Upd {
        from: 3,
        to: 2,
        ..Upd::new(0, 0)
    };
    rejected(
        &mut c,
        BOB,
        &u.bytes(),
        ErrorCode::F01_INVALID_PACKET,
        RejectReason::Malformed,
    );
}

#[test]
fn bad_update_too_many_routes() {
    let mut c = node_with(
        "test.me",
        &[("bob", Relation::Peer)],
        |cfg| cfg.max_routes_per_update = 3,
        vec![],
    );
    let names: Vec<String> = (0..4).map(|i| format!("test.r{i}")).collect();
    let routes = names.iter().map(|n| route(n, &["test.b"])).collect();
    let u = Upd::new(0, 1).routes(routes);
    rejected(
        &mut c,
        AccountId(0),
        &u.bytes(),
        ErrorCode::F00_BAD_REQUEST,
        RejectReason::TooManyRoutes,
    );
    let u = Upd::new(0, 1).withdraw(names.iter().map(|s| s.as_str()).collect());
    rejected(
        &mut c,
        AccountId(0),
        &u.bytes(),
        ErrorCode::F00_BAD_REQUEST,
        RejectReason::TooManyRoutes,
    );
    // At the cap: fine.
    let routes = names[..3].iter().map(|n| route(n, &["test.b"])).collect();
    let u = Upd::new(0, 1).routes(routes);
    assert_eq!(c.on_route_update(T0, AccountId(0), &u.bytes()), Ok(()));
    assert_eq!(learned(&c).len(), 3);
}

#[test]
fn bad_update_routing_table_id() {
    let mut c = with_one_route();
    for o in c.poll(T0) {
        c.on_reply(T0, o.to, o.kind, true);
    }
    let u = Upd {
        table: [0; 16],
        ..Upd::new(2, 3)
    };
    rejected(
        &mut c,
        BOB,
        &u.bytes(),
        ErrorCode::F00_BAD_REQUEST,
        RejectReason::BadTableId,
    );
    // Another table id, not from epoch 0: we missed its start.
    let u = Upd {
        table: [0x22; 16],
        ..Upd::new(2, 3)
    }
    .routes(vec![route("test.n", &["test.b"])]);
    rejected(
        &mut c,
        BOB,
        &u.bytes(),
        ErrorCode::F00_BAD_REQUEST,
        RejectReason::BadTableId,
    );
    // We ask the peer to start over from what we hold.
    let out = c.poll(T0 + 1);
    assert!(out.iter().any(|o| o.to == BOB && o.kind == Kind::Control));
    // A new table from epoch 0 (the peer restarted) replaces the old routes.
    let u = Upd {
        table: [0x22; 16],
        ..Upd::new(0, 1)
    }
    .routes(vec![route("test.n", &["test.b"])]);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    assert_eq!(learned(&c), vec![l("test.n", BOB)]);
}

#[test]
fn bad_update_epoch_gap_and_stale() {
    let mut c = with_one_route();
    // Answer the link-up control so it is not pending.
    for o in c.poll(T0) {
        c.on_reply(T0, o.to, o.kind, true);
    }
    let u = Upd::new(3, 4).routes(vec![route("test.g", &["test.b"])]);
    rejected(
        &mut c,
        BOB,
        &u.bytes(),
        ErrorCode::F00_BAD_REQUEST,
        RejectReason::EpochGap,
    );
    let out = c.poll(T0 + 1);
    let ctl = out
        .iter()
        .find(|o| o.to == BOB && o.kind == Kind::Control)
        .expect("a route control after a gap");
    let data = data_of(ctl);
    let req = ilpd_codec::peer::ccp::RouteControlRequest::decode(&data).expect("decodes");
    assert_eq!(
        (req.last_known_routing_table_id, req.last_known_epoch),
        (PEER_TABLE, 2)
    );
    // Stale (already held): acknowledged, ignored.
    let u = Upd::new(0, 1).withdraw(vec!["test.x"]);
    let before = (learned(&c), c.epoch());
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    assert_eq!((learned(&c), c.epoch()), before);
    assert_eq!(c.stats().updates_stale, 1);
}

#[test]
fn bad_route_control() {
    let mut c = node("test.me", &[("bob", Relation::Peer)]);
    let r = c
        .on_route_control(T0, AccountId(0), &[7, 7])
        .expect_err("malformed");
    assert_eq!(
        (r.code, r.reason),
        (ErrorCode::F01_INVALID_PACKET, RejectReason::Malformed)
    );
    assert_eq!(c.stats().controls_rejected(RejectReason::Malformed), 1);
    let r = c.on_route_control(
        T0,
        AccountId(5),
        &control(ilpd_codec::peer::ccp::Mode::Sync, [0; 16], 0),
    );
    assert_eq!(r.map_err(|e| e.code), Err(ErrorCode::F00_BAD_REQUEST));

    let mut quiet = PeerSettings::new("bob", Relation::Peer);
    quiet.send_routes = false;
    let addr = Address::new("test.me").expect("address");
    let mut c = Ccp::new(
        CcpConfig::new(addr.clone(), [1; 16]),
        vec![quiet],
        vec![(addr, NextHop::Local)],
    );
    let r = c
        .on_route_control(
            T0,
            AccountId(0),
            &control(ilpd_codec::peer::ccp::Mode::Sync, [0; 16], 0),
        )
        .expect_err("not allowed");
    assert_eq!(
        (r.code, r.reason),
        (ErrorCode::F00_BAD_REQUEST, RejectReason::NotAllowed)
    );
}

#[test]
fn metrics_show_the_learned_table() {
    let mut c = with_one_route();
    let u = Upd::new(0, 1).routes(vec![route("test.z", &["test.d", "test.e"])]);
    assert_eq!(c.on_route_update(T0, DAVE, &u.bytes()), Ok(()));
    let _ = c.on_route_update(T0, ALICE, &u.bytes());
    let mut text = String::new();
    c.render_metrics(&mut text);
    assert!(text.contains("ilpd_ccp_learned_routes 2\n"), "{text}");
    assert!(text.contains("ilpd_ccp_route{prefix=\"test.x\",next_hop=\"bob\",path_len=\"1\"} 1\n"));
    assert!(text.contains("ilpd_ccp_route{prefix=\"test.z\",next_hop=\"dave\",path_len=\"2\"} 1\n"));
    assert!(text.contains("ilpd_ccp_rejected_total{request=\"update\",reason=\"not_allowed\"} 1\n"));
    assert!(text.contains("ilpd_ccp_updates_received_total 3\n"));
}

#[test]
fn big_tables_are_published_at_most_every_learned_over_500_ms() {
    let mut c = me();
    let names: Vec<String> = (0..2_000).map(|i| format!("test.r{i}")).collect();
    let routes = names.iter().map(|n| route(n, &["test.b"])).collect();
    let u = Upd::new(0, 1).routes(routes);
    assert_eq!(c.on_route_update(T0, BOB, &u.bytes()), Ok(()));
    let first = c
        .take_learned_change(T0)
        .expect("first publication at once");
    assert_eq!(first.len(), 2_000);
    // 2000 learned prefixes: at most one publication per 4 ms.
    let u = Upd::new(1, 2).withdraw(vec!["test.r0"]);
    assert_eq!(c.on_route_update(T0 + 1, BOB, &u.bytes()), Ok(()));
    assert!(c.take_learned_change(T0 + 1).is_none(), "too soon");
    assert!(c.next_deadline().is_some_and(|d| d <= T0 + 3));
    let second = c.take_learned_change(T0 + 3).expect("due");
    assert_eq!(second.len(), 1_999);
    assert!(!second.iter().any(|(p, _)| &p[..] == b"test.r0"));
}

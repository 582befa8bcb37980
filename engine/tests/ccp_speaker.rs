//! Sans-IO tests of the CCP speaker side (what we send, when, from which
//! epoch), and of small networks of [`Ccp`] nodes wired in memory: routes
//! propagate through a middle node, loops are avoided in a triangle, and a
//! node that goes away is withdrawn everywhere.

mod ccp_support;

use ccp_support::*;
use ilpd_codec::peer::ccp::Mode;
use ilpd_engine::ccp::{Ccp, Kind, Outgoing, MIN_UPDATE_GAP_MS};
use ilpd_engine::config::Relation;
use ilpd_engine::core::AccountId;

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
    for a in 0..4 {
        c.on_link_up(T0, AccountId(a));
    }
    // Answer the link-up controls.
    for o in c.poll(T0) {
        c.on_reply(T0, o.to, o.kind, true);
    }
    c
}

fn updates_to(out: &[Outgoing], to: AccountId) -> Vec<Decoded> {
    out.iter()
        .filter(|o| o.to == to && o.kind == Kind::Update)
        .map(decode_update)
        .collect()
}

fn prefixes(d: &Decoded) -> Vec<&str> {
    let mut v: Vec<&str> = d.2.iter().map(|(p, _)| p.as_str()).collect();
    v.sort();
    v
}

#[test]
fn sync_gets_the_table_then_heartbeats() {
    let mut c = me();
    assert!(
        updates_to(&c.poll(T0), BOB).is_empty(),
        "nothing before SYNC"
    );
    c.on_route_control(T0, BOB, &control(Mode::Sync, [0; 16], 0))
        .expect("control accepted");
    let out = c.poll(T0);
    let u = updates_to(&out, BOB);
    assert_eq!(u.len(), 1);
    let (from, to, routes, withdrawn) = &u[0];
    assert_eq!((*from, *to), (0, c.epoch()));
    assert_eq!(prefixes(&u[0]), vec!["test.me", "test.me.alice"]);
    assert!(routes
        .iter()
        .all(|(_, path)| path == &vec!["test.me".to_string()]));
    assert!(withdrawn.is_empty());
    assert_eq!(c.speaker_state(BOB), Some((Mode::Sync, c.epoch())));
    // One update in flight at a time.
    assert!(updates_to(&c.poll(T0 + 500), BOB).is_empty());
    c.on_reply(T0 + 10, BOB, Kind::Update, true);
    assert!(updates_to(&c.poll(T0 + 999), BOB).is_empty());
    // Heartbeat after the interval (1000 ms in these tests).
    assert!(c.next_deadline().is_some_and(|d| d <= T0 + 1_000));
    let u = updates_to(&c.poll(T0 + 1_000), BOB);
    assert_eq!(u.len(), 1);
    assert_eq!((u[0].0, u[0].1), (c.epoch(), c.epoch()));
    assert!(u[0].2.is_empty() && u[0].3.is_empty(), "a heartbeat");
    c.on_reply(T0 + 1_000, BOB, Kind::Update, true);
    // IDLE stops them.
    c.on_route_control(T0 + 1_100, BOB, &control(Mode::Idle, [0; 16], 0))
        .expect("idle");
    assert!(updates_to(&c.poll(T0 + 5_000), BOB).is_empty());
}

#[test]
fn changes_go_out_in_batches_and_never_back_to_their_source() {
    let mut c = me();
    for a in [BOB, CAROL] {
        c.on_route_control(T0, a, &control(Mode::Sync, [0; 16], 0))
            .expect("sync");
    }
    for o in c.poll(T0) {
        c.on_reply(T0, o.to, o.kind, true);
    }
    let t = T0 + 10;
    let u = Upd::new(0, 1).routes(vec![route("test.b1", &["test.bob"])]);
    c.on_route_update(t, BOB, &u.bytes()).expect("update");
    let u = Upd::new(1, 2).routes(vec![route("test.b2", &["test.bob"])]);
    c.on_route_update(t + 1, BOB, &u.bytes()).expect("update");
    // The batch goes out MIN_UPDATE_GAP_MS after the last send, as one.
    assert!(updates_to(&c.poll(t + 1), CAROL).is_empty());
    let out = c.poll(T0 + MIN_UPDATE_GAP_MS);
    let to_carol = updates_to(&out, CAROL);
    assert_eq!(to_carol.len(), 1);
    assert_eq!(prefixes(&to_carol[0]), vec!["test.b1", "test.b2"]);
    assert!(to_carol[0]
        .2
        .iter()
        .all(|(_, path)| path == &vec!["test.me".to_string(), "test.bob".to_string()]));
    // Bob hears of its own routes only as withdrawals.
    let to_bob = updates_to(&out, BOB);
    assert_eq!(to_bob.len(), 1);
    assert!(to_bob[0].2.is_empty());
    let mut w = to_bob[0].3.clone();
    w.sort();
    assert_eq!(w, vec!["test.b1", "test.b2"]);
}

#[test]
fn parents_do_not_get_peer_routes() {
    let mut c = me();
    let u = Upd::new(0, 1).routes(vec![route("test.b1", &["test.bob"])]);
    c.on_route_update(T0, BOB, &u.bytes()).expect("update");
    c.on_route_control(T0, DAVE, &control(Mode::Sync, [0; 16], 0))
        .expect("sync");
    let u = updates_to(&c.poll(T0), DAVE);
    assert_eq!(u.len(), 1);
    assert_eq!(prefixes(&u[0]), vec!["test.me", "test.me.alice"]);
}

#[test]
fn control_epochs_choose_incremental_or_full() {
    let mut c = me();
    let id = c.routing_table_id();
    let u = Upd::new(0, 1).routes(vec![route("test.b1", &["test.bob"])]);
    c.on_route_update(T0, BOB, &u.bytes()).expect("update");
    let e = c.epoch();
    // Our table id and the latest epoch but one: just the last change.
    c.on_route_control(T0, CAROL, &control(Mode::Sync, id, e - 1))
        .expect("sync");
    let u = updates_to(&c.poll(T0), CAROL);
    assert_eq!((u[0].0, u[0].1), (e - 1, e));
    assert_eq!(prefixes(&u[0]), vec!["test.b1"]);
    // Another table id: the full table from 0.
    c.on_route_control(T0, CAROL, &control(Mode::Sync, [7; 16], e))
        .expect("sync");
    let u = updates_to(&c.poll(T0), CAROL);
    assert_eq!((u[0].0, u[0].1), (0, e));
    assert_eq!(prefixes(&u[0]), vec!["test.b1", "test.me", "test.me.alice"]);
    // An epoch we never reached: the full table too.
    c.on_route_control(T0, CAROL, &control(Mode::Sync, id, e + 50))
        .expect("sync");
    let u = updates_to(&c.poll(T0), CAROL);
    assert_eq!((u[0].0, u[0].1), (0, e));
    assert_eq!(u[0].2.len(), 3);
}

#[test]
fn failed_update_is_rolled_back_and_retried_after_the_interval() {
    let mut c = me();
    c.on_route_control(T0, CAROL, &control(Mode::Sync, [0; 16], 0))
        .expect("sync");
    let u = updates_to(&c.poll(T0), CAROL);
    assert_eq!(u[0].0, 0);
    c.on_reply(T0 + 5, CAROL, Kind::Update, false);
    assert_eq!(c.speaker_state(CAROL), Some((Mode::Sync, 0)));
    assert!(
        updates_to(&c.poll(T0 + 500), CAROL).is_empty(),
        "backing off"
    );
    let u = updates_to(&c.poll(T0 + 1_005), CAROL);
    assert_eq!((u[0].0, u[0].1), (0, c.epoch()), "the same range again");
    // A lost reply (no answer at all) times out the same way.
    let later = T0 + 1_005 + ilpd_engine::ccp::REQUEST_EXPIRY_MS + 1_000;
    assert!(updates_to(&c.poll(later - 1), CAROL).is_empty());
    let _ = c.poll(later);
    assert_eq!(c.stats().update_failures, 2);
    assert_eq!(c.speaker_state(CAROL), Some((Mode::Sync, 0)));
}

// ---- networks of nodes in memory ----

/// One end of a link: a node and its account for the other end.
type End = (usize, AccountId);

/// Nodes and bidirectional links (node, account there) <-> (node, account).
struct Net {
    nodes: Vec<Ccp>,
    links: Vec<(End, End, bool)>,
    now: u64,
}

impl Net {
    fn new(nodes: Vec<Ccp>, links: Vec<((usize, u32), (usize, u32))>) -> Net {
        let mut net = Net {
            nodes,
            links: links
                .into_iter()
                .map(|((a, x), (b, y))| ((a, AccountId(x)), (b, AccountId(y)), true))
                .collect(),
            now: T0,
        };
        for i in 0..net.links.len() {
            net.set_link(i, true);
        }
        net
    }

    fn set_link(&mut self, i: usize, up: bool) {
        let ((a, x), (b, y), _) = self.links[i];
        self.links[i].2 = up;
        let now = self.now;
        if up {
            self.nodes[a].on_link_up(now, x);
            self.nodes[b].on_link_up(now, y);
        } else {
            self.nodes[a].on_link_down(now, x);
            self.nodes[b].on_link_down(now, y);
        }
    }

    /// The other end of node `n`'s account `acct`, if the link is up.
    fn peer_of(&self, n: usize, acct: AccountId) -> Option<End> {
        self.links.iter().find_map(|&((a, x), (b, y), up)| {
            if !up {
                None
            } else if (a, x) == (n, acct) {
                Some((b, y))
            } else if (b, y) == (n, acct) {
                Some((a, x))
            } else {
                None
            }
        })
    }

    /// Polls every node and delivers until nothing is sent, then moves the
    /// clock by `ms`.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        loop {
            for _ in 0..100 {
                let mut sent = false;
                for n in 0..self.nodes.len() {
                    let now = self.now;
                    for o in self.nodes[n].poll(now) {
                        sent = true;
                        let ok = match self.peer_of(n, o.to) {
                            None => false,
                            Some((m, from)) => {
                                let data = data_of(&o);
                                match o.kind {
                                    Kind::Control => {
                                        self.nodes[m].on_route_control(now, from, &data).is_ok()
                                    }
                                    Kind::Update => {
                                        self.nodes[m].on_route_update(now, from, &data).is_ok()
                                    }
                                }
                            }
                        };
                        self.nodes[n].on_reply(now, o.to, o.kind, ok);
                    }
                }
                if !sent {
                    break;
                }
            }
            if self.now >= end {
                break;
            }
            self.now = (self.now + 50).min(end);
        }
    }
}

/// A — B — C as peers, each with one child; every node asks its peers for
/// routes on link up and sends them to whoever asks.
fn line() -> Net {
    let a = node("test.a", &[("ann", Relation::Child), ("b", Relation::Peer)]);
    let b = node("test.b", &[("a", Relation::Peer), ("c", Relation::Peer)]);
    let c = node("test.c", &[("b", Relation::Peer), ("cat", Relation::Child)]);
    Net::new(vec![a, b, c], vec![((0, 1), (1, 0)), ((1, 1), (2, 0))])
}

#[test]
fn routes_cross_a_middle_node() {
    let mut net = line();
    net.run(500);
    let ab = 1; // A's account for B
    assert_eq!(
        learned(&net.nodes[0]),
        vec![
            ("test.b".to_string(), ab),
            ("test.c".to_string(), ab),
            ("test.c.cat".to_string(), ab),
        ]
    );
    assert_eq!(
        learned(&net.nodes[2]),
        vec![
            ("test.a".to_string(), 0),
            ("test.a.ann".to_string(), 0),
            ("test.b".to_string(), 0),
        ]
    );
    // The path as A holds it: B then C.
    match net.nodes[0].table().best(b"test.c.cat") {
        Some(ilpd_engine::ccp::Best::Learned(l)) => {
            let path: Vec<&[u8]> = l.path.iter().map(|h| &h[..]).collect();
            assert_eq!(path, vec![&b"test.b"[..], &b"test.c"[..]]);
        }
        other => panic!("expected a learned route, got {other:?}"),
    }
    // Heartbeats keep everything alive well past holdDownTime (3 s).
    net.run(10_000);
    assert_eq!(learned(&net.nodes[0]).len(), 3);
    assert_eq!(net.nodes[0].stats().expiries, 0);
}

#[test]
fn a_disconnected_node_is_withdrawn_everywhere() {
    let mut net = line();
    net.run(500);
    assert_eq!(learned(&net.nodes[0]).len(), 3);
    net.set_link(1, false); // B — C goes down
    net.run(500);
    assert_eq!(learned(&net.nodes[0]), vec![("test.b".to_string(), 1)]);
    net.set_link(1, true);
    net.run(500);
    assert_eq!(learned(&net.nodes[0]).len(), 3, "back after reconnect");
}

#[test]
fn a_silent_node_expires_within_hold_down() {
    let mut net = line();
    net.run(500);
    // C stops talking without the link going down: drop it from the net
    // by replacing it with a node that nobody links to, and mark the link
    // up-but-mute by removing it (B keeps thinking the link is up).
    let mute = net.links.remove(1);
    assert!(mute.2);
    let t = net.now;
    net.run(3_000 + 200);
    assert_eq!(
        learned(&net.nodes[1]),
        vec![("test.a".to_string(), 0), ("test.a.ann".to_string(), 0)]
    );
    assert_eq!(learned(&net.nodes[0]), vec![("test.b".to_string(), 1)]);
    assert!(net.now - t <= 3_200);
    assert_eq!(net.nodes[1].stats().expiries, 1);
}

#[test]
fn a_triangle_has_no_loops_and_survives_a_cut() {
    let a = node("test.a", &[("b", Relation::Peer), ("c", Relation::Peer)]);
    let b = node("test.b", &[("a", Relation::Peer), ("c", Relation::Peer)]);
    let c = node(
        "test.c",
        &[
            ("a", Relation::Peer),
            ("b", Relation::Peer),
            ("kid", Relation::Child),
        ],
    );
    let mut net = Net::new(
        vec![a, b, c],
        vec![((0, 0), (1, 0)), ((0, 1), (2, 0)), ((1, 1), (2, 1))],
    );
    net.run(1_000);
    // A reaches C's child directly (path of one), not through B.
    assert_eq!(
        learned(&net.nodes[0]),
        vec![
            ("test.b".to_string(), 0),
            ("test.c".to_string(), 1),
            ("test.c.kid".to_string(), 1),
        ]
    );
    // Cut A — C: A now goes through B.
    net.set_link(1, false);
    net.run(1_000);
    assert_eq!(
        learned(&net.nodes[0]),
        vec![
            ("test.b".to_string(), 0),
            ("test.c".to_string(), 0),
            ("test.c.kid".to_string(), 0),
        ]
    );
    // Stable: no more epochs once converged.
    let epochs: Vec<u32> = net.nodes.iter().map(|n| n.epoch()).collect();
    net.run(5_000);
    assert_eq!(
        epochs,
        net.nodes.iter().map(|n| n.epoch()).collect::<Vec<_>>()
    );
}

#[test]
fn a_big_table_goes_in_several_updates() {
    let mut a = node("test.a", &[("b", Relation::Peer), ("src", Relation::Peer)]);
    a.on_link_up(T0, AccountId(1));
    let names: Vec<String> = (0..2_500).map(|i| format!("test.src.r{i}")).collect();
    for chunk in names.chunks(1_000).enumerate() {
        let (i, chunk) = chunk;
        let routes = chunk.iter().map(|n| route(n, &["test.src"])).collect();
        let u = Upd::new(i as u32, i as u32 + 1).routes(routes);
        a.on_route_update(T0, AccountId(1), &u.bytes())
            .expect("update");
    }
    let b = node("test.b", &[("a", Relation::Peer)]);
    let mut net = Net::new(vec![a, b], vec![((0, 0), (1, 0))]);
    net.run(1_000);
    assert_eq!(learned(&net.nodes[1]).len(), 2_500 + 1);
    assert!(net.nodes[0].stats().updates_sent >= 3);
}

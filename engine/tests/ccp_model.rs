//! Property tests of the CCP table: random bytes never panic and never
//! change the table when rejected; random sequences of announcements and
//! withdrawals from three peers always leave the best route of every prefix
//! equal to a brute-force choice over a model of what each peer announced.

mod ccp_support;

use std::collections::BTreeMap;

use ccp_support::*;
use ilpd_engine::ccp::Ccp;
use ilpd_engine::config::Relation;
use ilpd_engine::core::AccountId;
use proptest::prelude::*;

fn three_peers() -> Ccp {
    let mut c = node(
        "test.me",
        &[
            ("pa", Relation::Parent),
            ("pb", Relation::Peer),
            ("pc", Relation::Peer),
        ],
    );
    for a in 0..3 {
        c.on_link_up(T0, AccountId(a));
    }
    c
}

#[derive(Debug, Clone)]
enum Op {
    /// peer, prefix index, path length (1..=4), looped
    Announce(u32, u8, u8, bool),
    Withdraw(u32, u8),
    LinkDown(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..3, 0u8..6, 1u8..5, prop::bool::weighted(0.1))
            .prop_map(|(p, i, l, lp)| Op::Announce(p, i, l, lp)),
        3 => (0u32..3, 0u8..6).prop_map(|(p, i)| Op::Withdraw(p, i)),
        1 => (0u32..3).prop_map(Op::LinkDown),
    ]
}

const PREFIXES: [&str; 6] = [
    "test.x",
    "test.x.y",
    "test.y",
    "test.z",
    "test.me.k",
    "g.other",
];

proptest! {
    #[test]
    fn random_bytes_never_panic_or_change_the_table(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut c = three_peers();
        let u = Upd::new(0, 1).routes(vec![route("test.keep", &["test.pb"])]);
        prop_assert!(c.on_route_update(T0, AccountId(1), &u.bytes()).is_ok());
        let before = (learned(&c), c.epoch());
        for a in 0..4 {
            let r = c.on_route_update(T0, AccountId(a), &data);
            if r.is_err() {
                prop_assert_eq!(&(learned(&c), c.epoch()), &before);
            }
            let _ = c.on_route_control(T0, AccountId(a), &data);
        }
        let _ = c.poll(T0 + 10);
    }

    #[test]
    fn best_routes_match_a_brute_force_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut c = three_peers();
        // Model: per peer, prefix -> path length of its current route.
        let mut model: Vec<BTreeMap<&str, usize>> = vec![BTreeMap::new(); 3];
        let mut epochs = [0u32; 3];
        let ranks = [2u8, 1, 1]; // parent, peer, peer
        for op in ops {
            match op {
                Op::Announce(p, i, len, looped) => {
                    let prefix = PREFIXES[i as usize];
                    let mut path: Vec<&str> = ["test.h1", "test.h2", "test.h3", "test.h4"][..len as usize].to_vec();
                    if looped {
                        path.push("test.me");
                    }
                    let e = epochs[p as usize];
                    let u = Upd::new(e, e + 1).routes(vec![route(prefix, &path)]);
                    prop_assert!(c.on_route_update(T0, AccountId(p), &u.bytes()).is_ok());
                    epochs[p as usize] += 1;
                    let importable = prefix.starts_with("test.") && !prefix.starts_with("test.me");
                    if looped || !importable {
                        model[p as usize].remove(prefix);
                    } else {
                        model[p as usize].insert(prefix, path.len());
                    }
                }
                Op::Withdraw(p, i) => {
                    let prefix = PREFIXES[i as usize];
                    let e = epochs[p as usize];
                    let u = Upd::new(e, e + 1).withdraw(vec![prefix]);
                    prop_assert!(c.on_route_update(T0, AccountId(p), &u.bytes()).is_ok());
                    epochs[p as usize] += 1;
                    model[p as usize].remove(prefix);
                }
                Op::LinkDown(p) => {
                    c.on_link_down(T0, AccountId(p));
                    c.on_link_up(T0, AccountId(p));
                    model[p as usize].clear();
                    epochs[p as usize] = 0;
                }
            }
            let mut expected: BTreeMap<&str, u32> = BTreeMap::new();
            for prefix in PREFIXES {
                let best = (0..3u32)
                    .filter_map(|p| model[p as usize].get(prefix).map(|len| (ranks[p as usize], *len, p)))
                    .min();
                if let Some((_, _, p)) = best {
                    expected.insert(prefix, p);
                }
            }
            let got: BTreeMap<String, u32> = learned(&c).into_iter().collect();
            let expected: BTreeMap<String, u32> =
                expected.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            prop_assert_eq!(got, expected);
        }
    }
}

//! Route lookup with 100,000 learned (CCP) prefixes, through the engine's
//! real routing snapshot (`Shared::set_learned_routes` then
//! `Shared::route`, the segment-aware longest-prefix match every forwarded
//! packet does), and the memory the learned table takes.
//!
//! Groups: `ccp_lookup/hit` (a destination two segments under a learned
//! prefix: three probes), `ccp_lookup/hit_exact` (the prefix itself),
//! `ccp_lookup/miss_default` (no learned prefix matches; falls to the
//! static default route), `ccp_lookup/miss` (nothing matches at all).
//! Memory is counted by a global allocator that tracks live bytes; it is
//! printed before the criterion groups, with the time to publish the
//! snapshot and a best-of-2000 time per lookup (the cost without
//! preemption on a shared machine).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ilpd_codec::address::Address;
use ilpd_codec::peer::ccp::{Route, RouteUpdateRequest};
use ilpd_engine::ccp::{Ccp, CcpConfig, NextHop, PeerSettings};
use ilpd_engine::config::{Config, Relation};
use ilpd_engine::core::{AccountId, Shared};

/// Live heap bytes (allocations minus frees).
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 100_000;

const CFG: &str = r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "g.ilpd"
durability = "none"
threads = 1

[[accounts]]
id = "alice"
incoming_token = "alice-token"
relation = "child"
asset_code = "USD"
asset_scale = 9

[[accounts]]
id = "bob"
incoming_token = "bob-token"
relation = "peer"
asset_code = "USD"
asset_scale = 9

[[accounts]]
id = "dave"
incoming_token = "dave-token"
relation = "parent"
asset_code = "USD"
asset_scale = 9

[[routes]]
prefix = "g.net"
account = "dave"
"#;

/// Learned prefix `i`: 100 connectors with 1000 customers each, like
/// `g.net.conn42.cust31337` (20–22 bytes).
fn prefix(i: usize) -> String {
    format!("g.net.conn{}.cust{}", i % 100, i)
}

fn live() -> isize {
    LIVE.load(Relaxed)
}

fn bench(c: &mut Criterion) {
    let cfg = Config::from_toml(CFG).expect("config");
    let shared = Shared::from_config(&cfg).expect("shared");
    // Live bytes before the input exists: the input is consumed (freed)
    // by the call, so the difference afterwards is what the snapshot keeps.
    let before = live();
    let routes: Vec<(Address, AccountId)> = (0..N)
        .map(|i| {
            (
                Address::new(&prefix(i)).expect("address"),
                AccountId(1 + (i % 2) as u32),
            )
        })
        .collect();
    let t = Instant::now();
    shared.set_learned_routes(routes);
    let publish = t.elapsed();
    let snapshot_bytes = live() - before;

    // The CCP table holding the same routes (prefix, path of 2 hops, auth).
    let node = Address::new("g.ilpd").expect("address");
    let before = live();
    let mut ccp = Ccp::new(
        CcpConfig::new(node.clone(), [1; 16]),
        vec![
            PeerSettings::new("alice", Relation::Child),
            PeerSettings::new("bob", Relation::Peer),
            PeerSettings::new("dave", Relation::Parent),
        ],
        vec![(node, NextHop::Local)],
    );
    let names: Vec<String> = (0..N).map(prefix).collect();
    for (k, chunk) in names.chunks(10_000).enumerate() {
        let req = RouteUpdateRequest {
            routing_table_id: [2; 16],
            current_epoch_index: 10,
            from_epoch_index: k as u32,
            to_epoch_index: k as u32 + 1,
            hold_down_time: 45_000,
            speaker: b"g.bob",
            new_routes: chunk
                .iter()
                .map(|p| Route {
                    prefix: p.as_bytes(),
                    path: vec![b"g.bob", b"g.net"],
                    auth: [3; 32],
                    props: vec![],
                })
                .collect(),
            withdrawn_routes: vec![],
        };
        let mut data = Vec::new();
        req.write_to(&mut data);
        ccp.on_route_update(0, AccountId(1), &data)
            .expect("update accepted");
    }
    drop(names);
    let ccp_bytes = live() - before;
    assert_eq!(ccp.table().learned_count(), N);
    let t = Instant::now();
    let learned = ccp.learned_routes();
    let export = t.elapsed();
    drop(learned);
    eprintln!(
        "ccp_lookup: {N} learned prefixes: routing snapshot (layer + table) {:.1} MiB ({:.0} B/prefix), published in {:.1} ms; \
         CCP table {:.1} MiB ({:.0} B/prefix); learned_routes() export {:.1} ms",
        snapshot_bytes as f64 / 1048576.0,
        snapshot_bytes as f64 / N as f64,
        publish.as_secs_f64() * 1e3,
        ccp_bytes as f64 / 1048576.0,
        ccp_bytes as f64 / N as f64,
        export.as_secs_f64() * 1e3,
    );

    // 1024 destinations of each kind, visited in a scrambled order.
    let pick = |k: usize| (k * 7919) % N;
    let hits: Vec<Vec<u8>> = (0..1024)
        .map(|k| format!("{}.alice.x", prefix(pick(k))).into_bytes())
        .collect();
    let exact: Vec<Vec<u8>> = (0..1024).map(|k| prefix(pick(k)).into_bytes()).collect();
    let default: Vec<Vec<u8>> = (0..1024)
        .map(|k| format!("g.net.conn{}.nobody{k}.x", k % 100).into_bytes())
        .collect();
    let miss: Vec<Vec<u8>> = (0..1024)
        .map(|k| format!("g.other{k}.someone.x").into_bytes())
        .collect();
    for d in &hits {
        assert!(matches!(shared.route(d), Some(AccountId(1 | 2))));
    }
    for d in &default {
        assert_eq!(
            shared.route(d),
            Some(AccountId(2)),
            "the static g.net route"
        );
    }
    for d in &miss {
        assert_eq!(shared.route(d), None);
    }
    // Best of 2000 passes over each set of 1024 destinations: on a shared
    // machine a pass that was not preempted gives the lookup cost itself
    // (criterion's mean below includes the preemption).
    let sets = [
        ("hit", &hits),
        ("hit_exact", &exact),
        ("miss_default", &default),
        ("miss", &miss),
    ];
    for (name, set) in sets {
        let mut best = f64::MAX;
        for _ in 0..2_000 {
            let t = Instant::now();
            for d in set.iter() {
                black_box(shared.route(black_box(d)));
            }
            best = best.min(t.elapsed().as_nanos() as f64 / set.len() as f64);
        }
        eprintln!("ccp_lookup: best-of-2000 {name}: {best:.1} ns per lookup");
    }
    let mut g = c.benchmark_group("ccp_lookup");
    for (name, set) in sets {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(shared.route(black_box(&set[i])))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

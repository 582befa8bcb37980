//! The sans-IO forwarding core, per packet: `on_prepare` (parse, route,
//! rate, expiry, reservations, pending entry, in-place patch) → `Forward`,
//! then `on_reply` with the Fulfill and `flush` (batched SHA-256 check,
//! settlement) → `Reply`. No sockets: this is the core's share of the
//! per-packet cost. Packet buffers are built in the untimed setup, as IO
//! hands the core buffers it already read.
//!
//! `forward_fulfill/1`: one packet per flush. `forward_fulfill/64`: 64
//! Prepares, 64 Fulfills, one flush (a busy loop turn); time per packet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use ilpd_codec::ilp::{FulfillBuilder, PrepareBuilder};
use ilpd_codec::types::Expiry;
use ilpd_engine::config::Config;
use ilpd_engine::core::{AccountId, Action, Core, Now, ReplyTo, Shared};
use sha2::{Digest, Sha256};

const CFG: &str = r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
durability = "none"
threads = 1

[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "a"

[[accounts]]
id = "bob"
relation = "peer"
asset_code = "EUR"
asset_scale = 6
incoming_token = "b"
ilp_address = "test.bob"

[rates]
spread = "0.002"
prices = { USD = "1", EUR = "1.08" }
"#;

const NOW: Now = Now {
    unix_ms: 1_700_000_000_000,
    mono_ns: 1_000_000_000,
};

fn setup() -> (Arc<Shared>, Core) {
    let cfg = Config::from_toml(CFG).expect("config");
    let shared = Shared::from_config(&cfg).expect("shared");
    shared.connection_opened(AccountId(0));
    shared.connection_opened(AccountId(1));
    let core = Core::new(shared.clone(), 0);
    (shared, core)
}

/// `n` Prepares (alice → test.bob.x) and their Fulfills.
fn packets(n: usize) -> Vec<(BytesMut, BytesMut)> {
    (0..n)
        .map(|i| {
            let mut f = [7u8; 32];
            f[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let c: [u8; 32] = Sha256::digest(f).into();
            let p = PrepareBuilder {
                amount: 1_000_000,
                expires_at: Expiry(NOW.unix_ms + 30_000),
                execution_condition: &c,
                destination: b"test.bob.x.y",
                data: &[0u8; 64],
            }
            .build();
            (
                p,
                FulfillBuilder {
                    fulfillment: &f,
                    data: b"",
                }
                .build(),
            )
        })
        .collect()
}

fn forward_fulfill(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_core/forward_fulfill");
    for n in [1usize, 64] {
        let (_shared, mut core) = setup();
        let template = packets(n);
        let mut fwd: Vec<Action> = Vec::with_capacity(n);
        let mut out: Vec<Action> = Vec::with_capacity(n);
        let from = ReplyTo {
            account: AccountId(0),
            conn: 1,
            request_id: 1,
        };
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || template.clone(),
                |pkts| {
                    let mut fulfills = Vec::with_capacity(n);
                    for (p, f) in pkts {
                        core.on_prepare(NOW, from, p, &mut fwd);
                        fulfills.push(f);
                    }
                    for (a, f) in fwd.drain(..).zip(fulfills) {
                        if let Action::Forward { to, out_id, packet } = a {
                            drop(packet);
                            core.on_reply(NOW, to, out_id, f, &mut out);
                        }
                    }
                    core.flush(NOW, &mut out);
                    assert_eq!(out.len(), n);
                    black_box(&out);
                    out.clear();
                },
                BatchSize::SmallInput,
            )
        });
        assert_eq!(core.in_flight(), 0);
    }
    g.finish();
}

/// One round: `n` forwards, `n` fulfills, one flush; returns its duration.
fn round(
    core: &mut Core,
    pkts: Vec<(BytesMut, BytesMut)>,
    fwd: &mut Vec<Action>,
    out: &mut Vec<Action>,
) -> Duration {
    let from = ReplyTo {
        account: AccountId(0),
        conn: 1,
        request_id: 1,
    };
    let n = pkts.len();
    let mut fulfills = Vec::with_capacity(n);
    let t = Instant::now();
    for (p, f) in pkts {
        core.on_prepare(NOW, from, p, fwd);
        fulfills.push(f);
    }
    for (a, f) in fwd.drain(..).zip(fulfills.drain(..)) {
        if let Action::Forward { to, out_id, packet } = a {
            drop(packet);
            core.on_reply(NOW, to, out_id, f, out);
        }
    }
    core.flush(NOW, out);
    let d = t.elapsed();
    assert_eq!(out.len(), n);
    out.clear();
    d
}

/// The machine these run on is shared (see docs/benchmarks.md), so beside
/// criterion's means this prints, per batch size, the best and the median
/// of 3000 rounds in ns per packet: the best is a round no other process
/// preempted.
fn min_table(_: &mut Criterion) {
    println!("\nengine core, ns per packet (forward + fulfill + flush share), 3000 rounds");
    println!("| packets per flush | best | median |");
    for n in [1usize, 16, 64] {
        let (_shared, mut core) = setup();
        let template = packets(n);
        let (mut fwd, mut out) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut per: Vec<f64> = (0..3000)
            .map(|_| {
                round(&mut core, template.clone(), &mut fwd, &mut out).as_nanos() as f64 / n as f64
            })
            .collect();
        per.sort_by(f64::total_cmp);
        println!("| {n} | {:.0} | {:.0} |", per[0], per[per.len() / 2]);
    }
}

criterion_group!(benches, forward_fulfill, min_table);
criterion_main!(benches);

//! ns per verified fulfillment for each SHA-256 batch implementation at
//! batch sizes 1, 4, 16, 64, beside `Sha256::digest` and `compress256` on
//! the pre-padded block, all in one run (issue 7). Criterion's
//! `Throughput::Elements` makes it print per-fulfillment rates.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ilpd_codec::sha256::{BatchVerifier, Impl};
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use std::time::Instant;

const SIZES: [usize; 4] = [1, 4, 16, 64];
/// The best-of-N table also shows the sizes where `auto` switches kernels.
const MIN_SIZES: [usize; 10] = [1, 4, 6, 7, 8, 9, 10, 16, 24, 64];

/// Deterministic fulfillments and their conditions; every other condition
/// has one bit flipped so both outcomes are exercised.
fn batch(n: usize) -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
    let f: Vec<[u8; 32]> = (0..n)
        .map(|i| {
            let mut m = [0u8; 32];
            for (j, b) in m.iter_mut().enumerate() {
                *b = (i * 31 + j * 7 + 1) as u8;
            }
            m
        })
        .collect();
    let c = f
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut c: [u8; 32] = Sha256::digest(m).into();
            c[0] ^= (i & 1) as u8;
            c
        })
        .collect();
    (f, c)
}

/// One block: the 32-byte message plus its fixed padding (FIPS 180-4 §5.1.1).
fn padded(m: &[u8; 32]) -> GenericArray<u8, sha2::digest::typenum::U64> {
    let mut b = GenericArray::default();
    b[..32].copy_from_slice(m);
    b[32] = 0x80;
    b[62] = 0x01;
    b
}

const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// One `compress256` of the pre-padded block, digest compared to `c`.
fn compress_verify(blk: &GenericArray<u8, sha2::digest::typenum::U64>, c: &[u8; 32]) -> bool {
    let mut s = IV;
    sha2::compress256(&mut s, core::slice::from_ref(blk));
    let mut d = [0u8; 32];
    for (o, w) in d.chunks_exact_mut(4).zip(s) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    d == *c
}

fn verify(c: &mut Criterion) {
    let mut verifiers: Vec<(&str, BatchVerifier)> = Impl::ALL
        .iter()
        .filter(|i| i.is_supported())
        .filter_map(|i| Some((i.name(), BatchVerifier::new(Some(*i)).ok()?)))
        .collect();
    verifiers.push(("auto", BatchVerifier::auto()));
    eprintln!(
        "sha256 bench: auto = {}, skipped: {:?}",
        BatchVerifier::auto().impl_name(),
        Impl::ALL
            .iter()
            .filter(|i| !i.is_supported())
            .map(Impl::name)
            .collect::<Vec<_>>()
    );

    for n in SIZES {
        let (f, conds) = batch(n);
        let mut g = c.benchmark_group(format!("sha256_verify/{n}"));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("sha2_digest", |b| {
            let mut out = vec![false; n];
            b.iter(|| {
                for ((f, c), o) in black_box(&f).iter().zip(&conds).zip(out.iter_mut()) {
                    *o = Sha256::digest(f).as_slice() == c;
                }
                black_box(&out);
            })
        });
        let blocks: Vec<_> = f.iter().map(padded).collect();
        g.bench_function("compress256", |b| {
            let mut out = vec![false; n];
            b.iter(|| {
                for ((blk, c), o) in black_box(&blocks).iter().zip(&conds).zip(out.iter_mut()) {
                    *o = compress_verify(blk, c);
                }
                black_box(&out);
            })
        });
        for (name, v) in &verifiers {
            g.bench_with_input(BenchmarkId::new("verify", name), &n, |b, _| {
                let mut out = vec![false; n];
                b.iter(|| {
                    v.verify(black_box(&f), black_box(&conds), &mut out);
                    black_box(&out);
                })
            });
        }
        g.finish();
    }
}

/// Best-of-N ns per fulfillment, printed as a markdown table. The machine
/// is shared, so criterion's means include preemption; the minimum over
/// many ~2 µs samples shows what the kernel itself costs.
fn min_table(_: &mut Criterion) {
    fn min_ns(n: usize, mut f: impl FnMut()) -> f64 {
        let reps = (2000 / n).max(1);
        (0..3000)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..reps {
                    f();
                }
                t.elapsed().as_nanos() as f64 / (reps * n) as f64
            })
            .fold(f64::MAX, f64::min)
    }
    let mut verifiers: Vec<(&str, BatchVerifier)> = Impl::ALL
        .iter()
        .filter_map(|i| Some((i.name(), BatchVerifier::new(Some(*i)).ok()?)))
        .collect();
    verifiers.push(("auto", BatchVerifier::auto()));
    let mut head = "| batch | sha2_digest | compress256 |".to_string();
    for (name, _) in &verifiers {
        head += &format!(" {name} |");
    }
    println!("\nmin ns per fulfillment (x = speed-up vs sha2_digest)\n{head}");
    for n in MIN_SIZES {
        let (f, conds) = batch(n);
        let blocks: Vec<_> = f.iter().map(padded).collect();
        let mut out = vec![false; n];
        let d = min_ns(n, || {
            for ((f, c), o) in black_box(&f).iter().zip(&conds).zip(out.iter_mut()) {
                *o = Sha256::digest(f).as_slice() == c;
            }
            black_box(&out);
        });
        let k = min_ns(n, || {
            for ((blk, c), o) in black_box(&blocks).iter().zip(&conds).zip(out.iter_mut()) {
                *o = compress_verify(blk, c);
            }
            black_box(&out);
        });
        let mut line = format!("| {n} | {d:.1} | {k:.1} |");
        for (_, v) in &verifiers {
            let t = min_ns(n, || {
                v.verify(black_box(&f), black_box(&conds), &mut out);
                black_box(&out);
            });
            line += &format!(" {t:.1} ({:.1}x) |", d / t);
        }
        println!("{line}");
    }
}

criterion_group!(benches, verify, min_table);
criterion_main!(benches);

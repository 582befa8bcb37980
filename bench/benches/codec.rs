//! ILPv4 codec hot path: the work a connector does per packet before and
//! after routing. Targets (docs/benchmarks.md "Codec"): Prepare
//! parse+validate ≤ 30 ns, Reject parse ≤ 30 ns, in-place patch ≤ 15 ns.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use ilpd_codec::address;
use ilpd_codec::error_code::ErrorCode;
use ilpd_codec::ilp::{Fulfill, FulfillBuilder, Prepare, PrepareBuilder, Reject, RejectBuilder};
use ilpd_codec::time;
use ilpd_codec::types::Expiry;

/// A typical forwarded Prepare: 32-byte STREAM-sized data would be larger
/// in practice, but data is only bounds-checked, never read, by the parser.
fn prepare() -> BytesMut {
    PrepareBuilder {
        amount: 107,
        expires_at: Expiry(1_514_132_072_279),
        execution_condition: &[0x74; 32],
        destination: b"g.ilpd.bench.receiver.0001",
        data: &[0x5d; 100],
    }
    .build()
}

fn reject() -> BytesMut {
    RejectBuilder {
        code: ErrorCode::F02_UNREACHABLE,
        triggered_by: b"g.ilpd.connector",
        message: b"no route to g.nowhere",
        data: b"",
    }
    .build()
}

fn ilp(c: &mut Criterion) {
    let mut g = c.benchmark_group("ilp");

    let p = prepare();
    g.bench_function("prepare_parse_validate", |b| {
        b.iter(|| {
            let v = Prepare::new_checked(black_box(&p[..])).unwrap();
            black_box((v.amount(), v.expires_at(), v.destination()));
        })
    });

    let mut pm = prepare();
    let mut view = Prepare::new_checked(&mut pm[..]).unwrap();
    let mut n = 0u64;
    g.bench_function("prepare_patch_amount_expiry", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            view.set_amount(black_box(n));
            view.set_expires_at(black_box(Expiry(1_514_132_072_279 + n)));
        })
    });
    black_box(view.amount());

    let mut out = BytesMut::with_capacity(64 * 1024);
    let fb = FulfillBuilder {
        fulfillment: &[0xc3; 32],
        data: &[0x67; 32],
    };
    g.bench_function("fulfill_build", |b| {
        b.iter(|| {
            out.clear();
            black_box(&fb).write_to(&mut out);
            black_box(out.len());
        })
    });
    let f = fb.build();
    g.bench_function("fulfill_parse", |b| {
        b.iter(|| {
            let v = Fulfill::new_checked(black_box(&f[..])).unwrap();
            black_box((v.fulfillment(), v.data()));
        })
    });

    let r = reject();
    g.bench_function("reject_build", |b| {
        let rb = RejectBuilder {
            code: ErrorCode::F02_UNREACHABLE,
            triggered_by: b"g.ilpd.connector",
            message: b"no route to g.nowhere",
            data: b"",
        };
        b.iter(|| {
            out.clear();
            black_box(&rb).write_to(&mut out);
            black_box(out.len());
        })
    });
    g.bench_function("reject_parse", |b| {
        b.iter(|| {
            let v = Reject::new_checked(black_box(&r[..])).unwrap();
            black_box((v.code(), v.triggered_by(), v.message(), v.data()));
        })
    });

    g.bench_function("address_prefix_match", |b| {
        b.iter(|| {
            black_box(address::prefix_matches(
                black_box(b"g.ilpd.bench"),
                black_box(b"g.ilpd.bench.receiver.0001"),
            ))
        })
    });
    g.bench_function("address_validate", |b| {
        b.iter(|| black_box(address::validate(black_box(b"g.ilpd.bench.receiver.0001"))))
    });
    g.bench_function("ilp_timestamp_parse", |b| {
        b.iter(|| black_box(time::parse_ilp_timestamp(black_box(b"20171224161432279"))))
    });
    g.bench_function("ilp_timestamp_format", |b| {
        b.iter(|| black_box(time::format_ilp_timestamp(black_box(1_514_132_072_279))))
    });
    g.finish();
}

criterion_group!(benches, ilp);
criterion_main!(benches);

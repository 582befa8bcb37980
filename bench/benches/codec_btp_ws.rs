//! BTP/2.0 and WebSocket hot path: what a connector does per packet
//! between reading socket bytes and holding the ILP packet (docs/benchmarks.md
//! "BTP and WebSocket").

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use ilpd_codec::btp::{self, Btp};
use ilpd_codec::ilp::PrepareBuilder;
use ilpd_codec::types::Expiry;
use ilpd_codec::ws::{self, Decoder, Message, Opcode, Role};

/// A ~100-byte Prepare, as a BTP Message (RFC 23 "Message").
fn btp_message() -> Vec<u8> {
    let prepare = PrepareBuilder {
        amount: 107,
        expires_at: Expiry(1_514_132_072_279),
        execution_condition: &[0x74; 32],
        destination: b"g.ilpd.bench.receiver.0001",
        data: &[0x5d; 14],
    }
    .build();
    let mut out = Vec::new();
    btp::write_ilp_message(&mut out, 0x1234_5678, &prepare);
    out
}

fn btp_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("btp");
    let msg = btp_message();
    g.bench_function("parse_ilp_range", |b| {
        b.iter(|| {
            let p = Btp::new_checked(black_box(&msg[..])).unwrap();
            black_box((p.request_id(), p.ilp_range()))
        })
    });
    let prepare = msg[Btp::new_checked(&msg[..]).unwrap().ilp_range().unwrap()].to_vec();
    let mut out = Vec::with_capacity(btp::ilp_response_len(prepare.len()));
    g.bench_function("write_ilp_response", |b| {
        b.iter(|| {
            out.clear();
            btp::write_ilp_response(&mut out, black_box(7), black_box(&prepare));
            black_box(out.len())
        })
    });
    g.finish();
}

fn ws_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws");
    let payload = [0x5a_u8; 200];
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = Vec::new();
    ws::write_frame(&mut frame, Opcode::Binary, &payload, Some(key));
    g.bench_function("header_parse_unmask_200", |b| {
        b.iter(|| {
            let h = ws::parse_frame_header(black_box(&frame)).unwrap().unwrap();
            // Unmasking twice restores the bytes; one call per iteration.
            ws::unmask(&mut frame[h.header_len..], h.mask.unwrap());
            black_box(frame[h.header_len])
        })
    });

    // Steady state of a connection: many frames in one shared read buffer.
    g.bench_function("decoder_decode_binary_200", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            let mut d = Decoder::new(Role::Server, 1 << 16);
            while left > 0 {
                let n = left.min(4096);
                left -= n;
                let mut buf = BytesMut::with_capacity(n as usize * frame.len());
                for _ in 0..n {
                    buf.extend_from_slice(&frame);
                }
                let start = Instant::now();
                for _ in 0..n {
                    match d.decode(&mut buf) {
                        Ok(Some(Message::Binary(m))) => {
                            black_box(&m);
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                total += start.elapsed();
            }
            total
        })
    });

    g.bench_function("accept_key", |b| {
        b.iter(|| ws::accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
    g.finish();
}

criterion_group!(benches, btp_bench, ws_bench);
criterion_main!(benches);

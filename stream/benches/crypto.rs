//! STREAM receiver crypto per packet: RustCrypto (`aes-gcm` + `hmac` over
//! `sha2`) against `ring`, on the same ~100-byte STREAM packet.
//!
//! Each iteration is what a receiver does for one Prepare of a known
//! connection: AES-256-GCM open of `data` (IV ‖ tag ‖ ciphertext) and the
//! fulfillment HMAC over the whole encrypted `data` (RFC 29 "Encryption",
//! "Fulfillment Generation"). `cached` keeps the per-connection keys (AES key
//! schedule, keyed HMAC state) as the receiver does; `cold` derives them
//! from the shared secret first, as for a connection's first packet.
//! `seal_reply` is the encryption of a ~60-byte reply.
//!
//! Run (docs/benchmarks.md "STREAM crypto"):
//! `flock /tmp/ilpd-bench.lock cargo bench -p ilpd-stream --bench crypto -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use criterion::{criterion_group, criterion_main, Criterion};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET: [u8; 32] = [7; 32];
const IV: [u8; 12] = [9; 12];

/// A 100-byte plaintext shaped like a money packet: header, StreamMoney,
/// ConnectionNewAddress, zero padding.
fn plaintext() -> Vec<u8> {
    let mut p = vec![1u8, 12, 1, 5, 2, 0x03, 0xe8, 2];
    p.extend_from_slice(&[0x11, 4, 1, 1, 1, 1]);
    let addr = b"test.ilpd.sender.abcdefghijklmnopqrstuvwxyz0123456789";
    p.push(0x02);
    p.push(addr.len() as u8 + 1);
    p.push(addr.len() as u8);
    p.extend_from_slice(addr);
    p.resize(100, 0);
    p
}

fn hmac256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

struct RustCryptoKeys {
    aead: Aes256Gcm,
    fulfillment: Hmac<Sha256>,
}

impl RustCryptoKeys {
    fn new(secret: &[u8]) -> Self {
        let ek = hmac256(secret, b"ilp_stream_encryption");
        let fk = hmac256(secret, b"ilp_stream_fulfillment");
        RustCryptoKeys {
            aead: Aes256Gcm::new((&ek).into()),
            fulfillment: <Hmac<Sha256> as Mac>::new_from_slice(&fk).expect("any key length"),
        }
    }

    fn seal(&self, iv: [u8; 12], plain: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&iv);
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(plain);
        let tag = self
            .aead
            .encrypt_in_place_detached(Nonce::from_slice(&iv), b"", &mut out[28..])
            .expect("in bounds");
        out[12..28].copy_from_slice(&tag);
    }

    fn open_and_fulfill(&self, data: &[u8], buf: &mut Vec<u8>) -> Option<[u8; 32]> {
        buf.clear();
        buf.extend_from_slice(&data[28..]);
        self.aead
            .decrypt_in_place_detached(
                Nonce::from_slice(&data[..12]),
                b"",
                buf,
                Tag::from_slice(&data[12..28]),
            )
            .ok()?;
        let mut m = self.fulfillment.clone();
        m.update(data);
        Some(m.finalize().into_bytes().into())
    }
}

struct RingKeys {
    aead: ring::aead::LessSafeKey,
    fulfillment: ring::hmac::Key,
}

impl RingKeys {
    fn new(secret: &[u8]) -> Self {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let ek = ring::hmac::sign(&k, b"ilp_stream_encryption");
        let fk = ring::hmac::sign(&k, b"ilp_stream_fulfillment");
        let unbound =
            ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, ek.as_ref()).expect("32 bytes");
        RingKeys {
            aead: ring::aead::LessSafeKey::new(unbound),
            fulfillment: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, fk.as_ref()),
        }
    }

    fn seal(&self, iv: [u8; 12], plain: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&iv);
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(plain);
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(iv),
                ring::aead::Aad::empty(),
                &mut out[28..],
            )
            .expect("in bounds");
        out[12..28].copy_from_slice(tag.as_ref());
    }

    fn open_and_fulfill(&self, data: &[u8], buf: &mut Vec<u8>) -> Option<[u8; 32]> {
        buf.clear();
        buf.extend_from_slice(&data[28..]);
        let iv: [u8; 12] = data[..12].try_into().ok()?;
        let tag = ring::aead::Tag::try_from(&data[12..28]).ok()?;
        self.aead
            .open_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(iv),
                ring::aead::Aad::empty(),
                tag,
                buf,
                0..,
            )
            .ok()?;
        let f = ring::hmac::sign(&self.fulfillment, data);
        f.as_ref().try_into().ok()
    }
}

fn bench(c: &mut Criterion) {
    let plain = plaintext();
    let rc = RustCryptoKeys::new(&SECRET);
    let rg = RingKeys::new(&SECRET);
    let mut data = Vec::new();
    rc.seal(IV, &plain, &mut data);
    // Both libraries must agree before their speed means anything.
    let mut check = Vec::new();
    rg.seal(IV, &plain, &mut check);
    assert_eq!(data, check, "ring and aes-gcm disagree");
    let mut buf = Vec::with_capacity(256);
    assert_eq!(
        rc.open_and_fulfill(&data, &mut buf),
        rg.open_and_fulfill(&data, &mut buf)
    );
    assert!(rc.open_and_fulfill(&data, &mut buf).is_some());
    assert_eq!(&buf[..], &plain[..]);

    let mut g = c.benchmark_group("stream_open_and_fulfill_100B");
    g.bench_function("aes-gcm+hmac/cached", |b| {
        b.iter(|| black_box(rc.open_and_fulfill(black_box(&data), &mut buf)))
    });
    g.bench_function("ring/cached", |b| {
        b.iter(|| black_box(rg.open_and_fulfill(black_box(&data), &mut buf)))
    });
    // ring's AES-GCM with RustCrypto's HMAC (sha2), the faster half of each.
    g.bench_function("ring-aead+hmac/cached", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&data[28..]);
            let iv: [u8; 12] = data[..12].try_into().expect("12");
            let tag = ring::aead::Tag::try_from(&data[12..28]).expect("16");
            let ok = rg
                .aead
                .open_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(iv),
                    ring::aead::Aad::empty(),
                    tag,
                    &mut buf,
                    0..,
                )
                .is_ok();
            let mut m = rc.fulfillment.clone();
            m.update(black_box(&data));
            black_box((ok, m.finalize().into_bytes()))
        })
    });
    g.bench_function("aes-gcm+hmac/cold", |b| {
        b.iter(|| {
            let k = RustCryptoKeys::new(black_box(&SECRET));
            black_box(k.open_and_fulfill(black_box(&data), &mut buf))
        })
    });
    g.bench_function("ring/cold", |b| {
        b.iter(|| {
            let k = RingKeys::new(black_box(&SECRET));
            black_box(k.open_and_fulfill(black_box(&data), &mut buf))
        })
    });
    g.finish();

    // The two halves apart, to see where each library spends its time.
    let mut g = c.benchmark_group("stream_parts_100B");
    g.bench_function("aes-gcm/open", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&data[28..]);
            black_box(rc.aead.decrypt_in_place_detached(
                Nonce::from_slice(&data[..12]),
                b"",
                &mut buf,
                Tag::from_slice(&data[12..28]),
            ))
        })
    });
    g.bench_function("ring/open", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&data[28..]);
            let iv: [u8; 12] = data[..12].try_into().expect("12");
            let tag = ring::aead::Tag::try_from(&data[12..28]).expect("16");
            black_box(
                rg.aead
                    .open_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(iv),
                        ring::aead::Aad::empty(),
                        tag,
                        &mut buf,
                        0..,
                    )
                    .is_ok(),
            )
        })
    });
    g.bench_function("hmac-sha2/fulfillment", |b| {
        b.iter(|| {
            let mut m = rc.fulfillment.clone();
            m.update(black_box(&data));
            black_box(m.finalize().into_bytes())
        })
    });
    g.bench_function("ring/fulfillment", |b| {
        b.iter(|| black_box(ring::hmac::sign(&rg.fulfillment, black_box(&data))))
    });
    g.finish();

    let reply = &plain[..60];
    let mut out = Vec::with_capacity(256);
    let mut g = c.benchmark_group("stream_seal_reply_60B");
    g.bench_function("aes-gcm", |b| {
        b.iter(|| rc.seal(IV, black_box(reply), &mut out))
    });
    g.bench_function("ring", |b| {
        b.iter(|| rg.seal(IV, black_box(reply), &mut out))
    });
    g.finish();
}

/// The whole receiver path for one Prepare of a known connection with this
/// crate's choice: decrypt, parse, fulfillment, condition check, credit,
/// reply frames, reply encryption.
fn receiver(c: &mut Criterion) {
    use ilpd_codec::{Expiry, PacketType};
    use ilpd_stream::packet::{Frame, PacketBuilder};
    use ilpd_stream::{
        ConnectionKeys, IncomingPrepare, OsRandom, Receiver, ReceiverConfig, ServerSecret,
    };

    let mut rng = OsRandom::new();
    let mut r = Receiver::new(
        ReceiverConfig::new("test.ilpd.bob", "XYZ", 9),
        ServerSecret::from_bytes(SECRET),
    );
    let d = r
        .server_secret()
        .generate_address_and_secret(&mut rng, "test.ilpd.bob", b"", None)
        .expect("random");
    let keys = ConnectionKeys::new(&d.shared_secret);
    let frames = [Frame::StreamMoney {
        stream_id: 1,
        shares: 1,
    }];
    let plain = PacketBuilder {
        packet_type: PacketType::Prepare,
        sequence: 7,
        prepare_amount: 900,
        frames: &frames,
    }
    .to_vec();
    let mut data = Vec::new();
    keys.encrypt(&mut rng, &plain, &mut data).expect("random");
    let cond = keys.condition(&data).0;
    let p = IncomingPrepare {
        destination: d.destination_account.as_bytes(),
        amount: 1000,
        expires_at: Expiry(u64::MAX),
        execution_condition: &cond,
        data: &data,
    };
    let mut reply = Vec::with_capacity(256);
    assert_eq!(r.handle_prepare(1, &p, &mut reply).credited(), 1000);
    let mut g = c.benchmark_group("stream_receiver");
    g.bench_function("handle_prepare/known_connection", |b| {
        b.iter(|| black_box(r.handle_prepare(1, black_box(&p), &mut reply)))
    });
    g.finish();
}

criterion_group!(benches, bench, receiver);
criterion_main!(benches);

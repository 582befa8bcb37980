//! Every SHA-256 batch implementation this CPU supports must agree with
//! `sha2::Sha256::digest` (an independent implementation) on known vectors
//! and on random batches of every size 1..=64.

use ilpd_codec::sha256::{parse_choice, BatchVerifier, Impl};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

/// `(message, SHA-256)` pairs for 32-byte messages. The first is the ILP
/// peer-protocol condition (RFC 31 "Packet"); the others were
/// computed with Python's `hashlib`.
const VECTORS: &[(&str, &str)] = &[
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925",
    ),
    (
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd",
    ),
    (
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "af9613760f72635fbdb44a5a0a63c39f12af30f950a6ee5c971be188e89c4051",
    ),
    (
        "6162636465666768696a6b6c6d6e6f707172737475767778797a303132333435",
        "653bb1245e828fcda4fa53fcd5a3def5bd7654e651f54b4132b73d74e64435c4",
    ),
];

fn arr(h: &str) -> [u8; 32] {
    let v = hex::decode(h).expect("test vector hex");
    v.try_into().expect("test vector is 32 bytes")
}

fn digest(m: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(m).into()
}

/// Every forced verifier the CPU supports, plus `auto`. Prints which ran.
fn verifiers() -> Vec<BatchVerifier> {
    let v = quiet_verifiers();
    let names: Vec<_> = v.iter().map(|v| v.impl_name()).collect();
    eprintln!("sha256_batch: running {names:?}");
    v
}

fn quiet_verifiers() -> Vec<BatchVerifier> {
    let mut v = vec![BatchVerifier::auto()];
    for i in Impl::ALL {
        if i.is_supported() {
            v.push(BatchVerifier::new(Some(i)).expect("supported impl constructs"));
        } else {
            eprintln!(
                "sha256_batch: {} not supported on this CPU, skipped",
                i.name()
            );
            assert!(BatchVerifier::new(Some(i)).is_err());
        }
    }
    let names: Vec<_> = v.iter().map(|v| v.impl_name()).collect();
    eprintln!("sha256_batch: running {names:?}");
    v
}

#[test]
fn portable_is_always_supported_and_auto_is_best() {
    assert!(Impl::Portable.is_supported());
    assert!(Impl::detect_best().is_supported());
    assert!(BatchVerifier::new(None).is_ok());
}

#[test]
fn parse_choice_accepts_names_and_auto() {
    assert_eq!(parse_choice("auto"), Ok(None));
    assert_eq!(parse_choice("portable"), Ok(Some(Impl::Portable)));
    assert_eq!(parse_choice("sha-ni"), Ok(Some(Impl::ShaNi)));
    assert_eq!(parse_choice("avx2"), Ok(Some(Impl::Avx2)));
    assert_eq!(parse_choice("avx512"), Ok(Some(Impl::Avx512)));
    assert!(parse_choice("md5").is_err());
}

#[test]
fn known_vectors_every_impl_every_position() {
    for v in verifiers() {
        for (m, h) in VECTORS {
            let (m, h) = (arr(m), arr(h));
            assert_eq!(digest(&m), h, "sha2 disagrees with the vector");
            assert!(v.verify_one(&m, &h), "{}", v.impl_name());
            let mut bad = h;
            bad[31] ^= 1;
            assert!(!v.verify_one(&m, &bad), "{}", v.impl_name());
            // The vector at every position of a 33-element batch (covers
            // a full 16-chunk, an 8-chunk and a remainder on every kernel).
            for pos in 0..33 {
                let mut f = [[7u8; 32]; 33];
                f[pos] = m;
                let c: Vec<[u8; 32]> = f.iter().map(digest).collect();
                let mut c2 = c.clone();
                c2[pos] = bad;
                let mut out = [false; 33];
                assert_eq!(v.verify(&f, &c, &mut out), 33);
                assert!(out.iter().all(|&b| b), "{}", v.impl_name());
                v.verify(&f, &c2, &mut out);
                for (i, &o) in out.iter().enumerate() {
                    assert_eq!(o, i != pos, "{} pos {pos} i {i}", v.impl_name());
                }
                let mut hs = [[0u8; 32]; 33];
                assert_eq!(v.hash(&f, &mut hs), 33);
                assert_eq!(hs[pos], h, "{}", v.impl_name());
            }
        }
    }
}

#[test]
fn every_batch_size_1_to_64_every_impl() {
    let vs = verifiers();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*: deterministic filler, independent of the code tested.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for n in 1..=64usize {
        let f: Vec<[u8; 32]> = (0..n)
            .map(|_| {
                let mut m = [0u8; 32];
                for ch in m.chunks_exact_mut(8) {
                    ch.copy_from_slice(&next().to_le_bytes());
                }
                m
            })
            .collect();
        let mut c: Vec<[u8; 32]> = f.iter().map(digest).collect();
        let mut want = vec![true; n];
        for i in 0..n {
            match next() % 3 {
                0 => {}
                1 => {
                    let bit = (next() % 256) as usize;
                    c[i][bit / 8] ^= 1 << (bit % 8);
                    want[i] = false;
                }
                _ => {
                    c[i] = digest(&[i as u8; 32]);
                    want[i] = c[i] == digest(&f[i]);
                }
            }
        }
        for v in &vs {
            let mut out = vec![!want[0]; n];
            assert_eq!(v.verify(&f, &c, &mut out), n);
            assert_eq!(out, want, "{} n={n}", v.impl_name());
            let mut h = vec![[0u8; 32]; n];
            v.hash(&f, &mut h);
            for i in 0..n {
                assert_eq!(h[i], digest(&f[i]), "{} n={n} i={i}", v.impl_name());
            }
        }
    }
}

#[test]
fn mismatched_lengths_do_not_panic() {
    for v in verifiers() {
        let f = [[3u8; 32]; 20];
        let c: Vec<[u8; 32]> = f.iter().map(digest).collect();
        let mut out = [false; 20];
        assert_eq!(v.verify(&f[..17], &c, &mut out), 17);
        assert!(out[..17].iter().all(|&b| b));
        assert!(!out[17]);
        assert_eq!(v.verify(&f, &c[..2], &mut out[..5]), 2);
        assert_eq!(v.verify(&[], &c, &mut out), 0);
        let mut h = [[0u8; 32]; 3];
        assert_eq!(v.hash(&f, &mut h), 3);
        assert_eq!(h[2], c[2]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random batches of 1..=64 with a random mix of matching conditions,
    /// conditions one bit off, and unrelated conditions.
    #[test]
    fn random_batches_agree_with_sha2(
        batch in prop::collection::vec((any::<[u8; 32]>(), 0u8..3, 0usize..256, any::<[u8; 32]>()), 1..=64)
    ) {
        let f: Vec<[u8; 32]> = batch.iter().map(|b| b.0).collect();
        let c: Vec<[u8; 32]> = batch
            .iter()
            .map(|(m, kind, bit, other)| {
                let mut c = digest(m);
                match kind {
                    0 => {}
                    1 => c[bit / 8] ^= 1 << (bit % 8),
                    _ => c = *other,
                }
                c
            })
            .collect();
        let want: Vec<bool> = f.iter().zip(&c).map(|(f, c)| digest(f) == *c).collect();
        for v in quiet_verifiers() {
            let mut out = vec![false; f.len()];
            v.verify(&f, &c, &mut out);
            prop_assert_eq!(&out, &want, "{}", v.impl_name());
            let mut h = vec![[0u8; 32]; f.len()];
            v.hash(&f, &mut h);
            let hw: Vec<[u8; 32]> = f.iter().map(digest).collect();
            prop_assert_eq!(h, hw, "{}", v.impl_name());
        }
    }
}

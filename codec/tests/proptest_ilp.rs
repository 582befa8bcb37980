//! Property tests for the ILPv4 core: builder → new_checked → accessors →
//! builder gives the same bytes; hostile input never panics; in-place
//! patches touch only their bytes.

use ilpd_codec::address;
use ilpd_codec::error_code::ErrorCode;
use ilpd_codec::ilp::{
    Fulfill, FulfillBuilder, Packet, Prepare, PrepareBuilder, Reject, RejectBuilder,
};
use ilpd_codec::time::{self, MAX_TIMESTAMP_MS};
use ilpd_codec::types::{AmountTooLarge, Expiry};
use proptest::prelude::*;

const ADDRESS_RE: &str =
    "(g|private|example|peer|self|test[1-3]?|local)(\\.[a-zA-Z0-9_~-]{1,20}){1,6}";

fn data() -> impl Strategy<Value = Vec<u8>> {
    // Lengths around the short/long length-determinant boundaries.
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..140),
        3 => proptest::collection::vec(any::<u8>(), 250..300),
        1 => proptest::collection::vec(any::<u8>(), 32_760..=32_767),
    ]
}

fn code() -> impl Strategy<Value = ErrorCode> {
    (
        prop_oneof![Just(b'F'), Just(b'T'), Just(b'R')],
        0u8..10,
        0u8..10,
    )
        .prop_map(|(c, a, b)| ErrorCode::from_bytes([c, b'0' + a, b'0' + b]).unwrap())
}

fn prepare_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u64>(),
        0..=MAX_TIMESTAMP_MS,
        any::<[u8; 32]>(),
        ADDRESS_RE,
        data(),
    )
        .prop_map(|(amount, ms, cond, dest, data)| {
            PrepareBuilder {
                amount,
                expires_at: Expiry(ms),
                execution_condition: &cond,
                destination: dest.as_bytes(),
                data: &data,
            }
            .build()
            .to_vec()
        })
}

/// Valid packets of all three types, for mutation.
fn any_packet() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prepare_bytes(),
        (
            any::<[u8; 32]>(),
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(f, d)| FulfillBuilder {
                fulfillment: &f,
                data: &d
            }
            .build()
            .to_vec()),
        (
            code(),
            ADDRESS_RE,
            ".{0,50}",
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(c, by, m, d)| RejectBuilder {
                code: c,
                triggered_by: by.as_bytes(),
                message: m.as_bytes(),
                data: &d
            }
            .build()
            .to_vec()),
    ]
}

/// Every decoder this file covers; must return, never panic.
fn decode_everything(b: &[u8]) {
    if let Ok(p) = Packet::new_checked(b) {
        match p {
            Packet::Prepare(p) => {
                let _ = (
                    p.amount(),
                    p.expires_at(),
                    p.destination_str(),
                    p.data(),
                    p.trailing(),
                );
                let _ = p.execution_condition();
            }
            Packet::Fulfill(f) => {
                let _ = (f.fulfillment(), f.data(), f.trailing());
            }
            Packet::Reject(r) => {
                let _ = (r.code().name(), r.triggered_by(), r.message(), r.data());
            }
        }
    }
    let _ = address::validate(b);
    let _ = time::parse_ilp_timestamp(b);
    let _ = time::parse_generalized_time(b);
    let _ = AmountTooLarge::decode(b);
    let _ = Prepare::new_checked(b);
    let _ = Fulfill::new_checked(b);
    let _ = Reject::new_checked(b);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn prepare_round_trip(amount: u64, ms in 0..=MAX_TIMESTAMP_MS, cond: [u8; 32],
                          dest in ADDRESS_RE, data in data()) {
        let b = PrepareBuilder {
            amount, expires_at: Expiry(ms), execution_condition: &cond,
            destination: dest.as_bytes(), data: &data,
        };
        let bytes = b.build();
        prop_assert_eq!(bytes.len(), b.encoded_len());
        let p = Prepare::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(p.amount(), amount);
        prop_assert_eq!(p.expires_at(), Expiry(ms));
        prop_assert_eq!(p.execution_condition(), &cond);
        prop_assert_eq!(p.destination_str(), dest.as_str());
        prop_assert_eq!(p.data(), &data[..]);
        let again = PrepareBuilder {
            amount: p.amount(), expires_at: p.expires_at(),
            execution_condition: p.execution_condition(),
            destination: p.destination(), data: p.data(),
        }.build();
        prop_assert_eq!(&again[..], &bytes[..]);
    }

    #[test]
    fn fulfill_round_trip(f: [u8; 32], data in data()) {
        let b = FulfillBuilder { fulfillment: &f, data: &data };
        let bytes = b.build();
        prop_assert_eq!(bytes.len(), b.encoded_len());
        let v = Fulfill::new_checked(bytes.clone().freeze()).unwrap();
        prop_assert_eq!(v.fulfillment(), &f);
        prop_assert_eq!(v.data(), &data[..]);
        let again = FulfillBuilder { fulfillment: v.fulfillment(), data: v.data() }.build();
        prop_assert_eq!(&again[..], &bytes[..]);
    }

    #[test]
    fn reject_round_trip(c in code(), by in prop_oneof![Just(String::new()), ADDRESS_RE.prop_map(|s| s)],
                         msg in ".{0,200}", data in data()) {
        let b = RejectBuilder { code: c, triggered_by: by.as_bytes(), message: msg.as_bytes(), data: &data };
        let bytes = b.build();
        prop_assert_eq!(bytes.len(), b.encoded_len());
        let v = Reject::new_checked(bytes.to_vec()).unwrap();
        prop_assert_eq!(v.code(), c);
        prop_assert_eq!(v.triggered_by(), by.as_bytes());
        prop_assert_eq!(v.message(), msg.as_bytes());
        prop_assert_eq!(v.data(), &data[..]);
        let again = RejectBuilder {
            code: v.code(), triggered_by: v.triggered_by(), message: v.message(), data: v.data(),
        }.build();
        prop_assert_eq!(&again[..], &bytes[..]);
    }

    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        decode_everything(&b);
    }

    /// Random content behind a well-formed header reaches the field parsers.
    #[test]
    fn random_content_never_panics(ty in 12u8..=14, content in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut b = vec![ty];
        ilpd_codec::oer::put_length(&mut b, content.len());
        b.extend_from_slice(&content);
        decode_everything(&b);
    }

    #[test]
    fn mutated_packets_never_panic(p in any_packet(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
                                   cut in any::<prop::sample::Index>(), truncate: bool) {
        let mut b = p;
        for (i, v) in edits {
            let at = i.index(b.len());
            b[at] = v;
        }
        if truncate {
            b.truncate(cut.index(b.len() + 1));
        }
        decode_everything(&b);
    }

    #[test]
    fn timestamp_round_trip(ms in 0..=MAX_TIMESTAMP_MS) {
        let t = time::format_ilp_timestamp(ms);
        prop_assert_eq!(time::parse_ilp_timestamp(&t), Ok(ms));
        let g = time::format_generalized_time(ms);
        prop_assert_eq!(time::parse_generalized_time(&g), Ok(ms));
    }

    #[test]
    fn patch_in_place(p in prepare_bytes(), amount: u64, ms in 0..=MAX_TIMESTAMP_MS) {
        let mut buf = p.clone();
        let mut v = Prepare::new_checked(&mut buf[..]).unwrap();
        v.set_amount(amount);
        v.set_expires_at(Expiry(ms));
        prop_assert_eq!(v.amount(), amount);
        prop_assert_eq!(v.expires_at(), Expiry(ms));
        let re = Prepare::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(re.amount(), amount);
        prop_assert_eq!(re.expires_at(), Expiry(ms));
        // Only content bytes 0..25 may differ.
        let start = p.len() - ilpd_codec::oer::read_length(&p[1..]).unwrap().0;
        prop_assert_eq!(buf.len(), p.len());
        prop_assert_eq!(&buf[..start], &p[..start]);
        prop_assert_eq!(&buf[start + 25..], &p[start + 25..]);
    }
}

#[test]
fn clamped_expiry_is_what_is_cached() {
    let mut b = PrepareBuilder {
        amount: 1,
        expires_at: Expiry(0),
        execution_condition: &[0; 32],
        destination: b"g.x",
        data: b"",
    }
    .build();
    let mut p = Prepare::new_checked(&mut b).unwrap();
    p.set_expires_at(Expiry(u64::MAX));
    assert_eq!(p.expires_at(), Expiry(MAX_TIMESTAMP_MS));
    assert_eq!(p.expires_at_raw(), b"99991231235959999");
}

//! Every OER / timestamp / address / ILP packet / F08 vector from
//! `tests/data/vectors.json` (docs/design.md "Test vectors"): decode to the listed fields and
//! re-encode byte for byte. Counts per kind are compared with the file so
//! a silently skipped vector fails the test.

use std::collections::BTreeMap;

use bytes::BytesMut;
use ilpd_codec::address::{self, Address};
use ilpd_codec::error_code::ErrorCode;
use ilpd_codec::ilp::{
    Fulfill, FulfillBuilder, Packet, Prepare, PrepareBuilder, Reject, RejectBuilder,
};
use ilpd_codec::oer::{self, Reader};
use ilpd_codec::time::{
    format_generalized_time, format_ilp_timestamp, parse_generalized_time, parse_ilp_timestamp,
};
use ilpd_codec::types::AmountTooLarge;
use ilpd_codec::DecodeError;
use serde_json::Value;

const KINDS: [&str; 10] = [
    "oer_uint",
    "oer_int",
    "oer_length",
    "ilp_timestamp",
    "generalized_time",
    "ilp_address",
    "ilp_prepare",
    "ilp_fulfill",
    "ilp_reject",
    "f08_data",
];

fn load() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/vectors.json");
    let text = std::fs::read_to_string(path).expect("read vectors.json");
    match serde_json::from_str(&text).expect("parse vectors.json") {
        Value::Array(v) => v,
        _ => panic!("vectors.json is not an array"),
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("field {k} missing in {v}"))
}

fn unhex(v: &Value, k: &str) -> Vec<u8> {
    hex::decode(s(v, k)).expect("hex")
}

#[allow(clippy::manual_is_multiple_of)] // keep the 1.80 MSRV
fn is_leap(y: u64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// Independent slow reference: `YYYY-MM-DDTHH:MM:SS.fffZ` to ms since the
/// epoch by counting days year by year and month by month.
fn iso_to_ms(iso: &str) -> u64 {
    let n = |a: usize, b: usize| iso[a..b].parse::<u64>().expect("iso digits");
    let (y, mo, d) = (n(0, 4), n(5, 7), n(8, 10));
    let (h, mi, sec, ms) = (n(11, 13), n(14, 16), n(17, 19), n(20, 23));
    assert_eq!(&iso[23..], "Z");
    let mut days = 0;
    for yy in 1970..y {
        days += if is_leap(yy) { 366 } else { 365 };
    }
    let months = [
        31,
        if is_leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += months[..(mo as usize - 1)].iter().sum::<u64>();
    days += d - 1;
    (((days * 24 + h) * 60 + mi) * 60 + sec) * 1000 + ms
}

/// `YYYYMMDDHHmmSSfff` to ISO text, to feed [`iso_to_ms`].
fn digits_to_iso(t: &str) -> String {
    format!(
        "{}-{}-{}T{}:{}:{}.{}Z",
        &t[0..4],
        &t[4..6],
        &t[6..8],
        &t[8..10],
        &t[10..12],
        &t[12..14],
        &t[14..17]
    )
}

fn check_uint(v: &Value) {
    let b = unhex(v, "hex");
    let want = v["decoded"]["value"].as_u64().expect("u64 value");
    let mut r = Reader::new(&b);
    let got = match b.len() {
        1 => r.read_u8().unwrap() as u64,
        2 => r.read_u16().unwrap() as u64,
        4 => r.read_u32().unwrap() as u64,
        8 => r.read_u64().unwrap(),
        n => panic!("unexpected uint width {n}"),
    };
    assert_eq!(got, want, "{}", s(v, "name"));
    assert_eq!(r.remaining(), 0);
    assert_eq!(
        &want.to_be_bytes()[8 - b.len()..],
        &b[..],
        "re-encode {}",
        s(v, "name")
    );
}

fn check_int(v: &Value) {
    let b = unhex(v, "hex");
    let want = v["decoded"]["value"].as_i64().expect("i64 value");
    let got = match b.len() {
        1 => b[0] as i8 as i64,
        2 => i16::from_be_bytes([b[0], b[1]]) as i64,
        4 => i32::from_be_bytes(b[..].try_into().unwrap()) as i64,
        8 => Reader::new(&b).read_i64().unwrap(),
        n => panic!("unexpected int width {n}"),
    };
    assert_eq!(got, want, "{}", s(v, "name"));
    assert_eq!(
        &want.to_be_bytes()[8 - b.len()..],
        &b[..],
        "re-encode {}",
        s(v, "name")
    );
}

fn check_length(v: &Value) {
    let b = unhex(v, "hex");
    let want = v["decoded"]["value"].as_u64().expect("length value");
    let (len, used) = oer::read_length(&b).unwrap();
    assert_eq!(len as u64, want, "{}", s(v, "name"));
    assert_eq!(used, b.len());
    assert_eq!(oer::length_prefix_len(len), b.len());
    let mut out = Vec::new();
    oer::put_length(&mut out, len);
    assert_eq!(out, b, "re-encode {}", s(v, "name"));
}

fn check_ilp_timestamp(v: &Value) {
    let b = unhex(v, "hex");
    let text = s(&v["decoded"], "text");
    assert_eq!(b, text.as_bytes());
    let ms = parse_ilp_timestamp(&b).unwrap();
    assert_eq!(ms, iso_to_ms(&digits_to_iso(text)), "{}", s(v, "name"));
    assert_eq!(
        &format_ilp_timestamp(ms)[..],
        &b[..],
        "re-encode {}",
        s(v, "name")
    );
}

/// RFC 30's canonical GeneralizedTime drops a zero fraction and trailing
/// zeros; ours always writes `.fff` like btp-packet. Trimming ours must
/// give the vector's bytes.
fn rfc30_canonical(ours: &[u8; 19]) -> Vec<u8> {
    let mut t = ours[..18].to_vec();
    while t.last() == Some(&b'0') {
        t.pop();
    }
    if t.last() == Some(&b'.') {
        t.pop();
    }
    t.push(b'Z');
    t
}

fn check_generalized_time(v: &Value) {
    let b = unhex(v, "hex");
    let mut r = Reader::new(&b);
    let text = r.read_var_octets().unwrap();
    assert_eq!(r.remaining(), 0);
    let ms = parse_generalized_time(text).unwrap();
    assert_eq!(ms, iso_to_ms(s(&v["decoded"], "iso")), "{}", s(v, "name"));
    let ours = format_generalized_time(ms);
    assert_eq!(parse_generalized_time(&ours), Ok(ms));
    let canon = rfc30_canonical(&ours);
    let mut out = Vec::new();
    oer::put_var_octets(&mut out, &canon);
    assert_eq!(out, b, "re-encode (RFC 30 form) {}", s(v, "name"));
}

fn check_address(v: &Value) {
    let b = unhex(v, "hex");
    let mut r = Reader::new(&b);
    let a = r.read_var_octets().unwrap();
    assert_eq!(r.remaining(), 0);
    assert_eq!(address::validate(a), Ok(()));
    let owned = Address::from_bytes(a).unwrap();
    assert_eq!(owned.as_str(), s(&v["decoded"], "address"));
    let mut out = Vec::new();
    oer::put_var_octets(&mut out, owned.as_bytes());
    assert_eq!(out, b, "re-encode {}", s(v, "name"));
}

fn check_prepare(v: &Value) {
    let b = unhex(v, "hex");
    let d = &v["decoded"];
    let p = Prepare::new_checked(&b[..]).unwrap();
    assert_eq!(p.amount(), d["amount"].as_u64().unwrap());
    assert_eq!(p.expires_at().0, iso_to_ms(s(d, "expiresAt")));
    assert_eq!(
        &p.execution_condition()[..],
        &unhex(d, "executionCondition")[..]
    );
    assert_eq!(p.destination_str(), s(d, "destination"));
    assert_eq!(p.data(), &unhex(d, "data")[..]);
    assert!(matches!(
        Packet::new_checked(&b[..]),
        Ok(Packet::Prepare(_))
    ));
    let out = PrepareBuilder {
        amount: p.amount(),
        expires_at: p.expires_at(),
        execution_condition: p.execution_condition(),
        destination: p.destination(),
        data: p.data(),
    }
    .build();
    assert_eq!(&out[..], &b[..], "re-encode {}", s(v, "name"));
}

fn check_fulfill(v: &Value) {
    let b = unhex(v, "hex");
    let d = &v["decoded"];
    let f = Fulfill::new_checked(&b[..]).unwrap();
    assert_eq!(&f.fulfillment()[..], &unhex(d, "fulfillment")[..]);
    assert_eq!(f.data(), &unhex(d, "data")[..]);
    assert!(matches!(
        Packet::new_checked(&b[..]),
        Ok(Packet::Fulfill(_))
    ));
    let mut out = BytesMut::new();
    FulfillBuilder {
        fulfillment: f.fulfillment(),
        data: f.data(),
    }
    .write_to(&mut out);
    assert_eq!(&out[..], &b[..], "re-encode {}", s(v, "name"));
}

fn check_reject(v: &Value) {
    let b = unhex(v, "hex");
    let d = &v["decoded"];
    let r = Reject::new_checked(&b[..]).unwrap();
    let code: [u8; 3] = s(d, "code").as_bytes().try_into().unwrap();
    assert_eq!(r.code(), ErrorCode::from_bytes(code).unwrap());
    assert_eq!(r.triggered_by(), s(d, "triggeredBy").as_bytes());
    assert_eq!(r.message(), s(d, "message").as_bytes());
    assert_eq!(r.data(), &unhex(d, "data")[..]);
    assert!(matches!(Packet::new_checked(&b[..]), Ok(Packet::Reject(_))));
    let out = RejectBuilder {
        code: r.code(),
        triggered_by: r.triggered_by(),
        message: r.message(),
        data: r.data(),
    }
    .build();
    assert_eq!(&out[..], &b[..], "re-encode {}", s(v, "name"));
}

fn check_f08(v: &Value) {
    let b = unhex(v, "hex");
    let d = &v["decoded"];
    let a = AmountTooLarge::decode(&b).unwrap();
    assert_eq!(a.received, d["receivedAmount"].as_u64().unwrap());
    assert_eq!(a.maximum, d["maximumAmount"].as_u64().unwrap());
    assert_eq!(&a.encode()[..], &b[..], "re-encode {}", s(v, "name"));
}

#[test]
fn all_ilp_vectors() {
    let vectors = load();
    let mut in_file: BTreeMap<&str, usize> = BTreeMap::new();
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &vectors {
        let kind = s(v, "kind");
        let Some(&k) = KINDS.iter().find(|&&k| k == kind) else {
            continue;
        };
        *in_file.entry(k).or_default() += 1;
        // All vectors of these kinds are positive; a negative one would
        // need its own branch, so refuse to silently pass it.
        assert_eq!(
            s(v, "expect"),
            "valid",
            "unhandled negative vector {}",
            s(v, "name")
        );
        match k {
            "oer_uint" => check_uint(v),
            "oer_int" => check_int(v),
            "oer_length" => check_length(v),
            "ilp_timestamp" => check_ilp_timestamp(v),
            "generalized_time" => check_generalized_time(v),
            "ilp_address" => check_address(v),
            "ilp_prepare" => check_prepare(v),
            "ilp_fulfill" => check_fulfill(v),
            "ilp_reject" => check_reject(v),
            "f08_data" => check_f08(v),
            _ => unreachable!(),
        }
        *checked.entry(k).or_default() += 1;
    }
    assert_eq!(checked, in_file);
    for k in KINDS {
        assert!(
            in_file.get(k).copied().unwrap_or(0) > 0,
            "no vectors of kind {k}"
        );
    }
    println!("checked per kind: {checked:?}");
}

/// The invalid examples of docs/design.md "ILP timestamp"
/// (from RFC 30 "Fixed-length Timestamps"), each refused.
#[test]
fn invalid_timestamps() {
    for t in [
        "20171224235312.431+0200",
        "201712242153124318",
        "20171324161432200",
        "20171224240000000",
        "20171224215300",
        "20161231235960852",
    ] {
        assert_eq!(
            parse_ilp_timestamp(t.as_bytes()),
            Err(DecodeError::BadTimestamp),
            "{t}"
        );
        assert!(ilpd_codec::types::Expiry::from_ilp_timestamp(t.as_bytes()).is_err());
    }
}

/// The same invalid timestamps inside an otherwise valid Prepare make
/// `new_checked` fail.
#[test]
fn prepare_with_invalid_timestamp_is_refused() {
    for t in [
        "20171324161432200",
        "20171224240000000",
        "20161231235960852",
    ] {
        let mut b = PrepareBuilder {
            amount: 1,
            expires_at: ilpd_codec::types::Expiry(0),
            execution_condition: &[0; 32],
            destination: b"g.x",
            data: b"",
        }
        .build();
        let off = 1 + 1 + 8;
        b[off..off + 17].copy_from_slice(t.as_bytes());
        assert_eq!(
            Prepare::new_checked(&b[..]).err(),
            Some(DecodeError::BadTimestamp),
            "{t}"
        );
    }
}

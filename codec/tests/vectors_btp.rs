//! BTP/2.0 vectors (RFC 23; docs/design.md "Test vectors"): every `btp`
//! vector of `tests/data/vectors.json` decodes to its listed fields and
//! re-encodes byte for byte with the builders; the BTP captures of
//! `tests/data/js-vectors.json` (btp-packet fixtures and live frames from
//! the JavaScript stack) decode to their listed fields too. The number of
//! vectors checked is compared with the file so none is skipped silently.

use ilpd_codec::btp::{
    self, parse_auth, Btp, BtpType, ProtocolData, CONTENT_OCTET_STREAM, CONTENT_TEXT,
};
use ilpd_codec::time::{format_generalized_time, parse_generalized_time};
use serde_json::Value;

fn load(file: &str) -> Value {
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("read vectors");
    serde_json::from_str(&text).expect("parse vectors")
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("field {k} missing in {v}"))
}

/// The protocolData listed in a vector, as (name bytes, contentType, data).
fn listed_entries(decoded: &Value) -> Vec<(Vec<u8>, u8, Vec<u8>)> {
    decoded["protocolData"]
        .as_array()
        .expect("protocolData array")
        .iter()
        .map(|e| {
            (
                field(e, "protocolName").as_bytes().to_vec(),
                e["contentType"].as_u64().expect("contentType") as u8,
                unhex(field(e, "data")),
            )
        })
        .collect()
}

/// Checks type, requestId and protocolData of `p` against `decoded`.
fn check_common(p: &Btp<&[u8]>, decoded: &Value, name: &str) -> Vec<(Vec<u8>, u8, Vec<u8>)> {
    let ty = decoded["type"].as_u64().expect("type");
    assert_eq!(p.packet_type() as u64, ty, "{name}: type");
    assert_eq!(
        p.request_id() as u64,
        decoded["requestId"].as_u64().expect("requestId"),
        "{name}: requestId"
    );
    let want = listed_entries(decoded);
    let got: Vec<_> = p
        .protocol_data()
        .map(|e| (e.name.to_vec(), e.content_type, e.data.to_vec()))
        .collect();
    assert_eq!(got, want, "{name}: protocolData");
    assert_eq!(p.protocol_data_count(), want.len(), "{name}: count");
    // Primary entry and the `ilp` range agree with the listed entries.
    assert_eq!(
        p.primary().map(|e| e.name.to_vec()),
        want.first().map(|e| e.0.clone()),
        "{name}: primary"
    );
    match want.first() {
        Some((n, _, data)) if n == b"ilp" => {
            let r = p.ilp_range().expect("ilp range");
            assert_eq!(&p.as_bytes()[r], &data[..], "{name}: ilp_range");
        }
        _ => assert_eq!(p.ilp_range(), None, "{name}: no ilp_range"),
    }
    for (n, ct, data) in &want {
        let e = p.get(n).expect("get by name");
        assert_eq!((e.content_type, e.data), (*ct, &data[..]), "{name}: get");
    }
    want
}

/// Re-encodes with the builders the fields read through the view.
fn reencode(p: &Btp<&[u8]>) -> Vec<u8> {
    let entries: Vec<ProtocolData<'_>> = p.protocol_data().collect();
    let mut out = Vec::new();
    match p.packet_type() {
        BtpType::Error => btp::write_error(
            &mut out,
            p.request_id(),
            &p.error_code(),
            p.error_name(),
            p.triggered_at(),
            p.error_data(),
            &entries,
        ),
        BtpType::Transfer => btp::write_transfer(&mut out, p.request_id(), p.amount(), &entries),
        ty => btp::write_packet(&mut out, ty, p.request_id(), &entries),
    }
    out
}

#[test]
fn vectors_json_btp() {
    let all = load("vectors.json");
    let all = all.as_array().expect("array");
    let btp_vectors: Vec<&Value> = all.iter().filter(|v| v["kind"] == "btp").collect();
    let mut checked = 0;
    for v in &btp_vectors {
        let name = field(v, "name");
        assert_eq!(
            field(v, "expect"),
            "valid",
            "{name}: only valid BTP vectors exist"
        );
        let bytes = unhex(field(v, "hex"));
        let p = Btp::new_checked(&bytes[..]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = &v["decoded"];
        check_common(&p, d, name);
        match p.packet_type() {
            BtpType::Error => {
                assert_eq!(&p.error_code(), field(d, "code").as_bytes(), "{name}: code");
                assert_eq!(p.error_name(), field(d, "name").as_bytes(), "{name}: name");
                let trig = field(d, "triggeredAt").as_bytes();
                assert_eq!(p.triggered_at(), trig, "{name}: triggeredAt");
                // Both fixtures use 3 fraction digits: codec::time round-trips.
                let ms = parse_generalized_time(p.triggered_at()).expect("GeneralizedTime");
                assert_eq!(&format_generalized_time(ms)[..], trig, "{name}: time");
                assert_eq!(p.error_data(), &unhex(field(d, "data"))[..], "{name}: data");
            }
            BtpType::Transfer => {
                assert_eq!(
                    p.amount(),
                    d["amount"].as_u64().expect("amount"),
                    "{name}: amount"
                );
            }
            _ => {}
        }
        assert_eq!(reencode(&p), bytes, "{name}: re-encode");
        assert_eq!(p.packet_len(), bytes.len(), "{name}: packet_len");
        checked += 1;
    }
    assert_eq!(checked, btp_vectors.len());
    assert_eq!(
        checked, 11,
        "docs/design.md \"Test vectors\" lists 11 BTP vectors"
    );
}

fn vector<'a>(all: &'a [Value], name: &str) -> &'a Value {
    all.iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("vector {name} missing"))
}

/// The constructed auth Message of docs/design.md "BTP authentication" and
/// its empty Response.
#[test]
fn auth_example() {
    let all = load("vectors.json");
    let all = all.as_array().expect("array");
    let msg = unhex(field(vector(all, "constructed BTP auth Message"), "hex"));
    let mut out = Vec::new();
    btp::write_auth(&mut out, 0x2a2b2c2d, Some(b"alice"), b"secret");
    assert_eq!(out, msg);
    assert_eq!(btp::auth_len(Some(b"alice"), b"secret"), msg.len());
    let p = Btp::new_checked(&msg[..]).expect("auth message");
    let auth = parse_auth(&p).expect("auth");
    assert_eq!(auth.username, Some(&b"alice"[..]));
    assert_eq!(auth.token, b"secret");

    let resp = unhex(field(
        vector(all, "constructed BTP auth Response (empty)"),
        "hex",
    ));
    out.clear();
    btp::write_empty_response(&mut out, 0x2a2b2c2d);
    assert_eq!(out, resp);
}

/// docs/design.md "Carrying ILP over BTP": ILP Prepare in a Message, ILP
/// Fulfill in a Response, built from the ILP packets alone with the
/// one-entry builders.
#[test]
fn ilp_examples() {
    let all = load("vectors.json");
    let all = all.as_array().expect("array");
    let prepare = unhex(field(
        vector(all, "ilp-packet ilp_prepare example01"),
        "hex",
    ));
    let fulfill = unhex(field(
        vector(all, "ilp-packet ilp_fulfill example01"),
        "hex",
    ));

    let msg = unhex(field(
        vector(all, "constructed BTP Message carrying ILP Prepare"),
        "hex",
    ));
    let mut out = Vec::new();
    btp::write_ilp_message(&mut out, 1, &prepare);
    assert_eq!(out, msg);
    assert_eq!(btp::ilp_message_len(prepare.len()), msg.len());
    let p = Btp::new_checked(&msg[..]).expect("message");
    assert_eq!(p.ilp(), Some(&prepare[..]));

    let resp = unhex(field(
        vector(all, "constructed BTP Response carrying ILP Fulfill"),
        "hex",
    ));
    out.clear();
    btp::write_ilp_response(&mut out, 1, &fulfill);
    assert_eq!(out, resp);
    assert_eq!(btp::ilp_response_len(fulfill.len()), resp.len());
    let p = Btp::new_checked(&resp[..]).expect("response");
    assert_eq!(p.packet_type(), BtpType::Response);
    assert_eq!(&resp[p.ilp_range().expect("range")], &fulfill[..]);
}

/// `2017-08-28T18:32:00.000Z` → `20170828183200.000Z` (the JS library
/// decodes GeneralizedTime to an ISO date; the wire keeps 3 digits).
fn iso_to_generalized(iso: &str) -> String {
    iso.chars()
        .filter(|c| !matches!(c, '-' | ':' | 'T'))
        .collect()
}

#[test]
fn js_vectors_btp() {
    let file = load("js-vectors.json");
    let vectors = file["vectors"].as_array().expect("vectors");
    let kinds = [
        "btp_response",
        "btp_error",
        "btp_message",
        "btp_transfer",
        "live_btp_message",
        "live_btp_response",
        "live_btp_error",
    ];
    let expected = vectors
        .iter()
        .filter(|v| field(v, "kind").contains("btp"))
        .count();
    let mut checked = 0;
    let mut auths = 0;
    for v in vectors {
        let kind = field(v, "kind");
        if !kinds.contains(&kind) {
            continue;
        }
        let name = field(v, "name");
        let bytes = unhex(field(v, "hex"));
        let p = Btp::new_checked(&bytes[..]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = &v["decoded"];
        let entries = check_common(&p, d, name);
        let want_type = if kind.ends_with("message") {
            BtpType::Message
        } else if kind.ends_with("response") {
            BtpType::Response
        } else if kind.ends_with("error") {
            BtpType::Error
        } else {
            BtpType::Transfer
        };
        assert_eq!(p.packet_type(), want_type, "{name}: kind");
        match want_type {
            BtpType::Error => {
                assert_eq!(&p.error_code(), field(d, "code").as_bytes(), "{name}: code");
                assert_eq!(p.error_name(), field(d, "name").as_bytes(), "{name}: name");
                let trig = iso_to_generalized(field(d, "triggeredAt"));
                assert_eq!(p.triggered_at(), trig.as_bytes(), "{name}: triggeredAt");
                // The JS decoder shows Error data as UTF-8 text.
                assert_eq!(p.error_data(), field(d, "data").as_bytes(), "{name}: data");
                assert_eq!(
                    btp::error_name_for(&p.error_code()).map(str::as_bytes),
                    Some(p.error_name()).filter(|_| &p.error_code() != b"L13"),
                    "{name}: RFC 23 name"
                );
            }
            BtpType::Transfer => {
                let amount: u64 = field(d, "amount").parse().expect("amount");
                assert_eq!(p.amount(), amount, "{name}: amount");
            }
            _ => {}
        }
        if entries.first().map(|e| &e.0[..]) == Some(b"auth") {
            let auth = parse_auth(&p).expect("auth");
            let token = entries
                .iter()
                .find(|e| e.0 == b"auth_token")
                .expect("token");
            assert_eq!(auth.token, &token.2[..], "{name}: token");
            let user = entries.iter().find(|e| e.0 == b"auth_username");
            assert_eq!(auth.username, user.map(|u| &u.2[..]), "{name}: username");
            // ilp-plugin-btp writes both as text, like write_auth.
            assert!(entries[1..].iter().all(|e| e.1 == CONTENT_TEXT));
            assert_eq!(entries[0].1, CONTENT_OCTET_STREAM);
            let mut again = Vec::new();
            btp::write_auth(&mut again, p.request_id(), auth.username, auth.token);
            assert_eq!(again, bytes, "{name}: write_auth");
            auths += 1;
        }
        if v["roundtrip"] == true {
            assert_eq!(reencode(&p), bytes, "{name}: re-encode");
        }
        checked += 1;
    }
    assert_eq!(
        checked, expected,
        "every BTP kind in js-vectors.json checked"
    );
    assert_eq!(checked, 15);
    assert_eq!(auths, 1);
}

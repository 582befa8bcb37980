//! STREAM vectors: every plaintext packet fixture of RFC 29 decodes to the
//! fixture's values and re-encodes byte for byte; the interledger-rs crypto
//! vectors and the bytes captured from ilp-protocol-stream (its server's
//! tokens and secrets, an encrypted Prepare, its Fulfill and Reject, a
//! receipt) agree with this crate.

use base64::Engine;
use ilpd_codec::PacketType;
use ilpd_stream::crypto::{ConnectionKeys, Envelope};
use ilpd_stream::packet::{Frame, Packet, PacketBuilder, StreamErrorCode};
use ilpd_stream::receipt::{self, ReceiptParams};
use ilpd_stream::spsp::{decode_token, ServerSecret};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s}: {e}"))
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    unhex(s)
        .try_into()
        .unwrap_or_else(|_| panic!("{s} is not {N} bytes"))
}

fn num(v: &Value, key: &str) -> u64 {
    match &v[key] {
        Value::Number(x) => x.as_u64().unwrap_or_else(|| panic!("{key} in {v}")),
        Value::String(x) => x.parse().unwrap_or_else(|_| panic!("{key} in {v}")),
        _ => panic!("{key} missing in {v}"),
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Checks one decoded frame against the fixture's JSON.
fn check_frame(f: &Frame<'_>, want: &Value, name: &str) {
    assert_eq!(f.frame_type() as u64, num(want, "type"), "{name}");
    let ok = match *f {
        Frame::ConnectionClose { code, message } => {
            code.0 as u64 == num(want, "errorCode")
                && message == text(want, "errorMessage").as_bytes()
        }
        Frame::ConnectionNewAddress { source_account } => {
            source_account == text(want, "sourceAccount").as_bytes()
        }
        Frame::ConnectionAssetDetails {
            source_asset_code,
            source_asset_scale,
        } => {
            source_asset_code == text(want, "sourceAssetCode").as_bytes()
                && source_asset_scale as u64 == num(want, "sourceAssetScale")
        }
        Frame::ConnectionMaxData { max_offset } | Frame::ConnectionDataBlocked { max_offset } => {
            max_offset == num(want, "maxOffset")
        }
        Frame::ConnectionMaxStreamId { max_stream_id }
        | Frame::ConnectionStreamIdBlocked { max_stream_id } => {
            max_stream_id == num(want, "maxStreamId")
        }
        Frame::StreamClose {
            stream_id,
            code,
            message,
        } => {
            stream_id == num(want, "streamId")
                && code.0 as u64 == num(want, "errorCode")
                && message == text(want, "errorMessage").as_bytes()
        }
        Frame::StreamMoney { stream_id, shares } => {
            stream_id == num(want, "streamId") && shares == num(want, "shares")
        }
        Frame::StreamMaxMoney {
            stream_id,
            receive_max,
            total_received,
        } => {
            stream_id == num(want, "streamId")
                && receive_max == num(want, "receiveMax")
                && total_received == num(want, "totalReceived")
        }
        Frame::StreamMoneyBlocked {
            stream_id,
            send_max,
            total_sent,
        } => {
            stream_id == num(want, "streamId")
                && send_max == num(want, "sendMax")
                && total_sent == num(want, "totalSent")
        }
        Frame::StreamData {
            stream_id,
            offset,
            data,
        } => {
            stream_id == num(want, "streamId")
                && offset == num(want, "offset")
                && data == b64(text(want, "data"))
        }
        Frame::StreamMaxData {
            stream_id,
            max_offset,
        }
        | Frame::StreamDataBlocked {
            stream_id,
            max_offset,
        } => stream_id == num(want, "streamId") && max_offset == num(want, "maxOffset"),
        Frame::StreamReceipt { stream_id, receipt } => {
            stream_id == num(want, "streamId") && receipt == b64(text(want, "receipt"))
        }
        Frame::Unknown { .. } => false,
    };
    assert!(ok, "{name}: {f:?} vs {want}");
}

#[test]
fn rfc29_packet_fixtures_decode_and_reencode() {
    let v = load("stream.json");
    let mut checked = 0;
    let mut reencoded = 0;
    for vec in v["vectors"].as_array().unwrap() {
        if vec["kind"] != "stream_packet" {
            continue;
        }
        let name = text(vec, "name");
        let bytes = unhex(text(vec, "hex"));
        let p = Packet::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = &vec["decoded"];
        assert_eq!(p.sequence, num(d, "sequence"), "{name}");
        assert_eq!(p.packet_type as u64, num(d, "packetType"), "{name}");
        assert_eq!(p.prepare_amount, num(d, "amount"), "{name}");
        let frames: Vec<Frame<'_>> = p.frames().collect();
        let want = d["frames"].as_array().unwrap();
        assert_eq!(frames.len(), want.len(), "{name}");
        for (f, w) in frames.iter().zip(want) {
            check_frame(f, w, name);
        }
        assert!(p.junk().is_empty(), "{name}");
        checked += 1;
        if vec["note"] == "decode_only" {
            continue;
        }
        let out = PacketBuilder {
            packet_type: p.packet_type,
            sequence: p.sequence,
            prepare_amount: p.prepare_amount,
            frames: &frames,
        };
        assert_eq!(out.encoded_len(), bytes.len(), "{name}");
        assert_eq!(out.to_vec(), bytes, "{name}");
        reencoded += 1;
    }
    assert_eq!(checked, 53);
    assert_eq!(reencoded, 51);
}

#[test]
fn interledger_rs_crypto_vectors() {
    let v = load("stream.json");
    let mut seen = 0;
    for vec in v["vectors"].as_array().unwrap() {
        let d = &vec["decoded"];
        let data = unhex(text(vec, "hex"));
        match vec["kind"].as_str() {
            Some("stream_fulfillment") => {
                let k = ConnectionKeys::new(&unhex(text(d, "sharedSecret")));
                assert_eq!(
                    k.fulfillment(&data).0.to_vec(),
                    unhex(text(d, "fulfillment"))
                );
                seen += 1;
            }
            Some("stream_encryption") => {
                let k = ConnectionKeys::new(&unhex(text(d, "sharedSecret")));
                let mut out = Vec::new();
                k.decrypt(&data, &mut out).unwrap();
                assert_eq!(out, unhex(text(d, "plaintext")));
                // Sealing with the vector's IV gives the same bytes.
                let mut again = Vec::new();
                k.envelope()
                    .seal_with_iv(arr(text(d, "nonce")), &out, &mut again);
                assert_eq!(again, data);
                seen += 1;
            }
            _ => {}
        }
    }
    assert_eq!(seen, 2);
}

#[test]
fn js_server_tokens_and_secrets() {
    let v = load("js-stream.json");
    let s = &v["server"];
    let server = ServerSecret::from_bytes(arr(text(s, "server_secret")));
    let base = text(s, "base_address");
    for (which, receipts) in [("with_receipts", true), ("plain", false)] {
        let c = &s[which];
        let dest = text(c, "destination_account");
        let seg = dest
            .strip_prefix(base)
            .and_then(|r| r.strip_prefix('.'))
            .unwrap();
        let token = decode_token(seg.as_bytes()).unwrap();
        assert_eq!(
            server.shared_secret(&token).to_vec(),
            unhex(text(c, "shared_secret")),
            "{which}"
        );
        let contents = server.open_token(&token).unwrap();
        assert_eq!(contents.receipt.is_some(), receipts);
        if receipts {
            assert_eq!(
                contents.connection_tag,
                text(c, "connection_tag").as_bytes()
            );
            assert_eq!(
                contents.receipt,
                Some(ReceiptParams {
                    nonce: arr(text(c, "receipt_nonce")),
                    secret: arr(text(c, "receipt_secret")),
                })
            );
        } else {
            assert!(contents.connection_tag.is_empty());
        }
    }
}

#[test]
fn js_packets_decrypt_and_decode() {
    let v = load("js-stream.json");
    let secret = unhex(text(&v["server"]["with_receipts"], "shared_secret"));
    let k = ConnectionKeys::new(&secret);
    let x = &v["exchange"];
    let data = unhex(text(x, "prepare_data"));
    let mut plain = Vec::new();
    k.decrypt(&data, &mut plain).unwrap();
    assert_eq!(plain, unhex(text(x, "prepare_plaintext")));
    let f = k.fulfillment(&data);
    assert_eq!(f.0.to_vec(), unhex(text(x, "fulfillment")));
    assert_eq!(f.condition().0.to_vec(), unhex(text(x, "condition")));
    let p = Packet::decode(&plain).unwrap();
    assert_eq!(
        (p.packet_type, p.sequence, p.prepare_amount),
        (PacketType::Prepare, 1, 50)
    );

    // The JS server's Fulfill: its frames, and its receipt verifies.
    let fd = unhex(text(x, "fulfill_data"));
    k.decrypt(&fd, &mut plain).unwrap();
    assert_eq!(plain, unhex(text(x, "fulfill_plaintext")));
    let p = Packet::decode(&plain).unwrap();
    assert_eq!(
        (p.packet_type, p.sequence, p.prepare_amount),
        (PacketType::Fulfill, 1, 100)
    );
    let frames: Vec<_> = p.frames().collect();
    assert!(frames.contains(&Frame::StreamMaxMoney {
        stream_id: 1,
        receive_max: 10000,
        total_received: 100
    }));
    assert!(frames.contains(&Frame::ConnectionAssetDetails {
        source_asset_code: b"XYZ",
        source_asset_scale: 9
    }));
    let receipt_secret: [u8; 32] = arr(text(&v["server"]["with_receipts"], "receipt_secret"));
    let r = frames
        .iter()
        .find_map(|f| match f {
            Frame::StreamReceipt { receipt, .. } => Some(*receipt),
            _ => None,
        })
        .unwrap();
    let r = receipt::verify(r, &receipt_secret).unwrap();
    assert_eq!((r.stream_id, r.total_received), (1, 100));
    // Re-encoding the JS reply gives its bytes.
    assert_eq!(
        PacketBuilder {
            packet_type: p.packet_type,
            sequence: p.sequence,
            prepare_amount: p.prepare_amount,
            frames: &frames
        }
        .to_vec(),
        plain
    );

    // Its Reject (minimum not met) carries the amount that arrived.
    assert_eq!(text(x, "reject_code"), "F99");
    k.decrypt(&unhex(text(x, "reject_data")), &mut plain)
        .unwrap();
    let p = Packet::decode(&plain).unwrap();
    assert_eq!(
        (p.packet_type, p.sequence, p.prepare_amount),
        (PacketType::Reject, 2, 100)
    );
    assert_eq!(StreamErrorCode::NO_ERROR.0, 1);
}

#[test]
fn js_receipt_bytes() {
    let v = load("js-stream.json");
    let r = &v["receipt"];
    let params = ReceiptParams {
        nonce: arr(text(r, "nonce")),
        secret: arr(text(r, "secret")),
    };
    let ours = receipt::create(&params, num(r, "stream_id"), num(r, "total_received")).unwrap();
    assert_eq!(ours.to_vec(), unhex(text(r, "hex")));
}

#[test]
fn token_envelope_is_the_stream_envelope() {
    // The JS server seals tokens with the server secret itself as the
    // AES key; a token we seal opens with a plain Envelope under it too.
    let env = Envelope::new(&[0x42; 32]);
    let mut sealed = Vec::new();
    env.seal_with_iv([1; 12], b"x", &mut sealed);
    let mut out = Vec::new();
    env.open(&sealed, &mut out).unwrap();
    assert_eq!(out, b"x");
}

//! Property tests for BTP/2.0 and WebSocket: random valid BTP packets
//! round-trip, random or mutated bytes never make a decoder panic, and
//! WebSocket messages written with the frame builders come back out of the
//! [`Decoder`] unchanged whatever chunk sizes the socket delivers.

use bytes::BytesMut;
use ilpd_codec::btp::{self, parse_auth, Btp, BtpType, ProtocolData};
use ilpd_codec::ws::{self, Decoder, Message, Opcode, Role};
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

type Entry = (Vec<u8>, u8, Vec<u8>);

/// protocolData entries; data sometimes over 127 bytes (long-form length).
fn entries() -> impl Strategy<Value = Vec<Entry>> {
    let data = prop_oneof![bytes(20), bytes(400)];
    prop::collection::vec((bytes(24), any::<u8>(), data), 0..6)
}

#[derive(Debug, Clone)]
struct Packet {
    ty: BtpType,
    request_id: u32,
    amount: u64,
    code: [u8; 3],
    name: Vec<u8>,
    triggered_at: Vec<u8>,
    data: Vec<u8>,
    entries: Vec<Entry>,
}

fn packet() -> impl Strategy<Value = Packet> {
    let ty = prop::sample::select(vec![
        BtpType::Message,
        BtpType::Response,
        BtpType::Transfer,
        BtpType::Error,
    ]);
    (
        ty,
        any::<u32>(),
        any::<u64>(),
        any::<[u8; 3]>(),
        bytes(40),
        bytes(24),
        prop_oneof![bytes(50), bytes(btp::MAX_ERROR_DATA + 1)],
        entries(),
    )
        .prop_map(
            |(ty, request_id, amount, code, name, triggered_at, data, entries)| Packet {
                ty,
                request_id,
                amount,
                code,
                name,
                triggered_at,
                data,
                entries,
            },
        )
}

fn borrow(entries: &[Entry]) -> Vec<ProtocolData<'_>> {
    entries
        .iter()
        .map(|(n, c, d)| ProtocolData::new(n, *c, d))
        .collect()
}

fn encode(p: &Packet) -> Vec<u8> {
    let e = borrow(&p.entries);
    let mut out = Vec::new();
    match p.ty {
        BtpType::Transfer => btp::write_transfer(&mut out, p.request_id, p.amount, &e),
        BtpType::Error => btp::write_error(
            &mut out,
            p.request_id,
            &p.code,
            &p.name,
            &p.triggered_at,
            &p.data,
            &e,
        ),
        ty => btp::write_packet(&mut out, ty, p.request_id, &e),
    }
    out
}

/// Calls every accessor; used on whatever `new_checked` accepts.
fn touch_all<T: AsRef<[u8]>>(p: &Btp<T>) -> usize {
    let mut n = p
        .protocol_data()
        .map(|e| e.name.len() + e.data.len())
        .sum::<usize>();
    n += p.primary().map_or(0, |e| e.data.len());
    n += p.get(b"ilp").map_or(0, |e| e.data.len());
    if let Some(r) = p.ilp_range() {
        assert!(r.end <= p.as_bytes().len());
        assert_eq!(p.ilp().map(<[u8]>::len), Some(r.len()));
    }
    n += p.error_name().len() + p.triggered_at().len() + p.error_data().len();
    n += p.error_code()[0] as usize + p.amount() as usize % 7 + p.request_id() as usize % 7;
    assert!(p.packet_len() <= p.as_bytes().len());
    if let Ok(a) = parse_auth(p) {
        n += a.token.len() + a.username.map_or(0, <[u8]>::len);
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn btp_round_trip(p in packet()) {
        let bytes = encode(&p);
        let e = borrow(&p.entries);
        let want_len = match p.ty {
            BtpType::Error => btp::error_len(
                p.name.len(),
                p.triggered_at.len(),
                p.data.len().min(btp::MAX_ERROR_DATA),
                &e,
            ),
            ty => btp::packet_encoded_len(ty, &e),
        };
        prop_assert_eq!(bytes.len(), want_len);
        let v = Btp::new_checked(&bytes[..]).expect("own encoding parses");
        prop_assert_eq!(v.packet_type(), p.ty);
        prop_assert_eq!(v.request_id(), p.request_id);
        prop_assert_eq!(v.packet_len(), bytes.len());
        let got: Vec<Entry> = v
            .protocol_data()
            .map(|e| (e.name.to_vec(), e.content_type, e.data.to_vec()))
            .collect();
        prop_assert_eq!(&got, &p.entries);
        match p.ty {
            BtpType::Transfer => prop_assert_eq!(v.amount(), p.amount),
            BtpType::Error => {
                prop_assert_eq!(v.error_code(), p.code);
                prop_assert_eq!(v.error_name(), &p.name[..]);
                prop_assert_eq!(v.triggered_at(), &p.triggered_at[..]);
                let cut = p.data.len().min(btp::MAX_ERROR_DATA);
                prop_assert_eq!(v.error_data(), &p.data[..cut]);
            }
            _ => {}
        }
        match p.entries.first() {
            Some((n, _, d)) if n == b"ilp" => prop_assert_eq!(v.ilp(), Some(&d[..])),
            _ => prop_assert_eq!(v.ilp_range(), None),
        }
        touch_all(&v);
    }

    #[test]
    fn btp_auth_round_trip(id in any::<u32>(), user in prop::option::of(bytes(40)), token in bytes(200)) {
        let mut out = Vec::new();
        btp::write_auth(&mut out, id, user.as_deref(), &token);
        prop_assert_eq!(out.len(), btp::auth_len(user.as_deref(), &token));
        let v = Btp::new_checked(&out[..]).expect("auth parses");
        let a = parse_auth(&v).expect("auth");
        prop_assert_eq!(a.username, user.as_deref());
        prop_assert_eq!(a.token, &token[..]);
    }

    #[test]
    fn btp_random_bytes_never_panic(b in bytes(300)) {
        if let Ok(v) = Btp::new_checked(&b[..]) {
            touch_all(&v);
        }
    }

    #[test]
    fn btp_mutated_never_panic(
        p in packet(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut b = encode(&p);
        for (i, x) in flips {
            let i = i.index(b.len());
            b[i] = x;
        }
        if truncate {
            b.truncate(cut.index(b.len() + 1));
        }
        if let Ok(v) = Btp::new_checked(&b[..]) {
            touch_all(&v);
        }
    }

    #[test]
    fn ws_random_bytes_never_panic(b in bytes(300), server in any::<bool>(), max in 0usize..400) {
        let _ = ws::parse_frame_header(&b);
        let _ = ws::parse_close_payload(&b);
        let _ = ws::parse_client_handshake(&b);
        let _ = ws::parse_server_handshake(&b, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let role = if server { Role::Server } else { Role::Client };
        let mut d = Decoder::new(role, max);
        let mut buf = BytesMut::from(&b[..]);
        // Each Ok(Some) consumes at least a 2-byte header: bounded loop.
        for _ in 0..=b.len() {
            match d.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn ws_mutated_frames_never_panic(
        payload in bytes(300),
        mask in any::<[u8; 4]>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut b = Vec::new();
        ws::write_frame(&mut b, Opcode::Binary, &payload, Some(mask));
        ws::write_close(&mut b, 1000, b"x", Some(mask));
        for (i, x) in flips {
            let i = i.index(b.len());
            b[i] = x;
        }
        let mut d = Decoder::new(Role::Server, 1 << 16);
        let mut buf = BytesMut::from(&b[..]);
        for _ in 0..=b.len() {
            match d.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn handshake_mutated_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let key = ws::client_key(&[3; 16]);
        let accept = ws::accept_key(key.as_bytes());
        let mut req = Vec::new();
        ws::write_client_handshake(&mut req, "127.0.0.1:1", "/", &key);
        let mut resp = Vec::new();
        ws::write_server_handshake(&mut resp, &accept);
        for b in [&mut req, &mut resp] {
            for (i, x) in &flips {
                let i = i.index(b.len());
                b[i] = *x;
            }
            b.truncate(cut.index(b.len() + 1));
        }
        if let Ok(Some((h, n))) = ws::parse_client_handshake(&req) {
            prop_assert!(n <= req.len());
            prop_assert!(!h.key.is_empty());
        }
        if let Ok(Some(n)) = ws::parse_server_handshake(&resp, &accept) {
            prop_assert!(n <= resp.len());
        }
    }
}

/// Lengths around the 7/16/64-bit length-form boundaries (RFC 6455 §5.2).
fn ws_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..4,
        120usize..132,
        65530usize..65542,
        Just(125),
        Just(126),
        Just(65535),
        Just(65536),
    ]
}

#[derive(Debug, Clone)]
struct WsMsg {
    payload: Vec<u8>,
    text: bool,
    /// Split points for a fragmented message (empty = one frame).
    splits: Vec<prop::sample::Index>,
    /// Send a Ping after the first fragment.
    ping: bool,
}

fn ws_msg() -> impl Strategy<Value = WsMsg> {
    (
        ws_len(),
        any::<u8>(),
        any::<bool>(),
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(len, seed, text, splits, ping)| {
            // Text payloads stay ASCII so they are valid UTF-8.
            let payload = (0..len)
                .map(|i| {
                    let b = (i as u8).wrapping_mul(31).wrapping_add(seed);
                    if text {
                        b'a' + b % 26
                    } else {
                        b
                    }
                })
                .collect();
            WsMsg {
                payload,
                text,
                splits,
                ping,
            }
        })
}

fn write_msg(out: &mut Vec<u8>, m: &WsMsg, mask: Option<[u8; 4]>) {
    let op = if m.text { Opcode::Text } else { Opcode::Binary };
    let mut cuts: Vec<usize> = m
        .splits
        .iter()
        .map(|i| i.index(m.payload.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    if cuts.is_empty() {
        ws::write_frame(out, op, &m.payload, mask);
        return;
    }
    let mut bounds = vec![0];
    bounds.extend(cuts);
    bounds.push(m.payload.len());
    let n = bounds.len() - 1;
    for f in 0..n {
        let part = &m.payload[bounds[f]..bounds[f + 1]];
        let fop = if f == 0 { op } else { Opcode::Continuation };
        ws::write_fragment(out, f + 1 == n, fop, part, mask);
        if f == 0 && m.ping {
            ws::write_frame(out, Opcode::Ping, b"ping", mask);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn ws_frames_round_trip_in_chunks(
        msgs in prop::collection::vec(ws_msg(), 1..4),
        server in any::<bool>(),
        key in any::<[u8; 4]>(),
        chunks in prop::collection::vec(1usize..70_000, 1..8),
    ) {
        // A server reads masked client frames; a client reads unmasked ones.
        let (role, mask) = if server { (Role::Server, Some(key)) } else { (Role::Client, None) };
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for m in &msgs {
            write_msg(&mut wire, m, mask);
            let fragmented = !m.splits.is_empty();
            if fragmented && m.ping {
                want.push(Message::Ping(BytesMut::from(&b"ping"[..])));
            }
            let p = BytesMut::from(&m.payload[..]);
            want.push(if m.text { Message::Text(p) } else { Message::Binary(p) });
        }
        ws::write_close(&mut wire, 1000, b"done", mask);
        want.push(Message::Close(Some(1000), BytesMut::from(&b"done"[..])));

        let mut d = Decoder::new(role, 70_000);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < wire.len() {
            let n = chunks[i % chunks.len()].min(wire.len() - pos);
            i += 1;
            buf.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            while let Some(m) = d.decode(&mut buf).expect("valid frames decode") {
                got.push(m);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert!(!d.in_fragmented_message());
        prop_assert_eq!(got, want);
    }
}

//! Fuzz target: WebSocket frame headers, the message decoder (both roles,
//! input split in two reads) and the HTTP upgrade handshake (RFC 6455).
#![no_main]

use bytes::BytesMut;
use ilpd_codec::ws::{self, Decoder, Message, Role};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(h)) = ws::parse_frame_header(data) {
        assert!(h.header_len <= 14 && h.header_len <= data.len());
    }
    let _ = ws::parse_close_payload(data);
    if let Ok(Some((h, n))) = ws::parse_client_handshake(data) {
        assert!(n <= data.len() && n <= ws::MAX_HANDSHAKE);
        let _ = ws::accept_key(h.key);
    }
    if let Ok(Some(n)) = ws::parse_server_handshake(data, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") {
        assert!(n <= data.len());
    }

    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let role = if first & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let max = (first as usize) << 4;
    let cut = (first as usize >> 1).min(rest.len());
    let mut d = Decoder::new(role, max);
    let mut buf = BytesMut::new();
    for chunk in [&rest[..cut], &rest[cut..]] {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(Message::Binary(m) | Message::Text(m))) => assert!(m.len() <= max),
                Ok(Some(Message::Ping(m) | Message::Pong(m) | Message::Close(_, m))) => {
                    assert!(m.len() <= 125)
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});

//! WebSocket (RFC 6455) framing and the HTTP/1.1 upgrade handshake, as BTP
//! needs them (RFC 23, docs/design.md "BTP transport": one BTP packet per
//! binary message).
//!
//! [`Decoder`] splits complete frames off the front of a `BytesMut` without
//! copying and unmasks them in place; only fragmented messages (rare) are
//! copied while they are reassembled. Sizes are decided from the header
//! alone, so a peer cannot make us buffer more than `max_message` bytes.
//!
//! Sending without an extra copy: write the header with
//! [`write_frame_header`], write the payload (e.g. a BTP packet) right
//! behind it, then, when masking (client side), call [`unmask`] on the
//! payload bytes in the buffer: XOR masking is its own inverse.

use bytes::{Buf, BufMut, BytesMut};

use crate::error::{DecodeError, Result};

/// Frame opcodes (RFC 6455 §5.2). Reserved opcodes are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl Opcode {
    /// Maps the low nibble of the first header byte to an opcode.
    #[inline]
    pub fn from_u8(b: u8) -> Result<Self> {
        match b {
            0 => Ok(Opcode::Continuation),
            1 => Ok(Opcode::Text),
            2 => Ok(Opcode::Binary),
            8 => Ok(Opcode::Close),
            9 => Ok(Opcode::Ping),
            10 => Ok(Opcode::Pong),
            other => Err(DecodeError::UnknownType(other)),
        }
    }

    /// Close, Ping and Pong are control frames (RFC 6455 §5.5).
    #[inline]
    pub fn is_control(self) -> bool {
        (self as u8) & 0x08 != 0
    }
}

/// Largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes the header takes (2 to 14).
    pub header_len: usize,
}

/// Parses a frame header at the start of `buf` (RFC 6455 §5.2).
///
/// `Ok(None)` means more bytes are needed. Refused: RSV bits (no extension
/// is negotiated), reserved opcodes, fragmented or over-125-byte control
/// frames, non-minimal 16/64-bit lengths and 64-bit lengths with the top bit
/// set.
#[inline]
pub fn parse_frame_header(buf: &[u8]) -> Result<Option<FrameHeader>> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    if b0 & 0x70 != 0 {
        return Err(DecodeError::Invalid("websocket RSV bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_u8(b0 & 0x0f)?;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    if opcode.is_control() {
        if !fin {
            return Err(DecodeError::Invalid("fragmented websocket control frame"));
        }
        if len7 as usize > MAX_CONTROL_PAYLOAD {
            return Err(DecodeError::FieldTooLong("websocket control frame"));
        }
    }
    let (payload_len, mut pos) = match len7 {
        126 => {
            let Some(&[a, b]) = buf.get(2..4) else {
                return Ok(None);
            };
            let n = u16::from_be_bytes([a, b]) as u64;
            if n < 126 {
                return Err(DecodeError::NonCanonical);
            }
            (n, 4)
        }
        127 => {
            let Some(s) = buf.get(2..10) else {
                return Ok(None);
            };
            let n = s.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64);
            if n >> 63 != 0 {
                return Err(DecodeError::BadLength);
            }
            if n <= 0xffff {
                return Err(DecodeError::NonCanonical);
            }
            (n, 10)
        }
        n => (n as u64, 2),
    };
    let mask = if masked {
        let Some(&[a, b, c, d]) = buf.get(pos..pos + 4) else {
            return Ok(None);
        };
        pos += 4;
        Some([a, b, c, d])
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        payload_len,
        header_len: pos,
    }))
}

/// XORs `payload` with the masking key (RFC 6455 §5.3). The same call
/// masks and unmasks. `payload` must start at the first payload byte (key
/// offset 0). Works on 32-byte blocks against a repeated key, a shape the
/// compiler vectorises (about 2x faster than u64 words on SSE2).
#[inline]
pub fn unmask(payload: &mut [u8], key: [u8; 4]) {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = key[i & 3];
    }
    let mut blocks = payload.chunks_exact_mut(32);
    for block in &mut blocks {
        // Always 32 bytes (chunks_exact), so the conversion cannot fail.
        if let Ok(block) = <&mut [u8; 32]>::try_from(block) {
            for i in 0..32 {
                block[i] ^= k[i];
            }
        }
    }
    // Blocks are multiples of 4 long, so the tail starts at key offset 0.
    for (b, m) in blocks.into_remainder().iter_mut().zip(k.iter()) {
        *b ^= m;
    }
}

/// Bytes a frame header takes for `payload_len` bytes.
#[inline]
pub const fn frame_header_len(payload_len: usize, masked: bool) -> usize {
    let base = if payload_len < 126 {
        2
    } else if payload_len <= 0xffff {
        4
    } else {
        10
    };
    if masked {
        base + 4
    } else {
        base
    }
}

/// Writes a frame header with the minimal length form (RFC 6455 §5.2).
#[inline]
pub fn write_frame_header<B: BufMut>(
    buf: &mut B,
    fin: bool,
    opcode: Opcode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) {
    buf.put_u8(if fin { 0x80 } else { 0 } | opcode as u8);
    let m = if mask.is_some() { 0x80 } else { 0 };
    if payload_len < 126 {
        buf.put_u8(m | payload_len as u8);
    } else if payload_len <= 0xffff {
        buf.put_u8(m | 126);
        buf.put_u16(payload_len as u16);
    } else {
        buf.put_u8(m | 127);
        buf.put_u64(payload_len as u64);
    }
    if let Some(k) = mask {
        buf.put_slice(&k);
    }
}

/// Writes one complete (FIN) frame. With a mask (client to server), a
/// masked copy of `payload` is written; `payload` itself is untouched.
#[inline]
pub fn write_frame<B: BufMut>(buf: &mut B, opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) {
    write_fragment(buf, true, opcode, payload, mask);
}

/// Writes one frame with an explicit FIN bit (for fragmented messages:
/// first frame Text/Binary with `fin = false`, then Continuation frames).
pub fn write_fragment<B: BufMut>(
    buf: &mut B,
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    write_frame_header(buf, fin, opcode, payload.len(), mask);
    match mask {
        None => buf.put_slice(payload),
        Some(key) => {
            let mut block = [0u8; 64];
            for c in payload.chunks(64) {
                let b = &mut block[..c.len()];
                b.copy_from_slice(c);
                unmask(b, key);
                buf.put_slice(b);
            }
        }
    }
}

/// Close status codes a peer may send (RFC 6455 §7.4.1, §7.4.2).
#[inline]
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Writes a Close frame with a status code and a reason (cut to fit the
/// 125-byte control-frame limit).
pub fn write_close<B: BufMut>(buf: &mut B, code: u16, reason: &[u8], mask: Option<[u8; 4]>) {
    let reason = &reason[..reason.len().min(MAX_CONTROL_PAYLOAD - 2)];
    let mut p = [0u8; MAX_CONTROL_PAYLOAD];
    p[..2].copy_from_slice(&code.to_be_bytes());
    p[2..2 + reason.len()].copy_from_slice(reason);
    write_frame(buf, Opcode::Close, &p[..2 + reason.len()], mask);
}

/// Splits a Close payload into status code and reason (RFC 6455 §5.5.1).
/// An empty payload has no code; a 1-byte payload, a reserved code or a
/// reason that is not UTF-8 is refused.
pub fn parse_close_payload(payload: &[u8]) -> Result<(Option<u16>, &[u8])> {
    match payload {
        [] => Ok((None, &[])),
        [_] => Err(DecodeError::Invalid("websocket close payload of 1 byte")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !is_valid_close_code(code) {
                return Err(DecodeError::Invalid("websocket close code"));
            }
            if core::str::from_utf8(reason).is_err() {
                return Err(DecodeError::Invalid("websocket close reason not UTF-8"));
            }
            Ok((Some(code), reason))
        }
    }
}

// ---------------------------------------------------------------------------
// Message decoder.

/// Which end of the connection we are: decides the masking rule
/// (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We accepted the connection: every frame from the client is masked.
    Server,
    /// We opened the connection: frames from the server are never masked.
    Client,
}

/// One complete message (data) or control frame, payload already unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Binary(BytesMut),
    Text(BytesMut),
    Ping(BytesMut),
    Pong(BytesMut),
    /// Status code (if any) and reason.
    Close(Option<u16>, BytesMut),
}

/// Turns the bytes read from a socket into [`Message`]s.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    max_message: usize,
    /// Opcode and bytes so far of a fragmented message.
    partial: Option<(Opcode, BytesMut)>,
}

impl Decoder {
    /// A decoder for `role`, refusing messages over `max_message` bytes.
    pub fn new(role: Role, max_message: usize) -> Self {
        Decoder {
            role,
            max_message,
            partial: None,
        }
    }

    /// The message size limit.
    #[inline]
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// True while a fragmented message is being reassembled.
    #[inline]
    pub fn in_fragmented_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Decodes the next message from the front of `buf`.
    ///
    /// When a complete frame is buffered it is split off (`split_to`, no
    /// copy) and unmasked in place. `Ok(None)`: read more bytes into `buf`
    /// and call again. Any error means the connection must be failed
    /// (RFC 6455 §7.1.7); `buf` is then in an unspecified state.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>> {
        loop {
            let Some(h) = parse_frame_header(buf)? else {
                return Ok(None);
            };
            match (self.role, h.mask) {
                (Role::Server, None) => {
                    return Err(DecodeError::Invalid(
                        "websocket frame from client not masked",
                    ))
                }
                (Role::Client, Some(_)) => {
                    return Err(DecodeError::Invalid("websocket frame from server masked"))
                }
                _ => {}
            }
            // Decide from the header alone, before buffering the payload.
            let so_far = match (h.opcode, &self.partial) {
                (Opcode::Continuation, Some((_, p))) => p.len() as u64,
                _ => 0,
            };
            if h.payload_len.saturating_add(so_far) > self.max_message as u64 {
                return Err(DecodeError::FieldTooLong("websocket message"));
            }
            // Fits in usize: bounded by max_message above.
            let total = h.header_len.saturating_add(h.payload_len as usize);
            if buf.len() < total {
                return Ok(None);
            }
            let mut payload = buf.split_to(total);
            payload.advance(h.header_len);
            if let Some(key) = h.mask {
                unmask(&mut payload, key);
            }
            match h.opcode {
                Opcode::Binary | Opcode::Text => {
                    if self.partial.is_some() {
                        return Err(DecodeError::Invalid(
                            "websocket data frame inside fragmented message",
                        ));
                    }
                    if h.fin {
                        return finish(h.opcode, payload).map(Some);
                    }
                    self.partial = Some((h.opcode, payload));
                }
                Opcode::Continuation => {
                    let Some((op, mut acc)) = self.partial.take() else {
                        return Err(DecodeError::Invalid(
                            "websocket continuation without a first frame",
                        ));
                    };
                    acc.extend_from_slice(&payload);
                    if h.fin {
                        return finish(op, acc).map(Some);
                    }
                    self.partial = Some((op, acc));
                }
                Opcode::Ping => return Ok(Some(Message::Ping(payload))),
                Opcode::Pong => return Ok(Some(Message::Pong(payload))),
                Opcode::Close => {
                    let (code, _) = parse_close_payload(&payload)?;
                    if code.is_some() {
                        payload.advance(2);
                    }
                    return Ok(Some(Message::Close(code, payload)));
                }
            }
        }
    }
}

/// Builds a complete data message; text must be UTF-8 (RFC 6455 §8.1).
#[inline]
fn finish(op: Opcode, payload: BytesMut) -> Result<Message> {
    if op == Opcode::Text {
        if core::str::from_utf8(&payload).is_err() {
            return Err(DecodeError::Invalid("websocket text not UTF-8"));
        }
        Ok(Message::Text(payload))
    } else {
        Ok(Message::Binary(payload))
    }
}

// ---------------------------------------------------------------------------
// Opening handshake (RFC 6455 §4).

/// GUID appended to the client key (RFC 6455 §1.3).
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest handshake request or response we accept.
pub const MAX_HANDSHAKE: usize = 8 * 1024;
/// Most header lines we accept in a handshake.
pub const MAX_HEADERS: usize = 32;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455
/// §4.2.2): base64(SHA-1(key ++ GUID)).
pub fn accept_key(sec_websocket_key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(sec_websocket_key);
    h.update(WS_GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A `Sec-WebSocket-Key` from 16 caller-supplied random bytes (RFC 6455
/// §4.1: base64 of a random 16-byte nonce; this crate has no RNG).
pub fn client_key(nonce: &[u8; 16]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// What the server needs from a client's upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHandshake<'a> {
    /// Request target, e.g. `/` or `/accounts/alice/ilp/btp`.
    pub path: &'a str,
    /// `Sec-WebSocket-Key` value.
    pub key: &'a [u8],
    /// `Authorization` header value, if any.
    pub authorization: Option<&'a [u8]>,
    /// `Host` header value, if any.
    pub host: Option<&'a [u8]>,
}

/// True when the comma-separated header `value` contains `token`
/// (ASCII case-insensitive), e.g. `Connection: keep-alive, Upgrade`.
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn map_httparse(e: httparse::Error) -> DecodeError {
    match e {
        httparse::Error::TooManyHeaders => DecodeError::FieldTooLong("http headers"),
        _ => DecodeError::Invalid("http syntax"),
    }
}

/// Parses a client's upgrade request (RFC 6455 §4.2.1). Returns the request
/// and the bytes it took; `Ok(None)` = incomplete. Refused: not GET, missing
/// `Upgrade: websocket`, `Connection` without `upgrade`, version other than
/// 13, no key, more than 32 headers or more than 8 KiB.
pub fn parse_client_handshake(buf: &[u8]) -> Result<Option<(ClientHandshake<'_>, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf).map_err(map_httparse)? {
        httparse::Status::Partial => {
            if buf.len() >= MAX_HANDSHAKE {
                return Err(DecodeError::FieldTooLong("http request"));
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => n,
    };
    if n > MAX_HANDSHAKE {
        return Err(DecodeError::FieldTooLong("http request"));
    }
    if req.method != Some("GET") {
        return Err(DecodeError::Invalid(
            "websocket handshake: method is not GET",
        ));
    }
    let path = req.path.ok_or(DecodeError::Invalid("http syntax"))?;
    let (mut upgrade, mut connection, mut version) = (false, false, false);
    let (mut key, mut authorization, mut host) = (None, None, None);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(h.value, b"websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= has_token(h.value, b"upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = h.value.trim_ascii() == b"13";
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(h.value.trim_ascii());
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(h.value);
        } else if name.eq_ignore_ascii_case("host") {
            host = Some(h.value);
        }
    }
    if !upgrade {
        return Err(DecodeError::Invalid(
            "websocket handshake: no Upgrade: websocket",
        ));
    }
    if !connection {
        return Err(DecodeError::Invalid(
            "websocket handshake: no Connection: upgrade",
        ));
    }
    if !version {
        return Err(DecodeError::Invalid(
            "websocket handshake: version is not 13",
        ));
    }
    let key = match key {
        Some(k) if !k.is_empty() => k,
        _ => {
            return Err(DecodeError::Invalid(
                "websocket handshake: no Sec-WebSocket-Key",
            ))
        }
    };
    Ok(Some((
        ClientHandshake {
            path,
            key,
            authorization,
            host,
        },
        n,
    )))
}

/// Writes the server's `101 Switching Protocols` answer (RFC 6455 §4.2.2).
pub fn write_server_handshake<B: BufMut>(buf: &mut B, accept: &str) {
    buf.put_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    buf.put_slice(accept.as_bytes());
    buf.put_slice(b"\r\n\r\n");
}

/// Writes a client's upgrade request (RFC 6455 §4.1); `key` from
/// [`client_key`].
pub fn write_client_handshake<B: BufMut>(buf: &mut B, host: &str, path: &str, key: &str) {
    write_client_handshake_with(buf, host, path, key, &[]);
}

/// Like [`write_client_handshake`] with extra header lines (name, value),
/// e.g. `Authorization`.
pub fn write_client_handshake_with<B: BufMut>(
    buf: &mut B,
    host: &str,
    path: &str,
    key: &str,
    extra: &[(&str, &str)],
) {
    buf.put_slice(b"GET ");
    buf.put_slice(if path.is_empty() {
        b"/"
    } else {
        path.as_bytes()
    });
    buf.put_slice(b" HTTP/1.1\r\nHost: ");
    buf.put_slice(host.as_bytes());
    buf.put_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    buf.put_slice(key.as_bytes());
    buf.put_slice(b"\r\nSec-WebSocket-Version: 13\r\n");
    for (n, v) in extra {
        buf.put_slice(n.as_bytes());
        buf.put_slice(b": ");
        buf.put_slice(v.as_bytes());
        buf.put_slice(b"\r\n");
    }
    buf.put_slice(b"\r\n");
}

/// Checks the server's answer (RFC 6455 §4.1): status 101, `Upgrade:
/// websocket`, `Connection: upgrade` and the expected accept value. Returns
/// the bytes it took (frames may follow in the same read); `Ok(None)` =
/// incomplete.
pub fn parse_server_handshake(buf: &[u8], expected_accept: &str) -> Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf).map_err(map_httparse)? {
        httparse::Status::Partial => {
            if buf.len() >= MAX_HANDSHAKE {
                return Err(DecodeError::FieldTooLong("http response"));
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => n,
    };
    if n > MAX_HANDSHAKE {
        return Err(DecodeError::FieldTooLong("http response"));
    }
    if resp.code != Some(101) {
        return Err(DecodeError::Invalid(
            "websocket handshake: status is not 101",
        ));
    }
    let (mut upgrade, mut connection, mut accept) = (false, false, false);
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(h.value, b"websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= has_token(h.value, b"upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept = h.value.trim_ascii() == expected_accept.as_bytes();
        }
    }
    if !upgrade || !connection {
        return Err(DecodeError::Invalid(
            "websocket handshake: no upgrade headers",
        ));
    }
    if !accept {
        return Err(DecodeError::Invalid(
            "websocket handshake: wrong Sec-WebSocket-Accept",
        ));
    }
    Ok(Some(n))
}

/// Writes a plain HTTP error answer to refuse a handshake, then the caller
/// closes. 426 adds `Sec-WebSocket-Version: 13` (RFC 6455 §4.4).
pub fn write_http_error<B: BufMut>(buf: &mut B, status: u16, reason: &str) {
    let mut digits = [b'0'; 3];
    let s = status.min(999);
    digits[0] += (s / 100) as u8;
    digits[1] += (s / 10 % 10) as u8;
    digits[2] += (s % 10) as u8;
    buf.put_slice(b"HTTP/1.1 ");
    buf.put_slice(&digits);
    buf.put_u8(b' ');
    buf.put_slice(reason.as_bytes());
    buf.put_slice(b"\r\n");
    if status == 426 {
        buf.put_slice(b"Sec-WebSocket-Version: 13\r\n");
    }
    buf.put_slice(b"Content-Length: 0\r\nConnection: close\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_rfc_example() {
        // RFC 6455 §1.3 (the brief quoted it truncated; this is the RFC value).
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(client_key(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn rfc_5_7_examples() {
        // RFC 6455 §5.7: unmasked "Hello", masked "Hello", 256 and 65536 bytes.
        let h = parse_frame_header(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, h.header_len),
            (true, Opcode::Text, None, 5, 2)
        );
        let mut f = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let h = parse_frame_header(&f).unwrap().unwrap();
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        unmask(&mut f[6..], [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&f[6..], b"Hello");
        let h = parse_frame_header(&[0x82, 0x7e, 0x01, 0x00])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, h.header_len), (256, 4));
        let h = parse_frame_header(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, h.header_len), (65536, 10));
        // Fragmented "Hel" + "lo", and a masked Ping.
        assert!(!parse_frame_header(&[0x01, 0x03]).unwrap().unwrap().fin);
        assert_eq!(
            parse_frame_header(&[0x80, 0x02]).unwrap().unwrap().opcode,
            Opcode::Continuation
        );
        assert_eq!(
            parse_frame_header(&[0x89, 0x05]).unwrap().unwrap().opcode,
            Opcode::Ping
        );
    }

    #[test]
    fn header_errors_and_partial() {
        assert_eq!(parse_frame_header(&[]), Ok(None));
        assert_eq!(parse_frame_header(&[0x82]), Ok(None));
        assert_eq!(parse_frame_header(&[0x82, 0x7e, 0x01]), Ok(None));
        assert_eq!(parse_frame_header(&[0x82, 0x85, 1, 2, 3]), Ok(None));
        assert!(parse_frame_header(&[0xc2, 0x00]).is_err()); // RSV1
        assert_eq!(
            parse_frame_header(&[0x83, 0x00]),
            Err(DecodeError::UnknownType(3))
        );
        assert!(parse_frame_header(&[0x09, 0x00]).is_err()); // fragmented ping
        assert!(parse_frame_header(&[0x89, 0x7e, 0, 126]).is_err()); // big ping
        assert_eq!(
            parse_frame_header(&[0x82, 0x7e, 0x00, 0x7d]),
            Err(DecodeError::NonCanonical)
        );
        assert_eq!(
            parse_frame_header(&[0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            Err(DecodeError::NonCanonical)
        );
        assert_eq!(
            parse_frame_header(&[0x82, 0x7f, 0x80, 0, 0, 0, 0, 1, 0, 0]),
            Err(DecodeError::BadLength)
        );
    }

    #[test]
    fn unmask_matches_bytewise() {
        let key = [0xa1, 0xb2, 0xc3, 0xd4];
        for n in 0..40 {
            let orig: Vec<u8> = (0..n as u8).collect();
            let mut fast = orig.clone();
            unmask(&mut fast, key);
            let slow: Vec<u8> = orig
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn header_lengths() {
        for n in [0usize, 125, 126, 65535, 65536] {
            for m in [None, Some([1, 2, 3, 4])] {
                let mut v = Vec::new();
                write_frame_header(&mut v, true, Opcode::Binary, n, m);
                assert_eq!(v.len(), frame_header_len(n, m.is_some()));
                let h = parse_frame_header(&v).unwrap().unwrap();
                assert_eq!(
                    (h.payload_len, h.header_len, h.mask),
                    (n as u64, v.len(), m)
                );
            }
        }
    }

    #[test]
    fn decoder_roles_and_limits() {
        let mut d = Decoder::new(Role::Server, 1000);
        let mut b = BytesMut::new();
        write_frame(&mut b, Opcode::Binary, b"abc", None);
        assert!(d.decode(&mut b).is_err());

        let mut d = Decoder::new(Role::Client, 1000);
        let mut b = BytesMut::new();
        write_frame(&mut b, Opcode::Binary, b"abc", Some([9, 8, 7, 6]));
        assert!(d.decode(&mut b).is_err());

        // Oversized frame refused from its header alone.
        let mut d = Decoder::new(Role::Client, 1000);
        let mut b = BytesMut::new();
        write_frame_header(&mut b, true, Opcode::Binary, 1001, None);
        assert_eq!(
            d.decode(&mut b),
            Err(DecodeError::FieldTooLong("websocket message"))
        );

        // Fragments adding up past the limit.
        let mut d = Decoder::new(Role::Client, 10);
        let mut b = BytesMut::new();
        write_fragment(&mut b, false, Opcode::Binary, &[1; 6], None);
        write_fragment(&mut b, true, Opcode::Continuation, &[1; 5], None);
        assert_eq!(
            d.decode(&mut b),
            Err(DecodeError::FieldTooLong("websocket message"))
        );
    }

    #[test]
    fn decoder_fragments_with_interleaved_ping_and_close() {
        let key = Some([1, 2, 3, 4]);
        let mut b = BytesMut::new();
        write_fragment(&mut b, false, Opcode::Binary, b"hel", key);
        write_frame(&mut b, Opcode::Ping, b"p", key);
        write_fragment(&mut b, false, Opcode::Continuation, b"lo ", key);
        write_fragment(&mut b, true, Opcode::Continuation, b"world", key);
        write_close(&mut b, 1000, b"bye", key);
        let mut d = Decoder::new(Role::Server, 100);
        assert_eq!(
            d.decode(&mut b),
            Ok(Some(Message::Ping(BytesMut::from(&b"p"[..]))))
        );
        assert!(d.in_fragmented_message());
        assert_eq!(
            d.decode(&mut b),
            Ok(Some(Message::Binary(BytesMut::from(&b"hello world"[..]))))
        );
        assert_eq!(
            d.decode(&mut b),
            Ok(Some(Message::Close(
                Some(1000),
                BytesMut::from(&b"bye"[..])
            )))
        );
        assert_eq!(d.decode(&mut b), Ok(None));
        assert!(b.is_empty());
    }

    #[test]
    fn decoder_text_must_be_utf8() {
        let mut d = Decoder::new(Role::Client, 100);
        let mut b = BytesMut::new();
        write_frame(&mut b, Opcode::Text, "héllo".as_bytes(), None);
        assert_eq!(
            d.decode(&mut b),
            Ok(Some(Message::Text(BytesMut::from("héllo".as_bytes()))))
        );
        write_frame(&mut b, Opcode::Text, &[0xff, 0xfe], None);
        assert!(d.decode(&mut b).is_err());
        // A continuation with no first frame is refused too.
        let mut d = Decoder::new(Role::Client, 100);
        let mut b = BytesMut::new();
        write_fragment(&mut b, true, Opcode::Continuation, b"x", None);
        assert!(d.decode(&mut b).is_err());
        // So is a new data frame inside a fragmented message.
        let mut d = Decoder::new(Role::Client, 100);
        let mut b = BytesMut::new();
        write_fragment(&mut b, false, Opcode::Binary, b"x", None);
        write_frame(&mut b, Opcode::Binary, b"y", None);
        assert!(d.decode(&mut b).is_err());
    }

    #[test]
    fn mask_in_place_after_writing_payload() {
        // The client send path from the module docs: header, BTP packet,
        // then mask the packet where it lies.
        let key = [0xde, 0xad, 0xbe, 0xef];
        let ilp = [0x0c; 150];
        let len = crate::btp::ilp_message_len(ilp.len());
        let mut b = BytesMut::with_capacity(frame_header_len(len, true) + len);
        write_frame_header(&mut b, true, Opcode::Binary, len, Some(key));
        let start = b.len();
        crate::btp::write_ilp_message(&mut b, 9, &ilp);
        unmask(&mut b[start..], key);
        assert_eq!(b.len(), frame_header_len(len, true) + len);
        let mut plain = Vec::new();
        crate::btp::write_ilp_message(&mut plain, 9, &ilp);
        let mut d = Decoder::new(Role::Server, 1000);
        assert_eq!(
            d.decode(&mut b),
            Ok(Some(Message::Binary(BytesMut::from(&plain[..]))))
        );
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close_payload(&[]), Ok((None, &[][..])));
        assert!(parse_close_payload(&[3]).is_err());
        assert!(parse_close_payload(&[0x03, 0xed]).is_err()); // 1005
        assert!(parse_close_payload(&[0x03, 0xe8, 0xff]).is_err()); // bad UTF-8
        assert_eq!(
            parse_close_payload(&[0x0f, 0xa0, b'x']),
            Ok((Some(4000), &b"x"[..]))
        );
        let mut v = Vec::new();
        write_close(&mut v, 1001, &[b'a'; 200], None);
        assert_eq!(v.len(), 2 + 125);
    }

    #[test]
    fn handshake_round_trip() {
        let key = client_key(&[7; 16]);
        let mut req = Vec::new();
        write_client_handshake_with(
            &mut req,
            "127.0.0.1:7768",
            "/btp",
            &key,
            &[("Authorization", "Bearer x")],
        );
        for cut in 0..req.len() {
            assert_eq!(parse_client_handshake(&req[..cut]), Ok(None));
        }
        let (h, n) = parse_client_handshake(&req).unwrap().unwrap();
        assert_eq!(n, req.len());
        assert_eq!(h.path, "/btp");
        assert_eq!(h.key, key.as_bytes());
        assert_eq!(h.authorization, Some(&b"Bearer x"[..]));
        assert_eq!(h.host, Some(&b"127.0.0.1:7768"[..]));

        let accept = accept_key(h.key);
        let mut resp = Vec::new();
        write_server_handshake(&mut resp, &accept);
        resp.extend_from_slice(&[0x82, 0x00]);
        assert_eq!(parse_server_handshake(&resp[..10], &accept), Ok(None));
        assert_eq!(
            parse_server_handshake(&resp, &accept),
            Ok(Some(resp.len() - 2))
        );
        assert!(parse_server_handshake(&resp, "wrong").is_err());

        let mut err = Vec::new();
        write_http_error(&mut err, 426, "Upgrade Required");
        assert!(err.starts_with(b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(parse_server_handshake(&err, &accept).is_err());
    }

    #[test]
    fn handshake_refusals() {
        let ok = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert!(parse_client_handshake(ok.as_bytes()).unwrap().is_some());
        for (from, to) in [
            ("GET", "POST"),
            ("Upgrade: WebSocket", "Upgrade: h2c"),
            ("keep-alive, Upgrade", "keep-alive"),
            ("Version: 13", "Version: 8"),
            ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
        ] {
            assert!(
                parse_client_handshake(ok.replace(from, to).as_bytes()).is_err(),
                "{to}"
            );
        }
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let req = ok.replace("Host: h\r\n", &many);
        assert_eq!(
            parse_client_handshake(req.as_bytes()),
            Err(DecodeError::FieldTooLong("http headers"))
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert!(parse_client_handshake(big.as_bytes()).is_err());
    }
}

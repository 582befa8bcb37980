//! ILP-over-HTTP and the idempotent link variants, sans-IO (RFC 35 and the
//! node-roles draft; docs/design.md "ILP over HTTP").
//!
//! - [`server`]: parses requests out of a connection's read buffer and keeps
//!   the responses in request order (HTTP/1.1 pipelining).
//! - [`client`]: writes requests and parses responses for a keep-alive pool.
//! - [`idempotency`]: the bounded, expiring memory of answered requests that
//!   HTTP-OER-* and BTP/2.0-I use so a repeated Prepare is never forwarded
//!   (nor charged) twice.
//!
//! No sockets and no clock here: the mio worker owns those and drives these
//! types with bytes and `now`, the same way it drives the BTP decoder.

pub mod client;
pub mod driver;
pub mod idempotency;
pub mod server;

use std::fmt;
use std::net::SocketAddr;

use bytes::BufMut;
use serde::Deserialize;

use crate::core::AccountId;

/// Largest request or response body accepted by default: room for the
/// largest legal Prepare (33,857 bytes) or Fulfill, though not for a Reject
/// with the longest message (docs/design.md "Size limits"); interledger-rs
/// uses 40000 too.
pub const DEFAULT_MAX_BODY: usize = 40_000;
/// Largest request/response head (request line plus headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in one request or response.
pub const MAX_HEADERS: usize = 32;
/// Longest request id we accept from a peer (a UUID is 36).
pub const MAX_REQUEST_ID: usize = 64;

/// Which bilateral link an account speaks (RFC 35 and the node-roles draft;
/// docs/design.md "ILP over HTTP").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum LinkKind {
    /// BTP/2.0 over WebSocket (RFC 23).
    #[default]
    #[serde(rename = "btp")]
    Btp,
    /// BTP/2.0-I: BTP with repeated requests and remembered responses.
    #[serde(rename = "btp-i")]
    BtpI,
    /// RFC 35 synchronous: the reply is the body of the `200`.
    #[serde(rename = "http")]
    Http,
    /// RFC 35 asynchronous: `Prefer: respond-async`, `202`, reply POSTed to
    /// the `Callback-Url` with the same `Request-Id`.
    #[serde(rename = "http-async")]
    HttpAsync,
    /// Node roles HTTP-OER-SYNC: `POST /ilp/<id>`, reply in the `200` body,
    /// repeated until answered.
    #[serde(rename = "http-oer-sync")]
    HttpOerSync,
    /// Node roles HTTP-OER-ASYNC: `POST /ilp/<id>` answered `200` empty,
    /// the reply POSTed back to `/ilp/<same id>`.
    #[serde(rename = "http-oer-async")]
    HttpOerAsync,
}

impl LinkKind {
    pub fn is_http(self) -> bool {
        !matches!(self, LinkKind::Btp | LinkKind::BtpI)
    }

    /// Links where a repeated request must get the remembered answer.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            LinkKind::BtpI | LinkKind::HttpOerSync | LinkKind::HttpOerAsync
        )
    }

    /// Links where the reply travels in its own request, not the response.
    pub fn is_async(self) -> bool {
        matches!(self, LinkKind::HttpAsync | LinkKind::HttpOerAsync)
    }

    pub fn label(self) -> &'static str {
        match self {
            LinkKind::Btp => "btp",
            LinkKind::BtpI => "btp-i",
            LinkKind::Http => "http",
            LinkKind::HttpAsync => "http-async",
            LinkKind::HttpOerSync => "http-oer-sync",
            LinkKind::HttpOerAsync => "http-oer-async",
        }
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What the server needs to know about accounts (the worker implements it
/// over `core::Shared`; tests over a table).
pub trait Accounts {
    /// Constant-time bearer token check (`Shared::authenticate(None, ..)`).
    fn authenticate(&self, token: &[u8]) -> Option<AccountId>;
    /// The account's configured id (for `/accounts/<id>/ilp` paths).
    fn name(&self, id: AccountId) -> &str;
    /// The link the account speaks.
    fn link(&self, id: AccountId) -> LinkKind;
    /// The node's SPSP receivers (RFC 9; docs/stream.md "Receiving in
    /// ilpd"), if it has any.
    fn spsp(&self) -> Option<&dyn Spsp> {
        None
    }
}

/// What the server asks about receiver accounts when answering SPSP
/// (`core::Shared` implements it).
pub trait Spsp {
    /// Whether `name` is a receiver account (`None`: whether there is a
    /// default receiver for `/.well-known/pay`).
    fn receiver_exists(&self, name: Option<&str>) -> bool;
    /// The SPSP response body with a fresh connection token.
    fn spsp_response(
        &self,
        name: Option<&str>,
        receipt: Option<&ilpd_stream::receipt::ReceiptParams>,
    ) -> Result<String, crate::core::SpspRefusal>;
}

/// A parsed `http://host[:port][/path]` URL. TLS is left to a terminator in
/// front (docs/http.md), so `https://` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Request target, always starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses the URL. Userinfo is refused: tokens belong in the config's
    /// token fields so they are never logged as part of a URL.
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("{url:?} must start with http:// (put a TLS terminator in front for https)")
        })?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
            Some(_) => return Err(format!("{url:?}: query strings are not supported")),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not allowed; use the token settings".into());
        }
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "{url:?}: the path has spaces or control characters"
            ));
        }
        let (host, port) = crate::io::client::parse_authority(authority)?;
        if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("missing or malformed host".into());
        }
        Ok(HttpUrl {
            host,
            port,
            path: path.to_string(),
        })
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        crate::io::client::host_header(&self.host, self.port)
    }

    /// Resolves the host (blocking DNS: cold path, once per dial).
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        crate::io::client::resolve(&self.host, self.port)
    }

    /// The node-roles path for a packet: `<path>/ilp/<request id>`
    /// (docs/design.md "Node-roles links"), where the configured path is the
    /// peer's base (`/` usually).
    pub fn oer_path(&self, id: &ReqId) -> String {
        let base = self.path.trim_end_matches('/');
        let base = base.strip_suffix("/ilp").unwrap_or(base);
        format!("{base}/ilp/{}", id.as_str())
    }
}

/// A request id as it travels in `Request-Id` or `/ilp/<id>`: 1 to
/// [`MAX_REQUEST_ID`] bytes of `[A-Za-z0-9._~-]` (a UUID fits). Copy, no
/// allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReqId {
    len: u8,
    bytes: [u8; MAX_REQUEST_ID],
}

impl ReqId {
    /// Checks a peer-supplied id; `None` if empty, too long, or with other
    /// characters (so it is safe in a path, a header and a log line).
    pub fn parse(b: &[u8]) -> Option<ReqId> {
        if b.is_empty()
            || b.len() > MAX_REQUEST_ID
            || !b
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._~-".contains(c))
        {
            return None;
        }
        let mut bytes = [0u8; MAX_REQUEST_ID];
        bytes[..b.len()].copy_from_slice(b);
        Some(ReqId {
            len: b.len() as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII was admitted by `parse` / written by `ours`.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// An id for one of our own outgoing requests, shaped like a UUIDv4
    /// (RFC 35 asks for one) and carrying where its answer must go: the
    /// origin worker and its `OutId`, plus a nonce so a stale or forged
    /// answer for a reused `OutId` is told apart.
    pub fn ours(worker: u16, out_id: u32, nonce: u64) -> ReqId {
        let mut raw = [0u8; 16];
        raw[0..2].copy_from_slice(&worker.to_be_bytes());
        raw[2..6].copy_from_slice(&out_id.to_be_bytes());
        let n = nonce.to_be_bytes();
        raw[6] = 0x40; // version 4
        raw[7] = n[0];
        raw[8] = 0x80; // RFC 4122 variant
        raw[9..16].copy_from_slice(&n[1..8]);
        let mut bytes = [0u8; MAX_REQUEST_ID];
        let mut j = 0;
        for (i, b) in raw.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                bytes[j] = b'-';
                j += 1;
            }
            bytes[j] = HEX[(b >> 4) as usize];
            bytes[j + 1] = HEX[(b & 15) as usize];
            j += 2;
        }
        ReqId { len: 36, bytes }
    }

    /// Reads back what [`ReqId::ours`] packed: (worker, out_id, nonce).
    /// `None` for any other shape.
    pub fn decode_ours(&self) -> Option<(u16, u32, u64)> {
        let s = self.as_bytes();
        if s.len() != 36 {
            return None;
        }
        let mut raw = [0u8; 16];
        let mut k = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if s[i] != b'-' {
                    return None;
                }
                i += 1;
                continue;
            }
            let hi = hex_val(s[i])?;
            let lo = hex_val(*s.get(i + 1)?)?;
            raw[k] = hi << 4 | lo;
            k += 1;
            i += 2;
        }
        if raw[6] != 0x40 || raw[8] != 0x80 {
            return None;
        }
        let worker = u16::from_be_bytes([raw[0], raw[1]]);
        let out_id = u32::from_be_bytes([raw[2], raw[3], raw[4], raw[5]]);
        let mut n = [0u8; 8];
        n[0] = raw[7];
        n[1..8].copy_from_slice(&raw[9..16]);
        Some((worker, out_id, u64::from_be_bytes(n)))
    }
}

impl fmt::Debug for ReqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReqId({})", self.as_str())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Reason phrase for the statuses we send.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Writes one response head; the body (`body_len` bytes) follows. Packet
/// bodies are `application/octet-stream` (RFC 35), error bodies short text.
pub fn write_response_head<B: BufMut>(
    out: &mut B,
    status: u16,
    octets: bool,
    body_len: usize,
    close: bool,
) {
    out.put_slice(b"HTTP/1.1 ");
    put_decimal(out, status as u64);
    out.put_u8(b' ');
    out.put_slice(reason(status).as_bytes());
    out.put_slice(if octets {
        &b"\r\nContent-Type: application/octet-stream\r\nContent-Length: "[..]
    } else {
        &b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "[..]
    });
    put_decimal(out, body_len as u64);
    if status == 405 {
        out.put_slice(b"\r\nAllow: POST");
    }
    end_head(out, close);
}

/// Writes the head of an SPSP answer (RFC 9 "Response"): the JSON body, a
/// fresh connection token each time, so never cached; or a 405 on an SPSP
/// path (`Allow: GET`).
pub fn write_spsp_head<B: BufMut>(out: &mut B, status: u16, body_len: usize, close: bool) {
    out.put_slice(b"HTTP/1.1 ");
    put_decimal(out, status as u64);
    out.put_u8(b' ');
    out.put_slice(reason(status).as_bytes());
    if status == 200 {
        out.put_slice(b"\r\nContent-Type: ");
        out.put_slice(ilpd_stream::spsp::CONTENT_TYPE.as_bytes());
        out.put_slice(b"\r\nCache-Control: no-store");
    } else {
        out.put_slice(b"\r\nContent-Type: text/plain; charset=utf-8");
    }
    if status == 405 {
        out.put_slice(b"\r\nAllow: GET");
    }
    out.put_slice(b"\r\nContent-Length: ");
    put_decimal(out, body_len as u64);
    end_head(out, close);
}

fn end_head<B: BufMut>(out: &mut B, close: bool) {
    if close {
        out.put_slice(b"\r\nConnection: close");
    }
    out.put_slice(b"\r\n\r\n");
}

/// ASCII decimal without allocating.
pub fn put_decimal<B: BufMut>(out: &mut B, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&tmp[i..]);
}

/// Strict `Content-Length` value: ASCII digits only, no sign, no spaces
/// inside (RFC 9110 §8.6), at most 9 digits so it cannot overflow.
pub(crate) fn parse_content_length(v: &[u8]) -> Option<usize> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0usize, |a, &d| a * 10 + (d - b'0') as usize))
}

/// `Connection` header tokens: does it list `token`?
pub(crate) fn has_token(v: &[u8], token: &str) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_kinds_deserialize_from_their_config_names() {
        #[derive(Deserialize)]
        struct T {
            link: LinkKind,
        }
        for k in [
            LinkKind::Btp,
            LinkKind::BtpI,
            LinkKind::Http,
            LinkKind::HttpAsync,
            LinkKind::HttpOerSync,
            LinkKind::HttpOerAsync,
        ] {
            let t: T = toml::from_str(&format!("link = \"{}\"", k.label())).unwrap();
            assert_eq!(t.link, k);
        }
        assert!(toml::from_str::<T>("link = \"ws\"").is_err());
        assert!(LinkKind::HttpOerAsync.is_async() && LinkKind::HttpOerAsync.is_idempotent());
        assert!(!LinkKind::Http.is_idempotent() && LinkKind::Http.is_http());
        assert!(!LinkKind::BtpI.is_http() && LinkKind::BtpI.is_idempotent());
    }

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/accounts/a/ilp").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8080));
        assert_eq!(u.path, "/accounts/a/ilp");
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        let u = HttpUrl::parse("http://localhost").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = HttpUrl::parse("http://[::1]:9/x").unwrap();
        assert_eq!(u.host_header(), "[::1]:9");
        for bad in [
            "https://x/",
            "http://",
            "http://h:p/",
            "http://tok@h:1/",
            "http://h:1/a b",
            "http://h:1?x=1",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
        let id = ReqId::parse(b"abc").unwrap();
        assert_eq!(
            HttpUrl::parse("http://h/").unwrap().oer_path(&id),
            "/ilp/abc"
        );
        assert_eq!(
            HttpUrl::parse("http://h/ilp").unwrap().oer_path(&id),
            "/ilp/abc"
        );
        assert_eq!(
            HttpUrl::parse("http://h/p/").unwrap().oer_path(&id),
            "/p/ilp/abc"
        );
    }

    #[test]
    fn request_ids_round_trip_and_look_like_uuids() {
        for (w, o, n) in [
            (0u16, 0u32, 0u64),
            (1, 7, u64::MAX),
            (65535, u32::MAX, 0x0123_4567_89ab_cdef),
        ] {
            let id = ReqId::ours(w, o, n);
            let s = id.as_str();
            assert_eq!(s.len(), 36);
            let parts: Vec<&str> = s.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(parts[2].starts_with('4'), "version nibble: {s}");
            assert!(parts[3].starts_with('8'), "variant: {s}");
            assert_eq!(id.decode_ours(), Some((w, o, n)));
            assert_eq!(ReqId::parse(s.as_bytes()), Some(id));
            // Upper case hex decodes too (a peer may echo it so).
            let up = ReqId::parse(s.to_uppercase().as_bytes()).unwrap();
            assert_eq!(up.decode_ours(), Some((w, o, n)));
        }
        assert_eq!(
            ReqId::parse(b"42ee09c8-a6de-4ae3-8a47-4732b0cbb07b")
                .unwrap()
                .decode_ours(),
            None
        );
        for bad in [&b""[..], b"a/b", b"a b", b"\xff", &[b'a'; 65]] {
            assert!(ReqId::parse(bad).is_none(), "{bad:?}");
        }
        assert!(ReqId::parse(&[b'a'; 64]).is_some());
    }

    #[test]
    fn response_heads() {
        let mut b = Vec::new();
        write_response_head(&mut b, 200, true, 12, false);
        assert_eq!(
            b,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 12\r\n\r\n"
        );
        let mut b = Vec::new();
        write_response_head(&mut b, 405, false, 0, true);
        let s = String::from_utf8(b).unwrap();
        assert!(s.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(s.contains("\r\nAllow: POST\r\n") && s.ends_with("Connection: close\r\n\r\n"));
        assert_eq!(parse_content_length(b" 40000 "), Some(40000));
        for bad in [&b""[..], b"-1", b"+1", b"1 2", b"0x10", b"1234567890"] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
        assert!(has_token(b"keep-alive, Close", "close"));
        assert!(!has_token(b"closed", "close"));
    }
}

//! The server side of an ILP-over-HTTP connection, sans-IO (RFC 35 and the
//! node-roles draft; docs/design.md "ILP over HTTP").
//!
//! [`ServerConn::next`] takes complete requests off the connection's read
//! buffer: the head is parsed with httparse, the body is split off the
//! buffer without copying, and every check a peer can fail (method, path,
//! token, content type, framing, size, packet type) is answered with a clear
//! `4xx` here, before anything reaches the core. Responses go out in request
//! order whatever order the answers arrive in (HTTP/1.1 pipelining): each
//! request holds a slot in a queue, and [`ServerConn::respond`] writes the
//! longest ready prefix of it.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use ilpd_codec::ilp::{Fulfill, Prepare, Reject};

use super::{
    has_token, parse_content_length, write_response_head, write_spsp_head, Accounts, HttpUrl,
    ReqId, Spsp, MAX_HEAD, MAX_HEADERS,
};
use crate::core::{AccountId, SpspRefusal};

/// Default bound on requests a connection may have waiting for answers;
/// past it the worker stops reading that connection (back-pressure).
pub const DEFAULT_MAX_PIPELINE: usize = 4096;

/// What a request asks for (docs/design.md "RFC 35", "Node-roles links").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// RFC 35 synchronous: answer `200` with the Fulfill or Reject.
    Sync,
    /// RFC 35 asynchronous Prepare (`Prefer: respond-async`): answer `202`
    /// now, POST the reply to `callback` with the same `Request-Id`.
    Async {
        callback: HttpUrl,
        request_id: ReqId,
    },
    /// A Fulfill or Reject answering one of our own requests: RFC 35 async
    /// (`Request-Id` header) or HTTP-OER-ASYNC (`/ilp/<id>` path).
    Reply { request_id: ReqId },
    /// A node-roles Prepare at `/ilp/<id>` (HTTP-OER-SYNC or -ASYNC,
    /// depending on the account's link).
    Oer { request_id: ReqId },
}

/// One checked request: an authenticated account, what it asks for, and
/// the body (split off the read buffer, not copied).
#[derive(Debug)]
pub struct Request {
    /// Its response slot; pass it to [`ServerConn::respond`].
    pub seq: u32,
    pub account: AccountId,
    pub kind: Kind,
    pub body: BytesMut,
}

/// What [`ServerConn::next`] found.
#[derive(Debug)]
pub enum Next {
    Request(Request),
    /// Needs more bytes, or too many answers are outstanding.
    Blocked,
    /// No more requests will be read; close once [`ServerConn::should_close`].
    Closing,
}

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// An ILP packet (`application/octet-stream`).
    Packet(BytesMut),
    /// A remembered ILP packet (idempotency cache).
    Shared(Bytes),
    /// A short text explaining an error.
    Text(&'static str),
    Empty,
    /// An SPSP response body (RFC 9 "Response"), or on an SPSP path a
    /// short text (a 405 there allows GET).
    Spsp(String),
    SpspText(&'static str),
}

impl Body {
    fn parts(&self) -> (bool, &[u8]) {
        match self {
            Body::Packet(b) => (true, &b[..]),
            Body::Shared(b) => (true, &b[..]),
            Body::Text(t) | Body::SpspText(t) => (false, t.as_bytes()),
            Body::Empty => (true, &[]),
            Body::Spsp(j) => (false, j.as_bytes()),
        }
    }
}

#[derive(Debug)]
enum Slot {
    Waiting,
    Ready {
        status: u16,
        body: Body,
        close: bool,
    },
}

/// Server-side state of one connection.
#[derive(Debug)]
pub struct ServerConn {
    queue: VecDeque<Slot>,
    /// Sequence number of `queue[0]`.
    head_seq: u32,
    next_seq: u32,
    closing: bool,
    /// `100 Continue` already sent for the request being received.
    continued: bool,
    /// The connection is closing because a request failed auth (401).
    auth_failed: bool,
    pub max_body: usize,
    pub max_pipeline: usize,
}

impl ServerConn {
    pub fn new(max_body: usize) -> ServerConn {
        ServerConn {
            queue: VecDeque::new(),
            head_seq: 0,
            next_seq: 0,
            closing: false,
            continued: false,
            auth_failed: false,
            max_body,
            max_pipeline: DEFAULT_MAX_PIPELINE,
        }
    }

    /// No more requests are read (an error closed it, or the peer asked).
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Closing and every response written: the socket can be closed once
    /// the output is flushed.
    pub fn should_close(&self) -> bool {
        self.closing && self.queue.is_empty()
    }

    /// Requests still waiting for their answer (or behind one that is).
    pub fn outstanding(&self) -> usize {
        self.queue.len()
    }

    /// Stop reading requests (shutdown, timeout); pending answers still go
    /// out.
    /// Whether the connection closes because of a failed auth (once).
    pub fn take_auth_failed(&mut self) -> bool {
        std::mem::take(&mut self.auth_failed)
    }

    pub fn close_after_pending(&mut self) {
        self.closing = true;
    }

    /// Takes the next complete request off `rbuf`. Bad requests are
    /// answered here (in order, through the queue) and never returned.
    pub fn next<A: Accounts + ?Sized>(
        &mut self,
        rbuf: &mut BytesMut,
        accounts: &A,
        wbuf: &mut BytesMut,
    ) -> Next {
        loop {
            if self.closing {
                return Next::Closing;
            }
            if self.queue.len() >= self.max_pipeline || rbuf.is_empty() {
                return Next::Blocked;
            }
            match self.parse_one(rbuf, accounts) {
                Parsed::Partial { expect_continue } => {
                    if expect_continue && !self.continued && self.queue.is_empty() {
                        // RFC 9110 §10.1.1: tell a waiting client to send
                        // the body (only when no earlier response is due).
                        wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        self.continued = true;
                    }
                    return Next::Blocked;
                }
                Parsed::Fatal(status, text) => {
                    self.auth_failed |= status == 401;
                    self.push_ready(status, Body::Text(text), true, wbuf);
                    return Next::Closing;
                }
                Parsed::Refused(status, text, close) => {
                    self.continued = false;
                    self.push_ready(status, Body::Text(text), close, wbuf);
                }
                Parsed::Answered(status, body, close) => {
                    self.continued = false;
                    self.push_ready(status, body, close, wbuf);
                }
                Parsed::Ok(account, kind, body, close) => {
                    self.continued = false;
                    let seq = self.next_seq;
                    self.next_seq = self.next_seq.wrapping_add(1);
                    self.queue.push_back(Slot::Waiting);
                    if close {
                        self.closing = true;
                    }
                    return Next::Request(Request {
                        seq,
                        account,
                        kind,
                        body,
                    });
                }
            }
        }
    }

    /// Fills request `seq`'s response and writes every response that is now
    /// due, in order. Returns false if `seq` is unknown or already answered.
    pub fn respond(&mut self, seq: u32, status: u16, body: Body, wbuf: &mut BytesMut) -> bool {
        let idx = seq.wrapping_sub(self.head_seq) as usize;
        match self.queue.get_mut(idx) {
            Some(slot @ Slot::Waiting) => {
                *slot = Slot::Ready {
                    status,
                    body,
                    close: false,
                };
                self.emit(wbuf);
                true
            }
            _ => false,
        }
    }

    fn push_ready(&mut self, status: u16, body: Body, close: bool, wbuf: &mut BytesMut) {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.queue.push_back(Slot::Ready {
            status,
            body,
            close,
        });
        if close {
            self.closing = true;
        }
        self.emit(wbuf);
    }

    fn emit(&mut self, wbuf: &mut BytesMut) {
        while let Some(Slot::Ready { .. }) = self.queue.front() {
            let Some(Slot::Ready {
                status,
                body,
                close,
            }) = self.queue.pop_front()
            else {
                break;
            };
            self.head_seq = self.head_seq.wrapping_add(1);
            // The last response before closing says so.
            let close = close || (self.closing && self.queue.is_empty());
            let (octets, bytes) = body.parts();
            if matches!(body, Body::Spsp(_) | Body::SpspText(_)) {
                write_spsp_head(wbuf, status, bytes.len(), close);
            } else {
                write_response_head(wbuf, status, octets, bytes.len(), close);
            }
            wbuf.extend_from_slice(bytes);
            if close {
                self.closing = true;
                self.queue.clear();
                return;
            }
        }
    }

    fn parse_one<A: Accounts + ?Sized>(&self, rbuf: &mut BytesMut, accounts: &A) -> Parsed {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(rbuf) {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
            Ok(httparse::Status::Complete(_)) => {
                return Parsed::Fatal(431, "request head over 8 KiB\n")
            }
            Ok(httparse::Status::Partial) if rbuf.len() > MAX_HEAD => {
                return Parsed::Fatal(431, "request head over 8 KiB\n")
            }
            Ok(httparse::Status::Partial) => {
                return Parsed::Partial {
                    expect_continue: false,
                }
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Parsed::Fatal(431, "more than 32 headers\n")
            }
            Err(_) => return Parsed::Fatal(400, "malformed HTTP request\n"),
        };
        let http10 = req.version == Some(0);
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut close = http10;
        let mut token: Option<&[u8]> = None;
        let mut ctype_ok = true;
        let mut prefer_async = false;
        let mut callback: Option<&[u8]> = None;
        let mut request_id: Option<&[u8]> = None;
        let mut expect_continue = false;
        let mut accept: Option<&[u8]> = None;
        let mut receipt_nonce: Option<&[u8]> = None;
        let mut receipt_secret: Option<&[u8]> = None;
        for h in req.headers.iter() {
            let n = h.name;
            let v = h.value;
            if n.eq_ignore_ascii_case("content-length") {
                match parse_content_length(v) {
                    Some(l) if content_length.is_none_or(|c| c == l) => content_length = Some(l),
                    _ => return Parsed::Fatal(400, "bad Content-Length\n"),
                }
            } else if n.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            } else if n.eq_ignore_ascii_case("connection") {
                if has_token(v, "close") {
                    close = true;
                } else if has_token(v, "keep-alive") {
                    close = false;
                }
            } else if n.eq_ignore_ascii_case("authorization") {
                // RFC 6750 §2.1: `Bearer <token>`, scheme case-insensitive.
                token = match v.get(..7) {
                    Some(s) if s.eq_ignore_ascii_case(b"bearer ") => Some(v[7..].trim_ascii()),
                    _ => None,
                };
            } else if n.eq_ignore_ascii_case("content-type") {
                ctype_ok = content_type_ok(v);
            } else if n.eq_ignore_ascii_case("prefer") {
                prefer_async = has_token(v, "respond-async");
            } else if n.eq_ignore_ascii_case("callback-url") {
                callback = Some(v);
            } else if n.eq_ignore_ascii_case("request-id") {
                request_id = Some(v.trim_ascii());
            } else if n.eq_ignore_ascii_case("expect") {
                expect_continue = has_token(v, "100-continue");
            } else if n.eq_ignore_ascii_case("accept") {
                accept = Some(v);
            } else if n.eq_ignore_ascii_case("receipt-nonce") {
                receipt_nonce = Some(v.trim_ascii());
            } else if n.eq_ignore_ascii_case("receipt-secret") {
                receipt_secret = Some(v.trim_ascii());
            }
        }
        // Framing first: without a trustworthy length the connection cannot
        // go on, so these close it (request smuggling defence, RFC 9112 §6.3).
        if chunked {
            return if content_length.is_some() {
                Parsed::Fatal(400, "both Transfer-Encoding and Content-Length\n")
            } else {
                Parsed::Fatal(
                    411,
                    "chunked bodies are not accepted; send Content-Length\n",
                )
            };
        }
        let is_post = req.method == Some("POST");
        let body_len = match content_length {
            Some(l) => l,
            None if is_post => return Parsed::Fatal(411, "Content-Length required\n"),
            None => 0,
        };
        if body_len > self.max_body {
            return Parsed::Fatal(413, "body over the size limit\n");
        }
        if rbuf.len() < head_len + body_len {
            let need = head_len + body_len - rbuf.len();
            if rbuf.capacity() - rbuf.len() < need {
                rbuf.reserve(need);
            }
            return Parsed::Partial { expect_continue };
        }
        // The whole request is here: from now on a refusal skips the body
        // and the connection stays usable.
        let path = req.path.unwrap_or("");
        let refuse = |status, text| Parsed::Refused(status, text, close);
        // SPSP (RFC 9): GET needs no token; the answer is built here.
        if let Some(target) = spsp_path(path) {
            let spsp = accounts.spsp();
            if req.method == Some("GET") {
                let (status, body) =
                    spsp_answer(spsp, target, accept, receipt_nonce, receipt_secret);
                let _ = rbuf.split_to(head_len + body_len);
                return Parsed::Answered(status, body, close);
            }
            if !is_post || spsp.is_some_and(|s| s.receiver_exists(target)) {
                let _ = rbuf.split_to(head_len + body_len);
                let text = "an SPSP endpoint: only GET is served\n";
                return Parsed::Answered(405, Body::SpspText(text), close);
            }
        }
        if !is_post {
            let _ = rbuf.split_to(head_len + body_len);
            return refuse(405, "only POST is served\n");
        }
        enum Route<'p> {
            Plain,
            Account(&'p str),
            Oer(Option<ReqId>),
        }
        let route = if path == "/" || path == "/ilp" {
            Route::Plain
        } else if let Some(id) = path.strip_prefix("/ilp/") {
            Route::Oer(ReqId::parse(id.as_bytes()))
        } else if let Some(name) = path
            .strip_prefix("/accounts/")
            .and_then(|p| p.strip_suffix("/ilp"))
            .filter(|n| !n.is_empty() && !n.contains('/'))
        {
            Route::Account(name)
        } else {
            let _ = rbuf.split_to(head_len + body_len);
            return refuse(
                404,
                "no such path; POST to /ilp, /accounts/<id>/ilp or /ilp/<request-id>\n",
            );
        };
        // RFC 35 "Authentication": bearer token, compared in constant time
        // by the core. A wrong one is answered, then the connection closes,
        // so guessing costs a new connection each time (issue 16).
        let account = match token.and_then(|t| accounts.authenticate(t)) {
            Some(a) => a,
            None => {
                let _ = rbuf.split_to(head_len + body_len);
                return Parsed::Fatal(401, "missing or wrong bearer token\n");
            }
        };
        if let Route::Account(name) = route {
            if accounts.name(account) != name {
                let _ = rbuf.split_to(head_len + body_len);
                return Parsed::Fatal(401, "the token is not the one of this account\n");
            }
        }
        if !ctype_ok {
            let _ = rbuf.split_to(head_len + body_len);
            return refuse(415, "Content-Type must be application/octet-stream\n");
        }
        let oer_id = match route {
            Route::Oer(None) => {
                let _ = rbuf.split_to(head_len + body_len);
                return refuse(400, "bad request id in the path\n");
            }
            Route::Oer(Some(id)) => Some(id),
            _ => None,
        };
        let header_id = match request_id {
            Some(v) => match ReqId::parse(v) {
                Some(id) => Some(id),
                None => {
                    let _ = rbuf.split_to(head_len + body_len);
                    return refuse(400, "bad Request-Id\n");
                }
            },
            None => None,
        };
        let callback = match (prefer_async, callback) {
            (true, Some(v)) => match std::str::from_utf8(v)
                .ok()
                .map(|s| HttpUrl::parse(s.trim()))
            {
                Some(Ok(u)) => Some(u),
                _ => {
                    let _ = rbuf.split_to(head_len + body_len);
                    return refuse(400, "bad Callback-Url (http:// only)\n");
                }
            },
            _ => None,
        };
        // Split the body off without copying.
        let mut body = rbuf.split_to(head_len + body_len);
        let body = body.split_off(head_len);
        let kind = match body.first() {
            Some(12) if Prepare::new_checked(&body[..]).is_ok() => {
                if let Some(id) = oer_id {
                    Kind::Oer { request_id: id }
                } else if prefer_async {
                    // RFC 35 "Send ILP Prepare": both are required for the async mode.
                    match (callback, header_id) {
                        (Some(callback), Some(request_id)) => Kind::Async {
                            callback,
                            request_id,
                        },
                        _ => {
                            return refuse(
                                400,
                                "Prefer: respond-async needs Callback-Url and Request-Id\n",
                            )
                        }
                    }
                } else {
                    Kind::Sync
                }
            }
            Some(13) if Fulfill::new_checked(&body[..]).is_ok() => match oer_id.or(header_id) {
                Some(request_id) => Kind::Reply { request_id },
                None => return refuse(400, "a Fulfill needs a Request-Id\n"),
            },
            Some(14) if Reject::new_checked(&body[..]).is_ok() => match oer_id.or(header_id) {
                Some(request_id) => Kind::Reply { request_id },
                None => return refuse(400, "a Reject needs a Request-Id\n"),
            },
            _ => return refuse(400, "the body is not an ILP Prepare\n"),
        };
        Parsed::Ok(account, kind, body, close)
    }
}

enum Parsed {
    Partial {
        expect_continue: bool,
    },
    /// Answer, then close: the framing cannot be trusted, or the peer
    /// failed auth.
    Fatal(u16, &'static str),
    /// Answer and go on (unless the request asked to close).
    Refused(u16, &'static str, bool),
    /// Answered here with this body (SPSP), and go on.
    Answered(u16, Body, bool),
    Ok(AccountId, Kind, BytesMut, bool),
}

/// Whether `path` is an SPSP endpoint (RFC 9, RFC 26 "Payment Setup
/// Protocol Receiver Endpoint Resolution"): `Some(None)` for
/// `/.well-known/pay` (the default receiver), `Some(Some(name))` for
/// `/{name}`. The ILP paths (`/`, `/ilp`, `/ilp/…`, `/accounts/…`) are not.
/// A query string is ignored.
fn spsp_path(path: &str) -> Option<Option<&str>> {
    let path = path.split('?').next().unwrap_or("");
    if path == "/.well-known/pay" {
        return Some(None);
    }
    let name = path.strip_prefix('/')?;
    if name.is_empty() || name.contains('/') || name == "ilp" {
        return None;
    }
    Some(Some(name))
}

/// The answer to an SPSP GET: 200 with the JSON, or 404 (no such
/// receiver), 406 (`Accept` names no SPSP type), 400 (bad receipt
/// headers), 503 (no random bytes).
fn spsp_answer(
    spsp: Option<&dyn Spsp>,
    target: Option<&str>,
    accept: Option<&[u8]>,
    receipt_nonce: Option<&[u8]>,
    receipt_secret: Option<&[u8]>,
) -> (u16, Body) {
    let Some(spsp) = spsp.filter(|s| s.receiver_exists(target)) else {
        let text = match target {
            None => "no default SPSP receiver here\n",
            Some(_) => "no such SPSP receiver\n",
        };
        return (404, Body::SpspText(text));
    };
    if !accept.is_some_and(accepts_spsp) {
        let text = "Accept must include application/spsp4+json\n";
        return (406, Body::SpspText(text));
    }
    // RFC 39 "SPSP": both headers, base64, turn receipts on.
    let receipt = match (receipt_nonce, receipt_secret) {
        (None, None) => None,
        (Some(n), Some(s)) => match (base64_exact::<16>(n), base64_exact::<32>(s)) {
            (Some(nonce), Some(secret)) => {
                Some(ilpd_stream::receipt::ReceiptParams { nonce, secret })
            }
            _ => {
                let text =
                    "Receipt-Nonce must be 16 bytes and Receipt-Secret 32 bytes, in base64\n";
                return (400, Body::SpspText(text));
            }
        },
        _ => {
            let text = "Receipt-Nonce and Receipt-Secret must be sent together\n";
            return (400, Body::SpspText(text));
        }
    };
    match spsp.spsp_response(target, receipt.as_ref()) {
        Ok(json) => (200, Body::Spsp(json)),
        Err(SpspRefusal::NotFound) => (404, Body::SpspText("no such SPSP receiver\n")),
        Err(SpspRefusal::Unavailable) => (
            503,
            Body::SpspText("cannot issue connection details now; try again\n"),
        ),
    }
}

/// `Accept` lists `application/spsp4+json` or `application/spsp+json`
/// (RFC 9 "Query"), parameters and case ignored.
fn accepts_spsp(v: &[u8]) -> bool {
    v.split(|&b| b == b',').any(|t| {
        let t = t.split(|&b| b == b';').next().unwrap_or(b"").trim_ascii();
        t.eq_ignore_ascii_case(b"application/spsp4+json")
            || t.eq_ignore_ascii_case(b"application/spsp+json")
    })
}

/// Exactly `N` bytes in base64, standard or URL-safe, padded or not.
fn base64_exact<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    use base64::{alphabet, Engine};
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let v: Vec<u8> = v
        .iter()
        .map(|&b| match b {
            b'-' => b'+',
            b'_' => b'/',
            b => b,
        })
        .collect();
    let bytes = GeneralPurpose::new(&alphabet::STANDARD, cfg)
        .decode(v)
        .ok()?;
    bytes.try_into().ok()
}

/// `application/octet-stream` (RFC 35) or `application/ilp+octet-stream`
/// (ilp-plugin-http), parameters ignored.
fn content_type_ok(v: &[u8]) -> bool {
    let base = v.split(|&b| b == b';').next().unwrap_or(b"").trim_ascii();
    base.eq_ignore_ascii_case(b"application/octet-stream")
        || base.eq_ignore_ascii_case(b"application/ilp+octet-stream")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::LinkKind;
    use ilpd_codec::ilp::{FulfillBuilder, PrepareBuilder, RejectBuilder};
    use ilpd_codec::types::Expiry;
    use ilpd_codec::ErrorCode;

    struct Table;
    impl Accounts for Table {
        fn authenticate(&self, token: &[u8]) -> Option<AccountId> {
            match token {
                b"alice-token" => Some(AccountId(0)),
                b"bob-token" => Some(AccountId(1)),
                _ => None,
            }
        }
        fn name(&self, id: AccountId) -> &str {
            ["alice", "bob"][id.0 as usize]
        }
        fn link(&self, _: AccountId) -> LinkKind {
            LinkKind::Http
        }
    }

    fn prepare() -> BytesMut {
        PrepareBuilder {
            amount: 10,
            expires_at: Expiry(1_700_000_000_000),
            execution_condition: &[7; 32],
            destination: b"test.bob",
            data: b"hi",
        }
        .build()
    }

    fn post(path: &str, extra: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    const AUTH: &str = "Authorization: Bearer alice-token\r\n";

    /// Feeds `input`; returns the requests and the bytes written.
    fn run(conn: &mut ServerConn, input: &[u8]) -> (Vec<Request>, String, bool) {
        let mut rbuf = BytesMut::from(input);
        let mut wbuf = BytesMut::new();
        let mut reqs = Vec::new();
        let closing = loop {
            match conn.next(&mut rbuf, &Table, &mut wbuf) {
                Next::Request(r) => reqs.push(r),
                Next::Blocked => break false,
                Next::Closing => break true,
            }
        };
        (reqs, String::from_utf8_lossy(&wbuf).into_owned(), closing)
    }

    fn status_of(out: &str) -> Vec<u16> {
        out.match_indices("HTTP/1.1 ")
            .filter_map(|(i, _)| out[i + 9..i + 12].parse().ok())
            .collect()
    }

    #[test]
    fn sync_prepare_is_split_off_and_answered_in_order() {
        let p = prepare();
        let mut input = post("/ilp", AUTH, &p);
        input.extend(post("/accounts/alice/ilp", AUTH, &p));
        input.extend(post("/", AUTH, &p));
        let mut conn = ServerConn::new(40_000);
        let (reqs, out, closing) = run(&mut conn, &input);
        assert!(out.is_empty() && !closing);
        assert_eq!(reqs.len(), 3);
        for (i, r) in reqs.iter().enumerate() {
            assert_eq!(r.seq, i as u32);
            assert_eq!(r.account, AccountId(0));
            assert_eq!(r.kind, Kind::Sync);
            assert_eq!(&r.body[..], &p[..]);
        }
        // Answers arrive out of order; the responses leave in order.
        let mut w = BytesMut::new();
        assert!(conn.respond(
            2,
            200,
            Body::Packet(BytesMut::from(&b"\x0e\x02cc"[..])),
            &mut w
        ));
        assert!(w.is_empty(), "request 0 is not answered yet");
        assert!(conn.respond(
            1,
            200,
            Body::Packet(BytesMut::from(&b"\x0d\x01b"[..])),
            &mut w
        ));
        assert!(w.is_empty());
        assert!(!conn.respond(1, 200, Body::Empty, &mut w), "answered twice");
        assert!(conn.respond(
            0,
            200,
            Body::Packet(BytesMut::from(&b"\x0d\x01a"[..])),
            &mut w
        ));
        let s = String::from_utf8_lossy(&w);
        let a = s.find("\r\n\r\n\x0d\x01a").unwrap();
        let b = s.find("\x0d\x01b").unwrap();
        let c = s.find("\x0e\x02cc").unwrap();
        assert!(a < b && b < c, "{s:?}");
        assert_eq!(status_of(&s), [200, 200, 200]);
        assert!(s.contains("Content-Length: 3\r\n") && s.contains("Content-Length: 4\r\n"));
        assert_eq!(conn.outstanding(), 0);
        assert!(!conn.should_close());
    }

    #[test]
    fn a_request_split_across_reads_is_assembled() {
        let p = prepare();
        let input = post("/ilp", AUTH, &p);
        let mut conn = ServerConn::new(40_000);
        let mut rbuf = BytesMut::new();
        let mut w = BytesMut::new();
        let mut got = None;
        for b in &input {
            rbuf.extend_from_slice(&[*b]);
            match conn.next(&mut rbuf, &Table, &mut w) {
                Next::Request(r) => got = Some(r),
                Next::Blocked => {}
                Next::Closing => panic!("closed"),
            }
        }
        assert_eq!(&got.unwrap().body[..], &p[..]);
        assert!(rbuf.is_empty() && w.is_empty());
    }

    #[test]
    fn wrong_or_missing_token_is_401_and_the_connection_closes() {
        let p = prepare();
        for auth in [
            "",
            "Authorization: Bearer nope\r\n",
            "Authorization: alice-token\r\n",
            "Authorization: Basic YWxpY2U=\r\n",
        ] {
            let mut conn = ServerConn::new(40_000);
            // The connection closes: not even a good request after it is
            // read (one guess per connection).
            let mut input = post("/ilp", auth, &p);
            input.extend(post("/ilp", AUTH, &p));
            let (reqs, out, closing) = run(&mut conn, &input);
            assert_eq!(status_of(&out), [401], "{auth:?}");
            assert!(closing);
            assert!(reqs.is_empty());
        }
        // A token for another account on an /accounts/<id>/ilp path.
        let mut conn = ServerConn::new(40_000);
        let (reqs, out, _) = run(&mut conn, &post("/accounts/bob/ilp", AUTH, &p));
        assert!(reqs.is_empty());
        assert_eq!(status_of(&out), [401]);
    }

    #[test]
    fn bad_requests_get_clear_4xx() {
        let p = prepare();
        let cases: Vec<(Vec<u8>, u16, bool)> = vec![
            (b"GET /ilp HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 405, false),
            (post("/nope", AUTH, &p), 404, false),
            (post("/ilp/a%20b", AUTH, &p), 400, false),
            (post("/ilp", &format!("{AUTH}Content-Type: text/plain\r\n"), &p).replace_first_ctype(), 415, false),
            (post("/ilp", AUTH, b"\x0d\x00"), 400, false),
            (post("/ilp", AUTH, b"hello"), 400, false),
            (post("/ilp", AUTH, &p[..p.len() - 1]), 400, false),
            (post("/ilp", AUTH, b""), 400, false),
            (post("/ilp", &format!("{AUTH}Request-Id: a b\r\n"), &p), 400, false),
            (post("/ilp", &format!("{AUTH}Prefer: respond-async\r\n"), &p), 400, false),
            (post("/ilp", &format!("{AUTH}Prefer: respond-async\r\nRequest-Id: x\r\nCallback-Url: https://h/\r\n"), &p), 400, false),
            (b"POST /ilp HTTP/1.1\r\nAuthorization: Bearer alice-token\r\n\r\n".to_vec(), 411, true),
            (b"POST /ilp HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 411, true),
            (b"POST /ilp HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n".to_vec(), 400, true),
            (b"POST /ilp HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n".to_vec(), 400, true),
            (b"POST /ilp HTTP/1.1\r\nContent-Length: -3\r\n\r\n".to_vec(), 400, true),
            (b"POST /ilp HTTP/1.1\r\nContent-Length: 40001\r\n\r\n".to_vec(), 413, true),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), 400, true),
            (b"POST /ilp HTTP/1.1\r\nX: \x01\r\n\r\n".to_vec(), 400, true),
        ];
        for (input, want, want_close) in cases {
            let mut conn = ServerConn::new(40_000);
            let (reqs, out, closing) = run(&mut conn, &input);
            assert!(reqs.is_empty(), "{:?}", String::from_utf8_lossy(&input));
            assert_eq!(
                status_of(&out),
                [want],
                "{:?} -> {out:?}",
                String::from_utf8_lossy(&input)
            );
            assert_eq!(closing, want_close, "{:?}", String::from_utf8_lossy(&input));
            assert_eq!(out.contains("Connection: close"), want_close, "{out:?}");
            let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
            assert!(
                !body.is_empty() && body.is_ascii(),
                "a short text says why: {out:?}"
            );
        }
    }

    trait ReplaceCtype {
        fn replace_first_ctype(self) -> Vec<u8>;
    }
    impl ReplaceCtype for Vec<u8> {
        /// Drops the default octet-stream Content-Type so the text/plain one is the only one.
        fn replace_first_ctype(self) -> Vec<u8> {
            let s = self;
            let needle = b"Content-Type: application/octet-stream\r\n";
            let i = s.windows(needle.len()).position(|w| w == needle).unwrap();
            [&s[..i], &s[i + needle.len()..]].concat()
        }
    }

    #[test]
    fn oversized_heads_and_too_many_headers_are_refused() {
        let mut conn = ServerConn::new(40_000);
        let mut big = b"POST /ilp HTTP/1.1\r\nX-Long: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        let (_, out, closing) = run(&mut conn, &big);
        assert_eq!(status_of(&out), [431]);
        assert!(closing);
        let mut many = b"POST /ilp HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend(format!("X-{i}: y\r\n").bytes());
        }
        many.extend(b"\r\n");
        let mut conn = ServerConn::new(40_000);
        let (_, out, closing) = run(&mut conn, &many);
        assert_eq!(status_of(&out), [431]);
        assert!(closing);
        // A head that trickles in (under the limit) just waits: the IO's
        // header timeout closes it.
        let mut conn = ServerConn::new(40_000);
        let (_, out, closing) = run(&mut conn, b"POST /ilp HTTP/1.1\r\nHost: x\r\n");
        assert!(out.is_empty() && !closing);
    }

    #[test]
    fn the_configured_body_limit_applies() {
        let p = prepare();
        let mut conn = ServerConn::new(p.len() - 1);
        let (reqs, out, closing) = run(&mut conn, &post("/ilp", AUTH, &p));
        assert!(reqs.is_empty() && closing);
        assert_eq!(status_of(&out), [413]);
    }

    #[test]
    fn errors_wait_behind_earlier_answers() {
        let p = prepare();
        let mut input = post("/ilp", AUTH, &p);
        input.extend(post("/ilp", "", &p));
        let mut conn = ServerConn::new(40_000);
        let (reqs, out, _) = run(&mut conn, &input);
        assert_eq!(reqs.len(), 1);
        assert!(out.is_empty(), "the 401 must not overtake the pending 200");
        let mut w = BytesMut::new();
        conn.respond(
            0,
            200,
            Body::Packet(BytesMut::from(&b"\x0d\x00"[..])),
            &mut w,
        );
        assert_eq!(status_of(&String::from_utf8_lossy(&w)), [200, 401]);
    }

    #[test]
    fn connection_close_is_honoured_after_the_answer() {
        let p = prepare();
        let mut input = post("/ilp", &format!("{AUTH}Connection: close\r\n"), &p);
        input.extend(post("/ilp", AUTH, &p));
        let mut conn = ServerConn::new(40_000);
        let (reqs, _, closing) = run(&mut conn, &input);
        assert_eq!(reqs.len(), 1, "nothing is read after Connection: close");
        assert!(closing && !conn.should_close());
        let mut w = BytesMut::new();
        conn.respond(
            0,
            200,
            Body::Packet(BytesMut::from(&b"\x0d\x00"[..])),
            &mut w,
        );
        assert!(conn.should_close());
        assert!(String::from_utf8_lossy(&w).contains("Connection: close\r\n"));
        // HTTP/1.0 closes unless it asks for keep-alive.
        let mut conn = ServerConn::new(40_000);
        let one = post("/ilp", AUTH, &p);
        let one0 = [&b"POST /ilp HTTP/1.0"[..], &one[18..]].concat();
        let (reqs, _, closing) = run(&mut conn, &one0);
        assert_eq!(reqs.len(), 1);
        assert!(closing);
    }

    #[test]
    fn async_oer_and_reply_requests_are_recognised() {
        let p = prepare();
        let id = "42ee09c8-a6de-4ae3-8a47-4732b0cbb07b";
        let mut conn = ServerConn::new(40_000);
        let extra = format!(
            "{AUTH}Prefer: respond-async\r\nCallback-Url: http://127.0.0.1:9/incoming/ilp\r\nRequest-Id: {id}\r\n"
        );
        let (reqs, _, _) = run(&mut conn, &post("/ilp", &extra, &p));
        match &reqs[0].kind {
            Kind::Async {
                callback,
                request_id,
            } => {
                assert_eq!(callback.path, "/incoming/ilp");
                assert_eq!(callback.port, 9);
                assert_eq!(request_id.as_str(), id);
            }
            k => panic!("{k:?}"),
        }
        let (reqs, _, _) = run(&mut conn, &post(&format!("/ilp/{id}"), AUTH, &p));
        assert_eq!(
            reqs[0].kind,
            Kind::Oer {
                request_id: ReqId::parse(id.as_bytes()).unwrap()
            }
        );
        let f = FulfillBuilder {
            fulfillment: &[1; 32],
            data: b"",
        }
        .build();
        let r = RejectBuilder {
            code: ErrorCode::F99_APPLICATION_ERROR,
            triggered_by: b"test.x",
            message: b"no",
            data: b"",
        }
        .build();
        let (reqs, _, _) = run(&mut conn, &post(&format!("/ilp/{id}"), AUTH, &f));
        assert!(matches!(reqs[0].kind, Kind::Reply { .. }));
        assert_eq!(&reqs[0].body[..], &f[..]);
        let (reqs, _, _) = run(
            &mut conn,
            &post("/ilp", &format!("{AUTH}Request-Id: {id}\r\n"), &r),
        );
        assert!(matches!(reqs[0].kind, Kind::Reply { request_id } if request_id.as_str() == id));
        // ilp-plugin-http's content type is accepted.
        let ct = post("/ilp", AUTH, &p).replace_first_ctype();
        let with = [
            &ct[..18],
            b"\r\nContent-Type: application/ilp+octet-stream",
            &ct[18..],
        ]
        .concat();
        let (reqs, out, _) = run(&mut conn, &with);
        assert_eq!(reqs.len(), 1, "{out}");
    }

    #[test]
    fn expect_continue_is_answered_when_nothing_is_pending() {
        let p = prepare();
        let full = post("/ilp", &format!("{AUTH}Expect: 100-continue\r\n"), &p);
        let head_end = full.len() - p.len();
        let mut conn = ServerConn::new(40_000);
        let mut rbuf = BytesMut::from(&full[..head_end]);
        let mut w = BytesMut::new();
        assert!(matches!(
            conn.next(&mut rbuf, &Table, &mut w),
            Next::Blocked
        ));
        assert_eq!(&w[..], b"HTTP/1.1 100 Continue\r\n\r\n");
        assert!(matches!(
            conn.next(&mut rbuf, &Table, &mut w),
            Next::Blocked
        ));
        assert_eq!(w.len(), 25, "sent once");
        rbuf.extend_from_slice(&p);
        assert!(matches!(
            conn.next(&mut rbuf, &Table, &mut w),
            Next::Request(_)
        ));
    }

    #[test]
    fn the_pipeline_bound_stops_reading() {
        let p = prepare();
        let mut conn = ServerConn::new(40_000);
        conn.max_pipeline = 2;
        let input: Vec<u8> = (0..3).flat_map(|_| post("/ilp", AUTH, &p)).collect();
        let mut rbuf = BytesMut::from(&input[..]);
        let mut w = BytesMut::new();
        let mut n = 0;
        while let Next::Request(_) = conn.next(&mut rbuf, &Table, &mut w) {
            n += 1;
        }
        assert_eq!(n, 2);
        assert!(!rbuf.is_empty());
        conn.respond(0, 200, Body::Empty, &mut w);
        assert!(matches!(
            conn.next(&mut rbuf, &Table, &mut w),
            Next::Request(_)
        ));
    }

    /// One receiver, `shop`, the default.
    struct Shop;
    impl Spsp for Shop {
        fn receiver_exists(&self, name: Option<&str>) -> bool {
            matches!(name, None | Some("shop"))
        }
        fn spsp_response(
            &self,
            _: Option<&str>,
            receipt: Option<&ilpd_stream::receipt::ReceiptParams>,
        ) -> Result<String, SpspRefusal> {
            Ok(format!("{{\"receipts\":{}}}", receipt.is_some()))
        }
    }
    struct WithShop;
    impl Accounts for WithShop {
        fn authenticate(&self, token: &[u8]) -> Option<AccountId> {
            Table.authenticate(token)
        }
        fn name(&self, id: AccountId) -> &str {
            ["alice", "bob"][id.0 as usize]
        }
        fn link(&self, _: AccountId) -> LinkKind {
            LinkKind::Http
        }
        fn spsp(&self) -> Option<&dyn Spsp> {
            Some(&Shop)
        }
    }

    fn spsp_run(input: &str) -> (Vec<Request>, String) {
        let mut conn = ServerConn::new(40_000);
        let mut rbuf = BytesMut::from(input.as_bytes());
        let mut wbuf = BytesMut::new();
        let mut reqs = Vec::new();
        while let Next::Request(r) = conn.next(&mut rbuf, &WithShop, &mut wbuf) {
            reqs.push(r);
        }
        (reqs, String::from_utf8_lossy(&wbuf).into_owned())
    }

    #[test]
    fn spsp_get_is_answered_without_a_token() {
        const ACCEPT: &str = "Accept: application/spsp4+json, application/spsp+json\r\n";
        for path in ["/.well-known/pay", "/shop", "/shop?x=1"] {
            let (reqs, out) = spsp_run(&format!("GET {path} HTTP/1.1\r\n{ACCEPT}\r\n"));
            assert!(reqs.is_empty());
            assert_eq!(status_of(&out), [200], "{path}: {out}");
            assert!(
                out.contains("Content-Type: application/spsp4+json\r\n"),
                "{out}"
            );
            assert!(out.contains("Cache-Control: no-store\r\n"), "{out}");
            assert!(out.ends_with("{\"receipts\":false}"), "{out}");
            assert!(!out.contains("Connection: close"));
        }
        let (_, out) = spsp_run("GET /shop HTTP/1.1\r\nAccept: Application/SPSP+json; q=1\r\n\r\n");
        assert_eq!(status_of(&out), [200]);
        // RFC 39 "SPSP": both receipt headers, base64.
        let nonce = "AAAAAAAAAAAAAAAAAAAAAA==";
        let secret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let (_, out) = spsp_run(&format!(
            "GET /shop HTTP/1.1\r\n{ACCEPT}Receipt-Nonce: {nonce}\r\nReceipt-Secret: {secret}\r\n\r\n"
        ));
        assert!(out.ends_with("{\"receipts\":true}"), "{out}");
        for (extra, want) in [
            (format!("Receipt-Nonce: {nonce}\r\n"), 400),
            (
                format!("Receipt-Nonce: {nonce}\r\nReceipt-Secret: AAAA\r\n"),
                400,
            ),
            (
                format!("Receipt-Nonce: !!\r\nReceipt-Secret: {secret}\r\n"),
                400,
            ),
        ] {
            let (_, out) = spsp_run(&format!("GET /shop HTTP/1.1\r\n{ACCEPT}{extra}\r\n"));
            assert_eq!(status_of(&out), [want], "{extra}: {out}");
        }
        // Unknown name 404, wrong or missing Accept 406, other methods 405.
        let cases = [
            (format!("GET /nobody HTTP/1.1\r\n{ACCEPT}\r\n"), 404),
            (
                "GET /shop HTTP/1.1\r\nAccept: application/json\r\n\r\n".to_string(),
                406,
            ),
            ("GET /shop HTTP/1.1\r\n\r\n".to_string(), 406),
            ("DELETE /shop HTTP/1.1\r\n\r\n".to_string(), 405),
            (
                "POST /.well-known/pay HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_string(),
                405,
            ),
            (
                "POST /shop HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_string(),
                405,
            ),
            // The ILP paths keep their answers.
            ("GET /ilp HTTP/1.1\r\n\r\n".to_string(), 405),
            (
                "POST /nobody HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_string(),
                404,
            ),
        ];
        for (input, want) in cases {
            let (reqs, out) = spsp_run(&input);
            assert!(reqs.is_empty());
            assert_eq!(status_of(&out), [want], "{input:?}: {out}");
            if want == 405 && input.contains("shop") || input.contains("well-known") {
                assert!(out.contains("Allow: GET\r\n"), "{out}");
            }
        }
        // Pipelined with ILP requests, answers stay in order and the
        // connection stays up.
        let mut input = format!("GET /shop HTTP/1.1\r\n{ACCEPT}\r\n").into_bytes();
        input.extend(post("/ilp", AUTH, &prepare()));
        input.extend(format!("GET /.well-known/pay HTTP/1.1\r\n{ACCEPT}\r\n").into_bytes());
        let mut conn = ServerConn::new(40_000);
        let mut rbuf = BytesMut::from(&input[..]);
        let mut w = BytesMut::new();
        let mut reqs = Vec::new();
        while let Next::Request(r) = conn.next(&mut rbuf, &WithShop, &mut w) {
            reqs.push(r);
        }
        assert_eq!(reqs.len(), 1);
        assert_eq!(status_of(&String::from_utf8_lossy(&w)), [200]);
        conn.respond(reqs[0].seq, 200, Body::Empty, &mut w);
        assert_eq!(status_of(&String::from_utf8_lossy(&w)), [200, 200, 200]);
        // Without receivers a GET of an SPSP path is 404.
        let mut conn = ServerConn::new(40_000);
        let (_, out, _) = run(
            &mut conn,
            format!("GET /.well-known/pay HTTP/1.1\r\n{ACCEPT}\r\n").as_bytes(),
        );
        assert_eq!(status_of(&out), [404]);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            let mut input = b"POST /ilp HTTP/1.1\r\n".to_vec();
            let n = (x % 200) as usize;
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                input.push(b"abc:\r\n 0123456789Content-Length\x00\xff"[(x % 33) as usize]);
            }
            let mut conn = ServerConn::new(64);
            let _ = run(&mut conn, &input);
        }
    }
}

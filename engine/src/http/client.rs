//! The client side of ILP-over-HTTP, sans-IO: request heads for a
//! keep-alive pool, response parsing, and what a response means for the
//! Forward it answers (RFC 35 "Error Handling"; docs/design.md "ILP over HTTP").
//!
//! Status mapping (decided here, documented in docs/http.md):
//! - `200` with a Fulfill or Reject body: the reply.
//! - `202` (RFC 35 async) or an empty `200` (HTTP-OER-ASYNC): accepted, the
//!   reply will be POSTed to us.
//! - idempotent links (HTTP-OER-*): `408`, `409`, `429`, `5xx` and lost
//!   connections are retried with the same request id until the Prepare
//!   expires (the core then answers R00 upstream).
//! - other links: `5xx`, a lost connection or an unreadable body → T01
//!   (the issue asks for T01; interledger-rs does the same), `429` → T05,
//!   any other `4xx` → F02 (interledger-rs: "HTTP 4xx response → F02").

use bytes::{Buf, BufMut, BytesMut};
use ilpd_codec::ilp::{Fulfill, Reject};
use ilpd_codec::ErrorCode;

use super::{has_token, parse_content_length, put_decimal, LinkKind, ReqId, MAX_HEAD, MAX_HEADERS};

/// Extra headers a request carries.
#[derive(Debug, Clone, Copy)]
pub enum Extra<'a> {
    None,
    /// RFC 35 async Prepare ("Send ILP Prepare").
    Async {
        callback: &'a str,
        request_id: &'a ReqId,
    },
    /// The reply to an async Prepare, POSTed to its callback.
    Reply {
        request_id: &'a ReqId,
    },
}

/// Writes `POST <path>` with the headers RFC 35 asks for, then the body.
/// The body is written straight after the head into the connection's
/// output buffer: the one copy the socket needs.
pub fn write_request<B: BufMut>(
    out: &mut B,
    host: &str,
    path: &str,
    token: &[u8],
    extra: Extra<'_>,
    body: &[u8],
) {
    out.put_slice(b"POST ");
    out.put_slice(path.as_bytes());
    out.put_slice(b" HTTP/1.1\r\nHost: ");
    out.put_slice(host.as_bytes());
    out.put_slice(
        b"\r\nContent-Type: application/octet-stream\r\nAccept: application/octet-stream\r\n",
    );
    if !token.is_empty() {
        out.put_slice(b"Authorization: Bearer ");
        out.put_slice(token);
        out.put_slice(b"\r\n");
    }
    match extra {
        Extra::None => {}
        Extra::Async {
            callback,
            request_id,
        } => {
            out.put_slice(b"Prefer: respond-async\r\nCallback-Url: ");
            out.put_slice(callback.as_bytes());
            out.put_slice(b"\r\nRequest-Id: ");
            out.put_slice(request_id.as_bytes());
            out.put_slice(b"\r\n");
        }
        Extra::Reply { request_id } => {
            out.put_slice(b"Request-Id: ");
            out.put_slice(request_id.as_bytes());
            out.put_slice(b"\r\n");
        }
    }
    out.put_slice(b"Content-Length: ");
    put_decimal(out, body.len() as u64);
    out.put_slice(b"\r\n\r\n");
    out.put_slice(body);
}

/// The head of a plain Forward up to the `Content-Length` value, computed
/// once per pool: [`write_request`] with [`Extra::None`] is this, the
/// length, a blank line and the body.
pub fn request_prefix(host: &str, path: &str, token: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(160 + path.len() + host.len() + token.len());
    write_request(&mut v, host, path, token, Extra::None, b"");
    // Drop the "0\r\n\r\n" the empty body left.
    v.truncate(v.len() - 5);
    v
}

/// One response, its body split off the read buffer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: BytesMut,
    /// The peer will close the connection after it.
    pub close: bool,
}

/// Takes one complete response off `rbuf` (`1xx` are skipped). `Ok(None)`
/// means incomplete. `eof` says the peer closed: a body without
/// `Content-Length` then ends here. Errors leave the connection unusable.
pub fn parse_response(
    rbuf: &mut BytesMut,
    max_body: usize,
    eof: bool,
) -> Result<Option<Response>, String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(rbuf) {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
            Ok(httparse::Status::Complete(_)) => return Err("response head over 8 KiB".into()),
            Ok(httparse::Status::Partial) if rbuf.len() > MAX_HEAD => {
                return Err("response head over 8 KiB".into())
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("malformed HTTP response ({e})")),
        };
        let status = resp.code.unwrap_or(0);
        let mut len = None;
        let mut close = resp.version == Some(0);
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                match parse_content_length(h.value) {
                    Some(l) if len.is_none_or(|c| c == l) => len = Some(l),
                    _ => return Err("bad Content-Length in the response".into()),
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err("chunked responses are not supported".into());
            } else if h.name.eq_ignore_ascii_case("connection") {
                if has_token(h.value, "close") {
                    close = true;
                } else if has_token(h.value, "keep-alive") {
                    close = false;
                }
            }
        }
        if (100..200).contains(&status) {
            rbuf.advance(head);
            continue;
        }
        let len = match len {
            Some(l) => l,
            None if status == 204 || status == 304 => 0,
            // Without a length the body runs to the end of the connection.
            None if eof => {
                close = true;
                rbuf.len() - head
            }
            None => {
                if rbuf.len() - head > max_body {
                    return Err("response body over the size limit".into());
                }
                return Ok(None);
            }
        };
        if len > max_body {
            return Err("response body over the size limit".into());
        }
        if rbuf.len() < head + len {
            rbuf.reserve(head + len - rbuf.len());
            return Ok(None);
        }
        let mut all = rbuf.split_to(head + len);
        let body = all.split_off(head);
        return Ok(Some(Response {
            status,
            body,
            close,
        }));
    }
}

/// What a response is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A Prepare we forwarded on a link of this kind.
    Prepare(LinkKind),
    /// A Fulfill or Reject we POSTed back (RFC 35 async, HTTP-OER-ASYNC).
    Reply,
}

/// What a response means.
#[derive(Debug)]
pub enum Outcome {
    /// The Fulfill or Reject for the Forward.
    Reply(BytesMut),
    /// Received; for a Prepare the reply comes in its own request.
    Accepted,
    /// Send the same request again (idempotent links, reply POSTs).
    Retry(String),
    /// Give up: reject upstream with this code and message (for a reply
    /// POST: stop trying, RFC 35 "stops on any 4xx").
    Fail(ErrorCode, String),
}

fn is_reply_packet(b: &[u8]) -> bool {
    match b.first() {
        Some(13) => Fulfill::new_checked(b).is_ok(),
        Some(14) => Reject::new_checked(b).is_ok(),
        _ => false,
    }
}

/// Maps a response onto an [`Outcome`] (see the module doc).
pub fn classify(purpose: Purpose, status: u16, body: BytesMut) -> Outcome {
    let status_text = || format!("HTTP {status} {}", super::reason(status));
    let retryable = matches!(status, 408 | 409 | 429) || status >= 500;
    let link = match purpose {
        Purpose::Reply => {
            return match status {
                200..=299 => Outcome::Accepted,
                _ if retryable => Outcome::Retry(status_text()),
                _ => Outcome::Fail(ErrorCode::F02_UNREACHABLE, status_text()),
            }
        }
        Purpose::Prepare(l) => l,
    };
    let idempotent = link.is_idempotent();
    match status {
        200 if is_reply_packet(&body) => Outcome::Reply(body),
        200 if body.is_empty() && link.is_async() => Outcome::Accepted,
        202 if link.is_async() => Outcome::Accepted,
        200..=299 => Outcome::Fail(
            ErrorCode::T01_PEER_UNREACHABLE,
            format!(
                "peer answered {} without an ILP Fulfill or Reject",
                status_text()
            ),
        ),
        _ if retryable && idempotent => Outcome::Retry(status_text()),
        429 => Outcome::Fail(
            ErrorCode::T05_RATE_LIMITED,
            format!("peer answered {}", status_text()),
        ),
        400..=499 => Outcome::Fail(
            ErrorCode::F02_UNREACHABLE,
            format!("peer refused the packet: {}", status_text()),
        ),
        _ => Outcome::Fail(
            ErrorCode::T01_PEER_UNREACHABLE,
            format!("peer answered {}", status_text()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ilpd_codec::ilp::{FulfillBuilder, RejectBuilder};

    fn fulfill() -> BytesMut {
        FulfillBuilder {
            fulfillment: &[3; 32],
            data: b"d",
        }
        .build()
    }

    #[test]
    fn requests_carry_what_rfc35_asks_for() {
        let mut b = Vec::new();
        write_request(
            &mut b,
            "127.0.0.1:9",
            "/ilp",
            b"tok",
            Extra::None,
            b"\x0c\x00",
        );
        assert_eq!(
            b,
            b"POST /ilp HTTP/1.1\r\nHost: 127.0.0.1:9\r\nContent-Type: application/octet-stream\r\nAccept: application/octet-stream\r\nAuthorization: Bearer tok\r\nContent-Length: 2\r\n\r\n\x0c\x00"
        );
        let id = ReqId::parse(b"abc-1").unwrap();
        let mut b = Vec::new();
        write_request(
            &mut b,
            "h",
            "/ilp",
            b"",
            Extra::Async {
                callback: "http://me:1/ilp",
                request_id: &id,
            },
            b"",
        );
        let s = String::from_utf8(b).unwrap();
        assert!(!s.contains("Authorization"));
        assert!(s.contains(
            "\r\nPrefer: respond-async\r\nCallback-Url: http://me:1/ilp\r\nRequest-Id: abc-1\r\n"
        ));
        let mut b = Vec::new();
        write_request(
            &mut b,
            "h",
            "/cb",
            b"t",
            Extra::Reply { request_id: &id },
            b"x",
        );
        assert!(String::from_utf8(b)
            .unwrap()
            .contains("\r\nRequest-Id: abc-1\r\nContent-Length: 1\r\n\r\nx"));
    }

    #[test]
    fn the_precomputed_prefix_is_the_same_request() {
        let mut full = Vec::new();
        write_request(&mut full, "h:1", "/p", b"t", Extra::None, b"body!");
        let mut v = request_prefix("h:1", "/p", b"t");
        assert!(v.ends_with(b"Content-Length: "));
        v.extend_from_slice(b"5\r\n\r\nbody!");
        assert_eq!(v, full);
    }

    #[test]
    fn responses_are_split_off_pipelined_and_partial() {
        let mut r = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\nHTTP/1.1 200 OK\r\nContent-Le"[..],
        );
        let a = parse_response(&mut r, 100, false).unwrap().unwrap();
        assert_eq!((a.status, &a.body[..], a.close), (200, &b"abc"[..], false));
        let b = parse_response(&mut r, 100, false).unwrap().unwrap();
        assert_eq!((b.status, b.body.len(), b.close), (202, 0, true));
        assert!(parse_response(&mut r, 100, false).unwrap().is_none());
        assert_eq!(&r[..], b"HTTP/1.1 200 OK\r\nContent-Le");
        // No length: the body ends with the connection.
        let mut r = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\nxyz"[..]);
        assert!(parse_response(&mut r, 100, false).unwrap().is_none());
        let c = parse_response(&mut r, 100, true).unwrap().unwrap();
        assert_eq!((&c.body[..], c.close), (&b"xyz"[..], true));
        for bad in [
            &b"garbage\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n",
        ] {
            assert!(
                parse_response(&mut BytesMut::from(bad), 100, false).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let f = fulfill();
        let r = RejectBuilder {
            code: ErrorCode::F99_APPLICATION_ERROR,
            triggered_by: b"test.b",
            message: b"",
            data: b"",
        }
        .build();
        let p = |l| Purpose::Prepare(l);
        assert!(matches!(classify(p(LinkKind::Http), 200, f.clone()), Outcome::Reply(b) if b == f));
        assert!(
            matches!(classify(p(LinkKind::HttpOerSync), 200, r.clone()), Outcome::Reply(b) if b == r)
        );
        assert!(matches!(
            classify(p(LinkKind::HttpAsync), 202, BytesMut::new()),
            Outcome::Accepted
        ));
        assert!(matches!(
            classify(p(LinkKind::HttpOerAsync), 200, BytesMut::new()),
            Outcome::Accepted
        ));
        assert!(
            matches!(classify(p(LinkKind::Http), 202, BytesMut::new()), Outcome::Fail(c, _) if c == ErrorCode::T01_PEER_UNREACHABLE)
        );
        assert!(
            matches!(classify(p(LinkKind::Http), 200, BytesMut::from(&b"junk"[..])), Outcome::Fail(c, _) if c == ErrorCode::T01_PEER_UNREACHABLE)
        );
        match classify(p(LinkKind::Http), 503, BytesMut::new()) {
            Outcome::Fail(c, m) => {
                assert_eq!(c, ErrorCode::T01_PEER_UNREACHABLE);
                assert!(m.contains("503"), "{m}");
            }
            o => panic!("{o:?}"),
        }
        assert!(
            matches!(classify(p(LinkKind::Http), 401, BytesMut::new()), Outcome::Fail(c, m) if c == ErrorCode::F02_UNREACHABLE && m.contains("401"))
        );
        assert!(
            matches!(classify(p(LinkKind::Http), 429, BytesMut::new()), Outcome::Fail(c, _) if c == ErrorCode::T05_RATE_LIMITED)
        );
        for s in [408, 409, 429, 500, 503] {
            assert!(
                matches!(
                    classify(p(LinkKind::HttpOerSync), s, BytesMut::new()),
                    Outcome::Retry(_)
                ),
                "{s}"
            );
        }
        assert!(matches!(
            classify(p(LinkKind::HttpOerSync), 401, BytesMut::new()),
            Outcome::Fail(..)
        ));
        assert!(matches!(
            classify(Purpose::Reply, 200, BytesMut::new()),
            Outcome::Accepted
        ));
        assert!(matches!(
            classify(Purpose::Reply, 502, BytesMut::new()),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            classify(Purpose::Reply, 400, BytesMut::new()),
            Outcome::Fail(..)
        ));
    }
}

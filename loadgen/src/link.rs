//! Opening links: TCP connect, the WebSocket upgrade, BTP auth and IL-DCP,
//! done blocking (with timeouts) before a connection joins a worker's event
//! loop. Also a small blocking request/reply link for one-shot payments.
//!
//! Every error names the link, e.g. `send link btp+ws://127.0.0.1:7768/
//! (account loadgen-send): connection refused`.

use bytes::BytesMut;
use ilpd_codec::btp::{self, Btp, BtpType};
use ilpd_codec::ws::{self, Decoder, Message, Opcode, Role};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::url::{LinkUrl, Scheme};

/// Largest WebSocket message / HTTP body we accept (the largest legal ILP
/// packet, a Reject, is 41,997 bytes: docs/design.md "Size limits").
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Zero masking key for client→server frames. RFC 6455 §5.3 requires every
/// client frame to be masked but allows any key; with the zero key the XOR
/// is a no-op, so the generator's frames cost nothing to mask. The server
/// (the connector under test) still runs its unmasking code on every frame.
pub const CLIENT_MASK: [u8; 4] = [0, 0, 0, 0];

/// A link's name for messages: `send link btp+ws://h:p/path (account x)`.
pub fn link_name(role: &str, url: &LinkUrl) -> String {
    if url.user.is_empty() {
        format!("{role} link {url}")
    } else {
        format!("{role} link {url} (account {})", url.user)
    }
}

/// Turns an IO error into the words an operator expects.
pub fn io_cause(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset by peer".into(),
        ConnectionAborted => "connection aborted".into(),
        BrokenPipe => "connection closed by peer (broken pipe)".into(),
        TimedOut | WouldBlock => "timed out".into(),
        UnexpectedEof => "connection closed by peer".into(),
        _ => e.to_string(),
    }
}

/// Some bytes that differ per call (for WebSocket keys and BTP ids).
pub fn nonce16() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let a = crate::lt::mix64(t ^ N.fetch_add(1, Ordering::Relaxed));
    let b = crate::lt::mix64(a ^ std::process::id() as u64);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

/// Connects with a timeout; TCP_NODELAY on.
pub fn tcp_connect(name: &str, url: &LinkUrl, timeout: Duration) -> Result<TcpStream, String> {
    let addr = url.socket_addr().map_err(|e| format!("{name}: {e}"))?;
    let s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("{name}: {}", io_cause(&e)))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// A blocking BTP client connection, authenticated.
pub struct BtpConn {
    pub name: String,
    pub stream: TcpStream,
    /// Bytes read past the last decoded message.
    pub rbuf: BytesMut,
    pub decoder: Decoder,
    next_id: u32,
}

impl BtpConn {
    /// TCP connect, WebSocket upgrade and BTP auth (RFC 23 "Authentication"), each
    /// bounded by `timeout`.
    pub fn open(name: &str, url: &LinkUrl, timeout: Duration) -> Result<BtpConn, String> {
        let deadline = Instant::now() + timeout;
        let mut stream = tcp_connect(name, url, timeout)?;
        let key = ws::client_key(&nonce16());
        let mut out = BytesMut::new();
        ws::write_client_handshake(&mut out, &url.host_header(), &url.path, &key);
        stream
            .write_all(&out)
            .map_err(|e| format!("{name}: {}", io_cause(&e)))?;
        let expected = ws::accept_key(key.as_bytes());
        let mut rbuf = BytesMut::with_capacity(MAX_MESSAGE);
        loop {
            match ws::parse_server_handshake(&rbuf, &expected) {
                Ok(Some(n)) => {
                    let _ = rbuf.split_to(n);
                    break;
                }
                Ok(None) => read_more(name, &mut stream, &mut rbuf, deadline)?,
                Err(e) => {
                    let status = first_line(&rbuf);
                    return Err(format!(
                        "{name}: WebSocket upgrade refused ({e}; server said {status:?})"
                    ));
                }
            }
        }
        let mut conn = BtpConn {
            name: name.to_string(),
            stream,
            rbuf,
            decoder: Decoder::new(Role::Client, MAX_MESSAGE),
            next_id: u32::from_le_bytes([1, 0, 0, 0]) ^ (nonce16()[0] as u32),
        };
        let id = conn.next_request_id();
        let user = (!url.user.is_empty()).then_some(url.user.as_bytes());
        let mut msg = BytesMut::new();
        btp::write_auth(&mut msg, id, user, url.token.as_bytes());
        conn.send_message(&msg)?;
        let reply = conn.recv_reply(id, deadline)?;
        let p = Btp::new_checked(&reply[..])
            .map_err(|e| format!("{name}: malformed BTP auth reply ({e})"))?;
        match p.packet_type() {
            BtpType::Response => Ok(conn),
            BtpType::Error => Err(format!(
                "{name}: authentication refused: BTP error {} {} {:?}",
                String::from_utf8_lossy(&p.error_code()),
                String::from_utf8_lossy(p.error_name()),
                String::from_utf8_lossy(p.error_data()),
            )),
            other => Err(format!("{name}: unexpected BTP {other:?} in reply to auth")),
        }
    }

    pub fn next_request_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Sends one BTP packet as a masked binary frame.
    pub fn send_message(&mut self, btp_packet: &[u8]) -> Result<(), String> {
        let mut frame = BytesMut::with_capacity(btp_packet.len() + 14);
        ws::write_frame(&mut frame, Opcode::Binary, btp_packet, Some(CLIENT_MASK));
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("{}: {}", self.name, io_cause(&e)))
    }

    /// Reads until the reply (Response or Error) to `id` arrives; answers
    /// pings, skips other traffic. Returns the BTP packet bytes.
    pub fn recv_reply(&mut self, id: u32, deadline: Instant) -> Result<BytesMut, String> {
        loop {
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(Message::Binary(p))) => {
                    if let Ok(b) = Btp::new_checked(&p[..]) {
                        if b.request_id() == id && !b.packet_type().is_request() {
                            return Ok(p);
                        }
                        if b.packet_type().is_request() {
                            // A request from the peer (e.g. a Prepare or a
                            // side protocol): answer so it is not left hanging.
                            let rid = b.request_id();
                            let mut out = BytesMut::new();
                            btp::write_empty_response(&mut out, rid);
                            self.send_message(&out)?;
                        }
                    }
                }
                Ok(Some(Message::Ping(p))) => {
                    let mut frame = BytesMut::new();
                    ws::write_frame(&mut frame, Opcode::Pong, &p, Some(CLIENT_MASK));
                    let _ = self.stream.write_all(&frame);
                }
                Ok(Some(Message::Close(code, reason))) => {
                    return Err(format!(
                        "{}: connection closed by peer (WebSocket close {:?} {:?})",
                        self.name,
                        code,
                        String::from_utf8_lossy(&reason)
                    ))
                }
                Ok(Some(_)) => {}
                Ok(None) => read_more(&self.name, &mut self.stream, &mut self.rbuf, deadline)?,
                Err(e) => return Err(format!("{}: malformed WebSocket frame ({e})", self.name)),
            }
        }
    }

    /// Sends an ILP packet in a BTP Message and returns the ILP reply
    /// (Fulfill or Reject) bytes.
    pub fn request_ilp(&mut self, ilp: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
        let id = self.next_request_id();
        let mut msg = BytesMut::new();
        btp::write_ilp_message(&mut msg, id, ilp);
        self.send_message(&msg)?;
        let reply = self.recv_reply(id, Instant::now() + timeout)?;
        let p = Btp::new_checked(&reply[..])
            .map_err(|e| format!("{}: malformed BTP reply ({e})", self.name))?;
        if p.packet_type() == BtpType::Error {
            return Err(format!(
                "{}: BTP error {} {} {:?}",
                self.name,
                String::from_utf8_lossy(&p.error_code()),
                String::from_utf8_lossy(p.error_name()),
                String::from_utf8_lossy(p.error_data()),
            ));
        }
        p.ilp()
            .map(|b| b.to_vec())
            .ok_or_else(|| format!("{}: BTP response without an ilp entry", self.name))
    }

    /// Asks the parent for our address over IL-DCP (RFC 31 "Packet").
    pub fn ildcp(&mut self, timeout: Duration) -> Result<String, String> {
        let req = ilpd_codec::peer::ildcp::request_prepare(expiry_in(Duration::from_secs(60)));
        let reply = self.request_ilp(&req, timeout)?;
        match ilpd_codec::peer::ildcp::parse_response_fulfill(&reply) {
            Ok(r) => Ok(String::from_utf8_lossy(r.client_address).into_owned()),
            Err(_) => Err(format!(
                "{}: IL-DCP failed: {}",
                self.name,
                describe_ilp_reply(&reply)
            )),
        }
    }

    /// Hands the socket and any buffered bytes over (for the event loop).
    pub fn into_parts(self) -> (TcpStream, BytesMut, Decoder) {
        (self.stream, self.rbuf, self.decoder)
    }

    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A blocking ILP-over-HTTP client (synchronous mode, RFC 35 draft 2).
pub struct HttpConn {
    pub name: String,
    url: LinkUrl,
    stream: Option<TcpStream>,
    timeout: Duration,
}

impl HttpConn {
    pub fn open(name: &str, url: &LinkUrl, timeout: Duration) -> Result<HttpConn, String> {
        let stream = tcp_connect(name, url, timeout)?;
        Ok(HttpConn {
            name: name.to_string(),
            url: url.clone(),
            stream: Some(stream),
            timeout,
        })
    }

    /// POSTs one ILP packet; returns the ILP reply body (status 200).
    pub fn request_ilp(&mut self, ilp: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        if self.stream.is_none() {
            self.stream = Some(tcp_connect(&self.name, &self.url, self.timeout)?);
        }
        let name = self.name.clone();
        let Some(stream) = self.stream.as_mut() else {
            return Err(format!("{name}: not connected"));
        };
        let mut req = Vec::with_capacity(256 + ilp.len());
        write_http_request_head(&mut req, &self.url, ilp.len());
        req.extend_from_slice(ilp);
        stream
            .write_all(&req)
            .map_err(|e| format!("{name}: {}", io_cause(&e)))?;
        let mut rbuf = BytesMut::with_capacity(4096);
        loop {
            match parse_http_response(&rbuf) {
                Ok(Some(resp)) => {
                    let body = rbuf[resp.body.clone()].to_vec();
                    if resp.close {
                        self.stream = None;
                    }
                    return match resp.status {
                        200 => Ok(body),
                        401 | 403 => Err(format!(
                            "{name}: HTTP {} (wrong or missing token)",
                            resp.status
                        )),
                        s => Err(format!(
                            "{name}: HTTP {s} {:?}",
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        )),
                    };
                }
                Ok(None) => {
                    if let Err(e) = read_more(&name, stream, &mut rbuf, deadline) {
                        self.stream = None;
                        return Err(e);
                    }
                }
                Err(e) => {
                    self.stream = None;
                    return Err(format!("{name}: malformed HTTP response ({e})"));
                }
            }
        }
    }
}

/// `POST <path> HTTP/1.1` with the headers RFC 35 asks for, body to follow.
pub fn write_http_request_head(out: &mut Vec<u8>, url: &LinkUrl, body_len: usize) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(url.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(url.host_header().as_bytes());
    out.extend_from_slice(
        b"\r\nContent-Type: application/octet-stream\r\nAccept: application/octet-stream\r\n",
    );
    if !url.token.is_empty() {
        out.extend_from_slice(b"Authorization: Bearer ");
        out.extend_from_slice(url.token.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(body_len.to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// A parsed HTTP response: status, where the body is, total bytes taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: std::ops::Range<usize>,
    pub len: usize,
    pub close: bool,
}

/// Parses one complete response at the start of `buf` (needs
/// Content-Length; chunked bodies are refused). `Ok(None)` = incomplete.
pub fn parse_http_response(buf: &[u8]) -> Result<Option<HttpResponse>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > 16 * 1024 {
                return Err("response head over 16 KiB".into());
            }
            return Ok(None);
        }
        Err(e) => return Err(format!("{e}")),
    };
    let mut len = None;
    let mut close = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_none() {
                return Err("bad Content-Length".into());
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked transfer encoding is not supported".into());
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let status = resp.code.unwrap_or(0);
    let body_len = len.unwrap_or(0);
    if body_len > MAX_MESSAGE {
        return Err(format!("body of {body_len} bytes is too large"));
    }
    if buf.len() < head + body_len {
        return Ok(None);
    }
    Ok(Some(HttpResponse {
        status,
        body: head..head + body_len,
        len: head + body_len,
        close,
    }))
}

/// Reads more bytes, failing at `deadline` or on EOF.
fn read_more(
    name: &str,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(format!("{name}: timed out waiting for the peer"));
    }
    let _ = stream.set_read_timeout(Some(left));
    let mut tmp = [0u8; 16 * 1024];
    match stream.read(&mut tmp) {
        Ok(0) => Err(format!("{name}: connection closed by peer")),
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            if buf.len() > 4 * MAX_MESSAGE {
                return Err(format!("{name}: peer sent too much data"));
            }
            Ok(())
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(format!("{name}: timed out waiting for the peer"))
        }
        Err(e) => Err(format!("{name}: {}", io_cause(&e))),
    }
}

fn first_line(buf: &[u8]) -> String {
    let end = buf
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(buf.len())
        .min(120);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The wall clock in ms since the Unix epoch.
/// A request the connector sent on one of our send links: ILP is refused
/// with F02 `message` (we receive elsewhere, or not at all), anything else
/// acknowledged. The answer is queued on `wbuf`.
pub fn refuse_request_on_send_link(wbuf: &mut Vec<u8>, b: &Btp<&[u8]>, message: &[u8]) {
    let rid = b.request_id();
    let mut out = BytesMut::new();
    if b.ilp().is_some() {
        let rej = ilpd_codec::ilp::RejectBuilder {
            code: ilpd_codec::ErrorCode::F02_UNREACHABLE,
            triggered_by: b"",
            message,
            data: b"",
        }
        .build();
        btp::write_ilp_response(&mut out, rid, &rej);
    } else {
        btp::write_empty_response(&mut out, rid);
    }
    ws::write_frame(wbuf, Opcode::Binary, &out, Some(CLIENT_MASK));
}

/// `NAME: BTP error CODE Name`, for a BTP Error on link `name`.
pub fn btp_error_text(name: &str, b: &Btp<&[u8]>) -> String {
    format!(
        "{name}: BTP error {} {}",
        String::from_utf8_lossy(&b.error_code()),
        String::from_utf8_lossy(b.error_name())
    )
}

/// Why a non-200 ILP-over-HTTP answer failed, from its status and body.
pub fn http_failure_cause(status: u16, body: &[u8]) -> String {
    match status {
        401 | 403 => "wrong or missing token".to_string(),
        _ => String::from_utf8_lossy(&body[..body.len().min(100)]).into_owned(),
    }
}

pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An expiry `d` from now.
pub fn expiry_in(d: Duration) -> ilpd_codec::Expiry {
    ilpd_codec::Expiry(wall_ms() + d.as_millis() as u64)
}

/// One line saying what an ILP reply was (for error messages).
pub fn describe_ilp_reply(b: &[u8]) -> String {
    use ilpd_codec::ilp::{Fulfill, Reject};
    if let Ok(r) = Reject::new_checked(b) {
        format!(
            "reject {} from {:?}: {:?}",
            r.code().as_str(),
            String::from_utf8_lossy(r.triggered_by()),
            String::from_utf8_lossy(r.message())
        )
    } else if Fulfill::new_checked(b).is_ok() {
        "fulfill".into()
    } else {
        format!("malformed ILP reply ({} bytes)", b.len())
    }
}

/// The scheme-specific blocking link for one-shot requests.
pub enum BlockingLink {
    Btp(BtpConn),
    Http(HttpConn),
}

impl BlockingLink {
    pub fn open(name: &str, url: &LinkUrl, timeout: Duration) -> Result<BlockingLink, String> {
        match url.scheme {
            Scheme::Btp => BtpConn::open(name, url, timeout).map(BlockingLink::Btp),
            Scheme::Http => HttpConn::open(name, url, timeout).map(BlockingLink::Http),
        }
    }

    pub fn request_ilp(&mut self, ilp: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
        match self {
            BlockingLink::Btp(c) => c.request_ilp(ilp, timeout),
            BlockingLink::Http(c) => c.request_ilp(ilp, timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_response_parsing() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1";
        let p = parse_http_response(r).unwrap().unwrap();
        assert_eq!((p.status, p.body.clone(), p.len), (200, 38..41, 41));
        assert_eq!(&r[p.body], b"abc");
        assert_eq!(parse_http_response(&r[..39]).unwrap(), None);
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_http_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn refused_connection_names_the_link() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let url = LinkUrl::parse(&format!("btp+ws://me:tok@127.0.0.1:{port}/")).unwrap();
        let name = link_name("send", &url);
        let err = match BtpConn::open(&name, &url, Duration::from_secs(2)) {
            Err(e) => e,
            Ok(_) => panic!("connected to a closed port"),
        };
        assert!(err.contains("send link btp+ws://127.0.0.1:"), "{err}");
        assert!(err.contains("(account me)"), "{err}");
        assert!(err.contains("connection refused"), "{err}");
    }
}

//! A small blocking BTP/2.0-over-WebSocket client for the engine tests:
//! std `TcpStream`, frames written and read by hand here (so the tests do
//! not only check the codec against itself), BTP packets built and parsed
//! with the codec. Every read has a timeout; nothing here can hang a test.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ilpd_codec::btp::{self, Btp, BtpType};

/// WebSocket opcodes (RFC 6455 §5.2).
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// One BTP packet from the server, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtpPacket {
    pub ty: BtpType,
    pub request_id: u32,
    /// The ILP packet of the primary `ilp` entry, if any.
    pub ilp: Option<Vec<u8>>,
    /// Error packets: code and name.
    pub error_code: [u8; 3],
    pub error_name: Vec<u8>,
    pub raw: Vec<u8>,
}

/// What a read ended with.
#[derive(Debug)]
pub enum ReadError {
    Timeout,
    /// The peer closed the TCP connection (or sent a WebSocket Close).
    Closed,
    Io(io::Error),
    Bad(String),
}

pub struct BtpClient {
    stream: TcpStream,
    buf: Vec<u8>,
    next_id: u32,
    mask_seed: u32,
}

/// RFC 6455 §5.3 masking; the same call unmasks.
fn xor_mask(data: &mut [u8], key: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

impl BtpClient {
    /// TCP connect only (for tests that misbehave before the upgrade).
    pub fn connect_tcp(addr: SocketAddr) -> io::Result<BtpClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        // A write that blocks this long fails instead of hanging the test.
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(BtpClient {
            stream,
            buf: Vec::new(),
            next_id: 1,
            mask_seed: 0x1234_5678,
        })
    }

    /// TCP connect from a chosen local address (any of 127.0.0.0/8 on
    /// Linux), so a test can play clients from several source IPs.
    pub fn connect_tcp_from(src: IpAddr, addr: SocketAddr) -> io::Result<BtpClient> {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        s.bind(&SocketAddr::new(src, 0).into())?;
        s.connect_timeout(&addr.into(), Duration::from_secs(5))?;
        let stream: TcpStream = s.into();
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(BtpClient {
            stream,
            buf: Vec::new(),
            next_id: 1,
            mask_seed: 0x1234_5678,
        })
    }

    /// The socket, for tests that tune timeouts or read and write raw.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// TCP connect and WebSocket upgrade (RFC 6455 §4.1).
    pub fn connect(addr: SocketAddr) -> io::Result<BtpClient> {
        let mut c = BtpClient::connect_tcp(addr)?;
        c.upgrade()?;
        Ok(c)
    }

    /// TCP, upgrade and BTP auth; fails unless the server answers the auth
    /// with a Response (RFC 23 "Authentication").
    pub fn connect_auth(
        addr: SocketAddr,
        username: Option<&str>,
        token: &str,
    ) -> Result<BtpClient, String> {
        let mut c = BtpClient::connect(addr).map_err(|e| format!("connect: {e}"))?;
        let id = c
            .send_auth(username, token)
            .map_err(|e| format!("send auth: {e}"))?;
        match c.read_btp(Duration::from_secs(5)) {
            Ok(p) if p.ty == BtpType::Response && p.request_id == id => Ok(c),
            Ok(p) => Err(format!("auth answered with {p:?}")),
            Err(e) => Err(format!("auth: {e:?}")),
        }
    }

    /// Sends the upgrade request and checks the `101` answer.
    pub fn upgrade(&mut self) -> io::Result<()> {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let req = format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        self.stream.write_all(req.as_bytes())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                self.buf.drain(..end + 4);
                // RFC 6455 §1.3 example: this key's accept value.
                if !head.starts_with("HTTP/1.1 101")
                    || !head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                {
                    return Err(io::Error::other(format!("bad upgrade answer: {head}")));
                }
                return Ok(());
            }
            match self.fill(deadline) {
                Ok(()) => {}
                Err(ReadError::Io(e)) => return Err(e),
                Err(e) => return Err(io::Error::other(format!("upgrade: {e:?}"))),
            }
        }
    }

    /// A new client-side request id.
    pub fn next_request_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// One masked frame (clients must mask, RFC 6455 §5.1).
    pub fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.mask_seed = self
            .mask_seed
            .wrapping_mul(1_103_515_245)
            .wrapping_add(12345);
        let key = self.mask_seed.to_be_bytes();
        let mut f = vec![0x80 | opcode];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(&key);
        let start = f.len();
        f.extend_from_slice(payload);
        xor_mask(&mut f[start..], key);
        self.stream.write_all(&f)
    }

    /// The auth Message (RFC 23 "Authentication"); returns its request id.
    pub fn send_auth(&mut self, username: Option<&str>, token: &str) -> io::Result<u32> {
        let id = self.next_request_id();
        let mut b = Vec::new();
        btp::write_auth(&mut b, id, username.map(str::as_bytes), token.as_bytes());
        self.send_frame(OP_BINARY, &b)?;
        Ok(id)
    }

    /// A BTP Message carrying `ilp`; returns its request id.
    pub fn send_prepare(&mut self, ilp: &[u8]) -> io::Result<u32> {
        let id = self.next_request_id();
        let mut b = Vec::new();
        btp::write_ilp_message(&mut b, id, ilp);
        self.send_frame(OP_BINARY, &b)?;
        Ok(id)
    }

    /// A BTP Response carrying `ilp` (a Fulfill or Reject) for `request_id`.
    pub fn send_response(&mut self, request_id: u32, ilp: &[u8]) -> io::Result<()> {
        let mut b = Vec::new();
        btp::write_ilp_response(&mut b, request_id, ilp);
        self.send_frame(OP_BINARY, &b)
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), ReadError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout);
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(ReadError::Io)?;
        let mut tmp = [0u8; 16 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => Err(ReadError::Closed),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(ReadError::Timeout)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) =>
            {
                Err(ReadError::Closed)
            }
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// The next frame from the server (unmasked, RFC 6455 §5.1).
    pub fn read_frame(&mut self, timeout: Duration) -> Result<Frame, ReadError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 2 {
                let b0 = self.buf[0];
                let b1 = self.buf[1];
                if b1 & 0x80 != 0 {
                    return Err(ReadError::Bad("server frame is masked".into()));
                }
                let (len, hdr) = match b1 & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(a) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= hdr + len {
                    let payload = self.buf[hdr..hdr + len].to_vec();
                    self.buf.drain(..hdr + len);
                    if b0 & 0x80 == 0 {
                        return Err(ReadError::Bad("fragmented frame".into()));
                    }
                    return Ok(Frame {
                        opcode: b0 & 0x0f,
                        payload,
                    });
                }
            }
            self.fill(deadline)?;
        }
    }

    /// The next BTP packet, skipping pings and pongs; a Close frame is
    /// reported as [`ReadError::Closed`].
    pub fn read_btp(&mut self, timeout: Duration) -> Result<BtpPacket, ReadError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self.read_frame(left)?;
            match f.opcode {
                OP_BINARY => {
                    let v = Btp::new_checked(&f.payload[..])
                        .map_err(|e| ReadError::Bad(format!("BTP: {e}")))?;
                    return Ok(BtpPacket {
                        ty: v.packet_type(),
                        request_id: v.request_id(),
                        ilp: v.ilp().map(<[u8]>::to_vec),
                        error_code: v.error_code(),
                        error_name: v.error_name().to_vec(),
                        raw: f.payload.clone(),
                    });
                }
                OP_CLOSE => return Err(ReadError::Closed),
                OP_PING | OP_PONG => continue,
                other => return Err(ReadError::Bad(format!("unexpected opcode {other}"))),
            }
        }
    }

    /// True if the server closes the connection (TCP EOF or a Close frame)
    /// within `timeout`; BTP packets that arrive first are skipped.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Ok(f) if f.opcode == OP_CLOSE => return true,
                Ok(_) => continue,
                Err(ReadError::Closed) => return true,
                Err(ReadError::Io(_)) => return true,
                Err(ReadError::Timeout) => return false,
                Err(ReadError::Bad(_)) => continue,
            }
        }
    }

    /// A second handle on the same socket (e.g. one thread writes, one
    /// reads); the clone starts with an empty read buffer, so only one of
    /// the two should read.
    pub fn try_clone(&self) -> io::Result<BtpClient> {
        Ok(BtpClient {
            stream: self.stream.try_clone()?,
            buf: Vec::new(),
            next_id: self.next_id.wrapping_add(0x4000_0000),
            mask_seed: self.mask_seed ^ 0xdead_beef,
        })
    }

    /// Shuts the TCP connection down in both directions.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

// ---------------------------------------------------------------------------
// ILP packets and metrics, for the engine tests.

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An ILP Prepare (built with the codec).
pub fn prepare(
    amount: u64,
    expires_unix_ms: u64,
    condition: &[u8; 32],
    destination: &str,
    data: &[u8],
) -> Vec<u8> {
    ilpd_codec::PrepareBuilder {
        amount,
        expires_at: ilpd_codec::Expiry(expires_unix_ms),
        execution_condition: condition,
        destination: destination.as_bytes(),
        data,
    }
    .build()
    .to_vec()
}

/// An ILP Fulfill.
pub fn fulfill(fulfillment: &[u8; 32], data: &[u8]) -> Vec<u8> {
    ilpd_codec::FulfillBuilder { fulfillment, data }
        .build()
        .to_vec()
}

/// An ILP Reject.
pub fn reject(code: &str, triggered_by: &str, message: &str) -> Vec<u8> {
    let mut c = [0u8; 3];
    c.copy_from_slice(&code.as_bytes()[..3]);
    ilpd_codec::RejectBuilder {
        code: ilpd_codec::ErrorCode::from_bytes(c)
            .unwrap_or(ilpd_codec::ErrorCode::F00_BAD_REQUEST),
        triggered_by: triggered_by.as_bytes(),
        message: message.as_bytes(),
        data: b"",
    }
    .build()
    .to_vec()
}

/// An ILP reply as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Fulfill {
        fulfillment: [u8; 32],
    },
    Reject {
        code: String,
        triggered_by: String,
        message: String,
    },
    Prepare {
        amount: u64,
        destination: String,
        expires_ms: u64,
        condition: [u8; 32],
    },
}

/// Decodes an ILP packet; panics (test-facing) if it is malformed.
pub fn parse_ilp(b: &[u8]) -> Reply {
    use ilpd_codec::Packet;
    match Packet::new_checked(b) {
        Ok(Packet::Fulfill(f)) => Reply::Fulfill {
            fulfillment: *f.fulfillment(),
        },
        Ok(Packet::Reject(r)) => Reply::Reject {
            code: String::from_utf8_lossy(r.code().as_bytes()).into(),
            triggered_by: String::from_utf8_lossy(r.triggered_by()).into(),
            message: String::from_utf8_lossy(r.message()).into(),
        },
        Ok(Packet::Prepare(p)) => Reply::Prepare {
            amount: p.amount(),
            destination: String::from_utf8_lossy(p.destination()).into(),
            expires_ms: p.expires_at().0,
            condition: *p.execution_condition(),
        },
        Err(e) => panic!("malformed ILP packet from ilpd: {e} ({b:02x?})"),
    }
}

/// `GET path` over HTTP/1.1; returns status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of the sample `name{labels}` (labels exactly as rendered,
/// e.g. `account="alice"`; empty for none) in Prometheus text.
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(key.as_str())
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// Scrapes `/metrics` and reads one sample.
pub fn scrape(addr: SocketAddr, name: &str, labels: &str) -> Option<f64> {
    let (status, body) = http_get(addr, "/metrics").ok()?;
    if status != 200 {
        return None;
    }
    metric(&body, name, labels)
}

/// An account's balance from ilpd's `/metrics` (`ilpd_account_balance`);
/// panics if it is not there.
pub fn balance(metrics: SocketAddr, account: &str) -> i64 {
    scrape(
        metrics,
        "ilpd_account_balance",
        &format!("account=\"{account}\""),
    )
    .unwrap_or_else(|| panic!("no ilpd_account_balance for {account} at {metrics}")) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn masks_frames_and_reads_unmasked_ones() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut hdr = [0u8; 6];
            s.read_exact(&mut hdr).unwrap();
            assert_eq!(hdr[0], 0x82);
            assert_eq!(hdr[1], 0x80 | 3);
            let mut p = [0u8; 3];
            s.read_exact(&mut p).unwrap();
            xor_mask(&mut p, [hdr[2], hdr[3], hdr[4], hdr[5]]);
            assert_eq!(&p, b"abc");
            // Answer with an unmasked binary frame of 200 bytes (16-bit length).
            let mut f = vec![0x82, 126, 0, 200];
            f.extend(std::iter::repeat_n(7u8, 200));
            s.write_all(&f).unwrap();
        });
        let mut c = BtpClient::connect_tcp(addr).unwrap();
        c.send_frame(OP_BINARY, b"abc").unwrap();
        let f = c.read_frame(Duration::from_secs(5)).unwrap();
        assert_eq!(f.opcode, OP_BINARY);
        assert_eq!(f.payload, vec![7u8; 200]);
        server.join().unwrap();
        assert!(c.closed_within(Duration::from_secs(5)));
    }

    #[test]
    fn metric_lines_are_found_exactly() {
        let text = "# HELP x y\nilpd_account_balance{account=\"alice\"} -12\nilpd_account_balance{account=\"al\"} 3\nup 1\n";
        assert_eq!(
            metric(text, "ilpd_account_balance", "account=\"alice\""),
            Some(-12.0)
        );
        assert_eq!(
            metric(text, "ilpd_account_balance", "account=\"al\""),
            Some(3.0)
        );
        assert_eq!(metric(text, "up", ""), Some(1.0));
        assert_eq!(
            metric(text, "ilpd_account_balance", "account=\"bob\""),
            None
        );
    }

    #[test]
    fn packets_round_trip() {
        let p = prepare(5, 1_700_000_000_123, &[3; 32], "test.a.b", b"hi");
        assert_eq!(
            parse_ilp(&p),
            Reply::Prepare {
                amount: 5,
                destination: "test.a.b".into(),
                expires_ms: 1_700_000_000_123,
                condition: [3; 32]
            }
        );
        assert_eq!(
            parse_ilp(&fulfill(&[9; 32], b"")),
            Reply::Fulfill {
                fulfillment: [9; 32]
            }
        );
        match parse_ilp(&reject("T04", "test.x", "no")) {
            Reply::Reject {
                code,
                triggered_by,
                message,
            } => assert_eq!(
                (code.as_str(), triggered_by.as_str(), message.as_str()),
                ("T04", "test.x", "no")
            ),
            other => panic!("{other:?}"),
        }
    }
}

//! One connection: its socket, buffers and handshake state.
//!
//! Server side: HTTP upgrade → BTP auth → established. Client side: TCP
//! connect → upgrade request → auth sent → established. Once established
//! both are symmetric: Messages from the peer are its Prepares, Responses
//! and Errors answer our Forwards (RFC 23 "Authentication", "Message").

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Write};

use bytes::{Buf, BytesMut};
use ilpd_codec::btp;
use ilpd_codec::ws::{self, Decoder, Opcode, Role};
use mio::net::TcpStream;

use super::conn_limits::Admission;
use crate::core::{AccountId, OutId};

/// Buffer growth step for reads.
const READ_CHUNK: usize = 64 * 1024;
/// Below this much spare room the read buffer grows by [`READ_CHUNK`].
const MIN_SPARE: usize = 4 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Server: waiting for the HTTP upgrade request.
    HttpUpgrade,
    /// Client: TCP connect in progress.
    Connecting,
    /// Client: upgrade request sent, waiting for `101` with this accept value.
    WsHandshake { accept: String },
    /// Server: upgraded, waiting for the BTP auth Message (RFC 23 "Authentication").
    AwaitAuth,
    /// Client: auth Message sent with this request id.
    AuthSent { request_id: u32 },
    /// Authenticated as the connection's account.
    Established,
}

/// Why a connection was closed (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    PeerClosed,
    IoError,
    BadHandshake,
    HandshakeTimeout,
    AuthFailed,
    ProtocolError,
    Oversized,
    SlowReader,
    Shutdown,
    ConnectFailed,
}

impl CloseReason {
    pub const ALL: [CloseReason; 10] = [
        CloseReason::PeerClosed,
        CloseReason::IoError,
        CloseReason::BadHandshake,
        CloseReason::HandshakeTimeout,
        CloseReason::AuthFailed,
        CloseReason::ProtocolError,
        CloseReason::Oversized,
        CloseReason::SlowReader,
        CloseReason::Shutdown,
        CloseReason::ConnectFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::IoError => "io_error",
            CloseReason::BadHandshake => "bad_handshake",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::AuthFailed => "auth_failed",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::Oversized => "oversized",
            CloseReason::SlowReader => "slow_reader",
            CloseReason::Shutdown => "shutdown",
            CloseReason::ConnectFailed => "connect_failed",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A Forward we wrote on this connection: which worker's Core waits for the
/// answer, under which id, and in which sweep epoch it was sent (see
/// [`Conn::sweep_outstanding`]).
#[derive(Debug, Clone, Copy)]
pub struct Outstanding {
    pub origin: u16,
    pub epoch: u16,
    pub out_id: OutId,
}

/// Hasher for the u32 wire request ids we pick ourselves (sequential, so a
/// multiplicative mix is enough; no peer chooses these keys).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Result of reading from the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Read until WouldBlock.
    Drained,
    /// Stopped early because enough is buffered; more may be waiting.
    Full,
    /// The peer closed its side.
    Eof,
}

pub struct Conn {
    pub stream: TcpStream,
    pub role: Role,
    pub state: State,
    /// Server side: set at auth. Client side: the account we dial.
    pub account: Option<AccountId>,
    /// Client side: index into the worker's client slots.
    pub client_slot: Option<usize>,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    pub decoder: Decoder,
    /// Handshake deadline (unix ms) until established.
    pub deadline_ms: u64,
    /// Our Forwards on this connection, by wire request id.
    pub outstanding: IdMap<Outstanding>,
    pub next_request_id: u32,
    /// In the worker's ready list (has unread bytes or unprocessed frames).
    pub in_ready: bool,
    /// In the worker's dirty list (has bytes to write).
    pub in_dirty: bool,
    /// The peer closed its side: process what is buffered, then close.
    pub eof: bool,
    /// Since when (unix ms) the output buffer has stayed over the limit.
    pub over_limit_since: Option<u64>,
    /// Output went over this connection's limit: it is not read until its
    /// output drains below half (other connections are unaffected).
    pub read_paused: bool,
    /// Bytes of pongs queued before auth (capped at
    /// [`PRE_AUTH_OUTPUT_LIMIT`]).
    pub pre_auth_output: usize,
    /// An accepted connection's place under the connection caps (none for
    /// our own dials); released when the connection is dropped.
    pub admission: Option<Admission>,
}

/// Output a connection may buffer before it is authenticated (pongs and
/// handshake answers): an anonymous client that never reads holds no more.
pub const PRE_AUTH_OUTPUT_LIMIT: usize = 4 * 1024;

impl Conn {
    pub fn new(
        stream: TcpStream,
        role: Role,
        state: State,
        max_message: usize,
        deadline_ms: u64,
    ) -> Conn {
        Conn {
            stream,
            role,
            state,
            account: None,
            client_slot: None,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            decoder: Decoder::new(role, max_message),
            deadline_ms,
            outstanding: IdMap::default(),
            next_request_id: 1,
            in_ready: false,
            in_dirty: false,
            eof: false,
            over_limit_since: None,
            read_paused: false,
            pre_auth_output: 0,
            admission: None,
        }
    }

    /// How much output this connection may buffer before it stops being
    /// read: `established` (write_buffer_limit) once authenticated, a few
    /// KB before.
    pub fn output_limit(&self, established: usize) -> usize {
        if self.is_established() {
            established
        } else {
            PRE_AUTH_OUTPUT_LIMIT
        }
    }

    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Reads until WouldBlock, EOF, or `cap` bytes are buffered. Adds the
    /// bytes read to `bytes_in`. Reads straight into the buffer's spare
    /// capacity (no zero-fill); `reserve` reuses the allocation once the
    /// frames split off it have been dropped.
    pub fn read_some(&mut self, cap: usize, bytes_in: &mut u64) -> io::Result<ReadOutcome> {
        loop {
            let len = self.rbuf.len();
            if len >= cap {
                return Ok(ReadOutcome::Full);
            }
            if self.rbuf.capacity() - len < MIN_SPARE {
                self.rbuf.reserve(READ_CHUNK);
            }
            let result = socket2::SockRef::from(&self.stream).recv(self.rbuf.spare_capacity_mut());
            match result {
                Ok(0) => return Ok(ReadOutcome::Eof),
                Ok(n) => {
                    // SAFETY: recv(2) initialized the first `n` bytes of the
                    // spare capacity it was given, and `n` ≤ its length.
                    unsafe { self.rbuf.set_len(len + n) };
                    *bytes_in += n as u64;
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Drained),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                },
            }
        }
    }

    /// Writes as much of the output buffer as the socket takes. Returns the
    /// bytes written; `Ok` with output left means the socket is full (mio
    /// reports WRITABLE when it drains).
    pub fn flush(&mut self) -> io::Result<usize> {
        let mut total = 0;
        while !self.wbuf.is_empty() {
            match self.stream.write(&self.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wbuf.advance(n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 1 << 20 {
            // Give back memory a burst grew.
            self.wbuf = BytesMut::new();
        }
        Ok(total)
    }

    /// A fresh wire request id for a Forward, never one still outstanding
    /// (RFC 23 "Overview": never two in flight with the same id).
    pub fn take_request_id(&mut self) -> u32 {
        loop {
            let id = self.next_request_id;
            self.next_request_id = self.next_request_id.wrapping_add(1);
            if !self.outstanding.contains_key(&id) {
                return id;
            }
        }
    }

    /// Forgets Forwards sent before epoch `current − 1` (wrapping): a peer
    /// that never answers must not grow this map for the life of the
    /// connection. The worker bumps the epoch once per longest hold time,
    /// so by then the origin Core has already answered them (R00 at the
    /// outgoing expiry) and a late reply would be dropped anyway.
    pub fn sweep_outstanding(&mut self, current: u16) {
        if self.outstanding.is_empty() {
            return;
        }
        let prev = current.wrapping_sub(1);
        self.outstanding
            .retain(|_, o| o.epoch == current || o.epoch == prev);
        if self.outstanding.is_empty() && self.outstanding.capacity() > 1024 {
            // Give back what a burst (or a silent peer) grew.
            self.outstanding = IdMap::default();
        }
    }

    /// Writes one binary frame of `len` bytes produced by `f` straight into
    /// the output buffer: unmasked from the server, masked (in place) from
    /// the client (RFC 6455 §5.1, §5.3).
    pub fn put_binary(&mut self, mask: Option<[u8; 4]>, len: usize, f: impl FnOnce(&mut BytesMut)) {
        let mask = if self.role == Role::Client {
            mask
        } else {
            None
        };
        ws::write_frame_header(&mut self.wbuf, true, Opcode::Binary, len, mask);
        let start = self.wbuf.len();
        f(&mut self.wbuf);
        debug_assert_eq!(self.wbuf.len() - start, len);
        if let Some(k) = mask {
            ws::unmask(&mut self.wbuf[start..], k);
        }
    }

    /// A BTP Message carrying an ILP Prepare (RFC 23 "Message").
    pub fn put_ilp_message(&mut self, mask: [u8; 4], request_id: u32, packet: &[u8]) {
        self.put_binary(Some(mask), btp::ilp_message_len(packet.len()), |b| {
            btp::write_ilp_message(b, request_id, packet)
        });
    }

    /// A BTP Response carrying an ILP Fulfill or Reject (RFC 23 "Message";
    /// docs/design.md "Carrying ILP over BTP").
    pub fn put_ilp_response(&mut self, mask: [u8; 4], request_id: u32, packet: &[u8]) {
        self.put_binary(Some(mask), btp::ilp_response_len(packet.len()), |b| {
            btp::write_ilp_response(b, request_id, packet)
        });
    }

    /// A BTP Response with no protocolData.
    pub fn put_empty_response(&mut self, mask: [u8; 4], request_id: u32) {
        let mut tmp = Vec::with_capacity(8);
        btp::write_empty_response(&mut tmp, request_id);
        self.put_binary(Some(mask), tmp.len(), |b| b.extend_from_slice(&tmp));
    }

    /// A BTP Error (RFC 23 §Error), e.g. F00 NotAcceptedError.
    pub fn put_btp_error(
        &mut self,
        mask: [u8; 4],
        request_id: u32,
        code: &[u8; 3],
        data: &[u8],
        now_ms: u64,
    ) {
        let name = btp::error_name_for(code).unwrap_or("NotAcceptedError");
        let at = ilpd_codec::time::format_generalized_time(now_ms);
        let mut tmp = Vec::with_capacity(64 + data.len());
        btp::write_error(&mut tmp, request_id, code, name.as_bytes(), &at, data, &[]);
        self.put_binary(Some(mask), tmp.len(), |b| b.extend_from_slice(&tmp));
    }

    /// A WebSocket control frame (ping answer, close).
    pub fn put_control(&mut self, mask: [u8; 4], opcode: Opcode, payload: &[u8]) {
        let mask = if self.role == Role::Client {
            Some(mask)
        } else {
            None
        };
        ws::write_frame(&mut self.wbuf, opcode, payload, mask);
    }

    /// A WebSocket Close frame with a status code (RFC 6455 §7.4.1).
    pub fn put_close(&mut self, mask: [u8; 4], code: u16, reason: &str) {
        let mask = if self.role == Role::Client {
            Some(mask)
        } else {
            None
        };
        ws::write_close(&mut self.wbuf, code, reason.as_bytes(), mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pair() -> (Conn, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let conn = Conn::new(
            TcpStream::from_std(s),
            Role::Server,
            State::Established,
            65536,
            0,
        );
        (conn, c)
    }

    #[test]
    fn reads_frames_and_writes_answers() {
        let (mut conn, mut peer) = pair();
        // A masked client frame carrying a BTP Message with an ILP payload.
        let mut btp_msg = Vec::new();
        btp::write_ilp_message(&mut btp_msg, 7, b"\x0c\x01\x00");
        let mut frame = Vec::new();
        ws::write_frame(&mut frame, Opcode::Binary, &btp_msg, Some([1, 2, 3, 4]));
        peer.write_all(&frame).unwrap();
        let mut n = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while conn.rbuf.len() < frame.len() && std::time::Instant::now() < deadline {
            conn.read_some(1 << 20, &mut n).unwrap();
        }
        assert_eq!(n as usize, frame.len());
        match conn.decoder.decode(&mut conn.rbuf).unwrap() {
            Some(ws::Message::Binary(p)) => assert_eq!(&p[..], &btp_msg[..]),
            other => panic!("{other:?}"),
        }
        // Answer: an unmasked frame from the server side.
        conn.put_ilp_response([9; 4], 7, b"\x0d\x00");
        let expect_len = conn.wbuf.len();
        assert_eq!(conn.flush().unwrap(), expect_len);
        let mut got = vec![0u8; expect_len];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got[0], 0x82);
        let mut expected = Vec::new();
        btp::write_ilp_response(&mut expected, 7, b"\x0d\x00");
        assert_eq!(&got[2..], &expected[..]);
        // EOF is reported.
        drop(peer);
        let mut outcome = ReadOutcome::Drained;
        while outcome == ReadOutcome::Drained && std::time::Instant::now() < deadline {
            outcome = conn.read_some(1 << 20, &mut n).unwrap();
        }
        assert_eq!(outcome, ReadOutcome::Eof);
    }

    #[test]
    fn request_ids_skip_outstanding_ones() {
        let (mut conn, _peer) = pair();
        conn.next_request_id = u32::MAX;
        conn.outstanding.insert(
            0,
            Outstanding {
                origin: 0,
                epoch: 0,
                out_id: OutId(1),
            },
        );
        assert_eq!(conn.take_request_id(), u32::MAX);
        assert_eq!(
            conn.take_request_id(),
            1,
            "0 is outstanding, so it is skipped"
        );
    }

    #[test]
    fn sweep_forgets_forwards_older_than_one_epoch() {
        let (mut conn, _peer) = pair();
        for (id, epoch) in [(1, u16::MAX - 1), (2, u16::MAX), (3, 0), (4, 0)] {
            conn.outstanding.insert(
                id,
                Outstanding {
                    origin: 0,
                    epoch,
                    out_id: OutId(id),
                },
            );
        }
        // Epoch 0 now: entries from epoch MAX (the previous one, wrapped) stay.
        conn.sweep_outstanding(0);
        let mut left: Vec<u32> = conn.outstanding.keys().copied().collect();
        left.sort();
        assert_eq!(left, vec![2, 3, 4]);
        conn.sweep_outstanding(1);
        let mut left: Vec<u32> = conn.outstanding.keys().copied().collect();
        left.sort();
        assert_eq!(left, vec![3, 4]);
        conn.sweep_outstanding(2);
        assert!(conn.outstanding.is_empty());
    }
}

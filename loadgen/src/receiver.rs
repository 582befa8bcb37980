//! The receiving side of the Loopback Transport.
//!
//! It receives the generator's own Prepares back from the connector (or
//! straight from the sender in direct mode), checks them and answers:
//! fulfill with the preimage derived from the sequence number, or reject
//! with the right code, or follow the configured outcome mix.
//!
//! Links: a BTP client connected to the connector, a BTP server (direct
//! mode), or an ILP-over-HTTP server the connector POSTs to.

use bytes::BytesMut;
use ilpd_codec::btp::{self, Btp, BtpType};
use ilpd_codec::ilp::{FulfillBuilder, RejectBuilder};
use ilpd_codec::ws::{self, Opcode, Role};

use crate::frames::{self, Frame, FrameSplitter, ReadBuf};
use ilpd_codec::ErrorCode;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::link::{self, CLIENT_MASK, MAX_MESSAGE};
use crate::lt::{self, Outcome, OutcomeMix, Secret};
use crate::stats::{Live, ReceiverStats};
use crate::track::FulfillTrack;

/// Something the receiver did, for payment APIs that want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// It fulfilled the Prepare with sequence number `seq`, seeing `amount`.
    IncomingFulfill { seq: u64, amount: u64 },
    /// It rejected it with `code`.
    IncomingReject {
        seq: u64,
        amount: u64,
        code: [u8; 3],
    },
}

/// The receiver's rules.
#[derive(Clone, Debug)]
pub struct ReceiverRules {
    /// Its loopback address: destinations must be it or under it.
    pub address: Vec<u8>,
    pub secret: Secret,
    pub mix: OutcomeMix,
    /// Minimum amount for every packet (the data may ask for more).
    pub min_amount: u64,
    /// Time that must be left before expiry, in ms.
    pub min_time_left_ms: u64,
    /// Stall once for `.1` after the `.0`-th Prepare (to test latency tails).
    pub stall: Option<(u64, Duration)>,
}

/// The receiver's answer to one Prepare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Fulfill {
        fulfillment: [u8; 32],
        seq: u64,
        amount: u64,
    },
    Wrong {
        fulfillment: [u8; 32],
        seq: u64,
    },
    Reject {
        code: ErrorCode,
        message: &'static str,
        seq: u64,
        amount: u64,
        data: Option<u64>,
    },
    NoAnswer,
}

/// The fields of a Prepare the receiver needs (RFC 27 "ILP Prepare").
#[derive(Clone, Copy, Debug)]
pub struct PrepareFields<'a> {
    pub amount: u64,
    pub expiry: &'a [u8; 17],
    pub destination: &'a [u8],
    pub data: &'a [u8],
}

/// Parses a Prepare without validating the destination's characters: the
/// receiver compares it with its own (valid) address instead, which is all
/// it needs and keeps the hot path short. Envelope and lengths are checked.
pub fn parse_prepare(b: &[u8]) -> Option<PrepareFields<'_>> {
    use ilpd_codec::oer::Reader;
    if b.first() != Some(&12) {
        return None;
    }
    let mut r = Reader::new(b.get(1..)?);
    let len = r.read_length().ok()?;
    if len != r.remaining() {
        return None;
    }
    let amount = r.read_u64().ok()?;
    let expiry = r.read_array::<17>().ok()?;
    r.read_array::<32>().ok()?;
    let destination = r.read_var_octets().ok()?;
    let data = r.read_var_octets().ok()?;
    Some(PrepareFields {
        amount,
        expiry,
        destination,
        data,
    })
}

/// The last expiry timestamp parsed (most packets in a millisecond share it).
#[derive(Clone, Copy, Debug, Default)]
pub struct ExpiryCache {
    raw: [u8; 17],
    ms: u64,
}

impl ExpiryCache {
    #[inline]
    pub fn parse(&mut self, raw: &[u8; 17]) -> Option<u64> {
        if *raw != self.raw || self.ms == 0 {
            self.ms = ilpd_codec::time::parse_ilp_timestamp(raw).ok()?;
            self.raw = *raw;
        }
        Some(self.ms)
    }
}

impl ReceiverRules {
    /// Checks one Prepare (RFC 27 receiver rules) and picks the answer.
    pub fn decide(&self, ilp: &[u8], now_wall_ms: u64) -> Decision {
        self.decide_cached(ilp, now_wall_ms, &mut ExpiryCache::default())
    }

    /// [`decide`](Self::decide) with a timestamp cache.
    pub fn decide_cached(&self, ilp: &[u8], now_wall_ms: u64, cache: &mut ExpiryCache) -> Decision {
        let parsed = parse_prepare(ilp).and_then(|p| cache.parse(p.expiry).map(|e| (p, e)));
        let Some((p, expires)) = parsed else {
            return Decision::Reject {
                code: ErrorCode::F01_INVALID_PACKET,
                message: "ilp-loadgen: unparsable Prepare",
                seq: 0,
                amount: 0,
                data: None,
            };
        };
        let amount = p.amount;
        if !ilpd_codec::address::prefix_matches(&self.address, p.destination) {
            return Decision::Reject {
                code: ErrorCode::F02_UNREACHABLE,
                message: "ilp-loadgen: destination is not my loopback address",
                seq: 0,
                amount,
                data: None,
            };
        }
        let Some((seq, min_dest)) = lt::read_data_header(p.data) else {
            return Decision::Reject {
                code: ErrorCode::F06_UNEXPECTED_PAYMENT,
                message: "ilp-loadgen: data is not a Loopback Transport header",
                seq: 0,
                amount,
                data: None,
            };
        };
        if expires <= now_wall_ms {
            return Decision::Reject {
                code: ErrorCode::R00_TRANSFER_TIMED_OUT,
                message: "ilp-loadgen: Prepare arrived expired",
                seq,
                amount,
                data: None,
            };
        }
        if expires - now_wall_ms < self.min_time_left_ms {
            return Decision::Reject {
                code: ErrorCode::R02_INSUFFICIENT_TIMEOUT,
                message: "ilp-loadgen: not enough time left before expiry",
                seq,
                amount,
                data: None,
            };
        }
        if amount < min_dest.max(self.min_amount) {
            return Decision::Reject {
                code: ErrorCode::F04_INSUFFICIENT_DESTINATION_AMOUNT,
                message: "ilp-loadgen: amount below the minimum",
                seq,
                amount,
                data: Some(amount),
            };
        }
        match self.mix.pick(seq) {
            Outcome::Fulfill => Decision::Fulfill {
                fulfillment: self.secret.fulfillment(seq),
                seq,
                amount,
            },
            Outcome::WrongFulfillment => Decision::Wrong {
                fulfillment: self.secret.wrong_fulfillment(seq),
                seq,
            },
            Outcome::Reject(code) => Decision::Reject {
                code: ErrorCode::from_bytes(code).unwrap_or(ErrorCode::F99_APPLICATION_ERROR),
                message: "ilp-loadgen: rejected by the outcome mix",
                seq,
                amount,
                data: None,
            },
            Outcome::NoAnswer => Decision::NoAnswer,
        }
    }
}

/// Encodes the ILP reply for a decision into `out` (cleared first);
/// returns false when there is nothing to send.
fn encode_reply(d: &Decision, address: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    match d {
        Decision::Fulfill {
            fulfillment,
            amount,
            ..
        } => {
            FulfillBuilder {
                fulfillment,
                data: &amount.to_be_bytes(),
            }
            .write_to(out);
        }
        Decision::Wrong { fulfillment, .. } => {
            FulfillBuilder {
                fulfillment,
                data: b"",
            }
            .write_to(out);
        }
        Decision::Reject {
            code,
            message,
            data,
            ..
        } => {
            let d = data.map(|a| a.to_be_bytes());
            RejectBuilder {
                code: *code,
                triggered_by: address,
                message: message.as_bytes(),
                data: d.as_ref().map_or(&[][..], |d| &d[..]),
            }
            .write_to(out);
        }
        Decision::NoAnswer => return false,
    }
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// We connected to the connector (frames we send are masked).
    BtpClient,
    /// The sender connected to us (direct mode).
    BtpServer,
    HttpServer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitUpgrade,
    AwaitAuth,
    Open,
    /// Flush what is written, then close.
    Closing,
}

struct RecvConn {
    name: String,
    kind: Kind,
    state: State,
    stream: mio::net::TcpStream,
    rb: ReadBuf,
    sp: FrameSplitter,
    wbuf: Vec<u8>,
    wpos: usize,
    dead: bool,
    /// Client links open in the whole run (decremented when this one fails).
    up: Option<Arc<AtomicUsize>>,
}

impl RecvConn {
    fn new(
        name: String,
        kind: Kind,
        state: State,
        stream: mio::net::TcpStream,
        initial: &[u8],
    ) -> RecvConn {
        let role = if kind == Kind::BtpClient {
            Role::Client
        } else {
            Role::Server
        };
        RecvConn {
            name,
            kind,
            state,
            stream,
            rb: ReadBuf::with_initial(READ_BUF, initial),
            sp: FrameSplitter::new(role, MAX_MESSAGE),
            wbuf: Vec::with_capacity(1 << 16),
            wpos: 0,
            dead: false,
            up: None,
        }
    }

    fn kill(&mut self, stats: &mut ReceiverStats, msg: Option<String>) {
        if !self.dead {
            if let Some(m) = msg {
                stats.errors.add(m);
            }
            self.dead = true;
            if let Some(up) = self.up.take() {
                up.fetch_sub(1, Ordering::AcqRel);
            }
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Bytes read per connection per `read` call, at most.
const READ_BUF: usize = 256 * 1024;

/// A connection handed to a receiver: an authenticated BTP client link.
pub struct ClientLink {
    pub name: String,
    pub stream: std::net::TcpStream,
    pub rbuf: BytesMut,
}

/// What `serve` needs besides the connection (split out for the borrow checker).
struct Ctx {
    rules: ReceiverRules,
    stats: ReceiverStats,
    events: Option<crossbeam::channel::Sender<ReceiverEvent>>,
    cache: ExpiryCache,
    reply: Vec<u8>,
    /// Token that BTP or HTTP clients must present (server modes).
    token: Option<String>,
    /// Where fulfilled sequence numbers are marked (for "unconfirmed").
    track: Option<Arc<FulfillTrack>>,
}

/// A receiver thread.
pub struct Receiver {
    /// Never block in epoll (lower latency, one core per thread spinning).
    pub busy_poll: bool,
    ctx: Ctx,
    conns: Vec<RecvConn>,
    listener: Option<(TcpListener, Kind, String)>,
    poll: Poll,
}

const LISTENER: Token = Token(usize::MAX - 1);

impl Receiver {
    /// A receiver on already-connected BTP client links and/or a listener
    /// (`http` = ILP-over-HTTP server, else BTP server).
    pub fn new(
        rules: ReceiverRules,
        links: Vec<ClientLink>,
        listener: Option<(std::net::TcpListener, bool)>,
        token: Option<String>,
        events: Option<crossbeam::channel::Sender<ReceiverEvent>>,
    ) -> Result<Receiver, String> {
        let poll = Poll::new().map_err(|e| format!("receiver: {e}"))?;
        let mut conns = Vec::new();
        for l in links {
            l.stream
                .set_nonblocking(true)
                .map_err(|e| format!("{}: {e}", l.name))?;
            conns.push(RecvConn::new(
                l.name,
                Kind::BtpClient,
                State::Open,
                mio::net::TcpStream::from_std(l.stream),
                &l.rbuf,
            ));
        }
        for (i, c) in conns.iter_mut().enumerate() {
            poll.registry()
                .register(
                    &mut c.stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| format!("{}: {e}", c.name))?;
        }
        let listener = match listener {
            Some((l, http)) => {
                l.set_nonblocking(true)
                    .map_err(|e| format!("receiver listener: {e}"))?;
                let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                let mut l = TcpListener::from_std(l);
                poll.registry()
                    .register(&mut l, LISTENER, Interest::READABLE)
                    .map_err(|e| format!("receiver listener: {e}"))?;
                let (kind, name) = if http {
                    (Kind::HttpServer, format!("receive link http://{addr}"))
                } else {
                    (Kind::BtpServer, format!("receive link btp+ws://{addr}"))
                };
                Some((l, kind, name))
            }
            None => None,
        };
        Ok(Receiver {
            busy_poll: false,
            ctx: Ctx {
                rules,
                stats: ReceiverStats::default(),
                events,
                cache: ExpiryCache::default(),
                reply: Vec::with_capacity(256),
                token,
                track: None,
            },
            conns,
            listener,
            poll,
        })
    }

    /// Marks every packet it fulfills in `track`.
    pub fn set_track(&mut self, track: Arc<FulfillTrack>) {
        self.ctx.track = Some(track);
    }

    /// Its client links count in `up` (the run's open receive links): each
    /// one that fails (closed or reset by the connector) decrements it once.
    /// Stopping the receiver does not.
    pub fn set_link_counter(&mut self, up: &Arc<AtomicUsize>) {
        for c in self.conns.iter_mut().filter(|c| c.kind == Kind::BtpClient) {
            c.up = Some(up.clone());
        }
    }

    /// Client links (to a connector) this receiver holds.
    pub fn client_links(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| c.kind == Kind::BtpClient)
            .count()
    }

    /// Serves until `stop` is set, then returns its stats.
    pub fn run(
        mut self,
        core: Option<usize>,
        stop: Arc<AtomicBool>,
        live: Arc<Live>,
    ) -> ReceiverStats {
        if let Some(core) = core {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        let mut events = Events::with_capacity(256);
        let mut turns = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let timeout = if self.busy_poll {
                Duration::ZERO
            } else {
                Duration::from_millis(5)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.ctx.stats.errors.add(format!("receiver poll: {e}"));
                    break;
                }
            }
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    self.accept();
                } else if ev.token().0 < self.conns.len() && ev.is_readable() {
                    let c = &mut self.conns[ev.token().0];
                    read(c, &mut self.ctx);
                }
            }
            for c in self.conns.iter_mut() {
                flush(c, &mut self.ctx.stats);
            }
            turns += 1;
            if turns & 63 == 0 {
                live.received
                    .store(self.ctx.stats.prepares, Ordering::Relaxed);
            }
        }
        live.received
            .store(self.ctx.stats.prepares, Ordering::Relaxed);
        for c in &self.conns {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        self.ctx.stats
    }

    fn accept(&mut self) {
        let Some((listener, kind, name)) = self.listener.take() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let i = self.conns.len();
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        self.ctx.stats.errors.add(format!("{name}: {e}"));
                        continue;
                    }
                    let state = if kind == Kind::BtpServer {
                        State::AwaitUpgrade
                    } else {
                        State::Open
                    };
                    self.conns.push(RecvConn::new(
                        format!("{name} (from {peer})"),
                        kind,
                        state,
                        stream,
                        &[],
                    ));
                    // Data may already be there (edge-triggered).
                    read(&mut self.conns[i], &mut self.ctx);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.ctx.stats.errors.add(format!("{name}: accept: {e}"));
                    break;
                }
            }
        }
        self.listener = Some((listener, kind, name));
    }
}

fn flush(c: &mut RecvConn, stats: &mut ReceiverStats) {
    if c.dead {
        return;
    }
    while c.wpos < c.wbuf.len() {
        match c.stream.write(&c.wbuf[c.wpos..]) {
            Ok(0) => break,
            Ok(n) => c.wpos += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let m = format!("{}: {}", c.name, link::io_cause(&e));
                c.kill(stats, Some(m));
                return;
            }
        }
    }
    if c.wpos == c.wbuf.len() {
        c.wbuf.clear();
        c.wpos = 0;
        if c.state == State::Closing {
            c.kill(stats, None);
        }
    } else if c.wpos > (1 << 20) {
        c.wbuf.drain(..c.wpos);
        c.wpos = 0;
    }
}

fn read(c: &mut RecvConn, ctx: &mut Ctx) {
    loop {
        if c.dead || c.state == State::Closing {
            return;
        }
        match c.rb.read_from(&mut c.stream) {
            Ok(0) => {
                // A client closing is normal at the end of a run; the
                // connector closing our link is not.
                let m = (c.kind == Kind::BtpClient)
                    .then(|| format!("{}: connection closed by peer", c.name));
                c.kill(&mut ctx.stats, m);
                return;
            }
            Ok(_) => {
                match c.kind {
                    Kind::HttpServer => process_http(c, ctx),
                    _ => process_btp(c, ctx),
                }
                // Answer this batch now, before reading the next one.
                flush(c, &mut ctx.stats);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let m = format!("{}: {}", c.name, link::io_cause(&e));
                c.kill(&mut ctx.stats, Some(m));
                return;
            }
        }
    }
}

fn empty_response(wbuf: &mut Vec<u8>, rid: u32, mask: Option<[u8; 4]>) {
    let mut out = BytesMut::new();
    btp::write_empty_response(&mut out, rid);
    ws::write_frame(wbuf, Opcode::Binary, &out, mask);
}

fn process_btp(c: &mut RecvConn, ctx: &mut Ctx) {
    let now_ms = link::wall_ms();
    let mask = match c.kind {
        Kind::BtpClient => Some(CLIENT_MASK),
        _ => None,
    };
    loop {
        if c.dead || c.state == State::Closing {
            return;
        }
        if c.state == State::AwaitUpgrade {
            match ws::parse_client_handshake(c.rb.pending()) {
                Ok(Some((hs, n))) => {
                    let accept = ws::accept_key(hs.key);
                    ws::write_server_handshake(&mut c.wbuf, &accept);
                    c.rb.consume(n);
                    c.state = State::AwaitAuth;
                    continue;
                }
                Ok(None) => return,
                Err(e) => {
                    ws::write_http_error(&mut c.wbuf, 400, "Bad Request");
                    ctx.stats
                        .errors
                        .add(format!("{}: bad WebSocket upgrade ({e})", c.name));
                    c.state = State::Closing;
                    return;
                }
            }
        }
        let frame = match c.sp.next(&mut c.rb) {
            Ok(Some(f)) => f,
            Ok(None) => {
                frames::settle(&mut c.rb);
                return;
            }
            Err(e) => {
                let m = format!("{}: {e}", c.name);
                c.kill(&mut ctx.stats, Some(m));
                return;
            }
        };
        let (opcode, p): (Opcode, &[u8]) = match &frame {
            Frame::InPlace { opcode, range } => (*opcode, &c.rb.data[range.clone()]),
            Frame::Reassembled { opcode } => (*opcode, &c.sp.assembled[..]),
        };
        match opcode {
            Opcode::Binary => {}
            Opcode::Ping => {
                ws::write_frame(&mut c.wbuf, Opcode::Pong, p, mask);
                continue;
            }
            Opcode::Close => {
                let m = (c.kind == Kind::BtpClient)
                    .then(|| format!("{}: connection closed by peer (WebSocket close)", c.name));
                c.kill(&mut ctx.stats, m);
                return;
            }
            _ => continue,
        }
        let b = match Btp::new_checked(p) {
            Ok(b) => b,
            Err(e) => {
                // RFC 23: no reply to unreadable packets.
                ctx.stats
                    .errors
                    .add(format!("{}: malformed BTP packet ({e})", c.name));
                continue;
            }
        };
        let rid = b.request_id();
        if c.state == State::AwaitAuth {
            let ok = match btp::parse_auth(&b) {
                Ok(a) => match &ctx.token {
                    None => true,
                    Some(t) => t.as_bytes() == a.token,
                },
                Err(_) => false,
            };
            if ok {
                empty_response(&mut c.wbuf, rid, mask);
                c.state = State::Open;
            } else {
                let mut out = BytesMut::new();
                let at = ilpd_codec::time::format_generalized_time(now_ms);
                btp::write_error(
                    &mut out,
                    rid,
                    b"F00",
                    b"NotAcceptedError",
                    &at,
                    b"invalid auth_token",
                    &[],
                );
                ws::write_frame(&mut c.wbuf, Opcode::Binary, &out, mask);
                ctx.stats
                    .errors
                    .add(format!("{}: refused a client with a wrong token", c.name));
                c.state = State::Closing;
            }
            continue;
        }
        match b.packet_type() {
            BtpType::Message => match b.ilp_range() {
                Some(r) => {
                    let d = serve(ctx, &p[r], now_ms);
                    if encode_reply(&d, &ctx.rules.address, &mut ctx.reply) {
                        let len = btp::ilp_response_len(ctx.reply.len());
                        ws::write_frame_header(&mut c.wbuf, true, Opcode::Binary, len, mask);
                        btp::write_ilp_response(&mut c.wbuf, rid, &ctx.reply);
                    }
                }
                None => empty_response(&mut c.wbuf, rid, mask),
            },
            BtpType::Transfer => empty_response(&mut c.wbuf, rid, mask),
            _ => {}
        }
    }
}

fn process_http(c: &mut RecvConn, ctx: &mut Ctx) {
    let now_ms = link::wall_ms();
    loop {
        if c.dead || c.state == State::Closing {
            return;
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let pending = c.rb.pending();
        let head = match req.parse(pending) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if pending.len() > 16 * 1024 {
                    write_http(&mut c.wbuf, 431, b"");
                    c.state = State::Closing;
                }
                return;
            }
            Err(e) => {
                write_http(&mut c.wbuf, 400, b"");
                ctx.stats
                    .errors
                    .add(format!("{}: malformed HTTP request ({e})", c.name));
                c.state = State::Closing;
                return;
            }
        };
        let mut len = 0usize;
        let mut auth_ok = ctx.token.is_none();
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                len = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(usize::MAX);
            } else if h.name.eq_ignore_ascii_case("authorization") {
                if let Some(t) = &ctx.token {
                    let v = h.value;
                    auth_ok = v.len() > 7
                        && v[..7].eq_ignore_ascii_case(b"bearer ")
                        && v[7..].trim_ascii() == t.as_bytes();
                }
            }
        }
        if len > MAX_MESSAGE {
            write_http(&mut c.wbuf, 413, b"");
            c.state = State::Closing;
            return;
        }
        let is_post = req.method == Some("POST");
        if pending.len() < head + len {
            if c.rb.data.len() < 2 * (head + len) {
                let n = 2 * (head + len);
                c.rb.data.resize(n, 0);
            }
            return;
        }
        let body = &pending[head..head + len];
        if !auth_ok {
            write_http(&mut c.wbuf, 401, b"");
            ctx.stats
                .errors
                .add(format!("{}: refused a request with a wrong token", c.name));
        } else if !is_post {
            write_http(&mut c.wbuf, 405, b"");
        } else {
            let mut d = serve(ctx, body, now_ms);
            if d == Decision::NoAnswer {
                // HTTP/1.1 answers in order: holding one reply would hold
                // every later one, so "no answer" becomes R00 here.
                d = Decision::Reject {
                    code: ErrorCode::R00_TRANSFER_TIMED_OUT,
                    message: "ilp-loadgen: no answer (outcome mix)",
                    seq: 0,
                    amount: 0,
                    data: None,
                };
            }
            encode_reply(&d, &ctx.rules.address, &mut ctx.reply);
            write_http(&mut c.wbuf, 200, &ctx.reply);
        }
        c.rb.consume(head + len);
    }
}

/// Decides, counts, and publishes events for one Prepare.
#[inline]
fn serve(ctx: &mut Ctx, ilp: &[u8], now_ms: u64) -> Decision {
    ctx.stats.prepares += 1;
    if let Some((after, pause)) = ctx.rules.stall {
        if ctx.stats.prepares == after {
            std::thread::sleep(pause);
        }
    }
    let d = ctx.rules.decide_cached(ilp, now_ms, &mut ctx.cache);
    match &d {
        Decision::Fulfill { seq, amount, .. } => {
            ctx.stats.fulfilled += 1;
            ctx.stats.amount_fulfilled += *amount as u128;
            if let Some(t) = &ctx.track {
                t.mark(*seq);
            }
            if let Some(ev) = &ctx.events {
                let _ = ev.send(ReceiverEvent::IncomingFulfill {
                    seq: *seq,
                    amount: *amount,
                });
            }
        }
        Decision::Wrong { .. } => ctx.stats.wrong_fulfillment_sent += 1,
        Decision::Reject {
            code,
            message,
            seq,
            amount,
            ..
        } => {
            ctx.stats.rejected.add(*code.as_bytes(), 1);
            if !message.ends_with("outcome mix") {
                ctx.stats.check_failures.add(*message);
            }
            if let Some(ev) = &ctx.events {
                let _ = ev.send(ReceiverEvent::IncomingReject {
                    seq: *seq,
                    amount: *amount,
                    code: *code.as_bytes(),
                });
            }
        }
        Decision::NoAnswer => ctx.stats.no_answer += 1,
    }
    d
}

fn write_http(out: &mut Vec<u8>, status: u16, body: &[u8]) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ilpd_codec::ilp::PrepareBuilder;
    use ilpd_codec::Expiry;

    fn rules() -> ReceiverRules {
        ReceiverRules {
            address: b"test.lg".to_vec(),
            secret: Secret::from_seed(5),
            mix: OutcomeMix::all_fulfill(5),
            min_amount: 0,
            min_time_left_ms: 500,
            stall: None,
        }
    }

    fn prepare(dest: &[u8], amount: u64, expires: u64, seq: u64, min: u64) -> Vec<u8> {
        let mut data = [0u8; 16];
        lt::write_data_header(&mut data, seq, min);
        PrepareBuilder {
            amount,
            expires_at: Expiry(expires),
            execution_condition: &[0; 32],
            destination: dest,
            data: &data,
        }
        .build()
        .to_vec()
    }

    #[test]
    fn decides_by_the_rules() {
        let r = rules();
        let now = 1_700_000_000_000;
        let ok = prepare(b"test.lg.0", 10, now + 5000, 7, 10);
        assert_eq!(
            r.decide(&ok, now),
            Decision::Fulfill {
                fulfillment: r.secret.fulfillment(7),
                seq: 7,
                amount: 10
            }
        );
        let code = |d: Decision| match d {
            Decision::Reject { code, .. } => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(r.decide(&prepare(b"test.other", 10, now + 5000, 7, 0), now)),
            ErrorCode::F02_UNREACHABLE
        );
        // "test.lgx" is not under "test.lg" (segment-aware).
        assert_eq!(
            code(r.decide(&prepare(b"test.lgx", 10, now + 5000, 7, 0), now)),
            ErrorCode::F02_UNREACHABLE
        );
        assert_eq!(
            code(r.decide(&prepare(b"test.lg", 9, now + 5000, 7, 10), now)),
            ErrorCode::F04_INSUFFICIENT_DESTINATION_AMOUNT
        );
        assert_eq!(
            code(r.decide(&prepare(b"test.lg", 10, now - 1, 7, 0), now)),
            ErrorCode::R00_TRANSFER_TIMED_OUT
        );
        assert_eq!(
            code(r.decide(&prepare(b"test.lg", 10, now + 100, 7, 0), now)),
            ErrorCode::R02_INSUFFICIENT_TIMEOUT
        );
        assert_eq!(
            code(r.decide(b"\x0c\x01", now)),
            ErrorCode::F01_INVALID_PACKET
        );
    }

    #[test]
    fn encodes_replies_that_parse() {
        let mut out = Vec::new();
        let d = Decision::Fulfill {
            fulfillment: [3; 32],
            seq: 1,
            amount: 77,
        };
        assert!(encode_reply(&d, b"test.lg", &mut out));
        let f = ilpd_codec::ilp::Fulfill::new_checked(&out[..]).unwrap();
        assert_eq!(f.fulfillment(), &[3; 32]);
        assert_eq!(f.data(), &77u64.to_be_bytes());
        let d = Decision::Reject {
            code: ErrorCode::F04_INSUFFICIENT_DESTINATION_AMOUNT,
            message: "m",
            seq: 1,
            amount: 5,
            data: Some(5),
        };
        assert!(encode_reply(&d, b"test.lg", &mut out));
        let r = ilpd_codec::ilp::Reject::new_checked(&out[..]).unwrap();
        assert_eq!(r.code(), ErrorCode::F04_INSUFFICIENT_DESTINATION_AMOUNT);
        assert_eq!(r.triggered_by(), b"test.lg");
        assert!(!encode_reply(&Decision::NoAnswer, b"x", &mut out));
    }
}

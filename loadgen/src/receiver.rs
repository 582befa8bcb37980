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
use ilpd_codec::ilp::{FulfillBuilder, Prepare, RejectBuilder};
use ilpd_codec::ws::{self, Decoder, Message, Opcode, Role};
use ilpd_codec::ErrorCode;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::link::{self, CLIENT_MASK, MAX_MESSAGE};
use crate::lt::{self, Outcome, OutcomeMix, Secret};
use crate::stats::{Live, ReceiverStats};

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

impl ReceiverRules {
    /// Checks one Prepare (RFC 27 receiver rules) and picks the answer.
    pub fn decide(&self, ilp: &[u8], now_wall_ms: u64) -> Decision {
        let p = match Prepare::new_checked(ilp) {
            Ok(p) => p,
            Err(_) => {
                return Decision::Reject {
                    code: ErrorCode::F01_INVALID_PACKET,
                    message: "ilp-loadgen: unparsable Prepare",
                    seq: 0,
                    amount: 0,
                    data: None,
                }
            }
        };
        let amount = p.amount();
        if !ilpd_codec::address::prefix_matches(&self.address, p.destination()) {
            return Decision::Reject {
                code: ErrorCode::F02_UNREACHABLE,
                message: "ilp-loadgen: destination is not my loopback address",
                seq: 0,
                amount,
                data: None,
            };
        }
        let Some((seq, min_dest)) = lt::read_data_header(p.data()) else {
            return Decision::Reject {
                code: ErrorCode::F06_UNEXPECTED_PAYMENT,
                message: "ilp-loadgen: data is not a Loopback Transport header",
                seq: 0,
                amount,
                data: None,
            };
        };
        let expires = p.expires_at().0;
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
    rbuf: BytesMut,
    decoder: Decoder,
    wbuf: Vec<u8>,
    wpos: usize,
    dead: bool,
}

/// A connection handed to a receiver: an authenticated BTP client link.
pub struct ClientLink {
    pub name: String,
    pub stream: std::net::TcpStream,
    pub rbuf: BytesMut,
}

/// A receiver thread.
pub struct Receiver {
    rules: ReceiverRules,
    conns: Vec<RecvConn>,
    listener: Option<(TcpListener, Kind, String)>,
    /// Token that BTP or HTTP clients must present (server modes).
    token: Option<String>,
    poll: Poll,
    stats: ReceiverStats,
    events: Option<crossbeam::channel::Sender<ReceiverEvent>>,
    scratch: Vec<u8>,
    reply: Vec<u8>,
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
            conns.push(RecvConn {
                name: l.name,
                kind: Kind::BtpClient,
                state: State::Open,
                stream: mio::net::TcpStream::from_std(l.stream),
                rbuf: l.rbuf,
                decoder: Decoder::new(Role::Client, MAX_MESSAGE),
                wbuf: Vec::with_capacity(1 << 16),
                wpos: 0,
                dead: false,
            });
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
            rules,
            conns,
            listener,
            token,
            poll,
            stats: ReceiverStats::default(),
            events,
            scratch: vec![0; 256 * 1024],
            reply: Vec::with_capacity(256),
        })
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
            if let Err(e) = self.poll.poll(&mut events, Some(Duration::from_millis(5))) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.stats.errors.add(format!("receiver poll: {e}"));
                    break;
                }
            }
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    self.accept();
                } else if ev.token().0 < self.conns.len() && ev.is_readable() {
                    self.read(ev.token().0);
                }
            }
            for i in 0..self.conns.len() {
                self.flush(i);
            }
            turns += 1;
            if turns & 63 == 0 {
                live.received.store(self.stats.prepares, Ordering::Relaxed);
            }
        }
        live.received.store(self.stats.prepares, Ordering::Relaxed);
        for c in &self.conns {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        self.stats
    }

    fn accept(&mut self) {
        let Some((listener, kind, name)) = self.listener.take() else {
            return;
        };
        self.accept_from(&listener, kind, &name);
        self.listener = Some((listener, kind, name));
    }

    fn accept_from(&mut self, listener: &TcpListener, kind: Kind, name: &str) {
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
                        self.stats.errors.add(format!("{name}: {e}"));
                        continue;
                    }
                    self.conns.push(RecvConn {
                        name: format!("{name} (from {peer})"),
                        kind,
                        state: if kind == Kind::BtpServer {
                            State::AwaitUpgrade
                        } else {
                            State::Open
                        },
                        stream,
                        rbuf: BytesMut::with_capacity(1 << 16),
                        decoder: Decoder::new(Role::Server, MAX_MESSAGE),
                        wbuf: Vec::with_capacity(1 << 16),
                        wpos: 0,
                        dead: false,
                    });
                    // Data may already be there (edge-triggered).
                    self.read(i);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stats.errors.add(format!("{name}: accept: {e}"));
                    return;
                }
            }
        }
    }

    fn kill(c: &mut RecvConn, stats: &mut ReceiverStats, msg: Option<String>) {
        if !c.dead {
            if let Some(m) = msg {
                stats.errors.add(m);
            }
            c.dead = true;
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
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
                    Self::kill(c, &mut self.stats, Some(m));
                    return;
                }
            }
        }
        if c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
            if c.state == State::Closing {
                Self::kill(c, &mut self.stats, None);
            }
        } else if c.wpos > (1 << 20) {
            c.wbuf.drain(..c.wpos);
            c.wpos = 0;
        }
    }

    fn read(&mut self, i: usize) {
        loop {
            let c = &mut self.conns[i];
            if c.dead || c.state == State::Closing {
                return;
            }
            match c.stream.read(&mut self.scratch) {
                Ok(0) => {
                    // The peer closed: normal at the end of a run.
                    Self::kill(c, &mut self.stats, None);
                    return;
                }
                Ok(n) => {
                    c.rbuf.extend_from_slice(&self.scratch[..n]);
                    self.process(i);
                    // Answer this batch now, before reading the next one.
                    self.flush(i);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let m = format!("{}: {}", c.name, link::io_cause(&e));
                    Self::kill(c, &mut self.stats, Some(m));
                    return;
                }
            }
        }
    }

    fn process(&mut self, i: usize) {
        match self.conns[i].kind {
            Kind::HttpServer => self.process_http(i),
            _ => self.process_btp(i),
        }
    }

    fn mask(kind: Kind) -> Option<[u8; 4]> {
        match kind {
            Kind::BtpClient => Some(CLIENT_MASK),
            _ => None,
        }
    }

    fn process_btp(&mut self, i: usize) {
        let now_ms = link::wall_ms();
        loop {
            let c = &mut self.conns[i];
            if c.dead || c.state == State::Closing {
                return;
            }
            if c.state == State::AwaitUpgrade {
                match ws::parse_client_handshake(&c.rbuf) {
                    Ok(Some((hs, n))) => {
                        let accept = ws::accept_key(hs.key);
                        ws::write_server_handshake(&mut c.wbuf, &accept);
                        let _ = c.rbuf.split_to(n);
                        c.state = State::AwaitAuth;
                        continue;
                    }
                    Ok(None) => return,
                    Err(e) => {
                        ws::write_http_error(&mut c.wbuf, 400, "Bad Request");
                        self.stats
                            .errors
                            .add(format!("{}: bad WebSocket upgrade ({e})", c.name));
                        c.state = State::Closing;
                        return;
                    }
                }
            }
            let msg = match c.decoder.decode(&mut c.rbuf) {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    let m = format!("{}: malformed WebSocket frame ({e})", c.name);
                    Self::kill(c, &mut self.stats, Some(m));
                    return;
                }
            };
            let mask = Self::mask(c.kind);
            let p = match msg {
                Message::Binary(p) => p,
                Message::Ping(p) => {
                    ws::write_frame(&mut c.wbuf, Opcode::Pong, &p, mask);
                    continue;
                }
                Message::Close(..) => {
                    Self::kill(c, &mut self.stats, None);
                    return;
                }
                _ => continue,
            };
            let b = match Btp::new_checked(&p[..]) {
                Ok(b) => b,
                Err(e) => {
                    // RFC 23: no reply to unreadable packets.
                    self.stats
                        .errors
                        .add(format!("{}: malformed BTP packet ({e})", c.name));
                    continue;
                }
            };
            let rid = b.request_id();
            if c.state == State::AwaitAuth {
                let ok = match btp::parse_auth(&b) {
                    Ok(a) => self.token.as_ref().is_none_or(|t| t.as_bytes() == a.token),
                    Err(_) => false,
                };
                let mut out = BytesMut::new();
                if ok {
                    btp::write_empty_response(&mut out, rid);
                    c.state = State::Open;
                } else {
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
                    self.stats
                        .errors
                        .add(format!("{}: refused a client with a wrong token", c.name));
                    c.state = State::Closing;
                }
                ws::write_frame(&mut c.wbuf, Opcode::Binary, &out, mask);
                continue;
            }
            match b.packet_type() {
                BtpType::Message => {
                    if let Some(r) = b.ilp_range() {
                        let d = self.serve(&p[r], now_ms);
                        let c = &mut self.conns[i];
                        if encode_reply(&d, &self.rules.address, &mut self.reply) {
                            let len = btp::ilp_response_len(self.reply.len());
                            ws::write_frame_header(&mut c.wbuf, true, Opcode::Binary, len, mask);
                            btp::write_ilp_response(&mut c.wbuf, rid, &self.reply);
                        }
                    } else {
                        let mut out = BytesMut::new();
                        btp::write_empty_response(&mut out, rid);
                        ws::write_frame(&mut c.wbuf, Opcode::Binary, &out, mask);
                    }
                }
                BtpType::Transfer => {
                    let mut out = BytesMut::new();
                    btp::write_empty_response(&mut out, rid);
                    ws::write_frame(&mut c.wbuf, Opcode::Binary, &out, mask);
                }
                _ => {}
            }
        }
    }

    fn process_http(&mut self, i: usize) {
        let now_ms = link::wall_ms();
        loop {
            let c = &mut self.conns[i];
            if c.dead || c.state == State::Closing {
                return;
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let head = match req.parse(&c.rbuf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => {
                    if c.rbuf.len() > 16 * 1024 {
                        write_http(&mut c.wbuf, 431, b"");
                        c.state = State::Closing;
                    }
                    return;
                }
                Err(e) => {
                    write_http(&mut c.wbuf, 400, b"");
                    self.stats
                        .errors
                        .add(format!("{}: malformed HTTP request ({e})", c.name));
                    c.state = State::Closing;
                    return;
                }
            };
            let mut len = 0usize;
            let mut auth_ok = self.token.is_none();
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    len = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(usize::MAX);
                } else if h.name.eq_ignore_ascii_case("authorization") {
                    if let Some(t) = &self.token {
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
            if c.rbuf.len() < head + len {
                return;
            }
            let frame = c.rbuf.split_to(head + len);
            let body = &frame[head..];
            if !auth_ok {
                write_http(&mut c.wbuf, 401, b"");
                self.stats
                    .errors
                    .add(format!("{}: refused a request with a wrong token", c.name));
                continue;
            }
            if !is_post {
                write_http(&mut c.wbuf, 405, b"");
                continue;
            }
            let mut d = self.serve(body, now_ms);
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
            let c = &mut self.conns[i];
            encode_reply(&d, &self.rules.address, &mut self.reply);
            write_http(&mut c.wbuf, 200, &self.reply);
        }
    }

    /// Decides, counts, and publishes events for one Prepare.
    fn serve(&mut self, ilp: &[u8], now_ms: u64) -> Decision {
        self.stats.prepares += 1;
        if let Some((after, pause)) = self.rules.stall {
            if self.stats.prepares == after {
                std::thread::sleep(pause);
            }
        }
        let d = self.rules.decide(ilp, now_ms);
        match &d {
            Decision::Fulfill { seq, amount, .. } => {
                self.stats.fulfilled += 1;
                self.stats.amount_fulfilled += *amount as u128;
                if let Some(ev) = &self.events {
                    let _ = ev.send(ReceiverEvent::IncomingFulfill {
                        seq: *seq,
                        amount: *amount,
                    });
                }
            }
            Decision::Wrong { .. } => self.stats.wrong_fulfillment_sent += 1,
            Decision::Reject {
                code,
                message,
                seq,
                amount,
                ..
            } => {
                self.stats.rejected.add(*code.as_bytes(), 1);
                if !message.ends_with("outcome mix") {
                    self.stats.check_failures.add(*message);
                }
                if let Some(ev) = &self.events {
                    let _ = ev.send(ReceiverEvent::IncomingReject {
                        seq: *seq,
                        amount: *amount,
                        code: *code.as_bytes(),
                    });
                }
            }
            Decision::NoAnswer => self.stats.no_answer += 1,
        }
        d
    }
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

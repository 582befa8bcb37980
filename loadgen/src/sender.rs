//! The sending side of the Loopback Transport: one thread, several links,
//! one mio `Poll`.
//!
//! Per loop turn and connection: decide how many packets are due (closed
//! loop: fill the window; open loop: every packet whose intended send time
//! has passed), derive their fulfillments, hash the conditions in one batch,
//! patch them into copies of the frame template in the write buffer, and
//! write once. Replies are matched by BTP request id (or by order on an
//! HTTP/1.1 keep-alive connection) to a fixed ring of slots, so nothing is
//! allocated per packet.

use bytes::BytesMut;
use ilpd_codec::btp::{Btp, BtpType};
use ilpd_codec::ilp::{Fulfill, Reject};
use ilpd_codec::sha256::BatchVerifier;
use ilpd_codec::ws::{self, Opcode, Role};

use crate::frames::{self, Frame, FrameSplitter, ReadBuf};
use mio::{Events, Interest, Poll, Token};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, TimestampCache, Timing};
use crate::link::{self, BtpConn, CLIENT_MASK, MAX_MESSAGE};
use crate::lt::{self, Secret};
use crate::stats::{Live, SenderStats};
use crate::template::Template;
use crate::timer::Timer;
use crate::track::FulfillTrack;
use crate::url::{LinkUrl, Scheme};

/// How packets are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// Keep `window` packets in flight on each connection.
    Closed { window: u32 },
    /// `rate` packets per second in total, on a fixed schedule; latency is
    /// measured from each packet's intended send time (so a stall is not
    /// hidden by the sender waiting: coordinated-omission correction).
    Open { rate: f64 },
}

/// Everything one sender thread needs.
#[derive(Clone)]
pub struct SenderSpec {
    pub thread: usize,
    /// The links it opens (each `conns` times).
    pub urls: Vec<LinkUrl>,
    /// First stream id (unique per connection in the run).
    pub first_stream: u16,
    pub load: Load,
    /// Packets per second on each connection (open loop).
    pub rate_per_conn: f64,
    /// Ring size per connection (rounded up to a power of two).
    pub max_in_flight: u32,
    /// Open loop: most packets in flight per connection.
    pub in_flight_limit: u32,
    pub amount: u64,
    pub min_dest: u64,
    pub data_size: usize,
    pub expiry: Duration,
    /// How long past its expiry a packet may still be answered.
    pub grace: Duration,
    pub destinations: Vec<Vec<u8>>,
    pub secret: Secret,
    pub verifier: BatchVerifier,
    /// Packets to send on each connection (packet-count mode).
    pub packets_per_conn: Option<u64>,
    pub core: Option<usize>,
    /// Never block in epoll (one core per thread spinning).
    pub busy_poll: bool,
    pub connect_timeout: Duration,
    /// The receivers' marks of what they fulfilled (for "unconfirmed").
    pub track: Option<Arc<FulfillTrack>>,
}

const FREE: u8 = 0;
const IN_FLIGHT: u8 = 1;
/// Timed out on an HTTP link: its reply, if it ever comes, still takes its
/// place in the response order.
const ABANDONED: u8 = 2;

#[derive(Clone, Copy, Default)]
struct Slot {
    seq: u64,
    /// Intended (open loop) or actual (closed loop) send time.
    t_ns: u64,
    deadline_ns: u64,
    amount: u64,
    rid: u32,
    state: u8,
    measured: bool,
}

const TIMER: Token = Token(usize::MAX - 2);

/// Largest batch generated per connection per loop turn.
const BATCH: usize = 512;
/// Stop generating while this much is still unwritten on a connection.
const MAX_BACKLOG: usize = 1 << 20;

/// The packets in flight on one connection, by request id.
struct Ring {
    slots: Vec<Slot>,
    mask: u32,
    next_rid: u32,
    /// Oldest request id that may still be in flight.
    head: u32,
    inflight: u32,
}

struct SendConn {
    name: String,
    http: bool,
    stream: mio::net::TcpStream,
    rb: ReadBuf,
    sp: FrameSplitter,
    wbuf: Vec<u8>,
    wpos: usize,
    templates: Vec<Template>,
    stream_id: u16,
    /// Packets generated on this connection so far.
    generated: u64,
    ring: Ring,
    limit: Option<u64>,
    dead: bool,
    /// Why it died, if it failed.
    failure: Option<String>,
}

/// Opens every link of a sender thread (blocking, with timeouts).
fn open_conns(spec: &SenderSpec, conns_per_url: usize) -> Result<Vec<SendConn>, String> {
    let mut out = Vec::new();
    let mut stream_id = spec.first_stream;
    for url in &spec.urls {
        for _ in 0..conns_per_url {
            let name = link::link_name("send", url);
            let (std_stream, rbuf, http, templates) = match url.scheme {
                Scheme::Btp => {
                    let c = BtpConn::open(&name, url, spec.connect_timeout)?;
                    let (s, r, _) = c.into_parts();
                    let t = spec
                        .destinations
                        .iter()
                        .map(|d| Template::btp(d, spec.data_size))
                        .collect();
                    (s, r, false, t)
                }
                Scheme::Http => {
                    let s = link::tcp_connect(&name, url, spec.connect_timeout)?;
                    let t = spec
                        .destinations
                        .iter()
                        .map(|d| Template::http(url, d, spec.data_size))
                        .collect();
                    (s, BytesMut::new(), true, t)
                }
            };
            out.push(send_conn(
                spec, name, http, std_stream, &rbuf, templates, stream_id,
            )?);
            stream_id = stream_id.wrapping_add(1);
        }
    }
    Ok(out)
}

/// One connected link, made non-blocking, with an empty ring.
fn send_conn(
    spec: &SenderSpec,
    name: String,
    http: bool,
    std_stream: std::net::TcpStream,
    rbuf: &[u8],
    templates: Vec<Template>,
    stream_id: u16,
) -> Result<SendConn, String> {
    std_stream
        .set_nonblocking(true)
        .map_err(|e| format!("{name}: {e}"))?;
    let cap = spec.max_in_flight.max(1).next_power_of_two();
    Ok(SendConn {
        name,
        http,
        stream: mio::net::TcpStream::from_std(std_stream),
        rb: ReadBuf::with_initial(256 * 1024, rbuf),
        sp: FrameSplitter::new(Role::Client, MAX_MESSAGE),
        wbuf: Vec::with_capacity(1 << 16),
        wpos: 0,
        templates,
        stream_id,
        generated: 0,
        ring: Ring {
            slots: vec![Slot::default(); cap as usize],
            mask: cap - 1,
            next_rid: 1,
            head: 1,
            inflight: 0,
        },
        limit: spec.packets_per_conn,
        dead: false,
        failure: None,
    })
}

/// A sender thread, connected and waiting for the start signal.
pub struct Sender {
    spec: SenderSpec,
    conns: Vec<SendConn>,
    poll: Poll,
    stats: SenderStats,
    ts: TimestampCache,
    fulfillments: Vec<[u8; 32]>,
    conditions: Vec<[u8; 32]>,
    /// Open loop: wakes the poll at the next intended send time.
    timer: Option<Timer>,
}

impl Sender {
    /// Connects every link (`conns_per_url` connections each).
    pub fn connect(spec: SenderSpec, conns_per_url: usize) -> Result<Sender, String> {
        if let Some(core) = spec.core {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        let mut conns = open_conns(&spec, conns_per_url)?;
        let poll = Poll::new().map_err(|e| format!("sender thread: {e}"))?;
        for (i, c) in conns.iter_mut().enumerate() {
            poll.registry()
                .register(
                    &mut c.stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| format!("{}: {e}", c.name))?;
        }
        let timer = match spec.load {
            Load::Open { .. } => Timer::new(poll.registry(), TIMER).ok(),
            Load::Closed { .. } => None,
        };
        Ok(Sender {
            timer,
            spec,
            conns,
            poll,
            stats: SenderStats::default(),
            ts: TimestampCache::new(),
            fulfillments: vec![[0; 32]; BATCH],
            conditions: vec![[0; 32]; BATCH],
        })
    }

    /// Runs until the end of the timing (or `stop`), then returns its stats.
    pub fn run(
        mut self,
        clock: Clock,
        timing: Timing,
        stop: Arc<AtomicBool>,
        live: Arc<Live>,
    ) -> SenderStats {
        let mut events = Events::with_capacity(256);
        let interval_ns = match self.spec.load {
            Load::Open { .. } if self.spec.rate_per_conn > 0.0 => 1e9 / self.spec.rate_per_conn,
            _ => 0.0,
        };
        let mut turns: u64 = 0;
        loop {
            let now = clock.now_ns();
            let ending = now >= timing.end_ns || stop.load(Ordering::Relaxed);
            let mut next_due = u64::MAX;
            for i in 0..self.conns.len() {
                if self.conns[i].dead {
                    continue;
                }
                if !ending {
                    let due = self.generate(i, now, &clock, &timing, interval_ns);
                    next_due = next_due.min(due);
                }
                self.flush(i, &clock);
                self.check_timeouts(i, now);
            }
            let open: Vec<bool> = self.conns.iter().map(|c| !c.dead).collect();
            let busy = self
                .conns
                .iter()
                .any(|c| !c.dead && (c.ring.inflight > 0 || c.wpos < c.wbuf.len()));
            let limits_done = self
                .conns
                .iter()
                .all(|c| c.dead || c.limit.is_some_and(|l| c.generated >= l));
            if !open.iter().any(|o| *o) {
                // Every link failed (the connector went away): the run
                // cannot go on.
                self.stats.aborted = self.conns.iter().find_map(|c| c.failure.clone());
                break;
            }
            if (ending || limits_done) && !busy {
                break;
            }
            if now >= timing.hard_stop_ns {
                for c in self.conns.iter_mut() {
                    record_in_flight(c, &mut self.stats);
                    self.stats.lost += c.ring.inflight as u64;
                    if c.ring.inflight > 0 {
                        self.stats.errors.add(format!(
                            "{}: {} packets unanswered when the run ended",
                            c.name, c.ring.inflight
                        ));
                    }
                    c.ring.inflight = 0;
                }
                break;
            }
            // Wait for replies or the next intended send time (open loop:
            // the timerfd wakes us on time; without one, spin). The 1 ms
            // cap makes timeouts and the end of the run noticed.
            let timeout = if next_due != u64::MAX && !ending {
                let wait = next_due.saturating_sub(clock.now_ns());
                match &self.timer {
                    _ if wait == 0 => Duration::ZERO,
                    Some(t) => {
                        t.arm(Duration::from_nanos(wait));
                        Duration::from_millis(2)
                    }
                    None => Duration::ZERO,
                }
            } else if self.spec.busy_poll {
                Duration::ZERO
            } else {
                Duration::from_millis(1)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.stats.errors.add(format!("sender poll: {e}"));
                    break;
                }
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if ev.token() == TIMER {
                    if let Some(t) = &self.timer {
                        t.clear();
                    }
                } else if i < self.conns.len() && ev.is_readable() {
                    self.read(i, &clock);
                }
            }
            turns += 1;
            if turns & 63 == 0 {
                live.publish_sender(
                    self.stats.total_sent_packets,
                    self.stats.total_fulfilled_packets,
                    self.stats.rejected.total(),
                );
            }
        }
        live.publish_sender(
            self.stats.total_sent_packets,
            self.stats.total_fulfilled_packets,
            self.stats.rejected.total(),
        );
        for c in &self.conns {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        self.stats
    }

    /// Writes the packets due on connection `i`; returns when the next one is due.
    fn generate(
        &mut self,
        i: usize,
        now: u64,
        clock: &Clock,
        timing: &Timing,
        interval_ns: f64,
    ) -> u64 {
        let spec = &self.spec;
        let c = &mut self.conns[i];
        if c.wbuf.len() - c.wpos > MAX_BACKLOG {
            return now;
        }
        let remaining = c.limit.map_or(u64::MAX, |l| l.saturating_sub(c.generated));
        let (mut n, next_due) = match spec.load {
            Load::Closed { window } => ((window.saturating_sub(c.ring.inflight)) as u64, u64::MAX),
            Load::Open { .. } => {
                // Packets k with start + k·interval <= now are due.
                let elapsed = now.saturating_sub(timing.start_ns) as f64;
                let due_total = (elapsed / interval_ns).floor() as u64 + 1;
                let due = due_total.saturating_sub(c.generated);
                let room = spec.in_flight_limit.saturating_sub(c.ring.inflight) as u64;
                if due > room {
                    // Held back by the in-flight limit: replies wake us.
                    (room, u64::MAX)
                } else {
                    let next = timing.start_ns + ((c.generated + due) as f64 * interval_ns) as u64;
                    (due, next)
                }
            }
        };
        n = n.min(remaining).min(BATCH as u64);
        // Only as many as there are free slots in order (and never more
        // than the ring holds, or the check would wrap onto itself).
        n = n.min(c.ring.mask as u64 + 1);
        let mut free = 0u64;
        while free < n {
            let rid = c.ring.next_rid.wrapping_add(free as u32);
            if c.ring.slots[(rid & c.ring.mask) as usize].state != FREE {
                break;
            }
            free += 1;
        }
        let n = free as usize;
        if n == 0 {
            return if next_due == u64::MAX {
                u64::MAX
            } else {
                next_due.max(now)
            };
        }
        for k in 0..n {
            let seq = lt::make_seq(c.stream_id, c.generated + k as u64);
            self.fulfillments[k] = spec.secret.fulfillment(seq);
        }
        spec.verifier
            .hash(&self.fulfillments[..n], &mut self.conditions[..n]);
        let send_ns = clock.now_ns();
        let expiry_ms = clock.wall_ms_at(send_ns) + spec.expiry.as_millis() as u64;
        let ts = *self.ts.get(expiry_ms);
        let deadline_base = send_ns + spec.expiry.as_nanos() as u64 + spec.grace.as_nanos() as u64;
        let ndest = c.templates.len().max(1);
        for k in 0..n {
            let index = c.generated + k as u64;
            let seq = lt::make_seq(c.stream_id, index);
            let rid = c.ring.next_rid;
            c.ring.next_rid = c.ring.next_rid.wrapping_add(1);
            let t_ns = match spec.load {
                Load::Open { .. } => timing.start_ns + (index as f64 * interval_ns) as u64,
                Load::Closed { .. } => send_ns,
            };
            let tpl = &c.templates[(index % ndest as u64) as usize];
            tpl.write(
                &mut c.wbuf,
                rid,
                spec.amount,
                &ts,
                &self.conditions[k],
                seq,
                spec.min_dest,
            );
            let measured = t_ns >= timing.warmup_end_ns && t_ns < timing.end_ns;
            c.ring.slots[(rid & c.ring.mask) as usize] = Slot {
                seq,
                t_ns,
                deadline_ns: deadline_base,
                amount: spec.amount,
                rid,
                state: IN_FLIGHT,
                measured,
            };
            if measured {
                self.stats.sent += 1;
            }
        }
        c.generated += n as u64;
        c.ring.inflight += n as u32;
        self.stats.total_sent_packets += n as u64;
        self.stats.total_amount_sent += spec.amount as u128 * n as u128;
        next_due
    }

    /// One write per turn with everything pending.
    fn flush(&mut self, i: usize, clock: &Clock) {
        let c = &mut self.conns[i];
        let mut failed = None;
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => {
                    failed = Some(format!("{}: connection closed by peer", c.name));
                    break;
                }
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(format!("{}: {}", c.name, link::io_cause(&e)));
                    break;
                }
            }
        }
        if let Some(msg) = failed {
            // The connector is gone, but what it sent before it went is
            // still in the socket: the replies that made it back count.
            self.read(i, clock);
            let Sender { conns, stats, .. } = self;
            Self::kill(&mut conns[i], stats, msg);
            return;
        }
        if c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
        } else if c.wpos > (1 << 20) {
            c.wbuf.drain(..c.wpos);
            c.wpos = 0;
        }
    }

    fn kill(c: &mut SendConn, stats: &mut SenderStats, msg: String) {
        if !c.dead {
            stats.errors.add(msg.clone());
            c.failure = Some(msg);
            c.dead = true;
            record_in_flight(c, stats);
            stats.lost += c.ring.inflight as u64;
            c.ring.inflight = 0;
            for s in c.ring.slots.iter_mut() {
                s.state = FREE;
            }
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn check_timeouts(&mut self, i: usize, now: u64) {
        let c = &mut self.conns[i];
        while c.ring.head != c.ring.next_rid {
            let s = &mut c.ring.slots[(c.ring.head & c.ring.mask) as usize];
            if s.rid != c.ring.head || s.state == FREE {
                c.ring.head = c.ring.head.wrapping_add(1);
                continue;
            }
            if s.state == IN_FLIGHT && now > s.deadline_ns {
                if s.measured {
                    self.stats.timed_out += 1;
                }
                // Past expiry + grace the receiver refuses it (R00), so
                // whether it fulfilled it is known now, for good.
                if self.spec.track.as_ref().is_some_and(|t| t.fulfilled(s.seq)) {
                    self.stats.unconfirmed.push((s.seq, s.amount));
                }
                c.ring.inflight -= 1;
                if c.http {
                    // Its reply (if any) still comes in order; keep the place.
                    s.state = ABANDONED;
                    break;
                }
                s.state = FREE;
                c.ring.head = c.ring.head.wrapping_add(1);
                continue;
            }
            break;
        }
    }

    fn read(&mut self, i: usize, clock: &Clock) {
        let Sender {
            conns, stats, spec, ..
        } = self;
        let c = &mut conns[i];
        loop {
            if c.dead {
                return;
            }
            match c.rb.read_from(&mut c.stream) {
                Ok(0) => {
                    let msg = format!("{}: connection closed by peer", c.name);
                    Self::kill(c, stats, msg);
                    return;
                }
                Ok(_) => {
                    let now = clock.now_ns();
                    if c.http {
                        process_http(c, stats, &spec.secret, now);
                    } else {
                        process_btp(c, stats, &spec.secret, now);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let msg = format!("{}: {}", c.name, link::io_cause(&e));
                    Self::kill(c, stats, msg);
                    return;
                }
            }
        }
    }
}

/// Notes the packets still in flight on `c` (its link failed or the run
/// ended): the run learns after the receivers stop which of them were
/// fulfilled at the loopback.
fn record_in_flight(c: &SendConn, stats: &mut SenderStats) {
    if c.ring.inflight == 0 {
        return;
    }
    stats.in_flight_at_end.extend(
        c.ring
            .slots
            .iter()
            .filter(|s| s.state == IN_FLIGHT)
            .map(|s| (s.seq, s.amount)),
    );
}

fn process_btp(c: &mut SendConn, stats: &mut SenderStats, secret: &Secret, now: u64) {
    loop {
        if c.dead {
            return;
        }
        let frame = match c.sp.next(&mut c.rb) {
            Ok(Some(f)) => f,
            Ok(None) => {
                frames::settle(&mut c.rb);
                return;
            }
            Err(e) => {
                let msg = format!("{}: {e}", c.name);
                Sender::kill(c, stats, msg);
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
                ws::write_frame(&mut c.wbuf, Opcode::Pong, p, Some(CLIENT_MASK));
                continue;
            }
            Opcode::Close => {
                let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                let msg = format!(
                    "{}: connection closed by peer (WebSocket close {})",
                    c.name,
                    code.map_or("without code".to_string(), |c| c.to_string())
                );
                Sender::kill(c, stats, msg);
                return;
            }
            _ => continue,
        }
        let b = match Btp::new_checked(p) {
            Ok(b) => b,
            Err(e) => {
                stats
                    .errors
                    .add(format!("{}: malformed BTP packet ({e})", c.name));
                continue;
            }
        };
        let rid = b.request_id();
        match b.packet_type() {
            BtpType::Response => match b.ilp_range() {
                Some(r) => on_reply(&mut c.ring, &c.name, stats, secret, Some(rid), &p[r], now),
                None => stats.unmatched += 1,
            },
            BtpType::Error => {
                let m = link::btp_error_text(&c.name, &b);
                on_transport_error(&mut c.ring, stats, Some(rid), m);
            }
            // A request from the connector on our sending link.
            _ => link::refuse_request_on_send_link(
                &mut c.wbuf,
                &b,
                b"ilp-loadgen: packets are received on the receiving link",
            ),
        }
    }
}

fn process_http(c: &mut SendConn, stats: &mut SenderStats, secret: &Secret, now: u64) {
    loop {
        if c.dead {
            return;
        }
        let resp = match link::parse_http_response(c.rb.pending()) {
            Ok(Some(r)) => r,
            Ok(None) => {
                let need = c.rb.pending().len() * 2;
                if c.rb.data.len() < need {
                    c.rb.data.resize(need, 0);
                }
                return;
            }
            Err(e) => {
                let msg = format!("{}: malformed HTTP response ({e})", c.name);
                Sender::kill(c, stats, msg);
                return;
            }
        };
        let pending = &c.rb.data[c.rb.start..c.rb.end];
        let body = &pending[resp.body.clone()];
        if resp.status == 200 {
            on_reply(&mut c.ring, &c.name, stats, secret, None, body, now);
        } else {
            let cause = link::http_failure_cause(resp.status, body);
            let m = format!("{}: HTTP {} ({cause})", c.name, resp.status);
            on_transport_error(&mut c.ring, stats, None, m);
        }
        c.rb.consume(resp.len);
        if resp.close {
            let msg = format!(
                "{}: server closed the connection (Connection: close)",
                c.name
            );
            Sender::kill(c, stats, msg);
            return;
        }
    }
}

/// The slot a reply belongs to: by request id (BTP) or the oldest
/// outstanding request (HTTP/1.1 answers in order).
#[inline]
fn take_slot(ring: &mut Ring, rid: Option<u32>) -> Option<Slot> {
    let rid = match rid {
        Some(r) => r,
        None => {
            while ring.head != ring.next_rid
                && ring.slots[(ring.head & ring.mask) as usize].state == FREE
            {
                ring.head = ring.head.wrapping_add(1);
            }
            if ring.head == ring.next_rid {
                return None;
            }
            ring.head
        }
    };
    let s = &mut ring.slots[(rid & ring.mask) as usize];
    if s.rid != rid || s.state == FREE {
        return None;
    }
    let out = *s;
    if s.state == IN_FLIGHT {
        ring.inflight -= 1;
    }
    s.state = FREE;
    Some(out)
}

fn on_transport_error(ring: &mut Ring, stats: &mut SenderStats, rid: Option<u32>, msg: String) {
    stats.errors.add(msg);
    match take_slot(ring, rid) {
        Some(s) if s.state == IN_FLIGHT && s.measured => stats.transport_errors += 1,
        Some(_) => {}
        None => stats.unmatched += 1,
    }
}

#[inline]
fn on_reply(
    ring: &mut Ring,
    name: &str,
    stats: &mut SenderStats,
    secret: &Secret,
    rid: Option<u32>,
    ilp: &[u8],
    now: u64,
) {
    let Some(s) = take_slot(ring, rid) else {
        stats.unmatched += 1;
        return;
    };
    if s.state == ABANDONED {
        // Already counted as timed out.
        stats.unmatched += 1;
        return;
    }
    let malformed = |stats: &mut SenderStats, why: String| {
        if s.measured {
            stats.transport_errors += 1;
        }
        stats
            .errors
            .add(format!("{name}: malformed ILP reply ({why})"));
    };
    match ilp.first() {
        Some(13) => match Fulfill::new_checked(ilp) {
            Ok(f) => {
                if *f.fulfillment() == secret.fulfillment(s.seq) {
                    stats.total_fulfilled_packets += 1;
                    stats.total_amount_fulfilled += s.amount as u128;
                    if s.measured {
                        stats.fulfilled += 1;
                        stats.record(now.saturating_sub(s.t_ns));
                    }
                } else if s.measured {
                    stats.wrong_fulfillment += 1;
                }
            }
            Err(e) => malformed(stats, e.to_string()),
        },
        Some(14) => match Reject::new_checked(ilp) {
            Ok(r) => {
                if s.measured {
                    stats.rejected.add(*r.code().as_bytes(), 1);
                }
            }
            Err(e) => malformed(stats, e.to_string()),
        },
        _ => malformed(stats, "not a Fulfill or Reject".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ilpd_codec::ilp::FulfillBuilder;
    use ilpd_codec::ws::{Decoder, Message};
    use std::io::Read;

    /// A sender thread with one BTP connection to `peer`'s other end.
    fn sender_with_peer(track: &Arc<FulfillTrack>) -> (Sender, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        let spec = SenderSpec {
            thread: 0,
            urls: Vec::new(),
            first_stream: 0,
            load: Load::Closed { window: 8 },
            rate_per_conn: 0.0,
            max_in_flight: 64,
            in_flight_limit: 64,
            amount: 5,
            min_dest: 5,
            data_size: 16,
            expiry: Duration::from_secs(30),
            grace: Duration::from_secs(1),
            destinations: vec![b"test.lg.0".to_vec()],
            secret: Secret::from_seed(9),
            verifier: BatchVerifier::new(None).unwrap(),
            packets_per_conn: None,
            core: None,
            busy_poll: false,
            connect_timeout: Duration::from_secs(1),
            track: Some(track.clone()),
        };
        let templates = vec![Template::btp(b"test.lg.0", 16)];
        let conn = send_conn(
            &spec,
            "send link test".into(),
            false,
            ours,
            &[],
            templates,
            0,
        )
        .unwrap();
        let sender = Sender {
            timer: None,
            spec,
            conns: vec![conn],
            poll: Poll::new().unwrap(),
            stats: SenderStats::default(),
            ts: TimestampCache::new(),
            fulfillments: vec![[0; 32]; BATCH],
            conditions: vec![[0; 32]; BATCH],
        };
        (sender, peer)
    }

    /// (request id, seq) of every Prepare the peer reads, until `n`.
    fn read_prepares(peer: &mut std::net::TcpStream, n: usize) -> Vec<(u32, u64)> {
        let mut dec = Decoder::new(Role::Server, MAX_MESSAGE);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while out.len() < n {
            match dec.decode(&mut buf).unwrap() {
                Some(Message::Binary(p)) => {
                    let b = Btp::new_checked(&p[..]).unwrap();
                    let ilp = &p[b.ilp_range().unwrap()];
                    let prep = crate::receiver::parse_prepare(ilp).unwrap();
                    let (seq, _) = lt::read_data_header(prep.data).unwrap();
                    out.push((b.request_id(), seq));
                }
                Some(_) => {}
                None => {
                    let mut chunk = [0u8; 4096];
                    let k = peer.read(&mut chunk).unwrap();
                    assert!(k > 0, "sender closed");
                    buf.extend_from_slice(&chunk[..k]);
                }
            }
        }
        out
    }

    /// A sender with a tracking table and a socket peer, after it sent 8
    /// Prepares (read back as (request id, seq)).
    #[allow(clippy::type_complexity)]
    fn eight_sent() -> (
        Arc<FulfillTrack>,
        Sender,
        std::net::TcpStream,
        Clock,
        u64,
        Vec<(u32, u64)>,
    ) {
        let track = Arc::new(FulfillTrack::new(1, 64));
        let (mut s, mut peer) = sender_with_peer(&track);
        let clock = Clock::new();
        let now = clock.now_ns();
        let timing = Timing {
            start_ns: now,
            warmup_end_ns: now,
            end_ns: now + 10_000_000_000,
            hard_stop_ns: now + 11_000_000_000,
        };
        s.generate(0, now, &clock, &timing, 0.0);
        s.flush(0, &clock);
        let prepares = read_prepares(&mut peer, 8);
        (track, s, peer, clock, now, prepares)
    }

    #[test]
    fn replies_read_before_a_reset_count_and_the_rest_is_recorded_in_flight() {
        let (track, mut s, mut peer, clock, _, prepares) = eight_sent();
        assert_eq!(s.conns[0].ring.inflight, 8);
        // The "connector" answers three with their Fulfills, and its
        // receiver fulfilled two more whose Fulfills it never passes on;
        // then it dies with a reset.
        let mut out = Vec::new();
        for (rid, seq) in &prepares[..3] {
            let mut ilp = Vec::new();
            FulfillBuilder {
                fulfillment: &s.spec.secret.fulfillment(*seq),
                data: b"",
            }
            .write_to(&mut ilp);
            let mut b = BytesMut::new();
            ilpd_codec::btp::write_ilp_response(&mut b, *rid, &ilp);
            ws::write_frame(&mut out, Opcode::Binary, &b, None);
        }
        for (_, seq) in &prepares[3..5] {
            track.mark(*seq);
        }
        peer.write_all(&out).unwrap();
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
        std::thread::sleep(Duration::from_millis(100));
        // The sender writes before it reads: the write fails, and the
        // Fulfills already in the socket must still count.
        ws::write_frame(&mut s.conns[0].wbuf, Opcode::Ping, b"x", Some(CLIENT_MASK));
        s.flush(0, &clock);
        assert!(s.conns[0].dead);
        assert_eq!(s.stats.total_fulfilled_packets, 3);
        assert_eq!(s.stats.total_amount_fulfilled, 15);
        assert_eq!(s.stats.lost, 5);
        assert_eq!(s.stats.errors.total(), 1, "{:?}", s.stats.errors);
        let mut left: Vec<u64> = s.stats.in_flight_at_end.iter().map(|p| p.0).collect();
        left.sort_unstable();
        let want: Vec<u64> = prepares[3..].iter().map(|p| p.1).collect();
        assert_eq!(left, want);
        assert!(s.stats.in_flight_at_end.iter().all(|p| p.1 == 5));
        let fulfilled: Vec<bool> = left.iter().map(|q| track.fulfilled(*q)).collect();
        assert_eq!(fulfilled, [true, true, false, false, false]);
    }

    #[test]
    fn a_fulfilled_packet_that_times_out_is_unconfirmed() {
        let (track, mut s, _peer, _clock, now, prepares) = eight_sent();
        track.mark(prepares[2].1);
        // Past every deadline (expiry + grace): all eight time out.
        s.check_timeouts(0, now + 40_000_000_000);
        assert_eq!(s.stats.timed_out, 8);
        assert_eq!(s.stats.unconfirmed, vec![(prepares[2].1, 5)]);
        assert_eq!(s.conns[0].ring.inflight, 0);
    }
}

//! One worker: a mio loop on its own core with its own listener, its own
//! connections and its own [`Core`].
//!
//! A loop turn: poll; accept; read every ready connection until WouldBlock
//! (at most `batch` messages each) and hand the whole batch to the core;
//! run due timers; `Core::flush` (one batch of fulfillment checks); write
//! every reply straight into the per-connection output buffers; flush each
//! socket once; push cross-worker items and wake their workers once.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use crossbeam::channel::Receiver;
use ilpd_codec::btp::{self, Btp, BtpType};
use ilpd_codec::ilp::RejectBuilder;
use ilpd_codec::ws::{self, Message, Opcode, Role};
use ilpd_codec::ErrorCode;
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use tracing::{debug, info, warn};

use super::accept_backoff::{self, AcceptBackoff};
use super::client::{Backoff, ClientSlot, WsUrl};
use super::conn::{CloseReason, Conn, Outstanding, ReadOutcome, State, PRE_AUTH_OUTPUT_LIMIT};
use super::conn_limits;
use super::handoff::{Handoff, Outbox, Peers};
use super::journal;
use super::IoShared;
use crate::config::Config;
use crate::core::{AccountId, Action, Core, Now, OutId, ReplyTo, Shared};
use crate::http::driver::{self as http, HttpDriver};
use crate::http::idempotency::{fingerprint, Begin, Key};
use crate::http::LinkKind;
use crate::ledger::writer::Writer;

pub const LISTENER: Token = Token(0);
pub const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;
/// BTP/2.0-I: how often an unanswered Forward is sent again.
const BTPI_RESEND_MS: u64 = 1_000;

/// A connection whose output stays over its limit this long is closed as a
/// slow reader: while it is over, it is not read (nor are its Forwards
/// answered), so a stuck peer frees its resources after this.
const SLOW_READER_MS: u64 = 5_000;
/// At shutdown, how many more batches each connection may be read for
/// (what its peer had already sent).
const FINAL_READS: usize = 4;
/// How often handshake deadlines are checked.
const HANDSHAKE_SCAN_MS: u64 = 100;
/// Longest poll wait when nothing is scheduled (also bounds how late a
/// shutdown or a client dial is noticed if a wake-up were lost).
const IDLE_POLL_MS: u64 = 500;

/// Tuning knobs a worker reads on the hot path.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub batch: usize,
    pub max_message: usize,
    pub handshake_timeout_ms: u64,
    pub write_buffer_limit: usize,
    pub socket_send_buffer: Option<usize>,
    pub socket_recv_buffer: Option<usize>,
    pub shutdown_grace_ms: u64,
    pub reconnect_initial_ms: u64,
    /// Longest time a forwarded Prepare can be held (node or any account's
    /// `max_hold_time_ms`): how often unanswered Forwards are swept.
    pub max_hold_ms: u64,
}

impl Knobs {
    pub fn from_config(cfg: &Config) -> Knobs {
        let n = &cfg.node;
        Knobs {
            batch: n.batch,
            max_message: n.max_message_size,
            handshake_timeout_ms: n.handshake_timeout_ms,
            write_buffer_limit: n.write_buffer_limit,
            socket_send_buffer: n.socket_send_buffer,
            socket_recv_buffer: n.socket_recv_buffer,
            shutdown_grace_ms: n.shutdown_grace_ms,
            reconnect_initial_ms: n.reconnect_initial_ms,
            max_hold_ms: cfg
                .accounts
                .iter()
                .filter_map(|a| a.max_hold_time_ms)
                .fold(n.max_hold_time_ms, u64::max),
        }
    }

    /// Bytes buffered per connection before reading pauses for a turn.
    fn read_cap(&self) -> usize {
        (4 * self.max_message).max(256 * 1024)
    }
}

/// What a worker thread is given at start.
pub struct WorkerInit {
    pub id: usize,
    pub poll: Poll,
    pub listener: Option<TcpListener>,
    pub rx: Receiver<Handoff>,
    pub peers: Peers,
    /// Client-side accounts this worker dials: (account, url).
    pub clients: Vec<(AccountId, WsUrl)>,
    /// The HTTP links (listener, server connections, client pools).
    pub http: HttpDriver,
    /// The durable ledger (`None` with `durability = "none"`).
    pub ledger: Option<Arc<crate::ledger::Ledger>>,
}

struct Slot {
    gen: u32,
    conn: Option<Conn>,
}

/// Counters accumulated during a turn and published once.
#[derive(Default)]
struct TurnStats {
    bytes_in: u64,
    bytes_out: u64,
    messages: usize,
}

pub struct Worker {
    id: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Established connection slots per account, on this worker.
    by_account: Vec<Vec<usize>>,
    rr_local: Vec<usize>,
    rr_remote: Vec<usize>,
    core: Core,
    shared: Arc<Shared>,
    io: Arc<IoShared>,
    rx: Receiver<Handoff>,
    outbox: Outbox,
    actions: Vec<Action>,
    spare_actions: Vec<Action>,
    msgs: Vec<Message>,
    ready: Vec<usize>,
    dirty: Vec<usize>,
    clients: Vec<ClientSlot>,
    knobs: Knobs,
    rng: u64,
    draining: bool,
    drain_deadline_ms: u64,
    next_handshake_scan_ms: u64,
    /// Connections not yet established (their deadlines need checking).
    handshaking: usize,
    stats: TurnStats,
    epoch: Instant,
    /// Sweep epoch stamped on each Forward written (see
    /// [`Conn::sweep_outstanding`]) and when it next advances.
    sweep_epoch: u16,
    next_sweep_ms: u64,
    http: HttpDriver,
    http_events: Vec<http::Event>,
    /// BTP/2.0-I requests given to the core: (conn id, request id) → key.
    btpi_waiting: HashMap<(u64, u32), Key>,
    /// BTP/2.0-I Forwards to repeat until answered: (due, slot, gen,
    /// request id, packet), due times in order.
    btpi_resend: VecDeque<(u64, usize, u32, u32, Bytes)>,
    /// This worker's journal segment writer (docs/ledger.md).
    journal: Option<Writer>,
    /// A failed `accept` (EMFILE…) is retried on a timer.
    accept_backoff: AcceptBackoff,
}

fn token_of(slot: usize) -> Token {
    Token(slot + FIRST_CONN)
}

/// Packs a slot and its generation into the opaque `ReplyTo::conn`, so a
/// reply for a closed connection never reaches the slot's next tenant.
/// Generations wrap within 30 bits so the top two bits of `ReplyTo::conn`
/// stay free for other link types' tags (`http::driver::TAG_*`).
fn conn_id(slot: usize, gen: u32) -> u64 {
    ((gen & GEN_MASK) as u64) << 32 | slot as u64
}

/// Slot generations count modulo 2^30 (see [`conn_id`]).
const GEN_MASK: u32 = (1 << 30) - 1;

impl Worker {
    pub fn new(init: WorkerInit, shared: Arc<Shared>, io: Arc<IoShared>, knobs: Knobs) -> Worker {
        let accounts = shared.account_count();
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ ((init.id as u64 + 1) << 48)
            ^ std::process::id() as u64;
        let clients = init
            .clients
            .into_iter()
            .map(|(account, url)| ClientSlot {
                account,
                url,
                conn: None,
                next_attempt_ms: Some(0),
                backoff: Backoff::new(knobs.reconnect_initial_ms),
                dormant: false,
            })
            .collect();
        // HTTP peers we POST to are reachable from this worker's own pool
        // (failures are per request: T01).
        for a in init.http.outgoing_accounts() {
            shared.connection_opened(a);
        }
        let mut core = Core::new(shared.clone(), init.id);
        let journal = journal::open(&mut core, init.ledger.as_deref(), init.id);
        Worker {
            id: init.id,
            core,
            journal,
            accept_backoff: AcceptBackoff::default(),
            poll: init.poll,
            listener: init.listener,
            slots: Vec::new(),
            free: Vec::new(),
            by_account: vec![Vec::new(); accounts],
            rr_local: vec![0; accounts],
            rr_remote: vec![0; accounts],
            shared,
            io,
            rx: init.rx,
            outbox: Outbox::new(init.peers),
            actions: Vec::with_capacity(1024),
            spare_actions: Vec::with_capacity(1024),
            msgs: Vec::with_capacity(256),
            ready: Vec::new(),
            dirty: Vec::new(),
            clients,
            knobs,
            rng: seed | 1,
            draining: false,
            drain_deadline_ms: 0,
            next_handshake_scan_ms: 0,
            handshaking: 0,
            stats: TurnStats::default(),
            http: init.http,
            http_events: Vec::new(),
            btpi_waiting: HashMap::new(),
            btpi_resend: VecDeque::new(),
            epoch: Instant::now(),
            sweep_epoch: 0,
            next_sweep_ms: 0,
        }
    }

    fn now(&self) -> Now {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Now {
            unix_ms,
            mono_ns: self.epoch.elapsed().as_nanos() as u64,
        }
    }

    /// xorshift64*: WebSocket masks and nonces (RFC 6455 §5.3 asks for
    /// unpredictable masks; they only defeat proxy cache poisoning, which a
    /// BTP peer link is not exposed to).
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn mask(&mut self) -> [u8; 4] {
        (self.random() as u32).to_ne_bytes()
    }

    fn conn(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slots.get_mut(slot).and_then(|s| s.conn.as_mut())
    }

    /// The worker's event loop; returns after a graceful shutdown.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout(self.now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(worker = self.id, "poll failed: {e}");
                    return;
                }
            }
            let now = self.now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(now),
                    Token(t) if t >= http::TOKEN_BASE - 1 => {
                        self.http.on_event(ev, now, &mut self.http_events)
                    }
                    WAKER => {}
                    Token(t) => self.on_event(t - FIRST_CONN, ev, now),
                }
            }
            if self.accept_backoff.due(now.unix_ms) {
                self.accept(now);
            }
            if !self.draining && self.io.shutdown.load(Ordering::Acquire) {
                self.start_drain(now);
            }
            self.drain_handoffs(now);
            self.process_ready(now);
            self.http.process(now, &mut self.http_events);
            self.apply_http(now);
            if self.http.next_deadline().is_some_and(|d| d <= now.unix_ms) {
                self.http.on_timers(now, &mut self.http_events);
                self.apply_http(now);
            }
            if self.btpi_resend.front().is_some_and(|r| r.0 <= now.unix_ms) {
                self.btpi_resend_due(now);
            }
            if self.core.next_deadline().is_some_and(|d| d <= now.unix_ms) {
                self.core.on_timers(now, &mut self.actions);
                self.dispatch(now);
            }
            // Route broadcasting (docs/ccp.md): whichever worker is awake.
            if self.core.ccp_deadline().is_some_and(|d| d <= now.unix_ms) {
                self.core.on_ccp_timers(now, &mut self.actions);
                self.dispatch(now);
            }
            // One batch of fulfillment checks per turn, before sockets flush.
            self.core.flush(now, &mut self.actions);
            self.dispatch(now);
            // The turn's journal frame, before anything leaves the process.
            self.journal_turn(now);
            self.flush_dirty(now);
            self.http.flush(now, &mut self.http_events);
            if !self.http_events.is_empty() {
                self.apply_http(now);
                self.journal_turn(now);
                self.flush_dirty(now);
                self.http.flush(now, &mut self.http_events);
            }
            self.core.journal_flushed();
            self.outbox.end_turn();
            self.check_handshakes(now);
            self.sweep_outstanding(now);
            self.dial_due(now);
            self.publish_stats();
            if self.draining && self.drain_done(now) {
                self.close_all();
                return;
            }
        }
    }

    /// The turn's journal work (`journal.rs`), then carry out what it
    /// released.
    fn journal_turn(&mut self, now: Now) {
        if let Some(w) = &mut self.journal {
            let status = self.shared.ledger_status();
            journal::turn(&mut self.core, w, status, now, &mut self.actions);
            self.dispatch(now);
        }
    }

    fn poll_timeout(&self, now: Now) -> Duration {
        if !self.ready.is_empty() {
            return Duration::ZERO;
        }
        if !self.outbox.is_empty() {
            // A full cross-worker queue: retry soon without spinning.
            return Duration::from_millis(1);
        }
        let mut at = now.unix_ms
            + if self.draining || !self.dirty.is_empty() {
                20
            } else {
                IDLE_POLL_MS
            };
        if let Some(d) = self.core.next_deadline() {
            at = at.min(d);
        }
        if let Some(d) = self.core.ccp_deadline() {
            at = at.min(d);
        }
        if let Some(d) = self.http.next_deadline() {
            at = at.min(d);
        }
        if let Some(r) = self.btpi_resend.front() {
            at = at.min(r.0);
        }
        if let Some(t) = self.accept_backoff.deadline() {
            at = at.min(t);
        }
        if self.handshaking > 0 {
            at = at.min(self.next_handshake_scan_ms);
        }
        for c in &self.clients {
            if let Some(t) = c.next_attempt_ms {
                at = at.min(t);
            }
        }
        Duration::from_millis(at.saturating_sub(now.unix_ms))
    }

    fn publish_stats(&mut self) {
        let mut s = std::mem::take(&mut self.stats);
        let hc = std::mem::take(&mut self.http.counters);
        if hc.throttled > 0 {
            self.io
                .auth_throttled
                .fetch_add(hc.throttled, Ordering::Relaxed);
        }
        s.bytes_in += hc.bytes_in;
        s.bytes_out += hc.bytes_out;
        let h = &self.io.metrics[self.id].http;
        for (a, v) in [
            (&h.accepted, hc.accepted),
            (&h.requests, hc.requests),
            (&h.refused, hc.refused),
            (&h.duplicates, hc.duplicates),
            (&h.retries, hc.retries),
            (&h.connect_failures, hc.connect_failures),
            (&h.replies_dropped, hc.replies_dropped),
        ] {
            if v > 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        }
        let m = &self.io.metrics[self.id];
        if s.bytes_in > 0 {
            m.bytes_in.fetch_add(s.bytes_in, Ordering::Relaxed);
        }
        if s.bytes_out > 0 {
            m.bytes_out.fetch_add(s.bytes_out, Ordering::Relaxed);
        }
        m.loop_turns.fetch_add(1, Ordering::Relaxed);
        if s.messages > 0 {
            self.shared.record_loop(self.id, s.messages);
        }
        self.io.in_flight[self.id].store(self.core.in_flight(), Ordering::Release);
    }

    // ------------------------------------------------------------ sockets

    fn set_socket_options(&self, stream: &TcpStream) {
        let _ = stream.set_nodelay(true);
        let sock = socket2::SockRef::from(stream);
        if let Some(n) = self.knobs.socket_send_buffer {
            let _ = sock.set_send_buffer_size(n);
        }
        if let Some(n) = self.knobs.socket_recv_buffer {
            let _ = sock.set_recv_buffer_size(n);
        }
    }

    /// Stores a new connection and registers it; returns its slot.
    fn insert(&mut self, mut conn: Conn) -> Option<usize> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot { gen: 0, conn: None });
                self.slots.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut conn.stream,
            token_of(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!(worker = self.id, "cannot register connection: {e}");
            self.free.push(slot);
            return None;
        }
        self.slots[slot].conn = Some(conn);
        self.handshaking += 1;
        Some(slot)
    }

    fn accept(&mut self, now: Now) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) if self.io.auth_throttle.blocked(peer.ip(), now.unix_ms) => {
                    // Too many failed auths from there (auth_throttle.rs).
                    drop(stream);
                    self.io.auth_throttled.fetch_add(1, Ordering::Relaxed);
                }
                Ok((stream, peer)) => {
                    let admission = match self.io.conn_limits.admit(peer.ip()) {
                        Ok(a) => a,
                        Err(cap) => {
                            // Past a connection cap (conn_limits.rs).
                            drop(stream);
                            conn_limits::log_refusal(&self.io.conn_limits, cap, peer, "BTP");
                            continue;
                        }
                    };
                    self.set_socket_options(&stream);
                    let deadline = now.unix_ms + self.knobs.handshake_timeout_ms;
                    let mut conn = Conn::new(
                        stream,
                        Role::Server,
                        State::HttpUpgrade,
                        self.knobs.max_message,
                        deadline,
                    );
                    conn.admission = Some(admission);
                    if self.insert(conn).is_some() {
                        self.io.metrics[self.id]
                            .accepted
                            .fetch_add(1, Ordering::Relaxed);
                        debug!(worker = self.id, %peer, "accepted");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return self.accept_backoff.ok();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: retry on a timer (accept_backoff.rs).
                    let n = self.accept_backoff.failed(now.unix_ms);
                    if n > 0 {
                        warn!(worker = self.id, failures = n, "accept failed: {e}; retrying every {} ms, existing connections are served", accept_backoff::RETRY_MS);
                    }
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, slot: usize, ev: &Event, now: Now) {
        let Some(conn) = self.conn(slot) else { return };
        if conn.state == State::Connecting {
            if !(ev.is_writable() || ev.is_error() || ev.is_read_closed() || ev.is_write_closed()) {
                return;
            }
            let result = match conn.stream.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => match conn.stream.peer_addr() {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(true) => self.start_client_handshake(slot),
                Ok(false) => {}
                Err(e) => self.close(
                    slot,
                    CloseReason::ConnectFailed,
                    &format!("connect: {e}"),
                    now,
                ),
            }
            return;
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.mark_ready(slot);
        }
        if ev.is_writable() {
            self.mark_dirty(slot);
        }
    }

    fn mark_ready(&mut self, slot: usize) {
        if let Some(c) = self.conn(slot) {
            if !c.in_ready {
                c.in_ready = true;
                self.ready.push(slot);
            }
        }
    }

    fn mark_dirty(&mut self, slot: usize) {
        if let Some(c) = self.conn(slot) {
            if !c.in_dirty {
                c.in_dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// Writes every connection's output once. A connection whose output
    /// goes over its limit ([`Conn::output_limit`]) stops being read, by
    /// itself alone, until its output is below half (so the peer feeding it
    /// slows down); past twice the limit, or over the limit (over half of it
    /// while paused) for [`SLOW_READER_MS`], it is closed as a slow reader:
    /// a peer that stops reading can neither grow our memory without bound
    /// nor hold its resources for long.
    fn flush_dirty(&mut self, now: Now) {
        let limit = self.knobs.write_buffer_limit;
        let list = std::mem::take(&mut self.dirty);
        let mut slow = Vec::new();
        let mut failed = Vec::new();
        let mut resumed = Vec::new();
        for &slot in &list {
            let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) else {
                continue;
            };
            if !c.in_dirty {
                continue;
            }
            match c.flush() {
                Ok(n) => self.stats.bytes_out += n as u64,
                Err(e) => {
                    c.in_dirty = false;
                    failed.push((slot, e));
                    continue;
                }
            }
            let lim = c.output_limit(limit);
            let left = c.wbuf.len();
            if c.read_paused && left <= lim / 2 {
                c.read_paused = false;
                resumed.push(slot);
            } else if !c.read_paused && left > lim {
                c.read_paused = true;
            }
            // While paused, the stall clock runs from half the limit: a peer
            // that stops reading just under the limit is still cut off.
            let stall_from = if c.read_paused { lim / 2 } else { lim };
            if left <= stall_from {
                c.over_limit_since = None;
            } else if c.over_limit_since.is_none() {
                c.over_limit_since = Some(now.unix_ms);
            }
            let stalled = c
                .over_limit_since
                .is_some_and(|t| now.unix_ms.saturating_sub(t) >= SLOW_READER_MS);
            if left == 0 {
                c.in_dirty = false;
            } else if left > 2 * lim || stalled {
                c.in_dirty = false;
                slow.push(slot);
            } else {
                self.dirty.push(slot);
            }
        }
        for slot in resumed {
            // Edge-triggered: bytes that arrived while paused raise no new
            // event, so look again.
            self.mark_ready(slot);
        }
        for (slot, e) in failed {
            self.close(slot, CloseReason::IoError, &format!("write: {e}"), now);
        }
        for slot in slow {
            self.close(
                slot,
                CloseReason::SlowReader,
                "output buffer over twice its limit, or not draining for 5 s",
                now,
            );
        }
        // Closing may have produced replies (failed Forwards).
        if !self.actions.is_empty() {
            self.dispatch(now);
            let again = std::mem::take(&mut self.dirty);
            for slot in again {
                if let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) {
                    if let Ok(n) = c.flush() {
                        self.stats.bytes_out += n as u64;
                    }
                    if c.wbuf.is_empty() {
                        c.in_dirty = false;
                    } else {
                        self.dirty.push(slot);
                    }
                }
            }
        }
    }

    /// Closes a connection: releases everything it held. Forwards still
    /// waiting for an answer on it fail with T01 at once (via their origin
    /// worker) so their reservations are released without waiting for the
    /// expiry. A client-side connection is redialled after the back-off.
    fn close(&mut self, slot: usize, reason: CloseReason, detail: &str, now: Now) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(mut conn) = s.conn.take() else {
            return;
        };
        s.gen = s.gen.wrapping_add(1) & GEN_MASK;
        self.free.push(slot);
        if let Ok(n) = conn.flush() {
            self.stats.bytes_out += n as u64;
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if !conn.is_established() {
            self.handshaking = self.handshaking.saturating_sub(1);
        }
        let m = &self.io.metrics[self.id];
        m.closed[reason.index()].fetch_add(1, Ordering::Relaxed);
        if let (true, Some(acct)) = (conn.is_established(), conn.account) {
            self.shared.connection_closed(acct);
            self.io
                .connection_count(acct, self.id)
                .fetch_sub(1, Ordering::AcqRel);
            m.open.fetch_sub(1, Ordering::Relaxed);
            if let Some(list) = self.by_account.get_mut(acct.0 as usize) {
                list.retain(|&s| s != slot);
            }
        }
        for (_, o) in conn.outstanding.drain() {
            self.fail(
                o,
                ErrorCode::T01_PEER_UNREACHABLE,
                Cow::Borrowed("peer disconnected"),
                now,
            );
        }
        let account_name = conn
            .account
            .map(|a| self.shared.account_config(a).id.clone())
            .unwrap_or_default();
        let peer_closed = matches!(reason, CloseReason::PeerClosed | CloseReason::IoError);
        let siblings = conn.account.map_or(0, |a| self.io.account_connections(a));
        if let Some(cs) = conn.client_slot {
            if let Some(c) = self.clients.get_mut(cs) {
                c.conn = None;
                if !self.draining && conn.is_established() && peer_closed && siblings > 0 {
                    c.dormant = true;
                    c.next_attempt_ms = Some(now.unix_ms + c.backoff.next_delay());
                    info!(
                        worker = self.id,
                        account = %account_name,
                        "BTP client connection closed by the peer while another one is up; \
                         this one waits until the account has no connection"
                    );
                } else if !self.draining {
                    let delay = c.backoff.next_delay();
                    c.next_attempt_ms = Some(now.unix_ms + delay);
                    warn!(
                        worker = self.id,
                        account = %account_name,
                        reason = reason.label(),
                        "BTP client connection closed: {detail}; reconnecting in {delay} ms"
                    );
                }
            }
        } else {
            debug!(worker = self.id, account = %account_name, reason = reason.label(), "connection closed: {detail}");
        }
    }

    /// A Forward failed on this worker's connection: tell its origin.
    fn fail(&mut self, o: Outstanding, code: ErrorCode, message: Cow<'static, str>, now: Now) {
        if o.origin as usize == self.id {
            self.core
                .on_forward_failed(now, o.out_id, code, &message, &mut self.actions);
        } else {
            self.outbox.answer(
                o.origin as usize,
                Handoff::Failed {
                    out_id: o.out_id,
                    code,
                    message,
                },
            );
        }
    }

    // ------------------------------------------------------------ reading

    fn process_ready(&mut self, now: Now) {
        let list = std::mem::take(&mut self.ready);
        for slot in list {
            let Some(c) = self.conn(slot) else { continue };
            c.in_ready = false;
            if c.read_paused {
                // Its output is over the limit; the flush that drains it
                // marks it ready again.
                continue;
            }
            if self.service(slot, now) {
                self.mark_ready(slot);
            }
            if !self.actions.is_empty() {
                self.dispatch(now);
            }
        }
    }

    /// Reads and handles one connection's batch. Returns whether it must be
    /// serviced again next turn (more bytes or frames waiting).
    fn service(&mut self, slot: usize, now: Now) -> bool {
        let cap = self.knobs.read_cap();
        let batch = self.knobs.batch;
        let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) else {
            return false;
        };
        let mut outcome = ReadOutcome::Drained;
        if !c.eof {
            match c.read_some(cap, &mut self.stats.bytes_in) {
                Ok(ReadOutcome::Eof) => c.eof = true,
                Ok(o) => outcome = o,
                Err(e) => {
                    self.close(slot, CloseReason::IoError, &format!("read: {e}"), now);
                    return false;
                }
            }
        }
        match c.state {
            State::HttpUpgrade => self.server_upgrade(slot, now),
            State::WsHandshake { .. } => self.client_upgrade(slot, now),
            _ => {}
        }
        let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) else {
            return false;
        };
        if matches!(
            c.state,
            State::HttpUpgrade | State::WsHandshake { .. } | State::Connecting
        ) {
            if c.eof {
                self.close(
                    slot,
                    CloseReason::PeerClosed,
                    "closed during the WebSocket handshake",
                    now,
                );
                return false;
            }
            return outcome == ReadOutcome::Full;
        }
        // Split complete frames off without copying (ws::Decoder).
        let mut msgs = std::mem::take(&mut self.msgs);
        let mut error = None;
        while msgs.len() < batch {
            match c.decoder.decode(&mut c.rbuf) {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let full_batch = msgs.len() == batch;
        let eof = c.eof;
        self.stats.messages += msgs.len();
        let gen = self.slots[slot].gen;
        for m in msgs.drain(..) {
            if self.slots[slot].gen != gen || self.slots[slot].conn.is_none() {
                break;
            }
            self.on_message(slot, m, now);
        }
        self.msgs = msgs;
        if self.slots[slot].gen != gen || self.slots[slot].conn.is_none() {
            return false;
        }
        if let Some(e) = error {
            let oversized = matches!(e, ilpd_codec::DecodeError::FieldTooLong(_));
            let mask = self.mask();
            if let Some(c) = self.conn(slot) {
                // RFC 6455 §7.4.1: 1009 message too big, 1002 protocol error.
                if oversized {
                    c.put_close(mask, 1009, "message too big");
                } else {
                    c.put_close(mask, 1002, "protocol error");
                }
            }
            let reason = if oversized {
                CloseReason::Oversized
            } else {
                CloseReason::ProtocolError
            };
            self.close(slot, reason, &format!("websocket: {e}"), now);
            return false;
        }
        if eof && !full_batch {
            self.close(
                slot,
                CloseReason::PeerClosed,
                "peer closed the connection",
                now,
            );
            return false;
        }
        outcome == ReadOutcome::Full || full_batch
    }

    /// Server: the HTTP upgrade (RFC 6455 §4.2). Anything but a valid
    /// WebSocket upgrade gets `400` and the connection is closed.
    fn server_upgrade(&mut self, slot: usize, now: Now) {
        let Some(c) = self.conn(slot) else { return };
        let parsed = match ws::parse_client_handshake(&c.rbuf) {
            Ok(Some((hs, n))) => Ok(Some((ws::accept_key(hs.key), n))),
            Ok(None) if c.rbuf.len() > ws::MAX_HANDSHAKE => Err("handshake too large".to_string()),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok(Some((accept, n))) => {
                c.rbuf.advance(n);
                ws::write_server_handshake(&mut c.wbuf, &accept);
                c.state = State::AwaitAuth;
                self.mark_dirty(slot);
            }
            Ok(None) => {}
            Err(e) => {
                ws::write_http_error(&mut c.wbuf, 400, "Bad Request");
                self.io.metrics[self.id]
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.close(
                    slot,
                    CloseReason::BadHandshake,
                    &format!("http upgrade: {e}"),
                    now,
                );
            }
        }
    }

    /// Client: the server's `101` answer, then our BTP auth (RFC 23 "Authentication").
    fn client_upgrade(&mut self, slot: usize, now: Now) {
        let request_id = (self.random() as u32).max(1);
        let mask = self.mask();
        let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) else {
            return;
        };
        let State::WsHandshake { accept } = &c.state else {
            return;
        };
        match ws::parse_server_handshake(&c.rbuf, accept) {
            Ok(Some(n)) => {
                c.rbuf.advance(n);
                let Some(acct) = c.account else { return };
                let a = self.shared.account_config(acct);
                let token = a.outgoing_token.as_deref().unwrap_or("").as_bytes();
                let user = a.btp_username.as_deref().map(str::as_bytes);
                let len = btp::auth_len(user, token);
                c.put_binary(Some(mask), len, |b| {
                    btp::write_auth(b, request_id, user, token)
                });
                c.state = State::AuthSent { request_id };
                self.mark_dirty(slot);
            }
            Ok(None) => {}
            Err(e) => {
                self.io.metrics[self.id]
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.close(
                    slot,
                    CloseReason::BadHandshake,
                    &format!("websocket upgrade refused: {e}"),
                    now,
                );
            }
        }
    }

    fn start_client_handshake(&mut self, slot: usize) {
        let nonce = {
            let a = self.random().to_ne_bytes();
            let b = self.random().to_ne_bytes();
            let mut n = [0u8; 16];
            n[..8].copy_from_slice(&a);
            n[8..].copy_from_slice(&b);
            n
        };
        let key = ws::client_key(&nonce);
        let accept = ws::accept_key(key.as_bytes());
        let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) else {
            return;
        };
        let Some(cs) = c.client_slot.and_then(|i| self.clients.get(i)) else {
            return;
        };
        ws::write_client_handshake(&mut c.wbuf, &cs.url.host_header(), &cs.url.path, &key);
        c.state = State::WsHandshake { accept };
        self.mark_dirty(slot);
        // The answer may already be buffered.
        self.mark_ready(slot);
    }

    fn on_message(&mut self, slot: usize, m: Message, now: Now) {
        let mask = self.mask();
        match m {
            Message::Binary(payload) => self.on_btp(slot, payload, now),
            Message::Ping(p) => {
                let Some(c) = self.conn(slot) else { return };
                if !c.is_established() {
                    // Before auth a client gets a few KB of pongs in all:
                    // an anonymous peer cannot make us write without end.
                    c.pre_auth_output += p.len() + 2;
                    if c.pre_auth_output > PRE_AUTH_OUTPUT_LIMIT {
                        c.put_close(mask, 1008, "pings before auth");
                        self.close(
                            slot,
                            CloseReason::ProtocolError,
                            "over 4 KiB of pongs before auth",
                            now,
                        );
                        return;
                    }
                }
                c.put_control(mask, Opcode::Pong, &p);
                self.mark_dirty(slot);
            }
            Message::Pong(_) => {}
            Message::Text(_) => {
                // RFC 23; docs/design.md "BTP transport": every BTP packet is one binary frame.
                if let Some(c) = self.conn(slot) {
                    c.put_close(mask, 1003, "BTP uses binary frames");
                }
                self.close(slot, CloseReason::ProtocolError, "text frame", now);
            }
            Message::Close(_, _) => {
                if let Some(c) = self.conn(slot) {
                    c.put_close(mask, 1000, "");
                }
                self.close(slot, CloseReason::PeerClosed, "websocket close", now);
            }
        }
    }

    /// One BTP packet (RFC 23 "Overview", "Flow", "Message"). Unreadable BTP closes the
    /// connection without a reply (RFC 23: no reply to unreadable packets).
    fn on_btp(&mut self, slot: usize, mut payload: BytesMut, now: Now) {
        let (ty, request_id, ilp, entries, primary_is_auth) = match Btp::new_checked(&payload[..]) {
            Ok(v) => (
                v.packet_type(),
                v.request_id(),
                v.ilp_range(),
                v.protocol_data_count(),
                v.primary().is_some_and(|p| p.name == btp::PROTOCOL_AUTH),
            ),
            Err(e) => {
                let mask = self.mask();
                if let Some(c) = self.conn(slot) {
                    c.put_close(mask, 1002, "malformed BTP packet");
                }
                self.close(
                    slot,
                    CloseReason::ProtocolError,
                    &format!("malformed BTP: {e}"),
                    now,
                );
                return;
            }
        };
        // The view checked every entry, so the range is inside the packet;
        // keep the slicing below panic-free regardless.
        let ilp = ilp.filter(|r| r.start <= r.end && r.end <= payload.len());
        let mask = self.mask();
        let gen = self.slots[slot].gen;
        let Some(c) = self.conn(slot) else { return };
        match c.state.clone() {
            State::AwaitAuth => self.server_auth(slot, payload, now),
            State::AuthSent { request_id: rid } => {
                if ty == BtpType::Response && request_id == rid {
                    self.established(slot);
                } else {
                    let detail = if ty == BtpType::Error {
                        format!("peer refused auth: {}", btp_error_text(&payload))
                    } else {
                        "unexpected packet before the auth response".to_string()
                    };
                    self.io.metrics[self.id]
                        .auth_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.close(slot, CloseReason::AuthFailed, &detail, now);
                }
            }
            State::Established => {
                let Some(account) = c.account else { return };
                match ty {
                    BtpType::Message => match ilp {
                        Some(r) => {
                            payload.advance(r.start);
                            payload.truncate(r.len());
                            if self.draining {
                                self.reject_shutting_down(slot, request_id, mask);
                                return;
                            }
                            let from = ReplyTo {
                                account,
                                conn: conn_id(slot, gen),
                                request_id,
                            };
                            if self.http.link_of(account) == LinkKind::BtpI
                                && !self.btpi_begin(slot, from, &payload, mask, now)
                            {
                                return;
                            }
                            self.core.on_prepare(now, from, payload, &mut self.actions);
                        }
                        // A Message with no protocolData: acknowledge it.
                        None if entries == 0 => {
                            c.put_empty_response(mask, request_id);
                            self.mark_dirty(slot);
                        }
                        // Auth again, or a side protocol we do not speak
                        // (e.g. payment channels): refuse it so the peer
                        // does not think it was applied.
                        None => {
                            let why: &[u8] = if primary_is_auth {
                                b"already authenticated"
                            } else {
                                b"unsupported protocol"
                            };
                            c.put_btp_error(
                                mask,
                                request_id,
                                &btp::ERR_NOT_ACCEPTED,
                                why,
                                now.unix_ms,
                            );
                            self.mark_dirty(slot);
                        }
                    },
                    BtpType::Response => {
                        let Some(o) = c.outstanding.remove(&request_id) else {
                            // RFC 23 "Flow": unknown request ids get no reply.
                            return;
                        };
                        match ilp {
                            Some(r) => {
                                payload.advance(r.start);
                                payload.truncate(r.len());
                                self.reply_to_origin(o, account, payload, now);
                            }
                            None => self.fail(
                                o,
                                ErrorCode::T01_PEER_UNREACHABLE,
                                Cow::Borrowed("peer answered without an ILP packet"),
                                now,
                            ),
                        }
                    }
                    BtpType::Error => {
                        let Some(o) = c.outstanding.remove(&request_id) else {
                            return;
                        };
                        let msg = format!("peer sent BTP error {}", btp_error_text(&payload));
                        // RFC 23 "Error Codes"; docs/design.md "Carrying ILP over BTP":
                        // a final (F..) BTP error becomes F00 so the sender does not
                        // retry it; others stay T01.
                        let final_error =
                            Btp::new_checked(&payload[..]).is_ok_and(|v| v.error_code()[0] == b'F');
                        let code = if final_error {
                            ErrorCode::F00_BAD_REQUEST
                        } else {
                            ErrorCode::T01_PEER_UNREACHABLE
                        };
                        self.fail(o, code, Cow::Owned(msg), now);
                    }
                    BtpType::Transfer => {
                        c.put_btp_error(
                            mask,
                            request_id,
                            &btp::ERR_NOT_ACCEPTED,
                            b"BTP Transfer not supported",
                            now.unix_ms,
                        );
                        self.mark_dirty(slot);
                    }
                }
            }
            _ => {}
        }
    }

    /// Server: the first BTP packet must be the auth Message (RFC 23 "Authentication");
    /// a wrong or missing token gets BTP Error F00 NotAcceptedError and the
    /// connection is closed, nothing else is processed. The token is
    /// compared in constant time by the core and never logged.
    fn server_auth(&mut self, slot: usize, payload: BytesMut, now: Now) {
        let mask = self.mask();
        let (request_id, account) = match Btp::new_checked(&payload[..]) {
            Ok(v) => {
                let id = v.request_id();
                match btp::parse_auth(&v) {
                    // ilp-plugin-btp sends `auth_username` = "" when its URL
                    // has no user: treat that as no username (docs/design.md "BTP auth").
                    Ok(a) => (
                        id,
                        self.shared
                            .authenticate(a.username.filter(|u| !u.is_empty()), a.token),
                    ),
                    Err(_) => (id, None),
                }
            }
            Err(_) => (0, None),
        };
        let Some(c) = self.conn(slot) else { return };
        match account {
            Some(acct) => {
                c.account = Some(acct);
                c.put_empty_response(mask, request_id);
                self.established(slot);
                self.mark_dirty(slot);
            }
            None => {
                c.put_btp_error(
                    mask,
                    request_id,
                    &btp::ERR_NOT_ACCEPTED,
                    b"invalid auth",
                    now.unix_ms,
                );
                if let Ok(peer) = c.stream.peer_addr() {
                    self.io.auth_throttle.failed(peer.ip(), now.unix_ms);
                }
                self.io.metrics[self.id]
                    .auth_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.close(slot, CloseReason::AuthFailed, "BTP auth refused", now);
            }
        }
    }

    fn established(&mut self, slot: usize) {
        let Some(c) = self.conn(slot) else { return };
        let Some(acct) = c.account else { return };
        c.state = State::Established;
        if let Some(a) = &mut c.admission {
            a.authenticated();
        }
        let client = c.client_slot;
        self.handshaking = self.handshaking.saturating_sub(1);
        if let Some(list) = self.by_account.get_mut(acct.0 as usize) {
            list.push(slot);
        }
        self.io
            .connection_count(acct, self.id)
            .fetch_add(1, Ordering::AcqRel);
        self.io.metrics[self.id]
            .open
            .fetch_add(1, Ordering::Relaxed);
        self.shared.connection_opened(acct);
        let name = &self.shared.account_config(acct).id;
        if let Some(cs) = client.and_then(|i| self.clients.get_mut(i)) {
            cs.backoff.reset();
            info!(worker = self.id, account = %name, "BTP client connected");
        } else {
            debug!(worker = self.id, account = %name, "BTP peer authenticated");
        }
    }

    /// While draining, new Prepares are refused with T03 so in-flight ones
    /// can finish.
    fn reject_shutting_down(&mut self, slot: usize, request_id: u32, mask: [u8; 4]) {
        let addr = self.shared.node_address().as_bytes().to_vec();
        let reject = RejectBuilder {
            code: ErrorCode::T03_CONNECTOR_BUSY,
            triggered_by: &addr,
            message: b"shutting down",
            data: b"",
        }
        .build();
        if let Some(c) = self.conn(slot) {
            c.put_ilp_response(mask, request_id, &reject);
        }
        self.mark_dirty(slot);
    }

    fn reply_to_origin(&mut self, o: Outstanding, from: AccountId, packet: BytesMut, now: Now) {
        if o.origin as usize == self.id {
            self.core
                .on_reply(now, from, o.out_id, packet, &mut self.actions);
        } else {
            self.outbox.answer(
                o.origin as usize,
                Handoff::Reply {
                    from,
                    out_id: o.out_id,
                    packet,
                },
            );
        }
    }

    // ------------------------------------------------------------ writing

    /// Carries out the core's actions (and any they cause).
    fn dispatch(&mut self, now: Now) {
        while !self.actions.is_empty() || !self.http_events.is_empty() {
            if !self.http_events.is_empty() {
                self.apply_http_events(now);
            }
            let mut acts =
                std::mem::replace(&mut self.actions, std::mem::take(&mut self.spare_actions));
            for a in acts.drain(..) {
                match a {
                    Action::Forward { to, out_id, packet } => self.forward(to, out_id, packet, now),
                    Action::Reply { to, packet } if http::owns(&to) => {
                        self.http.reply(to, packet, now, &mut self.http_events)
                    }
                    Action::Reply { to, packet } => self.reply(to, &packet),
                }
            }
            self.spare_actions = acts;
        }
    }

    fn reply(&mut self, to: ReplyTo, packet: &[u8]) {
        let slot = (to.conn & 0xffff_ffff) as usize;
        let gen = (to.conn >> 32) as u32;
        let mask = self.mask();
        if !self.btpi_waiting.is_empty() {
            if let Some(key) = self.btpi_waiting.remove(&(to.conn, to.request_id)) {
                // BTP/2.0-I: remembered, so a repeat gets this same answer.
                self.http
                    .idempotency()
                    .finish(key, Bytes::copy_from_slice(packet));
            }
        }
        match self.slots.get_mut(slot) {
            Some(Slot {
                gen: g,
                conn: Some(c),
            }) if *g == gen => {
                c.put_ilp_response(mask, to.request_id, packet);
                self.mark_dirty(slot);
            }
            _ => {
                self.io.metrics[self.id]
                    .replies_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends a Forward on a connection of this worker if there is one, else
    /// hands it to a worker that has one, else fails it with T01.
    fn forward(&mut self, to: AccountId, out_id: OutId, packet: BytesMut, now: Now) {
        // HTTP links leave from this worker's own pool.
        if self.http.is_http_account(to) {
            self.http
                .forward(to, out_id, packet, now, &mut self.http_events);
            return;
        }
        if let Some(slot) = self.pick_local(to) {
            self.send_forward(slot, self.id as u16, out_id, &packet);
            return;
        }
        if let Some(w) = self.pick_remote(to) {
            let item = Handoff::Forward {
                origin: self.id as u16,
                to,
                out_id,
                packet,
            };
            if self.outbox.forward(w, item).is_err() {
                self.io.metrics[self.id]
                    .handoff_refused
                    .fetch_add(1, Ordering::Relaxed);
                self.core.on_forward_failed(
                    now,
                    out_id,
                    ErrorCode::T03_CONNECTOR_BUSY,
                    "cross-worker queue full",
                    &mut self.actions,
                );
            }
            return;
        }
        self.core.on_forward_failed(
            now,
            out_id,
            ErrorCode::T01_PEER_UNREACHABLE,
            "peer not connected",
            &mut self.actions,
        );
    }

    fn pick_local(&mut self, to: AccountId) -> Option<usize> {
        let list = self.by_account.get(to.0 as usize)?;
        if list.is_empty() {
            return None;
        }
        // Round-robin, skipping connections whose output is over the limit
        // (a slow link) while another one can take the packet.
        let start = self.rr_local[to.0 as usize];
        let limit = self.knobs.write_buffer_limit;
        let n = list.len();
        let pick = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| {
                self.slots[list[i]]
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.wbuf.len() <= limit)
            })
            .unwrap_or(start % n);
        self.rr_local[to.0 as usize] = pick + 1;
        Some(list[pick])
    }

    fn pick_remote(&mut self, to: AccountId) -> Option<usize> {
        let n = self.io.workers;
        let start = self.rr_remote.get(to.0 as usize).copied()?;
        for k in 0..n {
            let w = (start + k) % n;
            if w != self.id && self.io.connection_count(to, w).load(Ordering::Acquire) > 0 {
                self.rr_remote[to.0 as usize] = w + 1;
                return Some(w);
            }
        }
        None
    }

    fn send_forward(&mut self, slot: usize, origin: u16, out_id: OutId, packet: &[u8]) {
        let mask = self.mask();
        let epoch = self.sweep_epoch;
        let gen = self.slots.get(slot).map_or(0, |s| s.gen);
        let Some(c) = self.conn(slot) else { return };
        let id = c.take_request_id();
        c.outstanding.insert(
            id,
            Outstanding {
                origin,
                epoch,
                out_id,
            },
        );
        c.put_ilp_message(mask, id, packet);
        let account = c.account;
        self.mark_dirty(slot);
        if account.is_some_and(|a| self.http.link_of(a) == LinkKind::BtpI) {
            // BTP/2.0-I: repeated until answered (docs/design.md "Node-roles links").
            let due = self.now().unix_ms + BTPI_RESEND_MS;
            self.btpi_resend
                .push_back((due, slot, gen, id, Bytes::copy_from_slice(packet)));
        }
    }

    /// BTP/2.0-I responder: is this request new? A repeat is never given to
    /// the core again; if answered, it gets the remembered answer.
    fn btpi_begin(
        &mut self,
        slot: usize,
        from: ReplyTo,
        packet: &[u8],
        mask: [u8; 4],
        now: Now,
    ) -> bool {
        let key = Key::btp(from.account, from.request_id);
        let fp = fingerprint(packet);
        match self.http.idempotency().begin_with(key, fp, now.unix_ms) {
            Begin::New => {
                self.btpi_waiting.insert((from.conn, from.request_id), key);
                true
            }
            // Its answer is on the way.
            Begin::InFlight => false,
            Begin::Answered(reply) => {
                if let Some(c) = self.conn(slot) {
                    c.put_ilp_response(mask, from.request_id, &reply);
                }
                self.mark_dirty(slot);
                false
            }
            busy @ (Begin::Full | Begin::Conflict) => {
                let addr = self.shared.node_address().as_bytes().to_vec();
                let reject = RejectBuilder {
                    code: ErrorCode::T03_CONNECTOR_BUSY,
                    triggered_by: &addr,
                    message: if busy == Begin::Full {
                        b"too many requests remembered"
                    } else {
                        b"request id in use for another packet"
                    },
                    data: b"",
                }
                .build();
                if let Some(c) = self.conn(slot) {
                    c.put_ilp_response(mask, from.request_id, &reject);
                }
                self.mark_dirty(slot);
                false
            }
        }
    }

    /// BTP/2.0-I requester: sends again every Forward still unanswered on
    /// its connection, with the same request id.
    fn btpi_resend_due(&mut self, now: Now) {
        while self.btpi_resend.front().is_some_and(|r| r.0 <= now.unix_ms) {
            let Some((_, slot, gen, id, packet)) = self.btpi_resend.pop_front() else {
                break;
            };
            let mask = self.mask();
            let Some(Slot {
                gen: g,
                conn: Some(c),
            }) = self.slots.get_mut(slot)
            else {
                continue;
            };
            if *g != gen || !c.outstanding.contains_key(&id) {
                continue;
            }
            c.put_ilp_message(mask, id, &packet);
            self.mark_dirty(slot);
            self.btpi_resend
                .push_back((now.unix_ms + BTPI_RESEND_MS, slot, gen, id, packet));
        }
    }

    /// Carries out what the HTTP links reported (and what the core answers).
    fn apply_http(&mut self, now: Now) {
        if !self.http_events.is_empty() {
            self.dispatch(now);
        }
    }

    fn apply_http_events(&mut self, now: Now) {
        let mut evs = std::mem::take(&mut self.http_events);
        for e in evs.drain(..) {
            match e {
                http::Event::Prepare { from, packet } => {
                    self.stats.messages += 1;
                    if self.draining {
                        let addr = self.shared.node_address().as_bytes().to_vec();
                        let reject = RejectBuilder {
                            code: ErrorCode::T03_CONNECTOR_BUSY,
                            triggered_by: &addr,
                            message: b"shutting down",
                            data: b"",
                        }
                        .build();
                        self.http.reply(from, reject, now, &mut self.http_events);
                    } else {
                        self.core.on_prepare(now, from, packet, &mut self.actions);
                    }
                }
                http::Event::Reply {
                    origin,
                    out_id,
                    from,
                    packet,
                } => {
                    if origin as usize == self.id {
                        self.core
                            .on_reply(now, from, out_id, packet, &mut self.actions);
                    } else {
                        self.outbox.answer(
                            origin as usize,
                            Handoff::Reply {
                                from,
                                out_id,
                                packet,
                            },
                        );
                    }
                }
                http::Event::Failed {
                    out_id,
                    code,
                    message,
                } => self
                    .core
                    .on_forward_failed(now, out_id, code, &message, &mut self.actions),
            }
        }
        if self.http_events.is_empty() {
            self.http_events = evs;
        }
    }

    fn drain_handoffs(&mut self, now: Now) {
        while let Ok(item) = self.rx.try_recv() {
            match item {
                Handoff::Forward {
                    origin,
                    to,
                    out_id,
                    packet,
                } => match self.pick_local(to) {
                    Some(slot) => self.send_forward(slot, origin, out_id, &packet),
                    None => self.fail(
                        Outstanding {
                            origin,
                            epoch: 0,
                            out_id,
                        },
                        ErrorCode::T01_PEER_UNREACHABLE,
                        Cow::Borrowed("peer not connected"),
                        now,
                    ),
                },
                Handoff::Reply {
                    from,
                    out_id,
                    packet,
                } => self
                    .core
                    .on_reply(now, from, out_id, packet, &mut self.actions),
                Handoff::Failed {
                    out_id,
                    code,
                    message,
                } => self
                    .core
                    .on_forward_failed(now, out_id, code, &message, &mut self.actions),
            }
            if self.actions.len() >= 256 {
                self.dispatch(now);
            }
        }
        self.dispatch(now);
    }

    // ------------------------------------------------------------ timers

    fn check_handshakes(&mut self, now: Now) {
        if self.handshaking == 0 || now.unix_ms < self.next_handshake_scan_ms {
            return;
        }
        self.next_handshake_scan_ms = now.unix_ms + HANDSHAKE_SCAN_MS;
        let late: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let c = s.conn.as_ref()?;
                (!c.is_established() && c.deadline_ms <= now.unix_ms).then_some(i)
            })
            .collect();
        for slot in late {
            self.io.metrics[self.id]
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            self.close(
                slot,
                CloseReason::HandshakeTimeout,
                "handshake not finished in time",
                now,
            );
        }
        if !self.actions.is_empty() {
            self.dispatch(now);
        }
    }

    /// Once per longest hold time (plus a second), forgets Forwards whose
    /// answer never came: their origin Core has long expired them.
    fn sweep_outstanding(&mut self, now: Now) {
        if now.unix_ms < self.next_sweep_ms {
            return;
        }
        let first = self.next_sweep_ms == 0;
        self.next_sweep_ms = now.unix_ms + self.knobs.max_hold_ms.saturating_add(1_000);
        if first {
            return;
        }
        self.sweep_epoch = self.sweep_epoch.wrapping_add(1);
        let current = self.sweep_epoch;
        for s in &mut self.slots {
            if let Some(c) = s.conn.as_mut() {
                c.sweep_outstanding(current);
            }
        }
    }

    fn dial_due(&mut self, now: Now) {
        if self.draining {
            return;
        }
        for i in 0..self.clients.len() {
            let due = self.clients[i].conn.is_none()
                && self.clients[i]
                    .next_attempt_ms
                    .is_some_and(|t| t <= now.unix_ms);
            if !due {
                continue;
            }
            let c = &mut self.clients[i];
            if c.dormant && self.io.account_connections(c.account) > 0 {
                c.next_attempt_ms = Some(now.unix_ms + c.backoff.next_delay());
                continue;
            }
            c.dormant = false;
            self.dial(i, now);
        }
    }

    fn dial(&mut self, i: usize, now: Now) {
        let account = self.clients[i].account;
        let stream = self.clients[i].url.resolve().and_then(TcpStream::connect);
        match stream {
            Ok(stream) => {
                self.set_socket_options(&stream);
                let deadline = now.unix_ms + self.knobs.handshake_timeout_ms;
                let mut conn = Conn::new(
                    stream,
                    Role::Client,
                    State::Connecting,
                    self.knobs.max_message,
                    deadline,
                );
                conn.account = Some(account);
                conn.client_slot = Some(i);
                conn.next_request_id = self.random() as u32;
                self.clients[i].next_attempt_ms = None;
                match self.insert(conn) {
                    Some(slot) => self.clients[i].conn = Some(slot),
                    None => self.schedule_redial(i, "cannot register socket", now),
                }
            }
            Err(e) => self.schedule_redial(i, &format!("connect: {e}"), now),
        }
    }

    fn schedule_redial(&mut self, i: usize, cause: &str, now: Now) {
        let c = &mut self.clients[i];
        let delay = c.backoff.next_delay();
        c.next_attempt_ms = Some(now.unix_ms + delay);
        self.io.metrics[self.id].closed[CloseReason::ConnectFailed.index()]
            .fetch_add(1, Ordering::Relaxed);
        let name = &self.shared.account_config(c.account).id;
        warn!(worker = self.id, account = %name, "BTP client connection failed: {cause}; reconnecting in {delay} ms");
    }

    // ------------------------------------------------------------ shutdown

    /// SIGINT/SIGTERM: stop accepting and dialling; established connections
    /// keep serving answers for packets in flight; new Prepares get T03.
    fn start_drain(&mut self, now: Now) {
        self.draining = true;
        self.http.start_drain();
        self.drain_deadline_ms = now.unix_ms + self.knobs.shutdown_grace_ms;
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        for c in &mut self.clients {
            c.next_attempt_ms = None;
        }
        self.io.drain_seen[self.id].store(true, Ordering::Release);
        info!(
            worker = self.id,
            in_flight = self.core.in_flight(),
            "draining"
        );
    }

    /// Done when every worker has seen the shutdown and no worker has a
    /// packet in flight, or the grace period has passed.
    fn drain_done(&self, now: Now) -> bool {
        if now.unix_ms >= self.drain_deadline_ms {
            return true;
        }
        let all_seen = self.io.drain_seen.iter().all(|s| s.load(Ordering::Acquire));
        let idle = self
            .io
            .in_flight
            .iter()
            .all(|n| n.load(Ordering::Acquire) == 0);
        all_seen && idle && self.core.journal_idle() && self.outbox.is_empty() && self.rx.is_empty()
    }

    fn close_all(&mut self) {
        let now = self.now();
        // Prepares already in the sockets get an answer (T03, shutting
        // down) before the connections close; replies that arrived are
        // passed on.
        for slot in 0..self.slots.len() {
            for _ in 0..FINAL_READS {
                let readable = self.slots[slot]
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.is_established() && !c.read_paused);
                if !readable || !self.service(slot, now) {
                    break;
                }
            }
            if !self.actions.is_empty() {
                self.dispatch(now);
            }
        }
        self.http.read_all(now, &mut self.http_events);
        self.apply_http(now);
        self.core.flush(now, &mut self.actions);
        self.dispatch(now);
        self.journal_turn(now);
        self.flush_dirty(now);
        self.http.flush(now, &mut self.http_events);
        for slot in 0..self.slots.len() {
            let mask = self.mask();
            if let Some(c) = self.conn(slot) {
                if !matches!(
                    c.state,
                    State::HttpUpgrade | State::Connecting | State::WsHandshake { .. }
                ) {
                    c.put_close(mask, 1001, "shutting down");
                }
            }
            self.close(slot, CloseReason::Shutdown, "shutdown", now);
        }
        self.http.close_all(now, &mut self.http_events);
        self.http_events.clear();
        self.dispatch(now);
        // The last records (packets failed by the close); the syncer syncs
        // them before the ledger shuts down.
        self.journal_turn(now);
        self.outbox.end_turn();
        info!(
            worker = self.id,
            in_flight = self.core.in_flight(),
            "worker stopped"
        );
    }
}

/// `CODE Name: data` of a BTP Error, printable ASCII only, for logs and
/// reject messages.
fn btp_error_text(packet: &[u8]) -> String {
    let Ok(v) = Btp::new_checked(packet) else {
        return "(unreadable)".into();
    };
    let clean = |b: &[u8], max: usize| -> String {
        b.iter()
            .take(max)
            .map(|&c| {
                if (0x20..0x7f).contains(&c) {
                    c as char
                } else {
                    '?'
                }
            })
            .collect()
    };
    format!(
        "{} {}: {}",
        clean(&v.error_code(), 3),
        clean(v.error_name(), 64),
        clean(v.error_data(), 200)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_ids_pack_slot_and_generation() {
        let id = conn_id(7, 3);
        assert_eq!(((id & 0xffff_ffff) as usize, (id >> 32) as u32), (7, 3));
        assert_ne!(conn_id(7, 3), conn_id(7, 4), "a reused slot gets a new id");
        assert_eq!(token_of(0), Token(FIRST_CONN));
        assert_eq!(
            conn_id(u32::MAX as usize, u32::MAX) >> 62,
            0,
            "top bits stay free"
        );
    }

    #[test]
    fn btp_error_text_is_printable_and_bounded() {
        let mut b = Vec::new();
        btp::write_error(
            &mut b,
            1,
            b"T00",
            b"UnreachableError",
            b"20180831025324.899Z",
            b"oops\n\x00",
            &[],
        );
        assert_eq!(btp_error_text(&b), "T00 UnreachableError: oops??");
        let long = vec![b'x'; 5000];
        let mut b = Vec::new();
        btp::write_error(&mut b, 1, b"F00", b"NotAcceptedError", b"", &long, &[]);
        assert!(btp_error_text(&b).len() < 300);
        assert_eq!(btp_error_text(b"\x02garbage"), "(unreadable)");
    }
}

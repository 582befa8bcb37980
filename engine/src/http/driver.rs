//! The socket side of the HTTP links on one worker: an HTTP listener, the
//! server connections peers POST to, and a keep-alive client pool per
//! account (plus per callback origin for async replies). It lives in the
//! worker's mio `Poll` (tokens from [`TOKEN_BASE`] up) and hands what the
//! core must see back as [`Event`]s; the worker turns those into `Core`
//! calls and routes the core's actions for HTTP links back here.
//!
//! Every Forward leaves from the worker that received its Prepare (each
//! worker has its own pool), so no cross-worker handoff is needed on the way
//! out; an async reply POSTed to another worker is handed back (the request
//! id says which worker, see [`ReqId::ours`]).

use crate::io::accept_backoff::AcceptBackoff;
use crate::io::auth_throttle::AuthThrottle;
use crate::io::conn_limits::{self, Admission, ConnLimits};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use ilpd_codec::ilp::Prepare;
use ilpd_codec::ErrorCode;
use mio::event::Event as MioEvent;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use tracing::{debug, warn};

use super::client::{self, Extra, Outcome, Purpose};
use super::idempotency::{Begin, IdempotencyCache, Key};
use super::server::{Body, Kind, Next, Request, ServerConn};
use super::{Accounts, HttpUrl, LinkKind, ReqId};
use crate::core::{AccountId, Now, OutId, ReplyTo, Shared};

/// Tokens at or above this are HTTP connections (slot = token − base).
pub const TOKEN_BASE: usize = 1 << 40;
/// The HTTP listener's token.
pub const LISTENER: Token = Token(TOKEN_BASE - 1);

/// `ReplyTo::conn` tag: an HTTP server connection (slot, generation).
pub const TAG_CONN: u64 = 1 << 63;
/// `ReplyTo::conn` tag: a reply we owe in its own request (async links).
pub const TAG_OWED: u64 = 1 << 62;
const TAG_MASK: u64 = TAG_CONN | TAG_OWED;

const READ_CHUNK: usize = 64 * 1024;
const MIN_SPARE: usize = 4 * 1024;
/// How often timeouts are checked while HTTP connections exist.
const SCAN_MS: u64 = 100;
/// First retry delay on idempotent links; doubles up to [`RETRY_MAX_MS`].
const RETRY_FIRST_MS: u64 = 50;
const RETRY_MAX_MS: u64 = 1_000;
/// How long we keep POSTing a reply we owe.
const REPLY_POST_MS: u64 = 30_000;
/// A client connection whose oldest request has waited this long is not
/// pipelined onto (see [`HttpDriver::room`]).
const STALL_MS: u64 = 100;
/// Connections a pool may open beyond `http_connections` while its
/// connections are stalled, as a multiple of it.
const BURST_FACTOR: usize = 16;
/// An idle client connection is closed after this long.
const CLIENT_IDLE_MS: u64 = 60_000;

/// Where a request goes next (see [`HttpDriver::room`]).
enum Room {
    Conn(usize),
    Dial,
    Wait,
}

/// Is this `ReplyTo` one of ours?
pub fn owns(to: &ReplyTo) -> bool {
    to.conn & TAG_MASK != 0
}

/// Per-account HTTP link settings (from the account's config).
#[derive(Debug, Clone)]
pub struct AccountLink {
    pub name: String,
    pub link: LinkKind,
    /// Where we POST (none: the peer only POSTs to us).
    pub url: Option<HttpUrl>,
    /// Bearer token we present.
    pub token: Vec<u8>,
    /// Keep-alive connections per worker.
    pub connections: usize,
    /// Requests in flight per connection (1 = no pipelining).
    pub pipeline: usize,
    /// A connection whose oldest request has had no response this long is
    /// closed (its requests fail with T01, or are repeated on idempotent links).
    pub timeout_ms: u64,
}

impl AccountLink {
    /// From an account's (validated) config; `Err` names the bad key.
    pub fn from_config(a: &crate::config::AccountConfig) -> Result<AccountLink, String> {
        let url = match (&a.http_url, a.link.is_http()) {
            (Some(u), true) => Some(HttpUrl::parse(u).map_err(|e| format!("http_url: {e}"))?),
            _ => None,
        };
        Ok(AccountLink {
            name: a.id.clone(),
            link: a.link,
            url,
            token: a.outgoing_token.clone().unwrap_or_default().into_bytes(),
            connections: a.http_connections,
            pipeline: a.http_pipeline,
            timeout_ms: a.http_timeout_ms,
        })
    }
}

/// Node-wide knobs.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub max_body: usize,
    /// A request head or body that has not fully arrived this long after
    /// its first byte: `408` and close (slow clients).
    pub header_timeout_ms: u64,
    /// A server connection with nothing outstanding and silent this long
    /// is closed (`node.http_idle_timeout_ms`).
    pub idle_timeout_ms: u64,
    /// Failed auth per source IP, shared with the BTP listeners.
    pub auth_throttle: Arc<AuthThrottle>,
    /// Caps on accepted connections (shared with the BTP listeners).
    pub conn_limits: Arc<ConnLimits>,
    pub write_buffer_limit: usize,
    /// `Callback-Url` we send on `http-async` links.
    pub callback_url: Option<String>,
    pub reconnect_initial_ms: u64,
    pub socket_send_buffer: Option<usize>,
    pub socket_recv_buffer: Option<usize>,
    pub workers: usize,
}

/// What the worker must do with the core.
#[derive(Debug)]
pub enum Event {
    /// `Core::on_prepare(from, packet)`.
    Prepare { from: ReplyTo, packet: BytesMut },
    /// `Core::on_reply` on worker `origin` (this one or another: hand it over).
    Reply {
        origin: u16,
        out_id: OutId,
        from: AccountId,
        packet: BytesMut,
    },
    /// `Core::on_forward_failed` on this worker.
    Failed {
        out_id: OutId,
        code: ErrorCode,
        message: String,
    },
}

/// IO counters of the HTTP side (published by the worker).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub accepted: u64,
    pub requests: u64,
    pub refused: u64,
    pub replies_dropped: u64,
    pub duplicates: u64,
    pub retries: u64,
    pub connect_failures: u64,
    /// Connections closed at accept: their address failed auth too often.
    pub throttled: u64,
}

struct Shim<'a> {
    shared: &'a Shared,
    accounts: &'a [AccountLink],
}

impl Accounts for Shim<'_> {
    fn authenticate(&self, token: &[u8]) -> Option<AccountId> {
        self.shared.authenticate(None, token)
    }
    fn name(&self, id: AccountId) -> &str {
        self.accounts
            .get(id.0 as usize)
            .map(|a| a.name.as_str())
            .unwrap_or("")
    }
    fn link(&self, id: AccountId) -> LinkKind {
        self.accounts
            .get(id.0 as usize)
            .map(|a| a.link)
            .unwrap_or_default()
    }
    fn spsp(&self) -> Option<&dyn super::Spsp> {
        Some(self.shared)
    }
}

/// A request we sent and wait for the response of.
#[derive(Debug)]
struct ClientReq {
    purpose: Purpose,
    sent_ms: u64,
    /// Give up after this (the Prepare's expiry, or the reply POST window).
    deadline_ms: u64,
    attempt: u32,
    what: What,
}

#[derive(Debug)]
enum What {
    Forward {
        out_id: OutId,
        account: AccountId,
        /// The request id's nonce on links that carry one ([`ReqId::ours`]).
        nonce: Option<u64>,
        /// Kept only on idempotent links, to repeat it (shared, not copied).
        packet: Option<Bytes>,
    },
    ReplyPost {
        path: String,
        id: ReqId,
        header_id: bool,
        packet: Bytes,
    },
}

enum Role {
    Server(ServerConn),
    Client {
        pool: usize,
        connecting: bool,
        inflight: VecDeque<ClientReq>,
        /// The peer said `Connection: close`: nothing more is sent.
        no_more: bool,
    },
}

struct HConn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    role: Role,
    in_ready: bool,
    in_dirty: bool,
    eof: bool,
    /// Server: since when a request has been arriving (first byte seen).
    partial_since_ms: Option<u64>,
    last_active_ms: u64,
    /// Server side: its place under the connection caps, released on drop;
    /// authenticated by its first request with a valid token.
    admission: Option<Admission>,
}

struct Slot {
    gen: u32,
    conn: Option<HConn>,
}

/// A keep-alive pool to one origin.
struct Pool {
    account: AccountId,
    url: HttpUrl,
    host: String,
    token: Vec<u8>,
    /// `POST <path> …Content-Length: ` for plain Forwards.
    prefix: Vec<u8>,
    link: LinkKind,
    conns: Vec<usize>,
    max_conns: usize,
    pipeline: usize,
    timeout_ms: u64,
    backoff: crate::io::client::Backoff,
    down_until_ms: u64,
    last_error: String,
    /// Requests waiting for room on a connection.
    waiting: VecDeque<(ClientReq, Bytes)>,
}

/// A reply we owe in its own request (RFC 35 async, HTTP-OER-ASYNC).
#[derive(Debug, Clone)]
enum Owed {
    Callback { url: HttpUrl, id: ReqId },
    Oer { id: ReqId, key: Key },
}

struct OwedSlot {
    gen: u32,
    owed: Option<(AccountId, Owed)>,
}

pub struct HttpDriver {
    worker: u16,
    cfg: DriverConfig,
    accounts: Vec<AccountLink>,
    shared: Arc<Shared>,
    cache: Arc<IdempotencyCache>,
    registry: Registry,
    listener: Option<TcpListener>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    ready: Vec<usize>,
    dirty: Vec<usize>,
    pools: Vec<Pool>,
    pool_by_account: Vec<Option<usize>>,
    pool_by_origin: HashMap<(AccountId, String, u16), usize>,
    owed: Vec<OwedSlot>,
    owed_free: Vec<usize>,
    /// Idempotent sync requests waiting for the core: (conn tag, seq) → key.
    idem_waiting: HashMap<(u64, u32), Key>,
    /// Requests to repeat: (due unix ms, pool, request, body).
    retries: Vec<(u64, usize, ClientReq, Bytes)>,
    rng: u64,
    next_scan_ms: u64,
    draining: bool,
    /// A failed `accept` (EMFILE…) is retried on a timer.
    accept_backoff: AcceptBackoff,
    pub counters: Counters,
}

fn conn_tag(slot: usize, gen: u32) -> u64 {
    TAG_CONN | ((gen & 0x3fff_ffff) as u64) << 32 | slot as u64
}

impl HttpDriver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        worker: usize,
        cfg: DriverConfig,
        accounts: Vec<AccountLink>,
        shared: Arc<Shared>,
        cache: Arc<IdempotencyCache>,
        registry: Registry,
        mut listener: Option<TcpListener>,
        seed: u64,
    ) -> io::Result<HttpDriver> {
        if let Some(l) = listener.as_mut() {
            registry.register(l, LISTENER, Interest::READABLE)?;
        }
        let mut d = HttpDriver {
            registry,
            worker: worker as u16,
            cfg,
            pool_by_account: vec![None; accounts.len()],
            accounts,
            shared,
            cache,
            listener,
            slots: Vec::new(),
            free: Vec::new(),
            ready: Vec::new(),
            dirty: Vec::new(),
            pools: Vec::new(),
            pool_by_origin: HashMap::new(),
            owed: Vec::new(),
            owed_free: Vec::new(),
            idem_waiting: HashMap::new(),
            retries: Vec::new(),
            rng: seed | 1,
            next_scan_ms: 0,
            draining: false,
            accept_backoff: AcceptBackoff::default(),
            counters: Counters::default(),
        };
        for i in 0..d.accounts.len() {
            let a = &d.accounts[i];
            if !a.link.is_http() {
                continue;
            }
            if let Some(url) = a.url.clone() {
                let p = d.new_pool(AccountId(i as u32), url);
                d.pool_by_account[i] = Some(p);
            }
        }
        Ok(d)
    }

    fn new_pool(&mut self, account: AccountId, url: HttpUrl) -> usize {
        let a = &self.accounts[account.0 as usize];
        let host = url.host_header();
        let prefix = client::request_prefix(&host, &url.path, &a.token);
        self.pools.push(Pool {
            account,
            prefix,
            host,
            url,
            token: a.token.clone(),
            link: a.link,
            conns: Vec::new(),
            max_conns: a.connections.max(1),
            pipeline: a.pipeline.max(1),
            timeout_ms: a.timeout_ms.max(1),
            backoff: crate::io::client::Backoff::new(self.cfg.reconnect_initial_ms),
            down_until_ms: 0,
            last_error: String::new(),
            waiting: VecDeque::new(),
        });
        self.pools.len() - 1
    }

    /// Accounts this worker can send to over HTTP (the worker reports them
    /// connected to the core once at start).
    pub fn outgoing_accounts(&self) -> Vec<AccountId> {
        self.pool_by_account
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_some())
            .map(|(i, _)| AccountId(i as u32))
            .collect()
    }

    /// The link account `id` speaks.
    pub fn link_of(&self, id: AccountId) -> LinkKind {
        self.accounts
            .get(id.0 as usize)
            .map(|a| a.link)
            .unwrap_or_default()
    }

    /// The node-wide memory of idempotent requests (BTP/2.0-I uses it too).
    pub fn idempotency(&self) -> &IdempotencyCache {
        &self.cache
    }

    /// Does a Forward to `to` go over HTTP?
    pub fn is_http_account(&self, to: AccountId) -> bool {
        self.accounts
            .get(to.0 as usize)
            .is_some_and(|a| a.link.is_http())
    }

    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn conn(&mut self, slot: usize) -> Option<&mut HConn> {
        self.slots.get_mut(slot).and_then(|s| s.conn.as_mut())
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

    fn set_socket_options(&self, stream: &TcpStream) {
        let _ = stream.set_nodelay(true);
        let sock = socket2::SockRef::from(stream);
        if let Some(n) = self.cfg.socket_send_buffer {
            let _ = sock.set_send_buffer_size(n);
        }
        if let Some(n) = self.cfg.socket_recv_buffer {
            let _ = sock.set_recv_buffer_size(n);
        }
    }

    fn insert(&mut self, mut conn: HConn) -> Option<usize> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot { gen: 0, conn: None });
                self.slots.len() - 1
            }
        };
        if let Err(e) = self.registry.register(
            &mut conn.stream,
            Token(TOKEN_BASE + slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!(worker = self.worker, "cannot register HTTP connection: {e}");
            self.free.push(slot);
            return None;
        }
        self.slots[slot].conn = Some(conn);
        Some(slot)
    }

    // ------------------------------------------------------------ events

    /// A mio event for one of our tokens.
    pub fn on_event(&mut self, ev: &MioEvent, now: Now, out: &mut Vec<Event>) {
        if ev.token() == LISTENER {
            self.accept(now);
            return;
        }
        let slot = ev.token().0 - TOKEN_BASE;
        let Some(c) = self.conn(slot) else { return };
        if let Role::Client {
            connecting: true, ..
        } = c.role
        {
            if !(ev.is_writable() || ev.is_error() || ev.is_read_closed() || ev.is_write_closed()) {
                return;
            }
            let result = match c.stream.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => match c.stream.peer_addr() {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(true) => {
                    if let Role::Client {
                        connecting, pool, ..
                    } = &mut c.role
                    {
                        *connecting = false;
                        let p = *pool;
                        if let Some(pool) = self.pools.get_mut(p) {
                            pool.backoff.reset();
                            pool.down_until_ms = 0;
                        }
                    }
                    self.mark_dirty(slot);
                    self.mark_ready(slot);
                }
                Ok(false) => {}
                Err(e) => self.close(slot, &format!("connect: {e}"), true, now, out),
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

    fn accept(&mut self, now: Now) {
        loop {
            let Some(l) = self.listener.as_ref() else {
                return;
            };
            match l.accept() {
                Ok((stream, peer)) if self.cfg.auth_throttle.blocked(peer.ip(), now.unix_ms) => {
                    drop(stream);
                    self.counters.throttled += 1;
                }
                Ok((stream, peer)) => {
                    let admission = match self.cfg.conn_limits.admit(peer.ip()) {
                        Ok(a) => a,
                        Err(cap) => {
                            drop(stream);
                            conn_limits::log_refusal(&self.cfg.conn_limits, cap, peer, "HTTP");
                            continue;
                        }
                    };
                    self.set_socket_options(&stream);
                    let conn = HConn {
                        stream,
                        rbuf: BytesMut::new(),
                        wbuf: BytesMut::new(),
                        role: Role::Server(ServerConn::new(self.cfg.max_body)),
                        in_ready: false,
                        in_dirty: false,
                        eof: false,
                        partial_since_ms: None,
                        last_active_ms: now.unix_ms,
                        admission: Some(admission),
                    };
                    if self.insert(conn).is_some() {
                        self.counters.accepted += 1;
                        debug!(worker = self.worker, %peer, "HTTP connection accepted");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.accept_backoff.ok();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: retry on a timer (io/accept_backoff.rs).
                    let n = self.accept_backoff.failed(now.unix_ms);
                    if n > 0 {
                        warn!(
                            worker = self.worker,
                            failures = n,
                            "HTTP accept failed: {e}; retrying"
                        );
                    }
                    return;
                }
            }
        }
    }

    // ------------------------------------------------------------ reading

    /// Reads every ready connection and handles what arrived.
    pub fn process(&mut self, now: Now, out: &mut Vec<Event>) {
        let list = std::mem::take(&mut self.ready);
        for slot in list {
            let Some(c) = self.conn(slot) else { continue };
            c.in_ready = false;
            self.service(slot, now, out);
        }
    }

    fn service(&mut self, slot: usize, now: Now, out: &mut Vec<Event>) {
        let limit = self.cfg.write_buffer_limit;
        let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) else {
            return;
        };
        if c.wbuf.len() > limit {
            // The peer is not reading its answers: stop reading its
            // requests until it does (the flush re-marks it ready).
            return;
        }
        let cap = (4 * self.cfg.max_body).max(256 * 1024);
        if !c.eof {
            match read_some(c, cap, &mut self.counters.bytes_in) {
                Ok(true) => c.eof = true,
                Ok(false) => {}
                Err(e) => {
                    self.close(slot, &format!("read: {e}"), false, now, out);
                    return;
                }
            }
        }
        c.last_active_ms = now.unix_ms;
        match c.role {
            Role::Server(_) => self.serve(slot, now, out),
            Role::Client { .. } => self.read_responses(slot, now, out),
        }
    }

    fn serve(&mut self, slot: usize, now: Now, out: &mut Vec<Event>) {
        let gen = self.slots[slot].gen;
        let tag = conn_tag(slot, gen);
        loop {
            let shim = Shim {
                shared: &self.shared,
                accounts: &self.accounts,
            };
            let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) else {
                return;
            };
            let Role::Server(sc) = &mut c.role else {
                return;
            };
            let before = c.wbuf.len();
            let next = sc.next(&mut c.rbuf, &shim, &mut c.wbuf);
            let wrote = c.wbuf.len() > before;
            let should_close = sc.should_close();
            // Complete requests waiting for room are not a slow client.
            let pipeline_full = sc.outstanding() >= sc.max_pipeline;
            let eof = c.eof;
            match next {
                Next::Request(req) => {
                    c.partial_since_ms = None;
                    if let Some(a) = &mut c.admission {
                        a.authenticated();
                    }
                    self.counters.requests += 1;
                    self.on_request(slot, tag, req, now, out);
                }
                Next::Blocked => {
                    if !c.rbuf.is_empty() && !pipeline_full {
                        c.partial_since_ms.get_or_insert(now.unix_ms);
                    } else {
                        c.partial_since_ms = None;
                    }
                    if wrote {
                        self.counters.refused += 1;
                        self.mark_dirty(slot);
                    }
                    if eof {
                        // The peer closed its side: answer what is pending,
                        // then close.
                        if let Some(Role::Server(sc)) = self.conn(slot).map(|c| &mut c.role) {
                            sc.close_after_pending();
                            if sc.should_close() {
                                self.close(slot, "peer closed", false, now, out);
                            }
                        }
                    }
                    return;
                }
                Next::Closing => {
                    if wrote {
                        self.counters.refused += 1;
                    }
                    if sc.take_auth_failed() {
                        if let Ok(peer) = c.stream.peer_addr() {
                            self.cfg.auth_throttle.failed(peer.ip(), now.unix_ms);
                        }
                    }
                    self.mark_dirty(slot);
                    if should_close && eof {
                        self.close(slot, "peer closed", false, now, out);
                    }
                    return;
                }
            }
        }
    }

    fn respond(&mut self, slot: usize, seq: u32, status: u16, body: Body) {
        let Some(c) = self.conn(slot) else { return };
        let Role::Server(sc) = &mut c.role else {
            return;
        };
        let was_full = sc.outstanding() >= sc.max_pipeline;
        sc.respond(seq, status, body, &mut c.wbuf);
        self.mark_dirty(slot);
        if was_full {
            self.mark_ready(slot);
        }
    }

    fn on_request(&mut self, slot: usize, tag: u64, req: Request, now: Now, out: &mut Vec<Event>) {
        let Request {
            seq,
            account,
            kind,
            body,
        } = req;
        let link = self
            .accounts
            .get(account.0 as usize)
            .map(|a| a.link)
            .unwrap_or_default();
        let sync_to = ReplyTo {
            account,
            conn: tag,
            request_id: seq,
        };
        match kind {
            Kind::Sync => out.push(Event::Prepare {
                from: sync_to,
                packet: body,
            }),
            Kind::Async {
                callback,
                request_id,
            } => {
                // RFC 35 "Send ILP Prepare": 202 at once, the reply follows as a POST.
                self.respond(slot, seq, 202, Body::Empty);
                let from = self.owe(
                    account,
                    Owed::Callback {
                        url: callback,
                        id: request_id,
                    },
                );
                out.push(Event::Prepare { from, packet: body });
            }
            Kind::Oer { request_id } => {
                let key = Key {
                    account,
                    id: request_id,
                };
                let is_async = link == LinkKind::HttpOerAsync;
                let fp = super::idempotency::fingerprint(&body);
                match self.cache.begin_with(key, fp, now.unix_ms) {
                    Begin::New if is_async => {
                        // HTTP-OER-ASYNC (docs/design.md "Node-roles links"):
                        // `200` = received; the reply is its own POST.
                        self.respond(slot, seq, 200, Body::Empty);
                        let from = self.owe(
                            account,
                            Owed::Oer {
                                id: request_id,
                                key,
                            },
                        );
                        out.push(Event::Prepare { from, packet: body });
                    }
                    Begin::New => {
                        self.idem_waiting.insert((tag, seq), key);
                        out.push(Event::Prepare {
                            from: sync_to,
                            packet: body,
                        });
                    }
                    Begin::InFlight => {
                        self.counters.duplicates += 1;
                        if is_async {
                            self.respond(slot, seq, 200, Body::Empty);
                        } else {
                            self.respond(
                                slot,
                                seq,
                                409,
                                Body::Text(
                                    "this request is still being processed; repeat it later\n",
                                ),
                            );
                        }
                    }
                    Begin::Answered(reply) => {
                        self.counters.duplicates += 1;
                        if is_async {
                            self.respond(slot, seq, 200, Body::Empty);
                            self.post_reply(
                                account,
                                Owed::Oer {
                                    id: request_id,
                                    key,
                                },
                                reply,
                                now,
                                out,
                            );
                        } else {
                            self.respond(slot, seq, 200, Body::Shared(reply));
                        }
                    }
                    Begin::Full => self.respond(
                        slot,
                        seq,
                        503,
                        Body::Text("too many requests remembered; repeat it later\n"),
                    ),
                    Begin::Conflict => self.respond(
                        slot,
                        seq,
                        409,
                        Body::Text("this request id is in use for another packet\n"),
                    ),
                }
            }
            Kind::Reply { request_id } => {
                // The id says which worker waits; the shared table says
                // whether it still does (whichever worker this reached).
                let known = match request_id.decode_ours() {
                    Some((w, out_id, nonce))
                        if (w as usize) < self.cfg.workers
                            && self.cache.waits.take(w, out_id, nonce, account) =>
                    {
                        out.push(Event::Reply {
                            origin: w,
                            out_id: OutId(out_id),
                            from: account,
                            packet: body,
                        });
                        true
                    }
                    _ => false,
                };
                if known {
                    self.respond(slot, seq, 200, Body::Empty);
                } else {
                    // RFC 35: 400 if the id is unknown or already answered.
                    self.counters.duplicates += 1;
                    self.respond(
                        slot,
                        seq,
                        400,
                        Body::Text("unknown or already answered request id\n"),
                    );
                }
            }
        }
    }

    fn owe(&mut self, account: AccountId, owed: Owed) -> ReplyTo {
        let idx = match self.owed_free.pop() {
            Some(i) => i,
            None => {
                self.owed.push(OwedSlot { gen: 0, owed: None });
                self.owed.len() - 1
            }
        };
        let s = &mut self.owed[idx];
        s.owed = Some((account, owed));
        ReplyTo {
            account,
            conn: TAG_OWED | idx as u64,
            request_id: s.gen,
        }
    }

    fn read_responses(&mut self, slot: usize, now: Now, out: &mut Vec<Event>) {
        loop {
            let max_body = self.cfg.max_body;
            let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) else {
                return;
            };
            let eof = c.eof;
            let Role::Client {
                pool,
                inflight,
                no_more,
                ..
            } = &mut c.role
            else {
                return;
            };
            let pool = *pool;
            if inflight.is_empty() {
                if !c.rbuf.is_empty() {
                    self.close(slot, "response without a request", false, now, out);
                } else if eof {
                    self.close(slot, "peer closed", false, now, out);
                }
                return;
            }
            match client::parse_response(&mut c.rbuf, max_body, eof) {
                Ok(Some(resp)) => {
                    let Some(req) = inflight.pop_front() else {
                        return;
                    };
                    if resp.close {
                        *no_more = true;
                    }
                    let done = *no_more && inflight.is_empty();
                    self.on_response(pool, req, resp.status, resp.body, now, out);
                    if done {
                        self.close(slot, "peer asked to close", false, now, out);
                        return;
                    }
                    self.pump(pool, now, out);
                }
                Ok(None) => {
                    if eof {
                        self.close(slot, "peer closed before answering", false, now, out);
                    }
                    return;
                }
                Err(e) => {
                    self.close(slot, &e, false, now, out);
                    return;
                }
            }
        }
    }

    fn on_response(
        &mut self,
        pool: usize,
        req: ClientReq,
        status: u16,
        body: BytesMut,
        now: Now,
        out: &mut Vec<Event>,
    ) {
        let name = self.pool_name(pool);
        if status != 200 && status != 202 {
            debug!(worker = self.worker, peer = %name, status, "HTTP peer answered");
        }
        match client::classify(req.purpose, status, body) {
            Outcome::Reply(packet) => {
                if let What::Forward {
                    out_id, account, ..
                } = req.what
                {
                    self.cache.waits.remove(self.worker, out_id.0);
                    out.push(Event::Reply {
                        origin: self.worker,
                        out_id,
                        from: account,
                        packet,
                    });
                }
            }
            Outcome::Accepted => {}
            Outcome::Retry(why) => self.retry_or_fail(pool, req, Bytes::new(), &why, 0, now, out),
            Outcome::Fail(code, why) => match req.what {
                What::Forward { out_id, .. } => {
                    self.cache.waits.remove(self.worker, out_id.0);
                    out.push(Event::Failed {
                        out_id,
                        code,
                        message: format!("http peer {name}: {why}"),
                    });
                }
                What::ReplyPost { .. } => {
                    debug!(worker = self.worker, peer = %name, "reply POST refused: {why}");
                }
            },
        }
    }

    fn pool_name(&self, pool: usize) -> String {
        self.pools
            .get(pool)
            .and_then(|p| self.accounts.get(p.account.0 as usize))
            .map(|a| a.name.clone())
            .unwrap_or_default()
    }

    // ------------------------------------------------------------ sending

    /// Sends a Forward to an HTTP account from this worker's pool.
    pub fn forward(
        &mut self,
        to: AccountId,
        out_id: OutId,
        packet: BytesMut,
        now: Now,
        out: &mut Vec<Event>,
    ) {
        let Some(pool) = self.pool_by_account.get(to.0 as usize).copied().flatten() else {
            out.push(Event::Failed {
                out_id,
                code: ErrorCode::T01_PEER_UNREACHABLE,
                message: "http peer has no http_url to send to".into(),
            });
            return;
        };
        let link = self.pools[pool].link;
        let deadline_ms = Prepare::new_checked(&packet[..])
            .map(|p| p.expires_at().0)
            .unwrap_or(now.unix_ms + REPLY_POST_MS);
        let nonce = match link {
            LinkKind::HttpAsync | LinkKind::HttpOerAsync | LinkKind::HttpOerSync => {
                let nonce = self.random();
                if link.is_async() {
                    self.cache.waits.insert(self.worker, out_id.0, nonce, to);
                }
                Some(nonce)
            }
            _ => None,
        };
        let body = packet.freeze();
        let keep = link.is_idempotent().then(|| body.clone());
        let req = ClientReq {
            purpose: Purpose::Prepare(link),
            sent_ms: now.unix_ms,
            deadline_ms,
            attempt: 0,
            what: What::Forward {
                out_id,
                account: to,
                nonce,
                packet: keep,
            },
        };
        self.send(pool, req, body, now, out);
    }

    fn pool_for_origin(&mut self, account: AccountId, url: &HttpUrl) -> usize {
        let key = (account, url.host.clone(), url.port);
        if let Some(&p) = self.pool_by_origin.get(&key) {
            return p;
        }
        let p = self.new_pool(account, url.clone());
        self.pools[p].link = LinkKind::Http;
        self.pool_by_origin.insert(key, p);
        p
    }

    /// Queues a reply we owe as its own POST (RFC 35 async callback, or
    /// HTTP-OER-ASYNC `/ilp/<id>`), repeated on 5xx until it is taken.
    fn post_reply(
        &mut self,
        account: AccountId,
        owed: Owed,
        reply: Bytes,
        now: Now,
        out: &mut Vec<Event>,
    ) {
        let (pool, path, id, header_id) = match owed {
            Owed::Callback { url, id } => {
                let p = self.pool_for_origin(account, &url);
                (p, url.path.clone(), id, true)
            }
            Owed::Oer { id, .. } => {
                let Some(p) = self
                    .pool_by_account
                    .get(account.0 as usize)
                    .copied()
                    .flatten()
                else {
                    debug!(
                        worker = self.worker,
                        "HTTP-OER-ASYNC reply for an account without http_url dropped"
                    );
                    self.counters.replies_dropped += 1;
                    return;
                };
                let path = self.pools[p].url.oer_path(&id);
                (p, path, id, false)
            }
        };
        let req = ClientReq {
            purpose: Purpose::Reply,
            sent_ms: now.unix_ms,
            deadline_ms: now.unix_ms + REPLY_POST_MS,
            attempt: 0,
            what: What::ReplyPost {
                path,
                id,
                header_id,
                packet: reply.clone(),
            },
        };
        self.send(pool, req, reply, now, out);
    }

    /// Puts a request on a connection of `pool` (dialling one if there is
    /// room), or queues it until one has room.
    fn send(&mut self, pool: usize, req: ClientReq, body: Bytes, now: Now, out: &mut Vec<Event>) {
        // Fast path: nothing queued and a connection with room.
        if self.pools[pool].waiting.is_empty() {
            if let Room::Conn(slot) = self.room(pool, now.unix_ms) {
                self.put(pool, slot, req, &body, now);
                return;
            }
        }
        self.pools[pool].waiting.push_back((req, body));
        self.pump(pool, now, out);
    }

    /// Where the next request of `pool` goes: the least loaded connection
    /// with room, unless a new connection should be opened instead (an idle
    /// one is taken at once; otherwise a new one while under `max_conns`).
    /// A connection whose oldest request has waited [`STALL_MS`] is not
    /// pipelined onto: a peer holding a Prepare until it is fulfilled would
    /// hold every response behind it (HTTP/1.1 answers in order), so more
    /// connections are opened instead, up to [`BURST_FACTOR`] × `max_conns`.
    fn room(&self, pool: usize, now_ms: u64) -> Room {
        let Some(p) = self.pools.get(pool) else {
            return Room::Wait;
        };
        let mut best: Option<(usize, usize)> = None;
        for &s in &p.conns {
            if let Some(HConn {
                role: Role::Client {
                    inflight, no_more, ..
                },
                ..
            }) = self.slots.get(s).and_then(|x| x.conn.as_ref())
            {
                let stalled = inflight
                    .front()
                    .is_some_and(|r| now_ms.saturating_sub(r.sent_ms) >= STALL_MS);
                if !*no_more
                    && !stalled
                    && inflight.len() < p.pipeline
                    && best.is_none_or(|(_, n)| inflight.len() < n)
                {
                    best = Some((s, inflight.len()));
                }
            }
        }
        let n = p.conns.len();
        let may_dial = now_ms >= p.down_until_ms;
        match best {
            Some((s, 0)) => Room::Conn(s),
            Some(_) if n < p.max_conns && may_dial => Room::Dial,
            Some((s, _)) => Room::Conn(s),
            None if n < p.max_conns * BURST_FACTOR && may_dial => Room::Dial,
            None => Room::Wait,
        }
    }

    /// Moves waiting requests of `pool` onto connections with room.
    fn pump(&mut self, pool: usize, now: Now, out: &mut Vec<Event>) {
        loop {
            let Some(p) = self.pools.get(pool) else {
                return;
            };
            if p.waiting.is_empty() {
                return;
            }
            if now.unix_ms < p.down_until_ms && p.conns.is_empty() {
                // The peer is unreachable: say so at once (T01) rather than
                // hold packets; repeatable requests wait for the redial.
                let why = format!(
                    "unreachable ({}); reconnecting in {} ms",
                    p.last_error,
                    p.down_until_ms - now.unix_ms
                );
                let not_before = p.down_until_ms;
                let waiting = std::mem::take(&mut self.pools[pool].waiting);
                for (req, body) in waiting {
                    self.retry_or_fail(pool, req, body, &why, not_before, now, out);
                }
                return;
            }
            let slot = match self.room(pool, now.unix_ms) {
                Room::Conn(s) => s,
                // A failed dial marks the pool down, so this ends.
                Room::Dial => match self.dial(pool, now) {
                    Some(s) => s,
                    None => continue,
                },
                // Every connection is full (or no new one may be dialled
                // yet): wait for a response.
                Room::Wait => return,
            };
            let Some((req, body)) = self.pools[pool].waiting.pop_front() else {
                return;
            };
            self.put(pool, slot, req, &body, now);
        }
    }

    /// Writes one request into a client connection's output.
    fn put(&mut self, pool: usize, slot: usize, mut req: ClientReq, body: &[u8], now: Now) {
        let callback = self.cfg.callback_url.as_deref().unwrap_or("");
        let p = &self.pools[pool];
        let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) else {
            return;
        };
        let Role::Client {
            connecting,
            inflight,
            ..
        } = &mut c.role
        else {
            return;
        };
        match &req.what {
            What::Forward {
                nonce: Some(nonce),
                out_id,
                ..
            } => {
                let id = ReqId::ours(self.worker, out_id.0, *nonce);
                if p.link == LinkKind::HttpAsync {
                    client::write_request(
                        &mut c.wbuf,
                        &p.host,
                        &p.url.path,
                        &p.token,
                        Extra::Async {
                            callback,
                            request_id: &id,
                        },
                        body,
                    );
                } else {
                    // docs/design.md "Node-roles links": the request id is in the path.
                    client::write_request(
                        &mut c.wbuf,
                        &p.host,
                        &p.url.oer_path(&id),
                        &p.token,
                        Extra::None,
                        body,
                    );
                }
            }
            // The hot path: one precomputed head, the length, the body.
            What::Forward { nonce: None, .. } => {
                c.wbuf.extend_from_slice(&p.prefix);
                super::put_decimal(&mut c.wbuf, body.len() as u64);
                c.wbuf.extend_from_slice(b"\r\n\r\n");
                c.wbuf.extend_from_slice(body);
            }
            What::ReplyPost {
                path,
                id,
                header_id,
                ..
            } => client::write_request(
                &mut c.wbuf,
                &p.host,
                path,
                &p.token,
                if *header_id {
                    Extra::Reply { request_id: id }
                } else {
                    Extra::None
                },
                body,
            ),
        }
        req.sent_ms = now.unix_ms;
        inflight.push_back(req);
        let connecting = *connecting;
        if !connecting {
            self.mark_dirty(slot);
        }
    }

    fn dial(&mut self, pool: usize, now: Now) -> Option<usize> {
        let p = &self.pools[pool];
        let stream = p.url.resolve().and_then(TcpStream::connect);
        match stream {
            Ok(stream) => {
                self.set_socket_options(&stream);
                let conn = HConn {
                    stream,
                    rbuf: BytesMut::new(),
                    wbuf: BytesMut::new(),
                    role: Role::Client {
                        pool,
                        connecting: true,
                        inflight: VecDeque::new(),
                        no_more: false,
                    },
                    in_ready: false,
                    in_dirty: false,
                    eof: false,
                    partial_since_ms: None,
                    last_active_ms: now.unix_ms,
                    admission: None,
                };
                match self.insert(conn) {
                    Some(s) => {
                        self.pools[pool].conns.push(s);
                        Some(s)
                    }
                    None => {
                        self.pool_down(pool, "cannot register the socket", now);
                        None
                    }
                }
            }
            Err(e) => {
                self.pool_down(pool, &format!("connect: {e}"), now);
                None
            }
        }
    }

    fn pool_down(&mut self, pool: usize, why: &str, now: Now) {
        let name = self.pool_name(pool);
        let Some(p) = self.pools.get_mut(pool) else {
            return;
        };
        self.counters.connect_failures += 1;
        let delay = p.backoff.next_delay();
        p.down_until_ms = now.unix_ms + delay;
        p.last_error = why.to_string();
        warn!(worker = self.worker, account = %name, "HTTP peer connection failed: {why}; reconnecting in {delay} ms");
    }

    // ------------------------------------------------------------ replies

    /// The core's reply to a Prepare that came in over HTTP.
    pub fn reply(&mut self, to: ReplyTo, packet: BytesMut, now: Now, out: &mut Vec<Event>) {
        if to.conn & TAG_OWED != 0 {
            let idx = (to.conn & 0xffff_ffff) as usize;
            let Some(s) = self.owed.get_mut(idx) else {
                return;
            };
            if s.gen != to.request_id {
                self.counters.replies_dropped += 1;
                return;
            }
            let Some((account, owed)) = s.owed.take() else {
                return;
            };
            s.gen = s.gen.wrapping_add(1);
            self.owed_free.push(idx);
            let reply = packet.freeze();
            if let Owed::Oer { key, .. } = &owed {
                self.cache.finish(*key, reply.clone());
            }
            self.post_reply(account, owed, reply, now, out);
            return;
        }
        let slot = (to.conn & 0xffff_ffff) as usize;
        let gen = ((to.conn >> 32) & 0x3fff_ffff) as u32;
        let body = match self.idem_waiting.remove(&(to.conn, to.request_id)) {
            Some(key) => {
                let b = packet.freeze();
                self.cache.finish(key, b.clone());
                Body::Shared(b)
            }
            None => Body::Packet(packet),
        };
        match self.slots.get(slot) {
            Some(Slot {
                gen: g,
                conn: Some(_),
            }) if g & 0x3fff_ffff == gen => self.respond(slot, to.request_id, 200, body),
            _ => self.counters.replies_dropped += 1,
        }
    }

    // ------------------------------------------------------------ writing

    /// Writes every connection with output; closes those that are done.
    pub fn flush(&mut self, now: Now, out: &mut Vec<Event>) {
        let limit = self.cfg.write_buffer_limit;
        let list = std::mem::take(&mut self.dirty);
        let mut closing = Vec::new();
        for slot in list {
            let Some(c) = self.slots.get_mut(slot).and_then(|s| s.conn.as_mut()) else {
                continue;
            };
            c.in_dirty = false;
            if let Role::Client {
                connecting: true, ..
            } = c.role
            {
                continue;
            }
            let was_over = c.wbuf.len() > limit;
            if let Err(e) = write_some(c, &mut self.counters.bytes_out) {
                closing.push((slot, format!("write: {e}")));
                continue;
            }
            if let Role::Server(sc) = &c.role {
                if sc.should_close() && c.wbuf.is_empty() {
                    closing.push((slot, String::new()));
                    continue;
                }
            }
            if was_over && c.wbuf.len() <= limit {
                self.mark_ready(slot);
            }
        }
        for (slot, why) in closing {
            self.close(slot, &why, false, now, out);
        }
    }

    /// Closes a connection. Requests waiting on a client connection are
    /// repeated (idempotent links, reply POSTs) or fail with T01.
    fn close(
        &mut self,
        slot: usize,
        why: &str,
        connect_failed: bool,
        now: Now,
        out: &mut Vec<Event>,
    ) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(mut conn) = s.conn.take() else {
            return;
        };
        s.gen = s.gen.wrapping_add(1);
        self.free.push(slot);
        if !matches!(
            conn.role,
            Role::Client {
                connecting: true,
                ..
            }
        ) {
            let _ = write_some(&mut conn, &mut self.counters.bytes_out);
        }
        let _ = self.registry.deregister(&mut conn.stream);
        if let Role::Client { pool, inflight, .. } = conn.role {
            debug!(worker = self.worker, peer = %self.pool_name(pool), waiting = inflight.len(), "HTTP client connection closed: {why}");
            if let Some(p) = self.pools.get_mut(pool) {
                p.conns.retain(|&x| x != slot);
            }
            if connect_failed {
                self.pool_down(pool, why, now);
            }
            let why = if connect_failed {
                why.to_string()
            } else {
                format!("connection lost before the answer ({why})")
            };
            for req in inflight {
                self.retry_or_fail(pool, req, Bytes::new(), &why, 0, now, out);
            }
            self.pump(pool, now, out);
        } else if !why.is_empty() {
            debug!(worker = self.worker, "HTTP connection closed: {why}");
        }
    }

    /// A request that may be repeated is scheduled again (same request id)
    /// until its deadline; anything else fails (a Forward with T01).
    #[allow(clippy::too_many_arguments)]
    fn retry_or_fail(
        &mut self,
        pool: usize,
        mut req: ClientReq,
        body: Bytes,
        why: &str,
        not_before: u64,
        now: Now,
        out: &mut Vec<Event>,
    ) {
        let body = match &req.what {
            What::Forward {
                packet: Some(p), ..
            } if body.is_empty() => p.clone(),
            What::ReplyPost { packet, .. } if body.is_empty() => packet.clone(),
            _ => body,
        };
        let repeatable = match &req.what {
            What::Forward { packet, .. } => packet.is_some(),
            What::ReplyPost { .. } => true,
        };
        let delay = (RETRY_FIRST_MS << req.attempt.min(5)).min(RETRY_MAX_MS);
        let due = (now.unix_ms + delay).max(not_before);
        if repeatable && due < req.deadline_ms && !self.draining {
            req.attempt += 1;
            self.counters.retries += 1;
            self.retries.push((due, pool, req, body));
            return;
        }
        let name = self.pool_name(pool);
        match req.what {
            What::Forward { out_id, .. } => {
                self.cache.waits.remove(self.worker, out_id.0);
                out.push(Event::Failed {
                    out_id,
                    code: ErrorCode::T01_PEER_UNREACHABLE,
                    message: format!("http peer {name}: {why}"),
                });
            }
            What::ReplyPost { .. } => {
                self.counters.replies_dropped += 1;
                debug!(worker = self.worker, peer = %name, "gave up posting a reply: {why}");
            }
        }
    }

    // ------------------------------------------------------------ timers

    /// Earliest unix ms at which [`HttpDriver::on_timers`] has work.
    pub fn next_deadline(&self) -> Option<u64> {
        let mut at = self.retries.iter().map(|r| r.0).min();
        if let Some(t) = self.accept_backoff.deadline() {
            at = Some(at.map_or(t, |a| a.min(t)));
        }
        if self.slots.iter().any(|s| s.conn.is_some()) {
            at = Some(at.map_or(self.next_scan_ms, |a| a.min(self.next_scan_ms)));
        }
        at
    }

    /// Repeats due requests; closes slow clients (408), idle connections
    /// and connections whose peer stopped answering.
    pub fn on_timers(&mut self, now: Now, out: &mut Vec<Event>) {
        if self.accept_backoff.due(now.unix_ms) {
            self.accept(now);
        }
        if self.retries.iter().any(|r| r.0 <= now.unix_ms) {
            let all = std::mem::take(&mut self.retries);
            let mut due = Vec::new();
            for r in all {
                if r.0 <= now.unix_ms {
                    due.push(r);
                } else {
                    self.retries.push(r);
                }
            }
            due.sort_by_key(|r| r.0);
            for (_, pool, req, body) in due {
                if now.unix_ms >= req.deadline_ms {
                    self.retry_or_fail(pool, req, body, "no answer before the expiry", 0, now, out);
                } else {
                    self.send(pool, req, body, now, out);
                }
            }
        }
        if now.unix_ms < self.next_scan_ms {
            return;
        }
        self.next_scan_ms = now.unix_ms + SCAN_MS;
        let header_timeout = self.cfg.header_timeout_ms;
        let idle_timeout = self.cfg.idle_timeout_ms;
        let mut late = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            let Some(c) = s.conn.as_ref() else { continue };
            match &c.role {
                Role::Server(sc) => {
                    if c.partial_since_ms
                        .is_some_and(|t| now.unix_ms.saturating_sub(t) >= header_timeout)
                    {
                        late.push((i, 408u16, false));
                    } else if sc.outstanding() == 0
                        && c.rbuf.is_empty()
                        && now.unix_ms.saturating_sub(c.last_active_ms) >= idle_timeout
                    {
                        late.push((i, 0, false));
                    }
                }
                Role::Client {
                    pool,
                    inflight,
                    connecting,
                    ..
                } => {
                    let timeout = self.pools.get(*pool).map_or(30_000, |p| p.timeout_ms);
                    if inflight
                        .front()
                        .is_some_and(|r| now.unix_ms.saturating_sub(r.sent_ms) >= timeout)
                        || (inflight.is_empty()
                            && now.unix_ms.saturating_sub(c.last_active_ms) >= CLIENT_IDLE_MS)
                    {
                        late.push((i, 0, *connecting));
                    }
                }
            }
        }
        for (slot, status, connecting) in late {
            if status == 408 {
                if let Some(c) = self.conn(slot) {
                    if let Role::Server(sc) = &c.role {
                        if sc.outstanding() == 0 {
                            super::write_response_head(&mut c.wbuf, 408, false, 36, true);
                            c.wbuf
                                .extend_from_slice(b"request not received in time; bye\r\n\n");
                        }
                    }
                }
                self.counters.refused += 1;
                self.close(slot, "request not received in time", false, now, out);
            } else if connecting {
                self.close(slot, "connect: timed out", true, now, out);
            } else if matches!(self.conn(slot).map(|c| &c.role), Some(Role::Client { .. })) {
                self.close(slot, "no response in time, or idle", false, now, out);
            } else {
                self.close(slot, "idle", false, now, out);
            }
        }
    }

    // ------------------------------------------------------------ shutdown

    /// Stop accepting; established connections keep being served.
    pub fn start_drain(&mut self) {
        self.draining = true;
        if let Some(mut l) = self.listener.take() {
            let _ = self.registry.deregister(&mut l);
        }
    }

    /// At shutdown: reads every server connection once more, so requests
    /// already sent are answered (T03 while draining) before the close.
    pub fn read_all(&mut self, now: Now, out: &mut Vec<Event>) {
        for slot in 0..self.slots.len() {
            if matches!(self.conn(slot).map(|c| &c.role), Some(Role::Server(_))) {
                self.mark_ready(slot);
            }
        }
        self.process(now, out);
    }

    pub fn close_all(&mut self, now: Now, out: &mut Vec<Event>) {
        self.draining = true;
        for slot in 0..self.slots.len() {
            self.close(slot, "shutdown", false, now, out);
        }
        self.retries.clear();
    }
}

/// Reads until WouldBlock, EOF (returns true), or `cap` bytes buffered.
fn read_some(c: &mut HConn, cap: usize, bytes_in: &mut u64) -> io::Result<bool> {
    loop {
        let len = c.rbuf.len();
        if len >= cap {
            return Ok(false);
        }
        if c.rbuf.capacity() - len < MIN_SPARE {
            c.rbuf.reserve(READ_CHUNK);
        }
        match socket2::SockRef::from(&c.stream).recv(c.rbuf.spare_capacity_mut()) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                // SAFETY: recv(2) initialized the first `n` bytes of the
                // spare capacity it was given, and `n` ≤ its length.
                unsafe { c.rbuf.set_len(len + n) };
                *bytes_in += n as u64;
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(false),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            },
        }
    }
}

/// Writes as much output as the socket takes.
fn write_some(c: &mut HConn, bytes_out: &mut u64) -> io::Result<()> {
    while !c.wbuf.is_empty() {
        match c.stream.write(&c.wbuf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                c.wbuf.advance(n);
                *bytes_out += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if c.wbuf.is_empty() && c.wbuf.capacity() > 1 << 20 {
        c.wbuf = BytesMut::new();
    }
    Ok(())
}

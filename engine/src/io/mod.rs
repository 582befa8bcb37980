//! The mio workers that move bytes between sockets and the sans-IO core.
//!
//! - [`worker`]: one event loop per core (accept, read, core, write).
//! - [`conn`]: one connection's socket, buffers and handshake state.
//! - [`conn_limits`]: caps on accepted connections (total, per IP, unauthenticated).
//! - [`accept_backoff`]: retrying `accept` after EMFILE and friends.
//! - [`auth_throttle`]: failed-auth throttling per source IP.
//! - [`client`]: client-side BTP accounts (dial, back-off).
//! - [`handoff`]: bounded cross-worker queues plus mio wakers.
//! - [`journal`]: a worker's durable-ledger duties per loop turn.
//! - [`metrics_http`]: `GET /metrics` on a small blocking thread.
//!
//! [`run`] starts everything and returns once a SIGINT/SIGTERM drain has
//! finished.

pub mod accept_backoff;
pub mod auth_throttle;
pub mod client;
pub mod conn;
pub mod conn_limits;
pub mod handoff;
pub mod journal;
pub mod metrics_http;
pub mod worker;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam::utils::CachePadded;
use mio::net::TcpListener;
use mio::{Poll, Waker};
use tracing::info;

use crate::config::Config;
use crate::core::{AccountId, Shared};
use crate::http::driver::{AccountLink, DriverConfig, HttpDriver};
use crate::http::idempotency::IdempotencyCache;
use crate::ledger::Ledger;
use auth_throttle::AuthThrottle;
use client::WsUrl;
use conn::CloseReason;
use conn_limits::{Caps, ConnLimits, Refusal};
use handoff::Peers;
use worker::{Knobs, Worker, WorkerInit, WAKER};

/// IO counters of one worker (written by that worker only, relaxed).
#[derive(Default)]
pub struct WorkerMetrics {
    pub open: AtomicI64,
    pub accepted: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub auth_failures: AtomicU64,
    pub closed: [AtomicU64; CloseReason::ALL.len()],
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub handoff_refused: AtomicU64,
    pub replies_dropped: AtomicU64,
    pub loop_turns: AtomicU64,
    pub http: HttpMetrics,
}

/// HTTP link counters of one worker (published once per turn).
#[derive(Default)]
pub struct HttpMetrics {
    pub accepted: AtomicU64,
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    pub duplicates: AtomicU64,
    pub retries: AtomicU64,
    pub connect_failures: AtomicU64,
    pub replies_dropped: AtomicU64,
}

/// State the IO layer shares between workers (the core's is [`Shared`]).
pub struct IoShared {
    pub workers: usize,
    /// Authenticated connections per (account, worker): where a Forward
    /// can leave.
    conn_counts: Vec<AtomicU32>,
    /// Each worker's `Core::in_flight`, published once per turn.
    pub in_flight: Vec<CachePadded<AtomicUsize>>,
    /// Set by the signal thread; every worker then drains.
    pub shutdown: AtomicBool,
    /// Which workers have noticed the shutdown.
    pub drain_seen: Vec<AtomicBool>,
    pub metrics: Vec<CachePadded<WorkerMetrics>>,
    /// Failed auth per source IP, for every listener (BTP and HTTP).
    pub auth_throttle: Arc<AuthThrottle>,
    /// Connections closed at accept because their address was throttled.
    pub auth_throttled: AtomicU64,
    /// Caps on accepted connections, for every listener.
    pub conn_limits: Arc<ConnLimits>,
}

impl IoShared {
    pub fn new(workers: usize, accounts: usize, cfg: &Config) -> IoShared {
        let n = &cfg.node;
        IoShared {
            workers,
            conn_counts: (0..workers * accounts.max(1))
                .map(|_| AtomicU32::new(0))
                .collect(),
            in_flight: (0..workers)
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
            shutdown: AtomicBool::new(false),
            drain_seen: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            metrics: (0..workers)
                .map(|_| CachePadded::new(WorkerMetrics::default()))
                .collect(),
            auth_throttle: Arc::new(AuthThrottle::new(n.auth_failures_per_ip_per_min)),
            auth_throttled: AtomicU64::new(0),
            conn_limits: Arc::new(ConnLimits::new(Caps {
                total: n.max_connections,
                per_ip: n.max_connections_per_ip,
                unauthenticated: n.max_unauthenticated,
                unauthenticated_per_ip: n.max_unauthenticated_per_ip,
            })),
        }
    }

    pub fn connection_count(&self, account: AccountId, worker: usize) -> &AtomicU32 {
        &self.conn_counts[account.0 as usize * self.workers + worker]
    }

    /// Authenticated connections to `account` on all workers.
    pub fn account_connections(&self, account: AccountId) -> u32 {
        (0..self.workers)
            .map(|w| self.connection_count(account, w).load(Ordering::Acquire))
            .sum()
    }

    /// Prometheus text for the IO counters.
    pub fn render_metrics(&self) -> String {
        let mut s = String::new();
        let sum =
            |f: &dyn Fn(&WorkerMetrics) -> u64| -> u64 { self.metrics.iter().map(|m| f(m)).sum() };
        let counter = |s: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let _ = writeln!(
            s,
            "# HELP ilpd_io_connections_open Authenticated BTP connections."
        );
        let _ = writeln!(s, "# TYPE ilpd_io_connections_open gauge");
        for (w, m) in self.metrics.iter().enumerate() {
            let _ = writeln!(
                s,
                "ilpd_io_connections_open{{worker=\"{w}\"}} {}",
                m.open.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut s,
            "ilpd_io_connections_accepted_total",
            "TCP connections accepted.",
            sum(&|m| m.accepted.load(Ordering::Relaxed)),
        );
        counter(
            &mut s,
            "ilpd_io_handshake_failures_total",
            "Connections whose WebSocket handshake failed or timed out.",
            sum(&|m| m.handshake_failures.load(Ordering::Relaxed)),
        );
        counter(
            &mut s,
            "ilpd_io_auth_failures_total",
            "BTP auth refused (either side).",
            sum(&|m| m.auth_failures.load(Ordering::Relaxed)),
        );
        counter(
            &mut s,
            "ilpd_io_auth_throttled_total",
            "Connections closed at accept: their address failed auth too often (BTP and HTTP).",
            self.auth_throttled.load(Ordering::Relaxed),
        );
        let (accepted_open, unauthenticated) = self.conn_limits.open();
        let _ = writeln!(
            s,
            "# HELP ilpd_io_accepted_open Accepted connections open (BTP and HTTP), by whether they have authenticated.\n# TYPE ilpd_io_accepted_open gauge\nilpd_io_accepted_open{{state=\"authenticated\"}} {}\nilpd_io_accepted_open{{state=\"unauthenticated\"}} {unauthenticated}",
            accepted_open.saturating_sub(unauthenticated)
        );
        let _ = writeln!(
            s,
            "# HELP ilpd_io_connections_refused_total Connections closed at accept, by the cap they were past.\n# TYPE ilpd_io_connections_refused_total counter"
        );
        for r in Refusal::ALL {
            let _ = writeln!(
                s,
                "ilpd_io_connections_refused_total{{cap=\"{}\"}} {}",
                r.label(),
                self.conn_limits.refused(r)
            );
        }
        let _ = writeln!(
            s,
            "# HELP ilpd_io_connections_closed_total Connections closed, by cause."
        );
        let _ = writeln!(s, "# TYPE ilpd_io_connections_closed_total counter");
        for r in CloseReason::ALL {
            let v = sum(&|m| m.closed[r.index()].load(Ordering::Relaxed));
            let _ = writeln!(
                s,
                "ilpd_io_connections_closed_total{{reason=\"{}\"}} {v}",
                r.label()
            );
        }
        counter(
            &mut s,
            "ilpd_io_bytes_in_total",
            "Bytes read from sockets.",
            sum(&|m| m.bytes_in.load(Ordering::Relaxed)),
        );
        counter(
            &mut s,
            "ilpd_io_bytes_out_total",
            "Bytes written to sockets.",
            sum(&|m| m.bytes_out.load(Ordering::Relaxed)),
        );
        counter(
            &mut s,
            "ilpd_io_handoff_refused_total",
            "Forwards refused (T03) because a cross-worker queue was full.",
            sum(&|m| m.handoff_refused.load(Ordering::Relaxed)),
        );
        counter(
            &mut s,
            "ilpd_io_replies_dropped_total",
            "Replies whose connection had closed before they could be written.",
            sum(&|m| m.replies_dropped.load(Ordering::Relaxed)),
        );
        let hsum = |f: &dyn Fn(&HttpMetrics) -> &AtomicU64| -> u64 {
            self.metrics
                .iter()
                .map(|m| f(&m.http).load(Ordering::Relaxed))
                .sum()
        };
        for (name, help, v) in [
            ("ilpd_http_connections_accepted_total", "ILP-over-HTTP connections accepted.", hsum(&|h| &h.accepted)),
            ("ilpd_http_requests_total", "ILP-over-HTTP requests taken (Prepares and async replies).", hsum(&|h| &h.requests)),
            ("ilpd_http_refused_total", "ILP-over-HTTP requests refused with a 4xx before the core.", hsum(&|h| &h.refused)),
            ("ilpd_http_duplicates_total", "Repeated requests answered from memory or ignored (idempotent links), and duplicate async replies.", hsum(&|h| &h.duplicates)),
            ("ilpd_http_retries_total", "HTTP requests sent again (idempotent links, reply POSTs).", hsum(&|h| &h.retries)),
            ("ilpd_http_connect_failures_total", "Outgoing HTTP connections that failed.", hsum(&|h| &h.connect_failures)),
            ("ilpd_http_replies_dropped_total", "HTTP replies that could not be delivered.", hsum(&|h| &h.replies_dropped)),
        ] {
            counter(&mut s, name, help, v);
        }
        let name = "ilpd_io_loop_turns_total";
        let _ = writeln!(s, "# HELP {name} Event-loop turns, busy or idle (the core counts busy ones).\n# TYPE {name} counter");
        for (w, m) in self.metrics.iter().enumerate() {
            let _ = writeln!(
                s,
                "{name}{{worker=\"{w}\"}} {}",
                m.loop_turns.load(Ordering::Relaxed)
            );
        }
        s
    }
}

/// Binds the BTP listener with SO_REUSEPORT so every worker can own one
/// (the kernel spreads new connections across them).
fn bind_reuseport(addr: SocketAddr, cfg: &Config) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if let Some(n) = cfg.node.socket_recv_buffer {
        let _ = s.set_recv_buffer_size(n);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(TcpListener::from_std(s.into()))
}

/// A running node: worker threads plus the metrics thread.
pub struct Node {
    io: Arc<IoShared>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The BTP listen address actually bound (port 0 resolved).
    pub listen_addr: Option<SocketAddr>,
    /// The metrics address actually bound.
    pub metrics_addr: Option<SocketAddr>,
    /// The ILP-over-HTTP listen address actually bound.
    pub http_addr: Option<SocketAddr>,
}

impl Node {
    /// Starts the workers (and the metrics endpoint). Errors are start-up
    /// failures such as an address already in use. `ledger` is the opened
    /// durable ledger, required unless `durability = "none"`.
    pub fn start(
        cfg: &Config,
        shared: Arc<Shared>,
        ledger: Option<Arc<Ledger>>,
    ) -> Result<Node, String> {
        let workers = cfg.worker_count();
        if shared.journaling() != ledger.is_some() {
            return Err(format!(
                "node.durability = {:?} needs {} ledger",
                cfg.node.durability.as_str(),
                if ledger.is_some() { "no" } else { "an open" }
            ));
        }
        let io = Arc::new(IoShared::new(workers, shared.account_count(), cfg));
        let knobs = Knobs::from_config(cfg);

        let metrics_addr = match cfg.node.metrics_addr {
            Some(addr) => Some(
                metrics_http::spawn(addr, shared.clone(), io.clone(), ledger.clone())
                    .map_err(|e| format!("node.metrics_addr: cannot listen on {addr}: {e}"))?,
            ),
            None => None,
        };

        // Bind every listener before any thread starts, so a bad address
        // fails start-up; port 0 is resolved once and shared.
        let mut listeners = Vec::new();
        let mut listen_addr = None;
        if let Some(addr) = cfg.node.listen {
            let mut a = addr;
            for _ in 0..workers {
                let l = bind_reuseport(a, cfg)
                    .map_err(|e| format!("node.listen: cannot listen on {a}: {e}"))?;
                a = l.local_addr().map_err(|e| e.to_string())?;
                listeners.push(Some(l));
            }
            listen_addr = Some(a);
        } else {
            listeners.extend((0..workers).map(|_| None));
        }

        // ILP-over-HTTP listeners, one per worker like BTP's.
        let mut http_listeners = Vec::new();
        let mut http_addr = None;
        if let Some(addr) = cfg.node.http_listen {
            let mut a = addr;
            for _ in 0..workers {
                let l = bind_reuseport(a, cfg)
                    .map_err(|e| format!("node.http_listen: cannot listen on {a}: {e}"))?;
                a = l.local_addr().map_err(|e| e.to_string())?;
                http_listeners.push(Some(l));
            }
            http_addr = Some(a);
        } else {
            http_listeners.extend((0..workers).map(|_| None));
        }
        let http_links = cfg
            .accounts
            .iter()
            .enumerate()
            .map(|(i, a)| AccountLink::from_config(a).map_err(|e| format!("accounts[{i}].{e}")))
            .collect::<Result<Vec<_>, String>>()?;
        let http_cfg = DriverConfig {
            max_body: cfg.node.http_max_body,
            header_timeout_ms: cfg.node.handshake_timeout_ms,
            idle_timeout_ms: cfg.node.http_idle_timeout_ms,
            auth_throttle: io.auth_throttle.clone(),
            conn_limits: io.conn_limits.clone(),
            write_buffer_limit: cfg.node.write_buffer_limit,
            callback_url: cfg
                .node
                .http_callback_url
                .clone()
                .or_else(|| http_addr.map(|a| format!("http://{a}/ilp"))),
            reconnect_initial_ms: cfg.node.reconnect_initial_ms,
            socket_send_buffer: cfg.node.socket_send_buffer,
            socket_recv_buffer: cfg.node.socket_recv_buffer,
            workers,
        };
        let idempotency = Arc::new(IdempotencyCache::new(
            cfg.node.idempotency_capacity,
            cfg.node.idempotency_ttl_ms,
        ));

        // Client-side accounts: `connections` of them (0 = one per worker),
        // spread round-robin over the workers.
        let mut clients: Vec<Vec<(AccountId, WsUrl)>> = vec![Vec::new(); workers];
        for (i, a) in cfg.accounts.iter().enumerate() {
            let Some(url) = &a.btp_url else { continue };
            let url = WsUrl::parse(url).map_err(|e| format!("accounts[{i}].btp_url: {e}"))?;
            let n = if a.connections == 0 {
                workers
            } else {
                a.connections
            };
            // Start each account at a different worker so accounts with
            // one connection do not all land on worker 0.
            for k in 0..n {
                clients[(i + k) % workers].push((AccountId(i as u32), url.clone()));
            }
        }

        let mut polls = Vec::new();
        let mut wakers = Vec::new();
        for _ in 0..workers {
            let poll = Poll::new().map_err(|e| format!("cannot create poll: {e}"))?;
            wakers.push(Arc::new(
                Waker::new(poll.registry(), WAKER).map_err(|e| e.to_string())?,
            ));
            polls.push(poll);
        }
        let (tx, rxs) = handoff::queues(workers);
        let peers = Peers {
            tx,
            wakers: wakers.clone(),
        };
        let cores = if cfg.node.pin_cores {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };

        let mut threads = Vec::new();
        let mut inits: Vec<_> = polls
            .into_iter()
            .zip(rxs)
            .zip(listeners)
            .zip(clients)
            .zip(http_listeners)
            .enumerate()
            .map(|(id, ((((poll, rx), listener), clients), http_listener))| {
                let mut listener = listener;
                if let Some(l) = listener.as_mut() {
                    poll.registry()
                        .register(l, worker::LISTENER, mio::Interest::READABLE)
                        .map_err(|e| format!("cannot register listener: {e}"))?;
                }
                let registry = poll
                    .registry()
                    .try_clone()
                    .map_err(|e| format!("cannot clone the poll registry: {e}"))?;
                let http = HttpDriver::new(
                    id,
                    http_cfg.clone(),
                    http_links.clone(),
                    shared.clone(),
                    idempotency.clone(),
                    registry,
                    http_listener,
                    std::process::id() as u64 ^ ((id as u64 + 1) << 40) ^ 0x9E37_79B9_7F4A_7C15,
                )
                .map_err(|e| format!("cannot register the HTTP listener: {e}"))?;
                if let Some(l) = &ledger {
                    // The syncer wakes the worker when its frames are durable.
                    let w = wakers[id].clone();
                    l.log(id).set_notify(Box::new(move || {
                        let _ = w.wake();
                    }));
                }
                Ok(WorkerInit {
                    id,
                    poll,
                    listener,
                    rx,
                    peers: peers.clone(),
                    clients,
                    http,
                    ledger: ledger.clone(),
                })
            })
            .collect::<Result<_, String>>()?;
        for (id, init) in inits.drain(..).enumerate() {
            let shared = shared.clone();
            let io2 = io.clone();
            let knobs = knobs.clone();
            let core_id = if cores.is_empty() {
                None
            } else {
                Some(cores[id % cores.len()])
            };
            let t = std::thread::Builder::new()
                .name(format!("ilpd-worker-{id}"))
                .spawn(move || {
                    if let Some(c) = core_id {
                        core_affinity::set_for_current(c);
                    }
                    Worker::new(init, shared, io2, knobs).run();
                })
                .map_err(|e| format!("cannot start worker thread: {e}"))?;
            threads.push(t);
        }
        info!(
            workers,
            listen = ?listen_addr,
            http = ?http_addr,
            metrics = ?metrics_addr,
            address = %shared.node_address().as_str(),
            "ilpd started"
        );
        Ok(Node {
            io,
            wakers,
            threads,
            listen_addr,
            metrics_addr,
            http_addr,
        })
    }

    /// Asks every worker to drain and stop (what SIGINT/SIGTERM do).
    pub fn shutdown(&self) {
        self.io.shutdown.store(true, Ordering::Release);
        for w in &self.wakers {
            let _ = w.wake();
        }
    }

    /// A handle the signal thread can use to call [`Node::shutdown`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            io: self.io.clone(),
            wakers: self.wakers.clone(),
        }
    }

    /// Waits for every worker to finish.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Triggers a graceful shutdown from another thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    io: Arc<IoShared>,
    wakers: Vec<Arc<Waker>>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.io.shutdown.store(true, Ordering::Release);
        for w in &self.wakers {
            let _ = w.wake();
        }
    }
}

//! One load run: open the links, start the receivers and senders, show
//! progress, stop at the end whatever happens, and merge the stats.

use ilpd_codec::sha256::{BatchVerifier, Impl};
use std::io::IsTerminal;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{Clock, Timing};
use crate::link::{self, BlockingLink, BtpConn};
use crate::lt::{OutcomeMix, Secret};
use crate::receiver::{ClientLink, Receiver, ReceiverEvent, ReceiverRules};
use crate::sender::{Load, Sender, SenderSpec};
use crate::stats::{fmt_int, Live, ReceiverStats, SenderStats};
use crate::track::FulfillTrack;
use crate::url::{LinkUrl, Scheme};

/// What the generator drives. (Built once per run: size does not matter.)
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Target {
    /// Baseline: the sender talks straight to the receiver (BTP or HTTP).
    Direct { http: bool },
    /// A connector: send on `send`, receive on `recv` (a BTP client link,
    /// or an `http://` address where we listen for the connector's POSTs).
    Connector {
        send: Vec<LinkUrl>,
        recv: LinkUrl,
        /// Where the HTTP receiving account asks for its address (IL-DCP).
        recv_ildcp: Option<LinkUrl>,
    },
}

/// Every setting of a run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub target: Target,
    pub load: Load,
    /// Sender threads, and connections per link per sender thread.
    pub threads: usize,
    pub conns: usize,
    /// Receiver threads, and BTP client connections per receiver thread.
    pub recv_threads: usize,
    pub recv_conns: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub packets: Option<u64>,
    pub amount: u64,
    /// Minimum destination amount the receiver enforces (default: amount).
    pub min_dest: Option<u64>,
    pub data_size: usize,
    pub expiry: Duration,
    pub destinations: usize,
    pub mix: String,
    pub seed: u64,
    pub min_time_left_ms: u64,
    pub grace: Duration,
    /// Longest wait for replies after the end of the duration.
    pub drain: Duration,
    pub pin: bool,
    /// Threads never block in epoll: each spins on its core.
    pub busy_poll: bool,
    pub max_in_flight: u32,
    pub recv_address: Option<String>,
    /// Token a client of our receiving server must present (direct mode and
    /// HTTP receive).
    pub recv_token: Option<String>,
    pub stall: Option<(u64, Duration)>,
    pub sha256: Option<Impl>,
    pub progress: bool,
    pub connect_timeout: Duration,
    /// Sent a copy of every receiver event (for payment APIs).
    pub events: Option<crossbeam::channel::Sender<ReceiverEvent>>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            target: Target::Direct { http: false },
            load: Load::Closed { window: 256 },
            threads: 1,
            conns: 1,
            recv_threads: 1,
            recv_conns: 1,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            packets: None,
            amount: 1,
            min_dest: None,
            data_size: 16,
            expiry: Duration::from_secs(30),
            destinations: 1,
            mix: "fulfill".into(),
            seed: crate::lt::random_seed(),
            min_time_left_ms: 0,
            grace: Duration::from_secs(1),
            drain: Duration::from_secs(5),
            pin: true,
            busy_poll: false,
            max_in_flight: 1 << 16,
            recv_address: None,
            recv_token: None,
            stall: None,
            sha256: None,
            progress: true,
            connect_timeout: Duration::from_secs(5),
            events: None,
        }
    }
}

impl RunConfig {
    /// "closed loop, window 256 per connection" / "open loop, 100,000/s".
    pub fn mode_label(&self) -> String {
        match self.load {
            Load::Closed { window } => format!("closed loop, window {window} per connection"),
            Load::Open { rate } => format!("open loop, {}/s target", fmt_int(rate.round() as u128)),
        }
    }

    pub fn target_label(&self) -> String {
        match &self.target {
            Target::Direct { http: false } => "direct (no connector), BTP".into(),
            Target::Direct { http: true } => "direct (no connector), ILP-over-HTTP".into(),
            Target::Connector { send, recv, .. } => format!(
                "connector: send {} / receive {}",
                send.iter()
                    .map(|u| u.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                recv
            ),
        }
    }

    pub fn send_link_count(&self) -> usize {
        match &self.target {
            Target::Direct { .. } => 1,
            Target::Connector { send, .. } => send.len(),
        }
    }
}

/// A packet fulfilled at the loopback whose Fulfill never reached the
/// sender (its link failed, the run ended or it timed out first): whether
/// the connector settled it is unknown to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unconfirmed {
    pub seq: u64,
    /// The amount the sender sent.
    pub amount: u64,
    /// The Prepare's execution condition.
    pub condition: [u8; 32],
}

/// Everything a run measured.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub sender: SenderStats,
    pub receiver: ReceiverStats,
    /// Length of the measured window (after warm-up), in seconds.
    pub measured_secs: f64,
    /// Wall time of the whole run including warm-up and drain.
    pub total_secs: f64,
    pub receive_address: String,
    pub sha256_impl: &'static str,
    /// Fulfilled at the loopback, never answered at the sender, by seq.
    pub unconfirmed: Vec<Unconfirmed>,
    /// Why the run stopped early: the connector's links failed (closed or
    /// reset), or the run could not start.
    pub aborted: Option<String>,
}

impl RunResult {
    /// The result of a run that could not start (for the JSON report).
    pub fn not_started(reason: String) -> RunResult {
        RunResult {
            sender: SenderStats::default(),
            receiver: ReceiverStats::default(),
            measured_secs: 0.0,
            total_secs: 0.0,
            receive_address: String::new(),
            sha256_impl: "",
            unconfirmed: Vec::new(),
            aborted: Some(reason),
        }
    }

    /// Total amount (as sent) of the unconfirmed packets.
    pub fn unconfirmed_amount(&self) -> u128 {
        self.unconfirmed.iter().map(|u| u.amount as u128).sum()
    }

    /// Fulfilled packets per second in the measured window.
    pub fn throughput(&self) -> f64 {
        if self.measured_secs > 0.0 {
            self.sender.fulfilled as f64 / self.measured_secs
        } else {
            0.0
        }
    }

    /// Packets sent per second in the measured window.
    pub fn send_rate(&self) -> f64 {
        if self.measured_secs > 0.0 {
            self.sender.sent as f64 / self.measured_secs
        } else {
            0.0
        }
    }

    /// Amount fulfilled as seen by the sender minus amount fulfilled as
    /// seen by the receiver (0 at 1:1 rates when every reply came back).
    pub fn reconciliation_delta(&self) -> i128 {
        self.sender.total_amount_fulfilled as i128 - self.receiver.amount_fulfilled as i128
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A listening socket on 127.0.0.1 that several threads can share the port of.
fn reuseport_listener(addr: std::net::SocketAddr) -> Result<TcpListener, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("listen {addr}: {e}"))?;
    let _ = s.set_reuse_address(true);
    let _ = s.set_reuse_port(true);
    s.bind(&addr.into())
        .map_err(|e| format!("listen {addr}: {}", link::io_cause(&e)))?;
    s.listen(1024).map_err(|e| format!("listen {addr}: {e}"))?;
    Ok(s.into())
}

/// The receiving side, opened: its address, the links the senders use,
/// and per receiver thread its client links or listener.
pub struct ReceiveSide {
    pub address: String,
    pub send_urls: Vec<LinkUrl>,
    pub links: Vec<Vec<ClientLink>>,
    pub listeners: Vec<Option<(TcpListener, bool)>>,
    pub server_token: Option<String>,
}

/// Opens the receive links (or listeners) and learns the receive address.
pub fn open_receive_side(cfg: &RunConfig, recv_threads: usize) -> Result<ReceiveSide, String> {
    let mut links: Vec<Vec<ClientLink>> = (0..recv_threads).map(|_| Vec::new()).collect();
    let mut listeners: Vec<Option<(TcpListener, bool)>> = (0..recv_threads).map(|_| None).collect();
    let direct_token = cfg
        .recv_token
        .clone()
        .unwrap_or_else(|| "loadgen-direct".to_string());
    let (address, send_urls, server_token) = match &cfg.target {
        Target::Direct { http } => {
            let first = reuseport_listener("127.0.0.1:0".parse().map_err(|_| "addr")?)?;
            let addr = first.local_addr().map_err(|e| e.to_string())?;
            listeners[0] = Some((first, *http));
            for l in listeners.iter_mut().skip(1) {
                *l = Some((reuseport_listener(addr)?, *http));
            }
            let url = if *http {
                format!("http://{direct_token}@{addr}/ilp")
            } else {
                format!("btp+ws://loadgen:{direct_token}@{addr}/")
            };
            let address = cfg
                .recv_address
                .clone()
                .unwrap_or_else(|| "test.loadgen.direct".to_string());
            (address, vec![LinkUrl::parse(&url)?], Some(direct_token))
        }
        Target::Connector {
            send,
            recv,
            recv_ildcp,
        } => match recv.scheme {
            Scheme::Btp => {
                let name = link::link_name("receive", recv);
                let mut address = cfg.recv_address.clone();
                for (t, links) in links.iter_mut().enumerate() {
                    for k in 0..cfg.recv_conns.max(1) {
                        let mut c = BtpConn::open(&name, recv, cfg.connect_timeout)?;
                        if address.is_none() && t == 0 && k == 0 {
                            address = Some(c.ildcp(cfg.connect_timeout)?);
                        }
                        let (stream, rbuf, _) = c.into_parts();
                        links.push(ClientLink {
                            name: name.clone(),
                            stream,
                            rbuf,
                        });
                    }
                }
                let address = address.ok_or_else(|| format!("{name}: no address"))?;
                (address, send.clone(), None)
            }
            Scheme::Http => {
                let addr = recv.socket_addr()?;
                for l in listeners.iter_mut() {
                    *l = Some((reuseport_listener(addr)?, true));
                }
                let address = match (&cfg.recv_address, recv_ildcp) {
                    (Some(a), _) => a.clone(),
                    (None, Some(u)) => {
                        let name = link::link_name("receive (IL-DCP)", u);
                        let mut l = BlockingLink::open(&name, u, cfg.connect_timeout)?;
                        let req = ilpd_codec::peer::ildcp::request_prepare(link::expiry_in(
                            Duration::from_secs(60),
                        ));
                        let reply = l.request_ilp(&req, cfg.connect_timeout)?;
                        match ilpd_codec::peer::ildcp::parse_response_fulfill(&reply) {
                            Ok(r) => String::from_utf8_lossy(r.client_address).into_owned(),
                            Err(_) => {
                                return Err(format!(
                                    "{name}: IL-DCP failed: {}",
                                    link::describe_ilp_reply(&reply)
                                ))
                            }
                        }
                    }
                    (None, None) => {
                        return Err(
                            "an http:// receive link needs --recv-address or --recv-ildcp URL"
                                .into(),
                        )
                    }
                };
                let token = (!recv.token.is_empty()).then(|| recv.token.clone());
                (address, send.clone(), token)
            }
        },
    };
    ilpd_codec::address::validate(address.as_bytes())
        .map_err(|e| format!("receive address {address:?} is not a valid ILP address ({e})"))?;
    ilpd_codec::address::validate(address.as_bytes())
        .map_err(|e| format!("receive address {address:?} is not a valid ILP address ({e})"))?;
    Ok(ReceiveSide {
        address,
        send_urls,
        links,
        listeners,
        server_token,
    })
}

/// Set by Ctrl-C or SIGTERM: the run in progress ends early but still
/// reports (and a sweep stops); a second signal exits at once (status 130).
pub fn interrupted() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone());
            let _ = signal_hook::flag::register(sig, flag.clone());
        }
        flag
    })
    .clone()
}

/// Runs the load described by `cfg`.
pub fn run(cfg: &RunConfig) -> Result<RunResult, String> {
    let secret = Secret::from_seed(cfg.seed);
    let mix = OutcomeMix::parse(&cfg.mix, cfg.seed)?;
    let verifier = BatchVerifier::new(cfg.sha256)?;
    let ncores = cores();
    let core_of = |i: usize| cfg.pin.then_some(i % ncores);
    let threads = cfg.threads.max(1);
    let recv_threads = cfg.recv_threads.max(1);

    // --- Receiving side: links, address.
    let ReceiveSide {
        address,
        send_urls,
        links: recv_links,
        listeners,
        server_token,
    } = open_receive_side(cfg, recv_threads)?;
    let destinations: Vec<Vec<u8>> = (0..cfg.destinations.max(1))
        .map(|i| format!("{address}.{i}").into_bytes())
        .collect();

    // Sender rings (per connection), and the receivers' marks of what they
    // fulfilled, one word per ring slot.
    let total_conns = threads * cfg.conns.max(1) * send_urls.len();
    // The ring is bigger than a closed-loop window so that one packet held
    // (e.g. "noanswer") does not block the ring when it wraps.
    let max_in_flight = match cfg.load {
        Load::Closed { window } => window.max(1).saturating_mul(8).max(1024),
        Load::Open { .. } => cfg.max_in_flight.max(1),
    };
    let track = Arc::new(FulfillTrack::new(
        total_conns,
        max_in_flight.next_power_of_two() as usize,
    ));
    // Client links to the connector still open: when the last one fails the
    // loopback is gone and the run stops.
    let recv_links_up = Arc::new(AtomicUsize::new(0));
    let mut recv_links_total = 0;

    let rules = ReceiverRules {
        address: address.clone().into_bytes(),
        secret,
        mix,
        min_amount: 0,
        min_time_left_ms: cfg.min_time_left_ms,
        stall: cfg.stall,
    };
    let stop_recv = Arc::new(AtomicBool::new(false));
    let stop_send = Arc::new(AtomicBool::new(false));
    let live_recv: Vec<Arc<Live>> = (0..recv_threads)
        .map(|_| Arc::new(Live::default()))
        .collect();
    let live_send: Vec<Arc<Live>> = (0..threads).map(|_| Arc::new(Live::default())).collect();

    let mut recv_handles = Vec::new();
    for (t, (links, listener)) in recv_links.into_iter().zip(listeners).enumerate() {
        let mut r = Receiver::new(
            rules.clone(),
            links,
            listener,
            server_token.clone(),
            cfg.events.clone(),
        )?;
        r.busy_poll = cfg.busy_poll;
        r.set_track(track.clone());
        recv_links_total += r.client_links();
        recv_links_up.fetch_add(r.client_links(), Ordering::AcqRel);
        r.set_link_counter(&recv_links_up);
        let stop = stop_recv.clone();
        let live = live_recv[t].clone();
        let core = core_of(threads + t);
        let h = std::thread::Builder::new()
            .name(format!("lg-recv-{t}"))
            .spawn(move || r.run(core, stop, live))
            .map_err(|e| format!("spawn receiver: {e}"))?;
        recv_handles.push(h);
    }

    // --- Sending side: each thread connects, says ready, waits for go.
    let total_conns = total_conns as f64;
    let rate_per_conn = match cfg.load {
        Load::Open { rate } => rate / total_conns,
        Load::Closed { .. } => 0.0,
    };
    let packets_per_conn = cfg.packets.map(|p| (p as f64 / total_conns).ceil() as u64);
    let (ready_tx, ready_rx) = crossbeam::channel::unbounded::<(usize, Result<(), String>)>();
    let mut go_txs = Vec::new();
    let mut send_handles = Vec::new();
    for (t, live) in live_send.iter().enumerate() {
        let spec = SenderSpec {
            thread: t,
            urls: send_urls.clone(),
            first_stream: (t * cfg.conns.max(1) * send_urls.len()) as u16,
            load: cfg.load,
            rate_per_conn,
            max_in_flight,
            in_flight_limit: cfg.max_in_flight.max(1),
            amount: cfg.amount,
            min_dest: cfg.min_dest.unwrap_or(cfg.amount),
            data_size: cfg.data_size,
            expiry: cfg.expiry,
            grace: cfg.grace,
            destinations: destinations.clone(),
            secret,
            verifier,
            packets_per_conn,
            core: core_of(t),
            busy_poll: cfg.busy_poll,
            connect_timeout: cfg.connect_timeout,
            track: Some(track.clone()),
        };
        let (go_tx, go_rx) = crossbeam::channel::bounded::<Option<(Clock, Timing)>>(1);
        go_txs.push(go_tx);
        let ready = ready_tx.clone();
        let stop = stop_send.clone();
        let live = live.clone();
        let conns = cfg.conns.max(1);
        let h = std::thread::Builder::new()
            .name(format!("lg-send-{t}"))
            .spawn(move || {
                let s = match Sender::connect(spec, conns) {
                    Ok(s) => {
                        let _ = ready.send((t, Ok(())));
                        s
                    }
                    Err(e) => {
                        let _ = ready.send((t, Err(e)));
                        return None;
                    }
                };
                match go_rx.recv() {
                    Ok(Some((clock, timing))) => Some(s.run(clock, timing, stop, live)),
                    _ => None,
                }
            })
            .map_err(|e| format!("spawn sender: {e}"))?;
        send_handles.push(h);
    }
    drop(ready_tx);
    let mut setup_error = None;
    for _ in 0..threads {
        match ready_rx.recv_timeout(cfg.connect_timeout * 3 + Duration::from_secs(1)) {
            Ok((_, Ok(()))) => {}
            Ok((_, Err(e))) => {
                setup_error.get_or_insert(e);
            }
            Err(_) => {
                setup_error.get_or_insert("sender threads did not connect in time".into());
                break;
            }
        }
    }
    if let Some(e) = setup_error {
        for g in &go_txs {
            let _ = g.send(None);
        }
        stop_recv.store(true, Ordering::Relaxed);
        for h in send_handles {
            let _ = h.join();
        }
        for h in recv_handles {
            let _ = h.join();
        }
        return Err(e);
    }

    // --- Go.
    let clock = Clock::new();
    let start_ns = clock.now_ns();
    let warmup_end_ns = start_ns + cfg.warmup.as_nanos() as u64;
    let end_ns = warmup_end_ns + cfg.duration.as_nanos() as u64;
    // Long enough for every packet to time out on its own, no longer than asked.
    let drain = cfg
        .drain
        .min(cfg.expiry + cfg.grace + Duration::from_millis(500));
    let timing = Timing {
        start_ns,
        warmup_end_ns,
        end_ns,
        hard_stop_ns: end_ns + drain.as_nanos() as u64,
    };
    for g in &go_txs {
        let _ = g.send(Some((clock, timing)));
    }
    let started = Instant::now();
    let interrupted = interrupted();
    let show = cfg.progress && std::io::stderr().is_terminal();
    let mut last = (0u64, 0u64);
    let mut tick = 1u64;
    let mut recv_links_failed = false;
    while send_handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        // Belt and braces: the senders stop themselves at hard_stop.
        if clock.now_ns() > timing.hard_stop_ns + 2_000_000_000
            || interrupted.load(Ordering::Relaxed)
        {
            stop_send.store(true, Ordering::Relaxed);
        }
        // Every receive link failed: nothing can be fulfilled any more.
        if recv_links_total > 0 && recv_links_up.load(Ordering::Acquire) == 0 {
            recv_links_failed = true;
            stop_send.store(true, Ordering::Relaxed);
        }
        if show && started.elapsed() >= Duration::from_secs(tick) {
            tick += 1;
            let sent: u64 = live_send
                .iter()
                .map(|l| l.sent.load(Ordering::Relaxed))
                .sum();
            let ful: u64 = live_send
                .iter()
                .map(|l| l.fulfilled.load(Ordering::Relaxed))
                .sum();
            let rej: u64 = live_send
                .iter()
                .map(|l| l.rejected.load(Ordering::Relaxed))
                .sum();
            let phase = if clock.now_ns() < warmup_end_ns {
                "warm-up"
            } else if clock.now_ns() < end_ns {
                "measuring"
            } else {
                "draining"
            };
            eprint!(
                "\r[{:>3}s {phase:<9}] sent {:>12}/s  fulfilled {:>12}/s  rejected {:>10}  total fulfilled {:>14}   ",
                tick - 1,
                fmt_int((sent - last.0) as u128),
                fmt_int((ful - last.1) as u128),
                fmt_int(rej as u128),
                fmt_int(ful as u128),
            );
            last = (sent, ful);
        }
    }
    if show {
        eprintln!();
    }
    let finished_ns = clock.now_ns();
    let mut sender = SenderStats::default();
    for h in send_handles {
        match h.join() {
            Ok(Some(s)) => sender.merge(&s),
            Ok(None) => {}
            Err(_) => sender.errors.add("a sender thread panicked"),
        }
    }
    // Let the last replies leave the receivers, then stop them.
    std::thread::sleep(Duration::from_millis(20));
    stop_recv.store(true, Ordering::Relaxed);
    let mut receiver = ReceiverStats::default();
    for h in recv_handles {
        match h.join() {
            Ok(s) => receiver.merge(&s),
            Err(_) => receiver.errors.add("a receiver thread panicked"),
        }
    }
    // The receivers have stopped: their marks are final. Packets the sender
    // still had in flight at the end that the loopback fulfilled are
    // unconfirmed, like those that timed out after being fulfilled.
    let mut unconfirmed_seqs = std::mem::take(&mut sender.unconfirmed);
    unconfirmed_seqs.extend(
        std::mem::take(&mut sender.in_flight_at_end)
            .into_iter()
            .filter(|(seq, _)| track.fulfilled(*seq)),
    );
    unconfirmed_seqs.sort_unstable();
    unconfirmed_seqs.dedup_by_key(|u| u.0);
    let unconfirmed = unconfirmed_seqs
        .into_iter()
        .map(|(seq, amount)| Unconfirmed {
            seq,
            amount,
            condition: crate::lt::condition(&secret.fulfillment(seq)),
        })
        .collect();
    let aborted = sender.aborted.clone().or_else(|| {
        recv_links_failed.then(|| {
            receiver.errors.0.first().map_or_else(
                || "every receive link failed".to_string(),
                |(m, _)| m.clone(),
            )
        })
    });
    // Packet-count runs may end before the duration does.
    let measured_ns = finished_ns.min(end_ns).saturating_sub(warmup_end_ns);
    Ok(RunResult {
        sender,
        receiver,
        measured_secs: measured_ns as f64 / 1e9,
        total_secs: started.elapsed().as_secs_f64(),
        receive_address: address,
        sha256_impl: verifier.impl_name(),
        unconfirmed,
        aborted,
    })
}

//! `ilp-loadgen stream`: real STREAM payments (RFC 29) as the load.
//!
//! Up to `concurrency` payments run at once, each its own STREAM
//! connection driven by ilpd-stream's sans-IO [`Sender`] (rate probe,
//! per-packet minimum destination amounts, F08/T04/F99 handling, close).
//! With an SPSP payee every payment first asks the SPSP endpoint for its
//! own connection (a blocking `GET` on a small pool of query threads), as
//! wallets do. The Prepares of all payments are multiplexed over the send
//! links (BTP: matched by request id; ILP-over-HTTP: pipelined, answered
//! in order), opened with the same code as the other modes
//! ([`crate::link`]) and driven by one mio event loop on this thread.
//!
//! Measured: payments completed and failed (by reason), source amount
//! sent and destination amount delivered (the receiver's own counts from
//! its encrypted replies), Prepares sent, fulfilled and rejected by code,
//! HDR latency per payment (SPSP query start → the close answered), per
//! SPSP query and per packet (every answered Prepare).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use ilpd_codec::btp::{self, Btp, BtpType};
use ilpd_codec::ilp::{Fulfill, Reject};
use ilpd_codec::ws::{self, Opcode, Role};
use ilpd_codec::{ErrorCode, Fulfillment};
use ilpd_stream::rng::RandomError;
use ilpd_stream::spsp::SpspResponse;
use ilpd_stream::{OsRandom, RandomSource, SendError, Sender, SenderConfig};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::clock::Clock;
use crate::frames::{self, Frame, FrameSplitter, ReadBuf};
use crate::link::{self, BtpConn, CLIENT_MASK, MAX_MESSAGE};
use crate::spsp::{Payee, SpspClient};
use crate::stats::{fmt_int, new_histogram, CodeCounts, ErrorLog, MAX_LATENCY_NS};
use crate::url::{LinkUrl, Scheme};

/// Every setting of a STREAM run.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Send links (btp+ws:// or http://); packets go round-robin over all
    /// their connections.
    pub send: Vec<LinkUrl>,
    /// Connections per send link.
    pub conns: usize,
    pub payee: Payee,
    /// Source units per payment.
    pub amount: u64,
    /// Payments to make (`None`: until `duration`).
    pub payments: Option<u64>,
    /// Payments in progress at once.
    pub concurrency: usize,
    /// No payment starts after this (`None`: until `payments` are done).
    pub duration: Option<Duration>,
    /// After `duration`, how long payments in progress may still finish.
    pub drain: Duration,
    /// Prepares in flight per payment.
    pub packets_in_flight: usize,
    /// Largest Prepare amount (source units); F08 lowers it further.
    pub max_packet_amount: Option<u64>,
    /// Rate tolerance below the probed rate, basis points.
    pub slippage_bp: u32,
    pub expiry: Duration,
    /// SPSP query timeout, and link connect timeout.
    pub connect_timeout: Duration,
    /// SPSP query threads (at most `concurrency`).
    pub spsp_threads: usize,
    /// Our address for `ConnectionNewAddress` (default: IL-DCP on the
    /// first BTP send link; none on HTTP links).
    pub source_address: Option<String>,
    pub progress: bool,
}

impl StreamConfig {
    pub fn new(send: Vec<LinkUrl>, payee: Payee, amount: u64) -> StreamConfig {
        StreamConfig {
            send,
            conns: 1,
            payee,
            amount,
            payments: Some(1),
            concurrency: 1,
            duration: None,
            drain: Duration::from_secs(10),
            packets_in_flight: 16,
            max_packet_amount: None,
            slippage_bp: 100,
            expiry: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            spsp_threads: 4,
            source_address: None,
            progress: false,
        }
    }

    /// "20 payments of 10,000, 4 at once".
    pub fn load_label(&self) -> String {
        let n = match (self.payments, self.duration) {
            (Some(p), None) => format!("{} payments", fmt_int(p as u128)),
            (Some(p), Some(d)) => format!(
                "{} payments (at most {:.1} s)",
                fmt_int(p as u128),
                d.as_secs_f64()
            ),
            (None, Some(d)) => format!("payments for {:.1} s", d.as_secs_f64()),
            (None, None) => "payments".into(),
        };
        format!(
            "{n} of {} source units, {} at once, {} packets in flight each{}",
            fmt_int(self.amount as u128),
            self.concurrency,
            self.packets_in_flight,
            self.max_packet_amount
                .map(|m| format!(", packets of at most {}", fmt_int(m as u128)))
                .unwrap_or_default()
        )
    }

    pub fn target_label(&self) -> String {
        format!(
            "STREAM to {} via {}",
            self.payee.label(),
            self.send
                .iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Packet counts over the whole run.
#[derive(Clone, Debug, Default)]
pub struct PacketStats {
    pub sent: u64,
    pub fulfilled: u64,
    pub rejected: CodeCounts,
    /// Fulfills whose fulfillment does not hash to the condition.
    pub wrong_fulfillment: u64,
    /// No reply by expiry + 1 s.
    pub timed_out: u64,
    /// In flight when their link failed or the run ended.
    pub lost: u64,
    /// BTP Error or HTTP status other than 200.
    pub transport_errors: u64,
    /// Replies that matched nothing in flight.
    pub unmatched: u64,
}

/// Everything a STREAM run measured.
#[derive(Clone, Debug)]
pub struct StreamResult {
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    /// Why payments failed, with counts (e.g. `Rejected(F02)`).
    pub failures: ErrorLog,
    /// `amount` × payments started.
    pub amount_requested: u128,
    /// Source units in fulfilled Prepares.
    pub amount_sent: u128,
    /// Destination units the receivers said arrived.
    pub amount_delivered: u128,
    pub packets: PacketStats,
    /// Per payment (completed ones), SPSP query start → close answered.
    pub payment_hist: Histogram<u64>,
    /// Per SPSP query.
    pub spsp_hist: Histogram<u64>,
    /// Per answered Prepare.
    pub packet_hist: Histogram<u64>,
    pub elapsed_secs: f64,
    /// The first payment's destination, receiver asset and probed rate.
    pub destination: Option<String>,
    pub receiver_asset: Option<(String, u8)>,
    pub rate: Option<(u64, u64)>,
    /// Our address as told to the receivers.
    pub source_address: Option<String>,
    /// Link errors and other run-level errors, with counts.
    pub errors: ErrorLog,
    /// Why the run stopped early (every send link failed; interrupted).
    pub aborted: Option<String>,
}

impl StreamResult {
    /// The result of a run that could not start (for the JSON report).
    pub fn not_started(reason: String) -> StreamResult {
        let mut r = StreamResult::new();
        r.aborted = Some(reason);
        r
    }

    fn new() -> StreamResult {
        StreamResult {
            started: 0,
            completed: 0,
            failed: 0,
            failures: ErrorLog::default(),
            amount_requested: 0,
            amount_sent: 0,
            amount_delivered: 0,
            packets: PacketStats::default(),
            payment_hist: new_histogram(),
            spsp_hist: new_histogram(),
            packet_hist: new_histogram(),
            elapsed_secs: 0.0,
            destination: None,
            receiver_asset: None,
            rate: None,
            source_address: None,
            errors: ErrorLog::default(),
            aborted: None,
        }
    }

    /// Completed payments per second.
    pub fn payments_per_s(&self) -> f64 {
        per_s(self.completed, self.elapsed_secs)
    }

    /// Answered Prepares per second.
    pub fn packets_per_s(&self) -> f64 {
        per_s(
            self.packets.fulfilled + self.packets.rejected.total(),
            self.elapsed_secs,
        )
    }

    /// Fulfilled Prepares per second.
    pub fn fulfilled_per_s(&self) -> f64 {
        per_s(self.packets.fulfilled, self.elapsed_secs)
    }
}

fn per_s(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn record(h: &mut Histogram<u64>, ns: u64) {
    let _ = h.record(ns.clamp(1, MAX_LATENCY_NS));
}

/// One OS random source shared by every payment of the run (it reads
/// 4 KiB at a time; one per payment would be a syscall per payment).
#[derive(Clone)]
struct SharedRng(Rc<RefCell<OsRandom>>);

impl RandomSource for SharedRng {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), RandomError> {
        self.0.borrow_mut().fill(out)
    }
}

/// A payment's slot.
enum Slot {
    Free,
    /// Waiting for its SPSP response.
    Fetching {
        id: u64,
        start_ns: u64,
    },
    Paying(Box<Payment>),
}

struct Payment {
    id: u64,
    start_ns: u64,
    sender: Sender<SharedRng>,
}

/// A Prepare on the wire.
#[derive(Clone, Copy)]
struct Pending {
    slot: usize,
    payment: u64,
    seq: u64,
    sent_ns: u64,
    deadline_ns: u64,
    condition: [u8; 32],
}

struct Conn {
    name: String,
    url: LinkUrl,
    http: bool,
    stream: mio::net::TcpStream,
    rb: ReadBuf,
    sp: FrameSplitter,
    wbuf: Vec<u8>,
    wpos: usize,
    next_rid: u32,
    /// BTP: by request id.
    by_rid: HashMap<u32, Pending>,
    /// HTTP/1.1: in request order; `None` once timed out (its reply, if
    /// any, still comes in its place).
    in_order: VecDeque<Option<Pending>>,
    dead: bool,
}

impl Conn {
    fn in_flight(&self) -> usize {
        if self.http {
            self.in_order.iter().filter(|p| p.is_some()).count()
        } else {
            self.by_rid.len()
        }
    }
}

const WAKER: Token = Token(usize::MAX - 1);

/// Opens a send link; with `ildcp`, a BTP link also asks the connector
/// for our address (IL-DCP), best effort.
fn open_conn(
    url: &LinkUrl,
    timeout: Duration,
    ildcp: bool,
    address: &mut Option<String>,
) -> Result<Conn, String> {
    let name = link::link_name("send", url);
    let (s, initial, http) = match url.scheme {
        Scheme::Btp => {
            let mut b = BtpConn::open(&name, url, timeout)?;
            if ildcp {
                *address = b.ildcp(timeout).ok();
            }
            let (s, r, _) = b.into_parts();
            (s, r, false)
        }
        Scheme::Http => (
            link::tcp_connect(&name, url, timeout)?,
            BytesMut::new(),
            true,
        ),
    };
    s.set_nonblocking(true)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(Conn {
        name,
        url: url.clone(),
        http,
        stream: mio::net::TcpStream::from_std(s),
        rb: ReadBuf::with_initial(64 * 1024, &initial),
        sp: FrameSplitter::new(Role::Client, MAX_MESSAGE),
        wbuf: Vec::with_capacity(16 * 1024),
        wpos: 0,
        next_rid: 1,
        by_rid: HashMap::new(),
        in_order: VecDeque::new(),
        dead: false,
    })
}

/// The run's state apart from the links.
struct State {
    /// Our address, told to each receiver in `ConnectionNewAddress` (it
    /// answers with its asset details).
    source: Option<String>,
    clock: Clock,
    slots: Vec<Slot>,
    rng: SharedRng,
    cfg: StreamConfig,
    r: StreamResult,
}

impl State {
    fn sender_for(&self, resp: &SpspResponse) -> Sender<SharedRng> {
        let mut c = SenderConfig::new(
            resp.destination_account.clone(),
            resp.shared_secret,
            self.cfg.amount,
        );
        c.source_address.clone_from(&self.source);
        c.max_in_flight = self.cfg.packets_in_flight.max(1);
        c.max_packet_amount = self.cfg.max_packet_amount.unwrap_or(u64::MAX);
        c.probe_amount = c
            .probe_amount
            .min(c.max_packet_amount)
            .min(self.cfg.amount.max(1));
        c.slippage_bp = self.cfg.slippage_bp;
        c.expiry_ms = self.cfg.expiry.as_millis() as u64;
        Sender::new(c, self.rng.clone())
    }

    fn payment_failed(&mut self, why: String) {
        self.r.failed += 1;
        self.r.failures.add(why);
    }

    /// A reply (ILP Fulfill or Reject bytes) to `p`.
    fn on_reply(&mut self, p: Pending, ilp: &[u8]) {
        let now = self.clock.now_ns();
        record(&mut self.r.packet_hist, now.saturating_sub(p.sent_ns));
        if let Ok(f) = Fulfill::new_checked(ilp) {
            if Fulfillment(*f.fulfillment()).condition().0 == p.condition {
                self.r.packets.fulfilled += 1;
            } else {
                self.r.packets.wrong_fulfillment += 1;
            }
        } else if let Ok(rj) = Reject::new_checked(ilp) {
            self.r.packets.rejected.add(*rj.code().as_bytes(), 1);
        } else {
            self.r.packets.transport_errors += 1;
            self.r.errors.add("malformed ILP reply");
        }
        if let Some(s) = self.sender_of(&p) {
            s.handle_reply(link::wall_ms(), p.seq, ilp);
        }
    }

    /// A BTP Error or HTTP error status for `p`.
    fn on_transport_error(&mut self, p: Pending, msg: String) {
        self.r.packets.transport_errors += 1;
        self.r.errors.add(msg);
        if let Some(s) = self.sender_of(&p) {
            s.on_reject(link::wall_ms(), p.seq, ErrorCode::T00_INTERNAL_ERROR, &[]);
        }
    }

    /// `p` will never be answered (timed out, or its link failed): the
    /// payment retries its amount.
    fn on_lost(&mut self, p: Pending, timed_out: bool) {
        if timed_out {
            self.r.packets.timed_out += 1;
        } else {
            self.r.packets.lost += 1;
        }
        if let Some(s) = self.sender_of(&p) {
            s.on_lost(link::wall_ms(), p.seq);
        }
    }

    fn sender_of(&mut self, p: &Pending) -> Option<&mut Sender<SharedRng>> {
        match self.slots.get_mut(p.slot) {
            Some(Slot::Paying(pay)) if pay.id == p.payment => Some(&mut pay.sender),
            _ => None,
        }
    }

    /// Records a payment that is done (or, with `why`, cut short) and
    /// frees its slot; what it delivered counts either way.
    fn finish(&mut self, slot: usize, why: &str) {
        let Slot::Paying(pay) = std::mem::replace(&mut self.slots[slot], Slot::Free) else {
            return;
        };
        let now = self.clock.now_ns();
        let st = pay.sender.stats();
        self.r.amount_sent += st.sent as u128;
        self.r.amount_delivered += st.delivered as u128;
        if self.r.receiver_asset.is_none() {
            self.r.receiver_asset = pay.sender.receiver_asset().map(|(c, s)| (c.to_string(), s));
        }
        if self.r.rate.is_none() {
            self.r.rate = st.rate;
        }
        match pay.sender.result() {
            Some(Ok(_)) => {
                self.r.completed += 1;
                record(&mut self.r.payment_hist, now.saturating_sub(pay.start_ns));
            }
            Some(Err(e)) => self.payment_failed(describe_send_error(e)),
            None => self.payment_failed(why.to_string()),
        }
    }
}

/// The reason of a failed payment, as the report counts it.
pub fn describe_send_error(e: SendError) -> String {
    match e {
        SendError::RateTooLow => {
            "exchange rate too low (probe: nothing or too little arrives)".into()
        }
        SendError::RateDropped => "exchange rate dropped below the minimum".into(),
        SendError::ClosedByReceiver => "closed by the receiver before all was sent".into(),
        SendError::ReceiveMaxReached => "receiver's maximum reached (StreamMaxMoney)".into(),
        SendError::Rejected(code) => format!("rejected {} (final error)", code.as_str()),
        SendError::TooManyFailures => "too many rejects in a row".into(),
        SendError::NoRandomness => "no randomness from the OS".into(),
    }
}

type SpspResult = (usize, u64, Result<SpspResponse, String>, Duration);

/// The SPSP query threads: requests in, responses out (each wakes the
/// event loop).
struct Fetchers {
    tx: Option<crossbeam::channel::Sender<(usize, u64)>>,
    rx: crossbeam::channel::Receiver<SpspResult>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Fetchers {
    fn start(
        url: &str,
        client: &SpspClient,
        n: usize,
        waker: Arc<Waker>,
    ) -> Result<Fetchers, String> {
        let (tx, req_rx) = crossbeam::channel::unbounded::<(usize, u64)>();
        let (res_tx, rx) = crossbeam::channel::unbounded::<SpspResult>();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let req_rx = req_rx.clone();
            let res_tx = res_tx.clone();
            let client = client.clone();
            let url = url.to_string();
            let waker = waker.clone();
            let h = std::thread::Builder::new()
                .name(format!("spsp-{i}"))
                .spawn(move || {
                    while let Ok((slot, id)) = req_rx.recv() {
                        let t = Instant::now();
                        let r = client.query(&url);
                        if res_tx.send((slot, id, r, t.elapsed())).is_err() {
                            return;
                        }
                        let _ = waker.wake();
                    }
                })
                .map_err(|e| format!("spawn SPSP thread: {e}"))?;
            threads.push(h);
        }
        Ok(Fetchers {
            tx: Some(tx),
            rx,
            threads,
        })
    }

    fn request(&self, slot: usize, id: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((slot, id));
        }
    }
}

impl Drop for Fetchers {
    fn drop(&mut self) {
        // Queued requests are dropped; a query in progress ends by its timeout.
        self.tx = None;
        while self.rx.try_recv().is_ok() {}
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

/// Runs the payments. `Err` when the run cannot start (a send link or the
/// first SPSP query fails); payment failures are in the result.
pub fn run(cfg: &StreamConfig, stop: Arc<AtomicBool>) -> Result<StreamResult, String> {
    if cfg.send.is_empty() {
        return Err("no send link".into());
    }
    let clock = Clock::new();
    let client = SpspClient::new(cfg.connect_timeout);
    // The first SPSP query before anything else: a wrong URL is one clear
    // error, not one failed payment after another. Its answer is the first
    // payment's connection.
    let mut first: Option<(SpspResponse, Duration)> = None;
    if let Payee::Spsp { url } = &cfg.payee {
        let t = Instant::now();
        let r = client.query(url)?;
        first = Some((r, t.elapsed()));
    }
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut conns = Vec::new();
    let mut source = cfg.source_address.clone();
    for url in &cfg.send {
        for _ in 0..cfg.conns.max(1) {
            let ask = source.is_none() && url.scheme == Scheme::Btp;
            conns.push(open_conn(url, cfg.connect_timeout, ask, &mut source)?);
        }
    }
    for (i, c) in conns.iter_mut().enumerate() {
        poll.registry()
            .register(&mut c.stream, Token(i), Interest::READABLE)
            .map_err(|e| format!("{}: {e}", c.name))?;
    }
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| format!("poll: {e}"))?);
    let fetchers = match &cfg.payee {
        Payee::Spsp { url } => Some(Fetchers::start(
            url,
            &client,
            cfg.spsp_threads.min(cfg.concurrency).max(1),
            waker.clone(),
        )?),
        Payee::Direct(_) => None,
    };
    let mut st = State {
        source,
        clock,
        slots: (0..cfg.concurrency.max(1)).map(|_| Slot::Free).collect(),
        rng: SharedRng(Rc::new(RefCell::new(OsRandom::new()))),
        cfg: cfg.clone(),
        r: StreamResult::new(),
    };
    let start_ns = 0u64;
    let end_ns = cfg
        .duration
        .map_or(u64::MAX, |d| start_ns.saturating_add(d.as_nanos() as u64));
    let mut hard_ns = end_ns.saturating_add(cfg.drain.as_nanos() as u64);
    let limit = cfg.payments.unwrap_or(u64::MAX);
    let grace_ns = cfg.expiry.as_nanos() as u64 + 1_000_000_000;
    let mut next_conn = 0usize;
    let mut events = Events::with_capacity(256);
    let show = cfg.progress && std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let mut stopped_early = false;

    loop {
        let now = st.clock.now_ns();
        let interrupted = stop.load(Ordering::Relaxed);
        if interrupted && !stopped_early {
            stopped_early = true;
            st.r.aborted = Some("interrupted".into());
            // Payments in progress get a short while to close.
            hard_ns = hard_ns.min(now + 2_000_000_000);
        }
        let starting = !interrupted && now < end_ns;

        // SPSP answers: the payment starts paying, or fails.
        if let Some(f) = &fetchers {
            while let Ok((slot, id, res, took)) = f.rx.try_recv() {
                let Slot::Fetching { id: want, start_ns } = st.slots[slot] else {
                    continue;
                };
                if want != id {
                    continue;
                }
                record(&mut st.r.spsp_hist, took.as_nanos() as u64);
                match res {
                    Ok(resp) => {
                        let sender = st.sender_for(&resp);
                        st.slots[slot] = Slot::Paying(Box::new(Payment {
                            id,
                            start_ns,
                            sender,
                        }));
                    }
                    Err(e) => {
                        st.slots[slot] = Slot::Free;
                        st.payment_failed(e);
                    }
                }
            }
        }

        // New payments into free slots.
        if starting {
            for slot in 0..st.slots.len() {
                if st.r.started >= limit {
                    break;
                }
                if !matches!(st.slots[slot], Slot::Free) {
                    continue;
                }
                let id = st.r.started;
                st.r.started += 1;
                st.r.amount_requested += cfg.amount as u128;
                let now = st.clock.now_ns();
                let ready = match (&cfg.payee, first.take()) {
                    (Payee::Direct(r), _) => Some(r.clone()),
                    (Payee::Spsp { .. }, Some((r, took))) => {
                        record(&mut st.r.spsp_hist, took.as_nanos() as u64);
                        Some(r)
                    }
                    (Payee::Spsp { .. }, None) => None,
                };
                match ready {
                    Some(resp) => {
                        if st.r.destination.is_none() {
                            st.r.destination = Some(resp.destination_account.clone());
                        }
                        let sender = st.sender_for(&resp);
                        st.slots[slot] = Slot::Paying(Box::new(Payment {
                            id,
                            start_ns: if id == 0 { start_ns } else { now },
                            sender,
                        }));
                    }
                    None => {
                        st.slots[slot] = Slot::Fetching { id, start_ns: now };
                        if let Some(f) = &fetchers {
                            f.request(slot, id);
                        }
                    }
                }
            }
        }

        // Prepares of every payment, round-robin over the live links.
        let wall = link::wall_ms();
        let live: Vec<usize> = (0..conns.len()).filter(|i| !conns[*i].dead).collect();
        for slot in 0..st.slots.len() {
            let Slot::Paying(pay) = &mut st.slots[slot] else {
                continue;
            };
            if !live.is_empty() {
                while let Some(p) = pay.sender.poll_prepare(wall) {
                    let ilp = pay.sender.ilp_prepare(&p);
                    let c = &mut conns[live[next_conn % live.len()]];
                    next_conn = next_conn.wrapping_add(1);
                    let sent_ns = st.clock.now_ns();
                    let pending = Pending {
                        slot,
                        payment: pay.id,
                        seq: p.sequence,
                        sent_ns,
                        deadline_ns: sent_ns + grace_ns,
                        condition: p.execution_condition,
                    };
                    write_prepare(c, &ilp, pending);
                    st.r.packets.sent += 1;
                }
            }
            if pay.sender.is_done() {
                st.finish(slot, "");
            }
        }

        for c in conns.iter_mut() {
            flush(c, &mut st);
            check_timeouts(c, &mut st, now);
        }

        let busy = st.slots.iter().any(|s| !matches!(s, Slot::Free));
        if !busy && (!starting || st.r.started >= limit) {
            break;
        }
        if conns.iter().all(|c| c.dead) {
            let why =
                st.r.errors
                    .0
                    .first()
                    .map(|e| e.0.clone())
                    .unwrap_or_else(|| "every send link failed".into());
            st.r.aborted = Some(why);
            end_payments(&mut st, &mut conns, "its send links failed");
            break;
        }
        if now >= hard_ns {
            end_payments(
                &mut st,
                &mut conns,
                "did not finish before the end of the run",
            );
            break;
        }

        if show && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprint!(
                "\r  {:.0} s: payments {} done, {} failed, {} in progress; packets {} sent; delivered {}   ",
                now as f64 / 1e9,
                fmt_int(st.r.completed as u128),
                fmt_int(st.r.failed as u128),
                st.slots.iter().filter(|s| !matches!(s, Slot::Free)).count(),
                fmt_int(st.r.packets.sent as u128),
                fmt_int(st.r.amount_delivered)
            );
            let _ = std::io::stderr().flush();
        }

        // Sleep until a reply, an SPSP answer, or 1 ms (back-offs and
        // timeouts are checked each turn).
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(1))) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                st.r.errors.add(format!("poll: {e}"));
                st.r.aborted = Some(format!("poll: {e}"));
                end_payments(&mut st, &mut conns, "the event loop failed");
                break;
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if ev.token() != WAKER && i < conns.len() {
                read(&mut conns[i], &mut st);
            }
        }
    }
    if show {
        eprintln!();
    }
    for c in &conns {
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
    }
    drop(fetchers);
    st.r.elapsed_secs = st.clock.now_ns() as f64 / 1e9;
    st.r.source_address = st.source.clone();
    Ok(st.r)
}

/// Every payment still in progress fails with `why`; what is in flight is lost.
fn end_payments(st: &mut State, conns: &mut [Conn], why: &str) {
    for c in conns.iter_mut() {
        st.r.packets.lost += c.in_flight() as u64;
        c.by_rid.clear();
        c.in_order.clear();
    }
    for slot in 0..st.slots.len() {
        match std::mem::replace(&mut st.slots[slot], Slot::Free) {
            Slot::Free => {}
            Slot::Fetching { .. } => st.payment_failed(format!("SPSP query: {why}")),
            Slot::Paying(p) => {
                st.slots[slot] = Slot::Paying(p);
                st.finish(slot, why);
            }
        }
    }
}

fn write_prepare(c: &mut Conn, ilp: &[u8], p: Pending) {
    if c.http {
        link::write_http_request_head(&mut c.wbuf, &c.url, ilp.len());
        c.wbuf.extend_from_slice(ilp);
        c.in_order.push_back(Some(p));
    } else {
        let rid = c.next_rid;
        c.next_rid = c.next_rid.wrapping_add(1).max(1);
        let mut msg = BytesMut::with_capacity(ilp.len() + 32);
        btp::write_ilp_message(&mut msg, rid, ilp);
        ws::write_frame(&mut c.wbuf, Opcode::Binary, &msg, Some(CLIENT_MASK));
        c.by_rid.insert(rid, p);
    }
}

fn flush(c: &mut Conn, st: &mut State) {
    if c.dead {
        return;
    }
    let mut failed = None;
    while c.wpos < c.wbuf.len() {
        match std::io::Write::write(&mut c.stream, &c.wbuf[c.wpos..]) {
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
        // Replies already in the socket still count.
        read(c, st);
        kill(c, st, msg);
        return;
    }
    if c.wpos == c.wbuf.len() {
        c.wbuf.clear();
        c.wpos = 0;
    }
}

/// The link failed: what is in flight on it is lost (its payments resend
/// on the other links, after a back-off).
fn kill(c: &mut Conn, st: &mut State, msg: String) {
    if c.dead {
        return;
    }
    c.dead = true;
    st.r.errors.add(msg);
    let pending: Vec<Pending> = c
        .by_rid
        .drain()
        .map(|(_, p)| p)
        .chain(c.in_order.drain(..).flatten())
        .collect();
    for p in pending {
        st.on_lost(p, false);
    }
    c.wbuf.clear();
    c.wpos = 0;
    let _ = c.stream.shutdown(std::net::Shutdown::Both);
}

fn check_timeouts(c: &mut Conn, st: &mut State, now: u64) {
    if c.dead {
        return;
    }
    let expired: Vec<u32> = c
        .by_rid
        .iter()
        .filter(|(_, p)| now > p.deadline_ns)
        .map(|(rid, _)| *rid)
        .collect();
    for rid in expired {
        if let Some(p) = c.by_rid.remove(&rid) {
            st.on_lost(p, true);
        }
    }
    for e in c.in_order.iter_mut() {
        if let Some(p) = *e {
            if now > p.deadline_ns {
                *e = None;
                st.on_lost(p, true);
            }
        }
    }
}

fn read(c: &mut Conn, st: &mut State) {
    loop {
        if c.dead {
            return;
        }
        match c.rb.read_from(&mut c.stream) {
            Ok(0) => {
                let msg = format!("{}: connection closed by peer", c.name);
                kill(c, st, msg);
                return;
            }
            Ok(_) => {
                if c.http {
                    process_http(c, st);
                } else {
                    process_btp(c, st);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let msg = format!("{}: {}", c.name, link::io_cause(&e));
                kill(c, st, msg);
                return;
            }
        }
    }
}

fn process_btp(c: &mut Conn, st: &mut State) {
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
                kill(c, st, msg);
                return;
            }
        };
        let (opcode, range) = match &frame {
            Frame::InPlace { opcode, range } => (*opcode, Some(range.clone())),
            Frame::Reassembled { opcode } => (*opcode, None),
        };
        let p: Vec<u8> = match &range {
            Some(r) => c.rb.data[r.clone()].to_vec(),
            None => c.sp.assembled.clone(),
        };
        match opcode {
            Opcode::Binary => {}
            Opcode::Ping => {
                ws::write_frame(&mut c.wbuf, Opcode::Pong, &p, Some(CLIENT_MASK));
                continue;
            }
            Opcode::Close => {
                let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                let msg = format!(
                    "{}: connection closed by peer (WebSocket close {})",
                    c.name,
                    code.map_or("without code".to_string(), |c| c.to_string())
                );
                kill(c, st, msg);
                return;
            }
            _ => continue,
        }
        let b = match Btp::new_checked(&p[..]) {
            Ok(b) => b,
            Err(e) => {
                st.r.errors
                    .add(format!("{}: malformed BTP packet ({e})", c.name));
                continue;
            }
        };
        let rid = b.request_id();
        match b.packet_type() {
            BtpType::Response => match (c.by_rid.remove(&rid), b.ilp()) {
                (Some(pending), Some(ilp)) => st.on_reply(pending, ilp),
                (Some(pending), None) => st.on_transport_error(
                    pending,
                    format!("{}: BTP response without an ILP packet", c.name),
                ),
                (None, _) => st.r.packets.unmatched += 1,
            },
            BtpType::Error => {
                let m = link::btp_error_text(&c.name, &b);
                match c.by_rid.remove(&rid) {
                    Some(pending) => st.on_transport_error(pending, m),
                    None => {
                        st.r.packets.unmatched += 1;
                        st.r.errors.add(m);
                    }
                }
            }
            // A request from the connector on our sending link: we receive
            // nothing (STREAM money goes one way here).
            _ => link::refuse_request_on_send_link(
                &mut c.wbuf,
                &b,
                b"ilp-loadgen stream: this link only sends",
            ),
        }
    }
}

fn process_http(c: &mut Conn, st: &mut State) {
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
                kill(c, st, msg);
                return;
            }
        };
        let body = c.rb.pending()[resp.body.clone()].to_vec();
        c.rb.consume(resp.len);
        match c.in_order.pop_front() {
            Some(Some(pending)) => {
                if resp.status == 200 {
                    st.on_reply(pending, &body);
                } else {
                    let cause = link::http_failure_cause(resp.status, &body);
                    let m = format!("{}: HTTP {} ({cause})", c.name, resp.status);
                    st.on_transport_error(pending, m);
                }
            }
            // Timed out already, or nothing asked.
            Some(None) | None => st.r.packets.unmatched += 1,
        }
        if resp.close {
            let msg = format!(
                "{}: server closed the connection (Connection: close)",
                c.name
            );
            kill(c, st, msg);
            return;
        }
    }
}

//! Payments as a library API: one-shot (a single Prepare) and chunked
//! (a cumulative destination amount before a deadline, see [`crate::chunked`]).
//!
//! The payer is the Loopback Transport at walking pace: a blocking send
//! link, and a receiver thread that fulfills what comes back and reports
//! each incoming fulfillment as an event.

use ilpd_codec::ilp::{Fulfill, PrepareBuilder, Reject};
use ilpd_codec::sha256::BatchVerifier;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chunked::{ChunkPlanner, ChunkResult, ChunkedConfig, Status};
use crate::link::{self, BlockingLink};
use crate::lt::{self, OutcomeMix, Secret};
use crate::receiver::{Receiver, ReceiverEvent, ReceiverRules};
use crate::run::{open_receive_side, RunConfig, Target};
use crate::stats::{Live, ReceiverStats};
use crate::url::LinkUrl;

/// Something that happened to a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayEvent {
    /// Our Prepare `seq` was fulfilled; the receiver saw `delivered`.
    OutgoingFulfill {
        seq: u64,
        source_amount: u64,
        delivered: u64,
    },
    /// Our Prepare `seq` was rejected.
    OutgoingReject {
        seq: u64,
        source_amount: u64,
        code: String,
        message: String,
    },
    /// Our receiver fulfilled a Prepare it saw with `amount`.
    IncomingFulfill { seq: u64, amount: u64 },
    /// Our receiver rejected a Prepare.
    IncomingReject { seq: u64, amount: u64, code: String },
}

/// How a one-shot payment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OneShot {
    Fulfilled {
        delivered: u64,
    },
    Rejected {
        code: String,
        message: String,
        triggered_by: String,
        /// For F04 from our own receiver: the amount it saw (reject data).
        delivered: Option<u64>,
    },
    Failed(String),
}

/// How a chunked payment ended.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkedOutcome {
    pub done: bool,
    pub delivered: u64,
    pub source_fulfilled: u64,
    pub chunks_sent: u64,
    pub chunks_fulfilled: u64,
    pub elapsed: Duration,
    pub last_error: Option<String>,
}

/// A connected payer.
pub struct Payer {
    link: BlockingLink,
    address: String,
    secret: Secret,
    verifier: BatchVerifier,
    next: u64,
    events: crossbeam::channel::Receiver<ReceiverEvent>,
    stop: Arc<AtomicBool>,
    receiver: Option<std::thread::JoinHandle<ReceiverStats>>,
    timeout: Duration,
}

impl Payer {
    /// Opens the receive side and the send link described by `cfg.target`.
    pub fn open(cfg: &RunConfig) -> Result<Payer, String> {
        let secret = Secret::from_seed(cfg.seed ^ 0x9a7);
        let side = open_receive_side(cfg, 1)?;
        let (tx, rx) = crossbeam::channel::unbounded();
        let rules = ReceiverRules {
            address: side.address.clone().into_bytes(),
            secret,
            mix: OutcomeMix::all_fulfill(cfg.seed),
            min_amount: 0,
            min_time_left_ms: cfg.min_time_left_ms,
            stall: None,
        };
        let mut links = side.links;
        let mut listeners = side.listeners;
        let r = Receiver::new(
            rules,
            links.pop().unwrap_or_default(),
            listeners.pop().flatten(),
            side.server_token,
            Some(tx),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("pay-recv".into())
            .spawn(move || r.run(None, stop2, Arc::new(Live::default())))
            .map_err(|e| format!("spawn receiver: {e}"))?;
        let url = side
            .send_urls
            .first()
            .cloned()
            .ok_or_else(|| "no send link".to_string())?;
        let link =
            match BlockingLink::open(&link::link_name("send", &url), &url, cfg.connect_timeout) {
                Ok(l) => l,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    let _ = handle.join();
                    return Err(e);
                }
            };
        Ok(Payer {
            link,
            address: side.address,
            secret,
            verifier: BatchVerifier::new(cfg.sha256)?,
            next: 0,
            events: rx,
            stop,
            receiver: Some(handle),
            timeout: cfg.connect_timeout,
        })
    }

    /// Our receiving address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn drain_events(&self, on_event: &mut impl FnMut(PayEvent)) {
        while let Ok(ev) = self.events.try_recv() {
            on_event(match ev {
                ReceiverEvent::IncomingFulfill { seq, amount } => {
                    PayEvent::IncomingFulfill { seq, amount }
                }
                ReceiverEvent::IncomingReject { seq, amount, code } => PayEvent::IncomingReject {
                    seq,
                    amount,
                    code: String::from_utf8_lossy(&code).into_owned(),
                },
            });
        }
    }

    /// Sends one Prepare of `source_amount` that the receiver fulfills only
    /// if it sees at least `min_dest`, expiring after `expiry`.
    pub fn one_shot(
        &mut self,
        source_amount: u64,
        min_dest: u64,
        expiry: Duration,
        on_event: &mut impl FnMut(PayEvent),
    ) -> OneShot {
        let seq = lt::make_seq(0xfffe, self.next);
        self.next += 1;
        let fulfillment = self.secret.fulfillment(seq);
        let mut cond = [[0u8; 32]];
        self.verifier.hash(&[fulfillment], &mut cond);
        let mut data = [0u8; lt::DATA_HEADER_LEN];
        lt::write_data_header(&mut data, seq, min_dest);
        let dest = format!("{}.pay", self.address);
        let prepare = PrepareBuilder {
            amount: source_amount,
            expires_at: link::expiry_in(expiry),
            execution_condition: &cond[0],
            destination: dest.as_bytes(),
            data: &data,
        }
        .build();
        let reply = self.link.request_ilp(&prepare, expiry + self.timeout);
        // The receiver's event for this packet is sent before its reply.
        let settle = Instant::now() + Duration::from_millis(50);
        let out = match reply {
            Err(e) => OneShot::Failed(e),
            Ok(b) => {
                if let Ok(f) = Fulfill::new_checked(&b[..]) {
                    if *f.fulfillment() != fulfillment {
                        OneShot::Failed("fulfillment does not match the condition".into())
                    } else {
                        let delivered = f
                            .data()
                            .get(..8)
                            .and_then(|d| d.try_into().ok())
                            .map(u64::from_be_bytes)
                            .unwrap_or(min_dest);
                        on_event(PayEvent::OutgoingFulfill {
                            seq,
                            source_amount,
                            delivered,
                        });
                        OneShot::Fulfilled { delivered }
                    }
                } else if let Ok(r) = Reject::new_checked(&b[..]) {
                    let code = r.code().as_str().to_string();
                    let message = String::from_utf8_lossy(r.message()).into_owned();
                    on_event(PayEvent::OutgoingReject {
                        seq,
                        source_amount,
                        code: code.clone(),
                        message: message.clone(),
                    });
                    let delivered = r.data().try_into().ok().map(u64::from_be_bytes);
                    OneShot::Rejected {
                        code,
                        message,
                        triggered_by: String::from_utf8_lossy(r.triggered_by()).into_owned(),
                        delivered,
                    }
                } else {
                    OneShot::Failed("malformed ILP reply".into())
                }
            }
        };
        while Instant::now() < settle && self.events.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.drain_events(on_event);
        out
    }

    /// Delivers `cfg.target` at the destination before `cfg.deadline`.
    pub fn chunked(
        &mut self,
        cfg: ChunkedConfig,
        on_event: &mut impl FnMut(PayEvent),
    ) -> ChunkedOutcome {
        let start = Instant::now();
        let mut planner = ChunkPlanner::new(cfg);
        let mut last_error = None;
        while let Some(chunk) = planner.next_chunk(start.elapsed()) {
            let out = self.one_shot(
                chunk.source_amount,
                chunk.min_destination,
                chunk.expiry,
                on_event,
            );
            let result = match out {
                OneShot::Fulfilled { delivered } => ChunkResult::Fulfilled { delivered },
                OneShot::Rejected {
                    ref code,
                    delivered: Some(delivered),
                    ..
                } if code == "F04" => {
                    // Our receiver puts the amount it saw in the reject data.
                    ChunkResult::BelowThreshold { delivered }
                }
                OneShot::Rejected { code, message, .. } => {
                    last_error = Some(format!("{code} {message}"));
                    ChunkResult::Failed
                }
                OneShot::Failed(e) => {
                    last_error = Some(e);
                    // Do not spin on a dead link.
                    std::thread::sleep(Duration::from_millis(10));
                    ChunkResult::Failed
                }
            };
            planner.on_result(&chunk, result, start.elapsed());
        }
        ChunkedOutcome {
            done: planner.status(start.elapsed()) == Status::Done,
            delivered: planner.delivered(),
            source_fulfilled: planner.source_fulfilled(),
            chunks_sent: planner.chunks_sent,
            chunks_fulfilled: planner.chunks_fulfilled,
            elapsed: start.elapsed(),
            last_error,
        }
    }

    /// Stops the receiver thread.
    pub fn close(mut self) -> ReceiverStats {
        self.stop.store(true, Ordering::Relaxed);
        self.receiver
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Payer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.receiver.take() {
            let _ = h.join();
        }
    }
}

/// `ilp-loadgen pay` settings.
#[derive(Debug, Clone)]
pub struct PayCli {
    pub send: Option<LinkUrl>,
    pub recv: Option<LinkUrl>,
    pub recv_address: Option<String>,
    pub amount: u64,
    pub min_dest: Option<u64>,
    pub expiry: Duration,
    pub chunked: bool,
    pub deadline: Duration,
    pub min_chunk: u64,
    pub max_chunk: u64,
    pub min_rate: f64,
    pub seed: u64,
    pub quiet: bool,
}

/// `ilp-loadgen pay`.
pub fn main(a: &PayCli) -> ExitCode {
    let target = match (&a.send, &a.recv) {
        (Some(s), Some(r)) => Target::Connector {
            send: vec![s.clone()],
            recv: r.clone(),
            recv_ildcp: None,
        },
        _ => Target::Direct { http: false },
    };
    let cfg = RunConfig {
        target,
        recv_address: a.recv_address.clone(),
        recv_token: a
            .recv
            .as_ref()
            .filter(|r| !r.token.is_empty() && r.scheme == crate::url::Scheme::Http)
            .map(|r| r.token.clone()),
        seed: a.seed,
        ..RunConfig::default()
    };
    let mut payer = match Payer::open(&cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let quiet = a.quiet;
    let mut print = |e: PayEvent| {
        if !quiet {
            println!("event: {e:?}");
        }
    };
    let ok = if a.chunked {
        let c = ChunkedConfig {
            target: a.amount,
            deadline: a.deadline,
            min_chunk: a.min_chunk,
            max_chunk: a.max_chunk.max(a.min_chunk),
            min_rate: a.min_rate,
            seed: a.seed,
            ..ChunkedConfig::default()
        };
        let out = payer.chunked(c, &mut print);
        println!(
            "chunked payment to {}: {} — delivered {} of {} (source {}), {} of {} chunks fulfilled, {:.2} s{}",
            payer.address(),
            if out.done { "done" } else { "NOT done" },
            out.delivered,
            a.amount,
            out.source_fulfilled,
            out.chunks_fulfilled,
            out.chunks_sent,
            out.elapsed.as_secs_f64(),
            out.last_error.map(|e| format!("; last error: {e}")).unwrap_or_default()
        );
        out.done
    } else {
        let min = a.min_dest.unwrap_or(a.amount);
        match payer.one_shot(a.amount, min, a.expiry, &mut print) {
            OneShot::Fulfilled { delivered } => {
                println!(
                    "one-shot payment to {}: fulfilled, delivered {delivered}",
                    payer.address()
                );
                true
            }
            OneShot::Rejected {
                code,
                message,
                triggered_by,
                ..
            } => {
                println!(
                    "one-shot payment to {}: rejected {code} by {triggered_by:?}: {message}",
                    payer.address()
                );
                false
            }
            OneShot::Failed(e) => {
                println!("one-shot payment to {}: failed: {e}", payer.address());
                false
            }
        }
    };
    let _ = payer.close();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

//! A sans-IO STREAM sender for one payment (RFC 29), for a load generator
//! or a CLI: it decides which Prepares to send and reads their replies;
//! the caller moves the bytes and tells it the time.
//!
//! One payment goes through these phases:
//!
//! 1. **Probe.** One Prepare of `probe_amount` with a random (so
//!    unfulfillable) condition and, if configured, our address in
//!    `ConnectionNewAddress`. The receiver rejects it with F99 and says in
//!    its encrypted reply how much arrived: that ratio is the exchange
//!    rate, and `ConnectionAssetDetails` says in which asset. F08 on the
//!    probe sets the maximum packet amount and probes again below it; a
//!    probe too small to arrive as anything (0 arrived, or R01 from a hop
//!    that converts it to 0) is sent again ten times larger, up to one
//!    packet or the whole payment.
//! 2. **Send.** Prepares on stream 1 with fulfillable conditions, each
//!    with a minimum destination amount = amount × probed rate × (1 −
//!    slippage), at most `max_in_flight` at a time.
//! 3. **Close.** A last, empty Prepare with `ConnectionClose`.
//!
//! Rejects steer the packet size (RFC 29 leaves congestion control to the
//! implementation; this follows ilp-protocol-stream's rules):
//!
//! - F08 Amount Too Large: the reject data gives (received, maximum) in
//!   the rejecting hop's units; the new maximum packet amount is
//!   amount × maximum / received.
//! - T04 Insufficient Liquidity: the packet amount becomes half the
//!   rejected one; any T or R error backs off (10 ms doubling to 1 s) and
//!   retries; fulfilled packets grow the amount again by an eighth.
//! - F99 from the receiver: with `StreamMaxMoney`, the stream cannot take
//!   that much; packets shrink to the room left, and a full stream ends
//!   the payment. If less arrived than the minimum, the rate got worse; a
//!   few in a row end the payment. A closed stream or connection ends it
//!   too (what was delivered is kept).
//! - More than 50 rejects in a row end the payment.
//! - Any other F error ends the payment.

use std::collections::HashMap;

use bytes::BytesMut;
use ilpd_codec::ilp::{packet_type, Fulfill, PrepareBuilder, Reject};
use ilpd_codec::{AmountTooLarge, ErrorClass, ErrorCode, Expiry, Fulfillment, PacketType};

use crate::crypto::ConnectionKeys;
use crate::packet::{Frame, Packet, PacketBuilder, StreamErrorCode};
use crate::rng::{RandomError, RandomSource};

/// Stream the money goes on (client streams are odd, RFC 29).
const STREAM_ID: u64 = 1;
/// Consecutive "less arrived than the minimum" rejects that end a payment.
const MAX_RATE_FAILURES: u32 = 5;
/// Consecutive rejects of any kind that end a payment.
const MAX_CONSECUTIVE_FAILURES: u32 = 50;

/// What one payment is.
#[derive(Clone)]
pub struct SenderConfig {
    /// `destination_account` from SPSP.
    pub destination: String,
    pub shared_secret: [u8; 32],
    /// Our address, sent in `ConnectionNewAddress` on the first packet.
    pub source_address: Option<String>,
    /// Source units to send.
    pub amount: u64,
    /// Size of the probe Prepare (source units).
    pub probe_amount: u64,
    /// Largest Prepare to start with; F08 lowers it.
    pub max_packet_amount: u64,
    /// Rate tolerance, in basis points of the probed rate (100 = 1 %).
    pub slippage_bp: u32,
    /// Refuse to pay below this many destination units per source unit
    /// (as num/den); checked against the probe.
    pub min_rate: Option<(u64, u64)>,
    /// Prepares in flight at most.
    pub max_in_flight: usize,
    /// Expiry of each Prepare, from `now`.
    pub expiry_ms: u64,
}

impl core::fmt::Debug for SenderConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SenderConfig")
            .field("destination", &self.destination)
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

impl SenderConfig {
    pub fn new(destination: impl Into<String>, shared_secret: [u8; 32], amount: u64) -> Self {
        SenderConfig {
            destination: destination.into(),
            shared_secret,
            source_address: None,
            amount,
            probe_amount: 1000,
            max_packet_amount: u64::MAX,
            slippage_bp: 100,
            min_rate: None,
            max_in_flight: 16,
            expiry_ms: 30_000,
        }
    }
}

/// Why a payment stopped before sending everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The probe said nothing arrives (rate 0), or less than `min_rate`.
    RateTooLow,
    /// Too many rejects in a row for "less than the minimum arrived".
    RateDropped,
    /// The receiver closed the stream or the connection.
    ClosedByReceiver,
    /// The receiver's stream is full (its `StreamMaxMoney` leaves no room).
    ReceiveMaxReached,
    /// A final error from the path or the receiver.
    Rejected(ErrorCode),
    /// Too many rejects in a row.
    TooManyFailures,
    /// No randomness for IVs or probe conditions.
    NoRandomness,
}

/// Progress of a payment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Source units in fulfilled Prepares.
    pub sent: u64,
    /// Destination units that arrived (the receivers' own counts).
    pub delivered: u64,
    pub fulfilled: u64,
    pub rejected: u64,
    /// Probed rate: destination units per source unit, as (num, den).
    pub rate: Option<(u64, u64)>,
}

/// A Prepare to send. `data` is the encrypted STREAM packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingPrepare {
    pub sequence: u64,
    pub amount: u64,
    pub expires_at: Expiry,
    pub execution_condition: [u8; 32],
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Probe,
    Money { min: u64 },
    Close,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    kind: Kind,
    amount: u64,
    condition: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Probe,
    Send,
    Close,
    Done,
}

/// The sender state machine of one payment.
pub struct Sender<R: RandomSource> {
    cfg: SenderConfig,
    keys: ConnectionKeys,
    rng: R,
    phase: Phase,
    sequence: u64,
    in_flight: HashMap<u64, InFlight>,
    /// Source units not yet in a fulfilled or in-flight Prepare.
    unsent: u64,
    max_packet: u64,
    /// Current packet size under congestion (≤ `max_packet`).
    packet: u64,
    /// `rate × (1 − slippage)` as num/den, for minimum amounts.
    min_num: u128,
    min_den: u128,
    stats: SendStats,
    asset: Option<(String, u8)>,
    not_before: u64,
    backoff_ms: u64,
    rate_failures: u32,
    failures: u32,
    told_address: bool,
    error: Option<SendError>,
    plain: Vec<u8>,
    /// The last `StreamMaxMoney` (receiveMax, totalReceived) of a reply.
    remote_max: Option<(u64, u64)>,
}

impl<R: RandomSource> Sender<R> {
    pub fn new(cfg: SenderConfig, rng: R) -> Self {
        let keys = ConnectionKeys::new(&cfg.shared_secret);
        let max_packet = cfg.max_packet_amount.max(1);
        Sender {
            unsent: cfg.amount,
            max_packet,
            packet: max_packet,
            keys,
            rng,
            phase: Phase::Probe,
            sequence: 0,
            in_flight: HashMap::new(),
            min_num: 0,
            min_den: 1,
            stats: SendStats::default(),
            asset: None,
            not_before: 0,
            backoff_ms: 0,
            rate_failures: 0,
            failures: 0,
            told_address: false,
            error: None,
            plain: Vec::new(),
            remote_max: None,
            cfg,
        }
    }

    pub fn destination(&self) -> &str {
        &self.cfg.destination
    }

    pub fn stats(&self) -> SendStats {
        self.stats
    }

    /// The receiver's asset (code, scale), once it told us.
    pub fn receiver_asset(&self) -> Option<(&str, u8)> {
        self.asset.as_ref().map(|(c, s)| (c.as_str(), *s))
    }

    /// Whether the payment is over (all sent and closed, or failed).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// `Some` once done: `Ok` if the whole amount was sent.
    pub fn result(&self) -> Option<Result<SendStats, SendError>> {
        if !self.is_done() {
            return None;
        }
        Some(match self.error {
            Some(e) => Err(e),
            None => Ok(self.stats),
        })
    }

    /// Prepares in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// When [`Sender::poll_prepare`] may next return something, if the
    /// sender is waiting on a back-off rather than on replies.
    pub fn next_wakeup(&self) -> Option<u64> {
        (self.not_before > 0 && !self.is_done()).then_some(self.not_before)
    }

    /// The next Prepare to send now, if any. Call until `None`.
    pub fn poll_prepare(&mut self, now_ms: u64) -> Option<OutgoingPrepare> {
        if self.phase == Phase::Done || now_ms < self.not_before {
            return None;
        }
        if self.in_flight.len() >= self.cfg.max_in_flight.max(1) {
            return None;
        }
        let r = match self.phase {
            Phase::Probe => {
                if !self.in_flight.is_empty() {
                    return None;
                }
                let amount = self.cfg.probe_amount.min(self.packet).max(1);
                self.build(now_ms, Kind::Probe, amount)
            }
            Phase::Send => {
                if self.unsent == 0 {
                    if self.in_flight.is_empty() {
                        self.phase = Phase::Close;
                        return self.poll_prepare(now_ms);
                    }
                    return None;
                }
                let amount = self.unsent.min(self.packet).max(1);
                let min = ((amount as u128 * self.min_num) / self.min_den) as u64;
                self.unsent -= amount;
                self.build(now_ms, Kind::Money { min }, amount)
            }
            Phase::Close => {
                if !self.in_flight.is_empty() {
                    return None;
                }
                self.build(now_ms, Kind::Close, 0)
            }
            Phase::Done => return None,
        };
        match r {
            Ok(p) => Some(p),
            Err(_) => {
                self.fail(SendError::NoRandomness);
                None
            }
        }
    }

    fn build(
        &mut self,
        now_ms: u64,
        kind: Kind,
        amount: u64,
    ) -> Result<OutgoingPrepare, RandomError> {
        self.sequence += 1;
        let address;
        let mut frames: Vec<Frame<'_>> = Vec::with_capacity(3);
        if !self.told_address {
            if let Some(a) = &self.cfg.source_address {
                address = a.clone();
                frames.push(Frame::ConnectionNewAddress {
                    source_account: address.as_bytes(),
                });
            }
        }
        let min = match kind {
            Kind::Probe => {
                frames.push(Frame::StreamMoney {
                    stream_id: STREAM_ID,
                    shares: 1,
                });
                0
            }
            Kind::Money { min } => {
                frames.push(Frame::StreamMoney {
                    stream_id: STREAM_ID,
                    shares: 1,
                });
                min
            }
            Kind::Close => {
                frames.push(Frame::ConnectionClose {
                    code: StreamErrorCode::NO_ERROR,
                    message: b"",
                });
                0
            }
        };
        let plain = PacketBuilder {
            packet_type: PacketType::Prepare,
            sequence: self.sequence,
            prepare_amount: min,
            frames: &frames,
        }
        .to_vec();
        let mut data = Vec::with_capacity(plain.len() + crate::crypto::OVERHEAD);
        self.keys.encrypt(&mut self.rng, &plain, &mut data)?;
        let execution_condition = match kind {
            Kind::Probe => {
                let mut c = [0u8; 32];
                self.rng.fill(&mut c)?;
                c
            }
            _ => self.keys.condition(&data).0,
        };
        self.in_flight.insert(
            self.sequence,
            InFlight {
                kind,
                amount,
                condition: execution_condition,
            },
        );
        Ok(OutgoingPrepare {
            sequence: self.sequence,
            amount,
            expires_at: Expiry(now_ms.saturating_add(self.cfg.expiry_ms)),
            execution_condition,
            data,
        })
    }

    /// The whole ILP Prepare for `p`.
    pub fn ilp_prepare(&self, p: &OutgoingPrepare) -> BytesMut {
        PrepareBuilder {
            amount: p.amount,
            expires_at: p.expires_at,
            execution_condition: &p.execution_condition,
            destination: self.cfg.destination.as_bytes(),
            data: &p.data,
        }
        .build()
    }

    /// Reads a whole ILP reply (Fulfill or Reject) to Prepare `sequence`.
    /// Anything else counts as a T00 reject.
    pub fn handle_reply(&mut self, now_ms: u64, sequence: u64, reply: &[u8]) {
        match packet_type(reply) {
            Ok(PacketType::Fulfill) => {
                if let Ok(f) = Fulfill::new_checked(reply) {
                    return self.on_fulfill(now_ms, sequence, f.fulfillment(), f.data());
                }
            }
            Ok(PacketType::Reject) => {
                if let Ok(r) = Reject::new_checked(reply) {
                    return self.on_reject(now_ms, sequence, r.code(), r.data());
                }
            }
            _ => {}
        }
        self.on_reject(now_ms, sequence, ErrorCode::T00_INTERNAL_ERROR, &[]);
    }

    /// The reply's STREAM packet, if it decrypts and answers `sequence`.
    fn reply_packet<'b>(
        &self,
        plain: &'b mut Vec<u8>,
        data: &[u8],
        sequence: u64,
        ty: PacketType,
    ) -> Option<Packet<'b>> {
        self.keys.decrypt(data, plain).ok()?;
        let p = Packet::decode(plain).ok()?;
        // RFC 29 "STREAM Packet": discard a reply for another sequence or
        // of the wrong type.
        (p.sequence == sequence && p.packet_type == ty).then_some(p)
    }

    /// Reads frames that matter to the sender: asset details, closes.
    fn read_frames(&mut self, p: &Packet<'_>) -> bool {
        let mut closed = false;
        for f in p.frames() {
            match f {
                Frame::ConnectionAssetDetails {
                    source_asset_code,
                    source_asset_scale,
                } if self.asset.is_none() => {
                    self.asset = Some((
                        String::from_utf8_lossy(source_asset_code).into_owned(),
                        source_asset_scale,
                    ));
                }
                Frame::ConnectionClose { .. } => closed = true,
                Frame::StreamClose { stream_id, .. } if stream_id == STREAM_ID => closed = true,
                Frame::StreamMaxMoney {
                    stream_id,
                    receive_max,
                    total_received,
                } if stream_id == STREAM_ID => {
                    self.remote_max = Some((receive_max, total_received));
                }
                _ => {}
            }
        }
        closed
    }

    /// A Fulfill for Prepare `sequence`.
    pub fn on_fulfill(&mut self, now_ms: u64, sequence: u64, fulfillment: &[u8; 32], data: &[u8]) {
        let Some(sent) = self.in_flight.get(&sequence).copied() else {
            return;
        };
        if Fulfillment(*fulfillment).condition().0 != sent.condition {
            // Not a fulfillment of our Prepare: nobody can be paid with
            // it, so it is a failed packet (RFC 27 "ILP Fulfill").
            return self.on_reject(now_ms, sequence, ErrorCode::F05_WRONG_CONDITION, &[]);
        }
        self.in_flight.remove(&sequence);
        self.told_address = true;
        self.failures = 0;
        self.rate_failures = 0;
        self.backoff_ms = 0;
        let mut plain = std::mem::take(&mut self.plain);
        let arrived = self
            .reply_packet(&mut plain, data, sequence, PacketType::Fulfill)
            .map(|p| (p.prepare_amount, p));
        let closed = match &arrived {
            Some((_, p)) => {
                let p = *p;
                self.read_frames(&p)
            }
            None => false,
        };
        let arrived_amount = arrived.map(|(a, _)| a);
        self.plain = plain;
        match sent.kind {
            Kind::Probe | Kind::Money { .. } => {
                // A probe is not fulfillable; if it was, it still paid.
                self.stats.fulfilled += 1;
                self.stats.sent += sent.amount;
                let min = match sent.kind {
                    Kind::Money { min } => min,
                    _ => 0,
                };
                self.stats.delivered += arrived_amount.unwrap_or(min);
                if sent.kind == Kind::Probe {
                    self.unsent = self.unsent.saturating_sub(sent.amount);
                    self.set_rate(sent.amount, arrived_amount.unwrap_or(0));
                }
                // Additive increase, up to the known maximum.
                self.packet = self
                    .max_packet
                    .min(self.packet.saturating_add(self.packet / 8 + 1));
                if closed {
                    self.finish(if self.unsent > 0 {
                        Some(SendError::ClosedByReceiver)
                    } else {
                        None
                    });
                }
            }
            Kind::Close => self.finish(None),
        }
    }

    /// A Reject for Prepare `sequence`.
    pub fn on_reject(&mut self, now_ms: u64, sequence: u64, code: ErrorCode, data: &[u8]) {
        let Some(sent) = self.in_flight.remove(&sequence) else {
            return;
        };
        self.stats.rejected += 1;
        if let Kind::Money { .. } = sent.kind {
            self.unsent += sent.amount;
        }
        if sent.kind == Kind::Close {
            // Closing is best effort.
            return self.finish(None);
        }
        let mut plain = std::mem::take(&mut self.plain);
        self.remote_max = None;
        let reply = if code == ErrorCode::F99_APPLICATION_ERROR {
            self.reply_packet(&mut plain, data, sequence, PacketType::Reject)
        } else {
            None
        };
        let closed = reply.as_ref().is_some_and(|p| {
            let p = *p;
            self.read_frames(&p)
        });
        let arrived = reply.map(|p| p.prepare_amount);
        self.plain = plain;

        if sent.kind == Kind::Probe {
            // Too small to tell anything: nothing arrived, or a hop could
            // not convert it at all (R01, as ilpd answers). Probe ten times
            // larger, up to one packet or the whole payment.
            let nothing = (arrived == Some(0) && !closed)
                || (arrived.is_none() && code == ErrorCode::R01_INSUFFICIENT_SOURCE_AMOUNT);
            if nothing {
                let cap = self.packet.min(self.cfg.amount).max(1);
                if sent.amount < cap {
                    self.cfg.probe_amount = sent.amount.saturating_mul(10).min(cap);
                    return;
                }
                return self.fail(SendError::RateTooLow);
            }
            if let Some(arrived) = arrived {
                if closed {
                    return self.fail(SendError::ClosedByReceiver);
                }
                self.set_rate(sent.amount, arrived);
                return;
            }
        }
        self.failures += 1;
        if self.failures > MAX_CONSECUTIVE_FAILURES {
            return self.fail(SendError::TooManyFailures);
        }
        if code == ErrorCode::F08_AMOUNT_TOO_LARGE {
            let new_max = match AmountTooLarge::decode(data) {
                Ok(a) if a.received > 0 && a.maximum < a.received => {
                    ((sent.amount as u128 * a.maximum as u128) / a.received as u128) as u64
                }
                // No usable data: halve.
                _ => sent.amount / 2,
            };
            self.max_packet = new_max.max(1).min(self.max_packet);
            self.packet = self.packet.min(self.max_packet);
            return;
        }
        if code == ErrorCode::F99_APPLICATION_ERROR {
            if closed {
                return self.fail(SendError::ClosedByReceiver);
            }
            if let (Some((max, total)), Kind::Money { .. }) = (self.remote_max, sent.kind) {
                // Over the stream's receive max: size packets to the room
                // left, converted to source units at the probed rate.
                let room = max.saturating_sub(total);
                if room == 0 {
                    return self.fail(SendError::ReceiveMaxReached);
                }
                let (num, den) = self.stats.rate.unwrap_or((1, 1));
                let src = (room as u128 * den as u128)
                    .checked_div(num as u128)
                    .unwrap_or(room as u128);
                self.packet = self.packet.min(src.min(u64::MAX as u128) as u64).max(1);
                return;
            }
            if let (Some(arrived), Kind::Money { min }) = (arrived, sent.kind) {
                if arrived < min {
                    self.rate_failures += 1;
                    if self.rate_failures >= MAX_RATE_FAILURES {
                        return self.fail(SendError::RateDropped);
                    }
                    return;
                }
            }
            return self.fail(SendError::Rejected(code));
        }
        match code.class() {
            ErrorClass::Temporary | ErrorClass::Relative => {
                if code == ErrorCode::T04_INSUFFICIENT_LIQUIDITY {
                    // Half the size that failed; several rejects of
                    // packets sent together count once.
                    self.packet = self.packet.min(sent.amount / 2).max(1);
                }
                self.backoff_ms = (self.backoff_ms * 2).clamp(10, 1000);
                self.not_before = now_ms + self.backoff_ms;
            }
            ErrorClass::Final => self.fail(SendError::Rejected(code)),
        }
    }

    /// The caller lost Prepare `sequence` (no reply by its expiry).
    pub fn on_lost(&mut self, now_ms: u64, sequence: u64) {
        self.on_reject(now_ms, sequence, ErrorCode::R00_TRANSFER_TIMED_OUT, &[]);
    }

    fn set_rate(&mut self, sent: u64, arrived: u64) {
        self.stats.rate = Some((arrived, sent));
        if arrived == 0 {
            return self.fail(SendError::RateTooLow);
        }
        if let Some((num, den)) = self.cfg.min_rate {
            if (arrived as u128) * (den as u128) < (num as u128) * (sent as u128) {
                return self.fail(SendError::RateTooLow);
            }
        }
        let keep = 10_000u128.saturating_sub(self.cfg.slippage_bp as u128);
        self.min_num = arrived as u128 * keep;
        self.min_den = sent as u128 * 10_000;
        if self.phase == Phase::Probe {
            self.phase = Phase::Send;
        }
    }

    fn fail(&mut self, e: SendError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
        // Tell the receiver we are done, if it can still hear us.
        self.phase = if matches!(e, SendError::ClosedByReceiver | SendError::NoRandomness) {
            Phase::Done
        } else {
            Phase::Close
        };
        self.unsent = 0;
        self.not_before = 0;
    }

    fn finish(&mut self, e: Option<SendError>) {
        if let Some(e) = e {
            if self.error.is_none() {
                self.error = Some(e);
            }
        }
        if self.in_flight.is_empty() {
            self.phase = Phase::Done;
        } else {
            self.phase = Phase::Close;
            self.unsent = 0;
        }
    }
}

//! [`Core`]: one worker's forwarding state machine (RFC 27 "ILP Packet Lifecycle";
//! docs/design.md "Connector rules", "Protocol decisions").
//!
//! A Prepare goes through, in order: parse (F01), expired on arrival (R00),
//! packets/s limit (T05), max packet amount (F08), then either a local
//! answer (`peer.*`, echo: see `peer.rs`) or forwarding: route (F02), next
//! hop connected (T01), exchange rate (R01/F08/T00), outgoing expiry (R02),
//! pending table room (T03), amount/s limit (T05), incoming reservation
//! (T04), outgoing reservation (T04). It is then patched in place (amount,
//! expiry) and handed to IO as [`Action::Forward`], once its journal record
//! is written (`journal.rs`; at once with `durability = "none"`).

use std::sync::Arc;

use bytes::BytesMut;
use ilpd_codec::ilp::{packet_type, Fulfill, PacketType, Prepare, Reject, RejectBuilder};
use ilpd_codec::sha256::BatchVerifier;
use ilpd_codec::types::{AmountTooLarge, Expiry};
use tracing::debug;

use super::accounts::Settlement;
use super::journal::{forward_of, has_money, Journal};
use super::metrics::{bump, Dropped, WorkerMetrics};
use super::pending::{Entry, NewEntry, Pending};
use super::rates::ConvertError;
use super::routing::TableCache;
use super::{AccountId, Action, ErrorCode, Now, OutId, ReplyTo, Shared, LOCAL};
use crate::ccp::Kind as CcpKind;

/// Per-worker forwarding state: pending table (bounded by node.max_in_flight, past it T03),
/// timer wheel, the batch of Fulfills waiting for verification. Not Sync; one per worker.
pub struct Core {
    pub(super) shared: Arc<Shared>,
    worker: usize,
    pub(super) pending: Pending,
    routes: TableCache,
    verifier: BatchVerifier,
    /// Fulfills waiting for `flush`: the entry they answer and the packet.
    batch: Vec<(OutId, Entry, BytesMut)>,
    conditions: Vec<[u8; 32]>,
    fulfillments: Vec<[u8; 32]>,
    results: Vec<bool>,
    /// Per-account net settlement of the batch being flushed.
    settle: Vec<(u32, Settlement)>,
    expired: Vec<(OutId, Entry)>,
    /// The durable ledger's records of this turn and the actions that wait
    /// for them (`journal.rs`); `None` with `durability = "none"`.
    pub(super) journal: Option<Journal>,
    /// The data of a receiver account's reply (`receiver.rs`), reused.
    pub(super) reply_data: Vec<u8>,
}

impl Core {
    pub fn new(shared: Arc<Shared>, worker: usize) -> Core {
        let journal = shared
            .journaling
            .then(|| Journal::new(shared.account_count()));
        Core {
            pending: Pending::new(shared.max_in_flight, shared.account_count()),
            routes: shared.router.cache(),
            verifier: shared.verifier,
            shared,
            worker,
            batch: Vec::new(),
            conditions: Vec::new(),
            fulfillments: Vec::new(),
            results: Vec::new(),
            settle: Vec::new(),
            expired: Vec::new(),
            journal,
            reply_data: Vec::new(),
        }
    }

    #[inline]
    pub(super) fn metrics(&self) -> &WorkerMetrics {
        self.shared.metrics.worker(self.worker)
    }

    /// Sends one of our own Rejects back to `to` (docs/design.md "Reject fields":
    /// triggeredBy = our address; the builder caps the message at 8191 bytes).
    pub(super) fn reject(
        &self,
        to: ReplyTo,
        code: ErrorCode,
        message: &str,
        data: &[u8],
        out: &mut Vec<Action>,
    ) {
        debug!(
            account = to.account.0,
            code = code.as_str(),
            message,
            "reject"
        );
        let packet = RejectBuilder {
            code,
            triggered_by: self.shared.node_address.as_bytes(),
            message: message.as_bytes(),
            data,
        }
        .build();
        self.metrics().reject_sent(to.account.0, code);
        out.push(Action::Reply { to, packet });
    }

    /// A request's ILP packet arrived from an authenticated peer (the `ilp` entry of a BTP Message).
    /// Malformed / not a Prepare → F01 Reply. Handles peer.config, peer.balance, echo, peer.route.* (F02 until CCP
    /// exists), forwarding.
    pub fn on_prepare(&mut self, now: Now, from: ReplyTo, packet: BytesMut, out: &mut Vec<Action>) {
        let idx = from.account.0 as usize;
        if idx >= self.shared.account_count() {
            return self.reject(
                from,
                ErrorCode::T00_INTERNAL_ERROR,
                "unknown account",
                &[],
                out,
            );
        }
        if let Some(c) = self.metrics().account(from.account.0) {
            bump(&c.prepares_in, 1);
        }
        if self.journal.is_some() && self.shared.ledger.is_failed() {
            // docs/ledger.md "Failure of the disk": nothing new is accepted.
            return self.reject(
                from,
                ErrorCode::T00_INTERNAL_ERROR,
                "the ledger stopped: balances cannot be recorded",
                &[],
                out,
            );
        }
        let prepare = match Prepare::new_checked(packet) {
            Ok(p) => p,
            Err(e) => {
                let msg = if is_wrong_type(&e) {
                    format!("expected an ILP Prepare: {e}")
                } else {
                    format!("invalid ILP Prepare: {e}")
                };
                return self.reject(from, ErrorCode::F01_INVALID_PACKET, &msg, &[], out);
            }
        };
        let amount = prepare.amount();
        let expires = prepare.expires_at().0;
        // docs/design.md "Expired on arrival": already expired → R00.
        if expires <= now.unix_ms {
            let msg = format!(
                "the Prepare expired {} ms before it arrived",
                now.unix_ms - expires
            );
            return self.reject(from, ErrorCode::R00_TRANSFER_TIMED_OUT, &msg, &[], out);
        }
        let shared = &*self.shared;
        let state = &shared.states[idx];
        let cfg = &shared.configs[idx];
        if let Some(g) = &state.packets {
            if !g.try_take(now.mono_ns, 1) {
                let msg = format!(
                    "rate limited: more than {} packets per second",
                    cfg.max_packets_per_sec.unwrap_or(0)
                );
                return self.reject(from, ErrorCode::T05_RATE_LIMITED, &msg, &[], out);
            }
        }
        // docs/design.md "F08 data": F08 with (received, maximum) in the incoming link's units.
        if let Some(max) = cfg.max_packet_amount {
            if amount > max {
                let data = AmountTooLarge {
                    received: amount,
                    maximum: max,
                }
                .encode();
                let msg = format!("amount {amount} exceeds the maximum packet amount {max}");
                return self.reject(from, ErrorCode::F08_AMOUNT_TOO_LARGE, &msg, &data, out);
            }
        }
        let dest = prepare.destination();
        if dest.starts_with(ilpd_codec::peer::PEER_SCHEME) {
            // RFC 15 "Allocation Schemes", RFC 34 "Special Addresses": peer.* is
            // answered here, never forwarded.
            return self.peer_protocol(now, from, prepare, out);
        }
        if dest == shared.node_address.as_bytes() {
            return self.addressed_to_us(now, from, prepare, out);
        }
        self.forward(now, from, prepare, out)
    }

    /// Routes, converts, shortens and reserves; then emits `Action::Forward`
    /// with the same buffer, patched in place.
    pub(super) fn forward(
        &mut self,
        now: Now,
        from: ReplyTo,
        mut p: Prepare<BytesMut>,
        out: &mut Vec<Action>,
    ) {
        let shared = &*self.shared;
        let from_idx = from.account.0 as usize;
        let amount = p.amount();
        let next = match self.routes.load().lookup(p.destination()) {
            // A learned route to an id we do not have (a CCP bug) is no route.
            Some(next) if next != LOCAL && (next.0 as usize) < shared.configs.len() => next,
            _ => {
                let msg = format!("no route to {}", p.destination_str());
                return self.reject(from, ErrorCode::F02_UNREACHABLE, &msg, &[], out);
            }
        };
        let next_idx = next.0 as usize;
        // A receiver account never has a connection: it is answered here
        // (`receiver.rs`), so only this branch asks whether it is one.
        let mut receiver = None;
        if !shared.is_connected(next) {
            receiver = shared.receivers.slot(next);
            if receiver.is_none() {
                let msg = format!("next hop {} is not connected", shared.configs[next_idx].id);
                return self.reject(from, ErrorCode::T01_PEER_UNREACHABLE, &msg, &[], out);
            }
        }
        let out_amount = match shared.rates.factor(from_idx, next_idx).convert(amount) {
            Ok(v) => v,
            Err(e) => {
                let (fc, tc) = (&shared.configs[from_idx], &shared.configs[next_idx]);
                let (code, msg) = match e {
                    ConvertError::Zero => (
                        ErrorCode::R01_INSUFFICIENT_SOURCE_AMOUNT,
                        format!(
                            "amount {amount} ({} scale {}) is 0 after conversion to {} scale {}",
                            fc.asset_code, fc.asset_scale, tc.asset_code, tc.asset_scale
                        ),
                    ),
                    ConvertError::Overflow => (
                        ErrorCode::F08_AMOUNT_TOO_LARGE,
                        format!(
                            "amount {amount} overflows after conversion to {} scale {}",
                            tc.asset_code, tc.asset_scale
                        ),
                    ),
                    ConvertError::NoRate => (
                        ErrorCode::T00_INTERNAL_ERROR,
                        format!(
                            "no exchange rate from {} to {}",
                            fc.asset_code, tc.asset_code
                        ),
                    ),
                };
                return self.reject(from, code, &msg, &[], out);
            }
        };
        // docs/design.md "Expiry": outgoing = min(incoming − window, now + max_hold), R02 if
        // less than the window is left (ilp-connector route-builder).
        let (window, hold) = shared.expiry_knobs[next_idx];
        let in_expiry = p.expires_at().0;
        let out_expiry = if receiver.is_some() {
            // A receiver answers at once: no hop needs the window, and the
            // Prepare keeps its expiry (on_prepare checked it has not passed).
            in_expiry
        } else {
            let out_expiry = in_expiry
                .saturating_sub(window)
                .min(now.unix_ms.saturating_add(hold));
            if out_expiry <= now.unix_ms || out_expiry - now.unix_ms < window {
                let msg = format!(
                    "the Prepare expires too soon to forward: {} ms left, {} ms needed",
                    in_expiry.saturating_sub(now.unix_ms),
                    window.saturating_mul(2)
                );
                return self.reject(from, ErrorCode::R02_INSUFFICIENT_TIMEOUT, &msg, &[], out);
            }
            out_expiry
        };
        if self.pending.is_full() {
            let msg = format!(
                "connector busy: {} packets in flight on this worker",
                self.pending.len()
            );
            return self.reject(from, ErrorCode::T03_CONNECTOR_BUSY, &msg, &[], out);
        }
        // Fair use of the pending table: one account cannot hold all of it.
        let quota = shared.in_flight_quota[from_idx];
        if self.pending.account_len(from_idx) >= quota {
            let msg = format!(
                "connector busy: account {} has {quota} packets in flight on this worker, its quota",
                shared.configs[from_idx].id
            );
            return self.reject(from, ErrorCode::T03_CONNECTOR_BUSY, &msg, &[], out);
        }
        let from_state = &shared.states[from_idx];
        if amount > 0 {
            if let Some(g) = &from_state.amount {
                if !g.try_take(now.mono_ns, amount) {
                    let max = shared.configs[from_idx].max_amount_per_sec.unwrap_or(0);
                    let msg = format!("rate limited: more than {max} per second");
                    return self.reject(from, ErrorCode::T05_RATE_LIMITED, &msg, &[], out);
                }
            }
            if !from_state.reserve_incoming(amount) {
                let msg = format!(
                    "amount {amount} would exceed the maximum balance of account {}",
                    shared.configs[from_idx].id
                );
                return self.reject(from, ErrorCode::T04_INSUFFICIENT_LIQUIDITY, &msg, &[], out);
            }
        }
        if out_amount > 0 && !shared.states[next_idx].reserve_outgoing(out_amount) {
            if amount > 0 {
                from_state.release_incoming(amount);
            }
            let msg = format!(
                "insufficient liquidity toward next hop {}",
                shared.configs[next_idx].id
            );
            return self.reject(from, ErrorCode::T04_INSUFFICIENT_LIQUIDITY, &msg, &[], out);
        }
        let new = NewEntry {
            origin: from,
            next_hop: next,
            in_amount: amount,
            out_amount,
            condition: *p.execution_condition(),
            out_expiry,
            arrival_ns: now.mono_ns,
        };
        let Some(out_id) = self.pending.insert(new) else {
            release(shared, from_idx, amount, next_idx, out_amount);
            return self.reject(
                from,
                ErrorCode::T03_CONNECTOR_BUSY,
                "connector busy",
                &[],
                out,
            );
        };
        // RFC 27 "ILP Prepare": amount and expiresAt are rewritten in place; nothing else changes.
        p.set_amount(out_amount);
        p.set_expires_at(Expiry(out_expiry));
        let m = self.metrics();
        if let Some(c) = m.account(next.0) {
            bump(&c.prepares_out, 1);
        }
        m.in_flight.store(
            self.pending.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Some(slot) = receiver {
            return self.receive(now, slot, out_id, p, out);
        }
        let action = Action::Forward {
            to: next,
            out_id,
            packet: p.into_inner(),
        };
        match &mut self.journal {
            // Held until the record is written (journal.rs).
            Some(j) if amount > 0 || out_amount > 0 => match self.pending.get(out_id) {
                Some(e) => j.forward(&forward_of(out_id, e), action),
                None => out.push(action),
            },
            _ => out.push(action),
        }
    }

    /// The reply to one of our Forwards came back from account `from`. Rejects are passed upstream unchanged
    /// (release reservations); Fulfills are queued and verified in `flush`. Unknown/duplicate/late or wrong-account →
    /// dropped and counted.
    pub fn on_reply(
        &mut self,
        now: Now,
        from: AccountId,
        out_id: OutId,
        packet: BytesMut,
        out: &mut Vec<Action>,
    ) {
        let Some(&e) = self.pending.get(out_id) else {
            return self.metrics().dropped(Dropped::Unknown);
        };
        if e.next_hop != from.0 {
            return self.metrics().dropped(Dropped::WrongAccount);
        }
        if e.from == LOCAL.0 {
            // The reply to one of our own CCP requests (docs/design.md "CCP":
            // a Fulfill with 32 zero bytes, or a Reject).
            self.pending.remove(out_id);
            let ok = ilpd_codec::peer::ccp::parse_ccp_response(&packet).is_ok();
            return self.ccp_reply(now, &e, ok);
        }
        let kind = packet_type(&packet).ok();
        match kind {
            Some(PacketType::Fulfill) => {
                if let Ok(f) = Fulfill::new_checked(&packet[..]) {
                    let fulfillment = *f.fulfillment();
                    if let Some(c) = self.metrics().account(from.0) {
                        bump(&c.fulfills_in, 1);
                    }
                    self.pending.remove(out_id);
                    // RFC 27 "ILP Packet Lifecycle": a Fulfill after our expiry is not honoured.
                    if now.unix_ms >= e.out_expiry {
                        bump(&self.metrics().late_fulfills, 1);
                        return self.fail(
                            now,
                            out_id,
                            &e,
                            ErrorCode::R00_TRANSFER_TIMED_OUT,
                            "the next hop fulfilled after the packet expired",
                            out,
                        );
                    }
                    self.conditions.push(e.condition);
                    self.fulfillments.push(fulfillment);
                    self.batch.push((out_id, e, packet));
                    return;
                }
            }
            Some(PacketType::Reject) => {
                if let Ok(r) = Reject::new_checked(&packet[..]) {
                    let code = r.code();
                    let m = self.metrics();
                    if let Some(c) = m.account(from.0) {
                        bump(&c.rejects_in, 1);
                    }
                    self.pending.remove(out_id);
                    self.unwind(now, out_id, &e);
                    // RFC 27 "ILP Packet Lifecycle" (docs/design.md
                    // "Connector rules"): relayed unchanged, the same bytes.
                    self.metrics().reject_sent(e.from, code);
                    out.push(Action::Reply {
                        to: e.reply_to(),
                        packet,
                    });
                    return;
                }
            }
            _ => {}
        }
        // Neither a valid Fulfill nor a valid Reject (docs/engine-core.md: F01).
        bump(&self.metrics().invalid_replies, 1);
        self.pending.remove(out_id);
        self.fail(
            now,
            out_id,
            &e,
            ErrorCode::F01_INVALID_PACKET,
            "invalid response from next hop",
            out,
        );
    }

    /// Releases an entry's reservations (already removed from the table) and
    /// rejects upstream with our own code.
    fn fail(
        &mut self,
        now: Now,
        id: OutId,
        e: &Entry,
        code: ErrorCode,
        message: &str,
        out: &mut Vec<Action>,
    ) {
        if e.from == LOCAL.0 {
            // One of our CCP requests: nobody upstream to answer.
            return self.ccp_reply(now, e, false);
        }
        self.unwind(now, id, e);
        self.reject(e.reply_to(), code, message, &[], out);
    }

    /// An entry (already removed from the table) ends unpaid: give back both
    /// reservations and record its latency and the in-flight gauge.
    fn unwind(&mut self, now: Now, id: OutId, e: &Entry) {
        if let Some(j) = &mut self.journal {
            if has_money(e) {
                j.unwound(id);
            }
        }
        release(
            &self.shared,
            e.from as usize,
            e.in_amount,
            e.next_hop as usize,
            e.out_amount,
        );
        let m = self.metrics();
        m.latency(now.mono_ns.saturating_sub(e.arrival_ns));
        m.in_flight.store(
            self.pending.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// A Forward could not be delivered (no connection, connection lost before the reply, write buffer full):
    /// reject upstream with `code` (T01 / T02) and `message`, release reservations.
    pub fn on_forward_failed(
        &mut self,
        now: Now,
        out_id: OutId,
        code: ErrorCode,
        message: &str,
        out: &mut Vec<Action>,
    ) {
        match self.pending.remove(out_id) {
            Some(e) => self.fail(now, out_id, &e, code, message, out),
            None => self.metrics().dropped(Dropped::FailedUnknown),
        }
    }

    /// End of a loop turn: verify every queued Fulfill in ONE batch (ilpd_codec::sha256::BatchVerifier), settle, emit
    /// replies (a Fulfill once its journal record is durable); F05 upstream on mismatch (the next hop is not
    /// credited).
    pub fn flush(&mut self, now: Now, out: &mut Vec<Action>) {
        let n = self.batch.len();
        if n == 0 {
            // Once per loop turn: keep the in-flight gauge current.
            self.metrics().in_flight.store(
                self.pending.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            return;
        }
        self.results.clear();
        self.results.resize(n, false);
        self.verifier
            .verify(&self.fulfillments, &self.conditions, &mut self.results);
        let shared = self.shared.clone();
        let m = shared.metrics.worker(self.worker);
        bump(&m.fulfill_batches, 1);
        bump(&m.fulfill_batch_packets, n as u64);
        let mut batch = std::mem::take(&mut self.batch);
        let results = std::mem::take(&mut self.results);
        for ((id, e, packet), ok) in batch.drain(..).zip(results.iter().copied()) {
            if ok {
                // docs/design.md "Balance sign": the upstream peer owes the incoming
                // amount, we owe the next hop the outgoing one.
                // Summed per account and applied once per batch below.
                if e.in_amount > 0 {
                    match settlement(&mut self.settle, e.from) {
                        Some(d) => d.incoming(e.in_amount),
                        None => self.shared.states[e.from as usize].settle_incoming(e.in_amount),
                    }
                }
                if e.out_amount > 0 {
                    match settlement(&mut self.settle, e.next_hop) {
                        Some(d) => d.outgoing(e.out_amount),
                        None => {
                            self.shared.states[e.next_hop as usize].settle_outgoing(e.out_amount)
                        }
                    }
                }
                m.fulfill_sent(e.from);
                m.latency(now.mono_ns.saturating_sub(e.arrival_ns));
                let reply = Action::Reply {
                    to: e.reply_to(),
                    packet,
                };
                match &mut self.journal {
                    // Held until the record is durable (journal.rs).
                    Some(j) if has_money(&e) => j.fulfilled(forward_of(id, &e), reply),
                    _ => out.push(reply),
                }
            } else {
                // docs/design.md "Wrong fulfillment": F05 upstream, next hop not credited.
                bump(&m.wrong_fulfillments, 1);
                self.fail(
                    now,
                    id,
                    &e,
                    ErrorCode::F05_WRONG_CONDITION,
                    "fulfillment from the next hop did not match the condition",
                    out,
                );
            }
        }
        for (acct, d) in self.settle.drain(..) {
            if let Some(st) = self.shared.states.get(acct as usize) {
                st.apply(&d);
            }
        }
        self.batch = batch;
        self.results = results;
        m.in_flight.store(
            self.pending.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.conditions.clear();
        self.fulfillments.clear();
    }

    /// Expire pending packets whose outgoing expiry passed: R00 upstream, release. A Fulfill arriving later is dropped
    /// and counted.
    pub fn on_timers(&mut self, now: Now, out: &mut Vec<Action>) {
        self.pending.expire(now.unix_ms, &mut self.expired);
        if self.expired.is_empty() {
            return;
        }
        let expired = std::mem::take(&mut self.expired);
        bump(&self.metrics().expired, expired.len() as u64);
        for (id, e) in &expired {
            self.fail(
                now,
                *id,
                e,
                ErrorCode::R00_TRANSFER_TIMED_OUT,
                "no reply from the next hop before the packet expired",
                out,
            );
        }
        self.expired = expired;
        self.expired.clear();
    }

    /// Earliest unix_ms at which on_timers has work (for the poll timeout).
    /// It may be early (never late): a woken worker just calls `on_timers`.
    pub fn next_deadline(&self) -> Option<u64> {
        self.pending.next_deadline()
    }

    /// Earliest unix_ms at which route broadcasting (CCP) has work: a
    /// route control or update to send, routes to expire or to publish.
    /// One atomic load.
    pub fn ccp_deadline(&self) -> Option<u64> {
        self.shared.ccp.next_deadline()
    }

    /// Sends the CCP requests that are due, expires and publishes learned
    /// routes (docs/ccp.md). Any worker may call it once `ccp_deadline` has
    /// passed; one of them at a time does the work. The requests are
    /// pending entries of this worker (marked as ours with `LOCAL`), so
    /// their replies, failures and expiries come back here and go to CCP.
    pub fn on_ccp_timers(&mut self, now: Now, out: &mut Vec<Action>) {
        if self.ccp_deadline().is_none_or(|d| d > now.unix_ms) {
            return;
        }
        let shared = self.shared.clone();
        let requests = shared
            .ccp
            .try_poll(now.unix_ms, |r| shared.publish_learned(r));
        for o in requests {
            let out_expiry = Prepare::new_checked(&o.packet[..])
                .map_or(now.unix_ms + crate::ccp::REQUEST_EXPIRY_MS, |p| {
                    p.expires_at().0
                });
            let new = NewEntry {
                // LOCAL marks our own request; request_id says which kind.
                origin: ReplyTo {
                    account: LOCAL,
                    conn: 0,
                    request_id: match o.kind {
                        CcpKind::Control => 0,
                        CcpKind::Update => 1,
                    },
                },
                next_hop: o.to,
                in_amount: 0,
                out_amount: 0,
                condition: ilpd_codec::types::PEER_PROTOCOL_CONDITION.0,
                out_expiry,
                arrival_ns: now.mono_ns,
            };
            match self.pending.insert(new) {
                Some(out_id) => out.push(Action::Forward {
                    to: o.to,
                    out_id,
                    packet: o.packet,
                }),
                None => shared.ccp.call(
                    now.unix_ms,
                    |c| c.on_reply(now.unix_ms, o.to, o.kind, false),
                    |r| shared.publish_learned(r),
                ),
            }
        }
    }

    /// Hands the outcome of one of our CCP requests back to CCP.
    fn ccp_reply(&self, now: Now, e: &Entry, ok: bool) {
        let kind = match e.request_id {
            0 => CcpKind::Control,
            _ => CcpKind::Update,
        };
        let shared = &self.shared;
        shared.ccp.call(
            now.unix_ms,
            |c| c.on_reply(now.unix_ms, e.next_hop(), kind, ok),
            |r| shared.publish_learned(r),
        );
        self.metrics().in_flight.store(
            self.pending.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Packets not yet answered upstream: pending, being verified, or
    /// fulfilled and waiting for durability (unless the ledger stopped:
    /// those Fulfills will never go).
    pub fn in_flight(&self) -> usize {
        let held = match &self.journal {
            Some(j) if !self.shared.ledger.is_failed() => j.held_fulfills(),
            _ => 0,
        };
        self.pending.len() + self.batch.len() + held
    }

    // ------------------------------------------------------------ journal
    // IO drives the durable ledger through these, once per loop turn
    // (docs/ledger.md "Group commit"); all no-ops with durability "none".

    /// Whether this core journals (durability is not "none").
    pub fn journaling(&self) -> bool {
        self.journal.is_some()
    }

    /// Seals this turn's frame for writing: `(seq, bytes)`, or `None` if
    /// nothing was recorded.
    pub fn journal_seal(&mut self, unix_ms: u64) -> Option<(u64, &[u8])> {
        self.journal.as_mut()?.seal(unix_ms)
    }

    /// Frame `seq` was written to the kernel: its Forwards may leave.
    pub fn journal_written(&mut self, seq: u64, out: &mut Vec<Action>) {
        if let Some(j) = &mut self.journal {
            j.written(seq, out);
        }
    }

    /// Frames up to `durable` are durable: their Fulfills may go upstream.
    pub fn journal_durable(&mut self, durable: u64, out: &mut Vec<Action>) {
        if let Some(j) = &mut self.journal {
            j.durable(durable, out);
        }
    }

    /// The ledger stopped: every Forward still waiting for its record is
    /// rejected upstream with T00 (it never left, so no money moved).
    pub fn journal_failed(&mut self, now: Now, out: &mut Vec<Action>) {
        let Some(j) = &mut self.journal else {
            return;
        };
        for a in j.take_held_forwards() {
            if let Action::Forward { out_id, .. } = a {
                if let Some(e) = self.pending.remove(out_id) {
                    self.fail(
                        now,
                        out_id,
                        &e,
                        ErrorCode::T00_INTERNAL_ERROR,
                        "the ledger stopped before this packet could be recorded",
                        out,
                    );
                }
            }
        }
    }

    /// IO handed the released Fulfills to the kernel.
    pub fn journal_flushed(&mut self) {
        if let Some(j) = &mut self.journal {
            j.flushed();
        }
    }

    /// A checkpoint frame `(seq, bytes)` to begin a journal segment with:
    /// this worker's net balance changes and its open packets. Call it
    /// right after `journal_written` (or before any record).
    pub fn journal_checkpoint(&mut self, unix_ms: u64, segment: u64) -> Option<(u64, Vec<u8>)> {
        let shared = &*self.shared;
        let open = self
            .pending
            .live()
            .filter(|(_, e)| e.from != LOCAL.0 && has_money(e))
            .map(|(id, e)| forward_of(id, e));
        let names = shared.configs.iter().map(|c| c.id.as_str());
        let j = self.journal.as_mut()?;
        Some(j.checkpoint(unix_ms, self.worker as u32, segment, names, open))
    }

    /// Nothing recorded but unwritten, nothing held (a draining worker may
    /// stop; after a ledger failure held Fulfills never go and do not count).
    pub fn journal_idle(&self) -> bool {
        match &self.journal {
            Some(j) => j.is_idle() || self.shared.ledger.is_failed(),
            None => true,
        }
    }

    /// The worker index this core counts its metrics under.
    pub fn worker(&self) -> usize {
        self.worker
    }
}

/// Whether a Prepare parse error is about the type byte.
fn is_wrong_type(e: &ilpd_codec::DecodeError) -> bool {
    matches!(
        e,
        ilpd_codec::DecodeError::UnknownType(_)
            | ilpd_codec::DecodeError::Invalid("unexpected ILP packet type")
    )
}

/// Accounts summed per batch; past this many, settle directly (keeps the
/// linear search short).
const SETTLE_SLOTS: usize = 16;

/// The batch's entry for `account`, or `None` when the list is full.
#[inline]
fn settlement(list: &mut Vec<(u32, Settlement)>, account: u32) -> Option<&mut Settlement> {
    let i = match list.iter().position(|(a, _)| *a == account) {
        Some(i) => i,
        None if list.len() < SETTLE_SLOTS => {
            list.push((account, Settlement::default()));
            list.len() - 1
        }
        None => return None,
    };
    Some(&mut list[i].1)
}

/// Gives back both reservations of a packet that was not fulfilled.
pub(super) fn release(shared: &Shared, from: usize, in_amount: u64, next: usize, out_amount: u64) {
    if in_amount > 0 {
        if let Some(s) = shared.states.get(from) {
            s.release_incoming(in_amount);
        }
    }
    if out_amount > 0 {
        if let Some(s) = shared.states.get(next) {
            s.release_outgoing(out_amount);
        }
    }
}

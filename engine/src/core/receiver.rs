//! Receiver accounts (docs/stream.md "Receiving in ilpd"): ilpd itself is
//! the STREAM receiver (RFC 29) for every account with
//! `relation = "receiver"`, and answers their SPSP queries (RFC 9).
//!
//! To the forwarding core a receiver is a local peer that answers at
//! once: a Prepare routed to it is converted, reserved and given a pending
//! id exactly like a forwarded one (`forward.rs`), then handed to the
//! account's `ilpd_stream::Receiver` instead of a socket. A Fulfill is
//! journaled (Forward and Fulfilled, in one frame) and settled like any
//! verified Fulfill; a Reject goes back as the receiver wrote it.
//!
//! One STREAM connection's packets must meet one state (its stream totals,
//! its receive max, its receipts), whichever worker they arrive on. The
//! receiver state of an account is split into shards, each behind its own
//! mutex, and a connection's token picks its shard: any worker may serve
//! any connection, a connection always finds all its state, and two
//! workers only wait for each other when their packets are for the same
//! shard at the same moment.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use bytes::BytesMut;
use ilpd_codec::ilp::Prepare;
use ilpd_stream::receipt::ReceiptParams;
use ilpd_stream::{spsp, OsRandom, Outcome, Receiver, ReceiverConfig, ServerSecret};
use parking_lot::Mutex;

use super::forward::{release, Core};
use super::journal::{forward_of, has_money};
use super::metrics::bump;
use super::{AccountId, Action, Now, OutId};
use crate::config::{AccountConfig, Relation};

/// Connections one receiver account keeps in memory, over all its shards
/// (a dropped one is derived again from its token; docs/stream.md).
const MAX_CONNECTIONS: usize = 100_000;

/// One shard of a receiver account's STREAM state.
struct Shard {
    receiver: Receiver,
    /// When idle connections were last dropped (unix ms).
    last_expire: u64,
}

/// One receiver account.
struct Local {
    account: AccountId,
    /// Its ILP address: connections are `address.token`.
    address: String,
    config: ReceiverConfig,
    /// Created at the first packet, once the server secret is known.
    shards: OnceLock<Box<[Mutex<Shard>]>>,
    received: AtomicU64,
    fulfilled: AtomicU64,
    rejected: AtomicU64,
    spsp_queries: AtomicU64,
}

/// Why an SPSP query gets no connection details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpspRefusal {
    /// No receiver by that name (or no default receiver): 404.
    NotFound,
    /// The OS gave no random bytes: 503.
    Unavailable,
}

/// Every receiver account of the node, and the server secret they share.
pub(crate) struct Receivers {
    secret: OnceLock<ServerSecret>,
    /// Account index → index in `list`; `None` for every other account.
    by_account: Vec<Option<u32>>,
    list: Vec<Local>,
    /// The receiver `/.well-known/pay` answers for.
    default: Option<usize>,
    shards: usize,
    /// Random bytes for SPSP tokens (cold path).
    rng: Mutex<OsRandom>,
}

impl Receivers {
    /// `addresses[i]` is account `i`'s address (a receiver always has one).
    pub fn new(
        configs: &[AccountConfig],
        addresses: &[Option<ilpd_codec::address::Address>],
        workers: usize,
    ) -> Receivers {
        let shards = workers.max(1);
        let mut by_account = vec![None; configs.len()];
        let mut list = Vec::new();
        let mut default = None;
        for (i, a) in configs.iter().enumerate() {
            if a.relation != Relation::Receiver {
                continue;
            }
            let Some(address) = addresses.get(i).and_then(Option::as_ref) else {
                continue;
            };
            let mut config =
                ReceiverConfig::new(address.as_str(), a.asset_code.clone(), a.asset_scale);
            config.stream_receive_max = a.stream_receive_max.unwrap_or(u64::MAX);
            config.max_connections = (MAX_CONNECTIONS / shards).max(1024);
            if a.spsp_default {
                default = Some(list.len());
            }
            by_account[i] = Some(list.len() as u32);
            list.push(Local {
                account: AccountId(i as u32),
                address: address.as_str().to_string(),
                config,
                shards: OnceLock::new(),
                received: AtomicU64::new(0),
                fulfilled: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                spsp_queries: AtomicU64::new(0),
            });
        }
        if list.len() == 1 {
            default = Some(0);
        }
        Receivers {
            secret: OnceLock::new(),
            by_account,
            list,
            default,
            shards,
            rng: Mutex::new(OsRandom::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Sets the server secret (from the data dir). False if one is in use
    /// already: it must be set before the first packet or SPSP query.
    pub fn set_secret(&self, secret: [u8; 32]) -> bool {
        self.secret.set(ServerSecret::from_bytes(secret)).is_ok()
    }

    /// The server secret; a random one for this process if none was set.
    fn secret(&self) -> &ServerSecret {
        self.secret.get_or_init(|| {
            // Without OS randomness no secret can be made; a guessable
            // one would let anyone forge connections, so stop.
            ServerSecret::generate(&mut *self.rng.lock()).expect("the OS random source failed")
        })
    }

    /// The receiver slot of account `id`, if it is a receiver. Only called
    /// for a next hop with no connection (forward.rs), so other traffic
    /// never pays for it.
    #[inline]
    pub fn slot(&self, id: AccountId) -> Option<u32> {
        self.by_account.get(id.0 as usize).copied().flatten()
    }

    /// The receiver's answer to one Prepare (already converted to its
    /// asset). `reply` receives the reply's data; the returned packet is
    /// the whole Fulfill or Reject.
    pub fn handle(
        &self,
        slot: u32,
        now_ms: u64,
        p: &Prepare<BytesMut>,
        reply: &mut Vec<u8>,
    ) -> (Outcome, BytesMut) {
        let r = &self.list[slot as usize];
        let shards = r.shards.get_or_init(|| {
            (0..self.shards)
                .map(|_| {
                    Mutex::new(Shard {
                        receiver: Receiver::new(r.config.clone(), self.secret().clone()),
                        last_expire: now_ms,
                    })
                })
                .collect()
        });
        let token = token_of(r.address.as_bytes(), p.destination());
        let shard = &shards[(fnv(token) % shards.len() as u64) as usize];
        let outcome = {
            let mut s = shard.lock();
            if now_ms.saturating_sub(s.last_expire) >= r.config.idle_timeout_ms {
                s.receiver.expire(now_ms);
                s.last_expire = now_ms;
            }
            s.receiver.handle_ilp_prepare(now_ms, p, reply)
        };
        match outcome {
            Outcome::Fulfill { credited, .. } => {
                r.received.fetch_add(credited, Relaxed);
                r.fulfilled.fetch_add(1, Relaxed);
            }
            Outcome::Reject { .. } => {
                r.rejected.fetch_add(1, Relaxed);
            }
        }
        let packet = outcome.to_ilp(reply, r.address.as_bytes());
        (outcome, packet)
    }

    /// The SPSP response body (RFC 9 "Response") for the receiver named
    /// `name` (`None`: the default one), with a fresh connection token.
    pub fn spsp(
        &self,
        name: Option<&str>,
        receipt: Option<&ReceiptParams>,
        account_name: impl Fn(AccountId) -> String,
    ) -> Result<String, SpspRefusal> {
        let r = match name {
            None => self.default.map(|i| &self.list[i]),
            Some(n) => self.list.iter().find(|r| account_name(r.account) == n),
        }
        .ok_or(SpspRefusal::NotFound)?;
        let secret = self.secret();
        let details = secret
            .generate_address_and_secret(&mut *self.rng.lock(), &r.address, b"", receipt)
            .map_err(|_| SpspRefusal::Unavailable)?;
        r.spsp_queries.fetch_add(1, Relaxed);
        Ok(spsp::response_json(&details))
    }

    /// `ilpd_stream_*` series (docs/stream.md "Receiving in ilpd").
    pub fn render(&self, text: &mut String, account_name: impl Fn(AccountId) -> String) {
        use std::fmt::Write as _;
        if self.list.is_empty() {
            return;
        }
        let rows: Vec<(String, &Local)> = self
            .list
            .iter()
            .map(|r| (account_name(r.account), r))
            .collect();
        let head = |text: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            text,
            "ilpd_stream_received_total",
            "counter",
            "Amount receiver accounts were paid (fulfilled), in their own units",
        );
        for (a, r) in &rows {
            let v = r.received.load(Relaxed);
            let _ = writeln!(text, "ilpd_stream_received_total{{account=\"{a}\"}} {v}");
        }
        head(
            text,
            "ilpd_stream_packets_total",
            "counter",
            "STREAM Prepares a receiver answered, by result",
        );
        for (a, r) in &rows {
            for (result, c) in [("fulfilled", &r.fulfilled), ("rejected", &r.rejected)] {
                let v = c.load(Relaxed);
                let _ = writeln!(
                    text,
                    "ilpd_stream_packets_total{{account=\"{a}\",result=\"{result}\"}} {v}"
                );
            }
        }
        head(
            text,
            "ilpd_stream_connections",
            "gauge",
            "STREAM connections a receiver holds in memory",
        );
        for (a, r) in &rows {
            let n: usize = r.shards.get().map_or(0, |s| {
                s.iter().map(|m| m.lock().receiver.connection_count()).sum()
            });
            let _ = writeln!(text, "ilpd_stream_connections{{account=\"{a}\"}} {n}");
        }
        head(
            text,
            "ilpd_stream_spsp_queries_total",
            "counter",
            "SPSP queries answered with connection details",
        );
        for (a, r) in &rows {
            let v = r.spsp_queries.load(Relaxed);
            let _ = writeln!(
                text,
                "ilpd_stream_spsp_queries_total{{account=\"{a}\"}} {v}"
            );
        }
    }
}

impl Core {
    /// A Prepare routed to receiver `slot`, converted, reserved and given
    /// pending id `out_id` by `forward` (which set amount and expiry): the
    /// receiver answers it now, as a peer would have.
    ///
    /// - Fulfill: the Forward and Fulfilled records go into this turn's
    ///   frame together, balances settle as for any verified Fulfill (the
    ///   sender owes its amount, we owe the receiver account the converted
    ///   one), and the Fulfill waits until the frame is durable.
    /// - Reject: reservations are released, nothing is journaled (no money
    ///   moved), and the receiver's Reject goes back unchanged.
    pub(super) fn receive(
        &mut self,
        now: Now,
        slot: u32,
        out_id: OutId,
        p: Prepare<BytesMut>,
        out: &mut Vec<Action>,
    ) {
        let shared = self.shared.clone();
        let mut reply = std::mem::take(&mut self.reply_data);
        let (outcome, packet) = shared.receivers.handle(slot, now.unix_ms, &p, &mut reply);
        self.reply_data = reply;
        let Some(e) = self.pending.remove(out_id) else {
            return;
        };
        let m = shared.metrics.worker(self.worker());
        let to = e.reply_to();
        match outcome {
            Outcome::Fulfill { .. } => {
                if let Some(c) = m.account(e.next_hop) {
                    bump(&c.fulfills_in, 1);
                }
                // docs/design.md "Balance sign": the sender owes us what it
                // sent, we owe the receiver account what arrived.
                if e.in_amount > 0 {
                    shared.states[e.from as usize].settle_incoming(e.in_amount);
                }
                if e.out_amount > 0 {
                    shared.states[e.next_hop as usize].settle_outgoing(e.out_amount);
                }
                m.fulfill_sent(e.from);
                m.latency(now.mono_ns.saturating_sub(e.arrival_ns));
                let reply = Action::Reply { to, packet };
                match &mut self.journal {
                    Some(j) if has_money(&e) => {
                        let f = forward_of(out_id, &e);
                        j.local_forward(&f);
                        j.fulfilled(f, reply);
                    }
                    _ => out.push(reply),
                }
            }
            Outcome::Reject { code } => {
                if let Some(c) = m.account(e.next_hop) {
                    bump(&c.rejects_in, 1);
                }
                release(
                    &shared,
                    e.from as usize,
                    e.in_amount,
                    e.next_hop as usize,
                    e.out_amount,
                );
                m.latency(now.mono_ns.saturating_sub(e.arrival_ns));
                m.reject_sent(e.from, code);
                out.push(Action::Reply { to, packet });
            }
        }
        m.in_flight.store(self.pending.len() as u64, Relaxed);
    }
}

impl crate::http::Spsp for super::Shared {
    fn receiver_exists(&self, name: Option<&str>) -> bool {
        match name {
            None => self.receivers.default.is_some(),
            Some(n) => self
                .account_by_name(n)
                .is_some_and(|id| self.receivers.slot(id).is_some()),
        }
    }

    fn spsp_response(
        &self,
        name: Option<&str>,
        receipt: Option<&ReceiptParams>,
    ) -> Result<String, SpspRefusal> {
        self.spsp(name, receipt)
    }
}

/// The connection token segment of `dest` under `address` (empty if none).
fn token_of<'a>(address: &[u8], dest: &'a [u8]) -> &'a [u8] {
    let rest = match dest.strip_prefix(address) {
        Some([b'.', rest @ ..]) => rest,
        _ => return &[],
    };
    let end = rest.iter().position(|&b| b == b'.').unwrap_or(rest.len());
    &rest[..end]
}

/// FNV-1a, to spread tokens over shards (tokens are authenticated
/// ciphertext, so their bytes are already uniform).
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_the_segment_after_the_address() {
        assert_eq!(token_of(b"g.n.shop", b"g.n.shop.abc"), b"abc");
        assert_eq!(token_of(b"g.n.shop", b"g.n.shop.abc.x.y"), b"abc");
        assert_eq!(token_of(b"g.n.shop", b"g.n.shop"), b"");
        assert_eq!(token_of(b"g.n.shop", b"g.n.shopx.abc"), b"");
        assert_ne!(fnv(b"a"), fnv(b"b"));
    }
}

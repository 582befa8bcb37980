//! The sans-IO forwarding core (DESIGN "engine core"): plain functions over
//! state, given `now` and bytes, returning [`Action`]s. No sockets, no clock,
//! no threads: the mio workers (`crate::io`) feed it and carry out what it
//! asks. See docs/engine-core.md.

use std::sync::Arc;

use bytes::BytesMut;

use crate::config::{AccountConfig, Config, ConfigError};

pub use ilpd_codec::error_code::ErrorCode;

/// Account index, dense from 0 in config order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub u32);

/// The clock, read once per loop turn by IO and passed in (the core never reads a clock).
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub unix_ms: u64,
    pub mono_ns: u64,
}

/// Where a reply must go back: the IO's connection token and the peer's request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyTo {
    pub account: AccountId,
    pub conn: u64,
    pub request_id: u32,
}

/// One forwarded Prepare on one worker; unique among that worker's pending packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutId(pub u32);

/// What the core asks IO to do.
#[derive(Debug)]
pub enum Action {
    /// Send this ILP Prepare (already patched in place: amount, expiry) to account `to`.
    /// Its reply must come back to THIS worker's Core via `on_reply(to, out_id, ..)`.
    Forward {
        to: AccountId,
        out_id: OutId,
        packet: BytesMut,
    },
    /// Send this ILP Fulfill or Reject back where a Prepare came from.
    Reply { to: ReplyTo, packet: BytesMut },
}

/// Node-wide state shared by all workers (behind an Arc); lock-free on the hot path.
pub struct Shared {
    _priv: (),
}

impl Shared {
    /// Builds accounts (cache-padded atomic balances), the routing snapshot and the rate table from a VALIDATED config.
    pub fn from_config(_cfg: &Config) -> Result<Arc<Shared>, ConfigError> {
        todo!()
    }
    pub fn node_address(&self) -> &ilpd_codec::address::Address {
        todo!()
    }
    pub fn account_count(&self) -> usize {
        todo!()
    }
    pub fn account_config(&self, _id: AccountId) -> &AccountConfig {
        todo!()
    }
    pub fn account_by_name(&self, _name: &str) -> Option<AccountId> {
        todo!()
    }
    /// Constant-time comparison against every account's incoming_token; never logs the token.
    pub fn authenticate(&self, _username: Option<&[u8]>, _token: &[u8]) -> Option<AccountId> {
        todo!()
    }
    pub fn connection_opened(&self, _id: AccountId) {
        todo!()
    }
    pub fn connection_closed(&self, _id: AccountId) {
        todo!()
    }
    pub fn is_connected(&self, _id: AccountId) -> bool {
        todo!()
    }
    /// Balance as defined in DESIGN (positive = the peer owes us).
    pub fn balance(&self, _id: AccountId) -> i64 {
        todo!()
    }
    /// Prometheus text for everything the core counts.
    pub fn render_metrics(&self) -> String {
        todo!()
    }
    /// Per-worker loop statistics IO records.
    pub fn record_loop(&self, _worker: usize, _messages_in_turn: usize) {
        todo!()
    }
}

/// Per-worker forwarding state. Not Sync; one per worker.
pub struct Core {
    _shared: Arc<Shared>,
}

impl Core {
    pub fn new(shared: Arc<Shared>, _worker: usize) -> Core {
        Core { _shared: shared }
    }
    pub fn on_prepare(
        &mut self,
        _now: Now,
        _from: ReplyTo,
        _packet: BytesMut,
        _out: &mut Vec<Action>,
    ) {
        todo!()
    }
    pub fn on_reply(
        &mut self,
        _now: Now,
        _from: AccountId,
        _out_id: OutId,
        _packet: BytesMut,
        _out: &mut Vec<Action>,
    ) {
        todo!()
    }
    pub fn on_forward_failed(
        &mut self,
        _now: Now,
        _out_id: OutId,
        _code: ErrorCode,
        _message: &str,
        _out: &mut Vec<Action>,
    ) {
        todo!()
    }
    pub fn flush(&mut self, _now: Now, _out: &mut Vec<Action>) {
        todo!()
    }
    pub fn on_timers(&mut self, _now: Now, _out: &mut Vec<Action>) {
        todo!()
    }
    pub fn next_deadline(&self) -> Option<u64> {
        todo!()
    }
    pub fn in_flight(&self) -> usize {
        todo!()
    }
}

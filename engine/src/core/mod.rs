//! The sans-IO forwarding core (docs/design.md "Engine core"): plain functions over
//! state, given `now` and bytes, returning [`Action`]s. No sockets, no clock,
//! no threads: the mio workers (`crate::io`) feed it and carry out what it
//! asks. See docs/engine-core.md.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use ilpd_codec::address::Address;
use ilpd_codec::sha256::{self, BatchVerifier};

use crate::ccp::node::LearnedRoutes;
use crate::ccp::CcpHandle;
use crate::config::{AccountConfig, Config, ConfigError, Relation};
use crate::ledger::{Durability, LedgerStatus};

mod accounts;
mod forward;
mod journal;
mod metrics;
mod peer;
mod pending;
mod rates;
mod receiver;
mod routing;

pub use accounts::BalanceSnapshot;
pub use forward::Core;
pub use pending::{Entry as PendingEntry, MAX_SLOTS, WHEEL_SLOTS};
pub use rates::{ConvertError, Factor};
pub use receiver::SpspRefusal;

use accounts::AccountState;
use metrics::{AccountView, Metrics};
use rates::RateTable;
use receiver::Receivers;
use routing::Router;

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

/// Route target meaning "this connector" (no account).
pub(crate) const LOCAL: AccountId = AccountId(u32::MAX);

/// Node-wide state shared by all workers (behind an Arc); lock-free on the hot path.
pub struct Shared {
    node_address: Address,
    configs: Vec<AccountConfig>,
    /// Each account's own address: a child's `<node>.<id>` unless it has
    /// `ilp_address`, which any account may have. IL-DCP tells children theirs.
    addresses: Vec<Option<Address>>,
    states: Box<[AccountState]>,
    by_name: HashMap<String, AccountId>,
    /// (min_message_window_ms, max_hold_time_ms) when the account is the next hop.
    expiry_knobs: Vec<(u64, u64)>,
    router: Router,
    rates: RateTable,
    max_in_flight: usize,
    /// Most pending packets per worker whose Prepare came from each account.
    in_flight_quota: Vec<usize>,
    verifier: BatchVerifier,
    metrics: Metrics,
    /// Route broadcasting (docs/ccp.md): cold path, behind a mutex; its
    /// deadline is an atomic read by every worker.
    ccp: CcpHandle,
    /// Whether cores journal balance effects (durability is not "none").
    journaling: bool,
    /// Set once the durable ledger failed (docs/ledger.md).
    ledger: Arc<LedgerStatus>,
    /// Receiver accounts: ilpd's own STREAM receivers (docs/stream.md
    /// "Receiving in ilpd").
    receivers: Receivers,
}

impl Shared {
    /// Builds accounts (cache-padded atomic balances), the routing snapshot and the rate table from a VALIDATED config
    /// (it is validated again here; it is cheap). Fails if `node.sha256_impl` names a kernel this CPU lacks or a rate
    /// cannot be represented exactly.
    pub fn from_config(cfg: &Config) -> Result<Arc<Shared>, ConfigError> {
        cfg.validate()?;
        let node = &cfg.node;
        let node_address = Address::new(&node.address).map_err(|e| {
            ConfigError::new(
                "node.address",
                format!("{:?} is not a valid ILP address: {e}", node.address),
            )
        })?;
        let choice = sha256::parse_choice(&node.sha256_impl)
            .map_err(|e| ConfigError::new("node.sha256_impl", e))?;
        let verifier =
            BatchVerifier::new(choice).map_err(|e| ConfigError::new("node.sha256_impl", e))?;
        let n = cfg.accounts.len();
        if n > u32::MAX as usize - 1 {
            return Err(ConfigError::new("accounts", "too many accounts"));
        }
        let mut addresses = Vec::with_capacity(n);
        let mut local = Vec::new();
        let mut by_name = HashMap::with_capacity(n);
        let mut states = Vec::with_capacity(n);
        let mut expiry_knobs = Vec::with_capacity(n);
        for (i, a) in cfg.accounts.iter().enumerate() {
            let key = |k: &str| format!("accounts[{i}].{k}");
            let id = AccountId(i as u32);
            let addr = match (&a.ilp_address, a.relation) {
                (Some(s), _) => Some(
                    Address::new(s)
                        .map_err(|e| ConfigError::new(key("ilp_address"), format!("{s:?}: {e}")))?,
                ),
                (None, Relation::Child | Relation::Receiver) => {
                    Some(node_address.with_suffix(&a.id).map_err(|e| {
                        ConfigError::new(key("id"), format!("{}.{}: {e}", node.address, a.id))
                    })?)
                }
                (None, _) => None,
            };
            if let Some(addr) = &addr {
                local.push((Box::<[u8]>::from(addr.as_bytes()), id));
            }
            addresses.push(addr);
            by_name.insert(a.id.clone(), id);
            states.push(AccountState::new(
                a.min_balance,
                a.max_balance,
                a.max_packets_per_sec,
                a.max_amount_per_sec,
            ));
            expiry_knobs.push((
                a.min_message_window_ms
                    .unwrap_or(node.min_message_window_ms),
                a.max_hold_time_ms.unwrap_or(node.max_hold_time_ms),
            ));
        }
        // Our own address is a local route (docs/design.md "Route selection"): what falls under it
        // and is not a child's address has no receiver (F02), rather than
        // bouncing to a parent's default route.
        local.push((Box::<[u8]>::from(node_address.as_bytes()), LOCAL));
        let mut fixed = Vec::with_capacity(cfg.routes.len());
        let mut statics = Vec::with_capacity(cfg.routes.len());
        for (i, r) in cfg.routes.iter().enumerate() {
            let to = *by_name.get(&r.account).ok_or_else(|| {
                ConfigError::new(
                    format!("routes[{i}].account"),
                    format!("no account with id {:?}", r.account),
                )
            })?;
            fixed.push((Box::<[u8]>::from(r.prefix.as_bytes()), to));
            if let Ok(a) = Address::new(&r.prefix) {
                statics.push((a, to));
            }
        }
        let ccp = CcpHandle::from_config(cfg, &node_address, &addresses, &statics);
        let receivers = Receivers::new(&cfg.accounts, &addresses, cfg.worker_count());
        Ok(Arc::new(Shared {
            node_address,
            configs: cfg.accounts.clone(),
            addresses,
            states: states.into_boxed_slice(),
            by_name,
            expiry_knobs,
            router: Router::new(local, fixed),
            rates: RateTable::new(&cfg.accounts, &cfg.rates)?,
            max_in_flight: node.max_in_flight,
            in_flight_quota: cfg
                .accounts
                .iter()
                .map(|a| a.max_in_flight.unwrap_or(node.in_flight_quota()))
                .collect(),
            verifier,
            metrics: Metrics::new(cfg.worker_count(), n),
            ccp,
            journaling: node.durability != Durability::None,
            ledger: Arc::default(),
            receivers,
        }))
    }

    /// Whether cores journal balance effects (durability is not "none").
    pub fn journaling(&self) -> bool {
        self.journaling
    }

    /// Whether any account is a receiver (docs/stream.md "Receiving in ilpd").
    pub fn has_receivers(&self) -> bool {
        !self.receivers.is_empty()
    }

    /// Sets the STREAM server secret the receivers derive connections from
    /// (kept in the data dir so SPSP details survive a restart). Call it
    /// before the workers start; false if a secret is in use already.
    /// Without it, the first use makes a random one for this process.
    pub fn set_stream_secret(&self, secret: [u8; 32]) -> bool {
        self.receivers.set_secret(secret)
    }

    /// The SPSP response body (RFC 9) of receiver account `name`, or of
    /// the default receiver (`None`: the only one, or the one with
    /// `spsp_default`), with a fresh connection token; receipts (RFC 39)
    /// when `receipt` is given.
    pub fn spsp(
        &self,
        name: Option<&str>,
        receipt: Option<&ilpd_stream::receipt::ReceiptParams>,
    ) -> Result<String, SpspRefusal> {
        self.receivers
            .spsp(name, receipt, |id| self.configs[id.0 as usize].id.clone())
    }

    /// The durable ledger's state, shared with its writers and syncer.
    pub fn ledger_status(&self) -> &Arc<LedgerStatus> {
        &self.ledger
    }

    /// Loads recovered balances (docs/ledger.md "Recovery") before the
    /// workers start. Returns the ids the config no longer has (their
    /// balances stay in the ledger's snapshot).
    pub fn restore_balances(&self, balances: &[(String, i64)]) -> Vec<String> {
        let mut orphans = Vec::new();
        for (name, b) in balances {
            match self.by_name.get(name) {
                Some(id) => self.states[id.0 as usize].restore(*b),
                None if *b != 0 => orphans.push(name.clone()),
                None => {}
            }
        }
        orphans
    }

    pub fn node_address(&self) -> &Address {
        &self.node_address
    }

    pub fn account_count(&self) -> usize {
        self.configs.len()
    }

    /// Panics on an id this `Shared` did not hand out (ids never come from peers).
    pub fn account_config(&self, id: AccountId) -> &AccountConfig {
        &self.configs[id.0 as usize]
    }

    pub fn account_by_name(&self, name: &str) -> Option<AccountId> {
        self.by_name.get(name).copied()
    }

    /// The account's own ILP address (a child's `<node>.<id>`, or `ilp_address`).
    pub fn account_address(&self, id: AccountId) -> Option<&Address> {
        self.addresses.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Constant-time comparison against every account's incoming_token; never logs the token.
    /// `username`, when the peer sent one, must equal the account id if given.
    pub fn authenticate(&self, username: Option<&[u8]>, token: &[u8]) -> Option<AccountId> {
        let mut found: Option<AccountId> = None;
        // Every account is compared, whatever matched, so timing does not
        // reveal which account (or how much of a token) matched.
        for (i, a) in self.configs.iter().enumerate() {
            let Some(expected) = a.incoming_token.as_deref() else {
                continue;
            };
            let token_ok = ct_eq(expected.as_bytes(), token);
            let user_ok = match username {
                Some(u) => ct_eq(a.id.as_bytes(), u),
                None => true,
            };
            if token_ok & user_ok & found.is_none() {
                found = Some(AccountId(i as u32));
            }
        }
        found
    }

    /// The account's first connection is CCP's link up (docs/ccp.md).
    pub fn connection_opened(&self, id: AccountId) {
        // A receiver has no peer: it must stay "not connected", which is how
        // forwarding tells it apart at no cost (forward.rs).
        if self.receivers.slot(id).is_some() {
            return;
        }
        if let Some(s) = self.states.get(id.0 as usize) {
            if s.connection_opened() {
                // Time 0: the route control is due at the next CCP poll.
                self.ccp
                    .call(0, |c| c.on_link_up(0, id), |r| self.publish_learned(r));
            }
        }
    }

    /// The account's last connection closing is CCP's link down: the
    /// routes it gave us are withdrawn at once.
    pub fn connection_closed(&self, id: AccountId) {
        if let Some(s) = self.states.get(id.0 as usize) {
            if s.connection_closed() {
                self.ccp
                    .call(0, |c| c.on_link_down(0, id), |r| self.publish_learned(r));
            }
        }
    }

    #[inline]
    pub fn is_connected(&self, id: AccountId) -> bool {
        self.states
            .get(id.0 as usize)
            .is_some_and(|s| s.connections() > 0)
    }

    /// Balance as defined in docs/design.md "Balance sign" (positive = the peer
    /// owes us); 0 for an unknown id.
    pub fn balance(&self, id: AccountId) -> i64 {
        self.states
            .get(id.0 as usize)
            .map_or(0, AccountState::balance)
    }

    /// Balance plus the amounts held by pending Prepares in each direction.
    pub fn balance_snapshot(&self, id: AccountId) -> Option<BalanceSnapshot> {
        self.states.get(id.0 as usize).map(AccountState::snapshot)
    }

    /// Segment-aware longest-prefix route lookup (what forwarding uses).
    pub fn route(&self, destination: &[u8]) -> Option<AccountId> {
        self.router.lookup(destination)
    }

    /// The node's CCP state (route broadcasting).
    pub fn ccp(&self) -> &CcpHandle {
        &self.ccp
    }

    /// Publishes CCP's learned routes into the routing snapshot (workers
    /// see it at their next lookup, without locking).
    pub(crate) fn publish_learned(&self, routes: LearnedRoutes) {
        self.router.set_learned(routes);
    }

    /// Replaces the learned (CCP) routes; static and local routes still win.
    pub fn set_learned_routes(&self, routes: Vec<(Address, AccountId)>) {
        self.router.set_learned(
            routes
                .into_iter()
                .map(|(p, a)| (Box::<[u8]>::from(p.as_bytes()), a))
                .collect(),
        );
    }

    /// The fulfillment verifier chosen from `node.sha256_impl`.
    pub fn verifier(&self) -> BatchVerifier {
        self.verifier
    }

    /// Prometheus text for everything the core counts (packets by type/outcome/reject code per account,
    /// in-flight, balances, per-worker loop and batch sizes, forwarding latency histogram).
    pub fn render_metrics(&self) -> String {
        let views: Vec<AccountView<'_>> = self
            .configs
            .iter()
            .zip(self.states.iter())
            .map(|(c, s)| {
                let b = s.snapshot();
                AccountView {
                    name: &c.id,
                    balance: b.balance,
                    reserved_incoming: b.reserved_incoming,
                    reserved_outgoing: b.reserved_outgoing,
                    connections: s.connections(),
                }
            })
            .collect();
        let mut text = self.metrics.render(&views);
        self.ccp.render_metrics(&mut text);
        self.receivers
            .render(&mut text, |id| self.configs[id.0 as usize].id.clone());
        text
    }

    /// Per-worker loop statistics IO records (relaxed atomics, written by one worker only).
    pub fn record_loop(&self, worker: usize, messages_in_turn: usize) {
        self.metrics.worker(worker).record_loop(messages_in_turn);
    }
}

/// Compares in time that depends only on the lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i).copied().unwrap_or(!*x);
        diff |= (x ^ y) as u64;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"ab", b"abc"));
        assert!(ct_eq(b"", b""));
    }
}

//! Shared harness for the sans-IO core tests: a `Shared` built from a TOML
//! string, one `Core`, a virtual clock, and helpers to build packets and
//! read the actions back. No sockets, no threads, no real time.
//!
//! Unless the config says `durability = "none"`, the harness drives the
//! core's journal after every call the way a worker does with
//! `durability = "os"` (seal, write, durable at once), keeping every frame
//! in [`Harness::journal`] so tests can replay it.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::BytesMut;
use ilpd_codec::ilp::{
    Fulfill, FulfillBuilder, Packet, Prepare, PrepareBuilder, Reject, RejectBuilder,
};
use ilpd_codec::types::Expiry;
use ilpd_engine::config::Config;
use ilpd_engine::core::{AccountId, Action, Core, ErrorCode, Now, OutId, ReplyTo, Shared};
use sha2::{Digest, Sha256};

/// 2023-11-14T22:13:20Z: far from any edge of the timestamp range.
pub const T0_MS: u64 = 1_700_000_000_000;

pub const NODE: &str = "test.net.ilpd";

/// Four accounts: alice (child, USD 9), bob (peer at test.net.bob, USD 9),
/// carol (peer at test.net.carol, EUR 6), dave (parent, default route `test.net`, USD 9).
pub const BASE: &str = r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.net.ilpd"
threads = 1
max_in_flight = 64

[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "alice-token"

[[accounts]]
id = "bob"
relation = "peer"
asset_code = "USD"
asset_scale = 9
incoming_token = "bob-token"
ilp_address = "test.net.bob"

[[accounts]]
id = "carol"
relation = "peer"
asset_code = "EUR"
asset_scale = 6
incoming_token = "carol-token"
ilp_address = "test.net.carol"

[[accounts]]
id = "dave"
relation = "parent"
asset_code = "USD"
asset_scale = 9
incoming_token = "dave-token"

[[routes]]
prefix = "test.net"
account = "dave"

[rates]
prices = { USD = "1", EUR = "1.25" }
"#;

pub struct Harness {
    pub shared: Arc<Shared>,
    pub core: Core,
    pub now: Now,
    pub out: Vec<Action>,
    next_request: u32,
    /// Every journal frame "written", in order (a segment's bytes).
    pub journal: Vec<u8>,
    /// After each frame: the journal's length and every account's balance
    /// (what recovery must find if the process died right there).
    pub frames: Vec<(usize, Vec<i64>)>,
}

impl Harness {
    /// Builds from TOML; every account starts connected.
    pub fn new(toml: &str) -> Harness {
        let cfg = Config::from_toml(toml).expect("test config parses");
        cfg.validate().expect("test config is valid");
        let shared = Shared::from_config(&cfg).expect("Shared::from_config");
        for i in 0..shared.account_count() {
            shared.connection_opened(AccountId(i as u32));
        }
        let mut core = Core::new(shared.clone(), 0);
        let journal = core
            .journal_checkpoint(T0_MS, 0)
            .map_or_else(Vec::new, |(_, cp)| cp);
        let frames = vec![(journal.len(), vec![0; shared_accounts(&shared)])];
        Harness {
            shared,
            core,
            now: Now {
                unix_ms: T0_MS,
                mono_ns: 1_000_000_000,
            },
            out: Vec::new(),
            next_request: 1,
            frames,
            journal,
        }
    }

    /// What IO does at the end of a turn: write the core's journal frame,
    /// then pass on what waited for it.
    pub fn pump(&mut self, out: &mut Vec<Action>) {
        if let Some((seq, bytes)) = self.core.journal_seal(self.now.unix_ms) {
            self.journal.extend_from_slice(bytes);
            self.core.journal_written(seq, out);
            self.core.journal_durable(seq, out);
            let balances = (0..shared_accounts(&self.shared))
                .map(|i| self.shared.balance(AccountId(i as u32)))
                .collect();
            self.frames.push((self.journal.len(), balances));
        }
        self.core.journal_flushed();
    }

    /// Replays the first `len` bytes of [`journal`](Self::journal) as
    /// recovery would (a crash cut the rest).
    pub fn replay(&self, len: usize) -> ilpd_engine::ledger::replay::Replayed {
        let name = ilpd_engine::ledger::writer::segment_name(0, 0, 0);
        ilpd_engine::ledger::replay::replay(None, &[(name, &self.journal[..len])])
            .expect("the journal replays")
    }

    /// Recovered balance of every account (config order) from `len` bytes.
    pub fn recovered(&self, len: usize) -> Vec<i64> {
        let r = self.replay(len);
        (0..shared_accounts(&self.shared))
            .map(|i| {
                let name = &self.shared.account_config(AccountId(i as u32)).id;
                r.balances.get(name).map_or(0, |b| *b as i64)
            })
            .collect()
    }

    pub fn base() -> Harness {
        Harness::new(BASE)
    }

    pub fn id(&self, name: &str) -> AccountId {
        self.shared.account_by_name(name).expect("account exists")
    }

    pub fn advance_ms(&mut self, ms: u64) {
        self.now.unix_ms += ms;
        self.now.mono_ns += ms * 1_000_000;
    }

    /// Sends `packet` as a Prepare from `from`; returns the actions and the ReplyTo used.
    pub fn send(&mut self, from: &str, packet: BytesMut) -> (ReplyTo, Vec<Action>) {
        let to = ReplyTo {
            account: self.id(from),
            conn: 100 + self.id(from).0 as u64,
            request_id: self.next_request,
        };
        self.next_request += 1;
        let mut out = Vec::new();
        self.core.on_prepare(self.now, to, packet, &mut out);
        self.pump(&mut out);
        (to, out)
    }

    pub fn reply(&mut self, from: &str, out_id: OutId, packet: BytesMut) -> Vec<Action> {
        let mut out = Vec::new();
        let id = self.id(from);
        self.core.on_reply(self.now, id, out_id, packet, &mut out);
        self.pump(&mut out);
        out
    }

    pub fn flush(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.core.flush(self.now, &mut out);
        self.pump(&mut out);
        out
    }

    pub fn timers(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.core.on_timers(self.now, &mut out);
        self.pump(&mut out);
        out
    }

    pub fn balance(&self, name: &str) -> i64 {
        self.shared.balance(self.id(name))
    }

    /// (balance, reserved incoming, reserved outgoing)
    pub fn snapshot(&self, name: &str) -> (i64, i128, i128) {
        let s = self
            .shared
            .balance_snapshot(self.id(name))
            .expect("account");
        (s.balance, s.reserved_incoming, s.reserved_outgoing)
    }

    /// Metric line value from `render_metrics` (exact series text).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self.shared.render_metrics();
        text.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.parse().expect("number"))
        })
    }
}

fn shared_accounts(s: &Shared) -> usize {
    s.account_count()
}

/// Fulfillment number `n` and its condition (SHA-256, computed here with sha2).
pub fn pair(n: u8) -> ([u8; 32], [u8; 32]) {
    let f = [n; 32];
    (f, Sha256::digest(f).into())
}

pub fn prepare(
    amount: u64,
    expires_at_ms: u64,
    dest: &str,
    condition: &[u8; 32],
    data: &[u8],
) -> BytesMut {
    PrepareBuilder {
        amount,
        expires_at: Expiry(expires_at_ms),
        execution_condition: condition,
        destination: dest.as_bytes(),
        data,
    }
    .build()
}

pub fn fulfill(fulfillment: &[u8; 32], data: &[u8]) -> BytesMut {
    FulfillBuilder { fulfillment, data }.build()
}

pub fn reject(code: ErrorCode, by: &str, message: &str, data: &[u8]) -> BytesMut {
    RejectBuilder {
        code,
        triggered_by: by.as_bytes(),
        message: message.as_bytes(),
        data,
    }
    .build()
}

/// The single Forward in `actions`.
pub fn forwarded(actions: &[Action]) -> (AccountId, OutId, Prepare<Vec<u8>>) {
    assert_eq!(actions.len(), 1, "expected one action, got {actions:?}");
    match &actions[0] {
        Action::Forward { to, out_id, packet } => (
            *to,
            *out_id,
            Prepare::new_checked(packet.to_vec()).expect("forwarded packet is a valid Prepare"),
        ),
        other => panic!("expected a Forward, got {other:?}"),
    }
}

/// The single Reply in `actions`: where to and the parsed packet.
pub fn replied(actions: &[Action]) -> (ReplyTo, Packet<Vec<u8>>) {
    assert_eq!(actions.len(), 1, "expected one action, got {actions:?}");
    match &actions[0] {
        Action::Reply { to, packet } => (
            *to,
            Packet::new_checked(packet.to_vec()).expect("reply is a valid ILP packet"),
        ),
        other => panic!("expected a Reply, got {other:?}"),
    }
}

/// The single Reply, which must be a Reject; returns it.
pub fn rejected(actions: &[Action]) -> Reject<Vec<u8>> {
    match replied(actions).1 {
        Packet::Reject(r) => r,
        other => panic!("expected a Reject, got {other:?}"),
    }
}

/// The single Reply, which must be a Fulfill.
pub fn fulfilled(actions: &[Action]) -> Fulfill<Vec<u8>> {
    match replied(actions).1 {
        Packet::Fulfill(f) => f,
        other => panic!("expected a Fulfill, got {other:?}"),
    }
}

/// Asserts a Reject we created ourselves with `code`, and returns its message.
pub fn assert_own_reject(actions: &[Action], code: ErrorCode) -> String {
    let r = rejected(actions);
    assert_eq!(
        r.code(),
        code,
        "message: {}",
        String::from_utf8_lossy(r.message())
    );
    assert_eq!(r.triggered_by(), NODE.as_bytes());
    assert!(!r.message().is_empty() && r.message().len() <= 8191);
    String::from_utf8(r.message().to_vec()).expect("UTF-8 message")
}

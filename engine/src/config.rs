//! The connector's configuration: one TOML file, every knob with a default.
//!
//! `ilpd --config ilpd.toml` loads this; runtime flags (see `cli.rs`)
//! override the `[node]` knobs afterwards, and only then is the whole thing
//! validated, so an error always names the key and the problem.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ilpd_codec::address::Address;
use serde::Deserialize;

use crate::http::{HttpUrl, LinkKind};
use crate::ledger::Durability;

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `accounts[1].asset_scale`.
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config: {}", self.problem)
        } else {
            write!(f, "config: {}: {}", self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// Static routes; they always win over learned routes.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub rates: RatesConfig,
}

/// Node-wide settings. Every field here is also a runtime flag.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The connector's own ILP address (RFC 15), e.g. `g.us.acme`.
    pub address: String,
    /// Worker threads; 0 means one per core.
    #[serde(default)]
    pub threads: usize,
    /// Pin each worker to its own core.
    #[serde(default = "default_true")]
    pub pin_cores: bool,
    /// BTP/2.0 (WebSocket) listener. Every worker binds it with SO_REUSEPORT.
    #[serde(default = "default_listen")]
    pub listen: Option<SocketAddr>,
    /// Prometheus text exposition (`GET /metrics`); off when absent.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    /// Pending (forwarded, unanswered) Prepares per worker; past it: T03.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Most of those one account's Prepares may hold, per worker; past it
    /// that account gets T03 and the others are untouched. 0 means half of
    /// `max_in_flight`.
    #[serde(default)]
    pub max_in_flight_per_account: usize,
    /// Most messages handled per connection per loop turn before the
    /// worker moves on (fairness between peers).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Time a forwarded Prepare's expiry is cut by (RFC 27: "e.g. 1 s per hop").
    #[serde(default = "default_min_message_window_ms")]
    pub min_message_window_ms: u64,
    /// Longest we hold a forwarded Prepare, whatever its expiry says.
    #[serde(default = "default_max_hold_time_ms")]
    pub max_hold_time_ms: u64,
    /// tracing filter, e.g. `info` or `ilpd_engine=debug`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Largest WebSocket frame or message accepted; a larger one closes the connection.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// A connection that has not finished the WebSocket and BTP auth
    /// handshakes in this time is closed.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Bytes queued for one connection before we stop reading from the
    /// peers that feed it (and, past twice this, close it).
    #[serde(default = "default_write_buffer_limit")]
    pub write_buffer_limit: usize,
    /// SO_SNDBUF / SO_RCVBUF for every socket; the OS default when absent.
    #[serde(default)]
    pub socket_send_buffer: Option<usize>,
    #[serde(default)]
    pub socket_recv_buffer: Option<usize>,
    /// SHA-256 implementation for fulfillment checks: auto, portable, sha-ni, avx2, avx512.
    #[serde(default = "default_sha256_impl")]
    pub sha256_impl: String,
    /// On SIGINT/SIGTERM, how long to wait for in-flight packets before exiting.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Delay before the first reconnect of a client-side BTP account; doubles up to 30 s.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    /// ILP-over-HTTP listener (all HTTP link kinds); off when absent. Every
    /// worker binds it with SO_REUSEPORT. Plain HTTP: put a TLS terminator
    /// in front for https (docs/http.md).
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// The `Callback-Url` sent on `http-async` links; defaults to
    /// `http://<http_listen>/ilp`.
    #[serde(default)]
    pub http_callback_url: Option<String>,
    /// An ILP-over-HTTP server connection with no request outstanding and
    /// silent this long is closed (an idle client costs a slot and buffers).
    #[serde(default = "default_http_idle_timeout_ms")]
    pub http_idle_timeout_ms: u64,
    /// Failed auths (BTP, HTTP 401) per source IP per minute, after a burst
    /// of 10; past it new connections from that address are closed at
    /// accept until it refills. 0 turns throttling off.
    #[serde(default = "default_auth_failures_per_ip_per_min")]
    pub auth_failures_per_ip_per_min: u32,
    /// Accepted connections open at once, BTP and HTTP together, over every
    /// worker; past it new ones are closed at accept. Our own dials are not
    /// counted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Accepted connections open at once from one source IP.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: u32,
    /// Accepted connections that have not authenticated yet (a BTP auth, or
    /// an HTTP request with a valid token).
    #[serde(default = "default_max_unauthenticated")]
    pub max_unauthenticated: usize,
    /// Accepted connections from one source IP that have not authenticated
    /// yet: one address alone cannot fill `max_unauthenticated`.
    #[serde(default = "default_max_unauthenticated_per_ip")]
    pub max_unauthenticated_per_ip: u32,
    /// Accept two accounts with the same `incoming_token`, and tokens under
    /// 16 bytes without a warning (tests and demos only).
    #[serde(default)]
    pub allow_weak_tokens: bool,
    /// Largest HTTP request or response body; larger requests get `413`.
    #[serde(default = "default_http_max_body")]
    pub http_max_body: usize,
    /// How many answered requests idempotent links (btp-i, http-oer-*)
    /// remember, node-wide, and for how long.
    #[serde(default = "default_idempotency_capacity")]
    pub idempotency_capacity: usize,
    #[serde(default = "default_idempotency_ttl_ms")]
    pub idempotency_ttl_ms: u64,
    /// CCP (docs/ccp.md): route update heartbeat interval; also the retry
    /// delay after a failed route control or update.
    #[serde(default = "default_route_broadcast_interval_ms")]
    pub route_broadcast_interval_ms: u64,
    /// CCP: the holdDownTime we announce (how long peers keep our routes
    /// without hearing from us). ilp-connector's 45 s; keep it above the
    /// broadcast interval.
    #[serde(default = "default_route_hold_down_ms")]
    pub route_hold_down_ms: u64,
    /// CCP: most new routes (and, separately, withdrawals) accepted in one
    /// route update; a larger one is rejected with F00.
    #[serde(default = "default_max_routes_per_update")]
    pub max_routes_per_update: usize,
    /// The durable ledger's directory (docs/ledger.md): snapshot, journal,
    /// recovery reports. Created on first start; one ilpd at a time.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// When a balance effect counts as durable: `fsync` (group commit with
    /// fdatasync), `os` (written to the kernel) or `none` (no journal:
    /// balances are lost on restart; benchmarks only).
    #[serde(default)]
    pub durability: Durability,
    /// A worker starts a new journal segment (with a checkpoint) past this
    /// size; it bounds recovery time.
    #[serde(default = "default_journal_segment_mb")]
    pub journal_segment_mb: u64,
}

/// How an account relates to us (RFC 34 / ilp-connector).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Relation {
    Parent,
    Peer,
    Child,
    /// Not a peer: ilpd itself receives STREAM payments for this account
    /// (docs/stream.md "Receiving in ilpd"). No token, no link.
    Receiver,
}

/// One peer account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Unique id; also the child's address segment, so `[A-Za-z0-9_~-]+`.
    pub id: String,
    pub relation: Relation,
    pub asset_code: String,
    pub asset_scale: u8,
    /// The token this peer must present (BTP `auth_token`, HTTP bearer).
    /// Compared in constant time, never logged.
    #[serde(default)]
    pub incoming_token: Option<String>,
    /// Client side: we dial this `ws://host:port/path` and authenticate
    /// with `outgoing_token` (and `btp_username` if set).
    #[serde(default)]
    pub btp_url: Option<String>,
    #[serde(default)]
    pub outgoing_token: Option<String>,
    #[serde(default)]
    pub btp_username: Option<String>,
    /// Client side: connections to open; 0 means one per worker.
    #[serde(default)]
    pub connections: usize,
    /// Which bilateral link this peer speaks: btp (default), btp-i, http,
    /// http-async, http-oer-sync, http-oer-async (RFC 35 and the node-roles
    /// draft; docs/design.md "ILP over HTTP").
    #[serde(default)]
    pub link: LinkKind,
    /// HTTP links: where we POST this peer's packets (`http://host:port/path`),
    /// with `outgoing_token` as the bearer token.
    #[serde(default)]
    pub http_url: Option<String>,
    /// HTTP links: keep-alive connections per worker to `http_url`.
    #[serde(default = "default_http_connections")]
    pub http_connections: usize,
    /// HTTP links: requests in flight per connection (1 = no pipelining).
    #[serde(default = "default_http_pipeline")]
    pub http_pipeline: usize,
    /// HTTP links: a connection whose oldest request has had no response
    /// this long is closed (its packets get T01, or are repeated on
    /// idempotent links).
    #[serde(default = "default_http_timeout_ms")]
    pub http_timeout_ms: u64,
    /// Highest balance (what the peer owes us) its Prepares may reserve; past it: T04.
    #[serde(default = "default_max_balance")]
    pub max_balance: i64,
    /// Lowest balance (negative = we owe the peer) our Prepares to it may reach; past it: T04.
    #[serde(default = "default_min_balance")]
    pub min_balance: i64,
    /// Largest single Prepare accepted from this peer; past it: F08 with data.
    #[serde(default)]
    pub max_packet_amount: Option<u64>,
    /// Optional rate limits on this peer's Prepares; past them: T05.
    #[serde(default)]
    pub max_packets_per_sec: Option<u32>,
    /// This account's own in-flight quota per worker (overrides
    /// `node.max_in_flight_per_account`).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    #[serde(default)]
    pub max_amount_per_sec: Option<u64>,
    /// Per-account overrides of the node's expiry knobs (used when this
    /// account is the next hop).
    #[serde(default)]
    pub min_message_window_ms: Option<u64>,
    #[serde(default)]
    pub max_hold_time_ms: Option<u64>,
    /// The account's ILP address. A child defaults to `<node address>.<id>`
    /// (given to it by IL-DCP); for a parent or peer this is the prefix
    /// routed to it, if any.
    #[serde(default)]
    pub ilp_address: Option<String>,
    /// CCP: send our routes to this account (if it asks). Default: yes.
    #[serde(default)]
    pub send_routes: Option<bool>,
    /// CCP: accept routes from this account. Default: parents and peers
    /// yes, children no (a child's prefix is known locally).
    #[serde(default)]
    pub receive_routes: Option<bool>,
    /// Receivers only: most one STREAM stream may receive (`StreamMaxMoney`);
    /// default no limit.
    #[serde(default)]
    pub stream_receive_max: Option<u64>,
    /// Receivers only: answer SPSP at `/.well-known/pay` (needed when there
    /// is more than one receiver).
    #[serde(default)]
    pub spsp_default: bool,
}

/// A static route: destinations under `prefix` go to `account`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: String,
    pub account: String,
}

/// Exchange rates: the price of one whole unit of each asset in a common
/// unit, as exact decimal strings, and the connector's spread.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatesConfig {
    /// Fraction kept by the connector, e.g. "0.002". Default "0".
    #[serde(default)]
    pub spread: Option<String>,
    /// asset code -> price, e.g. `USD = "1"`, `EUR = "1.08"`. Accounts with
    /// the same asset code convert 1:1 (only the scale changes) whether or
    /// not a price is listed.
    #[serde(default)]
    pub prices: BTreeMap<String, String>,
}

/// Most worker threads (worker ids travel as u16 between workers).
pub const MAX_THREADS: usize = 1024;

fn default_true() -> bool {
    true
}
fn default_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 7768)))
}
fn default_max_in_flight() -> usize {
    65_536
}
fn default_batch() -> usize {
    256
}
fn default_min_message_window_ms() -> u64 {
    1000
}
fn default_max_hold_time_ms() -> u64 {
    30_000
}
fn default_log_level() -> String {
    "info".into()
}
fn default_max_message_size() -> usize {
    64 * 1024
}
fn default_handshake_timeout_ms() -> u64 {
    5000
}
fn default_write_buffer_limit() -> usize {
    4 * 1024 * 1024
}
fn default_sha256_impl() -> String {
    "auto".into()
}
fn default_shutdown_grace_ms() -> u64 {
    30_000
}
fn default_reconnect_initial_ms() -> u64 {
    100
}
fn default_route_broadcast_interval_ms() -> u64 {
    30_000
}
fn default_route_hold_down_ms() -> u64 {
    45_000
}
fn default_auth_failures_per_ip_per_min() -> u32 {
    60
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_connections_per_ip() -> u32 {
    512
}
fn default_max_unauthenticated() -> usize {
    1_024
}
fn default_max_unauthenticated_per_ip() -> u32 {
    64
}
fn default_http_idle_timeout_ms() -> u64 {
    10_000
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./ilpd-data")
}
fn default_journal_segment_mb() -> u64 {
    64
}
fn default_max_routes_per_update() -> usize {
    10_000
}
fn default_http_max_body() -> usize {
    crate::http::DEFAULT_MAX_BODY
}
fn default_idempotency_capacity() -> usize {
    100_000
}
fn default_idempotency_ttl_ms() -> u64 {
    120_000
}
fn default_http_connections() -> usize {
    2
}
fn default_http_pipeline() -> usize {
    64
}
fn default_http_timeout_ms() -> u64 {
    30_000
}
fn default_max_balance() -> i64 {
    i64::MAX
}
fn default_min_balance() -> i64 {
    i64::MIN
}

/// An exact non-negative decimal, `num / den`, parsed from text like "1.08".
/// Rate math is integer-only (docs/design.md "Rates": no f64 in amount math).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    pub num: u128,
    pub den: u128,
}

impl Decimal {
    /// Parses `123`, `0.002`, `1.08` (at most 18 fraction digits).
    pub fn parse(s: &str) -> Result<Decimal, String> {
        let s = s.trim();
        let (int, frac, has_point) = match s.split_once('.') {
            Some((i, f)) => (i, f, true),
            None => (s, "", false),
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        // "1." and ".5" are refused: digits on both sides of a point.
        if !digits(int) || (has_point && !digits(frac)) {
            return Err(format!("{s:?} is not a decimal number like \"1.08\""));
        }
        if int.len() > 18 || frac.len() > 18 {
            return Err(format!(
                "{s:?} has too many digits (at most 18 before and 18 after the point)"
            ));
        }
        let mut num: u128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            num = num * 10 + (b - b'0') as u128;
        }
        Ok(Decimal {
            num,
            den: 10u128.pow(frac.len() as u32),
        })
    }
}

/// Shortest `incoming_token` accepted without a warning.
pub const MIN_TOKEN_LEN: usize = 16;

/// A receiver account has no peer behind it (docs/stream.md "Receiving in
/// ilpd"); the receiver-only keys are refused on other accounts.
fn validate_receiver(
    i: usize,
    a: &AccountConfig,
    spsp_default: &mut Option<usize>,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("accounts[{i}].{k}");
    if a.relation != Relation::Receiver {
        if a.stream_receive_max.is_some() {
            return Err(ConfigError::new(
                key("stream_receive_max"),
                "only for relation = \"receiver\"",
            ));
        }
        if a.spsp_default {
            return Err(ConfigError::new(
                key("spsp_default"),
                "only for relation = \"receiver\"",
            ));
        }
        return Ok(());
    }
    let peer_only = [
        ("incoming_token", a.incoming_token.is_some()),
        ("outgoing_token", a.outgoing_token.is_some()),
        ("btp_url", a.btp_url.is_some()),
        ("btp_username", a.btp_username.is_some()),
        ("http_url", a.http_url.is_some()),
        ("link", a.link != LinkKind::Btp),
    ];
    for (k, set) in peer_only {
        if set {
            return Err(ConfigError::new(
                key(k),
                "a receiver account has no peer (ilpd receives its payments itself): remove it",
            ));
        }
    }
    if a.stream_receive_max == Some(0) {
        return Err(ConfigError::new(
            key("stream_receive_max"),
            "must be at least 1 (omit it for no limit)",
        ));
    }
    if a.spsp_default {
        if let Some(j) = spsp_default.replace(i) {
            return Err(ConfigError::new(
                key("spsp_default"),
                format!("accounts[{j}] is the SPSP default already; only one may be"),
            ));
        }
    }
    Ok(())
}

impl Config {
    /// What is legal but unsafe, one line each, for ilpd to log at start
    /// (issue 16 "Safe defaults"; the tokens themselves are never shown).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let node = &self.node;
        for (i, a) in self.accounts.iter().enumerate() {
            if a.relation == Relation::Child && a.max_balance == i64::MAX {
                w.push(format!(
                    "accounts[{i}] ({}): a child with no max_balance has unlimited credit",
                    a.id
                ));
            }
        }
        if let Some(m) = node.metrics_addr {
            if !m.ip().is_loopback() {
                w.push(format!(
                    "node.metrics_addr {m} is not a loopback address: anyone who reaches it reads every balance"
                ));
            }
        }
        w
    }
}

impl NodeConfig {
    /// The per-account in-flight quota (per worker) when an account sets
    /// none: `max_in_flight_per_account`, or half of `max_in_flight`.
    pub fn in_flight_quota(&self) -> usize {
        match self.max_in_flight_per_account {
            0 => (self.max_in_flight / 2).max(1),
            n => n,
        }
    }
}

impl Config {
    /// Reads and parses a TOML file (not yet validated: apply flag
    /// overrides, then call [`Config::validate`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml(&text)
    }

    /// Parses TOML text. toml's messages name the offending key and line.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::new("", e.to_string().trim().to_string()))
    }

    /// Checks everything that serde cannot: addresses, ids, references
    /// between sections, numeric ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let node = &self.node;
        let node_addr = Address::new(&node.address).map_err(|e| {
            ConfigError::new(
                "node.address",
                format!("{:?} is not a valid ILP address: {e}", node.address),
            )
        })?;
        if node.threads > MAX_THREADS {
            return Err(ConfigError::new(
                "node.threads",
                format!("must be at most {MAX_THREADS}"),
            ));
        }
        if node.max_in_flight == 0 {
            return Err(ConfigError::new("node.max_in_flight", "must be at least 1"));
        }
        if node.batch == 0 {
            return Err(ConfigError::new("node.batch", "must be at least 1"));
        }
        if node.max_message_size < 1024 || node.max_message_size > 16 * 1024 * 1024 {
            return Err(ConfigError::new(
                "node.max_message_size",
                "must be between 1024 and 16777216 bytes",
            ));
        }
        if node.write_buffer_limit < node.max_message_size {
            return Err(ConfigError::new(
                "node.write_buffer_limit",
                "must be at least node.max_message_size",
            ));
        }
        if node.max_hold_time_ms == 0 {
            return Err(ConfigError::new(
                "node.max_hold_time_ms",
                "must be at least 1",
            ));
        }
        if node.route_broadcast_interval_ms == 0 {
            return Err(ConfigError::new(
                "node.route_broadcast_interval_ms",
                "must be at least 1",
            ));
        }
        if node.route_hold_down_ms == 0 || node.route_hold_down_ms > u32::MAX as u64 {
            return Err(ConfigError::new(
                "node.route_hold_down_ms",
                "must be between 1 and 4294967295 (a CCP UInt32)",
            ));
        }
        for (key, v) in [
            ("node.max_connections", node.max_connections),
            (
                "node.max_connections_per_ip",
                node.max_connections_per_ip as usize,
            ),
            ("node.max_unauthenticated", node.max_unauthenticated),
            (
                "node.max_unauthenticated_per_ip",
                node.max_unauthenticated_per_ip as usize,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        if node.http_idle_timeout_ms < 100 {
            return Err(ConfigError::new(
                "node.http_idle_timeout_ms",
                "must be at least 100",
            ));
        }
        if node.journal_segment_mb == 0 || node.journal_segment_mb > 1 << 20 {
            return Err(ConfigError::new(
                "node.journal_segment_mb",
                "must be between 1 and 1048576",
            ));
        }
        if node.durability != Durability::None && node.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("node.data_dir", "must not be empty"));
        }
        if node.max_routes_per_update == 0 {
            return Err(ConfigError::new(
                "node.max_routes_per_update",
                "must be at least 1",
            ));
        }
        if !["auto", "portable", "sha-ni", "avx2", "avx512"].contains(&node.sha256_impl.as_str()) {
            return Err(ConfigError::new(
                "node.sha256_impl",
                format!(
                    "{:?} is not one of auto, portable, sha-ni, avx2, avx512",
                    node.sha256_impl
                ),
            ));
        }
        if node.http_max_body < 1024 || node.http_max_body > 16 * 1024 * 1024 {
            return Err(ConfigError::new(
                "node.http_max_body",
                "must be between 1024 and 16777216 bytes",
            ));
        }
        if let Some(u) = &node.http_callback_url {
            HttpUrl::parse(u).map_err(|e| ConfigError::new("node.http_callback_url", e))?;
        }
        if node.idempotency_capacity == 0 {
            return Err(ConfigError::new(
                "node.idempotency_capacity",
                "must be at least 1",
            ));
        }
        // A repeat must find the answer while the requester may still repeat.
        if node.idempotency_ttl_ms < node.max_hold_time_ms {
            return Err(ConfigError::new(
                "node.idempotency_ttl_ms",
                "must be at least node.max_hold_time_ms",
            ));
        }
        let mut ids = std::collections::HashSet::new();
        let mut spsp_default: Option<usize> = None;
        let mut tokens = std::collections::HashMap::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let key = |k: &str| format!("accounts[{i}].{k}");
            validate_receiver(i, a, &mut spsp_default)?;
            // Two accounts with one token: auth would silently pick the
            // first (issue 16 "Safe defaults").
            if let Some(t) = a.incoming_token.as_deref() {
                // A short token can be guessed (issue 16 "Safe defaults").
                if t.len() < MIN_TOKEN_LEN && !node.allow_weak_tokens {
                    return Err(ConfigError::new(
                        key("incoming_token"),
                        format!(
                            "{} bytes is too short to resist guessing: use at least \
                             {MIN_TOKEN_LEN} random bytes (or set node.allow_weak_tokens = true \
                             for a test)",
                            t.len()
                        ),
                    ));
                }
                if let Some(j) = tokens.insert(t, i) {
                    if !node.allow_weak_tokens {
                        return Err(ConfigError::new(
                            key("incoming_token"),
                            format!(
                                "the same token as accounts[{j}] ({:?}): each peer needs its own \
                                 (set node.allow_weak_tokens = true to allow it)",
                                self.accounts[j].id
                            ),
                        ));
                    }
                }
            }
            if a.id.is_empty()
                || !a
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_~-".contains(&b))
            {
                return Err(ConfigError::new(
                    key("id"),
                    format!(
                        "{:?} must be non-empty and use only A-Z a-z 0-9 _ ~ -",
                        a.id
                    ),
                ));
            }
            if !ids.insert(a.id.as_str()) {
                return Err(ConfigError::new(
                    key("id"),
                    format!("duplicate account id {:?}", a.id),
                ));
            }
            if a.asset_code.is_empty() || a.asset_code.len() > 255 {
                return Err(ConfigError::new(
                    key("asset_code"),
                    "must be 1 to 255 bytes",
                ));
            }
            if a.asset_scale > 38 {
                return Err(ConfigError::new(key("asset_scale"), "must be at most 38"));
            }
            if a.min_balance > 0 {
                return Err(ConfigError::new(
                    key("min_balance"),
                    "must be zero or negative",
                ));
            }
            if a.max_balance < 0 {
                return Err(ConfigError::new(
                    key("max_balance"),
                    "must be zero or positive",
                ));
            }
            if a.link.is_http() {
                let link = a.link.label();
                if a.btp_url.is_some() {
                    return Err(ConfigError::new(
                        key("btp_url"),
                        format!("link = \"{link}\" is an HTTP link: use http_url"),
                    ));
                }
                if let Some(u) = &a.http_url {
                    HttpUrl::parse(u).map_err(|e| ConfigError::new(key("http_url"), e))?;
                    if a.outgoing_token.is_none() {
                        return Err(ConfigError::new(
                            key("outgoing_token"),
                            "required with http_url",
                        ));
                    }
                }
                match &a.incoming_token {
                    None if a.http_url.is_none() => {
                        return Err(ConfigError::new(key("incoming_token"), "an HTTP account needs incoming_token (the peer POSTs to us) or http_url (we POST to it)"));
                    }
                    // Async replies are POSTed to us, authenticated by it.
                    None if a.link.is_async() => {
                        return Err(ConfigError::new(
                            key("incoming_token"),
                            format!(
                                "required with link = \"{link}\": the peer POSTs its replies to us"
                            ),
                        ));
                    }
                    Some(t) if t.is_empty() => {
                        return Err(ConfigError::new(key("incoming_token"), "must not be empty"));
                    }
                    Some(_) if node.http_listen.is_none() => {
                        return Err(ConfigError::new("node.http_listen", format!("required: account {:?} (link = \"{link}\") has an incoming_token, so its peer POSTs to us", a.id)));
                    }
                    _ => {}
                }
                if a.link == LinkKind::HttpOerAsync && a.http_url.is_none() {
                    return Err(ConfigError::new(key("http_url"), "required with link = \"http-oer-async\": our replies are POSTed to the peer"));
                }
                if a.http_connections == 0 {
                    return Err(ConfigError::new(
                        key("http_connections"),
                        "must be at least 1",
                    ));
                }
                if a.http_pipeline == 0 {
                    return Err(ConfigError::new(key("http_pipeline"), "must be at least 1"));
                }
                if a.http_timeout_ms == 0 {
                    return Err(ConfigError::new(
                        key("http_timeout_ms"),
                        "must be at least 1",
                    ));
                }
            } else if a.http_url.is_some() {
                return Err(ConfigError::new(key("http_url"), format!("needs an HTTP link (link = \"http\", \"http-async\", \"http-oer-sync\" or \"http-oer-async\"), not \"{}\"", a.link.label())));
            }
            match (&a.btp_url, &a.incoming_token) {
                (None, None) if a.http_url.is_some() || a.relation == Relation::Receiver => {}
                (None, None) => {
                    return Err(ConfigError::new(
                        key("incoming_token"),
                        "an account needs incoming_token (the peer connects to us) or btp_url (we connect to it)",
                    ))
                }
                (Some(url), _) => {
                    if !url.starts_with("ws://") {
                        return Err(ConfigError::new(key("btp_url"), format!("{url:?} must start with ws:// (put a TLS terminator in front for wss)")));
                    }
                    if a.outgoing_token.is_none() {
                        return Err(ConfigError::new(key("outgoing_token"), "required with btp_url"));
                    }
                }
                (None, Some(t)) if t.is_empty() => {
                    return Err(ConfigError::new(key("incoming_token"), "must not be empty"));
                }
                _ => {}
            }
            if let Some(addr) = &a.ilp_address {
                Address::new(addr).map_err(|e| {
                    ConfigError::new(
                        key("ilp_address"),
                        format!("{addr:?} is not a valid ILP address: {e}"),
                    )
                })?;
            } else if matches!(a.relation, Relation::Child | Relation::Receiver) {
                node_addr.with_suffix(&a.id).map_err(|e| {
                    ConfigError::new(
                        key("id"),
                        format!("{}.{} is not a valid ILP address: {e}", node.address, a.id),
                    )
                })?;
            }
            if let Some(0) = a.max_packets_per_sec {
                return Err(ConfigError::new(
                    key("max_packets_per_sec"),
                    "must be at least 1 (omit it for no limit)",
                ));
            }
            if let Some(0) = a.max_in_flight {
                return Err(ConfigError::new(
                    key("max_in_flight"),
                    "must be at least 1 (omit it for the node's per-account quota)",
                ));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("routes[{i}].{k}");
            // A route prefix is an address, or a bare scheme such as `g` or
            // `test` (the usual default route, docs/design.md "Route selection").
            let bare_scheme =
                !r.prefix.contains('.') && Address::new(&format!("{}.x", r.prefix)).is_ok();
            if !bare_scheme {
                Address::new(&r.prefix).map_err(|e| {
                    ConfigError::new(
                        key("prefix"),
                        format!("{:?} is not a valid ILP address prefix: {e}", r.prefix),
                    )
                })?;
            }
            if !ids.contains(r.account.as_str()) {
                return Err(ConfigError::new(
                    key("account"),
                    format!("no account with id {:?}", r.account),
                ));
            }
        }
        if let Some(s) = &self.rates.spread {
            let d = Decimal::parse(s).map_err(|e| ConfigError::new("rates.spread", e))?;
            if d.num >= d.den {
                return Err(ConfigError::new("rates.spread", "must be below 1"));
            }
        }
        for (code, price) in &self.rates.prices {
            let d = Decimal::parse(price)
                .map_err(|e| ConfigError::new(format!("rates.prices.{code}"), e))?;
            if d.num == 0 {
                return Err(ConfigError::new(
                    format!("rates.prices.{code}"),
                    "must be above 0",
                ));
            }
        }
        Ok(())
    }

    /// Worker threads to start: `node.threads`, or one per core.
    pub fn worker_count(&self) -> usize {
        if self.node.threads > 0 {
            self.node.threads
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
        [node]
        address = "test.ilpd"
        [[accounts]]
        id = "alice"
        relation = "child"
        asset_code = "USD"
        asset_scale = 9
        incoming_token = "alice-token-0123456789"
    "#;

    #[test]
    fn duplicate_tokens_are_refused_unless_allowed() {
        let two = format!(
            "{MIN}\n[[accounts]]\nid = \"bob\"\nrelation = \"peer\"\nasset_code = \"USD\"\nasset_scale = 9\nincoming_token = \"alice-token-0123456789\"\n"
        );
        let e = err(&two);
        assert_eq!(e.key, "accounts[1].incoming_token");
        assert!(e.problem.contains("accounts[0]"), "{e}");
        assert!(
            !e.problem.contains("alice-token"),
            "never shows the token: {e}"
        );
        let allowed = two.replace(
            "address = \"test.ilpd\"",
            "address = \"test.ilpd\"\nallow_weak_tokens = true",
        );
        Config::from_toml(&allowed).unwrap().validate().unwrap();
    }

    #[test]
    fn short_tokens_are_refused_unless_allowed() {
        let short = MIN.replace("alice-token-0123456789", "alice-token");
        let e = err(&short);
        assert_eq!(e.key, "accounts[0].incoming_token");
        assert!(e.problem.contains("11 bytes"), "{e}");
        assert!(
            !e.problem.contains("alice-token"),
            "never shows the token: {e}"
        );
        let allowed = short.replace(
            "address = \"test.ilpd\"",
            "address = \"test.ilpd\"\nallow_weak_tokens = true",
        );
        Config::from_toml(&allowed).unwrap().validate().unwrap();
    }

    #[test]
    fn unsafe_but_legal_settings_are_warned_about() {
        let c = Config::from_toml(&MIN.replace(
            "address = \"test.ilpd\"",
            "address = \"test.ilpd\"\nmetrics_addr = \"0.0.0.0:9464\"",
        ))
        .unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("no max_balance"));
        assert!(w[1].contains("not a loopback"));
        let safe = Config::from_toml(&MIN.replace(
            "incoming_token = \"alice-token-0123456789\"",
            "incoming_token = \"a-long-random-token-of-32-bytes!\"\nmax_balance = 1000",
        ))
        .unwrap();
        assert!(safe.warnings().is_empty(), "{:?}", safe.warnings());
    }

    fn err(text: &str) -> ConfigError {
        match Config::from_toml(text).and_then(|c| c.validate().map(|_| c)) {
            Ok(_) => panic!("config was accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MIN).unwrap();
        c.validate().unwrap();
        assert_eq!(c.node.min_message_window_ms, 1000);
        assert_eq!(c.node.max_hold_time_ms, 30_000);
        assert_eq!(c.node.listen, Some("127.0.0.1:7768".parse().unwrap()));
        assert_eq!(c.accounts[0].max_balance, i64::MAX);
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(err(&MIN.replace("test.ilpd", "nope.x")).key, "node.address");
        assert_eq!(
            err(&MIN.replace("asset_scale = 9", "asset_scale = 99")).key,
            "accounts[0].asset_scale"
        );
        assert_eq!(
            err(&MIN.replace("id = \"alice\"", "id = \"a.b\"")).key,
            "accounts[0].id"
        );
        assert_eq!(
            err(&MIN.replace("incoming_token = \"alice-token-0123456789\"", "")).key,
            "accounts[0].incoming_token"
        );
        let unknown = err(&MIN.replace("asset_scale = 9", "asset_scale = 9\ncolour = 1"));
        assert!(unknown.problem.contains("colour"), "{unknown}");
        let bad_route = err(&format!(
            "{MIN}\n[[routes]]\nprefix = \"test.bob\"\naccount = \"bob\""
        ));
        assert_eq!(bad_route.key, "routes[0].account");
        let route =
            |prefix: &str| format!("{MIN}\n[[routes]]\nprefix = \"{prefix}\"\naccount = \"alice\"");
        for ok in ["g", "test", "test.bob"] {
            let c = Config::from_toml(&route(ok)).unwrap();
            assert!(c.validate().is_ok(), "{ok} should be a valid route prefix");
        }
        for bad in ["nope", "g.", "", "test..x"] {
            assert_eq!(err(&route(bad)).key, "routes[0].prefix", "{bad}");
        }
        assert_eq!(
            err(&MIN.replace("[node]", "[node]\nthreads = 5000")).key,
            "node.threads"
        );
        let bad_spread = err(&format!("{MIN}\n[rates]\nspread = \"1.5\""));
        assert_eq!(bad_spread.key, "rates.spread");
    }

    /// Every commented example in engine/examples/ loads and validates.
    #[test]
    fn example_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let c = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                c.validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                checked += 1;
            }
        }
        assert!(
            checked >= 2,
            "expected the example configs in {}",
            dir.display()
        );
    }

    #[test]
    fn http_links_are_checked() {
        let http = |extra: &str| {
            format!(
                "[node]\naddress = \"test.ilpd\"\nallow_weak_tokens = true\nhttp_listen = \"127.0.0.1:7770\"\n[[accounts]]\nid = \"p\"\nrelation = \"peer\"\nasset_code = \"USD\"\nasset_scale = 9\n{extra}"
            )
        };
        let ok = |t: &str| {
            let c = Config::from_toml(t).unwrap();
            c.validate().unwrap_or_else(|e| panic!("{e}\n{t}"));
            c
        };
        let c = ok(&http("link = \"http\"\nincoming_token = \"in\""));
        assert_eq!(c.accounts[0].link, LinkKind::Http);
        assert_eq!(
            (c.accounts[0].http_connections, c.accounts[0].http_pipeline),
            (2, 64)
        );
        assert_eq!(c.node.http_listen, Some("127.0.0.1:7770".parse().unwrap()));
        ok(&http(
            "link = \"http\"\nhttp_url = \"http://127.0.0.1:1/ilp\"\noutgoing_token = \"o\"",
        ));
        ok(&http("link = \"http-oer-async\"\nhttp_url = \"http://127.0.0.1:1/\"\noutgoing_token = \"o\"\nincoming_token = \"i\""));
        ok(&http("link = \"btp-i\"\nincoming_token = \"i\""));
        assert_eq!(ok(MIN).accounts[0].link, LinkKind::Btp);
        let cases = [
            ("link = \"http\"", "accounts[0].incoming_token"),
            (
                "link = \"http\"\nhttp_url = \"https://x/\"\noutgoing_token = \"o\"",
                "accounts[0].http_url",
            ),
            (
                "link = \"http\"\nhttp_url = \"http://x/\"",
                "accounts[0].outgoing_token",
            ),
            (
                "link = \"http\"\nbtp_url = \"ws://x/\"\noutgoing_token = \"o\"",
                "accounts[0].btp_url",
            ),
            (
                "http_url = \"http://x/\"\noutgoing_token = \"o\"",
                "accounts[0].http_url",
            ),
            (
                "link = \"http-async\"\nhttp_url = \"http://x/\"\noutgoing_token = \"o\"",
                "accounts[0].incoming_token",
            ),
            (
                "link = \"http-oer-async\"\nincoming_token = \"i\"",
                "accounts[0].http_url",
            ),
            (
                "link = \"http\"\nincoming_token = \"i\"\nhttp_connections = 0",
                "accounts[0].http_connections",
            ),
            (
                "link = \"http\"\nincoming_token = \"i\"\nhttp_pipeline = 0",
                "accounts[0].http_pipeline",
            ),
            ("link = \"udp\"\nincoming_token = \"i\"", ""),
        ];
        for (extra, want) in cases {
            assert_eq!(err(&http(extra)).key, want, "{extra}");
        }
        let no_listen = http("link = \"http\"\nincoming_token = \"i\"")
            .replace("http_listen = \"127.0.0.1:7770\"\n", "");
        assert_eq!(err(&no_listen).key, "node.http_listen");
        let short_ttl = http("link = \"http\"\nincoming_token = \"i\"")
            .replace("[[accounts]]", "idempotency_ttl_ms = 5\n[[accounts]]");
        assert_eq!(err(&short_ttl).key, "node.idempotency_ttl_ms");
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(Decimal::parse("1.08"), Ok(Decimal { num: 108, den: 100 }));
        assert_eq!(Decimal::parse("0.002"), Ok(Decimal { num: 2, den: 1000 }));
        assert_eq!(Decimal::parse("7"), Ok(Decimal { num: 7, den: 1 }));
        for bad in ["", ".5", "1.", "-1", "1e3", "1.2.3", "0x10"] {
            assert!(Decimal::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn receiver_accounts_have_no_peer() {
        let recv = |extra: &str| {
            format!(
                "{MIN}\n[[accounts]]\nid = \"shop\"\nrelation = \"receiver\"\nasset_code = \"USD\"\nasset_scale = 9\n{extra}"
            )
        };
        Config::from_toml(&recv("stream_receive_max = 5\nspsp_default = true"))
            .unwrap()
            .validate()
            .unwrap();
        for (extra, key) in [
            (
                "incoming_token = \"shop-token-0123456789\"",
                "accounts[1].incoming_token",
            ),
            (
                "btp_url = \"ws://h:1/\"\noutgoing_token = \"t\"",
                "accounts[1].outgoing_token",
            ),
            ("link = \"http\"", "accounts[1].link"),
            ("stream_receive_max = 0", "accounts[1].stream_receive_max"),
        ] {
            assert_eq!(err(&recv(extra)).key, key, "{extra}");
        }
        let two = format!(
            "{}\n[[accounts]]\nid = \"shop2\"\nrelation = \"receiver\"\nasset_code = \"USD\"\nasset_scale = 9\nspsp_default = true\n",
            recv("spsp_default = true")
        );
        assert_eq!(err(&two).key, "accounts[2].spsp_default");
        let on_child = MIN.replace("asset_scale = 9", "asset_scale = 9\nstream_receive_max = 1");
        assert_eq!(err(&on_child).key, "accounts[0].stream_receive_max");
    }
}

//! Runtime flags. Every `[node]` knob of the config file is also a flag, and
//! a flag given on the command line wins over the file; the merged result is
//! validated once (see `config.rs`), so an error names the config key.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{Config, ConfigError};

/// ilpd: a thread-per-core Interledger (ILPv4) connector speaking BTP/2.0
/// over WebSocket.
///
/// Settings come from the TOML file given with --config (see
/// docs/configuration.md); each flag below overrides the `[node]` key of the
/// same name. Defaults shown are those used when neither file nor flag sets
/// the key.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "ilpd", version, about, long_about)]
pub struct Args {
    /// Path of the TOML configuration file. Without it, only flags are used
    /// (then --address is required and there are no accounts).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// node.address: the connector's own ILP address (RFC 15), e.g. g.acme.
    #[arg(long, value_name = "ILP_ADDRESS")]
    pub address: Option<String>,

    /// node.threads: worker threads; 0 = one per core [default: 0].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// node.pin_cores: pin each worker to its own core [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub pin_cores: Option<bool>,

    /// node.listen: BTP/2.0 WebSocket listen address, bound by every worker
    /// with SO_REUSEPORT; "none" disables it [default: 127.0.0.1:7768].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// node.metrics_addr: serve Prometheus text at http://ADDR/metrics;
    /// "none" disables it [default: off].
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,

    /// node.max_in_flight: forwarded, unanswered Prepares per worker; past it
    /// new Prepares get T03 [default: 65536].
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<usize>,

    /// node.max_in_flight_per_account: most of those one account's
    /// Prepares may hold per worker; past it that account gets T03
    /// [default: 0 = half of max_in_flight].
    #[arg(long, value_name = "N")]
    pub max_in_flight_per_account: Option<usize>,

    /// node.http_idle_timeout_ms: an ILP-over-HTTP server connection with
    /// nothing outstanding and silent this long is closed [default: 10000].
    #[arg(long, value_name = "MS")]
    pub http_idle_timeout: Option<u64>,

    /// node.auth_failures_per_ip_per_min: failed auths per source IP per
    /// minute after a burst of 10; past it new connections from there are
    /// closed at accept; 0 = off [default: 60].
    #[arg(long, value_name = "N")]
    pub auth_failures_per_ip_per_min: Option<u32>,

    /// node.max_connections: accepted connections open at once (BTP and
    /// HTTP, all workers); past it new ones are closed [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// node.max_connections_per_ip: accepted connections open at once from
    /// one source IP [default: 512].
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<u32>,

    /// node.max_unauthenticated: accepted connections not yet authenticated
    /// [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_unauthenticated: Option<usize>,

    /// node.max_unauthenticated_per_ip: accepted connections not yet
    /// authenticated from one source IP [default: 64].
    #[arg(long, value_name = "N")]
    pub max_unauthenticated_per_ip: Option<u32>,

    /// node.allow_weak_tokens: accept two accounts with the same
    /// incoming_token, and tokens under 16 bytes without a warning (tests
    /// and demos only) [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_weak_tokens: Option<bool>,

    /// node.batch: most messages read from one connection per loop turn
    /// (fairness between peers) [default: 256].
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,

    /// node.min_message_window_ms: how much a forwarded Prepare's expiry is
    /// cut, in ms (RFC 27: "e.g. 1 s per hop") [default: 1000].
    #[arg(long, value_name = "MS")]
    pub min_message_window: Option<u64>,

    /// node.max_hold_time_ms: longest we hold a forwarded Prepare, in ms,
    /// whatever its expiry says [default: 30000].
    #[arg(long, value_name = "MS")]
    pub max_hold_time: Option<u64>,

    /// node.log_level: tracing filter for stderr logs, e.g. info, debug,
    /// ilpd_engine=trace [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// node.socket_send_buffer: SO_SNDBUF for every socket, in bytes
    /// [default: OS default].
    #[arg(long, value_name = "BYTES")]
    pub socket_send_buffer: Option<usize>,

    /// node.socket_recv_buffer: SO_RCVBUF for every socket, in bytes
    /// [default: OS default].
    #[arg(long, value_name = "BYTES")]
    pub socket_recv_buffer: Option<usize>,

    /// node.max_message_size: largest WebSocket message accepted; a larger
    /// one closes the connection [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,

    /// node.handshake_timeout_ms: a connection that has not finished the
    /// WebSocket and BTP auth handshakes in this many ms is closed
    /// [default: 5000].
    #[arg(long, value_name = "MS")]
    pub handshake_timeout: Option<u64>,

    /// node.write_buffer_limit: bytes queued for one connection before the
    /// worker stops reading (resumes below half; closes the connection as a
    /// slow reader past twice this, or after 5 s over it) [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub write_buffer_limit: Option<usize>,

    /// node.sha256_impl: SHA-256 used for fulfillment checks: auto,
    /// portable, sha-ni, avx2, avx512. The environment variable
    /// ILPD_SHA256_IMPL is used when neither flag nor file sets it
    /// [default: auto].
    #[arg(long, value_name = "IMPL")]
    pub sha256_impl: Option<String>,

    /// node.shutdown_grace_ms: on SIGINT/SIGTERM, how long to wait for
    /// in-flight packets before exiting, in ms [default: 30000].
    #[arg(long, value_name = "MS")]
    pub shutdown_grace: Option<u64>,

    /// node.reconnect_initial_ms: first reconnect delay of a client-side BTP
    /// account, in ms; doubles up to 30 s [default: 100].
    #[arg(long, value_name = "MS")]
    pub reconnect_initial: Option<u64>,

    /// node.http_listen: ILP-over-HTTP listen address, bound by every worker
    /// with SO_REUSEPORT; "none" disables it [default: none].
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<String>,

    /// node.http_callback_url: the Callback-Url sent on http-async links
    /// [default: http://<http_listen>/ilp].
    #[arg(long, value_name = "URL")]
    pub http_callback_url: Option<String>,

    /// node.http_max_body: largest HTTP request or response body, in bytes
    /// [default: 40000].
    #[arg(long, value_name = "BYTES")]
    pub http_max_body: Option<usize>,

    /// node.idempotency_capacity: answered requests remembered for the
    /// idempotent links (btp-i, http-oer-*), node-wide [default: 100000].
    #[arg(long, value_name = "N")]
    pub idempotency_capacity: Option<usize>,

    /// node.idempotency_ttl_ms: how long they are remembered, in ms
    /// [default: 120000].
    #[arg(long, value_name = "MS")]
    pub idempotency_ttl: Option<u64>,

    /// node.route_broadcast_interval_ms: CCP route update heartbeat
    /// interval, in ms; also the retry delay of a failed route control or
    /// update (docs/ccp.md) [default: 30000].
    #[arg(long, value_name = "MS")]
    pub route_broadcast_interval: Option<u64>,

    /// node.route_hold_down_ms: the CCP holdDownTime we announce, in ms:
    /// how long peers keep our routes without hearing from us
    /// [default: 45000].
    #[arg(long, value_name = "MS")]
    pub route_hold_down: Option<u64>,

    /// node.max_routes_per_update: most new routes (and withdrawals) in one
    /// received CCP route update; more is rejected with F00 [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_routes_per_update: Option<usize>,

    /// node.data_dir: the durable ledger's directory (snapshot, journal,
    /// recovery reports); created on first start [default: ./ilpd-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// node.durability: fsync (group commit with fdatasync; survives a
    /// power cut), os (written to the kernel; survives a crash of ilpd) or
    /// none (no journal: balances are lost on restart; benchmarks only)
    /// [default: fsync].
    #[arg(long, value_name = "MODE")]
    pub durability: Option<String>,

    /// node.journal_segment_mb: start a new journal segment, with a
    /// checkpoint, past this many MiB; bounds recovery time [default: 64].
    #[arg(long, value_name = "MIB")]
    pub journal_segment_mb: Option<u64>,
}

/// Parses an address flag where "none" (or "off") switches the listener off.
fn optional_addr(key: &str, v: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if v.eq_ignore_ascii_case("none") || v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        ConfigError::new(
            key,
            format!("{v:?} is not an address like 127.0.0.1:7768 (or \"none\")"),
        )
    })
}

impl Args {
    /// The configuration these flags describe: the file (or an empty one),
    /// with every given flag written over it, then validated.
    /// `sha256_env` is the value of ILPD_SHA256_IMPL, if set.
    pub fn load_config(&self, sha256_env: Option<&str>) -> Result<Config, ConfigError> {
        let (mut cfg, file_sets_sha) = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new("", format!("cannot read {}: {e}", path.display()))
                })?;
                let cfg = Config::from_toml(&text)?;
                // The env var only fills in what the file leaves unset.
                let sets = toml_sets_node_key(&text, "sha256_impl");
                (cfg, sets)
            }
            None => (Config::from_toml("[node]\naddress = \"\"\n")?, false),
        };
        if let (Some(v), false) = (sha256_env, file_sets_sha) {
            let norm = ilpd_codec::sha256::parse_choice(v)
                .map_err(|e| ConfigError::new("ILPD_SHA256_IMPL", e))?
                .map(|i| i.name().to_string())
                .unwrap_or_else(|| "auto".into());
            cfg.node.sha256_impl = norm;
        }
        self.apply(&mut cfg)?;
        if cfg.node.address.is_empty() {
            return Err(ConfigError::new(
                "node.address",
                "missing: give --config FILE or --address",
            ));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Writes every given flag over `cfg.node`.
    pub fn apply(&self, cfg: &mut Config) -> Result<(), ConfigError> {
        let n = &mut cfg.node;
        if let Some(v) = &self.address {
            n.address = v.clone();
        }
        if let Some(v) = self.threads {
            n.threads = v;
        }
        if let Some(v) = self.pin_cores {
            n.pin_cores = v;
        }
        if let Some(v) = &self.listen {
            n.listen = optional_addr("node.listen", v)?;
        }
        if let Some(v) = &self.metrics_addr {
            n.metrics_addr = optional_addr("node.metrics_addr", v)?;
        }
        if let Some(v) = self.max_in_flight {
            n.max_in_flight = v;
        }
        if let Some(v) = self.max_in_flight_per_account {
            n.max_in_flight_per_account = v;
        }
        if let Some(v) = self.http_idle_timeout {
            n.http_idle_timeout_ms = v;
        }
        if let Some(v) = self.auth_failures_per_ip_per_min {
            n.auth_failures_per_ip_per_min = v;
        }
        if let Some(v) = self.max_connections {
            n.max_connections = v;
        }
        if let Some(v) = self.max_connections_per_ip {
            n.max_connections_per_ip = v;
        }
        if let Some(v) = self.max_unauthenticated {
            n.max_unauthenticated = v;
        }
        if let Some(v) = self.max_unauthenticated_per_ip {
            n.max_unauthenticated_per_ip = v;
        }
        if let Some(v) = self.allow_weak_tokens {
            n.allow_weak_tokens = v;
        }
        if let Some(v) = self.batch {
            n.batch = v;
        }
        if let Some(v) = self.min_message_window {
            n.min_message_window_ms = v;
        }
        if let Some(v) = self.max_hold_time {
            n.max_hold_time_ms = v;
        }
        if let Some(v) = &self.log_level {
            n.log_level = v.clone();
        }
        if let Some(v) = self.socket_send_buffer {
            n.socket_send_buffer = Some(v);
        }
        if let Some(v) = self.socket_recv_buffer {
            n.socket_recv_buffer = Some(v);
        }
        if let Some(v) = self.max_message_size {
            n.max_message_size = v;
        }
        if let Some(v) = self.handshake_timeout {
            n.handshake_timeout_ms = v;
        }
        if let Some(v) = self.write_buffer_limit {
            n.write_buffer_limit = v;
        }
        if let Some(v) = &self.sha256_impl {
            n.sha256_impl = v.clone();
        }
        if let Some(v) = self.shutdown_grace {
            n.shutdown_grace_ms = v;
        }
        if let Some(v) = self.reconnect_initial {
            n.reconnect_initial_ms = v;
        }
        if let Some(v) = &self.http_listen {
            n.http_listen = optional_addr("node.http_listen", v)?;
        }
        if let Some(v) = &self.http_callback_url {
            n.http_callback_url = Some(v.clone());
        }
        if let Some(v) = self.http_max_body {
            n.http_max_body = v;
        }
        if let Some(v) = self.idempotency_capacity {
            n.idempotency_capacity = v;
        }
        if let Some(v) = self.idempotency_ttl {
            n.idempotency_ttl_ms = v;
        }
        if let Some(v) = self.route_broadcast_interval {
            n.route_broadcast_interval_ms = v;
        }
        if let Some(v) = self.route_hold_down {
            n.route_hold_down_ms = v;
        }
        if let Some(v) = self.max_routes_per_update {
            n.max_routes_per_update = v;
        }
        if let Some(v) = &self.data_dir {
            n.data_dir = v.clone();
        }
        if let Some(v) = &self.durability {
            n.durability = v
                .parse()
                .map_err(|e: String| ConfigError::new("node.durability", e))?;
        }
        if let Some(v) = self.journal_segment_mb {
            n.journal_segment_mb = v;
        }
        Ok(())
    }
}

/// Whether the TOML text sets `[node] key` (so the file wins over the
/// environment). Parsed again as a generic table: cold path, start-up only.
fn toml_sets_node_key(text: &str, key: &str) -> bool {
    text.parse::<toml::Table>()
        .ok()
        .and_then(|t| {
            t.get("node")
                .and_then(|n| n.as_table())
                .map(|n| n.contains_key(key))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let mut v = vec!["ilpd"];
        v.extend_from_slice(args);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn flags_override_defaults_and_are_validated() {
        let a = parse(&[
            "--address",
            "test.x",
            "--threads",
            "3",
            "--listen",
            "none",
            "--max-message-size",
            "2048",
        ]);
        let c = a.load_config(None).unwrap();
        assert_eq!(c.node.address, "test.x");
        assert_eq!(c.node.threads, 3);
        assert_eq!(c.node.listen, None);
        assert_eq!(c.node.max_message_size, 2048);
        // Untouched knobs keep their defaults.
        assert_eq!(c.node.batch, 256);
        assert!(c.node.pin_cores);
        let c = parse(&["--address", "test.x", "--pin-cores", "false"])
            .load_config(None)
            .unwrap();
        assert!(!c.node.pin_cores);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse(&["--address", "nope.x"])
            .load_config(None)
            .unwrap_err();
        assert_eq!(e.key, "node.address");
        let e = parse(&["--address", "test.x", "--batch", "0"])
            .load_config(None)
            .unwrap_err();
        assert_eq!(e.key, "node.batch");
        let e = parse(&["--address", "test.x", "--listen", "nowhere"])
            .load_config(None)
            .unwrap_err();
        assert_eq!(e.key, "node.listen");
        let e = parse(&[]).load_config(None).unwrap_err();
        assert_eq!(e.key, "node.address");
        let e = parse(&["--address", "test.x"])
            .load_config(Some("md5"))
            .unwrap_err();
        assert_eq!(e.key, "ILPD_SHA256_IMPL");
        assert!(Args::try_parse_from(["ilpd", "--threads", "many"]).is_err());
        assert!(Args::try_parse_from(["ilpd", "--no-such-flag"]).is_err());
    }

    #[test]
    fn sha256_env_fills_only_what_is_unset() {
        let c = parse(&["--address", "test.x"])
            .load_config(Some("portable"))
            .unwrap();
        assert_eq!(c.node.sha256_impl, "portable");
        let c = parse(&["--address", "test.x", "--sha256-impl", "auto"])
            .load_config(Some("portable"))
            .unwrap();
        assert_eq!(c.node.sha256_impl, "auto");
        assert!(toml_sets_node_key(
            "[node]\naddress = \"a\"\nsha256_impl = \"auto\"\n",
            "sha256_impl"
        ));
        assert!(!toml_sets_node_key(
            "[node]\naddress = \"a\"\n",
            "sha256_impl"
        ));
    }
}

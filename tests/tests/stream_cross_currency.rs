//! Cross-currency STREAM with real processes (issue 15, "Cross-currency: a
//! payment through a rate hop delivers at least the quoted minimum"). ilpd
//! converts every Prepare into its receiver account's asset at the
//! configured `[rates]` (exact integers, rounded down per packet,
//! docs/design.md "Rates"); the STREAM senders probe that rate and put a
//! minimum destination amount in each packet.
//!
//! Checked for each payment: the sender paid exactly the amount asked;
//! the receiver's credit in ilpd's ledger is exactly what the sender says
//! was delivered; it is at most the amount at the configured rate and short
//! of it by less than one destination unit per fulfilled packet (the
//! per-packet floor); it is at least the sender's quoted minimum; and the
//! balances conserve (the sender's debit in its asset, the receiver's
//! credit in its own).
//!
//! Rates: USD = 1, EUR = 1.25, spread 0.2 %. So
//! - USD scale 9 → EUR scale 6: × 1/1.25 × 0.998 × 10^-3 = × 499 / 625,000;
//! - USD scale 9 → EUR scale 8: × 1/1.25 × 0.998 × 10^-1 = × 499 / 6,250;
//! - EUR scale 6 → USD scale 9: × 1.25 × 0.998 × 10^3 = × 2,495 / 2.
//!
//! USD 9 → EUR 6 also checks the sender's probe: 1,000 source units convert
//! to 0 there (R01 at ilpd), so the probe must grow until something arrives.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use ilpd_tests::btp_client::{balance, scrape};
use ilpd_tests::js::{self, btp_url};
use ilpd_tests::{
    bin_path, free_ports, ilpd, json_u64, require_node, run_with_timeout, temp_dir, Proc,
};
use serde_json::Value;

const USD_TOKEN: &str = "usd-sender-token-0123456789";
const EUR_TOKEN: &str = "eur-sender-token-0123456789";

/// USD e-9 → EUR e-6, as num / den.
const USD9_EUR6: (u128, u128) = (499, 625_000);
/// USD e-9 → EUR e-8, as num / den.
const USD9_EUR8: (u128, u128) = (499, 6_250);
/// EUR e-6 → USD e-9, as num / den.
const EUR6_USD9: (u128, u128) = (2_495, 2);

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// ilpd with two sending children, `usd` (USD 9) and `eur` (EUR 6), and
/// three receiver accounts, `eurshop` (EUR 6), `eur8shop` (EUR 8) and
/// `usdshop` (USD 9).
struct Node {
    _proc: Proc,
    btp: u16,
    http: u16,
    metrics: u16,
}

impl Node {
    fn start(label: &str) -> Node {
        let p = free_ports(3);
        let (btp, http, metrics) = (p[0], p[1], p[2]);
        let config = format!(
            r#"
[node]
address = "test.ilpd"
threads = 2
pin_cores = false
listen = "127.0.0.1:{btp}"
http_listen = "127.0.0.1:{http}"
metrics_addr = "127.0.0.1:{metrics}"
shutdown_grace_ms = 500
log_level = "warn"

[[accounts]]
id = "usd"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "{USD_TOKEN}"

[[accounts]]
id = "eur"
relation = "child"
asset_code = "EUR"
asset_scale = 6
incoming_token = "{EUR_TOKEN}"

[[accounts]]
id = "eurshop"
relation = "receiver"
asset_code = "EUR"
asset_scale = 6

[[accounts]]
id = "eur8shop"
relation = "receiver"
asset_code = "EUR"
asset_scale = 8

[[accounts]]
id = "usdshop"
relation = "receiver"
asset_code = "USD"
asset_scale = 9

[rates]
spread = "0.002"
[rates.prices]
USD = "1"
EUR = "1.25"
"#
        );
        let proc = ilpd::start(&config, addr(btp), label);
        assert!(
            ilpd_tests::wait_for_port(addr(http), Duration::from_secs(10)),
            "ilpd's HTTP listener"
        );
        Node {
            _proc: proc,
            btp,
            http,
            metrics,
        }
    }

    fn balance(&self, account: &str) -> i64 {
        balance(addr(self.metrics), account)
    }

    fn received_total(&self, account: &str) -> u64 {
        scrape(
            addr(self.metrics),
            "ilpd_stream_received_total",
            &format!("account=\"{account}\""),
        )
        .unwrap_or(0.0) as u64
    }

    fn spsp(&self, receiver: &str) -> String {
        format!("http://127.0.0.1:{}/{receiver}", self.http)
    }
}

/// What arrives for `sent` source units at `rate` in `packets` fulfilled
/// packets lies in (sent × rate − packets, sent × rate]: each packet is
/// rounded down by less than one unit.
fn assert_within_rounding(delivered: u64, sent: u64, packets: u64, rate: (u128, u128)) {
    let (num, den) = rate;
    let exact = sent as u128 * num; // sent × rate, times den
    let got = delivered as u128 * den;
    assert!(
        got <= exact,
        "delivered {delivered} is more than {sent} × {num}/{den}"
    );
    assert!(
        got + packets as u128 * den > exact,
        "delivered {delivered} is short of {sent} × {num}/{den} by a unit or more per packet ({packets} packets)"
    );
}

fn loadgen_stream(args: &[&str], label: &str) -> (std::process::ExitStatus, Proc, Value) {
    let file = temp_dir("lg-stream-xc").join("report.json");
    let mut cmd = Command::new(bin_path("ilp-loadgen"));
    cmd.arg("stream")
        .args(args)
        .arg("-q")
        .arg("--json")
        .arg(&file);
    let (s, p) = run_with_timeout(cmd, label, Duration::from_secs(120));
    let v = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (s, p, v)
}

/// ilp-loadgen stream from `from` (token) to receiver `to`; checks the
/// report against ilpd's balances and the rate; returns (sent, delivered).
fn loadgen_pays(
    n: &Node,
    (from, token): (&str, &str),
    to: &str,
    amount: u64,
    payments: u64,
    max_packet: u64,
    rate: (u128, u128),
) -> (u64, u64) {
    let send = format!("btp+ws://{from}:{token}@127.0.0.1:{}/", n.btp);
    let spsp = n.spsp(to);
    let (s, p, v) = loadgen_stream(
        &[
            "--send",
            &send,
            "--spsp",
            &spsp,
            "--amount",
            &amount.to_string(),
            "--payments",
            &payments.to_string(),
            "--concurrency",
            "2",
            "--max-packet-amount",
            &max_packet.to_string(),
        ],
        &format!("lg-stream-{from}-{to}"),
    );
    if !s.success() {
        p.dump();
    }
    assert!(s.success(), "{s}: {}", v["payments"]);
    let pay = &v["payments"];
    assert_eq!(json_u64(&pay["completed"]), payments, "{pay}");
    let sent = json_u64(&v["amounts"]["sent"]);
    let delivered = json_u64(&v["amounts"]["delivered"]);
    assert_eq!(sent, amount * payments, "{}", v["amounts"]);
    let pk = &v["packets"];
    // The only F99s are the rate probes (one per payment): no money packet
    // arrived under its minimum.
    assert_eq!(json_u64(&pk["rejected_by_code"]["F99"]), payments, "{pk}");
    // Fulfilled packets: money packets and closes (amount 0, no rounding).
    assert_within_rounding(delivered, sent, json_u64(&pk["fulfilled"]), rate);

    // The quoted minimum: the probed rate less the 1 % slippage
    // (--slippage-bp 100), applied to every packet.
    let probed = &v["receiver"]["probed_rate"];
    let (pn, pd) = (
        json_u64(&probed["destination"]) as u128,
        json_u64(&probed["source"]) as u128,
    );
    assert!(pn > 0 && pd > 0, "{probed}");
    let quoted_min = sent as u128 * pn * 9_900 / (pd * 10_000);
    // Each packet's minimum is rounded down on its own: allow one unit per
    // packet below the minimum of the whole.
    assert!(
        delivered as u128 + json_u64(&pk["fulfilled"]) as u128 >= quoted_min,
        "delivered {delivered} under the quoted minimum {quoted_min} (probed {pn}/{pd})"
    );
    eprintln!(
        "{from} -> {to}: sent {sent}, delivered {delivered}, probed {pn}/{pd}, {} packets fulfilled",
        json_u64(&pk["fulfilled"])
    );
    (sent, delivered)
}

#[test]
fn loadgen_stream_eur6_to_usd9_receiver_at_the_rate() {
    let n = Node::start("ilpd-xc-eur-usd");
    // 5 payments of 1,000,003 EUR e-6 in packets of at most 300,007: every
    // packet converts × 1,247.5 and loses its half unit, if any.
    let (sent, delivered) = loadgen_pays(
        &n,
        ("eur", EUR_TOKEN),
        "usdshop",
        1_000_003,
        5,
        300_007,
        EUR6_USD9,
    );
    // Balances conserve: the sender owes its source units (EUR e-6), the
    // receiver is owed what arrived (USD e-9), and that is what the sender
    // says was delivered.
    assert_eq!(n.balance("eur"), sent as i64);
    assert_eq!(n.balance("usdshop"), -(delivered as i64));
    assert_eq!(n.received_total("usdshop"), delivered);
    assert_eq!(n.balance("usd") + n.balance("eurshop"), 0);
}

#[test]
fn loadgen_stream_usd9_to_eur8_receiver_at_the_rate() {
    let n = Node::start("ilpd-xc-usd-eur8");
    // 4 payments of 10,000,003 USD e-9 in packets of at most 3,000,017:
    // × 0.07984 per packet, each rounded down.
    let (sent, delivered) = loadgen_pays(
        &n,
        ("usd", USD_TOKEN),
        "eur8shop",
        10_000_003,
        4,
        3_000_017,
        USD9_EUR8,
    );
    assert_eq!(n.balance("usd"), sent as i64);
    assert_eq!(n.balance("eur8shop"), -(delivered as i64));
    assert_eq!(n.received_total("eur8shop"), delivered);
    assert_eq!(n.balance("eur") + n.balance("usdshop"), 0);
}

/// USD 9 → EUR 6 (a factor of 0.0007984): the sender's first 1,000-unit
/// rate probe converts to 0 and ilpd answers R01; the probe is sent again
/// ten times larger until something arrives (stream/src/sender.rs).
#[test]
fn loadgen_stream_usd9_to_eur6_receiver_at_the_rate() {
    let n = Node::start("ilpd-xc-usd-eur6");
    let (sent, delivered) = loadgen_pays(
        &n,
        ("usd", USD_TOKEN),
        "eurshop",
        10_000_003,
        1,
        3_000_017,
        USD9_EUR6,
    );
    assert_eq!(n.balance("usd"), sent as i64);
    assert_eq!(n.balance("eurshop"), -(delivered as i64));
}

#[test]
fn js_stream_sender_usd9_to_ilpds_eur6_receiver_at_the_rate() {
    require_node();
    let n = Node::start("ilpd-xc-js");
    let usd = btp_url("usd", USD_TOKEN, n.btp);
    let spsp = n.spsp("eurshop");
    let amount: u64 = 30_000_011;
    let r = js::run_ok(
        "spsp-pay.js",
        &[
            "--btp",
            &usd,
            "--spsp",
            &spsp,
            "--amount",
            &amount.to_string(),
        ],
        Duration::from_secs(90),
    );
    assert_eq!(json_u64(&r["sent"]), amount, "{r}");
    let delivered = json_u64(&r["delivered"]);
    eprintln!("js usd -> eurshop: sent {amount}, delivered {delivered}");
    assert_eq!(n.balance("usd"), amount as i64);
    assert_eq!(n.balance("eurshop"), -(delivered as i64));
    assert_eq!(n.received_total("eurshop"), delivered);
    // ilp-protocol-stream sends the whole amount in as few packets as the
    // path allows (no maximum here): at most a few, so the floor costs at
    // most a few units.
    assert_within_rounding(delivered, amount, 4, USD9_EUR6);
    // Its quoted minimum: the probed rate less its default 1 % slippage.
    let quoted_min = amount as u128 * USD9_EUR6.0 * 99 / (USD9_EUR6.1 * 100);
    assert!(
        delivered as u128 >= quoted_min,
        "{delivered} < {quoted_min}"
    );
}

//! ilpd against the JavaScript reference stack (issue 3, "How it is
//! checked"): ilp-plugin-btp 1.5.0 clients and ilp-protocol-stream
//! 2.7.2-alpha.3 talk to the `ilpd` release binary over BTP/2.0.
//!
//! Each test starts its own ilpd (two worker threads, so a packet may cross
//! cores) with two child accounts, `alice` and `bob`, on one BTP listener on
//! a free 127.0.0.1 port; the JS side authenticates as `<id>:<id>-token`.
//! Needs `cargo build --release --bins` and `npm ci` in tests/interop first.

use std::net::SocketAddr;
use std::time::Duration;

use ilpd_tests::js::{self, StreamReceiver};
use ilpd_tests::{free_port, ilpd, require_node, Proc};
use serde_json::Value;

const ILPD_ADDRESS: &str = "test.ilpd";
const T: Duration = Duration::from_secs(40);

/// A running ilpd and the port its BTP listener is on.
struct Node {
    _proc: Proc,
    port: u16,
}

impl Node {
    /// Config in the format of engine/src/config.rs. Same asset and scale
    /// on both accounts, so the rate is exactly 1 (spread defaults to 0):
    /// what alice sends is what bob gets.
    fn start() -> Node {
        Node::start_with(
            r#"
[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "alice-token"
max_balance = 1000000000000

[[accounts]]
id = "bob"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "bob-token"
min_balance = -1000000000000
"#,
        )
    }

    /// `[node]` on a free port, followed by `rest` (accounts, rates).
    fn start_with(rest: &str) -> Node {
        let port = free_port();
        let config = format!(
            r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "{ILPD_ADDRESS}"
threads = 2
pin_cores = false
listen = "127.0.0.1:{port}"
shutdown_grace_ms = 500
log_level = "info"
{rest}"#
        );
        let listen: SocketAddr = ([127, 0, 0, 1], port).into();
        let proc = ilpd::start(&config, listen, "ilpd");
        Node { _proc: proc, port }
    }

    /// ilp-plugin-btp URL authenticating as account `id`.
    fn btp(&self, id: &str) -> String {
        js::btp_url(id, &format!("{id}-token"), self.port)
    }
}

/// Sends `amount` from alice with STREAM to a fresh receiver at `to`;
/// asserts the sender sent exactly `amount` and the receiver counted what
/// the sender says was delivered. Returns that delivered amount.
fn stream_from_alice(node: &Node, to: &str, amount: u64) -> u64 {
    let mut rx = StreamReceiver::start(&node.btp(to), "stream-receiver");
    assert!(
        rx.address.starts_with(&format!("{ILPD_ADDRESS}.{to}.")),
        "receiver address {}",
        rx.address
    );
    let amount_s = amount.to_string();
    let sent = js::run_ok(
        "stream-sender.js",
        &[
            "--btp",
            &node.btp("alice"),
            "--address",
            &rx.address,
            "--secret",
            &rx.secret,
            "--amount",
            &amount_s,
        ],
        Duration::from_secs(90),
    );
    assert_eq!(sent["sent"], amount_s.as_str(), "sender output {sent}");
    assert_eq!(sent["sourceAccount"], "test.ilpd.alice", "{sent}");
    let delivered = sent["delivered"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        rx.finish(),
        delivered,
        "receiver total vs sender's delivered"
    );
    delivered
        .parse()
        .unwrap_or_else(|_| panic!("delivered {delivered:?}"))
}

/// peer.balance as seen by account `id`, as a signed integer.
fn peer_balance(node: &Node, id: &str) -> i64 {
    let v = js::run_ok("peer-balance.js", &["--btp", &node.btp(id)], T);
    v["balance"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("peer-balance.js output {v}"))
}

fn run_ping(node: &Node, amount: &str) -> Value {
    js::run_ok(
        "ping.js",
        &[
            "--btp",
            &node.btp("alice"),
            "--destination",
            ILPD_ADDRESS,
            "--amount",
            amount,
        ],
        T,
    )
}

#[test]
fn ildcp_gives_each_child_its_address_and_asset() {
    require_node();
    let node = Node::start();
    for id in ["alice", "bob"] {
        let v = js::run_ok("ildcp.js", &["--btp", &node.btp(id)], T);
        // RFC 31: a child's address is <node address>.<account id>.
        assert_eq!(v["clientAddress"], format!("{ILPD_ADDRESS}.{id}"), "{v}");
        assert_eq!(v["assetCode"], "USD", "{v}");
        assert_eq!(v["assetScale"], 9, "{v}");
    }
}

/// (a) a STREAM payment through ilpd arrives exactly, then (c) peer.balance
/// reports it to both sides.
#[test]
fn stream_payment_through_ilpd_then_peer_balance() {
    require_node();
    let node = Node::start();
    assert_eq!(peer_balance(&node, "alice"), 0, "fresh account");

    // The receiver's address comes from ilpd over IL-DCP; same asset and
    // scale and no spread, so exactly the amount sent arrives, as counted by
    // the sender and, independently, by the receiving STREAM server.
    let amount: i64 = 2_500_000;
    assert_eq!(
        stream_from_alice(&node, "bob", amount as u64),
        amount as u64
    );

    // docs/design.md "Balance sign": ilpd keeps each peer's balance as what
    // that peer owes ilpd (positive = in ilpd's favour), and peer.balance
    // answers the authenticated peer with its balance "from its point of
    // view", i.e. ilpd's figure negated. alice's Prepares (exactly
    // `amount` fulfilled source units; rate-probe packets were rejected and
    // released) make alice owe ilpd `amount`: ilpd holds +amount, alice is
    // told -amount. ilpd's fulfilled Prepares to bob (1:1 rate, same asset)
    // make ilpd owe bob `amount`: ilpd holds -amount, bob is told +amount.
    assert_eq!(peer_balance(&node, "alice"), -amount);
    assert_eq!(peer_balance(&node, "bob"), amount);
}

/// (b) an echo ping to ilpd's own address is fulfilled by the pinger's own
/// fulfillment, via the pong ilpd sends back to it (docs/design.md "Echo").
#[test]
fn echo_ping_to_ilpd_is_fulfilled() {
    require_node();
    let node = Node::start();
    let v = run_ping(&node, "0");
    assert_eq!(v["fulfilled"], true, "{v}");
    assert_eq!(v["pongReceived"], true, "{v}");
    assert_eq!(v["sourceAddress"], "test.ilpd.alice", "{v}");
}

/// A ping carrying money: the ping charges alice and the pong pays her back,
/// so once both are fulfilled her balance is unchanged.
#[test]
fn echo_ping_with_amount_leaves_balance_unchanged() {
    require_node();
    let node = Node::start();
    let v = run_ping(&node, "1000");
    assert_eq!(v["fulfilled"], true, "{v}");
    assert_eq!(v["pong"]["amount"], "1000", "{v}");
    assert_eq!(peer_balance(&node, "alice"), 0);
}

/// A wrong token is refused at the BTP handshake (the script fails fast
/// instead of being served).
#[test]
fn wrong_btp_token_is_refused() {
    require_node();
    let node = Node::start();
    let url = js::btp_url("alice", "not-the-token", node.port);
    let (status, v, _p) = js::run(
        "ildcp.js",
        &["--btp", &url, "--timeout", "15"],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{v}");
    assert!(v.get("clientAddress").is_none(), "{v}");
}

/// Exchange rates and asset scales through ilpd, seen by a real STREAM
/// receiver. alice pays in USD at scale 9; bob is USD at scale 6, carol EUR
/// at scale 6; prices USD 1, EUR 1.25; spread 1%. docs/design.md "Rates":
/// exact rational arithmetic, rounded down. No max_packet_amount is
/// configured, so STREAM sends each payment as one money packet and the
/// expected amounts are one rounding of the whole amount:
///   bob:   floor(5_000_123 * 0.99 / 1000)            = floor(4950.12) = 4950
///   carol: floor(5_000_123 * (1 / 1.25) * 0.99 / 1000) = floor(3960.09) = 3960
/// (computed below in integers, not copied from ilpd's output).
#[test]
fn stream_across_scales_and_currencies_is_rounded_down() {
    require_node();
    let node = Node::start_with(
        r#"
[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "alice-token"

[[accounts]]
id = "bob"
relation = "child"
asset_code = "USD"
asset_scale = 6
incoming_token = "bob-token"

[[accounts]]
id = "carol"
relation = "child"
asset_code = "EUR"
asset_scale = 6
incoming_token = "carol-token"

[rates]
spread = "0.01"
[rates.prices]
USD = "1"
EUR = "1.25"
"#,
    );
    let amount: u64 = 5_000_123;
    // (1 - spread) = 99/100; scale 9 -> 6 = 1/1000; USD -> EUR = 1/1.25 = 4/5.
    let to_bob = amount * 99 / (100 * 1000);
    let to_carol = amount * 4 * 99 / (5 * 100 * 1000);
    assert_eq!(stream_from_alice(&node, "bob", amount), to_bob);
    assert_eq!(stream_from_alice(&node, "carol", amount), to_carol);

    // Balances in each account's own units, from its point of view (see
    // stream_payment_through_ilpd_then_peer_balance for the sign).
    assert_eq!(peer_balance(&node, "alice"), -2 * amount as i64);
    assert_eq!(peer_balance(&node, "bob"), to_bob as i64);
    assert_eq!(peer_balance(&node, "carol"), to_carol as i64);
}

/// Replies ilpd makes itself parse in ilp-packet 3.1.3: a Prepare to an
/// address with no route gets F02 with ilpd's address as triggeredBy.
#[test]
fn unroutable_destination_gets_f02_from_ilpd() {
    require_node();
    let node = Node::start();
    let (status, v, p) = js::run(
        "ping.js",
        &[
            "--btp",
            &node.btp("alice"),
            "--destination",
            "test.nowhere.x",
        ],
        T,
    );
    if status.code() != Some(2) {
        p.dump();
    }
    assert_eq!(status.code(), Some(2), "{v}");
    assert_eq!(v["reject"]["code"], "F02", "{v}");
    assert_eq!(v["reject"]["triggeredBy"], ILPD_ADDRESS, "{v}");
}

/// F08 interop: alice may send at most 100_000 per Prepare. STREAM's first
/// money packet is bigger, so ilpd answers F08 whose data (RFC 27 §F08:
/// received amount ‖ maximum amount, UInt64 each) ilp-protocol-stream must
/// decode to shrink its packets. The payment still arrives exactly, in at
/// least amount / 100_000 packets.
#[test]
fn stream_splits_packets_after_f08_from_ilpd() {
    require_node();
    let node = Node::start_with(
        r#"
[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "alice-token"
max_packet_amount = 100000

[[accounts]]
id = "bob"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "bob-token"
"#,
    );
    let max_packet: u64 = 100_000;
    let amount: u64 = 1_234_567;
    let mut rx = StreamReceiver::start(&node.btp("bob"), "stream-receiver");
    let sent = js::run_ok(
        "stream-sender.js",
        &[
            "--btp",
            &node.btp("alice"),
            "--address",
            &rx.address,
            "--secret",
            &rx.secret,
            "--amount",
            &amount.to_string(),
        ],
        Duration::from_secs(90),
    );
    assert_eq!(sent["sent"], amount.to_string(), "{sent}");
    assert_eq!(sent["delivered"], amount.to_string(), "{sent}");
    assert_eq!(rx.finish(), amount.to_string());
    let fin = ilpd_tests::json_lines(&rx.proc)
        .into_iter()
        .find(|v| v.get("final").is_some())
        .unwrap_or_default();
    let money_events = fin["moneyEvents"].as_u64().unwrap_or(0);
    assert!(
        money_events >= amount.div_ceil(max_packet),
        "only {money_events} money packets for {amount} with max {max_packet}: {fin}"
    );
    assert_eq!(peer_balance(&node, "alice"), -(amount as i64));
}

/// `btp+ws://:TOKEN@host` (no user name) is a common ilp-plugin-btp URL
/// (moneyd and most examples use it). ilp-plugin-btp 1.5.0 then still sends
/// the `auth_username` sub-protocol, with empty data.
/// docs/design.md "BTP auth" makes `auth_username` optional, so an empty
/// one must mean "absent" and the token alone must select the account.
#[test]
fn empty_btp_username_authenticates_by_token() {
    require_node();
    let node = Node::start();
    let url = format!("btp+ws://:bob-token@127.0.0.1:{}", node.port);
    let v = js::run_ok("ildcp.js", &["--btp", &url], T);
    assert_eq!(v["clientAddress"], format!("{ILPD_ADDRESS}.bob"), "{v}");
}

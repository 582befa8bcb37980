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
        let port = free_port();
        let config = format!(
            r#"
[node]
address = "{ILPD_ADDRESS}"
threads = 2
pin_cores = false
listen = "127.0.0.1:{port}"
shutdown_grace_ms = 500
log_level = "info"

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
"#
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

    let mut rx = StreamReceiver::start(&node.btp("bob"), "stream-receiver");
    // The STREAM server's address came from ilpd over IL-DCP.
    assert!(
        rx.address.starts_with("test.ilpd.bob."),
        "receiver address {}",
        rx.address
    );

    let amount: i64 = 2_500_000;
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
    assert_eq!(sent["delivered"], amount_s.as_str(), "sender output {sent}");
    assert_eq!(sent["sourceAccount"], "test.ilpd.alice", "{sent}");
    // What the receiving STREAM server counted, independently.
    assert_eq!(rx.finish(), amount_s);

    // Balance sign (DESIGN.md, "Protocol decisions"): ilpd keeps each peer's
    // balance as what that peer owes ilpd (positive = in ilpd's favour), and
    // peer.balance answers the authenticated peer with its balance "from its
    // point of view", i.e. ilpd's figure negated. alice's Prepares (exactly
    // `amount` fulfilled source units; rate-probe packets were rejected and
    // released) make alice owe ilpd `amount`: ilpd holds +amount, alice is
    // told -amount. ilpd's fulfilled Prepares to bob (1:1 rate, same asset)
    // make ilpd owe bob `amount`: ilpd holds -amount, bob is told +amount.
    assert_eq!(peer_balance(&node, "alice"), -amount);
    assert_eq!(peer_balance(&node, "bob"), amount);
}

/// (b) an echo ping to ilpd's own address is fulfilled by the pinger's own
/// fulfillment, via the pong ilpd sends back to it (digest §4.10.5).
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

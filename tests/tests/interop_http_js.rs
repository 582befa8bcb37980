//! ilpd with the JavaScript reference stack over ILP-over-HTTP
//! (ilp-plugin-http 1.6.1, pinned in tests/interop/package-lock.json): a
//! STREAM payment from a JavaScript sender over HTTP through ilpd to a
//! JavaScript receiver over BTP, and the reverse (BTP in, HTTP out). The
//! balances ilpd reports must match what STREAM says was delivered.

use std::net::SocketAddr;
use std::time::Duration;

use ilpd_tests::btp_client as bc;
use ilpd_tests::js::{self, btp_url, StreamReceiver};
use ilpd_tests::{free_ports, ilpd, node_script, require_node, Proc};
use serde_json::Value;

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

struct Node {
    _proc: Proc,
    metrics: SocketAddr,
}

/// ilpd with `sender` and `receiver` children; `links` holds each one's
/// account lines.
fn start(btp: u16, http: u16, metrics: u16, sender: &str, receiver: &str) -> Node {
    let config = format!(
        r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
threads = 2
pin_cores = false
listen = "127.0.0.1:{btp}"
http_listen = "127.0.0.1:{http}"
metrics_addr = "127.0.0.1:{metrics}"
shutdown_grace_ms = 500

[[accounts]]
id = "sender"
relation = "child"
asset_code = "USD"
asset_scale = 9
{sender}

[[accounts]]
id = "receiver"
relation = "child"
asset_code = "USD"
asset_scale = 9
{receiver}
"#
    );
    let proc = ilpd::start(&config, addr(btp), "ilpd-http-js");
    assert!(ilpd_tests::wait_for_port(
        addr(http),
        Duration::from_secs(10)
    ));
    Node {
        _proc: proc,
        metrics: addr(metrics),
    }
}

fn balance(m: SocketAddr, account: &str) -> i64 {
    bc::scrape(m, "ilpd_account_balance", &format!("account=\"{account}\""))
        .expect("balance metric") as i64
}

fn delivered(v: &Value) -> u64 {
    v["delivered"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v["delivered"].as_u64())
        .unwrap_or_else(|| panic!("no delivered amount in {v}"))
}

#[test]
fn stream_js_sender_over_http_to_js_receiver_over_btp() {
    require_node();
    let p = free_ports(3);
    let node = start(
        p[0],
        p[1],
        p[2],
        "link = \"http\"\nincoming_token = \"send-tok\"",
        "incoming_token = \"recv-tok\"",
    );
    let mut receiver = StreamReceiver::start(&btp_url("receiver", "recv-tok", p[0]), "js-recv");
    let url = format!("http://127.0.0.1:{}/ilp", p[1]);
    let v = js::run_ok(
        "stream-sender.js",
        &[
            "--http",
            &url,
            "--token",
            "send-tok",
            "--address",
            &receiver.address,
            "--secret",
            &receiver.secret,
            "--amount",
            "100000",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(v["sent"], "100000", "{v}");
    assert!(
        v["sourceAccount"]
            .as_str()
            .is_some_and(|a| a.starts_with("test.ilpd.sender")),
        "IL-DCP over HTTP: {v}"
    );
    let got: u64 = receiver.finish().parse().unwrap();
    assert_eq!(got, delivered(&v));
    assert_eq!(got, 100_000, "same asset, no spread");
    assert_eq!(balance(node.metrics, "sender"), 100_000);
    assert_eq!(balance(node.metrics, "receiver"), -100_000);
}

#[test]
fn stream_js_sender_over_btp_to_js_receiver_over_http() {
    require_node();
    let p = free_ports(4);
    let recv_port = p[3];
    let node = start(
        p[0],
        p[1],
        p[2],
        "incoming_token = \"send-tok\"",
        &format!(
            "link = \"http\"\nincoming_token = \"recv-tok\"\nhttp_url = \"http://127.0.0.1:{recv_port}/\"\noutgoing_token = \"ilpd-at-recv\""
        ),
    );
    // The receiver's ilp-plugin-http: it POSTs to ilpd (IL-DCP) and ilpd
    // POSTs the payment's packets to its own server.
    let mut cmd = node_script("stream-receiver.js");
    let url = format!("http://127.0.0.1:{}/ilp", p[1]);
    let port = recv_port.to_string();
    cmd.args([
        "--http",
        &url,
        "--token",
        "recv-tok",
        "--listen-port",
        &port,
        "--listen-token",
        "ilpd-at-recv",
    ]);
    let mut recv = Proc::spawn(cmd, "js-recv-http");
    let line = recv.wait_for_line(Duration::from_secs(30), |l| l.contains("\"address\""));
    let info: Value = match line.and_then(|l| serde_json::from_str(&l).ok()) {
        Some(v) => v,
        None => {
            recv.dump();
            panic!("stream-receiver over HTTP did not start");
        }
    };
    let address = info["address"].as_str().unwrap().to_string();
    let secret = info["secret"].as_str().unwrap().to_string();
    assert!(address.starts_with("test.ilpd.receiver"), "{address}");
    let v = js::run_ok(
        "stream-sender.js",
        &[
            "--btp",
            &btp_url("sender", "send-tok", p[0]),
            "--address",
            &address,
            "--secret",
            &secret,
            "--amount",
            "100000",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(v["sent"], "100000", "{v}");
    recv.close_stdin();
    recv.wait_timeout(Duration::from_secs(10));
    let fin = ilpd_tests::json_lines(&recv)
        .into_iter()
        .find(|v| v.get("final").is_some());
    let got: u64 = fin
        .as_ref()
        .and_then(|v| v["received"].as_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            recv.dump();
            panic!("no final total from the receiver")
        });
    assert_eq!(got, delivered(&v));
    assert_eq!(got, 100_000);
    assert_eq!(balance(node.metrics, "sender"), 100_000);
    assert_eq!(balance(node.metrics, "receiver"), -100_000);
}

/// ilpd and the JavaScript connector (ilp-connector 23 with
/// ilp-plugin-http) peered over ILP-over-HTTP in both directions; STREAM
/// from a JS child to an ilpd child and back.
#[test]
fn stream_both_ways_with_the_js_connector_peered_over_http() {
    require_node();
    let p = free_ports(5);
    let (btp, http, metrics, js_http, alice_port) = (p[0], p[1], p[2], p[3], p[4]);
    let config = format!(
        r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
threads = 2
pin_cores = false
listen = "127.0.0.1:{btp}"
http_listen = "127.0.0.1:{http}"
metrics_addr = "127.0.0.1:{metrics}"
shutdown_grace_ms = 500

[[accounts]]
id = "bob"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "bob-token"

[[accounts]]
id = "jsa"
relation = "peer"
asset_code = "USD"
asset_scale = 9
link = "http"
incoming_token = "jsa-to-ilpd"
http_url = "http://127.0.0.1:{js_http}/"
outgoing_token = "ilpd-to-jsa"

[[routes]]
prefix = "test.jsa"
account = "jsa"
"#
    );
    let mut ilpd_proc = ilpd::start(
        &config.replace(
            "shutdown_grace_ms = 500",
            "shutdown_grace_ms = 500\nlog_level = \"debug\"",
        ),
        addr(btp),
        "ilpd-http-peer",
    );
    let js_config = serde_json::json!({
        "ilpAddress": "test.jsa",
        "accounts": {
            "alice": { "relation": "child", "btpServer": { "port": alice_port, "token": "alice-token" } },
            "ilpd": {
                "relation": "peer",
                "http": {
                    "port": js_http,
                    "incomingToken": "ilpd-to-jsa",
                    "url": format!("http://127.0.0.1:{http}/ilp"),
                    "outgoingToken": "jsa-to-ilpd",
                    "name": "jsa"
                },
                "sendRoutes": false,
                "receiveRoutes": false
            }
        },
        "connector": { "routes": [{ "targetPrefix": "test.ilpd", "peerId": "ilpd" }] }
    });
    let _js = js::JsConnector::start(&js_config, "js-connector-http");
    let alice = btp_url("alice", "alice-token", alice_port);
    let bob = btp_url("bob", "bob-token", btp);
    for (from, to, amount, prefix) in [
        (&alice, &bob, "1000001", "test.ilpd.bob."),
        (&bob, &alice, "2000003", "test.jsa.alice."),
    ] {
        let mut rx = StreamReceiver::start(to, "stream-receiver");
        assert!(rx.address.starts_with(prefix), "{}", rx.address);
        let sent = js::run_ok(
            "stream-sender.js",
            &[
                "--btp",
                from,
                "--address",
                &rx.address,
                "--secret",
                &rx.secret,
                "--amount",
                amount,
            ],
            Duration::from_secs(90),
        );
        assert_eq!(sent["sent"], amount, "{sent}");
        assert_eq!(sent["delivered"], amount, "{sent}");
        assert_eq!(rx.finish(), amount);
        let _ = &mut ilpd_proc;
    }
    // bob received 1000001 and sent 2000003; the peer link carries the rest.
    let m = addr(metrics);
    assert_eq!(balance(m, "bob"), 2_000_003 - 1_000_001);
    assert_eq!(balance(m, "jsa"), 1_000_001 - 2_000_003);
}

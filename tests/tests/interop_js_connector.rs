//! Proves the interop harness against the JavaScript stack alone: the
//! reference connector (ilp-connector 23, via tests/interop/js-connector.js)
//! sits in the middle, and the JS scripts drive it. If these pass, a failure
//! in interop_ilpd.rs points at ilpd, not at the harness.

use std::time::Duration;

use ilpd_tests::js::{self, btp_url, JsConnector, StreamReceiver};
use ilpd_tests::{free_ports, require_node};
use serde_json::json;

const JS_ADDRESS: &str = "test.jsc";

/// Two child accounts, each with a BTP server listener on 127.0.0.1.
fn start_two_children(alice: u16, bob: u16) -> JsConnector {
    let config = json!({
        "ilpAddress": JS_ADDRESS,
        "accounts": {
            "alice": { "relation": "child", "btpServer": { "port": alice, "token": "alice-token" } },
            "bob":   { "relation": "child", "btpServer": { "port": bob,   "token": "bob-token" } },
        }
    });
    JsConnector::start(&config, "js-connector")
}

#[test]
fn stream_payment_through_js_connector_arrives_exactly() {
    require_node();
    let ports = free_ports(2);
    let _jsc = start_two_children(ports[0], ports[1]);

    let mut rx = StreamReceiver::start(&btp_url("bob", "bob-token", ports[1]), "stream-receiver");
    // The receiver's address comes from the connector over IL-DCP: its
    // child address (`<connector>.<account id>`) plus STREAM's token.
    assert!(
        rx.address.starts_with("test.jsc.bob."),
        "receiver address {}",
        rx.address
    );

    let amount = "1234567";
    let sent = js::run_ok(
        "stream-sender.js",
        &[
            "--btp",
            &btp_url("alice", "alice-token", ports[0]),
            "--address",
            &rx.address,
            "--secret",
            &rx.secret,
            "--amount",
            amount,
        ],
        Duration::from_secs(90),
    );
    assert_eq!(sent["sent"], amount, "sender output {sent}");
    // one-to-one backend, spread 0, same asset: delivered == sent.
    assert_eq!(sent["delivered"], amount, "sender output {sent}");
    assert_eq!(sent["sourceAccount"], "test.jsc.alice");

    // The receiver's own count, independent of what the sender believes.
    assert_eq!(rx.finish(), amount);
}

#[test]
fn ildcp_ping_and_peer_balance_against_js_connector() {
    require_node();
    let ports = free_ports(2);
    let _jsc = start_two_children(ports[0], ports[1]);
    let alice = btp_url("alice", "alice-token", ports[0]);
    let t = Duration::from_secs(40);

    let ildcp = js::run_ok("ildcp.js", &["--btp", &alice], t);
    assert_eq!(ildcp["clientAddress"], "test.jsc.alice");
    assert_eq!(ildcp["assetCode"], "USD");
    assert_eq!(ildcp["assetScale"], 9);

    // Echo: ping.js is also the pong's destination and fulfills it.
    let ping = js::run_ok(
        "ping.js",
        &[
            "--btp",
            &alice,
            "--destination",
            JS_ADDRESS,
            "--amount",
            "7",
        ],
        t,
    );
    assert_eq!(ping["fulfilled"], true, "{ping}");
    assert_eq!(ping["pongReceived"], true, "{ping}");
    assert_eq!(ping["pong"]["amount"], "7", "{ping}");

    // ilp-connector 23 does not implement peer.balance
    // (docs/design.md "peer.balance"): it answers any unknown peer.*
    // protocol with F01. This checks that peer-balance.js reports a Reject
    // as such (exit 2, code shown).
    let (status, v, p) = js::run("peer-balance.js", &["--btp", &alice], t);
    if status.code() != Some(2) {
        p.dump();
    }
    assert_eq!(status.code(), Some(2), "{v}");
    assert_eq!(v["reject"]["code"], "F01", "{v}");
    assert_eq!(v["reject"]["triggeredBy"], JS_ADDRESS, "{v}");

    // No user name (`btp+ws://:token@`): ilp-plugin-btp sends an empty
    // auth_username and ilp-connector authenticates by the token alone.
    let no_user = format!("btp+ws://:alice-token@127.0.0.1:{}", ports[0]);
    let v = js::run_ok("ildcp.js", &["--btp", &no_user], t);
    assert_eq!(v["clientAddress"], "test.jsc.alice", "{v}");

    // A wrong BTP token must fail the script, not hang it.
    let (status, v, _p) = js::run(
        "ildcp.js",
        &[
            "--btp",
            &btp_url("alice", "wrong-token", ports[0]),
            "--timeout",
            "15",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{v}");
    assert!(v.get("error").is_some(), "{v}");
}

/// Two JS connectors peered over BTP (B dials A), alice a child of A, bob a
/// child of B. With `static_routes` each has a configured route to the
/// other; without, they learn them over CCP (route broadcasting is on by
/// default in ilp-connector 23 for peers). Returns (A, B, alice port, bob
/// port). This is the topology interop_ilpd_js.rs runs with ilpd as B.
fn start_two_js_connectors(static_routes: bool) -> (JsConnector, JsConnector, u16, u16) {
    let ports = free_ports(3);
    let (alice, peering, bob) = (ports[0], ports[1], ports[2]);
    let routes = |prefix: &str, peer: &str| {
        if static_routes {
            json!([{ "targetPrefix": prefix, "peerId": peer }])
        } else {
            json!([])
        }
    };
    let a = JsConnector::start(
        &json!({
            "ilpAddress": "test.jsa",
            "accounts": {
                "alice": { "relation": "child", "btpServer": { "port": alice, "token": "alice-token" } },
                "b": { "relation": "peer", "btpServer": { "port": peering, "token": "a-b-token" } },
            },
            "connector": { "routes": routes("test.jsb", "b") }
        }),
        "js-connector-a",
    );
    let b = JsConnector::start(
        &json!({
            "ilpAddress": "test.jsb",
            "accounts": {
                "bob": { "relation": "child", "btpServer": { "port": bob, "token": "bob-token" } },
                "a": { "relation": "peer", "btpClient": {
                    "url": format!("btp+ws://127.0.0.1:{peering}"), "username": "b", "token": "a-b-token" } },
            },
            "connector": { "routes": routes("test.jsa", "a") }
        }),
        "js-connector-b",
    );
    (a, b, alice, bob)
}

/// Sends `amount` from alice (on `alice_port`) to a fresh STREAM receiver
/// at bob (on `bob_port`); asserts exact delivery on both ends.
fn stream_across(alice_port: u16, bob_port: u16, amount: &str, expect_prefix: &str) {
    let mut rx = StreamReceiver::start(&btp_url("bob", "bob-token", bob_port), "stream-receiver");
    assert!(
        rx.address.starts_with(expect_prefix),
        "receiver address {}",
        rx.address
    );
    let alice = btp_url("alice", "alice-token", alice_port);
    let args = [
        "--btp",
        &alice,
        "--address",
        &rx.address,
        "--secret",
        &rx.secret,
        "--amount",
        amount,
    ];
    let sent = js::run_ok("stream-sender.js", &args, Duration::from_secs(90));
    assert_eq!(sent["sent"], amount, "sender output {sent}");
    assert_eq!(sent["delivered"], amount, "sender output {sent}");
    assert_eq!(rx.finish(), amount);
}

#[test]
fn stream_payment_across_two_js_connectors_static_routes() {
    require_node();
    let (_a, _b, alice, bob) = start_two_js_connectors(true);
    stream_across(alice, bob, "424242", "test.jsb.bob.");
}

#[test]
fn stream_payment_across_two_js_connectors_ccp_routes() {
    require_node();
    let (_a, _b, alice, bob) = start_two_js_connectors(false);
    // Wait until A can reach B's address: an echo ping to test.jsb is
    // fulfilled only once A has a route to test.jsb and B one back to
    // test.jsa.alice. Usually ~1 s; but when B connects while A or B is still
    // starting, ilp-connector's first route control message can fail, and
    // it retries only after 30 s (ROUTE_CONTROL_RETRY_INTERVAL), hence 45 s.
    let alice_url = btp_url("alice", "alice-token", alice);
    let start = std::time::Instant::now();
    let deadline = start + Duration::from_secs(45);
    loop {
        let (status, v, _p) = js::run(
            "ping.js",
            &[
                "--btp",
                &alice_url,
                "--destination",
                "test.jsb",
                "--timeout",
                "10",
            ],
            Duration::from_secs(20),
        );
        if status.success() && v["fulfilled"] == true {
            eprintln!("routes converged after {:?}", start.elapsed());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "routes never converged: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    stream_across(alice, bob, "31337", "test.jsb.bob.");
}

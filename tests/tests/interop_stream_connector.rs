//! STREAM through the JavaScript reference connector (ilp-connector 23.0.2),
//! with real processes on 127.0.0.1 (issue 15, "Interop with the pinned
//! JavaScript stack"):
//!
//! - the pinned `ilp-protocol-stream` sender, a child of ilp-connector, pays
//!   ilpd's own receiver account (SPSP on ilpd's HTTP listener) across the
//!   BTP peering; the connector caps packets (F08), so the payment is split;
//!   what the sender says was delivered is exactly the receiver's credit in
//!   ilpd's ledger, and RFC 39 receipts survive the hop;
//! - `ilp-loadgen stream`, a child of ilp-connector, pays a JS
//!   `ilp-protocol-stream` server (tests/interop/spsp-server.js) behind the
//!   same connector, with the connector's F08 in the way;
//! - bad input: tampered STREAM data and an address ilpd never issued get
//!   ilpd's Reject through ilp-connector byte for byte as ilpd gives it
//!   directly, and move no money; an expired Prepare is stopped by
//!   ilp-connector itself and never reaches ilpd.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use ilpd_codec::Packet;
use ilpd_tests::btp_client::{balance, prepare, scrape, unix_ms, BtpClient};
use ilpd_tests::js::{self, btp_url, JsConnector};
use ilpd_tests::{
    bin_path, free_ports, ilpd, json_lines, json_u64, node_script, require_node, run_with_timeout,
    temp_dir, Proc,
};
use serde_json::{json, Value};

const JSA_TOKEN: &str = "jsa-at-ilpd-token-0123456789";
const DIRECT_TOKEN: &str = "direct-child-token-0123456789";
/// The JS connector's cap on alice's packets (ilp-connector
/// `maxPacketAmount`): bigger Prepares get F08 from test.jsa.
const ALICE_MAX_PACKET: u64 = 100_000;

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// alice (child of the JS connector test.jsa) → ilp-connector → BTP
/// peering (the JS connector dials ilpd) → ilpd (test.ilpd) → its receiver
/// account `shop` (USD, scale 9). ilpd also has a child `direct`, to get
/// ilpd's own answers to the same packets without the JS hop.
struct Net {
    _ilpd: Proc,
    _js: JsConnector,
    ilpd_btp: u16,
    http: u16,
    metrics: u16,
    alice_port: u16,
}

impl Net {
    fn start() -> Net {
        let p = free_ports(4);
        let (ilpd_btp, http, metrics, alice_port) = (p[0], p[1], p[2], p[3]);
        let config = format!(
            r#"
[node]
address = "test.ilpd"
threads = 2
pin_cores = false
listen = "127.0.0.1:{ilpd_btp}"
http_listen = "127.0.0.1:{http}"
metrics_addr = "127.0.0.1:{metrics}"
shutdown_grace_ms = 500
log_level = "warn"

[[accounts]]
id = "jsa"
relation = "peer"
asset_code = "USD"
asset_scale = 9
incoming_token = "{JSA_TOKEN}"

[[accounts]]
id = "direct"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "{DIRECT_TOKEN}"

[[accounts]]
id = "shop"
relation = "receiver"
asset_code = "USD"
asset_scale = 9

[[routes]]
prefix = "test.jsa"
account = "jsa"
"#
        );
        let ilpd_proc = ilpd::start(&config, addr(ilpd_btp), "ilpd");
        assert!(
            ilpd_tests::wait_for_port(addr(http), Duration::from_secs(10)),
            "ilpd's HTTP listener"
        );
        let js_config = json!({
            "ilpAddress": "test.jsa",
            "accounts": {
                "alice": {
                    "relation": "child",
                    "btpServer": { "port": alice_port, "token": "alice-token" },
                    "maxPacketAmount": ALICE_MAX_PACKET.to_string()
                },
                "ilpd": {
                    "relation": "peer",
                    "btpClient": {
                        "url": format!("btp+ws://127.0.0.1:{ilpd_btp}"),
                        "username": "jsa",
                        "token": JSA_TOKEN
                    },
                    "sendRoutes": false,
                    "receiveRoutes": false
                }
            },
            "connector": { "routes": [{ "targetPrefix": "test.ilpd", "peerId": "ilpd" }] }
        });
        let js = JsConnector::start(&js_config, "js-connector");
        let net = Net {
            _ilpd: ilpd_proc,
            _js: js,
            ilpd_btp,
            http,
            metrics,
            alice_port,
        };
        net.wait_until_connected();
        net
    }

    fn alice(&self) -> String {
        btp_url("alice", "alice-token", self.alice_port)
    }

    /// An echo ping alice → test.ilpd fulfilled: the peering is up and
    /// routed both ways.
    fn wait_until_connected(&self) {
        let alice = self.alice();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, v, p) = js::run(
                "ping.js",
                &[
                    "--btp",
                    &alice,
                    "--destination",
                    "test.ilpd",
                    "--timeout",
                    "10",
                ],
                Duration::from_secs(20),
            );
            if status.success() && v["fulfilled"] == true {
                return;
            }
            if Instant::now() > deadline {
                p.dump();
                panic!("ping alice -> test.ilpd never fulfilled: {v}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        scrape(addr(self.metrics), name, labels)
    }

    fn balance(&self, account: &str) -> i64 {
        balance(addr(self.metrics), account)
    }

    fn received_total(&self) -> u64 {
        self.metric("ilpd_stream_received_total", "account=\"shop\"")
            .unwrap_or(0.0) as u64
    }

    fn shop_packets(&self, result: &str) -> u64 {
        self.metric(
            "ilpd_stream_packets_total",
            &format!("account=\"shop\",result=\"{result}\""),
        )
        .unwrap_or(0.0) as u64
    }

    /// One SPSP query to ilpd's `/shop`: (destination_account, shared_secret).
    fn spsp(&self) -> (String, String) {
        let mut s = TcpStream::connect_timeout(&addr(self.http), Duration::from_secs(5))
            .expect("connect to ilpd's HTTP listener");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(
            b"GET /shop HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/spsp4+json, application/spsp+json\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        assert!(head.starts_with("HTTP/1.1 200"), "{text}");
        let v: Value = serde_json::from_str(body).expect("SPSP JSON");
        (
            v["destination_account"].as_str().unwrap().to_string(),
            v["shared_secret"].as_str().unwrap().to_string(),
        )
    }
}

#[test]
fn js_stream_sender_pays_ilpds_receiver_through_ilp_connector_exactly() {
    require_node();
    let t0 = Instant::now();
    let net = Net::start();
    let alice = net.alice();
    let spsp = format!("http://127.0.0.1:{}/shop", net.http);

    // SPSP query, then ilp-protocol-stream pays 1,000,003 in packets of at
    // most 100,000 (ilp-connector answers bigger ones F08), with receipts.
    let amount: u64 = 1_000_003;
    let r = js::run_ok(
        "spsp-pay.js",
        &[
            "--btp",
            &alice,
            "--spsp",
            &spsp,
            "--amount",
            &amount.to_string(),
            "--receipts",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(json_u64(&r["sent"]), amount, "{r}");
    assert_eq!(json_u64(&r["delivered"]), amount, "{r}");
    assert!(
        r["destinationAccount"]
            .as_str()
            .is_some_and(|d| d.starts_with("test.ilpd.shop.")),
        "{r}"
    );
    // The Fulfill data (with its RFC 39 receipt) crossed ilp-connector
    // intact: the receipt's HMAC verified and it counts every unit.
    assert_eq!(r["receiptsEnabled"], true, "{r}");
    assert_eq!(json_u64(&r["receiptTotal"]), amount, "{r}");
    // ilpd's ledger: the receiver is owed exactly what the sender says was
    // delivered; the JS connector (peer jsa) owes it.
    assert_eq!(net.balance("shop"), -(amount as i64));
    assert_eq!(net.balance("jsa"), amount as i64);
    assert_eq!(net.received_total(), amount);
    let fulfilled = net.shop_packets("fulfilled");
    assert!(
        fulfilled >= amount.div_ceil(ALICE_MAX_PACKET),
        "the connector's F08 should split the payment: {fulfilled} fulfilled packets"
    );

    // stream-sender.js with an address and secret from SPSP (no receipts).
    let (address, secret) = net.spsp();
    let second: u64 = 250_007;
    let r = js::run_ok(
        "stream-sender.js",
        &[
            "--btp",
            &alice,
            "--address",
            &address,
            "--secret",
            &secret,
            "--amount",
            &second.to_string(),
        ],
        Duration::from_secs(90),
    );
    assert_eq!(json_u64(&r["sent"]), second, "{r}");
    assert_eq!(json_u64(&r["delivered"]), second, "{r}");
    let total = amount + second;
    assert_eq!(net.balance("shop"), -(total as i64));
    assert_eq!(net.balance("jsa"), total as i64);
    assert_eq!(net.balance("direct"), 0);
    assert_eq!(net.received_total(), total);
    eprintln!("js sender via ilp-connector: {:?}", t0.elapsed());
}

/// A Reject as the tests compare it: every field, data included.
#[derive(Debug, PartialEq, Eq)]
struct RejectFields {
    code: String,
    triggered_by: String,
    message: String,
    data: Vec<u8>,
}

/// Sends one Prepare on an authenticated BTP client and returns the Reject
/// it gets (panics on a Fulfill, a timeout or anything else).
fn reject_for(c: &mut BtpClient, ilp: &[u8]) -> RejectFields {
    let id = c.send_prepare(ilp).expect("send prepare");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no reply to request {id}");
        let p = c.read_btp(left).expect("read BTP reply");
        if p.request_id != id {
            continue; // anything else the connector sends (none expected)
        }
        let Some(bytes) = p.ilp.clone() else {
            panic!("reply without ilp: {p:?}");
        };
        match Packet::new_checked(&bytes[..]) {
            Ok(Packet::Reject(r)) => {
                return RejectFields {
                    code: String::from_utf8_lossy(r.code().as_bytes()).into(),
                    triggered_by: String::from_utf8_lossy(r.triggered_by()).into(),
                    message: String::from_utf8_lossy(r.message()).into(),
                    data: r.data().to_vec(),
                }
            }
            other => panic!("expected a Reject, got {other:?}"),
        }
    }
}

#[test]
fn ilpds_receiver_rejects_cross_ilp_connector_unchanged() {
    require_node();
    let net = Net::start();
    let mut alice = BtpClient::connect_auth(addr(net.alice_port), Some("alice"), "alice-token")
        .expect("alice connects to the JS connector");
    let mut direct = BtpClient::connect_auth(addr(net.ilpd_btp), Some("direct"), DIRECT_TOKEN)
        .expect("direct connects to ilpd");
    let cond = [7u8; 32];
    let rejected_before = net.shop_packets("rejected");

    // Tampered data: an address ilpd issued, but data that does not decrypt
    // under its shared secret (RFC 29 "Encryption"): F06 from the receiver.
    let (address, _) = net.spsp();
    let junk: Vec<u8> = (0..120u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let exp = || unix_ms() + 20_000;
    let via_js = reject_for(&mut alice, &prepare(5_000, exp(), &cond, &address, &junk));
    let own = reject_for(&mut direct, &prepare(5_000, exp(), &cond, &address, &junk));
    assert_eq!(own.code, "F06", "{own:?}");
    assert_eq!(own.triggered_by, "test.ilpd.shop", "{own:?}");
    assert!(own.data.is_empty(), "{own:?}");
    assert_eq!(via_js, own, "ilp-connector changed ilpd's F06");

    // An address with a token this server secret never issued: F02.
    let forged = format!("test.ilpd.shop.{}", "A".repeat(70));
    let via_js = reject_for(&mut alice, &prepare(5_000, exp(), &cond, &forged, &junk));
    let own = reject_for(&mut direct, &prepare(5_000, exp(), &cond, &forged, &junk));
    assert_eq!(own.code, "F02", "{own:?}");
    assert_eq!(via_js, own, "ilp-connector changed ilpd's F02");

    // Expired before it was sent: ilp-connector answers it itself (R02,
    // "source transfer has already expired"); it never reaches ilpd.
    let packets_before = net.shop_packets("rejected") + net.shop_packets("fulfilled");
    let expired = prepare(5_000, unix_ms() - 1_000, &cond, &address, &junk);
    let r = reject_for(&mut alice, &expired);
    assert_eq!(r.code, "R02", "{r:?}");
    assert_eq!(r.triggered_by, "test.jsa", "{r:?}");
    assert_eq!(
        net.shop_packets("rejected") + net.shop_packets("fulfilled"),
        packets_before,
        "an expired packet reached ilpd's receiver"
    );

    // No money moved, nothing stays reserved.
    assert_eq!(net.balance("shop"), 0);
    assert_eq!(net.balance("jsa"), 0);
    assert_eq!(net.balance("direct"), 0);
    assert_eq!(net.received_total(), 0);
    assert!(net.shop_packets("rejected") >= rejected_before + 2);
}

/// spsp-server.js (tests/interop): a JS STREAM server with its SPSP
/// endpoint; returns the process and its SPSP URL.
fn spsp_server(btp: &str, label: &str) -> (Proc, String) {
    let mut cmd = node_script("spsp-server.js");
    cmd.args(["--btp", btp]);
    let mut proc = Proc::spawn(cmd, label);
    let line = proc.wait_for_line(Duration::from_secs(30), |l| l.contains("\"spsp\""));
    let url = line
        .and_then(|l| serde_json::from_str::<Value>(&l).ok())
        .and_then(|v| v["spsp"].as_str().map(str::to_string));
    match url {
        Some(url) => (proc, url),
        None => {
            proc.dump();
            panic!("[{label}] spsp-server.js did not start");
        }
    }
}

/// Closes the server's stdin; returns its final line.
fn finish(proc: &mut Proc) -> Value {
    proc.close_stdin();
    let status = proc.wait_timeout(Duration::from_secs(10));
    let fin = json_lines(proc)
        .into_iter()
        .find(|v| v.get("final").is_some());
    match (status, fin) {
        (Some(s), Some(v)) if s.success() => v,
        (s, _) => {
            proc.dump();
            panic!("spsp-server.js did not finish cleanly: {s:?}");
        }
    }
}

#[test]
fn loadgen_stream_through_ilp_connector_to_js_receiver_arrives_exactly() {
    require_node();
    let t0 = Instant::now();
    let p = free_ports(2);
    // ilp-connector caps lgsend's packets at 2,500; ilp-loadgen starts at
    // 3,000, so it must learn the cap from the F08 data.
    let cfg = json!({
        "ilpAddress": "test.jsc",
        "accounts": {
            "lgsend": {
                "relation": "child",
                "btpServer": { "port": p[0], "token": "send-token" },
                "maxPacketAmount": "2500"
            },
            "recv": { "relation": "child", "btpServer": { "port": p[1], "token": "recv-token" } },
        }
    });
    let _jsc = JsConnector::start(&cfg, "jsc-stream");
    let (mut receiver, url) = spsp_server(&btp_url("recv", "recv-token", p[1]), "js-spsp-server");
    let send = format!("btp+ws://lgsend:send-token@127.0.0.1:{}/", p[0]);
    let file = temp_dir("lg-stream-jsc").join("report.json");
    let mut cmd = Command::new(bin_path("ilp-loadgen"));
    cmd.args([
        "stream",
        "--send",
        &send,
        "--spsp",
        &url,
        "--amount",
        "10000",
        "--payments",
        "10",
        "--concurrency",
        "4",
        "--max-packet-amount",
        "3000",
        "-q",
        "--json",
    ])
    .arg(&file);
    let (s, lg) = run_with_timeout(cmd, "lg-stream-jsc", Duration::from_secs(120));
    if !s.success() {
        lg.dump();
    }
    assert!(s.success(), "{s}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("report"))
        .expect("report JSON");
    let fin = finish(&mut receiver);

    let pay = &v["payments"];
    assert_eq!(json_u64(&pay["completed"]), 10, "{pay}");
    assert_eq!(json_u64(&pay["failed"]), 0, "{pay}");
    let amounts = &v["amounts"];
    assert_eq!(json_u64(&amounts["sent"]), 100_000, "{amounts}");
    assert_eq!(json_u64(&amounts["delivered"]), 100_000, "{amounts}");
    // What the JS receiver counted is what ilp-loadgen says was delivered.
    assert_eq!(fin["received"], "100000", "{fin}");
    assert_eq!(json_u64(&fin["connections"]), 10, "{fin}");
    assert_eq!(json_u64(&fin["spspQueries"]), 10, "{fin}");
    // The receiver's address came from IL-DCP under the JS connector.
    assert!(
        v["receiver"]["destination"]
            .as_str()
            .is_some_and(|d| d.starts_with("test.jsc.recv.")),
        "{v}"
    );
    assert_eq!(v["source_address"], "test.jsc.lgsend", "{v}");
    let pk = &v["packets"];
    // Every payment met the connector's F08 at least once and then kept
    // its packets at or under 2,500: at least 4 money packets each.
    assert!(json_u64(&pk["rejected_by_code"]["F08"]) >= 1, "{pk}");
    assert!(json_u64(&pk["fulfilled"]) >= 10 * 4, "{pk}");
    // The only F99s are the rate probes: no packet fell under its minimum.
    assert_eq!(json_u64(&pk["rejected_by_code"]["F99"]), 10, "{pk}");
    assert_eq!(
        json_u64(&pk["timed_out"]) + json_u64(&pk["lost"]),
        0,
        "{pk}"
    );
    eprintln!("loadgen stream via ilp-connector: {:?}", t0.elapsed());
}

//! `ilp-loadgen stream`: real STREAM payments through a real ilpd (BTP) to
//! the pinned JavaScript `ilp-protocol-stream` server, which serves SPSP the
//! way ilp-spsp-server does (a new connection per GET). The amount the
//! receiver counts must equal what ilp-loadgen says was delivered, and
//! ilpd's balances must agree. Also: a bad SPSP URL and a receiver that
//! takes no money give clear errors and a non-zero exit.
//!
//! The receiver is tests/interop/spsp-server.js.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ilpd_tests::btp_client::{http_get, scrape};
use ilpd_tests::{
    bin_path, free_ports, ilpd, json_lines, json_u64, node_script, require_node, run_with_timeout,
    temp_dir, Proc,
};
use serde_json::Value;

struct SpspServer {
    proc: Proc,
    url: String,
}

impl SpspServer {
    fn start(btp_url: &str, receive_max: Option<u64>, label: &str) -> SpspServer {
        // tests/interop/spsp-server.js: an ilp-protocol-stream server with
        // an SPSP endpoint answering every GET with a new connection.
        let mut cmd = node_script("spsp-server.js");
        cmd.args(["--btp", btp_url]);
        if let Some(m) = receive_max {
            cmd.args(["--receive-max", &m.to_string()]);
        }
        let mut proc = Proc::spawn(cmd, label);
        let line = proc.wait_for_line(Duration::from_secs(30), |l| l.contains("\"spsp\""));
        let url = line
            .and_then(|l| serde_json::from_str::<Value>(&l).ok())
            .and_then(|v| v["spsp"].as_str().map(str::to_string));
        match url {
            Some(url) => SpspServer { proc, url },
            None => {
                proc.dump();
                panic!("[{label}] the SPSP server did not start");
            }
        }
    }

    /// Closes stdin; returns the final line (received total, connections).
    fn finish(&mut self) -> Value {
        self.proc.close_stdin();
        let status = self.proc.wait_timeout(Duration::from_secs(10));
        let fin = json_lines(&self.proc)
            .into_iter()
            .find(|v| v.get("final").is_some());
        match (status, fin) {
            (Some(s), Some(v)) if s.success() => v,
            (s, _) => {
                self.proc.dump();
                panic!("the SPSP server did not finish cleanly: {s:?}");
            }
        }
    }
}

const SEND_TOKEN: &str = "loadgen-stream-send-token";
const RECV_TOKEN: &str = "stream-receiver-token-0123";
const HTTP_TOKEN: &str = "loadgen-stream-http-token";

/// ilpd with a sending child (`lgsend`) and the receiver's child account
/// (`recv`, address test.ilpd.recv by IL-DCP). Returns it and its port.
/// The metrics endpoint is on its own port.
fn start_ilpd(label: &str) -> (Proc, u16, SocketAddr) {
    let ports = free_ports(2);
    let (port, mport) = (ports[0], ports[1]);
    let config = format!(
        r#"
[node]
address = "test.ilpd"
listen = "127.0.0.1:{port}"
metrics_addr = "127.0.0.1:{mport}"
threads = 2
pin_cores = false
log_level = "warn"

[[accounts]]
id = "lgsend"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "{SEND_TOKEN}"
max_balance = 9000000000000000000

[[accounts]]
id = "recv"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "{RECV_TOKEN}"
min_balance = -9000000000000000000
"#
    );
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let metrics: SocketAddr = ([127, 0, 0, 1], mport).into();
    (ilpd::start(&config, listen, label), port, metrics)
}

fn loadgen_stream(args: &[&str], label: &str) -> (std::process::ExitStatus, Proc, Value) {
    let file: PathBuf = temp_dir("lg-stream").join("report.json");
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

#[test]
fn stream_payments_through_ilpd_to_the_js_receiver_arrive_exactly() {
    require_node();
    let (ilpd, port, metrics) = start_ilpd("ilpd-stream");
    let btp = format!("btp+ws://recv:{RECV_TOKEN}@127.0.0.1:{port}");
    let mut receiver = SpspServer::start(&btp, None, "js-spsp-server");
    let send = format!("btp+ws://lgsend:{SEND_TOKEN}@127.0.0.1:{port}/");
    // 20 payments of 10,000, 4 at a time, in packets of at most 3,000 (so
    // each payment is a probe, four money packets and a close).
    let (s, p, v) = loadgen_stream(
        &[
            "--send",
            &send,
            "--spsp",
            &receiver.url,
            "--amount",
            "10000",
            "--payments",
            "20",
            "--concurrency",
            "4",
            "--max-packet-amount",
            "3000",
        ],
        "lg-stream",
    );
    let out = p.stdout_text();
    if !s.success() {
        p.dump();
    }
    assert!(s.success(), "{s}\n{out}");
    let fin = receiver.finish();

    assert_eq!(v["tool"], "ilp-loadgen", "{v}");
    assert_eq!(v["mode"], "stream", "{v}");
    assert!(v["machine"]["cores"].as_u64().is_some(), "{v}");
    assert_eq!(v["settings"]["concurrency"], 4, "{v}");
    let pay = &v["payments"];
    assert_eq!(json_u64(&pay["started"]), 20, "{pay}");
    assert_eq!(json_u64(&pay["completed"]), 20, "{pay}");
    assert_eq!(json_u64(&pay["failed"]), 0, "{pay}");
    let amounts = &v["amounts"];
    assert_eq!(json_u64(&amounts["requested"]), 200_000, "{amounts}");
    assert_eq!(json_u64(&amounts["sent"]), 200_000, "{amounts}");
    // What the receiver counted is what ilp-loadgen says was delivered.
    assert_eq!(json_u64(&amounts["delivered"]), 200_000, "{amounts}");
    assert_eq!(fin["received"], "200000", "{fin}");
    // One STREAM connection (and one SPSP query) per payment.
    assert_eq!(json_u64(&fin["connections"]), 20, "{fin}");
    assert_eq!(json_u64(&fin["spspQueries"]), 20, "{fin}");
    let pk = &v["packets"];
    // Per payment: a probe (F99), 4 money packets, a close.
    assert!(json_u64(&pk["fulfilled"]) >= 20 * 4, "{pk}");
    assert_eq!(json_u64(&pk["rejected_by_code"]["F99"]), 20, "{pk}");
    assert_eq!(
        json_u64(&pk["timed_out"]) + json_u64(&pk["lost"]),
        0,
        "{pk}"
    );
    assert_eq!(json_u64(&v["latency_ns"]["payment"]["count"]), 20, "{v}");
    assert_eq!(json_u64(&v["latency_ns"]["spsp_query"]["count"]), 20, "{v}");
    assert_eq!(
        json_u64(&v["latency_ns"]["packet"]["count"]),
        json_u64(&pk["fulfilled"]) + json_u64(&pk["rejected"]),
        "{v}"
    );
    assert_eq!(v["receiver"]["asset_code"], "USD", "{v}");
    assert!(v["receiver"]["destination"]
        .as_str()
        .is_some_and(|d| d.starts_with("test.ilpd.recv.")));
    assert!(out.contains("payments/s"), "{out}");
    assert!(out.contains("delivered 200,000"), "{out}");

    // ilpd's ledger agrees: the sender's account is owed what arrived, the
    // receiver's account paid it out.
    let sent_bal = scrape(metrics, "ilpd_account_balance", "account=\"lgsend\"");
    let recv_bal = scrape(metrics, "ilpd_account_balance", "account=\"recv\"");
    let (Some(a), Some(b)) = (sent_bal, recv_bal) else {
        panic!("no ilpd_account_balance for lgsend/recv in /metrics");
    };
    assert_eq!(a.abs(), 200_000.0, "lgsend balance {a}");
    assert_eq!(a, -b, "lgsend {a}, recv {b}");
    drop(ilpd);
}

#[test]
fn stream_with_a_bad_spsp_url_fails_clearly() {
    let (_ilpd, port, _) = start_ilpd("ilpd-stream-bad-spsp");
    let send = format!("btp+ws://lgsend:{SEND_TOKEN}@127.0.0.1:{port}/");
    let nobody = free_ports(1)[0];
    let url = format!("http://127.0.0.1:{nobody}/.well-known/pay");
    let (s, p, v) = loadgen_stream(
        &["--send", &send, "--spsp", &url, "--amount", "100"],
        "lg-stream-bad-spsp",
    );
    let err = p.stderr_text();
    assert_eq!(s.code(), Some(1), "{err}");
    assert!(
        err.contains("SPSP query") && err.contains(&url) && err.contains("refused"),
        "{err}"
    );
    // The JSON still says why.
    assert!(
        v["aborted"].as_str().is_some_and(|a| a.contains("SPSP")),
        "{v}"
    );

    // Bad flags: exit 2 with a message.
    let mut cmd = Command::new(bin_path("ilp-loadgen"));
    cmd.args([
        "stream",
        "--send",
        &send,
        "--spsp",
        "example.com",
        "--amount",
        "1",
    ]);
    let (s, p) = run_with_timeout(cmd, "lg-stream-bad-flag", Duration::from_secs(20));
    assert_eq!(s.code(), Some(2), "{}", p.stderr_text());
    assert!(
        p.stderr_text().contains("payment pointer"),
        "{}",
        p.stderr_text()
    );
}

#[test]
fn stream_to_a_receiver_that_takes_nothing_fails_clearly() {
    require_node();
    let (_ilpd, port, _) = start_ilpd("ilpd-stream-rejects");
    let btp = format!("btp+ws://recv:{RECV_TOKEN}@127.0.0.1:{port}");
    // Receive max 0: every money packet is refused (F99 StreamMaxMoney).
    let mut receiver = SpspServer::start(&btp, Some(0), "js-spsp-server-max0");
    let send = format!("btp+ws://lgsend:{SEND_TOKEN}@127.0.0.1:{port}/");
    let (s, p, v) = loadgen_stream(
        &[
            "--send",
            &send,
            "--spsp",
            &receiver.url,
            "--amount",
            "5000",
            "--payments",
            "3",
            "--concurrency",
            "3",
        ],
        "lg-stream-rejects",
    );
    let err = p.stderr_text();
    assert_eq!(s.code(), Some(1), "{err}\n{}", p.stdout_text());
    assert!(err.contains("3 of 3 payments failed"), "{err}");
    assert!(err.contains("maximum"), "{err}");
    assert_eq!(json_u64(&v["payments"]["failed"]), 3, "{v}");
    assert_eq!(json_u64(&v["amounts"]["delivered"]), 0, "{v}");
    assert!(
        json_u64(&v["packets"]["rejected_by_code"]["F99"]) >= 3,
        "{v}"
    );

    // A wrong shared secret for a fresh connection: the receiver cannot
    // read the packets, and says so with a final error.
    let (status, body) = http_get(spsp_addr(&receiver.url), "/.well-known/pay").expect("SPSP GET");
    assert_eq!(status, 200, "{body}");
    let fresh: Value = serde_json::from_str(&body).expect("SPSP JSON");
    let addr = fresh["destination_account"]
        .as_str()
        .expect("destination_account");
    let (s, p, _) = loadgen_stream(
        &[
            "--send",
            &send,
            "--destination",
            addr,
            "--secret",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "--amount",
            "100",
        ],
        "lg-stream-wrong-secret",
    );
    let err = p.stderr_text();
    assert_eq!(s.code(), Some(1), "{err}\n{}", p.stdout_text());
    assert!(err.contains("1 of 1 payments failed"), "{err}");
    assert!(err.contains("rejected F"), "{err}");

    let fin = receiver.finish();
    assert_eq!(fin["received"], "0", "{fin}");
}

/// `127.0.0.1:port` of an `http://127.0.0.1:port/...` URL.
fn spsp_addr(url: &str) -> SocketAddr {
    let hostport = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    hostport.parse().expect("SPSP URL host:port")
}

/// Loopback Transport discovery (issue 15): `ilp-loadgen run --lsd FILE`
/// takes its receive link from a Loopback Server Definition whose
/// `btp+ws://token@host:port/` carries only the token.
#[test]
fn run_takes_its_receive_link_from_a_loopback_server_definition() {
    let (_ilpd, port, _) = start_ilpd("ilpd-lsd");
    let dir = temp_dir("lg-lsd");
    let lsd = dir.join("loopback.lsd.json");
    std::fs::write(
        &lsd,
        format!(
            r#"{{"loopback": "btp+ws://{RECV_TOKEN}@127.0.0.1:{port}/", "protocol": "BTP/2.0"}}"#
        ),
    )
    .expect("write LSD");
    let send = format!("btp+ws://lgsend:{SEND_TOKEN}@127.0.0.1:{port}/");
    let file = dir.join("report.json");
    let mut cmd = Command::new(bin_path("ilp-loadgen"));
    cmd.args(["run", "--send", &send, "--lsd"])
        .arg(&lsd)
        .args([
            "--packets",
            "2000",
            "--duration",
            "20s",
            "--warmup",
            "0s",
            "--window",
            "32",
            "-q",
            "--json",
        ])
        .arg(&file);
    let (s, p) = run_with_timeout(cmd, "lg-lsd", Duration::from_secs(60));
    if !s.success() {
        p.dump();
    }
    assert!(s.success(), "{s}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("report"))
        .expect("report JSON");
    assert_eq!(v["receive_address"], "test.ilpd.recv", "{v}");
    assert_eq!(
        json_u64(&v["packets"]["fulfilled"]),
        2000,
        "{}",
        v["packets"]
    );
    assert_eq!(v["reconciliation"]["delta"], "0", "{}", v["reconciliation"]);

    // An LSD that names another protocol is refused with a message.
    std::fs::write(
        &lsd,
        r#"{"loopback": "http://127.0.0.1:1/", "protocol": "ILP-over-HTTP"}"#,
    )
    .expect("write LSD");
    let mut cmd = Command::new(bin_path("ilp-loadgen"));
    cmd.args(["run", "--send", &send, "--lsd"]).arg(&lsd);
    let (s, p) = run_with_timeout(cmd, "lg-lsd-bad", Duration::from_secs(20));
    assert_eq!(s.code(), Some(1), "{}", p.stderr_text());
    assert!(
        p.stderr_text().contains("--lsd") && p.stderr_text().contains("BTP/2.0"),
        "{}",
        p.stderr_text()
    );
}

/// ilp-loadgen stream to ilpd's own receiver account (relation =
/// "receiver", SPSP on the HTTP listener), over BTP and over ILP-over-HTTP
/// send links at once: what ilp-loadgen says was delivered is what ilpd
/// credited to the receiver and debited from the sender.
#[test]
fn stream_payments_to_ilpds_own_receiver_over_btp_and_http_links() {
    let ports = free_ports(3);
    let (port, http_port, mport) = (ports[0], ports[1], ports[2]);
    let config = format!(
        r#"
[node]
address = "test.ilpd"
listen = "127.0.0.1:{port}"
http_listen = "127.0.0.1:{http_port}"
metrics_addr = "127.0.0.1:{mport}"
threads = 2
pin_cores = false
log_level = "warn"

[[accounts]]
id = "lgsend"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "{SEND_TOKEN}"
max_balance = 9000000000000000000

[[accounts]]
id = "lghttp"
relation = "child"
link = "http"
asset_code = "USD"
asset_scale = 9
incoming_token = "{HTTP_TOKEN}"
max_balance = 9000000000000000000

[[accounts]]
id = "shop"
relation = "receiver"
asset_code = "USD"
asset_scale = 9
"#
    );
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let _ilpd = ilpd::start(&config, listen, "ilpd-own-receiver");
    let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
    assert!(
        ilpd_tests::wait_for_port(http, Duration::from_secs(10)),
        "ilpd's HTTP listener"
    );
    let btp = format!("btp+ws://lgsend:{SEND_TOKEN}@127.0.0.1:{port}/");
    let post = format!("http://{HTTP_TOKEN}@127.0.0.1:{http_port}/accounts/lghttp/ilp");
    let spsp = format!("http://127.0.0.1:{http_port}/shop");
    let (s, p, v) = loadgen_stream(
        &[
            "--send",
            &btp,
            "--send",
            &post,
            "--spsp",
            &spsp,
            "--amount",
            "7000",
            "--payments",
            "40",
            "--concurrency",
            "8",
            "--max-packet-amount",
            "2000",
        ],
        "lg-stream-ilpd-receiver",
    );
    if !s.success() {
        p.dump();
    }
    assert!(s.success(), "{s}");
    assert_eq!(json_u64(&v["payments"]["completed"]), 40, "{v}");
    assert_eq!(
        json_u64(&v["amounts"]["delivered"]),
        280_000,
        "{}",
        v["amounts"]
    );
    assert_eq!(json_u64(&v["amounts"]["sent"]), 280_000, "{}", v["amounts"]);
    assert_eq!(
        json_u64(&v["packets"]["transport_errors"]),
        0,
        "{}",
        v["packets"]
    );
    let metrics: SocketAddr = ([127, 0, 0, 1], mport).into();
    let shop = scrape(metrics, "ilpd_account_balance", "account=\"shop\"");
    let btp_bal = scrape(metrics, "ilpd_account_balance", "account=\"lgsend\"");
    let http_bal = scrape(metrics, "ilpd_account_balance", "account=\"lghttp\"");
    let (Some(shop), Some(b), Some(h)) = (shop, btp_bal, http_bal) else {
        panic!("no ilpd_account_balance for shop/lgsend/lghttp in /metrics");
    };
    assert_eq!(shop.abs(), 280_000.0, "shop balance {shop}");
    assert_eq!(shop, -(b + h), "shop {shop}, lgsend {b}, lghttp {h}");
    // Packets went round-robin over both links.
    assert!(b != 0.0 && h != 0.0, "lgsend {b}, lghttp {h}");
}

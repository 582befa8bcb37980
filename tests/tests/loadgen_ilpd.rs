//! ilp-loadgen through ilpd over BTP: the embedded demo (the README's main
//! command), and a run with several destinations and an outcome mix whose
//! every packet is accounted for on both sides of the connector.

use ilpd_tests::{bin_path, free_port, run_with_timeout, temp_dir};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Null => 0,
        _ => panic!("not a number: {v}"),
    }
}

fn read_json(path: &std::path::Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

#[test]
fn loadgen_demo_drives_ilpd_and_reconciles() {
    // `ilp-loadgen demo` finds ilpd next to itself (target/release).
    bin_path("ilpd");
    let file = temp_dir("lg-demo").join("demo.json");
    let mut cmd = Command::new(bin_path("ilp-loadgen"));
    cmd.args(["demo", "--duration", "3s", "-q", "--json"])
        .arg(&file);
    let (s, p) = run_with_timeout(cmd, "lg-demo", Duration::from_secs(60));
    if !s.success() {
        p.dump();
    }
    assert!(s.success(), "{s}");
    let v = read_json(&file);
    assert_eq!(v["receive_address"], "test.ilpd.loadgen-recv", "{v}");
    assert_eq!(v["reconciliation"]["delta"], "0", "{}", v["reconciliation"]);
    assert_eq!(
        v["reconciliation"]["amount_sent"], v["reconciliation"]["amount_received_at_loopback"],
        "{}",
        v["reconciliation"]
    );
    assert!(num(&v["packets"]["fulfilled"]) > 1000, "{}", v["packets"]);
    assert!(
        p.stdout_text().contains("throughput"),
        "{}",
        p.stdout_text()
    );
}

#[test]
fn loadgen_through_ilpd_accounts_for_every_packet() {
    let port = free_port();
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = format!(
        r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
listen = "127.0.0.1:{port}"
threads = 2
log_level = "warn"

[[accounts]]
id = "lgsend"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "send-tok"
max_balance = 9000000000000000000

[[accounts]]
id = "lgrecv"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "recv-tok"
min_balance = -9000000000000000000
"#
    );
    let _ilpd = ilpd_tests::ilpd::start(&config, listen, "ilpd-for-loadgen");
    let file = temp_dir("lg-ilpd").join("report.json");
    let send = format!("btp+ws://lgsend:send-tok@127.0.0.1:{port}/");
    let recv = format!("btp+ws://lgrecv:recv-tok@127.0.0.1:{port}/");
    let mut cmd = Command::new(bin_path("ilp-loadgen"));
    cmd.args([
        "run",
        "--send",
        &send,
        "--recv",
        &recv,
        "--packets",
        "20000",
        "--duration",
        "20s",
        "--warmup",
        "0s",
        "--window",
        "64",
        "--conns",
        "2",
        "--recv-conns",
        "2",
        "--destinations",
        "8",
        "--amount",
        "3",
        "--mix",
        "fulfill=90,reject:F99=6,wrong=4",
        "--seed",
        "7",
        "-q",
        "--json",
    ])
    .arg(&file);
    let (s, p) = run_with_timeout(cmd, "lg-ilpd", Duration::from_secs(60));
    if !s.success() {
        p.dump();
    }
    assert!(s.success(), "{s}");
    let v = read_json(&file);
    let pk = &v["packets"];
    let rc = &v["receiver"];
    assert_eq!(num(&pk["sent"]), 20000, "{pk}");
    assert_eq!(num(&pk["lost"]), 0, "{pk}");
    assert_eq!(num(&pk["timed_out"]), 0, "{pk}");
    assert_eq!(num(&pk["unmatched_replies"]), 0, "{pk}");
    // Every Prepare reached the loopback (8 destinations, all under its address).
    assert_eq!(num(&rc["prepares"]), 20000, "{rc}");
    assert_eq!(num(&pk["fulfilled"]), num(&rc["fulfilled"]), "{pk} {rc}");
    // The receiver's F99 rejects come back unchanged through ilpd.
    assert_eq!(
        num(&pk["rejected_by_code"]["F99"]),
        num(&rc["rejected_by_code"]["F99"]),
        "{pk} {rc}"
    );
    // A wrong fulfillment is never passed on: ilpd rejects it instead
    // (F05 upstream, docs/design.md "Wrong fulfillment"), so the sender
    // never sees a bad preimage.
    let wrong = num(&rc["wrong_fulfillment_sent"]);
    assert!(wrong > 400, "{rc}");
    assert_eq!(num(&pk["wrong_fulfillment"]), 0, "{pk}");
    assert_eq!(
        num(&pk["rejected"]),
        num(&rc["rejected_by_code"]["F99"]) + wrong,
        "{pk} {rc}"
    );
    // Amounts: what the sender saw fulfilled is what arrived at the loopback.
    assert_eq!(v["reconciliation"]["delta"], "0", "{}", v["reconciliation"]);
    assert_eq!(
        num(&v["reconciliation"]["amount_fulfilled_at_sender"]),
        3 * num(&pk["fulfilled"])
    );
}

#[test]
fn loadgen_pay_through_ilpd() {
    let port = free_port();
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = format!(
        r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
listen = "127.0.0.1:{port}"
log_level = "warn"

[[accounts]]
id = "payer"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "payer-tok"
max_balance = 1000000000

[[accounts]]
id = "payee"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "payee-tok"
min_balance = -1000000000
"#
    );
    let _ilpd = ilpd_tests::ilpd::start(&config, listen, "ilpd-for-pay");
    let send = format!("btp+ws://payer:payer-tok@127.0.0.1:{port}/");
    let recv = format!("btp+ws://payee:payee-tok@127.0.0.1:{port}/");
    // One-shot: the receiver saw exactly the amount (1:1, same asset).
    let mut cmd = Command::new(bin_path("ilp-loadgen"));
    cmd.args([
        "pay", "--send", &send, "--recv", &recv, "--amount", "500", "-q",
    ]);
    let (s, p) = run_with_timeout(cmd, "lg-pay-ilpd", Duration::from_secs(30));
    let out = p.stdout_text();
    assert!(s.success(), "{out}{}", p.stderr_text());
    assert!(
        out.contains("payment to test.ilpd.payee: fulfilled, delivered 500"),
        "{out}"
    );
    // Chunked: 2,000 delivered through ilpd, every chunk seen on both ends.
    let mut cmd = Command::new(bin_path("ilp-loadgen"));
    cmd.args([
        "pay",
        "--send",
        &send,
        "--recv",
        &recv,
        "--chunked",
        "--amount",
        "2000",
        "--max-chunk",
        "100",
        "--deadline",
        "20s",
    ]);
    let (s, p) = run_with_timeout(cmd, "lg-pay-chunked-ilpd", Duration::from_secs(60));
    let out = p.stdout_text();
    assert!(s.success(), "{out}{}", p.stderr_text());
    assert!(out.contains("done — delivered"), "{out}");
    let incoming = out.matches("IncomingFulfill").count();
    assert!(incoming >= 20, "{out}");
    assert_eq!(incoming, out.matches("OutgoingFulfill").count(), "{out}");
}

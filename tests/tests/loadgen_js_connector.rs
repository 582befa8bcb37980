//! ilp-loadgen through the JavaScript reference connector (ilp-connector
//! 23.0.2, pinned in tests/interop), over BTP and over ILP-over-HTTP, with
//! exact reconciliation of the amounts sent and received at the loopback.

use ilpd_tests::js::JsConnector;
use ilpd_tests::{bin_path, free_ports, require_node, run_with_timeout, temp_dir};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

fn loadgen_json(label: &str, args: &[&str]) -> (std::process::ExitStatus, Value, ilpd_tests::Proc) {
    let file = temp_dir(label).join("report.json");
    let f = file.to_string_lossy().to_string();
    let mut cmd = Command::new(bin_path("ilp-loadgen"));
    cmd.args(args).args(["--json", &f, "-q"]);
    let (status, p) = run_with_timeout(cmd, label, Duration::from_secs(60));
    let v = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    if v.is_null() || !status.success() {
        p.dump();
    }
    (status, v, p)
}

fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => panic!("not a number: {v}"),
    }
}

fn check_reconciled(v: &Value, min_fulfilled: u64) {
    let rec = &v["reconciliation"];
    assert_eq!(rec["delta"], "0", "{rec}");
    assert_eq!(
        rec["amount_sent"], rec["amount_received_at_loopback"],
        "{rec}"
    );
    let ful = num(&v["packets"]["fulfilled"]);
    assert!(ful >= min_fulfilled, "fulfilled {ful}: {}", v["packets"]);
    assert_eq!(num(&v["packets"]["rejected"]), 0, "{}", v["packets"]);
    assert_eq!(num(&v["packets"]["lost"]), 0);
    assert_eq!(num(&v["packets"]["timed_out"]), 0);
}

#[test]
fn loadgen_through_js_connector_over_btp() {
    require_node();
    let p = free_ports(2);
    let cfg = json!({
        "ilpAddress": "test.jsc",
        "accounts": {
            "lgsend": { "relation": "child", "btpServer": { "port": p[0], "token": "send-tok" } },
            "lgrecv": { "relation": "child", "btpServer": { "port": p[1], "token": "recv-tok" } },
        }
    });
    let _jsc = JsConnector::start(&cfg, "jsc-loadgen-btp");
    let send = format!("btp+ws://lgsend:send-tok@127.0.0.1:{}/", p[0]);
    let recv = format!("btp+ws://lgrecv:recv-tok@127.0.0.1:{}/", p[1]);
    let (s, v, _p) = loadgen_json(
        "lg-jsc-btp",
        &[
            "run",
            "--send",
            &send,
            "--recv",
            &recv,
            "--duration",
            "3s",
            "--warmup",
            "500ms",
            "--window",
            "20",
            "--amount",
            "3",
            "--strict",
        ],
    );
    assert!(s.success(), "{s}");
    check_reconciled(&v, 100);
    // IL-DCP gave the receiver its address under the connector's.
    assert_eq!(v["receive_address"], "test.jsc.lgrecv");

    // A wrong token: a clear message naming the link, exit 1, no hang.
    let bad = format!("btp+ws://lgsend:nope@127.0.0.1:{}/", p[0]);
    let mut cmd = Command::new(bin_path("ilp-loadgen"));
    cmd.args([
        "run",
        "--send",
        &bad,
        "--recv",
        &recv,
        "--duration",
        "1s",
        "-q",
    ]);
    let (s, proc) = run_with_timeout(cmd, "lg-jsc-wrong-token", Duration::from_secs(30));
    assert_eq!(s.code(), Some(1));
    let err = proc.stderr_text();
    let link = format!("send link btp+ws://127.0.0.1:{}/ (account lgsend)", p[0]);
    assert!(err.contains(&link), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn loadgen_through_js_connector_over_http() {
    require_node();
    // p0: connector's port for the sender's POSTs; p1: connector's port for
    // the receiver account's own POSTs (IL-DCP); p2: our receiving server.
    let p = free_ports(3);
    let cfg = json!({
        "ilpAddress": "test.jsc",
        "accounts": {
            "lgsend": { "relation": "child", "http": {
                "port": p[0], "incomingToken": "in-send",
                "url": format!("http://127.0.0.1:{}/unused", p[2]), "outgoingToken": "unused" } },
            "lgrecv": { "relation": "child", "http": {
                "port": p[1], "incomingToken": "in-recv",
                "url": format!("http://127.0.0.1:{}/ilp", p[2]), "outgoingToken": "out-recv" } },
        }
    });
    let _jsc = JsConnector::start(&cfg, "jsc-loadgen-http");
    let send = format!("http://in-send@127.0.0.1:{}/", p[0]);
    let recv = format!("http://out-recv@127.0.0.1:{}/ilp", p[2]);
    let ildcp = format!("http://in-recv@127.0.0.1:{}/", p[1]);
    let (s, v, _p) = loadgen_json(
        "lg-jsc-http",
        &[
            "run",
            "--send",
            &send,
            "--recv",
            &recv,
            "--recv-ildcp",
            &ildcp,
            "--duration",
            "3s",
            "--warmup",
            "500ms",
            "--window",
            "1",
            "--conns",
            "4",
            "--amount",
            "5",
            "--strict",
        ],
    );
    assert!(s.success(), "{s}");
    check_reconciled(&v, 30);
    assert_eq!(v["receive_address"], "test.jsc.lgrecv");
}

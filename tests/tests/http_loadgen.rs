//! ilp-loadgen through ilpd over ILP-over-HTTP on both sides (keep-alive,
//! pipelined): every packet is accounted for on both sides of the
//! connector, with an outcome mix.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use ilpd_tests::{bin_path, free_ports, ilpd, run_with_timeout, temp_dir};
use serde_json::Value;

fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

#[test]
fn loadgen_over_http_through_ilpd_reconciles() {
    let p = free_ports(3);
    let listen: SocketAddr = ([127, 0, 0, 1], p[0]).into();
    let (http, recv) = (p[1], p[2]);
    let config = format!(
        r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
listen = "127.0.0.1:{}"
http_listen = "127.0.0.1:{http}"
threads = 2
pin_cores = false
log_level = "warn"

[[accounts]]
id = "lgsend"
relation = "child"
asset_code = "USD"
asset_scale = 9
link = "http"
incoming_token = "send-tok"

[[accounts]]
id = "lgrecv"
relation = "child"
asset_code = "USD"
asset_scale = 9
link = "http"
http_url = "http://127.0.0.1:{recv}/"
outgoing_token = "recv-tok"
"#,
        p[0]
    );
    let _node = ilpd::start(&config, listen, "ilpd-http-lg");
    let file = temp_dir("lg-http").join("run.json");
    let mut cmd = Command::new(bin_path("ilp-loadgen"));
    cmd.args([
        "run",
        "--send",
        &format!("http://send-tok@127.0.0.1:{http}/ilp"),
        "--recv",
        &format!("http://recv-tok@127.0.0.1:{recv}/"),
        "--recv-address",
        "test.ilpd.lgrecv",
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
        "--amount",
        "3",
        "--mix",
        "fulfill=90,reject:F99=6,wrong=4",
        "--seed",
        "7",
        "--no-pin",
        "--strict",
        "-q",
        "--json",
    ])
    .arg(&file);
    let (s, proc) = run_with_timeout(cmd, "lg-http", Duration::from_secs(60));
    if !s.success() {
        proc.dump();
    }
    assert!(s.success(), "{s}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let pk = &v["packets"];
    let rc = &v["receiver"];
    assert_eq!(num(&pk["sent"]), 20000, "{pk}");
    assert_eq!(num(&pk["lost"]), 0, "{pk}");
    assert_eq!(num(&pk["timed_out"]), 0, "{pk}");
    assert_eq!(num(&pk["unmatched_replies"]), 0, "{pk}");
    assert_eq!(num(&rc["prepares"]), 20000, "{rc}");
    assert_eq!(num(&pk["fulfilled"]), num(&rc["fulfilled"]), "{pk} {rc}");
    assert_eq!(
        num(&pk["rejected_by_code"]["F99"]),
        num(&rc["rejected_by_code"]["F99"]),
        "{pk} {rc}"
    );
    // Wrong fulfillments are caught by ilpd (F05), never passed on.
    let wrong = num(&rc["wrong_fulfillment_sent"]);
    assert!(wrong > 400, "{rc}");
    assert_eq!(num(&pk["wrong_fulfillment"]), 0, "{pk}");
    assert_eq!(
        num(&pk["rejected"]),
        num(&rc["rejected_by_code"]["F99"]) + wrong,
        "{pk} {rc}"
    );
    assert_eq!(v["reconciliation"]["delta"], "0", "{}", v["reconciliation"]);
    assert_eq!(
        num(&v["reconciliation"]["amount_fulfilled_at_sender"]),
        3 * num(&pk["fulfilled"])
    );
}

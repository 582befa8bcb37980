//! The Prometheus text the core renders: well-formed, and counting what
//! happened (packets by type and direction, rejects by code, balances,
//! in-flight, the latency histogram).

mod core_support;

use std::collections::HashMap;

use core_support::*;
use ilpd_engine::core::ErrorCode;

/// Parses the exposition format strictly enough to catch mistakes: every
/// sample's family has HELP and TYPE first, names and labels are
/// well-formed, values are numbers, no series appears twice.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut helped = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(helped.insert(name.to_string()), "HELP twice for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                typed.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice for {name}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(
            typed.contains_key(family) && helped.contains(family),
            "no HELP/TYPE before {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for kv in labels[1..labels.len() - 1].split("\",") {
                    let (k, v) = kv
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("label in {line}"));
                    assert!(
                        k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                        "{line}"
                    );
                    assert!(!v.trim_end_matches('"').contains('"'), "{line}");
                }
            }
        }
        assert!(
            samples.insert(series.to_string(), v).is_none(),
            "series twice: {series}"
        );
    }
    samples
}

#[test]
fn metrics_are_well_formed_and_count() {
    let mut h = Harness::base();
    let (ful, cond) = pair(1);
    let (_, a) = h.send(
        "alice",
        prepare(500, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    let (_, id, _) = forwarded(&a);
    let (_, a) = h.send("alice", prepare(5, T0_MS + 10_000, "g.none", &cond, b""));
    assert_own_reject(&a, ErrorCode::F02_UNREACHABLE);
    let (_, a) = h.send(
        "alice",
        prepare(5, T0_MS + 10_000, "test.net.bob", &cond, b""),
    );
    forwarded(&a); // stays pending
    h.advance_ms(2);
    h.reply("bob", id, fulfill(&ful, b""));
    fulfilled(&h.flush());
    h.shared.record_loop(0, 7);
    h.shared.record_loop(0, 3);

    let m = parse(&h.shared.render_metrics());
    let get = |s: &str| *m.get(s).unwrap_or_else(|| panic!("missing {s}"));
    assert_eq!(
        get(r#"ilpd_packets_total{account="alice",direction="in",type="prepare"}"#),
        3.0
    );
    assert_eq!(
        get(r#"ilpd_packets_total{account="bob",direction="out",type="prepare"}"#),
        2.0
    );
    assert_eq!(
        get(r#"ilpd_packets_total{account="bob",direction="in",type="fulfill"}"#),
        1.0
    );
    assert_eq!(
        get(r#"ilpd_packets_total{account="alice",direction="out",type="fulfill"}"#),
        1.0
    );
    assert_eq!(
        get(r#"ilpd_packets_total{account="alice",direction="out",type="reject"}"#),
        1.0
    );
    assert_eq!(
        get(r#"ilpd_rejects_sent_total{account="alice",code="F02"}"#),
        1.0
    );
    assert_eq!(get(r#"ilpd_account_balance{account="alice"}"#), 500.0);
    assert_eq!(get(r#"ilpd_account_balance{account="bob"}"#), -500.0);
    assert_eq!(
        get(r#"ilpd_account_reserved{account="alice",direction="incoming"}"#),
        5.0
    );
    assert_eq!(
        get(r#"ilpd_account_reserved{account="bob",direction="outgoing"}"#),
        5.0
    );
    assert_eq!(get(r#"ilpd_account_connections{account="carol"}"#), 1.0);
    assert_eq!(get(r#"ilpd_in_flight{worker="0"}"#), 1.0);
    assert_eq!(get(r#"ilpd_loop_turns_total{worker="0"}"#), 2.0);
    assert_eq!(get(r#"ilpd_loop_messages_total{worker="0"}"#), 10.0);
    assert_eq!(get(r#"ilpd_loop_messages_max{worker="0"}"#), 7.0);
    // One forwarded packet answered after 2 ms: in the 2.5 ms bucket, not the 1 ms one.
    assert_eq!(
        get(r#"ilpd_forward_latency_seconds_bucket{le="0.001"}"#),
        0.0
    );
    assert_eq!(
        get(r#"ilpd_forward_latency_seconds_bucket{le="0.0025"}"#),
        1.0
    );
    assert_eq!(
        get(r#"ilpd_forward_latency_seconds_bucket{le="+Inf"}"#),
        1.0
    );
    assert_eq!(get("ilpd_forward_latency_seconds_count"), 1.0);
    assert!((get("ilpd_forward_latency_seconds_sum") - 0.002).abs() < 1e-9);
    // Buckets never decrease.
    let mut buckets: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k
                .strip_prefix("ilpd_forward_latency_seconds_bucket{le=\"")?
                .strip_suffix("\"}")?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                },
                *v,
            ))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    assert_eq!(buckets.len(), 21);
}

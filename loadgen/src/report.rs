//! Output: the human table, `--json FILE` and `--hdr-log FILE`.

use serde_json::{json, Value};
use std::fmt::Write as _;

use crate::run::{RunConfig, RunResult, Target};
use crate::sender::Load;
use crate::stats::{fmt_int, fmt_ns, fmt_rate, Percentiles};

/// The commit the binary was built from.
pub const COMMIT: &str = env!("ILPD_LOADGEN_COMMIT");

/// Cores and CPU model of this machine.
pub fn machine() -> Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({ "cores": cores, "cpu_model": model, "os": std::env::consts::OS, "kernel": kernel })
}

/// The settings, as recorded in the JSON report.
pub fn settings(cfg: &RunConfig) -> Value {
    let (load, window, rate) = match cfg.load {
        Load::Closed { window } => ("closed", Some(window), None),
        Load::Open { rate } => ("open", None, Some(rate)),
    };
    let target = match &cfg.target {
        Target::Direct { http } => {
            json!({"kind": "direct", "transport": if *http {"http"} else {"btp"}})
        }
        Target::Connector { send, recv, .. } => json!({
            "kind": "connector",
            "send": send.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
            "receive": recv.to_string(),
        }),
    };
    json!({
        "target": target,
        "load": load,
        "window_per_connection": window,
        "target_rate": rate,
        "sender_threads": cfg.threads,
        "connections_per_link_per_thread": cfg.conns,
        "receiver_threads": cfg.recv_threads,
        "receiver_connections_per_thread": cfg.recv_conns,
        "duration_s": cfg.duration.as_secs_f64(),
        "warmup_s": cfg.warmup.as_secs_f64(),
        "packets": cfg.packets,
        "amount": cfg.amount,
        "min_destination_amount": cfg.min_dest.unwrap_or(cfg.amount),
        "data_size": cfg.data_size,
        "expiry_ms": cfg.expiry.as_millis() as u64,
        "destinations": cfg.destinations,
        "outcome_mix": cfg.mix,
        "seed": cfg.seed,
        "pinned": cfg.pin,
        "busy_poll": cfg.busy_poll,
        "receiver_stall": cfg.stall.map(|(n, d)| json!({"after": n, "ms": d.as_millis() as u64})),
    })
}

fn pct_json(p: &Percentiles) -> Value {
    json!({
        "count": p.count, "min": p.min, "mean": p.mean, "p50": p.p50, "p90": p.p90,
        "p99": p.p99, "p99_9": p.p99_9, "p99_99": p.p99_99, "max": p.max,
    })
}

/// Every figure plus the settings, machine and commit.
pub fn to_json(cfg: &RunConfig, r: &RunResult) -> Value {
    let s = &r.sender;
    let p = Percentiles::of(&s.hist);
    let rejected: serde_json::Map<String, Value> = s
        .rejected
        .sorted()
        .into_iter()
        .map(|(c, n)| (c, json!(n)))
        .collect();
    let recv_rejected: serde_json::Map<String, Value> = r
        .receiver
        .rejected
        .sorted()
        .into_iter()
        .map(|(c, n)| (c, json!(n)))
        .collect();
    let errors: Vec<Value> = s
        .errors
        .0
        .iter()
        .chain(r.receiver.errors.0.iter())
        .map(|(m, n)| json!({"message": m, "count": n}))
        .collect();
    let unconfirmed: Vec<Value> = r
        .unconfirmed
        .iter()
        .map(|u| json!({"condition": hex(&u.condition), "amount": u.amount.to_string()}))
        .collect();
    json!({
        "tool": "ilp-loadgen",
        "version": env!("CARGO_PKG_VERSION"),
        "commit": COMMIT,
        "machine": machine(),
        "settings": settings(cfg),
        "mode": cfg.mode_label(),
        "target": cfg.target_label(),
        "receive_address": r.receive_address,
        "sha256_impl": r.sha256_impl,
        "aborted": r.aborted,
        "measured_seconds": r.measured_secs,
        "total_seconds": r.total_secs,
        "packets": {
            "sent": s.sent,
            "fulfilled": s.fulfilled,
            "rejected": s.rejected.total(),
            "rejected_by_code": rejected,
            "wrong_fulfillment": s.wrong_fulfillment,
            "timed_out": s.timed_out,
            "lost": s.lost,
            "transport_errors": s.transport_errors,
            "unmatched_replies": s.unmatched,
        },
        "throughput": {
            "fulfilled_per_s": r.throughput(),
            "sent_per_s": r.send_rate(),
            "target_per_s": match cfg.load { Load::Open { rate } => Some(rate), _ => None },
        },
        "latency_ns": pct_json(&p),
        "latency_of": "fulfilled packets; from intended send time (open loop) or actual send time (closed loop)",
        "reconciliation": {
            "packets_sent": s.total_sent_packets,
            "amount_sent": s.total_amount_sent.to_string(),
            "amount_fulfilled_at_sender": s.total_amount_fulfilled.to_string(),
            "amount_received_at_loopback": r.receiver.amount_fulfilled.to_string(),
            "delta": r.reconciliation_delta().to_string(),
            "unconfirmed": {
                "count": r.unconfirmed.len(),
                "amount": r.unconfirmed_amount().to_string(),
                "packets": unconfirmed,
            },
        },
        "receiver": {
            "prepares": r.receiver.prepares,
            "fulfilled": r.receiver.fulfilled,
            "rejected_by_code": recv_rejected,
            "wrong_fulfillment_sent": r.receiver.wrong_fulfillment_sent,
            "no_answer": r.receiver.no_answer,
            "check_failures": r.receiver.check_failures.0.iter().map(|(m, n)| json!({"reason": m, "count": n})).collect::<Vec<_>>(),
        },
        "errors": errors,
    })
}

/// Lower-case hex.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The final human table.
pub fn table(cfg: &RunConfig, r: &RunResult) -> String {
    let s = &r.sender;
    let p = Percentiles::of(&s.hist);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "ilp-loadgen {} (commit {COMMIT})",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(o, "  target        {}", cfg.target_label());
    let _ = writeln!(o, "  address       {}", r.receive_address);
    let _ = writeln!(o, "  mode          {}", cfg.mode_label());
    let _ = writeln!(
        o,
        "  threads       {} sender x {} conn, {} receiver{}{}",
        cfg.threads,
        cfg.conns * cfg.send_link_count(),
        cfg.recv_threads,
        if cfg.pin { ", pinned" } else { "" },
        if cfg.busy_poll { ", busy-polling" } else { "" }
    );
    let _ = writeln!(
        o,
        "  packets       amount {}, data {} B, expiry {} ms, {} destination(s), mix {}",
        cfg.amount,
        cfg.data_size,
        cfg.expiry.as_millis(),
        cfg.destinations,
        cfg.mix
    );
    let _ = writeln!(
        o,
        "  duration      {:.2} s measured after {:.1} s warm-up (SHA-256: {})",
        r.measured_secs,
        cfg.warmup.as_secs_f64(),
        r.sha256_impl
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "  sent          {:>14}", fmt_int(s.sent as u128));
    let _ = writeln!(o, "  fulfilled     {:>14}", fmt_int(s.fulfilled as u128));
    let _ = writeln!(
        o,
        "  rejected      {:>14}",
        fmt_int(s.rejected.total() as u128)
    );
    for (code, n) in s.rejected.sorted() {
        let _ = writeln!(o, "    {code}         {:>14}", fmt_int(n as u128));
    }
    if s.wrong_fulfillment > 0 {
        let _ = writeln!(
            o,
            "  wrong fulfil. {:>14}",
            fmt_int(s.wrong_fulfillment as u128)
        );
    }
    let _ = writeln!(o, "  timed out     {:>14}", fmt_int(s.timed_out as u128));
    if s.lost > 0 {
        let _ = writeln!(
            o,
            "  unanswered    {:>14}  (links failed or run ended)",
            fmt_int(s.lost as u128)
        );
    }
    if s.transport_errors > 0 {
        let _ = writeln!(
            o,
            "  link errors   {:>14}",
            fmt_int(s.transport_errors as u128)
        );
    }
    let _ = writeln!(o, "  unmatched     {:>14}", fmt_int(s.unmatched as u128));
    let _ = writeln!(o);
    let target = match cfg.load {
        Load::Open { rate } => format!(" (target {})", fmt_rate(rate)),
        Load::Closed { .. } => String::new(),
    };
    let _ = writeln!(
        o,
        "  throughput    {} fulfilled, {} sent{target}",
        fmt_rate(r.throughput()),
        fmt_rate(r.send_rate())
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  latency       p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
        fmt_ns(p.p50),
        fmt_ns(p.p90),
        fmt_ns(p.p99),
        fmt_ns(p.p99_9),
        fmt_ns(p.p99_99),
        fmt_ns(p.max)
    );
    let _ = writeln!(
        o,
        "                (fulfilled packets, {}; {} samples)",
        match cfg.load {
            Load::Open { .. } => "from intended send time, corrected for coordinated omission",
            Load::Closed { .. } => "from actual send time",
        },
        fmt_int(p.count as u128)
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  reconcile     sent amount {}, fulfilled at sender {}, received at loopback {}, delta {}",
        fmt_int(s.total_amount_sent),
        fmt_int(s.total_amount_fulfilled),
        fmt_int(r.receiver.amount_fulfilled),
        r.reconciliation_delta()
    );
    if !r.unconfirmed.is_empty() {
        let _ = writeln!(
            o,
            "  unconfirmed   {} packets, amount {}: fulfilled at loopback, Fulfill never came back",
            fmt_int(r.unconfirmed.len() as u128),
            fmt_int(r.unconfirmed_amount())
        );
    }
    if let Some(why) = &r.aborted {
        let _ = writeln!(o);
        let _ = writeln!(o, "  ABORTED       {why}");
    }
    let errs: Vec<_> = s
        .errors
        .0
        .iter()
        .chain(r.receiver.errors.0.iter())
        .collect();
    if !errs.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "  errors");
        for (m, n) in errs {
            let _ = writeln!(o, "    {n:>8} x {m}");
        }
    }
    o
}

/// Writes the latency histogram as an HdrHistogram interval log (values
/// in nanoseconds), readable by HistogramLogProcessor and hdrhistogram crates.
pub fn write_hdr_log(path: &std::path::Path, cfg: &RunConfig, r: &RunResult) -> Result<(), String> {
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    use hdrhistogram::serialization::V2DeflateSerializer;
    let mut buf = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    {
        let now = std::time::SystemTime::now();
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "ilp-loadgen {} commit {COMMIT}",
                env!("CARGO_PKG_VERSION")
            ))
            .add_comment(&format!("{}; {}", cfg.mode_label(), cfg.target_label()))
            .add_comment("latency of fulfilled packets in nanoseconds")
            .with_start_time(now)
            .begin_log_with(&mut buf, &mut ser)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        w.write_histogram(
            &r.sender.hist,
            std::time::Duration::ZERO,
            std::time::Duration::from_secs_f64(r.measured_secs),
            Tag::new("latency"),
        )
        .map_err(|e| format!("{}: {e:?}", path.display()))?;
    }
    std::fs::write(path, buf).map_err(|e| format!("{}: {e}", path.display()))
}

/// The settings of a STREAM run, as recorded in the JSON report.
pub fn stream_settings(cfg: &crate::stream::StreamConfig) -> Value {
    use crate::spsp::Payee;
    let payee = match &cfg.payee {
        Payee::Spsp { url } => json!({"kind": "spsp", "url": url}),
        Payee::Direct(r) => json!({"kind": "direct", "destination": r.destination_account}),
    };
    json!({
        "target": {
            "kind": "stream",
            "send": cfg.send.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
            "payee": payee,
        },
        "load": "payments",
        "amount": cfg.amount,
        "payments": cfg.payments,
        "concurrency": cfg.concurrency,
        "duration_s": cfg.duration.map(|d| d.as_secs_f64()),
        "drain_s": cfg.drain.as_secs_f64(),
        "connections_per_link": cfg.conns,
        "packets_in_flight_per_payment": cfg.packets_in_flight,
        "max_packet_amount": cfg.max_packet_amount,
        "slippage_bp": cfg.slippage_bp,
        "expiry_ms": cfg.expiry.as_millis() as u64,
        "spsp_threads": cfg.spsp_threads,
    })
}

/// Every figure of a STREAM run plus the settings, machine and commit
/// (the same top-level conventions as [`to_json`]).
pub fn stream_to_json(cfg: &crate::stream::StreamConfig, r: &crate::stream::StreamResult) -> Value {
    let by_code: serde_json::Map<String, Value> = r
        .packets
        .rejected
        .sorted()
        .into_iter()
        .map(|(c, n)| (c, json!(n)))
        .collect();
    let failures: Vec<Value> = r
        .failures
        .0
        .iter()
        .map(|(m, n)| json!({"reason": m, "count": n}))
        .collect();
    let errors: Vec<Value> = r
        .errors
        .0
        .iter()
        .map(|(m, n)| json!({"message": m, "count": n}))
        .collect();
    json!({
        "tool": "ilp-loadgen",
        "version": env!("CARGO_PKG_VERSION"),
        "commit": COMMIT,
        "machine": machine(),
        "settings": stream_settings(cfg),
        "mode": "stream",
        "target": cfg.target_label(),
        "receiver": {
            "destination": r.destination,
            "asset_code": r.receiver_asset.as_ref().map(|a| a.0.clone()),
            "asset_scale": r.receiver_asset.as_ref().map(|a| a.1),
            "probed_rate": r.rate.map(|(n, d)| json!({"destination": n, "source": d})),
        },
        "source_address": r.source_address,
        "aborted": r.aborted,
        "elapsed_seconds": r.elapsed_secs,
        "payments": {
            "started": r.started,
            "completed": r.completed,
            "failed": r.failed,
            "failures": failures,
        },
        "amounts": {
            "requested": r.amount_requested.to_string(),
            "sent": r.amount_sent.to_string(),
            "delivered": r.amount_delivered.to_string(),
        },
        "packets": {
            "sent": r.packets.sent,
            "fulfilled": r.packets.fulfilled,
            "rejected": r.packets.rejected.total(),
            "rejected_by_code": by_code,
            "wrong_fulfillment": r.packets.wrong_fulfillment,
            "timed_out": r.packets.timed_out,
            "lost": r.packets.lost,
            "transport_errors": r.packets.transport_errors,
            "unmatched_replies": r.packets.unmatched,
        },
        "throughput": {
            "payments_per_s": r.payments_per_s(),
            "packets_per_s": r.packets_per_s(),
            "fulfilled_packets_per_s": r.fulfilled_per_s(),
        },
        "latency_ns": {
            "payment": pct_json(&Percentiles::of(&r.payment_hist)),
            "spsp_query": pct_json(&Percentiles::of(&r.spsp_hist)),
            "packet": pct_json(&Percentiles::of(&r.packet_hist)),
        },
        "latency_of": {
            "payment": "completed payments, from the start of their SPSP query (or first Prepare) to the reply to their close",
            "spsp_query": "each SPSP GET, connect to body read",
            "packet": "every answered Prepare (probes, money, closes), from its write to its reply",
        },
        "errors": errors,
    })
}

/// The human table of a STREAM run.
pub fn stream_table(cfg: &crate::stream::StreamConfig, r: &crate::stream::StreamResult) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "ilp-loadgen {} (commit {COMMIT})",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(o, "  target        {}", cfg.target_label());
    if let Some(d) = &r.destination {
        let asset = r
            .receiver_asset
            .as_ref()
            .map(|(c, s)| format!(", asset {c} scale {s}"))
            .unwrap_or_default();
        let rate = r
            .rate
            .map(|(n, d)| format!(", probed rate {n}/{d}"))
            .unwrap_or_default();
        let _ = writeln!(o, "  receiver      {d} (first payment){asset}{rate}");
    }
    if let Some(a) = &r.source_address {
        let _ = writeln!(o, "  source        {a}");
    }
    let _ = writeln!(o, "  mode          stream: {}", cfg.load_label());
    let _ = writeln!(o, "  elapsed       {:.2} s", r.elapsed_secs);
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  payments      {} started, {} completed, {} failed",
        fmt_int(r.started as u128),
        fmt_int(r.completed as u128),
        fmt_int(r.failed as u128)
    );
    let _ = writeln!(
        o,
        "  amounts       requested {}, sent {}, delivered {} (receiver's counts)",
        fmt_int(r.amount_requested),
        fmt_int(r.amount_sent),
        fmt_int(r.amount_delivered)
    );
    let p = &r.packets;
    let _ = writeln!(o, "  packets sent  {:>14}", fmt_int(p.sent as u128));
    let _ = writeln!(o, "  fulfilled     {:>14}", fmt_int(p.fulfilled as u128));
    let _ = writeln!(
        o,
        "  rejected      {:>14}",
        fmt_int(p.rejected.total() as u128)
    );
    for (code, n) in p.rejected.sorted() {
        let _ = writeln!(o, "    {code}         {:>14}", fmt_int(n as u128));
    }
    for (label, n) in [
        ("wrong fulfil.", p.wrong_fulfillment),
        ("timed out    ", p.timed_out),
        ("unanswered   ", p.lost),
        ("link errors  ", p.transport_errors),
        ("unmatched    ", p.unmatched),
    ] {
        if n > 0 {
            let _ = writeln!(o, "  {label} {:>14}", fmt_int(n as u128));
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  throughput    {:.1} payments/s, {} packets answered ({} fulfilled)",
        r.payments_per_s(),
        fmt_rate(r.packets_per_s()),
        fmt_rate(r.fulfilled_per_s())
    );
    let _ = writeln!(o);
    for (label, h, what) in [
        (
            "per payment",
            &r.payment_hist,
            "completed payments, SPSP query start -> close answered",
        ),
        ("per SPSP GET", &r.spsp_hist, "each SPSP query"),
        (
            "per packet",
            &r.packet_hist,
            "every answered Prepare, write -> reply",
        ),
    ] {
        let q = Percentiles::of(h);
        if q.count == 0 {
            continue;
        }
        let _ = writeln!(
            o,
            "  {label:<13} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({what}; {} samples)",
            fmt_ns(q.p50),
            fmt_ns(q.p90),
            fmt_ns(q.p99),
            fmt_ns(q.p99_9),
            fmt_ns(q.max),
            fmt_int(q.count as u128)
        );
    }
    if let Some(why) = &r.aborted {
        let _ = writeln!(o);
        let _ = writeln!(o, "  ABORTED       {why}");
    }
    if !r.failures.0.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "  failed payments");
        for (m, n) in &r.failures.0 {
            let _ = writeln!(o, "    {n:>8} x {m}");
        }
    }
    if !r.errors.0.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "  errors");
        for (m, n) in &r.errors.0 {
            let _ = writeln!(o, "    {n:>8} x {m}");
        }
    }
    o
}

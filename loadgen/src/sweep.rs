//! Rate sweep: open-loop runs at increasing rates; the answer is the
//! highest rate that was achieved (within 5%) with p99 at or under a bound.

use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

use crate::report;
use crate::run::{self, RunConfig};
use crate::sender::Load;
use crate::stats::{fmt_ns, fmt_rate, Percentiles};

/// One point of the sweep.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Point {
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub fulfilled: u64,
    pub timed_out: u64,
    pub lost: u64,
    pub latency_ns: Percentiles,
    pub meets_bound: bool,
}

/// Runs the sweep; stops at the first rate that misses the bound unless `all`.
pub fn sweep(
    base: &RunConfig,
    rates: &[f64],
    p99_bound: Duration,
    all: bool,
    mut on_point: impl FnMut(&Point),
) -> Result<Vec<Point>, String> {
    let mut points = Vec::new();
    for &rate in rates {
        let mut cfg = base.clone();
        cfg.load = Load::Open { rate };
        cfg.progress = false;
        let r = run::run(&cfg)?;
        let p = Percentiles::of(&r.sender.hist);
        let achieved = r.throughput();
        let meets = p.count > 0
            && p.p99 <= p99_bound.as_nanos() as u64
            && achieved >= 0.95 * rate
            && r.sender.lost == 0
            && r.sender.timed_out == 0;
        let point = Point {
            target_rate: rate,
            achieved_rate: achieved,
            fulfilled: r.sender.fulfilled,
            timed_out: r.sender.timed_out,
            lost: r.sender.lost,
            latency_ns: p,
            meets_bound: meets,
        };
        on_point(&point);
        points.push(point);
        if run::interrupted().load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        if !meets && !all {
            break;
        }
    }
    Ok(points)
}

/// The highest rate that met the bound, if any.
pub fn best(points: &[Point]) -> Option<&Point> {
    points
        .iter()
        .filter(|p| p.meets_bound)
        .max_by(|a, b| a.target_rate.total_cmp(&b.target_rate))
}

/// `ilp-loadgen sweep`.
pub fn main(
    base: &RunConfig,
    rates: &[f64],
    p99_bound: Duration,
    all: bool,
    json_path: Option<&std::path::Path>,
) -> ExitCode {
    println!(
        "ilp-loadgen sweep: {} ; p99 bound {}",
        base.target_label(),
        fmt_ns(p99_bound.as_nanos() as u64)
    );
    println!(
        "{:>14} {:>14} {:>10} {:>10} {:>10} {:>10} {:>10}  ok",
        "target", "achieved", "p50", "p90", "p99", "p99.9", "max"
    );
    let points = match sweep(base, rates, p99_bound, all, |p| {
        let l = &p.latency_ns;
        println!(
            "{:>14} {:>14} {:>10} {:>10} {:>10} {:>10} {:>10}  {}",
            fmt_rate(p.target_rate),
            fmt_rate(p.achieved_rate),
            fmt_ns(l.p50),
            fmt_ns(l.p90),
            fmt_ns(l.p99),
            fmt_ns(l.p99_9),
            fmt_ns(l.max),
            if p.meets_bound { "yes" } else { "no" }
        );
    }) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match best(&points) {
        Some(b) => println!(
            "highest rate meeting p99 <= {}: {}",
            fmt_ns(p99_bound.as_nanos() as u64),
            fmt_rate(b.target_rate)
        ),
        None => println!("no rate met p99 <= {}", fmt_ns(p99_bound.as_nanos() as u64)),
    }
    if let Some(path) = json_path {
        let v = json!({
            "tool": "ilp-loadgen sweep",
            "commit": report::COMMIT,
            "machine": report::machine(),
            "settings": report::settings(base),
            "target": base.target_label(),
            "p99_bound_ns": p99_bound.as_nanos() as u64,
            "best_rate": best(&points).map(|p| p.target_rate),
            "points": points,
        });
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&v).unwrap_or_default()) {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

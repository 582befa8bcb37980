//! Crash torture for ilpd's durable ledger: kill -9 under load, restart on
//! the same data dir, and check that the balances account for every
//! packet, cycle after cycle.
//!
//! One ilpd (`--durability fsync`, data dir in a temp dir) with the load
//! generator's two accounts (sender and receiver, same asset and scale).
//! Each cycle: ilp-loadgen drives it open-loop with an outcome mix
//! (fulfill, reject, wrong fulfillment, no answer); after a random delay
//! (seeded PRNG; `LEDGER_CRASH_SEED=N` repeats a run) ilpd is killed with
//! SIGKILL; loadgen stops on its own and writes its JSON; ilpd restarts on
//! the same data dir and writes `reports/recovery-<G>.json`. With S and R
//! the sender's and the receiver's balances, F_s the amount whose Fulfills
//! reached loadgen's sender this cycle, U loadgen's unconfirmed packets
//! (fulfilled at its receiver, Fulfill never back at its sender) and A the
//! report's `outcome_unknown` conditions:
//!
//! - every condition in U is in the report (`outcome_unknown` or
//!   `delivery_unknown`): nothing is lost without a trace;
//! - S_now = S_before + F_s + (amounts of U not in A: settled at ilpd);
//! - R_now = R_before - the same (one asset, rate 1:1);
//! - the metrics endpoint shows the same balances, and nothing reserved.
//!
//! It ends with a clean SIGTERM, and one more start that must find the
//! same balances. `LEDGER_CRASH_DURABILITY=os` runs it with that mode
//! (`none` must fail: balances are not kept).

use ilpd_tests::btp_client::http_get;
use ilpd_tests::{bin_path, free_ports, temp_dir, wait_for_port, Proc};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CYCLES: usize = 25;
/// Past this, no new cycle starts (the test must stay well under 3 min).
const TIME_BUDGET: Duration = Duration::from_secs(140);
const MIN_CYCLES: usize = 20;
const SEND: &str = "loadgen-send";
const RECV: &str = "loadgen-recv";
const SEND_TOKEN: &str = "crash-send-token";
const RECV_TOKEN: &str = "crash-recv-token";
const AMOUNT: u64 = 3;
const RATE: &str = "20000";
const MIX: &str = "fulfill=70,reject:F99=10,wrong=10,noanswer=10";

/// SplitMix64: small, seeded, good enough to pick delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// An integer in a JSON value that may be a number or a decimal string.
fn int(v: &Value) -> i128 {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .unwrap_or_else(|| panic!("not an integer: {v}")),
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not an integer: {v}")),
        Value::Null => 0,
        _ => panic!("not an integer: {v}"),
    }
}

fn read_json(path: &Path) -> Option<Value> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

struct Node {
    durability: String,
    config: PathBuf,
    data: PathBuf,
    listen: SocketAddr,
    metrics: SocketAddr,
}

impl Node {
    /// Starts ilpd on the data dir and waits until it listens.
    fn start(&self, label: &str) -> Proc {
        let mut cmd = Command::new(bin_path("ilpd"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--durability")
            .arg(&self.durability);
        let mut p = Proc::spawn(cmd, label);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = p.try_wait() {
                p.dump();
                panic!("[{label}] ilpd exited during start-up: {status}");
            }
            if wait_for_port(self.listen, Duration::from_millis(100)) {
                return p;
            }
            if Instant::now() > deadline {
                p.dump();
                panic!(
                    "[{label}] ilpd did not listen on {} within 20 s",
                    self.listen
                );
            }
        }
    }

    /// The recovery report with the largest generation (waits for one
    /// newer than `after`).
    fn newest_report(&self, after: i128) -> (i128, Value, PathBuf) {
        let dir = self.data.join("reports");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut best: Option<(i128, PathBuf)> = None;
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let g = name
                    .strip_prefix("recovery-")
                    .and_then(|r| r.strip_suffix(".json"))
                    .and_then(|g| g.parse::<i128>().ok());
                if let Some(g) = g {
                    if best.as_ref().is_none_or(|b| g > b.0) {
                        best = Some((g, e.path()));
                    }
                }
            }
            if let Some((g, path)) = best {
                if g > after {
                    if let Some(v) = read_json(&path) {
                        return (g, v, path);
                    }
                }
            }
            if Instant::now() > deadline {
                let after = if after == i128::MIN {
                    "(none yet)".to_string()
                } else {
                    after.to_string()
                };
                panic!(
                    "no recovery report newer than generation {after} in {} within 10 s (files: {:?})",
                    dir.display(),
                    std::fs::read_dir(&dir)
                        .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (balance, reserved amounts) of an account from /metrics.
    fn metrics(&self, account: &str) -> (i128, Vec<(String, i128)>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            match http_get(self.metrics, "/metrics") {
                Ok((200, body)) => break body,
                other if Instant::now() > deadline => {
                    panic!("GET http://{}/metrics: {other:?}", self.metrics)
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let label = format!("account=\"{account}\"");
        let mut balance = None;
        let mut reserved = Vec::new();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = l.rsplit_once(' ') else {
                continue;
            };
            if !key.contains(&label) {
                continue;
            }
            let value: i128 = value
                .parse()
                .unwrap_or_else(|_| panic!("metrics line {l:?}: value is not an integer"));
            if key.starts_with("ilpd_account_balance{") {
                balance = Some(value);
            } else if key.starts_with("ilpd_account_reserved{") {
                reserved.push((key.to_string(), value));
            }
        }
        let balance = balance.unwrap_or_else(|| {
            panic!("no ilpd_account_balance for {account} in /metrics:\n{text}")
        });
        (balance, reserved)
    }
}

fn kill9(p: &mut Proc) {
    let _ = Command::new("kill")
        .args(["-KILL", &p.id().to_string()])
        .status();
    if p.wait_timeout(Duration::from_secs(10)).is_none() {
        panic!("[{}] ilpd did not die of SIGKILL", p.label());
    }
}

/// What one loadgen run reported.
struct LoadgenRun {
    exit: Option<i32>,
    sent: i128,
    fulfilled_amount: i128,
    /// condition (lower-case hex) -> amount as sent.
    unconfirmed: HashMap<String, i128>,
    aborted: String,
}

fn parse_loadgen(v: &Value, exit: Option<i32>) -> LoadgenRun {
    let rc = &v["reconciliation"];
    let u = &rc["unconfirmed"];
    let packets = u["packets"]
        .as_array()
        .unwrap_or_else(|| panic!("loadgen JSON has no reconciliation.unconfirmed.packets: {rc}"));
    let unconfirmed: HashMap<String, i128> = packets
        .iter()
        .map(|p| {
            (
                p["condition"].as_str().unwrap_or_default().to_lowercase(),
                int(&p["amount"]),
            )
        })
        .collect();
    assert_eq!(unconfirmed.len() as i128, int(&u["count"]), "{u}");
    assert_eq!(unconfirmed.values().sum::<i128>(), int(&u["amount"]), "{u}");
    LoadgenRun {
        exit,
        sent: int(&rc["packets_sent"]),
        fulfilled_amount: int(&rc["amount_fulfilled_at_sender"]),
        unconfirmed,
        aborted: v["aborted"].as_str().unwrap_or("").to_string(),
    }
}

/// The report's balances and in-doubt conditions.
struct Recovery {
    generation: i128,
    send: i128,
    recv: i128,
    outcome_unknown: HashSet<String>,
    delivery_unknown: HashSet<String>,
}

fn parse_report(g: i128, v: &Value, path: &Path) -> Recovery {
    assert_eq!(
        int(&v["generation"]),
        g,
        "{}: generation field differs from the file name",
        path.display()
    );
    let balances = v["balances"]
        .as_object()
        .unwrap_or_else(|| panic!("{}: no balances object: {v}", path.display()));
    let mut outcome_unknown = HashSet::new();
    let mut delivery_unknown = HashSet::new();
    for e in v["in_doubt"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no in_doubt array: {v}", path.display()))
    {
        let cond = e["condition"].as_str().unwrap_or_default().to_lowercase();
        assert_eq!(cond.len(), 64, "{}: bad condition in {e}", path.display());
        match e["kind"].as_str() {
            Some("outcome_unknown") => {
                assert_eq!(e["account"], RECV, "{}: {e}", path.display());
                assert_eq!(e["from_account"], SEND, "{}: {e}", path.display());
                outcome_unknown.insert(cond);
            }
            Some("delivery_unknown") => {
                assert_eq!(e["account"], SEND, "{}: {e}", path.display());
                assert_eq!(e["to_account"], RECV, "{}: {e}", path.display());
                delivery_unknown.insert(cond);
            }
            _ => panic!("{}: unknown in_doubt kind: {e}", path.display()),
        }
    }
    Recovery {
        generation: g,
        send: balances.get(SEND).map_or(0, int),
        recv: balances.get(RECV).map_or(0, int),
        outcome_unknown,
        delivery_unknown,
    }
}

/// Checks the balances of a fresh start against the metrics endpoint.
fn check_metrics(node: &Node, rec: &Recovery, when: &str) {
    for (account, want) in [(SEND, rec.send), (RECV, rec.recv)] {
        let (balance, reserved) = node.metrics(account);
        assert_eq!(
            balance, want,
            "{when}: /metrics balance of {account} differs from the recovery report"
        );
        assert!(
            reserved.iter().all(|r| r.1 == 0),
            "{when}: {account} has reserved amounts after a restart: {reserved:?}"
        );
    }
}

#[test]
fn ledger_survives_kill_9_under_load() {
    let ilpd = bin_path("ilpd");
    let help = Command::new(&ilpd)
        .arg("--help")
        .output()
        .expect("run ilpd --help");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("--data-dir"),
        "{} --help lists no --data-dir: this ilpd has no durable ledger",
        ilpd.display()
    );
    let seed = std::env::var("LEDGER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("ledger_crash: seed {seed} (repeat with LEDGER_CRASH_SEED={seed})");
    let mut rng = Rng(seed);

    let root = temp_dir("ledger-crash");
    let ports = free_ports(2);
    let durability = std::env::var("LEDGER_CRASH_DURABILITY").unwrap_or_else(|_| "fsync".into());
    let node = Node {
        durability,
        config: root.join("ilpd.toml"),
        data: root.join("data"),
        listen: ([127, 0, 0, 1], ports[0]).into(),
        metrics: ([127, 0, 0, 1], ports[1]).into(),
    };
    std::fs::write(
        &node.config,
        format!(
            r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
listen = "{listen}"
metrics_addr = "{metrics}"
threads = 2
log_level = "warn"

[[accounts]]
id = "{SEND}"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "{SEND_TOKEN}"
max_balance = 9000000000000000000

[[accounts]]
id = "{RECV}"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "{RECV_TOKEN}"
min_balance = -9000000000000000000
"#,
            listen = node.listen,
            metrics = node.metrics,
        ),
    )
    .expect("write ilpd config");
    println!(
        "ledger_crash: data dir {}, durability {} ({} cycles, kill after 200-1500 ms of {MIX} at {RATE}/s)",
        node.data.display(),
        node.durability,
        CYCLES
    );

    let started = Instant::now();
    let mut proc = node.start("ilpd start 0");
    let (g, v, path) = node.newest_report(i128::MIN);
    let mut rec = parse_report(g, &v, &path);
    check_metrics(&node, &rec, "first start");
    println!(
        "start 0: generation {}, S {}, R {}, in doubt {}",
        rec.generation,
        rec.send,
        rec.recv,
        rec.outcome_unknown.len() + rec.delivery_unknown.len()
    );
    let (s0, r0) = (rec.send, rec.recv);
    let mut totals = (0i128, 0i128, 0usize, 0usize); // F_s, settled U, |U|, cycles with |U| > 0
    let mut cycles = 0;
    let send_url = format!("btp+ws://{SEND}:{SEND_TOKEN}@{}/", node.listen);
    let recv_url = format!("btp+ws://{RECV}:{RECV_TOKEN}@{}/", node.listen);
    while cycles < CYCLES && started.elapsed() < TIME_BUDGET {
        cycles += 1;
        let c = cycles;
        let json = root.join(format!("loadgen-{c}.json"));
        let lg_seed = rng.next().to_string();
        let delay = Duration::from_millis(rng.range(200, 1500));
        let mut cmd = Command::new(bin_path("ilp-loadgen"));
        cmd.args([
            "run",
            "--send",
            &send_url,
            "--recv",
            &recv_url,
            "--rate",
            RATE,
            "--conns",
            "2",
            "--warmup",
            "0s",
            "--duration",
            "60s",
            "--amount",
            &AMOUNT.to_string(),
            "--mix",
            MIX,
            "--seed",
            &lg_seed,
            "--no-pin",
            "-q",
            "--json",
        ])
        .arg(&json);
        let mut lg = Proc::spawn(cmd, &format!("loadgen cycle {c}"));
        lg.close_stdin();
        std::thread::sleep(delay);
        if let Some(s) = lg.try_wait() {
            lg.dump();
            panic!("cycle {c}: loadgen exited ({s}) before ilpd was killed");
        }
        kill9(&mut proc);
        let status = match lg.wait_timeout(Duration::from_secs(20)) {
            Some(s) => s,
            None => {
                lg.dump();
                panic!("cycle {c}: loadgen still running 20 s after ilpd was killed");
            }
        };
        let lv = read_json(&json).unwrap_or_else(|| {
            lg.dump();
            panic!(
                "cycle {c}: loadgen ({status}) wrote no JSON report to {}",
                json.display()
            )
        });
        let run = parse_loadgen(&lv, status.code());
        if !matches!(run.exit, Some(1) | Some(3)) || run.aborted.is_empty() {
            lg.dump();
            panic!(
                "cycle {c}: loadgen should report an aborted run (exit 3, or 1 if it never started), got exit {:?}, aborted {:?}",
                run.exit, run.aborted
            );
        }

        // Restart on the same data dir; the killed process's logs are kept
        // (and printed) if a check below fails.
        let dead = std::mem::replace(&mut proc, node.start(&format!("ilpd start {c}")));
        let (g, v, path) = node.newest_report(rec.generation);
        let now = parse_report(g, &v, &path);
        let settled_u: i128 = run
            .unconfirmed
            .iter()
            .filter(|(cond, _)| !now.outcome_unknown.contains(*cond))
            .map(|(_, a)| *a)
            .sum();
        let in_a = run
            .unconfirmed
            .keys()
            .filter(|k| now.outcome_unknown.contains(*k))
            .count();
        let in_d = run
            .unconfirmed
            .keys()
            .filter(|k| now.delivery_unknown.contains(*k))
            .count();
        println!(
            "cycle {c:>2}: kill after {:>4} ms, loadgen exit {:?}, sent {:>6}, F_s {:>6}, U {} (amount {}, {in_a} outcome_unknown, {in_d} delivery_unknown, settled {settled_u}), report G{} in doubt {}+{}, S {} -> {}, R {} -> {}",
            delay.as_millis(),
            run.exit,
            run.sent,
            run.fulfilled_amount,
            run.unconfirmed.len(),
            run.unconfirmed.values().sum::<i128>(),
            now.generation,
            now.outcome_unknown.len(),
            now.delivery_unknown.len(),
            rec.send,
            now.send,
            rec.recv,
            now.recv,
        );
        let ctx = format!(
            "cycle {c} (seed {seed}, loadgen seed {lg_seed}, kill after {} ms, report {}, loadgen JSON {})",
            delay.as_millis(),
            path.display(),
            json.display()
        );
        assert_eq!(
            now.generation,
            rec.generation + 1,
            "{ctx}: the generation grows by one per start"
        );
        let lost: Vec<&String> = run
            .unconfirmed
            .keys()
            .filter(|k| !now.outcome_unknown.contains(*k) && !now.delivery_unknown.contains(*k))
            .collect();
        assert!(
            lost.is_empty(),
            "{ctx}: {} unconfirmed packets (fulfilled at loadgen's receiver, Fulfill never back) are not in the recovery report's in_doubt: {lost:?}",
            lost.len()
        );
        let charged = run.fulfilled_amount + settled_u;
        assert_eq!(
            now.send,
            rec.send + charged,
            "{ctx}: sender balance: before {}, + F_s {} + unconfirmed settled at ilpd {settled_u} = {}, report says {}",
            rec.send,
            run.fulfilled_amount,
            rec.send + charged,
            now.send
        );
        assert_eq!(
            now.recv,
            rec.recv - charged,
            "{ctx}: receiver balance: before {}, - (F_s {} + unconfirmed settled at ilpd {settled_u}) = {}, report says {}",
            rec.recv,
            run.fulfilled_amount,
            rec.recv - charged,
            now.recv
        );
        check_metrics(&node, &now, &ctx);
        drop(dead);
        drop(lg);
        totals.0 += run.fulfilled_amount;
        totals.1 += settled_u;
        totals.2 += run.unconfirmed.len();
        totals.3 += usize::from(!run.unconfirmed.is_empty());
        rec = now;
    }
    assert!(
        cycles >= MIN_CYCLES,
        "only {cycles} cycles in {:?} (at least {MIN_CYCLES} wanted)",
        started.elapsed()
    );
    assert_eq!(rec.send, s0 + totals.0 + totals.1);
    assert_eq!(rec.recv, r0 - totals.0 - totals.1);
    println!(
        "ledger_crash: {cycles} cycles in {:.1} s: fulfilled at sender {}, unconfirmed {} packets in {} cycles (settled at ilpd {}), S {s0} -> {}, R {r0} -> {}",
        started.elapsed().as_secs_f64(),
        totals.0,
        totals.2,
        totals.3,
        totals.1,
        rec.send,
        rec.recv
    );
    assert!(totals.0 > 0, "no packet was ever fulfilled");

    // A clean stop, and one more start that finds the same balances.
    let status = proc.terminate().expect("ilpd exit status");
    assert!(status.success(), "ilpd after SIGTERM: {status}");
    let mut last = node.start("ilpd after clean stop");
    let (g, v, path) = node.newest_report(rec.generation);
    let after = parse_report(g, &v, &path);
    assert_eq!(
        (after.send, after.recv),
        (rec.send, rec.recv),
        "balances changed across a clean restart ({})",
        path.display()
    );
    check_metrics(&node, &after, "after a clean restart");
    let status = last.terminate().expect("ilpd exit status");
    assert!(status.success(), "ilpd after SIGTERM: {status}");
    let _ = std::fs::remove_dir_all(&root);
}

//! The durable ledger with real processes and real disks (docs/ledger.md):
//! balances survive SIGTERM and kill -9 (over metrics and peer.balance),
//! across journal segments; one data dir, one ilpd; a torn tail is cut and
//! logged; damage in the middle stops start-up naming the file and offset;
//! `ilpd ledger verify|dump`; and a disk that fills up stops the ledger:
//! ilpd drains and exits 3, and a restart loses nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ilpd_codec::peer::balance::{parse_balance_fulfill, request_prepare};
use ilpd_codec::types::Expiry;
use ilpd_tests::btp_client::{self as bc, BtpClient};
use ilpd_tests::{bin_path, free_ports, ilpd, run_with_timeout, temp_dir, Proc};
use serde_json::Value;

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

struct Node {
    listen: SocketAddr,
    metrics: SocketAddr,
    data: PathBuf,
    config: String,
}

impl Node {
    fn new(data: &Path, extra: &str) -> Node {
        let p = free_ports(2);
        let config = format!(
            r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
threads = 1
pin_cores = false
listen = "127.0.0.1:{}"
metrics_addr = "127.0.0.1:{}"
log_level = "info"
data_dir = "{}"
{extra}

[[accounts]]
id = "send"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "send-token"
max_balance = 1000000000000

[[accounts]]
id = "recv"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "recv-token"
min_balance = -1000000000000
"#,
            p[0],
            p[1],
            data.display()
        );
        Node {
            listen: addr(p[0]),
            metrics: addr(p[1]),
            data: data.to_path_buf(),
            config,
        }
    }

    fn start(&self, label: &str) -> Proc {
        ilpd::start(&self.config, self.listen, label)
    }

    /// Runs ilpd to its exit (start-up failures).
    fn run_to_exit(&self, label: &str) -> (Option<i32>, String) {
        let file = temp_dir("cfg").join("ilpd.toml");
        std::fs::write(&file, &self.config).unwrap();
        let mut cmd = Command::new(bin_path("ilpd"));
        cmd.arg("--config").arg(&file);
        let (status, p) = run_with_timeout(cmd, label, Duration::from_secs(20));
        (status.code(), p.stderr_text())
    }

    fn balance(&self, account: &str) -> i64 {
        bc::scrape(
            self.metrics,
            "ilpd_account_balance",
            &format!("account=\"{account}\""),
        )
        .unwrap_or_else(|| panic!("no balance metric for {account}")) as i64
    }

    fn reserved(&self, account: &str, dir: &str) -> i64 {
        bc::scrape(
            self.metrics,
            "ilpd_account_reserved",
            &format!("account=\"{account}\",direction=\"{dir}\""),
        )
        .unwrap() as i64
    }

    /// peer.balance asked by the account itself: its balance from its
    /// point of view (what we owe it).
    fn peer_balance(&self, account: &str) -> i64 {
        let mut c =
            BtpClient::connect_auth(self.listen, Some(account), &format!("{account}-token"))
                .expect("auth");
        let p = request_prepare(Expiry(bc::unix_ms() + 10_000));
        let id = c.send_prepare(&p).unwrap();
        let r = c
            .read_btp(Duration::from_secs(5))
            .expect("peer.balance answer");
        assert_eq!(r.request_id, id);
        parse_balance_fulfill(r.ilp.as_deref().expect("an ILP packet"))
            .expect("a peer.balance Fulfill")
    }

    /// The newest recovery report.
    fn report(&self) -> Value {
        let mut files: Vec<_> = std::fs::read_dir(self.data.join("reports"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        serde_json::from_str(&std::fs::read_to_string(files.last().unwrap()).unwrap()).unwrap()
    }
}

/// `ilp-loadgen run` through the node: `packets` fulfilled packets of
/// `amount`; returns the JSON report.
fn traffic(n: &Node, packets: u64, amount: u64, extra: &[&str]) -> Value {
    let port = n.listen.port();
    let json = temp_dir("lg").join("report.json");
    let mut cmd = Command::new(bin_path("ilp-loadgen"));
    cmd.args([
        "run",
        "--send",
        &format!("btp+ws://send:send-token@127.0.0.1:{port}/"),
        "--recv",
        &format!("btp+ws://recv:recv-token@127.0.0.1:{port}/"),
        "--packets",
        &packets.to_string(),
        "--amount",
        &amount.to_string(),
        "--duration",
        "60s",
        "--warmup",
        "0s",
        "--window",
        "64",
        "--no-pin",
        "--json",
    ])
    .arg(&json)
    .args(extra);
    let (_status, p) = run_with_timeout(cmd, "loadgen", Duration::from_secs(90));
    match std::fs::read_to_string(&json) {
        Ok(t) => serde_json::from_str(&t).unwrap(),
        Err(e) => {
            p.dump();
            panic!("no loadgen report: {e}");
        }
    }
}

fn fulfilled_at_sender(v: &Value) -> i64 {
    v["reconciliation"]["amount_fulfilled_at_sender"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn kill9(p: &mut Proc) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg(p.id().to_string())
        .status();
    p.wait_timeout(Duration::from_secs(10)).expect("ilpd died");
}

fn ledger_tool(args: &[&str], data: &Path) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(bin_path("ilpd"));
    cmd.arg("ledger").args(args).arg("--data-dir").arg(data);
    let (status, p) = run_with_timeout(cmd, "ilpd-ledger", Duration::from_secs(30));
    (status.code(), p.stdout_text(), p.stderr_text())
}

#[test]
fn balances_survive_sigterm_and_kill_9_across_segments() {
    let data = temp_dir("ledger").join("data");
    // 1 MiB segments: 20,000 packets (~80 B of journal each) roll over.
    let n = Node::new(&data, "journal_segment_mb = 1");
    let mut p = n.start("ilpd-1");
    let r = traffic(&n, 20_000, 3, &[]);
    let paid = fulfilled_at_sender(&r);
    assert_eq!(paid, 60_000, "{r}");
    p.terminate();

    let (code, out, err) = ledger_tool(&["verify"], &data);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("send     {paid}")), "{out}");
    assert!(out.contains(&format!("recv     -{paid}")), "{out}");

    let mut p = n.start("ilpd-2");
    assert_eq!(n.balance("send"), paid);
    assert_eq!(n.balance("recv"), -paid);
    assert_eq!(n.peer_balance("send"), -paid, "the sender owes us");
    assert_eq!(n.peer_balance("recv"), paid, "we owe the receiver");
    let rep = n.report();
    assert_eq!(rep["in_doubt"].as_array().unwrap().len(), 0, "{rep}");
    assert!(rep["replayed"]["frames"].as_u64().unwrap() > 2);

    // kill -9 after a finished run: nothing in flight, balances exact.
    let r = traffic(&n, 5_000, 4, &[]);
    let paid2 = paid + fulfilled_at_sender(&r);
    kill9(&mut p);
    let mut p = n.start("ilpd-3");
    assert_eq!(n.balance("send"), paid2);
    assert_eq!(n.balance("recv"), -paid2);
    for (a, d) in [("send", "incoming"), ("recv", "outgoing")] {
        assert_eq!(n.reserved(a, d), 0);
    }
    assert!(
        std::fs::read_dir(data.join("journal")).unwrap().count() <= 1,
        "replayed segments are removed"
    );
    p.terminate();
}

#[test]
fn one_data_dir_one_ilpd() {
    let data = temp_dir("ledger").join("data");
    let a = Node::new(&data, "");
    let mut p = a.start("ilpd-a");
    let b = Node::new(&data, "");
    let (code, err) = b.run_to_exit("ilpd-b");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in use by another ilpd"), "{err}");
    assert!(err.contains(&format!("pid {}", p.id())), "{err}");
    p.terminate();
    // Once it is gone, the dir is free.
    let mut p = b.start("ilpd-b2");
    p.terminate();
}

/// Frame offsets of a journal file, from `ilpd ledger dump`.
fn frame_offsets(dump: &str, file: &str) -> Vec<u64> {
    let mut in_file = false;
    let mut v = Vec::new();
    for l in dump.lines() {
        if let Some(rest) = l.strip_prefix("file ") {
            in_file = rest.starts_with(file);
        } else if in_file {
            if let Some(rest) = l.strip_prefix("frame offset=") {
                v.push(rest.split(' ').next().unwrap().parse().unwrap());
            }
        }
    }
    v
}

fn journal_files(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn a_torn_tail_is_cut_and_damage_in_the_middle_stops_start_up() {
    let data = temp_dir("ledger").join("data");
    let n = Node::new(&data, "");
    let mut p = n.start("ilpd-1");
    let paid = fulfilled_at_sender(&traffic(&n, 500, 2, &[]));
    p.terminate();
    let files = journal_files(&data);
    assert_eq!(files.len(), 1, "{files:?}");
    let seg = files[0].clone();
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();

    // A torn tail: the first bytes of a frame, as a crash mid-write leaves.
    let whole = std::fs::read(&seg).unwrap();
    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[..20]);
    std::fs::write(&seg, &torn).unwrap();
    let (code, out, _) = ledger_tool(&["verify"], &data);
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&format!("torn tail: {name} at offset {}", whole.len())),
        "{out}"
    );
    let (code, dump, _) = ledger_tool(&["dump"], &data);
    assert_eq!(code, Some(0));
    assert!(
        dump.contains("forward id="),
        "{}",
        &dump[..dump.len().min(2000)]
    );
    let offsets = frame_offsets(&dump, &name);
    assert!(offsets.len() > 3, "{offsets:?}");
    let mut p = n.start("ilpd-2");
    assert_eq!(n.balance("send"), paid);
    p.terminate();
    assert!(
        p.stderr_text().contains("torn tail cut"),
        "{}",
        p.stderr_text()
    );
    let rep = n.report();
    assert_eq!(rep["torn_tails"][0]["bytes"], 20, "{rep}");

    // Damage in the middle: a flipped byte in the second frame of the
    // new generation's segment, with valid frames after it.
    let mut p = n.start("ilpd-3");
    traffic(&n, 300, 2, &[]);
    p.terminate();
    let seg = journal_files(&data).pop().unwrap();
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let (_, dump, _) = ledger_tool(&["dump"], &data);
    let offsets = frame_offsets(&dump, &name);
    assert!(offsets.len() > 3, "{offsets:?}");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offsets[1] as usize + 20] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let (code, out, err) = ledger_tool(&["verify"], &data);
    assert_eq!(code, Some(2), "{out}{err}");
    let (code, err) = n.run_to_exit("ilpd-4");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&name), "{err}");
    assert!(err.contains(&format!("offset {}", offsets[1])), "{err}");
    assert!(err.contains("checksum"), "{err}");
}

/// A tmpfs of `size`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = temp_dir("tmpfs");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot mount a tmpfs at {}", dir.display());
        Tmpfs(dir)
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot resize the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn a_full_disk_stops_the_ledger_exits_3_and_loses_nothing() {
    if !is_root() {
        // Mounting a small filesystem needs root (CI runs as root).
        eprintln!("NOT RUN: a_full_disk_stops_the_ledger_exits_3_and_loses_nothing needs root to mount a tmpfs");
        return;
    }
    let fs = Tmpfs::mount("600k");
    let data = fs.0.join("data");
    let n = Node::new(&data, "journal_segment_mb = 1");
    let mut p = n.start("ilpd-full");
    // ~80 B of journal per packet: 600 kB fills after ~7,000 packets.
    let r = traffic(&n, 40_000, 1, &[]);
    // The disk holds the records of ~7,000 packets: the rest were either
    // rejected with T00 (sent between the failure and the drain) or never
    // sent (the drain closed the links first); which, is timing.
    let fulfilled = r["packets"]["fulfilled"].as_u64().unwrap();
    assert!(fulfilled < 20_000, "the ledger stopped the run: {r}");
    let status = p.wait_timeout(Duration::from_secs(30)).expect("ilpd exits");
    assert_eq!(status.code(), Some(3), "{}", p.stderr_text());
    let err = p.stderr_text();
    assert!(err.contains("ledger stopped"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");

    // Room again: the restart recovers what was durable. The sender owes
    // exactly what it saw fulfilled, plus what is listed as in doubt.
    fs.resize("64m");
    let mut p = n.start("ilpd-after");
    let s = n.balance("send");
    let seen = fulfilled_at_sender(&r);
    let rep = n.report();
    let listed: i64 = rep["in_doubt"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "delivery_unknown")
        .map(|d| d["amount"].as_str().unwrap().parse::<i64>().unwrap())
        .sum();
    assert!(
        s >= seen && s <= seen + listed,
        "sender balance {s}, fulfilled at the sender {seen}, listed {listed}: {rep}"
    );
    assert_eq!(n.balance("recv"), -s);
    p.terminate();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && p.try_wait().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

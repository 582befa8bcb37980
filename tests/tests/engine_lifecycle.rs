//! ilpd start-up and shutdown: bad configuration and flags exit 2 naming
//! the problem; SIGTERM drains in-flight packets and exits 0.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ilpd_codec::btp::BtpType;
use ilpd_tests::btp_client::{self as bc, BtpClient, Reply};
use ilpd_tests::{bin_path, free_ports, ilpd, run_with_timeout, temp_dir};
use sha2::{Digest, Sha256};

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn run_ilpd(args: &[&str], label: &str) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(bin_path("ilpd"));
    // The default data dir (./ilpd-data) lands in a fresh folder.
    cmd.args(args).current_dir(temp_dir("ilpd-cwd"));
    let (status, p) = run_with_timeout(cmd, label, Duration::from_secs(20));
    (status.code(), p.stdout_text(), p.stderr_text())
}

fn write_config(text: &str) -> String {
    let f = temp_dir("cfg").join("ilpd.toml");
    std::fs::write(&f, text).unwrap();
    f.to_string_lossy().into_owned()
}

const GOOD: &str = r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
listen = "127.0.0.1:1"
[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "t"
"#;

#[test]
fn bad_config_names_the_key_and_exits_2() {
    let cases = [
        (
            GOOD.replace("asset_scale = 9", "asset_scale = 99"),
            "accounts[0].asset_scale",
        ),
        (GOOD.replace("test.ilpd", "not-a-scheme.x"), "node.address"),
        (GOOD.replace("[node]", "[node]\nbatch = 0"), "node.batch"),
        (GOOD.replace("[node]", "[node]\ncolour = \"red\""), "colour"),
        (
            GOOD.replace("[node]", "[node]\nlog_level = \"[[[\""),
            "node.log_level",
        ),
    ];
    for (text, key) in cases {
        let path = write_config(&text);
        let (code, _, err) = run_ilpd(&["--config", &path], "bad-config");
        assert_eq!(code, Some(2), "{key}: {err}");
        assert!(err.contains(key), "stderr does not name {key}: {err}");
    }
    let (code, _, err) = run_ilpd(&["--config", "/nonexistent/ilpd.toml"], "missing-config");
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent/ilpd.toml"), "{err}");
    // A flag that makes a good file invalid is named by its config key.
    let path = write_config(GOOD);
    let (code, _, err) = run_ilpd(
        &["--config", &path, "--max-message-size", "10"],
        "bad-flag-value",
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("node.max_message_size"), "{err}");
}

#[test]
fn bad_flags_exit_2_and_help_lists_defaults() {
    for args in [
        &["--threads", "many"][..],
        &["--no-such-flag"],
        &["--listen"],
    ] {
        let (code, _, err) = run_ilpd(args, "bad-flag");
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(!err.is_empty());
    }
    let (code, out, _) = run_ilpd(&["--help"], "help");
    assert_eq!(code, Some(0));
    for flag in [
        "--threads",
        "--pin-cores",
        "--listen",
        "--metrics-addr",
        "--max-in-flight",
        "--batch",
        "--min-message-window",
        "--max-hold-time",
        "--log-level",
        "--socket-send-buffer",
        "--socket-recv-buffer",
        "--max-message-size",
        "--handshake-timeout",
        "--write-buffer-limit",
        "--sha256-impl",
        "--address",
        "--shutdown-grace",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
    assert!(
        out.contains("[default: 65536]") && out.contains("ILPD_SHA256_IMPL"),
        "{out}"
    );
}

fn config(port: u16, metrics: u16, grace_ms: u64) -> String {
    format!(
        r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
threads = 2
pin_cores = false
listen = "127.0.0.1:{port}"
metrics_addr = "127.0.0.1:{metrics}"
shutdown_grace_ms = {grace_ms}
log_level = "info"
[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "alice-token"
[[accounts]]
id = "bob"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "bob-token"
"#
    )
}

fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -TERM {pid}");
}

#[test]
fn sigterm_waits_for_in_flight_packets_then_exits_0() {
    let p = free_ports(2);
    let listen = addr(p[0]);
    let mut node = ilpd::start(&config(p[0], p[1], 20_000), listen, "ilpd-drain");
    let mut alice = BtpClient::connect_auth(listen, None, "alice-token").unwrap();
    let mut bob = BtpClient::connect_auth(listen, None, "bob-token").unwrap();
    let f = [3u8; 32];
    let c: [u8; 32] = Sha256::digest(f).into();
    let id = alice
        .send_prepare(&bc::prepare(
            10,
            bc::unix_ms() + 30_000,
            &c,
            "test.ilpd.bob",
            b"",
        ))
        .unwrap();
    let held = bob.read_btp(Duration::from_secs(5)).unwrap();
    assert_eq!(held.ty, BtpType::Message);

    sigterm(node.id());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        node.try_wait().is_none(),
        "ilpd exited with a packet in flight"
    );
    // New Prepares are refused while draining.
    let id2 = alice
        .send_prepare(&bc::prepare(
            10,
            bc::unix_ms() + 30_000,
            &c,
            "test.ilpd.bob",
            b"",
        ))
        .unwrap();
    let r = alice.read_btp(Duration::from_secs(5)).unwrap();
    assert_eq!(r.request_id, id2);
    match bc::parse_ilp(&r.ilp.unwrap()) {
        Reply::Reject { code, .. } => assert_eq!(code, "T03"),
        other => panic!("{other:?}"),
    }
    // The in-flight one completes, then ilpd exits 0.
    bob.send_response(held.request_id, &bc::fulfill(&f, b""))
        .unwrap();
    let r = alice.read_btp(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (r.request_id, bc::parse_ilp(&r.ilp.unwrap())),
        (id, Reply::Fulfill { fulfillment: f })
    );
    let start = Instant::now();
    let status = node
        .wait_timeout(Duration::from_secs(10))
        .expect("ilpd exits after the drain");
    assert_eq!(status.code(), Some(0), "{}", node.stderr_text());
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// Issue 16 "Drain": Prepares in flight both ways when SIGTERM arrives
/// complete; a burst written during the drain is answered in full (T03)
/// before the connections close; ilpd exits 0 once nothing is in flight.
#[test]
fn sigterm_answers_every_prepare_in_both_directions() {
    let p = free_ports(2);
    let listen = addr(p[0]);
    // No journal to wait for: the drain ends in the turn that answers the
    // last packet in flight.
    let cfg = config(p[0], p[1], 20_000).replace("[node]", "[node]\ndurability = \"none\"");
    let mut node = ilpd::start(&cfg, listen, "ilpd-drain-both");
    let mut alice = BtpClient::connect_auth(listen, None, "alice-token").unwrap();
    let mut bob = BtpClient::connect_auth(listen, None, "bob-token").unwrap();
    let f = [5u8; 32];
    let c: [u8; 32] = Sha256::digest(f).into();
    let to = |who: &str| bc::prepare(10, bc::unix_ms() + 30_000, &c, who, b"");
    // One Prepare each way, held by its receiver.
    let a_id = alice.send_prepare(&to("test.ilpd.bob")).unwrap();
    let b_id = bob.send_prepare(&to("test.ilpd.alice")).unwrap();
    let at_bob = bob.read_btp(Duration::from_secs(5)).unwrap();
    let at_alice = alice.read_btp(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (at_bob.ty, at_alice.ty),
        (BtpType::Message, BtpType::Message)
    );

    sigterm(node.id());
    std::thread::sleep(Duration::from_millis(300));
    // While draining, a burst in one write: every Prepare gets T03.
    let mut burst = Vec::new();
    for _ in 0..200 {
        let mut b = Vec::new();
        let id = alice.next_request_id();
        ilpd_codec::btp::write_ilp_message(&mut b, id, &to("test.ilpd.bob"));
        burst.push((id, ws_frame(&b)));
    }
    alice.send_raw(&burst.concat_frames()).unwrap();
    expect_t03(&mut alice, &burst);
    // Bob answers alice's held Prepare.
    bob.send_response(at_bob.request_id, &bc::fulfill(&f, b""))
        .unwrap();
    let r = alice.read_btp(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (r.request_id, bc::parse_ilp(&r.ilp.unwrap())),
        (a_id, Reply::Fulfill { fulfillment: f })
    );
    // Alice answers the last packet in flight and, in the same write, sends
    // 600 more (over one read batch, 256): the drain ends with some still
    // in ilpd's socket or buffer, and they are answered before the close.
    let mut b = Vec::new();
    ilpd_codec::btp::write_ilp_response(&mut b, at_alice.request_id, &bc::fulfill(&f, b""));
    let mut last = ws_frame(&b);
    let mut burst = Vec::new();
    for _ in 0..600 {
        let mut b = Vec::new();
        let id = alice.next_request_id();
        ilpd_codec::btp::write_ilp_message(&mut b, id, &to("test.ilpd.bob"));
        burst.push((id, ws_frame(&b)));
    }
    last.extend_from_slice(&burst.concat_frames());
    alice.send_raw(&last).unwrap();
    let r = bob.read_btp(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (r.request_id, bc::parse_ilp(&r.ilp.unwrap())),
        (b_id, Reply::Fulfill { fulfillment: f })
    );
    expect_t03(&mut alice, &burst);
    let status = node
        .wait_timeout(Duration::from_secs(10))
        .expect("ilpd exits after the drain");
    assert_eq!(status.code(), Some(0), "{}", node.stderr_text());
    // Both connections were closed by ilpd after their answers.
    assert!(alice.closed_within(Duration::from_secs(2)));
    assert!(bob.closed_within(Duration::from_secs(2)));
}

trait Frames {
    fn concat_frames(&self) -> Vec<u8>;
}

impl Frames for Vec<(u32, Vec<u8>)> {
    fn concat_frames(&self) -> Vec<u8> {
        self.iter().flat_map(|(_, f)| f.iter().copied()).collect()
    }
}

/// Reads until every request of `burst` has its answer, a T03 Reject.
fn expect_t03(c: &mut BtpClient, burst: &[(u32, Vec<u8>)]) {
    let mut answered = std::collections::HashSet::new();
    while answered.len() < burst.len() {
        let r = c
            .read_btp(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{} of {} answered: {e:?}", answered.len(), burst.len()));
        match bc::parse_ilp(&r.ilp.unwrap()) {
            Reply::Reject { code, .. } => assert_eq!(code, "T03"),
            other => panic!("{other:?}"),
        }
        answered.insert(r.request_id);
    }
    assert!(burst.iter().all(|(id, _)| answered.contains(id)));
}

/// One masked binary WebSocket frame (RFC 6455 §5.2), as a client sends.
fn ws_frame(payload: &[u8]) -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    let mut f = vec![0x82];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

#[test]
fn sigterm_with_unanswered_packets_exits_after_they_expire() {
    let p = free_ports(2);
    let listen = addr(p[0]);
    let mut node = ilpd::start(&config(p[0], p[1], 20_000), listen, "ilpd-drain-expire");
    let mut alice = BtpClient::connect_auth(listen, None, "alice-token").unwrap();
    let mut bob = BtpClient::connect_auth(listen, None, "bob-token").unwrap();
    // Expires 1.5 s from now (2.5 s − 1 s window); bob never answers.
    let id = alice
        .send_prepare(&bc::prepare(
            10,
            bc::unix_ms() + 2_500,
            &[1; 32],
            "test.ilpd.bob",
            b"",
        ))
        .unwrap();
    bob.read_btp(Duration::from_secs(5)).unwrap();
    let start = Instant::now();
    sigterm(node.id());
    let r = alice.read_btp(Duration::from_secs(5)).unwrap();
    assert_eq!(r.request_id, id);
    match bc::parse_ilp(&r.ilp.unwrap()) {
        Reply::Reject { code, .. } => assert_eq!(code, "R00"),
        other => panic!("{other:?}"),
    }
    let status = node
        .wait_timeout(Duration::from_secs(10))
        .expect("ilpd exits after the expiry");
    assert_eq!(status.code(), Some(0), "{}", node.stderr_text());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn sigterm_when_idle_exits_promptly() {
    let p = free_ports(2);
    let mut node = ilpd::start(&config(p[0], p[1], 20_000), addr(p[0]), "ilpd-idle");
    sigterm(node.id());
    let status = node
        .wait_timeout(Duration::from_secs(5))
        .expect("ilpd exits");
    assert_eq!(status.code(), Some(0));
    assert!(node.stderr_text().contains("shutting down"));
}

//! ilp-loadgen against itself (direct mode, real sockets on 127.0.0.1):
//! exact reconciliation over BTP and HTTP, the outcome mix counted on both
//! sides, the coordinated-omission correction, payments, bad flags and
//! broken links. Runs the release binary (`cargo build --release --bins`).

use ilpd_tests::{bin_path, run_with_timeout, temp_dir, Proc};
use serde_json::Value;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

fn loadgen(args: &[&str]) -> Command {
    let mut c = Command::new(bin_path("ilp-loadgen"));
    c.args(args);
    c
}

/// Runs ilp-loadgen with `--json` and returns (status, report, process).
fn run_json(label: &str, args: &[&str], timeout: Duration) -> (ExitStatus, Value, Proc) {
    let file = temp_dir(label).join("report.json");
    let mut all: Vec<&str> = args.to_vec();
    let f = file.to_string_lossy().to_string();
    all.extend(["--json", &f, "-q"]);
    let (status, p) = run_with_timeout(loadgen(&all), label, timeout);
    let v = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    if v.is_null() {
        p.dump();
    }
    (status, v, p)
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    match x {
        Value::Number(n) => n.as_u64().unwrap_or_else(|| panic!("{path:?} = {x}")),
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("{path:?} = {x}")),
        _ => panic!("{path:?} missing in {v}"),
    }
}

fn assert_exact_reconciliation(v: &Value) {
    let rec = &v["reconciliation"];
    assert_eq!(rec["delta"], "0", "{rec}");
    assert_eq!(
        rec["amount_fulfilled_at_sender"], rec["amount_received_at_loopback"],
        "{rec}"
    );
    // Every packet was fulfilled (mix "fulfill"): what was sent arrived.
    assert_eq!(
        rec["amount_sent"], rec["amount_fulfilled_at_sender"],
        "{rec}"
    );
    assert_eq!(u(v, &["packets", "lost"]), 0);
    assert_eq!(u(v, &["packets", "timed_out"]), 0);
    assert_eq!(u(v, &["packets", "rejected"]), 0);
    assert_eq!(u(v, &["packets", "unmatched_replies"]), 0);
    assert_eq!(
        v["errors"].as_array().map(Vec::len),
        Some(0),
        "{}",
        v["errors"]
    );
}

#[test]
fn loadgen_direct_btp_reconciles_exactly() {
    let (status, v, p) = run_json(
        "lg-direct-btp",
        &[
            "direct",
            "--duration",
            "2s",
            "--warmup",
            "300ms",
            "--window",
            "64",
            "--amount",
            "7",
            "--strict",
        ],
        Duration::from_secs(30),
    );
    assert!(status.success(), "{status}: {}", p.stderr_text());
    assert_exact_reconciliation(&v);
    assert!(u(&v, &["packets", "fulfilled"]) > 1000, "{}", v["packets"]);
    // Amounts: 7 per packet, whole run.
    let sent = u(&v, &["reconciliation", "packets_sent"]);
    assert_eq!(u(&v, &["reconciliation", "amount_sent"]), 7 * sent);
    assert_eq!(v["mode"], "closed loop, window 64 per connection");
    assert!(u(&v, &["latency_ns", "p50"]) > 0);
    assert!(u(&v, &["machine", "cores"]) >= 1);
    assert!(v["commit"].as_str().is_some_and(|c| !c.is_empty()));
    let table = p.stdout_text();
    assert!(
        table.contains("reconcile") && table.contains("delta 0"),
        "{table}"
    );
}

#[test]
fn loadgen_direct_http_reconciles_exactly() {
    let (status, v, p) = run_json(
        "lg-direct-http",
        &[
            "direct",
            "--transport",
            "http",
            "--duration",
            "2s",
            "--warmup",
            "300ms",
            "--window",
            "16",
            "--conns",
            "2",
            "--threads",
            "2",
            "--recv-threads",
            "2",
            "--strict",
        ],
        Duration::from_secs(30),
    );
    assert!(status.success(), "{status}: {}", p.stderr_text());
    assert_eq!(v["settings"]["sender_threads"], 2);
    assert_exact_reconciliation(&v);
    assert!(u(&v, &["packets", "fulfilled"]) > 500, "{}", v["packets"]);
}

#[test]
fn loadgen_outcome_mix_is_counted_on_both_sides() {
    // No warm-up, so the measured counts cover every packet.
    let (status, v, p) = run_json(
        "lg-mix",
        &[
            "direct",
            "--packets",
            "20000",
            "--duration",
            "20s",
            "--warmup",
            "0s",
            "--window",
            "128",
            "--mix",
            "fulfill=80,reject:F99=10,reject:T04=4,wrong=3,noanswer=3",
            "--expiry",
            "1s",
            "--grace",
            "100ms",
            "--seed",
            "42",
        ],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{status}: {}", p.stderr_text());
    let sent = u(&v, &["packets", "sent"]);
    assert_eq!(sent, 20000);
    let ful = u(&v, &["packets", "fulfilled"]);
    let f99 = u(&v, &["packets", "rejected_by_code", "F99"]);
    let t04 = u(&v, &["packets", "rejected_by_code", "T04"]);
    let wrong = u(&v, &["packets", "wrong_fulfillment"]);
    let timed_out = u(&v, &["packets", "timed_out"]);
    // Sender and receiver agree on every outcome.
    assert_eq!(ful, u(&v, &["receiver", "fulfilled"]));
    assert_eq!(f99, u(&v, &["receiver", "rejected_by_code", "F99"]));
    assert_eq!(t04, u(&v, &["receiver", "rejected_by_code", "T04"]));
    assert_eq!(wrong, u(&v, &["receiver", "wrong_fulfillment_sent"]));
    assert_eq!(timed_out, u(&v, &["receiver", "no_answer"]));
    assert_eq!(ful + f99 + t04 + wrong + timed_out, sent);
    // And the weights show (80% ± 2%, 3% ± 1%).
    assert!((15_600..=16_400).contains(&ful), "fulfilled {ful}");
    assert!((400..=800).contains(&timed_out), "timed out {timed_out}");
    assert_eq!(v["reconciliation"]["delta"], "0");
}

#[test]
fn loadgen_open_loop_shows_a_receiver_stall_in_the_tail() {
    // 2,000/s for 3 s; the receiver stalls 300 ms after 2,000 Prepares. At
    // most 8 packets may be in flight, so the sender is held back during
    // the stall: only measuring from the *intended* send time shows the
    // ~600 packets that were due meanwhile. Packets due in the first 150 ms
    // of the stall wait >= 150 ms: 300 of 6,000 = 5%, so p99 >= 150 ms.
    // (Measured from the actual send time, only the 8 in flight would.)
    let (status, v, p) = run_json(
        "lg-co",
        &[
            "direct",
            "--rate",
            "2000",
            "--duration",
            "3s",
            "--warmup",
            "0s",
            "--max-in-flight",
            "8",
            "--receiver-stall",
            "300ms",
            "--receiver-stall-after",
            "2000",
        ],
        Duration::from_secs(30),
    );
    assert!(status.success(), "{status}: {}", p.stderr_text());
    assert_eq!(v["settings"]["load"], "open");
    let p99 = u(&v, &["latency_ns", "p99"]);
    let max = u(&v, &["latency_ns", "max"]);
    assert!(max >= 290_000_000, "max {max} ns: the stall is missing");
    assert!(
        p99 >= 150_000_000,
        "p99 {p99} ns: coordinated omission not corrected"
    );
    assert_eq!(v["reconciliation"]["delta"], "0");
}

#[test]
fn loadgen_pay_one_shot_and_chunked() {
    let (s, p) = run_with_timeout(
        loadgen(&["pay", "--amount", "100", "-q"]),
        "lg-pay",
        Duration::from_secs(20),
    );
    assert!(s.success(), "{}", p.stderr_text());
    assert!(
        p.stdout_text().contains("fulfilled, delivered 100"),
        "{}",
        p.stdout_text()
    );
    // The receiver enforces the minimum destination amount: F04.
    let (s, p) = run_with_timeout(
        loadgen(&["pay", "--amount", "100", "--min-dest-amount", "101", "-q"]),
        "lg-pay-f04",
        Duration::from_secs(20),
    );
    assert_eq!(s.code(), Some(1));
    assert!(
        p.stdout_text().contains("rejected F04"),
        "{}",
        p.stdout_text()
    );
    // Chunked: 1,000 delivered in chunks, with an event per fulfillment.
    let (s, p) = run_with_timeout(
        loadgen(&[
            "pay",
            "--chunked",
            "--amount",
            "1000",
            "--deadline",
            "10s",
            "--max-chunk",
            "50",
        ]),
        "lg-pay-chunked",
        Duration::from_secs(30),
    );
    let out = p.stdout_text();
    assert!(s.success(), "{out}{}", p.stderr_text());
    assert!(out.contains("done — delivered"), "{out}");
    let incoming = out.matches("IncomingFulfill").count();
    let outgoing = out.matches("OutgoingFulfill").count();
    assert!(
        incoming >= 20 && incoming == outgoing,
        "{incoming} in, {outgoing} out\n{out}"
    );
}

#[test]
fn loadgen_bad_flags_exit_2_with_a_message() {
    let cases: &[&[&str]] = &[
        &["direct", "--window", "0"],
        &["direct", "--rate", "-5"],
        &["direct", "--rate", "10", "--window", "5"],
        &["direct", "--mix", "fulfill=1,bogus=2"],
        &["direct", "--mix", "reject:X01"],
        &["direct", "--duration", "5h"],
        &["direct", "--data-size", "3"],
        &["direct", "--no-such-flag"],
        &[
            "run",
            "--send",
            "ftp://x",
            "--recv",
            "btp+ws://a:b@127.0.0.1:1/",
        ],
        &["run", "--recv", "btp+ws://a:b@127.0.0.1:1/"],
        &["direct", "--sha256-impl", "md5"],
    ];
    for args in cases {
        let (s, p) = run_with_timeout(loadgen(args), "lg-bad-flags", Duration::from_secs(10));
        assert_eq!(s.code(), Some(2), "{args:?}: {s}");
        let err = p.stderr_text();
        assert!(err.contains("error"), "{args:?}: no message: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn loadgen_refused_connection_names_the_link() {
    let port = ilpd_tests::free_port();
    let send = format!("btp+ws://alice:tok@127.0.0.1:{port}/");
    let recv = format!("btp+ws://bob:tok@127.0.0.1:{port}/");
    let t = Instant::now();
    let (s, p) = run_with_timeout(
        loadgen(&[
            "run",
            "--send",
            &send,
            "--recv",
            &recv,
            "--duration",
            "2s",
            "-q",
        ]),
        "lg-refused",
        Duration::from_secs(20),
    );
    assert_eq!(s.code(), Some(1));
    let err = p.stderr_text();
    let want = format!("receive link btp+ws://127.0.0.1:{port}/ (account bob): connection refused");
    assert!(err.contains(&want), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn loadgen_silent_peer_times_out_with_a_message() {
    // Accepts TCP, never answers the WebSocket upgrade.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let hold = std::thread::spawn(move || {
        let mut conns = Vec::new();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(c) = l.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(conns);
    });
    let url = format!("btp+ws://x:y@127.0.0.1:{port}/");
    let t = Instant::now();
    let (s, p) = run_with_timeout(
        loadgen(&[
            "run",
            "--send",
            &url,
            "--recv",
            &url,
            "--connect-timeout",
            "1s",
            "-q",
        ]),
        "lg-silent",
        Duration::from_secs(20),
    );
    assert_eq!(s.code(), Some(1));
    let err = p.stderr_text();
    assert!(
        err.contains(&format!("link btp+ws://127.0.0.1:{port}/")),
        "{err}"
    );
    assert!(err.contains("timed out"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let _ = hold.join();
}

#[test]
fn loadgen_unanswered_packets_time_out_and_the_run_still_ends() {
    // The receiver never answers: every packet must be counted as timed
    // out, and the run must end at duration + expiry + grace.
    let t = Instant::now();
    let (status, v, p) = run_json(
        "lg-noanswer",
        &[
            "direct",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--rate",
            "500",
            "--mix",
            "noanswer",
            "--expiry",
            "1s",
            "--grace",
            "200ms",
        ],
        Duration::from_secs(30),
    );
    assert!(status.success(), "{status}: {}", p.stderr_text());
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    let sent = u(&v, &["packets", "sent"]);
    assert!(sent >= 400, "{sent}");
    assert_eq!(
        u(&v, &["packets", "timed_out"]) + u(&v, &["packets", "lost"]),
        sent
    );
    assert_eq!(u(&v, &["packets", "fulfilled"]), 0);
    assert_eq!(u(&v, &["receiver", "no_answer"]), sent);
}

#[test]
fn loadgen_hdr_log_and_sweep() {
    let dir = temp_dir("lg-hdr-sweep");
    let hlog = dir.join("lat.hlog");
    let mut cmd = loadgen(&[
        "direct",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "-q",
        "--hdr-log",
    ]);
    cmd.arg(&hlog);
    let (s, p) = run_with_timeout(cmd, "lg-hdr", Duration::from_secs(30));
    assert!(s.success(), "{}", p.stderr_text());
    let text = std::fs::read_to_string(&hlog).unwrap_or_default();
    assert!(text.starts_with("#ilp-loadgen"), "{text}");
    assert!(
        text.contains("Tag=latency,") && text.contains("HISTF"),
        "{text}"
    );

    // A bound every rate meets: both points, the higher rate wins.
    let json = dir.join("sweep.json");
    let sweep = |bound: &str, label: &str| {
        let mut cmd = loadgen(&[
            "sweep",
            "--rates",
            "1000,2000",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--p99",
            bound,
            "-q",
            "--json",
        ]);
        cmd.arg(&json);
        let (s, p) = run_with_timeout(cmd, label, Duration::from_secs(60));
        assert!(s.success(), "{}", p.stderr_text());
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        (v, p.stdout_text())
    };
    let (v, _) = sweep("10s", "lg-sweep");
    assert_eq!(v["points"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["best_rate"], 2000.0, "{v}");
    // A bound nothing meets: it stops after the first rate, with no answer.
    let (v, out) = sweep("1us", "lg-sweep-none");
    assert_eq!(v["points"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(v["best_rate"].is_null(), "{v}");
    assert!(out.contains("no rate met"), "{out}");
}

/// A fake BTP server: accepts the upgrade and auth, then answers every
/// ILP Prepare with garbage (alternately a Response whose ILP packet is
/// malformed, and bytes that are not BTP at all).
fn garbage_btp_server(l: std::net::TcpListener) {
    use bytes::BytesMut;
    use ilpd_codec::btp::{self, Btp};
    use ilpd_codec::ws::{self, Decoder, Message, Opcode, Role};
    use std::io::{Read, Write};
    l.set_nonblocking(true).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let mut handles = Vec::new();
    while Instant::now() < end && handles.len() < 2 {
        let Ok((mut s, _)) = l.accept() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        handles.push(std::thread::spawn(move || {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = BytesMut::new();
            let mut tmp = [0u8; 4096];
            loop {
                if let Ok(Some((hs, n))) = ws::parse_client_handshake(&buf) {
                    let mut out = BytesMut::new();
                    ws::write_server_handshake(&mut out, &ws::accept_key(hs.key));
                    s.write_all(&out).unwrap();
                    let _ = buf.split_to(n);
                    break;
                }
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            let mut dec = Decoder::new(Role::Server, 1 << 20);
            let mut authed = false;
            let mut k = 0u32;
            loop {
                while let Ok(Some(m)) = dec.decode(&mut buf) {
                    let Message::Binary(p) = m else { continue };
                    let Ok(b) = Btp::new_checked(&p[..]) else {
                        continue;
                    };
                    let mut reply = BytesMut::new();
                    if !authed {
                        authed = true;
                        btp::write_empty_response(&mut reply, b.request_id());
                    } else if b.ilp().is_some() {
                        k += 1;
                        if k.is_multiple_of(2) {
                            btp::write_ilp_response(&mut reply, b.request_id(), b"\x0d\x05junk!");
                        } else {
                            reply.extend_from_slice(b"\x01\x02");
                        }
                    } else {
                        continue;
                    }
                    let mut frame = BytesMut::new();
                    ws::write_frame(&mut frame, Opcode::Binary, &reply, None);
                    if s.write_all(&frame).is_err() {
                        return;
                    }
                }
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
}

#[test]
fn loadgen_malformed_replies_are_counted_not_fatal() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || garbage_btp_server(l));
    let url = format!("btp+ws://x:y@127.0.0.1:{port}/");
    let t = Instant::now();
    let (status, v, p) = run_json(
        "lg-garbage",
        &[
            "run",
            "--send",
            &url,
            "--recv",
            &url,
            "--recv-address",
            "test.fake",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--window",
            "4",
            "--drain",
            "1s",
        ],
        Duration::from_secs(30),
    );
    // Nothing was fulfilled: exit 1, with a report and no panic.
    assert_eq!(status.code(), Some(1), "{}", p.stderr_text());
    assert!(!p.stderr_text().contains("panicked"), "{}", p.stderr_text());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(u(&v, &["packets", "fulfilled"]), 0);
    assert!(
        u(&v, &["packets", "transport_errors"]) >= 1,
        "{}",
        v["packets"]
    );
    let errors = v["errors"].to_string();
    assert!(errors.contains("malformed ILP reply"), "{errors}");
    assert!(errors.contains("malformed BTP packet"), "{errors}");
    assert!(
        errors.contains(&format!("send link btp+ws://127.0.0.1:{port}/")),
        "{errors}"
    );
    let _ = server.join();
}

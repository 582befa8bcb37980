//! Peer isolation (issue 16) with real processes: one slow or idle client
//! costs the others nothing. So far: a metrics client that trickles its
//! request cannot hold the endpoint, idle ILP-over-HTTP connections are
//! closed after `http_idle_timeout_ms`, not minutes later, and when file
//! descriptors run out a peer waiting in the backlog is still accepted once
//! some are free (no new connection needed to wake the listener), and an
//! address that keeps failing auth is throttled while established peers
//! keep working.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ilpd_tests::btp_client as bc;
use ilpd_tests::{free_ports, ilpd};

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn config(p: &[u16], extra: &str) -> String {
    format!(
        r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
threads = 1
pin_cores = false
listen = "127.0.0.1:{}"
metrics_addr = "127.0.0.1:{}"
http_listen = "127.0.0.1:{}"
log_level = "warn"
durability = "none"
{extra}

[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "alice-token"
"#,
        p[0], p[1], p[2]
    )
}

#[test]
fn a_trickling_metrics_client_cannot_hold_the_endpoint() {
    let p = free_ports(3);
    let _node = ilpd::start(&config(&p, ""), addr(p[0]), "ilpd");
    let metrics = addr(p[1]);
    // A request trickling in, one byte every 1.5 s.
    let mut slow = TcpStream::connect(metrics).unwrap();
    let trickle = std::thread::spawn(move || {
        let t0 = Instant::now();
        for b in b"GE" {
            slow.write_all(&[*b]).unwrap();
            std::thread::sleep(Duration::from_millis(1500));
        }
        let mut answer = String::new();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = slow.read_to_string(&mut answer);
        (t0.elapsed(), answer)
    });
    // Meanwhile every scrape is answered at once.
    for _ in 0..10 {
        let t = Instant::now();
        let (status, body) = bc::http_get(metrics, "/metrics").expect("scrape");
        assert_eq!(status, 200);
        assert!(body.contains("ilpd_account_balance"));
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "a scrape took {:?} beside a slow client",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (took, answer) = trickle.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(took < Duration::from_secs(5), "cut off after {took:?}");
}

#[test]
fn idle_http_connections_are_closed_after_the_idle_timeout() {
    let p = free_ports(3);
    let _node = ilpd::start(
        &config(&p, "http_idle_timeout_ms = 600"),
        addr(p[0]),
        "ilpd",
    );
    let http = addr(p[2]);
    assert!(ilpd_tests::wait_for_port(http, Duration::from_secs(5)));
    // One connection that never sends, one that sends a request and then
    // goes quiet.
    let mut quiet = TcpStream::connect(http).unwrap();
    let mut used = TcpStream::connect(http).unwrap();
    used.write_all(b"POST /ilp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer alice-token\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    for s in [&mut quiet, &mut used] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(2500),
        "closed after {took:?}, want about 0.6 s"
    );
}

#[test]
fn out_of_file_descriptors_a_waiting_peer_is_accepted_once_some_free_up() {
    let p = free_ports(3);
    let listen = addr(p[0]);
    let cfg = config(&p, "handshake_timeout_ms = 800");
    let file = ilpd_tests::temp_dir("cfg").join("ilpd.toml");
    std::fs::write(&file, cfg).unwrap();
    // A hard limit of 40 descriptors: ilpd cannot raise it.
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--nofile=40:40")
        .arg(ilpd_tests::bin_path("ilpd"))
        .arg("--config")
        .arg(&file);
    let mut node = ilpd_tests::Proc::spawn(cmd, "ilpd-fd");
    assert!(ilpd_tests::wait_for_port(listen, Duration::from_secs(10)));
    // 60 idle connections: the kernel completes them all, ilpd runs out
    // of descriptors part way.
    let idle: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(listen).unwrap())
        .collect();
    // A real peer behind them in the backlog. The idle ones are closed by
    // the handshake timeout; nothing else connects after this one.
    let t = Instant::now();
    let c = bc::BtpClient::connect_auth(listen, Some("alice"), "alice-token");
    let took = t.elapsed();
    drop(idle);
    node.terminate();
    let err = node.stderr_text();
    assert!(
        c.is_ok(),
        "the waiting peer was never served: {:?}\n{err}",
        c.err()
    );
    assert!(err.contains("Too many open files"), "{err}");
    assert!(took < Duration::from_secs(5), "served after {took:?}");
}

#[test]
fn failed_auth_is_throttled_per_address_and_established_peers_keep_working() {
    let p = free_ports(3);
    let listen = addr(p[0]);
    let cfg = config(&p, "auth_failures_per_ip_per_min = 60");
    let _node = ilpd::start(&cfg, listen, "ilpd");
    let mut alice = bc::BtpClient::connect_auth(listen, Some("alice"), "alice-token").unwrap();
    // Guess for 2 s as fast as possible, over BTP and HTTP in turn (one
    // throttle for both listeners).
    let http_guess = || {
        let mut h = TcpStream::connect(addr(p[2])).unwrap();
        let _ = h.write_all(
            b"POST /ilp HTTP/1.1\r\nAuthorization: Bearer guess\r\nContent-Length: 0\r\n\r\n",
        );
        h.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut answer = Vec::new();
        let _ = h.read_to_end(&mut answer);
        answer
    };
    let (mut answered, mut btp_refused, mut http_refused) = (0, 0, 0);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        match bc::BtpClient::connect_auth(listen, Some("alice"), "guess") {
            Ok(_) => panic!("a wrong token was accepted"),
            Err(e) if e.starts_with("auth answered") => answered += 1,
            Err(_) => btp_refused += 1,
        }
        let a = http_guess();
        if a.is_empty() {
            http_refused += 1;
        } else {
            assert!(
                a.starts_with(b"HTTP/1.1 401"),
                "{}",
                String::from_utf8_lossy(&a)
            );
            answered += 1;
        }
    }
    // A burst of 10, then one a second.
    assert!(answered <= 15, "{answered} guesses were answered in 2 s");
    assert!(
        btp_refused > 0 && http_refused > 0,
        "{btp_refused} {http_refused}"
    );
    let refused = btp_refused + http_refused;
    // The established peer is untouched.
    let req = ilpd_codec::peer::balance::request_prepare(ilpd_codec::types::Expiry(
        bc::unix_ms() + 5_000,
    ));
    let id = alice.send_prepare(&req).unwrap();
    let r = alice.read_btp(Duration::from_secs(5)).unwrap();
    assert_eq!(r.request_id, id);
    let throttled = bc::scrape(addr(p[1]), "ilpd_io_auth_throttled_total", "").unwrap();
    assert!(throttled >= refused as f64, "{throttled} < {refused}");
}

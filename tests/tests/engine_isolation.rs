//! Peer isolation (issue 16) with real processes: one slow or idle client
//! costs the others nothing. So far: a metrics client that trickles its
//! request cannot hold the endpoint, and idle ILP-over-HTTP connections
//! are closed after `http_idle_timeout_ms`, not minutes later.

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
link = "http"
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

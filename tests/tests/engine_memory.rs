//! Memory per in-flight packet: hold a known number of forwarded Prepares
//! unanswered and compare ilpd's resident set size before and after.
//! Also: a peer that stops reading cannot grow ilpd's memory without bound
//! (its connection is closed as a slow reader).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ilpd_codec::btp::BtpType;
use ilpd_tests::btp_client::{self as bc, BtpClient, ReadError};
use ilpd_tests::{free_ports, ilpd};

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn config(port: u16, metrics: u16, write_limit: usize, extra: &str) -> String {
    format!(
        r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
threads = 1
pin_cores = false
listen = "127.0.0.1:{port}"
metrics_addr = "127.0.0.1:{metrics}"
max_in_flight = 100000
# One account fills the table here (memory per packet, not fairness).
max_in_flight_per_account = 100000
write_buffer_limit = {write_limit}
log_level = "warn"
{extra}
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

/// Sends `n` Prepares from alice to bob; bob reads them and never answers.
fn hold(
    listen: SocketAddr,
    m: SocketAddr,
    alice: &mut BtpClient,
    bob: &mut BtpClient,
    n: usize,
    tag: u8,
) {
    let expiry = bc::unix_ms() + 60_000;
    let mut received = 0;
    for i in 0..n {
        let mut cond = [tag; 32];
        cond[..8].copy_from_slice(&(i as u64).to_be_bytes());
        alice
            .send_prepare(&bc::prepare(1, expiry, &cond, "test.ilpd.bob", b""))
            .unwrap();
        // Keep bob's side drained as we go.
        while let Ok(p) = bob.read_btp(Duration::from_millis(0)) {
            assert_eq!(p.ty, BtpType::Message);
            received += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while received < n && Instant::now() < deadline {
        match bob.read_btp(Duration::from_millis(200)) {
            Ok(_) => received += 1,
            Err(ReadError::Timeout) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(received, n);
    let _ = listen;
    let in_flight = bc::scrape(m, "ilpd_in_flight", "worker=\"0\"").unwrap();
    assert!(in_flight >= n as f64, "in flight {in_flight}");
}

#[test]
fn memory_per_in_flight_packet_is_bounded() {
    let p = free_ports(2);
    let (listen, m) = (addr(p[0]), addr(p[1]));
    let node = ilpd::start(&config(p[0], p[1], 4 << 20, ""), listen, "ilpd-mem");
    let mut alice = BtpClient::connect_auth(listen, None, "alice-token").unwrap();
    let mut bob = BtpClient::connect_auth(listen, None, "bob-token").unwrap();
    // Warm up allocators and buffers, then measure a second, larger batch.
    hold(listen, m, &mut alice, &mut bob, 5_000, 1);
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(node.id());
    let n = 50_000;
    hold(listen, m, &mut alice, &mut bob, n, 2);
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kib(node.id());
    let per_packet = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    eprintln!("RSS {before} KiB -> {after} KiB with {n} more packets in flight: {per_packet:.0} bytes/packet");
    assert!(before > 0 && after > 0, "cannot read /proc/<pid>/status");
    assert!(
        per_packet < 1024.0,
        "{per_packet} bytes per in-flight packet"
    );
}

#[test]
fn a_peer_that_stops_reading_is_closed_as_a_slow_reader() {
    let p = free_ports(2);
    let (listen, m) = (addr(p[0]), addr(p[1]));
    // Small write buffer limit (≥ max_message_size 64 KiB).
    let _node = ilpd::start(
        &config(
            p[0],
            p[1],
            64 * 1024,
            "socket_send_buffer = 65536\nsocket_recv_buffer = 65536",
        ),
        listen,
        "ilpd-slow",
    );
    let mut alice = BtpClient::connect_auth(listen, None, "alice-token").unwrap();
    // bob authenticates and then never reads again.
    let mut bob = BtpClient::connect_auth(listen, None, "bob-token").unwrap();
    let mut reader = alice.try_clone().unwrap();
    let data = vec![0x55u8; 30_000];
    let expiry = bc::unix_ms() + 60_000;
    // Keep alice's replies drained in the background.
    let drain = std::thread::spawn(move || {
        let mut got = 0usize;
        loop {
            match reader.read_btp(Duration::from_secs(3)) {
                Ok(_) => got += 1,
                Err(_) => return got,
            }
        }
    });
    let start = Instant::now();
    let mut closed = false;
    for i in 0..2_000u32 {
        let mut cond = [9u8; 32];
        cond[..4].copy_from_slice(&i.to_be_bytes());
        if alice
            .send_prepare(&bc::prepare(1, expiry, &cond, "test.ilpd.bob", &data))
            .is_err()
        {
            break;
        }
        if i % 50 == 0 {
            let v = bc::scrape(
                m,
                "ilpd_io_connections_closed_total",
                "reason=\"slow_reader\"",
            )
            .unwrap_or(0.0);
            if v >= 1.0 {
                closed = true;
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !closed && Instant::now() < deadline {
        closed = bc::scrape(
            m,
            "ilpd_io_connections_closed_total",
            "reason=\"slow_reader\"",
        )
        .unwrap_or(0.0)
            >= 1.0;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(closed, "bob was never closed as a slow reader");
    assert!(bob.closed_within(Duration::from_secs(10)));
    // Its in-flight packets were failed at once (T01), so nothing stays reserved.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = bc::scrape(
            m,
            "ilpd_account_reserved",
            "account=\"alice\",direction=\"incoming\"",
        )
        .unwrap();
        if r == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "alice still has {r} reserved");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(alice);
    let _ = drain.join();
}

#[test]
fn memory_per_idle_connection_is_bounded() {
    let p = free_ports(2);
    let (listen, m) = (addr(p[0]), addr(p[1]));
    let node = ilpd::start(&config(p[0], p[1], 4 << 20, ""), listen, "ilpd-conns");
    // Warm up, then measure 400 more authenticated, idle connections.
    let mut keep: Vec<BtpClient> = (0..50)
        .map(|_| BtpClient::connect_auth(listen, None, "alice-token").unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(node.id());
    let n = 400;
    keep.extend((0..n).map(|_| BtpClient::connect_auth(listen, None, "alice-token").unwrap()));
    let open = bc::scrape(m, "ilpd_io_connections_open", "worker=\"0\"").unwrap();
    assert_eq!(open, (n + 50) as f64);
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kib(node.id());
    let per_conn = after.saturating_sub(before) as f64 / n as f64;
    eprintln!("RSS {before} KiB -> {after} KiB with {n} more idle connections: {per_conn:.1} KiB/connection");
    assert!(per_conn < 64.0, "{per_conn} KiB per idle connection");
}

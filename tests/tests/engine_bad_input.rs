//! ilpd against peers that misbehave: each bad input closes (or rejects on)
//! that one connection only; every other peer keeps working.

use std::net::SocketAddr;
use std::time::Duration;

use ilpd_codec::btp::{self, BtpType, ProtocolData};
use ilpd_tests::btp_client::{self as bc, BtpClient, ReadError, Reply};
use ilpd_tests::{free_ports, ilpd, Proc};
use sha2::{Digest, Sha256};

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

struct Node {
    _proc: Proc,
    listen: SocketAddr,
    metrics: SocketAddr,
}

/// alice and bob, with a short handshake timeout and the smallest message
/// size limit, so the bad-input cases are quick.
fn start(label: &str) -> Node {
    let p = free_ports(2);
    let cfg = format!(
        r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
threads = 1
pin_cores = false
listen = "127.0.0.1:{}"
metrics_addr = "127.0.0.1:{}"
handshake_timeout_ms = 400
max_message_size = 1024
write_buffer_limit = 65536
log_level = "warn"
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
"#,
        p[0], p[1]
    );
    let proc = ilpd::start(&cfg, addr(p[0]), label);
    Node {
        _proc: proc,
        listen: addr(p[0]),
        metrics: addr(p[1]),
    }
}

fn condition(f: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(f).into()
}

/// A full round trip alice → bob → alice still works on fresh connections.
fn assert_round_trip(n: &Node) {
    let mut alice = BtpClient::connect_auth(n.listen, None, "alice-token").unwrap();
    let mut bob = BtpClient::connect_auth(n.listen, None, "bob-token").unwrap();
    round_trip(&mut alice, &mut bob, [5; 32]);
}

fn round_trip(alice: &mut BtpClient, bob: &mut BtpClient, f: [u8; 32]) {
    let id = alice
        .send_prepare(&bc::prepare(
            10,
            bc::unix_ms() + 30_000,
            &condition(&f),
            "test.ilpd.bob",
            b"",
        ))
        .unwrap();
    let p = bob
        .read_btp(Duration::from_secs(5))
        .expect("bob gets the Prepare");
    assert_eq!(p.ty, BtpType::Message);
    bob.send_response(p.request_id, &bc::fulfill(&f, b""))
        .unwrap();
    let r = alice
        .read_btp(Duration::from_secs(5))
        .expect("alice gets the answer");
    assert_eq!(r.request_id, id);
    assert_eq!(
        bc::parse_ilp(&r.ilp.unwrap()),
        Reply::Fulfill { fulfillment: f }
    );
}

/// Waits (bounded) until at least `min` connections were closed for
/// `reason`; the peer may see the close just before the counter moves.
fn closed_reason(n: &Node, reason: &str, min: f64) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = bc::scrape(
            n.metrics,
            "ilpd_io_connections_closed_total",
            &format!("reason=\"{reason}\""),
        )
        .unwrap_or(-1.0);
        if v >= min || std::time::Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Nothing reaches bob within a short wait.
fn assert_bob_idle(bob: &mut BtpClient) {
    match bob.read_btp(Duration::from_millis(400)) {
        Err(ReadError::Timeout) => {}
        other => panic!("bob received something: {other:?}"),
    }
}

#[test]
fn wrong_token_gets_btp_error_then_close_and_nothing_is_processed() {
    let n = start("ilpd-wrong-token");
    let mut bob = BtpClient::connect_auth(n.listen, None, "bob-token").unwrap();
    let mut mallory = BtpClient::connect(n.listen).unwrap();
    // Auth with a wrong token and, right behind it, a Prepare for bob.
    let id = mallory.send_auth(Some("alice"), "not-the-token").unwrap();
    mallory
        .send_prepare(&bc::prepare(
            10,
            bc::unix_ms() + 30_000,
            &[0; 32],
            "test.ilpd.bob",
            b"",
        ))
        .unwrap();
    let e = mallory
        .read_btp(Duration::from_secs(5))
        .expect("a BTP Error");
    assert_eq!((e.ty, e.request_id), (BtpType::Error, id));
    assert_eq!(&e.error_code, b"F00");
    assert_eq!(e.error_name, b"NotAcceptedError");
    assert!(mallory.closed_within(Duration::from_secs(5)));
    assert_bob_idle(&mut bob);
    // The right token under another account's username is refused too.
    let mut c = BtpClient::connect(n.listen).unwrap();
    c.send_auth(Some("alice"), "bob-token").unwrap();
    let e = c.read_btp(Duration::from_secs(5)).expect("a BTP Error");
    assert_eq!((e.ty, &e.error_code), (BtpType::Error, b"F00"));
    assert!(c.closed_within(Duration::from_secs(5)));
    assert!(bc::scrape(n.metrics, "ilpd_io_auth_failures_total", "").unwrap() >= 2.0);
    let mut alice = BtpClient::connect_auth(n.listen, None, "alice-token").unwrap();
    round_trip(&mut alice, &mut bob, [4; 32]);
}

#[test]
fn missing_token_or_no_auth_first_is_refused() {
    let n = start("ilpd-no-auth");
    let mut bob = BtpClient::connect_auth(n.listen, None, "bob-token").unwrap();
    // `auth` without `auth_token`.
    let mut c = BtpClient::connect(n.listen).unwrap();
    let mut b = Vec::new();
    btp::write_packet(
        &mut b,
        BtpType::Message,
        9,
        &[ProtocolData::new(b"auth", 0, b"")],
    );
    c.send_frame(bc::OP_BINARY, &b).unwrap();
    let e = c.read_btp(Duration::from_secs(5)).expect("a BTP Error");
    assert_eq!((e.ty, &e.error_code), (BtpType::Error, b"F00"));
    assert!(c.closed_within(Duration::from_secs(5)));
    // A Prepare before any auth.
    let mut c = BtpClient::connect(n.listen).unwrap();
    c.send_prepare(&bc::prepare(
        10,
        bc::unix_ms() + 30_000,
        &[0; 32],
        "test.ilpd.bob",
        b"",
    ))
    .unwrap();
    let e = c.read_btp(Duration::from_secs(5)).expect("a BTP Error");
    assert_eq!((e.ty, &e.error_code), (BtpType::Error, b"F00"));
    assert!(c.closed_within(Duration::from_secs(5)));
    assert_bob_idle(&mut bob);
}

#[test]
fn no_handshake_within_the_timeout_is_closed() {
    let n = start("ilpd-timeout");
    // Silent TCP connection.
    let mut silent = BtpClient::connect_tcp(n.listen).unwrap();
    // Upgraded but never authenticates.
    let mut no_auth = BtpClient::connect(n.listen).unwrap();
    assert!(
        silent.closed_within(Duration::from_secs(3)),
        "silent connection not closed"
    );
    assert!(
        no_auth.closed_within(Duration::from_secs(3)),
        "unauthenticated connection not closed"
    );
    assert!(closed_reason(&n, "handshake_timeout", 2.0) >= 2.0);
    // An authenticated connection is not subject to the timeout.
    let mut alice = BtpClient::connect_auth(n.listen, None, "alice-token").unwrap();
    let mut bob = BtpClient::connect_auth(n.listen, None, "bob-token").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    round_trip(&mut alice, &mut bob, [6; 32]);
}

#[test]
fn bad_http_upgrade_gets_400() {
    let n = start("ilpd-bad-upgrade");
    let mut c = BtpClient::connect_tcp(n.listen).unwrap();
    c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut s = std::net::TcpStream::connect(n.listen).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 400"), "{text:?}");
    assert!(c.closed_within(Duration::from_secs(5)));
    assert_round_trip(&n);
}

#[test]
fn oversized_websocket_frame_closes_the_connection() {
    let n = start("ilpd-oversized");
    let mut alice = BtpClient::connect_auth(n.listen, None, "alice-token").unwrap();
    let mut bob = BtpClient::connect_auth(n.listen, None, "bob-token").unwrap();
    let mut big = BtpClient::connect_auth(n.listen, None, "alice-token").unwrap();
    let data = vec![0u8; 1500];
    big.send_prepare(&bc::prepare(
        10,
        bc::unix_ms() + 30_000,
        &[0; 32],
        "test.ilpd.bob",
        &data,
    ))
    .unwrap();
    assert!(big.closed_within(Duration::from_secs(5)));
    assert_bob_idle(&mut bob);
    assert!(closed_reason(&n, "oversized", 1.0) >= 1.0);
    round_trip(&mut alice, &mut bob, [8; 32]);
}

#[test]
fn malformed_ilp_in_valid_btp_gets_f01_and_the_connection_stays_up() {
    let n = start("ilpd-bad-ilp");
    let mut alice = BtpClient::connect_auth(n.listen, None, "alice-token").unwrap();
    let mut bob = BtpClient::connect_auth(n.listen, None, "bob-token").unwrap();
    let id = alice.send_prepare(b"\x0c\x05garbage").unwrap();
    let r = alice.read_btp(Duration::from_secs(5)).expect("a Response");
    assert_eq!((r.ty, r.request_id), (BtpType::Response, id));
    match bc::parse_ilp(&r.ilp.unwrap()) {
        Reply::Reject {
            code, triggered_by, ..
        } => assert_eq!((code.as_str(), triggered_by.as_str()), ("F01", "test.ilpd")),
        other => panic!("{other:?}"),
    }
    assert_bob_idle(&mut bob);
    round_trip(&mut alice, &mut bob, [9; 32]);
}

#[test]
fn malformed_btp_or_framing_closes_only_that_connection() {
    let n = start("ilpd-bad-btp");
    let mut alice = BtpClient::connect_auth(n.listen, None, "alice-token").unwrap();
    let mut bob = BtpClient::connect_auth(n.listen, None, "bob-token").unwrap();

    // Truncated BTP packet in a valid frame.
    let mut c = BtpClient::connect_auth(n.listen, None, "alice-token").unwrap();
    c.send_frame(bc::OP_BINARY, b"\x06\x00\x00\x00\x01\x20\x01")
        .unwrap();
    assert!(c.closed_within(Duration::from_secs(5)), "malformed BTP");
    // Unmasked frame from a client (RFC 6455 §5.1).
    let mut c = BtpClient::connect_auth(n.listen, None, "alice-token").unwrap();
    c.send_raw(b"\x82\x02ab").unwrap();
    assert!(c.closed_within(Duration::from_secs(5)), "unmasked frame");
    // Reserved opcode.
    let mut c = BtpClient::connect_auth(n.listen, None, "alice-token").unwrap();
    c.send_frame(3, b"x").unwrap();
    assert!(c.closed_within(Duration::from_secs(5)), "reserved opcode");
    // Text frame: BTP is binary only.
    let mut c = BtpClient::connect_auth(n.listen, None, "alice-token").unwrap();
    c.send_frame(bc::OP_TEXT, b"hello").unwrap();
    assert!(c.closed_within(Duration::from_secs(5)), "text frame");

    assert!(closed_reason(&n, "protocol_error", 4.0) >= 4.0);
    // The established peers never noticed.
    round_trip(&mut alice, &mut bob, [10; 32]);
}

#[test]
fn unknown_side_protocols_get_a_btp_error_and_the_connection_stays_up() {
    let n = start("ilpd-side-protocol");
    let mut alice = BtpClient::connect_auth(n.listen, None, "alice-token").unwrap();
    let mut bob = BtpClient::connect_auth(n.listen, None, "bob-token").unwrap();
    let mut b = Vec::new();
    btp::write_packet(
        &mut b,
        BtpType::Message,
        77,
        &[ProtocolData::new(b"paychan", 0, b"claim")],
    );
    alice.send_frame(bc::OP_BINARY, &b).unwrap();
    let e = alice.read_btp(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (e.ty, e.request_id, &e.error_code),
        (BtpType::Error, 77, b"F00")
    );
    // No protocolData at all: an empty Response.
    let mut b = Vec::new();
    btp::write_packet(&mut b, BtpType::Message, 78, &[]);
    alice.send_frame(bc::OP_BINARY, &b).unwrap();
    let r = alice.read_btp(Duration::from_secs(5)).unwrap();
    assert_eq!((r.ty, r.request_id, r.ilp), (BtpType::Response, 78, None));
    round_trip(&mut alice, &mut bob, [11; 32]);
}

#[test]
fn random_bytes_never_take_the_node_down() {
    let n = start("ilpd-garbage");
    let mut alice = BtpClient::connect_auth(n.listen, None, "alice-token").unwrap();
    let mut bob = BtpClient::connect_auth(n.listen, None, "bob-token").unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..60 {
        let len = (next() % 3000) as usize;
        let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let r = match i % 3 {
            // Raw junk instead of an HTTP upgrade.
            0 => BtpClient::connect_tcp(n.listen).and_then(|mut c| c.send_raw(&junk)),
            // Junk after the upgrade (random frames).
            1 => BtpClient::connect(n.listen).and_then(|mut c| c.send_raw(&junk)),
            // Junk BTP inside well-formed frames after auth.
            _ => BtpClient::connect_auth(n.listen, None, "alice-token")
                .map_err(std::io::Error::other)
                .and_then(|mut c| c.send_frame(bc::OP_BINARY, &junk)),
        };
        // The node may close on us mid-write; that is fine.
        let _ = r;
    }
    round_trip(&mut alice, &mut bob, [12; 32]);
}

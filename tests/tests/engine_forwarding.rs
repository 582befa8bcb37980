//! ilpd forwarding over real BTP/WebSocket connections on 127.0.0.1: two
//! clients through one node, a client-side BTP account between two nodes,
//! several workers with packets crossing between them, and conservation of
//! balances under concurrent load with random outcomes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ilpd_codec::btp::BtpType;
use ilpd_tests::btp_client::{self as bc, BtpClient, ReadError, Reply};
use ilpd_tests::{free_ports, ilpd, Proc};
use sha2::{Digest, Sha256};

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// A node with children alice and bob (same asset, no spread).
fn two_children(port: u16, metrics: u16, threads: usize) -> String {
    format!(
        r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
threads = {threads}
pin_cores = false
listen = "127.0.0.1:{port}"
metrics_addr = "127.0.0.1:{metrics}"
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
"#
    )
}

/// Polls a metric until `pred` holds (bounded).
fn wait_metric(m: SocketAddr, name: &str, labels: &str, pred: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = bc::scrape(m, name, labels);
        if let Some(v) = v {
            if pred(v) {
                return v;
            }
        }
        if Instant::now() > deadline {
            panic!("metric {name}{{{labels}}} = {v:?} did not reach the expected value");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn balance(m: SocketAddr, account: &str) -> i64 {
    bc::scrape(m, "ilpd_account_balance", &format!("account=\"{account}\""))
        .expect("balance metric") as i64
}

fn reserved(m: SocketAddr, account: &str, dir: &str) -> i64 {
    bc::scrape(
        m,
        "ilpd_account_reserved",
        &format!("account=\"{account}\",direction=\"{dir}\""),
    )
    .expect("reserved metric") as i64
}

/// Reads the next Prepare that arrives on `c`; returns (request id, packet).
fn next_prepare(c: &mut BtpClient) -> (u32, Vec<u8>) {
    let p = c.read_btp(Duration::from_secs(10)).expect("a Prepare");
    assert_eq!(p.ty, BtpType::Message, "{p:?}");
    (p.request_id, p.ilp.expect("ilp entry"))
}

/// Reads the Response to request `id`; returns its ILP reply.
fn reply_to(c: &mut BtpClient, id: u32) -> Reply {
    let p = c.read_btp(Duration::from_secs(10)).expect("a Response");
    assert_eq!((p.ty, p.request_id), (BtpType::Response, id), "{p:?}");
    bc::parse_ilp(&p.ilp.expect("ilp entry"))
}

#[test]
fn alice_pays_bob_through_ilpd() {
    let p = free_ports(2);
    let (listen, m) = (addr(p[0]), addr(p[1]));
    let _node = ilpd::start(&two_children(p[0], p[1], 1), listen, "ilpd");
    // ilp-plugin-btp sends an empty auth_username when its URL has no user.
    let mut bob = BtpClient::connect_auth(listen, Some(""), "bob-token").expect("bob auth");
    let mut alice =
        BtpClient::connect_auth(listen, Some("alice"), "alice-token").expect("alice auth");

    // Fulfilled: alice now owes us 1000, we owe bob 1000.
    let f = [7u8; 32];
    let sent_expiry = bc::unix_ms() + 30_000;
    let id = alice
        .send_prepare(&bc::prepare(
            1000,
            sent_expiry,
            &sha256(&f),
            "test.ilpd.bob.x",
            b"hi",
        ))
        .unwrap();
    let (rid, pkt) = next_prepare(&mut bob);
    match bc::parse_ilp(&pkt) {
        Reply::Prepare {
            amount,
            destination,
            expires_ms,
            condition,
        } => {
            assert_eq!(amount, 1000);
            assert_eq!(destination, "test.ilpd.bob.x");
            assert_eq!(condition, sha256(&f));
            // min_message_window (1000 ms) was taken off (docs/design.md "Expiry").
            assert!(
                expires_ms <= sent_expiry - 1000,
                "{expires_ms} vs {sent_expiry}"
            );
        }
        other => panic!("bob got {other:?}"),
    }
    bob.send_response(rid, &bc::fulfill(&f, b"")).unwrap();
    assert_eq!(reply_to(&mut alice, id), Reply::Fulfill { fulfillment: f });
    assert_eq!(balance(m, "alice"), 1000);
    assert_eq!(balance(m, "bob"), -1000);

    // Rejected: passed back unchanged, balances untouched.
    let id = alice
        .send_prepare(&bc::prepare(
            50,
            bc::unix_ms() + 30_000,
            &sha256(&[1; 32]),
            "test.ilpd.bob",
            b"",
        ))
        .unwrap();
    let (rid, _) = next_prepare(&mut bob);
    bob.send_response(rid, &bc::reject("F99", "test.ilpd.bob", "nope"))
        .unwrap();
    match reply_to(&mut alice, id) {
        Reply::Reject {
            code,
            triggered_by,
            message,
        } => {
            assert_eq!(
                (code.as_str(), triggered_by.as_str(), message.as_str()),
                ("F99", "test.ilpd.bob", "nope")
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(balance(m, "alice"), 1000);
    assert_eq!(balance(m, "bob"), -1000);
    assert_eq!(reserved(m, "alice", "incoming"), 0);
    assert_eq!(reserved(m, "bob", "outgoing"), 0);

    // A BTP ping gets a pong; the metrics endpoint serves IO counters and 404s the rest.
    alice.send_frame(bc::OP_PING, b"p").unwrap();
    let f = alice.read_frame(Duration::from_secs(5)).unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (bc::OP_PONG, &b"p"[..]));
    let (status, body) = bc::http_get(m, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        bc::metric(&body, "ilpd_io_connections_open", "worker=\"0\""),
        Some(2.0),
        "{body}"
    );
    assert!(bc::metric(&body, "ilpd_io_bytes_in_total", "").unwrap() > 0.0);
    assert_eq!(bc::http_get(m, "/nope").unwrap().0, 404);
}

/// Node two: node one connects to it as account "one" (server side).
fn node_two(l2: SocketAddr, m2: SocketAddr) -> String {
    format!(
        r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.two"
threads = 1
pin_cores = false
listen = "{l2}"
metrics_addr = "{m2}"
log_level = "warn"
[[accounts]]
id = "one"
relation = "peer"
asset_code = "USD"
asset_scale = 9
incoming_token = "one-secret"
[[accounts]]
id = "bob"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "bob-token"
[[routes]]
prefix = "test.one"
account = "one"
"#
    )
}

/// Node one dials two (client side, one connection per worker: 2), with a
/// short first back-off.
fn node_one(l1: SocketAddr, m1: SocketAddr, l2: SocketAddr) -> String {
    format!(
        r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.one"
threads = 2
pin_cores = false
listen = "{l1}"
metrics_addr = "{m1}"
log_level = "warn"
reconnect_initial_ms = 50
[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "alice-token"
[[accounts]]
id = "two"
relation = "peer"
asset_code = "USD"
asset_scale = 9
btp_url = "ws://{l2}/"
outgoing_token = "one-secret"
btp_username = "one"
[[routes]]
prefix = "test.two"
account = "two"
"#
    )
}

#[test]
fn client_side_account_dials_the_other_node() {
    let p = free_ports(4);
    let (l1, m1, l2, m2) = (addr(p[0]), addr(p[1]), addr(p[2]), addr(p[3]));
    let (one, two) = (node_one(l1, m1, l2), node_two(l2, m2));
    // Start one first: it must keep retrying until two is up.
    let _n1 = ilpd::start(&one, l1, "ilpd-one");
    std::thread::sleep(Duration::from_millis(300));
    let _n2 = ilpd::start(&two, l2, "ilpd-two");
    wait_metric(m1, "ilpd_account_connections", "account=\"two\"", |v| {
        v == 2.0
    });
    wait_metric(m2, "ilpd_account_connections", "account=\"one\"", |v| {
        v == 2.0
    });

    let mut alice = BtpClient::connect_auth(l1, None, "alice-token").unwrap();
    let mut bob = BtpClient::connect_auth(l2, None, "bob-token").unwrap();

    // alice (on one) → two → bob, over the connection one dialled.
    let f = [42u8; 32];
    let id = alice
        .send_prepare(&bc::prepare(
            300,
            bc::unix_ms() + 30_000,
            &sha256(&f),
            "test.two.bob.z",
            b"",
        ))
        .unwrap();
    let (rid, pkt) = next_prepare(&mut bob);
    assert!(matches!(
        bc::parse_ilp(&pkt),
        Reply::Prepare { amount: 300, .. }
    ));
    bob.send_response(rid, &bc::fulfill(&f, b"")).unwrap();
    assert_eq!(reply_to(&mut alice, id), Reply::Fulfill { fulfillment: f });

    // And back the other way over the same connection: bob → one → alice.
    let g = [43u8; 32];
    let id = bob
        .send_prepare(&bc::prepare(
            100,
            bc::unix_ms() + 30_000,
            &sha256(&g),
            "test.one.alice",
            b"",
        ))
        .unwrap();
    let (rid, _) = next_prepare(&mut alice);
    alice.send_response(rid, &bc::fulfill(&g, b"")).unwrap();
    assert_eq!(reply_to(&mut bob, id), Reply::Fulfill { fulfillment: g });

    assert_eq!(
        (balance(m1, "alice"), balance(m1, "two")),
        (300 - 100, -300 + 100)
    );
    assert_eq!(
        (balance(m2, "one"), balance(m2, "bob")),
        (300 - 100, -300 + 100)
    );
}

/// Answers Prepares on one connection by a rule, until told to stop.
struct Responder {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

/// What a responder does with a Prepare whose data is `[kind] ++ fulfillment`.
const FULFILL: u8 = 0;
const REJECT: u8 = 1;
const WRONG_FULFILLMENT: u8 = 2;
const NO_ANSWER: u8 = 3;

impl Responder {
    fn spawn(mut c: BtpClient) -> Responder {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut answered = 0;
            while !s.load(Ordering::Relaxed) {
                let p = match c.read_btp(Duration::from_millis(100)) {
                    Ok(p) => p,
                    Err(ReadError::Timeout) => continue,
                    Err(_) => break,
                };
                let Some(ilp) = p.ilp.filter(|_| p.ty == BtpType::Message) else {
                    continue;
                };
                let Reply::Prepare { .. } = bc::parse_ilp(&ilp) else {
                    continue;
                };
                let data = prepare_data(&ilp);
                let mut f = [0u8; 32];
                f.copy_from_slice(&data[1..33]);
                let answer = match data[0] {
                    FULFILL => bc::fulfill(&f, b""),
                    REJECT => bc::reject("F99", "test.ilpd.bob", "rejected by the test"),
                    WRONG_FULFILLMENT => bc::fulfill(&[0xee; 32], b""),
                    _ => continue,
                };
                if c.send_response(p.request_id, &answer).is_err() {
                    break;
                }
                answered += 1;
            }
            answered
        });
        Responder {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().map(|h| h.join().unwrap()).unwrap_or(0)
    }
}

fn prepare_data(ilp: &[u8]) -> Vec<u8> {
    match ilpd_codec::Prepare::new_checked(ilp) {
        Ok(p) => p.data().to_vec(),
        Err(e) => panic!("bad prepare: {e}"),
    }
}

/// Sends `count` Prepares on `c` (pipelined: a reader thread collects the
/// replies) and returns (sum of fulfilled amounts, fulfilled, rejected by code).
fn send_batch(
    c: BtpClient,
    count: usize,
    seed: u64,
    kinds: &[u8],
    expiry_ms: impl Fn(u8) -> u64,
) -> (u64, usize, HashMap<String, usize>) {
    let mut writer = c.try_clone().unwrap();
    let mut reader = c;
    let amounts: Arc<Mutex<HashMap<u32, u64>>> = Arc::default();
    let amounts2 = amounts.clone();
    let collector = std::thread::spawn(move || {
        let mut sum = 0u64;
        let mut fulfilled = 0;
        let mut rejects: HashMap<String, usize> = HashMap::new();
        for _ in 0..count {
            let p = reader
                .read_btp(Duration::from_secs(20))
                .expect("every Prepare gets an answer");
            assert_eq!(p.ty, BtpType::Response, "{p:?}");
            match bc::parse_ilp(&p.ilp.expect("ilp")) {
                Reply::Fulfill { .. } => {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    let amt = loop {
                        if let Some(a) = amounts2.lock().unwrap().get(&p.request_id) {
                            break *a;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "unknown request id {}",
                            p.request_id
                        );
                        std::thread::sleep(Duration::from_millis(1));
                    };
                    sum += amt;
                    fulfilled += 1;
                }
                Reply::Reject { code, .. } => *rejects.entry(code).or_default() += 1,
                other => panic!("{other:?}"),
            }
        }
        (sum, fulfilled, rejects)
    });
    let mut x = seed | 1;
    for i in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let kind = kinds[(x % kinds.len() as u64) as usize];
        let amount = 1 + (x >> 20) % 1000;
        let mut f = [0u8; 32];
        f[..8].copy_from_slice(&seed.to_be_bytes());
        f[8..16].copy_from_slice(&(i as u64).to_be_bytes());
        let mut data = vec![kind];
        data.extend_from_slice(&f);
        let pkt = bc::prepare(
            amount,
            bc::unix_ms() + expiry_ms(kind),
            &sha256(&f),
            "test.ilpd.bob.load",
            &data,
        );
        // Record the amount before the answer can arrive.
        let id = {
            let mut m = amounts.lock().unwrap();
            let id = writer.next_request_id();
            m.insert(id, amount);
            id
        };
        let mut b = Vec::new();
        ilpd_codec::btp::write_ilp_message(&mut b, id, &pkt);
        writer.send_frame(bc::OP_BINARY, &b).unwrap();
    }
    collector.join().unwrap()
}

#[test]
fn packets_cross_workers() {
    let p = free_ports(2);
    let (listen, m) = (addr(p[0]), addr(p[1]));
    let _node = ilpd::start(&two_children(p[0], p[1], 2), listen, "ilpd-2w");
    // One bob connection (on one worker); many alice connections, so some
    // land on the other worker (SO_REUSEPORT spreads them) and their
    // packets must cross.
    let bob = BtpClient::connect_auth(listen, None, "bob-token").unwrap();
    let responder = Responder::spawn(bob);
    let alices: Vec<BtpClient> = (0..12)
        .map(|_| BtpClient::connect_auth(listen, None, "alice-token").unwrap())
        .collect();
    let w0 = bc::scrape(m, "ilpd_io_connections_open", "worker=\"0\"").unwrap();
    let w1 = bc::scrape(m, "ilpd_io_connections_open", "worker=\"1\"").unwrap();
    assert_eq!(w0 + w1, 13.0);
    assert!(
        w0 > 0.0 && w1 > 0.0,
        "connections all on one worker: {w0} / {w1}"
    );

    let total = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = alices
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let total = total.clone();
            std::thread::spawn(move || {
                let (sum, n, rejects) = send_batch(a, 30, 1000 + i as u64, &[FULFILL], |_| 20_000);
                assert_eq!((n, rejects.len()), (30, 0), "{rejects:?}");
                total.fetch_add(sum, Ordering::Relaxed);
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(responder.stop(), 12 * 30);
    let total = total.load(Ordering::Relaxed) as i64;
    assert_eq!(balance(m, "alice"), total);
    assert_eq!(balance(m, "bob"), -total);
}

/// Concurrent load with every outcome: fulfilled, rejected, wrong
/// fulfillment (F05, not credited), no answer (expires), and the next hop
/// disconnecting with packets in flight (T01 at once). Afterwards every
/// balance is exactly the sum of the fulfilled packets and nothing is
/// reserved or in flight.
#[test]
fn balances_are_conserved_under_random_outcomes() {
    let p = free_ports(2);
    let (listen, m) = (addr(p[0]), addr(p[1]));
    let _node: Proc = ilpd::start(&two_children(p[0], p[1], 2), listen, "ilpd-conserve");
    let responders: Vec<Responder> = (0..2)
        .map(|_| Responder::spawn(BtpClient::connect_auth(listen, None, "bob-token").unwrap()))
        .collect();
    // A bob connection that never answers and drops mid-flight.
    let flaky = BtpClient::connect_auth(listen, None, "bob-token").unwrap();
    let flaky_reader = {
        let mut r = flaky.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut held = 0;
            let deadline = Instant::now() + Duration::from_secs(10);
            while held < 20 && Instant::now() < deadline {
                if let Ok(p) = r.read_btp(Duration::from_millis(100)) {
                    if p.ty == BtpType::Message {
                        held += 1;
                    }
                }
            }
            r.shutdown();
            held
        })
    };

    let total = Arc::new(AtomicU64::new(0));
    let codes: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let senders: Vec<_> = (0..4)
        .map(|i| {
            let a = BtpClient::connect_auth(listen, Some("alice"), "alice-token").unwrap();
            let (total, codes) = (total.clone(), codes.clone());
            std::thread::spawn(move || {
                let kinds = [
                    FULFILL,
                    FULFILL,
                    FULFILL,
                    REJECT,
                    WRONG_FULFILLMENT,
                    NO_ANSWER,
                ];
                // Short expiries for the unanswered ones: 2.5 s − 1 s window.
                let (sum, _, rejects) = send_batch(a, 150, 77 + i, &kinds, |k| {
                    if k == NO_ANSWER {
                        2_500
                    } else {
                        15_000
                    }
                });
                total.fetch_add(sum, Ordering::Relaxed);
                let mut c = codes.lock().unwrap();
                for (k, v) in rejects {
                    *c.entry(k).or_default() += v;
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let held = flaky_reader.join().unwrap();
    for r in responders {
        r.stop();
    }
    let codes = codes.lock().unwrap().clone();
    eprintln!("reject codes: {codes:?}; flaky connection held {held}");
    for code in ["F99", "F05", "R00"] {
        assert!(
            codes.get(code).copied().unwrap_or(0) > 0,
            "no {code} in {codes:?}"
        );
    }
    if held > 0 {
        assert!(
            codes.get("T01").copied().unwrap_or(0) > 0,
            "disconnect gave no T01: {codes:?}"
        );
    }
    let total = total.load(Ordering::Relaxed) as i64;
    assert!(total > 0);
    assert_eq!(balance(m, "alice"), total);
    assert_eq!(balance(m, "bob"), -total);
    for (acct, dir) in [
        ("alice", "incoming"),
        ("alice", "outgoing"),
        ("bob", "incoming"),
        ("bob", "outgoing"),
    ] {
        assert_eq!(reserved(m, acct, dir), 0, "{acct} {dir}");
    }
}

#[test]
fn client_account_reconnects_after_the_peer_restarts() {
    let p = free_ports(4);
    let (l1, m1, l2, m2) = (addr(p[0]), addr(p[1]), addr(p[2]), addr(p[3]));
    let mut n1 = ilpd::start(&node_one(l1, m1, l2), l1, "ilpd-one");
    let mut n2 = ilpd::start(&node_two(l2, m2), l2, "ilpd-two");
    wait_metric(m1, "ilpd_account_connections", "account=\"two\"", |v| {
        v >= 1.0
    });
    // Two goes away: one notices, logs it (never the token) and keeps redialling.
    assert_eq!(n2.terminate().and_then(|s| s.code()), Some(0));
    wait_metric(m1, "ilpd_account_connections", "account=\"two\"", |v| {
        v == 0.0
    });
    std::thread::sleep(Duration::from_millis(500));
    let log = n1.stderr_text();
    assert!(log.contains("WARN") && log.contains("two"), "{log}");
    assert!(!log.contains("one-secret"), "the token was logged");
    // Two comes back on the same port: one reconnects by itself.
    let _n2 = ilpd::start(&node_two(l2, m2), l2, "ilpd-two-again");
    wait_metric(m1, "ilpd_account_connections", "account=\"two\"", |v| {
        v >= 1.0
    });
    let mut alice = BtpClient::connect_auth(l1, None, "alice-token").unwrap();
    let mut bob = BtpClient::connect_auth(l2, None, "bob-token").unwrap();
    let f = [44u8; 32];
    let id = alice
        .send_prepare(&bc::prepare(
            5,
            bc::unix_ms() + 30_000,
            &sha256(&f),
            "test.two.bob",
            b"",
        ))
        .unwrap();
    let (rid, _) = next_prepare(&mut bob);
    bob.send_response(rid, &bc::fulfill(&f, b"")).unwrap();
    assert_eq!(reply_to(&mut alice, id), Reply::Fulfill { fulfillment: f });
    assert!(n1.try_wait().is_none());
}

//! ilpd's ILP-over-HTTP links over real sockets on 127.0.0.1 (issue 5):
//! synchronous and asynchronous RFC 35, HTTP-OER-SYNC/ASYNC with repeats
//! and duplicates, BTP/2.0-I, bad input, unreachable peers, and mixed
//! BTP/HTTP traffic with balances that add up.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ilpd_codec::btp::BtpType;
use ilpd_tests::btp_client::{self as bc, BtpClient, Reply};
use ilpd_tests::{free_ports, ilpd, Proc};
use sha2::{Digest, Sha256};

const F: [u8; 32] = [7; 32];

fn cond() -> [u8; 32] {
    Sha256::digest(F).into()
}

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn prepare(amount: u64, dest: &str) -> Vec<u8> {
    bc::prepare(amount, bc::unix_ms() + 30_000, &cond(), dest, b"")
}

// ------------------------------------------------------------ HTTP helpers

/// One parsed HTTP message: status (or 0 for a request), head text, body.
#[derive(Debug, Clone)]
struct Msg {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Msg {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
    fn line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }
}

/// Takes one complete message (by Content-Length, 0 if absent) off `buf`.
fn take_msg(buf: &mut Vec<u8>) -> Option<Msg> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let m = Msg {
        status: 0,
        head,
        body: Vec::new(),
    };
    let len: usize = m
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if buf.len() < end + len {
        return None;
    }
    let body = buf[end..end + len].to_vec();
    buf.drain(..end + len);
    let status = if m.head.starts_with("HTTP/") {
        m.head[9..12].parse().unwrap_or(0)
    } else {
        0
    };
    Some(Msg { status, body, ..m })
}

struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(a: SocketAddr) -> Client {
        let s = TcpStream::connect(a).expect("connect");
        s.set_nodelay(true).ok();
        Client { s, buf: Vec::new() }
    }
    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }
    /// The next response, or None if the connection closed or 10 s passed.
    fn read(&mut self) -> Option<Msg> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(m) = take_msg(&mut self.buf) {
                return Some(m);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.s.set_read_timeout(Some(left)).ok();
            let mut tmp = [0u8; 65536];
            match self.s.read(&mut tmp) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }
    fn post(&mut self, path: &str, token: &str, extra: &str, body: &[u8]) -> Msg {
        self.send(&post_bytes(path, token, extra, body));
        self.read().expect("a response")
    }
}

fn post_bytes(path: &str, token: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: ilpd\r\nContent-Type: application/octet-stream\r\nAuthorization: Bearer {token}\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// What a test peer answers: status and body, plus optionally a request to
/// POST afterwards (async replies): (url host:port, path, headers, body, delay).
type Answer = (u16, Vec<u8>, Option<(String, String, String, Vec<u8>, u64)>);

/// A small HTTP/1.1 server standing in for a peer; records every request.
#[derive(Clone)]
struct Peer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Msg>>>,
}

impl Peer {
    fn start(answer: impl Fn(&Msg) -> Answer + Send + Sync + 'static) -> Peer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let (seen, answer) = (seen2.clone(), answer.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 65536];
                    loop {
                        while let Some(m) = take_msg(&mut buf) {
                            seen.lock().unwrap().push(m.clone());
                            let (status, body, then) = answer(&m);
                            let mut r = format!(
                                "HTTP/1.1 {status} X\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            r.extend(body);
                            if s.write_all(&r).is_err() {
                                return;
                            }
                            if let Some((host, path, headers, body, delay)) = then {
                                std::thread::spawn(move || {
                                    std::thread::sleep(Duration::from_millis(delay));
                                    let mut c = Client::connect(host.parse().unwrap());
                                    let mut req = format!(
                                        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n{headers}Content-Length: {}\r\n\r\n",
                                        body.len()
                                    )
                                    .into_bytes();
                                    req.extend(body);
                                    c.send(&req);
                                    let _ = c.read();
                                });
                            }
                        }
                        match s.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                });
            }
        });
        Peer { addr, seen }
    }

    fn seen(&self) -> Vec<Msg> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived; returns them.
    fn wait(&self, n: usize) -> Vec<Msg> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.seen();
            if s.len() >= n {
                return s;
            }
            assert!(
                Instant::now() < end,
                "peer saw {} requests, wanted {n}",
                s.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Answers every Prepare with the Fulfill for [`F`] (its data = the
/// Prepare's amount, so order can be checked).
fn fulfiller(m: &Msg) -> Answer {
    match bc::parse_ilp(&m.body) {
        Reply::Prepare { amount, .. } => (200, bc::fulfill(&F, &amount.to_be_bytes()), None),
        _ => (400, Vec::new(), None),
    }
}

// ------------------------------------------------------------ the node

struct Node {
    _proc: Proc,
    http: SocketAddr,
    btp: SocketAddr,
    metrics: SocketAddr,
}

/// Accounts: alice (http in), bob (http out to `bob`), carol (oer-sync in),
/// dave (oer-async both ways, `dave` is its server), erin (RFC 35 async in),
/// frank (RFC 35 async out to `frank`), gina (btp-i), hank (btp), ivan
/// (http out to a closed port), judy (http out to a peer answering 503).
fn node(peers: &HashMap<&str, SocketAddr>, dead: SocketAddr) -> Node {
    let p = free_ports(3);
    let url = |k: &str| format!("http://{}/", peers[k]);
    let child = |id: &str, rest: &str| {
        format!("[[accounts]]\nid = \"{id}\"\nrelation = \"child\"\nasset_code = \"USD\"\nasset_scale = 9\n{rest}\n")
    };
    let mut cfg = format!(
        "[node]\naddress = \"test.ilpd\"\nallow_weak_tokens = true\nthreads = 2\npin_cores = false\nlisten = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:{}\"\nmetrics_addr = \"127.0.0.1:{}\"\nlog_level = \"warn\"\nhandshake_timeout_ms = 700\nreconnect_initial_ms = 5000\n",
        p[0], p[1], p[2]
    );
    cfg += &child("alice", "link = \"http\"\nincoming_token = \"alice-token\"");
    cfg += &child(
        "bob",
        &format!(
            "link = \"http\"\nhttp_url = \"{}ilp\"\noutgoing_token = \"bob-out\"",
            url("bob")
        ),
    );
    cfg += &child(
        "carol",
        "link = \"http-oer-sync\"\nincoming_token = \"carol-token\"",
    );
    cfg += &child("dave", &format!("link = \"http-oer-async\"\nincoming_token = \"dave-token\"\nhttp_url = \"{}\"\noutgoing_token = \"dave-out\"", url("dave")));
    cfg += &child(
        "erin",
        "link = \"http-async\"\nincoming_token = \"erin-token\"\noutgoing_token = \"erin-out\"",
    );
    cfg += &child("frank", &format!("link = \"http-async\"\nincoming_token = \"frank-token\"\nhttp_url = \"{}ilp\"\noutgoing_token = \"frank-out\"", url("frank")));
    cfg += &child("gina", "link = \"btp-i\"\nincoming_token = \"gina-token\"");
    cfg += &child("hank", "incoming_token = \"hank-token\"");
    cfg += &child(
        "ivan",
        &format!("link = \"http\"\nhttp_url = \"http://{dead}/\"\noutgoing_token = \"x\""),
    );
    cfg += &child(
        "judy",
        &format!(
            "link = \"http\"\nhttp_url = \"{}\"\noutgoing_token = \"x\"",
            url("judy")
        ),
    );
    let btp = addr(p[0]);
    let proc = ilpd::start(&cfg, btp, "ilpd-http");
    let http = addr(p[1]);
    assert!(ilpd_tests::wait_for_port(http, Duration::from_secs(10)));
    Node {
        _proc: proc,
        http,
        btp,
        metrics: addr(p[2]),
    }
}

fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

struct World {
    n: Node,
    bob: Peer,
    dave: Peer,
    frank: Peer,
    judy: Peer,
}

fn world() -> World {
    world_with(|_| (200, Vec::new(), None))
}

/// `frank` answers with `frank_answer` (it needs the node's address, given
/// through a shared cell once the node is up).
fn world_with(frank_answer: impl Fn(&Msg) -> Answer + Send + Sync + 'static) -> World {
    let bob = Peer::start(fulfiller);
    let dave = Peer::start(|_| (200, Vec::new(), None));
    let frank = Peer::start(frank_answer);
    let judy = Peer::start(|_| (503, b"down for maintenance".to_vec(), None));
    let peers: HashMap<&str, SocketAddr> = [
        ("bob", bob.addr),
        ("dave", dave.addr),
        ("frank", frank.addr),
        ("judy", judy.addr),
    ]
    .into_iter()
    .collect();
    let n = node(&peers, dead_addr());
    World {
        n,
        bob,
        dave,
        frank,
        judy,
    }
}

fn balance(m: SocketAddr, account: &str) -> i64 {
    bc::scrape(m, "ilpd_account_balance", &format!("account=\"{account}\""))
        .expect("balance metric") as i64
}

fn wait_balance(m: SocketAddr, account: &str, want: i64) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let b = balance(m, account);
        if b == want {
            return;
        }
        assert!(Instant::now() < end, "{account} balance {b}, wanted {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reject_of(body: &[u8]) -> (String, String) {
    match bc::parse_ilp(body) {
        Reply::Reject { code, message, .. } => (code, message),
        other => panic!("expected a Reject, got {other:?}"),
    }
}

// ------------------------------------------------------------ tests

#[test]
fn sync_http_through_ilpd_pipelined_in_order() {
    let w = world();
    let mut c = Client::connect(w.n.http);
    // 20 pipelined requests in one write; answers come back in order.
    let mut all = Vec::new();
    for i in 1..=20u64 {
        all.extend(post_bytes(
            "/ilp",
            "alice-token",
            "",
            &prepare(i, "test.ilpd.bob.x"),
        ));
    }
    c.send(&all);
    for i in 1..=20u64 {
        let m = c.read().expect("response");
        assert_eq!(m.status, 200, "{m:?}");
        assert_eq!(
            m.header("content-type").as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(
            m.body,
            bc::fulfill(&F, &i.to_be_bytes()),
            "response {i} in order"
        );
    }
    let seen = w.bob.wait(20);
    let first = &seen[0];
    assert_eq!(first.line(), "POST /ilp HTTP/1.1");
    assert_eq!(
        first.header("authorization").as_deref(),
        Some("Bearer bob-out")
    );
    assert_eq!(
        first.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    wait_balance(w.n.metrics, "alice", 210);
    wait_balance(w.n.metrics, "bob", -210);
}

#[test]
fn bad_input_gets_4xx_and_nothing_is_forwarded() {
    let w = world();
    let p = prepare(5, "test.ilpd.bob.x");
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (post_bytes("/ilp", "wrong-token", "", &p), 401),
        (
            [&b"POST /ilp HTTP/1.1\r\nContent-Type: application/octet-stream\r\nContent-Length: "[..], p.len().to_string().as_bytes(), b"\r\n\r\n", &p].concat(),
            401,
        ),
        (b"GET /ilp HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 405),
        (post_bytes("/elsewhere", "alice-token", "", &p), 404),
        (post_bytes("/ilp", "alice-token", "Content-Type: text/plain\r\n", &p).replacen_ct(), 415),
        (post_bytes("/ilp", "alice-token", "", b"not a packet"), 400),
        (post_bytes("/ilp", "alice-token", "", &bc::fulfill(&F, b"")), 400),
        (b"POST /ilp HTTP/1.1\r\nAuthorization: Bearer alice-token\r\nContent-Length: 50000\r\n\r\n".to_vec(), 413),
        (b"POST /ilp HTTP/1.1\r\nAuthorization: Bearer alice-token\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), 411),
    ];
    for (req, want) in cases {
        let mut c = Client::connect(w.n.http);
        c.send(&req);
        let m = c
            .read()
            .unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(&req)));
        assert_eq!(
            m.status,
            want,
            "{:?} -> {m:?}",
            String::from_utf8_lossy(&req)
        );
        assert!(!m.body.is_empty(), "a short text says why");
        if want == 401 {
            // One guess per connection (issue 16).
            assert!(c.read().is_none(), "a 401 closes the connection");
        }
    }
    // A client trickling its headers is cut off within the timeout while
    // another client is served meanwhile.
    let mut slow = Client::connect(w.n.http);
    slow.send(b"POST /ilp HTTP/1.1\r\nHost: x\r\n");
    let t = Instant::now();
    let mut good = Client::connect(w.n.http);
    assert_eq!(good.post("/ilp", "alice-token", "", &p).status, 200);
    slow.send(b"X-Slow: 1\r\n");
    let m = slow.read();
    assert!(m.as_ref().is_none_or(|m| m.status == 408), "{m:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "closed within the timeout"
    );
    assert!(slow.read().is_none(), "connection closed");
    // Only the good request reached bob.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(w.bob.seen().len(), 1);
    wait_balance(w.n.metrics, "alice", 5);
}

trait ReplaceCt {
    fn replacen_ct(self) -> Vec<u8>;
}
impl ReplaceCt for Vec<u8> {
    fn replacen_ct(self) -> Vec<u8> {
        let n = b"Content-Type: application/octet-stream\r\n";
        let i = self.windows(n.len()).position(|x| x == n).unwrap();
        [&self[..i], &self[i + n.len()..]].concat()
    }
}

#[test]
fn unreachable_or_failing_peers_give_t01_with_a_clear_message() {
    let w = world();
    let mut c = Client::connect(w.n.http);
    let m = c.post("/ilp", "alice-token", "", &prepare(1, "test.ilpd.ivan.x"));
    assert_eq!(m.status, 200);
    let (code, msg) = reject_of(&m.body);
    assert_eq!(code, "T01");
    assert!(msg.contains("ivan") && msg.contains("connect"), "{msg}");
    // During the back-off: at once, and it says when it retries.
    let t = Instant::now();
    let m = c.post("/ilp", "alice-token", "", &prepare(1, "test.ilpd.ivan.x"));
    let (code, msg) = reject_of(&m.body);
    assert_eq!(code, "T01");
    assert!(msg.contains("reconnecting in"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(2));
    let m = c.post("/ilp", "alice-token", "", &prepare(1, "test.ilpd.judy.x"));
    let (code, msg) = reject_of(&m.body);
    assert_eq!(code, "T01");
    assert!(msg.contains("judy") && msg.contains("503"), "{msg}");
    assert_eq!(w.judy.wait(1).len(), 1);
    // Rejected packets cost nothing.
    wait_balance(w.n.metrics, "alice", 0);
}

#[test]
fn oer_sync_repeats_are_never_forwarded_or_charged_twice() {
    // bob answers slowly here, so a repeat arrives while in flight.
    let slow_bob = Peer::start(|m| {
        std::thread::sleep(Duration::from_millis(400));
        fulfiller(m)
    });
    let mut peers: HashMap<&str, SocketAddr> = HashMap::new();
    let dummy = Peer::start(|_| (200, Vec::new(), None));
    peers.insert("bob", slow_bob.addr);
    for k in ["dave", "frank", "judy"] {
        peers.insert(k, dummy.addr);
    }
    let n = node(&peers, dead_addr());
    let id = "3442196b-5fc7-4d60-a17e-a9416a77745b";
    let path = format!("/ilp/{id}");
    let p = prepare(42, "test.ilpd.bob.x");
    let mut first = Client::connect(n.http);
    first.send(&post_bytes(&path, "carol-token", "", &p));
    std::thread::sleep(Duration::from_millis(100));
    let mut again = Client::connect(n.http);
    let m = again.post(&path, "carol-token", "", &p);
    assert_eq!(
        m.status, 409,
        "a repeat while in flight is not processed: {m:?}"
    );
    let m1 = first.read().expect("answer");
    assert_eq!(m1.status, 200);
    assert_eq!(m1.body, bc::fulfill(&F, &42u64.to_be_bytes()));
    // Repeats after the answer get the same bytes.
    for _ in 0..3 {
        let m = again.post(&path, "carol-token", "", &p);
        assert_eq!((m.status, &m.body), (200, &m1.body));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(slow_bob.seen().len(), 1, "forwarded once");
    wait_balance(n.metrics, "carol", 42);
    wait_balance(n.metrics, "bob", -42);
    // Another account's identical id is another request.
    let m = again.post(&path, "alice-token", "", &p);
    assert_eq!(m.status, 200);
    assert_eq!(slow_bob.wait(2).len(), 2);
}

#[test]
fn oer_async_reply_is_posted_back_and_a_repeat_gets_it_again() {
    let w = world();
    let id = "0f0e0d0c-5fc7-4d60-a17e-a9416a777400";
    let path = format!("/ilp/{id}");
    let p = prepare(9, "test.ilpd.bob.x");
    let mut c = Client::connect(w.n.http);
    let m = c.post(&path, "dave-token", "", &p);
    assert_eq!(
        (m.status, m.body.len()),
        (200, 0),
        "received, reply follows"
    );
    let seen = w.dave.wait(1);
    assert_eq!(seen[0].line(), format!("POST {path} HTTP/1.1"));
    assert_eq!(
        seen[0].header("authorization").as_deref(),
        Some("Bearer dave-out")
    );
    assert_eq!(seen[0].body, bc::fulfill(&F, &9u64.to_be_bytes()));
    // The repeat is acknowledged and the same reply posted again.
    let m = c.post(&path, "dave-token", "", &p);
    assert_eq!(m.status, 200);
    let seen = w.dave.wait(2);
    assert_eq!(seen[1].body, seen[0].body);
    assert_eq!(w.bob.seen().len(), 1, "forwarded once");
    wait_balance(w.n.metrics, "dave", 9);
}

#[test]
fn oer_async_replies_to_our_forwards_come_back_by_request_id() {
    // dave as next hop: ilpd POSTs /ilp/<id>; dave answers 200 and later
    // POSTs the Fulfill to ilpd's /ilp/<same id>, twice (the second is a
    // duplicate and gets 400).
    let holder: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    let h2 = holder.clone();
    let dave = Peer::start(move |m| {
        let target = h2.lock().unwrap().expect("node address");
        let path = m.line().split(' ').nth(1).unwrap_or("").to_string();
        let amount = match bc::parse_ilp(&m.body) {
            Reply::Prepare { amount, .. } => amount,
            _ => 0,
        };
        let then = (
            target.to_string(),
            path,
            "Authorization: Bearer dave-token\r\n".to_string(),
            bc::fulfill(&F, &amount.to_be_bytes()),
            50,
        );
        (200, Vec::new(), Some(then))
    });
    let bob = Peer::start(fulfiller);
    let dummy = Peer::start(|_| (200, Vec::new(), None));
    let peers: HashMap<&str, SocketAddr> = [
        ("bob", bob.addr),
        ("dave", dave.addr),
        ("frank", dummy.addr),
        ("judy", dummy.addr),
    ]
    .into_iter()
    .collect();
    let n = node(&peers, dead_addr());
    *holder.lock().unwrap() = Some(n.http);
    let mut c = Client::connect(n.http);
    for i in 1..=6u64 {
        let m = c.post("/ilp", "alice-token", "", &prepare(i, "test.ilpd.dave.x"));
        assert_eq!(m.status, 200);
        assert_eq!(
            m.body,
            bc::fulfill(&F, &i.to_be_bytes()),
            "fulfilled through the async reply"
        );
    }
    let seen = dave.wait(6);
    assert!(
        seen[0].line().starts_with("POST /ilp/"),
        "{}",
        seen[0].line()
    );
    let ids: std::collections::HashSet<&str> = seen.iter().map(|m| m.line()).collect();
    assert_eq!(ids.len(), 6, "one request id per packet");
    // A duplicate reply for an answered id is refused (RFC 35: 400).
    let first_path = seen[0].line().split(' ').nth(1).unwrap().to_string();
    let mut d = Client::connect(n.http);
    let m = d.post(&first_path, "dave-token", "", &bc::fulfill(&F, b""));
    assert_eq!(m.status, 400);
    wait_balance(n.metrics, "alice", 21);
    wait_balance(n.metrics, "dave", -21);
}

#[test]
fn oer_sync_next_hop_is_repeated_with_the_same_id_until_answered() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    // carol's side is the peer here: a node-roles HTTP-OER-SYNC server that
    // fails twice (503, then a dropped answer is simulated by 409) first.
    let kate = Peer::start(move |m| match c2.fetch_add(1, Ordering::SeqCst) {
        0 => (503, Vec::new(), None),
        1 => (409, Vec::new(), None),
        _ => fulfiller(m),
    });
    let dummy = Peer::start(|_| (200, Vec::new(), None));
    let bob = Peer::start(fulfiller);
    let peers: HashMap<&str, SocketAddr> = [
        ("bob", bob.addr),
        ("dave", dummy.addr),
        ("frank", dummy.addr),
        ("judy", kate.addr),
    ]
    .into_iter()
    .collect();
    // judy's slot is reused as an http-oer-sync next hop: a node of its own.
    let p = free_ports(3);
    let cfg = format!(
        "[node]\naddress = \"test.ilpd\"\nallow_weak_tokens = true\nthreads = 2\npin_cores = false\nlisten = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:{}\"\nmetrics_addr = \"127.0.0.1:{}\"\nlog_level = \"warn\"\n\
         [[accounts]]\nid = \"alice\"\nrelation = \"child\"\nasset_code = \"USD\"\nasset_scale = 9\nlink = \"http\"\nincoming_token = \"alice-token\"\n\
         [[accounts]]\nid = \"kate\"\nrelation = \"child\"\nasset_code = \"USD\"\nasset_scale = 9\nlink = \"http-oer-sync\"\nhttp_url = \"http://{}/\"\noutgoing_token = \"kate-out\"\n",
        p[0], p[1], p[2], peers["judy"]
    );
    let _node = ilpd::start(&cfg, addr(p[0]), "ilpd-oer-sync-out");
    assert!(ilpd_tests::wait_for_port(
        addr(p[1]),
        Duration::from_secs(10)
    ));
    let mut c = Client::connect(addr(p[1]));
    let m = c.post("/ilp", "alice-token", "", &prepare(8, "test.ilpd.kate.x"));
    assert_eq!(m.status, 200);
    assert_eq!(m.body, bc::fulfill(&F, &8u64.to_be_bytes()));
    let seen = kate.wait(3);
    assert_eq!(seen.len(), 3, "two failures, then the answer");
    assert!(
        seen[0].line().starts_with("POST /ilp/"),
        "{}",
        seen[0].line()
    );
    assert!(
        seen.iter().all(|m| m.line() == seen[0].line()),
        "same request id every time"
    );
    assert!(
        seen.iter().all(|m| m.body == seen[0].body),
        "same packet every time"
    );
    wait_balance(addr(p[2]), "alice", 8);
    wait_balance(addr(p[2]), "kate", -8);
}

#[test]
fn rfc35_async_in_and_out() {
    // frank (next hop, async): 202 at once, then the Fulfill to ilpd's
    // Callback-Url with the same Request-Id and frank's token.
    let w = world_with(|m| {
        let cb = m.header("callback-url").unwrap_or_default();
        let rid = m.header("request-id").unwrap_or_default();
        let hostpath = cb.trim_start_matches("http://");
        let (host, path) = hostpath.split_at(hostpath.find('/').unwrap_or(hostpath.len()));
        let amount = match bc::parse_ilp(&m.body) {
            Reply::Prepare { amount, .. } => amount,
            _ => 0,
        };
        let then = (
            host.to_string(),
            path.to_string(),
            format!("Authorization: Bearer frank-token\r\nRequest-Id: {rid}\r\n"),
            bc::fulfill(&F, &amount.to_be_bytes()),
            30,
        );
        (202, Vec::new(), Some(then))
    });
    // erin's own callback server.
    let erin = Peer::start(|_| (200, Vec::new(), None));
    let rid = "42ee09c8-a6de-4ae3-8a47-4732b0cbb07b";
    let extra = format!(
        "Prefer: respond-async\r\nCallback-Url: http://{}/incoming/ilp\r\nRequest-Id: {rid}\r\n",
        erin.addr
    );
    let mut c = Client::connect(w.n.http);
    let m = c.post(
        "/ilp",
        "erin-token",
        &extra,
        &prepare(77, "test.ilpd.frank.x"),
    );
    assert_eq!(m.status, 202);
    let got = erin.wait(1);
    assert_eq!(got[0].line(), "POST /incoming/ilp HTTP/1.1");
    assert_eq!(got[0].header("request-id").as_deref(), Some(rid));
    assert_eq!(
        got[0].header("authorization").as_deref(),
        Some("Bearer erin-out")
    );
    assert_eq!(got[0].body, bc::fulfill(&F, &77u64.to_be_bytes()));
    let f = w.frank.wait(1);
    assert_eq!(f[0].header("prefer").as_deref(), Some("respond-async"));
    assert!(f[0]
        .header("callback-url")
        .is_some_and(|u| u.starts_with("http://127.0.0.1:")));
    assert_eq!(f[0].header("request-id").map(|r| r.len()), Some(36));
    wait_balance(w.n.metrics, "erin", 77);
    wait_balance(w.n.metrics, "frank", -77);
    let _ = (&w.dave, &w.judy, &w.bob);
}

#[test]
fn btp_i_repeats_are_answered_from_memory_and_requests_repeated() {
    let w = world();
    let mut hank = BtpClient::connect_auth(w.n.btp, Some("hank"), "hank-token").expect("hank");
    let mut gina = BtpClient::connect_auth(w.n.btp, Some("gina"), "gina-token").expect("gina");
    // gina (btp-i) sends, then repeats the same request id while in flight.
    let p = prepare(11, "test.ilpd.hank.x");
    let mut msg = Vec::new();
    ilpd_codec::btp::write_ilp_message(&mut msg, 777, &p);
    gina.send_frame(2, &msg).unwrap();
    let first = hank
        .read_btp(Duration::from_secs(10))
        .expect("hank gets it");
    assert_eq!(first.ty, BtpType::Message);
    gina.send_frame(2, &msg).unwrap();
    assert!(
        hank.read_btp(Duration::from_millis(500)).is_err(),
        "a repeat is not forwarded"
    );
    hank.send_response(first.request_id, &bc::fulfill(&F, b"h"))
        .unwrap();
    let r = gina.read_btp(Duration::from_secs(10)).expect("answer");
    assert_eq!((r.ty, r.request_id), (BtpType::Response, 777));
    let answer = r.ilp.clone().unwrap();
    assert_eq!(answer, bc::fulfill(&F, b"h"));
    // A repeat after the answer: the remembered answer, not forwarded.
    gina.send_frame(2, &msg).unwrap();
    let r2 = gina
        .read_btp(Duration::from_secs(10))
        .expect("remembered answer");
    assert_eq!((r2.request_id, r2.ilp.unwrap()), (777, answer));
    assert!(hank.read_btp(Duration::from_millis(300)).is_err());
    wait_balance(w.n.metrics, "gina", 11);
    wait_balance(w.n.metrics, "hank", -11);

    // gina as next hop: ilpd repeats its request until gina answers.
    let id = hank.send_prepare(&prepare(3, "test.ilpd.gina.x")).unwrap();
    let a = gina.read_btp(Duration::from_secs(10)).expect("prepare");
    let b = gina
        .read_btp(Duration::from_secs(5))
        .expect("the same prepare again");
    assert_eq!((a.ty, b.ty), (BtpType::Message, BtpType::Message));
    assert_eq!(a.request_id, b.request_id, "same request id");
    assert_eq!(a.ilp, b.ilp);
    gina.send_response(a.request_id, &bc::fulfill(&F, b"g"))
        .unwrap();
    let r = hank.read_btp(Duration::from_secs(10)).expect("answer");
    assert_eq!(r.request_id, id);
    assert_eq!(r.ilp.unwrap(), bc::fulfill(&F, b"g"));
    wait_balance(w.n.metrics, "hank", -11 + 3);
    wait_balance(w.n.metrics, "gina", 11 - 3);
}

#[test]
fn mixed_btp_in_http_out_and_http_in_btp_out_conserve_balances() {
    let w = world();
    let mut hank = BtpClient::connect_auth(w.n.btp, Some("hank"), "hank-token").expect("hank");
    let n = 50u64;
    // BTP in, HTTP out: hank → bob.
    let mut ids = Vec::new();
    for i in 1..=n {
        ids.push(hank.send_prepare(&prepare(i, "test.ilpd.bob.x")).unwrap());
    }
    let mut fulfilled = 0;
    for _ in 0..n {
        let r = hank.read_btp(Duration::from_secs(10)).expect("answer");
        assert_eq!(r.ty, BtpType::Response);
        if let Reply::Fulfill { .. } = bc::parse_ilp(&r.ilp.unwrap()) {
            fulfilled += 1;
        }
    }
    assert_eq!(fulfilled, n);
    // HTTP in, BTP out: alice → hank, answered by hank.
    let alice = std::thread::spawn({
        let a = w.n.http;
        move || {
            let mut c = Client::connect(a);
            let mut all = Vec::new();
            for i in 1..=n {
                all.extend(post_bytes(
                    "/ilp",
                    "alice-token",
                    "",
                    &prepare(i * 2, "test.ilpd.hank.x"),
                ));
            }
            c.send(&all);
            (0..n)
                .map(|_| c.read().expect("answer"))
                .collect::<Vec<_>>()
        }
    });
    for _ in 0..n {
        let p = hank.read_btp(Duration::from_secs(10)).expect("prepare");
        hank.send_response(p.request_id, &bc::fulfill(&F, b""))
            .unwrap();
    }
    let answers = alice.join().unwrap();
    assert!(answers
        .iter()
        .all(|m| m.status == 200 && matches!(bc::parse_ilp(&m.body), Reply::Fulfill { .. })));
    let sum_in: i64 = (1..=n as i64).sum();
    // hank paid sum_in, received 2·sum_in; alice paid 2·sum_in; bob got sum_in.
    wait_balance(w.n.metrics, "bob", -sum_in);
    wait_balance(w.n.metrics, "alice", 2 * sum_in);
    wait_balance(w.n.metrics, "hank", sum_in - 2 * sum_in);
    let total: i64 = ["alice", "bob", "hank"]
        .iter()
        .map(|a| balance(w.n.metrics, a))
        .sum();
    assert_eq!(total, 0, "what came in went out (same asset, no spread)");
    assert_eq!(w.bob.seen().len() as u64, n);
}

#[test]
fn random_bytes_never_take_the_node_down() {
    let w = world();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let p = prepare(1, "test.ilpd.bob.x");
    let good = post_bytes("/ilp", "alice-token", "", &p);
    for i in 0..200 {
        let mut c = Client::connect(w.n.http);
        // Garbage, or a valid request with random bytes flipped/truncated.
        let mut req = if i % 2 == 0 {
            (0..(rnd() % 600)).map(|_| rnd() as u8).collect::<Vec<u8>>()
        } else {
            let mut r = good.clone();
            for _ in 0..(1 + rnd() % 4) {
                let at = (rnd() as usize) % r.len();
                r[at] = rnd() as u8;
            }
            r
        };
        req.truncate(1 + (rnd() as usize) % req.len().max(1));
        c.send(&req);
        c.s.shutdown(std::net::Shutdown::Write).ok();
        let _ = c.read();
    }
    let mut c = Client::connect(w.n.http);
    let m = c.post("/ilp", "alice-token", "", &p);
    assert_eq!(m.status, 200);
    assert!(matches!(bc::parse_ilp(&m.body), Reply::Fulfill { .. }));
    let text = bc::http_get(w.n.metrics, "/metrics").unwrap().1;
    let refused = bc::metric(&text, "ilpd_http_refused_total", "").unwrap_or(0.0);
    assert!(refused > 0.0, "refusals are counted");
}

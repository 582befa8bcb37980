//! The HTTP link driver over real sockets on 127.0.0.1, with a stand-in for
//! the core: each test runs the driver's mio loop on its own thread-less
//! poll and answers the Prepares it reports.

use std::io::{Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use ilpd_codec::ilp::{FulfillBuilder, PrepareBuilder, RejectBuilder};
use ilpd_codec::types::Expiry;
use ilpd_codec::ErrorCode;
use ilpd_engine::config::Config;
use ilpd_engine::core::{AccountId, Now, OutId, ReplyTo, Shared};
use ilpd_engine::http::driver::{AccountLink, DriverConfig, Event, HttpDriver};
use ilpd_engine::http::idempotency::IdempotencyCache;
use ilpd_engine::http::{HttpUrl, LinkKind};
use mio::{Events, Poll};

fn now() -> Now {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    Now {
        unix_ms,
        mono_ns: unix_ms * 1_000_000,
    }
}

const CONFIG: &str = r#"
[node]
allow_weak_tokens = true  # short test tokens
address = "test.ilpd"
durability = "none"
[[accounts]]
id = "alice"
relation = "child"
asset_code = "USD"
asset_scale = 9
incoming_token = "alice-token"
[[accounts]]
id = "bob"
relation = "peer"
asset_code = "USD"
asset_scale = 9
incoming_token = "bob-token"
"#;

struct Harness {
    poll: Poll,
    d: HttpDriver,
    events: Events,
    out: Vec<Event>,
    addr: std::net::SocketAddr,
    cache: Arc<IdempotencyCache>,
    /// Events seen while waiting for something else.
    backlog: Vec<Event>,
}

fn link(name: &str, link: LinkKind, url: Option<String>) -> AccountLink {
    AccountLink {
        name: name.into(),
        link,
        url: url.map(|u| HttpUrl::parse(&u).unwrap()),
        token: format!("to-{name}").into_bytes(),
        connections: 2,
        pipeline: 16,
        timeout_ms: 2_000,
    }
}

fn harness(links: Vec<AccountLink>, header_timeout_ms: u64) -> Harness {
    let cfg = Config::from_toml(CONFIG).unwrap();
    let shared = Shared::from_config(&cfg).unwrap();
    let poll = Poll::new().unwrap();
    let std_l = StdListener::bind("127.0.0.1:0").unwrap();
    std_l.set_nonblocking(true).unwrap();
    let addr = std_l.local_addr().unwrap();
    let listener = mio::net::TcpListener::from_std(std_l);
    let cache = Arc::new(IdempotencyCache::new(1000, 60_000));
    let d = HttpDriver::new(
        0,
        DriverConfig {
            max_body: 40_000,
            header_timeout_ms,
            idle_timeout_ms: 120_000,
            auth_throttle: std::sync::Arc::new(ilpd_engine::io::auth_throttle::AuthThrottle::new(
                0,
            )),
            conn_limits: std::sync::Arc::new(ilpd_engine::io::conn_limits::ConnLimits::new(
                ilpd_engine::io::conn_limits::Caps {
                    total: 1000,
                    per_ip: 1000,
                    unauthenticated: 1000,
                    unauthenticated_per_ip: 1000,
                },
            )),
            write_buffer_limit: 1 << 20,
            callback_url: Some(format!("http://{addr}/ilp")),
            reconnect_initial_ms: 200,
            socket_send_buffer: None,
            socket_recv_buffer: None,
            workers: 1,
        },
        links,
        shared,
        cache.clone(),
        poll.registry().try_clone().unwrap(),
        Some(listener),
        42,
    )
    .unwrap();
    Harness {
        poll,
        d,
        events: Events::with_capacity(64),
        out: Vec::new(),
        addr,
        cache,
        backlog: Vec::new(),
    }
}

impl Harness {
    /// One loop turn; returns the events the core would get.
    fn turn(&mut self) -> Vec<Event> {
        self.poll
            .poll(&mut self.events, Some(Duration::from_millis(5)))
            .unwrap();
        let n = now();
        for ev in self.events.iter() {
            self.d.on_event(ev, n, &mut self.out);
        }
        self.d.process(n, &mut self.out);
        if self.d.next_deadline().is_some_and(|t| t <= n.unix_ms) {
            self.d.on_timers(n, &mut self.out);
        }
        self.d.flush(n, &mut self.out);
        let mut evs = std::mem::take(&mut self.backlog);
        evs.append(&mut self.out);
        evs
    }

    /// Turns until `f` has collected what it wants or 5 s pass.
    fn run_until(&mut self, mut f: impl FnMut(&mut Harness, Vec<Event>) -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let evs = self.turn();
            if f(self, evs) {
                return;
            }
        }
        panic!("timed out");
    }

    fn reply(&mut self, to: ReplyTo, packet: BytesMut) {
        let n = now();
        self.d.reply(to, packet, n, &mut self.out);
        self.d.flush(n, &mut self.out);
    }
}

fn prepare(amount: u64) -> BytesMut {
    PrepareBuilder {
        amount,
        expires_at: Expiry(now().unix_ms + 10_000),
        execution_condition: &[7; 32],
        destination: b"test.ilpd.bob",
        data: b"",
    }
    .build()
}

fn fulfill(tag: u8) -> BytesMut {
    FulfillBuilder {
        fulfillment: &[tag; 32],
        data: b"",
    }
    .build()
}

fn post(path: &str, token: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Reads responses until `n` complete ones are in (by Content-Length).
fn read_responses(h: &mut Harness, s: &mut StdStream, n: usize) -> Vec<(u16, Vec<u8>)> {
    s.set_nonblocking(true).unwrap();
    let mut buf = Vec::new();
    let mut got = Vec::new();
    h.run_until(|hh, evs| {
        hh.backlog.extend(evs);
        let mut tmp = [0u8; 65536];
        if let Ok(k) = s.read(&mut tmp) {
            buf.extend_from_slice(&tmp[..k]);
        }
        loop {
            let mut hs = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Response::new(&mut hs);
            let Ok(httparse::Status::Complete(head)) = r.parse(&buf) else {
                break;
            };
            let len: usize = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap();
            if buf.len() < head + len {
                break;
            }
            got.push((r.code.unwrap(), buf[head..head + len].to_vec()));
            buf.drain(..head + len);
        }
        got.len() >= n
    });
    got
}

#[test]
fn sync_requests_pipelined_answered_in_order() {
    let mut h = harness(
        vec![
            link("alice", LinkKind::Http, None),
            link("bob", LinkKind::Http, None),
        ],
        5_000,
    );
    let mut c = StdStream::connect(h.addr).unwrap();
    let mut input = Vec::new();
    for i in 0..5u64 {
        input.extend(post("/ilp", "alice-token", &prepare(i + 1)));
    }
    c.write_all(&input).unwrap();
    let mut prepares = Vec::new();
    h.run_until(|_, evs| {
        for e in evs {
            match e {
                Event::Prepare { from, packet } => prepares.push((from, packet)),
                e => panic!("{e:?}"),
            }
        }
        prepares.len() == 5
    });
    assert!(prepares.iter().all(|(f, _)| f.account == AccountId(0)));
    // Answer in reverse order; responses must come back in request order.
    for (i, (from, _)) in prepares.iter().enumerate().rev() {
        h.reply(*from, fulfill(i as u8));
    }
    let got = read_responses(&mut h, &mut c, 5);
    for (i, (status, body)) in got.iter().enumerate() {
        assert_eq!(*status, 200);
        assert_eq!(body[..], fulfill(i as u8)[..], "response {i} in order");
    }
}

#[test]
fn wrong_token_is_401_and_nothing_reaches_the_core() {
    let mut h = harness(
        vec![
            link("alice", LinkKind::Http, None),
            link("bob", LinkKind::Http, None),
        ],
        5_000,
    );
    let mut c = StdStream::connect(h.addr).unwrap();
    c.write_all(&post("/ilp", "wrong", &prepare(1))).unwrap();
    let got = read_responses(&mut h, &mut c, 1);
    assert_eq!(got[0].0, 401);
    for _ in 0..20 {
        assert!(h.turn().is_empty(), "nothing forwarded");
    }
}

#[test]
fn slow_header_trickle_gets_408_and_others_keep_working() {
    let mut h = harness(
        vec![
            link("alice", LinkKind::Http, None),
            link("bob", LinkKind::Http, None),
        ],
        300,
    );
    let mut slow = StdStream::connect(h.addr).unwrap();
    slow.write_all(b"POST /ilp HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let start = Instant::now();
    // Meanwhile a good client is served.
    let mut good = StdStream::connect(h.addr).unwrap();
    good.write_all(&post("/ilp", "bob-token", &prepare(1)))
        .unwrap();
    let mut from = None;
    h.run_until(|_, evs| {
        for e in evs {
            if let Event::Prepare { from: f, .. } = e {
                from = Some(f);
            }
        }
        from.is_some()
    });
    h.reply(from.unwrap(), fulfill(9));
    assert_eq!(read_responses(&mut h, &mut good, 1)[0].0, 200);
    let got = read_responses(&mut h, &mut slow, 1);
    assert_eq!(got[0].0, 408);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn oer_sync_repeats_are_never_processed_twice() {
    let mut h = harness(
        vec![
            link("alice", LinkKind::HttpOerSync, None),
            link("bob", LinkKind::Http, None),
        ],
        5_000,
    );
    let id = "3442196b-5fc7-4d60-a17e-a9416a77745b";
    let path = format!("/ilp/{id}");
    let p = prepare(5);
    let mut c = StdStream::connect(h.addr).unwrap();
    c.write_all(&post(&path, "alice-token", &p)).unwrap();
    let mut prepares = Vec::new();
    h.run_until(|_, evs| {
        prepares.extend(evs);
        !prepares.is_empty()
    });
    // A repeat while in flight (another connection): 409, not processed.
    let mut c2 = StdStream::connect(h.addr).unwrap();
    c2.write_all(&post(&path, "alice-token", &p)).unwrap();
    assert_eq!(read_responses(&mut h, &mut c2, 1)[0].0, 409);
    let Event::Prepare { from, .. } = prepares.remove(0) else {
        panic!()
    };
    h.reply(from, fulfill(3));
    assert_eq!(
        read_responses(&mut h, &mut c, 1)[0],
        (200, fulfill(3).to_vec())
    );
    // A repeat after the answer: the same answer, still not processed.
    c2.write_all(&post(&path, "alice-token", &p)).unwrap();
    assert_eq!(
        read_responses(&mut h, &mut c2, 1)[0],
        (200, fulfill(3).to_vec())
    );
    for _ in 0..10 {
        assert!(h.turn().is_empty());
    }
    assert_eq!(h.cache.stats().entries, 1);
}

/// A tiny HTTP peer on a thread: answers each POST with `answer(body)`.
fn peer(
    answer: fn(&[u8], &str) -> (u16, Vec<u8>),
) -> (std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 65536];
                loop {
                    let mut hs = [httparse::EMPTY_HEADER; 32];
                    let mut r = httparse::Request::new(&mut hs);
                    if let Ok(httparse::Status::Complete(head)) = r.parse(&buf) {
                        let len: usize = r
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                            .unwrap_or(0);
                        if buf.len() >= head + len {
                            let head_text = String::from_utf8_lossy(&buf[..head]).into_owned();
                            let (status, body) = answer(&buf[head..head + len], &head_text);
                            let _ = tx.send(head_text);
                            let mut resp = format!(
                                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            resp.extend(body);
                            if s.write_all(&resp).is_err() {
                                return;
                            }
                            buf.drain(..head + len);
                            continue;
                        }
                    }
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&tmp[..k]),
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[test]
fn client_pool_forwards_and_maps_statuses() {
    let (addr, heads) = peer(|body, _| {
        if body.first() == Some(&12) && body[9] == 1 {
            (200, fulfill(1).to_vec())
        } else {
            (503, b"busy".to_vec())
        }
    });
    let mut h = harness(
        vec![
            link("alice", LinkKind::Http, None),
            link(
                "bob",
                LinkKind::Http,
                Some(format!("http://{addr}/accounts/x/ilp")),
            ),
        ],
        5_000,
    );
    assert_eq!(h.d.outgoing_accounts(), vec![AccountId(1)]);
    let n = now();
    h.d.forward(AccountId(1), OutId(7), prepare(1), n, &mut h.out);
    h.d.forward(AccountId(1), OutId(8), prepare(2), n, &mut h.out);
    let mut got = Vec::new();
    h.run_until(|_, evs| {
        got.extend(evs);
        got.len() == 2
    });
    got.sort_by_key(|e| match e {
        Event::Reply { out_id, .. } | Event::Failed { out_id, .. } => out_id.0,
        _ => 0,
    });
    match &got[0] {
        Event::Reply {
            out_id,
            from,
            packet,
            origin,
            ..
        } => {
            assert_eq!((*out_id, *from, *origin), (OutId(7), AccountId(1), 0));
            assert_eq!(packet[..], fulfill(1)[..]);
        }
        e => panic!("{e:?}"),
    }
    match &got[1] {
        Event::Failed {
            out_id,
            code,
            message,
        } => {
            assert_eq!(*out_id, OutId(8));
            assert_eq!(*code, ErrorCode::T01_PEER_UNREACHABLE);
            assert!(
                message.contains("503") && message.contains("bob"),
                "{message}"
            );
        }
        e => panic!("{e:?}"),
    }
    let head = heads.recv_timeout(Duration::from_secs(1)).unwrap();
    assert!(
        head.starts_with("POST /accounts/x/ilp HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("Authorization: Bearer to-bob\r\n"), "{head}");
}

#[test]
fn refused_connection_is_t01_with_backoff() {
    let dead = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let mut h = harness(
        vec![
            link("alice", LinkKind::Http, None),
            link("bob", LinkKind::Http, Some(format!("http://{addr}/"))),
        ],
        5_000,
    );
    h.d.forward(AccountId(1), OutId(1), prepare(1), now(), &mut h.out);
    let mut got = Vec::new();
    h.run_until(|_, evs| {
        got.extend(evs);
        !got.is_empty()
    });
    let Event::Failed { code, message, .. } = &got[0] else {
        panic!("{:?}", got[0])
    };
    assert_eq!(*code, ErrorCode::T01_PEER_UNREACHABLE);
    assert!(message.contains("connect"), "{message}");
    // During the back-off the answer is immediate and says when it retries.
    h.d.forward(AccountId(1), OutId(2), prepare(1), now(), &mut h.out);
    let evs = std::mem::take(&mut h.out);
    let Some(Event::Failed { message, .. }) = evs.first() else {
        panic!("{evs:?}")
    };
    assert!(message.contains("reconnecting in"), "{message}");
    // The peer comes up on that port: after the back-off the pool redials.
    let (l, _) = loop {
        if let Ok(l) = StdListener::bind(addr) {
            break (l, ());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut tmp).unwrap();
            buf.extend_from_slice(&tmp[..n]);
        }
        let f = fulfill(5);
        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", f.len()).into_bytes();
        r.extend_from_slice(&f);
        s.write_all(&r).unwrap();
        std::thread::sleep(Duration::from_secs(1));
    });
    std::thread::sleep(Duration::from_millis(250));
    h.d.forward(AccountId(1), OutId(3), prepare(1), now(), &mut h.out);
    let mut got = Vec::new();
    h.run_until(|_, evs| {
        got.extend(evs);
        !got.is_empty()
    });
    assert!(
        matches!(&got[0], Event::Reply { out_id: OutId(3), packet, .. } if packet[..] == fulfill(5)[..]),
        "{got:?}"
    );
}

#[test]
fn oer_sync_client_repeats_the_same_id_until_answered() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let (addr, heads) = peer(|_, _| {
        if CALLS.fetch_add(1, Ordering::SeqCst) < 2 {
            (503, Vec::new())
        } else {
            (200, fulfill(4).to_vec())
        }
    });
    let mut h = harness(
        vec![
            link("alice", LinkKind::Http, None),
            link(
                "bob",
                LinkKind::HttpOerSync,
                Some(format!("http://{addr}/")),
            ),
        ],
        5_000,
    );
    h.d.forward(AccountId(1), OutId(3), prepare(1), now(), &mut h.out);
    let mut got = Vec::new();
    h.run_until(|_, evs| {
        got.extend(evs);
        !got.is_empty()
    });
    assert!(
        matches!(&got[0], Event::Reply { out_id: OutId(3), packet, .. } if packet[..] == fulfill(4)[..]),
        "{got:?}"
    );
    let paths: Vec<String> = (0..3)
        .map(|_| heads.recv_timeout(Duration::from_secs(1)).unwrap())
        .map(|h| h.lines().next().unwrap().to_string())
        .collect();
    assert!(paths[0].starts_with("POST /ilp/"), "{paths:?}");
    assert!(
        paths.iter().all(|p| *p == paths[0]),
        "same request id each time: {paths:?}"
    );
}

#[test]
fn async_prepare_gets_202_and_the_reply_is_posted_to_the_callback() {
    let (cb, heads) = peer(|_, _| (200, Vec::new()));
    let mut h = harness(
        vec![
            link("alice", LinkKind::HttpAsync, None),
            link("bob", LinkKind::Http, None),
        ],
        5_000,
    );
    let mut c = StdStream::connect(h.addr).unwrap();
    let id = "42ee09c8-a6de-4ae3-8a47-4732b0cbb07b";
    let mut req = post("/ilp", "alice-token", &prepare(3));
    let extra = format!(
        "Prefer: respond-async\r\nCallback-Url: http://{cb}/incoming\r\nRequest-Id: {id}\r\n"
    );
    let at = req.windows(4).position(|w| w == b"Host").unwrap();
    req.splice(at..at, extra.bytes());
    c.write_all(&req).unwrap();
    assert_eq!(read_responses(&mut h, &mut c, 1)[0], (202, Vec::new()));
    let mut from = None;
    h.run_until(|_, evs| {
        for e in evs {
            if let Event::Prepare { from: f, .. } = e {
                from = Some(f);
            }
        }
        from.is_some()
    });
    let r = RejectBuilder {
        code: ErrorCode::F99_APPLICATION_ERROR,
        triggered_by: b"test.ilpd",
        message: b"no",
        data: b"",
    }
    .build();
    h.reply(from.unwrap(), r);
    let mut head = None;
    h.run_until(|_, _| {
        head = heads.try_recv().ok();
        head.is_some()
    });
    let head = head.unwrap();
    assert!(head.starts_with("POST /incoming HTTP/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("Request-Id: {id}\r\n")), "{head}");
    assert!(
        head.contains("Authorization: Bearer to-alice\r\n"),
        "{head}"
    );
}

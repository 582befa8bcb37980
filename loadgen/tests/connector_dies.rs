//! A run through a tiny fake connector that dies: it relays the first N
//! Prepares from the send link to the receive link, passes some of their
//! replies back, keeps the others, and then resets both links. The run must
//! stop early, say why, count the Fulfills that came back, and list exactly
//! the packets the loopback fulfilled whose Fulfill it kept (unconfirmed),
//! by condition.

use bytes::BytesMut;
use ilpd_codec::btp::{self, Btp, BtpType};
use ilpd_codec::ilp::{Fulfill, Prepare};
use ilpd_codec::ws::{self, Decoder, Message, Opcode, Role};
use ilpd_loadgen::run::{self, RunConfig, Target};
use ilpd_loadgen::sender::Load;
use ilpd_loadgen::url::LinkUrl;
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fake connector saw.
#[derive(Default, Debug)]
struct Seen {
    /// Condition and amount of each relayed Prepare, by request id.
    prepares: HashMap<u32, ([u8; 32], u64)>,
    /// Conditions of the packets the loopback fulfilled (right preimage).
    fulfilled: HashSet<[u8; 32]>,
    /// ... of those, the ones whose Fulfill went back to the sender.
    passed_back: HashSet<[u8; 32]>,
    replies: usize,
}

/// Reads one WebSocket message from a client (masked frames).
fn next_message(s: &mut TcpStream, dec: &mut Decoder, buf: &mut BytesMut) -> Option<BytesMut> {
    loop {
        match dec.decode(buf) {
            Ok(Some(Message::Binary(p))) => return Some(p),
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(_) => return None,
        }
        let mut chunk = [0u8; 16384];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn send_btp(s: &mut TcpStream, btp_packet: &[u8]) {
    let mut f = Vec::new();
    ws::write_frame(&mut f, Opcode::Binary, btp_packet, None);
    let _ = s.write_all(&f);
}

/// Accepts one link: WebSocket upgrade and BTP auth. Returns the stream,
/// its decoder state and the account name.
fn accept_link(l: &TcpListener) -> (TcpStream, Decoder, BytesMut, String) {
    let (mut s, _) = l.accept().unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = BytesMut::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        if let Some((hs, n)) = ws::parse_client_handshake(&buf).unwrap() {
            let mut out = Vec::new();
            ws::write_server_handshake(&mut out, &ws::accept_key(hs.key));
            s.write_all(&out).unwrap();
            let _ = buf.split_to(n);
            break;
        }
    }
    let mut dec = Decoder::new(Role::Server, 1 << 16);
    let auth = next_message(&mut s, &mut dec, &mut buf).unwrap();
    let b = Btp::new_checked(&auth[..]).unwrap();
    let user = btp::parse_auth(&b)
        .unwrap()
        .username
        .map(|u| String::from_utf8_lossy(u).into_owned())
        .unwrap_or_default();
    let mut out = BytesMut::new();
    btp::write_empty_response(&mut out, b.request_id());
    send_btp(&mut s, &out);
    (s, dec, buf, user)
}

fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// The fake connector: relays the first `relay` Prepares, passes the first
/// `pass_back` replies back, then (once every relayed Prepare has its reply)
/// resets both links.
fn fake_connector(
    relay: usize,
    pass_back: usize,
) -> (u16, std::thread::JoinHandle<()>, Arc<Mutex<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    let h = std::thread::spawn(move || {
        let mut links: HashMap<String, (TcpStream, Decoder, BytesMut)> = HashMap::new();
        while links.len() < 2 {
            let (s, d, b, user) = accept_link(&l);
            links.insert(user, (s, d, b));
        }
        let (mut recv, mut recv_dec, mut recv_buf) = links.remove("recv").unwrap();
        let (mut send, mut send_dec, mut send_buf) = links.remove("send").unwrap();
        let (mut recv_w, mut send_w) = (recv.try_clone().unwrap(), send.try_clone().unwrap());
        let (send_for_reset, recv_for_reset) =
            (send.try_clone().unwrap(), recv.try_clone().unwrap());
        // Forward: the first `relay` Prepares go to the receive link.
        let seen_f = seen2.clone();
        let fwd = std::thread::spawn(move || {
            let mut n = 0;
            while let Some(m) = next_message(&mut send, &mut send_dec, &mut send_buf) {
                let b = Btp::new_checked(&m[..]).unwrap();
                if b.packet_type() != BtpType::Message || n >= relay {
                    continue;
                }
                let Some(r) = b.ilp_range() else { continue };
                let p = Prepare::new_checked(&m[r]).unwrap();
                seen_f
                    .lock()
                    .unwrap()
                    .prepares
                    .insert(b.request_id(), (*p.execution_condition(), p.amount()));
                send_btp(&mut recv_w, &m);
                n += 1;
            }
        });
        // Back: replies from the loopback, the first `pass_back` passed on.
        while let Some(m) = next_message(&mut recv, &mut recv_dec, &mut recv_buf) {
            let b = Btp::new_checked(&m[..]).unwrap();
            if b.packet_type() != BtpType::Response {
                continue;
            }
            let Some(r) = b.ilp_range() else { continue };
            let ilp = &m[r];
            let mut s = seen2.lock().unwrap();
            let (cond, _) = s.prepares[&b.request_id()];
            let ok = ilp.first() == Some(&13)
                && Fulfill::new_checked(ilp)
                    .is_ok_and(|f| <[u8; 32]>::from(sha2::Sha256::digest(f.fulfillment())) == cond);
            if ok {
                s.fulfilled.insert(cond);
            }
            if s.replies < pass_back {
                if ok {
                    s.passed_back.insert(cond);
                }
                send_btp(&mut send_w, &m);
            }
            s.replies += 1;
            if s.replies == relay {
                break;
            }
        }
        // Die: whatever is written is in the sender's socket; reset now.
        reset(&send_for_reset);
        reset(&recv_for_reset);
        drop((send_w, recv, send_for_reset, recv_for_reset));
        let _ = fwd.join();
    });
    (port, h, seen)
}

fn config(port: u16, seed: Option<u64>) -> RunConfig {
    let mut cfg = RunConfig {
        target: Target::Connector {
            send: vec![LinkUrl::parse(&format!("btp+ws://send:s@127.0.0.1:{port}/")).unwrap()],
            recv: LinkUrl::parse(&format!("btp+ws://recv:r@127.0.0.1:{port}/")).unwrap(),
            recv_ildcp: None,
        },
        recv_address: Some("test.fake.recv".into()),
        load: Load::Open { rate: 2000.0 },
        duration: Duration::from_secs(30),
        warmup: Duration::ZERO,
        amount: 7,
        mix: "fulfill=60,reject:F99=20,wrong=20".into(),
        pin: false,
        progress: false,
        ..RunConfig::default()
    };
    if let Some(s) = seed {
        cfg.seed = s;
    }
    cfg
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_connector_that_dies_leaves_unconfirmed_packets_in_the_report() {
    let (port, h, seen) = fake_connector(80, 50);
    let cfg = config(port, None);
    let t = Instant::now();
    let r = run::run(&cfg).unwrap();
    h.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.replies, 80);
    let aborted = r.aborted.clone().expect("the run says it was aborted");
    assert!(
        aborted.contains("connection reset") || aborted.contains("closed"),
        "{aborted}"
    );
    // Every Fulfill passed back counts (also those read just before the reset).
    assert_eq!(
        r.sender.total_fulfilled_packets as usize,
        seen.passed_back.len(),
        "{:?}",
        r.sender
    );
    assert_eq!(
        r.sender.total_amount_fulfilled,
        7 * seen.passed_back.len() as u128
    );
    // Unconfirmed: exactly the fulfilled packets whose Fulfill was kept.
    let want: HashSet<[u8; 32]> = seen
        .fulfilled
        .difference(&seen.passed_back)
        .copied()
        .collect();
    assert!(want.len() >= 5, "{} (mix too unlucky?)", want.len());
    let got: HashSet<[u8; 32]> = r.unconfirmed.iter().map(|u| u.condition).collect();
    assert_eq!(got, want);
    assert_eq!(r.unconfirmed.len(), want.len());
    assert!(r.unconfirmed.iter().all(|u| u.amount == 7));
    assert_eq!(r.unconfirmed_amount(), 7 * want.len() as u128);
    // The loopback fulfilled exactly those plus the ones that came back.
    assert_eq!(r.receiver.fulfilled as usize, seen.fulfilled.len());

    // The JSON report and the table say the same.
    let v = ilpd_loadgen::report::to_json(&cfg, &r);
    assert_eq!(v["aborted"], aborted.as_str());
    let u = &v["reconciliation"]["unconfirmed"];
    assert_eq!(u["count"], want.len());
    assert_eq!(u["amount"], (7 * want.len()).to_string());
    let listed: HashSet<String> = u["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["amount"], "7");
            p["condition"].as_str().unwrap().to_string()
        })
        .collect();
    let want_hex: HashSet<String> = want.iter().map(|c| hex(c)).collect();
    assert_eq!(listed, want_hex);
    assert!(listed.iter().all(|c| c.len() == 64));
    let table = ilpd_loadgen::report::table(&cfg, &r);
    assert!(
        table.contains(&format!("unconfirmed   {} packets", want.len())),
        "{table}"
    );
    assert!(table.contains("ABORTED"), "{table}");
}

#[test]
fn conditions_differ_between_runs_unless_the_seed_is_fixed() {
    let mut sets = Vec::new();
    for seed in [None, None, Some(42), Some(42)] {
        let (port, h, seen) = fake_connector(20, 20);
        let r = run::run(&config(port, seed)).unwrap();
        h.join().unwrap();
        assert!(r.aborted.is_some());
        assert!(r.unconfirmed.is_empty(), "{:?}", r.unconfirmed);
        let s = seen.lock().unwrap();
        let conds: HashSet<[u8; 32]> = s.prepares.values().map(|p| p.0).collect();
        assert_eq!(conds.len(), 20);
        sets.push(conds);
    }
    assert!(
        sets[0].is_disjoint(&sets[1]),
        "random seeds gave the same conditions"
    );
    assert_eq!(
        sets[2], sets[3],
        "--seed 42 twice gave different conditions"
    );
    assert!(sets[0].is_disjoint(&sets[2]));
}

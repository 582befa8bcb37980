//! ilpd's client side against a BTP server that keeps one socket per
//! account and closes the older login (as ilp-plugin-btp does): with one
//! connection per worker, ilpd must settle on one link, not flap.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ilpd_codec::btp::{self, Btp, BtpType};
use ilpd_tests::btp_client as bc;
use ilpd_tests::{free_ports, ilpd};

/// Reads one masked client frame (RFC 6455 §5.2) and returns its payload.
fn read_client_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut key = [0u8; 4];
    s.read_exact(&mut key)?;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p)?;
    for (i, b) in p.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    Ok(p)
}

/// Upgrade + auth on the server side; returns false on failure.
fn accept_login(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read_exact(&mut b).is_err() || head.len() > 8192 {
            return false;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let Some(key) = text.lines().find_map(|l| {
        l.strip_prefix("Sec-WebSocket-Key: ")
            .or_else(|| l.strip_prefix("sec-websocket-key: "))
    }) else {
        return false;
    };
    let accept = ilpd_codec::ws::accept_key(key.trim().as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if s.write_all(answer.as_bytes()).is_err() {
        return false;
    }
    let Ok(auth) = read_client_frame(s) else {
        return false;
    };
    let Ok(v) = Btp::new_checked(&auth[..]) else {
        return false;
    };
    if v.packet_type() != BtpType::Message
        || btp::parse_auth(&v)
            .map(|a| a.token != b"tok")
            .unwrap_or(true)
    {
        return false;
    }
    let mut resp = Vec::new();
    btp::write_empty_response(&mut resp, v.request_id());
    let mut frame = vec![0x82, resp.len() as u8];
    frame.extend_from_slice(&resp);
    s.write_all(&frame).is_ok()
}

#[test]
fn one_socket_per_account_server_does_not_make_the_link_flap() {
    let p = free_ports(3);
    let server = TcpListener::bind(("127.0.0.1", p[2])).unwrap();
    let logins = Arc::new(AtomicUsize::new(0));
    let current: Arc<Mutex<Option<TcpStream>>> = Arc::default();
    {
        let (logins, current) = (logins.clone(), current.clone());
        std::thread::spawn(move || {
            for s in server.incoming() {
                let Ok(mut s) = s else { continue };
                let (logins, current) = (logins.clone(), current.clone());
                std::thread::spawn(move || {
                    if !accept_login(&mut s) {
                        return;
                    }
                    logins.fetch_add(1, Ordering::SeqCst);
                    // The new login supersedes the previous socket.
                    if let Some(old) = current.lock().unwrap().replace(s.try_clone().unwrap()) {
                        let _ = old.shutdown(std::net::Shutdown::Both);
                    }
                    while read_client_frame(&mut s).is_ok() {}
                });
            }
        });
    }
    let (listen, m) = (
        SocketAddr::from(([127, 0, 0, 1], p[0])),
        SocketAddr::from(([127, 0, 0, 1], p[1])),
    );
    let cfg = format!(
        r#"
[node]
address = "test.ilpd"
threads = 2
pin_cores = false
listen = "{listen}"
metrics_addr = "{m}"
reconnect_initial_ms = 50
log_level = "warn"
[[accounts]]
id = "upstream"
relation = "parent"
asset_code = "USD"
asset_scale = 9
btp_url = "ws://127.0.0.1:{}/"
outgoing_token = "tok"
"#,
        p[2]
    );
    let _node = ilpd::start(&cfg, listen, "ilpd-single-socket");
    // Both workers dial (connections = 0); one login evicts the other.
    let deadline = Instant::now() + Duration::from_secs(10);
    while logins.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        logins.load(Ordering::SeqCst) >= 2,
        "both workers should have dialled"
    );
    std::thread::sleep(Duration::from_millis(1000));
    let settled = logins.load(Ordering::SeqCst);
    // With a 50 ms back-off, flapping would log in many times a second.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        logins.load(Ordering::SeqCst),
        settled,
        "the link keeps flapping"
    );
    assert_eq!(
        bc::scrape(m, "ilpd_account_connections", "account=\"upstream\""),
        Some(1.0)
    );
}

//! `GET /metrics` (Prometheus text format 0.0.4) on a small dedicated
//! thread with a blocking std listener: a cold path that must never touch
//! the workers' loops. Anything but `GET /metrics` gets 404 (405 for other
//! methods on /metrics).
//!
//! No client can hold the endpoint: each connection is served on its own short-lived thread, at most
//! [`MAX_CLIENTS`] at once (more get 503 at once), and a request must
//! arrive whole within [`HEAD_DEADLINE`], however slowly it trickles.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::IoShared;
use crate::core::Shared;
use crate::ledger::Ledger;

/// Binds `addr` and serves from a background thread; returns the bound
/// address (port 0 resolved).
pub fn spawn(
    addr: SocketAddr,
    shared: Arc<Shared>,
    io: Arc<IoShared>,
    ledger: Option<Arc<Ledger>>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("ilpd-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else {
                    // EMFILE and friends: do not spin.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if active.load(Ordering::Acquire) >= MAX_CLIENTS {
                    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                    let _ = respond(&mut stream, "503 Service Unavailable", "too many clients\n");
                    continue;
                }
                active.fetch_add(1, Ordering::AcqRel);
                let (shared, io, ledger, active2) =
                    (shared.clone(), io.clone(), ledger.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("ilpd-metrics-conn".into())
                    .spawn(move || {
                        let _ = serve(stream, &shared, &io, ledger.as_deref());
                        active2.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })?;
    Ok(bound)
}

/// Connections served at once; more get 503.
pub const MAX_CLIENTS: usize = 32;
/// A request head must arrive whole within this, however it trickles.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);

/// The request target of a `GET` request line, or why it is refused.
fn route(head: &[u8]) -> u16 {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or(&[]);
    let target = parts.next().unwrap_or(&[]);
    let path = target.split(|&b| b == b'?').next().unwrap_or(&[]);
    match (method, path) {
        (b"GET", b"/metrics") => 200,
        (_, b"/metrics") => 405,
        _ => 404,
    }
}

fn serve(
    mut stream: TcpStream,
    shared: &Shared,
    io: &IoShared,
    ledger: Option<&Ledger>,
) -> std::io::Result<()> {
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return respond(&mut stream, "408 Request Timeout", "request too slow\n");
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return respond(&mut stream, "408 Request Timeout", "request too slow\n");
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = match route(&head) {
        200 => {
            let mut body = shared.render_metrics();
            body.push_str(&io.render_metrics());
            if let Some(l) = ledger {
                l.render_metrics(&mut body);
            }
            ("200 OK", body)
        }
        405 => (
            "405 Method Not Allowed",
            String::from("method not allowed\n"),
        ),
        _ => ("404 Not Found", String::from("not found; try /metrics\n")),
    };
    respond(&mut stream, status, &body)
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"), 200);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(route(b""), 404);
    }
}

//! One blocking HTTP `GET` of a small document (an SPSP answer, a Loopback
//! Server Definition), on ureq with rustls for `https://`. Errors are
//! plain causes; callers prefix them with what they were fetching.

use std::time::Duration;

/// An agent with `timeout` for the whole exchange; keeps connections alive
/// between requests. Non-200 statuses are answers, not errors.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("ilp-loadgen/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// `GET url` with `Accept: accept`; the body of a 200 answer, at most
/// `limit` bytes. Another status is an error quoting the body's start.
pub fn get(agent: &ureq::Agent, url: &str, accept: &str, limit: u64) -> Result<Vec<u8>, String> {
    let mut resp = agent
        .get(url)
        .header("Accept", accept)
        .call()
        .map_err(|e| describe(&e))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| format!("reading the body: {}", describe(&e)))?;
    if status != 200 {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!("HTTP {status} {text:?}"));
    }
    Ok(body)
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => crate::link::io_cause(io),
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        e => e.to_string(),
    }
}

/// A one-shot HTTP server for tests: answers one request with `status`,
/// `content_type` and `body`; returns the URL (path `/doc`) and a handle
/// giving back the request it read.
#[cfg(test)]
pub fn serve_once(
    status: u16,
    content_type: &'static str,
    body: &'static str,
) -> (String, std::thread::JoinHandle<String>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/doc", l.local_addr().unwrap().port());
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    (url, h)
}

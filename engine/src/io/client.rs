//! Client-side BTP accounts: where to dial, and when to try again.
//!
//! An account with `btp_url` is dialled by the workers (`connections` of
//! them, 0 = every worker one each). After a failure the next attempt waits
//! `reconnect_initial_ms`, doubling up to [`MAX_BACKOFF_MS`]; a successful
//! auth resets the delay. Each failure is logged once at warn with the
//! account id and the cause, never the token. A connection the peer closes
//! while a sibling to the same account stays up goes dormant (see
//! [`ClientSlot::dormant`]): servers that keep one socket per account then
//! settle on one link instead of flapping.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::core::AccountId;

/// Longest wait between reconnect attempts (issue 3: "doubling to 30 s").
pub const MAX_BACKOFF_MS: u64 = 30_000;

/// A parsed `ws://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    pub host: String,
    pub port: u16,
    /// Request target, always starting with `/`.
    pub path: String,
}

impl WsUrl {
    /// Parses the URL; only `ws://` (config validation already refused
    /// anything else). Userinfo (`user:token@`) is refused: credentials
    /// belong in `btp_username` / `outgoing_token` so they are never logged
    /// as part of a URL.
    pub fn parse(url: &str) -> Result<WsUrl, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url:?} must start with ws://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(
                "credentials in the URL are not allowed; use btp_username and outgoing_token"
                    .into(),
            );
        }
        let (host, port) = parse_authority(authority)?;
        if host.is_empty() {
            return Err("missing host".into());
        }
        Ok(WsUrl {
            host,
            port,
            path: path.to_string(),
        })
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        host_header(&self.host, self.port)
    }

    /// Resolves the host (blocking DNS: cold path, once per dial attempt).
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        resolve(&self.host, self.port)
    }
}

/// Splits a URL authority, `host[:port]` or `[v6][:port]`, into host and
/// port (80 when absent). Shared by the `ws://` and `http://` peer URLs.
pub(crate) fn parse_authority(authority: &str) -> Result<(String, u16), String> {
    let port_of = |p: &str| p.parse().map_err(|_| format!("bad port {p:?}"));
    if let Some(h) = authority.strip_prefix('[') {
        let (h, after) = h.split_once(']').ok_or("unclosed [ in host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => port_of(p)?,
            None if after.is_empty() => 80,
            None => return Err(format!("unexpected {after:?} after host")),
        };
        Ok((h.to_string(), port))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => Ok((h.to_string(), port_of(p)?)),
            None => Ok((authority.to_string(), 80)),
        }
    }
}

/// The `Host` header value for a host and port (IPv6 in brackets).
pub(crate) fn host_header(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Resolves a peer's host (blocking DNS: cold path, once per dial attempt).
pub(crate) fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "host has no address"))
}

/// One outgoing connection this worker keeps up.
#[derive(Debug)]
pub struct ClientSlot {
    pub account: AccountId,
    pub url: WsUrl,
    /// Connection slot while dialling or connected.
    pub conn: Option<usize>,
    /// When to dial next (unix ms); `None` while a connection exists.
    pub next_attempt_ms: Option<u64>,
    pub backoff: Backoff,
    /// The peer closed this connection while another one to the same
    /// account stayed up: the server probably keeps one socket per account
    /// (ilp-plugin-btp does, closing the older login), so this slot waits
    /// until the account has no connection at all instead of evicting the
    /// survivor in turn.
    pub dormant: bool,
}

/// Exponential back-off between reconnect attempts.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    initial_ms: u64,
    current_ms: u64,
}

impl Backoff {
    pub fn new(initial_ms: u64) -> Backoff {
        let initial_ms = initial_ms.clamp(1, MAX_BACKOFF_MS);
        Backoff {
            initial_ms,
            current_ms: initial_ms,
        }
    }

    /// The delay before the next attempt; doubles the one after it.
    pub fn next_delay(&mut self) -> u64 {
        let d = self.current_ms;
        self.current_ms = (self.current_ms.saturating_mul(2)).min(MAX_BACKOFF_MS);
        d
    }

    /// After a successful auth: start again from the initial delay.
    pub fn reset(&mut self) {
        self.current_ms = self.initial_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = WsUrl::parse("ws://127.0.0.1:7769/accounts/x/ilp/btp").unwrap();
        assert_eq!(
            u,
            WsUrl {
                host: "127.0.0.1".into(),
                port: 7769,
                path: "/accounts/x/ilp/btp".into()
            }
        );
        assert_eq!(u.host_header(), "127.0.0.1:7769");
        let u = WsUrl::parse("ws://localhost").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = WsUrl::parse("ws://[::1]:9/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(u.host_header(), "[::1]:9");
        for bad in [
            "http://x",
            "ws://",
            "ws://h:port/",
            "ws://u:tok@h:1/",
            "ws://[::1/",
        ] {
            assert!(WsUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(100);
        let seq: Vec<u64> = (0..11).map(|_| b.next_delay()).collect();
        assert_eq!(&seq[..4], &[100, 200, 400, 800]);
        assert_eq!(*seq.last().unwrap(), MAX_BACKOFF_MS);
        assert!(seq
            .windows(2)
            .all(|w| w[1] >= w[0] && w[1] <= MAX_BACKOFF_MS));
        b.reset();
        assert_eq!(b.next_delay(), 100);
    }
}

//! Link addresses given on the command line.
//!
//! - `btp+ws://user:token@host:port/path` (also `ws://`): a BTP/2.0 client link.
//! - `http://[token@]host:port/path`: ILP-over-HTTP. For the send side this is
//!   the connector's endpoint we POST to; for the receive side it is where we
//!   listen for the connector's POSTs. The userinfo part, if any, is the
//!   bearer token (`user:token@` also works: the token is what follows `:`).
//!
//! Only plain TCP to IP literals or `localhost`: no TLS, no DNS beyond that.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Btp,
    Http,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkUrl {
    pub scheme: Scheme,
    pub user: String,
    pub token: String,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl LinkUrl {
    pub fn parse(s: &str) -> Result<LinkUrl, String> {
        let (scheme, rest) = if let Some(r) = s.strip_prefix("btp+ws://") {
            (Scheme::Btp, r)
        } else if let Some(r) = s.strip_prefix("ws://") {
            (Scheme::Btp, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if s.starts_with("btp+wss://")
            || s.starts_with("wss://")
            || s.starts_with("https://")
        {
            return Err(format!(
                "{s}: TLS is not supported (use btp+ws:// or http://)"
            ));
        } else {
            return Err(format!(
                "{s}: expected btp+ws://user:token@host:port/path or http://[token@]host:port/path"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (&authority[..i], &authority[i + 1..]),
            None => ("", authority),
        };
        let (user, token) = match userinfo.split_once(':') {
            Some((u, t)) => (u.to_string(), t.to_string()),
            None if scheme == Scheme::Http => (String::new(), userinfo.to_string()),
            None => (userinfo.to_string(), String::new()),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("{s}: bad port {p:?}"))?,
            ),
            None => (hostport.to_string(), 80),
        };
        if host.is_empty() {
            return Err(format!("{s}: missing host"));
        }
        Ok(LinkUrl {
            scheme,
            user,
            token,
            host,
            port,
            path: path.to_string(),
        })
    }

    /// The socket address (IP literal or `localhost`).
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}: cannot resolve {}: {e}", self, self.host))?
            .next()
            .ok_or_else(|| format!("{self}: no address for {}", self.host))
    }

    /// `host:port` for the HTTP Host header.
    pub fn host_header(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Shown in messages: the token is never printed.
impl fmt::Display for LinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Btp => "btp+ws",
            Scheme::Http => "http",
        };
        write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_btp_and_http() {
        let u = LinkUrl::parse("btp+ws://alice:s3cret@127.0.0.1:7768/btp").unwrap();
        assert_eq!(u.scheme, Scheme::Btp);
        assert_eq!((u.user.as_str(), u.token.as_str()), ("alice", "s3cret"));
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 7768, "/btp")
        );
        assert_eq!(u.to_string(), "btp+ws://127.0.0.1:7768/btp");
        let h = LinkUrl::parse("http://tok@127.0.0.1:8080").unwrap();
        assert_eq!(h.scheme, Scheme::Http);
        assert_eq!(
            (h.token.as_str(), h.path.as_str(), h.port),
            ("tok", "/", 8080)
        );
        assert!(LinkUrl::parse("wss://x:1/").is_err());
        assert!(LinkUrl::parse("ftp://x").is_err());
        assert!(LinkUrl::parse("http://h:notaport/").is_err());
        assert!(LinkUrl::parse("http://:80/").is_err());
    }
}

//! Loopback Transport discovery: a Loopback Server Definition (LSD) names
//! the receive link a connector offers the generator, as a file or a URL
//! served with `Content-Type: application/lsd+json`:
//!
//! ```json
//! {"loopback": "btp+ws://token@host:port/", "protocol": "BTP/2.0"}
//! ```
//!
//! `ilp-loadgen run --lsd FILE|URL` takes it instead of `--recv`. In the
//! `loopback` URL a userinfo without `:` is the BTP token (no username);
//! `user:token@` works as in `--recv`.

use std::time::Duration;

use crate::url::{LinkUrl, Scheme};

/// The media type an LSD is served with (and asked for).
pub const CONTENT_TYPE: &str = "application/lsd+json";

/// Reads an LSD from `src` (an `http(s)://` URL, else a file path) and
/// returns the receive link it names.
pub fn load(src: &str, timeout: Duration) -> Result<LinkUrl, String> {
    let body = if src.starts_with("http://") || src.starts_with("https://") {
        fetch(src, timeout)?
    } else {
        std::fs::read(src).map_err(|e| format!("--lsd {src}: {e}"))?
    };
    parse(&body).map_err(|e| format!("--lsd {src}: {e}"))
}

fn fetch(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let accept = format!("{CONTENT_TYPE}, application/json");
    crate::http_get::get(&crate::http_get::agent(timeout), url, &accept, 64 * 1024)
        .map_err(|e| format!("--lsd {url}: {e}"))
}

/// Parses an LSD body.
pub fn parse(body: &[u8]) -> Result<LinkUrl, String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("not a Loopback Server Definition (JSON: {e})"))?;
    let loopback = v["loopback"]
        .as_str()
        .ok_or("Loopback Server Definition without \"loopback\"")?;
    let protocol = v["protocol"]
        .as_str()
        .ok_or("Loopback Server Definition without \"protocol\"")?;
    if !protocol.eq_ignore_ascii_case("BTP/2.0") {
        return Err(format!(
            "protocol {protocol:?} is not supported (ilp-loadgen receives over \"BTP/2.0\")"
        ));
    }
    let mut url = LinkUrl::parse(loopback)?;
    if url.scheme != Scheme::Btp {
        return Err(format!(
            "loopback {url} is not a btp+ws:// URL (protocol BTP/2.0)"
        ));
    }
    // `btp+ws://token@host/`: the userinfo is the token.
    if url.token.is_empty() && !url.user.is_empty() {
        url.token = std::mem::take(&mut url.user);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_definition() {
        let u = parse(br#"{"loopback": "btp+ws://s3cret@127.0.0.1:7768/", "protocol": "BTP/2.0"}"#)
            .unwrap();
        assert_eq!(u.scheme, Scheme::Btp);
        assert_eq!((u.user.as_str(), u.token.as_str()), ("", "s3cret"));
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 7768));
        let u = parse(br#"{"loopback": "btp+ws://bob:tok@127.0.0.1:1/x", "protocol": "BTP/2.0"}"#)
            .unwrap();
        assert_eq!(
            (u.user.as_str(), u.token.as_str(), u.path.as_str()),
            ("bob", "tok", "/x")
        );
        for bad in [
            &br#"{"protocol": "BTP/2.0"}"#[..],
            br#"{"loopback": "btp+ws://t@127.0.0.1:1/"}"#,
            br#"{"loopback": "btp+ws://t@127.0.0.1:1/", "protocol": "ILP-over-HTTP"}"#,
            br#"{"loopback": "http://t@127.0.0.1:1/", "protocol": "BTP/2.0"}"#,
            b"loopback",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    const BODY: &str = r#"{"loopback": "btp+ws://tok@127.0.0.1:9/", "protocol": "BTP/2.0"}"#;

    #[test]
    fn loads_from_a_file_and_a_url() {
        let dir = std::env::temp_dir().join(format!("lsd-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("lsd.json");
        std::fs::write(&file, BODY).unwrap();
        let u = load(file.to_str().unwrap(), Duration::from_secs(2)).unwrap();
        assert_eq!((u.token.as_str(), u.port), ("tok", 9));
        let e = load(
            dir.join("none.json").to_str().unwrap(),
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert!(e.starts_with("--lsd "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);

        let (url, h) = crate::http_get::serve_once(200, CONTENT_TYPE, BODY);
        let u = load(&url, Duration::from_secs(5)).unwrap();
        assert_eq!(u.token, "tok");
        let req = h.join().unwrap().to_ascii_lowercase();
        assert!(req.contains("accept: application/lsd+json"), "{req}");
    }
}

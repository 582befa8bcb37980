//! Who `ilp-loadgen stream` pays: an SPSP endpoint (RFC 9), queried once
//! per payment as wallets do, or a STREAM destination and shared secret
//! given directly.
//!
//! The query is a blocking `GET` with `Accept: application/spsp4+json,
//! application/spsp+json` (ureq, with rustls for `https://` payment
//! pointers); the body is parsed by ilpd-stream's SPSP parser.

use std::time::Duration;

use ilpd_stream::spsp::{self, SpspResponse};

/// Largest SPSP response body read (a real one is a few hundred bytes).
const MAX_BODY: u64 = 64 * 1024;

/// Who receives the payments.
#[derive(Clone)]
pub enum Payee {
    /// An SPSP URL (a payment pointer is resolved to one first): every
    /// payment asks it for its own STREAM connection.
    Spsp { url: String },
    /// One STREAM connection given directly (`--destination`, `--secret`).
    Direct(SpspResponse),
}

impl std::fmt::Debug for Payee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payee::Spsp { url } => write!(f, "SPSP {url}"),
            Payee::Direct(r) => write!(f, "STREAM {}", r.destination_account),
        }
    }
}

impl Payee {
    /// `--spsp URL or $payment-pointer`.
    pub fn spsp(pointer_or_url: &str) -> Result<Payee, String> {
        let url = spsp::spsp_url(pointer_or_url)
            .map_err(|e| format!("--spsp {pointer_or_url:?}: {e}"))?;
        Ok(Payee::Spsp { url })
    }

    /// `--destination ADDR --secret BASE64` (standard or URL-safe base64,
    /// 32 bytes), checked like an SPSP response.
    pub fn direct(destination: &str, secret_base64: &str) -> Result<Payee, String> {
        let body = serde_json::json!({
            "destination_account": destination,
            "shared_secret": secret_base64,
        });
        SpspResponse::parse(body.to_string().as_bytes())
            .map(Payee::Direct)
            .map_err(|e| match e {
                spsp::SpspError::BadSharedSecret => {
                    "--secret must be 32 bytes in base64".to_string()
                }
                spsp::SpspError::MissingField(_) => {
                    format!("--destination {destination:?} is not a valid ILP address")
                }
                e => e.to_string(),
            })
    }

    /// For messages and the report: the SPSP URL or the STREAM address.
    pub fn label(&self) -> String {
        match self {
            Payee::Spsp { url } => format!("SPSP {url}"),
            Payee::Direct(r) => format!("STREAM {}", r.destination_account),
        }
    }
}

/// A reusable SPSP client (keeps connections alive between queries).
#[derive(Clone)]
pub struct SpspClient {
    agent: ureq::Agent,
}

impl SpspClient {
    pub fn new(timeout: Duration) -> SpspClient {
        SpspClient {
            agent: crate::http_get::agent(timeout),
        }
    }

    /// `GET url` and parse the SPSP response. Every error names the URL.
    pub fn query(&self, url: &str) -> Result<SpspResponse, String> {
        let body = crate::http_get::get(&self.agent, url, spsp::ACCEPT, MAX_BODY)
            .map_err(|e| format!("SPSP query {url}: {e}"))?;
        SpspResponse::parse(&body).map_err(|e| format!("SPSP query {url}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_once(status: u16, body: &'static str) -> (String, std::thread::JoinHandle<String>) {
        crate::http_get::serve_once(status, "application/spsp4+json", body)
    }

    #[test]
    fn queries_and_parses_an_spsp_response() {
        let (url, h) = serve_once(
            200,
            r#"{"destination_account":"test.r.abc","shared_secret":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#,
        );
        let r = SpspClient::new(Duration::from_secs(5)).query(&url).unwrap();
        assert_eq!(r.destination_account, "test.r.abc");
        assert_eq!(r.shared_secret, [0; 32]);
        let req = h.join().unwrap().to_ascii_lowercase();
        assert!(req.starts_with("get /doc http/1.1"), "{req}");
        assert!(
            req.contains("accept: application/spsp4+json, application/spsp+json"),
            "{req}"
        );
    }

    #[test]
    fn errors_name_the_url_and_the_cause() {
        let (url, h) = serve_once(404, "no such user");
        let e = SpspClient::new(Duration::from_secs(5))
            .query(&url)
            .unwrap_err();
        h.join().unwrap();
        assert!(e.contains(&url) && e.contains("HTTP 404"), "{e}");

        let (url, h) = serve_once(200, "{}");
        let e = SpspClient::new(Duration::from_secs(5))
            .query(&url)
            .unwrap_err();
        h.join().unwrap();
        assert!(e.contains("destination_account"), "{e}");

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/");
        let e = SpspClient::new(Duration::from_secs(5))
            .query(&url)
            .unwrap_err();
        assert!(e.contains(&url) && e.contains("refused"), "{e}");
    }

    #[test]
    fn payees_from_flags() {
        match Payee::spsp("$example.com/bob").unwrap() {
            Payee::Spsp { url } => assert_eq!(url, "https://example.com/bob"),
            p => panic!("{p:?}"),
        }
        assert!(Payee::spsp("example.com").is_err());
        let secret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(matches!(
            Payee::direct("test.r.x", secret),
            Ok(Payee::Direct(_))
        ));
        assert!(Payee::direct("test.r.x", "AAAA")
            .unwrap_err()
            .contains("32 bytes"));
        assert!(Payee::direct("not an address", secret)
            .unwrap_err()
            .contains("--destination"));
    }
}

//! SPSP (RFC 9) and the stateless derivation of STREAM connection details
//! from one server secret (RFC 29 "Setup": "a server MAY deterministically
//! generate the shared secret for each connection from a single server
//! secret and a nonce appended to the ILP Address").
//!
//! The derivation is ilp-protocol-stream's (its `Server`), so a server
//! secret can move between ilpd and a JavaScript STREAM server and the
//! addresses one issued are still accepted by the other:
//!
//! ```text
//! plaintext   = nonce (18 random bytes) ‖ VarOctetString connectionTag
//!               ‖ VarOctetString receiptNonce (0 or 16) ‖ VarOctetString receiptSecret (0 or 32)
//! token       = AES-256-GCM(key = server secret, plaintext)   (IV ‖ tag ‖ ciphertext)
//! address     = base address ‖ "." ‖ base64url(token)         (no padding)
//! secret      = HMAC-SHA256(HMAC-SHA256(server secret, "ilp_stream_shared_secret"), token)
//! ```
//!
//! The token is authenticated, so a receiver tells an address it issued
//! from a guessed one before it keeps any state, and the receipt secret
//! travels encrypted inside the address (RFC 39 "Stateless Receiver").
//! interledger-rs uses the same HMAC over a plain random token instead; its
//! addresses are not accepted here.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use core::fmt;
use ilpd_codec::oer::{self, Reader};

use crate::crypto::{hmac_sha256, Envelope};
use crate::receipt::{ReceiptParams, NONCE_LEN, SECRET_LEN};
use crate::rng::{RandomError, RandomSource};

/// Random bytes at the start of every token (ilp-protocol-stream's
/// `TOKEN_NONCE_LENGTH`).
pub const TOKEN_NONCE_LEN: usize = 18;
/// The media type of an SPSP response (RFC 9 "Response").
pub const CONTENT_TYPE: &str = "application/spsp4+json";
/// What an SPSP client sends as `Accept` (RFC 9 "Query").
pub const ACCEPT: &str = "application/spsp4+json, application/spsp+json";

const SHARED_SECRET_STRING: &[u8] = b"ilp_stream_shared_secret";

/// base64url, no padding on output, either on input (Node's decoder is
/// as lenient).
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token was refused. All mean "not an address we issued".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not base64url, or too short to be a token.
    Malformed,
    /// Does not authenticate under the server secret.
    NotOurs,
    /// Authenticates, but its contents are not the layout above.
    BadContents,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "malformed connection token",
            TokenError::NotOurs => "connection token not issued by this server",
            TokenError::BadContents => "connection token contents invalid",
        })
    }
}

impl std::error::Error for TokenError {}

/// The receiver's long-lived secret (32 bytes). Everything else about a
/// connection is derived from it and the token in the address.
#[derive(Clone)]
pub struct ServerSecret {
    secret: [u8; 32],
    token_key: Envelope,
    secret_generator: [u8; 32],
}

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecret(..)")
    }
}

/// What a client needs to open a STREAM connection (RFC 29 "Setup").
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionDetails {
    pub destination_account: String,
    pub shared_secret: [u8; 32],
    pub receipts_enabled: bool,
}

impl fmt::Debug for ConnectionDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionDetails")
            .field("destination_account", &self.destination_account)
            .field("receipts_enabled", &self.receipts_enabled)
            .finish_non_exhaustive()
    }
}

/// What an authenticated token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenContents {
    /// Opaque to STREAM; lets the operator tell connections apart.
    pub connection_tag: Vec<u8>,
    /// Set when the SPSP query asked for receipts (RFC 39 "SPSP").
    pub receipt: Option<ReceiptParams>,
}

impl ServerSecret {
    pub fn from_bytes(secret: [u8; 32]) -> Self {
        ServerSecret {
            secret,
            token_key: Envelope::new(&secret),
            secret_generator: hmac_sha256(&secret, SHARED_SECRET_STRING),
        }
    }

    /// A new random server secret.
    pub fn generate<R: RandomSource + ?Sized>(rng: &mut R) -> Result<Self, RandomError> {
        let mut s = [0u8; 32];
        rng.fill(&mut s)?;
        Ok(Self::from_bytes(s))
    }

    /// The 32 bytes, to be stored (e.g. in the node's data dir).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Issues a new address and shared secret under `base_address`
    /// (RFC 9 "Response"). `connection_tag` is stored in the token.
    pub fn generate_address_and_secret<R: RandomSource + ?Sized>(
        &self,
        rng: &mut R,
        base_address: &str,
        connection_tag: &[u8],
        receipt: Option<&ReceiptParams>,
    ) -> Result<ConnectionDetails, RandomError> {
        let mut plain = Vec::with_capacity(TOKEN_NONCE_LEN + 3 + connection_tag.len() + 48);
        let mut nonce = [0u8; TOKEN_NONCE_LEN];
        rng.fill(&mut nonce)?;
        plain.extend_from_slice(&nonce);
        oer::put_var_octets(&mut plain, connection_tag);
        match receipt {
            Some(r) => {
                oer::put_var_octets(&mut plain, &r.nonce);
                oer::put_var_octets(&mut plain, &r.secret);
            }
            None => plain.extend_from_slice(&[0, 0]),
        }
        let mut token = Vec::with_capacity(plain.len() + crate::crypto::OVERHEAD);
        self.token_key.seal(rng, &plain, &mut token)?;
        let mut destination_account = String::with_capacity(base_address.len() + 1 + 96);
        destination_account.push_str(base_address);
        destination_account.push('.');
        URL_SAFE_LENIENT.encode_string(&token, &mut destination_account);
        Ok(ConnectionDetails {
            destination_account,
            shared_secret: self.shared_secret(&token),
            receipts_enabled: receipt.is_some(),
        })
    }

    /// The shared secret of the connection whose token (decoded bytes) is
    /// `token`. Does not check the token.
    pub fn shared_secret(&self, token: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.secret_generator, token)
    }

    /// Authenticates a decoded token and reads what it carries.
    pub fn open_token(&self, token: &[u8]) -> Result<TokenContents, TokenError> {
        let mut plain = Vec::with_capacity(token.len());
        self.token_key
            .open(token, &mut plain)
            .map_err(|_| TokenError::NotOurs)?;
        let mut r = Reader::new(&plain);
        r.read_bytes(TOKEN_NONCE_LEN)
            .map_err(|_| TokenError::BadContents)?;
        let tag = r.read_var_octets().map_err(|_| TokenError::BadContents)?;
        let nonce = r.read_var_octets().map_err(|_| TokenError::BadContents)?;
        let secret = r.read_var_octets().map_err(|_| TokenError::BadContents)?;
        let receipt = match (nonce.len(), secret.len()) {
            (0, 0) => None,
            (NONCE_LEN, SECRET_LEN) => {
                let mut p = ReceiptParams {
                    nonce: [0; NONCE_LEN],
                    secret: [0; SECRET_LEN],
                };
                p.nonce.copy_from_slice(nonce);
                p.secret.copy_from_slice(secret);
                Some(p)
            }
            _ => return Err(TokenError::BadContents),
        };
        Ok(TokenContents {
            connection_tag: tag.to_vec(),
            receipt,
        })
    }
}

/// Decodes the base64url token segment of an address.
pub fn decode_token(segment: &[u8]) -> Result<Vec<u8>, TokenError> {
    // A token is at least IV + tag + nonce + three empty lengths.
    if segment.len() < 4 * (crate::crypto::OVERHEAD + TOKEN_NONCE_LEN + 3) / 3
        || segment.len() > 4096
    {
        return Err(TokenError::Malformed);
    }
    URL_SAFE_LENIENT
        .decode(segment)
        .map_err(|_| TokenError::Malformed)
}

/// The SPSP response body (RFC 9 "Response"): `destination_account`,
/// `shared_secret` in standard base64, and `receipts_enabled` when the
/// connection gives receipts (RFC 39 "SPSP").
pub fn response_json(details: &ConnectionDetails) -> String {
    let mut v = serde_json::json!({
        "destination_account": details.destination_account,
        "shared_secret": STANDARD.encode(details.shared_secret),
    });
    if details.receipts_enabled {
        v["receipts_enabled"] = serde_json::Value::Bool(true);
    }
    v.to_string()
}

/// Why an SPSP response or payment pointer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpspError {
    Json(String),
    MissingField(&'static str),
    BadSharedSecret,
    BadPaymentPointer(&'static str),
}

impl fmt::Display for SpspError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpspError::Json(e) => write!(f, "SPSP response is not JSON: {e}"),
            SpspError::MissingField(k) => write!(f, "SPSP response has no {k}"),
            SpspError::BadSharedSecret => {
                f.write_str("SPSP shared_secret is not 32 bytes of base64")
            }
            SpspError::BadPaymentPointer(why) => write!(f, "bad payment pointer: {why}"),
        }
    }
}

impl std::error::Error for SpspError {}

/// A parsed SPSP response, as a sender reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct SpspResponse {
    pub destination_account: String,
    pub shared_secret: [u8; 32],
    pub receipts_enabled: bool,
}

impl fmt::Debug for SpspResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpspResponse")
            .field("destination_account", &self.destination_account)
            .field("receipts_enabled", &self.receipts_enabled)
            .finish_non_exhaustive()
    }
}

impl SpspResponse {
    /// Parses a response body. The secret may be standard or URL-safe
    /// base64, padded or not; it must be 32 bytes. Unknown fields
    /// (`balance`, `asset_info`, ...) are ignored.
    pub fn parse(body: &[u8]) -> Result<Self, SpspError> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| SpspError::Json(e.to_string()))?;
        let dest = v["destination_account"]
            .as_str()
            .ok_or(SpspError::MissingField("destination_account"))?;
        ilpd_codec::address::validate(dest.as_bytes())
            .map_err(|_| SpspError::MissingField("valid destination_account"))?;
        let secret = v["shared_secret"]
            .as_str()
            .ok_or(SpspError::MissingField("shared_secret"))?;
        let normalized: String = secret
            .trim_end_matches('=')
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '/',
                c => c,
            })
            .collect();
        let lenient = GeneralPurpose::new(
            &alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let bytes = lenient
            .decode(normalized)
            .map_err(|_| SpspError::BadSharedSecret)?;
        let shared_secret: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SpspError::BadSharedSecret)?;
        Ok(SpspResponse {
            destination_account: dest.to_string(),
            shared_secret,
            receipts_enabled: v["receipts_enabled"].as_bool().unwrap_or(false),
        })
    }
}

/// The SPSP URL of a payment pointer (RFC 26 "Payment Setup Protocol
/// Receiver Endpoint Resolution"; no query or fragment, "Payment Pointer
/// Syntax"):
/// `$example.com` → `https://example.com/.well-known/pay`,
/// `$example.com/bob` → `https://example.com/bob`. An `http://` or
/// `https://` URL is returned unchanged, so callers can take either.
pub fn spsp_url(pointer_or_url: &str) -> Result<String, SpspError> {
    let s = pointer_or_url.trim();
    if s.starts_with("https://") || s.starts_with("http://") {
        return Ok(s.to_string());
    }
    let rest = s
        .strip_prefix('$')
        .ok_or(SpspError::BadPaymentPointer("must start with $"))?;
    if rest.is_empty() {
        return Err(SpspError::BadPaymentPointer("no host"));
    }
    if rest
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err(SpspError::BadPaymentPointer("spaces, query or fragment"));
    }
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if host.is_empty() || host.contains('@') {
        return Err(SpspError::BadPaymentPointer("no host"));
    }
    let path = if path.is_empty() || path == "/" {
        "/.well-known/pay"
    } else {
        path
    };
    Ok(format!("https://{host}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u8);
    impl RandomSource for Counter {
        fn fill(&mut self, out: &mut [u8]) -> Result<(), RandomError> {
            for b in out {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
            Ok(())
        }
    }

    #[test]
    fn issue_and_open() {
        let s = ServerSecret::from_bytes([5; 32]);
        let mut rng = Counter(0);
        let r = ReceiptParams {
            nonce: [1; 16],
            secret: [2; 32],
        };
        let d = s
            .generate_address_and_secret(&mut rng, "test.ilpd.bob", b"tag", Some(&r))
            .unwrap();
        assert!(d.receipts_enabled);
        let seg = d.destination_account.rsplit('.').next().unwrap();
        assert!(ilpd_codec::address::validate(d.destination_account.as_bytes()).is_ok());
        let token = decode_token(seg.as_bytes()).unwrap();
        assert_eq!(s.shared_secret(&token), d.shared_secret);
        let c = s.open_token(&token).unwrap();
        assert_eq!(c.connection_tag, b"tag");
        assert_eq!(c.receipt, Some(r));
        let other = ServerSecret::from_bytes([6; 32]);
        assert_eq!(other.open_token(&token), Err(TokenError::NotOurs));
        let d2 = s
            .generate_address_and_secret(&mut rng, "test.ilpd.bob", b"", None)
            .unwrap();
        assert_ne!(d2.destination_account, d.destination_account);
        assert!(!d2.receipts_enabled);
        assert!(decode_token(b"abc").is_err());
    }

    #[test]
    fn json_round_trip() {
        let d = ConnectionDetails {
            destination_account: "test.x.y".into(),
            shared_secret: [0xfb; 32],
            receipts_enabled: false,
        };
        let j = response_json(&d);
        assert!(j.contains("\"shared_secret\":\"+/v7"), "{j}");
        assert!(!j.contains("receipts_enabled"));
        let p = SpspResponse::parse(j.as_bytes()).unwrap();
        assert_eq!(p.shared_secret, d.shared_secret);
        assert_eq!(p.destination_account, "test.x.y");
        let url_safe = j.replace('+', "-").replace('/', "_").replace('=', "");
        assert_eq!(
            SpspResponse::parse(url_safe.as_bytes())
                .unwrap()
                .shared_secret,
            d.shared_secret
        );
        assert!(SpspResponse::parse(b"{}").is_err());
        assert!(SpspResponse::parse(
            b"{\"destination_account\":\"test.a\",\"shared_secret\":\"AAAA\"}"
        )
        .is_err());
    }

    #[test]
    fn payment_pointers() {
        assert_eq!(
            spsp_url("$example.com").unwrap(),
            "https://example.com/.well-known/pay"
        );
        assert_eq!(
            spsp_url("$example.com/").unwrap(),
            "https://example.com/.well-known/pay"
        );
        assert_eq!(
            spsp_url("$example.com/bob").unwrap(),
            "https://example.com/bob"
        );
        assert_eq!(
            spsp_url("$localhost:8080/alice").unwrap(),
            "https://localhost:8080/alice"
        );
        assert_eq!(
            spsp_url("http://127.0.0.1:1/x").unwrap(),
            "http://127.0.0.1:1/x"
        );
        for bad in ["example.com", "$", "$/bob", "$a b", "$a?x", "$u@h"] {
            assert!(spsp_url(bad).is_err(), "{bad}");
        }
    }
}

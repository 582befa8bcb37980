//! STREAM receipts (RFC 39 "Specification"): proof, for a verifier that
//! shares a secret with the receiver, of the total received on a stream.
//!
//! ```text
//! version UInt8 (= 1) ‖ nonce UInt128 ‖ streamId UInt8 ‖ totalReceived UInt64
//! ‖ hmac UInt256 = HMAC-SHA256(receipt secret, the 26 bytes before it)
//! ```
//!
//! 58 bytes, fixed layout. The stream id is one byte (RFC 39 and
//! ilp-protocol-stream both), so streams above 255 get no receipt.

use ilpd_codec::{DecodeError, Result};

use crate::crypto::hmac_sha256;

pub const RECEIPT_VERSION: u8 = 1;
pub const RECEIPT_LEN: usize = 58;
pub const NONCE_LEN: usize = 16;
pub const SECRET_LEN: usize = 32;

/// What a verifier gives the receiver for one connection (RFC 39 "Flow").
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReceiptParams {
    pub nonce: [u8; NONCE_LEN],
    pub secret: [u8; SECRET_LEN],
}

impl core::fmt::Debug for ReceiptParams {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReceiptParams")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// A decoded receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub nonce: [u8; NONCE_LEN],
    pub stream_id: u8,
    pub total_received: u64,
    pub hmac: [u8; 32],
}

/// Builds the receipt for `stream_id` (`None` above 255).
pub fn create(params: &ReceiptParams, stream_id: u64, total_received: u64) -> Option<[u8; 58]> {
    let stream_id = u8::try_from(stream_id).ok()?;
    let mut out = [0u8; RECEIPT_LEN];
    out[0] = RECEIPT_VERSION;
    out[1..17].copy_from_slice(&params.nonce);
    out[17] = stream_id;
    out[18..26].copy_from_slice(&total_received.to_be_bytes());
    let mac = hmac_sha256(&params.secret, &out[..26]);
    out[26..].copy_from_slice(&mac);
    Some(out)
}

/// Decodes a receipt without checking its HMAC.
pub fn decode(b: &[u8]) -> Result<Receipt> {
    let b: &[u8; RECEIPT_LEN] = b.try_into().map_err(|_| DecodeError::BadLength)?;
    if b[0] != RECEIPT_VERSION {
        return Err(DecodeError::Invalid("receipt version"));
    }
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&b[1..17]);
    let mut total = [0u8; 8];
    total.copy_from_slice(&b[18..26]);
    let mut hmac = [0u8; 32];
    hmac.copy_from_slice(&b[26..]);
    Ok(Receipt {
        nonce,
        stream_id: b[17],
        total_received: u64::from_be_bytes(total),
        hmac,
    })
}

/// Decodes a receipt and checks its HMAC with `secret` (RFC 39 "Overview":
/// what a verifier checks first).
pub fn verify(b: &[u8], secret: &[u8; SECRET_LEN]) -> Result<Receipt> {
    let r = decode(b)?;
    let want = hmac_sha256(secret, &b[..26]);
    // Compared in constant time, so a forger learns nothing from timing.
    let diff = want
        .iter()
        .zip(r.hmac.iter())
        .fold(0u8, |a, (x, y)| a | (x ^ y));
    if diff != 0 {
        return Err(DecodeError::Invalid("receipt HMAC"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let p = ReceiptParams {
            nonce: [3; 16],
            secret: [4; 32],
        };
        let r = create(&p, 1, 500).unwrap();
        let d = verify(&r, &p.secret).unwrap();
        assert_eq!((d.stream_id, d.total_received, d.nonce), (1, 500, [3; 16]));
        let mut bad = r;
        bad[25] ^= 1;
        assert!(verify(&bad, &p.secret).is_err());
        assert!(verify(&r, &[5; 32]).is_err());
        assert!(create(&p, 256, 1).is_none());
        assert!(decode(&r[..57]).is_err());
    }
}

//! STREAM cryptography (RFC 29 "Encryption", "Condition and Fulfillment
//! Generation"):
//!
//! - encryption key = HMAC-SHA256(shared secret, `"ilp_stream_encryption"`);
//! - AES-256-GCM, 12-byte random IV, 16-byte tag, no associated data; the
//!   ILP `data` field is `IV ‖ tag ‖ ciphertext`;
//! - fulfillment = HMAC-SHA256(HMAC-SHA256(shared secret,
//!   `"ilp_stream_fulfillment"`), the whole encrypted `data`);
//!   condition = SHA-256(fulfillment).
//!
//! [`ConnectionKeys`] holds what one connection needs for every packet:
//! the expanded AES key and the keyed HMAC state, so a packet costs one
//! AES-GCM pass and one HMAC over its data, not a key derivation.
//!
//! AES-256-GCM is `ring`'s and HMAC-SHA256 is RustCrypto's `hmac` over
//! the workspace's `sha2`: each the faster of the two for its half of the
//! per-packet work (docs/benchmarks.md "STREAM crypto").

use core::fmt;
use hmac::{Hmac, Mac};
use ilpd_codec::{Condition, Fulfillment};
use sha2::Sha256;

use crate::rng::{RandomError, RandomSource};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

pub const IV_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Bytes encryption adds to a plaintext.
pub const OVERHEAD: usize = IV_LEN + TAG_LEN;
/// Largest ILP `data` field (RFC 27), hence the largest STREAM ciphertext
/// is this minus [`OVERHEAD`] (32,739 bytes, RFC 29 "Encryption Envelope").
pub const MAX_DATA_LEN: usize = 32_767;

const ENCRYPTION_KEY_STRING: &[u8] = b"ilp_stream_encryption";
const FULFILLMENT_KEY_STRING: &[u8] = b"ilp_stream_fulfillment";

/// `data` is not a STREAM envelope we can open: too short, or the tag
/// does not authenticate it under this key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptError;

impl fmt::Display for DecryptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("STREAM data does not decrypt")
    }
}

impl std::error::Error for DecryptError {}

/// HMAC-SHA256(key, msg).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = keyed(key);
    m.update(msg);
    m.finalize().into_bytes().into()
}

fn keyed(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; the error arm cannot happen.
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()))
}

/// AES-256-GCM in the STREAM envelope layout, under any 32-byte key. Used
/// with a connection's encryption key, and by [`crate::spsp`] with the
/// server secret for connection tokens (as ilp-protocol-stream does).
#[derive(Clone)]
pub struct Envelope {
    aead: LessSafeKey,
}

impl Envelope {
    pub fn new(key: &[u8; 32]) -> Self {
        // A 32-byte key is what AES-256 takes; `new` cannot fail on it.
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .unwrap_or_else(|_| unreachable!("AES-256 takes 32-byte keys"));
        Envelope {
            aead: LessSafeKey::new(unbound),
        }
    }

    /// Appends `IV ‖ tag ‖ ciphertext` of `plaintext` to `out`.
    pub fn seal_with_iv(&self, iv: [u8; IV_LEN], plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.reserve(OVERHEAD + plaintext.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&[0; TAG_LEN]);
        out.extend_from_slice(plaintext);
        let body = start + OVERHEAD;
        // Fails only for plaintexts over 64 GiB.
        if let Ok(tag) = self.aead.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::empty(),
            &mut out[body..],
        ) {
            out[start + IV_LEN..body].copy_from_slice(tag.as_ref());
        }
    }

    /// [`Envelope::seal_with_iv`] with a fresh random IV.
    pub fn seal<R: RandomSource + ?Sized>(
        &self,
        rng: &mut R,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RandomError> {
        let mut iv = [0u8; IV_LEN];
        rng.fill(&mut iv)?;
        self.seal_with_iv(iv, plaintext, out);
        Ok(())
    }

    /// Opens `data` into `out` (cleared first). On failure `out` is empty.
    pub fn open(&self, data: &[u8], out: &mut Vec<u8>) -> Result<(), DecryptError> {
        out.clear();
        if data.len() < OVERHEAD {
            return Err(DecryptError);
        }
        let (iv, rest) = data.split_at(IV_LEN);
        let (tag, ciphertext) = rest.split_at(TAG_LEN);
        let (Ok(iv), Ok(tag)) = (<[u8; IV_LEN]>::try_from(iv), Tag::try_from(tag)) else {
            return Err(DecryptError);
        };
        out.extend_from_slice(ciphertext);
        let opened = self.aead.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::empty(),
            tag,
            out,
            0..,
        );
        match opened {
            Ok(_) => Ok(()),
            Err(_) => {
                out.clear();
                Err(DecryptError)
            }
        }
    }
}

/// The per-connection keys derived from a shared secret.
#[derive(Clone)]
pub struct ConnectionKeys {
    envelope: Envelope,
    fulfillment: Hmac<Sha256>,
}

impl ConnectionKeys {
    pub fn new(shared_secret: &[u8]) -> Self {
        let ek = hmac_sha256(shared_secret, ENCRYPTION_KEY_STRING);
        let fk = hmac_sha256(shared_secret, FULFILLMENT_KEY_STRING);
        ConnectionKeys {
            envelope: Envelope::new(&ek),
            fulfillment: keyed(&fk),
        }
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Decrypts a STREAM `data` field into `out`.
    pub fn decrypt(&self, data: &[u8], out: &mut Vec<u8>) -> Result<(), DecryptError> {
        self.envelope.open(data, out)
    }

    /// Encrypts a STREAM packet with a fresh random IV, appending to `out`.
    pub fn encrypt<R: RandomSource + ?Sized>(
        &self,
        rng: &mut R,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RandomError> {
        self.envelope.seal(rng, plaintext, out)
    }

    /// The fulfillment of a Prepare whose `data` is this encrypted packet.
    pub fn fulfillment(&self, data: &[u8]) -> Fulfillment {
        let mut m = self.fulfillment.clone();
        m.update(data);
        Fulfillment(m.finalize().into_bytes().into())
    }

    /// SHA-256 of [`ConnectionKeys::fulfillment`]: the condition a sender
    /// puts on a fulfillable Prepare.
    pub fn condition(&self, data: &[u8]) -> Condition {
        self.fulfillment(data).condition()
    }
}

impl fmt::Debug for ConnectionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnectionKeys(..)")
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Envelope(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = ConnectionKeys::new(&[1; 32]);
        let mut data = Vec::new();
        k.envelope().seal_with_iv([2; 12], b"hello", &mut data);
        assert_eq!(data.len(), OVERHEAD + 5);
        let mut out = Vec::new();
        k.decrypt(&data, &mut out).unwrap();
        assert_eq!(out, b"hello");
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x40;
            assert_eq!(k.decrypt(&bad, &mut out), Err(DecryptError));
            assert!(out.is_empty());
        }
        assert_eq!(k.decrypt(&data[..27], &mut out), Err(DecryptError));
        let other = ConnectionKeys::new(&[9; 32]);
        assert_eq!(other.decrypt(&data, &mut out), Err(DecryptError));
        // An empty plaintext is a valid envelope.
        let mut e = Vec::new();
        k.envelope().seal_with_iv([3; 12], b"", &mut e);
        k.decrypt(&e, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn fulfillment_matches_condition() {
        let k = ConnectionKeys::new(&[1; 32]);
        let f = k.fulfillment(b"data");
        assert_eq!(f.condition(), k.condition(b"data"));
        assert_ne!(k.fulfillment(b"datb"), f);
    }
}

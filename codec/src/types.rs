//! Small value types shared by the engine and the load generator:
//! condition, fulfillment, expiry and the F08 error data.

use core::fmt;

use sha2::{Digest, Sha256};

use crate::error::{DecodeError, Result};
use crate::time::{format_ilp_timestamp, parse_ilp_timestamp};

/// SHA-256 digest a Prepare is locked to (RFC 27 "ILP Prepare").
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct Condition(pub [u8; 32]);

/// 32-byte preimage that unlocks a [`Condition`] (RFC 27 "ILP Fulfill").
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct Fulfillment(pub [u8; 32]);

/// The fulfillment the peer protocols use: 32 zero bytes (RFC 31 "Packet").
pub const PEER_PROTOCOL_FULFILLMENT: Fulfillment = Fulfillment([0; 32]);

/// SHA-256 of 32 zero bytes, the condition of `peer.*` requests
/// (RFC 31 "Packet"), `peer.settle` included: interledger-rs's `66687aad…`,
/// not RFC 38's (docs/design.md "Peer-protocol condition").
pub const PEER_PROTOCOL_CONDITION: Condition = Condition([
    0x66, 0x68, 0x7a, 0xad, 0xf8, 0x62, 0xbd, 0x77, 0x6c, 0x8f, 0xc1, 0x8b, 0x8e, 0x9f, 0x8e, 0x20,
    0x08, 0x97, 0x14, 0x85, 0x6e, 0xe2, 0x33, 0xb3, 0x90, 0x2a, 0x59, 0x1d, 0x0d, 0x5f, 0x29, 0x25,
]);

impl Fulfillment {
    /// SHA-256 of the fulfillment (RFC 27: the condition it unlocks).
    pub fn condition(&self) -> Condition {
        Condition(Sha256::digest(self.0).into())
    }
}

impl Condition {
    /// Whether SHA-256(`f`) equals this condition
    /// (RFC 27 "ILP Packet Lifecycle", step 10).
    pub fn is_fulfilled_by(&self, f: &Fulfillment) -> bool {
        f.condition() == *self
    }
}

fn hex_fmt(f: &mut fmt::Formatter<'_>, name: &str, b: &[u8]) -> fmt::Result {
    f.write_str(name)?;
    f.write_str("(")?;
    for x in b {
        write!(f, "{x:02x}")?;
    }
    f.write_str(")")
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex_fmt(f, "Condition", &self.0)
    }
}

impl fmt::Debug for Fulfillment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex_fmt(f, "Fulfillment", &self.0)
    }
}

/// A Prepare's expiry: milliseconds since the Unix epoch, UTC.
#[derive(Debug, Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Expiry(pub u64);

impl Expiry {
    /// Parses a 17-digit ILP timestamp (RFC 30 "Fixed-length Timestamps").
    #[inline]
    pub fn from_ilp_timestamp(b: &[u8]) -> Result<Expiry> {
        parse_ilp_timestamp(b).map(Expiry)
    }

    /// Formats as a 17-digit ILP timestamp (clamped at year 9999).
    #[inline]
    pub fn to_ilp_timestamp(&self) -> [u8; 17] {
        format_ilp_timestamp(self.0)
    }
}

/// F08 Amount Too Large error data (RFC 27 "Error Codes", `AmountTooLargeErrorData`):
/// two UInt64 in the rejecting connector's link units.
#[derive(Debug, Copy, Clone, PartialEq, Eq, Hash)]
pub struct AmountTooLarge {
    pub received: u64,
    pub maximum: u64,
}

impl AmountTooLarge {
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.received.to_be_bytes());
        out[8..].copy_from_slice(&self.maximum.to_be_bytes());
        out
    }

    /// Reads the first 16 bytes; trailing bytes are ignored
    /// (RFC 30 "Extensibility").
    pub fn decode(b: &[u8]) -> Result<AmountTooLarge> {
        match b.first_chunk::<16>() {
            Some(b) => {
                let (r, m) = b.split_at(8);
                let mut rb = [0u8; 8];
                let mut mb = [0u8; 8];
                rb.copy_from_slice(r);
                mb.copy_from_slice(m);
                Ok(AmountTooLarge {
                    received: u64::from_be_bytes(rb),
                    maximum: u64::from_be_bytes(mb),
                })
            }
            None => Err(DecodeError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_protocol_condition_is_sha256_of_zeros() {
        let h: [u8; 32] = Sha256::digest([0u8; 32]).into();
        assert_eq!(PEER_PROTOCOL_CONDITION.0, h);
        assert_eq!(
            PEER_PROTOCOL_FULFILLMENT.condition(),
            PEER_PROTOCOL_CONDITION
        );
        assert!(PEER_PROTOCOL_CONDITION.is_fulfilled_by(&PEER_PROTOCOL_FULFILLMENT));
        assert!(!PEER_PROTOCOL_CONDITION.is_fulfilled_by(&Fulfillment([1; 32])));
    }

    #[test]
    fn f08_data() {
        let v = AmountTooLarge {
            received: 255,
            maximum: 65535,
        };
        let e = v.encode();
        assert_eq!(e[7], 0xff);
        assert_eq!(&e[14..], &[0xff, 0xff]);
        assert_eq!(AmountTooLarge::decode(&e), Ok(v));
        let mut long = e.to_vec();
        long.push(9);
        assert_eq!(AmountTooLarge::decode(&long), Ok(v));
        assert_eq!(
            AmountTooLarge::decode(&e[..15]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn expiry_round_trip() {
        let e = Expiry::from_ilp_timestamp(b"20171224161432279").unwrap();
        assert_eq!(&e.to_ilp_timestamp(), b"20171224161432279");
        assert!(Expiry::from_ilp_timestamp(b"2017").is_err());
    }
}

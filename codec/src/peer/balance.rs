//! `peer.balance` ("Interledger node roles" draft;
//! docs/design.md "peer.balance"): the answer carries the balance as a
//! signed Int64 (8 bytes big-endian, two's complement) as the whole Fulfill
//! data, from the requester's point of view. Using the peer-protocol
//! condition for it is our choice (docs/design.md "Peer-protocol condition").

use bytes::BytesMut;

use crate::error::{DecodeError, Result};
use crate::types::Expiry;

use super::{parse_peer_fulfill, peer_fulfill, peer_request_prepare, PEER_BALANCE};

/// The request: Prepare to `peer.balance`, amount 0, empty data.
pub fn request_prepare(expires_at: Expiry) -> BytesMut {
    peer_request_prepare(PEER_BALANCE, expires_at, &[])
}

/// The answer: Fulfill, 32 zero bytes, data = Int64 BE
/// (`0d29 00×32 08 <8 bytes>`).
pub fn balance_fulfill(balance: i64) -> BytesMut {
    peer_fulfill(&balance.to_be_bytes())
}

/// Reads the balance from a whole Fulfill; the fulfillment must be 32 zero
/// bytes and the data exactly 8 bytes.
pub fn parse_balance_fulfill(buf: &[u8]) -> Result<i64> {
    let data = parse_peer_fulfill(buf)?;
    let bytes: [u8; 8] = data
        .try_into()
        .map_err(|_| DecodeError::Invalid("balance is not 8 bytes"))?;
    Ok(i64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_extremes() {
        for b in [0, 1, -1, -1000, i64::MIN, i64::MAX] {
            assert_eq!(parse_balance_fulfill(&balance_fulfill(b)), Ok(b));
        }
    }

    #[test]
    fn wrong_length_refused() {
        let short = super::super::peer_fulfill(&[1, 2, 3]);
        assert_eq!(
            parse_balance_fulfill(&short),
            Err(DecodeError::Invalid("balance is not 8 bytes"))
        );
    }
}

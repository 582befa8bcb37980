//! The ILP peer protocols (docs/design.md "Peer protocols"): requests are
//! Prepares with amount 0 and the peer-protocol condition to a `peer.*`
//! destination, answered by a Fulfill with 32 zero bytes or a Reject. Each
//! protocol's payload lives in its own module; this one holds what they
//! share.

use core::fmt;

use bytes::BytesMut;

use crate::error::{DecodeError, Result};
use crate::ilp::{Fulfill, FulfillBuilder, Prepare, PrepareBuilder};
use crate::types::{Expiry, PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT};

pub mod balance;
pub mod ccp;
pub mod echo;
pub mod ildcp;

/// IL-DCP (RFC 31).
pub const PEER_CONFIG: &[u8] = b"peer.config";
/// Balance query (node-roles draft, docs/design.md "peer.balance").
pub const PEER_BALANCE: &[u8] = b"peer.balance";
/// CCP route control.
pub const PEER_ROUTE_CONTROL: &[u8] = b"peer.route.control";
/// CCP route update.
pub const PEER_ROUTE_UPDATE: &[u8] = b"peer.route.update";
/// Settlement-engine messages (RFC 38).
pub const PEER_SETTLE: &[u8] = b"peer.settle";
/// Every peer protocol lives under this scheme; never forwarded (RFC 15).
pub const PEER_SCHEME: &[u8] = b"peer.";
/// Expiry the JS libraries give their requests: now + 60 s.
pub const DEFAULT_REQUEST_EXPIRY_MS: u64 = 60_000;

/// Which peer protocol a `peer.*` destination names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerProtocol {
    Config,
    RouteControl,
    RouteUpdate,
    Balance,
    Settle,
    /// Under `peer.` but not one we speak: F02
    /// (docs/design.md "Unknown peer protocols").
    Unknown,
}

/// Classifies a destination; `None` when it is not under `peer.`.
pub fn classify(destination: &[u8]) -> Option<PeerProtocol> {
    if !destination.starts_with(PEER_SCHEME) {
        return None;
    }
    Some(match destination {
        PEER_CONFIG => PeerProtocol::Config,
        PEER_ROUTE_CONTROL => PeerProtocol::RouteControl,
        PEER_ROUTE_UPDATE => PeerProtocol::RouteUpdate,
        PEER_BALANCE => PeerProtocol::Balance,
        PEER_SETTLE => PeerProtocol::Settle,
        _ => PeerProtocol::Unknown,
    })
}

/// Why a Prepare is not an acceptable peer-protocol request. The engine
/// maps `WrongCondition` and `WrongDestination` to F01 and `Expired` to R00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRequestError {
    /// The condition is not SHA-256 of 32 zero bytes.
    WrongCondition,
    /// `expiresAt` is already past.
    Expired,
    /// Not the destination this protocol uses.
    WrongDestination,
}

impl fmt::Display for PeerRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerRequestError::WrongCondition => "condition is not the peer-protocol condition",
            PeerRequestError::Expired => "peer-protocol request expired",
            PeerRequestError::WrongDestination => "wrong peer-protocol destination",
        })
    }
}

impl std::error::Error for PeerRequestError {}

/// Checks a Prepare to any `peer.*` destination: the destination is under
/// `peer.`, the condition is the peer-protocol condition and the request is
/// not expired at `now_ms` (ms since the Unix epoch). Same order and rule as
/// ilp-protocol-ildcp / ilp-protocol-ccp: expired means `now > expiresAt`.
pub fn is_peer_protocol_request<T: AsRef<[u8]>>(
    p: &Prepare<T>,
    now_ms: u64,
) -> core::result::Result<(), PeerRequestError> {
    if !p.destination().starts_with(PEER_SCHEME) {
        return Err(PeerRequestError::WrongDestination);
    }
    check_condition_and_expiry(p, now_ms)
}

/// Like [`is_peer_protocol_request`], but the destination must be exactly
/// `destination` (e.g. [`PEER_CONFIG`]).
pub fn check_request<T: AsRef<[u8]>>(
    p: &Prepare<T>,
    destination: &[u8],
    now_ms: u64,
) -> core::result::Result<(), PeerRequestError> {
    if p.destination() != destination {
        return Err(PeerRequestError::WrongDestination);
    }
    check_condition_and_expiry(p, now_ms)
}

fn check_condition_and_expiry<T: AsRef<[u8]>>(
    p: &Prepare<T>,
    now_ms: u64,
) -> core::result::Result<(), PeerRequestError> {
    if p.execution_condition() != &PEER_PROTOCOL_CONDITION.0 {
        return Err(PeerRequestError::WrongCondition);
    }
    if now_ms > p.expires_at().0 {
        return Err(PeerRequestError::Expired);
    }
    Ok(())
}

/// A peer-protocol request Prepare: amount 0, peer-protocol condition
/// (also what `peer.settle` messages ride in, RFC 38).
pub fn peer_request_prepare(destination: &[u8], expires_at: Expiry, data: &[u8]) -> BytesMut {
    PrepareBuilder {
        amount: 0,
        expires_at,
        execution_condition: &PEER_PROTOCOL_CONDITION.0,
        destination,
        data,
    }
    .build()
}

/// A peer-protocol answer: Fulfill with 32 zero bytes and `data`.
pub fn peer_fulfill(data: &[u8]) -> BytesMut {
    FulfillBuilder {
        fulfillment: &PEER_PROTOCOL_FULFILLMENT.0,
        data,
    }
    .build()
}

/// Parses a whole Fulfill answering a peer-protocol request and returns its
/// data; the fulfillment must be 32 zero bytes.
pub fn parse_peer_fulfill(buf: &[u8]) -> Result<&[u8]> {
    let f = Fulfill::new_checked(buf)?;
    if f.fulfillment() != &PEER_PROTOCOL_FULFILLMENT.0 {
        return Err(DecodeError::Invalid("fulfillment is not 32 zero bytes"));
    }
    // `Fulfill::data` borrows the view; re-slice `buf` so the result lives
    // as long as the input (the view checked these bounds already).
    let data = f.data();
    let start = (data.as_ptr() as usize)
        .checked_sub(buf.as_ptr() as usize)
        .ok_or(DecodeError::Truncated)?;
    buf.get(start..start + data.len())
        .ok_or(DecodeError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checks() {
        let ok = peer_request_prepare(PEER_BALANCE, Expiry(5_000), b"");
        let p = Prepare::new_checked(&ok[..]).expect("prepare");
        assert_eq!(is_peer_protocol_request(&p, 5_000), Ok(()));
        assert_eq!(
            is_peer_protocol_request(&p, 5_001),
            Err(PeerRequestError::Expired)
        );
        assert_eq!(check_request(&p, PEER_BALANCE, 0), Ok(()));
        assert_eq!(
            check_request(&p, PEER_CONFIG, 0),
            Err(PeerRequestError::WrongDestination)
        );

        let cond = [1u8; 32];
        let wrong = PrepareBuilder {
            amount: 0,
            expires_at: Expiry(5_000),
            execution_condition: &cond,
            destination: PEER_CONFIG,
            data: b"",
        }
        .build();
        let p = Prepare::new_checked(&wrong[..]).expect("prepare");
        assert_eq!(
            check_request(&p, PEER_CONFIG, 0),
            Err(PeerRequestError::WrongCondition)
        );

        let not_peer = PrepareBuilder {
            amount: 0,
            expires_at: Expiry(5_000),
            execution_condition: &PEER_PROTOCOL_CONDITION.0,
            destination: b"g.peer.config",
            data: b"",
        }
        .build();
        let p = Prepare::new_checked(&not_peer[..]).expect("prepare");
        assert_eq!(
            is_peer_protocol_request(&p, 0),
            Err(PeerRequestError::WrongDestination)
        );
    }

    #[test]
    fn fulfill_must_be_zero() {
        let f = peer_fulfill(b"abc");
        assert_eq!(parse_peer_fulfill(&f), Ok(&b"abc"[..]));
        let other = FulfillBuilder {
            fulfillment: &[3; 32],
            data: b"abc",
        }
        .build();
        assert_eq!(
            parse_peer_fulfill(&other),
            Err(DecodeError::Invalid("fulfillment is not 32 zero bytes"))
        );
    }

    #[test]
    fn classify_destinations() {
        assert_eq!(classify(b"peer.config"), Some(PeerProtocol::Config));
        assert_eq!(
            classify(b"peer.route.update"),
            Some(PeerProtocol::RouteUpdate)
        );
        assert_eq!(classify(b"peer.route.controk"), Some(PeerProtocol::Unknown));
        assert_eq!(classify(b"peer.settle"), Some(PeerProtocol::Settle));
        assert_eq!(classify(b"peer.balance"), Some(PeerProtocol::Balance));
        assert_eq!(classify(b"g.peer.config"), None);
    }
}

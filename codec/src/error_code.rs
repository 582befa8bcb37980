//! ILP error codes (RFC 27 "Error Codes"): three ASCII bytes,
//! a class letter and two digits.

use core::fmt;

use crate::error::{DecodeError, Result};

/// What the sender may do about an error (RFC 27 "Error Codes").
#[derive(Debug, Copy, Clone, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// `F`: do not retry unchanged.
    Final,
    /// `T`: retry, maybe after a delay.
    Temporary,
    /// `R`: not enough margin in amount or time.
    Relative,
}

/// A validated three-byte ILP error code (`F02`, `T04`...). The field is
/// private so every value has passed [`ErrorCode::from_bytes`].
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct ErrorCode([u8; 3]);

impl ErrorCode {
    pub const F00_BAD_REQUEST: ErrorCode = ErrorCode(*b"F00");
    pub const F01_INVALID_PACKET: ErrorCode = ErrorCode(*b"F01");
    pub const F02_UNREACHABLE: ErrorCode = ErrorCode(*b"F02");
    pub const F03_INVALID_AMOUNT: ErrorCode = ErrorCode(*b"F03");
    pub const F04_INSUFFICIENT_DESTINATION_AMOUNT: ErrorCode = ErrorCode(*b"F04");
    pub const F05_WRONG_CONDITION: ErrorCode = ErrorCode(*b"F05");
    pub const F06_UNEXPECTED_PAYMENT: ErrorCode = ErrorCode(*b"F06");
    pub const F07_CANNOT_RECEIVE: ErrorCode = ErrorCode(*b"F07");
    pub const F08_AMOUNT_TOO_LARGE: ErrorCode = ErrorCode(*b"F08");
    pub const F09_INVALID_PEER_RESPONSE: ErrorCode = ErrorCode(*b"F09");
    pub const F99_APPLICATION_ERROR: ErrorCode = ErrorCode(*b"F99");
    pub const T00_INTERNAL_ERROR: ErrorCode = ErrorCode(*b"T00");
    pub const T01_PEER_UNREACHABLE: ErrorCode = ErrorCode(*b"T01");
    pub const T02_PEER_BUSY: ErrorCode = ErrorCode(*b"T02");
    pub const T03_CONNECTOR_BUSY: ErrorCode = ErrorCode(*b"T03");
    pub const T04_INSUFFICIENT_LIQUIDITY: ErrorCode = ErrorCode(*b"T04");
    pub const T05_RATE_LIMITED: ErrorCode = ErrorCode(*b"T05");
    pub const T99_APPLICATION_ERROR: ErrorCode = ErrorCode(*b"T99");
    pub const R00_TRANSFER_TIMED_OUT: ErrorCode = ErrorCode(*b"R00");
    pub const R01_INSUFFICIENT_SOURCE_AMOUNT: ErrorCode = ErrorCode(*b"R01");
    pub const R02_INSUFFICIENT_TIMEOUT: ErrorCode = ErrorCode(*b"R02");
    pub const R99_APPLICATION_ERROR: ErrorCode = ErrorCode(*b"R99");

    /// Every named code (RFC 27), in the order above.
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::F00_BAD_REQUEST,
        ErrorCode::F01_INVALID_PACKET,
        ErrorCode::F02_UNREACHABLE,
        ErrorCode::F03_INVALID_AMOUNT,
        ErrorCode::F04_INSUFFICIENT_DESTINATION_AMOUNT,
        ErrorCode::F05_WRONG_CONDITION,
        ErrorCode::F06_UNEXPECTED_PAYMENT,
        ErrorCode::F07_CANNOT_RECEIVE,
        ErrorCode::F08_AMOUNT_TOO_LARGE,
        ErrorCode::F09_INVALID_PEER_RESPONSE,
        ErrorCode::F99_APPLICATION_ERROR,
        ErrorCode::T00_INTERNAL_ERROR,
        ErrorCode::T01_PEER_UNREACHABLE,
        ErrorCode::T02_PEER_BUSY,
        ErrorCode::T03_CONNECTOR_BUSY,
        ErrorCode::T04_INSUFFICIENT_LIQUIDITY,
        ErrorCode::T05_RATE_LIMITED,
        ErrorCode::T99_APPLICATION_ERROR,
        ErrorCode::R00_TRANSFER_TIMED_OUT,
        ErrorCode::R01_INSUFFICIENT_SOURCE_AMOUNT,
        ErrorCode::R02_INSUFFICIENT_TIMEOUT,
        ErrorCode::R99_APPLICATION_ERROR,
    ];

    /// Accepts any `F`/`T`/`R` followed by two ASCII digits, named or not,
    /// so an end-to-end code we do not know is still relayed unchanged.
    #[inline]
    pub const fn from_bytes(b: [u8; 3]) -> Result<ErrorCode> {
        let class_ok = matches!(b[0], b'F' | b'T' | b'R');
        if class_ok && b[1].is_ascii_digit() && b[2].is_ascii_digit() {
            Ok(ErrorCode(b))
        } else {
            Err(DecodeError::Invalid("error code"))
        }
    }

    #[inline]
    pub const fn as_bytes(&self) -> &[u8; 3] {
        &self.0
    }

    /// The code as text (`"F02"`). The bytes are ASCII by construction; the
    /// fallback only keeps this panic-free.
    #[inline]
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// The RFC 27 "Error Codes" name, or `"Unknown"` for an unnamed code.
    pub const fn name(&self) -> &'static str {
        match &self.0 {
            b"F00" => "Bad Request",
            b"F01" => "Invalid Packet",
            b"F02" => "Unreachable",
            b"F03" => "Invalid Amount",
            b"F04" => "Insufficient Destination Amount",
            b"F05" => "Wrong Condition",
            b"F06" => "Unexpected Payment",
            b"F07" => "Cannot Receive",
            b"F08" => "Amount Too Large",
            b"F09" => "Invalid Peer Response",
            b"F99" | b"T99" | b"R99" => "Application Error",
            b"T00" => "Internal Error",
            b"T01" => "Peer Unreachable",
            b"T02" => "Peer Busy",
            b"T03" => "Connector Busy",
            b"T04" => "Insufficient Liquidity",
            b"T05" => "Rate Limited",
            b"R00" => "Transfer Timed Out",
            b"R01" => "Insufficient Source Amount",
            b"R02" => "Insufficient Timeout",
            _ => "Unknown",
        }
    }

    /// Class from the first letter (RFC 27 "Error Codes").
    #[inline]
    pub const fn class(&self) -> ErrorClass {
        match self.0[0] {
            b'F' => ErrorClass::Final,
            b'T' => ErrorClass::Temporary,
            _ => ErrorClass::Relative,
        }
    }
}

/// `F02 Unreachable`.
impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.as_str(), self.name())
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorCode({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_names() {
        let c = ErrorCode::from_bytes(*b"F02").unwrap();
        assert_eq!(c, ErrorCode::F02_UNREACHABLE);
        assert_eq!(c.as_str(), "F02");
        assert_eq!(c.name(), "Unreachable");
        assert_eq!(c.class(), ErrorClass::Final);
        assert_eq!(c.to_string(), "F02 Unreachable");
        assert_eq!(
            ErrorCode::T04_INSUFFICIENT_LIQUIDITY.class(),
            ErrorClass::Temporary
        );
        assert_eq!(
            ErrorCode::R00_TRANSFER_TIMED_OUT.class(),
            ErrorClass::Relative
        );
        assert_eq!(
            ErrorCode::R00_TRANSFER_TIMED_OUT.name(),
            "Transfer Timed Out"
        );
        let unnamed = ErrorCode::from_bytes(*b"T42").unwrap();
        assert_eq!(unnamed.name(), "Unknown");
        assert_eq!(unnamed.as_bytes(), b"T42");
    }

    #[test]
    fn refuses_bad_codes() {
        for b in [*b"X01", *b"f01", *b"F0a", *b"F 1", *b"\0\0\0", *b"FF0"] {
            assert!(ErrorCode::from_bytes(b).is_err(), "{b:?}");
        }
    }

    #[test]
    fn every_const_parses_and_is_named() {
        for (i, c) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(ErrorCode::from_bytes(*c.as_bytes()), Ok(c));
            assert_ne!(c.name(), "Unknown", "{c:?}");
            assert!(!ErrorCode::ALL[..i].contains(&c), "{c:?} twice");
        }
    }
}

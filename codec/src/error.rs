//! The one error type every decoder in this crate returns.
//!
//! The engine maps these to ILP error codes in one place (F01 for a bad
//! packet), so the variants say *what* was wrong, not what to answer.

use core::fmt;

/// Why a buffer could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ended before the field did.
    Truncated,
    /// A length determinant is malformed (`0x80`, more than 8 length bytes,
    /// or a length that does not fit the enclosing buffer).
    BadLength,
    /// A length or integer is not in canonical (minimal) OER form.
    NonCanonical,
    /// An ILP address is not valid per RFC 15.
    BadAddress,
    /// A timestamp is not a valid 17-digit ILP timestamp or GeneralizedTime.
    BadTimestamp,
    /// A field is longer than its format allows (`what` names the field).
    FieldTooLong(&'static str),
    /// The type byte is not one this format defines.
    UnknownType(u8),
    /// Any other violation of the format (`what` says which).
    Invalid(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated"),
            DecodeError::BadLength => f.write_str("bad length determinant"),
            DecodeError::NonCanonical => f.write_str("non-canonical encoding"),
            DecodeError::BadAddress => f.write_str("invalid ILP address"),
            DecodeError::BadTimestamp => f.write_str("invalid timestamp"),
            DecodeError::FieldTooLong(what) => write!(f, "{what} too long"),
            DecodeError::UnknownType(t) => write!(f, "unknown type {t}"),
            DecodeError::Invalid(what) => write!(f, "invalid: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Result alias used by every decoder.
pub type Result<T> = core::result::Result<T, DecodeError>;

//! ILP addresses (RFC 15, digest §3): validation, segment-aware prefix
//! matching and an owned, always-valid [`Address`].
//!
//! Validation runs on every incoming Prepare, so it is one branch-free,
//! vectorizable pass over the bytes instead of a regex (a 256-entry table
//! was measured slower: its loads do not vectorize).

use core::fmt;
use core::str::FromStr;

use bytes::Bytes;

use crate::error::{DecodeError, Result};

/// Longest valid address in bytes (RFC 15, digest §3).
pub const MAX_ADDRESS_LEN: usize = 1023;

/// Whether `c` is a segment character `A-Z a-z 0-9 _ ~ -` (RFC 15).
/// Arithmetic, not a table, so the loop below vectorizes.
#[inline(always)]
const fn is_segment_char(c: u8) -> bool {
    let lower = c | 0x20;
    (lower.wrapping_sub(b'a') < 26)
        | (c.wrapping_sub(b'0') < 10)
        | (c == b'_')
        | (c == b'~')
        | (c == b'-')
}

/// Checks that `bytes` is a valid ILP address: 1..=1023 bytes, a known
/// scheme, then one or more non-empty `.segment`s (RFC 15, digest §3).
#[inline]
pub fn validate(bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() || bytes.len() > MAX_ADDRESS_LEN {
        return Err(DecodeError::BadAddress);
    }
    // Schemes are at most 7 bytes, so the first dot is within 8.
    let head = &bytes[..bytes.len().min(8)];
    let dot = match head.iter().position(|&b| b == b'.') {
        Some(i) => i,
        None => return Err(DecodeError::BadAddress),
    };
    if !matches!(
        &bytes[..dot],
        b"g" | b"private"
            | b"example"
            | b"peer"
            | b"self"
            | b"test"
            | b"test1"
            | b"test2"
            | b"test3"
            | b"local"
    ) {
        return Err(DecodeError::BadAddress);
    }
    // From the scheme's dot on: every byte a segment char or a dot, never
    // two dots in a row (no empty segment), and no trailing dot. Each step
    // looks at (previous, current) only, so there is no loop-carried state
    // and the compiler can vectorize it.
    let tail = &bytes[dot..];
    let mut bad = false;
    for (&prev, &c) in tail.iter().zip(&tail[1..]) {
        let is_dot = c == b'.';
        bad |= !(is_segment_char(c) | is_dot) | (is_dot & (prev == b'.'));
    }
    if bad | (tail.len() < 2) | (bytes[bytes.len() - 1] == b'.') {
        return Err(DecodeError::BadAddress);
    }
    Ok(())
}

/// Checks that `segment` is one non-empty address segment (no dots).
fn validate_segment(segment: &[u8]) -> Result<()> {
    if segment.is_empty() || segment.iter().any(|&b| !is_segment_char(b)) {
        return Err(DecodeError::BadAddress);
    }
    Ok(())
}

/// Segment-aware prefix match (digest §4.2, DESIGN "Routing"): true when
/// `dest == prefix` or `dest` starts with `prefix` followed by `.`, so
/// `g.alice` matches `g.alice.x` but never `g.alicebob`.
#[inline]
pub fn prefix_matches(prefix: &[u8], dest: &[u8]) -> bool {
    match dest.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest[0] == b'.',
        None => false,
    }
}

/// An owned ILP address that is always valid (checked on construction).
/// Cheap to clone: it shares its bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(Bytes);

impl Address {
    /// Validates `s` and copies it into a new address.
    pub fn new(s: &str) -> Result<Address> {
        Address::from_bytes(s.as_bytes())
    }

    /// Validates `b` and copies it into a new address.
    pub fn from_bytes(b: &[u8]) -> Result<Address> {
        validate(b)?;
        Ok(Address(Bytes::copy_from_slice(b)))
    }

    /// Validates `b` and takes it without copying.
    pub fn from_shared(b: Bytes) -> Result<Address> {
        validate(&b)?;
        Ok(Address(b))
    }

    /// The address bytes (ASCII).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The address as text. Valid addresses are ASCII, so the checked
    /// conversion never fails; the fallback only keeps this panic-free.
    #[inline]
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or("")
    }

    /// `self` + "." + `segment`, e.g. a child's address (digest §3).
    pub fn with_suffix(&self, segment: &str) -> Result<Address> {
        validate_segment(segment.as_bytes())?;
        let len = self.0.len() + 1 + segment.len();
        if len > MAX_ADDRESS_LEN {
            return Err(DecodeError::BadAddress);
        }
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(&self.0);
        v.push(b'.');
        v.extend_from_slice(segment.as_bytes());
        Ok(Address(Bytes::from(v)))
    }

    /// Segment-aware: whether `dest` is this address or below it.
    #[inline]
    pub fn is_prefix_of(&self, dest: &[u8]) -> bool {
        prefix_matches(&self.0, dest)
    }

    /// The first segment (`g`, `test`, `peer`...).
    pub fn scheme(&self) -> &str {
        let s = self.as_str();
        match s.find('.') {
            Some(i) => &s[..i],
            None => s,
        }
    }

    /// The shared bytes, for zero-copy use in builders.
    #[inline]
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({:?})", self.as_str())
    }
}

impl FromStr for Address {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Address> {
        Address::new(s)
    }
}

impl AsRef<[u8]> for Address {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<&str> for Address {
    type Error = DecodeError;
    fn try_from(s: &str) -> Result<Address> {
        Address::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_addresses() {
        for a in [
            "g.alice",
            "test.a",
            "test1.a.b",
            "test2.x",
            "test3.x",
            "private.x-y_z~1",
            "example.top.middle.lower",
            "peer.config",
            "self.x",
            "local.host",
            "g.A.Z.0.9",
        ] {
            assert_eq!(validate(a.as_bytes()), Ok(()), "{a}");
        }
        let long = format!("g.{}", "a".repeat(1021));
        assert_eq!(long.len(), 1023);
        assert_eq!(validate(long.as_bytes()), Ok(()));
    }

    #[test]
    fn invalid_addresses() {
        let too_long = format!("g.{}", "a".repeat(1022));
        for a in [
            "",
            "g",
            "g.",
            "g..a",
            "g.a.",
            ".g.a",
            "G.alice",
            "test4.a",
            "tes.a",
            "foo.bar",
            "g.a b",
            "g.a/b",
            "g.a\u{e9}",
            "g.a\0",
            too_long.as_str(),
        ] {
            assert_eq!(
                validate(a.as_bytes()),
                Err(DecodeError::BadAddress),
                "{a:?}"
            );
        }
    }

    #[test]
    fn prefix_is_segment_aware() {
        assert!(prefix_matches(b"g.alice", b"g.alice"));
        assert!(prefix_matches(b"g.alice", b"g.alice.bob"));
        assert!(!prefix_matches(b"g.alice", b"g.alicebob"));
        assert!(!prefix_matches(b"g.alice", b"g.alic"));
        assert!(!prefix_matches(b"g.alice.x", b"g.alice"));
        assert!(prefix_matches(b"g", b"g.x"));
    }

    #[test]
    fn owned_address() {
        let a = Address::new("g.alice").unwrap();
        assert_eq!(a.as_str(), "g.alice");
        assert_eq!(a.scheme(), "g");
        assert_eq!(a.to_string(), "g.alice");
        assert_eq!(format!("{a:?}"), "Address(\"g.alice\")");
        let c = a.with_suffix("bob").unwrap();
        assert_eq!(c.as_bytes(), b"g.alice.bob");
        assert!(a.is_prefix_of(c.as_bytes()));
        assert!(!a.is_prefix_of(b"g.alicebob"));
        assert_eq!(a.with_suffix(""), Err(DecodeError::BadAddress));
        assert_eq!(a.with_suffix("a.b"), Err(DecodeError::BadAddress));
        assert_eq!("x.y".parse::<Address>(), Err(DecodeError::BadAddress));
        let near = Address::new(&format!("g.{}", "a".repeat(1019))).unwrap();
        assert!(near.with_suffix("b").is_ok());
        assert!(near.with_suffix("bc").is_err());
    }
}

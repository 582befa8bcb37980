//! ILP addresses (RFC 15 "Address Requirements"): validation, segment-aware prefix
//! matching and an owned, always-valid [`Address`].
//!
//! Validation runs on every incoming Prepare, so it is one branch-free,
//! vectorizable pass over the bytes instead of a regex (a 256-entry table
//! was measured slower: its loads do not vectorize).

use core::fmt;
use core::str::FromStr;

use bytes::Bytes;

use crate::error::{DecodeError, Result};

/// Longest valid address in bytes (RFC 15 "Address Requirements").
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
/// scheme, then one or more non-empty `.segment`s (RFC 15 "Address Requirements").
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
    // After the scheme: every byte a segment char or a dot, never two dots
    // in a row (no empty segment), and no trailing dot. Each byte is
    // checked against its predecessor only, so the check runs on fixed
    // 16-byte windows that compile to SIMD. The scheme bytes pass this
    // check too (letters and digits), so windows may start at byte 1; the
    // last window overlaps the previous one, and an address of at most 16
    // bytes is padded with `a` in registers. A scalar or 8-byte tail cost
    // ~1 ns per byte (a 16-byte address took longer than a 26-byte one);
    // padding through a stack copy stalled on store forwarding.
    let n = bytes.len();
    if dot + 1 >= n || bytes[n - 1] == b'.' {
        return Err(DecodeError::BadAddress);
    }
    let bad = if n > 16 {
        let mut bad = false;
        let mut i = 1;
        while i + 16 <= n {
            bad |= bad_window(bytes, i);
            i += 16;
        }
        if i < n {
            bad |= bad_window(bytes, n - 16);
        }
        bad
    } else {
        bad_short(bytes)
    };
    if bad {
        return Err(DecodeError::BadAddress);
    }
    Ok(())
}

/// Whether `c` (preceded by `prev`) breaks the address grammar after the
/// scheme: not a segment char or dot, or a second dot in a row.
#[inline(always)]
const fn bad_pair(prev: u8, c: u8) -> bool {
    let is_dot = c == b'.';
    !(is_segment_char(c) | is_dot) | (is_dot & (prev == b'.'))
}

/// Checks the 16 bytes at `start..start + 16` against their predecessors.
/// Callers keep `1 <= start` and `start + 16 <= bytes.len()`; out of
/// range counts as bad rather than panicking.
#[inline(always)]
fn bad_window(bytes: &[u8], start: usize) -> bool {
    let window: Option<&[u8; 17]> = bytes
        .get(start.wrapping_sub(1)..start.wrapping_add(16))
        .and_then(|s| s.try_into().ok());
    let Some(w) = window else {
        return true;
    };
    let mut bad = false;
    for k in 0..16 {
        bad |= bad_pair(w[k], w[k + 1]);
    }
    bad
}

/// [`bad_window`] for a whole address of 1..=16 bytes: loads it with two
/// overlapping 8-byte reads (or bytewise below 8) into one 16-byte value
/// padded with `a`, so the check stays in registers.
#[inline(always)]
fn bad_short(bytes: &[u8]) -> bool {
    let n = bytes.len();
    let word = |at: usize| -> Option<u128> {
        let w: &[u8; 8] = bytes.get(at..at.wrapping_add(8))?.try_into().ok()?;
        Some(u64::from_le_bytes(*w) as u128)
    };
    let mut v: u128 = if n >= 8 {
        match (word(0), word(n - 8)) {
            (Some(lo), Some(hi)) => lo | (hi << (8 * (n - 8))),
            _ => return true,
        }
    } else {
        let mut v = 0u128;
        for (k, &b) in bytes.iter().enumerate() {
            v |= (b as u128) << (8 * k);
        }
        v
    };
    const PAD: u128 = u128::from_le_bytes([b'a'; 16]);
    if n < 16 {
        v |= PAD << (8 * n);
    }
    let prev = v.to_le_bytes();
    let cur = ((v >> 8) | ((b'a' as u128) << 120)).to_le_bytes();
    let mut bad = false;
    for k in 0..16 {
        bad |= bad_pair(prev[k], cur[k]);
    }
    bad
}

/// Checks that `segment` is one non-empty address segment (no dots).
fn validate_segment(segment: &[u8]) -> Result<()> {
    if segment.is_empty() || segment.iter().any(|&b| !is_segment_char(b)) {
        return Err(DecodeError::BadAddress);
    }
    Ok(())
}

/// Segment-aware prefix match (RFC 15 "Routing", docs/design.md "Routing"): true when
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

    /// `self` + "." + `segment`, e.g. a child's address (docs/design.md "ILP addresses").
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

    /// RFC 15 grammar written the obvious way (split on dots), to check the
    /// windowed validator against on every length around its 8/16/17-byte
    /// boundaries.
    fn reference(b: &[u8]) -> bool {
        const SCHEMES: [&[u8]; 10] = [
            b"g", b"private", b"example", b"peer", b"self", b"test", b"test1", b"test2", b"test3",
            b"local",
        ];
        if b.is_empty() || b.len() > MAX_ADDRESS_LEN {
            return false;
        }
        let mut parts = b.split(|&c| c == b'.');
        let scheme = parts.next().unwrap_or(b"");
        let rest: Vec<&[u8]> = parts.collect();
        SCHEMES.contains(&scheme)
            && !rest.is_empty()
            && rest.iter().all(|s| {
                !s.is_empty()
                    && s.iter()
                        .all(|&c| c.is_ascii_alphanumeric() || b"_~-".contains(&c))
            })
    }

    #[test]
    fn windowed_check_matches_reference_at_every_length() {
        let probes = [
            b'.', b'a', b'Z', b'0', b'_', b'~', b'-', b'!', b'/', b' ', 0, 0x7f, 0x80, 0xff, b'`',
            b'{', b'@', b'[', b':',
        ];
        let mut checked = 0;
        for scheme in [&b"g"[..], b"test1", b"private"] {
            for len in scheme.len() + 2..=70 {
                let mut base = scheme.to_vec();
                base.push(b'.');
                while base.len() < len {
                    base.push(b"ab9.Zy_-~"[base.len() % 9]);
                }
                if base[len - 1] == b'.' {
                    base[len - 1] = b'q';
                }
                assert_eq!(validate(&base).is_ok(), reference(&base), "{base:?}");
                for pos in 0..len {
                    for &c in &probes {
                        let mut m = base.clone();
                        m[pos] = c;
                        assert_eq!(validate(&m).is_ok(), reference(&m), "{m:?}");
                        checked += 1;
                    }
                    // A doubled dot at every position.
                    if pos + 1 < len {
                        let mut m = base.clone();
                        m[pos] = b'.';
                        m[pos + 1] = b'.';
                        assert!(validate(&m).is_err(), "{m:?}");
                    }
                }
            }
        }
        assert!(checked > 10_000);
        // Pseudo-random strings over a dot-heavy alphabet.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"g..ab.Z9_~-!x";
        let mut valid = 0;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 40) as usize;
            let mut m = b"g.".to_vec();
            let mut y = x;
            for _ in 0..len {
                y = y.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                m.push(alphabet[(y >> 33) as usize % alphabet.len()]);
            }
            let ok = reference(&m);
            valid += ok as u32;
            assert_eq!(validate(&m).is_ok(), ok, "{m:?}");
        }
        assert!(valid > 1_000);
    }
}

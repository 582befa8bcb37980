//! Where IVs, token nonces and unfulfillable conditions come from.
//!
//! AES-GCM must never see the same IV twice under one key (RFC 29
//! "Encryption Envelope"), and in STREAM both ends encrypt with the same
//! key, so IVs are random, from the operating system. [`OsRandom`] reads
//! them in 4 KiB batches so a packet costs a copy, not a system call.
//! Tests pass their own [`RandomSource`] to get reproducible bytes.

use core::fmt;

/// The operating system could not give random bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomError;

impl fmt::Display for RandomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no random bytes from the operating system")
    }
}

impl std::error::Error for RandomError {}

/// A source of cryptographically secure random bytes.
pub trait RandomSource {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), RandomError>;
}

const BATCH: usize = 4096;

/// OS randomness (`getrandom`), read ahead in batches. Bytes are handed out
/// once each and never reused.
pub struct OsRandom {
    buf: Box<[u8; BATCH]>,
    pos: usize,
}

impl OsRandom {
    pub fn new() -> Self {
        OsRandom {
            buf: Box::new([0; BATCH]),
            pos: BATCH,
        }
    }
}

impl Default for OsRandom {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for OsRandom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OsRandom")
    }
}

impl RandomSource for OsRandom {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), RandomError> {
        if out.len() > BATCH / 4 {
            return getrandom::fill(out).map_err(|_| RandomError);
        }
        if BATCH - self.pos < out.len() {
            getrandom::fill(&mut self.buf[..]).map_err(|_| RandomError)?;
            self.pos = 0;
        }
        let end = self.pos + out.len();
        out.copy_from_slice(&self.buf[self.pos..end]);
        // Wipe what was handed out so it cannot be handed out again.
        self.buf[self.pos..end].fill(0);
        self.pos = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_ivs() {
        let mut r = OsRandom::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let mut iv = [0u8; 12];
            r.fill(&mut iv).unwrap();
            assert!(seen.insert(iv));
        }
        let mut big = vec![0u8; 5000];
        r.fill(&mut big).unwrap();
        assert!(big.iter().any(|&b| b != 0));
    }
}

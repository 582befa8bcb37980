//! Batched verification of ILP fulfillments: `SHA-256(fulfillment) == condition`.
//!
//! Every Fulfill crossing the connector must be checked (RFC 27 §Fulfill:
//! "the fulfillment ... MUST hash to the condition"), and at millions of
//! packets per second a one-message-at-a-time `Sha256::digest` is a main
//! cost. A fulfillment is always exactly 32 bytes, so its SHA-256 is a single
//! compression of one block whose second half (bytes 32..64: `0x80`, zeros,
//! the 64-bit big-endian bit length 256) never changes (FIPS 180-4 §5.1.1).
//! The kernels here exploit that: message words 8..15 are constants, and so
//! are parts of the schedule words computed from them.
//!
//! Kernels, chosen at run time by CPU feature (see docs/sha256.md):
//! - [`Impl::Portable`]: `sha2::compress256` on the pre-padded block (sha2
//!   picks its own backend, including SHA-NI, one message at a time);
//! - [`Impl::ShaNi`]: SHA-NI with several independent messages interleaved
//!   so the latency of `sha256rnds2` is hidden;
//! - [`Impl::Avx2`]: 8-lane multi-buffer (one message per 32-bit lane);
//! - [`Impl::Avx512`]: 16-lane multi-buffer with native rotates and
//!   three-input logic (`vprord`, `vpternlogd`).
//!
//! `unsafe` is confined to the private `simd` module.

use core::fmt;
use core::str::FromStr;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod simd;

/// Environment variable that forces an implementation (`portable`, `sha-ni`,
/// `avx2`, `avx512`, or `auto`). Read only by [`from_env`].
pub const ENV_VAR: &str = "ILPD_SHA256_IMPL";

/// SHA-256 round constants (FIPS 180-4 §4.2.2).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Initial hash value (FIPS 180-4 §5.3.3).
pub(crate) const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Message words 8..15 of a 32-byte message: the padding `0x80`, zeros, and
/// the bit length 256 (FIPS 180-4 §5.1.1). Index `i` holds word `8 + i`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const PAD_W: [u32; 8] = [0x8000_0000, 0, 0, 0, 0, 0, 0, 256];

/// The second half of the padded block, as bytes.
const PAD_BYTES: [u8; 32] = {
    let mut b = [0u8; 32];
    b[0] = 0x80;
    b[30] = 0x01; // 256 = 0x0100, big-endian u64 in bytes 56..64
    b
};

/// `W_t` for `8 <= t < 16` if constant, i.e. `Some(PAD_W[t - 8])`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(crate) const fn const_word(t: usize) -> Option<u32> {
    if t >= 8 && t < 16 {
        Some(PAD_W[t - 8])
    } else {
        None
    }
}

/// Σ0 (FIPS 180-4 §4.1.2, 4.4).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const fn big_sigma0(x: u32) -> u32 {
    x.rotate_right(2) ^ x.rotate_right(13) ^ x.rotate_right(22)
}

/// Σ1 (FIPS 180-4 §4.1.2, 4.5).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const fn big_sigma1(x: u32) -> u32 {
    x.rotate_right(6) ^ x.rotate_right(11) ^ x.rotate_right(25)
}

/// σ0 (FIPS 180-4 §4.1.2, 4.6).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const fn small_sigma0(x: u32) -> u32 {
    x.rotate_right(7) ^ x.rotate_right(18) ^ (x >> 3)
}

/// σ1 (FIPS 180-4 §4.1.2, 4.7).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const fn small_sigma1(x: u32) -> u32 {
    x.rotate_right(17) ^ x.rotate_right(19) ^ (x >> 10)
}

/// One implementation of the batch kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Impl {
    /// `sha2::compress256`, one message at a time; runs everywhere.
    Portable,
    /// SHA-NI (`sha256rnds2`) with independent messages interleaved.
    ShaNi,
    /// 8-lane AVX2 multi-buffer.
    Avx2,
    /// 16-lane AVX-512 (F + BW) multi-buffer.
    Avx512,
}

impl Impl {
    /// Every implementation, fastest-for-large-batches last.
    pub const ALL: [Impl; 4] = [Impl::Portable, Impl::ShaNi, Impl::Avx2, Impl::Avx512];

    /// The name used by [`parse_choice`], [`ENV_VAR`] and `--sha256-impl`.
    pub fn name(&self) -> &'static str {
        match self {
            Impl::Portable => "portable",
            Impl::ShaNi => "sha-ni",
            Impl::Avx2 => "avx2",
            Impl::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run it.
    pub fn is_supported(&self) -> bool {
        match self {
            Impl::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Impl::ShaNi => simd::ShaNi::detect().is_some(),
            #[cfg(target_arch = "x86_64")]
            Impl::Avx2 => simd::Avx2::detect().is_some(),
            #[cfg(target_arch = "x86_64")]
            Impl::Avx512 => simd::Avx512::detect().is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best implementation for large batches on this CPU.
    ///
    /// Order chosen by measurement (docs/benchmarks.md): AVX-512 beats
    /// SHA-NI at batch ≥ 16, SHA-NI beats AVX2, AVX2 beats portable.
    pub fn detect_best() -> Impl {
        [Impl::Avx512, Impl::ShaNi, Impl::Avx2]
            .into_iter()
            .find(Impl::is_supported)
            .unwrap_or(Impl::Portable)
    }
}

impl fmt::Display for Impl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Impl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match parse_choice(s)? {
            Some(i) => Ok(i),
            None => Err("\"auto\" is not a single implementation".to_string()),
        }
    }
}

/// Parses an implementation name; `"auto"` (or empty) means "best for this
/// CPU" and gives `None`. Case-insensitive; `_` may stand for `-`.
pub fn parse_choice(s: &str) -> Result<Option<Impl>, String> {
    let norm = s.trim().to_ascii_lowercase().replace('_', "-");
    match norm.as_str() {
        "" | "auto" => Ok(None),
        "portable" | "sha2" | "soft" => Ok(Some(Impl::Portable)),
        "sha-ni" | "shani" | "sha" => Ok(Some(Impl::ShaNi)),
        "avx2" => Ok(Some(Impl::Avx2)),
        "avx512" | "avx-512" => Ok(Some(Impl::Avx512)),
        _ => Err(format!(
            "unknown SHA-256 implementation {s:?}: expected auto, portable, sha-ni, avx2 or avx512"
        )),
    }
}

/// Reads [`ENV_VAR`]; unset means `Ok(None)` (auto). The binaries call this
/// once at start-up; the value is then passed to [`BatchVerifier::new`].
pub fn from_env() -> Result<Option<Impl>, String> {
    match std::env::var(ENV_VAR) {
        Ok(v) => parse_choice(&v).map_err(|e| format!("{ENV_VAR}: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{ENV_VAR} is not valid UTF-8")),
    }
}

/// The kernels a verifier may use, with proof (the tokens) that the CPU has
/// the features each needs.
#[derive(Clone, Copy)]
enum Backend {
    Portable,
    #[cfg(target_arch = "x86_64")]
    ShaNi(simd::ShaNi),
    #[cfg(target_arch = "x86_64")]
    Avx2(simd::Avx2),
    /// Full 16-lane chunks on AVX-512; the remainder on SHA-NI if present
    /// (`auto` only), else on AVX-512 with padding lanes.
    #[cfg(target_arch = "x86_64")]
    Avx512(simd::Avx512, Option<simd::ShaNi>),
}

/// Verifies batches of fulfillments against conditions. `Copy` and cheap:
/// build one at start-up and give each worker a copy.
#[derive(Clone, Copy)]
pub struct BatchVerifier {
    backend: Backend,
    name: &'static str,
}

impl fmt::Debug for BatchVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchVerifier")
            .field("impl", &self.name)
            .finish()
    }
}

impl BatchVerifier {
    /// `None`: the best combination for this CPU. `Some(x)`: only kernel `x`
    /// (for tests and benchmarks); an error if the CPU lacks its features.
    pub fn new(choice: Option<Impl>) -> Result<Self, String> {
        match choice {
            None => Ok(Self::auto()),
            Some(i) => Self::forced(i).ok_or_else(|| {
                format!(
                    "SHA-256 implementation {:?} is not supported by this CPU (best available: {})",
                    i.name(),
                    Impl::detect_best().name()
                )
            }),
        }
    }

    /// The best combination for this CPU: AVX-512 for full 16-message chunks
    /// and SHA-NI for the remainder where both exist.
    pub fn auto() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let sha = simd::ShaNi::detect();
            if let Some(a) = simd::Avx512::detect() {
                if sha.is_some() {
                    return Self {
                        backend: Backend::Avx512(a, sha),
                        name: "avx512+sha-ni",
                    };
                }
                return Self {
                    backend: Backend::Avx512(a, None),
                    name: "avx512",
                };
            }
            if let Some(s) = sha {
                return Self {
                    backend: Backend::ShaNi(s),
                    name: "sha-ni",
                };
            }
            if let Some(a) = simd::Avx2::detect() {
                return Self {
                    backend: Backend::Avx2(a),
                    name: "avx2",
                };
            }
        }
        Self {
            backend: Backend::Portable,
            name: "portable",
        }
    }

    fn forced(i: Impl) -> Option<Self> {
        let backend = match i {
            Impl::Portable => Backend::Portable,
            #[cfg(target_arch = "x86_64")]
            Impl::ShaNi => Backend::ShaNi(simd::ShaNi::detect()?),
            #[cfg(target_arch = "x86_64")]
            Impl::Avx2 => Backend::Avx2(simd::Avx2::detect()?),
            #[cfg(target_arch = "x86_64")]
            Impl::Avx512 => Backend::Avx512(simd::Avx512::detect()?, None),
            #[cfg(not(target_arch = "x86_64"))]
            _ => return None,
        };
        Some(Self {
            backend,
            name: i.name(),
        })
    }

    /// What this verifier runs, e.g. `"avx512+sha-ni"` or `"portable"`.
    pub fn impl_name(&self) -> &'static str {
        self.name
    }

    /// `out[i] = SHA-256(fulfillments[i]) == conditions[i]`.
    ///
    /// If the three lengths differ, only the common prefix is processed (no
    /// panic); the returned count says how many entries of `out` were written.
    pub fn verify(
        &self,
        fulfillments: &[[u8; 32]],
        conditions: &[[u8; 32]],
        out: &mut [bool],
    ) -> usize {
        let n = fulfillments.len().min(conditions.len()).min(out.len());
        let (f, c, out) = (&fulfillments[..n], &conditions[..n], &mut out[..n]);
        match self.backend {
            Backend::Portable => portable_verify(f, c, out),
            #[cfg(target_arch = "x86_64")]
            Backend::ShaNi(s) => simd::shani_verify(s, f, c, out),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(a) => simd::avx2_verify(a, f, c, out),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512(a, s) => simd::avx512_verify(a, s, f, c, out),
        }
        n
    }

    /// `out[i] = SHA-256(preimages[i])`; processes the common prefix if the
    /// lengths differ and returns its length.
    pub fn hash(&self, preimages: &[[u8; 32]], out: &mut [[u8; 32]]) -> usize {
        let n = preimages.len().min(out.len());
        let (p, out) = (&preimages[..n], &mut out[..n]);
        match self.backend {
            Backend::Portable => p.iter().zip(out).for_each(|(p, o)| *o = portable_hash(p)),
            #[cfg(target_arch = "x86_64")]
            Backend::ShaNi(s) => simd::shani_hash(s, p, out),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(a) => simd::avx2_hash(a, p, out),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512(a, s) => simd::avx512_hash(a, s, p, out),
        }
        n
    }

    /// One fulfillment; uses the fastest single-message kernel available.
    pub fn verify_one(&self, f: &[u8; 32], c: &[u8; 32]) -> bool {
        let mut out = [false];
        self.verify(core::slice::from_ref(f), core::slice::from_ref(c), &mut out);
        out[0]
    }
}

impl Default for BatchVerifier {
    fn default() -> Self {
        Self::auto()
    }
}

/// SHA-256 of a 32-byte message via `sha2::compress256` on the pre-padded
/// block.
fn portable_hash(m: &[u8; 32]) -> [u8; 32] {
    let mut block = sha2::digest::generic_array::GenericArray::from([0u8; 64]);
    block[..32].copy_from_slice(m);
    block[32..].copy_from_slice(&PAD_BYTES);
    let mut state = IV;
    sha2::compress256(&mut state, core::slice::from_ref(&block));
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

fn portable_verify(f: &[[u8; 32]], c: &[[u8; 32]], out: &mut [bool]) {
    for ((f, c), o) in f.iter().zip(c).zip(out) {
        *o = portable_hash(f) == *c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn pad_bytes_match_fips_padding() {
        // Derive the padding the long way: SHA-256 of 32 bytes equals one
        // compression of message || PAD_BYTES.
        let m = [0x5au8; 32];
        let want: [u8; 32] = Sha256::digest(m).into();
        assert_eq!(portable_hash(&m), want);
        for (i, w) in PAD_W.iter().enumerate() {
            let b = &PAD_BYTES[i * 4..i * 4 + 4];
            assert_eq!(u32::from_be_bytes([b[0], b[1], b[2], b[3]]), *w);
        }
    }

    #[test]
    fn parse_choice_names() {
        assert_eq!(parse_choice("auto"), Ok(None));
        assert_eq!(parse_choice(""), Ok(None));
        for i in Impl::ALL {
            assert_eq!(parse_choice(i.name()), Ok(Some(i)));
            assert_eq!(i.name().parse::<Impl>(), Ok(i));
        }
        assert_eq!(parse_choice("SHA_NI"), Ok(Some(Impl::ShaNi)));
        assert!(parse_choice("avx1024").is_err());
        assert!("auto".parse::<Impl>().is_err());
    }

    #[test]
    fn mismatched_lengths_process_prefix() {
        let v = BatchVerifier::auto();
        let f = [[1u8; 32]; 5];
        let c: Vec<[u8; 32]> = f.iter().map(|f| Sha256::digest(f).into()).collect();
        let mut out = [false; 3];
        assert_eq!(v.verify(&f, &c[..4], &mut out), 3);
        assert_eq!(out, [true; 3]);
        let mut h = [[0u8; 32]; 2];
        assert_eq!(v.hash(&f, &mut h), 2);
        assert_eq!(h[1], c[1]);
    }
}

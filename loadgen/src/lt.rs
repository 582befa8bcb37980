//! Loopback Transport: the pure rules shared by the sender and the receiver.
//!
//! The sender never stores fulfillments. It derives each one from the run's
//! secret and the packet's sequence number, and the receiver (the same
//! process) derives the same bytes from the sequence number it finds in the
//! Prepare's data. So nothing grows with the number of packets in flight.
//!
//! Prepare `data` layout (all big-endian, then zero padding up to
//! `--data-size`):
//!
//! | bytes  | field                                                   |
//! |--------|---------------------------------------------------------|
//! | 0..8   | sequence number                                         |
//! | 8..16  | minimum destination amount the receiver must see        |
//!
//! Fulfill `data` carries the amount the receiver saw (8 bytes), so a
//! chunked payment learns the delivered amount and the exchange rate.

/// Bytes of Prepare data the Loopback Transport needs (seq + min amount).
pub const DATA_HEADER_LEN: usize = 16;

/// Length of the Fulfill data: the delivered amount.
pub const FULFILL_DATA_LEN: usize = 8;

/// SplitMix64 finaliser: a fast, well-mixed 64-bit permutation.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The run's secret: four 64-bit keys.
///
/// The fulfillment is a keyed 256-bit mix of (secret, seq), not SHA-256:
/// the Loopback Transport only needs fulfillments that differ per packet and
/// cannot be guessed by the connector under test without the secret, and
/// this keeps SHA-256 to exactly one call per packet (the condition), which
/// is what a real receiver's cost model looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Secret(pub [u64; 4]);

impl Secret {
    /// Derives the four keys from one seed (so `--seed` makes runs repeatable).
    pub fn from_seed(seed: u64) -> Secret {
        let mut k = [0u64; 4];
        let mut s = seed ^ 0x5eed_1f00_d15c_a11e;
        for key in &mut k {
            s = mix64(s);
            *key = s;
        }
        Secret(k)
    }

    /// fulfillment(seq): 32 bytes derived from the secret and the sequence number.
    #[inline]
    pub fn fulfillment(&self, seq: u64) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, key) in self.0.iter().enumerate() {
            let w = mix64(seq ^ key).wrapping_add(*key);
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// A preimage that is certainly not the right one (for the "wrong
    /// fulfillment" outcome): the right one with its first byte flipped.
    pub fn wrong_fulfillment(&self, seq: u64) -> [u8; 32] {
        let mut f = self.fulfillment(seq);
        f[0] ^= 0xff;
        f
    }
}

/// The execution condition of a fulfillment: SHA-256 of it (for reports;
/// the hot path hashes in batches with the codec's `BatchVerifier`).
pub fn condition(fulfillment: &[u8; 32]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(fulfillment).into()
}

/// A seed nobody chose: from the OS's random source (so the conditions of
/// two runs differ unless `--seed` fixes them).
pub fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == b.len() as isize {
        return u64::from_ne_bytes(b);
    }
    // No getrandom: the clock, the pid and a counter, mixed.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    mix64(
        t ^ mix64(std::process::id() as u64)
            ^ u64::from_le_bytes(crate::link::nonce16()[..8].try_into().unwrap_or_default()),
    )
}

/// What the receiver does with a valid Prepare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Fulfill,
    /// Reject with this ILP error code (e.g. `*b"F99"`).
    Reject([u8; 3]),
    /// Fulfill with a preimage that does not hash to the condition.
    WrongFulfillment,
    /// Never answer: the Prepare expires upstream.
    NoAnswer,
}

impl Outcome {
    pub fn label(&self) -> String {
        match self {
            Outcome::Fulfill => "fulfill".into(),
            Outcome::Reject(c) => format!("reject:{}", String::from_utf8_lossy(c)),
            Outcome::WrongFulfillment => "wrong".into(),
            Outcome::NoAnswer => "noanswer".into(),
        }
    }
}

/// The receiver's outcome mix: weights, chosen per packet from (seed, seq).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutcomeMix {
    entries: Vec<(Outcome, u32)>,
    total: u32,
    seed: u64,
}

impl OutcomeMix {
    /// Every packet is fulfilled.
    pub fn all_fulfill(seed: u64) -> OutcomeMix {
        OutcomeMix {
            entries: vec![(Outcome::Fulfill, 1)],
            total: 1,
            seed,
        }
    }

    /// Parses `fulfill=90,reject:F99=5,wrong=3,noanswer=2` (weights, any
    /// positive integers). A bare name means weight 1.
    pub fn parse(s: &str, seed: u64) -> Result<OutcomeMix, String> {
        let mut entries = Vec::new();
        let mut total: u32 = 0;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.rsplit_once('=') {
                Some((n, w)) => (
                    n.trim(),
                    w.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("bad weight in outcome mix entry {part:?}"))?,
                ),
                None => (part, 1),
            };
            let outcome = match name {
                "fulfill" => Outcome::Fulfill,
                "wrong" | "wrong-fulfillment" => Outcome::WrongFulfillment,
                "noanswer" | "no-answer" | "expire" => Outcome::NoAnswer,
                "reject" => Outcome::Reject(*b"F99"),
                _ => match name.strip_prefix("reject:") {
                    Some(code) => Outcome::Reject(parse_code(code)?),
                    None => {
                        return Err(format!(
                        "unknown outcome {name:?} (expected fulfill, reject:CODE, wrong, noanswer)"
                    ))
                    }
                },
            };
            total = total
                .checked_add(weight)
                .ok_or_else(|| "outcome mix weights too large".to_string())?;
            if weight > 0 {
                entries.push((outcome, weight));
            }
        }
        if total == 0 {
            return Err("outcome mix has no positive weight".into());
        }
        Ok(OutcomeMix {
            entries,
            total,
            seed,
        })
    }

    /// True when every packet is fulfilled (the fast path skips the draw).
    pub fn is_all_fulfill(&self) -> bool {
        self.entries.len() == 1 && self.entries[0].0 == Outcome::Fulfill
    }

    /// The outcome for `seq`, deterministic in (seed, seq).
    #[inline]
    pub fn pick(&self, seq: u64) -> Outcome {
        if self.entries.len() == 1 {
            return self.entries[0].0;
        }
        let r = (mix64(seq ^ self.seed.rotate_left(17)) % self.total as u64) as u32;
        let mut acc = 0;
        for (o, w) in &self.entries {
            acc += w;
            if r < acc {
                return *o;
            }
        }
        Outcome::Fulfill
    }

    /// The configured (outcome, weight) pairs.
    pub fn entries(&self) -> &[(Outcome, u32)] {
        &self.entries
    }

    pub fn describe(&self) -> String {
        self.entries
            .iter()
            .map(|(o, w)| format!("{}={}", o.label(), w))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Parses a 3-character ILP error code such as `F99` (RFC 27 error codes).
pub fn parse_code(code: &str) -> Result<[u8; 3], String> {
    let b = code.as_bytes();
    if b.len() != 3 || !matches!(b[0], b'F' | b'T' | b'R') || !b[1..].iter().all(u8::is_ascii_digit)
    {
        return Err(format!(
            "bad ILP error code {code:?} (expected F, T or R and two digits)"
        ));
    }
    Ok([b[0], b[1], b[2]])
}

/// Writes the Loopback Transport data header into `data` (len >= 16).
#[inline]
pub fn write_data_header(data: &mut [u8], seq: u64, min_dest: u64) {
    data[0..8].copy_from_slice(&seq.to_be_bytes());
    data[8..16].copy_from_slice(&min_dest.to_be_bytes());
}

/// Reads (seq, min destination amount) from a Prepare's data.
#[inline]
pub fn read_data_header(data: &[u8]) -> Option<(u64, u64)> {
    if data.len() < DATA_HEADER_LEN {
        return None;
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&data[0..8]);
    let mut m = [0u8; 8];
    m.copy_from_slice(&data[8..16]);
    Some((u64::from_be_bytes(s), u64::from_be_bytes(m)))
}

/// Sequence numbers are unique per run: the top 16 bits name the sending
/// connection, the low 48 bits count its packets.
#[inline]
pub fn make_seq(stream: u16, counter: u64) -> u64 {
    ((stream as u64) << 48) | (counter & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fulfillments_differ_per_seq_and_secret() {
        let a = Secret::from_seed(1);
        let b = Secret::from_seed(2);
        assert_ne!(a, b);
        assert_eq!(a.fulfillment(7), a.fulfillment(7));
        assert_ne!(a.fulfillment(7), a.fulfillment(8));
        assert_ne!(a.fulfillment(7), b.fulfillment(7));
        assert_ne!(a.fulfillment(7), a.wrong_fulfillment(7));
    }

    #[test]
    fn random_seeds_differ_and_conditions_are_sha256() {
        let seeds: std::collections::HashSet<u64> = (0..64).map(|_| random_seed()).collect();
        assert_eq!(seeds.len(), 64);
        // SHA-256 of 32 zero bytes.
        assert_eq!(
            condition(&[0; 32])[..4],
            [0x66, 0x68, 0x7a, 0xad],
            "{:x?}",
            condition(&[0; 32])
        );
    }

    #[test]
    fn mix_parse_and_pick_follow_weights() {
        let mix = OutcomeMix::parse("fulfill=90, reject:T04=5,wrong=3,noanswer=2", 42).unwrap();
        assert!(!mix.is_all_fulfill());
        let mut counts = std::collections::HashMap::new();
        for seq in 0..100_000u64 {
            *counts.entry(mix.pick(seq)).or_insert(0u32) += 1;
        }
        let f = counts[&Outcome::Fulfill];
        let r = counts[&Outcome::Reject(*b"T04")];
        assert!((88_000..92_000).contains(&f), "fulfill {f}");
        assert!((4_000..6_000).contains(&r), "reject {r}");
        assert!(counts[&Outcome::WrongFulfillment] > 2_000);
        assert!(counts[&Outcome::NoAnswer] > 1_000);
        // Deterministic in (seed, seq).
        let again = OutcomeMix::parse("fulfill=90,reject:T04=5,wrong=3,noanswer=2", 42).unwrap();
        assert!((0..1000).all(|s| mix.pick(s) == again.pick(s)));
    }

    #[test]
    fn mix_rejects_bad_input() {
        assert!(OutcomeMix::parse("", 0).is_err());
        assert!(OutcomeMix::parse("fulfill=0", 0).is_err());
        assert!(OutcomeMix::parse("reject:X99", 0).is_err());
        assert!(OutcomeMix::parse("reject:F9", 0).is_err());
        assert!(OutcomeMix::parse("bogus=1", 0).is_err());
        assert!(OutcomeMix::parse("fulfill=x", 0).is_err());
        assert!(OutcomeMix::parse("fulfill", 0).unwrap().is_all_fulfill());
    }

    #[test]
    fn data_header_round_trip() {
        let mut d = [0u8; 20];
        write_data_header(&mut d, make_seq(3, 99), 1234);
        assert_eq!(read_data_header(&d), Some(((3u64 << 48) | 99, 1234)));
        assert_eq!(read_data_header(&d[..15]), None);
    }
}

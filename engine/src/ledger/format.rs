//! The journal's bytes (docs/ledger.md "Record format"): checksummed frames
//! holding fixed-size entries. Sans-IO: encoding into a `Vec<u8>` and
//! decoding from a `&[u8]`; nothing here touches a file.
//!
//! A frame is
//!
//! ```text
//! magic  "ILJ1"                     4 bytes
//! len    u32 LE, bytes of body      4 bytes
//! crc    crc32c(len bytes ‖ body)   4 bytes
//! body   kind u8 | seq u64 | unix_ms u64 | kind-specific payload
//! ```
//!
//! All integers are little-endian. A journal file is a sequence of frames;
//! a snapshot file is one frame of kind [`Kind::Snapshot`].

use std::fmt;

pub const MAGIC: [u8; 4] = *b"ILJ1";
/// magic + len + crc.
pub const HEADER: usize = 12;
/// kind + seq + unix_ms.
pub const BODY_HEADER: usize = 17;
/// Largest body accepted when reading (a longer `len` is damage, not data).
pub const MAX_BODY: usize = 1 << 30;

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One worker's entries of one loop turn.
    Batch = 1,
    /// The first frame of every segment: the worker's state so far.
    Checkpoint = 2,
    /// The whole snapshot file.
    Snapshot = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Batch),
            2 => Some(Kind::Checkpoint),
            3 => Some(Kind::Snapshot),
            _ => None,
        }
    }
}

/// Entry tags inside a [`Kind::Batch`] body.
pub const TAG_FORWARD: u8 = 1;
pub const TAG_FULFILLED: u8 = 2;
pub const TAG_UNWOUND: u8 = 3;
pub const TAG_RELEASED: u8 = 4;
/// Bytes of a Forward entry without its tag.
pub const FORWARD_LEN: usize = 4 + 4 + 4 + 8 + 8 + 8 + 32;

/// A Prepare we forwarded with money on it: the liability it creates
/// toward the next hop and the claim on the upstream peer if fulfilled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The worker's pending-table id (unique among its open packets).
    pub id: u32,
    /// Upstream account index (in the segment's account table).
    pub from: u32,
    /// Next hop account index.
    pub to: u32,
    pub in_amount: u64,
    pub out_amount: u64,
    /// Our outgoing expiry, unix ms.
    pub expires_ms: u64,
    pub condition: [u8; 32],
}

impl Forward {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.from.to_le_bytes());
        out.extend_from_slice(&self.to.to_le_bytes());
        out.extend_from_slice(&self.in_amount.to_le_bytes());
        out.extend_from_slice(&self.out_amount.to_le_bytes());
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        out.extend_from_slice(&self.condition);
    }

    fn get(r: &mut Reader<'_>) -> Result<Forward, FormatError> {
        Ok(Forward {
            id: r.u32()?,
            from: r.u32()?,
            to: r.u32()?,
            in_amount: r.u64()?,
            out_amount: r.u64()?,
            expires_ms: r.u64()?,
            condition: r.array()?,
        })
    }
}

/// One entry of a batch frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Forward(Forward),
    /// The packet with this id was fulfilled: the upstream account owes its
    /// `in_amount` more, we owe the next hop its `out_amount` more.
    Fulfilled(u32),
    /// The packet with this id ended unpaid (rejected, expired, failed).
    Unwound(u32),
    /// Every Fulfill of frames up to this seq was handed to the kernel's
    /// socket (the upstream peer should have it).
    Released(u64),
}

/// Appends entries to a batch body under construction.
pub fn put_forward(out: &mut Vec<u8>, f: &Forward) {
    out.push(TAG_FORWARD);
    f.put(out);
}

pub fn put_fulfilled(out: &mut Vec<u8>, id: u32) {
    out.push(TAG_FULFILLED);
    out.extend_from_slice(&id.to_le_bytes());
}

pub fn put_unwound(out: &mut Vec<u8>, id: u32) {
    out.push(TAG_UNWOUND);
    out.extend_from_slice(&id.to_le_bytes());
}

pub fn put_released(out: &mut Vec<u8>, seq: u64) {
    out.push(TAG_RELEASED);
    out.extend_from_slice(&seq.to_le_bytes());
}

/// Starts a frame in `out` (cleared): header placeholder and body header.
/// Append the payload, then call [`finish_frame`].
pub fn begin_frame(out: &mut Vec<u8>, kind: Kind, seq: u64, unix_ms: u64) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[0; 8]);
    out.push(kind as u8);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&unix_ms.to_le_bytes());
}

/// Fills in the length and checksum of the frame that `out` holds.
pub fn finish_frame(out: &mut [u8]) {
    let len = (out.len() - HEADER) as u32;
    out[4..8].copy_from_slice(&len.to_le_bytes());
    let crc = checksum(&out[4..8], &out[HEADER..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(len: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len), body)
}

/// A checked frame borrowed from a buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub kind: Kind,
    pub seq: u64,
    pub unix_ms: u64,
    /// The kind-specific payload (after the body header).
    pub payload: &'a [u8],
}

/// The result of reading one frame at the start of a buffer.
#[derive(Debug)]
pub enum Read<'a> {
    /// A whole, checksummed frame and the bytes it took.
    Frame(Frame<'a>, usize),
    /// The buffer ends inside the frame (or is empty: `End`).
    Incomplete,
    End,
    /// Not a frame: wrong magic, a bad length, kind or checksum.
    Bad(&'static str),
}

/// Reads the frame at the start of `buf`.
pub fn read_frame(buf: &[u8]) -> Read<'_> {
    if buf.is_empty() {
        return Read::End;
    }
    if buf.len() < HEADER {
        return if MAGIC.starts_with(&buf[..buf.len().min(4)]) {
            Read::Incomplete
        } else {
            Read::Bad("bad magic")
        };
    }
    if buf[..4] != MAGIC {
        return Read::Bad("bad magic");
    }
    let len = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default()) as usize;
    if !(BODY_HEADER..=MAX_BODY).contains(&len) {
        return Read::Bad("bad length");
    }
    let Some(body) = buf.get(HEADER..HEADER + len) else {
        return Read::Incomplete;
    };
    let crc = u32::from_le_bytes(buf[8..12].try_into().unwrap_or_default());
    if checksum(&buf[4..8], body) != crc {
        return Read::Bad("checksum mismatch");
    }
    let Some(kind) = Kind::from_u8(body[0]) else {
        return Read::Bad("unknown frame kind");
    };
    let seq = u64::from_le_bytes(body[1..9].try_into().unwrap_or_default());
    let unix_ms = u64::from_le_bytes(body[9..17].try_into().unwrap_or_default());
    Read::Frame(
        Frame {
            kind,
            seq,
            unix_ms,
            payload: &body[BODY_HEADER..],
        },
        HEADER + len,
    )
}

/// The offset of the first whole, checksummed frame at or after `from`,
/// if any (used to tell a torn tail from damage in the middle).
pub fn next_valid_frame(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + HEADER <= buf.len() {
        let rest = &buf[i..];
        let p = rest.windows(4).position(|w| w == MAGIC)?;
        i += p;
        if let Read::Frame(..) = read_frame(&buf[i..]) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Iterates over the entries of a batch payload.
pub fn entries(payload: &[u8]) -> Entries<'_> {
    Entries {
        r: Reader { buf: payload },
    }
}

pub struct Entries<'a> {
    r: Reader<'a>,
}

impl Iterator for Entries<'_> {
    type Item = Result<Entry, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.r.buf.is_empty() {
            return None;
        }
        let e = (|| {
            Ok(match self.r.u8()? {
                TAG_FORWARD => Entry::Forward(Forward::get(&mut self.r)?),
                TAG_FULFILLED => Entry::Fulfilled(self.r.u32()?),
                TAG_UNWOUND => Entry::Unwound(self.r.u32()?),
                TAG_RELEASED => Entry::Released(self.r.u64()?),
                _ => return Err(FormatError("unknown entry tag")),
            })
        })();
        if e.is_err() {
            self.r.buf = &[];
        }
        Some(e)
    }
}

/// A frame that checksummed but does not parse: a bug or deliberate damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatError(pub &'static str);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A worker's whole state at the start of a segment: every balance effect
/// of its earlier segments, summed, and the packets still open. Recovery
/// can start here and ignore what came before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub worker: u32,
    pub segment: u64,
    /// Highest frame seq whose Fulfills were handed to the kernel.
    pub released: u64,
    /// The account table: index → (name, net balance change so far).
    pub accounts: Vec<(String, i128)>,
    /// Forwards without an outcome yet.
    pub open: Vec<Forward>,
    /// Fulfilled packets (with the seq of the frame that settled them)
    /// not yet covered by a `Released` mark: their Fulfill may not have
    /// reached the upstream peer.
    pub unreleased: Vec<(u64, Forward)>,
}

impl Checkpoint {
    pub fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.worker.to_le_bytes());
        out.extend_from_slice(&self.segment.to_le_bytes());
        out.extend_from_slice(&self.released.to_le_bytes());
        out.extend_from_slice(&(self.accounts.len() as u32).to_le_bytes());
        for (name, delta) in &self.accounts {
            put_name(out, name);
            out.extend_from_slice(&delta.to_le_bytes());
        }
        out.extend_from_slice(&(self.open.len() as u32).to_le_bytes());
        for f in &self.open {
            f.put(out);
        }
        out.extend_from_slice(&(self.unreleased.len() as u32).to_le_bytes());
        for (seq, f) in &self.unreleased {
            out.extend_from_slice(&seq.to_le_bytes());
            f.put(out);
        }
    }

    pub fn parse(payload: &[u8]) -> Result<Checkpoint, FormatError> {
        let mut r = Reader { buf: payload };
        let worker = r.u32()?;
        let segment = r.u64()?;
        let released = r.u64()?;
        let n = r.count(2 + 16)?;
        let mut accounts = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.name()?;
            accounts.push((name, i128::from_le_bytes(r.array()?)));
        }
        let n = r.count(FORWARD_LEN)?;
        let mut open = Vec::with_capacity(n);
        for _ in 0..n {
            open.push(Forward::get(&mut r)?);
        }
        let n = r.count(8 + FORWARD_LEN)?;
        let mut unreleased = Vec::with_capacity(n);
        for _ in 0..n {
            let seq = r.u64()?;
            unreleased.push((seq, Forward::get(&mut r)?));
        }
        r.end()?;
        Ok(Checkpoint {
            worker,
            segment,
            released,
            accounts,
            open,
            unreleased,
        })
    }
}

/// The snapshot file: every account's balance at the start of a generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub generation: u64,
    /// (account id, balance: positive = the peer owes us).
    pub balances: Vec<(String, i64)>,
}

impl Snapshot {
    pub fn encode(&self, unix_ms: u64) -> Vec<u8> {
        let mut out = Vec::new();
        begin_frame(&mut out, Kind::Snapshot, self.generation, unix_ms);
        out.extend_from_slice(&(self.balances.len() as u32).to_le_bytes());
        for (name, b) in &self.balances {
            put_name(&mut out, name);
            out.extend_from_slice(&b.to_le_bytes());
        }
        finish_frame(&mut out);
        out
    }

    pub fn parse(frame: &Frame<'_>) -> Result<Snapshot, FormatError> {
        if frame.kind != Kind::Snapshot {
            return Err(FormatError("not a snapshot frame"));
        }
        let mut r = Reader { buf: frame.payload };
        let n = r.count(2 + 8)?;
        let mut balances = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.name()?;
            balances.push((name, i64::from_le_bytes(r.array()?)));
        }
        r.end()?;
        Ok(Snapshot {
            generation: frame.seq,
            balances,
        })
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    let b = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

/// A bounds-checked little-endian reader; never panics.
struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], FormatError> {
        if self.buf.len() < n {
            return Err(FormatError("truncated entry"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items of at least `min_len` bytes each, checked against
    /// what is left (so a damaged count cannot ask for a huge allocation).
    fn count(&mut self, min_len: usize) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_len) > self.buf.len() {
            return Err(FormatError("count larger than the frame"));
        }
        Ok(n)
    }

    fn name(&mut self) -> Result<String, FormatError> {
        let n = u16::from_le_bytes(self.array()?) as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| FormatError("account id is not UTF-8"))
    }

    fn end(&self) -> Result<(), FormatError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FormatError("trailing bytes in frame"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(id: u32) -> Forward {
        Forward {
            id,
            from: 1,
            to: 2,
            in_amount: 100,
            out_amount: 99,
            expires_ms: 1_700_000_000_000,
            condition: [id as u8; 32],
        }
    }

    #[test]
    fn batch_round_trip() {
        let mut out = Vec::new();
        begin_frame(&mut out, Kind::Batch, 7, 123);
        put_forward(&mut out, &fwd(5));
        put_fulfilled(&mut out, 5);
        put_unwound(&mut out, 6);
        put_released(&mut out, 6);
        finish_frame(&mut out);
        let Read::Frame(f, n) = read_frame(&out) else {
            panic!("not a frame")
        };
        assert_eq!(
            (f.kind, f.seq, f.unix_ms, n),
            (Kind::Batch, 7, 123, out.len())
        );
        let got: Vec<Entry> = entries(f.payload).map(|e| e.unwrap()).collect();
        assert_eq!(
            got,
            vec![
                Entry::Forward(fwd(5)),
                Entry::Fulfilled(5),
                Entry::Unwound(6),
                Entry::Released(6)
            ]
        );
        assert_eq!(
            out.len(),
            HEADER + BODY_HEADER + 1 + FORWARD_LEN + 5 + 5 + 9
        );
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_flip_is_caught() {
        let mut out = Vec::new();
        begin_frame(&mut out, Kind::Batch, 1, 2);
        put_forward(&mut out, &fwd(1));
        finish_frame(&mut out);
        for cut in 1..out.len() {
            assert!(
                matches!(read_frame(&out[..cut]), Read::Incomplete),
                "cut at {cut}"
            );
        }
        for i in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    !matches!(read_frame(&bad), Read::Frame(..)),
                    "flip at byte {i} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn checkpoint_and_snapshot_round_trip() {
        let c = Checkpoint {
            worker: 3,
            segment: 9,
            released: 41,
            accounts: vec![("alice".into(), -5), ("bob".into(), i128::MAX)],
            open: vec![fwd(1), fwd(2)],
            unreleased: vec![(40, fwd(3))],
        };
        let mut p = Vec::new();
        c.put(&mut p);
        assert_eq!(Checkpoint::parse(&p).unwrap(), c);
        assert!(Checkpoint::parse(&p[..p.len() - 1]).is_err());
        let s = Snapshot {
            generation: 4,
            balances: vec![("a".into(), i64::MIN), ("b".into(), 7)],
        };
        let bytes = s.encode(99);
        let Read::Frame(f, _) = read_frame(&bytes) else {
            panic!()
        };
        assert_eq!(Snapshot::parse(&f).unwrap(), s);
    }

    #[test]
    fn next_valid_frame_skips_damage() {
        let mut a = Vec::new();
        begin_frame(&mut a, Kind::Batch, 1, 0);
        put_unwound(&mut a, 1);
        finish_frame(&mut a);
        let mut buf = a.clone();
        buf.extend_from_slice(&a);
        buf[14] ^= 0xff;
        assert!(matches!(read_frame(&buf), Read::Bad(_)));
        assert_eq!(next_valid_frame(&buf, 1), Some(a.len()));
        assert_eq!(next_valid_frame(&buf[..buf.len() - 1], 1), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678_u64;
        for len in 0..400 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = read_frame(&buf);
            let _ = entries(&buf).count();
            let _ = Checkpoint::parse(&buf);
        }
    }
}

//! Recovery's logic, sans-IO: given the snapshot's bytes and every journal
//! segment's bytes, compute each account's balance, the packets in doubt,
//! and the torn tails to cut. `datadir.rs` reads the files and carries out
//! the result; `ilpd ledger verify` prints it.
//!
//! Per worker, replay starts at the newest segment whose first frame is a
//! valid checkpoint and applies every batch frame after it in order. A bad
//! frame with no valid frame anywhere after it is a torn tail (a write the
//! crash cut short): it is cut. A bad frame followed by valid ones is
//! damage in the middle: recovery stops and names the file and offset.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use super::format::{self, Checkpoint, Entry, Forward, Kind, Read, Snapshot};
use super::writer::parse_segment_name;

/// A packet whose fate recovery cannot know (docs/ledger.md "Recovery report").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InDoubt {
    pub kind: DoubtKind,
    /// The record as journaled.
    pub forward: Forward,
    /// Account ids of `forward.from` and `forward.to`.
    pub from: String,
    pub to: String,
    /// Unix ms of the frame that holds the record (or of the checkpoint
    /// that carried it).
    pub at_ms: u64,
    pub file: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoubtKind {
    /// Forwarded to the next hop, no outcome recorded: neither balance was
    /// charged. The next hop may have fulfilled it (then we owe it
    /// `out_amount` that the ledger does not show).
    OutcomeUnknown,
    /// Fulfilled and settled on both balances, but the Fulfill may not have
    /// reached the upstream peer (which may then dispute `in_amount`).
    DeliveryUnknown,
}

impl DoubtKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DoubtKind::OutcomeUnknown => "outcome_unknown",
            DoubtKind::DeliveryUnknown => "delivery_unknown",
        }
    }
}

/// A torn tail: `file` is cut at `offset`, dropping `len` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Torn {
    pub file: String,
    pub offset: u64,
    pub len: u64,
}

/// Damage recovery will not guess about: start-up stops (exit 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corrupt {
    pub file: String,
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at offset {}: {}",
            self.file, self.offset, self.reason
        )
    }
}

/// The ledger as the files describe it.
#[derive(Clone, Debug, Default)]
pub struct Replayed {
    /// The snapshot's generation (0 without a snapshot).
    pub generation: u64,
    /// Balance per account id: positive = the peer owes us.
    pub balances: BTreeMap<String, i128>,
    pub in_doubt: Vec<InDoubt>,
    pub torn: Vec<Torn>,
    /// Segments of older generations, already in the snapshot.
    pub stale: Vec<String>,
    pub frames: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// Replays `snapshot` (the snapshot file's bytes, if there is one) and the
/// journal `segments` (file name, bytes).
pub fn replay(snapshot: Option<&[u8]>, segments: &[(String, &[u8])]) -> Result<Replayed, Corrupt> {
    let mut out = Replayed::default();
    if let Some(bytes) = snapshot {
        let bad = |reason: String| Corrupt {
            file: "snapshot".into(),
            offset: 0,
            reason,
        };
        let s = match format::read_frame(bytes) {
            Read::Frame(f, n) if n == bytes.len() => {
                Snapshot::parse(&f).map_err(|e| bad(e.to_string()))?
            }
            Read::Frame(..) => return Err(bad("trailing bytes after the snapshot".into())),
            Read::Bad(r) => return Err(bad(r.into())),
            Read::Incomplete | Read::End => return Err(bad("truncated snapshot".into())),
        };
        out.generation = s.generation;
        for (name, b) in s.balances {
            *out.balances.entry(name).or_default() += b as i128;
        }
    }
    // Per worker: its segments of the snapshot's generation, in order.
    let mut workers: BTreeMap<u32, Vec<Segment<'_>>> = BTreeMap::new();
    for (name, bytes) in segments {
        out.bytes += bytes.len() as u64;
        let Some((g, w, s)) = parse_segment_name(name) else {
            continue;
        };
        if g < out.generation {
            out.stale.push(name.clone());
        } else if g > out.generation {
            return Err(Corrupt {
                file: name.clone(),
                offset: 0,
                reason: format!(
                    "journal of generation {g} is newer than the snapshot (generation {})",
                    out.generation
                ),
            });
        } else {
            workers.entry(w).or_default().push((s, name, bytes));
        }
    }
    for segs in workers.values_mut() {
        segs.sort_by_key(|s| s.0);
        replay_worker(segs, &mut out)?;
    }
    Ok(out)
}

/// Packet ids are a worker's pending-table slots and generations, not
/// chosen by peers: a multiplicative hash is enough, and replay does one
/// insert and one remove per packet (SipHash was most of replay's time).
#[derive(Clone, Copy, Default)]
struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | *b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// One journal segment: (segment number, file name, bytes).
type Segment<'a> = (u64, &'a str, &'a [u8]);

fn first_checkpoint(bytes: &[u8]) -> Option<(format::Frame<'_>, Checkpoint, usize)> {
    match format::read_frame(bytes) {
        Read::Frame(f, n) if f.kind == Kind::Checkpoint => {
            Checkpoint::parse(f.payload).ok().map(|c| (f, c, n))
        }
        _ => None,
    }
}

/// A segment after the replayed one must hold nothing valid: it is a torn
/// start of a segment (the crash came while it was being begun).
fn torn_whole(name: &str, bytes: &[u8], out: &mut Replayed) -> Result<(), Corrupt> {
    if let Some(at) = format::next_valid_frame(bytes, 0) {
        return Err(Corrupt {
            file: name.into(),
            offset: at as u64,
            reason: "valid frames in a segment whose checkpoint is damaged".into(),
        });
    }
    if !bytes.is_empty() {
        out.torn.push(Torn {
            file: name.into(),
            offset: 0,
            len: bytes.len() as u64,
        });
    }
    Ok(())
}

fn replay_worker(segs: &[Segment<'_>], out: &mut Replayed) -> Result<(), Corrupt> {
    let Some(start) = segs
        .iter()
        .rposition(|(_, _, b)| first_checkpoint(b).is_some())
    else {
        for (_, name, bytes) in segs {
            torn_whole(name, bytes, out)?;
        }
        return Ok(());
    };
    for (_, name, bytes) in &segs[start + 1..] {
        torn_whole(name, bytes, out)?;
    }
    let (_, name, bytes) = segs[start];
    let (cp_frame, cp, mut offset) = first_checkpoint(bytes).unwrap_or_else(|| unreachable!());
    let corrupt = |offset: usize, reason: String| Corrupt {
        file: name.into(),
        offset: offset as u64,
        reason,
    };
    let names: Vec<String> = cp.accounts.iter().map(|(n, _)| n.clone()).collect();
    let mut deltas: Vec<i128> = cp.accounts.iter().map(|(_, d)| *d).collect();
    let mut open: HashMap<u32, (Forward, u64), IdHash> = cp
        .open
        .iter()
        .map(|f| (f.id, (*f, cp_frame.unix_ms)))
        .collect();
    let mut unreleased: VecDeque<(u64, Forward, u64)> = cp
        .unreleased
        .iter()
        .map(|(s, f)| (*s, *f, cp_frame.unix_ms))
        .collect();
    let check = |f: &Forward| (f.from as usize) < names.len() && (f.to as usize) < names.len();
    if let Some(f) = cp
        .open
        .iter()
        .chain(cp.unreleased.iter().map(|u| &u.1))
        .find(|f| !check(f))
    {
        return Err(corrupt(
            0,
            format!(
                "checkpoint names account index {} or {} out of range",
                f.from, f.to
            ),
        ));
    }
    out.frames += 1;
    let mut expected = cp_frame.seq + 1;
    loop {
        match format::read_frame(&bytes[offset..]) {
            Read::End => break,
            Read::Frame(f, n) => {
                if f.kind != Kind::Batch {
                    return Err(corrupt(offset, format!("unexpected {:?} frame", f.kind)));
                }
                if f.seq != expected {
                    return Err(corrupt(
                        offset,
                        format!("frame seq {} where {expected} was expected", f.seq),
                    ));
                }
                for e in format::entries(f.payload) {
                    let e = e.map_err(|e| corrupt(offset, e.to_string()))?;
                    out.entries += 1;
                    match e {
                        Entry::Forward(fw) => {
                            if !check(&fw) {
                                return Err(corrupt(
                                    offset,
                                    format!("account index {} or {} out of range", fw.from, fw.to),
                                ));
                            }
                            if open.insert(fw.id, (fw, f.unix_ms)).is_some() {
                                return Err(corrupt(
                                    offset,
                                    format!("packet id {} forwarded twice", fw.id),
                                ));
                            }
                        }
                        Entry::Fulfilled(id) => {
                            let Some((fw, _)) = open.remove(&id) else {
                                return Err(corrupt(
                                    offset,
                                    format!("fulfilled packet id {id} was never forwarded"),
                                ));
                            };
                            deltas[fw.from as usize] += fw.in_amount as i128;
                            deltas[fw.to as usize] -= fw.out_amount as i128;
                            unreleased.push_back((f.seq, fw, f.unix_ms));
                        }
                        Entry::Unwound(id) => {
                            if open.remove(&id).is_none() {
                                return Err(corrupt(
                                    offset,
                                    format!("unwound packet id {id} was never forwarded"),
                                ));
                            }
                        }
                        Entry::Released(s) => {
                            while unreleased.front().is_some_and(|u| u.0 <= s) {
                                unreleased.pop_front();
                            }
                        }
                    }
                }
                out.frames += 1;
                expected += 1;
                offset += n;
            }
            Read::Incomplete | Read::Bad(_) => {
                let why = match format::read_frame(&bytes[offset..]) {
                    Read::Bad(r) => r,
                    _ => "truncated frame",
                };
                if let Some(at) = format::next_valid_frame(bytes, offset + 1) {
                    return Err(corrupt(
                        offset,
                        format!("{why}, with valid frames after it (at offset {at})"),
                    ));
                }
                out.torn.push(Torn {
                    file: name.into(),
                    offset: offset as u64,
                    len: (bytes.len() - offset) as u64,
                });
                break;
            }
        }
    }
    for (n, d) in names.iter().zip(deltas) {
        *out.balances.entry(n.clone()).or_default() += d;
    }
    let doubt = |kind, fw: Forward, at_ms| InDoubt {
        kind,
        forward: fw,
        from: names[fw.from as usize].clone(),
        to: names[fw.to as usize].clone(),
        at_ms,
        file: name.into(),
    };
    let mut open: Vec<(Forward, u64)> = open.into_values().collect();
    open.sort_by_key(|(f, at)| (*at, f.id));
    for (fw, at) in open {
        out.in_doubt.push(doubt(DoubtKind::OutcomeUnknown, fw, at));
    }
    for (_, fw, at) in unreleased {
        out.in_doubt.push(doubt(DoubtKind::DeliveryUnknown, fw, at));
    }
    Ok(())
}

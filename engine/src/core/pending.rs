//! The per-worker table of forwarded, unanswered Prepares, and the hashed
//! timer wheel that expires them.
//!
//! Entries live in a slab indexed by [`OutId`]: the low bits are the slot,
//! the high bits a generation bumped on every free, so a stale id (a reply
//! after expiry, a duplicate) never matches the slot's next occupant. The
//! table is bounded by `node.max_in_flight` (past it the core answers T03).
//!
//! The wheel has one bucket per millisecond, [`WHEEL_SLOTS`] of them; a
//! bucket holds the slot numbers whose outgoing expiry falls on that tick
//! (modulo the wheel). Each entry records where its timer sits, so removing
//! a packet that got its reply is O(1) (swap-remove plus fixing the moved
//! entry's index): the wheel never holds dead timers.

use super::{AccountId, OutId, ReplyTo};

/// Buckets in the wheel (one per ms): 8.192 s. Longer holds go round more
/// than once; their bucket skips them until their deadline.
pub const WHEEL_SLOTS: usize = 8192;
const WHEEL_MASK: u64 = WHEEL_SLOTS as u64 - 1;

/// Most entries per table; larger configs are capped (generation bits
/// must stay ≥ 8).
pub const MAX_SLOTS: usize = 1 << 24;

const FREE: u32 = u32::MAX;

/// One forwarded Prepare. 96 bytes (checked in tests): one and a half cache
/// lines; the 32-byte condition is the largest part and must be kept to
/// verify the Fulfill.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The Prepare's execution condition (RFC 27), checked in `flush`.
    pub condition: [u8; 32],
    /// Amount received from the upstream peer (reserved on its account).
    pub in_amount: u64,
    /// Amount sent to the next hop (reserved on its account).
    pub out_amount: u64,
    /// Our outgoing expiry, unix ms; the timer fires then.
    pub out_expiry: u64,
    /// When the Prepare arrived (mono ns), for the latency histogram.
    pub arrival_ns: u64,
    /// Where the reply goes (`ReplyTo` split up to keep the entry packed).
    pub conn: u64,
    pub request_id: u32,
    pub from: u32,
    /// Next hop account; `FREE` when the slot is empty.
    pub next_hop: u32,
    generation: u32,
    timer_idx: u32,
    timer_bucket: u16,
}

impl Entry {
    pub fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            account: AccountId(self.from),
            conn: self.conn,
            request_id: self.request_id,
        }
    }

    pub fn next_hop(&self) -> AccountId {
        AccountId(self.next_hop)
    }
}

/// What a new entry needs; the table adds generation and timer position.
#[derive(Clone, Copy, Debug)]
pub struct NewEntry {
    pub origin: ReplyTo,
    pub next_hop: AccountId,
    pub in_amount: u64,
    pub out_amount: u64,
    pub condition: [u8; 32],
    pub out_expiry: u64,
    pub arrival_ns: u64,
}

pub struct Pending {
    entries: Vec<Entry>,
    free: Vec<u32>,
    len: usize,
    max: usize,
    slot_bits: u32,
    gen_mask: u32,
    wheel: Vec<Vec<u32>>,
    /// Every tick up to and including this one has been processed.
    last_tick: u64,
    /// A lower bound on the earliest deadline (u64::MAX: none known).
    hint: u64,
    /// Live entries per upstream account (index `from`), for the
    /// per-account in-flight quota; our own requests (`from` past the end)
    /// are not counted.
    per_account: Vec<u32>,
}

impl Pending {
    pub fn new(max_in_flight: usize, accounts: usize) -> Pending {
        let max = max_in_flight.clamp(1, MAX_SLOTS);
        let slot_bits = (usize::BITS - (max - 1).leading_zeros()).max(1);
        Pending {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
            max,
            slot_bits,
            gen_mask: (1u32 << (32 - slot_bits)) - 1,
            wheel: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
            last_tick: 0,
            hint: u64::MAX,
            per_account: vec![0; accounts],
        }
    }

    /// Live entries whose Prepare came from `account`.
    #[inline]
    pub fn account_len(&self, account: usize) -> usize {
        self.per_account.get(account).map_or(0, |n| *n as usize)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.max
    }

    #[inline]
    fn split(&self, id: OutId) -> (usize, u32) {
        (
            (id.0 & ((1u32 << self.slot_bits) - 1)) as usize,
            id.0 >> self.slot_bits,
        )
    }

    /// Adds an entry and arms its timer; `None` when the table is full (T03).
    pub fn insert(&mut self, e: NewEntry) -> Option<OutId> {
        let slot = match self.free.pop() {
            Some(s) => s as usize,
            None if self.entries.len() < self.max => {
                self.entries.push(Entry {
                    condition: [0; 32],
                    in_amount: 0,
                    out_amount: 0,
                    out_expiry: 0,
                    arrival_ns: 0,
                    conn: 0,
                    request_id: 0,
                    from: 0,
                    next_hop: FREE,
                    generation: 0,
                    timer_idx: 0,
                    timer_bucket: 0,
                });
                self.entries.len() - 1
            }
            None => return None,
        };
        let tick = e.out_expiry.max(self.last_tick + 1);
        let bucket = (tick & WHEEL_MASK) as usize;
        let timer_idx = self.wheel[bucket].len() as u32;
        self.wheel[bucket].push(slot as u32);
        self.hint = self.hint.min(tick);
        let ent = &mut self.entries[slot];
        *ent = Entry {
            condition: e.condition,
            in_amount: e.in_amount,
            out_amount: e.out_amount,
            out_expiry: e.out_expiry,
            arrival_ns: e.arrival_ns,
            conn: e.origin.conn,
            request_id: e.origin.request_id,
            from: e.origin.account.0,
            next_hop: e.next_hop.0,
            generation: ent.generation,
            timer_idx,
            timer_bucket: bucket as u16,
        };
        self.len += 1;
        if let Some(n) = self.per_account.get_mut(e.origin.account.0 as usize) {
            *n += 1;
        }
        Some(OutId((ent.generation << self.slot_bits) | slot as u32))
    }

    /// The live entry for `id`, if any (a stale or unknown id gives `None`).
    #[inline]
    pub fn get(&self, id: OutId) -> Option<&Entry> {
        let (slot, gen) = self.split(id);
        self.entries
            .get(slot)
            .filter(|e| e.next_hop != FREE && e.generation == gen)
    }

    /// Removes the entry for `id` and its timer.
    pub fn remove(&mut self, id: OutId) -> Option<Entry> {
        let (slot, _) = self.split(id);
        self.get(id)?;
        Some(self.take(slot))
    }

    /// Frees `slot` (which must be live), unlinking its timer.
    fn take(&mut self, slot: usize) -> Entry {
        let e = self.entries[slot];
        let bucket = &mut self.wheel[e.timer_bucket as usize];
        let idx = e.timer_idx as usize;
        if idx < bucket.len() {
            bucket.swap_remove(idx);
            if let Some(&moved) = bucket.get(idx) {
                self.entries[moved as usize].timer_idx = idx as u32;
            }
        }
        let ent = &mut self.entries[slot];
        ent.next_hop = FREE;
        ent.generation = (ent.generation + 1) & self.gen_mask;
        self.free.push(slot as u32);
        self.len -= 1;
        if let Some(n) = self.per_account.get_mut(e.from as usize) {
            *n -= 1;
        }
        e
    }

    /// Every live entry with its id (for the journal's checkpoints).
    pub fn live(&self) -> impl Iterator<Item = (OutId, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.next_hop != FREE)
            .map(|(slot, e)| (OutId((e.generation << self.slot_bits) | slot as u32), e))
    }

    /// Removes every entry whose outgoing expiry is at or before `now_ms`
    /// into `expired`, with its id.
    pub fn expire(&mut self, now_ms: u64, expired: &mut Vec<(OutId, Entry)>) {
        if now_ms > self.last_tick {
            let ticks = (now_ms - self.last_tick).min(WHEEL_SLOTS as u64);
            for t in 0..ticks {
                let bucket = ((now_ms - t) & WHEEL_MASK) as usize;
                let mut i = 0;
                while i < self.wheel[bucket].len() {
                    let slot = self.wheel[bucket][i] as usize;
                    if self.entries[slot].out_expiry <= now_ms {
                        let e = &self.entries[slot];
                        let id = OutId((e.generation << self.slot_bits) | slot as u32);
                        expired.push((id, self.take(slot)));
                    } else {
                        i += 1;
                    }
                }
            }
            self.last_tick = now_ms;
        }
        if self.hint <= now_ms {
            self.hint = u64::MAX;
            if self.len > 0 {
                if let Some(t) = (1..=WHEEL_SLOTS as u64)
                    .find(|t| !self.wheel[((now_ms + t) & WHEEL_MASK) as usize].is_empty())
                {
                    self.hint = now_ms + t;
                }
            }
        }
    }

    /// A time (unix ms) at or before the earliest pending expiry.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.len == 0 || self.hint == u64::MAX {
            None
        } else {
            Some(self.hint)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(expiry: u64) -> NewEntry {
        NewEntry {
            origin: ReplyTo {
                account: AccountId(1),
                conn: 7,
                request_id: 9,
            },
            next_hop: AccountId(2),
            in_amount: 10,
            out_amount: 9,
            condition: [3; 32],
            out_expiry: expiry,
            arrival_ns: 0,
        }
    }

    #[test]
    fn entry_is_96_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 96);
    }

    #[test]
    fn stale_ids_never_match_a_reused_slot() {
        let mut p = Pending::new(2, 1);
        let a = p.insert(new(100)).unwrap();
        let b = p.insert(new(100)).unwrap();
        assert!(p.is_full());
        assert!(p.insert(new(100)).is_none());
        assert_eq!(p.remove(a).map(|e| e.out_amount), Some(9));
        assert!(p.remove(a).is_none(), "second removal");
        let c = p.insert(new(200)).unwrap();
        assert_ne!(a, c);
        assert!(p.get(a).is_none());
        assert_eq!(p.get(c).map(|e| e.out_expiry), Some(200));
        assert_eq!(p.get(b).map(|e| e.reply_to().request_id), Some(9));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn timers_fire_at_deadline_and_removed_ones_do_not() {
        let mut p = Pending::new(100, 1);
        let t0 = 1_700_000_000_000;
        let mut out = Vec::new();
        p.expire(t0, &mut out);
        let ids: Vec<_> = (0..10)
            .map(|i| p.insert(new(t0 + 10 + i)).unwrap())
            .collect();
        let far = p.insert(new(t0 + WHEEL_SLOTS as u64 * 3 + 5)).unwrap();
        assert_eq!(p.next_deadline(), Some(t0 + 10));
        p.remove(ids[3]);
        p.remove(ids[0]);
        p.expire(t0 + 9, &mut out);
        assert!(out.is_empty());
        p.expire(t0 + 12, &mut out);
        let got: Vec<_> = out.iter().map(|(_, e)| e.out_expiry - t0).collect();
        assert_eq!(got, vec![12, 11]);
        assert_eq!(out[0].0, ids[2], "expired with their own ids");
        assert_eq!(p.next_deadline(), Some(t0 + 14), "t0 + 13 was removed");
        out.clear();
        p.expire(t0 + 100, &mut out);
        assert_eq!(out.len(), 6);
        assert!(p.get(far).is_some());
        out.clear();
        p.expire(t0 + WHEEL_SLOTS as u64 * 3 + 4, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(p.live().map(|(id, _)| id).collect::<Vec<_>>(), vec![far]);
        p.expire(t0 + WHEEL_SLOTS as u64 * 3 + 5, &mut out);
        assert_eq!(out.len(), 1);
        assert!(p.is_empty());
        assert_eq!(p.live().count(), 0);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn past_deadlines_fire_on_the_next_call() {
        let mut p = Pending::new(4, 1);
        let mut out = Vec::new();
        p.expire(1000, &mut out);
        p.insert(new(500)).unwrap();
        p.expire(1001, &mut out);
        assert_eq!(out.len(), 1);
    }
}

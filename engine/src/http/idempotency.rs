//! The memory of requests on idempotent links (HTTP-OER-SYNC/ASYNC and
//! BTP/2.0-I; docs/design.md "Node-roles links"): a repeated request is
//! never handed to the core again (so never forwarded nor charged twice)
//! and, once answered, gets the same answer.
//!
//! Shared by all workers (a repeat may arrive on another connection, hence
//! another worker) and sharded behind short `parking_lot` locks; only
//! idempotent links pay for it. Bounded: at most `capacity` entries; an
//! entry lives `ttl_ms` after it was created (longer than any Prepare may be
//! held, so a requester has stopped repeating by then). When full, the
//! oldest answered entries go first; in-flight entries are never dropped
//! (their number is bounded by `max_in_flight` anyway), and when only
//! in-flight entries are left new requests are refused.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use parking_lot::Mutex;

use super::ReqId;
use crate::core::AccountId;

const SHARDS: usize = 16;

/// A request's identity: the authenticated account and the id it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub account: AccountId,
    pub id: ReqId,
}

impl Key {
    /// BTP/2.0-I: the BTP request id is the key.
    pub fn btp(account: AccountId, request_id: u32) -> Key {
        let mut digits = [0u8; 10];
        let mut n = request_id;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Key {
            account,
            // Digits only: always a valid id.
            id: ReqId::parse(&digits[i..]).unwrap_or_else(unreachable_id),
        }
    }
}

#[cold]
fn unreachable_id() -> ReqId {
    ReqId::ours(0, 0, 0)
}

/// What the cache says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First time: it is now recorded as in flight; process it.
    New,
    /// Already being processed: do not process it again.
    InFlight,
    /// Already answered: send this same answer again.
    Answered(Bytes),
    /// No room (every entry is in flight): refuse it for now.
    Full,
    /// The id is in flight for a *different* packet: the peer reused an id
    /// (not a repeat); refuse it rather than mix the two up.
    Conflict,
}

/// A cheap fingerprint of a packet, so a reused request id is told apart
/// from a repeat (FNV-1a over the bytes; repeats are byte-identical).
pub fn fingerprint(packet: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in packet {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Debug)]
enum State {
    InFlight,
    Answered(Bytes),
}

#[derive(Debug)]
struct Entry {
    state: State,
    created_ms: u64,
    fingerprint: u64,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Key, Entry>,
    /// Keys in creation order (for expiry and eviction).
    order: VecDeque<(Key, u64)>,
}

/// Counters for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub in_flight: usize,
}

pub struct IdempotencyCache {
    /// Our own async requests waiting for their reply POST (which may reach
    /// any worker).
    pub waits: AsyncWaits,
    shards: Box<[Mutex<Shard>]>,
    cap_per_shard: usize,
    ttl_ms: u64,
    hasher: std::collections::hash_map::RandomState,
}

impl IdempotencyCache {
    /// `capacity` entries in all, each kept `ttl_ms` after creation.
    pub fn new(capacity: usize, ttl_ms: u64) -> IdempotencyCache {
        IdempotencyCache {
            waits: AsyncWaits::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            cap_per_shard: capacity.div_ceil(SHARDS).max(1),
            ttl_ms,
            hasher: Default::default(),
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(key);
        &self.shards[(h as usize) % SHARDS]
    }

    /// Looks `key` up, recording it as in flight if it is new.
    pub fn begin(&self, key: Key, now_ms: u64) -> Begin {
        self.begin_with(key, 0, now_ms)
    }

    /// Like [`IdempotencyCache::begin`], for a request whose packet has
    /// this [`fingerprint`]: the same id with another packet is a reused id,
    /// not a repeat (answered: forgotten and processed as new; in flight:
    /// [`Begin::Conflict`]).
    pub fn begin_with(&self, key: Key, fingerprint: u64, now_ms: u64) -> Begin {
        let mut s = self.shard(&key).lock();
        s.expire(now_ms, self.ttl_ms);
        if let Some(e) = s.map.get(&key) {
            match &e.state {
                State::InFlight if e.fingerprint != fingerprint => return Begin::Conflict,
                State::InFlight => return Begin::InFlight,
                State::Answered(b) if e.fingerprint == fingerprint => {
                    return Begin::Answered(b.clone())
                }
                State::Answered(_) => {
                    s.map.remove(&key);
                }
            }
        }
        if s.map.len() >= self.cap_per_shard && !s.evict_one() {
            return Begin::Full;
        }
        s.map.insert(
            key,
            Entry {
                state: State::InFlight,
                created_ms: now_ms,
                fingerprint,
            },
        );
        s.order.push_back((key, now_ms));
        Begin::New
    }

    /// Records the answer of an in-flight request. Returns false if the key
    /// was not in flight (unknown, expired or already answered).
    pub fn finish(&self, key: Key, reply: Bytes) -> bool {
        let mut s = self.shard(&key).lock();
        match s.map.get_mut(&key) {
            Some(
                e @ Entry {
                    state: State::InFlight,
                    ..
                },
            ) => {
                e.state = State::Answered(reply);
                true
            }
            _ => false,
        }
    }

    /// Forgets an in-flight request that was not processed after all, so a
    /// repeat is processed (e.g. refused while shutting down).
    pub fn abandon(&self, key: Key) {
        let mut s = self.shard(&key).lock();
        if matches!(
            s.map.get(&key),
            Some(Entry {
                state: State::InFlight,
                ..
            })
        ) {
            s.map.remove(&key);
        }
    }

    pub fn stats(&self) -> CacheStats {
        let mut st = CacheStats::default();
        for s in self.shards.iter() {
            let s = s.lock();
            st.entries += s.map.len();
            st.in_flight += s
                .map
                .values()
                .filter(|e| matches!(e.state, State::InFlight))
                .count();
        }
        st
    }
}

/// Our async Forwards (RFC 35 async, HTTP-OER-ASYNC) waiting for their
/// reply: (origin worker, out id) → (nonce, next hop). A reply is taken once
/// (RFC 35: "processes only the first reply"), by whichever worker it
/// reaches, and only if its request id carries the right nonce and it comes
/// from the account the Prepare went to.
pub struct AsyncWaits {
    shards: Box<[Mutex<WaitMap>]>,
}

/// (origin worker, out id) → (nonce, next hop).
type WaitMap = HashMap<(u16, u32), (u64, AccountId)>;

impl AsyncWaits {
    fn new() -> AsyncWaits {
        AsyncWaits {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, worker: u16, out_id: u32) -> &Mutex<WaitMap> {
        &self.shards[(out_id as usize ^ worker as usize) % SHARDS]
    }

    /// Records a Forward (replacing any stale entry of a reused out id).
    pub fn insert(&self, worker: u16, out_id: u32, nonce: u64, to: AccountId) {
        self.shard(worker, out_id)
            .lock()
            .insert((worker, out_id), (nonce, to));
    }

    /// Takes the entry if the reply matches it; false for unknown, already
    /// answered, forged or wrong-account replies.
    pub fn take(&self, worker: u16, out_id: u32, nonce: u64, from: AccountId) -> bool {
        let mut m = self.shard(worker, out_id).lock();
        match m.get(&(worker, out_id)) {
            Some(&(n, a)) if n == nonce && a == from => {
                m.remove(&(worker, out_id));
                true
            }
            _ => false,
        }
    }

    /// Forgets a Forward that was answered or failed another way.
    pub fn remove(&self, worker: u16, out_id: u32) {
        self.shard(worker, out_id).lock().remove(&(worker, out_id));
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shard {
    /// Drops answered entries older than `ttl`. An in-flight entry that
    /// old is kept (moved to the back): the core still owns its answer.
    fn expire(&mut self, now_ms: u64, ttl: u64) {
        let mut budget = self.order.len();
        while budget > 0 {
            budget -= 1;
            let Some(&(key, created)) = self.order.front() else {
                break;
            };
            if now_ms.saturating_sub(created) < ttl {
                break;
            }
            self.order.pop_front();
            match self.map.get(&key) {
                // A stale order record of a key re-created since.
                Some(e) if e.created_ms != created => {}
                Some(Entry {
                    state: State::InFlight,
                    ..
                }) => self.order.push_back((key, created)),
                Some(_) => {
                    self.map.remove(&key);
                }
                None => {}
            }
        }
    }

    /// Makes room by dropping the oldest answered entry.
    fn evict_one(&mut self) -> bool {
        let mut budget = self.order.len();
        while budget > 0 {
            budget -= 1;
            let Some((key, created)) = self.order.pop_front() else {
                return false;
            };
            match self.map.get(&key) {
                Some(e) if e.created_ms != created => {}
                Some(Entry {
                    state: State::InFlight,
                    ..
                }) => self.order.push_back((key, created)),
                Some(_) => {
                    self.map.remove(&key);
                    return true;
                }
                None => {}
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(a: u32, id: &str) -> Key {
        Key {
            account: AccountId(a),
            id: ReqId::parse(id.as_bytes()).unwrap(),
        }
    }

    #[test]
    fn a_repeat_is_never_new_and_gets_the_same_answer() {
        let c = IdempotencyCache::new(1000, 60_000);
        assert_eq!(c.begin(key(0, "a"), 0), Begin::New);
        assert_eq!(c.begin(key(0, "a"), 1), Begin::InFlight);
        // Same id from another account is another request.
        assert_eq!(c.begin(key(1, "a"), 1), Begin::New);
        assert!(c.finish(key(0, "a"), Bytes::from_static(b"\x0d\x01x")));
        assert!(
            !c.finish(key(0, "a"), Bytes::from_static(b"other")),
            "answered once"
        );
        for t in [2, 100, 59_999] {
            assert_eq!(
                c.begin(key(0, "a"), t),
                Begin::Answered(Bytes::from_static(b"\x0d\x01x"))
            );
        }
        assert!(!c.finish(key(0, "zz"), Bytes::new()));
        assert_eq!(
            c.stats(),
            CacheStats {
                entries: 2,
                in_flight: 1
            }
        );
    }

    #[test]
    fn a_reused_id_with_another_packet_is_not_a_repeat() {
        let c = IdempotencyCache::new(1000, 60_000);
        let (a, b) = (fingerprint(b"packet a"), fingerprint(b"packet b"));
        assert_ne!(a, b);
        assert_eq!(c.begin_with(key(0, "x"), a, 0), Begin::New);
        assert_eq!(c.begin_with(key(0, "x"), b, 1), Begin::Conflict);
        assert_eq!(c.begin_with(key(0, "x"), a, 1), Begin::InFlight);
        c.finish(key(0, "x"), Bytes::from_static(b"ra"));
        assert_eq!(
            c.begin_with(key(0, "x"), a, 2),
            Begin::Answered(Bytes::from_static(b"ra"))
        );
        // Another packet under an answered id: a new request.
        assert_eq!(c.begin_with(key(0, "x"), b, 3), Begin::New);
        c.finish(key(0, "x"), Bytes::from_static(b"rb"));
        assert_eq!(
            c.begin_with(key(0, "x"), b, 4),
            Begin::Answered(Bytes::from_static(b"rb"))
        );
    }

    #[test]
    fn answered_entries_expire_in_flight_ones_do_not() {
        let c = IdempotencyCache::new(1000, 100);
        assert_eq!(c.begin(key(0, "done"), 0), Begin::New);
        assert_eq!(c.begin(key(0, "busy"), 0), Begin::New);
        c.finish(key(0, "done"), Bytes::from_static(b"r"));
        assert_eq!(
            c.begin(key(0, "done"), 150),
            Begin::New,
            "expired, so new again"
        );
        assert_eq!(
            c.begin(key(0, "busy"), 150),
            Begin::InFlight,
            "still owned by the core"
        );
        c.abandon(key(0, "busy"));
        assert_eq!(c.begin(key(0, "busy"), 151), Begin::New);
    }

    #[test]
    fn bounded_oldest_answered_evicted_first_and_full_when_all_in_flight() {
        // One shard's worth of capacity: use keys until a shard fills.
        let c = IdempotencyCache::new(SHARDS * 2, 1_000_000);
        let mut new = 0;
        let mut full = 0;
        for i in 0..200 {
            match c.begin(key(0, &format!("k{i}")), i) {
                Begin::New => new += 1,
                Begin::Full => full += 1,
                b => panic!("{b:?}"),
            }
        }
        assert!(new <= SHARDS * 2, "{new}");
        assert!(full >= 200 - SHARDS * 2);
        assert!(c.stats().entries <= SHARDS * 2);
        // Answer everything: now new keys evict the oldest answers.
        for i in 0..200 {
            c.finish(key(0, &format!("k{i}")), Bytes::from_static(b"r"));
        }
        for i in 200..400 {
            assert_eq!(c.begin(key(0, &format!("k{i}")), i), Begin::New);
            c.finish(key(0, &format!("k{i}")), Bytes::from_static(b"r"));
        }
        // The newest answers are still remembered.
        assert_eq!(
            c.begin(key(0, "k399"), 400),
            Begin::Answered(Bytes::from_static(b"r"))
        );
        assert!(c.stats().entries <= SHARDS * 2);
    }

    #[test]
    fn async_waits_take_a_reply_once_and_only_a_matching_one() {
        let w = IdempotencyCache::new(10, 1000).waits;
        w.insert(1, 7, 99, AccountId(2));
        assert!(!w.take(1, 7, 98, AccountId(2)), "wrong nonce");
        assert!(!w.take(1, 7, 99, AccountId(3)), "wrong account");
        assert!(!w.take(0, 7, 99, AccountId(2)), "wrong worker");
        assert!(w.take(1, 7, 99, AccountId(2)));
        assert!(!w.take(1, 7, 99, AccountId(2)), "only the first reply");
        w.insert(1, 8, 1, AccountId(2));
        w.remove(1, 8);
        assert!(w.is_empty());
    }

    #[test]
    fn btp_keys_are_decimal_request_ids() {
        assert_eq!(Key::btp(AccountId(3), 0).id.as_str(), "0");
        assert_eq!(Key::btp(AccountId(3), u32::MAX).id.as_str(), "4294967295");
        assert_ne!(Key::btp(AccountId(3), 7), Key::btp(AccountId(4), 7));
    }
}

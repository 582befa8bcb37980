//! The routing table: segment-aware longest-prefix match (RFC 15,
//! docs/design.md "Routing") over an immutable snapshot that is swapped atomically
//! (arc-swap), so readers never lock.
//!
//! The snapshot is built from three layers, later ones winning on the same
//! prefix: learned routes (CCP, a later issue, replaces this layer with
//! [`Router::set_learned`]), local routes (each account's own address: a
//! child's `<node>.<id>` or its configured `ilp_address`), and static routes
//! from the config (docs/design.md "Route selection").
//!
//! Lookup tries the destination itself and then each shorter prefix that
//! ends at a segment boundary, longest first, so `g.alice` never matches
//! `g.alicebob`. A bitmap of the prefix lengths present skips the hash
//! probes that cannot hit.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arc_swap::cache::Cache;
use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::AccountId;

/// FNV-1a: short keys, no adversarial control over which keys are stored
/// (only the operator's config and CCP add routes), fast to compute.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// Longest ILP address (RFC 15).
const MAX_LEN: usize = 1023;

/// One immutable routing snapshot.
#[derive(Default)]
pub struct Table {
    map: FnvMap<Box<[u8]>, AccountId>,
    /// Bit `n` set when some prefix has length `n`.
    lengths: [u64; (MAX_LEN + 1).div_ceil(64)],
}

impl Table {
    fn build<'a>(layers: impl IntoIterator<Item = &'a [(Box<[u8]>, AccountId)]>) -> Table {
        let mut t = Table::default();
        for layer in layers {
            for (prefix, to) in layer {
                if prefix.is_empty() || prefix.len() > MAX_LEN {
                    continue;
                }
                t.lengths[prefix.len() / 64] |= 1 << (prefix.len() % 64);
                t.map.insert(prefix.clone(), *to);
            }
        }
        t
    }

    #[inline]
    fn has_len(&self, n: usize) -> bool {
        n <= MAX_LEN && self.lengths[n / 64] & (1 << (n % 64)) != 0
    }

    /// The next hop for `dest` by segment-aware longest prefix, if any.
    #[inline]
    pub fn lookup(&self, dest: &[u8]) -> Option<AccountId> {
        let mut end = dest.len();
        loop {
            if self.has_len(end) {
                if let Some(to) = self.map.get(&dest[..end]) {
                    return Some(*to);
                }
            }
            // Next candidate: up to the previous '.', exclusive.
            end = dest[..end].iter().rposition(|&b| b == b'.')?;
        }
    }
}

/// A worker's handle on the current table: one relaxed pointer load per
/// lookup while the table is unchanged, no reference-count traffic.
pub type TableCache = Cache<Arc<ArcSwap<Table>>, Arc<Table>>;

/// The swappable table plus the layers it is built from (cold path).
pub struct Router {
    current: Arc<ArcSwap<Table>>,
    layers: Mutex<Layers>,
}

struct Layers {
    learned: Vec<(Box<[u8]>, AccountId)>,
    local: Vec<(Box<[u8]>, AccountId)>,
    fixed: Vec<(Box<[u8]>, AccountId)>,
}

impl Router {
    /// `local`: account addresses; `fixed`: static routes from the config.
    pub fn new(local: Vec<(Box<[u8]>, AccountId)>, fixed: Vec<(Box<[u8]>, AccountId)>) -> Router {
        let layers = Layers {
            learned: Vec::new(),
            local,
            fixed,
        };
        let table = Table::build([&layers.learned[..], &layers.local[..], &layers.fixed[..]]);
        Router {
            current: Arc::new(ArcSwap::from_pointee(table)),
            layers: Mutex::new(layers),
        }
    }

    /// The next hop for `dest`.
    #[inline]
    pub fn lookup(&self, dest: &[u8]) -> Option<AccountId> {
        self.current.load().lookup(dest)
    }

    /// A per-worker cached handle (see [`TableCache`]).
    pub fn cache(&self) -> TableCache {
        Cache::new(self.current.clone())
    }

    /// Replaces the learned (CCP) layer and publishes a new snapshot.
    /// Static and local routes still win on equal prefixes.
    pub fn set_learned(&self, learned: Vec<(Box<[u8]>, AccountId)>) {
        let mut layers = self.layers.lock();
        layers.learned = learned;
        let table = Table::build([&layers.learned[..], &layers.local[..], &layers.fixed[..]]);
        self.current.store(Arc::new(table));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: &str, a: u32) -> (Box<[u8]>, AccountId) {
        (p.as_bytes().into(), AccountId(a))
    }

    #[test]
    fn segment_aware_longest_prefix() {
        let router = Router::new(vec![r("g.alice", 1)], vec![r("g", 0), r("g.alice.x", 2)]);
        assert_eq!(router.lookup(b"g.alice"), Some(AccountId(1)));
        assert_eq!(router.lookup(b"g.alice.y"), Some(AccountId(1)));
        assert_eq!(router.lookup(b"g.alice.x"), Some(AccountId(2)));
        assert_eq!(router.lookup(b"g.alice.x.z"), Some(AccountId(2)));
        assert_eq!(
            router.lookup(b"g.alicebob"),
            Some(AccountId(0)),
            "not g.alice"
        );
        assert_eq!(
            router.lookup(b"g.alice.xx"),
            Some(AccountId(1)),
            "not g.alice.x"
        );
        assert_eq!(router.lookup(b"test.alice"), None);
        assert_eq!(router.lookup(b""), None);
    }

    #[test]
    fn static_beats_local_beats_learned() {
        let router = Router::new(vec![r("g.a", 1)], vec![r("g.b", 2)]);
        router.set_learned(vec![r("g.a", 7), r("g.b", 7), r("g.c", 7)]);
        assert_eq!(router.lookup(b"g.a.1"), Some(AccountId(1)));
        assert_eq!(router.lookup(b"g.b.1"), Some(AccountId(2)));
        assert_eq!(router.lookup(b"g.c.1"), Some(AccountId(7)));
        let mut cache = router.cache();
        assert_eq!(cache.load().lookup(b"g.c.1"), Some(AccountId(7)));
        router.set_learned(vec![]);
        assert_eq!(router.lookup(b"g.c.1"), None);
        assert_eq!(
            cache.load().lookup(b"g.c.1"),
            None,
            "the cache sees the new snapshot"
        );
    }
}

//! The forwarding table CCP advertises and forwards by (docs/design.md "CCP",
//! ilp-connector `forwarding-routing-table`): for each prefix the fixed
//! route (static config, our own address, a child's address) if there is
//! one, else the best route learned from a peer; and the epoch log of every
//! change of a prefix's best route.
//!
//! The log keeps only the latest change per prefix (ilp-connector nulls
//! superseded entries; we remove them), so an update "from epoch e" is the
//! latest state of every prefix changed at or after `e`, in epoch order.
//! Withdrawn prefixes stay as tombstones so a peer that is behind hears of
//! the withdrawal; past [`MAX_TOMBSTONES`] the oldest are forgotten and
//! `base` moves up: a peer behind `base` is then sent the full table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::core::AccountId;

/// Tombstones kept before the oldest are forgotten (bounds the memory a
/// peer announcing and withdrawing random prefixes can make us hold).
pub const MAX_TOMBSTONES: usize = 100_000;

/// Where a fixed route goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// This node (our own address).
    Local,
    Account(AccountId),
}

/// One route learned from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    pub from: AccountId,
    /// Hops as the peer sent them (the peer first), nearest first. Shared:
    /// most routes of one update have the same path.
    pub path: Arc<[Box<[u8]>]>,
    pub auth: [u8; 32],
}

/// The route a prefix resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Best<'a> {
    Fixed(NextHop),
    Learned(&'a Learned),
}

impl Best<'_> {
    pub fn next_hop(&self) -> NextHop {
        match self {
            Best::Fixed(n) => *n,
            Best::Learned(l) => NextHop::Account(l.from),
        }
    }
}

#[derive(Default)]
struct Entry {
    fixed: Option<NextHop>,
    /// At most one per peer; unordered.
    learned: Vec<Learned>,
    /// Index into `learned` of the best one (only when `fixed` is None).
    best: Option<usize>,
    /// Epoch of this prefix's latest log entry.
    logged: Option<u32>,
}

/// The effective choice of an entry: fixed route, or learned from whom.
type Choice = (Option<NextHop>, Option<AccountId>);

impl Entry {
    /// A fixed route hides every learned one.
    fn choice(&self) -> Choice {
        match self.fixed {
            Some(n) => (Some(n), None),
            None => (
                None,
                self.best.and_then(|i| self.learned.get(i)).map(|l| l.from),
            ),
        }
    }

    fn best(&self) -> Option<Best<'_>> {
        match (self.fixed, self.best) {
            (Some(n), _) => Some(Best::Fixed(n)),
            (None, Some(i)) => self.learned.get(i).map(Best::Learned),
            (None, None) => None,
        }
    }
}

/// A change of the learned forwarding view, for logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Prefixes whose best route changed (including withdrawals).
    pub changed: usize,
}

pub struct Table {
    /// Per account: lower is preferred (child 0, peer 1, parent 2;
    /// RFC 34 "Routing", docs/design.md "Route selection").
    ranks: Vec<u8>,
    /// Keys shared with the log (one allocation per prefix).
    entries: HashMap<Arc<[u8]>, Entry>,
    /// epoch → prefix, only the latest change of each prefix.
    log: BTreeMap<u32, Arc<[u8]>>,
    /// Next epoch to hand out (= the current epoch of the CCP messages).
    epoch: u32,
    /// Epochs below this may have lost tombstones.
    base: u32,
    tombstones: usize,
    /// Prefixes whose best route is a learned one.
    learned_best: usize,
    /// The learned forwarding view changed since `take_dirty`.
    dirty: bool,
}

impl Table {
    /// `ranks[i]`: preference of account `i`'s routes (lower wins).
    /// `fixed`: static routes, our address, children's addresses; later
    /// entries win on the same prefix (pass them static last).
    pub fn new(ranks: Vec<u8>, fixed: Vec<(Box<[u8]>, NextHop)>) -> Table {
        let mut t = Table {
            ranks,
            entries: HashMap::new(),
            log: BTreeMap::new(),
            epoch: 0,
            base: 0,
            tombstones: 0,
            learned_best: 0,
            dirty: false,
        };
        let mut merged: Vec<(Arc<[u8]>, NextHop)> = Vec::new();
        for (p, n) in fixed {
            let p: Arc<[u8]> = p.into();
            match merged.iter_mut().find(|(q, _)| *q == p) {
                Some(slot) => slot.1 = n,
                None => merged.push((p, n)),
            }
        }
        for (p, n) in merged {
            let e = t.entries.entry(p.clone()).or_default();
            e.fixed = Some(n);
            t.log_change(&p);
        }
        t
    }

    /// The epoch the next change gets; what updates carry as currentEpoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Epochs below this are not fully held any more.
    pub fn base(&self) -> u32 {
        self.base
    }

    pub fn best(&self, prefix: &[u8]) -> Option<Best<'_>> {
        self.entries.get(prefix).and_then(Entry::best)
    }

    /// Number of prefixes whose best route is learned.
    pub fn learned_count(&self) -> usize {
        self.learned_best
    }

    /// Prefixes that currently have a route (fixed or learned).
    pub fn live_count(&self) -> usize {
        self.entries.len() - self.tombstones
    }

    /// Whether the learned forwarding view changed since `take_dirty`.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Whether the learned forwarding view changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Adds or replaces `route.from`'s route for `prefix`. Returns whether
    /// the prefix's best route changed.
    pub fn upsert(&mut self, prefix: &[u8], route: Learned) -> bool {
        let e = match self.entries.get_mut(prefix) {
            Some(e) => e,
            None => self.entries.entry(Arc::from(prefix)).or_default(),
        };
        let was_tomb = e.logged.is_some() && e.best().is_none();
        let old = e.choice();
        match e.learned.iter_mut().position(|l| l.from == route.from) {
            Some(i) if e.learned[i] == route => return false,
            Some(i) => e.learned[i] = route,
            None => {
                // Most prefixes have one route: no room for four.
                e.learned.reserve_exact(1);
                e.learned.push(route);
            }
        }
        if was_tomb {
            self.tombstones -= 1;
        }
        self.reselect(prefix, old, true)
    }

    /// Removes `from`'s route for `prefix`, if any. Returns whether the
    /// prefix's best route changed.
    pub fn withdraw(&mut self, prefix: &[u8], from: AccountId) -> bool {
        let Some(e) = self.entries.get_mut(prefix) else {
            return false;
        };
        let Some(i) = e.learned.iter().position(|l| l.from == from) else {
            return false;
        };
        let old = e.choice();
        let was_best = e.fixed.is_none() && e.best == Some(i);
        e.learned.swap_remove(i);
        // swap_remove moved the last element to `i`: fix the best index.
        e.best = match e.best {
            Some(b) if b == i => None,
            Some(b) if b == e.learned.len() => Some(i),
            other => other,
        };
        self.reselect(prefix, old, was_best)
    }

    /// Removes every route learned from `from`; returns how many prefixes
    /// changed their best route.
    pub fn withdraw_all(&mut self, from: AccountId) -> usize {
        let prefixes: Vec<Arc<[u8]>> = self
            .entries
            .iter()
            .filter(|(_, e)| e.learned.iter().any(|l| l.from == from))
            .map(|(p, _)| p.clone())
            .collect();
        prefixes.iter().filter(|p| self.withdraw(p, from)).count()
    }

    /// Prefixes learned from `from` (any, not only best).
    pub fn learned_from(&self, from: AccountId) -> usize {
        self.entries
            .values()
            .filter(|e| e.learned.iter().any(|l| l.from == from))
            .count()
    }

    /// Picks the best learned route of `prefix`
    /// (docs/design.md "Route selection": relation child > peer > parent,
    /// then shorter path, then smaller account id) and logs an epoch if the
    /// result differs. `touched_best`: the current best route itself was
    /// modified (its path may differ).
    fn reselect(&mut self, prefix: &[u8], old: Choice, touched_best: bool) -> bool {
        let ranks = &self.ranks;
        let Some(e) = self.entries.get_mut(prefix) else {
            return false;
        };

        let rank = |a: AccountId| ranks.get(a.0 as usize).copied().unwrap_or(u8::MAX);
        e.best = e
            .learned
            .iter()
            .enumerate()
            .min_by_key(|(_, l)| (rank(l.from), l.path.len(), l.from))
            .map(|(i, _)| i);
        let new = e.choice();
        let changed = old != new || (e.fixed.is_none() && touched_best && e.best.is_some());
        let was_learned = old.0.is_none() && old.1.is_some();
        let is_learned = new.0.is_none() && new.1.is_some();
        let now_empty = e.fixed.is_none() && e.best.is_none();
        if !changed {
            return false;
        }
        match (was_learned, is_learned) {
            (false, true) => self.learned_best += 1,
            (true, false) => self.learned_best -= 1,
            _ => {}
        }
        if was_learned || is_learned {
            self.dirty = true;
        }
        if now_empty {
            if e.logged.is_none() {
                // Never advertised: forget it.
                self.entries.remove(prefix);
                return true;
            }
            self.tombstones += 1;
        }
        self.log_change(prefix);
        if self.tombstones > MAX_TOMBSTONES {
            self.forget_tombstones();
        }
        true
    }

    fn log_change(&mut self, prefix: &[u8]) {
        let epoch = self.epoch;
        // u32 epochs: 4 billion changes per table id; past that we stop
        // advancing (documented in docs/ccp.md) rather than wrap.
        self.epoch = self.epoch.saturating_add(1);
        let Some((key, _)) = self.entries.get_key_value(prefix) else {
            return;
        };
        let key = key.clone();
        if let Some(e) = self.entries.get_mut(prefix) {
            if let Some(old) = e.logged.replace(epoch) {
                self.log.remove(&old);
            }
        }
        self.log.insert(epoch, key);
    }

    /// Drops the oldest half of the tombstones and raises `base`.
    fn forget_tombstones(&mut self) {
        let mut to_drop = self.tombstones / 2;
        let mut dropped = Vec::new();
        for (&epoch, prefix) in &self.log {
            if to_drop == 0 {
                break;
            }
            if self.entries.get(prefix).is_some_and(|e| e.best().is_none()) {
                dropped.push((epoch, prefix.clone()));
                to_drop -= 1;
            }
        }
        for (epoch, prefix) in dropped {
            self.log.remove(&epoch);
            self.entries.remove(&prefix);
            self.tombstones -= 1;
            self.base = self.base.max(epoch + 1);
        }
    }

    /// The latest state of every prefix changed in `from..`, in epoch order:
    /// (epoch, prefix, best route or None for a withdrawal).
    pub fn changes_since(
        &self,
        from: u32,
    ) -> impl Iterator<Item = (u32, &[u8], Option<Best<'_>>)> + '_ {
        self.log.range(from..).filter_map(move |(&epoch, prefix)| {
            let e = self.entries.get(prefix)?;
            Some((epoch, &prefix[..], e.best()))
        })
    }

    /// The learned forwarding view: prefixes whose best route is learned,
    /// with their next hop (what feeds the routing snapshot).
    pub fn learned_routes(&self) -> Vec<(&[u8], AccountId)> {
        self.entries
            .iter()
            .filter_map(|(p, e)| match e.best() {
                Some(Best::Learned(l)) => Some((&p[..], l.from)),
                _ => None,
            })
            .collect()
    }

    /// The learned forwarding view with each route's path (for metrics).
    pub fn learned_detail(&self) -> Vec<(&[u8], &Learned)> {
        self.entries
            .iter()
            .filter_map(|(p, e)| match e.best() {
                Some(Best::Learned(l)) => Some((&p[..], l)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(from: u32, path: &[&str]) -> Learned {
        Learned {
            from: AccountId(from),
            path: path
                .iter()
                .map(|h| Box::<[u8]>::from(h.as_bytes()))
                .collect::<Vec<_>>()
                .into(),
            auth: [0; 32],
        }
    }

    #[test]
    fn withdraw_fixes_best_index_after_swap_remove() {
        let mut t = Table::new(vec![1, 1, 1], vec![]);
        t.upsert(b"g.x", l(0, &["a", "b", "c"]));
        t.upsert(b"g.x", l(1, &["a", "b"]));
        t.upsert(b"g.x", l(2, &["a"]));
        assert_eq!(
            t.best(b"g.x").map(|b| b.next_hop()),
            Some(NextHop::Account(AccountId(2)))
        );
        // Removing index 0 moves index 2 (the best) to 0.
        assert!(!t.withdraw(b"g.x", AccountId(0)));
        assert_eq!(
            t.best(b"g.x").map(|b| b.next_hop()),
            Some(NextHop::Account(AccountId(2)))
        );
        assert!(t.withdraw(b"g.x", AccountId(2)));
        assert_eq!(
            t.best(b"g.x").map(|b| b.next_hop()),
            Some(NextHop::Account(AccountId(1)))
        );
    }

    #[test]
    fn tombstones_are_bounded() {
        let mut t = Table::new(vec![1], vec![]);
        for i in 0..(MAX_TOMBSTONES + 10) {
            let p = format!("g.p{i}");
            t.upsert(p.as_bytes(), l(0, &["a"]));
            t.withdraw(p.as_bytes(), AccountId(0));
        }
        assert!(t.tombstones <= MAX_TOMBSTONES);
        assert!(t.base() > 0);
        assert_eq!(t.live_count(), 0);
        assert_eq!(t.log.len(), t.entries.len());
    }
}

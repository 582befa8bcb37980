//! [`CcpHandle`]: the node's [`Ccp`] as the core shares it between workers.
//! CCP is a cold path (a few messages per peer per interval), so the state
//! machine sits behind a mutex; what every worker reads each loop turn (the
//! next deadline) is an atomic, so the forwarding path never locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ilpd_codec::address::Address;
use parking_lot::Mutex;

use super::{Ccp, CcpConfig, NextHop, Outgoing, PeerSettings};
use crate::config::Config;
use crate::core::AccountId;

/// `deadline` value meaning "no deadline".
const NONE: u64 = u64::MAX;

pub struct CcpHandle {
    ccp: Mutex<Ccp>,
    /// `Ccp::next_deadline()` after the last call (NONE: none).
    deadline: AtomicU64,
}

/// Learned routes (prefix, next hop) to publish into the routing snapshot.
pub type LearnedRoutes = Vec<(Box<[u8]>, AccountId)>;

impl CcpHandle {
    pub fn new(ccp: Ccp) -> CcpHandle {
        let deadline = ccp.next_deadline().unwrap_or(NONE);
        CcpHandle {
            ccp: Mutex::new(ccp),
            deadline: AtomicU64::new(deadline),
        }
    }

    /// Builds the node's CCP from a validated config: per-account settings
    /// (defaults by relation), fixed routes (`addresses[i]`: account `i`'s
    /// own address if any; static routes win, as in the routing snapshot),
    /// and a fresh routing-table id (clock, pid and address hashed: it only
    /// has to differ between restarts).
    pub fn from_config(
        cfg: &Config,
        node_address: &Address,
        addresses: &[Option<Address>],
        statics: &[(Address, AccountId)],
    ) -> CcpHandle {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut seed = Vec::new();
        seed.extend_from_slice(&nanos.to_be_bytes());
        seed.extend_from_slice(&std::process::id().to_be_bytes());
        seed.extend_from_slice(node_address.as_bytes());
        let mut c = CcpConfig::new(node_address.clone(), super::new_table_id(&seed));
        let n = &cfg.node;
        c.broadcast_interval_ms = n.route_broadcast_interval_ms;
        c.hold_down_ms = n.route_hold_down_ms;
        c.max_routes_per_update = n.max_routes_per_update;
        let peers = cfg
            .accounts
            .iter()
            .map(|a| {
                let mut p = PeerSettings::new(&a.id, a.relation);
                p.send_routes = a.send_routes.unwrap_or(p.send_routes);
                p.receive_routes = a.receive_routes.unwrap_or(p.receive_routes);
                p
            })
            .collect();
        let mut fixed = vec![(node_address.clone(), NextHop::Local)];
        for (i, a) in addresses.iter().enumerate() {
            if let Some(a) = a {
                fixed.push((a.clone(), NextHop::Account(AccountId(i as u32))));
            }
        }
        for (p, a) in statics {
            fixed.push((p.clone(), NextHop::Account(*a)));
        }
        CcpHandle::new(Ccp::new(c, peers, fixed))
    }

    /// When `poll` next has work (unix ms); lock-free.
    #[inline]
    pub fn next_deadline(&self) -> Option<u64> {
        match self.deadline.load(Ordering::Acquire) {
            NONE => None,
            d => Some(d),
        }
    }

    /// Runs `f` on the state machine at `now_ms`; if the learned routes
    /// changed and are due, `publish` gets them while the lock is still held
    /// (so two workers cannot publish out of order). Otherwise the next
    /// `try_poll` publishes them.
    pub fn call<R>(
        &self,
        now_ms: u64,
        f: impl FnOnce(&mut Ccp) -> R,
        publish: impl FnOnce(LearnedRoutes),
    ) -> R {
        let mut c = self.ccp.lock();
        let r = f(&mut c);
        if let Some(routes) = c.take_learned_change(now_ms) {
            publish(routes);
        }
        self.deadline
            .store(c.next_deadline().unwrap_or(NONE), Ordering::Release);
        r
    }

    /// The Prepares due at `now_ms`, unless another worker is polling
    /// right now (it will send them).
    pub fn try_poll(&self, now_ms: u64, publish: impl FnOnce(LearnedRoutes)) -> Vec<Outgoing> {
        let Some(mut c) = self.ccp.try_lock() else {
            return Vec::new();
        };
        let out = c.poll(now_ms);
        if let Some(routes) = c.take_learned_change(now_ms) {
            publish(routes);
        }
        // Never in the past after a poll (no busy loop on a stale deadline).
        let next = c.next_deadline().map_or(NONE, |d| d.max(now_ms + 1));
        self.deadline.store(next, Ordering::Release);
        out
    }

    /// Prometheus text of the CCP counters and learned table.
    pub fn render_metrics(&self, out: &mut String) {
        self.ccp.lock().render_metrics(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Relation;

    #[test]
    fn deadline_follows_the_state_machine_and_polls_publish() {
        let addr = Address::new("test.me").expect("address");
        let ccp = Ccp::new(
            CcpConfig::new(addr.clone(), [1; 16]),
            vec![PeerSettings::new("bob", Relation::Peer)],
            vec![(addr, NextHop::Local)],
        );
        let h = CcpHandle::new(ccp);
        assert_eq!(h.next_deadline(), None, "nothing to do before a link is up");
        h.call(
            0,
            |c| c.on_link_up(0, AccountId(0)),
            |_| panic!("nothing learned"),
        );
        assert_eq!(h.next_deadline(), Some(0), "the route control is due");
        let out = h.try_poll(1_000, |_| panic!("nothing learned"));
        assert_eq!(out.len(), 1);
        // Never in the past after a poll: the control's timeout is next.
        assert!(h.next_deadline().is_some_and(|d| d > 1_000));
        // A learned route is published by the call that learned it.
        let mut data = Vec::new();
        ilpd_codec::peer::ccp::RouteUpdateRequest {
            routing_table_id: [2; 16],
            current_epoch_index: 1,
            from_epoch_index: 0,
            to_epoch_index: 1,
            hold_down_time: 5_000,
            speaker: b"test.bob",
            new_routes: vec![ilpd_codec::peer::ccp::Route {
                prefix: b"test.bob",
                path: vec![b"test.bob"],
                auth: [0; 32],
                props: vec![],
            }],
            withdrawn_routes: vec![],
        }
        .write_to(&mut data);
        let mut published = Vec::new();
        let r = h.call(
            1_000,
            |c| c.on_route_update(1_000, AccountId(0), &data),
            |r| published = r,
        );
        assert_eq!(r, Ok(()));
        assert_eq!(
            published,
            vec![(Box::<[u8]>::from(&b"test.bob"[..]), AccountId(0))]
        );
        // The routes expire at 6000 unless refreshed.
        assert!(h.next_deadline().is_some_and(|d| d <= 6_000));
    }
}

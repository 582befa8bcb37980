//! Our side as the speaker of routes to one peer (docs/design.md "CCP",
//! ilp-connector `ccp-sender`): the peer's mode and known epoch, and the
//! building of one RouteUpdate from the table's epoch log.

use bytes::BytesMut;
use ilpd_codec::peer::ccp::{self, Mode, Route, RouteUpdateRequest};
use ilpd_codec::types::Expiry;
use sha2::{Digest, Sha256};

use super::table::{Best, NextHop, Table};
use crate::config::Relation;
use crate::core::AccountId;

/// Encoded route bytes per update we send: well under the 64 KiB default
/// `max_message_size` of a receiving ilpd, with room for the framing.
pub const MAX_UPDATE_BYTES: usize = 32 * 1024;

/// One peer we send routes to.
#[derive(Debug)]
pub(super) struct Speaker {
    pub mode: Mode,
    /// The epoch the peer holds our table up to (exclusive).
    pub known_epoch: u32,
    /// Sending the whole table because the peer's epoch is older than what
    /// the log holds: the next log epoch to look at.
    pub full: Option<u32>,
    pub last_sent: Option<u64>,
    pub in_flight: Option<InFlight>,
    /// Send at the next poll (a RouteControl asked for it).
    pub force: bool,
    /// After a failed update: no new one before this.
    pub backoff_until: Option<u64>,
}

impl Default for Speaker {
    fn default() -> Self {
        Speaker {
            mode: Mode::Idle,
            known_epoch: 0,
            full: None,
            last_sent: None,
            in_flight: None,
            force: false,
            backoff_until: None,
        }
    }
}

/// An update waiting for its reply; what to restore if it fails
/// (ilp-connector rolls back its optimistic epoch advance the same way).
#[derive(Debug, Clone, Copy)]
pub(super) struct InFlight {
    pub sent_at: u64,
    pub prev_known: u32,
    pub prev_full: Option<u32>,
}

/// What the update builder needs to know about us and the peer.
pub(super) struct Export<'a> {
    pub our_address: &'a [u8],
    /// `<scheme>.`: only prefixes strictly under the global prefix are sent.
    pub global_dot: &'a [u8],
    pub peer: AccountId,
    pub relations: &'a [Relation],
    pub table_id: [u8; 16],
    pub hold_down_ms: u32,
    pub max_routes: usize,
}

impl Export<'_> {
    fn relation(&self, a: AccountId) -> Option<Relation> {
        self.relations.get(a.0 as usize).copied()
    }

    /// The path tail (after us) and auth to advertise for `best`, or None:
    /// tell the peer it is withdrawn. Never a peer's own routes back to it;
    /// to a parent, never routes through a peer or parent (export filters,
    /// docs/design.md "CCP").
    fn export<'t>(&self, prefix: &[u8], best: Best<'t>) -> Option<(Vec<&'t [u8]>, [u8; 32])> {
        if let NextHop::Account(a) = best.next_hop() {
            if a == self.peer {
                return None;
            }
            if self.relation(self.peer) == Some(Relation::Parent)
                && matches!(self.relation(a), Some(Relation::Peer | Relation::Parent))
            {
                return None;
            }
        }
        match best {
            // A route we originate: auth from our table id and the prefix
            // (ilp-connector: an HMAC at the origin; nobody verifies it).
            Best::Fixed(_) => {
                let mut h = Sha256::new();
                h.update(self.table_id);
                h.update(prefix);
                Some((Vec::new(), h.finalize().into()))
            }
            // ilp-connector: SHA-256 of the previous auth at each hop.
            Best::Learned(l) => Some((
                l.path.iter().map(|h| &h[..]).collect(),
                Sha256::digest(l.auth).into(),
            )),
        }
    }
}

/// Rough encoded size of a route (prefix, hops, auth, counts).
fn route_len(prefix: &[u8], path: &[&[u8]], our: &[u8]) -> usize {
    prefix.len() + 3 + our.len() + 3 + path.iter().map(|h| h.len() + 3).sum::<usize>() + 32 + 2
}

/// Builds the next update for the peer from `sp.known_epoch` (or the full
/// table), advances `sp` optimistically and returns the Prepare.
pub(super) fn build_update(
    table: &Table,
    sp: &mut Speaker,
    ex: &Export<'_>,
    now_ms: u64,
    expiry_ms: u64,
) -> (BytesMut, usize) {
    let (start, full) = match sp.full {
        Some(cursor) => (cursor, true),
        None => (sp.known_epoch, false),
    };
    let mut new_routes: Vec<Route<'_>> = Vec::new();
    let mut withdrawn: Vec<&[u8]> = Vec::new();
    let mut bytes = 0usize;
    let mut last: Option<u32> = None;
    let mut exhausted = true;
    for (epoch, prefix, best) in table.changes_since(start) {
        if new_routes.len() + withdrawn.len() >= ex.max_routes || bytes >= MAX_UPDATE_BYTES {
            exhausted = false;
            break;
        }
        last = Some(epoch);
        if !prefix.starts_with(ex.global_dot) {
            continue;
        }
        let exported = best.and_then(|b| ex.export(prefix, b));
        match exported {
            Some((tail, auth)) => {
                let mut path = Vec::with_capacity(tail.len() + 1);
                // The sender prepends its own address (docs/design.md "CCP").
                path.push(ex.our_address);
                bytes += route_len(prefix, &tail, ex.our_address);
                path.extend(tail);
                new_routes.push(Route {
                    prefix,
                    path,
                    auth,
                    props: Vec::new(),
                });
            }
            None if full => {}
            None => {
                bytes += prefix.len() + 3;
                withdrawn.push(prefix);
            }
        }
    }
    let current = table.epoch();
    let from = sp.known_epoch;
    let to = match (exhausted, last) {
        (true, _) | (false, None) => current,
        // Full table of a peer holding epoch `from`: never below `from`, or
        // the peer would take the update for an old one and ignore it.
        (false, Some(l)) => (l + 1).max(from),
    };
    let n = new_routes.len() + withdrawn.len();
    let req = RouteUpdateRequest {
        routing_table_id: ex.table_id,
        current_epoch_index: current,
        from_epoch_index: from,
        to_epoch_index: to,
        hold_down_time: ex.hold_down_ms,
        speaker: ex.our_address,
        new_routes,
        withdrawn_routes: withdrawn,
    };
    let packet = ccp::update_prepare(&req, Expiry(now_ms.saturating_add(expiry_ms)));
    sp.in_flight = Some(InFlight {
        sent_at: now_ms,
        prev_known: sp.known_epoch,
        prev_full: sp.full,
    });
    sp.known_epoch = to;
    sp.full = match (full, exhausted, last) {
        (true, false, Some(l)) => Some(l + 1),
        _ => None,
    };
    sp.last_sent = Some(now_ms);
    sp.force = false;
    (packet, n)
}

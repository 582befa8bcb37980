//! Route broadcasting: CCP, `peer.route.control` / `peer.route.update`
//! (docs/design.md "CCP": the ilp-protocol-ccp format of ilp-connector 21+).
//!
//! [`Ccp`] is a sans-IO state machine like the forwarding core: it is given
//! `now` and the bytes of requests, and returns replies and the Prepares to
//! send. It owns the forwarding table (`table.rs`: fixed routes, learned
//! routes, best-route choice, the epoch log), our speaker state per peer
//! (`speaker.rs`) and our receiver state per peer (`receiver.rs`). The core
//! feeds [`Ccp::take_learned_change`] into the routing snapshot, which
//! workers read without locking. See docs/ccp.md.

use bytes::BytesMut;
use ilpd_codec::address::{self, Address};
use ilpd_codec::error::DecodeError;
use ilpd_codec::peer::ccp::{self, Mode, RouteControlRequest, RouteUpdateRequest};
use ilpd_codec::types::Expiry;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::config::Relation;
use crate::core::{AccountId, ErrorCode};

pub mod node;
mod receiver;
mod speaker;
pub mod table;

pub use node::CcpHandle;
pub use receiver::uuid;
pub use table::{Best, Learned, NextHop, Table};

use receiver::{Receiver, Verdict};
use speaker::{Export, Speaker};

/// Heartbeat / batch interval (ilp-connector `routeBroadcastInterval`).
pub const DEFAULT_BROADCAST_INTERVAL_MS: u64 = 30_000;
/// holdDownTime we announce (ilp-connector `routeExpiry`; interledger-rs
/// uses 30 s). Must exceed the broadcast interval or routes flap.
pub const DEFAULT_HOLD_DOWN_MS: u64 = 45_000;
/// Most new routes (and, separately, withdrawals) accepted in one update.
pub const DEFAULT_MAX_ROUTES_PER_UPDATE: usize = 10_000;
/// Most entries we put in one update we send.
pub const MAX_ROUTES_PER_SENT_UPDATE: usize = 1_000;
/// After a change, the shortest wait before the next update to a peer, so
/// a burst of changes goes out as one batch (ilp-connector: 150 ms).
pub const MIN_UPDATE_GAP_MS: u64 = 100;
/// Longer paths are not accepted (nobody needs them; bounds memory).
pub const MAX_PATH_LEN: usize = 64;
/// Expiry of the CCP Prepares we send.
pub const REQUEST_EXPIRY_MS: u64 = 30_000;
/// Routes listed one by one in the metrics, at most.
pub const MAX_ROUTES_IN_METRICS: usize = 1_000;

/// Whether we send routes to an account of this relation by default.
/// Children get routes (if they ask); parents and peers too.
pub fn default_send_routes(_relation: Relation) -> bool {
    true
}

/// Whether we accept routes from an account of this relation by default:
/// a child's prefix is known locally, so children are not listened to.
pub fn default_receive_routes(relation: Relation) -> bool {
    relation != Relation::Child
}

/// A routing-table id: a UUIDv4 (version and variant bits set) from the
/// SHA-256 of `seed` (the caller mixes the clock, pid, address: no RNG
/// crate needed; it only has to differ between restarts).
pub fn new_table_id(seed: &[u8]) -> [u8; 16] {
    let h = Sha256::digest(seed);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[..16]);
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// Node-wide CCP settings.
#[derive(Clone, Debug)]
pub struct CcpConfig {
    pub node_address: Address,
    pub routing_table_id: [u8; 16],
    pub broadcast_interval_ms: u64,
    /// holdDownTime we announce.
    pub hold_down_ms: u64,
    /// Cap on the new routes (and on the withdrawals) of one received update.
    pub max_routes_per_update: usize,
}

impl CcpConfig {
    /// Defaults for everything but the address and the table id.
    pub fn new(node_address: Address, routing_table_id: [u8; 16]) -> CcpConfig {
        CcpConfig {
            node_address,
            routing_table_id,
            broadcast_interval_ms: DEFAULT_BROADCAST_INTERVAL_MS,
            hold_down_ms: DEFAULT_HOLD_DOWN_MS,
            max_routes_per_update: DEFAULT_MAX_ROUTES_PER_UPDATE,
        }
    }
}

/// Per-account CCP settings (account index = position in the list).
#[derive(Clone, Debug)]
pub struct PeerSettings {
    pub name: String,
    pub relation: Relation,
    pub send_routes: bool,
    pub receive_routes: bool,
}

impl PeerSettings {
    /// The defaults of the relation.
    pub fn new(name: &str, relation: Relation) -> PeerSettings {
        PeerSettings {
            name: name.to_string(),
            relation,
            send_routes: default_send_routes(relation),
            receive_routes: default_receive_routes(relation),
        }
    }
}

/// Which CCP request an outgoing Prepare is (its reply goes to `on_reply`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Control,
    Update,
}

/// A CCP Prepare to send to `to`.
#[derive(Debug)]
pub struct Outgoing {
    pub to: AccountId,
    pub kind: Kind,
    pub packet: BytesMut,
}

/// Why a request was rejected (a metrics label each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The account may not send us this request (send/receive_routes).
    NotAllowed,
    /// Undecodable payload, malformed prefix, fromEpoch after toEpoch.
    Malformed,
    /// More routes than `max_routes_per_update`.
    TooManyRoutes,
    /// All-zero table id, or a new table id not starting at epoch 0.
    BadTableId,
    /// fromEpoch after the epoch we hold.
    EpochGap,
}

impl RejectReason {
    pub const ALL: [RejectReason; 5] = [
        RejectReason::NotAllowed,
        RejectReason::Malformed,
        RejectReason::TooManyRoutes,
        RejectReason::BadTableId,
        RejectReason::EpochGap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotAllowed => "not_allowed",
            RejectReason::Malformed => "malformed",
            RejectReason::TooManyRoutes => "too_many_routes",
            RejectReason::BadTableId => "bad_table_id",
            RejectReason::EpochGap => "epoch_gap",
        }
    }

    /// The ILP error: F01 for bytes that do not parse or a prefix that is
    /// not an address (our rule for invalid packet content); F00 Bad Request
    /// for the rest, like ilp-connector (`BadRequestError` when not allowed)
    /// and interledger-rs (F00 for an epoch gap or an unknown table).
    pub fn code(self) -> ErrorCode {
        match self {
            RejectReason::Malformed => ErrorCode::F01_INVALID_PACKET,
            _ => ErrorCode::F00_BAD_REQUEST,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A rejected CCP request: answer with a Reject of `code` and `message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CcpReject {
    pub reason: RejectReason,
    pub code: ErrorCode,
    pub message: String,
}

impl CcpReject {
    fn new(reason: RejectReason, message: String) -> CcpReject {
        CcpReject {
            reason,
            code: reason.code(),
            message,
        }
    }
}

/// Counters, rendered by [`Ccp::render_metrics`].
#[derive(Clone, Debug, Default)]
pub struct CcpStats {
    pub controls_received: u64,
    pub controls_rejected: [u64; 5],
    pub updates_received: u64,
    pub updates_applied: u64,
    pub updates_stale: u64,
    pub updates_rejected: [u64; 5],
    /// Routes dropped because their path holds our address.
    pub routes_looped: u64,
    /// Routes dropped by the import filters (outside the global prefix,
    /// under our own address, path too long).
    pub routes_filtered: u64,
    pub updates_sent: u64,
    pub update_failures: u64,
    pub controls_sent: u64,
    pub control_failures: u64,
    /// Peers whose routes expired (no update within holdDownTime).
    pub expiries: u64,
}

impl CcpStats {
    pub fn updates_rejected(&self, r: RejectReason) -> u64 {
        self.updates_rejected[r.index()]
    }
    pub fn controls_rejected(&self, r: RejectReason) -> u64 {
        self.controls_rejected[r.index()]
    }
}

struct PeerState {
    name: String,
    up: bool,
    speaker: Option<Speaker>,
    receiver: Option<Receiver>,
}

/// The CCP state machine of one node.
pub struct Ccp {
    cfg: CcpConfig,
    /// `<scheme>.` of our address: the global prefix plus its dot.
    global_dot: Box<[u8]>,
    /// Our address plus a dot.
    own_dot: Box<[u8]>,
    relations: Vec<Relation>,
    peers: Vec<PeerState>,
    table: Table,
    stats: CcpStats,
    /// When the learned routes were last handed out for publication.
    last_publish: Option<u64>,
}

impl Ccp {
    /// `peers[i]` describes account `i`; `fixed`: our address, children's
    /// addresses, static routes (later entries win on the same prefix).
    pub fn new(cfg: CcpConfig, peers: Vec<PeerSettings>, fixed: Vec<(Address, NextHop)>) -> Ccp {
        let relations: Vec<Relation> = peers.iter().map(|p| p.relation).collect();
        let ranks = relations
            .iter()
            .map(|r| match r {
                // A receiver never connects, so never advertises.
                Relation::Child | Relation::Receiver => 0,
                Relation::Peer => 1,
                Relation::Parent => 2,
            })
            .collect();
        let table = Table::new(
            ranks,
            fixed
                .into_iter()
                .map(|(a, n)| (Box::<[u8]>::from(a.as_bytes()), n))
                .collect(),
        );
        let global_dot = format!("{}.", cfg.node_address.scheme())
            .into_bytes()
            .into();
        let own_dot = format!("{}.", cfg.node_address.as_str())
            .into_bytes()
            .into();
        Ccp {
            global_dot,
            own_dot,
            relations,
            peers: peers
                .into_iter()
                .map(|p| PeerState {
                    name: p.name,
                    up: false,
                    speaker: p.send_routes.then(Speaker::default),
                    receiver: p.receive_routes.then(Receiver::default),
                })
                .collect(),
            table,
            stats: CcpStats::default(),
            last_publish: None,
            cfg,
        }
    }

    pub fn config(&self) -> &CcpConfig {
        &self.cfg
    }

    pub fn routing_table_id(&self) -> [u8; 16] {
        self.cfg.routing_table_id
    }

    /// Our current epoch (the next change gets this index).
    pub fn epoch(&self) -> u32 {
        self.table.epoch()
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn stats(&self) -> &CcpStats {
        &self.stats
    }

    /// The epoch we hold `peer`'s table up to, if we receive from it.
    pub fn peer_epoch(&self, peer: AccountId) -> Option<u32> {
        self.peer(peer)?.receiver.as_ref().map(|r| r.epoch)
    }

    /// The epoch `peer` holds our table up to, and its mode, if we send to it.
    pub fn speaker_state(&self, peer: AccountId) -> Option<(Mode, u32)> {
        let s = self.peer(peer)?.speaker.as_ref()?;
        Some((s.mode, s.known_epoch))
    }

    fn peer(&self, a: AccountId) -> Option<&PeerState> {
        self.peers.get(a.0 as usize)
    }

    fn name(&self, a: AccountId) -> &str {
        self.peer(a).map_or("?", |p| p.name.as_str())
    }

    /// The account's first connection came up: ask it for its routes.
    pub fn on_link_up(&mut self, now_ms: u64, a: AccountId) {
        let Some(p) = self.peers.get_mut(a.0 as usize) else {
            return;
        };
        p.up = true;
        if let Some(r) = &mut p.receiver {
            // docs/ccp.md "Receiving routes": on link up, RouteControl SYNC with
            // what we hold.
            r.control_due = Some(now_ms);
            r.control_sent = None;
        }
    }

    /// The account's last connection closed: withdraw what it gave us, and
    /// forget what it knows of our table (it asks again on reconnect).
    pub fn on_link_down(&mut self, _now_ms: u64, a: AccountId) {
        let Some(p) = self.peers.get_mut(a.0 as usize) else {
            return;
        };
        p.up = false;
        if let Some(s) = &mut p.speaker {
            *s = Speaker::default();
        }
        if p.receiver.is_some() {
            p.receiver = Some(Receiver::default());
            let changed = self.table.withdraw_all(a);
            self.log_change("link down", a, changed);
        }
    }

    /// A Prepare to `peer.route.control` from `from` (its data). Ok means
    /// answer with [`ccp::ccp_response_fulfill`].
    pub fn on_route_control(
        &mut self,
        now_ms: u64,
        from: AccountId,
        data: &[u8],
    ) -> Result<(), CcpReject> {
        self.stats.controls_received += 1;
        let r = self.route_control(now_ms, from, data);
        if let Err(e) = &r {
            self.stats.controls_rejected[e.reason.index()] += 1;
            debug!(account = self.name(from), reason = e.reason.as_str(), message = %e.message, "ccp: route control rejected");
        }
        r
    }

    fn route_control(
        &mut self,
        now_ms: u64,
        from: AccountId,
        data: &[u8],
    ) -> Result<(), CcpReject> {
        let table_id = self.cfg.routing_table_id;
        let epoch = self.table.epoch();
        let base = self.table.base();
        let Some(p) = self.peers.get_mut(from.0 as usize) else {
            return Err(CcpReject::new(
                RejectReason::NotAllowed,
                "unknown account".into(),
            ));
        };
        let Some(s) = &mut p.speaker else {
            // ilp-connector's message for sendRoutes = false.
            return Err(CcpReject::new(
                RejectReason::NotAllowed,
                "rejecting route control message, we are configured not to send routes to you."
                    .into(),
            ));
        };
        let req = RouteControlRequest::decode(data).map_err(|e| {
            CcpReject::new(
                RejectReason::Malformed,
                format!("invalid route control request: {e}"),
            )
        })?;
        p.up = true;
        s.mode = req.mode;
        if req.mode == Mode::Sync {
            // ilp-connector ccp-sender: another table id means start from 0;
            // an epoch we do not hold (ahead of us, or below what the log
            // still has) gets the full table.
            let known =
                if req.last_known_routing_table_id != table_id || req.last_known_epoch > epoch {
                    0
                } else {
                    req.last_known_epoch
                };
            s.known_epoch = known;
            s.full = (known == 0 || known < base).then_some(0);
            s.in_flight = None;
            s.force = true;
            s.backoff_until = None;
        } else {
            s.force = false;
        }
        let _ = now_ms;
        debug!(account = p.name.as_str(), mode = ?req.mode, epoch = req.last_known_epoch, "ccp: route control");
        Ok(())
    }

    /// A Prepare to `peer.route.update` from `from` (its data). Ok means
    /// answer with [`ccp::ccp_response_fulfill`]; on Err nothing changed.
    pub fn on_route_update(
        &mut self,
        now_ms: u64,
        from: AccountId,
        data: &[u8],
    ) -> Result<(), CcpReject> {
        self.stats.updates_received += 1;
        let r = self.route_update(now_ms, from, data);
        if let Err(e) = &r {
            self.stats.updates_rejected[e.reason.index()] += 1;
            if matches!(e.reason, RejectReason::EpochGap | RejectReason::BadTableId) {
                // interledger-rs: tell the peer where we are so it resends
                // from there (a RouteControl with our table id and epoch).
                if let Some(rcv) = self
                    .peers
                    .get_mut(from.0 as usize)
                    .and_then(|p| p.receiver.as_mut())
                {
                    rcv.control_due = Some(now_ms);
                }
            }
            warn!(account = self.name(from), reason = e.reason.as_str(), message = %e.message, "ccp: route update rejected");
        }
        r
    }

    fn route_update(&mut self, now_ms: u64, from: AccountId, data: &[u8]) -> Result<(), CcpReject> {
        let allowed = self.peer(from).is_some_and(|p| p.receiver.is_some());
        if !allowed {
            return Err(CcpReject::new(
                RejectReason::NotAllowed,
                "rejecting route update, we are configured not to receive routes from you.".into(),
            ));
        }
        let req = RouteUpdateRequest::decode_with_limit(data, self.cfg.max_routes_per_update)
            .map_err(|e| match e {
                DecodeError::FieldTooLong("routes") => CcpReject::new(
                    RejectReason::TooManyRoutes,
                    format!(
                        "route update has more than {} routes",
                        self.cfg.max_routes_per_update
                    ),
                ),
                e => CcpReject::new(
                    RejectReason::Malformed,
                    format!("invalid route update request: {e}"),
                ),
            })?;
        let idx = from.0 as usize;
        let receiver = self.peers[idx].receiver.as_ref().ok_or_else(|| {
            CcpReject::new(RejectReason::NotAllowed, "not receiving routes".into())
        })?;
        let verdict = receiver
            .check(&req, valid_prefix)
            .map_err(|(reason, message)| CcpReject::new(reason, message))?;
        let hold = u64::from(req.hold_down_time);
        let p = &mut self.peers[idx];
        p.up = true;
        let Some(r) = p.receiver.as_mut() else {
            return Ok(());
        };
        match verdict {
            Verdict::Stale => {
                r.expires_at = Some(now_ms.saturating_add(hold));
                self.stats.updates_stale += 1;
                return Ok(());
            }
            Verdict::Apply { new_table } => {
                r.expires_at = Some(now_ms.saturating_add(hold));
                r.epoch = req.to_epoch_index;
                if new_table {
                    r.table_id = req.routing_table_id;
                }
                // A reply to a gap or a bad id: the peer got our control.
                r.control_due = None;
                if new_table {
                    let n = self.table.withdraw_all(from);
                    if n > 0 {
                        debug!(
                            account = self.name(from),
                            "ccp: peer has a new routing table"
                        );
                    }
                }
            }
        }
        self.stats.updates_applied += 1;
        let mut changed = 0;
        for w in &req.withdrawn_routes {
            changed += usize::from(self.table.withdraw(w, from));
        }
        let our = self.cfg.node_address.as_bytes();
        // Routes of one update mostly share a path: share its allocation.
        let mut last_path: Option<std::sync::Arc<[Box<[u8]>]>> = None;
        for route in &req.new_routes {
            let prefix = route.prefix;
            let importable = prefix.starts_with(&self.global_dot)
                && prefix != our
                && !prefix.starts_with(&self.own_dot)
                && route.path.len() <= MAX_PATH_LEN;
            // Path-vector loop avoidance (import filters, docs/design.md "CCP").
            let looped = route.path.contains(&our);
            if !importable || looped {
                if looped {
                    self.stats.routes_looped += 1;
                } else {
                    self.stats.routes_filtered += 1;
                }
                // The peer's new word on this prefix replaces its old one:
                // an unusable route is an implicit withdrawal.
                changed += usize::from(self.table.withdraw(prefix, from));
                continue;
            }
            let path = match &last_path {
                Some(p)
                    if p.len() == route.path.len()
                        && p.iter().zip(&route.path).all(|(a, b)| &a[..] == *b) =>
                {
                    p.clone()
                }
                _ => {
                    let p: std::sync::Arc<[Box<[u8]>]> =
                        route.path.iter().map(|h| Box::<[u8]>::from(*h)).collect();
                    last_path = Some(p.clone());
                    p
                }
            };
            let learned = Learned {
                from,
                path,
                auth: route.auth,
            };
            changed += usize::from(self.table.upsert(prefix, learned));
        }
        self.log_change("route update", from, changed);
        Ok(())
    }

    /// The reply to one of our CCP Prepares to `to` (`ok`: a Fulfill).
    /// Also call it with `ok = false` when the Prepare could not be sent or
    /// expired.
    pub fn on_reply(&mut self, now_ms: u64, to: AccountId, kind: Kind, ok: bool) {
        let interval = self.cfg.broadcast_interval_ms;
        let Some(p) = self.peers.get_mut(to.0 as usize) else {
            return;
        };
        match kind {
            Kind::Control => {
                let Some(r) = &mut p.receiver else { return };
                if r.control_sent.take().is_none() {
                    return;
                }
                if ok {
                    r.control_due = None;
                } else {
                    // ilp-connector retries a rejected control after 30 s;
                    // we after one broadcast interval.
                    self.stats.control_failures += 1;
                    r.control_due = Some(now_ms.saturating_add(interval));
                }
            }
            Kind::Update => {
                let Some(s) = &mut p.speaker else { return };
                let Some(f) = s.in_flight.take() else { return };
                if ok {
                    s.backoff_until = None;
                } else {
                    self.stats.update_failures += 1;
                    s.known_epoch = f.prev_known;
                    s.full = f.prev_full;
                    s.backoff_until = Some(now_ms.saturating_add(interval));
                }
            }
        }
    }

    /// When the speaker to a peer has its next update due, if ever.
    fn speaker_due(&self, s: &Speaker) -> Option<u64> {
        if s.mode != Mode::Sync || s.in_flight.is_some() {
            return None;
        }
        let behind = s.full.is_some() || s.known_epoch < self.table.epoch();
        let due = match (s.force, s.last_sent) {
            (true, _) | (false, None) => 0,
            (false, Some(t)) if behind => t.saturating_add(MIN_UPDATE_GAP_MS),
            (false, Some(t)) => t.saturating_add(self.cfg.broadcast_interval_ms),
        };
        Some(due.max(s.backoff_until.unwrap_or(0)))
    }

    /// Timers and sends: expires peers' routes, retries controls, emits the
    /// updates (changes in batches, heartbeats every interval) that are due.
    pub fn poll(&mut self, now_ms: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let timeout = REQUEST_EXPIRY_MS + 1_000;
        for i in 0..self.peers.len() {
            let a = AccountId(i as u32);
            // Receiver: expiry, control in flight for too long, control due.
            let mut expired = false;
            let up = self.peers[i].up;
            if let Some(r) = &mut self.peers[i].receiver {
                if r.expires_at.is_some_and(|t| now_ms >= t) {
                    r.expires_at = None;
                    r.epoch = 0;
                    r.control_due = up.then_some(now_ms);
                    expired = true;
                }
                if r.control_sent
                    .is_some_and(|t| now_ms >= t.saturating_add(timeout))
                {
                    r.control_sent = None;
                    r.control_due = Some(now_ms);
                    self.stats.control_failures += 1;
                }
                if up && r.control_sent.is_none() && r.control_due.is_some_and(|t| now_ms >= t) {
                    let req = RouteControlRequest {
                        mode: Mode::Sync,
                        last_known_routing_table_id: r.table_id,
                        last_known_epoch: r.epoch,
                        features: Vec::new(),
                    };
                    let packet = ccp::control_prepare(
                        &req,
                        Expiry(now_ms.saturating_add(REQUEST_EXPIRY_MS)),
                    );
                    r.control_due = None;
                    r.control_sent = Some(now_ms);
                    self.stats.controls_sent += 1;
                    out.push(Outgoing {
                        to: a,
                        kind: Kind::Control,
                        packet,
                    });
                }
            }
            if expired {
                self.stats.expiries += 1;
                let changed = self.table.withdraw_all(a);
                self.log_change("hold-down expiry", a, changed);
            }
            // Speaker: update in flight for too long, update due.
            let due = {
                let p = &mut self.peers[i];
                if let Some(s) = &mut p.speaker {
                    if let Some(f) = s.in_flight {
                        if now_ms >= f.sent_at.saturating_add(timeout) {
                            s.in_flight = None;
                            s.known_epoch = f.prev_known;
                            s.full = f.prev_full;
                            s.backoff_until =
                                Some(now_ms.saturating_add(self.cfg.broadcast_interval_ms));
                            self.stats.update_failures += 1;
                        }
                    }
                }
                match &self.peers[i].speaker {
                    Some(s) if up => self.speaker_due(s),
                    _ => None,
                }
            };
            if due.is_some_and(|d| now_ms >= d) {
                let ex = Export {
                    our_address: self.cfg.node_address.as_bytes(),
                    global_dot: &self.global_dot,
                    peer: a,
                    relations: &self.relations,
                    table_id: self.cfg.routing_table_id,
                    hold_down_ms: u32::try_from(self.cfg.hold_down_ms).unwrap_or(u32::MAX),
                    max_routes: MAX_ROUTES_PER_SENT_UPDATE
                        .min(self.cfg.max_routes_per_update)
                        .max(1),
                };
                if let Some(s) = &mut self.peers[i].speaker {
                    let (packet, n) =
                        speaker::build_update(&self.table, s, &ex, now_ms, REQUEST_EXPIRY_MS);
                    self.stats.updates_sent += 1;
                    if n > 0 {
                        debug!(
                            account = self.peers[i].name.as_str(),
                            routes = n,
                            "ccp: sending route update"
                        );
                    }
                    out.push(Outgoing {
                        to: a,
                        kind: Kind::Update,
                        packet,
                    });
                }
            }
        }
        out
    }

    /// Earliest `now_ms` at which [`Ccp::poll`] has work.
    pub fn next_deadline(&self) -> Option<u64> {
        let timeout = REQUEST_EXPIRY_MS + 1_000;
        let mut next: Option<u64> = None;
        let mut at = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.publish_at() {
            at(t);
        }
        for p in &self.peers {
            if let Some(r) = &p.receiver {
                if let Some(t) = r.expires_at {
                    at(t);
                }
                if let Some(t) = r.control_sent {
                    at(t.saturating_add(timeout));
                } else if p.up {
                    if let Some(t) = r.control_due {
                        at(t);
                    }
                }
            }
            if let Some(s) = &p.speaker {
                if let Some(f) = s.in_flight {
                    at(f.sent_at.saturating_add(timeout));
                }
                if p.up {
                    if let Some(t) = self.speaker_due(s) {
                        at(t);
                    }
                }
            }
        }
        next
    }

    /// When the changed learned routes are next due for publication.
    /// Publishing rebuilds the whole routing snapshot (about 0.5 µs per
    /// prefix), so a big table is published at most every `learned / 500`
    /// ms (100,000 prefixes: 200 ms), which bounds that work during a
    /// resync to about a quarter of one core; small tables go at once.
    fn publish_at(&self) -> Option<u64> {
        if !self.table.is_dirty() {
            return None;
        }
        let gap = (self.table.learned_count() / 500) as u64;
        Some(self.last_publish.map_or(0, |t| t.saturating_add(gap)))
    }

    /// The learned routes (prefix, next hop) if they changed and are due
    /// for publication into the routing snapshot at `now_ms`.
    pub fn take_learned_change(&mut self, now_ms: u64) -> Option<Vec<(Box<[u8]>, AccountId)>> {
        if self.publish_at().is_none_or(|t| now_ms < t) {
            return None;
        }
        self.table.take_dirty();
        self.last_publish = Some(now_ms);
        Some(
            self.table
                .learned_routes()
                .into_iter()
                .map(|(p, a)| (Box::<[u8]>::from(p), a))
                .collect(),
        )
    }

    /// Every prefix whose best route is learned, with its next hop.
    pub fn learned_routes(&self) -> Vec<(Address, AccountId)> {
        self.table
            .learned_routes()
            .into_iter()
            .filter_map(|(p, a)| Address::from_bytes(p).ok().map(|p| (p, a)))
            .collect()
    }

    fn log_change(&self, cause: &str, peer: AccountId, changed: usize) {
        if changed == 0 {
            return;
        }
        info!(
            cause,
            account = self.name(peer),
            changed,
            learned = self.table.learned_count(),
            epoch = self.table.epoch(),
            "ccp: routing table changed"
        );
    }

    /// Prometheus text for the CCP counters and the learned table (each
    /// learned route as a gauge, up to [`MAX_ROUTES_IN_METRICS`]).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let s = &self.stats;
        let _ = writeln!(out, "# HELP ilpd_ccp_learned_routes Prefixes whose best route was learned by CCP.\n# TYPE ilpd_ccp_learned_routes gauge\nilpd_ccp_learned_routes {}", self.table.learned_count());
        let _ = writeln!(out, "# HELP ilpd_ccp_epoch Current epoch of our routing table.\n# TYPE ilpd_ccp_epoch gauge\nilpd_ccp_epoch {}", self.table.epoch());
        let counters: [(&str, &str, u64); 12] = [
            (
                "controls_received",
                "Route control requests received.",
                s.controls_received,
            ),
            (
                "updates_received",
                "Route update requests received.",
                s.updates_received,
            ),
            (
                "updates_applied",
                "Route updates applied.",
                s.updates_applied,
            ),
            (
                "updates_stale",
                "Route updates already held (acknowledged, ignored).",
                s.updates_stale,
            ),
            (
                "routes_looped",
                "Routes dropped because their path holds our address.",
                s.routes_looped,
            ),
            (
                "routes_filtered",
                "Routes dropped by the import filters.",
                s.routes_filtered,
            ),
            ("updates_sent", "Route updates sent.", s.updates_sent),
            (
                "update_failures",
                "Route updates sent that were rejected or lost.",
                s.update_failures,
            ),
            (
                "controls_sent",
                "Route control requests sent.",
                s.controls_sent,
            ),
            (
                "control_failures",
                "Route control requests sent that were rejected or lost.",
                s.control_failures,
            ),
            (
                "expiries",
                "Peers whose routes expired after holdDownTime.",
                s.expiries,
            ),
            (
                "table_changes",
                "Epochs of our routing table (changes of a best route).",
                u64::from(self.table.epoch()),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP ilpd_ccp_{name}_total {help}\n# TYPE ilpd_ccp_{name}_total counter\nilpd_ccp_{name}_total {v}");
        }
        let _ = writeln!(out, "# HELP ilpd_ccp_rejected_total CCP requests rejected, by request and reason.\n# TYPE ilpd_ccp_rejected_total counter");
        for r in RejectReason::ALL {
            let _ = writeln!(
                out,
                "ilpd_ccp_rejected_total{{request=\"update\",reason=\"{}\"}} {}",
                r.as_str(),
                s.updates_rejected(r)
            );
            let _ = writeln!(
                out,
                "ilpd_ccp_rejected_total{{request=\"control\",reason=\"{}\"}} {}",
                r.as_str(),
                s.controls_rejected(r)
            );
        }
        let mut routes = self.table.learned_detail();
        routes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let _ = writeln!(out, "# HELP ilpd_ccp_route A learned route in use: prefix, next hop account, path length.\n# TYPE ilpd_ccp_route gauge");
        for (prefix, l) in routes.iter().take(MAX_ROUTES_IN_METRICS) {
            // Prefixes are validated addresses: no quotes or backslashes.
            let _ = writeln!(
                out,
                "ilpd_ccp_route{{prefix=\"{}\",next_hop=\"{}\",path_len=\"{}\"}} 1",
                String::from_utf8_lossy(prefix),
                self.name(l.from),
                l.path.len()
            );
        }
    }
}

/// A prefix we accept in an update: an ILP address, or a bare scheme such
/// as `g` (a global prefix: filtered later, not malformed).
fn valid_prefix(p: &[u8]) -> bool {
    if address::validate(p).is_ok() {
        return true;
    }
    !p.is_empty() && !p.contains(&b'.') && p.len() < 8 && {
        let mut probe = p.to_vec();
        probe.extend_from_slice(b".x");
        address::validate(&probe).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_id_is_uuid_v4() {
        let a = new_table_id(b"one");
        let b = new_table_id(b"two");
        assert_ne!(a, b);
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] & 0xc0, 0x80);
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix(b"g.a"));
        assert!(valid_prefix(b"g"));
        assert!(valid_prefix(b"test"));
        assert!(!valid_prefix(b"nope"));
        assert!(!valid_prefix(b"g..a"));
        assert!(!valid_prefix(b""));
    }
}

//! A sans-IO STREAM receiver (RFC 29 "Life of a Connection"): the caller
//! hands it each Prepare addressed to one of its connections, with `now`,
//! and gets back what to answer and how much to credit.
//!
//! Connections are not registered in advance. An address is
//! `receiver address ‖ "." ‖ token` (see [`crate::spsp`]); the token
//! authenticates under the server secret and yields the shared secret, so
//! any address this secret ever issued works, across restarts. What is
//! kept per connection (keys, stream totals, the sender's address and
//! asset) lives in a bounded table: entries idle for `idle_timeout_ms`
//! go first, and when the table is full the least recently used eighth is
//! dropped. A dropped connection is re-derived from its token on its next
//! packet; only its running totals (and so its receipts' totals) restart.
//!
//! Answers (docs/stream.md "Receiver answers"):
//!
//! | case | answer |
//! |---|---|
//! | expired on arrival | R00, no data |
//! | destination is not `address.token…`, or the token does not authenticate | F02, no data |
//! | `data` does not decrypt, or is not a STREAM Prepare packet | F06, no data (RFC 29 "Matching Packets to Connections") |
//! | amount below the packet's minimum | F99 + encrypted reply carrying the amount that arrived |
//! | condition is not the one derived from `data` (a quote/probe) | F99 + encrypted reply |
//! | stream over its receive max, closed stream, bad stream id, closed connection | F99 + encrypted reply with the frame that says why |
//! | otherwise | Fulfill + encrypted reply; the whole amount is credited |
//!
//! The F99-with-reply cases are what ilp-protocol-stream answers too; a
//! wrong condition is F99 there as well, not F05 (F05 is the connector's
//! code for a bad *fulfillment*, RFC 27). Unlike ilp-protocol-stream, a
//! first packet that does not decrypt is F06 here, as RFC 29 says, not F02.

use std::collections::HashMap;

use bytes::BytesMut;
use ilpd_codec::ilp::{FulfillBuilder, Prepare, RejectBuilder};
use ilpd_codec::oer;
use ilpd_codec::{ErrorCode, Expiry, Fulfillment, PacketType};

use crate::crypto::ConnectionKeys;
use crate::packet::{Frame, Packet, StreamErrorCode};
use crate::receipt::{self, ReceiptParams};
use crate::rng::{OsRandom, RandomSource};
use crate::spsp::{decode_token, ServerSecret};

/// RFC 29 "Maximum Number of Packets Per Connection": close at 2^31.
const MAX_PACKETS_PER_CONNECTION: u64 = 1 << 31;

/// Settings of one receiver.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// The receiver's ILP address; connections are below it.
    pub address: String,
    /// Sent to senders in `ConnectionAssetDetails`.
    pub asset_code: String,
    pub asset_scale: u8,
    /// Most a stream may receive in total (`StreamMaxMoney`); `u64::MAX`
    /// for no limit. A stream that reaches it is closed.
    pub stream_receive_max: u64,
    /// Highest stream id a sender may open (`ConnectionMaxStreamId`).
    pub max_stream_id: u64,
    /// Connections kept in memory at most.
    pub max_connections: usize,
    /// A connection with no packet for this long may be dropped.
    pub idle_timeout_ms: u64,
}

impl ReceiverConfig {
    pub fn new(address: impl Into<String>, asset_code: impl Into<String>, asset_scale: u8) -> Self {
        ReceiverConfig {
            address: address.into(),
            asset_code: asset_code.into(),
            asset_scale,
            stream_receive_max: u64::MAX,
            // ilp-protocol-stream's default: 10 streams each way.
            max_stream_id: 20,
            max_connections: 100_000,
            idle_timeout_ms: 60_000,
        }
    }
}

/// The fields of an incoming Prepare the receiver reads.
#[derive(Debug, Clone, Copy)]
pub struct IncomingPrepare<'a> {
    pub destination: &'a [u8],
    pub amount: u64,
    pub expires_at: Expiry,
    pub execution_condition: &'a [u8; 32],
    pub data: &'a [u8],
}

impl<'a> IncomingPrepare<'a> {
    pub fn from_prepare<T: AsRef<[u8]>>(p: &'a Prepare<T>) -> Self {
        IncomingPrepare {
            destination: p.destination(),
            amount: p.amount(),
            expires_at: p.expires_at(),
            execution_condition: p.execution_condition(),
            data: p.data(),
        }
    }
}

/// What to answer. The reply's `data` was written to the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fulfill with this fulfillment; credit `credited` (the Prepare's
    /// whole amount) to the receiving account.
    Fulfill {
        fulfillment: Fulfillment,
        credited: u64,
    },
    /// Reject with this code; nothing is credited.
    Reject { code: ErrorCode },
}

impl Outcome {
    /// Amount to credit: the Prepare amount on a Fulfill, else 0.
    pub fn credited(&self) -> u64 {
        match self {
            Outcome::Fulfill { credited, .. } => *credited,
            Outcome::Reject { .. } => 0,
        }
    }

    /// The whole ILP reply packet, `data` being what
    /// [`Receiver::handle_prepare`] wrote. Rejects carry an empty message
    /// (as ilp-protocol-stream: nothing that tells implementations apart).
    pub fn to_ilp(&self, data: &[u8], triggered_by: &[u8]) -> BytesMut {
        match self {
            Outcome::Fulfill { fulfillment, .. } => FulfillBuilder {
                fulfillment: &fulfillment.0,
                data,
            }
            .build(),
            Outcome::Reject { code } => RejectBuilder {
                code: *code,
                triggered_by,
                message: b"",
                data,
            }
            .build(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct StreamState {
    total_received: u64,
    closed: bool,
}

#[derive(Debug)]
struct Connection {
    keys: ConnectionKeys,
    receipt: Option<ReceiptParams>,
    connection_tag: Box<[u8]>,
    last_seen: u64,
    packets: u64,
    /// ConnectionAssetDetails has been sent at least once.
    told_asset: bool,
    sender_address: Option<Box<[u8]>>,
    sender_asset: Option<(Box<[u8]>, u8)>,
    /// Closed by either side; every later packet gets F99 + ConnectionClose.
    closed: bool,
    /// Sorted by id; at most `max_stream_id / 2 + 1` entries.
    streams: Vec<(u64, StreamState)>,
    total_received: u64,
}

impl Connection {
    fn has_stream(&self, id: u64) -> bool {
        self.streams.binary_search_by_key(&id, |s| s.0).is_ok()
    }

    fn stream(&mut self, id: u64) -> Option<&mut StreamState> {
        match self.streams.binary_search_by_key(&id, |s| s.0) {
            Ok(i) => Some(&mut self.streams[i].1),
            Err(_) => None,
        }
    }
}

/// Public view of one connection's state, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSummary {
    pub connection_tag: Vec<u8>,
    pub total_received: u64,
    pub sender_address: Option<Vec<u8>>,
    pub closed: bool,
    pub streams: Vec<(u64, u64)>,
}

/// Response frames being assembled: contents written as they come, the
/// count kept apart (it goes in the header).
#[derive(Default)]
struct ReplyFrames {
    buf: Vec<u8>,
    count: u64,
    /// The plaintext reply (header then `buf`), reused across packets.
    body: Vec<u8>,
}

impl ReplyFrames {
    fn push(&mut self, f: Frame<'_>) {
        f.write_to(&mut self.buf);
        self.count += 1;
    }
    fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
    }
}

/// Why a packet cannot be fulfilled after it decrypted: answered with F99
/// and the frames gathered so far.
struct Refuse;

/// The STREAM receiver. Not `Sync`: give each worker its own, or route
/// every connection's packets to one (by token).
pub struct Receiver<R: RandomSource = OsRandom> {
    config: ReceiverConfig,
    secret: ServerSecret,
    rng: R,
    connections: HashMap<Box<[u8]>, Connection>,
    plain: Vec<u8>,
    reply: ReplyFrames,
    shares: Vec<(u64, u64, u64)>,
}

impl Receiver<OsRandom> {
    pub fn new(config: ReceiverConfig, secret: ServerSecret) -> Self {
        Self::with_rng(config, secret, OsRandom::new())
    }
}

impl<R: RandomSource> Receiver<R> {
    pub fn with_rng(config: ReceiverConfig, secret: ServerSecret, rng: R) -> Self {
        Receiver {
            config,
            secret,
            rng,
            connections: HashMap::new(),
            plain: Vec::with_capacity(1024),
            reply: ReplyFrames::default(),
            shares: Vec::new(),
        }
    }

    pub fn config(&self) -> &ReceiverConfig {
        &self.config
    }

    pub fn server_secret(&self) -> &ServerSecret {
        &self.secret
    }

    /// Connections held in memory.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// The state of the connection whose token is `token` (the address
    /// segment, base64url).
    pub fn connection(&self, token: &[u8]) -> Option<ConnectionSummary> {
        self.connections.get(token).map(|c| ConnectionSummary {
            connection_tag: c.connection_tag.to_vec(),
            total_received: c.total_received,
            sender_address: c.sender_address.as_ref().map(|a| a.to_vec()),
            closed: c.closed,
            streams: c
                .streams
                .iter()
                .map(|(id, s)| (*id, s.total_received))
                .collect(),
        })
    }

    /// Drops connections idle for `idle_timeout_ms` (call from a timer).
    pub fn expire(&mut self, now_ms: u64) {
        let idle = self.config.idle_timeout_ms;
        self.connections
            .retain(|_, c| now_ms.saturating_sub(c.last_seen) < idle);
    }

    /// Handles a whole ILP Prepare view.
    pub fn handle_ilp_prepare<T: AsRef<[u8]>>(
        &mut self,
        now_ms: u64,
        prepare: &Prepare<T>,
        reply_data: &mut Vec<u8>,
    ) -> Outcome {
        self.handle_prepare(now_ms, &IncomingPrepare::from_prepare(prepare), reply_data)
    }

    /// Decides the answer to one Prepare. `reply_data` is cleared and
    /// receives the reply's `data` (empty for R00/F02/F06).
    pub fn handle_prepare(
        &mut self,
        now_ms: u64,
        p: &IncomingPrepare<'_>,
        reply_data: &mut Vec<u8>,
    ) -> Outcome {
        reply_data.clear();
        if p.expires_at.0 <= now_ms {
            return reject(ErrorCode::R00_TRANSFER_TIMED_OUT);
        }
        let Some(token) = token_segment(&self.config.address, p.destination) else {
            return reject(ErrorCode::F02_UNREACHABLE);
        };

        // Find or derive the connection, and decrypt.
        let mut plain = std::mem::take(&mut self.plain);
        let known = self.connections.contains_key(token);
        let fresh = if known {
            None
        } else {
            let Some((conn, ok)) = self.derive(token, p.data, &mut plain, now_ms) else {
                self.plain = plain;
                return reject(ErrorCode::F02_UNREACHABLE);
            };
            if !ok {
                self.plain = plain;
                return reject(ErrorCode::F06_UNEXPECTED_PAYMENT);
            }
            Some(conn)
        };
        if let Some(conn) = fresh {
            self.make_room(now_ms);
            self.connections.insert(token.into(), conn);
        }
        let outcome = match self.connections.get_mut(token) {
            Some(conn) => {
                if known && conn.keys.decrypt(p.data, &mut plain).is_err() {
                    reject(ErrorCode::F06_UNEXPECTED_PAYMENT)
                } else {
                    handle_packet(
                        &self.config,
                        &mut self.rng,
                        &mut self.reply,
                        &mut self.shares,
                        conn,
                        now_ms,
                        p,
                        &plain,
                        reply_data,
                    )
                }
            }
            None => reject(ErrorCode::F02_UNREACHABLE),
        };
        self.plain = plain;
        outcome
    }

    /// A new connection from its token; `Some((conn, decrypted))`, `None`
    /// when the token is not ours.
    fn derive(
        &self,
        token: &[u8],
        data: &[u8],
        plain: &mut Vec<u8>,
        now_ms: u64,
    ) -> Option<(Connection, bool)> {
        let raw = decode_token(token).ok()?;
        let contents = self.secret.open_token(&raw).ok()?;
        let keys = ConnectionKeys::new(&self.secret.shared_secret(&raw));
        let ok = keys.decrypt(data, plain).is_ok();
        Some((
            Connection {
                keys,
                receipt: contents.receipt,
                connection_tag: contents.connection_tag.into_boxed_slice(),
                last_seen: now_ms,
                packets: 0,
                told_asset: false,
                sender_address: None,
                sender_asset: None,
                closed: false,
                streams: Vec::new(),
                total_received: 0,
            },
            ok,
        ))
    }

    /// Makes space for one more connection: idle ones first, then the
    /// least recently used eighth, so a full table costs one pass per
    /// `max_connections / 8` new connections.
    fn make_room(&mut self, now_ms: u64) {
        let max = self.config.max_connections.max(1);
        if self.connections.len() < max {
            return;
        }
        self.expire(now_ms);
        if self.connections.len() < max {
            return;
        }
        let mut seen: Vec<u64> = self.connections.values().map(|c| c.last_seen).collect();
        let k = (seen.len() / 8).max(1).min(seen.len() - 1);
        let (_, cut, _) = seen.select_nth_unstable(k);
        let cut = *cut;
        let mut dropped = 0;
        self.connections.retain(|_, c| {
            if dropped < k && c.last_seen <= cut {
                dropped += 1;
                false
            } else {
                true
            }
        });
    }
}

fn reject(code: ErrorCode) -> Outcome {
    Outcome::Reject { code }
}

/// The token segment of `destination` if it is `address.token[.more]`.
fn token_segment<'a>(address: &str, destination: &'a [u8]) -> Option<&'a [u8]> {
    let rest = destination.strip_prefix(address.as_bytes())?;
    let rest = rest.strip_prefix(b".")?;
    let end = rest.iter().position(|&b| b == b'.').unwrap_or(rest.len());
    let seg = &rest[..end];
    (!seg.is_empty()).then_some(seg)
}

/// Everything after decryption. Writes the encrypted reply into
/// `reply_data` unless the answer is F06.
#[allow(clippy::too_many_arguments)]
fn handle_packet<R: RandomSource>(
    cfg: &ReceiverConfig,
    rng: &mut R,
    reply: &mut ReplyFrames,
    shares: &mut Vec<(u64, u64, u64)>,
    conn: &mut Connection,
    now_ms: u64,
    p: &IncomingPrepare<'_>,
    plain: &[u8],
    reply_data: &mut Vec<u8>,
) -> Outcome {
    let Ok(packet) = Packet::decode(plain) else {
        return reject(ErrorCode::F06_UNEXPECTED_PAYMENT);
    };
    if packet.packet_type != PacketType::Prepare {
        return reject(ErrorCode::F06_UNEXPECTED_PAYMENT);
    }
    conn.last_seen = now_ms;
    conn.packets += 1;
    reply.clear();

    let result = decide(cfg, reply, shares, conn, p, &packet);
    let (ty, outcome) = match result {
        Ok(fulfillment) => (
            PacketType::Fulfill,
            Outcome::Fulfill {
                fulfillment,
                credited: p.amount,
            },
        ),
        Err(Refuse) => (PacketType::Reject, reject(ErrorCode::F99_APPLICATION_ERROR)),
    };

    // Reply packet: same sequence, the amount that arrived.
    let body = &mut reply.body;
    body.clear();
    body.push(crate::packet::VERSION);
    body.push(ty as u8);
    oer::put_var_uint(body, packet.sequence);
    oer::put_var_uint(body, p.amount);
    oer::put_var_uint(body, reply.count);
    body.extend_from_slice(&reply.buf);
    if conn.keys.encrypt(rng, body, reply_data).is_err() {
        // No randomness: nothing can be sent safely.
        reply_data.clear();
        return reject(ErrorCode::T00_INTERNAL_ERROR);
    }
    outcome
}

/// Applies the packet to the connection. `Ok(fulfillment)` when it is
/// fulfilled (streams credited), `Err(Refuse)` for F99; `reply` holds the
/// frames to send either way.
fn decide(
    cfg: &ReceiverConfig,
    reply: &mut ReplyFrames,
    shares: &mut Vec<(u64, u64, u64)>,
    conn: &mut Connection,
    p: &IncomingPrepare<'_>,
    packet: &Packet<'_>,
) -> Result<Fulfillment, Refuse> {
    let mut close_after = false;
    let r = apply(cfg, reply, shares, conn, p, packet, &mut close_after);
    if close_after {
        // The sender closed (RFC 29 "Closing Connections"), whether or not
        // this packet is fulfilled (ilp-protocol-stream closes with an
        // unfulfillable one): acknowledge.
        close(reply, conn, StreamErrorCode::NO_ERROR, b"");
    }
    r
}

fn apply(
    cfg: &ReceiverConfig,
    reply: &mut ReplyFrames,
    shares: &mut Vec<(u64, u64, u64)>,
    conn: &mut Connection,
    p: &IncomingPrepare<'_>,
    packet: &Packet<'_>,
    close_after: &mut bool,
) -> Result<Fulfillment, Refuse> {
    // Asset details on the connection's first packet (RFC 29 "Connection
    // Asset Details": SHOULD emit), and again after a new address.
    let mut tell_asset = !conn.told_asset;
    let was_closed = conn.closed;
    let mut refuse = false;

    // Control frames and stream opening.
    for f in packet.frames() {
        match f {
            Frame::ConnectionNewAddress { source_account } => {
                conn.sender_address = Some(source_account.into());
                tell_asset = true;
            }
            Frame::ConnectionAssetDetails {
                source_asset_code,
                source_asset_scale,
            } => match &conn.sender_asset {
                Some((code, scale))
                    if (&code[..], *scale) != (source_asset_code, source_asset_scale) =>
                {
                    // RFC 29: asset details MUST NOT change.
                    close(
                        reply,
                        conn,
                        StreamErrorCode::PROTOCOL_VIOLATION,
                        b"asset changed",
                    );
                    refuse = true;
                }
                Some(_) => {}
                None => {
                    conn.sender_asset = Some((source_asset_code.into(), source_asset_scale));
                }
            },
            Frame::ConnectionClose { .. } => *close_after = true,
            Frame::StreamClose { stream_id, .. } => {
                if let Some(s) = conn.stream(stream_id) {
                    if !s.closed {
                        s.closed = true;
                        reply.push(Frame::StreamClose {
                            stream_id,
                            code: StreamErrorCode::NO_ERROR,
                            message: b"",
                        });
                    }
                }
            }
            Frame::StreamMoney { stream_id, .. }
            | Frame::StreamData { stream_id, .. }
            | Frame::StreamMaxMoney { stream_id, .. }
            | Frame::StreamMaxData { stream_id, .. }
                if !was_closed && !conn.has_stream(stream_id) =>
            {
                if stream_id % 2 == 0 {
                    // RFC 29 "Opening New Streams": client streams are odd.
                    close(
                        reply,
                        conn,
                        StreamErrorCode::PROTOCOL_VIOLATION,
                        b"even stream id",
                    );
                    refuse = true;
                } else if stream_id > cfg.max_stream_id {
                    close(
                        reply,
                        conn,
                        StreamErrorCode::STREAM_ID_ERROR,
                        b"stream id over max",
                    );
                    refuse = true;
                } else {
                    let at = conn.streams.partition_point(|s| s.0 < stream_id);
                    conn.streams.insert(
                        at,
                        (
                            stream_id,
                            StreamState {
                                total_received: 0,
                                closed: false,
                            },
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    if tell_asset {
        reply.push(Frame::ConnectionMaxStreamId {
            max_stream_id: cfg.max_stream_id,
        });
        reply.push(Frame::ConnectionAssetDetails {
            source_asset_code: cfg.asset_code.as_bytes(),
            source_asset_scale: cfg.asset_scale,
        });
        conn.told_asset = true;
    }
    if was_closed || conn.packets > MAX_PACKETS_PER_CONNECTION {
        conn.closed = true;
        reply.push(Frame::ConnectionClose {
            code: StreamErrorCode::NO_ERROR,
            message: b"",
        });
        return Err(Refuse);
    }
    if refuse {
        return Err(Refuse);
    }
    if p.amount < packet.prepare_amount {
        return Err(Refuse);
    }
    let fulfillment = conn.keys.fulfillment(p.data);
    if fulfillment.condition().0 != *p.execution_condition {
        return Err(Refuse);
    }

    // Split the amount by shares (RFC 29 "StreamMoney Frame"): floor, the
    // remainder to the lowest-numbered stream that can take it.
    shares.clear();
    let mut total_shares: u128 = 0;
    for f in packet.frames() {
        if let Frame::StreamMoney {
            stream_id,
            shares: n,
        } = f
        {
            if n == 0 {
                continue;
            }
            total_shares += n as u128;
            match shares.iter_mut().find(|s| s.0 == stream_id) {
                Some(s) => s.1 = s.1.saturating_add(n),
                None => shares.push((stream_id, n, 0)),
            }
        }
    }
    if total_shares > 0 {
        shares.sort_unstable_by_key(|s| s.0);
        let mut given: u64 = 0;
        for s in shares.iter_mut() {
            let part = (p.amount as u128 * s.1 as u128).checked_div(total_shares);
            s.2 = part.unwrap_or(0) as u64;
            given += s.2;
        }
        let mut rest = p.amount - given;
        for s in shares.iter_mut() {
            if rest == 0 {
                break;
            }
            let room = match conn.stream(s.0) {
                Some(st) if !st.closed => cfg
                    .stream_receive_max
                    .saturating_sub(st.total_received)
                    .saturating_sub(s.2),
                _ => 0,
            };
            let add = room.min(rest);
            s.2 += add;
            rest -= add;
        }
        // Any remainder no stream had room for lands on the first.
        if rest > 0 {
            shares[0].2 += rest;
        }
        let mut over = false;
        for &(id, _, amount) in shares.iter() {
            let Some(st) = conn.stream(id) else {
                over = true;
                continue;
            };
            if st.closed {
                reply.push(Frame::StreamClose {
                    stream_id: id,
                    code: StreamErrorCode::STREAM_STATE_ERROR,
                    message: b"stream closed",
                });
                over = true;
            } else if amount > cfg.stream_receive_max.saturating_sub(st.total_received) {
                reply.push(Frame::StreamMaxMoney {
                    stream_id: id,
                    receive_max: cfg.stream_receive_max,
                    total_received: st.total_received,
                });
                over = true;
            }
        }
        if over {
            return Err(Refuse);
        }
    }

    // Fulfilled: credit, then tell each stream in the packet where it is.
    conn.total_received = conn.total_received.saturating_add(p.amount);
    for &(id, _, amount) in shares.iter() {
        if let Some(st) = conn.stream(id) {
            st.total_received += amount;
        }
    }
    let mut reported: Vec<u64> = Vec::new();
    for f in packet.frames() {
        let Some(id) = f.stream_id() else { continue };
        if !matches!(f, Frame::StreamMoney { .. } | Frame::StreamMaxMoney { .. })
            || reported.contains(&id)
        {
            continue;
        }
        reported.push(id);
        let Some(st) = conn.stream(id) else { continue };
        let total = st.total_received;
        if st.closed {
            continue;
        }
        if total >= cfg.stream_receive_max {
            // RFC 29 "Closing Streams": the stream is full; close it.
            st.closed = true;
            reply.push(Frame::StreamClose {
                stream_id: id,
                code: StreamErrorCode::NO_ERROR,
                message: b"",
            });
        } else {
            reply.push(Frame::StreamMaxMoney {
                stream_id: id,
                receive_max: cfg.stream_receive_max,
                total_received: total,
            });
        }
    }
    // RFC 39: a receipt for every stream that received money.
    if let Some(params) = &conn.receipt {
        for &(id, _, amount) in shares.iter() {
            if amount == 0 {
                continue;
            }
            let total = conn
                .streams
                .iter()
                .find(|s| s.0 == id)
                .map_or(0, |s| s.1.total_received);
            if let Some(r) = receipt::create(params, id, total) {
                reply.push(Frame::StreamReceipt {
                    stream_id: id,
                    receipt: &r,
                });
            }
        }
    }
    Ok(fulfillment)
}

fn close(reply: &mut ReplyFrames, conn: &mut Connection, code: StreamErrorCode, why: &[u8]) {
    if !conn.closed {
        conn.closed = true;
        reply.push(Frame::ConnectionClose { code, message: why });
    }
}

//! Packets the connector answers itself (docs/design.md "Peer protocols"): `peer.config`
//! (IL-DCP), `peer.balance`, `peer.route.*` (CCP, handed to `crate::ccp`),
//! and echo (a ping to our own address). Other `peer.*` destinations get
//! F02 (docs/design.md "Unknown peer protocols"). None of them is ever forwarded.

use bytes::BytesMut;
use ilpd_codec::ilp::{Prepare, PrepareBuilder};
use ilpd_codec::peer::{self, balance, ccp, echo, ildcp, PeerProtocol};
use ilpd_codec::types::PEER_PROTOCOL_CONDITION;

use super::forward::Core;
use super::{Action, ErrorCode, Now, ReplyTo};
use crate::config::Relation;

impl Core {
    /// A Prepare to `peer.*` from an authenticated peer.
    pub(super) fn peer_protocol(
        &mut self,
        now: Now,
        from: ReplyTo,
        p: Prepare<BytesMut>,
        out: &mut Vec<Action>,
    ) {
        // ilp-connector peer-protocol controller: wrong condition → F01.
        if p.execution_condition() != &PEER_PROTOCOL_CONDITION.0 {
            return self.reject(
                from,
                ErrorCode::F01_INVALID_PACKET,
                "peer protocol requests must use the peer-protocol condition (SHA-256 of 32 zero bytes)",
                &[],
                out,
            );
        }
        let shared = &*self.shared;
        let idx = from.account.0 as usize;
        let cfg = &shared.configs[idx];
        let amount = p.amount();
        let answer = match peer::classify(p.destination()) {
            // RFC 31: the parent tells a child its address and the link's asset.
            Some(PeerProtocol::Config) => match (cfg.relation, shared.addresses[idx].as_ref()) {
                (Relation::Child, Some(addr)) => {
                    Ok(ildcp::response_fulfill(&ildcp::IldcpResponse {
                        client_address: addr.as_bytes(),
                        asset_scale: cfg.asset_scale,
                        asset_code: cfg.asset_code.as_bytes(),
                    }))
                }
                _ => Err((
                    ErrorCode::F02_UNREACHABLE,
                    "peer.config (IL-DCP) is only answered for child accounts".to_string(),
                )),
            },
            Some(PeerProtocol::Balance) => Ok(BytesMut::new()), // built after settling, below
            // docs/design.md "CCP" and docs/ccp.md: a Fulfill with 32 zero
            // bytes, or a Reject whose code says why (counted by CCP).
            Some(kind @ (PeerProtocol::RouteControl | PeerProtocol::RouteUpdate)) => {
                let (account, data) = (from.account, p.data());
                shared
                    .ccp()
                    .call(
                        now.unix_ms,
                        |c| match kind {
                            PeerProtocol::RouteControl => {
                                c.on_route_control(now.unix_ms, account, data)
                            }
                            _ => c.on_route_update(now.unix_ms, account, data),
                        },
                        |r| shared.publish_learned(r),
                    )
                    .map(|()| ccp::ccp_response_fulfill())
                    .map_err(|e| (e.code, e.message))
            }
            _ => Err((
                ErrorCode::F02_UNREACHABLE,
                format!("unknown peer protocol {}", p.destination_str()),
            )),
        };
        let packet = match answer {
            Ok(pkt) => pkt,
            Err((code, msg)) => return self.reject(from, code, &msg, &[], out),
        };
        // A peer-protocol request normally carries 0; if not, the peer pays
        // for the answer like for any fulfilled packet (docs/design.md
        // "Zero-amount packets": amount-0 packets skip balance logic; others
        // do not).
        if amount > 0 {
            let state = &shared.states[idx];
            if !state.reserve_incoming(amount) {
                let msg = format!(
                    "amount {amount} would exceed the maximum balance of account {}",
                    cfg.id
                );
                return self.reject(from, ErrorCode::T04_INSUFFICIENT_LIQUIDITY, &msg, &[], out);
            }
            state.settle_incoming(amount);
        }
        let packet = if peer::classify(p.destination()) == Some(PeerProtocol::Balance) {
            // docs/design.md "Balance sign": the requester's own balance from
            // its point of view, i.e. the negation of what it owes us
            // (docs/design.md "peer.balance").
            let ours = shared.states[idx].balance();
            balance::balance_fulfill(ours.checked_neg().unwrap_or(i64::MAX))
        } else {
            packet
        };
        self.metrics().fulfill_sent(from.account.0);
        out.push(Action::Reply { to: from, packet });
    }

    /// A Prepare whose destination is exactly our address: echo
    /// (docs/design.md "Echo") if its data starts with the echo prefix, else F02.
    pub(super) fn addressed_to_us(
        &mut self,
        now: Now,
        from: ReplyTo,
        p: Prepare<BytesMut>,
        out: &mut Vec<Action>,
    ) {
        if !echo::is_echo(p.data()) {
            return self.reject(
                from,
                ErrorCode::F02_UNREACHABLE,
                "no receiver at the connector's own address",
                &[],
                out,
            );
        }
        let source = match echo::parse(p.data()) {
            Ok(echo::EchoData::Ping { source_address }) => source_address,
            Ok(echo::EchoData::Pong) => {
                return self.reject(
                    from,
                    ErrorCode::F01_INVALID_PACKET,
                    "unexpected echo pong",
                    &[],
                    out,
                );
            }
            Err(e) => {
                let msg = format!("invalid echo ping: {e}");
                return self.reject(from, ErrorCode::F01_INVALID_PACKET, &msg, &[], out);
            }
        };
        // RFC 15 "Allocation Schemes", RFC 34 "Special Addresses": a pong to
        // `peer.*` would be forwarded (on_prepare's local handling is bypassed
        // here), so refuse it.
        if source.starts_with(peer::PEER_SCHEME) {
            return self.reject(
                from,
                ErrorCode::F02_UNREACHABLE,
                "an echo pong is never sent to a peer.* address",
                &[],
                out,
            );
        }
        // The pong: same amount, expiry and condition, to the ping's source;
        // it goes through the normal path (route, rate, expiry shortening),
        // and its reply answers the ping (ilp-connector v23, interledger-rs).
        let pong = PrepareBuilder {
            amount: p.amount(),
            expires_at: p.expires_at(),
            execution_condition: p.execution_condition(),
            destination: source,
            data: &echo::pong_data(),
        }
        .build();
        match Prepare::new_checked(pong) {
            Ok(pong) => self.forward(now, from, pong, out),
            Err(e) => {
                let msg = format!("cannot answer echo ping: {e}");
                self.reject(from, ErrorCode::F01_INVALID_PACKET, &msg, &[], out)
            }
        }
    }
}

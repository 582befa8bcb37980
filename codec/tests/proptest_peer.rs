//! Property tests for the peer protocols: random valid messages round-trip
//! byte-for-byte, and random or mutated bytes never make a decoder panic.

use ilpd_codec::ilp::Prepare;
use ilpd_codec::peer::balance::{balance_fulfill, parse_balance_fulfill};
use ilpd_codec::peer::ccp::{
    control_prepare, update_prepare, Mode, Route, RouteControlRequest, RouteProp,
    RouteUpdateRequest,
};
use ilpd_codec::peer::echo::{self, EchoData};
use ilpd_codec::peer::ildcp::{self, IldcpResponse};
use ilpd_codec::peer::{
    check_request, classify, is_peer_protocol_request, PEER_ROUTE_CONTROL, PEER_ROUTE_UPDATE,
};
use ilpd_codec::types::Expiry;
use proptest::prelude::*;

/// A valid ILP address (RFC 15), sometimes longer than 127 bytes so the
/// long-form length prefix is exercised.
fn address() -> impl Strategy<Value = Vec<u8>> {
    let scheme = prop::sample::select(vec![
        "g", "private", "example", "peer", "self", "test", "test1", "test2", "test3", "local",
    ]);
    let segments = prop::collection::vec("[a-zA-Z0-9_~-]{1,40}", 1..6);
    (scheme, segments).prop_map(|(s, segs)| {
        let mut a = s.to_string();
        for seg in segs {
            a.push('.');
            a.push_str(&seg);
        }
        a.into_bytes()
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

#[derive(Debug, Clone)]
struct OwnedProp {
    flags: [bool; 4],
    id: u16,
    value: Vec<u8>,
}

#[derive(Debug, Clone)]
struct OwnedRoute {
    prefix: Vec<u8>,
    path: Vec<Vec<u8>>,
    auth: [u8; 32],
    props: Vec<OwnedProp>,
}

#[derive(Debug, Clone)]
struct OwnedUpdate {
    table: [u8; 16],
    epochs: [u32; 4],
    speaker: Vec<u8>,
    routes: Vec<OwnedRoute>,
    withdrawn: Vec<Vec<u8>>,
}

fn prop_strategy() -> impl Strategy<Value = OwnedProp> {
    (any::<[bool; 4]>(), any::<u16>(), bytes(40)).prop_map(|(flags, id, value)| OwnedProp {
        flags,
        id,
        value,
    })
}

fn route_strategy() -> impl Strategy<Value = OwnedRoute> {
    (
        bytes(200),
        prop::collection::vec(bytes(30), 0..4),
        any::<[u8; 32]>(),
        prop::collection::vec(prop_strategy(), 0..3),
    )
        .prop_map(|(prefix, path, auth, props)| OwnedRoute {
            prefix,
            path,
            auth,
            props,
        })
}

fn update_strategy() -> impl Strategy<Value = OwnedUpdate> {
    (
        any::<[u8; 16]>(),
        any::<[u32; 4]>(),
        address(),
        prop::collection::vec(route_strategy(), 0..5),
        prop::collection::vec(bytes(30), 0..5),
    )
        .prop_map(|(table, epochs, speaker, routes, withdrawn)| OwnedUpdate {
            table,
            epochs,
            speaker,
            routes,
            withdrawn,
        })
}

fn borrow(u: &OwnedUpdate) -> RouteUpdateRequest<'_> {
    RouteUpdateRequest {
        routing_table_id: u.table,
        current_epoch_index: u.epochs[0],
        from_epoch_index: u.epochs[1],
        to_epoch_index: u.epochs[2],
        hold_down_time: u.epochs[3],
        speaker: &u.speaker,
        new_routes: u
            .routes
            .iter()
            .map(|r| Route {
                prefix: &r.prefix,
                path: r.path.iter().map(Vec::as_slice).collect(),
                auth: r.auth,
                props: r
                    .props
                    .iter()
                    .map(|p| RouteProp {
                        is_optional: p.flags[0],
                        is_transitive: p.flags[1],
                        is_partial: p.flags[2],
                        is_utf8: p.flags[3],
                        id: p.id,
                        value: &p.value,
                    })
                    .collect(),
            })
            .collect(),
        withdrawn_routes: u.withdrawn.iter().map(Vec::as_slice).collect(),
    }
}

/// What a message reads back as: prop flags normalised as the JS
/// serializer writes them.
fn normalized<'a>(u: &RouteUpdateRequest<'a>) -> RouteUpdateRequest<'a> {
    let mut n = u.clone();
    for r in &mut n.new_routes {
        for p in &mut r.props {
            *p = p.normalized();
        }
    }
    n
}

/// Every decoder in `codec::peer` on arbitrary input; none may panic.
fn decode_everything(data: &[u8]) {
    let _ = RouteControlRequest::decode(data);
    let _ = RouteUpdateRequest::decode(data);
    let _ = RouteUpdateRequest::decode_with_limit(data, 2);
    let _ = IldcpResponse::decode(data);
    let _ = ildcp::parse_response_fulfill(data);
    let _ = echo::parse(data);
    let _ = echo::is_echo(data);
    let _ = parse_balance_fulfill(data);
    let _ = classify(data);
    if let Ok(p) = Prepare::new_checked(data) {
        let _ = is_peer_protocol_request(&p, 0);
        let _ = is_peer_protocol_request(&p, u64::MAX);
        let _ = check_request(&p, PEER_ROUTE_UPDATE, 0);
        let _ = RouteUpdateRequest::decode(p.data());
        let _ = RouteControlRequest::decode(p.data());
    }
}

/// Byte-level mutations of a valid encoding: flips, truncation, insertion.
fn mutate(mut buf: Vec<u8>, ops: &[(u8, usize, u8)]) -> Vec<u8> {
    for &(op, at, val) in ops {
        let len = buf.len();
        match op % 4 {
            0 if len > 0 => buf[at % len] ^= val | 1,
            1 => buf.truncate(at % (len + 1)),
            2 => buf.insert(at % (len + 1), val),
            _ if len > 0 => buf[at % len] = val,
            _ => buf.push(val),
        }
    }
    buf
}

fn mutations() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    prop::collection::vec(any::<(u8, usize, u8)>(), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ildcp_round_trip(addr in address(), scale in any::<u8>(), code in "\\PC{0,20}") {
        let resp = IldcpResponse {
            client_address: &addr,
            asset_scale: scale,
            asset_code: code.as_bytes(),
        };
        let mut buf = Vec::new();
        resp.write_to(&mut buf);
        prop_assert_eq!(buf.len(), resp.encoded_len());
        prop_assert_eq!(IldcpResponse::decode(&buf), Ok(resp));
        let f = ildcp::response_fulfill(&resp);
        prop_assert_eq!(ildcp::parse_response_fulfill(&f), Ok(resp));
    }

    #[test]
    fn control_round_trip(
        sync in any::<bool>(),
        table in any::<[u8; 16]>(),
        epoch in any::<u32>(),
        features in prop::collection::vec(bytes(20), 0..4),
        expiry in 0u64..253_402_300_799_999,
    ) {
        let req = RouteControlRequest {
            mode: if sync { Mode::Sync } else { Mode::Idle },
            last_known_routing_table_id: table,
            last_known_epoch: epoch,
            features: features.iter().map(Vec::as_slice).collect(),
        };
        let mut buf = Vec::new();
        req.write_to(&mut buf);
        prop_assert_eq!(buf.len(), req.encoded_len());
        prop_assert_eq!(RouteControlRequest::decode(&buf), Ok(req.clone()));

        let packet = control_prepare(&req, Expiry(expiry));
        let p = Prepare::new_checked(&packet[..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(check_request(&p, PEER_ROUTE_CONTROL, expiry), Ok(()));
        prop_assert_eq!(p.amount(), 0);
        prop_assert_eq!(RouteControlRequest::decode(p.data()), Ok(req));
    }

    #[test]
    fn update_round_trip(u in update_strategy(), expiry in 0u64..253_402_300_799_999) {
        let req = borrow(&u);
        let mut buf = Vec::new();
        req.write_to(&mut buf);
        prop_assert_eq!(buf.len(), req.encoded_len());
        let back = RouteUpdateRequest::decode(&buf);
        prop_assert_eq!(back.as_ref(), Ok(&normalized(&req)));
        // Normalised props re-encode to the same bytes.
        let mut again = Vec::new();
        normalized(&req).write_to(&mut again);
        prop_assert_eq!(&again, &buf);

        let n = req.new_routes.len().max(req.withdrawn_routes.len());
        prop_assert!(RouteUpdateRequest::decode_with_limit(&buf, n).is_ok());
        if n > 0 {
            prop_assert_eq!(
                RouteUpdateRequest::decode_with_limit(&buf, n - 1),
                Err(ilpd_codec::DecodeError::FieldTooLong("routes"))
            );
        }

        let packet = update_prepare(&req, Expiry(expiry));
        let p = Prepare::new_checked(&packet[..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(check_request(&p, PEER_ROUTE_UPDATE, expiry), Ok(()));
        prop_assert_eq!(RouteUpdateRequest::decode(p.data()), Ok(normalized(&req)));
    }

    #[test]
    fn echo_round_trip(addr in address(), trailer in bytes(10)) {
        let mut buf = Vec::new();
        echo::write_ping(&mut buf, &addr);
        prop_assert_eq!(buf.len(), echo::ping_len(&addr));
        buf.extend_from_slice(&trailer);
        prop_assert_eq!(echo::parse(&buf), Ok(EchoData::Ping { source_address: &addr }));
    }

    #[test]
    fn balance_round_trip(b in any::<i64>()) {
        prop_assert_eq!(parse_balance_fulfill(&balance_fulfill(b)), Ok(b));
    }

    #[test]
    fn random_bytes_never_panic(data in bytes(600)) {
        decode_everything(&data);
        let mut echoish = echo::ECHO_PREFIX.to_vec();
        echoish.extend_from_slice(&data);
        decode_everything(&echoish);
    }

    #[test]
    fn mutated_update_never_panics(u in update_strategy(), ops in mutations()) {
        let mut buf = Vec::new();
        borrow(&u).write_to(&mut buf);
        decode_everything(&mutate(buf, &ops));
        let packet = update_prepare(&borrow(&u), Expiry(0));
        decode_everything(&mutate(packet.to_vec(), &ops));
    }

    #[test]
    fn mutated_small_messages_never_panic(addr in address(), ops in mutations()) {
        let resp = IldcpResponse { client_address: &addr, asset_scale: 9, asset_code: b"USD" };
        decode_everything(&mutate(ildcp::response_fulfill(&resp).to_vec(), &ops));
        let mut ping = Vec::new();
        echo::write_ping(&mut ping, &addr);
        decode_everything(&mutate(ping, &ops));
        let ctl = RouteControlRequest {
            mode: Mode::Sync,
            last_known_routing_table_id: [0; 16],
            last_known_epoch: 0,
            features: vec![&addr],
        };
        decode_everything(&mutate(control_prepare(&ctl, Expiry(0)).to_vec(), &ops));
        decode_everything(&mutate(balance_fulfill(-1).to_vec(), &ops));
    }
}

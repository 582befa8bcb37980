//! Feeds arbitrary bytes to every decoder in `codec::peer` (IL-DCP, CCP,
//! echo, peer.balance and the request checks). None may panic; whatever
//! decodes must re-encode to something that decodes to the same value.
#![no_main]

use ilpd_codec::ilp::Prepare;
use ilpd_codec::peer::balance::parse_balance_fulfill;
use ilpd_codec::peer::ccp::{parse_ccp_response, RouteControlRequest, RouteUpdateRequest};
use ilpd_codec::peer::ildcp::{self, IldcpResponse};
use ilpd_codec::peer::{check_request, classify, echo, is_peer_protocol_request, PEER_CONFIG};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = RouteControlRequest::decode(data) {
        let mut out = Vec::with_capacity(c.encoded_len());
        c.write_to(&mut out);
        assert_eq!(out.len(), c.encoded_len());
        assert_eq!(RouteControlRequest::decode(&out).as_ref(), Ok(&c));
    }
    if let Ok(u) = RouteUpdateRequest::decode(data) {
        let mut out = Vec::with_capacity(u.encoded_len());
        u.write_to(&mut out);
        assert_eq!(out.len(), u.encoded_len());
        let back = RouteUpdateRequest::decode(&out).expect("re-encoded update decodes");
        assert_eq!(back.new_routes.len(), u.new_routes.len());
        assert_eq!(back.withdrawn_routes, u.withdrawn_routes);
    }
    let _ = RouteUpdateRequest::decode_with_limit(data, 1);
    if let Ok(r) = IldcpResponse::decode(data) {
        let mut out = Vec::with_capacity(r.encoded_len());
        r.write_to(&mut out);
        assert_eq!(IldcpResponse::decode(&out), Ok(r));
    }
    let _ = ildcp::parse_response_fulfill(data);
    let _ = parse_ccp_response(data);
    let _ = parse_balance_fulfill(data);
    let _ = echo::is_echo(data);
    let _ = echo::parse(data);
    let _ = classify(data);
    if let Ok(p) = Prepare::new_checked(data) {
        let _ = is_peer_protocol_request(&p, 0);
        let _ = is_peer_protocol_request(&p, u64::MAX);
        let _ = check_request(&p, PEER_CONFIG, 0);
        let _ = echo::parse(p.data());
        let _ = RouteControlRequest::decode(p.data());
        let _ = RouteUpdateRequest::decode(p.data());
    }
});

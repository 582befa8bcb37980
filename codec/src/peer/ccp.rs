//! CCP route broadcasting payloads (docs/design.md "CCP"): the format of
//! interledgerjs `ilp-protocol-ccp`, also spoken by ilp-connector and
//! interledger-rs. The deprecated RFC 10 JSON scheme is not implemented.
//!
//! Decoding borrows from the packet data; the lists are `Vec`s because CCP
//! is a cold path (one message per peer every few seconds).

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, Result};
use crate::oer::{self, Reader};
use crate::types::Expiry;

use super::{
    parse_peer_fulfill, peer_fulfill, peer_request_prepare, PEER_ROUTE_CONTROL, PEER_ROUTE_UPDATE,
};

/// Smallest encoding of one route: empty prefix, no hops, auth, no props.
const MIN_ROUTE_LEN: usize = 1 + 2 + 32 + 2;
/// Smallest encoding of one prop: meta, id, empty value.
const MIN_PROP_LEN: usize = 1 + 2 + 1;

/// Whether the sender of a RouteControl wants updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Stop sending me updates.
    Idle = 0,
    /// Send me updates.
    Sync = 1,
}

impl Mode {
    fn from_u8(v: u8) -> Result<Self> {
        match v {
            0 => Ok(Mode::Idle),
            1 => Ok(Mode::Sync),
            _ => Err(DecodeError::Invalid("CCP mode")),
        }
    }
}

/// The data of a Prepare to `peer.route.control`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteControlRequest<'a> {
    pub mode: Mode,
    /// UUID of the table the requester last heard from us (zeros if none).
    pub last_known_routing_table_id: [u8; 16],
    pub last_known_epoch: u32,
    /// UTF-8 feature names; no feature is defined, implementations send none.
    pub features: Vec<&'a [u8]>,
}

impl<'a> RouteControlRequest<'a> {
    /// Decodes the payload; trailing bytes are ignored (RFC 30 "Extensibility").
    pub fn decode(data: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(data);
        let mode = Mode::from_u8(r.read_u8()?)?;
        let last_known_routing_table_id = *r.read_array::<16>()?;
        let last_known_epoch = r.read_u32()?;
        let n = r.read_count(1)?;
        let mut features = Vec::with_capacity(n);
        for _ in 0..n {
            features.push(r.read_var_octets()?);
        }
        Ok(RouteControlRequest {
            mode,
            last_known_routing_table_id,
            last_known_epoch,
            features,
        })
    }

    pub fn encoded_len(&self) -> usize {
        1 + 16
            + 4
            + oer::var_uint_len(self.features.len() as u64)
            + self
                .features
                .iter()
                .map(|f| oer::var_octets_len(f.len()))
                .sum::<usize>()
    }

    pub fn write_to<B: BufMut + ?Sized>(&self, buf: &mut B) {
        buf.put_u8(self.mode as u8);
        buf.put_slice(&self.last_known_routing_table_id);
        buf.put_u32(self.last_known_epoch);
        oer::put_var_uint(buf, self.features.len() as u64);
        for f in &self.features {
            oer::put_var_octets(buf, f);
        }
    }
}

/// One property attached to a route. No ids are defined; carried as-is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteProp<'a> {
    pub is_optional: bool,
    pub is_transitive: bool,
    pub is_partial: bool,
    pub is_utf8: bool,
    pub id: u16,
    pub value: &'a [u8],
}

impl RouteProp<'_> {
    /// The meta byte exactly as the JS serializer writes it (docs/design.md "CCP"):
    /// a non-optional prop is always transitive, and "partial" is only kept
    /// for optional transitive props.
    pub fn meta(&self) -> u8 {
        let mut meta = 0;
        if self.is_optional {
            meta |= 0x80;
            if self.is_transitive {
                meta |= 0x40;
                if self.is_partial {
                    meta |= 0x20;
                }
            }
        } else {
            meta |= 0x40;
        }
        if self.is_utf8 {
            meta |= 0x10;
        }
        meta
    }

    /// This prop as it reads back after encoding (flags normalised the way
    /// [`RouteProp::meta`] writes them).
    pub fn normalized(&self) -> Self {
        let meta = self.meta();
        RouteProp {
            is_optional: meta & 0x80 != 0,
            is_transitive: meta & 0x40 != 0,
            is_partial: meta & 0x20 != 0,
            is_utf8: meta & 0x10 != 0,
            ..*self
        }
    }

    fn encoded_len(&self) -> usize {
        1 + 2 + oer::var_octets_len(self.value.len())
    }
}

/// One advertised route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// Raw bytes: the engine decides what to do with a malformed prefix.
    pub prefix: &'a [u8],
    /// Hops, nearest first.
    pub path: Vec<&'a [u8]>,
    /// Opaque; nobody verifies it (docs/design.md "CCP").
    pub auth: [u8; 32],
    pub props: Vec<RouteProp<'a>>,
}

impl<'a> Route<'a> {
    fn decode(r: &mut Reader<'a>) -> Result<Self> {
        let prefix = r.read_var_octets()?;
        let n = r.read_count(1)?;
        let mut path = Vec::with_capacity(n);
        for _ in 0..n {
            path.push(r.read_var_octets()?);
        }
        let auth = *r.read_array::<32>()?;
        let n = r.read_count(MIN_PROP_LEN)?;
        let mut props = Vec::with_capacity(n);
        for _ in 0..n {
            let meta = r.read_u8()?;
            let id = r.read_u16()?;
            let value = r.read_var_octets()?;
            props.push(RouteProp {
                is_optional: meta & 0x80 != 0,
                is_transitive: meta & 0x40 != 0,
                is_partial: meta & 0x20 != 0,
                is_utf8: meta & 0x10 != 0,
                id,
                value,
            });
        }
        Ok(Route {
            prefix,
            path,
            auth,
            props,
        })
    }

    fn encoded_len(&self) -> usize {
        oer::var_octets_len(self.prefix.len())
            + oer::var_uint_len(self.path.len() as u64)
            + self
                .path
                .iter()
                .map(|h| oer::var_octets_len(h.len()))
                .sum::<usize>()
            + 32
            + oer::var_uint_len(self.props.len() as u64)
            + self.props.iter().map(RouteProp::encoded_len).sum::<usize>()
    }

    fn write_to<B: BufMut + ?Sized>(&self, buf: &mut B) {
        oer::put_var_octets(buf, self.prefix);
        oer::put_var_uint(buf, self.path.len() as u64);
        for hop in &self.path {
            oer::put_var_octets(buf, hop);
        }
        buf.put_slice(&self.auth);
        oer::put_var_uint(buf, self.props.len() as u64);
        for p in &self.props {
            buf.put_u8(p.meta());
            buf.put_u16(p.id);
            oer::put_var_octets(buf, p.value);
        }
    }
}

/// The data of a Prepare to `peer.route.update`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteUpdateRequest<'a> {
    /// UUID of the sender's forwarding table.
    pub routing_table_id: [u8; 16],
    pub current_epoch_index: u32,
    /// First epoch included.
    pub from_epoch_index: u32,
    /// End of the range (exclusive).
    pub to_epoch_index: u32,
    /// Milliseconds the receiver may keep these routes without news.
    pub hold_down_time: u32,
    /// The sender's ILP address (validated on decode).
    pub speaker: &'a [u8],
    pub new_routes: Vec<Route<'a>>,
    /// Withdrawn prefixes, raw bytes.
    pub withdrawn_routes: Vec<&'a [u8]>,
}

impl<'a> RouteUpdateRequest<'a> {
    /// Decodes with no cap beyond what the buffer length allows.
    pub fn decode(data: &'a [u8]) -> Result<Self> {
        Self::decode_with_limit(data, usize::MAX)
    }

    /// Decodes, refusing more than `max_routes` new routes or more than
    /// `max_routes` withdrawals with `FieldTooLong("routes")`, so a peer
    /// cannot make us build an arbitrarily large table in one message.
    pub fn decode_with_limit(data: &'a [u8], max_routes: usize) -> Result<Self> {
        let mut r = Reader::new(data);
        let routing_table_id = *r.read_array::<16>()?;
        let current_epoch_index = r.read_u32()?;
        let from_epoch_index = r.read_u32()?;
        let to_epoch_index = r.read_u32()?;
        let hold_down_time = r.read_u32()?;
        let speaker = r.read_var_octets()?;
        crate::address::validate(speaker)?;

        let n = r.read_count(MIN_ROUTE_LEN)?;
        if n > max_routes {
            return Err(DecodeError::FieldTooLong("routes"));
        }
        let mut new_routes = Vec::with_capacity(n);
        for _ in 0..n {
            new_routes.push(Route::decode(&mut r)?);
        }

        let n = r.read_count(1)?;
        if n > max_routes {
            return Err(DecodeError::FieldTooLong("routes"));
        }
        let mut withdrawn_routes = Vec::with_capacity(n);
        for _ in 0..n {
            withdrawn_routes.push(r.read_var_octets()?);
        }

        Ok(RouteUpdateRequest {
            routing_table_id,
            current_epoch_index,
            from_epoch_index,
            to_epoch_index,
            hold_down_time,
            speaker,
            new_routes,
            withdrawn_routes,
        })
    }

    pub fn encoded_len(&self) -> usize {
        16 + 4 * 4
            + oer::var_octets_len(self.speaker.len())
            + oer::var_uint_len(self.new_routes.len() as u64)
            + self
                .new_routes
                .iter()
                .map(Route::encoded_len)
                .sum::<usize>()
            + oer::var_uint_len(self.withdrawn_routes.len() as u64)
            + self
                .withdrawn_routes
                .iter()
                .map(|w| oer::var_octets_len(w.len()))
                .sum::<usize>()
    }

    pub fn write_to<B: BufMut + ?Sized>(&self, buf: &mut B) {
        buf.put_slice(&self.routing_table_id);
        buf.put_u32(self.current_epoch_index);
        buf.put_u32(self.from_epoch_index);
        buf.put_u32(self.to_epoch_index);
        buf.put_u32(self.hold_down_time);
        oer::put_var_octets(buf, self.speaker);
        oer::put_var_uint(buf, self.new_routes.len() as u64);
        for route in &self.new_routes {
            route.write_to(buf);
        }
        oer::put_var_uint(buf, self.withdrawn_routes.len() as u64);
        for w in &self.withdrawn_routes {
            oer::put_var_octets(buf, w);
        }
    }
}

/// The full Prepare to `peer.route.control` (amount 0, peer-protocol
/// condition).
pub fn control_prepare(req: &RouteControlRequest<'_>, expires_at: Expiry) -> BytesMut {
    let mut data = BytesMut::with_capacity(req.encoded_len());
    req.write_to(&mut data);
    peer_request_prepare(PEER_ROUTE_CONTROL, expires_at, &data)
}

/// The full Prepare to `peer.route.update`.
pub fn update_prepare(req: &RouteUpdateRequest<'_>, expires_at: Expiry) -> BytesMut {
    let mut data = BytesMut::with_capacity(req.encoded_len());
    req.write_to(&mut data);
    peer_request_prepare(PEER_ROUTE_UPDATE, expires_at, &data)
}

/// The reply to either CCP request: Fulfill, 32 zero bytes, empty data
/// (`0d21 00×32 00`).
pub fn ccp_response_fulfill() -> BytesMut {
    peer_fulfill(&[])
}

/// Checks a Fulfill answering one of our CCP requests: its fulfillment must
/// be 32 zero bytes (ilp-protocol-ccp `deserializeCcpResponse`); any data is
/// ignored.
pub fn parse_ccp_response(buf: &[u8]) -> Result<()> {
    parse_peer_fulfill(buf).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_round_trip() {
        assert_eq!(parse_ccp_response(&ccp_response_fulfill()), Ok(()));
        let mut wrong = ccp_response_fulfill();
        wrong[10] = 1;
        assert!(parse_ccp_response(&wrong).is_err());
    }

    #[test]
    fn meta_follows_js_rules() {
        let p = |o, t, pa, u| RouteProp {
            is_optional: o,
            is_transitive: t,
            is_partial: pa,
            is_utf8: u,
            id: 0,
            value: b"",
        };
        assert_eq!(p(false, true, false, true).meta(), 0x50);
        assert_eq!(p(true, true, true, false).meta(), 0xe0);
        // Not optional: transitive forced, partial dropped.
        assert_eq!(p(false, false, true, false).meta(), 0x40);
        // Optional but not transitive: partial dropped.
        assert_eq!(p(true, false, true, true).meta(), 0x90);
    }

    #[test]
    fn control_rejects_unknown_mode() {
        let mut data = vec![2u8];
        data.extend_from_slice(&[0; 16 + 4]);
        data.extend_from_slice(&[1, 0]);
        assert_eq!(
            RouteControlRequest::decode(&data),
            Err(DecodeError::Invalid("CCP mode"))
        );
        data[0] = 0;
        assert_eq!(
            RouteControlRequest::decode(&data).map(|c| c.mode),
            Ok(Mode::Idle)
        );
    }

    #[test]
    fn update_route_limit() {
        let route = Route {
            prefix: b"g.a",
            path: vec![b"g.b"],
            auth: [7; 32],
            props: vec![],
        };
        let req = RouteUpdateRequest {
            routing_table_id: [1; 16],
            current_epoch_index: 3,
            from_epoch_index: 1,
            to_epoch_index: 3,
            hold_down_time: 45_000,
            speaker: b"g.b",
            new_routes: vec![route.clone(), route],
            withdrawn_routes: vec![b"g.x"],
        };
        let mut buf = Vec::new();
        req.write_to(&mut buf);
        assert_eq!(buf.len(), req.encoded_len());
        assert_eq!(RouteUpdateRequest::decode_with_limit(&buf, 2), Ok(req));
        assert_eq!(
            RouteUpdateRequest::decode_with_limit(&buf, 1),
            Err(DecodeError::FieldTooLong("routes"))
        );
    }

    #[test]
    fn update_rejects_bad_speaker_but_keeps_bad_prefix() {
        let req = RouteUpdateRequest {
            routing_table_id: [0; 16],
            current_epoch_index: 0,
            from_epoch_index: 0,
            to_epoch_index: 0,
            hold_down_time: 0,
            speaker: b"g.ok",
            new_routes: vec![Route {
                prefix: b"not an address!",
                path: vec![],
                auth: [0; 32],
                props: vec![],
            }],
            withdrawn_routes: vec![b".."],
        };
        let mut buf = Vec::new();
        req.write_to(&mut buf);
        assert_eq!(RouteUpdateRequest::decode(&buf), Ok(req.clone()));
        let bad = RouteUpdateRequest {
            speaker: b"nope",
            ..req
        };
        let mut buf = Vec::new();
        bad.write_to(&mut buf);
        assert_eq!(
            RouteUpdateRequest::decode(&buf),
            Err(DecodeError::BadAddress)
        );
    }
}

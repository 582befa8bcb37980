//! IL-DCP, `peer.config` (RFC 31 "Packet"): a parent tells a child
//! its ILP address and the link's asset code and scale.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, Result};
use crate::oer::{self, Reader};
use crate::types::Expiry;

use super::{parse_peer_fulfill, peer_fulfill, peer_request_prepare, PEER_CONFIG};

/// The data of an IL-DCP response Fulfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IldcpResponse<'a> {
    /// The child's ILP address (ASCII, validated on decode).
    pub client_address: &'a [u8],
    pub asset_scale: u8,
    /// Asset code, UTF-8 (validated on decode).
    pub asset_code: &'a [u8],
}

impl<'a> IldcpResponse<'a> {
    /// Decodes `VarOctetString clientAddress ‖ UInt8 assetScale ‖
    /// VarOctetString assetCode` (RFC 31). Trailing bytes are ignored
    /// (RFC 30 "Extensibility").
    pub fn decode(data: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(data);
        let client_address = r.read_var_octets()?;
        crate::address::validate(client_address)?;
        let asset_scale = r.read_u8()?;
        let asset_code = r.read_var_octets()?;
        core::str::from_utf8(asset_code).map_err(|_| DecodeError::Invalid("asset code UTF-8"))?;
        Ok(IldcpResponse {
            client_address,
            asset_scale,
            asset_code,
        })
    }

    /// The asset code as text (checked by `decode`; lossless otherwise).
    pub fn asset_code_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.asset_code).ok()
    }

    pub fn encoded_len(&self) -> usize {
        oer::var_octets_len(self.client_address.len())
            + 1
            + oer::var_octets_len(self.asset_code.len())
    }

    pub fn write_to<B: BufMut + ?Sized>(&self, buf: &mut B) {
        oer::put_var_octets(buf, self.client_address);
        buf.put_u8(self.asset_scale);
        oer::put_var_octets(buf, self.asset_code);
    }
}

/// The IL-DCP request: Prepare to `peer.config`, amount 0, peer-protocol
/// condition, empty data (RFC 31).
pub fn request_prepare(expires_at: Expiry) -> BytesMut {
    peer_request_prepare(PEER_CONFIG, expires_at, &[])
}

/// The IL-DCP answer: Fulfill with the 32-zero-byte fulfillment.
pub fn response_fulfill(resp: &IldcpResponse<'_>) -> BytesMut {
    let mut data = BytesMut::with_capacity(resp.encoded_len());
    resp.write_to(&mut data);
    peer_fulfill(&data)
}

/// Parses a whole Fulfill received for our IL-DCP request; refuses one
/// whose fulfillment is not 32 zero bytes (ilp-protocol-ildcp does too).
pub fn parse_response_fulfill(buf: &[u8]) -> Result<IldcpResponse<'_>> {
    IldcpResponse::decode(parse_peer_fulfill(buf)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let resp = IldcpResponse {
            client_address: b"g.parent.child",
            asset_scale: 9,
            asset_code: "€UR".as_bytes(),
        };
        let mut buf = Vec::new();
        resp.write_to(&mut buf);
        assert_eq!(buf.len(), resp.encoded_len());
        assert_eq!(IldcpResponse::decode(&buf), Ok(resp));
        assert_eq!(resp.asset_code_str(), Some("€UR"));

        let bad_addr = IldcpResponse {
            client_address: b"g.",
            ..resp
        };
        let mut buf = Vec::new();
        bad_addr.write_to(&mut buf);
        assert_eq!(IldcpResponse::decode(&buf), Err(DecodeError::BadAddress));

        let bad_code = IldcpResponse {
            asset_code: &[0xff, 0xfe],
            ..resp
        };
        let mut buf = Vec::new();
        bad_code.write_to(&mut buf);
        assert_eq!(
            IldcpResponse::decode(&buf),
            Err(DecodeError::Invalid("asset code UTF-8"))
        );
        // Truncated before the asset scale.
        assert_eq!(
            IldcpResponse::decode(b"\x03g.a"),
            Err(DecodeError::Truncated)
        );
    }
}

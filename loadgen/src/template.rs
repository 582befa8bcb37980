//! Pre-built Prepare frames, patched in place per packet.
//!
//! For a given destination and data size every outgoing frame has the same
//! layout, so the sender builds it once with the codec (WebSocket header +
//! BTP Message + ILP Prepare, or HTTP request head + ILP Prepare) and then,
//! per packet, copies the template into the write buffer and overwrites the
//! BTP request id, amount, expiry, condition and the data header. No
//! allocation and no re-encoding on the hot path.

use bytes::BytesMut;
use ilpd_codec::ilp::PrepareBuilder;
use ilpd_codec::oer;
use ilpd_codec::ws::{self, Opcode};
use ilpd_codec::{btp, Expiry};

use crate::link::{write_http_request_head, CLIENT_MASK};
use crate::lt;
use crate::url::LinkUrl;

/// Offsets (from the ILP packet's start) of the fields we patch.
const AMOUNT_AT: usize = 0;
const EXPIRY_AT: usize = 8;
const CONDITION_AT: usize = 25;

#[derive(Clone, Debug)]
pub struct Template {
    pub bytes: Vec<u8>,
    /// Where the BTP request id (u32 BE) sits, for BTP frames.
    rid_at: Option<usize>,
    /// Where the ILP Prepare's content starts.
    content_at: usize,
    /// Where the Prepare's data starts.
    data_at: usize,
}

impl Template {
    fn prepare(destination: &[u8], data_size: usize) -> BytesMut {
        let data = vec![0u8; data_size.max(lt::DATA_HEADER_LEN)];
        PrepareBuilder {
            amount: 0,
            expires_at: Expiry(0),
            execution_condition: &[0; 32],
            destination,
            data: &data,
        }
        .build()
    }

    /// A BTP/2.0 Message frame (client → server, masked with the zero key).
    pub fn btp(destination: &[u8], data_size: usize) -> Template {
        let prepare = Self::prepare(destination, data_size);
        let btp_len = btp::ilp_message_len(prepare.len());
        let mut bytes = BytesMut::with_capacity(btp_len + 14);
        ws::write_frame_header(&mut bytes, true, Opcode::Binary, btp_len, Some(CLIENT_MASK));
        let ws_len = bytes.len();
        btp::write_ilp_message(&mut bytes, 0, &prepare);
        let ilp_at = bytes.len() - prepare.len();
        Self::finish(bytes.to_vec(), Some(ws_len + 1), ilp_at, &prepare)
    }

    /// An ILP-over-HTTP POST (RFC 35 synchronous mode).
    pub fn http(url: &LinkUrl, destination: &[u8], data_size: usize) -> Template {
        let prepare = Self::prepare(destination, data_size);
        let mut bytes = Vec::with_capacity(prepare.len() + 256);
        write_http_request_head(&mut bytes, url, prepare.len());
        let ilp_at = bytes.len();
        bytes.extend_from_slice(&prepare);
        Self::finish(bytes, None, ilp_at, &prepare)
    }

    fn finish(bytes: Vec<u8>, rid_at: Option<usize>, ilp_at: usize, prepare: &[u8]) -> Template {
        let content_at = ilp_at + content_start(prepare);
        let data_len = data_len(prepare);
        Template {
            data_at: bytes.len() - data_len,
            bytes,
            rid_at,
            content_at,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends one frame to `out`, patched for this packet. (Plain
    /// arguments: this runs once per packet and inlines into the batch loop.)
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        rid: u32,
        amount: u64,
        expiry: &[u8; 17],
        condition: &[u8; 32],
        seq: u64,
        min_dest: u64,
    ) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let f = &mut out[start..];
        if let Some(at) = self.rid_at {
            f[at..at + 4].copy_from_slice(&rid.to_be_bytes());
        }
        let c = self.content_at;
        f[c + AMOUNT_AT..c + AMOUNT_AT + 8].copy_from_slice(&amount.to_be_bytes());
        f[c + EXPIRY_AT..c + EXPIRY_AT + 17].copy_from_slice(expiry);
        f[c + CONDITION_AT..c + CONDITION_AT + 32].copy_from_slice(condition);
        lt::write_data_header(&mut f[self.data_at..], seq, min_dest);
    }
}

/// Offset of the content inside an ILP packet (after type + length).
fn content_start(packet: &[u8]) -> usize {
    match oer::read_length(&packet[1..]) {
        Ok((_, n)) => 1 + n,
        Err(_) => 2,
    }
}

/// Length of a Prepare's data (the last field).
fn data_len(prepare: &[u8]) -> usize {
    match ilpd_codec::ilp::Prepare::new_checked(prepare) {
        Ok(p) => p.data().len(),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ilpd_codec::btp::Btp;
    use ilpd_codec::ilp::Prepare;
    use ilpd_codec::ws::{Decoder, Message, Role};

    fn check(t: &Template, data_size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let ts = Expiry(1_700_000_000_123).to_ilp_timestamp();
        t.write(&mut out, 0xdead_beef, 42, &ts, &[7; 32], 99, 41);
        assert_eq!(out.len(), t.len(), "data size {data_size}");
        out
    }

    #[test]
    fn btp_template_decodes_as_the_packet_it_claims() {
        for data_size in [16usize, 100, 200, 5000] {
            let t = Template::btp(b"test.loadgen.recv.0", data_size);
            let frame = check(&t, data_size);
            let mut buf = BytesMut::from(&frame[..]);
            let mut dec = Decoder::new(Role::Server, 1 << 20);
            let Some(Message::Binary(payload)) = dec.decode(&mut buf).unwrap() else {
                panic!("no binary message")
            };
            assert!(buf.is_empty());
            let b = Btp::new_checked(&payload[..]).unwrap();
            assert_eq!(b.request_id(), 0xdead_beef);
            let p = Prepare::new_checked(b.ilp().unwrap()).unwrap();
            assert_eq!(p.amount(), 42);
            assert_eq!(p.expires_at(), Expiry(1_700_000_000_123));
            assert_eq!(p.execution_condition(), &[7; 32]);
            assert_eq!(p.destination(), b"test.loadgen.recv.0");
            assert_eq!(p.data().len(), data_size);
            assert_eq!(lt::read_data_header(p.data()), Some((99, 41)));
        }
    }

    #[test]
    fn http_template_has_head_and_prepare() {
        let url = LinkUrl::parse("http://tok@127.0.0.1:9/ilp").unwrap();
        let t = Template::http(&url, b"g.x", 300);
        let frame = check(&t, 300);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        let n = match req.parse(&frame).unwrap() {
            httparse::Status::Complete(n) => n,
            _ => panic!("partial"),
        };
        assert_eq!(req.method, Some("POST"));
        assert_eq!(req.path, Some("/ilp"));
        assert!(req
            .headers
            .iter()
            .any(|h| h.name == "Authorization" && h.value == b"Bearer tok"));
        let p = Prepare::new_checked(&frame[n..]).unwrap();
        assert_eq!(p.amount(), 42);
        assert_eq!(lt::read_data_header(p.data()), Some((99, 41)));
    }
}

//! The STREAM plaintext packet and its frames (RFC 29 "STREAM Packet",
//! "Frames").
//!
//! ```text
//! version UInt8 (= 1) ‖ ilpPacketType UInt8 (12/13/14) ‖ sequence VarUInt
//! ‖ prepareAmount VarUInt ‖ frames SEQUENCE OF { type UInt8, contents VarOctetString }
//! ‖ junk (ignored)
//! ```
//!
//! [`Packet::decode`] checks the header and every frame once and keeps the
//! frames as a borrowed byte range; [`Packet::frames`] then walks them
//! again without allocating. Frames of a type this crate does not know come
//! out as [`Frame::Unknown`], so a receiver can skip them (RFC 29 "Frames":
//! "MUST ignore frames with unknown types") and re-encoding stays exact.
//! Bytes after the frames are junk or padding and are ignored
//! ([`Packet::junk`]). Builders write canonical OER into any [`BufMut`].
//!
//! Numbers are u64. A `receiveMax` (StreamMaxMoney) or `sendMax`
//! (StreamMoneyBlocked) longer than 8 bytes reads as `u64::MAX`
//! (RFC 29 "Maximum VarUInt Size"); any other oversized VarUInt is an error.

use bytes::BufMut;
use ilpd_codec::oer::{self, Reader};
use ilpd_codec::{DecodeError, PacketType, Result};

/// The only STREAM version (RFC 29 "STREAM Packet").
pub const VERSION: u8 = 1;

/// Frame type bytes (RFC 29 "Frames"; 0x17 from RFC 39).
pub mod frame_type {
    pub const CONNECTION_CLOSE: u8 = 0x01;
    pub const CONNECTION_NEW_ADDRESS: u8 = 0x02;
    pub const CONNECTION_MAX_DATA: u8 = 0x03;
    pub const CONNECTION_DATA_BLOCKED: u8 = 0x04;
    pub const CONNECTION_MAX_STREAM_ID: u8 = 0x05;
    pub const CONNECTION_STREAM_ID_BLOCKED: u8 = 0x06;
    pub const CONNECTION_ASSET_DETAILS: u8 = 0x07;
    pub const STREAM_CLOSE: u8 = 0x10;
    pub const STREAM_MONEY: u8 = 0x11;
    pub const STREAM_MAX_MONEY: u8 = 0x12;
    pub const STREAM_MONEY_BLOCKED: u8 = 0x13;
    pub const STREAM_DATA: u8 = 0x14;
    pub const STREAM_MAX_DATA: u8 = 0x15;
    pub const STREAM_DATA_BLOCKED: u8 = 0x16;
    pub const STREAM_RECEIPT: u8 = 0x17;
}

/// A STREAM error code, as carried in `ConnectionClose` and `StreamClose`
/// (RFC 29 "Error Codes"). Any byte is kept: a code we do not know is
/// still a close.
#[derive(Debug, Copy, Clone, PartialEq, Eq, Hash)]
pub struct StreamErrorCode(pub u8);

impl StreamErrorCode {
    pub const NO_ERROR: Self = Self(0x01);
    pub const INTERNAL_ERROR: Self = Self(0x02);
    pub const ENDPOINT_BUSY: Self = Self(0x03);
    pub const FLOW_CONTROL_ERROR: Self = Self(0x04);
    pub const STREAM_ID_ERROR: Self = Self(0x05);
    pub const STREAM_STATE_ERROR: Self = Self(0x06);
    pub const FRAME_FORMAT_ERROR: Self = Self(0x07);
    pub const PROTOCOL_VIOLATION: Self = Self(0x08);
    pub const APPLICATION_ERROR: Self = Self(0x09);
}

/// One frame, borrowing its variable-length fields from the packet.
///
/// Text fields (error messages, the asset code, addresses) are kept as
/// bytes: the reference implementations decode them leniently, and a bad
/// message must not make a whole packet undecodable.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    ConnectionClose {
        code: StreamErrorCode,
        message: &'a [u8],
    },
    ConnectionNewAddress {
        source_account: &'a [u8],
    },
    ConnectionMaxData {
        max_offset: u64,
    },
    ConnectionDataBlocked {
        max_offset: u64,
    },
    ConnectionMaxStreamId {
        max_stream_id: u64,
    },
    ConnectionStreamIdBlocked {
        max_stream_id: u64,
    },
    ConnectionAssetDetails {
        source_asset_code: &'a [u8],
        source_asset_scale: u8,
    },
    StreamClose {
        stream_id: u64,
        code: StreamErrorCode,
        message: &'a [u8],
    },
    StreamMoney {
        stream_id: u64,
        shares: u64,
    },
    StreamMaxMoney {
        stream_id: u64,
        receive_max: u64,
        total_received: u64,
    },
    StreamMoneyBlocked {
        stream_id: u64,
        send_max: u64,
        total_sent: u64,
    },
    StreamData {
        stream_id: u64,
        offset: u64,
        data: &'a [u8],
    },
    StreamMaxData {
        stream_id: u64,
        max_offset: u64,
    },
    StreamDataBlocked {
        stream_id: u64,
        max_offset: u64,
    },
    /// RFC 39 "Specification": a receipt for `stream_id`
    /// (see [`crate::receipt`]).
    StreamReceipt {
        stream_id: u64,
        receipt: &'a [u8],
    },
    /// A frame type this crate does not know; its contents are kept
    /// unparsed.
    Unknown {
        frame_type: u8,
        contents: &'a [u8],
    },
}

/// Reads a VarUInt, saturating to `u64::MAX` when it has more than 8
/// bytes (RFC 29 "Maximum VarUInt Size"). Leading zeros are refused as in
/// [`Reader::read_var_uint`]; a long value is only read as "very large".
fn read_var_uint_saturating(r: &mut Reader<'_>) -> Result<u64> {
    let mut peek = *r;
    let bytes = peek.read_var_octets()?;
    if bytes.len() > 8 {
        if bytes[0] == 0 {
            return Err(DecodeError::NonCanonical);
        }
        *r = peek;
        Ok(u64::MAX)
    } else {
        r.read_var_uint()
    }
}

impl<'a> Frame<'a> {
    /// The frame's type byte.
    pub fn frame_type(&self) -> u8 {
        use frame_type::*;
        match self {
            Frame::ConnectionClose { .. } => CONNECTION_CLOSE,
            Frame::ConnectionNewAddress { .. } => CONNECTION_NEW_ADDRESS,
            Frame::ConnectionMaxData { .. } => CONNECTION_MAX_DATA,
            Frame::ConnectionDataBlocked { .. } => CONNECTION_DATA_BLOCKED,
            Frame::ConnectionMaxStreamId { .. } => CONNECTION_MAX_STREAM_ID,
            Frame::ConnectionStreamIdBlocked { .. } => CONNECTION_STREAM_ID_BLOCKED,
            Frame::ConnectionAssetDetails { .. } => CONNECTION_ASSET_DETAILS,
            Frame::StreamClose { .. } => STREAM_CLOSE,
            Frame::StreamMoney { .. } => STREAM_MONEY,
            Frame::StreamMaxMoney { .. } => STREAM_MAX_MONEY,
            Frame::StreamMoneyBlocked { .. } => STREAM_MONEY_BLOCKED,
            Frame::StreamData { .. } => STREAM_DATA,
            Frame::StreamMaxData { .. } => STREAM_MAX_DATA,
            Frame::StreamDataBlocked { .. } => STREAM_DATA_BLOCKED,
            Frame::StreamReceipt { .. } => STREAM_RECEIPT,
            Frame::Unknown { frame_type, .. } => *frame_type,
        }
    }

    /// The stream a stream-level frame refers to.
    pub fn stream_id(&self) -> Option<u64> {
        match *self {
            Frame::StreamClose { stream_id, .. }
            | Frame::StreamMoney { stream_id, .. }
            | Frame::StreamMaxMoney { stream_id, .. }
            | Frame::StreamMoneyBlocked { stream_id, .. }
            | Frame::StreamData { stream_id, .. }
            | Frame::StreamMaxData { stream_id, .. }
            | Frame::StreamDataBlocked { stream_id, .. }
            | Frame::StreamReceipt { stream_id, .. } => Some(stream_id),
            _ => None,
        }
    }

    /// Decodes one frame's contents. Bytes after the last field are
    /// ignored (RFC 30 "Extensibility"; the JavaScript implementation reads
    /// frames the same way).
    pub fn decode_contents(ty: u8, contents: &'a [u8]) -> Result<Frame<'a>> {
        use frame_type::*;
        let mut r = Reader::new(contents);
        let r = &mut r;
        Ok(match ty {
            CONNECTION_CLOSE => Frame::ConnectionClose {
                code: StreamErrorCode(r.read_u8()?),
                message: r.read_var_octets()?,
            },
            CONNECTION_NEW_ADDRESS => Frame::ConnectionNewAddress {
                source_account: r.read_var_octets()?,
            },
            CONNECTION_MAX_DATA => Frame::ConnectionMaxData {
                max_offset: r.read_var_uint()?,
            },
            CONNECTION_DATA_BLOCKED => Frame::ConnectionDataBlocked {
                max_offset: r.read_var_uint()?,
            },
            CONNECTION_MAX_STREAM_ID => Frame::ConnectionMaxStreamId {
                max_stream_id: r.read_var_uint()?,
            },
            CONNECTION_STREAM_ID_BLOCKED => Frame::ConnectionStreamIdBlocked {
                max_stream_id: r.read_var_uint()?,
            },
            CONNECTION_ASSET_DETAILS => Frame::ConnectionAssetDetails {
                source_asset_code: r.read_var_octets()?,
                source_asset_scale: r.read_u8()?,
            },
            STREAM_CLOSE => Frame::StreamClose {
                stream_id: r.read_var_uint()?,
                code: StreamErrorCode(r.read_u8()?),
                message: r.read_var_octets()?,
            },
            STREAM_MONEY => Frame::StreamMoney {
                stream_id: r.read_var_uint()?,
                shares: r.read_var_uint()?,
            },
            STREAM_MAX_MONEY => Frame::StreamMaxMoney {
                stream_id: r.read_var_uint()?,
                receive_max: read_var_uint_saturating(r)?,
                total_received: r.read_var_uint()?,
            },
            STREAM_MONEY_BLOCKED => Frame::StreamMoneyBlocked {
                stream_id: r.read_var_uint()?,
                send_max: read_var_uint_saturating(r)?,
                total_sent: r.read_var_uint()?,
            },
            STREAM_DATA => Frame::StreamData {
                stream_id: r.read_var_uint()?,
                offset: r.read_var_uint()?,
                data: r.read_var_octets()?,
            },
            STREAM_MAX_DATA => Frame::StreamMaxData {
                stream_id: r.read_var_uint()?,
                max_offset: r.read_var_uint()?,
            },
            STREAM_DATA_BLOCKED => Frame::StreamDataBlocked {
                stream_id: r.read_var_uint()?,
                max_offset: r.read_var_uint()?,
            },
            STREAM_RECEIPT => Frame::StreamReceipt {
                stream_id: r.read_var_uint()?,
                receipt: r.read_var_octets()?,
            },
            frame_type => Frame::Unknown {
                frame_type,
                contents,
            },
        })
    }

    /// Bytes of the contents (without type byte and length prefix).
    pub fn contents_len(&self) -> usize {
        use oer::{var_octets_len as vo, var_uint_len as vu};
        match *self {
            Frame::ConnectionClose { message, .. } => 1 + vo(message.len()),
            Frame::ConnectionNewAddress { source_account } => vo(source_account.len()),
            Frame::ConnectionMaxData { max_offset: v }
            | Frame::ConnectionDataBlocked { max_offset: v }
            | Frame::ConnectionMaxStreamId { max_stream_id: v }
            | Frame::ConnectionStreamIdBlocked { max_stream_id: v } => vu(v),
            Frame::ConnectionAssetDetails {
                source_asset_code, ..
            } => vo(source_asset_code.len()) + 1,
            Frame::StreamClose {
                stream_id, message, ..
            } => vu(stream_id) + 1 + vo(message.len()),
            Frame::StreamMoney { stream_id, shares } => vu(stream_id) + vu(shares),
            Frame::StreamMaxMoney {
                stream_id,
                receive_max: a,
                total_received: b,
            }
            | Frame::StreamMoneyBlocked {
                stream_id,
                send_max: a,
                total_sent: b,
            } => vu(stream_id) + vu(a) + vu(b),
            Frame::StreamData {
                stream_id,
                offset,
                data,
            } => vu(stream_id) + vu(offset) + vo(data.len()),
            Frame::StreamMaxData {
                stream_id,
                max_offset,
            }
            | Frame::StreamDataBlocked {
                stream_id,
                max_offset,
            } => vu(stream_id) + vu(max_offset),
            Frame::StreamReceipt { stream_id, receipt } => vu(stream_id) + vo(receipt.len()),
            Frame::Unknown { contents, .. } => contents.len(),
        }
    }

    /// Bytes the whole frame takes: type, length prefix, contents.
    pub fn encoded_len(&self) -> usize {
        1 + oer::var_octets_len(self.contents_len())
    }

    /// Writes type byte, length prefix and contents in canonical OER.
    pub fn write_to<B: BufMut + ?Sized>(&self, buf: &mut B) {
        buf.put_u8(self.frame_type());
        oer::put_length(buf, self.contents_len());
        let vu = oer::put_var_uint::<B>;
        let vo = oer::put_var_octets::<B>;
        match *self {
            Frame::ConnectionClose { code, message } => {
                buf.put_u8(code.0);
                vo(buf, message);
            }
            Frame::ConnectionNewAddress { source_account } => vo(buf, source_account),
            Frame::ConnectionMaxData { max_offset: v }
            | Frame::ConnectionDataBlocked { max_offset: v }
            | Frame::ConnectionMaxStreamId { max_stream_id: v }
            | Frame::ConnectionStreamIdBlocked { max_stream_id: v } => vu(buf, v),
            Frame::ConnectionAssetDetails {
                source_asset_code,
                source_asset_scale,
            } => {
                vo(buf, source_asset_code);
                buf.put_u8(source_asset_scale);
            }
            Frame::StreamClose {
                stream_id,
                code,
                message,
            } => {
                vu(buf, stream_id);
                buf.put_u8(code.0);
                vo(buf, message);
            }
            Frame::StreamMoney { stream_id, shares } => {
                vu(buf, stream_id);
                vu(buf, shares);
            }
            Frame::StreamMaxMoney {
                stream_id,
                receive_max: a,
                total_received: b,
            }
            | Frame::StreamMoneyBlocked {
                stream_id,
                send_max: a,
                total_sent: b,
            } => {
                vu(buf, stream_id);
                vu(buf, a);
                vu(buf, b);
            }
            Frame::StreamData {
                stream_id,
                offset,
                data,
            } => {
                vu(buf, stream_id);
                vu(buf, offset);
                vo(buf, data);
            }
            Frame::StreamMaxData {
                stream_id,
                max_offset,
            }
            | Frame::StreamDataBlocked {
                stream_id,
                max_offset,
            } => {
                vu(buf, stream_id);
                vu(buf, max_offset);
            }
            Frame::StreamReceipt { stream_id, receipt } => {
                vu(buf, stream_id);
                vo(buf, receipt);
            }
            Frame::Unknown { contents, .. } => buf.put_slice(contents),
        }
    }
}

/// A decoded STREAM packet. The frames stay in the buffer; iterate them
/// with [`Packet::frames`].
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub packet_type: PacketType,
    pub sequence: u64,
    /// In a Prepare: the least the receiver should accept. In a Fulfill or
    /// Reject: the amount that arrived (RFC 29 "STREAM Packet").
    pub prepare_amount: u64,
    frame_count: usize,
    frames: &'a [u8],
    junk: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Decodes and checks a whole plaintext packet: version 1, a known ILP
    /// packet type, and every frame. Junk after the frames is allowed.
    pub fn decode(buf: &'a [u8]) -> Result<Packet<'a>> {
        let mut r = Reader::new(buf);
        let version = r.read_u8()?;
        if version != VERSION {
            return Err(DecodeError::Invalid("STREAM version"));
        }
        let packet_type = PacketType::from_u8(r.read_u8()?)?;
        let sequence = r.read_var_uint()?;
        let prepare_amount = r.read_var_uint()?;
        // Each frame is at least a type byte and a length byte.
        let frame_count = r.read_count(2)?;
        let start = r.position();
        for _ in 0..frame_count {
            let ty = r.read_u8()?;
            let contents = r.read_var_octets()?;
            Frame::decode_contents(ty, contents)?;
        }
        let end = r.position();
        Ok(Packet {
            packet_type,
            sequence,
            prepare_amount,
            frame_count,
            frames: buf.get(start..end).unwrap_or(&[]),
            junk: r.rest(),
        })
    }

    /// Number of frames, unknown ones included.
    pub fn frame_count(&self) -> usize {
        self.frame_count
    }

    /// The frames in order. They were checked by [`Packet::decode`].
    pub fn frames(&self) -> Frames<'a> {
        Frames {
            r: Reader::new(self.frames),
            left: self.frame_count,
        }
    }

    /// Bytes after the frames (padding or fields of a later version).
    pub fn junk(&self) -> &'a [u8] {
        self.junk
    }

    /// The encoded frames region, exactly as received.
    pub fn raw_frames(&self) -> &'a [u8] {
        self.frames
    }
}

/// Iterator over a checked packet's frames.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    r: Reader<'a>,
    left: usize,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Checked at decode time; a failure here cannot happen, and ends
        // the iteration rather than panicking.
        let ty = self.r.read_u8().ok()?;
        let contents = self.r.read_var_octets().ok()?;
        match Frame::decode_contents(ty, contents) {
            Ok(f) => Some(f),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// Writes a STREAM packet in canonical OER, without junk.
#[derive(Debug, Clone, Copy)]
pub struct PacketBuilder<'f, 'a> {
    pub packet_type: PacketType,
    pub sequence: u64,
    pub prepare_amount: u64,
    pub frames: &'f [Frame<'a>],
}

impl PacketBuilder<'_, '_> {
    pub fn encoded_len(&self) -> usize {
        2 + oer::var_uint_len(self.sequence)
            + oer::var_uint_len(self.prepare_amount)
            + oer::var_uint_len(self.frames.len() as u64)
            + self.frames.iter().map(Frame::encoded_len).sum::<usize>()
    }

    pub fn write_to<B: BufMut + ?Sized>(&self, buf: &mut B) {
        buf.put_u8(VERSION);
        buf.put_u8(self.packet_type as u8);
        oer::put_var_uint(buf, self.sequence);
        oer::put_var_uint(buf, self.prepare_amount);
        oer::put_var_uint(buf, self.frames.len() as u64);
        for f in self.frames {
            f.write_to(buf);
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_junk() {
        let b = [1, 12, 1, 5, 2, 1, 0, 1, 1, 0x11, 4, 1, 1, 1, 7, 0, 0, 0];
        let p = Packet::decode(&b).unwrap();
        assert_eq!(p.packet_type, PacketType::Prepare);
        assert_eq!(p.sequence, 5);
        assert_eq!(p.prepare_amount, 256);
        let f: Vec<_> = p.frames().collect();
        assert_eq!(
            f,
            [Frame::StreamMoney {
                stream_id: 1,
                shares: 7
            }]
        );
        assert_eq!(p.junk(), &[0, 0, 0]);
        let out = PacketBuilder {
            packet_type: p.packet_type,
            sequence: p.sequence,
            prepare_amount: p.prepare_amount,
            frames: &f,
        }
        .to_vec();
        assert_eq!(out, &b[..15]);
    }

    #[test]
    fn refusals() {
        assert_eq!(Packet::decode(&[]), Err(DecodeError::Truncated));
        assert!(Packet::decode(&[2, 12, 1, 0, 1, 0, 1, 0]).is_err());
        assert_eq!(
            Packet::decode(&[1, 15, 1, 0, 1, 0, 1, 0]),
            Err(DecodeError::UnknownType(15))
        );
        // Two frames announced, one present.
        assert!(Packet::decode(&[1, 12, 1, 0, 1, 0, 1, 2, 0x11, 4, 1, 1, 1, 1]).is_err());
        // A known frame whose contents are short.
        assert!(Packet::decode(&[1, 12, 1, 0, 1, 0, 1, 1, 0x11, 2, 1, 1]).is_err());
    }

    #[test]
    fn unknown_frames_are_kept() {
        let b = [1, 13, 1, 0, 1, 0, 1, 1, 0x7e, 2, 0xaa, 0xbb];
        let p = Packet::decode(&b).unwrap();
        let f: Vec<_> = p.frames().collect();
        assert_eq!(
            f,
            [Frame::Unknown {
                frame_type: 0x7e,
                contents: &[0xaa, 0xbb]
            }]
        );
        assert_eq!(f[0].encoded_len(), 4);
    }

    #[test]
    fn saturating_max_money() {
        let mut r = Reader::new(&[9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]);
        assert_eq!(read_var_uint_saturating(&mut r), Ok(u64::MAX));
        assert_eq!(r.rest(), &[0xff]);
        let mut r = Reader::new(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            read_var_uint_saturating(&mut r),
            Err(DecodeError::NonCanonical)
        );
    }
}

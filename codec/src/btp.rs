//! BTP/2.0 (RFC 23): the envelope that carries ILP packets over
//! WebSocket between two peers.
//!
//! [`Btp`] is a checked view over one BTP packet (one binary WebSocket
//! message). `new_checked` walks the whole packet once; afterwards every
//! accessor is infallible, allocation-free and panic-free. The builders write
//! canonical OER into any [`BufMut`].

use core::ops::Range;

use bytes::BufMut;

use crate::error::{DecodeError, Result};
use crate::oer::{
    length_prefix_len, put_length, put_var_octets, put_var_uint, var_octets_len, var_uint_len,
    Reader,
};

/// BTP packet types still used by BTP/2.0 (RFC 23 "BTP Type IDs"). Types
/// 3–5 are BTP/1.0 Prepare/Fulfill/Reject and are refused with
/// [`DecodeError::UnknownType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BtpType {
    Response = 1,
    Error = 2,
    Message = 6,
    Transfer = 7,
}

impl BtpType {
    /// Maps a type byte to a BTP/2.0 type.
    #[inline]
    pub fn from_u8(b: u8) -> Result<Self> {
        match b {
            1 => Ok(BtpType::Response),
            2 => Ok(BtpType::Error),
            6 => Ok(BtpType::Message),
            7 => Ok(BtpType::Transfer),
            other => Err(DecodeError::UnknownType(other)),
        }
    }

    /// Message and Transfer ask for a reply; Response and Error are replies.
    #[inline]
    pub fn is_request(self) -> bool {
        matches!(self, BtpType::Message | BtpType::Transfer)
    }
}

/// protocolData contentType: application/octet-stream (RFC 23 "Sub-Protocol Data Format").
pub const CONTENT_OCTET_STREAM: u8 = 0;
/// protocolData contentType: text/plain; charset=utf-8.
pub const CONTENT_TEXT: u8 = 1;
/// protocolData contentType: application/json.
pub const CONTENT_JSON: u8 = 2;

/// Protocol name reserved for ILP packets (RFC 23 "Message").
pub const PROTOCOL_ILP: &[u8] = b"ilp";
/// Primary protocol name of the auth Message (RFC 23 "Authentication").
pub const PROTOCOL_AUTH: &[u8] = b"auth";
/// Optional user name entry of the auth Message (draft 6, ilp-plugin-btp).
pub const PROTOCOL_AUTH_USERNAME: &[u8] = b"auth_username";
/// Required token entry of the auth Message.
pub const PROTOCOL_AUTH_TOKEN: &[u8] = b"auth_token";

/// Largest `data` a BTP Error may carry (RFC 23 ASN.1: SIZE (0..8192)).
pub const MAX_ERROR_DATA: usize = 8192;

/// Size of the fixed header: type (1) + requestId (4).
const FIXED_HEADER: usize = 5;
/// Smallest protocolData entry: empty name, contentType, empty data.
const MIN_ENTRY_LEN: usize = 3;

/// One protocolData entry, borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolData<'a> {
    pub name: &'a [u8],
    pub content_type: u8,
    pub data: &'a [u8],
}

impl<'a> ProtocolData<'a> {
    /// An entry with the given name, content type and data.
    #[inline]
    pub const fn new(name: &'a [u8], content_type: u8, data: &'a [u8]) -> Self {
        ProtocolData {
            name,
            content_type,
            data,
        }
    }

    /// Bytes this entry takes on the wire.
    #[inline]
    pub const fn encoded_len(&self) -> usize {
        var_octets_len(self.name.len()) + 1 + var_octets_len(self.data.len())
    }
}

/// Iterator over the protocolData entries of a checked packet.
#[derive(Debug, Clone)]
pub struct ProtocolDataIter<'a> {
    reader: Reader<'a>,
    left: usize,
}

impl<'a> Iterator for ProtocolDataIter<'a> {
    type Item = ProtocolData<'a>;

    #[inline]
    fn next(&mut self) -> Option<ProtocolData<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The entries were validated by `new_checked`, so these reads succeed;
        // if they did not, ending the iteration is the safe answer.
        match read_entry(&mut self.reader) {
            Ok(e) => Some(e),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

#[inline]
fn read_entry<'a>(r: &mut Reader<'a>) -> Result<ProtocolData<'a>> {
    let name = r.read_var_octets()?;
    let content_type = r.read_u8()?;
    let data = r.read_var_octets()?;
    Ok(ProtocolData {
        name,
        content_type,
        data,
    })
}

/// A checked view over one BTP/2.0 packet.
#[derive(Debug, Clone)]
pub struct Btp<T: AsRef<[u8]>> {
    buf: T,
    ty: BtpType,
    /// End of the content (what the length determinant covers).
    end: usize,
    /// Offset of the first protocolData entry.
    entries: usize,
    /// Number of protocolData entries.
    count: usize,
    /// Error: offset of the 3-byte code; Transfer: offset of the amount.
    body: usize,
    /// Error only: name, triggeredAt and data ranges (empty otherwise).
    name: (usize, usize),
    triggered_at: (usize, usize),
    data: (usize, usize),
}

impl<T: AsRef<[u8]>> Btp<T> {
    /// Checks the whole packet once (RFC 23 "Overview",
    /// "Sub-Protocol Data Format"): type, requestId, canonical length
    /// determinant (content must fit the buffer), the type-specific body and
    /// every protocolData entry. Bytes after the
    /// protocolData inside the content, and bytes after the content, are
    /// ignored (RFC 30: ignore trailing bytes).
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        let mut r = Reader::new(b);
        let ty = BtpType::from_u8(r.read_u8()?)?;
        r.read_u32()?;
        let len = r.read_length()?;
        let start = r.position();
        let end = start.checked_add(len).ok_or(DecodeError::BadLength)?;
        let content = b.get(start..end).ok_or(DecodeError::Truncated)?;
        let mut c = Reader::new(content);

        let mut name = (0, 0);
        let mut triggered_at = (0, 0);
        let mut data = (0, 0);
        let body = start;
        match ty {
            BtpType::Error => {
                // RFC 23: code IA5String (SIZE(3)), name, triggeredAt, data.
                c.read_array::<3>()?;
                name = var_range(&mut c, start)?;
                triggered_at = var_range(&mut c, start)?;
                data = var_range(&mut c, start)?;
                if data.1 - data.0 > MAX_ERROR_DATA {
                    return Err(DecodeError::FieldTooLong("BTP error data"));
                }
            }
            BtpType::Transfer => {
                c.read_u64()?;
            }
            BtpType::Message | BtpType::Response => {}
        }

        let count = c.read_count(MIN_ENTRY_LEN)?;
        let entries = start + c.position();
        for _ in 0..count {
            read_entry(&mut c)?;
        }
        Ok(Btp {
            buf,
            ty,
            end,
            entries,
            count,
            body,
            name,
            triggered_at,
            data,
        })
    }

    /// The packet type.
    #[inline]
    pub fn packet_type(&self) -> BtpType {
        self.ty
    }

    /// The requestId (a reply reuses the request's id).
    #[inline]
    pub fn request_id(&self) -> u32 {
        let b = self.buf.as_ref();
        match b.get(1..5) {
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            _ => 0,
        }
    }

    /// All protocolData entries in order.
    #[inline]
    pub fn protocol_data(&self) -> ProtocolDataIter<'_> {
        let b = self.buf.as_ref();
        let content = b.get(self.entries..self.end).unwrap_or(&[]);
        ProtocolDataIter {
            reader: Reader::new(content),
            left: self.count,
        }
    }

    /// Number of protocolData entries.
    #[inline]
    pub fn protocol_data_count(&self) -> usize {
        self.count
    }

    /// The primary (first) entry, which says what the packet is about.
    #[inline]
    pub fn primary(&self) -> Option<ProtocolData<'_>> {
        self.protocol_data().next()
    }

    /// The first entry named `name`.
    #[inline]
    pub fn get(&self, name: &[u8]) -> Option<ProtocolData<'_>> {
        self.protocol_data().find(|e| e.name == name)
    }

    /// Byte range, inside the whole buffer, of the ILP packet when the
    /// primary entry is `ilp` (RFC 23 "Message"), so the caller can split it out
    /// of a `BytesMut` without copying.
    #[inline]
    pub fn ilp_range(&self) -> Option<Range<usize>> {
        if self.count == 0 {
            return None;
        }
        let b = self.buf.as_ref();
        let mut r = Reader::new(b.get(self.entries..self.end)?);
        if r.read_var_octets().ok()? != PROTOCOL_ILP {
            return None;
        }
        r.read_u8().ok()?;
        let len = r.read_length().ok()?;
        let start = self.entries + r.position();
        Some(start..start + len)
    }

    /// The ILP packet carried by the primary `ilp` entry.
    #[inline]
    pub fn ilp(&self) -> Option<&[u8]> {
        let range = self.ilp_range()?;
        self.buf.as_ref().get(range)
    }

    /// Error: the 3-character code (e.g. `F00`); zeros for other types.
    #[inline]
    pub fn error_code(&self) -> [u8; 3] {
        if self.ty != BtpType::Error {
            return [0; 3];
        }
        match self.buf.as_ref().get(self.body..self.body + 3) {
            Some(&[a, b, c]) => [a, b, c],
            _ => [0; 3],
        }
    }

    /// Error: the error name (e.g. `NotAcceptedError`); empty otherwise.
    #[inline]
    pub fn error_name(&self) -> &[u8] {
        self.slice(self.name)
    }

    /// Error: triggeredAt, raw GeneralizedTime bytes
    /// (RFC 30 "Variable-length Timestamps"); empty otherwise. Parse with
    /// `codec::time` when the value is needed.
    #[inline]
    pub fn triggered_at(&self) -> &[u8] {
        self.slice(self.triggered_at)
    }

    /// Error: the data field (≤ 8192 bytes); empty otherwise.
    #[inline]
    pub fn error_data(&self) -> &[u8] {
        self.slice(self.data)
    }

    /// Transfer: the amount; 0 for other types.
    #[inline]
    pub fn amount(&self) -> u64 {
        if self.ty != BtpType::Transfer {
            return 0;
        }
        match self.buf.as_ref().get(self.body..self.body + 8) {
            Some(s) => s.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64),
            None => 0,
        }
    }

    /// Length of the packet proper (header + content), without any bytes the
    /// buffer holds after it.
    #[inline]
    pub fn packet_len(&self) -> usize {
        self.end
    }

    /// The whole buffer.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buf
    }

    #[inline]
    fn slice(&self, (s, e): (usize, usize)) -> &[u8] {
        self.buf.as_ref().get(s..e).unwrap_or(&[])
    }
}

/// Reads a VarOctetString and returns its range shifted by `base`.
#[inline]
fn var_range(r: &mut Reader<'_>, base: usize) -> Result<(usize, usize)> {
    let len = r.read_length()?;
    let s = base + r.position();
    r.read_bytes(len)?;
    Ok((s, s + len))
}

// ---------------------------------------------------------------------------
// Builders (canonical OER, RFC 27 "send canonical").

/// Bytes the protocolData SEQUENCE OF takes (count + entries).
#[inline]
pub fn protocol_data_len(entries: &[ProtocolData<'_>]) -> usize {
    var_uint_len(entries.len() as u64) + entries.iter().map(|e| e.encoded_len()).sum::<usize>()
}

#[inline]
fn put_header<B: BufMut>(buf: &mut B, ty: BtpType, request_id: u32, content_len: usize) {
    buf.put_u8(ty as u8);
    buf.put_u32(request_id);
    put_length(buf, content_len);
}

#[inline]
fn put_entries<B: BufMut>(buf: &mut B, entries: &[ProtocolData<'_>]) {
    put_var_uint(buf, entries.len() as u64);
    for e in entries {
        put_var_octets(buf, e.name);
        buf.put_u8(e.content_type);
        put_var_octets(buf, e.data);
    }
}

/// Total size of a packet whose content is `content_len` bytes.
#[inline]
const fn packet_len(content_len: usize) -> usize {
    FIXED_HEADER + length_prefix_len(content_len) + content_len
}

/// Exact encoded size of [`write_packet`]'s output.
#[inline]
pub fn packet_encoded_len(ty: BtpType, entries: &[ProtocolData<'_>]) -> usize {
    packet_len(body_len(ty) + protocol_data_len(entries))
}

#[inline]
fn body_len(ty: BtpType) -> usize {
    match ty {
        BtpType::Transfer => 8,
        // code + empty name/triggeredAt/data, see write_packet.
        BtpType::Error => 3 + var_octets_len(DEFAULT_ERROR_NAME.len()) + 2,
        BtpType::Message | BtpType::Response => 0,
    }
}

const DEFAULT_ERROR_NAME: &[u8] = b"NotAcceptedError";

/// Writes a Message or Response (or a Transfer of amount 0) with the given
/// protocolData. Use [`write_transfer`] for a Transfer with an amount and
/// [`write_error`] for an Error; an Error passed here is written as
/// `F00 NotAcceptedError` with empty triggeredAt and data.
pub fn write_packet<B: BufMut>(
    buf: &mut B,
    ty: BtpType,
    request_id: u32,
    entries: &[ProtocolData<'_>],
) {
    match ty {
        BtpType::Transfer => write_transfer(buf, request_id, 0, entries),
        BtpType::Error => write_error(
            buf,
            request_id,
            b"F00",
            DEFAULT_ERROR_NAME,
            b"",
            b"",
            entries,
        ),
        BtpType::Message | BtpType::Response => {
            put_header(buf, ty, request_id, protocol_data_len(entries));
            put_entries(buf, entries);
        }
    }
}

/// Writes a Transfer (type 7) of `amount` (RFC 23).
pub fn write_transfer<B: BufMut>(
    buf: &mut B,
    request_id: u32,
    amount: u64,
    entries: &[ProtocolData<'_>],
) {
    put_header(
        buf,
        BtpType::Transfer,
        request_id,
        8 + protocol_data_len(entries),
    );
    buf.put_u64(amount);
    put_entries(buf, entries);
}

/// Content length of a packet with one `ilp` entry of `ilp_len` bytes.
#[inline]
const fn ilp_content_len(ilp_len: usize) -> usize {
    // count `01 01` + name `03 "ilp"` + contentType + data.
    2 + 4 + 1 + var_octets_len(ilp_len)
}

/// Exact size of [`write_ilp_message`]'s output, so callers reserve once.
#[inline]
pub const fn ilp_message_len(ilp_len: usize) -> usize {
    packet_len(ilp_content_len(ilp_len))
}

/// Exact size of [`write_ilp_response`]'s output.
#[inline]
pub const fn ilp_response_len(ilp_len: usize) -> usize {
    packet_len(ilp_content_len(ilp_len))
}

#[inline]
fn write_ilp<B: BufMut>(buf: &mut B, ty: BtpType, request_id: u32, ilp_packet: &[u8]) {
    put_header(buf, ty, request_id, ilp_content_len(ilp_packet.len()));
    buf.put_slice(&[0x01, 0x01, 0x03, b'i', b'l', b'p', CONTENT_OCTET_STREAM]);
    put_var_octets(buf, ilp_packet);
}

/// Writes a Message whose only entry is `ilp` carrying a Prepare (RFC 23 "Message").
#[inline]
pub fn write_ilp_message<B: BufMut>(buf: &mut B, request_id: u32, ilp_packet: &[u8]) {
    write_ilp(buf, BtpType::Message, request_id, ilp_packet);
}

/// Writes a Response whose only entry is `ilp` carrying a Fulfill or Reject
/// (docs/design.md "Carrying ILP over BTP": ILP Rejects are not BTP Errors).
#[inline]
pub fn write_ilp_response<B: BufMut>(buf: &mut B, request_id: u32, ilp_packet: &[u8]) {
    write_ilp(buf, BtpType::Response, request_id, ilp_packet);
}

/// Writes a Response with no protocolData (`01 id 02 01 00`), the success
/// reply to auth and to side-protocol Messages (RFC 23 "Authentication").
#[inline]
pub fn write_empty_response<B: BufMut>(buf: &mut B, request_id: u32) {
    put_header(buf, BtpType::Response, request_id, 2);
    buf.put_slice(&[0x01, 0x00]);
}

/// Exact size of [`write_error`]'s output.
#[inline]
pub fn error_len(
    name_len: usize,
    triggered_at_len: usize,
    data_len: usize,
    entries: &[ProtocolData<'_>],
) -> usize {
    packet_len(error_content_len(
        name_len,
        triggered_at_len,
        data_len,
        entries,
    ))
}

#[inline]
fn error_content_len(
    name_len: usize,
    triggered_at_len: usize,
    data_len: usize,
    entries: &[ProtocolData<'_>],
) -> usize {
    3 + var_octets_len(name_len)
        + var_octets_len(triggered_at_len)
        + var_octets_len(data_len)
        + protocol_data_len(entries)
}

/// Writes an Error (type 2, RFC 23). `triggered_at` is GeneralizedTime text
/// (see `codec::time`); `data` longer than 8192 bytes is truncated so the
/// packet stays valid.
pub fn write_error<B: BufMut>(
    buf: &mut B,
    request_id: u32,
    code: &[u8; 3],
    name: &[u8],
    triggered_at: &[u8],
    data: &[u8],
    entries: &[ProtocolData<'_>],
) {
    let data = &data[..data.len().min(MAX_ERROR_DATA)];
    put_header(
        buf,
        BtpType::Error,
        request_id,
        error_content_len(name.len(), triggered_at.len(), data.len(), entries),
    );
    buf.put_slice(code);
    put_var_octets(buf, name);
    put_var_octets(buf, triggered_at);
    put_var_octets(buf, data);
    put_entries(buf, entries);
}

// ---------------------------------------------------------------------------
// Authentication (RFC 23 "Authentication").

/// Credentials from an auth Message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth<'a> {
    pub username: Option<&'a [u8]>,
    pub token: &'a [u8],
}

/// Writes the auth Message: `auth` (octet-stream, empty), then
/// `auth_username` when given, then `auth_token`, both text, as
/// ilp-plugin-btp does (docs/design.md "BTP authentication").
pub fn write_auth<B: BufMut>(buf: &mut B, request_id: u32, username: Option<&[u8]>, token: &[u8]) {
    let auth = ProtocolData::new(PROTOCOL_AUTH, CONTENT_OCTET_STREAM, b"");
    let tok = ProtocolData::new(PROTOCOL_AUTH_TOKEN, CONTENT_TEXT, token);
    match username {
        Some(u) => {
            let user = ProtocolData::new(PROTOCOL_AUTH_USERNAME, CONTENT_TEXT, u);
            write_packet(buf, BtpType::Message, request_id, &[auth, user, tok]);
        }
        None => write_packet(buf, BtpType::Message, request_id, &[auth, tok]),
    }
}

/// Exact size of [`write_auth`]'s output.
pub fn auth_len(username: Option<&[u8]>, token: &[u8]) -> usize {
    let mut content = var_uint_len(if username.is_some() { 3 } else { 2 })
        + ProtocolData::new(PROTOCOL_AUTH, 0, b"").encoded_len()
        + ProtocolData::new(PROTOCOL_AUTH_TOKEN, 1, token).encoded_len();
    if let Some(u) = username {
        content += ProtocolData::new(PROTOCOL_AUTH_USERNAME, 1, u).encoded_len();
    }
    packet_len(content)
}

/// Reads the credentials of an auth Message (RFC 23 "Authentication";
/// docs/design.md "BTP auth": `auth_username` optional, `auth_token` as
/// text or octets). The packet
/// must be a Message whose primary entry is `auth`; `auth_token` is
/// required; any of the three auth names appearing twice is refused.
pub fn parse_auth<T: AsRef<[u8]>>(msg: &Btp<T>) -> Result<Auth<'_>> {
    if msg.packet_type() != BtpType::Message {
        return Err(DecodeError::Invalid("BTP auth must be a Message"));
    }
    let mut it = msg.protocol_data();
    match it.next() {
        Some(e) if e.name == PROTOCOL_AUTH => {}
        _ => return Err(DecodeError::Invalid("BTP auth: primary entry is not auth")),
    }
    let mut username = None;
    let mut token = None;
    for e in it {
        if e.name == PROTOCOL_AUTH {
            return Err(DecodeError::Invalid("BTP auth: duplicate auth"));
        } else if e.name == PROTOCOL_AUTH_USERNAME {
            if username.replace(e.data).is_some() {
                return Err(DecodeError::Invalid("BTP auth: duplicate auth_username"));
            }
        } else if e.name == PROTOCOL_AUTH_TOKEN {
            if e.content_type != CONTENT_TEXT && e.content_type != CONTENT_OCTET_STREAM {
                return Err(DecodeError::Invalid("BTP auth: auth_token content type"));
            }
            if token.replace(e.data).is_some() {
                return Err(DecodeError::Invalid("BTP auth: duplicate auth_token"));
            }
        }
    }
    match token {
        Some(token) => Ok(Auth { username, token }),
        None => Err(DecodeError::Invalid("BTP auth: missing auth_token")),
    }
}

// ---------------------------------------------------------------------------
// Error codes (RFC 23 "Error Codes").

/// T00: temporary, retry after 1–60 s with back-off.
pub const ERR_UNREACHABLE: [u8; 3] = *b"T00";
/// F00: not accepted (e.g. bad credentials).
pub const ERR_NOT_ACCEPTED: [u8; 3] = *b"F00";
/// F01: invalid fields (e.g. unreadable packet).
pub const ERR_INVALID_FIELDS: [u8; 3] = *b"F01";
pub const ERR_TRANSFER_NOT_FOUND: [u8; 3] = *b"F03";
pub const ERR_INVALID_FULFILLMENT: [u8; 3] = *b"F04";
pub const ERR_DUPLICATE_ID: [u8; 3] = *b"F05";
pub const ERR_ALREADY_ROLLED_BACK: [u8; 3] = *b"F06";
pub const ERR_ALREADY_FULFILLED: [u8; 3] = *b"F07";
pub const ERR_INSUFFICIENT_BALANCE: [u8; 3] = *b"F08";

/// The RFC 23 name of a BTP error code, e.g. `F00` → `NotAcceptedError`.
pub fn error_name_for(code: &[u8; 3]) -> Option<&'static str> {
    Some(match code {
        b"T00" => "UnreachableError",
        b"F00" => "NotAcceptedError",
        b"F01" => "InvalidFieldsError",
        b"F03" => "TransferNotFoundError",
        b"F04" => "InvalidFulfillmentError",
        b"F05" => "DuplicateIdError",
        b"F06" => "AlreadyRolledBackError",
        b"F07" => "AlreadyFulfilledError",
        b"F08" => "InsufficientBalanceError",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn auth_example_rfc23() {
        let want = hex(
            "062a2b2c2d310103046175746800000d617574685f757365726e616d650105616c6963650a617574685f746f6b656e0106736563726574",
        );
        let mut out = Vec::new();
        write_auth(&mut out, 0x2a2b2c2d, Some(b"alice"), b"secret");
        assert_eq!(out, want);
        assert_eq!(auth_len(Some(b"alice"), b"secret"), want.len());
        let p = Btp::new_checked(&want[..]).unwrap();
        let a = parse_auth(&p).unwrap();
        assert_eq!(a.username, Some(&b"alice"[..]));
        assert_eq!(a.token, b"secret");
        let mut reply = Vec::new();
        write_empty_response(&mut reply, 0x2a2b2c2d);
        assert_eq!(reply, hex("012a2b2c2d020100"));
    }

    #[test]
    fn rejects_btp1_types_and_bad_lengths() {
        assert_eq!(
            Btp::new_checked(&hex("0300000001020100")[..]).unwrap_err(),
            DecodeError::UnknownType(3)
        );
        // Length says 3 but only 2 bytes follow.
        assert_eq!(
            Btp::new_checked(&hex("0100000001030100")[..]).unwrap_err(),
            DecodeError::Truncated
        );
        // Non-canonical long-form length.
        assert_eq!(
            Btp::new_checked(&hex("010000000181020100")[..]).unwrap_err(),
            DecodeError::NonCanonical
        );
        // Count larger than the content can hold.
        assert!(Btp::new_checked(&hex("0100000001020105")[..]).is_err());
    }

    #[test]
    fn trailing_bytes_inside_content_accepted() {
        let buf = hex("0100000001040100beef");
        let p = Btp::new_checked(&buf[..]).unwrap();
        assert_eq!(p.protocol_data().count(), 0);
        assert_eq!(p.packet_len(), 10);
    }

    #[test]
    fn auth_rules() {
        let mut out = Vec::new();
        write_auth(&mut out, 1, None, b"tok");
        let p = Btp::new_checked(&out[..]).unwrap();
        assert_eq!(
            parse_auth(&p).unwrap(),
            Auth {
                username: None,
                token: b"tok"
            }
        );

        let dup = [
            ProtocolData::new(b"auth", 0, b""),
            ProtocolData::new(b"auth_token", 1, b"a"),
            ProtocolData::new(b"auth_token", 1, b"b"),
        ];
        out.clear();
        write_packet(&mut out, BtpType::Message, 1, &dup);
        assert!(parse_auth(&Btp::new_checked(&out[..]).unwrap()).is_err());

        let missing = [ProtocolData::new(b"auth", 0, b"")];
        out.clear();
        write_packet(&mut out, BtpType::Message, 1, &missing);
        assert!(parse_auth(&Btp::new_checked(&out[..]).unwrap()).is_err());

        let not_primary = [
            ProtocolData::new(b"auth_token", 1, b"a"),
            ProtocolData::new(b"auth", 0, b""),
        ];
        out.clear();
        write_packet(&mut out, BtpType::Message, 1, &not_primary);
        assert!(parse_auth(&Btp::new_checked(&out[..]).unwrap()).is_err());

        out.clear();
        write_packet(&mut out, BtpType::Response, 1, &dup[..2]);
        assert!(parse_auth(&Btp::new_checked(&out[..]).unwrap()).is_err());
    }

    #[test]
    fn ilp_range_and_lengths() {
        for n in [0usize, 1, 100, 119, 120, 127, 128, 300, 70_000] {
            let ilp: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut out = Vec::new();
            write_ilp_message(&mut out, 7, &ilp);
            assert_eq!(out.len(), ilp_message_len(n));
            let p = Btp::new_checked(&out[..]).unwrap();
            assert_eq!(p.packet_type(), BtpType::Message);
            assert_eq!(p.request_id(), 7);
            assert_eq!(&out[p.ilp_range().unwrap()], &ilp[..]);
            let e = [ProtocolData::new(b"ilp", 0, &ilp)];
            let mut again = Vec::new();
            write_packet(&mut again, BtpType::Message, 7, &e);
            assert_eq!(again, out);
            out.clear();
            write_ilp_response(&mut out, 7, &ilp);
            assert_eq!(out.len(), ilp_response_len(n));
            assert_eq!(Btp::new_checked(&out[..]).unwrap().ilp(), Some(&ilp[..]));
        }
        // `ilp` not primary: no range.
        let e = [
            ProtocolData::new(b"x", 0, b""),
            ProtocolData::new(b"ilp", 0, b"a"),
        ];
        let mut out = Vec::new();
        write_packet(&mut out, BtpType::Message, 7, &e);
        let p = Btp::new_checked(&out[..]).unwrap();
        assert_eq!(p.ilp_range(), None);
        assert_eq!(p.get(b"ilp").map(|e| e.data), Some(&b"a"[..]));
    }

    #[test]
    fn error_data_limit_and_names() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            1,
            b"F01",
            b"InvalidFieldsError",
            b"20180831025324.899Z",
            &[7u8; 9000],
            &[],
        );
        assert_eq!(out.len(), error_len(18, 19, MAX_ERROR_DATA, &[]));
        let p = Btp::new_checked(&out[..]).unwrap();
        assert_eq!(p.error_data().len(), MAX_ERROR_DATA);
        assert_eq!(&p.error_code(), b"F01");
        assert_eq!(error_name_for(&p.error_code()), Some("InvalidFieldsError"));
        assert_eq!(error_name_for(b"T00"), Some("UnreachableError"));
        assert_eq!(error_name_for(b"F02"), None);
        // Hand-build an Error with 8193 data bytes: refused.
        let mut bad = vec![2, 0, 0, 0, 1];
        let content_len = 3 + 1 + 1 + 3 + 8193 + 2;
        put_length(&mut bad, content_len);
        bad.extend_from_slice(b"F00\x00\x00");
        put_length(&mut bad, 8193);
        bad.extend_from_slice(&[0u8; 8193]);
        bad.extend_from_slice(&[1, 0]);
        assert_eq!(
            Btp::new_checked(&bad[..]).unwrap_err(),
            DecodeError::FieldTooLong("BTP error data")
        );
    }
}

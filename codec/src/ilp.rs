//! ILPv4 packets (RFC 27 "Specification") as typed views over a buffer.
//!
//! `new_checked` validates the whole envelope once and caches the field
//! offsets, so accessors neither re-parse nor panic. A forwarded Prepare is
//! patched in place with [`Prepare::set_amount`] and
//! [`Prepare::set_expires_at`] (content bytes 0..25, RFC 27 "ILP Prepare"); it is
//! never rebuilt. Builders write canonical OER into any [`BufMut`].
//!
//! A view's buffer must hold exactly one packet. Bytes inside the content
//! after the last field are accepted and kept (RFC 30 "Extensibility",
//! docs/design.md "OER"); bytes after the content are refused.

use core::fmt;

use bytes::{BufMut, BytesMut};

use crate::address;
use crate::error::{DecodeError, Result};
use crate::error_code::ErrorCode;
use crate::oer::{self, Reader};
use crate::time::parse_ilp_timestamp;
use crate::types::Expiry;

/// Largest `data` field of any ILP packet (docs/design.md "Size limits").
pub const MAX_DATA_LEN: usize = 32_767;
/// Largest Reject `message` in bytes (docs/design.md "Reject fields").
pub const MAX_MESSAGE_LEN: usize = 8_191;

/// Content offsets of the Prepare's fixed fields (RFC 27 "ILP Prepare").
const AMOUNT_AT: usize = 0;
const EXPIRY_AT: usize = 8;
const CONDITION_AT: usize = 25;
const DESTINATION_AT: usize = 57;

const ZERO32: [u8; 32] = [0; 32];
const ZERO17: [u8; 17] = [0; 17];

/// The ILPv4 packet type byte (RFC 27 "Type-Length Wrapper").
#[derive(Debug, Copy, Clone, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    Prepare = 12,
    Fulfill = 13,
    Reject = 14,
}

impl PacketType {
    #[inline]
    pub const fn from_u8(b: u8) -> Result<PacketType> {
        match b {
            12 => Ok(PacketType::Prepare),
            13 => Ok(PacketType::Fulfill),
            14 => Ok(PacketType::Reject),
            other => Err(DecodeError::UnknownType(other)),
        }
    }
}

/// The type of the packet in `buf`, from its first byte only.
#[inline]
pub fn packet_type(buf: &[u8]) -> Result<PacketType> {
    PacketType::from_u8(*buf.first().ok_or(DecodeError::Truncated)?)
}

/// Checks type byte and length determinant; returns the content offset.
/// The content must end exactly at the end of `buf`
/// (docs/design.md "Packet envelope").
#[inline]
fn envelope(buf: &[u8], want: PacketType) -> Result<usize> {
    let ty = packet_type(buf)?;
    if ty != want {
        return Err(DecodeError::Invalid("unexpected ILP packet type"));
    }
    let (len, used) = length_at(buf, 1)?;
    let start = 1 + used;
    let have = buf.len() - start;
    if len > have {
        Err(DecodeError::Truncated)
    } else if len < have {
        Err(DecodeError::Invalid("bytes after ILP packet"))
    } else {
        Ok(start)
    }
}

/// Reads a VarOctetString and returns its (absolute start, length).
#[inline]
fn var_octets_at(
    r: &mut Reader<'_>,
    base: usize,
    max: usize,
    what: &'static str,
) -> Result<(usize, usize)> {
    let len = r.read_length()?;
    if len > max {
        return Err(DecodeError::FieldTooLong(what));
    }
    let start = base + r.position();
    r.read_bytes(len)?;
    Ok((start, len))
}

/// Reads the length determinant at `at`: `(length, header bytes)`. The
/// short form and the one- and two-byte long forms (every length an ILP
/// field can have) are decoded inline with the same canonical-form rules
/// as [`oer::read_length`], which handles the rest
/// (RFC 30 "Length determinant").
#[inline(always)]
fn length_at(b: &[u8], at: usize) -> Result<(usize, usize)> {
    match b.get(at) {
        Some(&first) if first < 0x80 => Ok((first as usize, 1)),
        Some(0x81) => match b.get(at + 1) {
            Some(&len) if len >= 0x80 => Ok((len as usize, 2)),
            Some(_) => Err(DecodeError::NonCanonical),
            None => Err(DecodeError::Truncated),
        },
        Some(0x82) => match b.get(at + 1..at + 3) {
            Some(&[hi, lo]) if hi != 0 => Ok((((hi as usize) << 8) | lo as usize, 3)),
            Some(_) => Err(DecodeError::NonCanonical),
            None => Err(DecodeError::Truncated),
        },
        Some(_) => long_length_at(b, at),
        None => Err(DecodeError::Truncated),
    }
}

#[cold]
#[inline(never)]
fn long_length_at(b: &[u8], at: usize) -> Result<(usize, usize)> {
    oer::read_length(b.get(at..).unwrap_or(&[]))
}

/// Locates the VarOctetString at `at` that must end within `b`: returns
/// its (absolute start, length). Plain offsets instead of a `Reader` keep
/// the chain of dependent loads short (see [`Reject::new_checked`]).
#[inline(always)]
fn var_octets_in(b: &[u8], at: usize, max: usize, what: &'static str) -> Result<(usize, usize)> {
    let (len, used) = length_at(b, at)?;
    if len > max {
        return Err(DecodeError::FieldTooLong(what));
    }
    let start = at + used;
    // `start <= b.len()`: the determinant's bytes were read from `b`.
    if len > b.len() - start {
        return Err(DecodeError::Truncated);
    }
    Ok((start, len))
}

/// Panic-free sub-slice; offsets were checked by `new_checked`, the
/// fallback only guards against an `AsRef` that changes its answer.
#[inline(always)]
fn slice(buf: &[u8], start: usize, len: usize) -> &[u8] {
    buf.get(start..start + len).unwrap_or(&[])
}

#[inline(always)]
fn array<'a, const N: usize>(buf: &'a [u8], start: usize, zero: &'a [u8; N]) -> &'a [u8; N] {
    buf.get(start..start + N)
        .and_then(|s| s.try_into().ok())
        .unwrap_or(zero)
}

/// Writes the envelope header: type byte and content length.
#[inline]
fn put_header<B: BufMut>(buf: &mut B, ty: PacketType, content_len: usize) {
    buf.put_u8(ty as u8);
    oer::put_length(buf, content_len);
}

#[inline]
fn envelope_len(content_len: usize) -> usize {
    1 + oer::length_prefix_len(content_len) + content_len
}

// ---------------------------------------------------------------- Prepare

/// A checked ILP Prepare (type 12, RFC 27 "ILP Prepare") over a buffer `T`.
#[derive(Clone)]
pub struct Prepare<T: AsRef<[u8]>> {
    buf: T,
    /// Absolute offset of the content (after type and length).
    content: usize,
    destination: (usize, usize),
    data: (usize, usize),
    /// `expiresAt` parsed at check time, kept in sync by the setter.
    expires_at: u64,
}

impl<T: AsRef<[u8]>> Prepare<T> {
    /// Validates the whole packet once: type 12, canonical length that ends
    /// exactly at the end of `buf`, a valid 17-digit timestamp, a valid
    /// destination address and data of at most 32767 bytes.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        // Fixed offsets, then plain offsets for the two variable fields
        // (as in `Reject::new_checked`), rather than a `Reader`.
        let b = buf.as_ref();
        let content = envelope(b, PacketType::Prepare)?;
        let at = content + EXPIRY_AT;
        let timestamp: &[u8; 17] = b
            .get(at..at + 17)
            .and_then(|s| s.try_into().ok())
            .ok_or(DecodeError::Truncated)?;
        let expires_at = parse_ilp_timestamp(timestamp)?;
        if b.len() < content + DESTINATION_AT {
            return Err(DecodeError::Truncated);
        }
        let destination = var_octets_in(
            b,
            content + DESTINATION_AT,
            address::MAX_ADDRESS_LEN,
            "destination",
        )?;
        address::validate(slice(b, destination.0, destination.1))?;
        let data = var_octets_in(b, destination.0 + destination.1, MAX_DATA_LEN, "data")?;
        Ok(Prepare {
            buf,
            content,
            destination,
            data,
            expires_at,
        })
    }

    #[inline]
    pub fn amount(&self) -> u64 {
        u64::from_be_bytes(*array(self.buf.as_ref(), self.content + AMOUNT_AT, &[0; 8]))
    }

    /// The expiry, parsed once at check time.
    #[inline]
    pub fn expires_at(&self) -> Expiry {
        Expiry(self.expires_at)
    }

    /// The 17 timestamp digits as on the wire.
    #[inline]
    pub fn expires_at_raw(&self) -> &[u8; 17] {
        array(self.buf.as_ref(), self.content + EXPIRY_AT, &ZERO17)
    }

    #[inline]
    pub fn execution_condition(&self) -> &[u8; 32] {
        array(self.buf.as_ref(), self.content + CONDITION_AT, &ZERO32)
    }

    /// The destination address bytes (validated, ASCII).
    #[inline]
    pub fn destination(&self) -> &[u8] {
        slice(self.buf.as_ref(), self.destination.0, self.destination.1)
    }

    /// The destination as text. A valid address is ASCII, so the checked
    /// conversion always succeeds; the fallback keeps it panic-free.
    #[inline]
    pub fn destination_str(&self) -> &str {
        core::str::from_utf8(self.destination()).unwrap_or("")
    }

    #[inline]
    pub fn data(&self) -> &[u8] {
        slice(self.buf.as_ref(), self.data.0, self.data.1)
    }

    /// Content bytes after the data field (kept, forwarded unchanged).
    #[inline]
    pub fn trailing(&self) -> &[u8] {
        self.buf
            .as_ref()
            .get(self.data.0 + self.data.1..)
            .unwrap_or(&[])
    }

    /// The whole packet.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// Length of the whole packet in bytes.
    #[allow(clippy::len_without_is_empty)]
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.as_ref().len()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Prepare<T> {
    /// Rewrites `amount` in place (content bytes 0..8, RFC 27 "ILP Prepare").
    #[inline]
    pub fn set_amount(&mut self, amount: u64) {
        let at = self.content + AMOUNT_AT;
        if let Some(s) = self.buf.as_mut().get_mut(at..at + 8) {
            s.copy_from_slice(&amount.to_be_bytes());
        }
    }

    /// Rewrites `expiresAt` in place (content bytes 8..25,
    /// RFC 27 "ILP Prepare").
    /// Expiries past year 9999 are clamped, and the cached value matches
    /// what was written.
    #[inline]
    pub fn set_expires_at(&mut self, expiry: Expiry) {
        let at = self.content + EXPIRY_AT;
        if let Some(s) = self.buf.as_mut().get_mut(at..at + 17) {
            s.copy_from_slice(&expiry.to_ilp_timestamp());
            self.expires_at = expiry.0.min(crate::time::MAX_TIMESTAMP_MS);
        }
    }

    /// Mutable access to the whole packet, for callers that must patch
    /// bytes this view does not model. Changing anything other than the
    /// amount or expiry invalidates the cached offsets' meaning.
    #[inline]
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for Prepare<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepare")
            .field("amount", &self.amount())
            .field("expires_at", &self.expires_at)
            .field("destination", &self.destination_str())
            .field("data_len", &self.data.1)
            .finish()
    }
}

/// Writes a Prepare in canonical OER (RFC 27: canonical on send). The
/// caller supplies a valid destination and data of at most 32767 bytes;
/// the builder does not check (it is used for packets we create).
#[derive(Debug, Clone, Copy)]
pub struct PrepareBuilder<'a> {
    pub amount: u64,
    pub expires_at: Expiry,
    pub execution_condition: &'a [u8; 32],
    pub destination: &'a [u8],
    pub data: &'a [u8],
}

impl PrepareBuilder<'_> {
    #[inline]
    fn content_len(&self) -> usize {
        DESTINATION_AT
            + oer::var_octets_len(self.destination.len())
            + oer::var_octets_len(self.data.len())
    }

    /// Bytes the packet takes on the wire.
    #[inline]
    pub fn encoded_len(&self) -> usize {
        envelope_len(self.content_len())
    }

    pub fn write_to<B: BufMut>(&self, buf: &mut B) {
        put_header(buf, PacketType::Prepare, self.content_len());
        buf.put_u64(self.amount);
        buf.put_slice(&self.expires_at.to_ilp_timestamp());
        buf.put_slice(self.execution_condition);
        oer::put_var_octets(buf, self.destination);
        oer::put_var_octets(buf, self.data);
    }

    pub fn build(&self) -> BytesMut {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.write_to(&mut b);
        b
    }
}

// ---------------------------------------------------------------- Fulfill

/// A checked ILP Fulfill (type 13, RFC 27 "ILP Fulfill") over a buffer `T`.
#[derive(Clone)]
pub struct Fulfill<T: AsRef<[u8]>> {
    buf: T,
    content: usize,
    data: (usize, usize),
}

impl<T: AsRef<[u8]>> Fulfill<T> {
    /// Validates type 13, the length, the 32-byte fulfillment and data of at
    /// most 32767 bytes.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        let content = envelope(b, PacketType::Fulfill)?;
        let mut r = Reader::new(&b[content..]);
        r.read_array::<32>()?;
        let data = var_octets_at(&mut r, content, MAX_DATA_LEN, "data")?;
        Ok(Fulfill { buf, content, data })
    }

    #[inline]
    pub fn fulfillment(&self) -> &[u8; 32] {
        array(self.buf.as_ref(), self.content, &ZERO32)
    }

    #[inline]
    pub fn data(&self) -> &[u8] {
        slice(self.buf.as_ref(), self.data.0, self.data.1)
    }

    /// Content bytes after the data field.
    #[inline]
    pub fn trailing(&self) -> &[u8] {
        self.buf
            .as_ref()
            .get(self.data.0 + self.data.1..)
            .unwrap_or(&[])
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buf
    }

    #[allow(clippy::len_without_is_empty)]
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.as_ref().len()
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for Fulfill<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fulfill")
            .field(
                "fulfillment",
                &crate::types::Fulfillment(*self.fulfillment()),
            )
            .field("data_len", &self.data.1)
            .finish()
    }
}

/// Writes a Fulfill in canonical OER. Data must be ≤ 32767 bytes.
#[derive(Debug, Clone, Copy)]
pub struct FulfillBuilder<'a> {
    pub fulfillment: &'a [u8; 32],
    pub data: &'a [u8],
}

impl FulfillBuilder<'_> {
    #[inline]
    fn content_len(&self) -> usize {
        32 + oer::var_octets_len(self.data.len())
    }

    #[inline]
    pub fn encoded_len(&self) -> usize {
        envelope_len(self.content_len())
    }

    pub fn write_to<B: BufMut>(&self, buf: &mut B) {
        put_header(buf, PacketType::Fulfill, self.content_len());
        buf.put_slice(self.fulfillment);
        oer::put_var_octets(buf, self.data);
    }

    pub fn build(&self) -> BytesMut {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.write_to(&mut b);
        b
    }
}

// ---------------------------------------------------------------- Reject

/// A checked ILP Reject (type 14, RFC 27 "ILP Reject") over a buffer `T`.
#[derive(Clone)]
pub struct Reject<T: AsRef<[u8]>> {
    buf: T,
    code: ErrorCode,
    triggered_by: (usize, usize),
    message: (usize, usize),
    data: (usize, usize),
}

impl<T: AsRef<[u8]>> Reject<T> {
    /// Validates type 14, the length, the error code, `triggeredBy` (empty,
    /// as interledger-rs sends, or a valid address:
    /// docs/design.md "Reject fields"), a message of at most 8191 bytes and
    /// data of at most 32767 bytes.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        // Offsets into `b` rather than a `Reader`: with the `Reader` (and an
        // out-of-line `var_octets_at`) each field's position went through
        // memory, which made this slower than the larger Prepare.
        let b = buf.as_ref();
        let content = envelope(b, PacketType::Reject)?;
        let code: &[u8; 3] = b
            .get(content..content + 3)
            .and_then(|s| s.try_into().ok())
            .ok_or(DecodeError::Truncated)?;
        let code = ErrorCode::from_bytes(*code)?;
        let triggered_by = var_octets_in(b, content + 3, address::MAX_ADDRESS_LEN, "triggeredBy")?;
        if triggered_by.1 != 0 {
            address::validate(slice(b, triggered_by.0, triggered_by.1))?;
        }
        let message = var_octets_in(
            b,
            triggered_by.0 + triggered_by.1,
            MAX_MESSAGE_LEN,
            "message",
        )?;
        let data = var_octets_in(b, message.0 + message.1, MAX_DATA_LEN, "data")?;
        Ok(Reject {
            buf,
            code,
            triggered_by,
            message,
            data,
        })
    }

    #[inline]
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The address that created the reject; may be empty.
    #[inline]
    pub fn triggered_by(&self) -> &[u8] {
        slice(self.buf.as_ref(), self.triggered_by.0, self.triggered_by.1)
    }

    /// Debug text; UTF-8 per RFC 27 but not checked (never interpreted).
    #[inline]
    pub fn message(&self) -> &[u8] {
        slice(self.buf.as_ref(), self.message.0, self.message.1)
    }

    #[inline]
    pub fn data(&self) -> &[u8] {
        slice(self.buf.as_ref(), self.data.0, self.data.1)
    }

    /// Content bytes after the data field.
    #[inline]
    pub fn trailing(&self) -> &[u8] {
        self.buf
            .as_ref()
            .get(self.data.0 + self.data.1..)
            .unwrap_or(&[])
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buf
    }

    #[allow(clippy::len_without_is_empty)]
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.as_ref().len()
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for Reject<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reject")
            .field("code", &self.code)
            .field(
                "triggered_by",
                &String::from_utf8_lossy(self.triggered_by()),
            )
            .field("message", &String::from_utf8_lossy(self.message()))
            .field("data_len", &self.data.1)
            .finish()
    }
}

/// Writes a Reject in canonical OER. The message is cut to 8191 bytes at a
/// UTF-8 character boundary (docs/design.md "Reject fields"); data must
/// be ≤ 32767 bytes.
#[derive(Debug, Clone, Copy)]
pub struct RejectBuilder<'a> {
    pub code: ErrorCode,
    pub triggered_by: &'a [u8],
    pub message: &'a [u8],
    pub data: &'a [u8],
}

/// `msg` cut to at most [`MAX_MESSAGE_LEN`] bytes without splitting a
/// UTF-8 sequence (backs up over continuation bytes `10xxxxxx`).
#[inline]
fn truncate_message(msg: &[u8]) -> &[u8] {
    if msg.len() <= MAX_MESSAGE_LEN {
        return msg;
    }
    let mut cut = MAX_MESSAGE_LEN;
    while cut > 0 && (msg[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    &msg[..cut]
}

impl RejectBuilder<'_> {
    #[inline]
    fn content_len(&self) -> usize {
        3 + oer::var_octets_len(self.triggered_by.len())
            + oer::var_octets_len(truncate_message(self.message).len())
            + oer::var_octets_len(self.data.len())
    }

    #[inline]
    pub fn encoded_len(&self) -> usize {
        envelope_len(self.content_len())
    }

    pub fn write_to<B: BufMut>(&self, buf: &mut B) {
        put_header(buf, PacketType::Reject, self.content_len());
        buf.put_slice(self.code.as_bytes());
        oer::put_var_octets(buf, self.triggered_by);
        oer::put_var_octets(buf, truncate_message(self.message));
        oer::put_var_octets(buf, self.data);
    }

    pub fn build(&self) -> BytesMut {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.write_to(&mut b);
        b
    }
}

// ------------------------------------------------- borrowed accessors

// With `T = &'a [u8]` the generic accessors return slices tied to the view;
// these return slices tied to the buffer itself, so a function can parse a
// borrowed packet and return one of its fields.

impl<'a> Prepare<&'a [u8]> {
    /// Like [`Prepare::destination`], borrowing from the buffer.
    #[inline]
    pub fn destination_borrowed(&self) -> &'a [u8] {
        slice(self.buf, self.destination.0, self.destination.1)
    }

    /// Like [`Prepare::data`], borrowing from the buffer.
    #[inline]
    pub fn data_borrowed(&self) -> &'a [u8] {
        slice(self.buf, self.data.0, self.data.1)
    }

    /// Like [`Prepare::execution_condition`], borrowing from the buffer.
    #[inline]
    pub fn execution_condition_borrowed(&self) -> &'a [u8; 32] {
        array(self.buf, self.content + CONDITION_AT, &ZERO32)
    }
}

impl<'a> Fulfill<&'a [u8]> {
    /// Like [`Fulfill::fulfillment`], borrowing from the buffer.
    #[inline]
    pub fn fulfillment_borrowed(&self) -> &'a [u8; 32] {
        array(self.buf, self.content, &ZERO32)
    }

    /// Like [`Fulfill::data`], borrowing from the buffer.
    #[inline]
    pub fn data_borrowed(&self) -> &'a [u8] {
        slice(self.buf, self.data.0, self.data.1)
    }
}

impl<'a> Reject<&'a [u8]> {
    /// Like [`Reject::triggered_by`], borrowing from the buffer.
    #[inline]
    pub fn triggered_by_borrowed(&self) -> &'a [u8] {
        slice(self.buf, self.triggered_by.0, self.triggered_by.1)
    }

    /// Like [`Reject::message`], borrowing from the buffer.
    #[inline]
    pub fn message_borrowed(&self) -> &'a [u8] {
        slice(self.buf, self.message.0, self.message.1)
    }

    /// Like [`Reject::data`], borrowing from the buffer.
    #[inline]
    pub fn data_borrowed(&self) -> &'a [u8] {
        slice(self.buf, self.data.0, self.data.1)
    }
}

// ---------------------------------------------------------------- Packet

/// Any ILPv4 packet, dispatched on the type byte.
#[derive(Debug, Clone)]
pub enum Packet<T: AsRef<[u8]>> {
    Prepare(Prepare<T>),
    Fulfill(Fulfill<T>),
    Reject(Reject<T>),
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the packet whose type the first byte names; an unknown type
    /// byte is [`DecodeError::UnknownType`] (RFC 27 "Type-Length Wrapper").
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        Ok(match packet_type(buf.as_ref())? {
            PacketType::Prepare => Packet::Prepare(Prepare::new_checked(buf)?),
            PacketType::Fulfill => Packet::Fulfill(Fulfill::new_checked(buf)?),
            PacketType::Reject => Packet::Reject(Reject::new_checked(buf)?),
        })
    }

    #[inline]
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Prepare(_) => PacketType::Prepare,
            Packet::Fulfill(_) => PacketType::Fulfill,
            Packet::Reject(_) => PacketType::Reject,
        }
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Packet::Prepare(p) => p.as_bytes(),
            Packet::Fulfill(p) => p.as_bytes(),
            Packet::Reject(p) => p.as_bytes(),
        }
    }

    #[inline]
    pub fn into_inner(self) -> T {
        match self {
            Packet::Prepare(p) => p.into_inner(),
            Packet::Fulfill(p) => p.into_inner(),
            Packet::Reject(p) => p.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const PREPARE_HEX: &str = "0c68000000000000006b323031373132323330313231343035343974e1136dc71c9e5f283bec83461cbf1261c4014f72d48f8dd65453a0b84e7de10d6578616d706c652e616c696365205db343fdc41898f6df4202329139dc242dd0f558a811b46b28918fdab37c6cb0";

    fn prepare_bytes() -> Vec<u8> {
        hex::decode(PREPARE_HEX).unwrap()
    }

    #[test]
    fn prepare_example01() {
        let b = prepare_bytes();
        let p = Prepare::new_checked(&b[..]).unwrap();
        assert_eq!(p.amount(), 107);
        assert_eq!(p.expires_at_raw(), b"20171223012140549");
        assert_eq!(
            p.expires_at(),
            Expiry::from_ilp_timestamp(b"20171223012140549").unwrap()
        );
        assert_eq!(p.destination_str(), "example.alice");
        assert_eq!(p.data().len(), 32);
        assert_eq!(p.execution_condition()[0], 0x74);
        assert_eq!(p.len(), b.len());
        assert!(p.trailing().is_empty());
    }

    fn data_of(buf: &[u8]) -> Result<&[u8]> {
        Ok(Prepare::new_checked(buf)?.data_borrowed())
    }

    #[test]
    fn borrowed_accessors_outlive_the_view() {
        let b = prepare_bytes();
        assert_eq!(data_of(&b).unwrap().len(), 32);
    }

    #[test]
    fn works_with_every_buffer_type() {
        let b = prepare_bytes();
        assert_eq!(Prepare::new_checked(b.clone()).unwrap().amount(), 107);
        assert_eq!(
            Prepare::new_checked(Bytes::from(b.clone()))
                .unwrap()
                .amount(),
            107
        );
        let mut p = Prepare::new_checked(BytesMut::from(&b[..])).unwrap();
        p.set_amount(9);
        assert_eq!(p.amount(), 9);
        let mut v = b.clone();
        let mut p = Prepare::new_checked(&mut v[..]).unwrap();
        p.set_amount(10);
        p.set_expires_at(Expiry(0));
        assert_eq!(p.expires_at_raw(), b"19700101000000000");
        assert_eq!(v[2 + 7], 10);
    }

    #[test]
    fn prepare_rejects_bad_envelopes() {
        let b = prepare_bytes();
        assert_eq!(
            Prepare::new_checked(&b[..b.len() - 1]).err(),
            Some(DecodeError::Truncated)
        );
        let mut extra = b.clone();
        extra.push(0);
        assert!(matches!(
            Prepare::new_checked(&extra[..]),
            Err(DecodeError::Invalid(_))
        ));
        let mut wrong = b.clone();
        wrong[0] = 13;
        assert!(Prepare::new_checked(&wrong[..]).is_err());
        wrong[0] = 7;
        assert_eq!(
            Packet::new_checked(&wrong[..]).err(),
            Some(DecodeError::UnknownType(7))
        );
        let mut bad_ts = b.clone();
        bad_ts[2 + 8 + 4] = b'1';
        bad_ts[2 + 8 + 5] = b'3';
        assert_eq!(
            Prepare::new_checked(&bad_ts[..]).err(),
            Some(DecodeError::BadTimestamp)
        );
        let mut bad_addr = b.clone();
        bad_addr[2 + 57 + 1] = b'X';
        assert_eq!(
            Prepare::new_checked(&bad_addr[..]).err(),
            Some(DecodeError::BadAddress)
        );
        // Non-canonical long-form length 81 68.
        let mut nc = vec![0x0c, 0x81];
        nc.extend_from_slice(&b[1..]);
        assert_eq!(
            Prepare::new_checked(&nc[..]).err(),
            Some(DecodeError::NonCanonical)
        );
        assert_eq!(
            Packet::new_checked(&[][..]).err(),
            Some(DecodeError::Truncated)
        );
    }

    #[test]
    fn trailing_content_is_kept() {
        let b = prepare_bytes();
        let mut t = b.clone();
        t[1] += 2;
        t.extend_from_slice(&[0xaa, 0xbb]);
        let p = Prepare::new_checked(&t[..]).unwrap();
        assert_eq!(p.trailing(), &[0xaa, 0xbb]);
        assert_eq!(p.data().len(), 32);
    }

    #[test]
    fn builder_round_trip() {
        let b = prepare_bytes();
        let p = Prepare::new_checked(&b[..]).unwrap();
        let built = PrepareBuilder {
            amount: p.amount(),
            expires_at: p.expires_at(),
            execution_condition: p.execution_condition(),
            destination: p.destination(),
            data: p.data(),
        };
        assert_eq!(built.encoded_len(), b.len());
        assert_eq!(&built.build()[..], &b[..]);
    }

    #[test]
    fn reject_message_truncated_at_char_boundary() {
        // 8190 ASCII bytes then a 3-byte char: cutting at 8191 would split it.
        let mut msg = vec![b'a'; 8190];
        msg.extend_from_slice("€".as_bytes());
        let r = RejectBuilder {
            code: ErrorCode::F02_UNREACHABLE,
            triggered_by: b"g.a",
            message: &msg,
            data: b"",
        };
        let out = r.build();
        assert_eq!(out.len(), r.encoded_len());
        let v = Reject::new_checked(&out[..]).unwrap();
        assert_eq!(v.message().len(), 8190);
        assert!(core::str::from_utf8(v.message()).is_ok());
        let short = RejectBuilder {
            message: b"hi",
            ..r
        };
        assert_eq!(Reject::new_checked(short.build()).unwrap().message(), b"hi");
    }

    #[test]
    fn reject_limits() {
        let empty_by = RejectBuilder {
            code: ErrorCode::T00_INTERNAL_ERROR,
            triggered_by: b"",
            message: b"",
            data: b"",
        };
        let r = Reject::new_checked(empty_by.build()).unwrap();
        assert!(r.triggered_by().is_empty());
        let bad_by = RejectBuilder {
            triggered_by: b"nope",
            ..empty_by
        };
        assert_eq!(
            Reject::new_checked(bad_by.build()).err(),
            Some(DecodeError::BadAddress)
        );
        // Hand-build a reject with an 8192-byte message (the builder would cut it).
        let msg = vec![b'a'; 8192];
        let mut content = b"F00".to_vec();
        content.push(0);
        oer::put_var_octets(&mut content, &msg);
        content.push(0);
        let mut pkt = vec![14];
        oer::put_length(&mut pkt, content.len());
        pkt.extend_from_slice(&content);
        assert_eq!(
            Reject::new_checked(&pkt[..]).err(),
            Some(DecodeError::FieldTooLong("message"))
        );
        let mut bad_code = empty_by.build();
        bad_code[2] = b'X';
        assert!(Reject::new_checked(&bad_code[..]).is_err());
    }

    #[test]
    fn fulfill_round_trip() {
        let f = FulfillBuilder {
            fulfillment: &[7; 32],
            data: &[1, 2, 3],
        };
        let b = f.build();
        assert_eq!(b.len(), f.encoded_len());
        let v = Fulfill::new_checked(&b[..]).unwrap();
        assert_eq!(v.fulfillment(), &[7; 32]);
        assert_eq!(v.data(), &[1, 2, 3]);
        let big = vec![0u8; MAX_DATA_LEN + 1];
        let f = FulfillBuilder {
            fulfillment: &[7; 32],
            data: &big,
        };
        assert_eq!(
            Fulfill::new_checked(f.build()).err(),
            Some(DecodeError::FieldTooLong("data"))
        );
    }

    #[test]
    fn inline_length_matches_oer_read_length() {
        let tails = [0u8, 1, 0x7f, 0x80, 0x81, 0xff];
        let mut cases = 0;
        for first in 0..=255u8 {
            for &b1 in &tails {
                for &b2 in &tails {
                    let full = [first, b1, b2, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70];
                    for cut in 1..=full.len() {
                        let buf = &full[..cut];
                        assert_eq!(length_at(buf, 0), oer::read_length(buf), "{buf:?}");
                        let mut shifted = vec![0xee];
                        shifted.extend_from_slice(buf);
                        assert_eq!(length_at(&shifted, 1), oer::read_length(buf), "{buf:?}");
                        cases += 1;
                    }
                }
            }
        }
        assert!(cases > 90_000);
        assert_eq!(length_at(&[0x05], 1), Err(DecodeError::Truncated));
    }

    /// Builds a Reject by hand with the given raw determinant bytes for
    /// each variable field.
    fn raw_reject(code: &[u8], fields: [(&[u8], &[u8]); 3]) -> Vec<u8> {
        let mut content = code.to_vec();
        for (det, body) in fields {
            content.extend_from_slice(det);
            content.extend_from_slice(body);
        }
        let mut pkt = vec![14];
        oer::put_length(&mut pkt, content.len());
        pkt.extend_from_slice(&content);
        pkt
    }

    #[test]
    fn reject_long_form_lengths() {
        let msg = vec![b'm'; 300];
        let data = vec![b'd'; 200];
        // Canonical 0x82 and 0x81 forms parse and point at the right bytes.
        let ok = raw_reject(
            b"T02",
            [
                (&[9], b"g.a.b.c.d"),
                (&[0x82, 0x01, 0x2c], &msg),
                (&[0x81, 200], &data),
            ],
        );
        let r = Reject::new_checked(&ok[..]).unwrap();
        assert_eq!(r.code(), ErrorCode::T02_PEER_BUSY);
        assert_eq!(r.triggered_by(), b"g.a.b.c.d");
        assert_eq!(r.message(), &msg[..]);
        assert_eq!(r.data(), &data[..]);
        assert!(r.trailing().is_empty());
        // Non-canonical long forms of short lengths are refused.
        for det in [
            &[0x81, 0x05][..],
            &[0x82, 0x00, 0x05],
            &[0x83, 0x00, 0x00, 0x05],
        ] {
            let bad = raw_reject(b"T02", [(&[0], b""), (det, b"hello"), (&[0], b"")]);
            assert_eq!(
                Reject::new_checked(&bad[..]).err(),
                Some(DecodeError::NonCanonical),
                "{det:?}"
            );
        }
        // A field running past the end, and a missing field.
        let short = raw_reject(b"F02", [(&[0], b""), (&[0x0a], b"abc"), (&[], b"")]);
        assert_eq!(
            Reject::new_checked(&short[..]).err(),
            Some(DecodeError::Truncated)
        );
        let missing = raw_reject(b"F02", [(&[0], b""), (&[0], b""), (&[], b"")]);
        assert_eq!(
            Reject::new_checked(&missing[..]).err(),
            Some(DecodeError::Truncated)
        );
        // Limits hold through the long forms: 1024-byte triggeredBy,
        // 32768-byte data.
        let by = vec![b'a'; 1024];
        let long_by = raw_reject(
            b"F02",
            [(&[0x82, 0x04, 0x00], &by), (&[0], b""), (&[0], b"")],
        );
        assert_eq!(
            Reject::new_checked(&long_by[..]).err(),
            Some(DecodeError::FieldTooLong("triggeredBy"))
        );
        let big = vec![0u8; 32_768];
        let long_data = raw_reject(
            b"F02",
            [(&[0], b""), (&[0], b""), (&[0x82, 0x80, 0x00], &big)],
        );
        assert_eq!(
            Reject::new_checked(&long_data[..]).err(),
            Some(DecodeError::FieldTooLong("data"))
        );
        // Every truncation of a valid Reject fails without panicking.
        for cut in 0..ok.len() {
            assert!(Reject::new_checked(&ok[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn prepare_truncations_and_long_data() {
        let data = vec![7u8; 1000];
        let p = PrepareBuilder {
            amount: 5,
            expires_at: Expiry(1_514_132_072_279),
            execution_condition: &[1; 32],
            destination: b"g.x.y",
            data: &data,
        }
        .build();
        let v = Prepare::new_checked(&p[..]).unwrap();
        assert_eq!(v.data(), &data[..]);
        assert_eq!(v.destination(), b"g.x.y");
        assert_eq!(v.amount(), 5);
        for cut in 0..p.len() {
            assert!(Prepare::new_checked(&p[..cut]).is_err(), "cut {cut}");
        }
    }
}

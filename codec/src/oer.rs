//! Canonical OER primitives (RFC 30 "Notes on OER Encoding"): length determinants,
//! VarUInt, fixed-size integers and variable-length octet strings.
//!
//! Decoding goes through [`Reader`], a cursor over a borrowed slice that
//! never panics and never allocates. Encoding writes canonical forms into
//! any [`BufMut`].

use bytes::BufMut;

use crate::error::{DecodeError, Result};

/// Reads a length determinant at the start of `buf` (RFC 30 "Length determinant").
///
/// Returns `(length, bytes_used)`. Rejects `0x80`, long forms that could
/// have been short (`81 05`), long forms with a leading zero byte
/// (`82 00 90`) and more than 8 length bytes.
#[inline]
pub fn read_length(buf: &[u8]) -> Result<(usize, usize)> {
    let first = *buf.first().ok_or(DecodeError::Truncated)?;
    if first < 0x80 {
        return Ok((first as usize, 1));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 8 {
        return Err(DecodeError::BadLength);
    }
    let bytes = buf.get(1..1 + n).ok_or(DecodeError::Truncated)?;
    if bytes[0] == 0 {
        return Err(DecodeError::NonCanonical);
    }
    let mut len: u64 = 0;
    for &b in bytes {
        len = (len << 8) | b as u64;
    }
    if len < 0x80 {
        return Err(DecodeError::NonCanonical);
    }
    let len = usize::try_from(len).map_err(|_| DecodeError::BadLength)?;
    Ok((len, 1 + n))
}

/// Number of bytes the canonical length determinant of `len` takes.
#[inline]
pub const fn length_prefix_len(len: usize) -> usize {
    if len < 0x80 {
        1
    } else {
        1 + byte_len(len as u64)
    }
}

/// Minimal number of big-endian bytes needed for `v` (1 for zero).
#[inline]
pub const fn byte_len(v: u64) -> usize {
    if v == 0 {
        1
    } else {
        (64 - v.leading_zeros() as usize).div_ceil(8)
    }
}

/// Writes the canonical length determinant of `len`.
#[inline]
pub fn put_length<B: BufMut + ?Sized>(buf: &mut B, len: usize) {
    if len < 0x80 {
        buf.put_u8(len as u8);
    } else {
        let n = byte_len(len as u64);
        buf.put_u8(0x80 | n as u8);
        buf.put_slice(&(len as u64).to_be_bytes()[8 - n..]);
    }
}

/// Writes a variable-length octet string: length determinant then bytes.
#[inline]
pub fn put_var_octets<B: BufMut + ?Sized>(buf: &mut B, bytes: &[u8]) {
    put_length(buf, bytes.len());
    buf.put_slice(bytes);
}

/// Bytes a VarOctetString of `len` bytes takes on the wire.
#[inline]
pub const fn var_octets_len(len: usize) -> usize {
    length_prefix_len(len) + len
}

/// Writes a VarUInt: minimal big-endian bytes behind a length
/// (RFC 30 "Variable-length unsigned integer").
#[inline]
pub fn put_var_uint<B: BufMut + ?Sized>(buf: &mut B, v: u64) {
    let n = byte_len(v);
    buf.put_u8(n as u8);
    buf.put_slice(&v.to_be_bytes()[8 - n..]);
}

/// Bytes a VarUInt of value `v` takes on the wire.
#[inline]
pub const fn var_uint_len(v: u64) -> usize {
    1 + byte_len(v)
}

/// A cursor over a borrowed buffer. Every read checks bounds and returns
/// [`DecodeError::Truncated`] instead of panicking.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    #[inline]
    pub const fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Offset of the next byte to read.
    #[inline]
    pub const fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The unread rest of the buffer.
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Reads exactly `n` raw bytes.
    #[inline]
    pub fn read_bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let out = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    /// Reads a fixed-size array (condition, fulfillment, UUID...).
    #[inline]
    pub fn read_array<const N: usize>(&mut self) -> Result<&'a [u8; N]> {
        let s = self.read_bytes(N)?;
        // The slice has exactly N bytes, so the conversion cannot fail.
        s.try_into().map_err(|_| DecodeError::Truncated)
    }

    #[inline]
    pub fn read_u8(&mut self) -> Result<u8> {
        Ok(self.read_array::<1>()?[0])
    }

    #[inline]
    pub fn read_u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(*self.read_array()?))
    }

    #[inline]
    pub fn read_u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(*self.read_array()?))
    }

    #[inline]
    pub fn read_u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(*self.read_array()?))
    }

    #[inline]
    pub fn read_i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(*self.read_array()?))
    }

    /// Reads a length determinant.
    #[inline]
    pub fn read_length(&mut self) -> Result<usize> {
        let (len, used) = read_length(self.rest())?;
        self.pos += used;
        Ok(len)
    }

    /// Reads a variable-length octet string and returns its contents.
    #[inline]
    pub fn read_var_octets(&mut self) -> Result<&'a [u8]> {
        let len = self.read_length()?;
        self.read_bytes(len)
    }

    /// Reads a VarUInt that must fit in a u64; rejects the empty form and
    /// leading zero bytes.
    #[inline]
    pub fn read_var_uint(&mut self) -> Result<u64> {
        let bytes = self.read_var_octets()?;
        match bytes.len() {
            0 => Err(DecodeError::Invalid("empty VarUInt")),
            n if n > 8 => Err(DecodeError::FieldTooLong("VarUInt")),
            n => {
                if n > 1 && bytes[0] == 0 {
                    return Err(DecodeError::NonCanonical);
                }
                Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
            }
        }
    }

    /// Reads a SEQUENCE OF quantity (a VarUInt, X.696;
    /// docs/design.md "VarUInt and SEQUENCE OF"), capped so a hostile count
    /// cannot make a caller loop for long: each element takes at least
    /// `min_elem_len` bytes, so a count larger than the remaining bytes
    /// allow is truncated input.
    #[inline]
    pub fn read_count(&mut self, min_elem_len: usize) -> Result<usize> {
        let count = self.read_var_uint()?;
        let max = self.remaining() / min_elem_len.max(1);
        if count > max as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(count as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_of(hex_bytes: &[u8]) -> Result<(usize, usize)> {
        read_length(hex_bytes)
    }

    #[test]
    fn length_forms() {
        assert_eq!(len_of(&[0x07]), Ok((7, 1)));
        assert_eq!(len_of(&[0x7f]), Ok((127, 1)));
        assert_eq!(len_of(&[0x81, 0x80]), Ok((128, 2)));
        assert_eq!(len_of(&[0x82, 0x01, 0x00]), Ok((256, 3)));
        assert_eq!(len_of(&[0x80]), Err(DecodeError::BadLength));
        assert_eq!(len_of(&[0x81, 0x05]), Err(DecodeError::NonCanonical));
        assert_eq!(len_of(&[0x82, 0x00, 0x90]), Err(DecodeError::NonCanonical));
        assert_eq!(len_of(&[0x82, 0x01]), Err(DecodeError::Truncated));
        assert_eq!(len_of(&[]), Err(DecodeError::Truncated));
        assert_eq!(
            len_of(&[0x89, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
            Err(DecodeError::BadLength)
        );
    }

    #[test]
    fn length_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 4660, 32767, 65536, 1 << 40] {
            let mut v = Vec::new();
            put_length(&mut v, len);
            assert_eq!(v.len(), length_prefix_len(len));
            assert_eq!(read_length(&v), Ok((len, v.len())));
        }
    }

    #[test]
    fn var_uint() {
        for (v, enc) in [
            (0u64, &[0x01, 0x00][..]),
            (255, &[0x01, 0xff][..]),
            (256, &[0x02, 0x01, 0x00][..]),
            (
                u64::MAX,
                &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
            ),
        ] {
            let mut out = Vec::new();
            put_var_uint(&mut out, v);
            assert_eq!(out, enc);
            assert_eq!(out.len(), var_uint_len(v));
            assert_eq!(Reader::new(enc).read_var_uint(), Ok(v));
        }
        assert!(Reader::new(&[0x00]).read_var_uint().is_err());
        assert_eq!(
            Reader::new(&[0x02, 0x00, 0x01]).read_var_uint(),
            Err(DecodeError::NonCanonical)
        );
        assert!(Reader::new(&[0x09, 1, 1, 1, 1, 1, 1, 1, 1, 1])
            .read_var_uint()
            .is_err());
    }

    #[test]
    fn reader_bounds() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.read_u16(), Ok(0x0102));
        assert_eq!(r.read_u16(), Err(DecodeError::Truncated));
        assert_eq!(r.read_u8(), Ok(3));
        assert_eq!(r.read_var_octets(), Err(DecodeError::Truncated));
        let mut r = Reader::new(&[0x01, 0x05, 0xaa]);
        assert_eq!(r.read_count(1), Err(DecodeError::Truncated));
    }
}

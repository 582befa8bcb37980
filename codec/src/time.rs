//! The two timestamp formats of Interledger, as milliseconds since the Unix
//! epoch (RFC 30 "Fixed-length Timestamps", "Variable-length Timestamps"),
//! with integer civil-date arithmetic (no date library, no clock).
//!
//! The 17-digit ILP timestamp is parsed on every Prepare and written on
//! every forwarded one, so both directions are branch-light arithmetic on
//! the digits.

use crate::error::{DecodeError, Result};

/// Milliseconds per day.
const MS_PER_DAY: u64 = 86_400_000;

/// Days from 1970-01-01 to year/month/day (proleptic Gregorian), for
/// years ≥ 1970 (H. Hinnant's `days_from_civil`, unsigned form).
#[inline]
const fn days_from_civil(y: u32, m: u32, d: u32) -> u64 {
    let y = if m <= 2 { y - 1 } else { y } as u64;
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 } as u64;
    let doy = (153 * mp + 2) / 5 + d as u64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Year, month, day of `days` since 1970-01-01, for years 1970..=9999
/// (C. Neri and L. Schneider, "Euclidean affine functions and their
/// application to calendar algorithms", 2022: no division by a non-constant,
/// few multiplications, which is what keeps the in-place expiry patch cheap).
#[inline]
const fn civil_from_days(days: u64) -> (u32, u32, u32) {
    // Days since 0000-03-01; fits u32 for years ≤ 9999.
    let n = (days + 719_468) as u32;
    let n1 = 4 * n + 3;
    let c = n1 / 146_097;
    let nc = n1 % 146_097 / 4;
    let n2 = 4 * nc + 3;
    let p2 = 2_939_745u64 * n2 as u64;
    let z = (p2 >> 32) as u32;
    let ny = (p2 as u32) / 2_939_745 / 4;
    let y = 100 * c + z;
    let n3 = 2141 * ny + 197_913;
    let m = n3 >> 16;
    let d = (n3 & 0xffff) / 2141;
    let j = ny >= 306;
    (y + j as u32, if j { m - 12 } else { m }, d + 1)
}

// `is_multiple_of` needs Rust 1.87; the workspace targets 1.80.
#[allow(clippy::manual_is_multiple_of)]
#[inline]
const fn is_leap(y: u32) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

#[inline]
const fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 => 28 + is_leap(y) as u32,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Checks the civil fields and converts them to ms since the epoch.
/// Second 60 is refused (UTC-SLS smearing,
/// RFC 30 "Fixed-length Timestamps"); years before 1970 cannot be
/// represented as `u64` ms and are refused too.
#[inline]
fn civil_to_ms(y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> Result<u64> {
    let ok = y >= 1970
        && (1..=12).contains(&mo)
        && d >= 1
        && d <= days_in_month(y, mo)
        && h < 24
        && mi < 60
        && s < 60;
    if !ok {
        return Err(DecodeError::BadTimestamp);
    }
    let days = days_from_civil(y, mo, d);
    Ok(days * MS_PER_DAY + (((h * 60 + mi) * 60 + s) * 1000 + ms) as u64)
}

/// Latest time both formats can carry: 9999-12-31T23:59:59.999Z.
pub const MAX_TIMESTAMP_MS: u64 = days_from_civil(9999, 12, 31) * MS_PER_DAY + MS_PER_DAY - 1;

/// Breaks `ms` (clamped to [`MAX_TIMESTAMP_MS`]) into civil fields.
#[inline]
fn ms_to_civil(ms: u64) -> [u32; 7] {
    let ms = if ms > MAX_TIMESTAMP_MS {
        MAX_TIMESTAMP_MS
    } else {
        ms
    };
    let days = ms / MS_PER_DAY;
    let rem = (ms - days * MS_PER_DAY) as u32;
    let (y, m, d) = civil_from_days(days);
    let secs = rem / 1000;
    let h = secs / 3600;
    let in_hour = secs - h * 3600;
    let mi = in_hour / 60;
    [y, m, d, h, mi, in_hour - mi * 60, rem - secs * 1000]
}

/// `"00"`..`"99"`, so each field is one table load instead of a divide.
static PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

#[inline(always)]
fn pair(v: u32) -> [u8; 2] {
    PAIRS[(v % 100) as usize]
}

/// Writes the civil fields as `YYYYMMDDHHmmSSfff` into `out[0..17]`.
#[inline]
fn put_digits(out: &mut [u8; 17], f: [u32; 7]) {
    let [y, mo, d, h, mi, s, ms] = f;
    let parts = [
        pair(y / 100),
        pair(y),
        pair(mo),
        pair(d),
        pair(h),
        pair(mi),
        pair(s),
    ];
    for (i, p) in parts.iter().enumerate() {
        out[2 * i] = p[0];
        out[2 * i + 1] = p[1];
    }
    out[14] = b'0' + (ms / 100 % 10) as u8;
    let lo = pair(ms);
    out[15] = lo[0];
    out[16] = lo[1];
}

/// Converts the first `N` bytes of ASCII digits to their values, or fails
/// if any is not a digit. One branch for the whole run.
#[inline(always)]
fn digits<const N: usize>(b: &[u8; N]) -> Result<[u32; N]> {
    let mut out = [0u32; N];
    let mut bad = false;
    for i in 0..N {
        let v = b[i].wrapping_sub(b'0');
        bad |= v > 9;
        out[i] = v as u32;
    }
    if bad {
        Err(DecodeError::BadTimestamp)
    } else {
        Ok(out)
    }
}

/// Parses the 14 digits `YYYYMMDDHHmmSS` plus a millisecond value.
#[inline(always)]
fn fields_to_ms(d: &[u32; 14], ms: u32) -> Result<u64> {
    let y = d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3];
    civil_to_ms(
        y,
        d[4] * 10 + d[5],
        d[6] * 10 + d[7],
        d[8] * 10 + d[9],
        d[10] * 10 + d[11],
        d[12] * 10 + d[13],
        ms,
    )
}

/// Eight ASCII digits (little-endian load) to four two-digit values, one
/// per 16-bit lane, or `None` if any byte is not `0`..`9`. SWAR: a byte is
/// a digit iff its high nibble is 3 both before and after adding 6; a carry
/// out of a byte only happens for bytes that already failed.
#[inline(always)]
fn pairs8(chunk: &[u8; 8]) -> Option<u64> {
    const HI: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let x = u64::from_le_bytes(*chunk);
    if (x & HI) != ZEROS || (x.wrapping_add(0x0606_0606_0606_0606) & HI) != ZEROS {
        return None;
    }
    let d = x - ZEROS;
    // Each 16-bit lane: first digit * 10 + second digit.
    Some((d * 10 + (d >> 8)) & 0x00FF_00FF_00FF_00FF)
}

/// Parses an ILP fixed timestamp (RFC 30 "Fixed-length Timestamps"):
/// exactly 17 ASCII digits `YYYYMMDDHHmmSSfff`, UTC, to ms since the Unix
/// epoch. Hot path (every Prepare), so the digits are checked and paired
/// eight at a time.
#[inline]
pub fn parse_ilp_timestamp(b: &[u8]) -> Result<u64> {
    let b: &[u8; 17] = b.try_into().map_err(|_| DecodeError::BadTimestamp)?;
    let (lo, rest) = b.split_at(8);
    let (hi, last) = rest.split_at(8);
    let (Ok(lo), Ok(hi)) = (<&[u8; 8]>::try_from(lo), <&[u8; 8]>::try_from(hi)) else {
        return Err(DecodeError::BadTimestamp);
    };
    let last = last[0].wrapping_sub(b'0');
    let (Some(date), Some(time), true) = (pairs8(lo), pairs8(hi), last <= 9) else {
        return Err(DecodeError::BadTimestamp);
    };
    let lane = |v: u64, i: u32| ((v >> (16 * i)) & 0xFF) as u32;
    civil_to_ms(
        lane(date, 0) * 100 + lane(date, 1),
        lane(date, 2),
        lane(date, 3),
        lane(time, 0),
        lane(time, 1),
        lane(time, 2),
        lane(time, 3) * 10 + last as u32,
    )
}

/// Formats ms since the epoch as an ILP fixed timestamp
/// (RFC 30 "Fixed-length Timestamps").
/// Times after 9999-12-31T23:59:59.999Z are clamped to it.
#[inline]
pub fn format_ilp_timestamp(ms: u64) -> [u8; 17] {
    let mut out = [0u8; 17];
    put_digits(&mut out, ms_to_civil(ms));
    out
}

/// Parses GeneralizedTime text (RFC 30 "Variable-length Timestamps", the
/// VarOctetString's content): `YYYYMMDDHHmmSS` then optionally `.` and 1 to
/// 3 fraction digits, then `Z`. Lenient on the fraction, as interledger-rs
/// and btp-packet differ (docs/design.md "GeneralizedTime").
pub fn parse_generalized_time(b: &[u8]) -> Result<u64> {
    let (head, tail) = match b.split_first_chunk::<14>() {
        Some(x) => x,
        None => return Err(DecodeError::BadTimestamp),
    };
    let d = digits(head)?;
    let ms = match tail {
        [b'Z'] => 0,
        [b'.', frac @ .., b'Z'] if (1..=3).contains(&frac.len()) => {
            let mut ms = 0u32;
            for (i, &c) in frac.iter().enumerate() {
                let v = c.wrapping_sub(b'0');
                if v > 9 {
                    return Err(DecodeError::BadTimestamp);
                }
                ms += v as u32 * [100, 10, 1][i];
            }
            ms
        }
        _ => return Err(DecodeError::BadTimestamp),
    };
    fields_to_ms(&d, ms)
}

/// Formats ms since the epoch as GeneralizedTime text with always three
/// fraction digits, `YYYYMMDDHHmmSS.fffZ`, as btp-packet writes it (not
/// RFC 30's trailing-zero-free form; both parse everywhere). Clamped like
/// [`format_ilp_timestamp`]. Callers add the VarOctetString length (19).
pub fn format_generalized_time(ms: u64) -> [u8; 19] {
    let mut digits17 = [0u8; 17];
    put_digits(&mut digits17, ms_to_civil(ms));
    let mut out = [0u8; 19];
    out[..14].copy_from_slice(&digits17[..14]);
    out[14] = b'.';
    out[15..18].copy_from_slice(&digits17[14..]);
    out[18] = b'Z';
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent slow reference: count days year by year.
    fn slow_ms(y: u32, mo: u32, d: u32, h: u64, mi: u64, s: u64, ms: u64) -> u64 {
        let mut days = 0u64;
        for yy in 1970..y {
            days += if is_leap(yy) { 366 } else { 365 };
        }
        for mm in 1..mo {
            days += days_in_month(y, mm) as u64;
        }
        days += d as u64 - 1;
        ((days * 24 + h) * 60 + mi) * 60 * 1000 + s * 1000 + ms
    }

    #[test]
    fn known_values() {
        // 2017-12-24T16:14:32.279Z = 1514132072279 (date -d ... +%s%3N).
        assert_eq!(
            parse_ilp_timestamp(b"20171224161432279"),
            Ok(1_514_132_072_279)
        );
        assert_eq!(parse_ilp_timestamp(b"19700101000000000"), Ok(0));
        assert_eq!(
            parse_ilp_timestamp(b"20000229235959999"),
            Ok(slow_ms(2000, 2, 29, 23, 59, 59, 999))
        );
        assert_eq!(
            parse_ilp_timestamp(b"99991224161432279"),
            Ok(slow_ms(9999, 12, 24, 16, 14, 32, 279))
        );
        assert_eq!(
            format_ilp_timestamp(1_514_132_072_279),
            *b"20171224161432279"
        );
        assert_eq!(format_ilp_timestamp(u64::MAX), *b"99991231235959999");
        assert_eq!(
            format_ilp_timestamp(MAX_TIMESTAMP_MS),
            *b"99991231235959999"
        );
    }

    #[test]
    fn invalid_examples() {
        for t in [
            &b"20171224235312.431+0200"[..],
            b"201712242153124318",
            b"20171324161432200",
            b"20171224240000000",
            b"20171224215300",
            b"20161231235960852",
            b"20170229000000000",
            b"21000229000000000",
            b"20170431000000000",
            b"20170100000000000",
            b"20170001000000000",
            b"20171224166032279",
            b"19691231235959999",
            b"2017122416143227a",
            b"",
        ] {
            assert_eq!(
                parse_ilp_timestamp(t),
                Err(DecodeError::BadTimestamp),
                "{t:?}"
            );
        }
        assert!(parse_ilp_timestamp(b"20000229000000000").is_ok());
        assert!(parse_ilp_timestamp(b"20160229000000000").is_ok());
    }

    #[test]
    fn round_trip_against_slow_reference() {
        // Every day boundary over 30 years plus odd offsets.
        let mut ms = 0u64;
        while ms < 30 * 366 * MS_PER_DAY {
            let t = format_ilp_timestamp(ms);
            assert_eq!(parse_ilp_timestamp(&t), Ok(ms));
            let s = core::str::from_utf8(&t).unwrap();
            let p = |a: usize, b: usize| s[a..b].parse::<u64>().unwrap();
            assert_eq!(
                slow_ms(
                    p(0, 4) as u32,
                    p(4, 6) as u32,
                    p(6, 8) as u32,
                    p(8, 10),
                    p(10, 12),
                    p(12, 14),
                    p(14, 17)
                ),
                ms
            );
            ms += MS_PER_DAY / 3 + 12_345;
        }
    }

    /// The SWAR parser against the plain per-digit path, for every byte
    /// value at every position of a valid timestamp.
    #[test]
    fn swar_matches_per_digit_reference() {
        let reference = |b: &[u8; 17]| -> Result<u64> {
            let d = digits(b)?;
            let mut head = [0u32; 14];
            head.copy_from_slice(&d[..14]);
            fields_to_ms(&head, d[14] * 100 + d[15] * 10 + d[16])
        };
        for base in [
            b"20171224161432279",
            b"20000229235959999",
            b"19700101000000000",
        ] {
            for i in 0..17 {
                for v in 0..=255u8 {
                    let mut t = *base;
                    t[i] = v;
                    assert_eq!(parse_ilp_timestamp(&t), reference(&t), "{t:?}");
                }
            }
        }
    }

    #[test]
    fn generalized_time() {
        let want = 1_514_132_072_279;
        assert_eq!(parse_generalized_time(b"20171224161432.279Z"), Ok(want));
        assert_eq!(parse_generalized_time(b"20171224161432.2Z"), Ok(want - 79));
        assert_eq!(parse_generalized_time(b"20171224161432.27Z"), Ok(want - 9));
        assert_eq!(parse_generalized_time(b"20171224161432Z"), Ok(want - 279));
        for bad in [
            &b"20171224161432"[..],
            b"20171224161432.Z",
            b"20171224161432.2791Z",
            b"20171224161432.27aZ",
            b"20171224161432.279",
            b"20171224161460Z",
            b"2017122416143Z",
        ] {
            assert_eq!(
                parse_generalized_time(bad),
                Err(DecodeError::BadTimestamp),
                "{bad:?}"
            );
        }
        assert_eq!(format_generalized_time(want), *b"20171224161432.279Z");
        assert_eq!(format_generalized_time(want - 279), *b"20171224161432.000Z");
    }
}

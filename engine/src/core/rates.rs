//! Exchange rates in exact integer arithmetic (docs/design.md "Rates"):
//!
//! `out = floor(in × price_in/price_out × (1 − spread) × 10^(scale_out − scale_in))`
//!
//! Each (incoming asset, outgoing asset) pair's factor is reduced once, at
//! start-up, to one fraction `num/den` of u128s; per packet the product
//! `in × num` is formed in 192 bits and divided by `den`, so nothing is ever
//! rounded except the final floor. Accounts with the same asset code convert
//! 1:1 in value (only the scale changes, and the spread applies).

use std::collections::HashMap;

use crate::config::{AccountConfig, ConfigError, Decimal, RatesConfig};

/// Why an amount cannot be converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvertError {
    /// A non-zero amount became 0 (R01).
    Zero,
    /// The result does not fit in u64 (F08).
    Overflow,
    /// No price for one of the two assets (T00).
    NoRate,
}

/// The factor from one asset to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// Same code, same scale, no spread.
    Identity,
    Ratio {
        num: u128,
        den: u128,
    },
    NoRate,
}

impl Factor {
    /// Converts `amount`; 0 stays 0 (docs/design.md "Zero-amount packets").
    #[inline]
    pub fn convert(&self, amount: u64) -> Result<u64, ConvertError> {
        if amount == 0 {
            return Ok(0);
        }
        let out = match *self {
            Factor::Identity => return Ok(amount),
            Factor::NoRate => return Err(ConvertError::NoRate),
            Factor::Ratio { num, den } => {
                mul_div(amount, num, den).ok_or(ConvertError::Overflow)?
            }
        };
        if out == 0 {
            Err(ConvertError::Zero)
        } else {
            Ok(out)
        }
    }
}

/// `floor(a × num / den)` if it fits in u64. `den` is never 0 here.
#[inline]
pub fn mul_div(a: u64, num: u128, den: u128) -> Option<u64> {
    if den == 0 {
        return None;
    }
    if let Some(p) = (a as u128).checked_mul(num) {
        return u64::try_from(p / den).ok();
    }
    // 192-bit product as (hi, lo) of u128: a × (n1·2^64 + n0).
    let (n1, n0) = (num >> 64, num & u64::MAX as u128);
    let p0 = a as u128 * n0; // < 2^128
    let p1 = a as u128 * n1; // < 2^128, weight 2^64
    let (lo, carry) = p0.overflowing_add(p1 << 64);
    let hi = (p1 >> 64) + carry as u128;
    if hi >= den {
        return None; // quotient ≥ 2^128
    }
    // Restoring division of (hi, lo) by den, one bit at a time.
    let mut rem = hi;
    let mut q: u128 = 0;
    for i in (0..128).rev() {
        let top = rem >> 127;
        rem = (rem << 1) | ((lo >> i) & 1);
        if top == 1 || rem >= den {
            rem = rem.wrapping_sub(den);
            q |= 1 << i;
        }
    }
    u64::try_from(q).ok()
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Multiplies fractions given as factor lists, cancelling common factors
/// first so exact products stay inside u128 whenever the reduced result does.
fn reduce(mut nums: Vec<u128>, mut dens: Vec<u128>) -> Option<(u128, u128)> {
    for n in nums.iter_mut() {
        for d in dens.iter_mut() {
            let g = gcd(*n, *d);
            if g > 1 {
                *n /= g;
                *d /= g;
            }
        }
    }
    let mut num: u128 = 1;
    let mut den: u128 = 1;
    for n in nums {
        num = num.checked_mul(n)?;
    }
    for d in dens {
        den = den.checked_mul(d)?;
    }
    let g = gcd(num, den);
    Some((num / g, den / g))
}

/// Conversion factors between every pair of distinct (code, scale) assets.
pub struct RateTable {
    /// Asset index of each account.
    account_asset: Vec<u16>,
    assets: usize,
    factors: Vec<Factor>,
}

impl RateTable {
    pub fn new(accounts: &[AccountConfig], rates: &RatesConfig) -> Result<RateTable, ConfigError> {
        let spread = match &rates.spread {
            Some(s) => Decimal::parse(s).map_err(|e| ConfigError::new("rates.spread", e))?,
            None => Decimal { num: 0, den: 1 },
        };
        if spread.num >= spread.den {
            return Err(ConfigError::new("rates.spread", "must be below 1"));
        }
        let mut prices = HashMap::new();
        for (code, p) in &rates.prices {
            let d = Decimal::parse(p)
                .map_err(|e| ConfigError::new(format!("rates.prices.{code}"), e))?;
            if d.num == 0 {
                return Err(ConfigError::new(
                    format!("rates.prices.{code}"),
                    "must be above 0",
                ));
            }
            prices.insert(code.as_str(), d);
        }
        let mut assets: Vec<(&str, u8)> = Vec::new();
        let mut account_asset = Vec::with_capacity(accounts.len());
        for a in accounts {
            let key = (a.asset_code.as_str(), a.asset_scale);
            let idx = match assets.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    assets.push(key);
                    assets.len() - 1
                }
            };
            let idx = u16::try_from(idx).map_err(|_| {
                ConfigError::new(
                    "accounts",
                    "more than 65535 distinct (asset_code, asset_scale) pairs",
                )
            })?;
            account_asset.push(idx);
        }
        let n = assets.len();
        let mut factors = Vec::with_capacity(n * n);
        for &(code_in, scale_in) in &assets {
            for &(code_out, scale_out) in &assets {
                let (mut nums, mut dens) = (vec![spread.den - spread.num], vec![spread.den]);
                if code_in != code_out {
                    match (prices.get(code_in), prices.get(code_out)) {
                        (Some(pi), Some(po)) => {
                            nums.extend([pi.num, po.den]);
                            dens.extend([pi.den, po.num]);
                        }
                        _ => {
                            factors.push(Factor::NoRate);
                            continue;
                        }
                    }
                }
                if scale_out >= scale_in {
                    nums.push(10u128.pow((scale_out - scale_in) as u32));
                } else {
                    dens.push(10u128.pow((scale_in - scale_out) as u32));
                }
                let f = match reduce(nums, dens) {
                    Some((1, 1)) => Factor::Identity,
                    Some((num, den)) => Factor::Ratio { num, den },
                    None => {
                        return Err(ConfigError::new(
                            "rates",
                            format!(
                                "the rate from {code_in} (scale {scale_in}) to {code_out} (scale {scale_out}) \
                                 does not fit in 128-bit integers; use shorter prices or closer scales"
                            ),
                        ))
                    }
                };
                factors.push(f);
            }
        }
        Ok(RateTable {
            account_asset,
            assets: n,
            factors,
        })
    }

    /// The factor from account `from`'s asset to account `to`'s.
    #[inline]
    pub fn factor(&self, from: usize, to: usize) -> Factor {
        match (self.account_asset.get(from), self.account_asset.get(to)) {
            (Some(&i), Some(&o)) => self
                .factors
                .get(i as usize * self.assets + o as usize)
                .copied()
                .unwrap_or(Factor::NoRate),
            _ => Factor::NoRate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mul_div_wide_matches_narrow() {
        assert_eq!(mul_div(10, 3, 4), Some(7));
        assert_eq!(mul_div(u64::MAX, 1, 1), Some(u64::MAX));
        assert_eq!(mul_div(u64::MAX, 2, 1), None);
        // a × num overflows u128 but the quotient fits.
        let num = 10u128.pow(38);
        let den = 10u128.pow(37) * 3;
        assert_eq!(
            mul_div(u64::MAX, num, den),
            None,
            "u64::MAX × 10/3 does not fit"
        );
        assert_eq!(
            mul_div(u64::MAX / 4, num, den),
            Some(((u64::MAX / 4) as u128 * 10 / 3) as u64)
        );
        assert_eq!(mul_div(1_000_000, num, 10u128.pow(38)), Some(1_000_000));
        assert_eq!(mul_div(7, u128::MAX, u128::MAX), Some(7));
        assert_eq!(mul_div(7, u128::MAX, u128::MAX - 1), Some(7));
        assert_eq!(mul_div(3, u128::MAX, u128::MAX / 2), Some(6));
    }

    proptest! {
        #[test]
        fn mul_div_exact(a: u64, num: u128, den in 1u128..) {
            // Reference: split num = q·den + r: a·num/den = a·q + a·r/den.
            let (q, r) = (num / den, num % den);
            let whole = (a as u128).checked_mul(q);
            let frac = mul_div_ref(a, r, den);
            let expect = whole.and_then(|w| w.checked_add(frac)).and_then(|v| u64::try_from(v).ok());
            prop_assert_eq!(mul_div(a, num, den), expect);
        }
    }

    /// a·r/den with r < den, by long multiplication in base 2^32 chunks of `a`.
    fn mul_div_ref(a: u64, r: u128, den: u128) -> u128 {
        // floor(a·r/den) = Σ over bits of a, tracked as (quotient, remainder).
        let (mut q, mut rem) = (0u128, 0u128);
        // Invariant: q·den + rem = (processed prefix of a)·r, rem < den.
        let (rq, rr) = (0u128, r); // r = 0·den + r
        for i in (0..64).rev() {
            // double
            q *= 2;
            let (r2, c) = rem.overflowing_add(rem);
            rem = r2;
            if c || rem >= den {
                rem = rem.wrapping_sub(den);
                q += 1;
            }
            if (a >> i) & 1 == 1 {
                q += rq;
                let (r2, c) = rem.overflowing_add(rr);
                rem = r2;
                if c || rem >= den {
                    rem = rem.wrapping_sub(den);
                    q += 1;
                }
            }
        }
        q
    }
}

//! Exchange rates: exact integers, floor, R01 on zero, scale changes both
//! ways, the spread, overflow (F08) and missing prices (T00).
//! Expected amounts are worked out by hand in the comments.

mod core_support;

use core_support::*;
use ilpd_engine::core::ErrorCode;

/// alice USD 9, bob USD 9, carol EUR 6, erin USD 2, gina GBP 2 (no price).
fn config(spread: Option<&str>) -> String {
    let mut s = BASE.to_string();
    s = s.replace("[rates]\n", "");
    s = s.replace("prices = { USD = \"1\", EUR = \"1.25\" }\n", "");
    s.push_str(
        r#"
[[accounts]]
id = "erin"
relation = "peer"
asset_code = "USD"
asset_scale = 2
incoming_token = "erin-token"
ilp_address = "test.net.erin"

[[accounts]]
id = "gina"
relation = "peer"
asset_code = "GBP"
asset_scale = 2
incoming_token = "gina-token"
ilp_address = "test.net.gina"

[rates]
prices = { USD = "1", EUR = "1.25" }
"#,
    );
    if let Some(sp) = spread {
        s.push_str(&format!("spread = \"{sp}\"\n"));
    }
    s
}

fn convert(h: &mut Harness, from: &str, dest: &str, amount: u64) -> Result<u64, ErrorCode> {
    let (_, cond) = pair(1);
    let (_, a) = h.send(from, prepare(amount, T0_MS + 10_000, dest, &cond, b""));
    match &a[..] {
        [ilpd_engine::core::Action::Forward { .. }] => Ok(forwarded(&a).2.amount()),
        _ => Err(rejected(&a).code()),
    }
}

#[test]
fn cross_currency_floors() {
    let mut h = Harness::new(&config(None));
    // USD e-9 → EUR e-6: × (1 / 1.25) × 10^-3 = × 8 / 10_000.
    assert_eq!(
        convert(&mut h, "alice", "test.net.carol", 1_000_000),
        Ok(800)
    );
    assert_eq!(convert(&mut h, "alice", "test.net.carol", 1_250), Ok(1));
    assert_eq!(
        convert(&mut h, "alice", "test.net.carol", 2_499),
        Ok(1),
        "1.9992 floors to 1"
    );
    assert_eq!(
        convert(&mut h, "alice", "test.net.carol", 1_249),
        Err(ErrorCode::R01_INSUFFICIENT_SOURCE_AMOUNT),
        "0.9992"
    );
    assert_eq!(
        convert(&mut h, "alice", "test.net.carol", 0),
        Ok(0),
        "zero passes through"
    );
    // EUR e-6 → USD e-9: × 1.25 × 1000 = × 1250.
    assert_eq!(
        convert(&mut h, "carol", "test.net.ilpd.alice", 3),
        Ok(3_750)
    );
    assert_eq!(
        convert(&mut h, "carol", "test.net.ilpd.alice", 1),
        Ok(1_250)
    );
}

#[test]
fn scale_changes_both_ways_same_asset() {
    let mut h = Harness::new(&config(None));
    // USD e-9 → USD e-2: ÷ 10^7.
    assert_eq!(convert(&mut h, "alice", "test.net.erin", 10_000_000), Ok(1));
    assert_eq!(convert(&mut h, "alice", "test.net.erin", 29_999_999), Ok(2));
    assert_eq!(
        convert(&mut h, "alice", "test.net.erin", 9_999_999),
        Err(ErrorCode::R01_INSUFFICIENT_SOURCE_AMOUNT)
    );
    // USD e-2 → USD e-9: × 10^7.
    assert_eq!(
        convert(&mut h, "erin", "test.net.ilpd.alice", 3),
        Ok(30_000_000)
    );
    assert_eq!(
        convert(&mut h, "erin", "test.net.ilpd.alice", 922_337_203_000),
        Ok(9_223_372_030_000_000_000)
    );
    // u64::MAX = 18446744073709551615: past 1844674407370 × 10^7 the result overflows u64 (F08).
    assert_eq!(
        convert(&mut h, "erin", "test.net.ilpd.alice", 1_844_674_407_371),
        Err(ErrorCode::F08_AMOUNT_TOO_LARGE)
    );
    // Fits u64 but not the i64 balance range (default min_balance = i64::MIN): T04.
    assert_eq!(
        convert(&mut h, "erin", "test.net.ilpd.alice", 1_844_674_407_370),
        Err(ErrorCode::T04_INSUFFICIENT_LIQUIDITY)
    );
    // Same code, same scale, no spread: unchanged (fresh balances: the
    // largest amount the i64 balance range can hold).
    let mut h = Harness::new(&config(None));
    assert_eq!(
        convert(&mut h, "alice", "test.net.bob", i64::MAX as u64),
        Ok(i64::MAX as u64)
    );
}

#[test]
fn spread_is_taken_and_floored() {
    let mut h = Harness::new(&config(Some("0.002")));
    // Same asset: × 0.998.
    assert_eq!(convert(&mut h, "alice", "test.net.bob", 1000), Ok(998));
    assert_eq!(
        convert(&mut h, "alice", "test.net.bob", 501),
        Ok(499),
        "499.998"
    );
    assert_eq!(
        convert(&mut h, "alice", "test.net.bob", 1),
        Err(ErrorCode::R01_INSUFFICIENT_SOURCE_AMOUNT)
    );
    // USD e-9 → EUR e-6: × 0.998 × 0.8 / 1000 = × 0.0007984.
    assert_eq!(
        convert(&mut h, "alice", "test.net.carol", 1_000_000),
        Ok(798),
        "798.4"
    );
    assert_eq!(
        convert(&mut h, "alice", "test.net.carol", 10_000_000_000),
        Ok(7_984_000)
    );
    // EUR e-6 → USD e-9: × 0.998 × 1.25 × 1000 = × 1247.5.
    assert_eq!(
        convert(&mut h, "carol", "test.net.ilpd.alice", 3),
        Ok(3742),
        "3742.5"
    );
}

#[test]
fn missing_price_is_t00() {
    let mut h = Harness::new(&config(None));
    assert_eq!(
        convert(&mut h, "alice", "test.net.gina", 100),
        Err(ErrorCode::T00_INTERNAL_ERROR)
    );
    assert_eq!(
        convert(&mut h, "gina", "test.net.bob", 100),
        Err(ErrorCode::T00_INTERNAL_ERROR)
    );
    assert_eq!(
        convert(&mut h, "gina", "test.net.bob", 0),
        Ok(0),
        "zero-amount packets skip rates"
    );
    // Nothing stays reserved after these rejects.
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
    assert_eq!(h.snapshot("gina").1, 0);
}

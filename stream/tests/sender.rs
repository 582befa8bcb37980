//! The sender against the receiver through a simulated connector hop with
//! an exchange rate, a maximum packet amount (F08) and a liquidity limit
//! (T04), in virtual time.

use ilpd_codec::ilp::{Prepare, RejectBuilder};
use ilpd_codec::{AmountTooLarge, ErrorCode};
use ilpd_stream::rng::{RandomError, RandomSource};
use ilpd_stream::spsp::ServerSecret;
use ilpd_stream::{Receiver, ReceiverConfig, SendError, Sender, SenderConfig};

struct Xorshift(u64);
impl RandomSource for Xorshift {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), RandomError> {
        for b in out {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
        Ok(())
    }
}

/// The hop between sender and receiver.
struct Hop {
    rate: (u64, u64),
    max_packet: u64,
    liquidity: u64,
    f08: u32,
    t04: u32,
    /// Answer R01 when the converted amount is 0, as ilpd does.
    r01_on_zero: bool,
    r01: u32,
}

impl Hop {
    fn plain() -> Self {
        Hop {
            rate: (1, 1),
            max_packet: u64::MAX,
            liquidity: u64::MAX,
            f08: 0,
            t04: 0,
            r01_on_zero: false,
            r01: 0,
        }
    }
}

struct Run {
    result: Result<ilpd_stream::SendStats, SendError>,
    received: u64,
    hop: Hop,
}

fn reject(code: ErrorCode, data: &[u8]) -> Vec<u8> {
    RejectBuilder {
        code,
        triggered_by: b"test.hop",
        message: b"",
        data,
    }
    .build()
    .to_vec()
}

fn run(
    mut hop: Hop,
    rcfg: impl FnOnce(&mut ReceiverConfig),
    scfg: impl FnOnce(&mut SenderConfig),
) -> Run {
    let mut rc = ReceiverConfig::new("test.bob", "EUR", 2);
    rcfg(&mut rc);
    let mut receiver = Receiver::with_rng(rc, ServerSecret::from_bytes([8; 32]), Xorshift(1));
    let d = receiver
        .server_secret()
        .generate_address_and_secret(&mut Xorshift(2), "test.bob", b"", None)
        .unwrap();
    let mut sc = SenderConfig::new(d.destination_account.clone(), d.shared_secret, 10_000);
    sc.source_address = Some("test.alice".into());
    scfg(&mut sc);
    let mut sender = Sender::new(sc, Xorshift(3));
    let mut now = 1_000_000u64;
    let mut received = 0u64;
    let mut reply = Vec::new();
    for _ in 0..100_000 {
        if sender.is_done() {
            break;
        }
        let mut batch = Vec::new();
        while let Some(p) = sender.poll_prepare(now) {
            batch.push(p);
        }
        if batch.is_empty() {
            now = sender.next_wakeup().unwrap_or(now + 1).max(now + 1);
            continue;
        }
        for p in batch {
            let bytes = sender.ilp_prepare(&p);
            let prep = Prepare::new_checked(&bytes[..]).unwrap();
            let answer = if prep.amount() > hop.max_packet {
                hop.f08 += 1;
                let a = AmountTooLarge {
                    received: prep.amount(),
                    maximum: hop.max_packet,
                };
                reject(ErrorCode::F08_AMOUNT_TOO_LARGE, &a.encode())
            } else if prep.amount() > hop.liquidity {
                hop.t04 += 1;
                reject(ErrorCode::T04_INSUFFICIENT_LIQUIDITY, b"")
            } else if hop.r01_on_zero
                && (prep.amount() as u128 * hop.rate.0 as u128 / hop.rate.1 as u128) == 0
                && prep.amount() > 0
            {
                hop.r01 += 1;
                reject(ErrorCode::R01_INSUFFICIENT_SOURCE_AMOUNT, b"")
            } else {
                let out = (prep.amount() as u128 * hop.rate.0 as u128 / hop.rate.1 as u128) as u64;
                let mut fwd = prep.as_bytes().to_vec();
                let mut fwd_view = Prepare::new_checked(&mut fwd[..]).unwrap();
                fwd_view.set_amount(out);
                let o = receiver.handle_ilp_prepare(now, &fwd_view, &mut reply);
                received += o.credited();
                o.to_ilp(&reply, b"test.bob").to_vec()
            };
            sender.handle_reply(now, p.sequence, &answer);
        }
    }
    assert!(sender.is_done(), "payment did not finish");
    Run {
        result: sender.result().unwrap(),
        received,
        hop,
    }
}

#[test]
fn same_asset_payment_arrives_exactly() {
    let r = run(Hop::plain(), |_| {}, |_| {});
    let s = r.result.unwrap();
    assert_eq!(s.sent, 10_000);
    assert_eq!(s.delivered, 10_000);
    assert_eq!(r.received, 10_000);
    assert_eq!(s.rate, Some((1000, 1000)));
}

#[test]
fn rate_f08_and_t04_are_handled_and_the_minimum_holds() {
    let hop = Hop {
        rate: (2, 3),
        max_packet: 300,
        liquidity: 250,
        ..Hop::plain()
    };
    let r = run(hop, |_| {}, |s| s.probe_amount = 999);
    let s = r.result.unwrap();
    assert_eq!(s.sent, 10_000);
    assert!(r.hop.f08 >= 1, "no F08 seen");
    assert!(r.hop.t04 >= 1, "no T04 seen");
    // Each packet floors, so at most one unit lost per packet.
    assert_eq!(s.delivered, r.received);
    assert!(r.received <= 10_000 * 2 / 3);
    let min = (10_000u128 * 2 * 9_900 / (3 * 10_000)) as u64;
    assert!(r.received >= min - s.fulfilled, "{} < {}", r.received, min);
}

#[test]
fn receiver_max_money_ends_the_payment() {
    let r = run(
        Hop::plain(),
        |c| c.stream_receive_max = 3_000,
        |s| s.max_packet_amount = 1_000,
    );
    assert_eq!(r.result, Err(SendError::ClosedByReceiver));
    assert_eq!(r.received, 3_000);
}

#[test]
fn rate_below_the_minimum_is_refused_before_paying() {
    let hop = Hop {
        rate: (1, 2),
        ..Hop::plain()
    };
    let r = run(hop, |_| {}, |s| s.min_rate = Some((9, 10)));
    assert_eq!(r.result, Err(SendError::RateTooLow));
    assert_eq!(r.received, 0);
}

#[test]
fn zero_rate_is_refused() {
    let hop = Hop {
        rate: (1, 1_000_000),
        ..Hop::plain()
    };
    let r = run(hop, |_| {}, |s| s.probe_amount = 10);
    assert_eq!(r.result, Err(SendError::RateTooLow));
}

#[test]
fn a_probe_too_small_to_convert_grows_until_something_arrives() {
    // 1,000 source units convert to 0 (rate 1/2000): the hop answers R01.
    let hop = Hop {
        rate: (1, 2000),
        r01_on_zero: true,
        ..Hop::plain()
    };
    let r = run(hop, |_| {}, |_| {});
    let s = r.result.unwrap();
    assert_eq!(r.hop.r01, 1, "one R01 for the 1,000-unit probe");
    assert_eq!(s.rate, Some((5, 10_000)), "probed again with 10,000");
    assert_eq!((s.sent, s.delivered, r.received), (10_000, 5, 5));
}

#[test]
fn a_probe_that_cannot_grow_further_fails_as_rate_too_low() {
    let hop = Hop {
        rate: (1, 1_000_000),
        r01_on_zero: true,
        ..Hop::plain()
    };
    let r = run(hop, |_| {}, |_| {});
    assert_eq!(r.result, Err(SendError::RateTooLow));
    assert_eq!(r.hop.r01, 2, "1,000 then 10,000 (the whole payment)");
}

#[test]
fn receive_max_shrinks_packets_then_ends_the_payment() {
    // One packet would be the whole 10,000; the stream takes 2,500 in all.
    let r = run(Hop::plain(), |c| c.stream_receive_max = 2_500, |_| {});
    assert_eq!(r.received, 2_500);
    assert!(matches!(
        r.result,
        Err(SendError::ClosedByReceiver) | Err(SendError::ReceiveMaxReached)
    ));
}

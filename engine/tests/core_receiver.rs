//! Receiver accounts in the sans-IO core (docs/stream.md "Receiving in
//! ilpd"): Prepares built by the stream crate's `Sender` to a receiver
//! account are answered in-process, charged to the sender and credited to
//! the receiver exactly, journaled so that a replay after a cut gives the
//! same balances, and the receiver's Rejects (F06, F99 with data) go back
//! untouched with no money moved.

mod core_support;

use core_support::*;
use ilpd_codec::ilp::{Packet, Prepare};
use ilpd_codec::{ErrorCode, PacketType};
use ilpd_engine::core::Action;
use ilpd_stream::packet::{Frame, Packet as StreamPacket, PacketBuilder};
use ilpd_stream::rng::{RandomError, RandomSource};
use ilpd_stream::spsp::SpspResponse;
use ilpd_stream::{ConnectionKeys, Sender, SenderConfig};

/// BASE plus two receivers: `shop` in the senders' asset, `eshop` in EUR
/// (price 1.25, scale 6).
fn config() -> String {
    format!(
        "{BASE}\n{}",
        r#"
[[accounts]]
id = "shop"
relation = "receiver"
asset_code = "USD"
asset_scale = 9
spsp_default = true

[[accounts]]
id = "eshop"
relation = "receiver"
asset_code = "EUR"
asset_scale = 6
"#
    )
}

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

fn spsp(h: &Harness, name: Option<&str>) -> SpspResponse {
    let json = h.shared.spsp(name, None).expect("a receiver answers SPSP");
    SpspResponse::parse(json.as_bytes()).expect("the SPSP body parses")
}

/// Runs one STREAM payment from `from` to `details` through the core; every
/// Prepare is answered within its own call (no socket).
fn pay(h: &mut Harness, from: &str, d: &SpspResponse, amount: u64) -> ilpd_stream::SendStats {
    let mut cfg = SenderConfig::new(d.destination_account.clone(), d.shared_secret, amount);
    // Several packets per payment.
    cfg.max_packet_amount = (amount / 3).max(1);
    cfg.probe_amount = (amount / 10).max(1);
    let mut s = Sender::new(cfg, Xorshift(42));
    for _ in 0..10_000 {
        if s.is_done() {
            break;
        }
        let Some(p) = s.poll_prepare(h.now.unix_ms) else {
            h.advance_ms(10);
            continue;
        };
        let (_, out) = h.send(from, s.ilp_prepare(&p));
        assert_eq!(out.len(), 1, "one answer per Prepare, at once: {out:?}");
        let Action::Reply { packet, .. } = &out[0] else {
            panic!("a receiver account never gets a Forward: {out:?}");
        };
        s.handle_reply(h.now.unix_ms, p.sequence, packet);
    }
    s.result()
        .expect("the payment ended")
        .expect("the payment succeeded")
}

/// Every frame boundary replays to the balances at that moment, and a cut
/// inside the last frame replays to the frame before it.
fn assert_replays(h: &Harness) {
    for (len, balances) in &h.frames {
        assert_eq!(&h.recovered(*len), balances, "replay of {len} bytes");
    }
    if let [.., (prev_len, prev), (last_len, _)] = &h.frames[..] {
        assert!(last_len > prev_len);
        assert_eq!(&h.recovered(last_len - 1), prev, "a torn last frame");
    }
}

#[test]
fn a_stream_payment_is_fulfilled_charged_and_credited_exactly() {
    let mut h = Harness::new(&config());
    let d = spsp(&h, Some("shop"));
    assert!(d.destination_account.starts_with("test.net.ilpd.shop."));
    let stats = pay(&mut h, "alice", &d, 10_000);
    assert_eq!(stats.sent, 10_000);
    assert_eq!(stats.delivered, 10_000);
    // docs/design.md "Balance sign": alice owes us what she sent, we owe
    // the receiver account what arrived.
    assert_eq!(h.balance("alice"), 10_000);
    assert_eq!(h.balance("shop"), -10_000);
    for name in ["alice", "shop"] {
        let (b, rin, rout) = h.snapshot(name);
        assert_eq!((rin, rout), (0, 0), "{name}: nothing stays reserved ({b})");
    }
    assert_eq!(
        h.metric("ilpd_stream_received_total{account=\"shop\"}"),
        Some(10_000.0)
    );
    let fulfilled = h
        .metric("ilpd_stream_packets_total{account=\"shop\",result=\"fulfilled\"}")
        .unwrap();
    // The sender's closing packet (no money) is fulfilled too.
    assert!(fulfilled as u64 >= stats.fulfilled, "{fulfilled} {stats:?}");
    assert_eq!(
        h.metric("ilpd_account_balance{account=\"shop\"}"),
        Some(-10_000.0)
    );
    assert_replays(&h);
    // The default receiver is the one marked spsp_default.
    assert!(spsp(&h, None)
        .destination_account
        .starts_with("test.net.ilpd.shop."));
}

#[test]
fn cross_currency_credits_what_arrived_and_balances_conserve_per_asset() {
    let mut h = Harness::new(&config());
    let d = spsp(&h, Some("eshop"));
    // 30,000,000 USD nano-units → EUR micro-units at 1/1.25: 24,000 (in
    // packets of 10,000,000 → 8,000 each, exact).
    let stats = pay(&mut h, "alice", &d, 30_000_000);
    assert_eq!(stats.sent, 30_000_000);
    assert_eq!(stats.delivered, 24_000);
    assert_eq!(h.balance("alice"), 30_000_000);
    assert_eq!(h.balance("eshop"), -24_000);
    // Two payers, one receiver: what the receiver is owed is the sum.
    let (d2, d3) = (spsp(&h, Some("shop")), spsp(&h, Some("shop")));
    pay(&mut h, "alice", &d2, 5_000);
    pay(&mut h, "bob", &d3, 7_000);
    assert_eq!(h.balance("shop"), -12_000);
    assert_eq!(
        h.balance("alice") + h.balance("bob") + h.balance("shop"),
        30_000_000
    );
    assert_replays(&h);
}

/// A Prepare to `d` with `data` and `condition`, from alice.
fn raw(
    h: &mut Harness,
    d: &SpspResponse,
    amount: u64,
    data: &[u8],
    cond: [u8; 32],
) -> Packet<Vec<u8>> {
    let p = prepare(amount, T0_MS + 30_000, &d.destination_account, &cond, data);
    let (_, out) = h.send("alice", p);
    replied(&out).1
}

#[test]
fn undecryptable_data_is_f06_and_moves_no_money() {
    let mut h = Harness::new(&config());
    let d = spsp(&h, Some("shop"));
    let frames_before = h.frames.len();
    let keys = ConnectionKeys::new(&d.shared_secret);
    let plain = PacketBuilder {
        packet_type: PacketType::Prepare,
        sequence: 1,
        prepare_amount: 0,
        frames: &[],
    }
    .to_vec();
    let mut data = Vec::new();
    keys.encrypt(&mut Xorshift(7), &plain, &mut data).unwrap();
    let last = data.len() - 1;
    data[last] ^= 1; // tampered ciphertext
    let cond = keys.condition(&data).0;
    let Packet::Reject(r) = raw(&mut h, &d, 500, &data, cond) else {
        panic!("expected a Reject")
    };
    assert_eq!(r.code(), ErrorCode::F06_UNEXPECTED_PAYMENT);
    assert_eq!(r.triggered_by(), b"test.net.ilpd.shop");
    assert!(r.data().is_empty());
    // A wrong shared secret is the same to the receiver.
    let other = ConnectionKeys::new(&[9; 32]);
    let mut data = Vec::new();
    other.encrypt(&mut Xorshift(8), &plain, &mut data).unwrap();
    let Packet::Reject(r) = raw(&mut h, &d, 500, &data, other.condition(&data).0) else {
        panic!("expected a Reject")
    };
    assert_eq!(r.code(), ErrorCode::F06_UNEXPECTED_PAYMENT);
    // An address the secret never issued.
    let fake = SpspResponse {
        destination_account: format!("test.net.ilpd.shop.{}", "A".repeat(80)),
        ..d.clone()
    };
    let Packet::Reject(r) = raw(&mut h, &fake, 500, &data, [1; 32]) else {
        panic!("expected a Reject")
    };
    assert_eq!(r.code(), ErrorCode::F02_UNREACHABLE);
    for name in ["alice", "shop"] {
        assert_eq!(h.snapshot(name), (0, 0, 0), "{name}");
    }
    assert_eq!(h.frames.len(), frames_before, "a Reject journals nothing");
    assert_eq!(
        h.metric("ilpd_stream_packets_total{account=\"shop\",result=\"rejected\"}"),
        Some(3.0)
    );
}

#[test]
fn below_the_minimum_is_f99_with_the_encrypted_reply() {
    let mut h = Harness::new(&config());
    let d = spsp(&h, Some("shop"));
    let keys = ConnectionKeys::new(&d.shared_secret);
    let frames = [Frame::StreamMoney {
        stream_id: 1,
        shares: 1,
    }];
    let plain = PacketBuilder {
        packet_type: PacketType::Prepare,
        sequence: 1,
        prepare_amount: 1_001, // the sender wants at least 1001 to arrive
        frames: &frames,
    }
    .to_vec();
    let mut data = Vec::new();
    keys.encrypt(&mut Xorshift(9), &plain, &mut data).unwrap();
    let cond = keys.condition(&data).0;
    let Packet::Reject(r) = raw(&mut h, &d, 1_000, &data, cond) else {
        panic!("expected a Reject")
    };
    assert_eq!(r.code(), ErrorCode::F99_APPLICATION_ERROR);
    let mut reply = Vec::new();
    keys.decrypt(r.data(), &mut reply)
        .expect("the reply decrypts");
    let reply = StreamPacket::decode(&reply).unwrap();
    assert_eq!(reply.packet_type, PacketType::Reject);
    assert_eq!(reply.sequence, 1);
    assert_eq!(reply.prepare_amount, 1_000, "what arrived");
    assert_eq!(h.snapshot("alice"), (0, 0, 0));
    assert_eq!(h.snapshot("shop"), (0, 0, 0));
    // The same packet with enough money is fulfilled and credited.
    let Packet::Fulfill(f) = raw(&mut h, &d, 1_001, &data, cond) else {
        panic!("expected a Fulfill")
    };
    assert_eq!(f.fulfillment(), &keys.fulfillment(&data).0);
    assert_eq!(h.balance("alice"), 1_001);
    assert_eq!(h.balance("shop"), -1_001);
    assert_replays(&h);
}

#[test]
fn limits_apply_as_to_any_next_hop() {
    // The receiver's min_balance caps what we may owe it (T04), and the
    // sender's max_balance what it may spend.
    let cfg = config().replace(
        "asset_scale = 9\nspsp_default = true",
        "asset_scale = 9\nspsp_default = true\nmin_balance = -2500",
    );
    let mut h = Harness::new(&cfg);
    let d = spsp(&h, Some("shop"));
    let keys = ConnectionKeys::new(&d.shared_secret);
    let mut seq = 0;
    let mut send = |h: &mut Harness, amount: u64| {
        seq += 1;
        let frames = [Frame::StreamMoney {
            stream_id: 1,
            shares: 1,
        }];
        let plain = PacketBuilder {
            packet_type: PacketType::Prepare,
            sequence: seq,
            prepare_amount: 0,
            frames: &frames,
        }
        .to_vec();
        let mut data = Vec::new();
        keys.encrypt(&mut Xorshift(seq + 10), &plain, &mut data)
            .unwrap();
        let cond = keys.condition(&data).0;
        raw(h, &d, amount, &data, cond)
    };
    assert!(matches!(send(&mut h, 2_000), Packet::Fulfill(_)));
    let Packet::Reject(r) = send(&mut h, 1_000) else {
        panic!("expected T04")
    };
    assert_eq!(r.code(), ErrorCode::T04_INSUFFICIENT_LIQUIDITY);
    assert_eq!(r.triggered_by(), NODE.as_bytes(), "our own Reject");
    assert!(matches!(send(&mut h, 500), Packet::Fulfill(_)));
    assert_eq!(h.balance("shop"), -2_500);
    assert_eq!(h.balance("alice"), 2_500);
    assert_replays(&h);
}

#[test]
fn a_fulfill_waits_for_its_journal_frame() {
    let mut h = Harness::new(&config());
    let d = spsp(&h, Some("shop"));
    let mut s = Sender::new(
        SenderConfig::new(d.destination_account.clone(), d.shared_secret, 100),
        Xorshift(3),
    );
    // Probe first (a Reject: not held).
    let probe = s.poll_prepare(h.now.unix_ms).unwrap();
    let (_, out) = h.send("alice", s.ilp_prepare(&probe));
    let Action::Reply { packet, .. } = &out[0] else {
        panic!()
    };
    s.handle_reply(h.now.unix_ms, probe.sequence, packet);
    let p = s.poll_prepare(h.now.unix_ms).unwrap();
    let from = ilpd_engine::core::ReplyTo {
        account: h.id("alice"),
        conn: 1,
        request_id: 99,
    };
    // Called as IO does, without the harness's journal pump: nothing may
    // leave before the frame holding the Fulfilled record is durable.
    let mut out = Vec::new();
    h.core.on_prepare(h.now, from, s.ilp_prepare(&p), &mut out);
    h.core.flush(h.now, &mut out);
    assert!(out.is_empty(), "the Fulfill is held: {out:?}");
    assert_eq!(h.balance("shop"), -100, "in memory at once");
    let (seq, _) = h.core.journal_seal(h.now.unix_ms).expect("a frame");
    h.core.journal_written(seq, &mut out);
    assert!(out.is_empty(), "written is not durable");
    h.core.journal_durable(seq, &mut out);
    let (_, reply) = replied(&out);
    assert!(matches!(reply, Packet::Fulfill(_)));
    // It was never a Forward: the prepare bytes did not leave.
    let _ = Prepare::new_checked(s.ilp_prepare(&p).to_vec()).unwrap();
}

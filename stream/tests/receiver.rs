//! The receiver end to end without IO: connection details from the SPSP
//! side, Prepares built and encrypted as a sender would, every answer of
//! the table in `receiver.rs` (and docs/stream.md "Receiver answers").

use ilpd_codec::{ErrorCode, Expiry, PacketType};
use ilpd_stream::crypto::ConnectionKeys;
use ilpd_stream::packet::{Frame, Packet, PacketBuilder, StreamErrorCode};
use ilpd_stream::receipt::{self, ReceiptParams};
use ilpd_stream::rng::{RandomError, RandomSource};
use ilpd_stream::spsp::{ConnectionDetails, ServerSecret};
use ilpd_stream::{IncomingPrepare, Outcome, Receiver, ReceiverConfig};

const NOW: u64 = 1_800_000_000_000;
const ADDR: &str = "test.ilpd.bob";

/// Reproducible "random" bytes.
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

fn receiver(cfg: impl FnOnce(&mut ReceiverConfig)) -> Receiver<Xorshift> {
    let mut c = ReceiverConfig::new(ADDR, "XYZ", 9);
    cfg(&mut c);
    Receiver::with_rng(c, ServerSecret::from_bytes([7; 32]), Xorshift(99))
}

/// New connection details each call.
fn details(r: &Receiver<Xorshift>, receipt: Option<&ReceiptParams>) -> ConnectionDetails {
    static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(5);
    let seed = SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    r.server_secret()
        .generate_address_and_secret(&mut Xorshift(seed), ADDR, b"t1", receipt)
        .unwrap()
}

/// A sender's side of one connection.
struct Client {
    dest: String,
    keys: ConnectionKeys,
    rng: Xorshift,
    seq: u64,
}

struct Sent {
    outcome: Outcome,
    reply: Vec<u8>,
}

impl Client {
    fn new(d: &ConnectionDetails) -> Self {
        Client {
            dest: d.destination_account.clone(),
            keys: ConnectionKeys::new(&d.shared_secret),
            rng: Xorshift(1234),
            seq: 0,
        }
    }

    fn data(&mut self, min: u64, frames: &[Frame<'_>]) -> Vec<u8> {
        self.seq += 1;
        let plain = PacketBuilder {
            packet_type: PacketType::Prepare,
            sequence: self.seq,
            prepare_amount: min,
            frames,
        }
        .to_vec();
        let mut data = Vec::new();
        self.keys.encrypt(&mut self.rng, &plain, &mut data).unwrap();
        data
    }

    fn send_raw(
        &mut self,
        r: &mut Receiver<Xorshift>,
        amount: u64,
        data: &[u8],
        condition: [u8; 32],
    ) -> Sent {
        let mut reply = Vec::new();
        let outcome = r.handle_prepare(
            NOW,
            &IncomingPrepare {
                destination: self.dest.as_bytes(),
                amount,
                expires_at: Expiry(NOW + 30_000),
                execution_condition: &condition,
                data,
            },
            &mut reply,
        );
        Sent { outcome, reply }
    }

    fn send(
        &mut self,
        r: &mut Receiver<Xorshift>,
        amount: u64,
        min: u64,
        frames: &[Frame<'_>],
    ) -> Sent {
        let data = self.data(min, frames);
        let condition = self.keys.condition(&data).0;
        self.send_raw(r, amount, &data, condition)
    }

    /// Decrypts a reply and returns (type, sequence, amount, frames as
    /// owned debug strings are awkward, so the plaintext).
    fn open(&self, reply: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        self.keys
            .decrypt(reply, &mut plain)
            .expect("reply decrypts");
        plain
    }
}

fn money(stream_id: u64, shares: u64) -> Frame<'static> {
    Frame::StreamMoney { stream_id, shares }
}

fn code(o: &Outcome) -> Option<ErrorCode> {
    match o {
        Outcome::Reject { code } => Some(*code),
        Outcome::Fulfill { .. } => None,
    }
}

#[test]
fn fulfills_and_answers_with_asset_details_and_max_money() {
    let mut r = receiver(|_| {});
    let d = details(&r, None);
    let mut c = Client::new(&d);
    let s = c.send(
        &mut r,
        100,
        50,
        &[
            Frame::ConnectionNewAddress {
                source_account: b"test.alice",
            },
            money(1, 1),
        ],
    );
    let Outcome::Fulfill {
        fulfillment,
        credited,
    } = s.outcome
    else {
        panic!("{:?}", s.outcome)
    };
    assert_eq!(credited, 100);
    assert_eq!(s.outcome.credited(), 100);
    let data = c.data(0, &[]);
    assert_ne!(fulfillment, c.keys.fulfillment(&data));
    let plain = c.open(&s.reply);
    let p = Packet::decode(&plain).unwrap();
    assert_eq!(
        (p.packet_type, p.sequence, p.prepare_amount),
        (PacketType::Fulfill, 1, 100)
    );
    let f: Vec<_> = p.frames().collect();
    assert!(f.contains(&Frame::ConnectionAssetDetails {
        source_asset_code: b"XYZ",
        source_asset_scale: 9
    }));
    assert!(f.contains(&Frame::StreamMaxMoney {
        stream_id: 1,
        receive_max: u64::MAX,
        total_received: 100
    }));
    assert!(!f.iter().any(|f| matches!(f, Frame::StreamReceipt { .. })));

    // Second packet: no asset details again.
    let s = c.send(&mut r, 5, 5, &[money(1, 1)]);
    assert_eq!(s.outcome.credited(), 5);
    let plain = c.open(&s.reply);
    let p = Packet::decode(&plain).unwrap();
    let f: Vec<_> = p.frames().collect();
    assert_eq!(
        f,
        [Frame::StreamMaxMoney {
            stream_id: 1,
            receive_max: u64::MAX,
            total_received: 105
        }]
    );
    let token = d.destination_account.rsplit('.').next().unwrap();
    let sum = r.connection(token.as_bytes()).unwrap();
    assert_eq!(sum.total_received, 105);
    assert_eq!(sum.connection_tag, b"t1");
    assert_eq!(sum.sender_address.as_deref(), Some(&b"test.alice"[..]));
    assert_eq!(sum.streams, [(1, 105)]);
}

#[test]
fn too_little_is_f99_with_the_amount_that_arrived() {
    let mut r = receiver(|_| {});
    let mut c = Client::new(&details(&r, None));
    let s = c.send(&mut r, 99, 100, &[money(1, 1)]);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F99_APPLICATION_ERROR));
    assert_eq!(s.outcome.credited(), 0);
    let plain = c.open(&s.reply);
    let p = Packet::decode(&plain).unwrap();
    assert_eq!(
        (p.packet_type, p.sequence, p.prepare_amount),
        (PacketType::Reject, 1, 99)
    );
    // The probe still told the sender our asset.
    assert!(p
        .frames()
        .any(|f| matches!(f, Frame::ConnectionAssetDetails { .. })));
}

#[test]
fn unfulfillable_condition_is_f99_with_reply() {
    let mut r = receiver(|_| {});
    let mut c = Client::new(&details(&r, None));
    let data = c.data(0, &[money(1, 1)]);
    let s = c.send_raw(&mut r, 1000, &data, [0xab; 32]);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F99_APPLICATION_ERROR));
    let p_plain = c.open(&s.reply);
    assert_eq!(Packet::decode(&p_plain).unwrap().prepare_amount, 1000);
    // Nothing was credited to the stream.
    let s = c.send(&mut r, 1, 0, &[money(1, 1)]);
    let plain = c.open(&s.reply);
    assert!(Packet::decode(&plain).unwrap().frames().any(|f| f
        == Frame::StreamMaxMoney {
            stream_id: 1,
            receive_max: u64::MAX,
            total_received: 1
        }));
}

#[test]
fn bad_input_codes() {
    let mut r = receiver(|_| {});
    let d = details(&r, None);
    let mut c = Client::new(&d);
    // Tampered ciphertext: F06, no data.
    let mut data = c.data(0, &[money(1, 1)]);
    let cond = c.keys.condition(&data).0;
    let last = data.len() - 1;
    data[last] ^= 1;
    let s = c.send_raw(&mut r, 10, &data, cond);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F06_UNEXPECTED_PAYMENT));
    assert!(s.reply.is_empty());
    // Wrong shared secret (right address): F06, on a known connection too.
    let mut wrong = Client::new(&ConnectionDetails {
        shared_secret: [1; 32],
        ..d.clone()
    });
    for _ in 0..2 {
        let s = wrong.send(&mut r, 10, 0, &[money(1, 1)]);
        assert_eq!(code(&s.outcome), Some(ErrorCode::F06_UNEXPECTED_PAYMENT));
    }
    // A token we did not issue: F02.
    let mut forged = Client::new(&ConnectionDetails {
        destination_account: format!("{ADDR}.{}", "A".repeat(70)),
        ..d.clone()
    });
    let s = forged.send(&mut r, 10, 0, &[money(1, 1)]);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F02_UNREACHABLE));
    // Not below our address at all: F02.
    let mut elsewhere = Client::new(&ConnectionDetails {
        destination_account: "test.other.x".into(),
        ..d.clone()
    });
    let s = elsewhere.send(&mut r, 10, 0, &[money(1, 1)]);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F02_UNREACHABLE));
    // A plaintext that is not a STREAM Prepare (a Fulfill-type packet).
    let plain = PacketBuilder {
        packet_type: PacketType::Fulfill,
        sequence: 1,
        prepare_amount: 0,
        frames: &[],
    }
    .to_vec();
    let mut data = Vec::new();
    c.keys.encrypt(&mut c.rng, &plain, &mut data).unwrap();
    let cond = c.keys.condition(&data).0;
    let s = c.send_raw(&mut r, 10, &data, cond);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F06_UNEXPECTED_PAYMENT));
    // Expired on arrival: R00.
    let data = c.data(0, &[money(1, 1)]);
    let cond = c.keys.condition(&data).0;
    let mut reply = Vec::new();
    let o = r.handle_prepare(
        NOW,
        &IncomingPrepare {
            destination: c.dest.as_bytes(),
            amount: 1,
            expires_at: Expiry(NOW),
            execution_condition: &cond,
            data: &data,
        },
        &mut reply,
    );
    assert_eq!(code(&o), Some(ErrorCode::R00_TRANSFER_TIMED_OUT));
    // Extra segments after the token are fine (ilp-protocol-stream too).
    let mut deeper = Client::new(&ConnectionDetails {
        destination_account: format!("{}.sub", d.destination_account),
        ..d.clone()
    });
    assert_eq!(
        deeper.send(&mut r, 3, 0, &[money(1, 1)]).outcome.credited(),
        3
    );
}

#[test]
fn stream_closes_at_max_money() {
    let mut r = receiver(|c| c.stream_receive_max = 150);
    let mut c = Client::new(&details(&r, None));
    assert_eq!(
        c.send(&mut r, 100, 0, &[money(1, 1)]).outcome.credited(),
        100
    );
    // Over the limit: F99 with StreamMaxMoney.
    let s = c.send(&mut r, 100, 0, &[money(1, 1)]);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F99_APPLICATION_ERROR));
    let plain = c.open(&s.reply);
    assert!(Packet::decode(&plain).unwrap().frames().any(|f| f
        == Frame::StreamMaxMoney {
            stream_id: 1,
            receive_max: 150,
            total_received: 100
        }));
    // Exactly to the limit: fulfilled, and the stream closes.
    let s = c.send(&mut r, 50, 0, &[money(1, 1)]);
    assert_eq!(s.outcome.credited(), 50);
    let plain = c.open(&s.reply);
    assert!(Packet::decode(&plain).unwrap().frames().any(|f| f
        == Frame::StreamClose {
            stream_id: 1,
            code: StreamErrorCode::NO_ERROR,
            message: b""
        }));
    // More money on the closed stream: F99 with StreamClose(StreamStateError).
    let s = c.send(&mut r, 1, 0, &[money(1, 1)]);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F99_APPLICATION_ERROR));
    let plain = c.open(&s.reply);
    assert!(Packet::decode(&plain).unwrap().frames().any(|f| matches!(
        f,
        Frame::StreamClose {
            stream_id: 1,
            code: StreamErrorCode::STREAM_STATE_ERROR,
            ..
        }
    )));
    // Another stream of the same connection still receives.
    assert_eq!(c.send(&mut r, 7, 0, &[money(3, 1)]).outcome.credited(), 7);
}

#[test]
fn shares_split_with_remainder_to_lowest_stream() {
    let mut r = receiver(|_| {});
    let d = details(&r, None);
    let mut c = Client::new(&d);
    let s = c.send(&mut r, 100, 0, &[money(3, 2), money(1, 1)]);
    assert_eq!(s.outcome.credited(), 100);
    let token = d.destination_account.rsplit('.').next().unwrap();
    assert_eq!(
        r.connection(token.as_bytes()).unwrap().streams,
        [(1, 34), (3, 66)]
    );
}

#[test]
fn receipts_when_the_token_asks() {
    let params = ReceiptParams {
        nonce: [4; 16],
        secret: [5; 32],
    };
    let mut r = receiver(|_| {});
    let d = details(&r, Some(&params));
    assert!(d.receipts_enabled);
    let mut c = Client::new(&d);
    for (amount, total) in [(10u64, 10u64), (15, 25)] {
        let s = c.send(&mut r, amount, 0, &[money(1, 1)]);
        let plain = c.open(&s.reply);
        let p = Packet::decode(&plain).unwrap();
        let rec = p
            .frames()
            .find_map(|f| match f {
                Frame::StreamReceipt {
                    stream_id: 1,
                    receipt,
                } => Some(receipt.to_vec()),
                _ => None,
            })
            .expect("a receipt");
        let v = receipt::verify(&rec, &params.secret).unwrap();
        assert_eq!(
            (v.nonce, v.stream_id, v.total_received),
            ([4; 16], 1, total)
        );
    }
}

#[test]
fn protocol_violations_close_the_connection() {
    let mut r = receiver(|_| {});
    let mut c = Client::new(&details(&r, None));
    let s = c.send(&mut r, 10, 0, &[money(2, 1)]);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F99_APPLICATION_ERROR));
    let plain = c.open(&s.reply);
    assert!(Packet::decode(&plain).unwrap().frames().any(|f| matches!(
        f,
        Frame::ConnectionClose {
            code: StreamErrorCode::PROTOCOL_VIOLATION,
            ..
        }
    )));
    let s = c.send(&mut r, 10, 0, &[money(1, 1)]);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F99_APPLICATION_ERROR));

    // Stream id over the max.
    let mut c = Client::new(&details(&r, None));
    let s = c.send(&mut r, 10, 0, &[money(21, 1)]);
    let plain = c.open(&s.reply);
    assert!(Packet::decode(&plain).unwrap().frames().any(|f| matches!(
        f,
        Frame::ConnectionClose {
            code: StreamErrorCode::STREAM_ID_ERROR,
            ..
        }
    )));

    // Asset details that change.
    let mut c = Client::new(&details(&r, None));
    let asset = |code: &'static [u8]| Frame::ConnectionAssetDetails {
        source_asset_code: code,
        source_asset_scale: 2,
    };
    assert_eq!(c.send(&mut r, 1, 0, &[asset(b"USD")]).outcome.credited(), 1);
    assert_eq!(c.send(&mut r, 1, 0, &[asset(b"USD")]).outcome.credited(), 1);
    let s = c.send(&mut r, 1, 0, &[asset(b"EUR")]);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F99_APPLICATION_ERROR));
}

#[test]
fn sender_close_is_acknowledged_then_refused() {
    let mut r = receiver(|_| {});
    let mut c = Client::new(&details(&r, None));
    let close = Frame::ConnectionClose {
        code: StreamErrorCode::NO_ERROR,
        message: b"",
    };
    let s = c.send(&mut r, 5, 0, &[money(1, 1), close]);
    assert_eq!(s.outcome.credited(), 5);
    let plain = c.open(&s.reply);
    assert!(Packet::decode(&plain)
        .unwrap()
        .frames()
        .any(|f| matches!(f, Frame::ConnectionClose { .. })));
    let s = c.send(&mut r, 5, 0, &[money(1, 1)]);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F99_APPLICATION_ERROR));

    // ilp-protocol-stream closes with an unfulfillable packet: still a close.
    let mut c = Client::new(&details(&r, None));
    assert_eq!(c.send(&mut r, 5, 0, &[money(1, 1)]).outcome.credited(), 5);
    let data = c.data(0, &[close]);
    let s = c.send_raw(&mut r, 0, &data, [9; 32]);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F99_APPLICATION_ERROR));
    let plain = c.open(&s.reply);
    assert!(Packet::decode(&plain)
        .unwrap()
        .frames()
        .any(|f| matches!(f, Frame::ConnectionClose { .. })));
    let s = c.send(&mut r, 5, 0, &[money(1, 1)]);
    assert_eq!(code(&s.outcome), Some(ErrorCode::F99_APPLICATION_ERROR));
}

#[test]
fn table_is_bounded_and_evicted_connections_come_back() {
    let mut r = receiver(|c| {
        c.max_connections = 8;
        c.idle_timeout_ms = 1000;
    });
    let mut clients: Vec<Client> = (0..20u8)
        .map(|i| {
            let d = r
                .server_secret()
                .generate_address_and_secret(&mut Xorshift(100 + i as u64), ADDR, b"", None)
                .unwrap();
            Client::new(&d)
        })
        .collect();
    for c in clients.iter_mut() {
        assert_eq!(c.send(&mut r, 1, 0, &[money(1, 1)]).outcome.credited(), 1);
        assert!(r.connection_count() <= 8);
    }
    // The first one was dropped; it is derived again from its token.
    assert_eq!(
        clients[0]
            .send(&mut r, 2, 0, &[money(1, 1)])
            .outcome
            .credited(),
        2
    );
    r.expire(NOW + 1000);
    assert_eq!(r.connection_count(), 0);
}

#[test]
fn fulfills_a_prepare_built_by_ilp_protocol_stream() {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/vectors/js-stream.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let hexs = |p: &str| hex::decode(v.pointer(p).unwrap().as_str().unwrap()).unwrap();
    let secret: [u8; 32] = hexs("/server/server_secret").try_into().unwrap();
    let mut r = Receiver::with_rng(
        ReceiverConfig::new("test.js.server", "XYZ", 9),
        ServerSecret::from_bytes(secret),
        Xorshift(3),
    );
    let dest = v
        .pointer("/server/with_receipts/destination_account")
        .unwrap()
        .as_str()
        .unwrap();
    let data = hexs("/exchange/prepare_data");
    let cond: [u8; 32] = hexs("/exchange/condition").try_into().unwrap();
    let mut reply = Vec::new();
    let o = r.handle_prepare(
        NOW,
        &IncomingPrepare {
            destination: dest.as_bytes(),
            amount: 100,
            expires_at: Expiry(NOW + 1),
            execution_condition: &cond,
            data: &data,
        },
        &mut reply,
    );
    let Outcome::Fulfill { fulfillment, .. } = o else {
        panic!("{o:?}")
    };
    assert_eq!(fulfillment.0.to_vec(), hexs("/exchange/fulfillment"));
    // Its reply carries a receipt the JS verifier would accept.
    let keys = ConnectionKeys::new(&hexs("/server/with_receipts/shared_secret"));
    let mut plain = Vec::new();
    keys.decrypt(&reply, &mut plain).unwrap();
    let p = Packet::decode(&plain).unwrap();
    let rec = p
        .frames()
        .find_map(|f| match f {
            Frame::StreamReceipt { receipt, .. } => Some(receipt.to_vec()),
            _ => None,
        })
        .unwrap();
    let rs: [u8; 32] = hexs("/server/with_receipts/receipt_secret")
        .try_into()
        .unwrap();
    assert_eq!(receipt::verify(&rec, &rs).unwrap().total_received, 100);
    // And the ILP reply packet builds.
    let ilp = o.to_ilp(&reply, b"test.js.server");
    assert_eq!(ilp[0], 13);
}

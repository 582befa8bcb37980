//! Property tests: random packets round-trip byte for byte; random or
//! mutated bytes never make the decoder, the token code or the receiver
//! panic; and whatever a sender with the right key sends, no stream is
//! credited past its receive max.

use ilpd_codec::{Expiry, PacketType};
use ilpd_stream::crypto::ConnectionKeys;
use ilpd_stream::packet::{Frame, Packet, PacketBuilder, StreamErrorCode};
use ilpd_stream::rng::{RandomError, RandomSource};
use ilpd_stream::spsp::{decode_token, ServerSecret, SpspResponse};
use ilpd_stream::{IncomingPrepare, Outcome, Receiver, ReceiverConfig};
use proptest::prelude::*;

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

/// An owned frame, so strategies can produce them.
#[derive(Debug, Clone)]
enum F {
    Close(u8, Vec<u8>),
    NewAddress(Vec<u8>),
    Num(u8, u64),
    Asset(Vec<u8>, u8),
    StreamClose(u64, u8, Vec<u8>),
    Pair(u8, u64, u64),
    Triple(u8, u64, u64, u64),
    Data(u64, u64, Vec<u8>),
    Receipt(u64, Vec<u8>),
    Unknown(u8, Vec<u8>),
}

impl F {
    fn frame(&self) -> Frame<'_> {
        match self {
            F::Close(c, m) => Frame::ConnectionClose {
                code: StreamErrorCode(*c),
                message: m,
            },
            F::NewAddress(a) => Frame::ConnectionNewAddress { source_account: a },
            F::Num(t, v) => match t % 4 {
                0 => Frame::ConnectionMaxData { max_offset: *v },
                1 => Frame::ConnectionDataBlocked { max_offset: *v },
                2 => Frame::ConnectionMaxStreamId { max_stream_id: *v },
                _ => Frame::ConnectionStreamIdBlocked { max_stream_id: *v },
            },
            F::Asset(c, s) => Frame::ConnectionAssetDetails {
                source_asset_code: c,
                source_asset_scale: *s,
            },
            F::StreamClose(id, c, m) => Frame::StreamClose {
                stream_id: *id,
                code: StreamErrorCode(*c),
                message: m,
            },
            F::Pair(t, a, b) => match t % 3 {
                0 => Frame::StreamMoney {
                    stream_id: *a,
                    shares: *b,
                },
                1 => Frame::StreamMaxData {
                    stream_id: *a,
                    max_offset: *b,
                },
                _ => Frame::StreamDataBlocked {
                    stream_id: *a,
                    max_offset: *b,
                },
            },
            F::Triple(t, a, b, c) => {
                if t % 2 == 0 {
                    Frame::StreamMaxMoney {
                        stream_id: *a,
                        receive_max: *b,
                        total_received: *c,
                    }
                } else {
                    Frame::StreamMoneyBlocked {
                        stream_id: *a,
                        send_max: *b,
                        total_sent: *c,
                    }
                }
            }
            F::Data(id, off, d) => Frame::StreamData {
                stream_id: *id,
                offset: *off,
                data: d,
            },
            F::Receipt(id, r) => Frame::StreamReceipt {
                stream_id: *id,
                receipt: r,
            },
            F::Unknown(t, c) => Frame::Unknown {
                frame_type: *t,
                contents: c,
            },
        }
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn num() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..300, any::<u64>(), Just(u64::MAX)]
}

fn frame() -> impl Strategy<Value = F> {
    prop_oneof![
        (any::<u8>(), bytes(40)).prop_map(|(c, m)| F::Close(c, m)),
        bytes(200).prop_map(F::NewAddress),
        (any::<u8>(), num()).prop_map(|(t, v)| F::Num(t, v)),
        (bytes(10), any::<u8>()).prop_map(|(c, s)| F::Asset(c, s)),
        (num(), any::<u8>(), bytes(20)).prop_map(|(i, c, m)| F::StreamClose(i, c, m)),
        (any::<u8>(), num(), num()).prop_map(|(t, a, b)| F::Pair(t, a, b)),
        (any::<u8>(), num(), num(), num()).prop_map(|(t, a, b, c)| F::Triple(t, a, b, c)),
        (num(), num(), bytes(300)).prop_map(|(i, o, d)| F::Data(i, o, d)),
        (num(), bytes(70)).prop_map(|(i, r)| F::Receipt(i, r)),
        // Types this crate does not know: 0x00, 0x08..0x0f, 0x18.. .
        (prop_oneof![Just(0u8), 8u8..16, 0x18u8..=255], bytes(30))
            .prop_map(|(t, c)| F::Unknown(t, c)),
    ]
}

fn packet_type() -> impl Strategy<Value = PacketType> {
    prop_oneof![
        Just(PacketType::Prepare),
        Just(PacketType::Fulfill),
        Just(PacketType::Reject)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn packets_round_trip(
        ty in packet_type(),
        sequence in num(),
        amount in num(),
        frames in prop::collection::vec(frame(), 0..8),
        junk in 0usize..40,
    ) {
        let frames: Vec<Frame<'_>> = frames.iter().map(F::frame).collect();
        let b = PacketBuilder { packet_type: ty, sequence, prepare_amount: amount, frames: &frames };
        let mut enc = b.to_vec();
        prop_assert_eq!(enc.len(), b.encoded_len());
        let canonical = enc.clone();
        enc.resize(enc.len() + junk, 0);
        let p = Packet::decode(&enc).unwrap();
        prop_assert_eq!((p.packet_type, p.sequence, p.prepare_amount), (ty, sequence, amount));
        let back: Vec<Frame<'_>> = p.frames().collect();
        prop_assert_eq!(&back, &frames);
        prop_assert_eq!(p.junk().len(), junk);
        let again = PacketBuilder { packet_type: p.packet_type, sequence, prepare_amount: amount, frames: &back }.to_vec();
        prop_assert_eq!(again, canonical);
    }

    #[test]
    fn decode_never_panics(b in bytes(300)) {
        if let Ok(p) = Packet::decode(&b) {
            let frames: Vec<_> = p.frames().collect();
            prop_assert_eq!(frames.len(), p.frame_count());
            for f in &frames {
                // Lengths are self-consistent.
                let mut out = Vec::new();
                f.write_to(&mut out);
                prop_assert_eq!(out.len(), f.encoded_len());
            }
        }
    }

    #[test]
    fn mutated_packets_never_panic(
        frames in prop::collection::vec(frame(), 0..6),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let frames: Vec<Frame<'_>> = frames.iter().map(F::frame).collect();
        let mut b = PacketBuilder { packet_type: PacketType::Prepare, sequence: 1, prepare_amount: 5, frames: &frames }.to_vec();
        for (at, x) in flips {
            let i = at % b.len();
            b[i] ^= x;
        }
        b.truncate(cut % (b.len() + 1));
        if let Ok(p) = Packet::decode(&b) {
            for f in p.frames() { let _ = f.encoded_len(); }
        }
    }

    #[test]
    fn tokens_and_spsp_never_panic(b in bytes(200), s in ".{0,120}") {
        let secret = ServerSecret::from_bytes([3; 32]);
        if let Ok(t) = decode_token(&b) {
            let _ = secret.open_token(&t);
        }
        let _ = secret.open_token(&b);
        let _ = SpspResponse::parse(&b);
        let _ = SpspResponse::parse(s.as_bytes());
        let _ = ilpd_stream::spsp::spsp_url(&s);
    }

    #[test]
    fn receiver_never_panics_on_arbitrary_input(
        data in bytes(200),
        dest_tail in bytes(120),
        amount in num(),
        expiry in any::<u64>(),
        cond in any::<[u8; 32]>(),
    ) {
        let mut r = Receiver::with_rng(ReceiverConfig::new("test.r", "X", 2), ServerSecret::from_bytes([1; 32]), Xorshift(7));
        let details = r.server_secret().generate_address_and_secret(&mut Xorshift(9), "test.r", b"", None).unwrap();
        let mut reply = Vec::new();
        let mut forged = b"test.r.".to_vec();
        forged.extend_from_slice(&dest_tail);
        for dest in [details.destination_account.as_bytes(), &forged[..], &dest_tail[..]] {
            let o = r.handle_prepare(1, &IncomingPrepare {
                destination: dest, amount, expires_at: Expiry(expiry), execution_condition: &cond, data: &data,
            }, &mut reply);
            prop_assert_eq!(o.credited(), 0);
        }
        // Arbitrary plaintext under the right key reaches the STREAM layer.
        let keys = ConnectionKeys::new(&details.shared_secret);
        let mut enc = Vec::new();
        keys.encrypt(&mut Xorshift(11), &data, &mut enc).unwrap();
        let cond = keys.condition(&enc).0;
        let _ = r.handle_prepare(1, &IncomingPrepare {
            destination: details.destination_account.as_bytes(), amount, expires_at: Expiry(u64::MAX), execution_condition: &cond, data: &enc,
        }, &mut reply);
    }

    #[test]
    fn receiver_never_credits_past_receive_max(
        packets in prop::collection::vec((0u64..500, prop::collection::vec(frame(), 0..5), 0u64..400), 1..25),
        receive_max in 1u64..2000,
    ) {
        let mut cfg = ReceiverConfig::new("test.r", "X", 2);
        cfg.stream_receive_max = receive_max;
        let mut r = Receiver::with_rng(cfg, ServerSecret::from_bytes([1; 32]), Xorshift(7));
        let d = r.server_secret().generate_address_and_secret(&mut Xorshift(9), "test.r", b"", None).unwrap();
        let keys = ConnectionKeys::new(&d.shared_secret);
        let mut rng = Xorshift(13);
        let mut reply = Vec::new();
        let mut credited = 0u64;
        for (seq, (amount, frames, min)) in packets.iter().enumerate() {
            let frames: Vec<Frame<'_>> = frames.iter().map(F::frame).collect();
            let plain = PacketBuilder { packet_type: PacketType::Prepare, sequence: seq as u64, prepare_amount: *min, frames: &frames }.to_vec();
            let mut data = Vec::new();
            keys.encrypt(&mut rng, &plain, &mut data).unwrap();
            let cond = keys.condition(&data).0;
            let o = r.handle_prepare(1, &IncomingPrepare {
                destination: d.destination_account.as_bytes(), amount: *amount, expires_at: Expiry(1000), execution_condition: &cond, data: &data,
            }, &mut reply);
            if let Outcome::Fulfill { credited: c, .. } = o {
                prop_assert_eq!(c, *amount);
                prop_assert!(*amount >= *min);
                credited += c;
            }
            // Every reply decrypts and answers this sequence.
            let mut rp = Vec::new();
            keys.decrypt(&reply, &mut rp).unwrap();
            let p = Packet::decode(&rp).unwrap();
            prop_assert_eq!(p.sequence, seq as u64);
            prop_assert_eq!(p.prepare_amount, *amount);
        }
        let token = d.destination_account.rsplit('.').next().unwrap();
        let sum = r.connection(token.as_bytes()).unwrap();
        prop_assert_eq!(sum.total_received, credited);
        for (_, total) in sum.streams {
            prop_assert!(total <= receive_max);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever comes back (garbage, truncated or mismatched replies),
    /// the sender neither panics nor counts more than it sent.
    #[test]
    fn sender_never_panics_on_arbitrary_replies(
        replies in prop::collection::vec((bytes(120), any::<u8>()), 1..40),
    ) {
        use ilpd_stream::{Sender, SenderConfig};
        let mut s = Sender::new(SenderConfig::new("test.r.x", [2; 32], 5_000), Xorshift(5));
        let mut now = 10u64;
        let mut seqs = Vec::new();
        for (reply, pick) in replies {
            while let Some(p) = s.poll_prepare(now) {
                seqs.push(p.sequence);
            }
            if let Some(&seq) = seqs.get(pick as usize % seqs.len().max(1)) {
                s.handle_reply(now, seq, &reply);
                let mut r = reply.clone();
                r.insert(0, 13);
                s.handle_reply(now, seq, &r);
            }
            now += 2000;
            let st = s.stats();
            prop_assert!(st.sent <= 5_000 + 1000);
        }
    }
}

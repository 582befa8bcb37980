//! Any bytes into the ILPv4 packet decoders: must never panic, and a packet
//! that parses must re-encode to the same bytes when it has no trailing
//! content (canonical OER on both sides), and survive an in-place patch.
#![no_main]

use ilpd_codec::ilp::{FulfillBuilder, Packet, Prepare, PrepareBuilder, RejectBuilder};
use ilpd_codec::types::{AmountTooLarge, Expiry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = AmountTooLarge::decode(data);
    let Ok(pkt) = Packet::new_checked(data) else {
        return;
    };
    match pkt {
        Packet::Prepare(p) => {
            let again = PrepareBuilder {
                amount: p.amount(),
                expires_at: p.expires_at(),
                execution_condition: p.execution_condition(),
                destination: p.destination(),
                data: p.data(),
            }
            .build();
            if p.trailing().is_empty() {
                assert_eq!(&again[..], data, "Prepare re-encode differs");
            }
            let mut buf = data.to_vec();
            let mut m = Prepare::new_checked(&mut buf[..]).expect("re-check");
            m.set_amount(p.amount().wrapping_add(1));
            m.set_expires_at(Expiry(p.expires_at().0 / 2));
            let re = Prepare::new_checked(&buf[..]).expect("patched Prepare parses");
            assert_eq!(re.amount(), p.amount().wrapping_add(1));
            assert_eq!(re.expires_at(), Expiry(p.expires_at().0 / 2));
            // Only content bytes 0..25 (amount, expiresAt) may change.
            let (content_len, _) = ilpd_codec::oer::read_length(&data[1..]).expect("length");
            let start = data.len() - content_len;
            assert_eq!(&buf[..start], &data[..start]);
            assert_eq!(&buf[start + 25..], &data[start + 25..]);
        }
        Packet::Fulfill(f) => {
            let again = FulfillBuilder {
                fulfillment: f.fulfillment(),
                data: f.data(),
            }
            .build();
            if f.trailing().is_empty() {
                assert_eq!(&again[..], data, "Fulfill re-encode differs");
            }
        }
        Packet::Reject(r) => {
            let _ = (r.code().name(), r.code().class());
            let again = RejectBuilder {
                code: r.code(),
                triggered_by: r.triggered_by(),
                message: r.message(),
                data: r.data(),
            }
            .build();
            if r.trailing().is_empty() {
                assert_eq!(&again[..], data, "Reject re-encode differs");
            }
        }
    }
});

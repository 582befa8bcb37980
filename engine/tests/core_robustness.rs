//! No input makes the core panic or leak a reservation: random bytes and
//! mutated valid packets as Prepares and as replies.

mod core_support;

use bytes::BytesMut;
use core_support::*;
use ilpd_engine::core::{Action, OutId};
use proptest::prelude::*;

fn valid_prepare(amount: u64, dest: &str) -> Vec<u8> {
    let (_, cond) = pair(1);
    prepare(amount, T0_MS + 10_000, dest, &cond, b"data").to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn random_prepares_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut h = Harness::base();
        let (_, a) = h.send("alice", BytesMut::from(&bytes[..]));
        prop_assert_eq!(a.len(), 1);
    }

    #[test]
    fn mutated_prepares_get_one_answer(
        dest in prop::sample::select(vec!["test.net.bob", "test.net.ilpd", "peer.config", "peer.balance", "test.net.carol"]),
        amount in any::<u64>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut h = Harness::base();
        let mut b = valid_prepare(amount, dest);
        for (i, v) in flips {
            let at = i.index(b.len());
            b[at] = v;
        }
        if truncate {
            b.truncate(cut.index(b.len()));
        }
        let (_, a) = h.send("alice", BytesMut::from(&b[..]));
        prop_assert_eq!(a.len(), 1);
        // Whatever happened, a reply to it (random bytes) never panics and
        // leaves no reservation.
        if let Action::Forward { to, out_id, .. } = &a[0] {
            let (to, out_id) = (*to, *out_id);
            let name = h.shared.account_config(to).id.clone();
            let out = h.reply(&name, out_id, BytesMut::from(&b[..]));
            prop_assert_eq!(out.len(), 1);
        }
        prop_assert!(h.flush().len() <= 1);
        h.advance_ms(60_000);
        h.timers();
        for n in ["alice", "bob", "carol", "dave"] {
            let (_, rin, rout) = h.snapshot(n);
            prop_assert_eq!((rin, rout), (0, 0));
        }
    }

    #[test]
    fn random_replies_and_ids_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..120), id: u32) {
        let mut h = Harness::base();
        let (_, a) = h.send("alice", BytesMut::from(&valid_prepare(5, "test.net.bob")[..]));
        prop_assert_eq!(a.len(), 1);
        let out = h.reply("bob", OutId(id), BytesMut::from(&bytes[..]));
        prop_assert!(out.len() <= 1);
        h.flush();
    }
}

//! Recovery's logic over damaged journals (docs/ledger.md "Recovery"): a
//! torn tail at every byte of the last frame is cut and the balances are
//! those of the frame before; a flipped byte anywhere in a frame with
//! valid frames after it stops recovery, naming the file and offset; the
//! snapshot and generations combine as documented.

mod core_support;

use core_support::*;
use ilpd_engine::core::ErrorCode;
use ilpd_engine::ledger::format::{self, Read, Snapshot};
use ilpd_engine::ledger::replay::{replay, DoubtKind};
use ilpd_engine::ledger::writer::segment_name;

/// A journal of a few turns: forwards, fulfills, a reject, an open packet.
fn journal() -> Harness {
    let mut h = Harness::base();
    let mut ids = Vec::new();
    for n in 1..=6u8 {
        let (_, cond) = pair(n);
        let (_, a) = h.send(
            "alice",
            prepare(n as u64 * 10, T0_MS + 10_000, "test.net.bob", &cond, b""),
        );
        ids.push(forwarded(&a).1);
    }
    for (i, id) in ids.iter().enumerate().take(4) {
        h.reply("bob", *id, fulfill(&pair(i as u8 + 1).0, b""));
    }
    h.flush();
    h.reply(
        "bob",
        ids[4],
        reject(ErrorCode::F99_APPLICATION_ERROR, "", "no", b""),
    );
    // ids[5] stays open. One more turn writes the `Released` mark.
    let mut out = Vec::new();
    h.pump(&mut out);
    h
}

/// Start offsets of every frame in `buf`.
fn frame_starts(buf: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut at = 0;
    while let Read::Frame(_, n) = format::read_frame(&buf[at..]) {
        v.push(at);
        at += n;
    }
    assert_eq!(at, buf.len(), "the journal is whole");
    v
}

#[test]
fn whole_journal_gives_balances_and_the_open_packet() {
    let h = journal();
    let r = h.replay(h.journal.len());
    assert_eq!(r.balances["alice"], 100);
    assert_eq!(r.balances["bob"], -100);
    assert_eq!(r.in_doubt.len(), 1);
    let d = &r.in_doubt[0];
    assert_eq!(d.kind, DoubtKind::OutcomeUnknown);
    assert_eq!((d.from.as_str(), d.to.as_str()), ("alice", "bob"));
    assert_eq!(d.forward.in_amount, 60);
    assert_eq!(d.forward.condition, pair(6).1);
    assert!(r.torn.is_empty());
}

#[test]
fn a_torn_tail_at_every_byte_of_the_last_frame_is_cut() {
    let h = journal();
    let starts = frame_starts(&h.journal);
    let last = *starts.last().unwrap();
    let whole = h.replay(h.journal.len());
    let before = h.recovered(last);
    for cut in last..h.journal.len() {
        let r = h.replay(cut);
        if cut == last {
            assert!(r.torn.is_empty());
        } else {
            assert_eq!(r.torn.len(), 1, "cut at {cut}");
            assert_eq!(r.torn[0].offset, last as u64, "cut at {cut}");
            assert_eq!(r.torn[0].len, (cut - last) as u64);
        }
        assert_eq!(h.recovered(cut), before, "cut at {cut}");
    }
    // The last frame moves no money (a reject and a `Released` mark).
    assert_eq!(
        (whole.balances["alice"], whole.balances["bob"]),
        (before[0] as i128, before[1] as i128)
    );
}

#[test]
fn a_flipped_byte_in_the_middle_stops_recovery_with_file_and_offset() {
    let h = journal();
    let starts = frame_starts(&h.journal);
    assert!(starts.len() >= 4);
    let name = segment_name(0, 0, 0);
    // Every byte of every frame but the last (the last is a torn tail).
    for w in starts.windows(2) {
        let (start, end) = (w[0], w[1]);
        for i in start..end {
            let mut bad = h.journal.clone();
            bad[i] ^= 0x5a;
            let err = replay(None, &[(name.clone(), &bad[..])])
                .expect_err(&format!("flip at {i} went unnoticed"));
            assert_eq!(err.file, name);
            if start == 0 {
                // The checkpoint itself: nothing valid may follow it.
                assert!(err.reason.contains("checkpoint"), "{err}");
            } else {
                assert_eq!(err.offset, start as u64, "flip at {i}: {err}");
            }
        }
    }
}

#[test]
fn snapshot_and_generations() {
    let h = journal();
    let snap = Snapshot {
        generation: 3,
        balances: vec![("alice".into(), 1000), ("zed".into(), -7)],
    }
    .encode(T0_MS);
    // The journal of the snapshot's generation adds to it.
    let g3 = segment_name(3, 0, 0);
    let r = replay(Some(&snap), &[(g3.clone(), &h.journal[..])]).unwrap();
    assert_eq!(r.generation, 3);
    assert_eq!(r.balances["alice"], 1100);
    assert_eq!(r.balances["bob"], -100);
    assert_eq!(r.balances["zed"], -7, "an account only the ledger knows");
    // An older generation's journal is already in the snapshot.
    let g2 = segment_name(2, 0, 0);
    let r = replay(Some(&snap), &[(g2.clone(), &h.journal[..])]).unwrap();
    assert_eq!(r.stale, vec![g2]);
    assert_eq!(r.balances["alice"], 1000);
    // A newer one cannot be: recovery refuses.
    let g4 = segment_name(4, 0, 0);
    let err = replay(Some(&snap), &[(g4, &h.journal[..])]).unwrap_err();
    assert!(err.reason.contains("newer than the snapshot"), "{err}");
    // A damaged snapshot stops recovery too.
    let mut bad = snap.clone();
    let n = bad.len();
    bad[n - 3] ^= 1;
    let err = replay(Some(&bad), &[]).unwrap_err();
    assert_eq!(err.file, "snapshot");
    let err = replay(Some(&snap[..n - 1]), &[]).unwrap_err();
    assert!(err.reason.contains("truncated"), "{err}");
}

#[test]
fn two_workers_add_up_and_a_torn_new_segment_is_ignored() {
    let a = journal();
    let b = journal();
    let mut torn_seg = b.journal.clone();
    torn_seg.truncate(7);
    let segs = vec![
        (segment_name(0, 0, 0), &a.journal[..]),
        (segment_name(0, 1, 0), &b.journal[..]),
        // Worker 1 died while beginning its next segment.
        (segment_name(0, 1, 1), &torn_seg[..]),
    ];
    let r = replay(None, &segs).unwrap();
    assert_eq!(r.balances["alice"], 200);
    assert_eq!(r.in_doubt.len(), 2);
    assert_eq!(r.torn.len(), 1);
    assert_eq!(r.torn[0].file, segment_name(0, 1, 1));
}

#[test]
fn garbage_segments_never_panic() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let h = journal();
    for round in 0..300 {
        let mut bad = h.journal.clone();
        for _ in 0..(round % 7 + 1) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % bad.len();
            bad[i] = (x >> 32) as u8;
        }
        let _ = replay(None, &[(segment_name(0, 0, 0), &bad[..])]);
    }
}

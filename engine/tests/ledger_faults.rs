//! The journal over a fault-injecting file layer (docs/ledger.md "Failure
//! of the disk"): the worker's real per-turn code (`io::journal::turn`),
//! the real writer and syncer, and in-memory files that write short, fail
//! a write, fail an fsync, or fail to create a segment. Each fault stops
//! the ledger, is never retried, and releases nothing that depended on it.

mod core_support;

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use core_support::*;
use ilpd_codec::ilp::Packet;
use ilpd_engine::config::Config;
use ilpd_engine::core::{AccountId, Action, Core, ErrorCode, Now, ReplyTo, Shared};
use ilpd_engine::io::journal;
use ilpd_engine::ledger::fs::{LogDir, LogFile};
use ilpd_engine::ledger::replay::{replay, DoubtKind, Replayed};
use ilpd_engine::ledger::sync::{Syncer, WorkerLog};
use ilpd_engine::ledger::writer::Writer;
use ilpd_engine::ledger::{Durability, LedgerStatus};
use parking_lot::Mutex;

/// Which calls fail, counted over the whole directory (1-based).
#[derive(Clone, Copy, Default)]
struct Faults {
    /// Each write() takes at most this many bytes (0: no limit).
    max_write: usize,
    fail_write: Option<usize>,
    fail_sync: Option<usize>,
    fail_create: Option<usize>,
}

#[derive(Default)]
struct Counters {
    writes: AtomicUsize,
    syncs: AtomicUsize,
    creates: AtomicUsize,
}

struct FaultFile {
    data: Mutex<Vec<u8>>,
    /// Bytes covered by the last successful sync.
    synced: AtomicUsize,
    faults: Faults,
    n: Arc<Counters>,
}

impl LogFile for FaultFile {
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let k = self.n.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.faults.fail_write == Some(k) {
            return Err(io::Error::other("injected: write failed (ENOSPC)"));
        }
        let n = match self.faults.max_write {
            0 => buf.len(),
            m => buf.len().min(m),
        };
        self.data.lock().extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn sync_data(&self) -> io::Result<()> {
        let k = self.n.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if self.faults.fail_sync == Some(k) {
            return Err(io::Error::other("injected: fdatasync failed (EIO)"));
        }
        self.synced.store(self.data.lock().len(), Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Default)]
struct FaultDir {
    files: Mutex<BTreeMap<String, Arc<FaultFile>>>,
    faults: Faults,
    n: Arc<Counters>,
}

impl LogDir for FaultDir {
    fn create(&self, name: &str) -> io::Result<Arc<dyn LogFile>> {
        let k = self.n.creates.fetch_add(1, Ordering::SeqCst) + 1;
        if self.faults.fail_create == Some(k) {
            return Err(io::Error::other("injected: create failed (EMFILE)"));
        }
        let f = Arc::new(FaultFile {
            data: Mutex::new(Vec::new()),
            synced: AtomicUsize::new(0),
            faults: self.faults,
            n: self.n.clone(),
        });
        if self.files.lock().insert(name.into(), f.clone()).is_some() {
            return Err(io::Error::other("exists"));
        }
        Ok(f)
    }

    fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.files.lock().remove(name);
        Ok(())
    }
}

/// One worker's core, writer and (fsync) syncer over a [`FaultDir`].
struct Rig {
    shared: Arc<Shared>,
    core: Core,
    writer: Writer,
    dir: Arc<FaultDir>,
    syncer: Option<Arc<Syncer>>,
    status: Arc<LedgerStatus>,
    now: Now,
    requests: u32,
}

impl Rig {
    fn new(mode: Durability, faults: Faults, segment_limit: u64) -> Result<Rig, io::Error> {
        let cfg = Config::from_toml(BASE).unwrap();
        let shared = Shared::from_config(&cfg).unwrap();
        for i in 0..shared.account_count() {
            shared.connection_opened(AccountId(i as u32));
        }
        let status = shared.ledger_status().clone();
        let mut core = Core::new(shared.clone(), 0);
        let dir = Arc::new(FaultDir {
            faults,
            ..FaultDir::default()
        });
        let log: Arc<WorkerLog> = Arc::default();
        let syncer = (mode == Durability::Fsync)
            .then(|| Arc::new(Syncer::new(vec![log.clone()], dir.clone())));
        let (seq, cp) = core.journal_checkpoint(T0_MS, 0).unwrap();
        let writer = Writer::create(
            dir.clone(),
            log,
            syncer.clone(),
            mode,
            0,
            0,
            segment_limit,
            (seq, &cp),
        )?;
        Ok(Rig {
            shared,
            core,
            writer,
            dir,
            syncer,
            status,
            now: Now {
                unix_ms: T0_MS,
                mono_ns: 1_000_000_000,
            },
            requests: 0,
        })
    }

    /// The end of a loop turn, as the worker does it.
    fn turn(&mut self, out: &mut Vec<Action>) {
        journal::turn(
            &mut self.core,
            &mut self.writer,
            &self.status,
            self.now,
            out,
        );
        self.core.journal_flushed();
    }

    fn send(&mut self, n: u8, amount: u64) -> Vec<Action> {
        self.requests += 1;
        let from = ReplyTo {
            account: AccountId(0),
            conn: 1,
            request_id: self.requests,
        };
        let (_, cond) = pair(n);
        let mut out = Vec::new();
        let p = prepare(amount, T0_MS + 10_000, "test.net.bob", &cond, b"");
        self.core.on_prepare(self.now, from, p, &mut out);
        self.turn(&mut out);
        out
    }

    fn fulfill(&mut self, n: u8, id: ilpd_engine::core::OutId) -> Vec<Action> {
        let mut out = Vec::new();
        let bob = AccountId(1);
        self.core
            .on_reply(self.now, bob, id, fulfill(&pair(n).0, b""), &mut out);
        self.core.flush(self.now, &mut out);
        self.turn(&mut out);
        out
    }

    fn replay(&self) -> Replayed {
        let files = self.dir.files.lock();
        let segs: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(n, f)| (n.clone(), f.data.lock().clone()))
            .collect();
        let refs: Vec<(String, &[u8])> = segs.iter().map(|(n, b)| (n.clone(), &b[..])).collect();
        replay(None, &refs).expect("replays")
    }

    /// What one successful sync of the syncer does.
    fn sync(&self) -> io::Result<bool> {
        self.syncer.as_ref().expect("fsync mode").sync_once()
    }
}

fn balances(r: &Replayed) -> (i128, i128) {
    (
        r.balances.get("alice").copied().unwrap_or(0),
        r.balances.get("bob").copied().unwrap_or(0),
    )
}

fn rig(mode: Durability, faults: Faults) -> Rig {
    Rig::new(mode, faults, 1 << 30).expect("rig")
}

fn is_fulfill(out: &[Action]) -> bool {
    matches!(replied(out).1, Packet::Fulfill(_))
}

fn rejected_with(out: &[Action]) -> ErrorCode {
    match replied(out).1 {
        Packet::Reject(r) => r.code(),
        p => panic!("expected a Reject, got {p:?}"),
    }
}

#[test]
fn os_mode_releases_each_action_once_its_record_is_written() {
    let mut r = rig(Durability::Os, Faults::default());
    let out = r.send(1, 100);
    let (_, id, _) = forwarded(&out);
    assert!(is_fulfill(&r.fulfill(1, id)));
    let j = r.replay();
    assert_eq!(balances(&j), (100, -100));
    // The Fulfill was handed over, but the `Released` mark is in the
    // frame not yet written: recovery would list it.
    assert_eq!(j.in_doubt.len(), 1);
    assert_eq!(j.in_doubt[0].kind, DoubtKind::DeliveryUnknown);
    let mut out = Vec::new();
    r.turn(&mut out);
    assert!(out.is_empty());
    assert!(r.replay().in_doubt.is_empty());
}

#[test]
fn fsync_mode_holds_the_fulfill_until_the_sync() {
    let mut r = rig(Durability::Fsync, Faults::default());
    let out = r.send(1, 100);
    // The Forward needs its record written, not synced.
    let (_, id, _) = forwarded(&out);
    assert!(r.fulfill(1, id).is_empty(), "held until durable");
    assert_eq!(r.core.in_flight(), 1, "a held Fulfill counts as in flight");
    assert!(r.sync().unwrap());
    let mut out = Vec::new();
    r.turn(&mut out);
    assert!(is_fulfill(&out));
    assert_eq!(r.core.in_flight(), 0);
    let f = r.dir.files.lock().values().next().unwrap().clone();
    assert!(f.synced.load(Ordering::SeqCst) > 0);
    assert!(!r.sync().unwrap(), "nothing new to sync");
}

#[test]
fn short_writes_are_completed() {
    let faults = Faults {
        max_write: 3,
        ..Faults::default()
    };
    let mut r = rig(Durability::Os, faults);
    for n in 1..=5u8 {
        let out = r.send(n, n as u64);
        let (_, id, _) = forwarded(&out);
        assert!(is_fulfill(&r.fulfill(n, id)));
    }
    assert!(!r.status.is_failed());
    assert_eq!(balances(&r.replay()), (15, -15));
}

#[test]
fn a_failed_write_stops_the_ledger_and_releases_nothing_that_needed_it() {
    // Write 1 is the checkpoint; write 2 the first Forward's frame.
    let faults = Faults {
        fail_write: Some(2),
        ..Faults::default()
    };
    let mut r = rig(Durability::Os, faults);
    let out = r.send(1, 100);
    // The Forward was not recorded: it must not leave; it is rejected.
    assert_eq!(rejected_with(&out), ErrorCode::T00_INTERNAL_ERROR);
    assert!(r.status.is_failed());
    assert!(r
        .status
        .reason()
        .unwrap()
        .contains("injected: write failed"));
    // Never retried: later turns write nothing.
    let writes = r.dir.n.writes.load(Ordering::SeqCst);
    let out = r.send(2, 100);
    assert_eq!(rejected_with(&out), ErrorCode::T00_INTERNAL_ERROR);
    assert_eq!(r.dir.n.writes.load(Ordering::SeqCst), writes);
    // Nothing is left waiting; balances stay put.
    r.now.unix_ms += 60_000;
    let mut out = Vec::new();
    r.core.on_timers(r.now, &mut out);
    assert!(out.is_empty());
    assert_eq!(
        r.shared
            .balance_snapshot(AccountId(0))
            .unwrap()
            .reserved_incoming,
        0
    );
    assert_eq!(r.shared.balance(AccountId(0)), 0);
    assert_eq!(r.core.in_flight(), 0);
}

#[test]
fn a_failed_fsync_stops_the_ledger_and_the_fulfill_is_never_passed_on() {
    let faults = Faults {
        fail_sync: Some(2),
        ..Faults::default()
    };
    let mut r = rig(Durability::Fsync, faults);
    let out = r.send(1, 100);
    let (_, id1, _) = forwarded(&out);
    assert!(
        r.sync().unwrap(),
        "sync 1 covers the checkpoint and the Forward"
    );
    assert!(r.fulfill(1, id1).is_empty());
    // The syncer's own loop: sync 2 fails, the ledger stops, run returns.
    let s = r.syncer.clone().unwrap();
    let st = r.status.clone();
    std::thread::spawn(move || s.run(&st)).join().unwrap();
    assert!(r.status.is_failed());
    assert!(r.status.reason().unwrap().contains("fdatasync"));
    let mut out = Vec::new();
    for _ in 0..3 {
        r.turn(&mut out);
    }
    assert!(
        out.is_empty(),
        "a Fulfill that was not made durable is not passed on"
    );
    assert_eq!(rejected_with(&r.send(2, 5)), ErrorCode::T00_INTERNAL_ERROR);
    assert_eq!(r.core.in_flight(), 0, "a drain does not wait for it");
    assert!(r.core.journal_idle());
}

#[test]
fn a_failed_segment_create_stops_the_ledger() {
    // Create 1 is segment 0; create 2 the first rollover.
    let faults = Faults {
        fail_create: Some(2),
        ..Faults::default()
    };
    let mut r = Rig::new(Durability::Os, faults, 200).unwrap();
    let out = r.send(1, 100);
    assert!(r.status.is_failed());
    assert!(r.status.reason().unwrap().contains("new journal segment"));
    // The frame itself was written before the rollover: the Forward left.
    forwarded(&out);
}

#[test]
fn segments_roll_over_and_old_ones_go_once_the_checkpoint_is_durable() {
    let mut r = Rig::new(Durability::Fsync, Faults::default(), 300).unwrap();
    let mut open = Vec::new();
    let mut paid = 0u64;
    for n in 1..=40u8 {
        let out = r.send(n, n as u64);
        let (_, id, _) = forwarded(&out);
        if n % 3 == 0 {
            open.push(id); // never answered: still open at the end
            continue;
        }
        assert!(r.fulfill(n, id).is_empty());
        assert!(r.sync().unwrap());
        let mut out = Vec::new();
        r.turn(&mut out);
        assert!(is_fulfill(&out));
        paid += n as u64;
    }
    // One more turn writes the last `Released` mark; then it is synced.
    let mut out = Vec::new();
    r.turn(&mut out);
    assert!(r.sync().unwrap());
    r.turn(&mut out);
    assert!(out.is_empty());
    assert!(
        r.writer.segment() > 3,
        "rolled over: {}",
        r.writer.segment()
    );
    let names: Vec<String> = r.dir.files.lock().keys().cloned().collect();
    assert!(names.len() <= 2, "old segments removed: {names:?}");
    let j = r.replay();
    assert_eq!(balances(&j), (paid as i128, -(paid as i128)));
    let doubts: Vec<u32> = j.in_doubt.iter().map(|d| d.forward.id).collect();
    let mut want: Vec<u32> = open.iter().map(|id| id.0).collect();
    want.sort();
    let mut got = doubts.clone();
    got.sort();
    assert_eq!(got, want, "the open packets, carried by the checkpoints");
    assert!(j
        .in_doubt
        .iter()
        .all(|d| d.kind == DoubtKind::OutcomeUnknown && d.from == "alice" && d.to == "bob"));
}

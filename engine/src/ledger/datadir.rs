//! The data directory (docs/ledger.md "Files"):
//!
//! ```text
//! DIR/LOCK                      held (flock) by the running ilpd
//! DIR/snapshot                  balances at the start of the current generation
//! DIR/journal/g…-w…-s….log      each worker's journal segments
//! DIR/reports/recovery-G.json   what each start recovered, with the packets in doubt
//! ```
//!
//! [`recover`] runs at start-up: it replays the snapshot and the journal
//! (`replay.rs`), cuts torn tails, writes the next generation's snapshot and
//! the recovery report, and removes the replayed segments. Each step is
//! atomic (temporary file, fsync, rename), so a crash during recovery just
//! means recovery runs again.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::format::Snapshot;
use super::fs::{sync_dir, write_atomic};
use super::replay::{replay, Corrupt, DoubtKind, Replayed};

pub const JOURNAL: &str = "journal";
pub const REPORTS: &str = "reports";
const SNAPSHOT: &str = "snapshot";
const LOCK: &str = "LOCK";
/// Most in-doubt packets logged one by one (the report file has them all).
const LOG_DOUBTS: usize = 50;

/// Why the ledger cannot start.
#[derive(Debug)]
pub enum OpenError {
    /// Another process holds the data dir.
    Locked(String),
    /// A file or directory could not be read or written.
    Io(String),
    /// Damage recovery will not guess about (exit 2).
    Corrupt(Corrupt),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Locked(m) | OpenError::Io(m) => f.write_str(m),
            OpenError::Corrupt(c) => write!(f, "ledger damaged: {c}"),
        }
    }
}

fn io_err(what: &str, path: &Path, e: io::Error) -> OpenError {
    OpenError::Io(format!("{what} {}: {e}", path.display()))
}

/// The locked data directory; the lock lasts as long as this value.
pub struct DataDir {
    pub path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the directory (and its subdirectories) if needed and takes
    /// its lock, or says which process holds it.
    pub fn open(path: &Path) -> Result<DataDir, OpenError> {
        for d in [path.to_path_buf(), path.join(JOURNAL), path.join(REPORTS)] {
            fs::create_dir_all(&d).map_err(|e| io_err("cannot create", &d, e))?;
        }
        let lock_path = path.join(LOCK);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_err("cannot open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(OpenError::Locked(format!(
                    "data dir {} is in use by another ilpd{} (it holds {}); stop it or give another --data-dir",
                    path.display(),
                    if holder.is_empty() { String::new() } else { format!(" (pid {holder})") },
                    lock_path.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(io_err("cannot lock", &lock_path, e)),
        }
        let _ = lock.set_len(0);
        let _ = write!(lock, "{}", std::process::id());
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.path.join(JOURNAL)
    }
}

/// Reads the snapshot and every journal segment and replays them, without
/// changing anything (`ilpd ledger verify`, and the first half of [`recover`]).
pub fn read(path: &Path) -> Result<Replayed, OpenError> {
    let snap_path = path.join(SNAPSHOT);
    let snapshot = match fs::read(&snap_path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("cannot read", &snap_path, e)),
    };
    let files = read_segments(&path.join(JOURNAL))?;
    let refs: Vec<(String, &[u8])> = files.iter().map(|(n, b)| (n.clone(), &b[..])).collect();
    replay(snapshot.as_deref(), &refs).map_err(|c| {
        OpenError::Corrupt(Corrupt {
            file: if c.file == SNAPSHOT {
                snap_path.display().to_string()
            } else {
                path.join(JOURNAL).join(&c.file).display().to_string()
            },
            ..c
        })
    })
}

/// Every `.log` file of the journal directory, by name.
pub fn read_segments(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, OpenError> {
    let mut files = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(io_err("cannot list", dir, e)),
    };
    for ent in entries {
        let ent = ent.map_err(|e| io_err("cannot list", dir, e))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".log") {
            continue;
        }
        let p = ent.path();
        let bytes = fs::read(&p).map_err(|e| io_err("cannot read", &p, e))?;
        files.push((name, bytes));
    }
    files.sort();
    Ok(files)
}

/// What start-up recovered: the balances to load and the generation the
/// new journal is written under.
#[derive(Debug)]
pub struct Recovered {
    pub generation: u64,
    pub balances: Vec<(String, i64)>,
    pub in_doubt: usize,
    pub report: PathBuf,
}

/// Recovers the locked data dir (see the module docs).
pub fn recover(dir: &DataDir) -> Result<Recovered, OpenError> {
    let t = Instant::now();
    let r = read(&dir.path)?;
    let jdir = dir.journal_dir();
    for torn in &r.torn {
        let p = jdir.join(&torn.file);
        warn!(
            file = %p.display(),
            offset = torn.offset,
            bytes = torn.len,
            "journal: torn tail cut (a write the crash interrupted)"
        );
        let f = OpenOptions::new()
            .write(true)
            .open(&p)
            .map_err(|e| io_err("cannot open", &p, e))?;
        f.set_len(torn.offset)
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err("cannot truncate", &p, e))?;
    }
    let mut balances = Vec::with_capacity(r.balances.len());
    for (name, b) in &r.balances {
        let v = i64::try_from(*b).map_err(|_| {
            OpenError::Corrupt(Corrupt {
                file: jdir.display().to_string(),
                offset: 0,
                reason: format!("balance of account {name:?} is out of range: {b}"),
            })
        })?;
        balances.push((name.clone(), v));
    }
    let generation = r.generation + 1;
    let now_ms = unix_ms();
    let report = dir
        .path
        .join(REPORTS)
        .join(format!("recovery-{generation:010}.json"));
    write_atomic(&report, report_json(&r, generation, now_ms, t).as_bytes())
        .map_err(|e| io_err("cannot write", &report, e))?;
    let snap = Snapshot {
        generation,
        balances: balances.clone(),
    };
    let snap_path = dir.path.join(SNAPSHOT);
    write_atomic(&snap_path, &snap.encode(now_ms))
        .map_err(|e| io_err("cannot write", &snap_path, e))?;
    // The snapshot now holds every replayed segment: remove them all.
    let files = read_dir_names(&jdir)?;
    for name in &files {
        let p = jdir.join(name);
        fs::remove_file(&p).map_err(|e| io_err("cannot remove", &p, e))?;
    }
    if !files.is_empty() {
        sync_dir(&jdir).map_err(|e| io_err("cannot sync", &jdir, e))?;
    }
    log_recovery(&r, generation, &report, t);
    Ok(Recovered {
        generation,
        balances,
        in_doubt: r.in_doubt.len(),
        report,
    })
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, OpenError> {
    let mut v = Vec::new();
    for ent in fs::read_dir(dir).map_err(|e| io_err("cannot list", dir, e))? {
        let ent = ent.map_err(|e| io_err("cannot list", dir, e))?;
        v.push(ent.file_name().to_string_lossy().into_owned());
    }
    Ok(v)
}

fn log_recovery(r: &Replayed, generation: u64, report: &Path, t: Instant) {
    info!(
        generation,
        accounts = r.balances.len(),
        frames = r.frames,
        entries = r.entries,
        journal_bytes = r.bytes,
        ms = t.elapsed().as_millis() as u64,
        "ledger recovered"
    );
    for (name, b) in &r.balances {
        info!(account = %name, balance = %b, "recovered balance");
    }
    for d in r.in_doubt.iter().take(LOG_DOUBTS) {
        let (account, amount) = match d.kind {
            DoubtKind::OutcomeUnknown => (&d.to, d.forward.out_amount),
            DoubtKind::DeliveryUnknown => (&d.from, d.forward.in_amount),
        };
        warn!(
            kind = d.kind.as_str(),
            account = %account,
            amount,
            condition = %hex(&d.forward.condition),
            at_unix_ms = d.at_ms,
            "packet in doubt after a crash"
        );
    }
    if !r.in_doubt.is_empty() {
        warn!(
            count = r.in_doubt.len(),
            report = %report.display(),
            "packets in doubt after a crash: see the recovery report"
        );
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// The recovery report (docs/ledger.md "Recovery report").
pub fn report_json(r: &Replayed, generation: u64, now_ms: u64, t: Instant) -> String {
    use serde_json::{json, Map, Value};
    let balances: Map<String, Value> = r
        .balances
        .iter()
        .map(|(n, b)| {
            let v = i64::try_from(*b).map_or_else(|_| json!(b.to_string()), |b| json!(b));
            (n.clone(), v)
        })
        .collect();
    let mut by_account: BTreeMap<(&str, &str), (u64, u128)> = BTreeMap::new();
    let doubts: Vec<Value> = r
        .in_doubt
        .iter()
        .map(|d| {
            let f = &d.forward;
            let (acct, amt, other_key, other, other_amt_key, other_amt) = match d.kind {
                DoubtKind::OutcomeUnknown => (
                    &d.to,
                    f.out_amount,
                    "from_account",
                    &d.from,
                    "from_amount",
                    f.in_amount,
                ),
                DoubtKind::DeliveryUnknown => (
                    &d.from,
                    f.in_amount,
                    "to_account",
                    &d.to,
                    "to_amount",
                    f.out_amount,
                ),
            };
            let e = by_account.entry((d.kind.as_str(), acct)).or_default();
            e.0 += 1;
            e.1 += amt as u128;
            json!({
                "kind": d.kind.as_str(),
                "account": acct,
                "amount": amt.to_string(),
                other_key: other,
                other_amt_key: other_amt.to_string(),
                "condition": hex(&f.condition),
                "at_unix_ms": d.at_ms,
                "expires_at_unix_ms": f.expires_ms,
                "journal_file": d.file,
            })
        })
        .collect();
    let summary: Vec<Value> = by_account
        .iter()
        .map(|((k, a), (n, amt))| json!({"kind": k, "account": a, "packets": n, "amount": amt.to_string()}))
        .collect();
    let v = json!({
        "generation": generation,
        "previous_generation": r.generation,
        "recovered_at_unix_ms": now_ms,
        "recovery_ms": t.elapsed().as_millis() as u64,
        "replayed": {"frames": r.frames, "entries": r.entries, "journal_bytes": r.bytes},
        "torn_tails": r.torn.iter().map(|t| json!({"file": t.file, "offset": t.offset, "bytes": t.len})).collect::<Vec<_>>(),
        "balances": balances,
        "in_doubt_summary": summary,
        "in_doubt": doubts,
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

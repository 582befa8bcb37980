//! The durable ledger (docs/ledger.md): a write-ahead journal that makes
//! the in-memory balances survive a crash, at in-memory speed.
//!
//! The atomics in `core` stay the authority on the hot path. Each worker's
//! core appends a record of every balance effect to a frame once per loop
//! turn (`core/journal.rs`); the worker writes the frame to its own segment
//! file ([`writer`]); with `durability = "fsync"` one syncer thread makes
//! the frames durable in groups ([`sync`]). A Forward leaves only after its
//! record is written; a Fulfill is passed upstream only after its record is
//! durable. At start, [`datadir::recover`] replays snapshot + journal and
//! lists the packets whose fate it cannot know.
//!
//! - [`format`]: the bytes (frames, entries, checkpoints, snapshot);
//! - [`fs`]: the file layer (real, or fault-injecting in tests);
//! - [`replay`]: recovery's logic, sans-IO;
//! - [`datadir`]: the data directory, its lock, and start-up recovery;
//! - [`tool`]: `ilpd ledger verify` and `ilpd ledger dump`.

pub mod datadir;
pub mod format;
pub mod fs;
pub mod replay;
pub mod sync;
pub mod tool;
pub mod writer;

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use serde::Deserialize;
use tracing::error;

use datadir::{DataDir, OpenError, Recovered};
use fs::{FsDir, LogDir};
use sync::{Syncer, WorkerLog};
use writer::Writer;

/// When a balance effect counts as durable (`[node] durability`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Group commit with fdatasync: survives a power cut.
    #[default]
    Fsync,
    /// Written to the kernel, not synced: survives a process crash.
    Os,
    /// No journal: balances live in memory only (benchmarks).
    None,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Os => "os",
            Durability::None => "none",
        }
    }
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "os" => Ok(Durability::Os),
            "none" => Ok(Durability::None),
            _ => Err(format!("{s:?} is not one of fsync, os, none")),
        }
    }
}

/// Whether the ledger still works. Once a write or a sync failed it is
/// stopped for good (never retried: after a failed fsync the kernel may
/// have dropped the dirty pages), new Prepares get T00, and ilpd drains
/// and exits non-zero.
#[derive(Default)]
pub struct LedgerStatus {
    failed: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl LedgerStatus {
    #[inline]
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Stops the ledger; the first reason is kept and logged.
    pub fn fail(&self, reason: String) {
        let mut r = self.reason.lock();
        if r.is_none() {
            error!("ledger stopped: {reason}; new Prepares get T00, Fulfills not yet durable are not passed on, ilpd will drain and exit");
            *r = Some(reason);
        }
        self.failed.store(true, Ordering::Release);
    }

    pub fn reason(&self) -> Option<String> {
        self.reason.lock().clone()
    }
}

/// The running ledger: the locked data dir, what start-up recovered, and
/// the syncer thread.
pub struct Ledger {
    dir: DataDir,
    pub recovered: Recovered,
    pub mode: Durability,
    segment_limit: u64,
    fsdir: Arc<dyn LogDir>,
    logs: Vec<Arc<WorkerLog>>,
    syncer: Option<Arc<Syncer>>,
    syncer_thread: Mutex<Option<JoinHandle<()>>>,
    status: Arc<LedgerStatus>,
}

impl Ledger {
    /// Locks and recovers the data dir, then starts the syncer (fsync mode).
    /// `mode` must not be `None`.
    pub fn open(
        path: &Path,
        mode: Durability,
        segment_limit: u64,
        workers: usize,
        status: Arc<LedgerStatus>,
    ) -> Result<Ledger, OpenError> {
        let dir = DataDir::open(path)?;
        let recovered = datadir::recover(&dir)?;
        let fsdir: Arc<dyn LogDir> = Arc::new(FsDir::new(&dir.journal_dir()));
        let logs: Vec<Arc<WorkerLog>> = (0..workers).map(|_| Arc::default()).collect();
        let mut syncer = None;
        let mut thread = None;
        if mode == Durability::Fsync {
            let s = Arc::new(Syncer::new(logs.clone(), fsdir.clone()));
            let (s2, st) = (s.clone(), status.clone());
            let h = std::thread::Builder::new()
                .name("ilpd-journal-sync".into())
                .spawn(move || s2.run(&st))
                .map_err(|e| OpenError::Io(format!("cannot start the journal syncer: {e}")))?;
            syncer = Some(s);
            thread = Some(h);
        }
        Ok(Ledger {
            dir,
            recovered,
            mode,
            segment_limit,
            fsdir,
            logs,
            syncer,
            syncer_thread: Mutex::new(thread),
            status,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    /// The shared half of worker `w`'s journal (to set its wake-up).
    pub fn log(&self, w: usize) -> &Arc<WorkerLog> {
        &self.logs[w]
    }

    /// Worker `w`'s writer, its first segment begun with `checkpoint`.
    pub fn writer(&self, w: usize, checkpoint: (u64, &[u8])) -> io::Result<Writer> {
        Writer::create(
            self.fsdir.clone(),
            self.logs[w].clone(),
            self.syncer.clone(),
            self.mode,
            self.recovered.generation,
            w as u32,
            self.segment_limit,
            checkpoint,
        )
    }

    pub fn status(&self) -> &LedgerStatus {
        &self.status
    }

    /// Stops the syncer once everything written is synced (after the
    /// workers have stopped).
    pub fn shutdown(&self) {
        if let Some(s) = &self.syncer {
            s.stop();
        }
        if let Some(h) = self.syncer_thread.lock().take() {
            let _ = h.join();
        }
    }

    /// Prometheus text for the journal.
    pub fn render_metrics(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP ilpd_ledger_failed 1 once a journal write or sync failed (the ledger stopped).\n# TYPE ilpd_ledger_failed gauge\nilpd_ledger_failed {}",
            self.status.is_failed() as u8
        );
        let _ = writeln!(
            out,
            "# HELP ilpd_ledger_generation Data dir generation (one more per start).\n# TYPE ilpd_ledger_generation gauge\nilpd_ledger_generation {}",
            self.recovered.generation
        );
        type Get = fn(&WorkerLog) -> u64;
        let series: [(&str, &str, &str, Get); 6] = [
            (
                "ilpd_journal_bytes_total",
                "counter",
                "Journal bytes written.",
                |l| l.bytes.load(Ordering::Relaxed),
            ),
            (
                "ilpd_journal_frames_total",
                "counter",
                "Journal frames written (about one per busy loop turn).",
                |l| l.frames.load(Ordering::Relaxed),
            ),
            (
                "ilpd_journal_syncs_total",
                "counter",
                "fdatasync calls (group commits).",
                |l| l.syncs.load(Ordering::Relaxed),
            ),
            (
                "ilpd_journal_sync_seconds_total",
                "counter",
                "Time spent in fdatasync.",
                |l| l.sync_ns.load(Ordering::Relaxed),
            ),
            (
                "ilpd_journal_written_seq",
                "gauge",
                "Last frame seq written to the kernel.",
                |l| l.written(),
            ),
            (
                "ilpd_journal_durable_seq",
                "gauge",
                "Last frame seq known durable.",
                |l| l.durable(),
            ),
        ];
        for (name, kind, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (w, l) in self.logs.iter().enumerate() {
                let v = get(l);
                if name == "ilpd_journal_sync_seconds_total" {
                    let _ = writeln!(out, "{name}{{worker=\"{w}\"}} {}", v as f64 / 1e9);
                } else {
                    let _ = writeln!(out, "{name}{{worker=\"{w}\"}} {v}");
                }
            }
        }
    }
}

//! Group commit: one syncer thread makes every worker's written frames
//! durable with `fdatasync`, then wakes the worker so it can pass the held
//! Fulfills on. While one sync runs the workers keep writing the next
//! frames into the page cache (pipelined), so throughput does not wait on
//! the disk, only the Fulfills do.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::fs::{LogDir, LogFile};
use super::LedgerStatus;

/// What one worker's writer and the syncer share.
#[derive(Default)]
pub struct WorkerLog {
    /// Highest frame seq handed to the kernel.
    written: AtomicU64,
    /// Highest frame seq known durable.
    durable: AtomicU64,
    /// Files that may hold unsynced bytes, oldest first; the last is the
    /// segment being written. `true`: its name is not yet durable.
    unsynced: Mutex<Vec<(Arc<dyn LogFile>, bool)>>,
    /// Wakes the worker (its mio Waker) after `durable` moved.
    notify: OnceLock<Box<dyn Fn() + Send + Sync>>,
    pub bytes: AtomicU64,
    pub frames: AtomicU64,
    pub syncs: AtomicU64,
    pub sync_ns: AtomicU64,
}

impl WorkerLog {
    pub fn set_notify(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.notify.set(f);
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    pub(super) fn mark_written(&self, seq: u64, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.written.store(seq, Ordering::Release);
    }

    /// `durability = "os"`: written is durable enough.
    pub(super) fn mark_durable(&self, seq: u64) {
        self.durable.store(seq, Ordering::Release);
    }

    pub(super) fn add_file(&self, f: Arc<dyn LogFile>) {
        self.unsynced.lock().push((f, true));
    }

    fn wake(&self) {
        if let Some(f) = self.notify.get() {
            f();
        }
    }
}

/// The syncer's side: every worker's log, the directory, the stop flag.
pub struct Syncer {
    logs: Vec<Arc<WorkerLog>>,
    dir: Arc<dyn LogDir>,
    stop: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Syncer {
    pub fn new(logs: Vec<Arc<WorkerLog>>, dir: Arc<dyn LogDir>) -> Syncer {
        Syncer {
            logs,
            dir,
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
        }
    }

    /// Tells the syncer there is something to sync (cheap when it is busy).
    #[inline]
    pub fn kick(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Syncs every log that has unsynced frames; `Ok(true)` if any did.
    /// An error is final: the caller stops the ledger.
    pub fn sync_once(&self) -> io::Result<bool> {
        let mut progressed = false;
        for log in &self.logs {
            let written = log.written();
            if written <= log.durable.load(Ordering::Relaxed) {
                continue;
            }
            // `written` is read before the list, so every file holding
            // frames up to it is in the list.
            let files: Vec<(Arc<dyn LogFile>, bool)> = log.unsynced.lock().clone();
            let t = Instant::now();
            if files.iter().any(|(_, new)| *new) {
                self.dir.sync_dir()?;
            }
            for (f, _) in &files {
                f.sync_data()?;
            }
            {
                let mut g = log.unsynced.lock();
                // The old segments are complete and synced; the current one
                // stays listed, its name now durable.
                g.drain(..files.len().saturating_sub(1));
                if let Some(first) = g.first_mut() {
                    if files.last().is_some_and(|(f, _)| Arc::ptr_eq(f, &first.0)) {
                        first.1 = false;
                    }
                }
            }
            log.syncs.fetch_add(1, Ordering::Relaxed);
            log.sync_ns
                .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            log.durable.store(written, Ordering::Release);
            log.wake();
            progressed = true;
        }
        Ok(progressed)
    }

    /// The syncer thread's loop: sync while there is work, park otherwise;
    /// on an error stop the ledger and wake every worker.
    pub fn run(&self, status: &LedgerStatus) {
        let _ = self.thread.set(std::thread::current());
        loop {
            match self.sync_once() {
                Ok(true) => continue,
                Ok(false) if self.stop.load(Ordering::Acquire) => return,
                Ok(false) => std::thread::park_timeout(Duration::from_millis(50)),
                Err(e) => {
                    status.fail(format!("journal fdatasync failed: {e}"));
                    for log in &self.logs {
                        log.wake();
                    }
                    return;
                }
            }
        }
    }

    /// Ends `run` once everything written is synced.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.kick();
    }
}

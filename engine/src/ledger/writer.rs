//! One worker's journal writer: appends the frames its core seals, once per
//! loop turn, to the worker's current segment file; starts a new segment
//! (with a checkpoint frame first) when the current one is full, and
//! removes old segments once the new checkpoint is durable.
//!
//! Segment files are `g{generation}-w{worker}-s{segment}.log` in the
//! journal directory (docs/ledger.md "Files").

use std::io;
use std::sync::Arc;

use tracing::warn;

use super::fs::{write_all, LogDir, LogFile};
use super::sync::{Syncer, WorkerLog};
use super::Durability;

pub fn segment_name(generation: u64, worker: u32, segment: u64) -> String {
    format!("g{generation:010}-w{worker:04}-s{segment:010}.log")
}

/// `(generation, worker, segment)` of a segment file name.
pub fn parse_segment_name(name: &str) -> Option<(u64, u32, u64)> {
    let rest = name.strip_prefix('g')?.strip_suffix(".log")?;
    let mut it = rest.split('-');
    let g = it.next()?.parse().ok()?;
    let w = it.next()?.strip_prefix('w')?.parse().ok()?;
    let s = it.next()?.strip_prefix('s')?.parse().ok()?;
    it.next().is_none().then_some((g, w, s))
}

pub struct Writer {
    dir: Arc<dyn LogDir>,
    log: Arc<WorkerLog>,
    syncer: Option<Arc<Syncer>>,
    mode: Durability,
    generation: u64,
    worker: u32,
    segment: u64,
    file: Arc<dyn LogFile>,
    segment_bytes: u64,
    segment_limit: u64,
    /// Old segments to remove once the frame with this seq (the checkpoint
    /// that replaces them) is durable.
    retired: Vec<(u64, String)>,
}

impl Writer {
    /// Creates segment 0 and writes its checkpoint frame (`seq`, `frame`).
    /// `syncer` is required for `Durability::Fsync`.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        dir: Arc<dyn LogDir>,
        log: Arc<WorkerLog>,
        syncer: Option<Arc<Syncer>>,
        mode: Durability,
        generation: u64,
        worker: u32,
        segment_limit: u64,
        checkpoint: (u64, &[u8]),
    ) -> io::Result<Writer> {
        let file = dir.create(&segment_name(generation, worker, 0))?;
        let mut w = Writer {
            dir,
            log,
            syncer,
            mode,
            generation,
            worker,
            segment: 0,
            file,
            segment_bytes: 0,
            segment_limit: segment_limit.max(1),
            retired: Vec::new(),
        };
        w.track(w.file.clone());
        w.append(checkpoint.0, checkpoint.1)?;
        Ok(w)
    }

    /// Appends one sealed frame. An error is final: the caller stops the
    /// ledger and passes nothing on that depended on this frame.
    pub fn append(&mut self, seq: u64, frame: &[u8]) -> io::Result<()> {
        write_all(&*self.file, frame)?;
        self.segment_bytes += frame.len() as u64;
        self.log.mark_written(seq, frame.len());
        match self.mode {
            Durability::Fsync => {
                if let Some(s) = &self.syncer {
                    s.kick();
                }
            }
            _ => self.log.mark_durable(seq),
        }
        Ok(())
    }

    /// Fsync mode: the syncer must sync this file (and its name).
    fn track(&self, file: Arc<dyn LogFile>) {
        if self.mode == Durability::Fsync {
            self.log.add_file(file);
        }
    }

    pub fn wants_rollover(&self) -> bool {
        self.segment_bytes >= self.segment_limit
    }

    /// The next segment, starting with `checkpoint` (the worker's state
    /// after every frame written so far).
    pub fn rollover(&mut self, checkpoint: (u64, &[u8])) -> io::Result<()> {
        let next = self.segment + 1;
        let file = self
            .dir
            .create(&segment_name(self.generation, self.worker, next))?;
        let old = segment_name(self.generation, self.worker, self.segment);
        self.track(file.clone());
        self.file = file;
        self.segment = next;
        self.segment_bytes = 0;
        self.retired.push((checkpoint.0, old));
        self.append(checkpoint.0, checkpoint.1)
    }

    /// Frames up to this seq are durable (per `durability`).
    pub fn durable(&self) -> u64 {
        self.log.durable()
    }

    /// Removes the segments a durable checkpoint replaced. A segment left
    /// behind (a failed unlink) is harmless: recovery starts at the newest
    /// checkpoint.
    pub fn remove_retired(&mut self) {
        let durable = self.durable();
        while self.retired.first().is_some_and(|(s, _)| *s <= durable) {
            let (_, name) = self.retired.remove(0);
            if let Err(e) = self.dir.remove(&name) {
                warn!(file = %name, "cannot remove an old journal segment: {e}");
            }
        }
    }

    pub fn segment(&self) -> u64 {
        self.segment
    }

    pub fn worker(&self) -> u32 {
        self.worker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = segment_name(12, 3, 456);
        assert_eq!(n, "g0000000012-w0003-s0000000456.log");
        assert_eq!(parse_segment_name(&n), Some((12, 3, 456)));
        assert_eq!(parse_segment_name("g1-w2-s3.log"), Some((1, 2, 3)));
        assert_eq!(parse_segment_name("g1-w2-s3.log.tmp"), None);
        assert_eq!(parse_segment_name("snapshot"), None);
        assert_eq!(parse_segment_name("g1-w2-s3-x.log"), None);
    }
}

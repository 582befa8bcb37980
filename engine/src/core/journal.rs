//! The core's half of the durable ledger (docs/ledger.md): each balance
//! effect becomes an entry of the frame this loop turn is building, and
//! the actions that depend on it wait.
//!
//! - A Forward with money on it waits until its frame is *written* (to the
//!   kernel): if ilpd dies after the Prepare left, recovery finds it and
//!   lists it as in doubt.
//! - A Fulfill waits until its frame is *durable* (per `durability`): a
//!   Fulfill passed upstream is never forgotten by a restart.
//! - Rejects do not wait: they move no money.
//!
//! IO drives it once per turn: [`Journal::seal`] → write → [`Journal::written`],
//! and [`Journal::durable`] whenever the syncer moved on. Sans-IO: no file
//! here, only bytes and actions.

use std::collections::VecDeque;

use crate::ledger::format::{self, Checkpoint, Forward, Kind};

use super::pending::Entry;
use super::{Action, OutId};

/// A fulfilled packet between its record and the mark that says its
/// Fulfill was handed to the kernel.
struct Settled {
    /// The frame that holds its `Fulfilled` entry.
    seq: u64,
    forward: Forward,
    /// The Fulfill, until its frame is durable.
    reply: Option<Action>,
}

pub(super) struct Journal {
    /// The frame being built: header, then entries (empty: none yet).
    frame: Vec<u8>,
    /// Seq of the frame being built (frames are numbered from 1 per worker).
    seq: u64,
    /// Forwards whose entry is in `frame`.
    held_forwards: Vec<Action>,
    /// Fulfilled packets in frame order, their Fulfills held until durable.
    settled: VecDeque<Settled>,
    /// Fulfills of frames up to here were passed to IO.
    released: u64,
    /// The last `Released` entry written.
    marked: u64,
    /// Net balance change per account since this generation began.
    deltas: Vec<i128>,
    /// Fulfills in `settled` still held.
    held: usize,
}

/// The journal record of a pending entry.
pub(super) fn forward_of(id: OutId, e: &Entry) -> Forward {
    Forward {
        id: id.0,
        from: e.from,
        to: e.next_hop,
        in_amount: e.in_amount,
        out_amount: e.out_amount,
        expires_ms: e.out_expiry,
        condition: e.condition,
    }
}

/// Whether a packet moves money (zero-amount packets are not journaled).
#[inline]
pub(super) fn has_money(e: &Entry) -> bool {
    e.in_amount > 0 || e.out_amount > 0
}

impl Journal {
    pub fn new(accounts: usize) -> Journal {
        Journal {
            frame: Vec::with_capacity(64 * 1024),
            seq: 1,
            held_forwards: Vec::new(),
            settled: VecDeque::new(),
            released: 0,
            marked: 0,
            deltas: vec![0; accounts],
            held: 0,
        }
    }

    fn begin(&mut self) {
        if self.frame.is_empty() {
            format::begin_frame(&mut self.frame, Kind::Batch, self.seq, 0);
        }
    }

    /// A Prepare forwarded with money on it: record it and hold the Forward.
    pub fn forward(&mut self, f: &Forward, action: Action) {
        self.begin();
        format::put_forward(&mut self.frame, f);
        self.held_forwards.push(action);
    }

    /// A packet with money on it that was answered inside the node (a
    /// receiver account): nothing leaves, so nothing is held.
    pub fn local_forward(&mut self, f: &Forward) {
        self.begin();
        format::put_forward(&mut self.frame, f);
    }

    /// A packet with money on it ended unpaid.
    pub fn unwound(&mut self, id: OutId) {
        self.begin();
        format::put_unwound(&mut self.frame, id.0);
    }

    /// A packet with money on it was fulfilled (balances already moved):
    /// record it and hold the Fulfill.
    pub fn fulfilled(&mut self, forward: Forward, reply: Action) {
        self.begin();
        format::put_fulfilled(&mut self.frame, forward.id);
        if let Some(d) = self.deltas.get_mut(forward.from as usize) {
            *d += forward.in_amount as i128;
        }
        if let Some(d) = self.deltas.get_mut(forward.to as usize) {
            *d -= forward.out_amount as i128;
        }
        self.settled.push_back(Settled {
            seq: self.seq,
            forward,
            reply: Some(reply),
        });
        self.held += 1;
    }

    /// Seals the frame being built; `None` if it is empty.
    pub fn seal(&mut self, unix_ms: u64) -> Option<(u64, &[u8])> {
        if self.frame.is_empty() {
            return None;
        }
        let at = format::HEADER + 9;
        self.frame[at..at + 8].copy_from_slice(&unix_ms.to_le_bytes());
        format::finish_frame(&mut self.frame);
        Some((self.seq, &self.frame))
    }

    /// The sealed frame `seq` is written: its Forwards may leave.
    pub fn written(&mut self, seq: u64, out: &mut Vec<Action>) {
        if seq != self.seq || self.frame.is_empty() {
            return;
        }
        self.frame.clear();
        self.seq += 1;
        out.append(&mut self.held_forwards);
    }

    /// Frames up to `durable` are durable: their Fulfills may go upstream.
    pub fn durable(&mut self, durable: u64, out: &mut Vec<Action>) {
        if self.held == 0 {
            return;
        }
        for s in self.settled.iter_mut() {
            if s.seq > durable {
                break;
            }
            if let Some(a) = s.reply.take() {
                out.push(a);
                self.released = s.seq;
                self.held -= 1;
            }
        }
    }

    /// IO handed every released Fulfill to the kernel: say so in the next
    /// frame, so recovery does not list them as in doubt.
    pub fn flushed(&mut self) {
        if self.released <= self.marked {
            return;
        }
        self.marked = self.released;
        self.begin();
        format::put_released(&mut self.frame, self.marked);
        while self.settled.front().is_some_and(|s| s.seq <= self.marked) {
            self.settled.pop_front();
        }
    }

    /// A checkpoint frame (the next seq) for a new segment: everything so
    /// far, summed. Call it right after [`written`](Self::written), when no
    /// frame is being built.
    pub fn checkpoint<'a>(
        &mut self,
        unix_ms: u64,
        worker: u32,
        segment: u64,
        names: impl Iterator<Item = &'a str>,
        open: impl Iterator<Item = Forward>,
    ) -> (u64, Vec<u8>) {
        debug_assert!(self.frame.is_empty());
        let cp = Checkpoint {
            worker,
            segment,
            released: self.marked,
            accounts: names
                .zip(self.deltas.iter().copied())
                .map(|(n, d)| (n.to_string(), d))
                .collect(),
            open: open.collect(),
            unreleased: self.settled.iter().map(|s| (s.seq, s.forward)).collect(),
        };
        let mut buf = Vec::new();
        format::begin_frame(&mut buf, Kind::Checkpoint, self.seq, unix_ms);
        cp.put(&mut buf);
        format::finish_frame(&mut buf);
        let seq = self.seq;
        self.seq += 1;
        (seq, buf)
    }

    /// The ledger stopped: the Forwards whose record was never written
    /// (they must not leave).
    pub fn take_held_forwards(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.held_forwards)
    }

    /// Fulfills still waiting for durability.
    pub fn held_fulfills(&self) -> usize {
        self.held
    }

    /// Nothing built, nothing held: a draining worker may stop.
    pub fn is_idle(&self) -> bool {
        self.frame.is_empty() && self.held_forwards.is_empty() && self.held == 0
    }
}

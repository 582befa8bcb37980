//! Cross-worker queues. Pending state lives on the worker that received a
//! Prepare (the origin); when the next hop has no authenticated connection
//! there, the packet crosses to a worker that has one (the egress), and the
//! answer crosses back. Each worker owns one bounded crossbeam channel and a
//! mio `Waker`; senders push items during a loop turn and wake each target
//! once at the end of the turn (batching the wake-ups).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::BytesMut;
use crossbeam::channel::{Receiver, Sender, TrySendError};
use ilpd_codec::ErrorCode;

use crate::core::{AccountId, OutId};

/// Capacity of each worker's incoming queue. A full queue refuses new
/// Forwards (the origin answers T03) but never loses replies (see
/// [`Outbox`]).
pub const QUEUE_CAPACITY: usize = 65_536;

/// One item crossing between workers.
#[derive(Debug)]
pub enum Handoff {
    /// Origin → egress: write this Prepare to `to` and route the answer back
    /// to worker `origin` under `out_id`.
    Forward {
        origin: u16,
        to: AccountId,
        out_id: OutId,
        packet: BytesMut,
    },
    /// Egress → origin: the Fulfill or Reject `from` sent for `out_id`.
    Reply {
        from: AccountId,
        out_id: OutId,
        packet: BytesMut,
    },
    /// Egress → origin: the Forward could not be delivered or its connection
    /// was lost before the answer.
    Failed {
        out_id: OutId,
        code: ErrorCode,
        message: Cow<'static, str>,
    },
}

/// The sending side of every worker's queue, with its waker.
#[derive(Clone)]
pub struct Peers {
    pub tx: Vec<Sender<Handoff>>,
    pub wakers: Vec<Arc<mio::Waker>>,
}

/// Per-worker sending state: items that must not be dropped (replies,
/// failures) wait here when the target queue is full and are retried on the
/// next turn; `wake` marks targets to wake at the end of the turn.
pub struct Outbox {
    peers: Peers,
    backlog: Vec<Vec<Handoff>>,
    wake: Vec<bool>,
}

impl Outbox {
    pub fn new(peers: Peers) -> Outbox {
        let n = peers.tx.len();
        Outbox {
            peers,
            backlog: (0..n).map(|_| Vec::new()).collect(),
            wake: vec![false; n],
        }
    }

    /// Sends a Forward; gives it back if the target queue is full (the
    /// caller fails it upstream with T03) or gone.
    pub fn forward(&mut self, target: usize, item: Handoff) -> Result<(), Handoff> {
        match self.peers.tx[target].try_send(item) {
            Ok(()) => {
                self.wake[target] = true;
                Ok(())
            }
            Err(TrySendError::Full(i)) | Err(TrySendError::Disconnected(i)) => Err(i),
        }
    }

    /// Sends a reply or failure; when the queue is full it waits in the
    /// backlog (order kept) so the origin always learns the outcome.
    pub fn answer(&mut self, target: usize, item: Handoff) {
        if !self.backlog[target].is_empty() {
            self.backlog[target].push(item);
            return;
        }
        match self.peers.tx[target].try_send(item) {
            Ok(()) => self.wake[target] = true,
            Err(TrySendError::Full(i)) => self.backlog[target].push(i),
            // The target worker has exited: nothing is waiting for the answer.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// End of a loop turn: retry the backlog, then wake every target that
    /// got something. Returns true while a backlog remains.
    pub fn end_turn(&mut self) -> bool {
        let mut left = false;
        for (t, items) in self.backlog.iter_mut().enumerate() {
            if items.is_empty() {
                continue;
            }
            let mut pending = std::mem::take(items).into_iter();
            while let Some(item) = pending.next() {
                match self.peers.tx[t].try_send(item) {
                    Ok(()) => self.wake[t] = true,
                    Err(TrySendError::Full(back)) => {
                        items.push(back);
                        items.extend(pending);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {}
                }
            }
            left |= !items.is_empty();
        }
        for (t, w) in self.wake.iter_mut().enumerate() {
            if std::mem::take(w) {
                let _ = self.peers.wakers[t].wake();
            }
        }
        left
    }

    /// True when nothing waits in the backlog.
    pub fn is_empty(&self) -> bool {
        self.backlog.iter().all(Vec::is_empty)
    }
}

/// Creates one bounded queue per worker; returns the receivers in worker
/// order and the senders (the wakers are added once each Poll exists).
pub fn queues(workers: usize) -> (Vec<Sender<Handoff>>, Vec<Receiver<Handoff>>) {
    (0..workers)
        .map(|_| crossbeam::channel::bounded(QUEUE_CAPACITY))
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers_with(cap: usize) -> (Peers, Receiver<Handoff>, mio::Poll) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(1)).unwrap());
        let (tx, rx) = crossbeam::channel::bounded(cap);
        (
            Peers {
                tx: vec![tx],
                wakers: vec![waker],
            },
            rx,
            poll,
        )
    }

    fn failed(n: u32) -> Handoff {
        Handoff::Failed {
            out_id: OutId(n),
            code: ErrorCode::T01_PEER_UNREACHABLE,
            message: Cow::Borrowed("x"),
        }
    }

    /// The out ids of the `Failed` items waiting in `rx` (0 for others).
    fn failed_ids(rx: &Receiver<Handoff>) -> Vec<u32> {
        rx.try_iter()
            .map(|h| match h {
                Handoff::Failed { out_id, .. } => out_id.0,
                _ => 0,
            })
            .collect()
    }

    #[test]
    fn full_queue_refuses_forwards_but_keeps_answers_in_order() {
        let (peers, rx, mut poll) = peers_with(2);
        let mut ob = Outbox::new(peers);
        ob.answer(0, failed(1));
        ob.answer(0, failed(2));
        ob.answer(0, failed(3)); // queue full: backlog
        let fwd = Handoff::Forward {
            origin: 0,
            to: AccountId(0),
            out_id: OutId(9),
            packet: BytesMut::new(),
        };
        assert!(ob.forward(0, fwd).is_err());
        assert!(ob.end_turn(), "3 is still waiting");
        // The waker fired.
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(std::time::Duration::from_secs(1)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == mio::Token(1)));
        let ids = failed_ids(&rx);
        assert_eq!(ids, vec![1, 2]);
        assert!(!ob.end_turn());
        assert!(ob.is_empty());
        let ids = failed_ids(&rx);
        assert_eq!(ids, vec![3]);
    }
}

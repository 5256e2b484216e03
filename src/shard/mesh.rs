//! The cross-shard mesh: one bounded lock-free FIFO (crossbeam `ArrayQueue`)
//! per ordered pair of shards, and a data-less doorbell per pair that is rung
//! only when the consumer may be parked.
//!
//! The consumer of a pair is one task on the receiving shard. It drains the
//! queue in budgeted batches; when the queue stays empty through its spin
//! window it raises `parked`, checks the queue once more and waits on the
//! doorbell. A producer rings only if it finds `parked` raised, so a busy
//! consumer costs the producer nothing but the push.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;
use crossbeam::utils::CachePadded;
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};

use crate::metrics::ShardStats;

/// The shared state of one ordered pair of shards.
#[derive(Debug)]
pub struct Pair<T> {
    queue: ArrayQueue<T>,
    parked: CachePadded<AtomicBool>,
}

/// A pair's queue with one end of its doorbell.
type End<T, B> = Option<(Arc<Pair<T>>, B)>;

/// One shard's unconnected ends of the mesh, built on the main thread and
/// moved to the shard's thread.
#[derive(Debug)]
pub struct MeshSeed<T: Send> {
    me: usize,
    out: Vec<End<T, SharedSender<()>>>,
    inbound: Vec<End<T, SharedReceiver<()>>>,
}

/// Builds the seeds of a full mesh of `n` shards with queues of `capacity`.
pub fn build<T: Send + 'static>(n: usize, capacity: usize) -> Vec<MeshSeed<T>> {
    let mut seeds: Vec<MeshSeed<T>> = (0..n)
        .map(|me| MeshSeed {
            me,
            out: (0..n).map(|_| None).collect(),
            inbound: (0..n).map(|_| None).collect(),
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from == to {
                continue;
            }
            let pair = Arc::new(Pair {
                queue: ArrayQueue::new(capacity.max(1)),
                parked: CachePadded::new(AtomicBool::new(false)),
            });
            let (tx, rx) = shared_channel::new_bounded(1);
            seeds[from].out[to] = Some((pair.clone(), tx));
            seeds[to].inbound[from] = Some((pair, rx));
        }
    }
    seeds
}

/// The sending side of the mesh on one shard.
#[derive(Debug)]
pub struct Mesh<T: Send> {
    me: usize,
    out: Vec<End<T, ConnectedSender<()>>>,
    /// Messages that found their queue full, kept in order per peer. While a
    /// peer has overflow, new messages to it queue behind (FIFO per pair).
    overflow: Vec<VecDeque<T>>,
    congested: Rc<Cell<usize>>,
    stats: Arc<ShardStats>,
}

/// The receiving side of one pair, owned by its drain task.
#[derive(Debug)]
pub struct Inbound<T: Send> {
    pub from: usize,
    pair: Arc<Pair<T>>,
    bell: ConnectedReceiver<()>,
}

impl<T: Send + 'static> MeshSeed<T> {
    /// Connects every doorbell; all shards must do this concurrently.
    pub async fn connect(self, stats: Arc<ShardStats>) -> (Mesh<T>, Vec<Inbound<T>>) {
        let n = self.out.len();
        let mut out_tasks = Vec::new();
        for (to, slot) in self.out.into_iter().enumerate() {
            if let Some((pair, tx)) = slot {
                out_tasks.push((to, pair, glommio::spawn_local(tx.connect())));
            }
        }
        let mut in_tasks = Vec::new();
        for (from, slot) in self.inbound.into_iter().enumerate() {
            if let Some((pair, rx)) = slot {
                in_tasks.push((from, pair, glommio::spawn_local(rx.connect())));
            }
        }
        let mut out: Vec<End<T, ConnectedSender<()>>> = (0..n).map(|_| None).collect();
        for (to, pair, task) in out_tasks {
            out[to] = Some((pair, task.await));
        }
        let mut inbound = Vec::new();
        for (from, pair, task) in in_tasks {
            inbound.push(Inbound {
                from,
                pair,
                bell: task.await,
            });
        }
        let mesh = Mesh {
            me: self.me,
            out,
            overflow: (0..n).map(|_| VecDeque::new()).collect(),
            congested: Rc::new(Cell::new(0)),
            stats,
        };
        (mesh, inbound)
    }
}

impl<T: Send + 'static> Mesh<T> {
    /// This shard's index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Sends `msg` to shard `to` (never the own shard: it takes the direct
    /// path). A full queue keeps the message in order in the local overflow
    /// and marks the mesh congested, which pauses socket reads.
    pub fn send(&mut self, to: usize, msg: T) {
        let Some((pair, bell)) = self.out.get(to).and_then(Option::as_ref) else {
            debug_assert!(false, "mesh send to self or unknown shard {to}");
            return;
        };
        self.stats.mesh_sent.fetch_add(1, Ordering::Relaxed);
        let overflow = &mut self.overflow[to];
        if overflow.is_empty() {
            match pair.queue.push(msg) {
                Ok(()) => ring(pair, bell),
                Err(msg) => {
                    self.congested.set(self.congested.get() + 1);
                    self.stats.mesh_full.fetch_add(1, Ordering::Relaxed);
                    overflow.push_back(msg);
                    ring(pair, bell);
                    super::wake_flusher();
                }
            }
        } else {
            overflow.push_back(msg);
        }
    }

    /// Moves overflowed messages into their queues as room appears. Returns
    /// true when nothing is left over.
    pub fn flush_overflow(&mut self) -> bool {
        for (to, overflow) in self.overflow.iter_mut().enumerate() {
            if overflow.is_empty() {
                continue;
            }
            let Some((pair, bell)) = self.out[to].as_ref() else { continue };
            while let Some(msg) = overflow.pop_front() {
                if let Err(msg) = pair.queue.push(msg) {
                    overflow.push_front(msg);
                    break;
                }
            }
            ring(pair, bell);
            if overflow.is_empty() {
                self.congested.set(self.congested.get().saturating_sub(1));
            }
        }
        self.congested.get() == 0
    }

    /// A handle that tells whether any queue is over capacity.
    pub fn congestion(&self) -> Rc<Cell<usize>> {
        self.congested.clone()
    }
}

fn ring<T>(pair: &Pair<T>, bell: &ConnectedSender<()>) {
    if pair.parked.load(Ordering::SeqCst) && pair.parked.swap(false, Ordering::SeqCst) {
        // A full doorbell means it is already ringing.
        let _ = bell.try_send(());
    }
}

impl<T: Send> Inbound<T> {
    /// Pops up to `budget` messages into `batch`; returns how many.
    pub fn drain(&self, batch: &mut Vec<T>, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            match self.pair.queue.pop() {
                Some(m) => {
                    batch.push(m);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// True if messages are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pair.queue.is_empty()
    }

    /// Parks until a producer rings: raises `parked`, re-checks the queue to
    /// close the race with a concurrent push, then waits on the doorbell.
    /// Returns false once the producing shard is gone.
    pub async fn park(&self) -> bool {
        self.pair.parked.store(true, Ordering::SeqCst);
        if !self.pair.queue.is_empty() {
            self.pair.parked.store(false, Ordering::SeqCst);
            return true;
        }
        let alive = self.bell.recv().await.is_some();
        self.pair.parked.store(false, Ordering::SeqCst);
        alive
    }
}

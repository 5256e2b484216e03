//! The cross-shard mesh: one bounded lock-free FIFO (crossbeam `ArrayQueue`)
//! per ordered pair of shards, and two data-less doorbells per pair, each rung
//! only when the other side may be waiting.
//!
//! The consumer of a pair is one task on the receiving shard. It drains the
//! queue in budgeted batches; when the queue stays empty through its spin
//! window it raises `parked`, checks the queue once more and waits on the
//! *data* doorbell. A producer rings only if it finds `parked` raised, so a
//! busy consumer costs the producer nothing but the push.
//!
//! A full queue never blocks the producing shard: the message waits in that
//! pair's overflow (in order: later messages to the same shard queue behind
//! it), the pair counts as congested router-wide ([`Congestion`]), and every
//! shard stops reading from its clients until no pair is congested. The
//! pair's [`Flusher`] task moves the overflow into the queue as room appears:
//! it raises `waiting` and sleeps on the *room* doorbell, which the consumer
//! rings after it has taken messages. Nothing polls.
//!
//! The overflow is bounded by `router.mesh_overflow_limit` messages for the
//! messages that may be dropped (events: they are counted in
//! `mesh_events_dropped`, as a slow subscriber's are). Replies, calls and
//! table changes are never dropped; they are bounded by the pause itself:
//! with every client paused, only what was already read (one frame per
//! connection) and what the queues already hold can still produce messages.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

use crossbeam::queue::ArrayQueue;
use crossbeam::utils::CachePadded;
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};

use crate::metrics::ShardStats;

/// What the mesh needs to know of the messages it carries.
pub trait MeshMessage: Send + 'static {
    /// True for a message that may be dropped when its peer's overflow is at
    /// its limit (an event); false for anything that must arrive.
    fn droppable(&self) -> bool;
}

/// The shared state of one ordered pair of shards.
#[derive(Debug)]
pub struct Pair<T> {
    queue: ArrayQueue<T>,
    /// The consumer waits on the data doorbell.
    parked: CachePadded<AtomicBool>,
    /// The producer has overflow and waits on the room doorbell.
    waiting: CachePadded<AtomicBool>,
}

/// Router-wide count of congested pairs, and this shard's tasks that wait for
/// it to reach zero. Every shard stops reading from its clients while any pair
/// anywhere is congested: a shard's clients can fill another shard's queues
/// (through table-change replies), so a local pause alone would not bound the
/// overflow.
#[derive(Debug)]
pub struct Congestion {
    global: Arc<CachePadded<AtomicUsize>>,
    waiters: RefCell<Vec<Waker>>,
}

impl Congestion {
    fn new(global: Arc<CachePadded<AtomicUsize>>) -> Self {
        Congestion {
            global,
            waiters: RefCell::new(Vec::new()),
        }
    }

    /// A congestion state of its own, for a router without peers.
    pub fn standalone() -> Rc<Self> {
        Rc::new(Congestion::new(Arc::new(CachePadded::new(AtomicUsize::new(0)))))
    }

    /// True while any cross-shard queue of the router has overflow.
    #[inline]
    pub fn active(&self) -> bool {
        self.global.load(Ordering::Relaxed) > 0
    }

    /// Resolves once no pair of the router is congested. Woken by this
    /// shard's flushers and drain tasks (see [`Congestion::wake_if_clear`]).
    pub async fn cleared(&self) {
        poll_fn(|cx| {
            if !self.active() {
                return Poll::Ready(());
            }
            self.waiters.borrow_mut().push(cx.waker().clone());
            // re-check: the count may have dropped since the first look
            if !self.active() {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    }

    /// Wakes this shard's waiting tasks if congestion is over. Cheap when
    /// nobody waits; the drain tasks call it every turn, so a shard learns
    /// of another shard's clearing from the doorbell that shard rings.
    #[inline]
    pub fn wake_if_clear(&self) {
        if self.waiters.borrow().is_empty() || self.active() {
            return;
        }
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

/// A pair's queue with the producer's or the consumer's ends of its doorbells.
type End<T, Data, Room> = Option<(Arc<Pair<T>>, Data, Room)>;

/// One shard's unconnected ends of the mesh, built on the main thread and
/// moved to the shard's thread.
#[derive(Debug)]
pub struct MeshSeed<T: Send> {
    me: usize,
    out: Vec<End<T, SharedSender<()>, SharedReceiver<()>>>,
    inbound: Vec<End<T, SharedReceiver<()>, SharedSender<()>>>,
    congestion: Arc<CachePadded<AtomicUsize>>,
}

/// Builds the seeds of a full mesh of `n` shards with queues of `capacity`.
pub fn build<T: Send + 'static>(n: usize, capacity: usize) -> Vec<MeshSeed<T>> {
    let congestion = Arc::new(CachePadded::new(AtomicUsize::new(0)));
    let mut seeds: Vec<MeshSeed<T>> = (0..n)
        .map(|me| MeshSeed {
            me,
            out: (0..n).map(|_| None).collect(),
            inbound: (0..n).map(|_| None).collect(),
            congestion: congestion.clone(),
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
                waiting: CachePadded::new(AtomicBool::new(false)),
            });
            let (data_tx, data_rx) = shared_channel::new_bounded(1);
            let (room_tx, room_rx) = shared_channel::new_bounded(1);
            seeds[from].out[to] = Some((pair.clone(), data_tx, room_rx));
            seeds[to].inbound[from] = Some((pair, data_rx, room_tx));
        }
    }
    seeds
}

/// The sending side of one pair on the producing shard.
struct Peer<T> {
    pair: Arc<Pair<T>>,
    bell: ConnectedSender<()>,
    /// Messages that found the queue full, in order.
    overflow: RefCell<VecDeque<T>>,
    /// The pair's flusher, parked until the overflow is non-empty.
    flusher: Cell<Option<Waker>>,
}

impl<T> std::fmt::Debug for Peer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("overflow", &self.overflow.borrow().len()).finish()
    }
}

#[derive(Debug)]
struct Shared<T> {
    me: usize,
    peers: Vec<Option<Peer<T>>>,
    overflow_limit: usize,
    congestion: Rc<Congestion>,
    stats: Arc<ShardStats>,
}

/// The sending side of the mesh on one shard (cheap to clone: the router
/// holds one, each [`Flusher`] another).
#[derive(Debug)]
pub struct Mesh<T: Send> {
    shared: Rc<Shared<T>>,
}

impl<T: Send> Clone for Mesh<T> {
    fn clone(&self) -> Self {
        Mesh {
            shared: self.shared.clone(),
        }
    }
}

/// The receiving side of one pair, owned by its drain task.
#[derive(Debug)]
pub struct Inbound<T: Send> {
    pub from: usize,
    pair: Arc<Pair<T>>,
    bell: ConnectedReceiver<()>,
    room: ConnectedSender<()>,
}

/// The task state that moves one pair's overflow into its queue.
#[derive(Debug)]
pub struct Flusher<T: Send> {
    pub to: usize,
    mesh: Mesh<T>,
    room: ConnectedReceiver<()>,
}

/// What [`MeshSeed::connect`] gives a shard.
#[derive(Debug)]
pub struct MeshEnds<T: Send> {
    pub mesh: Mesh<T>,
    pub inbound: Vec<Inbound<T>>,
    pub flushers: Vec<Flusher<T>>,
}

impl<T: MeshMessage> MeshSeed<T> {
    /// Connects every doorbell; all shards must do this concurrently.
    pub async fn connect(self, stats: Arc<ShardStats>, overflow_limit: usize) -> MeshEnds<T> {
        let n = self.out.len();
        let mut out_tasks = Vec::new();
        for (to, slot) in self.out.into_iter().enumerate() {
            if let Some((pair, data, room)) = slot {
                out_tasks.push((to, pair, glommio::spawn_local(data.connect()), glommio::spawn_local(room.connect())));
            }
        }
        let mut in_tasks = Vec::new();
        for (from, slot) in self.inbound.into_iter().enumerate() {
            if let Some((pair, data, room)) = slot {
                in_tasks.push((
                    from,
                    pair,
                    glommio::spawn_local(data.connect()),
                    glommio::spawn_local(room.connect()),
                ));
            }
        }
        let mut peers: Vec<Option<Peer<T>>> = (0..n).map(|_| None).collect();
        let mut rooms = Vec::new();
        for (to, pair, data, room) in out_tasks {
            peers[to] = Some(Peer {
                pair,
                bell: data.await,
                overflow: RefCell::new(VecDeque::new()),
                flusher: Cell::new(None),
            });
            rooms.push((to, room.await));
        }
        let mut inbound = Vec::new();
        for (from, pair, data, room) in in_tasks {
            inbound.push(Inbound {
                from,
                pair,
                bell: data.await,
                room: room.await,
            });
        }
        let mesh = Mesh {
            shared: Rc::new(Shared {
                me: self.me,
                peers,
                overflow_limit: overflow_limit.max(1),
                congestion: Rc::new(Congestion::new(self.congestion)),
                stats,
            }),
        };
        let flushers = rooms
            .into_iter()
            .map(|(to, room)| Flusher {
                to,
                mesh: mesh.clone(),
                room,
            })
            .collect();
        MeshEnds { mesh, inbound, flushers }
    }
}

impl<T: MeshMessage> Mesh<T> {
    /// This shard's index.
    pub fn me(&self) -> usize {
        self.shared.me
    }

    /// Sends `msg` to shard `to` (never the own shard: it takes the direct
    /// path). A full queue keeps the message in order in the pair's overflow
    /// and marks the router congested, which pauses client reads everywhere;
    /// an event that finds the overflow at its limit is dropped (counted).
    pub fn send(&self, to: usize, msg: T) {
        let sh = &*self.shared;
        let Some(peer) = sh.peers.get(to).and_then(Option::as_ref) else {
            debug_assert!(false, "mesh send to self or unknown shard {to}");
            return;
        };
        sh.stats.mesh_sent.fetch_add(1, Ordering::Relaxed);
        let mut overflow = peer.overflow.borrow_mut();
        if overflow.is_empty() {
            match peer.pair.queue.push(msg) {
                Ok(()) => ring(&peer.pair, &peer.bell),
                Err(msg) => {
                    sh.congestion.global.fetch_add(1, Ordering::SeqCst);
                    sh.stats.mesh_full.fetch_add(1, Ordering::Relaxed);
                    sh.stats.mesh_overflow.fetch_add(1, Ordering::Relaxed);
                    overflow.push_back(msg);
                    ring(&peer.pair, &peer.bell);
                    if let Some(w) = peer.flusher.take() {
                        w.wake();
                    }
                }
            }
        } else if overflow.len() >= sh.overflow_limit && msg.droppable() {
            sh.stats.mesh_events_dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            sh.stats.mesh_overflow.fetch_add(1, Ordering::Relaxed);
            overflow.push_back(msg);
        }
    }

    /// The router-wide congestion state, as seen from this shard.
    pub fn congestion(&self) -> Rc<Congestion> {
        self.shared.congestion.clone()
    }

    /// Messages waiting in this shard's overflows (all peers).
    pub fn overflow_len(&self) -> usize {
        self.shared.peers.iter().flatten().map(|p| p.overflow.borrow().len()).sum()
    }

    /// Moves as much of the overflow to `to` into its queue as fits; true
    /// when the overflow is empty afterwards.
    fn move_overflow(&self, to: usize) -> bool {
        let sh = &*self.shared;
        let Some(peer) = sh.peers[to].as_ref() else { return true };
        let mut overflow = peer.overflow.borrow_mut();
        let mut moved = 0i64;
        while let Some(msg) = overflow.pop_front() {
            if let Err(msg) = peer.pair.queue.push(msg) {
                overflow.push_front(msg);
                break;
            }
            moved += 1;
        }
        if moved > 0 {
            sh.stats.mesh_overflow.fetch_sub(moved, Ordering::Relaxed);
            ring(&peer.pair, &peer.bell);
        }
        overflow.is_empty()
    }

    /// The pair to `to` has no overflow any more: one congested pair less;
    /// the last one rings every peer so their paused clients resume.
    fn uncongest(&self) {
        let sh = &*self.shared;
        if sh.congestion.global.fetch_sub(1, Ordering::SeqCst) == 1 {
            for peer in sh.peers.iter().flatten() {
                // a full doorbell is already ringing
                let _ = peer.bell.try_send(());
            }
        }
        sh.congestion.wake_if_clear();
    }
}

impl<T: MeshMessage> Flusher<T> {
    /// Runs until the peer shard is gone: waits for overflow, then moves it
    /// into the queue whenever the consumer rings for room.
    pub async fn run(&self) {
        let to = self.to;
        loop {
            let has_overflow = poll_fn(|cx| {
                let Some(peer) = self.mesh.shared.peers[to].as_ref() else {
                    return Poll::Ready(false);
                };
                if peer.overflow.borrow().is_empty() {
                    peer.flusher.set(Some(cx.waker().clone()));
                    Poll::Pending
                } else {
                    Poll::Ready(true)
                }
            })
            .await;
            if !has_overflow {
                return;
            }
            loop {
                if self.mesh.move_overflow(to) {
                    break;
                }
                let Some(peer) = self.mesh.shared.peers[to].as_ref() else { return };
                peer.pair.waiting.store(true, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                // the consumer may have taken messages before it saw `waiting`
                if self.mesh.move_overflow(to) {
                    peer.pair.waiting.store(false, Ordering::SeqCst);
                    break;
                }
                if self.room.recv().await.is_none() {
                    return;
                }
            }
            self.mesh.uncongest();
        }
    }
}

fn ring<T>(pair: &Pair<T>, bell: &ConnectedSender<()>) {
    if pair.parked.load(Ordering::SeqCst) && pair.parked.swap(false, Ordering::SeqCst) {
        // A full doorbell means it is already ringing.
        let _ = bell.try_send(());
    }
}

impl<T: Send> Inbound<T> {
    /// Pops up to `budget` messages into `batch`; returns how many. Rings
    /// the producer's room doorbell if it waits for room.
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
        if n > 0 {
            fence(Ordering::SeqCst);
            if self.pair.waiting.load(Ordering::SeqCst) && self.pair.waiting.swap(false, Ordering::SeqCst) {
                let _ = self.room.try_send(());
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    #[derive(Debug, PartialEq, Eq, Clone, Copy)]
    enum Msg {
        Event(u32),
        Call(u32),
    }

    impl MeshMessage for Msg {
        fn droppable(&self) -> bool {
            matches!(self, Msg::Event(_))
        }
    }

    /// A full queue: messages wait in order in the overflow, events past its
    /// limit are dropped and counted, calls never; the router counts as
    /// congested until the flusher, woken by the consumer's room doorbell,
    /// has moved everything, and nothing is polled for.
    #[test]
    fn overflow_is_bounded_ordered_and_flushed_on_the_room_doorbell() {
        let dog = Arc::new(crate::shard::watchdog::Watchdog::start(Duration::from_millis(10)).expect("watchdog"));
        let mut seeds = build::<Msg>(2, 2).into_iter();
        let (seed0, seed1) = (seeds.next().expect("seed 0"), seeds.next().expect("seed 1"));
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (got_tx, got_rx) = mpsc::channel::<Vec<Msg>>();
        let dog1 = dog.clone();
        let consumer = LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                let _kicked = dog1.register();
                let ends = seed1.connect(Arc::new(ShardStats::default()), 4).await;
                let inbound = &ends.inbound[0];
                // blocking is fine here: nothing else runs on this executor
                go_rx.recv().expect("go");
                let mut got = Vec::new();
                while got.last() != Some(&Msg::Call(7)) {
                    if inbound.drain(&mut got, 1) == 0 {
                        assert!(inbound.park().await, "producer gone");
                    }
                }
                got_tx.send(got).expect("report");
            })
            .expect("consumer executor");
        let producer = LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                let _kicked = dog.register();
                let stats = Arc::new(ShardStats::default());
                let ends = seed0.connect(stats.clone(), 4).await;
                let mesh = ends.mesh;
                let congestion = mesh.congestion();
                mesh.send(1, Msg::Call(0));
                mesh.send(1, Msg::Call(1));
                assert!(!congestion.active(), "two messages fit the queue");
                for i in 2..=6 {
                    mesh.send(1, Msg::Event(i));
                }
                mesh.send(1, Msg::Call(7));
                assert!(congestion.active());
                assert_eq!(mesh.overflow_len(), 5, "events 2-5 and the call wait; event 6 is dropped");
                assert_eq!(stats.mesh_events_dropped.load(Ordering::Relaxed), 1);
                assert_eq!(stats.mesh_overflow.load(Ordering::Relaxed), 5);
                let flusher = ends.flushers.into_iter().next().expect("one flusher");
                let flushing = glommio::spawn_local(async move { flusher.run().await });
                go_tx.send(()).expect("go");
                congestion.cleared().await;
                assert_eq!(mesh.overflow_len(), 0);
                assert_eq!(stats.mesh_overflow.load(Ordering::Relaxed), 0);
                drop(flushing);
            })
            .expect("producer executor");
        let got = got_rx.recv_timeout(Duration::from_secs(20)).expect("the consumer got everything");
        let want = vec![
            Msg::Call(0),
            Msg::Call(1),
            Msg::Event(2),
            Msg::Event(3),
            Msg::Event(4),
            Msg::Event(5),
            Msg::Call(7),
        ];
        assert_eq!(got, want);
        producer.join().expect("producer");
        consumer.join().expect("consumer");
    }
}

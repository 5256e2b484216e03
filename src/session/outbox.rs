//! The per-connection outbound queue. The router pushes encoded messages
//! (shared `Bytes`, framing is added by the writer), the connection's writer
//! task takes everything queued at once and writes it in one syscall.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use bytes::Bytes;

/// One item to write.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// An encoded WAMP message.
    Wamp(Bytes),
    /// A transport-level pong with the ping's payload.
    Pong(Bytes),
    /// A transport-level ping (keep-alive).
    Ping(Bytes),
    /// A transport close (WebSocket close frame; RawSocket just closes).
    Close { code: u16, reason: &'static str },
}

/// Why the router ends a connection, in its own words; [`Outgoing::close`]
/// turns it into the transport's close (the WebSocket close code), so the
/// routing core never names a transport's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The session ended normally (GOODBYE, a clean ABORT).
    Normal,
    /// The router is shutting down.
    GoingAway,
    /// The peer broke the protocol.
    ProtocolError,
    /// The peer broke a policy (it does not read what it is sent).
    PolicyViolation,
    /// The router failed (a contained panic).
    InternalError,
}

impl Outgoing {
    /// The close item for `why`, with a short `reason` text.
    pub fn close(why: CloseReason, reason: &'static str) -> Outgoing {
        use crate::transport::websocket::close;
        let code = match why {
            CloseReason::Normal => close::NORMAL,
            CloseReason::GoingAway => close::GOING_AWAY,
            CloseReason::ProtocolError => close::PROTOCOL_ERROR,
            CloseReason::PolicyViolation => close::POLICY_VIOLATION,
            CloseReason::InternalError => close::INTERNAL_ERROR,
        };
        Outgoing::Close { code, reason }
    }
}

/// What a queued ping or pong is counted as beyond its payload (its frame
/// header and queue slot).
const CONTROL_OVERHEAD: usize = 16;

/// Outbound queue of one connection, bounded in bytes for droppable traffic.
pub struct Outbox {
    queue: RefCell<VecDeque<Outgoing>>,
    bytes: Cell<usize>,
    limit: usize,
    max_message: Cell<usize>,
    waker: Cell<Option<Waker>>,
    close_waker: Cell<Option<Waker>>,
    drain_waker: Cell<Option<Waker>>,
    closing: Cell<bool>,
    killed: Cell<bool>,
    kill_waker: Cell<Option<Waker>>,
    dropped: Cell<u64>,
    taken: Cell<u64>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.queue.borrow().len())
            .field("bytes", &self.bytes.get())
            .field("closing", &self.closing.get())
            .finish()
    }
}

impl Outbox {
    /// An outbox that drops events beyond `limit` queued bytes.
    pub fn new(limit: usize) -> Self {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            limit,
            max_message: Cell::new(usize::MAX),
            waker: Cell::new(None),
            close_waker: Cell::new(None),
            drain_waker: Cell::new(None),
            closing: Cell::new(false),
            killed: Cell::new(false),
            kill_waker: Cell::new(None),
            dropped: Cell::new(0),
            taken: Cell::new(0),
        }
    }

    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Sets the largest message the peer accepts (RawSocket handshake).
    pub fn set_max_message(&self, max: usize) {
        self.max_message.set(max);
    }

    /// The largest message this peer takes.
    pub fn max_message(&self) -> usize {
        self.max_message.get()
    }

    /// True if a message of `len` bytes may be sent to this peer.
    pub fn fits(&self, len: usize) -> bool {
        len <= self.max_message.get()
    }

    /// Queues a message that must not be dropped (replies, RPC traffic).
    /// A message larger than the peer accepts is dropped and counted; the
    /// router checks [`Outbox::fits`] first where it can answer otherwise.
    pub fn push(&self, msg: Bytes) {
        if self.closing.get() {
            return;
        }
        if !self.fits(msg.len()) {
            self.dropped.set(self.dropped.get() + 1);
            return;
        }
        self.bytes.set(self.bytes.get() + msg.len());
        self.queue.borrow_mut().push_back(Outgoing::Wamp(msg));
        self.wake();
    }

    /// Queues an event unless the queue is over its byte limit; returns false
    /// (and counts the drop) when it is.
    pub fn push_event(&self, msg: Bytes) -> bool {
        if self.closing.get() {
            return false;
        }
        if self.bytes.get() + msg.len() > self.limit {
            self.dropped.set(self.dropped.get() + 1);
            return false;
        }
        self.push(msg);
        true
    }

    /// Queues a transport control item. Pings and pongs count against the
    /// byte limit like replies do (with their framing), so a client that
    /// floods pings and reads nothing is paused and closed like any other.
    pub fn push_control(&self, item: Outgoing) {
        if self.closing.get() {
            return;
        }
        if let Outgoing::Ping(p) | Outgoing::Pong(p) = &item {
            self.bytes.set(self.bytes.get() + p.len() + CONTROL_OVERHEAD);
        }
        self.queue.borrow_mut().push_back(item);
        self.wake();
    }

    /// Closes the connection once everything queued so far is written; a
    /// `Close` item, if given, goes last.
    pub fn close(&self, last: Option<Outgoing>) {
        if self.closing.get() {
            return;
        }
        if let Some(item) = last {
            self.queue.borrow_mut().push_back(item);
        }
        self.closing.set(true);
        self.wake();
        if let Some(w) = self.close_waker.take() {
            w.wake();
        }
        if let Some(w) = self.drain_waker.take() {
            w.wake();
        }
    }

    /// Changes the close code and reason of a close still queued (not yet
    /// taken by the writer): a transport error found in bytes that were
    /// already received overrides a clean close chosen before.
    pub fn replace_close(&self, code: u16, reason: &'static str) {
        let mut q = self.queue.borrow_mut();
        match q.back_mut() {
            Some(Outgoing::Close { code: c, reason: r }) => {
                *c = code;
                *r = reason;
            }
            _ if !self.closing.get() => {
                drop(q);
                self.close(Some(Outgoing::Close { code, reason }));
            }
            _ => {}
        }
    }

    /// Resolves when `ready` holds, re-checked each time `slot`'s waker is
    /// woken (every waker slot has one waiting task).
    async fn until(&self, slot: &Cell<Option<Waker>>, ready: impl Fn() -> bool) {
        poll_fn(|cx| {
            if ready() {
                Poll::Ready(())
            } else {
                slot.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// Resolves once the outbox starts closing (ABORT, GOODBYE, shutdown).
    pub async fn closing_started(&self) {
        self.until(&self.close_waker, || self.closing.get()).await
    }

    /// Throws away everything queued and closes with `last`: for a peer that
    /// stopped reading, whose queue would otherwise be flushed first.
    pub fn abort(&self, last: Outgoing) {
        if self.closing.get() {
            return;
        }
        self.queue.borrow_mut().clear();
        self.bytes.set(0);
        self.close(Some(last));
    }

    /// Ends the connection now, whatever is queued or being written: for a
    /// shard that stops after its shutdown grace period. The writer gives up
    /// a write in progress, and the read loop stops.
    pub fn kill(&self) {
        self.abort(Outgoing::Close {
            code: crate::transport::websocket::close::GOING_AWAY,
            reason: "router shutting down",
        });
        self.killed.set(true);
        if let Some(w) = self.kill_waker.take() {
            w.wake();
        }
    }

    /// Resolves once [`Outbox::kill`] was called.
    pub async fn killed(&self) {
        self.until(&self.kill_waker, || self.killed.get()).await
    }

    /// True while the queue holds more than its byte limit.
    pub fn over_limit(&self) -> bool {
        self.bytes.get() > self.limit
    }

    /// Resolves once the queue holds no more than its byte limit (or the
    /// outbox is closing). Only messages that must not be dropped (replies,
    /// RPC traffic) take it over the limit: the connection stops reading
    /// until its peer has taken them, so a client that sends calls without
    /// reading the results is slowed by TCP instead of growing the queue.
    pub async fn below_limit(&self) {
        self.until(&self.drain_waker, || !self.over_limit() || self.closing.get()).await
    }

    /// True once [`Outbox::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// How many times the writer has taken the queue: progress, for telling a
    /// slow peer from one that stopped reading.
    pub fn taken(&self) -> u64 {
        self.taken.get()
    }

    /// Events dropped because the peer did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Moves everything queued into `batch` at once, as the writer does, for
    /// code that drives the router without sockets (tests, fuzzing).
    pub fn take_queued(&self, batch: &mut Vec<Outgoing>) {
        self.take_into(&mut self.queue.borrow_mut(), batch);
    }

    /// Moves a non-empty queue into `batch`: the byte count starts again,
    /// progress is counted, and a read loop waiting for room is woken.
    /// Returns false for an empty queue.
    fn take_into(&self, q: &mut VecDeque<Outgoing>, batch: &mut Vec<Outgoing>) -> bool {
        if q.is_empty() {
            return false;
        }
        batch.extend(q.drain(..));
        self.bytes.set(0);
        self.taken.set(self.taken.get() + 1);
        if let Some(w) = self.drain_waker.take() {
            w.wake();
        }
        true
    }

    /// Waits for queued items and moves all of them into `batch`. Returns
    /// false when the outbox is closing and empty: the writer should finish.
    pub async fn next_batch(&self, batch: &mut Vec<Outgoing>) -> bool {
        poll_fn(|cx| {
            if self.take_into(&mut self.queue.borrow_mut(), batch) {
                return Poll::Ready(true);
            }
            if self.closing.get() {
                return Poll::Ready(false);
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

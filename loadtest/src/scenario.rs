//! The scenarios: pub/sub (and fan-out), RPC, and idle connections. Each role
//! is one WAMP session, a task on one of the worker threads.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use switchyard::wamp::message::Serializer;
use switchyard::wamp::{MessageType, Value};

use crate::client::{self, msg, Reader, Target, Writer};
use crate::run::{now_ns, record, Hist, Shared};

/// How senders pace themselves.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the in-flight window allows.
    Closed { window: u64 },
    /// A fixed rate per sender (messages/s); latency from the intended time.
    Open { per_sender: f64 },
}

/// Parameters every session role needs.
#[derive(Debug, Clone)]
pub struct Setup {
    pub target: Target,
    pub ser: Serializer,
    pub realm: String,
    pub pace: Pace,
    /// Bytes of padding carried in each payload.
    pub pad: usize,
    /// Log in with WAMP-Ticket as (authid, ticket) instead of anonymously.
    pub ticket: Option<(String, String)>,
}

const CODE_WELCOME: u64 = MessageType::Welcome as u64;
const CODE_ABORT: u64 = MessageType::Abort as u64;
const CODE_CHALLENGE: u64 = MessageType::Challenge as u64;

fn err(m: impl Into<String>) -> io::Error {
    io::Error::other(m.into())
}

/// Connects and joins; returns the session's halves.
pub async fn join(s: &Setup) -> io::Result<(Reader, Writer)> {
    let (mut r, mut w) = client::connect(&s.target, s.ser).await?;
    let mut m = match &s.ticket {
        None => {
            w.send(&msg::hello(s.ser, &s.realm)).await?;
            r.next().await?
        }
        Some((authid, _)) => {
            w.send(&msg::hello_ticket(s.ser, &s.realm, authid)).await?;
            r.next().await?
        }
    };
    if let (Some((_, ticket)), Ok((CODE_CHALLENGE, _))) = (&s.ticket, client::parse(s.ser, &m)) {
        w.send(&msg::authenticate(s.ser, ticket)).await?;
        m = r.next().await?;
    }
    match client::parse(s.ser, &m)? {
        (CODE_WELCOME, _) => Ok((r, w)),
        (CODE_ABORT, items) => Err(err(format!("router refused the session: {:?}", items.get(2)))),
        (code, _) => Err(err(format!("expected WELCOME, got message type {code}"))),
    }
}

/// Sends `request` and waits for the reply of type `expect`, returning it.
async fn request(s: &Setup, r: &mut Reader, w: &mut Writer, m: &[u8], expect: MessageType) -> io::Result<Vec<Value>> {
    w.send(m).await?;
    loop {
        let reply = r.next().await?;
        let (code, items) = client::parse(s.ser, &reply)?;
        if code == expect as u64 {
            return Ok(items);
        }
        if code == MessageType::Error as u64 {
            return Err(err(format!("router answered ERROR {:?}", items.get(4))));
        }
    }
}

/// The arguments a sender puts in each message: [sender, seq, ts, padding].
fn args(sender: usize, seq: u64, ts: u64, pad: &str) -> Value {
    Value::List(vec![
        Value::UInt(sender as u64),
        Value::UInt(seq),
        Value::UInt(ts),
        Value::Str(pad.to_owned()),
    ])
}

/// Waits until the sender may put another message in flight.
async fn wait_window(shared: &Shared, sender: usize, fanout: u64, window: u64) {
    let mut waited = 0u32;
    loop {
        let sent = shared.sent_by[sender].get() * fanout;
        let got = shared.received_from[sender].get();
        if sent.saturating_sub(got) < window * fanout.max(1) || shared.stop.load(Ordering::Relaxed) {
            return;
        }
        // A lost message must not stall the sender for ever.
        waited += 1;
        if waited > 20_000 {
            return;
        }
        // a timer, not a yield: a task that only yields keeps the executor
        // from polling its sockets
        glommio::timer::sleep(Duration::from_micros(20)).await;
    }
}

/// Sleeps until `t` (ns), spinning through the last stretch.
async fn until(t: u64) {
    loop {
        let now = now_ns();
        if now >= t {
            return;
        }
        let gap = t - now;
        glommio::timer::sleep(Duration::from_nanos(gap)).await;
    }
}

/// An open-loop send schedule: message `seq` (from 1) is due at
/// `start + (seq - 1) * interval`, whatever came back.
struct Schedule {
    start: u64,
    interval: f64,
}

impl Schedule {
    fn new(start: u64, per_second: f64) -> Self {
        Schedule {
            start,
            interval: 1e9 / per_second,
        }
    }

    /// Calls `send(seq, intended send time)` for each message due by now
    /// after `seq` (at most 256 at once), advancing `seq`; returns how many.
    fn queue_due(&self, seq: &mut u64, mut send: impl FnMut(u64, u64)) -> u64 {
        let due = ((now_ns() - self.start) as f64 / self.interval) as u64 + 1;
        let mut n = 0;
        while *seq < due && n < 256 {
            *seq += 1;
            n += 1;
            send(*seq, self.start + ((*seq - 1) as f64 * self.interval) as u64);
        }
        n
    }

    /// Sleeps until the message after `seq` is due.
    async fn wait_next(&self, seq: u64) {
        until(self.start + (seq as f64 * self.interval) as u64).await
    }
}

/// A publisher: publishes to `topic` until told to stop.
pub async fn publisher(s: Arc<Setup>, shared: Arc<Shared>, id: usize, topic: String, fanout: u64) {
    let joined = join(&s).await;
    shared.ready.fetch_add(1, Ordering::AcqRel);
    let (_r, mut w) = match joined {
        Ok(x) => x,
        Err(e) => return shared.fail(format!("publisher {id}: {e}")),
    };
    if !shared.wait_go().await {
        return;
    }
    let pad = "x".repeat(s.pad);
    let mut seq = 0u64;
    let start = now_ns();
    while !shared.stop.load(Ordering::Relaxed) {
        match s.pace {
            Pace::Closed { window } => {
                wait_window(&shared, id, fanout, window).await;
                // fill what the window allows in one write
                let inflight = (shared.sent_by[id].get() * fanout).saturating_sub(shared.received_from[id].get()) / fanout.max(1);
                let n = window.saturating_sub(inflight).clamp(1, 64);
                for _ in 0..n {
                    seq += 1;
                    w.queue(&msg::publish(s.ser, seq, &topic, false, &args(id, seq, now_ns(), &pad)));
                }
                shared.sent_by[id].add(n);
                shared.sent.add(n);
            }
            Pace::Open { per_sender } => {
                let schedule = Schedule::new(start, per_sender);
                let n = schedule.queue_due(&mut seq, |seq, intended| {
                    w.queue(&msg::publish(s.ser, seq, &topic, false, &args(id, seq, intended, &pad)))
                });
                shared.sent_by[id].add(n);
                shared.sent.add(n);
                if n == 0 {
                    schedule.wait_next(seq).await;
                    continue;
                }
            }
        }
        if let Err(e) = w.flush().await {
            shared.errors.add(1);
            return shared.fail(format!("publisher {id}: {e}"));
        }
    }
    // let the subscribers finish before closing
    while !shared.done.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let _ = w.send(&msg::goodbye(s.ser)).await;
    w.close().await;
}

/// Joins, sends `m` and waits for its `expect` reply, then reports ready
/// (also on failure, which is recorded as `who`'s). `None` if it failed.
async fn join_and_request(s: &Setup, shared: &Shared, who: String, m: &[u8], expect: MessageType) -> Option<(Reader, Writer)> {
    let joined = async {
        let (mut r, mut w) = join(s).await?;
        request(s, &mut r, &mut w, m, expect).await?;
        Ok::<_, io::Error>((r, w))
    }
    .await;
    shared.ready.fetch_add(1, Ordering::AcqRel);
    match joined {
        Ok(x) => Some(x),
        Err(e) => {
            shared.fail(format!("{who}: {e}"));
            None
        }
    }
}

/// A subscriber: counts events, checks per-publisher order, records latency.
pub async fn subscriber(s: Arc<Setup>, shared: Arc<Shared>, id: usize, topic: String, hist: Hist) {
    let subscribe = msg::subscribe(s.ser, 1, &topic);
    let Some((mut r, mut w)) = join_and_request(&s, &shared, format!("subscriber {id}"), &subscribe, MessageType::Subscribed).await else {
        return;
    };
    let mut next_seq: HashMap<u64, u64> = HashMap::new();
    let event = MessageType::Event as u64;
    loop {
        let m = shared.next_or_done(&mut r).await;
        let m = match m {
            None => break,
            Some(Err(e)) => {
                if !shared.done.load(Ordering::Relaxed) {
                    shared.errors.add(1);
                    shared.fail(format!("subscriber {id}: {e}"));
                }
                return;
            }
            Some(Ok(m)) => m,
        };
        let mut batch = vec![m];
        while let Ok(Some(more)) = r.try_next() {
            batch.push(more);
        }
        let now = now_ns();
        let mut got = 0;
        for m in batch {
            let Some(p) = client::peek(s.ser, &m) else {
                shared.errors.add(1);
                continue;
            };
            if p.code != event {
                continue;
            }
            let Some([sender, seq, ts]) = p.stamp else { continue };
            let expected = next_seq.entry(sender).or_insert(1);
            if seq < *expected {
                shared.out_of_order.add(1);
            }
            *expected = seq + 1;
            record(&hist, &shared, ts, now);
            if let Some(c) = shared.received_from.get(sender as usize) {
                c.add(1);
            }
            got += 1;
        }
        shared.received.add(got);
    }
    let _ = w.send(&msg::goodbye(s.ser)).await;
    w.close().await;
}

/// A callee: answers every invocation with its arguments.
pub async fn callee(s: Arc<Setup>, shared: Arc<Shared>, id: usize, procedure: String) {
    let register = msg::register(s.ser, 1, &procedure);
    let Some((mut r, mut w)) = join_and_request(&s, &shared, format!("callee {id}"), &register, MessageType::Registered).await else {
        return;
    };
    let invocation = MessageType::Invocation as u64;
    loop {
        let m = shared.next_or_done(&mut r).await;
        let first = match m {
            None => break,
            Some(Err(_)) => return,
            Some(Ok(m)) => m,
        };
        let mut next = Some(first);
        while let Some(m) = next {
            if let Some(p) = client::peek(s.ser, &m) {
                if p.code == invocation {
                    w.queue(&msg::yield_raw(p.request, &p.payload));
                }
            }
            next = r.try_next().ok().flatten();
        }
        if w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.send(&msg::goodbye(s.ser)).await;
    w.close().await;
}

/// A caller: keeps its window of calls in flight (closed loop) or calls at a
/// fixed rate (open loop), and records round-trip latency.
pub async fn caller(s: Arc<Setup>, shared: Arc<Shared>, id: usize, procedure: String, hist: Hist) {
    let joined = join(&s).await;
    shared.ready.fetch_add(1, Ordering::AcqRel);
    let (mut r, mut w) = match joined {
        Ok(x) => x,
        Err(e) => return shared.fail(format!("caller {id}: {e}")),
    };
    if !shared.wait_go().await {
        return;
    }
    let pad = "x".repeat(s.pad);
    let result = MessageType::Result as u64;
    let error = MessageType::Error as u64;
    let mut seq = 0u64;
    let mut outstanding = 0u64;
    let start = now_ns();
    let handle = |m: bytes::Bytes, outstanding: &mut u64| {
        let now = now_ns();
        let Some(p) = client::peek(s.ser, &m) else { return };
        if p.code == result {
            *outstanding = outstanding.saturating_sub(1);
            if let Some([_, _, ts]) = p.stamp {
                record(&hist, &shared, ts, now);
            }
            shared.received.add(1);
            shared.received_from[id].add(1);
        } else if p.code == error {
            *outstanding = outstanding.saturating_sub(1);
            shared.errors.add(1);
        }
    };
    match s.pace {
        Pace::Closed { window } => {
            while !shared.stop.load(Ordering::Relaxed) {
                while outstanding < window {
                    seq += 1;
                    outstanding += 1;
                    w.queue(&msg::call(s.ser, seq, &procedure, &args(id, seq, now_ns(), &pad)));
                    shared.sent.add(1);
                }
                if let Err(e) = w.flush().await {
                    shared.errors.add(1);
                    return shared.fail(format!("caller {id}: {e}"));
                }
                match shared.next_or_done(&mut r).await {
                    Some(Ok(m)) => handle(m, &mut outstanding),
                    Some(Err(e)) => {
                        shared.errors.add(1);
                        return shared.fail(format!("caller {id}: {e}"));
                    }
                    None => break,
                }
                while let Ok(Some(m)) = r.try_next() {
                    handle(m, &mut outstanding);
                }
            }
        }
        Pace::Open { per_sender } => {
            let schedule = Schedule::new(start, per_sender);
            let reader = async {
                let mut outstanding = 0;
                while let Some(Ok(m)) = shared.next_or_done(&mut r).await {
                    handle(m, &mut outstanding);
                }
            };
            let writer = async {
                while !shared.stop.load(Ordering::Relaxed) {
                    let n = schedule.queue_due(&mut seq, |seq, intended| {
                        w.queue(&msg::call(s.ser, seq, &procedure, &args(id, seq, intended, &pad)))
                    });
                    shared.sent.add(n);
                    if n == 0 {
                        schedule.wait_next(seq).await;
                        continue;
                    }
                    if w.flush().await.is_err() {
                        shared.errors.add(1);
                        return;
                    }
                }
            };
            futures_lite::future::zip(reader, writer).await;
        }
    }
    while !shared.done.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let _ = w.send(&msg::goodbye(s.ser)).await;
    w.close().await;
}

/// Sessions held open (idle) until the run ends.
pub type Held = std::rc::Rc<std::cell::RefCell<Vec<(Reader, Writer)>>>;

/// Opens sessions one after another, taking IDs from `queue`, and keeps them
/// in `held`; several of these run side by side for concurrency. Records
/// each session's connect-and-join time.
pub async fn connector(s: Arc<Setup>, shared: Arc<Shared>, queue: std::rc::Rc<std::cell::RefCell<Vec<usize>>>, hist: Hist, held: Held) {
    loop {
        let Some(id) = queue.borrow_mut().pop() else { return };
        let t = now_ns();
        let joined = glommio::timer::timeout(Duration::from_secs(10), async { Ok(join(&s).await) }).await;
        let _ = hist.borrow_mut().record(now_ns().saturating_sub(t).max(1));
        shared.ready.fetch_add(1, Ordering::AcqRel);
        match joined {
            Ok(Ok(session)) => {
                shared.received.add(1);
                held.borrow_mut().push(session);
            }
            Ok(Err(e)) => {
                shared.errors.add(1);
                shared.fail(format!("session {id}: {e}"));
            }
            Err(_) => {
                shared.errors.add(1);
                shared.fail(format!("session {id}: no WELCOME within 10 s"));
            }
        }
    }
}

/// Ends every held session once the run is over.
pub async fn release(s: Arc<Setup>, shared: Arc<Shared>, held: Held) {
    while !shared.done.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    let sessions: Vec<(Reader, Writer)> = held.borrow_mut().drain(..).collect();
    for (_r, mut w) in sessions {
        let _ = w.send(&msg::goodbye(s.ser)).await;
        w.close().await;
    }
}

//! The HTTP long-poll transport's connections. A transport lives on the
//! shard that answered its `open` (its ID names that shard); a request for it
//! that arrives on another shard is passed to the owner over a queue, and the
//! answer comes back the same way, so the session stays on one shard as every
//! other session does.
//!
//! Bounds: a transport is a connection (it takes a slot of
//! `limits.max_connections`); what the router queues for it is bounded by
//! `limits.max_outbound_bytes` as for any connection; request bodies by
//! `limits.max_message_size`; a transport no request has touched for the
//! listener's `session_timeout_ms` is closed and counted
//! (`longpoll_expired`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::io::AsyncWriteExt;
use tracing::debug;

use super::connection::{deliver, ConnSlot, Stream};
use super::handle::ConnCtx;
use super::outbox::{Outbox, Outgoing};
use crate::metrics::ShardStats;
use crate::router::{ConnId, TransportInfo, TransportKind};
use crate::transport::longpoll::{self, Route, Settings};
use crate::transport::{read_more, websocket};
use crate::wamp::message::Serializer;

/// What a request asks of a transport.
#[derive(Debug)]
pub enum Op {
    Send(Bytes),
    Receive,
    Close,
}

/// A request for a transport of another shard, and where its HTTP response
/// goes.
#[derive(Debug)]
pub struct Call {
    id: String,
    op: Op,
    settings: Settings,
    reply: flume::Sender<Vec<u8>>,
}

/// One long-poll transport.
struct Transport {
    conn: ConnId,
    outbox: Rc<Outbox>,
    ser: Serializer,
    batched: bool,
    /// Messages taken from the outbox and not yet returned by a receive.
    pending: RefCell<VecDeque<Bytes>>,
    last_seen: Cell<Instant>,
    receiving: Cell<bool>,
    /// The router closed the connection: once `pending` is drained, the
    /// transport is gone.
    ended: Cell<bool>,
    _slot: ConnSlot,
}

/// Every long-poll transport of this shard, and the queues to the others.
pub struct Hub {
    me: usize,
    transports: RefCell<HashMap<String, Rc<Transport>>>,
    shards: Arc<Vec<flume::Sender<Call>>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hub(shard {}, {} transports)", self.me, self.transports.borrow().len())
    }
}

impl Hub {
    /// This shard's hub; `shards` holds every shard's call queue.
    pub fn new(me: usize, shards: Arc<Vec<flume::Sender<Call>>>) -> Self {
        Hub {
            me,
            transports: RefCell::new(HashMap::new()),
            shards,
        }
    }

    fn get(&self, id: &str) -> Option<Rc<Transport>> {
        self.transports.borrow().get(id).cloned()
    }

    /// Closes every transport (at shutdown): their sessions leave, and the
    /// connection slots they hold (which hold the shard's `ConnCtx`) go.
    pub fn clear(&self, ctx: &ConnCtx) {
        let ids: Vec<String> = self.transports.borrow().keys().cloned().collect();
        for id in ids {
            self.remove(ctx, &id);
        }
    }

    /// Forgets a transport and makes its session leave.
    fn remove(&self, ctx: &ConnCtx, id: &str) {
        if let Some(t) = self.transports.borrow_mut().remove(id) {
            t.outbox.close(None);
            ctx.router.borrow_mut().close_connection(t.conn);
            ctx.stats.longpoll_transports.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Serves the calls other shards pass to this one.
pub async fn serve_calls(ctx: Rc<ConnCtx>, calls: flume::Receiver<Call>) {
    while let Ok(call) = calls.recv_async().await {
        let ctx = ctx.clone();
        glommio::spawn_local(async move {
            let resp = handle(&ctx, &call.id, call.op, &call.settings).await;
            let _ = call.reply.send(resp);
        })
        .detach();
    }
}

/// A complete request.
type Request = super::bridge::Request;

/// Reads one request (headers, then a `Content-Length` body of at most
/// `max` bytes); `Err` is the response that refuses it.
async fn read_request<S: Stream>(stream: &mut S, buf: &mut BytesMut, max: usize) -> Result<Request, Vec<u8>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(head)) => {
                let target = req.path.unwrap_or("").to_owned();
                let method = req.method.unwrap_or("").to_owned();
                // HTTP/1.1 keeps the connection unless told otherwise
                let connection = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("connection"))
                    .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase());
                let keep_alive = match connection.as_deref() {
                    Some(c) if c.contains("close") => false,
                    Some(c) if c.contains("keep-alive") => true,
                    _ => req.version == Some(1),
                };
                let names: Vec<(String, Vec<u8>)> = req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                    .collect();
                let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
                if header("Transfer-Encoding").is_some() {
                    return Err(longpoll::error(411, "Length Required", "send the body with a Content-Length"));
                }
                let len = match header("Content-Length") {
                    None => 0,
                    Some(v) => match std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<usize>().ok()) {
                        Some(n) => n,
                        None => return Err(longpoll::error(400, "Bad Request", "invalid Content-Length")),
                    },
                };
                if len > max {
                    return Err(longpoll::error(
                        413,
                        "Payload Too Large",
                        "the body exceeds the maximum message size",
                    ));
                }
                while buf.len() < head + len {
                    match read_more(stream, buf, (head + len - buf.len()).min(64 * 1024)).await {
                        Ok(0) | Err(_) => return Err(Vec::new()),
                        Ok(_) => {}
                    }
                }
                let mut all = buf.split_to(head + len);
                let body = all.split_off(head).freeze();
                return Ok(Request {
                    method,
                    target,
                    headers: names,
                    body,
                    keep_alive,
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < websocket::MAX_HANDSHAKE => {}
            Ok(httparse::Status::Partial) => {
                return Err(longpoll::error(431, "Request Header Fields Too Large", "request header too large"))
            }
            Err(_) => return Err(longpoll::error(400, "Bad Request", "malformed HTTP request")),
        }
        match read_more(stream, buf, 1024).await {
            Ok(0) | Err(_) => return Err(Vec::new()),
            Ok(_) => {}
        }
    }
}

/// Serves one HTTP `POST` on a listener with long-poll or the HTTP bridge
/// (`buf` holds what was read of it), then closes the connection.
pub async fn serve<S: Stream>(
    ctx: Rc<ConnCtx>,
    mut stream: S,
    peer: TransportInfo,
    mut buf: BytesMut,
    longpoll: Option<&Settings>,
    bridge: Option<&super::bridge::Settings>,
) {
    let read = glommio::timer::timeout(ctx.limits().handshake_timeout, async {
        Ok(read_request(&mut stream, &mut buf, ctx.limits().max_message_size).await)
    })
    .await;
    let req = match read {
        Ok(Ok(r)) => r,
        Ok(Err(resp)) => {
            if !resp.is_empty() {
                let _ = stream.write_all(&resp).await;
            }
            let _ = stream.close().await;
            return;
        }
        Err(_) => {
            ShardStats::inc(&ctx.stats.handshake_timeouts);
            return;
        }
    };
    if let Some(b) = bridge.filter(|b| super::bridge::serves(b, &req.target)) {
        // bridge requests may follow each other on one connection
        let mut req = req;
        // (the connection's session, kept while its requests use one key)
        let mut session = None;
        loop {
            let keep = super::bridge::serve(&ctx, &mut stream, &mut buf, &mut session, peer.clone(), req, b).await;
            if !keep {
                break;
            }
            let read = glommio::timer::timeout(ctx.limits().handshake_timeout, async {
                Ok(read_request(&mut stream, &mut buf, ctx.limits().max_message_size).await)
            });
            // the router may end the kept session meanwhile (shutdown, a
            // kill): then the connection goes too
            let next = match &session {
                Some(s) => {
                    futures_lite::future::or(async { Some(read.await) }, async {
                        s.ended().await;
                        None
                    })
                    .await
                }
                None => Some(read.await),
            };
            let Some(next) = next else { break };
            req = match next {
                Ok(Ok(r)) if super::bridge::serves(b, &r.target) => r,
                Ok(Ok(r)) => {
                    let m = format!("only bridge requests may follow on this connection, not {}", r.target);
                    let _ = stream.write_all(&longpoll::error(400, "Bad Request", &m)).await;
                    break;
                }
                Ok(Err(resp)) => {
                    if !resp.is_empty() {
                        let _ = stream.write_all(&resp).await;
                    }
                    break;
                }
                // an idle kept-alive connection is closed
                Err(_) => break,
            };
        }
        drop(session);
        let _ = stream.close().await;
        return;
    }
    let Some(settings) = longpoll else {
        let resp = longpoll::error(404, "Not Found", &format!("nothing to POST to at {}", req.target));
        let _ = stream.write_all(&resp).await;
        let _ = stream.close().await;
        return;
    };
    let resp = match longpoll::route(&req.target, &settings.path) {
        None => longpoll::error(404, "Not Found", &format!("no long-poll endpoint at {}", req.target)),
        Some(Route::Open) => open(&ctx, &req.body, peer, settings),
        Some(route) => {
            let (id, op) = match route {
                Route::Send(id) => (id, Op::Send(req.body.clone())),
                Route::Receive(id) => (id, Op::Receive),
                Route::Close(id) => (id, Op::Close),
                Route::Open => unreachable!("handled above"),
            };
            match longpoll::shard_of(id) {
                Some(s) if s == ctx.longpoll.me => handle(&ctx, id, op, settings).await,
                Some(s) if s < ctx.longpoll.shards.len() => remote(&ctx, s, id, op, settings).await,
                _ => gone(),
            }
        }
    };
    let _ = stream.write_all(&resp).await;
    let _ = stream.close().await;
}

fn gone() -> Vec<u8> {
    longpoll::error(404, "Not Found", "no such transport (closed, expired, or never opened)")
}

/// Passes a request to the shard that owns the transport.
async fn remote(ctx: &ConnCtx, shard: usize, id: &str, op: Op, settings: &Settings) -> Vec<u8> {
    let (tx, rx) = flume::bounded(1);
    let call = Call {
        id: id.to_owned(),
        op,
        settings: settings.clone(),
        reply: tx,
    };
    if ctx.longpoll.shards[shard].try_send(call).is_err() {
        ShardStats::inc(&ctx.stats.longpoll_refused);
        return longpoll::error(503, "Service Unavailable", "the transport's shard is overloaded");
    }
    ShardStats::inc(&ctx.stats.longpoll_forwarded);
    let wait = settings.poll_timeout + Duration::from_secs(5);
    match glommio::timer::timeout(wait, async { Ok(rx.recv_async().await) }).await {
        Ok(Ok(resp)) => resp,
        _ => longpoll::error(503, "Service Unavailable", "no answer from the transport's shard"),
    }
}

/// `<base>/open`: a new transport on this shard, and its session's
/// connection in the router.
fn open(ctx: &Rc<ConnCtx>, body: &[u8], mut info: TransportInfo, settings: &Settings) -> Vec<u8> {
    let (ser, batched) = match longpoll::choose_protocol(body) {
        Ok(p) => p,
        Err(e) => return longpoll::error(400, "Bad Request", &e),
    };
    let Some(slot) = ConnSlot::take(ctx) else {
        ShardStats::inc(&ctx.stats.connections_refused);
        return longpoll::error(503, "Service Unavailable", "connection limit reached");
    };
    let outbox = Rc::new(Outbox::new(ctx.limits().max_outbound_bytes));
    info.kind = TransportKind::LongPoll;
    info.serializer = ser;
    info.batched = batched;
    let conn = ctx.router.borrow_mut().open_connection(outbox.clone(), info);
    let id = longpoll::new_id(ctx.longpoll.me);
    let t = Rc::new(Transport {
        conn,
        outbox,
        ser,
        batched,
        pending: RefCell::new(VecDeque::new()),
        last_seen: Cell::new(Instant::now()),
        receiving: Cell::new(false),
        ended: Cell::new(false),
        _slot: slot,
    });
    ctx.longpoll.transports.borrow_mut().insert(id.clone(), t);
    ctx.stats.longpoll_transports.fetch_add(1, Ordering::Relaxed);
    glommio::spawn_local(expire(Rc::downgrade(ctx), id.clone(), settings.session_timeout)).detach();
    debug!(conn, transport = %id, "long-poll transport opened");
    let mut body = Vec::new();
    crate::codec::json::write_value(
        &mut body,
        &crate::wamp::Value::Dict(
            crate::wamp::Dict::new()
                .with(
                    "protocol",
                    crate::wamp::Value::Str(websocket::subprotocol_name(ser, batched).into()),
                )
                .with("transport", crate::wamp::Value::Str(id)),
        ),
    );
    longpoll::response(200, "OK", "application/json", &body)
}

/// Closes the transport once no request has touched it for `timeout`. It
/// holds the shard's context weakly: a shard that stops with this task
/// asleep must not be kept alive by it.
async fn expire(ctx: std::rc::Weak<ConnCtx>, id: String, timeout: Duration) {
    let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        glommio::timer::sleep(tick).await;
        let Some(ctx) = ctx.upgrade() else { return };
        let Some(t) = ctx.longpoll.get(&id) else { return };
        if !t.receiving.get() && t.last_seen.get().elapsed() >= timeout {
            debug!(transport = %id, "long-poll transport expired");
            ShardStats::inc(&ctx.stats.longpoll_expired);
            ctx.longpoll.remove(&ctx, &id);
            return;
        }
    }
}

/// A request for a transport of this shard.
async fn handle(ctx: &ConnCtx, id: &str, op: Op, settings: &Settings) -> Vec<u8> {
    let Some(t) = ctx.longpoll.get(id) else { return gone() };
    t.last_seen.set(Instant::now());
    match op {
        Op::Close => {
            ctx.longpoll.remove(ctx, id);
            longpoll::response(204, "No Content", "text/plain", b"")
        }
        Op::Send(body) => {
            if t.ended.get() || t.outbox.is_closing() {
                return gone();
            }
            if t.batched {
                let messages = match websocket::batch::split(t.ser, &body) {
                    Ok(m) => m,
                    Err(e) => return longpoll::error(400, "Bad Request", e),
                };
                for m in messages {
                    match m {
                        Ok(m) => deliver(ctx, t.conn, t.ser, &m),
                        Err(e) => return longpoll::error(400, "Bad Request", e),
                    }
                }
            } else {
                deliver(ctx, t.conn, t.ser, &body);
            }
            longpoll::response(204, "No Content", "text/plain", b"")
        }
        Op::Receive => {
            if t.receiving.replace(true) {
                return longpoll::error(409, "Conflict", "a receive is already waiting on this transport");
            }
            let resp = receive(&t, settings.poll_timeout).await;
            t.receiving.set(false);
            t.last_seen.set(Instant::now());
            match resp {
                Some(resp) => resp,
                None => {
                    ctx.longpoll.remove(ctx, id);
                    gone()
                }
            }
        }
    }
}

/// Waits up to `poll` for messages; `None` once the router closed the
/// transport and everything it sent was returned.
async fn receive(t: &Transport, poll: Duration) -> Option<Vec<u8>> {
    if t.pending.borrow().is_empty() && !t.ended.get() {
        let mut batch = Vec::new();
        let got = glommio::timer::timeout(poll, async { Ok(t.outbox.next_batch(&mut batch).await) }).await;
        match got {
            Ok(true) => {}
            Ok(false) => t.ended.set(true),
            Err(_) => {}
        }
        let mut pending = t.pending.borrow_mut();
        for item in batch {
            match item {
                Outgoing::Wamp(m) => pending.push_back(m),
                Outgoing::Close { .. } => t.ended.set(true),
                Outgoing::Ping(_) | Outgoing::Pong(_) => {}
            }
        }
    }
    let mut pending = t.pending.borrow_mut();
    if pending.is_empty() {
        return if t.ended.get() || t.outbox.is_closing() {
            None
        } else {
            Some(longpoll::response(204, "No Content", "text/plain", b""))
        };
    }
    let body: Vec<u8> = if t.batched {
        let mut out = Vec::new();
        for m in pending.drain(..) {
            websocket::batch::push(&mut out, t.ser, &m, websocket::batch::SEPARATOR);
        }
        out
    } else {
        pending.pop_front().map(|m| m.to_vec()).unwrap_or_default()
    };
    Some(longpoll::response(200, "OK", longpoll::content_type(t.ser), &body))
}

//! One connection's life: transport handshake, then a read loop that parses
//! every complete frame in the buffer and hands decoded messages to the
//! shard's router, and a writer task that frames and writes everything the
//! outbox holds in one syscall.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tracing::debug;

use super::handle::ConnCtx;
use super::outbox::{Outbox, Outgoing};
use crate::codec;
use crate::config::ListenerKind;
use crate::metrics::ShardStats;
use crate::router::{ConnId, TlsInfo, TransportInfo, TransportKind};
use crate::transport::deflate;
use crate::transport::rawsocket::{self, Handshake, RsEvent};
use crate::transport::websocket::{self, HttpRequest, WsDecoder, WsEvent};
use crate::transport::{read_more, write_control, write_message_header, Framing};
use crate::wamp::message::Serializer;

/// Smallest and largest read size; a connection's reads grow while they fill
/// the buffer and shrink when they don't, so idle sessions stay small.
const MIN_READ: usize = 256;
const MAX_READ: usize = 64 * 1024;

/// A listener's settings, as its connections need them.
pub struct Listener {
    pub kind: ListenerKind,
    pub path: Rc<str>,
    pub metrics: bool,
    /// A reload with new certificate files replaces it (for the
    /// connections accepted afterwards).
    pub tls: std::cell::RefCell<Option<std::sync::Arc<rustls::ServerConfig>>>,
    /// WebSocket compression offered on this listener.
    pub deflate: Option<crate::transport::deflate::Settings>,
    /// The HTTP long-poll transport, under its base path.
    pub longpoll: Option<crate::transport::longpoll::Settings>,
    /// The HTTP bridge, under its base path.
    pub bridge: Option<super::bridge::Settings>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Listener({:?}, tls: {})", self.kind, self.tls.borrow().is_some())
    }
}

/// A byte stream a connection runs over: TCP, or TLS above it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + 'static> Stream for T {}

/// What a connection knows of its socket before the transport handshake.
#[derive(Debug, Clone)]
struct Peer {
    addr: Option<std::net::SocketAddr>,
    tls: Option<std::sync::Arc<TlsInfo>>,
}

/// Serves one connection accepted on a WebSocket listener; `buf` holds what
/// was already read of it.
async fn serve_websocket<S: Stream>(ctx: Rc<ConnCtx>, mut stream: S, peer: Peer, listener: &Listener, mut buf: BytesMut) {
    let (path, metrics) = (listener.path.clone(), listener.metrics);
    // permessage-deflate while the router-wide budget has room for its
    // largest state
    let deflate = listener.deflate.as_ref().filter(|d| {
        let worst = deflate::Params {
            server_bits: d.max_window_bits,
            client_bits: 15,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
        };
        let used: i64 = ctx.all_stats.iter().map(|s| s.deflate_memory.load(Ordering::Relaxed)).sum();
        let room = used.max(0) as usize + worst.memory() <= ctx.limits().max_deflate_memory;
        if !room {
            ShardStats::inc(&ctx.stats.deflate_declined);
        }
        room
    });
    let posts = listener.longpoll.is_some() || listener.bridge.is_some();
    let handshake = async {
        loop {
            let to_bridge = listener.bridge.as_ref().is_some_and(|b| super::bridge::request_line_under(b, &buf));
            if (posts && buf.starts_with(b"POST ")) || to_bridge {
                return Ok(None);
            }
            match websocket::parse_request_with(&buf, &path, metrics, deflate) {
                Ok(Some(r)) => return Ok(Some(r)),
                Ok(None) => {}
                Err(reject) => return Err(Some(reject)),
            }
            match read_more(&mut stream, &mut buf, MIN_READ).await {
                Ok(0) | Err(_) => return Err(None),
                Ok(_) => {}
            }
        }
    };
    let result = glommio::timer::timeout(ctx.limits().handshake_timeout, async { Ok(handshake.await) }).await;
    let (request, consumed) = match result {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => {
            // a long-poll or bridge request (POST)
            let info = TransportInfo {
                kind: TransportKind::LongPoll,
                serializer: Serializer::Json,
                peer: peer.addr,
                tls: peer.tls,
                batched: false,
                compressed: false,
            };
            Box::pin(super::longpoll::serve(
                ctx,
                stream,
                info,
                buf,
                listener.longpoll.as_ref(),
                listener.bridge.as_ref(),
            ))
            .await;
            return;
        }
        Ok(Err(Some(reject))) => {
            debug!(status = reject.status, message = %reject.message, "WebSocket upgrade refused");
            let _ = stream.write_all(&reject.response()).await;
            let _ = stream.close().await;
            return;
        }
        Ok(Err(None)) => return,
        Err(_) => {
            debug!("WebSocket handshake timed out");
            ShardStats::inc(&ctx.stats.handshake_timeouts);
            return;
        }
    };
    buf.advance(consumed);
    match request {
        HttpRequest::Metrics => {
            let body = ShardStats::render(&ctx.all_stats);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                body
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.close().await;
        }
        HttpRequest::Upgrade {
            serializer,
            batched,
            deflate: negotiated,
            response,
        } => {
            if stream.write_all(&response).await.is_err() {
                return;
            }
            let wire = Wire {
                framing: Framing::WebSocket,
                ser: serializer,
                batched,
                deflate: negotiated.zip(deflate.copied()),
            };
            run(ctx, stream, peer, buf, wire, usize::MAX).await;
        }
    }
}

/// Serves one connection accepted on a RawSocket listener; `pre` holds what
/// was already read of it (the handshake or part of it, and anything a
/// client sent on without waiting for the reply).
async fn serve_rawsocket<S: Stream>(ctx: Rc<ConnCtx>, mut stream: S, peer: Peer, mut pre: BytesMut) {
    let mut hs = [0u8; 4];
    let have = pre.len().min(4);
    hs[..have].copy_from_slice(&pre[..have]);
    pre.advance(have);
    let read = glommio::timer::timeout(ctx.limits().handshake_timeout, async {
        Ok(stream.read_exact(&mut hs[have..]).await)
    })
    .await;
    match read {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return debug!("RawSocket handshake not completed"),
        Err(_) => {
            ShardStats::inc(&ctx.stats.handshake_timeouts);
            return debug!("RawSocket handshake timed out");
        }
    }
    match rawsocket::handshake(hs, ctx.limits().max_message_size) {
        Handshake::NotRawSocket => debug!("not a RawSocket client: connection dropped"),
        Handshake::Refuse { reply, reason } => {
            debug!(reason, "RawSocket handshake refused");
            let _ = stream.write_all(&reply).await;
            let _ = stream.close().await;
        }
        Handshake::Accept {
            serializer,
            reply,
            client_max,
        } => {
            if stream.write_all(&reply).await.is_err() {
                return;
            }
            let wire = Wire {
                framing: Framing::RawSocket,
                ser: serializer,
                batched: false,
                deflate: None,
            };
            if pre.capacity() < MIN_READ {
                pre.reserve(MIN_READ);
            }
            run(ctx, stream, peer, pre, wire, client_max).await;
        }
    }
}

/// One received transport frame, whatever the framing.
enum Frame {
    Message(bytes::Bytes),
    Ping(bytes::Bytes),
    Close { code: u16 },
    Error { code: u16, reason: &'static str },
}

fn next_frame(framing: Framing, ws: &mut WsDecoder, buf: &mut BytesMut, max: usize) -> Option<Frame> {
    match framing {
        Framing::WebSocket => match ws.decode(buf) {
            Ok(None) => None,
            Ok(Some(WsEvent::Message { data, .. })) => Some(Frame::Message(data)),
            Ok(Some(WsEvent::Ping(p))) => Some(Frame::Ping(p)),
            Ok(Some(WsEvent::Pong(_))) => next_frame(framing, ws, buf, max),
            Ok(Some(WsEvent::Close { code, .. })) => Some(Frame::Close { code }),
            Err(e) => Some(Frame::Error {
                code: e.code,
                reason: e.reason,
            }),
        },
        Framing::RawSocket => match rawsocket::decode(buf, max) {
            Ok(None) => None,
            Ok(Some(RsEvent::Message(m))) => Some(Frame::Message(m)),
            Ok(Some(RsEvent::Ping(p))) => Some(Frame::Ping(p)),
            Ok(Some(RsEvent::Pong(_))) => next_frame(framing, ws, buf, max),
            Err(e) => Some(Frame::Error { code: 0, reason: e.0 }),
        },
    }
}

/// How a connection's WAMP messages travel: framing, serializer, batching.
#[derive(Debug, Clone, Copy)]
struct Wire {
    framing: Framing,
    ser: Serializer,
    /// WAMP-over-Batched-WebSocket.
    batched: bool,
    /// permessage-deflate as negotiated, and the listener's settings.
    deflate: Option<(deflate::Params, deflate::Settings)>,
}

/// A connection's share of the permessage-deflate budget, given back when
/// it drops.
struct DeflateCharge {
    stats: std::sync::Arc<ShardStats>,
    bytes: i64,
}

impl Drop for DeflateCharge {
    fn drop(&mut self) {
        self.stats.deflate_memory.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Hands one received WAMP message to the router.
pub(super) fn deliver(ctx: &ConnCtx, conn: ConnId, ser: Serializer, data: &bytes::Bytes) {
    let decoded = codec::decode(ser, data);
    let mut router = ctx.router.borrow_mut();
    match decoded {
        Ok(msg) => router.on_message(conn, msg),
        Err(e) => router.protocol_violation(conn, &e.to_string()),
    }
}

async fn run<S: Stream>(ctx: Rc<ConnCtx>, stream: S, peer: Peer, mut buf: BytesMut, wire: Wire, peer_max: usize) {
    let Wire { framing, ser, batched, .. } = wire;
    let _charge = wire.deflate.map(|(p, _)| {
        let bytes = p.memory() as i64;
        ctx.stats.deflate_memory.fetch_add(bytes, Ordering::Relaxed);
        DeflateCharge {
            stats: ctx.stats.clone(),
            bytes,
        }
    });
    let outbox = Rc::new(Outbox::new(ctx.limits().max_outbound_bytes));
    outbox.set_max_message(peer_max);
    let transport = TransportInfo {
        kind: match framing {
            Framing::WebSocket => TransportKind::WebSocket,
            Framing::RawSocket => TransportKind::RawSocket,
        },
        serializer: ser,
        peer: peer.addr,
        tls: peer.tls,
        batched,
        compressed: wire.deflate.is_some(),
    };
    let conn = ctx.router.borrow_mut().open_connection(outbox.clone(), transport);
    // Leaves the router's tables on every way out of here, a panic included.
    let registered = Registered { ctx: &ctx, conn };
    let (mut reader, writer) = futures_lite::io::split(stream);
    let batch_max = if batched { ctx.limits().max_message_size.min(peer_max) } else { 0 };
    // the JSON batch separator the client uses, for the writer to answer with
    let separator = Rc::new(std::cell::Cell::new(websocket::batch::SEPARATOR));
    let writer_task = glommio::spawn_local(write_loop(
        writer,
        outbox.clone(),
        wire,
        (batch_max, separator.clone()),
        ctx.stats.clone(),
    ));
    let mut ws = match wire.deflate {
        Some((p, _)) => WsDecoder::with_inflater(ctx.limits().max_message_size, deflate::Inflater::new(&p)),
        None => WsDecoder::new(ctx.limits().max_message_size),
    };
    let mut chunk = MIN_READ;
    let mut ping_sent = false;

    'conn: loop {
        loop {
            // Backpressure: while any cross-shard queue of the router is over
            // capacity, handle no more frames (and read no more bytes).
            if ctx.congestion.active() {
                futures_lite::future::or(ctx.congestion.cleared(), outbox.closing_started()).await;
                if outbox.is_closing() {
                    break 'conn;
                }
            }
            let Some(frame) = next_frame(framing, &mut ws, &mut buf, ctx.limits().max_message_size) else {
                break;
            };
            match frame {
                Frame::Message(data) if batched => {
                    let failed = match websocket::batch::split(ser, &data) {
                        Ok(messages) => {
                            separator.set(messages.separator());
                            messages.take_while(|_| !outbox.is_closing()).find_map(|m| match m {
                                Ok(m) => {
                                    deliver(&ctx, conn, ser, &m);
                                    None
                                }
                                Err(reason) => Some(reason),
                            })
                        }
                        Err(reason) => Some(reason),
                    };
                    if let Some(reason) = failed {
                        debug!(conn, reason, "invalid batch");
                        outbox.replace_close(websocket::close::PROTOCOL_ERROR, reason);
                        break 'conn;
                    }
                }
                Frame::Message(data) => deliver(&ctx, conn, ser, &data),
                Frame::Ping(p) => outbox.push_control(Outgoing::Pong(p)),
                Frame::Close { code } => {
                    let code = if code == 1005 { websocket::close::NORMAL } else { code };
                    outbox.close(Some(Outgoing::Close { code, reason: "" }));
                    break 'conn;
                }
                Frame::Error { code, reason } => {
                    debug!(conn, reason, "transport error");
                    outbox.replace_close(code, reason);
                    break 'conn;
                }
            }
            if outbox.is_closing() {
                // The session was closed (ABORT): a transport error in what
                // was already received still decides the close code.
                validate_rest(framing, &mut ws, &mut buf, ctx.limits().max_message_size, &outbox);
                break 'conn;
            }
        }
        // A peer that always has more to read must not keep the shard to
        // itself: give the other tasks their turn once the time slice is up.
        glommio::yield_if_needed().await;
        // Nor while this peer has not taken what it was already sent.
        if outbox.over_limit() && !peer_keeps_up(&ctx, &outbox).await {
            debug!(conn, "the peer stopped reading: connection closed");
            ShardStats::inc(&ctx.stats.slow_consumers_disconnected);
            outbox.abort(Outgoing::Close {
                code: websocket::close::POLICY_VIOLATION,
                reason: "outbound queue full",
            });
            break;
        }
        let read = futures_lite::future::or(
            async { Wake::Read(read_more(&mut reader, &mut buf, chunk).await) },
            futures_lite::future::or(
                async {
                    outbox.closing_started().await;
                    Wake::Closing
                },
                async {
                    match ctx.limits().ping_interval {
                        Some(d) => glommio::timer::sleep(d).await,
                        None => futures_lite::future::pending::<()>().await,
                    }
                    Wake::Quiet
                },
            ),
        )
        .await;
        match read {
            Wake::Read(Ok(0)) | Wake::Read(Err(_)) | Wake::Closing => break,
            Wake::Quiet if ping_sent => {
                debug!(conn, "no answer to a ping: connection closed");
                ShardStats::inc(&ctx.stats.idle_closed);
                outbox.close(Some(Outgoing::Close {
                    code: websocket::close::GOING_AWAY,
                    reason: "ping timeout",
                }));
                break;
            }
            Wake::Quiet => {
                outbox.push_control(Outgoing::Ping(bytes::Bytes::from_static(b"switchyard")));
                ping_sent = true;
            }
            Wake::Read(Ok(n)) => {
                ping_sent = false;
                if n == chunk {
                    chunk = (chunk * 2).min(MAX_READ);
                } else if n < chunk / 4 {
                    chunk = (chunk / 2).max(MIN_READ);
                }
            }
        }
    }
    drop(registered);
    outbox.close(None);
    // A peer that reads nothing cannot be flushed to: after the grace period
    // the writer is dropped, which cancels it.
    let _ = glommio::timer::timeout(ctx.limits().shutdown_grace, async {
        writer_task.await;
        Ok(())
    })
    .await;
    drop(reader);
    debug!(conn, "connection closed");
}

/// Checks the frames left in the buffer of a connection that is closing; the
/// first transport error among them replaces the close code chosen.
fn validate_rest(framing: Framing, ws: &mut WsDecoder, buf: &mut BytesMut, max: usize, outbox: &Outbox) {
    while let Some(frame) = next_frame(framing, ws, buf, max) {
        match frame {
            Frame::Error { code, reason } => return outbox.replace_close(code, reason),
            Frame::Close { .. } => return,
            Frame::Message(_) | Frame::Ping(_) => {}
        }
    }
}

/// Waits until the outbox is back under its byte limit. False if the peer
/// took nothing at all for a whole ping interval while it was over: it has
/// stopped reading (or vanished), and its connection is closed.
async fn peer_keeps_up(ctx: &ConnCtx, outbox: &Outbox) -> bool {
    let mut taken = outbox.taken();
    loop {
        let below = futures_lite::future::or(
            async {
                outbox.below_limit().await;
                true
            },
            async {
                match ctx.limits().ping_interval {
                    Some(d) => glommio::timer::sleep(d).await,
                    None => futures_lite::future::pending::<()>().await,
                }
                false
            },
        )
        .await;
        if below {
            return true;
        }
        if outbox.taken() == taken {
            return false;
        }
        taken = outbox.taken();
    }
}

/// What woke the read loop.
enum Wake {
    Read(std::io::Result<usize>),
    Closing,
    Quiet,
}

/// A connection known to the router; dropping it (normally or while a panic
/// unwinds) makes its session leave.
struct Registered<'a> {
    ctx: &'a ConnCtx,
    conn: ConnId,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Ok(mut router) = self.ctx.router.try_borrow_mut() {
            router.close_connection(self.conn);
        }
    }
}

/// Holds one of the shard's and the router's connection slots.
pub struct ConnSlot {
    ctx: Rc<ConnCtx>,
}

impl ConnSlot {
    /// Takes a slot, or `None` when a connection limit is reached.
    pub fn take(ctx: &Rc<ConnCtx>) -> Option<ConnSlot> {
        let global = ctx.open_connections.fetch_add(1, Ordering::AcqRel) + 1;
        let local = ctx.stats.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = ConnSlot { ctx: ctx.clone() };
        let over_global = ctx.limits().max_connections > 0 && global > ctx.limits().max_connections;
        let over_local = ctx.limits().max_connections_per_shard > 0 && local as usize > ctx.limits().max_connections_per_shard;
        if over_global || over_local {
            return None; // the slot is given back as it drops
        }
        Some(slot)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.ctx.open_connections.fetch_sub(1, Ordering::AcqRel);
        self.ctx.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnSlot")
    }
}

/// Serves one accepted connection (TCP, or a Unix socket with no `addr`)
/// within its slot; a panic in it is caught and counted, and the shard and
/// every other connection carry on.
pub async fn serve<S: Stream>(ctx: Rc<ConnCtx>, stream: S, addr: Option<std::net::SocketAddr>, listener: Rc<Listener>) {
    let Some(slot) = ConnSlot::take(&ctx) else {
        ShardStats::inc(&ctx.stats.connections_refused);
        debug!("connection refused: connection limit reached");
        return refuse(stream, listener.kind).await;
    };
    let tls = listener.tls.borrow().clone();
    // Each way of serving is boxed on its own: a task's future is as large as
    // its largest state, so with these inline every plain connection would
    // carry the space of a TLS handshake and of an HTTP request for its whole
    // life (20 KB a connection, against the 4 KiB an idle session may cost).
    let work = async {
        match &tls {
            None => Box::pin(serve_on(ctx.clone(), stream, Peer { addr, tls: None }, &listener)).await,
            Some(config) => {
                Box::pin(async {
                    let accept = futures_rustls::TlsAcceptor::from(config.clone()).accept(stream);
                    let tls = match glommio::timer::timeout(ctx.limits().handshake_timeout, async { Ok(accept.await) }).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            ShardStats::inc(&ctx.stats.tls_handshakes_failed);
                            return debug!(error = %e, ?addr, "TLS handshake failed");
                        }
                        Err(_) => {
                            ShardStats::inc(&ctx.stats.handshake_timeouts);
                            return debug!(?addr, "TLS handshake timed out");
                        }
                    };
                    let info = crate::transport::tls::info(tls.get_ref().1);
                    let peer = Peer {
                        addr,
                        tls: Some(std::sync::Arc::new(info)),
                    };
                    serve_on(ctx.clone(), tls, peer, &listener).await
                })
                .await
            }
        }
    };
    if futures_lite::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(work))
        .await
        .is_err()
    {
        ShardStats::inc(&ctx.stats.panics);
        tracing::error!("a connection task panicked; the connection was dropped and the shard carries on");
    }
    drop(slot);
}

async fn serve_on<S: Stream>(ctx: Rc<ConnCtx>, stream: S, peer: Peer, listener: &Listener) {
    match listener.kind {
        ListenerKind::Websocket => Box::pin(serve_websocket(ctx, stream, peer, listener, BytesMut::with_capacity(MIN_READ))).await,
        ListenerKind::Rawsocket => Box::pin(serve_rawsocket(ctx, stream, peer, BytesMut::new())).await,
        ListenerKind::Universal => Box::pin(serve_universal(ctx, stream, peer, listener)).await,
    }
}

/// Serves a connection on a universal listener: the first octet tells a
/// RawSocket client (0x7F, which no HTTP request starts with) from HTTP
/// (a WebSocket upgrade, or a plain request such as `GET /metrics`).
async fn serve_universal<S: Stream>(ctx: Rc<ConnCtx>, mut stream: S, peer: Peer, listener: &Listener) {
    let mut buf = BytesMut::with_capacity(MIN_READ);
    let first = glommio::timer::timeout(ctx.limits().handshake_timeout, async {
        Ok(read_more(&mut stream, &mut buf, MIN_READ).await)
    })
    .await;
    match first {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return debug!("connection closed before its first byte"),
        Err(_) => {
            ShardStats::inc(&ctx.stats.handshake_timeouts);
            return debug!("no first byte within the handshake timeout");
        }
    }
    if buf[0] == rawsocket::MAGIC {
        Box::pin(serve_rawsocket(ctx, stream, peer, buf)).await
    } else {
        Box::pin(serve_websocket(ctx, stream, peer, listener, buf)).await
    }
}

/// Tells a client over the connection limit why it is turned away.
async fn refuse<S: Stream>(mut stream: S, kind: ListenerKind) {
    let reply: &[u8] = match kind {
        ListenerKind::Websocket | ListenerKind::Universal => {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 25\r\nConnection: close\r\n\r\nconnection limit reached\n"
        }
        ListenerKind::Rawsocket => &[rawsocket::MAGIC, rawsocket::handshake_error::MAX_CONNECTIONS << 4, 0, 0],
    };
    let _ = glommio::timer::timeout(Duration::from_secs(1), async { Ok(stream.write_all(reply).await) }).await;
    let _ = stream.close().await;
}

/// Frames one WAMP message (or batch), compressed when the connection
/// negotiated permessage-deflate and the message is long enough.
fn frame(out: &mut Vec<u8>, wire: &Wire, deflater: &mut Option<Deflate>, msg: &[u8]) {
    if let Some(d) = deflater.as_mut().filter(|d| msg.len() >= d.threshold) {
        d.scratch.clear();
        // made at the first message worth compressing: a connection that
        // never sends one never holds a compressor
        let (params, threshold, level) = (d.params, d.threshold, d.level);
        let deflater = d.deflater.get_or_insert_with(|| deflate::Deflater::new(&params, threshold, level));
        if deflater.compress(msg, &mut d.scratch) {
            let op = match wire.ser {
                Serializer::Json => websocket::opcode::TEXT,
                Serializer::MsgPack | Serializer::Cbor => websocket::opcode::BINARY,
            };
            websocket::write_header_flags(out, op, true, d.scratch.len());
            out.extend_from_slice(&d.scratch);
            ShardStats::inc(&d.stats.deflate_messages);
            return;
        }
    }
    write_message_header(out, wire.framing, wire.ser, msg.len());
    out.extend_from_slice(msg);
}

/// A writer's compressor and its buffer.
struct Deflate {
    params: deflate::Params,
    threshold: usize,
    level: u32,
    deflater: Option<deflate::Deflater>,
    scratch: Vec<u8>,
    stats: std::sync::Arc<ShardStats>,
}

/// Writes a run of WAMP messages as batches (WAMP-over-Batched-WebSocket),
/// each one WebSocket message of at most `max` bytes unless a single message
/// is larger on its own.
fn write_batches(
    out: &mut Vec<u8>,
    wire: &Wire,
    deflater: &mut Option<Deflate>,
    messages: &[bytes::Bytes],
    batching: (usize, u8, &mut Vec<u8>),
) {
    let (max, separator, batch) = batching;
    let ser = wire.ser;
    let overhead = websocket::batch::overhead(ser);
    let mut rest = messages;
    while !rest.is_empty() {
        let mut len = 0;
        let n = rest
            .iter()
            .take_while(|m| {
                let next = len + m.len() + overhead;
                let fits = len == 0 || next <= max;
                if fits {
                    len = next;
                }
                fits
            })
            .count();
        batch.clear();
        batch.reserve(len);
        for m in &rest[..n] {
            websocket::batch::push(batch, ser, m, separator);
        }
        frame(out, wire, deflater, batch);
        rest = &rest[n..];
    }
}

/// Writes what the outbox holds. With `batch_max` > 0 (a batched WebSocket),
/// the WAMP messages queued together go out in as few WebSocket messages as
/// fit in `batch_max` bytes each, JSON ones ended by `separator`.
async fn write_loop<S: Stream>(
    mut w: WriteHalf<S>,
    outbox: Rc<Outbox>,
    wire: Wire,
    batching: (usize, Rc<std::cell::Cell<u8>>),
    stats: std::sync::Arc<ShardStats>,
) {
    let (batch_max, separator) = batching;
    let framing = wire.framing;
    let mut deflater = wire.deflate.map(|(params, settings)| Deflate {
        params,
        threshold: settings.threshold,
        level: settings.level,
        deflater: None,
        scratch: Vec::new(),
        stats,
    });
    let mut batch = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut run: Vec<bytes::Bytes> = Vec::new();
    // one batch being built, reused from turn to turn
    let mut batch_buf: Vec<u8> = Vec::new();
    'write: while outbox.next_batch(&mut batch).await {
        out.clear();
        let mut close_after = false;
        for item in batch.drain(..) {
            if batch_max > 0 {
                if let Outgoing::Wamp(m) = item {
                    run.push(m);
                    continue;
                }
                write_batches(&mut out, &wire, &mut deflater, &run, (batch_max, separator.get(), &mut batch_buf));
                run.clear();
            }
            match item {
                Outgoing::Wamp(m) => frame(&mut out, &wire, &mut deflater, &m),
                Outgoing::Ping(p) => write_control(&mut out, framing, false, &p),
                Outgoing::Pong(p) => write_control(&mut out, framing, true, &p),
                Outgoing::Close { code, reason } => {
                    if framing == Framing::WebSocket && code != 0 {
                        websocket::write_close(&mut out, code, reason);
                    }
                    close_after = true;
                    break;
                }
            }
        }
        if !run.is_empty() {
            write_batches(&mut out, &wire, &mut deflater, &run, (batch_max, separator.get(), &mut batch_buf));
            run.clear();
        }
        let written = futures_lite::future::or(async { w.write_all(&out).await.is_ok() }, async {
            outbox.killed().await;
            false
        })
        .await;
        if !written {
            break 'write;
        }
        if close_after {
            break;
        }
        if out.capacity() > 1024 * 1024 {
            out = Vec::new();
        }
        if batch_buf.capacity() > 1024 * 1024 {
            batch_buf = Vec::new();
        }
    }
    let _ = w.close().await;
    outbox.close(None);
}

//! A minimal WAMP client transport for load generation: WebSocket (client
//! side, masked frames) and RawSocket over TCP, on glommio, with the router's
//! own codec for messages.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::net::TcpStream;
use switchyard::codec::{self, MsgWriter};
use switchyard::transport::{rawsocket, read_more, websocket, Framing};
use switchyard::wamp::message::Serializer;
use switchyard::wamp::{Dict, MessageType, Value};

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub framing: Framing,
    pub host: String,
    pub path: String,
    /// TLS (`wss://`, `rss://`): the client configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// WAMP-over-Batched-WebSocket (`wamp.2.*.batched`).
    pub batched: bool,
}

/// A byte stream: TCP, or TLS above it.
pub trait Io: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin {}
impl<T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin> Io for T {}

impl std::fmt::Debug for dyn Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Io")
    }
}

/// A TLS client configuration that trusts the CAs in the PEM file `ca`.
pub fn tls_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        let c = c.map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Parses `ws://host:port/path` or `rs://host:port` (also `tcp://`).
pub fn parse_url(url: &str) -> Result<Target, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("'{url}' is not a URL like ws://127.0.0.1:8080/ws or rs://127.0.0.1:8081"))?;
    let framing = match scheme {
        "ws" | "wss" => Framing::WebSocket,
        "rs" | "rss" | "tcp" | "rawsocket" => Framing::RawSocket,
        other => return Err(format!("unsupported scheme '{other}' (use ws://, wss://, rs:// or rss://)")),
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{hostport}': {e}"))?
        .next()
        .ok_or_else(|| format!("'{hostport}' resolves to no address"))?;
    Ok(Target {
        addr,
        framing,
        host: hostport.to_owned(),
        path: path.to_owned(),
        tls: None,
        batched: false,
    })
}

/// The receiving half of a connection.
#[derive(Debug)]
pub struct Reader {
    r: ReadHalf<Box<dyn Io>>,
    buf: BytesMut,
    framing: Framing,
    /// Batched WebSocket: the messages of a batch not yet taken.
    batch: Option<(Serializer, std::collections::VecDeque<Bytes>)>,
}

/// The sending half of a connection; messages are framed into one buffer and
/// written together by [`Writer::flush`].
#[derive(Debug)]
pub struct Writer {
    w: WriteHalf<Box<dyn Io>>,
    framing: Framing,
    opcode: u8,
    out: Vec<u8>,
    mask: [u8; 4],
    /// Batched WebSocket: the serializer, and the batch being built (sent as
    /// one WebSocket message at the next flush).
    batch: Option<(Serializer, Vec<u8>)>,
}

fn proto_err(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Opens a connection and completes the transport handshake.
pub async fn connect(target: &Target, ser: Serializer) -> io::Result<(Reader, Writer)> {
    let tcp = TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    let mut stream: Box<dyn Io> = match &target.tls {
        None => Box::new(tcp),
        Some(config) => {
            let host = target.host.rsplit_once(':').map_or(target.host.as_str(), |(h, _)| h).to_owned();
            let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| proto_err(e.to_string()))?;
            Box::new(futures_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await?)
        }
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    match target.framing {
        Framing::WebSocket => {
            let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, rand::random::<[u8; 16]>());
            let req = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
                target.path,
                target.host,
                websocket::subprotocol_name(ser, target.batched)
            );
            stream.write_all(req.as_bytes()).await?;
            let end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if buf.len() > 16 * 1024 {
                    return Err(proto_err("HTTP response too large"));
                }
                if read_more(&mut stream, &mut buf, READ_CHUNK).await? == 0 {
                    return Err(proto_err("connection closed during the WebSocket handshake"));
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status = head.lines().next().unwrap_or("");
            if !status.contains(" 101 ") {
                return Err(proto_err(format!("WebSocket upgrade refused: {status}")));
            }
            let accept = websocket::accept_key(&key);
            if !head.contains(&accept) {
                return Err(proto_err("bad Sec-WebSocket-Accept"));
            }
            buf.advance(end);
        }
        Framing::RawSocket => {
            let s = rawsocket::serializer_code(ser);
            stream.write_all(&[rawsocket::MAGIC, 0xF0 | s, 0, 0]).await?;
            let mut reply = [0u8; 4];
            stream.read_exact(&mut reply).await?;
            if reply[0] != rawsocket::MAGIC || reply[1] & 0x0f != s {
                return Err(proto_err(format!("RawSocket handshake refused (error {})", reply[1] >> 4)));
            }
        }
    }
    let (r, w) = futures_lite::io::split(stream);
    Ok((
        Reader {
            r,
            buf,
            framing: target.framing,
            batch: target.batched.then(|| (ser, std::collections::VecDeque::new())),
        },
        Writer {
            w,
            framing: target.framing,
            opcode: match ser {
                Serializer::Json => websocket::opcode::TEXT,
                Serializer::MsgPack | Serializer::Cbor => websocket::opcode::BINARY,
            },
            out: Vec::with_capacity(4096),
            mask: rand::random(),
            batch: target.batched.then(|| (ser, Vec::new())),
        },
    ))
}

/// Bytes asked for per read.
const READ_CHUNK: usize = 16 * 1024;

impl Reader {
    /// The next complete message already in the buffer, if any.
    pub fn try_next(&mut self) -> io::Result<Option<Bytes>> {
        if let Some((_, pending)) = &mut self.batch {
            if let Some(m) = pending.pop_front() {
                return Ok(Some(m));
            }
        }
        loop {
            match self.framing {
                Framing::RawSocket => {
                    if self.buf.len() < 4 {
                        return Ok(None);
                    }
                    let kind = self.buf[0] & 7;
                    let len = u32::from_be_bytes([0, self.buf[1], self.buf[2], self.buf[3]]) as usize;
                    if self.buf.len() < 4 + len {
                        return Ok(None);
                    }
                    self.buf.advance(4);
                    let data = self.buf.split_to(len).freeze();
                    if kind == rawsocket::frame_type::WAMP {
                        return Ok(Some(data));
                    }
                }
                Framing::WebSocket => {
                    if self.buf.len() < 2 {
                        return Ok(None);
                    }
                    let op = self.buf[0] & 0x0f;
                    let (len, h) = match self.buf[1] & 0x7f {
                        126 if self.buf.len() >= 4 => (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4),
                        127 if self.buf.len() >= 10 => {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(&self.buf[2..10]);
                            (u64::from_be_bytes(b) as usize, 10)
                        }
                        126 | 127 => return Ok(None),
                        l => (l as usize, 2),
                    };
                    if self.buf.len() < h + len {
                        return Ok(None);
                    }
                    self.buf.advance(h);
                    let data = self.buf.split_to(len).freeze();
                    match op {
                        0x1 | 0x2 => {
                            let Some((ser, pending)) = &mut self.batch else {
                                return Ok(Some(data));
                            };
                            for m in websocket::batch::split(*ser, &data).map_err(proto_err)? {
                                pending.push_back(m.map_err(proto_err)?);
                            }
                            if let Some(m) = pending.pop_front() {
                                return Ok(Some(m));
                            }
                        }
                        0x8 => return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "router closed the WebSocket")),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Waits for the next message; an error at end of stream.
    pub async fn next(&mut self) -> io::Result<Bytes> {
        loop {
            if let Some(m) = self.try_next()? {
                return Ok(m);
            }
            if read_more(&mut self.r, &mut self.buf, READ_CHUNK).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "router closed the connection"));
            }
        }
    }
}

impl Writer {
    /// Frames `msg` into the pending buffer.
    pub fn queue(&mut self, msg: &[u8]) {
        if let Some((ser, batch)) = &mut self.batch {
            websocket::batch::push(batch, *ser, msg, websocket::batch::SEPARATOR);
            return;
        }
        self.frame(msg);
    }

    fn frame(&mut self, msg: &[u8]) {
        match self.framing {
            Framing::RawSocket => rawsocket::write_header(&mut self.out, rawsocket::frame_type::WAMP, msg.len()),
            Framing::WebSocket => {
                // client frames are masked
                let start = self.out.len();
                websocket::write_header(&mut self.out, self.opcode, msg.len());
                self.out[start + 1] |= 0x80;
                self.out.extend_from_slice(&self.mask);
                let base = self.out.len();
                self.out.extend_from_slice(msg);
                for (i, b) in self.out[base..].iter_mut().enumerate() {
                    *b ^= self.mask[i & 3];
                }
                return;
            }
        }
        self.out.extend_from_slice(msg);
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if let Some((_, batch)) = &mut self.batch {
            if !batch.is_empty() {
                let b = std::mem::take(batch);
                self.frame(&b);
                if let Some((_, batch)) = &mut self.batch {
                    *batch = b;
                    batch.clear();
                }
            }
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.w.write_all(&self.out).await;
        self.out.clear();
        r
    }

    /// Queues and writes one message.
    pub async fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.queue(msg);
        self.flush().await
    }

    /// Closes the write side.
    pub async fn close(&mut self) {
        let _ = self.w.close().await;
    }
}

/// A parsed message from the router: its code and elements.
pub fn parse(ser: Serializer, msg: &[u8]) -> io::Result<(u64, Vec<Value>)> {
    match codec::parse_value(ser, msg) {
        Ok(Value::List(items)) => match items.first() {
            Some(Value::UInt(code)) => Ok((*code, items)),
            _ => Err(proto_err("message without a type code")),
        },
        Ok(_) => Err(proto_err("message is not a list")),
        Err(e) => Err(proto_err(format!("undecodable message: {e}"))),
    }
}

/// What the hot paths of the scenarios read from a message, without
/// building a value tree: the type code, the request ID where there is one,
/// the raw arguments span, and the first three unsigned integers of the
/// arguments (the load generator's `[sender, seq, timestamp, ...]`).
#[derive(Debug)]
pub struct Peek {
    pub code: u64,
    pub request: u64,
    pub payload: switchyard::wamp::Payload,
    pub stamp: Option<[u64; 3]>,
}

macro_rules! peek_with {
    ($reader:expr, $ser:expr, $frame:expr) => {{
        let r = &mut $reader;
        r.list_start().ok()?;
        let code = r.u64().ok()?;
        // elements before the arguments: [type, ...ids..., dict]
        let (ids, has_request) = match code {
            36 => (2, false), // EVENT: subscription, publication, details
            50 => (1, true),  // RESULT: request, details
            68 => (2, true),  // INVOCATION: request, registration, details
            _ => {
                return Some(Peek {
                    code,
                    request: 0,
                    payload: switchyard::wamp::Payload::empty($ser),
                    stamp: None,
                })
            }
        };
        let first = r.u64().ok()?;
        for _ in 1..ids {
            r.u64().ok()?;
        }
        r.dict().ok()?;
        let (count, raw) = r.payload($frame, false).ok()?;
        Some(Peek {
            code,
            request: if has_request { first } else { 0 },
            stamp: stamp($ser, &raw),
            payload: switchyard::wamp::Payload {
                serializer: $ser,
                count,
                raw,
            },
        })
    }};
}

fn stamp(ser: Serializer, raw: &[u8]) -> Option<[u64; 3]> {
    let mut out = [0u64; 3];
    macro_rules! read {
        ($r:expr) => {{
            let mut r = $r;
            r.list_start().ok()?;
            for v in &mut out {
                *v = r.u64().ok()?;
            }
        }};
    }
    match ser {
        Serializer::Json => read!(codec::json::JsonReader::new(raw)),
        Serializer::MsgPack => read!(codec::msgpack::MsgPackReader::new(raw)),
        Serializer::Cbor => read!(codec::cbor::CborReader::new(raw)),
    }
    Some(out)
}

/// Reads a message's code, request ID, arguments span and stamp.
pub fn peek(ser: Serializer, frame: &Bytes) -> Option<Peek> {
    match ser {
        Serializer::Json => peek_with!(codec::json::JsonReader::new(frame), ser, frame),
        Serializer::MsgPack => peek_with!(codec::msgpack::MsgPackReader::new(frame), ser, frame),
        Serializer::Cbor => peek_with!(codec::cbor::CborReader::new(frame), ser, frame),
    }
}

/// Builders for the messages a client sends.
pub mod msg {
    use super::*;

    fn roles() -> Dict {
        let empty = || Value::Dict(Dict::new());
        Dict::new().with(
            "roles",
            Value::Dict(
                Dict::new()
                    .with("publisher", empty())
                    .with("subscriber", empty())
                    .with("caller", empty())
                    .with("callee", empty()),
            ),
        )
    }

    pub fn hello(ser: Serializer, realm: &str) -> Bytes {
        let mut w = MsgWriter::new(ser, 3, MessageType::Hello, 128);
        w.str(realm).dict(&roles());
        w.finish()
    }

    /// HELLO asking for WAMP-Ticket as `authid`.
    pub fn hello_ticket(ser: Serializer, realm: &str, authid: &str) -> Bytes {
        let details = roles()
            .with("authmethods", Value::List(vec![Value::Str("ticket".into())]))
            .with("authid", Value::Str(authid.into()));
        let mut w = MsgWriter::new(ser, 3, MessageType::Hello, 160);
        w.str(realm).dict(&details);
        w.finish()
    }

    pub fn authenticate(ser: Serializer, signature: &str) -> Bytes {
        let mut w = MsgWriter::new(ser, 3, MessageType::Authenticate, 64);
        w.str(signature).dict(&Dict::new());
        w.finish()
    }

    pub fn goodbye(ser: Serializer) -> Bytes {
        let mut w = MsgWriter::new(ser, 3, MessageType::Goodbye, 32);
        w.dict(&Dict::new()).str("wamp.close.normal");
        w.finish()
    }

    pub fn subscribe(ser: Serializer, request: u64, topic: &str) -> Bytes {
        let mut w = MsgWriter::new(ser, 4, MessageType::Subscribe, 64);
        w.uint(request).dict(&Dict::new()).str(topic);
        w.finish()
    }

    pub fn register(ser: Serializer, request: u64, procedure: &str) -> Bytes {
        let mut w = MsgWriter::new(ser, 4, MessageType::Register, 64);
        w.uint(request).dict(&Dict::new()).str(procedure);
        w.finish()
    }

    /// `[PUBLISH, request, {acknowledge?}, topic, args]`
    pub fn publish(ser: Serializer, request: u64, topic: &str, acknowledge: bool, args: &Value) -> Bytes {
        let mut w = MsgWriter::new(ser, 5, MessageType::Publish, 128);
        let opts = if acknowledge {
            Dict::new().with("acknowledge", Value::Bool(true))
        } else {
            Dict::new()
        };
        w.uint(request).dict(&opts).str(topic).value(args);
        w.finish()
    }

    /// `[CALL, request, {}, procedure, args]`
    pub fn call(ser: Serializer, request: u64, procedure: &str, args: &Value) -> Bytes {
        let mut w = MsgWriter::new(ser, 5, MessageType::Call, 128);
        w.uint(request).dict(&Dict::new()).str(procedure).value(args);
        w.finish()
    }

    /// `[YIELD, request, {}, args...]` with the arguments spliced as received.
    pub fn yield_raw(request: u64, payload: &switchyard::wamp::Payload) -> Bytes {
        let mut w = MsgWriter::new(
            payload.serializer,
            3 + payload.count as u32,
            MessageType::Yield,
            32 + payload.raw.len(),
        );
        w.uint(request).dict(&Dict::new()).payload(payload);
        w.finish()
    }
}

//! WebSocket (RFC 6455) server side, without I/O: the HTTP/1.1 upgrade and
//! the frame codec. Frames are parsed in place in the connection's read
//! buffer, unmasked there and split off as `Bytes`.

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use sha1::{Digest, Sha1};

use crate::wamp::message::Serializer;

/// Largest HTTP upgrade request accepted.
pub const MAX_HANDSHAKE: usize = 8192;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What an HTTP request on the WebSocket listener asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpRequest {
    /// A valid WebSocket upgrade to a WAMP subprotocol.
    Upgrade {
        serializer: Serializer,
        /// WAMP-over-Batched-WebSocket (`wamp.2.*.batched`): every WebSocket
        /// message holds one or more WAMP messages (see [`batch`]).
        batched: bool,
        /// permessage-deflate, when negotiated.
        deflate: Option<super::deflate::Params>,
        /// The response to send (101 Switching Protocols).
        response: Vec<u8>,
    },
    /// `GET /metrics`: the Prometheus text exposition.
    Metrics,
}

/// An HTTP request that is refused, with the response that says why.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpReject {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
}

impl HttpReject {
    fn new(status: u16, reason: &'static str, message: impl Into<String>) -> Self {
        HttpReject {
            status,
            reason,
            message: message.into(),
        }
    }

    /// The full HTTP response.
    pub fn response(&self) -> Vec<u8> {
        let mut extra = String::new();
        if self.status == 426 {
            extra.push_str("Sec-WebSocket-Version: 13\r\n");
        }
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n{}\n",
            self.status,
            self.reason,
            self.message.len() + 1,
            extra,
            self.message
        )
        .into_bytes()
    }
}

fn header<'a>(req: &'a httparse::Request, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
}

fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Parses an HTTP request from the start of `buf`. `Ok(None)` means more
/// bytes are needed; on success also returns the length of the request.
pub fn parse_request(buf: &[u8], path: &str, metrics: bool) -> Result<Option<(HttpRequest, usize)>, HttpReject> {
    parse_request_with(buf, path, metrics, None)
}

/// [`parse_request`] on a listener that offers permessage-deflate with
/// `deflate` (`None`: not offered, or not now).
pub fn parse_request_with(
    buf: &[u8],
    path: &str,
    metrics: bool,
    deflate: Option<&super::deflate::Settings>,
) -> Result<Option<(HttpRequest, usize)>, HttpReject> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_HANDSHAKE {
                return Err(HttpReject::new(431, "Request Header Fields Too Large", "request header too large"));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpReject::new(431, "Request Header Fields Too Large", "too many headers"));
        }
        Err(e) => return Err(HttpReject::new(400, "Bad Request", format!("malformed HTTP request: {e}"))),
    };
    if req.method != Some("GET") {
        return Err(HttpReject::new(405, "Method Not Allowed", "only GET is served here"));
    }
    let target = req.path.unwrap_or("");
    let target_path = target.split('?').next().unwrap_or("");
    let upgrade = has_token(header(&req, "Upgrade"), "websocket");
    if metrics && target_path == "/metrics" && !upgrade {
        return Ok(Some((HttpRequest::Metrics, len)));
    }
    if target_path != path {
        return Err(HttpReject::new(
            404,
            "Not Found",
            format!("no WebSocket endpoint at {target_path}; WAMP is served at {path}"),
        ));
    }
    if !upgrade || !has_token(header(&req, "Connection"), "upgrade") {
        return Err(HttpReject::new(
            426,
            "Upgrade Required",
            "this endpoint speaks WAMP over WebSocket only",
        ));
    }
    if header(&req, "Sec-WebSocket-Version").map(str::trim) != Some("13") {
        return Err(HttpReject::new(426, "Upgrade Required", "unsupported WebSocket version; use 13"));
    }
    let key = header(&req, "Sec-WebSocket-Key").map(str::trim).unwrap_or("");
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(k) if k.len() == 16 => {}
        _ => return Err(HttpReject::new(400, "Bad Request", "missing or invalid Sec-WebSocket-Key")),
    }
    let offered: Vec<&str> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Protocol"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // the client's first choice among those this router speaks
    let chosen = offered.iter().find_map(|p| subprotocol(p));
    let Some((serializer, batched)) = chosen else {
        return Err(HttpReject::new(
            400,
            "Bad Request",
            format!(
                "no supported WAMP subprotocol offered ({}); this router speaks {}",
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                },
                SUBPROTOCOLS.map(|(name, _, _)| name).join(", ")
            ),
        ));
    };
    let accept = accept_key(key);
    let negotiated = deflate.and_then(|settings| {
        let offers = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
            .filter_map(|h| std::str::from_utf8(h.value).ok());
        super::deflate::negotiate(offers, settings)
    });
    let extension = negotiated
        .as_ref()
        .map(|(_, h)| format!("Sec-WebSocket-Extensions: {h}\r\n"))
        .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {}\r\n{extension}Server: switchyard\r\n\r\n",
        subprotocol_name(serializer, batched)
    )
    .into_bytes();
    Ok(Some((
        HttpRequest::Upgrade {
            serializer,
            batched,
            deflate: negotiated.map(|(p, _)| p),
            response,
        },
        len,
    )))
}

/// Every WAMP subprotocol this router speaks: name, serializer, batched.
pub const SUBPROTOCOLS: [(&str, Serializer, bool); 6] = [
    ("wamp.2.json", Serializer::Json, false),
    ("wamp.2.msgpack", Serializer::MsgPack, false),
    ("wamp.2.cbor", Serializer::Cbor, false),
    ("wamp.2.json.batched", Serializer::Json, true),
    ("wamp.2.msgpack.batched", Serializer::MsgPack, true),
    ("wamp.2.cbor.batched", Serializer::Cbor, true),
];

/// The serializer and batching of a WAMP subprotocol name.
pub fn subprotocol(name: &str) -> Option<(Serializer, bool)> {
    SUBPROTOCOLS.iter().find(|(n, _, _)| *n == name).map(|&(_, s, b)| (s, b))
}

/// The subprotocol name for a serializer, batched or not.
pub fn subprotocol_name(ser: Serializer, batched: bool) -> &'static str {
    SUBPROTOCOLS
        .iter()
        .find(|&&(_, s, b)| s == ser && b == batched)
        .map_or("wamp.2.json", |(n, _, _)| n)
}

/// WAMP-over-Batched-WebSocket framing: JSON messages each followed by a
/// separator octet; MessagePack and CBOR messages each after a 32-bit
/// big-endian length.
///
/// The spec names the separator "`\30` (record separator), octet 0x1e";
/// autobahn-python (and so Crossbar) writes the Python literal `b'\30'`,
/// which is octal: 0x18. Neither octet may stand unescaped in JSON text, so
/// a received batch is split on whichever of the two ends it, and the router
/// answers with the one its client uses (0x1e until it has seen one).
pub mod batch {
    use bytes::Bytes;

    use crate::wamp::message::Serializer;

    /// The record separator of the spec.
    pub const SEPARATOR: u8 = 0x1e;
    /// The separator autobahn-python writes.
    pub const SEPARATOR_OCTAL: u8 = 0x18;

    /// Bytes a batch adds around each message of `ser`.
    pub fn overhead(ser: Serializer) -> usize {
        match ser {
            Serializer::Json => 1,
            Serializer::MsgPack | Serializer::Cbor => 4,
        }
    }

    /// Appends one message to a batch being built; `separator` ends a JSON
    /// message.
    pub fn push(out: &mut Vec<u8>, ser: Serializer, msg: &[u8], separator: u8) {
        match ser {
            Serializer::Json => {
                out.extend_from_slice(msg);
                out.push(separator);
            }
            Serializer::MsgPack | Serializer::Cbor => {
                out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
                out.extend_from_slice(msg);
            }
        }
    }

    /// The messages of one received batch, as slices of it (no copy). An
    /// empty batch, a JSON batch whose last message lacks its separator, or
    /// a length beyond the end of the batch is an error: the transport fails.
    pub fn split(ser: Serializer, data: &Bytes) -> Result<Batch, &'static str> {
        let Some(&last) = data.last() else {
            return Err("empty batch");
        };
        if ser == Serializer::Json && last != SEPARATOR && last != SEPARATOR_OCTAL {
            return Err("a batched JSON message must end with the record separator");
        }
        Ok(Batch {
            ser,
            separator: last,
            data: data.clone(),
            pos: 0,
        })
    }

    /// An iterator over the messages of a batch.
    #[derive(Debug)]
    pub struct Batch {
        ser: Serializer,
        separator: u8,
        data: Bytes,
        pos: usize,
    }

    impl Batch {
        /// The separator a JSON batch uses.
        pub fn separator(&self) -> u8 {
            self.separator
        }
    }

    impl Iterator for Batch {
        type Item = Result<Bytes, &'static str>;

        fn next(&mut self) -> Option<Self::Item> {
            let rest = self.data.get(self.pos..).filter(|r| !r.is_empty())?;
            let (start, end, next) = match self.ser {
                Serializer::Json => {
                    // split() checked that the batch ends with a separator
                    let n = rest.iter().position(|&b| b == self.separator).unwrap_or(rest.len());
                    (self.pos, self.pos + n, self.pos + n + 1)
                }
                Serializer::MsgPack | Serializer::Cbor => {
                    let Some(len) = rest.get(..4) else {
                        self.pos = self.data.len();
                        return Some(Err("truncated length prefix in batch"));
                    };
                    let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                    if n > rest.len() - 4 {
                        self.pos = self.data.len();
                        return Some(Err("batched message longer than its batch"));
                    }
                    (self.pos + 4, self.pos + 4 + n, self.pos + 4 + n)
                }
            };
            self.pos = next;
            Some(Ok(self.data.slice(start..end)))
        }
    }
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Close codes of RFC 6455 section 7.4.1.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// A frame-level failure, with the close code to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WebSocket error {code}: {reason}")]
pub struct WsError {
    pub code: u16,
    pub reason: &'static str,
}

fn fail(code: u16, reason: &'static str) -> WsError {
    WsError { code, reason }
}

/// One complete thing received on a WebSocket.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent {
    /// A complete (reassembled) data message.
    Message {
        data: Bytes,
        text: bool,
    },
    Ping(Bytes),
    Pong(Bytes),
    /// A close frame: its code (1005 when absent) and reason.
    Close {
        code: u16,
        reason: String,
    },
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Fragments {
    data: BytesMut,
    text: bool,
    /// permessage-deflate: RSV1 on the first frame; checked once inflated.
    compressed: bool,
    /// How much of a text message is known to be valid UTF-8 (an incomplete
    /// character at the end of a fragment waits for the next one).
    checked: usize,
}

impl Fragments {
    /// Checks the text received so far, so that invalid UTF-8 fails the
    /// connection at the fragment that carries it (RFC 6455 8.1: fail fast).
    fn check_utf8(&mut self) -> Result<(), WsError> {
        if !self.text || self.compressed {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.checked..]) {
            Ok(_) => self.checked = self.data.len(),
            Err(e) if e.error_len().is_some() => {
                return Err(fail(close::INVALID_PAYLOAD, "text message is not valid UTF-8"));
            }
            Err(e) => self.checked += e.valid_up_to(),
        }
        Ok(())
    }
}

/// Parses client frames; keeps the state of a fragmented message.
#[derive(Debug)]
pub struct WsDecoder {
    max_message: usize,
    fragments: Option<Fragments>,
    /// permessage-deflate, when negotiated.
    inflater: Option<super::deflate::Inflater>,
}

fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

impl WsDecoder {
    /// A decoder that refuses messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        WsDecoder {
            max_message,
            fragments: None,
            inflater: None,
        }
    }

    /// A decoder for a connection that negotiated permessage-deflate.
    pub fn with_inflater(max_message: usize, inflater: super::deflate::Inflater) -> Self {
        WsDecoder {
            inflater: Some(inflater),
            ..WsDecoder::new(max_message)
        }
    }

    /// A complete message, inflated first when it came compressed; a text
    /// message must be valid UTF-8 from `checked` on.
    fn finish(&mut self, data: BytesMut, text: bool, compressed: bool, checked: usize) -> Result<WsEvent, WsError> {
        if !compressed {
            return finish_message(data.freeze(), text, checked);
        }
        let Some(inflater) = self.inflater.as_mut() else {
            return Err(fail(close::PROTOCOL_ERROR, "compressed message without permessage-deflate"));
        };
        match inflater.inflate(&data, self.max_message) {
            Ok(plain) => finish_message(Bytes::from(plain), text, 0),
            Err(super::deflate::InflateError::TooBig) => Err(fail(close::MESSAGE_TOO_BIG, "message exceeds the maximum message size")),
            Err(super::deflate::InflateError::Invalid) => Err(fail(close::INVALID_PAYLOAD, "invalid compressed data")),
        }
    }

    /// Takes the next complete event from the front of `buf`. `Ok(None)` means
    /// more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<WsEvent>, WsError> {
        loop {
            if buf.len() < 2 {
                return Ok(None);
            }
            let b0 = buf[0];
            let b1 = buf[1];
            let fin = b0 & 0x80 != 0;
            let opcode = b0 & 0x0f;
            // RSV1: permessage-deflate, on the first frame of a data message
            let rsv1 = b0 & 0x40 != 0;
            if b0 & 0x30 != 0 || (rsv1 && (self.inflater.is_none() || !matches!(opcode, 0x1 | 0x2))) {
                return Err(fail(close::PROTOCOL_ERROR, "reserved bits set without a negotiated extension"));
            }
            if b1 & 0x80 == 0 {
                return Err(fail(close::PROTOCOL_ERROR, "client frames must be masked"));
            }
            let (len, hlen) = match b1 & 0x7f {
                126 => {
                    if buf.len() < 4 {
                        return Ok(None);
                    }
                    (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
                }
                127 => {
                    if buf.len() < 10 {
                        return Ok(None);
                    }
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    let l = u64::from_be_bytes(b);
                    if l >> 63 != 0 {
                        return Err(fail(close::PROTOCOL_ERROR, "frame length has the most significant bit set"));
                    }
                    (l, 10)
                }
                l => (l as u64, 2),
            };
            let is_control = opcode & 0x08 != 0;
            if is_control {
                if !fin {
                    return Err(fail(close::PROTOCOL_ERROR, "fragmented control frame"));
                }
                if len > 125 {
                    return Err(fail(close::PROTOCOL_ERROR, "control frame payload over 125 bytes"));
                }
            }
            let pending = self.fragments.as_ref().map_or(0, |f| f.data.len()) as u64;
            if !is_control && pending + len > self.max_message as u64 {
                return Err(fail(close::MESSAGE_TOO_BIG, "message exceeds the maximum message size"));
            }
            let total = hlen + 4 + len as usize;
            if buf.len() < total {
                buf.reserve(total - buf.len());
                return Ok(None);
            }
            let mask = [buf[hlen], buf[hlen + 1], buf[hlen + 2], buf[hlen + 3]];
            buf.advance(hlen + 4);
            let mut payload = buf.split_to(len as usize);
            unmask(&mut payload, mask);
            match opcode {
                0x0 => {
                    let Some(frag) = self.fragments.as_mut() else {
                        return Err(fail(close::PROTOCOL_ERROR, "continuation frame without a message to continue"));
                    };
                    frag.data.extend_from_slice(&payload);
                    frag.check_utf8()?;
                    if fin {
                        if let Some(f) = self.fragments.take() {
                            return self.finish(f.data, f.text, f.compressed, f.checked).map(Some);
                        }
                    }
                }
                0x1 | 0x2 => {
                    if self.fragments.is_some() {
                        return Err(fail(close::PROTOCOL_ERROR, "new data frame inside a fragmented message"));
                    }
                    let text = opcode == 0x1;
                    if fin {
                        return self.finish(payload, text, rsv1, 0).map(Some);
                    }
                    let mut frag = Fragments {
                        data: payload,
                        text,
                        compressed: rsv1,
                        checked: 0,
                    };
                    frag.check_utf8()?;
                    self.fragments = Some(frag);
                }
                0x8 => {
                    let p = payload.freeze();
                    if p.is_empty() {
                        return Ok(Some(WsEvent::Close {
                            code: 1005,
                            reason: String::new(),
                        }));
                    }
                    if p.len() == 1 {
                        return Err(fail(close::PROTOCOL_ERROR, "close frame with a one-byte payload"));
                    }
                    let code = u16::from_be_bytes([p[0], p[1]]);
                    if !valid_close_code(code) {
                        return Err(fail(close::PROTOCOL_ERROR, "invalid close code"));
                    }
                    let reason = std::str::from_utf8(&p[2..])
                        .map_err(|_| fail(close::INVALID_PAYLOAD, "close reason is not valid UTF-8"))?
                        .to_owned();
                    return Ok(Some(WsEvent::Close { code, reason }));
                }
                0x9 => return Ok(Some(WsEvent::Ping(payload.freeze()))),
                0xA => return Ok(Some(WsEvent::Pong(payload.freeze()))),
                _ => return Err(fail(close::PROTOCOL_ERROR, "unknown opcode")),
            }
        }
    }
}

/// A complete message; a text message must be valid UTF-8 from `checked` on
/// (what came before was checked fragment by fragment).
fn finish_message(data: Bytes, text: bool, checked: usize) -> Result<WsEvent, WsError> {
    if text && std::str::from_utf8(&data[checked..]).is_err() {
        return Err(fail(close::INVALID_PAYLOAD, "text message is not valid UTF-8"));
    }
    Ok(WsEvent::Message { data, text })
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let m = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ m;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Opcodes the server sends.
pub mod opcode {
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Appends an unmasked, final frame header for a payload of `len` bytes.
pub fn write_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    write_header_flags(out, opcode, false, len);
}

/// Appends an unmasked, final frame header; `compressed` sets RSV1
/// (permessage-deflate).
pub fn write_header_flags(out: &mut Vec<u8>, opcode: u8, compressed: bool, len: usize) {
    out.push(0x80 | if compressed { 0x40 } else { 0 } | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends a close frame.
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let reason = &reason.as_bytes()[..reason.len().min(120)];
    write_header(out, opcode::CLOSE, 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut v = vec![if fin { 0x80 } else { 0 } | op];
        if payload.len() < 126 {
            v.push(0x80 | payload.len() as u8);
        } else {
            v.push(0x80 | 126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn upgrade_negotiates_subprotocol() {
        let req = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: foo, wamp.2.msgpack, wamp.2.json\r\n\r\nextra";
        let (r, n) = parse_request(req, "/ws", true).unwrap().unwrap();
        assert_eq!(n, req.len() - 5);
        let HttpRequest::Upgrade { serializer, response, .. } = r else {
            panic!()
        };
        assert_eq!(serializer, Serializer::MsgPack);
        let text = String::from_utf8(response).unwrap();
        assert!(text.contains("Sec-WebSocket-Protocol: wamp.2.msgpack\r\n"));
        assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert_eq!(parse_request(&req[..20], "/ws", true), Ok(None));
    }

    #[test]
    fn upgrade_negotiates_batched_subprotocols_in_the_clients_order() {
        let req = |protos: &str| {
            format!("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {protos}\r\n\r\n")
        };
        for (offer, ser, batched, name) in [
            ("wamp.2.cbor.batched, wamp.2.json", Serializer::Cbor, true, "wamp.2.cbor.batched"),
            ("wamp.2.json, wamp.2.cbor.batched", Serializer::Json, false, "wamp.2.json"),
            ("x, wamp.2.msgpack.batched", Serializer::MsgPack, true, "wamp.2.msgpack.batched"),
            ("wamp.2.json.batched", Serializer::Json, true, "wamp.2.json.batched"),
            ("wamp.2.cbor", Serializer::Cbor, false, "wamp.2.cbor"),
        ] {
            let (r, _) = parse_request(req(offer).as_bytes(), "/ws", true).unwrap().unwrap();
            let HttpRequest::Upgrade {
                serializer,
                batched: b,
                response,
                ..
            } = r
            else {
                panic!()
            };
            assert_eq!((serializer, b), (ser, batched), "{offer}");
            let text = String::from_utf8(response).unwrap();
            assert!(text.contains(&format!("Sec-WebSocket-Protocol: {name}\r\n")), "{offer}: {text}");
        }
        let e = parse_request(req("wamp.2.ubjson").as_bytes(), "/ws", true).unwrap_err();
        assert!(e.message.contains("wamp.2.cbor.batched"), "{}", e.message);
    }

    #[test]
    fn batches_split_and_join() {
        for ser in Serializer::ALL {
            let msgs = [Bytes::from_static(b"[1]"), Bytes::from_static(b""), Bytes::from_static(b"abc")];
            let mut out = Vec::new();
            for m in &msgs {
                batch::push(&mut out, ser, m, batch::SEPARATOR);
            }
            let got: Vec<Bytes> = batch::split(ser, &Bytes::from(out)).unwrap().map(Result::unwrap).collect();
            assert_eq!(got, msgs, "{ser:?}");
            assert!(batch::split(ser, &Bytes::new()).is_err(), "{ser:?}: empty batch");
        }
        // JSON: the last message without its separator; autobahn-python's
        // separator
        assert!(batch::split(Serializer::Json, &Bytes::from_static(b"[1]\x1e[2]")).is_err());
        let b = batch::split(Serializer::Json, &Bytes::from_static(b"[1]\x18[2]\x18")).unwrap();
        assert_eq!(b.separator(), batch::SEPARATOR_OCTAL);
        assert_eq!(b.map(Result::unwrap).collect::<Vec<_>>(), [&b"[1]"[..], &b"[2]"[..]]);
        // MessagePack / CBOR: a truncated prefix, a length past the end
        let bad: Vec<_> = batch::split(Serializer::MsgPack, &Bytes::from_static(&[0, 0, 0, 1, 0x90, 0, 0]))
            .unwrap()
            .collect();
        assert_eq!(bad.len(), 2);
        assert!(bad[0].is_ok() && bad[1].is_err());
        let bad: Vec<_> = batch::split(Serializer::Cbor, &Bytes::from_static(&[0, 0, 0, 9, 0x80]))
            .unwrap()
            .collect();
        assert_eq!(bad.len(), 1);
        assert!(bad[0].is_err());
    }

    #[test]
    fn upgrade_rejections_are_clear() {
        let base = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let no_proto = format!("{base}\r\n");
        let e = parse_request(no_proto.as_bytes(), "/ws", true).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("wamp.2.json"));
        let e = parse_request(format!("{base}\r\n").replace("/ws", "/other").as_bytes(), "/ws", true).unwrap_err();
        assert_eq!(e.status, 404);
        let e = parse_request(b"GET /ws HTTP/1.1\r\n\r\n", "/ws", true).unwrap_err();
        assert_eq!(e.status, 426);
        let e = parse_request(b"POST /ws HTTP/1.1\r\n\r\n", "/ws", true).unwrap_err();
        assert_eq!(e.status, 405);
        assert!(parse_request(b"\x00\x01garbage\r\n\r\n", "/ws", true).is_err());
        let m = parse_request(b"GET /metrics HTTP/1.1\r\n\r\n", "/ws", true).unwrap().unwrap();
        assert_eq!(m.0, HttpRequest::Metrics);
    }

    #[test]
    fn decodes_masked_and_fragmented_frames() {
        let mut d = WsDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(false, 1, b"[1,"));
        buf.extend_from_slice(&frame(true, 9, b"hi"));
        buf.extend_from_slice(&frame(true, 0, b"2]"));
        buf.extend_from_slice(&frame(true, 2, &[7u8; 300]));
        assert_eq!(d.decode(&mut buf).unwrap(), Some(WsEvent::Ping(Bytes::from_static(b"hi"))));
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Some(WsEvent::Message {
                data: Bytes::from_static(b"[1,2]"),
                text: true
            })
        );
        let Some(WsEvent::Message { data, text: false }) = d.decode(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(&data[..], &[7u8; 300][..]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_carries_it() {
        // "€" is E2 82 AC: split over two fragments it is fine
        let mut d = WsDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(false, 1, b"[\"\xe2\x82"));
        buf.extend_from_slice(&frame(false, 0, b"\xac"));
        buf.extend_from_slice(&frame(true, 0, b"\"]"));
        let Some(WsEvent::Message { data, text: true }) = d.decode(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(std::str::from_utf8(&data).unwrap(), "[\"€\"]");
        // an invalid byte fails before the message is complete
        let mut d = WsDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(false, 1, b"[\xff"));
        assert_eq!(d.decode(&mut buf).map_err(|e| e.code), Err(close::INVALID_PAYLOAD));
        let mut d = WsDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(false, 1, b"[\xe2\x82"));
        buf.extend_from_slice(&frame(false, 0, b"x"));
        assert_eq!(d.decode(&mut buf).map_err(|e| e.code), Err(close::INVALID_PAYLOAD));
        // an incomplete character at the very end is caught at the last fragment
        let mut d = WsDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(false, 1, b"[\xe2"));
        buf.extend_from_slice(&frame(true, 0, b"\x82"));
        assert_eq!(d.decode(&mut buf).map_err(|e| e.code), Err(close::INVALID_PAYLOAD));
        // binary messages are not text
        let mut d = WsDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(false, 2, b"\xff"));
        buf.extend_from_slice(&frame(true, 0, b"\xfe"));
        assert!(d.decode(&mut buf).unwrap().is_some());
    }

    #[test]
    fn frame_errors_carry_rfc_codes() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (vec![0x81, 0x00], close::PROTOCOL_ERROR),    // unmasked
            (frame(true, 3, b""), close::PROTOCOL_ERROR), // reserved opcode
            (
                {
                    let mut f = frame(true, 1, b"x");
                    f[0] |= 0x40;
                    f
                },
                close::PROTOCOL_ERROR,
            ),
            (frame(false, 9, b""), close::PROTOCOL_ERROR),           // fragmented ping
            (frame(true, 9, &[0u8; 126]), close::PROTOCOL_ERROR),    // big ping
            (frame(true, 0, b"x"), close::PROTOCOL_ERROR),           // bad continuation
            (frame(true, 1, &[0xff, 0xfe]), close::INVALID_PAYLOAD), // bad UTF-8
            (frame(true, 8, &[0x03]), close::PROTOCOL_ERROR),        // 1-byte close
            (frame(true, 8, &[0x03, 0xed]), close::PROTOCOL_ERROR),  // close code 1005
            (frame(true, 8, &[0x03, 0xe8, 0xff]), close::INVALID_PAYLOAD),
            (frame(true, 2, &[0u8; 200]), close::MESSAGE_TOO_BIG),
        ];
        for (bytes, code) in cases {
            let mut d = WsDecoder::new(100);
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(d.decode(&mut buf).map_err(|e| e.code), Err(code), "{bytes:?}");
        }
        let mut d = WsDecoder::new(100);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(false, 1, b"ab"));
        buf.extend_from_slice(&frame(true, 1, b"cd"));
        assert_eq!(d.decode(&mut buf).map_err(|e| e.code), Err(close::PROTOCOL_ERROR));
    }
}

//! Transports: WebSocket and RawSocket handshakes and framing (pure, no I/O),
//! the framing a connection writes its outgoing messages with, and the one
//! read primitive both the router and the load generator use.

pub mod deflate;
pub mod longpoll;
pub mod rawsocket;
pub mod tls;
pub mod websocket;

use bytes::BytesMut;
use futures_lite::AsyncReadExt;

use crate::wamp::message::Serializer;

/// How a connection frames WAMP messages on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    WebSocket,
    RawSocket,
}

/// Appends the header that frames one outgoing WAMP message of `len` bytes.
pub fn write_message_header(out: &mut Vec<u8>, framing: Framing, ser: Serializer, len: usize) {
    match framing {
        Framing::WebSocket => {
            let op = match ser {
                Serializer::Json => websocket::opcode::TEXT,
                Serializer::MsgPack | Serializer::Cbor => websocket::opcode::BINARY,
            };
            websocket::write_header(out, op, len)
        }
        Framing::RawSocket => rawsocket::write_header(out, rawsocket::frame_type::WAMP, len),
    }
}

/// Appends a transport-level ping (`pong` false) or pong with `payload`.
pub fn write_control(out: &mut Vec<u8>, framing: Framing, pong: bool, payload: &[u8]) {
    match framing {
        Framing::WebSocket => {
            let op = if pong { websocket::opcode::PONG } else { websocket::opcode::PING };
            websocket::write_header(out, op, payload.len());
        }
        Framing::RawSocket => {
            let kind = if pong {
                rawsocket::frame_type::PONG
            } else {
                rawsocket::frame_type::PING
            };
            rawsocket::write_header(out, kind, payload.len());
        }
    }
    out.extend_from_slice(payload);
}

/// Restores the buffer's length if a read is dropped before it completes.
struct Fill<'a> {
    buf: &'a mut BytesMut,
    keep: usize,
}

impl Drop for Fill<'_> {
    fn drop(&mut self) {
        self.buf.truncate(self.keep);
    }
}

/// Reads at least one more byte (at most `chunk`) into `buf`; `Ok(0)` at end
/// of stream. Safe to cancel: a dropped read leaves `buf` as it was.
pub async fn read_more<R: futures_lite::AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut, chunk: usize) -> std::io::Result<usize> {
    let start = buf.len();
    buf.resize(start + chunk, 0);
    let mut fill = Fill { buf, keep: start };
    let res = r.read(&mut fill.buf[start..]).await;
    if let Ok(n) = res {
        fill.keep = start + n;
    }
    res
}

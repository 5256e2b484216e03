//! Transports: WebSocket and RawSocket handshakes and framing (pure, no I/O),
//! and the framing a connection writes its outgoing messages with.

pub mod rawsocket;
pub mod websocket;

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
                Serializer::MsgPack => websocket::opcode::BINARY,
            };
            websocket::write_header(out, op, len)
        }
        Framing::RawSocket => rawsocket::write_header(out, rawsocket::frame_type::WAMP, len),
    }
}

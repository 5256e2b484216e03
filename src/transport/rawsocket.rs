//! RawSocket transport, without I/O: the 4-byte handshake and the 4-byte
//! frame headers of the spec.

use bytes::{Buf, Bytes, BytesMut};

use crate::wamp::message::Serializer;

/// The magic first octet of every handshake.
pub const MAGIC: u8 = 0x7F;

/// Handshake error codes sent by the router.
pub mod handshake_error {
    pub const SERIALIZER_UNSUPPORTED: u8 = 1;
    pub const MAX_LEN_UNACCEPTABLE: u8 = 2;
    pub const RESERVED_BITS: u8 = 3;
    pub const MAX_CONNECTIONS: u8 = 4;
}

/// The outcome of a client's handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Accepted: the serializer, the client's maximum message length, and the
    /// reply to send.
    Accept {
        serializer: Serializer,
        client_max: usize,
        reply: [u8; 4],
    },
    /// Refused with an error reply.
    Refuse { reply: [u8; 4], reason: &'static str },
    /// Not a RawSocket client at all: fail the connection without a reply.
    NotRawSocket,
}

/// The length exponent announcing at most `max` bytes: the largest `l` with
/// `2^(9+l) <= max` (0 for anything below 1 KiB, at most 15 = 16 MiB). The
/// handshake can only announce powers of two, so a limit in between is
/// announced as the power of two below it: a client that keeps to what was
/// announced is never cut off for a message the router refuses.
pub fn length_exponent(max: usize) -> u8 {
    (0..=15u8).rev().find(|l| (1usize << (9 + l)) <= max).unwrap_or(0)
}

/// The handshake's serializer code (1 JSON, 2 MessagePack, 3 CBOR).
pub fn serializer_code(ser: Serializer) -> u8 {
    match ser {
        Serializer::Json => 1,
        Serializer::MsgPack => 2,
        Serializer::Cbor => 3,
    }
}

/// Answers a client handshake; `max_message` is the router's limit.
pub fn handshake(h: [u8; 4], max_message: usize) -> Handshake {
    if h[0] != MAGIC {
        return Handshake::NotRawSocket;
    }
    let refuse = |code: u8, reason| Handshake::Refuse {
        reply: [MAGIC, code << 4, 0, 0],
        reason,
    };
    if h[2] != 0 || h[3] != 0 {
        return refuse(handshake_error::RESERVED_BITS, "reserved handshake bytes are not zero");
    }
    let serializer = match h[1] & 0x0f {
        1 => Serializer::Json,
        2 => Serializer::MsgPack,
        3 => Serializer::Cbor,
        _ => return refuse(handshake_error::SERIALIZER_UNSUPPORTED, "serializer not supported"),
    };
    let client_max = 1usize << (9 + (h[1] >> 4));
    let ours = length_exponent(max_message);
    Handshake::Accept {
        serializer,
        client_max,
        reply: [MAGIC, (ours << 4) | (h[1] & 0x0f), 0, 0],
    }
}

/// Frame types.
pub mod frame_type {
    pub const WAMP: u8 = 0;
    pub const PING: u8 = 1;
    pub const PONG: u8 = 2;
}

/// A frame-level failure; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RawSocket error: {0}")]
pub struct RsError(pub &'static str);

/// One frame received.
#[derive(Debug, PartialEq, Eq)]
pub enum RsEvent {
    Message(Bytes),
    Ping(Bytes),
    Pong(Bytes),
}

/// Takes the next frame from the front of `buf`; `Ok(None)` means more bytes
/// are needed.
pub fn decode(buf: &mut BytesMut, max_message: usize) -> Result<Option<RsEvent>, RsError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    if buf[0] & 0xf8 != 0 {
        return Err(RsError("reserved bits set in frame header"));
    }
    let kind = buf[0] & 0x07;
    let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
    if kind > frame_type::PONG {
        return Err(RsError("unknown frame type"));
    }
    if len > max_message {
        return Err(RsError("message exceeds the maximum message size"));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let data = buf.split_to(len).freeze();
    Ok(Some(match kind {
        frame_type::WAMP => RsEvent::Message(data),
        frame_type::PING => RsEvent::Ping(data),
        _ => RsEvent::Pong(data),
    }))
}

/// Appends a frame header.
pub fn write_header(out: &mut Vec<u8>, kind: u8, len: usize) {
    let l = (len as u32).to_be_bytes();
    out.extend_from_slice(&[kind, l[1], l[2], l[3]]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes() {
        assert_eq!(
            handshake([0x7f, 0xf2, 0, 0], 1 << 20),
            Handshake::Accept {
                serializer: Serializer::MsgPack,
                client_max: 1 << 24,
                reply: [0x7f, 0xb2, 0, 0]
            }
        );
        assert!(matches!(
            handshake([0x7f, 0x01, 0, 0], 512),
            Handshake::Accept {
                serializer: Serializer::Json,
                reply: [0x7f, 0x01, 0, 0],
                ..
            }
        ));
        assert!(matches!(
            handshake([0x7f, 0xf5, 0, 0], 512),
            Handshake::Refuse {
                reply: [0x7f, 0x10, 0, 0],
                ..
            }
        ));
        assert!(matches!(
            handshake([0x7f, 0xf2, 1, 0], 512),
            Handshake::Refuse {
                reply: [0x7f, 0x30, 0, 0],
                ..
            }
        ));
        assert_eq!(handshake([0x47, 0x45, 0x54, 0x20], 512), Handshake::NotRawSocket);
        assert_eq!(length_exponent(16 << 20), 15);
        assert_eq!(length_exponent(512), 0);
        assert_eq!(length_exponent(513), 0, "never more than the limit enforced");
        assert_eq!(length_exponent(1023), 0);
        assert_eq!(length_exponent(1024), 1);
        assert_eq!(length_exponent(65536), 7);
        assert_eq!(length_exponent(100_000), 7);
        assert_eq!(length_exponent(usize::MAX), 15);
        for max in [512, 600, 1000, 4096, 5000, 1 << 20, (1 << 20) + 1, 16 << 20] {
            assert!(1usize << (9 + length_exponent(max)) <= max, "{max}");
        }
    }

    #[test]
    fn frames() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 2, b'[', b']', 1, 0, 0, 1, 9, 0, 0][..]);
        assert_eq!(decode(&mut buf, 100), Ok(Some(RsEvent::Message(Bytes::from_static(b"[]")))));
        assert_eq!(decode(&mut buf, 100), Ok(Some(RsEvent::Ping(Bytes::from_static(&[9])))));
        assert_eq!(decode(&mut buf, 100), Ok(None));
        assert!(decode(&mut BytesMut::from(&[3u8, 0, 0, 0][..]), 100).is_err());
        assert!(decode(&mut BytesMut::from(&[0x08u8, 0, 0, 0][..]), 100).is_err());
        assert!(decode(&mut BytesMut::from(&[0u8, 0, 1, 0][..]), 100).is_err());
    }
}

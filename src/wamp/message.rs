//! The messages a router receives, in the form the router routes on: the
//! fields it reads are parsed, the application payload stays a raw span.

use bytes::Bytes;

use super::{Dict, Id};

/// Message type codes of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    Hello = 1,
    Welcome = 2,
    Abort = 3,
    Challenge = 4,
    Authenticate = 5,
    Goodbye = 6,
    Error = 8,
    Publish = 16,
    Published = 17,
    Subscribe = 32,
    Subscribed = 33,
    Unsubscribe = 34,
    Unsubscribed = 35,
    Event = 36,
    Call = 48,
    Cancel = 49,
    Result = 50,
    Register = 64,
    Registered = 65,
    Unregister = 66,
    Unregistered = 67,
    Invocation = 68,
    Interrupt = 69,
    Yield = 70,
}

impl MessageType {
    /// The code as sent on the wire.
    pub fn code(self) -> u64 {
        self as u64
    }
}

/// A serialization format negotiated by the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Serializer {
    Json,
    MsgPack,
    Cbor,
}

impl Serializer {
    /// Number of serializers, for per-serializer caches.
    pub const COUNT: usize = 3;

    /// Every serializer, in index order.
    pub const ALL: [Serializer; Serializer::COUNT] = [Serializer::Json, Serializer::MsgPack, Serializer::Cbor];

    /// Index into per-serializer caches.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The serializer's name (`json`, `msgpack`, `cbor`).
    pub fn name(self) -> &'static str {
        match self {
            Serializer::Json => "json",
            Serializer::MsgPack => "msgpack",
            Serializer::Cbor => "cbor",
        }
    }

    /// The WebSocket subprotocol name.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Serializer::Json => "wamp.2.json",
            Serializer::MsgPack => "wamp.2.msgpack",
            Serializer::Cbor => "wamp.2.cbor",
        }
    }
}

/// The application payload of a message (`Arguments` and `ArgumentsKw`) kept
/// as the raw bytes it arrived in: the encoded list, followed by the encoded
/// dictionary if present. For JSON the two are separated by a comma, exactly as
/// they stood in the received array.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// The serializer `raw` is encoded in.
    pub serializer: Serializer,
    /// How many elements `raw` holds: 0, 1 (Arguments) or 2 (+ ArgumentsKw).
    pub count: u8,
    /// The encoded elements.
    pub raw: Bytes,
}

impl Payload {
    /// An empty payload.
    pub fn empty(serializer: Serializer) -> Self {
        Payload {
            serializer,
            count: 0,
            raw: Bytes::new(),
        }
    }

    /// True when there are no arguments at all.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// A message received by the router, parsed as far as routing needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Hello {
        realm: String,
        details: Dict,
    },
    Authenticate {
        signature: String,
        extra: Dict,
    },
    Abort {
        details: Dict,
        reason: String,
    },
    Goodbye {
        details: Dict,
        reason: String,
    },
    Error {
        request_type: u64,
        request: Id,
        details: Dict,
        error: String,
        payload: Payload,
    },
    Publish {
        request: Id,
        options: Dict,
        topic: String,
        payload: Payload,
    },
    Subscribe {
        request: Id,
        options: Dict,
        topic: String,
    },
    Unsubscribe {
        request: Id,
        subscription: Id,
    },
    Call {
        request: Id,
        options: Dict,
        procedure: String,
        payload: Payload,
    },
    Cancel {
        request: Id,
        options: Dict,
    },
    Register {
        request: Id,
        options: Dict,
        procedure: String,
    },
    Unregister {
        request: Id,
        registration: Id,
    },
    Yield {
        request: Id,
        options: Dict,
        payload: Payload,
    },
}

impl Message {
    /// The message's type code.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Hello { .. } => MessageType::Hello,
            Message::Authenticate { .. } => MessageType::Authenticate,
            Message::Abort { .. } => MessageType::Abort,
            Message::Goodbye { .. } => MessageType::Goodbye,
            Message::Error { .. } => MessageType::Error,
            Message::Publish { .. } => MessageType::Publish,
            Message::Subscribe { .. } => MessageType::Subscribe,
            Message::Unsubscribe { .. } => MessageType::Unsubscribe,
            Message::Call { .. } => MessageType::Call,
            Message::Cancel { .. } => MessageType::Cancel,
            Message::Register { .. } => MessageType::Register,
            Message::Unregister { .. } => MessageType::Unregister,
            Message::Yield { .. } => MessageType::Yield,
        }
    }
}

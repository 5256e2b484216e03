//! Bytes to messages and back, for JSON, MessagePack and CBOR.
//!
//! Decoding reads what the router routes on and keeps `Arguments` and
//! `ArgumentsKw` as a raw span of the received frame ([`Payload`]). Encoding
//! splices such a span into EVENT / INVOCATION / RESULT behind a freshly
//! encoded header, so a payload is never re-encoded when both peers use the
//! same serializer; [`transcode`] converts it once when they differ.

pub mod cbor;
pub mod json;
pub mod msgpack;
mod stream;

#[cfg(test)]
mod fuzz_regressions;

use bytes::Bytes;

use crate::wamp::message::Serializer;
use crate::wamp::{Dict, Id, Message, MessageType, Payload, Value};

/// Deepest nesting of lists and dictionaries accepted in any value.
pub const MAX_DEPTH: usize = 64;

/// Why a frame could not be decoded into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid encoding of a WAMP message.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A message type a router never receives from a client, or an unknown one.
    #[error("message type {0} is not accepted from a client")]
    UnexpectedType(u64),
}

/// The reader interface every serializer offers to [`decode`].
trait Reader {
    fn list_start(&mut self) -> Result<(), DecodeError>;
    fn has_more(&mut self) -> bool;
    fn u64(&mut self) -> Result<u64, DecodeError>;
    fn string(&mut self) -> Result<String, DecodeError>;
    fn dict(&mut self) -> Result<Dict, DecodeError>;
    fn payload(&mut self, frame: &Bytes, opaque: bool) -> Result<(u8, Bytes), DecodeError>;
    fn finish(&mut self) -> Result<(), DecodeError>;
}

macro_rules! impl_reader {
    ($t:ty) => {
        impl Reader for $t {
            fn list_start(&mut self) -> Result<(), DecodeError> {
                <$t>::list_start(self)
            }
            fn has_more(&mut self) -> bool {
                <$t>::has_more(self)
            }
            fn u64(&mut self) -> Result<u64, DecodeError> {
                <$t>::u64(self)
            }
            fn string(&mut self) -> Result<String, DecodeError> {
                <$t>::string(self)
            }
            fn dict(&mut self) -> Result<Dict, DecodeError> {
                <$t>::dict(self)
            }
            fn payload(&mut self, frame: &Bytes, opaque: bool) -> Result<(u8, Bytes), DecodeError> {
                <$t>::payload(self, frame, opaque)
            }
            fn finish(&mut self) -> Result<(), DecodeError> {
                <$t>::finish(self)
            }
        }
    };
}
impl_reader!(json::JsonReader<'_>);
impl_reader!(msgpack::MsgPackReader<'_>);
impl_reader!(cbor::CborReader<'_>);

/// Decodes one frame received from a client.
pub fn decode(serializer: Serializer, frame: &Bytes) -> Result<Message, DecodeError> {
    match serializer {
        Serializer::Json => {
            std::str::from_utf8(frame).map_err(|_| DecodeError::Malformed("invalid UTF-8"))?;
            decode_with(&mut json::JsonReader::new(frame), serializer, frame)
        }
        Serializer::MsgPack => decode_with(&mut msgpack::MsgPackReader::new(frame), serializer, frame),
        Serializer::Cbor => decode_with(&mut cbor::CborReader::new(frame), serializer, frame),
    }
}

fn id(r: &mut impl Reader) -> Result<Id, DecodeError> {
    let v = r.u64()?;
    if v == 0 || v > crate::wamp::MAX_ID {
        return Err(DecodeError::Malformed("ID out of range [1, 2^53]"));
    }
    Ok(v)
}

fn decode_with(r: &mut impl Reader, ser: Serializer, frame: &Bytes) -> Result<Message, DecodeError> {
    r.list_start()?;
    let code = r.u64()?;
    // payload passthru mode: the spec's `ppt_scheme`, or autobahn's
    // `enc_algo` (its "payload transparency")
    let opaque = |d: &Dict| {
        !d.0.is_empty()
            && ["ppt_scheme", "enc_algo"]
                .iter()
                .any(|k| d.get_str(k).is_some_and(|s| !s.is_empty()))
    };
    let payload = |r: &mut dyn FnMut() -> Result<(u8, Bytes), DecodeError>| -> Result<Payload, DecodeError> {
        let (count, raw) = r()?;
        Ok(Payload {
            serializer: ser,
            count,
            raw,
        })
    };
    let msg = match code {
        1 => Message::Hello {
            realm: r.string()?,
            details: r.dict()?,
        },
        3 => Message::Abort {
            details: r.dict()?,
            reason: r.string()?,
        },
        5 => Message::Authenticate {
            signature: r.string()?,
            extra: r.dict()?,
        },
        6 => Message::Goodbye {
            details: r.dict()?,
            reason: r.string()?,
        },
        8 => {
            let request_type = r.u64()?;
            let request = id(r)?;
            let details = r.dict()?;
            let error = r.string()?;
            let opaque = opaque(&details);
            Message::Error {
                request_type,
                request,
                details,
                error,
                payload: payload(&mut || r.payload(frame, opaque))?,
            }
        }
        16 => {
            let request = id(r)?;
            let options = r.dict()?;
            let topic = r.string()?;
            let opaque = opaque(&options);
            Message::Publish {
                request,
                options,
                topic,
                payload: payload(&mut || r.payload(frame, opaque))?,
            }
        }
        32 => Message::Subscribe {
            request: id(r)?,
            options: r.dict()?,
            topic: r.string()?,
        },
        34 => Message::Unsubscribe {
            request: id(r)?,
            subscription: id(r)?,
        },
        48 => {
            let request = id(r)?;
            let options = r.dict()?;
            let procedure = r.string()?;
            let opaque = opaque(&options);
            Message::Call {
                request,
                options,
                procedure,
                payload: payload(&mut || r.payload(frame, opaque))?,
            }
        }
        49 => Message::Cancel {
            request: id(r)?,
            options: r.dict()?,
        },
        64 => Message::Register {
            request: id(r)?,
            options: r.dict()?,
            procedure: r.string()?,
        },
        66 => Message::Unregister {
            request: id(r)?,
            registration: id(r)?,
        },
        70 => {
            let request = id(r)?;
            let options = r.dict()?;
            let opaque = opaque(&options);
            Message::Yield {
                request,
                options,
                payload: payload(&mut || r.payload(frame, opaque))?,
            }
        }
        other => return Err(DecodeError::UnexpectedType(other)),
    };
    let _ = r.has_more();
    r.finish()?;
    Ok(msg)
}

/// Builds one outgoing message in any serializer.
#[derive(Debug)]
pub struct MsgWriter {
    ser: Serializer,
    buf: Vec<u8>,
    first: bool,
}

impl MsgWriter {
    /// Starts a message of `len` elements (type code included) with `code`.
    pub fn new(ser: Serializer, len: u32, code: MessageType, capacity: usize) -> Self {
        let mut w = MsgWriter {
            ser,
            buf: Vec::with_capacity(capacity + 32),
            first: true,
        };
        match ser {
            Serializer::Json => w.buf.push(b'['),
            Serializer::MsgPack => msgpack::write_array_len(&mut w.buf, len),
            Serializer::Cbor => cbor::write_head(&mut w.buf, cbor::major::ARRAY, len as u64),
        }
        w.uint(code.code());
        w
    }

    fn sep(&mut self) {
        if self.ser == Serializer::Json {
            if !self.first {
                self.buf.push(b',');
            }
            self.first = false;
        }
    }

    /// Appends an unsigned integer element.
    pub fn uint(&mut self, v: u64) -> &mut Self {
        self.sep();
        match self.ser {
            Serializer::Json => json::write_uint(&mut self.buf, v),
            Serializer::MsgPack => msgpack::write_uint(&mut self.buf, v),
            Serializer::Cbor => cbor::write_uint(&mut self.buf, v),
        }
        self
    }

    /// Appends a string element.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.sep();
        match self.ser {
            Serializer::Json => json::write_str(&mut self.buf, s),
            Serializer::MsgPack => msgpack::write_str(&mut self.buf, s.as_bytes()),
            Serializer::Cbor => cbor::write_str(&mut self.buf, s.as_bytes()),
        }
        self
    }

    /// Appends a dictionary element.
    pub fn dict(&mut self, d: &Dict) -> &mut Self {
        self.sep();
        match self.ser {
            Serializer::Json => json::write_dict(&mut self.buf, d),
            Serializer::MsgPack => msgpack::write_dict(&mut self.buf, d),
            Serializer::Cbor => cbor::write_dict(&mut self.buf, d),
        }
        self
    }

    /// Appends any value.
    pub fn value(&mut self, v: &Value) -> &mut Self {
        self.sep();
        write_value(self.ser, &mut self.buf, v);
        self
    }

    /// Appends a pre-encoded dictionary (see [`encode_dict`]).
    pub fn raw_dict(&mut self, encoded: &[u8]) -> &mut Self {
        self.sep();
        self.buf.extend_from_slice(encoded);
        self
    }

    /// Appends the payload elements, spliced as they are. The payload must be
    /// in this writer's serializer (see [`transcode`]).
    pub fn payload(&mut self, p: &Payload) -> &mut Self {
        debug_assert_eq!(p.serializer, self.ser);
        if p.count > 0 {
            self.sep();
            self.buf.extend_from_slice(&p.raw);
        }
        self
    }

    /// Finishes the message.
    pub fn finish(mut self) -> Bytes {
        if self.ser == Serializer::Json {
            self.buf.push(b']');
        }
        Bytes::from(self.buf)
    }
}

/// Parses a whole message into a [`Value`] (clients and tools use this for
/// messages a router sends; the router itself uses [`decode`]).
pub fn parse_value(ser: Serializer, frame: &[u8]) -> Result<Value, DecodeError> {
    match ser {
        Serializer::Json => {
            std::str::from_utf8(frame).map_err(|_| DecodeError::Malformed("invalid UTF-8"))?;
            json::parse(frame)
        }
        Serializer::MsgPack => {
            let mut r = msgpack::MsgPackReader::new(frame);
            let v = r.parse_value(0)?;
            r.finish_value()?;
            Ok(v)
        }
        Serializer::Cbor => {
            let mut r = cbor::CborReader::new(frame);
            let v = r.parse_value(0)?;
            r.finish_value()?;
            Ok(v)
        }
    }
}

/// Encodes a dictionary on its own, for headers shared by many messages.
/// An empty dictionary, encoded.
pub fn empty_dict(ser: Serializer) -> &'static [u8] {
    match ser {
        Serializer::Json => b"{}",
        Serializer::MsgPack => &[0x80],
        Serializer::Cbor => &[0xa0],
    }
}

pub fn encode_dict(ser: Serializer, d: &Dict) -> Vec<u8> {
    let mut out = Vec::new();
    match ser {
        Serializer::Json => json::write_dict(&mut out, d),
        Serializer::MsgPack => msgpack::write_dict(&mut out, d),
        Serializer::Cbor => cbor::write_dict(&mut out, d),
    }
    out
}

/// The values of a payload (Arguments, then ArgumentsKw), for what the
/// router reads itself (the arguments of its own procedures).
pub fn payload_values(p: &Payload) -> Result<Vec<Value>, DecodeError> {
    if p.count == 0 {
        return Ok(Vec::new());
    }
    match p.serializer {
        Serializer::Json => json::parse_payload(&p.raw),
        Serializer::MsgPack => msgpack::parse_payload(&p.raw, p.count),
        Serializer::Cbor => cbor::parse_payload(&p.raw, p.count),
    }
}

/// Converts a payload to `to`. A payload already in `to` is returned as it
/// is (a cheap `Bytes` clone). Otherwise it is read and written in one
/// streaming pass (`codec::stream`), validated as the tree parsers validate.
pub fn transcode(p: &Payload, to: Serializer) -> Result<Payload, DecodeError> {
    if p.serializer == to || p.count == 0 {
        return Ok(Payload {
            serializer: to,
            count: p.count,
            raw: p.raw.clone(),
        });
    }
    let capacity = p.raw.len() + p.raw.len() / 4 + 8;
    let (count, raw) = if to == Serializer::Json {
        let mut sink = stream::JsonOut::new(capacity);
        (stream_into(p, &mut sink)?, sink.out)
    } else {
        let mut sink = stream::BinOut::new(to, capacity);
        (stream_into(p, &mut sink)?, sink.finish())
    };
    Ok(Payload {
        serializer: to,
        count,
        raw: Bytes::from(raw),
    })
}

/// Reads `p` with its serializer's streaming reader into `sink`; the number
/// of elements read.
#[inline(always)]
fn stream_into(p: &Payload, sink: &mut impl stream::Sink) -> Result<u8, DecodeError> {
    match p.serializer {
        Serializer::Json => json::stream_payload(&p.raw, sink),
        Serializer::MsgPack => msgpack::stream_payload(&p.raw, p.count, sink),
        Serializer::Cbor => cbor::stream_payload(&p.raw, p.count, sink),
    }
}

/// [`transcode`] through a value tree: parsed, then written.
pub fn transcode_tree(p: &Payload, to: Serializer) -> Result<Payload, DecodeError> {
    if p.serializer == to || p.count == 0 {
        return Ok(Payload {
            serializer: to,
            count: p.count,
            raw: p.raw.clone(),
        });
    }
    let values = payload_values(p)?;
    let mut out = Vec::with_capacity(p.raw.len() + 8);
    write_elements(&mut out, to, &values);
    Ok(Payload {
        serializer: to,
        count: values.len() as u8,
        raw: Bytes::from(out),
    })
}

/// Appends `values` as consecutive message elements in `ser` (comma-separated
/// in JSON), the form of a payload span.
fn write_elements(out: &mut Vec<u8>, ser: Serializer, values: &[Value]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 && ser == Serializer::Json {
            out.push(b',');
        }
        write_value(ser, out, v);
    }
}

/// Appends the encoding of one value in `ser`.
pub fn write_value(ser: Serializer, out: &mut Vec<u8>, v: &Value) {
    match ser {
        Serializer::Json => json::write_value(out, v),
        Serializer::MsgPack => msgpack::write_value(out, v),
        Serializer::Cbor => cbor::write_value(out, v),
    }
}

/// Builds a payload of Arguments and, if given, ArgumentsKw.
pub fn payload_of(ser: Serializer, args: &[Value], kwargs: Option<&Dict>) -> Payload {
    let Some(kwargs) = kwargs else {
        return payload_from(ser, args);
    };
    let mut out = Vec::new();
    write_elements(&mut out, ser, &[Value::List(args.to_vec()), Value::Dict(kwargs.clone())]);
    Payload {
        serializer: ser,
        count: 2,
        raw: Bytes::from(out),
    }
}

/// Builds a payload from values (for errors the router itself raises).
pub fn payload_from(ser: Serializer, args: &[Value]) -> Payload {
    let mut out = Vec::new();
    write_elements(&mut out, ser, &[Value::List(args.to_vec())]);
    Payload {
        serializer: ser,
        count: 1,
        raw: Bytes::from(out),
    }
}

/// Encoders for every message a router sends.
pub mod encode {
    use super::*;

    /// `[WELCOME, Session|id, Details|dict]`
    pub fn welcome(ser: Serializer, session: Id, details: &Dict) -> Bytes {
        let mut w = MsgWriter::new(ser, 3, MessageType::Welcome, 256);
        w.uint(session).dict(details);
        w.finish()
    }

    /// `[CHALLENGE, AuthMethod|string, Extra|dict]`
    pub fn challenge(ser: Serializer, method: &str, extra: &Dict) -> Bytes {
        let mut w = MsgWriter::new(ser, 3, MessageType::Challenge, 128);
        w.str(method).dict(extra);
        w.finish()
    }

    /// `[ABORT, Details|dict, Reason|uri]`
    pub fn abort(ser: Serializer, details: &Dict, reason: &str) -> Bytes {
        let mut w = MsgWriter::new(ser, 3, MessageType::Abort, 64);
        w.dict(details).str(reason);
        w.finish()
    }

    /// `[GOODBYE, Details|dict, Reason|uri]`
    pub fn goodbye(ser: Serializer, details: &Dict, reason: &str) -> Bytes {
        let mut w = MsgWriter::new(ser, 3, MessageType::Goodbye, 64);
        w.dict(details).str(reason);
        w.finish()
    }

    /// `[ERROR, REQUEST.Type|int, REQUEST.Request|id, Details|dict, Error|uri, Arguments|list, ArgumentsKw|dict]`
    pub fn error(ser: Serializer, request_type: MessageType, request: Id, details: &Dict, error: &str, payload: &Payload) -> Bytes {
        let mut w = MsgWriter::new(ser, 5 + payload.count as u32, MessageType::Error, 64 + payload.raw.len());
        w.uint(request_type.code()).uint(request).dict(details).str(error).payload(payload);
        w.finish()
    }

    /// `[PUBLISHED, PUBLISH.Request|id, Publication|id]`
    pub fn published(ser: Serializer, request: Id, publication: Id) -> Bytes {
        let mut w = MsgWriter::new(ser, 3, MessageType::Published, 16);
        w.uint(request).uint(publication);
        w.finish()
    }

    /// `[SUBSCRIBED, SUBSCRIBE.Request|id, Subscription|id]`
    pub fn subscribed(ser: Serializer, request: Id, subscription: Id) -> Bytes {
        let mut w = MsgWriter::new(ser, 3, MessageType::Subscribed, 16);
        w.uint(request).uint(subscription);
        w.finish()
    }

    /// `[UNSUBSCRIBED, UNSUBSCRIBE.Request|id]`
    pub fn unsubscribed(ser: Serializer, request: Id) -> Bytes {
        let mut w = MsgWriter::new(ser, 2, MessageType::Unsubscribed, 16);
        w.uint(request);
        w.finish()
    }

    /// `[UNSUBSCRIBED | UNREGISTERED, 0, Details|dict]`: a subscription or
    /// registration revoked by the router (`kind` is the message type).
    pub fn revoked(ser: Serializer, kind: MessageType, details: &Dict) -> Bytes {
        let mut w = MsgWriter::new(ser, 3, kind, 64);
        w.uint(0).dict(details);
        w.finish()
    }

    /// `[EVENT, Subscription|id, Publication|id, Details|dict, Arguments|list, ArgumentsKw|dict]`
    /// with `details` already encoded in `ser`.
    pub fn event(ser: Serializer, subscription: Id, publication: Id, details: &[u8], payload: &Payload) -> Bytes {
        let mut w = MsgWriter::new(
            ser,
            4 + payload.count as u32,
            MessageType::Event,
            32 + details.len() + payload.raw.len(),
        );
        w.uint(subscription).uint(publication).raw_dict(details).payload(payload);
        w.finish()
    }

    /// `[RESULT, CALL.Request|id, Details|dict, YIELD.Arguments|list, YIELD.ArgumentsKw|dict]`
    pub fn result(ser: Serializer, request: Id, details: &Dict, payload: &Payload) -> Bytes {
        let mut w = MsgWriter::new(ser, 3 + payload.count as u32, MessageType::Result, 32 + payload.raw.len());
        w.uint(request).dict(details).payload(payload);
        w.finish()
    }

    /// `[REGISTERED, REGISTER.Request|id, Registration|id]`
    pub fn registered(ser: Serializer, request: Id, registration: Id) -> Bytes {
        let mut w = MsgWriter::new(ser, 3, MessageType::Registered, 16);
        w.uint(request).uint(registration);
        w.finish()
    }

    /// `[UNREGISTERED, UNREGISTER.Request|id]`
    pub fn unregistered(ser: Serializer, request: Id) -> Bytes {
        let mut w = MsgWriter::new(ser, 2, MessageType::Unregistered, 16);
        w.uint(request);
        w.finish()
    }

    /// `[INTERRUPT, INVOCATION.Request|id, Options|dict]`
    pub fn interrupt(ser: Serializer, request: Id, options: &Dict) -> Bytes {
        let mut w = MsgWriter::new(ser, 3, MessageType::Interrupt, 32);
        w.uint(request).dict(options);
        w.finish()
    }

    /// `[INVOCATION, Request|id, REGISTERED.Registration|id, Details|dict, CALL.Arguments|list, CALL.ArgumentsKw|dict]`
    pub fn invocation(ser: Serializer, request: Id, registration: Id, details: &Dict, payload: &Payload) -> Bytes {
        let mut w = MsgWriter::new(ser, 4 + payload.count as u32, MessageType::Invocation, 48 + payload.raw.len());
        w.uint(request).uint(registration).dict(details).payload(payload);
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Result<Message, DecodeError> {
        decode(Serializer::Json, &Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn decodes_json_publish_with_raw_payload() {
        let m = j(r#"[16, 7, {"acknowledge": true}, "com.topic", [1, "a"], {"k": [2]}]"#).unwrap();
        let Message::Publish {
            request,
            options,
            topic,
            payload,
        } = m
        else {
            panic!()
        };
        assert_eq!(request, 7);
        assert_eq!(options.get_bool("acknowledge"), Some(true));
        assert_eq!(topic, "com.topic");
        assert_eq!(payload.count, 2);
        assert_eq!(&payload.raw[..], br#"[1, "a"], {"k": [2]}"#);
    }

    #[test]
    fn rejects_bad_messages() {
        assert!(j("[]").is_err());
        assert!(j("{}").is_err());
        assert!(j(r#"[16, 0, {}, "t"]"#).is_err());
        assert!(j(r#"[16, 9007199254740993, {}, "t"]"#).is_err());
        assert!(j(r#"[16, 1, {}, "t", {}]"#).is_err());
        assert!(j(r#"[16, 1, {}, "t", [], []]"#).is_err());
        assert!(j(r#"[16, 1, {}, "t", [], {}, 3]"#).is_err());
        assert!(j(r#"[32, 1, {}]"#).is_err());
        assert!(j(r#"[32, 1, {}, "t"] x"#).is_err());
        assert_eq!(j(r#"[36, 1, 2, {}]"#), Err(DecodeError::UnexpectedType(36)));
        assert!(j(r#"[32, "1", {}, "t"]"#).is_err());
        assert!(j(r#"[32, -1, {}, "t"]"#).is_err());
        assert!(j(r#"[32, 1.5, {}, "t"]"#).is_err());
    }

    #[test]
    fn event_splices_payload_in_both_serializers() {
        let m = j(r#"[16,1,{},"t",["é",{"x":null}],{"n":18446744073709551615}]"#).unwrap();
        let Message::Publish { payload, .. } = m else { panic!() };
        let details = encode_dict(Serializer::Json, &Dict::new());
        let ev = encode::event(Serializer::Json, 5, 6, &details, &payload);
        assert_eq!(&ev[..], r#"[36,5,6,{},["é",{"x":null}],{"n":18446744073709551615}]"#.as_bytes());

        let mp = transcode(&payload, Serializer::MsgPack).unwrap();
        let details = encode_dict(Serializer::MsgPack, &Dict::new());
        let ev = encode::event(Serializer::MsgPack, 5, 6, &details, &mp);
        let mut r = msgpack::MsgPackReader::new(&ev);
        let v = r.parse_value(0).unwrap();
        assert_eq!(
            v,
            Value::List(vec![
                Value::UInt(36),
                Value::UInt(5),
                Value::UInt(6),
                Value::Dict(Dict::new()),
                Value::List(vec![Value::Str("é".into()), Value::Dict(Dict::new().with("x", Value::Null))]),
                Value::Dict(Dict::new().with("n", Value::UInt(u64::MAX))),
            ])
        );
        // and back to JSON gives the same text
        let back = transcode(&mp, Serializer::Json).unwrap();
        assert_eq!(&back.raw[..], r#"["é",{"x":null}],{"n":18446744073709551615}"#.as_bytes());
    }

    #[test]
    fn msgpack_decode_matches_json() {
        let mut frame = Vec::new();
        msgpack::write_value(
            &mut frame,
            &Value::List(vec![
                Value::UInt(48),
                Value::UInt(3),
                Value::Dict(Dict::new()),
                Value::Str("com.proc".into()),
                Value::List(vec![Value::Bytes(vec![0, 1, 255])]),
            ]),
        );
        let m = decode(Serializer::MsgPack, &Bytes::from(frame)).unwrap();
        let Message::Call {
            request,
            procedure,
            payload,
            ..
        } = m
        else {
            panic!()
        };
        assert_eq!((request, procedure.as_str(), payload.count), (3, "com.proc", 1));
        let js = transcode(&payload, Serializer::Json).unwrap();
        assert_eq!(&js.raw[..], br#"["\u0000AAH/"]"#);
    }

    #[test]
    fn cbor_decodes_and_transcodes_among_all_three() {
        let args = Value::List(vec![
            Value::Str("é".into()),
            Value::Bytes(vec![0, 1, 255]),
            Value::Int(-7),
            Value::Float(0.5),
            Value::Dict(Dict::new().with("x", Value::Null)),
        ]);
        let kwargs = Value::Dict(Dict::new().with("n", Value::UInt(u64::MAX)));
        let mut frame = Vec::new();
        write_value(
            Serializer::Cbor,
            &mut frame,
            &Value::List(vec![
                Value::UInt(16),
                Value::UInt(9),
                Value::Dict(Dict::new().with("acknowledge", Value::Bool(true))),
                Value::Str("com.topic".into()),
                args.clone(),
                kwargs.clone(),
            ]),
        );
        let m = decode(Serializer::Cbor, &Bytes::from(frame)).unwrap();
        let Message::Publish {
            request,
            options,
            topic,
            payload,
        } = m
        else {
            panic!()
        };
        assert_eq!((request, topic.as_str(), payload.count), (9, "com.topic", 2));
        assert_eq!(options.get_bool("acknowledge"), Some(true));
        let want = vec![args, kwargs];
        assert_eq!(payload_values(&payload).unwrap(), want);
        // every pair, both ways, gives the same values
        for from in Serializer::ALL {
            let p = transcode(&payload, from).unwrap();
            for to in Serializer::ALL {
                let t = transcode(&p, to).unwrap();
                assert_eq!((t.serializer, t.count), (to, 2));
                assert_eq!(payload_values(&t).unwrap(), want, "{from:?} -> {to:?}");
            }
        }
        // bytes: MessagePack bin, JSON's \u0000 + base64
        let js = transcode(&payload, Serializer::Json).unwrap();
        assert!(js.raw.windows(12).any(|w| w == br#""\u0000AAH/""#));
        let mp = transcode(&payload, Serializer::MsgPack).unwrap();
        assert!(mp.raw.windows(5).any(|w| w == [0xc4, 3, 0, 1, 255]));
        // and an EVENT splices a CBOR payload as it is
        let ev = encode::event(Serializer::Cbor, 5, 6, empty_dict(Serializer::Cbor), &payload);
        assert!(ev.ends_with(&payload.raw));
        assert_eq!(ev[..4], [0x86, 0x18, 36, 5]);
    }

    #[test]
    fn cbor_rejects_bad_messages() {
        let c = |b: &[u8]| decode(Serializer::Cbor, &Bytes::copy_from_slice(b));
        // [32, 1, {}, "t"] is fine, definite or indefinite
        assert!(c(&[0x84, 0x18, 32, 0x01, 0xa0, 0x61, b't']).is_ok());
        assert!(c(&[0x9f, 0x18, 32, 0x01, 0xa0, 0x61, b't', 0xff]).is_ok());
        // the break missing, an element short, one too many, trailing bytes
        assert!(c(&[0x9f, 0x18, 32, 0x01, 0xa0, 0x61, b't']).is_err());
        assert!(c(&[0x83, 0x18, 32, 0x01, 0xa0]).is_err());
        assert!(c(&[0x85, 0x18, 32, 0x01, 0xa0, 0x61, b't', 0x01]).is_err());
        assert!(c(&[0x84, 0x18, 32, 0x01, 0xa0, 0x61, b't', 0x00]).is_err());
        // not an array; a negative or zero request ID; a byte string as URI
        assert!(c(&[0xa0]).is_err());
        assert!(c(&[0x84, 0x18, 32, 0x20, 0xa0, 0x61, b't']).is_err());
        assert!(c(&[0x84, 0x18, 32, 0x00, 0xa0, 0x61, b't']).is_err());
        assert!(c(&[0x84, 0x18, 32, 0x01, 0xa0, 0x41, b't']).is_err());
        // PUBLISH whose Arguments is a dictionary, or ArgumentsKw a list
        assert!(c(&[0x85, 0x10, 0x01, 0xa0, 0x61, b't', 0xa0]).is_err());
        assert!(c(&[0x86, 0x10, 0x01, 0xa0, 0x61, b't', 0x80, 0x80]).is_err());
        // a payload below -2^63 transcodes as the nearest float, as JSON
        // reads such a number
        let mut f = vec![0x85, 0x10, 0x01, 0xa0, 0x61, b't', 0x81, 0x3b];
        f.extend_from_slice(&[0xff; 8]);
        let Ok(Message::Publish { payload, .. }) = c(&f) else { panic!() };
        let js = transcode(&payload, Serializer::Json).unwrap();
        assert_eq!(
            payload_values(&js).unwrap(),
            [Value::List(vec![Value::Float(-18446744073709551616.0)])]
        );
        assert_eq!(c(&[0x84, 0x18, 36, 1, 2, 0xa0]), Err(DecodeError::UnexpectedType(36)));
    }
}

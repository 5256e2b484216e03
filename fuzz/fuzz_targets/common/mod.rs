//! Shared by the decoder targets: a canonical form of values for comparing
//! them across serializers, and the re-encoding checks run on every message
//! that decodes.
//!
//! The canonical form absorbs exactly the conversions that are lossy by
//! design, and nothing else (dictionaries keep their order and duplicate
//! keys through both codecs, so they are compared as they are):
//! - JSON has no NaN or infinity: a non-finite float is written as `null`;
//! - WAMP's JSON binary convention: a string that starts with NUL followed by
//!   valid base64 *is* binary once it has been through JSON.

#![allow(dead_code)]

use base64::Engine;
use bytes::Bytes;
use switchyard::codec::{self, encode};
use switchyard::wamp::message::Serializer;
use switchyard::wamp::{Dict, Message, Payload, Value};

/// The canonical form of `v` (see the module docs).
pub fn canon(v: &Value) -> Value {
    match v {
        Value::Float(f) if !f.is_finite() => Value::Null,
        Value::Str(s) => match s.strip_prefix('\0') {
            Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(b) => Value::Bytes(b),
                Err(_) => v.clone(),
            },
            None => v.clone(),
        },
        Value::List(l) => Value::List(l.iter().map(canon).collect()),
        Value::Dict(d) => Value::Dict(canon_dict(d)),
        _ => v.clone(),
    }
}

/// The canonical form of a dictionary: its values in canonical form.
pub fn canon_dict(d: &Dict) -> Dict {
    Dict(d.0.iter().map(|(k, v)| (k.clone(), canon(v))).collect())
}

/// Invariant of [`Value`]: `Int` holds negative integers only.
pub fn assert_int_invariant(v: &Value) {
    match v {
        Value::Int(i) => assert!(*i < 0, "Value::Int({i}) must be negative (non-negative ones are UInt)"),
        Value::List(l) => l.iter().for_each(assert_int_invariant),
        Value::Dict(d) => d.0.iter().for_each(|(_, v)| assert_int_invariant(v)),
        _ => {}
    }
}

/// The serializers other than `ser`.
fn others(ser: Serializer) -> impl Iterator<Item = Serializer> {
    Serializer::ALL.into_iter().filter(move |&s| s != ser)
}

/// Encodes `v` in every serializer and parses it back; must give the same value.
pub fn check_value_round_trip(v: &Value) {
    assert_int_invariant(v);
    for ser in Serializer::ALL {
        let mut out = Vec::new();
        codec::write_value(ser, &mut out, v);
        let back =
            codec::parse_value(ser, &out).unwrap_or_else(|e| panic!("{ser:?} encoding of {v:?} does not parse back: {e}; bytes {out:?}"));
        assert_int_invariant(&back);
        assert_eq!(canon(&back), canon(v), "{ser:?} round trip changed the value; bytes {out:?}");
    }
}

/// The values a payload holds, parsed independently of `transcode`.
pub fn payload_values(p: &Payload) -> Vec<Value> {
    let parsed = match p.serializer {
        Serializer::Json => {
            let mut text = Vec::with_capacity(p.raw.len() + 2);
            text.push(b'[');
            text.extend_from_slice(&p.raw);
            text.push(b']');
            codec::parse_value(Serializer::Json, &text)
        }
        Serializer::MsgPack => {
            let mut frame = Vec::with_capacity(p.raw.len() + 1);
            frame.push(0x90 | p.count); // fixarray of `count` elements
            frame.extend_from_slice(&p.raw);
            codec::parse_value(Serializer::MsgPack, &frame)
        }
        Serializer::Cbor => {
            let mut frame = Vec::with_capacity(p.raw.len() + 1);
            frame.push(0x80 | p.count); // array of `count` elements
            frame.extend_from_slice(&p.raw);
            codec::parse_value(Serializer::Cbor, &frame)
        }
    };
    match parsed {
        Ok(Value::List(items)) => items,
        other => panic!("payload {:?} of a decoded message does not parse: {other:?}", p.raw),
    }
}

/// The payload as decoded is consistent: its count matches, it converts to
/// each other serializer and back without changing a value, and it splices
/// into an EVENT that parses to the same values in every serializer.
///
/// `opaque`: the message is in payload passthru mode (a non-empty
/// `ppt_scheme` or `enc_algo` in its options or details), where the
/// Arguments may instead be one string or binary.
pub fn check_payload(p: &Payload, ser: Serializer, opaque: bool) {
    assert_eq!(p.serializer, ser);
    assert!(p.count <= 2, "payload count {}", p.count);
    if p.count == 0 {
        assert!(p.raw.is_empty(), "empty payload with raw bytes {:?}", p.raw);
    }
    let expected: Vec<Value> = payload_values(p).iter().map(canon).collect();
    assert_eq!(expected.len(), p.count as usize, "payload count vs parsed values");
    if let Some(first) = expected.first() {
        let opaque_ok = opaque && p.count == 1 && matches!(first, Value::Str(_) | Value::Bytes(_));
        assert!(matches!(first, Value::List(_)) || opaque_ok, "Arguments is not a list: {first:?}");
    }
    if let Some(second) = expected.get(1) {
        assert!(matches!(second, Value::Dict(_)), "ArgumentsKw is not a dict: {second:?}");
    }
    for v in payload_values(p) {
        assert_int_invariant(&v);
    }

    // to each other serializer and back
    let mut converted = vec![(ser, p.clone())];
    for to in others(ser) {
        let there = codec::transcode(p, to).unwrap_or_else(|e| panic!("payload accepted by decode cannot be transcoded to {to:?}: {e}"));
        // the streaming pass writes exactly what the value tree would
        let tree = codec::transcode_tree(p, to).unwrap_or_else(|e| panic!("the tree path refuses what streaming took: {e}"));
        assert_eq!(there, tree, "streaming and tree transcoding differ");
        assert_eq!(there.serializer, to);
        assert_eq!(there.count, p.count);
        let there_values: Vec<Value> = payload_values(&there).iter().map(canon).collect();
        assert_eq!(there_values, expected, "transcoding to {to:?} changed the payload: {:?}", there.raw);
        let back =
            codec::transcode(&there, ser).unwrap_or_else(|e| panic!("transcoded payload {:?} cannot be transcoded back: {e}", there.raw));
        assert_eq!(back.count, p.count);
        let back_values: Vec<Value> = payload_values(&back).iter().map(canon).collect();
        assert_eq!(back_values, expected, "round trip through {to:?} changed the payload");
        converted.push((to, there));
    }

    // spliced into an EVENT, in every serializer
    for (s, pl) in &converted {
        let (s, pl) = (*s, pl);
        let details = codec::encode_dict(s, &Dict::new().with("topic", Value::Str("a.b".into())));
        let ev = encode::event(s, 5, 6, &details, pl);
        let parsed = codec::parse_value(s, &ev).unwrap_or_else(|e| panic!("{s:?} EVENT does not parse: {e}; {ev:?}"));
        let Value::List(items) = parsed else {
            panic!("{s:?} EVENT is not a list")
        };
        assert_eq!(items.len(), 4 + p.count as usize, "{s:?} EVENT has the wrong length: {items:?}");
        assert_eq!(items[0], Value::UInt(36));
        assert_eq!(items[1], Value::UInt(5));
        assert_eq!(items[2], Value::UInt(6));
        let tail: Vec<Value> = items[4..].iter().map(canon).collect();
        assert_eq!(tail, expected, "{s:?} EVENT carries a different payload");
    }
}

/// Re-encodes a dictionary in every serializer; it must parse back the same.
pub fn check_dict(d: &Dict) {
    check_value_round_trip(&Value::Dict(d.clone()));
    for ser in Serializer::ALL {
        let enc = codec::encode_dict(ser, d);
        let back = codec::parse_value(ser, &enc).unwrap_or_else(|e| panic!("encode_dict({ser:?}) does not parse: {e}"));
        assert_eq!(canon(&back), Value::Dict(canon_dict(d)));
    }
}

/// Re-encodes a string element in every serializer (as an ABORT reason).
pub fn check_string(s: &str) {
    for ser in Serializer::ALL {
        let m = encode::abort(ser, &Dict::new(), s);
        let back = codec::parse_value(ser, &m).unwrap_or_else(|e| panic!("{ser:?} ABORT does not parse: {e}"));
        let Value::List(items) = back else { panic!("ABORT is not a list") };
        assert_eq!(items.len(), 3);
        assert_eq!(canon(&items[2]), canon(&Value::Str(s.to_owned())));
    }
}

/// Payload passthru mode, as `codec::decode` tells it.
fn passthru(d: &Dict) -> bool {
    ["ppt_scheme", "enc_algo"].iter().any(|k| d.get_str(k).is_some_and(|s| !s.is_empty()))
}

/// All checks on a message that decoded from a frame in `ser`.
pub fn check_message(m: &Message, ser: Serializer, frame: &Bytes) {
    // the frame itself is a well-formed value in its serializer
    let whole = codec::parse_value(ser, frame).unwrap_or_else(|e| panic!("decoded frame does not parse as a value: {e}"));
    let Value::List(items) = &whole else {
        panic!("decoded frame is not a list")
    };
    assert_eq!(items.first(), Some(&Value::UInt(m.message_type() as u64)), "type code");
    let id_ok = |id: u64| (1..=switchyard::wamp::MAX_ID).contains(&id);
    // the fields decode read are the elements the frame holds
    let fields = fields(m);
    let count = payload_of(m).map_or(0, |p| p.count as usize);
    assert_eq!(items.len(), fields.len() + count, "element count");
    let got: Vec<Value> = items[..fields.len()].iter().map(canon).collect();
    let want: Vec<Value> = fields.iter().map(canon).collect();
    assert_eq!(got, want, "decoded fields differ from the frame's elements");
    match m {
        Message::Hello { realm, details } => {
            check_string(realm);
            check_dict(details);
        }
        Message::Authenticate { signature, extra } => {
            check_string(signature);
            check_dict(extra);
        }
        Message::Abort { details, reason } | Message::Goodbye { details, reason } => {
            check_string(reason);
            check_dict(details);
        }
        Message::Error {
            request,
            details,
            error,
            payload,
            ..
        } => {
            assert!(id_ok(*request));
            check_string(error);
            check_dict(details);
            check_payload(payload, ser, passthru(details));
        }
        Message::Publish {
            request,
            options,
            topic,
            payload,
        } => {
            assert!(id_ok(*request));
            check_string(topic);
            check_dict(options);
            check_payload(payload, ser, passthru(options));
        }
        Message::Call {
            request,
            options,
            procedure,
            payload,
        } => {
            assert!(id_ok(*request));
            check_string(procedure);
            check_dict(options);
            check_payload(payload, ser, passthru(options));
        }
        Message::Yield { request, options, payload } => {
            assert!(id_ok(*request));
            check_dict(options);
            check_payload(payload, ser, passthru(options));
        }
        Message::Subscribe { request, options, topic } => {
            assert!(id_ok(*request));
            check_string(topic);
            check_dict(options);
        }
        Message::Register {
            request,
            options,
            procedure,
        } => {
            assert!(id_ok(*request));
            check_string(procedure);
            check_dict(options);
        }
        Message::Unsubscribe { request, subscription } => assert!(id_ok(*request) && id_ok(*subscription)),
        Message::Unregister { request, registration } => assert!(id_ok(*request) && id_ok(*registration)),
        Message::Cancel { request, options } => {
            assert!(id_ok(*request));
            check_dict(options);
        }
    }
}

fn payload_of(m: &Message) -> Option<&Payload> {
    match m {
        Message::Error { payload, .. }
        | Message::Publish { payload, .. }
        | Message::Call { payload, .. }
        | Message::Yield { payload, .. } => Some(payload),
        _ => None,
    }
}

/// The message's elements before the payload, as values.
fn fields(m: &Message) -> Vec<Value> {
    let t = Value::UInt(m.message_type() as u64);
    let s = |s: &String| Value::Str(s.clone());
    let d = |d: &Dict| Value::Dict(d.clone());
    let u = |u: &u64| Value::UInt(*u);
    match m {
        Message::Hello { realm, details } => vec![t, s(realm), d(details)],
        Message::Authenticate { signature, extra } => vec![t, s(signature), d(extra)],
        Message::Abort { details, reason } | Message::Goodbye { details, reason } => vec![t, d(details), s(reason)],
        Message::Error {
            request_type,
            request,
            details,
            error,
            ..
        } => vec![t, u(request_type), u(request), d(details), s(error)],
        Message::Publish {
            request, options, topic, ..
        }
        | Message::Subscribe { request, options, topic } => vec![t, u(request), d(options), s(topic)],
        Message::Call {
            request,
            options,
            procedure,
            ..
        }
        | Message::Register {
            request,
            options,
            procedure,
        } => vec![t, u(request), d(options), s(procedure)],
        Message::Unsubscribe { request, subscription } => vec![t, u(request), u(subscription)],
        Message::Unregister { request, registration } => vec![t, u(request), u(registration)],
        Message::Cancel { request, options } | Message::Yield { request, options, .. } => {
            vec![t, u(request), d(options)]
        }
    }
}

/// Arbitrary bytes as a payload span of `ser`: the streaming and the tree
/// transcoder give the same bytes, or both refuse.
pub fn check_transcoders_agree(data: &[u8], ser: Serializer) {
    for count in 1..=2u8 {
        let p = Payload {
            serializer: ser,
            count,
            raw: Bytes::copy_from_slice(data),
        };
        for to in others(ser) {
            match (codec::transcode(&p, to), codec::transcode_tree(&p, to)) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "streaming and tree transcoding differ"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("streaming {a:?}, tree {b:?}"),
            }
        }
    }
}

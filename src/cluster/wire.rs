//! What nodes send each other over NATS.
//!
//! A publication (`node.<name>` subjects) is `E`, the origin node's name
//! (one length octet), the payload's serializer (one octet: 0 JSON, 1
//! MessagePack, 2 CBOR) and a WAMP PUBLISH in that serializer:
//! `[PUBLISH, publication, options, topic, args?, kwargs?]`, its payload
//! spliced as the publisher sent it. Options carry the realm and what the
//! publication carries beyond its payload (publisher disclosure, receiver
//! lists, passthru attributes). The receiver reads it with the router's own
//! decoder ([`codec::decode`]), which validates it and slices the payload
//! out of the NATS message without a copy.
//!
//! Control messages (`ctl`) are MessagePack lists read with the codec's
//! validating parser (bounded depth and size):
//! `["hello" | "beat" | "bye", node, incarnation]` and
//! `["interests", node, incarnation, flags, [[add, realm, match, uri], ...]]`.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::{CalleeOf, Interest, SessionOf};
use crate::codec;
use crate::router::InvokePolicy;
use crate::wamp::message::Serializer;
use crate::wamp::{uri, Dict, Id, MatchPolicy, Message, MessageType, Payload, UriCheck, Value};

/// `flags` of an interests message: part of a whole set (a snapshot),
/// its first part (the receiver forgets what it knew), its last part.
pub const SNAPSHOT: u64 = 1;
pub const FIRST: u64 = 2;
pub const LAST: u64 = 4;

fn ser_code(s: Serializer) -> u8 {
    match s {
        Serializer::Json => 0,
        Serializer::MsgPack => 1,
        Serializer::Cbor => 2,
    }
}

/// A publication's frame for other nodes.
pub fn event(origin: &str, topic: &str, publication: Id, payload: &Payload, options: &Dict) -> Bytes {
    envelope(EVENT, origin, ANY_SHARD, options, topic, publication, payload)
}

/// A frame's kind: a publication (to the shard that takes its origin's).
pub const EVENT: u8 = b'E';
/// A frame's kind: a message about a call, for the shard named.
pub const MESSAGE: u8 = b'M';
/// The target of a publication's frame: no shard in particular.
pub const ANY_SHARD: u16 = u16::MAX;

/// A frame: `kind`, the origin node, the target shard, and `header` as the
/// options of a PUBLISH with `id`, `topic` and `payload`.
pub fn envelope(kind: u8, origin: &str, target: u16, header: &Dict, topic: &str, id: Id, payload: &Payload) -> Bytes {
    let ser = payload.serializer;
    let mut w = codec::MsgWriter::new(
        ser,
        4 + u32::from(payload.count),
        MessageType::Publish,
        payload.raw.len() + topic.len() + 64,
    );
    w.uint(id).dict(header).str(topic).payload(payload);
    let msg = w.finish();
    let origin = &origin.as_bytes()[..origin.len().min(255)];
    let mut out = BytesMut::with_capacity(5 + origin.len() + msg.len());
    out.put_u8(kind);
    out.put_u8(origin.len() as u8);
    out.put_slice(origin);
    out.put_u16(target);
    out.put_u8(ser_code(ser));
    out.put_slice(&msg);
    out.freeze()
}

/// A frame's kind, origin node and target shard, read without decoding it.
pub fn peek(frame: &[u8]) -> Option<(u8, &[u8], u16)> {
    let kind = *frame.first()?;
    if kind != EVENT && kind != MESSAGE {
        return None;
    }
    let n = *frame.get(1)? as usize;
    let origin = frame.get(2..2 + n)?;
    let t = frame.get(2 + n..4 + n)?;
    Some((kind, origin, u16::from_be_bytes([t[0], t[1]])))
}

/// A frame from another node, read and validated.
#[derive(Debug)]
pub struct InEvent {
    pub kind: u8,
    pub origin: String,
    pub target: u16,
    /// A publication's ID (1 for other messages).
    pub publication: Id,
    pub options: Dict,
    pub topic: String,
    pub payload: Payload,
}

/// Reads a frame; `None` when it is not one.
pub fn read_event(frame: &Bytes) -> Option<InEvent> {
    let (kind, origin, target) = peek(frame)?;
    let origin = std::str::from_utf8(origin).ok()?.to_owned();
    let at = 4 + origin.len();
    let ser = match frame.get(at)? {
        0 => Serializer::Json,
        1 => Serializer::MsgPack,
        2 => Serializer::Cbor,
        _ => return None,
    };
    let msg = frame.slice(at + 1..);
    match codec::decode(ser, &msg).ok()? {
        Message::Publish {
            request,
            options,
            topic,
            payload,
        } => Some(InEvent {
            kind,
            origin,
            target,
            publication: request,
            options,
            topic,
            payload,
        }),
        _ => None,
    }
}

/// A control message: who sends it (its name, incarnation and number of
/// shards) and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Ctl {
    pub node: String,
    /// A random number each start of the node.
    pub incarnation: u64,
    pub shards: u16,
    pub body: Body,
}

/// What a control message says.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// The node (re)joins: every node answers with its interests.
    Hello,
    /// The node is alive.
    Beat,
    /// The node leaves (a clean shutdown).
    Bye,
    /// The node's interests, changed (`flags` 0) or all of them in parts.
    Interests { flags: u64, entries: Vec<(bool, Interest)> },
}

impl Ctl {
    pub fn encode(&self) -> Bytes {
        let s = |v: &str| Value::Str(v.to_owned());
        let kind = match &self.body {
            Body::Hello => "hello",
            Body::Beat => "beat",
            Body::Bye => "bye",
            Body::Interests { .. } => "interests",
        };
        let mut v = vec![
            s(kind),
            s(&self.node),
            Value::UInt(self.incarnation),
            Value::UInt(u64::from(self.shards)),
        ];
        if let Body::Interests { flags, entries } = &self.body {
            v.push(Value::UInt(*flags));
            v.push(Value::List(
                entries
                    .iter()
                    .map(|(add, i)| {
                        if let Some(m) = &i.session {
                            return Value::List(vec![
                                Value::Bool(*add),
                                s(&i.realm),
                                s("session"),
                                Value::UInt(m.id),
                                s(&m.authid),
                                s(&m.authrole),
                            ]);
                        }
                        let mut e = vec![Value::Bool(*add), s(&i.realm), s(i.policy.as_str()), s(&i.uri)];
                        if let Some(c) = &i.callee {
                            e.extend([s(c.invoke.as_str()), Value::UInt(c.session), Value::UInt(u64::from(c.shard))]);
                        } else if let Some((id, created)) = i.sub {
                            e.extend([Value::UInt(id), Value::UInt(created)]);
                        }
                        Value::List(e)
                    })
                    .collect(),
            ));
        }
        let mut out = Vec::new();
        codec::msgpack::write_value(&mut out, &Value::List(v));
        out.into()
    }

    /// Reads a control message; `None` when it is not one (or names an
    /// invalid node, realm or URI).
    pub fn decode(bytes: &[u8]) -> Option<Ctl> {
        let Ok(Value::List(l)) = codec::parse_value(Serializer::MsgPack, bytes) else {
            return None;
        };
        let str_at = |i: usize| match l.get(i) {
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        };
        let uint_at = |i: usize| match l.get(i) {
            Some(Value::UInt(u)) => Some(*u),
            _ => None,
        };
        let node = str_at(1).filter(|n| is_name(n))?;
        let incarnation = uint_at(2)?;
        let shards = u16::try_from(uint_at(3)?)
            .ok()
            .filter(|n| *n >= 1 && (*n as usize) <= super::SHARD_SLOTS)?;
        let body = match str_at(0)?.as_str() {
            "hello" => Body::Hello,
            "beat" => Body::Beat,
            "bye" => Body::Bye,
            "interests" => {
                let flags = uint_at(4)?;
                let Some(Value::List(items)) = l.get(5) else { return None };
                let mut entries = Vec::with_capacity(items.len());
                for item in items {
                    let Value::List(e) = item else { return None };
                    if let (
                        Some(Value::Bool(add)),
                        Some(Value::Str(realm)),
                        Some(Value::Str(k)),
                        Some(Value::UInt(id)),
                        Some(Value::Str(authid)),
                        Some(Value::Str(authrole)),
                    ) = (e.first(), e.get(1), e.get(2), e.get(3), e.get(4), e.get(5))
                    {
                        if k != "session" || !uri::is_valid(realm, UriCheck::Concrete) {
                            return None;
                        }
                        entries.push((
                            *add,
                            Interest {
                                realm: Arc::from(realm.as_str()),
                                policy: MatchPolicy::Exact,
                                uri: "".into(),
                                callee: None,
                                session: Some(SessionOf {
                                    id: *id,
                                    authid: Arc::from(authid.as_str()),
                                    authrole: Arc::from(authrole.as_str()),
                                }),
                                sub: None,
                            },
                        ));
                        continue;
                    }
                    let (Some(Value::Bool(add)), Some(Value::Str(realm)), Some(Value::Str(policy)), Some(Value::Str(u))) =
                        (e.first(), e.get(1), e.get(2), e.get(3))
                    else {
                        return None;
                    };
                    let policy = MatchPolicy::parse(policy)?;
                    if !uri::is_valid(realm, UriCheck::Concrete) || !uri::is_valid(u, UriCheck::Pattern(policy)) {
                        return None;
                    }
                    let (callee, sub) = match (e.get(4), e.get(5), e.get(6)) {
                        (None, None, None) => (None, None),
                        (Some(Value::UInt(id)), Some(Value::UInt(created)), None) => (None, Some((*id, *created))),
                        (Some(Value::Str(invoke)), Some(Value::UInt(session)), Some(Value::UInt(shard))) => (
                            Some(CalleeOf {
                                invoke: InvokePolicy::parse(invoke)?,
                                session: *session,
                                shard: u16::try_from(*shard).ok().filter(|s| *s < shards)?,
                            }),
                            None,
                        ),
                        _ => return None,
                    };
                    entries.push((
                        *add,
                        Interest {
                            realm: Arc::from(realm.as_str()),
                            policy,
                            uri: Arc::from(u.as_str()),
                            callee,
                            session: None,
                            sub,
                        },
                    ));
                }
                Body::Interests { flags, entries }
            }
            _ => return None,
        };
        Some(Ctl {
            node,
            incarnation,
            shards,
            body,
        })
    }
}

/// A node or cluster name: 1 to 64 letters, digits, `-` or `_` (one NATS
/// subject token).
pub fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_back_with_its_payload_spliced() {
        for ser in Serializer::ALL {
            let payload = codec::payload_of(
                ser,
                &[Value::UInt(7), Value::Str("x".into())],
                Some(&Dict::new().with("k", Value::Bool(true))),
            );
            let options = Dict::new().with("realm", Value::Str("realm1".into()));
            let frame = event("node-a", "com.example.t", 42, &payload, &options);
            assert_eq!(peek(&frame), Some((EVENT, &b"node-a"[..], ANY_SHARD)));
            let ev = read_event(&frame).expect("reads back");
            assert_eq!(ev.origin, "node-a");
            assert_eq!(ev.publication, 42);
            assert_eq!(ev.topic, "com.example.t");
            assert_eq!(ev.options, options);
            assert_eq!(ev.payload.serializer, ser);
            assert_eq!(ev.payload.count, 2);
            assert_eq!(ev.payload.raw, payload.raw, "the payload bytes as sent");
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let payload = codec::payload_from(Serializer::Json, &[Value::UInt(1)]);
        let frame = event("a", "t.x", 1, &payload, &Dict::new());
        for cut in 0..frame.len() {
            assert!(read_event(&frame.slice(..cut)).is_none(), "cut at {cut}");
        }
        let mut bad = frame.to_vec();
        bad[5] = 9;
        assert!(read_event(&Bytes::from(bad)).is_none(), "unknown serializer");
        assert!(read_event(&Bytes::from_static(b"X\x01a\x00\x00\x00[16,1,{},\"t\"]")).is_none());
        let m = envelope(MESSAGE, "b", 3, &Dict::new(), "", 1, &Payload::empty(Serializer::Cbor));
        assert_eq!(peek(&m), Some((MESSAGE, &b"b"[..], 3)));
        assert_eq!(read_event(&m).map(|e| (e.kind, e.target)), Some((MESSAGE, 3)));
    }

    #[test]
    fn control_messages_read_back_and_invalid_ones_are_refused() {
        let i = |u: &str, p| Interest {
            realm: "realm1".into(),
            policy: p,
            uri: u.into(),
            callee: None,
            session: None,
            sub: None,
        };
        let ctl = |node: &str, body| Ctl {
            node: node.into(),
            incarnation: 9,
            shards: 2,
            body,
        };
        let callee = |shard| Interest {
            callee: Some(CalleeOf {
                invoke: InvokePolicy::RoundRobin,
                session: 77,
                shard,
            }),
            ..i("com.proc", MatchPolicy::Exact)
        };
        let all = [
            ctl("a", Body::Hello),
            ctl("b-1", Body::Beat),
            ctl("c_2", Body::Bye),
            ctl(
                "a",
                Body::Interests {
                    flags: SNAPSHOT | FIRST | LAST,
                    entries: vec![
                        (true, i("com.x", MatchPolicy::Exact)),
                        (false, i("com", MatchPolicy::Prefix)),
                        (true, i("com..y", MatchPolicy::Wildcard)),
                        (true, callee(1)),
                        (
                            true,
                            Interest {
                                sub: Some((123, 1_700_000_000_000)),
                                ..i("com.s", MatchPolicy::Prefix)
                            },
                        ),
                        (
                            false,
                            Interest {
                                uri: "".into(),
                                session: Some(SessionOf {
                                    id: 5,
                                    authid: "alice".into(),
                                    authrole: "user".into(),
                                }),
                                ..i("x", MatchPolicy::Exact)
                            },
                        ),
                    ],
                },
            ),
        ];
        for c in all {
            assert_eq!(Ctl::decode(&c.encode()), Some(c.clone()));
        }
        let bad = [
            ctl("a.b", Body::Hello),
            Ctl {
                shards: 0,
                ..ctl("a", Body::Beat)
            },
            ctl(
                "a",
                Body::Interests {
                    flags: 0,
                    entries: vec![(true, i("com..y", MatchPolicy::Exact))],
                },
            ),
            ctl(
                "a",
                Body::Interests {
                    flags: 0,
                    entries: vec![(
                        true,
                        Interest {
                            realm: "bad realm".into(),
                            ..i("com.x", MatchPolicy::Exact)
                        },
                    )],
                },
            ),
            // a callee on a shard the node does not have
            ctl(
                "a",
                Body::Interests {
                    flags: 0,
                    entries: vec![(true, callee(2))],
                },
            ),
        ];
        for c in bad {
            assert_eq!(Ctl::decode(&c.encode()), None, "{c:?}");
        }
        assert_eq!(Ctl::decode(b"\x93\xa5hello"), None);
        assert_eq!(Ctl::decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]), None);
    }
}

//! MessagePack, differential: Switchyard's reader
//! (`codec::parse_value(MsgPack, ..)`) against `rmpv::decode::read_value` on
//! arbitrary bytes.
//!
//! rmpv reads any MessagePack value (ext types, maps with keys of any type,
//! strings that are not UTF-8) from the front of the input and leaves the
//! rest; Switchyard reads exactly one WAMP value, the whole input. The
//! reference is rmpv's value plus whether it consumed everything, and the
//! target derives from it, in Switchyard's reading order, the first thing a
//! WAMP value may not hold, and so the exact error Switchyard must give.
//!
//! Invariants:
//! - accept/reject agreement, except for the deliberate differences listed
//!   in `ALLOWED DIFFERENCES` below, each with Switchyard's exact error for
//!   the first such thing in reading order (map key, then its value);
//!   anything rmpv refuses (truncation), Switchyard refuses too;
//! - when both accept, the values are the same: integers exactly (`UInt`, or
//!   `Int` when negative, whatever the marker), f32 widened to f64, floats
//!   bit for bit, str as `Str`, bin as `Bytes`, maps in order with their
//!   duplicate keys;
//! - what Switchyard accepts is nested at most `MAX_DEPTH` deep and keeps the
//!   `Int`-is-negative invariant;
//! - round trip: `msgpack::write_value` of the value parses back (in
//!   Switchyard) to exactly the same value, and rmpv reads the written bytes,
//!   all of them, to that same value.
//!
//! ALLOWED DIFFERENCES (rmpv accepts, Switchyard refuses with):
//! 1. nesting deeper than `codec::MAX_DEPTH` (64; rmpv allows several
//!    hundred levels): "nesting too deep";
//! 2. ext types (fixext 1/2/4/8/16, ext 8/16/32, the timestamp type -1
//!    among them): "unsupported MessagePack type";
//! 3. a map key that is not a string (WAMP dictionaries have string keys):
//!    "dictionary key must be a string";
//! 4. a str whose bytes are not UTF-8 (rmpv keeps the raw bytes): "invalid
//!    UTF-8 in string";
//! 5. trailing bytes after the value (rmpv reads a stream and stops after
//!    one value): "trailing data after value";
//! 6. the reserved marker 0xc1, which the MessagePack spec says is never
//!    used: rmpv reads it as nil, Switchyard refuses it with "unsupported
//!    MessagePack type" (so the target walks the bytes beside rmpv's value
//!    to tell 0xc1 from a nil).
#![no_main]

#[path = "common/exact.rs"]
mod exact;

use libfuzzer_sys::fuzz_target;
use rmpv::Value as Mp;
use switchyard::codec::{self, msgpack, DecodeError, MAX_DEPTH};
use switchyard::wamp::message::Serializer;
use switchyard::wamp::{Dict, Value};

use exact::{depth, int_invariant, same};

/// rmpv's reading of `bytes`: the value and whether it used every byte.
fn reference(bytes: &[u8]) -> Option<(Mp, bool)> {
    let mut rd = bytes;
    let v = rmpv::decode::read_value(&mut rd).ok()?;
    let used = bytes.len() - rd.len();
    // the walk in first_problem keeps step with rmpv
    let mut pos = 0;
    if first_problem(&v, 0, &bytes[..used], &mut pos).is_none() {
        assert_eq!(pos, used, "target bug: walk out of step with rmpv at the end of {v:?}");
    }
    Some((v, rd.is_empty()))
}

/// The first thing in `v` that a WAMP value may not hold, in the order
/// Switchyard reads it (depth first; a map key, then its value), as the error
/// Switchyard gives for it. `v` is at `depth` and was read from `bytes` at
/// `*pos`, which this advances past it: rmpv reads the reserved marker 0xc1
/// as nil, so only the bytes tell a nil from it (allowed difference 6).
fn first_problem(v: &Mp, depth: usize, bytes: &[u8], pos: &mut usize) -> Option<&'static str> {
    if depth > MAX_DEPTH {
        return Some("nesting too deep");
    }
    let m = bytes[*pos];
    let be = |at: usize, n: usize| bytes[at..at + n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
    // bytes of the marker and its length field, and of the data after them
    let (head, data) = match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0..=0xc3 => (1, 0),
        0x80..=0x9f => (1, 0),
        0xa0..=0xbf => (1, (m & 0x1f) as usize),
        0xc4 | 0xd9 => (2, be(*pos + 1, 1)),
        0xc5 | 0xda => (3, be(*pos + 1, 2)),
        0xc6 | 0xdb => (5, be(*pos + 1, 4)),
        0xc7 => (3, be(*pos + 1, 1)),
        0xc8 => (4, be(*pos + 1, 2)),
        0xc9 => (6, be(*pos + 1, 4)),
        0xca | 0xce | 0xd2 => (1, 4),
        0xcb | 0xcf | 0xd3 => (1, 8),
        0xcc | 0xd0 => (1, 1),
        0xcd | 0xd1 => (1, 2),
        0xd4..=0xd8 => (2, 1 << (m - 0xd4)),
        0xdc | 0xde => (3, 0),
        0xdd | 0xdf => (5, 0),
    };
    let kind_ok = match v {
        Mp::Nil => matches!(m, 0xc0 | 0xc1),
        Mp::Boolean(_) => matches!(m, 0xc2 | 0xc3),
        Mp::Integer(_) => matches!(m, 0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3),
        Mp::F32(_) => m == 0xca,
        Mp::F64(_) => m == 0xcb,
        Mp::String(_) => matches!(m, 0xa0..=0xbf | 0xd9..=0xdb),
        Mp::Binary(_) => matches!(m, 0xc4..=0xc6),
        Mp::Ext(..) => matches!(m, 0xc7..=0xc9 | 0xd4..=0xd8),
        Mp::Array(_) => matches!(m, 0x90..=0x9f | 0xdc | 0xdd),
        Mp::Map(_) => matches!(m, 0x80..=0x8f | 0xde | 0xdf),
    };
    assert!(
        kind_ok,
        "target bug: walk out of step with rmpv at byte {} ({m:#04x}) for {v:?}",
        *pos
    );
    *pos += head + data;
    match v {
        Mp::Nil if m == 0xc1 => Some("unsupported MessagePack type"),
        Mp::Array(items) => items.iter().find_map(|x| first_problem(x, depth + 1, bytes, pos)),
        Mp::Map(entries) => {
            for (k, x) in entries {
                if let Some(p) = first_problem(k, depth + 1, bytes, pos) {
                    return Some(p);
                }
                if !matches!(k, Mp::String(s) if s.is_str()) {
                    return Some("dictionary key must be a string");
                }
                if let Some(p) = first_problem(x, depth + 1, bytes, pos) {
                    return Some(p);
                }
            }
            None
        }
        Mp::String(s) if !s.is_str() => Some("invalid UTF-8 in string"),
        Mp::Ext(..) => Some("unsupported MessagePack type"),
        _ => None,
    }
}

/// [`first_problem`] of the value rmpv read from the start of `bytes`.
fn problem(v: &Mp, bytes: &[u8]) -> Option<&'static str> {
    first_problem(v, 0, bytes, &mut 0)
}

/// rmpv's value in Switchyard's terms; `v` has no [`first_problem`].
fn convert(v: &Mp) -> Value {
    match v {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(*b),
        Mp::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Value::UInt(u),
            (None, Some(n)) => Value::Int(n),
            (None, None) => unreachable!("rmpv integer {i:?}"),
        },
        Mp::F32(f) => Value::Float(*f as f64),
        Mp::F64(f) => Value::Float(*f),
        Mp::String(s) => Value::Str(s.as_str().expect("UTF-8 checked by first_problem").to_owned()),
        Mp::Binary(b) => Value::Bytes(b.clone()),
        Mp::Array(items) => Value::List(items.iter().map(convert).collect()),
        Mp::Map(entries) => Value::Dict(Dict(
            entries
                .iter()
                .map(|(k, x)| (k.as_str().expect("string key checked by first_problem").to_owned(), convert(x)))
                .collect(),
        )),
        Mp::Ext(..) => unreachable!("ext checked by first_problem"),
    }
}

fn round_trip(v: &Value) {
    let mut out = Vec::new();
    msgpack::write_value(&mut out, v);
    let back =
        codec::parse_value(Serializer::MsgPack, &out).unwrap_or_else(|e| panic!("write_value output does not parse back: {e}; {out:?}"));
    assert!(same(v, &back), "round trip changed the value: {v:?} -> {out:?} -> {back:?}");
    let (theirs, all) = reference(&out).unwrap_or_else(|| panic!("rmpv refuses write_value output {out:?}"));
    assert!(all, "rmpv reads less than the write_value output {out:?}");
    assert_eq!(problem(&theirs, &out), None, "rmpv reads write_value output {out:?} as {theirs:?}");
    let theirs = convert(&theirs);
    assert!(
        same(&back, &theirs),
        "rmpv reads write_value output {out:?} as {theirs:?}, Switchyard as {back:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let ours = codec::parse_value(Serializer::MsgPack, data);
    match (&ours, reference(data)) {
        (ours, Some((theirs, all))) => {
            let want = problem(&theirs, data).or(if all { None } else { Some("trailing data after value") });
            match (ours, want) {
                (Ok(a), None) => {
                    let b = convert(&theirs);
                    assert!(same(a, &b), "values differ: Switchyard {a:?}, rmpv {theirs:?}");
                }
                (Err(e), Some(why)) => assert_eq!(
                    *e,
                    DecodeError::Malformed(why),
                    "Switchyard refuses rmpv's {theirs:?} (all bytes read: {all}) for another reason"
                ),
                (Ok(a), Some(why)) => panic!("Switchyard reads {a:?}, but rmpv's {theirs:?} (all bytes: {all}) has: {why}"),
                (Err(e), None) => panic!("Switchyard refuses ({e}) what rmpv reads as {theirs:?}"),
            }
        }
        (Ok(a), None) => panic!("Switchyard reads {a:?} where rmpv refuses"),
        (Err(_), None) => {}
    }

    if let Ok(v) = &ours {
        assert!(depth(v) <= MAX_DEPTH, "accepted a value {} deep", depth(v));
        assert!(int_invariant(v), "Value::Int holds a non-negative integer: {v:?}");
        round_trip(v);
    }
});

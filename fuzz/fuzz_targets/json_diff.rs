//! JSON, differential: Switchyard's reader (`codec::parse_value(Json, ..)`,
//! `codec::json::parse`) against serde_json on arbitrary bytes.
//!
//! serde_json (with `float_roundtrip`, so its floats are correctly rounded)
//! reads into Switchyard's `Value` through its own visitor below, keeping
//! dictionary order and duplicate keys as Switchyard does; WAMP's binary
//! convention (a string of NUL and base64 is binary) is then applied to the
//! reference's string values (not to keys), since Switchyard's reader applies
//! it while reading.
//!
//! Invariants:
//! - `parse_value(Json, ..)` and `json::parse` give the same result;
//! - accept/reject agreement, except for the deliberate differences listed
//!   in `ALLOWED DIFFERENCES` below; any other disagreement is a crash;
//! - when both accept, the values are the same: integers exactly (`UInt` /
//!   negative `Int`), floats bit for bit (both round correctly), strings and
//!   keys exactly, dictionaries in order with their duplicates;
//! - what Switchyard accepts is nested at most `MAX_DEPTH` deep and keeps the
//!   `Int`-is-negative invariant;
//! - round trip: `json::write_value` of the value parses back (in Switchyard)
//!   to the same value, non-finite floats excepted (they are written as
//!   `null`), and serde_json reads the written text to that same value.
//!
//! ALLOWED DIFFERENCES (each checked as narrowly as the two results allow):
//! 1. nesting: serde_json accepts up to 128 levels, Switchyard refuses a
//!    value deeper than `codec::MAX_DEPTH` (64) with "nesting too deep";
//! 2. numbers beyond the range of f64 (`1e400`, a 400-digit integer):
//!    serde_json refuses them ("number out of range"); Switchyard reads them
//!    as ±infinity (Rust's `f64` parser, as JavaScript's `JSON.parse` does),
//!    which its writer then sends as `null`;
//! 3. `-0`: serde_json reads the integer `-0` as the float -0.0, Switchyard
//!    as the unsigned integer 0 (`Value::Int` holds negative integers only);
//!    allowed only where the text holds an integer literal `-0`.
//!
//!
//! Found by this target and fixed: the `\uXXXX` reader took a sign
//! (`"\u+041"` read as "A"; `json_hex_escapes_take_no_sign`).
#![no_main]

#[path = "common/exact.rs"]
mod exact;

use std::fmt;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use switchyard::codec::{self, json, DecodeError, MAX_DEPTH};
use switchyard::wamp::message::Serializer;
use switchyard::wamp::{Dict, Value};

use exact::{depth, has_non_finite, int_invariant, same};

/// A `Value` as serde_json reads it.
struct Ref(Value);

impl<'de> Deserialize<'de> for Ref {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RefVisitor)
    }
}

struct RefVisitor;

impl<'de> Visitor<'de> for RefVisitor {
    type Value = Ref;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Ref, E> {
        Ok(Ref(Value::Null))
    }
    fn visit_bool<E>(self, b: bool) -> Result<Ref, E> {
        Ok(Ref(Value::Bool(b)))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Ref, E> {
        Ok(Ref(Value::UInt(u)))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Ref, E> {
        // serde_json calls this for negative integers only; keep it exact
        Ok(Ref(if i < 0 { Value::Int(i) } else { Value::UInt(i as u64) }))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Ref, E> {
        Ok(Ref(Value::Float(f)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Ref, E> {
        Ok(Ref(Value::Str(s.to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ref, A::Error> {
        let mut l = Vec::new();
        while let Some(Ref(v)) = seq.next_element()? {
            l.push(v);
        }
        Ok(Ref(Value::List(l)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ref, A::Error> {
        let mut d = Vec::new();
        while let Some((k, Ref(v))) = map.next_entry::<String, Ref>()? {
            d.push((k, v));
        }
        Ok(Ref(Value::Dict(Dict(d))))
    }
}

/// WAMP's JSON binary convention, applied to string values (not keys): NUL
/// followed by valid (padded) base64 is binary.
fn wamp_binary(v: Value) -> Value {
    match v {
        Value::Str(s) => match s.strip_prefix('\0').map(|b| base64::engine::general_purpose::STANDARD.decode(b)) {
            Some(Ok(b)) => Value::Bytes(b),
            _ => Value::Str(s),
        },
        Value::List(l) => Value::List(l.into_iter().map(wamp_binary).collect()),
        Value::Dict(d) => Value::Dict(Dict(d.0.into_iter().map(|(k, x)| (k, wamp_binary(x))).collect())),
        v => v,
    }
}

/// serde_json's reading of `bytes`, in Switchyard's terms.
fn reference(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Ref>(bytes).map(|r| wamp_binary(r.0))
}

/// True if `text` may hold the integer literal `-0` (outside a string or
/// not: this only narrows allowed difference 3).
fn has_minus_zero_integer(text: &[u8]) -> bool {
    text.windows(2)
        .enumerate()
        .any(|(i, w)| w == b"-0" && !matches!(text.get(i + 2), Some(b'.' | b'e' | b'E' | b'0'..=b'9')))
}

/// Switchyard's value `ours` against the reference's `theirs`: [`same`], but
/// with allowed difference 3 (`UInt(0)` for serde_json's -0.0) where
/// `minus_zero` says the text may hold `-0`.
fn agree(ours: &Value, theirs: &Value, minus_zero: bool) -> bool {
    match (ours, theirs) {
        (Value::UInt(0), Value::Float(f)) if minus_zero && f.to_bits() == (-0.0f64).to_bits() => true,
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| agree(a, b, minus_zero)),
        (Value::Dict(x), Value::Dict(y)) => {
            x.0.len() == y.0.len()
                && x.0
                    .iter()
                    .zip(&y.0)
                    .all(|((ka, va), (kb, vb))| ka == kb && agree(va, vb, minus_zero))
        }
        _ => same(ours, theirs),
    }
}

/// `back` is `v` after a trip through JSON: the same, except that a
/// non-finite float comes back as `null`.
fn same_through_json(v: &Value, back: &Value) -> bool {
    match (v, back) {
        (Value::Float(f), Value::Null) => !f.is_finite(),
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_through_json(a, b)),
        (Value::Dict(x), Value::Dict(y)) => {
            x.0.len() == y.0.len()
                && x.0
                    .iter()
                    .zip(&y.0)
                    .all(|((ka, va), (kb, vb))| ka == kb && same_through_json(va, vb))
        }
        _ => same(v, back),
    }
}

fn round_trip(v: &Value) {
    let mut out = Vec::new();
    json::write_value(&mut out, v);
    let back = codec::parse_value(Serializer::Json, &out)
        .unwrap_or_else(|e| panic!("write_value output does not parse back: {e}; {:?}", String::from_utf8_lossy(&out)));
    assert!(
        same_through_json(v, &back),
        "round trip changed the value: {v:?} -> {:?} -> {back:?}",
        String::from_utf8_lossy(&out)
    );
    let theirs =
        reference(&out).unwrap_or_else(|e| panic!("serde_json refuses write_value output {:?}: {e}", String::from_utf8_lossy(&out)));
    assert!(
        same(&back, &theirs),
        "serde_json reads write_value output {:?} as {theirs:?}, Switchyard as {back:?}",
        String::from_utf8_lossy(&out)
    );
}

fuzz_target!(|data: &[u8]| {
    let ours = codec::parse_value(Serializer::Json, data);
    let direct = json::parse(data);
    match (&ours, &direct) {
        (Ok(a), Ok(b)) => assert!(same(a, b), "parse_value {a:?} vs json::parse {b:?}"),
        (Err(a), Err(b)) => assert!(a == b || *a == DecodeError::Malformed("invalid UTF-8")),
        _ => panic!("parse_value {ours:?} vs json::parse {direct:?}"),
    }

    let theirs = reference(data);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => assert!(
            agree(a, b, has_minus_zero_integer(data)),
            "values differ: Switchyard {a:?}, serde_json {b:?}"
        ),
        (Err(e), Ok(b)) => {
            // allowed difference 1
            assert!(
                depth(b) > MAX_DEPTH && *e == DecodeError::Malformed("nesting too deep"),
                "Switchyard refuses ({e}) what serde_json reads as {b:?} (depth {})",
                depth(b)
            );
        }
        (Ok(a), Err(e)) => {
            // allowed difference 2
            assert!(
                e.to_string().starts_with("number out of range") && has_non_finite(a),
                "Switchyard reads {a:?} where serde_json refuses: {e}"
            );
        }
        (Err(_), Err(_)) => {}
    }

    if let Ok(v) = &ours {
        assert!(depth(v) <= MAX_DEPTH, "accepted a value {} deep", depth(v));
        assert!(int_invariant(v), "Value::Int holds a non-negative integer: {v:?}");
        round_trip(v);
    }
});

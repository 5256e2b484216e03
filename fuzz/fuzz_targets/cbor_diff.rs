//! CBOR, differential: Switchyard's reader (`codec::parse_value(Cbor, ..)`,
//! on minicbor's decoder) against ciborium's `Value` reader on arbitrary
//! bytes.
//!
//! ciborium reads any CBOR value from the front of the input and leaves the
//! rest; Switchyard reads exactly one WAMP value, the whole input. The
//! reference is ciborium's value and whether it consumed everything.
//!
//! Invariants:
//! - what Switchyard accepts, ciborium reads too, from all of the input, to
//!   the same value: integers exactly where `UInt`/`Int` hold them, else as
//!   the nearest float (as JSON reads them), bignums (tags 2 and 3 on bytes)
//!   likewise, floats bit for bit (half and single widened), text as `Str`,
//!   bytes as `Bytes`, maps in order with their duplicate keys, other tags
//!   dropped (their content stands for them);
//! - what ciborium reads from all of the input, Switchyard accepts, unless
//!   the value holds something a WAMP value may not (ALLOWED DIFFERENCES);
//! - what Switchyard accepts is nested at most `MAX_DEPTH` deep and keeps the
//!   `Int`-is-negative invariant;
//! - round trip: `cbor::write_value` of the value parses back (in
//!   Switchyard) to exactly the same value, and ciborium reads the written
//!   bytes, all of them, to that same value.
//!
//! ALLOWED DIFFERENCES (ciborium accepts, Switchyard refuses):
//! 1. nesting deeper than `codec::MAX_DEPTH` (64) — tags do not count;
//! 2. a map key that is not a text string (WAMP dictionaries have string keys);
//! 3. trailing bytes after the value (ciborium stops after one value);
//! 4. what RFC 8949 calls not well-formed and ciborium reads all the same,
//!    told by [`oddities`], a walk over the bytes: an indefinite-length string
//!    with a chunk that is not a definite string of its own major type
//!    (3.2.3; ciborium reads nested indefinite chunks), and a simple value
//!    below 32 in the two-byte form (0xf8 then a byte below 0x20, 3.3;
//!    ciborium reads `f8 16` as null).
//!
//! ALLOWED DIFFERENCES the other way (ciborium refuses, Switchyard accepts),
//! also told by [`oddities`]:
//! 5. tag 2 or 3 on something else than a byte string, not a valid bignum:
//!    Switchyard reads the value under it, as under any tag it does not know;
//! 6. a negative bignum (tag 3) of at most 16 bytes beyond -2^127: ciborium
//!    reads such bignums into an i128 and refuses ("integer too large");
//!    Switchyard reads the nearest float, as for every bignum beyond 64 bits;
//! 7. items nested more than 200 deep counting tags: ciborium's recursion
//!    limit counts tags, Switchyard reads tags in a loop and counts only
//!    lists and dictionaries against `MAX_DEPTH`. The walk stops at 200
//!    levels, so past them the target lets either reader refuse.
//!
//! Simple values other than false, true, null and undefined are refused by
//! both (ciborium has no `Value` for them).
#![no_main]

#[path = "common/exact.rs"]
mod exact;

use ciborium::Value as Cb;
use libfuzzer_sys::fuzz_target;
use switchyard::codec::{self, cbor, MAX_DEPTH};
use switchyard::wamp::message::Serializer;
use switchyard::wamp::{Dict, Value};

use exact::{depth, int_invariant, same};

/// ciborium's reading of `bytes`: the value and whether it used every byte.
fn reference(bytes: &[u8]) -> Option<(Cb, bool)> {
    let mut rd = bytes;
    let v: Cb = ciborium::de::from_reader(&mut rd).ok()?;
    Some((v, rd.is_empty()))
}

/// ciborium's value in Switchyard's terms, or `None` if it holds what a
/// WAMP value may not (allowed differences 1 and 2). `depth` counts as
/// Switchyard does: the top value at 0, tags not at all.
fn convert(v: &Cb, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    Some(match v {
        Cb::Null => Value::Null,
        Cb::Bool(b) => Value::Bool(*b),
        Cb::Integer(i) => {
            let i = i128::from(*i);
            match (u64::try_from(i), i64::try_from(i)) {
                (Ok(u), _) => Value::UInt(u),
                (_, Ok(n)) => Value::Int(n),
                _ => Value::Float(i as f64),
            }
        }
        Cb::Tag(t @ (2 | 3), inner) if matches!(**inner, Cb::Bytes(_)) => match &**inner {
            Cb::Bytes(b) => cbor::bignum_value(b, *t == 3),
            _ => return None,
        },
        Cb::Float(f) => Value::Float(*f),
        Cb::Text(s) => Value::Str(s.clone()),
        Cb::Bytes(b) => Value::Bytes(b.clone()),
        Cb::Tag(_, inner) => return convert(inner, depth),
        Cb::Array(items) => Value::List(items.iter().map(|x| convert(x, depth + 1)).collect::<Option<_>>()?),
        Cb::Map(entries) => Value::Dict(Dict(
            entries
                .iter()
                .map(|(k, x)| match untag(k) {
                    Cb::Text(k) => Some((k.clone(), convert(x, depth + 1)?)),
                    _ => None,
                })
                .collect::<Option<_>>()?,
        )),
        _ => return None,
    })
}

/// What the CBOR item at the start of `b` holds that the two readers treat
/// differently: [`BAD_CHUNK`], an indefinite-length string with a chunk that
/// is not a definite string of the same major type, or a two-byte simple
/// value below 32 (allowed difference 4, not well-formed),
/// and [`LOOSE_BIGNUM`], a tag 2 or 3 on something else than a byte string
/// (5). `None`: the bytes are not one well-formed item.
fn oddities(b: &[u8]) -> Option<u8> {
    fn walk(b: &[u8], pos: &mut usize, depth: usize) -> Option<u8> {
        if depth > 200 {
            return Some(DEEP);
        }
        let ib = *b.get(*pos)?;
        *pos += 1;
        let (major, info) = (ib >> 5, ib & 31);
        let arg = match info {
            0..=23 => Some(info as u64),
            24..=27 => {
                let n = 1usize << (info - 24);
                let v = b.get(*pos..*pos + n)?.iter().fold(0u64, |a, &x| (a << 8) | x as u64);
                *pos += n;
                Some(v)
            }
            31 if (2..=5).contains(&major) => None,
            _ if major == 7 => Some(0),
            _ => return None,
        };
        match (major, arg) {
            (7, Some(v)) if info == 24 && v < 32 => Some(BAD_CHUNK),
            (0 | 1, _) | (7, _) => Some(0),
            (2 | 3, Some(n)) => {
                *pos = pos.checked_add(usize::try_from(n).ok()?).filter(|&p| p <= b.len())?;
                Some(0)
            }
            (2 | 3, None) => loop {
                let c = *b.get(*pos)?;
                if c == 0xff {
                    *pos += 1;
                    return Some(0);
                }
                if c >> 5 != major || c & 31 == 31 {
                    return Some(BAD_CHUNK);
                }
                walk(b, pos, depth + 1)?;
            },
            (4 | 5, n) => {
                let per = if major == 5 { 2 } else { 1 };
                let mut found = 0;
                match n {
                    Some(n) => {
                        for _ in 0..n.checked_mul(per)? {
                            found |= walk(b, pos, depth + 1)?;
                            if found & DEEP != 0 {
                                return Some(found);
                            }
                        }
                    }
                    None => loop {
                        if *b.get(*pos)? == 0xff {
                            *pos += 1;
                            break;
                        }
                        found |= walk(b, pos, depth + 1)?;
                        if found & DEEP != 0 {
                            return Some(found);
                        }
                    },
                }
                Some(found)
            }
            (6, tag) => {
                let loose = matches!(tag, Some(2 | 3)) && b.get(*pos).is_some_and(|c| c >> 5 != 2);
                // the inner item, walked once (a walk per tag level would
                // be exponential in nested tags)
                let start = *pos;
                let inner = walk(b, pos, depth + 1)?;
                if inner & DEEP != 0 {
                    return Some(inner);
                }
                // a definite byte string of at most 16 bytes under tag 3,
                // beyond i128: its head, then its bytes up to `pos`
                let too_large = tag == Some(3) && b[start] >> 5 == 2 && {
                    let info = b[start] & 31;
                    let head = match info {
                        0..=23 => 1,
                        24..=27 => 1 + (1usize << (info - 24)),
                        _ => usize::MAX,
                    };
                    let len = *pos - start;
                    head != usize::MAX
                        && len >= head
                        && len - head <= 16
                        && b[start + head..*pos].iter().fold(0u128, |a, &x| (a << 8) | x as u128) > i128::MAX as u128
                };
                Some(inner | if loose || too_large { LOOSE_BIGNUM } else { 0 })
            }
            _ => None,
        }
    }
    walk(b, &mut 0, 0)
}

/// See [`oddities`].
const BAD_CHUNK: u8 = 1;
const LOOSE_BIGNUM: u8 = 2;
/// Nested more than 200 deep, tags counted (allowed difference 7); the walk
/// stops there.
const DEEP: u8 = 4;

/// A value under its tags (a key may be tagged too).
fn untag(v: &Cb) -> &Cb {
    match v {
        Cb::Tag(_, inner) => untag(inner),
        v => v,
    }
}

fn round_trip(v: &Value) {
    let mut out = Vec::new();
    cbor::write_value(&mut out, v);
    let back = codec::parse_value(Serializer::Cbor, &out).unwrap_or_else(|e| panic!("write_value output does not parse back: {e}; {out:02x?}"));
    assert!(same(v, &back), "round trip changed the value: {v:?} -> {out:02x?} -> {back:?}");
    let (theirs, all) = reference(&out).unwrap_or_else(|| panic!("ciborium refuses write_value output {out:02x?}"));
    assert!(all, "ciborium reads less than the write_value output {out:02x?}");
    let theirs = convert(&theirs, 0).unwrap_or_else(|| panic!("ciborium reads write_value output {out:02x?} as a non-WAMP value"));
    assert!(same(&back, &theirs), "ciborium reads {out:02x?} as {theirs:?}, Switchyard as {back:?}");
}

fuzz_target!(|data: &[u8]| {
    let ours = codec::parse_value(Serializer::Cbor, data);
    let theirs = reference(data);
    match (&ours, &theirs) {
        (Ok(a), Some((t, true))) => {
            let b = convert(t, 0).unwrap_or_else(|| panic!("Switchyard reads {a:?} where ciborium's {t:?} is not a WAMP value"));
            assert!(same(a, &b), "values differ: Switchyard {a:?}, ciborium {t:?}");
        }
        (Ok(a), Some((t, false))) => panic!("Switchyard reads {a:?} from all the input, ciborium only {t:?} from part of it"),
        (Ok(a), None) => assert!(
            oddities(data).is_some_and(|o| o & (LOOSE_BIGNUM | DEEP) != 0),
            "Switchyard reads {a:?} where ciborium refuses"
        ),
        (Err(e), Some((t, true))) => {
            assert!(
                // (past 200 levels the walk stops, and what lies beyond is
                // not known: both ways are let be)
                convert(t, 0).is_none() || oddities(data).is_some_and(|o| o & (BAD_CHUNK | DEEP) != 0),
                "Switchyard refuses ({e}) what ciborium reads as {t:?}"
            );
        }
        (Err(_), _) => {}
    }
    if let Ok(v) = &ours {
        assert!(depth(v) <= MAX_DEPTH, "accepted a value {} deep", depth(v));
        assert!(int_invariant(v), "Value::Int holds a non-negative integer: {v:?}");
        round_trip(v);
    }
});

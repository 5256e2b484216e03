//! Shared by the differential targets (`json_diff`, `msgpack_diff`): exact
//! comparison of values and the nesting depth Switchyard's parsers count.

#![allow(dead_code)]

use switchyard::wamp::Value;

/// Exact equality: like `==`, but floats compare by their bits (so `-0.0`
/// differs from `0.0`), and any NaN equals any NaN (`f32` NaNs go through an
/// `as f64` conversion whose payload bits are not the point here).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Dict(x), Value::Dict(y)) => {
            x.0.len() == y.0.len() && x.0.iter().zip(&y.0).all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        _ => a == b,
    }
}

/// The depth of the deepest value in `v`, the way `codec::MAX_DEPTH` counts
/// it: the value itself is at depth 0 and the items of a list (the values of
/// a dictionary) at one more than the list (dictionary). A parser refuses a
/// value nested deeper than `MAX_DEPTH`, so an empty list may sit at depth
/// `MAX_DEPTH`, a list holding anything only one level above.
pub fn depth(v: &Value) -> usize {
    match v {
        Value::List(l) => l.iter().map(|x| 1 + depth(x)).max().unwrap_or(0),
        Value::Dict(d) => d.0.iter().map(|(_, x)| 1 + depth(x)).max().unwrap_or(0),
        _ => 0,
    }
}

/// True if `v` holds a non-finite float anywhere.
pub fn has_non_finite(v: &Value) -> bool {
    match v {
        Value::Float(f) => !f.is_finite(),
        Value::List(l) => l.iter().any(has_non_finite),
        Value::Dict(d) => d.0.iter().any(|(_, x)| has_non_finite(x)),
        _ => false,
    }
}

/// Invariant of [`Value`]: `Int` holds negative integers only.
pub fn int_invariant(v: &Value) -> bool {
    match v {
        Value::Int(i) => *i < 0,
        Value::List(l) => l.iter().all(int_invariant),
        Value::Dict(d) => d.0.iter().all(|(_, x)| int_invariant(x)),
        _ => true,
    }
}

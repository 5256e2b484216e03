//! The codec benches' payloads, shared with the instruction-count example
//! `examples/transcode_instructions.rs`: realistic mixed content of a chosen
//! encoded size, in a PUBLISH or CALL frame.

use bytes::Bytes;
use switchyard::codec;
use switchyard::wamp::message::Serializer;
use switchyard::wamp::{Dict, Value};

fn encode_value(ser: Serializer, v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    codec::write_value(ser, &mut out, v);
    out
}

/// Arguments and ArgumentsKw of mixed, realistic content: `items` records
/// in Arguments, a string of `pad` bytes in ArgumentsKw.
fn payload_values(items: usize, pad: usize) -> (Value, Value) {
    let mut args = vec![Value::UInt(1), Value::Str("hello".into()), Value::Float(2.5), Value::Bool(true)];
    for i in 0..items as u64 {
        args.push(Value::Dict(
            Dict::new()
                .with("id", Value::UInt(i))
                .with("name", Value::Str(format!("item-{i}")))
                .with("score", Value::Float(i as f64 * 0.25 - 3.0))
                .with("tags", Value::List(vec![Value::Str("a".into()), Value::Int(-(i as i64) - 1)])),
        ));
    }
    let kwargs = Dict::new()
        .with("seq", Value::UInt(12345))
        .with("note", Value::Str("x".repeat(pad)));
    (Value::List(args), Value::Dict(kwargs))
}

/// Encoded length of `args` + `kwargs` as they sit in a message.
fn payload_len(ser: Serializer, args: &Value, kwargs: &Value) -> usize {
    encode_value(ser, args).len() + encode_value(ser, kwargs).len() + usize::from(ser == Serializer::Json)
}

/// Payload values whose encoding in `ser` is `target` bytes (or just over).
fn sized_payload(ser: Serializer, target: usize) -> (Value, Value) {
    let mut items = 0;
    while payload_len(ser, &payload_values(items + 1, 0).0, &payload_values(items + 1, 0).1) <= target {
        items += 1;
    }
    let mut pad = 0;
    loop {
        let (a, k) = payload_values(items, pad);
        let len = payload_len(ser, &a, &k);
        if len >= target {
            return (a, k);
        }
        pad += target - len;
    }
}

/// `[code, Request, Options, URI, Arguments, ArgumentsKw]` (PUBLISH or CALL).
pub fn frame(ser: Serializer, code: u64, uri: &str, target: usize) -> Bytes {
    let (args, kwargs) = sized_payload(ser, target);
    let options = Dict::new().with("acknowledge", Value::Bool(true));
    let msg = Value::List(vec![
        Value::UInt(code),
        Value::UInt(4242),
        Value::Dict(options),
        Value::Str(uri.into()),
        args,
        kwargs,
    ]);
    Bytes::from(encode_value(ser, &msg))
}

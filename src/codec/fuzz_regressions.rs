//! Inputs the fuzz targets found (fuzz/, docs/FUZZING.md), minimized. Each
//! was a frame that `decode` accepted although it was not valid JSON or
//! MessagePack as `parse_value` reads it, or whose payload `transcode` then
//! refused, so the router took a PUBLISH or CALL it could not deliver to
//! peers of the other serializer.

use bytes::Bytes;

use super::*;

fn decode_json(s: &str) -> Result<Message, DecodeError> {
    decode(Serializer::Json, &Bytes::copy_from_slice(s.as_bytes()))
}

fn payload(m: Message) -> Payload {
    match m {
        Message::Publish { payload, .. } | Message::Call { payload, .. } => payload,
        other => panic!("no payload in {other:?}"),
    }
}

/// The payload's values, through the other serializer and back.
fn through_other(p: &Payload) -> (Vec<Value>, Vec<Value>) {
    let other = match p.serializer {
        Serializer::Json => Serializer::MsgPack,
        Serializer::MsgPack | Serializer::Cbor => Serializer::Json,
    };
    let there = transcode(p, other).expect("transcode");
    let back = transcode(&there, p.serializer).expect("transcode back");
    let values = |p: &Payload| payload_values(p).unwrap();
    (values(&there), values(&back))
}

#[test]
fn json_integers_beyond_64_bits_transcode() {
    // json_decode crash-9a3377332bf8: simd-json refuses these, the reader
    // reads them as floats
    let p = payload(decode_json(r#"[16,1,{},"t",[18446744073709551616,-9223372036854775809]]"#).unwrap());
    let want = vec![Value::List(vec![
        Value::Float(18446744073709551616.0),
        Value::Float(-9223372036854775809.0),
    ])];
    assert_eq!(json::parse_payload(&p.raw).unwrap(), want);
    let (there, back) = through_other(&p);
    assert_eq!(there, want);
    assert_eq!(back, want);
}

#[test]
fn json_long_decimals_transcode_exactly() {
    // json_decode crash-eebea69e8011: simd-json 0.14 read the fifth number
    // as -184333881725.71344 (simd-lite/simd-json#455: a long decimal that
    // crosses one of its 64-byte blocks), so MessagePack receivers got
    // another value than JSON ones
    let frame = "[16,1,{},\"t\",[-844674.09551616,-925544674.09551616,-92516116,-9223372036616116,\
                 -922203644674.09551616,-92516116,-9223372036616116,-9222036618]]";
    let p = payload(decode_json(frame).unwrap());
    let want = json::parse(format!("[{}]", std::str::from_utf8(&p.raw).unwrap()).as_bytes()).unwrap();
    let Value::List(want) = want else { panic!() };
    let Value::List(args) = &want[0] else { panic!() };
    assert_eq!(args[4], Value::Float("-922203644674.09551616".parse().unwrap()));
    assert_eq!(through_other(&p), (want.clone(), want));
}

#[test]
fn json_lone_surrogates_are_refused_in_payloads() {
    // json_decode crash-ef8684f59694: the payload validator let a lone
    // surrogate escape through, the parser does not
    for bad in [
        r#"[16,1,{},"t",["\ude80"]]"#,
        r#"[16,1,{},"t",["\ud83d"]]"#,
        r#"[16,1,{},"t",["\ud83dx"]]"#,
        r#"[16,1,{},"t",["\ud83d\u0041"]]"#,
        r#"[16,1,{},"t",[],{"\udc00":1}]"#,
    ] {
        assert!(decode_json(bad).is_err(), "{bad}");
    }
    let p = payload(decode_json(r#"[16,1,{},"t",["\ud83d\ude80"]]"#).unwrap());
    let want = vec![Value::List(vec![Value::Str("🚀".into())])];
    assert_eq!(through_other(&p), (want.clone(), want));
}

#[test]
fn json_integers_with_leading_zeros_are_refused() {
    // json_decode crash-67b8a985d49e: `[34, 85346237, 0539267581]`
    assert!(decode_json("[34, 85346237, 0539267581]").is_err());
    assert!(decode_json("[34,01,5]").is_err());
    assert!(decode_json("[034,1,5]").is_err());
    assert!(decode_json("[34,10,5]").is_ok());
}

#[test]
fn json_minus_zero_is_an_unsigned_zero() {
    // json_decode crash-4c2eed0ba87d: ` -0` parsed to `Value::Int(0)`, which
    // holds negative integers only, and came back from MessagePack as UInt(0)
    assert_eq!(json::parse(b" -0"), Ok(Value::UInt(0)));
    let p = payload(decode_json("[16,1,{},\"t\",[-0]]").unwrap());
    let want = vec![Value::List(vec![Value::UInt(0)])];
    assert_eq!(through_other(&p), (want.clone(), want));
}

#[test]
fn msgpack_non_string_keys_are_refused_in_payloads() {
    // msgpack_decode crash-c69af4b59047: `{"roti": 86, 101: true}` as
    // ArgumentsKw; the payload validator did not check key types
    let head = [0x96, 0x10, 0x01, 0x80, 0xa1, b't', 0x90];
    for kwargs in [
        &[0x81, 0x01, 0xc0][..],
        &[0x82, 0xa1, b'a', 0x01, 0x65, 0xc3],
        &[0x81, 0xa1, b'a', 0x81, 0x90, 0xc0],
    ] {
        let frame = [&head[..], kwargs].concat();
        assert!(decode(Serializer::MsgPack, &Bytes::from(frame)).is_err(), "{kwargs:x?}");
    }
    // in Arguments too: [16, 1, {}, "t", [{1: nil}]]
    let frame = vec![0x95, 0x10, 0x01, 0x80, 0xa1, b't', 0x91, 0x81, 0x01, 0xc0];
    assert!(decode(Serializer::MsgPack, &Bytes::from(frame)).is_err());
    // string keys, values of any type
    let frame = [&head[..], &[0x82, 0xa1, b'a', 0x81, 0xa1, b'b', 0x90, 0xa1, b'c', 0x01]].concat();
    let p = payload(decode(Serializer::MsgPack, &Bytes::from(frame)).unwrap());
    let (there, back) = through_other(&p);
    assert_eq!(there, back);
}

#[test]
fn json_hex_escapes_take_no_sign() {
    // json_diff: "\u+041" was read as "A" (from_str_radix takes a sign), so
    // JSON subscribers were sent invalid JSON and MessagePack ones an "A"
    assert!(json::parse(br#""\u+fff""#).is_err());
    assert!(json::parse(br#""\u-041""#).is_err());
    assert!(decode_json(r#"[16,1,{},"t",["\u+041"]]"#).is_err());
    assert!(decode_json(r#"[16,1,{},"t\u+041"]"#).is_err());
    assert!(decode_json(r#"[16,1,{"k\u+041":1},"t"]"#).is_err());
    assert_eq!(json::parse(br#""\u0041\u00e9""#).ok(), Some(Value::Str("Aé".into())));
}

#[test]
fn json_numbers_beyond_f64_read_as_infinities() {
    // a policy, not an accident: the payload validator checks syntax only,
    // so the value reader must accept every number it lets through
    assert_eq!(json::parse(b"1e400").ok(), Some(Value::Float(f64::INFINITY)));
    assert_eq!(json::parse(b"-1e400").ok(), Some(Value::Float(f64::NEG_INFINITY)));
    let p = payload(decode_json("[16,1,{},\"t\",[1e400]]").expect("accepted"));
    let (there, back) = through_other(&p);
    assert_eq!(there, vec![Value::List(vec![Value::Float(f64::INFINITY)])]);
    assert_eq!(back, vec![Value::List(vec![Value::Null])], "JSON has no infinity");
}

fn nested_list(n: usize, inner: Value) -> Value {
    (0..n).fold(inner, |v, _| Value::List(vec![v]))
}

fn nested_dict(n: usize, inner: Value) -> Value {
    (0..n).fold(inner, |v, _| Value::Dict(Dict::new().with("a", v)))
}

fn encode_message(ser: Serializer, v: &Value) -> Bytes {
    let mut out = Vec::new();
    write_value(ser, &mut out, v);
    Bytes::from(out)
}

#[test]
fn nesting_depth_is_the_same_for_decode_transcode_and_parse_value() {
    // Found writing the targets' invariants: decode allowed one level more
    // (JSON) or any depth (MessagePack) in payloads than transcode and
    // parse_value, and one level more in dictionaries than parse_value. Now
    // the message array is at depth 0, and nothing deeper than MAX_DEPTH.
    for ser in Serializer::ALL {
        for n in MAX_DEPTH - 3..=MAX_DEPTH + 2 {
            for (what, args, inner_depth) in [
                ("scalar in lists", nested_list(n, Value::UInt(1)), n + 1),
                ("empty list in lists", nested_list(n, Value::List(vec![])), n + 1),
            ] {
                let frame = encode_message(
                    ser,
                    &Value::List(vec![Value::UInt(16), Value::UInt(1), Value::Dict(Dict::new()), "t".into(), args]),
                );
                let decoded = decode(ser, &frame);
                assert_eq!(decoded.is_ok(), inner_depth <= MAX_DEPTH, "{ser:?} {what} {n}: {decoded:?}");
                assert_eq!(parse_value(ser, &frame).is_ok(), inner_depth <= MAX_DEPTH, "{ser:?} {what} {n}");
                if let Ok(m) = decoded {
                    let p = payload(m);
                    let (there, back) = through_other(&p);
                    assert_eq!(there, back);
                }
            }
            // Options: the dictionary is at depth 1, its innermost value at n + 1
            let frame = encode_message(
                ser,
                &Value::List(vec![Value::UInt(32), Value::UInt(1), nested_dict(n, Value::UInt(1)), "t".into()]),
            );
            assert_eq!(decode(ser, &frame).is_ok(), n < MAX_DEPTH, "{ser:?} options {n}");
            assert_eq!(parse_value(ser, &frame).is_ok(), n < MAX_DEPTH, "{ser:?} options {n}");
        }
    }
}

//! The simd-json re-check (docs/PERFORMANCE.md, "simd-json 0.19"): the
//! router left simd-json 0.14 because it misread long decimals
//! (simd-lite/simd-json#455, found by the `json_decode` fuzz target). Here
//! simd-json 0.19 reads the fuzz corpora, the regression inputs and long
//! decimals placed across its 64-byte blocks, and must agree with the
//! codec's own reader wherever both accept a document, and with Rust's
//! correctly rounded `f64` parsing on every decimal.

use std::path::Path;

use simd_json::prelude::*;
use simd_json::{OwnedValue, StaticNode};
use switchyard::codec::json;
use switchyard::wamp::Value;

/// Whether simd-json's value is the codec's, read by the same rules (the
/// codec reads `-0` as an unsigned zero and `"\u0000" + base64` strings as
/// binary, as WAMP's JSON serializer says).
fn same(ours: &Value, simd: &OwnedValue) -> bool {
    match (ours, simd) {
        (Value::Null, OwnedValue::Static(StaticNode::Null)) => true,
        (Value::Bool(a), OwnedValue::Static(StaticNode::Bool(b))) => a == b,
        (Value::UInt(a), OwnedValue::Static(StaticNode::U64(b))) => a == b,
        (Value::UInt(a), OwnedValue::Static(StaticNode::I64(b))) => i128::from(*a) == i128::from(*b),
        (Value::Int(a), OwnedValue::Static(StaticNode::I64(b))) => a == b,
        (Value::Float(a), OwnedValue::Static(StaticNode::F64(b))) => a.to_bits() == b.to_bits(),
        (Value::Str(a), OwnedValue::String(b)) => a == b,
        (Value::Bytes(a), OwnedValue::String(b)) => b
            .strip_prefix('\0')
            .and_then(|b64| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok())
            .is_some_and(|b| &b == a),
        (Value::List(a), OwnedValue::Array(b)) => a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| same(x, y)),
        (Value::Dict(a), OwnedValue::Object(b)) => {
            let pairs = <[(String, Value)]>::iter(&a.0);
            // both keep a repeated key, and a small object in its order
            let in_order = a.0.len() == b.len() && pairs.clone().zip(b.iter()).all(|((k, x), (l, y))| k == l && same(x, y));
            // otherwise, key by key (the last of a repeated key counts)
            let last = |k: &str| pairs.clone().rev().find(|(key, _)| key == k).map(|(_, v)| v);
            let keys: std::collections::HashSet<&str> = pairs.clone().map(|(k, _)| k.as_str()).collect();
            in_order || (keys.len() == b.len() && b.iter().all(|(k, v)| last(k).is_some_and(|x| same(x, v))))
        }
        _ => false,
    }
}

/// simd-json's reading of `doc` (on a copy: it parses in place).
fn simd(doc: &[u8]) -> Option<OwnedValue> {
    let mut copy = doc.to_vec();
    simd_json::to_owned_value(&mut copy).ok()
}

/// Documents where both readers agree, where only the codec accepts, and
/// where only simd-json does; any disagreement on a value fails the test.
#[derive(Debug, Default)]
struct Tally {
    agreed: usize,
    only_codec: usize,
    only_simd: usize,
}

fn compare(doc: &[u8], tally: &mut Tally) {
    match (json::parse(doc), simd(doc)) {
        (Ok(ours), Some(theirs)) => {
            assert!(
                same(&ours, &theirs),
                "simd-json reads {:?} as {theirs:?}, the codec as {ours:?}",
                String::from_utf8_lossy(doc)
            );
            tally.agreed += 1;
        }
        (Ok(_), None) => tally.only_codec += 1,
        (Err(_), Some(_)) => tally.only_simd += 1,
        (Err(_), None) => {}
    }
}

#[test]
fn simd_json_agrees_with_the_codec_on_the_fuzz_corpora() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut tally = Tally::default();
    let mut files = 0;
    for target in ["json_decode", "json_diff"] {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else { continue };
        for entry in dir.flatten() {
            let Ok(doc) = std::fs::read(entry.path()) else { continue };
            files += 1;
            compare(&doc, &mut tally);
        }
    }
    eprintln!("{files} corpus files: {tally:?}");
    assert!(files > 0, "no corpus files under {}", root.display());
    assert!(tally.agreed > 0, "{tally:?}");
}

#[test]
fn simd_json_reads_the_regression_inputs_as_the_codec_does() {
    let mut tally = Tally::default();
    // json_decode crash-eebea69e8011 (simd-json#455), as a frame
    let long = "[16,1,{},\"t\",[-844674.09551616,-925544674.09551616,-92516116,-9223372036616116,\
                -922203644674.09551616,-92516116,-9223372036616116,-9222036618]]";
    compare(long.as_bytes(), &mut tally);
    assert_eq!(tally.agreed, 1, "simd-json 0.19 still refuses or misreads #455's input: {tally:?}");
    // json_decode crash-9a3377332bf8: integers beyond 64 bits, which the
    // codec reads as the nearest float
    let big = br#"[16,1,{},"t",[18446744073709551616,-9223372036854775809]]"#;
    compare(big, &mut tally);
    // the other regression inputs of src/codec/fuzz_regressions.rs
    for doc in [
        r#"[1,"\ud800"]"#,
        r#"[01]"#,
        r#"[-0, -0.0, 0e0]"#,
        r#"["\u002d1"]"#,
        r#"[1e400, -1e400]"#,
    ] {
        compare(doc.as_bytes(), &mut tally);
    }
    eprintln!("regression inputs: {tally:?}");
    assert!(tally.agreed >= 3, "{tally:?}");
}

/// A small deterministic generator (xorshift), so the test needs no seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn simd_json_reads_long_decimals_across_its_blocks_exactly() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for round in 0..400 {
        // numbers of 12 to 30 digits, with and without exponents, one after
        // another so that they start at every offset of a 64-byte block
        let mut doc = String::from("[");
        let mut texts = Vec::new();
        for k in 0..24 {
            let digits = 12 + (rng.next() % 19) as usize;
            let point = 1 + (rng.next() % (digits as u64 - 1)) as usize;
            let mut t = String::new();
            if rng.next().is_multiple_of(2) {
                t.push('-');
            }
            for d in 0..digits {
                if d == point {
                    t.push('.');
                }
                let digit = (rng.next() % 10) as u8;
                t.push(char::from(b'0' + if d == 0 && digit == 0 { 1 } else { digit }));
            }
            if rng.next().is_multiple_of(3) {
                t.push_str(&format!("e{}", (rng.next() % 40) as i64 - 20));
            }
            if k > 0 {
                doc.push(',');
            }
            // a varying pad moves the next number along the block
            doc.push_str(&" ".repeat(((round + k) % 7) as usize));
            doc.push_str(&t);
            texts.push(t);
        }
        doc.push(']');
        let theirs = simd(doc.as_bytes()).unwrap_or_else(|| panic!("simd-json refused {doc}"));
        let OwnedValue::Array(items) = theirs else {
            panic!("not an array: {doc}")
        };
        assert_eq!(items.len(), texts.len());
        for (t, v) in texts.iter().zip(items.iter()) {
            let want: f64 = t.parse().expect("a decimal");
            let got = v.as_f64().unwrap_or_else(|| panic!("{t} read as {v:?}"));
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "simd-json reads {t} as {got:e}, not {want:e}, in {doc}"
            );
            checked += 1;
        }
        let mut tally = Tally::default();
        compare(doc.as_bytes(), &mut tally);
        assert_eq!(tally.agreed, 1, "{doc}");
    }
    assert_eq!(checked, 400 * 24);
}

//! Streaming transcoding: a payload span read in its serializer and written
//! in another in one pass, with no value tree in between. The readers
//! (`json::stream_payload`, `msgpack::stream_payload`,
//! `cbor::stream_payload`) validate exactly as
//! the tree parsers do (structure, UTF-8, string keys, [`MAX_DEPTH`]) and
//! tell a [`Sink`] what they read; the sinks write the bytes the tree
//! writers would (`transcode` is checked against the tree path, byte for
//! byte, in the tests and by the fuzz targets).
//!
//! JSON does not say how long a list or dictionary is until it ends, and
//! MessagePack and CBOR put the length first. [`BinOut`] therefore writes
//! the items and notes where each such header goes; `finish` splices the
//! headers in with one copy of the bytes, so the work stays linear however
//! deep the nesting.

use super::{cbor, json, msgpack};
use crate::wamp::message::Serializer;
use crate::wamp::Value;

/// What a reader found, in order.
pub(super) trait Sink {
    fn null(&mut self);
    fn bool(&mut self, b: bool);
    fn uint(&mut self, u: u64);
    /// A negative integer.
    fn int(&mut self, i: i64);
    fn float(&mut self, f: f64);
    /// A string's bytes, which the reader checked to be UTF-8.
    fn str(&mut self, s: &[u8]);
    /// A dictionary key (always a string), UTF-8 like `str`.
    fn key(&mut self, s: &[u8]);
    fn bytes(&mut self, b: &[u8]);
    /// A list (`map` false) or a dictionary opens; `len` if known.
    fn open(&mut self, map: bool, len: Option<u32>);
    /// It closes, after `len` items (entries, for a dictionary).
    fn close(&mut self, map: bool, len: u32);

    /// A number or other scalar read as a [`Value`] (containers, strings
    /// and binaries are not scalars and are not read this way).
    #[inline]
    fn scalar(&mut self, v: &Value) {
        match *v {
            Value::Null => self.null(),
            Value::Bool(b) => self.bool(b),
            Value::UInt(u) => self.uint(u),
            Value::Int(i) => self.int(i),
            Value::Float(f) => self.float(f),
            Value::Str(_) | Value::Bytes(_) | Value::List(_) | Value::Dict(_) => {}
        }
    }
}

/// Writes JSON: a payload span's elements separated by commas.
pub(super) struct JsonOut {
    pub(super) out: Vec<u8>,
    /// Per open container: a dictionary?, and the keys and values written.
    stack: Vec<(bool, u32)>,
    /// The payload's elements written.
    top: u32,
}

impl JsonOut {
    pub(super) fn new(capacity: usize) -> Self {
        JsonOut {
            out: Vec::with_capacity(capacity),
            stack: Vec::with_capacity(8),
            top: 0,
        }
    }

    /// The separator before the next key or value.
    #[inline]
    fn before(&mut self) {
        match self.stack.last_mut() {
            None => {
                if self.top > 0 {
                    self.out.push(b',');
                }
                self.top += 1;
            }
            Some((map, n)) => {
                if *map && *n % 2 == 1 {
                    self.out.push(b':');
                } else if *n > 0 {
                    self.out.push(b',');
                }
                *n += 1;
            }
        }
    }
}

impl Sink for JsonOut {
    #[inline]
    fn null(&mut self) {
        self.before();
        self.out.extend_from_slice(b"null");
    }

    #[inline]
    fn bool(&mut self, b: bool) {
        self.before();
        self.out.extend_from_slice(if b { b"true" } else { b"false" });
    }

    #[inline]
    fn uint(&mut self, u: u64) {
        self.before();
        json::write_uint(&mut self.out, u);
    }

    #[inline]
    fn int(&mut self, i: i64) {
        self.before();
        json::write_int(&mut self.out, i);
    }

    #[inline]
    fn float(&mut self, f: f64) {
        self.before();
        json::write_float(&mut self.out, f);
    }

    fn str(&mut self, s: &[u8]) {
        self.before();
        json::write_str_bytes(&mut self.out, s);
    }

    fn key(&mut self, s: &[u8]) {
        self.str(s);
    }

    fn bytes(&mut self, b: &[u8]) {
        use base64::Engine;
        self.before();
        self.out.extend_from_slice(b"\"\\u0000");
        let start = self.out.len();
        let n = base64::encoded_len(b.len(), true).unwrap_or(0);
        self.out.resize(start + n, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(b, &mut self.out[start..])
            .unwrap_or(0);
        self.out.truncate(start + written);
        self.out.push(b'"');
    }

    fn open(&mut self, map: bool, _len: Option<u32>) {
        self.before();
        self.out.push(if map { b'{' } else { b'[' });
        self.stack.push((map, 0));
    }

    fn close(&mut self, map: bool, _len: u32) {
        self.stack.pop();
        self.out.push(if map { b'}' } else { b']' });
    }
}

/// Writes MessagePack or CBOR.
pub(super) struct BinOut {
    cbor: bool,
    out: Vec<u8>,
    /// Headers still to splice in: (where, a dictionary?, its length).
    headers: Vec<(usize, bool, u32)>,
    /// Per open container: its entry in `headers`, if its length was not
    /// known when it opened.
    stack: Vec<Option<usize>>,
}

impl BinOut {
    pub(super) fn new(to: Serializer, capacity: usize) -> Self {
        BinOut {
            cbor: to == Serializer::Cbor,
            out: Vec::with_capacity(capacity),
            headers: Vec::with_capacity(8),
            stack: Vec::with_capacity(8),
        }
    }

    #[inline]
    fn header(cbor: bool, out: &mut Vec<u8>, map: bool, len: u32) {
        match (cbor, map) {
            (true, true) => cbor::write_head(out, cbor::major::MAP, len as u64),
            (true, false) => cbor::write_head(out, cbor::major::ARRAY, len as u64),
            (false, true) => msgpack::write_map_len(out, len),
            (false, false) => msgpack::write_array_len(out, len),
        }
    }

    /// The bytes, with every header in its place.
    pub(super) fn finish(self) -> Vec<u8> {
        if self.headers.is_empty() {
            return self.out;
        }
        let mut all = Vec::with_capacity(self.out.len() + 5 * self.headers.len());
        let mut from = 0;
        // in the order the containers opened, which is the order of `at`
        for (at, map, len) in self.headers {
            all.extend_from_slice(&self.out[from..at]);
            Self::header(self.cbor, &mut all, map, len);
            from = at;
        }
        all.extend_from_slice(&self.out[from..]);
        all
    }
}

impl Sink for BinOut {
    #[inline]
    fn null(&mut self) {
        self.out.push(if self.cbor { 0xf6 } else { 0xc0 });
    }

    #[inline]
    fn bool(&mut self, b: bool) {
        self.out.push(match (self.cbor, b) {
            (true, true) => 0xf5,
            (true, false) => 0xf4,
            (false, true) => 0xc3,
            (false, false) => 0xc2,
        });
    }

    #[inline]
    fn uint(&mut self, u: u64) {
        if self.cbor {
            cbor::write_uint(&mut self.out, u);
        } else {
            msgpack::write_uint(&mut self.out, u);
        }
    }

    #[inline]
    fn int(&mut self, i: i64) {
        if self.cbor {
            cbor::write_sint(&mut self.out, i);
        } else {
            msgpack::write_sint(&mut self.out, i);
        }
    }

    #[inline]
    fn float(&mut self, f: f64) {
        if self.cbor {
            cbor::write_f64(&mut self.out, f);
        } else {
            msgpack::write_f64(&mut self.out, f);
        }
    }

    #[inline]
    fn str(&mut self, s: &[u8]) {
        if self.cbor {
            cbor::write_str(&mut self.out, s);
        } else {
            msgpack::write_str(&mut self.out, s);
        }
    }

    fn key(&mut self, s: &[u8]) {
        self.str(s);
    }

    fn bytes(&mut self, b: &[u8]) {
        if self.cbor {
            cbor::write_head(&mut self.out, cbor::major::BYTES, b.len() as u64);
            self.out.extend_from_slice(b);
        } else {
            msgpack::write_bin(&mut self.out, b);
        }
    }

    fn open(&mut self, map: bool, len: Option<u32>) {
        match len {
            Some(n) => {
                Self::header(self.cbor, &mut self.out, map, n);
                self.stack.push(None);
            }
            None => {
                self.headers.push((self.out.len(), map, 0));
                self.stack.push(Some(self.headers.len() - 1));
            }
        }
    }

    fn close(&mut self, _map: bool, len: u32) {
        if let Some(Some(i)) = self.stack.pop() {
            self.headers[i].2 = len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{payload_values, transcode, transcode_tree};
    use crate::wamp::message::Serializer;
    use crate::wamp::{Dict, Payload, Value};
    use bytes::Bytes;

    const ALL: [Serializer; 3] = [Serializer::Json, Serializer::MsgPack, Serializer::Cbor];

    fn payload(ser: Serializer, values: &[Value]) -> Payload {
        let mut raw = Vec::new();
        super::super::write_elements(&mut raw, ser, values);
        Payload {
            serializer: ser,
            count: values.len() as u8,
            raw: Bytes::from(raw),
        }
    }

    /// The streaming and the tree path agree, byte for byte, or both refuse.
    fn agree(p: &Payload) {
        for to in ALL {
            let (stream, tree) = (transcode(p, to), transcode_tree(p, to));
            let what = || format!("{:?} -> {to:?}: {:?}", p.serializer, String::from_utf8_lossy(&p.raw));
            match (stream, tree) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{}", what()),
                // the messages may differ; that both refuse may not
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{}: streaming {a:?}, tree {b:?}", what()),
            }
        }
    }

    fn sample() -> Vec<Value> {
        let deep = (0..63).fold(Value::UInt(1), |v, _| Value::List(vec![v]));
        vec![
            Value::List(vec![
                Value::Str("grüße \"q\" \\ \n\t\u{1} 🚀".into()),
                Value::Bytes(vec![0, 1, 2, 255]),
                Value::Bytes(Vec::new()),
                Value::Int(-1),
                Value::Int(i64::MIN),
                Value::UInt(u64::MAX),
                Value::UInt(0),
                Value::Float(0.1),
                Value::Float(-1.5e300),
                Value::Float(f64::INFINITY),
                Value::Null,
                Value::Bool(true),
                Value::Bool(false),
                Value::List(Vec::new()),
                Value::Dict(Dict::new()),
                Value::List((0..70_000).map(Value::UInt).collect()),
                Value::Str("x".repeat(70_000)),
                deep,
            ]),
            Value::Dict(
                Dict::new()
                    .with("a", Value::List(vec![Value::Dict(Dict::new().with("", Value::Null))]))
                    .with("ключ", Value::Str("\0not base64!".into())),
            ),
        ]
    }

    #[test]
    fn agrees_with_the_tree_path() {
        for from in ALL {
            agree(&payload(from, &sample()));
            agree(&payload(from, &sample()[..1]));
            for v in &sample() {
                agree(&payload(from, std::slice::from_ref(v)));
            }
        }
    }

    #[test]
    fn json_text_forms_agree() {
        for text in [
            r#"[1, -0, 1.0, 1e400, -1e400, 12345678901234567890123, "\u0000AAH/", "\u0000%%", "a\/b\ud83d\ude80", {"k" : [ ] , "l":{}}]"#,
            r#"[ ] , { }"#,
            r#"["\u0000"]"#,
            "[0.30000000000000004, 5e-324, 123456789012345678901234567890.5]",
        ] {
            agree(&Payload {
                serializer: Serializer::Json,
                count: 1, // a JSON span's elements are counted as it is read
                raw: Bytes::copy_from_slice(text.as_bytes()),
            });
        }
    }

    #[test]
    fn refuses_what_the_tree_path_refuses() {
        let too_deep = "[".repeat(65) + &"]".repeat(65);
        let deep_ok = "[".repeat(64) + &"]".repeat(64);
        for text in [
            "[1,]",
            "[1 2]",
            "{\"a\"}",
            "[{1:2}]",
            "[\"\\x\"]",
            "[tru]",
            "[",
            "[1],",
            "[1],,{}",
            "[\"\\ud83d\"]",
            "[\"a\u{1}\"]",
            "[01]",
            "[-]",
            "[1.]",
            "[1e]",
            too_deep.as_str(),
            deep_ok.as_str(),
            "[1] x",
        ] {
            let p = Payload {
                serializer: Serializer::Json,
                count: 1,
                raw: Bytes::copy_from_slice(text.as_bytes()),
            };
            agree(&p);
            assert_eq!(transcode(&p, Serializer::MsgPack).is_ok(), payload_values(&p).is_ok(), "{text}");
        }
        let cbor_deep_ok = vec![0x81u8; 63].into_iter().chain([0x80]).collect::<Vec<u8>>();
        for (i, raw) in [
            // tags: a bignum (2, 3) on definite and indefinite bytes, the
            // innermost tag deciding; other tags read past
            vec![0x81, 0xc2, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![0x81, 0xc3, 0x42, 1, 0],
            vec![0x81, 0xc3, 0x5f, 0x41, 1, 0x41, 0, 0xff],
            vec![0x81, 0xc2, 0xd8, 0x20, 0x41, 7],
            vec![0x81, 0xd8, 0x20, 0xc2, 0x41, 7],
            vec![0x81, 0xc2, 0x61, b'x'],
            vec![0x81, 0xdf, 0x01],
            // integers of every width, the negative ones past i64
            vec![
                0x84, 0x17, 0x18, 0xff, 0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff,
            ],
            // floats: half, single, double; false, true, null, undefined
            vec![
                0x87, 0xf9, 0x3c, 0x00, 0xf9, 0x7c, 0x00, 0xfa, 0x3f, 0xc0, 0, 0, 0xfb, 0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a,
                0xf4, 0xf5, 0xf6,
            ],
            vec![0x82, 0xf6, 0xf7],
            // simple values, reserved and break: refused
            vec![0x81, 0xe0],
            vec![0x81, 0xf8, 0x20],
            vec![0x81, 0xfc],
            vec![0x81, 0xff],
            vec![0x81, 0x1c],
            // indefinite strings, lists and maps
            vec![0x82, 0x7f, 0x61, b'a', 0x62, 0xc3, 0xa9, 0xff, 0x5f, 0xff],
            vec![0x81, 0x7f, 0x61, 0xc3, 0x61, 0xa9, 0xff],
            vec![0x81, 0x7f, 0x41, b'a', 0xff],
            vec![0x81, 0x7f, 0x7f, 0xff, 0xff],
            vec![0x82, 0x9f, 0x01, 0x9f, 0xff, 0xff, 0xbf, 0x61, b'k', 0xbf, 0xff, 0xff],
            vec![0x81, 0x9f, 0x01],
            // keys: text (tagged or not), nothing else
            vec![0x81, 0xa1, 0xd8, 0x20, 0x61, b'k', 0x01],
            vec![0x81, 0xa1, 0x01, 0x01],
            vec![0x81, 0xa1, 0x41, b'k', 0x01],
            vec![0x81, 0xbf, 0x61, b'k', 0xff],
            // lengths beyond the input, invalid UTF-8, trailing bytes
            vec![0x81, 0x9b, 0, 0, 1, 0, 0, 0, 0, 0],
            vec![0x81, 0x7a, 0xff, 0xff, 0xff, 0xff],
            vec![0x81, 0x61, 0xff],
            vec![0x80, 0x00],
            vec![0x81u8; 500],
            cbor_deep_ok,
        ]
        .into_iter()
        .enumerate()
        {
            let p = Payload {
                serializer: Serializer::Cbor,
                count: 1,
                raw: Bytes::from(raw),
            };
            agree(&p);
            // the cases above that are well formed
            let ok = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 19, 21, 30].contains(&i);
            assert_eq!(
                transcode(&p, Serializer::Json).is_ok(),
                ok,
                "case {i}: {:?}",
                transcode(&p, Serializer::Json)
            );
        }
        let deep_ok = vec![0x91u8; 63].into_iter().chain([0x90]).collect::<Vec<u8>>();
        for raw in [
            vec![0xdd, 0xff, 0xff, 0xff, 0xff],
            vec![0x91, 0xa1, 0xff],
            vec![0x81, 0x01, 0x01],
            vec![0x91, 0xc1],
            vec![0x91u8; 500],
            deep_ok,
            vec![0x91, 0xd4, 0, 0],
            vec![0x90, 0x00],
            vec![0x81, 0xa1, b'k'],
        ] {
            agree(&Payload {
                serializer: Serializer::MsgPack,
                count: 1,
                raw: Bytes::from(raw),
            });
        }
    }
}

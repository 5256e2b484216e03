//! Streaming transcoding: a payload span read in its serializer and written
//! in another in one pass, with no value tree in between. The readers
//! (`json::stream_payload`, `msgpack::stream_payload`) validate exactly as
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

use std::io::Write;

use super::{cbor, msgpack};
use crate::wamp::message::Serializer;
use crate::wamp::Value;

/// What a reader found, in order.
pub(super) trait Sink {
    /// A scalar (null, bool, integer, float).
    fn scalar(&mut self, v: &Value);
    fn str(&mut self, s: &str);
    /// A dictionary key (always a string).
    fn key(&mut self, s: &str);
    fn bytes(&mut self, b: &[u8]);
    /// A list (`map` false) or a dictionary opens; `len` if known.
    fn open(&mut self, map: bool, len: Option<u32>);
    /// It closes, after `len` items (entries, for a dictionary).
    fn close(&mut self, map: bool, len: u32);
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
            stack: Vec::new(),
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
    fn scalar(&mut self, v: &Value) {
        self.before();
        match v {
            // as json::write_value does, without a String in between
            Value::Float(f) if f.is_finite() => {
                let _ = write!(self.out, "{f:?}");
            }
            v => super::json::write_value(&mut self.out, v),
        }
    }

    fn str(&mut self, s: &str) {
        self.before();
        super::json::write_str(&mut self.out, s);
    }

    fn key(&mut self, s: &str) {
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
            headers: Vec::new(),
            stack: Vec::new(),
        }
    }

    fn header(cbor: bool, out: &mut Vec<u8>, map: bool, len: u32) {
        if cbor {
            let major = if map { cbor::major::MAP } else { cbor::major::ARRAY };
            cbor::write_head(out, major, len as u64);
        } else if map {
            let _ = rmp::encode::write_map_len(out, len);
        } else {
            let _ = rmp::encode::write_array_len(out, len);
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
    fn scalar(&mut self, v: &Value) {
        if self.cbor {
            cbor::write_value(&mut self.out, v);
        } else {
            msgpack::write_value(&mut self.out, v);
        }
    }

    fn str(&mut self, s: &str) {
        if self.cbor {
            cbor::write_str(&mut self.out, s);
        } else {
            let _ = rmp::encode::write_str(&mut self.out, s);
        }
    }

    fn key(&mut self, s: &str) {
        self.str(s);
    }

    fn bytes(&mut self, b: &[u8]) {
        if self.cbor {
            cbor::write_head(&mut self.out, cbor::major::BYTES, b.len() as u64);
            self.out.extend_from_slice(b);
        } else {
            let _ = rmp::encode::write_bin(&mut self.out, b);
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

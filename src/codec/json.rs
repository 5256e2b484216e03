//! JSON: a validating envelope reader that borrows from the frame, a value
//! parser for Options/Details, and the encoder. Payload spans are validated
//! and kept raw; full payload parsing (for transcoding) goes through the same
//! reader.

use base64::Engine;
use bytes::{BufMut, Bytes};

use super::{DecodeError, MAX_DEPTH};
use crate::wamp::{Dict, Value};

/// Reads the top-level message array of one JSON frame.
#[derive(Debug)]
pub struct JsonReader<'a> {
    buf: &'a [u8],
    pos: usize,
    first: bool,
}

fn err(msg: &'static str) -> DecodeError {
    DecodeError::Malformed(msg)
}

impl<'a> JsonReader<'a> {
    /// A reader over `buf`, which must be valid UTF-8 (checked by the caller).
    pub fn new(buf: &'a [u8]) -> Self {
        JsonReader { buf, pos: 0, first: true }
    }

    fn skip_ws(&mut self) {
        while let Some(&b) = self.buf.get(self.pos) {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn expect(&mut self, b: u8, msg: &'static str) -> Result<(), DecodeError> {
        self.skip_ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(err(msg))
        }
    }

    /// Opens the message array.
    pub fn list_start(&mut self) -> Result<(), DecodeError> {
        self.expect(b'[', "message is not a JSON array")
    }

    /// True if another element follows in the message array.
    pub fn has_more(&mut self) -> bool {
        self.skip_ws();
        !matches!(self.peek(), Some(b']') | None)
    }

    fn elem(&mut self) -> Result<(), DecodeError> {
        self.skip_ws();
        if !self.first {
            self.expect(b',', "expected ',' between message elements")?;
            self.skip_ws();
        }
        self.first = false;
        if self.peek().is_none() {
            return Err(err("message array ends early"));
        }
        Ok(())
    }

    /// Reads an element that must be a non-negative integer.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.elem()?;
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        if self.pos == start || !matches!(self.peek(), Some(b',' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
            return Err(err("expected a non-negative integer"));
        }
        if self.buf[start] == b'0' && self.pos - start > 1 {
            return Err(err("leading zero in integer"));
        }
        std::str::from_utf8(&self.buf[start..self.pos])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(err("integer out of range"))
    }

    /// Reads an element that must be a string.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        self.elem()?;
        if self.peek() != Some(b'"') {
            return Err(err("expected a string"));
        }
        self.parse_string()
    }

    /// Reads an element that must be a dictionary.
    pub fn dict(&mut self) -> Result<Dict, DecodeError> {
        self.elem()?;
        if self.peek() != Some(b'{') {
            return Err(err("expected a dictionary"));
        }
        // at depth 1, inside the message array
        match self.parse_value(1)? {
            Value::Dict(d) => Ok(d),
            _ => Err(err("expected a dictionary")),
        }
    }

    /// Reads the optional Arguments list and ArgumentsKw dictionary that end a
    /// message, validated, as one raw span of `frame`. With `opaque` (a
    /// message in payload passthru mode) the Arguments may instead be one
    /// string (a binary is a `\u0000`-prefixed one), and nothing follows it.
    pub fn payload(&mut self, frame: &Bytes, opaque: bool) -> Result<(u8, Bytes), DecodeError> {
        if !self.has_more() {
            return Ok((0, Bytes::new()));
        }
        self.elem()?;
        let start = self.pos;
        if opaque && self.peek() == Some(b'"') {
            self.skip_value()?;
            if self.has_more() {
                return Err(err("a transparent payload is one element"));
            }
            return Ok((1, frame.slice(start..self.pos)));
        }
        if self.peek() != Some(b'[') {
            return Err(err("Arguments must be a list"));
        }
        self.skip_value()?;
        let mut count = 1;
        if self.has_more() {
            self.elem()?;
            if self.peek() != Some(b'{') {
                return Err(err("ArgumentsKw must be a dictionary"));
            }
            self.skip_value()?;
            count = 2;
        }
        Ok((count, frame.slice(start..self.pos)))
    }

    /// Closes the message array; nothing but whitespace may follow.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        self.expect(b']', "unexpected extra message elements")?;
        self.skip_ws();
        if self.pos != self.buf.len() {
            return Err(err("trailing data after message"));
        }
        Ok(())
    }

    fn parse_string(&mut self) -> Result<String, DecodeError> {
        let mut scratch = Vec::new();
        match self.string_bytes(&mut scratch)? {
            Some((a, b)) => std::str::from_utf8(&self.buf[a..b]).map(str::to_owned),
            None => String::from_utf8(scratch).map_err(|e| e.utf8_error()),
        }
        .map_err(|_| err("invalid UTF-8 in string"))
    }

    /// The character of a `\uXXXX` escape (after the `u`), joining a
    /// surrogate pair; a lone surrogate is an error.
    fn unicode_escape(&mut self) -> Result<char, DecodeError> {
        let hi = self.hex4()?;
        if (0xD800..0xDC00).contains(&hi) {
            if self.buf.get(self.pos..self.pos + 2) != Some(b"\\u") {
                return Err(err("lone surrogate in string"));
            }
            self.pos += 2;
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(err("bad surrogate pair in string"));
            }
            let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            char::from_u32(cp).ok_or(err("bad code point"))
        } else {
            char::from_u32(hi).ok_or(err("lone surrogate in string"))
        }
    }

    fn hex4(&mut self) -> Result<u32, DecodeError> {
        let s = self.buf.get(self.pos..self.pos + 4).ok_or(err("short \\u escape"))?;
        // exactly four hex digits: from_str_radix alone would take a sign
        // ("\u+041"; found by the json_diff fuzz target)
        if !s.iter().all(u8::is_ascii_hexdigit) {
            return Err(err("bad \\u escape"));
        }
        let s = std::str::from_utf8(s).map_err(|_| err("bad \\u escape"))?;
        let v = u32::from_str_radix(s, 16).map_err(|_| err("bad \\u escape"))?;
        self.pos += 4;
        Ok(v)
    }

    fn number_span(&mut self) -> Result<(usize, bool), DecodeError> {
        let start = self.pos;
        let mut is_float = false;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
            }
            _ => return Err(err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            is_float = true;
            self.pos += 1;
            let d = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            if self.pos == d {
                return Err(err("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            is_float = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            let d = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            if self.pos == d {
                return Err(err("invalid number"));
            }
        }
        Ok((start, is_float))
    }

    fn literal(&mut self, lit: &'static [u8]) -> Result<(), DecodeError> {
        if self.buf.get(self.pos..self.pos + lit.len()) == Some(lit) {
            self.pos += lit.len();
            Ok(())
        } else {
            Err(err("invalid literal"))
        }
    }

    fn parse_value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(err("nesting too deep"));
        }
        self.skip_ws();
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut d = Dict::new();
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(Value::Dict(d));
                }
                loop {
                    self.skip_ws();
                    if self.peek() != Some(b'"') {
                        return Err(err("dictionary key must be a string"));
                    }
                    let k = self.parse_string()?;
                    self.expect(b':', "expected ':' in dictionary")?;
                    let v = self.parse_value(depth + 1)?;
                    d.0.push((k, v));
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Value::Dict(d));
                        }
                        _ => return Err(err("expected ',' or '}' in dictionary")),
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                let mut l = Vec::new();
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(Value::List(l));
                }
                loop {
                    l.push(self.parse_value(depth + 1)?);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Value::List(l));
                        }
                        _ => return Err(err("expected ',' or ']' in list")),
                    }
                }
            }
            Some(b'"') => {
                let s = self.parse_string()?;
                Ok(string_value(s))
            }
            Some(b't') => self.literal(b"true").map(|_| Value::Bool(true)),
            Some(b'f') => self.literal(b"false").map(|_| Value::Bool(false)),
            Some(b'n') => self.literal(b"null").map(|_| Value::Null),
            Some(_) => {
                let (start, is_float) = self.number_span()?;
                let text = std::str::from_utf8(&self.buf[start..self.pos]).map_err(|_| err("invalid number"))?;
                number_value(text, is_float)
            }
            None => Err(err("unexpected end of input")),
        }
    }

    /// Skips one element of the message, validating it as `parse_value`
    /// would (the element is at depth 1, inside the message array), without
    /// building anything.
    fn skip_value(&mut self) -> Result<(), DecodeError> {
        // Iterative, with an explicit stack of open containers (true = dict).
        let mut stack: Vec<bool> = Vec::new();
        loop {
            self.skip_ws();
            // a value, at depth stack.len() + 1
            if stack.len() >= MAX_DEPTH {
                return Err(err("nesting too deep"));
            }
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        stack.push(true);
                        self.dict_key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        stack.push(false);
                        continue;
                    }
                }
                Some(b'"') => self.skip_string()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(_) => {
                    self.number_span()?;
                }
                None => return Err(err("unexpected end of input")),
            }
            // after a value: close containers or move to the next element
            loop {
                let Some(&is_dict) = stack.last() else {
                    return Ok(());
                };
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if is_dict {
                            self.skip_ws();
                            self.dict_key()?;
                        }
                        break;
                    }
                    Some(b'}') if is_dict => {
                        self.pos += 1;
                        stack.pop();
                    }
                    Some(b']') if !is_dict => {
                        self.pos += 1;
                        stack.pop();
                    }
                    _ => return Err(err("malformed list or dictionary")),
                }
            }
        }
    }

    fn dict_key(&mut self) -> Result<(), DecodeError> {
        if self.peek() != Some(b'"') {
            return Err(err("dictionary key must be a string"));
        }
        self.skip_string()?;
        self.expect(b':', "expected ':' in dictionary")
    }

    fn skip_string(&mut self) -> Result<(), DecodeError> {
        self.pos += 1;
        loop {
            let rest = self.buf.get(self.pos..).unwrap_or_default();
            let Some(i) = rest.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20) else {
                return Err(err("unterminated string"));
            };
            self.pos += i;
            match self.buf[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Ok(());
                }
                b'\\' => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
                        Some(b'u') => {
                            self.pos += 1;
                            self.unicode_escape()?;
                        }
                        _ => return Err(err("bad escape in string")),
                    }
                }
                _ => return Err(err("control character in string")),
            }
        }
    }
}

impl JsonReader<'_> {
    /// Reads a string (at its '"'): its bytes are `buf[start..end]` when it
    /// has no escapes (`Some`), or are left unescaped in `scratch` (`None`).
    /// UTF-8 is the caller's to check.
    fn string_bytes(&mut self, scratch: &mut Vec<u8>) -> Result<Option<(usize, usize)>, DecodeError> {
        self.pos += 1;
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or_default();
        let Some(i) = rest.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20) else {
            return Err(err("unterminated string"));
        };
        self.pos += i;
        match self.buf[self.pos] {
            b'"' => {
                self.pos += 1;
                return Ok(Some((start, start + i)));
            }
            b'\\' => {}
            _ => return Err(err("control character in string")),
        }
        scratch.clear();
        scratch.extend_from_slice(&self.buf[start..self.pos]);
        loop {
            let rest = self.buf.get(self.pos..).unwrap_or_default();
            let Some(i) = rest.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20) else {
                return Err(err("unterminated string"));
            };
            scratch.extend_from_slice(&rest[..i]);
            self.pos += i;
            match self.buf[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Ok(None);
                }
                b'\\' => {
                    self.pos += 1;
                    let e = self.peek().ok_or(err("unterminated escape"))?;
                    self.pos += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(err("bad escape in string")),
                    };
                    let mut tmp = [0u8; 4];
                    scratch.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                }
                _ => return Err(err("control character in string")),
            }
        }
    }
}

/// Reads a raw JSON payload span (`args` or `args,kwargs`) and tells `sink`
/// what it holds, validating it as [`parse_payload`] does; returns the
/// number of elements. One pass, no values built (`codec::stream`).
pub(super) fn stream_payload(raw: &[u8], sink: &mut impl super::stream::Sink) -> Result<u8, DecodeError> {
    let mut r = JsonReader::new(raw);
    r.skip_ws();
    if r.peek().is_none() {
        return Ok(0); // as `parse_payload` reads "[ ]"
    }
    let (mut scratch, mut bin) = (Vec::new(), Vec::new());
    // per open container: a dictionary?, its entries so far
    let mut stack: Vec<(bool, u32)> = Vec::new();
    let mut count: u8 = 0;
    loop {
        // a value, at depth stack.len() + 1
        r.skip_ws();
        if stack.len() >= MAX_DEPTH {
            return Err(err("nesting too deep"));
        }
        match r.peek() {
            Some(b'{') => {
                r.pos += 1;
                r.skip_ws();
                sink.open(true, None);
                if r.peek() == Some(b'}') {
                    r.pos += 1;
                    sink.close(true, 0);
                } else {
                    stack.push((true, 0));
                    stream_key(&mut r, &mut scratch, sink)?;
                    continue;
                }
            }
            Some(b'[') => {
                r.pos += 1;
                r.skip_ws();
                sink.open(false, None);
                if r.peek() == Some(b']') {
                    r.pos += 1;
                    sink.close(false, 0);
                } else {
                    stack.push((false, 0));
                    continue;
                }
            }
            Some(b'"') => {
                let span = r.string_bytes(&mut scratch)?;
                let text = match span {
                    Some((a, b)) => &raw[a..b],
                    None => &scratch[..],
                };
                let s = std::str::from_utf8(text).map_err(|_| err("invalid UTF-8 in string"))?;
                // "\u0000" and base64: a binary (as `string_value` reads it)
                match s.strip_prefix('\0') {
                    Some(b64)
                        if {
                            bin.clear();
                            base64::engine::general_purpose::STANDARD.decode_vec(b64, &mut bin).is_ok()
                        } =>
                    {
                        sink.bytes(&bin)
                    }
                    _ => sink.str(s),
                }
            }
            Some(b't') => r.literal(b"true").map(|_| sink.scalar(&Value::Bool(true)))?,
            Some(b'f') => r.literal(b"false").map(|_| sink.scalar(&Value::Bool(false)))?,
            Some(b'n') => r.literal(b"null").map(|_| sink.scalar(&Value::Null))?,
            Some(_) => {
                let (start, is_float) = r.number_span()?;
                let text = std::str::from_utf8(&raw[start..r.pos]).map_err(|_| err("invalid number"))?;
                sink.scalar(&number_value(text, is_float)?);
            }
            None => return Err(err("unexpected end of input")),
        }
        // after a value: close containers, move to the next item or element
        loop {
            r.skip_ws();
            let Some((is_dict, n)) = stack.last_mut() else {
                // between the span's elements
                count = count.checked_add(1).ok_or(err("too many payload elements"))?;
                match r.peek() {
                    None => return Ok(count),
                    Some(b',') => {
                        r.pos += 1;
                        break;
                    }
                    _ => return Err(err("malformed payload")),
                }
            };
            *n += 1;
            match r.peek() {
                Some(b',') => {
                    r.pos += 1;
                    if *is_dict {
                        r.skip_ws();
                        stream_key(&mut r, &mut scratch, sink)?;
                    }
                    break;
                }
                Some(b'}') if *is_dict => {
                    r.pos += 1;
                    let n = *n;
                    stack.pop();
                    sink.close(true, n);
                }
                Some(b']') if !*is_dict => {
                    r.pos += 1;
                    let n = *n;
                    stack.pop();
                    sink.close(false, n);
                }
                _ => return Err(err("malformed list or dictionary")),
            }
        }
    }
}

/// A dictionary key and its ':'.
fn stream_key(r: &mut JsonReader<'_>, scratch: &mut Vec<u8>, sink: &mut impl super::stream::Sink) -> Result<(), DecodeError> {
    if r.peek() != Some(b'"') {
        return Err(err("dictionary key must be a string"));
    }
    let span = r.string_bytes(scratch)?;
    let text = match span {
        Some((a, b)) => &r.buf[a..b],
        None => &scratch[..],
    };
    sink.key(std::str::from_utf8(text).map_err(|_| err("invalid UTF-8 in string"))?);
    r.expect(b':', "expected ':' in dictionary")
}

/// Parses one complete JSON document into a [`Value`].
pub fn parse(buf: &[u8]) -> Result<Value, DecodeError> {
    let mut r = JsonReader::new(buf);
    let v = r.parse_value(0)?;
    r.skip_ws();
    if r.pos != buf.len() {
        return Err(err("trailing data after value"));
    }
    Ok(v)
}

fn string_value(s: String) -> Value {
    if let Some(b64) = s.strip_prefix('\0') {
        if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(b64) {
            return Value::Bytes(b);
        }
    }
    Value::Str(s)
}

fn number_value(text: &str, is_float: bool) -> Result<Value, DecodeError> {
    if !is_float {
        if let Ok(u) = text.parse::<u64>() {
            return Ok(Value::UInt(u));
        }
        if let Ok(i) = text.parse::<i64>() {
            // "-0" is zero: `Int` holds negative integers only
            return Ok(if i < 0 { Value::Int(i) } else { Value::UInt(0) });
        }
    }
    // A number beyond f64's range reads as an infinity (as JavaScript's
    // JSON.parse does) rather than failing: the payload validator of `decode`
    // checks syntax only, and every payload it accepts must transcode.
    // MessagePack carries the infinity; JSON writes it as null.
    text.parse::<f64>().map(Value::Float).map_err(|_| err("invalid number"))
}

/// Parses a raw JSON payload span (`args` or `args,kwargs`) into values.
/// Used only when transcoding to another serializer.
///
/// This is the reader that validated the span in `decode`, so every payload
/// `decode` accepts transcodes, to the values `parse` gives. (It used to be
/// simd-json 0.14, which refuses integers beyond 64 bits and silently
/// misreads long decimals that cross one of its 64-byte blocks,
/// simd-lite/simd-json#455; found by the `json_decode` fuzz target.)
pub fn parse_payload(raw: &[u8]) -> Result<Vec<Value>, DecodeError> {
    let mut buf = Vec::with_capacity(raw.len() + 2);
    buf.push(b'[');
    buf.extend_from_slice(raw);
    buf.push(b']');
    match parse(&buf)? {
        Value::List(items) => Ok(items),
        _ => Err(err("invalid JSON payload")),
    }
}

/// Appends the JSON text of `v` to `out`.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.put_slice(b"null"),
        Value::Bool(true) => out.put_slice(b"true"),
        Value::Bool(false) => out.put_slice(b"false"),
        Value::Int(i) => write_int(out, *i),
        Value::UInt(u) => write_uint(out, *u),
        Value::Float(f) => {
            if f.is_finite() {
                out.put_slice(format!("{f:?}").as_bytes());
            } else {
                out.put_slice(b"null");
            }
        }
        Value::Str(s) => write_str(out, s),
        Value::Bytes(b) => {
            out.put_slice(b"\"\\u0000");
            out.put_slice(base64::engine::general_purpose::STANDARD.encode(b).as_bytes());
            out.put_u8(b'"');
        }
        Value::List(l) => {
            out.put_u8(b'[');
            for (i, x) in l.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                write_value(out, x);
            }
            out.put_u8(b']');
        }
        Value::Dict(d) => write_dict(out, d),
    }
}

/// Appends the JSON text of `d` to `out`.
pub fn write_dict(out: &mut Vec<u8>, d: &Dict) {
    out.put_u8(b'{');
    for (i, (k, x)) in d.0.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        write_str(out, k);
        out.put_u8(b':');
        write_value(out, x);
    }
    out.put_u8(b'}');
}

/// Appends an unsigned integer.
pub fn write_uint(out: &mut Vec<u8>, u: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut n = u;
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&tmp[i..]);
}

fn write_int(out: &mut Vec<u8>, i: i64) {
    if i < 0 {
        out.put_u8(b'-');
        write_uint(out, i.unsigned_abs());
    } else {
        write_uint(out, i as u64);
    }
}

/// Appends a JSON string literal.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.put_u8(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: Option<&[u8]> = match c {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            c if c < 0x20 => None,
            _ => continue,
        };
        out.put_slice(&bytes[start..i]);
        match esc {
            Some(e) => out.put_slice(e),
            None => out.put_slice(format!("\\u{c:04x}").as_bytes()),
        }
        start = i + 1;
    }
    out.put_slice(&bytes[start..]);
    out.put_u8(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(s: &str) -> Result<Value, DecodeError> {
        let mut r = JsonReader::new(s.as_bytes());
        let v = r.parse_value(0)?;
        Ok(v)
    }

    #[test]
    fn parses_values() {
        assert_eq!(val("18446744073709551615").unwrap(), Value::UInt(u64::MAX));
        assert_eq!(val("-5").unwrap(), Value::Int(-5));
        assert_eq!(val("1.5e2").unwrap(), Value::Float(150.0));
        assert_eq!(val(r#""a\u00e9\ud83d\ude80""#).unwrap(), Value::Str("aé🚀".into()));
        assert_eq!(val(r#""\u0000AAH/""#).unwrap(), Value::Bytes(vec![0, 1, 0xff]));
        assert!(val(r#""\ud83d""#).is_err());
        assert!(val("01").is_ok()); // the reader stops after "0"; the caller sees the rest
        assert!(val("-").is_err());
        assert!(val("[1,]").is_err());
        assert!(val("{\"a\" 1}").is_err());
    }

    #[test]
    fn skips_and_validates() {
        for ok in [r#"[1,{"a":[true,false,null,"x\"y"]},-1.5e-3]"#, "[]", "{}", r#"{"k":{}}"#] {
            let mut r = JsonReader::new(ok.as_bytes());
            r.skip_value().unwrap();
            assert_eq!(r.pos, ok.len(), "{ok}");
        }
        for bad in ["[1,]", "[1 2]", "{\"a\"}", "{1:2}", "[\"\\x\"]", "[tru]", "[", "[[[[", "{\"a\":1,}"] {
            let mut r = JsonReader::new(bad.as_bytes());
            assert!(r.skip_value().is_err(), "{bad}");
        }
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert!(JsonReader::new(deep.as_bytes()).skip_value().is_err());
    }

    #[test]
    fn writes_round_trip() {
        let v = Value::List(vec![
            Value::Str("q\"\\\n\u{1}é".into()),
            Value::Bytes(vec![0, 1, 2, 255]),
            Value::Int(i64::MIN),
            Value::UInt(u64::MAX),
            Value::Float(0.1),
            Value::Dict(Dict::new().with("k", Value::Null)),
        ]);
        let mut out = Vec::new();
        write_value(&mut out, &v);
        assert_eq!(val(std::str::from_utf8(&out).unwrap()).unwrap(), v);
        let parsed = parse_payload(&out[1..out.len() - 1]).unwrap();
        assert_eq!(Value::List(parsed), v);
    }
}

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

/// A number as [`JsonReader::number_parts`] read it: `buf[start..]` up to
/// the reader's position is its text.
struct Number {
    start: usize,
    negative: bool,
    is_float: bool,
    /// All digits before the exponent, as one integer, if it fits in 64 bits.
    m: Option<u64>,
    /// The power of ten that `m` is scaled by.
    exp10: i32,
}

/// A number's value (a negative integer is `Int`, as in [`Value`]).
#[derive(Clone, Copy)]
enum Num {
    UInt(u64),
    Int(i64),
    Float(f64),
}

impl From<Num> for Value {
    fn from(n: Num) -> Value {
        match n {
            Num::UInt(u) => Value::UInt(u),
            Num::Int(i) => Value::Int(i),
            Num::Float(f) => Value::Float(f),
        }
    }
}

/// The powers of ten that are exact doubles.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Where a plain run of string bytes from `from` ends: the index of the
/// first '"', '\\' or control character (or `buf.len()`), and whether a
/// byte of 0x80 or above came before it. Eight bytes at a time.
#[inline]
pub(super) fn string_run(buf: &[u8], from: usize) -> (usize, bool) {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let (mut i, mut high) = (from, 0u64);
    while let Some(Ok(word)) = buf.get(i..i + 8).map(<[u8; 8]>::try_from) {
        let w = u64::from_le_bytes(word);
        let (q, b) = (w ^ (LO * b'"' as u64), w ^ (LO * b'\\' as u64));
        // a byte of the zero tests marks exactly the first hit, which is all
        // that is read from it (a borrow can only mark bytes after it)
        let hit = (q.wrapping_sub(LO) & !q | b.wrapping_sub(LO) & !b | w.wrapping_sub(LO * 0x20) & !w) & HI;
        if hit != 0 {
            let k = hit.trailing_zeros() as usize / 8;
            high |= w & HI & ((1u64 << (8 * k)) - 1);
            return (i + k, high != 0);
        }
        high |= w & HI;
        i += 8;
    }
    while let Some(&c) = buf.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        high |= u64::from(c & 0x80);
        i += 1;
    }
    (i, high != 0)
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
        match self.string_bytes(&mut scratch)?.0 {
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

    /// Reads a number (RFC 8259 grammar), accumulating its digits as it
    /// goes: the tree parser, the streaming reader and the validating skip
    /// all read numbers here.
    #[inline(always)]
    fn number_parts(&mut self) -> Result<Number, DecodeError> {
        let buf = self.buf;
        let start = self.pos;
        let negative = buf.get(start) == Some(&b'-');
        let mut p = start + usize::from(negative);
        // every digit before the exponent, as one integer (exact while
        // there are at most 19 of them)
        let mut m: u64 = 0;
        let digits = |p: &mut usize, m: &mut u64| {
            let d0 = *p;
            while let Some(d) = buf.get(*p).map(|c| c.wrapping_sub(b'0')).filter(|&d| d < 10) {
                *m = m.wrapping_mul(10).wrapping_add(u64::from(d));
                *p += 1;
            }
            *p - d0
        };
        let mut n = match buf.get(p) {
            Some(b'0') => {
                p += 1;
                1
            }
            Some(b'1'..=b'9') => digits(&mut p, &mut m),
            _ => return Err(err("invalid number")),
        };
        let (mut is_float, mut exp10) = (false, 0i32);
        if buf.get(p) == Some(&b'.') {
            is_float = true;
            p += 1;
            let f = digits(&mut p, &mut m);
            if f == 0 {
                return Err(err("invalid number"));
            }
            n += f;
            exp10 = -(f.min(100_000) as i32);
        }
        if let Some(b'e' | b'E') = buf.get(p) {
            is_float = true;
            p += 1;
            let minus = buf.get(p) == Some(&b'-');
            p += usize::from(matches!(buf.get(p), Some(b'-' | b'+')));
            let (d0, mut e) = (p, 0i32);
            while let Some(d) = buf.get(p).map(|c| c.wrapping_sub(b'0')).filter(|&d| d < 10) {
                e = (e * 10 + i32::from(d)).min(100_000);
                p += 1;
            }
            if p == d0 {
                return Err(err("invalid number"));
            }
            exp10 += if minus { -e } else { e };
        }
        self.pos = p;
        Ok(Number {
            start,
            negative,
            is_float,
            m: (n <= 19).then_some(m),
            exp10,
        })
    }

    /// Reads a number into its value.
    #[inline(always)]
    fn number(&mut self) -> Result<Num, DecodeError> {
        let n = self.number_parts()?;
        match (n.m, n.is_float, n.negative) {
            (Some(m), false, false) => return Ok(Num::UInt(m)),
            // "-0" is zero: `Int` holds negative integers only
            (Some(0), false, true) => return Ok(Num::UInt(0)),
            (Some(m), false, true) if m <= 1 << 63 => return Ok(Num::Int((m as i64).wrapping_neg())),
            // Clinger's fast path: the digits and the power of ten are both
            // exact doubles, so one multiplication or division rounds right
            (Some(m), true, _) if m <= 1 << 53 && (-22..=22).contains(&n.exp10) => {
                let (f, p) = (m as f64, POW10[n.exp10.unsigned_abs() as usize]);
                let v = if n.exp10 < 0 { f / p } else { f * p };
                return Ok(Num::Float(if n.negative { -v } else { v }));
            }
            _ => {}
        }
        let text = std::str::from_utf8(&self.buf[n.start..self.pos]).map_err(|_| err("invalid number"))?;
        number_value(text, n.is_float)
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
            Some(_) => self.number().map(Value::from),
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
                    self.number_parts()?;
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
            self.pos = string_run(self.buf, self.pos).0;
            let Some(&c) = self.buf.get(self.pos) else {
                return Err(err("unterminated string"));
            };
            match c {
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
    /// has no escapes (`Some`), or are left unescaped in `scratch` (`None`);
    /// and true if they are known to be ASCII (only said of a `Some` span).
    /// Other UTF-8 is the caller's to check.
    #[inline(always)]
    fn string_bytes(&mut self, scratch: &mut Vec<u8>) -> Result<(Option<(usize, usize)>, bool), DecodeError> {
        let start = self.pos + 1;
        let (end, high) = string_run(self.buf, start);
        if self.buf.get(end) == Some(&b'"') {
            self.pos = end + 1;
            return Ok((Some((start, end)), !high));
        }
        self.pos = end;
        self.escaped_string(start, scratch)
    }

    /// The rest of `string_bytes`: a string with escapes (or an error).
    #[cold]
    #[inline(never)]
    fn escaped_string(&mut self, start: usize, scratch: &mut Vec<u8>) -> Result<(Option<(usize, usize)>, bool), DecodeError> {
        match self.buf.get(self.pos) {
            Some(b'\\') => {}
            Some(_) => return Err(err("control character in string")),
            None => return Err(err("unterminated string")),
        }
        scratch.clear();
        scratch.extend_from_slice(&self.buf[start..self.pos]);
        loop {
            let (end, _) = string_run(self.buf, self.pos);
            scratch.extend_from_slice(&self.buf[self.pos..end]);
            self.pos = end;
            match self.buf.get(end) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok((None, false));
                }
                None => return Err(err("unterminated string")),
                Some(b'\\') => {
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
                let s = span_text(&mut r, &mut scratch)?;
                // "\u0000" and base64: a binary (as `string_value` reads it)
                match s.strip_prefix(b"\0") {
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
            Some(b't') => r.literal(b"true").map(|_| sink.bool(true))?,
            Some(b'f') => r.literal(b"false").map(|_| sink.bool(false))?,
            Some(b'n') => r.literal(b"null").map(|_| sink.null())?,
            Some(_) => match r.number()? {
                Num::UInt(u) => sink.uint(u),
                Num::Int(i) => sink.int(i),
                Num::Float(f) => sink.float(f),
            },
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
#[inline(always)]
fn stream_key(r: &mut JsonReader<'_>, scratch: &mut Vec<u8>, sink: &mut impl super::stream::Sink) -> Result<(), DecodeError> {
    if r.peek() != Some(b'"') {
        return Err(err("dictionary key must be a string"));
    }
    sink.key(span_text(r, scratch)?);
    r.expect(b':', "expected ':' in dictionary")
}

/// A string's text (at its '"'), checked to be UTF-8: borrowed from the
/// span, or unescaped into `scratch`.
#[inline(always)]
fn span_text<'b: 'o, 'o>(r: &mut JsonReader<'b>, scratch: &'o mut Vec<u8>) -> Result<&'o [u8], DecodeError> {
    let text = match r.string_bytes(scratch)? {
        (Some((a, b)), true) => return Ok(&r.buf[a..b]),
        (Some((a, b)), false) => &r.buf[a..b],
        (None, _) => &scratch[..],
    };
    std::str::from_utf8(text)
        .map(str::as_bytes)
        .map_err(|_| err("invalid UTF-8 in string"))
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

/// A number read from its text: the slow path of [`JsonReader::number`].
#[cold]
fn number_value(text: &str, is_float: bool) -> Result<Num, DecodeError> {
    if !is_float {
        if let Ok(u) = text.parse::<u64>() {
            return Ok(Num::UInt(u));
        }
        if let Ok(i) = text.parse::<i64>() {
            // "-0" is zero: `Int` holds negative integers only
            return Ok(if i < 0 { Num::Int(i) } else { Num::UInt(0) });
        }
    }
    // A number beyond f64's range reads as an infinity (as JavaScript's
    // JSON.parse does) rather than failing: the payload validator of `decode`
    // checks syntax only, and every payload it accepts must transcode.
    // MessagePack carries the infinity; JSON writes it as null.
    text.parse::<f64>().map(Num::Float).map_err(|_| err("invalid number"))
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
        Value::Float(f) => write_float(out, *f),
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

/// Appends a signed integer.
pub fn write_int(out: &mut Vec<u8>, i: i64) {
    if i < 0 {
        out.put_u8(b'-');
        write_uint(out, i.unsigned_abs());
    } else {
        write_uint(out, i as u64);
    }
}

/// Appends a JSON string literal.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_str_bytes(out, s.as_bytes());
}

/// Appends a JSON string literal of `bytes`, which are UTF-8.
pub(super) fn write_str_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    loop {
        let (i, _) = string_run(bytes, start);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&c) = bytes.get(i) else { break };
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
            }
        }
        start = i + 1;
    }
    out.push(b'"');
}

/// Appends a finite float in its shortest form that reads back the same
/// (ryu's text); a non-finite one, which JSON cannot hold, as null.
#[inline]
pub fn write_float(out: &mut Vec<u8>, f: f64) {
    if !f.is_finite() {
        out.extend_from_slice(b"null");
    } else if !short_decimal(out, f) {
        out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
    }
}

/// Writes `f` as ryu would if it is a decimal with at most three digits
/// after the point and a small magnitude (most floats in payloads:
/// prices, scores, measurements), and says whether it did.
///
/// Such a float is m / 10^k for an integer m below 2^40 and the least such
/// k: m / 10^k is rounded once, so if it equals f, the decimal reads back
/// as f. An ulp of f is then far below 10^-k, so no other decimal of k
/// places or fewer reads back as f, and ryu's shortest digits are m's.
#[inline]
fn short_decimal(out: &mut Vec<u8>, f: f64) -> bool {
    let a = f.abs();
    if !(1e-3..1e11).contains(&a) {
        return false; // and zero, whose sign ryu keeps, takes ryu's path
    }
    for (k, scale) in [1.0, 10.0, 100.0, 1000.0].into_iter().enumerate() {
        let m = a * scale;
        if m >= (1u64 << 40) as f64 {
            return false;
        }
        if m.fract() == 0.0 && m / scale == a {
            // a product may round to an integer only at a later k: strip
            // the zeros that leaves (the decimal is the same)
            let (mut m, mut k) = (m as u64, k);
            while k > 0 && m % 10 == 0 {
                m /= 10;
                k -= 1;
            }
            if f < 0.0 {
                out.push(b'-');
            }
            let p = 10u64.pow(k as u32);
            write_uint(out, m / p);
            out.push(b'.');
            if k == 0 {
                out.push(b'0');
            } else {
                let frac = m % p;
                // the fraction's leading zeros, then its digits
                for z in (1..k).rev() {
                    if frac < 10u64.pow(z as u32) {
                        out.push(b'0');
                    }
                }
                write_uint(out, frac);
            }
            return true;
        }
    }
    false
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

    /// The digit-accumulating fast paths read every number as the standard
    /// library does: integers exactly, floats to the same bits.
    #[test]
    fn numbers_read_as_the_standard_library_reads_them() {
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "-1",
            "9007199254740992",
            "9007199254740993",
            "9007199254740993.0",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "1e22",
            "1e23",
            "1e-22",
            "1e-23",
            "0.1",
            "0.3",
            "123456789.123456789",
            "1.7976931348623157e308",
            "1e309",
            "4.9e-324",
            "2.2250738585072014e-308",
            "1E5",
            "1e+5",
            "1e-0005",
            "0.000001",
            "12345678901234567890",
            "5e0000000000000000000000000000000000000000001",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // and a deterministic spread of mantissas, points and exponents
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = (x % 10u64.pow((x >> 8) as u32 % 19 + 1)).to_string();
            let point = (x >> 16) as usize % (digits.len() + 1);
            let (int, frac) = digits.split_at(point);
            let mut t = String::new();
            if x & 1 == 1 {
                t.push('-');
            }
            t.push_str(if int.is_empty() { "0" } else { int.trim_start_matches('0') });
            if t.ends_with('-') || t.is_empty() {
                t.push('0');
            }
            if !frac.is_empty() {
                t.push('.');
                t.push_str(frac);
            }
            if x & 2 == 2 {
                t.push_str(&format!("e{}", ((x >> 24) % 60) as i64 - 30));
            }
            texts.push(t);
        }
        for t in &texts {
            let is_float = t.contains(['.', 'e', 'E']);
            let want = match (is_float, t.parse::<u64>(), t.parse::<i64>()) {
                (false, Ok(u), _) => Value::UInt(u),
                (false, _, Ok(i)) if i < 0 => Value::Int(i),
                (false, _, Ok(_)) => Value::UInt(0),
                _ => Value::Float(t.parse::<f64>().unwrap()),
            };
            match (val(t).unwrap_or_else(|e| panic!("{t}: {e}")), want) {
                (Value::Float(a), Value::Float(b)) => assert_eq!(a.to_bits(), b.to_bits(), "{t}"),
                (a, b) => assert_eq!(a, b, "{t}"),
            }
        }
    }

    /// The short-decimal path writes what ryu writes.
    #[test]
    fn floats_are_written_as_ryu_writes_them() {
        let mut floats = vec![
            0.0,
            -0.0,
            0.1,
            0.2,
            0.3,
            1.0,
            -3.0,
            24.75,
            0.001,
            0.0015,
            1e-3,
            9.999,
            123.456,
            1e11,
            99999999999.999,
            5e-324,
            1e300,
            0.30000000000000004,
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = x % 10u64.pow((x >> 40) as u32 % 15 + 1);
            let scale = 10f64.powi((x >> 50) as i32 % 8);
            floats.push(if x & 1 == 1 { -1.0 } else { 1.0 } * digits as f64 / scale);
            floats.push(f64::from_bits(x)); // any bits at all
        }
        for f in floats.into_iter().filter(|f| f.is_finite()) {
            let mut out = Vec::new();
            write_float(&mut out, f);
            assert_eq!(std::str::from_utf8(&out).unwrap(), ryu::Buffer::new().format_finite(f), "{f:?}");
        }
    }

    #[test]
    fn strings_escape_and_scan_as_written() {
        // every length around the eight-byte words, a special at each place
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x01, 0x1f, 0xc3] {
                    let mut s: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                    s[at] = special;
                    if special == 0xc3 {
                        s.insert(at + 1, 0xa9); // "é"
                    }
                    let text = String::from_utf8(s).unwrap();
                    let mut out = Vec::new();
                    write_str(&mut out, &text);
                    let (end, high) = string_run(text.as_bytes(), 0);
                    assert_eq!(end, if special == 0xc3 { text.len() } else { at }, "{text:?}");
                    assert_eq!(high, special == 0xc3, "{text:?}");
                    assert_eq!(val(std::str::from_utf8(&out).unwrap()).unwrap(), Value::Str(text.clone()));
                    let mut want = b"\"".to_vec();
                    for c in text.bytes() {
                        match c {
                            b'"' => want.extend_from_slice(b"\\\""),
                            b'\\' => want.extend_from_slice(b"\\\\"),
                            b'\n' => want.extend_from_slice(b"\\n"),
                            c if c < 0x20 => want.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
                            c => want.push(c),
                        }
                    }
                    want.push(b'"');
                    assert_eq!(out, want, "{text:?}");
                }
            }
        }
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

//! CBOR (RFC 8949): the envelope reader, value parser and encoder, on
//! minicbor's decoder and encoder. Byte strings are binary values (MessagePack
//! bin, JSON's `\u0000` + base64).
//!
//! What is accepted, both where the router reads (Options, Details) and in
//! the payload spans it only validates, so that every payload `decode`
//! accepts also transcodes:
//! - definite and indefinite arrays, maps, text and byte strings;
//! - integers of every size: from -2^63 to 2^64 - 1 as integers; beyond,
//!   as the nearest float (as the JSON reader does with such numbers, so a
//!   payload reads the same whatever serializer it came in);
//! - bignums (tags 2 and 3 on a byte string, RFC 8949 3.4.3) as the integer
//!   they stand for, on the same terms;
//! - half, single and double floats;
//! - `false`, `true`, `null` and `undefined` (read as null);
//! - other tags, which carry no meaning for WAMP: a tagged value reads as
//!   the value (a payload spliced CBOR to CBOR keeps its tags as they are);
//! - dictionary keys that are text strings.
//!
//! Refused: other simple values, reserved or unknown heads, a break outside
//! an indefinite item, invalid UTF-8, nesting deeper than `MAX_DEPTH`.

use bytes::Bytes;
use minicbor::data::Type;
use minicbor::Decoder;

use super::{DecodeError, MAX_DEPTH};
use crate::wamp::{Dict, Value};

fn err(msg: &'static str) -> DecodeError {
    DecodeError::Malformed(msg)
}

fn truncated(_: minicbor::decode::Error) -> DecodeError {
    err("malformed or truncated CBOR")
}

/// How many elements of the message array are left.
#[derive(Debug, Clone, Copy)]
enum Left {
    Definite(u64),
    /// An indefinite-length array, closed by a break.
    Indefinite,
}

/// Reads the top-level message array of one CBOR frame.
#[derive(Debug)]
pub struct CborReader<'a> {
    d: Decoder<'a>,
    left: Left,
}

/// The kind of item that starts at the decoder's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    List,
    Dict,
    Str,
    Bin,
    Other,
}

impl<'a> CborReader<'a> {
    /// A reader over one frame.
    pub fn new(buf: &'a [u8]) -> Self {
        CborReader {
            d: Decoder::new(buf),
            left: Left::Definite(0),
        }
    }

    fn pos(&self) -> usize {
        self.d.position()
    }

    fn at_end(&self) -> bool {
        self.d.position() >= self.d.input().len()
    }

    /// The type at the position, past any tags (which are consumed).
    fn untagged(&mut self) -> Result<Type, DecodeError> {
        Ok(self.tags()?.0)
    }

    /// Consumes any tags; the type after them and whether the innermost
    /// tag makes a following byte string a bignum (Some(negative)).
    fn tags(&mut self) -> Result<(Type, Option<bool>), DecodeError> {
        let mut bignum = None;
        loop {
            match self.d.datatype().map_err(truncated)? {
                Type::Tag => {
                    let tag = u64::from(self.d.tag().map_err(truncated)?);
                    bignum = match tag {
                        2 => Some(false),
                        3 => Some(true),
                        _ => None,
                    };
                }
                t => return Ok((t, bignum.filter(|_| matches!(t, Type::Bytes | Type::BytesIndef)))),
            }
        }
    }

    /// A bignum's value: its magnitude from a byte string, negative as -1 - n.
    fn bignum(&mut self, negative: bool) -> Result<Value, DecodeError> {
        let bytes = self.binary()?;
        Ok(bignum_value(&bytes, negative))
    }

    fn item(&mut self) -> Result<Item, DecodeError> {
        Ok(match self.untagged()? {
            Type::Array | Type::ArrayIndef => Item::List,
            Type::Map | Type::MapIndef => Item::Dict,
            Type::String | Type::StringIndef => Item::Str,
            Type::Bytes | Type::BytesIndef => Item::Bin,
            _ => Item::Other,
        })
    }

    /// True when the next byte is the break that closes an indefinite item
    /// (which is then consumed).
    fn take_break(&mut self) -> Result<bool, DecodeError> {
        if self.d.datatype().map_err(truncated)? == Type::Break {
            self.d.set_position(self.d.position() + 1);
            return Ok(true);
        }
        Ok(false)
    }

    /// Opens the message array.
    pub fn list_start(&mut self) -> Result<(), DecodeError> {
        match self.d.datatype() {
            Ok(Type::Array | Type::ArrayIndef) => {}
            _ => return Err(err("message is not a CBOR array")),
        }
        self.left = match self.d.array().map_err(truncated)? {
            Some(n) => Left::Definite(n),
            None => Left::Indefinite,
        };
        Ok(())
    }

    /// True if another element follows in the message array.
    pub fn has_more(&mut self) -> bool {
        match self.left {
            Left::Definite(n) => n > 0,
            Left::Indefinite => !matches!(self.d.datatype(), Ok(Type::Break)),
        }
    }

    fn elem(&mut self) -> Result<(), DecodeError> {
        match &mut self.left {
            Left::Definite(0) => Err(err("message array ends early")),
            Left::Definite(n) => {
                *n -= 1;
                Ok(())
            }
            Left::Indefinite => match self.d.datatype() {
                Ok(Type::Break) => Err(err("message array ends early")),
                Ok(_) => Ok(()),
                Err(e) => Err(truncated(e)),
            },
        }
    }

    /// Reads an element that must be a non-negative integer.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.elem()?;
        self.untagged()?;
        match self.d.datatype().map_err(truncated)? {
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => self.d.u64().map_err(truncated),
            _ => Err(err("expected a non-negative integer")),
        }
    }

    /// Reads an element that must be a string.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        self.elem()?;
        if self.item()? != Item::Str {
            return Err(err("expected a string"));
        }
        self.text()
    }

    fn text(&mut self) -> Result<String, DecodeError> {
        let mut out = String::new();
        for chunk in self.d.str_iter().map_err(|_| err("invalid CBOR text string"))? {
            out.push_str(chunk.map_err(|_| err("invalid UTF-8 in string"))?);
        }
        Ok(out)
    }

    fn binary(&mut self) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        for chunk in self.d.bytes_iter().map_err(|_| err("invalid CBOR byte string"))? {
            out.extend_from_slice(chunk.map_err(truncated)?);
        }
        Ok(out)
    }

    /// Reads an element that must be a dictionary.
    pub fn dict(&mut self) -> Result<Dict, DecodeError> {
        self.elem()?;
        // at depth 1, inside the message array
        match self.parse_value(1)? {
            Value::Dict(d) => Ok(d),
            _ => Err(err("expected a dictionary")),
        }
    }

    /// Reads the optional Arguments and ArgumentsKw as one raw span of `frame`.
    /// With `opaque` (a message in payload passthru mode) the Arguments may
    /// instead be one binary or string, and nothing follows it.
    pub fn payload(&mut self, frame: &Bytes, opaque: bool) -> Result<(u8, Bytes), DecodeError> {
        if !self.has_more() {
            return Ok((0, Bytes::new()));
        }
        let start = self.pos();
        self.elem()?;
        let first = self.item()?;
        if opaque && matches!(first, Item::Bin | Item::Str) {
            self.skip_value(1)?;
            if self.has_more() {
                return Err(err("a transparent payload is one element"));
            }
            return Ok((1, frame.slice(start..self.pos())));
        }
        if first != Item::List {
            return Err(err("Arguments must be a list"));
        }
        self.skip_value(1)?;
        let mut count = 1;
        if self.has_more() {
            self.elem()?;
            if self.item()? != Item::Dict {
                return Err(err("ArgumentsKw must be a dictionary"));
            }
            self.skip_value(1)?;
            count = 2;
        }
        Ok((count, frame.slice(start..self.pos())))
    }

    /// Closes the message array; nothing may follow.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        match self.left {
            Left::Definite(0) => {}
            Left::Definite(_) => return Err(err("unexpected extra message elements")),
            Left::Indefinite => {
                if !self.take_break()? {
                    return Err(err("unexpected extra message elements"));
                }
            }
        }
        if !self.at_end() {
            return Err(err("trailing data after message"));
        }
        Ok(())
    }

    /// Fails unless the whole input was consumed.
    pub fn finish_value(&self) -> Result<(), DecodeError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(err("trailing data after value"))
        }
    }

    fn negative(&mut self) -> Result<Value, DecodeError> {
        let i = i128::from(self.d.int().map_err(truncated)?);
        Ok(match i64::try_from(i) {
            Ok(i) if i < 0 => Value::Int(i),
            Ok(i) => Value::UInt(i as u64),
            // below -2^63: the nearest float, as JSON reads such a number
            Err(_) => Value::Float(i as f64),
        })
    }

    /// Parses one value.
    pub fn parse_value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(err("nesting too deep"));
        }
        let limit = self.d.input().len() - self.pos();
        let (t, bignum) = self.tags()?;
        if let Some(negative) = bignum {
            return self.bignum(negative);
        }
        Ok(match t {
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => Value::UInt(self.d.u64().map_err(truncated)?),
            Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => self.negative()?,
            Type::F16 | Type::F32 | Type::F64 => Value::Float(self.d.f64().map_err(truncated)?),
            Type::Bool => Value::Bool(self.d.bool().map_err(truncated)?),
            Type::Null | Type::Undefined => {
                self.d.set_position(self.pos() + 1);
                Value::Null
            }
            Type::String | Type::StringIndef => Value::Str(self.text()?),
            Type::Bytes | Type::BytesIndef => Value::Bytes(self.binary()?),
            Type::Array | Type::ArrayIndef => {
                let n = self.d.array().map_err(truncated)?;
                let mut l = Vec::with_capacity(n.map_or(0, |n| (n as usize).min(limit)));
                match n {
                    Some(n) => {
                        for _ in 0..n {
                            l.push(self.parse_value(depth + 1)?);
                        }
                    }
                    None => {
                        while !self.take_break()? {
                            l.push(self.parse_value(depth + 1)?);
                        }
                    }
                }
                Value::List(l)
            }
            Type::Map | Type::MapIndef => {
                let n = self.d.map().map_err(truncated)?;
                let mut d = Vec::with_capacity(n.map_or(0, |n| (n as usize).min(limit)));
                let mut entry = |r: &mut Self| -> Result<(), DecodeError> {
                    if r.item()? != Item::Str {
                        return Err(err("dictionary key must be a string"));
                    }
                    let k = r.text()?;
                    d.push((k, r.parse_value(depth + 1)?));
                    Ok(())
                };
                match n {
                    Some(n) => {
                        for _ in 0..n {
                            entry(self)?;
                        }
                    }
                    None => {
                        while !self.take_break()? {
                            entry(self)?;
                        }
                    }
                }
                Value::Dict(Dict(d))
            }
            Type::Break => return Err(err("unexpected CBOR break")),
            Type::Simple | Type::Unknown(_) | Type::Tag => return Err(err("unsupported CBOR type")),
        })
    }

    /// Skips one value at `depth`, validating it as `parse_value` would:
    /// structure, UTF-8 strings, text keys and nesting depth, without
    /// building anything. A walk over the bytes by hand: the payload span of
    /// every message goes through it.
    fn skip_value(&mut self, depth: usize) -> Result<(), DecodeError> {
        let buf = self.d.input();
        let mut pos = self.d.position();
        let r = skip_item(buf, &mut pos, depth);
        self.d.set_position(pos.min(buf.len()));
        r
    }
}

/// One head: major type, additional information, and its argument (`None`
/// for the indefinite length of a string, array or map).
#[inline(always)]
fn head(buf: &[u8], pos: &mut usize) -> Result<(u8, u8, Option<u64>), DecodeError> {
    let ib = *buf.get(*pos).ok_or(err("malformed or truncated CBOR"))?;
    *pos += 1;
    let (major, info) = (ib >> 5, ib & 0x1f);
    let arg = match info {
        0..=23 => Some(info as u64),
        24..=27 => {
            let n = 1usize << (info - 24);
            let bytes = buf.get(*pos..*pos + n).ok_or(err("malformed or truncated CBOR"))?;
            *pos += n;
            Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
        }
        31 if (2..=5).contains(&major) => None,
        31 if major == 7 => return Err(err("unexpected CBOR break")),
        _ => return Err(err("unsupported CBOR type")),
    };
    Ok((major, info, arg))
}

/// Skips a string's content of `n` bytes (UTF-8 checked for text).
#[inline(always)]
fn skip_string(buf: &[u8], pos: &mut usize, major: u8, n: u64) -> Result<(), DecodeError> {
    let n = usize::try_from(n).map_err(|_| err("malformed or truncated CBOR"))?;
    let end = pos.checked_add(n).ok_or(err("malformed or truncated CBOR"))?;
    let bytes = buf.get(*pos..end).ok_or(err("malformed or truncated CBOR"))?;
    if major == 3 {
        std::str::from_utf8(bytes).map_err(|_| err("invalid UTF-8 in string"))?;
    }
    *pos = end;
    Ok(())
}

/// Skips a string whose head (major 2 or 3, `arg`) was read: definite, or
/// definite chunks of the same major type up to a break.
fn skip_string_item(buf: &[u8], pos: &mut usize, major: u8, arg: Option<u64>) -> Result<(), DecodeError> {
    string_item(buf, pos, major, arg, None)
}

/// [`skip_string_item`]; with `join`, the chunks of an indefinite-length
/// string are appended to it as they are checked.
fn string_item(buf: &[u8], pos: &mut usize, major: u8, arg: Option<u64>, mut join: Option<&mut Vec<u8>>) -> Result<(), DecodeError> {
    match arg {
        Some(n) => skip_string(buf, pos, major, n),
        None => loop {
            if buf.get(*pos) == Some(&0xff) {
                *pos += 1;
                return Ok(());
            }
            match head(buf, pos)? {
                (m, _, Some(n)) if m == major => {
                    let from = *pos;
                    skip_string(buf, pos, major, n)?;
                    if let Some(j) = join.as_deref_mut() {
                        j.extend_from_slice(&buf[from..*pos]);
                    }
                }
                _ => {
                    return Err(err(if major == 3 {
                        "invalid CBOR text string"
                    } else {
                        "invalid CBOR byte string"
                    }))
                }
            }
        },
    }
}

/// Reads past any tags; the head of the item under them.
#[inline(always)]
fn untagged_head(buf: &[u8], pos: &mut usize) -> Result<(u8, u8, Option<u64>), DecodeError> {
    loop {
        let h = head(buf, pos)?;
        if h.0 != 6 {
            return Ok(h);
        }
        if h.2.is_none() {
            return Err(err("unsupported CBOR type"));
        }
    }
}

/// Skips one item at `depth` as `CborReader::parse_value` reads it.
fn skip_item(buf: &[u8], pos: &mut usize, depth: usize) -> Result<(), DecodeError> {
    let (major, info, arg) = untagged_head(buf, pos)?;
    match major {
        0 | 1 => Ok(()),
        2 | 3 => skip_string_item(buf, pos, major, arg),
        4 | 5 => {
            let empty = match arg {
                Some(n) => n == 0,
                None => buf.get(*pos) == Some(&0xff),
            };
            if !empty && depth >= MAX_DEPTH {
                return Err(err("nesting too deep"));
            }
            let mut left = arg;
            loop {
                match &mut left {
                    Some(0) => return Ok(()),
                    Some(n) => *n -= 1,
                    None => {
                        if buf.get(*pos) == Some(&0xff) {
                            *pos += 1;
                            return Ok(());
                        }
                    }
                }
                if major == 5 {
                    match untagged_head(buf, pos)? {
                        (3, _, a) => skip_string_item(buf, pos, 3, a)?,
                        _ => return Err(err("dictionary key must be a string")),
                    }
                }
                skip_item(buf, pos, depth + 1)?;
            }
        }
        // simple values and floats: false, true, null, undefined, half,
        // single, double
        _ => match info {
            20..=23 | 25..=27 => Ok(()),
            _ => Err(err("unsupported CBOR type")),
        },
    }
}

/// The value of a bignum (RFC 8949 3.4.3) with the big-endian magnitude
/// `bytes`: an integer where one holds it, else the nearest float (exact
/// arithmetic up to 128 bits, then by bytes).
pub fn bignum_value(bytes: &[u8], negative: bool) -> Value {
    let digits = &bytes[bytes.iter().take_while(|&&b| b == 0).count()..];
    if digits.len() <= 16 {
        let n = digits.iter().fold(0u128, |acc, &b| (acc << 8) | b as u128);
        return match (negative, u64::try_from(n), i128::try_from(n)) {
            (false, Ok(u), _) => Value::UInt(u),
            (false, Err(_), _) => Value::Float(n as f64),
            (true, _, Ok(m)) => match i64::try_from(-1 - m) {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Float((-1 - m) as f64),
            },
            (true, _, Err(_)) => Value::Float(-1.0 - n as f64),
        };
    }
    let magnitude = digits.iter().fold(0f64, |acc, &b| acc * 256.0 + b as f64);
    Value::Float(if negative { -1.0 - magnitude } else { magnitude })
}

/// Parses a raw CBOR payload span holding `count` values.
pub fn parse_payload(raw: &[u8], count: u8) -> Result<Vec<Value>, DecodeError> {
    let mut r = CborReader::new(raw);
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        // at depth 1, as elements of the message array
        out.push(r.parse_value(1)?);
    }
    if !r.at_end() {
        return Err(err("trailing data in payload"));
    }
    Ok(out)
}

/// Reads a raw CBOR payload span holding `count` values and tells `sink`
/// what it holds, validating it as [`parse_payload`] does (`codec::stream`).
pub(super) fn stream_payload(raw: &[u8], count: u8, sink: &mut impl super::stream::Sink) -> Result<u8, DecodeError> {
    let mut r = Streamer {
        buf: raw,
        pos: 0,
        scratch: Vec::new(),
    };
    for _ in 0..count {
        // at depth 1, as elements of the message array
        r.value(1, sink)?;
    }
    if r.pos != raw.len() {
        return Err(err("trailing data in payload"));
    }
    Ok(count)
}

/// The streaming reader: a walk over the heads, as `skip_item` makes it,
/// that reads each item as `CborReader::parse_value` does.
struct Streamer<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The chunks of an indefinite-length string, joined.
    scratch: Vec<u8>,
}

impl Streamer<'_> {
    fn value(&mut self, depth: usize, sink: &mut impl super::stream::Sink) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(err("nesting too deep"));
        }
        // tags are read past; the innermost one makes a byte string a bignum
        let mut bignum = None;
        let (major, info, arg) = loop {
            let h = head(self.buf, &mut self.pos)?;
            if h.0 != 6 {
                break h;
            }
            bignum = match h.2 {
                Some(2) => Some(false),
                Some(3) => Some(true),
                Some(_) => None,
                None => return Err(err("unsupported CBOR type")),
            };
        };
        match (major, arg) {
            (0, Some(n)) => sink.scalar(&Value::UInt(n)),
            (1, Some(n)) => sink.scalar(&match i64::try_from(n) {
                Ok(i) => Value::Int(-1 - i),
                // below -2^63: the nearest float, as JSON reads such a number
                Err(_) => Value::Float((-1 - i128::from(n)) as f64),
            }),
            (2, _) => {
                let b = self.string(2, arg)?;
                match bignum {
                    Some(negative) => sink.scalar(&bignum_value(b, negative)),
                    None => sink.bytes(b),
                }
            }
            (3, _) => {
                let s = self.string(3, arg)?;
                sink.str(s);
            }
            (4 | 5, _) => {
                let map = major == 5;
                if let Some(n) = arg {
                    // every item takes a byte at least
                    if n > (self.buf.len() - self.pos) as u64 {
                        return Err(err("malformed or truncated CBOR"));
                    }
                }
                sink.open(map, arg.map(|n| n as u32));
                let mut items = 0u32;
                loop {
                    match arg {
                        Some(n) if u64::from(items) == n => break,
                        Some(_) => {}
                        None => {
                            if self.buf.get(self.pos) == Some(&0xff) {
                                self.pos += 1;
                                break;
                            }
                        }
                    }
                    if map {
                        match untagged_head(self.buf, &mut self.pos)? {
                            (3, _, a) => {
                                let k = self.string(3, a)?;
                                sink.key(k);
                            }
                            _ => return Err(err("dictionary key must be a string")),
                        }
                    }
                    self.value(depth + 1, sink)?;
                    items = items.checked_add(1).ok_or(err("malformed or truncated CBOR"))?;
                }
                sink.close(map, items);
            }
            (7, Some(bits)) => sink.scalar(&match info {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                22 | 23 => Value::Null,
                25 => Value::Float(f64::from(half::f16::from_bits(bits as u16).to_f32())),
                26 => Value::Float(f64::from(f32::from_bits(bits as u32))),
                27 => Value::Float(f64::from_bits(bits)),
                _ => return Err(err("unsupported CBOR type")),
            }),
            _ => return Err(err("unsupported CBOR type")),
        }
        Ok(())
    }

    /// A string whose head (major 2 or 3, `arg`) was read, checked as
    /// `skip_string_item` checks it: borrowed when definite, else its
    /// chunks joined in `scratch`.
    fn string(&mut self, major: u8, arg: Option<u64>) -> Result<&[u8], DecodeError> {
        let start = self.pos;
        if let Some(n) = arg {
            skip_string(self.buf, &mut self.pos, major, n)?;
            return Ok(&self.buf[start..self.pos]);
        }
        self.scratch.clear();
        string_item(self.buf, &mut self.pos, major, None, Some(&mut self.scratch))?;
        Ok(&self.scratch)
    }
}

/// Appends a CBOR head: major type `major` with argument `n`, shortest form.
#[inline(always)]
pub fn write_head(out: &mut Vec<u8>, major: u8, n: u64) {
    if n < 24 {
        out.push(major << 5 | n as u8);
    } else {
        write_long_head(out, major, n);
    }
}

/// `write_head` of an argument of 24 or more.
#[inline(never)]
fn write_long_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n <= u8::MAX as u64 {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= u16::MAX as u64 {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX as u64 {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Major types.
pub mod major {
    pub const UNSIGNED: u8 = 0;
    pub const NEGATIVE: u8 = 1;
    pub const BYTES: u8 = 2;
    pub const TEXT: u8 = 3;
    pub const ARRAY: u8 = 4;
    pub const MAP: u8 = 5;
}

/// Appends an unsigned integer.
pub fn write_uint(out: &mut Vec<u8>, v: u64) {
    write_head(out, major::UNSIGNED, v);
}

/// Appends a text string of UTF-8 `bytes`.
#[inline]
pub fn write_str(out: &mut Vec<u8>, bytes: &[u8]) {
    write_head(out, major::TEXT, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends the CBOR encoding of `v` to `out`. Floats are written as doubles,
/// so every value survives a round trip exactly.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0xf6),
        Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Value::Int(i) => write_sint(out, *i),
        Value::UInt(u) => write_uint(out, *u),
        Value::Float(f) => write_f64(out, *f),
        Value::Str(s) => write_str(out, s.as_bytes()),
        Value::Bytes(b) => {
            write_head(out, major::BYTES, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::List(l) => {
            write_head(out, major::ARRAY, l.len() as u64);
            for x in l {
                write_value(out, x);
            }
        }
        Value::Dict(d) => write_dict(out, d),
    }
}

/// Appends a signed integer: a negative one as major type 1.
#[inline]
pub fn write_sint(out: &mut Vec<u8>, i: i64) {
    if i < 0 {
        write_head(out, major::NEGATIVE, (-1 - i) as u64);
    } else {
        write_uint(out, i as u64);
    }
}

/// Appends a double.
#[inline]
pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    out.push(0xfb);
    out.extend_from_slice(&f.to_bits().to_be_bytes());
}

/// Appends the CBOR encoding of `d` to `out`.
pub fn write_dict(out: &mut Vec<u8>, d: &Dict) {
    write_head(out, major::MAP, d.0.len() as u64);
    for (k, x) in &d.0 {
        write_str(out, k.as_bytes());
        write_value(out, x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Result<Value, DecodeError> {
        let mut r = CborReader::new(b);
        let v = r.parse_value(0)?;
        r.finish_value()?;
        Ok(v)
    }

    fn skips(b: &[u8]) -> Result<(), DecodeError> {
        let mut r = CborReader::new(b);
        r.skip_value(0)?;
        r.finish_value()
    }

    #[test]
    fn writers_give_minicbors_bytes() {
        let mut ints: Vec<i64> = vec![0, 23, 24, 255, 256, i64::MAX, i64::MIN];
        for b in 0..64 {
            let p = 1i64.wrapping_shl(b);
            ints.extend([p, p.wrapping_sub(1), p.wrapping_neg(), p.wrapping_neg().wrapping_sub(1)]);
        }
        for i in ints {
            let mut ours = Vec::new();
            write_sint(&mut ours, i);
            let mut theirs = Vec::new();
            minicbor::Encoder::new(&mut theirs).i64(i).unwrap();
            assert_eq!(ours, theirs, "{i}");
        }
        for f in [0.0, -0.0, 1.5, 0.1, f64::INFINITY, f64::NAN, f64::MIN_POSITIVE] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_f64(&mut ours, f);
            minicbor::Encoder::new(&mut theirs).f64(f).unwrap();
            assert_eq!(ours, theirs, "{f}");
        }
        for v in [Value::Null, Value::Bool(true), Value::Bool(false), Value::Bytes(vec![1; 300])] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_value(&mut ours, &v);
            let mut e = minicbor::Encoder::new(&mut theirs);
            match &v {
                Value::Null => e.null().map(|_| ()),
                Value::Bool(b) => e.bool(*b).map(|_| ()),
                Value::Bytes(b) => e.bytes(b).map(|_| ()),
                _ => unreachable!(),
            }
            .unwrap();
            assert_eq!(ours, theirs, "{v:?}");
        }
    }

    #[test]
    fn round_trips_values() {
        let v = Value::List(vec![
            Value::Str("grüße".into()),
            Value::Bytes(vec![0, 255]),
            Value::Int(-1),
            Value::Int(i64::MIN),
            Value::UInt(u64::MAX),
            Value::Float(1.5),
            Value::Null,
            Value::Bool(true),
            Value::Dict(Dict::new().with("a", Value::List(vec![]))),
        ]);
        let mut out = Vec::new();
        write_value(&mut out, &v);
        assert_eq!(parse(&out).unwrap(), v);
        skips(&out).unwrap();
    }

    #[test]
    fn reads_rfc8949_examples() {
        // Appendix A of RFC 8949
        let cases: &[(&[u8], Value)] = &[
            (&[0x00], Value::UInt(0)),
            (&[0x18, 0x64], Value::UInt(100)),
            (&[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], Value::UInt(u64::MAX)),
            (&[0x38, 0x63], Value::Int(-100)),
            (&[0xf9, 0x3c, 0x00], Value::Float(1.0)),
            (&[0xf9, 0x7c, 0x00], Value::Float(f64::INFINITY)),
            (&[0xfa, 0x47, 0xc3, 0x50, 0x00], Value::Float(100000.0)),
            (&[0xf7], Value::Null),
            (&[0x62, 0xc3, 0xbc], Value::Str("ü".into())),
            (
                &[0x7f, 0x65, b's', b't', b'r', b'e', b'a', 0x64, b'm', b'i', b'n', b'g', 0xff],
                Value::Str("streaming".into()),
            ),
            (&[0x5f, 0x42, 1, 2, 0x43, 3, 4, 5, 0xff], Value::Bytes(vec![1, 2, 3, 4, 5])),
            (
                &[0x9f, 0x01, 0x82, 0x02, 0x03, 0x9f, 0x04, 0x05, 0xff, 0xff],
                Value::List(vec![
                    Value::UInt(1),
                    Value::List(vec![Value::UInt(2), Value::UInt(3)]),
                    Value::List(vec![Value::UInt(4), Value::UInt(5)]),
                ]),
            ),
            (
                &[0xbf, 0x61, b'a', 0x01, 0x61, b'b', 0x9f, 0x02, 0x03, 0xff, 0xff],
                Value::Dict(
                    Dict::new()
                        .with("a", Value::UInt(1))
                        .with("b", Value::List(vec![Value::UInt(2), Value::UInt(3)])),
                ),
            ),
            // tag 1 (epoch time): the value, untagged
            (&[0xc1, 0x1a, 0x51, 0x4b, 0x67, 0xb0], Value::UInt(1363896240)),
            // -2^64: beyond i64, the nearest float
            (
                &[0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                Value::Float(-18446744073709551616.0),
            ),
            // bignums: 2^64 (beyond u64, a float), 2^53 and -2^63 - 1 in
            // 8 bytes or less (integers), a zero-padded 5, -5
            (&[0xc2, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0], Value::Float(18446744073709551616.0)),
            (&[0xc2, 0x47, 0x20, 0, 0, 0, 0, 0, 0], Value::UInt(1 << 53)),
            (&[0xc3, 0x48, 0x80, 0, 0, 0, 0, 0, 0, 0], Value::Float(-9223372036854775809.0)),
            (&[0xc3, 0x48, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], Value::Int(i64::MIN)),
            (&[0xc2, 0x43, 0, 0, 5], Value::UInt(5)),
            (&[0xc3, 0x41, 4], Value::Int(-5)),
            (&[0xc2, 0x40], Value::UInt(0)),
            // tag 2 on something else than a byte string: the value
            (&[0xc2, 0x61, b'x'], Value::Str("x".into())),
        ];
        for (bytes, want) in cases {
            assert_eq!(&parse(bytes).unwrap(), want, "{bytes:02x?}");
            skips(bytes).unwrap();
        }
    }

    #[test]
    fn rejects_bad_input() {
        let bad: &[&[u8]] = &[
            // array claiming 2^32-1 items with no data
            &[0x9a, 0xff, 0xff, 0xff, 0xff],
            // invalid UTF-8 text
            &[0x61, 0xff],
            // map with an integer key
            &[0xa1, 0x01, 0x01],
            // simple value 16, reserved heads, a lone break
            &[0xf0],
            &[0x1c],
            &[0xff],
            // an indefinite array without its break
            &[0x9f, 0x01],
            // an indefinite text string with a byte-string chunk
            &[0x7f, 0x41, 0x00, 0xff],
            // a tag with nothing after it
            &[0xc1],
        ];
        for b in bad {
            assert!(parse(b).is_err(), "{b:02x?} parses");
            assert!(skips(b).is_err(), "{b:02x?} skips");
        }
        let deep = vec![0x81u8; 500];
        assert!(parse(&deep).is_err());
        assert!(skips(&deep).is_err());
        // a million tags before a value: read in a loop, not by recursion
        let mut tags = vec![0xc1u8; 1_000_000];
        tags.push(0x01);
        assert_eq!(parse(&tags).unwrap(), Value::UInt(1));
    }
}

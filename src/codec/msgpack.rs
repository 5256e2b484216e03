//! MessagePack: the envelope reader, value parser and encoder, on rmp's
//! markers and writers. Binary values use the bin type.

use bytes::Bytes;
use rmp::Marker;

use super::{DecodeError, MAX_DEPTH};
use crate::wamp::{Dict, Value};

fn err(msg: &'static str) -> DecodeError {
    DecodeError::Malformed(msg)
}

/// Reads the top-level message array of one MessagePack frame.
#[derive(Debug)]
pub struct MsgPackReader<'a> {
    buf: &'a [u8],
    pos: usize,
    remaining: u32,
}

impl<'a> MsgPackReader<'a> {
    /// A reader over one frame.
    pub fn new(buf: &'a [u8]) -> Self {
        MsgPackReader { buf, pos: 0, remaining: 0 }
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(err("truncated MessagePack"))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(err("truncated MessagePack"))?;
        let s = self.buf.get(self.pos..end).ok_or(err("truncated MessagePack"))?;
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    fn marker(&mut self) -> Result<Marker, DecodeError> {
        Ok(Marker::from_u8(self.byte()?))
    }

    fn array_len(&mut self, m: Marker) -> Result<Option<u32>, DecodeError> {
        Ok(match m {
            Marker::FixArray(n) => Some(n as u32),
            Marker::Array16 => Some(self.be(2)? as u32),
            Marker::Array32 => Some(self.be(4)? as u32),
            _ => None,
        })
    }

    fn map_len(&mut self, m: Marker) -> Result<Option<u32>, DecodeError> {
        Ok(match m {
            Marker::FixMap(n) => Some(n as u32),
            Marker::Map16 => Some(self.be(2)? as u32),
            Marker::Map32 => Some(self.be(4)? as u32),
            _ => None,
        })
    }

    fn str_len(&mut self, m: Marker) -> Result<Option<usize>, DecodeError> {
        Ok(match m {
            Marker::FixStr(n) => Some(n as usize),
            Marker::Str8 => Some(self.be(1)? as usize),
            Marker::Str16 => Some(self.be(2)? as usize),
            Marker::Str32 => Some(self.be(4)? as usize),
            _ => None,
        })
    }

    /// Opens the message array.
    pub fn list_start(&mut self) -> Result<(), DecodeError> {
        let m = self.marker()?;
        self.remaining = self.array_len(m)?.ok_or(err("message is not a MessagePack array"))?;
        Ok(())
    }

    /// True if another element follows in the message array.
    pub fn has_more(&mut self) -> bool {
        self.remaining > 0
    }

    fn elem(&mut self) -> Result<(), DecodeError> {
        if self.remaining == 0 {
            return Err(err("message array ends early"));
        }
        self.remaining -= 1;
        Ok(())
    }

    /// Reads an element that must be a non-negative integer.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.elem()?;
        // as `parse_value` reads it (a signed form holding a non-negative
        // value is a UInt too), without building a `Value`
        let signed = match self.marker()? {
            Marker::FixPos(n) => return Ok(n as u64),
            Marker::U8 => return self.be(1),
            Marker::U16 => return self.be(2),
            Marker::U32 => return self.be(4),
            Marker::U64 => return self.be(8),
            Marker::I8 => self.be(1)? as u8 as i8 as i64,
            Marker::I16 => self.be(2)? as u16 as i16 as i64,
            Marker::I32 => self.be(4)? as u32 as i32 as i64,
            Marker::I64 => self.be(8)? as i64,
            _ => -1,
        };
        u64::try_from(signed).map_err(|_| err("expected a non-negative integer"))
    }

    /// Reads an element that must be a string.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        self.elem()?;
        let m = self.marker()?;
        let n = self.str_len(m)?.ok_or(err("expected a string"))?;
        let s = self.take(n)?;
        std::str::from_utf8(s)
            .map(str::to_owned)
            .map_err(|_| err("invalid UTF-8 in string"))
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
        if self.remaining == 0 {
            return Ok((0, Bytes::new()));
        }
        let start = self.pos;
        self.elem()?;
        if opaque
            && matches!(
                Marker::from_u8(*self.buf.get(self.pos).unwrap_or(&0xc1)),
                Marker::Bin8 | Marker::Bin16 | Marker::Bin32 | Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32
            )
        {
            self.skip_value()?;
            if self.remaining > 0 {
                return Err(err("a transparent payload is one element"));
            }
            return Ok((1, frame.slice(start..self.pos)));
        }
        if !matches!(
            Marker::from_u8(*self.buf.get(self.pos).unwrap_or(&0xc1)),
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32
        ) {
            return Err(err("Arguments must be a list"));
        }
        self.skip_value()?;
        let mut count = 1;
        if self.remaining > 0 {
            self.elem()?;
            if !matches!(
                Marker::from_u8(*self.buf.get(self.pos).unwrap_or(&0xc1)),
                Marker::FixMap(_) | Marker::Map16 | Marker::Map32
            ) {
                return Err(err("ArgumentsKw must be a dictionary"));
            }
            self.skip_value()?;
            count = 2;
        }
        Ok((count, frame.slice(start..self.pos)))
    }

    /// Closes the message array; nothing may follow.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        if self.remaining != 0 {
            return Err(err("unexpected extra message elements"));
        }
        if self.pos != self.buf.len() {
            return Err(err("trailing data after message"));
        }
        Ok(())
    }

    /// Fails unless the whole input was consumed.
    pub fn finish_value(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(err("trailing data after value"))
        }
    }

    /// Parses one value.
    pub fn parse_value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(err("nesting too deep"));
        }
        let m = self.marker()?;
        if let Some(n) = self.array_len(m)? {
            let mut l = Vec::with_capacity((n as usize).min(self.buf.len() - self.pos));
            for _ in 0..n {
                l.push(self.parse_value(depth + 1)?);
            }
            return Ok(Value::List(l));
        }
        if let Some(n) = self.map_len(m)? {
            let mut d = Vec::with_capacity((n as usize).min(self.buf.len() - self.pos));
            for _ in 0..n {
                let k = match self.parse_value(depth + 1)? {
                    Value::Str(s) => s,
                    _ => return Err(err("dictionary key must be a string")),
                };
                d.push((k, self.parse_value(depth + 1)?));
            }
            return Ok(Value::Dict(Dict(d)));
        }
        if let Some(n) = self.str_len(m)? {
            let s = self.take(n)?;
            return std::str::from_utf8(s)
                .map(|s| Value::Str(s.to_owned()))
                .map_err(|_| err("invalid UTF-8 in string"));
        }
        Ok(match m {
            Marker::Null => Value::Null,
            Marker::True => Value::Bool(true),
            Marker::False => Value::Bool(false),
            Marker::FixPos(n) => Value::UInt(n as u64),
            Marker::FixNeg(n) => Value::Int(n as i64),
            Marker::U8 => Value::UInt(self.be(1)?),
            Marker::U16 => Value::UInt(self.be(2)?),
            Marker::U32 => Value::UInt(self.be(4)?),
            Marker::U64 => Value::UInt(self.be(8)?),
            Marker::I8 => int(self.be(1)? as u8 as i8 as i64),
            Marker::I16 => int(self.be(2)? as u16 as i16 as i64),
            Marker::I32 => int(self.be(4)? as u32 as i32 as i64),
            Marker::I64 => int(self.be(8)? as i64),
            Marker::F32 => Value::Float(f32::from_bits(self.be(4)? as u32) as f64),
            Marker::F64 => Value::Float(f64::from_bits(self.be(8)?)),
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                let n = match m {
                    Marker::Bin8 => self.be(1)?,
                    Marker::Bin16 => self.be(2)?,
                    _ => self.be(4)?,
                } as usize;
                Value::Bytes(self.take(n)?.to_vec())
            }
            _ => return Err(err("unsupported MessagePack type")),
        })
    }

    /// Skips one element of the message, validating it as `parse_value`
    /// would: structure, UTF-8 strings, string keys and nesting depth (the
    /// element is at depth 1, inside the message array).
    fn skip_value(&mut self) -> Result<(), DecodeError> {
        match self.marker()? {
            m @ (Marker::FixArray(_) | Marker::Array16 | Marker::Array32 | Marker::FixMap(_) | Marker::Map16 | Marker::Map32) => {
                self.skip_container(m, 1)
            }
            m => self.skip_scalar(m),
        }
    }

    /// Skips the items of a container at `depth` whose marker was read;
    /// nested containers recurse, and nothing is deeper than MAX_DEPTH.
    fn skip_container(&mut self, m: Marker, depth: usize) -> Result<(), DecodeError> {
        let (n, map) = match self.array_len(m)? {
            Some(n) => (n, false),
            None => (self.map_len(m)?.unwrap_or(0), true),
        };
        if n > 0 && depth >= MAX_DEPTH {
            return Err(err("nesting too deep"));
        }
        for _ in 0..n {
            if map {
                let k = self.marker()?;
                let len = self.str_len(k)?.ok_or(err("dictionary key must be a string"))?;
                self.skip_str(len)?;
            }
            match self.marker()? {
                m @ (Marker::FixArray(_) | Marker::Array16 | Marker::Array32 | Marker::FixMap(_) | Marker::Map16 | Marker::Map32) => {
                    self.skip_container(m, depth + 1)?
                }
                m => self.skip_scalar(m)?,
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn skip_scalar(&mut self, m: Marker) -> Result<(), DecodeError> {
        if let Some(n) = self.str_len(m)? {
            return self.skip_str(n);
        }
        let n = match m {
            Marker::Null | Marker::True | Marker::False | Marker::FixPos(_) | Marker::FixNeg(_) => 0,
            Marker::U8 | Marker::I8 => 1,
            Marker::U16 | Marker::I16 => 2,
            Marker::U32 | Marker::I32 | Marker::F32 => 4,
            Marker::U64 | Marker::I64 | Marker::F64 => 8,
            Marker::Bin8 => self.be(1)? as usize,
            Marker::Bin16 => self.be(2)? as usize,
            Marker::Bin32 => self.be(4)? as usize,
            _ => return Err(err("unsupported MessagePack type")),
        };
        self.take(n)?;
        Ok(())
    }

    #[inline(always)]
    fn skip_str(&mut self, n: usize) -> Result<(), DecodeError> {
        self.text(n).map(|_| ())
    }

    /// The next `n` bytes, checked to be UTF-8 (ASCII first: most are).
    #[inline(always)]
    fn text(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let s = self.take(n)?;
        if s.is_ascii() || std::str::from_utf8(s).is_ok() {
            Ok(s)
        } else {
            Err(err("invalid UTF-8 in string"))
        }
    }
}

impl MsgPackReader<'_> {
    /// Reads one value and tells `sink`, validating it as `parse_value`
    /// does (`codec::stream`).
    fn stream_value(&mut self, depth: usize, sink: &mut impl super::stream::Sink) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(err("nesting too deep"));
        }
        let m = self.marker()?;
        match m {
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                let n = self.array_len(m)?.unwrap_or(0);
                sink.open(false, Some(n));
                for _ in 0..n {
                    self.stream_value(depth + 1, sink)?;
                }
                sink.close(false, n);
            }
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
                let n = self.map_len(m)?.unwrap_or(0);
                sink.open(true, Some(n));
                for _ in 0..n {
                    // a key is a value one level down, as `parse_value` reads it
                    if depth + 1 > MAX_DEPTH {
                        return Err(err("nesting too deep"));
                    }
                    let k = self.marker()?;
                    let len = self.str_len(k)?.ok_or(err("dictionary key must be a string"))?;
                    sink.key(self.text(len)?);
                    self.stream_value(depth + 1, sink)?;
                }
                sink.close(true, n);
            }
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                let n = self.str_len(m)?.unwrap_or(0);
                sink.str(self.text(n)?);
            }
            Marker::Null => sink.null(),
            Marker::True => sink.bool(true),
            Marker::False => sink.bool(false),
            Marker::FixPos(n) => sink.uint(n as u64),
            Marker::FixNeg(n) => sink.int(n as i64),
            Marker::U8 => sink.uint(self.be(1)?),
            Marker::U16 => sink.uint(self.be(2)?),
            Marker::U32 => sink.uint(self.be(4)?),
            Marker::U64 => sink.uint(self.be(8)?),
            Marker::I8 => sink.scalar(&int(self.be(1)? as u8 as i8 as i64)),
            Marker::I16 => sink.scalar(&int(self.be(2)? as u16 as i16 as i64)),
            Marker::I32 => sink.scalar(&int(self.be(4)? as u32 as i32 as i64)),
            Marker::I64 => sink.scalar(&int(self.be(8)? as i64)),
            Marker::F32 => sink.float(f32::from_bits(self.be(4)? as u32) as f64),
            Marker::F64 => sink.float(f64::from_bits(self.be(8)?)),
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                let n = match m {
                    Marker::Bin8 => self.be(1)?,
                    Marker::Bin16 => self.be(2)?,
                    _ => self.be(4)?,
                } as usize;
                let b = self.take(n)?;
                sink.bytes(b);
            }
            _ => return Err(err("unsupported MessagePack type")),
        }
        Ok(())
    }
}

/// Reads a raw MessagePack payload span holding `count` values and tells
/// `sink` what it holds, validating it as [`parse_payload`] does.
pub(super) fn stream_payload(raw: &[u8], count: u8, sink: &mut impl super::stream::Sink) -> Result<u8, DecodeError> {
    let mut r = MsgPackReader::new(raw);
    for _ in 0..count {
        r.stream_value(1, sink)?;
    }
    if r.pos != raw.len() {
        return Err(err("trailing data in payload"));
    }
    Ok(count)
}

fn int(i: i64) -> Value {
    if i < 0 {
        Value::Int(i)
    } else {
        Value::UInt(i as u64)
    }
}

/// Parses a raw MessagePack payload span holding `count` values.
pub fn parse_payload(raw: &[u8], count: u8) -> Result<Vec<Value>, DecodeError> {
    let mut r = MsgPackReader::new(raw);
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        // at depth 1, as elements of the message array
        out.push(r.parse_value(1)?);
    }
    if r.pos != raw.len() {
        return Err(err("trailing data in payload"));
    }
    Ok(out)
}

/// Appends the MessagePack encoding of `v` to `out`.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(i) => write_sint(out, *i),
        Value::UInt(u) => write_uint(out, *u),
        Value::Float(f) => write_f64(out, *f),
        Value::Str(s) => write_str(out, s.as_bytes()),
        Value::Bytes(b) => write_bin(out, b),
        Value::List(l) => {
            write_array_len(out, l.len() as u32);
            for x in l {
                write_value(out, x);
            }
        }
        Value::Dict(d) => write_dict(out, d),
    }
}

/// Appends the MessagePack encoding of `d` to `out`.
pub fn write_dict(out: &mut Vec<u8>, d: &Dict) {
    write_map_len(out, d.0.len() as u32);
    for (k, x) in &d.0 {
        write_str(out, k.as_bytes());
        write_value(out, x);
    }
}

// The writers below give the bytes rmp's `encode` gives (each in its
// shortest form; a test checks them against rmp), inline and infallible.

/// An unsigned integer.
#[inline]
pub fn write_uint(out: &mut Vec<u8>, u: u64) {
    if u < 128 {
        out.push(u as u8);
    } else if u <= u8::MAX as u64 {
        out.extend_from_slice(&[0xcc, u as u8]);
    } else if u <= u16::MAX as u64 {
        out.push(0xcd);
        out.extend_from_slice(&(u as u16).to_be_bytes());
    } else if u <= u32::MAX as u64 {
        out.push(0xce);
        out.extend_from_slice(&(u as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

/// A signed integer (a non-negative one as `write_uint` writes it).
#[inline]
pub fn write_sint(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        write_uint(out, i as u64);
    } else if i >= -32 {
        out.push(i as u8);
    } else if i >= i8::MIN as i64 {
        out.extend_from_slice(&[0xd0, i as u8]);
    } else if i >= i16::MIN as i64 {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= i32::MIN as i64 {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

/// A double.
#[inline]
pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    out.push(0xcb);
    out.extend_from_slice(&f.to_bits().to_be_bytes());
}

/// A length with its marker: the fix form's base, then 8-bit (if
/// `m8` is given), 16-bit and 32-bit markers.
#[inline]
fn write_len(out: &mut Vec<u8>, len: u32, fix: Option<(u8, u32)>, m8: Option<u8>, m16: u8, m32: u8) {
    match (fix, m8) {
        (Some((base, below)), _) if len < below => out.push(base | len as u8),
        (_, Some(m)) if len <= u8::MAX as u32 => out.extend_from_slice(&[m, len as u8]),
        _ if len <= u16::MAX as u32 => {
            out.push(m16);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(m32);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// A string of UTF-8 `bytes`.
#[inline]
pub fn write_str(out: &mut Vec<u8>, bytes: &[u8]) {
    match bytes.len() {
        n @ 0..=31 => out.push(0xa0 | n as u8),
        n => write_len(out, n as u32, None, Some(0xd9), 0xda, 0xdb),
    }
    out.extend_from_slice(bytes);
}

/// A binary.
#[inline]
pub fn write_bin(out: &mut Vec<u8>, bytes: &[u8]) {
    write_len(out, bytes.len() as u32, None, Some(0xc4), 0xc5, 0xc6);
    out.extend_from_slice(bytes);
}

/// The header of a list of `len` items.
#[inline]
pub fn write_array_len(out: &mut Vec<u8>, len: u32) {
    write_len(out, len, Some((0x90, 16)), None, 0xdc, 0xdd);
}

/// The header of a dictionary of `len` entries.
#[inline]
pub fn write_map_len(out: &mut Vec<u8>, len: u32) {
    write_len(out, len, Some((0x80, 16)), None, 0xde, 0xdf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_give_rmps_bytes() {
        let mut ints: Vec<i64> = vec![0, 1, 31, 32, 127, 128, 255, 256, 65_535, 65_536, i64::MAX, i64::MIN];
        for b in 0..64 {
            let p = 1i64.wrapping_shl(b);
            ints.extend([
                p,
                p.wrapping_sub(1),
                p.wrapping_neg(),
                p.wrapping_neg().wrapping_sub(1),
                p.wrapping_neg().wrapping_add(1),
            ]);
        }
        for i in ints {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_sint(&mut ours, i);
            rmp::encode::write_sint(&mut theirs, i).unwrap();
            assert_eq!(ours, theirs, "sint {i}");
            let u = i as u64;
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_uint(&mut ours, u);
            rmp::encode::write_uint(&mut theirs, u).unwrap();
            assert_eq!(ours, theirs, "uint {u}");
        }
        for len in [0usize, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536] {
            let bytes = vec![b'a'; len];
            let mut theirs = Vec::new();
            let (mut s, mut b, mut a, mut m) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            write_str(&mut s, &bytes);
            rmp::encode::write_str(&mut theirs, std::str::from_utf8(&bytes).unwrap()).unwrap();
            assert_eq!(s, theirs, "str {len}");
            theirs.clear();
            write_bin(&mut b, &bytes);
            rmp::encode::write_bin(&mut theirs, &bytes).unwrap();
            assert_eq!(b, theirs, "bin {len}");
            theirs.clear();
            write_array_len(&mut a, len as u32);
            rmp::encode::write_array_len(&mut theirs, len as u32).unwrap();
            assert_eq!(a, theirs, "array {len}");
            theirs.clear();
            write_map_len(&mut m, len as u32);
            rmp::encode::write_map_len(&mut theirs, len as u32).unwrap();
            assert_eq!(m, theirs, "map {len}");
        }
        for f in [0.0, -0.0, 1.5, f64::INFINITY, f64::MIN_POSITIVE] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_f64(&mut ours, f);
            rmp::encode::write_f64(&mut theirs, f).unwrap();
            assert_eq!(ours, theirs, "f64 {f}");
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
        let mut r = MsgPackReader::new(&out);
        assert_eq!(r.parse_value(0).unwrap(), v);
        let mut r = MsgPackReader::new(&out);
        r.skip_value().unwrap();
        assert_eq!(r.pos, out.len());
    }

    #[test]
    fn rejects_bad_input() {
        // array claiming 2^32-1 items with no data
        let mut r = MsgPackReader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(r.skip_value().is_err());
        let mut r = MsgPackReader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(r.parse_value(0).is_err());
        // invalid UTF-8 string
        assert!(MsgPackReader::new(&[0xa1, 0xff]).parse_value(0).is_err());
        // map with integer key
        assert!(MsgPackReader::new(&[0x81, 0x01, 0x01]).parse_value(0).is_err());
        // reserved marker
        assert!(MsgPackReader::new(&[0xc1]).parse_value(0).is_err());
        let deep = vec![0x91u8; 500];
        assert!(MsgPackReader::new(&deep).parse_value(0).is_err());
    }
}

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
        let v = self.parse_value(0)?;
        match v {
            Value::UInt(u) => Ok(u),
            _ => Err(err("expected a non-negative integer")),
        }
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
        let s = self.take(n)?;
        std::str::from_utf8(s).map_err(|_| err("invalid UTF-8 in string"))?;
        Ok(())
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
        if let Some(n) = self.array_len(m)? {
            sink.open(false, Some(n));
            for _ in 0..n {
                self.stream_value(depth + 1, sink)?;
            }
            sink.close(false, n);
            return Ok(());
        }
        if let Some(n) = self.map_len(m)? {
            sink.open(true, Some(n));
            for _ in 0..n {
                // a key is a value one level down, as `parse_value` reads it
                if depth + 1 > MAX_DEPTH {
                    return Err(err("nesting too deep"));
                }
                let k = self.marker()?;
                let len = self.str_len(k)?.ok_or(err("dictionary key must be a string"))?;
                let key = std::str::from_utf8(self.take(len)?).map_err(|_| err("invalid UTF-8 in string"))?;
                sink.key(key);
                self.stream_value(depth + 1, sink)?;
            }
            sink.close(true, n);
            return Ok(());
        }
        if let Some(n) = self.str_len(m)? {
            let s = std::str::from_utf8(self.take(n)?).map_err(|_| err("invalid UTF-8 in string"))?;
            sink.str(s);
            return Ok(());
        }
        let v = match m {
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
                let b = self.take(n)?;
                sink.bytes(b);
                return Ok(());
            }
            _ => return Err(err("unsupported MessagePack type")),
        };
        sink.scalar(&v);
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
    use rmp::encode as e;
    // Writes to a Vec cannot fail.
    let _ = match v {
        Value::Null => e::write_nil(out).map_err(|_| ()),
        Value::Bool(b) => e::write_bool(out, *b).map_err(|_| ()),
        Value::Int(i) => e::write_sint(out, *i).map(|_| ()).map_err(|_| ()),
        Value::UInt(u) => e::write_uint(out, *u).map(|_| ()).map_err(|_| ()),
        Value::Float(f) => e::write_f64(out, *f).map_err(|_| ()),
        Value::Str(s) => e::write_str(out, s).map_err(|_| ()),
        Value::Bytes(b) => e::write_bin(out, b).map_err(|_| ()),
        Value::List(l) => {
            let _ = e::write_array_len(out, l.len() as u32);
            for x in l {
                write_value(out, x);
            }
            Ok(())
        }
        Value::Dict(d) => {
            write_dict(out, d);
            Ok(())
        }
    };
}

/// Appends the MessagePack encoding of `d` to `out`.
pub fn write_dict(out: &mut Vec<u8>, d: &Dict) {
    let _ = rmp::encode::write_map_len(out, d.0.len() as u32);
    for (k, x) in &d.0 {
        let _ = rmp::encode::write_str(out, k);
        write_value(out, x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! A small dynamic value for the parts of a message the router reads and writes
//! itself (Options, Details) and for payload transcoding between serializers.

/// A WAMP value, independent of the serializer.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// A negative integer (non-negative ones are `UInt`).
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(Dict),
}

impl Value {
    /// The value as a WAMP ID (1..=2^53): an unsigned integer, or a float
    /// that is exactly one (JavaScript clients' CBOR encoders write numbers
    /// above 2^32 as doubles, session IDs among them).
    pub fn as_id(&self) -> Option<u64> {
        match self {
            Value::UInt(u) if (1..=super::MAX_ID).contains(u) => Some(*u),
            Value::Float(f) if f.fract() == 0.0 && *f >= 1.0 && *f <= super::MAX_ID as f64 => Some(*f as u64),
            _ => None,
        }
    }
}

/// A dictionary with string keys. Options and Details are small, so a vector
/// beats a hash map here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dict(pub Vec<(String, Value)>);

impl Dict {
    /// An empty dictionary.
    pub fn new() -> Self {
        Dict(Vec::new())
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.0.push((key, value));
        }
    }

    /// Builder form of [`Dict::insert`].
    pub fn with(mut self, key: impl Into<String>, value: Value) -> Self {
        self.insert(key, value);
        self
    }

    /// The string under `key`, if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The boolean under `key`, if it is a boolean.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        match self.get(key) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// True when the dictionary has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::UInt(n)
    }
}

impl From<Dict> for Value {
    fn from(d: Dict) -> Self {
        Value::Dict(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_integers_and_whole_floats() {
        assert_eq!(Value::UInt(7).as_id(), Some(7));
        assert_eq!(Value::Float(4_294_967_297.0).as_id(), Some(4_294_967_297));
        assert_eq!(Value::Float((1u64 << 53) as f64).as_id(), Some(1 << 53));
        for bad in [
            Value::UInt(0),
            Value::UInt((1 << 53) + 1),
            Value::Float(1.5),
            Value::Float(0.0),
            Value::Float(-3.0),
            Value::Float(1e300),
            Value::Float(f64::NAN),
            Value::Int(-1),
            Value::Str("1".into()),
        ] {
            assert_eq!(bad.as_id(), None, "{bad:?}");
        }
    }
}

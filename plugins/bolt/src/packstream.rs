//! PackStream, Bolt's value encoding: the subset Bolt 5 messages use (null, booleans,
//! integers, floats, bytes, strings, lists, maps, structures), written from the
//! specification at <https://neo4j.com/docs/bolt/current/packstream/>.

use std::fmt;

/// A PackStream value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A byte array.
    Bytes(Vec<u8>),
    /// A UTF-8 string.
    String(String),
    /// A list.
    List(Vec<Value>),
    /// Entries in the order written (Bolt maps are small; a Vec keeps them cheap).
    Map(Vec<(String, Value)>),
    /// A tagged structure: a message, or a node, relationship, ... in a result.
    Struct(u8, Vec<Value>),
}

impl Value {
    /// The entry `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value of an integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// A map from `(key, value)` pairs.
pub fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

/// Bytes that are not valid PackStream.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed PackStream: {}", self.0)
    }
}

fn write_size(out: &mut Vec<u8>, len: usize, tiny: u8, markers: [u8; 3]) {
    if len < 16 && tiny != 0 {
        out.push(tiny | len as u8);
    } else if len <= u8::MAX as usize {
        out.push(markers[0]);
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(markers[1]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(markers[2]);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Append the encoding of `value` to `out`.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(0xC0),
        Value::Bool(false) => out.push(0xC2),
        Value::Bool(true) => out.push(0xC3),
        Value::Int(i) => {
            let i = *i;
            if (-16..=127).contains(&i) {
                out.push(i as i8 as u8);
            } else if i8::try_from(i).is_ok() {
                out.push(0xC8);
                out.push(i as i8 as u8);
            } else if let Ok(v) = i16::try_from(i) {
                out.push(0xC9);
                out.extend_from_slice(&v.to_be_bytes());
            } else if let Ok(v) = i32::try_from(i) {
                out.push(0xCA);
                out.extend_from_slice(&v.to_be_bytes());
            } else {
                out.push(0xCB);
                out.extend_from_slice(&i.to_be_bytes());
            }
        }
        Value::Float(f) => {
            out.push(0xC1);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Bytes(b) => {
            write_size(out, b.len(), 0, [0xCC, 0xCD, 0xCE]);
            out.extend_from_slice(b);
        }
        Value::String(s) => {
            write_size(out, s.len(), 0x80, [0xD0, 0xD1, 0xD2]);
            out.extend_from_slice(s.as_bytes());
        }
        Value::List(items) => {
            write_size(out, items.len(), 0x90, [0xD4, 0xD5, 0xD6]);
            for item in items {
                encode(item, out);
            }
        }
        Value::Map(entries) => {
            write_size(out, entries.len(), 0xA0, [0xD8, 0xD9, 0xDA]);
            for (k, v) in entries {
                encode(&Value::String(k.clone()), out);
                encode(v, out);
            }
        }
        Value::Struct(tag, fields) => {
            out.push(0xB0 | (fields.len() as u8 & 0x0F));
            out.push(*tag);
            for field in fields {
                encode(field, out);
            }
        }
    }
}

/// Decoding depth at most this: a hostile server cannot overflow the stack.
const MAX_DEPTH: usize = 64;

/// A reader over one message's bytes.
pub struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder reading `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (end, slice) = self
            .at
            .checked_add(n)
            .and_then(|end| Some((end, self.bytes.get(self.at..end)?)))
            .ok_or_else(|| DecodeError(format!("{n} bytes wanted at {}, message ends", self.at)))?;
        self.at = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let [byte] = self.be::<1>()?;
        Ok(byte)
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len(&mut self, marker: u8, base: u8) -> Result<usize, DecodeError> {
        Ok(match marker - base {
            0 => self.byte()? as usize,
            1 => u16::from_be_bytes(self.be()?) as usize,
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    fn string(&mut self, len: usize) -> Result<String, DecodeError> {
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| DecodeError("a string is not UTF-8".into()))
    }

    /// The next value.
    pub fn value(&mut self) -> Result<Value, DecodeError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError("nested too deeply".into()));
        }
        let marker = self.byte()?;
        Ok(match marker {
            0x00..=0x7F => Value::Int(i64::from(marker)),
            0xF0..=0xFF => Value::Int(i64::from(marker as i8)),
            0x80..=0x8F => Value::String(self.string((marker & 0x0F) as usize)?),
            0x90..=0x9F => self.list((marker & 0x0F) as usize, depth)?,
            0xA0..=0xAF => self.map((marker & 0x0F) as usize, depth)?,
            0xB0..=0xBF => {
                let tag = self.byte()?;
                let fields = (0..(marker & 0x0F))
                    .map(|_| self.value_at(depth + 1))
                    .collect::<Result<_, _>>()?;
                Value::Struct(tag, fields)
            }
            0xC0 => Value::Null,
            0xC1 => Value::Float(f64::from_be_bytes(self.be()?)),
            0xC2 => Value::Bool(false),
            0xC3 => Value::Bool(true),
            0xC8 => Value::Int(i64::from(self.byte()? as i8)),
            0xC9 => Value::Int(i64::from(i16::from_be_bytes(self.be()?))),
            0xCA => Value::Int(i64::from(i32::from_be_bytes(self.be()?))),
            0xCB => Value::Int(i64::from_be_bytes(self.be()?)),
            0xCC..=0xCE => {
                let len = self.len(marker, 0xCC)?;
                Value::Bytes(self.take(len)?.to_vec())
            }
            0xD0..=0xD2 => {
                let len = self.len(marker, 0xD0)?;
                Value::String(self.string(len)?)
            }
            0xD4..=0xD6 => {
                let len = self.len(marker, 0xD4)?;
                self.list(len, depth)?
            }
            0xD8..=0xDA => {
                let len = self.len(marker, 0xD8)?;
                self.map(len, depth)?
            }
            other => return Err(DecodeError(format!("unknown marker {other:#04x}"))),
        })
    }

    fn list(&mut self, len: usize, depth: usize) -> Result<Value, DecodeError> {
        // Every item takes at least a byte: a bogus length cannot reserve a huge Vec.
        let mut items = Vec::with_capacity(len.min(self.bytes.len() - self.at));
        for _ in 0..len {
            items.push(self.value_at(depth + 1)?);
        }
        Ok(Value::List(items))
    }

    fn map(&mut self, len: usize, depth: usize) -> Result<Value, DecodeError> {
        let mut entries = Vec::with_capacity(len.min(self.bytes.len() - self.at));
        for _ in 0..len {
            let key = match self.value_at(depth + 1)? {
                Value::String(key) => key,
                other => return Err(DecodeError(format!("a map key is {other:?}"))),
            };
            entries.push((key, self.value_at(depth + 1)?));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(value: Value) {
        let mut bytes = Vec::new();
        encode(&value, &mut bytes);
        assert_eq!(Decoder::new(&bytes).value().unwrap(), value, "{bytes:02x?}");
    }

    #[test]
    fn every_kind_and_size_round_trips() {
        for i in [
            0,
            -1,
            -16,
            -17,
            127,
            128,
            -128,
            -129,
            32767,
            32768,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            round_trip(Value::Int(i));
        }
        round_trip(Value::Float(-2.5));
        round_trip(Value::Null);
        round_trip(Value::Bool(true));
        for n in [0, 15, 16, 255, 256, 70_000] {
            round_trip(Value::String("é".repeat(n / 2) + &"x".repeat(n % 2)));
            round_trip(Value::List((0..n as i64).map(Value::Int).collect()));
            round_trip(Value::Bytes(vec![7; n]));
        }
        round_trip(map([
            ("a", Value::List(vec!["x".into(), Value::Float(1.0)])),
            (
                "b",
                Value::Struct(0x4E, vec![Value::Int(1), Value::Map(vec![])]),
            ),
        ]));
    }

    #[test]
    fn the_spec_examples_encode_as_documented() {
        let mut out = Vec::new();
        encode(&Value::Int(-16), &mut out);
        encode(&Value::Int(42), &mut out);
        encode(&Value::Int(1234), &mut out);
        encode(&"a".into(), &mut out);
        assert_eq!(out, [0xF0, 0x2A, 0xC9, 0x04, 0xD2, 0x81, 0x61]);
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        for bytes in [
            &[0xD1, 0xFF][..],
            &[0xD6, 0xFF, 0xFF, 0xFF, 0xFF],
            &[0xA1, 0x01, 0x01],
            &[0xE0],
            &[0x81, 0xFF],
        ] {
            assert!(Decoder::new(bytes).value().is_err(), "{bytes:02x?}");
        }
        let deep = vec![0x91; 10_000];
        assert!(Decoder::new(&deep).value().is_err());
    }
}

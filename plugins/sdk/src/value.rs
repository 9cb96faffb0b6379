//! Typed attribute values, converted from ordinary Rust values.

use crate::bindings::ww::memory::tracing as wit;

/// A typed attribute value (string, bool, i64, f64, or a list of one of them).
pub type Value = wit::Value;

/// One attribute: a key and a typed value.
pub type KeyValue = wit::KeyValue;

/// Build a [`KeyValue`].
pub fn kv(key: impl Into<String>, value: impl Into<Value>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
    }
}

macro_rules! value_from {
    ($variant:ident: $($t:ty => |$v:ident| $e:expr),+ $(,)?) => {
        $(impl From<$t> for Value {
            fn from($v: $t) -> Self {
                Value::$variant($e)
            }
        })+
    };
}

value_from!(String: String => |v| v, &str => |v| v.to_owned(), &String => |v| v.clone());
value_from!(Bool: bool => |v| v);
value_from!(S64: i64 => |v| v, i32 => |v| i64::from(v), u32 => |v| i64::from(v),
    u16 => |v| i64::from(v), u8 => |v| i64::from(v),
    // Counts and sizes: saturate rather than wrap into negatives.
    usize => |v| i64::try_from(v).unwrap_or(i64::MAX),
    u64 => |v| i64::try_from(v).unwrap_or(i64::MAX));
value_from!(F64: f64 => |v| v, f32 => |v| f64::from(v));
value_from!(StringList: Vec<String> => |v| v, &[&str] => |v| v.iter().map(|s| (*s).to_owned()).collect());
value_from!(BoolList: Vec<bool> => |v| v);
value_from!(S64List: Vec<i64> => |v| v);
value_from!(F64List: Vec<f64> => |v| v);

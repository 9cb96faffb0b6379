//! Typed attribute values. String literals are kept as borrowed `&'static str`, so the
//! common attribute (`.attr("batch_size", 100)`) allocates nothing in the guest.

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::bindings::ww::memory::tracing as wit;

/// A typed attribute value (string, bool, i64, f64, or a list of one of them).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    String(Cow<'static, str>),
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    S64(i64),
    /// A float.
    F64(f64),
    /// Strings.
    StringList(Vec<String>),
    /// Booleans.
    BoolList(Vec<bool>),
    /// Integers.
    S64List(Vec<i64>),
    /// Floats.
    F64List(Vec<f64>),
}

/// One attribute: a key and a typed value.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    /// The key, e.g. `db.collection.name`.
    pub key: Cow<'static, str>,
    /// The value.
    pub value: Value,
}

/// Build a [`KeyValue`].
pub fn kv(key: impl Into<Cow<'static, str>>, value: impl Into<Value>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
    }
}

/// Attributes lent to one host call; up to eight live on the stack.
pub(crate) type WitAttributes<'a> = SmallVec<[wit::KeyValue<'a>; 8]>;

impl KeyValue {
    /// A borrowed view; `string_list` is the `&str` view of a string-list value (empty
    /// for other values).
    pub(crate) fn as_wit<'a>(&'a self, string_list: &'a [&'a str]) -> wit::KeyValue<'a> {
        let value = match &self.value {
            Value::String(s) => wit::Value::String(s),
            Value::Bool(b) => wit::Value::Bool(*b),
            Value::S64(i) => wit::Value::S64(*i),
            Value::F64(f) => wit::Value::F64(*f),
            Value::StringList(_) => wit::Value::StringList(string_list),
            Value::BoolList(items) => wit::Value::BoolList(items),
            Value::S64List(items) => wit::Value::S64List(items),
            Value::F64List(items) => wit::Value::F64List(items),
        };
        wit::KeyValue {
            key: &self.key,
            value,
        }
    }
}

/// Borrowed views of `attributes` for a host call. String lists need a `&str` view of
/// their own, built in `scratch`; other values need none, so the common call allocates
/// nothing here.
pub(crate) fn lend<'a>(
    attributes: &'a [KeyValue],
    scratch: &'a mut Vec<Vec<&'a str>>,
) -> WitAttributes<'a> {
    scratch.extend(attributes.iter().filter_map(|kv| match &kv.value {
        Value::StringList(items) => Some(items.iter().map(String::as_str).collect()),
        _ => None,
    }));
    let scratch: &'a [Vec<&'a str>] = scratch;
    let mut lists = scratch.iter();
    attributes
        .iter()
        .map(|kv| {
            let list = match kv.value {
                Value::StringList(_) => lists.next().map_or(&[][..], Vec::as_slice),
                _ => &[],
            };
            kv.as_wit(list)
        })
        .collect()
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

value_from!(String:
    &'static str => |v| Cow::Borrowed(v),
    String => |v| Cow::Owned(v),
    &String => |v| Cow::Owned(v.clone()),
    Cow<'static, str> => |v| v);
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

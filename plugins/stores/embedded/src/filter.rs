//! Evaluating typed conditions on a record's fields (graph nodes; the vector payloads
//! have their own compiled form in `collection`), and the equality both share.

use ww_guest::store::{Condition, Field, FieldValue};

fn field<'a>(fields: &'a [Field], name: &str) -> Option<&'a FieldValue> {
    fields.iter().find(|f| f.name == name).map(|f| &f.value)
}

fn number(value: &FieldValue) -> Option<f64> {
    match value {
        FieldValue::Integer(i) => Some(*i as f64),
        FieldValue::Number(n) => Some(*n),
        _ => None,
    }
}

/// Equality, with integers and numbers compared as numbers and a `texts` field
/// containing a `text` value counting as equal.
pub fn equal(stored: &FieldValue, wanted: &FieldValue) -> bool {
    match (stored, wanted) {
        (FieldValue::Texts(items), FieldValue::Text(t)) => items.contains(t),
        (a, b) => match (number(a), number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

fn holds(fields: &[Field], condition: &Condition) -> bool {
    match condition {
        Condition::Equals(wanted) => {
            field(fields, &wanted.name).is_some_and(|v| equal(v, &wanted.value))
        }
        Condition::AnyOf((name, values)) => {
            field(fields, name).is_some_and(|v| values.iter().any(|w| equal(v, w)))
        }
        Condition::Within(range) => field(fields, &range.name)
            .and_then(number)
            .is_some_and(|x| {
                range.gte.is_none_or(|lo| x >= lo) && range.lte.is_none_or(|hi| x <= hi)
            }),
        Condition::Missing(name) => field(fields, name).is_none(),
    }
}

/// `conditions` all hold.
pub fn all(fields: &[Field], conditions: &[Condition]) -> bool {
    conditions.iter().all(|c| holds(fields, c))
}

//! Between the interface's typed records and Qdrant's JSON: payloads, filters, point ids.

use serde_json::{Map, Value, json};

use ww_guest::vector_store::{Condition, Error, Field, FieldValue, Filter, ValidationError};
use ww_guest::vector_store::{ScoredPoint, StoredPoint};

/// The payload key holding an id that is not itself a UUID.
pub const ID_KEY: &str = "ww_id";

/// The payload keys of a point's revisions, for `change-payload`'s compare-and-set:
/// the current revision (a random number each change writes, and the condition of the
/// next one), how many changes it has had, and the latest revisions (the one written by
/// change `seq` last), by which a writer tells whether its own write landed although
/// others may have written since. Hidden from the payload the services see, like
/// [`ID_KEY`].
pub const REVISION_KEY: &str = "ww_rev";
pub const SEQUENCE_KEY: &str = "ww_seq";
pub const RECENT_KEY: &str = "ww_revs";

/// Revisions kept under [`RECENT_KEY`].
pub const RECENT_REVISIONS: usize = 256;

/// Keys of ours in a payload, never a service's field.
fn reserved(key: &str) -> bool {
    [ID_KEY, REVISION_KEY, SEQUENCE_KEY, RECENT_KEY].contains(&key)
}

/// A point as `change-payload` reads it.
pub struct Revisioned {
    pub id: String,
    /// The current revision, if the point has been changed before.
    pub revision: Option<i64>,
    /// Changes so far (0 if none).
    pub sequence: i64,
    /// The latest revisions, oldest first; the last is change `sequence`'s.
    pub recent: Vec<i64>,
    pub fields: Vec<Field>,
}

/// Whether change number `sequence` wrote `revision`, as far as `point` remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landed {
    Yes,
    No,
    /// Too many changes since: its revision is no longer remembered.
    Forgotten,
}

impl Revisioned {
    /// Whether change number `sequence` of this point wrote `revision`.
    pub fn landed(&self, sequence: i64, revision: i64) -> Landed {
        if sequence > self.sequence {
            return Landed::No;
        }
        let first = self.sequence - self.recent.len() as i64 + 1;
        match usize::try_from(sequence - first) {
            Ok(at) if self.recent.get(at) == Some(&revision) => Landed::Yes,
            Ok(_) => Landed::No,
            Err(_) => Landed::Forgotten,
        }
    }
}

fn invalid(message: String) -> Error {
    Error::Validation(ValidationError {
        field: Some("payload".to_owned()),
        message,
    })
}

fn is_uuid(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Qdrant's id for ours: the UUID itself (lower case), or one derived from the id (two
/// differently seeded 64-bit FNV-1a hashes), the original kept under [`ID_KEY`].
pub fn point_id(id: &str) -> Value {
    if is_uuid(id) {
        return Value::String(id.to_ascii_lowercase());
    }
    let hi = fnv1a(0xcbf2_9ce4_8422_2325, id.as_bytes());
    let lo = fnv1a(0x8422_2325_cbf2_9ce4, id.as_bytes());
    let hex = format!("{hi:016x}{lo:016x}");
    Value::String(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

fn value(value: &FieldValue) -> Result<Value, String> {
    Ok(match value {
        FieldValue::Text(t) => json!(t),
        FieldValue::Integer(i) => json!(i),
        FieldValue::Number(n) if n.is_finite() => json!(n),
        FieldValue::Number(_) => return Err("is not a finite number".into()),
        FieldValue::Flag(b) => json!(b),
        FieldValue::Texts(ts) => json!(ts),
    })
}

fn field_value(value: &Value) -> Option<FieldValue> {
    Some(match value {
        Value::String(t) => FieldValue::Text(t.clone()),
        Value::Bool(b) => FieldValue::Flag(*b),
        Value::Number(n) if n.is_i64() => FieldValue::Integer(n.as_i64()?),
        Value::Number(n) => FieldValue::Number(n.as_f64()?),
        Value::Array(items) => FieldValue::Texts(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// The payload of fields (not including the id).
pub fn payload_fields(fields: &[Field]) -> Result<Value, Error> {
    let mut map = Map::with_capacity(fields.len() + 1);
    for field in fields {
        if field.name.is_empty() || reserved(&field.name) {
            return Err(invalid(format!(
                "{:?} is not a usable field name",
                field.name
            )));
        }
        let v = value(&field.value).map_err(|e| invalid(format!("field {} {e}", field.name)))?;
        map.insert(field.name.clone(), v);
    }
    Ok(Value::Object(map))
}

/// A point's payload: its fields, and its id when Qdrant's cannot be it.
pub fn payload(id: &str, fields: &[Field]) -> Result<Value, Error> {
    let mut payload = payload_fields(fields)?;
    if !is_uuid(id)
        && let Some(fields) = payload.as_object_mut()
    {
        fields.insert(ID_KEY.into(), json!(id));
    }
    Ok(payload)
}

/// Fields of a payload, by name.
pub fn fields(payload: &Map<String, Value>) -> Vec<Field> {
    let mut fields: Vec<Field> = payload
        .iter()
        .filter(|(k, _)| !reserved(k))
        .filter_map(|(k, v)| {
            Some(Field {
                name: k.clone(),
                value: field_value(v)?,
            })
        })
        .collect();
    fields.sort_by(|a, b| a.name.cmp(&b.name));
    fields
}

fn bad_answer(what: &str) -> Error {
    Error::Storage(format!("Qdrant's answer has no {what}"))
}

/// Our id of a returned point.
fn id_of(point: &Value, payload: &Map<String, Value>) -> Result<String, Error> {
    if let Some(Value::String(id)) = payload.get(ID_KEY) {
        return Ok(id.clone());
    }
    match point.get("id") {
        Some(Value::String(id)) => Ok(id.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(bad_answer("point id")),
    }
}

fn payload_of(point: &Value) -> Map<String, Value> {
    point
        .get("payload")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Search hits: each one's similarity is `relevance(the score Qdrant gave it)`, and it
/// is scored by `score(payload, similarity)`.
pub fn scored(
    hits: &Value,
    relevance: impl Fn(f32) -> f32,
    score: impl Fn(&Map<String, Value>, f32) -> f64,
) -> Result<Vec<ScoredPoint>, Error> {
    let hits = hits.as_array().ok_or_else(|| bad_answer("hit list"))?;
    hits.iter()
        .map(|hit| {
            let payload = payload_of(hit);
            let similarity = relevance(
                hit.get("score")
                    .and_then(Value::as_f64)
                    .ok_or_else(|| bad_answer("score"))? as f32,
            );
            Ok(ScoredPoint {
                id: id_of(hit, &payload)?,
                score: score(&payload, similarity),
                similarity,
                payload: fields(&payload),
            })
        })
        .collect()
}

/// Points read without a query vector, scored by `score(payload, 0)`.
pub fn scored_unranked(
    points: &[Value],
    score: impl Fn(&Map<String, Value>, f32) -> f64,
) -> Result<Vec<ScoredPoint>, Error> {
    points
        .iter()
        .map(|point| {
            let payload = payload_of(point);
            Ok(ScoredPoint {
                id: id_of(point, &payload)?,
                score: score(&payload, 0.0),
                similarity: 0.0,
                payload: fields(&payload),
            })
        })
        .collect()
}

/// Points as retrieved, with their revisions.
pub fn revisioned(points: &[Value]) -> Result<Vec<Revisioned>, Error> {
    points
        .iter()
        .map(|point| {
            let payload = payload_of(point);
            let recent = match payload.get(RECENT_KEY) {
                Some(Value::Array(xs)) => xs.iter().filter_map(Value::as_i64).collect(),
                _ => Vec::new(),
            };
            Ok(Revisioned {
                id: id_of(point, &payload)?,
                revision: payload.get(REVISION_KEY).and_then(Value::as_i64),
                sequence: payload
                    .get(SEQUENCE_KEY)
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                recent,
                fields: fields(&payload),
            })
        })
        .collect()
}

/// Stored points as returned by retrieve and scroll.
pub fn stored(points: &[Value]) -> Result<Vec<StoredPoint>, Error> {
    points
        .iter()
        .map(|point| {
            let payload = payload_of(point);
            // A collection with the text's sparse vector answers with named vectors, the
            // dense one under the default (empty) name.
            let vector = match point.get("vector").map(|v| v.get("").unwrap_or(v)) {
                Some(Value::Array(xs)) => Some(
                    xs.iter()
                        .map(|x| x.as_f64().map(|x| x as f32))
                        .collect::<Option<Vec<f32>>>()
                        .ok_or_else(|| bad_answer("numeric vector"))?,
                ),
                _ => None,
            };
            Ok(StoredPoint {
                id: id_of(point, &payload)?,
                payload: fields(&payload),
                vector,
            })
        })
        .collect()
}

fn condition(condition: &Condition) -> Result<Value, Error> {
    let scalar = |name: &str, v: &FieldValue| -> Result<Value, Error> {
        Ok(match v {
            // A float matches by an exact range (Qdrant matches keywords, integers and
            // booleans, not floats).
            FieldValue::Number(n) => json!({ "key": name, "range": { "gte": n, "lte": n } }),
            // A list: every item must be among the field's.
            FieldValue::Texts(items) => json!({ "must": items.iter()
                .map(|item| json!({ "key": name, "match": { "value": item } }))
                .collect::<Vec<_>>() }),
            other => json!({ "key": name, "match": { "value": value(other).map_err(invalid)? } }),
        })
    };
    Ok(match condition {
        Condition::Equals(field) => scalar(&field.name, &field.value)?,
        Condition::AnyOf((name, values)) => {
            let texts: Option<Vec<&String>> = values
                .iter()
                .map(|v| match v {
                    FieldValue::Text(t) => Some(t),
                    _ => None,
                })
                .collect();
            match texts {
                Some(texts) => json!({ "key": name, "match": { "any": texts } }),
                None => json!({ "should": values.iter()
                    .map(|v| scalar(name, v))
                    .collect::<Result<Vec<_>, _>>()? }),
            }
        }
        Condition::Within(range) => {
            json!({ "key": range.name, "range": { "gte": range.gte, "lte": range.lte } })
        }
        Condition::Missing(name) => json!({ "is_empty": { "key": name } }),
    })
}

/// A Qdrant filter: every `must` condition holds, no `must_not` one does.
pub fn filter(filter: &Filter) -> Result<Value, Error> {
    let all = |conditions: &[Condition]| -> Result<Vec<Value>, Error> {
        conditions.iter().map(condition).collect()
    };
    Ok(json!({ "must": all(&filter.must)?, "must_not": all(&filter.must_not)? }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(sequence: i64, recent: Vec<i64>) -> Revisioned {
        Revisioned {
            id: "p".to_owned(),
            revision: recent.last().copied(),
            sequence,
            recent,
            fields: Vec::new(),
        }
    }

    #[test]
    fn a_write_is_found_at_its_change_number_even_after_later_ones() {
        // Changes 8, 9, 10 wrote 80, 90, 100.
        let p = point(10, vec![80, 90, 100]);
        assert_eq!(p.landed(9, 90), Landed::Yes);
        assert_eq!(p.landed(10, 100), Landed::Yes);
        // Another writer's revision at that number: this one did not land.
        assert_eq!(p.landed(9, 91), Landed::No);
        // Nobody has written change 11 yet.
        assert_eq!(p.landed(11, 110), Landed::No);
        // Change 7 is no longer remembered.
        assert_eq!(p.landed(7, 70), Landed::Forgotten);
        // A point never changed.
        assert_eq!(point(0, vec![]).landed(1, 5), Landed::No);
    }
}

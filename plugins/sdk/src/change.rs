//! What a store does with a `field-change` (the vector store's `change-payload`) and an
//! `edge-reweight` (the graph store's `reweight-edges`): one implementation for every
//! adapter, so that the embedded store, Qdrant and any third-party store agree on the
//! arithmetic, the treatment of a missing field and the refusal of a wrong type.

use crate::store::vector::{AffineChange, FieldChange, IntegerChange};
use crate::store::{Error, Field, FieldValue, ValidationError};

fn invalid(message: String) -> Error {
    Error::Validation(ValidationError {
        field: Some("changes".to_owned()),
        message,
    })
}

/// The field a change is about.
pub fn field_name(change: &FieldChange) -> &str {
    match change {
        FieldChange::Add(c) | FieldChange::Max(c) => &c.name,
        FieldChange::Affine(c) => &c.name,
    }
}

/// A change that cannot apply to any value (no field name, a non-finite factor) is
/// refused before anything is read.
pub fn check(change: &FieldChange) -> Result<(), Error> {
    if field_name(change).is_empty() {
        return Err(invalid("a change names no field".to_owned()));
    }
    if let FieldChange::Affine(AffineChange {
        name,
        scale,
        offset,
    }) = change
        && !(scale.is_finite() && offset.is_finite())
    {
        return Err(invalid(format!(
            "the change of {name} is not finite (scale {scale}, offset {offset})"
        )));
    }
    Ok(())
}

/// The field's new value given the one stored (`None`: missing, counted as 0, or as the
/// bound for `max`).
pub fn apply(change: &FieldChange, stored: Option<&FieldValue>) -> Result<Field, Error> {
    let wrong = |kind: &str| {
        invalid(format!(
            "{} holds {}, not {kind}",
            field_name(change),
            describe(stored)
        ))
    };
    let value = match change {
        FieldChange::Add(IntegerChange { value, .. }) => match stored {
            None => FieldValue::Integer(*value),
            Some(FieldValue::Integer(old)) => FieldValue::Integer(old.saturating_add(*value)),
            Some(_) => return Err(wrong("an integer")),
        },
        FieldChange::Max(IntegerChange { value, .. }) => match stored {
            None => FieldValue::Integer(*value),
            Some(FieldValue::Integer(old)) => FieldValue::Integer((*old).max(*value)),
            Some(_) => return Err(wrong("an integer")),
        },
        FieldChange::Affine(AffineChange { scale, offset, .. }) => match stored {
            None => FieldValue::Number(*offset),
            Some(FieldValue::Number(old)) => FieldValue::Number(old * scale + offset),
            Some(_) => return Err(wrong("a number")),
        },
    };
    Ok(Field {
        name: field_name(change).to_owned(),
        value,
    })
}

/// `changes` applied in order to a payload's `fields`: the changed fields' new values.
pub fn apply_all(fields: &[Field], changes: &[FieldChange]) -> Result<Vec<Field>, Error> {
    let mut changed: Vec<Field> = Vec::with_capacity(changes.len());
    for change in changes {
        let name = field_name(change);
        let stored = changed
            .iter()
            .find(|f| f.name == name)
            .or_else(|| fields.iter().find(|f| f.name == name))
            .map(|f| &f.value);
        let field = apply(change, stored)?;
        match changed.iter_mut().find(|f| f.name == field.name) {
            Some(slot) => *slot = field,
            None => changed.push(field),
        }
    }
    Ok(changed)
}

/// An edge's new weight: w·scale + offset, refused when not finite.
pub fn reweight(weight: f64, scale: f64, offset: f64) -> Result<f64, Error> {
    let new = weight * scale + offset;
    if new.is_finite() {
        Ok(new)
    } else {
        Err(invalid(format!(
            "reweighting {weight} by scale {scale}, offset {offset} is not finite"
        )))
    }
}

fn describe(value: Option<&FieldValue>) -> &'static str {
    match value {
        None => "nothing",
        Some(FieldValue::Text(_)) => "text",
        Some(FieldValue::Integer(_)) => "an integer",
        Some(FieldValue::Number(_)) => "a number",
        Some(FieldValue::Flag(_)) => "a flag",
        Some(FieldValue::Texts(_)) => "texts",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integer(name: &str, value: i64) -> Field {
        Field {
            name: name.to_owned(),
            value: FieldValue::Integer(value),
        }
    }

    #[test]
    fn changes_apply_to_the_stored_value_in_order() {
        let stored = vec![
            integer("count", 4),
            integer("seen", 100),
            Field {
                name: "stability".to_owned(),
                value: FieldValue::Number(1.0),
            },
        ];
        let add = |v| {
            FieldChange::Add(IntegerChange {
                name: "count".to_owned(),
                value: v,
            })
        };
        let changed = apply_all(
            &stored,
            &[
                add(1),
                add(2),
                FieldChange::Max(IntegerChange {
                    name: "seen".to_owned(),
                    value: 50,
                }),
                FieldChange::Affine(AffineChange {
                    name: "stability".to_owned(),
                    scale: 0.9,
                    offset: 0.2,
                }),
                FieldChange::Add(IntegerChange {
                    name: "new".to_owned(),
                    value: 3,
                }),
            ],
        )
        .unwrap();
        assert_eq!(changed[0], integer("count", 7));
        assert_eq!(changed[1], integer("seen", 100));
        assert!(matches!(changed[2].value, FieldValue::Number(s) if (s - 1.1).abs() < 1e-12));
        assert_eq!(changed[3], integer("new", 3));
        let wrong = apply(&add(1), Some(&FieldValue::Text("four".to_owned())));
        assert!(matches!(wrong, Err(Error::Validation(_))));
    }
}

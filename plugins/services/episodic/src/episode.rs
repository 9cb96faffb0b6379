//! An episode as a vector-store point: its payload fields, written and read back.

use ww_guest::episodic::{Episode, EpisodeContext, Outcome, TraceRef};
use ww_guest::services::{Error, Field, FieldValue};

use crate::score;
pub use ww_service_common::{integer, number, text};

pub const SESSION: &str = "session";
pub const CONTENT: &str = "content";
pub const PROJECT: &str = "project";
pub const FILE: &str = "file";
pub const TOOL: &str = "tool";
/// Extra context keys are stored as `context.<key>`.
pub const CONTEXT_PREFIX: &str = "context.";
pub const OUTCOME: &str = "outcome";
/// The outcome's weight in the recall score, stored so the store can rank by it.
pub const OUTCOME_WEIGHT: &str = "outcome_weight";
pub const VALENCE: &str = "valence";
pub const EVENT_TIME: &str = "event_time";
pub const INGESTION_TIME: &str = "ingestion_time";
pub const ACCESS_COUNT: &str = "access_count";
pub const STABILITY: &str = "stability";
pub const LAST_ACCESS: &str = "last_access";
/// Position in its session: 1 for the first episode.
pub const SEQUENCE: &str = "sequence";
pub const PREVIOUS: &str = "previous";
pub const DUPLICATE_OF: &str = "duplicate_of";
/// The span that stored it (`created_trace`, `created_span`), and the last that changed
/// it (`updated_*`), when those requests were sampled.
pub const CREATED: &str = "created";
pub const UPDATED: &str = "updated";

pub fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Neutral => "neutral",
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Partial => "partial",
    }
}

fn outcome_from(name: &str) -> Option<Outcome> {
    Some(match name {
        "neutral" => Outcome::Neutral,
        "success" => Outcome::Success,
        "failure" => Outcome::Failure,
        "partial" => Outcome::Partial,
        _ => return None,
    })
}

/// The payload of `episode` at position `sequence` in its session.
pub fn to_payload(episode: &Episode, sequence: i64) -> Vec<Field> {
    let mut fields = vec![
        text(SESSION, &episode.session),
        text(CONTENT, &episode.content),
        text(OUTCOME, outcome_name(episode.outcome)),
        number(OUTCOME_WEIGHT, score::outcome_weight(episode.outcome)),
        number(VALENCE, episode.valence),
        integer(EVENT_TIME, episode.event_time),
        integer(INGESTION_TIME, episode.ingestion_time),
        integer(ACCESS_COUNT, i64::from(episode.access_count)),
        number(STABILITY, episode.stability),
        integer(LAST_ACCESS, episode.last_access),
        integer(SEQUENCE, sequence),
    ];
    let context = &episode.context;
    for (name, value) in [
        (PROJECT, &context.project),
        (FILE, &context.file),
        (TOOL, &context.tool),
    ] {
        if let Some(value) = value {
            fields.push(text(name, value));
        }
    }
    for (key, value) in &context.extra {
        fields.push(text(&format!("{CONTEXT_PREFIX}{key}"), value));
    }
    if let Some(previous) = &episode.previous {
        fields.push(text(PREVIOUS, previous));
    }
    if let Some(original) = &episode.duplicate_of {
        fields.push(text(DUPLICATE_OF, original));
    }
    for (prefix, by) in [
        (CREATED, &episode.created_by),
        (UPDATED, &episode.updated_by),
    ] {
        let span = by.as_ref().map(|t| (t.trace_id.clone(), t.span_id.clone()));
        fields.extend(ww_service_common::trace_fields(prefix, span.as_ref()));
    }
    fields
}

/// A stored payload read back: the fields it must have, typed.
pub struct Stored<'a>(&'a [Field]);

impl<'a> Stored<'a> {
    pub fn new(payload: &'a [Field]) -> Self {
        Self(payload)
    }

    fn get(&self, name: &str) -> Option<&'a FieldValue> {
        self.0.iter().find(|f| f.name == name).map(|f| &f.value)
    }

    fn text(&self, name: &str) -> Option<String> {
        match self.get(name) {
            Some(FieldValue::Text(t)) => Some(t.clone()),
            _ => None,
        }
    }

    fn integer(&self, name: &str) -> Result<i64, Error> {
        match self.get(name) {
            Some(FieldValue::Integer(i)) => Ok(*i),
            _ => Err(corrupt(name)),
        }
    }

    fn number(&self, name: &str) -> Result<f64, Error> {
        match self.get(name) {
            Some(FieldValue::Number(n)) => Ok(*n),
            Some(FieldValue::Integer(i)) => Ok(*i as f64),
            _ => Err(corrupt(name)),
        }
    }

    pub fn session(&self) -> Option<String> {
        self.text(SESSION)
    }

    pub fn sequence(&self) -> Result<i64, Error> {
        self.integer(SEQUENCE)
    }

    pub fn episode(&self, id: String) -> Result<Episode, Error> {
        let outcome = self
            .text(OUTCOME)
            .and_then(|name| outcome_from(&name))
            .ok_or_else(|| corrupt(OUTCOME))?;
        let extra = self
            .0
            .iter()
            .filter_map(|f| match (&f.value, f.name.strip_prefix(CONTEXT_PREFIX)) {
                (FieldValue::Text(value), Some(key)) => Some((key.to_owned(), value.clone())),
                _ => None,
            })
            .collect();
        Ok(Episode {
            id,
            session: self.text(SESSION).ok_or_else(|| corrupt(SESSION))?,
            content: self.text(CONTENT).ok_or_else(|| corrupt(CONTENT))?,
            context: EpisodeContext {
                project: self.text(PROJECT),
                file: self.text(FILE),
                tool: self.text(TOOL),
                extra,
            },
            outcome,
            valence: self.number(VALENCE)?,
            event_time: self.integer(EVENT_TIME)?,
            ingestion_time: self.integer(INGESTION_TIME)?,
            access_count: u32::try_from(self.integer(ACCESS_COUNT)?).unwrap_or(u32::MAX),
            stability: self.number(STABILITY)?,
            last_access: self.integer(LAST_ACCESS)?,
            previous: self.text(PREVIOUS),
            duplicate_of: self.text(DUPLICATE_OF),
            created_by: self.trace(CREATED),
            updated_by: self.trace(UPDATED),
        })
    }

    /// The span recorded under `prefix`, if any.
    fn trace(&self, prefix: &str) -> Option<TraceRef> {
        ww_service_common::Fields(self.0)
            .trace(prefix)
            .map(|(trace_id, span_id)| TraceRef { trace_id, span_id })
    }
}

fn corrupt(field: &str) -> Error {
    Error::Storage(format!("a stored episode has no valid `{field}` field"))
}

//! What the memory services share: argument checks that produce typed validation errors,
//! time-ordered ids, embedding one text, and typed payload fields written and read back.

use ww_guest::services::embedder;
use ww_guest::services::vector_store::{self as vectors, Collection};
use ww_guest::services::{Error, Field, FieldValue, ValidationError};

/// A validation error about argument `field`.
pub fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Validation(ValidationError {
        field: Some(field.to_owned()),
        message: message.into(),
    })
}

/// A required text: not blank, at most `max` bytes.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(
            field,
            format!("is {} bytes; at most {max} are accepted", value.len()),
        ));
    }
    Ok(())
}

/// An optional text of at most `max` bytes.
pub fn check_optional(field: &str, value: Option<&str>, max: usize) -> Result<(), Error> {
    match value {
        Some(v) if v.len() > max => Err(invalid(
            field,
            format!("is {} bytes; at most {max} are accepted", v.len()),
        )),
        _ => Ok(()),
    }
}

/// A number in [0, 1] (NaN is not).
pub fn check_unit(field: &str, value: f64) -> Result<(), Error> {
    if !(0.0..=1.0).contains(&value) {
        return Err(invalid(field, "must be a number between 0 and 1"));
    }
    Ok(())
}

/// The longest id an argument may carry, in bytes: ours are 36 (a UUID); room for a
/// client's own scheme, not for a document passed by mistake.
pub const MAX_ID_BYTES: usize = 128;

/// An id argument: present and of a sane length (unknown ids are `not-found` later).
pub fn check_id(field: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(invalid(
            field,
            format!("an id must be 1 to {MAX_ID_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A time-ordered unique id (UUID v7 at `now`, milliseconds since the epoch).
pub fn new_id(now: i64) -> String {
    let millis = u64::try_from(now).unwrap_or(0);
    let timestamp = uuid::Timestamp::from_unix(
        uuid::NoContext,
        millis / 1000,
        (millis % 1000) as u32 * 1_000_000,
    );
    uuid::Uuid::new_v7(timestamp).to_string()
}

thread_local! {
    /// Collections ensured by this instance (a component instance is single-threaded).
    static ENSURED: std::cell::RefCell<Vec<Collection>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Make sure `collection` exists with the embedder's dimension; asked of the store once
/// per instance.
pub fn ensure_collection(collection: Collection) -> Result<(), Error> {
    if ENSURED.with_borrow(|done| done.contains(&collection)) {
        return Ok(());
    }
    vectors::ensure_collection(collection, &current_embedder())?;
    ENSURED.with_borrow_mut(|done| done.push(collection));
    Ok(())
}

/// The embedder configured now, as collections record it.
pub fn current_embedder() -> vectors::EmbedderId {
    vectors::EmbedderId {
        model: embedder::model(),
        dimension: embedder::dimension(),
    }
}

/// Texts per embedder call while re-embedding: eight texts of the model's longest (256
/// tokens) stay inside the model embedder's 2,048 tokens per call.
const REEMBED_BATCH: usize = 8;
/// Points per re-embedding page, at most.
pub const MAX_REEMBED_PAGE: u32 = 1024;

/// One page of `ww-memory reembed` for `collection`: up to `limit` points after `after`,
/// their vectors rebuilt from `text_of(id, payload)` with the configured embedder and
/// written back with their payload unchanged. The last page records the embedder on the
/// collection, so a run interrupted before it leaves the collection still refused, and
/// running it again starts over safely.
pub fn reembed(
    collection: Collection,
    after: Option<String>,
    limit: u32,
    text_of: impl Fn(&str, &[Field]) -> Result<String, Error>,
) -> Result<ww_guest::services::ReembedPage, Error> {
    if limit == 0 || limit > MAX_REEMBED_PAGE {
        return Err(invalid(
            "limit",
            format!("must be between 1 and {MAX_REEMBED_PAGE}"),
        ));
    }
    let embedder = current_embedder();
    let Some(info) = vectors::describe_collection(collection)? else {
        return Ok(ww_guest::services::ReembedPage {
            rebuilt: 0,
            next: None,
            total: 0,
        });
    };
    if info.dimension != embedder.dimension {
        return Err(invalid(
            "embedder",
            format!(
                "the collection's vectors have {} dimensions and {} makes {}: re-embedding \
                 keeps the dimension; use a new data directory for this embedder",
                info.dimension, embedder.model, embedder.dimension
            ),
        ));
    }
    let everything = ww_guest::services::Filter {
        must: vec![],
        must_not: vec![],
    };
    let page = vectors::scroll(collection, &everything, after.as_deref(), limit, false)?;
    let mut points = Vec::with_capacity(page.len());
    for batch in page.chunks(REEMBED_BATCH) {
        let texts = batch
            .iter()
            .map(|p| text_of(&p.id, &p.payload))
            .collect::<Result<Vec<String>, Error>>()?;
        let vectors = embedder::embed(&texts)?;
        if vectors.len() != texts.len() {
            return Err(Error::Embedding(
                "the embedder returned a different number of vectors than texts".to_owned(),
            ));
        }
        for ((point, vector), text) in batch.iter().zip(vectors).zip(texts) {
            points.push(vectors::Point {
                id: point.id.clone(),
                vector,
                payload: point.payload.clone(),
                text: Some(text),
            });
        }
    }
    if !points.is_empty() {
        vectors::upsert(collection, &points)?;
    }
    let next = if page.len() < limit as usize {
        vectors::set_embedder(collection, &embedder)?;
        None
    } else {
        page.last().map(|p| p.id.clone())
    };
    ww_guest::add_span_attribute("reembed.rebuilt", points.len());
    Ok(ww_guest::services::ReembedPage {
        rebuilt: points.len() as u32,
        next,
        total: info.points,
    })
}

/// The embedding of one text.
pub fn embed(text: &str) -> Result<Vec<f32>, Error> {
    let mut vectors = embedder::embed(&[text.to_owned()])?;
    match vectors.pop() {
        Some(vector) if vectors.is_empty() => Ok(vector),
        _ => Err(Error::Embedding(
            "the embedder returned a different number of vectors than texts".to_owned(),
        )),
    }
}

pub use ww_vecmath::{Quantized, cosine, similar_at_least};

/// A text field.
pub fn text(name: &str, value: impl Into<String>) -> Field {
    Field {
        name: name.to_owned(),
        value: FieldValue::Text(value.into()),
    }
}

/// A field holding several texts.
pub fn texts(name: &str, values: Vec<String>) -> Field {
    Field {
        name: name.to_owned(),
        value: FieldValue::Texts(values),
    }
}

/// An integer field.
pub fn integer(name: &str, value: i64) -> Field {
    Field {
        name: name.to_owned(),
        value: FieldValue::Integer(value),
    }
}

/// A number field.
pub fn number(name: &str, value: f64) -> Field {
    Field {
        name: name.to_owned(),
        value: FieldValue::Number(value),
    }
}

/// A boolean field.
pub fn flag(name: &str, value: bool) -> Field {
    Field {
        name: name.to_owned(),
        value: FieldValue::Flag(value),
    }
}

/// `name` equals `value`, as a filter condition.
pub fn equals(field: Field) -> ww_guest::services::Condition {
    ww_guest::services::Condition::Equals(field)
}

/// Stored fields read back, typed; a missing or mistyped required field is a storage
/// error naming it (the data is not what this service wrote).
pub struct Fields<'a>(pub &'a [Field]);

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a FieldValue> {
        self.0.iter().find(|f| f.name == name).map(|f| &f.value)
    }

    /// The span recorded under `prefix` by [`trace_fields`], if any.
    pub fn trace(&self, prefix: &str) -> Option<(String, String)> {
        Some((
            self.text(&format!("{prefix}_trace"))?,
            self.text(&format!("{prefix}_span"))?,
        ))
    }

    /// The text field `name`, if there is one.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.get(name) {
            Some(FieldValue::Text(t)) => Some(t.clone()),
            _ => None,
        }
    }

    /// The text field `name`; without it, a storage error naming it.
    pub fn required_text(&self, name: &str) -> Result<String, Error> {
        self.text(name).ok_or_else(|| corrupt(name))
    }

    /// The texts of field `name` (none when it is missing).
    pub fn texts(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Some(FieldValue::Texts(t)) => t.clone(),
            _ => Vec::new(),
        }
    }

    /// The integer field `name`; without it, a storage error naming it.
    pub fn integer(&self, name: &str) -> Result<i64, Error> {
        match self.get(name) {
            Some(FieldValue::Integer(i)) => Ok(*i),
            _ => Err(corrupt(name)),
        }
    }

    /// The integer field `name`, if there is one.
    pub fn optional_integer(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Some(FieldValue::Integer(i)) => Some(*i),
            _ => None,
        }
    }

    /// The number field `name` (an integer reads as a number); without it, a storage
    /// error naming it.
    pub fn number(&self, name: &str) -> Result<f64, Error> {
        match self.get(name) {
            Some(FieldValue::Number(n)) => Ok(*n),
            Some(FieldValue::Integer(i)) => Ok(*i as f64),
            _ => Err(corrupt(name)),
        }
    }

    /// Whether the boolean field `name` is set and true.
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some(FieldValue::Flag(true)))
    }
}

fn corrupt(field: &str) -> Error {
    Error::Storage(format!("a stored record has no valid `{field}` field"))
}

/// The OpenTelemetry GenAI memory conventions' operations (`gen_ai.operation.name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryOperation {
    /// A new record.
    Create,
    /// Records found by a query.
    Search,
    /// An existing record changed.
    Update,
    /// A record created, or the existing one of that identity returned.
    Upsert,
}

impl MemoryOperation {
    fn name(self) -> &'static str {
        match self {
            Self::Create => "create_memory",
            Self::Search => "search_memory",
            Self::Update => "update_memory",
            Self::Upsert => "upsert_memory",
        }
    }
}

/// The store a collection is, as the conventions' `gen_ai.memory.store.id` (the name
/// the vector store gives it).
pub fn store_id(collection: Collection) -> &'static str {
    match collection {
        Collection::Episodes => "ww_episodes",
        Collection::Entities => "ww_entities",
        Collection::Procedures => "ww_procedures",
    }
}

/// Says on the current span, in the GenAI memory conventions' terms, what the operation
/// did: which operation on which store, the record it touched (when one), how many
/// records it created, changed or returned. Alongside the service's own attributes.
pub fn memory_span(
    operation: MemoryOperation,
    collection: Collection,
    record: Option<&str>,
    count: usize,
) {
    ww_guest::add_span_attribute("gen_ai.operation.name", operation.name());
    ww_guest::add_span_attribute("gen_ai.memory.store.id", store_id(collection));
    if let Some(id) = record {
        ww_guest::add_span_attribute("gen_ai.memory.record.id", id.to_owned());
    }
    ww_guest::add_span_attribute("gen_ai.memory.record.count", count);
}

/// The span writing now, as a memory records it: the innermost open span of the request
/// (the service's own), when the request is sampled. Never from tool arguments: only the
/// host's trace context names it.
pub fn writing_span() -> Option<(String, String)> {
    let context = ww_guest::get_trace_context();
    context
        .sampled()
        .then(|| (context.trace_id().to_owned(), context.span_id().to_owned()))
}

/// Payload fields recording the span that wrote a memory (`<prefix>_trace`,
/// `<prefix>_span`), when there is one.
pub fn trace_fields(prefix: &str, span: Option<&(String, String)>) -> Vec<Field> {
    match span {
        Some((trace, span)) => vec![
            text(&format!("{prefix}_trace"), trace.clone()),
            text(&format!("{prefix}_span"), span.clone()),
        ],
        None => Vec::new(),
    }
}

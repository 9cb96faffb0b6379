//! An entity as stored: a point in `ww_entities` (its embedding and every field) and a
//! node in the graph (name, type and validity, for typed lookups and edges).

use ww_guest::semantic::{Entity, EntityType, RelationType, TraceRef};
use ww_guest::services::graph_store::{self as graph, Node, NodeLabel};
use ww_guest::services::vector_store::{self as vectors, Collection};
use ww_guest::services::{Error, Field};
use ww_service_common::{Fields, integer, number, text};

pub const NAME: &str = "name";
/// The name as compared for "the same entity": trimmed, lower case.
pub const NAME_KEY: &str = "name_key";
pub const TYPE: &str = "entity_type";
pub const SUMMARY: &str = "summary";
pub const DETAILS: &str = "details";
pub const SESSION: &str = "session";
pub const VALID_FROM: &str = "valid_from";
/// Present once superseded: recall and spreading skip entities that have it.
pub const VALID_TO: &str = "valid_to";
pub const SUPERSEDED_BY: &str = "superseded_by";
pub const ACCESS_COUNT: &str = "access_count";
pub const LAST_ACCESS: &str = "last_access";
pub const STABILITY: &str = "stability";
pub const CREATED: &str = "created";
/// On `derived-from` edges: `source` (given at creation) or `consolidation`.
pub const ORIGIN: &str = "origin";

pub fn name_key(name: &str) -> String {
    name.trim().to_lowercase()
}

pub fn type_name(t: EntityType) -> &'static str {
    match t {
        EntityType::Concept => "CONCEPT",
        EntityType::Person => "PERSON",
        EntityType::Project => "PROJECT",
        EntityType::Tool => "TOOL",
        EntityType::Technique => "TECHNIQUE",
        EntityType::Fact => "FACT",
    }
}

fn type_from(name: &str) -> Option<EntityType> {
    Some(match name {
        "CONCEPT" => EntityType::Concept,
        "PERSON" => EntityType::Person,
        "PROJECT" => EntityType::Project,
        "TOOL" => EntityType::Tool,
        "TECHNIQUE" => EntityType::Technique,
        "FACT" => EntityType::Fact,
        _ => return None,
    })
}

/// The graph's relation type for a semantic relation.
pub fn graph_relation(r: RelationType) -> graph::RelationType {
    match r {
        RelationType::Uses => graph::RelationType::Uses,
        RelationType::Produces => graph::RelationType::Produces,
        RelationType::Requires => graph::RelationType::Requires,
        RelationType::Causes => graph::RelationType::Causes,
        RelationType::PartOf => graph::RelationType::PartOf,
        RelationType::SimilarTo => graph::RelationType::SimilarTo,
        RelationType::Implements => graph::RelationType::Implements,
        RelationType::ImprovesOn => graph::RelationType::ImprovesOn,
    }
}

/// The relation types between entities (spreading and recall follow only these).
pub const SEMANTIC: [graph::RelationType; 8] = [
    graph::RelationType::Uses,
    graph::RelationType::Produces,
    graph::RelationType::Requires,
    graph::RelationType::Causes,
    graph::RelationType::PartOf,
    graph::RelationType::SimilarTo,
    graph::RelationType::Implements,
    graph::RelationType::ImprovesOn,
];

/// A new, unused entity valid from `valid_from`, created `now`.
pub fn fresh(
    name: String,
    entity_type: EntityType,
    summary: String,
    details: Option<String>,
    session: String,
    valid_from: i64,
    now: i64,
) -> Entity {
    Entity {
        id: ww_service_common::new_id(now),
        name,
        entity_type,
        summary,
        details,
        session,
        valid_from,
        valid_to: None,
        superseded_by: None,
        access_count: 0,
        last_access: now,
        stability: 1.0,
        created: now,
        created_by: writer(),
        updated_by: None,
    }
}

/// The span writing now, as an entity or relation records it (see
/// [`ww_service_common::writing_span`]).
pub fn writer() -> Option<TraceRef> {
    ww_service_common::writing_span().map(|(trace_id, span_id)| TraceRef { trace_id, span_id })
}

/// Payload fields recording `by` under `prefix`.
pub fn trace_fields(prefix: &str, by: Option<&TraceRef>) -> Vec<Field> {
    let span = by.map(|t| (t.trace_id.clone(), t.span_id.clone()));
    ww_service_common::trace_fields(prefix, span.as_ref())
}

/// The span recorded under `prefix` in `fields`.
pub fn trace_of(fields: &Fields<'_>, prefix: &str) -> Option<TraceRef> {
    fields
        .trace(prefix)
        .map(|(trace_id, span_id)| TraceRef { trace_id, span_id })
}

/// The prefixes of the spans that stored and last changed an entity or relation.
pub const CREATED_BY: &str = "created";
pub const UPDATED_BY: &str = "updated";

/// Every field of an entity, as its point's payload.
pub fn payload(e: &Entity) -> Vec<Field> {
    let mut fields = vec![
        text(NAME, &e.name),
        text(NAME_KEY, name_key(&e.name)),
        text(TYPE, type_name(e.entity_type)),
        text(SUMMARY, &e.summary),
        text(SESSION, &e.session),
        integer(VALID_FROM, e.valid_from),
        integer(ACCESS_COUNT, i64::from(e.access_count)),
        integer(LAST_ACCESS, e.last_access),
        number(STABILITY, e.stability),
        integer(CREATED, e.created),
    ];
    if let Some(details) = &e.details {
        fields.push(text(DETAILS, details));
    }
    if let Some(valid_to) = e.valid_to {
        fields.push(integer(VALID_TO, valid_to));
    }
    if let Some(successor) = &e.superseded_by {
        fields.push(text(SUPERSEDED_BY, successor));
    }
    fields.extend(trace_fields(CREATED_BY, e.created_by.as_ref()));
    fields.extend(trace_fields(UPDATED_BY, e.updated_by.as_ref()));
    fields
}

/// The entity's graph node: what typed lookups and edges need.
pub fn node(e: &Entity) -> Node {
    let mut properties = vec![
        text(NAME_KEY, name_key(&e.name)),
        text(TYPE, type_name(e.entity_type)),
    ];
    if let Some(valid_to) = e.valid_to {
        properties.push(integer(VALID_TO, valid_to));
    }
    Node {
        id: e.id.clone(),
        label: NodeLabel::Entity,
        properties,
    }
}

/// An entity read back from its point's payload.
pub fn from_payload(id: String, payload: &[Field]) -> Result<Entity, Error> {
    let f = Fields(payload);
    let type_text = f.required_text(TYPE)?;
    Ok(Entity {
        id,
        name: f.required_text(NAME)?,
        entity_type: type_from(&type_text)
            .ok_or_else(|| Error::Storage(format!("unknown stored entity type {type_text}")))?,
        summary: f.required_text(SUMMARY)?,
        details: f.text(DETAILS),
        session: f.required_text(SESSION)?,
        valid_from: f.integer(VALID_FROM)?,
        valid_to: f.optional_integer(VALID_TO),
        superseded_by: f.text(SUPERSEDED_BY),
        access_count: u32::try_from(f.integer(ACCESS_COUNT)?).unwrap_or(u32::MAX),
        last_access: f.integer(LAST_ACCESS)?,
        stability: f.number(STABILITY)?,
        created: f.integer(CREATED)?,
        created_by: trace_of(&f, CREATED_BY),
        updated_by: trace_of(&f, UPDATED_BY),
    })
}

/// The entities with these ids that exist, in the order asked.
pub fn get_many(ids: &[String]) -> Result<Vec<Entity>, Error> {
    vectors::get(Collection::Entities, ids, false)?
        .into_iter()
        .map(|p| from_payload(p.id, &p.payload))
        .collect()
}

/// The entity `id`, or `not-found`.
pub fn get(id: &str) -> Result<Entity, Error> {
    get_many(&[id.to_owned()])?
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound(format!("no entity {id}")))
}

/// Whether a graph node is a currently valid entity.
pub fn node_is_valid(node: &Node) -> bool {
    node.label == NodeLabel::Entity && !node.properties.iter().any(|p| p.name == VALID_TO)
}

//! Semantic memory (tools 5–9 and 15): entities are facts with validity
//! intervals, each a point in `ww_entities` (embedding and fields) and a node in the graph;
//! relations are typed, weighted edges between entity nodes. Provenance is `derived-from`
//! edges to episodes, supersession a `supersedes` edge from the new version to the old.

mod consolidate;
mod entity;
mod recall;
mod spread;

use std::collections::{HashSet, VecDeque};

use entity::{SEMANTIC, graph_relation};
use ww_guest::semantic::{
    CreatedEntity, DeepReport, Entity, Guest, NewEntity, Provenance, RecallRequest, RecalledEntity,
    Relation, RelationType, SpreadRequest, SpreadResult, SupersedeRequest, Supersession,
};
use ww_guest::services::graph_store::{self as graph, Direction, Edge, NodeLabel};
use ww_guest::services::vector_store::{self as vectors, Collection, PayloadUpdate, Point};
use ww_guest::services::{Condition, Error};
use ww_guest::{add_span_attribute, add_span_event, kv, traced};
use ww_service_common::{
    Fields, MemoryOperation, check_id, check_optional, check_text, embed, equals, integer, invalid,
    memory_span, text,
};

/// An entity's name, in bytes: a label, not a text.
const MAX_NAME: usize = 200;
/// An entity's summary, in bytes: a paragraph (it is embedded whole).
const MAX_SUMMARY: usize = 10_000;
/// An entity's details, in bytes: stored, not embedded, so ten times a summary.
const MAX_DETAILS: usize = 100_000;
/// Nodes a graph walk visits at most (cycle checks, provenance chains).
const MAX_WALK: usize = 10_000;
/// Relation types that must not form a directed cycle: nothing is part of itself,
/// requires itself, causes itself or improves on itself, however indirectly.
const ACYCLIC: [RelationType; 4] = [
    RelationType::PartOf,
    RelationType::Requires,
    RelationType::Causes,
    RelationType::ImprovesOn,
];

/// The `entities` collection, ensured with the embedder's dimension on first use.
fn ensure_collection() -> Result<(), Error> {
    ww_service_common::ensure_collection(Collection::Entities)
}

/// What an entity's embedding is made of.
fn embedding_text(name: &str, summary: &str) -> String {
    format!("{name}: {summary}")
}

/// Store a new entity: its node, then its point (visible to recall once complete).
fn store_new(entity: &Entity) -> Result<(), Error> {
    graph::upsert_node(&entity::node(entity))?;
    vectors::upsert(
        Collection::Entities,
        &[Point {
            id: entity.id.clone(),
            vector: embed(&embedding_text(&entity.name, &entity.summary))?,
            payload: entity::payload(entity),
            text: Some(embedding_text(&entity.name, &entity.summary)),
        }],
    )
}

/// Link `entity` to the episode it came from (`origin`: `source` or `consolidation`).
fn link_episode(entity: &str, episode: &str, origin: &str) -> Result<(), Error> {
    match graph::get_node(episode)? {
        Some(node) if node.label == NodeLabel::Episode => graph::upsert_edge(&Edge {
            source: entity.to_owned(),
            target: episode.to_owned(),
            relation: graph::RelationType::DerivedFrom,
            weight: 1.0,
            properties: vec![text(entity::ORIGIN, origin)],
        }),
        _ => Err(Error::NotFound(format!("no episode {episode}"))),
    }
}

/// The active entity named `name` (compared trimmed and case-insensitively) of `type`.
fn find_active(name: &str, entity_type: &str) -> Result<Option<String>, Error> {
    let found = graph::find_nodes(
        NodeLabel::Entity,
        &[
            equals(text(entity::NAME_KEY, entity::name_key(name))),
            equals(text(entity::TYPE, entity_type)),
            Condition::Missing(entity::VALID_TO.to_owned()),
        ],
        1,
    )?;
    Ok(found.into_iter().next().map(|node| node.id))
}

#[traced("semantic.create_entity", kind = Internal)]
fn create_entity(new: NewEntity, now: i64) -> Result<CreatedEntity, Error> {
    check_text("name", &new.name, MAX_NAME)?;
    check_text("summary", &new.summary, MAX_SUMMARY)?;
    check_optional("details", new.details.as_deref(), MAX_DETAILS)?;
    if let Some(source) = &new.source {
        check_id("source", source)?;
    }
    let type_name = entity::type_name(new.entity_type);
    add_span_attribute("entity.type", type_name);
    add_span_attribute("entity.name.length", new.name.len());
    ensure_collection()?;
    if let Some(existing) = find_active(&new.name, type_name)? {
        if let Some(source) = &new.source {
            link_episode(&existing, source, "source")?;
        }
        memory_span(
            MemoryOperation::Upsert,
            Collection::Entities,
            Some(&existing),
            1,
        );
        add_span_attribute("entity.id", existing.clone());
        add_span_attribute("entity.created", false);
        return Ok(CreatedEntity {
            entity: entity::get(&existing)?,
            created: false,
        });
    }
    // An unknown source is an error before anything is stored.
    if let Some(source) = &new.source
        && graph::get_node(source)?.is_none_or(|n| n.label != NodeLabel::Episode)
    {
        return Err(Error::NotFound(format!("no episode {source}")));
    }
    let entity = entity::fresh(
        new.name.trim().to_owned(),
        new.entity_type,
        new.summary,
        new.details,
        new.session,
        now,
        now,
    );
    store_new(&entity)?;
    if let Some(source) = &new.source {
        link_episode(&entity.id, source, "source")?;
        add_span_attribute("entity.source", source.clone());
    }
    memory_span(
        MemoryOperation::Upsert,
        Collection::Entities,
        Some(&entity.id),
        1,
    );
    add_span_attribute("entity.id", entity.id.clone());
    add_span_attribute("entity.created", true);
    Ok(CreatedEntity {
        entity,
        created: true,
    })
}

/// Whether `from` reaches `to` along edges of `relation` (for cycle checks).
fn reaches(from: &str, to: &str, relation: graph::RelationType) -> Result<bool, Error> {
    let mut seen = HashSet::from([from.to_owned()]);
    let mut queue = VecDeque::from([from.to_owned()]);
    while let Some(node) = queue.pop_front() {
        if node == to {
            return Ok(true);
        }
        if seen.len() > MAX_WALK {
            return Err(invalid(
                "relation_type",
                "the graph is too deep to check this relation for cycles",
            ));
        }
        for next in graph::neighbors(&node, Direction::Outgoing, &[relation], 10_000)? {
            if seen.insert(next.node.id.clone()) {
                queue.push_back(next.node.id);
            }
        }
    }
    Ok(false)
}

#[traced("semantic.create_relation", kind = Internal)]
fn create_relation(mut relation: Relation) -> Result<Relation, Error> {
    // Who wrote it is this request's span, whatever the caller passed.
    relation.created_by = entity::writer();
    check_id("source_id", &relation.source_id)?;
    check_id("target_id", &relation.target_id)?;
    if relation.source_id == relation.target_id {
        return Err(invalid(
            "target_id",
            "an entity cannot be related to itself",
        ));
    }
    if !(relation.weight > 0.0 && relation.weight <= 1.0) {
        return Err(invalid("weight", "must be a number in (0, 1]"));
    }
    add_span_attribute("relation.type", format!("{:?}", relation.relation_type));
    add_span_attribute("relation.weight", relation.weight);
    for (field, id) in [
        ("source_id", &relation.source_id),
        ("target_id", &relation.target_id),
    ] {
        match graph::get_node(id)? {
            Some(node) if entity::node_is_valid(&node) => {}
            Some(node) if node.label == NodeLabel::Entity => {
                return Err(invalid(
                    field,
                    format!("entity {id} has been superseded; relate its current version"),
                ));
            }
            _ => return Err(Error::NotFound(format!("no entity {id}"))),
        }
    }
    let kind = graph_relation(relation.relation_type);
    if ACYCLIC.contains(&relation.relation_type)
        && reaches(&relation.target_id, &relation.source_id, kind)?
    {
        return Err(invalid(
            "relation_type",
            format!(
                "{:?} from {} to {} would close a cycle",
                relation.relation_type, relation.source_id, relation.target_id
            ),
        ));
    }
    graph::upsert_edge(&Edge {
        source: relation.source_id.clone(),
        target: relation.target_id.clone(),
        relation: kind,
        weight: relation.weight,
        properties: entity::trace_fields(entity::CREATED_BY, relation.created_by.as_ref()),
    })?;
    Ok(relation)
}

#[traced("semantic.supersede_fact", kind = Internal)]
fn supersede(request: SupersedeRequest, now: i64) -> Result<Supersession, Error> {
    check_id("entity_id", &request.entity_id)?;
    check_text("new_summary", &request.new_summary, MAX_SUMMARY)?;
    check_optional("new_details", request.new_details.as_deref(), MAX_DETAILS)?;
    check_optional("reason", request.reason.as_deref(), MAX_SUMMARY)?;
    add_span_attribute("entity.id", request.entity_id.clone());
    ensure_collection()?;
    let mut old = entity::get(&request.entity_id)?;
    if let Some(successor) = &old.superseded_by {
        return Err(invalid(
            "entity_id",
            format!(
                "entity {} is already superseded by {successor}; supersede that one",
                old.id
            ),
        ));
    }
    let valid_from = request.valid_from.unwrap_or(now);
    if valid_from < old.valid_from {
        return Err(invalid(
            "valid_from",
            "the new version cannot start before the old one did",
        ));
    }
    let new = entity::fresh(
        old.name.clone(),
        old.entity_type,
        request.new_summary,
        request.new_details,
        request.session,
        valid_from,
        now,
    );
    store_new(&new)?;
    let mut link = vec![];
    if let Some(reason) = &request.reason {
        link.push(text("reason", reason));
    }
    graph::upsert_edge(&Edge {
        source: new.id.clone(),
        target: old.id.clone(),
        relation: graph::RelationType::Supersedes,
        weight: 1.0,
        properties: link,
    })?;
    // Active relations carry over to the new version.
    let mut carried = 0u32;
    for neighbor in graph::neighbors(&old.id, Direction::Both, &SEMANTIC, 10_000)? {
        if !entity::node_is_valid(&neighbor.node) || neighbor.node.id == new.id {
            continue;
        }
        let edge = neighbor.edge;
        let (source, target) = if edge.source == old.id {
            (new.id.clone(), edge.target)
        } else {
            (edge.source, new.id.clone())
        };
        graph::upsert_edge(&Edge {
            source,
            target,
            relation: edge.relation,
            weight: edge.weight,
            properties: edge.properties,
        })?;
        carried += 1;
    }
    // The old version's validity ends where the new one's begins.
    old.valid_to = Some(valid_from);
    old.superseded_by = Some(new.id.clone());
    // The same request's span wrote the new version and changed the old one.
    old.updated_by = new.created_by.clone();
    graph::update_node(&old.id, &[integer(entity::VALID_TO, valid_from)])?;
    let mut fields = vec![
        integer(entity::VALID_TO, valid_from),
        text(entity::SUPERSEDED_BY, &new.id),
    ];
    fields.extend(entity::trace_fields(
        entity::UPDATED_BY,
        old.updated_by.as_ref(),
    ));
    vectors::update_payload(
        Collection::Entities,
        &[PayloadUpdate {
            id: old.id.clone(),
            fields,
        }],
    )?;
    memory_span(
        MemoryOperation::Update,
        Collection::Entities,
        Some(&old.id),
        1,
    );
    add_span_attribute("entity.successor", new.id.clone());
    add_span_attribute("relations.carried", carried);
    Ok(Supersession {
        old,
        new,
        relations_carried: carried,
    })
}

/// Follow `supersedes` edges from `start` in `direction`, nearest first.
fn chain(start: &str, direction: Direction) -> Result<Vec<String>, Error> {
    let mut chain = Vec::new();
    let mut current = start.to_owned();
    while chain.len() < MAX_WALK {
        let next = graph::neighbors(&current, direction, &[graph::RelationType::Supersedes], 1)?;
        match next.into_iter().next() {
            Some(n) if !chain.contains(&n.node.id) && n.node.id != start => {
                current = n.node.id.clone();
                chain.push(n.node.id);
            }
            _ => break,
        }
    }
    Ok(chain)
}

#[traced("semantic.get_provenance", kind = Internal)]
fn provenance(id: String) -> Result<Provenance, Error> {
    check_id("entity_id", &id)?;
    add_span_attribute("entity.id", id.clone());
    ensure_collection()?;
    let entity = entity::get(&id)?;
    let mut source_episodes = Vec::new();
    let mut consolidated_from = Vec::new();
    let links = graph::neighbors(
        &id,
        Direction::Outgoing,
        &[graph::RelationType::DerivedFrom],
        MAX_WALK as u32,
    )?;
    for link in links {
        let consolidation = Fields(&link.edge.properties)
            .text(entity::ORIGIN)
            .as_deref()
            == Some("consolidation");
        if consolidation {
            consolidated_from.push(link.node.id);
        } else {
            source_episodes.push(link.node.id);
        }
    }
    let provenance = Provenance {
        entity,
        source_episodes,
        supersedes: chain(&id, Direction::Outgoing)?,
        superseded_by: chain(&id, Direction::Incoming)?,
        consolidated_from,
    };
    add_span_attribute("provenance.episodes", provenance.source_episodes.len());
    add_span_attribute(
        "provenance.versions",
        provenance.supersedes.len() + provenance.superseded_by.len(),
    );
    add_span_event(
        "provenance.collected",
        vec![kv("consolidated_from", provenance.consolidated_from.len())],
    );
    Ok(provenance)
}

struct Semantic;

impl Guest for Semantic {
    fn create_entity(entity: NewEntity, now: i64) -> Result<CreatedEntity, Error> {
        create_entity(entity, now)
    }

    fn create_relation(relation: Relation, _now: i64) -> Result<Relation, Error> {
        create_relation(relation)
    }

    fn semantic_recall(request: RecallRequest) -> Result<Vec<RecalledEntity>, Error> {
        ensure_collection()?;
        recall::recall(request)
    }

    fn spread_activation(request: SpreadRequest) -> Result<SpreadResult, Error> {
        spread::spread(request)
    }

    fn supersede_fact(request: SupersedeRequest, now: i64) -> Result<Supersession, Error> {
        supersede(request, now)
    }

    fn get_provenance(entity_id: String) -> Result<Provenance, Error> {
        provenance(entity_id)
    }

    fn consolidate_deep(now: i64) -> Result<DeepReport, Error> {
        ensure_collection()?;
        consolidate::deep(now)
    }

    #[traced("semantic.reembed", kind = Internal)]
    fn reembed(
        after: Option<String>,
        limit: u32,
    ) -> Result<ww_guest::services::ReembedPage, Error> {
        ww_service_common::reembed(Collection::Entities, after, limit, |id, payload| {
            let entity = entity::from_payload(id.to_owned(), payload)?;
            Ok(embedding_text(&entity.name, &entity.summary))
        })
    }
}

ww_guest::export_semantic!(Semantic);

// Writes that check before they write (an entity of that name exists, a relation
// would close a cycle, a fact is still current) run one at a time on one instance;
// recalls run on any instance of the pool. A consolidation gets an instance of its own.
ww_guest::calls! {
    serial: ["create-entity", "create-relation", "supersede-fact"],
    long_running: ["consolidate-deep"],
}

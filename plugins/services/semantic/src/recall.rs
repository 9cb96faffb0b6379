//! `semantic_recall` (tool 7): score = 0.40·similarity + 0.35·sigmoid(A) + 0.25·R
//! over currently valid entities, with the activation A from use, recency and the
//! context entities' edges, and the retrievability R = 0.9^(days since access / stability).
//!
//! Candidates are the entities most similar to the query (ten times the limit, at least
//! 50) and every valid neighbour of a context entity (the ones spreading can lift), each
//! scored in full.

use std::collections::{BTreeMap, HashMap};

use ww_guest::semantic::{Entity, EntityScore, RecallRequest, RecalledEntity};
use ww_guest::services::graph_store::{self as graph, Direction, EdgeReweight};
use ww_guest::services::vector_store::{
    self as vectors, Collection, FieldChange, IntegerChange, PayloadChange, SearchRequest,
};
use ww_guest::services::{Condition, Error, Filter};
use ww_guest::{add_span_attribute, add_span_event, add_span_link, kv, span, traced};
use ww_service_common::{
    MemoryOperation, check_id, check_text, cosine, embed, invalid, memory_span,
};

use crate::entity::{self, SEMANTIC};

pub const W_SIMILARITY: f64 = 0.40;
pub const W_ACTIVATION: f64 = 0.35;
pub const W_RETRIEVABILITY: f64 = 0.25;
const HOUR_MS: f64 = 3_600_000.0;
const DAY_MS: f64 = 86_400_000.0;
const MAX_LIMIT: u32 = 100;
const MAX_CONTEXT: usize = 32;

/// One context entity: its fan (edges, at least 1) and the weight of its edge to each
/// neighbour (the heaviest, when there are several).
struct Context {
    fan: f64,
    weights: HashMap<String, f64>,
}

/// A = ln(max(n, 1)) − 0.5·ln(max(h, 1/60)) + Σⱼ (1/|C|)·wⱼ·(1.6 − ln fanⱼ).
pub fn activation(access_count: u32, hours: f64, context: &[(f64, f64)]) -> f64 {
    let base = f64::from(access_count.max(1)).ln() - 0.5 * hours.max(1.0 / 60.0).ln();
    let share = if context.is_empty() {
        0.0
    } else {
        1.0 / context.len() as f64
    };
    base + context
        .iter()
        .map(|(weight, fan)| share * weight * (1.6 - fan.ln()))
        .sum::<f64>()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn score(similarity: f64, entity: &Entity, now: i64, contexts: &[Context]) -> EntityScore {
    let since = (now - entity.last_access).max(0) as f64;
    let terms: Vec<(f64, f64)> = contexts
        .iter()
        .map(|c| (c.weights.get(&entity.id).copied().unwrap_or(0.0), c.fan))
        .collect();
    let activation = activation(entity.access_count, since / HOUR_MS, &terms);
    let retrievability = 0.9f64.powf(since / DAY_MS / entity.stability.max(f64::MIN_POSITIVE));
    EntityScore {
        similarity,
        activation,
        retrievability,
        total: W_SIMILARITY * similarity
            + W_ACTIVATION * sigmoid(activation)
            + W_RETRIEVABILITY * retrievability,
    }
}

#[traced("semantic.recall", kind = Internal)]
pub fn recall(request: RecallRequest) -> Result<Vec<RecalledEntity>, Error> {
    check_text("query", &request.query, 10_000)?;
    if request.limit == 0 || request.limit > MAX_LIMIT {
        return Err(invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    if request.context_entities.len() > MAX_CONTEXT {
        return Err(invalid(
            "context_entities",
            format!("at most {MAX_CONTEXT} context entities"),
        ));
    }
    for id in &request.context_entities {
        check_id("context_entities", id)?;
    }
    add_span_attribute("recall.limit", request.limit);
    add_span_attribute("recall.context", request.context_entities.len());
    let now = request.now;
    let query = embed(&request.query)?;
    let hits = vectors::search(&SearchRequest {
        collection: Collection::Entities,
        vector: query.clone(),
        text: Some(request.query.clone()),
        filter: Filter {
            must: vec![Condition::Missing(entity::VALID_TO.to_owned())],
            must_not: vec![],
        },
        limit: (request.limit * 10).clamp(50, 1000),
        offset: 0,
        rescore: None,
    })?;
    let mut candidates: BTreeMap<String, (f64, Entity)> = BTreeMap::new();
    for hit in hits {
        let similarity = f64::from(hit.similarity).clamp(0.0, 1.0);
        let entity = entity::from_payload(hit.id.clone(), &hit.payload)?;
        candidates.insert(hit.id, (similarity, entity));
    }

    let mut contexts = Vec::new();
    let mut unique = request.context_entities.clone();
    unique.sort();
    unique.dedup();
    for id in &unique {
        if graph::get_node(id)?.is_none_or(|n| n.label != graph::NodeLabel::Entity) {
            return Err(Error::NotFound(format!(
                "no entity {id} (context_entities)"
            )));
        }
        let neighbors = graph::neighbors(id, Direction::Both, &SEMANTIC, 10_000)?;
        let mut weights: HashMap<String, f64> = HashMap::new();
        for n in &neighbors {
            if entity::node_is_valid(&n.node) {
                let w = weights.entry(n.node.id.clone()).or_insert(0.0);
                *w = w.max(n.edge.weight);
            }
        }
        contexts.push(Context {
            fan: neighbors.len().max(1) as f64,
            weights,
        });
    }
    // Neighbours of the context are candidates too, whatever their similarity.
    let extra: Vec<String> = contexts
        .iter()
        .flat_map(|c| c.weights.keys())
        .filter(|id| !candidates.contains_key(*id))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !extra.is_empty() {
        for point in vectors::get(Collection::Entities, &extra, true)? {
            let similarity = point
                .vector
                .as_deref()
                .map_or(0.0, |v| f64::from(cosine(v, &query)).clamp(0.0, 1.0));
            let entity = entity::from_payload(point.id.clone(), &point.payload)?;
            if entity.valid_to.is_none() {
                candidates.insert(point.id, (similarity, entity));
            }
        }
    }

    let mut scored: Vec<RecalledEntity> = {
        let _scoring = span("scoring_computation").attr("scoring.candidates", candidates.len());
        candidates
            .into_values()
            .map(|(similarity, entity)| RecalledEntity {
                score: score(similarity, &entity, now, &contexts),
                entity,
            })
            .collect()
    };
    scored.sort_by(|a, b| {
        b.score
            .total
            .total_cmp(&a.score.total)
            .then_with(|| a.entity.id.cmp(&b.entity.id))
    });
    scored.truncate(request.limit as usize);
    reinforce(&mut scored, now)?;
    // Links to the spans that wrote what it returns.
    for hit in &scored {
        if let Some(by) = &hit.entity.created_by {
            add_span_link(
                &by.trace_id,
                &by.span_id,
                vec![kv("ww.memory.id", hit.entity.id.clone())],
            );
        }
    }
    memory_span(
        MemoryOperation::Search,
        Collection::Entities,
        None,
        scored.len(),
    );
    add_span_attribute("recall.results", scored.len());
    if let Some(top) = scored.first() {
        add_span_attribute("recall.top_score", top.score.total);
    }
    Ok(scored)
}

/// Returned entities are used: access count +1, last access now. Edges between entities
/// retrieved together are strengthened: w ← w + 0.1·(1 − w). The stores apply both to
/// the values they hold (`change-payload`, `reweight-edges`), so concurrent recalls all
/// count.
fn reinforce(recalled: &mut [RecalledEntity], now: i64) -> Result<(), Error> {
    if recalled.is_empty() {
        return Ok(());
    }
    let changes: Vec<PayloadChange> = recalled
        .iter_mut()
        .map(|hit| {
            let e = &mut hit.entity;
            e.access_count = e.access_count.saturating_add(1);
            e.last_access = e.last_access.max(now);
            PayloadChange {
                id: e.id.clone(),
                changes: vec![
                    FieldChange::Add(IntegerChange {
                        name: entity::ACCESS_COUNT.to_owned(),
                        value: 1,
                    }),
                    FieldChange::Max(IntegerChange {
                        name: entity::LAST_ACCESS.to_owned(),
                        value: now,
                    }),
                ],
            }
        })
        .collect();
    vectors::change_payload(Collection::Entities, &changes)?;
    let together: std::collections::HashSet<&str> =
        recalled.iter().map(|r| r.entity.id.as_str()).collect();
    let (scale, offset) = STRENGTHENING;
    let mut edges = Vec::new();
    for id in &together {
        for n in graph::neighbors(id, Direction::Outgoing, &SEMANTIC, 10_000)? {
            if together.contains(n.node.id.as_str()) {
                edges.push(EdgeReweight {
                    source: n.edge.source,
                    target: n.edge.target,
                    relation: n.edge.relation,
                    scale,
                    offset,
                });
            }
        }
    }
    let strengthened = if edges.is_empty() {
        0
    } else {
        graph::reweight_edges(&edges)?
    };
    add_span_event(
        "entities.reinforced",
        vec![
            kv("count", changes.len()),
            kv("edges_strengthened", strengthened),
        ],
    );
    Ok(())
}

/// Hebbian strengthening of an edge used together, w ← w + 0.1·(1 − w), as the store
/// applies it: w ← w·scale + offset.
const STRENGTHENING: (f64, f64) = (0.9, 0.1);

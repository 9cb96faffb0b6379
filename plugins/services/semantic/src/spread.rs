//! `spread_activation` (tool 8): seeds start at 1.0; at step k the factor is
//! f = max(0, 1 − decay·k); every node with activation a ≥ threshold keeps a·retention·f
//! and gives a·(1 − retention)·f·w/Σw to each neighbour (edges in both directions, Σw
//! over its edges); the sums are the next activations; nodes below threshold drop out; at
//! most `max_nodes` are kept, highest first. Read-only.

use std::collections::{BTreeMap, HashMap};

use ww_guest::semantic::{Activation, SpreadRequest, SpreadResult};
use ww_guest::services::Error;
use ww_guest::services::graph_store::{self as graph, Direction};
use ww_guest::services::vector_store::Collection;
use ww_guest::{add_span_attribute, add_span_event, kv, traced};
use ww_service_common::{MemoryOperation, check_id, check_unit, invalid, memory_span};

use crate::entity::{self, SEMANTIC};

const MAX_SEEDS: usize = 100;
const MAX_STEPS: u32 = 10;
const MAX_NODES: u32 = 10_000;

#[traced("semantic.spread_activation", kind = Internal)]
pub fn spread(request: SpreadRequest) -> Result<SpreadResult, Error> {
    if request.seeds.is_empty() || request.seeds.len() > MAX_SEEDS {
        return Err(invalid(
            "seed_entities",
            format!("give 1 to {MAX_SEEDS} seeds"),
        ));
    }
    for seed in &request.seeds {
        check_id("seed_entities", seed)?;
    }
    if request.steps == 0 || request.steps > MAX_STEPS {
        return Err(invalid(
            "steps",
            format!("must be between 1 and {MAX_STEPS}"),
        ));
    }
    check_unit("retention", request.retention)?;
    check_unit("decay", request.decay)?;
    if !(request.threshold > 0.0 && request.threshold <= 1.0) {
        return Err(invalid("threshold", "must be a number in (0, 1]"));
    }
    if request.max_nodes == 0 || request.max_nodes > MAX_NODES {
        return Err(invalid(
            "max_nodes",
            format!("must be between 1 and {MAX_NODES}"),
        ));
    }
    add_span_attribute("spread.seeds", request.seeds.len());
    add_span_attribute("spread.steps", request.steps);
    for seed in &request.seeds {
        if graph::get_node(seed)?.is_none_or(|n| n.label != graph::NodeLabel::Entity) {
            return Err(Error::NotFound(format!("no entity {seed} (seed_entities)")));
        }
    }
    // Ordered maps: the same graph always sums in the same order.
    let mut active: BTreeMap<String, f64> =
        request.seeds.iter().map(|s| (s.clone(), 1.0)).collect();
    let mut edges: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    let mut truncated = false;
    for k in 1..=request.steps {
        let factor = (1.0 - request.decay * f64::from(k)).max(0.0);
        let mut next: BTreeMap<String, f64> = BTreeMap::new();
        for (node, &a) in &active {
            if a < request.threshold {
                continue;
            }
            *next.entry(node.clone()).or_insert(0.0) += a * request.retention * factor;
            let out = match edges.entry(node.clone()) {
                std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
                std::collections::hash_map::Entry::Vacant(new) => new.insert(valid_edges(node)?),
            };
            let out: &Vec<(String, f64)> = out;
            let total: f64 = out.iter().map(|(_, w)| w).sum();
            if total <= 0.0 {
                continue;
            }
            for (neighbor, w) in out {
                *next.entry(neighbor.clone()).or_insert(0.0) +=
                    a * (1.0 - request.retention) * factor * w / total;
            }
        }
        next.retain(|_, a| *a >= request.threshold);
        if next.len() > request.max_nodes as usize {
            let mut ranked: Vec<(String, f64)> = next.into_iter().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            ranked.truncate(request.max_nodes as usize);
            next = ranked.into_iter().collect();
            truncated = true;
        }
        add_span_event("spread.step", vec![kv("step", k), kv("active", next.len())]);
        active = next;
    }
    let mut activations: Vec<Activation> = active
        .into_iter()
        .map(|(entity_id, value)| Activation { entity_id, value })
        .collect();
    activations.sort_by(|a, b| {
        b.value
            .total_cmp(&a.value)
            .then_with(|| a.entity_id.cmp(&b.entity_id))
    });
    memory_span(
        MemoryOperation::Search,
        Collection::Entities,
        None,
        activations.len(),
    );
    add_span_attribute("spread.activated", activations.len());
    add_span_attribute("spread.truncated", truncated);
    Ok(SpreadResult {
        activations,
        truncated,
    })
}

/// A node's semantic edges to currently valid entities, either direction, with weights.
fn valid_edges(node: &str) -> Result<Vec<(String, f64)>, Error> {
    Ok(graph::neighbors(node, Direction::Both, &SEMANTIC, 10_000)?
        .into_iter()
        .filter(|n| entity::node_is_valid(&n.node))
        .map(|n| (n.node.id, n.edge.weight))
        .collect())
}

//! The store's contents in memory, and the logged operations that change them. Every
//! operation is validated before it is logged, so applying one cannot fail.

// `collections` and `by_label` are fixed arrays indexed by an enum's discriminant
// (`slot`, `label_slot`): one entry per variant, so every index is in bounds.
#![allow(clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::collection::{Points, PointsHeader, Slots};

use serde::{Deserialize, Serialize};
use ww_guest::store::Field;
use ww_guest::store::graph::{Edge, Node, NodeLabel, RelationType};
use ww_guest::store::vector::{Collection, EmbedderId, PayloadUpdate, Point};

/// A point as logs written before points carried their text hold it (`Op::Upsert`).
#[derive(Debug, Serialize, Deserialize)]
pub struct PointWithoutText {
    pub id: String,
    pub vector: Vec<f32>,
    pub payload: Vec<Field>,
}

/// One durable change, as written to the log. Variants are only ever added at the end:
/// a log is read back by each variant's position.
#[derive(Debug, Serialize, Deserialize)]
pub enum Op {
    EnsureCollection {
        collection: Collection,
        dimension: u32,
    },
    /// Points without text (logs written before lexical retrieval).
    Upsert {
        collection: Collection,
        points: Vec<PointWithoutText>,
    },
    Delete {
        collection: Collection,
        ids: Vec<String>,
    },
    UpdatePayload {
        collection: Collection,
        updates: Vec<PayloadUpdate>,
    },
    UpsertNode(Node),
    UpdateNode {
        id: String,
        properties: Vec<Field>,
    },
    DeleteNode(String),
    UpsertEdge(Edge),
    /// Points with the text they were embedded from.
    UpsertWithText {
        collection: Collection,
        points: Vec<Point>,
    },
    /// The embedder every vector of the collection now comes from.
    SetEmbedder {
        collection: Collection,
        embedder: EmbedderId,
    },
}

/// One record of a snapshot: the state, collection by collection in runs of slots,
/// then the graph in runs of nodes and edges.
#[derive(Serialize, Deserialize)]
pub enum SnapshotRecord {
    Collection {
        collection: Collection,
        header: PointsHeader,
    },
    Slots {
        collection: Collection,
        slots: Slots,
    },
    Nodes(Vec<Node>),
    Edges(Vec<Edge>),
}

/// Slots per snapshot record (about 1.6 MB of 384-dimension vectors).
const SLOTS_PER_RECORD: usize = 1024;
/// Nodes or edges per snapshot record.
const GRAPH_PER_RECORD: usize = 4096;

/// (source, relation, target).
pub type EdgeKey = (String, u8, String);

#[derive(Default)]
pub struct State {
    pub collections: [Option<Points>; 3],
    pub nodes: HashMap<String, Node>,
    pub by_label: [BTreeSet<String>; 3],
    pub edges: BTreeMap<EdgeKey, Edge>,
    /// Every edge key touching a node, either end.
    pub adjacency: HashMap<String, BTreeSet<EdgeKey>>,
}

pub fn slot(collection: Collection) -> usize {
    collection as usize
}

pub fn label_slot(label: NodeLabel) -> usize {
    label as usize
}

pub fn edge_key(source: &str, relation: RelationType, target: &str) -> EdgeKey {
    (source.to_owned(), relation as u8, target.to_owned())
}

/// Set fields: replace those with the same name, add the others.
pub fn merge(fields: &mut Vec<Field>, updates: Vec<Field>) {
    for update in updates {
        match fields.iter_mut().find(|f| f.name == update.name) {
            Some(existing) => existing.value = update.value,
            None => fields.push(update),
        }
    }
}

impl State {
    pub fn collection(&self, collection: Collection) -> Option<&Points> {
        self.collections[slot(collection)].as_ref()
    }

    /// Write the whole state as snapshot records, each passed to `record` encoded.
    pub fn snapshot(
        &self,
        mut record: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut emit = |r: &SnapshotRecord| {
            let bytes = postcard::to_allocvec(r).map_err(std::io::Error::other)?;
            record(&bytes)
        };
        for collection in [
            Collection::Episodes,
            Collection::Entities,
            Collection::Procedures,
        ] {
            let Some(points) = self.collection(collection) else {
                continue;
            };
            emit(&SnapshotRecord::Collection {
                collection,
                header: points.header(),
            })?;
            for start in (0..points.len()).step_by(SLOTS_PER_RECORD) {
                let end = (start + SLOTS_PER_RECORD).min(points.len());
                emit(&SnapshotRecord::Slots {
                    collection,
                    slots: points.slots(start..end),
                })?;
            }
        }
        let nodes: Vec<&Node> = self.nodes.values().collect();
        for run in nodes.chunks(GRAPH_PER_RECORD) {
            emit(&SnapshotRecord::Nodes(
                run.iter().map(|n| (*n).clone()).collect(),
            ))?;
        }
        let edges: Vec<&Edge> = self.edges.values().collect();
        for run in edges.chunks(GRAPH_PER_RECORD) {
            emit(&SnapshotRecord::Edges(
                run.iter().map(|e| (*e).clone()).collect(),
            ))?;
        }
        Ok(())
    }

    /// Apply one snapshot record (onto the state the records before it made).
    pub fn restore(&mut self, record: SnapshotRecord) -> Result<(), String> {
        match record {
            SnapshotRecord::Collection { collection, header } => {
                self.collections[slot(collection)] = Some(Points::from_header(header));
            }
            SnapshotRecord::Slots { collection, slots } => {
                self.collections[slot(collection)]
                    .as_mut()
                    .ok_or_else(|| format!("slots of {collection:?} before its header"))?
                    .push_slots(slots)?;
            }
            SnapshotRecord::Nodes(nodes) => {
                for node in nodes {
                    self.apply(Op::UpsertNode(node));
                }
            }
            SnapshotRecord::Edges(edges) => {
                for edge in edges {
                    self.apply(Op::UpsertEdge(edge));
                }
            }
        }
        Ok(())
    }

    pub fn apply(&mut self, op: Op) {
        match op {
            Op::EnsureCollection {
                collection,
                dimension,
            } => {
                self.collections[slot(collection)].get_or_insert_with(|| Points::new(dimension));
            }
            Op::Upsert { collection, points } => {
                if let Some(data) = self.collections[slot(collection)].as_mut() {
                    for point in points {
                        data.upsert(Point {
                            id: point.id,
                            vector: point.vector,
                            payload: point.payload,
                            text: None,
                        });
                    }
                }
            }
            Op::UpsertWithText { collection, points } => {
                if let Some(data) = self.collections[slot(collection)].as_mut() {
                    for point in points {
                        data.upsert(point);
                    }
                }
            }
            Op::SetEmbedder {
                collection,
                embedder,
            } => {
                if let Some(data) = self.collections[slot(collection)].as_mut() {
                    data.embedder = Some(embedder);
                }
            }
            Op::Delete { collection, ids } => {
                if let Some(data) = self.collections[slot(collection)].as_mut() {
                    for id in ids {
                        data.delete(&id);
                    }
                }
            }
            Op::UpdatePayload {
                collection,
                updates,
            } => {
                if let Some(data) = self.collections[slot(collection)].as_mut() {
                    for update in updates {
                        data.update(&update.id, update.fields);
                    }
                }
            }
            Op::UpsertNode(node) => {
                if let Some(old) = self.nodes.get(&node.id) {
                    self.by_label[label_slot(old.label)].remove(&node.id);
                }
                self.by_label[label_slot(node.label)].insert(node.id.clone());
                self.nodes.insert(node.id.clone(), node);
            }
            Op::UpdateNode { id, properties } => {
                if let Some(node) = self.nodes.get_mut(&id) {
                    merge(&mut node.properties, properties);
                }
            }
            Op::DeleteNode(id) => {
                if let Some(node) = self.nodes.remove(&id) {
                    self.by_label[label_slot(node.label)].remove(&id);
                }
                for key in self.adjacency.remove(&id).unwrap_or_default() {
                    self.edges.remove(&key);
                    let other = if key.0 == id { &key.2 } else { &key.0 };
                    if let Some(keys) = self.adjacency.get_mut(other) {
                        keys.remove(&key);
                    }
                }
            }
            Op::UpsertEdge(edge) => {
                let key = edge_key(&edge.source, edge.relation, &edge.target);
                for end in [&edge.source, &edge.target] {
                    self.adjacency
                        .entry(end.clone())
                        .or_default()
                        .insert(key.clone());
                }
                self.edges.insert(key, edge);
            }
        }
    }
}

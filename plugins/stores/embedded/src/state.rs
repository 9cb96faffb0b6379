//! The store's contents in memory, and the logged operations that change them. Every
//! operation is validated before it is logged, so applying one cannot fail.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::collection::Points;

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

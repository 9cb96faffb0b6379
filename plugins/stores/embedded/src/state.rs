//! The store's contents in memory, and the logged operations that change them. Every
//! operation is validated before it is logged, so applying one cannot fail.

// `collections` and `by_label` are fixed arrays indexed by an enum's discriminant
// (`slot`, `label_slot`): one entry per variant, so every index is in bounds.
#![allow(clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};

// foldhash (a fast, seeded hasher) rather than std's SipHash: a start rehashes every
// node id, and SipHash was a fifth of the graph's restoring time.
use foldhash::HashMap;

use crate::collection::{Points, PointsHead, PointsHeader, Run, Slots};

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
    /// A collection's head, since snapshots keep field ids (what snapshots are written
    /// with now; `Collection` and `Slots` are read from older ones).
    Head {
        collection: Collection,
        head: PointsHead,
    },
    /// A run of a collection's slots after its `Head`.
    Run {
        collection: Collection,
        run: Run,
    },
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
    /// What a snapshot's records give while they come, built into the ordered sets and
    /// maps at its end in one bulk step each (sorting a list and building a tree from it
    /// is several times faster than as many inserts): node ids by label, and edges.
    restoring: Restoring,
    /// Every edge key touching a node, either end, sorted: a short list per node (most
    /// have one or two), where a set would allocate a tree node of hundreds of bytes.
    pub adjacency: HashMap<String, Vec<EdgeKey>>,
}

#[derive(Default)]
struct Restoring {
    by_label: [Vec<String>; 3],
    edges: Vec<(EdgeKey, Edge)>,
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
            emit(&SnapshotRecord::Head {
                collection,
                head: points.head(),
            })?;
            for start in (0..points.len()).step_by(SLOTS_PER_RECORD) {
                let end = (start + SLOTS_PER_RECORD).min(points.len());
                emit(&SnapshotRecord::Run {
                    collection,
                    run: points.run(start..end),
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
            SnapshotRecord::Head { collection, head } => {
                self.collections[slot(collection)] = Some(Points::from_head(head));
            }
            SnapshotRecord::Run { collection, run } => {
                self.collections[slot(collection)]
                    .as_mut()
                    .ok_or_else(|| format!("a run of {collection:?} before its head"))?
                    .push_run(run)?;
            }
            SnapshotRecord::Nodes(nodes) => {
                self.nodes.reserve(nodes.len());
                for node in nodes {
                    self.restoring.by_label[label_slot(node.label)].push(node.id.clone());
                    if self.nodes.insert(node.id.clone(), node).is_some() {
                        return Err("a node twice".to_owned());
                    }
                }
            }
            SnapshotRecord::Edges(edges) => {
                for edge in edges {
                    let key = edge_key(&edge.source, edge.relation, &edge.target);
                    self.adjoin(&edge, &key);
                    self.restoring.edges.push((key, edge));
                }
            }
        }
        Ok(())
    }

    /// Build what the snapshot's records deferred (see `restoring`).
    pub fn finish_restore(&mut self) -> Result<(), String> {
        let restoring = std::mem::take(&mut self.restoring);
        // `collect` sorts and builds each tree bottom-up, `append` merges two in one
        // pass; inserting one by one was the slow part.
        for (set, ids) in self.by_label.iter_mut().zip(restoring.by_label) {
            set.append(&mut ids.into_iter().collect());
        }
        let edges = restoring.edges.len() + self.edges.len();
        self.edges
            .append(&mut restoring.edges.into_iter().collect());
        if self.edges.len() != edges {
            return Err("an edge twice".to_owned());
        }
        for collection in self.collections.iter_mut().flatten() {
            collection.finish_restore()?;
        }
        Ok(())
    }

    /// Note `key` (of `edge`) at both ends.
    fn adjoin(&mut self, edge: &Edge, key: &EdgeKey) {
        for end in [&edge.source, &edge.target] {
            // Looked up before inserting: `entry` would copy the id every time.
            let keys = match self.adjacency.get_mut(end) {
                Some(keys) => keys,
                None => self.adjacency.entry(end.clone()).or_default(),
            };
            if let Err(at) = keys.binary_search(key) {
                keys.insert(at, key.clone());
            }
        }
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
                    if let Some(keys) = self.adjacency.get_mut(other)
                        && let Ok(at) = keys.binary_search(&key)
                    {
                        keys.remove(at);
                    }
                }
            }
            Op::UpsertEdge(edge) => {
                let key = edge_key(&edge.source, edge.relation, &edge.target);
                self.adjoin(&edge, &key);
                self.edges.insert(key, edge);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use ww_guest::store::FieldValue;
    use ww_guest::store::vector::Point;

    fn text(name: &str, value: &str) -> Field {
        Field {
            name: name.to_owned(),
            value: FieldValue::Text(value.to_owned()),
        }
    }

    fn integer(name: &str, value: i64) -> Field {
        Field {
            name: name.to_owned(),
            value: FieldValue::Integer(value),
        }
    }

    /// A state shaped like `n` episodes of one session: a point each (384 dimensions,
    /// a dozen payload fields, a sentence of text), a node each and a chain of edges.
    fn episodes(n: usize) -> State {
        let mut state = State::default();
        state.apply(Op::EnsureCollection {
            collection: Collection::Episodes,
            dimension: 384,
        });
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let words = [
            "alpha", "beta", "gamma", "delta", "river", "stone", "maple", "north",
        ];
        for i in 0..n {
            let id = format!("01JEPISODE{i:016}");
            let content: Vec<&str> = (0..12).map(|_| words[(next() % 8) as usize]).collect();
            let content = format!("{} {i}", content.join(" "));
            let payload = vec![
                text("session", "bench-session"),
                text("content", &content),
                text("outcome", "success"),
                integer("event_time", 1_700_000_000_000 + i as i64),
                integer("ingestion_time", 1_700_000_000_000 + i as i64),
                integer("access_count", (next() % 10) as i64),
                Field {
                    name: "stability".to_owned(),
                    value: FieldValue::Number(1.5),
                },
                integer("last_access", 1_700_000_000_000 + i as i64),
                integer("sequence", i as i64 + 1),
                text(
                    "previous",
                    &format!("01JEPISODE{:016}", i.saturating_sub(1)),
                ),
                text("created_by.trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
                text("created_by.span_id", "00f067aa0ba902b7"),
            ];
            let vector: Vec<f32> = (0..384)
                .map(|_| (next() % 2000) as f32 / 1000.0 - 1.0)
                .collect();
            state.apply(Op::UpsertWithText {
                collection: Collection::Episodes,
                points: vec![Point {
                    id: id.clone(),
                    vector,
                    payload,
                    text: Some(content),
                }],
            });
            state.apply(Op::UpsertNode(Node {
                id: id.clone(),
                label: NodeLabel::Episode,
                properties: vec![
                    text("session", "bench-session"),
                    integer("event_time", i as i64),
                ],
            }));
            if i > 0 {
                state.apply(Op::UpsertEdge(Edge {
                    source: id,
                    target: format!("01JEPISODE{:016}", i - 1),
                    relation: RelationType::Follows,
                    weight: 1.0,
                    properties: vec![],
                }));
            }
        }
        state
    }

    fn restored_from_snapshot(state: &State) -> State {
        let mut restored = State::default();
        state
            .snapshot(|r| {
                restored
                    .restore(postcard::from_bytes(r).map_err(std::io::Error::other)?)
                    .map_err(std::io::Error::other)
            })
            .unwrap();
        restored.finish_restore().unwrap();
        restored
    }

    /// A snapshot restores the same points (vectors, payloads, texts' ranking), the
    /// same graph, and a store that goes on changing alike.
    #[test]
    fn a_snapshot_restores_the_same_state() {
        let mut state = episodes(2_500);
        let mut restored = restored_from_snapshot(&state);
        for state in [&mut state, &mut restored] {
            state.apply(Op::Delete {
                collection: Collection::Episodes,
                ids: vec![format!("01JEPISODE{:016}", 7)],
            });
            state.apply(Op::DeleteNode(format!("01JEPISODE{:016}", 9)));
        }
        let (a, b) = (
            state.collection(Collection::Episodes).unwrap(),
            restored.collection(Collection::Episodes).unwrap(),
        );
        assert_eq!(a.len(), b.len());
        let filter = ww_guest::store::Filter {
            must: vec![],
            must_not: vec![],
        };
        assert_eq!(
            a.scroll(&filter, None, 10_000, true),
            b.scroll(&filter, None, 10_000, true)
        );
        let query: Vec<f32> = (0..384).map(|i| (i % 7) as f32 - 3.0).collect();
        let fusion = crate::collection::Fusion::Linear { alpha: 0.7 };
        let ranked = |p: &Points| -> Vec<String> {
            p.search(&query, Some("river stone 17"), &filter, None, 20, fusion)
                .hits
                .into_iter()
                .map(|(_, point)| point.id)
                .collect()
        };
        assert_eq!(ranked(a), ranked(b));
        assert_eq!(a.indexed_texts(), b.indexed_texts());
        assert_eq!(state.nodes.len(), restored.nodes.len());
        assert_eq!(state.by_label, restored.by_label);
        assert_eq!(
            state.edges.keys().collect::<Vec<_>>(),
            restored.edges.keys().collect::<Vec<_>>()
        );
        let sorted = |s: &State| {
            let mut adjacency: Vec<_> = s.adjacency.iter().collect();
            adjacency.sort();
            format!("{adjacency:?}")
        };
        assert_eq!(sorted(&state), sorted(&restored));
    }

    /// Where a start's time goes, natively (`cargo test --release --target <host> -p
    /// store-embedded where_a_start_goes -- --ignored --nocapture`; WW_PROFILE_N episodes).
    #[test]
    #[ignore = "a measurement, not a test"]
    fn where_a_start_goes() {
        let n = std::env::var("WW_PROFILE_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000);
        let state = episodes(n);
        let mut records = Vec::new();
        state
            .snapshot(|r| {
                records.push(r.to_vec());
                Ok(())
            })
            .unwrap();
        let bytes: usize = records.iter().map(Vec::len).sum();
        let t = Instant::now();
        let crc: u32 = records
            .iter()
            .map(|r| crc32fast::hash(r))
            .fold(0, |a, b| a ^ b);
        let checked = t.elapsed();
        let (mut decode, mut decode_graph) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        let decoded: Vec<SnapshotRecord> = records
            .iter()
            .map(|r| {
                let t = Instant::now();
                let record: SnapshotRecord = postcard::from_bytes(r).unwrap();
                if matches!(record, SnapshotRecord::Nodes(_) | SnapshotRecord::Edges(_)) {
                    decode_graph += t.elapsed();
                } else {
                    decode += t.elapsed();
                }
                record
            })
            .collect();
        let (mut points, mut graph) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        let mut restored = State::default();
        for record in decoded {
            let is_graph = matches!(record, SnapshotRecord::Nodes(_) | SnapshotRecord::Edges(_));
            let t = Instant::now();
            restored.restore(record).unwrap();
            if is_graph {
                graph += t.elapsed();
            } else {
                points += t.elapsed();
            }
        }
        eprintln!(
            "{n} episodes: {:.0} MB in {} records; crc {checked:.2?} ({crc:x}); points: decode {decode:.2?}, restore {points:.2?}; graph: decode {decode_graph:.2?}, restore {graph:.2?}",
            bytes as f64 / 1e6,
            records.len()
        );
        let t = Instant::now();
        restored.finish_restore().unwrap();
        eprintln!("finishing: {:.2?}", t.elapsed());
        assert_eq!(
            restored.collection(Collection::Episodes).map(Points::len),
            Some(n)
        );
    }
}

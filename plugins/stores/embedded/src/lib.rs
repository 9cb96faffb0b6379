//! The embedded store: vectors and graph in one component, no external service.
//!
//! Everything lives in memory and every change is first appended to a write-ahead log in
//! the component's data directory (`/data`, the only directory the host grants it) and
//! synced: a call returns `Ok` only once its change is durable. When the log outgrows the
//! live data (more log bytes than `compact_ratio` × the last snapshot, 1 by default, and
//! at least `compact_min_bytes`, 16 MiB by default), the write that found it so also writes a
//! snapshot of the state and starts a new log (`ww_wal::Journal`: atomic, crash-safe,
//! the previous snapshot kept as a fallback), so the disk holds a small multiple of the
//! live data however many recalls reinforce. On the first call after start — or after a
//! trap, when the host gives it a fresh instance — the latest intact snapshot is loaded
//! and the logs after it replayed; a torn tail is cut off and reported (stderr and a span
//! event). Search is exact cosine
//! similarity over the points that pass the filter, optionally ranked by a rescoring
//! formula in the same pass.

mod collection;
mod filter;
mod lexical;
mod search;
mod state;

use std::cell::RefCell;
use std::path::Path;

use collection::Fusion;
use state::{Op, State, edge_key, label_slot};
use ww_guest::store::graph::EdgeReweight;
use ww_guest::store::graph::{Direction, Edge, Neighbor, Node, NodeLabel, RelationType};
use ww_guest::store::vector::{
    Collection, CollectionInfo, EmbedderId, PayloadChange, PayloadUpdate, Point, Rescore,
    ScoreTerm, ScoredPoint, SearchRequest, StoredPoint,
};
use ww_guest::store::{
    Condition, Error, Field, Filter, GraphStore, StoreHealth, ValidationError, VectorStore,
};
use ww_guest::{add_span_attribute, add_span_event, kv};
use ww_wal::{Journal, Replay};

/// The data directory the host grants.
const DATA_DIR: &str = "/data";
/// The journal's files there: `store.wal` (the first log, the store's only file before
/// snapshots), `store.<g>.wal`, `store.<g>.snapshot`.
const JOURNAL: &str = "store";
/// Log bytes below which no compaction happens (the `compact_min_bytes` setting).
const COMPACT_MIN_BYTES: u64 = 16 << 20;
/// Compaction once the log holds more than this × the last snapshot's bytes (the
/// `compact_ratio` setting): lower starts faster and writes more.
const COMPACT_RATIO: f64 = 1.0;
/// The upkeep task that makes snapshot `<generation>`: `compact:<generation>`.
const COMPACT_TASK: &str = "compact:";
/// Results per call, at most.
const MAX_LIMIT: u32 = 10_000;
/// Vector length, at most.
const MAX_DIMENSION: u32 = 8192;
/// A point's text, at most (the services bound what they store well below this).
const MAX_TEXT_BYTES: usize = 1 << 20;
/// The vector's share of the fused relevance (`fused`, the default): chosen by
/// measurement on LoCoMo (docs/recall.md: 0.3, 0.5, 0.7 and reciprocal rank fusion
/// compared), close to Weaviate's default of 0.75 for the same combination.
const FUSED_ALPHA: f32 = 0.7;
/// Reciprocal rank fusion's constant (the value of Cormack et al., and Qdrant's).
const RRF_K: f32 = 60.0;
/// Places of each ranking that fusion reads. Fixed, not derived from the request's
/// limit and offset: pages of one query must rank alike.
const RRF_DEPTH: usize = 200;

/// How `search` uses a request's text: the `retrieval` setting, `fused` (the default:
/// 0.7 × max(0, cosine) + 0.3 × BM25 / the best BM25 among the filtered points),
/// `linear:A` (the same with another share A), `rrf` or `rrf:K` (reciprocal rank fusion)
/// or `vector` (the text is ignored).
fn fusion() -> Result<Fusion, Error> {
    // Settings do not change while an instance lives: read and parsed once.
    static FUSION: std::sync::OnceLock<Result<Fusion, String>> = std::sync::OnceLock::new();
    FUSION
        .get_or_init(|| parse_fusion(ww_guest::settings::setting("retrieval")))
        .clone()
        .map_err(storage)
}

/// The `retrieval` setting's value as a [`Fusion`], or why it is not one.
fn parse_fusion(setting: Option<String>) -> Result<Fusion, String> {
    let fusion = match setting.as_deref() {
        None | Some("fused") => Some(Fusion::Linear { alpha: FUSED_ALPHA }),
        Some("vector") => Some(Fusion::Vector),
        Some("rrf") => Some(Fusion::Rrf {
            k: RRF_K,
            depth: RRF_DEPTH,
        }),
        Some(other) => {
            let parsed = |prefix: &str| other.strip_prefix(prefix)?.parse::<f32>().ok();
            match (parsed("linear:"), parsed("rrf:")) {
                (Some(alpha), _) if (0.0..=1.0).contains(&alpha) => Some(Fusion::Linear { alpha }),
                (_, Some(k)) if k >= 1.0 => Some(Fusion::Rrf {
                    k,
                    depth: RRF_DEPTH,
                }),
                _ => None,
            }
        }
    };
    fusion.ok_or_else(|| {
        format!(
            "the setting retrieval = {:?} is not one of fused, vector, linear:A (0 ≤ A ≤ 1), \
             rrf, rrf:K (K ≥ 1)",
            setting.unwrap_or_default()
        )
    })
}

/// A collection's name as messages give it.
fn collection_name(collection: Collection) -> &'static str {
    match collection {
        Collection::Episodes => "ww_episodes",
        Collection::Entities => "ww_entities",
        Collection::Procedures => "ww_procedures",
    }
}

/// `embedder`'s name as messages give it.
fn describe(embedder: &EmbedderId) -> String {
    format!("{} ({} dimensions)", embedder.model, embedder.dimension)
}

struct Store {
    journal: Journal,
    state: State,
    /// The `compact_min_bytes` and `compact_ratio` settings.
    compact_min_bytes: u64,
    compact_ratio: f64,
}

/// Replays a journal into a state.
struct Replaying<'a>(&'a mut State);

impl Replay for Replaying<'_> {
    fn reset(&mut self) {
        *self.0 = State::default();
    }

    fn snapshot_record(&mut self, record: &[u8]) -> std::io::Result<()> {
        let record = postcard::from_bytes(record).map_err(std::io::Error::other)?;
        self.0.restore(record).map_err(std::io::Error::other)
    }

    fn snapshot_end(&mut self) -> std::io::Result<()> {
        self.0.finish_restore().map_err(std::io::Error::other)
    }

    fn log_record(&mut self, record: &[u8]) -> std::io::Result<()> {
        let op: Op = postcard::from_bytes(record).map_err(std::io::Error::other)?;
        self.0.apply(op);
        Ok(())
    }
}

thread_local! {
    /// Opened on first use: a component instance is single-threaded.
    static STORE: RefCell<Option<Store>> = const { RefCell::new(None) };
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Validation(ValidationError {
        field: Some(field.to_owned()),
        message: message.into(),
    })
}

fn storage(message: impl std::fmt::Display) -> Error {
    Error::Storage(message.to_string())
}

fn open() -> Result<Store, Error> {
    let compact_min_bytes = ww_guest::settings::parsed::<u64>("compact_min_bytes")
        .map_err(|e| storage(format!("the compact_min_bytes setting: {e}")))?
        .unwrap_or(COMPACT_MIN_BYTES);
    let compact_ratio = match ww_guest::settings::parsed::<f64>("compact_ratio") {
        Ok(None) => COMPACT_RATIO,
        Ok(Some(r)) if r.is_finite() && r >= 0.0 => r,
        Ok(Some(r)) => {
            return Err(storage(format!(
                "the compact_ratio setting: {r} is not a number ≥ 0"
            )));
        }
        Err(e) => return Err(storage(format!("the compact_ratio setting: {e}"))),
    };
    let mut state = State::default();
    let (journal, recovery) =
        Journal::open(Path::new(DATA_DIR), JOURNAL, &mut Replaying(&mut state))
            .map_err(|e| storage(format!("cannot open the store's log: {e}")))?;
    let (snapshot, snapshot_records) = recovery.snapshot.unwrap_or((0, 0));
    add_span_event(
        "store.recovered",
        vec![
            kv("store.snapshot.generation", snapshot),
            kv("store.snapshot.records", snapshot_records),
            kv("store.records", recovery.log_records),
            kv("store.dropped_bytes", recovery.tail.dropped_bytes),
        ],
    );
    for (generation, reason) in &recovery.skipped {
        eprintln!("embedded store: passed over snapshot {generation}: {reason}");
    }
    if let Some(reason) = &recovery.tail.reason {
        eprintln!(
            "embedded store: recovered {} records; dropped the last {} bytes ({reason})",
            recovery.log_records, recovery.tail.dropped_bytes
        );
    }
    Ok(Store {
        journal,
        state,
        compact_min_bytes,
        compact_ratio,
    })
}

/// Run `f` on the open store, opening it first if needed.
fn with_store<R>(f: impl FnOnce(&mut Store) -> Result<R, Error>) -> Result<R, Error> {
    STORE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(open()?);
        }
        match slot.as_mut() {
            Some(store) => f(store),
            None => Err(storage("the store is not open")),
        }
    })
}

impl Store {
    /// Log `op` durably, then apply it; compact when the log has outgrown the state.
    fn commit(&mut self, op: Op) -> Result<(), Error> {
        self.commit_all(vec![op])
    }

    /// Log `ops` durably with one sync, then apply them in order; compact when the log
    /// has outgrown the state.
    fn commit_all(&mut self, ops: Vec<Op>) -> Result<(), Error> {
        let records = ops
            .iter()
            .map(|op| postcard::to_allocvec(op).map_err(storage))
            .collect::<Result<Vec<_>, _>>()?;
        let frames: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        self.journal
            .append_all(&frames)
            .map_err(|e| storage(format!("cannot write the log: {e}")))?;
        for op in ops {
            self.state.apply(op);
        }
        self.upkeep();
        Ok(())
    }

    /// Once the logs have outgrown the state, a snapshot is due: the log is rotated and
    /// the host asked to make the snapshot from the files on an instance of its own
    /// (`maintenance.run`, a `compact:<generation>` task) while this one goes on serving.
    /// The request is repeated at every write until the snapshot lands (the host runs it
    /// once; one that failed, a full disk, runs again after a back-off). A host that runs
    /// no upkeep gets the compaction here, in the write. Nothing here fails the write: it
    /// is durable already, and the logs stay until a snapshot covers them.
    fn upkeep(&mut self) {
        match self
            .journal
            .due_snapshot(self.compact_min_bytes, self.compact_ratio)
        {
            Ok(None) => {}
            Ok(Some(generation)) => {
                if !ww_guest::upkeep::request(&format!("{COMPACT_TASK}{generation}")) {
                    self.compact();
                }
            }
            Err(e) => {
                eprintln!("embedded store: cannot start a compaction: {e}");
                add_span_event(
                    "store.compaction_failed",
                    vec![kv("error.message", e.to_string())],
                );
            }
        }
    }

    /// Write a snapshot here and start a new log (for a host that runs no upkeep). A
    /// failure loses nothing (the write that triggered it is already durable, the logs
    /// stay): it is reported and retried at the next write.
    fn compact(&mut self) {
        let log_bytes = self.journal.log_bytes();
        let state = &self.state;
        match self
            .journal
            .compact(|out| state.snapshot(|record| out.record(record)))
        {
            Ok(bytes) => add_span_event(
                "store.compacted",
                vec![
                    kv("store.snapshot.bytes", bytes),
                    kv("store.log.bytes", log_bytes),
                    kv("store.snapshot.generation", self.journal.generation()),
                ],
            ),
            Err(e) => {
                eprintln!("embedded store: compaction failed, the logs are kept: {e}");
                add_span_event(
                    "store.compaction_failed",
                    vec![kv("error.message", e.to_string())],
                );
            }
        }
    }

    fn dimension(&self, collection: Collection) -> Result<u32, Error> {
        self.state
            .collection(collection)
            .map(|c| c.dimension)
            .ok_or_else(|| {
                invalid(
                    "collection",
                    format!("{collection:?} does not exist: ensure it first"),
                )
            })
    }
}

fn check_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(invalid("id", "an id must not be empty"));
    }
    Ok(())
}

fn check_vector(vector: &[f32], dimension: u32) -> Result<(), Error> {
    if vector.len() != dimension as usize {
        return Err(invalid(
            "vector",
            format!("expected {dimension} dimensions, got {}", vector.len()),
        ));
    }
    if vector.iter().any(|x| !x.is_finite()) {
        return Err(invalid("vector", "values must be finite"));
    }
    Ok(())
}

fn check_limit(limit: u32) -> Result<(), Error> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok(())
}

fn check_rescore(formula: &Rescore) -> Result<(), Error> {
    let finite = |x: f64| x.is_finite();
    let terms_ok = formula.terms.iter().all(|term| match term {
        ScoreTerm::Linear((_, weight)) => finite(*weight),
        ScoreTerm::ExpDecay(decay) => {
            finite(decay.weight) && finite(decay.origin) && finite(decay.scale) && decay.scale > 0.0
        }
    });
    if !finite(formula.similarity_weight) || !terms_ok {
        return Err(invalid(
            "rescore",
            "weights and origins must be finite and scales positive",
        ));
    }
    Ok(())
}

fn check_fields(fields: &[Field]) -> Result<(), Error> {
    use ww_guest::store::FieldValue;
    for field in fields {
        if field.name.is_empty() {
            return Err(invalid("payload", "a field name must not be empty"));
        }
        if matches!(field.value, FieldValue::Number(n) if !n.is_finite()) {
            return Err(invalid(
                "payload",
                format!("field {} is not a finite number", field.name),
            ));
        }
    }
    Ok(())
}

struct EmbeddedStore;

impl VectorStore for EmbeddedStore {
    fn ensure_collection(collection: Collection, embedder: EmbedderId) -> Result<(), Error> {
        let dimension = embedder.dimension;
        if dimension == 0 || dimension > MAX_DIMENSION {
            return Err(invalid(
                "dimension",
                format!("must be between 1 and {MAX_DIMENSION}"),
            ));
        }
        with_store(|store| match store.state.collection(collection) {
            Some(existing) if existing.embedder.as_ref() == Some(&embedder) => Ok(()),
            Some(existing) if existing.dimension != dimension => Err(invalid(
                "dimension",
                format!(
                    "{collection:?} exists with {} dimensions, not {dimension}",
                    existing.dimension
                ),
            )),
            // Empty and never recorded (a crash between creating and recording, or an
            // old store that never held a point): this embedder is its first.
            Some(existing) if existing.embedder.is_none() && existing.len() == 0 => {
                store.commit(Op::SetEmbedder {
                    collection,
                    embedder,
                })
            }
            // Not the caller's mistake: the store's state and the configuration disagree.
            Some(existing) => Err(storage(format!(
                "{} holds vectors of {}, not of {}: they cannot be compared; \
                     run `ww-memory reembed` to rebuild them with the configured embedder",
                collection_name(collection),
                existing
                    .embedder
                    .as_ref()
                    .map_or_else(|| "an unrecorded embedder".to_owned(), describe),
                describe(&embedder)
            ))),
            None => {
                store.commit(Op::EnsureCollection {
                    collection,
                    dimension,
                })?;
                store.commit(Op::SetEmbedder {
                    collection,
                    embedder,
                })
            }
        })
    }

    fn describe_collection(collection: Collection) -> Result<Option<CollectionInfo>, Error> {
        with_store(|store| {
            Ok(store
                .state
                .collection(collection)
                .map(|data| CollectionInfo {
                    points: data.len() as u64,
                    dimension: data.dimension,
                    embedder: data.embedder.clone(),
                }))
        })
    }

    fn set_embedder(collection: Collection, embedder: EmbedderId) -> Result<(), Error> {
        with_store(|store| {
            let dimension = store.dimension(collection)?;
            if embedder.dimension != dimension {
                return Err(invalid(
                    "embedder",
                    format!(
                        "{} has {dimension} dimensions; {} cannot be its embedder",
                        collection_name(collection),
                        describe(&embedder)
                    ),
                ));
            }
            store.commit(Op::SetEmbedder {
                collection,
                embedder,
            })
        })
    }

    fn upsert(collection: Collection, points: Vec<Point>) -> Result<(), Error> {
        with_store(|store| {
            let dimension = store.dimension(collection)?;
            for point in &points {
                check_id(&point.id)?;
                check_vector(&point.vector, dimension)?;
                check_fields(&point.payload)?;
                if point
                    .text
                    .as_ref()
                    .is_some_and(|t| t.len() > MAX_TEXT_BYTES)
                {
                    return Err(invalid(
                        "text",
                        format!("a point's text is at most {MAX_TEXT_BYTES} bytes"),
                    ));
                }
            }
            store.commit(Op::UpsertWithText { collection, points })
        })
    }

    fn search(request: SearchRequest) -> Result<Vec<ScoredPoint>, Error> {
        check_limit(request.limit)?;
        if request.offset > MAX_LIMIT {
            return Err(invalid("offset", format!("must be at most {MAX_LIMIT}")));
        }
        if let Some(formula) = &request.rescore {
            check_rescore(formula)?;
        }
        with_store(|store| {
            let dimension = store.dimension(request.collection)?;
            check_vector(&request.vector, dimension)?;
            let Some(data) = store.state.collection(request.collection) else {
                return Ok(Vec::new());
            };
            let keep = (request.offset + request.limit) as usize;
            let fusion = fusion()?;
            let fused = request.text.is_some() && fusion != Fusion::Vector;
            let searched = data.search(
                &request.vector,
                request.text.as_deref(),
                &request.filter,
                request.rescore.as_ref(),
                keep,
                fusion,
            );
            add_span_attribute("store.fused", fused && data.indexed_texts() > 0);
            add_span_attribute("store.candidates", searched.candidates);
            add_span_attribute("store.rescored_exactly", searched.rescored);
            let hits: Vec<ScoredPoint> = searched
                .hits
                .into_iter()
                .skip(request.offset as usize)
                .map(|(hit, point)| ScoredPoint {
                    id: point.id,
                    score: hit.score,
                    similarity: hit.similarity,
                    payload: point.payload,
                })
                .collect();
            add_span_attribute("db.response.returned_rows", hits.len());
            Ok(hits)
        })
    }

    fn get(
        collection: Collection,
        ids: Vec<String>,
        with_vectors: bool,
    ) -> Result<Vec<StoredPoint>, Error> {
        with_store(|store| {
            let Some(data) = store.state.collection(collection) else {
                return Ok(Vec::new());
            };
            Ok(ids
                .iter()
                .filter_map(|id| data.get(id, with_vectors))
                .collect())
        })
    }

    fn delete(collection: Collection, ids: Vec<String>) -> Result<u32, Error> {
        with_store(|store| {
            let existing = store
                .state
                .collection(collection)
                .map_or(0, |data| ids.iter().filter(|id| data.contains(id)).count());
            if existing > 0 {
                store.commit(Op::Delete { collection, ids })?;
            }
            Ok(existing as u32)
        })
    }

    fn update_payload(collection: Collection, updates: Vec<PayloadUpdate>) -> Result<(), Error> {
        for update in &updates {
            check_fields(&update.fields)?;
        }
        with_store(|store| {
            let data = store.state.collection(collection);
            if let Some(missing) = updates
                .iter()
                .find(|u| data.is_none_or(|data| !data.contains(&u.id)))
            {
                return Err(Error::NotFound(format!(
                    "no point {} in {collection:?}",
                    missing.id
                )));
            }
            store.commit(Op::UpdatePayload {
                collection,
                updates,
            })
        })
    }

    /// Atomic because this store is one instance whose calls run one at a time: the
    /// changes are resolved against the values it holds and logged as the values they
    /// produce (so replay does not depend on the order of anything else).
    fn change_payload(collection: Collection, changes: Vec<PayloadChange>) -> Result<(), Error> {
        if changes.len() > MAX_BATCH {
            return Err(invalid(
                "changes",
                format!("at most {MAX_BATCH} points in one write"),
            ));
        }
        for change in changes.iter().flat_map(|c| &c.changes) {
            ww_guest::change::check(change)?;
        }
        with_store(|store| {
            let data = store.state.collection(collection);
            let mut updates = Vec::with_capacity(changes.len());
            for change in &changes {
                let Some(point) = data.and_then(|data| data.get(&change.id, false)) else {
                    return Err(Error::NotFound(format!(
                        "no point {} in {collection:?}",
                        change.id
                    )));
                };
                updates.push(PayloadUpdate {
                    id: change.id.clone(),
                    fields: ww_guest::change::apply_all(&point.payload, &change.changes)?,
                });
            }
            if updates.is_empty() {
                return Ok(());
            }
            store.commit(Op::UpdatePayload {
                collection,
                updates,
            })
        })
    }

    fn count(collection: Collection, filter: Filter) -> Result<u64, Error> {
        with_store(|store| {
            Ok(store
                .state
                .collection(collection)
                .map_or(0, |data| data.count(&filter)))
        })
    }

    fn scroll(
        collection: Collection,
        filter: Filter,
        after: Option<String>,
        limit: u32,
        with_vectors: bool,
    ) -> Result<Vec<StoredPoint>, Error> {
        check_limit(limit)?;
        with_store(|store| {
            let Some(data) = store.state.collection(collection) else {
                return Ok(Vec::new());
            };
            Ok(data.scroll(&filter, after.as_deref(), limit as usize, with_vectors))
        })
    }

    fn health() -> StoreHealth {
        let status = with_store(|store| {
            let points: usize = store
                .state
                .collections
                .iter()
                .flatten()
                .map(|c| c.len())
                .sum();
            Ok(format!(
                "{points} vectors, {} nodes, {} edges, snapshot {} bytes, log {} bytes",
                store.state.nodes.len(),
                store.state.edges.len(),
                store.journal.snapshot_bytes(),
                store.journal.log_bytes()
            ))
        });
        StoreHealth {
            backend: "embedded".to_owned(),
            healthy: status.is_ok(),
            detail: status.unwrap_or_else(|e| format!("{e:?}")),
        }
    }
}

/// Nodes and edges one `upsert-graph` may write: a batch of episodes is two per episode.
const MAX_BATCH: usize = 4096;

/// What an edge must be, whatever the store holds.
fn check_edge(edge: &Edge) -> Result<(), Error> {
    if edge.source == edge.target {
        return Err(invalid(
            "target",
            "an edge from a node to itself is not allowed",
        ));
    }
    if !edge.weight.is_finite() {
        return Err(invalid("weight", "must be a finite number"));
    }
    check_fields(&edge.properties)
}

fn node_exists(store: &Store, id: &str) -> Result<(), Error> {
    if store.state.nodes.contains_key(id) {
        Ok(())
    } else {
        Err(Error::NotFound(format!("no node {id}")))
    }
}

impl GraphStore for EmbeddedStore {
    fn upsert_node(node: Node) -> Result<(), Error> {
        check_id(&node.id)?;
        check_fields(&node.properties)?;
        with_store(|store| store.commit(Op::UpsertNode(node)))
    }

    fn update_node(id: String, properties: Vec<Field>) -> Result<(), Error> {
        check_fields(&properties)?;
        with_store(|store| {
            node_exists(store, &id)?;
            store.commit(Op::UpdateNode { id, properties })
        })
    }

    fn get_node(id: String) -> Result<Option<Node>, Error> {
        with_store(|store| Ok(store.state.nodes.get(&id).cloned()))
    }

    fn find_nodes(
        label: NodeLabel,
        conditions: Vec<Condition>,
        limit: u32,
    ) -> Result<Vec<Node>, Error> {
        check_limit(limit)?;
        with_store(|store| {
            let state = &store.state;
            // One set per label: `label_slot` is in bounds.
            #[allow(clippy::indexing_slicing)]
            let ids = &state.by_label[label_slot(label)];
            Ok(ids
                .iter()
                .filter_map(|id| state.nodes.get(id))
                .filter(|node| filter::all(&node.properties, &conditions))
                .take(limit as usize)
                .cloned()
                .collect())
        })
    }

    fn delete_node(id: String) -> Result<bool, Error> {
        with_store(|store| {
            if !store.state.nodes.contains_key(&id) {
                return Ok(false);
            }
            store.commit(Op::DeleteNode(id))?;
            Ok(true)
        })
    }

    fn upsert_edge(edge: Edge) -> Result<(), Error> {
        check_edge(&edge)?;
        with_store(|store| {
            node_exists(store, &edge.source)?;
            node_exists(store, &edge.target)?;
            store.commit(Op::UpsertEdge(edge))
        })
    }

    /// Atomic for the same reason as `change-payload`; logged as the edges it produces.
    fn reweight_edges(changes: Vec<EdgeReweight>) -> Result<u32, Error> {
        if changes.len() > MAX_BATCH {
            return Err(invalid(
                "changes",
                format!("at most {MAX_BATCH} edges in one write"),
            ));
        }
        with_store(|store| {
            let mut changed: Vec<Edge> = Vec::with_capacity(changes.len());
            let mut applied = 0;
            for c in &changes {
                let key = edge_key(&c.source, c.relation, &c.target);
                let Some(stored) = store.state.edges.get(&key) else {
                    continue;
                };
                applied += 1;
                // The same edge twice in one call: the second change applies to the first's result.
                let earlier = changed.iter_mut().find(|e| {
                    (e.source.as_str(), e.relation, e.target.as_str())
                        == (c.source.as_str(), c.relation, c.target.as_str())
                });
                match earlier {
                    Some(edge) => {
                        edge.weight = ww_guest::change::reweight(edge.weight, c.scale, c.offset)?;
                    }
                    None => changed.push(Edge {
                        weight: ww_guest::change::reweight(stored.weight, c.scale, c.offset)?,
                        ..stored.clone()
                    }),
                }
            }
            if !changed.is_empty() {
                store.commit_all(changed.into_iter().map(Op::UpsertEdge).collect())?;
            }
            Ok(applied)
        })
    }

    fn upsert_graph(nodes: Vec<Node>, edges: Vec<Edge>) -> Result<(), Error> {
        if nodes.len() + edges.len() > MAX_BATCH {
            return Err(invalid(
                "nodes",
                format!("at most {MAX_BATCH} nodes and edges in one write"),
            ));
        }
        for node in &nodes {
            check_id(&node.id)?;
            check_fields(&node.properties)?;
        }
        for edge in &edges {
            check_edge(edge)?;
        }
        with_store(|store| {
            // Each edge's ends: stored already, or among this write's nodes.
            for edge in &edges {
                for end in [&edge.source, &edge.target] {
                    if !nodes.iter().any(|n| &n.id == end) {
                        node_exists(store, end)?;
                    }
                }
            }
            let ops = nodes
                .into_iter()
                .map(Op::UpsertNode)
                .chain(edges.into_iter().map(Op::UpsertEdge))
                .collect();
            store.commit_all(ops)
        })
    }

    fn get_edge(
        source: String,
        target: String,
        relation: RelationType,
    ) -> Result<Option<Edge>, Error> {
        with_store(|store| {
            Ok(store
                .state
                .edges
                .get(&edge_key(&source, relation, &target))
                .cloned())
        })
    }

    fn neighbors(
        id: String,
        direction: Direction,
        relations: Vec<RelationType>,
        limit: u32,
    ) -> Result<Vec<Neighbor>, Error> {
        check_limit(limit)?;
        with_store(|store| {
            node_exists(store, &id)?;
            let state = &store.state;
            let wanted = |r: RelationType| relations.is_empty() || relations.contains(&r);
            let keys = state.adjacency.get(&id).into_iter().flatten();
            Ok(keys
                .filter_map(|key| state.edges.get(key))
                .filter(|edge| wanted(edge.relation))
                .filter_map(|edge| {
                    let other = match direction {
                        Direction::Outgoing if edge.source == id => &edge.target,
                        Direction::Incoming if edge.target == id => &edge.source,
                        Direction::Both if edge.source == id => &edge.target,
                        Direction::Both => &edge.source,
                        _ => return None,
                    };
                    state.nodes.get(other).map(|node| Neighbor {
                        node: node.clone(),
                        edge: edge.clone(),
                    })
                })
                .take(limit as usize)
                .collect())
        })
    }

    fn degree(id: String, relations: Vec<RelationType>) -> Result<u32, Error> {
        with_store(|store| {
            node_exists(store, &id)?;
            let state = &store.state;
            Ok(state
                .adjacency
                .get(&id)
                .into_iter()
                .flatten()
                .filter_map(|key| state.edges.get(key))
                .filter(|edge| relations.is_empty() || relations.contains(&edge.relation))
                .count() as u32)
        })
    }

    fn count_nodes(label: NodeLabel) -> Result<u64, Error> {
        // One set per label: `label_slot` is in bounds.
        #[allow(clippy::indexing_slicing)]
        with_store(|store| Ok(store.state.by_label[label_slot(label)].len() as u64))
    }

    fn health() -> StoreHealth {
        <EmbeddedStore as VectorStore>::health()
    }
}

/// The store's upkeep: a compaction, run by the host on an instance of its own (fresh,
/// never the serving one) while the serving instance appends to the next log.
impl ww_guest::upkeep::Maintenance for EmbeddedStore {
    fn run(task: String) -> Result<String, String> {
        let generation = task
            .strip_prefix(COMPACT_TASK)
            .and_then(|g| g.parse::<u64>().ok())
            .ok_or_else(|| format!("no such task: {task:?} (only {COMPACT_TASK}<generation>)"))?;
        let span = ww_guest::span("embedded.compact").attr("store.snapshot.generation", generation);
        let mut state = State::default();
        let made = ww_wal::snapshot_from_files(
            Path::new(DATA_DIR),
            JOURNAL,
            generation,
            &mut Replaying(&mut state),
            |replaying, out| replaying.0.snapshot(|record| out.record(record)),
        )
        .map_err(|e| {
            let message = format!("snapshot {generation}: {e}");
            span.record_error("storage", message.clone());
            message
        })?;
        Ok(match made {
            ww_wal::Made::Written {
                bytes,
                from,
                log_records,
            } => {
                add_span_event(
                    "store.compacted",
                    vec![
                        kv("store.snapshot.bytes", bytes),
                        kv("store.snapshot.generation", generation),
                        kv("store.records", log_records),
                    ],
                );
                format!(
                    "snapshot {generation}: {bytes} bytes, from {} and {log_records} log records",
                    from.map_or("nothing".to_owned(), |g| format!("snapshot {g}"))
                )
            }
            ww_wal::Made::AlreadyThere => format!("snapshot {generation} was already there"),
        })
    }
}

// The compaction runs on an instance of its own, under the long deadline.
ww_guest::calls! {
    long_running: ["run"],
}

ww_guest::export_combined_store!(EmbeddedStore);
ww_guest::export_maintenance!(EmbeddedStore);

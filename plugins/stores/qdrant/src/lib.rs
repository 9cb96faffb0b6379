//! The Qdrant adapter: the vector role over Qdrant's REST API (wasi:http, through
//! `ww-http`).
//!
//! Collections `ww_episodes`, `ww_entities`, `ww_procedures` are created on first use
//! with the embedder's dimension and cosine distance, with a keyword payload index on
//! `session`. Point ids are the services' UUIDs; any other id is mapped to a UUID derived
//! from it, the original kept in the payload (`ww_id`). Writes wait for Qdrant to apply
//! them (`wait=true`), so an acknowledged write is durable there.
//!
//! Every point's text is also stored as a sparse vector named `text`: its BM25 term
//! weights (`ww-lexical`, the same tokens as the embedded store), with the IDF that
//! Qdrant keeps over the collection (the `idf` modifier), so the engine scores the text
//! side as BM25.
//!
//! Search is the Query API (`POST .../points/query`; the older `.../points/search` is gone
//! from Qdrant's current OpenAPI description). With query text, two prefetches (the dense
//! vector's nearest neighbours and the text's best BM25 matches) are fused by the
//! engine's reciprocal rank fusion, `1 / (k + rank)` summed over both lists (rank from
//! 0); that score times `k / 2` is the fused relevance, in [0, 1] (1: first in both
//! lists), which stands for similarity in the services' formulas. Without text, or in a
//! collection created before it had the sparse vector, the dense query alone. Rescoring
//! (`search` with a `rescore` formula) is done here over a candidate set: the
//! `RESCORE_CANDIDATES` best points when similarity counts, every point passing the
//! filter when it does not (e.g. "the latest episode of a session").
//!
//! Settings (`[roles.vector-store]`): `endpoint = "http://host:6333"`, the secret
//! `api_key` (sent as `api-key`), `timeout_ms` (connect, default 3000), `retrieval`
//! (`fused` = `rrf`, the default; `rrf:K` for another `k`; `vector` for the dense vector
//! alone).

mod convert;
mod http;

use serde_json::{Value, json};
use ww_lexical::Sparse;

use crate::http::{Qdrant, TEXT_VECTOR};

use ww_guest::vector_store::{
    Collection, CollectionInfo, EmbedderId, Guest, PayloadChange, PayloadUpdate, Point, Rescore,
    ScoreTerm, ScoredPoint, SearchRequest, StoredPoint,
};
use ww_guest::vector_store::{Error, Filter, StoreHealth, ValidationError};

/// Most hits or points one call returns.
const MAX_LIMIT: u32 = 10_000;
/// Compare-and-set rounds of one `change-payload` before its points still changed by
/// others are given up as contended.
const CHANGE_ROUNDS: usize = 32;
/// Points per upsert request.
const UPSERT_BATCH: usize = 256;
/// Candidates rescored when similarity is part of the formula.
const RESCORE_CANDIDATES: u32 = 512;
/// Points per page when every point passing a filter is read.
const SCROLL_PAGE: u32 = 1024;
/// Candidates each side of a fused search brings to the fusion, at least.
const FUSION_DEPTH: u32 = 200;
/// Reciprocal rank fusion's `k` by default: chosen by measurement (docs/recall.md).
const DEFAULT_RRF_K: u32 = 2;

/// How a search with query text ranks: the `retrieval` setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retrieval {
    /// The dense vector alone.
    Vector,
    /// The dense and the text's sparse candidates fused by Qdrant's reciprocal rank
    /// fusion with this `k`.
    Rrf {
        /// RRF's constant: a rank r counts 1 / (k + r).
        k: u32,
    },
}

impl Retrieval {
    fn parse(setting: Option<&str>) -> Result<Self, String> {
        match setting.map(str::trim) {
            None | Some("" | "fused" | "rrf") => Ok(Self::Rrf { k: DEFAULT_RRF_K }),
            Some("vector") => Ok(Self::Vector),
            Some(other) => match other.strip_prefix("rrf:").map(str::parse::<u32>) {
                Some(Ok(k)) if k >= 1 => Ok(Self::Rrf { k }),
                _ => Err(format!(
                    "unknown value {other:?} (fused, rrf, rrf:K with K ≥ 1, or vector)"
                )),
            },
        }
    }
}

/// The Query API's request for the `limit` best points from `offset`: the dense vector's
/// nearest neighbours, or with `fusion` (its `k` and the query text's sparse vector) both
/// sides' candidates fused by the engine. `depth` candidates a side, at least.
fn query_body(
    vector: &[f32],
    fusion: Option<(u32, &Sparse)>,
    filter: &Value,
    limit: u32,
    offset: u32,
) -> Value {
    let Some((k, text)) = fusion else {
        return json!({
            "query": vector,
            "filter": filter,
            "limit": limit,
            "offset": offset,
            "with_payload": true,
        });
    };
    let depth = FUSION_DEPTH.max(limit + offset).min(MAX_LIMIT);
    json!({
        "prefetch": [
            { "query": vector, "filter": filter, "limit": depth },
            {
                "query": { "indices": text.indices, "values": text.values },
                "using": TEXT_VECTOR,
                "filter": filter,
                "limit": depth,
            },
        ],
        "query": { "rrf": { "k": k } },
        "limit": limit,
        "offset": offset,
        "with_payload": true,
    })
}

/// The [0, 1] relevance of a score the query returned: the cosine as it is, a fused
/// score scaled by its most, `2 / k`.
fn relevance(score: f32, fused_k: Option<u32>) -> f32 {
    match fused_k {
        Some(k) => (score * k as f32 / 2.0).clamp(0.0, 1.0),
        None => score,
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Validation(ValidationError {
        field: Some(field.to_owned()),
        message: message.into(),
    })
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

fn name(collection: Collection) -> &'static str {
    match collection {
        Collection::Episodes => "ww_episodes",
        Collection::Entities => "ww_entities",
        Collection::Procedures => "ww_procedures",
    }
}

/// The value of `term` for a point's payload.
fn term_value(term: &ScoreTerm, payload: &serde_json::Map<String, Value>) -> f64 {
    let number = |field: &str| payload.get(field).and_then(Value::as_f64);
    match term {
        ScoreTerm::Linear((field, weight)) => weight * number(field).unwrap_or(0.0),
        ScoreTerm::ExpDecay(decay) => match number(&decay.field) {
            Some(x) if decay.scale > 0.0 => {
                decay.weight * (-(x - decay.origin).abs() / decay.scale).exp()
            }
            _ => 0.0,
        },
    }
}

fn check_rescore(formula: &Rescore) -> Result<(), Error> {
    let finite = |x: f64| x.is_finite();
    let ok = finite(formula.similarity_weight)
        && formula.terms.iter().all(|term| match term {
            ScoreTerm::Linear((_, w)) => finite(*w),
            ScoreTerm::ExpDecay(d) => finite(d.origin) && finite(d.weight) && d.scale > 0.0,
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "rescore",
            "weights must be finite and scales positive",
        ))
    }
}

struct QdrantStore;

impl Guest for QdrantStore {
    fn ensure_collection(collection: Collection, embedder: EmbedderId) -> Result<(), Error> {
        if embedder.dimension == 0 {
            return Err(invalid("dimension", "must be positive"));
        }
        http::with(|q| q.ensure(name(collection), &embedder))
    }

    fn describe_collection(collection: Collection) -> Result<Option<CollectionInfo>, Error> {
        http::with(|q| q.collection_info(name(collection)))
    }

    fn set_embedder(collection: Collection, embedder: EmbedderId) -> Result<(), Error> {
        http::with(|q| q.set_embedder(name(collection), &embedder))
    }

    fn upsert(collection: Collection, points: Vec<Point>) -> Result<(), Error> {
        let collection = name(collection);
        let text_vector = http::with(|q| q.has_text_vector(collection))?;
        let mut body = Vec::with_capacity(points.len());
        for point in &points {
            if point.vector.iter().any(|x| !x.is_finite()) {
                return Err(invalid("vector", "must be finite numbers"));
            }
            let text = point
                .text
                .as_deref()
                .filter(|_| text_vector)
                .map(ww_lexical::document)
                .filter(|sparse| !sparse.is_empty());
            // With text, the dense vector goes by the default (empty) name beside it.
            let vector = match text {
                Some(text) => json!({
                    "": point.vector,
                    TEXT_VECTOR: { "indices": text.indices, "values": text.values },
                }),
                None => json!(point.vector),
            };
            body.push(json!({
                "id": convert::point_id(&point.id),
                "vector": vector,
                "payload": convert::payload(&point.id, &point.payload)?,
            }));
        }
        http::with(|q| {
            for batch in body.chunks(UPSERT_BATCH) {
                q.call(
                    "PUT",
                    &format!("/collections/{collection}/points?wait=true"),
                    Some(json!({ "points": batch })),
                )?;
            }
            Ok(())
        })
    }

    fn search(request: SearchRequest) -> Result<Vec<ScoredPoint>, Error> {
        check_limit(request.limit)?;
        let collection = name(request.collection);
        let filter = convert::filter(&request.filter)?;
        let wanted = request.limit as usize + request.offset as usize;
        let text = request
            .text
            .as_deref()
            .map(ww_lexical::query)
            .filter(|sparse| !sparse.is_empty());
        let fused_k = http::with(|q| {
            Ok(match (q.retrieval, &text) {
                (Retrieval::Rrf { k }, Some(_)) if q.has_text_vector(collection)? => Some(k),
                _ => None,
            })
        })?;
        let relevance = |score: f32| relevance(score, fused_k);
        ww_guest::add_span_attribute("store.fused", fused_k.is_some());
        let fusion = fused_k.zip(text.as_ref());
        let Some(formula) = request.rescore else {
            let body = query_body(
                &request.vector,
                fusion,
                &filter,
                request.limit,
                request.offset,
            );
            let hits = http::with(|q| q.query(collection, body.clone()))?;
            return convert::scored(&hits, relevance, |_, similarity| f64::from(similarity));
        };
        check_rescore(&formula)?;
        let score = |payload: &serde_json::Map<String, Value>, similarity: f32| {
            formula.similarity_weight * f64::from(similarity.max(0.0))
                + formula
                    .terms
                    .iter()
                    .map(|t| term_value(t, payload))
                    .sum::<f64>()
        };
        let mut hits = if formula.similarity_weight > 0.0 {
            let candidates = RESCORE_CANDIDATES.max(wanted as u32).min(MAX_LIMIT);
            let body = query_body(&request.vector, fusion, &filter, candidates, 0);
            let hits = http::with(|q| q.query(collection, body.clone()))?;
            convert::scored(&hits, relevance, score)?
        } else {
            // Similarity does not count: every point passing the filter is a candidate.
            let mut all = Vec::new();
            http::with(|q| {
                q.scroll_all(collection, &filter, |page| {
                    all.extend(convert::scored_unranked(page, score)?);
                    Ok(())
                })
            })?;
            all
        };
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        Ok(hits
            .into_iter()
            .skip(request.offset as usize)
            .take(request.limit as usize)
            .collect())
    }

    fn get(
        collection: Collection,
        ids: Vec<String>,
        with_vectors: bool,
    ) -> Result<Vec<StoredPoint>, Error> {
        let collection = name(collection);
        let found = http::with(|q| q.get(collection, &ids, with_vectors))?;
        Ok(ids
            .iter()
            .filter_map(|id| found.iter().find(|p| &p.id == id).cloned())
            .collect())
    }

    fn delete(collection: Collection, ids: Vec<String>) -> Result<u32, Error> {
        let collection = name(collection);
        http::with(|q| {
            let existing = q.get(collection, &ids, false)?;
            if existing.is_empty() {
                return Ok(0);
            }
            let points: Vec<Value> = existing.iter().map(|p| convert::point_id(&p.id)).collect();
            q.call(
                "POST",
                &format!("/collections/{collection}/points/delete?wait=true"),
                Some(json!({ "points": points })),
            )?;
            Ok(existing.len() as u32)
        })
    }

    fn update_payload(collection: Collection, updates: Vec<PayloadUpdate>) -> Result<(), Error> {
        let collection = name(collection);
        let mut operations = Vec::with_capacity(updates.len());
        for update in &updates {
            operations.push(json!({ "set_payload": {
                "payload": convert::payload_fields(&update.fields)?,
                "points": [convert::point_id(&update.id)],
            }}));
        }
        let ids: Vec<String> = updates.iter().map(|u| u.id.clone()).collect();
        http::with(|q| {
            let existing = q.get(collection, &ids, false)?;
            if let Some(missing) = ids.iter().find(|id| !existing.iter().any(|p| &p.id == *id)) {
                return Err(Error::NotFound(format!(
                    "no point {missing} in {collection}"
                )));
            }
            q.call(
                "POST",
                &format!("/collections/{collection}/points/batch?wait=true"),
                Some(json!({ "operations": operations })),
            )
            .map(drop)
        })
    }

    /// Qdrant has no server-side arithmetic on payloads, so each point's change is a
    /// compare-and-set on its revision ([`convert::REVISION_KEY`]): read the point, write
    /// the new values, a fresh random revision and the next change number with
    /// `set_payload` under a filter that matches only while the revision is the one read
    /// (Qdrant applies a shard's updates one at a time, filter and write together), read
    /// back, and do again the points another writer got to first. Qdrant does not say
    /// whether a filtered write matched, so the point remembers its latest revisions by
    /// change number, and a writer looks for its own at its number (the current revision
    /// alone would not do: a later writer may already have replaced it). Should more than
    /// [`convert::RECENT_REVISIONS`] changes land between a write and its read-back, the
    /// writer cannot tell and says so (a storage error) rather than risk counting twice.
    /// Atomic per point; a call's points are not one transaction (Qdrant has none).
    fn change_payload(collection: Collection, changes: Vec<PayloadChange>) -> Result<(), Error> {
        for change in changes.iter().flat_map(|c| &c.changes) {
            ww_guest::change::check(change)?;
        }
        let collection = name(collection);
        http::with(|q| {
            let mut pending: Vec<&PayloadChange> = changes.iter().collect();
            let ids: Vec<String> = pending.iter().map(|c| c.id.clone()).collect();
            // Each round reads what the previous round's read-back found.
            let mut read = q.revisioned(collection, &ids)?;
            for round in 0..CHANGE_ROUNDS {
                let ids: Vec<String> = pending.iter().map(|c| c.id.clone()).collect();
                let mut operations = Vec::with_capacity(pending.len());
                // Each write's change number and revision.
                let mut written = Vec::with_capacity(pending.len());
                for change in &pending {
                    let Some(point) = read.iter().find(|p| p.id == change.id) else {
                        return Err(Error::NotFound(format!(
                            "no point {} in {collection}",
                            change.id
                        )));
                    };
                    let fields = ww_guest::change::apply_all(&point.fields, &change.changes)?;
                    let (sequence, revision) = (point.sequence + 1, fresh_revision()?);
                    let mut recent = point.recent.clone();
                    recent.push(revision);
                    let excess = recent.len().saturating_sub(convert::RECENT_REVISIONS);
                    recent.drain(..excess);
                    let mut payload = convert::payload_fields(&fields)?;
                    if let Some(map) = payload.as_object_mut() {
                        map.insert(convert::REVISION_KEY.into(), json!(revision));
                        map.insert(convert::SEQUENCE_KEY.into(), json!(sequence));
                        map.insert(convert::RECENT_KEY.into(), json!(recent));
                    }
                    let unchanged = match point.revision {
                        Some(r) => json!({ "key": convert::REVISION_KEY, "match": { "value": r } }),
                        None => json!({ "is_empty": { "key": convert::REVISION_KEY } }),
                    };
                    operations.push(json!({ "set_payload": {
                        "payload": payload,
                        "filter": { "must": [
                            { "has_id": [convert::point_id(&change.id)] },
                            unchanged,
                        ]},
                    }}));
                    written.push((sequence, revision));
                }
                q.call(
                    "POST",
                    &format!("/collections/{collection}/points/batch?wait=true&ordering=strong"),
                    Some(json!({ "operations": operations })),
                )?;
                let after = q.revisioned(collection, &ids)?;
                let mut again = Vec::new();
                for (change, (sequence, revision)) in pending.into_iter().zip(written) {
                    let landed = after
                        .iter()
                        .find(|p| p.id == change.id)
                        .map_or(convert::Landed::No, |p| p.landed(sequence, revision));
                    match landed {
                        convert::Landed::Yes => {}
                        convert::Landed::No => again.push(change),
                        convert::Landed::Forgotten => {
                            return Err(Error::Storage(format!(
                                "cannot tell whether the change of point {} in {collection} \
                                 landed: more than {} changes of it followed",
                                change.id,
                                convert::RECENT_REVISIONS,
                            )));
                        }
                    }
                }
                pending = again;
                if pending.is_empty() {
                    return Ok(());
                }
                read = after;
                ww_guest::add_span_event(
                    "qdrant.change.contended",
                    vec![
                        ww_guest::kv("round", round as i64),
                        ww_guest::kv("points", pending.len() as i64),
                    ],
                );
            }
            Err(Error::Storage(format!(
                "{} points of {collection} were changed by other writers {CHANGE_ROUNDS} times in a row",
                pending.len()
            )))
        })
    }

    fn count(collection: Collection, filter: Filter) -> Result<u64, Error> {
        let collection = name(collection);
        let body = json!({ "filter": convert::filter(&filter)?, "exact": true });
        http::with(|q| q.count(collection, body.clone()))
    }

    fn scroll(
        collection: Collection,
        filter: Filter,
        after: Option<String>,
        limit: u32,
        with_vectors: bool,
    ) -> Result<Vec<StoredPoint>, Error> {
        check_limit(limit)?;
        let collection = name(collection);
        let filter = convert::filter(&filter)?;
        http::with(|q| q.scroll_page(collection, &filter, after.as_deref(), limit, with_vectors))
    }

    fn health() -> StoreHealth {
        let status = http::with(Qdrant::describe);
        StoreHealth {
            backend: "qdrant".to_owned(),
            healthy: status.is_ok(),
            detail: match status {
                Ok(detail) | Err(Error::Storage(detail)) => detail,
                Err(other) => format!("{other:?}"),
            },
        }
    }
}

/// A new revision: random, so that two writers that read the same revision never write
/// the same next one (each then sees whether its own landed).
fn fresh_revision() -> Result<i64, Error> {
    let bits = getrandom::u64().map_err(|e| Error::Storage(format!("no randomness: {e}")))?;
    Ok((bits >> 1) as i64)
}

ww_guest::export_vector_store!(QdrantStore);

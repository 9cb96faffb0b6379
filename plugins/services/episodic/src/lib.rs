//! Episodic memory (tools 1–4): each episode is a point in the `episodes`
//! collection (its embedding and payload) and a node in the graph, linked to its session's
//! previous episode by a `follows` edge. Recall ranks by the four-part score in the store's
//! one pass (a rescoring formula), then reinforces what it returns in one write.
//!
//! The session is always the host's (bound at connection); an episode of another session
//! is reported as not found, never returned.

mod episode;
mod score;

use std::cell::RefCell;
use std::collections::HashMap;

use episode::Stored;
use ww_guest::episodic::{
    Episode, EpisodeWrite, Guest, LightReport, NewEpisode, PointInTimeRequest, RecallRequest,
    RecalledEpisode, TraceRef, ValenceChange,
};
use ww_guest::services::embedder;
use ww_guest::services::graph_store::{self as graph, Edge, Node, NodeLabel, RelationType};
use ww_guest::services::vector_store::{
    self as vectors, AffineChange, Collection, FieldChange, IntegerChange, PayloadChange,
    PayloadUpdate, Point, Rescore, SearchRequest, StoredPoint,
};
use ww_guest::services::{Condition, Error, Field, FieldValue, Filter, Range};
use ww_guest::{
    add_span_attribute, add_span_event, add_span_link, cancelled, kv, report_progress, span, traced,
};
use ww_service_common::{
    MemoryOperation, Quantized, check_text, check_unit, embed, invalid, memory_span, new_id,
    similar_at_least, trace_fields, writing_span,
};

/// Bytes of episode content, at most.
const MAX_CONTENT: usize = 100_000;
/// Bytes of a query, at most.
const MAX_QUERY: usize = 10_000;
/// Bytes of a context value or key, at most, and extra context entries.
const MAX_CONTEXT_VALUE: usize = 1_000;
const MAX_CONTEXT_ENTRIES: usize = 32;
/// Results per recall, at most, and how deep `offset` may page.
const MAX_LIMIT: u32 = 100;
const MAX_OFFSET: u32 = 10_000;
/// Cosine similarity at or above which light consolidation marks a duplicate.
const DUPLICATE_SIMILARITY: f32 = 0.95;
/// Points read per page when scanning all episodes.
const PAGE: u32 = 1_000;
/// Episodes per `create-episodes` call, at most: a batch is embedded and written at
/// once, so this bounds one call's work (about a second with the model on one core).
const MAX_BATCH: usize = 256;
/// Tokens (estimated from bytes) per embedder call of a batch: inside the model
/// embedder's per-call bound whichever way it runs its model (2,048 tokens in the
/// component), and many texts per pass.
const EMBED_TOKENS_PER_CALL: usize = 1_800;

thread_local! {
    /// Each session's latest episode (id, sequence), learnt from the store on first use.
    static HEADS: RefCell<HashMap<String, (String, i64)>> = RefCell::new(HashMap::new());
}

fn check_session(session: &str) -> Result<(), Error> {
    if session.is_empty() || session.len() > MAX_CONTEXT_VALUE {
        return Err(invalid("session", "the session id is missing or too long"));
    }
    Ok(())
}

fn check_page(limit: u32, offset: u32) -> Result<(), Error> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    if offset > MAX_OFFSET {
        return Err(invalid("offset", format!("must be at most {MAX_OFFSET}")));
    }
    Ok(())
}

fn check_context(episode: &NewEpisode) -> Result<(), Error> {
    let context = &episode.context;
    if context.extra.len() > MAX_CONTEXT_ENTRIES {
        return Err(invalid(
            "context",
            format!("at most {MAX_CONTEXT_ENTRIES} extra entries"),
        ));
    }
    let named = [
        ("context.project", &context.project),
        ("context.file", &context.file),
        ("context.tool", &context.tool),
    ];
    for (field, value) in named {
        if value.as_ref().is_some_and(|v| v.len() > MAX_CONTEXT_VALUE) {
            return Err(invalid(field, format!("at most {MAX_CONTEXT_VALUE} bytes")));
        }
    }
    for (key, value) in &context.extra {
        if key.is_empty() || key.len() > MAX_CONTEXT_VALUE || value.len() > MAX_CONTEXT_VALUE {
            return Err(invalid(
                "context",
                format!(
                    "keys must be non-empty; keys and values at most {MAX_CONTEXT_VALUE} bytes"
                ),
            ));
        }
    }
    Ok(())
}

/// The `episodes` collection, ensured with the embedder's dimension on first use.
fn ensure_collection() -> Result<(), Error> {
    ww_service_common::ensure_collection(Collection::Episodes)
}

fn session_filter(session: &str) -> Condition {
    Condition::Equals(Field {
        name: episode::SESSION.to_owned(),
        value: FieldValue::Text(session.to_owned()),
    })
}

fn time_range(field: &str, from: Option<i64>, to: Option<i64>) -> Option<Condition> {
    (from.is_some() || to.is_some()).then(|| {
        Condition::Within(Range {
            name: field.to_owned(),
            gte: from.map(|t| t as f64),
            lte: to.map(|t| t as f64),
        })
    })
}

/// The session's latest episode (id, sequence): remembered, or asked of the store.
fn session_head(session: &str) -> Result<Option<(String, i64)>, Error> {
    if let Some(head) = HEADS.with_borrow(|heads| heads.get(session).cloned()) {
        return Ok(Some(head));
    }
    let latest = Rescore {
        similarity_weight: 0.0,
        terms: vec![vectors::ScoreTerm::Linear((
            episode::SEQUENCE.to_owned(),
            1.0,
        ))],
    };
    let hits = vectors::search(&SearchRequest {
        collection: Collection::Episodes,
        // Similarity is not asked for: any vector of the right length will do.
        vector: vec![0.0; embedder::dimension() as usize],
        text: None,
        filter: Filter {
            must: vec![session_filter(session)],
            must_not: vec![],
        },
        limit: 1,
        offset: 0,
        rescore: Some(latest),
    })?;
    let head = match hits.into_iter().next() {
        Some(hit) => Some((hit.id, Stored::new(&hit.payload).sequence()?)),
        None => None,
    };
    if let Some(head) = &head {
        HEADS.with_borrow_mut(|heads| heads.insert(session.to_owned(), head.clone()));
    }
    Ok(head)
}

/// The episode `id` of `session`; another session's episode is not found.
fn fetch(session: &str, id: &str) -> Result<Episode, Error> {
    let not_found = || Error::NotFound(format!("no episode {id} in this session"));
    let point = vectors::get(Collection::Episodes, &[id.to_owned()], false)?
        .into_iter()
        .next()
        .ok_or_else(not_found)?;
    let stored = Stored::new(&point.payload);
    if stored.session().as_deref() != Some(session) {
        return Err(not_found());
    }
    stored.episode(point.id.clone())
}

/// A new episode and what stores it: its graph node, the `follows` edge to the session's
/// previous episode (if any), and its point.
struct NewRecords {
    episode: Episode,
    sequence: i64,
    node: Node,
    edge: Option<Edge>,
    point: Point,
}

/// The records of `new`, stored as `id`, after `head`, the session's latest episode (id,
/// sequence) before it: one episode's (`create-episode`) or each of a batch's.
fn new_records(
    new: NewEpisode,
    id: String,
    vector: Vec<f32>,
    head: Option<(String, i64)>,
    created_by: Option<TraceRef>,
    now: i64,
) -> NewRecords {
    let sequence = head.as_ref().map_or(1, |(_, s)| s + 1);
    let episode = Episode {
        id: id.clone(),
        session: new.session,
        content: new.content,
        context: new.context,
        outcome: new.outcome,
        valence: new.valence,
        event_time: new.event_time.unwrap_or(now),
        ingestion_time: now,
        access_count: 0,
        stability: score::INITIAL_STABILITY,
        last_access: now,
        previous: head.map(|(id, _)| id),
        duplicate_of: None,
        created_by,
        updated_by: None,
    };
    let node = Node {
        id: id.clone(),
        label: NodeLabel::Episode,
        properties: vec![
            episode::text(episode::SESSION, &episode.session),
            episode::integer(episode::EVENT_TIME, episode.event_time),
        ],
    };
    let edge = episode.previous.as_ref().map(|previous| Edge {
        source: id.clone(),
        target: previous.clone(),
        relation: RelationType::Follows,
        weight: 1.0,
        properties: vec![],
    });
    let point = Point {
        id,
        vector,
        payload: episode::to_payload(&episode, sequence),
        text: Some(episode.content.clone()),
    };
    NewRecords {
        episode,
        sequence,
        node,
        edge,
        point,
    }
}

/// The span writing the episodes, when sampled.
fn created_by() -> Option<TraceRef> {
    writing_span().map(|(trace_id, span_id)| TraceRef { trace_id, span_id })
}

#[traced("episodic.create", kind = Internal)]
fn create(new: NewEpisode, now: i64) -> Result<Episode, Error> {
    check_session(&new.session)?;
    check_text("content", &new.content, MAX_CONTENT)?;
    check_unit("valence", new.valence)?;
    check_context(&new)?;
    add_span_attribute("session.id", new.session.clone());
    add_span_attribute("episode.outcome", episode::outcome_name(new.outcome));
    add_span_attribute("episode.content.length", new.content.len());
    ensure_collection()?;
    let vector = embed(&new.content)?;
    let head = session_head(&new.session)?;
    let NewRecords {
        episode,
        sequence,
        node,
        edge,
        point,
    } = new_records(new, new_id(now), vector, head, created_by(), now);
    let id = episode.id.clone();
    // Graph first, the point last: an episode is visible to recall only once all of it
    // is stored.
    graph::upsert_node(&node)?;
    if let Some(edge) = &edge {
        graph::upsert_edge(edge)?;
        add_span_attribute("episode.previous", edge.target.clone());
    }
    vectors::upsert(Collection::Episodes, &[point])?;
    HEADS.with_borrow_mut(|heads| heads.insert(episode.session.clone(), (id.clone(), sequence)));
    memory_span(MemoryOperation::Create, Collection::Episodes, Some(&id), 1);
    add_span_attribute("episode.id", id);
    add_span_attribute("episode.sequence", sequence);
    Ok(episode)
}

/// A write's id, if given, as the store keeps it (a UUID, lower case, hyphenated).
fn given_id(id: Option<&str>) -> Result<Option<String>, Error> {
    id.map(|id| {
        uuid::Uuid::parse_str(id)
            .map(|uuid| uuid.hyphenated().to_string())
            .map_err(|_| invalid("id", format!("{id:?} is not a UUID")))
    })
    .transpose()
}

/// The vectors of `texts`, in as few embedder calls as keep each within
/// [`EMBED_TOKENS_PER_CALL`] (a text's tokens estimated at a third of its bytes, at most
/// the model's usual 256 and the special tokens).
fn embed_all(texts: Vec<String>) -> Result<Vec<Vec<f32>>, Error> {
    let estimate = |text: &String| (text.len() / 3).min(256) + 2;
    let mut vectors = Vec::with_capacity(texts.len());
    let mut chunk: Vec<String> = Vec::new();
    let mut tokens = 0;
    let count = texts.len();
    for text in texts {
        if !chunk.is_empty() && tokens + estimate(&text) > EMBED_TOKENS_PER_CALL {
            vectors.extend(embedder::embed(&std::mem::take(&mut chunk))?);
            tokens = 0;
        }
        tokens += estimate(&text);
        chunk.push(text);
    }
    if !chunk.is_empty() {
        vectors.extend(embedder::embed(&chunk)?);
    }
    if vectors.len() != count {
        return Err(Error::Embedding(
            "the embedder returned a different number of vectors than texts".to_owned(),
        ));
    }
    Ok(vectors)
}

#[traced("episodic.create_batch", kind = Internal)]
fn create_many(writes: Vec<EpisodeWrite>, now: i64) -> Result<Vec<Episode>, Error> {
    if writes.len() > MAX_BATCH {
        return Err(invalid(
            "episodes",
            format!(
                "at most {MAX_BATCH} episodes per call, got {}",
                writes.len()
            ),
        ));
    }
    add_span_attribute("episodes.count", writes.len());
    // Every episode checked before anything is stored: all or nothing.
    let mut ids = Vec::with_capacity(writes.len());
    for write in &writes {
        let new = &write.episode;
        check_session(&new.session)?;
        check_text("content", &new.content, MAX_CONTENT)?;
        check_unit("valence", new.valence)?;
        check_context(new)?;
        let id = given_id(write.id.as_deref())?;
        if id.is_some() && ids.contains(&id) {
            return Err(invalid("id", "two episodes of one call have the same id"));
        }
        ids.push(id);
    }
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    ensure_collection()?;
    // Given ids already stored (a retried batch): returned as stored, not written again.
    let given: Vec<String> = ids.iter().flatten().cloned().collect();
    let mut stored: HashMap<String, Episode> = HashMap::new();
    if !given.is_empty() {
        for point in vectors::get(Collection::Episodes, &given, false)? {
            let episode = Stored::new(&point.payload).episode(point.id.clone())?;
            stored.insert(point.id, episode);
        }
    }
    for (write, id) in writes.iter().zip(&ids) {
        if let Some(existing) = id.as_ref().and_then(|id| stored.get(id))
            && existing.session != write.episode.session
        {
            return Err(invalid("id", "the id is another session's episode"));
        }
    }
    let fresh: Vec<String> = writes
        .iter()
        .zip(&ids)
        .filter(|(_, id)| id.as_ref().is_none_or(|id| !stored.contains_key(id)))
        .map(|(write, _)| write.episode.content.clone())
        .collect();
    let mut vectors = embed_all(fresh)?.into_iter();
    let created_by = created_by();
    let mut heads: HashMap<String, Option<(String, i64)>> = HashMap::new();
    let (mut nodes, mut edges, mut points) = (Vec::new(), Vec::new(), Vec::new());
    let mut episodes = Vec::with_capacity(writes.len());
    for (write, id) in writes.into_iter().zip(ids) {
        if let Some(existing) = id.as_ref().and_then(|id| stored.get(id)) {
            episodes.push(existing.clone());
            continue;
        }
        let new = write.episode;
        let head = match heads.get(&new.session) {
            Some(head) => head.clone(),
            None => session_head(&new.session)?,
        };
        let id = id.unwrap_or_else(|| new_id(now));
        let vector = vectors
            .next()
            .ok_or_else(|| Error::Embedding("fewer vectors than episodes".to_owned()))?;
        let records = new_records(new, id, vector, head, created_by.clone(), now);
        nodes.push(records.node);
        edges.extend(records.edge);
        points.push(records.point);
        heads.insert(
            records.episode.session.clone(),
            Some((records.episode.id.clone(), records.sequence)),
        );
        episodes.push(records.episode);
    }
    // Graph first, the points last (as for one episode): visible to recall only once
    // all of it is stored.
    let created = points.len();
    if created > 0 {
        graph::upsert_graph(&nodes, &edges)?;
        vectors::upsert(Collection::Episodes, &points)?;
    }
    HEADS.with_borrow_mut(|known| {
        for (session, head) in heads {
            if let Some(head) = head {
                known.insert(session, head);
            }
        }
    });
    memory_span(MemoryOperation::Create, Collection::Episodes, None, created);
    add_span_attribute("episodes.created", created);
    add_span_attribute("episodes.existing", episodes.len() - created);
    Ok(episodes)
}

/// Hits as episodes, with their scores computed by `score_of`.
fn scored(
    hits: Vec<vectors::ScoredPoint>,
    score_of: impl Fn(f32, &Episode) -> ww_guest::episodic::EpisodeScore,
) -> Result<Vec<RecalledEpisode>, Error> {
    let _scoring = span("scoring_computation").attr("scoring.candidates", hits.len());
    hits.into_iter()
        .map(|hit| {
            let episode = Stored::new(&hit.payload).episode(hit.id)?;
            Ok(RecalledEpisode {
                score: score_of(hit.similarity, &episode),
                episode,
            })
        })
        .collect()
}

#[traced("episodic.recall", kind = Internal)]
fn recall(request: RecallRequest) -> Result<Vec<RecalledEpisode>, Error> {
    check_session(&request.session)?;
    check_text("query", &request.query, MAX_QUERY)?;
    check_page(request.limit, request.offset)?;
    if let (Some(start), Some(end)) = (request.time_start, request.time_end)
        && start > end
    {
        return Err(invalid("time_start", "must not be after time_end"));
    }
    add_span_attribute("session.id", request.session.clone());
    add_span_attribute("recall.limit", request.limit);
    add_span_attribute("recall.offset", request.offset);
    add_span_attribute("recall.query.length", request.query.len());
    ensure_collection()?;
    let vector = embed(&request.query)?;
    let mut must = vec![session_filter(&request.session)];
    must.extend(time_range(
        episode::EVENT_TIME,
        request.time_start,
        request.time_end,
    ));
    if let Some(outcome) = request.outcome {
        must.push(Condition::Equals(episode::text(
            episode::OUTCOME,
            episode::outcome_name(outcome),
        )));
    }
    must.push(Condition::Missing(episode::DUPLICATE_OF.to_owned()));
    let hits = vectors::search(&SearchRequest {
        collection: Collection::Episodes,
        vector,
        text: Some(request.query.clone()),
        filter: Filter {
            must,
            must_not: vec![],
        },
        limit: request.limit,
        offset: request.offset,
        rescore: Some(score::recall_formula(request.now)),
    })?;
    let now = request.now;
    let mut recalled = scored(hits, |cosine, e| {
        score::recall_score(cosine, e.event_time, now, e.outcome, e.valence)
    })?;
    reinforce(&mut recalled, now)?;
    link_to_writers(&recalled);
    memory_span(
        MemoryOperation::Search,
        Collection::Episodes,
        None,
        recalled.len(),
    );
    add_span_attribute("recall.results", recalled.len());
    if let Some(top) = recalled.first() {
        add_span_attribute("recall.top_score", top.score.total);
        add_span_attribute("recall.top_id", top.episode.id.clone());
    }
    Ok(recalled)
}

/// The recall's span links to the spans that stored what it returns, so a trace viewer
/// goes from the recall to the requests that wrote its memories.
fn link_to_writers(recalled: &[RecalledEpisode]) {
    for hit in recalled {
        if let Some(by) = &hit.episode.created_by {
            add_span_link(
                &by.trace_id,
                &by.span_id,
                vec![kv("ww.memory.id", hit.episode.id.clone())],
            );
        }
    }
}

/// Recall strengthens what it returns: access count +1, S ← S + 0.1·(2 − S), last access
/// now, all in one durable write. The store applies each change to the value it holds
/// (`change-payload`), so concurrent recalls of one episode all count; the episodes
/// returned show this recall's change applied to the values it read.
fn reinforce(recalled: &mut [RecalledEpisode], now: i64) -> Result<(), Error> {
    if recalled.is_empty() {
        return Ok(());
    }
    let (scale, offset) = score::REINFORCEMENT_AFFINE;
    let changes: Vec<PayloadChange> = recalled
        .iter_mut()
        .map(|hit| {
            let episode = &mut hit.episode;
            episode.access_count = episode.access_count.saturating_add(1);
            episode.stability = score::reinforce(episode.stability);
            episode.last_access = episode.last_access.max(now);
            PayloadChange {
                id: episode.id.clone(),
                changes: vec![
                    FieldChange::Add(IntegerChange {
                        name: episode::ACCESS_COUNT.to_owned(),
                        value: 1,
                    }),
                    FieldChange::Affine(AffineChange {
                        name: episode::STABILITY.to_owned(),
                        scale,
                        offset,
                    }),
                    FieldChange::Max(IntegerChange {
                        name: episode::LAST_ACCESS.to_owned(),
                        value: now,
                    }),
                ],
            }
        })
        .collect();
    vectors::change_payload(Collection::Episodes, &changes)?;
    add_span_event("episodes.reinforced", vec![kv("count", changes.len())]);
    Ok(())
}

#[traced("episodic.query_at_time", kind = Internal)]
fn query_at_time(request: PointInTimeRequest) -> Result<Vec<RecalledEpisode>, Error> {
    check_session(&request.session)?;
    check_text("query", &request.query, MAX_QUERY)?;
    check_page(request.limit, 0)?;
    check_unit("recency_weight", request.recency_weight)?;
    add_span_attribute("session.id", request.session.clone());
    add_span_attribute("recall.limit", request.limit);
    add_span_attribute("query.point_in_time", request.point_in_time);
    ensure_collection()?;
    let vector = embed(&request.query)?;
    let mut must = vec![session_filter(&request.session)];
    must.extend(time_range(
        episode::INGESTION_TIME,
        None,
        Some(request.point_in_time),
    ));
    must.push(Condition::Missing(episode::DUPLICATE_OF.to_owned()));
    let hits = vectors::search(&SearchRequest {
        collection: Collection::Episodes,
        vector,
        text: Some(request.query.clone()),
        filter: Filter {
            must,
            must_not: vec![],
        },
        limit: request.limit,
        offset: 0,
        rescore: Some(score::point_in_time_formula(
            request.point_in_time,
            request.recency_weight,
        )),
    })?;
    let (at, weight) = (request.point_in_time, request.recency_weight);
    let found = scored(hits, |cosine, e| {
        score::point_in_time_score(cosine, e.event_time, at, weight, e.outcome, e.valence)
    })?;
    link_to_writers(&found);
    memory_span(
        MemoryOperation::Search,
        Collection::Episodes,
        None,
        found.len(),
    );
    add_span_attribute("recall.results", found.len());
    if let Some(top) = found.first() {
        add_span_attribute("recall.top_score", top.score.total);
    }
    Ok(found)
}

#[traced("episodic.mark_important", kind = Internal)]
fn mark_important(
    session: String,
    id: String,
    new_valence: Option<f64>,
) -> Result<ValenceChange, Error> {
    check_session(&session)?;
    if let Some(valence) = new_valence {
        check_unit("new_valence", valence)?;
    }
    add_span_attribute("episode.id", id.clone());
    ensure_collection()?;
    let episode = fetch(&session, &id)?;
    let old = episode.valence;
    let new = new_valence.unwrap_or(old + 0.2).clamp(0.0, 1.0);
    memory_span(MemoryOperation::Update, Collection::Episodes, Some(&id), 1);
    let mut fields = vec![episode::number(episode::VALENCE, new)];
    fields.extend(trace_fields(episode::UPDATED, writing_span().as_ref()));
    vectors::update_payload(Collection::Episodes, &[PayloadUpdate { id, fields }])?;
    add_span_attribute("episode.valence.old", old);
    add_span_attribute("episode.valence.new", new);
    Ok(ValenceChange { old, new })
}

/// One episode as light consolidation sees it.
struct Candidate {
    id: String,
    event_time: i64,
    vector: Vec<f32>,
    quantized: Quantized,
}

fn candidate(point: StoredPoint) -> Result<(String, Candidate), Error> {
    let stored = Stored::new(&point.payload);
    let episode = stored.episode(point.id.clone())?;
    let vector = point.vector.ok_or_else(|| {
        Error::Storage("the store returned a point without its vector".to_owned())
    })?;
    Ok((
        episode.session,
        Candidate {
            id: point.id,
            event_time: episode.event_time,
            quantized: Quantized::new(&vector),
            vector,
        },
    ))
}

#[traced("episodic.consolidate_light", kind = Internal)]
fn consolidate_light() -> Result<LightReport, Error> {
    ensure_collection()?;
    let unmarked = Filter {
        must: vec![Condition::Missing(episode::DUPLICATE_OF.to_owned())],
        must_not: vec![],
    };
    let total = vectors::count(Collection::Episodes, &unmarked)?;
    let mut sessions: HashMap<String, Vec<Candidate>> = HashMap::new();
    let mut after = None;
    let mut examined = 0u64;
    loop {
        let page = vectors::scroll(
            Collection::Episodes,
            &unmarked,
            after.as_deref(),
            PAGE,
            true,
        )?;
        let last = page.last().map(|p| p.id.clone());
        for point in page {
            let (session, candidate) = candidate(point)?;
            sessions.entry(session).or_default().push(candidate);
            examined += 1;
        }
        report_progress(examined, total, "reading episodes");
        if cancelled() {
            // Duplicates found among part of the episodes could contradict what the
            // whole finds: nothing is marked.
            return Ok(stopped(examined, 0));
        }
        match last {
            Some(id) => after = Some(id),
            None => break,
        }
    }
    // Within each session, oldest first: an episode nearly identical to an earlier kept
    // one is marked as its duplicate.
    let writer = writing_span();
    let mut updates = Vec::new();
    for episodes in sessions.values_mut() {
        episodes.sort_by(|a, b| {
            a.event_time
                .cmp(&b.event_time)
                .then_with(|| a.id.cmp(&b.id))
        });
        let mut kept: Vec<&Candidate> = Vec::new();
        for episode in episodes.iter() {
            let duplicate = |original: &&&Candidate| {
                similar_at_least(
                    &original.quantized,
                    &original.vector,
                    &episode.quantized,
                    &episode.vector,
                    DUPLICATE_SIMILARITY,
                )
            };
            match kept.iter().find(duplicate) {
                Some(original) => updates.push(PayloadUpdate {
                    id: episode.id.clone(),
                    fields: [episode::text(episode::DUPLICATE_OF, &original.id)]
                        .into_iter()
                        .chain(trace_fields(episode::UPDATED, writer.as_ref()))
                        .collect(),
                }),
                None => kept.push(episode),
            }
        }
    }
    let mut marked = 0;
    for batch in updates.chunks(PAGE as usize) {
        if cancelled() {
            // Each batch stands on its own; the next run finds the rest.
            return Ok(stopped(examined, marked));
        }
        vectors::update_payload(Collection::Episodes, batch)?;
        marked += batch.len() as u64;
    }
    add_span_attribute("consolidation.examined", examined);
    add_span_attribute("consolidation.duplicates", updates.len());
    report_progress(examined, examined, "duplicates marked");
    Ok(LightReport {
        examined,
        marked_duplicates: updates.len() as u64,
    })
}

/// The report of a light consolidation that stopped at a step because its request was
/// cancelled.
fn stopped(examined: u64, marked_duplicates: u64) -> LightReport {
    add_span_attribute("consolidation.examined", examined);
    add_span_attribute("consolidation.duplicates", marked_duplicates);
    add_span_attribute("consolidation.cancelled", true);
    LightReport {
        examined,
        marked_duplicates,
    }
}

struct Episodic;

impl Guest for Episodic {
    fn create_episode(episode: NewEpisode, now: i64) -> Result<Episode, Error> {
        create(episode, now)
    }

    fn create_episodes(episodes: Vec<EpisodeWrite>, now: i64) -> Result<Vec<Episode>, Error> {
        create_many(episodes, now)
    }

    fn recall_episodes(request: RecallRequest) -> Result<Vec<RecalledEpisode>, Error> {
        recall(request)
    }

    fn query_at_time(request: PointInTimeRequest) -> Result<Vec<RecalledEpisode>, Error> {
        query_at_time(request)
    }

    fn mark_important(
        session: String,
        episode_id: String,
        new_valence: Option<f64>,
        _now: i64,
    ) -> Result<ValenceChange, Error> {
        mark_important(session, episode_id, new_valence)
    }

    fn consolidate_light(_now: i64) -> Result<LightReport, Error> {
        consolidate_light()
    }

    #[traced("episodic.reembed", kind = Internal)]
    fn reembed(
        after: Option<String>,
        limit: u32,
    ) -> Result<ww_guest::services::ReembedPage, Error> {
        // An episode is embedded from its content alone (as `create_episode` does).
        ww_service_common::reembed(Collection::Episodes, after, limit, |_, payload| {
            ww_service_common::Fields(payload).required_text(episode::CONTENT)
        })
    }
}

ww_guest::export_episodic!(Episodic);

// Writes that read before they write (a session's sequence, which this instance
// remembers; a valence raised from its old value; a batch's ids already stored) run one
// at a time on one instance;
// recalls run on any instance of the pool. A consolidation gets an instance of its own.
ww_guest::calls! {
    serial: ["create-episode", "create-episodes", "mark-important"],
    long_running: ["consolidate-light"],
}

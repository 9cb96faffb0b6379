//! Episodic operations (tools 1–4): input as the tools take it, output as they
//! return it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Memory, MemoryError, Millis, TraceRef, finite, format_time, now_ms, parse_time};
use crate::bindings::api::ww::memory::episodic as wit;
use crate::plugins::Request;

const EPISODIC: &str = "ww:memory/episodic@0.1.0";

/// How far (ms) an event time may lie in the future, tolerating clock skew.
const FUTURE_SKEW_MS: Millis = 5 * 60 * 1000;

/// How an episode went.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing to say (the default).
    #[default]
    Neutral,
    /// It worked.
    Success,
    /// It failed.
    Failure,
    /// Partly.
    Partial,
}

same_cases!(Outcome, wit::Outcome, Neutral, Success, Failure, Partial);

/// `create_episode` arguments.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEpisode {
    /// What happened.
    pub content: String,
    /// Where: `project`, `file`, `tool`, and any other string-valued keys.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// How it went (default neutral).
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Emotional weight in [0, 1] (default 0.5).
    #[serde(default)]
    pub valence: Option<f64>,
    /// When it happened, RFC 3339 (default now).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The episode's id, a UUID chosen by the caller (default: a new one). Storing an
    /// id that is already stored stores nothing and returns it (`existing`), so a
    /// retried call creates nothing twice.
    #[serde(default)]
    pub id: Option<String>,
}

/// Episodes per `create_episodes` call, at most (the episodic service's bound).
pub const MAX_EPISODES_PER_CALL: usize = 256;

/// `create_episodes` arguments.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEpisodes {
    /// The episodes, in the order they happened (at most 256), each as
    /// `create_episode` takes it.
    pub episodes: Vec<CreateEpisode>,
}

/// What `create_episodes` stored.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CreatedEpisodes {
    /// Episodes stored by this call.
    pub created: u32,
    /// Episodes whose id was already stored (not stored again).
    pub existing: u32,
    /// Every episode of the call, in its order.
    pub episodes: Vec<CreatedEpisode>,
}

/// `recall_episodes` arguments.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallEpisodes {
    /// What to recall.
    pub query: String,
    /// At most this many (default 10).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Skip this many of the best.
    #[serde(default)]
    pub offset: Option<u32>,
    /// Only episodes that happened at or after this time (RFC 3339).
    #[serde(default)]
    pub time_start: Option<String>,
    /// ... and at or before this one.
    #[serde(default)]
    pub time_end: Option<String>,
    /// Only episodes with this outcome.
    #[serde(default)]
    pub outcome: Option<Outcome>,
}

/// `query_at_time` arguments.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryAtTime {
    /// What to recall.
    pub query: String,
    /// The moment whose knowledge to query (RFC 3339).
    pub point_in_time: String,
    /// At most this many (default 10).
    #[serde(default)]
    pub limit: Option<u32>,
    /// w in (1 − w)·similarity + w·recency (default 0.3).
    #[serde(default)]
    pub recency_weight: Option<f64>,
}

/// `mark_important` arguments.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkImportant {
    /// The episode.
    pub episode_id: String,
    /// The valence to set; without it, it is raised by 0.2.
    #[serde(default)]
    pub new_valence: Option<f64>,
}

/// An episode as returned.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct EpisodeView {
    /// Its id.
    pub id: String,
    /// The session it belongs to.
    pub session: String,
    /// What happened.
    pub content: String,
    /// Where.
    pub context: BTreeMap<String, String>,
    /// How it went.
    pub outcome: Outcome,
    /// Emotional weight in [0, 1].
    pub valence: f64,
    /// When it happened (RFC 3339).
    pub event_time: String,
    /// When it was stored (RFC 3339).
    pub ingestion_time: String,
    /// Times recalled.
    pub access_count: u32,
    /// Memory stability, raised by each recall.
    pub stability: f64,
    /// Last recalled, or stored (RFC 3339).
    pub last_access: String,
    /// The session's previous episode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Marked by consolidation as a near-duplicate of this episode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    /// The span of the request that stored it, when that request was traced (sampled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by_trace: Option<TraceRef>,
    /// The span of the last request that changed it (`mark_important`, consolidation),
    /// when traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by_trace: Option<TraceRef>,
}

impl From<wit::Episode> for EpisodeView {
    fn from(e: wit::Episode) -> Self {
        let mut context: BTreeMap<String, String> = e.context.extra.into_iter().collect();
        for (key, value) in [
            ("project", e.context.project),
            ("file", e.context.file),
            ("tool", e.context.tool),
        ] {
            if let Some(value) = value {
                context.insert(key.to_owned(), value);
            }
        }
        Self {
            id: e.id,
            session: e.session,
            content: e.content,
            context,
            outcome: e.outcome.into(),
            valence: e.valence,
            event_time: format_time(e.event_time),
            ingestion_time: format_time(e.ingestion_time),
            access_count: e.access_count,
            stability: e.stability,
            last_access: format_time(e.last_access),
            previous: e.previous,
            duplicate_of: e.duplicate_of,
            created_by_trace: e.created_by.map(Into::into),
            updated_by_trace: e.updated_by.map(Into::into),
        }
    }
}

/// `create_episode` result.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CreatedEpisode {
    /// The new episode's id.
    pub id: String,
    /// Its session.
    pub session: String,
    /// When it happened (RFC 3339).
    pub event_time: String,
    /// When it was stored (RFC 3339).
    pub ingestion_time: String,
    /// The session's previous episode, now linked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Its id was stored already, by an earlier call: nothing was stored now. (Always
    /// present: the output schema requires every field that is not optional.)
    pub existing: bool,
}

impl CreatedEpisode {
    /// The view of `episode`, stored by a call made at `now`: one stored earlier was
    /// there already.
    fn of(episode: wit::Episode, now: Millis) -> Self {
        Self {
            existing: episode.ingestion_time < now,
            id: episode.id,
            session: episode.session,
            event_time: format_time(episode.event_time),
            ingestion_time: format_time(episode.ingestion_time),
            previous: episode.previous,
        }
    }
}

/// `input` as the episodic service takes it, for `session` at `now`; `field` prefixes
/// the names in its errors (`episodes[3].`).
fn new_episode(
    session: &str,
    input: CreateEpisode,
    now: Millis,
    field: &str,
) -> Result<wit::EpisodeWrite, MemoryError> {
    let named_field = |name: &str| format!("{field}{name}");
    finite(&named_field("valence"), input.valence)?;
    let event_time = optional_time(&named_field("timestamp"), &input.timestamp)?;
    if event_time.is_some_and(|t| t > now + FUTURE_SKEW_MS) {
        return Err(MemoryError::invalid(
            &named_field("timestamp"),
            "an episode cannot have happened in the future",
        ));
    }
    if let Some(id) = &input.id
        && uuid::Uuid::parse_str(id).is_err()
    {
        return Err(MemoryError::invalid(
            &named_field("id"),
            format!("{id:?} is not a UUID"),
        ));
    }
    let mut context = input.context;
    let named = |context: &mut BTreeMap<String, String>, key| context.remove(key);
    Ok(wit::EpisodeWrite {
        id: input.id,
        episode: wit::NewEpisode {
            session: session.to_owned(),
            content: input.content,
            context: wit::EpisodeContext {
                project: named(&mut context, "project"),
                file: named(&mut context, "file"),
                tool: named(&mut context, "tool"),
                extra: context.into_iter().collect(),
            },
            outcome: input.outcome.unwrap_or_default().into(),
            valence: input.valence.unwrap_or(0.5),
            event_time,
        },
    })
}

/// The parts of a recall score (each in [0, 1]) and the weighted total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ScoreView {
    /// Cosine similarity to the query, clamped to [0, 1].
    pub similarity: f64,
    /// e^(−0.1·days) from the event to now (or to the point in time).
    pub recency: f64,
    /// The outcome's weight: success 1.0, partial 0.5, neutral 0.3, failure 0.1.
    pub outcome: f64,
    /// The valence.
    pub valence: f64,
    /// The operation's weighted sum.
    pub total: f64,
}

/// One recalled episode.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RecalledEpisode {
    /// The episode (after this recall's reinforcement).
    pub episode: EpisodeView,
    /// Why it ranks where it does.
    pub score: ScoreView,
}

/// `recall_episodes` and `query_at_time` result, best first.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Recalled {
    /// The episodes.
    pub episodes: Vec<RecalledEpisode>,
    /// How many.
    pub count: usize,
}

impl From<Vec<wit::RecalledEpisode>> for Recalled {
    fn from(hits: Vec<wit::RecalledEpisode>) -> Self {
        let episodes: Vec<RecalledEpisode> = hits
            .into_iter()
            .map(|hit| RecalledEpisode {
                episode: hit.episode.into(),
                score: ScoreView {
                    similarity: hit.score.similarity,
                    recency: hit.score.recency,
                    outcome: hit.score.outcome,
                    valence: hit.score.valence,
                    total: hit.score.total,
                },
            })
            .collect();
        Self {
            count: episodes.len(),
            episodes,
        }
    }
}

/// `mark_important` result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ValenceChange {
    /// Before.
    pub old_valence: f64,
    /// After.
    pub new_valence: f64,
}

/// `consolidate_now` (light) counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LightReport {
    /// Episodes looked at.
    pub examined: u64,
    /// Newly marked near-duplicates.
    pub marked_duplicates: u64,
}

fn optional_time(field: &str, text: &Option<String>) -> Result<Option<Millis>, MemoryError> {
    text.as_deref().map(|t| parse_time(field, t)).transpose()
}

impl Memory {
    /// Store an episode in `session`: embedded, timed, linked to the session's previous one.
    pub async fn create_episode(
        &self,
        request: Request,
        session: &str,
        input: CreateEpisode,
    ) -> Result<CreatedEpisode, MemoryError> {
        let now = now_ms();
        let write = new_episode(session, input, now, "")?;
        if write.id.is_some() {
            // An id of the caller's: stored unless it is already (the batch's rule).
            let mut episodes: Vec<wit::Episode> = self
                .run(request, EPISODIC, "create-episodes", (vec![write], now))
                .await?;
            return episodes
                .pop()
                .map(|episode| CreatedEpisode::of(episode, now))
                .ok_or_else(|| MemoryError::invalid("id", "the episode was not stored"));
        }
        let episode: wit::Episode = self
            .run(request, EPISODIC, "create-episode", (write.episode, now))
            .await?;
        Ok(CreatedEpisode::of(episode, now))
    }

    /// `create_episodes`: up to [`MAX_EPISODES_PER_CALL`] episodes of `session`, each
    /// checked as `create_episode` checks one, embedded together and stored with one
    /// write per store.
    pub async fn create_episodes(
        &self,
        request: Request,
        session: &str,
        input: CreateEpisodes,
    ) -> Result<CreatedEpisodes, MemoryError> {
        if input.episodes.len() > MAX_EPISODES_PER_CALL {
            return Err(MemoryError::invalid(
                "episodes",
                format!(
                    "at most {MAX_EPISODES_PER_CALL} episodes per call, got {}",
                    input.episodes.len()
                ),
            ));
        }
        let now = now_ms();
        let writes = input
            .episodes
            .into_iter()
            .enumerate()
            .map(|(i, episode)| new_episode(session, episode, now, &format!("episodes[{i}].")))
            .collect::<Result<Vec<_>, _>>()?;
        let episodes: Vec<wit::Episode> = self
            .run(request, EPISODIC, "create-episodes", (writes, now))
            .await?;
        let episodes: Vec<CreatedEpisode> = episodes
            .into_iter()
            .map(|episode| CreatedEpisode::of(episode, now))
            .collect();
        let existing = episodes.iter().filter(|e| e.existing).count() as u32;
        Ok(CreatedEpisodes {
            created: episodes.len() as u32 - existing,
            existing,
            episodes,
        })
    }

    /// The session's episodes best matching `query` by the four-part score; each returned
    /// episode is reinforced.
    pub async fn recall_episodes(
        &self,
        request: Request,
        session: &str,
        input: RecallEpisodes,
    ) -> Result<Recalled, MemoryError> {
        let wit_request = wit::RecallRequest {
            session: session.to_owned(),
            query: input.query,
            limit: input.limit.unwrap_or(10),
            offset: input.offset.unwrap_or(0),
            time_start: optional_time("time_start", &input.time_start)?,
            time_end: optional_time("time_end", &input.time_end)?,
            outcome: input.outcome.map(Into::into),
            now: now_ms(),
        };
        let hits: Vec<wit::RecalledEpisode> = self
            .run(request, EPISODIC, "recall-episodes", (wit_request,))
            .await?;
        Ok(hits.into())
    }

    /// What the session knew at a point in time: only episodes stored by then. Read-only.
    pub async fn query_at_time(
        &self,
        request: Request,
        session: &str,
        input: QueryAtTime,
    ) -> Result<Recalled, MemoryError> {
        finite("recency_weight", input.recency_weight)?;
        let wit_request = wit::PointInTimeRequest {
            session: session.to_owned(),
            query: input.query,
            point_in_time: parse_time("point_in_time", &input.point_in_time)?,
            limit: input.limit.unwrap_or(10),
            recency_weight: input.recency_weight.unwrap_or(0.3),
        };
        let hits: Vec<wit::RecalledEpisode> = self
            .run(request, EPISODIC, "query-at-time", (wit_request,))
            .await?;
        Ok(hits.into())
    }

    /// Set an episode's valence, or raise it by 0.2.
    pub async fn mark_important(
        &self,
        request: Request,
        session: &str,
        input: MarkImportant,
    ) -> Result<ValenceChange, MemoryError> {
        finite("new_valence", input.new_valence)?;
        let change: wit::ValenceChange = self
            .run(
                request,
                EPISODIC,
                "mark-important",
                (
                    session.to_owned(),
                    input.episode_id,
                    input.new_valence,
                    now_ms(),
                ),
            )
            .await?;
        Ok(ValenceChange {
            old_valence: change.old,
            new_valence: change.new,
        })
    }

    /// Mark near-duplicate episodes (never deletes).
    pub async fn consolidate_light(&self, request: Request) -> Result<LightReport, MemoryError> {
        let report: wit::LightReport = self
            .run(request, EPISODIC, "consolidate-light", (now_ms(),))
            .await?;
        Ok(LightReport {
            examined: report.examined,
            marked_duplicates: report.marked_duplicates,
        })
    }
}

//! Semantic operations (tools 5–9 and 15).

use serde::{Deserialize, Serialize};

use super::{Memory, MemoryError, TraceRef, finite, format_time, now_ms, parse_time};
use crate::bindings::api::ww::memory::semantic as wit;
use crate::plugins::Request;

const SEMANTIC: &str = "ww:memory/semantic@0.1.0";

/// `spread_activation`'s defaults (the tool's description states them): three steps reach
/// friends of friends of friends; a node keeps half its activation each step, the factor
/// decays by a tenth per step, and activation under 1 % of a seed's is noise.
const SPREAD_STEPS: u32 = 3;
const SPREAD_RETENTION: f64 = 0.5;
const SPREAD_DECAY: f64 = 0.1;
const SPREAD_THRESHOLD: f64 = 0.01;
/// At most this many nodes come back: a graph walk must not answer with a whole graph.
const SPREAD_MAX_NODES: u32 = 1000;

/// What kind of thing an entity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum EntityType {
    Concept,
    Person,
    Project,
    Tool,
    Technique,
    Fact,
}

/// How two entities are related.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum RelationType {
    Uses,
    Produces,
    Requires,
    Causes,
    PartOf,
    SimilarTo,
    Implements,
    ImprovesOn,
}

same_cases!(
    EntityType,
    wit::EntityType,
    Concept,
    Person,
    Project,
    Tool,
    Technique,
    Fact
);
same_cases!(
    RelationType,
    wit::RelationType,
    Uses,
    Produces,
    Requires,
    Causes,
    PartOf,
    SimilarTo,
    Implements,
    ImprovesOn
);

/// `create_entity` arguments.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEntity {
    /// Its name; an active entity with the same name (any case) and type is returned.
    pub name: String,
    /// What kind of thing it is.
    pub entity_type: EntityType,
    /// What is known about it, in a sentence or two.
    pub summary: String,
    /// More.
    #[serde(default)]
    pub details: Option<String>,
    /// The id of the episode it was learnt from (provenance).
    #[serde(default)]
    pub source: Option<String>,
}

/// `create_relation` arguments.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRelation {
    /// From this entity ...
    pub source_id: String,
    /// ... to this one.
    pub target_id: String,
    /// How.
    pub relation_type: RelationType,
    /// Strength in (0, 1] (default 0.1).
    #[serde(default)]
    pub weight: Option<f64>,
}

/// `semantic_recall` arguments.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SemanticRecall {
    /// What to recall.
    pub query: String,
    /// Entities the agent is thinking about: their neighbours gain activation.
    #[serde(default)]
    pub context_entities: Vec<String>,
    /// At most this many (default 10).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `spread_activation` arguments.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpreadActivation {
    /// Where activation starts (1.0 each).
    pub seed_entities: Vec<String>,
    /// Steps (default 3).
    #[serde(default)]
    pub steps: Option<u32>,
    /// Share a node keeps each step (default 0.5).
    #[serde(default)]
    pub retention: Option<f64>,
    /// Per-step decay of the factor (default 0.1).
    #[serde(default)]
    pub decay: Option<f64>,
    /// Activation below which a node drops out (default 0.01).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Nodes kept at most (default 1000).
    #[serde(default)]
    pub max_nodes: Option<u32>,
}

/// `supersede_fact` arguments.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SupersedeFact {
    /// The entity whose fact changed.
    pub entity_id: String,
    /// What is true now.
    pub new_summary: String,
    /// More.
    #[serde(default)]
    pub new_details: Option<String>,
    /// From when (RFC 3339; default now).
    #[serde(default)]
    pub valid_from: Option<String>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `get_provenance` arguments.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetProvenance {
    /// The entity.
    pub entity_id: String,
}

/// An entity as returned.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct EntityView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub entity_type: EntityType,
    /// What is known.
    pub summary: String,
    /// More.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// The session it came from.
    pub session: String,
    /// Valid from (RFC 3339).
    pub valid_from: String,
    /// Valid until, once superseded (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<String>,
    /// Its successor, once superseded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// Times recalled.
    pub access_count: u32,
    /// Last recalled, or created (RFC 3339).
    pub last_access: String,
    /// Memory stability.
    pub stability: f64,
    /// Created (RFC 3339).
    pub created: String,
    /// The span of the request that stored it, when that request was traced (sampled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by_trace: Option<TraceRef>,
    /// The span of the last request that changed it, when traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by_trace: Option<TraceRef>,
}

impl From<wit::Entity> for EntityView {
    fn from(e: wit::Entity) -> Self {
        Self {
            id: e.id,
            name: e.name,
            entity_type: e.entity_type.into(),
            summary: e.summary,
            details: e.details,
            session: e.session,
            valid_from: format_time(e.valid_from),
            valid_to: e.valid_to.map(format_time),
            superseded_by: e.superseded_by,
            access_count: e.access_count,
            last_access: format_time(e.last_access),
            stability: e.stability,
            created: format_time(e.created),
            created_by_trace: e.created_by.map(Into::into),
            updated_by_trace: e.updated_by.map(Into::into),
        }
    }
}

/// `create_entity` result.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CreatedEntity {
    /// The entity (new, or the existing one of that name and type).
    pub entity: EntityView,
    /// Whether it was created now.
    pub created: bool,
}

/// A relation as stored.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RelationView {
    /// From.
    pub source_id: String,
    /// To.
    pub target_id: String,
    /// How.
    pub relation_type: RelationType,
    /// Strength.
    pub weight: f64,
    /// The span of the request that stored it, when that request was traced (sampled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by_trace: Option<TraceRef>,
}

/// The parts of an entity's recall score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct EntityScoreView {
    /// Cosine similarity to the query, clamped to [0, 1].
    pub similarity: f64,
    /// A (before the sigmoid).
    pub activation: f64,
    /// R = 0.9^(days since access / stability).
    pub retrievability: f64,
    /// 0.40·similarity + 0.35·sigmoid(A) + 0.25·R.
    pub total: f64,
}

/// One recalled entity.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RecalledEntity {
    /// The entity (after this recall's reinforcement).
    pub entity: EntityView,
    /// Why it ranks where it does.
    pub score: EntityScoreView,
}

/// `semantic_recall` result, best first.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RecalledEntities {
    /// The entities.
    pub entities: Vec<RecalledEntity>,
    /// How many.
    pub count: usize,
}

/// One node's activation.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ActivationView {
    /// The entity.
    pub entity_id: String,
    /// Its activation.
    pub activation: f64,
}

/// `spread_activation` result.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Spread {
    /// Highest first.
    pub activations: Vec<ActivationView>,
    /// Whether `max_nodes` cut nodes off.
    pub truncated: bool,
}

/// `supersede_fact` result.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Supersession {
    /// The old version, now closed.
    pub old: EntityView,
    /// The new version.
    pub new: EntityView,
    /// Active relations copied to the new version.
    pub relations_carried: u32,
}

/// `get_provenance` result.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ProvenanceView {
    /// The entity.
    pub entity: EntityView,
    /// Episodes it was created from.
    pub source_episodes: Vec<String>,
    /// Older versions, nearest first.
    pub supersedes: Vec<String>,
    /// Newer versions, nearest first.
    pub superseded_by: Vec<String>,
    /// Episodes a deep consolidation built it from.
    pub consolidated_from: Vec<String>,
}

/// Deep consolidation counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DeepReport {
    /// Episodes looked at.
    pub episodes_examined: u64,
    /// Clusters of at least 3 similar episodes.
    pub clusters: u64,
    /// Entities created from clusters.
    pub entities_created: u64,
    /// Existing entities given new source episodes.
    pub entities_updated: u64,
}

impl Memory {
    /// Create an entity, or return the active one of that name and type.
    pub async fn create_entity(
        &self,
        request: Request,
        session: &str,
        input: CreateEntity,
    ) -> Result<CreatedEntity, MemoryError> {
        let new = wit::NewEntity {
            session: session.to_owned(),
            name: input.name,
            entity_type: input.entity_type.into(),
            summary: input.summary,
            details: input.details,
            source: input.source,
        };
        let created: wit::CreatedEntity = self
            .run(request, SEMANTIC, "create-entity", (new, now_ms()))
            .await?;
        Ok(CreatedEntity {
            entity: created.entity.into(),
            created: created.created,
        })
    }

    /// Relate two active entities.
    pub async fn create_relation(
        &self,
        request: Request,
        input: CreateRelation,
    ) -> Result<RelationView, MemoryError> {
        finite("weight", input.weight)?;
        let relation = wit::Relation {
            source_id: input.source_id,
            target_id: input.target_id,
            relation_type: input.relation_type.into(),
            weight: input.weight.unwrap_or(0.1),
            // Only the service's own span says who wrote it.
            created_by: None,
        };
        let stored: wit::Relation = self
            .run(request, SEMANTIC, "create-relation", (relation, now_ms()))
            .await?;
        Ok(RelationView {
            source_id: stored.source_id,
            target_id: stored.target_id,
            relation_type: stored.relation_type.into(),
            weight: stored.weight,
            created_by_trace: stored.created_by.map(Into::into),
        })
    }

    /// Currently valid entities by similarity, activation and retrievability.
    pub async fn semantic_recall(
        &self,
        request: Request,
        input: SemanticRecall,
    ) -> Result<RecalledEntities, MemoryError> {
        let wit_request = wit::RecallRequest {
            query: input.query,
            context_entities: input.context_entities,
            limit: input.limit.unwrap_or(10),
            now: now_ms(),
        };
        let hits: Vec<wit::RecalledEntity> = self
            .run(request, SEMANTIC, "semantic-recall", (wit_request,))
            .await?;
        let entities: Vec<RecalledEntity> = hits
            .into_iter()
            .map(|hit| RecalledEntity {
                entity: hit.entity.into(),
                score: EntityScoreView {
                    similarity: hit.score.similarity,
                    activation: hit.score.activation,
                    retrievability: hit.score.retrievability,
                    total: hit.score.total,
                },
            })
            .collect();
        Ok(RecalledEntities {
            count: entities.len(),
            entities,
        })
    }

    /// Spread activation from seed entities. Read-only.
    pub async fn spread_activation(
        &self,
        request: Request,
        input: SpreadActivation,
    ) -> Result<Spread, MemoryError> {
        for (field, value) in [
            ("retention", input.retention),
            ("decay", input.decay),
            ("threshold", input.threshold),
        ] {
            finite(field, value)?;
        }
        let wit_request = wit::SpreadRequest {
            seeds: input.seed_entities,
            steps: input.steps.unwrap_or(SPREAD_STEPS),
            retention: input.retention.unwrap_or(SPREAD_RETENTION),
            decay: input.decay.unwrap_or(SPREAD_DECAY),
            threshold: input.threshold.unwrap_or(SPREAD_THRESHOLD),
            max_nodes: input.max_nodes.unwrap_or(SPREAD_MAX_NODES),
        };
        let result: wit::SpreadResult = self
            .run(request, SEMANTIC, "spread-activation", (wit_request,))
            .await?;
        Ok(Spread {
            activations: result
                .activations
                .into_iter()
                .map(|a| ActivationView {
                    entity_id: a.entity_id,
                    activation: a.value,
                })
                .collect(),
            truncated: result.truncated,
        })
    }

    /// Close an entity's validity and start a new version.
    pub async fn supersede_fact(
        &self,
        request: Request,
        session: &str,
        input: SupersedeFact,
    ) -> Result<Supersession, MemoryError> {
        let valid_from = input
            .valid_from
            .as_deref()
            .map(|t| parse_time("valid_from", t))
            .transpose()?;
        let wit_request = wit::SupersedeRequest {
            session: session.to_owned(),
            entity_id: input.entity_id,
            new_summary: input.new_summary,
            new_details: input.new_details,
            valid_from,
            reason: input.reason,
        };
        let done: wit::Supersession = self
            .run(request, SEMANTIC, "supersede-fact", (wit_request, now_ms()))
            .await?;
        Ok(Supersession {
            old: done.old.into(),
            new: done.new.into(),
            relations_carried: done.relations_carried,
        })
    }

    /// Where an entity came from, and its versions.
    pub async fn get_provenance(
        &self,
        request: Request,
        input: GetProvenance,
    ) -> Result<ProvenanceView, MemoryError> {
        let p: wit::Provenance = self
            .run(request, SEMANTIC, "get-provenance", (input.entity_id,))
            .await?;
        Ok(ProvenanceView {
            entity: p.entity.into(),
            source_episodes: p.source_episodes,
            supersedes: p.supersedes,
            superseded_by: p.superseded_by,
            consolidated_from: p.consolidated_from,
        })
    }

    /// Clusters of similar episodes become entities.
    pub async fn consolidate_deep(&self, request: Request) -> Result<DeepReport, MemoryError> {
        let r: wit::DeepReport = self
            .run(request, SEMANTIC, "consolidate-deep", (now_ms(),))
            .await?;
        Ok(DeepReport {
            episodes_examined: r.episodes_examined,
            clusters: r.clusters,
            entities_created: r.entities_created,
            entities_updated: r.entities_updated,
        })
    }
}

//! The 17 memory tools: names, descriptions, schemas and annotations, and the one
//! dispatch from a tool name and JSON arguments to the host API (used by the MCP gateway
//! and by `ww-memory call`).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::memory::*;
use crate::plugins::Request;
use crate::session::Session;
use opentelemetry::KeyValue;

/// `error.type` of a tool call that failed: its result is an error result (`isError`).
pub const TOOL_ERROR: &str = "tool_error";

/// A tool without arguments still refuses unknown ones.
#[derive(serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArguments {}

/// One tool as listed.
pub struct ToolSpec {
    /// Its name.
    pub name: &'static str,
    /// What it does, for an agent deciding whether to call it.
    pub description: &'static str,
    /// Whether it changes nothing.
    pub read_only: bool,
    /// JSON Schema of its arguments.
    pub input: fn() -> Value,
    /// JSON Schema of its result.
    pub output: fn() -> Value,
}

fn schema<T: JsonSchema>() -> Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .with_transform(schemars::transform::RecursiveTransform(plain_numbers))
        .into_generator()
        .into_root_schema_for::<T>();
    serde_json::to_value(schema).unwrap_or(Value::Null)
}

/// Plain JSON Schema for numbers. schemars marks Rust's number types with formats of its
/// own (`uint32`, `int64`, `double`, ...) that JSON Schema does not define, so validators
/// ignore them and some warn at each (the MCP Inspector prints one line per use); what
/// they meant is said with `minimum` / `maximum` instead, where it fits in a JSON number
/// every client reads exactly.
fn plain_numbers(schema: &mut schemars::Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let range: (Option<i64>, Option<i64>) = match object.get("format").and_then(Value::as_str) {
        Some("uint8") => (Some(0), Some(u8::MAX.into())),
        Some("uint16") => (Some(0), Some(u16::MAX.into())),
        Some("uint32") => (Some(0), Some(u32::MAX.into())),
        Some("uint64" | "uint128" | "uint") => (Some(0), None),
        Some("int8") => (Some(i8::MIN.into()), Some(i8::MAX.into())),
        Some("int16") => (Some(i16::MIN.into()), Some(i16::MAX.into())),
        Some("int32") => (Some(i32::MIN.into()), Some(i32::MAX.into())),
        Some("int64" | "int128" | "int" | "float" | "double") => (None, None),
        _ => return,
    };
    object.remove("format");
    for (keyword, bound) in [("minimum", range.0), ("maximum", range.1)] {
        if let Some(bound) = bound {
            object.entry(keyword).or_insert(bound.into());
        }
    }
}

macro_rules! tool {
    ($name:literal, $input:ty => $output:ty, read_only: $ro:expr, $description:literal) => {
        ToolSpec {
            name: $name,
            description: $description,
            read_only: $ro,
            input: schema::<$input>,
            output: schema::<$output>,
        }
    };
}

/// Every tool, in the order the README lists them.
pub static TOOLS: [ToolSpec; 18] = [
    tool!("create_episode", CreateEpisode => CreatedEpisode, read_only: false,
        "Remember something that happened in this session: what, where (context: project, file, tool, ...), how it went (outcome) and how much it matters (valence 0-1). Returns the new episode's id and times. An id of your own (a UUID) makes a retry safe: an id already stored is not stored again."),
    tool!("create_episodes", CreateEpisodes => CreatedEpisodes, read_only: false,
        "Remember up to 256 things that happened in this session at once (an agent's history, a conversation's turns), in the order they happened, each as create_episode takes it. Faster than one call each: they are embedded together and stored with one write. All or nothing: one invalid episode fails the call. Episodes with an id already stored are not stored again."),
    tool!("recall_episodes", RecallEpisodes => Recalled, read_only: false,
        "Recall this session's episodes most relevant to a query, ranked by 0.40 similarity + 0.25 recency + 0.20 outcome + 0.15 valence, each with its score parts. Optional time window and outcome filter. Recalling strengthens what is returned."),
    tool!("query_at_time", QueryAtTime => Recalled, read_only: true,
        "What this session knew at a past moment: only episodes stored by then, ranked by similarity and closeness in time to that moment. Changes nothing."),
    tool!("mark_important", MarkImportant => ValenceChange, read_only: false,
        "Raise an episode's importance (valence) by 0.2, or set it to a value in [0, 1]. Returns the old and new valence."),
    tool!("create_entity", CreateEntity => CreatedEntity, read_only: false,
        "Record a fact about a concept, person, project, tool, technique or fact. An active entity with the same name and type is returned instead of a duplicate. `source` links the episode it was learnt from."),
    tool!("create_relation", CreateRelation => RelationView, read_only: false,
        "Relate two entities (USES, PRODUCES, REQUIRES, CAUSES, PART_OF, SIMILAR_TO, IMPLEMENTS, IMPROVES_ON) with a weight in (0, 1]. Cycles of PART_OF, REQUIRES, CAUSES or IMPROVES_ON are refused."),
    tool!("semantic_recall", SemanticRecall => RecalledEntities, read_only: false,
        "Recall currently valid entities relevant to a query, ranked by similarity, activation (use, recency, links to the context entities given) and retrievability. Returned entities count as used."),
    tool!("spread_activation", SpreadActivation => Spread, read_only: true,
        "Find what is associated with some entities: activation spreads from the seeds along relations for a few steps. Returns activations, highest first. Changes nothing."),
    tool!("supersede_fact", SupersedeFact => Supersession, read_only: false,
        "Record that a fact changed: the entity's validity ends, a new version starts with the new summary, relations carry over, and both stay in the provenance."),
    tool!("create_skill", CreateSkill => CreatedSkill, read_only: false,
        "Learn a skill from a trajectory that worked (outcome score >= 0.7): its ordered steps, domain and trigger. Below 0.7 nothing is stored and the result says why."),
    tool!("recall_skill", RecallSkill => RecalledSkills, read_only: true,
        "Find skills for a task, ranked by 0.6 similarity + 0.3 success rate + 0.1 experience; deprecated skills only when asked. Changes nothing."),
    tool!("execute_skill", ExecuteSkill => ExecutionView, read_only: false,
        "Record the outcome of running a skill (this runs nothing). Updates its success rate; more than 10 runs under 30% success deprecate it."),
    tool!("deprecate_skill", DeprecateSkill => SkillView, read_only: false,
        "Mark a skill as no longer recommended, optionally naming its replacement. Doing it twice changes nothing more."),
    tool!("consolidate_now", ConsolidateNow => ConsolidationReport, read_only: false,
        "Consolidate memory now: light marks near-duplicate episodes, deep turns clusters of similar episodes into entities, skill merges similar skills, all does the three. Reports progress when asked."),
    tool!("get_provenance", GetProvenance => ProvenanceView, read_only: true,
        "Where an entity came from: its source episodes, the episodes consolidation built it from, and its older and newer versions."),
    tool!("get_session_id", NoArguments => SessionInfo, read_only: true,
        "This connection's session id, the server's name and version, and the MCP protocol version in use."),
    tool!("memory_stats", MemoryStatsArgs => MemoryStats, read_only: true,
        "What is stored (per collection and node label), each store's health and latency, and the tracing pipeline's state (exporter, spans exported and dropped)."),
];

/// The tool called `name`.
pub fn find(name: &str) -> Option<&'static ToolSpec> {
    TOOLS.iter().find(|t| t.name == name)
}

fn json<T: Serialize>(value: T) -> Result<Value, Failure> {
    serde_json::to_value(value)
        .map_err(|e| Failure::Served(MemoryError::invalid("result", e.to_string())))
}

/// Who is calling: the session the connection is bound to and, over MCP, the protocol
/// version it negotiated.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    /// The session.
    pub session: &'a Session,
    /// The negotiated MCP protocol version.
    pub protocol_version: Option<&'a str>,
    /// The HTTP transport's sessions (none on stdio).
    pub sessions: Option<&'a super::sessions::Sessions>,
}

/// Call tool `name` with JSON `args` as the request `request` for `caller`.
pub async fn call(
    memory: &Memory,
    request: Request,
    caller: Caller<'_>,
    name: &str,
    args: Value,
) -> Result<Value, MemoryError> {
    // A failed tool call is an error result (`isError`), not a protocol error: the
    // root span says so the way MCP's semantic conventions have it.
    let request = request.with_failure_attribute(KeyValue::new("error.type", TOOL_ERROR));
    match dispatch(memory, request.clone(), caller, name, args).await {
        Ok(value) => Ok(value),
        Err(Failure::Served(error)) => Err(error),
        // Refused before any component ran: the call still gets its (failed) span and
        // its place in the metrics.
        Err(Failure::Refused(error)) => {
            memory.reject(request, &error);
            Err(error)
        }
    }
}

/// How a call failed: refused with its arguments, or served and failed.
enum Failure {
    Refused(MemoryError),
    Served(MemoryError),
}

impl From<MemoryError> for Failure {
    fn from(error: MemoryError) -> Self {
        Failure::Served(error)
    }
}

fn parse<T: serde::de::DeserializeOwned>(args: Value) -> Result<T, Failure> {
    arguments(args).map_err(Failure::Refused)
}

async fn dispatch(
    memory: &Memory,
    request: Request,
    caller: Caller<'_>,
    name: &str,
    args: Value,
) -> Result<Value, Failure> {
    let (m, r, session) = (memory, request, &*caller.session.id);
    match name {
        "create_episode" => json(m.create_episode(r, session, parse(args)?).await?),
        "create_episodes" => json(m.create_episodes(r, session, parse(args)?).await?),
        "recall_episodes" => json(m.recall_episodes(r, session, parse(args)?).await?),
        "query_at_time" => json(m.query_at_time(r, session, parse(args)?).await?),
        "mark_important" => json(m.mark_important(r, session, parse(args)?).await?),
        "create_entity" => json(m.create_entity(r, session, parse(args)?).await?),
        "create_relation" => json(m.create_relation(r, parse(args)?).await?),
        "semantic_recall" => json(m.semantic_recall(r, parse(args)?).await?),
        "spread_activation" => json(m.spread_activation(r, parse(args)?).await?),
        "supersede_fact" => json(m.supersede_fact(r, session, parse(args)?).await?),
        "create_skill" => json(m.create_skill(r, session, parse(args)?).await?),
        "recall_skill" => json(m.recall_skill(r, parse(args)?).await?),
        "execute_skill" => json(m.execute_skill(r, parse(args)?).await?),
        "deprecate_skill" => json(m.deprecate_skill(r, parse(args)?).await?),
        "consolidate_now" => json(m.consolidate_now(r, parse(args)?).await?),
        "get_provenance" => json(m.get_provenance(r, parse(args)?).await?),
        "get_session_id" => {
            parse::<NoArguments>(args)?;
            json(m.get_session_id(r, caller.session, caller.protocol_version))
        }
        "memory_stats" => {
            let mut stats = m.memory_stats(r, parse(args)?).await?;
            stats.sessions = caller.sessions.map(super::sessions::Sessions::stats);
            json(stats)
        }
        other => {
            let names: Vec<&str> = TOOLS.iter().map(|t| t.name).collect();
            Err(Failure::Refused(MemoryError::invalid(
                "tool",
                format!("no tool {other}; the tools are: {}", names.join(", ")),
            )))
        }
    }
}

/// The tools as an `Arc` list, built once.
pub fn catalog() -> Arc<Vec<rmcp::model::Tool>> {
    Arc::new(
        TOOLS
            .iter()
            .map(|t| {
                let object = |v: Value| match v {
                    Value::Object(map) => Arc::new(map),
                    _ => Arc::new(serde_json::Map::new()),
                };
                let mut annotations = rmcp::model::ToolAnnotations::new();
                annotations.read_only_hint = Some(t.read_only);
                annotations.destructive_hint = Some(false);
                annotations.open_world_hint = Some(false);
                rmcp::model::Tool::new(t.name, t.description, object((t.input)()))
                    .with_raw_output_schema(object((t.output)()))
                    .with_annotations(annotations)
            })
            .collect(),
    )
}

/// The query text of a tool that searches memory (`gen_ai.memory.query.text`), when the
/// arguments carry one.
pub fn search_query(
    tool: &str,
    arguments: Option<&serde_json::Map<String, Value>>,
) -> Option<String> {
    let field = match tool {
        "recall_episodes" | "query_at_time" | "semantic_recall" => "query",
        "recall_skill" => "task",
        _ => return None,
    };
    arguments?.get(field)?.as_str().map(str::to_owned)
}

//! Procedural memory (tools 10–13): a skill is a point in `ww_procedures` (the
//! embedding of its name, domain, trigger and actions, and every field) and a node in the
//! graph (for `merged-into` links and the episodes its runs came from).

use serde::{Deserialize, Serialize};
use ww_guest::procedural::{
    CreateOutcome, Execution, ExecutionResult, Guest, NewSkill, RecallRequest, RecalledSkill,
    Skill, SkillReport, SkillScore, Step, TraceRef,
};
use ww_guest::services::graph_store::{self as graph, Edge, Node, NodeLabel};
use ww_guest::services::vector_store::{
    self as vectors, Collection, PayloadUpdate, Point, Rescore, ScoreTerm, SearchRequest,
};
use ww_guest::services::{Condition, Error, Field, FieldValue, Filter};
use ww_guest::{
    add_span_attribute, add_span_event, add_span_link, cancelled, kv, report_progress, traced,
};
use ww_service_common::{
    Fields, MemoryOperation, Quantized, check_id, check_optional, check_text, check_unit, embed,
    equals, flag, integer, invalid, memory_span, new_id, number, similar_at_least, text,
    trace_fields, writing_span,
};

/// Below this outcome a trajectory is not worth keeping.
const MIN_OUTCOME: f64 = 0.7;
/// More runs than this with a success rate under `DEPRECATE_RATE` deprecates a skill.
const DEPRECATE_RUNS: u32 = 10;
const DEPRECATE_RATE: f64 = 0.3;
/// Skills at least this similar merge in consolidation.
const MERGE_SIMILARITY: f32 = 0.85;
/// A recalled skill's score: similarity to the task, success rate and experience, in
/// these shares (they sum to one, so a score stays in [0, 1]).
const W_SIMILARITY: f64 = 0.6;
const W_SUCCESS: f64 = 0.3;
const W_EXPERIENCE: f64 = 0.1;
/// Steps in one trajectory: a procedure, not a log.
const MAX_STEPS: usize = 200;
/// Skills one recall returns at most.
const MAX_LIMIT: u32 = 100;
/// Points per store page when consolidation walks every skill.
const PAGE: u32 = 1_000;
/// Names, domains and tool names, in bytes: a label, not a text.
const MAX_LABEL: usize = 200;
/// An action or a trigger pattern, in bytes: one line of instruction.
const MAX_LINE: usize = 1_000;
/// A step's parameters and result, or a task to recall for, in bytes: room for JSON
/// arguments or a paragraph, not a document.
const MAX_TEXT: usize = 10_000;

const NAME: &str = "name";
const DOMAIN: &str = "domain";
const TRIGGER: &str = "trigger_pattern";
const STEPS: &str = "steps";
const SUCCESS_RATE: &str = "success_rate";
const SUCCESSES: &str = "successes";
const EXECUTIONS: &str = "executions";
/// min(executions / 10, 1), stored so the store can rank by it.
const EXPERIENCE: &str = "experience";
const VERSION: &str = "version";
const DEPRECATED: &str = "deprecated";
const DEPRECATION_REASON: &str = "deprecation_reason";
const REPLACED_BY: &str = "replaced_by";
const SESSION: &str = "session";
const CREATED: &str = "created";
const LAST_RUN: &str = "last_run";

fn ensure_collection() -> Result<(), Error> {
    ww_service_common::ensure_collection(Collection::Procedures)
}

/// A step as kept in the `steps` field (one JSON document for the ordered list).
#[derive(Serialize, Deserialize)]
struct StoredStep {
    action: String,
    tool: Option<String>,
    parameters: Option<String>,
    result: Option<String>,
}

fn experience(executions: u32) -> f64 {
    (f64::from(executions) / 10.0).min(1.0)
}

fn payload(skill: &Skill, successes: u32) -> Result<Vec<Field>, Error> {
    let steps: Vec<StoredStep> = skill
        .steps
        .iter()
        .map(|s| StoredStep {
            action: s.action.clone(),
            tool: s.tool.clone(),
            parameters: s.parameters.clone(),
            result: s.result.clone(),
        })
        .collect();
    let steps = serde_json::to_string(&steps).map_err(|e| Error::Storage(e.to_string()))?;
    let mut fields = vec![
        text(NAME, &skill.name),
        text(DOMAIN, &skill.domain),
        text(STEPS, steps),
        number(SUCCESS_RATE, skill.success_rate),
        integer(SUCCESSES, i64::from(successes)),
        integer(EXECUTIONS, i64::from(skill.executions)),
        number(EXPERIENCE, experience(skill.executions)),
        integer(VERSION, i64::from(skill.version)),
        flag(DEPRECATED, skill.deprecated),
        text(SESSION, &skill.session),
        integer(CREATED, skill.created),
    ];
    for (name, value) in [
        (TRIGGER, &skill.trigger_pattern),
        (DEPRECATION_REASON, &skill.deprecation_reason),
        (REPLACED_BY, &skill.replaced_by),
    ] {
        if let Some(value) = value {
            fields.push(text(name, value));
        }
    }
    if let Some(last_run) = skill.last_run {
        fields.push(integer(LAST_RUN, last_run));
    }
    for (prefix, by) in [
        (CREATED_BY, &skill.created_by),
        (UPDATED_BY, &skill.updated_by),
    ] {
        let span = by.as_ref().map(|t| (t.trace_id.clone(), t.span_id.clone()));
        fields.extend(trace_fields(prefix, span.as_ref()));
    }
    Ok(fields)
}

/// The prefixes of the spans that stored and last changed a skill.
const CREATED_BY: &str = "created";
const UPDATED_BY: &str = "updated";

/// The span writing now, as a skill records it.
fn writer() -> Option<TraceRef> {
    writing_span().map(|(trace_id, span_id)| TraceRef { trace_id, span_id })
}

fn trace_of(fields: &Fields<'_>, prefix: &str) -> Option<TraceRef> {
    fields
        .trace(prefix)
        .map(|(trace_id, span_id)| TraceRef { trace_id, span_id })
}

/// A skill and its success count, read back.
fn from_payload(id: String, payload: &[Field]) -> Result<(Skill, u32), Error> {
    let f = Fields(payload);
    let steps: Vec<StoredStep> = serde_json::from_str(&f.required_text(STEPS)?)
        .map_err(|e| Error::Storage(format!("a stored skill's steps are unreadable: {e}")))?;
    let count = |name| {
        f.integer(name)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    Ok((
        Skill {
            id,
            name: f.required_text(NAME)?,
            domain: f.required_text(DOMAIN)?,
            trigger_pattern: f.text(TRIGGER),
            steps: steps
                .into_iter()
                .map(|s| Step {
                    action: s.action,
                    tool: s.tool,
                    parameters: s.parameters,
                    result: s.result,
                })
                .collect(),
            success_rate: f.number(SUCCESS_RATE)?,
            executions: count(EXECUTIONS)?,
            version: count(VERSION)?,
            deprecated: f.flag(DEPRECATED),
            deprecation_reason: f.text(DEPRECATION_REASON),
            replaced_by: f.text(REPLACED_BY),
            session: f.required_text(SESSION)?,
            created: f.integer(CREATED)?,
            created_by: trace_of(&f, CREATED_BY),
            updated_by: trace_of(&f, UPDATED_BY),
            last_run: f.optional_integer(LAST_RUN),
        },
        count(SUCCESSES)?,
    ))
}

fn get(id: &str) -> Result<(Skill, u32), Error> {
    let point = vectors::get(Collection::Procedures, &[id.to_owned()], false)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound(format!("no skill {id}")))?;
    from_payload(point.id, &point.payload)
}

/// Write a changed skill, recording this request's span as the last to change it.
fn save(skill: &mut Skill, successes: u32) -> Result<(), Error> {
    if let Some(by) = writer() {
        skill.updated_by = Some(by);
    }
    vectors::update_payload(
        Collection::Procedures,
        &[PayloadUpdate {
            id: skill.id.clone(),
            fields: payload(skill, successes)?,
        }],
    )
}

fn embedding_text(skill: &Skill) -> String {
    let actions: Vec<&str> = skill.steps.iter().map(|s| s.action.as_str()).collect();
    format!(
        "{}. {}. {}. {}",
        skill.name,
        skill.domain,
        skill.trigger_pattern.as_deref().unwrap_or(""),
        actions.join("; ")
    )
}

fn check_steps(steps: &[Step]) -> Result<(), Error> {
    if steps.is_empty() || steps.len() > MAX_STEPS {
        return Err(invalid(
            "trajectory",
            format!("give 1 to {MAX_STEPS} steps"),
        ));
    }
    for step in steps {
        check_text("trajectory.action", &step.action, MAX_LINE)?;
        check_optional("trajectory.tool", step.tool.as_deref(), MAX_LABEL)?;
        check_optional(
            "trajectory.parameters",
            step.parameters.as_deref(),
            MAX_TEXT,
        )?;
        check_optional("trajectory.result", step.result.as_deref(), MAX_TEXT)?;
    }
    Ok(())
}

#[traced("procedural.create_skill", kind = Internal)]
fn create(new: NewSkill, now: i64) -> Result<CreateOutcome, Error> {
    check_steps(&new.trajectory)?;
    check_unit("outcome_score", new.outcome_score)?;
    check_text("domain", &new.domain, MAX_LABEL)?;
    check_optional("trigger_pattern", new.trigger_pattern.as_deref(), MAX_LINE)?;
    check_optional("name", new.name.as_deref(), MAX_LABEL)?;
    add_span_attribute("skill.domain", new.domain.clone());
    add_span_attribute("skill.steps", new.trajectory.len());
    add_span_attribute("skill.outcome_score", new.outcome_score);
    if new.outcome_score < MIN_OUTCOME {
        add_span_attribute("skill.stored", false);
        return Ok(CreateOutcome::NotStored(format!(
            "an outcome score of {} is below {MIN_OUTCOME}: only trajectories that worked become skills",
            new.outcome_score
        )));
    }
    ensure_collection()?;
    let name = match new.name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => {
            let first: String = new
                .trajectory
                .first()
                .map(|step| step.action.chars().take(60).collect())
                .unwrap_or_default();
            format!("{}: {first}", new.domain)
        }
    };
    let skill = Skill {
        id: new_id(now),
        name,
        domain: new.domain,
        trigger_pattern: new.trigger_pattern,
        steps: new.trajectory,
        success_rate: 1.0,
        executions: 1,
        version: 1,
        deprecated: false,
        deprecation_reason: None,
        replaced_by: None,
        session: new.session,
        created: now,
        last_run: Some(now),
        created_by: writer(),
        updated_by: None,
    };
    graph::upsert_node(&Node {
        id: skill.id.clone(),
        label: NodeLabel::Procedure,
        properties: vec![text(DOMAIN, &skill.domain)],
    })?;
    vectors::upsert(
        Collection::Procedures,
        &[Point {
            id: skill.id.clone(),
            vector: embed(&embedding_text(&skill))?,
            payload: payload(&skill, 1)?,
            text: Some(embedding_text(&skill)),
        }],
    )?;
    memory_span(
        MemoryOperation::Create,
        Collection::Procedures,
        Some(&skill.id),
        1,
    );
    add_span_attribute("skill.id", skill.id.clone());
    add_span_attribute("skill.stored", true);
    Ok(CreateOutcome::Stored(skill))
}

#[traced("procedural.recall_skill", kind = Internal)]
fn recall(request: RecallRequest) -> Result<Vec<RecalledSkill>, Error> {
    check_text("task", &request.task, MAX_TEXT)?;
    check_optional("domain", request.domain.as_deref(), MAX_LABEL)?;
    if request.limit == 0 || request.limit > MAX_LIMIT {
        return Err(invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    add_span_attribute("recall.limit", request.limit);
    add_span_attribute("recall.include_deprecated", request.include_deprecated);
    ensure_collection()?;
    let mut filter = Filter {
        must: vec![],
        must_not: vec![],
    };
    if let Some(domain) = &request.domain {
        filter.must.push(equals(text(DOMAIN, domain)));
    }
    if !request.include_deprecated {
        filter.must_not.push(equals(flag(DEPRECATED, true)));
    }
    let hits = vectors::search(&SearchRequest {
        collection: Collection::Procedures,
        vector: embed(&request.task)?,
        text: Some(request.task.clone()),
        filter,
        limit: request.limit,
        offset: 0,
        rescore: Some(Rescore {
            similarity_weight: W_SIMILARITY,
            terms: vec![
                ScoreTerm::Linear((SUCCESS_RATE.to_owned(), W_SUCCESS)),
                ScoreTerm::Linear((EXPERIENCE.to_owned(), W_EXPERIENCE)),
            ],
        }),
    })?;
    let recalled: Vec<RecalledSkill> = hits
        .into_iter()
        .map(|hit| {
            let (skill, _) = from_payload(hit.id, &hit.payload)?;
            let similarity = f64::from(hit.similarity).clamp(0.0, 1.0);
            let experience = experience(skill.executions);
            Ok(RecalledSkill {
                score: SkillScore {
                    similarity,
                    success_rate: skill.success_rate,
                    experience,
                    total: W_SIMILARITY * similarity
                        + W_SUCCESS * skill.success_rate
                        + W_EXPERIENCE * experience,
                },
                skill,
            })
        })
        .collect::<Result<_, Error>>()?;
    // Links to the spans that wrote what it returns.
    for hit in &recalled {
        if let Some(by) = &hit.skill.created_by {
            add_span_link(
                &by.trace_id,
                &by.span_id,
                vec![kv("ww.memory.id", hit.skill.id.clone())],
            );
        }
    }
    memory_span(
        MemoryOperation::Search,
        Collection::Procedures,
        None,
        recalled.len(),
    );
    add_span_attribute("recall.results", recalled.len());
    if let Some(top) = recalled.first() {
        add_span_attribute("recall.top_score", top.score.total);
    }
    Ok(recalled)
}

#[traced("procedural.execute_skill", kind = Internal)]
fn execute(execution: Execution, now: i64) -> Result<ExecutionResult, Error> {
    check_id("skill_id", &execution.skill_id)?;
    check_optional("error", execution.error.as_deref(), MAX_TEXT)?;
    add_span_attribute("skill.id", execution.skill_id.clone());
    add_span_attribute("skill.success", execution.success);
    ensure_collection()?;
    let (mut skill, mut successes) = get(&execution.skill_id)?;
    if let Some(episode) = &execution.episode_id {
        check_id("episode_id", episode)?;
        if graph::get_node(episode)?.is_none_or(|n| n.label != NodeLabel::Episode) {
            return Err(Error::NotFound(format!("no episode {episode}")));
        }
        graph::upsert_edge(&Edge {
            source: skill.id.clone(),
            target: episode.clone(),
            relation: graph::RelationType::DerivedFrom,
            weight: 1.0,
            properties: vec![text("origin", "execution")],
        })?;
    }
    skill.executions = skill.executions.saturating_add(1);
    successes += u32::from(execution.success);
    skill.success_rate = f64::from(successes) / f64::from(skill.executions);
    skill.last_run = Some(now);
    if !skill.deprecated && skill.executions > DEPRECATE_RUNS && skill.success_rate < DEPRECATE_RATE
    {
        skill.deprecated = true;
        skill.deprecation_reason = Some(format!(
            "success rate {:.2} after {} runs",
            skill.success_rate, skill.executions
        ));
        add_span_event(
            "skill.deprecated",
            vec![kv("skill.success_rate", skill.success_rate)],
        );
    }
    save(&mut skill, successes)?;
    memory_span(
        MemoryOperation::Update,
        Collection::Procedures,
        Some(&skill.id),
        1,
    );
    add_span_attribute("skill.success_rate", skill.success_rate);
    add_span_attribute("skill.executions", skill.executions);
    Ok(ExecutionResult {
        success_rate: skill.success_rate,
        executions: skill.executions,
        deprecated: skill.deprecated,
    })
}

#[traced("procedural.deprecate_skill", kind = Internal)]
fn deprecate(
    id: String,
    reason: Option<String>,
    replaced_by: Option<String>,
) -> Result<Skill, Error> {
    check_id("skill_id", &id)?;
    check_optional("reason", reason.as_deref(), MAX_TEXT)?;
    add_span_attribute("skill.id", id.clone());
    ensure_collection()?;
    let (mut skill, successes) = get(&id)?;
    if let Some(successor) = &replaced_by {
        check_id("replaced_by", successor)?;
        if *successor == id {
            return Err(invalid("replaced_by", "a skill cannot replace itself"));
        }
        get(successor)?;
    }
    if skill.deprecated {
        add_span_attribute("skill.already_deprecated", true);
        return Ok(skill);
    }
    skill.deprecated = true;
    skill.deprecation_reason = reason;
    skill.replaced_by = replaced_by.clone();
    save(&mut skill, successes)?;
    memory_span(
        MemoryOperation::Update,
        Collection::Procedures,
        Some(&skill.id),
        1,
    );
    if let Some(successor) = replaced_by {
        graph::upsert_edge(&Edge {
            source: id,
            target: successor,
            relation: graph::RelationType::MergedInto,
            weight: 1.0,
            properties: vec![],
        })?;
    }
    Ok(skill)
}

#[traced("procedural.consolidate_skills", kind = Internal)]
fn consolidate(now: i64) -> Result<SkillReport, Error> {
    ensure_collection()?;
    let active = Filter {
        must: vec![],
        must_not: vec![Condition::Equals(Field {
            name: DEPRECATED.to_owned(),
            value: FieldValue::Flag(true),
        })],
    };
    let mut skills = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = vectors::scroll(
            Collection::Procedures,
            &active,
            after.as_deref(),
            PAGE,
            true,
        )?;
        let Some(last) = page.last().map(|p| p.id.clone()) else {
            break;
        };
        for point in page {
            let (skill, successes) = from_payload(point.id, &point.payload)?;
            let vector = point.vector.unwrap_or_default();
            let quantized = Quantized::new(&vector);
            skills.push((skill, successes, (vector, quantized)));
        }
        if cancelled() {
            // Merges decided on part of the skills could pick another leader.
            return Ok(stopped(skills.len() as u64, 0, 0));
        }
        after = Some(last);
    }
    // Best first: success rate, then experience; each skill merges into the first better
    // one it is similar enough to.
    skills.sort_by(|a, b| {
        b.0.success_rate
            .total_cmp(&a.0.success_rate)
            .then_with(|| b.0.executions.cmp(&a.0.executions))
            .then_with(|| a.0.id.cmp(&b.0.id))
    });
    let mut leaders: Vec<usize> = Vec::new();
    let mut absorbed: Vec<(usize, usize)> = Vec::new();
    for (index, (_, _, (vector, quantized))) in skills.iter().enumerate() {
        let similar = |&&leader: &&usize| {
            let Some((_, _, (leader_vector, leader_quantized))) = skills.get(leader) else {
                return false;
            };
            similar_at_least(
                leader_quantized,
                leader_vector,
                quantized,
                vector,
                MERGE_SIMILARITY,
            )
        };
        match leaders.iter().find(similar) {
            Some(&leader) => absorbed.push((index, leader)),
            None => leaders.push(index),
        }
    }
    let examined = skills.len() as u64;
    let mut merged_into: std::collections::BTreeSet<usize> = Default::default();
    let mut deprecated = 0u64;
    for (done, &(index, leader)) in absorbed.iter().enumerate() {
        if cancelled() {
            // The merges done so far are complete (their leaders' versions move on
            // below); the next run finds the rest.
            break;
        }
        let (Some((skill, successes, _)), Some((leader_skill, _, _))) =
            (skills.get(index), skills.get(leader))
        else {
            continue;
        };
        let mut skill = skill.clone();
        let leader_id = leader_skill.id.clone();
        skill.deprecated = true;
        skill.deprecation_reason = Some(format!("merged into {leader_id} by consolidation"));
        skill.replaced_by = Some(leader_id.clone());
        save(&mut skill, *successes)?;
        graph::upsert_edge(&Edge {
            source: skill.id.clone(),
            target: leader_id,
            relation: graph::RelationType::MergedInto,
            weight: 1.0,
            properties: vec![integer("merged_at", now)],
        })?;
        merged_into.insert(leader);
        deprecated += 1;
        report_progress(done as u64 + 1, absorbed.len() as u64, "merging skills");
    }
    for (skill, successes, _) in merged_into.iter().filter_map(|&leader| skills.get(leader)) {
        let mut skill = skill.clone();
        skill.version += 1;
        save(&mut skill, *successes)?;
    }
    if deprecated < absorbed.len() as u64 {
        return Ok(stopped(examined, merged_into.len() as u64, deprecated));
    }
    add_span_attribute("consolidation.skills", examined);
    add_span_attribute("consolidation.merged", merged_into.len());
    add_span_attribute("consolidation.deprecated", deprecated);
    Ok(SkillReport {
        examined,
        merged: merged_into.len() as u64,
        deprecated,
    })
}

/// The report of a skill consolidation that stopped at a step because its request was
/// cancelled.
fn stopped(examined: u64, merged: u64, deprecated: u64) -> SkillReport {
    add_span_attribute("consolidation.skills", examined);
    add_span_attribute("consolidation.merged", merged);
    add_span_attribute("consolidation.deprecated", deprecated);
    add_span_attribute("consolidation.cancelled", true);
    SkillReport {
        examined,
        merged,
        deprecated,
    }
}

struct Procedural;

impl Guest for Procedural {
    fn create_skill(skill: NewSkill, now: i64) -> Result<CreateOutcome, Error> {
        create(skill, now)
    }

    fn recall_skill(request: RecallRequest) -> Result<Vec<RecalledSkill>, Error> {
        recall(request)
    }

    fn execute_skill(execution: Execution, now: i64) -> Result<ExecutionResult, Error> {
        execute(execution, now)
    }

    fn deprecate_skill(
        skill_id: String,
        reason: Option<String>,
        replaced_by: Option<String>,
        _now: i64,
    ) -> Result<Skill, Error> {
        deprecate(skill_id, reason, replaced_by)
    }

    fn consolidate_skills(now: i64) -> Result<SkillReport, Error> {
        consolidate(now)
    }

    #[traced("procedural.reembed", kind = Internal)]
    fn reembed(
        after: Option<String>,
        limit: u32,
    ) -> Result<ww_guest::services::ReembedPage, Error> {
        ww_service_common::reembed(Collection::Procedures, after, limit, |id, payload| {
            let (skill, _) = from_payload(id.to_owned(), payload)?;
            Ok(embedding_text(&skill))
        })
    }
}

ww_guest::export_procedural!(Procedural);

// Writes that read before they write (a skill of that name exists, an execution's
// counts) run one at a time on one instance; recalls run on any instance of the pool.
// A consolidation gets an instance of its own.
ww_guest::calls! {
    serial: ["create-skill", "execute-skill", "deprecate-skill"],
    long_running: ["consolidate-skills"],
}

//! Procedural operations (tools 10–13).

use serde::{Deserialize, Serialize};

use super::{Memory, MemoryError, TraceRef, finite, format_time, now_ms};
use crate::bindings::api::ww::memory::procedural as wit;
use crate::plugins::Request;

const PROCEDURAL: &str = "ww:memory/procedural@0.1.0";

/// One step of a trajectory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepArg {
    /// What was done.
    pub action: String,
    /// With which tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Its parameters, any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// What came of it, any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

/// `create_skill` arguments.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSkill {
    /// The steps that worked, in order.
    pub trajectory: Vec<StepArg>,
    /// How well it went, in [0, 1]; below 0.7 nothing is stored.
    pub outcome_score: f64,
    /// Where it applies.
    pub domain: String,
    /// When to use it.
    #[serde(default)]
    pub trigger_pattern: Option<String>,
    /// Its name (default: domain and first action).
    #[serde(default)]
    pub name: Option<String>,
}

/// `recall_skill` arguments.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallSkill {
    /// The task at hand.
    pub task: String,
    /// Only skills of this domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// At most this many (default 5).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Deprecated skills too (default false).
    #[serde(default)]
    pub include_deprecated: Option<bool>,
}

/// `execute_skill` arguments.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteSkill {
    /// The skill that was run.
    pub skill_id: String,
    /// Whether it worked.
    pub success: bool,
    /// What went wrong.
    #[serde(default)]
    pub error: Option<String>,
    /// The episode recording the run.
    #[serde(default)]
    pub episode_id: Option<String>,
}

/// `deprecate_skill` arguments.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeprecateSkill {
    /// The skill.
    pub skill_id: String,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// The skill to use instead.
    #[serde(default)]
    pub replaced_by: Option<String>,
}

/// A skill as returned.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SkillView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Where it applies.
    pub domain: String,
    /// When to use it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_pattern: Option<String>,
    /// Its steps, in order.
    pub steps: Vec<StepArg>,
    /// Successful runs / runs.
    pub success_rate: f64,
    /// Runs recorded (creation counts as one).
    pub executions: u32,
    /// Raised when consolidation merges others into it.
    pub version: u32,
    /// No longer recommended.
    pub deprecated: bool,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deprecation_reason: Option<String>,
    /// What to use instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
    /// The session it came from.
    pub session: String,
    /// Created (RFC 3339).
    pub created: String,
    /// Last run (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// The span of the request that stored it, when that request was traced (sampled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by_trace: Option<TraceRef>,
    /// The span of the last request that changed it, when traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by_trace: Option<TraceRef>,
}

fn json_or_text(text: Option<String>) -> Option<serde_json::Value> {
    text.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)))
}

impl From<wit::Skill> for SkillView {
    fn from(s: wit::Skill) -> Self {
        Self {
            id: s.id,
            name: s.name,
            domain: s.domain,
            trigger_pattern: s.trigger_pattern,
            steps: s
                .steps
                .into_iter()
                .map(|step| StepArg {
                    action: step.action,
                    tool: step.tool,
                    parameters: json_or_text(step.parameters),
                    result: json_or_text(step.result),
                })
                .collect(),
            success_rate: s.success_rate,
            executions: s.executions,
            version: s.version,
            deprecated: s.deprecated,
            deprecation_reason: s.deprecation_reason,
            replaced_by: s.replaced_by,
            session: s.session,
            created: format_time(s.created),
            last_run: s.last_run.map(format_time),
            created_by_trace: s.created_by.map(Into::into),
            updated_by_trace: s.updated_by.map(Into::into),
        }
    }
}

/// `create_skill` result: the skill, or why nothing was stored.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CreatedSkill {
    /// Whether a skill was stored.
    pub stored: bool,
    /// The skill, when stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skill: Option<SkillView>,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The parts of a skill's recall score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SkillScoreView {
    /// Cosine similarity to the task, clamped to [0, 1].
    pub similarity: f64,
    /// Its success rate.
    pub success_rate: f64,
    /// min(executions / 10, 1).
    pub experience: f64,
    /// 0.6·similarity + 0.3·success rate + 0.1·experience.
    pub total: f64,
}

/// One recalled skill.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RecalledSkill {
    /// The skill.
    pub skill: SkillView,
    /// Why it ranks where it does.
    pub score: SkillScoreView,
}

/// `recall_skill` result, best first.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RecalledSkills {
    /// The skills.
    pub skills: Vec<RecalledSkill>,
    /// How many.
    pub count: usize,
}

/// `execute_skill` result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ExecutionView {
    /// The running success rate.
    pub success_rate: f64,
    /// Runs recorded.
    pub executions: u32,
    /// Whether the skill is now deprecated.
    pub deprecated: bool,
}

/// Skill consolidation counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SkillReport {
    /// Active skills looked at.
    pub examined: u64,
    /// Skills that absorbed similar ones.
    pub merged: u64,
    /// Skills deprecated in favour of those.
    pub deprecated: u64,
}

fn step_text(field: &str, value: Option<serde_json::Value>) -> Result<Option<String>, MemoryError> {
    value
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            other => serde_json::to_string(&other)
                .map_err(|e| MemoryError::invalid(field, e.to_string())),
        })
        .transpose()
}

impl Memory {
    /// Store a successful trajectory as a skill (below outcome 0.7, say why not).
    pub async fn create_skill(
        &self,
        request: Request,
        session: &str,
        input: CreateSkill,
    ) -> Result<CreatedSkill, MemoryError> {
        finite("outcome_score", Some(input.outcome_score))?;
        let trajectory = input
            .trajectory
            .into_iter()
            .map(|s| {
                Ok(wit::Step {
                    action: s.action,
                    tool: s.tool,
                    parameters: step_text("trajectory.parameters", s.parameters)?,
                    result: step_text("trajectory.result", s.result)?,
                })
            })
            .collect::<Result<Vec<_>, MemoryError>>()?;
        let new = wit::NewSkill {
            session: session.to_owned(),
            trajectory,
            outcome_score: input.outcome_score,
            domain: input.domain,
            trigger_pattern: input.trigger_pattern,
            name: input.name,
        };
        let outcome: wit::CreateOutcome = self
            .run(request, PROCEDURAL, "create-skill", (new, now_ms()))
            .await?;
        Ok(match outcome {
            wit::CreateOutcome::Stored(skill) => CreatedSkill {
                stored: true,
                skill: Some(skill.into()),
                reason: None,
            },
            wit::CreateOutcome::NotStored(reason) => CreatedSkill {
                stored: false,
                skill: None,
                reason: Some(reason),
            },
        })
    }

    /// Skills for a task, by similarity, success rate and experience.
    pub async fn recall_skill(
        &self,
        request: Request,
        input: RecallSkill,
    ) -> Result<RecalledSkills, MemoryError> {
        let wit_request = wit::RecallRequest {
            task: input.task,
            domain: input.domain,
            limit: input.limit.unwrap_or(5),
            include_deprecated: input.include_deprecated.unwrap_or(false),
        };
        let hits: Vec<wit::RecalledSkill> = self
            .run(request, PROCEDURAL, "recall-skill", (wit_request,))
            .await?;
        let skills: Vec<RecalledSkill> = hits
            .into_iter()
            .map(|hit| RecalledSkill {
                skill: hit.skill.into(),
                score: SkillScoreView {
                    similarity: hit.score.similarity,
                    success_rate: hit.score.success_rate,
                    experience: hit.score.experience,
                    total: hit.score.total,
                },
            })
            .collect();
        Ok(RecalledSkills {
            count: skills.len(),
            skills,
        })
    }

    /// Record a run of a skill (it runs nothing).
    pub async fn execute_skill(
        &self,
        request: Request,
        input: ExecuteSkill,
    ) -> Result<ExecutionView, MemoryError> {
        let execution = wit::Execution {
            skill_id: input.skill_id,
            success: input.success,
            error: input.error,
            episode_id: input.episode_id,
        };
        let r: wit::ExecutionResult = self
            .run(request, PROCEDURAL, "execute-skill", (execution, now_ms()))
            .await?;
        Ok(ExecutionView {
            success_rate: r.success_rate,
            executions: r.executions,
            deprecated: r.deprecated,
        })
    }

    /// Deprecate a skill (idempotent).
    pub async fn deprecate_skill(
        &self,
        request: Request,
        input: DeprecateSkill,
    ) -> Result<SkillView, MemoryError> {
        let skill: wit::Skill = self
            .run(
                request,
                PROCEDURAL,
                "deprecate-skill",
                (input.skill_id, input.reason, input.replaced_by, now_ms()),
            )
            .await?;
        Ok(skill.into())
    }

    /// Merge similar skills into the best of each group.
    pub async fn consolidate_skills(&self, request: Request) -> Result<SkillReport, MemoryError> {
        let r: wit::SkillReport = self
            .run(request, PROCEDURAL, "consolidate-skills", (now_ms(),))
            .await?;
        Ok(SkillReport {
            examined: r.examined,
            merged: r.merged,
            deprecated: r.deprecated,
        })
    }
}

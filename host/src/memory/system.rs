//! System operations (tools 14, 16, 17): consolidation across the services, the
//! session, and what the server holds and how it is doing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use opentelemetry::KeyValue;
use serde::{Deserialize, Serialize};

use super::{DeepReport, ErrorCode, LightReport, Memory, MemoryError, SkillReport, now_ms};
use crate::bindings::api::ww::memory::{
    episodic, graph_store, procedural, semantic, types, vector_store,
};

use crate::plugins::{Request, RequestCall, Role};
use crate::session::Session;
use crate::tracing_capability::ProgressSink;

/// The phases of `consolidate_now` with kind `all`, in the order they run.
const PHASES: [&str; 3] = ["light", "deep", "skill"];

/// Progress units per phase when several phases report as one measure.
const PHASE_UNITS: u64 = 1000;

/// A sink for a run of [`PHASES`] that passes their reports on as one increasing measure:
/// phase `i`'s "done of total" becomes `i + done/total` phases of three (in thousandths),
/// its message prefixed with the phase's name. Each phase alone counts from zero again,
/// which a client must never see (MCP progress only increases).
fn phased(sink: ProgressSink, current: Arc<AtomicUsize>) -> ProgressSink {
    Arc::new(move |done: u64, total: u64, message: &str| {
        let phase = current.load(Ordering::Relaxed).min(PHASES.len() - 1);
        let within = (done.min(total) * PHASE_UNITS)
            .checked_div(total)
            .unwrap_or(0);
        sink(
            phase as u64 * PHASE_UNITS + within,
            PHASES.len() as u64 * PHASE_UNITS,
            &format!(
                "{}: {message}",
                PHASES.get(phase).copied().unwrap_or("consolidation")
            ),
        );
    })
}

/// Which consolidation to run.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ConsolidationKind {
    /// Mark near-duplicate episodes (the default).
    #[default]
    Light,
    /// Clusters of similar episodes become entities.
    Deep,
    /// Similar skills merge.
    Skill,
    /// All three, in that order.
    All,
}

/// `consolidate_now` arguments.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsolidateNow {
    /// Which (default light).
    #[serde(default)]
    pub kind: Option<ConsolidationKind>,
}

/// `consolidate_now` result.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ConsolidationReport {
    /// What ran.
    pub kind: ConsolidationKind,
    /// Light consolidation's counts, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub light: Option<LightReport>,
    /// Deep consolidation's counts, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deep: Option<DeepReport>,
    /// Skill consolidation's counts, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skill: Option<SkillReport>,
    /// The request was cancelled: the phase that was running stopped at its next step
    /// (its counts are what it had done), later phases did not run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    /// Wall time, in milliseconds.
    pub duration_ms: f64,
}

/// `get_session_id` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SessionInfo {
    /// The session this connection is bound to.
    pub session_id: String,
    /// Why it is this one: `given` (`WW_SESSION_ID` or `--session`), `data-directory`
    /// (the data directory's default session, which a restart keeps) or `token` (bound
    /// to the HTTP request's bearer token).
    pub session_source: String,
    /// The server.
    pub server_name: String,
    /// Its version.
    pub server_version: String,
    /// The MCP protocol version the connection negotiated (none outside MCP, e.g. for
    /// `ww-memory call`).
    pub protocol_version: Option<String>,
}

/// `memory_stats` arguments.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryStatsArgs {
    /// Include per-component and guest-limit counters.
    #[serde(default)]
    pub detailed: Option<bool>,
}

/// Points per collection and nodes per label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Counts {
    /// Episodes (points in `ww_episodes`).
    pub episodes: u64,
    /// Entities (points in `ww_entities`), superseded versions included.
    pub entities: u64,
    /// Skills (points in `ww_procedures`), deprecated ones included.
    pub procedures: u64,
    /// Graph nodes per label.
    pub graph_nodes: NodeCounts,
}

/// Graph nodes per label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct NodeCounts {
    /// Labelled episode.
    pub episode: u64,
    /// Labelled entity.
    pub entity: u64,
    /// Labelled procedure.
    pub procedure: u64,
}

/// One store adapter's health.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct StoreStatus {
    /// `vector-store` or `graph-store`.
    pub role: String,
    /// The component serving it.
    pub component: String,
    /// What it says it is.
    pub backend: String,
    /// Whether it answered healthy.
    pub healthy: bool,
    /// Its own account.
    pub detail: String,
    /// How long its health call took, in milliseconds.
    pub latency_ms: f64,
}

/// Tracing as it stands.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TracingStatus {
    /// Whether spans are recorded.
    pub enabled: bool,
    /// Where they go.
    pub exporters: Vec<String>,
    /// The sampler.
    pub sampler: String,
    /// Spans accepted by the exporters.
    pub spans_exported: u64,
    /// Spans lost (full queue, failed or timed-out export).
    pub spans_dropped: u64,
    /// Guest input repaired or refused, by kind (detailed only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guest_limits: Vec<(String, u64)>,
    /// Tail sampling, when on: traces kept (by reason), dropped and evicted, spans
    /// evicted, spans buffered now and at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_sampling: Option<std::collections::BTreeMap<String, u64>>,
    /// Metrics export, when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsStatus>,
}

/// Where metrics go and how their exports went.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct MetricsStatus {
    /// Where, every how often.
    pub exporter: String,
    /// Exports the backend accepted.
    pub exports: u64,
    /// Exports that failed or timed out (the next one carries the same counts: cumulative).
    pub failed_exports: u64,
    /// Why the export stopped: the endpoint takes no metrics (a trace-only backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// One component's counters (detailed only).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ComponentStatus {
    /// Its name.
    pub name: String,
    /// Instances created (the first, and one after each trap).
    pub instantiations: u64,
    /// Calls that trapped.
    pub traps: u64,
    /// Linear memory of its live instance, in bytes.
    pub memory_bytes: u64,
}

/// `memory_stats` result.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct MemoryStats {
    /// What is stored.
    pub counts: Counts,
    /// The stores' health.
    pub stores: Vec<StoreStatus>,
    /// Tracing.
    pub tracing: TracingStatus,
    /// Components (detailed only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentStatus>,
    /// MCP sessions over HTTP (absent on stdio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionStats>,
}

/// What `memory_stats` reports of the MCP sessions over HTTP (filled by the gateway).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SessionStats {
    /// Sessions open now.
    pub open: u64,
    /// The cap on open sessions.
    pub max: u64,
    /// Sessions opened since start.
    pub opened: u64,
    /// New sessions refused (`503`) because no session could make room.
    pub refused: u64,
    /// Sessions closed to make room for a new one.
    pub evicted: u64,
    /// Sessions closed because their client never got past `initialize`.
    pub handshake_expired: u64,
    /// Sessions closed after `idle_timeout` without a request.
    pub idle_expired: u64,
    /// Sessions their client ended (`DELETE`) or rmcp closed.
    pub ended: u64,
}

const VECTORS: &str = "ww:memory/vector-store@0.1.0";
const GRAPH: &str = "ww:memory/graph-store@0.1.0";

impl Memory {
    /// Run consolidation(s) as one request; failures are `CONSOLIDATION_ERROR`s.
    pub async fn consolidate_now(
        &self,
        request: Request,
        input: ConsolidateNow,
    ) -> Result<ConsolidationReport, MemoryError> {
        let kind = input.kind.unwrap_or_default();
        let started = Instant::now();
        let mut request = request;
        let phase = Arc::new(AtomicUsize::new(0));
        if kind == ConsolidationKind::All {
            request.progress = request.progress.map(|sink| phased(sink, phase.clone()));
        }
        let progress = request.progress.clone();
        let mut call = self.host.begin(request);
        call.annotate(vec![KeyValue::new(
            "ww.consolidation.kind",
            format!("{kind:?}"),
        )]);
        let mut report = ConsolidationReport {
            kind,
            light: None,
            deep: None,
            skill: None,
            cancelled: false,
            duration_ms: 0.0,
        };
        let outcome = self
            .consolidate_in(&mut call, kind, &phase, &mut report)
            .await;
        report.duration_ms = started.elapsed().as_secs_f64() * 1e3;
        match outcome {
            Ok(()) if report.cancelled => {
                call.annotate(vec![KeyValue::new("ww.cancelled", true)]);
                tracing::info!("consolidate_now cancelled: {report:?}");
                Ok(report)
            }
            Ok(()) => {
                // A phase with nothing to do may not have reported at all.
                if let Some(progress) = progress.filter(|_| kind == ConsolidationKind::All) {
                    progress(1, 1, "consolidation complete");
                }
                Ok(report)
            }
            Err(mut error) => {
                if error.code != ErrorCode::ValidationError {
                    error.code = ErrorCode::ConsolidationError;
                }
                super::mark_failed(&mut call, &error);
                Err(error)
            }
        }
    }

    async fn consolidate_in(
        &self,
        call: &mut RequestCall<'_>,
        kind: ConsolidationKind,
        phase: &AtomicUsize,
        report: &mut ConsolidationReport,
    ) -> Result<(), MemoryError> {
        let now = now_ms();
        // A cancelled request stops after the phase that saw it (each phase stops at its
        // own next step too).
        let stop = |call: &RequestCall<'_>, report: &mut ConsolidationReport| {
            report.cancelled = call.is_cancelled();
            report.cancelled
        };
        if matches!(kind, ConsolidationKind::Light | ConsolidationKind::All) {
            phase.store(0, Ordering::Relaxed);
            let r: episodic::LightReport = self
                .call_in(
                    call,
                    "ww:memory/episodic@0.1.0",
                    "consolidate-light",
                    (now,),
                )
                .await?;
            report.light = Some(LightReport {
                examined: r.examined,
                marked_duplicates: r.marked_duplicates,
            });
            if stop(call, report) {
                return Ok(());
            }
        }
        if matches!(kind, ConsolidationKind::Deep | ConsolidationKind::All) {
            phase.store(1, Ordering::Relaxed);
            let r: semantic::DeepReport = self
                .call_in(call, "ww:memory/semantic@0.1.0", "consolidate-deep", (now,))
                .await?;
            report.deep = Some(DeepReport {
                episodes_examined: r.episodes_examined,
                clusters: r.clusters,
                entities_created: r.entities_created,
                entities_updated: r.entities_updated,
            });
            if stop(call, report) {
                return Ok(());
            }
        }
        if matches!(kind, ConsolidationKind::Skill | ConsolidationKind::All) {
            phase.store(2, Ordering::Relaxed);
            let r: procedural::SkillReport = self
                .call_in(
                    call,
                    "ww:memory/procedural@0.1.0",
                    "consolidate-skills",
                    (now,),
                )
                .await?;
            report.skill = Some(SkillReport {
                examined: r.examined,
                merged: r.merged,
                deprecated: r.deprecated,
            });
            stop(call, report);
        }
        Ok(())
    }

    /// The session this caller is bound to, the server, and the connection's protocol.
    pub fn get_session_id(
        &self,
        request: Request,
        session: &Session,
        protocol_version: Option<&str>,
    ) -> SessionInfo {
        let mut call = self.host.begin(request);
        call.annotate(vec![KeyValue::new("session.id", session.id.to_string())]);
        SessionInfo {
            session_id: session.id.to_string(),
            session_source: session.source_name().to_owned(),
            server_name: "world-weaver".to_owned(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: protocol_version.map(str::to_owned),
        }
    }

    /// Counts, store health and latency, tracing status.
    pub async fn memory_stats(
        &self,
        request: Request,
        input: MemoryStatsArgs,
    ) -> Result<MemoryStats, MemoryError> {
        let mut call = self.host.begin(request);
        let everything = || types::Filter {
            must: vec![],
            must_not: vec![],
        };
        let mut points = [0u64; 3];
        for (count, collection) in points.iter_mut().zip([
            vector_store::Collection::Episodes,
            vector_store::Collection::Entities,
            vector_store::Collection::Procedures,
        ]) {
            *count = self
                .call_in(&mut call, VECTORS, "count", (collection, everything()))
                .await?;
        }
        let mut graph_nodes = [0u64; 3];
        for (count, label) in graph_nodes.iter_mut().zip([
            graph_store::NodeLabel::Episode,
            graph_store::NodeLabel::Entity,
            graph_store::NodeLabel::Procedure,
        ]) {
            *count = self
                .call_in(&mut call, GRAPH, "count-nodes", (label,))
                .await?;
        }
        let mut stores = Vec::new();
        for role in [Role::VectorStore, Role::GraphStore] {
            let component = self
                .host
                .exporter(role.interface())
                .map_or_else(|| "none".to_owned(), |c| c.name().to_owned());
            let started = Instant::now();
            let health: Result<(types::StoreHealth,), _> =
                call.invoke_typed(role.interface(), "health", ()).await;
            let latency_ms = started.elapsed().as_secs_f64() * 1e3;
            stores.push(match health {
                Ok((h,)) => StoreStatus {
                    role: role.key().to_owned(),
                    component,
                    backend: h.backend,
                    healthy: h.healthy,
                    detail: h.detail,
                    latency_ms,
                },
                Err(error) => StoreStatus {
                    role: role.key().to_owned(),
                    component,
                    backend: "unknown".to_owned(),
                    healthy: false,
                    detail: error.to_string(),
                    latency_ms,
                },
            });
        }
        let detailed = input.detailed.unwrap_or(false);
        let stats = self.host.telemetry().stats();
        let tracing = TracingStatus {
            enabled: stats.enabled,
            exporters: stats.exporters,
            sampler: stats.sampler,
            spans_exported: stats.spans_exported,
            spans_dropped: stats.spans_dropped,
            metrics: stats.metrics.map(|m| MetricsStatus {
                exporter: m.description,
                exports: m.exports,
                failed_exports: m.failed_exports,
                stopped: m.stopped,
            }),
            tail_sampling: stats
                .tail
                .map(|counts| counts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
            guest_limits: if detailed {
                stats
                    .guest_limits
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect()
            } else {
                Vec::new()
            },
        };
        let components = if detailed {
            self.host
                .components()
                .map(|(c, _)| ComponentStatus {
                    name: c.name().to_owned(),
                    instantiations: c.instantiations(),
                    traps: c.traps(),
                    memory_bytes: c.memory_bytes(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(MemoryStats {
            counts: Counts {
                episodes: points[0],
                entities: points[1],
                procedures: points[2],
                graph_nodes: NodeCounts {
                    episode: graph_nodes[0],
                    entity: graph_nodes[1],
                    procedure: graph_nodes[2],
                },
            },
            stores,
            tracing,
            components,
            sessions: None,
        })
    }
}

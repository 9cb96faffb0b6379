//! Procedural memory and the system operations (consolidation, provenance from
//! consolidation, session, stats) through the host API, on the real default components.

use std::sync::{Arc, Mutex};

use serde_json::json;
use ww_host::memory::{
    ConsolidateNow, ConsolidationKind, CreateEpisode, CreateSkill, DeprecateSkill, ErrorCode,
    ExecuteSkill, GetProvenance, Memory, MemoryStatsArgs, RecallEpisodes, RecallSkill, StepArg,
    arguments,
};
use ww_host::plugins::Request;
use ww_tests::{data_dir, memory, telemetry};

const SESSION: &str = "procedural-tests";

fn request(name: &str) -> Request {
    Request::new(format!("test.{name}"))
}

async fn open(name: &str) -> Memory {
    memory(&data_dir(name), telemetry(&[])).await
}

fn steps(actions: &[&str]) -> Vec<StepArg> {
    actions
        .iter()
        .map(|a| StepArg {
            action: (*a).to_owned(),
            tool: Some("shell".to_owned()),
            parameters: Some(json!({"cwd": "/repo"})),
            result: None,
        })
        .collect()
}

async fn skill(memory: &Memory, actions: &[&str], outcome: f64, domain: &str) -> Option<String> {
    let created = memory
        .create_skill(
            request("create_skill"),
            SESSION,
            CreateSkill {
                trajectory: steps(actions),
                outcome_score: outcome,
                domain: domain.to_owned(),
                trigger_pattern: Some("when the build fails".to_owned()),
                name: None,
            },
        )
        .await
        .expect("create_skill");
    created.skill.map(|s| s.id)
}

async fn recall(memory: &Memory, task: &str, include_deprecated: bool) -> Vec<(String, f64)> {
    memory
        .recall_skill(
            request("recall_skill"),
            RecallSkill {
                task: task.to_owned(),
                include_deprecated: Some(include_deprecated),
                ..Default::default()
            },
        )
        .await
        .expect("recall_skill")
        .skills
        .into_iter()
        .map(|s| (s.skill.id, s.score.total))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn skills_are_stored_recalled_and_deprecated_by_their_record() {
    let memory = open("procedural-skills").await;
    // Below 0.7 nothing is stored, and the result says why.
    let weak = memory
        .create_skill(
            request("create_skill"),
            SESSION,
            CreateSkill {
                trajectory: steps(&["guess"]),
                outcome_score: 0.5,
                domain: "builds".to_owned(),
                trigger_pattern: None,
                name: None,
            },
        )
        .await
        .unwrap();
    assert!(!weak.stored && weak.skill.is_none());
    assert!(weak.reason.as_deref().unwrap_or("").contains("0.7"));

    let fix = skill(
        &memory,
        &["clear the cache", "rebuild the project"],
        0.9,
        "builds",
    )
    .await
    .unwrap();
    let flaky = skill(
        &memory,
        &["restart the flaky runner", "retry the job"],
        0.8,
        "ci",
    )
    .await
    .unwrap();
    let found = memory
        .recall_skill(
            request("recall_skill"),
            RecallSkill {
                task: "rebuild the project after clearing the cache".to_owned(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(found.skills[0].skill.id, fix);
    let top = &found.skills[0];
    assert_eq!(top.skill.steps.len(), 2);
    assert_eq!(top.skill.steps[0].parameters, Some(json!({"cwd": "/repo"})));
    assert_eq!((top.skill.executions, top.skill.version), (1, 1));
    let s = top.score;
    assert_eq!((s.success_rate, s.experience), (1.0, 0.1));
    assert!(
        (s.total - (0.6 * s.similarity + 0.3 + 0.01)).abs() < 1e-9,
        "{s:?}"
    );
    // A domain filter.
    let ci_only = memory
        .recall_skill(
            request("recall_skill"),
            RecallSkill {
                task: "rebuild the project".to_owned(),
                domain: Some("ci".to_owned()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        ci_only
            .skills
            .iter()
            .map(|s| &s.skill.id)
            .collect::<Vec<_>>(),
        [&flaky]
    );

    // 11 failures after the creating success: more than 10 runs under 0.3 deprecates it.
    let mut last = None;
    for _ in 0..11 {
        last = Some(
            memory
                .execute_skill(
                    request("execute_skill"),
                    ExecuteSkill {
                        skill_id: flaky.clone(),
                        success: false,
                        error: Some("runner died".to_owned()),
                        episode_id: None,
                    },
                )
                .await
                .unwrap(),
        );
    }
    let last = last.unwrap();
    assert_eq!(last.executions, 12);
    assert!((last.success_rate - 1.0 / 12.0).abs() < 1e-12);
    assert!(last.deprecated);
    let task = "restart the flaky runner and retry the job";
    assert!(
        !recall(&memory, task, false)
            .await
            .iter()
            .any(|(id, _)| *id == flaky)
    );
    assert!(
        recall(&memory, task, true)
            .await
            .iter()
            .any(|(id, _)| *id == flaky)
    );

    // Deprecation is idempotent; an unknown id is NOT_FOUND.
    let deprecate = |id: &str, replaced_by: Option<&str>| DeprecateSkill {
        skill_id: id.to_owned(),
        reason: Some("superseded".to_owned()),
        replaced_by: replaced_by.map(str::to_owned),
    };
    let once = memory
        .deprecate_skill(request("deprecate"), deprecate(&fix, Some(&flaky)))
        .await
        .unwrap();
    let twice = memory
        .deprecate_skill(request("deprecate"), deprecate(&fix, Some(&flaky)))
        .await
        .unwrap();
    assert_eq!(once, twice);
    assert!(once.deprecated && once.replaced_by.as_deref() == Some(flaky.as_str()));
    let unknown = memory
        .deprecate_skill(request("deprecate"), deprecate("nope", None))
        .await
        .unwrap_err();
    assert_eq!(unknown.code, ErrorCode::NotFound);
    let unknown_run = memory
        .execute_skill(
            request("execute_skill"),
            ExecuteSkill {
                skill_id: "nope".to_owned(),
                success: true,
                error: None,
                episode_id: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(unknown_run.code, ErrorCode::NotFound);
    let bad =
        arguments::<CreateSkill>(json!({"trajectory": [], "outcome_score": "high", "domain": "x"}));
    assert_eq!(bad.unwrap_err().field.as_deref(), Some("outcome_score"));
    let empty = memory
        .create_skill(
            request("create_skill"),
            SESSION,
            CreateSkill {
                trajectory: vec![],
                outcome_score: 0.9,
                domain: "x".to_owned(),
                trigger_pattern: None,
                name: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(empty.field.as_deref(), Some("trajectory"));
}

#[tokio::test(flavor = "multi_thread")]
async fn consolidation_marks_duplicates_builds_entities_and_merges_skills() {
    let memory = open("consolidation").await;
    let create = |content: &str| CreateEpisode {
        content: content.to_owned(),
        ..Default::default()
    };
    let mut ids = Vec::new();
    // With the hash embedder, the three variants are 0.92–0.94 similar to the first
    // (a cluster, not duplicates); the repeat is 1.0 (a duplicate).
    for content in [
        "the deploy failed because the database migration timed out",
        "the deploy failed because the database migration timed out",
        "the deploy failed again because the database migration timed out",
        "yesterday the deploy failed because the database migration timed out",
        "the deploy failed because the database migration timed out twice",
        "lunch was a sandwich",
    ] {
        ids.push(
            memory
                .create_episode(request("episode"), SESSION, create(content))
                .await
                .unwrap()
                .id,
        );
    }

    // Light: the exact repeat is marked (never deleted) and recall stops returning it.
    let light = memory
        .consolidate_now(
            request("consolidate"),
            ConsolidateNow {
                kind: Some(ConsolidationKind::Light),
            },
        )
        .await
        .unwrap();
    let light_report = light.light.unwrap();
    assert_eq!(
        (light_report.examined, light_report.marked_duplicates),
        (6, 1)
    );
    let recalled = memory
        .recall_episodes(
            request("recall"),
            SESSION,
            RecallEpisodes {
                query: "deploy failed database migration".to_owned(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let recalled_ids: Vec<&str> = recalled
        .episodes
        .iter()
        .map(|e| e.episode.id.as_str())
        .collect();
    assert!(recalled_ids.contains(&ids[0].as_str()) && !recalled_ids.contains(&ids[1].as_str()));

    // Deep: the similar deploy episodes become one entity linked to each.
    let deep = memory
        .consolidate_now(
            request("consolidate"),
            ConsolidateNow {
                kind: Some(ConsolidationKind::Deep),
            },
        )
        .await
        .unwrap();
    let report = deep.deep.unwrap();
    assert_eq!(
        (report.clusters, report.entities_created),
        (1, 1),
        "{report:?}"
    );
    let stats = memory
        .memory_stats(request("stats"), MemoryStatsArgs::default())
        .await
        .unwrap();
    assert_eq!(stats.counts.entities, 1);
    assert_eq!(stats.counts.episodes, 6);
    let entity = memory
        .semantic_recall(
            request("recall"),
            ww_host::memory::SemanticRecall {
                query: "deploy database migration".to_owned(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .entities[0]
        .entity
        .id
        .clone();
    let provenance = memory
        .get_provenance(request("provenance"), GetProvenance { entity_id: entity })
        .await
        .unwrap();
    let mut origin = provenance.consolidated_from.clone();
    origin.sort();
    let mut expected: Vec<String> = vec![
        ids[0].clone(),
        ids[2].clone(),
        ids[3].clone(),
        ids[4].clone(),
    ];
    expected.sort();
    assert_eq!(
        origin, expected,
        "the duplicate and the unrelated episode are not in it"
    );
    // Running it again updates rather than duplicates.
    let again = memory
        .consolidate_now(
            request("consolidate"),
            ConsolidateNow {
                kind: Some(ConsolidationKind::Deep),
            },
        )
        .await
        .unwrap()
        .deep
        .unwrap();
    assert_eq!((again.entities_created, again.entities_updated), (0, 1));

    // Skill: two near-identical skills merge into the better one.
    let better = skill(
        &memory,
        &["run the migration with a longer timeout"],
        0.95,
        "deploys",
    )
    .await
    .unwrap();
    let worse = skill(
        &memory,
        &["run the migration with a longer timeout"],
        0.9,
        "deploys",
    )
    .await
    .unwrap();
    memory
        .execute_skill(
            request("execute_skill"),
            ExecuteSkill {
                skill_id: worse.clone(),
                success: false,
                error: None,
                episode_id: Some(ids[0].clone()),
            },
        )
        .await
        .unwrap();
    let all = memory
        .consolidate_now(
            request("consolidate"),
            ConsolidateNow {
                kind: Some(ConsolidationKind::All),
            },
        )
        .await
        .unwrap();
    let skills = all.skill.unwrap();
    assert_eq!(
        (skills.examined, skills.merged, skills.deprecated),
        (2, 1, 1)
    );
    assert!(all.light.is_some() && all.deep.is_some() && all.duration_ms > 0.0);
    let kept = recall(&memory, "migration timeout", false).await;
    assert_eq!(kept.iter().map(|(id, _)| id).collect::<Vec<_>>(), [&better]);

    // The session and the stats.
    let info = memory.get_session_id(
        request("session"),
        &ww_host::session::Session::given(SESSION),
        None,
    );
    assert_eq!(info.session_source, "given");
    assert_eq!(info.session_id, SESSION);
    assert_eq!(info.server_name, "world-weaver");
    let stats = memory
        .memory_stats(
            request("stats"),
            MemoryStatsArgs {
                detailed: Some(true),
            },
        )
        .await
        .unwrap();
    assert_eq!(stats.counts.procedures, 2);
    let nodes = stats.counts.graph_nodes;
    assert_eq!((nodes.episode, nodes.entity, nodes.procedure), (6, 1, 2));
    assert_eq!(stats.stores.len(), 2);
    assert!(
        stats
            .stores
            .iter()
            .all(|s| s.healthy && s.backend == "embedded")
    );
    assert!(
        stats
            .components
            .iter()
            .any(|c| c.name == "embedded" && c.memory_bytes > 0)
    );
    assert!(!stats.tracing.enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consolidation_does_not_hold_up_the_services_other_calls() {
    use std::sync::mpsc;
    use std::time::Duration;
    let memory = open("consolidation-concurrent").await;
    for i in 0..5 {
        memory
            .create_episode(
                request("episode"),
                SESSION,
                CreateEpisode {
                    content: format!("the nightly build broke on step {i}"),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let semantic = memory.host().component("semantic").unwrap().clone();
    let instances_before = semantic.instantiations();
    // The consolidation stops at its first progress report until the recall is done (or
    // 20 s pass): a recall queued behind it would only finish after that.
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let done_rx = Mutex::new(done_rx);
    let sink = move |_: u64, _: u64, _: &str| {
        let _ = started_tx.send(());
        let _ = done_rx
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(20));
    };
    let consolidating = {
        let memory = memory.clone();
        tokio::spawn(async move {
            memory
                .consolidate_now(
                    request("consolidate").with_progress(Arc::new(sink)),
                    ConsolidateNow {
                        kind: Some(ConsolidationKind::Deep),
                    },
                )
                .await
        })
    };
    tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the consolidation started");
    let recalled = memory
        .semantic_recall(
            request("recall"),
            ww_host::memory::SemanticRecall {
                query: "nightly build".to_owned(),
                ..Default::default()
            },
        )
        .await
        .expect("semantic_recall while consolidating");
    assert!(
        !consolidating.is_finished(),
        "the recall did not wait for the consolidation"
    );
    done_tx.send(()).unwrap();
    drop(done_tx); // later reports go straight through
    let report = consolidating.await.unwrap().expect("consolidate_now");
    assert_eq!(report.deep.unwrap().episodes_examined, 5);
    assert_eq!(recalled.count, 0, "no entity existed yet");
    // The consolidation ran on an instance of its own.
    assert_eq!(semantic.instantiations(), instances_before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_operation_is_an_internal_span_in_one_trace() {
    use ww_tests::otlp::{OtlpReceiver, kind};
    let receiver = OtlpReceiver::grpc().await;
    let memory = memory(
        &data_dir("service-spans"),
        ww_tests::otlp_telemetry(&receiver.endpoint(), "grpc"),
    )
    .await;
    skill(&memory, &["clear the cache"], 0.9, "builds")
        .await
        .unwrap();
    recall(&memory, "clear the cache", false).await;
    memory
        .consolidate_now(
            Request::new("mcp.consolidate_now"),
            ConsolidateNow {
                kind: Some(ConsolidationKind::All),
            },
        )
        .await
        .unwrap();
    memory.host().telemetry().flush().await;
    let spans = receiver
        .wait_for(std::time::Duration::from_secs(10), |s| {
            s.iter().any(|s| s.name == "mcp.consolidate_now")
        })
        .await;
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}"))
    };
    let create = named("procedural.create_skill");
    assert_eq!(create.kind, kind::INTERNAL);
    assert_eq!(create.attr_str("skill.domain"), Some("builds"));
    assert_eq!(
        named("procedural.recall_skill").attributes["recall.results"].as_i64(),
        Some(1)
    );
    // consolidate_now all: one trace, the three services' consolidation spans under its
    // root; each ran on an instance of its own, whose creation the trace shows too.
    let root = named("mcp.consolidate_now");
    for name in [
        "episodic.consolidate_light",
        "semantic.consolidate_deep",
        "procedural.consolidate_skills",
    ] {
        let span = named(name);
        assert_eq!(span.trace_id, root.trace_id, "{name}");
        assert_eq!(span.parent_span_id, root.span_id, "{name}");
        assert_eq!(span.kind, kind::INTERNAL, "{name}");
    }
    assert!(
        spans
            .iter()
            .any(|s| s.name == "semantic.instantiate" && s.parent_span_id == root.span_id)
    );
    let deep = named("semantic.consolidate_deep");
    assert!(deep.attributes.contains_key("consolidation.clusters"));
    // Its reads of the episodes are store calls nested under it.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "embedded.scroll" && s.parent_span_id == deep.span_id)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_consolidation_stops_at_its_next_step_and_says_what_it_did() {
    use tokio_util::sync::CancellationToken;
    use ww_tests::bench::{Words, fill};
    let memory = open("consolidation-cancelled").await;
    // More than one page (1,000) of episodes: reading them is more than one step.
    fill(&memory, SESSION, 1_100, &mut Words(7)).await;
    let episodic = memory.host().component("episodic").unwrap().clone();
    let semantic = memory.host().component("semantic").unwrap().clone();
    let semantic_instances = semantic.instantiations();
    // The client cancels as soon as the first progress report reaches it.
    let token = CancellationToken::new();
    let cancel = token.clone();
    let reports = Arc::new(Mutex::new(Vec::new()));
    let seen = reports.clone();
    let sink = move |done: u64, total: u64, message: &str| {
        seen.lock().unwrap().push((done, total, message.to_owned()));
        cancel.cancel();
    };
    let report = memory
        .consolidate_now(
            request("consolidate")
                .with_progress(Arc::new(sink))
                .with_cancellation(token),
            ConsolidateNow {
                kind: Some(ConsolidationKind::All),
            },
        )
        .await
        .expect("a cancelled consolidation still reports");
    assert!(report.cancelled);
    // Light consolidation read its first page, saw the cancellation and stopped there,
    // marking nothing; deep and skill consolidation never started.
    let light = report.light.expect("light ran");
    assert_eq!((light.examined, light.marked_duplicates), (1_000, 0));
    assert!(
        report.deep.is_none() && report.skill.is_none(),
        "{report:?}"
    );
    assert_eq!(reports.lock().unwrap().len(), 1, "{:?}", reports);
    assert_eq!(
        semantic.instantiations(),
        semantic_instances,
        "deep never ran"
    );
    // The services are fine: the next consolidation runs whole.
    let traps = episodic.traps();
    let report = memory
        .consolidate_now(
            request("consolidate"),
            ConsolidateNow {
                kind: Some(ConsolidationKind::All),
            },
        )
        .await
        .expect("consolidate_now after a cancelled one");
    assert!(!report.cancelled);
    assert_eq!(report.light.unwrap().examined, 1_100);
    assert_eq!(report.deep.unwrap().episodes_examined, 1_100);
    assert!(report.skill.is_some());
    assert_eq!(episodic.traps(), traps);
    let json = serde_json::to_value(&report).unwrap();
    assert!(
        json.get("cancelled").is_none(),
        "only said when true: {json}"
    );
}

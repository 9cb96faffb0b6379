//! Episodic memory through the host API: the real hash embedder, embedded store and
//! episodic service, on a real data directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use ww_host::memory::{
    CreateEpisode, CreateEpisodes, ErrorCode, MarkImportant, Memory, MemoryError, Outcome,
    QueryAtTime, RecallEpisodes, Recalled, arguments, format_time, now_ms,
};
use ww_host::plugins::Request;
use ww_tests::otlp::{OtlpReceiver, kind};
use ww_tests::{data_dir, memory, otlp_telemetry, telemetry};

const SESSION: &str = "session-a";
const DAY_MS: i64 = 86_400_000;

fn request(name: &str) -> Request {
    Request::new(format!("test.{name}"))
}

async fn open(dir: &Path) -> Memory {
    memory(dir, telemetry(&[])).await
}

async fn create(memory: &Memory, session: &str, episode: CreateEpisode) -> String {
    memory
        .create_episode(request("create"), session, episode)
        .await
        .expect("create_episode")
        .id
}

fn episode(content: &str, outcome: Outcome, valence: f64, age_days: f64) -> CreateEpisode {
    CreateEpisode {
        content: content.to_owned(),
        outcome: Some(outcome),
        valence: Some(valence),
        timestamp: Some(format_time(now_ms() - (age_days * DAY_MS as f64) as i64)),
        ..Default::default()
    }
}

async fn recall(memory: &Memory, session: &str, query: &str, limit: u32) -> Recalled {
    memory
        .recall_episodes(
            request("recall"),
            session,
            RecallEpisodes {
                query: query.to_owned(),
                limit: Some(limit),
                ..Default::default()
            },
        )
        .await
        .expect("recall_episodes")
}

fn ids(recalled: &Recalled) -> Vec<&str> {
    recalled
        .episodes
        .iter()
        .map(|e| e.episode.id.as_str())
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[tokio::test(flavor = "multi_thread")]
async fn the_score_has_four_parts_and_success_outranks_failure() {
    let dir = data_dir("episodic-outcome");
    let memory = open(&dir).await;
    let text = "deployed the service with a blue green rollout";
    let failure = create(&memory, SESSION, episode(text, Outcome::Failure, 0.5, 2.0)).await;
    let success = create(&memory, SESSION, episode(text, Outcome::Success, 0.5, 2.0)).await;
    create(
        &memory,
        SESSION,
        episode("lunch was a sandwich", Outcome::Success, 0.5, 2.0),
    )
    .await;

    let found = recall(&memory, SESSION, text, 10).await;
    assert_eq!(ids(&found)[..2], [success.as_str(), failure.as_str()]);
    let (first, second) = (&found.episodes[0].score, &found.episodes[1].score);
    for score in [first, second] {
        assert!(close(score.similarity, 1.0), "{score:?}");
        assert!(close(score.recency, (-0.1f64 * 2.0).exp()), "{score:?}");
        assert!(close(score.valence, 0.5));
        let total = 0.40 * score.similarity
            + 0.25 * score.recency
            + 0.20 * score.outcome
            + 0.15 * score.valence;
        assert!(close(score.total, total), "{score:?}");
    }
    assert_eq!((first.outcome, second.outcome), (1.0, 0.1));
    assert!(close(first.total - second.total, 0.20 * 0.9));
    // The unrelated episode shares no words: it ranks last, on similarity.
    assert!(found.episodes[2].score.similarity < 0.3, "{found:?}");

    // Raising the failure's valence to 1 adds 0.15 × 0.5 to its total, exactly.
    let change = memory
        .mark_important(
            request("mark"),
            SESSION,
            MarkImportant {
                episode_id: failure.clone(),
                new_valence: Some(1.0),
            },
        )
        .await
        .expect("mark_important");
    assert_eq!((change.old_valence, change.new_valence), (0.5, 1.0));
    let again = recall(&memory, SESSION, text, 10).await;
    let failure_score = &again.episodes[1].score;
    assert_eq!(again.episodes[1].episode.id, failure);
    assert!(close(failure_score.total - second.total, 0.15 * 0.5));
}

#[tokio::test(flavor = "multi_thread")]
async fn mark_important_moves_an_episode_up_and_clamps() {
    let dir = data_dir("episodic-important");
    let memory = open(&dir).await;
    let text = "refactored the parser into a state machine";
    let a = create(&memory, SESSION, episode(text, Outcome::Neutral, 0.5, 1.0)).await;
    let b = create(&memory, SESSION, episode(text, Outcome::Neutral, 0.5, 1.0)).await;
    let before = recall(&memory, SESSION, text, 2).await;
    let second = before.episodes[1].episode.id.clone();
    assert!([a.clone(), b.clone()].contains(&second));

    // Without a value, valence rises by 0.2: the second moves to first.
    let change = memory
        .mark_important(
            request("mark"),
            SESSION,
            MarkImportant {
                episode_id: second.clone(),
                new_valence: None,
            },
        )
        .await
        .expect("mark_important");
    assert!(close(change.old_valence, 0.5) && close(change.new_valence, 0.7));
    let after = recall(&memory, SESSION, text, 2).await;
    assert_eq!(after.episodes[0].episode.id, second);
    assert!(close(after.episodes[0].score.valence, 0.7));

    // Raising past 1 clamps.
    for expected in [0.9, 1.0, 1.0] {
        let change = memory
            .mark_important(
                request("mark"),
                SESSION,
                MarkImportant {
                    episode_id: second.clone(),
                    new_valence: None,
                },
            )
            .await
            .expect("mark_important");
        assert!(close(change.new_valence, expected), "{change:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_episode_loses_to_a_newer_equal_one_by_recency() {
    let dir = data_dir("episodic-recency");
    let memory = open(&dir).await;
    let text = "the cache invalidation bug came back";
    let old = create(&memory, SESSION, episode(text, Outcome::Partial, 0.5, 30.0)).await;
    let new = create(&memory, SESSION, episode(text, Outcome::Partial, 0.5, 1.0)).await;
    let found = recall(&memory, SESSION, text, 2).await;
    assert_eq!(ids(&found), [new.as_str(), old.as_str()]);
    let (newer, older) = (&found.episodes[0].score, &found.episodes[1].score);
    assert!(close(newer.recency, (-0.1f64).exp()), "{newer:?}");
    assert!(close(older.recency, (-3.0f64).exp()), "{older:?}");
    assert!(close(
        newer.total - older.total,
        0.25 * ((-0.1f64).exp() - (-3.0f64).exp())
    ));

    // A time range keeps only what happened within it.
    let window = memory
        .recall_episodes(
            request("recall"),
            SESSION,
            RecallEpisodes {
                query: text.to_owned(),
                time_end: Some(format_time(now_ms() - 10 * DAY_MS)),
                ..Default::default()
            },
        )
        .await
        .expect("recall");
    assert_eq!(ids(&window), [old.as_str()]);
    // So does an outcome filter.
    let failures = memory
        .recall_episodes(
            request("recall"),
            SESSION,
            RecallEpisodes {
                query: text.to_owned(),
                outcome: Some(Outcome::Failure),
                ..Default::default()
            },
        )
        .await
        .expect("recall");
    assert_eq!(failures.count, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn query_at_time_sees_only_what_was_known_and_changes_nothing() {
    let dir = data_dir("episodic-at-time");
    let memory = open(&dir).await;
    let text = "migrated the database to the new schema";
    let known = create(&memory, SESSION, episode(text, Outcome::Success, 0.5, 3.0)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let at = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later = create(&memory, SESSION, episode(text, Outcome::Success, 0.5, 0.0)).await;

    let query = || QueryAtTime {
        query: text.to_owned(),
        point_in_time: format_time(at),
        limit: Some(10),
        recency_weight: Some(0.3),
    };
    let then = memory
        .query_at_time(request("at"), SESSION, query())
        .await
        .expect("query_at_time");
    assert_eq!(ids(&then), [known.as_str()]);
    let score = &then.episodes[0].score;
    // The event was 3 days before creation, so about 3 days before `at`.
    let days = (at - now_ms() + 3 * DAY_MS) as f64 / DAY_MS as f64;
    assert!(
        (score.recency - (-0.1 * days).exp()).abs() < 1e-4,
        "{score:?}"
    );
    assert!(close(
        score.total,
        0.7 * score.similarity + 0.3 * score.recency
    ));

    // Read-only: asking again finds the same, with nothing reinforced.
    let again = memory
        .query_at_time(request("at"), SESSION, query())
        .await
        .expect("query_at_time");
    assert_eq!(again, then);
    assert_eq!(then.episodes[0].episode.access_count, 0);
    assert_eq!(then.episodes[0].episode.stability, 1.0);

    // Recall reinforces: access count +1 and S ← S + 0.1·(2 − S), each time.
    let mut stability = 1.0;
    for count in 1..=3 {
        let found = recall(&memory, SESSION, text, 10).await;
        assert_eq!(found.count, 2);
        stability += 0.1 * (2.0 - stability);
        for hit in &found.episodes {
            assert_eq!(hit.episode.access_count, count);
            assert!(close(hit.episode.stability, stability), "{hit:?}");
        }
    }
    // ... and query_at_time shows that stored state without adding to it.
    let seen = memory
        .query_at_time(request("at"), SESSION, query())
        .await
        .expect("query_at_time");
    assert_eq!(seen.episodes[0].episode.access_count, 3);
    assert!(close(seen.episodes[0].episode.stability, stability));
    assert_ne!(later, known);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_never_see_each_other() {
    let dir = data_dir("episodic-sessions");
    let memory = open(&dir).await;
    let text = "rotated the signing keys";
    let mine = create(&memory, "alice", episode(text, Outcome::Success, 0.5, 0.0)).await;
    let theirs = create(&memory, "bob", episode(text, Outcome::Success, 0.5, 0.0)).await;

    assert_eq!(
        ids(&recall(&memory, "alice", text, 10).await),
        [mine.as_str()]
    );
    assert_eq!(
        ids(&recall(&memory, "bob", text, 10).await),
        [theirs.as_str()]
    );
    assert_eq!(recall(&memory, "carol", text, 10).await.count, 0);
    let at = memory
        .query_at_time(
            request("at"),
            "bob",
            QueryAtTime {
                query: text.to_owned(),
                point_in_time: format_time(now_ms()),
                ..Default::default()
            },
        )
        .await
        .expect("query_at_time");
    assert_eq!(ids(&at), [theirs.as_str()]);

    // Another session's episode does not exist for bob.
    let error = memory
        .mark_important(
            request("mark"),
            "bob",
            MarkImportant {
                episode_id: mine.clone(),
                new_valence: Some(0.9),
            },
        )
        .await
        .expect_err("not bob's");
    assert_eq!(error.code, ErrorCode::NotFound);
    let unchanged = recall(&memory, "alice", text, 10).await;
    assert!(close(unchanged.episodes[0].episode.valence, 0.5));

    // Each session's chain links only its own episodes.
    let next = memory
        .create_episode(
            request("create"),
            "alice",
            episode("next", Outcome::Neutral, 0.5, 0.0),
        )
        .await
        .expect("create");
    assert_eq!(next.previous.as_deref(), Some(mine.as_str()));
}

fn expect_invalid(result: Result<impl std::fmt::Debug, MemoryError>, field: &str) {
    let error = result.expect_err("should be refused");
    assert_eq!(error.code, ErrorCode::ValidationError, "{error:?}");
    assert_eq!(error.field.as_deref(), Some(field), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_typed_error_and_corrupts_nothing() {
    let dir = data_dir("episodic-bad-input");
    let memory = open(&dir).await;
    let text = "compiled the kernel with new flags";
    let id = create(&memory, SESSION, episode(text, Outcome::Success, 0.5, 0.0)).await;
    let with = |f: &dyn Fn(&mut CreateEpisode)| {
        let mut e = episode(text, Outcome::Neutral, 0.5, 0.0);
        f(&mut e);
        e
    };
    let create_bad =
        async |e: CreateEpisode| memory.create_episode(request("bad"), SESSION, e).await;

    expect_invalid(
        create_bad(with(&|e| e.content = String::new())).await,
        "content",
    );
    expect_invalid(
        create_bad(with(&|e| e.content = "   ".into())).await,
        "content",
    );
    expect_invalid(
        create_bad(with(&|e| e.content = "x".repeat(1 << 20))).await,
        "content",
    );
    expect_invalid(
        create_bad(with(&|e| e.valence = Some(f64::NAN))).await,
        "valence",
    );
    expect_invalid(
        create_bad(with(&|e| e.valence = Some(1.5))).await,
        "valence",
    );
    expect_invalid(
        create_bad(with(&|e| e.valence = Some(-0.1))).await,
        "valence",
    );
    expect_invalid(
        create_bad(with(&|e| e.timestamp = Some("yesterday".into()))).await,
        "timestamp",
    );
    expect_invalid(
        create_bad(with(&|e| {
            e.timestamp = Some(format_time(now_ms() + 30 * DAY_MS))
        }))
        .await,
        "timestamp",
    );
    expect_invalid(
        create_bad(with(&|e| {
            e.context = BTreeMap::from([("project".into(), "p".repeat(5000))])
        }))
        .await,
        "context.project",
    );

    let recall_bad =
        async |r: RecallEpisodes| memory.recall_episodes(request("bad"), SESSION, r).await;
    let query = |f: &dyn Fn(&mut RecallEpisodes)| {
        let mut r = RecallEpisodes {
            query: text.to_owned(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    expect_invalid(
        recall_bad(query(&|r| r.query = String::new())).await,
        "query",
    );
    expect_invalid(
        recall_bad(query(&|r| r.query = "q".repeat(1 << 20))).await,
        "query",
    );
    expect_invalid(recall_bad(query(&|r| r.limit = Some(0))).await, "limit");
    expect_invalid(
        recall_bad(query(&|r| r.limit = Some(1_000_000))).await,
        "limit",
    );
    expect_invalid(
        recall_bad(query(&|r| r.offset = Some(u32::MAX))).await,
        "offset",
    );
    expect_invalid(
        recall_bad(query(&|r| r.time_start = Some("2026-13-45".into()))).await,
        "time_start",
    );
    expect_invalid(
        recall_bad(query(&|r| {
            r.time_start = Some(format_time(now_ms()));
            r.time_end = Some(format_time(now_ms() - DAY_MS));
        }))
        .await,
        "time_start",
    );

    let at_bad = |w: f64| QueryAtTime {
        query: text.to_owned(),
        point_in_time: format_time(now_ms()),
        recency_weight: Some(w),
        ..Default::default()
    };
    for weight in [f64::NAN, f64::INFINITY, -0.5, 2.0] {
        let result = memory
            .query_at_time(request("bad"), SESSION, at_bad(weight))
            .await;
        expect_invalid(result, "recency_weight");
    }

    let mark = |id: &str, valence: Option<f64>| MarkImportant {
        episode_id: id.to_owned(),
        new_valence: valence,
    };
    let error = memory
        .mark_important(request("bad"), SESSION, mark("no-such-episode", None))
        .await
        .expect_err("unknown id");
    assert_eq!(error.code, ErrorCode::NotFound);
    expect_invalid(
        memory
            .mark_important(request("bad"), SESSION, mark(&id, Some(f64::NAN)))
            .await,
        "new_valence",
    );
    expect_invalid(
        memory
            .mark_important(request("bad"), SESSION, mark(&id, Some(7.0)))
            .await,
        "new_valence",
    );

    // JSON arguments of the wrong shape are refused before any call, naming the field.
    let bad_json = [
        (json!({"content": 5}), "content"),
        (json!({"content": "x", "valence": "high"}), "valence"),
        (json!({"content": "x", "outcome": "great"}), "outcome"),
        (
            json!({"content": "x", "context": {"project": 1}}),
            "context.project",
        ),
        (json!({"content": "x", "surprise": true}), "surprise"),
        (json!({}), "content"),
    ];
    for (value, field) in bad_json {
        expect_invalid(arguments::<CreateEpisode>(value), field);
    }
    expect_invalid(
        arguments::<RecallEpisodes>(json!({"query": "q", "limit": -1})),
        "limit",
    );

    // Nothing above changed anything: one episode, as it was.
    let found = recall(&memory, SESSION, text, 10).await;
    assert_eq!(ids(&found), [id.as_str()]);
    assert!(close(found.episodes[0].episode.valence, 0.5));
    assert_eq!(found.episodes[0].episode.access_count, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_and_the_session_chain_survive_a_restart() {
    let dir = data_dir("episodic-restart");
    let first = {
        let memory = open(&dir).await;
        let a = create(
            &memory,
            SESSION,
            episode("first thing", Outcome::Success, 0.5, 0.0),
        )
        .await;
        let b = create(
            &memory,
            SESSION,
            episode("second thing", Outcome::Success, 0.5, 0.0),
        )
        .await;
        (a, b)
    };
    let memory = open(&dir).await;
    let found = recall(&memory, SESSION, "thing", 10).await;
    let mut got = ids(&found);
    got.sort();
    let mut want = vec![first.0.as_str(), first.1.as_str()];
    want.sort();
    assert_eq!(got, want);
    let second = found
        .episodes
        .iter()
        .find(|e| e.episode.id == first.1)
        .expect("b");
    assert_eq!(second.episode.previous.as_deref(), Some(first.0.as_str()));
    // A new episode after the restart continues the session's chain.
    let third = memory
        .create_episode(
            request("create"),
            SESSION,
            episode("third thing", Outcome::Neutral, 0.5, 0.0),
        )
        .await
        .expect("create");
    assert_eq!(third.previous.as_deref(), Some(first.1.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_write_survives_kill_9_of_the_host() {
    use std::io::BufRead as _;
    let dir = data_dir("episodic-kill");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_episode_writer"))
        .arg(&dir)
        .arg(SESSION)
        .arg("100000")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the writer");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 25 {
        let line = lines
            .next()
            .expect("the writer stopped early")
            .expect("line");
        acknowledged.push(line);
    }
    child.kill().expect("kill -9"); // SIGKILL: no destructor, no flush, no goodbye
    child.wait().expect("reap");

    let memory = open(&dir).await;
    let mut stored = BTreeMap::new();
    for offset in (0..).step_by(100) {
        let page = memory
            .recall_episodes(
                request("recall"),
                SESSION,
                RecallEpisodes {
                    query: "crash test episode".to_owned(),
                    limit: Some(100),
                    offset: Some(offset),
                    ..Default::default()
                },
            )
            .await
            .expect("recall");
        if page.count == 0 {
            break;
        }
        for hit in page.episodes {
            stored.insert(hit.episode.id.clone(), hit.episode.previous.clone());
        }
    }
    assert!(
        stored.len() >= acknowledged.len(),
        "{} < {}",
        stored.len(),
        acknowledged.len()
    );
    for line in &acknowledged {
        let (id, previous) = line.split_once(' ').expect("id previous");
        let stored_previous = stored.get(id).unwrap_or_else(|| panic!("{id} lost"));
        assert_eq!(stored_previous.as_deref().unwrap_or(""), previous);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recall_is_one_trace_with_the_boundary_spans_nested_in_order() {
    let receiver = OtlpReceiver::grpc().await;
    let dir = data_dir("episodic-trace");
    let memory = memory(&dir, otlp_telemetry(&receiver.endpoint(), "grpc")).await;
    create(
        &memory,
        SESSION,
        episode("traced episode", Outcome::Success, 0.5, 0.0),
    )
    .await;
    memory
        .recall_episodes(
            Request::new("mcp.recall_episodes"),
            SESSION,
            RecallEpisodes {
                query: "traced".to_owned(),
                ..Default::default()
            },
        )
        .await
        .expect("recall");
    memory.host().telemetry().flush().await;
    let spans = receiver
        .wait_for(Duration::from_secs(10), |s| {
            s.iter().any(|s| s.name == "mcp.recall_episodes")
        })
        .await;
    let root = spans
        .iter()
        .find(|s| s.name == "mcp.recall_episodes")
        .expect("root");
    let trace: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    let named = |name: &str| {
        *trace.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no {name} in {:?}",
                trace.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let recall = named("episodic.recall");
    let embed = named("embedder.embed");
    let search = named("embedded.search");
    let update = named("embedded.change-payload");
    let scoring = named("scoring_computation");
    assert_eq!(recall.parent_span_id, root.span_id);
    assert_eq!(recall.kind, kind::INTERNAL);
    for child in [embed, search, update, scoring] {
        assert_eq!(child.parent_span_id, recall.span_id, "{}", child.name);
    }
    for boundary in [embed, search, update] {
        assert_eq!(boundary.kind, kind::CLIENT, "{}", boundary.name);
    }
    // In order: embed, then search, then scoring, then the reinforcing write.
    assert!(embed.end_unix_nano <= search.start_unix_nano);
    assert!(search.end_unix_nano <= scoring.start_unix_nano);
    assert!(scoring.end_unix_nano <= update.start_unix_nano);
    assert!(
        recall.start_unix_nano >= root.start_unix_nano
            && recall.end_unix_nano <= root.end_unix_nano
    );

    assert_eq!(search.attr_str("db.system.name"), Some("embedded"));
    assert_eq!(search.attr_str("db.operation.name"), Some("search"));
    assert_eq!(search.attr_str("db.collection.name"), Some("ww_episodes"));
    assert_eq!(
        search.attributes["db.operation.parameter.limit"].as_i64(),
        Some(10)
    );
    assert_eq!(embed.attr_str("gen_ai.operation.name"), Some("embeddings"));
    assert_eq!(recall.attributes["recall.results"].as_i64(), Some(1));
    assert!(recall.attributes["recall.top_score"].as_f64().is_some());
    assert!(update.attributes.contains_key("db.operation.batch.size"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_host_cannot_open_a_data_directory_in_use() {
    let dir = data_dir("episodic-lock");
    let first = open(&dir).await;
    let specs = ww_tests::default_config(&dir).component_specs();
    let config = ww_host::plugins::HostConfig {
        components: specs.clone(),
        cache_dir: Some(ww_tests::cache_dir()),
        ..Default::default()
    };
    let refused = ww_host::plugins::ComponentHost::load(config, telemetry(&[]))
        .await
        .err()
        .expect("the directory is in use");
    let message = refused.to_string();
    assert!(
        message.contains("in use by process") && message.contains(&std::process::id().to_string()),
        "{message}"
    );
    // Closed, it opens again with what was written.
    let written = episode("written before the second host", Outcome::Neutral, 0.5, 0.0);
    let id = create(&first, "s", written).await;
    drop(first);
    let second = open(&dir).await;
    assert_eq!(
        recall(&second, "s", "written", 1).await.episodes[0]
            .episode
            .id,
        id
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_stored_in_order_once_and_all_or_nothing() {
    let dir = data_dir("episodic-batch");
    let memory = open(&dir).await;
    let before = create(
        &memory,
        SESSION,
        episode("before the batch", Outcome::Neutral, 0.5, 0.0),
    )
    .await;
    let given = "0190f1c4-7f1e-7d3a-9a4b-0c1d2e3f4a5b";
    let batch = |contents: &[&str]| CreateEpisodes {
        episodes: contents
            .iter()
            .enumerate()
            .map(|(i, content)| CreateEpisode {
                content: (*content).to_owned(),
                // The second episode's id is the caller's (upper case: ids are kept as
                // the store keeps them).
                id: (i == 1).then(|| given.to_uppercase()),
                ..Default::default()
            })
            .collect(),
    };
    let stored = memory
        .create_episodes(request("batch"), SESSION, batch(&["one", "two", "three"]))
        .await
        .expect("create_episodes");
    assert_eq!((stored.created, stored.existing), (3, 0));
    let ids: Vec<&str> = stored.episodes.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids[1], given);
    // In order, each after the one before it, the first after the session's last.
    assert_eq!(
        stored.episodes[0].previous.as_deref(),
        Some(before.as_str())
    );
    assert_eq!(stored.episodes[1].previous.as_deref(), Some(ids[0]));
    assert_eq!(stored.episodes[2].previous.as_deref(), Some(ids[1]));
    assert_eq!(
        recall(&memory, SESSION, "one two three", 10)
            .await
            .episodes
            .len(),
        4
    );

    // Retried (the same id): nothing stored twice; the others are new episodes.
    let again = memory
        .create_episodes(request("batch"), SESSION, batch(&["one", "two", "three"]))
        .await
        .expect("retry");
    assert_eq!((again.created, again.existing), (2, 1));
    assert!(again.episodes[1].existing && again.episodes[1].id == given);
    assert_eq!(
        recall(&memory, SESSION, "one two three", 10)
            .await
            .episodes
            .len(),
        6
    );
    // create_episode with that id: the stored episode, not a new one.
    let single = memory
        .create_episode(
            request("create"),
            SESSION,
            CreateEpisode {
                content: "two".to_owned(),
                id: Some(given.to_owned()),
                ..Default::default()
            },
        )
        .await
        .expect("create_episode with an id");
    assert!(single.existing);
    // Another session cannot take the id.
    let taken = memory
        .create_episodes(request("batch"), "session-b", batch(&["x", "y"]))
        .await;
    expect_invalid(taken, "id");

    // One bad episode fails the whole call, naming it; nothing of it is stored.
    let mut bad = batch(&["four", "five", "six"]);
    bad.episodes[1].id = None;
    bad.episodes[2].valence = Some(f64::NAN);
    expect_invalid(
        memory.create_episodes(request("batch"), SESSION, bad).await,
        "episodes[2].valence",
    );
    let mut bad = batch(&["four", "five"]);
    bad.episodes[0].id = Some("not-a-uuid".to_owned());
    expect_invalid(
        memory.create_episodes(request("batch"), SESSION, bad).await,
        "episodes[0].id",
    );
    let too_many = CreateEpisodes {
        episodes: vec![
            CreateEpisode {
                content: "x".to_owned(),
                ..Default::default()
            };
            257
        ],
    };
    expect_invalid(
        memory
            .create_episodes(request("batch"), SESSION, too_many)
            .await,
        "episodes",
    );
    assert_eq!(
        recall(&memory, SESSION, "four five six x", 10)
            .await
            .episodes
            .len(),
        6
    );
    let _ = std::fs::remove_dir_all(&dir);
}

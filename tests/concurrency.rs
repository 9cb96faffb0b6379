//! Requests that wait do not queue behind each other. With the embedder behind an
//! endpoint that answers slowly, concurrent recalls wait for it together (the services
//! and the remote embedder have pools of instances), each keeps its own trace, and the
//! writes a service declares serial still happen one at a time on one instance.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ww_host::memory::{CreateEpisode, Memory, RecallEpisodes};
use ww_host::plugins::Request;
use ww_tests::embeddings::EmbeddingEndpoint;
use ww_tests::otlp::{OtlpReceiver, ReceivedSpan};
use ww_tests::{data_dir, memory_with, otlp_telemetry};

const SESSION: &str = "concurrency";
const DIMENSION: usize = 64;
/// Long beside a recall's own work, so waiting is what a request mostly does.
const DELAY: Duration = Duration::from_millis(100);
const CLIENTS: usize = 8;

async fn recall(memory: &Memory, name: String, query: &str) -> usize {
    memory
        .recall_episodes(
            Request::new(name),
            SESSION,
            RecallEpisodes {
                query: query.to_owned(),
                limit: Some(3),
                ..Default::default()
            },
        )
        .await
        .expect("recall_episodes")
        .count
}

/// `CLIENTS` recalls at once, named `<prefix>.<i>`; how long until the last finished.
async fn recall_together(memory: &Arc<Memory>, prefix: &str) -> Duration {
    let start = Instant::now();
    let calls: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let memory = memory.clone();
            let name = format!("{prefix}.{i}");
            tokio::spawn(async move { recall(&memory, name, "deploy the cache").await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.expect("task"), 3);
    }
    start.elapsed()
}

/// The trace rooted at the span named `root`: every span of its trace id, each checked
/// to hang from the root through parents in that trace.
fn trace_of<'a>(spans: &'a [ReceivedSpan], root: &str) -> Vec<&'a ReceivedSpan> {
    let root = spans
        .iter()
        .find(|s| s.name == root)
        .unwrap_or_else(|| panic!("no root {root}"));
    assert!(root.parent_span_id.is_empty(), "{} is a root", root.name);
    let trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    let by_id: BTreeMap<&str, &ReceivedSpan> =
        trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    for span in &trace {
        let mut at = *span;
        while at.span_id != root.span_id {
            at = by_id.get(at.parent_span_id.as_str()).unwrap_or_else(|| {
                panic!(
                    "{} in {}'s trace has a parent outside it",
                    span.name, root.name
                )
            });
        }
    }
    trace
}

/// The names of a trace's spans, sorted, but for instantiations (a request that found
/// no idle instance pays for one).
fn names(trace: &[&ReceivedSpan]) -> Vec<String> {
    let mut names: Vec<String> = trace
        .iter()
        .filter(|s| !s.name.ends_with(".instantiate"))
        .map(|s| s.name.clone())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_recalls_wait_for_a_slow_embedder_together_and_keep_their_own_traces() {
    let endpoint = EmbeddingEndpoint::start(DIMENSION, DELAY).await;
    let receiver = OtlpReceiver::grpc().await;
    let dir = data_dir("concurrency-recall");
    let config = endpoint.config(&dir, DIMENSION);
    let memory = Arc::new(memory_with(config, otlp_telemetry(&receiver.endpoint(), "grpc")).await);
    for content in [
        "deploy the cache",
        "cache deploy failed",
        "the cache is warm",
    ] {
        memory
            .create_episode(
                Request::new("test.create"),
                SESSION,
                CreateEpisode {
                    content: content.to_owned(),
                    ..Default::default()
                },
            )
            .await
            .expect("create_episode");
    }
    // Every instance the clients will use made first, so neither figure pays for one.
    recall_together(&memory, "test.warm").await;

    let start = Instant::now();
    assert_eq!(
        recall(&memory, "test.alone".to_owned(), "deploy the cache").await,
        3
    );
    let alone = start.elapsed();
    let most_before = endpoint.most_in_flight();
    let together = recall_together(&memory, "test.together").await;

    // Served one after another, the recalls would take CLIENTS times as long as one;
    // they waited on the endpoint at once instead.
    assert!(
        together < alone * (CLIENTS as u32 / 2),
        "{CLIENTS} concurrent recalls took {together:?}, one alone {alone:?}"
    );
    assert!(
        endpoint.most_in_flight() >= CLIENTS / 2 && most_before >= CLIENTS / 2,
        "at most {} embedding requests were in flight at once",
        endpoint.most_in_flight()
    );

    // Nothing lost or mis-parented: each recall is a whole trace of its own, span for
    // span the shape of the recall made alone.
    memory.host().telemetry().flush().await;
    let spans = receiver
        .wait_for(Duration::from_secs(10), |s| {
            let roots = |prefix: &str| s.iter().filter(|s| s.name.starts_with(prefix)).count();
            roots("test.alone") == 1 && roots("test.together.") == CLIENTS
        })
        .await;
    let alone_trace = trace_of(&spans, "test.alone");
    let shape = names(&alone_trace);
    assert!(shape.contains(&"episodic.recall".to_owned()), "{shape:?}");
    assert!(
        alone_trace
            .iter()
            .any(|s| s.name.contains("/v1/embeddings")),
        "{shape:?}"
    );
    let mut trace_ids = HashSet::new();
    for i in 0..CLIENTS {
        let trace = trace_of(&spans, &format!("test.together.{i}"));
        let mut together_shape = names(&trace);
        let root = format!("test.together.{i}");
        together_shape.retain(|n| *n != root);
        let mut alone_shape = shape.clone();
        alone_shape.retain(|n| n != "test.alone");
        assert_eq!(together_shape, alone_shape, "recall {i}");
        assert!(trace_ids.insert(trace[0].trace_id.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_in_one_session_still_form_one_chain() {
    let endpoint = EmbeddingEndpoint::start(DIMENSION, Duration::from_millis(20)).await;
    let dir = data_dir("concurrency-create");
    let memory =
        Arc::new(memory_with(endpoint.config(&dir, DIMENSION), ww_tests::telemetry(&[])).await);
    // `create-episode` is serial (episodic's `calls!`): however many episodic instances
    // serve recalls, creates run one at a time on one of them, which remembers the
    // session's latest episode. Otherwise two would take the same predecessor.
    let creates: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let memory = memory.clone();
            tokio::spawn(async move {
                memory
                    .create_episode(
                        Request::new("test.create"),
                        SESSION,
                        CreateEpisode {
                            content: format!("step {i} of the plan"),
                            ..Default::default()
                        },
                    )
                    .await
                    .expect("create_episode")
                    .id
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for create in creates {
        ids.insert(create.await.expect("task"));
    }
    let found = memory
        .recall_episodes(
            Request::new("test.recall"),
            SESSION,
            RecallEpisodes {
                query: "step of the plan".to_owned(),
                limit: Some(20),
                ..Default::default()
            },
        )
        .await
        .expect("recall_episodes");
    assert_eq!(found.count, CLIENTS);
    let previous: Vec<Option<String>> = found
        .episodes
        .iter()
        .map(|e| e.episode.previous.clone())
        .collect();
    // One first episode; every other follows a distinct one of the others.
    assert_eq!(
        previous.iter().filter(|p| p.is_none()).count(),
        1,
        "{previous:?}"
    );
    let followed: HashSet<&String> = previous.iter().flatten().collect();
    assert_eq!(
        followed.len(),
        CLIENTS - 1,
        "two episodes follow the same one: {previous:?}"
    );
    assert!(followed.iter().all(|id| ids.contains(*id)));
    let episodic = memory.host().component("episodic").expect("episodic");
    assert!(episodic.instances() > 1, "a pool of episodic instances");
    assert!(episodic.calls().is_serial("create-episode"));
}

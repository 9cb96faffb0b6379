//! The model embedder (all-MiniLM-L6-v2 in a component), called through a real host, and
//! the default configuration that serves it: recall by paraphrase, the trace of its
//! work, bad input, a pool of instances; a store written by another embedder refused,
//! and rebuilt by re-embedding.

use std::sync::Arc;
use std::time::Duration;

use ww_host::memory::{
    CheckError, CreateEpisode, Memory, RecallEpisodes, Recalled, ReembedTarget, arguments,
};
use ww_host::plugins::Request;
use ww_tests::otlp::OtlpReceiver;
use ww_tests::{
    data_dir, default_config, embed, memory_with, model_config, model_embedder, otlp_telemetry,
    telemetry,
};

const SESSION: &str = "session-m";

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paraphrases_are_close_and_batches_equal_single_texts() {
    let host = model_embedder(1).await;
    let vectors = embed(
        &host,
        &[
            "Fixed the flaky login test by waiting for the session cookie",
            "how did we stabilise the intermittent sign-in check?",
            "bought milk, eggs and bread at the market",
        ],
    )
    .await
    .expect("embed");
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
    }
    let paraphrase = cosine(&vectors[0], &vectors[1]);
    let unrelated = cosine(&vectors[1], &vectors[2]);
    assert!(
        paraphrase > unrelated + 0.2,
        "paraphrase {paraphrase} vs unrelated {unrelated}"
    );
    // Padding a short text to a long one in the same pass must not change its vector.
    for (i, text) in [
        "Fixed the flaky login test by waiting for the session cookie",
        "bought milk, eggs and bread at the market",
    ]
    .into_iter()
    .enumerate()
    {
        let alone = embed(&host, &[text]).await.expect("embed");
        let index = if i == 0 { 0 } else { 2 };
        let same = cosine(&alone[0], &vectors[index]);
        assert!(same > 0.9999, "{text:?}: {same}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clean_error_or_a_recorded_cut_never_a_trap() {
    let host = model_embedder(1).await;
    // An empty text: the zero vector, as the interface says.
    let empty = embed(&host, &["", "  "]).await.expect("embed");
    assert!(
        empty
            .iter()
            .all(|v| v.len() == 384 && v.iter().all(|x| *x == 0.0))
    );
    // A 1 MB text of multi-byte characters: cut at a character boundary, embedded.
    let long = "é".repeat(512 * 1024);
    let vectors = embed(&host, &[long.as_str()])
        .await
        .expect("a long text is cut");
    assert_eq!(vectors[0].len(), 384);
    // Too many texts in one call: the embedding error, not a trap or a deadline.
    let many = vec!["a short text"; 10_000];
    let error = embed(&host, &many)
        .await
        .expect_err("10,000 texts are refused");
    assert_eq!(error, "embedding");
    // Too many tokens in one call: refused before any inference.
    let heavy = "word ".repeat(300);
    let error = embed(&host, &vec![heavy.as_str(); 200])
        .await
        .expect_err("too many tokens");
    assert_eq!(error, "embedding");
    // The instance is still good.
    assert_eq!(embed(&host, &["fine"]).await.expect("embed").len(), 1);
    let traps: u64 = host.components().map(|(c, _)| c.traps()).sum();
    assert_eq!(traps, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_get_instances_of_their_own() {
    let host = Arc::new(model_embedder(2).await);
    let batch = vec!["a sentence of a dozen words about nothing in particular at all"; 64];
    let (a, b) = tokio::join!(embed(&host, &batch), embed(&host, &batch));
    assert_eq!(a.expect("first").len(), 64);
    assert_eq!(b.expect("second").len(), 64);
    let (component, _) = host.components().next().expect("the embedder");
    assert_eq!(component.instances(), 2);
    assert_eq!(
        component.instantiations(),
        2,
        "the second call did not wait for the first's instance"
    );
}

/// What the agent asks, in words that share no content word with the answer.
const PARAPHRASE: &str = "how did we stabilise the intermittent sign-in check?";
/// The answer, and memories about other things.
const MEMORIES: [&str; 5] = [
    "Fixed the flaky login test by waiting for the session cookie",
    "Bought milk, eggs and bread at the market",
    "Deployed the billing service to production on Friday",
    "Reviewed the quarterly budget spreadsheet with finance",
    "Renamed the database columns to snake_case",
];

async fn store(memory: &Memory, content: &str) {
    memory
        .create_episode(
            Request::new("test.create"),
            SESSION,
            arguments::<CreateEpisode>(serde_json::json!({ "content": content }))
                .expect("arguments"),
        )
        .await
        .expect("create_episode");
}

async fn recall_paraphrase(memory: &Memory) -> Recalled {
    memory
        .recall_episodes(
            Request::new("test.recall"),
            SESSION,
            arguments::<RecallEpisodes>(serde_json::json!({ "query": PARAPHRASE, "limit": 3 }))
                .expect("arguments"),
        )
        .await
        .expect("recall_episodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_finds_a_paraphrase_that_shares_no_content_word_first() {
    let dir = data_dir("model-paraphrase");
    let receiver = OtlpReceiver::grpc().await;
    let memory = memory_with(
        model_config(&dir),
        otlp_telemetry(&receiver.endpoint(), "grpc"),
    )
    .await;
    for content in MEMORIES {
        store(&memory, content).await;
    }
    let recalled = recall_paraphrase(&memory).await;
    let first = &recalled.episodes[0];
    assert!(
        first
            .episode
            .content
            .starts_with("Fixed the flaky login test"),
        "{:?}",
        recalled
            .episodes
            .iter()
            .map(|e| &e.episode.content)
            .collect::<Vec<_>>()
    );
    assert!((0.0..=1.0).contains(&first.score.similarity));

    // The trace shows the model's work under the host's boundary span.
    let spans = receiver
        .wait_for(Duration::from_secs(30), |spans| {
            spans.iter().any(|s| s.name == "scoring_computation")
        })
        .await;
    let boundary = spans
        .iter()
        .rfind(|s| s.name == "embedder.embed")
        .expect("embedder.embed");
    let model = spans
        .iter()
        .find(|s| s.name == "bert.embed" && s.parent_span_id == boundary.span_id)
        .expect("bert.embed under embedder.embed");
    assert_eq!(
        model.attr_str("gen_ai.request.model"),
        Some("sentence-transformers/all-MiniLM-L6-v2")
    );
    assert!(
        model
            .attributes
            .get("gen_ai.usage.input_tokens")
            .and_then(|v| v.as_i64())
            > Some(5)
    );
    assert_eq!(
        model
            .attributes
            .get("ww.embedder.batch_size")
            .and_then(|v| v.as_i64()),
        Some(1)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_another_embedder_is_refused_until_reembedded() {
    let dir = data_dir("model-reembed");
    {
        // Traced: each episode records the span that stored it, which re-embedding keeps.
        let hashed = memory_with(
            default_config(&dir),
            telemetry(&[("WW_OTEL_CONSOLE", "true")]),
        )
        .await;
        for content in &MEMORIES[..3] {
            store(&hashed, content).await;
        }
        hashed.check_embedder().await.expect("its own embedder");
    }
    let memory: Memory = memory_with(model_config(&dir), telemetry(&[])).await;
    match memory.check_embedder().await {
        Err(CheckError::Changed(changed)) => {
            let message = changed.to_string();
            assert!(message.contains("hash-v1"), "{message}");
            assert!(message.contains("ww-memory reembed"), "{message}");
            assert_eq!(changed.mismatches.len(), 1);
            assert_eq!(changed.mismatches[0].points, 3);
        }
        other => panic!("not refused: {other:?}"),
    }
    // A page at a time, as the command does; memories are kept, vectors rebuilt.
    let mut after = None;
    let mut rebuilt = 0;
    loop {
        let page = memory
            .reembed_page(ReembedTarget::Episodes, after, 2)
            .await
            .expect("reembed");
        rebuilt += page.rebuilt;
        assert_eq!(page.total, 3);
        match page.next {
            Some(next) => {
                // Not done yet: still refused.
                assert!(memory.check_embedder().await.is_err());
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(rebuilt, 3);
    memory
        .check_embedder()
        .await
        .expect("rebuilt with the model");
    let recalled = recall_paraphrase(&memory).await;
    assert_eq!(recalled.episodes.len(), 3);
    assert!(
        recalled
            .episodes
            .iter()
            .all(|hit| hit.episode.created_by_trace.is_some()),
        "re-embedding keeps who wrote each memory"
    );
    assert!(
        recalled.episodes[0]
            .episode
            .content
            .starts_with("Fixed the flaky")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

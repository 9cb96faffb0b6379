//! `wasi:nn` in the host: the model embedder's forward pass run by ONNX Runtime, against
//! the same model run inside the component (candle); the fallback when the host has no
//! ONNX Runtime; graphs that cannot load; the trace of the model's work.

use std::path::PathBuf;
use std::time::Duration;

use ww_host::inference::{InferenceConfig, InferencePath};
use ww_host::plugins::ComponentHost;
use ww_tests::otlp::OtlpReceiver;
use ww_tests::{embed, inference, model_dir, model_embedder_with, started_host};

/// Texts of different lengths, embedded in one call (so one pass pads them together).
const TEXTS: [&str; 6] = [
    "When did Caroline go to the LGBTQ support group?",
    "Yes, last Friday!",
    "Fixed the flaky login test by waiting for the session cookie",
    "Melanie painted a sunrise over the lake last year and said it was the best thing she had made since she started painting again after the move",
    "bought milk, eggs and bread at the market",
    "ok",
];

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn embedder_inference(host: &ComponentHost) -> InferencePath {
    let (component, _) = host.components().next().expect("the embedder");
    component
        .inference()
        .expect("a model component says how it runs")
}

/// A model directory like the default one but for `model.onnx`: each file linked (hard
/// links, or copies across file systems: a component cannot follow a symbolic link out
/// of its directory), the graph written by `graph` (absent when `None`).
fn model_copy(name: &str, graph: Option<&[u8]>) -> PathBuf {
    // Beside the model (one file system: hard links work), in target/.
    let dir = model_dir()
        .parent()
        .expect("the models' directory")
        .join(format!("test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("1_Pooling")).expect("model dir");
    let source = model_dir();
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        std::fs::hard_link(source.join(file), dir.join(file))
            .or_else(|_| std::fs::copy(source.join(file), dir.join(file)).map(drop))
            .expect("link or copy");
    }
    if let Some(bytes) = graph {
        std::fs::write(dir.join("model.onnx"), bytes).expect("write model.onnx");
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_runs_the_model_as_the_component_does() {
    let native = model_embedder_with(1, model_dir(), inference())
        .await
        .expect("load with ONNX Runtime");
    let here = model_embedder_with(1, model_dir(), InferenceConfig::default())
        .await
        .expect("load without");
    let a = embed(&native, &TEXTS).await.expect("embed through wasi:nn");
    let b = embed(&here, &TEXTS).await.expect("embed in the component");
    match embedder_inference(&native) {
        InferencePath::WasiNn {
            file,
            sessions,
            threads,
        } => {
            assert!(file.ends_with("model.onnx"), "{}", file.display());
            assert_eq!(sessions, 1);
            assert!(threads >= 1);
        }
        other => panic!("not through wasi:nn: {other}"),
    }
    assert!(
        matches!(embedder_inference(&here), InferencePath::InComponent { .. }),
        "{}",
        embedder_inference(&here)
    );
    assert_eq!(a.len(), TEXTS.len());
    for ((text, x), y) in TEXTS.iter().zip(&a).zip(&b) {
        assert_eq!(x.len(), 384);
        let same = cosine(x, y);
        // The same arithmetic in another order: float rounding only.
        assert!(1.0 - same < 1e-4, "{text:?}: cosine {same}");
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-3, "{text:?}: an element differs by {worst}");
    }
    // Padding in a shared pass changes nothing through the host either.
    let alone = embed(&native, &TEXTS[1..2]).await.expect("embed");
    assert!(1.0 - cosine(&alone[0], &a[1]) < 1e-5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_onnx_runtime_the_embedder_serves_and_says_so() {
    let missing = std::env::temp_dir().join("no-such-dir/libonnxruntime.so");
    let host = model_embedder_with(
        1,
        model_dir(),
        InferenceConfig {
            library: Some(missing.clone()),
            threads: None,
        },
    )
    .await
    .expect("a host without the library still loads");
    match embedder_inference(&host) {
        InferencePath::InComponent { reason } => {
            assert!(reason.contains(&missing.display().to_string()), "{reason}");
        }
        other => panic!("{other}"),
    }
    let vectors = embed(&host, &TEXTS[..2]).await.expect("still serves");
    assert_eq!(vectors.len(), 2);
    assert!(vectors.iter().all(|v| v.len() == 384));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_without_a_graph_runs_the_model_in_the_component() {
    let dir = model_copy("no-graph", None);
    let host = model_embedder_with(1, dir.clone(), inference())
        .await
        .expect("load");
    match embedder_inference(&host) {
        InferencePath::InComponent { reason } => assert!(reason.contains("model.onnx"), "{reason}"),
        other => panic!("{other}"),
    }
    assert_eq!(
        embed(&host, &TEXTS[..1]).await.expect("embed")[0].len(),
        384
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_graph_refuses_the_start_and_names_the_file() {
    for (name, bytes) in [
        ("garbage", &b"this is not an ONNX graph"[..]),
        ("empty", &b""[..]),
    ] {
        let dir = model_copy(name, Some(bytes));
        let error = match model_embedder_with(1, dir.clone(), inference()).await {
            Ok(_) => panic!("{name}: a corrupt model.onnx was accepted"),
            Err(error) => ww_host::report::chain(&error),
        };
        let file = dir.join("model.onnx");
        assert!(
            error.contains(&file.display().to_string()),
            "{name}: {error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_through_the_host_is_a_clean_error_never_a_trap() {
    let host = model_embedder_with(1, model_dir(), inference())
        .await
        .expect("load");
    let empty = embed(&host, &["", " "]).await.expect("empty texts");
    assert!(empty.iter().all(|v| v.iter().all(|x| *x == 0.0)));
    let long = "word ".repeat(200_000);
    assert_eq!(
        embed(&host, &[long.as_str()]).await.expect("cut")[0].len(),
        384
    );
    let many = vec!["a short text"; 10_000];
    assert_eq!(
        embed(&host, &many).await.expect_err("too many"),
        "embedding"
    );
    // A call of many long texts: more tokens than one call may hold.
    let heavy = "word ".repeat(300);
    assert_eq!(
        embed(&host, &vec![heavy.as_str(); 200])
            .await
            .expect_err("too many tokens"),
        "embedding"
    );
    assert_eq!(
        embed(&host, &["fine"]).await.expect("still serving").len(),
        1
    );
    let (component, _) = host.components().next().expect("the embedder");
    assert_eq!(component.traps(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_shows_the_inference_under_the_model_span() {
    let receiver = OtlpReceiver::grpc().await;
    let spec = ww_host::plugins::ComponentSpec {
        model_dir: Some(model_dir()),
        settings: vec![("model".to_owned(), "minilm-test".to_owned())],
        ..ww_tests::component("embedder_bert.wasm")
    };
    let host = started_host(
        vec![spec],
        ww_host::plugins::CallLimits {
            memory_bytes: 512 << 20,
            ..Default::default()
        },
        ww_tests::recording(&receiver),
    )
    .await;
    embed(&host, &TEXTS[..3]).await.expect("embed");
    let spans = receiver
        .wait_for(Duration::from_secs(30), |spans| {
            spans.iter().any(|s| s.name == "onnx.run")
        })
        .await;
    let run = spans
        .iter()
        .find(|s| s.name == "onnx.run")
        .expect("onnx.run");
    let forward = spans
        .iter()
        .find(|s| s.span_id == run.parent_span_id)
        .expect("the run's parent");
    assert_eq!(forward.name, "bert.forward");
    assert_eq!(run.trace_id, forward.trace_id);
    let model = spans
        .iter()
        .find(|s| s.span_id == forward.parent_span_id)
        .expect("the pass's parent");
    assert_eq!(model.name, "bert.embed");
    assert_eq!(run.attr_str("ww.inference.backend"), Some("onnx"));
    assert_eq!(run.attr_str("gen_ai.request.model"), Some("minilm-test"));
    let threads = run
        .attributes
        .get("ww.inference.threads")
        .and_then(|v| v.as_i64());
    assert!(threads >= Some(1), "{threads:?}");
    assert_eq!(
        forward.attr_str("ww.inference.backend"),
        Some("wasi-nn onnx")
    );
    assert_eq!(
        forward
            .attributes
            .get("ww.inference.threads")
            .and_then(|v| v.as_i64()),
        threads
    );
    assert_eq!(
        forward
            .attributes
            .get("ww.embedder.batch_size")
            .and_then(|v| v.as_i64()),
        Some(3)
    );
    let tokens = forward
        .attributes
        .get("gen_ai.usage.input_tokens")
        .and_then(|v| v.as_i64());
    assert!(tokens > Some(10), "{tokens:?}");
}

//! The hash embedder component, called through a real host.

use wasmtime::component::Val;
use ww_host::plugins::{ComponentHost, HostConfig, Request};
use ww_tests::{EMBEDDER, cache_dir, component, embed, telemetry};

async fn embedder() -> ComponentHost {
    let config = HostConfig {
        components: vec![component("embedder_hash.wasm")],
        cache_dir: Some(cache_dir()),
        ..HostConfig::default()
    };
    ComponentHost::load(config, telemetry(&[]))
        .await
        .expect("load embedder")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_are_384_deterministic_and_unit_length() {
    let host = embedder().await;
    let out = host
        .invoke(Request::new("test.dimension"), EMBEDDER, "dimension", &[])
        .await
        .unwrap();
    assert_eq!(out, vec![Val::U32(384)]);

    let vectors = embed(
        &host,
        &[
            "Tracing spans across components",
            "Tracing spans across components",
            "",
        ],
    )
    .await
    .unwrap();
    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v.len() == 384));
    assert_eq!(vectors[0], vectors[1], "deterministic");
    let norm: f32 = vectors[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "L2-normalised: {norm}");
    assert!(
        vectors[2].iter().all(|x| *x == 0.0),
        "empty text: zero vector"
    );

    // The same text in a fresh instance gives the same vector: nothing depends on state.
    let again = embedder().await;
    assert_eq!(
        embed(&again, &["Tracing spans across components"])
            .await
            .unwrap()[0],
        vectors[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn related_texts_score_clearly_higher_than_unrelated_ones() {
    let host = embedder().await;
    // (text, a related text, an unrelated text): shared words, stems, or spelling.
    let cases = [
        // shared words
        (
            "the cat sat on the mat",
            "a cat sat on a mat today",
            "quarterly revenue grew in europe",
        ),
        // stems: index/indexes/indexing, database/databases
        (
            "indexing large databases",
            "database indexes",
            "my grandmother bakes bread",
        ),
        // character n-grams: spelling variants and compounds
        (
            "kubernetes deployment failed",
            "kubernetes deploy failure",
            "the violin concerto in d minor",
        ),
        (
            "fixed the flaky integration test",
            "integration tests are flaky again",
            "sunset over the harbour",
        ),
        (
            "user prefers dark mode",
            "dark-mode preference of the user",
            "compile the rust crate",
        ),
    ];
    for (text, related, unrelated) in cases {
        let v = embed(&host, &[text, related, unrelated]).await.unwrap();
        let (near, far) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
        eprintln!("{text:?}: related {near:.3}, unrelated {far:.3}");
        assert!(near > 0.3, "{text:?} ~ {related:?}: {near}");
        assert!(far.abs() < 0.15, "{text:?} ~ {unrelated:?}: {far}");
        assert!(
            near > far + 0.25,
            "{text:?}: related {near} vs unrelated {far}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_texts_is_a_validation_error() {
    let host = embedder().await;
    let texts: Vec<&str> = std::iter::repeat_n("x", 1025).collect();
    assert_eq!(embed(&host, &texts).await, Err("validation".to_owned()));
    // And the component is still fine.
    assert_eq!(embed(&host, &["ok"]).await.unwrap().len(), 1);
}

//! The model path (`make bench-embed`), against ONNX Runtime's own Python API on the same
//! graph file and thread count, computed in the same run (the machine's noise cancels in
//! the ratio):
//! 1. one short text (a LoCoMo question) and a batch of 64 LoCoMo turns through the host
//!    (`embed` on the model embedder: tokenize, passes through wasi:nn, pool), beside the
//!    baseline (`tests/benches/ort_baseline.py`) and beside the model run inside the
//!    component (candle, the fallback);
//! 2. the release binary over stdio at 10,000 episodes: the 10,000 turns stored with
//!    `create_episodes` (64 a call: the import's throughput), then `create_episode`,
//!    `create_episodes` (64) and `recall_episodes`, each p50/p99;
//! 3. `ww-memory import` of the dev split's turns into an empty store.
//!
//! `WW_BENCH_MODEL=mpnet` measures all-mpnet-base-v2 (`make model-mpnet`) instead of the
//! default model; `WW_INFERENCE_THREADS` the threads (default 1: this machine's two cores
//! over the default two instances); `WW_BENCH_EMBED_PARTS=1,2` only some parts;
//! `WW_BENCH_EPISODES` how many episodes part 2 stores first (default 10,000).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ww_host::inference::InferenceConfig;
use ww_tests::bench::{Server, bench_dir, ms, percentile};

/// A LoCoMo turn or question, as the split has it.
fn locomo() -> (Vec<String>, Vec<String>) {
    let path = std::env::var_os("WW_LOCOMO").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/locomo/dev.json"),
        PathBuf::from,
    );
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dev.json")).expect("JSON");
    let mut turns = Vec::new();
    let mut questions = Vec::new();
    for sample in data.as_array().expect("samples") {
        let conversation = sample["conversation"].as_object().expect("conversation");
        let mut sessions: Vec<(u32, &Value)> = conversation
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix("session_")?.parse().ok()?;
                v.is_array().then_some((n, v))
            })
            .collect();
        sessions.sort_by_key(|(n, _)| *n);
        for (_, session) in sessions {
            for turn in session.as_array().into_iter().flatten() {
                turns.push(format!(
                    "{}: {}",
                    turn["speaker"].as_str().unwrap_or(""),
                    turn["text"].as_str().unwrap_or("")
                ));
            }
        }
        for qa in sample["qa"].as_array().into_iter().flatten() {
            if let Some(q) = qa["question"].as_str() {
                questions.push(q.to_owned());
            }
        }
    }
    (turns, questions)
}

fn model_dir() -> (PathBuf, &'static str) {
    match std::env::var("WW_BENCH_MODEL").as_deref() {
        Ok("mpnet") => (
            ww_tests::mpnet_dir(),
            "sentence-transformers/all-mpnet-base-v2",
        ),
        _ => (ww_tests::model_dir(), ww_host::config::DEFAULT_MODEL),
    }
}

fn threads() -> usize {
    std::env::var("WW_INFERENCE_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1)
}

fn row(name: &str, sorted: &[Duration]) -> String {
    format!(
        "| {name} | {} | {} | {} |",
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.99)),
        sorted.len()
    )
}

fn ratio(ours: &[Duration], base: &[Duration]) -> String {
    let p50 = |s: &[Duration]| percentile(s, 0.5).as_secs_f64();
    format!("{:.2}x", p50(ours) / p50(base).max(1e-9))
}

/// The baseline, in the venv `make bench-embed` made.
fn baseline(model: &Path, singles: &[String], batches: &[Vec<String>], repeat: usize) -> Value {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-venv/bin/python");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/ort_baseline.py");
    let job = json!({
        "model_dir": model, "threads": threads(), "singles": singles,
        "batches": batches, "repeat": repeat,
    });
    let mut child = std::process::Command::new(&python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (make bench-embed makes the venv)",
                python.display()
            )
        });
    serde_json::to_writer(child.stdin.take().expect("stdin"), &job).expect("job");
    let out = child.wait_with_output().expect("the baseline");
    assert!(out.status.success(), "the baseline failed");
    serde_json::from_slice(&out.stdout).expect("the baseline's JSON")
}

fn seconds(value: &Value) -> Vec<Duration> {
    value
        .as_array()
        .expect("latencies")
        .iter()
        .map(|s| Duration::from_secs_f64(s.as_f64().expect("seconds")))
        .collect()
}

async fn through_host(
    inference: InferenceConfig,
    model: &Path,
    singles: &[String],
    batches: &[Vec<String>],
    repeat: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let host = ww_tests::model_embedder_with(1, model.to_owned(), inference.clone())
        .await
        .expect("the model embedder");
    // A call holds at most 2,048 tokens in the component (16,384 through the host): 64
    // turns go as calls of at most `per_call` texts, as the episodic service sends them.
    let per_call = if inference.library.is_some() { 64 } else { 32 };
    let embed = async |texts: &[&str]| {
        let start = Instant::now();
        for call in texts.chunks(per_call) {
            ww_tests::embed(&host, call).await.expect("embed");
        }
        start.elapsed()
    };
    embed(&["warm up"]).await;
    let mut single = Vec::new();
    for i in 0..repeat {
        single.push(embed(&[singles[i % singles.len()].as_str()]).await);
    }
    let mut batch = Vec::new();
    for texts in batches {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        batch.push(embed(&texts).await);
    }
    single.sort();
    batch.sort();
    (single, batch)
}

async fn part_embedding(turns: &[String], questions: &[String]) {
    let (model, name) = model_dir();
    let batches: Vec<Vec<String>> = turns.chunks(64).take(20).map(<[String]>::to_vec).collect();
    let base = baseline(&model, questions, &batches, 200);
    let (base_single, base_batch) = (seconds(&base["single"]), seconds(&base["batch"]));
    let native = InferenceConfig {
        library: Some(ww_tests::onnxruntime()),
        threads: Some(threads()),
    };
    let (single, batch) = through_host(native, &model, questions, &batches, 200).await;
    println!(
        "\n{name}, {} thread(s), ONNX Runtime {}",
        threads(),
        base["version"].as_str().unwrap_or("?")
    );
    println!("\n| embedding | p50 | p99 | calls | vs ONNX Runtime (p50) |");
    println!("|---|---|---|---|---|");
    println!(
        "{} |",
        row("one question, ONNX Runtime (Python)", &base_single)
    );
    println!(
        "{} {} |",
        row("one question, through the host (wasi:nn)", &single),
        ratio(&single, &base_single)
    );
    println!("{} |", row("64 turns, ONNX Runtime (Python)", &base_batch));
    println!(
        "{} {} |",
        row("64 turns, through the host (wasi:nn)", &batch),
        ratio(&batch, &base_batch)
    );
    if name == ww_host::config::DEFAULT_MODEL {
        // The fallback: the same model in the component (fewer calls: it is slow).
        let (single, batch) = through_host(
            InferenceConfig::default(),
            &model,
            questions,
            &batches[..5],
            50,
        )
        .await;
        println!(
            "{} {} |",
            row("one question, in the component (candle)", &single),
            ratio(&single, &base_single)
        );
        println!(
            "{} {} |",
            row("64 turns, in the component (candle)", &batch),
            ratio(&batch, &base_batch)
        );
    }
}

fn model_config(dir: &Path) -> PathBuf {
    let (model, name) = model_dir();
    let path = dir.join("embed-bench.toml");
    std::fs::create_dir_all(dir).expect("bench dir");
    std::fs::write(
        &path,
        format!(
            "[inference]\nthreads = {}\n\n[roles.embedder]\ncomponent = \"embedder_bert.wasm\"\n\
             model_dir = {:?}\nsettings = {{ model = {name:?} }}\n",
            threads(),
            model.display().to_string()
        ),
    )
    .expect("config");
    path
}

async fn part_server(turns: &[String], questions: &[String]) {
    // 10,000 by default; fewer for the larger model (`WW_BENCH_EPISODES`): storing them
    // is the slow part, and a recall's cost is the model's, not the store's, at this size.
    let episodes: usize = std::env::var("WW_BENCH_EPISODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let dir = bench_dir("embed-server");
    // WW_MODEL_DIR wins over the file's model_dir: it names the measured model's.
    let env = vec![
        (
            "WW_CONFIG".to_owned(),
            model_config(&dir).display().to_string(),
        ),
        (
            "WW_MODEL_DIR".to_owned(),
            model_dir().0.display().to_string(),
        ),
    ];
    let server = Server::stdio(&dir.join("data"), "bench", &env).await;
    let episode = |i: usize| json!({"content": turns[i % turns.len()]});
    // The split's turns (over again), 64 a call: the import's throughput.
    let start = Instant::now();
    let mut stored = 0;
    while stored < episodes {
        let chunk: Vec<Value> = (stored..(stored + 64).min(episodes)).map(episode).collect();
        stored += chunk.len();
        server
            .call("create_episodes", json!({"episodes": chunk}))
            .await;
    }
    let fill = start.elapsed();
    let mut create = Vec::new();
    for i in 0..100 {
        create.push(server.call("create_episode", episode(i * 7)).await);
    }
    let mut batch = Vec::new();
    for i in 0..10 {
        let chunk: Vec<Value> = (0..64).map(|j| episode(i * 64 + j)).collect();
        batch.push(
            server
                .call("create_episodes", json!({"episodes": chunk}))
                .await,
        );
    }
    let mut recall = Vec::new();
    for i in 0..200 {
        recall.push(
            server
                .call(
                    "recall_episodes",
                    json!({"query": questions[i % questions.len()], "limit": 10}),
                )
                .await,
        );
    }
    server.stop().await;
    create.sort();
    batch.sort();
    recall.sort();
    println!(
        "\n{episodes} turns stored with create_episodes (64 a call) over stdio: {:.1} s ({} a turn)",
        fill.as_secs_f64(),
        ms(fill / episodes as u32)
    );
    println!("\n| over stdio, at {episodes} episodes | p50 | p99 | calls |");
    println!("|---|---|---|---|");
    println!("{}", row("create_episode", &create));
    println!("{}", row("create_episodes (64)", &batch));
    println!("{}", row("recall_episodes", &recall));
    let _ = std::fs::remove_dir_all(&dir);
}

fn part_import(turns: &[String]) {
    let dir = bench_dir("embed-import");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("turns.jsonl");
    let lines: Vec<String> = turns
        .iter()
        .map(|t| json!({"content": t}).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).expect("write");
    let start = Instant::now();
    let status = std::process::Command::new(ww_tests::bench::binary())
        .args(["import", &file.display().to_string()])
        .env("WW_PLUGIN_DIR", ww_tests::component_dir())
        .env("WW_CACHE_DIR", ww_tests::cache_dir())
        .env("WW_ONNXRUNTIME", ww_tests::onnxruntime())
        .env("WW_CONFIG", model_config(&dir))
        .env("WW_DATA_DIR", dir.join("data"))
        .env("WW_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .status()
        .expect("ww-memory import");
    assert!(status.success());
    let took = start.elapsed();
    println!(
        "\nww-memory import of the dev split's {} turns: {:.1} s ({} a turn; 10,000 turns at this rate: {:.0} s)",
        turns.len(),
        took.as_secs_f64(),
        ms(took / turns.len() as u32),
        took.as_secs_f64() * 10_000.0 / turns.len() as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (turns, questions) = locomo();
    let parts: Vec<String> = std::env::var("WW_BENCH_EMBED_PARTS")
        .unwrap_or_else(|_| "1,2,3".to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    println!(
        "LoCoMo dev split: {} turns, {} questions",
        turns.len(),
        questions.len()
    );
    if parts.iter().any(|p| p == "1") {
        part_embedding(&turns, &questions).await;
    }
    if parts.iter().any(|p| p == "2") {
        part_server(&turns, &questions).await;
    }
    if parts.iter().any(|p| p == "3") {
        part_import(&turns);
    }
}

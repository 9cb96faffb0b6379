//! `make bench`: the memory operations end to end through the host API, on the default
//! components (hash embedder, embedded store, episodic service), on disk.
//!
//! For each size (10k and 100k episodes; `WW_BENCH_SIZES=10000` to choose) it fills a
//! fresh store through `create_episode` (all in one session: every episode passes the
//! session filter, the worst case), then times `recall_episodes` (p50, p99), reports the
//! store component's linear memory and the process's resident memory, and — at the
//! first size — the cost of tracing: the same recalls against a copy of the store with
//! tracing on (OTLP over gRPC to a local receiver), alternated with tracing off, and
//! `consolidate_now deep` over those episodes. Before that, `semantic_recall` and
//! `spread_activation` on a graph of 10k entities and 50k relations, and
//! (`WW_BENCH=concurrency`) `recall_episodes` throughput with 1, 2 and 8 concurrent
//! clients over 1,000 episodes, all local and with the embedder behind an endpoint that
//! answers in 20 ms (default pools against one instance each). After, for each
//! size (`WW_BENCH=startup`): disk use and start-up time with the log alone after
//! reinforcing recalls, the cost of the compaction that follows (the write that pays
//! it), and disk use and start-up time after it.

use std::path::Path;
use std::time::{Duration, Instant};

use ww_host::memory::{Memory, RecallEpisodes};
use ww_host::plugins::Request;
use ww_tests::bench::{Words, bench_dir, copy_dir, fill, ms, percentile, process_cpu_time};
use ww_tests::otlp::OtlpReceiver;

/// The binary's allocator, so that the benchmark measures what the binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SESSION: &str = "bench";
const RECALLS: usize = 300;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn recall_once(memory: &Memory, query: String) -> Duration {
    let start = Instant::now();
    let found = memory
        .recall_episodes(
            Request::new("bench.recall"),
            SESSION,
            RecallEpisodes {
                query,
                limit: Some(10),
                ..Default::default()
            },
        )
        .await
        .expect("recall_episodes");
    let elapsed = start.elapsed();
    assert_eq!(found.count, 10);
    elapsed
}

/// Sorted latencies of `RECALLS` recalls after 20 to warm up, and the process CPU time
/// they took per recall.
async fn recall_latencies(memory: &Memory, words: &mut Words) -> (Vec<Duration>, Duration) {
    for _ in 0..20 {
        recall_once(memory, words.sentence(4)).await;
    }
    let mut latencies = Vec::with_capacity(RECALLS);
    let cpu = process_cpu_time();
    for _ in 0..RECALLS {
        latencies.push(recall_once(memory, words.sentence(4)).await);
    }
    let cpu = (process_cpu_time() - cpu) / RECALLS as u32;
    latencies.sort();
    (latencies, cpu)
}

/// Recall p50 with tracing off and on, alternating calls so both see the same machine.
async fn tracing_overhead(dir: &Path, words: &mut Words) {
    let traced_dir = bench_dir("traced");
    copy_dir(dir, &traced_dir);
    let receiver = OtlpReceiver::grpc().await;
    let off = ww_tests::memory(dir, ww_tests::telemetry(&[])).await;
    let on = ww_tests::memory(
        &traced_dir,
        ww_tests::telemetry(&[
            ("WW_OTEL_ENABLED", "true"),
            ("WW_OTEL_ENDPOINT", &receiver.endpoint()),
        ]),
    )
    .await;
    for _ in 0..20 {
        recall_once(&off, words.sentence(4)).await;
        recall_once(&on, words.sentence(4)).await;
    }
    let (mut t_off, mut t_on) = (Vec::new(), Vec::new());
    for _ in 0..RECALLS {
        let query = words.sentence(4);
        t_off.push(recall_once(&off, query.clone()).await);
        t_on.push(recall_once(&on, query).await);
    }
    t_off.sort();
    t_on.sort();
    // The same for writes: with tracing on, each episode also stores its writer's trace
    // and span (`created_by`); with it off, nothing.
    let (mut c_off, mut c_on) = (Vec::new(), Vec::new());
    for _ in 0..RECALLS {
        let content = words.sentence(12);
        c_off.push(create_once(&off, content.clone()).await);
        c_on.push(create_once(&on, content).await);
    }
    c_off.sort();
    c_on.sort();
    on.host().telemetry().flush().await;
    let stats = on.host().telemetry().stats();
    let (p_off, p_on) = (percentile(&t_off, 0.5), percentile(&t_on, 0.5));
    println!(
        "recall_episodes tracing off vs on (OTLP gRPC, local receiver): p50 {} vs {} ({:+.1} %), spans exported {}, dropped {}",
        ms(p_off),
        ms(p_on),
        (p_on.as_secs_f64() / p_off.as_secs_f64() - 1.0) * 100.0,
        stats.spans_exported,
        stats.spans_dropped
    );
    let (p_off, p_on) = (percentile(&c_off, 0.5), percentile(&c_on, 0.5));
    println!(
        "create_episode tracing off vs on (the episode records its writer's span): p50 {} vs {} ({:+.1} %)",
        ms(p_off),
        ms(p_on),
        (p_on.as_secs_f64() / p_off.as_secs_f64() - 1.0) * 100.0,
    );
}

async fn create_once(memory: &Memory, content: String) -> Duration {
    let start = Instant::now();
    memory
        .create_episode(
            Request::new("bench.create"),
            SESSION,
            ww_host::memory::CreateEpisode {
                content,
                ..Default::default()
            },
        )
        .await
        .expect("create_episode");
    start.elapsed()
}

/// Recalls per second with `clients` clients, each calling `recall_episodes` one after
/// another, `per_client` times.
async fn throughput(memory: &std::sync::Arc<Memory>, clients: usize, per_client: usize) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let memory = memory.clone();
            tokio::spawn(async move {
                let mut words = Words(0x9e37_79b9 + c as u64);
                for _ in 0..per_client {
                    recall_once(&memory, words.sentence(4)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client");
    }
    (clients * per_client) as f64 / start.elapsed().as_secs_f64()
}

/// `recall_episodes` throughput with 1, 2 and 8 concurrent clients over `n` episodes:
/// the default components (hash embedder, everything local), then the embedder behind
/// an OpenAI-compatible endpoint answering in 20 ms — with the default pools, and with
/// one instance of each (how every service ran before it had a pool).
async fn concurrency_bench(n: usize) {
    use ww_tests::embeddings::EmbeddingEndpoint;
    const CLIENTS: [usize; 3] = [1, 2, 8];
    let report = |what: &str, rates: &[f64]| {
        println!(
            "recall_episodes throughput, {what}: {} (8 clients {:.1}x one)",
            CLIENTS
                .iter()
                .zip(rates)
                .map(|(c, r)| format!("{c} client{} {r:.0}/s", if *c == 1 { "" } else { "s" }))
                .collect::<Vec<_>>()
                .join(", "),
            rates[2] / rates[0]
        );
    };
    let dir = bench_dir("concurrency-local");
    let memory = std::sync::Arc::new(ww_tests::memory(&dir, ww_tests::telemetry(&[])).await);
    fill(&memory, SESSION, n, &mut Words(0x5eed)).await;
    throughput(&memory, 8, 10).await; // every instance made
    let mut rates = Vec::new();
    for clients in CLIENTS {
        rates.push(throughput(&memory, clients, 800 / clients).await);
    }
    report(&format!("{n} episodes, all local"), &rates);
    drop(memory);

    let endpoint = EmbeddingEndpoint::start(384, Duration::from_millis(20)).await;
    for (what, extra) in [
        ("default pools", ""),
        (
            "one instance each",
            "instances = 1\n\n[roles.episodic]\ncomponent = \"service_episodic.wasm\"\ninstances = 1\n",
        ),
    ] {
        let dir = bench_dir("concurrency-remote");
        let config = ww_tests::tests_config(&format!("{}{extra}", endpoint.role(384)), &dir);
        let memory =
            std::sync::Arc::new(ww_tests::memory_with(config, ww_tests::telemetry(&[])).await);
        fill(&memory, SESSION, n, &mut Words(0x5eed)).await;
        throughput(&memory, 8, 5).await;
        let mut rates = Vec::new();
        for clients in CLIENTS {
            rates.push(throughput(&memory, clients, 80 / clients).await);
        }
        report(
            &format!("{n} episodes, embedder behind a 20 ms endpoint, {what}"),
            &rates,
        );
    }
}

/// `semantic_recall` and `spread_activation` on a graph of `entities` entities and
/// `relations` relations.
async fn graph_bench(entities: usize, relations: usize) {
    use ww_host::memory::{
        CreateEntity, CreateRelation, EntityType, RelationType, SemanticRecall, SpreadActivation,
    };
    let dir = bench_dir("graph");
    let memory = ww_tests::memory(&dir, ww_tests::telemetry(&[])).await;
    let mut words = Words(0x6a09_e667);
    eprintln!("building a graph of {entities} entities and {relations} relations ...");
    let start = Instant::now();
    let mut ids = Vec::with_capacity(entities);
    for i in 0..entities {
        let created = memory
            .create_entity(
                Request::new("bench.create_entity"),
                SESSION,
                CreateEntity {
                    name: format!("{} {i}", words.sentence(2)),
                    entity_type: EntityType::Concept,
                    summary: words.sentence(10),
                    details: None,
                    source: None,
                },
            )
            .await
            .expect("create_entity");
        ids.push(created.entity.id);
    }
    let created_entities = start.elapsed();
    // Types that may form cycles, so no cycle check is timed here; a few hubs and many
    // leaves, like real knowledge graphs.
    let kinds = [
        RelationType::Uses,
        RelationType::Produces,
        RelationType::SimilarTo,
        RelationType::Implements,
    ];
    let start = Instant::now();
    let mut made = 0;
    while made < relations {
        let a = (words.next_u64() % entities as u64) as usize;
        let b = ((words.next_u64() % entities as u64) * (words.next_u64() % entities as u64)
            / entities as u64) as usize;
        if a == b {
            continue;
        }
        memory
            .create_relation(
                Request::new("bench.create_relation"),
                CreateRelation {
                    source_id: ids[a].clone(),
                    target_id: ids[b].clone(),
                    relation_type: kinds[made % kinds.len()],
                    weight: Some(0.05 + (words.next_u64() % 95) as f64 / 100.0),
                },
            )
            .await
            .expect("create_relation");
        made += 1;
    }
    let created_relations = start.elapsed();
    println!(
        "graph of {entities} entities, {relations} relations: create_entity {} each, create_relation {} each",
        ms(created_entities / entities as u32),
        ms(created_relations / relations as u32)
    );
    let mut recall_times = Vec::new();
    let mut spread_times = Vec::new();
    let mut activated = 0;
    for i in 0..120 {
        let context = vec![
            ids[(i * 7919) % entities].clone(),
            ids[(i * 104_729) % entities].clone(),
        ];
        let start = Instant::now();
        memory
            .semantic_recall(
                Request::new("bench.semantic_recall"),
                SemanticRecall {
                    query: words.sentence(4),
                    context_entities: context,
                    limit: Some(10),
                },
            )
            .await
            .expect("semantic_recall");
        let recall = start.elapsed();
        let start = Instant::now();
        let spread = memory
            .spread_activation(
                Request::new("bench.spread_activation"),
                SpreadActivation {
                    seed_entities: vec![ids[(i * 31) % entities].clone()],
                    ..Default::default()
                },
            )
            .await
            .expect("spread_activation");
        if i >= 20 {
            recall_times.push(recall);
            spread_times.push(start.elapsed());
            activated += spread.activations.len();
        }
    }
    recall_times.sort();
    spread_times.sort();
    println!(
        "semantic_recall (limit 10, 2 context entities): p50 {}, p99 {}",
        ms(percentile(&recall_times, 0.5)),
        ms(percentile(&recall_times, 0.99))
    );
    println!(
        "spread_activation (defaults: 3 steps, threshold 0.01): p50 {}, p99 {}, {} nodes activated on average",
        ms(percentile(&spread_times, 0.5)),
        ms(percentile(&spread_times, 0.99)),
        activated / spread_times.len()
    );
}

/// `consolidate_now deep` over the episodes stored in `dir`.
async fn deep_consolidation_bench(dir: &Path, n: usize) {
    use ww_host::memory::{ConsolidateNow, ConsolidationKind};
    let memory = ww_tests::memory(dir, ww_tests::telemetry(&[])).await;
    let rss_before = rss_mib();
    let start = Instant::now();
    let report = memory
        .consolidate_now(
            Request::new("bench.consolidate_now"),
            ConsolidateNow {
                kind: Some(ConsolidationKind::Deep),
            },
        )
        .await
        .expect("consolidate_now");
    let elapsed = start.elapsed();
    let semantic = memory.host().component("semantic").expect("semantic");
    let deep = report.deep.expect("deep report");
    println!(
        "consolidate_now deep over {n} episodes: {:.2} s, {} clusters, semantic component linear memory {:.0} MiB, process RSS {:.0} -> {:.0} MiB",
        elapsed.as_secs_f64(),
        deep.clusters,
        semantic.memory_bytes() as f64 / (1 << 20) as f64,
        rss_before,
        rss_mib()
    );
}

fn disk_mib(dir: &Path) -> f64 {
    let bytes: u64 = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    bytes as f64 / (1 << 20) as f64
}

/// From loading the components (compiled code cached) to the first answered call that
/// opens the store: what a restart costs before it serves.
async fn ready(config: ww_host::config::FileConfig) -> (Duration, Memory) {
    use ww_host::memory::MemoryStatsArgs;
    let start = Instant::now();
    let memory = ww_tests::memory_with(config, ww_tests::telemetry(&[])).await;
    memory
        .memory_stats(Request::new("bench.stats"), MemoryStatsArgs::default())
        .await
        .expect("memory_stats");
    (start.elapsed(), memory)
}

/// `n` starts on `config`, fastest first.
async fn starts(config: &ww_host::config::FileConfig, n: usize) -> Vec<Duration> {
    let mut opens = Vec::new();
    for _ in 0..n {
        let (took, memory) = ready(config.clone()).await;
        opens.push(took);
        drop(memory);
    }
    opens.sort();
    opens
}

/// The median of three starts on `config`.
async fn median_ready(config: &ww_host::config::FileConfig) -> Duration {
    starts(config, 3).await[1]
}

/// Recall until snapshot `generation` is in `dir` (made beside the requests): the
/// recalls' latencies and how long it took.
async fn recall_until_landed(
    memory: &Memory,
    dir: &Path,
    generation: u64,
    words: &mut Words,
) -> (Vec<Duration>, Duration) {
    let landed = dir.join(format!("store.{generation}.snapshot"));
    let start = Instant::now();
    let mut latencies = Vec::new();
    while !landed.exists() {
        latencies.push(recall_once(memory, words.sentence(4)).await);
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "snapshot {generation} never landed"
        );
    }
    (latencies, start.elapsed())
}

/// Start-up and disk before and after compaction, at `n` episodes reinforced by
/// `recalls` recalls of limit 10.
async fn startup_bench(n: usize, recalls: usize) {
    let dir = bench_dir(&format!("startup-{n}"));
    let mut words = Words(0x5717 + n as u64);
    // The log alone: compaction off while filling and recalling.
    let never = ww_tests::compacting_config(&dir, i64::MAX as u64, 1.0);
    let memory = ww_tests::memory_with(never.clone(), ww_tests::telemetry(&[])).await;
    fill(&memory, SESSION, n, &mut words).await;
    for _ in 0..recalls {
        recall_once(&memory, words.sentence(4)).await;
    }
    drop(memory);
    let log_only = disk_mib(&dir);
    let log_only_ready = median_ready(&never).await;
    println!(
        "{n} episodes after {recalls} reinforcing recalls, log only: {log_only:.0} MiB on disk, ready to serve in {} (median of 3)",
        ms(log_only_ready)
    );
    // The default compaction: the first write finds the log larger than the live data and
    // asks for snapshot 1, made beside the requests. Recalls go on until it lands (the
    // first, which asks, left out: it also warms the services up); then as many again
    // with no compaction running.
    let compacting = ww_tests::compacting_config(&dir, 16 << 20, 1.0);
    let (_, memory) = ready(compacting.clone()).await;
    recall_once(&memory, words.sentence(4)).await;
    let (mut during, took) = recall_until_landed(&memory, &dir, 1, &mut words).await;
    let mut quiet = Vec::new();
    for _ in 0..during.len().max(100) {
        quiet.push(recall_once(&memory, words.sentence(4)).await);
    }
    drop(memory);
    during.sort();
    quiet.sort();
    let p99 = |v: &[Duration]| percentile(v, 0.99);
    println!(
        "  recall while the compaction runs beside ({} recalls, {:.2} s until the snapshot landed): p50 {}, p99 {}; without: p50 {}, p99 {} ({:.2}× the p99); on disk after: {:.0} MiB",
        during.len(),
        took.as_secs_f64(),
        ms(percentile(&during, 0.5)),
        ms(p99(&during)),
        ms(percentile(&quiet, 0.5)),
        ms(p99(&quiet)),
        p99(&during).as_secs_f64() / p99(&quiet).as_secs_f64(),
        disk_mib(&dir)
    );
    // Once the first snapshot exists the log it covers is kept as the fallback until
    // the next compaction; a second one shows the steady state.
    let memory = ww_tests::memory_with(
        ww_tests::compacting_config(&dir, 0, 0.0),
        ww_tests::telemetry(&[]),
    )
    .await;
    recall_until_landed(&memory, &dir, 2, &mut words).await;
    drop(memory);
    let compacted_ready = median_ready(&compacting).await;
    println!(
        "  after compaction: {:.0} MiB on disk (the snapshot, the previous one and their logs), ready to serve in {} (median of 3)",
        disk_mib(&dir),
        ms(compacted_ready)
    );
}

/// Ready to serve on a data directory a `startup` run left (`WW_BENCH_READY_DIR`): one
/// compaction first, so the snapshot is in the format this build writes, then the median
/// of five starts. For working on the start alone, without filling a store each time.
async fn ready_bench(dir: &Path) {
    let mut words = Words(0x5eed);
    let memory = ww_tests::memory_with(
        ww_tests::compacting_config(dir, 0, 0.0),
        ww_tests::telemetry(&[]),
    )
    .await;
    // The first write rotates the log: the snapshot of the new log's generation is due.
    recall_once(&memory, words.sentence(4)).await;
    let generation = std::fs::read_dir(dir)
        .expect("data directory")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("store.")?
                .strip_suffix(".wal")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .expect("a log");
    recall_until_landed(&memory, dir, generation, &mut words).await;
    drop(memory);
    let opens = starts(&ww_tests::compacting_config(dir, 16 << 20, 1.0), 5).await;
    println!(
        "ready to serve from snapshot {generation} in {}: {} (median of 5; min {}, max {})",
        dir.display(),
        ms(opens[2]),
        ms(opens[0]),
        ms(opens[4])
    );
}

fn enabled(part: &str) -> bool {
    std::env::var("WW_BENCH").map_or(true, |parts| parts.split(',').any(|p| p.trim() == part))
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood. `WW_BENCH` picks parts
    // (graph, concurrency, startup, episodes, deep); `WW_BENCH_SIZES` the episode counts.
    if let Ok(dir) = std::env::var("WW_BENCH_READY_DIR") {
        ready_bench(Path::new(&dir)).await;
        return;
    }
    if enabled("graph") {
        graph_bench(10_000, 50_000).await;
    }
    if enabled("concurrency") {
        concurrency_bench(1_000).await;
    }
    if !enabled("episodes") && !enabled("deep") && !enabled("startup") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("WW_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if enabled("startup") {
        for &n in &sizes {
            // 10 reinforcements per episode at 10k; at 100k a tenth of that (a
            // million recalls would take half an hour here).
            startup_bench(n, n.min(10_000)).await;
        }
    }
    if !enabled("episodes") && !enabled("deep") {
        return;
    }
    for (index, &n) in sizes.iter().enumerate() {
        let dir = bench_dir(&format!("episodes-{n}"));
        let mut words = Words(0x5eed_0000 + n as u64);
        let memory = ww_tests::memory(&dir, ww_tests::telemetry(&[])).await;
        eprintln!("filling a store with {n} episodes ...");
        let cpu = process_cpu_time();
        let filled = fill(&memory, SESSION, n, &mut words).await;
        let cpu = process_cpu_time() - cpu;
        println!(
            "create_episode x {n}: {:.0} episodes/s ({} each on average, process CPU {} each)",
            n as f64 / filled.as_secs_f64(),
            ms(filled / n as u32),
            ms(cpu / n as u32)
        );
        let (latencies, cpu) = recall_latencies(&memory, &mut words).await;
        println!(
            "recall_episodes over {n} episodes, limit 10, {RECALLS} queries: p50 {}, p99 {}, mean {}, process CPU {} per recall",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(latencies.iter().sum::<Duration>() / RECALLS as u32),
            ms(cpu)
        );
        let store = memory.host().component("embedded").expect("store");
        println!(
            "memory at {n} episodes: store component linear memory {:.0} MiB, process RSS {:.0} MiB",
            store.memory_bytes() as f64 / (1 << 20) as f64,
            rss_mib()
        );
        drop(memory);
        if index == 0 {
            tracing_overhead(&dir, &mut words).await;
            if enabled("deep") {
                deep_consolidation_bench(&dir, n).await;
            }
        }
    }
}

//! The embedded store's snapshots and log compaction through the real components: the
//! data directory stays within a bound however many recalls reinforce, a restart loads
//! the snapshot and the logs after it, a torn snapshot gives way to the previous one, and
//! `kill -9` of a writing, compacting host loses no acknowledged write.

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::path::Path;

use ww_host::memory::{Memory, MemoryStatsArgs, RecallEpisodes};
use ww_host::plugins::Request;
use ww_tests::bench::{Words, fill};
use ww_tests::{compacting_config, data_dir, memory_with, telemetry};

const SESSION: &str = "compaction";

async fn open(dir: &Path, min_bytes: u64, ratio: f64) -> Memory {
    memory_with(compacting_config(dir, min_bytes, ratio), telemetry(&[])).await
}

/// Bytes in `dir`, and the size of its newest snapshot.
fn disk(dir: &Path) -> (u64, u64) {
    let mut total = 0;
    let mut newest = (0, 0);
    for entry in std::fs::read_dir(dir).expect("data directory") {
        let entry = entry.expect("entry");
        let len = entry.metadata().expect("metadata").len();
        total += len;
        let name = entry.file_name().into_string().expect("utf-8 name");
        let generation = name
            .strip_prefix("store.")
            .and_then(|n| n.strip_suffix(".snapshot"))
            .and_then(|g| g.parse::<u64>().ok());
        if let Some(g) = generation
            && g >= newest.0
        {
            newest = (g, len);
        }
    }
    (total, newest.1)
}

async fn episodes(memory: &Memory) -> u64 {
    let stats = memory
        .memory_stats(request("stats"), MemoryStatsArgs::default())
        .await
        .expect("memory_stats");
    stats.counts.episodes
}

fn request(name: &str) -> Request {
    Request::new(format!("test.{name}"))
}

async fn recall(memory: &Memory, query: String, limit: u32, offset: u32) -> Vec<String> {
    memory
        .recall_episodes(
            request("recall"),
            SESSION,
            RecallEpisodes {
                query,
                limit: Some(limit),
                offset: Some(offset),
                ..Default::default()
            },
        )
        .await
        .expect("recall")
        .episodes
        .into_iter()
        .map(|hit| hit.episode.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn reinforcing_recalls_keep_the_disk_bounded_and_a_restart_reads_the_snapshot() {
    const EPISODES: usize = 1_000;
    const RECALLS: usize = 2_000; // 20,000 reinforcing writes (limit 10)
    const MIN: u64 = 256 << 10;
    let dir = data_dir("compaction-bound");
    let memory = open(&dir, MIN, 1.0).await;
    let mut words = Words(7);
    fill(&memory, SESSION, EPISODES, &mut words).await;
    let mut worst = 0.0_f64;
    for i in 0..RECALLS {
        assert_eq!(recall(&memory, words.sentence(3), 10, 0).await.len(), 10);
        if i % 50 == 0 {
            let (total, snapshot) = disk(&dir);
            if snapshot > 0 {
                worst = worst.max(total as f64 / snapshot.max(MIN) as f64);
            }
        }
    }
    let (total, snapshot) = disk(&dir);
    assert!(snapshot > 0, "no snapshot was written");
    // Two snapshots, the log the last one covers and the current log, each at most the
    // live data (or the minimum), and a snapshot being written: under 5×.
    assert!(
        worst < 5.0,
        "the data directory reached {worst:.1}× the live data"
    );
    let before = episodes(&memory).await;
    assert_eq!(before, EPISODES as u64);
    let ranked = recall(&memory, "alpha beta gamma".to_owned(), 20, 0).await;
    drop(memory);
    eprintln!("data directory {total} bytes, snapshot {snapshot} bytes, worst {worst:.2}×");

    // A restart loads the snapshot and the log after it: the same memories, the same
    // ranking (reinforcement included).
    let memory = open(&dir, MIN, 1.0).await;
    assert_eq!(episodes(&memory).await, before);
    assert_eq!(
        recall(&memory, "alpha beta gamma".to_owned(), 20, 0).await,
        ranked
    );
    drop(memory);

    // The newest snapshot torn (a disk that lied about a sync): the previous one and the
    // logs after it give the same store.
    let newest = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".snapshot"))
        .max_by_key(|n| {
            n.trim_start_matches("store.")
                .trim_end_matches(".snapshot")
                .parse::<u64>()
                .unwrap_or(0)
        })
        .expect("a snapshot");
    let path = dir.join(&newest);
    let bytes = std::fs::read(&path).expect("read snapshot");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("tear it");
    let memory = open(&dir, MIN, 1.0).await;
    assert_eq!(episodes(&memory).await, before);
    assert_eq!(
        recall(&memory, "alpha beta gamma".to_owned(), 20, 0).await,
        ranked
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_writing_and_compacting_loses_no_acknowledged_episode() {
    let dir = data_dir("compaction-kill");
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut seed = u64::from(std::process::id()) | 1;
    let mut mid_compaction = 0;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_episode_writer"))
            .arg(&dir)
            .arg(SESSION)
            .arg("100000")
            // Compact whenever the log passes 4 KiB, whatever the state's size: most
            // of the writer's time goes to snapshots.
            .arg("4096")
            .arg("0")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the writer");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let wanted = 5 + seed % 40;
        for _ in 0..wanted {
            let line = lines
                .next()
                .expect("the writer stopped early")
                .expect("line");
            acknowledged.insert(line.split(' ').next().unwrap_or_default().to_owned());
        }
        std::thread::sleep(std::time::Duration::from_micros(seed % 20_000));
        child.kill().expect("kill -9");
        for line in lines.map_while(Result::ok) {
            acknowledged.insert(line.split(' ').next().unwrap_or_default().to_owned());
        }
        child.wait().expect("reap");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        mid_compaction += usize::from(names.iter().any(|n| n.ends_with(".tmp")));

        let memory = open(&dir, 4096, 0.0).await;
        let mut stored = BTreeSet::new();
        for offset in (0..).step_by(100) {
            let page = recall(&memory, "crash test episode".to_owned(), 100, offset).await;
            if page.is_empty() {
                break;
            }
            stored.extend(page);
        }
        let lost: Vec<&String> = acknowledged.difference(&stored).collect();
        assert!(lost.is_empty(), "round {round}: lost {lost:?}");
    }
    let snapshots = std::fs::read_dir(&dir)
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".snapshot"))
        })
        .count();
    eprintln!(
        "{} episodes acknowledged over 20 kills, {mid_compaction} kills during a snapshot",
        acknowledged.len()
    );
    assert!(snapshots > 0, "the writers never compacted");
    assert!(
        mid_compaction > 0,
        "no kill landed while a snapshot was being written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_trace_that_wrote_a_memory_survives_compaction_and_a_restart() {
    use ww_host::memory::CreateEpisode;
    use ww_tests::otlp::OtlpReceiver;
    let receiver = OtlpReceiver::grpc().await;
    let dir = data_dir("compaction-traces");
    let config = || compacting_config(&dir, 16 << 10, 0.5);
    let traced = || ww_tests::otlp_telemetry(&receiver.endpoint(), "grpc");
    let memory = memory_with(config(), traced()).await;
    let created = memory
        .create_episode(
            request("create"),
            SESSION,
            CreateEpisode {
                content: "the lighthouse keeper logged a storm".to_owned(),
                ..Default::default()
            },
        )
        .await
        .expect("create_episode");
    let id = created.id.clone();
    let writer = |memory: Memory| {
        let id = id.clone();
        async move {
            let recalled = memory
                .recall_episodes(
                    request("recall"),
                    SESSION,
                    RecallEpisodes {
                        query: "lighthouse keeper storm".to_owned(),
                        ..Default::default()
                    },
                )
                .await
                .expect("recall");
            let hit = recalled
                .episodes
                .into_iter()
                .find(|hit| hit.episode.id == id)
                .expect("the episode is recalled");
            hit.episode.created_by_trace.expect("who wrote it")
        }
    };
    let before = writer(memory.clone()).await;
    // Enough writes after it for several compactions.
    fill(&memory, SESSION, 400, &mut Words(3)).await;
    assert!(disk(&dir).1 > 0, "no snapshot was written");
    drop(memory);
    let memory = memory_with(config(), traced()).await;
    assert_eq!(writer(memory).await, before);
}

/// A compaction runs beside the requests, not in them: the write that finds the log
/// outgrown only rotates it and asks the host; the snapshot is made on an instance of its
/// own, in a trace of its own linked to the request that asked, and recalls that start
/// after it began are answered before it ends.
#[tokio::test(flavor = "multi_thread")]
async fn requests_are_answered_while_a_compaction_runs() {
    const EPISODES: usize = 4_000;
    let dir = data_dir("compaction-beside");
    let mut words = Words(11);
    // The log alone (compaction off), then a host that compacts at the first write.
    let memory = open(&dir, u64::MAX >> 1, 1.0).await;
    fill(&memory, SESSION, EPISODES, &mut words).await;
    drop(memory);
    let receiver = ww_tests::otlp::OtlpReceiver::grpc().await;
    let memory = memory_with(
        compacting_config(&dir, 0, 0.0),
        ww_tests::recording(&receiver),
    )
    .await;
    // The first recall's reinforcement (a write) asks for snapshot 1; recalls go on
    // until it has landed.
    let landed = dir.join("store.1.snapshot");
    let mut recalls = 0;
    let started = std::time::Instant::now();
    while !landed.exists() {
        assert_eq!(recall(&memory, words.sentence(3), 5, 0).await.len(), 5);
        recalls += 1;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "snapshot 1 never landed"
        );
    }
    let spans = receiver
        .wait_for(std::time::Duration::from_secs(30), |spans| {
            spans.iter().any(|s| s.name == "embedded.upkeep")
        })
        .await;
    let upkeep = ww_tests::otlp::named(&spans, "embedded.upkeep");
    assert_eq!(upkeep.parent_span_id, "", "a trace of its own");
    assert_eq!(upkeep.attr_str("ww.upkeep.task"), Some("compact:1"));
    assert!(
        upkeep
            .attr_str("ww.upkeep.done")
            .is_some_and(|d| d.starts_with("snapshot 1:")),
        "{:?}",
        upkeep.attributes
    );
    // Linked to the span that asked: a store call inside the first recall's trace.
    let link = upkeep
        .links
        .first()
        .expect("a link to the request that asked");
    let asking_trace = spans
        .iter()
        .filter(|s| s.name == "test.recall" && s.trace_id == link.trace_id)
        .count();
    assert_eq!(asking_trace, 1, "the link names a recall's trace");
    // The compaction's own work is in its trace, not the request's.
    assert!(
        spans
            .iter()
            .any(|s| s.trace_id == upkeep.trace_id && s.name == "embedded.compact"),
        "{:?}",
        spans
            .iter()
            .filter(|s| s.trace_id == upkeep.trace_id)
            .map(|s| &s.name)
            .collect::<Vec<_>>()
    );
    let beside = spans
        .iter()
        .filter(|s| {
            s.name == "test.recall"
                && s.start_unix_nano > upkeep.start_unix_nano
                && s.end_unix_nano < upkeep.end_unix_nano
        })
        .count();
    eprintln!(
        "{recalls} recalls until snapshot 1 landed; {beside} began and ended while it was made ({:.0} ms)",
        (upkeep.end_unix_nano - upkeep.start_unix_nano) as f64 / 1e6
    );
    assert!(
        beside > 0,
        "no recall was answered while the compaction ran"
    );
    // Nothing lost: every episode is there after a restart from the snapshot.
    drop(memory);
    let memory = open(&dir, u64::MAX >> 1, 1.0).await;
    assert_eq!(episodes(&memory).await, EPISODES as u64);
}

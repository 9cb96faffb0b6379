//! `make bench`, telemetry: how many spans per second the host turns into OTLP export
//! without dropping any (head sampling always-on, then tail sampling), and what recording
//! metrics costs per call.
//!
//! Spans: the fixture driver opens and ends 50 guest spans per request (each request is
//! one trace of 51 spans), from two tasks at full speed for a few seconds, exported over
//! gRPC to a receiver in this process that counts them; the default batch settings
//! (queue 2048, batches of 512). What was made, exported and dropped comes from the
//! host's own counters and the receiver's count.
//!
//! Metrics: one measurement recorded the way the host records a tool call (attribute set
//! built per call), and the way it records a component call (point kept), in a loop; and
//! a routed component call with metrics on and off, alternating runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use wasmtime::component::Val;
use ww_host::plugins::{ComponentHost, Request};
use ww_host::telemetry::Telemetry;
use ww_host::telemetry::metrics::{Attributes, HostInstrument, Metrics};
use ww_tests::otlp::OtlpReceiver;
use ww_tests::{DRIVER, fixture_host, telemetry};

/// The binary's allocator, so that the benchmark measures what the binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SPANS_PER_REQUEST: u32 = 50;
const LOAD: Duration = Duration::from_secs(5);

async fn requests(host: &ComponentHost, function: &str, argument: u32) {
    host.invoke(
        Request::new("bench"),
        DRIVER,
        function,
        &[Val::U32(argument)],
    )
    .await
    .expect("call");
}

/// Two tasks calling `spans` until `LOAD` has passed, at full speed or paced to `rate`
/// spans per second; requests made.
async fn load(host: Arc<ComponentHost>, rate: Option<f64>) -> (u64, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let per_task = rate.map(|r| r / f64::from(SPANS_PER_REQUEST + 1) / 2.0);
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop, made) = (host.clone(), stop.clone(), made.clone());
            tokio::spawn(async move {
                let mut done = 0.0;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(per_second) = per_task {
                        // Paced: what is due by now, then a millisecond's rest.
                        if done >= started.elapsed().as_secs_f64() * per_second {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                    }
                    requests(&host, "spans", SPANS_PER_REQUEST).await;
                    made.fetch_add(1, Ordering::Relaxed);
                    done += 1.0;
                }
            })
        })
        .collect();
    tokio::time::sleep(LOAD).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("load task");
    }
    (made.load(Ordering::Relaxed), started.elapsed())
}

/// Spans made and dropped at full speed, then the highest of a few paced rates with no
/// span dropped.
async fn throughput(label: &str, extra: &[(&str, &str)]) {
    let full = run_load(label, extra, None).await;
    let mut sustained = None;
    for rate in [
        100_000.0, 200_000.0, 300_000.0, 400_000.0, 500_000.0, 600_000.0,
    ] {
        if rate > full {
            break;
        }
        let paced = format!("{label}, paced at {rate} spans/s");
        if run_load(&paced, extra, Some(rate)).await > 0.0 {
            sustained = Some(rate);
        } else {
            break;
        }
    }
    match sustained {
        Some(rate) => println!("=> {label}: sustained {rate} spans/s with none dropped"),
        None => println!("=> {label}: drops even at the lowest paced rate"),
    }
}

/// One load; the spans/s made when none was dropped, else 0 (at full speed: made).
async fn run_load(label: &str, extra: &[(&str, &str)], rate: Option<f64>) -> f64 {
    let receiver = OtlpReceiver::grpc_counting().await;
    let endpoint = receiver.endpoint();
    let mut vars = vec![
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", endpoint.as_str()),
    ];
    vars.extend_from_slice(extra);
    let telemetry = telemetry(&vars);
    let host = Arc::new(fixture_host(telemetry.clone()).await);
    requests(&host, "spans", SPANS_PER_REQUEST).await;
    telemetry.flush().await;
    let before = receiver.counted();
    let (made, took) = load(host, rate).await;
    let load_end = Instant::now();
    telemetry.flush().await;
    let drained = load_end.elapsed();
    let stats = telemetry.stats();
    let spans = made * u64::from(SPANS_PER_REQUEST + 1);
    let arrived = receiver.counted() - before;
    println!(
        "{label}: {made} requests, {spans} spans in {:.1} s = {:.0} spans/s made; \
         {arrived} arrived ({:.0}/s), {} dropped; last batch flushed {:.0} ms after the load",
        took.as_secs_f64(),
        spans as f64 / took.as_secs_f64(),
        arrived as f64 / took.as_secs_f64(),
        stats.spans_dropped,
        drained.as_secs_f64() * 1000.0,
    );
    if let Some(tail) = stats.tail {
        println!("  tail: {tail:?}");
    }
    telemetry.shutdown().await;
    let made_per_second = spans as f64 / took.as_secs_f64();
    match rate {
        None => made_per_second,
        Some(_) if stats.spans_dropped == 0 => made_per_second,
        Some(_) => 0.0,
    }
}

fn per_op(label: &str, n: u32, mut op: impl FnMut(u32)) {
    for i in 0..n / 10 {
        op(i);
    }
    let started = Instant::now();
    for i in 0..n {
        op(i);
    }
    let each = started.elapsed() / n;
    println!("{label}: {} ns", each.as_nanos());
}

fn recording_cost() {
    let metrics = Metrics::new();
    let sampled = SpanContext::new(
        TraceId::from_bytes([7; 16]),
        SpanId::from_bytes([9; 8]),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    let tools = [
        "create_episode",
        "recall_episodes",
        "semantic_recall",
        "memory_stats",
    ];
    per_op(
        "metrics: a tool call's measurement (attribute set built per call, exemplar)",
        1_000_000,
        |i| {
            let attributes = Attributes::new(vec![
                ("mcp.method.name".into(), "tools/call".into()),
                (
                    "gen_ai.tool.name".into(),
                    tools[i as usize % 4].to_owned().into(),
                ),
            ]);
            let seconds = f64::from(i % 5000) * 1e-6;
            metrics
                .host(HostInstrument::ToolCall)
                .record(seconds, &attributes, Some(&sampled));
        },
    );
    let point = metrics
        .host(HostInstrument::ComponentCall)
        .point(&Attributes::new(vec![(
            "ww.component".into(),
            "embedded".into(),
        )]));
    per_op(
        "metrics: a component call's measurement (point kept, exemplar)",
        5_000_000,
        |i| point.record(f64::from(i % 5000) * 1e-6, Some(&sampled)),
    );
    per_op(
        "metrics: a component call's measurement (point kept, unsampled)",
        5_000_000,
        |i| point.record(f64::from(i % 5000) * 1e-6, None),
    );
}

/// Routed calls with metrics on and off, alternating rounds; the median round of each.
async fn routed_calls() {
    let receiver = OtlpReceiver::grpc_counting().await;
    let endpoint = receiver.endpoint();
    let host_with = |metrics: &'static str| {
        let vars = [
            ("WW_OTEL_ENABLED", "true"),
            ("WW_OTEL_ENDPOINT", endpoint.as_str()),
            ("WW_OTEL_METRICS", metrics),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
        ];
        let telemetry: Arc<Telemetry> = telemetry(&vars);
        async move { (fixture_host(telemetry.clone()).await, telemetry) }
    };
    let (off, off_telemetry) = host_with("false").await;
    let (on, on_telemetry) = host_with("true").await;
    const CALLS: u32 = 2000;
    let mut rounds: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut differences = Vec::new();
    for round in 0..102 {
        let mut each = [0.0; 2];
        for (index, host) in [&off, &on].into_iter().enumerate() {
            let started = Instant::now();
            requests(host, "call-worker", CALLS).await;
            each[index] = started.elapsed().as_nanos() as f64 / f64::from(CALLS);
        }
        if round >= 2 {
            rounds[0].push(each[0]);
            rounds[1].push(each[1]);
            differences.push(each[1] - each[0]);
        }
        // Keep the span queues from filling: export between rounds.
        off_telemetry.flush().await;
        on_telemetry.flush().await;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [a, b] = rounds;
    println!(
        "metrics: a routed component call, tracing on: metrics off {:.0} ns, on {:.0} ns; \
         median difference of paired rounds {:+.0} ns per call (one measurement per call)",
        median(a),
        median(b),
        median(differences)
    );
}

#[tokio::main]
async fn main() {
    if std::env::var("WW_BENCH").is_ok_and(|parts| !parts.split(',').any(|p| p == "telemetry")) {
        return;
    }
    recording_cost();
    routed_calls().await;
    throughput("head always_on", &[("WW_OTEL_SAMPLER", "always_on")]).await;
    throughput(
        "head always_on, queue 8192",
        &[
            ("WW_OTEL_SAMPLER", "always_on"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8192"),
        ],
    )
    .await;
    throughput(
        "tail, ratio 1 (every trace buffered, then exported)",
        &[
            ("WW_OTEL_TAIL_SAMPLING", "true"),
            ("WW_OTEL_TAIL_RATIO", "1"),
        ],
    )
    .await;
    throughput(
        "tail, ratio 0.01",
        &[
            ("WW_OTEL_TAIL_SAMPLING", "true"),
            ("WW_OTEL_TAIL_RATIO", "0.01"),
        ],
    )
    .await;
}

//! Tail sampling in a real host, checked at a real OTLP receiver: whole traces or nothing,
//! every failed and every slow one, and the ratio's share of the rest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Val;
use ww_host::plugins::{ComponentHost, Request};
use ww_host::telemetry::Telemetry;
use ww_host::tracing_capability::IncomingContext;
use ww_tests::otlp::{OtlpReceiver, ReceivedSpan, status};
use ww_tests::*;

const WAIT: Duration = Duration::from_secs(30);
const LATENCY_MS: u64 = 20;

/// The ratio rule, written from its definition (the low 63 bits of the trace id's last
/// eight bytes below `ratio * 2^63`), not taken from the host.
fn in_ratio(trace_id: &str, ratio: f64) -> bool {
    let low = u64::from_str_radix(&trace_id[16..32], 16).expect("hex trace id");
    (low >> 1) < (ratio * (1u64 << 63) as f64) as u64
}

fn tail_telemetry(receiver: &OtlpReceiver, extra: &[(&str, &str)]) -> Arc<Telemetry> {
    let latency = LATENCY_MS.to_string();
    let mut vars = vec![
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", receiver.endpoint().leak() as &str),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
        ("WW_OTEL_TAIL_SAMPLING", "true"),
        ("WW_OTEL_TAIL_RATIO", "0.01"),
        ("WW_OTEL_TAIL_LATENCY_MS", latency.leak()),
    ];
    vars.extend_from_slice(extra);
    telemetry(&vars)
}

fn tail_counts(telemetry: &Telemetry) -> BTreeMap<&'static str, u64> {
    telemetry
        .stats()
        .tail
        .expect("tail sampling is on")
        .into_iter()
        .collect()
}

/// The received spans by trace, each checked whole: one local root (under the test's
/// remote parent) and every other span's parent among the trace's spans.
fn whole_traces(
    spans: &[ReceivedSpan],
    parents: &HashSet<String>,
) -> HashMap<String, Vec<ReceivedSpan>> {
    let mut traces: HashMap<String, Vec<ReceivedSpan>> = HashMap::new();
    for span in spans {
        traces
            .entry(span.trace_id.clone())
            .or_default()
            .push(span.clone());
    }
    for (trace, spans) in &traces {
        let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        let roots = spans
            .iter()
            .filter(|s| s.parent_span_id.is_empty() || parents.contains(&s.parent_span_id))
            .count();
        assert_eq!(roots, 1, "trace {trace} has {roots} roots: {spans:#?}");
        for span in spans {
            assert!(
                span.parent_span_id.is_empty()
                    || parents.contains(&span.parent_span_id)
                    || ids.contains(span.parent_span_id.as_str()),
                "trace {trace} arrived without the parent of {}",
                span.name
            );
        }
    }
    traces
}

fn parent_of(index: usize) -> (String, String) {
    // Trace ids spread over the whole range, as random ones would be.
    let trace = format!(
        "{:016x}{:016x}",
        0x5eed_u64 + index as u64,
        (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    );
    let parent = format!("{:016x}", 0xabc0_0000_u64 + index as u64);
    (trace, parent)
}

/// Calls `0..n`, eight at a time, each under the remote parent of [`parent_of`] and in
/// the work mode `mode_of` gives; a failure is exactly a call in mode `fail`.
async fn calls(
    host: &Arc<ComponentHost>,
    n: usize,
    name: &'static str,
    mode_of: impl Fn(usize) -> &'static str + Copy + Send + 'static,
) {
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..n).step_by(8) {
                let (trace, parent) = parent_of(i);
                let request = Request::new(name).with_parent(IncomingContext::traceparent(
                    format!("00-{trace}-{parent}-01"),
                ));
                let outcome = run(&host, request, "load", mode_of(i))
                    .await
                    .expect("no trap");
                assert_eq!(outcome.is_err(), mode_of(i) == "fail", "call {i}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("calls");
    }
}

/// Wait until spans of `traces` distinct traces have arrived.
async fn arrived(receiver: &OtlpReceiver, traces: u64) -> Vec<ReceivedSpan> {
    receiver
        .wait_for(WAIT, |spans| {
            spans
                .iter()
                .map(|s| &s.trace_id)
                .collect::<HashSet<_>>()
                .len() as u64
                >= traces
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sampling_keeps_every_error_and_slow_trace_whole_and_a_ratio_of_the_rest() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = tail_telemetry(&receiver, &[("WW_OTEL_TAIL_MAX_SPANS", "2000")]);
    let host = Arc::new(fixture_host(telemetry.clone()).await);

    // 1,000 calls, eight at a time: every 20th fails, every 25th is slow.
    let mode_of = |i: usize| match i {
        i if i % 20 == 7 => "fail",
        i if i % 25 == 3 => "slow",
        _ => "succeed",
    };
    calls(&host, 1000, "test.mixed", move |i| mode_of(i)).await;
    telemetry.flush().await;

    let counts = tail_counts(&telemetry);
    let failed: Vec<usize> = (0..1000).filter(|&i| mode_of(i) == "fail").collect();
    let slow: Vec<usize> = (0..1000).filter(|&i| mode_of(i) == "slow").collect();
    let expected_traces = counts["kept_error"] + counts["kept_slow"] + counts["kept_ratio"];
    let spans = arrived(&receiver, expected_traces).await;
    let parents: HashSet<String> = (0..1000).map(|i| parent_of(i).1).collect();
    let traces = whole_traces(&spans, &parents);

    assert_eq!(counts["evicted_traces"], 0, "{counts:?}");
    assert_eq!(
        counts["kept_error"] + counts["kept_slow"] + counts["kept_ratio"] + counts["dropped"],
        1000,
        "{counts:?}"
    );
    // Every failed and every slow call arrived, whole: as many spans as any other call
    // that went the same way (a failed one stops before the caller's post-processing).
    let size = |i: usize| traces.get(&parent_of(i).0).map(Vec::len);
    let full = size(slow[0]).expect("a slow trace");
    let failed_size = size(failed[0]).expect("a failed trace");
    assert!(failed_size < full);
    for &i in failed.iter() {
        let trace = &traces[&parent_of(i).0];
        assert!(trace.iter().any(|s| s.status_code == status::ERROR));
        assert_eq!(trace.len(), failed_size, "failed call {i}");
    }
    for &i in &slow {
        assert_eq!(size(i), Some(full), "slow call {i}");
    }
    assert_eq!(counts["kept_error"], failed.len() as u64);
    // The rest: kept exactly when in the ratio, or when it happened to be slow itself.
    let mut kept_ordinary = 0;
    let mut ordinary = 0;
    for i in (0..1000).filter(|&i| mode_of(i) == "succeed") {
        ordinary += 1;
        let (trace_id, _) = parent_of(i);
        match traces.get(&trace_id) {
            Some(trace) => {
                assert_eq!(trace.len(), full, "call {i}");
                let root = trace.iter().find(|s| s.name == "test.mixed").expect("root");
                let took = Duration::from_nanos(root.end_unix_nano - root.start_unix_nano);
                assert!(
                    in_ratio(&trace_id, 0.01) || took >= Duration::from_millis(LATENCY_MS),
                    "call {i} kept, neither in the ratio nor slow ({took:?})"
                );
                kept_ordinary += u64::from(in_ratio(&trace_id, 0.01));
            }
            None => assert!(
                !in_ratio(&trace_id, 0.01),
                "call {i} is in the ratio but was dropped"
            ),
        }
    }
    // Near 1 %: the ids are spread like random ones.
    let share = kept_ordinary as f64 / ordinary as f64;
    assert!(
        (0.002..=0.03).contains(&share),
        "kept {kept_ordinary} of {ordinary}"
    );
    assert!(counts["peak_buffered_spans"] <= 2000, "{counts:?}");
    assert_eq!(counts["buffered_spans"], 0, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tail_buffer_evicts_whole_traces_and_stays_under_its_cap() {
    let receiver = OtlpReceiver::grpc().await;
    // Room for about one request's spans.
    let telemetry = tail_telemetry(
        &receiver,
        &[("WW_OTEL_TAIL_MAX_SPANS", "8"), ("WW_OTEL_TAIL_RATIO", "1")],
    );
    let host: Arc<ComponentHost> = Arc::new(fixture_host(telemetry.clone()).await);
    // Requests four at a time, each root held open until the group's last call is done:
    // the spans the earlier ones finished wait in the buffer and are pushed out by the
    // later ones, however the calls happen to be scheduled.
    const GROUP: usize = 4;
    for group in (0..200).step_by(GROUP) {
        let mut open = Vec::new();
        for i in group..group + GROUP {
            let (trace, parent) = parent_of(i);
            let mut call = host.begin(Request::new("test.crowded").with_parent(
                IncomingContext::traceparent(format!("00-{trace}-{parent}-01")),
            ));
            let outcome = call
                .invoke(
                    DRIVER,
                    "run",
                    &[Val::String("load".into()), mode("succeed")],
                )
                .await
                .map(string_result)
                .expect("no trap");
            assert!(outcome.is_ok(), "call {i}: {outcome:?}");
            open.push(call);
        }
        drop(open);
    }
    telemetry.flush().await;
    let counts = tail_counts(&telemetry);
    // At least all but the last of every group pushed out; the last one kept.
    assert!(counts["evicted_traces"] >= 150, "{counts:?}");
    assert!(counts["kept_ratio"] >= 50, "{counts:?}");
    assert!(counts["peak_buffered_spans"] <= 8, "{counts:?}");
    assert_eq!(
        counts["kept_ratio"] + counts["evicted_traces"],
        200,
        "{counts:?}"
    );
    assert_eq!(counts["buffered_spans"], 0, "{counts:?}");
    let spans = arrived(&receiver, counts["kept_ratio"]).await;
    let parents: HashSet<String> = (0..200).map(|i| parent_of(i).1).collect();
    let traces = whole_traces(&spans, &parents);
    assert_eq!(traces.len() as u64, counts["kept_ratio"]);
    let sizes: HashSet<usize> = traces.values().map(Vec::len).collect();
    assert_eq!(sizes.len(), 1, "every kept trace whole: {sizes:?}");
}

//! Metrics from a real host serving a real MCP client, received by a real OTLP receiver:
//! names, units, attributes, sub-millisecond buckets, and exemplars that point at spans
//! of traces that were exported.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Exemplar, HistogramDataPoint, metric};
use rmcp::service::{RoleClient, RunningService};
use serde_json::json;
use ww_host::telemetry::Telemetry;
use ww_tests::mcp::call;
use ww_tests::otlp::{OtlpReceiver, ReceivedMetric, ReceivedSpan};
use ww_tests::{data_dir, memory, telemetry};

const WAIT: Duration = Duration::from_secs(20);

async fn connect(memory: ww_host::memory::Memory) -> RunningService<RoleClient, ()> {
    ww_tests::mcp::connect(memory, "metrics-session").await
}

fn metrics_telemetry(
    receiver: &OtlpReceiver,
    protocol: &str,
    extra: &[(&str, &str)],
) -> Arc<Telemetry> {
    let endpoint = receiver.endpoint();
    let mut vars = vec![
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", endpoint.as_str()),
        ("WW_OTEL_PROTOCOL", protocol),
        ("WW_OTEL_SERVICE_NAME", "ww-metrics-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        // Only the test's flush exports.
        ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
    ];
    vars.extend_from_slice(extra);
    telemetry(&vars)
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attributes, key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn metric<'a>(metrics: &'a [(String, ReceivedMetric)], name: &str) -> &'a ReceivedMetric {
    &metrics
        .iter()
        .find(|(_, m)| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name} in {:?}", names(metrics)))
        .1
}

fn names(metrics: &[(String, ReceivedMetric)]) -> Vec<&str> {
    metrics.iter().map(|(_, m)| m.name.as_str()).collect()
}

fn histogram(metric: &ReceivedMetric) -> &[HistogramDataPoint] {
    match &metric.data {
        Some(metric::Data::Histogram(h)) => {
            assert_eq!(h.aggregation_temporality, 2, "cumulative");
            &h.data_points
        }
        other => panic!("{} is not a histogram: {other:?}", metric.name),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every exemplar names a span that arrived, named as `span_name` expects, and its value
/// lies in the bucket it was kept in.
fn check_exemplars(
    point: &HistogramDataPoint,
    spans: &HashMap<(String, String), &ReceivedSpan>,
    span_name: impl Fn(&str) -> bool,
) -> usize {
    for exemplar in &point.exemplars {
        let key = (hex(&exemplar.trace_id), hex(&exemplar.span_id));
        let span = spans
            .get(&key)
            .unwrap_or_else(|| panic!("exemplar {key:?} names no exported span"));
        assert!(span_name(&span.name), "exemplar on span {}", span.name);
        let value = exemplar_value(exemplar);
        let took = (span.end_unix_nano - span.start_unix_nano) as f64 / 1e9;
        // The measurement is taken just inside or around its span: the same order.
        assert!(
            value > 0.0 && value < took * 10.0 + 0.01,
            "{value} vs {took}"
        );
    }
    point.exemplars.len()
}

fn exemplar_value(exemplar: &Exemplar) -> f64 {
    match exemplar.value {
        Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(v)) => v,
        other => panic!("exemplar value {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_arrive_with_names_units_attributes_and_exemplars_of_exported_traces() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = metrics_telemetry(&receiver, "grpc", &[]);
    let memory = memory(&data_dir("metrics-grpc"), telemetry.clone()).await;
    let client = connect(memory).await;
    for content in ["one", "two", "three"] {
        let result = call(&client, "create_episode", json!({"content": content})).await;
        assert_ne!(result.is_error, Some(true));
    }
    for _ in 0..2 {
        call(&client, "recall_episodes", json!({"query": "two"})).await;
    }
    // Refused by the host before any component runs, and failed inside the service.
    let refused = call(&client, "create_episode", json!({"content": 7})).await;
    assert_eq!(refused.is_error, Some(true));
    let failed = call(
        &client,
        "create_episode",
        json!({"content": "x", "valence": 3}),
    )
    .await;
    assert_eq!(failed.is_error, Some(true));
    telemetry.flush().await;

    let metrics = receiver.latest_metrics();
    let spans = receiver.spans();
    let by_id: HashMap<(String, String), &ReceivedSpan> = spans
        .iter()
        .map(|s| ((s.trace_id.clone(), s.span_id.clone()), s))
        .collect();

    // Tool calls: one point per tool and outcome, counts exact, exemplars on the roots.
    let tools = metric(&metrics, "mcp.server.operation.duration");
    assert_eq!(tools.unit, "s");
    let points = histogram(tools);
    let point = |tool: &str, error: Option<&str>| {
        points
            .iter()
            .find(|p| {
                attr_str(&p.attributes, "gen_ai.tool.name") == Some(tool)
                    && attr_str(&p.attributes, "ww.error.code") == error
            })
            .unwrap_or_else(|| panic!("no point for {tool} {error:?}: {points:#?}"))
    };
    let created = point("create_episode", None);
    assert_eq!(created.count, 3);
    assert_eq!(
        attr_str(&created.attributes, "mcp.method.name"),
        Some("tools/call")
    );
    assert_eq!(attr_str(&created.attributes, "error.type"), None);
    assert_eq!(
        created.explicit_bounds.first(),
        Some(&0.000_01),
        "sub-millisecond buckets"
    );
    assert_eq!(
        created.bucket_counts.len(),
        created.explicit_bounds.len() + 1
    );
    assert_eq!(created.bucket_counts.iter().sum::<u64>(), 3);
    assert!(created.min.unwrap() > 0.0 && created.min <= created.max);
    let n = check_exemplars(created, &by_id, |name| name == "mcp.create_episode");
    assert!(n >= 1, "a sampled call leaves an exemplar");
    assert_eq!(point("recall_episodes", None).count, 2);
    let invalid = point("create_episode", Some("VALIDATION_ERROR"));
    assert_eq!(
        invalid.count, 2,
        "refused and failed calls are both measured"
    );
    assert_eq!(
        attr_str(&invalid.attributes, "error.type"),
        Some("tool_error")
    );
    check_exemplars(invalid, &by_id, |name| name == "mcp.create_episode");

    // Store operations, from the service's side of the boundary.
    let store = metric(&metrics, "db.client.operation.duration");
    assert_eq!(store.unit, "s");
    let store_points = histogram(store);
    let operations: HashSet<&str> = store_points
        .iter()
        .filter(|p| attr_str(&p.attributes, "db.system.name") == Some("embedded"))
        .filter_map(|p| attr_str(&p.attributes, "db.operation.name"))
        .collect();
    assert!(
        operations.contains("upsert") && operations.contains("search"),
        "{operations:?}"
    );
    let mut exemplars = 0;
    for point in store_points {
        exemplars += check_exemplars(point, &by_id, |name| name.starts_with("embedded."));
    }
    assert!(exemplars > 0);

    // Calls into components, most well under a millisecond.
    let calls = histogram(metric(&metrics, "ww.component.call.duration"));
    let components: HashSet<&str> = calls
        .iter()
        .filter_map(|p| attr_str(&p.attributes, "ww.component"))
        .collect();
    for expected in ["episodic", "embedded", "embedder"] {
        assert!(components.contains(expected), "{components:?}");
    }
    let fast: u64 = calls
        .iter()
        .map(|p| {
            let below_1ms = p
                .explicit_bounds
                .iter()
                .take_while(|&&b| b <= 0.001)
                .count();
            p.bucket_counts[..below_1ms].iter().sum::<u64>()
        })
        .sum();
    assert!(fast > 0, "sub-millisecond calls land in their own buckets");

    // Counts kept elsewhere, observed.
    let sum = |name: &str| match &metric(&metrics, name).data {
        Some(metric::Data::Sum(sum)) => {
            assert!(sum.is_monotonic);
            sum.data_points.clone()
        }
        other => panic!("{name} is not a sum: {other:?}"),
    };
    // Episodic: the pool's instance made at warm-up (the recalls ran on it) and the one
    // its serial writes run on (the creates).
    let instantiations = sum("ww.component.instantiations");
    assert!(instantiations.iter().any(|p| {
        attr_str(&p.attributes, "ww.component") == Some("episodic")
            && p.value
                == Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(2))
    }));
    sum("ww.component.traps");
    sum("ww.telemetry.spans.exported");
    sum("ww.telemetry.spans.dropped");
    // The resource says whose metrics these are.
    let export = receiver.metric_exports().pop().expect("an export");
    let resource = export.resource_metrics[0]
        .resource
        .as_ref()
        .expect("resource");
    assert_eq!(
        attr_str(&resource.attributes, "service.name"),
        Some("ww-metrics-test")
    );
    // The traces' resource itself, SDK attributes included.
    assert_eq!(
        attr_str(&resource.attributes, "telemetry.sdk.language"),
        Some("rust")
    );
    assert!(telemetry.stats().metrics.expect("metrics on").exports >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tail_sampling_exemplars_link_only_to_kept_traces_over_http() {
    let receiver = OtlpReceiver::http().await;
    // Nothing kept but failures.
    let telemetry = metrics_telemetry(
        &receiver,
        "http/protobuf",
        &[
            ("WW_OTEL_TAIL_SAMPLING", "true"),
            ("WW_OTEL_TAIL_RATIO", "0"),
            ("WW_OTEL_TAIL_LATENCY_MS", "600000"),
        ],
    );
    let memory = memory(&data_dir("metrics-tail"), telemetry.clone()).await;
    let client = connect(memory).await;
    for content in ["a", "b", "c", "d"] {
        call(&client, "create_episode", json!({"content": content})).await;
    }
    let failed = call(&client, "mark_important", json!({"id": "no-such-episode"})).await;
    assert_eq!(failed.is_error, Some(true));
    telemetry.flush().await;

    let spans = receiver
        .wait_for(WAIT, |s| s.iter().any(|s| s.name == "mcp.mark_important"))
        .await;
    let traces: HashSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces.len(), 1, "only the failed call's trace is kept");
    let by_id: HashMap<(String, String), &ReceivedSpan> = spans
        .iter()
        .map(|s| ((s.trace_id.clone(), s.span_id.clone()), s))
        .collect();
    let metrics = receiver.latest_metrics();
    let points = histogram(metric(&metrics, "mcp.server.operation.duration"));
    let created = points
        .iter()
        .find(|p| attr_str(&p.attributes, "gen_ai.tool.name") == Some("create_episode"))
        .expect("create_episode measured");
    assert_eq!(created.count, 4, "every call is measured, sampled or not");
    assert!(
        created.exemplars.is_empty(),
        "no exemplar points at a dropped trace"
    );
    let marked = points
        .iter()
        .find(|p| attr_str(&p.attributes, "gen_ai.tool.name") == Some("mark_important"))
        .expect("mark_important measured");
    assert_eq!(
        check_exemplars(marked, &by_id, |n| n == "mcp.mark_important"),
        1
    );
    for (_, metric) in &metrics {
        if let Some(metric::Data::Histogram(h)) = &metric.data {
            for point in &h.data_points {
                for exemplar in &point.exemplars {
                    assert!(
                        traces.contains(hex(&exemplar.trace_id).as_str()),
                        "{}",
                        metric.name
                    );
                }
            }
        }
    }
    let decisions = match &metric(&metrics, "ww.telemetry.tail.traces").data {
        Some(metric::Data::Sum(sum)) => sum.data_points.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        decisions
            .iter()
            .any(|p| attr_str(&p.attributes, "ww.tail.decision") == Some("dropped"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_turned_off_while_traces_flow() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = metrics_telemetry(&receiver, "grpc", &[("WW_OTEL_METRICS", "false")]);
    assert!(telemetry.metrics().is_none());
    let memory = memory(&data_dir("metrics-off"), telemetry.clone()).await;
    let client = connect(memory).await;
    call(
        &client,
        "create_episode",
        json!({"content": "traced, not measured"}),
    )
    .await;
    telemetry.flush().await;
    receiver.wait_for(WAIT, |s| !s.is_empty()).await;
    assert!(receiver.metric_exports().is_empty());
    assert!(telemetry.stats().metrics.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_records_its_own_metrics_in_its_scope_with_exemplars() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = metrics_telemetry(&receiver, "grpc", &[]);
    let host = ww_tests::fixture_host(telemetry.clone()).await;
    for (input, mode) in [("ab", "succeed"), ("abcd", "succeed"), ("abc", "fail")] {
        let request = ww_host::plugins::Request::new("test.guest_metrics");
        ww_tests::run(&host, request, input, mode)
            .await
            .expect("no trap")
            .ok();
    }
    telemetry.flush().await;
    let spans = receiver.wait_for(WAIT, |s| s.len() >= 10).await;
    let by_id: HashMap<(String, String), &ReceivedSpan> = spans
        .iter()
        .map(|s| ((s.trace_id.clone(), s.span_id.clone()), s))
        .collect();
    let metrics = receiver.latest_metrics();
    let of_worker: Vec<(String, ReceivedMetric)> = metrics
        .iter()
        .filter(|(scope, _)| scope == "fixture-worker")
        .cloned()
        .collect();
    assert_eq!(
        names(&of_worker),
        ["fixture.work.calls", "fixture.input.length"]
    );

    let calls = metric(&of_worker, "fixture.work.calls");
    assert_eq!(calls.unit, "{call}");
    let Some(metric::Data::Sum(sum)) = &calls.data else {
        panic!("a counter is a sum: {calls:?}")
    };
    assert!(sum.is_monotonic);
    let count = |mode: &str| {
        sum.data_points
            .iter()
            .find(|p| attr_str(&p.attributes, "fixture.mode") == Some(mode))
            .map(|p| p.value)
    };
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as Number;
    assert_eq!(count("succeed"), Some(Some(Number::AsDouble(2.0))));
    assert_eq!(count("fail"), Some(Some(Number::AsDouble(1.0))));
    for point in &sum.data_points {
        for exemplar in &point.exemplars {
            let span = by_id[&(hex(&exemplar.trace_id), hex(&exemplar.span_id))];
            assert_eq!(
                span.name, "worker.process",
                "the span open when it was recorded"
            );
        }
    }

    let lengths = metric(&of_worker, "fixture.input.length");
    assert_eq!(lengths.unit, "By");
    let points = histogram(lengths);
    assert_eq!(points.len(), 1);
    assert_eq!((points[0].count, points[0].sum), (3, Some(9.0)));
    assert_eq!((points[0].min, points[0].max), (Some(2.0), Some(4.0)));
    // Buckets (1, 2] and (2, 5]: one exemplar each, the last measurement in it.
    assert_eq!(&points[0].bucket_counts[..5], &[0, 0, 1, 2, 0]);
    assert_eq!(check_exemplars_named(&points[0], &by_id), 2);
    // The host's own instruments are not in the component's scope.
    assert!(
        metrics
            .iter()
            .any(|(scope, m)| scope == "ww-memory" && m.name == "ww.component.call.duration")
    );
}

/// Exemplars naming `worker.process` spans that arrived.
fn check_exemplars_named(
    point: &HistogramDataPoint,
    spans: &HashMap<(String, String), &ReceivedSpan>,
) -> usize {
    for exemplar in &point.exemplars {
        let span = spans[&(hex(&exemplar.trace_id), hex(&exemplar.span_id))];
        assert_eq!(span.name, "worker.process");
        assert!(exemplar_value(exemplar) >= 2.0);
    }
    point.exemplars.len()
}

/// A trace-only backend (Jaeger, Tempo, Phoenix) where metrics go by default: the first
/// answer that it takes no metrics stops their export, once, said in `memory_stats`.
async fn trace_only_backend_stops_the_metrics_export(receiver: OtlpReceiver, protocol: &str) {
    let telemetry = metrics_telemetry(&receiver, protocol, &[]);
    let memory = memory(
        &data_dir(&format!("metrics-trace-only-{protocol}")),
        telemetry.clone(),
    )
    .await;
    let client = connect(memory).await;
    call(&client, "create_episode", json!({"content": "a"})).await;
    telemetry.flush().await;
    let stats = telemetry.stats().metrics.expect("metrics on");
    let stopped = stats.stopped.expect("the export stopped");
    assert!(stopped.contains("takes no metrics"), "{stopped}");
    assert_eq!((stats.exports, stats.failed_exports), (0, 1));
    // Traces still go there; metrics are not tried again.
    call(&client, "create_episode", json!({"content": "b"})).await;
    telemetry.flush().await;
    let spans = receiver
        .wait_for(WAIT, |s| {
            s.iter().filter(|s| s.name == "mcp.create_episode").count() == 2
        })
        .await;
    assert!(!spans.is_empty());
    assert_eq!(telemetry.stats().metrics.unwrap().failed_exports, 1);
    assert!(receiver.metric_exports().is_empty());
    // A client sees it.
    let stats = call(&client, "memory_stats", json!({})).await;
    let metrics = &stats.structured_content.unwrap()["tracing"]["metrics"];
    assert_eq!(metrics["stopped"], json!(stopped), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_backend_without_metrics_stops_their_export() {
    trace_only_backend_stops_the_metrics_export(OtlpReceiver::grpc_traces_only().await, "grpc")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_backend_without_metrics_stops_their_export() {
    trace_only_backend_stops_the_metrics_export(
        OtlpReceiver::http_traces_only().await,
        "http/protobuf",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_endpoint_that_is_down_is_retried_not_stopped() {
    let receiver = OtlpReceiver::grpc().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let telemetry = metrics_telemetry(
        &receiver,
        "grpc",
        &[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", down.as_str())],
    );
    let memory = memory(&data_dir("metrics-down"), telemetry.clone()).await;
    let client = connect(memory).await;
    for content in ["a", "b"] {
        call(&client, "create_episode", json!({"content": content})).await;
        telemetry.flush().await;
    }
    let stats = telemetry.stats().metrics.expect("metrics on");
    assert_eq!(stats.failed_exports, 2, "tried at each flush");
    assert!(stats.stopped.is_none());
}

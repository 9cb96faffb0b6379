//! Tracing across real components in a real host, checked at real OTLP receivers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use wasmtime::component::Val;
use ww_host::plugins::{
    CallError, CallLimits, ComponentHost, HostConfig, LoadError, Request, TrapReason,
};
use ww_host::tracing_capability::IncomingContext;
use ww_host::tracing_capability::limits::{
    MAX_ATTRIBUTES_PER_SPAN, MAX_EVENTS_PER_SPAN, MAX_NAME_BYTES, MAX_OPEN_SPANS_PER_REQUEST,
    MAX_STRING_VALUE_BYTES,
};
use ww_tests::otlp::{AttrValue, OtlpReceiver, ReceivedSpan, assert_child_of, kind, named, status};
use ww_tests::*;

const WAIT: Duration = Duration::from_secs(20);

/// The traceparent the worker sees inside its deepest span, for one request.
async fn traceparent_seen_by_worker(host: &ComponentHost, request: Request) -> String {
    let out = host
        .invoke(request, DRIVER, "trace-id-seen-by-worker", &[])
        .await
        .unwrap();
    match out.as_slice() {
        [Val::String(seen)] => seen.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

fn in_trace(spans: &[ReceivedSpan], trace_id: &str) -> Vec<ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect()
}

/// The seven spans of a successful `run`, checked one by one: names, kinds, parents,
/// attributes, events, and that children lie within their parents in time.
fn assert_run_tree(spans: &[ReceivedSpan], root_name: &str) {
    assert_eq!(
        spans.len(),
        7,
        "{:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let root = named(spans, root_name);
    let caller = named(spans, "caller.run");
    let boundary = named(spans, "fixture-worker.work");
    let process = named(spans, "worker.process");
    let transform = named(spans, "worker.transform");
    let post = named(spans, "caller.post_process");
    let finalize = named(spans, "caller.finalize");

    let trace: HashSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(trace.len(), 1, "one trace");
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), 7, "distinct span ids");

    let chain = [
        (caller, root, kind::INTERNAL),
        (boundary, caller, kind::CLIENT),
        (process, boundary, kind::INTERNAL),
        (transform, process, kind::INTERNAL),
        (post, caller, kind::INTERNAL),
        (finalize, post, kind::INTERNAL),
    ];
    for (child, parent, expected_kind) in chain {
        assert_child_of(child, parent);
        assert_eq!(child.kind, expected_kind, "kind of {}", child.name);
        assert_eq!(child.status_code, status::UNSET, "{} status", child.name);
    }
    assert_eq!(root.kind, kind::SERVER);
    assert_eq!(root.service_name, "ww-test");

    assert_eq!(caller.attr_str("caller.input"), Some("hello"));
    assert_eq!(boundary.attr_str("ww.component"), Some("fixture-worker"));
    assert_eq!(boundary.attr_str("ww.caller"), Some("fixture-caller"));
    assert_eq!(
        boundary.attr_str("ww.interface"),
        Some("ww:fixtures/worker@0.1.0")
    );
    assert_eq!(boundary.attr_str("ww.function"), Some("work"));
    assert_eq!(
        process.attributes.get("worker.input_length"),
        Some(&AttrValue::Int(5))
    );
    assert_eq!(process.events.len(), 1);
    assert_eq!(process.events[0].name, "worker.done");
    assert_eq!(
        process.events[0].attributes.get("worker.output_length"),
        Some(&AttrValue::Int(5))
    );
    assert_eq!(transform.attr_str("worker.mode"), Some("WorkMode::Succeed"));
    assert_eq!(
        post.attributes.get("caller.worked_length"),
        Some(&AttrValue::Int(5))
    );
    assert_eq!(
        finalize.attributes.get("caller.step"),
        Some(&AttrValue::Int(2))
    );
    assert_eq!(finalize.events[0].name, "caller.finalized");
    assert_eq!(
        finalize.events[0].attributes.get("ok"),
        Some(&AttrValue::Bool(true))
    );
}

/// Export one `run` to `receiver` over `protocol` (with an extra header naming the
/// protocol), let the scheduled export deliver it — no flush — and check its tree.
async fn one_run_arrives(
    receiver: &OtlpReceiver,
    protocol: &str,
    root: &'static str,
) -> Arc<ww_host::telemetry::Telemetry> {
    let header = format!("x-ww-test={protocol}");
    let telemetry = telemetry(&[
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", &receiver.endpoint()),
        ("WW_OTEL_PROTOCOL", protocol),
        ("WW_OTEL_SERVICE_NAME", "ww-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_EXPORTER_OTLP_HEADERS", &header),
    ]);
    let host = fixture_host(telemetry.clone()).await;
    let out = run(&host, Request::new(root), "hello", "succeed")
        .await
        .unwrap();
    assert_eq!(out, Ok("<HELLO>".to_owned()));
    let spans = receiver.wait_for(WAIT, |s| s.len() >= 7).await;
    assert_run_tree(&spans, root);
    let (_, headers) = &receiver.requests()[0];
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "x-ww-test" && *v == protocol),
        "OTEL_EXPORTER_OTLP_HEADERS sent: {headers:?}"
    );
    telemetry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_components_over_grpc() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = one_run_arrives(&receiver, "grpc", "test.grpc").await;
    // The counter moves when the exporter's call returns: flush to wait for that.
    telemetry.flush().await;
    assert_eq!(telemetry.stats().spans_exported, 7);
    assert_eq!(telemetry.stats().spans_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_components_over_http_protobuf() {
    let receiver = OtlpReceiver::http().await;
    one_run_arrives(&receiver, "http/protobuf", "test.http").await;
    let (path, headers) = &receiver.requests()[0];
    assert_eq!(path, "/v1/traces");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/x-protobuf")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_parent_continues_its_trace_into_the_deepest_guest_span() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = otlp_telemetry(&receiver.endpoint(), "grpc");
    let host = fixture_host(telemetry.clone()).await;
    let parent = IncomingContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        tracestate: "vendor=abc".to_owned(),
    };
    let seen =
        traceparent_seen_by_worker(&host, Request::new("test.remote").with_parent(parent)).await;
    assert!(
        seen.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{seen}"
    );
    assert!(seen.ends_with("-01"), "sampled: {seen}");

    telemetry.flush().await;
    let spans = receiver.wait_for(WAIT, |s| s.len() >= 5).await;
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let root = named(&spans, "test.remote");
    assert_eq!(root.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(root.parent_span_id, "00f067aa0ba902b7");
    let ask = named(&spans, "caller.ask_worker");
    let boundary = named(&spans, "fixture-worker.deepest-context");
    let inspect = named(&spans, "worker.inspect");
    let inner = named(&spans, "worker.inspect.inner");
    assert_eq!(ask.parent_span_id, root.span_id);
    assert_eq!(boundary.parent_span_id, ask.span_id);
    assert_eq!(inspect.parent_span_id, boundary.span_id);
    assert_eq!(inner.parent_span_id, inspect.span_id);
    // What the guest saw is exactly the deepest open span.
    assert_eq!(&seen[36..52], inner.span_id);
    for span in &spans {
        assert_eq!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_err_return_marks_the_traced_span_and_propagates() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = otlp_telemetry(&receiver.endpoint(), "grpc");
    let host = fixture_host(telemetry.clone()).await;
    let out = run(&host, Request::new("test.fail"), "x", "fail")
        .await
        .unwrap();
    assert_eq!(out, Err("refusing to work on \"x\"".to_owned()));
    telemetry.flush().await;
    let spans = receiver.wait_for(WAIT, |s| s.len() >= 5).await;
    // The caller returns early through `?`: no post-processing spans.
    assert_eq!(spans.len(), 5, "{spans:#?}");

    let process = named(&spans, "worker.process");
    assert_eq!(process.status_message, "refusing to work on \"x\"");
    let failure = process.failure().expect("ERROR with an exception event");
    assert_eq!(failure.message, "refusing to work on \"x\"");
    assert!(failure.kind.contains("String"), "{failure:?}");
    assert!(named(&spans, "caller.run").failure().is_some());
    // The scoped span the early return left is ended cleanly, not as an error.
    assert_eq!(named(&spans, "worker.transform").status_code, status::UNSET);
    // An Err is a value, not a failed call: the boundary and the root succeeded.
    assert_eq!(
        named(&spans, "fixture-worker.work").status_code,
        status::UNSET
    );
    assert_eq!(named(&spans, "test.fail").status_code, status::UNSET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_panic_is_recorded_on_every_span_and_stays_in_the_component_that_panicked() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = otlp_telemetry(&receiver.endpoint(), "grpc");
    let host = fixture_host(telemetry.clone()).await;

    // The worker traps; the caller gets the error case of `work`'s result, a value it
    // handles like any other error, and keeps its instance.
    let out = run(&host, Request::new("test.panic"), "boom", "panic")
        .await
        .unwrap();
    let message = out.unwrap_err();
    assert!(
        message.starts_with("component fixture-worker failed in ww:fixtures/worker@0.1.0#work"),
        "{message}"
    );

    telemetry.flush().await;
    let spans = receiver.wait_for(WAIT, |s| s.len() >= 5).await;
    assert_eq!(spans.len(), 5, "{spans:#?}");
    for name in ["worker.transform", "worker.process"] {
        let failure = named(&spans, name).failure().expect(name);
        assert_eq!(failure.kind, "panic", "{name}");
        assert_eq!(
            failure.message, "worker asked to panic on \"boom\"",
            "{name}"
        );
        assert!(
            failure.stacktrace.unwrap().contains("worker/src/lib.rs"),
            "{name}"
        );
    }
    // The trap stays on the boundary span of the call that trapped.
    let boundary = named(&spans, "fixture-worker.work")
        .failure()
        .expect("boundary");
    assert_eq!(boundary.kind, "wasm_trap");
    assert!(boundary.stacktrace.unwrap().contains("fixture_worker.wasm"));
    // The caller saw an Err and returned it: its span failed by its own hand.
    let caller = named(&spans, "caller.run");
    assert!(caller.failure().is_some());
    assert_eq!(caller.attributes.get("ww.span.ended_by_host"), None);
    assert_eq!(named(&spans, "test.panic").status_code, status::UNSET);

    // Only the worker was discarded; the next call re-instantiates it alone and
    // succeeds, and its trace shows that cost where it happened.
    let out = run(&host, Request::new("test.after_panic"), "again", "succeed")
        .await
        .unwrap();
    assert_eq!(out, Ok("<AGAIN>".to_owned()));
    telemetry.flush().await;
    let spans = receiver
        .wait_for(WAIT, |s| s.iter().any(|s| s.name == "test.after_panic"))
        .await;
    let after = in_trace(&spans, &named(&spans, "test.after_panic").trace_id);
    assert_eq!(after.len(), 8, "{after:#?}");
    assert!(!after.iter().any(|s| s.name == "fixture-caller.instantiate"));
    assert_eq!(
        named(&after, "fixture-worker.instantiate").parent_span_id,
        named(&after, "fixture-worker.work").span_id
    );
    let caller = host.component("fixture-caller").unwrap();
    assert_eq!((caller.traps(), caller.instantiations()), (0, 1));
    let worker = host.component("fixture-worker").unwrap();
    assert_eq!((worker.traps(), worker.instantiations()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guest_input_is_bounded_counted_and_never_hurts_the_host() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = telemetry(&[
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", &receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "8192"),
    ]);
    let host = fixture_host(telemetry.clone()).await;
    // (case, its return value, counter, expected increase)
    let open_budget = (MAX_OPEN_SPANS_PER_REQUEST - 1) as u64; // the root is open too
    let cases: [(&str, u32, &str, u64); 12] = [
        ("giant-name", 1, "truncated", 1),
        ("giant-value", 1, "truncated", 1),
        // 5000 at start, 5000 more later, the span keeps 128.
        (
            "many-attributes",
            2,
            "dropped_attributes",
            2 * 5000 - MAX_ATTRIBUTES_PER_SPAN as u64,
        ),
        ("double-end", 2, "invalid_handles", 1),
        ("unknown-handle", 2, "invalid_handles", 2),
        ("parent-before-child", 2, "invalid_handles", 0),
        ("never-end", 1, "unclosed_spans", 1),
        ("many-spans", 20_000, "refused_spans", 20_000 - open_budget),
        (
            "many-events",
            2000,
            "dropped_events",
            2000 - MAX_EVENTS_PER_SPAN as u64,
        ),
        ("bad-remote-parent", 1, "invalid_parents", 1),
        ("bad-baggage", 3, "refused_baggage", 3),
        // Bad name twice, negative step, NaN, kind changed, unit too long; then 70 new
        // counters where 63 fit beside `hostile.kind` under the limit of 64.
        ("bad-metrics", 77, "refused_measurements", 6 + 7),
    ];
    for (case, returns, counter, increase) in cases {
        let before = guest_limit(&telemetry, counter);
        assert_eq!(hostile_case(&host, DRIVER, case).await, returns, "{case}");
        assert_eq!(
            guest_limit(&telemetry, counter) - before,
            increase,
            "{case}: {counter}"
        );
    }
    // Bytes that are not UTF-8 where the WIT says `string` fail the canonical ABI's
    // lift: that call traps, in the guest, and nothing else is affected.
    let error = host
        .invoke(
            Request::new("hostile.bad-utf8"),
            DRIVER,
            "hostile",
            &[Val::String("bad-utf8".into())],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CallError::Trap { component, .. } if component == "fixture-caller"),
        "{error}"
    );
    assert!(error.to_string().contains("utf-8"), "{error}");
    assert_eq!(
        guest_limit(&telemetry, "unclosed_spans"),
        1 + open_budget,
        "many-spans leaves its spans to the host"
    );
    // Still serving; the one instance lost was to the invalid UTF-8.
    assert_eq!(
        run(&host, Request::new("test.after_hostile"), "ok", "succeed")
            .await
            .unwrap(),
        Ok("<OK>".to_owned())
    );
    assert_eq!(host.component("fixture-caller").unwrap().traps(), 1);

    telemetry.flush().await;
    let spans = receiver
        .wait_for(WAIT, |s| s.iter().any(|s| s.name == "test.after_hostile"))
        .await;
    let giant = spans
        .iter()
        .find(|s| s.name.starts_with("nnnn"))
        .expect("giant-name span");
    assert_eq!(giant.name.len(), MAX_NAME_BYTES);
    let value = named(&spans, "giant-value");
    assert_eq!(value.attr_str("big").unwrap().len(), MAX_STRING_VALUE_BYTES);
    assert_eq!(
        named(&spans, "many-attributes").attributes.len(),
        MAX_ATTRIBUTES_PER_SPAN
    );
    assert_eq!(
        named(&spans, "many-events").events.len(),
        MAX_EVENTS_PER_SPAN
    );
    let parent = named(&spans, "hostile.parent");
    assert_eq!(
        named(&spans, "hostile.child").parent_span_id,
        parent.span_id
    );
    let leaked = named(&spans, "hostile.never_ended");
    assert_eq!(
        leaked.attributes.get("ww.span.ended_by_host"),
        Some(&AttrValue::Bool(true))
    );
    let opened = spans
        .iter()
        .filter(|s| s.name.starts_with("hostile.open."))
        .count();
    assert_eq!(opened as u64, open_budget);
    // An invalid remote parent is ignored: the span stays in the request's trace.
    let bad_parent = named(&spans, "bad-remote-parent");
    assert_eq!(
        bad_parent.parent_span_id,
        named(&spans, "hostile.bad-remote-parent").span_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_tracing_works_and_exports_nothing() {
    let receiver = OtlpReceiver::grpc().await;
    // Everything configured except the switch.
    let telemetry = telemetry(&[("WW_OTEL_ENDPOINT", &receiver.endpoint())]);
    assert!(!telemetry.is_recording());
    assert!(telemetry.pipelines().is_empty());
    let host = fixture_host(telemetry.clone()).await;
    assert_eq!(
        run(&host, Request::new("test.off"), "hi", "succeed")
            .await
            .unwrap(),
        Ok("<HI>".to_owned())
    );
    let seen = traceparent_seen_by_worker(&host, Request::new("test.off")).await;
    // A valid context, not sampled.
    assert_eq!(seen.len(), 55, "{seen}");
    assert!(seen.starts_with("00-") && seen.ends_with("-00"), "{seen}");
    assert_ne!(&seen[3..35], "00000000000000000000000000000000");
    telemetry.flush().await;
    telemetry.shutdown().await;
    assert!(receiver.requests().is_empty());
    assert_eq!(telemetry.stats().spans_exported, 0);
}

/// Run `calls` requests and return how long they took.
async fn timed_runs(host: &ComponentHost, calls: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..calls {
        assert_eq!(
            run(host, Request::new("test.load"), "a", "succeed")
                .await
                .unwrap(),
            Ok("<A>".to_owned())
        );
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_never_slows_calls_and_drops_are_counted() {
    // A backend that accepts connections and never answers: every export hangs until
    // its timeout, far longer than this whole test.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", hanging.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hanging.accept().await {
            held.push(stream);
        }
    });
    let calls = 200;
    let off = fixture_host(telemetry(&[])).await;
    let baseline = timed_runs(&off, calls).await;

    let telemetry = telemetry(&[
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", &endpoint),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "32"),
        ("OTEL_BSP_SCHEDULE_DELAY", "10"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "120000"),
    ]);
    let host = fixture_host(telemetry.clone()).await;
    let hung = timed_runs(&host, calls).await;

    // Generous: an export that blocked a call would cost 120 s.
    assert!(
        hung < baseline * 5 + Duration::from_secs(2),
        "with a hanging backend {hung:?}, with tracing off {baseline:?}"
    );
    let stats = telemetry.stats();
    assert_eq!(stats.spans_exported, 0);
    // At most the queue and one in-flight batch can be held; the rest is dropped.
    assert!(
        stats.spans_dropped >= (calls * 7 - 64 - 32) as u64,
        "{stats:?}"
    );
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_backend_counts_every_span_as_dropped() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let telemetry = telemetry(&[
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", &endpoint),
        ("OTEL_BSP_EXPORT_TIMEOUT", "2000"),
    ]);
    let host = fixture_host(telemetry.clone()).await;
    timed_runs(&host, 10).await;
    telemetry.flush().await;
    let stats = telemetry.stats();
    assert_eq!(stats.spans_exported, 0);
    assert_eq!(stats.spans_dropped, 70, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_prints_the_trace_as_an_indented_tree() {
    let (sink, buffer) = console_buffer();
    let config = ww_host::telemetry::TelemetryConfig::from_vars(
        &ww_host::telemetry::Vars::from_pairs([("WW_OTEL_CONSOLE", "true")]),
    )
    .unwrap();
    let telemetry = ww_host::telemetry::Telemetry::builder(config)
        .console_sink(sink)
        .build(&tokio::runtime::Handle::current())
        .unwrap();
    let host = fixture_host(telemetry.clone()).await;
    run(&host, Request::new("test.console"), "hello", "succeed")
        .await
        .unwrap()
        .unwrap();
    telemetry.flush().await;
    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    let tree: Vec<(usize, &str, &str)> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim_start_matches(['│', ' ']).starts_with('·'))
        .map(|line| {
            let name_at = line.find(|c: char| c.is_ascii_alphabetic()).unwrap();
            let depth = line[..name_at].chars().count() / 3;
            let mut words = line[name_at..].split_whitespace();
            (depth, words.next().unwrap(), words.next().unwrap())
        })
        .collect();
    assert!(text.starts_with("trace "), "{text}");
    assert_eq!(
        tree,
        vec![
            (0, "test.console", "SERVER"),
            (1, "caller.run", "INTERNAL"),
            (2, "fixture-worker.work", "CLIENT"),
            (3, "worker.process", "INTERNAL"),
            (4, "worker.transform", "INTERNAL"),
            (2, "caller.post_process", "INTERNAL"),
            (3, "caller.finalize", "INTERNAL"),
        ],
        "{text}"
    );
    assert!(
        text.contains("· worker.done worker.output_length=5"),
        "{text}"
    );
    assert!(
        text.contains(" µs") || text.contains(" ms"),
        "durations: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_sampling_is_parent_based_with_a_ratio() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = telemetry(&[
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", &receiver.endpoint()),
        ("WW_OTEL_SAMPLER", "parentbased_traceidratio"),
        ("WW_OTEL_SAMPLER_ARG", "0"),
    ]);
    let host = fixture_host(telemetry.clone()).await;
    // A new root: ratio 0, not sampled, and the guest sees that.
    let unsampled = traceparent_seen_by_worker(&host, Request::new("test.unsampled")).await;
    assert!(unsampled.ends_with("-00"), "{unsampled}");
    // A sampled remote parent: followed.
    let parent =
        IncomingContext::traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let sampled =
        traceparent_seen_by_worker(&host, Request::new("test.sampled").with_parent(parent)).await;
    assert!(sampled.ends_with("-01"), "{sampled}");
    // An unsampled remote parent: followed too.
    let parent =
        IncomingContext::traceparent("00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
    run(
        &host,
        Request::new("test.parent_unsampled").with_parent(parent),
        "x",
        "succeed",
    )
    .await
    .unwrap()
    .unwrap();

    telemetry.flush().await;
    let spans = receiver.wait_for(WAIT, |s| s.len() >= 5).await;
    let traces: HashSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(
        traces,
        HashSet::from(["0af7651916cd43dd8448eb211c80319c"]),
        "{spans:#?}"
    );
    assert_eq!(
        in_trace(&spans, "0af7651916cd43dd8448eb211c80319c").len(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_what_is_queued() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = telemetry(&[
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", &receiver.endpoint()),
        ("WW_OTEL_SERVICE_NAME", "ww-test"),
        // Far longer than the test: only shutdown can send these.
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ]);
    let host = fixture_host(telemetry.clone()).await;
    run(&host, Request::new("test.shutdown"), "hello", "succeed")
        .await
        .unwrap()
        .unwrap();
    assert!(receiver.requests().is_empty());
    telemetry.shutdown().await;
    assert_run_tree(&receiver.spans(), "test.shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baggage_from_the_request_is_readable_inside_components() {
    let host = fixture_host(telemetry(&[])).await;
    let request = Request::new("test.baggage").with_baggage("user=alice,tenant=acme%20corp");
    let out = host
        .invoke(
            request,
            DRIVER,
            "baggage-roundtrip",
            &[
                Val::String("tenant".into()),
                Val::String("k".into()),
                Val::String("v".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![Val::Option(Some(Box::new(Val::String("acme corp".into()))))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_with_an_unsatisfied_import_is_refused_at_load() {
    let config = HostConfig {
        components: vec![component("fixture_caller.wasm")],
        cache_dir: Some(cache_dir()),
        ..HostConfig::default()
    };
    let error = match ComponentHost::load(config, telemetry(&[])).await {
        Err(error) => error,
        Ok(_) => panic!("loading a caller without its worker must fail"),
    };
    assert!(
        matches!(&error, LoadError::Unsatisfied { component, interface }
            if component == "fixture-caller" && interface == "ww:fixtures/worker@0.1.0"),
        "{error}"
    );
    assert!(error.to_string().contains("ww:fixtures/worker@0.1.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_span_attributes_are_exported() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = otlp_telemetry(&receiver.endpoint(), "grpc");
    let host = fixture_host(telemetry.clone()).await;
    let request = Request::new("test.attrs").with_attribute(KeyValue::new("test.case", "attrs"));
    run(&host, request, "hello", "succeed")
        .await
        .unwrap()
        .unwrap();
    telemetry.flush().await;
    let spans = receiver.wait_for(WAIT, |s| s.len() >= 7).await;
    assert_eq!(
        named(&spans, "test.attrs").attr_str("test.case"),
        Some("attrs")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_or_memory_hungry_component_fails_only_its_call() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = otlp_telemetry(&receiver.endpoint(), "grpc");
    // Each case with a bound the other cannot hit first: a short deadline for the spin, a
    // long one for the memory hog (growing 64 MiB takes a while on a loaded machine).
    let spin = CallLimits {
        deadline: Duration::from_millis(300),
        memory_bytes: 64 << 20,
        ..CallLimits::default()
    };
    let hog = CallLimits {
        deadline: Duration::from_secs(30),
        ..spin
    };
    let cases = [
        ("spin", spin, TrapReason::Deadline(spin.deadline)),
        ("exhaust-memory", hog, TrapReason::Memory(hog.memory_bytes)),
    ];
    for (mode, limits, expected) in cases {
        let host = fixture_host_with(telemetry.clone(), limits).await;
        let outcome = run(&host, Request::new(format!("test.{mode}")), "x", mode).await;
        match mode {
            // The deadline is the request's: past it, the caller stops too, for its own
            // reason.
            "spin" => {
                let error = outcome.unwrap_err();
                let CallError::Trap {
                    component, reason, ..
                } = &error
                else {
                    panic!("{mode}: unexpected {error:?}");
                };
                assert_eq!(component, "fixture-caller");
                assert_eq!(reason.to_string(), expected.to_string(), "{mode}");
            }
            // The worker's memory trap reaches the caller as `work`'s error case.
            _ => {
                let message = outcome.unwrap().unwrap_err();
                assert!(
                    message.ends_with(&expected.to_string()),
                    "{mode}: {message}"
                );
            }
        }
        // The next call is served by fresh instances.
        let out = run(&host, Request::new("test.after"), "ok", "succeed")
            .await
            .unwrap();
        assert_eq!(out, Ok("<OK>".to_owned()), "after {mode}");
        assert_eq!(
            host.component("fixture-worker").unwrap().traps(),
            1,
            "{mode}"
        );
    }
    telemetry.flush().await;
    let spans = receiver
        .wait_for(WAIT, |s| {
            s.iter().filter(|s| s.name == "test.after").count() == 2
        })
        .await;
    // The spin failed the request; the memory trap was answered with an error value.
    for (mode, root_status) in [("spin", status::ERROR), ("exhaust-memory", status::UNSET)] {
        let root = named(&spans, &format!("test.{mode}"));
        assert_eq!(root.status_code, root_status, "{mode}");
        let boundary = in_trace(&spans, &root.trace_id)
            .into_iter()
            .find(|s| s.name == "fixture-worker.work")
            .expect("boundary span");
        assert_eq!(boundary.status_code, status::ERROR, "{mode}");
    }
}

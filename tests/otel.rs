//! `wasi:otel`: components built for other hosts trace through the WebAssembly
//! OpenTelemetry proposal, and their spans nest exactly in the request's one trace — with
//! either name of the context function. Real components in a real host, checked at a real
//! OTLP receiver.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Val;
use ww_host::plugins::{CallLimits, ComponentHost, Request};
use ww_host::telemetry::Telemetry;
use ww_host::tracing_capability::limits::MAX_ATTRIBUTES_PER_SPAN;
use ww_host::tracing_capability::scope::UNENDED_GUEST_SPAN;
use ww_tests::otlp::{AttrValue, OtlpReceiver, assert_child_of, kind, named, status};
use ww_tests::{component, guest_limit, hostile_case, recording, started_host, string_result};

const WAIT: Duration = Duration::from_secs(20);
const DRIVER: &str = "ww:otel-fixtures/driver@0.1.0";

/// The builds of the fixture, with the interface and context function each imports:
/// against the published rc.2 (`outer-span-context`), against the same version after the
/// rename (`current-span-context`), and against rc.2 under rc.1's version string.
const VARIANTS: [(&str, &str, &str); 3] = [
    (
        "fixture_otel_outer.wasm",
        "wasi:otel/tracing@0.2.0-rc.2",
        "outer-span-context",
    ),
    (
        "fixture_otel_current.wasm",
        "wasi:otel/tracing@0.2.0-rc.2",
        "current-span-context",
    ),
    (
        "fixture_otel_rc1.wasm",
        "wasi:otel/tracing@0.2.0-rc.1",
        "outer-span-context",
    ),
];

/// The worker and one build of the `wasi:otel` fixture, instantiated.
async fn otel_host(file: &str, telemetry: Arc<Telemetry>) -> ComponentHost {
    let components = vec![component("fixture_worker.wasm"), component(file)];
    started_host(components, CallLimits::default(), telemetry).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_otel_spans_nest_exactly_around_a_routed_call_with_either_name_and_version() {
    for (file, tracing, context_function) in VARIANTS {
        let receiver = OtlpReceiver::grpc().await;
        let telemetry = recording(&receiver);
        let host = otel_host(file, telemetry.clone()).await;
        let name = file.trim_end_matches(".wasm").replace('_', "-");

        // The component imports the interface with the one name it was built against,
        // served by the host (what `ww-memory plugins` lists).
        let (_, shape) = host.components().find(|(c, _)| c.name() == name).unwrap();
        let functions = &shape.imports[tracing];
        assert!(
            functions.iter().any(|f| f == context_function),
            "{functions:?}"
        );
        assert!(host.exporter(tracing).is_none(), "served by the host");

        let root = format!("test.{name}");
        let out = host
            .invoke(
                Request::new(root.clone()),
                DRIVER,
                "run",
                &[Val::String("hello".into())],
            )
            .await
            .unwrap();
        assert_eq!(string_result(out), Ok("HELLO".to_owned()), "{file}");
        telemetry.flush().await;
        let spans = receiver.wait_for(WAIT, |s| s.len() >= 7).await;
        assert_eq!(
            spans.len(),
            7,
            "{file}: {:#?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        let root = named(&spans, &root);
        let run = named(&spans, "otel.run");
        let call = named(&spans, "otel.call-worker");
        let boundary = named(&spans, "fixture-worker.work");
        let process = named(&spans, "worker.process");
        let transform = named(&spans, "worker.transform");
        let post = named(&spans, "otel.post-process");
        assert!(
            spans.iter().all(|s| s.trace_id == root.trace_id),
            "one trace"
        );
        // The guest's spans under the request's root, the host's boundary span under the
        // guest's innermost span, the callee's spans under the boundary.
        let chain = [
            (run, root, kind::INTERNAL),
            (call, run, kind::CLIENT),
            (boundary, call, kind::CLIENT),
            (process, boundary, kind::INTERNAL),
            (transform, process, kind::INTERNAL),
            (post, run, kind::INTERNAL),
        ];
        for (child, parent, expected_kind) in chain {
            assert_child_of(child, parent);
            assert_eq!(child.kind, expected_kind, "{file}: kind of {}", child.name);
        }
        // What the guest sent: attributes (JSON values as their types), its scope, its
        // event, its status.
        assert_eq!(run.attr_str("otel.input"), Some("hello"));
        assert_eq!(
            run.attributes.get("otel.list"),
            Some(&AttrValue::Array(vec![
                AttrValue::Int(1),
                AttrValue::Int(2),
                AttrValue::Int(3)
            ]))
        );
        assert_eq!(run.attr_str("otel.map"), Some(r#"{"a":1}"#));
        assert_eq!(run.attr_str("otel.scope.name"), Some("ww-otel-fixture"));
        assert_eq!(run.status_code, status::OK);
        assert_eq!(call.events.len(), 1);
        assert_eq!(call.events[0].name, "otel.worked");
        assert_eq!(
            call.events[0].attributes.get("otel.ok"),
            Some(&AttrValue::Bool(true))
        );
        assert_eq!(boundary.attr_str("ww.caller"), Some(name.as_str()));

        // Inside a guest span the host's context is that span, by either name.
        let out = host
            .invoke(
                Request::new("test.inside"),
                DRIVER,
                "context-inside-span",
                &[],
            )
            .await
            .unwrap();
        match out.as_slice() {
            [Val::Tuple(ids)] => match ids.as_slice() {
                [Val::String(minted), Val::String(seen)] => {
                    assert_eq!(minted, seen, "{file}: the innermost span is the guest's")
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        telemetry.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_wasi_otel_input_is_counted_and_never_hurts_the_host() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = recording(&receiver);
    let host = otel_host("fixture_otel_current.wasm", telemetry.clone()).await;
    // The span keeps the guest's scope name and version, then 126 of its 10,000.
    let kept_of_many = (MAX_ATTRIBUTES_PER_SPAN - 2) as u64;
    // (case, its return value, counter, expected increase)
    let cases: [(&str, u32, &str, u64); 9] = [
        ("end-unstarted", 1, "invalid_handles", 1),
        ("foreign-trace", 2, "foreign_spans", 1),
        ("foreign-trace", 2, "invalid_handles", 1),
        ("bad-ids", 2, "foreign_spans", 1),
        ("duplicate-start", 3, "foreign_spans", 1),
        (
            "many-attributes",
            2,
            "dropped_attributes",
            10_000 - kept_of_many,
        ),
        ("unknown-parent", 2, "invalid_parents", 1),
        ("bad-values", 2, "dropped_attributes", 3),
        ("never-end", 1, "unclosed_spans", 1),
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
    // Still serving, with nothing lost.
    let out = host
        .invoke(
            Request::new("test.after"),
            DRIVER,
            "run",
            &[Val::String("ok".into())],
        )
        .await
        .unwrap();
    assert_eq!(string_result(out), Ok("OK".to_owned()));
    assert_eq!(host.component("fixture-otel-current").unwrap().traps(), 0);

    telemetry.flush().await;
    let spans = receiver
        .wait_for(WAIT, |s| s.iter().any(|s| s.name == "test.after"))
        .await;
    // A wrong parent id is replaced by the span it started under: the request's root.
    let reparented = named(&spans, "otel.unknown-parent");
    assert_eq!(
        reparented.parent_span_id,
        named(&spans, "hostile.unknown-parent").span_id
    );
    let many = named(&spans, "otel.many-attributes");
    assert_eq!(many.attributes.len(), MAX_ATTRIBUTES_PER_SPAN);
    let values = named(&spans, "otel.bad-values");
    assert_eq!(
        values.attributes.get("otel.kept"),
        Some(&AttrValue::Bool(true))
    );
    assert!(!values.attributes.contains_key("otel.null"));
    // Refused spans never reach the backend; a span never ended is ended by the host
    // under the guest's id, where its request's root is its parent.
    assert!(!spans.iter().any(|s| s.name == "otel.foreign"));
    assert!(!spans.iter().any(|s| s.name == "otel.unannounced"));
    assert_eq!(
        spans.iter().filter(|s| s.name == "otel.duplicate").count(),
        1
    );
    let unended = named(&spans, UNENDED_GUEST_SPAN);
    assert_eq!(
        unended.parent_span_id,
        named(&spans, "hostile.never-end").span_id
    );
    assert_eq!(
        unended.attributes.get("ww.span.ended_by_host"),
        Some(&AttrValue::Bool(true))
    );
    telemetry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_otel_logs_become_span_events_and_metrics_are_refused_cleanly() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = recording(&receiver);
    let host = otel_host("fixture_otel_outer.wasm", telemetry.clone()).await;
    let before = guest_limit(&telemetry, "refused_measurements");
    let out = host
        .invoke(Request::new("test.logs"), DRIVER, "log-and-metric", &[])
        .await
        .unwrap();
    match out.as_slice() {
        [Val::Result(Err(Some(error)))] => match error.as_ref() {
            Val::String(message) => assert!(message.contains("ww:memory/metrics"), "{message}"),
            other => panic!("{other:?}"),
        },
        other => panic!("the export is refused: {other:?}"),
    }
    assert_eq!(guest_limit(&telemetry, "refused_measurements") - before, 1);
    telemetry.flush().await;
    let spans = receiver
        .wait_for(WAIT, |s| s.iter().any(|s| s.name == "otel.logging"))
        .await;
    let logging = named(&spans, "otel.logging");
    assert_eq!(logging.events.len(), 1, "{logging:#?}");
    let log = &logging.events[0];
    assert_eq!(log.name, "otel.log");
    assert_eq!(
        log.attributes.get("log.severity"),
        Some(&AttrValue::Str("WARN".into()))
    );
    assert_eq!(
        log.attributes.get("log.body"),
        Some(&AttrValue::Str("disk almost full".into()))
    );
    assert_eq!(
        log.attributes.get("disk.free_bytes"),
        Some(&AttrValue::Int(1024))
    );
    telemetry.shutdown().await;
}

//! Python components, built with componentize-py and traced with the Python SDK
//! (`plugins/python/ww_guest`): the SDK's API in a fixture that calls the worker through
//! the host, and a real plugin (the pure-Python hashing embedder) serving the embedder
//! role of a server a real MCP client calls. Checked at a real OTLP receiver.

use std::time::Duration;

use serde_json::json;
use wasmtime::component::Val;
use ww_host::plugins::{CallLimits, ComponentHost, Request};
use ww_tests::otlp::{AttrValue, OtlpReceiver, ReceivedSpan, assert_child_of, kind, named, status};
use ww_tests::{
    EMBEDDER, component, data_dir, embed, memory_with, recording, started_host, string_result,
    telemetry, tests_config,
};

const WAIT: Duration = Duration::from_secs(30);
const DRIVER: &str = "ww:fixtures/python-driver@0.1.0";

async fn run_case(host: &ComponentHost, request: Request, case: &str) -> Result<String, String> {
    let out = host
        .invoke(
            request,
            DRIVER,
            "run",
            &[Val::String(case.into()), Val::String("hello".into())],
        )
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    string_result(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_traces_like_the_rust_one_across_a_routed_call() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = recording(&receiver);
    let components = vec![
        component("fixture_worker.wasm"),
        component("fixture_python.wasm"),
    ];
    let host = started_host(components, CallLimits::default(), telemetry.clone()).await;
    // What `ww-memory plugins` lists: the host's tracing, the worker through the host.
    let (_, shape) = host
        .components()
        .find(|(c, _)| c.name() == "fixture-python")
        .unwrap();
    assert!(shape.imports.contains_key("ww:memory/tracing@0.1.0"));
    assert!(
        host.exporter("ww:memory/tracing@0.1.0").is_none(),
        "the host's"
    );
    assert_eq!(
        host.exporter("ww:fixtures/worker@0.1.0").map(|c| c.name()),
        Some("fixture-worker")
    );

    let answers = [
        ("decorated", Ok("HELLO".to_owned())),
        ("async", Ok("olleh".to_owned())),
        ("raises", Ok("raised ValueError: refusing hello".to_owned())),
    ];
    for (case, expected) in answers {
        let answer = run_case(&host, Request::new(format!("test.{case}")), case).await;
        assert_eq!(answer, expected, "{case}");
    }
    let context = run_case(&host, Request::new("test.context"), "context")
        .await
        .unwrap();
    let baggage = run_case(
        &host,
        Request::new("test.baggage").with_baggage("user=alice"),
        "metrics-baggage",
    )
    .await;
    assert_eq!(baggage, Ok("alice|done".to_owned()));

    telemetry.flush().await;
    let spans = receiver
        .wait_for(WAIT, |s| s.iter().any(|s| s.name == "py.context"))
        .await;

    // @traced with a kind, attributes and an event buffered to the span's end, a `with`
    // block, and the worker's spans under the host's boundary span inside it.
    let root = named(&spans, "test.decorated");
    let decorated = named(&spans, "py.decorated");
    let inner = named(&spans, "py.inner");
    let boundary = named(&spans, "fixture-worker.work");
    assert_child_of(decorated, root);
    assert_child_of(inner, decorated);
    assert_child_of(boundary, inner);
    assert_child_of(named(&spans, "worker.process"), boundary);
    assert_eq!(decorated.kind, kind::CLIENT);
    assert_eq!(decorated.attr_str("py.input"), Some("hello"));
    assert_eq!(
        decorated.attributes.get("py.numbers"),
        Some(&AttrValue::Array(vec![
            AttrValue::Int(1),
            AttrValue::Int(2),
            AttrValue::Int(3)
        ]))
    );
    assert_eq!(inner.attributes.get("step"), Some(&AttrValue::Int(1)));
    assert_eq!(inner.attributes.get("ratio"), Some(&AttrValue::Double(0.5)));
    assert_eq!(inner.attributes.get("flag"), Some(&AttrValue::Bool(true)));
    assert_eq!(inner.events.len(), 1);
    assert_eq!(inner.events[0].name, "py.worked");
    assert_eq!(
        inner.events[0].attributes.get("py.length"),
        Some(&AttrValue::Int(5))
    );
    assert_eq!(boundary.attr_str("ww.caller"), Some("fixture-python"));

    // An async function and `async with`.
    let asynchronous = named(&spans, "py.async");
    let block = named(&spans, "py.async_block");
    assert_child_of(asynchronous, named(&spans, "test.async"));
    assert_child_of(block, asynchronous);
    assert_eq!(
        block.attributes.get("py.inside"),
        Some(&AttrValue::Bool(true))
    );
    assert_eq!(block.attributes.get("size"), Some(&AttrValue::Int(5)));
    assert_eq!(block.events[0].name, "py.awaited");

    // An exception: ERROR, the semantic-convention event with the Python traceback, and
    // re-raised (the case caught it).
    let raised = named(&spans, "py.raises");
    assert_eq!(raised.status_code, status::ERROR);
    assert_eq!(raised.status_message, "refusing hello");
    let exception = &raised.events[0];
    assert_eq!(exception.name, "exception");
    assert_eq!(
        exception.attributes.get("exception.type"),
        Some(&AttrValue::Str("ValueError".into()))
    );
    match exception.attributes.get("exception.stacktrace") {
        // The frames name the file, line and function (the component carries compiled
        // code, not the source lines).
        Some(AttrValue::Str(trace)) => assert!(
            trace.contains("in raises") && trace.ends_with("ValueError: refusing hello\n"),
            "{trace}"
        ),
        other => panic!("{other:?}"),
    }

    // get_trace_context() inside a span names that span.
    let span = named(&spans, "py.context");
    let (traceparent, tracestate) = context.split_once('|').unwrap();
    assert_eq!(
        traceparent,
        format!("00-{}-{}-01", span.trace_id, span.span_id)
    );
    assert_eq!(tracestate, "");
    telemetry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_embedder_serves_the_embedder_role_of_a_real_server() {
    // The plugin alone: the embedder's contract.
    let components = vec![component("embedder_pyhash.wasm")];
    let host = started_host(components, CallLimits::default(), telemetry(&[])).await;
    let vectors = embed(
        &host,
        &[
            "the cat sat on the mat",
            "a cat sat on a mat today",
            "quarterly revenue grew in europe",
            "",
        ],
    )
    .await
    .unwrap();
    assert!(vectors.iter().all(|v| v.len() == 384));
    let cosine = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let norm = cosine(&vectors[0], &vectors[0]).sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "L2-normalised: {norm}");
    assert!(
        cosine(&vectors[0], &vectors[1]) > cosine(&vectors[0], &vectors[2]) + 0.3,
        "related texts point the same way"
    );
    assert!(
        vectors[3].iter().all(|x| *x == 0.0),
        "empty text: zero vector"
    );
    let again = embed(&host, &["the cat sat on the mat"]).await.unwrap();
    assert_eq!(again[0], vectors[0], "deterministic");
    let model = host
        .invoke(Request::new("test.model"), EMBEDDER, "model", &[])
        .await
        .unwrap();
    assert_eq!(model, vec![Val::String("py-hash-v1".into())]);

    // The plugin by configuration, serving a server a real MCP client calls: its spans
    // nest under the host's boundary span, in the tool call's one trace.
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = recording(&receiver);
    let dir = data_dir("python-embedder");
    let config = tests_config(
        "[roles.embedder]\ncomponent = \"embedder_pyhash.wasm\"\n",
        &dir,
    );
    let memory = memory_with(config, telemetry.clone()).await;
    let client = ww_tests::mcp::connect(memory, "python").await;
    let created = ww_tests::mcp::call(
        &client,
        "create_episode",
        json!({"content": "Deployed the billing service to production on Friday"}),
    )
    .await;
    assert_ne!(created.is_error, Some(true), "{created:?}");
    let recalled = ww_tests::mcp::call(
        &client,
        "recall_episodes",
        json!({"query": "billing deployment", "limit": 3}),
    )
    .await;
    assert_ne!(recalled.is_error, Some(true), "{recalled:?}");
    let text = format!("{recalled:?}");
    assert!(text.contains("billing service"), "{text}");
    client.cancel().await.unwrap();

    telemetry.flush().await;
    let spans = receiver
        .wait_for(WAIT, |s| {
            s.iter().filter(|s| s.name == "pyhash.embed").count() >= 2
        })
        .await;
    for tool in ["create_episode", "recall_episodes"] {
        let root = spans
            .iter()
            .find(|s| s.parent_span_id.is_empty() && s.name.ends_with(tool))
            .unwrap_or_else(|| panic!("a root span for {tool}"));
        let in_trace: Vec<ReceivedSpan> = spans
            .iter()
            .filter(|s| s.trace_id == root.trace_id)
            .cloned()
            .collect();
        let boundary = named(&in_trace, "embedder.embed");
        let embed = named(&in_trace, "pyhash.embed");
        let features = named(&in_trace, "pyhash.features");
        assert_eq!(boundary.kind, kind::CLIENT);
        assert_child_of(embed, boundary);
        assert_child_of(features, embed);
        assert_eq!(
            embed.attributes.get("embedder.texts"),
            Some(&AttrValue::Int(1))
        );
    }
    telemetry.shutdown().await;
}

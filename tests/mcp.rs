//! The MCP gateway driven by a real MCP client (the official Rust SDK's) over a byte
//! stream: the tool list, tool results and errors, and the trace of a call continuing the
//! client's `_meta.traceparent`.

use std::time::Duration;

use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, RequestMetaObject};
use rmcp::service::{RoleClient, RunningService};
use serde_json::{Value, json};
use ww_host::gateway::Gateway;
use ww_tests::mcp::{arguments, call, connect_with};
use ww_tests::otlp::{OtlpReceiver, kind};
use ww_tests::{data_dir, memory, otlp_telemetry, telemetry};

/// A tool error's `{code, message, field?}`, sent as JSON text.
fn error_body(result: &rmcp::model::CallToolResult) -> Value {
    assert_eq!(result.is_error, Some(true), "{result:?}");
    let text = &result.content[0].as_text().expect("text").text;
    serde_json::from_str(text).expect("a JSON body")
}

async fn connect(memory: ww_host::memory::Memory) -> RunningService<RoleClient, ()> {
    ww_tests::mcp::connect(memory, "mcp-session").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_lists_the_18_tools_and_gets_results_and_tool_errors() {
    let client = connect(memory(&data_dir("mcp-tools"), telemetry(&[])).await).await;
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 18);
    for tool in &tools {
        let input = &tool.input_schema;
        assert_eq!(input.get("type"), Some(&json!("object")), "{}", tool.name);
        assert_eq!(
            input.get("additionalProperties"),
            Some(&json!(false)),
            "{} must refuse unknown fields",
            tool.name
        );
        let output = tool.output_schema.as_ref().expect("an output schema");
        assert_eq!(output.get("type"), Some(&json!("object")), "{}", tool.name);
        assert!(tool.description.as_ref().is_some_and(|d| d.len() > 40));
    }
    let read_only: Vec<&str> = tools
        .iter()
        .filter(|t| t.annotations.as_ref().and_then(|a| a.read_only_hint) == Some(true))
        .map(|t| t.name.as_ref())
        .collect();
    assert_eq!(
        read_only,
        [
            "query_at_time",
            "spread_activation",
            "recall_skill",
            "get_provenance",
            "get_session_id",
            "memory_stats"
        ]
    );

    let created = call(
        &client,
        "create_episode",
        json!({"content": "spoke MCP to the server"}),
    )
    .await;
    assert_eq!(created.is_error, Some(false));
    let body = created
        .structured_content
        .clone()
        .expect("structured content");
    assert_eq!(
        body["session"],
        json!("mcp-session"),
        "the connection's session, not an argument"
    );
    // The same JSON as text.
    let text = created.content[0].as_text().expect("text").text.clone();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), body);

    let recalled = call(&client, "recall_episodes", json!({"query": "MCP server"})).await;
    let recalled = recalled.structured_content.unwrap();
    assert_eq!(recalled["count"], json!(1));
    assert_eq!(recalled["episodes"][0]["episode"]["id"], body["id"]);

    let session = call(&client, "get_session_id", json!({})).await;
    assert_eq!(
        session.structured_content.unwrap()["session_id"],
        json!("mcp-session")
    );

    // Bad arguments are tool errors with a code and the field; the server keeps serving.
    let bad = call(
        &client,
        "recall_episodes",
        json!({"query": "x", "surprise": true}),
    )
    .await;
    assert_eq!(bad.is_error, Some(true));
    // The body is text only: structured content must match the output schema.
    assert!(bad.structured_content.is_none());
    let error = error_body(&bad);
    assert_eq!(error["code"], json!("VALIDATION_ERROR"));
    assert_eq!(error["field"], json!("surprise"));
    let missing = call(&client, "mark_important", json!({"episode_id": "nope"})).await;
    assert_eq!(error_body(&missing)["code"], json!("NOT_FOUND"));
    let huge = call(
        &client,
        "create_episode",
        json!({"content": "x".repeat(10 << 20)}),
    )
    .await;
    assert_eq!(error_body(&huge)["code"], json!("VALIDATION_ERROR"));
    // An unknown tool is a protocol error.
    let unknown = client
        .call_tool(CallToolRequestParams::new("no_such_tool"))
        .await;
    assert!(unknown.is_err());
    let stats = call(&client, "memory_stats", json!({})).await;
    assert_eq!(
        stats.structured_content.unwrap()["counts"]["episodes"],
        json!(1)
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_continues_the_clients_traceparent_in_one_trace() {
    let receiver = OtlpReceiver::grpc().await;
    let memory = memory(
        &data_dir("mcp-trace"),
        otlp_telemetry(&receiver.endpoint(), "grpc"),
    )
    .await;
    let client = connect(memory.clone()).await;
    call(
        &client,
        "create_episode",
        json!({"content": "a traced episode"}),
    )
    .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let mut meta = RequestMetaObject::default();
    meta.0.0.insert(
        "traceparent".to_owned(),
        json!(format!("00-{trace_id}-{parent}-01")),
    );
    let mut params = CallToolRequestParams::new("recall_episodes")
        .with_arguments(arguments(json!({"query": "traced"})));
    params.meta = Some(meta);
    let result = client.call_tool(params).await.unwrap();
    assert_eq!(result.is_error, Some(false));
    call(&client, "mark_important", json!({"episode_id": "nope"})).await;
    memory.host().telemetry().flush().await;
    let spans = receiver
        .wait_for(Duration::from_secs(10), |s| {
            s.iter().any(|s| s.name == "mcp.recall_episodes")
                && s.iter().any(|s| s.name == "mcp.mark_important")
        })
        .await;
    let failed = spans
        .iter()
        .find(|s| s.name == "mcp.mark_important")
        .unwrap();
    assert_eq!(failed.attr_str("error.type"), Some("tool_error"));
    assert_eq!(failed.attr_str("ww.error.code"), Some("NOT_FOUND"));
    assert_eq!(failed.status_code, ww_tests::otlp::status::ERROR);
    let server = spans
        .iter()
        .find(|s| s.name == "mcp.recall_episodes")
        .unwrap();
    assert_eq!(server.kind, kind::SERVER);
    assert_eq!(server.trace_id, trace_id);
    assert_eq!(server.parent_span_id, parent);
    for (key, value) in [
        ("mcp.method.name", "tools/call"),
        ("gen_ai.tool.name", "recall_episodes"),
        ("gen_ai.operation.name", "execute_tool"),
        ("mcp.session.id", "mcp-session"),
        ("network.transport", "pipe"),
        ("openinference.span.kind", "TOOL"),
    ] {
        assert_eq!(server.attr_str(key), Some(value), "{key}");
    }
    assert!(server.attributes.contains_key("jsonrpc.request.id"));
    assert!(server.attributes.contains_key("mcp.protocol.version"));
    let recall = spans.iter().find(|s| s.name == "episodic.recall").unwrap();
    assert_eq!(recall.parent_span_id, server.span_id);
    assert_eq!(recall.trace_id, trace_id);
    let search = spans
        .iter()
        .find(|s| s.name == "embedded.search" && s.trace_id == trace_id)
        .unwrap();
    assert_eq!(search.parent_span_id, recall.span_id);
    client.cancel().await.unwrap();
}

/// One progress notification: its token (as JSON), progress and total.
type Report = (String, f64, Option<f64>);

/// A client that keeps the progress notifications it receives.
#[derive(Clone, Default)]
struct ProgressCollector(std::sync::Arc<std::sync::Mutex<Vec<Report>>>);

impl rmcp::ClientHandler for ProgressCollector {
    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        let token = serde_json::to_value(&params.progress_token).unwrap_or_default();
        self.0
            .lock()
            .unwrap()
            .push((token.to_string(), params.progress, params.total));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consolidation_sends_progress_when_the_client_asks() {
    let memory = memory(&data_dir("mcp-progress"), telemetry(&[])).await;
    let collector = ProgressCollector::default();
    let client = connect_with(memory, "mcp-session", collector.clone()).await;
    for i in 0..4 {
        let args = json!({"content": format!("the release pipeline stalled at stage {i}")});
        client
            .call_tool(CallToolRequestParams::new("create_episode").with_arguments(arguments(args)))
            .await
            .unwrap();
    }
    collector.0.lock().unwrap().clear();
    // The Rust SDK's client puts a progress token of its own on every request.
    let params = CallToolRequestParams::new("consolidate_now")
        .with_arguments(arguments(json!({"kind": "deep"})));
    let result = client.call_tool(params).await.unwrap();
    assert_eq!(result.is_error, Some(false));
    // The server sends every report before the result; the client's handler may still be
    // taking the last in when the result is returned, so wait (boundedly) for 8 of 8.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline
        && collector.0.lock().unwrap().last().map(|r| r.1) != Some(8.0)
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let reports = collector.0.lock().unwrap().clone();
    // All under the request's token: 4 episodes read, then clustered and the entities
    // written (8 of 8).
    assert!(reports.len() >= 2, "{reports:?}");
    assert!(reports.iter().all(|r| r.0 == reports[0].0), "{reports:?}");
    assert!(reports.windows(2).all(|w| w[0].1 <= w[1].1), "{reports:?}");
    let last = reports.last().unwrap();
    assert_eq!((last.1, last.2), (8.0, Some(8.0)), "{reports:?}");
    client.cancel().await.unwrap();
}

/// A client of a gateway served over streamable HTTP on a free loopback port, sending
/// `headers` on every request.
async fn connect_http(
    memory: ww_host::memory::Memory,
    headers: &[(&str, &str)],
) -> (
    RunningService<RoleClient, ()>,
    tokio_util::sync::CancellationToken,
) {
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use ww_host::gateway::http;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{}", listener.local_addr().unwrap(), http::PATH);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gateway = Gateway::new(memory, "http-session", "pipe");
    let stop = shutdown.clone();
    tokio::spawn(async move {
        http::serve(listener, gateway, &http::HttpOptions::default(), stop)
            .await
            .expect("HTTP server");
    });
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                ::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                ::http::HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect();
    let config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(headers);
    let transport = StreamableHttpClientTransport::from_config(config);
    (
        ().serve(transport).await.expect("client handshake"),
        shutdown,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn over_http_the_traceparent_header_is_the_parent_unless_meta_names_one() {
    let receiver = OtlpReceiver::grpc().await;
    let memory = memory(
        &data_dir("mcp-http-trace"),
        otlp_telemetry(&receiver.endpoint(), "grpc"),
    )
    .await;
    let header_trace = "0af7651916cd43dd8448eb211c80319c";
    let header_parent = "b7ad6b7169203331";
    let (client, shutdown) = connect_http(
        memory.clone(),
        &[
            (
                "traceparent",
                &format!("00-{header_trace}-{header_parent}-01"),
            ),
            ("tracestate", "vendor=header"),
        ],
    )
    .await;
    call(&client, "create_episode", json!({"content": "over HTTP"})).await;
    let recalled = call(&client, "recall_episodes", json!({"query": "HTTP"})).await;
    assert_eq!(recalled.structured_content.unwrap()["count"], json!(1));
    // `_meta` wins over the header, and brings its own trace state.
    let meta_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut meta = RequestMetaObject::default();
    meta.0.0.insert(
        "traceparent".to_owned(),
        json!(format!("00-{meta_trace}-00f067aa0ba902b7-01")),
    );
    let mut params = CallToolRequestParams::new("get_session_id");
    params.meta = Some(meta);
    let info = client.call_tool(params).await.unwrap();
    let info = info.structured_content.unwrap();
    assert_eq!(info["session_id"], json!("http-session"));
    assert!(info["protocol_version"].is_string());
    memory.host().telemetry().flush().await;
    let spans = receiver
        .wait_for(Duration::from_secs(10), |s| {
            s.iter().any(|s| s.name == "mcp.get_session_id")
                && s.iter().any(|s| s.name == "embedded.search")
        })
        .await;
    let server = spans
        .iter()
        .find(|s| s.name == "mcp.recall_episodes")
        .unwrap();
    assert_eq!(server.kind, kind::SERVER);
    assert_eq!(server.trace_id, header_trace);
    assert_eq!(server.parent_span_id, header_parent);
    assert_eq!(server.trace_state, "vendor=header");
    assert_eq!(server.attr_str("network.transport"), Some("tcp"));
    assert_eq!(server.attr_str("mcp.session.id"), Some("http-session"));
    // The whole call tree, one trace, each span under the one open when it started.
    let recall = spans.iter().find(|s| s.name == "episodic.recall").unwrap();
    assert_eq!(recall.parent_span_id, server.span_id);
    // (Every call of this client carries the same header, so they all share its trace.)
    let children: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id == recall.span_id)
        .inspect(|s| assert_eq!(s.trace_id, header_trace))
        .map(|s| s.name.as_str())
        .collect();
    for name in ["embedder.embed", "embedded.search", "scoring_computation"] {
        assert!(
            children.contains(&name),
            "{name} not under the recall: {children:?}"
        );
    }
    let session = spans
        .iter()
        .find(|s| s.name == "mcp.get_session_id")
        .unwrap();
    assert_eq!(session.trace_id, meta_trace);
    assert_eq!(
        session.trace_state, "",
        "the header's state is not mixed in"
    );
    client.cancel().await.unwrap();
    shutdown.cancel();
}

/// A client that cancels a request when the first progress report of it arrives.
#[derive(Clone, Default)]
struct CancelOnProgress(std::sync::Arc<tokio::sync::Notify>);

impl rmcp::ClientHandler for CancelOnProgress {
    async fn on_progress(
        &self,
        _params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.0.notify_one();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_consolidate_now_stops_and_the_next_call_works() {
    use rmcp::model::{CallToolRequest, ClientRequest};
    use rmcp::service::PeerRequestOptions;
    use ww_tests::bench::{Words, fill};
    use ww_tests::otlp::AttrValue;
    let receiver = OtlpReceiver::grpc().await;
    let memory = memory(
        &data_dir("mcp-cancel"),
        otlp_telemetry(&receiver.endpoint(), "grpc"),
    )
    .await;
    // More than a page of episodes: each consolidation phase takes several steps.
    fill(&memory, "mcp-session", 1_100, &mut Words(11)).await;
    let handler = CancelOnProgress::default();
    let progressed = handler.0.clone();
    let client = connect_with(memory.clone(), "mcp-session", handler).await;
    let params = CallToolRequestParams::new("consolidate_now")
        .with_arguments(arguments(json!({"kind": "all"})));
    let handle = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(params)),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    // `notifications/cancelled` once the consolidation is under way (sent right behind
    // the request, it could overtake it in the client and name a request the server
    // does not know yet).
    progressed.notified().await;
    handle
        .cancel(Some("no longer needed".to_owned()))
        .await
        .unwrap();
    // The next call is served at once.
    let recalled = call(&client, "recall_episodes", json!({"query": "anything"})).await;
    assert_eq!(recalled.is_error, Some(false), "{recalled:?}");
    // The cancelled call stopped at the step of light or deep consolidation that saw the
    // cancellation, skill consolidation never started, and the spans say so (the client
    // gets no answer, as MCP has it).
    let spans = receiver
        .wait_for(Duration::from_secs(20), |s| {
            s.iter().any(|s| s.name == "mcp.consolidate_now")
        })
        .await;
    let root = spans
        .iter()
        .find(|s| s.name == "mcp.consolidate_now")
        .unwrap();
    assert_eq!(
        root.attributes.get("ww.cancelled"),
        Some(&AttrValue::Bool(true)),
        "{root:?}"
    );
    assert!(root.failure().is_none(), "a stop on request is no failure");
    let phases: Vec<&str> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id && s.name.contains(".consolidate_"))
        .map(|s| s.name.as_str())
        .collect();
    assert!(phases.contains(&"episodic.consolidate_light"), "{phases:?}");
    assert!(
        !phases.contains(&"procedural.consolidate_skills"),
        "{phases:?}"
    );
    client.cancel().await.unwrap();
}

/// The OpenTelemetry GenAI memory conventions on the services' spans; by opt-in, MCP span
/// names in the conventions' form and a search's query text.
async fn memory_conventions(opt_in: bool) -> Vec<ww_tests::otlp::ReceivedSpan> {
    let receiver = OtlpReceiver::grpc().await;
    let endpoint = receiver.endpoint();
    let mut vars = vec![
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", endpoint.as_str()),
        ("WW_OTEL_SERVICE_NAME", "ww-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("WW_OTEL_METRICS", "false"),
    ];
    if opt_in {
        vars.push(("WW_OTEL_SPAN_NAMES", "semconv"));
        vars.push(("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true"));
    }
    let telemetry = ww_tests::telemetry(&vars);
    let dir = data_dir(&format!("mcp-genai-memory-{opt_in}"));
    let client = connect(memory(&dir, telemetry.clone()).await).await;
    let created = call(
        &client,
        "create_episode",
        json!({"content": "the cache warmed up"}),
    )
    .await;
    let id = created.structured_content.unwrap()["id"].clone();
    call(&client, "recall_episodes", json!({"query": "cache"})).await;
    telemetry.flush().await;
    let recall_root = if opt_in {
        "tools/call recall_episodes"
    } else {
        "mcp.recall_episodes"
    };
    let spans = receiver
        .wait_for(Duration::from_secs(20), |s| {
            s.iter().any(|s| s.name == recall_root)
        })
        .await;
    let named = |name: &str| spans.iter().find(|s| s.name == name).unwrap().clone();
    let create = named("episodic.create");
    assert_eq!(
        create.attr_str("gen_ai.operation.name"),
        Some("create_memory")
    );
    assert_eq!(
        create.attr_str("gen_ai.memory.store.id"),
        Some("ww_episodes")
    );
    assert_eq!(create.attr_str("gen_ai.memory.record.id"), id.as_str());
    let recall = named("episodic.recall");
    assert_eq!(
        recall.attr_str("gen_ai.operation.name"),
        Some("search_memory")
    );
    assert_eq!(
        recall.attr_str("gen_ai.memory.store.id"),
        Some("ww_episodes")
    );
    assert_eq!(
        recall.attributes.get("gen_ai.memory.record.count"),
        Some(&ww_tests::otlp::AttrValue::Int(1))
    );
    // The root keeps saying what the tool call is, in either naming.
    let root = named(recall_root);
    assert_eq!(root.attr_str("gen_ai.operation.name"), Some("execute_tool"));
    assert_eq!(root.attr_str("mcp.method.name"), Some("tools/call"));
    spans
}

#[tokio::test(flavor = "multi_thread")]
async fn services_spans_carry_the_genai_memory_conventions_and_content_only_by_opt_in() {
    let spans = memory_conventions(false).await;
    let root = spans
        .iter()
        .find(|s| s.name == "mcp.recall_episodes")
        .unwrap();
    assert_eq!(root.attr_str("gen_ai.memory.query.text"), None);
    assert!(!spans.iter().any(|s| s.name.starts_with("tools/call")));
    let spans = memory_conventions(true).await;
    let root = spans
        .iter()
        .find(|s| s.name == "tools/call recall_episodes")
        .unwrap();
    assert_eq!(root.attr_str("gen_ai.memory.query.text"), Some("cache"));
    assert!(!spans.iter().any(|s| s.name.starts_with("mcp.")));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_zipkin_exporter_a_call_reaches_a_zipkin_collector_as_one_tree() {
    use ww_tests::zipkin::ZipkinReceiver;
    let collector = ZipkinReceiver::start().await;
    let endpoint = collector.endpoint();
    let telemetry = ww_tests::telemetry(&[
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "ww-zipkin-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ]);
    assert!(telemetry.is_recording());
    let client = connect(memory(&data_dir("mcp-zipkin"), telemetry.clone()).await).await;
    call(
        &client,
        "create_episode",
        json!({"content": "zipkin draws trees"}),
    )
    .await;
    call(&client, "recall_episodes", json!({"query": "zipkin"})).await;
    telemetry.flush().await;
    let spans = collector
        .wait_for(Duration::from_secs(20), |s| {
            s.iter().any(|s| s.name == "mcp.recall_episodes")
        })
        .await;
    let named = |name: &str| {
        spans
            .iter()
            .rfind(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} in {spans:#?}"))
    };
    let root = named("mcp.recall_episodes");
    assert_eq!(root.kind.as_deref(), Some("SERVER"));
    assert_eq!(root.parent_id, None);
    assert_eq!(root.service.as_deref(), Some("ww-zipkin-test"));
    let recall = named("episodic.recall");
    assert_eq!(recall.parent_id.as_ref(), Some(&root.id));
    assert_eq!(recall.kind, None, "internal work has no Zipkin kind");
    assert_eq!(recall.tags["gen_ai.operation.name"], json!("search_memory"));
    let search = spans
        .iter()
        .find(|s| s.name == "embedded.search" && s.trace_id == root.trace_id)
        .expect("the store's boundary span");
    assert_eq!(search.parent_id.as_ref(), Some(&recall.id));
    assert_eq!(search.kind.as_deref(), Some("CLIENT"));
    let trace: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    // Every span of the call but the root has its parent in the same trace.
    for span in &trace {
        if let Some(parent) = &span.parent_id {
            assert!(trace.iter().any(|s| &s.id == parent), "{span:?}");
        }
    }
    assert_eq!(root.trace_id.len(), 32);
}

/// The documents of one X-Ray trace whose segment carries `tool` as an annotation: the
/// segment, then its subsegments.
fn xray_trace<'a>(documents: &'a [Value], tool: &str) -> (&'a Value, Vec<&'a Value>) {
    let segment = documents
        .iter()
        .find(|d| {
            d.get("type").is_none()
                && d["annotations"]
                    .as_object()
                    .is_some_and(|a| a.values().any(|v| v == tool))
        })
        .unwrap_or_else(|| panic!("no segment for {tool} in {documents:#?}"));
    let subsegments = documents
        .iter()
        .filter(|d| d["trace_id"] == segment["trace_id"] && d["id"] != segment["id"])
        .collect();
    (segment, subsegments)
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_xray_exporter_a_call_reaches_the_daemon_as_segments_and_subsegments() {
    use ww_tests::xray::XrayDaemon;
    let daemon = XrayDaemon::start().await;
    let address = daemon.address();
    let telemetry = ww_tests::telemetry(&[
        ("OTEL_TRACES_EXPORTER", "xray"),
        ("AWS_XRAY_DAEMON_ADDRESS", address.as_str()),
        ("OTEL_SERVICE_NAME", "ww-xray-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_PROPAGATORS", "tracecontext,baggage,xray"),
    ]);
    assert!(telemetry.is_recording());
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let started = now();
    let memory = memory(&data_dir("mcp-xray"), telemetry.clone()).await;
    let client = connect(memory.clone()).await;
    call(&client, "recall_episodes", json!({"query": "x-ray"})).await;
    // Over HTTP, the header.
    let over_http = format!("1-{:08x}-0af7651916cd43dd8448eb21", now() as u32);
    let header = format!("Root={over_http};Parent=b7ad6b7169203331;Sampled=1");
    let (http_client, shutdown) =
        connect_http(memory.clone(), &[("X-Amzn-Trace-Id", header.as_str())]).await;
    call(&http_client, "get_session_id", json!({})).await;
    // A caller's X-Ray trace header continues its trace (X-Ray takes trace ids of the
    // last 30 days only: this one starts now).
    let root = format!("1-{:08x}-bd862e3fe1be46a994272793", now() as u32);
    let parent = "53995c3f42cd8ad8";
    let mut meta = RequestMetaObject::default();
    meta.0.0.insert(
        "X-Amzn-Trace-Id".to_owned(),
        json!(format!("Root={root};Parent={parent};Sampled=1")),
    );
    let mut params = CallToolRequestParams::new("create_episode")
        .with_arguments(arguments(json!({"content": "segments and subsegments"})));
    params.meta = Some(meta);
    assert_eq!(
        client.call_tool(params).await.unwrap().is_error,
        Some(false)
    );
    call(&client, "mark_important", json!({"episode_id": "nope"})).await;
    telemetry.flush().await;
    let tools = [
        "recall_episodes",
        "create_episode",
        "mark_important",
        "get_session_id",
    ];
    let documents = daemon
        .wait_for(Duration::from_secs(20), |documents| {
            tools.iter().all(|tool| {
                documents.iter().any(|d| {
                    d.get("type").is_none()
                        && d["annotations"]
                            .as_object()
                            .is_some_and(|a| a.values().any(|v| v == tool))
                })
            })
        })
        .await;
    assert_eq!(daemon.malformed(), Vec::<String>::new());

    // The recall: a segment for the server span, a subsegment for every other span,
    // each naming its parent, across the services and the store.
    let (segment, subsegments) = xray_trace(&documents, "recall_episodes");
    assert_eq!(segment["name"], "ww-xray-test");
    assert!(segment.get("parent_id").is_none(), "{segment}");
    let trace_id = segment["trace_id"].as_str().unwrap();
    let parts: Vec<&str> = trace_id.split('-').collect();
    assert_eq!(parts.len(), 3, "{trace_id}");
    assert_eq!((parts[0], parts[1].len(), parts[2].len()), ("1", 8, 24));
    let epoch = i64::from_str_radix(parts[1], 16).unwrap() as f64;
    assert!(
        (started - 5.0..now() + 5.0).contains(&epoch),
        "an X-Ray trace id starts with the time: {trace_id}"
    );
    let named = |name: &str| {
        subsegments
            .iter()
            .find(|d| d["name"] == name)
            .copied()
            .unwrap_or_else(|| panic!("no {name} in {subsegments:#?}"))
    };
    let recall = named("episodic.recall");
    assert_eq!(recall["parent_id"], segment["id"]);
    let search = named("embedded.search");
    assert_eq!(search["parent_id"], recall["id"]);
    let ids: Vec<&Value> = std::iter::once(segment)
        .chain(subsegments.iter().copied())
        .map(|d| &d["id"])
        .collect();
    let time = |d: &Value, key: &str| d[key].as_f64().unwrap();
    for subsegment in &subsegments {
        assert_eq!(subsegment["type"], "subsegment", "{subsegment}");
        assert!(ids.contains(&&subsegment["parent_id"]), "{subsegment}");
        assert_eq!(subsegment["id"].as_str().unwrap().len(), 16);
        assert!(time(subsegment, "start_time") <= time(subsegment, "end_time"));
        // Within the request (a millisecond of slack for the clocks' rounding).
        assert!(time(subsegment, "start_time") >= time(segment, "start_time") - 1e-3);
        assert!(time(subsegment, "end_time") <= time(segment, "end_time") + 1e-3);
    }
    assert!(time(segment, "start_time") >= started - 1.0);

    // The call that came with an X-Ray header: the caller's trace, under its parent.
    let (continued, _) = xray_trace(&documents, "create_episode");
    assert_eq!(continued["trace_id"], root.as_str());
    assert_eq!(continued["parent_id"], parent);
    let (continued, _) = xray_trace(&documents, "get_session_id");
    assert_eq!(continued["trace_id"], over_http.as_str());
    assert_eq!(continued["parent_id"], "b7ad6b7169203331");

    // A failed call: a fault, with its cause.
    let (failed, _) = xray_trace(&documents, "mark_important");
    assert_eq!(failed["fault"], true, "{failed}");
    let exceptions = failed["cause"]["exceptions"]
        .as_array()
        .expect("exceptions");
    assert!(
        exceptions
            .iter()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains("nope"))),
        "{failed}"
    );
    client.cancel().await.unwrap();
    http_client.cancel().await.unwrap();
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recalled_episode_names_the_trace_that_wrote_it_and_the_recall_links_to_it() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = otlp_telemetry(&receiver.endpoint(), "grpc");
    let client = connect(memory(&data_dir("mcp-provenance-traces"), telemetry.clone()).await).await;
    let created = call(
        &client,
        "create_episode",
        json!({"content": "the canary rolled back"}),
    )
    .await;
    let id = created.structured_content.unwrap()["id"].clone();
    let recalled = call(&client, "recall_episodes", json!({"query": "canary"})).await;
    let episode = recalled.structured_content.unwrap()["episodes"][0]["episode"].clone();
    assert_eq!(episode["id"], id);
    telemetry.flush().await;
    let spans = receiver
        .wait_for(Duration::from_secs(20), |s| {
            s.iter().any(|s| s.name == "mcp.recall_episodes")
        })
        .await;
    let named = |name: &str| spans.iter().find(|s| s.name == name).unwrap();
    // The recall result names the span that stored the episode, in the first trace.
    let create = named("episodic.create");
    let writer = &episode["created_by_trace"];
    assert_eq!(writer["trace_id"], json!(create.trace_id));
    assert_eq!(writer["span_id"], json!(create.span_id));
    assert_eq!(create.trace_id, named("mcp.create_episode").trace_id);
    // The recall, in a trace of its own, links to it.
    let recall = named("episodic.recall");
    assert_ne!(recall.trace_id, create.trace_id);
    assert_eq!(recall.links.len(), 1, "{:?}", recall.links);
    let link = &recall.links[0];
    assert_eq!(
        (&link.trace_id, &link.span_id),
        (&create.trace_id, &create.span_id)
    );
    assert_eq!(
        link.attributes.get("ww.memory.id"),
        Some(&ww_tests::otlp::AttrValue::Str(
            id.as_str().unwrap().to_owned()
        ))
    );
    // Changing it records who changed it.
    call(&client, "mark_important", json!({"episode_id": id})).await;
    let recalled = call(&client, "recall_episodes", json!({"query": "canary"})).await;
    let episode = recalled.structured_content.unwrap()["episodes"][0]["episode"].clone();
    telemetry.flush().await;
    let spans = receiver
        .wait_for(Duration::from_secs(20), |s| {
            s.iter().any(|s| s.name == "episodic.mark_important")
        })
        .await;
    let mark = spans
        .iter()
        .find(|s| s.name == "episodic.mark_important")
        .unwrap();
    assert_eq!(episode["updated_by_trace"]["span_id"], json!(mark.span_id));
    assert_eq!(
        episode["created_by_trace"]["span_id"],
        json!(create.span_id)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_tracing_no_trace_is_stored_or_returned() {
    let client = connect(memory(&data_dir("mcp-provenance-untraced"), telemetry(&[])).await).await;
    call(
        &client,
        "create_episode",
        json!({"content": "nobody watched"}),
    )
    .await;
    let recalled = call(&client, "recall_episodes", json!({"query": "watched"})).await;
    let episode = &recalled.structured_content.unwrap()["episodes"][0]["episode"];
    assert!(episode.get("created_by_trace").is_none(), "{episode}");
}

#[tokio::test(flavor = "multi_thread")]
async fn entities_relations_skills_and_consolidation_remember_their_writers() {
    let receiver = OtlpReceiver::grpc().await;
    let telemetry = otlp_telemetry(&receiver.endpoint(), "grpc");
    let client = connect(memory(&data_dir("mcp-provenance-kinds"), telemetry.clone()).await).await;
    let body = |result: rmcp::model::CallToolResult| result.structured_content.unwrap();
    let entity = |name: &str| json!({"name": name, "entity_type": "TOOL", "summary": "a tool"});
    let a = body(call(&client, "create_entity", entity("hammer")).await)["entity"].clone();
    let b = body(call(&client, "create_entity", entity("anvil")).await)["entity"].clone();
    let relation = body(
        call(
            &client,
            "create_relation",
            json!({"source_id": a["id"], "target_id": b["id"], "relation_type": "USES"}),
        )
        .await,
    );
    let superseded = body(
        call(
            &client,
            "supersede_fact",
            json!({"entity_id": a["id"], "new_summary": "a heavier tool"}),
        )
        .await,
    );
    let provenance = body(
        call(
            &client,
            "get_provenance",
            json!({"entity_id": superseded["new"]["id"]}),
        )
        .await,
    );
    let skill = body(
        call(
            &client,
            "create_skill",
            json!({"trajectory": [{"action": "strike"}], "outcome_score": 0.9, "domain": "smithing"}),
        )
        .await,
    )["skill"]
        .clone();
    let executed = call(
        &client,
        "execute_skill",
        json!({"skill_id": skill["id"], "success": true}),
    )
    .await;
    assert_eq!(executed.is_error, Some(false));
    let recalled_skill =
        body(call(&client, "recall_skill", json!({"task": "strike"})).await)["skills"][0]["skill"]
            .clone();
    for i in 0..3 {
        let args = json!({"content": format!("the forge fire went out again {i}")});
        call(&client, "create_episode", args).await;
    }
    let deep = call(&client, "consolidate_now", json!({"kind": "deep"})).await;
    assert_eq!(deep.is_error, Some(false), "{deep:?}");
    telemetry.flush().await;
    let spans = receiver
        .wait_for(Duration::from_secs(20), |s| {
            s.iter().any(|s| s.name == "semantic.consolidate_deep")
        })
        .await;
    let spans_named = |name: &str| -> Vec<&ww_tests::otlp::ReceivedSpan> {
        spans.iter().filter(|s| s.name == name).collect()
    };
    let names = |by: &Value| (by["trace_id"].clone(), by["span_id"].clone());
    let of = |span: &ww_tests::otlp::ReceivedSpan| (json!(span.trace_id), json!(span.span_id));
    let creates = spans_named("semantic.create_entity");
    assert_eq!(names(&a["created_by_trace"]), of(creates[0]));
    assert_eq!(names(&b["created_by_trace"]), of(creates[1]));
    assert_eq!(
        names(&relation["created_by_trace"]),
        of(spans_named("semantic.create_relation")[0])
    );
    // A supersession wrote the new version and changed the old one, in one span.
    let supersede = of(spans_named("semantic.supersede_fact")[0]);
    assert_eq!(names(&superseded["new"]["created_by_trace"]), supersede);
    assert_eq!(names(&superseded["old"]["updated_by_trace"]), supersede);
    assert_eq!(
        names(&superseded["old"]["created_by_trace"]),
        of(creates[0])
    );
    assert_eq!(names(&provenance["entity"]["created_by_trace"]), supersede);
    // A skill: stored by one span, its last run recorded by another.
    assert_eq!(
        names(&skill["created_by_trace"]),
        of(spans_named("procedural.create_skill")[0])
    );
    assert_eq!(
        names(&recalled_skill["updated_by_trace"]),
        of(spans_named("procedural.execute_skill")[0])
    );
    // Recalling it links to the span that stored it.
    let recall_skill = spans_named("procedural.recall_skill")[0];
    let links: Vec<_> = recall_skill
        .links
        .iter()
        .map(|l| (json!(l.trace_id), json!(l.span_id)))
        .collect();
    assert_eq!(links, [of(spans_named("procedural.create_skill")[0])]);
    // Deep consolidation links to the spans that wrote the episodes it clustered.
    let consolidation = spans_named("semantic.consolidate_deep")[0];
    let episode_writers: Vec<_> = spans_named("episodic.create")
        .into_iter()
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect();
    let linked: Vec<_> = consolidation
        .links
        .iter()
        .map(|l| (l.trace_id.clone(), l.span_id.clone()))
        .collect();
    assert_eq!(linked.len(), 3, "{consolidation:?}");
    assert!(
        linked.iter().all(|l| episode_writers.contains(l)),
        "{linked:?}"
    );
}

//! The MCP gateway: the 18 tools over MCP (rmcp), each call one SERVER span `mcp.<tool>`
//! continuing the caller's trace from `params._meta.traceparent` when it sends one.
//! Tool failures are results with `isError` and the JSON text `{code, message, field?}`
//! (no `structuredContent`: that must match the tool's output schema); an unknown tool is
//! a protocol error.

pub mod http;
pub mod sessions;
pub mod tools;

use std::sync::Arc;

use opentelemetry::KeyValue;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;

use crate::memory::Memory;
use crate::plugins::{EndObserver, Request, RequestEnd};
use crate::session::Session;
use crate::telemetry::Metrics;
use crate::telemetry::SpanNames;
use crate::telemetry::metrics::{Attributes, HostInstrument};
use crate::tracing_capability::{IncomingContext, xray};

/// Progress reports queued for the client at most.
const PROGRESS_QUEUE: usize = 64;

/// How long a result waits for the progress notifications that precede it to be sent.
const PROGRESS_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a cancelled call may take to stop on its own before it is abandoned. The
/// components see the cancellation and stop their long operations at the next step (a
/// consolidation returns what it had done); a short call simply finishes. One that does
/// neither is dropped, and its instances with it (never lent half-way to another call).
const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// JSON-RPC error code of a request that was cancelled (LSP's `RequestCancelled`; MCP
/// defines none, and a client that cancelled never reads the answer anyway).
const REQUEST_CANCELLED: rmcp::model::ErrorCode = rmcp::model::ErrorCode(-32800);

/// One MCP connection's server: the memory API, bound to one session (over HTTP, a
/// request's bearer token may bind it to another: [`crate::session::TokenBindings`]).
#[derive(Clone)]
pub struct Gateway {
    memory: Memory,
    session: Session,
    /// `pipe` (stdio) or `tcp` (HTTP), for `network.transport`.
    transport: &'static str,
    tools: Arc<Vec<rmcp::model::Tool>>,
    /// The HTTP transport's session table, for `memory_stats`.
    sessions: Option<Arc<sessions::Sessions>>,
}

/// The requests being answered now (over HTTP, every POST until its answer has been
/// sent): a graceful stop stops taking requests, then waits for these to finish (up to a
/// bound) before it cancels the rest.
#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<InFlightState>);

#[derive(Debug, Default)]
struct InFlightState {
    calls: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One running request; dropped when it ends.
pub struct Running(InFlight);

impl Drop for Running {
    fn drop(&mut self) {
        let state = &(self.0).0;
        if state
            .calls
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            state.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// A request begins.
    pub fn begin(&self) -> Running {
        self.0
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Running(self.clone())
    }

    /// Calls running now.
    pub fn count(&self) -> usize {
        self.0.calls.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves when no call is running, or after `bound`; says whether none is.
    pub async fn drained(&self, bound: std::time::Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.0.idle.notified();
                if self.count() == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(bound, wait).await.is_ok()
    }
}

impl Gateway {
    /// A server for `session` over `transport` (`pipe` or `tcp`).
    pub fn new(memory: Memory, session: impl Into<Session>, transport: &'static str) -> Self {
        Self {
            memory,
            session: session.into(),
            transport,
            tools: tools::catalog(),
            sessions: None,
        }
    }

    /// The same server, reporting `sessions` in `memory_stats`.
    pub fn with_sessions(mut self, sessions: Arc<sessions::Sessions>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// The same server over another transport (`pipe` or `tcp`).
    pub fn with_transport(mut self, transport: &'static str) -> Self {
        self.transport = transport;
        self
    }
}

fn meta_text(meta: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    meta.get(key).and_then(Value::as_str).map(str::to_owned)
}

impl ServerHandler for Gateway {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        let mut implementation = Implementation::default();
        implementation.name = "world-weaver".to_owned();
        implementation.version = env!("CARGO_PKG_VERSION").to_owned();
        info.server_info = implementation;
        info.instructions = Some(
            "Memory for agents: episodes of this session, shared facts (entities and \
             relations) and skills. Recall before acting, record what happened after."
                .to_owned(),
        );
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.to_vec()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        if tools::find(&name).is_none() {
            return Err(McpError::invalid_params(
                format!("unknown tool: {name}"),
                None,
            ));
        }
        // Over HTTP, the session the request's bearer token is bound to (set by the
        // token check); otherwise the connection's.
        let session = context
            .extensions
            .get::<::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Session>())
            .unwrap_or(&self.session)
            .clone();
        // `params._meta`, wherever the SDK left it; over HTTP, the request's trace
        // headers stand in for what `_meta` does not carry.
        let mut meta = context.meta.0.0.clone();
        if let Some(own) = &request.meta {
            meta.extend(own.0.0.clone());
        }
        if let Some(parts) = context.extensions.get::<::http::request::Parts>() {
            // The trace context comes whole from one place: a header `tracestate` never
            // pairs with a `_meta` `traceparent`.
            let keys: &[&str] = if meta.contains_key("traceparent") {
                &["baggage"]
            } else {
                &["traceparent", "tracestate", "baggage"]
            };
            for &key in keys {
                if meta.contains_key(key) {
                    continue;
                }
                if let Some(value) = parts.headers.get(key).and_then(|v| v.to_str().ok()) {
                    meta.insert(key.to_owned(), Value::String(value.to_owned()));
                }
            }
        }
        let telemetry = self.memory.host().telemetry();
        let span_name = match telemetry.span_names() {
            SpanNames::Mcp => format!("mcp.{name}"),
            SpanNames::Semconv => format!("tools/call {name}"),
        };
        let mut call = Request::new(span_name);
        if let Some(metrics) = telemetry.metrics() {
            call = call.on_end(tool_duration(metrics.clone(), name.to_string()));
        }
        let mut call = call
            .with_cancellation(context.ct.clone())
            .with_attribute(KeyValue::new("mcp.method.name", "tools/call"))
            .with_attribute(KeyValue::new("gen_ai.tool.name", name.clone()))
            .with_attribute(KeyValue::new("gen_ai.operation.name", "execute_tool"))
            .with_attribute(KeyValue::new(
                "jsonrpc.request.id",
                format!("{}", context.id),
            ))
            .with_attribute(KeyValue::new("mcp.session.id", session.id.to_string()))
            .with_attribute(KeyValue::new("network.transport", self.transport))
            .with_attribute(KeyValue::new("openinference.span.kind", "TOOL"));
        // The version the handshake settled or, on a stateless (2026-07-28) request, the
        // one the request states.
        let protocol = context
            .peer
            .peer_info()
            .map(|info| info.protocol_version.to_string())
            .or_else(|| meta_text(&meta, "io.modelcontextprotocol/protocolVersion"))
            .or_else(|| {
                let parts = context.extensions.get::<::http::request::Parts>()?;
                let value = parts.headers.get("mcp-protocol-version")?;
                value.to_str().ok().map(str::to_owned)
            });
        if let Some(protocol) = &protocol {
            call = call.with_attribute(KeyValue::new("mcp.protocol.version", protocol.clone()));
        }
        if let Some(traceparent) = meta_text(&meta, "traceparent") {
            let mut parent = IncomingContext::traceparent(traceparent);
            if let Some(tracestate) = meta_text(&meta, "tracestate") {
                parent.tracestate = tracestate;
            }
            call = call.with_parent(parent);
        } else if telemetry.xray_propagation() {
            // No W3C context: an X-Ray trace header (in `_meta`, or over HTTP a header)
            // continues its trace instead.
            let header = meta_text(&meta, xray::HEADER)
                .or_else(|| meta_text(&meta, &xray::HEADER.to_ascii_lowercase()))
                .or_else(|| {
                    let parts = context.extensions.get::<::http::request::Parts>()?;
                    let value = parts.headers.get(xray::HEADER)?;
                    value.to_str().ok().map(str::to_owned)
                });
            if let Some(parent) = header.as_deref().and_then(xray::incoming) {
                call = call.with_parent(parent);
            }
        }
        if let Some(baggage) = meta_text(&meta, "baggage") {
            call = call.with_baggage(baggage);
        }
        // Progress the services report goes to the client as notifications when it asked
        // (a progress token), in order, all before the result.
        let token = request
            .meta
            .as_ref()
            .and_then(|m| m.get_progress_token())
            .or_else(|| context.meta.get_progress_token());
        let mut forwarding = None;
        if let Some(token) = token {
            // Bounded: a guest reporting faster than the client reads loses reports in
            // between (progress only matters as its latest value), never memory.
            let (sender, mut reports) =
                tokio::sync::mpsc::channel::<(u64, u64, String)>(PROGRESS_QUEUE);
            let peer = context.peer.clone();
            forwarding = Some(tokio::spawn(async move {
                // MCP progress only ever increases: a report that does not move it on (a
                // component repeating itself) is not sent.
                let mut last = None;
                while let Some((done, total, message)) = reports.recv().await {
                    if last.is_some_and(|last| done <= last) {
                        continue;
                    }
                    last = Some(done);
                    let mut progress = ProgressNotificationParam::new(token.clone(), done as f64);
                    progress.total = (total > 0).then_some(total as f64);
                    progress.message = Some(message);
                    if peer.notify_progress(progress).await.is_err() {
                        break;
                    }
                }
            }));
            call = call.with_progress(Arc::new(move |done, total, message: &str| {
                let _ = sender.try_send((done, total, message.to_owned()));
            }));
        }
        // The GenAI memory conventions' opt-in: a search's query text, which may be
        // sensitive, only when the user asked for content to be recorded.
        if telemetry.captures_content()
            && let Some(query) = tools::search_query(&name, request.arguments.as_ref())
        {
            call = call.with_attribute(KeyValue::new("gen_ai.memory.query.text", query));
        }
        let args = Value::Object(request.arguments.unwrap_or_default());
        let caller = tools::Caller {
            session: &session,
            protocol_version: protocol.as_deref(),
            sessions: self.sessions.as_deref(),
        };
        let serving = tools::call(&self.memory, call, caller, &name, args);
        tokio::pin!(serving);
        // rmcp cancels `ct` on `notifications/cancelled` for this request and when the
        // client goes away (stdio closed, HTTP session ended or, stateless, disconnected).
        let result = tokio::select! {
            result = &mut serving => Some(result),
            () = context.ct.cancelled() => tokio::time::timeout(CANCEL_GRACE, &mut serving)
                .await
                .ok(),
        };
        if let Some(mut forwarding) = forwarding {
            // The request, and with it the sender, is gone: this ends once all is sent,
            // unless the client stopped reading; then the result does not wait for it.
            if tokio::time::timeout(PROGRESS_DRAIN, &mut forwarding)
                .await
                .is_err()
            {
                forwarding.abort();
            }
        }
        let Some(result) = result else {
            tracing::info!("{name} abandoned: cancelled, and still running {CANCEL_GRACE:?} later");
            return Err(McpError::new(
                REQUEST_CANCELLED,
                "the request was cancelled",
                None,
            ));
        };
        Ok(match result {
            Ok(value) => CallToolResult::structured(value),
            // The body as text only: a tool's `structuredContent` must match its output
            // schema (MCP), and the official TypeScript SDK checks that of error results
            // too, turning each into a protocol error that hides the body.
            Err(error) => CallToolResult::error(vec![rmcp::model::ContentBlock::text(
                serde_json::to_string(&error).unwrap_or_default(),
            )]),
        }
        .into())
    }
}

/// Records `mcp.server.operation.duration` for a call of `tool` once its request has
/// ended (so tail sampling has decided the exemplar's trace).
fn tool_duration(metrics: Arc<Metrics>, tool: String) -> EndObserver {
    Arc::new(move |end: &RequestEnd<'_>| {
        let mut pairs = vec![
            ("mcp.method.name".into(), "tools/call".into()),
            ("gen_ai.tool.name".into(), tool.clone().into()),
        ];
        if let Some(code) = end.error_code {
            pairs.push(("error.type".into(), tools::TOOL_ERROR.into()));
            pairs.push(("ww.error.code".into(), code.into()));
        }
        metrics.host(HostInstrument::ToolCall).record(
            end.elapsed.as_secs_f64(),
            &Attributes::new(pairs),
            end.root,
        );
    })
}

//! Real OTLP receivers on 127.0.0.1 — gRPC (tonic) and HTTP/protobuf (hyper) — that keep
//! what they receive for assertions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// An attribute value as received.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// String.
    Str(String),
    /// Bool.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Double.
    Double(f64),
    /// Array.
    Array(Vec<AttrValue>),
}

impl AttrValue {
    /// The string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The double, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            AttrValue::Double(d) => Some(*d),
            _ => None,
        }
    }
}

fn convert_value(value: Option<AnyValue>) -> AttrValue {
    match value.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(s)) => AttrValue::Str(s),
        Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(b),
        Some(any_value::Value::IntValue(i)) => AttrValue::Int(i),
        Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(d),
        Some(any_value::Value::ArrayValue(a)) => AttrValue::Array(
            a.values
                .into_iter()
                .map(|v| convert_value(Some(v)))
                .collect(),
        ),
        other => AttrValue::Str(format!("{other:?}")),
    }
}

fn convert_attributes(attributes: Vec<KeyValue>) -> BTreeMap<String, AttrValue> {
    attributes
        .into_iter()
        .map(|kv| (kv.key, convert_value(kv.value)))
        .collect()
}

/// A span event as received.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    /// Name.
    pub name: String,
    /// Attributes.
    pub attributes: BTreeMap<String, AttrValue>,
}

/// One span as it arrived over the wire.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id, empty for a root.
    pub parent_span_id: String,
    /// W3C trace state, empty when none.
    pub trace_state: String,
    /// Name.
    pub name: String,
    /// OTLP kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// Attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// Events.
    pub events: Vec<ReceivedEvent>,
    /// 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// Status message.
    pub status_message: String,
    /// The resource's `service.name`.
    pub service_name: String,
    /// Start, ns since the epoch.
    pub start_unix_nano: u64,
    /// End, ns since the epoch.
    pub end_unix_nano: u64,
    /// Links: the linked span's trace id and span id (hex), and the link's attributes.
    pub links: Vec<ReceivedLink>,
}

/// A span link as received.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedLink {
    /// The linked span's trace id.
    pub trace_id: String,
    /// The linked span's id.
    pub span_id: String,
    /// The link's attributes.
    pub attributes: BTreeMap<String, AttrValue>,
}

/// OTLP span kinds.
pub mod kind {
    /// INTERNAL.
    pub const INTERNAL: i32 = 1;
    /// SERVER.
    pub const SERVER: i32 = 2;
    /// CLIENT.
    pub const CLIENT: i32 = 3;
}

/// OTLP status codes.
pub mod status {
    /// UNSET.
    pub const UNSET: i32 = 0;
    /// OK.
    pub const OK: i32 = 1;
    /// ERROR.
    pub const ERROR: i32 = 2;
}

impl ReceivedSpan {
    /// A string attribute.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(AttrValue::as_str)
    }

    /// The `exception` event, if recorded.
    pub fn exception(&self) -> Option<&ReceivedEvent> {
        self.events.iter().find(|e| e.name == "exception")
    }

    /// How the span failed: only when its status is ERROR *and* it has an `exception`
    /// event, the event's type, message and stack trace.
    pub fn failure(&self) -> Option<Failure> {
        let event = self
            .exception()
            .filter(|_| self.status_code == status::ERROR)?;
        let text = |key: &str| {
            event
                .attributes
                .get(key)
                .and_then(AttrValue::as_str)
                .map(str::to_owned)
        };
        Some(Failure {
            kind: text("exception.type").unwrap_or_default(),
            message: text("exception.message").unwrap_or_default(),
            stacktrace: text("exception.stacktrace"),
        })
    }
}

/// The one span named `name` among `spans`; panics, listing them, when there is not
/// exactly one.
pub fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "expected one span {name}, got {found:#?}");
    found[0]
}

/// `child` is a child of `parent`: its parent id, the same trace, and its time within
/// its parent's.
pub fn assert_child_of(child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(
        child.parent_span_id, parent.span_id,
        "{} under {}",
        child.name, parent.name
    );
    assert_eq!(
        child.trace_id, parent.trace_id,
        "{} in {}'s trace",
        child.name, parent.name
    );
    assert!(
        child.start_unix_nano >= parent.start_unix_nano
            && child.end_unix_nano <= parent.end_unix_nano,
        "{} lies within {}",
        child.name,
        parent.name
    );
}

/// A span's recorded failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `exception.type`.
    pub kind: String,
    /// `exception.message`.
    pub message: String,
    /// `exception.stacktrace`.
    pub stacktrace: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn convert_request(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service_name = resource_spans
            .resource
            .map(|r| convert_attributes(r.attributes))
            .and_then(|a| {
                a.get("service.name")
                    .and_then(|v| v.as_str().map(str::to_owned))
            })
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                let status = span.status.unwrap_or_default();
                spans.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    trace_state: span.trace_state,
                    name: span.name,
                    kind: span.kind,
                    attributes: convert_attributes(span.attributes),
                    events: span
                        .events
                        .into_iter()
                        .map(|e| ReceivedEvent {
                            name: e.name,
                            attributes: convert_attributes(e.attributes),
                        })
                        .collect(),
                    status_code: status.code,
                    status_message: status.message,
                    service_name: service_name.clone(),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    links: span
                        .links
                        .into_iter()
                        .map(|link| ReceivedLink {
                            trace_id: hex(&link.trace_id),
                            span_id: hex(&link.span_id),
                            attributes: convert_attributes(link.attributes),
                        })
                        .collect(),
                });
            }
        }
    }
    spans
}

/// One export request as received: its path (`grpc` for gRPC) and headers.
pub type ExportRequest = (String, Vec<(String, String)>);

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: Mutex<Vec<ExportRequest>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    arrived: Notify,
    /// Only count spans, keep nothing (benchmarks: the receiver shares the machine).
    count_only: bool,
    /// Take traces only, as Jaeger, Tempo and Phoenix do: no metrics service over gRPC
    /// (`UNIMPLEMENTED`), 404 on `/v1/metrics` over HTTP.
    traces_only: bool,
    counted: std::sync::atomic::AtomicU64,
}

/// One metric as received (cumulative: the latest export holds everything).
pub type ReceivedMetric = opentelemetry_proto::tonic::metrics::v1::Metric;

struct GrpcMetrics(Arc<Received>);

#[tonic::async_trait]
impl MetricsService for GrpcMetrics {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.push_metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Received {
    fn push(&self, spans: Vec<ReceivedSpan>, path: &str, headers: Vec<(String, String)>) {
        if let Ok(mut all) = self.spans.lock() {
            all.extend(spans);
        }
        if let Ok(mut requests) = self.requests.lock() {
            requests.push((path.to_owned(), headers));
        }
        self.arrived.notify_waiters();
    }

    fn push_metrics(&self, request: ExportMetricsServiceRequest) {
        if let Ok(mut all) = self.metrics.lock() {
            all.push(request);
        }
        self.arrived.notify_waiters();
    }
}

/// A receiver listening on 127.0.0.1.
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Received>,
    task: tokio::task::JoinHandle<()>,
    http: bool,
}

struct GrpcTraces(Arc<Received>);

#[tonic::async_trait]
impl TraceService for GrpcTraces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .iter()
            .filter_map(|entry| match entry {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        if self.0.count_only {
            let spans: usize = request
                .get_ref()
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            self.0
                .counted
                .fetch_add(spans as u64, std::sync::atomic::Ordering::Relaxed);
            return Ok(tonic::Response::new(ExportTraceServiceResponse::default()));
        }
        self.0
            .push(convert_request(request.into_inner()), "grpc", headers);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl OtlpReceiver {
    /// An OTLP/gRPC receiver.
    pub async fn grpc() -> Self {
        Self::grpc_with(Received::default()).await
    }

    /// An OTLP/gRPC receiver that only counts the spans it accepts ([`Self::counted`]).
    pub async fn grpc_counting() -> Self {
        Self::grpc_with(Received {
            count_only: true,
            ..Received::default()
        })
        .await
    }

    /// An OTLP/gRPC receiver of traces only (a trace-only backend's answer to metrics).
    pub async fn grpc_traces_only() -> Self {
        Self::grpc_with(Received {
            traces_only: true,
            ..Received::default()
        })
        .await
    }

    /// An OTLP/HTTP receiver of traces only (404 on `/v1/metrics`).
    pub async fn http_traces_only() -> Self {
        Self::http_with(Received {
            traces_only: true,
            ..Received::default()
        })
        .await
    }

    /// Spans accepted by a counting receiver.
    pub fn counted(&self) -> u64 {
        self.received
            .counted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn grpc_with(received: Received) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(received);
        let service = TraceServiceServer::new(GrpcTraces(received.clone()));
        let metrics = (!received.traces_only)
            .then(|| MetricsServiceServer::new(GrpcMetrics(received.clone())));
        // As collectors do: without TCP_NODELAY every answer waits ~40 ms for a delayed ACK.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .add_optional_service(metrics)
                .serve_with_incoming(incoming)
                .await;
        });
        Self {
            addr,
            received,
            task,
            http: false,
        }
    }

    /// An OTLP/HTTP receiver accepting protobuf on `/v1/traces`.
    pub async fn http() -> Self {
        Self::http_with(Received::default()).await
    }

    async fn http_with(received: Received) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(received);
        let shared = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let received = shared.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let received = received.clone();
                            async move {
                                let path = request.uri().path().to_owned();
                                let headers: Vec<(String, String)> = request
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or_default().to_owned())
                                    })
                                    .collect();
                                let body = request.into_body().collect().await?.to_bytes();
                                if path == "/v1/metrics" && received.traces_only {
                                    let response = hyper::Response::builder()
                                        .status(404)
                                        .body(Full::new(Bytes::new()));
                                    return Ok::<_, hyper::Error>(response.expect("response"));
                                }
                                if path == "/v1/metrics" {
                                    let response = match ExportMetricsServiceRequest::decode(body) {
                                        Ok(export) => {
                                            received.push_metrics(export);
                                            hyper::Response::builder()
                                                .header("content-type", "application/x-protobuf")
                                                .body(Full::new(Bytes::from(
                                                    ExportMetricsServiceResponse::default()
                                                        .encode_to_vec(),
                                                )))
                                        }
                                        Err(_) => hyper::Response::builder()
                                            .status(400)
                                            .body(Full::new(Bytes::new())),
                                    };
                                    return Ok::<_, hyper::Error>(response.expect("response"));
                                }
                                let response = match ExportTraceServiceRequest::decode(body) {
                                    Ok(export) if path == "/v1/traces" => {
                                        received.push(convert_request(export), &path, headers);
                                        hyper::Response::builder()
                                            .header("content-type", "application/x-protobuf")
                                            .body(Full::new(Bytes::from(
                                                ExportTraceServiceResponse::default()
                                                    .encode_to_vec(),
                                            )))
                                    }
                                    _ => hyper::Response::builder()
                                        .status(400)
                                        .body(Full::new(Bytes::new())),
                                };
                                Ok::<_, hyper::Error>(response.expect("response"))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            received,
            task,
            http: true,
        }
    }

    /// The endpoint to configure: base URL for gRPC, `/v1/traces` URL for HTTP.
    pub fn endpoint(&self) -> String {
        if self.http {
            format!("http://{}/v1/traces", self.addr)
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Everything received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received
            .spans
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The path and headers of every export request received.
    pub fn requests(&self) -> Vec<ExportRequest> {
        self.received
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Every metrics export request received, in order.
    pub fn metric_exports(&self) -> Vec<ExportMetricsServiceRequest> {
        self.received
            .metrics
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// The metrics of the latest export (cumulative, so it holds every count), with the
    /// instrumentation scope each came in.
    pub fn latest_metrics(&self) -> Vec<(String, ReceivedMetric)> {
        let exports = self.metric_exports();
        let Some(latest) = exports.last() else {
            return Vec::new();
        };
        latest
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| {
                let scope = s.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                s.metrics.iter().map(move |m| (scope.clone(), m.clone()))
            })
            .collect()
    }

    /// Wait until `done` holds for the received spans (or `timeout` passes), and return
    /// them.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.received.arrived.notified();
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

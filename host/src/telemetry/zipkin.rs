//! Spans to a Zipkin collector: Zipkin v2 JSON posted to `/api/v2/spans`.
//!
//! Written here rather than taken from `opentelemetry-zipkin` (0.33, the version matching
//! this SDK): that crate is deprecated in favour of OTLP, and it never sets
//! `localEndpoint.serviceName`, so every span lands in Zipkin under no service — its UI
//! lists services by that name. The format is small (the Zipkin v2 API's `Span`), the
//! mapping follows the OpenTelemetry specification's Zipkin exporter section: kinds
//! (INTERNAL has none), status as `otel.status_code` / `error` tags, events as
//! annotations, the instrumentation scope as `otel.scope.name`.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use serde_json::{Map, Value as Json, json};

/// Posts finished spans to a Zipkin collector.
#[derive(Debug)]
pub struct ZipkinExporter {
    client: reqwest::Client,
    endpoint: String,
    service_name: String,
}

impl ZipkinExporter {
    /// An exporter to `endpoint` (the collector's `/api/v2/spans` URL), each request
    /// bounded by `timeout`.
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self {
            client,
            endpoint: endpoint.to_owned(),
            service_name: super::config::DEFAULT_SERVICE_NAME.to_owned(),
        })
    }
}

fn micros(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A tag's text: Zipkin tags are strings; arrays become JSON arrays, as the
/// specification has it.
fn tag(value: &Value) -> String {
    fn list<T: serde::Serialize>(items: &[T]) -> String {
        serde_json::to_string(items).unwrap_or_default()
    }
    match value {
        Value::Array(Array::Bool(v)) => list(v),
        Value::Array(Array::I64(v)) => list(v),
        Value::Array(Array::F64(v)) => list(v),
        Value::Array(Array::String(v)) => list(&v.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
        other => other.to_string(),
    }
}

fn tag_map(attributes: &[KeyValue]) -> Map<String, Json> {
    attributes
        .iter()
        .map(|kv| (kv.key.to_string(), Json::String(tag(&kv.value))))
        .collect()
}

/// One span as the Zipkin v2 API's `Span`.
pub fn zipkin_span(span: &SpanData, service_name: &str) -> Json {
    let mut tags = tag_map(&span.attributes);
    match &span.status {
        Status::Unset => {}
        Status::Ok => {
            tags.insert("otel.status_code".into(), "OK".into());
        }
        Status::Error { description } => {
            tags.insert("otel.status_code".into(), "ERROR".into());
            tags.insert("error".into(), Json::String(description.to_string()));
        }
    }
    tags.insert(
        "otel.scope.name".into(),
        Json::String(span.instrumentation_scope.name().to_owned()),
    );
    let start = micros(span.start_time);
    // Zipkin reads a duration of 0 as "unknown": a span that took less than 1 µs took 1.
    let duration = micros(span.end_time).saturating_sub(start).max(1);
    let mut out = json!({
        "traceId": span.span_context.trace_id().to_string(),
        "id": span.span_context.span_id().to_string(),
        "name": span.name,
        "timestamp": start,
        "duration": duration,
        "localEndpoint": {"serviceName": service_name},
        "tags": tags,
    });
    let kind = match span.span_kind {
        SpanKind::Server => Some("SERVER"),
        SpanKind::Client => Some("CLIENT"),
        SpanKind::Producer => Some("PRODUCER"),
        SpanKind::Consumer => Some("CONSUMER"),
        SpanKind::Internal => None,
    };
    // `out` is the object built above; inserting into it cannot fail.
    let Some(fields) = out.as_object_mut() else {
        return out;
    };
    if let Some(kind) = kind {
        fields.insert("kind".into(), kind.into());
    }
    if span.parent_span_id != SpanId::INVALID {
        fields.insert("parentId".into(), span.parent_span_id.to_string().into());
    }
    if !span.events.is_empty() {
        let annotations: Vec<Json> = span
            .events
            .iter()
            .map(|event| {
                // The event's attributes ride in its value, as JSON, after its name.
                let value: Cow<'_, str> = if event.attributes.is_empty() {
                    Cow::Borrowed(&event.name)
                } else {
                    let attributes = Json::Object(tag_map(&event.attributes));
                    Cow::Owned(format!("{} {attributes}", event.name))
                };
                json!({"timestamp": micros(event.timestamp), "value": value})
            })
            .collect();
        fields.insert("annotations".into(), annotations.into());
    }
    out
}

impl SpanExporter for ZipkinExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans: Vec<Json> = batch
            .iter()
            .map(|span| zipkin_span(span, &self.service_name))
            .collect();
        let response = self
            .client
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&spans).unwrap_or_default())
            .send()
            .await
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(OTelSdkError::InternalFailure(format!(
                "Zipkin answered HTTP {}",
                response.status()
            )))
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(name) = resource.get(&opentelemetry::Key::from_static_str("service.name")) {
            self.service_name = name.to_string();
        }
    }
}

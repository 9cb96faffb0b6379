//! A Zipkin collector on loopback: it takes `POST /api/v2/spans` (Zipkin v2 JSON, as the
//! Zipkin server does) and keeps every span it decodes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Notify;

/// A span as a Zipkin collector stores it (the fields the tests look at).
#[derive(Debug, Clone)]
pub struct ZipkinSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub id: String,
    /// The parent's id; none for a root.
    pub parent_id: Option<String>,
    /// The span's name.
    pub name: String,
    /// `SERVER`, `CLIENT`, `PRODUCER`, `CONSUMER`, or none (internal work).
    pub kind: Option<String>,
    /// `localEndpoint.serviceName`.
    pub service: Option<String>,
    /// Tags (Zipkin's attributes: every value a string).
    pub tags: serde_json::Map<String, Value>,
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ZipkinSpan>>,
    arrived: Notify,
}

/// The collector; it stops when dropped.
pub struct ZipkinReceiver {
    server: crate::http::Server,
    received: Arc<Received>,
}

fn decode(body: &[u8]) -> Option<Vec<ZipkinSpan>> {
    let spans: Vec<Value> = serde_json::from_slice(body).ok()?;
    spans
        .into_iter()
        .map(|span| {
            let text = |key: &str| span.get(key).and_then(Value::as_str).map(str::to_owned);
            Some(ZipkinSpan {
                trace_id: text("traceId")?,
                id: text("id")?,
                // As the Zipkin server reads it: an all-zero parent id (what
                // opentelemetry-zipkin sends for a root) is no parent.
                parent_id: text("parentId").filter(|id| id.bytes().any(|b| b != b'0')),
                name: text("name")?,
                kind: text("kind"),
                service: span
                    .get("localEndpoint")
                    .and_then(|e| e.get("serviceName"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                tags: span
                    .get("tags")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            })
        })
        .collect()
}

impl ZipkinReceiver {
    /// Listen on a free loopback port.
    pub async fn start() -> Self {
        let received = Arc::new(Received::default());
        let shared = received.clone();
        let server = crate::http::serve(move |path: String, body: Bytes| {
            let received = shared.clone();
            async move {
                let spans = (path == "/api/v2/spans").then(|| decode(&body)).flatten();
                let status = match spans {
                    Some(spans) => {
                        received.spans.lock().unwrap().extend(spans);
                        received.arrived.notify_waiters();
                        202
                    }
                    None => 400,
                };
                (status, "text/plain", Bytes::new())
            }
        })
        .await;
        Self { server, received }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/api/v2/spans", self.server.addr)
    }

    /// The spans received once `done` holds of them (or `timeout` passed).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ZipkinSpan]) -> bool,
    ) -> Vec<ZipkinSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.received.arrived.notified();
            {
                let spans = self.received.spans.lock().unwrap();
                if done(&spans) || tokio::time::Instant::now() >= deadline {
                    return spans.clone();
                }
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }
}

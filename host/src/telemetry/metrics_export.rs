//! Periodic OTLP export of [`Metrics`](super::metrics::Metrics), over gRPC or HTTP/protobuf
//! like the traces, on the host's Tokio runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use prost::Message as _;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::INSTRUMENTATION_SCOPE;
use super::config::{MetricsConfig, Protocol};
use super::metrics::Metrics;

/// Whether an exemplar's trace may be linked (tail sampling kept it).
pub type ExemplarFilter = Arc<dyn Fn(&[u8; 16]) -> bool + Send + Sync>;

/// What the metrics exporter has done so far.
#[derive(Debug, Default)]
pub struct MetricsCounters {
    /// Export requests the backend accepted.
    pub exports: AtomicU64,
    /// Export requests that failed or timed out.
    pub failed_exports: AtomicU64,
    /// Why the export stopped, once the endpoint said it takes no metrics.
    pub stopped: std::sync::OnceLock<String>,
}

/// Why an export failed.
enum ExportError {
    /// The endpoint does not take metrics at all: gRPC `UNIMPLEMENTED`, HTTP 404, 405 or
    /// 501 — a trace-only backend (Jaeger, Tempo, Phoenix) where the traces go.
    Unsupported(String),
    /// Anything else (down, slow, refusing this once): the next export tries again.
    Failed(String),
}

enum Control {
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// The handle through which the host flushes and reads the metrics export.
#[derive(Debug, Clone)]
pub struct MetricsPipeline {
    /// Where metrics go, every how often.
    pub description: String,
    /// Its counters.
    pub counters: Arc<MetricsCounters>,
    control: mpsc::UnboundedSender<Control>,
}

impl MetricsPipeline {
    /// Export now; returns once the backend answered.
    pub async fn flush(&self) {
        super::batch::request(&self.control, Control::Flush).await;
    }

    /// Export a last time and stop.
    pub async fn shutdown(&self) {
        super::batch::request(&self.control, Control::Shutdown).await;
    }
}

enum Transport {
    Grpc {
        client: Box<MetricsServiceClient<tonic::transport::Channel>>,
        metadata: tonic::metadata::MetadataMap,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: Vec<(String, String)>,
    },
}

impl Transport {
    async fn send(&mut self, request: ExportMetricsServiceRequest) -> Result<(), ExportError> {
        match self {
            Transport::Grpc { client, metadata } => {
                let mut request = tonic::Request::new(request);
                *request.metadata_mut() = metadata.clone();
                client.export(request).await.map(drop).map_err(|status| {
                    let reason = format!("{:?}: {}", status.code(), status.message());
                    if status.code() == tonic::Code::Unimplemented {
                        ExportError::Unsupported(reason)
                    } else {
                        ExportError::Failed(reason)
                    }
                })
            }
            Transport::Http {
                client,
                url,
                headers,
            } => {
                let mut builder = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec());
                for (key, value) in headers.iter() {
                    builder = builder.header(key.as_str(), value.as_str());
                }
                let response = builder
                    .send()
                    .await
                    .map_err(|e| ExportError::Failed(e.to_string()))?;
                let status = response.status();
                let reason = format!("HTTP {status}");
                match status.as_u16() {
                    _ if status.is_success() => Ok(()),
                    404 | 405 | 501 => Err(ExportError::Unsupported(reason)),
                    _ => Err(ExportError::Failed(reason)),
                }
            }
        }
    }
}

/// The traces' resource (service name, resource attributes, SDK attributes) in OTLP form,
/// so metrics and traces name the same service.
pub fn resource(resource: &opentelemetry_sdk::Resource) -> Resource {
    let converted = ResourceAttributesWithSchema::from(resource);
    Resource {
        attributes: converted.attributes.0,
        ..Default::default()
    }
}

/// Why the metrics exporter could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MetricsExportError {
    /// The endpoint is not a URL tonic accepts.
    #[error("invalid gRPC endpoint")]
    Endpoint(#[from] tonic::transport::Error),
    /// A header that is not valid gRPC metadata.
    #[error("header {0:?} is not valid gRPC metadata")]
    Header(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[from] reqwest::Error),
}

/// Start exporting `metrics` every `config.interval` on `runtime`.
pub fn spawn(
    metrics: Arc<Metrics>,
    config: &MetricsConfig,
    protocol: Protocol,
    headers: &[(String, String)],
    resource: Resource,
    keep: ExemplarFilter,
    runtime: &Handle,
) -> Result<MetricsPipeline, MetricsExportError> {
    let _entered = runtime.enter();
    let transport = match protocol {
        Protocol::Grpc => {
            let channel = tonic::transport::Endpoint::from_shared(config.endpoint.clone())?
                .timeout(config.timeout)
                .connect_lazy();
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (key, value) in headers {
                let name =
                    tonic::metadata::MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes())
                        .map_err(|_| MetricsExportError::Header(key.clone()))?;
                let value = tonic::metadata::MetadataValue::try_from(value.as_str())
                    .map_err(|_| MetricsExportError::Header(key.clone()))?;
                metadata.insert(name, value);
            }
            Transport::Grpc {
                client: Box::new(MetricsServiceClient::new(channel)),
                metadata,
            }
        }
        Protocol::HttpProtobuf => Transport::Http {
            client: reqwest::Client::builder().timeout(config.timeout).build()?,
            url: config.endpoint.clone(),
            headers: headers.to_vec(),
        },
    };
    let (control, requests) = mpsc::unbounded_channel();
    let counters = Arc::new(MetricsCounters::default());
    let pipeline = MetricsPipeline {
        description: format!(
            "OTLP {protocol} {} every {} ms",
            config.endpoint,
            config.interval.as_millis()
        ),
        counters: counters.clone(),
        control,
    };
    let worker = Worker {
        metrics,
        transport,
        resource,
        keep,
        counters,
        interval: config.interval,
        timeout: config.timeout,
        description: pipeline.description.clone(),
        endpoint: config.endpoint.clone(),
        warned: false,
    };
    runtime.spawn(worker.run(requests));
    Ok(pipeline)
}

struct Worker {
    metrics: Arc<Metrics>,
    transport: Transport,
    resource: Resource,
    keep: ExemplarFilter,
    counters: Arc<MetricsCounters>,
    interval: Duration,
    timeout: Duration,
    description: String,
    endpoint: String,
    warned: bool,
}

impl Worker {
    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Control>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: nothing is recorded yet.
        ticker.tick().await;
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(Control::Flush(ack)) => {
                        self.export().await;
                        let _ = ack.send(());
                    }
                    Some(Control::Shutdown(ack)) => {
                        self.export().await;
                        let _ = ack.send(());
                        return;
                    }
                    None => return,
                },
                _ = ticker.tick() => self.export().await,
            }
        }
    }

    async fn export(&mut self) {
        // Until something is measured (a command that serves no call) there is nothing
        // to say, and a backend that is down need not be warned about.
        if self.metrics.is_empty() || self.counters.stopped.get().is_some() {
            return;
        }
        let request =
            self.metrics
                .collect(self.resource.clone(), INSTRUMENTATION_SCOPE, &*self.keep);
        match tokio::time::timeout(self.timeout, self.transport.send(request)).await {
            Ok(Ok(())) => {
                self.counters.exports.fetch_add(1, Ordering::Relaxed);
                self.warned = false;
            }
            Ok(Err(ExportError::Unsupported(reason))) => {
                self.counters.failed_exports.fetch_add(1, Ordering::Relaxed);
                // Asking again every interval would only warn again: stop, say so once.
                let stopped = format!(
                    "{} takes no metrics ({reason}): a trace-only backend",
                    self.endpoint
                );
                tracing::warn!(
                    "metrics export stopped: {stopped}. Traces still go there; to send \
                     metrics elsewhere set OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, or turn them \
                     off with WW_OTEL_METRICS=false"
                );
                let _ = self.counters.stopped.set(stopped);
            }
            outcome => {
                self.counters.failed_exports.fetch_add(1, Ordering::Relaxed);
                // Once per run of failures: the next export retries with every count.
                if !self.warned {
                    let reason = match outcome {
                        Ok(Err(ExportError::Failed(e) | ExportError::Unsupported(e))) => e,
                        _ => format!("no answer within {:?}", self.timeout),
                    };
                    tracing::warn!("metrics export to {} failed: {reason}", self.description);
                    self.warned = true;
                }
            }
        }
    }
}

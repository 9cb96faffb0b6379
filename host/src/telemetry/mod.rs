//! The telemetry pipeline: the tracer provider the host owns, its exporters (OTLP gRPC,
//! OTLP HTTP/protobuf, console tree), head sampling, and the counters `memory_stats`
//! reports.

pub mod batch;
pub mod config;
pub mod console;
pub mod ids;
pub mod metrics;
pub mod metrics_export;
pub mod tail;
pub mod zipkin;

/// The span attributes an X-Ray segment carries as annotations (indexed: filter
/// expressions can search by them); the rest are metadata.
pub const XRAY_ANNOTATIONS: &[&str] = &[
    "gen_ai.tool.name",
    "gen_ai.operation.name",
    "mcp.method.name",
    "mcp.session.id",
    "session.id",
    "ww.component",
    "ww.error.code",
    "error.type",
];

use opentelemetry_aws::xray_exporter::daemon_client::XrayDaemonClient;
use opentelemetry_aws::xray_exporter::{SegmentTranslator, XrayExporter};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter};
use tokio::runtime::Handle;

pub use batch::{ExportCounters, Pipeline};
pub use config::{
    BatchConfig, ConfigError, MetricsConfig, OtlpConfig, Protocol, SamplerConfig, SpanNames,
    TelemetryConfig, Vars, ZipkinConfig,
};
pub use console::{ConsoleSink, ConsoleTreeExporter};
pub use metrics::Metrics;
pub use metrics_export::MetricsPipeline;
pub use tail::{KeptTraces, TailConfig, TailCounters, TailSampler};

/// The instrumentation scope of every span the host creates.
pub const INSTRUMENTATION_SCOPE: &str = "ww-memory";

/// The console tree is for people watching: print soon after a trace ends.
const CONSOLE_SCHEDULE_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// The pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A bad setting.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The OTLP exporter could not be created.
    #[error("cannot create the exporter for {endpoint}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What the tracing capability dropped or repaired because guest input broke a limit.
#[derive(Debug, Default)]
pub struct GuestLimitCounters {
    /// Names, keys and values cut to their limit.
    pub truncated: AtomicU64,
    /// Attributes beyond the per-span limit.
    pub dropped_attributes: AtomicU64,
    /// Events beyond the per-span limit.
    pub dropped_events: AtomicU64,
    /// Links beyond the per-span limit.
    pub dropped_links: AtomicU64,
    /// Spans refused because the request had too many open.
    pub refused_spans: AtomicU64,
    /// Calls naming a span that is not open (ended twice, never existed).
    pub invalid_handles: AtomicU64,
    /// Remote parents that were not a valid `traceparent`.
    pub invalid_parents: AtomicU64,
    /// Spans still open when their request ended, ended by the host.
    pub unclosed_spans: AtomicU64,
    /// Baggage entries refused.
    pub refused_baggage: AtomicU64,
    /// Metric measurements refused (bad name, unit, kind or value; too many instruments).
    pub refused_measurements: AtomicU64,
    /// Guest-minted spans refused (`wasi:otel`): an id that is malformed, already open,
    /// or of another trace than the request's.
    pub foreign_spans: AtomicU64,
}

/// A snapshot for `memory_stats` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryStats {
    /// Whether spans are recorded.
    pub enabled: bool,
    /// One description per exporter.
    pub exporters: Vec<String>,
    /// The sampler.
    pub sampler: String,
    /// Spans accepted by the exporters (summed).
    pub spans_exported: u64,
    /// Spans lost (summed over exporters).
    pub spans_dropped: u64,
    /// Guest-input repairs, by kind.
    pub guest_limits: Vec<(&'static str, u64)>,
    /// Tail sampling decisions and buffer, when it is on.
    pub tail: Option<Vec<(&'static str, u64)>>,
    /// Where metrics go and how their exports went, when they are on.
    pub metrics: Option<MetricsExportStats>,
}

impl TelemetryStats {
    /// The guest-input counter `name` (`None`: no such counter).
    pub fn guest_limit(&self, name: &str) -> Option<u64> {
        self.guest_limits
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// The metrics export's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsExportStats {
    /// Where, every how often.
    pub description: String,
    /// Exports the backend accepted.
    pub exports: u64,
    /// Exports that failed.
    pub failed_exports: u64,
    /// Why the export stopped, when the endpoint takes no metrics.
    pub stopped: Option<String>,
}

/// The host's telemetry: one tracer provider, its pipelines and counters.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    recording: bool,
    sampler: String,
    pipelines: Vec<Pipeline>,
    tail: Option<Arc<TailCounters>>,
    metrics: Option<Arc<Metrics>>,
    metrics_pipeline: Option<MetricsPipeline>,
    next_handle: AtomicU64,
    span_names: SpanNames,
    /// `OTEL_PROPAGATORS` names `xray`.
    xray_propagation: bool,
    capture_content: bool,
    /// Guest-input limit counters.
    pub guest_limits: GuestLimitCounters,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("recording", &self.recording)
            .field("pipelines", &self.pipelines)
            .finish()
    }
}

fn sdk_sampler(config: &SamplerConfig) -> Sampler {
    match *config {
        SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
        SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
        SamplerConfig::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
        SamplerConfig::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerConfig::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerConfig::ParentBasedTraceIdRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}

/// Starts one more export pipeline on a runtime.
type SpawnPipeline = Box<dyn FnOnce(&BatchConfig, &Handle) -> (batch::BatchProcessor, Pipeline)>;

/// Builds a [`Telemetry`] from a configuration, optionally with extra exporters
/// (benchmarks use a no-op one) and a console sink other than stderr (tests).
pub struct TelemetryBuilder {
    config: TelemetryConfig,
    console_sink: Option<ConsoleSink>,
    extra: Vec<SpawnPipeline>,
}

impl TelemetryBuilder {
    /// Print console trees to `sink` instead of stderr.
    pub fn console_sink(mut self, sink: ConsoleSink) -> Self {
        self.console_sink = Some(sink);
        self
    }

    /// Also export every span through `exporter` (batched like the others).
    pub fn with_exporter<E: SpanExporter + 'static>(mut self, name: &str, exporter: E) -> Self {
        let name = name.to_owned();
        self.extra.push(Box::new(move |batch, runtime| {
            batch::BatchProcessor::spawn(exporter, batch, name, runtime)
        }));
        self
    }

    /// Build the pipeline; export tasks run on `runtime`.
    pub fn build(self, runtime: &Handle) -> Result<Arc<Telemetry>, TelemetryError> {
        let config = self.config;
        // tonic's channel needs the runtime's reactor even to be created.
        let _entered = runtime.enter();
        let mut processors = Vec::new();
        if let Some(otlp) = &config.otlp {
            let description = format!("OTLP {} {}", otlp.protocol, otlp.endpoint);
            let processor = match otlp.protocol {
                Protocol::Grpc => {
                    let mut metadata = tonic::metadata::MetadataMap::new();
                    for (key, value) in &otlp.headers {
                        let parsed_key = tonic::metadata::MetadataKey::from_bytes(
                            key.to_ascii_lowercase().as_bytes(),
                        );
                        let parsed_value = tonic::metadata::MetadataValue::try_from(value.as_str());
                        match (parsed_key, parsed_value) {
                            (Ok(k), Ok(v)) => {
                                metadata.insert(k, v);
                            }
                            _ => {
                                return Err(ConfigError::Invalid {
                                    var: "OTEL_EXPORTER_OTLP_HEADERS".to_owned(),
                                    value: key.clone(),
                                    reason: "not a valid gRPC metadata entry".to_owned(),
                                }
                                .into());
                            }
                        }
                    }
                    let exporter = opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(&otlp.endpoint)
                        .with_timeout(config.batch.export_timeout)
                        .with_metadata(metadata)
                        .build()
                        .map_err(|e| TelemetryError::Exporter {
                            endpoint: otlp.endpoint.clone(),
                            source: Box::new(e),
                        })?;
                    batch::BatchProcessor::spawn(exporter, &config.batch, description, runtime)
                }
                Protocol::HttpProtobuf => {
                    let exporter = opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .with_endpoint(&otlp.endpoint)
                        .with_timeout(config.batch.export_timeout)
                        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                        .with_headers(otlp.headers.iter().cloned().collect())
                        .build()
                        .map_err(|e| TelemetryError::Exporter {
                            endpoint: otlp.endpoint.clone(),
                            source: Box::new(e),
                        })?;
                    batch::BatchProcessor::spawn(exporter, &config.batch, description, runtime)
                }
            };
            processors.push(processor);
        }
        if let Some(zipkin) = &config.zipkin {
            let exporter =
                zipkin::ZipkinExporter::new(&zipkin.endpoint, zipkin.timeout).map_err(|e| {
                    TelemetryError::Exporter {
                        endpoint: zipkin.endpoint.clone(),
                        source: Box::new(e),
                    }
                })?;
            processors.push(batch::BatchProcessor::spawn(
                exporter,
                &config.batch,
                format!("Zipkin {}", zipkin.endpoint),
                runtime,
            ));
        }
        if let Some(xray) = &config.xray {
            // The contrib crate's exporter: spans become segment documents (SERVER spans
            // segments, the others subsegments), one UDP datagram each to the daemon.
            let client =
                XrayDaemonClient::new(xray.daemon).map_err(|e| TelemetryError::Exporter {
                    endpoint: format!("udp://{}", xray.daemon),
                    source: Box::new(e),
                })?;
            // What X-Ray can search by (annotations: at most 50 a document, scalar
            // values); every other attribute goes along as metadata.
            let mut translator = SegmentTranslator::new().metadata_all_attrs();
            for key in XRAY_ANNOTATIONS {
                translator = translator.with_indexed_attr((*key).to_owned());
            }
            processors.push(batch::BatchProcessor::spawn(
                XrayExporter::new(client).with_translator(translator),
                &config.batch,
                format!("X-Ray daemon udp://{}", xray.daemon),
                runtime,
            ));
        }
        if config.console {
            let exporter = match self.console_sink {
                Some(sink) => ConsoleTreeExporter::new(sink),
                None => ConsoleTreeExporter::stderr(),
            };
            let batch = BatchConfig {
                scheduled_delay: CONSOLE_SCHEDULE_DELAY,
                ..config.batch.clone()
            };
            processors.push(batch::BatchProcessor::spawn(
                exporter,
                &batch,
                "console (stderr)".to_owned(),
                runtime,
            ));
        }
        for make in self.extra {
            processors.push(make(&config.batch, runtime));
        }

        let recording = !processors.is_empty();
        // Disabled still hands out valid (unsampled) contexts: the SDK with an always-off
        // sampler does exactly that, cheaply, and nothing reaches a processor.
        let sampler = if recording {
            sdk_sampler(&config.sampler)
        } else {
            Sampler::AlwaysOff
        };
        let mut resource = Resource::builder().with_service_name(config.service_name.clone());
        for (key, value) in &config.resource_attributes {
            resource = resource.with_attribute(KeyValue::new(key.clone(), value.clone()));
        }
        let resource = resource.build();
        let mut builder = SdkTracerProvider::builder()
            .with_id_generator(ids::HostIds::new(config.xray_ids))
            .with_sampler(sampler)
            .with_resource(resource.clone());
        let (processors, pipelines): (Vec<_>, Vec<_>) = processors.into_iter().unzip();
        let mut tail = None;
        let kept = KeptTraces::default();
        match &config.tail {
            Some(tail_config) if recording => {
                let counters = Arc::new(TailCounters::default());
                tail = Some(counters.clone());
                builder = builder.with_span_processor(TailSampler::new(
                    tail_config.clone(),
                    counters,
                    kept.clone(),
                    processors,
                ));
            }
            _ => {
                for processor in processors {
                    builder = builder.with_span_processor(processor);
                }
            }
        }
        let provider = builder.build();
        let tracer = provider.tracer(INSTRUMENTATION_SCOPE);

        let (mut metrics, mut metrics_pipeline) = (None, None);
        if let (Some(metrics_config), Some(otlp)) = (&config.metrics, &config.otlp) {
            let instruments = Arc::new(Metrics::new());
            // An exemplar links to a trace only if that trace is exported.
            let keep: metrics_export::ExemplarFilter = match tail {
                Some(_) => Arc::new(move |id: &[u8; 16]| {
                    kept.contains(opentelemetry::trace::TraceId::from_bytes(*id))
                }),
                None => Arc::new(|_: &[u8; 16]| true),
            };
            let pipeline = metrics_export::spawn(
                instruments.clone(),
                metrics_config,
                otlp.protocol,
                &otlp.headers,
                metrics_export::resource(&resource),
                keep,
                runtime,
            )
            .map_err(|e| TelemetryError::Exporter {
                endpoint: metrics_config.endpoint.clone(),
                source: Box::new(e),
            })?;
            observe_pipeline(&instruments, &pipelines, tail.clone());
            metrics = Some(instruments);
            metrics_pipeline = Some(pipeline);
        }
        Ok(Arc::new(Telemetry {
            provider,
            tracer,
            recording,
            sampler: if recording {
                config.sampler_description()
            } else {
                "always_off (tracing disabled)".to_owned()
            },
            pipelines,
            tail,
            metrics,
            metrics_pipeline,
            // 0 means "innermost span" in the WIT interface; handles start at 1.
            next_handle: AtomicU64::new(1),
            span_names: config.span_names,
            xray_propagation: config.xray_propagation,
            capture_content: config.capture_content,
            guest_limits: GuestLimitCounters::default(),
        }))
    }
}

/// The trace pipeline's own counts as metrics: spans exported and dropped per exporter,
/// and tail sampling's decisions.
fn observe_pipeline(metrics: &Metrics, pipelines: &[Pipeline], tail: Option<Arc<TailCounters>>) {
    use metrics::{AttrValue, Attributes, Observation};
    let pipelines: Vec<(String, Arc<ExportCounters>)> = pipelines
        .iter()
        .map(|p| (p.description.clone(), p.counters.clone()))
        .collect();
    metrics.observe(Box::new(move |out: &mut Vec<Observation>| {
        for (exporter, counters) in &pipelines {
            let attributes = Attributes::new(vec![(
                "ww.exporter".into(),
                AttrValue::from(exporter.clone()),
            )]);
            for (name, description, counter) in [
                (
                    "ww.telemetry.spans.exported",
                    "Spans the exporter accepted",
                    &counters.exported,
                ),
                (
                    "ww.telemetry.spans.dropped",
                    "Spans lost: queue full, or their export failed",
                    &counters.dropped,
                ),
            ] {
                out.push(Observation {
                    name,
                    unit: "{span}",
                    description,
                    attributes: attributes.clone(),
                    value: counter.load(Ordering::Relaxed),
                });
            }
        }
        if let Some(tail) = &tail {
            for (decision, value) in tail::decisions(tail) {
                out.push(Observation {
                    name: "ww.telemetry.tail.traces",
                    unit: "{trace}",
                    description: "Traces tail sampling decided on, by decision",
                    attributes: Attributes::new(vec![(
                        "ww.tail.decision".into(),
                        AttrValue::from(decision),
                    )]),
                    value,
                });
            }
        }
    }));
}

impl Telemetry {
    /// A builder for `config`.
    pub fn builder(config: TelemetryConfig) -> TelemetryBuilder {
        TelemetryBuilder {
            config,
            console_sink: None,
            extra: Vec::new(),
        }
    }

    /// The tracer every host span comes from.
    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// A span handle never handed out before, by any request.
    pub fn next_span_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether any exporter is configured.
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// How MCP request spans are named.
    pub fn span_names(&self) -> SpanNames {
        self.span_names
    }

    /// Whether the X-Ray propagator is on beside W3C: an incoming `X-Amzn-Trace-Id`
    /// continues its trace, outgoing HTTP carries one.
    pub fn xray_propagation(&self) -> bool {
        self.xray_propagation
    }

    /// Whether opt-in content (a memory search's query text) is recorded.
    pub fn captures_content(&self) -> bool {
        self.capture_content && self.recording
    }

    /// The instruments, when metrics are exported.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The pipelines, one per exporter.
    pub fn pipelines(&self) -> &[Pipeline] {
        &self.pipelines
    }

    /// Counters and settings for `memory_stats`.
    pub fn stats(&self) -> TelemetryStats {
        let sum = |f: fn(&ExportCounters) -> &AtomicU64| {
            self.pipelines
                .iter()
                .map(|p| f(&p.counters).load(Ordering::Relaxed))
                .sum()
        };
        let g = &self.guest_limits;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TelemetryStats {
            enabled: self.recording,
            exporters: self
                .pipelines
                .iter()
                .map(|p| p.description.clone())
                .collect(),
            sampler: self.sampler.clone(),
            spans_exported: sum(|c| &c.exported),
            spans_dropped: sum(|c| &c.dropped),
            guest_limits: vec![
                ("truncated", load(&g.truncated)),
                ("dropped_attributes", load(&g.dropped_attributes)),
                ("dropped_events", load(&g.dropped_events)),
                ("refused_spans", load(&g.refused_spans)),
                ("invalid_handles", load(&g.invalid_handles)),
                ("invalid_parents", load(&g.invalid_parents)),
                ("unclosed_spans", load(&g.unclosed_spans)),
                ("refused_baggage", load(&g.refused_baggage)),
                ("refused_measurements", load(&g.refused_measurements)),
                ("dropped_links", load(&g.dropped_links)),
                ("foreign_spans", load(&g.foreign_spans)),
            ],
            tail: self.tail.as_deref().map(tail::snapshot),
            metrics: self.metrics_pipeline.as_ref().map(|p| MetricsExportStats {
                description: p.description.clone(),
                exports: p.counters.exports.load(Ordering::Relaxed),
                failed_exports: p.counters.failed_exports.load(Ordering::Relaxed),
                stopped: p.counters.stopped.get().cloned(),
            }),
        }
    }

    /// Export everything finished so far, on every pipeline.
    pub async fn flush(&self) {
        for pipeline in &self.pipelines {
            pipeline.flush().await;
        }
        if let Some(pipeline) = &self.metrics_pipeline {
            pipeline.flush().await;
        }
    }

    /// Flush and stop every pipeline; logs what was dropped over the run.
    pub async fn shutdown(&self) {
        for pipeline in &self.pipelines {
            pipeline.shutdown().await;
        }
        if let Some(pipeline) = &self.metrics_pipeline {
            pipeline.shutdown().await;
        }
        let stats = self.stats();
        if stats.spans_dropped > 0 {
            tracing::warn!(
                "telemetry shut down: {} spans exported, {} dropped",
                stats.spans_exported,
                stats.spans_dropped
            );
        }
        // The processors already stopped; the provider's own shutdown only marks it.
        let _ = self.provider.shutdown();
    }
}

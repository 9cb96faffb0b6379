//! Telemetry configuration: `WW_OTEL_*` variables, their standard `OTEL_*`
//! twins, and a `.env` file. A `WW_` variable wins over its `OTEL_` twin; the process
//! environment wins over `.env`. A bad value is an error naming the variable.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use super::tail::TailConfig;

/// Default OTLP endpoint (gRPC).
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4317";
/// Default `service.name`.
pub const DEFAULT_SERVICE_NAME: &str = "world-weaver";
/// Default batch size per export.
pub const DEFAULT_MAX_EXPORT_BATCH_SIZE: usize = 512;
/// Default span queue length (at least 2048: a burst of requests must not drop spans).
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
/// Default delay between two scheduled exports (the OTel default).
pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(5000);
/// Default bound on one export call (the OTel default).
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(30_000);

/// A configuration variable that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable has a value we cannot accept.
    #[error("{var}={value:?} is not valid: {reason}")]
    Invalid {
        /// The variable's name, as the user set it.
        var: String,
        /// The value given.
        value: String,
        /// What is accepted instead.
        reason: String,
    },
    /// The `.env` file exists but cannot be read or parsed.
    #[error("cannot read {path}: {reason}")]
    DotEnv {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The OTLP wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC.
    Grpc,
    /// OTLP over HTTP with protobuf bodies.
    HttpProtobuf,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        })
    }
}

/// Head sampling (`always_on`, `always_off`, `traceidratio`, `parentbased_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerConfig {
    /// Record every trace.
    AlwaysOn,
    /// Record nothing.
    AlwaysOff,
    /// Record this share of traces, by trace id.
    TraceIdRatio(f64),
    /// Follow a sampled parent; roots always sampled.
    ParentBasedAlwaysOn,
    /// Follow a sampled parent; roots never sampled.
    ParentBasedAlwaysOff,
    /// Follow a sampled parent; roots by ratio.
    ParentBasedTraceIdRatio(f64),
}

impl fmt::Display for SamplerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SamplerConfig::AlwaysOn => f.write_str("always_on"),
            SamplerConfig::AlwaysOff => f.write_str("always_off"),
            SamplerConfig::TraceIdRatio(r) => write!(f, "traceidratio({r})"),
            SamplerConfig::ParentBasedAlwaysOn => f.write_str("parentbased_always_on"),
            SamplerConfig::ParentBasedAlwaysOff => f.write_str("parentbased_always_off"),
            SamplerConfig::ParentBasedTraceIdRatio(r) => write!(f, "parentbased_traceidratio({r})"),
        }
    }
}

/// Batching of finished spans before export (`OTEL_BSP_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Spans waiting for export; beyond this, new spans are dropped and counted.
    pub max_queue_size: usize,
    /// Spans per export call.
    pub max_export_batch_size: usize,
    /// Longest wait before a partial batch is exported.
    pub scheduled_delay: Duration,
    /// Bound on one export call.
    pub export_timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            max_export_batch_size: DEFAULT_MAX_EXPORT_BATCH_SIZE,
            scheduled_delay: DEFAULT_SCHEDULE_DELAY,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
        }
    }
}

/// Where OTLP export goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// For gRPC the collector's base URL; for HTTP the full `/v1/traces` URL.
    pub endpoint: String,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Extra headers or gRPC metadata (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
}

/// Where and how often metrics are exported (with the traces' protocol and headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// For gRPC the collector's base URL; for HTTP the full `/v1/metrics` URL.
    pub endpoint: String,
    /// Between two exports (`OTEL_METRIC_EXPORT_INTERVAL`).
    pub interval: Duration,
    /// Bound on one export (`OTEL_METRIC_EXPORT_TIMEOUT`).
    pub timeout: Duration,
}

/// Default metric export interval (the OTel default).
pub const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_millis(60_000);

/// The whole telemetry configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// OTLP export, when `WW_OTEL_ENABLED` is true (and the SDK is not disabled).
    pub otlp: Option<OtlpConfig>,
    /// Print each finished trace as a tree on stderr.
    pub console: bool,
    /// `service.name`.
    pub service_name: String,
    /// Other resource attributes (`OTEL_RESOURCE_ATTRIBUTES`).
    pub resource_attributes: Vec<(String, String)>,
    /// Head sampling.
    pub sampler: SamplerConfig,
    /// Batching.
    pub batch: BatchConfig,
    /// Tail sampling, when `WW_OTEL_TAIL_SAMPLING` is on.
    pub tail: Option<TailConfig>,
    /// Metrics export: with OTLP, unless `WW_OTEL_METRICS=false`.
    pub metrics: Option<MetricsConfig>,
    /// Zipkin export (`OTEL_TRACES_EXPORTER` naming `zipkin`).
    pub zipkin: Option<ZipkinConfig>,
    /// AWS X-Ray export to the daemon (`OTEL_TRACES_EXPORTER` naming `xray`).
    pub xray: Option<XrayConfig>,
    /// Trace ids X-Ray accepts (their first 32 bits the start time, in seconds): with the
    /// X-Ray exporter, or `WW_OTEL_ID_GENERATOR=xray` (for OTLP to an ADOT collector).
    pub xray_ids: bool,
    /// The X-Ray propagator beside W3C (`OTEL_PROPAGATORS` naming `xray`): an incoming
    /// `X-Amzn-Trace-Id` continues its trace, outgoing HTTP carries one.
    pub xray_propagation: bool,
    /// How MCP request spans are named (`WW_OTEL_SPAN_NAMES`).
    pub span_names: SpanNames,
    /// Record what the GenAI conventions make opt-in because it may be sensitive: a
    /// memory search's query text (`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`).
    pub capture_content: bool,
}

/// Where Zipkin spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipkinConfig {
    /// The collector's v2 spans URL (`OTEL_EXPORTER_ZIPKIN_ENDPOINT`).
    pub endpoint: String,
    /// Bound on one export (`OTEL_EXPORTER_ZIPKIN_TIMEOUT`).
    pub timeout: Duration,
}

/// Where X-Ray segment documents go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XrayConfig {
    /// The daemon's UDP address (`AWS_XRAY_DAEMON_ADDRESS`, `127.0.0.1:2000` by default).
    pub daemon: std::net::SocketAddr,
}

/// The X-Ray daemon's default address, as the AWS SDKs have it.
pub const DEFAULT_XRAY_DAEMON: &str = "127.0.0.1:2000";

/// The Zipkin collector's default, as the OpenTelemetry specification has it.
pub const DEFAULT_ZIPKIN_ENDPOINT: &str = "http://localhost:9411/api/v2/spans";

/// The specification's default bound on a Zipkin export.
pub const DEFAULT_ZIPKIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How an MCP request's SERVER span is named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SpanNames {
    /// `mcp.<tool>`, the original design's names (the default).
    #[default]
    Mcp,
    /// The MCP semantic conventions' `{mcp.method.name} {target}`, e.g.
    /// `tools/call recall_episodes`.
    Semconv,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp: None,
            console: false,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            resource_attributes: Vec::new(),
            sampler: SamplerConfig::ParentBasedAlwaysOn,
            batch: BatchConfig::default(),
            tail: None,
            metrics: None,
            zipkin: None,
            xray: None,
            xray_ids: false,
            xray_propagation: false,
            span_names: SpanNames::Mcp,
            capture_content: false,
        }
    }
}

/// Configuration variables from all sources, already layered.
#[derive(Debug, Clone, Default)]
pub struct Vars(HashMap<String, String>);

impl Vars {
    /// The process environment over the `.env` file at `dotenv` (if it exists).
    pub fn from_env_and_dotenv(dotenv: &Path) -> Result<Self, ConfigError> {
        Ok(Self::from_dotenv(dotenv)?.overlaid_by(Self(std::env::vars().collect())))
    }

    /// These variables with `over`'s on top (`over` wins where both set one).
    pub fn overlaid_by(mut self, over: Vars) -> Self {
        self.0.extend(over.0);
        self
    }

    /// The variables of a `.env` file; none if it does not exist.
    pub fn from_dotenv(path: &Path) -> Result<Self, ConfigError> {
        let iter = match dotenvy::from_path_iter(path) {
            Ok(iter) => iter,
            Err(e) if e.not_found() => return Ok(Self::default()),
            Err(e) => return Err(dotenv_error(path, &e)),
        };
        let mut vars = HashMap::new();
        for item in iter {
            let (key, value) = item.map_err(|e| dotenv_error(path, &e))?;
            vars.insert(key, value);
        }
        Ok(Self(vars))
    }

    /// Exactly these variables (tests, embedding).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The first of `names` that is set (and not empty), with its name.
    fn first<'a>(&'a self, names: &[&'a str]) -> Option<(&'a str, &'a str)> {
        names.iter().find_map(|name| {
            self.0
                .get(*name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (*name, v))
        })
    }
}

fn dotenv_error(path: &Path, e: &dotenvy::Error) -> ConfigError {
    ConfigError::DotEnv {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn invalid(var: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var: var.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(var, value, "expected true or false")),
    }
}

fn parse_count(var: &str, value: &str) -> Result<usize, ConfigError> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(invalid(var, value, "expected a positive whole number")),
    }
}

fn parse_millis(var: &str, value: &str) -> Result<Duration, ConfigError> {
    value
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| invalid(var, value, "expected milliseconds as a whole number"))
}

/// `key=value,key=value` with percent-encoded parts (the OTel list format).
fn parse_key_values(var: &str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut pairs = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(invalid(var, value, format!("{item:?} is not key=value")));
        };
        let decode = |s: &str| {
            percent_decode_str(s.trim())
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| invalid(var, value, "percent-encoding does not decode to UTF-8"))
        };
        let key = decode(k)?;
        if key.is_empty() {
            return Err(invalid(var, value, "empty key"));
        }
        pairs.push((key, decode(v)?));
    }
    Ok(pairs)
}

fn parse_endpoint(var: &str, value: &str) -> Result<http::Uri, ConfigError> {
    let uri: http::Uri = value
        .parse()
        .map_err(|e| invalid(var, value, format!("not a URL ({e})")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid(var, value, "expected an http:// or https:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid(var, value, "the URL has no host"));
    }
    Ok(uri)
}

fn parse_ratio(var: Option<(&str, &str)>) -> Result<f64, ConfigError> {
    let Some((var, value)) = var else {
        return Ok(1.0);
    };
    match value.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(invalid(var, value, "expected a ratio between 0 and 1")),
    }
}

/// Metrics go where the traces go: the same gRPC base URL, or `/v1/metrics` next to the
/// HTTP `/v1/traces`; `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` overrides.
fn parse_metrics(
    vars: &Vars,
    otlp: Option<&OtlpConfig>,
) -> Result<Option<MetricsConfig>, ConfigError> {
    let enabled = match vars.first(&["WW_OTEL_METRICS"]) {
        Some((var, value)) => parse_bool(var, value)?,
        None => true,
    };
    let mut interval = DEFAULT_METRIC_INTERVAL;
    if let Some((var, value)) = vars.first(&["OTEL_METRIC_EXPORT_INTERVAL"]) {
        interval = parse_millis(var, value)?;
        if interval.is_zero() {
            return Err(invalid(
                var,
                value,
                "expected a positive number of milliseconds",
            ));
        }
    }
    let mut timeout = DEFAULT_EXPORT_TIMEOUT;
    if let Some((var, value)) = vars.first(&["OTEL_METRIC_EXPORT_TIMEOUT"]) {
        timeout = parse_millis(var, value)?;
    }
    let own = match vars.first(&["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]) {
        Some((var, value)) => {
            parse_endpoint(var, value)?;
            Some(value.trim_end_matches('/').to_owned())
        }
        None => None,
    };
    let Some(otlp) = otlp.filter(|_| enabled) else {
        return Ok(None);
    };
    let endpoint = own.unwrap_or_else(|| match otlp.protocol {
        Protocol::Grpc => otlp.endpoint.clone(),
        Protocol::HttpProtobuf => match otlp.endpoint.strip_suffix("/v1/traces") {
            Some(base) => format!("{base}/v1/metrics"),
            None => format!("{}/v1/metrics", otlp.endpoint),
        },
    });
    Ok(Some(MetricsConfig {
        endpoint,
        interval,
        timeout,
    }))
}

/// The tail sampling variables; setting one of them without `WW_OTEL_TAIL_SAMPLING=true`
/// is an error rather than a setting silently ignored.
fn parse_tail(vars: &Vars) -> Result<Option<TailConfig>, ConfigError> {
    const SETTINGS: [&str; 4] = [
        "WW_OTEL_TAIL_RATIO",
        "WW_OTEL_TAIL_LATENCY_MS",
        "WW_OTEL_TAIL_MAX_TRACES",
        "WW_OTEL_TAIL_MAX_SPANS",
    ];
    let enabled = match vars.first(&["WW_OTEL_TAIL_SAMPLING"]) {
        Some((var, value)) => parse_bool(var, value)?,
        None => false,
    };
    if !enabled {
        return match SETTINGS.iter().find_map(|name| vars.first(&[name])) {
            Some((var, value)) => Err(invalid(
                var,
                value,
                "tail sampling is off: set WW_OTEL_TAIL_SAMPLING=true to use it",
            )),
            None => Ok(None),
        };
    }
    let mut tail = TailConfig::default();
    if let Some((var, value)) = vars.first(&["WW_OTEL_TAIL_RATIO"]) {
        tail.ratio = parse_ratio(Some((var, value)))?;
    }
    if let Some((var, value)) = vars.first(&["WW_OTEL_TAIL_LATENCY_MS"]) {
        tail.latency = parse_millis(var, value)?;
    }
    if let Some((var, value)) = vars.first(&["WW_OTEL_TAIL_MAX_TRACES"]) {
        tail.max_traces = parse_count(var, value)?;
    }
    if let Some((var, value)) = vars.first(&["WW_OTEL_TAIL_MAX_SPANS"]) {
        tail.max_spans = parse_count(var, value)?;
    }
    Ok(Some(tail))
}

/// The X-Ray daemon's UDP address: `host:port`, or the daemon's own two-address form
/// `tcp:host:port udp:host:port` (the UDP one is taken). A name is resolved once, here.
fn parse_daemon(var: &str, value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs as _;
    let udp = value
        .split_whitespace()
        .find_map(|part| part.strip_prefix("udp:"))
        .unwrap_or(value.trim());
    udp.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            invalid(
                var,
                value,
                "expected host:port, or tcp:host:port udp:host:port",
            )
        })
}

impl TelemetryConfig {
    /// From the process environment and `./.env`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::from_env_and_dotenv(Path::new(".env"))?)
    }

    /// From already-layered variables.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let mut config = TelemetryConfig::default();

        let sdk_disabled = match vars.first(&["OTEL_SDK_DISABLED"]) {
            Some((var, value)) => parse_bool(var, value)?,
            None => false,
        };
        let mut enabled = match vars.first(&["WW_OTEL_ENABLED"]) {
            Some((var, value)) => parse_bool(var, value)?,
            None => false,
        };
        config.console = match vars.first(&["WW_OTEL_CONSOLE"]) {
            Some((var, value)) => parse_bool(var, value)?,
            None => false,
        };
        // The standard choice of exporters, when given, is the whole choice.
        let (mut zipkin, mut xray) = (false, false);
        if let Some((var, value)) = vars.first(&["WW_OTEL_EXPORTER", "OTEL_TRACES_EXPORTER"]) {
            let chosen: Vec<&str> = value.split(',').map(str::trim).collect();
            for name in &chosen {
                if !["otlp", "zipkin", "xray", "console", "none"].contains(name) {
                    return Err(invalid(
                        var,
                        value,
                        "expected a list of otlp, zipkin, xray, console, or none",
                    ));
                }
            }
            if chosen.contains(&"none") && chosen.len() > 1 {
                return Err(invalid(
                    var,
                    value,
                    "none cannot be combined with an exporter",
                ));
            }
            enabled = chosen.contains(&"otlp");
            config.console = chosen.contains(&"console");
            zipkin = chosen.contains(&"zipkin");
            xray = chosen.contains(&"xray");
        }
        config.console &= !sdk_disabled;
        let zipkin_endpoint = vars.first(&["OTEL_EXPORTER_ZIPKIN_ENDPOINT"]);
        let zipkin_endpoint = match zipkin_endpoint {
            Some((var, value)) => {
                parse_endpoint(var, value)?;
                value.to_owned()
            }
            None => DEFAULT_ZIPKIN_ENDPOINT.to_owned(),
        };
        let zipkin_timeout = match vars.first(&["OTEL_EXPORTER_ZIPKIN_TIMEOUT"]) {
            Some((var, value)) => parse_millis(var, value)?,
            None => DEFAULT_ZIPKIN_TIMEOUT,
        };
        if zipkin && !sdk_disabled {
            config.zipkin = Some(ZipkinConfig {
                endpoint: zipkin_endpoint,
                timeout: zipkin_timeout,
            });
        }
        // Read only when X-Ray is chosen: AWS environments set it for their own SDKs,
        // and a name there is resolved here.
        if xray && !sdk_disabled {
            let daemon = match vars.first(&["AWS_XRAY_DAEMON_ADDRESS"]) {
                Some((var, value)) => parse_daemon(var, value)?,
                None => parse_daemon("AWS_XRAY_DAEMON_ADDRESS", DEFAULT_XRAY_DAEMON)?,
            };
            config.xray = Some(XrayConfig { daemon });
        }
        config.xray_ids = config.xray.is_some()
            || match vars.first(&["WW_OTEL_ID_GENERATOR"]) {
                None | Some((_, "random")) => false,
                Some((_, "xray")) => true,
                Some((var, value)) => return Err(invalid(var, value, "expected random or xray")),
            };
        if let Some((var, value)) = vars.first(&["OTEL_PROPAGATORS"]) {
            let chosen: Vec<&str> = value.split(',').map(str::trim).collect();
            if let Some(unknown) = chosen
                .iter()
                .find(|name| !["tracecontext", "baggage", "xray", "none"].contains(name))
            {
                return Err(invalid(
                    var,
                    value,
                    format!(
                        "{unknown}: expected a list of tracecontext, baggage, xray (W3C trace \
                         context and baggage are always read, as MCP's _meta carries them)"
                    ),
                ));
            }
            config.xray_propagation = chosen.contains(&"xray");
        }

        // Parse the endpoint settings even when export is off, so a typo is reported
        // the day it is made rather than the day export is switched on.
        let endpoint = vars.first(&["WW_OTEL_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]);
        let uri = match endpoint {
            Some((var, value)) => parse_endpoint(var, value)?,
            None => parse_endpoint("WW_OTEL_ENDPOINT", DEFAULT_ENDPOINT)?,
        };
        let protocol = match vars.first(&["WW_OTEL_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]) {
            Some((_, "grpc")) => Protocol::Grpc,
            Some((_, "http/protobuf")) => Protocol::HttpProtobuf,
            Some((var, value)) => {
                return Err(invalid(var, value, "expected grpc or http/protobuf"));
            }
            // The conventional OTLP/HTTP port says which protocol is meant.
            None if uri.port_u16() == Some(4318) => Protocol::HttpProtobuf,
            None => Protocol::Grpc,
        };
        let headers = match vars.first(&["OTEL_EXPORTER_OTLP_HEADERS"]) {
            Some((var, value)) => parse_key_values(var, value)?,
            None => Vec::new(),
        };
        if enabled && !sdk_disabled {
            let given = endpoint.map_or(DEFAULT_ENDPOINT, |(_, value)| value);
            let mut endpoint = given.trim_end_matches('/').to_owned();
            // Like OTEL_EXPORTER_OTLP_ENDPOINT, a bare base URL means the standard path.
            if protocol == Protocol::HttpProtobuf && matches!(uri.path(), "" | "/") {
                endpoint.push_str("/v1/traces");
            }
            config.otlp = Some(OtlpConfig {
                endpoint,
                protocol,
                headers,
            });
        }

        let mut resource = match vars.first(&["OTEL_RESOURCE_ATTRIBUTES"]) {
            Some((var, value)) => parse_key_values(var, value)?,
            None => Vec::new(),
        };
        let from_resource = resource
            .iter()
            .position(|(k, _)| k == "service.name")
            .map(|i| resource.remove(i).1);
        config.service_name = match vars.first(&["WW_OTEL_SERVICE_NAME", "OTEL_SERVICE_NAME"]) {
            Some((_, name)) => name.to_owned(),
            None => from_resource.unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned()),
        };
        config.resource_attributes = resource;

        let arg = vars.first(&["WW_OTEL_SAMPLER_ARG", "OTEL_TRACES_SAMPLER_ARG"]);
        config.sampler = match vars.first(&["WW_OTEL_SAMPLER", "OTEL_TRACES_SAMPLER"]) {
            None | Some((_, "parentbased_always_on")) => SamplerConfig::ParentBasedAlwaysOn,
            Some((_, "always_on")) => SamplerConfig::AlwaysOn,
            Some((_, "always_off")) => SamplerConfig::AlwaysOff,
            Some((_, "traceidratio")) => SamplerConfig::TraceIdRatio(parse_ratio(arg)?),
            Some((_, "parentbased_always_off")) => SamplerConfig::ParentBasedAlwaysOff,
            Some((_, "parentbased_traceidratio")) => {
                SamplerConfig::ParentBasedTraceIdRatio(parse_ratio(arg)?)
            }
            Some((var, value)) => {
                return Err(invalid(
                    var,
                    value,
                    "expected always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio",
                ));
            }
        };

        let batch = &mut config.batch;
        if let Some((var, value)) = vars.first(&["OTEL_BSP_MAX_QUEUE_SIZE"]) {
            batch.max_queue_size = parse_count(var, value)?;
        }
        if let Some((var, value)) = vars.first(&["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"]) {
            batch.max_export_batch_size = parse_count(var, value)?;
            if batch.max_export_batch_size > batch.max_queue_size {
                return Err(invalid(
                    var,
                    value,
                    "must not exceed OTEL_BSP_MAX_QUEUE_SIZE",
                ));
            }
        }
        if let Some((var, value)) = vars.first(&["OTEL_BSP_SCHEDULE_DELAY"]) {
            batch.scheduled_delay = parse_millis(var, value)?;
        }
        if let Some((var, value)) = vars.first(&["OTEL_BSP_EXPORT_TIMEOUT"]) {
            batch.export_timeout = parse_millis(var, value)?;
        }
        config.tail = parse_tail(vars)?;
        config.metrics = parse_metrics(vars, config.otlp.as_ref())?;
        config.span_names = match vars.first(&["WW_OTEL_SPAN_NAMES"]) {
            None | Some((_, "mcp")) => SpanNames::Mcp,
            Some((_, "semconv")) => SpanNames::Semconv,
            Some((var, value)) => return Err(invalid(var, value, "expected mcp or semconv")),
        };
        config.capture_content =
            match vars.first(&["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"]) {
                Some((var, value)) => parse_bool(var, value)?,
                None => false,
            };
        Ok(config)
    }

    /// Whether spans are recorded at all (some exporter is on).
    pub fn is_recording(&self) -> bool {
        self.otlp.is_some() || self.console || self.zipkin.is_some() || self.xray.is_some()
    }

    /// The one start-up line saying where traces go.
    pub fn describe(&self) -> String {
        let mut sinks = Vec::new();
        if let Some(otlp) = &self.otlp {
            let mut sink = format!("OTLP {} to {}", otlp.protocol, otlp.endpoint);
            if let Some(metrics) = &self.metrics {
                sink.push_str(&format!(
                    " (metrics to {} every {} s)",
                    metrics.endpoint,
                    metrics.interval.as_secs_f64()
                ));
            }
            sinks.push(sink);
        }
        if let Some(zipkin) = &self.zipkin {
            sinks.push(format!("Zipkin {}", zipkin.endpoint));
        }
        if let Some(xray) = &self.xray {
            sinks.push(format!("the X-Ray daemon at udp://{}", xray.daemon));
        }
        if self.console {
            sinks.push("the console (stderr)".to_owned());
        }
        if sinks.is_empty() {
            return "tracing disabled (set WW_OTEL_ENABLED=true, WW_OTEL_CONSOLE=true or \
                    OTEL_TRACES_EXPORTER)"
                .to_owned();
        }
        format!(
            "tracing to {} as service {:?}, sampler {}",
            sinks.join(" and "),
            self.service_name,
            self.sampler_description()
        )
    }

    /// The head sampler, and the tail sampler after it when on.
    pub fn sampler_description(&self) -> String {
        match &self.tail {
            Some(tail) => format!("{} then {tail}", self.sampler),
            None => self.sampler.to_string(),
        }
    }
}

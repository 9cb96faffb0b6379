//! Metrics with exemplars: the host's instruments (tool, store operation and component
//! call durations), the counters it already keeps (spans exported and dropped, tail
//! sampling decisions, instantiations, traps) observed at collection, and the counters and
//! histograms guests record through the WIT `metrics` interface. Exported over OTLP next
//! to the traces, cumulative.
//!
//! Written here rather than with the SDK's `SdkMeterProvider`: OpenTelemetry Rust 0.33
//! does not record exemplars (its data points always carry none, and their fields are
//! crate-private, so an exporter cannot add them). Exemplars are the point of this
//! module: each histogram bucket keeps the last measurement made inside a sampled span,
//! with that span's trace and span id, so a slow bucket links to a trace of it. The data
//! model and the wire format are OTLP's own (`opentelemetry-proto`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use opentelemetry::trace::SpanContext;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue as ProtoKeyValue, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar as ProtoExemplar, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, exemplar, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// Bucket bounds for durations in seconds: from 10 µs (a call into a component) to 10 s,
/// roughly 1-2.5-5 per decade, so sub-millisecond operations are not all in one bucket.
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// [`DURATION_BUCKETS`] for a guest measuring in milliseconds.
pub const MILLISECOND_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
    1000.0, 2500.0, 5000.0, 10000.0,
];

/// Bucket bounds for other guest histograms (the guest says what it measures).
pub const GUEST_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Attribute sets one instrument keeps; past it, measurements go to the overflow set
/// (`otel.metric.overflow=true`, as the OpenTelemetry specification has it).
pub const MAX_POINTS_PER_INSTRUMENT: usize = 512;

/// An attribute value in a metric's attribute set (hashable: doubles by their bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttrValue {
    /// A string.
    Str(Cow<'static, str>),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A double, by its bits.
    Double(u64),
}

impl From<&'static str> for AttrValue {
    fn from(s: &'static str) -> Self {
        AttrValue::Str(Cow::Borrowed(s))
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(Cow::Owned(s))
    }
}

impl From<i64> for AttrValue {
    fn from(i: i64) -> Self {
        AttrValue::Int(i)
    }
}

impl AttrValue {
    /// A scalar span attribute value as a metric attribute value (arrays have none).
    pub fn from_span_value(value: &opentelemetry::Value) -> Option<Self> {
        use opentelemetry::Value;
        match value {
            Value::String(s) => Some(AttrValue::Str(Cow::Owned(s.to_string()))),
            Value::I64(i) => Some(AttrValue::Int(*i)),
            Value::Bool(b) => Some(AttrValue::Bool(*b)),
            Value::F64(f) => Some(AttrValue::Double(f.to_bits())),
            _ => None,
        }
    }
}

/// An attribute set, sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Attributes(Vec<(Cow<'static, str>, AttrValue)>);

impl Attributes {
    /// A set from pairs (sorted here; a repeated key keeps its last value).
    pub fn new(mut pairs: Vec<(Cow<'static, str>, AttrValue)>) -> Self {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        Self(pairs)
    }

    /// This set with one more attribute.
    pub fn with(&self, key: &'static str, value: impl Into<AttrValue>) -> Self {
        let mut pairs = self.0.clone();
        pairs.push((Cow::Borrowed(key), value.into()));
        Self::new(pairs)
    }

    fn overflow() -> Self {
        Self(vec![(
            Cow::Borrowed("otel.metric.overflow"),
            AttrValue::Bool(true),
        )])
    }

    fn to_proto(&self) -> Vec<ProtoKeyValue> {
        self.0
            .iter()
            .map(|(key, value)| ProtoKeyValue {
                key: key.to_string(),
                value: Some(AnyValue {
                    value: Some(match value {
                        AttrValue::Str(s) => any_value::Value::StringValue(s.to_string()),
                        AttrValue::Int(i) => any_value::Value::IntValue(*i),
                        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
                        AttrValue::Double(bits) => {
                            any_value::Value::DoubleValue(f64::from_bits(*bits))
                        }
                    }),
                }),
                ..Default::default()
            })
            .collect()
    }
}

/// Counter or histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A monotonic sum.
    Counter,
    /// A histogram with these bucket bounds.
    Histogram(&'static [f64]),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Counter => "counter",
            Kind::Histogram(_) => "histogram",
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Exemplar {
    value: f64,
    time: SystemTime,
    trace_id: [u8; 16],
    span_id: [u8; 8],
}

#[derive(Debug)]
struct PointData {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// Histogram buckets (one more than the bounds); empty for a counter.
    buckets: Vec<u64>,
    /// One slot per bucket (a counter has one): the last sampled measurement.
    exemplars: Vec<Option<Exemplar>>,
}

/// One attribute set's aggregate.
#[derive(Debug)]
pub struct Point {
    kind: Kind,
    data: Mutex<PointData>,
}

impl Point {
    fn new(kind: Kind) -> Self {
        let slots = match kind {
            Kind::Counter => 1,
            Kind::Histogram(bounds) => bounds.len() + 1,
        };
        Self {
            kind,
            data: Mutex::new(PointData {
                count: 0,
                sum: 0.0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                buckets: match kind {
                    Kind::Counter => Vec::new(),
                    Kind::Histogram(_) => vec![0; slots],
                },
                exemplars: vec![None; slots],
            }),
        }
    }

    /// Record `value`; inside a sampled span, it becomes its bucket's exemplar.
    pub fn record(&self, value: f64, context: Option<&SpanContext>) {
        let slot = match self.kind {
            Kind::Counter => 0,
            // Bucket i holds (bounds[i-1], bounds[i]], the OTLP convention.
            Kind::Histogram(bounds) => bounds.partition_point(|&bound| bound < value),
        };
        let exemplar = context.filter(|c| c.is_sampled()).map(|c| Exemplar {
            value,
            time: SystemTime::now(),
            trace_id: c.trace_id().to_bytes(),
            span_id: c.span_id().to_bytes(),
        });
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        data.count += 1;
        data.sum += value;
        data.min = data.min.min(value);
        data.max = data.max.max(value);
        if let Some(bucket) = data.buckets.get_mut(slot) {
            *bucket += 1;
        }
        if exemplar.is_some() {
            data.exemplars[slot] = exemplar;
        }
    }
}

/// One instrument and its points by attribute set.
#[derive(Debug)]
pub struct Instrument {
    name: Cow<'static, str>,
    unit: Cow<'static, str>,
    description: Cow<'static, str>,
    kind: Kind,
    points: RwLock<HashMap<Attributes, Arc<Point>>>,
}

impl Instrument {
    /// A new instrument.
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        unit: impl Into<Cow<'static, str>>,
        description: impl Into<Cow<'static, str>>,
        kind: Kind,
    ) -> Self {
        Self {
            name: name.into(),
            unit: unit.into(),
            description: description.into(),
            kind,
            points: RwLock::new(HashMap::new()),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counter or histogram.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.points
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The point of `attributes`, made on first use (the overflow point past the limit).
    /// Callers that record often with the same set keep it.
    pub fn point(&self, attributes: &Attributes) -> Arc<Point> {
        if let Some(point) = self
            .points
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(attributes)
        {
            return point.clone();
        }
        let mut points = self.points.write().unwrap_or_else(|e| e.into_inner());
        let key = if points.len() >= MAX_POINTS_PER_INSTRUMENT && !points.contains_key(attributes) {
            Attributes::overflow()
        } else {
            attributes.clone()
        };
        points
            .entry(key)
            .or_insert_with(|| Arc::new(Point::new(self.kind)))
            .clone()
    }

    /// Record `value` with `attributes`.
    pub fn record(&self, value: f64, attributes: &Attributes, context: Option<&SpanContext>) {
        self.point(attributes).record(value, context);
    }

    fn collect(&self, start: u64, now: u64, keep: &dyn Fn(&[u8; 16]) -> bool) -> Metric {
        let points = self.points.read().unwrap_or_else(|e| e.into_inner());
        let exemplars = |data: &PointData| -> Vec<ProtoExemplar> {
            data.exemplars
                .iter()
                .flatten()
                .filter(|e| keep(&e.trace_id))
                .map(|e| ProtoExemplar {
                    time_unix_nano: unix_nanos(e.time),
                    span_id: e.span_id.to_vec(),
                    trace_id: e.trace_id.to_vec(),
                    value: Some(exemplar::Value::AsDouble(e.value)),
                    ..Default::default()
                })
                .collect()
        };
        let data = match self.kind {
            Kind::Counter => metric::Data::Sum(Sum {
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
                data_points: points
                    .iter()
                    .map(|(attributes, point)| {
                        let data = point.data.lock().unwrap_or_else(|e| e.into_inner());
                        NumberDataPoint {
                            attributes: attributes.to_proto(),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            exemplars: exemplars(&data),
                            value: Some(number_data_point::Value::AsDouble(data.sum)),
                            ..Default::default()
                        }
                    })
                    .collect(),
            }),
            Kind::Histogram(bounds) => metric::Data::Histogram(Histogram {
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                data_points: points
                    .iter()
                    .map(|(attributes, point)| {
                        let data = point.data.lock().unwrap_or_else(|e| e.into_inner());
                        HistogramDataPoint {
                            attributes: attributes.to_proto(),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: data.count,
                            sum: Some(data.sum),
                            bucket_counts: data.buckets.clone(),
                            explicit_bounds: bounds.to_vec(),
                            exemplars: exemplars(&data),
                            min: (data.count > 0).then_some(data.min),
                            max: (data.count > 0).then_some(data.max),
                            ..Default::default()
                        }
                    })
                    .collect(),
            }),
        };
        Metric {
            name: self.name.to_string(),
            description: self.description.to_string(),
            unit: self.unit.to_string(),
            data: Some(data),
            ..Default::default()
        }
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A cumulative count read from elsewhere at collection time.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Instrument name.
    pub name: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// Description.
    pub description: &'static str,
    /// Attribute set.
    pub attributes: Attributes,
    /// The count so far.
    pub value: u64,
}

/// Something that reports counts kept elsewhere (the components' instantiations, ...).
pub type Observer = Box<dyn Fn(&mut Vec<Observation>) + Send + Sync>;

/// The host's instruments.
#[derive(Debug)]
pub struct HostInstruments {
    /// `mcp.server.operation.duration` (s): one per tool call.
    pub tool_duration: Instrument,
    /// `db.client.operation.duration` (s): one per store operation.
    pub store_duration: Instrument,
    /// `ww.component.call.duration` (s): one per call into a component.
    pub component_duration: Instrument,
}

impl HostInstruments {
    fn all(&self) -> [&Instrument; 3] {
        [
            &self.tool_duration,
            &self.store_duration,
            &self.component_duration,
        ]
    }
}

/// Why a guest measurement was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuestMetricError {
    /// Not an OpenTelemetry instrument name.
    #[error("{0:?} is not an instrument name (a letter, then up to 254 of A-Z a-z 0-9 _ . - /)")]
    Name(String),
    /// The unit is too long or not ASCII.
    #[error("unit {0:?} is not at most 63 ASCII characters")]
    Unit(String),
    /// The component already uses the name for the other kind.
    #[error("{name} is a {existing}, not a {asked}")]
    KindMismatch {
        /// The instrument.
        name: String,
        /// What it is.
        existing: Kind,
        /// What was asked.
        asked: Kind,
    },
    /// The component has as many instruments as it may.
    #[error("a component may have at most {0} instruments")]
    TooMany(usize),
}

/// Instruments one component may create.
pub const MAX_GUEST_INSTRUMENTS: usize = 64;

/// Whether `name` follows the OpenTelemetry instrument name syntax.
pub fn is_instrument_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 255
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
}

/// One component's instruments.
type GuestScope = (Arc<str>, Vec<Arc<Instrument>>);

/// Every instrument, and the way they are read.
pub struct Metrics {
    start: SystemTime,
    /// The host's own.
    pub host: HostInstruments,
    /// Guests' instruments, by component (the instrumentation scope).
    guests: RwLock<Vec<GuestScope>>,
    observers: Mutex<Vec<Observer>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The host's instruments, no guest ones yet.
    pub fn new() -> Self {
        let duration = |name: &'static str, description: &'static str| {
            Instrument::new(name, "s", description, Kind::Histogram(DURATION_BUCKETS))
        };
        Self {
            start: SystemTime::now(),
            host: HostInstruments {
                tool_duration: duration(
                    "mcp.server.operation.duration",
                    "Duration of MCP tool calls, as the server saw them",
                ),
                store_duration: duration(
                    "db.client.operation.duration",
                    "Duration of store operations, from the calling component's side",
                ),
                component_duration: duration(
                    "ww.component.call.duration",
                    "Duration of calls into a WebAssembly component",
                ),
            },
            guests: RwLock::new(Vec::new()),
            observers: Mutex::new(Vec::new()),
        }
    }

    /// Whether nothing was measured yet (no export is worth sending).
    pub fn is_empty(&self) -> bool {
        self.host.all().iter().all(|i| i.is_empty())
            && self
                .guests
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .all(|(_, instruments)| instruments.iter().all(|i| i.is_empty()))
    }

    /// Report counts kept elsewhere at each collection.
    pub fn observe(&self, observer: Observer) {
        self.observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(observer);
    }

    /// A guest's instrument `name` in `component`'s scope, created on first use.
    pub fn guest_instrument(
        &self,
        component: &Arc<str>,
        name: &str,
        unit: &str,
        kind: Kind,
    ) -> Result<Arc<Instrument>, GuestMetricError> {
        let find = |guests: &[GuestScope]| {
            guests
                .iter()
                .find(|(scope, _)| scope == component)
                .and_then(|(_, instruments)| instruments.iter().find(|i| i.name == name))
                .cloned()
        };
        let check = |found: Arc<Instrument>| {
            if found.kind == kind {
                Ok(found)
            } else {
                Err(GuestMetricError::KindMismatch {
                    name: name.to_owned(),
                    existing: found.kind,
                    asked: kind,
                })
            }
        };
        if let Some(found) = find(&self.guests.read().unwrap_or_else(|e| e.into_inner())) {
            return check(found);
        }
        if !is_instrument_name(name) {
            return Err(GuestMetricError::Name(name.chars().take(64).collect()));
        }
        if unit.len() > 63 || !unit.is_ascii() {
            return Err(GuestMetricError::Unit(unit.chars().take(64).collect()));
        }
        let mut guests = self.guests.write().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = find(&guests) {
            return check(found);
        }
        let index = match guests.iter().position(|(scope, _)| scope == component) {
            Some(index) => index,
            None => {
                guests.push((component.clone(), Vec::new()));
                guests.len() - 1
            }
        };
        let instruments = &mut guests[index].1;
        if instruments.len() >= MAX_GUEST_INSTRUMENTS {
            return Err(GuestMetricError::TooMany(MAX_GUEST_INSTRUMENTS));
        }
        let instrument = Arc::new(Instrument::new(
            name.to_owned(),
            unit.to_owned(),
            format!("Recorded by component {component}"),
            kind,
        ));
        instruments.push(instrument.clone());
        Ok(instrument)
    }

    /// Everything so far as one OTLP request. Exemplars whose trace `keep` refuses (tail
    /// sampling dropped it, or has not decided yet) are left out.
    pub fn collect(
        &self,
        resource: Resource,
        host_scope: &str,
        keep: &dyn Fn(&[u8; 16]) -> bool,
    ) -> ExportMetricsServiceRequest {
        let start = unix_nanos(self.start);
        let now = unix_nanos(SystemTime::now());
        let scope = |name: &str| {
            Some(InstrumentationScope {
                name: name.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..Default::default()
            })
        };
        let mut host_metrics: Vec<Metric> = self
            .host
            .all()
            .into_iter()
            .filter(|i| !i.is_empty())
            .map(|i| i.collect(start, now, keep))
            .collect();

        let mut observed = Vec::new();
        for observer in self
            .observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            observer(&mut observed);
        }
        let mut by_name: Vec<(&Observation, Vec<NumberDataPoint>)> = Vec::new();
        for observation in &observed {
            let point = NumberDataPoint {
                attributes: observation.attributes.to_proto(),
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsInt(observation.value as i64)),
                ..Default::default()
            };
            match by_name.iter_mut().find(|(o, _)| o.name == observation.name) {
                Some((_, points)) => points.push(point),
                None => by_name.push((observation, vec![point])),
            }
        }
        host_metrics.extend(by_name.into_iter().map(|(o, points)| Metric {
            name: o.name.to_owned(),
            description: o.description.to_owned(),
            unit: o.unit.to_owned(),
            data: Some(metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        }));

        let mut scopes = vec![ScopeMetrics {
            scope: scope(host_scope),
            metrics: host_metrics,
            ..Default::default()
        }];
        for (component, instruments) in self.guests.read().unwrap_or_else(|e| e.into_inner()).iter()
        {
            scopes.push(ScopeMetrics {
                scope: scope(component),
                metrics: instruments
                    .iter()
                    .map(|i| i.collect(start, now, keep))
                    .collect(),
                ..Default::default()
            });
        }
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource),
                scope_metrics: scopes,
                ..Default::default()
            }],
        }
    }
}

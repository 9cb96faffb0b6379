//! Aggregation: attribute sets, counters and histograms by attribute set, each bucket
//! keeping its last sampled measurement as an exemplar.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use opentelemetry::trace::SpanContext;

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
pub struct Attributes(pub(super) Vec<(Cow<'static, str>, AttrValue)>);

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

    /// The set measurements go to past [`MAX_POINTS_PER_INSTRUMENT`].
    fn overflow() -> Self {
        Self(vec![(
            Cow::Borrowed("otel.metric.overflow"),
            AttrValue::Bool(true),
        )])
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
pub(super) struct Exemplar {
    pub(super) value: f64,
    pub(super) time: SystemTime,
    pub(super) trace_id: [u8; 16],
    pub(super) span_id: [u8; 8],
}

#[derive(Debug)]
pub(super) struct PointData {
    pub(super) count: u64,
    pub(super) sum: f64,
    pub(super) min: f64,
    pub(super) max: f64,
    /// Histogram buckets (one more than the bounds); empty for a counter.
    pub(super) buckets: Vec<u64>,
    /// One slot per bucket (a counter has one): the last sampled measurement.
    pub(super) exemplars: Vec<Option<Exemplar>>,
}

/// One attribute set's aggregate.
#[derive(Debug)]
pub struct Point {
    pub(super) kind: Kind,
    pub(super) data: Mutex<PointData>,
}

impl Point {
    /// An empty aggregate of `kind`.
    pub(super) fn new(kind: Kind) -> Self {
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
        if let (Some(exemplar), Some(kept)) = (exemplar, data.exemplars.get_mut(slot)) {
            *kept = Some(exemplar);
        }
    }
}

/// One instrument and its points by attribute set.
#[derive(Debug)]
pub struct Instrument {
    pub(super) name: Cow<'static, str>,
    pub(super) unit: Cow<'static, str>,
    pub(super) description: Cow<'static, str>,
    pub(super) kind: Kind,
    pub(super) points: RwLock<HashMap<Attributes, Arc<Point>>>,
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
}

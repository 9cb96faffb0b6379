//! The WIT `metrics` interface: a component's counters and histograms, in its own
//! instrumentation scope, with the request's current span as exemplar.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use wasmtime::component::{HasData, Linker};

use super::TracingCtx;
use super::limits::{MAX_ATTRIBUTES_PER_MEASUREMENT, MAX_KEY_BYTES, MAX_METRIC_STRING_BYTES};
use crate::bindings::ww::memory::metrics as wit;
use crate::bindings::ww::memory::tracing::{KeyValue, Value};
use crate::telemetry::metrics::{
    AttrValue, Attributes, DURATION_BUCKETS, GUEST_BUCKETS, Kind, MILLISECOND_BUCKETS,
};

impl TracingCtx {
    /// Record one guest measurement; anything refused is counted, never an error to the
    /// guest (metrics must not change what a component does).
    fn measure(
        &mut self,
        name: &str,
        unit: &str,
        kind: Kind,
        value: f64,
        attributes: Vec<KeyValue>,
    ) {
        let telemetry = self.scope.telemetry().clone();
        let Some(metrics) = telemetry.metrics() else {
            return;
        };
        let refuse = || {
            telemetry
                .guest_limits
                .refused_measurements
                .fetch_add(1, Ordering::Relaxed);
        };
        let valid = match kind {
            Kind::Counter => value.is_finite() && value >= 0.0,
            Kind::Histogram(_) => value.is_finite(),
        };
        let Some(owner) = self.owner.clone().filter(|_| valid) else {
            return refuse();
        };
        let instrument = match metrics.guest_instrument(&owner, name, unit, kind) {
            Ok(instrument) => instrument,
            Err(_) => return refuse(),
        };
        let attributes = self.metric_attributes(attributes);
        instrument.record(value, &attributes, self.scope.current());
    }

    /// Scalar attributes only, at most [`MAX_ATTRIBUTES_PER_MEASUREMENT`]; the rest are
    /// counted as dropped.
    fn metric_attributes(&self, attributes: Vec<KeyValue>) -> Attributes {
        let total = attributes.len();
        let mut pairs = Vec::with_capacity(total.min(MAX_ATTRIBUTES_PER_MEASUREMENT));
        for kv in attributes {
            if pairs.len() == MAX_ATTRIBUTES_PER_MEASUREMENT || kv.key.is_empty() {
                continue;
            }
            let value = match kv.value {
                Value::String(mut s) => {
                    self.truncated(&mut s, MAX_METRIC_STRING_BYTES);
                    AttrValue::Str(Cow::Owned(s))
                }
                Value::Bool(b) => AttrValue::Bool(b),
                Value::S64(i) => AttrValue::Int(i),
                Value::F64(f) => AttrValue::Double(f.to_bits()),
                _ => continue,
            };
            let mut key = kv.key;
            self.truncated(&mut key, MAX_KEY_BYTES);
            pairs.push((Cow::Owned(key), value));
        }
        self.count_dropped_attributes(total - pairs.len());
        Attributes::new(pairs)
    }
}

fn histogram_buckets(unit: &str) -> Kind {
    Kind::Histogram(match unit {
        "s" => DURATION_BUCKETS,
        "ms" => MILLISECOND_BUCKETS,
        _ => GUEST_BUCKETS,
    })
}

/// The `metrics` capability's view of a store's [`TracingCtx`].
pub struct WwMetrics<'a> {
    ctx: &'a mut TracingCtx,
}

impl<'a> WwMetrics<'a> {
    /// The metrics view of a store's context.
    pub fn new(ctx: &'a mut TracingCtx) -> Self {
        Self { ctx }
    }
}

/// Names [`WwMetrics`] as the data the generated `add_to_linker` hands each host call.
struct HasMetrics;

impl HasData for HasMetrics {
    type Data<'a> = WwMetrics<'a>;
}

impl wit::Host for WwMetrics<'_> {
    fn counter_add(&mut self, name: String, unit: String, value: f64, attributes: Vec<KeyValue>) {
        self.ctx
            .measure(&name, &unit, Kind::Counter, value, attributes);
    }

    fn histogram_record(
        &mut self,
        name: String,
        unit: String,
        value: f64,
        attributes: Vec<KeyValue>,
    ) {
        let kind = histogram_buckets(&unit);
        self.ctx.measure(&name, &unit, kind, value, attributes);
    }
}

/// Link the `metrics` interface; `get` gives the view of a store's [`TracingCtx`].
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> WwMetrics<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasMetrics>(linker, get)
}

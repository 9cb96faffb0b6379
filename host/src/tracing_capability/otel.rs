//! `wasi:otel` (0.2.0-rc.2), the WebAssembly OpenTelemetry proposal, for components built
//! for other hosts. Such a guest runs its own OpenTelemetry SDK: it mints its spans' ids,
//! calls `on-start` when a span starts and `on-end` with the whole span when it ends, and
//! asks the host for the context to parent its root spans under.
//!
//! Here a guest's span joins the request's span stack like any other ([`RequestScope`]):
//! `on-start` makes it the innermost open span, so the host's boundary spans and other
//! components' spans opened meanwhile nest under it; `on-end` exports it through the SDK
//! (sampler, tail sampling, processors) under the guest's own id. Both names of the
//! context function are served, `outer-span-context` (the published rc.2) and
//! `current-span-context` (the same version after the proposal's rename): either returns
//! the request's innermost span, which is what makes composed components nest.
//!
//! The guest is not trusted: ids that are malformed, already open or of another trace are
//! refused; a parent that is not the span the guest's span started under is replaced by
//! it; names, keys, values and counts are held to the limits of our own interface; every
//! refusal is counted ([`GuestLimitCounters`]), none is an error to the guest.
//!
//! Logs become events on the span they name (else the innermost). Metrics are refused with
//! an error saying so: the guest's SDK sends aggregated data points in its own temporality
//! and buckets, which the host's pipeline (one aggregation per instrument, host buckets,
//! exemplars from the request's span) cannot take without re-aggregating them wrongly.
//!
//! [`RequestScope`]: super::RequestScope
//! [`GuestLimitCounters`]: crate::telemetry::GuestLimitCounters

use std::time::SystemTime;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use wasmtime::component::{HasData, Linker};

use super::TracingCtx;
use super::limits::*;
use super::scope::{self, Event, GuestSpanEnd, Outcome};
use crate::bindings::otel::wasi::clocks::wall_clock::Datetime;
use crate::bindings::otel::wasi::otel::{logs, metrics, tracing, types};

/// The interface whose context function has two names.
pub const TRACING_INTERFACE: &str = "wasi:otel/tracing@0.2.0-rc.2";
/// The context function's name after the proposal's rename (same version string).
pub const CURRENT_SPAN_CONTEXT: &str = "current-span-context";

/// The `wasi:otel` capability's view of a store's [`TracingCtx`].
pub struct WasiOtel<'a> {
    ctx: &'a mut TracingCtx,
}

impl<'a> WasiOtel<'a> {
    /// The `wasi:otel` view of a store's context.
    pub fn new(ctx: &'a mut TracingCtx) -> Self {
        Self { ctx }
    }

    /// The request's innermost span, as `wasi:otel` describes a span context.
    fn current(&self) -> tracing::SpanContext {
        wit_context(&self.ctx.scope.current_or_fresh())
    }

    /// A guest's JSON-encoded `AnyValue` as an attribute value: scalars and homogeneous
    /// arrays as themselves, maps and mixed arrays as their JSON text. `None` for `null`
    /// and for what is not JSON.
    fn value(&self, json: &str) -> Option<Value> {
        let parsed: serde_json::Value = serde_json::from_str(json).ok()?;
        let text = |value: &serde_json::Value| {
            let mut text = value.to_string();
            self.ctx.truncated(&mut text, MAX_STRING_VALUE_BYTES);
            Value::String(text.into())
        };
        Some(match &parsed {
            serde_json::Value::Null => return None,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::I64(i),
                None => Value::F64(n.as_f64()?),
            },
            serde_json::Value::String(s) => {
                let mut s = s.clone();
                self.ctx.truncated(&mut s, MAX_STRING_VALUE_BYTES);
                Value::String(s.into())
            }
            serde_json::Value::Array(items) => {
                if items.len() > MAX_LIST_LEN {
                    self.ctx.scope.count(|c| &c.truncated, 1);
                }
                let items = items.get(..MAX_LIST_LEN).unwrap_or(items);
                if items.is_empty() {
                    Value::Array(Array::String(Vec::new()))
                } else if let Some(strings) = items
                    .iter()
                    .map(serde_json::Value::as_str)
                    .collect::<Option<Vec<&str>>>()
                {
                    Value::Array(Array::String(
                        strings
                            .into_iter()
                            .map(|s| {
                                let mut s = s.to_owned();
                                self.ctx.truncated(&mut s, MAX_STRING_VALUE_BYTES);
                                StringValue::from(s)
                            })
                            .collect(),
                    ))
                } else if let Some(bools) = items.iter().map(serde_json::Value::as_bool).collect() {
                    Value::Array(Array::Bool(bools))
                } else if let Some(ints) = items.iter().map(serde_json::Value::as_i64).collect() {
                    Value::Array(Array::I64(ints))
                } else if let Some(floats) = items.iter().map(serde_json::Value::as_f64).collect() {
                    Value::Array(Array::F64(floats))
                } else {
                    // Mixed or nested: AnyValue has no typed attribute form for it.
                    text(&parsed)
                }
            }
            serde_json::Value::Object(_) => text(&parsed),
        })
    }

    /// At most `max` attributes, after `first`; the rest, empty keys and values that are
    /// not JSON are counted as dropped. Values are parsed only for what is kept.
    fn attributes(
        &self,
        first: Vec<KeyValue>,
        attributes: Vec<types::KeyValue>,
        max: usize,
    ) -> Vec<KeyValue> {
        let total = first.len() + attributes.len();
        let mut kept = first;
        kept.truncate(max);
        for kv in attributes {
            if kept.len() == max {
                break;
            }
            if kv.key.is_empty() {
                continue;
            }
            let Some(value) = self.value(&kv.value) else {
                continue;
            };
            let mut key = kv.key;
            self.ctx.truncated(&mut key, MAX_KEY_BYTES);
            kept.push(KeyValue::new(key, value));
        }
        self.ctx.count_dropped_attributes(total - kept.len());
        kept
    }

    fn event(&self, event: tracing::Event) -> Event {
        let mut name = event.name;
        self.ctx.truncated(&mut name, MAX_NAME_BYTES);
        Event {
            name,
            time: system_time(&event.time),
            attributes: self.attributes(Vec::new(), event.attributes, MAX_ATTRIBUTES_PER_EVENT),
        }
    }
}

/// Names [`WasiOtel`] as the data the generated `add_to_linker` hands each host call.
struct HasOtel;

impl HasData for HasOtel {
    type Data<'a> = WasiOtel<'a>;
}

impl types::Host for WasiOtel<'_> {}

impl tracing::Host for WasiOtel<'_> {
    fn on_start(&mut self, context: tracing::SpanContext) {
        let trace_id = trace_id(&context.trace_id).unwrap_or(TraceId::INVALID);
        let span_id = span_id(&context.span_id).unwrap_or(SpanId::INVALID);
        let owner = self.ctx.owner.clone();
        self.ctx.scope.start_guest(owner, trace_id, span_id);
    }

    fn on_end(&mut self, span: tracing::SpanData) {
        let mut name = span.name;
        self.ctx.truncated(&mut name, MAX_NAME_BYTES);
        let instrumentation = instrumentation_attributes(span.instrumentation_scope);
        let attributes = self.attributes(instrumentation, span.attributes, MAX_ATTRIBUTES_PER_SPAN);
        let events = span.events.into_iter().map(|e| self.event(e)).collect();
        let links = span
            .links
            .into_iter()
            .filter_map(|link| {
                let context = span_context(&link.span_context);
                if context.is_none() {
                    self.ctx.scope.count(|c| &c.dropped_links, 1);
                }
                let attributes =
                    self.attributes(Vec::new(), link.attributes, MAX_ATTRIBUTES_PER_EVENT);
                Some((context?, attributes))
            })
            .collect();
        let outcome = match span.status {
            tracing::Status::Unset => Outcome::Unset,
            tracing::Status::Ok => Outcome::Ok,
            tracing::Status::Error(mut description) => {
                self.ctx.truncated(&mut description, MAX_STRING_VALUE_BYTES);
                Outcome::Error(description)
            }
        };
        let parent_span_id = match span.parent_span_id.as_str() {
            "" => None,
            id => Some(span_id(id).unwrap_or(SpanId::INVALID)),
        };
        let ended = GuestSpanEnd {
            span_id: span_id(&span.span_context.span_id).unwrap_or(SpanId::INVALID),
            parent_span_id,
            name,
            kind: span_kind(span.span_kind),
            start: system_time(&span.start_time),
            end: system_time(&span.end_time),
            attributes,
            events,
            links,
            outcome,
        };
        let ctx = &mut *self.ctx;
        ctx.scope.end_guest(&ctx.owner, ended);
    }

    fn outer_span_context(&mut self) -> tracing::SpanContext {
        self.current()
    }
}

impl logs::Host for WasiOtel<'_> {
    fn on_emit(&mut self, record: logs::LogRecord) {
        let mut first = Vec::new();
        if let Some(mut severity) = record.severity_text {
            self.ctx.truncated(&mut severity, MAX_KEY_BYTES);
            first.push(KeyValue::new("log.severity", severity));
        }
        if let Some(number) = record.severity_number {
            first.push(KeyValue::new("log.severity_number", i64::from(number)));
        }
        if let Some(body) = record.body.as_deref().and_then(|body| self.value(body)) {
            first.push(KeyValue::new("log.body", body));
        }
        let attributes = self.attributes(
            first,
            record.attributes.unwrap_or_default(),
            MAX_ATTRIBUTES_PER_EVENT,
        );
        let mut name = record.event_name.unwrap_or_else(|| "log".to_owned());
        self.ctx.truncated(&mut name, MAX_NAME_BYTES);
        let time = record
            .timestamp
            .or(record.observed_timestamp)
            .and_then(|t| system_time(&t));
        let span = record.span_id.as_deref().and_then(span_id);
        self.ctx.scope.add_log(
            span,
            Event {
                name,
                time,
                attributes,
            },
        );
    }
}

impl metrics::Host for WasiOtel<'_> {
    fn export(&mut self, _metrics: metrics::ResourceMetrics) -> Result<(), metrics::Error> {
        self.ctx.scope.count(|c| &c.refused_measurements, 1);
        Err(
            "World Weaver does not take wasi:otel metrics (the guest's SDK aggregates them in \
             its own temporality and buckets); record through ww:memory/metrics instead"
                .to_owned(),
        )
    }
}

/// Link `wasi:otel` (tracing under both names of its context function, logs, metrics);
/// `get` gives the view of a store's [`TracingCtx`].
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> WasiOtel<'_>,
) -> wasmtime::Result<()> {
    types::add_to_linker::<T, HasOtel>(linker, get)?;
    tracing::add_to_linker::<T, HasOtel>(linker, get)?;
    logs::add_to_linker::<T, HasOtel>(linker, get)?;
    metrics::add_to_linker::<T, HasOtel>(linker, get)?;
    // The renamed function, in the same interface: bindgen knows one WIT, the published
    // one, so the second name is wrapped by hand around the same view.
    linker
        .instance(TRACING_INTERFACE)?
        .func_wrap(CURRENT_SPAN_CONTEXT, move |mut store, (): ()| {
            Ok((get(store.data_mut()).current(),))
        })?;
    for version in OTHER_VERSIONS {
        link_version(linker, version, get)?;
    }
    Ok(())
}

/// Earlier version strings of the proposal that components in the wild import. Their
/// interfaces are linked with rc.2's functions and types: wasmtime checks a component's
/// imports against these types when it loads it, so a component whose `wasi:otel` differs
/// from rc.2 in more than the version string is refused at load, naming the import,
/// rather than called wrongly. (Pre-release versions are not semver-compatible, so
/// wasmtime would not match them to rc.2 by itself.)
pub const OTHER_VERSIONS: [&str; 2] = ["0.2.0-rc.1", "0.2.0-draft"];

/// Every `wasi:otel` function under `version`, with rc.2's types, on the same view.
fn link_version<T: Send + 'static>(
    linker: &mut Linker<T>,
    version: &str,
    get: fn(&mut T) -> WasiOtel<'_>,
) -> wasmtime::Result<()> {
    use logs::Host as _;
    use metrics::Host as _;
    use tracing::Host as _;

    linker.instance(&format!("wasi:otel/types@{version}"))?;
    let mut traces = linker.instance(&format!("wasi:otel/tracing@{version}"))?;
    traces.func_wrap(
        "on-start",
        move |mut store, (context,): (tracing::SpanContext,)| {
            get(store.data_mut()).on_start(context);
            Ok(())
        },
    )?;
    traces.func_wrap("on-end", move |mut store, (span,): (tracing::SpanData,)| {
        get(store.data_mut()).on_end(span);
        Ok(())
    })?;
    for name in ["outer-span-context", CURRENT_SPAN_CONTEXT] {
        traces.func_wrap(name, move |mut store, (): ()| {
            Ok((get(store.data_mut()).current(),))
        })?;
    }
    linker
        .instance(&format!("wasi:otel/logs@{version}"))?
        .func_wrap(
            "on-emit",
            move |mut store, (record,): (logs::LogRecord,)| {
                get(store.data_mut()).on_emit(record);
                Ok(())
            },
        )?;
    linker
        .instance(&format!("wasi:otel/metrics@{version}"))?
        .func_wrap(
            "export",
            move |mut store, (data,): (metrics::ResourceMetrics,)| {
                Ok((get(store.data_mut()).export(data),))
            },
        )?;
    Ok(())
}

/// The instrumentation scope that produced a guest's span, as the attributes the
/// OpenTelemetry specification gives exporters without a scope field (`otel.scope.*`):
/// every guest span goes out under the host's tracer.
fn instrumentation_attributes(scope: types::InstrumentationScope) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(2);
    if !scope.name.is_empty() {
        let mut name = scope.name;
        name.truncate(floor_char_boundary(&name, MAX_NAME_BYTES));
        attributes.push(KeyValue::new("otel.scope.name", name));
    }
    if let Some(mut version) = scope.version {
        version.truncate(floor_char_boundary(&version, MAX_NAME_BYTES));
        attributes.push(KeyValue::new("otel.scope.version", version));
    }
    attributes
}

/// The largest index at most `max` that is a character boundary of `s`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    (0..=max.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

fn span_kind(kind: tracing::SpanKind) -> SpanKind {
    match kind {
        tracing::SpanKind::Client => SpanKind::Client,
        tracing::SpanKind::Server => SpanKind::Server,
        tracing::SpanKind::Producer => SpanKind::Producer,
        tracing::SpanKind::Consumer => SpanKind::Consumer,
        tracing::SpanKind::Internal => SpanKind::Internal,
    }
}

/// A guest's time, when plausible (see [`scope::plausible_time`]).
fn system_time(time: &Datetime) -> Option<SystemTime> {
    let nanos = time
        .seconds
        .checked_mul(1_000_000_000)?
        .checked_add(u64::from(time.nanoseconds))?;
    scope::plausible_time(nanos)
}

/// Exactly `digits` lowercase or uppercase hex digits.
fn hex(s: &str, digits: usize) -> bool {
    s.len() == digits && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A trace id: 32 hex digits, not all zero.
fn trace_id(s: &str) -> Option<TraceId> {
    let id = TraceId::from_hex(s).ok().filter(|_| hex(s, 32))?;
    (id != TraceId::INVALID).then_some(id)
}

/// A span id: 16 hex digits, not all zero.
fn span_id(s: &str) -> Option<SpanId> {
    let id = SpanId::from_hex(s).ok().filter(|_| hex(s, 16))?;
    (id != SpanId::INVALID).then_some(id)
}

/// A guest's span context (a link's target), when its ids are valid. Its trace state is
/// kept when it is a valid W3C one.
fn span_context(context: &tracing::SpanContext) -> Option<SpanContext> {
    let flags = if context.trace_flags.contains(tracing::TraceFlags::SAMPLED) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let state = TraceState::from_key_value(
        context
            .trace_state
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .unwrap_or_default();
    Some(SpanContext::new(
        trace_id(&context.trace_id)?,
        span_id(&context.span_id)?,
        flags,
        context.is_remote,
        state,
    ))
}

/// A span context as `wasi:otel` describes it.
fn wit_context(context: &SpanContext) -> tracing::SpanContext {
    let trace_state = context
        .trace_state()
        .header()
        .split(',')
        .filter_map(|member| member.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    tracing::SpanContext {
        trace_id: context.trace_id().to_string(),
        span_id: context.span_id().to_string(),
        trace_flags: if context.is_sampled() {
            tracing::TraceFlags::SAMPLED
        } else {
            tracing::TraceFlags::empty()
        },
        is_remote: context.is_remote(),
        trace_state,
    }
}

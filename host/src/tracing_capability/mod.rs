//! The WIT `tracing` capability: every component's span calls land here and become
//! OpenTelemetry SDK spans in the current request's [`RequestScope`]. Beside it, the
//! capabilities that read the same scope, each with its own `add_to_linker`: [`metrics`]
//! (exemplars come from the scope's current span) and [`progress`] (the scope's sink and
//! cancellation).

pub mod limits;
pub mod metrics;
pub mod otel;
pub mod progress;
pub mod scope;
pub mod w3c;
pub mod xray;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::SpanKind;
use opentelemetry::{Array, KeyValue, StringValue, Value};
use wasmtime::component::{HasData, Linker};

use crate::bindings::ww::memory::tracing as wit;
use crate::telemetry::Telemetry;
use limits::*;
pub use scope::{Event, Exception, Outcome, Owner, ProgressSink, RequestScope};
pub use w3c::IncomingContext;

/// The tracing state of one component's store: who it is, and the scope of the request
/// it is serving (a detached scope between requests).
pub struct TracingCtx {
    owner: Owner,
    scope: RequestScope,
}

impl TracingCtx {
    /// State for component `name`.
    pub fn new(name: Arc<str>, telemetry: Arc<Telemetry>) -> Self {
        Self {
            owner: Some(name),
            scope: RequestScope::new(telemetry, None, None),
        }
    }

    /// Put the request's scope in, for a call into this component.
    pub fn enter(&mut self, scope: RequestScope) -> RequestScope {
        std::mem::replace(&mut self.scope, scope)
    }

    /// Take the request's scope back out after the call, leaving `detached`.
    pub fn leave(&mut self, detached: RequestScope) -> RequestScope {
        std::mem::replace(&mut self.scope, detached)
    }

    /// The scope of the request being served.
    pub fn scope_mut(&mut self) -> &mut RequestScope {
        &mut self.scope
    }

    fn truncated(&self, s: &mut String, max: usize) {
        self.scope
            .count(|c| &c.truncated, u64::from(truncate(s, max)));
    }

    /// Count attributes a guest sent that were not kept (over the limit, empty key, or a
    /// type the place does not take).
    fn count_dropped_attributes(&self, dropped: usize) {
        self.scope.count(|c| &c.dropped_attributes, dropped as u64);
    }

    fn value(&self, value: wit::Value) -> Value {
        let list = |n: usize| {
            self.scope
                .count(|c| &c.truncated, u64::from(n > MAX_LIST_LEN));
            n.min(MAX_LIST_LEN)
        };
        match value {
            wit::Value::String(mut s) => {
                self.truncated(&mut s, MAX_STRING_VALUE_BYTES);
                Value::String(s.into())
            }
            wit::Value::Bool(b) => Value::Bool(b),
            wit::Value::S64(i) => Value::I64(i),
            wit::Value::F64(f) => Value::F64(f),
            wit::Value::StringList(items) => {
                let n = list(items.len());
                Value::Array(Array::String(
                    items
                        .into_iter()
                        .take(n)
                        .map(|mut s| {
                            self.truncated(&mut s, MAX_STRING_VALUE_BYTES);
                            StringValue::from(s)
                        })
                        .collect(),
                ))
            }
            wit::Value::BoolList(mut items) => {
                items.truncate(list(items.len()));
                Value::Array(Array::Bool(items))
            }
            wit::Value::S64List(mut items) => {
                items.truncate(list(items.len()));
                Value::Array(Array::I64(items))
            }
            wit::Value::F64List(mut items) => {
                items.truncate(list(items.len()));
                Value::Array(Array::F64(items))
            }
        }
    }

    /// Convert at most `max` attributes; the rest are counted as dropped. Empty keys are
    /// dropped too.
    fn attributes(&self, attributes: Vec<wit::KeyValue>, max: usize) -> Vec<KeyValue> {
        let total = attributes.len();
        let converted: Vec<KeyValue> = attributes
            .into_iter()
            .filter(|kv| !kv.key.is_empty())
            .take(max)
            .map(|kv| {
                let mut key = kv.key;
                self.truncated(&mut key, MAX_KEY_BYTES);
                KeyValue::new(key, self.value(kv.value))
            })
            .collect();
        self.count_dropped_attributes(total - converted.len());
        converted
    }

    fn event(&self, event: wit::Event) -> Event {
        let mut name = event.name;
        self.truncated(&mut name, MAX_NAME_BYTES);
        Event {
            name,
            time: event.time_unix_nano.and_then(scope::plausible_time),
            attributes: self.attributes(event.attributes, MAX_ATTRIBUTES_PER_EVENT),
        }
    }

    fn outcome(&self, status: wit::Status) -> Outcome {
        match status {
            wit::Status::Unset => Outcome::Unset,
            wit::Status::Ok => Outcome::Ok,
            wit::Status::Error(mut description) => {
                self.truncated(&mut description, MAX_STRING_VALUE_BYTES);
                Outcome::Error(description)
            }
        }
    }

    fn exception(&self, exception: wit::Exception) -> Exception {
        let (mut kind, mut message) = (exception.type_, exception.message);
        self.truncated(&mut kind, MAX_NAME_BYTES);
        self.truncated(&mut message, MAX_STRING_VALUE_BYTES);
        let stacktrace = exception.stacktrace.map(|mut s| {
            self.truncated(&mut s, MAX_STRING_VALUE_BYTES);
            s
        });
        Exception {
            kind,
            message,
            stacktrace,
        }
    }
}

fn span_kind(kind: wit::SpanKind) -> SpanKind {
    match kind {
        wit::SpanKind::Internal => SpanKind::Internal,
        wit::SpanKind::Server => SpanKind::Server,
        wit::SpanKind::Client => SpanKind::Client,
        wit::SpanKind::Producer => SpanKind::Producer,
        wit::SpanKind::Consumer => SpanKind::Consumer,
    }
}

/// The `tracing` capability as the linker sees a store: a view of its [`TracingCtx`]
/// (the shape of wasmtime's `wasi-keyvalue`: a context, a view, one `add_to_linker`).
pub struct WwTracing<'a> {
    ctx: &'a mut TracingCtx,
}

impl<'a> WwTracing<'a> {
    /// The tracing view of a store's context.
    pub fn new(ctx: &'a mut TracingCtx) -> Self {
        Self { ctx }
    }
}

impl WwTracing<'_> {
    /// `start-span` and `start-span-at`: a span started now (`start` none) or earlier.
    fn start(
        &mut self,
        mut name: String,
        kind: wit::SpanKind,
        attributes: Vec<wit::KeyValue>,
        remote_parent: Option<wit::TraceContext>,
        start: Option<SystemTime>,
    ) -> u64 {
        self.ctx.truncated(&mut name, MAX_NAME_BYTES);
        let attributes = self.ctx.attributes(attributes, MAX_ATTRIBUTES_PER_SPAN);
        let parent =
            remote_parent.and_then(|p| self.ctx.scope.parse_parent(&p.traceparent, &p.tracestate));
        let owner = self.ctx.owner.clone();
        self.ctx.scope.start_at(
            owner,
            Cow::Owned(name),
            span_kind(kind),
            attributes,
            parent,
            start,
        )
    }
}

/// Names [`WwTracing`] as the data the generated `add_to_linker` hands each host call.
struct HasTracing;

impl HasData for HasTracing {
    type Data<'a> = WwTracing<'a>;
}

impl wit::Host for WwTracing<'_> {
    fn enabled(&mut self) -> bool {
        self.ctx.scope.telemetry().is_recording()
    }

    fn start_span(
        &mut self,
        name: String,
        kind: wit::SpanKind,
        attributes: Vec<wit::KeyValue>,
        remote_parent: Option<wit::TraceContext>,
    ) -> u64 {
        self.start(name, kind, attributes, remote_parent, None)
    }

    fn start_span_at(
        &mut self,
        name: String,
        kind: wit::SpanKind,
        attributes: Vec<wit::KeyValue>,
        remote_parent: Option<wit::TraceContext>,
        start_time_unix_nano: u64,
    ) -> u64 {
        let start = scope::plausible_start(start_time_unix_nano);
        self.start(name, kind, attributes, remote_parent, start)
    }

    fn record_span(
        &mut self,
        mut name: String,
        kind: wit::SpanKind,
        start_time_unix_nano: u64,
        status: wit::Status,
        attributes: Vec<wit::KeyValue>,
        events: Vec<wit::Event>,
    ) {
        self.ctx.truncated(&mut name, MAX_NAME_BYTES);
        let outcome = self.ctx.outcome(status);
        let attributes = self.ctx.attributes(attributes, MAX_ATTRIBUTES_PER_SPAN);
        let events = events.into_iter().map(|e| self.ctx.event(e)).collect();
        self.ctx.scope.record(
            Cow::Owned(name),
            span_kind(kind),
            scope::plausible_start(start_time_unix_nano),
            outcome,
            attributes,
            events,
        );
    }

    fn end_span(
        &mut self,
        span: u64,
        status: wit::Status,
        attributes: Vec<wit::KeyValue>,
        events: Vec<wit::Event>,
        exception: Option<wit::Exception>,
    ) {
        let outcome = self.ctx.outcome(status);
        let attributes = self.ctx.attributes(attributes, MAX_ATTRIBUTES_PER_SPAN);
        let events = events.into_iter().map(|e| self.ctx.event(e)).collect();
        let exception = exception.map(|e| self.ctx.exception(e));
        // Disjoint fields: the owner is read where the scope is changed, not copied.
        let ctx = &mut *self.ctx;
        ctx.scope
            .end(&ctx.owner, span, outcome, attributes, events, exception);
    }

    fn set_attributes(&mut self, span: u64, attributes: Vec<wit::KeyValue>) {
        let attributes = self.ctx.attributes(attributes, MAX_ATTRIBUTES_PER_SPAN);
        let ctx = &mut *self.ctx;
        ctx.scope.set_attributes(&ctx.owner, span, attributes);
    }

    fn add_event(&mut self, span: u64, event: wit::Event) {
        let event = self.ctx.event(event);
        let ctx = &mut *self.ctx;
        ctx.scope.add_event(&ctx.owner, span, event);
    }

    fn record_exception(&mut self, span: u64, exception: wit::Exception) {
        let exception = self.ctx.exception(exception);
        let ctx = &mut *self.ctx;
        ctx.scope.record_exception(&ctx.owner, span, exception);
    }

    fn add_link(&mut self, span: u64, context: wit::TraceContext, attributes: Vec<wit::KeyValue>) {
        // An invalid context is counted (as an invalid parent would be) and ignored.
        let Some(context) = self
            .ctx
            .scope
            .parse_parent(&context.traceparent, &context.tracestate)
        else {
            return;
        };
        let attributes = self.ctx.attributes(attributes, MAX_ATTRIBUTES_PER_EVENT);
        let ctx = &mut *self.ctx;
        ctx.scope.add_link(&ctx.owner, span, context, attributes);
    }

    fn current_context(&mut self) -> wit::TraceContext {
        let (traceparent, tracestate) = self.ctx.scope.current_context();
        wit::TraceContext {
            traceparent,
            tracestate,
        }
    }

    fn baggage_get(&mut self, key: String) -> Option<String> {
        self.ctx.scope.baggage(&key).map(str::to_owned)
    }

    fn baggage_all(&mut self) -> Vec<(String, String)> {
        self.ctx.scope.baggage_entries().to_vec()
    }

    fn baggage_set(&mut self, key: String, value: String) -> bool {
        self.ctx.scope.set_baggage(&key, &value)
    }
}

/// Link the `tracing` interface; `get` gives the view of a store's [`TracingCtx`]. The
/// `metrics` and `progress` capabilities link the same way ([`metrics::add_to_linker`],
/// [`progress::add_to_linker`]), each through its own view of the one context: all three
/// read the scope of the request the component is serving.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> WwTracing<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasTracing>(linker, get)
}

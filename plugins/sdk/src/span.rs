//! Spans as guards: started on creation, ended on drop, with attributes and events
//! buffered in the guest.
//!
//! A span's start is deferred: the guard notes the time (a wall-clock read) and tells the
//! host nothing. If the span ends with nothing in between needing the host to know it,
//! the whole span goes over in one call at its end (`record-span`). Whatever needs it
//! first — a span started inside it, a routed call, an outgoing HTTP request, a metric
//! (for its exemplar), [`get_trace_context`] — sends the start (`start-span-at`, with
//! the noted time) and the span ends with `end-span`, as every span did before: two
//! calls. So the host's span stack is right at every moment it is looked at.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt::{Debug, Display};
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

use smallvec::SmallVec;

use crate::bindings::ww::memory::tracing as wit;
use crate::value::{KeyValue, Value, kv, lend};

/// A span's own attributes: the usual handful live inline, no allocation per span.
type Attributes = SmallVec<[KeyValue; 4]>;

/// OpenTelemetry span kinds.
pub use wit::SpanKind;

/// How a span ended.
#[derive(Debug, Clone, PartialEq)]
enum Status {
    Unset,
    Ok,
    Error(String),
}

/// An exception: becomes the `exception` event and ERROR status.
#[derive(Debug, Clone, PartialEq)]
struct Exception {
    kind: String,
    message: String,
    stacktrace: Option<String>,
}

/// A buffered event.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    name: Cow<'static, str>,
    time_unix_nano: Option<u64>,
    attributes: Vec<KeyValue>,
}

/// Whether the host knows a span yet.
enum HostSide {
    /// Not yet: what its start will say when it is sent.
    Deferred {
        name: Cow<'static, str>,
        kind: SpanKind,
        start_unix_nano: u64,
    },
    /// Started; the host's handle.
    Started(u64),
}

/// A span's buffered state while it is open in this component.
struct OpenSpan {
    /// The guard's key, this component's own (the host's handle exists only once the
    /// start is sent).
    id: u64,
    host: HostSide,
    /// Attributes not yet sent (a deferred span's initial ones among them).
    attributes: Attributes,
    events: Vec<Event>,
    status: Status,
    exception: Option<Exception>,
}

impl OpenSpan {
    /// Send a deferred start; the host's handle either way.
    fn started(&mut self) -> u64 {
        let handle = match &self.host {
            HostSide::Started(handle) => return *handle,
            HostSide::Deferred {
                name,
                kind,
                start_unix_nano,
            } => {
                let mut scratch = Vec::new();
                let attributes = lend(&self.attributes, &mut scratch);
                wit::start_span_at(name, *kind, &attributes, None, *start_unix_nano)
            }
        };
        self.attributes.clear();
        self.host = HostSide::Started(handle);
        handle
    }

    /// The last host call of a span: the whole span when its start was never sent, its
    /// end otherwise.
    fn end(mut self) {
        // `record-span` carries no exception: a span ending with one takes two calls.
        if self.exception.is_some() {
            self.started();
        }
        let status = match &self.status {
            Status::Unset => wit::Status::Unset,
            Status::Ok => wit::Status::Ok,
            Status::Error(message) => wit::Status::Error(message),
        };
        let mut scratch = Vec::new();
        let attributes = lend(&self.attributes, &mut scratch);
        let mut event_scratch: Vec<Vec<Vec<&str>>> =
            self.events.iter().map(|_| Vec::new()).collect();
        let event_attributes: Vec<_> = self
            .events
            .iter()
            .zip(event_scratch.iter_mut())
            .map(|(event, scratch)| lend(&event.attributes, scratch))
            .collect();
        let events: Vec<wit::Event<'_>> = self
            .events
            .iter()
            .zip(&event_attributes)
            .map(|(event, attributes)| wit::Event {
                name: &event.name,
                time_unix_nano: event.time_unix_nano,
                attributes,
            })
            .collect();
        match &self.host {
            HostSide::Deferred {
                name,
                kind,
                start_unix_nano,
            } => wit::record_span(name, *kind, *start_unix_nano, status, &attributes, &events),
            HostSide::Started(handle) => {
                let exception = self.exception.as_ref().map(|e| wit::Exception {
                    type_: &e.kind,
                    message: &e.message,
                    stacktrace: e.stacktrace.as_deref(),
                });
                wit::end_span(*handle, status, &attributes, &events, exception);
            }
        }
    }
}

thread_local! {
    /// This component's open spans, outermost first. Components are single-threaded.
    /// Only the last can be deferred: starting a span sends its parent's start.
    static OPEN: RefCell<Vec<OpenSpan>> = const { RefCell::new(Vec::new()) };
    /// The next guard key.
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// Send every deferred start, so that the host's span stack is this component's: called
/// before anything that makes the host look at it (routed calls, outgoing requests,
/// metrics, the current context). Costs nothing when no start is deferred.
pub fn flush_span_starts() {
    OPEN.with(|open| {
        if let Ok(mut open) = open.try_borrow_mut() {
            for span in open.iter_mut() {
                span.started();
            }
        }
    });
}

static PANIC_HOOK: Once = Once::new();

/// A panic aborts the component (wasm has no unwinding), so no guard's `Drop` runs.
/// The hook ends every open span of this component as ERROR with an `exception` event
/// first; the host then sees the trap and marks the request.
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".to_owned());
            let location = info
                .location()
                .map(|l| format!("at {}:{}:{}", l.file(), l.line(), l.column()));
            let spans =
                OPEN.with(|open| open.try_borrow_mut().map(|mut o| std::mem::take(&mut *o)));
            if let Ok(spans) = spans {
                for mut span in spans.into_iter().rev() {
                    span.status = Status::Error(format!("panic: {message}"));
                    span.exception = Some(Exception {
                        kind: "panic".to_owned(),
                        message: message.clone(),
                        stacktrace: location.clone(),
                    });
                    span.end();
                }
            }
            previous(info);
        }));
    });
}

fn now_unix_nano() -> Option<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
}

/// Run `f` on the buffered state of the span with key `id`, or of the innermost open span
/// of this component when `id` is `None`. Returns `None` when there is no such open span.
fn with_open<R>(id: Option<u64>, f: impl FnOnce(&mut OpenSpan) -> R) -> Option<R> {
    OPEN.with(|open| {
        let mut open = open.borrow_mut();
        let span = match id {
            Some(id) => open.iter_mut().rev().find(|s| s.id == id),
            None => open.last_mut(),
        };
        span.map(f)
    })
}

/// Starts a span with a kind, initial attributes or an explicit remote parent.
#[must_use = "call .start() to open the span"]
pub struct SpanBuilder {
    name: Cow<'static, str>,
    kind: SpanKind,
    attributes: Attributes,
    remote_parent: Option<TraceContext>,
}

impl SpanBuilder {
    /// A builder for an INTERNAL span named `name`.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            kind: SpanKind::Internal,
            attributes: Attributes::new(),
            remote_parent: None,
        }
    }

    /// Set the span kind.
    pub fn kind(mut self, kind: SpanKind) -> Self {
        self.kind = kind;
        self
    }

    /// Add an initial attribute (sent with the start, visible to samplers).
    pub fn attr(mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Value>) -> Self {
        self.attributes.push(kv(key, value));
        self
    }

    /// Parent the span under a W3C `traceparent` received from elsewhere instead of the
    /// current span of the request.
    pub fn remote_parent(
        mut self,
        traceparent: impl Into<String>,
        tracestate: impl Into<String>,
    ) -> Self {
        self.remote_parent = Some(TraceContext {
            traceparent: traceparent.into(),
            tracestate: tracestate.into(),
        });
        self
    }

    /// Open the span. Its start is deferred (see [the module](self)) unless it has a
    /// remote parent, which is sent at once.
    pub fn start(self) -> Span {
        install_panic_hook();
        // This span's parent (if deferred) must be known to the host before it is.
        flush_span_starts();
        let id = NEXT_ID.with(|next| next.replace(next.get().wrapping_add(1)));
        let deferred = match (&self.remote_parent, now_unix_nano()) {
            (None, Some(start_unix_nano)) => Some(start_unix_nano),
            _ => None,
        };
        let (host, attributes) = match deferred {
            Some(start_unix_nano) => (
                HostSide::Deferred {
                    name: self.name,
                    kind: self.kind,
                    start_unix_nano,
                },
                self.attributes,
            ),
            None => {
                let mut scratch = Vec::new();
                let attributes = lend(&self.attributes, &mut scratch);
                let remote_parent = self.remote_parent.as_ref().map(|p| wit::TraceContextParam {
                    traceparent: &p.traceparent,
                    tracestate: &p.tracestate,
                });
                let handle = wit::start_span(&self.name, self.kind, &attributes, remote_parent);
                (HostSide::Started(handle), Attributes::new())
            }
        };
        OPEN.with(|open| {
            open.borrow_mut().push(OpenSpan {
                id,
                host,
                attributes,
                events: Vec::new(),
                status: Status::Unset,
                exception: None,
            })
        });
        Span { id }
    }
}

/// An open span. It ends when dropped (or with [`Span::end`]); attributes and events added
/// meanwhile are buffered and sent with the end.
#[must_use = "a span ends when this guard is dropped"]
pub struct Span {
    id: u64,
}

/// Open an INTERNAL span named `name` as the current span of this component.
///
/// ```no_run
/// let _span = ww_guest::span("batch_processing").attr("batch_size", 100);
/// ```
pub fn span(name: impl Into<Cow<'static, str>>) -> Span {
    SpanBuilder::new(name).start()
}

impl Span {
    /// Add an attribute (builder style).
    pub fn attr(self, key: impl Into<Cow<'static, str>>, value: impl Into<Value>) -> Self {
        self.set_attribute(key, value);
        self
    }

    /// Add an attribute.
    pub fn set_attribute(&self, key: impl Into<Cow<'static, str>>, value: impl Into<Value>) {
        let attribute = kv(key, value);
        with_open(Some(self.id), |s| s.attributes.push(attribute));
    }

    /// Add an event with attributes, timestamped now.
    pub fn add_event(&self, name: impl Into<Cow<'static, str>>, attributes: Vec<KeyValue>) {
        let event = Event {
            name: name.into(),
            time_unix_nano: now_unix_nano(),
            attributes,
        };
        with_open(Some(self.id), |s| s.events.push(event));
    }

    /// Mark the span OK.
    pub fn set_ok(&self) {
        with_open(Some(self.id), |s| s.status = Status::Ok);
    }

    /// Record an error: status ERROR and an `exception` event.
    pub fn record_error(&self, error_type: &str, message: impl Into<String>) {
        let message = message.into();
        with_open(Some(self.id), |s| {
            s.status = Status::Error(message.clone());
            s.exception = Some(Exception {
                kind: error_type.to_owned(),
                message,
                stacktrace: None,
            });
        });
    }

    /// The host's handle of this span (sending its start, if deferred).
    pub fn handle(&self) -> u64 {
        with_open(Some(self.id), OpenSpan::started).unwrap_or(0)
    }

    /// End the span now (the same as dropping it).
    pub fn end(self) {}
}

impl Drop for Span {
    fn drop(&mut self) {
        let span = OPEN.with(|open| {
            let mut open = open.borrow_mut();
            let index = open.iter().rposition(|s| s.id == self.id)?;
            Some(open.remove(index))
        });
        if let Some(span) = span {
            span.end();
        }
    }
}

/// Add an attribute to this component's current span (or, when it has none open, to the
/// innermost open span of the request).
pub fn add_span_attribute(key: impl Into<Cow<'static, str>>, value: impl Into<Value>) {
    let attribute = kv(key, value);
    let mut pending = Some(attribute);
    with_open(None, |s| s.attributes.extend(pending.take()));
    if let Some(attribute) = pending {
        let mut scratch = Vec::new();
        wit::set_attributes(0, &lend(std::slice::from_ref(&attribute), &mut scratch));
    }
}

/// Add an event to this component's current span (or the request's innermost span).
pub fn add_span_event(name: impl Into<Cow<'static, str>>, attributes: Vec<KeyValue>) {
    let event = Event {
        name: name.into(),
        time_unix_nano: now_unix_nano(),
        attributes,
    };
    let mut pending = Some(event);
    with_open(None, |s| s.events.extend(pending.take()));
    if let Some(event) = pending {
        let mut scratch = Vec::new();
        let attributes = lend(&event.attributes, &mut scratch);
        wit::add_event(
            0,
            wit::Event {
                name: &event.name,
                time_unix_nano: event.time_unix_nano,
                attributes: &attributes,
            },
        );
    }
}

/// Link this component's current span (or the request's innermost span) to the span
/// `trace_id` / `span_id` name — of this trace or another: an OpenTelemetry span link,
/// which trace viewers follow (from a recall to the requests that wrote what it found).
/// Ids that are not W3C ids are ignored by the host and counted.
pub fn add_span_link(trace_id: &str, span_id: &str, attributes: Vec<KeyValue>) {
    let handle = with_open(None, OpenSpan::started).unwrap_or(0);
    let traceparent = format!("00-{trace_id}-{span_id}-01");
    let mut scratch = Vec::new();
    wit::add_link(
        handle,
        wit::TraceContextParam {
            traceparent: &traceparent,
            tracestate: "",
        },
        &lend(&attributes, &mut scratch),
    );
}

/// The W3C trace context of the innermost open span of the current request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-<trace id>-<span id>-<flags>`.
    pub traceparent: String,
    /// Vendor-specific trace state, possibly empty.
    pub tracestate: String,
}

impl TraceContext {
    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or("")
    }

    /// The 16-hex-digit span id.
    pub fn span_id(&self) -> &str {
        self.traceparent.get(36..52).unwrap_or("")
    }

    /// Whether the span is sampled.
    pub fn sampled(&self) -> bool {
        self.traceparent.ends_with("-01")
    }

    /// As a `traceparent` / `tracestate` map, ready to inject into outgoing headers.
    pub fn to_map(&self) -> Vec<(String, String)> {
        let mut map = vec![("traceparent".to_owned(), self.traceparent.clone())];
        if !self.tracestate.is_empty() {
            map.push(("tracestate".to_owned(), self.tracestate.clone()));
        }
        map
    }
}

/// The trace context of the innermost open span of the current request, across all
/// components.
pub fn get_trace_context() -> TraceContext {
    flush_span_starts();
    let cx = wit::current_context();
    TraceContext {
        traceparent: cx.traceparent,
        tracestate: cx.tracestate,
    }
}

/// Whether the host records spans (false when tracing is disabled).
pub fn tracing_enabled() -> bool {
    wit::enabled()
}

/// Support for `#[traced]`; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// Wraps an error so the macro can prefer `Display` and fall back to `Debug`.
    pub struct ErrorText<'a, E>(pub &'a E);

    pub trait ViaDisplay {
        fn error_text(&self) -> String;
    }
    impl<E: Display> ViaDisplay for ErrorText<'_, E> {
        fn error_text(&self) -> String {
            self.0.to_string()
        }
    }

    pub trait ViaDebug {
        fn error_text(&self) -> String;
    }
    impl<E: Debug> ViaDebug for &ErrorText<'_, E> {
        fn error_text(&self) -> String {
            format!("{:?}", self.0)
        }
    }

    /// The unqualified name of an error type, for `exception.type`.
    pub fn type_name_of<E>(_: &E) -> &'static str {
        std::any::type_name::<E>()
    }

    pub fn start(name: &'static str, kind: SpanKind) -> Span {
        SpanBuilder::new(name).kind(kind).start()
    }
}

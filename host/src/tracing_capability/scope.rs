//! The span stack of one request. It travels with the request from store to store, so a
//! span opened by any component parents under the innermost span open *in that request*,
//! whichever component opened it.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::Span;
use tokio_util::sync::CancellationToken;

use super::limits::*;
use super::w3c::{self, IncomingContext};
use crate::telemetry::Telemetry;

/// Who opened a span: the host (gateway, boundary spans) or a named component.
pub type Owner = Option<Arc<str>>;

/// A handle no span ever has: returned when a span is refused, ignored everywhere.
pub const REFUSED_HANDLE: u64 = u64::MAX;

/// An exception to record: the semantic-convention `exception` event plus ERROR status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    /// `exception.type`.
    pub kind: String,
    /// `exception.message`.
    pub message: String,
    /// `exception.stacktrace`.
    pub stacktrace: Option<String>,
}

/// A span event before conversion.
#[derive(Debug, Clone)]
pub struct Event {
    /// Name.
    pub name: String,
    /// When it happened; `None` for now.
    pub time: Option<SystemTime>,
    /// Attributes.
    pub attributes: Vec<KeyValue>,
}

/// How a span ended.
#[derive(Debug, Clone, Default)]
pub enum Outcome {
    /// Nothing said.
    #[default]
    Unset,
    /// Success.
    Ok,
    /// Failure with a description.
    Error(String),
}

struct OpenSpan {
    handle: u64,
    span: Span,
    context: SpanContext,
    /// This span as a parent, built when its first child starts and reused after.
    as_parent: Option<Context>,
    owner: Owner,
    attributes: usize,
    events: usize,
    links: usize,
}

/// Where a request's progress reports go (done, total — 0 when unknown —, message); the
/// MCP gateway turns them into progress notifications.
pub type ProgressSink = Arc<dyn Fn(u64, u64, &str) + Send + Sync>;

/// The span stack and baggage of one request.
pub struct RequestScope {
    telemetry: Arc<Telemetry>,
    progress: Option<ProgressSink>,
    /// Cancelled when the client cancels the request or goes away.
    cancellation: Option<CancellationToken>,
    /// Open spans in start order; the last is the innermost.
    open: Vec<OpenSpan>,
    /// The parent of the request's first span, when the request came with one.
    remote_parent: Option<SpanContext>,
    baggage: Vec<(String, String)>,
}

impl std::fmt::Debug for RequestScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestScope")
            .field("open", &self.open.len())
            .field("remote_parent", &self.remote_parent)
            .finish()
    }
}

impl RequestScope {
    /// A scope for a new request, under `parent` when one was received (an invalid one is
    /// counted and ignored), carrying the W3C `baggage` header if any.
    pub fn new(
        telemetry: Arc<Telemetry>,
        parent: Option<&IncomingContext>,
        baggage: Option<&str>,
    ) -> Self {
        let mut scope = Self {
            telemetry,
            progress: None,
            cancellation: None,
            open: Vec::new(),
            remote_parent: None,
            baggage: Vec::new(),
        };
        scope.remote_parent =
            parent.and_then(|p| scope.parse_parent(&p.traceparent, &p.tracestate));
        for (key, value) in baggage.map(w3c::parse_baggage).unwrap_or_default() {
            scope.set_baggage(&key, &value);
        }
        scope
    }

    /// A remote parent from its W3C strings; an invalid one is counted and ignored.
    pub fn parse_parent(&self, traceparent: &str, tracestate: &str) -> Option<SpanContext> {
        let parsed = w3c::parse_traceparent(traceparent, tracestate);
        self.count(|c| &c.invalid_parents, u64::from(parsed.is_none()));
        parsed
    }

    /// Send this request's progress reports to `sink`.
    pub fn set_progress(&mut self, sink: Option<ProgressSink>) {
        self.progress = sink;
    }

    /// A component's progress report, passed on when the request has a sink.
    pub fn report_progress(&self, done: u64, total: u64, message: &str) {
        if let Some(sink) = &self.progress {
            sink(done, total, message);
        }
    }

    /// Cancel this request when `token` is cancelled.
    pub fn set_cancellation(&mut self, token: Option<CancellationToken>) {
        self.cancellation = token;
    }

    /// Whether the request was cancelled: the components' long operations stop at their
    /// next step.
    pub fn is_cancelled(&self) -> bool {
        self.cancellation
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// The telemetry this scope records into.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Spans currently open.
    pub fn open_spans(&self) -> usize {
        self.open.len()
    }

    fn count(
        &self,
        counter: fn(&crate::telemetry::GuestLimitCounters) -> &std::sync::atomic::AtomicU64,
        n: u64,
    ) {
        if n > 0 {
            counter(&self.telemetry.guest_limits).fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The context of the open span `handle`.
    pub fn span_context(&self, handle: u64) -> Option<&SpanContext> {
        self.open
            .iter()
            .find(|s| s.handle == handle)
            .map(|s| &s.context)
    }

    /// The context of the innermost open span, else the remote parent.
    pub fn current(&self) -> Option<&SpanContext> {
        self.open
            .last()
            .map(|s| &s.context)
            .or(self.remote_parent.as_ref())
    }

    /// `traceparent`/`tracestate` of the innermost span. Always valid: with nothing open
    /// and no remote parent it is a fresh, unsampled context.
    pub fn current_context(&self) -> (String, String) {
        match self.current() {
            Some(context) => w3c::format_context(context),
            None => {
                let span = self
                    .telemetry
                    .tracer()
                    .build_with_context(SpanBuilder::from_name("unsampled"), &Context::new());
                let context = span.span_context().clone();
                w3c::format_context(&SpanContext::new(
                    context.trace_id(),
                    context.span_id(),
                    opentelemetry::trace::TraceFlags::default(),
                    false,
                    Default::default(),
                ))
            }
        }
    }

    /// Open a span under `parent` (when valid) or the innermost open span.
    pub fn start(
        &mut self,
        owner: Owner,
        name: Cow<'static, str>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
        parent: Option<SpanContext>,
    ) -> u64 {
        if self.open.len() >= MAX_OPEN_SPANS_PER_REQUEST {
            self.count(|c| &c.refused_spans, 1);
            return REFUSED_HANDLE;
        }
        let parent_cx = match (parent, self.open.last_mut()) {
            (Some(explicit), _) => Context::new().with_remote_span_context(explicit),
            (None, Some(innermost)) => innermost
                .as_parent
                .get_or_insert_with(|| {
                    Context::new().with_remote_span_context(innermost.context.clone())
                })
                .clone(),
            (None, None) => match &self.remote_parent {
                Some(remote) => Context::new().with_remote_span_context(remote.clone()),
                None => Context::new(),
            },
        };
        let attribute_count = attributes.len();
        let tracer = self.telemetry.tracer();
        let span = tracer.build_with_context(
            SpanBuilder::from_name(name)
                .with_kind(kind)
                .with_attributes(attributes),
            &parent_cx,
        );
        let handle = self.telemetry.next_span_handle();
        self.open.push(OpenSpan {
            handle,
            as_parent: None,
            context: span.span_context().clone(),
            span,
            owner,
            attributes: attribute_count,
            events: 0,
            links: 0,
        });
        handle
    }

    /// Find an open span: `0` is the innermost; otherwise the handle, which `owner` must
    /// have opened. Unknown handles are counted.
    fn find(&mut self, owner: &Owner, handle: u64, any_owner_for_innermost: bool) -> Option<usize> {
        let index = if handle == 0 && any_owner_for_innermost {
            self.open.len().checked_sub(1)
        } else {
            self.open
                .iter()
                .rposition(|s| s.handle == handle && s.owner == *owner)
        };
        if index.is_none() && handle != REFUSED_HANDLE {
            self.count(|c| &c.invalid_handles, 1);
        }
        index
    }

    /// Add attributes to an open span, within the per-span limit.
    pub fn set_attributes(&mut self, owner: &Owner, handle: u64, attributes: Vec<KeyValue>) {
        let Some(index) = self.find(owner, handle, true) else {
            return;
        };
        self.set_attributes_at(index, attributes);
    }

    fn set_attributes_at(&mut self, index: usize, attributes: Vec<KeyValue>) {
        let Some(span) = self.open.get_mut(index) else {
            return;
        };
        let room = MAX_ATTRIBUTES_PER_SPAN.saturating_sub(span.attributes);
        let dropped = attributes.len().saturating_sub(room);
        let kept = attributes.len() - dropped;
        span.attributes += kept;
        span.span.set_attributes(attributes.into_iter().take(kept));
        self.count(|c| &c.dropped_attributes, dropped as u64);
    }

    /// Add an event to an open span, within the per-span limit.
    pub fn add_event(&mut self, owner: &Owner, handle: u64, event: Event) {
        let Some(index) = self.find(owner, handle, true) else {
            return;
        };
        self.push_event(index, event);
    }

    fn push_event(&mut self, index: usize, event: Event) {
        let Some(span) = self.open.get_mut(index) else {
            return;
        };
        if span.events >= MAX_EVENTS_PER_SPAN {
            self.count(|c| &c.dropped_events, 1);
            return;
        }
        span.events += 1;
        let time = event.time.unwrap_or_else(SystemTime::now);
        span.span
            .add_event_with_timestamp(event.name, time, event.attributes);
    }

    /// Link an open span to the span `context` names (any trace), within the per-span
    /// limit.
    pub fn add_link(
        &mut self,
        owner: &Owner,
        handle: u64,
        context: SpanContext,
        attributes: Vec<KeyValue>,
    ) {
        let Some(index) = self.find(owner, handle, true) else {
            return;
        };
        let Some(span) = self.open.get_mut(index) else {
            return;
        };
        if span.links >= MAX_LINKS_PER_SPAN {
            self.count(|c| &c.dropped_links, 1);
            return;
        }
        span.links += 1;
        span.span.add_link(context, attributes);
    }

    /// Record an exception on an open span: an `exception` event and ERROR status.
    pub fn record_exception(&mut self, owner: &Owner, handle: u64, exception: Exception) {
        let Some(index) = self.find(owner, handle, true) else {
            return;
        };
        self.record_exception_at(index, exception);
    }

    fn record_exception_at(&mut self, index: usize, exception: Exception) {
        let mut attributes = vec![
            KeyValue::new("exception.type", exception.kind),
            KeyValue::new("exception.message", exception.message.clone()),
        ];
        if let Some(stack) = exception.stacktrace {
            attributes.push(KeyValue::new("exception.stacktrace", stack));
        }
        // The exception event is what backends look for; it bypasses the event limit.
        let Some(span) = self.open.get_mut(index) else {
            return;
        };
        span.span.add_event("exception", attributes);
        span.span.set_status(Status::error(exception.message));
    }

    /// End a span `owner` opened, with its final attributes, events and status.
    pub fn end(
        &mut self,
        owner: &Owner,
        handle: u64,
        outcome: Outcome,
        attributes: Vec<KeyValue>,
        events: Vec<Event>,
        exception: Option<Exception>,
    ) {
        let Some(index) = self.find(owner, handle, false) else {
            return;
        };
        if !attributes.is_empty() {
            self.set_attributes_at(index, attributes);
        }
        for event in events {
            self.push_event(index, event);
        }
        if let Some(exception) = exception {
            self.record_exception_at(index, exception);
        }
        let mut span = self.open.remove(index);
        match outcome {
            Outcome::Unset => {}
            Outcome::Ok => span.span.set_status(Status::Ok),
            // Where an exception already set ERROR, the SDK keeps that first description.
            Outcome::Error(description) => span.span.set_status(Status::error(description)),
        }
        span.span.end();
    }

    /// End every span `owner` still has open, innermost first, as failed with
    /// `exception` (a trapped component cannot end its own).
    pub fn fail_spans_of(&mut self, owner: &Owner, exception: &Exception) {
        while let Some(index) = self.open.iter().rposition(|s| s.owner == *owner) {
            self.record_exception_at(index, exception.clone());
            let mut span = self.open.remove(index);
            span.span
                .set_attribute(KeyValue::new("ww.span.ended_by_host", true));
            span.span.end();
        }
    }

    /// End every span still open (the request is over), innermost first, marked
    /// `ww.span.ended_by_host`. Host-owned spans end normally.
    pub fn finish(mut self) {
        self.close_all();
    }

    fn close_all(&mut self) {
        while let Some(mut span) = self.open.pop() {
            if span.owner.is_some() {
                self.telemetry
                    .guest_limits
                    .unclosed_spans
                    .fetch_add(1, Ordering::Relaxed);
                span.span
                    .set_attribute(KeyValue::new("ww.span.ended_by_host", true));
            }
            span.span.end();
        }
    }

    /// A baggage entry.
    pub fn baggage(&self, key: &str) -> Option<&str> {
        self.baggage
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every baggage entry.
    pub fn baggage_entries(&self) -> &[(String, String)] {
        &self.baggage
    }

    /// Set a baggage entry within the W3C limits; false (and counted) when refused.
    pub fn set_baggage(&mut self, key: &str, value: &str) -> bool {
        let existing = self.baggage.iter().position(|(k, _)| k == key);
        let size_without: usize = self
            .baggage
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != existing)
            .map(|(_, (k, v))| k.len() + v.len() + 2)
            .sum();
        let fits = size_without + key.len() + value.len() + 2 <= MAX_BAGGAGE_BYTES
            && (existing.is_some() || self.baggage.len() < MAX_BAGGAGE_ENTRIES);
        if !w3c::is_baggage_key(key) || !fits {
            self.count(|c| &c.refused_baggage, 1);
            return false;
        }
        match existing.and_then(|i| self.baggage.get_mut(i)) {
            Some(entry) => entry.1 = value.to_owned(),
            None => self.baggage.push((key.to_owned(), value.to_owned())),
        }
        true
    }
}

impl Drop for RequestScope {
    /// A finished request's scope is empty ([`RequestScope::finish`]). One dropped with
    /// spans open was abandoned: its future was dropped mid-call (a cancelled request
    /// whose call did not stop in time, a server shutting down). Its spans still end, as
    /// an open span that is never ended is never exported, marked `ww.cancelled`; the
    /// outermost, the request's own, failed with the reason.
    fn drop(&mut self) {
        if self.open.is_empty() {
            return;
        }
        for open in &mut self.open {
            open.span.set_attribute(KeyValue::new("ww.cancelled", true));
        }
        let abandoned = Exception {
            kind: "cancelled".to_owned(),
            message: "the request was abandoned before its call returned".to_owned(),
            stacktrace: None,
        };
        self.record_exception_at(0, abandoned);
        self.close_all();
    }
}

/// Sanity bound for guest-supplied event times: not before 2000, not in the future.
pub fn plausible_time(nanos: u64) -> Option<SystemTime> {
    const Y2000_NANOS: u64 = 946_684_800_000_000_000;
    let time = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
    (nanos >= Y2000_NANOS && time <= SystemTime::now() + Duration::from_secs(60)).then_some(time)
}

#[cfg(test)]
mod tests {
    //! The span stack's rules, checked without any component.

    use std::sync::Arc;

    use opentelemetry::trace::{SpanId, SpanKind, Status};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};

    use super::*;
    use crate::telemetry::{Telemetry, TelemetryConfig};

    fn recording() -> (
        tokio::runtime::Runtime,
        Arc<Telemetry>,
        InMemorySpanExporter,
    ) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let exporter = InMemorySpanExporter::default();
        let telemetry = Telemetry::builder(TelemetryConfig::default())
            .with_exporter("memory", exporter.clone())
            .build(runtime.handle())
            .expect("telemetry");
        (runtime, telemetry, exporter)
    }

    fn finished(
        runtime: &tokio::runtime::Runtime,
        telemetry: &Telemetry,
        exporter: &InMemorySpanExporter,
    ) -> Vec<SpanData> {
        runtime.block_on(telemetry.flush());
        exporter.get_finished_spans().expect("spans")
    }

    fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}"))
    }

    fn owner(name: &str) -> Owner {
        Some(Arc::from(name))
    }

    fn start(scope: &mut RequestScope, who: &Owner, name: &'static str) -> u64 {
        scope.start(
            who.clone(),
            Cow::Borrowed(name),
            SpanKind::Internal,
            vec![],
            None,
        )
    }

    fn end(scope: &mut RequestScope, who: &Owner, handle: u64) {
        scope.end(who, handle, Outcome::Unset, vec![], vec![], None);
    }

    #[test]
    fn spans_parent_under_the_innermost_open_span_whoever_opened_it() {
        let (runtime, telemetry, exporter) = recording();
        let (a, b) = (owner("a"), owner("b"));
        let mut scope = RequestScope::new(telemetry.clone(), None, None);
        let root = start(&mut scope, &None, "root");
        let in_a = start(&mut scope, &a, "a.work");
        let in_b = start(&mut scope, &b, "b.work");
        end(&mut scope, &b, in_b);
        let after_b = start(&mut scope, &a, "a.after");
        end(&mut scope, &a, after_b);
        end(&mut scope, &a, in_a);
        end(&mut scope, &None, root);
        let spans = finished(&runtime, &telemetry, &exporter);
        let id = |n: &str| span(&spans, n).span_context.span_id();
        assert_eq!(span(&spans, "root").parent_span_id, SpanId::INVALID);
        assert_eq!(span(&spans, "a.work").parent_span_id, id("root"));
        assert_eq!(span(&spans, "b.work").parent_span_id, id("a.work"));
        assert_eq!(span(&spans, "a.after").parent_span_id, id("a.work"));
        assert_eq!(
            telemetry
                .stats()
                .guest_limits
                .iter()
                .map(|(_, n)| n)
                .sum::<u64>(),
            0
        );
    }

    #[test]
    fn a_component_cannot_end_or_fail_another_ones_span() {
        let (runtime, telemetry, exporter) = recording();
        let (a, b) = (owner("a"), owner("b"));
        let mut scope = RequestScope::new(telemetry.clone(), None, None);
        let in_a = start(&mut scope, &a, "a.work");
        end(&mut scope, &b, in_a);
        assert_eq!(scope.open_spans(), 1, "b's end of a's span is ignored");
        // Handle 0 ("innermost") may annotate any span, but never end one.
        scope.set_attributes(&b, 0, vec![KeyValue::new("from.b", true)]);
        end(&mut scope, &b, 0);
        assert_eq!(scope.open_spans(), 1);
        scope.fail_spans_of(
            &b,
            &Exception {
                kind: "t".into(),
                message: "m".into(),
                stacktrace: None,
            },
        );
        assert_eq!(scope.open_spans(), 1, "failing b leaves a's span alone");
        end(&mut scope, &a, in_a);
        let spans = finished(&runtime, &telemetry, &exporter);
        let work = span(&spans, "a.work");
        assert_eq!(work.status, Status::Unset);
        assert!(work.attributes.iter().any(|kv| kv.key.as_str() == "from.b"));
        let invalid = telemetry
            .stats()
            .guest_limits
            .iter()
            .find(|(n, _)| *n == "invalid_handles")
            .map(|(_, v)| *v);
        assert_eq!(invalid, Some(2));
    }

    #[test]
    fn the_host_ends_what_a_request_left_open_innermost_first() {
        let (runtime, telemetry, exporter) = recording();
        let a = owner("a");
        let mut scope = RequestScope::new(telemetry.clone(), None, None);
        let _root = start(&mut scope, &None, "root");
        let outer = start(&mut scope, &a, "outer");
        let _inner = start(&mut scope, &a, "inner");
        // The parent ends first; its child stays open and keeps its parent.
        end(&mut scope, &a, outer);
        scope.finish();
        let spans = finished(&runtime, &telemetry, &exporter);
        let inner = span(&spans, "inner");
        assert_eq!(
            inner.parent_span_id,
            span(&spans, "outer").span_context.span_id()
        );
        assert!(
            inner
                .attributes
                .contains(&KeyValue::new("ww.span.ended_by_host", true))
        );
        assert!(
            !span(&spans, "root")
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "ww.span.ended_by_host")
        );
        assert!(inner.end_time <= span(&spans, "root").end_time);
    }

    #[test]
    fn a_remote_parent_roots_the_request_and_a_bad_one_is_counted() {
        let (runtime, telemetry, exporter) = recording();
        let parent =
            IncomingContext::traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let mut scope = RequestScope::new(telemetry.clone(), Some(&parent), None);
        let root = start(&mut scope, &None, "continued");
        end(&mut scope, &None, root);
        let bad =
            IncomingContext::traceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01");
        let mut scope = RequestScope::new(telemetry.clone(), Some(&bad), None);
        let root = start(&mut scope, &None, "fresh");
        end(&mut scope, &None, root);
        let spans = finished(&runtime, &telemetry, &exporter);
        let continued = span(&spans, "continued");
        assert_eq!(
            continued.span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(continued.parent_span_id.to_string(), "b7ad6b7169203331");
        assert!(continued.parent_span_is_remote);
        assert_eq!(span(&spans, "fresh").parent_span_id, SpanId::INVALID);
        let invalid = telemetry
            .stats()
            .guest_limits
            .iter()
            .find(|(n, _)| *n == "invalid_parents")
            .map(|(_, v)| *v);
        assert_eq!(invalid, Some(1));
    }

    #[test]
    fn baggage_keeps_to_w3c_limits() {
        let (_runtime, telemetry, _exporter) = recording();
        let mut scope = RequestScope::new(telemetry, None, Some("user=alice,bad key=x"));
        assert_eq!(scope.baggage("user"), Some("alice"));
        assert!(scope.set_baggage("user", "bob"), "replacing is fine");
        assert_eq!(scope.baggage("user"), Some("bob"));
        assert!(!scope.set_baggage("", "x"));
        assert!(!scope.set_baggage("a b", "x"));
        assert!(!scope.set_baggage("k", &"v".repeat(MAX_BAGGAGE_BYTES)));
        for i in 1..MAX_BAGGAGE_ENTRIES {
            assert!(scope.set_baggage(&format!("k{i}"), "v"), "entry {i}");
        }
        assert!(!scope.set_baggage("one-too-many", "v"));
        assert_eq!(scope.baggage_entries().len(), MAX_BAGGAGE_ENTRIES);
    }
}

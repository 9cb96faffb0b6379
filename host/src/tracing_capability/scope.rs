//! The span stack of one request. It travels with the request from store to store, so a
//! span opened by any component parents under the innermost span open *in that request*,
//! whichever component opened it.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Link, Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _,
    TraceId, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator, Span};
use tokio_util::sync::CancellationToken;

use super::limits::*;
use super::w3c::{self, IncomingContext};
use crate::telemetry::{Telemetry, ids};

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
    span: Body,
    context: SpanContext,
    /// This span as a parent, built when its first child starts and reused after.
    as_parent: Option<Context>,
    owner: Owner,
    attributes: usize,
    events: usize,
    links: usize,
}

/// What an open span is made of.
// The SDK span is nearly every span: it stays inline in the stack (no allocation per
// span); the rare guest span is the boxed one.
#[allow(clippy::large_enum_variant)]
enum Body {
    /// A span the host built through the SDK: our own `tracing` interface, the host's
    /// boundary spans.
    Sdk(Span),
    /// A span a guest opened through `wasi:otel`: the guest holds its data until `on-end`;
    /// what reaches it through the host meanwhile (another interface's attributes, log
    /// records as events) waits here.
    Guest(Box<GuestSpan>),
}

/// The host's side of a span a guest opened through `wasi:otel`.
struct GuestSpan {
    /// When the host saw it start (the guest's own start time wins when plausible).
    started: SystemTime,
    /// The request's innermost span when it started: its parent, whatever the guest says.
    parent: Option<SpanContext>,
    attributes: Vec<KeyValue>,
    events: Vec<opentelemetry::trace::Event>,
    links: Vec<Link>,
    status: Status,
}

impl Body {
    fn set_attributes(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        match self {
            Body::Sdk(span) => span.set_attributes(attributes),
            Body::Guest(guest) => guest.attributes.extend(attributes),
        }
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        self.set_attributes([attribute]);
    }

    fn add_event(&mut self, name: String, time: SystemTime, attributes: Vec<KeyValue>) {
        match self {
            Body::Sdk(span) => span.add_event_with_timestamp(name, time, attributes),
            Body::Guest(guest) => guest
                .events
                .push(opentelemetry::trace::Event::new(name, time, attributes, 0)),
        }
    }

    fn add_link(&mut self, context: SpanContext, attributes: Vec<KeyValue>) {
        match self {
            Body::Sdk(span) => span.add_link(context, attributes),
            Body::Guest(guest) => guest.links.push(Link::new(context, attributes, 0)),
        }
    }

    fn set_status(&mut self, status: Status) {
        match self {
            Body::Sdk(span) => span.set_status(status),
            // As the SDK does: a status only moves up the order UNSET < ERROR < OK.
            Body::Guest(guest) => {
                if status > guest.status {
                    guest.status = status;
                }
            }
        }
    }
}

/// A span a guest ended through `wasi:otel`, converted and within limits.
#[derive(Debug)]
pub struct GuestSpanEnd {
    /// The id the guest minted (and gave at `on-start`).
    pub span_id: SpanId,
    /// The parent the guest names; checked against the span that was innermost at start.
    pub parent_span_id: Option<SpanId>,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: SpanKind,
    /// Start and end, when plausible.
    pub start: Option<SystemTime>,
    /// See `start`.
    pub end: Option<SystemTime>,
    /// Attributes (the guest's instrumentation scope among them).
    pub attributes: Vec<KeyValue>,
    /// Events.
    pub events: Vec<Event>,
    /// Links: a context (any trace) and attributes.
    pub links: Vec<(SpanContext, Vec<KeyValue>)>,
    /// Status.
    pub outcome: Outcome,
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

    /// Count `n` on one of the guest-input counters.
    pub(super) fn count(
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
            None => w3c::format_context(&fresh_context()),
        }
    }

    /// The innermost span's context, the remote parent's, or a fresh, unsampled one.
    pub fn current_or_fresh(&self) -> SpanContext {
        self.current().cloned().unwrap_or_else(fresh_context)
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
        self.start_at(owner, name, kind, attributes, parent, None)
    }

    /// [`start`](Self::start) for a span that began at `start_time` (`None`: now).
    pub fn start_at(
        &mut self,
        owner: Owner,
        name: Cow<'static, str>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
        parent: Option<SpanContext>,
        start_time: Option<SystemTime>,
    ) -> u64 {
        if self.open.len() >= MAX_OPEN_SPANS_PER_REQUEST {
            self.count(|c| &c.refused_spans, 1);
            return REFUSED_HANDLE;
        }
        let parent_cx = match parent {
            Some(explicit) => Context::new().with_remote_span_context(explicit),
            None => self.innermost_as_parent(),
        };
        let attribute_count = attributes.len();
        let tracer = self.telemetry.tracer();
        let mut builder = SpanBuilder::from_name(name)
            .with_kind(kind)
            .with_attributes(attributes);
        // A start ahead of now (a guest's clock) would put the span after its children.
        builder.start_time = start_time.map(|t| t.min(SystemTime::now()));
        let span = tracer.build_with_context(builder, &parent_cx);
        let handle = self.telemetry.next_span_handle();
        self.open.push(OpenSpan {
            handle,
            as_parent: None,
            context: span.span_context().clone(),
            span: Body::Sdk(span),
            owner,
            attributes: attribute_count,
            events: 0,
            links: 0,
        });
        handle
    }

    /// The innermost open span as a parent context (built once per span and reused),
    /// else the remote parent, else none.
    fn innermost_as_parent(&mut self) -> Context {
        match self.open.last_mut() {
            Some(innermost) => innermost
                .as_parent
                .get_or_insert_with(|| {
                    Context::new().with_remote_span_context(innermost.context.clone())
                })
                .clone(),
            None => match &self.remote_parent {
                Some(remote) => Context::new().with_remote_span_context(remote.clone()),
                None => Context::new(),
            },
        }
    }

    /// A whole span in one go (`record-span`): it began at `start_time` (`None`: not known,
    /// a span of no length) and ends now, under the innermost open span, with nothing
    /// opened inside it. Attributes and events come converted and within the per-span
    /// limits (as the caller counted).
    pub fn record(
        &mut self,
        name: Cow<'static, str>,
        kind: SpanKind,
        start_time: Option<SystemTime>,
        outcome: Outcome,
        attributes: Vec<KeyValue>,
        events: Vec<Event>,
    ) {
        let end = SystemTime::now();
        // No plausible start, or one after the end (a guest's clock stepped back): a
        // span of no length.
        let start = start_time.map_or(end, |start| start.min(end));
        let parent_cx = self.innermost_as_parent();
        let mut builder = SpanBuilder::from_name(name)
            .with_kind(kind)
            .with_start_time(start)
            .with_attributes(attributes);
        if !events.is_empty() {
            let kept = events.len().min(MAX_EVENTS_PER_SPAN);
            self.count(|c| &c.dropped_events, (events.len() - kept) as u64);
            builder = builder.with_events(
                events
                    .into_iter()
                    .take(kept)
                    .map(|e| {
                        opentelemetry::trace::Event::new(
                            e.name,
                            e.time.unwrap_or(end),
                            e.attributes,
                            0,
                        )
                    })
                    .collect(),
            );
        }
        let mut span = self
            .telemetry
            .tracer()
            .build_with_context(builder, &parent_cx);
        match outcome {
            Outcome::Unset => {}
            Outcome::Ok => span.set_status(Status::Ok),
            Outcome::Error(description) => span.set_status(Status::error(description)),
        }
        span.end_with_timestamp(end);
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
        span.span.add_event(event.name, time, event.attributes);
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
        span.span
            .add_event("exception".to_owned(), SystemTime::now(), attributes);
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
        // A `wasi:otel` span ends through `on-end` only.
        if self
            .open
            .get(index)
            .is_some_and(|s| matches!(s.span, Body::Guest(_)))
        {
            self.count(|c| &c.invalid_handles, 1);
            return;
        }
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
        self.close(span);
    }

    /// End an open span: an SDK span ends; a guest's `wasi:otel` span that never got
    /// its `on-end` is exported by the host under the guest's id (its children name it
    /// as their parent), with what the host knows of it (the callers mark it
    /// `ww.span.ended_by_host`).
    fn close(&self, span: OpenSpan) {
        match span.span {
            Body::Sdk(mut sdk) => sdk.end(),
            Body::Guest(guest) => {
                self.emit_guest(
                    span.context.span_id(),
                    guest.parent,
                    SpanBuilder::from_name(UNENDED_GUEST_SPAN)
                        .with_start_time(guest.started)
                        .with_attributes(guest.attributes)
                        .with_events(guest.events)
                        .with_links(guest.links),
                    guest.status,
                    SystemTime::now(),
                );
            }
        }
    }

    /// Build and end the SDK span of a guest's span, under `parent`, with the guest's id.
    fn emit_guest(
        &self,
        span_id: SpanId,
        parent: Option<SpanContext>,
        builder: SpanBuilder,
        status: Status,
        end: SystemTime,
    ) {
        let parent_cx = match parent {
            Some(parent) => Context::new().with_remote_span_context(parent),
            None => Context::new(),
        };
        let tracer = self.telemetry.tracer();
        let mut span =
            ids::with_span_id(span_id, || tracer.build_with_context(builder, &parent_cx));
        span.set_status(status);
        span.end_with_timestamp(end);
    }

    /// A guest's `wasi:otel` span started: it becomes the request's innermost span, so
    /// whatever opens before it ends (the host's boundary spans, other components' spans)
    /// nests under it. Refused (and counted) when its ids are not usable: another trace
    /// than the request's, or a span id already open.
    pub fn start_guest(&mut self, owner: Owner, trace_id: TraceId, span_id: SpanId) {
        if self.open.len() >= MAX_OPEN_SPANS_PER_REQUEST {
            self.count(|c| &c.refused_spans, 1);
            return;
        }
        let parent = self.current().cloned();
        let foreign = match &parent {
            Some(parent) => parent.trace_id() != trace_id,
            None => false,
        };
        let taken = self.open.iter().any(|s| s.context.span_id() == span_id);
        if foreign || taken || trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            self.count(|c| &c.foreign_spans, 1);
            return;
        }
        let (flags, state) = match &parent {
            Some(parent) => (parent.trace_flags(), parent.trace_state().clone()),
            // Nothing to inherit from: sampled, so that the span is built and offered to
            // the sampler at its end like a root span.
            None => (
                opentelemetry::trace::TraceFlags::SAMPLED,
                Default::default(),
            ),
        };
        let handle = self.telemetry.next_span_handle();
        self.open.push(OpenSpan {
            handle,
            span: Body::Guest(Box::new(GuestSpan {
                started: SystemTime::now(),
                parent,
                attributes: Vec::new(),
                events: Vec::new(),
                links: Vec::new(),
                status: Status::Unset,
            })),
            context: SpanContext::new(trace_id, span_id, flags, false, state),
            as_parent: None,
            owner,
            attributes: 0,
            events: 0,
            links: 0,
        });
    }

    /// A guest's `wasi:otel` span ended: exported through the SDK under the guest's id,
    /// parented where it started. Ending a span that was not started (or was refused) is
    /// counted as an invalid handle; a parent that is not the one it started under is
    /// counted as an invalid parent and replaced.
    pub fn end_guest(&mut self, owner: &Owner, ended: GuestSpanEnd) {
        let found = self.open.iter().rposition(|s| {
            matches!(s.span, Body::Guest(_))
                && s.context.span_id() == ended.span_id
                && s.owner == *owner
        });
        let Some(index) = found else {
            self.count(|c| &c.invalid_handles, 1);
            return;
        };
        let open = self.open.remove(index);
        let Body::Guest(guest) = open.span else {
            return;
        };
        let expected = guest.parent.as_ref().map(SpanContext::span_id);
        if ended.parent_span_id != expected {
            self.count(|c| &c.invalid_parents, 1);
        }
        // What reached the span through the host first, then the guest's own, within
        // the per-span limits.
        let mut attributes = guest.attributes;
        attributes.extend(ended.attributes);
        let dropped = attributes.len().saturating_sub(MAX_ATTRIBUTES_PER_SPAN);
        attributes.truncate(MAX_ATTRIBUTES_PER_SPAN);
        self.count(|c| &c.dropped_attributes, dropped as u64);
        let mut events = guest.events;
        events.extend(ended.events.into_iter().map(|e| {
            opentelemetry::trace::Event::new(
                e.name,
                e.time.unwrap_or(guest.started),
                e.attributes,
                0,
            )
        }));
        let dropped = events.len().saturating_sub(MAX_EVENTS_PER_SPAN);
        events.truncate(MAX_EVENTS_PER_SPAN);
        self.count(|c| &c.dropped_events, dropped as u64);
        let mut links = guest.links;
        links.extend(
            ended
                .links
                .into_iter()
                .map(|(context, attributes)| Link::new(context, attributes, 0)),
        );
        let dropped = links.len().saturating_sub(MAX_LINKS_PER_SPAN);
        links.truncate(MAX_LINKS_PER_SPAN);
        self.count(|c| &c.dropped_links, dropped as u64);
        let start = ended.start.unwrap_or(guest.started);
        let end = ended
            .end
            .filter(|end| *end >= start)
            .unwrap_or_else(SystemTime::now);
        let mut status = guest.status;
        let said = match ended.outcome {
            Outcome::Unset => Status::Unset,
            Outcome::Ok => Status::Ok,
            Outcome::Error(description) => Status::error(description),
        };
        if said > status {
            status = said;
        }
        self.emit_guest(
            ended.span_id,
            guest.parent,
            SpanBuilder::from_name(ended.name)
                .with_kind(ended.kind)
                .with_start_time(start)
                .with_attributes(attributes)
                .with_events(events)
                .with_links(links),
            status,
            end.max(start),
        );
    }

    /// A guest's log record (`wasi:otel/logs`), as an event on the span it names when that
    /// span is open in this request, else on the innermost span. Counted as a dropped
    /// event when no span is open or the span is full.
    pub fn add_log(&mut self, span_id: Option<SpanId>, event: Event) {
        let index = span_id
            .and_then(|id| self.open.iter().rposition(|s| s.context.span_id() == id))
            .or_else(|| self.open.len().checked_sub(1));
        match index {
            Some(index) => self.push_event(index, event),
            None => self.count(|c| &c.dropped_events, 1),
        }
    }

    /// End every span `owner` still has open, innermost first, as failed with
    /// `exception` (a trapped component cannot end its own).
    pub fn fail_spans_of(&mut self, owner: &Owner, exception: &Exception) {
        while let Some(index) = self.open.iter().rposition(|s| s.owner == *owner) {
            self.record_exception_at(index, exception.clone());
            let mut span = self.open.remove(index);
            span.span
                .set_attribute(KeyValue::new("ww.span.ended_by_host", true));
            self.close(span);
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
                self.count(|c| &c.unclosed_spans, 1);
                span.span
                    .set_attribute(KeyValue::new("ww.span.ended_by_host", true));
            }
            self.close(span);
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

/// A valid context of no trace, unsampled: what a guest asking for the current context
/// gets when it runs outside any request. Minted directly: a span built through the
/// tracer for it could be sampled, and would be exported when dropped.
fn fresh_context() -> SpanContext {
    let ids = RandomIdGenerator::default();
    SpanContext::new(
        ids.new_trace_id(),
        ids.new_span_id(),
        opentelemetry::trace::TraceFlags::default(),
        false,
        Default::default(),
    )
}

/// The name a guest's `wasi:otel` span gets when the host ends it (the guest never sent
/// its data, so its name is unknown).
pub const UNENDED_GUEST_SPAN: &str = "wasi-otel span (not ended)";

/// How far in the future a guest-supplied time may be: clocks of one machine agree, so
/// this only absorbs rounding and a clock stepped while a request ran.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// No guest-supplied time is before 2000: an earlier one is garbage (zero, say).
const Y2000_NANOS: u64 = 946_684_800_000_000_000;

/// Sanity bound for guest-supplied event times: not before 2000, not in the future.
pub fn plausible_time(nanos: u64) -> Option<SystemTime> {
    let time = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
    (nanos >= Y2000_NANOS && time <= SystemTime::now() + MAX_CLOCK_SKEW).then_some(time)
}

/// A guest-supplied span start: not before 2000. One in the future is clamped to now
/// where the span starts or ends (`start_at`, `record`), which reads the clock anyway.
pub fn plausible_start(nanos: u64) -> Option<SystemTime> {
    (nanos >= Y2000_NANOS).then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
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
    fn a_recorded_span_is_whole_under_the_innermost_and_a_deferred_start_keeps_its_time() {
        let (runtime, telemetry, exporter) = recording();
        let a = owner("a");
        let mut scope = RequestScope::new(telemetry.clone(), None, None);
        let root = start(&mut scope, &None, "root");
        let began = SystemTime::now() - Duration::from_millis(5);
        let deferred = scope.start_at(
            a.clone(),
            Cow::Borrowed("a.deferred"),
            SpanKind::Internal,
            vec![KeyValue::new("initial", 1_i64)],
            None,
            Some(began),
        );
        let events = (0..MAX_EVENTS_PER_SPAN + 3)
            .map(|i| Event {
                name: format!("e{i}"),
                time: None,
                attributes: vec![],
            })
            .collect();
        scope.record(
            Cow::Borrowed("a.leaf"),
            SpanKind::Client,
            Some(began + Duration::from_millis(1)),
            Outcome::Error("failed".into()),
            vec![KeyValue::new("leaf", true)],
            events,
        );
        // A start ahead of the end: a span of no length, not a negative one.
        scope.record(
            Cow::Borrowed("a.future"),
            SpanKind::Internal,
            Some(SystemTime::now() + Duration::from_secs(30)),
            Outcome::Ok,
            vec![],
            vec![],
        );
        assert_eq!(scope.open_spans(), 2, "recording opens nothing");
        end(&mut scope, &a, deferred);
        end(&mut scope, &None, root);
        let spans = finished(&runtime, &telemetry, &exporter);
        let id = |name| span(&spans, name).span_context.span_id();
        let (outer, leaf) = (span(&spans, "a.deferred"), span(&spans, "a.leaf"));
        assert_eq!(outer.parent_span_id, id("root"));
        assert_eq!(outer.start_time, began, "the deferred start's own time");
        assert!(
            outer
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "initial")
        );
        assert_eq!(leaf.parent_span_id, id("a.deferred"));
        assert_eq!(leaf.span_kind, SpanKind::Client);
        assert_eq!(leaf.start_time, began + Duration::from_millis(1));
        assert!(leaf.start_time <= leaf.end_time && leaf.end_time <= outer.end_time);
        assert_eq!(leaf.status, Status::error("failed"));
        assert_eq!(leaf.events.len(), MAX_EVENTS_PER_SPAN);
        let future = span(&spans, "a.future");
        assert_eq!(future.start_time, future.end_time);
        assert_eq!(future.parent_span_id, id("a.deferred"));
        assert_eq!(telemetry.stats().guest_limit("dropped_events"), Some(3));
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
        assert_eq!(telemetry.stats().guest_limit("invalid_handles"), Some(2));
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
        assert_eq!(telemetry.stats().guest_limit("invalid_parents"), Some(1));
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

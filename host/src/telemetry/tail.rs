//! Tail sampling: the spans of a request are held until its root span ends, then the
//! whole trace is exported or dropped — kept when any span failed, when the root took
//! longer than a threshold, or when the trace id falls in a ratio.
//!
//! A request's spans all end before its root (the host ends whatever a guest left open,
//! innermost first, and the root last), so the decision sees the whole request. Several
//! requests may share a trace (a client sending the same `traceparent` to parallel tool
//! calls): the trace is decided when the last of its open local roots ends, so no request
//! is cut in half. Memory is bounded: past the cap on buffered traces or spans the oldest
//! trace is evicted whole (its later spans are dropped too, so nothing partial leaves),
//! and evictions are counted.
//!
//! Written here rather than taken from a crate: the OpenTelemetry Rust SDK has no tail
//! sampler (the Collector's `tailsamplingprocessor` is a separate Go process), and one in
//! the host sees every span without a network hop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::{SpanId, Status, TraceContextExt as _, TraceId};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

/// Tail sampling settings (`WW_OTEL_TAIL_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct TailConfig {
    /// Share of traces kept that neither failed nor were slow, by trace id.
    pub ratio: f64,
    /// A trace whose root took at least this long is kept.
    pub latency: Duration,
    /// Traces buffered at once; beyond it the oldest is evicted.
    pub max_traces: usize,
    /// Spans buffered at once, over all traces; beyond it the oldest trace is evicted.
    pub max_spans: usize,
}

/// Default share of ordinary traces kept.
pub const DEFAULT_RATIO: f64 = 0.1;
/// Default latency threshold.
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(250);
/// Default cap on buffered traces.
pub const DEFAULT_MAX_TRACES: usize = 4096;
/// Default cap on buffered spans.
pub const DEFAULT_MAX_SPANS: usize = 65_536;
/// Decisions remembered for spans that end after their root.
const REMEMBERED_DECISIONS: usize = 4096;
/// Kept traces remembered for exemplars (which must point at a trace that was exported).
const REMEMBERED_KEPT: usize = 16_384;

/// The most recently kept traces, for linking metric exemplars only to traces that left.
#[derive(Debug, Clone, Default)]
pub struct KeptTraces(Arc<Mutex<(HashSet<TraceId>, VecDeque<TraceId>)>>);

impl KeptTraces {
    /// Whether the trace was kept (recently enough to be remembered).
    pub fn contains(&self, trace_id: TraceId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .contains(&trace_id)
    }

    fn insert(&self, trace_id: TraceId) {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *guard;
        if set.insert(trace_id) {
            order.push_back(trace_id);
        }
        while order.len() > REMEMBERED_KEPT {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            ratio: DEFAULT_RATIO,
            latency: DEFAULT_LATENCY,
            max_traces: DEFAULT_MAX_TRACES,
            max_spans: DEFAULT_MAX_SPANS,
        }
    }
}

impl fmt::Display for TailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tail(errors, >= {} ms, ratio {}; at most {} traces / {} spans buffered)",
            self.latency.as_millis(),
            self.ratio,
            self.max_traces,
            self.max_spans
        )
    }
}

/// What tail sampling has decided so far.
#[derive(Debug, Default)]
pub struct TailCounters {
    /// Traces kept because a span failed.
    pub kept_error: AtomicU64,
    /// Traces kept because the root was slow.
    pub kept_slow: AtomicU64,
    /// Traces kept by the ratio.
    pub kept_ratio: AtomicU64,
    /// Traces dropped by the decision.
    pub dropped: AtomicU64,
    /// Traces evicted whole because the buffer was full.
    pub evicted_traces: AtomicU64,
    /// Spans those evictions dropped (including ones that ended after).
    pub evicted_spans: AtomicU64,
    /// Spans buffered now.
    pub buffered_spans: AtomicU64,
    /// The most spans ever buffered at once.
    pub peak_buffered_spans: AtomicU64,
}

/// The traces decided so far, by decision (each trace counted once).
pub fn decisions(counters: &TailCounters) -> [(&'static str, u64); 5] {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    [
        ("kept_error", load(&counters.kept_error)),
        ("kept_slow", load(&counters.kept_slow)),
        ("kept_ratio", load(&counters.kept_ratio)),
        ("dropped", load(&counters.dropped)),
        ("evicted_traces", load(&counters.evicted_traces)),
    ]
}

/// A snapshot of [`TailCounters`], in the order `memory_stats` lists them: the
/// [`decisions`], then spans evicted and buffered.
pub fn snapshot(counters: &TailCounters) -> Vec<(&'static str, u64)> {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut all = decisions(counters).to_vec();
    all.extend([
        ("evicted_spans", load(&counters.evicted_spans)),
        ("buffered_spans", load(&counters.buffered_spans)),
        ("peak_buffered_spans", load(&counters.peak_buffered_spans)),
    ]);
    all
}

#[derive(Default)]
struct Trace {
    spans: Vec<SpanData>,
    /// Local roots started and not yet ended.
    open_roots: u32,
    error: bool,
    slow: bool,
    /// Evicted: every further span of it is dropped until its roots end.
    evicted: bool,
}

#[derive(Default)]
struct State {
    traces: HashMap<TraceId, Trace>,
    /// Trace ids in the order they were first buffered (may hold ids already gone).
    age: VecDeque<TraceId>,
    /// Traces holding spans (not evicted).
    buffered_traces: usize,
    spans: usize,
    /// Recent decisions, for a span that ends after its trace was decided.
    decided: HashMap<TraceId, bool>,
    decided_age: VecDeque<TraceId>,
}

/// The span processor: decides per trace, then hands kept spans to `next`.
pub struct TailSampler<P> {
    config: TailConfig,
    /// Trace ids at or below this (their low 64 bits) are in the ratio.
    ratio_bound: u64,
    state: Mutex<State>,
    counters: Arc<TailCounters>,
    kept: KeptTraces,
    next: Vec<P>,
}

impl<P> fmt::Debug for TailSampler<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailSampler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn is_local_root(parent: SpanId, parent_is_remote: bool) -> bool {
    parent == SpanId::INVALID || parent_is_remote
}

impl<P: SpanProcessor> TailSampler<P> {
    /// A sampler in front of `next`, counting into `counters`.
    pub fn new(
        config: TailConfig,
        counters: Arc<TailCounters>,
        kept: KeptTraces,
        next: Vec<P>,
    ) -> Self {
        // The same rule as the SDK's TraceIdRatioBased, so a ratio means the same trace
        // ids either way (a ratio of 1 bounds at 2^63, above every 63-bit value).
        let ratio_bound = (config.ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64;
        Self {
            config,
            ratio_bound,
            state: Mutex::new(State::default()),
            counters,
            kept,
            next,
        }
    }

    /// Whether `trace_id` is in the ratio.
    pub fn in_ratio(&self, trace_id: TraceId) -> bool {
        let bytes = trace_id.to_bytes();
        let low = u64::from_be_bytes(bytes[8..16].try_into().unwrap_or_default()) >> 1;
        low < self.ratio_bound
    }

    fn forward(&self, spans: Vec<SpanData>) {
        let Some((last, others)) = self.next.split_last() else {
            return;
        };
        for span in spans {
            for processor in others {
                processor.on_end(span.clone());
            }
            last.on_end(span);
        }
    }

    /// Evict the oldest buffered traces until both caps hold.
    fn enforce_caps(&self, state: &mut State) {
        while state.spans > self.config.max_spans || state.buffered_traces > self.config.max_traces
        {
            let Some(id) = state.age.pop_front() else {
                return;
            };
            let Some(trace) = state.traces.get_mut(&id) else {
                continue;
            };
            if trace.evicted {
                continue;
            }
            trace.evicted = true;
            let spans = std::mem::take(&mut trace.spans);
            state.spans -= spans.len();
            state.buffered_traces -= 1;
            self.counters.evicted_traces.fetch_add(1, Ordering::Relaxed);
            self.counters
                .evicted_spans
                .fetch_add(spans.len() as u64, Ordering::Relaxed);
        }
        // Ids of traces already decided pile up at the back; sweep them now and then.
        if state.age.len() > 2 * self.config.max_traces + 64 {
            let traces = &state.traces;
            state
                .age
                .retain(|id| traces.get(id).is_some_and(|t| !t.evicted));
        }
    }

    fn remember(&self, state: &mut State, id: TraceId, kept: bool) {
        if state.decided.insert(id, kept).is_none() {
            state.decided_age.push_back(id);
        }
        while state.decided_age.len() > REMEMBERED_DECISIONS {
            if let Some(old) = state.decided_age.pop_front() {
                state.decided.remove(&old);
            }
        }
    }

    fn publish(&self, state: &State) {
        let spans = state.spans as u64;
        self.counters.buffered_spans.store(spans, Ordering::Relaxed);
        self.counters
            .peak_buffered_spans
            .fetch_max(spans, Ordering::Relaxed);
    }
}

impl<P: SpanProcessor> SpanProcessor for TailSampler<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        use opentelemetry::trace::Span as _;
        for processor in &self.next {
            processor.on_start(span, cx);
        }
        let context = span.span_context();
        if !context.is_sampled() {
            return;
        }
        let trace_id = context.trace_id();
        let parent = cx.span();
        let parent = parent.span_context();
        if !is_local_root(parent.span_id(), parent.is_remote()) {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        let trace = state.traces.entry(trace_id).or_default();
        trace.open_roots += 1;
        if trace.open_roots == 1 && trace.spans.is_empty() && !trace.evicted {
            state.age.push_back(trace_id);
            state.buffered_traces += 1;
            self.enforce_caps(state);
        }
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let trace_id = span.span_context.trace_id();
        let root = is_local_root(span.parent_span_id, span.parent_span_is_remote);
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        let Some(trace) = state.traces.get_mut(&trace_id) else {
            // Its trace was decided already: follow that decision.
            let kept = state.decided.get(&trace_id).copied().unwrap_or(false);
            drop(guard);
            if kept {
                self.forward(vec![span]);
            } else {
                self.counters.evicted_spans.fetch_add(1, Ordering::Relaxed);
            }
            return;
        };
        if trace.evicted {
            self.counters.evicted_spans.fetch_add(1, Ordering::Relaxed);
        } else {
            trace.error |= matches!(span.status, Status::Error { .. });
            if root {
                let took = span
                    .end_time
                    .duration_since(span.start_time)
                    .unwrap_or_default();
                trace.slow |= took >= self.config.latency;
            }
            trace.spans.push(span);
            state.spans += 1;
        }
        if root {
            trace.open_roots = trace.open_roots.saturating_sub(1);
        }
        if trace.open_roots > 0 {
            self.enforce_caps(state);
            self.publish(state);
            return;
        }
        let Some(trace) = state.traces.remove(&trace_id) else {
            return;
        };
        let kept = if trace.evicted {
            false
        } else {
            state.spans -= trace.spans.len();
            state.buffered_traces -= 1;
            let c = &self.counters;
            let (kept, counter) = if trace.error {
                (true, &c.kept_error)
            } else if trace.slow {
                (true, &c.kept_slow)
            } else if self.in_ratio(trace_id) {
                (true, &c.kept_ratio)
            } else {
                (false, &c.dropped)
            };
            counter.fetch_add(1, Ordering::Relaxed);
            kept
        };
        self.remember(state, trace_id, kept);
        self.publish(state);
        drop(guard);
        if kept {
            self.kept.insert(trace_id);
            self.forward(trace.spans);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        for processor in &self.next {
            processor.force_flush()?;
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        for processor in &self.next {
            processor.shutdown_with_timeout(timeout)?;
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        for processor in &mut self.next {
            processor.set_resource(resource);
        }
    }
}

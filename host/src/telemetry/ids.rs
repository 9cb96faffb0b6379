//! Span ids for the SDK: random, except for a span whose id a guest minted.
//!
//! A `wasi:otel` guest runs its own OpenTelemetry SDK and mints its spans' ids; the host
//! hands out that id as the parent of everything nested under the span while it is open,
//! and must export the span under the same id when it ends. The SDK's tracer (0.33)
//! takes every span id from the provider's [`IdGenerator`] and ignores
//! `SpanBuilder::span_id`, so the generator is where a guest's id gets in: [`with_span_id`]
//! primes it for the one span built inside its closure. The span then takes the SDK's own
//! path (sampler, processors, limits), the same as any other. Written here because no
//! crate offers it: the SDK's `RandomIdGenerator` is the whole alternative.

use std::cell::Cell;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_aws::trace::XrayIdGenerator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

thread_local! {
    /// The id the next span built on this thread takes, when primed.
    static NEXT_SPAN_ID: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// The provider's id generator: random ids, or the primed one; trace ids X-Ray accepts
/// when asked (the contrib crate's generator: the first 32 bits the start time).
#[derive(Debug, Default)]
pub struct HostIds {
    random: RandomIdGenerator,
    xray: Option<XrayIdGenerator>,
}

impl HostIds {
    /// Random ids, with X-Ray's trace ids when `xray`.
    pub fn new(xray: bool) -> Self {
        Self {
            random: RandomIdGenerator::default(),
            xray: xray.then(XrayIdGenerator::default),
        }
    }
}

impl IdGenerator for HostIds {
    fn new_trace_id(&self) -> TraceId {
        match &self.xray {
            Some(xray) => xray.new_trace_id(),
            None => self.random.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_SPAN_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.random.new_span_id())
    }
}

/// Run `build` (which builds exactly one span, synchronously) with its span id set to `id`.
/// The id is unset afterwards even if the tracer never asked for one (a shut-down provider).
pub fn with_span_id<R>(id: SpanId, build: impl FnOnce() -> R) -> R {
    NEXT_SPAN_ID.with(|next| next.set(Some(id)));
    let built = build();
    NEXT_SPAN_ID.with(|next| next.set(None));
    built
}

//! W3C Trace Context and Baggage at the host's edges, through the SDK's propagators.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

use super::limits::MAX_TRACESTATE_BYTES;

/// A `traceparent` and `tracestate` as received, for example from `_meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncomingContext {
    /// `00-<trace id>-<span id>-<flags>`.
    pub traceparent: String,
    /// May be empty.
    pub tracestate: String,
}

impl IncomingContext {
    /// A context from its `traceparent` alone.
    pub fn traceparent(traceparent: impl Into<String>) -> Self {
        Self {
            traceparent: traceparent.into(),
            tracestate: String::new(),
        }
    }
}

/// Parse a remote parent; `None` when the `traceparent` is not valid W3C.
pub fn parse_traceparent(traceparent: &str, tracestate: &str) -> Option<SpanContext> {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    // An over-long tracestate is dropped rather than forwarded: it is advisory.
    if !tracestate.is_empty() && tracestate.len() <= MAX_TRACESTATE_BYTES {
        carrier.insert("tracestate".to_owned(), tracestate.to_owned());
    }
    let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier);
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.clone())
}

/// Format a span context as `traceparent` and `tracestate`.
pub fn format_context(context: &SpanContext) -> (String, String) {
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    );
    (traceparent, context.trace_state().header())
}

/// Parse a W3C `baggage` header into (key, value) pairs, values percent-decoded.
pub fn parse_baggage(header: &str) -> Vec<(String, String)> {
    let mut carrier = HashMap::with_capacity(1);
    carrier.insert("baggage".to_owned(), header.to_owned());
    let cx = BaggagePropagator::new().extract_with_context(&Context::new(), &carrier);
    let mut entries: Vec<(String, String)> = cx
        .baggage()
        .iter()
        .map(|(k, (v, _metadata))| (k.to_string(), v.to_string()))
        .collect();
    entries.sort();
    entries
}

/// A W3C `baggage` header for `entries` (values percent-encoded), `None` when empty.
pub fn format_baggage(entries: &[(String, String)]) -> Option<String> {
    if entries.is_empty() {
        return None;
    }
    let cx = Context::new().with_baggage(
        entries
            .iter()
            .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())),
    );
    let mut carrier = HashMap::with_capacity(1);
    BaggagePropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("baggage")
}

/// A baggage key must be an HTTP token (RFC 9110 `tchar`s).
pub fn is_baggage_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baggage_formats_and_parses_back() {
        let entries = vec![
            ("note".to_owned(), "a b,c=d;é".to_owned()),
            ("tenant".to_owned(), "acme".to_owned()),
        ];
        let header = format_baggage(&entries).unwrap();
        assert!(!header.contains(' '), "{header}");
        assert_eq!(parse_baggage(&header), entries);
        assert_eq!(format_baggage(&[]), None);
    }
}

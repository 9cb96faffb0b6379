//! The X-Ray trace header (`X-Amzn-Trace-Id: Root=1-…;Parent=…;Sampled=1`) at the host's
//! edges, when `OTEL_PROPAGATORS` names `xray`: parsed and written by the contrib crate's
//! propagator functions, turned into the W3C context everything inside the host uses.

use opentelemetry::trace::SpanContext;

use super::w3c::{self, IncomingContext};

/// The header's name (HTTP headers are matched without case; `_meta` keys as written or
/// in lower case).
pub const HEADER: &str = "X-Amzn-Trace-Id";

/// The remote parent an `X-Amzn-Trace-Id` names, as the W3C context the host continues;
/// `None` when the header is not a valid X-Ray trace header.
pub fn incoming(header: &str) -> Option<IncomingContext> {
    let context = opentelemetry_aws::trace::xray_propagator::span_context_from_str(header)?;
    let (traceparent, tracestate) = w3c::format_context(&context);
    Some(IncomingContext {
        traceparent,
        tracestate,
    })
}

/// The `X-Amzn-Trace-Id` value naming `context` as the parent.
pub fn header(context: &SpanContext) -> Option<String> {
    opentelemetry_aws::trace::xray_propagator::span_context_to_string(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_header_becomes_the_w3c_parent_and_back() {
        let header_in =
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let parent = incoming(header_in).expect("a valid header");
        assert_eq!(
            parent.traceparent,
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
        );
        let context =
            w3c::parse_traceparent(&parent.traceparent, &parent.tracestate).expect("valid W3C");
        assert_eq!(header(&context).as_deref(), Some(header_in));
        assert!(incoming("Root=not-a-trace").is_none());
    }
}

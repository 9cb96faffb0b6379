//! Limits on guest input to the tracing interface. Guests are untrusted: each limit keeps
//! one misbehaving component from costing the host memory or the backend garbage. What
//! exceeds a limit is cut or dropped, and counted in [`GuestLimitCounters`].
//!
//! [`GuestLimitCounters`]: crate::telemetry::GuestLimitCounters

/// Span and event names, in bytes. Real names are short (`episodic.recall`).
pub const MAX_NAME_BYTES: usize = 256;
/// Attribute keys, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// One string value, in bytes; room for a query or an error message, not a document.
pub const MAX_STRING_VALUE_BYTES: usize = 4096;
/// Elements of one list value.
pub const MAX_LIST_LEN: usize = 128;
/// Attributes per span (the OTel SDK's default limit).
pub const MAX_ATTRIBUTES_PER_SPAN: usize = 128;
/// Events per span (the OTel SDK's default limit).
pub const MAX_EVENTS_PER_SPAN: usize = 128;
/// Links per span (the OpenTelemetry default span link count limit).
pub const MAX_LINKS_PER_SPAN: usize = 128;
/// Attributes per event.
pub const MAX_ATTRIBUTES_PER_EVENT: usize = 32;
/// Spans open at once in one request; a guest opening spans in a loop without ending
/// them is refused past this.
pub const MAX_OPEN_SPANS_PER_REQUEST: usize = 1024;
/// A `tracestate` header, in bytes (W3C: 32 members of at most 256 bytes; we keep less).
pub const MAX_TRACESTATE_BYTES: usize = 512;
/// Baggage members per request (W3C limit).
pub const MAX_BAGGAGE_ENTRIES: usize = 64;
/// Baggage size per request, in bytes (W3C limit).
pub const MAX_BAGGAGE_BYTES: usize = 8192;

/// Attributes per metric measurement (each distinct set is a series to keep).
pub const MAX_ATTRIBUTES_PER_MEASUREMENT: usize = 16;
/// A metric attribute's string value, in bytes.
pub const MAX_METRIC_STRING_BYTES: usize = 256;

/// Cut `s` to at most `max` bytes on a character boundary. Returns whether it was cut.
pub fn truncate(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

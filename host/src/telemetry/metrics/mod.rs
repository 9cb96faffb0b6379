//! Metrics with exemplars: the host's instruments (tool, store operation and component
//! call durations), the counters it already keeps (spans exported and dropped, tail
//! sampling decisions, instantiations, traps) observed at collection, and the counters and
//! histograms guests record through the WIT `metrics` interface. Exported over OTLP next
//! to the traces, cumulative.
//!
//! Written here rather than with the SDK's `SdkMeterProvider`: OpenTelemetry Rust 0.33
//! does not record exemplars (its data points always carry none, and their fields are
//! crate-private, so an exporter cannot add them). Exemplars are the point of this
//! module: each histogram bucket keeps the last measurement made inside a sampled span,
//! with that span's trace and span id, so a slow bucket links to a trace of it. The data
//! model and the wire format are OTLP's own (`opentelemetry-proto`).

mod aggregate;
mod otlp;
mod registry;

pub use aggregate::{
    AttrValue, Attributes, DURATION_BUCKETS, GUEST_BUCKETS, Instrument, Kind,
    MAX_POINTS_PER_INSTRUMENT, MILLISECOND_BUCKETS, Point,
};
pub use registry::{
    GuestMetricError, HostInstrument, MAX_GUEST_INSTRUMENTS, Metrics, Observation, Observer,
    is_instrument_name,
};

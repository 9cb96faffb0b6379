//! Counters and histograms, exported by the host with its own metrics, in a scope named
//! after this component. A measurement taken inside a sampled span links to it (an
//! exemplar), so a slow bucket leads to a trace.
//!
//! ```no_run
//! use ww_guest::{kv, metrics};
//!
//! metrics::counter_add("ww.example.items", "{item}", 3.0, &[kv("kind", "note")]);
//! metrics::histogram_record("ww.example.batch.size", "{item}", 12.0, &[]);
//! ```
//!
//! Names follow the OpenTelemetry instrument name rules; an instrument keeps the kind and
//! unit of its first use. What the host refuses (a bad name, a negative counter step) is
//! dropped and counted there, never an error here: metrics must not change what a
//! component does.

use crate::bindings::ww::memory::metrics as wit;
use crate::value::{KeyValue, lend};

/// Add `value` (zero or more) to the counter `name`.
pub fn counter_add(name: &str, unit: &str, value: f64, attributes: &[KeyValue]) {
    // The exemplar names the current span: the host must know it.
    crate::span::flush_span_starts();
    let mut scratch = Vec::new();
    let attributes = lend(attributes, &mut scratch);
    wit::counter_add(name, unit, value, &attributes);
}

/// Record `value` in the histogram `name`. With unit `s` or `ms` the buckets suit
/// durations from 10 µs to 10 s.
pub fn histogram_record(name: &str, unit: &str, value: f64, attributes: &[KeyValue]) {
    crate::span::flush_span_starts();
    let mut scratch = Vec::new();
    let attributes = lend(attributes, &mut scratch);
    wit::histogram_record(name, unit, value, &attributes);
}

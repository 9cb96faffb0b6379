//! W3C baggage of the current request, shared by every component it passes through.

use crate::bindings::ww::memory::tracing as wit;

/// The value of a baggage entry, if the request carries it.
pub fn get(key: &str) -> Option<String> {
    wit::baggage_get(key)
}

/// Every baggage entry of the request.
pub fn all() -> Vec<(String, String)> {
    wit::baggage_all()
}

/// Set an entry for the rest of the request (including the components it calls next).
/// Returns false when the host refused it: invalid key or value, or W3C size limits.
pub fn set(key: &str, value: &str) -> bool {
    wit::baggage_set(key, value)
}

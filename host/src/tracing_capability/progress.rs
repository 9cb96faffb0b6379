//! The WIT `progress` capability: a memory service's reports go to the request's sink
//! (the MCP gateway forwards them as progress notifications), and it learns whether the
//! request was cancelled.

use wasmtime::component::{HasSelf, Linker};

use super::TracingCtx;
use super::limits::MAX_STRING_VALUE_BYTES;
use crate::bindings::ww::memory::progress as wit;

/// Progress travels with the request like its spans: a service reports, the request's
/// sink (if any) receives.
impl wit::Host for TracingCtx {
    fn report(&mut self, done: u64, total: u64, mut message: String) {
        self.truncated(&mut message, MAX_STRING_VALUE_BYTES);
        self.scope.report_progress(done, total, &message);
    }

    fn cancelled(&mut self) -> bool {
        self.scope.is_cancelled()
    }
}

/// Link the `progress` interface for stores whose data exposes a [`TracingCtx`].
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut TracingCtx,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSelf<TracingCtx>>(linker, get)
}

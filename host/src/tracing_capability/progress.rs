//! The WIT `progress` capability: a memory service's reports go to the request's sink
//! (the MCP gateway forwards them as progress notifications), and it learns whether the
//! request was cancelled.

use wasmtime::component::{HasData, Linker};

use super::TracingCtx;
use super::limits::MAX_STRING_VALUE_BYTES;
use crate::bindings::ww::memory::progress as wit;

/// The `progress` capability's view of a store's [`TracingCtx`].
pub struct WwProgress<'a> {
    ctx: &'a mut TracingCtx,
}

impl<'a> WwProgress<'a> {
    /// The progress view of a store's context.
    pub fn new(ctx: &'a mut TracingCtx) -> Self {
        Self { ctx }
    }
}

/// Names [`WwProgress`] as the data the generated `add_to_linker` hands each host call.
struct HasProgress;

impl HasData for HasProgress {
    type Data<'a> = WwProgress<'a>;
}

/// Progress travels with the request like its spans: a service reports, the request's
/// sink (if any) receives.
impl wit::Host for WwProgress<'_> {
    fn report(&mut self, done: u64, total: u64, mut message: String) {
        self.ctx.truncated(&mut message, MAX_STRING_VALUE_BYTES);
        self.ctx.scope.report_progress(done, total, &message);
    }

    fn cancelled(&mut self) -> bool {
        self.ctx.scope.is_cancelled()
    }
}

/// Link the `progress` interface; `get` gives the view of a store's [`TracingCtx`].
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> WwProgress<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasProgress>(linker, get)
}

//! What a component instance's store holds: its WASI and wasi:http contexts, its
//! tracing state, its memory accounting and the deadline of the running call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::inference::NnState;
use crate::plugins::network::HttpHooks;
use crate::tracing_capability::TracingCtx;
use wasmtime_wasi_nn::wit::WasiNnView;

/// Everything a component's store holds.
pub struct ComponentState {
    pub(super) wasi: WasiCtx,
    pub(super) http: WasiHttpCtx,
    pub(super) http_hooks: HttpHooks,
    pub(super) table: ResourceTable,
    /// Its settings, as `wasi:config/store` reads them.
    pub(in crate::plugins) config: WasiConfigVariables,
    pub(super) limits: MeasuredLimits,
    /// The tracing capability's per-store state.
    pub tracing: TracingCtx,
    /// When the running call (or the instantiation) must have returned.
    pub(super) deadline: Instant,
    /// Its `wasi:nn` state: the graph it may run.
    pub(super) nn: NnState,
    /// Where its `upkeep` requests go (`None`: it has no upkeep thread).
    pub(super) upkeep: Option<super::upkeep::UpkeepSender>,
    /// Cancelled when the host goes away: the running call is interrupted.
    pub(super) halt: tokio_util::sync::CancellationToken,
}

impl ComponentState {
    /// The `wasi:nn` view, with the request's current span noted as the parent of the
    /// inference spans.
    pub(in crate::plugins) fn nn(&mut self) -> WasiNnView<'_> {
        let current = self.tracing.scope_mut().current();
        self.nn.view(&mut self.table, current)
    }

    /// The `upkeep` view, asked from within the request's current span.
    pub(in crate::plugins) fn upkeep(&mut self) -> super::upkeep::WwUpkeep<'_> {
        let asked_by = self.tracing.scope_mut().current().cloned();
        super::upkeep::WwUpkeep::new(self.upkeep.as_ref(), asked_by)
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ComponentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // An outgoing request is parented under the component's innermost open span,
        // and carries the request's baggage. This runs for every wasi:http call (each
        // header, each body write): copy only what changed since the last one.
        let scope = self.tracing.scope_mut();
        let hooks = &mut self.http_hooks;
        if hooks.parent.as_ref() != scope.current() {
            hooks.parent = scope.current().cloned();
        }
        if hooks.baggage != scope.baggage_entries() {
            hooks.baggage = scope.baggage_entries().to_vec();
        }
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// The store's limits, counting the linear memory its instance holds as it grows: its
/// own, and the component's total (over the instances of its pool).
pub(super) struct MeasuredLimits {
    pub(super) limits: StoreLimits,
    pub(super) memory: Arc<AtomicU64>,
    pub(super) own: u64,
}

impl Drop for MeasuredLimits {
    /// The instance is gone, whatever ended it (a trap, a call whose future was dropped,
    /// a failed instantiation, the host shutting down): its memory no longer counts.
    fn drop(&mut self) {
        self.memory.fetch_sub(self.own, Ordering::Relaxed);
    }
}

impl wasmtime::ResourceLimiter for MeasuredLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            let grown = (desired - current) as u64;
            self.own += grown;
            self.memory.fetch_add(grown, Ordering::Relaxed);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

//! The instance lifecycle: a pool of instances (and the serial one) lent to calls,
//! instantiated on demand, dropped after a trap; each call under its deadline, traced
//! and measured.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanKind};
use wasmtime::component::{
    ComponentNamedList, Func, Instance, InstancePre, Lift, Lower, ResourceTable, Val,
};
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;

use super::state::MeasuredLimits;
use super::upkeep::{self, UpkeepSender};
use super::{Access, Bounds, CallError, ComponentState, TrapReason};
use crate::inference::{InferencePath, NnState};
use crate::plugins::calls::CallProperties;
use crate::plugins::network::{Endpoint, HttpHooks};
use crate::plugins::spec::CallLimits;
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::{Attributes, HostInstrument, Point};
use crate::tracing_capability::{Outcome, RequestScope, TracingCtx};

/// The future of one call into a component's store.
type CallFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = wasmtime::Result<T>> + Send + 'a>>;

struct Live {
    store: Store<ComponentState>,
    instance: Instance,
    funcs: HashMap<(String, String), Func>,
}

/// A component ready to serve calls.
pub struct PluginComponent {
    name: Arc<str>,
    path: PathBuf,
    /// What it may reach: its data directory, its endpoint; and its settings.
    access: Access,
    engine: Engine,
    pre: InstancePre<ComponentState>,
    telemetry: Arc<Telemetry>,
    limits: CallLimits,
    /// Idle instances; at most `instances` exist, one per permit of `permits`. A
    /// component holding data in its instance (the embedded store) has one.
    idle: std::sync::Mutex<Vec<Live>>,
    permits: tokio::sync::Semaphore,
    instances: usize,
    calls: CallProperties,
    /// The instance the serial exports run on, one call at a time (when the pool has
    /// more than one instance; with one, every call is serial already). Taken out for
    /// the length of a call, like a pooled one: an abandoned call leaves `None`, and
    /// the next serial call instantiates afresh.
    serial: tokio::sync::Mutex<Option<Live>>,
    instantiations: AtomicU64,
    traps: AtomicU64,
    /// Linear memory of its instances, in bytes.
    memory: Arc<AtomicU64>,
    /// `ww.component.call.duration` points of successful calls, by function then
    /// interface, made on first call.
    call_points: std::sync::RwLock<CallPoints>,
    /// Where its instances' upkeep requests go, once its upkeep thread runs.
    upkeep: std::sync::OnceLock<UpkeepSender>,
    /// That thread, joined by [`PluginComponent::halt`].
    upkeep_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Cancelled when the host goes away: a running call stops at the next epoch tick
    /// (an upkeep run must not outlive the host's lock on the data directory).
    halt: tokio_util::sync::CancellationToken,
}

/// Points by function, then interface.
type CallPoints = HashMap<String, Vec<(String, Arc<Point>)>>;

impl std::fmt::Debug for PluginComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginComponent")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

impl PluginComponent {
    pub(in crate::plugins) fn new(
        name: Arc<str>,
        path: PathBuf,
        access: Access,
        engine: Engine,
        pre: InstancePre<ComponentState>,
        telemetry: Arc<Telemetry>,
        bounds: Bounds,
    ) -> Self {
        let Bounds {
            limits,
            instances,
            calls,
        } = bounds;
        let instances = instances.max(1);
        Self {
            name,
            path,
            access,
            engine,
            pre,
            telemetry,
            limits,
            idle: std::sync::Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(instances),
            instances,
            calls,
            serial: tokio::sync::Mutex::new(None),
            instantiations: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            memory: Arc::new(AtomicU64::new(0)),
            call_points: std::sync::RwLock::new(HashMap::new()),
            upkeep: std::sync::OnceLock::new(),
            upkeep_thread: std::sync::Mutex::new(None),
            halt: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Start its upkeep thread when it exports `maintenance.run` as a long-running
    /// export (on an instance of its own, so the serving one goes on serving); else its
    /// instances are told the host runs no upkeep, and do the work in the call.
    pub(in crate::plugins) fn start_upkeep(self: &Arc<Self>) -> std::io::Result<()> {
        if self.params(upkeep::MAINTENANCE, upkeep::RUN).is_none() {
            return Ok(());
        }
        if !self.calls.is_long_running(upkeep::RUN) {
            tracing::warn!(
                "{}: exports {}#{} but not as long-running: its upkeep runs inside its calls",
                self.name,
                upkeep::MAINTENANCE,
                upkeep::RUN
            );
            return Ok(());
        }
        let (sender, thread) = upkeep::start(Arc::downgrade(self), &self.name, self.halt.clone())?;
        let _ = self.upkeep.set(sender);
        *self.upkeep_thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(())
    }

    /// Stop its calls at their next epoch tick and wait for its upkeep thread to end:
    /// the host is going away, and with it the lock on the data directory that a
    /// compaction writes to. (A compaction stopped half-way leaves a temporary file,
    /// removed at the next start; the logs it would have covered stay.)
    pub(in crate::plugins) fn halt(&self) {
        self.halt.cancel();
        let thread = self
            .upkeep_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }

    /// The telemetry its calls record into.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    fn call_attributes(&self, interface: &str, function: &str) -> Attributes {
        Attributes::new(vec![
            ("ww.component".into(), self.name.to_string().into()),
            ("ww.interface".into(), interface.to_owned().into()),
            ("ww.function".into(), function.to_owned().into()),
        ])
    }

    /// Record one call's duration (`error_type` when it failed) under `context`.
    fn record_call(
        &self,
        interface: &str,
        function: &str,
        seconds: f64,
        error_type: Option<&'static str>,
        context: Option<&SpanContext>,
    ) {
        let Some(metrics) = self.telemetry.metrics() else {
            return;
        };
        let instrument = metrics.host(HostInstrument::ComponentCall);
        if let Some(kind) = error_type {
            let attributes = self
                .call_attributes(interface, function)
                .with("error.type", kind);
            instrument.record(seconds, &attributes, context);
            return;
        }
        let known = self
            .call_points
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(function)
            .and_then(|by_interface| by_interface.iter().find(|(i, _)| i == interface))
            .map(|(_, point)| point.clone());
        let point = known.unwrap_or_else(|| {
            let point = instrument.point(&self.call_attributes(interface, function));
            self.call_points
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(function.to_owned())
                .or_default()
                .push((interface.to_owned(), point.clone()));
            point
        });
        point.record(seconds, context);
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why its endpoint did not answer at load (loaded with [`EndpointCheck::Report`]).
    ///
    /// [`EndpointCheck::Report`]: super::EndpointCheck::Report
    pub fn endpoint_unreachable(&self) -> Option<&str> {
        self.access.unreachable.as_deref()
    }

    /// How its model runs, when it has a model directory: through `wasi:nn` when the
    /// host offered a graph and the component took it, else inside the component, and
    /// why. Read it after the component has loaded its model (its first call).
    pub fn inference(&self) -> Option<InferencePath> {
        let path = self.access.inference.clone()?;
        Some(match (&self.access.graph, path) {
            (Some(graph), InferencePath::WasiNn { .. })
                if !graph.used() && self.instantiations() > 0 =>
            {
                InferencePath::InComponent {
                    reason: "the component did not take the graph the host offered".to_owned(),
                }
            }
            (_, path) => path,
        })
    }

    /// The one address it may reach, if any.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.access.endpoint.as_deref()
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The parameter names and types of `interface#function`, if this component exports it.
    pub fn params(
        &self,
        interface: &str,
        function: &str,
    ) -> Option<Vec<(String, wasmtime::component::Type)>> {
        use wasmtime::component::types::ComponentItem;
        let ty = self.pre.component().component_type();
        let ComponentItem::ComponentInstance(instance) = ty.get_export(&self.engine, interface)?.ty
        else {
            return None;
        };
        let ComponentItem::ComponentFunc(func) = instance.get_export(&self.engine, function)?.ty
        else {
            return None;
        };
        Some(
            func.params()
                .map(|(name, ty)| (name.to_owned(), ty))
                .collect(),
        )
    }

    /// Instances created so far (the first, and one after each trap).
    pub fn instantiations(&self) -> u64 {
        self.instantiations.load(Ordering::Relaxed)
    }

    /// Instances it may have at once (the serial exports' instance besides).
    pub fn instances(&self) -> usize {
        self.instances
    }

    /// How it asked its exports to be run.
    pub fn calls(&self) -> &CallProperties {
        &self.calls
    }

    /// Linear memory its live instances hold, in bytes (0 before the first call).
    pub fn memory_bytes(&self) -> u64 {
        self.memory.load(Ordering::Relaxed)
    }

    /// Calls that trapped.
    pub fn traps(&self) -> u64 {
        self.traps.load(Ordering::Relaxed)
    }

    /// A short, backtrace-free account of why a call failed.
    fn trap_reason(&self, error: &wasmtime::Error, deadline: Duration) -> TrapReason {
        // A component it called through the host failed first: say which, and why.
        if let Some(callee) = error.chain().find_map(|e| e.downcast_ref::<CallError>()) {
            return TrapReason::Callee(Box::new(callee.clone()));
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => TrapReason::Deadline(deadline),
            Some(Trap::UnreachableCodeReached) => {
                TrapReason::Trap("wasm `unreachable` executed (a panic or abort)".to_owned())
            }
            Some(trap) => TrapReason::Trap(trap.to_string()),
            None if error
                .chain()
                .any(|e| e.to_string().contains("forcing trap when growing memory")) =>
            {
                TrapReason::Memory(self.limits.memory_bytes)
            }
            None => TrapReason::Trap(error.root_cause().to_string()),
        }
    }

    /// The idle instances (a poisoned lock only means a panic elsewhere mid-push: the
    /// list itself is intact).
    fn idle_instances(&self) -> std::sync::MutexGuard<'_, Vec<Live>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle instance ready from the pre-instantiated component (one is made if none).
    pub async fn instantiate(&self) -> Result<(), CallError> {
        if !self.idle_instances().is_empty() {
            return Ok(());
        }
        let live = self.new_live(self.memory.clone()).await?;
        self.idle_instances().push(live);
        Ok(())
    }

    /// Make a fresh instance and drop it: what a call pays when it finds no idle
    /// instance (the benchmarks measure it; [`PluginComponent::instantiate`] makes one
    /// only when none is idle).
    pub async fn instantiate_and_drop(&self) -> Result<(), CallError> {
        self.new_live(Arc::new(AtomicU64::new(0))).await.map(drop)
    }

    /// A new instance whose linear memory is counted in `memory`.
    async fn new_live(&self, memory: Arc<AtomicU64>) -> Result<Live, CallError> {
        // No filesystem beyond a configured data directory (stores only) and a
        // read-only model directory (model embedders only), no network
        // beyond a configured endpoint (remote adapters only); stderr for panic
        // messages. Stdout is not theirs: it carries MCP. Its memory adds to the
        // component's total (a trapped instance's is taken off when it is dropped).
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stderr();
        if let Some(endpoint) = &self.access.endpoint {
            let endpoint = endpoint.clone();
            wasi.allow_tcp(true).allow_ip_name_lookup(true);
            wasi.socket_addr_check(move |addr, use_| {
                let endpoint = endpoint.clone();
                Box::pin(async move { endpoint.allows(addr, use_).await })
            });
        }
        if let Some(dir) = &self.access.data_dir {
            // File calls on the calling thread instead of tokio's blocking pool: a
            // store reads its snapshot in large reads and syncs every write, and the
            // hand-off per call cost more than the I/O (a 246 MB snapshot read at
            // 0.45 GB/s through the pool). Its calls are serialised anyway.
            wasi.allow_blocking_current_thread(true);
            wasi.preopened_dir(dir, "/data", FsPerms::ReadWrite)
                .map_err(|e| CallError::Instantiate {
                    component: self.name.to_string(),
                    message: format!("cannot open its data directory: {e}"),
                })?;
        }
        if let Some(dir) = &self.access.model_dir {
            wasi.preopened_dir(dir, "/model", FsPerms::ReadOnly)
                .map_err(|e| CallError::Instantiate {
                    component: self.name.to_string(),
                    message: format!("cannot open its model directory {}: {e}", dir.display()),
                })?;
        }
        let state = ComponentState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            http_hooks: HttpHooks::new(self.access.endpoint.clone(), self.telemetry.clone()),
            table: ResourceTable::new(),
            config: self.access.config.iter().cloned().collect(),
            limits: MeasuredLimits {
                limits: StoreLimitsBuilder::new()
                    .memory_size(self.limits.memory_bytes)
                    .trap_on_grow_failure(true)
                    .build(),
                memory,
                own: 0,
            },
            tracing: TracingCtx::new(self.name.clone(), self.telemetry.clone()),
            deadline: Instant::now() + self.limits.deadline,
            nn: NnState::new(self.access.graph.as_ref()),
            upkeep: self.upkeep.get().cloned(),
            halt: self.halt.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // At every epoch tick a running guest either stops (past its deadline: a trap,
        // `TrapReason::Deadline`) or lets the executor run other tasks before it goes on.
        // Without the yield a guest computing for long (a consolidation, a compaction)
        // holds its worker thread, and what tokio queued behind it there waits: the
        // cancellation that should stop it, other requests' progress, their replies.
        store.epoch_deadline_callback(|store| {
            let data = store.data();
            Ok(
                if Instant::now() >= data.deadline || data.halt.is_cancelled() {
                    UpdateDeadline::Interrupt
                } else {
                    UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
                },
            )
        });
        store.set_epoch_deadline(1);
        let instance =
            self.pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| CallError::Instantiate {
                    component: self.name.to_string(),
                    message: format!("{e:#}"),
                })?;
        self.instantiations.fetch_add(1, Ordering::Relaxed);
        Ok(Live {
            store,
            instance,
            funcs: HashMap::new(),
        })
    }

    fn lookup(&self, live: &mut Live, interface: &str, function: &str) -> Result<Func, CallError> {
        let key = (interface.to_owned(), function.to_owned());
        if let Some(func) = live.funcs.get(&key) {
            return Ok(*func);
        }
        let missing = || CallError::NoSuchFunction {
            component: self.name.to_string(),
            interface: interface.to_owned(),
            function: function.to_owned(),
        };
        let interface_index = live
            .instance
            .get_export_index(&mut live.store, None, interface)
            .ok_or_else(missing)?;
        let func_index = live
            .instance
            .get_export_index(&mut live.store, Some(&interface_index), function)
            .ok_or_else(missing)?;
        let func = live
            .instance
            .get_func(&mut live.store, func_index)
            .ok_or_else(missing)?;
        live.funcs.insert(key, func);
        Ok(func)
    }

    /// Call `interface#function` with dynamically typed values (the CLI's `invoke`, the
    /// routes between components) within the request `scope`, which is handed back with
    /// the outcome. A trap discards the instance and ends this component's open spans as
    /// failed.
    pub async fn call(
        &self,
        scope: RequestScope,
        interface: &str,
        function: &str,
        params: &[Val],
    ) -> (RequestScope, Result<Vec<Val>, CallError>) {
        self.call_with(scope, interface, function, |store, func, _| {
            Box::pin(async move {
                let mut results = vec![Val::Bool(false); func.ty(&*store).results().len()];
                func.call_async(store, params, &mut results).await?;
                Ok(results)
            })
        })
        .await
    }

    /// Call `interface#function` with Rust types generated from its WIT (the host API);
    /// otherwise as [`PluginComponent::call`].
    pub async fn call_typed<P, R>(
        &self,
        scope: RequestScope,
        interface: &str,
        function: &str,
        params: P,
    ) -> (RequestScope, Result<R, CallError>)
    where
        P: ComponentNamedList + Lower + Send + Sync + 'static,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        self.call_with(scope, interface, function, |store, func, _| {
            Box::pin(async move {
                let typed = func.typed::<P, R>(&*store)?;
                typed.call_async(store, params).await
            })
        })
        .await
    }

    /// The one call path: `invoke` runs the call on the live store. (Its third argument
    /// only states that what the closure borrows, `'p`, outlives the store borrow `'a`.)
    async fn call_with<'p, T>(
        &self,
        mut scope: RequestScope,
        interface: &str,
        function: &str,
        invoke: impl for<'a> FnOnce(
            &'a mut Store<ComponentState>,
            Func,
            std::marker::PhantomData<&'a &'p ()>,
        ) -> CallFuture<'a, T>,
    ) -> (RequestScope, Result<T, CallError>) {
        if self.calls.is_long_running(function) {
            // An instance of its own, dropped afterwards: the component's other calls
            // keep their instance and are not queued behind this one.
            let live = self
                .instantiate_traced(&mut scope, Arc::new(AtomicU64::new(0)))
                .await;
            let mut live = match live {
                Ok(live) => live,
                Err(e) => return (scope, Err(e)),
            };
            let deadline = self.limits.long_deadline;
            let (scope, result, _) = self
                .run_on(&mut live, scope, interface, function, deadline, invoke)
                .await;
            return (scope, result);
        }
        if self.instances > 1 && self.calls.is_serial(function) {
            let mut serial = self.serial.lock().await;
            let (scope, result, back) = self
                .run_lent(scope, serial.take(), interface, function, invoke)
                .await;
            *serial = back;
            return (scope, result);
        }
        // A permit bounds the instances; an idle one is reused, else one is made.
        let Ok(_permit) = self.permits.acquire().await else {
            return (
                scope,
                Err(CallError::Instantiate {
                    component: self.name.to_string(),
                    message: "the component is shutting down".to_owned(),
                }),
            );
        };
        let idle = self.idle_instances().pop();
        let (scope, result, back) = self
            .run_lent(scope, idle, interface, function, invoke)
            .await;
        if let Some(live) = back {
            self.idle_instances().push(live);
        }
        (scope, result)
    }

    /// Run one call on `lent` (an idle instance), or on a fresh one when there is none,
    /// under the ordinary deadline; the instance comes back to be kept unless it trapped.
    /// A trapped instance cannot be entered again: dropped, its memory no longer counts.
    /// So is one whose call's future is dropped mid-call (the request was abandoned): the
    /// instance is out of its pool or slot until here, and one stopped half-way through
    /// a call is never lent to the next request.
    async fn run_lent<'p, T>(
        &self,
        mut scope: RequestScope,
        lent: Option<Live>,
        interface: &str,
        function: &str,
        invoke: impl for<'a> FnOnce(
            &'a mut Store<ComponentState>,
            Func,
            std::marker::PhantomData<&'a &'p ()>,
        ) -> CallFuture<'a, T>,
    ) -> (RequestScope, Result<T, CallError>, Option<Live>) {
        let mut live = match lent {
            Some(live) => live,
            // First call, first after a trap, or every instance busy (and the pool not
            // full): the request pays for a fresh instance, so its trace shows it.
            None => match self
                .instantiate_traced(&mut scope, self.memory.clone())
                .await
            {
                Ok(live) => live,
                Err(e) => return (scope, Err(e), None),
            },
        };
        let deadline = self.limits.deadline;
        let (scope, result, trapped) = self
            .run_on(&mut live, scope, interface, function, deadline, invoke)
            .await;
        (scope, result, (!trapped).then_some(live))
    }

    /// A fresh instance, its creation a `<name>.instantiate` span in the request.
    async fn instantiate_traced(
        &self,
        scope: &mut RequestScope,
        memory: Arc<AtomicU64>,
    ) -> Result<Live, CallError> {
        let span = scope.start(
            None,
            Cow::Owned(format!("{}.instantiate", self.name)),
            SpanKind::Internal,
            vec![KeyValue::new("ww.component", self.name.to_string())],
            None,
        );
        let live = self.new_live(memory).await;
        let outcome = match &live {
            Ok(_) => Outcome::Unset,
            Err(e) => Outcome::Error(e.to_string()),
        };
        scope.end(&None, span, outcome, vec![], vec![], None);
        live
    }

    /// Run one call on `live` under the request `scope`; the flag says it trapped (the
    /// instance must not be used again).
    async fn run_on<'p, T>(
        &self,
        live: &mut Live,
        scope: RequestScope,
        interface: &str,
        function: &str,
        deadline: Duration,
        invoke: impl for<'a> FnOnce(
            &'a mut Store<ComponentState>,
            Func,
            std::marker::PhantomData<&'a &'p ()>,
        ) -> CallFuture<'a, T>,
    ) -> (RequestScope, Result<T, CallError>, bool) {
        let func = match self.lookup(live, interface, function) {
            Ok(func) => func,
            Err(e) => return (scope, Err(e), false),
        };
        // The span the call runs under, for the duration's exemplar (when measured).
        let context = self
            .telemetry
            .metrics()
            .and_then(|_| scope.current().cloned());
        let started = std::time::Instant::now();
        let detached = live.store.data_mut().tracing.enter(scope);
        live.store.data_mut().deadline = Instant::now() + deadline;
        live.store.set_epoch_deadline(1);
        let outcome = invoke(&mut live.store, func, std::marker::PhantomData).await;
        let mut scope = live.store.data_mut().tracing.leave(detached);
        let seconds = started.elapsed().as_secs_f64();
        let error_type = outcome.as_ref().err().map(|_| "trap");
        self.record_call(interface, function, seconds, error_type, context.as_ref());
        match outcome {
            Ok(value) => (scope, Ok(value), false),
            Err(error) => {
                self.traps.fetch_add(1, Ordering::Relaxed);
                let reason = self.trap_reason(&error, deadline);
                let failure = CallError::Trap {
                    component: self.name.to_string(),
                    function: format!("{interface}#{function}"),
                    reason,
                    backtrace: error
                        .downcast_ref::<WasmBacktrace>()
                        .map(|bt| bt.to_string()),
                };
                tracing::warn!("{failure}; the next call gets a fresh instance");
                let owner = Some(self.name.clone());
                scope.fail_spans_of(&owner, &failure.exception());
                (scope, Err(failure), true)
            }
        }
    }
}

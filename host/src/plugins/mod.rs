//! Plugin components: loading, linking, and calling them within a traced request.

pub mod calls;
pub mod component;
pub mod engine;
pub mod network;
pub mod routing;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use tokio_util::sync::CancellationToken;
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentNamedList, Lift, Linker, Lower, Val};

use crate::config::Role;
use crate::telemetry::Telemetry;
use crate::tracing_capability::{self, IncomingContext, ProgressSink, RequestScope};
pub use component::{CallError, CallLimits, ComponentState, PluginComponent, TrapReason};

/// Interfaces the host itself implements; every other import must be routed to a
/// component that exports it.
const HOST_PROVIDED: [&str; 4] = [
    "wasi:",
    "ww:memory/tracing@",
    "ww:memory/metrics@",
    "ww:memory/progress@",
];

/// Whether the host itself implements `interface` (WASI, tracing, metrics, progress).
pub fn host_provided(interface: &str) -> bool {
    HOST_PROVIDED.iter().any(|p| interface.starts_with(p))
}

impl ComponentShape {
    /// Imports another component must serve: not host-provided, and with functions
    /// (an interface imported only for its types needs nothing behind it).
    fn routed_imports(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.imports
            .iter()
            .filter(|(interface, functions)| !host_provided(interface) && !functions.is_empty())
    }

    fn type_only_imports(&self) -> impl Iterator<Item = &String> {
        self.imports
            .iter()
            .filter(|(interface, functions)| !host_provided(interface) && functions.is_empty())
            .map(|(interface, _)| interface)
    }
}

/// The adapters of remote services this repository builds (they need an endpoint).
pub const REMOTE_ADAPTERS: [&str; 3] = [
    "store_neo4j.wasm",
    "store_qdrant.wasm",
    "embedder_openai.wasm",
];

/// A component to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSpec {
    /// Its name in spans and logs (`worker`, `embedded`, ...).
    pub name: String,
    /// The `.wasm` component file.
    pub path: PathBuf,
    /// The roles it serves; it must export each role's interface.
    pub roles: Vec<Role>,
    /// A host directory it may use, seen by it as `/data` (stores only).
    pub data_dir: Option<PathBuf>,
    /// A host directory it may only read, seen by it as `/model` (a model's weights).
    pub model_dir: Option<PathBuf>,
    /// Its call limits; `None` for the host's.
    pub limits: Option<CallLimits>,
    /// Instances that may serve calls at once (`None`: one). Only for components that
    /// keep nothing between calls: each instance has its own memory.
    pub instances: Option<usize>,
    /// The one network address it may reach (`bolt://host:7687`, `http://host:6333`),
    /// given to it as `WW_ENDPOINT`.
    pub endpoint: Option<String>,
    /// Settings, each given to it as `WW_SETTING_<NAME>`.
    pub settings: Vec<(String, String)>,
    /// Secrets: a setting's name and the host environment variable holding its value.
    pub secrets: Vec<(String, String)>,
}

impl ComponentSpec {
    /// A component without a role, data directory or limits of its own.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            roles: Vec::new(),
            data_dir: None,
            model_dir: None,
            limits: None,
            instances: None,
            endpoint: None,
            settings: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// Every `*.wasm` in `dir`, named after the file (`fixture_worker.wasm` → `fixture-worker`),
    /// except the remote adapters: they serve a role the defaults already fill, and need
    /// an endpoint that only a configuration file gives.
    pub fn from_dir(dir: &Path) -> std::io::Result<Vec<ComponentSpec>> {
        let mut specs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let remote = path
                .file_name()
                .is_some_and(|name| REMOTE_ADAPTERS.iter().any(|r| name == *r));
            if path.extension().is_some_and(|e| e == "wasm") && !remote {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().replace('_', "-"))
                    .unwrap_or_default();
                specs.push(ComponentSpec::new(name, path));
            }
        }
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(specs)
    }
}

/// Start-up settings of the component host.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    /// Components to load.
    pub components: Vec<ComponentSpec>,
    /// Where compiled code is cached (none: compile on every start).
    pub cache_dir: Option<PathBuf>,
    /// Bounds on every call.
    pub limits: CallLimits,
    /// What an endpoint that does not answer at load means.
    pub endpoint_check: EndpointCheck,
}

/// Whether the components' endpoints must answer when the host loads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EndpointCheck {
    /// One that does not answer stops the load ([`LoadError::Unreachable`]): a server
    /// that starts only to fail every call helps no one.
    #[default]
    Required,
    /// Load anyway, warn, and keep the reason ([`PluginComponent::endpoint_unreachable`]):
    /// to look at a configuration, or to serve before a store is up (its calls fail
    /// with the adapter's error until it is).
    Report,
}

/// A component that could not be loaded or linked.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The engine could not be created.
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    /// A file is not a loadable component.
    #[error("cannot load component {name} from {path}: {message}")]
    Compile {
        /// Component name.
        name: String,
        /// File.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A component named for a role does not export the role's interface.
    #[error(
        "component {component} cannot serve as {role}: it does not export {interface} (it exports: {exports})"
    )]
    RoleMismatch {
        /// The role's configuration key.
        role: &'static str,
        /// The component.
        component: String,
        /// The interface the role needs.
        interface: &'static str,
        /// What it does export.
        exports: String,
    },
    /// A data directory cannot be created.
    #[error("cannot create the data directory {path} of component {component}: {reason}")]
    DataDir {
        /// The component.
        component: String,
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another process (or host) holds the data directory.
    #[error(
        "the data directory {path} of component {component} is in use{holder}: one server \
         per data directory (give this one another WW_DATA_DIR, or call the running server \
         over HTTP)"
    )]
    DataDirInUse {
        /// The component.
        component: String,
        /// The directory.
        path: PathBuf,
        /// Who holds it, as far as is known (` by process N`).
        holder: String,
    },
    /// An endpoint that is not a URL the host can enforce.
    #[error("component {component}: invalid endpoint {reason}")]
    Endpoint {
        /// The component.
        component: String,
        /// What is wrong.
        reason: String,
    },
    /// The endpoint does not answer at start-up.
    #[error("component {component} cannot reach its endpoint {endpoint}: {reason}")]
    Unreachable {
        /// The component.
        component: String,
        /// The endpoint, as configured.
        endpoint: String,
        /// What failed.
        reason: String,
    },
    /// A secret's environment variable is not set.
    #[error("component {component}: secret `{setting}` comes from ${variable}, which is not set")]
    MissingSecret {
        /// The component.
        component: String,
        /// The setting.
        setting: String,
        /// The variable.
        variable: String,
    },
    /// Two components with one name.
    #[error("two components are named {0}")]
    DuplicateName(String),
    /// An import nothing provides.
    #[error("component {component} imports {interface}, which no loaded component exports")]
    Unsatisfied {
        /// The importer.
        component: String,
        /// The interface.
        interface: String,
    },
    /// Two components export the same interface and nothing says which to use.
    #[error("both {first} and {second} export {interface}")]
    AmbiguousExport {
        /// The interface.
        interface: String,
        /// One exporter.
        first: String,
        /// Another.
        second: String,
    },
    /// Imports that form a cycle (a call could re-enter a busy component).
    #[error("components import each other in a cycle: {0}")]
    Cycle(String),
    /// Linking failed.
    #[error("cannot link component {name}: {message}")]
    Link {
        /// Component name.
        name: String,
        /// Why.
        message: String,
    },
}

/// What a component imports and exports, by interface.
#[derive(Debug, Clone, Default)]
pub struct ComponentShape {
    /// Imported interfaces with their function names (host-provided ones included).
    pub imports: BTreeMap<String, Vec<String>>,
    /// Exported interfaces with their function names.
    pub exports: BTreeMap<String, Vec<String>>,
    /// How it asks its exports to be run (its `ww-memory:calls` section).
    pub calls: calls::CallProperties,
}

fn shape_of(
    engine: &Engine,
    component: &Component,
    calls: calls::CallProperties,
) -> ComponentShape {
    let ty = component.component_type();
    let functions = |item: ComponentItem| match item {
        ComponentItem::ComponentInstance(instance) => instance
            .exports(engine)
            .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
            .map(|(name, _)| name.to_owned())
            .collect(),
        _ => Vec::new(),
    };
    ComponentShape {
        imports: ty
            .imports(engine)
            .map(|(name, item)| (name.to_owned(), functions(item.ty)))
            .collect(),
        exports: ty
            .exports(engine)
            .map(|(name, item)| (name.to_owned(), functions(item.ty)))
            .collect(),
        calls,
    }
}

/// A traced request into the host: the root span it opens and the context it continues.
#[derive(Clone)]
pub struct Request {
    /// Root span name (`mcp.recall_episodes`, ...).
    pub name: Cow<'static, str>,
    /// Root span kind (SERVER at the MCP edge).
    pub kind: SpanKind,
    /// Root span attributes.
    pub attributes: Vec<KeyValue>,
    /// The remote parent, when the caller sent one.
    pub parent: Option<IncomingContext>,
    /// The W3C `baggage` the caller sent.
    pub baggage: Option<String>,
    /// Where the components' progress reports go.
    pub progress: Option<ProgressSink>,
    /// Cancelled when the client cancels the request or goes away: components see it
    /// (`progress.cancelled`) and stop their long operations at the next step.
    pub cancellation: Option<CancellationToken>,
    /// The MCP tool served, when this is a tool call: its duration is then recorded as
    /// `mcp.server.operation.duration`.
    pub tool: Option<String>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("parent", &self.parent)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A SERVER request span named `name`, with no remote parent.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            kind: SpanKind::Server,
            attributes: Vec::new(),
            parent: None,
            baggage: None,
            progress: None,
            cancellation: None,
            tool: None,
        }
    }

    /// Measure this request as a call of MCP tool `name`.
    pub fn for_tool(mut self, name: impl Into<String>) -> Self {
        self.tool = Some(name.into());
        self
    }

    /// Send the components' progress reports to `sink`.
    pub fn with_progress(mut self, sink: ProgressSink) -> Self {
        self.progress = Some(sink);
        self
    }

    /// Let `token` cancel the request.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancellation = Some(token);
        self
    }

    /// Continue the trace of a `traceparent` received from the caller.
    pub fn with_parent(mut self, parent: IncomingContext) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Carry the caller's W3C baggage.
    pub fn with_baggage(mut self, baggage: impl Into<String>) -> Self {
        self.baggage = Some(baggage.into());
        self
    }

    /// Add a root span attribute.
    pub fn with_attribute(mut self, attribute: KeyValue) -> Self {
        self.attributes.push(attribute);
        self
    }
}

/// The loaded, linked components, and the way in.
pub struct ComponentHost {
    telemetry: Arc<Telemetry>,
    components: Vec<(Arc<PluginComponent>, ComponentShape)>,
    exporters: HashMap<String, Arc<PluginComponent>>,
    _ticker: engine::EpochTicker,
    /// Exclusive locks on the components' data directories, held while the host lives.
    _data_locks: Vec<std::fs::File>,
}

impl ComponentHost {
    /// Compile (or load from cache), link and pre-instantiate every component; a
    /// component whose imports nothing satisfies is refused with the interface named.
    pub async fn load(config: HostConfig, telemetry: Arc<Telemetry>) -> Result<Self, LoadError> {
        let engine = engine::build_engine(config.cache_dir.as_deref())
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let ticker =
            engine::EpochTicker::start(&engine).map_err(|e| LoadError::Engine(e.to_string()))?;

        let mut compiled: BTreeMap<String, (ComponentSpec, Component, ComponentShape)> =
            BTreeMap::new();
        for spec in config.components {
            let component =
                Component::from_file(&engine, &spec.path).map_err(|e| LoadError::Compile {
                    name: spec.name.clone(),
                    path: spec.path.clone(),
                    message: format!("{e:#}"),
                })?;
            // Read again for its custom sections (a few milliseconds for the largest,
            // the model embedder); the compiled form keeps none of them.
            let calls = std::fs::read(&spec.path)
                .map(|bytes| calls::CallProperties::of_component(&bytes))
                .unwrap_or_default();
            let shape = shape_of(&engine, &component, calls);
            if compiled.contains_key(&spec.name) {
                return Err(LoadError::DuplicateName(spec.name));
            }
            compiled.insert(spec.name.clone(), (spec, component, shape));
        }

        // Which component serves each exported interface: a role's choice first, then
        // the one component exporting an interface no role claims.
        let mut exporter_of: HashMap<String, String> = HashMap::new();
        for (name, (spec, _, shape)) in &compiled {
            for role in &spec.roles {
                if !shape.exports.contains_key(role.interface()) {
                    return Err(LoadError::RoleMismatch {
                        role: role.key(),
                        component: name.clone(),
                        interface: role.interface(),
                        exports: shape.exports.keys().cloned().collect::<Vec<_>>().join(", "),
                    });
                }
                exporter_of.insert(role.interface().to_owned(), name.clone());
            }
        }
        let role_bound: Vec<String> = exporter_of.keys().cloned().collect();
        for (name, (_, _, shape)) in &compiled {
            for interface in shape.exports.keys().filter(|i| !role_bound.contains(i)) {
                if let Some(first) = exporter_of.insert(interface.clone(), name.clone()) {
                    return Err(LoadError::AmbiguousExport {
                        interface: interface.clone(),
                        first,
                        second: name.clone(),
                    });
                }
            }
        }
        for (name, (_, _, shape)) in &compiled {
            for (interface, _) in shape.routed_imports() {
                if !exporter_of.contains_key(interface) {
                    return Err(LoadError::Unsatisfied {
                        component: name.clone(),
                        interface: interface.clone(),
                    });
                }
            }
        }

        // Link callees before their callers, so each route can hold its target.
        let order = dependency_order(&compiled, &exporter_of)?;
        let mut loaded: HashMap<String, Arc<PluginComponent>> = HashMap::new();
        let mut components = Vec::new();
        let mut data_locks: HashMap<PathBuf, std::fs::File> = HashMap::new();
        for name in order {
            let Some((spec, component, shape)) = compiled.remove(&name) else {
                continue;
            };
            let link_error = |e: wasmtime::Error| LoadError::Link {
                name: name.clone(),
                message: format!("{e:#}"),
            };
            let access = access_of(&spec, config.endpoint_check).await?;
            let mut linker: Linker<ComponentState> = Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_error)?;
            // wasi:http for every component; the hooks refuse any request but to the
            // component's endpoint.
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
                .map_err(link_error)?;
            tracing_capability::add_to_linker(&mut linker, |s: &mut ComponentState| &mut s.tracing)
                .map_err(link_error)?;
            let caller: Arc<str> = Arc::from(name.as_str());
            for interface in shape.type_only_imports() {
                linker.instance(interface).map_err(link_error)?;
            }
            for (interface, functions) in shape.routed_imports() {
                let target = exporter_of
                    .get(interface)
                    .and_then(|exporter| loaded.get(exporter))
                    .ok_or_else(|| LoadError::Unsatisfied {
                        component: name.clone(),
                        interface: interface.clone(),
                    })?;
                routing::route_interface(&mut linker, &caller, interface, functions, target)
                    .map_err(link_error)?;
            }
            let pre = linker.instantiate_pre(&component).map_err(link_error)?;
            if let Some(dir) = &spec.data_dir {
                std::fs::create_dir_all(dir).map_err(|e| LoadError::DataDir {
                    component: name.clone(),
                    path: dir.clone(),
                    reason: e.to_string(),
                })?;
                // One host per directory: components of this host may share it.
                if !data_locks.contains_key(dir) {
                    data_locks.insert(dir.clone(), lock_data_dir(&name, dir)?);
                }
            }
            let plugin = Arc::new(PluginComponent::new(
                caller,
                spec.path,
                component::Access {
                    data_dir: spec.data_dir,
                    model_dir: spec.model_dir,
                    ..access
                },
                engine.clone(),
                pre,
                telemetry.clone(),
                component::Bounds {
                    limits: spec.limits.unwrap_or(config.limits),
                    instances: spec.instances.unwrap_or(1),
                    calls: shape.calls.clone(),
                },
            ));
            loaded.insert(name, plugin.clone());
            components.push((plugin, shape));
        }
        let exporters = exporter_of
            .into_iter()
            .filter_map(|(interface, name)| loaded.get(&name).map(|c| (interface, c.clone())))
            .collect();
        if let Some(metrics) = telemetry.metrics() {
            observe_components(metrics, &components);
        }
        Ok(Self {
            telemetry,
            components,
            exporters,
            _ticker: ticker,
            _data_locks: data_locks.into_values().collect(),
        })
    }

    /// The telemetry pipeline.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Every loaded component with its imports and exports, callees first.
    pub fn components(&self) -> impl Iterator<Item = (&Arc<PluginComponent>, &ComponentShape)> {
        self.components.iter().map(|(c, s)| (c, s))
    }

    /// The component named `name`.
    pub fn component(&self, name: &str) -> Option<&Arc<PluginComponent>> {
        self.components
            .iter()
            .map(|(c, _)| c)
            .find(|c| c.name() == name)
    }

    /// The component that exports `interface`.
    pub fn exporter(&self, interface: &str) -> Option<&Arc<PluginComponent>> {
        self.exporters.get(interface)
    }

    /// The interfaces the component named `name` serves.
    pub fn exporters_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.exporters
            .iter()
            .filter(move |(_, c)| c.name() == name)
            .map(|(interface, _)| interface.as_str())
    }

    /// Instantiate every component now rather than on first call.
    pub async fn warm_up(&self) -> Result<(), CallError> {
        for (component, _) in &self.components {
            component.instantiate().await?;
        }
        Ok(())
    }

    /// Serve one request: open its root span (under the caller's `traceparent` when
    /// given), call `interface#function` on the component that exports it, and end every
    /// span the request left open. A failure marks the root span ERROR with an
    /// `exception` event.
    pub async fn invoke(
        &self,
        request: Request,
        interface: &str,
        function: &str,
        params: &[Val],
    ) -> Result<Vec<Val>, CallError> {
        self.begin(request)
            .invoke(interface, function, params)
            .await
    }

    /// Open a request's root span; calls made through the returned [`RequestCall`] run
    /// inside it, and it ends (with whatever guests left open) when that is dropped.
    pub fn begin(&self, request: Request) -> RequestCall<'_> {
        let mut scope = RequestScope::new(
            self.telemetry.clone(),
            request.parent.as_ref(),
            request.baggage.as_deref(),
        );
        scope.set_progress(request.progress);
        scope.set_cancellation(request.cancellation);
        let root = scope.start(None, request.name, request.kind, request.attributes, None);
        RequestCall {
            host: self,
            scope: Some(scope),
            root,
            started: std::time::Instant::now(),
            tool: request.tool,
            error: None,
        }
    }
}

/// One request in progress: its scope and root span. Dropping it ends the request.
pub struct RequestCall<'h> {
    host: &'h ComponentHost,
    scope: Option<RequestScope>,
    root: u64,
    started: std::time::Instant,
    tool: Option<String>,
    /// The failure's code, for the tool-duration metric.
    error: Option<&'static str>,
}

impl RequestCall<'_> {
    /// The component serving `interface`, or the error (recorded on the root span).
    fn target(&mut self, interface: &str) -> Result<Arc<PluginComponent>, CallError> {
        match self.host.exporters.get(interface) {
            Some(target) => Ok(target.clone()),
            None => {
                let error = CallError::NoExporter {
                    interface: interface.to_owned(),
                };
                self.record(&error);
                Err(error)
            }
        }
    }

    fn record(&mut self, error: &CallError) {
        if let Some(scope) = &mut self.scope {
            scope.record_exception(&None, self.root, error.exception());
        }
    }

    fn take_scope(&mut self) -> RequestScope {
        self.scope
            .take()
            .unwrap_or_else(|| RequestScope::new(self.host.telemetry.clone(), None, None))
    }

    fn settle<T>(
        &mut self,
        (scope, result): (RequestScope, Result<T, CallError>),
    ) -> Result<T, CallError> {
        self.scope = Some(scope);
        if let Err(error) = &result {
            self.record(error);
        }
        result
    }

    /// Call with dynamically typed values.
    pub async fn invoke(
        &mut self,
        interface: &str,
        function: &str,
        params: &[Val],
    ) -> Result<Vec<Val>, CallError> {
        let target = self.target(interface)?;
        let scope = self.take_scope();
        let outcome = target.call(scope, interface, function, params).await;
        self.settle(outcome)
    }

    /// Call with the Rust types generated from the WIT.
    pub async fn invoke_typed<P, R>(
        &mut self,
        interface: &str,
        function: &str,
        params: P,
    ) -> Result<R, CallError>
    where
        P: ComponentNamedList + Lower + Send + Sync + 'static,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let target = self.target(interface)?;
        let scope = self.take_scope();
        let outcome = target.call_typed(scope, interface, function, params).await;
        self.settle(outcome)
    }

    /// Add attributes to the root span.
    pub fn annotate(&mut self, attributes: Vec<KeyValue>) {
        if let Some(scope) = &mut self.scope {
            scope.set_attributes(&None, self.root, attributes);
        }
    }

    /// Whether the request was cancelled (see [`Request::with_cancellation`]).
    pub fn is_cancelled(&self) -> bool {
        self.scope.as_ref().is_some_and(RequestScope::is_cancelled)
    }

    /// Say how the request failed (a low-cardinality code), for its metrics.
    pub fn set_error_code(&mut self, code: &'static str) {
        self.error = Some(code);
    }

    /// Mark the root span failed, with an `exception` event.
    pub fn fail(&mut self, exception: crate::tracing_capability::Exception) {
        if let Some(scope) = &mut self.scope {
            scope.record_exception(&None, self.root, exception);
        }
    }
}

impl Drop for RequestCall<'_> {
    fn drop(&mut self) {
        // Ends what guests left open, innermost first, then the root.
        let Some(scope) = self.scope.take() else {
            return;
        };
        let metrics = self
            .host
            .telemetry
            .metrics()
            .filter(|_| self.tool.is_some());
        let root = metrics.and_then(|_| scope.span_context(self.root).cloned());
        scope.finish();
        // Recorded once the root has ended, so tail sampling has decided its trace.
        if let (Some(tool), Some(metrics)) = (self.tool.take(), metrics) {
            let mut pairs = vec![
                ("mcp.method.name".into(), "tools/call".into()),
                ("gen_ai.tool.name".into(), tool.into()),
            ];
            if let Some(code) = self.error {
                // `tool_error`: the result is an error result (`isError`), as on the span.
                pairs.push(("error.type".into(), "tool_error".into()));
                pairs.push(("ww.error.code".into(), code.into()));
            }
            let attributes = crate::telemetry::metrics::Attributes::new(pairs);
            let seconds = self.started.elapsed().as_secs_f64();
            metrics
                .host
                .tool_duration
                .record(seconds, &attributes, root.as_ref());
        }
    }
}

/// Each component's instantiations and traps as metrics (read at each collection, for as
/// long as the components live).
fn observe_components(
    metrics: &crate::telemetry::Metrics,
    components: &[(Arc<PluginComponent>, ComponentShape)],
) {
    use crate::telemetry::metrics::{AttrValue, Attributes, Observation};
    let components: Vec<std::sync::Weak<PluginComponent>> =
        components.iter().map(|(c, _)| Arc::downgrade(c)).collect();
    metrics.observe(Box::new(move |out: &mut Vec<Observation>| {
        for component in components.iter().filter_map(std::sync::Weak::upgrade) {
            let attributes = Attributes::new(vec![(
                "ww.component".into(),
                AttrValue::from(component.name().to_owned()),
            )]);
            out.push(Observation {
                name: "ww.component.instantiations",
                unit: "{instance}",
                description: "Instances created: the first, and one after each trap",
                attributes: attributes.clone(),
                value: component.instantiations(),
            });
            out.push(Observation {
                name: "ww.component.traps",
                unit: "{trap}",
                description: "Calls that trapped",
                attributes,
                value: component.traps(),
            });
        }
    }));
}

/// A component's endpoint (parsed, and reachable now) and its settings environment.
async fn access_of(
    spec: &ComponentSpec,
    check: EndpointCheck,
) -> Result<component::Access, LoadError> {
    let mut env = Vec::new();
    let mut unreachable = None;
    let endpoint = match &spec.endpoint {
        None => None,
        Some(url) => {
            let endpoint = network::Endpoint::parse(url).map_err(|reason| LoadError::Endpoint {
                component: spec.name.clone(),
                reason,
            })?;
            if let Err(reason) = endpoint.check_reachable().await {
                let error = LoadError::Unreachable {
                    component: spec.name.clone(),
                    endpoint: url.clone(),
                    reason: reason.clone(),
                };
                match check {
                    EndpointCheck::Required => return Err(error),
                    EndpointCheck::Report => {
                        tracing::warn!("{error}; loaded anyway");
                        unreachable = Some(reason);
                    }
                }
            }
            env.push(("WW_ENDPOINT".to_owned(), url.clone()));
            Some(Arc::new(endpoint))
        }
    };
    for (name, value) in &spec.settings {
        env.push((setting_variable(name), value.clone()));
    }
    for (name, variable) in &spec.secrets {
        let value = std::env::var(variable).map_err(|_| LoadError::MissingSecret {
            component: spec.name.clone(),
            setting: name.clone(),
            variable: variable.clone(),
        })?;
        env.push((setting_variable(name), value));
    }
    Ok(component::Access {
        data_dir: None,
        model_dir: None,
        endpoint,
        unreachable,
        env,
    })
}

/// The variable a setting reaches a component in (the guest SDK's `settings` reads it).
pub fn setting_variable(name: &str) -> String {
    let mut var = String::from("WW_SETTING_");
    var.extend(name.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    var
}

/// Takes the exclusive lock of data directory `dir` (its `.ww-lock` file, which names the
/// holding process): two hosts appending to one store's log would each lose the other's
/// writes.
fn lock_data_dir(component: &str, dir: &Path) -> Result<std::fs::File, LoadError> {
    use std::io::{Read as _, Seek as _, Write as _};
    let failed = |e: std::io::Error| LoadError::DataDir {
        component: component.to_owned(),
        path: dir.to_owned(),
        reason: e.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(".ww-lock"))
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(failed)?;
            file.rewind().map_err(failed)?;
            writeln!(file, "{}", std::process::id()).map_err(failed)?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            Err(LoadError::DataDirInUse {
                component: component.to_owned(),
                path: dir.to_owned(),
                holder: if holder.is_empty() {
                    String::new()
                } else {
                    format!(" by process {holder}")
                },
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
    }
}

/// Components in an order where every exporter precedes its importers.
fn dependency_order(
    compiled: &BTreeMap<String, (ComponentSpec, Component, ComponentShape)>,
    exporter_of: &HashMap<String, String>,
) -> Result<Vec<String>, LoadError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        name: &str,
        compiled: &BTreeMap<String, (ComponentSpec, Component, ComponentShape)>,
        exporter_of: &HashMap<String, String>,
        marks: &mut HashMap<String, Mark>,
        path: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), LoadError> {
        match marks.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                path.push(name.to_owned());
                return Err(LoadError::Cycle(path.join(" → ")));
            }
            None => {}
        }
        marks.insert(name.to_owned(), Mark::Visiting);
        path.push(name.to_owned());
        if let Some((_, _, shape)) = compiled.get(name) {
            for (interface, _) in shape.routed_imports() {
                if let Some(dependency) = exporter_of.get(interface) {
                    visit(dependency, compiled, exporter_of, marks, path, order)?;
                }
            }
        }
        path.pop();
        marks.insert(name.to_owned(), Mark::Done);
        order.push(name.to_owned());
        Ok(())
    }
    let mut marks = HashMap::new();
    let mut order = Vec::new();
    for name in compiled.keys() {
        visit(
            name,
            compiled,
            exporter_of,
            &mut marks,
            &mut Vec::new(),
            &mut order,
        )?;
    }
    Ok(order)
}

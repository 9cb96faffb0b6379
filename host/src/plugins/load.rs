//! Loading: compile (or take from the cache) every component, bind roles and exports,
//! link each import to the component that serves it, callees first.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::{Component, Linker};

use super::calls::CallProperties;
use super::component::upkeep;
use super::component::{self, ComponentState, PluginComponent};
use super::data_dir::lock_data_dir;
use super::shape::{ComponentShape, shape_of};
use super::spec::{ComponentSpec, EndpointCheck, HostConfig};
use super::{ComponentHost, engine, network, routing};
use crate::inference::{self, InferencePath, OnnxRuntime};
use crate::telemetry::Telemetry;
use crate::tracing_capability::metrics::{self, WwMetrics};
use crate::tracing_capability::otel::{self, WasiOtel};
use crate::tracing_capability::progress::{self, WwProgress};
use crate::tracing_capability::{self, WwTracing};

/// A cause kept whole, whatever its type (wasmtime's errors carry their own chain).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A component that could not be loaded or linked.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The engine could not be created.
    #[error("cannot create the wasm engine")]
    Engine(#[source] BoxError),
    /// A file is not a loadable component.
    #[error("cannot load component {name} from {path}")]
    Compile {
        /// Component name.
        name: String,
        /// File.
        path: PathBuf,
        /// Why (wasmtime's error, with its own causes).
        #[source]
        source: BoxError,
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
    #[error("cannot create the data directory {path} of component {component}")]
    DataDir {
        /// The component.
        component: String,
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
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
    #[error("component {component}: invalid endpoint")]
    Endpoint {
        /// The component.
        component: String,
        /// What is wrong.
        #[source]
        source: network::EndpointError,
    },
    /// The endpoint does not answer at start-up.
    #[error("component {component} cannot reach its endpoint {endpoint}")]
    Unreachable {
        /// The component.
        component: String,
        /// The endpoint, as configured.
        endpoint: String,
        /// What failed.
        #[source]
        source: network::ReachError,
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
    /// A model directory's graph cannot be loaded (a corrupt or unreadable model.onnx).
    #[error("component {component}")]
    Graph {
        /// The component.
        component: String,
        /// The file and why.
        #[source]
        source: crate::inference::GraphError,
    },
    /// Linking failed.
    #[error("cannot link component {name}")]
    Link {
        /// Component name.
        name: String,
        /// Why (wasmtime's error, with its own causes).
        #[source]
        source: BoxError,
    },
}

impl ComponentHost {
    /// Compile (or load from cache), link and pre-instantiate every component; a
    /// component whose imports nothing satisfies is refused with the interface named.
    pub async fn load(config: HostConfig, telemetry: Arc<Telemetry>) -> Result<Self, LoadError> {
        let engine = engine::build_engine(config.cache_dir.as_deref())
            .map_err(|e| LoadError::Engine(e.into()))?;
        let ticker =
            engine::EpochTicker::start(&engine).map_err(|e| LoadError::Engine(e.into()))?;

        let mut compiled: BTreeMap<String, (ComponentSpec, Component, ComponentShape)> =
            BTreeMap::new();
        for spec in config.components {
            // Read once: compiled (or taken from the cache) and searched for its custom
            // sections, which the compiled form does not keep.
            let compile_error = |source: BoxError| LoadError::Compile {
                name: spec.name.clone(),
                path: spec.path.clone(),
                source,
            };
            let bytes = std::fs::read(&spec.path).map_err(|e| compile_error(e.into()))?;
            let component = Component::new(&engine, &bytes).map_err(|e| compile_error(e.into()))?;
            let calls = CallProperties::of_component(&bytes);
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

        // ONNX Runtime, loaded only when a component has a model directory: its graph
        // runs there; without it the component runs its model itself (and the host says
        // so).
        let runtime = if compiled
            .values()
            .any(|(spec, _, _)| spec.model_dir.is_some())
        {
            let runtime = match &config.inference.library {
                None => Err(
                    "ONNX Runtime is switched off (WW_ONNXRUNTIME=off, or no library configured)"
                        .to_owned(),
                ),
                Some(library) => OnnxRuntime::load(library, telemetry.clone()),
            };
            if let Err(reason) = &runtime {
                tracing::warn!("models run inside their components, slower: {reason}");
            }
            runtime
        } else {
            Err("no component has a model directory".to_owned())
        };

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
                source: e.into(),
            };
            let mut access = access_of(&spec, config.endpoint_check).await?;
            if let Some(dir) = &spec.model_dir {
                let instances = spec.instances.unwrap_or(1);
                let model = spec
                    .settings
                    .iter()
                    .find(|(key, _)| key == "model")
                    .map_or_else(|| name.clone(), |(_, value)| value.clone());
                let (graph, path) = inference::graph_for(
                    runtime.as_ref().map_err(String::as_str),
                    dir,
                    &model,
                    instances,
                    config.inference.threads,
                )
                .map_err(|source| LoadError::Graph {
                    component: name.clone(),
                    source,
                })?;
                if let InferencePath::WasiNn { threads, .. } = &path {
                    // What the component reports on its inference spans.
                    access
                        .config
                        .push((INFERENCE_KEY.to_owned(), "wasi-nn onnx".to_owned()));
                    access
                        .config
                        .push((INFERENCE_THREADS_KEY.to_owned(), threads.to_string()));
                }
                access.graph = graph;
                access.inference = Some(path);
            }
            let mut linker: Linker<ComponentState> = Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_error)?;
            // wasi:http for every component; the hooks refuse any request but to the
            // component's endpoint.
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
                .map_err(link_error)?;
            wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut ComponentState| {
                wasmtime_wasi_config::WasiConfig::from(&s.config)
            })
            .map_err(link_error)?;
            // Each capability links itself through its own view of the store's tracing
            // context; all of them read the scope of the request being served.
            tracing_capability::add_to_linker(&mut linker, |s: &mut ComponentState| {
                WwTracing::new(&mut s.tracing)
            })
            .map_err(link_error)?;
            metrics::add_to_linker(&mut linker, |s: &mut ComponentState| {
                WwMetrics::new(&mut s.tracing)
            })
            .map_err(link_error)?;
            progress::add_to_linker(&mut linker, |s: &mut ComponentState| {
                WwProgress::new(&mut s.tracing)
            })
            .map_err(link_error)?;
            // Components built for other hosts trace through wasi:otel; their spans join
            // the same stack.
            otel::add_to_linker(&mut linker, |s: &mut ComponentState| {
                WasiOtel::new(&mut s.tracing)
            })
            .map_err(link_error)?;
            // Upkeep: work a component asks to have run after its call (compaction).
            upkeep::add_to_linker(&mut linker, ComponentState::upkeep).map_err(link_error)?;
            // wasi:nn: the graphs of the component's model directory, by name.
            inference::add_to_linker(&mut linker, ComponentState::nn).map_err(link_error)?;
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
                std::fs::create_dir_all(dir).map_err(|source| LoadError::DataDir {
                    component: name.clone(),
                    path: dir.clone(),
                    source,
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
            plugin.start_upkeep().map_err(|e| LoadError::Link {
                name: name.clone(),
                source: format!("cannot start its upkeep thread: {e}").into(),
            })?;
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

/// A component's endpoint (parsed, and reachable now) and its settings (`wasi:config`).
async fn access_of(
    spec: &ComponentSpec,
    check: EndpointCheck,
) -> Result<component::Access, LoadError> {
    let mut config = Vec::new();
    let mut unreachable = None;
    let endpoint = match &spec.endpoint {
        None => None,
        Some(url) => {
            let endpoint = network::Endpoint::parse(url).map_err(|source| LoadError::Endpoint {
                component: spec.name.clone(),
                source,
            })?;
            if let Err(source) = endpoint.check_reachable().await {
                // Kept as text for `ww-memory plugins` (the error itself is not `Clone`).
                let reason = crate::report::chain(&source);
                let error = LoadError::Unreachable {
                    component: spec.name.clone(),
                    endpoint: url.clone(),
                    source,
                };
                match check {
                    EndpointCheck::Required => return Err(error),
                    EndpointCheck::Report => {
                        tracing::warn!("{}; loaded anyway", crate::report::chain(&error));
                        unreachable = Some(reason);
                    }
                }
            }
            Some(Arc::new(endpoint))
        }
    };
    for (name, value) in &spec.settings {
        config.push((name.clone(), value.clone()));
    }
    for (name, variable) in &spec.secrets {
        let value = std::env::var(variable).map_err(|_| LoadError::MissingSecret {
            component: spec.name.clone(),
            setting: name.clone(),
            variable: variable.clone(),
        })?;
        config.push((name.clone(), value));
    }
    // Last, so that the endpoint wins over a setting of the same name.
    if let Some(url) = &spec.endpoint {
        config.push((ENDPOINT_KEY.to_owned(), url.clone()));
    }
    Ok(component::Access {
        data_dir: None,
        model_dir: None,
        endpoint,
        unreachable,
        config,
        graph: None,
        inference: None,
    })
}

/// The key a component's endpoint reaches it under, in `wasi:config/store` (the guest
/// SDK's `settings::endpoint` reads it).
pub const ENDPOINT_KEY: &str = "endpoint";

/// The key that tells a model component how the host runs its graph (`wasi-nn onnx`),
/// when it does.
pub const INFERENCE_KEY: &str = "inference";

/// The key with the intra-op thread count of its graph's sessions.
pub const INFERENCE_THREADS_KEY: &str = "inference.threads";

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

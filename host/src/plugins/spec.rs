//! What to load: the roles a component can serve, and each component's file, grants
//! and bounds. A leaf: the configuration file builds these, the loader reads them, and
//! neither knows the other.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A role a component can serve, each defined by the interface it must export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Text to vectors.
    Embedder,
    /// Vectors with payloads.
    VectorStore,
    /// Nodes and typed edges.
    GraphStore,
    /// Episodic memory.
    Episodic,
    /// Semantic memory.
    Semantic,
    /// Procedural memory.
    Procedural,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 6] = [
        Role::Embedder,
        Role::VectorStore,
        Role::GraphStore,
        Role::Episodic,
        Role::Semantic,
        Role::Procedural,
    ];

    /// The interface a component must export to serve this role.
    pub fn interface(self) -> &'static str {
        match self {
            Role::Embedder => "ww:memory/embedder@0.1.0",
            Role::VectorStore => "ww:memory/vector-store@0.1.0",
            Role::GraphStore => "ww:memory/graph-store@0.1.0",
            Role::Episodic => "ww:memory/episodic@0.1.0",
            Role::Semantic => "ww:memory/semantic@0.1.0",
            Role::Procedural => "ww:memory/procedural@0.1.0",
        }
    }

    /// The role whose interface is `interface`.
    pub fn of_interface(interface: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.interface() == interface)
    }

    /// The WIT world (of `wit/v0.1.0/host.wit`) a component serving this role is built for,
    /// given every interface it exports: one store component serving both store roles is a
    /// `combined-store`.
    pub fn world(self, exports: &[&str]) -> &'static str {
        let both_stores = [Role::VectorStore, Role::GraphStore]
            .iter()
            .all(|r| exports.contains(&r.interface()));
        match self {
            Role::VectorStore | Role::GraphStore if both_stores => "ww:memory/combined-store@0.1.0",
            Role::VectorStore => "ww:memory/vector-store-adapter@0.1.0",
            Role::GraphStore => "ww:memory/graph-store-adapter@0.1.0",
            Role::Embedder => "ww:memory/embedder-provider@0.1.0",
            Role::Episodic => "ww:memory/episodic-service@0.1.0",
            Role::Semantic => "ww:memory/semantic-service@0.1.0",
            Role::Procedural => "ww:memory/procedural-service@0.1.0",
        }
    }

    /// The role's name in the configuration file.
    pub fn key(self) -> &'static str {
        match self {
            Role::Embedder => "embedder",
            Role::VectorStore => "vector-store",
            Role::GraphStore => "graph-store",
            Role::Episodic => "episodic",
            Role::Semantic => "semantic",
            Role::Procedural => "procedural",
        }
    }

    /// Whether the role keeps data (and so gets a data directory by default).
    pub fn is_store(self) -> bool {
        matches!(self, Role::VectorStore | Role::GraphStore)
    }
}

/// Bounds on every call into a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Wall time a call may run before it is interrupted (epoch deadline).
    pub deadline: Duration,
    /// The same for the long-running exports.
    pub long_deadline: Duration,
    /// Linear memory a component instance may grow to, in bytes.
    pub memory_bytes: usize,
}

/// A call's default deadline: an embedder or a service answers in milliseconds, so ten
/// seconds means a component is stuck (or looping), not slow.
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_secs(10);
/// The deadline of a long-running export (consolidation walks every episode of a store
/// and embeds its summaries): ten minutes.
pub const DEFAULT_LONG_CALL_DEADLINE: Duration = Duration::from_secs(600);
/// A component instance's default linear memory: 256 MiB holds the model embedder's
/// weights (90 MB) and a service's working set with room to spare.
pub const DEFAULT_MEMORY_BYTES: usize = 256 << 20;

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            deadline: DEFAULT_CALL_DEADLINE,
            long_deadline: DEFAULT_LONG_CALL_DEADLINE,
            memory_bytes: DEFAULT_MEMORY_BYTES,
        }
    }
}

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
    /// given to it as the `wasi:config` key `endpoint`.
    pub endpoint: Option<String>,
    /// Settings, each given to it through `wasi:config` under its name.
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
    /// except those that reach the network (remote adapters: they import wasi:http or
    /// wasi:sockets): they need an endpoint that only a configuration file gives.
    pub fn from_dir(dir: &Path) -> std::io::Result<Vec<ComponentSpec>> {
        let mut specs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "wasm")
                || super::network::imports_network(&std::fs::read(&path)?)
            {
                continue;
            }
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().replace('_', "-"))
                .unwrap_or_default();
            specs.push(ComponentSpec::new(name, path));
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
    /// How models run: the ONNX Runtime library and the threads of each session.
    pub inference: crate::inference::InferenceConfig,
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

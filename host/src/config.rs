//! The configuration file (TOML): which component serves each role, with its settings.
//! Every key is optional; with no file at all the defaults apply.
//!
//! ```toml
//! plugin_dir = "target/wasm32-wasip2/release"   # relative component paths start here
//! data_dir = "./data"      # the default store's directory and the default session
//!                          # (WW_DATA_DIR wins)
//! tokens = "tokens.toml"   # HTTP bearer tokens bound to sessions (WW_TOKENS_FILE wins)
//!
//! [limits]                  # every call into any component
//! deadline_ms = 10000       # (stores: 60000)
//! long_deadline_ms = 600000 # consolidation calls
//! memory_mb = 256           # (stores: 2048)
//!
//! [inference]              # models with a model.onnx run natively, through wasi:nn
//! onnxruntime = "target/onnxruntime/libonnxruntime.so"   # (WW_ONNXRUNTIME wins; "off": none)
//! threads = 1               # per session (WW_INFERENCE_THREADS; default: cores / instances)
//!
//! [roles.embedder]
//! component = "embedder_bert.wasm"
//! model_dir = "target/models/all-MiniLM-L6-v2"   # read-only, as /model (WW_MODEL_DIR wins)
//! settings = { model = "sentence-transformers/all-MiniLM-L6-v2" }
//!
//! [roles.vector-store]      # vector-store and graph-store may name the same file:
//! component = "store_embedded.wasm"   # one component then serves both
//! name = "embedded"         # boundary spans: embedded.search, ...
//! data_dir = "./data"       # the only directory it can see (as /data)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::plugins::spec::{CallLimits, ComponentSpec, Role};

/// Where components are looked for when the file does not say.
pub const DEFAULT_PLUGIN_DIR: &str = "target/wasm32-wasip2/release";

/// The default store's data directory when neither the file nor `WW_DATA_DIR` says.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// The default embedder's model directory (what `make` fetches; `WW_MODEL_DIR` wins).
pub const DEFAULT_MODEL_DIR: &str = "target/models/all-MiniLM-L6-v2";

/// The model the default embedder runs, as it names it in spans and stats.
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The default embedder's memory limit per instance, in MiB.
pub const EMBEDDER_MEMORY_MB: usize = 512;

/// Instances of one component, at most.
pub const MAX_INSTANCES: usize = 16;

/// The embedder's instances by default: one per core (so concurrent requests embed at
/// once), at most 4 (each holds a model's weights).
pub fn default_embedder_instances() -> usize {
    cores().min(4)
}

/// Instances of a component that mostly waits by default: a memory service (it waits on
/// the stores and the embedder it calls) or any component with an endpoint (it waits on
/// the network). Four per core, at least 8, at most [`MAX_INSTANCES`]: a waiting instance
/// holds no core, so more requests than cores may wait at once, and each instance costs
/// only its linear memory (a few MiB for a service or an adapter).
pub fn default_waiting_instances() -> usize {
    (4 * cores()).clamp(8, MAX_INSTANCES)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A store's default memory limit, in MiB (100k episodes of 384 dimensions take about
/// 300 MiB in the embedded store).
pub const STORE_MEMORY_MB: usize = 2048;

/// A store call's default deadline: its first call replays the write-ahead log (about a
/// second at 100k episodes on this machine), so it gets six times a component's.
pub const STORE_CALL_DEADLINE: Duration = Duration::from_secs(60);

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read the configuration {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML for this schema (unknown keys included).
    #[error("invalid configuration {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with its line.
        reason: String,
    },
}

/// Per-call bounds, as written in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Wall time per call, in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Wall time per long-running call (consolidation), in milliseconds.
    pub long_deadline_ms: Option<u64>,
    /// Linear memory per component instance, in MiB.
    pub memory_mb: Option<usize>,
}

impl LimitsConfig {
    fn apply(&self, base: CallLimits) -> CallLimits {
        CallLimits {
            deadline: self
                .deadline_ms
                .map_or(base.deadline, Duration::from_millis),
            long_deadline: self
                .long_deadline_ms
                .map_or(base.long_deadline, Duration::from_millis),
            memory_bytes: self.memory_mb.map_or(base.memory_bytes, |mb| mb << 20),
        }
    }
}

/// One role's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// The component file, relative to `plugin_dir` unless absolute.
    pub component: PathBuf,
    /// The component's name in spans and logs (default: the role's key).
    pub name: Option<String>,
    /// A directory the component may read and write, seen by it as `/data` (stores:
    /// default the file's `data_dir`).
    pub data_dir: Option<PathBuf>,
    /// A directory the component may only read, seen by it as `/model`: a model
    /// embedder's weights and tokenizer (`WW_MODEL_DIR` wins over it).
    pub model_dir: Option<PathBuf>,
    /// Limits for this component, over the global ones.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Instances of the component that serve calls at once. Defaults: a memory service
    /// or a component with an endpoint, four per core (8 to 16: they mostly wait); a
    /// local embedder, the core count, at most 4; the embedded store, always 1. Each
    /// instance has its own memory (a model embedder holds its weights in each). Only
    /// a component that keeps nothing between calls, or keeps it only for its serial
    /// exports (see the guest SDK's `calls!`), may have more than one.
    pub instances: Option<usize>,
    /// The one address the component may reach (`bolt://host:7687`,
    /// `http://host:6333`): a remote store or embedder. The host refuses any other
    /// connection, and checks at start-up that this one answers. A store with an
    /// endpoint keeps no data directory.
    pub endpoint: Option<String>,
    /// Settings the component reads (`database = "neo4j"`, `model = "..."`).
    #[serde(default)]
    pub settings: BTreeMap<String, SettingValue>,
    /// Secrets: a setting's name → the environment variable of the host holding it
    /// (`password = "NEO4J_PASSWORD"`), so no credential is written in the file.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

/// A setting's value as written: text, a number or a flag, passed on as text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SettingValue {
    /// `"text"`.
    Text(String),
    /// `42`.
    Integer(i64),
    /// `0.5`.
    Number(f64),
    /// `true`.
    Flag(bool),
}

impl Eq for SettingValue {}

impl std::fmt::Display for SettingValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettingValue::Text(t) => f.write_str(t),
            SettingValue::Integer(i) => write!(f, "{i}"),
            SettingValue::Number(n) => write!(f, "{n}"),
            SettingValue::Flag(b) => write!(f, "{b}"),
        }
    }
}

/// `[inference]`: how the host runs a model component's graph (`model.onnx` in its model
/// directory) through `wasi:nn`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceFileConfig {
    /// The ONNX Runtime shared library (default `target/onnxruntime/libonnxruntime.so`,
    /// what `make` unpacks); `"off"`: none, models run inside their components.
    pub onnxruntime: Option<PathBuf>,
    /// Intra-op threads of each session (one session per instance of the component);
    /// default: the cores shared among the instances.
    pub threads: Option<usize>,
}

impl InferenceFileConfig {
    /// The host's setting: this file's, under `WW_ONNXRUNTIME` and `WW_INFERENCE_THREADS`.
    pub fn resolve(
        &self,
        env_library: Option<std::ffi::OsString>,
        env_threads: Option<String>,
    ) -> Result<crate::inference::InferenceConfig, ConfigFileError> {
        let library = env_library
            .map(PathBuf::from)
            .or_else(|| self.onnxruntime.clone())
            .unwrap_or_else(default_library);
        let threads = match env_threads {
            Some(text) => Some(
                text.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| ConfigFileError::Invalid {
                        path: "WW_INFERENCE_THREADS".to_owned(),
                        reason: format!("{text:?} is not a positive thread count"),
                    })?,
            ),
            None => self.threads,
        };
        Ok(crate::inference::InferenceConfig {
            library: (library != Path::new("off")).then_some(library),
            threads,
        })
    }
}

/// Where `make` unpacked ONNX Runtime: under the working directory (a checkout, as
/// `make run` serves), else beside the binary's own `target/` (a client that starts
/// `target/release/ww-memory` from elsewhere).
fn default_library() -> PathBuf {
    let here = PathBuf::from(crate::inference::DEFAULT_LIBRARY);
    if here.is_file() {
        return here;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            Some(
                exe.parent()?
                    .parent()?
                    .join("onnxruntime/libonnxruntime.so"),
            )
        })
        .filter(|beside| beside.is_file())
        .unwrap_or(here)
}

/// A component loaded without a role (a plugin's own helper, test fixtures).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraComponent {
    /// Name in spans and logs.
    pub name: String,
    /// The component file, relative to `plugin_dir` unless absolute.
    pub component: PathBuf,
}

/// The configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where relative component paths start.
    pub plugin_dir: Option<PathBuf>,
    /// Compiled-code cache.
    pub cache_dir: Option<PathBuf>,
    /// The default store's data directory (`WW_DATA_DIR` overrides it; default `./data`).
    /// It also keeps the default session (`default-session`).
    pub data_dir: Option<PathBuf>,
    /// HTTP bearer tokens bound to sessions: a TOML file of `[[token]]` tables
    /// (`sha256`, `session`), written by `ww-memory token add` (`WW_TOKENS_FILE` wins).
    pub tokens: Option<PathBuf>,
    /// Whether `serve` refuses to start when a component's endpoint does not answer
    /// (default true; false starts anyway, its calls failing until the endpoint is up).
    pub check_endpoints: Option<bool>,
    /// Limits for every component.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// How models run.
    #[serde(default)]
    pub inference: InferenceFileConfig,
    /// Role → component.
    #[serde(default)]
    pub roles: BTreeMap<Role, RoleConfig>,
    /// Components without a role.
    #[serde(default)]
    pub components: Vec<ExtraComponent>,
}

impl FileConfig {
    /// Parse `text` (from `origin`, for messages).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigFileError> {
        toml::from_str(text).map_err(|e| ConfigFileError::Invalid {
            path: origin.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// What serves `role` when the file names nothing for it.
    fn default_role(role: Role) -> Option<RoleConfig> {
        let mut config = RoleConfig {
            component: PathBuf::from(default_component(role)?),
            name: None,
            data_dir: None,
            model_dir: None,
            limits: LimitsConfig::default(),
            instances: None,
            endpoint: None,
            settings: BTreeMap::new(),
            secrets: BTreeMap::new(),
        };
        if role == Role::Embedder {
            // The weights (90 MB), their file while loading, and a forward pass's
            // activations.
            config.limits.memory_mb = Some(EMBEDDER_MEMORY_MB);
            config.model_dir = Some(PathBuf::from(DEFAULT_MODEL_DIR));
            config.settings.insert(
                "model".to_owned(),
                SettingValue::Text(DEFAULT_MODEL.to_owned()),
            );
        }
        Some(config)
    }

    /// Read the model embedder's weights from `dir` (`WW_MODEL_DIR`): the embedder role,
    /// the file's or the default, when it runs a model (has a model directory).
    pub fn override_model_dir(&mut self, dir: PathBuf) {
        let embedder = match self.roles.entry(Role::Embedder) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                match Self::default_role(Role::Embedder) {
                    Some(config) => entry.insert(config),
                    None => return,
                }
            }
        };
        if embedder.model_dir.is_some() {
            embedder.model_dir = Some(dir);
        }
    }

    /// The components to load: each role's (the file's choice or the default), one spec
    /// per file even when it serves several roles, then the extra components.
    pub fn component_specs(&self) -> Vec<ComponentSpec> {
        let plugin_dir = self
            .plugin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PLUGIN_DIR));
        let base_limits = self.limits.apply(CallLimits::default());
        // A store holds every vector in memory and replays its log on first use: it gets
        // more room and time unless the file says otherwise.
        let store_limits = self.limits.apply(CallLimits {
            deadline: STORE_CALL_DEADLINE,
            memory_bytes: STORE_MEMORY_MB << 20,
            ..CallLimits::default()
        });
        // A store keeps its data in the file's `data_dir` unless its role names another.
        let store_dir = || {
            self.data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
        };
        let mut specs: Vec<ComponentSpec> = Vec::new();
        for role in Role::ALL {
            let mut chosen = match self.roles.get(&role) {
                Some(config) => config.clone(),
                None => match Self::default_role(role) {
                    Some(config) => config,
                    None => continue,
                },
            };
            // A remote store keeps its data at its endpoint.
            if role.is_store() && chosen.data_dir.is_none() && chosen.endpoint.is_none() {
                chosen.data_dir = Some(store_dir());
            }
            let path = plugin_dir.join(&chosen.component);
            if let Some(existing) = specs.iter_mut().find(|s| s.path == path) {
                existing.roles.push(role);
                continue;
            }
            specs.push(ComponentSpec {
                name: chosen
                    .name
                    .clone()
                    .unwrap_or_else(|| default_name(role).to_owned()),
                path,
                roles: vec![role],
                data_dir: chosen.data_dir.clone(),
                model_dir: chosen.model_dir.clone(),
                instances: Some(match (role, chosen.instances) {
                    // The embedded store's data lives in its one instance.
                    (Role::VectorStore | Role::GraphStore, _) if chosen.endpoint.is_none() => 1,
                    (_, Some(n)) => n.clamp(1, MAX_INSTANCES),
                    (_, None) if chosen.endpoint.is_some() => default_waiting_instances(),
                    (Role::Embedder, None) => default_embedder_instances(),
                    (Role::Episodic | Role::Semantic | Role::Procedural, None) => {
                        default_waiting_instances()
                    }
                    (_, None) => 1,
                }),
                limits: Some(chosen.limits.apply(if role.is_store() {
                    store_limits
                } else {
                    base_limits
                })),
                endpoint: chosen.endpoint.clone(),
                settings: chosen
                    .settings
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
                secrets: chosen
                    .secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            });
        }
        for extra in &self.components {
            specs.push(ComponentSpec {
                limits: Some(base_limits),
                ..ComponentSpec::new(extra.name.clone(), plugin_dir.join(&extra.component))
            });
        }
        specs
    }
}

/// The component serving the role when the file names none.
fn default_component(role: Role) -> Option<&'static str> {
    match role {
        Role::Embedder => Some("embedder_bert.wasm"),
        Role::VectorStore | Role::GraphStore => Some("store_embedded.wasm"),
        Role::Episodic => Some("service_episodic.wasm"),
        Role::Semantic => Some("service_semantic.wasm"),
        Role::Procedural => Some("service_procedural.wasm"),
    }
}

/// The span-name prefix of the default component.
fn default_name(role: Role) -> &'static str {
    match role {
        Role::VectorStore | Role::GraphStore => "embedded",
        other => other.key(),
    }
}

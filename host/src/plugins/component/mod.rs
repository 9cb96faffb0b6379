//! One loaded component: its pre-instantiated form, and the pool of instances that
//! serve calls (one for a component that keeps data in it), each replaced after a trap.

mod error;
mod instance;
mod state;
pub mod upkeep;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::{CallError, TrapReason};
pub use instance::PluginComponent;
pub use state::ComponentState;

use super::calls::CallProperties;
use super::network::Endpoint;
use super::spec::CallLimits;

/// How much a component may use: per call, and instances at once.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Each call's deadline and each instance's memory.
    pub limits: CallLimits,
    /// Instances serving calls at once (at least one).
    pub instances: usize,
    /// Which exports run serially on one instance, which long on instances of their own:
    /// as the component states in its `ww-memory:calls` section.
    pub calls: CallProperties,
}

/// What a component may reach beyond the host: a data directory, an endpoint; and the
/// settings it reads through `wasi:config`.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// A host directory, seen by it as `/data`.
    pub data_dir: Option<PathBuf>,
    /// A host directory it may only read, seen by it as `/model`.
    pub model_dir: Option<PathBuf>,
    /// The one address it may connect to.
    pub endpoint: Option<Arc<Endpoint>>,
    /// Why that address did not answer at load, when the host was told to load anyway.
    pub unreachable: Option<String>,
    /// Its `wasi:config` keys and values: settings, secrets, and `endpoint`.
    pub config: Vec<(String, String)>,
    /// The model graph it may run through `wasi:nn` (`load-by-name "model"`).
    pub graph: Option<Arc<crate::inference::ModelGraph>>,
    /// How its model runs, when it has a model directory.
    pub inference: Option<crate::inference::InferencePath>,
}

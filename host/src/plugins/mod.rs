//! Plugin components: loading, linking, and calling them within a traced request.
//!
//! - [`spec`]: what to load (roles, files, grants, limits); built by the configuration.
//! - `shape`, [`calls`]: what a component imports and exports, and how it asks its
//!   exports to be run (read from the file at load).
//! - `load`: compile, bind roles, link each import to its exporter, callees first.
//! - [`component`]: one loaded component and its pool of instances.
//! - [`routing`]: a call from one component into another, as a boundary span.
//! - [`network`]: the one endpoint a remote adapter may reach, enforced.
//! - `request`: one traced request, from its root span to its end.
//! - `data_dir`: one host per data directory.

pub mod calls;
pub mod component;
mod data_dir;
pub mod engine;
mod load;
pub mod network;
mod request;
pub mod routing;
mod shape;
pub mod spec;

use std::collections::HashMap;
use std::sync::Arc;

use crate::telemetry::Telemetry;
pub use component::{CallError, ComponentState, PluginComponent, TrapReason};
pub use load::{ENDPOINT_KEY, LoadError};
pub use request::{EndObserver, Request, RequestCall, RequestEnd};
pub use shape::{ComponentShape, host_provided};
pub use spec::{CallLimits, ComponentSpec, EndpointCheck, HostConfig, Role};

/// The loaded, linked components, and the way in.
pub struct ComponentHost {
    telemetry: Arc<Telemetry>,
    components: Vec<(Arc<PluginComponent>, ComponentShape)>,
    exporters: HashMap<String, Arc<PluginComponent>>,
    _ticker: engine::EpochTicker,
    /// Exclusive locks on the components' data directories, held while the host lives.
    _data_locks: Vec<std::fs::File>,
}

impl Drop for ComponentHost {
    /// Upkeep runs (compactions) stop before the lock on their data directory goes.
    fn drop(&mut self) {
        for (component, _) in &self.components {
            component.halt();
        }
    }
}

impl ComponentHost {
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
}

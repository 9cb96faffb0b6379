//! What a component imports and exports, by interface, read from its compiled form.

use std::collections::BTreeMap;

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::calls::CallProperties;

/// Interfaces the host itself implements; every other import must be routed to a
/// component that exports it.
const HOST_PROVIDED: [&str; 5] = [
    "wasi:",
    "ww:memory/tracing@",
    "ww:memory/metrics@",
    "ww:memory/progress@",
    "ww:memory/upkeep@",
];

/// Whether the host itself implements `interface` (WASI, tracing, metrics, progress,
/// upkeep).
pub fn host_provided(interface: &str) -> bool {
    HOST_PROVIDED.iter().any(|p| interface.starts_with(p))
}

impl ComponentShape {
    /// Imports another component must serve: not host-provided, and with functions
    /// (an interface imported only for its types needs nothing behind it).
    pub(super) fn routed_imports(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.imports
            .iter()
            .filter(|(interface, functions)| !host_provided(interface) && !functions.is_empty())
    }

    /// Imports needed only for their types (an empty instance satisfies them).
    pub(super) fn type_only_imports(&self) -> impl Iterator<Item = &String> {
        self.imports
            .iter()
            .filter(|(interface, functions)| !host_provided(interface) && functions.is_empty())
            .map(|(interface, _)| interface)
    }
}

/// What a component imports and exports, by interface.
#[derive(Debug, Clone, Default)]
pub struct ComponentShape {
    /// Imported interfaces with their function names (host-provided ones included).
    pub imports: BTreeMap<String, Vec<String>>,
    /// Exported interfaces with their function names.
    pub exports: BTreeMap<String, Vec<String>>,
    /// How it asks its exports to be run (its `ww-memory:calls` section).
    pub calls: CallProperties,
}

/// The shape of `component`, with the call properties read from its file.
pub(super) fn shape_of(
    engine: &Engine,
    component: &Component,
    calls: CallProperties,
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

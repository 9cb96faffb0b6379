//! The host's `bindgen!`s: the interfaces the host implements, and the memory services'
//! interfaces as the host API calls them.

wasmtime::component::bindgen!({
    world: "host-capabilities",
    path: "../wit",
});

/// The episodic, semantic and procedural interfaces with their WIT types as Rust types,
/// for typed calls into the service components.
pub mod api {
    wasmtime::component::bindgen!({
        world: "memory-api",
        path: "../wit",
    });
}

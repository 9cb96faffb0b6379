//! The host's `bindgen!`s: the interfaces the host implements, and the memory services'
//! interfaces as the host API calls them.

// Generated code: its documentation is the WIT's, which bindgen does not carry over
// to every item.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "host-capabilities",
    path: "../wit/v0.1.0",
});

/// The episodic, semantic and procedural interfaces with their WIT types as Rust types,
/// for typed calls into the service components.
pub mod api {
    wasmtime::component::bindgen!({
        world: "memory-api",
        path: "../wit/v0.1.0",
    });
}

/// `wasi:otel` 0.2.0-rc.2 as published (the WebAssembly OpenTelemetry proposal), for
/// components built for other hosts (Spin, wasmCloud) with the `opentelemetry-wasi` SDK.
/// The host side is `tracing_capability::otel`.
pub mod otel {
    wasmtime::component::bindgen!({
        world: "wasi:otel/imports",
        path: "../wit/wasi-otel/0.2.0-rc.2",
    });
}

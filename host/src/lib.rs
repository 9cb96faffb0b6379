//! World Weaver host: loads memory services and storage adapters as WebAssembly
//! components, gives each the WIT `tracing` capability, routes their calls to each other
//! with boundary spans, and exports one trace per request.
//!
//! - [`config`]: the configuration file: which component serves each role.
//! - [`gateway`]: the MCP server: the 18 tools, one SERVER span per call.
//! - [`memory`]: the host API of the memory services (validated, typed errors).
//! - [`inference`]: `wasi:nn`: a model's graph run by ONNX Runtime in the host.
//! - [`plugins`]: engine, loading, linking, calling components within a request.
//! - [`tracing_capability`]: the host side of the WIT `tracing` interface.
//! - [`telemetry`]: the tracer provider, exporters, sampling and counters.

pub mod bindings;
pub mod config;
pub mod gateway;
pub mod inference;
pub mod memory;
pub mod plugins;
pub mod report;
pub mod session;
pub mod telemetry;
pub mod tracing_capability;

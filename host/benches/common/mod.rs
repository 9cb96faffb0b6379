//! What the host's benchmarks share.

use std::path::PathBuf;

use ww_host::plugins::ComponentSpec;

/// A component `make plugins` built (`WW_PLUGIN_DIR` overrides where), named after its file.
pub fn plugin(file: &str) -> ComponentSpec {
    let dir = std::env::var_os("WW_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release")
        });
    ComponentSpec::new(
        file.trim_end_matches(".wasm").replace('_', "-"),
        dir.join(file),
    )
}

/// The compiled-code cache the benchmarks share.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ww-bench-cache")
}

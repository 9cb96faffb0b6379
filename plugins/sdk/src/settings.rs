//! A component's settings, as the host passes them from its role in the configuration
//! file through `wasi:config/store` (the standard interface; wasmtime implements it): the
//! endpoint (the one address a remote adapter may reach, key `endpoint`) and the role's
//! `settings` and `secrets`, each under its name in the file.
//!
//! ```toml
//! [roles.graph-store]
//! component = "store_neo4j.wasm"
//! endpoint = "bolt://127.0.0.1:7687"       # endpoint()
//! settings = { database = "neo4j" }         # setting("database")
//! secrets = { password = "NEO4J_PASSWORD" } # setting("password"): the host's variable
//! ```

use crate::bindings::component_settings::wasi::config::store;

/// The key the endpoint arrives under.
pub const ENDPOINT_KEY: &str = "endpoint";

/// The configured endpoint (`bolt://host:7687`, `http://host:6333`, ...), if any.
pub fn endpoint() -> Option<String> {
    setting(ENDPOINT_KEY).filter(|e| !e.is_empty())
}

/// A setting or secret by its name in the configuration file. The host's store cannot
/// fail; another host's error reads as the setting being absent.
pub fn setting(name: &str) -> Option<String> {
    store::get(name).ok().flatten()
}

/// A setting parsed as `T`; a value that does not parse is an error naming it.
pub fn parsed<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String> {
    match setting(name) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| format!("setting `{name}` = {text:?} is not valid")),
    }
}

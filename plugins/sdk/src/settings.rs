//! A component's settings, as the host passes them from its role in the configuration
//! file: the endpoint (the one address a remote adapter may reach) and the role's
//! `settings` and `secrets`, each an environment variable of the component.
//!
//! ```toml
//! [roles.graph-store]
//! component = "store_neo4j.wasm"
//! endpoint = "bolt://127.0.0.1:7687"       # endpoint()
//! settings = { database = "neo4j" }         # setting("database")
//! secrets = { password = "NEO4J_PASSWORD" } # setting("password"): the host's variable
//! ```

/// The variable holding the endpoint.
pub const ENDPOINT_VAR: &str = "WW_ENDPOINT";

/// The variable a setting arrives in: `WW_SETTING_` and the name in upper case, `-` as `_`.
pub fn variable(name: &str) -> String {
    let mut var = String::from("WW_SETTING_");
    var.extend(name.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    var
}

/// The configured endpoint (`bolt://host:7687`, `http://host:6333`, ...), if any.
pub fn endpoint() -> Option<String> {
    std::env::var(ENDPOINT_VAR).ok().filter(|e| !e.is_empty())
}

/// A setting or secret by its name in the configuration file.
pub fn setting(name: &str) -> Option<String> {
    std::env::var(variable(name)).ok()
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

//! The configuration file: roles to components, limits, data directories, refusals.

use std::path::PathBuf;
use std::time::Duration;

use ww_host::config::FileConfig;
use ww_host::plugins::{CallLimits, ComponentHost, ComponentSpec, HostConfig, LoadError, Role};
use ww_tests::{cache_dir, component_dir, telemetry};

fn parse(text: &str) -> FileConfig {
    FileConfig::parse(text, "test.toml").expect("valid configuration")
}

fn host_config(file: &FileConfig) -> HostConfig {
    HostConfig {
        components: file.component_specs(),
        cache_dir: Some(cache_dir()),
        ..HostConfig::default()
    }
}

#[test]
fn a_plugin_directory_without_a_file_loads_all_but_what_needs_an_endpoint() {
    // What needs an endpoint is read from each component's imports (wasi:http's outgoing
    // handler, wasi:sockets), not from a list of file names.
    let specs = ComponentSpec::from_dir(&component_dir()).expect("the plugin directory");
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for remote in ["store-qdrant", "store-neo4j", "embedder-openai"] {
        assert!(
            !names.contains(&remote),
            "{remote} needs an endpoint: {names:?}"
        );
    }
    for local in [
        "service-episodic",
        "service-semantic",
        "service-procedural",
        "store-embedded",
        "embedder-bert",
        "embedder-hash",
    ] {
        assert!(names.contains(&local), "{local} is local: {names:?}");
    }
}

#[test]
fn no_file_means_the_default_components() {
    let specs = FileConfig::default().component_specs();
    assert_eq!(specs.len(), 5, "{specs:?}");
    assert_eq!(specs[0].name, "embedder");
    assert_eq!(specs[0].roles, vec![Role::Embedder]);
    assert_eq!(
        specs[0].path,
        PathBuf::from("target/wasm32-wasip2/release/embedder_bert.wasm")
    );
    assert_eq!(specs[0].data_dir, None, "only stores get a directory");
    // The model, read-only, and room for its weights; instances by the core count.
    assert_eq!(
        specs[0].model_dir,
        Some(PathBuf::from("target/models/all-MiniLM-L6-v2"))
    );
    assert_eq!(
        specs[0].limits,
        Some(CallLimits {
            memory_bytes: 512 << 20,
            ..CallLimits::default()
        })
    );
    assert_eq!(
        specs[0].instances,
        Some(ww_host::config::default_embedder_instances())
    );
    assert_eq!(
        specs[1].instances,
        Some(1),
        "the embedded store is one instance"
    );
    // One embedded store serves both store roles, in ./data.
    assert_eq!(specs[1].name, "embedded");
    assert_eq!(specs[1].roles, vec![Role::VectorStore, Role::GraphStore]);
    assert_eq!(
        specs[1].path,
        PathBuf::from("target/wasm32-wasip2/release/store_embedded.wasm")
    );
    assert_eq!(specs[1].data_dir, Some(PathBuf::from("./data")));
    // It holds every vector in memory and replays its log on first use: more room, more time.
    assert_eq!(
        specs[1].limits,
        Some(CallLimits {
            deadline: Duration::from_secs(60),
            memory_bytes: 2048 << 20,
            ..CallLimits::default()
        })
    );
    assert_eq!(specs[2].name, "episodic");
    assert_eq!(specs[2].roles, vec![Role::Episodic]);
    assert_eq!(specs[2].data_dir, None, "services get no filesystem");
    assert_eq!(specs[3].roles, vec![Role::Semantic]);
    assert_eq!(specs[4].roles, vec![Role::Procedural]);
    // The services mostly wait on the stores and the embedder: pools of them.
    for service in &specs[2..] {
        assert_eq!(
            service.instances,
            Some(ww_host::config::default_waiting_instances())
        );
    }
    assert!(ww_host::config::default_waiting_instances() >= 8);
    let moved = parse("data_dir = \"/srv/ww\"").component_specs();
    assert_eq!(moved[1].data_dir, Some(PathBuf::from("/srv/ww")));
}

#[test]
fn one_file_serving_two_roles_is_one_component() {
    let file = parse(
        r#"
        plugin_dir = "/plugins"
        [roles.vector-store]
        component = "store.wasm"
        name = "embedded"
        data_dir = "/var/lib/ww"
        [roles.graph-store]
        component = "store.wasm"
        "#,
    );
    let specs = file.component_specs();
    let store = specs.iter().find(|s| s.name == "embedded").expect("store");
    assert_eq!(store.roles, vec![Role::VectorStore, Role::GraphStore]);
    assert_eq!(store.path, PathBuf::from("/plugins/store.wasm"));
    assert_eq!(store.data_dir, Some(PathBuf::from("/var/lib/ww")));
    assert_eq!(specs.iter().filter(|s| s.path == store.path).count(), 1);
}

#[test]
fn limits_apply_globally_and_per_role() {
    let file = parse(
        r#"
        [limits]
        deadline_ms = 2000
        memory_mb = 64
        [roles.embedder]
        component = "embedder_hash.wasm"
        limits = { memory_mb = 512 }
        [[components]]
        name = "helper"
        component = "helper.wasm"
        "#,
    );
    let specs = file.component_specs();
    let embedder = specs.iter().find(|s| s.name == "embedder").unwrap();
    assert_eq!(
        embedder.limits,
        Some(CallLimits {
            deadline: Duration::from_millis(2000),
            memory_bytes: 512 << 20,
            ..CallLimits::default()
        })
    );
    let helper = specs.iter().find(|s| s.name == "helper").unwrap();
    assert_eq!(helper.limits.unwrap().memory_bytes, 64 << 20);
    assert!(helper.roles.is_empty());
}

#[test]
fn unknown_keys_and_roles_are_errors_with_their_line() {
    for (text, expected) in [
        ("plugin_dri = \"x\"", "plugin_dri"),
        ("[roles.embeder]\ncomponent = \"x.wasm\"", "embeder"),
        (
            "[roles.embedder]\ncomponent = \"x.wasm\"\ncolour = \"red\"",
            "colour",
        ),
        ("[limits]\ndeadline_ms = -1", "deadline_ms"),
        ("[roles.embedder]\nname = \"no component\"", "component"),
    ] {
        let message = FileConfig::parse(text, "bad.toml").unwrap_err().to_string();
        assert!(message.contains("bad.toml"), "{message}");
        assert!(message.contains(expected), "{text:?}: {message}");
        assert!(message.contains("line"), "{message}");
    }
    let missing = FileConfig::load(std::path::Path::new("/nonexistent/ww.toml")).unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/ww.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_does_not_fit_its_role_is_refused_naming_the_interface() {
    let data = std::env::temp_dir().join(format!("ww-config-misfit-{}", std::process::id()));
    let file = parse(&format!(
        r#"
        plugin_dir = "{}"
        data_dir = "{}"
        [roles.embedder]
        component = "fixture_worker.wasm"
        "#,
        component_dir().display(),
        data.display()
    ));
    let error = match ComponentHost::load(host_config(&file), telemetry(&[])).await {
        Err(error) => error,
        Ok(_) => panic!("a worker fixture is no embedder"),
    };
    assert!(
        matches!(&error, LoadError::RoleMismatch { role: "embedder", interface, .. }
            if *interface == "ww:memory/embedder@0.1.0"),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("ww:memory/embedder@0.1.0"), "{message}");
    assert!(
        message.contains("ww:fixtures/worker@0.1.0"),
        "says what it exports: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_extra_components_load_and_a_data_directory_is_created() {
    let data = std::env::temp_dir().join(format!("ww-config-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let file = parse(&format!(
        r#"
        plugin_dir = "{}"
        data_dir = "{}"
        [roles.embedder]
        component = "embedder_hash.wasm"
        data_dir = "{}"
        [[components]]
        name = "fixture-caller"
        component = "fixture_caller.wasm"
        [[components]]
        name = "fixture-worker"
        component = "fixture_worker.wasm"
        "#,
        component_dir().display(),
        data.join("store").display(),
        data.display()
    ));
    let host = ComponentHost::load(host_config(&file), telemetry(&[]))
        .await
        .expect("load");
    assert!(
        data.is_dir(),
        "the data directory exists before the component runs"
    );
    host.warm_up()
        .await
        .expect("instantiate with the directory granted");
    let embedder = host
        .exporter("ww:memory/embedder@0.1.0")
        .expect("embedder role");
    assert_eq!(embedder.name(), "embedder");
    assert_eq!(
        host.exporter("ww:fixtures/driver@0.1.0").unwrap().name(),
        "fixture-caller"
    );
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn the_shipped_fixtures_configuration_adds_the_fixtures_to_the_default_roles() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/fixtures.toml");
    let shipped = FileConfig::load(&path).expect("config/fixtures.toml parses");
    let specs = shipped.component_specs();
    let defaults = FileConfig::default().component_specs();
    assert_eq!(specs.len(), defaults.len() + 2, "{specs:?}");
    assert_eq!(&specs[..defaults.len()], &defaults[..]);
    let extra: Vec<&str> = specs[defaults.len()..]
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(extra, ["fixture-worker", "fixture-caller"]);
}

#[test]
fn the_shipped_embedded_configuration_is_exactly_the_default() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/embedded.toml");
    let shipped = FileConfig::load(&path).expect("config/embedded.toml parses");
    assert_eq!(
        shipped.component_specs(),
        FileConfig::default().component_specs()
    );
    // A store role named without a directory keeps its data in the file's.
    let moved = FileConfig {
        data_dir: Some(PathBuf::from("/srv/memory")),
        ..shipped
    };
    for spec in moved.component_specs() {
        let store = spec.roles.iter().any(|r| r.is_store());
        let expected = store.then(|| PathBuf::from("/srv/memory"));
        assert_eq!(spec.data_dir, expected, "{}", spec.name);
    }
}

#[test]
fn the_shipped_remote_configuration_names_endpoints_and_keeps_no_data_dir_for_them() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/qdrant-neo4j.toml");
    let shipped = FileConfig::load(&path).expect("config/qdrant-neo4j.toml parses");
    let specs = shipped.component_specs();
    let spec = |name: &str| specs.iter().find(|s| s.name == name).expect(name);
    let qdrant = spec("qdrant");
    assert_eq!(qdrant.roles, [Role::VectorStore]);
    assert_eq!(qdrant.endpoint.as_deref(), Some("http://127.0.0.1:6333"));
    assert_eq!(qdrant.data_dir, None);
    let neo4j = spec("neo4j");
    assert_eq!(neo4j.roles, [Role::GraphStore]);
    assert_eq!(neo4j.endpoint.as_deref(), Some("bolt://127.0.0.1:7687"));
    assert_eq!(neo4j.data_dir, None);
    // Adapters wait on the network: pools of them, like the services.
    for adapter in [qdrant, neo4j] {
        assert_eq!(
            adapter.instances,
            Some(ww_host::config::default_waiting_instances())
        );
    }
    assert!(
        neo4j
            .settings
            .contains(&("database".to_owned(), "neo4j".to_owned()))
    );
    assert!(
        neo4j
            .settings
            .contains(&("query_timeout_ms".to_owned(), "5000".to_owned()))
    );
    assert_eq!(
        neo4j.secrets,
        [("password".to_owned(), "NEO4J_PASSWORD".to_owned())]
    );
    // The other roles are the defaults, and no embedded store is loaded at all.
    assert!(specs.iter().all(|s| s.name != "embedded"));
    assert_eq!(spec("embedder").endpoint, None);
}

//! Test support: where the built components are, hosts built from them, and real OTLP
//! receivers.

pub mod bench;
pub mod embeddings;
pub mod http;
pub mod mcp;
pub mod otlp;
pub mod xray;
pub mod zipkin;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use wasmtime::component::Val;
use ww_host::inference::InferenceConfig;
use ww_host::plugins::{CallError, CallLimits, ComponentHost, ComponentSpec, HostConfig, Request};
use ww_host::telemetry::{ConsoleSink, Telemetry, TelemetryConfig, Vars};

/// The fixture caller's exported interface.
pub const DRIVER: &str = "ww:fixtures/driver@0.1.0";

/// Where `make plugins` puts components (override with `WW_PLUGIN_DIR`).
pub fn component_dir() -> PathBuf {
    std::env::var_os("WW_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release")
        })
}

/// Where `make model` unpacks the default embedder's model (override with `WW_MODEL_DIR`).
pub fn model_dir() -> PathBuf {
    std::env::var_os("WW_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/models/all-MiniLM-L6-v2")
        })
}

/// Where `make model-mpnet` unpacks all-mpnet-base-v2 (override with `WW_MPNET_DIR`).
pub fn mpnet_dir() -> PathBuf {
    std::env::var_os("WW_MPNET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/models/all-mpnet-base-v2")
        })
}

/// Where `make onnxruntime` unpacks ONNX Runtime (override with `WW_ONNXRUNTIME`).
pub fn onnxruntime() -> PathBuf {
    std::env::var_os("WW_ONNXRUNTIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/onnxruntime/libonnxruntime.so")
        })
}

/// Models run as the binary runs them by default: through wasi:nn on ONNX Runtime.
pub fn inference() -> InferenceConfig {
    InferenceConfig {
        library: Some(onnxruntime()),
        threads: None,
    }
}

/// A component built by `make plugins`; panics with the fix when it is missing.
pub fn component(file: &str) -> ComponentSpec {
    let path = component_dir().join(file);
    assert!(
        path.exists(),
        "{} is missing: run `make plugins` first",
        path.display()
    );
    let name = file.trim_end_matches(".wasm").replace('_', "-");
    ComponentSpec::new(name, path)
}

/// Caller and worker fixtures.
pub fn fixtures() -> Vec<ComponentSpec> {
    vec![
        component("fixture_caller.wasm"),
        component("fixture_worker.wasm"),
    ]
}

/// Compiled-code cache shared by every test of a run.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ww-test-cache")
}

/// Telemetry configured from exactly `vars`, exporting on the current runtime.
pub fn telemetry(vars: &[(&str, &str)]) -> Arc<Telemetry> {
    let config =
        TelemetryConfig::from_vars(&Vars::from_pairs(vars.iter().copied())).expect("config");
    Telemetry::builder(config)
        .build(&tokio::runtime::Handle::current())
        .expect("telemetry")
}

/// Telemetry with OTLP export to `endpoint`, flushed quickly.
pub fn otlp_telemetry(endpoint: &str, protocol: &str) -> Arc<Telemetry> {
    telemetry(&[
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", endpoint),
        ("WW_OTEL_PROTOCOL", protocol),
        ("WW_OTEL_SERVICE_NAME", "ww-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
}

/// A console sink that keeps what is written, and a way to read it.
pub fn console_buffer() -> (ConsoleSink, Arc<Mutex<Vec<u8>>>) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink: ConsoleSink = Arc::new(Mutex::new(Shared(buffer.clone())));
    (sink, buffer)
}

/// A host with both fixtures loaded and instantiated (so no request pays for it, and
/// traces hold only the spans of the work itself).
pub async fn fixture_host(telemetry: Arc<Telemetry>) -> ComponentHost {
    fixture_host_with(telemetry, CallLimits::default()).await
}

/// [`fixture_host`] with other call limits.
pub async fn fixture_host_with(telemetry: Arc<Telemetry>, limits: CallLimits) -> ComponentHost {
    started_host(fixtures(), limits, telemetry).await
}

/// A host over `components` with `limits` and the tests' compiled-code cache, every
/// component instantiated (so no request pays for it).
pub async fn started_host(
    components: Vec<ComponentSpec>,
    limits: CallLimits,
    telemetry: Arc<Telemetry>,
) -> ComponentHost {
    let names: Vec<String> = components.iter().map(|c| c.name.clone()).collect();
    let config = HostConfig {
        components,
        cache_dir: Some(cache_dir()),
        limits,
        inference: inference(),
        ..HostConfig::default()
    };
    let host = ComponentHost::load(config, telemetry)
        .await
        .unwrap_or_else(|e| panic!("load {names:?}: {e}"));
    host.warm_up()
        .await
        .unwrap_or_else(|e| panic!("instantiate {names:?}: {e}"));
    host
}

/// Call the driver `driver`'s `hostile` with `case` (one kind of abuse of a tracing
/// interface), as its own request; how many calls it made.
pub async fn hostile_case(host: &ComponentHost, driver: &str, case: &str) -> u32 {
    let out = host
        .invoke(
            Request::new(format!("hostile.{case}")),
            driver,
            "hostile",
            &[Val::String(case.to_owned())],
        )
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    match out.as_slice() {
        [Val::U32(n)] => *n,
        other => panic!("{case}: {other:?}"),
    }
}

/// The model embedder (the model `make model` fetched) alone in a host, with
/// `instances` instances and the default configuration's memory limit, its model run
/// through wasi:nn as the binary runs it.
pub async fn model_embedder(instances: usize) -> ComponentHost {
    model_embedder_with(instances, model_dir(), inference())
        .await
        .expect("load the model embedder")
}

/// [`model_embedder`] with the model in `model_dir`, run as `inference` says.
pub async fn model_embedder_with(
    instances: usize,
    model_dir: PathBuf,
    inference: InferenceConfig,
) -> Result<ComponentHost, ww_host::plugins::LoadError> {
    let spec = ComponentSpec {
        model_dir: Some(model_dir),
        instances: Some(instances),
        settings: vec![(
            "model".to_owned(),
            ww_host::config::DEFAULT_MODEL.to_owned(),
        )],
        limits: Some(CallLimits {
            memory_bytes: ww_host::config::EMBEDDER_MEMORY_MB << 20,
            ..CallLimits::default()
        }),
        ..component("embedder_bert.wasm")
    };
    let config = HostConfig {
        components: vec![spec],
        cache_dir: Some(cache_dir()),
        inference,
        ..HostConfig::default()
    };
    ComponentHost::load(config, telemetry(&[])).await
}

/// The embedder interface.
pub const EMBEDDER: &str = "ww:memory/embedder@0.1.0";

/// `embed(texts)` on `host`'s embedder as one request: the vectors, or the error
/// variant's case name (`validation`, `embedding`).
pub async fn embed(host: &ComponentHost, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
    let texts = Val::List(texts.iter().map(|t| Val::String((*t).to_owned())).collect());
    let out = host
        .invoke(Request::new("test.embed"), EMBEDDER, "embed", &[texts])
        .await
        .expect("a call that does not trap");
    let float = |x: &Val| match x {
        Val::Float32(f) => *f,
        other => panic!("{other:?}"),
    };
    match out.as_slice() {
        [Val::Result(Ok(Some(vectors)))] => match vectors.as_ref() {
            Val::List(vectors) => Ok(vectors
                .iter()
                .map(|v| match v {
                    Val::List(xs) => xs.iter().map(float).collect(),
                    other => panic!("{other:?}"),
                })
                .collect()),
            other => panic!("{other:?}"),
        },
        [Val::Result(Err(Some(error)))] => match error.as_ref() {
            Val::Variant(case, _) => Err(case.clone()),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// A `work-mode` value.
pub fn mode(name: &str) -> Val {
    Val::Enum(name.to_owned())
}

/// Decode a `result<string, string>`.
pub fn string_result(values: Vec<Val>) -> Result<String, String> {
    match values.as_slice() {
        [Val::Result(Ok(Some(v)))] => match v.as_ref() {
            Val::String(s) => Ok(s.clone()),
            other => panic!("unexpected ok value {other:?}"),
        },
        [Val::Result(Err(Some(v)))] => match v.as_ref() {
            Val::String(s) => Err(s.clone()),
            other => panic!("unexpected err value {other:?}"),
        },
        other => panic!("unexpected result {other:?}"),
    }
}

/// `ww:fixtures/driver.run(input, mode)` as a request named `name`.
pub async fn run(
    host: &ComponentHost,
    request: Request,
    input: &str,
    work_mode: &str,
) -> Result<Result<String, String>, CallError> {
    host.invoke(
        request,
        DRIVER,
        "run",
        &[Val::String(input.to_owned()), mode(work_mode)],
    )
    .await
    .map(string_result)
}

/// A fresh, empty data directory for one test (removed first if a previous run left it).
pub fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ww-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The hash embedder's role, as the tests' configurations begin.
/// The hash embedder as the embedder role, in a configuration file's words.
pub const HASH_EMBEDDER_ROLE: &str = "[roles.embedder]\ncomponent = \"embedder_hash.wasm\"\n";

/// The configuration file `text` over the built components, with its data in `data_dir`.
pub fn tests_config(text: &str, data_dir: &std::path::Path) -> ww_host::config::FileConfig {
    let mut config = ww_host::config::FileConfig::parse(text, "the tests' configuration")
        .expect("valid configuration");
    config.plugin_dir = Some(component_dir());
    config.data_dir = Some(data_dir.to_owned());
    config
}

/// The default configuration over the built components, with its data in `data_dir`,
/// but the hash embedder instead of the model: the memory model's tests need
/// deterministic, fast vectors, not a model's (the model embedder has tests of its own).
pub fn default_config(data_dir: &std::path::Path) -> ww_host::config::FileConfig {
    tests_config(HASH_EMBEDDER_ROLE, data_dir)
}

/// [`default_config`] with the embedded store compacting once its log passes
/// `min_bytes` and `ratio` × the last snapshot's size, so tests see compactions at a
/// small scale.
pub fn compacting_config(
    data_dir: &std::path::Path,
    min_bytes: u64,
    ratio: f64,
) -> ww_host::config::FileConfig {
    let stores = format!(
        "\n[roles.vector-store]\ncomponent = \"store_embedded.wasm\"\nname = \"embedded\"\n\
         settings = {{ compact_min_bytes = {min_bytes}, compact_ratio = {ratio:?} }}\n\n\
         [roles.graph-store]\ncomponent = \"store_embedded.wasm\"\nname = \"embedded\"\n"
    );
    tests_config(&format!("{HASH_EMBEDDER_ROLE}{stores}"), data_dir)
}

/// The shipped default configuration (the model embedder, with the model `make model`
/// fetched) over the built components, with its data in `data_dir`.
pub fn model_config(data_dir: &std::path::Path) -> ww_host::config::FileConfig {
    let mut config = ww_host::config::FileConfig {
        plugin_dir: Some(component_dir()),
        data_dir: Some(data_dir.to_owned()),
        ..Default::default()
    };
    config.override_model_dir(model_dir());
    config
}

/// The memory API over the default components, storing in `data_dir`, instantiated.
pub async fn memory(
    data_dir: &std::path::Path,
    telemetry: Arc<Telemetry>,
) -> ww_host::memory::Memory {
    memory_with(default_config(data_dir), telemetry).await
}

/// The memory API over the components `config` names, instantiated.
pub async fn memory_with(
    config: ww_host::config::FileConfig,
    telemetry: Arc<Telemetry>,
) -> ww_host::memory::Memory {
    let host = started_host(config.component_specs(), CallLimits::default(), telemetry).await;
    ww_host::memory::Memory::new(Arc::new(host))
}

/// Telemetry that exports to `receiver` over gRPC, quickly (50 ms batches).
pub fn recording(receiver: &otlp::OtlpReceiver) -> Arc<Telemetry> {
    telemetry(&[
        ("WW_OTEL_ENABLED", "true"),
        ("WW_OTEL_ENDPOINT", &receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
}

/// The guest-input counter `name` (as `memory_stats` reports it).
pub fn guest_limit(telemetry: &Telemetry, name: &str) -> u64 {
    telemetry
        .stats()
        .guest_limit(name)
        .unwrap_or_else(|| panic!("no guest-input counter {name}"))
}

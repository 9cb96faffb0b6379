//! What a component costs to start and to call, a Python one (componentize-py: CPython
//! inside the component) beside a Rust one doing the same job (the hashing embedders),
//! with compiled code in the cache as a server finds it after its first start:
//! - loading (compiled code read from the cache, linked);
//! - instantiating from the `InstancePre`;
//! - a cold start: load, instantiate, first `embed` call;
//! - a warm `embed` call of one short text.
//!
//! Needs the components: `make bench` builds them first.

// A benchmark is a test: a failed setup should stop it loudly.
// criterion's macros make the entry points, undocumented.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(missing_docs)]

mod common;

use common::{cache_dir, plugin};

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use wasmtime::component::Val;
use ww_host::plugins::{ComponentHost, HostConfig, Request};
use ww_host::telemetry::{Telemetry, TelemetryConfig, Vars};

/// The binary's allocator, so that the benchmark measures what the binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EMBEDDER: &str = "ww:memory/embedder@0.1.0";

fn load(runtime: &Runtime, file: &str) -> ComponentHost {
    let config = HostConfig {
        components: vec![plugin(file)],
        cache_dir: Some(cache_dir()),
        ..HostConfig::default()
    };
    let vars = Vars::from_pairs([("WW_OTEL_ENABLED", "false")]);
    let telemetry = Telemetry::builder(TelemetryConfig::from_vars(&vars).expect("config"))
        .build(runtime.handle())
        .expect("telemetry");
    runtime
        .block_on(ComponentHost::load(config, telemetry))
        .expect("load: run `make plugins`")
}

fn embed(runtime: &Runtime, host: &ComponentHost) {
    let texts = Val::List(vec![Val::String("the billing service was deployed".into())]);
    runtime
        .block_on(host.invoke(Request::new("bench"), EMBEDDER, "embed", &[texts]))
        .expect("embed");
}

fn start_and_call(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    for (label, file) in [
        ("python", "embedder_pyhash.wasm"),
        ("rust", "embedder_hash.wasm"),
    ] {
        // The first load compiles and fills the cache; everything below reads it.
        drop(load(&runtime, file));
        let mut group = c.benchmark_group(format!("component_{label}"));
        group.bench_function("load_cached", |b| b.iter(|| load(&runtime, file)));
        let host = load(&runtime, file);
        let name = file.trim_end_matches(".wasm").replace('_', "-");
        let component = host.component(&name).expect("component").clone();
        group.bench_function("instantiate", |b| {
            b.iter(|| {
                runtime
                    .block_on(component.instantiate_and_drop())
                    .expect("instantiate")
            })
        });
        group.bench_function("cold_start_first_call", |b| {
            b.iter(|| {
                let host = load(&runtime, file);
                embed(&runtime, &host);
            })
        });
        embed(&runtime, &host);
        group.bench_function("warm_call", |b| b.iter(|| embed(&runtime, &host)));
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(20);
    targets = start_and_call
}
criterion_main!(benches);

//! Tracing costs, measured against the native SDK in the same run:
//! - a guest span round trip (start + end, two attributes) vs a native SDK span;
//! - instantiating a component from its `InstancePre`;
//! - a host-routed A → B call, with its boundary span recorded and with tracing off.
//!
//! Every span goes through the real pipeline (our batch processor) into an exporter that
//! discards, so export cost is the same for guest and native spans.
//!
//! Needs the fixture components: `make bench` builds them first.

// A benchmark is a test: a failed setup should stop it loudly.
// criterion's macros make the entry points, undocumented.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs)]

mod common;

use common::{cache_dir, plugin};

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry::trace::SpanKind;
use opentelemetry::trace::{Span as _, SpanBuilder, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::runtime::Runtime;
use wasmtime::component::Val;
use ww_host::bindings::ww::memory::tracing::{self as wit, Host as _};
use ww_host::plugins::{ComponentHost, HostConfig, Request};
use ww_host::telemetry::{Telemetry, TelemetryConfig, Vars};
use ww_host::tracing_capability::{RequestScope, TracingCtx, WwTracing};

/// The binary's allocator, so that the benchmark measures what the binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DRIVER: &str = "ww:fixtures/driver@0.1.0";
/// Spans (or calls) per measured invocation: amortises entering the component.
const BATCH: u32 = 1000;

#[derive(Debug)]
struct DiscardingExporter;

impl SpanExporter for DiscardingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

fn telemetry(runtime: &Runtime, recording: bool) -> Arc<Telemetry> {
    // Room for several measured batches, so the benchmark measures recording, not
    // drops (the queue's slots are allocated up front: keep it moderate).
    let vars = Vars::from_pairs([("OTEL_BSP_MAX_QUEUE_SIZE", "65536")]);
    let config = TelemetryConfig::from_vars(&vars).expect("config");
    let builder = Telemetry::builder(config);
    let builder = if recording {
        builder.with_exporter("discard", DiscardingExporter)
    } else {
        builder
    };
    builder.build(runtime.handle()).expect("telemetry")
}

fn host(runtime: &Runtime, telemetry: Arc<Telemetry>) -> ComponentHost {
    let config = HostConfig {
        components: vec![plugin("fixture_caller.wasm"), plugin("fixture_worker.wasm")],
        cache_dir: Some(cache_dir()),
        ..HostConfig::default()
    };
    runtime.block_on(async {
        let host = ComponentHost::load(config, telemetry)
            .await
            .expect("load: run `make plugins`");
        host.warm_up().await.expect("instantiate");
        host
    })
}

fn invoke(runtime: &Runtime, host: &ComponentHost, function: &str, count: u32) {
    runtime
        .block_on(host.invoke(Request::new("bench"), DRIVER, function, &[Val::U32(count)]))
        .expect("call");
}

/// The bench span's two attributes as wasmtime lifts them: owned strings, made per call.
fn lifted_attributes() -> Vec<wit::KeyValue> {
    vec![
        wit::KeyValue {
            key: "bench.index".to_owned(),
            value: wit::Value::S64(1),
        },
        wit::KeyValue {
            key: "bench.kind".to_owned(),
            value: wit::Value::String("round-trip".to_owned()),
        },
    ]
}

/// Run `span` `BATCH` times per iteration on a tracing view, inside a request's scope
/// under a root span, with no component.
fn host_side(
    b: &mut criterion::Bencher<'_>,
    telemetry: &Arc<Telemetry>,
    mut span: impl FnMut(&mut WwTracing<'_>),
) {
    let mut ctx = TracingCtx::new(Arc::from("bench"), telemetry.clone());
    let mut scope = RequestScope::new(telemetry.clone(), None, None);
    scope.start(None, "bench".into(), SpanKind::Server, Vec::new(), None);
    let detached = ctx.enter(scope);
    b.iter(|| {
        for _ in 0..BATCH {
            span(&mut WwTracing::new(&mut ctx));
        }
    });
    ctx.leave(detached).finish();
}

fn span_round_trip(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let telemetry = telemetry(&runtime, true);
    let host = host(&runtime, telemetry.clone());
    let mut group = c.benchmark_group("span_round_trip");
    group.throughput(Throughput::Elements(u64::from(BATCH)));

    group.bench_function("native_sdk", |b| {
        let tracer = telemetry.tracer();
        let root = tracer.build_with_context(SpanBuilder::from_name("bench"), &Context::new());
        let parent = Context::new().with_remote_span_context(root.span_context().clone());
        b.iter(|| {
            for _ in 0..BATCH {
                let mut span = tracer.build_with_context(
                    SpanBuilder::from_name("bench.span").with_attributes([
                        KeyValue::new("bench.index", 1_i64),
                        KeyValue::new("bench.kind", "round-trip"),
                    ]),
                    &parent,
                );
                span.end();
            }
        });
    });
    group.bench_function("guest_sdk", |b| {
        b.iter(|| invoke(&runtime, &host, "spans", BATCH))
    });
    group.bench_function("guest_raw_calls", |b| {
        b.iter(|| invoke(&runtime, &host, "raw-spans", BATCH))
    });
    group.bench_function("guest_raw_record", |b| {
        b.iter(|| invoke(&runtime, &host, "raw-record-spans", BATCH))
    });
    // The host's side alone, no component: what the host functions do with what wasmtime
    // lifted (owned strings and vectors, made here as lifting makes them).
    group.bench_function("host_side_only", |b| {
        host_side(b, &telemetry, |view| {
            let handle = view.start_span(
                "bench.span".to_owned(),
                wit::SpanKind::Internal,
                lifted_attributes(),
                None,
            );
            view.end_span(handle, wit::Status::Unset, Vec::new(), Vec::new(), None);
        })
    });
    group.bench_function("host_side_record", |b| {
        host_side(b, &telemetry, |view| {
            let start = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            view.record_span(
                "bench.span".to_owned(),
                wit::SpanKind::Internal,
                start,
                wit::Status::Unset,
                lifted_attributes(),
                Vec::new(),
            );
        })
    });
    // One crossing with no work behind it: the floor under the two a span costs.
    group.bench_function("guest_trivial_host_call", |b| {
        b.iter(|| invoke(&runtime, &host, "host-calls", BATCH))
    });
    group.finish();
    runtime.block_on(telemetry.flush());
}

fn instantiation(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let host = host(&runtime, telemetry(&runtime, false));
    let worker = host.component("fixture-worker").expect("worker").clone();
    c.bench_function("instantiate_from_instance_pre", |b| {
        b.iter(|| {
            runtime
                .block_on(worker.instantiate_and_drop())
                .expect("instantiate")
        })
    });
}

fn routed_call(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("routed_call");
    group.throughput(Throughput::Elements(u64::from(BATCH)));
    for (name, recording) in [("boundary_span_recorded", true), ("tracing_off", false)] {
        let telemetry = telemetry(&runtime, recording);
        let host = host(&runtime, telemetry.clone());
        group.bench_function(name, |b| {
            b.iter(|| invoke(&runtime, &host, "call-worker", BATCH))
        });
        runtime.block_on(telemetry.flush());
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(30);
    targets = span_round_trip, instantiation, routed_call
}
criterion_main!(benches);

//! The wasmtime engine: component model, cached compilation, epoch interruption.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Cache, CacheConfig, Config, Engine};

/// How often the epoch advances; the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Build the engine. Compiled components are cached under `cache_dir`, so a restart does
/// not compile again.
pub fn build_engine(cache_dir: Option<&Path>) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Our components use the synchronous canonical ABI. Without this, every host call
    // (each span start and end) pays for async-task bookkeeping it never uses.
    config.concurrency_support(false);
    config.epoch_interruption(true);
    // `WW_WASM_PROFILER=jitdump` (or `perfmap`) lets `perf` see inside components.
    match std::env::var("WW_WASM_PROFILER").as_deref() {
        Ok("jitdump") => {
            config.profiler(wasmtime::ProfilingStrategy::JitDump);
        }
        Ok("perfmap") => {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        _ => {}
    }
    if let Some(dir) = cache_dir {
        let mut cache = CacheConfig::new();
        cache.with_directory(dir);
        config.cache(Some(Cache::new(cache)?));
    }
    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Start ticking `engine`.
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("ww-epoch".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

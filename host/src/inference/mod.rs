//! `wasi:nn` for components: a model's tensor graph run natively by ONNX Runtime, so a
//! model embedder keeps what it owns (tokenizing, batching, pooling, normalising) and
//! hands the forward pass to the host.
//!
//! The capability has the shape of wasmtime's others: `wasmtime-wasi-nn` provides the WIT
//! bindings and the resource plumbing; a context per store ([`NnState`]) and one
//! [`add_to_linker`]. The backend is ours ([`onnx`]): wasmtime-wasi-nn's own ONNX backend
//! builds every session with ONNX Runtime's default thread count, serialises every call on
//! one session behind a mutex, and loads whatever bytes a guest sends. Here:
//! - graphs come only from a role's read-only model directory (`<model_dir>/model.onnx`,
//!   loaded at start, checked there: a corrupt file refuses the start and names the file),
//!   and the guest reaches them by name (`load-by-name("model")`); `load` from bytes is
//!   refused;
//! - each graph holds one session per instance of the component, each with a set number
//!   of intra-op threads ([`threads_per_session`]), so concurrent calls run side by side;
//! - each `compute` is a span (`onnx.run`) under the guest's current span, with the
//!   backend, the thread count and the input shapes.
//!
//! ONNX Runtime is a shared library loaded at start ([`OnnxRuntime::load`]), from the
//! PyPI wheel `make` unpacks under `target/onnxruntime/`. A host without it still serves:
//! the component finds no graph and runs the model itself, and the host says so.

pub mod onnx;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use opentelemetry::trace::SpanContext;
use wasmtime_wasi_nn::wit::{WasiNnCtx, WasiNnView};
use wasmtime_wasi_nn::{Graph, GraphRegistry, Registry};

pub use onnx::{ModelGraph, OnnxRuntime};

/// Where `make` puts the ONNX Runtime library (`make onnxruntime`), relative to the
/// working directory; `WW_ONNXRUNTIME` or the file's `[inference] onnxruntime` win.
pub const DEFAULT_LIBRARY: &str = "target/onnxruntime/libonnxruntime.so";

/// The graph file a model directory may hold.
pub const GRAPH_FILE: &str = "model.onnx";

/// The name a component loads its model's graph by (`wasi:nn/graph.load-by-name`).
pub const GRAPH_NAME: &str = "model";

/// Intra-op threads of one session, at most: the matrix products of a short text gain
/// nothing past a few threads, and each thread spins while it waits for work.
pub const MAX_THREADS: usize = 16;

/// How the host runs models. The default has no library (every model runs in its
/// component); the binary resolves the file's `[inference]` and the environment, whose
/// default is [`DEFAULT_LIBRARY`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InferenceConfig {
    /// The ONNX Runtime shared library; `None`: none (every model runs in its component).
    pub library: Option<PathBuf>,
    /// Intra-op threads per session; `None`: the cores shared among the component's
    /// instances ([`threads_per_session`]).
    pub threads: Option<usize>,
}

/// Threads for each of `sessions` sessions when nothing says: the cores shared among
/// them (a session per instance, instances running at once), at least one.
pub fn threads_per_session(sessions: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / sessions.max(1)).clamp(1, MAX_THREADS)
}

/// How a component's model runs, as the host arranged it (for the start line,
/// `ww-memory plugins` and `memory_stats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InferencePath {
    /// Through `wasi:nn`, on ONNX Runtime in the host.
    WasiNn {
        /// The graph file.
        file: PathBuf,
        /// Sessions (one per instance).
        sessions: usize,
        /// Intra-op threads of each.
        threads: usize,
    },
    /// In the component itself (no graph offered), and why.
    InComponent {
        /// Why the host offers no graph.
        reason: String,
    },
}

impl std::fmt::Display for InferencePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InferencePath::WasiNn {
                file,
                sessions,
                threads,
            } => write!(
                f,
                "wasi-nn onnx ({} · {sessions} session{} × {threads} thread{})",
                file.display(),
                if *sessions == 1 { "" } else { "s" },
                if *threads == 1 { "" } else { "s" },
            ),
            InferencePath::InComponent { reason } => write!(f, "in-component ({reason})"),
        }
    }
}

/// A model graph that cannot be loaded: the start is refused, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot load the model graph {}: {reason}", file.display())]
pub struct GraphError {
    /// The file.
    pub file: PathBuf,
    /// ONNX Runtime's reason.
    pub reason: String,
}

/// The graph a component's model directory offers, if the runtime is there and the
/// directory holds one; else why not.
pub fn graph_for(
    runtime: Result<&OnnxRuntime, &str>,
    model_dir: &Path,
    model: &str,
    sessions: usize,
    threads: Option<usize>,
) -> Result<(Option<Arc<ModelGraph>>, InferencePath), GraphError> {
    let file = model_dir.join(GRAPH_FILE);
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(reason) => {
            return Ok((
                None,
                InferencePath::InComponent {
                    reason: reason.to_owned(),
                },
            ));
        }
    };
    if !file.is_file() {
        return Ok((
            None,
            InferencePath::InComponent {
                reason: format!("no {GRAPH_FILE} in {}", model_dir.display()),
            },
        ));
    }
    let threads = threads
        .unwrap_or_else(|| threads_per_session(sessions))
        .clamp(1, MAX_THREADS);
    let graph = runtime.load_graph(&file, model, sessions, threads)?;
    Ok((
        Some(Arc::new(graph)),
        InferencePath::WasiNn {
            file,
            sessions,
            threads,
        },
    ))
}

/// The innermost open span of the request a store is serving, as the last `wasi:nn`
/// call saw it: the parent of the next `onnx.run` span. Shared by the store's state and
/// the execution contexts it created (a store runs one call at a time, so it is never
/// contended).
#[derive(Debug, Default)]
pub struct ParentSlot(Mutex<Option<SpanContext>>);

impl ParentSlot {
    fn set(&self, parent: Option<&SpanContext>) {
        if let Ok(mut slot) = self.0.lock()
            && slot.as_ref() != parent
        {
            *slot = parent.cloned();
        }
    }

    pub(crate) fn get(&self) -> Option<SpanContext> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}

/// A store's `wasi:nn` state: the graphs it may load by name, and where their spans go.
pub struct NnState {
    ctx: WasiNnCtx,
    parent: Arc<ParentSlot>,
}

impl NnState {
    /// State offering `graph` (if any) under [`GRAPH_NAME`].
    pub fn new(graph: Option<&Arc<ModelGraph>>) -> Self {
        let parent = Arc::new(ParentSlot::default());
        let mut graphs = HashMap::new();
        if let Some(graph) = graph {
            graphs.insert(
                GRAPH_NAME.to_owned(),
                Graph::from(
                    Box::new(onnx::StoreGraph::new(graph.clone(), parent.clone()))
                        as Box<dyn wasmtime_wasi_nn::backend::BackendGraph>,
                ),
            );
        }
        // The ONNX backend is listed so that `load` from bytes answers with our refusal
        // rather than "no backend for this encoding".
        let ctx = WasiNnCtx::new(
            [wasmtime_wasi_nn::Backend::from(onnx::RefuseBytes)],
            Registry::from(NamedGraphs(graphs)),
        );
        Self { ctx, parent }
    }

    /// The view the bindings use, after noting the request's current span.
    pub fn view<'a>(
        &'a mut self,
        table: &'a mut wasmtime::component::ResourceTable,
        current: Option<&SpanContext>,
    ) -> WasiNnView<'a> {
        self.parent.set(current);
        WasiNnView::new(table, &mut self.ctx)
    }
}

/// Graphs by name, fixed when the store is made.
struct NamedGraphs(HashMap<String, Graph>);

impl GraphRegistry for NamedGraphs {
    fn get(&self, name: &str) -> Option<&Graph> {
        self.0.get(name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Graph> {
        self.0.get_mut(name)
    }
}

/// Link `wasi:nn` (graph, tensor, inference, errors) for every component; `view` gives
/// the store's [`NnState`] view.
pub fn add_to_linker<T: 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> WasiNnView<'_>,
) -> wasmtime::Result<()> {
    wasmtime_wasi_nn::wit::add_to_linker(linker, view)
}
